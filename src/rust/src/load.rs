//! Reading tensors into R vectors: each vector is allocated once and filled
//! straight from the mapped, buffered or read bytes.

use extendr_api::prelude::*;
use extendr_ffi::SEXPTYPE;

use crate::convert::{self, decode, n_rows, r_type, row_len, DecodeStats, Dst, RType};
use crate::dtype::Dtype;
use crate::error::{Error, Kind, Result};
use crate::format::{Header, TensorInfo};
use crate::io::{self, Backend, FileSource, Memory, Source};
use crate::robj::{self, alloc, check_r_string, data_mut, named_list, set_attr, set_dim, shape_robj, to_r};

/// Bytes converted between two interrupt checks, and the size of the read
/// buffer for tensors that are streamed.
const BLOCK: usize = 4 << 20;
/// Tensors up to this size are read through a shared window, so files of
/// many small tensors take few system calls.
const SMALL: usize = 1 << 20;
/// Size of that window.
const WINDOW: usize = 8 << 20;

/// What each tensor becomes in R.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// An R vector of the dtype's natural type with `dim` and `dtype`.
    Array,
    /// The tensor's bytes as stored, with `dtype` and `shape` attributes.
    Raw,
}

impl Mode {
    /// Parses a mode name.
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "array" => Ok(Mode::Array),
            "raw" => Ok(Mode::Raw),
            _ => Err(Error::new(Kind::InvalidArgument, format!("unknown read mode `{s}`"))),
        }
    }
}

/// Parses a backend name.
pub fn parse_backend(s: &str) -> Result<Backend> {
    match s {
        "read" => Ok(Backend::Read),
        "mmap" => Ok(Backend::Mmap),
        _ => Err(Error::new(Kind::InvalidArgument, format!("unknown backend `{s}`"))),
    }
}

/// Reads tensors through a source, keeping a window of small tensors.
pub struct Reader<'a> {
    pub(crate) src: &'a dyn Source,
    window: Vec<u8>,
    window_start: usize,
    /// Absolute byte spans the window may cover (sorted, disjoint), so that
    /// reading some tensors never reads the bytes of others; empty means the
    /// whole source.
    spans: Vec<(usize, usize)>,
}

impl<'a> Reader<'a> {
    /// A reader over `src` whose window may cover any of its bytes.
    #[allow(dead_code)] // kept for readers of whole files
    pub fn new(src: &'a dyn Source) -> Reader<'a> {
        Reader { src, window: Vec::new(), window_start: 0, spans: Vec::new() }
    }

    /// A reader over `src` for the tensors at `which` only: its window
    /// never extends past the bytes of those tensors.
    pub fn for_tensors(src: &'a dyn Source, header: &Header, which: &[usize]) -> Reader<'a> {
        let base = header.data_start();
        let mut spans: Vec<(usize, usize)> =
            which.iter().map(|&i| (base + header.tensors[i].begin, base + header.tensors[i].end)).collect();
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (b, e) in spans {
            match merged.last_mut() {
                Some(last) if b <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((b, e)),
            }
        }
        Reader { src, window: Vec::new(), window_start: 0, spans: merged }
    }

    /// End of the span holding `off`, or of the source.
    fn span_end(&self, off: usize) -> usize {
        let total = self.src.len() as usize;
        if self.spans.is_empty() {
            return total;
        }
        let i = self.spans.partition_point(|s| s.1 <= off);
        match self.spans.get(i) {
            Some(&(b, e)) if b <= off => e.min(total),
            _ => total,
        }
    }

    /// Bytes `[off, off + n)` from the source's memory or the window, or
    /// `None` for a large tensor that should be streamed.
    fn small_or_view(&mut self, off: usize, n: usize) -> Result<Option<&[u8]>> {
        if self.src.view(off, n)?.is_some() {
            return self.src.view(off, n);
        }
        if n > SMALL {
            return Ok(None);
        }
        let end = off + n;
        let inside = off >= self.window_start && end <= self.window_start + self.window.len();
        if !inside {
            let len = WINDOW.max(n).min(self.span_end(off).saturating_sub(off));
            if len < n {
                return Err(Error::new(Kind::FileChanged, "the file ended early; it was truncated after it was opened"));
            }
            self.window.resize(len, 0);
            self.src.read_at(off, &mut self.window)?;
            self.window_start = off;
        }
        let start = off - self.window_start;
        Ok(Some(&self.window[start..start + n]))
    }
}

/// Outer rows per block so one block holds about `BLOCK` bytes, a multiple
/// of 8 rows for sub-byte dtypes so blocks start on byte boundaries.
fn rows_per_block(info: &TensorInfo) -> usize {
    let row_bits = row_len(&info.shape).saturating_mul(info.dtype.bits()).max(1);
    let rows = (BLOCK * 8 / row_bits).max(1);
    if info.dtype.bits() % 8 != 0 {
        rows.next_multiple_of(8)
    } else {
        rows
    }
}

/// Byte offset of outer row `r` within a tensor.
fn row_offset(info: &TensorInfo, r: usize) -> usize {
    r * row_len(&info.shape) * info.dtype.bits() / 8
}

pub(crate) fn dst_of(x: &mut Robj, rt: RType) -> Dst<'_> {
    // SAFETY: each arm matches the type the vector was allocated with.
    unsafe {
        match rt {
            RType::Real => Dst::Real(data_mut::<f64>(x)),
            RType::Integer => Dst::Integer(data_mut::<i32>(x)),
            RType::Logical => Dst::Logical(data_mut::<i32>(x)),
            RType::Complex => Dst::Complex(data_mut::<[f64; 2]>(x)),
        }
    }
}

pub(crate) fn merge(a: DecodeStats, b: DecodeStats) -> DecodeStats {
    DecodeStats { inexact: a.inexact + b.inexact, int_min: a.int_min + b.int_min }
}

/// Fills `x` (allocated as `rt`) with the tensor at absolute offset `off`.
pub(crate) fn fill(reader: &mut Reader<'_>, info: &TensorInfo, off: usize, x: &mut Robj, rt: RType) -> Result<DecodeStats> {
    let nbytes = info.nbytes();
    let rows = n_rows(&info.shape);
    if nbytes == 0 {
        return Ok(DecodeStats::default());
    }
    let per = rows_per_block(info);
    let mut stats = DecodeStats::default();
    let identity = convert::is_trivial_layout(&info.shape)
        && matches!((info.dtype, rt), (Dtype::F64, RType::Real) | (Dtype::I32, RType::Integer));
    if let Some(bytes) = reader.small_or_view(off, nbytes)? {
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + per).min(rows);
            let block = &bytes[row_offset(info, r0)..row_offset(info, r1)];
            stats = merge(stats, decode(info.dtype, block, &info.shape, r0, r1, dst_of(x, rt)));
            r0 = r1;
            if r0 < rows {
                robj::check_interrupt_now()?;
            }
        }
        return Ok(stats);
    }
    if identity {
        // Same bytes in R as on disk: read straight into the vector.
        // SAFETY: an f64 or i32 vector viewed as its nbytes bytes.
        let out = unsafe { robj::bytes_mut(x, nbytes) };
        copy_bytes(reader, off, out)?;
        if info.dtype == Dtype::I32 {
            // SAFETY: x is an integer vector.
            let ints = unsafe { data_mut::<i32>(x) };
            stats.int_min = ints.iter().filter(|&&v| v == i32::MIN).count();
        }
        return Ok(stats);
    }
    let mut buf = vec![0u8; row_offset(info, per.min(rows))];
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per).min(rows);
        let (b0, b1) = (row_offset(info, r0), row_offset(info, r1));
        let block = &mut buf[..b1 - b0];
        reader.src.read_at(off + b0, block)?;
        stats = merge(stats, decode(info.dtype, block, &info.shape, r0, r1, dst_of(x, rt)));
        r0 = r1;
        robj::check_interrupt_now()?;
    }
    Ok(stats)
}

/// Copies the bytes at absolute offset `off` into `out` as they are, a
/// block at a time for large tensors so Ctrl-C is noticed within a block.
fn copy_bytes(reader: &mut Reader<'_>, off: usize, out: &mut [u8]) -> Result<()> {
    if out.len() <= SMALL {
        if let Some(bytes) = reader.small_or_view(off, out.len())? {
            out.copy_from_slice(bytes);
            return Ok(());
        }
    }
    let mut done = 0;
    while done < out.len() {
        let n = (out.len() - done).min(4 * BLOCK);
        let chunk = &mut out[done..done + n];
        match reader.src.view(off + done, n)? {
            Some(bytes) => chunk.copy_from_slice(bytes),
            None => reader.src.read_at(off + done, chunk)?,
        }
        done += n;
        if done < out.len() {
            robj::check_interrupt_now()?;
        }
    }
    Ok(())
}

/// Reads one tensor into a new R object.
pub fn read_tensor(reader: &mut Reader<'_>, header: &Header, i: usize, mode: Mode) -> Result<(Robj, DecodeStats)> {
    let info = &header.tensors[i];
    let off = header.data_start() + info.begin;
    let n = info.numel();
    match mode {
        Mode::Raw => {
            let mut x = alloc(SEXPTYPE::RAWSXP, info.nbytes())?;
            // SAFETY: a raw vector.
            let out = unsafe { data_mut::<u8>(&mut x) };
            copy_bytes(reader, off, out)?;
            set_attr(&mut x, "dtype", info.dtype.name().into());
            set_attr(&mut x, "shape", shape_robj(&info.shape));
            Ok((x, DecodeStats::default()))
        }
        Mode::Array => {
            let rt = r_type(info.dtype);
            let ty = match rt {
                RType::Real => SEXPTYPE::REALSXP,
                RType::Integer => SEXPTYPE::INTSXP,
                RType::Logical => SEXPTYPE::LGLSXP,
                RType::Complex => SEXPTYPE::CPLXSXP,
            };
            for &d in &info.shape {
                if d > i32::MAX as usize {
                    return Err(Error::tensor(
                        Kind::Unsupported,
                        &info.name,
                        format!(
                            "tensor `{}` has dimension {d}, larger than .Machine$integer.max, the largest R `dim`; \
                             read it with `framework = \"raw\"`",
                            info.name
                        ),
                    ));
                }
            }
            let mut x = alloc(ty, n)?;
            let stats = fill(reader, info, off, &mut x, rt)?;
            if stats.int_min > 0 {
                // -2^31 is NA in R integers: return the tensor as double instead.
                let mut y = alloc(SEXPTYPE::REALSXP, n)?;
                // SAFETY: x is integer, y double, both of length n.
                let (src, dst) = unsafe { (robj::data::<i32>(&x), data_mut::<f64>(&mut y)) };
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = *s as f64;
                }
                x = y;
            }
            if info.shape.is_empty() {
                set_attr(&mut x, "shape", Robj::from(&[] as &[i32]));
            } else {
                set_dim(&mut x, &info.shape)?;
            }
            set_attr(&mut x, "dtype", info.dtype.name().into());
            Ok((x, stats))
        }
    }
}

/// Resolves requested tensor names (an R character vector or NULL for all)
/// to positions in the header, in the order asked.
pub(crate) fn select(header: &Header, names: &Robj) -> Result<Vec<usize>> {
    if names.is_null() {
        return Ok((0..header.tensors.len()).collect());
    }
    let Some(wanted) = names.as_str_iter() else {
        return Err(Error::new(Kind::InvalidArgument, "`tensors` must be a character vector"));
    };
    let index: std::collections::HashMap<&str, usize> =
        header.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    wanted
        .map(|name| {
            index.get(name).copied().ok_or_else(|| {
                Error::tensor(Kind::TensorNotFound, name, format!("tensor `{name}` is not in the file"))
            })
        })
        .collect()
}

/// Checks that every name and metadata string can become an R string.
pub(crate) fn check_strings(header: &Header) -> Result<()> {
    for t in &header.tensors {
        check_r_string(&t.name, "tensor name")?;
    }
    for (k, v) in header.metadata.iter().flatten() {
        check_r_string(k, "metadata key")?;
        check_r_string(v, "metadata value")?;
    }
    Ok(())
}

pub(crate) fn offset_robj(begin: usize, end: usize) -> Robj {
    if end <= i32::MAX as usize {
        Robj::from(&[begin as i32, end as i32][..])
    } else {
        Robj::from(&[begin as f64, end as f64][..])
    }
}

/// The parsed header as CRAN 0.2.x exposed it in the `"metadata"`
/// attribute: a named list in header order, one `list(dtype, shape,
/// data_offsets)` per tensor, and `__metadata__` as a named list of strings.
pub fn header_robj(header: &Header) -> Robj {
    let n = header.tensors.len() + header.metadata_position.is_some() as usize;
    let mut names: Vec<&str> = Vec::with_capacity(n);
    let mut values: Vec<Robj> = Vec::with_capacity(n);
    let metadata = || -> Robj {
        match &header.metadata {
            None => ().into(),
            Some(m) => {
                let vals: Vec<Robj> = m.iter().map(|(_, v)| v.as_str().into()).collect();
                let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
                named_list(&keys, vals)
            }
        }
    };
    let mut file_of_json = vec![0usize; header.tensors.len()];
    for (json_pos, &file_pos) in header.json_order.iter().enumerate() {
        file_of_json[json_pos] = file_pos;
    }
    for (json_pos, &file_pos) in file_of_json.iter().enumerate() {
        if header.metadata_position == Some(json_pos) {
            names.push("__metadata__");
            values.push(metadata());
        }
        let t = &header.tensors[file_pos];
        // jsonlite turned an empty shape into list(); keep that for 0.2.x code.
        let shape: Robj = if t.shape.is_empty() { List::new(0).into() } else { shape_robj(&t.shape) };
        names.push(&t.name);
        values.push(named_list(
            &["dtype", "shape", "data_offsets"],
            vec![t.dtype.name().into(), shape, offset_robj(t.begin, t.end)],
        ));
    }
    if header.metadata_position == Some(header.tensors.len()) {
        names.push("__metadata__");
        values.push(metadata());
    }
    named_list(&names, values)
}

/// Header facts for `safe_info()` and handles, one element per tensor in
/// file order.
pub fn info_robj(header: &Header, file_len: u64) -> Robj {
    let ts = &header.tensors;
    let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
    let dtypes: Vec<&str> = ts.iter().map(|t| t.dtype.name()).collect();
    let shapes: Vec<Robj> = ts.iter().map(|t| shape_robj(&t.shape)).collect();
    let numel: Vec<f64> = ts.iter().map(|t| t.numel() as f64).collect();
    let begin: Vec<f64> = ts.iter().map(|t| t.begin as f64).collect();
    let end: Vec<f64> = ts.iter().map(|t| t.end as f64).collect();
    let metadata: Robj = match &header.metadata {
        None => ().into(),
        Some(m) => {
            let mut v: Robj = Strings::from_values(m.iter().map(|(_, v)| v.as_str())).into();
            robj::set_names(&mut v, m.iter().map(|(k, _)| k.as_str()));
            v
        }
    };
    named_list(
        &["name", "dtype", "shape", "numel", "begin", "end", "metadata", "header_len", "file_len", "header"],
        vec![
            Strings::from_values(names).into(),
            Strings::from_values(dtypes).into(),
            List::from_values(shapes).into(),
            Robj::from(&numel[..]),
            Robj::from(&begin[..]),
            Robj::from(&end[..]),
            metadata,
            (header.header_len as f64).into(),
            (file_len as f64).into(),
            header_robj(header),
        ],
    )
}

/// Reads the tensors at `which` into a named list, returned with the header
/// list, per-tensor conversion notes and the largest absolute end offset.
pub fn read_all(src: &dyn Source, header: &Header, which: &[usize], mode: Mode) -> Result<Robj> {
    let mut reader = Reader::for_tensors(src, header, which);
    let mut values = Vec::with_capacity(which.len());
    let mut inexact = Vec::with_capacity(which.len());
    let mut int_min = Vec::with_capacity(which.len());
    let mut max_offset = 0usize;
    for &i in which {
        let (x, stats) = read_tensor(&mut reader, header, i, mode)?;
        values.push(x);
        inexact.push(stats.inexact as f64);
        int_min.push(stats.int_min as f64);
        max_offset = max_offset.max(header.data_start() + header.tensors[i].end);
        robj::check_interrupt_now()?;
    }
    let mut tensors: Robj = List::from_values(values).into();
    robj::set_names(&mut tensors, which.iter().map(|&i| header.tensors[i].name.as_str()));
    Ok(named_list(
        &["tensors", "header", "inexact", "int_min", "max_offset"],
        vec![tensors, header_robj(header), Robj::from(&inexact[..]), Robj::from(&int_min[..]), (max_offset as f64).into()],
    ))
}

pub(crate) fn raw_bytes(buf: &Robj) -> Result<&[u8]> {
    buf.as_raw_slice().ok_or_else(|| Error::new(Kind::InvalidArgument, "the buffer must be a raw vector"))
}

pub(crate) fn read_source(src: &dyn Source, names: &Robj, mode: &str) -> Result<Robj> {
    let mode = Mode::parse(mode)?;
    let header = io::read_header(src)?;
    check_strings(&header)?;
    let which = select(&header, names)?;
    read_all(src, &header, &which, mode)
}

/// Reads tensors from the file at `path`.
/// @noRd
#[extendr]
fn read_file_(path: &str, names: Robj, mode: &str, backend: &str) -> Robj {
    to_r((|| {
        let src = FileSource::open(std::path::Path::new(path), parse_backend(backend)?)?;
        read_source(&src, &names, mode)
    })())
}

/// Reads tensors from a raw vector holding a whole file.
/// @noRd
#[extendr]
fn read_raw_(buf: Robj, names: Robj, mode: &str) -> Robj {
    to_r((|| read_source(&Memory(raw_bytes(&buf)?), &names, mode))())
}

/// Header facts of the file at `path`, reading the header only.
/// @noRd
#[extendr]
fn info_file_(path: &str) -> Robj {
    to_r((|| {
        let src = FileSource::open(std::path::Path::new(path), Backend::Read)?;
        let header = io::read_header(&src)?;
        check_strings(&header)?;
        Ok(info_robj(&header, src.len()))
    })())
}

/// Header facts of a raw vector holding a whole file.
/// @noRd
#[extendr]
fn info_raw_(buf: Robj) -> Robj {
    to_r((|| {
        let src = Memory(raw_bytes(&buf)?);
        let header = io::read_header(&src)?;
        check_strings(&header)?;
        Ok(info_robj(&header, src.len()))
    })())
}

extendr_module! {
    mod load;
    fn read_file_;
    fn read_raw_;
    fn info_file_;
    fn info_raw_;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A source that must be read (no memory view) and records its reads.
    struct Counting {
        bytes: Vec<u8>,
        reads: RefCell<Vec<(usize, usize)>>,
    }

    impl Source for Counting {
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn view(&self, _: usize, _: usize) -> Result<Option<&[u8]>> {
            Ok(None)
        }
        fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()> {
            self.reads.borrow_mut().push((off, buf.len()));
            Memory(&self.bytes).read_at(off, buf)
        }
    }

    #[test]
    fn window_covers_only_the_tensors_asked_for() {
        // Four U8 tensors of 100 bytes each.
        let json = r#"{"a":{"dtype":"U8","shape":[100],"data_offsets":[0,100]},"b":{"dtype":"U8","shape":[100],"data_offsets":[100,200]},"c":{"dtype":"U8","shape":[100],"data_offsets":[200,300]},"d":{"dtype":"U8","shape":[100],"data_offsets":[300,400]}}"#;
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.extend((0..400).map(|i| (i % 251) as u8));
        let src = Counting { bytes, reads: RefCell::new(Vec::new()) };
        let header = io::read_header(&src).unwrap();
        let base = header.data_start();
        src.reads.borrow_mut().clear();
        // Adjacent b and c come in one read; b and d apart in two; a never.
        for (which, want) in [
            (vec![1, 2], vec![(base + 100, 200)]),
            (vec![3, 1], vec![(base + 300, 100), (base + 100, 100)]),
        ] {
            src.reads.borrow_mut().clear();
            let mut reader = Reader::for_tensors(&src, &header, &which);
            for &i in &which {
                let t = &header.tensors[i];
                let got = reader.small_or_view(base + t.begin, t.nbytes()).unwrap().unwrap().to_vec();
                assert_eq!(got, src.bytes[base + t.begin..base + t.end]);
            }
            assert_eq!(*src.reads.borrow(), want);
        }
        // A reader over the whole source reads ahead to its end.
        src.reads.borrow_mut().clear();
        let mut all = Reader::new(&src);
        all.small_or_view(base + 100, 100).unwrap();
        assert_eq!(*src.reads.borrow(), vec![(base + 100, 300)]);
    }
}
