//! Properties the fuzz targets check, shared between them. Every function
//! panics (and so makes libFuzzer report a crash) when the core breaks one
//! of its promises: no panic on any input, validated headers that hold what
//! validation claims, and conversions that agree however they are split.

use safetensors_core::convert::{
    self, decode, encode, n_rows, r_type, row_len, DecodeStats, EncodeError, RType, Src, VectorMut,
};
use safetensors_core::dtype::Dtype;
use safetensors_core::error::Kind;
use safetensors_core::format::{self, Header, TensorSpec, N_LEN};
use safetensors_core::io::{self, Memory, Source};
use safetensors_core::shards;
use safetensors_core::slice::{Cursor, Plan, Sel};

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
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .expect("validated numel");
        assert_eq!(numel, t.numel());
        assert_eq!(t.dtype.bytes_for(numel), Some(t.nbytes()));
        assert!(
            names.insert(t.name.as_str()),
            "duplicate name survived validation"
        );
        assert_ne!(t.name, "__metadata__");
        expected = t.end;
    }
    assert_eq!(expected, data_len, "tensors must cover the data section");
    let mut order = h.json_order.clone();
    order.sort_unstable();
    assert!(
        order.iter().copied().eq(0..h.tensors.len()),
        "json_order must be a permutation"
    );
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
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        })
        .collect();
    let layout =
        format::layout(&specs, h.metadata.as_deref()).expect("a valid header can be written again");
    for (t, &(b, e)) in h.tensors.iter().zip(&layout.offsets) {
        assert_eq!((t.begin, t.end), (b, e));
    }
    let n = format::header_len(&layout.prefix, (layout.prefix.len() + data_len) as u64)
        .expect("written length");
    assert_eq!(n % 8, 0, "written headers are padded to 8 bytes");
    let back =
        format::parse_header(&layout.prefix[N_LEN..], data_len).expect("written header parses");
    assert_eq!(back.tensors, h.tensors);
    let sorted = |m: &Option<Vec<(String, String)>>| {
        m.clone().map(|mut v| {
            v.sort();
            v
        })
    };
    assert_eq!(sorted(&back.metadata), sorted(&h.metadata));
}

/// SharedVector (a): `data` as a whole file, and as a bare JSON header with a few
/// data-section lengths.
pub fn check_header_bytes(data: &[u8]) {
    match io::read_header(&Memory(data)) {
        Ok(h) => {
            let n = h.header_len;
            check_header_invariants(&h, n, data.len() - N_LEN - n);
        }
        Err(e) => assert!(
            e.kind.is_format(),
            "file errors are format errors, got {:?}",
            e.kind
        ),
    }
    // A header read from a stream, without its data section.
    match format::parse_header_only(data) {
        Ok(h) => {
            let covered = h.tensors.last().map_or(0, |t| t.end);
            check_header_invariants(&h, data.len(), covered);
        }
        Err(e) => assert!(
            e.kind.is_format(),
            "header errors are format errors, got {:?}",
            e.kind
        ),
    }
    for data_len in [0usize, 1, 4, 8, 24] {
        match format::parse_header(data, data_len) {
            Ok(h) => check_header_invariants(&h, data.len(), data_len),
            Err(e) => assert!(
                e.kind.is_format(),
                "header errors are format errors, got {:?}",
                e.kind
            ),
        }
    }
}

/// SharedVector (b): `data` as a whole file; every tensor is converted to every R
/// type it can become, whole and in blocks, and encoded back.
pub fn check_file(data: &[u8], per: usize) {
    let Ok(h) = io::read_header(&Memory(data)) else {
        return;
    };
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
            RType::Real => {
                Values::Real(vec![
                    f64::from_bits(0x7ff4_0000_0000_0000 | sentinel as u64);
                    n
                ])
            }
            RType::Integer => Values::Int(vec![0x5a5a_0000 | sentinel as i32; n]),
            RType::Logical => Values::Lgl(vec![0x5a5a_0000 | sentinel as i32; n]),
            RType::Complex => Values::Cplx(vec![
                [f64::from_bits(0x7ff4_0000_0000_0000 | sentinel as u64);
                    2];
                n
            ]),
        }
    }

    fn dst(&mut self) -> VectorMut<'_> {
        match self {
            Values::Real(v) => VectorMut::Real(v),
            Values::Int(v) => VectorMut::Integer(v),
            Values::Lgl(v) => VectorMut::Logical(v),
            Values::Cplx(v) => VectorMut::Complex(v),
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
            (Values::Real(a), Values::Real(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| f(*x, *y))
            }
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

fn decode_blocks(
    dtype: Dtype,
    shape: &[usize],
    bytes: &[u8],
    per: usize,
    out: &mut Values,
) -> DecodeStats {
    let rows = n_rows(shape);
    let mut stats = DecodeStats::default();
    let mut r0 = 0;
    loop {
        let r1 = (r0 + per).min(rows);
        let block = &bytes[row_offset(dtype, shape, r0)..row_offset(dtype, shape, r1)];
        let s =
            decode(dtype, block, shape, r0, r1, out.dst()).expect("consistent arguments decode");
        stats.inexact += s.inexact;
        stats.int_min += s.int_min;
        r0 = r1;
        if r0 >= rows {
            return stats;
        }
    }
}

fn encode_blocks(
    dtype: Dtype,
    shape: &[usize],
    src: Src<'_>,
    per: usize,
    out: &mut [u8],
) -> Result<(), usize> {
    let rows = n_rows(shape);
    let mut r0 = 0;
    let mut bad = None;
    while r0 < rows {
        let r1 = (r0 + per).min(rows);
        let block = &mut out[row_offset(dtype, shape, r0)..row_offset(dtype, shape, r1)];
        match encode(dtype, src, shape, r0, r1, block) {
            Ok(()) => {}
            Err(EncodeError::Value(e)) => {
                bad.get_or_insert(e.index);
            }
            Err(EncodeError::Mismatch) => panic!("{dtype} {shape:?}: consistent arguments refused"),
        }
        r0 = r1;
    }
    bad.map_or(Ok(()), Err)
}

/// Converts the tensor `bytes` (dtype, shape) to every R type it can
/// become, whole and in blocks of `per` rows, and encodes the values back.
pub fn check_tensor(dtype: Dtype, shape: &[usize], bytes: &[u8], per: usize) {
    let Some(n) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return;
    };
    assert_eq!(
        dtype.bytes_for(n),
        Some(bytes.len()),
        "caller passes a consistent tensor"
    );
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
        let stats =
            decode(dtype, bytes, shape, 0, rows, a.dst()).expect("consistent arguments decode");
        decode(dtype, bytes, shape, 0, rows, b.dst()).expect("consistent arguments decode");
        assert!(
            a.same(&b),
            "{dtype} {shape:?} as {rt:?}: some element was not written"
        );
        let mut c = Values::filled(rt, n, 3);
        let blocked = decode_blocks(dtype, shape, bytes, per, &mut c);
        assert!(
            a.same(&c),
            "{dtype} {shape:?} as {rt:?}: blocks of {per} rows disagree"
        );
        assert_eq!(stats, blocked);

        // Encode the values back, whole and in blocks.
        let mut whole = vec![0u8; bytes.len()];
        let res = encode(dtype, a.src(), shape, 0, rows, &mut whole);
        let mut parts = vec![0u8; bytes.len()];
        let res_blocks = encode_blocks(dtype, shape, a.src(), per, &mut parts);
        // Both fail or both succeed; which element they name first may
        // differ, as the tiled walk visits elements out of order.
        assert_eq!(
            res.is_ok(),
            res_blocks.is_ok(),
            "{dtype} {shape:?}: blocked encode disagrees"
        );
        match res {
            Ok(()) => {
                assert_eq!(whole, parts);
                let mut again = Values::filled(rt, n, 4);
                decode(dtype, &whole, shape, 0, rows, again.dst())
                    .expect("consistent arguments decode");
                assert!(
                    a.same(&again),
                    "{dtype} {shape:?} as {rt:?}: values change on a round trip"
                );
                // Every value R holds exactly, NaN payloads included, goes
                // back to the same bytes; BOOL normalises to 0 and 1.
                let lossless = stats.inexact == 0 && dtype != Dtype::Bool;
                if lossless {
                    assert_eq!(
                        whole, bytes,
                        "{dtype} {shape:?} as {rt:?}: bytes change on a round trip"
                    );
                }
            }
            Err(EncodeError::Value(e)) => {
                // Only values R can't hold exactly may fail to go back: 64-bit
                // integers beyond 2^53, and -2^31 read into an R integer (NA).
                let ok = stats.inexact > 0 || (rt == RType::Integer && stats.int_min > 0);
                assert!(
                    ok,
                    "{dtype} {shape:?} as {rt:?}: element {} of a loaded tensor can't be saved",
                    e.index
                );
            }
            Err(EncodeError::Mismatch) => panic!("{dtype} {shape:?}: consistent arguments refused"),
        }
    }
}

/// SharedVector (c): the block index walker against brute force, for any shape
/// and any split of the rows into blocks.
pub fn check_walk(shape: &[usize], splits: &[usize]) {
    let Some(n) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return;
    };
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
            assert!(
                rm < block,
                "{shape:?} rows {r0}..{r1}: rm {rm} outside the block"
            );
            assert!(
                cm < n,
                "{shape:?} rows {r0}..{r1}: cm {cm} outside the tensor"
            );
            assert_eq!(
                seen[r0 * rl + rm],
                usize::MAX,
                "{shape:?}: element visited twice"
            );
            seen[r0 * rl + rm] = cm;
            visits += 1;
        });
        assert_eq!(
            visits, block,
            "{shape:?} rows {r0}..{r1}: wrong number of visits"
        );
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
        assert_eq!(
            cm, want,
            "{shape:?}: element {rm} lands at {cm}, not {want}"
        );
    }
    // An empty row range touches nothing.
    convert::for_each_index(shape, rows, rows, |_, _| {
        panic!("{shape:?}: empty range visited an element")
    });
}

/// A source that holds its bytes but never lends them, so readers take
/// their read-ahead paths.
pub struct NoView<'a>(pub &'a [u8]);

impl Source for NoView<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn view(&self, _off: usize, _n: usize) -> safetensors_core::error::Result<Option<&[u8]>> {
        Ok(None)
    }
    fn read_at(&self, off: usize, buf: &mut [u8]) -> safetensors_core::error::Result<()> {
        Memory(self.0).read_at(off, buf)
    }
}

/// The `i`-th index of a selection, computed independently of the slicer.
fn sel_index(s: &Sel, i: usize) -> usize {
    match s {
        Sel::Range { start, step, .. } => start + i * step,
        Sel::List(v) => v[i],
    }
}

/// Whether a selection is valid for a dimension of extent `d`.
fn sel_valid(s: &Sel, d: usize) -> bool {
    match s {
        Sel::Range { count: 0, .. } => true,
        Sel::Range { start, count, step } => {
            *step >= 1
                && (count - 1)
                    .checked_mul(*step)
                    .and_then(|x| x.checked_add(*start))
                    .is_some_and(|l| l < d)
        }
        Sel::List(v) => v.iter().all(|&i| i < d),
    }
}

/// Column-major position of the row-major element `rm` of `shape`.
fn cm_of(shape: &[usize], rm: usize) -> usize {
    let mut rest = rm;
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = rest % shape[d];
        rest /= shape[d];
    }
    let (mut cm, mut stride) = (0, 1);
    for d in 0..shape.len() {
        cm += idx[d] * stride;
        stride *= shape[d];
    }
    cm
}

/// Bits `[i * bits, (i + 1) * bits)` of `src`, least significant first.
fn get_bits(src: &[u8], i: usize, bits: usize) -> u64 {
    (0..bits).fold(0u64, |acc, b| {
        let pos = i * bits + b;
        acc | ((((src[pos / 8] >> (pos % 8)) & 1) as u64) << b)
    })
}

fn put_bits(out: &mut [u8], i: usize, bits: usize, v: u64) {
    for b in 0..bits {
        let pos = i * bits + b;
        out[pos / 8] |= (((v >> b) & 1) as u8) << (pos % 8);
    }
}

/// SharedVector (c): slicing. The planner against brute force for any shape and
/// selection (valid or not); the byte cursor, through a memory view and
/// through reads with arbitrary chunk sizes, against gathering the
/// selected elements' bits; and decoding the slice against decoding the
/// whole tensor and picking the selected elements.
pub fn check_slice(dtype: Dtype, shape: &[usize], sels: Vec<Sel>, bytes: &[u8], chunks: &[usize]) {
    let Some(n) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return;
    };
    assert_eq!(
        dtype.bytes_for(n),
        Some(bytes.len()),
        "caller passes a consistent tensor"
    );
    let valid = sels.len() == shape.len() && sels.iter().zip(shape).all(|(s, &d)| sel_valid(s, d));
    let plan = match Plan::new(shape, sels.clone(), "t") {
        Ok(p) => p,
        Err(e) => {
            assert!(
                !valid,
                "a valid selection {sels:?} of {shape:?} was refused: {}",
                e.message
            );
            assert!(
                matches!(e.kind, Kind::InvalidSlice | Kind::Overflow),
                "{:?}",
                e.kind
            );
            return;
        }
    };
    assert!(
        valid,
        "an invalid selection {sels:?} of {shape:?} was accepted"
    );
    let out_shape: Vec<usize> = sels.iter().map(Sel::len).collect();
    assert_eq!(plan.out_shape(), &out_shape[..]);
    let m = plan.out_numel();
    if m > MAX_ELEMENTS {
        return;
    }
    // The source element of each result element, row-major.
    let mut want = Vec::with_capacity(m);
    for q in 0..m {
        let mut rest = q;
        let mut idx = vec![0; out_shape.len()];
        for j in (0..out_shape.len()).rev() {
            idx[j] = rest % out_shape[j];
            rest /= out_shape[j];
        }
        let (mut src, mut stride) = (0, 1);
        for j in (0..shape.len()).rev() {
            src += sel_index(&sels[j], idx[j]) * stride;
            stride *= shape[j];
        }
        want.push(src);
    }
    let got: Vec<usize> = plan
        .ranges()
        .flat_map(|(o, l)| {
            assert!(
                l > 0 && o + l <= n.max(1),
                "run ({o}, {l}) outside a tensor of {n} elements"
            );
            o..o + l
        })
        .collect();
    assert_eq!(got, want, "{shape:?} {sels:?}");

    let bits = dtype.bits();
    let Ok(ranges) = plan.byte_ranges(bits, "t") else {
        assert!(bits % 8 != 0, "byte-sized dtypes never misalign");
        return;
    };
    let nbytes = (m * bits).div_ceil(8);
    let mut gathered = vec![0u8; nbytes];
    for (q, &s) in want.iter().enumerate() {
        put_bits(&mut gathered, q, bits, get_bits(bytes, s, bits));
    }
    // The tensor sits inside a larger buffer, as in a file.
    let mut file = vec![0xa5u8; 24];
    file.extend_from_slice(bytes);
    file.extend_from_slice(&[0x5a; 24]);
    for src in [&Memory(&file) as &dyn Source, &NoView(&file) as &dyn Source] {
        let mut cursor = Cursor::new(src, 24, bytes.len(), ranges.clone());
        let mut out = vec![0u8; nbytes];
        let mut done = 0;
        let mut k = 0;
        while done < nbytes {
            let step = chunks
                .get(k)
                .copied()
                .unwrap_or(nbytes)
                .clamp(1, nbytes - done);
            k += 1;
            cursor
                .fill(&mut out[done..done + step])
                .expect("a valid slice reads");
            done += step;
        }
        assert_eq!(
            out, gathered,
            "{dtype} {shape:?} {sels:?}: the cursor read other bytes"
        );
    }

    // Decoding the slice equals decoding the tensor and picking elements.
    if m == 0 || n == 0 {
        return;
    }
    for rt in rtypes(dtype) {
        let mut whole = Values::filled(rt, n, 1);
        decode(dtype, bytes, shape, 0, n_rows(shape), whole.dst())
            .expect("consistent arguments decode");
        let mut part = Values::filled(rt, m, 2);
        decode(
            dtype,
            &gathered,
            &out_shape,
            0,
            n_rows(&out_shape),
            part.dst(),
        )
        .expect("consistent arguments decode");
        let mut picked = Values::filled(rt, m, 3);
        for (q, &s) in want.iter().enumerate() {
            let (to, from) = (cm_of(&out_shape, q), cm_of(shape, s));
            match (&mut picked, &whole) {
                (Values::Real(p), Values::Real(w)) => p[to] = w[from],
                (Values::Int(p), Values::Int(w)) | (Values::Lgl(p), Values::Lgl(w)) => {
                    p[to] = w[from]
                }
                (Values::Cplx(p), Values::Cplx(w)) => p[to] = w[from],
                _ => unreachable!("same R type"),
            }
        }
        assert!(
            part.same(&picked),
            "{dtype} {shape:?} {sels:?} as {rt:?}: the slice decodes differently"
        );
    }
}

/// SharedVector (d): shard index files (`model.safetensors.index.json`), which
/// come from the same untrusted source as the shards. An accepted index
/// names each tensor once and only shard files inside its directory.
pub fn check_index(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match shards::parse_index(text) {
        Ok(index) => {
            let mut names = std::collections::HashSet::new();
            for (name, file) in &index.weight_map {
                assert!(
                    names.insert(name.as_str()),
                    "duplicate tensor `{name}` accepted"
                );
                let p = std::path::Path::new(file);
                assert!(
                    !file.is_empty() && !p.is_absolute(),
                    "shard `{file}` accepted"
                );
                assert!(
                    p.components().all(|c| matches!(
                        c,
                        std::path::Component::Normal(_) | std::path::Component::CurDir
                    )),
                    "shard `{file}` leaves the index's directory"
                );
                assert!(!name.contains('\0') && !file.contains('\0'));
            }
        }
        Err(e) => assert!(
            matches!(e.kind, Kind::InvalidIndex | Kind::InvalidHeader),
            "{:?}",
            e.kind
        ),
    }
}
