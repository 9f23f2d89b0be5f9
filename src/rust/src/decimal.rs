//! 64-bit integers as exact decimal strings (`int64 = "character"`): the
//! buffer the read engine fills with their bits, and the R strings made
//! from it on R's thread.

use extendr_ffi::{SET_STRING_ELT, SEXP};
use safetensors_core::dtype::Dtype;
use safetensors_core::error::{Error, Kind, Result};

use crate::robj::{build, check_interrupt_now, r_char};

/// A buffer of 64-bit integers the read engine fills (column-major), for
/// a tensor read as decimal strings, which are made from it afterwards on
/// R's thread.
pub(crate) struct Scratch {
    /// From `Box::into_raw`, so writes through it are allowed; freed on drop.
    pub(crate) ptr: *mut u64,
    pub(crate) len: usize,
}

impl Scratch {
    pub(crate) fn new(len: usize) -> Result<Scratch> {
        let mut v: Vec<u64> = Vec::new();
        v.try_reserve_exact(len).map_err(|_| {
            Error::new(
                Kind::Memory,
                format!("can't allocate a buffer of {len} 64-bit integers"),
            )
        })?;
        v.resize(len, 0);
        let ptr = Box::into_raw(v.into_boxed_slice()) as *mut u64;
        Ok(Scratch { ptr, len })
    }

    /// The values, once the engine is done writing them.
    pub(crate) fn values(&self) -> &[u64] {
        // SAFETY: `ptr` holds `len` initialised values for self's lifetime
        // (dangling and aligned when `len` is 0, as Box gives it).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` come from `Box::into_raw` of a boxed
        // slice, freed only here.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr, self.len,
            )))
        }
    }
}

/// The decimal digits of `v` (negated when `negative`), at the end of `buf`;
/// returns where they start.
fn decimal(v: u64, negative: bool, buf: &mut [u8; 21]) -> usize {
    let mut at = buf.len();
    let mut v = v;
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        buf[at] = b'-';
    }
    at
}

/// Strings made per `build` call (and between interrupt checks).
const STRINGS_PER_CALL: usize = 1 << 16;

/// Fills the character vector `x` with the decimal strings of `values`,
/// 64-bit integers of `dtype` (I64 or U64), in chunks, checking for Ctrl-C
/// in between.
pub(crate) fn fill_decimal(x: SEXP, values: &[u64], dtype: Dtype) -> Result<()> {
    let signed = dtype == Dtype::I64;
    let mut start = 0;
    while start < values.len() {
        let end = (start + STRINGS_PER_CALL).min(values.len());
        // SAFETY: inside build; `x` is a character vector of at least
        // `values.len()` elements, kept alive by the caller; each new
        // string is stored at once.
        build(|| unsafe {
            let mut buf = [0u8; 21];
            for (i, &v) in values[start..end].iter().enumerate() {
                let negative = signed && (v as i64) < 0;
                let magnitude = if signed { (v as i64).unsigned_abs() } else { v };
                let at = decimal(magnitude, negative, &mut buf);
                // SAFETY (from_utf8_unchecked): ASCII digits and a sign.
                let s = std::str::from_utf8_unchecked(&buf[at..]);
                SET_STRING_ELT(x, (start + i) as isize, r_char(s));
            }
            x
        })?;
        start = end;
        check_interrupt_now()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_are_exact_at_the_extremes() {
        let mut buf = [0u8; 21];
        let cases: [(u64, bool, &str); 6] = [
            (0, false, "0"),
            (7, true, "-7"),
            (u64::MAX, false, "18446744073709551615"),
            (i64::MIN.unsigned_abs(), true, "-9223372036854775808"),
            (i64::MAX as u64, false, "9223372036854775807"),
            (1 << 53 | 1, false, "9007199254740993"),
        ];
        for (v, negative, want) in cases {
            let at = decimal(v, negative, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[at..]).unwrap(), want);
        }
    }
}
