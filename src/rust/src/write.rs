//! Saves (R/write.R): the core's write engine behind an external pointer.
//!
//! R describes the tensors once, as a named list (`tensors`, `names`,
//! `dtypes`, `shapes`, `kinds`, `metadata`; see R/write.R), and opens a
//! writer to a file, a raw vector or a stream; the header is validated and
//! written at once. `writer_write_()` then encodes the tensors R holds as
//! vectors, up to a byte budget per call, and stops at a tensor whose
//! bytes R hands over with `writer_put_()` (framework tensors);
//! `writer_take_()` gives a stream's pending bytes to R, which writes them
//! to its connection; `writer_commit_()` finishes. The description stays
//! alive in the external pointer's protected slot, so the vectors it holds
//! can be read at every call. Dropping an uncommitted writer (an error in
//! R, or the garbage collector) removes its temporary file.

use std::cell::RefCell;
use std::path::Path;

use extendr_api::prelude::*;
use extendr_ffi::{R_ExternalPtrProtected, R_SetExternalPtrProtected, VECTOR_ELT};
use safetensors_core::convert::{Rounding, Src};
use safetensors_core::dtype::Dtype;
use safetensors_core::error::{Error, Kind, Result};
use safetensors_core::format::TensorSpec;
use safetensors_core::write::{FileSink, Input, MemSink, PlacedSink, Writer};

use crate::robj::{
    alloc, check_interrupt_now, named_list, parse_address, raw_bytes, slice_of, threads_from_r,
    to_r, vec_data,
};

/// `$body` with `$w` bound to the writer in `$out`, whatever its sink.
macro_rules! on_writer {
    ($out:expr, $w:ident => $body:expr) => {
        match $out {
            Out::File($w) => $body,
            Out::Raw($w) => $body,
            Out::Stream($w) => $body,
            Out::Placed($w) => $body,
        }
    };
}

/// Where a writer's file goes.
enum Out {
    /// A file, written atomically.
    File(Writer<FileSink>),
    /// A raw vector of the file's size, kept alive in the external
    /// pointer's protected slot (element 2).
    Raw(Writer<MemSink<'static>>),
    /// A connection: R takes the pending bytes after each call.
    Stream(Writer<Vec<u8>>),
    /// The file a file connection writes, in place from its position
    /// (`writer_place_()`).
    Placed(Writer<PlacedSink>),
}

/// What R's external pointer owns: a save in progress, or nothing once
/// committed or aborted.
pub struct SaveHandle {
    state: RefCell<Option<Out>>,
    /// The helper thread of detached puts (`writer_put_()` with `detach`),
    /// started with the first, and the put it is doing, if any (it owns the
    /// save meanwhile).
    helper: RefCell<Option<Helper>>,
    pending: RefCell<Option<Robj>>,
}

/// A thread that writes the bytes of detached puts, one at a time: it gets
/// the save and the bytes, and gives the save back with the put's result.
/// Starting a thread for each put cost about as much as writing a 4 MiB
/// piece.
struct Helper {
    jobs: Option<std::sync::mpsc::Sender<(Out, Lent)>>,
    done: std::sync::mpsc::Receiver<(Out, Result<()>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    fn start() -> Result<Helper> {
        let (jobs, todo) = std::sync::mpsc::channel::<(Out, Lent)>();
        let (tell, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("safetensors-put".into())
            .spawn(move || {
                for (mut out, lent) in todo {
                    // SAFETY: see `Lent`: the vector stays alive and unmodified
                    // until the result is taken back (`settle`).
                    let bytes = unsafe { std::slice::from_raw_parts(lent.ptr, lent.n) };
                    // Interrupts are checked on R's thread, between calls.
                    let poll = &mut || Ok(());
                    let res = on_writer!(&mut out, w => w.put(bytes, lent.from, poll)).map(|_| ());
                    if tell.send((out, res)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io(&e, "can't start a thread"))?;
        Ok(Helper {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The first `n` bytes of a raw vector R keeps alive and leaves alone
/// while the helper thread writes them out, of dtype `from`.
struct Lent {
    ptr: *const u8,
    n: usize,
    from: Dtype,
}

// SAFETY: R keeps the vector alive (`pending` holds it) and does not modify
// it until the put's result is taken back (R/frameworks.R alternates two
// staging vectors, and every writer call takes the result back first).
unsafe impl Send for Lent {}

impl SaveHandle {
    /// Waits for a put on the helper thread, if any, and takes the save
    /// back; the put's result.
    fn settle(&self) -> Result<()> {
        let in_use = || Error::new(Kind::InvalidArgument, "the writer is in use");
        let Ok(mut pending) = self.pending.try_borrow_mut() else {
            return Err(in_use());
        };
        if pending.is_none() {
            return Ok(());
        }
        let Ok(helper) = self.helper.try_borrow() else {
            return Err(in_use());
        };
        let got = helper.as_ref().and_then(|h| h.done.recv().ok());
        // The bytes may go now.
        *pending = None;
        let Some((out, res)) = got else {
            return Err(Error::new(Kind::Io, "the writer thread stopped"));
        };
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return Err(in_use());
        };
        if res.is_ok() {
            *state = Some(out);
        }
        // On an error the save is dropped (a file sink removes its
        // temporary file), as with_writer does.
        res
    }

    /// Hands the save and the bytes `lent` (of the raw vector `bytes`) to
    /// the helper thread, started if need be.
    fn detach(&self, lent: Lent, bytes: Robj) -> Result<()> {
        let in_use = || Error::new(Kind::InvalidArgument, "the writer is in use");
        let stopped = || Error::new(Kind::Io, "the writer thread stopped");
        let (Ok(mut helper), Ok(mut pending), Ok(mut state)) = (
            self.helper.try_borrow_mut(),
            self.pending.try_borrow_mut(),
            self.state.try_borrow_mut(),
        ) else {
            return Err(in_use());
        };
        if helper.is_none() {
            *helper = Some(Helper::start()?);
        }
        let Some(jobs) = helper.as_ref().and_then(|h| h.jobs.as_ref()) else {
            return Err(stopped());
        };
        let Some(out) = state.take() else {
            return Err(Error::new(Kind::Closed, "the file being written is closed"));
        };
        // The bytes are kept before the thread can read them.
        *pending = Some(bytes);
        if jobs.send((out, lent)).is_err() {
            // The save went with the job (a file sink removes its temporary
            // file), unread.
            *pending = None;
            return Err(stopped());
        }
        Ok(())
    }
}

impl Drop for SaveHandle {
    fn drop(&mut self) {
        // The thread reads a raw vector that goes with this handle.
        let _ = self.settle();
    }
}

/// Positions of the description's fields (R/write.R builds it).
const FIELDS: [&str; 8] = [
    "tensors", "names", "dtypes", "shapes", "kinds", "exact", "metadata", "from",
];

fn field(spec: &List, i: usize) -> Result<Robj> {
    let named = spec.names().and_then(|mut names| names.nth(i)) == Some(FIELDS[i]);
    match spec.elt(i) {
        Ok(x) if named => Ok(x),
        _ => Err(malformed()),
    }
}

fn malformed() -> Error {
    Error::new(
        Kind::InvalidArgument,
        "internal error: malformed tensor description",
    )
}

fn shape_of(x: &Robj, name: &str) -> Result<Vec<usize>> {
    let bad = || {
        Error::tensor(
            Kind::InvalidArgument,
            name,
            format!("the shape of tensor `{name}` is invalid"),
        )
    };
    let v: Vec<f64> = if let Some(v) = x.as_real_slice() {
        v.to_vec()
    } else if let Some(v) = x.as_integer_slice() {
        v.iter()
            .map(|&d| if d == i32::MIN { -1.0 } else { d as f64 })
            .collect()
    } else {
        return Err(bad());
    };
    v.iter()
        .map(|&d| {
            if d >= 0.0 && d.fract() == 0.0 && d < 2f64.powi(63) {
                Ok(d as usize)
            } else {
                Err(bad())
            }
        })
        .collect()
}

/// A file's metadata: `(key, value)` pairs.
type Metadata = Vec<(String, String)>;

/// The tensors' descriptions and the metadata of a description.
pub(crate) fn specs_of(spec: &List) -> Result<(Vec<TensorSpec>, Option<Metadata>)> {
    let names = field(spec, 1)?;
    let dtypes = field(spec, 2)?;
    let shapes = List::try_from(&field(spec, 3)?).map_err(|_| malformed())?;
    let (Some(names), Some(dtypes)) = (names.as_str_vector(), dtypes.as_str_vector()) else {
        return Err(malformed());
    };
    if names.len() != dtypes.len() || names.len() != shapes.len() {
        return Err(malformed());
    }
    let mut specs = Vec::with_capacity(names.len());
    for ((name, dtype), shape) in names.iter().zip(&dtypes).zip(shapes.values()) {
        let Some(dt) = Dtype::from_name(dtype) else {
            return Err(Error::tensor(
                Kind::InvalidArgument,
                name,
                format!("unknown dtype `{dtype}`"),
            ));
        };
        specs.push(TensorSpec {
            name: name.to_string(),
            dtype: dt,
            shape: shape_of(&shape, name)?,
        });
    }
    let meta = field(spec, 6)?;
    let metadata = if meta.is_null() {
        None
    } else {
        let (Some(values), Some(keys)) = (meta.as_str_vector(), meta.names()) else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "`metadata` must be a named character vector",
            ));
        };
        Some(
            keys.zip(values)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    Ok((specs, metadata))
}

/// The values of a vector, borrowed from R for as long as `x` lives.
pub(crate) fn src_of(x: &Robj) -> Option<Src<'_>> {
    // SAFETY: each arm reads the vector as the type R stores; `x` keeps it
    // alive for the borrow.
    unsafe {
        let s = x.get();
        Some(match x.rtype() {
            Rtype::Doubles => Src::Real(slice_of(s, extendr_ffi::SEXPTYPE::REALSXP)?),
            Rtype::Integers => Src::Integer(slice_of(s, extendr_ffi::SEXPTYPE::INTSXP)?),
            Rtype::Logicals => Src::Logical(slice_of(s, extendr_ffi::SEXPTYPE::LGLSXP)?),
            Rtype::Raw => Src::Raw(slice_of(s, extendr_ffi::SEXPTYPE::RAWSXP)?),
            Rtype::Complexes => Src::Complex(slice_of(s, extendr_ffi::SEXPTYPE::CPLXSXP)?),
            _ => return None,
        })
    }
}

/// The values of bit64's `integer64` vector `x` (a double vector whose
/// elements hold int64 bits), borrowed from R for as long as `x` lives.
pub(crate) fn int64_of(x: &Robj) -> Option<Src<'_>> {
    // SAFETY: a double vector's elements are 8 aligned bytes, which i64
    // reads as they are (bit64 stores each int64 value's bits there); `x`
    // keeps the vector alive for the borrow.
    unsafe {
        let v: &[f64] = slice_of(x.get(), extendr_ffi::SEXPTYPE::REALSXP)?;
        Some(Src::Int64(std::slice::from_raw_parts(
            v.as_ptr() as *const i64,
            v.len(),
        )))
    }
}

/// Each tensor's input, from the description's `tensors`, `kinds`,
/// `exact` and `from`: `"values"` (an R vector to convert, rounded to
/// nearest or, where `exact`, written only if the dtype holds every value
/// exactly), `"integer64"` (bit64's integer64, converted from its int64
/// values, the same way), `"bytes"` (a raw vector of the bytes as stored in
/// dtype `from`) or `"later"` (bytes of dtype `from` that R puts when the
/// tensor's turn comes). `values` must outlive the inputs.
fn inputs_of<'a>(
    values: &'a [Robj],
    kinds: &[&str],
    exact: &[Rbool],
    from: &[&str],
    names: &[String],
) -> Result<Vec<Input<'a>>> {
    let dtype = |d: &str, name: &str| {
        Dtype::from_name(d).ok_or_else(|| {
            Error::tensor(Kind::InvalidArgument, name, format!("unknown dtype `{d}`"))
        })
    };
    values
        .iter()
        .zip(kinds)
        .zip(exact)
        .zip(from)
        .zip(names)
        .map(|((((x, &kind), exact), &from), name)| {
            let rounding = if exact.is_true() {
                Rounding::Exact
            } else {
                Rounding::Nearest
            };
            match kind {
                "values" => src_of(x)
                    .map(|src| Input::Values(src, rounding))
                    .ok_or_else(|| {
                        Error::tensor(
                            Kind::InvalidArgument,
                            name,
                            format!("tensor `{name}` is not a vector"),
                        )
                    }),
                "integer64" => int64_of(x)
                    .map(|src| Input::Values(src, rounding))
                    .ok_or_else(|| {
                        Error::tensor(
                            Kind::InvalidArgument,
                            name,
                            format!("tensor `{name}` is not an integer64 vector"),
                        )
                    }),
                "bytes" => {
                    let from = dtype(from, name)?;
                    raw_bytes(x).map(|b| Input::Bytes(b, from)).map_err(|_| {
                        Error::tensor(
                            Kind::InvalidArgument,
                            name,
                            format!("the buffer of tensor `{name}` must be raw"),
                        )
                    })
                }
                "later" => Ok(Input::Later(dtype(from, name)?)),
                _ => Err(malformed()),
            }
        })
        .collect()
}

/// The description in the protected slot of writer `w`.
fn spec_of(w: &Robj) -> Result<List> {
    // SAFETY: `w` is an external pointer (checked by the caller through
    // `with_writer`); its protected slot is a list R/write.R stored.
    let slot = unsafe { Robj::from_sexp(R_ExternalPtrProtected(w.get())) };
    let spec = List::try_from(&slot)
        .ok()
        .and_then(|l| l.elt(0).ok())
        .ok_or_else(malformed)?;
    List::try_from(&spec).map_err(|_| malformed())
}

/// Runs `f` on the open save of writer `w` with the inputs its description
/// gives. If `f` fails, the save is abandoned and its temporary file
/// removed.
fn with_writer<T>(w: &Robj, f: impl FnOnce(&mut Out, &[Input<'_>]) -> Result<T>) -> Result<T> {
    with_writer_out(w, |out| {
        let spec = spec_of(w)?;
        let values: Vec<Robj> = List::try_from(&field(&spec, 0)?)
            .map_err(|_| malformed())?
            .values()
            .collect();
        let kinds = field(&spec, 4)?;
        let exact = field(&spec, 5)?;
        let names = field(&spec, 1)?;
        let from = field(&spec, 7)?;
        let (Some(kinds), Some(exact), Some(names), Some(from)) = (
            kinds.as_str_vector(),
            exact.as_logical_slice(),
            names.as_string_vector(),
            from.as_str_vector(),
        ) else {
            return Err(malformed());
        };
        let n = values.len();
        if kinds.len() != n || exact.len() != n || names.len() != n || from.len() != n {
            return Err(malformed());
        }
        let inputs = inputs_of(&values, &kinds, exact, &from, &names)?;
        f(out, &inputs)
    })
}

/// Runs `f` on the open save of writer `w`, without its inputs (a put of
/// bytes needs none, and building them costs a walk over every tensor's
/// description for each piece). If `f` fails, the save is abandoned.
fn with_writer_out<T>(w: &Robj, f: impl FnOnce(&mut Out) -> Result<T>) -> Result<T> {
    let closed = || Error::new(Kind::Closed, "the file being written is closed");
    let Ok(ptr) = <&ExternalPtr<SaveHandle>>::try_from(w) else {
        return Err(closed());
    };
    let Ok(handle) = ptr.try_addr() else {
        return Err(closed());
    };
    handle.settle()?;
    let Ok(mut state) = handle.state.try_borrow_mut() else {
        return Err(Error::new(Kind::InvalidArgument, "the writer is in use"));
    };
    let Some(out) = state.as_mut() else {
        return Err(closed());
    };
    let res = f(out);
    if res.is_err() {
        state.take();
    }
    res
}

/// The dtype in which R puts the bytes of tensor `i` of writer `w`'s
/// description and the tensor's own dtype, if R puts them (kind `"later"`).
fn later_dtypes(w: &Robj, i: usize) -> Option<(Dtype, Dtype)> {
    let spec = spec_of(w).ok()?;
    let nth = |k: usize| -> Option<Dtype> {
        let x = field(&spec, k).ok()?;
        let name = x.as_str_iter()?.nth(i)?;
        Dtype::from_name(name)
    };
    let kinds = field(&spec, 4).ok()?;
    if kinds.as_str_iter()?.nth(i)? != "later" {
        return None;
    }
    Some((nth(7)?, nth(2)?))
}

/// Opens a save of the tensors `spec` describes (see R/write.R), to the
/// file at `path` (`to = "file"`, atomically; with `sync`, flushed to disk
/// before it replaces the target), a new raw vector (`"raw"`) or a stream
/// (`"stream"`), encoding on `threads` threads (0: the default). Validates
/// the description and writes the header.
/// @noRd
#[extendr]
fn writer_open_(spec: List, to: &str, path: &str, sync: bool, threads: i32) -> Robj {
    to_r((|| {
        let (specs, metadata) = specs_of(&spec)?;
        let threads = threads_from_r(threads);
        let meta = metadata.as_deref();
        let mut raw: Robj = ().into();
        let out = match to {
            "file" => Out::File(Writer::new(
                specs,
                meta,
                FileSink::create(Path::new(path), sync)?,
                threads,
            )?),
            "stream" => Out::Stream(Writer::new(specs, meta, Vec::new(), threads)?),
            "raw" => {
                // The size first, from a writer to nowhere (the header is
                // small), then the vector of that size.
                let probe = Writer::new(specs.clone(), meta, Vec::new(), threads)?;
                raw = alloc(extendr_ffi::SEXPTYPE::RAWSXP, probe.file_len())?;
                // SAFETY: a fresh raw vector of that many bytes, kept alive
                // by the external pointer's protected slot for as long as
                // the writer lives (the writer is dropped first: commit,
                // abort and the finalizer all take it out of the handle
                // before the slot goes).
                let bytes: &'static mut [u8] = unsafe {
                    std::slice::from_raw_parts_mut(
                        vec_data(raw.get(), extendr_ffi::SEXPTYPE::RAWSXP),
                        probe.file_len(),
                    )
                };
                Out::Raw(Writer::new(specs, meta, MemSink::new(bytes), threads)?)
            }
            _ => {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    format!("unknown output `{to}`"),
                ))
            }
        };
        let ptr: Robj = ExternalPtr::new(SaveHandle {
            state: RefCell::new(Some(out)),
            helper: RefCell::new(None),
            pending: RefCell::new(None),
        })
        .into();
        let keep: Robj = List::from_values([spec.into(), raw]).into();
        // SAFETY: both are valid R objects; the slot keeps the description
        // (whose vectors the writer reads at every call) and the raw
        // vector (which a raw writer fills) alive.
        unsafe { R_SetExternalPtrProtected(ptr.get(), keep.get()) };
        Ok(ptr)
    })())
}

/// `list(written, current)`: bytes written so far, header included, and
/// the tensor (1-based) whose bytes come next, `0` when all were written.
fn progress(out: &mut Out) -> Robj {
    let (written, current) = on_writer!(out, w => (w.written(), w.current()));
    named_list(
        &["written", "current"],
        vec![
            (written as f64).into(),
            (current.map_or(0, |i| i + 1) as f64).into(),
        ],
    )
}

/// Writes the tensors whose values R holds, continuing where the writer
/// is, until about `budget` bytes were written (`Inf`: no limit; `0`:
/// nothing), every tensor was, or the next one's bytes come from R
/// (`writer_put_()`).
/// Returns `list(written, current)`.
/// @noRd
#[extendr]
fn writer_write_(w: Robj, budget: f64) -> Robj {
    to_r(with_writer(&w, |out, inputs| {
        // Inf: no limit; 0: nothing (the state only).
        let budget = if budget >= usize::MAX as f64 {
            usize::MAX
        } else {
            budget.max(0.0) as usize
        };
        let poll = &mut check_interrupt_now;
        on_writer!(out, w => w.write(inputs, budget, poll)?);
        Ok(progress(out))
    }))
}

/// Appends the first `n` bytes of the raw vector `bytes` (a framework's
/// buffer, or torch's staging buffer) to the tensor whose turn it is.
/// With `detach` (and a file or raw vector as the output), the bytes are
/// written on a helper thread while R goes on (filling another staging
/// vector): R must leave `bytes` alone until its next call to the writer,
/// which waits for the thread first. Returns `list(written, current)`; a
/// detached put reports the bytes as written and `current` as `NA`.
/// @noRd
#[extendr]
fn writer_put_(w: Robj, bytes: Robj, n: f64, detach: bool) -> Robj {
    to_r((|| {
        let part = with_writer_out(&w, |out| {
            let current = on_writer!(out, w => w.current());
            let Some((from, dtype)) = current.and_then(|i| later_dtypes(&w, i)) else {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    "internal error: bytes were given for a tensor the writer converts from its values",
                ));
            };
            let all = raw_bytes(&bytes)?;
            let Some(part) = (n >= 0.0 && n.fract() == 0.0)
                .then_some(n as usize)
                .and_then(|n| all.get(..n))
            else {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    "internal error: more bytes asked for than given",
                ));
            };
            // Bytes the writer recodes to another dtype are put here: the
            // bytes written would not be known in advance.
            if detach && from == dtype && !matches!(out, Out::Stream(_)) {
                let written = on_writer!(out, w => w.written());
                return Ok(Some((
                    Lent {
                        ptr: part.as_ptr(),
                        n: part.len(),
                        from,
                    },
                    written + part.len(),
                )));
            }
            let poll = &mut check_interrupt_now;
            on_writer!(out, w => w.put(part, from, poll)?);
            Ok(None)
        })?;
        let Some((lent, written)) = part else {
            return with_writer_out(&w, |out| Ok(progress(out)));
        };
        // Hands the save to the helper thread for this put.
        let ptr = <&ExternalPtr<SaveHandle>>::try_from(&w)
            .map_err(|_| Error::new(Kind::Closed, "the file being written is closed"))?;
        let handle = ptr
            .try_addr()
            .map_err(|_| Error::new(Kind::Closed, "the file being written is closed"))?;
        handle.detach(lent, bytes)?;
        Ok(named_list(
            &["written", "current"],
            vec![(written as f64).into(), Robj::from(Rfloat::na())],
        ))
    })())
}

/// Writes the whole of the tensor whose turn it is, `n` bytes in its own
/// dtype, from memory R torch owns at `address` (torch's text of the
/// pointer: hexadecimal, with or without `0x`), to a file output, without a
/// staging copy. R checked with torch that those bytes are the tensor's
/// values, row-major from its storage's start on the CPU (torch_memories() in
/// R/torch.R); the tensor stays referenced (R's caller holds it) and
/// unchanged during this call. Only the kernel reads the memory (the file's
/// `write()`), which reports an address it can't read as an error rather
/// than faulting. Returns `list(written, current)`.
/// @noRd
#[extendr]
fn writer_put_memory_(w: Robj, address: &str, n: f64) -> Robj {
    to_r(with_writer_out(&w, |out| {
        let refuse = |what: &str| {
            Error::new(
                Kind::InvalidArgument,
                format!("internal error: {what} for a write from memory"),
            )
        };
        let ptr = parse_address(address).ok_or_else(|| refuse("an invalid address"))?;
        let current = on_writer!(out, w => w.current());
        let left = on_writer!(out, w => w.left());
        // The whole tensor, in its own dtype: nothing is recoded (which
        // would read the memory here) and no piece was put before.
        let dtype = current
            .and_then(|i| later_dtypes(&w, i))
            .and_then(|(from, dtype)| (from == dtype).then_some(dtype));
        let whole = (n >= 1.0 && n.fract() == 0.0 && n < 2f64.powi(53))
            .then_some(n as usize)
            .filter(|&n| Some(n) == left && ptr.checked_add(n).is_some());
        let (Some(n), Some(dtype)) = (whole, dtype) else {
            return Err(refuse("a tensor that is not whole in its own dtype"));
        };
        if !matches!(out, Out::File(_) | Out::Placed(_)) {
            return Err(refuse("an output that is not a file"));
        }
        // SAFETY: torch allocated these `n` bytes for the tensor, which R
        // references for this call (see above); nothing in this process
        // writes them meanwhile. The slice only goes to the file sinks'
        // write(), never read in this process.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, n) };
        let poll = &mut check_interrupt_now;
        if let Out::File(w) = out {
            w.put(bytes, dtype, poll)?;
        } else if let Out::Placed(w) = out {
            w.put(bytes, dtype, poll)?;
        }
        Ok(progress(out))
    }))
}

/// Moves a stream writer's output (nothing pending: R took the header and
/// wrote it to its file connection) to the file at `path` itself, in place
/// from byte `at` (where the connection is, and the file's size), so that
/// the rest goes through the engine instead of R's connection; with `sync`,
/// flushed to disk on commit. Returns `NULL`; on an error (the file is not
/// a regular file of `at` bytes), the writer stays a stream.
/// @noRd
#[extendr]
fn writer_place_(w: Robj, path: &str, at: f64, sync: bool) -> Robj {
    to_r((|| {
        let bad = || Error::new(Kind::InvalidArgument, "internal error: not a stream writer");
        let ptr = <&ExternalPtr<SaveHandle>>::try_from(&w).map_err(|_| bad())?;
        let handle = ptr.try_addr().map_err(|_| bad())?;
        handle.settle()?;
        let mut state = handle.state.try_borrow_mut().map_err(|_| bad())?;
        if !matches!(&*state, Some(Out::Stream(s)) if s.written() > 0) {
            return Err(bad());
        }
        if !(at >= 0.0 && at.fract() == 0.0 && at < 2f64.powi(53)) {
            return Err(bad());
        }
        let sink = PlacedSink::open(Path::new(path), at as u64, sync)?;
        let Some(Out::Stream(mut stream)) = state.take() else {
            return Err(bad());
        };
        if !stream.sink_mut().is_empty() {
            *state = Some(Out::Stream(stream));
            return Err(bad());
        }
        let (placed, _) = stream.with_sink(sink);
        *state = Some(Out::Placed(placed));
        Ok(().into())
    })())
}

/// A stream's pending bytes (and nothing pending afterwards), as a raw
/// vector.
/// @noRd
#[extendr]
fn writer_take_(w: Robj) -> Robj {
    to_r(with_writer(&w, |out, _| match out {
        Out::Stream(w) => {
            let pending = std::mem::take(w.sink_mut());
            Ok(Robj::from(&pending[..]))
        }
        _ => Ok(Robj::from(&[] as &[u8])),
    }))
}

/// Finishes a save: checks that every tensor was written, then commits a
/// file (flush, fsync with `sync`, rename over the target: returns its
/// size), returns a raw writer's vector, or a stream's last pending bytes.
/// @noRd
#[extendr]
fn writer_commit_(w: Robj) -> Robj {
    to_r((|| {
        let closed = || Error::new(Kind::Closed, "the file being written is closed");
        let Ok(ptr) = <&ExternalPtr<SaveHandle>>::try_from(&w) else {
            return Err(closed());
        };
        let Ok(handle) = ptr.try_addr() else {
            return Err(closed());
        };
        handle.settle()?;
        let Ok(mut state) = handle.state.try_borrow_mut() else {
            return Err(Error::new(Kind::InvalidArgument, "the writer is in use"));
        };
        let Some(out) = state.take() else {
            return Err(closed());
        };
        match out {
            Out::File(w) => {
                let size = w.file_len();
                w.finish()?.commit(&mut check_interrupt_now)?;
                Ok(Robj::from(size as f64))
            }
            Out::Raw(writer) => {
                writer.finish()?;
                // SAFETY: the protected slot is the list writer_open_()
                // stored; element 1 is the raw vector, now complete.
                Ok(unsafe { Robj::from_sexp(VECTOR_ELT(R_ExternalPtrProtected(w.get()), 1)) })
            }
            Out::Stream(w) => {
                let rest = w.finish()?;
                Ok(Robj::from(&rest[..]))
            }
            Out::Placed(w) => {
                let size = w.file_len();
                w.finish()?.commit(&mut check_interrupt_now)?;
                Ok(Robj::from(size as f64))
            }
        }
    })())
}

/// Abandons a save, removing its temporary file; harmless after a commit
/// or an earlier abort. Returns whether a save was abandoned.
/// @noRd
#[extendr]
fn writer_abort_(w: Robj) -> Robj {
    let Ok(ptr) = <&ExternalPtr<SaveHandle>>::try_from(&w) else {
        return false.into();
    };
    let Ok(handle) = ptr.try_addr() else {
        return false.into();
    };
    let _ = handle.settle();
    let Ok(mut state) = handle.state.try_borrow_mut() else {
        return false.into();
    };
    state.take().is_some().into()
}

extendr_module! {
    mod write;
    fn writer_open_;
    fn writer_write_;
    fn writer_put_;
    fn writer_put_memory_;
    fn writer_place_;
    fn writer_take_;
    fn writer_commit_;
    fn writer_abort_;
}
