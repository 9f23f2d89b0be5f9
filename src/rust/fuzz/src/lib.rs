//! Properties the fuzz targets check, shared between them. Every function
//! panics (and so makes libFuzzer report a crash) when the core breaks one
//! of its promises: no panic on any input, validated headers that hold what
//! validation claims, and conversions that agree however they are split.

use safetensorsr::convert::{self, decode, encode, n_rows, r_type, row_len, DecodeStats, Dst, RType, Src};
use safetensorsr::dtype::Dtype;
use safetensorsr::format::{self, Header, TensorSpec, N_LEN};
use safetensorsr::io::{self, Memory};

/// Largest number of elements a tensor may have for the conversion checks
/// (they hold several copies of it).
const MAX_ELEMENTS: usize = 1 << 16;

/// Checks what a validated header promises about a data section of
/// `data_len` bytes, and that writing it again gives the same header.
pub fn check_header_invariants(h: &Header, json_len: usize, data_len: usize) {
    assert_eq!(h.header_len, json_len);
    assert_eq!(h.data_len, data_len);
    let mut expected = 0usize;
    let mut names = std::collections::HashSet::new();
    for t in &h.tensors {
        assert_eq!(t.begin, expected, "tensors must be contiguous");
        assert!(t.end >= t.begin);
        let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).expect("validated numel");
        assert_eq!(numel, t.numel());
        assert_eq!(t.dtype.bytes_for(numel), Some(t.nbytes()));
        assert!(names.insert(t.name.as_str()), "duplicate name survived validation");
        assert_ne!(t.name, "__metadata__");
        expected = t.end;
    }
    assert_eq!(expected, data_len, "tensors must cover the data section");
    let mut order = h.json_order.clone();
    order.sort_unstable();
    assert!(order.iter().copied().eq(0..h.tensors.len()), "json_order must be a permutation");
    if let Some(pos) = h.metadata_position {
        assert!(pos <= h.tensors.len());
    } else {
        assert!(h.metadata.is_none());
    }
    if let Some(meta) = &h.metadata {
        let mut keys: Vec<&str> = meta.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        let before = keys.len();
        keys.dedup();
        assert_eq!(before, keys.len(), "metadata keys must be unique");
    }

    // Writing the same tensors (in file order) and metadata gives a header
    // that parses back to the same thing.
    let specs: Vec<TensorSpec> = h
        .tensors
        .iter()
        .map(|t| TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() })
        .collect();
    let layout = format::layout(&specs, h.metadata.as_deref()).expect("a valid header can be written again");
    for (t, &(b, e)) in h.tensors.iter().zip(&layout.offsets) {
        assert_eq!((t.begin, t.end), (b, e));
    }
    let n = format::header_len(&layout.prefix, (layout.prefix.len() + data_len) as u64).expect("written length");
    assert_eq!(n % 8, 0, "written headers are padded to 8 bytes");
    let back = format::parse_header(&layout.prefix[N_LEN..], data_len).expect("written header parses");
    assert_eq!(back.tensors, h.tensors);
    let sorted = |m: &Option<Vec<(String, String)>>| {
        m.clone().map(|mut v| {
            v.sort();
            v
        })
    };
    assert_eq!(sorted(&back.metadata), sorted(&h.metadata));
}

/// Target (a): `data` as a whole file, and as a bare JSON header with a few
/// data-section lengths.
pub fn check_header_bytes(data: &[u8]) {
    match io::read_header(&Memory(data)) {
        Ok(h) => {
            let n = h.header_len;
            check_header_invariants(&h, n, data.len() - N_LEN - n);
        }
        Err(e) => assert!(e.kind.is_format(), "file errors are format errors, got {:?}", e.kind),
    }
    for data_len in [0usize, 1, 4, 8, 24] {
        match format::parse_header(data, data_len) {
            Ok(h) => check_header_invariants(&h, data.len(), data_len),
            Err(e) => assert!(e.kind.is_format(), "header errors are format errors, got {:?}", e.kind),
        }
    }
}

/// Target (b): `data` as a whole file; every tensor is converted to every R
/// type it can become, whole and in blocks, and encoded back.
pub fn check_file(data: &[u8], per: usize) {
    let Ok(h) = io::read_header(&Memory(data)) else { return };
    let start = h.data_start();
    for t in &h.tensors {
        let bytes = &data[start + t.begin..start + t.end];
        check_tensor(t.dtype, &t.shape, bytes, per);
    }
}

fn rtypes(dtype: Dtype) -> Vec<RType> {
    let mut v = vec![r_type(dtype)];
    if v[0] != RType::Real && dtype != Dtype::C64 {
        v.push(RType::Real);
    }
    v
}

/// Decoded values of one R type, bit patterns for floats so NaNs compare.
#[derive(Clone, Debug, PartialEq)]
enum Values {
    Real(Vec<f64>),
    Int(Vec<i32>),
    Lgl(Vec<i32>),
    Cplx(Vec<[f64; 2]>),
}

impl Values {
    fn filled(rt: RType, n: usize, sentinel: u8) -> Values {
        match rt {
            RType::Real => Values::Real(vec![f64::from_bits(0x7ff4_0000_0000_0000 | sentinel as u64); n]),
            RType::Integer => Values::Int(vec![0x5a5a_0000 | sentinel as i32; n]),
            RType::Logical => Values::Lgl(vec![0x5a5a_0000 | sentinel as i32; n]),
            RType::Complex => Values::Cplx(vec![[f64::from_bits(0x7ff4_0000_0000_0000 | sentinel as u64); 2]; n]),
        }
    }

    fn dst(&mut self) -> Dst<'_> {
        match self {
            Values::Real(v) => Dst::Real(v),
            Values::Int(v) => Dst::Integer(v),
            Values::Lgl(v) => Dst::Logical(v),
            Values::Cplx(v) => Dst::Complex(v),
        }
    }

    fn src(&self) -> Src<'_> {
        match self {
            Values::Real(v) => Src::Real(v),
            Values::Int(v) => Src::Integer(v),
            Values::Lgl(v) => Src::Logical(v),
            Values::Cplx(v) => Src::Complex(v),
        }
    }

    /// Equal bit for bit (decoding keeps NaN payloads, so NaNs compare too).
    fn same(&self, other: &Values) -> bool {
        let f = |a: f64, b: f64| a.to_bits() == b.to_bits();
        match (self, other) {
            (Values::Real(a), Values::Real(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| f(*x, *y)),
            (Values::Cplx(a), Values::Cplx(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| f(x[0], y[0]) && f(x[1], y[1]))
            }
            _ => self == other,
        }
    }
}

fn row_offset(dtype: Dtype, shape: &[usize], r: usize) -> usize {
    r * row_len(shape) * dtype.bits() / 8
}

/// Rows per block as the readers choose them: at least one, a multiple of 8
/// for sub-byte dtypes so every block starts on a byte boundary.
pub fn block_rows(dtype: Dtype, per: usize) -> usize {
    let per = per.max(1);
    if dtype.bits() % 8 != 0 {
        per.next_multiple_of(8)
    } else {
        per
    }
}

fn decode_blocks(dtype: Dtype, shape: &[usize], bytes: &[u8], per: usize, out: &mut Values) -> DecodeStats {
    let rows = n_rows(shape);
    let mut stats = DecodeStats::default();
    let mut r0 = 0;
    loop {
        let r1 = (r0 + per).min(rows);
        let block = &bytes[row_offset(dtype, shape, r0)..row_offset(dtype, shape, r1)];
        let s = decode(dtype, block, shape, r0, r1, out.dst());
        stats.inexact += s.inexact;
        stats.int_min += s.int_min;
        r0 = r1;
        if r0 >= rows {
            return stats;
        }
    }
}

fn encode_blocks(dtype: Dtype, shape: &[usize], src: Src<'_>, per: usize, out: &mut [u8]) -> Result<(), usize> {
    let rows = n_rows(shape);
    let mut r0 = 0;
    let mut bad = None;
    while r0 < rows {
        let r1 = (r0 + per).min(rows);
        let block = &mut out[row_offset(dtype, shape, r0)..row_offset(dtype, shape, r1)];
        if let Err(e) = encode(dtype, src, shape, r0, r1, block) {
            bad.get_or_insert(e.index);
        }
        r0 = r1;
    }
    bad.map_or(Ok(()), Err)
}

/// Converts the tensor `bytes` (dtype, shape) to every R type it can
/// become, whole and in blocks of `per` rows, and encodes the values back.
pub fn check_tensor(dtype: Dtype, shape: &[usize], bytes: &[u8], per: usize) {
    let Some(n) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else { return };
    assert_eq!(dtype.bytes_for(n), Some(bytes.len()), "caller passes a consistent tensor");
    if n > MAX_ELEMENTS {
        return;
    }
    let rows = n_rows(shape);
    let per = block_rows(dtype, per);
    for rt in rtypes(dtype) {
        // Whole tensor in one call, twice with different fillers: an element
        // the kernel forgot would keep its filler and differ.
        let mut a = Values::filled(rt, n, 1);
        let mut b = Values::filled(rt, n, 2);
        let stats = decode(dtype, bytes, shape, 0, rows, a.dst());
        decode(dtype, bytes, shape, 0, rows, b.dst());
        assert!(a.same(&b), "{dtype} {shape:?} as {rt:?}: some element was not written");
        let mut c = Values::filled(rt, n, 3);
        let blocked = decode_blocks(dtype, shape, bytes, per, &mut c);
        assert!(a.same(&c), "{dtype} {shape:?} as {rt:?}: blocks of {per} rows disagree");
        assert_eq!(stats, blocked);

        // Encode the values back, whole and in blocks.
        let mut whole = vec![0u8; bytes.len()];
        let res = encode(dtype, a.src(), shape, 0, rows, &mut whole);
        let mut parts = vec![0u8; bytes.len()];
        let res_blocks = encode_blocks(dtype, shape, a.src(), per, &mut parts);
        // Both fail or both succeed; which element they name first may
        // differ, as the tiled walk visits elements out of order.
        assert_eq!(res.is_ok(), res_blocks.is_ok(), "{dtype} {shape:?}: blocked encode disagrees");
        match res {
            Ok(()) => {
                assert_eq!(whole, parts);
                let mut again = Values::filled(rt, n, 4);
                decode(dtype, &whole, shape, 0, rows, again.dst());
                assert!(a.same(&again), "{dtype} {shape:?} as {rt:?}: values change on a round trip");
                // Every value R holds exactly, NaN payloads included, goes
                // back to the same bytes; BOOL normalises to 0 and 1.
                let lossless = stats.inexact == 0 && dtype != Dtype::Bool;
                if lossless {
                    assert_eq!(whole, bytes, "{dtype} {shape:?} as {rt:?}: bytes change on a round trip");
                }
            }
            Err(e) => {
                // Only values R can't hold exactly may fail to go back: 64-bit
                // integers beyond 2^53, and -2^31 read into an R integer (NA).
                let ok = stats.inexact > 0 || (rt == RType::Integer && stats.int_min > 0);
                assert!(ok, "{dtype} {shape:?} as {rt:?}: element {} of a loaded tensor can't be saved", e.index);
            }
        }
    }
}

/// Target (c): the block index walker against brute force, for any shape
/// and any split of the rows into blocks.
pub fn check_walk(shape: &[usize], splits: &[usize]) {
    let Some(n) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else { return };
    if n > MAX_ELEMENTS || shape.iter().any(|&d| d > MAX_ELEMENTS) {
        return;
    }
    let rows = n_rows(shape);
    let rl = row_len(shape);
    let mut seen = vec![usize::MAX; n];
    let mut r0 = 0usize;
    let mut k = 0;
    loop {
        let step = splits.get(k).copied().unwrap_or(rows).max(1);
        k += 1;
        let r1 = r0.saturating_add(step).min(rows);
        let block = (r1 - r0) * rl;
        let mut visits = 0usize;
        convert::for_each_index(shape, r0, r1, |rm, cm| {
            assert!(rm < block, "{shape:?} rows {r0}..{r1}: rm {rm} outside the block");
            assert!(cm < n, "{shape:?} rows {r0}..{r1}: cm {cm} outside the tensor");
            assert_eq!(seen[r0 * rl + rm], usize::MAX, "{shape:?}: element visited twice");
            seen[r0 * rl + rm] = cm;
            visits += 1;
        });
        assert_eq!(visits, block, "{shape:?} rows {r0}..{r1}: wrong number of visits");
        r0 = r1;
        if r0 >= rows {
            break;
        }
    }
    // Brute force: row-major position -> column-major position.
    for (rm, &cm) in seen.iter().enumerate() {
        let mut rest = rm;
        let mut want = 0;
        let mut stride = 1;
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = rest % shape[d];
            rest /= shape[d];
        }
        for d in 0..shape.len() {
            want += idx[d] * stride;
            stride *= shape[d];
        }
        assert_eq!(cm, want, "{shape:?}: element {rm} lands at {cm}, not {want}");
    }
    // An empty row range touches nothing.
    convert::for_each_index(shape, rows, rows, |_, _| panic!("{shape:?}: empty range visited an element"));
}
