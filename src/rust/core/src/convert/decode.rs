//! Decoding: a tensor's row-major bytes into R's column-major vectors,
//! fused with the dtype conversion, and the destinations threads share.

use super::index::{for_each_index, is_trivial_layout, n_rows, row_len, Middle};
use super::shared::SharedSlice;
use super::transpose::{arr, transpose};
use crate::dtype::Dtype;
use crate::error::{Error, Kind, Result};
use crate::floats::{self, decode_bf16, decode_e8m0, decode_f16, widen_f32};

/// The R vector type a dtype is read into by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RType {
    /// `double`
    Real,
    /// `integer`
    Integer,
    /// `logical`
    Logical,
    /// `complex`
    Complex,
}

/// The default R type for `dtype`: floats and the integers R's `integer`
/// can't hold become double, BOOL logical, C64 complex.
pub fn r_type(dtype: Dtype) -> RType {
    match dtype {
        Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::U8 | Dtype::U16 => RType::Integer,
        Dtype::Bool => RType::Logical,
        Dtype::C64 => RType::Complex,
        _ => RType::Real,
    }
}

/// An R vector's data (column-major) by element type, borrowed exclusively:
/// where [`decode`] puts the values of one thread's rows.
pub enum VectorMut<'a> {
    /// `double`
    Real(&'a mut [f64]),
    /// `integer`
    Integer(&'a mut [i32]),
    /// `logical` (R stores these as int)
    Logical(&'a mut [i32]),
    /// `complex` as (re, im) pairs
    Complex(&'a mut [[f64; 2]]),
    /// `raw`: U8 values as they are
    Byte(&'a mut [u8]),
    /// bit64's `integer64` (see [`SharedVector::Int64`])
    Int64(&'a mut [i64]),
    /// 64-bit integers' bits (see [`SharedVector::Bits64`])
    Bits64(&'a mut [u64]),
}

/// An R vector's data by element type, as [`SharedSlice`]s: the decode
/// destination that threads share (see [`decode_rows`]).
#[derive(Clone, Copy)]
pub enum SharedVector<'a> {
    /// `double`
    Real(SharedSlice<'a, f64>),
    /// `integer`
    Integer(SharedSlice<'a, i32>),
    /// `logical`
    Logical(SharedSlice<'a, i32>),
    /// `complex` as (re, im) pairs
    Complex(SharedSlice<'a, [f64; 2]>),
    /// `raw`: U8 values as they are, one byte each.
    Byte(SharedSlice<'a, u8>),
    /// bit64's `integer64` (a double vector holding int64 bits): I64
    /// values as they are, U64 values above `i64::MAX` as its `NA`
    /// (`i64::MIN`), counted in [`DecodeStats::na`] with the I64 values
    /// equal to `i64::MIN`.
    Int64(SharedSlice<'a, i64>),
    /// The bits of I64 (two's complement) and U64 values, for the caller
    /// to turn into something else (decimal strings).
    Bits64(SharedSlice<'a, u64>),
}

impl<'a> SharedVector<'a> {
    /// The first element's address and the size in bytes.
    pub fn memory(&self) -> (*mut u8, usize) {
        match self {
            SharedVector::Real(o) => o.memory(),
            SharedVector::Integer(o) | SharedVector::Logical(o) => o.memory(),
            SharedVector::Complex(o) => o.memory(),
            SharedVector::Byte(o) => o.memory(),
            SharedVector::Int64(o) => o.memory(),
            SharedVector::Bits64(o) => o.memory(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            SharedVector::Real(o) => o.len(),
            SharedVector::Integer(o) | SharedVector::Logical(o) => o.len(),
            SharedVector::Complex(o) => o.len(),
            SharedVector::Byte(o) => o.len(),
            SharedVector::Int64(o) => o.len(),
            SharedVector::Bits64(o) => o.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> From<VectorMut<'a>> for SharedVector<'a> {
    fn from(d: VectorMut<'a>) -> Self {
        match d {
            VectorMut::Real(x) => SharedVector::Real(SharedSlice::new(x)),
            VectorMut::Integer(x) => SharedVector::Integer(SharedSlice::new(x)),
            VectorMut::Logical(x) => SharedVector::Logical(SharedSlice::new(x)),
            VectorMut::Complex(x) => SharedVector::Complex(SharedSlice::new(x)),
            VectorMut::Byte(x) => SharedVector::Byte(SharedSlice::new(x)),
            VectorMut::Int64(x) => SharedVector::Int64(SharedSlice::new(x)),
            VectorMut::Bits64(x) => SharedVector::Bits64(SharedSlice::new(x)),
        }
    }
}

/// What decoding noticed about the values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// 64-bit integers whose magnitude exceeds 2^53 (not exact as double).
    pub inexact: usize,
    /// I32 values equal to R's `NA_integer_` bit pattern.
    pub int_min: usize,
    /// 64-bit integers read as bit64's `integer64` that are its `NA`: U64
    /// values above `i64::MAX` (which became `NA`) and I64 values equal to
    /// `i64::MIN` (whose bits are `NA`).
    pub na: usize,
}

impl DecodeStats {
    /// The counts of `self` and `other` added.
    pub fn merge(self, other: DecodeStats) -> DecodeStats {
        DecodeStats {
            inexact: self.inexact + other.inexact,
            int_min: self.int_min + other.int_min,
            na: self.na + other.na,
        }
    }
}

/// Bits `[i*bits, (i+1)*bits)` of `src`, least significant bit first.
#[inline(always)]
pub(super) fn packed(src: &[u8], i: usize, bits: usize) -> u32 {
    let pos = i * bits;
    let byte = pos / 8;
    let lo = src[byte] as u32;
    let hi = src.get(byte + 1).copied().unwrap_or(0) as u32;
    ((lo | (hi << 8)) >> (pos % 8)) & ((1 << bits) - 1)
}

const EXACT_LIMIT: u64 = 1 << 53;

/// Decodes outer rows `[row0, row1)` of a tensor from `src` (the bytes of
/// exactly those rows) into `dst` (the whole tensor's R vector).
///
/// `dst`'s type must be one the dtype decodes into ([`decodes_into`]): the
/// one [`r_type`] gives, `Real` for any numeric dtype, `Byte` for U8,
/// `Int64` and `Bits64` for I64 and U64; `src` must hold the rows and `dst` the whole tensor. Arguments
/// that break these rules are an error (a caller's bug), and `dst` is then
/// left as it was: never partly filled.
pub fn decode(
    dtype: Dtype,
    src: &[u8],
    shape: &[usize],
    row0: usize,
    row1: usize,
    dst: VectorMut<'_>,
) -> Result<DecodeStats> {
    // SAFETY: `dst` is borrowed exclusively for this call.
    unsafe { decode_rows(dtype, src, shape, row0, row1, SharedVector::from(dst)) }
}

/// [`decode`] into a target that other threads may be filling too.
///
/// # Safety
/// While this runs, nothing else may access the target's elements that
/// belong to outer rows `[row0, row1)`; other threads may decode other rows
/// of the same target.
pub unsafe fn decode_rows(
    dtype: Dtype,
    src: &[u8],
    shape: &[usize],
    row0: usize,
    row1: usize,
    dst: SharedVector<'_>,
) -> Result<DecodeStats> {
    let mut stats = DecodeStats::default();
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let need = (row1.saturating_sub(row0))
        .checked_mul(row_len(shape))
        .and_then(|n| dtype.bytes_for(n));
    let (Some(numel), Some(need)) = (numel, need) else {
        return Err(mismatch("the shape's size overflows"));
    };
    if numel == 0 && row0 <= row1 && dst.is_empty() {
        return Ok(stats);
    }
    if row0 > row1 || row1 > n_rows(shape) || src.len() < need || dst.len() != numel {
        return Err(mismatch(
            "the rows, bytes or destination don't match the shape",
        ));
    }
    if !decodes_into(dtype, &dst) {
        return Err(mismatch("the destination's type doesn't fit the dtype"));
    }
    // From here on every row-major index within the block and every
    // column-major index of rows [row0, row1) is in bounds (see `kernel`).
    macro_rules! k {
        ($w:literal, $out:expr, |$b:ident| $e:expr) => {
            // SAFETY: arguments validated above; row-disjointness is this
            // function's contract.
            unsafe { kernel::<$w, _>(src, shape, row0, row1, $out, |$b: [u8; $w]| $e) }
        };
    }
    match dst {
        SharedVector::Real(out) => match dtype {
            Dtype::F64 => k!(8, out, |b| f64::from_le_bytes(b)),
            Dtype::F32 => k!(4, out, |b| widen_f32(u32::from_le_bytes(b))),
            Dtype::F16 => k!(2, out, |b| decode_f16(u16::from_le_bytes(b))),
            Dtype::BF16 => k!(2, out, |b| decode_bf16(u16::from_le_bytes(b))),
            Dtype::F8E8M0 => k!(1, out, |b| decode_e8m0(b[0])),
            Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E4M3Fnuz | Dtype::F8E5M2Fnuz => {
                let Some(c) = floats::codec(dtype) else {
                    return Err(mismatch("no codec for the dtype"));
                };
                k!(1, out, |b| c.decode(b[0] as u32))
            }
            Dtype::F6E2M3 | Dtype::F6E3M2 | Dtype::F4 => {
                let Some(c) = floats::codec(dtype) else {
                    return Err(mismatch("no codec for the dtype"));
                };
                let bits = dtype.bits();
                // Packed: element by element (rare, and blocks start on
                // byte boundaries).
                for_each_index(shape, row0, row1, |rm, cm| {
                    // SAFETY: cm is in rows [row0, row1), validated above.
                    unsafe { out.set(cm, c.decode(packed(src, rm, bits))) }
                });
            }
            Dtype::I64 => {
                let mut inexact = 0;
                k!(8, out, |b| {
                    let v = i64::from_le_bytes(b);
                    inexact += (v.unsigned_abs() > EXACT_LIMIT) as usize;
                    v as f64
                });
                stats.inexact = inexact;
            }
            Dtype::U64 => {
                let mut inexact = 0;
                k!(8, out, |b| {
                    let v = u64::from_le_bytes(b);
                    inexact += (v > EXACT_LIMIT) as usize;
                    v as f64
                });
                stats.inexact = inexact;
            }
            Dtype::U32 => k!(4, out, |b| u32::from_le_bytes(b) as f64),
            Dtype::I32 => k!(4, out, |b| i32::from_le_bytes(b) as f64),
            Dtype::I16 => k!(2, out, |b| i16::from_le_bytes(b) as f64),
            Dtype::U16 => k!(2, out, |b| u16::from_le_bytes(b) as f64),
            Dtype::I8 => k!(1, out, |b| b[0] as i8 as f64),
            Dtype::U8 => k!(1, out, |b| b[0] as f64),
            Dtype::Bool => k!(1, out, |b| (b[0] != 0) as i32 as f64),
            // C64 is always read as complex (decodes_into).
            Dtype::C64 => return Err(mismatch("C64 is read as complex")),
        },
        SharedVector::Integer(out) => match dtype {
            Dtype::I32 => {
                k!(4, out, |b| i32::from_le_bytes(b));
                stats.int_min = count_int_min(src, need);
            }
            Dtype::I16 => k!(2, out, |b| i16::from_le_bytes(b) as i32),
            Dtype::U16 => k!(2, out, |b| u16::from_le_bytes(b) as i32),
            Dtype::I8 => k!(1, out, |b| b[0] as i8 as i32),
            Dtype::U8 => k!(1, out, |b| b[0] as i32),
            Dtype::Bool => k!(1, out, |b| (b[0] != 0) as i32),
            _ => return Err(mismatch("the dtype isn't read as integer")),
        },
        SharedVector::Logical(out) => k!(1, out, |b| (b[0] != 0) as i32),
        // U8 only (decodes_into).
        SharedVector::Byte(out) => k!(1, out, |b| b[0]),
        SharedVector::Int64(out) => {
            let mut na = 0;
            match dtype {
                Dtype::I64 => k!(8, out, |b| {
                    let v = i64::from_le_bytes(b);
                    na += (v == i64::MIN) as usize;
                    v
                }),
                Dtype::U64 => k!(8, out, |b| {
                    let v = u64::from_le_bytes(b);
                    match i64::try_from(v) {
                        Ok(v) => v,
                        Err(_) => {
                            na += 1;
                            i64::MIN
                        }
                    }
                }),
                _ => return Err(mismatch("the dtype isn't read as integer64")),
            }
            stats.na = na;
        }
        // I64 and U64 only (decodes_into).
        SharedVector::Bits64(out) => k!(8, out, |b| u64::from_le_bytes(b)),
        SharedVector::Complex(out) => {
            k!(8, out, |b| {
                let re = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let im = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                [widen_f32(re), widen_f32(im)]
            })
        }
    }
    Ok(stats)
}

/// Whether [`decode_rows`] can fill `dst` from `dtype`: double from every
/// dtype but C64, integer from the dtypes [`r_type`] reads as integer and
/// BOOL, logical from BOOL, complex from C64, raw from U8, integer64 and
/// 64-bit words from I64 and U64.
pub fn decodes_into(dtype: Dtype, dst: &SharedVector<'_>) -> bool {
    match dst {
        SharedVector::Real(_) => dtype != Dtype::C64,
        SharedVector::Integer(_) => r_type(dtype) == RType::Integer || dtype == Dtype::Bool,
        SharedVector::Logical(_) => dtype == Dtype::Bool,
        SharedVector::Complex(_) => dtype == Dtype::C64,
        SharedVector::Byte(_) => dtype == Dtype::U8,
        SharedVector::Int64(_) | SharedVector::Bits64(_) => {
            matches!(dtype, Dtype::I64 | Dtype::U64)
        }
    }
}

/// The error for arguments that don't fit together: a caller's bug, never
/// the file's.
fn mismatch(what: &str) -> Error {
    Error::new(
        Kind::InvalidArgument,
        format!("internal error in the conversion kernels: {what}"),
    )
}

/// Number of little-endian I32 values equal to `i32::MIN` in `src[..n]`.
fn count_int_min(src: &[u8], n: usize) -> usize {
    src[..n]
        .chunks_exact(4)
        .filter(|c| arr::<4>(c) == i32::MIN.to_le_bytes())
        .count()
}

/// Number of little-endian I32 values equal to `i32::MIN` (R's
/// `NA_integer_`) in `src`, a whole number of I32 values.
pub fn count_i32_min(src: &[u8]) -> usize {
    count_int_min(src, src.len() / 4 * 4)
}

/// The decoding kernel: converts each `W`-byte element of rows
/// `[row0, row1)` with `conv` and stores it at its column-major position.
///
/// # Safety
/// `src` holds at least the rows' `W`-byte elements, `out` has exactly the
/// tensor's element count, `row0 <= row1 <= n_rows(shape)`, and nothing else
/// accesses `out`'s elements of these rows meanwhile.
#[inline(always)]
unsafe fn kernel<const W: usize, T: Copy + Default>(
    src: &[u8],
    shape: &[usize],
    row0: usize,
    row1: usize,
    out: SharedSlice<'_, T>,
    mut conv: impl FnMut([u8; W]) -> T,
) {
    let rl = row_len(shape);
    let n = shape.len();
    if n <= 1 || is_trivial_layout(shape) {
        // Same order in the file and in R: rows [row0, row1) are the
        // contiguous elements [row0 * rl, row1 * rl).
        // SAFETY: in bounds by the contract; these are this call's rows.
        let dst = unsafe { out.part(row0 * rl, (row1 - row0) * rl) };
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(W)) {
            *d = conv(arr(s));
        }
        return;
    }
    let last = shape[n - 1];
    // Column-major stride of the last axis.
    let cm_last: usize = shape[..n - 1].iter().product();
    let mut mid = Middle::new(shape);
    loop {
        let (rm_base, cm_base) = (mid.rm, mid.cm);
        // One 2-D transpose: rows [row0, row1) x the last axis, at this
        // index of the middle axes.
        // SAFETY: forwarded contract; the element (i, j) of this slab is
        // row-major `(i - row0) * rl + rm_base + j` < (row1 - row0) * rl and
        // column-major `i + cm_base + j * cm_last` < numel, with `i` in this
        // call's rows.
        unsafe {
            transpose::<W, T, _>(
                src,
                rm_base,
                rl,
                row1 - row0,
                last,
                out,
                cm_base + row0,
                cm_last,
                &mut conv,
            )
        };
        if !mid.advance() {
            return;
        }
    }
}
