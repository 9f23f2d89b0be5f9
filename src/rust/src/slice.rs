//! Slices of one tensor of an open handle (R/slice.R), reading only the
//! bytes the selection needs; for a remote file, which bytes those are, so
//! that R fetches them first.

use extendr_api::prelude::*;
use safetensors_core::error::{Error, Kind, Result};
use safetensors_core::slice::{Plan, Sel};

use safetensors_core::format::TensorInfo;

use crate::robj::{named_list, to_r};
use crate::sources::{with_open, Open};
use crate::tensors::{self, Mode};

/// Reads a slice of tensor `name`: `specs[[j]]` selects along dimension
/// `j`, as `c(start, count, step)` (0-based) when `is_range[j]` is 1, else
/// as a vector of 0-based indices, in mode `"raw"` or `c("array", int64,
/// uint8)`. Returns `list(tensor, inexact, int_min, na)`. For a remote
/// file, `segments` holds the bytes `slice_fetches_()` named, as
/// `list(offsets, raw vectors)`; `NULL` otherwise.
/// @noRd
#[extendr]
fn handle_slice_(
    x: Robj,
    name: &str,
    specs: Robj,
    is_range: Robj,
    mode: Robj,
    segments: Robj,
) -> Robj {
    to_r(with_open(&x, |open| {
        let mode = Mode::from_r(&mode)?;
        let (info, plan) = slice_plan(open, name, &specs, &is_range)?;
        open.with_fetched(&segments, |src| {
            tensors::read_slice(src, &open.header, info, &plan, mode)
        })
    }))
}

/// The byte ranges of the file that reading a slice of tensor `name`
/// (`specs` and `is_range` as for `handle_slice_()`) touches: `list(offset,
/// length)`, absolute, sorted, nearby runs merged. R fetches them from a
/// remote file, one request each.
/// @noRd
#[extendr]
fn slice_fetches_(x: Robj, name: &str, specs: Robj, is_range: Robj) -> Robj {
    to_r(with_open(&x, |open| {
        let (info, plan) = slice_plan(open, name, &specs, &is_range)?;
        let start = open.header.data_start() + info.begin;
        let ranges = plan.fetch_ranges(info.dtype.bits(), name)?;
        let offsets: Vec<f64> = ranges.iter().map(|r| (start + r.0) as f64).collect();
        let lengths: Vec<f64> = ranges.iter().map(|r| r.1 as f64).collect();
        Ok(named_list(
            &["offset", "length"],
            vec![offsets.into(), lengths.into()],
        ))
    }))
}

fn slice_plan<'a>(
    open: &'a Open,
    name: &str,
    specs: &Robj,
    is_range: &Robj,
) -> Result<(&'a TensorInfo, Plan)> {
    let (Ok(specs), Some(is_range)) = (List::try_from(specs), is_range.as_integer_slice()) else {
        return Err(Error::new(
            Kind::InvalidArgument,
            "malformed slice description",
        ));
    };
    let info = &open.header.tensors[open.find(name)?];
    let plan = Plan::new(&info.shape, parse_sels(&specs, is_range, name)?, name)?;
    Ok((info, plan))
}

/// Parses the per-dimension selections R sends: `specs[[j]]` is
/// `c(start, count, step)` when `is_range[j]`, else the 0-based indices.
fn parse_sels(specs: &List, is_range: &[i32], name: &str) -> Result<Vec<Sel>> {
    if specs.len() != is_range.len() {
        return Err(Error::new(
            Kind::InvalidArgument,
            "malformed slice description",
        ));
    }
    let bad = || {
        Error::tensor(
            Kind::InvalidSlice,
            name,
            "slice indices must be whole, non-negative numbers",
        )
    };
    let to_usize = |v: f64| -> Result<usize> {
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(63) {
            Ok(v as usize)
        } else {
            Err(bad())
        }
    };
    let mut out = Vec::with_capacity(specs.len());
    for (j, spec) in specs.values().enumerate() {
        let vals: Vec<f64> = if let Some(v) = spec.as_real_slice() {
            v.to_vec()
        } else if let Some(v) = spec.as_integer_slice() {
            if v.contains(&i32::MIN) {
                return Err(bad());
            }
            v.iter().map(|&x| x as f64).collect()
        } else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "malformed slice description",
            ));
        };
        if is_range[j] != 0 {
            let [start, count, step] = vals[..] else {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    "malformed slice description",
                ));
            };
            out.push(Sel::Range {
                start: to_usize(start)?,
                count: to_usize(count)?,
                step: to_usize(step)?.max(1),
            });
        } else {
            out.push(Sel::List(
                vals.into_iter().map(to_usize).collect::<Result<Vec<_>>>()?,
            ));
        }
    }
    Ok(out)
}

extendr_module! {
    mod slice;
    fn handle_slice_;
    fn slice_fetches_;
}
