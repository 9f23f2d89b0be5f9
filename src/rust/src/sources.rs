//! Open sources (R/sources.R): a file (memory-mapped or read with
//! positioned reads), an R raw vector, or a remote file (over HTTP) of
//! which only the header is here, with its validated header, held by R in
//! an external pointer; the header of a stream, parsed from its first
//! bytes; and reads of whole tensors from a remote file, whose bytes R
//! fetches piece by piece (`remote_plan_()`, `remote_feed_()`,
//! `remote_finish_()`).
//!
//! The garbage collector drops a handle; `close_()` drops the file or map
//! earlier, after which every use is an error of kind `Closed`. A handle
//! over a raw vector keeps that vector alive in the external pointer's
//! protected slot rather than in the Rust struct, so dropping a handle
//! never touches R's memory manager.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use extendr_api::prelude::*;
use extendr_ffi::{R_NilValue, R_SetExternalPtrProtected};
use safetensors_core::error::{Error, Kind, Result};
use safetensors_core::format::{self, Header, N_LEN};
use safetensors_core::io::{self, Backend, FileSource, Memory, Segments, Source};
use safetensors_core::read::Fetch;

use crate::info::{check_strings, info_robj};
use crate::robj::{raw_bytes, threads_from_r, to_r, with_cell};
use crate::tensors::{Loader, Mode};

/// Where an open source's bytes live.
pub enum Backing {
    /// A file, mapped or read; shared with the views of it that torch
    /// copies from (R/torch.R), so that closing the handle can't unmap
    /// bytes a view still points to.
    File(Arc<FileSource>),
    /// An R raw vector, kept alive by the external pointer that owns the
    /// handle (its protected slot); `ptr` and `len` are its data.
    Memory { ptr: *const u8, len: usize },
    /// A file of `len` bytes elsewhere (on an HTTP server): the bytes a
    /// read needs are fetched by R and given to the read as [`Segments`].
    Remote { len: u64 },
}

/// An open file or buffer and its validated header.
pub struct Open {
    pub backing: Backing,
    pub header: Header,
    /// Tensor name to position in `header.tensors`.
    index: HashMap<String, usize>,
}

impl Open {
    /// Reads and validates the header of `backing`.
    pub fn new(backing: Backing) -> Result<Open> {
        let header = with_source(&backing, read_header)?;
        Ok(Open::with_header(backing, header))
    }

    fn with_header(backing: Backing, header: Header) -> Open {
        let index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Open {
            backing,
            header,
            index,
        }
    }

    /// A remote file of `len` bytes whose first bytes are `prefix` (at
    /// least its header): the header is read from them and validated
    /// against `len` as a local file's is against its size.
    pub fn remote(prefix: &[u8], len: u64) -> Result<Open> {
        let header = read_header(&Segments::new(len, vec![(0, prefix)])?)?;
        Ok(Open::with_header(Backing::Remote { len }, header))
    }

    /// Opens the file at `path` with `backend` (`"auto"`, `"mmap"` or
    /// `"read"`), as a source starting at byte `base` of the file (a file
    /// connection's position).
    pub fn file(path: &str, backend: &str, base: f64) -> Result<Open> {
        let backend = Backend::from_name(backend)?;
        if !(base >= 0.0 && base.fract() == 0.0 && base < 2f64.powi(53)) {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: invalid offset",
            ));
        }
        Open::new(Backing::File(Arc::new(FileSource::open_at(
            Path::new(path),
            backend,
            base as u64,
        )?)))
    }

    /// The position of tensor `name` in the header.
    pub fn find(&self, name: &str) -> Result<usize> {
        self.index.get(name).copied().ok_or_else(|| {
            Error::tensor(
                Kind::TensorNotFound,
                name,
                format!("tensor `{name}` is not in the file"),
            )
        })
    }

    /// The positions of the tensors named in `names` (a character vector,
    /// or `NULL` for all, in the order the header lists them), in the order
    /// asked.
    pub fn select(&self, names: &Robj) -> Result<Vec<usize>> {
        if names.is_null() {
            return Ok(self.header.json_order.clone());
        }
        let Some(wanted) = names.as_str_iter() else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "`tensors` must be a character vector",
            ));
        };
        wanted.map(|n| self.find(n)).collect()
    }

    /// Runs `f` on the source.
    pub fn with_source<T>(&self, f: impl FnOnce(&dyn Source) -> Result<T>) -> Result<T> {
        with_source(&self.backing, f)
    }

    /// Starts reading whole tensors `names` in pieces of at most `max`
    /// bytes (capped at 1 TiB): the [`Loader`], and the fetches its pieces
    /// make up, in order.
    pub fn start_loader(&self, names: &Robj, mode: Mode, max: f64) -> Result<(Loader, Vec<Fetch>)> {
        let which = self.select(names)?;
        Loader::new(
            &self.header,
            self.len(),
            &which,
            mode,
            max.min(2f64.powi(40)) as usize,
        )
    }

    /// Runs `f` on the source, or for a remote file on the segments R
    /// fetched for this read: `segments` is `list(offsets, raw vectors)`
    /// (ignored for other sources).
    pub fn with_fetched<T>(
        &self,
        segments: &Robj,
        f: impl FnOnce(&dyn Source) -> Result<T>,
    ) -> Result<T> {
        let Backing::Remote { len } = self.backing else {
            return self.with_source(f);
        };
        let bad = || Error::new(Kind::InvalidArgument, "internal error: malformed segments");
        let Ok(list) = List::try_from(segments) else {
            return Err(bad());
        };
        let (Some(offsets), Some(raws)) = (list.elt(0).ok(), list.elt(1).ok()) else {
            return Err(bad());
        };
        let (Some(offsets), Ok(raws)) = (offsets.as_real_slice(), List::try_from(&raws)) else {
            return Err(bad());
        };
        if offsets.len() != raws.len() {
            return Err(bad());
        }
        let mut parts = Vec::with_capacity(offsets.len());
        for (&off, raw) in offsets.iter().zip(raws.values()) {
            if !(off >= 0.0 && off.fract() == 0.0 && off < len as f64) {
                return Err(bad());
            }
            // `raws` keeps every vector alive for this call.
            let bytes = raw_bytes(&raw)?;
            // SAFETY: the vector's data stay where they are for as long as
            // `segments`, which the caller holds, protects it.
            let bytes: &[u8] = unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
            parts.push((off as usize, bytes));
        }
        f(&Segments::new(len, parts)?)
    }

    /// The length of the file or buffer.
    pub fn len(&self) -> u64 {
        match &self.backing {
            Backing::File(f) => f.len(),
            Backing::Memory { len, .. } => *len as u64,
            Backing::Remote { len } => *len,
        }
    }
}

fn read_header(src: &dyn Source) -> Result<Header> {
    let header = io::read_header(src)?;
    check_strings(&header)?;
    Ok(header)
}

fn with_source<T>(backing: &Backing, f: impl FnOnce(&dyn Source) -> Result<T>) -> Result<T> {
    match backing {
        Backing::Remote { .. } => Err(Error::new(
            Kind::InvalidArgument,
            "internal error: a remote file's bytes must be fetched first",
        )),
        Backing::File(file) => f(file.as_ref()),
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

/// What R's external pointer owns: an open source, or nothing once closed.
pub struct Handle {
    state: RefCell<Option<Open>>,
}

/// Runs `f` on the open state of the handle in `x`.
pub fn with_open<T>(x: &Robj, f: impl FnOnce(&Open) -> Result<T>) -> Result<T> {
    let closed = || Error::new(Kind::Closed, "the file is closed");
    let Ok(ptr) = <&ExternalPtr<Handle>>::try_from(x) else {
        // A NULL address: the handle was saved and restored, which can't
        // carry an open file across sessions.
        return Err(if x.is_external_pointer() {
            closed()
        } else {
            Error::new(Kind::InvalidArgument, "not a safetensors handle")
        });
    };
    let Ok(handle) = ptr.try_addr() else {
        return Err(closed());
    };
    let Ok(state) = handle.state.try_borrow() else {
        return Err(Error::new(Kind::InvalidArgument, "the handle is in use"));
    };
    match state.as_ref() {
        Some(open) => f(open),
        None => Err(closed()),
    }
}

fn new_handle(open: Open) -> Robj {
    ExternalPtr::new(Handle {
        state: RefCell::new(Some(open)),
    })
    .into()
}

/// Opens the file at `path` with backend `"auto"`, `"mmap"` or `"read"`,
/// from byte `base` on (0 for a whole file), reading and validating its
/// header.
/// @noRd
#[extendr]
fn open_file_(path: &str, backend: &str, base: f64) -> Robj {
    to_r(Open::file(path, backend, base).map(new_handle))
}

/// How the source of handle `x` is read: `"mmap"` or `"read"` for a file
/// (what `"auto"` chose), `"memory"` for a raw vector, `"remote"` for a
/// file over HTTP.
/// @noRd
#[extendr]
fn handle_backend_(x: Robj) -> Robj {
    to_r(with_open(&x, |open| {
        Ok(match &open.backing {
            Backing::File(f) if f.backend() == Backend::Mmap => "mmap",
            Backing::File(_) => "read",
            Backing::Memory { .. } => "memory",
            Backing::Remote { .. } => "remote",
        }
        .into())
    }))
}

/// Opens a raw vector holding a whole file; the handle keeps it alive.
/// @noRd
#[extendr]
fn open_raw_(buf: Robj) -> Robj {
    to_r((|| {
        let bytes = raw_bytes(&buf)?;
        let open = Open::new(Backing::Memory {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        })?;
        let h = new_handle(open);
        // SAFETY: both are valid R objects; setting the protected slot
        // can't fail. It keeps `buf`, which the backing points into, alive.
        unsafe { R_SetExternalPtrProtected(h.get(), buf.get()) };
        Ok(h)
    })())
}

/// Opens a remote file (over HTTP) of `len` bytes from its first bytes
/// `prefix` (a raw vector holding at least the header), reading and
/// validating the header against `len`.
/// @noRd
#[extendr]
fn open_remote_(prefix: Robj, len: f64) -> Robj {
    to_r((|| {
        if !(len >= 0.0 && len.fract() == 0.0 && len < 2f64.powi(53)) {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: invalid length",
            ));
        }
        Ok(new_handle(Open::remote(raw_bytes(&prefix)?, len as u64)?))
    })())
}

/// Starts reading whole tensors `names` (a character vector) of a remote
/// handle in mode `"raw"` or `c("array", int64, uint8)`: allocates them and plans what to
/// fetch, in pieces of at most `max` bytes. Returns `list(loader, offset,
/// length, pieces)`: the byte ranges to fetch (absolute, one request each)
/// and, for each, its pieces' lengths, which `remote_feed_()` takes in
/// order.
/// @noRd
#[extendr]
fn remote_plan_(x: Robj, names: Robj, mode: Robj, max: f64) -> Robj {
    to_r(with_open(&x, |open| {
        let mode = Mode::from_r(&mode)?;
        if names.as_str_iter().is_none()
            || !matches!(open.backing, Backing::Remote { .. })
            || max.is_nan()
            || max < 1.0
        {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: not a remote read",
            ));
        }
        let (loader, plan) = open.start_loader(&names, mode, max)?;
        let offsets: Vec<f64> = plan.iter().map(|f| f.off as f64).collect();
        let lengths: Vec<f64> = plan.iter().map(|f| f.len as f64).collect();
        let pieces: Vec<Robj> = plan
            .iter()
            .map(|f| {
                f.pieces
                    .iter()
                    .map(|p| p.len as f64)
                    .collect::<Vec<f64>>()
                    .into()
            })
            .collect();
        let ptr: Robj = ExternalPtr::new(RefCell::new(loader)).into();
        Ok(crate::robj::named_list(
            &["loader", "offset", "length", "pieces"],
            vec![
                ptr,
                offsets.into(),
                lengths.into(),
                List::from_values(pieces).into(),
            ],
        ))
    }))
}

/// Runs `f` on the loader behind the external pointer `x` (from
/// `remote_plan_()` or `handle_plan_()`).
pub fn with_loader<T>(x: &Robj, f: impl FnOnce(&mut Loader) -> Result<T>) -> Result<T> {
    with_cell(x, "a loader", f)
}

/// Reads piece `piece` (from 1, counted over all fetches) of a remote read,
/// whose bytes R fetched into the raw vector `bytes`, on `threads` threads.
/// @noRd
#[extendr]
fn remote_feed_(loader: Robj, piece: i32, bytes: Robj, threads: i32) -> Robj {
    to_r(with_loader(&loader, |l| {
        let p = usize::try_from(piece).ok().and_then(|p| p.checked_sub(1));
        let Some(p) = p else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: no such piece",
            ));
        };
        l.feed(p, raw_bytes(&bytes)?, threads_from_r(threads))?;
        Ok(().into())
    }))
}

/// The tensors of a read in pieces once every piece was read (fed from a
/// remote file, or read by `handle_read_piece_()`): `list(tensors,
/// inexact, int_min, max_offset)`, as `handle_read_()` returns them.
/// @noRd
#[extendr]
fn remote_finish_(loader: Robj) -> Robj {
    to_r(with_loader(&loader, |l| l.finish()))
}

/// Closes a handle: drops the file or map and releases a raw vector.
/// Closing twice is harmless.
/// @noRd
#[extendr]
fn close_(x: Robj) -> Robj {
    to_r((|| {
        let Ok(ptr) = <&ExternalPtr<Handle>>::try_from(&x) else {
            return Ok(false.into());
        };
        let Ok(handle) = ptr.try_addr() else {
            return Ok(false.into());
        };
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

/// Header facts of an open source (see `info::info_robj()`).
/// @noRd
#[extendr]
fn handle_info_(x: Robj) -> Robj {
    to_r(with_open(&x, |open| info_robj(&open.header, open.len())))
}

/// The header length N in the first eight bytes of a stream, checked
/// against the format's limit.
/// @noRd
#[extendr]
fn header_len_(prefix: Robj) -> Robj {
    to_r((|| {
        let n = format::header_len(raw_bytes(&prefix)?, u64::MAX)?;
        Ok((n as f64).into())
    })())
}

/// Header facts from the first `8 + N` bytes of a stream whose data
/// section was not read; its length is taken to be what the tensors cover.
/// @noRd
#[extendr]
fn info_header_(prefix: Robj) -> Robj {
    to_r((|| {
        let bytes = raw_bytes(&prefix)?;
        let n = format::header_len(bytes, bytes.len() as u64)?;
        let header = format::parse_header_only(&bytes[N_LEN..N_LEN + n])?;
        check_strings(&header)?;
        let file_len = (N_LEN + n + header.data_len) as u64;
        info_robj(&header, file_len)
    })())
}

extendr_module! {
    mod sources;
    fn open_file_;
    fn handle_backend_;
    fn open_raw_;
    fn open_remote_;
    fn remote_plan_;
    fn remote_feed_;
    fn remote_finish_;
    fn close_;
    fn is_open_;
    fn handle_info_;
    fn header_len_;
    fn info_header_;
}
