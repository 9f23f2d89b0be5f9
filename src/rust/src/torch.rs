//! Filling memory that R torch owns, so that a tensor is read from a file
//! (or memory, or a connection's chunks) into its torch tensor in one copy,
//! with no intermediate R vector.
//!
//! R torch's exported API gives the address of a tensor's storage only as
//! text: `x$storage()$data_ptr()` prints the C++ `void*` (`"0x7f..."`).
//! R/torch.R allocates each tensor itself with `torch_empty()` (CPU,
//! contiguous, storage offset 0, exactly `numel * element_size` bytes),
//! checks those facts, keeps the tensor referenced for the whole call, and
//! passes that address and size here. It also verifies once per session
//! that the printed address is the data (`probe_address_()`), and falls back
//! to torch's own copy if it is not.

use extendr_api::prelude::*;
use extendr_ffi::SEXPTYPE;

use crate::dtype::Dtype;
use crate::error::{Error, Kind, Result};
use crate::load::raw_bytes;
use crate::open::{with_open, with_source};
use crate::robj::{self, alloc, to_r};

/// Bytes copied between two interrupt checks.
const CHUNK: usize = 64 << 20;

/// Parses an address as C++ prints a `void*`: `0x` and hex digits. The
/// null pointer (printed `0` or `0x0`) is an error.
fn parse_address(s: &str) -> Result<usize> {
    let bad = || Error::new(Kind::InvalidArgument, format!("`{s}` is not a data address"));
    let hex = s.strip_prefix("0x").ok_or_else(bad)?;
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    match usize::from_str_radix(hex, 16) {
        Ok(0) | Err(_) => Err(bad()),
        Ok(a) => Ok(a),
    }
}

/// The `n` bytes at `addr`, writable.
///
/// # Safety
/// `addr` must be the start of an allocation of at least `n` writable bytes
/// that outlives `'a` and that nothing else reads or writes meanwhile.
unsafe fn dest<'a>(addr: usize, n: usize) -> &'a mut [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, n) }
}

/// Rewrites bytes other than 0 and 1 as 1, so every BOOL element is a valid
/// C++ `bool` (a file may hold any non-zero byte for true).
fn normalize_bool(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        *b = (*b != 0) as u8;
    }
}

/// Converts a size that R passed as a double.
fn size_arg(x: f64, what: &str) -> Result<usize> {
    if x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(53) {
        Ok(x as usize)
    } else {
        Err(Error::new(Kind::InvalidArgument, format!("`{what}` must be a whole number of bytes")))
    }
}

/// Whether the bytes at `addr` are `expected`: R/torch.R's check, once per
/// session, that `Storage$data_ptr()` prints the address of a tensor's data
/// (it reads a torch tensor it made from `expected`). Nothing is written.
/// @noRd
#[extendr]
fn probe_address_(addr: &str, expected: Robj) -> bool {
    let (Ok(a), Ok(want)) = (parse_address(addr), raw_bytes(&expected)) else {
        return false;
    };
    if want.is_empty() {
        return false;
    }
    // SAFETY: R/torch.R passes the storage address of a live torch tensor
    // it created from `expected`, so at least `want.len()` bytes are
    // readable there; they are only read.
    let got = unsafe { std::slice::from_raw_parts(a as *const u8, want.len()) };
    got == want
}

/// Reads tensor `name` of an open handle into the `nbytes` bytes at `addr`
/// (a torch tensor's data, see the module notes). BOOL bytes are normalised
/// to 0 and 1. Returns `NULL`.
/// @noRd
#[extendr]
fn handle_read_into_(x: Robj, name: &str, addr: &str, nbytes: f64) -> Robj {
    to_r(with_open(&x, |open| {
        let i = open.find(name)?;
        let info = &open.header.tensors[i];
        let n = size_arg(nbytes, "nbytes")?;
        if n != info.nbytes() {
            return Err(Error::tensor(
                Kind::InvalidArgument,
                name,
                format!("tensor `{name}` has {} bytes, not {n}", info.nbytes()),
            ));
        }
        if n == 0 {
            return Ok(().into());
        }
        let a = parse_address(addr)?;
        // SAFETY: R/torch.R passes the data address of a CPU, contiguous
        // tensor it allocated with torch_empty() with exactly `n` bytes,
        // referenced by R for the whole call and not yet shared.
        let out = unsafe { dest(a, n) };
        let off = open.header.data_start() + info.begin;
        with_source(&open.backing, |src| {
            let mut done = 0;
            while done < n {
                let k = (n - done).min(CHUNK);
                // As the loader reads: a map's pages mapped at once, and let
                // go of once copied.
                match src.view_whole(off + done, k)? {
                    Some(bytes) => {
                        out[done..done + k].copy_from_slice(bytes);
                        src.done_with(off + done, k);
                    }
                    None => src.read_at(off + done, &mut out[done..done + k])?,
                }
                done += k;
                robj::check_interrupt_now()?;
            }
            Ok(())
        })?;
        if info.dtype == Dtype::Bool {
            normalize_bool(out);
        }
        Ok(().into())
    }))
}

/// Copies the raw vector `chunk` to bytes `[offset, offset + length(chunk))`
/// of the `total` bytes at `addr` (a torch tensor's data, filled chunk by
/// chunk from a connection). With `is_bool`, bytes are normalised to 0 and 1.
/// Returns `NULL`.
/// @noRd
#[extendr]
fn copy_into_(chunk: Robj, addr: &str, offset: f64, total: f64, is_bool: bool) -> Robj {
    to_r((|| {
        let bytes = raw_bytes(&chunk)?;
        let (offset, total) = (size_arg(offset, "offset")?, size_arg(total, "total")?);
        let end = offset.checked_add(bytes.len()).filter(|&e| e <= total);
        let Some(end) = end else {
            return Err(Error::new(Kind::InvalidArgument, "the chunk runs past the end of the tensor"));
        };
        if bytes.is_empty() {
            return Ok(().into());
        }
        let a = parse_address(addr)?;
        // SAFETY: as in handle_read_into_: `total` bytes at `a` belong to a
        // fresh torch tensor R keeps alive for the call; [offset, end) is
        // inside them.
        let out = &mut unsafe { dest(a, total) }[offset..end];
        out.copy_from_slice(bytes);
        if is_bool {
            normalize_bool(out);
        }
        Ok(().into())
    })())
}

/// A raw vector of `n` bytes, not zeroed (the caller fills all of it).
/// @noRd
#[extendr]
fn alloc_raw_(n: f64) -> Robj {
    to_r((|| alloc(SEXPTYPE::RAWSXP, size_arg(n, "n")?))())
}

extendr_module! {
    mod torch;
    fn probe_address_;
    fn handle_read_into_;
    fn copy_into_;
    fn alloc_raw_;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_cpp_prints_them() {
        assert_eq!(parse_address("0x7f00dead0010").unwrap(), 0x7f00_dead_0010);
        assert_eq!(parse_address("0xABCdef").unwrap(), 0xabcdef);
        for bad in ["0", "0x0", "0x", "7f00", "0x12g4", "0x-1", " 0x10", "0x10 ", "0x11111111111111111", ""] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bool_bytes_become_zero_or_one() {
        let mut b = vec![0u8, 1, 2, 255, 0, 128];
        normalize_bool(&mut b);
        assert_eq!(b, vec![0, 1, 1, 1, 0, 1]);
    }

    #[test]
    fn sizes_must_be_whole_and_in_range() {
        assert_eq!(size_arg(0.0, "n").unwrap(), 0);
        assert_eq!(size_arg(3e9, "n").unwrap(), 3_000_000_000);
        for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY, 2f64.powi(60)] {
            assert!(size_arg(bad, "n").is_err());
        }
    }
}
