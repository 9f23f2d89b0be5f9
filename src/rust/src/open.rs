//! Open files: a handle that keeps a validated header and a file (memory
//! map or positioned reads) or a raw vector, and reads single tensors and
//! slices on demand.
//!
//! R holds the handle in an external pointer. The garbage collector drops
//! it; `close_()` drops the file or map earlier, after which every use is an
//! error of kind `Closed`. A handle over a raw vector keeps that vector alive
//! in the external pointer's protected slot rather than in the Rust struct,
//! so dropping a handle never touches R's memory manager.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use extendr_api::prelude::*;
use extendr_ffi::{R_NilValue, R_SetExternalPtrProtected};

use crate::error::{Error, Kind, Result};
use crate::format::Header;
use crate::io::{self, FileSource, Memory, Source};
use crate::load::{
    check_strings, header_robj, info_robj, max_offset, parse_backend, raw_bytes, read_many, threads_from_r, Mode,
};
use crate::robj::{named_list, to_r};
use crate::slice::{self, parse_sels};

/// Where an open handle's bytes live.
pub(crate) enum Backing {
    /// A file, mapped or read.
    File(FileSource),
    /// An R raw vector, kept alive by the external pointer that owns the
    /// handle (its protected slot); `ptr` and `len` are its data.
    Memory { ptr: *const u8, len: usize },
}

/// An open file or buffer and its validated header.
pub(crate) struct Open {
    pub(crate) backing: Backing,
    pub(crate) header: Header,
    /// Tensor name to position in `header.tensors`.
    index: HashMap<String, usize>,
}

impl Open {
    fn new(backing: Backing) -> Result<Open> {
        let header = with_source(&backing, |src| {
            let header = io::read_header(src)?;
            check_strings(&header)?;
            Ok(header)
        })?;
        let index = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(Open { backing, header, index })
    }

    pub(crate) fn find(&self, name: &str) -> Result<usize> {
        self.index.get(name).copied().ok_or_else(|| {
            Error::tensor(Kind::TensorNotFound, name, format!("tensor `{name}` is not in the file"))
        })
    }

    fn len(&self) -> u64 {
        match &self.backing {
            Backing::File(f) => f.len(),
            Backing::Memory { len, .. } => *len as u64,
        }
    }
}

pub(crate) fn with_source<T>(backing: &Backing, f: impl FnOnce(&dyn Source) -> Result<T>) -> Result<T> {
    match backing {
        Backing::File(file) => f(file),
        Backing::Memory { ptr, len } => {
            let bytes: &[u8] = if *len == 0 {
                &[]
            } else {
                // SAFETY: the raw vector stays alive (and R never moves
                // vectors) for as long as the external pointer holding this
                // handle protects it, which is at least as long as the
                // handle is open.
                unsafe { std::slice::from_raw_parts(*ptr, *len) }
            };
            f(&Memory(bytes))
        }
    }
}

/// What R's external pointer owns: an open file or buffer, or nothing once
/// closed.
pub struct Handle {
    state: RefCell<Option<Open>>,
}

/// Runs `f` on the open state of the handle in `x`.
pub(crate) fn with_open<T>(x: &Robj, f: impl FnOnce(&Open) -> Result<T>) -> Result<T> {
    let closed = || Error::new(Kind::Closed, "the file is closed");
    let Ok(ptr) = <&ExternalPtr<Handle>>::try_from(x) else {
        // A NULL address: the handle was saved and restored, which can't
        // carry an open file across sessions.
        return Err(if x.is_external_pointer() { closed() } else { Error::new(Kind::InvalidArgument, "not a safetensors handle") });
    };
    let Ok(handle) = ptr.try_addr() else { return Err(closed()) };
    let Ok(state) = handle.state.try_borrow() else {
        return Err(Error::new(Kind::InvalidArgument, "the handle is in use"));
    };
    match state.as_ref() {
        Some(open) => f(open),
        None => Err(closed()),
    }
}

fn new_handle(open: Open) -> Robj {
    ExternalPtr::new(Handle { state: RefCell::new(Some(open)) }).into()
}

/// Opens the file at `path` with backend `"mmap"` or `"read"`, reading and
/// validating its header.
/// @noRd
#[extendr]
fn open_file_(path: &str, backend: &str) -> Robj {
    to_r((|| {
        let src = FileSource::open(Path::new(path), parse_backend(backend)?)?;
        Ok(new_handle(Open::new(Backing::File(src))?))
    })())
}

/// Opens a raw vector holding a whole file; the handle keeps it alive.
/// @noRd
#[extendr]
fn open_raw_(buf: Robj) -> Robj {
    to_r((|| {
        let bytes = raw_bytes(&buf)?;
        let backing = Backing::Memory { ptr: bytes.as_ptr(), len: bytes.len() };
        let open = Open::new(backing)?;
        let h = new_handle(open);
        // SAFETY: both are valid R objects; setting the protected slot
        // can't fail. It keeps `buf`, which `backing` points into, alive.
        unsafe { R_SetExternalPtrProtected(h.get(), buf.get()) };
        Ok(h)
    })())
}

/// Closes a handle: drops the file or map and releases a raw vector. Closing
/// twice is harmless.
/// @noRd
#[extendr]
fn close_(x: Robj) -> Robj {
    to_r((|| {
        let Ok(ptr) = <&ExternalPtr<Handle>>::try_from(&x) else {
            return Ok(false.into());
        };
        let Ok(handle) = ptr.try_addr() else { return Ok(false.into()) };
        let Ok(mut state) = handle.state.try_borrow_mut() else {
            return Err(Error::new(Kind::InvalidArgument, "the handle is in use"));
        };
        let was_open = state.take().is_some();
        // SAFETY: x is an external pointer; clearing its protected slot
        // lets R collect a raw vector the handle no longer reads.
        unsafe { R_SetExternalPtrProtected(x.get(), R_NilValue) };
        Ok(was_open.into())
    })())
}

/// Whether a handle is open.
/// @noRd
#[extendr]
fn is_open_(x: Robj) -> bool {
    with_open(&x, |_| Ok(())).is_ok()
}

/// Header facts of an open handle (as `info_file_()` gives).
/// @noRd
#[extendr]
fn handle_info_(x: Robj) -> Robj {
    to_r(with_open(&x, |open| Ok(info_robj(&open.header, open.len()))))
}

/// The parsed header of an open handle, as safetensors 0.2.x exposed it.
/// @noRd
#[extendr]
fn handle_header_(x: Robj) -> Robj {
    to_r(with_open(&x, |open| Ok(header_robj(&open.header))))
}

/// Reads the named tensors of an open handle in mode `"array"` or `"raw"`
/// on `threads` threads (0: the default): `list(tensors, inexact, int_min,
/// max_offset)`. Only those tensors' bytes are read.
/// @noRd
#[extendr]
fn handle_read_(x: Robj, names: Robj, mode: &str, threads: i32) -> Robj {
    to_r(with_open(&x, |open| {
        let mode = Mode::parse(mode)?;
        let Some(wanted) = names.as_str_vector() else {
            return Err(Error::new(Kind::InvalidArgument, "`names` must be a character vector"));
        };
        let which = wanted.iter().map(|n| open.find(n)).collect::<Result<Vec<_>>>()?;
        let header = &open.header;
        with_source(&open.backing, |src| {
            let (tensors, stats) = read_many(src, header, &which, mode, threads_from_r(threads))?;
            let inexact: Vec<f64> = stats.iter().map(|s| s.inexact as f64).collect();
            let int_min: Vec<f64> = stats.iter().map(|s| s.int_min as f64).collect();
            Ok(named_list(
                &["tensors", "inexact", "int_min", "max_offset"],
                vec![
                    tensors,
                    Robj::from(&inexact[..]),
                    Robj::from(&int_min[..]),
                    (max_offset(header, &which) as f64).into(),
                ],
            ))
        })
    }))
}

/// Reads a slice of tensor `name`: `specs[[j]]` selects along dimension
/// `j`, as `c(start, count, step)` (0-based) when `is_range[j]` is 1, else
/// as a vector of 0-based indices. Returns `list(tensor, inexact, int_min)`.
/// @noRd
#[extendr]
fn handle_slice_(x: Robj, name: &str, specs: Robj, is_range: Robj, mode: &str) -> Robj {
    to_r(with_open(&x, |open| {
        let mode = Mode::parse(mode)?;
        let (Ok(specs), Some(is_range)) = (List::try_from(&specs), is_range.as_integer_slice()) else {
            return Err(Error::new(Kind::InvalidArgument, "malformed slice description"));
        };
        let i = open.find(name)?;
        let info = &open.header.tensors[i];
        let sels = parse_sels(&specs, is_range, name)?;
        let off = open.header.data_start() + info.begin;
        let (t, stats) = with_source(&open.backing, |src| slice::read_slice(src, info, off, sels, mode))?;
        Ok(named_list(
            &["tensor", "inexact", "int_min"],
            vec![t, (stats.inexact as f64).into(), (stats.int_min as f64).into()],
        ))
    }))
}

extendr_module! {
    mod open;
    fn open_file_;
    fn open_raw_;
    fn close_;
    fn is_open_;
    fn handle_info_;
    fn handle_header_;
    fn handle_read_;
    fn handle_slice_;
}
