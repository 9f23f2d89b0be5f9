//! Reading from open handles (R/open.R): whole tensors by name, reading
//! only their bytes.

use extendr_api::prelude::*;
use safetensors_core::error::{Error, Kind};

use std::cell::RefCell;

use crate::robj::{named_list, threads_from_r, to_r};
use crate::sources::{with_loader, with_open};
use crate::tensors::{self, Mode};

/// Reads the named tensors of an open handle in mode `"raw"` or
/// `c("array", int64, uint8)` on `threads` threads (0: the default):
/// `list(tensors, inexact, int_min, na, max_offset)`. Only those tensors'
/// bytes are read.
/// @noRd
#[extendr]
fn handle_read_(x: Robj, names: Robj, mode: Robj, threads: i32) -> Robj {
    to_r(with_open(&x, |open| {
        let mode = Mode::from_r(&mode)?;
        if names.as_str_iter().is_none() {
            return Err(Error::new(
                Kind::InvalidArgument,
                "`names` must be a character vector",
            ));
        }
        let which = open.select(&names)?;
        open.with_source(|src| {
            tensors::read_tensors(
                src,
                &open.header,
                &which,
                mode,
                threads_from_r(threads),
                false,
            )
        })
    }))
}

/// Starts reading whole tensors `names` of an open local handle in pieces
/// of at most `max` bytes (whole tensors, or rows of a larger one), so that
/// R can move a progress bar between them: allocates the tensors and plans
/// the pieces. Returns `list(loader, pieces)`, the pieces' lengths in
/// bytes, which `handle_read_piece_()` reads in turn and `remote_finish_()`
/// finishes.
/// @noRd
#[extendr]
fn handle_plan_(x: Robj, names: Robj, mode: Robj, max: f64) -> Robj {
    to_r(with_open(&x, |open| {
        let mode = Mode::from_r(&mode)?;
        if names.as_str_iter().is_none() || max.is_nan() || max < 1.0 {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: malformed read in pieces",
            ));
        }
        let (loader, plan) = open.start_loader(&names, mode, max)?;
        let pieces: Vec<f64> = plan
            .iter()
            .flat_map(|f| f.pieces.iter().map(|p| p.len as f64))
            .collect();
        let ptr: Robj = ExternalPtr::new(RefCell::new(loader)).into();
        Ok(named_list(&["loader", "pieces"], vec![ptr, pieces.into()]))
    }))
}

/// Reads piece `piece` (from 1) of the read `loader` started by
/// `handle_plan_()` from the handle's file or buffer, on `threads` threads.
/// @noRd
#[extendr]
fn handle_read_piece_(x: Robj, loader: Robj, piece: i32, threads: i32) -> Robj {
    to_r(with_open(&x, |open| {
        let Some(p) = usize::try_from(piece).ok().and_then(|p| p.checked_sub(1)) else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: no such piece",
            ));
        };
        with_loader(&loader, |l| {
            open.with_source(|src| l.read_piece(p, src, threads_from_r(threads)))
        })?;
        Ok(().into())
    }))
}

extendr_module! {
    mod open;
    fn handle_read_;
    fn handle_plan_;
    fn handle_read_piece_;
}
