//! The bytes R torch copies tensors from (R/torch.R). No address ever
//! travels as text and nothing here writes into torch's memory: torch
//! itself copies, with `copy_()`, from a view (`torch_tensor_from_buffer()`)
//! of either
//! * the tensor's bytes where the source holds them in memory (a memory
//!   map or a raw vector): an external pointer whose address is the
//!   tensor's first byte and which keeps that memory alive, or
//! * an R raw vector R allocated as a staging buffer, which
//!   `tensor_bytes_()` fills from the file with the read engine.
//!
//! Writes go the other way through a staging raw vector that torch fills
//! and `writer_put_()` (write.rs) writes.

use std::sync::Arc;

use extendr_api::prelude::*;
use extendr_ffi::{R_MakeExternalPtr, R_NilValue};
use safetensors_core::convert::SharedSlice;
use safetensors_core::error::{Error, Kind, Result as CoreResult};
use safetensors_core::io::{FileSource, Source};
use safetensors_core::read::{self, Task};

use crate::robj::{check_interrupt_now, slice_of, to_r, vec_data};
use crate::sources::{with_open, Backing, Open};

/// What keeps a memory map alive for the views of it.
struct MapOwner(#[allow(unused)] Arc<FileSource>);

/// A view of tensor `name` of an open handle for torch: an external
/// pointer whose address is the tensor's first byte, in the handle's map
/// or raw vector, which it keeps alive; `NULL` when the source holds no
/// bytes in memory (`backend = "read"`), or the tensor has none. A map's
/// pages are mapped at once, as the loader does.
/// @noRd
#[extendr]
fn tensor_view_(x: Robj, name: &str) -> Robj {
    to_r(with_open(&x, |open| {
        let info = &open.header.tensors[open.find(name)?];
        view_of(
            &x,
            open,
            open.header.data_start() + info.begin,
            info.nbytes(),
        )
    }))
}

/// Lets go of the mapped pages of tensor `name` once torch copied them
/// (see `Source::done_with`).
/// @noRd
#[extendr]
fn tensor_view_done_(x: Robj, name: &str) -> Robj {
    to_r(with_open(&x, |open| {
        let info = &open.header.tensors[open.find(name)?];
        open.with_source(|src| {
            src.done_with(open.header.data_start() + info.begin, info.nbytes());
            Ok(().into())
        })
    }))
}

/// [`tensor_view_`] of bytes `[from, from + n)` of tensor `name` only, a
/// piece that R/torch.R copies before it asks for the next one, so that a
/// map holds the pages of one piece at a time (with
/// [`tensor_view_piece_done_`]).
/// @noRd
#[extendr]
fn tensor_view_piece_(x: Robj, name: &str, from: f64, n: f64) -> Robj {
    to_r(with_open(&x, |open| {
        let (off, n) = piece_of(open, name, from, n)?;
        view_of(&x, open, off, n)
    }))
}

/// [`tensor_view_done_`] of bytes `[from, from + n)` of tensor `name`.
/// @noRd
#[extendr]
fn tensor_view_piece_done_(x: Robj, name: &str, from: f64, n: f64) -> Robj {
    to_r(with_open(&x, |open| {
        let (off, n) = piece_of(open, name, from, n)?;
        open.with_source(|src| {
            src.done_with(off, n);
            Ok(().into())
        })
    }))
}

/// The offset in the source of bytes `[from, from + n)` of tensor `name`,
/// and `n`, checked to lie inside the tensor.
fn piece_of(open: &Open, name: &str, from: f64, n: f64) -> CoreResult<(usize, usize)> {
    let info = &open.header.tensors[open.find(name)?];
    let whole =
        |v: f64| (v >= 0.0 && v.fract() == 0.0 && v <= usize::MAX as f64).then_some(v as usize);
    let (Some(from), Some(n)) = (whole(from), whole(n)) else {
        return Err(Error::tensor(
            Kind::InvalidArgument,
            name,
            "internal error: a piece must be whole bytes",
        ));
    };
    if !from.checked_add(n).is_some_and(|end| end <= info.nbytes()) {
        return Err(Error::tensor(
            Kind::InvalidArgument,
            name,
            "internal error: the piece runs past the tensor",
        ));
    }
    Ok((open.header.data_start() + info.begin + from, n))
}

/// A view of bytes `[off, off + n)` of the source of `open` (the handle
/// `x`), as [`tensor_view_`] describes it.
fn view_of(x: &Robj, open: &Open, off: usize, n: usize) -> CoreResult<Robj> {
    if n == 0 {
        return Ok(().into());
    }
    let (addr, keep): (*const u8, Robj) = match &open.backing {
        Backing::File(file) => match file.view_whole(off, n)? {
            Some(bytes) => (
                bytes.as_ptr(),
                ExternalPtr::new(MapOwner(Arc::clone(file))).into(),
            ),
            None => return Ok(().into()),
        },
        Backing::Remote { .. } => return Ok(().into()),
        Backing::Memory { ptr, .. } => {
            // The handle's protected slot holds the raw vector.
            // SAFETY: `x` is the handle's external pointer (with_open
            // checked it); its protected slot is the raw vector.
            let raw = unsafe { Robj::from_sexp(extendr_ffi::R_ExternalPtrProtected(x.get())) };
            // SAFETY: the bytes lie inside the vector (the header was
            // validated against its length, and pieces against the tensor).
            (unsafe { ptr.add(off) }, raw)
        }
    };
    // SAFETY: torch only reads through the view (R/torch.R copies from
    // it), for as long as R keeps the external pointer, whose protected
    // slot keeps the map (an Arc of it) or the raw vector alive; no
    // finalizer is needed, as the pointer owns nothing itself.
    Ok(unsafe {
        Robj::from_sexp(R_MakeExternalPtr(
            addr as *mut std::os::raw::c_void,
            R_NilValue,
            keep.get(),
        ))
    })
}

/// Fills the raw vector `out` (a staging buffer R/torch.R allocated, never
/// seen by users) with bytes `[from, from + length(out))` of tensor `name`
/// of an open handle, through the read engine. Returns `NULL`.
/// @noRd
#[extendr]
fn tensor_bytes_(x: Robj, name: &str, from: f64, out: Robj) -> Robj {
    to_r(with_open(&x, |open| {
        let n = raw_len(&out)?;
        read_piece(open, name, from, n, &out)
    }))
}

/// [`tensor_bytes_`] into the first `n` bytes of `out` only, so that one
/// staging buffer serves pieces of every size.
/// @noRd
#[extendr]
fn tensor_piece_bytes_(x: Robj, name: &str, from: f64, n: f64, out: Robj) -> Robj {
    to_r(with_open(&x, |open| {
        let len = raw_len(&out)?;
        let n = (n >= 0.0 && n.fract() == 0.0 && n <= len as f64).then_some(n as usize);
        let Some(n) = n else {
            return Err(Error::tensor(
                Kind::InvalidArgument,
                name,
                "internal error: the piece is larger than its buffer",
            ));
        };
        read_piece(open, name, from, n, &out)
    }))
}

/// The length of the raw vector `out`.
fn raw_len(out: &Robj) -> CoreResult<usize> {
    // SAFETY: `out` is checked to be a raw vector; R keeps it alive for the
    // call.
    unsafe { slice_of::<u8>(out.get(), extendr_ffi::SEXPTYPE::RAWSXP) }
        .map(<[u8]>::len)
        .ok_or_else(|| Error::new(Kind::InvalidArgument, "the buffer must be a raw vector"))
}

/// Reads bytes `[from, from + n)` of tensor `name` into the first `n`
/// bytes of the raw vector `out` (at least `n` long), through the read
/// engine.
fn read_piece(open: &Open, name: &str, from: f64, n: usize, out: &Robj) -> CoreResult<Robj> {
    let info = &open.header.tensors[open.find(name)?];
    let from = (from >= 0.0 && from.fract() == 0.0).then_some(from as usize);
    let Some(from) = from.filter(|&f| f.checked_add(n).is_some_and(|e| e <= info.nbytes())) else {
        return Err(Error::tensor(
            Kind::InvalidArgument,
            name,
            "internal error: the piece runs past the tensor",
        ));
    };
    // SAFETY: `out` is a raw vector of at least `n` bytes (checked by the
    // callers) that R keeps alive for the call; only this function writes
    // it meanwhile.
    let dest =
        unsafe { SharedSlice::from_raw(vec_data(out.get(), extendr_ffi::SEXPTYPE::RAWSXP), n) };
    let task = Task::bytes(open.header.data_start() + info.begin + from, dest);
    open.with_source(|src| {
        read::read_tasks(
            src,
            std::slice::from_ref(&task),
            1,
            &mut check_interrupt_now,
        )
    })?;
    Ok(().into())
}

extendr_module! {
    mod torch;
    fn tensor_view_;
    fn tensor_view_done_;
    fn tensor_view_piece_;
    fn tensor_view_piece_done_;
    fn tensor_bytes_;
    fn tensor_piece_bytes_;
}
