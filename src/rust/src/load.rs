//! Whole loads (R/load.R): a file or raw vector opened, its header
//! validated and the tensors asked for read, in one call.

use extendr_api::prelude::*;
use safetensors_core::error::Result;

use crate::robj::{raw_bytes, threads_from_r, to_r};
use crate::sources::{Backing, Open};
use crate::tensors::{self, Mode};

fn load(open: Result<Open>, names: &Robj, mode: &Robj, threads: i32) -> Result<Robj> {
    let open = open?;
    let mode = Mode::from_r(mode)?;
    let which = open.select(names)?;
    open.with_source(|src| {
        tensors::read_tensors(
            src,
            &open.header,
            &which,
            mode,
            threads_from_r(threads),
            true,
        )
    })
}

/// Reads tensors `names` (`NULL`: all) from the file at `path` (from byte
/// `base` on: 0 for a whole file) in mode `"raw"` or `c("array", int64,
/// uint8)` with `backend` (`"auto"`, `"mmap"` or `"read"`) on `threads`
/// threads (0: the default): `list(tensors, header, inexact, int_min, na,
/// max_offset)`.
/// @noRd
#[extendr]
fn load_file_(path: &str, base: f64, names: Robj, mode: Robj, backend: &str, threads: i32) -> Robj {
    to_r(load(
        Open::file(path, backend, base),
        &names,
        &mode,
        threads,
    ))
}

/// [`load_file_`] for a raw vector holding a whole file.
/// @noRd
#[extendr]
fn load_raw_(buf: Robj, names: Robj, mode: Robj, threads: i32) -> Robj {
    let open = raw_bytes(&buf).and_then(|b| {
        Open::new(Backing::Memory {
            ptr: b.as_ptr(),
            len: b.len(),
        })
    });
    // `buf` outlives the call, which is as long as the backing is used.
    to_r(load(open, &names, &mode, threads))
}

extendr_module! {
    mod load;
    fn load_file_;
    fn load_raw_;
}
