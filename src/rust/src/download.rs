//! Downloads (R/download.R): the file a download fills at offsets, and the
//! lock that keeps two processes from downloading the same file at once,
//! behind external pointers. R makes the requests (through the curl
//! package) and hands each piece of a response to `partial_write_()`.

use std::cell::RefCell;
use std::path::Path;

use extendr_api::prelude::*;
use safetensors_core::error::{Error, Kind, Result};
use safetensors_core::io::{FileLock, PartialFile};

use crate::robj::{raw_bytes, to_r};

/// What R's external pointer to a download's file owns: the file, or
/// nothing once committed or closed.
pub struct Partial {
    file: RefCell<Option<PartialFile>>,
}

fn closed() -> Error {
    Error::new(Kind::Closed, "the file being downloaded is closed")
}

/// Calls `f` with what the external pointer `p` holds.
fn with_state<T>(p: &Robj, f: impl FnOnce(&mut Option<PartialFile>) -> Result<T>) -> Result<T> {
    let Ok(ptr) = <&ExternalPtr<Partial>>::try_from(p) else {
        return Err(closed());
    };
    let Ok(handle) = ptr.try_addr() else {
        return Err(closed());
    };
    let Ok(mut state) = handle.file.try_borrow_mut() else {
        return Err(Error::new(
            Kind::InvalidArgument,
            "the file being downloaded is in use",
        ));
    };
    f(&mut state)
}

fn with_partial<T>(p: &Robj, f: impl FnOnce(&mut PartialFile) -> Result<T>) -> Result<T> {
    with_state(p, |state| match state.as_mut() {
        Some(file) => f(file),
        None => Err(closed()),
    })
}

fn take_partial(p: &Robj) -> Result<PartialFile> {
    with_state(p, |state| state.take().ok_or_else(closed))
}

/// A byte count or offset from R: a whole number from 0 to 2^53.
fn offset(x: f64) -> Result<u64> {
    if x >= 0.0 && x.fract() == 0.0 && x <= 9007199254740992.0 {
        Ok(x as u64)
    } else {
        Err(Error::new(
            Kind::InvalidArgument,
            "internal error: invalid offset",
        ))
    }
}

/// Opens (creating it if missing, keeping its bytes) the file a download
/// fills.
/// @noRd
#[extendr]
fn partial_open_(path: &str) -> Robj {
    to_r(PartialFile::open(Path::new(path)).map(|f| {
        ExternalPtr::new(Partial {
            file: RefCell::new(Some(f)),
        })
        .into()
    }))
}

/// Writes the raw vector `bytes` at `offset` (combined with the bytes that
/// precede it, see `PartialFile`). `NULL` on success.
/// @noRd
#[extendr]
fn partial_write_(p: Robj, offset_: f64, bytes: Robj) -> Robj {
    to_r((|| {
        let off = offset(offset_)?;
        let data = raw_bytes(&bytes)?;
        with_partial(&p, |f| f.write_at(off, data))?;
        Ok(().into())
    })())
}

/// Writes every pending byte; returns the file's length.
/// @noRd
#[extendr]
fn partial_flush_(p: Robj) -> Robj {
    to_r(with_partial(&p, |f| {
        f.flush()?;
        Ok((f.size()? as f64).into())
    }))
}

/// Cuts the file to `len` bytes, dropping pending bytes.
/// @noRd
#[extendr]
fn partial_truncate_(p: Robj, len: f64) -> Robj {
    to_r((|| {
        let len = offset(len)?;
        with_partial(&p, |f| f.truncate(len))?;
        Ok(().into())
    })())
}

/// Flushes the file, checks that it holds `len` bytes and renames it over
/// `target`.
/// @noRd
#[extendr]
fn partial_commit_(p: Robj, target: &str, len: f64) -> Robj {
    to_r((|| {
        let len = offset(len)?;
        take_partial(&p)?.commit(Path::new(target), len)?;
        Ok(().into())
    })())
}

/// Closes the file, keeping it and its bytes (a download to resume);
/// closing twice is harmless.
/// @noRd
#[extendr]
fn partial_close_(p: Robj) -> Robj {
    to_r(match take_partial(&p) {
        Ok(f) => f.close().map(|_| ().into()),
        Err(e) if e.kind == Kind::Closed => Ok(().into()),
        Err(e) => Err(e),
    })
}

/// What R's external pointer to a lock owns: the lock until released.
pub struct Lock {
    lock: RefCell<Option<FileLock>>,
}

/// Takes the lock on `path` without waiting: an external pointer holding
/// it, or `FALSE` when another process (or handle) holds it.
/// @noRd
#[extendr]
fn lock_try_(path: &str) -> Robj {
    to_r(FileLock::try_acquire(Path::new(path)).map(|l| {
        match l {
            Some(l) => ExternalPtr::new(Lock {
                lock: RefCell::new(Some(l)),
            })
            .into(),
            None => false.into(),
        }
    }))
}

/// Releases a lock (also released when the pointer is garbage-collected);
/// releasing twice is harmless.
/// @noRd
#[extendr]
fn lock_release_(l: Robj) -> Robj {
    if let Ok(ptr) = <&ExternalPtr<Lock>>::try_from(&l) {
        if let Ok(handle) = ptr.try_addr() {
            if let Ok(mut lock) = handle.lock.try_borrow_mut() {
                lock.take();
            }
        }
    }
    ().into()
}

extendr_module! {
    mod download;
    fn partial_open_;
    fn partial_write_;
    fn partial_flush_;
    fn partial_truncate_;
    fn partial_commit_;
    fn partial_close_;
    fn lock_try_;
    fn lock_release_;
}
