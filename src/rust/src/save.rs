//! Writing R vectors as a safetensors file or raw vector, converting each
//! tensor in blocks straight into the output (no serialized copy in memory
//! when writing a file).

use std::io::Write;

use extendr_api::prelude::*;
use extendr_ffi::{R_xlen_t, DATAPTR_RO, SEXP, SEXPTYPE, TYPEOF, VECTOR_ELT, XLENGTH};

use crate::convert::{self, encode, n_rows, row_len, EncodeError, Num, Src};
use crate::dtype::Dtype;
use crate::error::{Error, Kind, Result};
use crate::format::{self, Layout, TensorSpec};
use crate::io::AtomicFile;
use crate::load::threads_from_r;
use crate::robj::{self, alloc, data_mut, to_r};

/// Bytes encoded between two interrupt checks and written per `write` call.
const BLOCK: usize = 4 << 20;

/// One tensor to write: its spec and where its values come from.
pub(crate) struct Item<'a> {
    pub(crate) spec: TensorSpec,
    /// Column-major R values to convert, or `None` with `bytes` set.
    values: Option<Src<'a>>,
    /// Row-major bytes to copy as they are (a framework's buffer).
    bytes: Option<&'a [u8]>,
}

unsafe fn slice_of<'a, T>(x: SEXP) -> &'a [T] {
    let n = unsafe { XLENGTH(x) } as usize;
    if n == 0 {
        return &[];
    }
    // SAFETY: the caller guarantees T is x's storage type and that x
    // outlives 'a.
    unsafe { std::slice::from_raw_parts(DATAPTR_RO(x) as *const T, n) }
}

/// The values of list element `i`, borrowed for the list's lifetime.
fn src_of(list: &List, i: usize) -> Option<Src<'_>> {
    // SAFETY: `i` is in range (the callers loop below the list's length);
    // the element is kept alive by the list, and each arm reads it as the
    // type R stores.
    unsafe {
        let x = VECTOR_ELT(list.get(), i as R_xlen_t);
        Some(match TYPEOF(x) {
            SEXPTYPE::REALSXP => Src::Real(slice_of(x)),
            SEXPTYPE::INTSXP => Src::Integer(slice_of(x)),
            SEXPTYPE::LGLSXP => Src::Logical(slice_of(x)),
            SEXPTYPE::RAWSXP => Src::Raw(slice_of(x)),
            SEXPTYPE::CPLXSXP => Src::Complex(slice_of(x)),
            _ => return None,
        })
    }
}

fn shape_of(x: &Robj, name: &str) -> Result<Vec<usize>> {
    let bad = || Error::tensor(Kind::InvalidArgument, name, format!("the shape of tensor `{name}` is invalid"));
    let Some(v) = x.as_real_vector().or_else(|| x.as_integer_vector().map(|v| v.iter().map(|&d| d as f64).collect()))
    else {
        return Err(bad());
    };
    v.iter()
        .map(|&d| if d >= 0.0 && d.fract() == 0.0 && d < 2f64.powi(63) { Ok(d as usize) } else { Err(bad()) })
        .collect()
}

/// The description of tensor `name` from its dtype's name and its shape.
fn tensor_spec(name: &str, dtype: &str, shape: &Robj) -> Result<TensorSpec> {
    let Some(dt) = Dtype::from_name(dtype) else {
        return Err(Error::tensor(Kind::InvalidArgument, name, format!("unknown dtype `{dtype}`")));
    };
    Ok(TensorSpec { name: name.to_string(), dtype: dt, shape: shape_of(shape, name)? })
}

pub(crate) fn items<'a>(tensors: &'a List, names: &Robj, dtypes: &Robj, shapes: &List, permute: &Robj) -> Result<Vec<Item<'a>>> {
    let (Some(names), Some(dtypes), Some(permute)) =
        (names.as_str_vector(), dtypes.as_str_vector(), permute.as_logical_slice())
    else {
        return Err(Error::new(Kind::InvalidArgument, "malformed tensor descriptions"));
    };
    let n = tensors.len();
    if names.len() != n || dtypes.len() != n || shapes.len() != n || permute.len() != n {
        return Err(Error::new(Kind::InvalidArgument, "malformed tensor descriptions"));
    }
    let mut out = Vec::with_capacity(n);
    for (i, shape) in shapes.values().enumerate() {
        let spec = tensor_spec(names[i], dtypes[i], &shape)?;
        let (name, dtype) = (names[i], spec.dtype);
        let numel = spec.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let Some(numel) = numel else {
            return Err(Error::tensor(Kind::Overflow, name, format!("the size of tensor `{name}` overflows")));
        };
        if permute[i].is_true() {
            let Some(values) = src_of(tensors, i) else {
                return Err(Error::tensor(Kind::InvalidArgument, name, format!("tensor `{name}` is not a vector")));
            };
            if values.len() != numel {
                return Err(Error::tensor(
                    Kind::InvalidArgument,
                    name,
                    format!("tensor `{name}` has {} values but its shape needs {numel}", values.len()),
                ));
            }
            if matches!(values, Src::Complex(_)) && dtype != Dtype::C64 {
                return Err(Error::tensor(
                    Kind::Conversion,
                    name,
                    format!("tensor `{name}` is complex and can only be written as C64, not {dtype}"),
                ));
            }
            out.push(Item { spec, values: Some(values), bytes: None });
        } else {
            let Some(Src::Raw(bytes)) = src_of(tensors, i) else {
                return Err(Error::tensor(
                    Kind::InvalidArgument,
                    name,
                    format!("the buffer of tensor `{name}` must be raw"),
                ));
            };
            if Some(bytes.len()) != dtype.bytes_for(numel) {
                return Err(Error::tensor(
                    Kind::InvalidArgument,
                    name,
                    format!(
                        "the buffer of tensor `{name}` has {} bytes but dtype {dtype} and its shape need {}",
                        bytes.len(),
                        dtype.bytes_for(numel).map_or("a whole number of".to_string(), |b| b.to_string())
                    ),
                ));
            }
            out.push(Item { spec, values: None, bytes: Some(bytes) });
        }
    }
    Ok(out)
}

fn metadata_of(keys: &Robj, values: &Robj) -> Result<Option<Vec<(String, String)>>> {
    if keys.is_null() {
        return Ok(None);
    }
    let (Some(k), Some(v)) = (keys.as_str_vector(), values.as_str_vector()) else {
        return Err(Error::new(Kind::InvalidArgument, "`metadata` must be a named character vector"));
    };
    if k.len() != v.len() {
        return Err(Error::new(Kind::InvalidArgument, "`metadata` must be a named character vector"));
    }
    Ok(Some(k.into_iter().zip(v).map(|(a, b)| (a.to_string(), b.to_string())).collect()))
}

fn describe(v: Num) -> String {
    match v {
        Num::Na => "NA".to_string(),
        Num::I(i) => i.to_string(),
        Num::F(x) if x.is_nan() => "NaN".to_string(),
        Num::F(x) if x.is_infinite() => if x > 0.0 { "Inf" } else { "-Inf" }.to_string(),
        Num::F(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Num::F(x) if x.abs() >= 1e-4 && x.abs() < 1e15 => format!("{x}"),
        Num::F(x) => format!("{x:e}"),
        Num::C(re, im) => format!("{re}{im:+}i"),
    }
}

fn conversion_error(item: &Item<'_>, e: EncodeError) -> Error {
    let name = &item.spec.name;
    let dtype = item.spec.dtype;
    let why = match e.value {
        Num::Na => format!("NA can't be stored as {dtype}"),
        Num::F(x) if dtype.is_integer() && x.is_finite() && x.fract() != 0.0 => {
            format!("{dtype} holds whole numbers only")
        }
        _ => format!("it is out of range for {dtype}"),
    };
    Error::tensor(
        Kind::Conversion,
        name,
        format!("can't convert element {} of tensor `{name}` (value {}): {why}", e.index + 1, describe(e.value)),
    )
}

/// Outer rows of `shape` per block of about `BLOCK` output bytes (see
/// [`convert::block_rows`]).
fn rows_per_block(dtype: Dtype, shape: &[usize]) -> usize {
    let row_bits = row_len(shape).saturating_mul(dtype.bits()).max(1);
    convert::block_rows(BLOCK * 8 / row_bits, dtype)
}

fn row_offset(dtype: Dtype, shape: &[usize], r: usize) -> usize {
    r * row_len(shape) * dtype.bits() / 8
}

/// Encodes rows `[r0, r1)` of `values` into `out` (their bytes), splitting
/// the rows between up to `threads` threads.
fn encode_par(
    item: &Item<'_>,
    values: Src<'_>,
    shape: &[usize],
    r0: usize,
    r1: usize,
    out: &mut [u8],
    threads: usize,
) -> Result<()> {
    let dtype = item.spec.dtype;
    let rows = r1 - r0;
    // Split only blocks worth a thread, into whole tiles of rows where
    // there are enough, else on byte boundaries for sub-byte dtypes.
    let align = if rows >= 2 * convert::KTILE {
        convert::KTILE
    } else if dtype.bits() % 8 != 0 {
        8
    } else {
        1
    };
    let threads = threads.min(out.len() / PARALLEL_MIN_BLOCK).min(rows / align).max(1);
    if threads == 1 {
        return encode(dtype, values, shape, r0, r1, out).map_err(|e| conversion_error(item, e));
    }
    let per = rows.div_ceil(threads).next_multiple_of(align);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = out;
    let mut a = r0;
    while a < r1 {
        let b = (a + per).min(r1);
        let (head, tail) = rest.split_at_mut(row_offset(dtype, shape, b) - row_offset(dtype, shape, a));
        parts.push((a, b, head));
        rest = tail;
        a = b;
    }
    let results: Vec<std::result::Result<(), EncodeError>> = std::thread::scope(|s| {
        let mut parts = parts.into_iter();
        let first = parts.next();
        let handles: Vec<_> = parts.map(|(a, b, o)| s.spawn(move || encode(dtype, values, shape, a, b, o))).collect();
        let mut res = vec![first.map_or(Ok(()), |(a, b, o)| encode(dtype, values, shape, a, b, o))];
        for h in handles {
            res.push(h.join().unwrap_or(Ok(())));
        }
        res
    });
    // Every failing part reports the same first bad value of the tensor.
    match results.into_iter().find_map(|r| r.err()) {
        Some(e) => Err(conversion_error(item, e)),
        None => Ok(()),
    }
}

/// Blocks below this size are encoded on one thread.
const PARALLEL_MIN_BLOCK: usize = 1 << 20;

/// Encodes `item` block by block on up to `threads` threads, handing each
/// block of bytes to `sink`.
pub(crate) fn encode_blocks(
    item: &Item<'_>,
    buf: &mut Vec<u8>,
    threads: usize,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let b = std::mem::take(buf);
    *buf = encode_blocks_with(item, b, threads, |b| {
        sink(&b)?;
        Ok(b)
    })?;
    Ok(())
}

/// Encodes `item` block by block, each block with up to `threads` threads,
/// handing each block of bytes to `sink`, which returns the buffer to use
/// next.
fn encode_blocks_with(
    item: &Item<'_>,
    mut buf: Vec<u8>,
    threads: usize,
    mut sink: impl FnMut(Vec<u8>) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    if let Some(bytes) = item.bytes {
        for chunk in bytes.chunks(BLOCK) {
            buf.clear();
            buf.extend_from_slice(chunk);
            buf = sink(buf)?;
            robj::check_interrupt_now()?;
        }
        return Ok(buf);
    }
    let Some(values) = item.values else {
        return Ok(buf);
    };
    let dtype = item.spec.dtype;
    let shape = convert::kernel_shape(&item.spec.shape);
    let rows = n_rows(&shape);
    if row_len(&shape) == 0 || rows == 0 {
        return Ok(buf);
    }
    let per = rows_per_block(dtype, &shape);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per).min(rows);
        let len = row_offset(dtype, &shape, r1) - row_offset(dtype, &shape, r0);
        buf.clear();
        buf.resize(len, 0);
        encode_par(item, values, &shape, r0, r1, &mut buf, threads)?;
        buf = sink(buf)?;
        r0 = r1;
        robj::check_interrupt_now()?;
    }
    Ok(buf)
}

/// Writes the prefix and every item to `file`. With 2 or more threads, a
/// writer thread writes one block while the main thread (with the other
/// threads) encodes the next; with `sync`, it also starts the disk writes
/// of what it wrote as it goes, so the final fsync has less left to do.
fn write_all_items(file: &std::fs::File, prefix: &[u8], items: &[Item<'_>], threads: usize, sync: bool) -> Result<()> {
    let werr = |e: std::io::Error| Error::io(&e, "can't write the file");
    let mut out = Writeback::new(file, sync);
    if threads <= 1 {
        out.write(prefix).map_err(werr)?;
        let mut buf = Vec::new();
        for item in items {
            buf = encode_blocks_with(item, buf, 1, |b| {
                out.write(&b).map_err(werr)?;
                Ok(b)
            })?;
        }
        return Ok(());
    }
    // Blocks travel to the writer and come back empty, so at most
    // BUFFERS blocks exist at a time.
    const BUFFERS: usize = 3;
    let (to_writer, blocks) = std::sync::mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    let (to_main, spare) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> std::io::Result<()> {
            for b in blocks {
                out.write(&b)?;
                let _ = to_main.send(b);
            }
            Ok(())
        });
        let mut made = 0;
        let mut produce = || -> Result<()> {
            let mut next = |b: Vec<u8>| -> Result<Vec<u8>> {
                // The writer hung up: it failed, and says why below.
                to_writer.send(b).map_err(|_| Error::new(Kind::Io, "the writer stopped"))?;
                if made < BUFFERS {
                    made += 1;
                    return Ok(Vec::new());
                }
                spare.recv().map_err(|_| Error::new(Kind::Io, "the writer stopped"))
            };
            let mut buf = next(prefix.to_vec())?;
            for item in items {
                buf = encode_blocks_with(item, buf, threads - 1, &mut next)?;
            }
            Ok(())
        };
        let produced = produce();
        drop(to_writer);
        let written = writer.join().unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked")));
        // A write error explains a failure to send, so it comes first.
        written.map_err(werr)?;
        produced
    })
}

/// Sequential writes to a file that, when asked to, start the disk writes
/// of every `WRITEBACK` bytes as soon as they are written.
struct Writeback<'f> {
    file: &'f std::fs::File,
    sync: bool,
    written: u64,
    flushed: u64,
}

/// Bytes between two writeback starts.
const WRITEBACK: u64 = 32 << 20;

impl<'f> Writeback<'f> {
    fn new(file: &'f std::fs::File, sync: bool) -> Self {
        Writeback { file, sync, written: 0, flushed: 0 }
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        (&mut &*self.file).write_all(b)?;
        self.written += b.len() as u64;
        if self.sync && self.written - self.flushed >= WRITEBACK {
            start_writeback(self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(())
    }
}

/// Starts writing bytes `[off, off + len)` of `file` to disk without
/// waiting (Linux); the final fsync still waits for all of them.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only schedules I/O and
    // its failure is harmless (fsync later does the work).
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _off: u64, _len: u64) {}

pub(crate) fn plan<'a>(
    tensors: &'a List,
    names: &Robj,
    dtypes: &Robj,
    shapes: &List,
    permute: &Robj,
    meta_keys: &Robj,
    meta_values: &Robj,
) -> Result<(Vec<Item<'a>>, Layout)> {
    let items = items(tensors, names, dtypes, shapes, permute)?;
    let metadata = metadata_of(meta_keys, meta_values)?;
    let specs: Vec<TensorSpec> = items.iter().map(|i| i.spec.clone()).collect();
    let layout = format::layout(&specs, metadata.as_deref())?;
    Ok((items, layout))
}

/// Writes a file at `path` atomically: a temporary file beside it, flushed,
/// then renamed over it.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn write_file_(
    path: &str,
    tensors: List,
    names: Robj,
    dtypes: Robj,
    shapes: List,
    permute: Robj,
    meta_keys: Robj,
    meta_values: Robj,
    sync: bool,
    threads: i32,
) -> Robj {
    to_r((|| {
        let (items, layout) = plan(&tensors, &names, &dtypes, &shapes, &permute, &meta_keys, &meta_values)?;
        let mut out = AtomicFile::create(std::path::Path::new(path))?;
        let file = out.file()?;
        write_all_items(file, &layout.prefix, &items, threads_from_r(threads), sync)?;
        out.commit_polling(sync, &mut robj::check_interrupt_now)?;
        Ok(Robj::from(layout.file_len().unwrap_or(0) as f64))
    })())
}

/// Serializes to a raw vector, allocated once at its final size.
/// @noRd
#[extendr]
fn serialize_(
    tensors: List,
    names: Robj,
    dtypes: Robj,
    shapes: List,
    permute: Robj,
    meta_keys: Robj,
    meta_values: Robj,
    threads: i32,
) -> Robj {
    to_r((|| {
        let threads = threads_from_r(threads);
        let (items, layout) = plan(&tensors, &names, &dtypes, &shapes, &permute, &meta_keys, &meta_values)?;
        let total = layout.file_len().ok_or_else(|| Error::new(Kind::Overflow, "the file size overflows"))?;
        let mut out = alloc(SEXPTYPE::RAWSXP, total)?;
        // SAFETY: a raw vector of `total` bytes.
        let bytes = unsafe { data_mut::<u8>(&mut out) };
        let p = layout.prefix.len();
        bytes[..p].copy_from_slice(&layout.prefix);
        let mut buf = Vec::new();
        for (item, &(b, e)) in items.iter().zip(&layout.offsets) {
            let mut pos = p + b;
            buf = encode_blocks_with(item, buf, threads, |chunk| {
                bytes[pos..pos + chunk.len()].copy_from_slice(&chunk);
                pos += chunk.len();
                Ok(chunk)
            })?;
            debug_assert_eq!(pos, p + e);
        }
        Ok(out)
    })())
}

/// The layout of a file holding tensors of these names, dtypes and shapes
/// and this metadata, for writers that stream tensors one at a time (R's
/// connections, and framework tensors whose bytes R fetches one by one):
/// `list(prefix, sizes)`, the file's first `8 + N` bytes and each tensor's
/// size in bytes. Everything the header needs is validated here, before any
/// byte is written.
/// @noRd
#[extendr]
fn stream_layout_(names: Robj, dtypes: Robj, shapes: List, meta_keys: Robj, meta_values: Robj) -> Robj {
    to_r((|| {
        let (Some(names), Some(dtypes)) = (names.as_str_vector(), dtypes.as_str_vector()) else {
            return Err(Error::new(Kind::InvalidArgument, "malformed tensor descriptions"));
        };
        if names.len() != dtypes.len() || names.len() != shapes.len() {
            return Err(Error::new(Kind::InvalidArgument, "malformed tensor descriptions"));
        }
        let specs =
            shapes.values().enumerate().map(|(i, shape)| tensor_spec(names[i], dtypes[i], &shape)).collect::<Result<Vec<_>>>()?;
        let metadata = metadata_of(&meta_keys, &meta_values)?;
        let layout = format::layout(&specs, metadata.as_deref())?;
        let sizes: Vec<f64> = layout.offsets.iter().map(|&(b, e)| (e - b) as f64).collect();
        Ok(robj::named_list(&["prefix", "sizes"], vec![Robj::from(&layout.prefix[..]), Robj::from(&sizes[..])]))
    })())
}

/// A file written piece by piece: R appends the header and then each
/// tensor's bytes, and commits; a writer dropped uncommitted (an error in
/// R, or garbage collection) removes its temporary file. Unlike the writer
/// of progress.rs, which validates and encodes whole tensors it was given
/// at open, this one appends bytes whose tensors R fetches only when their
/// turn comes (framework tensors, through `safe_tensor_buffer()`, piece by
/// piece), after `stream_layout_()` validated the header.
pub struct StreamFile {
    state: std::cell::RefCell<Option<(AtomicFile, Vec<u8>)>>,
}

/// Writes smaller than this are gathered before they reach the file.
const GATHER: usize = 1 << 20;

fn with_stream<T>(w: &Robj, f: impl FnOnce(&mut AtomicFile, &mut Vec<u8>) -> Result<T>) -> Result<T> {
    let closed = || Error::new(Kind::Closed, "the file being written is closed");
    let Ok(ptr) = <&ExternalPtr<StreamFile>>::try_from(w) else { return Err(closed()) };
    let Ok(stream) = ptr.try_addr() else { return Err(closed()) };
    let Ok(mut state) = stream.state.try_borrow_mut() else { return Err(closed()) };
    match state.as_mut() {
        Some((file, buf)) => f(file, buf),
        None => Err(closed()),
    }
}

fn flush_gathered(file: &mut AtomicFile, buf: &mut Vec<u8>) -> Result<()> {
    if !buf.is_empty() {
        file.file()?.write_all(buf).map_err(|e| Error::io(&e, "can't write the file"))?;
        buf.clear();
    }
    Ok(())
}

/// Starts writing the file at `path` atomically (see `write_file_()`).
/// @noRd
#[extendr]
fn stream_open_(path: &str) -> Robj {
    to_r((|| {
        let file = AtomicFile::create(std::path::Path::new(path))?;
        let w = StreamFile { state: std::cell::RefCell::new(Some((file, Vec::with_capacity(GATHER)))) };
        Ok(ExternalPtr::new(w).into())
    })())
}

/// Appends bytes `from` (0-based) to the end of the raw vector `bytes`.
/// @noRd
#[extendr]
fn stream_write_(w: Robj, bytes: Robj, from: f64) -> Robj {
    to_r(with_stream(&w, |file, buf| {
        let Some(all) = bytes.as_raw_slice() else {
            return Err(Error::new(Kind::InvalidArgument, "the bytes must be a raw vector"));
        };
        let Some(part) = usize_of(from).and_then(|f| all.get(f..)) else {
            return Err(Error::new(Kind::InvalidArgument, "`from` is outside the bytes"));
        };
        if buf.len() + part.len() <= GATHER {
            buf.extend_from_slice(part);
            return Ok(().into());
        }
        flush_gathered(file, buf)?;
        for chunk in part.chunks(BLOCK * 4) {
            file.file()?.write_all(chunk).map_err(|e| Error::io(&e, "can't write the file"))?;
            robj::check_interrupt_now()?;
        }
        Ok(().into())
    }))
}

/// Flushes (with `sync`, fsyncs) and renames the file over its target.
/// @noRd
#[extendr]
fn stream_commit_(w: Robj, sync: bool) -> Robj {
    to_r((|| {
        with_stream(&w, flush_gathered)?;
        let closed = || Error::new(Kind::Closed, "the file being written is closed");
        let Ok(ptr) = <&ExternalPtr<StreamFile>>::try_from(&w) else { return Err(closed()) };
        let Ok(stream) = ptr.try_addr() else { return Err(closed()) };
        let Ok(mut state) = stream.state.try_borrow_mut() else { return Err(closed()) };
        let Some((file, _)) = state.take() else { return Err(closed()) };
        file.commit_polling(sync, &mut robj::check_interrupt_now)?;
        Ok(().into())
    })())
}

/// Abandons a file being written, removing its temporary file. Harmless
/// after a commit.
/// @noRd
#[extendr]
fn stream_abort_(w: Robj) -> Robj {
    if let Ok(ptr) = <&ExternalPtr<StreamFile>>::try_from(&w) {
        if let Ok(stream) = ptr.try_addr() {
            if let Ok(mut state) = stream.state.try_borrow_mut() {
                state.take();
            }
        }
    }
    ().into()
}

/// Copies bytes `from` (0-based) to the end of `bytes` into the raw vector
/// `out` at 0-based position `pos`: `safe_serialize()` filling its result
/// tensor by tensor. `out` must be a vector R/save.R allocated for this.
/// @noRd
#[extendr]
fn raw_put_(mut out: Robj, pos: f64, bytes: Robj, from: f64) -> Robj {
    to_r((|| {
        let Some(all) = bytes.as_raw_slice() else {
            return Err(Error::new(Kind::InvalidArgument, "the bytes must be a raw vector"));
        };
        let Some(part) = usize_of(from).and_then(|f| all.get(f..)) else {
            return Err(Error::new(Kind::InvalidArgument, "`from` is outside the bytes"));
        };
        if out.rtype() != Rtype::Raw {
            return Err(Error::new(Kind::InvalidArgument, "the output must be a raw vector"));
        }
        // SAFETY: `out` is a raw vector (checked above).
        let dst = unsafe { data_mut::<u8>(&mut out) };
        let Some(dst) = usize_of(pos).and_then(|p| dst.get_mut(p..p.checked_add(part.len())?)) else {
            return Err(Error::new(Kind::InvalidArgument, "the bytes run past the end of the output"));
        };
        dst.copy_from_slice(part);
        Ok(().into())
    })())
}

fn usize_of(x: f64) -> Option<usize> {
    (x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(53)).then_some(x as usize)
}

extendr_module! {
    mod save;
    fn write_file_;
    fn serialize_;
    fn stream_layout_;
    fn stream_open_;
    fn stream_write_;
    fn stream_commit_;
    fn stream_abort_;
    fn raw_put_;
}
