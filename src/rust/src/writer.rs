//! Block writers (R/writer.R): the core's `PlacedFile` behind an external
//! pointer, one per file of the checkpoint being written (a single file, or
//! each shard under its temporary name).
//!
//! R declares the tensors once, as the description R/write.R builds (only
//! `names`, `dtypes`, `shapes` and `metadata` are read), and opens the
//! file; the header is validated and written at once. `placed_write_()`
//! writes a block of rows of a tensor from an R vector or from bytes;
//! a failed block leaves the file as usable as before (its rows count as
//! not written). `placed_commit_()` renames the complete file into place;
//! dropping an uncommitted file (`placed_abort_()`, or the garbage
//! collector) leaves nothing behind.

use std::path::Path;

use extendr_api::prelude::*;
use safetensors_core::convert::Rounding;
use safetensors_core::dtype::Dtype;
use safetensors_core::error::{Error, Kind, Result};
use safetensors_core::placed::PlacedFile;
use safetensors_core::write::Input;

use crate::robj::{check_interrupt_now, raw_bytes, threads_from_r, to_r, Slot};
use crate::write::{int64_of, specs_of, src_of};

/// Runs `f` on the open file of `w`; with `take`, the file is taken out of
/// its external pointer first (a commit), so that it is closed whatever
/// `f` returns.
pub(crate) fn with_placed<T>(
    w: &Robj,
    take: bool,
    f: impl FnOnce(&mut Option<PlacedFile>) -> Result<T>,
) -> Result<T> {
    Slot::<PlacedFile>::with(w, take, "the writer is closed", f)
}

/// Opens the file at `path` (its temporary file; see `AtomicFile`) for the
/// tensors `spec` describes (R/write.R's description), writing its header;
/// blocks are encoded on `threads` threads (0: the default), and with
/// `sync` the file is flushed to disk before it is renamed into place.
/// @noRd
#[extendr]
fn placed_open_(spec: List, path: &str, sync: bool, threads: i32) -> Robj {
    to_r((|| {
        let (specs, metadata) = specs_of(&spec)?;
        let file = PlacedFile::create(
            Path::new(path),
            specs,
            metadata.as_deref(),
            threads_from_r(threads),
            sync,
        )?;
        Ok(Slot::new_ptr(file))
    })())
}

/// A count R passed as a double: a whole number from 0.
pub(crate) fn count(x: f64) -> Result<usize> {
    if x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(53) {
        Ok(x as usize)
    } else {
        Err(Error::new(
            Kind::InvalidArgument,
            "internal error: a count must be a whole number",
        ))
    }
}

/// Writes rows `[r0, r0 + n)` (0-based) of tensor `i` (1-based) from `x`:
/// `kind` `"values"` (an R vector, the block's values in column-major
/// order, rounded to nearest in the tensor's dtype), `"integer64"` (bit64's
/// integer64, likewise) or `"bytes"` (a raw vector of the block's bytes as
/// stored in dtype `from`, converted to the tensor's if it differs).
/// Returns the rows of tensor `i` written so far.
/// @noRd
#[extendr]
fn placed_write_(w: Robj, i: f64, r0: f64, n: f64, x: Robj, kind: &str, from: &str) -> Robj {
    to_r(with_placed(&w, false, |file| {
        let Some(file) = file.as_mut() else {
            return Err(Error::new(Kind::Closed, "the writer is closed"));
        };
        let i = count(i)?
            .checked_sub(1)
            .filter(|&i| i < file.specs().len())
            .ok_or_else(|| Error::new(Kind::InvalidArgument, "internal error: no such tensor"))?;
        let name = file.specs()[i].name.clone();
        let not = |what: &str| {
            Error::tensor(
                Kind::InvalidArgument,
                &name,
                format!("the block of tensor `{name}` is not {what}"),
            )
        };
        let input = match kind {
            "values" => Input::Values(
                src_of(&x).ok_or_else(|| not("a vector"))?,
                Rounding::Nearest,
            ),
            "integer64" => Input::Values(
                int64_of(&x).ok_or_else(|| not("an integer64 vector"))?,
                Rounding::Nearest,
            ),
            "bytes" => {
                let from = Dtype::from_name(from).ok_or_else(|| {
                    Error::tensor(
                        Kind::InvalidArgument,
                        &name,
                        format!("unknown dtype `{from}`"),
                    )
                })?;
                Input::Bytes(raw_bytes(&x).map_err(|_| not("a raw vector"))?, from)
            }
            _ => {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    format!("internal error: unknown input `{kind}`"),
                ))
            }
        };
        file.write_block(i, count(r0)?, count(n)?, input, &mut check_interrupt_now)?;
        Ok(Robj::from(file.rows_written(i) as f64))
    }))
}

/// The rows written of each tensor, in the order declared.
/// @noRd
#[extendr]
fn placed_rows_(w: Robj) -> Robj {
    to_r(with_placed(&w, false, |file| {
        let Some(file) = file.as_ref() else {
            return Err(Error::new(Kind::Closed, "the writer is closed"));
        };
        let rows: Vec<f64> = (0..file.specs().len())
            .map(|i| file.rows_written(i) as f64)
            .collect();
        Ok(Robj::from(rows))
    }))
}

/// Commits the file: checks that every row of every tensor was written,
/// flushes it (to disk with `sync`) and renames it into place. The writer
/// is closed afterwards, whatever the outcome.
/// @noRd
#[extendr]
fn placed_commit_(w: Robj) -> Robj {
    to_r(with_placed(&w, true, |file| match file.take() {
        Some(file) => {
            file.commit(&mut check_interrupt_now)?;
            Ok(().into())
        }
        None => Err(Error::new(Kind::Closed, "the writer is closed")),
    }))
}

/// Abandons the file, leaving nothing behind; harmless after a commit or
/// an earlier abort. Returns whether a file was abandoned.
/// @noRd
#[extendr]
fn placed_abort_(w: Robj) -> Robj {
    Slot::<PlacedFile>::drop_value(&w).into()
}

extendr_module! {
    mod writer;
    fn placed_open_;
    fn placed_write_;
    fn placed_rows_;
    fn placed_commit_;
    fn placed_abort_;
}
