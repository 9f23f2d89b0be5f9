//! Conversions (R/convert.R): rows of a tensor of an open local file (or
//! raw vector) copied into a block writer (src/rust/src/writer.rs) without
//! passing through R, so that no R vector is made per block.

use extendr_api::prelude::*;
use safetensors_core::error::{Error, Kind};
use safetensors_core::format::N_LEN;
use safetensors_core::write::Input;

use crate::robj::{check_interrupt_now, to_r};
use crate::sources::with_open;
use crate::writer::{count, with_placed};

/// Copies rows `[r0, r0 + n)` of tensor `name` of the open handle part
/// `part` (a local file or a raw vector) to tensor `i` (1-based) of the
/// block writer file `w`, converting its dtype to the writer's. The rows
/// are converted straight from the memory map or raw vector, else read
/// into the writer's scratch buffer, reused for every block; from a map, their pages are let go of afterwards and
/// the file is checked to be unchanged, so a file truncated meanwhile is an
/// error rather than zeros in the output. Returns the bytes read.
/// @noRd
#[extendr]
fn convert_rows_(part: Robj, name: &str, w: Robj, i: f64, r0: f64, n: f64) -> Robj {
    to_r((|| {
        let (r0, n) = (count(r0)?, count(n)?);
        let i = count(i)?
            .checked_sub(1)
            .ok_or_else(|| Error::new(Kind::InvalidArgument, "internal error: no such tensor"))?;
        with_open(&part, |open| {
            let t = &open.header.tensors[open.find(name)?];
            let rows = t.shape.first().copied().unwrap_or(1);
            let per_row: usize = t.shape.iter().skip(1).product();
            let at = |r: usize| r.checked_mul(per_row).and_then(|k| t.dtype.bytes_for(k));
            let end = r0.checked_add(n).filter(|&e| e <= rows);
            let (Some(end), Some(a)) = (end, at(r0)) else {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    "internal error: rows out of range",
                ));
            };
            let Some(b) = at(end) else {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    "internal error: rows not on byte boundaries",
                ));
            };
            let (start, len, from) = (N_LEN + open.header.header_len + t.begin + a, b - a, t.dtype);
            open.with_source(|src| {
                // From the map itself: no copy of the rows, and their pages
                // are let go of below, so memory stays one block. Else read
                // into the writer's scratch buffer, one for every block.
                let view = src.view_whole(start, len)?;
                with_placed(&w, false, |file| {
                    let Some(file) = file.as_mut() else {
                        return Err(Error::new(Kind::Closed, "the writer is closed"));
                    };
                    let mut scratch = Vec::new();
                    let bytes = match view {
                        Some(view) => view,
                        None => {
                            scratch = file.take_scratch();
                            if scratch.len() < len {
                                scratch.resize(len, 0);
                            }
                            src.read_at(start, &mut scratch[..len])?;
                            &scratch[..len]
                        }
                    };
                    let input = Input::Bytes(bytes, from);
                    file.write_block(i, r0, n, input, &mut check_interrupt_now)?;
                    if view.is_none() {
                        file.put_scratch(scratch);
                    }
                    Ok(())
                })?;
                src.done_with(start, len);
                src.verify()?;
                Ok(Robj::from(len as f64))
            })
        })
    })())
}

extendr_module! {
    mod convert;
    fn convert_rows_;
}
