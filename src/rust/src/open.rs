//! Reading from open handles (R/open.R): whole tensors by name, reading
//! only their bytes.

use extendr_api::prelude::*;
use safetensors_core::error::{Error, Kind};

use crate::robj::{threads_from_r, to_r};
use crate::sources::with_open;
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

extendr_module! {
    mod open;
    fn handle_read_;
}
