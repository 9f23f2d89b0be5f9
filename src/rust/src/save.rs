//! Writing R vectors as a safetensors file or raw vector, converting each
//! tensor in blocks straight into the output (no serialized copy in memory
//! when writing a file).

use std::io::Write;

use extendr_api::prelude::*;
use extendr_ffi::{R_xlen_t, DATAPTR_RO, SEXP, SEXPTYPE, TYPEOF, VECTOR_ELT, XLENGTH};

use crate::convert::{encode, n_rows, row_len, EncodeError, Num, Src};
use crate::dtype::Dtype;
use crate::error::{Error, Kind, Result};
use crate::format::{self, Layout, TensorSpec};
use crate::io::AtomicFile;
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

pub(crate) fn items<'a>(tensors: &'a List, names: &Robj, dtypes: &Robj, shapes: &List, permute: &Robj) -> Result<Vec<Item<'a>>> {
    let (Some(names), Some(dtypes), Some(permute)) = (names.as_str_vector(), dtypes.as_str_vector(), permute.as_logical_slice())
    else {
        return Err(Error::new(Kind::InvalidArgument, "malformed tensor descriptions"));
    };
    let n = tensors.len();
    if names.len() != n || dtypes.len() != n || shapes.len() != n || permute.len() != n {
        return Err(Error::new(Kind::InvalidArgument, "malformed tensor descriptions"));
    }
    let mut out = Vec::with_capacity(n);
    for (i, shape) in shapes.values().enumerate() {
        let name = names[i];
        let Some(dtype) = Dtype::from_name(dtypes[i]) else {
            return Err(Error::tensor(Kind::InvalidArgument, name, format!("unknown dtype `{}`", dtypes[i])));
        };
        let shape = shape_of(&shape, name)?;
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let Some(numel) = numel else {
            return Err(Error::tensor(Kind::Overflow, name, format!("the size of tensor `{name}` overflows")));
        };
        let spec = TensorSpec { name: name.to_string(), dtype, shape };
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
                return Err(Error::tensor(Kind::InvalidArgument, name, format!("the buffer of tensor `{name}` must be raw")));
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
        format!(
            "can't convert element {} of tensor `{name}` (value {}): {why}",
            e.index + 1,
            describe(e.value)
        ),
    )
}

/// Outer rows per block of about `BLOCK` output bytes; a multiple of 8 for
/// sub-byte dtypes so every block starts on a byte boundary.
fn rows_per_block(spec: &TensorSpec) -> usize {
    let row_bits = row_len(&spec.shape).saturating_mul(spec.dtype.bits()).max(1);
    let rows = (BLOCK * 8 / row_bits).max(1);
    if spec.dtype.bits() % 8 != 0 {
        rows.next_multiple_of(8)
    } else {
        rows
    }
}

fn row_offset(spec: &TensorSpec, r: usize) -> usize {
    r * row_len(&spec.shape) * spec.dtype.bits() / 8
}

/// Encodes `item` block by block, handing each block of bytes to `sink`.
pub(crate) fn encode_blocks(item: &Item<'_>, buf: &mut Vec<u8>, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    if let Some(bytes) = item.bytes {
        for chunk in bytes.chunks(BLOCK * 4) {
            sink(chunk)?;
            robj::check_interrupt_now()?;
        }
        return Ok(());
    }
    let Some(values) = item.values else { return Ok(()) };
    let spec = &item.spec;
    let rows = n_rows(&spec.shape);
    if row_len(&spec.shape) == 0 || rows == 0 {
        return Ok(());
    }
    let per = rows_per_block(spec);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per).min(rows);
        let len = row_offset(spec, r1) - row_offset(spec, r0);
        buf.clear();
        buf.resize(len, 0);
        encode(spec.dtype, values, &spec.shape, r0, r1, buf).map_err(|e| conversion_error(item, e))?;
        sink(buf)?;
        r0 = r1;
        robj::check_interrupt_now()?;
    }
    Ok(())
}

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
) -> Robj {
    to_r((|| {
        let (items, layout) = plan(&tensors, &names, &dtypes, &shapes, &permute, &meta_keys, &meta_values)?;
        let mut out = AtomicFile::create(std::path::Path::new(path))?;
        let file = out.file()?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let werr = |e: std::io::Error| Error::io(&e, "can't write the file");
        w.write_all(&layout.prefix).map_err(werr)?;
        let mut buf = Vec::new();
        for item in &items {
            encode_blocks(item, &mut buf, |b| w.write_all(b).map_err(werr))?;
        }
        w.flush().map_err(werr)?;
        drop(w);
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
) -> Robj {
    to_r((|| {
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
            encode_blocks(item, &mut buf, |chunk| {
                bytes[pos..pos + chunk.len()].copy_from_slice(chunk);
                pos += chunk.len();
                Ok(())
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
        let mut specs = Vec::with_capacity(names.len());
        for (i, shape) in shapes.values().enumerate() {
            let name = names[i];
            let Some(dtype) = Dtype::from_name(dtypes[i]) else {
                return Err(Error::tensor(Kind::InvalidArgument, name, format!("unknown dtype `{}`", dtypes[i])));
            };
            specs.push(TensorSpec { name: name.to_string(), dtype, shape: shape_of(&shape, name)? });
        }
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
