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
use safetensors_core::convert::Out;
use safetensors_core::error::{Error, Kind};
use safetensors_core::io::{FileSource, Source};
use safetensors_core::read::{self, Task};

use crate::robj::{check_interrupt_now, slice_of, to_r, vec_data};
use crate::sources::{with_open, Backing};

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
        let off = open.header.data_start() + info.begin;
        let n = info.nbytes();
        if n == 0 {
            return Ok(().into());
        }
        let (addr, keep): (*const u8, Robj) = match &open.backing {
            Backing::File(file) => match file.view_whole(off, n)? {
                Some(bytes) => (bytes.as_ptr(), ExternalPtr::new(MapOwner(Arc::clone(file))).into()),
                None => return Ok(().into()),
            },
            Backing::Remote { .. } => return Ok(().into()),
            Backing::Memory { ptr, .. } => {
                // The handle's protected slot holds the raw vector.
                // SAFETY: `x` is the handle's external pointer (with_open
                // checked it); its protected slot is the raw vector.
                let raw = unsafe { Robj::from_sexp(extendr_ffi::R_ExternalPtrProtected(x.get())) };
                // SAFETY: the tensor lies inside the vector (the header was
                // validated against its length).
                (unsafe { ptr.add(off) }, raw)
            }
        };
        // SAFETY: torch only reads through the view (R/torch.R copies from
        // it), for as long as R keeps the external pointer, whose protected
        // slot keeps the map (an Arc of it) or the raw vector alive; no
        // finalizer is needed, as the pointer owns nothing itself.
        Ok(unsafe { Robj::from_sexp(R_MakeExternalPtr(addr as *mut std::os::raw::c_void, R_NilValue, keep.get())) })
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

/// Fills the raw vector `out` (a staging buffer R/torch.R allocated, never
/// seen by users) with bytes `[from, from + length(out))` of tensor `name`
/// of an open handle, through the read engine. Returns `NULL`.
/// @noRd
#[extendr]
fn tensor_bytes_(x: Robj, name: &str, from: f64, out: Robj) -> Robj {
    to_r(with_open(&x, |open| {
        let info = &open.header.tensors[open.find(name)?];
        // SAFETY: `out` is a raw vector (checked) that R keeps alive for the
        // call; only this function writes it meanwhile.
        let n = unsafe { slice_of::<u8>(out.get(), extendr_ffi::SEXPTYPE::RAWSXP) }
            .map(<[u8]>::len)
            .ok_or_else(|| Error::new(Kind::InvalidArgument, "the buffer must be a raw vector"))?;
        let from = (from >= 0.0 && from.fract() == 0.0).then_some(from as usize);
        let Some(from) = from.filter(|&f| f.checked_add(n).is_some_and(|e| e <= info.nbytes())) else {
            return Err(Error::tensor(Kind::InvalidArgument, name, "internal error: the piece runs past the tensor"));
        };
        // SAFETY: as above; `n` bytes of the vector's data.
        let dest = unsafe { Out::from_raw(vec_data(out.get(), extendr_ffi::SEXPTYPE::RAWSXP), n) };
        let task = Task::bytes(open.header.data_start() + info.begin + from, dest);
        open.with_source(|src| read::read_tasks(src, std::slice::from_ref(&task), 1, &mut check_interrupt_now))?;
        Ok(().into())
    }))
}

extendr_module! {
    mod torch;
    fn tensor_view_;
    fn tensor_view_done_;
    fn tensor_bytes_;
}
