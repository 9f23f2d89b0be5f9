//! Conversion kernels between a tensor's row-major bytes and R's
//! column-major vectors, fused with the dtype conversion.
//!
//! A tensor of shape `(d0, ..., dn)` is stored row-major; R wants the same
//! `dim` in column-major order, so element `(i0, ..., in)` moves from
//! row-major position `rm` to column-major position `cm`. The kernels work
//! on a block of outer rows `[row0, row1)` of axis 0 at a time, so callers
//! can stream a tensor through a small buffer; they walk the first and last
//! axes in cache-sized tiles. No R types here: destinations and sources are
//! plain slices laid out as R lays out its vectors.

use std::marker::PhantomData;

use crate::dtype::Dtype;
use crate::error::{Error, Kind, Result};
use crate::floats::{self, decode_bf16, decode_e8m0, decode_f16, encode_e8m0, narrow_f32, widen_f32};

/// Tile edge for the blocked transposition.
const TILE: usize = 32;

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

/// Whether row-major and column-major orders coincide (at most one
/// dimension longer than 1).
pub fn is_trivial_layout(shape: &[usize]) -> bool {
    shape.iter().filter(|&&d| d > 1).count() <= 1
}

/// Number of elements in one outer row (the product of all but the first
/// dimension; 1 for scalars and vectors).
pub fn row_len(shape: &[usize]) -> usize {
    shape.iter().skip(1).product()
}

/// The shape the kernels work on: `shape` without its axes of extent 1,
/// which change neither the row-major nor the column-major order (so a
/// `[1, 4096, 4096]` tensor is split into blocks like a matrix).
pub fn kernel_shape(shape: &[usize]) -> Vec<usize> {
    let squeezed: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
    if squeezed.is_empty() && !shape.is_empty() {
        vec![1]
    } else {
        squeezed
    }
}

/// Rows per block when a block should hold about `rows` rows: at least 1,
/// a whole number of tiles ([`KTILE`]) when that many fit, and a multiple
/// of 8 for sub-byte dtypes so every block starts on a byte boundary.
pub fn block_rows(rows: usize, dtype: Dtype) -> usize {
    if rows >= KTILE {
        rows / KTILE * KTILE
    } else if dtype.bits() % 8 != 0 {
        rows.max(1).next_multiple_of(8)
    } else {
        rows.max(1)
    }
}

/// Number of outer rows (the first dimension; 1 for a scalar).
pub fn n_rows(shape: &[usize]) -> usize {
    shape.first().copied().unwrap_or(1)
}

/// Calls `f(rm, cm)` for every element in outer rows `[row0, row1)`, where
/// `rm` is the row-major index relative to the block start and `cm` the
/// column-major index in the whole tensor.
#[inline(always)]
pub fn for_each_index(shape: &[usize], row0: usize, row1: usize, mut f: impl FnMut(usize, usize)) {
    let n = shape.len();
    // A tensor without elements has none to visit; the tiled walk below
    // would visit the first and last axes even when a middle one is empty.
    if row0 >= row1 || shape.contains(&0) {
        return;
    }
    if n <= 1 || is_trivial_layout(shape) {
        let r = row_len(shape);
        let (lo, hi) = (row0 * r, row1 * r);
        for k in lo..hi {
            f(k - lo, k);
        }
        return;
    }
    let last = shape[n - 1];
    let row = row_len(shape);
    // Column-major stride of the last axis; row-major stride of axis 0 is `row`.
    let cm_last: usize = shape[..n - 1].iter().product();
    let mut mid = Middle::new(shape);
    loop {
        let (rm_base, cm_base) = (mid.rm, mid.cm);
        let mut i0b = row0;
        while i0b < row1 {
            let i0e = (i0b + TILE).min(row1);
            let mut jb = 0;
            while jb < last {
                let je = (jb + TILE).min(last);
                for i0 in i0b..i0e {
                    let rm_row = (i0 - row0) * row + rm_base;
                    let cm_row = i0 + cm_base;
                    for j in jb..je {
                        f(rm_row + j, cm_row + j * cm_last);
                    }
                }
                jb = je;
            }
            i0b = i0e;
        }
        if !mid.advance() {
            return;
        }
    }
}

/// An index into the middle axes of a tensor (all but the first and the
/// last), stepped in row-major order, with the row-major and column-major
/// element offsets it stands for. The conversion kernels transpose one
/// (first axis x last axis) slab per middle index.
struct Middle<'a> {
    shape: &'a [usize],
    idx: Vec<usize>,
    /// Row-major offset of the current middle index.
    rm: usize,
    /// Column-major offset of the current middle index.
    cm: usize,
}

impl<'a> Middle<'a> {
    /// The first middle index of `shape`, which has at least 2 axes.
    fn new(shape: &'a [usize]) -> Middle<'a> {
        Middle { shape, idx: vec![0; shape.len().saturating_sub(2)], rm: 0, cm: 0 }
    }

    /// Steps to the next middle index (the last axis fastest); `false`
    /// after the last one.
    fn advance(&mut self) -> bool {
        let n = self.shape.len();
        let last = self.shape[n - 1];
        let middle = &self.shape[1..n - 1];
        let mut k = middle.len();
        loop {
            if k == 0 {
                return false;
            }
            k -= 1;
            self.idx[k] += 1;
            // Row-major stride of middle axis k: the product of the axes
            // after it; column-major: the product of the axes before it.
            let rm_stride: usize = middle[k + 1..].iter().product::<usize>() * last;
            let cm_stride: usize = self.shape[..k + 1].iter().product();
            self.rm += rm_stride;
            self.cm += cm_stride;
            if self.idx[k] < middle[k] {
                return true;
            }
            self.rm -= rm_stride * middle[k];
            self.cm -= cm_stride * middle[k];
            self.idx[k] = 0;
        }
    }
}

/// Where decoded values go: an R vector's data, column-major.
pub enum Dst<'a> {
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
    /// bit64's `integer64` (see [`Target::Int64`])
    Int64(&'a mut [i64]),
    /// 64-bit integers' bits (see [`Target::Bits64`])
    Bits64(&'a mut [u64]),
}

/// A tensor's R vector as a pointer and length, so that several threads can
/// each write the elements of their own outer rows (disjoint sets of
/// elements) without holding overlapping `&mut` slices.
pub struct Out<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<T> Clone for Out<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<'_, T> {}

// SAFETY: an `Out` is a `&mut [T]` split by rows: `decode_rows` requires
// that threads sharing one write disjoint elements, so sending it to
// another thread is sending part of a `&mut [T]`, which is Send for T: Send.
unsafe impl<T: Send> Send for Out<'_, T> {}
// SAFETY: as above; `&Out` only gives the same row-disjoint access.
unsafe impl<T: Send> Sync for Out<'_, T> {}

impl<'a, T> Out<'a, T> {
    /// Borrows `x` for the lifetime of the `Out`.
    pub fn new(x: &'a mut [T]) -> Self {
        Out { ptr: x.as_mut_ptr(), len: x.len(), _borrow: PhantomData }
    }

    /// An `Out` over `len` elements at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` elements for `'a`
    /// (dangling but aligned when `len` is 0), and only accessed through
    /// this `Out` meanwhile.
    pub unsafe fn from_raw(ptr: *mut T, len: usize) -> Self {
        Out { ptr, len, _borrow: PhantomData }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The first element's address and the size in bytes.
    pub fn memory(&self) -> (*mut u8, usize) {
        (self.ptr as *mut u8, self.len * std::mem::size_of::<T>())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `[start, start + n)`.
    ///
    /// # Safety
    /// The range must be in bounds, and nothing else may access those
    /// elements while the slice lives.
    #[inline(always)]
    pub unsafe fn part(self, start: usize, n: usize) -> &'a mut [T] {
        debug_assert!(start <= self.len && n <= self.len - start);
        // SAFETY: in bounds and unaliased, as the caller guarantees; the
        // pointer comes from a live `&'a mut [T]`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), n) }
    }

    /// Writes element `i`.
    ///
    /// # Safety
    /// As for [`Out::part`] with the range `[i, i + 1)`.
    #[inline(always)]
    unsafe fn set(self, i: usize, v: T) {
        debug_assert!(i < self.len);
        // SAFETY: as the caller guarantees.
        unsafe { self.ptr.add(i).write(v) }
    }
}

/// A decode destination that threads can share (see [`decode_rows`]).
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// `double`
    Real(Out<'a, f64>),
    /// `integer`
    Integer(Out<'a, i32>),
    /// `logical`
    Logical(Out<'a, i32>),
    /// `complex` as (re, im) pairs
    Complex(Out<'a, [f64; 2]>),
    /// `raw`: U8 values as they are, one byte each.
    Byte(Out<'a, u8>),
    /// bit64's `integer64` (a double vector holding int64 bits): I64
    /// values as they are, U64 values above `i64::MAX` as its `NA`
    /// (`i64::MIN`), counted in [`DecodeStats::na`] with the I64 values
    /// equal to `i64::MIN`.
    Int64(Out<'a, i64>),
    /// The bits of I64 (two's complement) and U64 values, for the caller
    /// to turn into something else (decimal strings).
    Bits64(Out<'a, u64>),
}

impl<'a> Target<'a> {
    /// The first element's address and the size in bytes.
    pub fn memory(&self) -> (*mut u8, usize) {
        match self {
            Target::Real(o) => o.memory(),
            Target::Integer(o) | Target::Logical(o) => o.memory(),
            Target::Complex(o) => o.memory(),
            Target::Byte(o) => o.memory(),
            Target::Int64(o) => o.memory(),
            Target::Bits64(o) => o.memory(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Target::Real(o) => o.len(),
            Target::Integer(o) | Target::Logical(o) => o.len(),
            Target::Complex(o) => o.len(),
            Target::Byte(o) => o.len(),
            Target::Int64(o) => o.len(),
            Target::Bits64(o) => o.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> From<Dst<'a>> for Target<'a> {
    fn from(d: Dst<'a>) -> Self {
        match d {
            Dst::Real(x) => Target::Real(Out::new(x)),
            Dst::Integer(x) => Target::Integer(Out::new(x)),
            Dst::Logical(x) => Target::Logical(Out::new(x)),
            Dst::Complex(x) => Target::Complex(Out::new(x)),
            Dst::Byte(x) => Target::Byte(Out::new(x)),
            Dst::Int64(x) => Target::Int64(Out::new(x)),
            Dst::Bits64(x) => Target::Bits64(Out::new(x)),
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

/// The first `W` bytes of `s`.
#[inline(always)]
fn arr<const W: usize>(s: &[u8]) -> [u8; W] {
    let mut b = [0u8; W];
    b.copy_from_slice(&s[..W]);
    b
}

/// Bits `[i*bits, (i+1)*bits)` of `src`, least significant bit first.
#[inline(always)]
fn packed(src: &[u8], i: usize, bits: usize) -> u32 {
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
pub fn decode(dtype: Dtype, src: &[u8], shape: &[usize], row0: usize, row1: usize, dst: Dst<'_>) -> Result<DecodeStats> {
    // SAFETY: `dst` is borrowed exclusively for this call.
    unsafe { decode_rows(dtype, src, shape, row0, row1, Target::from(dst)) }
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
    dst: Target<'_>,
) -> Result<DecodeStats> {
    let mut stats = DecodeStats::default();
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let need = (row1.saturating_sub(row0)).checked_mul(row_len(shape)).and_then(|n| dtype.bytes_for(n));
    let (Some(numel), Some(need)) = (numel, need) else {
        return Err(mismatch("the shape's size overflows"));
    };
    if numel == 0 && row0 <= row1 && dst.is_empty() {
        return Ok(stats);
    }
    if row0 > row1 || row1 > n_rows(shape) || src.len() < need || dst.len() != numel {
        return Err(mismatch("the rows, bytes or destination don't match the shape"));
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
        Target::Real(out) => match dtype {
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
        Target::Integer(out) => match dtype {
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
        Target::Logical(out) => k!(1, out, |b| (b[0] != 0) as i32),
        // U8 only (decodes_into).
        Target::Byte(out) => k!(1, out, |b| b[0]),
        Target::Int64(out) => {
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
        Target::Bits64(out) => k!(8, out, |b| u64::from_le_bytes(b)),
        Target::Complex(out) => {
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
pub fn decodes_into(dtype: Dtype, dst: &Target<'_>) -> bool {
    match dst {
        Target::Real(_) => dtype != Dtype::C64,
        Target::Integer(_) => r_type(dtype) == RType::Integer || dtype == Dtype::Bool,
        Target::Logical(_) => dtype == Dtype::Bool,
        Target::Complex(_) => dtype == Dtype::C64,
        Target::Byte(_) => dtype == Dtype::U8,
        Target::Int64(_) | Target::Bits64(_) => matches!(dtype, Dtype::I64 | Dtype::U64),
    }
}

/// The error for arguments that don't fit together: a caller's bug, never
/// the file's.
fn mismatch(what: &str) -> Error {
    Error::new(Kind::InvalidArgument, format!("internal error in the conversion kernels: {what}"))
}

/// Number of little-endian I32 values equal to `i32::MIN` in `src[..n]`.
fn count_int_min(src: &[u8], n: usize) -> usize {
    src[..n].chunks_exact(4).filter(|c| arr::<4>(c) == i32::MIN.to_le_bytes()).count()
}

/// Number of little-endian I32 values equal to `i32::MIN` (R's
/// `NA_integer_`) in `src`, a whole number of I32 values.
pub fn count_i32_min(src: &[u8]) -> usize {
    count_int_min(src, src.len() / 4 * 4)
}

/// Edge of the square tiles the transposing kernels work in: a tile of
/// 16 x 16 elements reads 16 runs of 16 source elements and writes 16 runs
/// of 16 destination elements, whole cache lines for every element size
/// used here, so no line is fetched twice however the strides alias.
/// Callers split tensors into blocks of a multiple of this many rows.
pub const KTILE: usize = 16;

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
    out: Out<'_, T>,
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
        unsafe { transpose::<W, T, _>(src, rm_base, rl, row1 - row0, last, out, cm_base + row0, cm_last, &mut conv) };
        if !mid.advance() {
            return;
        }
    }
}

/// Transposes a `rows x cols` slab: element `(i, j)` is read at element
/// `base + i * stride + j` of `src` and written to `dbase + i + j * dstride`
/// of `out`, converted by `conv`, in tiles of 16 x 16.
///
/// Strips of 16 columns are done one after the other, each down all the
/// rows: every column then gets one long contiguous run of writes per call
/// (2 KiB for 128 rows of doubles), which matters more than anything else
/// here because the columns are far apart in memory (each run is a TLB
/// miss), while the source block stays in cache between strips.
///
/// # Safety
/// Every such read and write is in bounds, and nothing else accesses the
/// written elements meanwhile.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn transpose<const W: usize, T: Copy + Default, F: FnMut([u8; W]) -> T>(
    src: &[u8],
    base: usize,
    stride: usize,
    rows: usize,
    cols: usize,
    out: Out<'_, T>,
    dbase: usize,
    dstride: usize,
    conv: &mut F,
) {
    let mut tile = [[T::default(); KTILE]; KTILE];
    // One tile of `ti` rows and `tj` columns; called with the constants
    // KTILE for whole tiles, so that those loops unroll.
    #[inline(always)]
    unsafe fn one<const W: usize, T: Copy, F: FnMut([u8; W]) -> T>(
        tile: &mut [[T; KTILE]; KTILE],
        (src, base, stride, conv): (&[u8], usize, usize, &mut F),
        (out, dbase, dstride): (Out<'_, T>, usize, usize),
        (ib, jb, ti, tj): (usize, usize, usize, usize),
    ) {
        for i in 0..ti {
            let at = (base + (ib + i) * stride + jb) * W;
            let s = &src[at..at + tj * W];
            for (col, c) in tile.iter_mut().zip(s.chunks_exact(W)) {
                col[i] = conv(arr(c));
            }
        }
        for (j, col) in tile[..tj].iter().enumerate() {
            // SAFETY: the caller's contract covers (ib..ib+ti, jb + j).
            unsafe { out.part(dbase + ib + (jb + j) * dstride, ti) }.copy_from_slice(&col[..ti]);
        }
    }
    for_each_tile(rows, cols, |ib, jb, ti, tj| {
        let from = (src, base, stride, &mut *conv);
        let to = (out, dbase, dstride);
        if ti == KTILE && tj == KTILE {
            prefetch_next_tile::<true, T>(out.ptr, dbase, dstride, rows, ib, jb);
            // SAFETY: the caller's contract covers every tile.
            unsafe { one(&mut tile, from, to, (ib, jb, KTILE, KTILE)) };
        } else {
            // SAFETY: as above.
            unsafe { one(&mut tile, from, to, (ib, jb, ti, tj)) };
        }
    });
}

/// Calls `f(ib, jb, ti, tj)` for the tiles of a `rows x cols` slab, of `ti`
/// rows from `ib` and `tj` columns from `jb` (KTILE each, less at the
/// edges), in strips of KTILE columns, each down all the rows (see
/// [`transpose`]).
#[inline(always)]
fn for_each_tile(rows: usize, cols: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut jb = 0;
    while jb < cols {
        let tj = KTILE.min(cols - jb);
        let mut ib = 0;
        while ib < rows {
            let ti = KTILE.min(rows - ib);
            f(ib, jb, ti, tj);
            ib += ti;
        }
        jb += tj;
    }
}

/// Prefetches, for the tile of rows `ib..ib+16` and columns `jb..jb+16`
/// of a column-major vector at `p` (element `(i, j)` at `base + i + j *
/// stride`), the 16 column runs of the tile below it, when that tile is a
/// whole one of `rows`. Both transposes touch those runs one tile later:
/// 16 far-apart runs whose fetches otherwise stall the stores (decode) or
/// loads (encode) one after the other; this about halves the time of a
/// large transpose.
#[inline(always)]
fn prefetch_next_tile<const WRITE: bool, T>(p: *const T, base: usize, stride: usize, rows: usize, ib: usize, jb: usize) {
    if ib + 2 * KTILE > rows {
        return;
    }
    for j in 0..KTILE {
        prefetch_run::<WRITE, T>(p.wrapping_add(base + ib + KTILE + (jb + j) * stride), KTILE);
    }
}

/// Hints the cache to fetch the lines of `n` elements at `p`, which are
/// about to be written (`WRITE`) or read. Only a hint: it has no effect on
/// the program's results, and the processor ignores it for addresses it
/// can't translate, so `p` needn't be in bounds.
#[inline(always)]
fn prefetch_run<const WRITE: bool, T>(p: *const T, n: usize) {
    const LINE: usize = 64;
    let bytes = n * std::mem::size_of::<T>();
    if bytes == 0 {
        return;
    }
    // Every line the run touches, also when it doesn't start on a line.
    let first = (p as usize) % LINE;
    let mut off = 0;
    while off < first + bytes {
        let a = (p as *const u8).wrapping_sub(first).wrapping_add(off);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetch is a hint that never faults or changes memory.
        // (A read prefetch also serves writes: the line arrives exclusive
        // when no other core holds it.)
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(a as *const i8)
        };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above; PRFM has no architectural effect.
        unsafe {
            if WRITE {
                std::arch::asm!("prfm pstl1keep, [{0}]", in(reg) a, options(nostack, preserves_flags, readonly));
            } else {
                std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) a, options(nostack, preserves_flags, readonly));
            }
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = a;
        off += LINE;
    }
}

/// Where encoded values come from: an R vector's data, column-major.
#[derive(Clone, Copy)]
pub enum Src<'a> {
    /// `double`
    Real(&'a [f64]),
    /// `integer` (`i32::MIN` is `NA`)
    Integer(&'a [i32]),
    /// `logical` (`i32::MIN` is `NA`)
    Logical(&'a [i32]),
    /// `raw`
    Raw(&'a [u8]),
    /// `complex` as (re, im) pairs
    Complex(&'a [[f64; 2]]),
    /// bit64's `integer64`: int64 values (`i64::MIN` is `NA`)
    Int64(&'a [i64]),
}

impl Src<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Src::Real(x) => x.len(),
            Src::Integer(x) | Src::Logical(x) => x.len(),
            Src::Raw(x) => x.len(),
            Src::Complex(x) => x.len(),
            Src::Int64(x) => x.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `[start, start + n)` (clamped to the vector).
    pub fn slice(&self, start: usize, n: usize) -> Src<'_> {
        fn sub<T>(x: &[T], start: usize, n: usize) -> &[T] {
            let a = start.min(x.len());
            &x[a..(a + n).min(x.len())]
        }
        match *self {
            Src::Real(x) => Src::Real(sub(x, start, n)),
            Src::Integer(x) => Src::Integer(sub(x, start, n)),
            Src::Logical(x) => Src::Logical(sub(x, start, n)),
            Src::Raw(x) => Src::Raw(sub(x, start, n)),
            Src::Complex(x) => Src::Complex(sub(x, start, n)),
            Src::Int64(x) => Src::Int64(sub(x, start, n)),
        }
    }
}

/// One element of an R vector, as the encoders see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    /// A double (NaN and NA included).
    F(f64),
    /// An integer, logical, raw or integer64 value.
    I(i64),
    /// A complex value.
    C(f64, f64),
    /// `NA` of an integer, logical or integer64 vector.
    Na,
}

impl Num {
    #[inline(always)]
    fn real(self) -> Option<f64> {
        match self {
            Num::F(x) => Some(x),
            Num::I(i) => Some(i as f64),
            Num::C(..) | Num::Na => None,
        }
    }

    /// The value as a double for a dtype narrower than F64: an integer
    /// beyond 2^53 is rounded to odd, so that rounding the double again to
    /// the dtype (24 bits of precision at most) is rounding the integer
    /// itself to nearest, not twice.
    #[inline(always)]
    fn real_narrow(self) -> Option<f64> {
        match self {
            Num::I(i) if i.unsigned_abs() > 1 << 53 => Some(round_to_odd(i as i128)),
            _ => self.real(),
        }
    }

    /// The value as an integer, if it is a whole number.
    #[inline(always)]
    fn int(self) -> Option<i128> {
        match self {
            Num::F(x) if x.is_finite() && x.fract() == 0.0 => Some(x as i128),
            Num::I(i) => Some(i as i128),
            _ => None,
        }
    }
}

/// `i` as a double rounded to odd: truncated to 53 significant bits, the
/// last of them set if any bit was cut off. Rounding that double again to
/// a format of at most 51 bits of precision rounds `i` itself correctly.
pub fn round_to_odd(i: i128) -> f64 {
    let a = i.unsigned_abs();
    let shift = (128 - a.leading_zeros()).saturating_sub(53);
    let kept = a >> shift << shift;
    // `kept` has at most 53 significant bits: the conversion is exact.
    let mut x = kept as f64;
    if kept != a {
        x = f64::from_bits(x.to_bits() | 1);
    }
    if i < 0 {
        -x
    } else {
        x
    }
}

#[inline(always)]
fn get(src: Src<'_>, cm: usize) -> Num {
    match src {
        Src::Real(x) => Num::F(x[cm]),
        Src::Integer(x) | Src::Logical(x) => {
            let v = x[cm];
            if v == i32::MIN {
                Num::Na
            } else {
                Num::I(v as i64)
            }
        }
        Src::Raw(x) => Num::I(x[cm] as i64),
        Src::Complex(x) => Num::C(x[cm][0], x[cm][1]),
        Src::Int64(x) => {
            let v = x[cm];
            if v == i64::MIN {
                Num::Na
            } else {
                Num::I(v)
            }
        }
    }
}

/// The first element that could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BadValue {
    /// Its column-major index in the whole tensor (0-based).
    pub index: usize,
    /// Its value.
    pub value: Num,
}

/// Whether a value read back is the value written: equal, or both NaN.
#[inline(always)]
fn same(back: f64, v: f64) -> bool {
    back == v || (back.is_nan() && v.is_nan())
}

/// Whether `dtype` holds `v` when rounding to nearest: for messages about
/// values that [`Rounding::Exact`] refused.
pub fn fits_rounded(dtype: Dtype, v: Num) -> bool {
    let src_one: [f64; 1];
    let ints: [i32; 1];
    let int64s: [i64; 1];
    let src = match v {
        Num::F(x) => {
            src_one = [x];
            Src::Real(&src_one)
        }
        Num::I(i) => match i32::try_from(i) {
            Ok(i) => {
                ints = [i];
                Src::Integer(&ints)
            }
            Err(_) => {
                int64s = [i];
                Src::Int64(&int64s)
            }
        },
        _ => return false,
    };
    let mut one = [0u8; 8];
    encode_generic(dtype, src, &[1], 0, 1, &mut one, Rounding::Nearest)
}

/// How [`encode_with`] treats a value a float dtype can't hold exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Rounds it to nearest, ties to even (values out of range fail).
    Nearest,
    /// Fails: only values the dtype holds exactly are written (NaN too).
    Exact,
}

/// Why [`encode`] failed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EncodeError {
    /// A value the dtype can't hold.
    Value(BadValue),
    /// The arguments don't fit together (lengths, rows): a caller's bug.
    Mismatch,
}

/// `v` in integer type `T` if it is a whole number `T` holds. Nothing
/// saturates: 2^63 is not I64's largest value (2^63 - 1, which no double
/// holds), so it is out of range, as 2^64 is for U64.
#[inline(always)]
fn int_in<T: TryFrom<i128>>(v: Num) -> Option<T> {
    v.int().and_then(|i| T::try_from(i).ok())
}

/// Encodes outer rows `[row0, row1)` of a tensor whose values are `src`
/// (the whole tensor, column-major) into `out`, the row-major bytes of
/// exactly those rows. For sub-byte dtypes `out` must start zeroed.
///
/// Floats round to nearest even; integers must be whole and in range;
/// BOOL takes 0 and 1; NA of integer, logical and integer64 vectors is
/// rejected. The
/// error names the first value in R's (column-major) order that can't be
/// encoded, whichever block it is in, so it doesn't depend on how a tensor
/// is split into blocks or threads. Arguments that don't fit together
/// (lengths, rows) are [`EncodeError::Mismatch`].
pub fn encode(
    dtype: Dtype,
    src: Src<'_>,
    shape: &[usize],
    row0: usize,
    row1: usize,
    out: &mut [u8],
) -> std::result::Result<(), EncodeError> {
    encode_with(dtype, src, shape, row0, row1, out, Rounding::Nearest)
}

/// [`encode`], with floats narrower than F64 rounded or kept exact as
/// `rounding` says (other dtypes take exact values either way).
pub fn encode_with(
    dtype: Dtype,
    src: Src<'_>,
    shape: &[usize],
    row0: usize,
    row1: usize,
    out: &mut [u8],
    rounding: Rounding,
) -> std::result::Result<(), EncodeError> {
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let need = (row1.saturating_sub(row0)).checked_mul(row_len(shape)).and_then(|n| dtype.bytes_for(n));
    let (Some(numel), Some(need)) = (numel, need) else {
        return Err(EncodeError::Mismatch);
    };
    if numel == 0 && row0 <= row1 && src.is_empty() {
        return Ok(());
    }
    if row0 > row1 || row1 > n_rows(shape) || out.len() < need || src.len() != numel {
        return Err(EncodeError::Mismatch);
    }
    let out = &mut out[..need];
    macro_rules! k {
        ($w:literal, $x:expr, |$v:ident| $e:expr) => {
            ekernel::<$w, _>($x, shape, row0, row1, out, |$v| $e)
        };
    }
    let exact = rounding == Rounding::Exact;
    let ok = match (dtype, src) {
        (Dtype::F64, Src::Real(x)) => k!(8, x, |v| Some(v.to_le_bytes())),
        (Dtype::F32, Src::Real(x)) if exact => k!(4, x, |v| {
            let f = narrow_f32(v);
            same(f as f64, v).then_some(f.to_le_bytes())
        }),
        (Dtype::F16 | Dtype::BF16, Src::Real(x)) if exact => match floats::codec(dtype) {
            Some(c) => k!(2, x, |v| c.encode(v).filter(|&b| same(c.decode(b), v)).map(|b| (b as u16).to_le_bytes())),
            None => false,
        },
        (Dtype::F32, Src::Real(x)) => k!(4, x, |v| {
            let f = narrow_f32(v);
            (f.is_finite() || !v.is_finite()).then_some(f.to_le_bytes())
        }),
        (Dtype::F16 | Dtype::BF16, Src::Real(x)) => match floats::codec(dtype) {
            Some(c) => k!(2, x, |v| c.encode(v).map(|b| (b as u16).to_le_bytes())),
            None => false,
        },
        (Dtype::F64, Src::Integer(x)) => k!(8, x, |v| (v != i32::MIN).then_some((v as f64).to_le_bytes())),
        (Dtype::I32, Src::Integer(x)) => k!(4, x, |v| (v != i32::MIN).then_some(v.to_le_bytes())),
        (Dtype::I64, Src::Integer(x)) => k!(8, x, |v| (v != i32::MIN).then_some((v as i64).to_le_bytes())),
        (Dtype::U8, Src::Raw(x)) => k!(1, x, |v| Some([v])),
        (Dtype::I64, Src::Int64(x)) => k!(8, x, |v| (v != i64::MIN).then_some(v.to_le_bytes())),
        // NA (i64::MIN) is negative too.
        (Dtype::U64, Src::Int64(x)) => k!(8, x, |v| (v >= 0).then_some((v as u64).to_le_bytes())),
        (Dtype::Bool, Src::Logical(x)) => k!(1, x, |v| (v == 0 || v == 1).then_some([v as u8])),
        _ => encode_generic(dtype, src, shape, row0, row1, out, rounding),
    };
    if ok {
        return Ok(());
    }
    Err(match first_bad(dtype, src, rounding) {
        Some(bad) => EncodeError::Value(bad),
        // Every value encodes alone: the pair of types is one no kernel
        // takes (complex into a real dtype), which R rejects beforehand.
        None => EncodeError::Mismatch,
    })
}

/// The first element of `src`, in R's order, that `dtype` can't hold.
fn first_bad(dtype: Dtype, src: Src<'_>, rounding: Rounding) -> Option<BadValue> {
    let mut one = [0u8; 8];
    (0..src.len()).find_map(|i| {
        one = [0; 8];
        let ok = encode_generic(dtype, src.slice(i, 1), &[1], 0, 1, &mut one, rounding);
        (!ok).then(|| BadValue { index: i, value: get(src, i) })
    })
}

/// The encoding kernel: element `(i, ...)` of rows `[row0, row1)`, read at
/// its column-major position in `x`, converted by `conv` and stored at its
/// row-major position in `out` (the rows' bytes). Returns whether `conv`
/// accepted every value (rejected ones are stored as zeros).
///
/// The caller has checked that `x` holds the tensor, `out` the rows, and
/// `row0 <= row1 <= n_rows(shape)`.
#[inline(always)]
fn ekernel<const W: usize, S: Copy>(
    x: &[S],
    shape: &[usize],
    row0: usize,
    row1: usize,
    out: &mut [u8],
    mut conv: impl FnMut(S) -> Option<[u8; W]>,
) -> bool {
    let rl = row_len(shape);
    let n = shape.len();
    let mut ok = true;
    if n <= 1 || is_trivial_layout(shape) {
        for (o, &v) in out.chunks_exact_mut(W).zip(&x[row0 * rl..row1 * rl]) {
            let b = conv(v);
            ok &= b.is_some();
            o.copy_from_slice(&b.unwrap_or([0; W]));
        }
        return ok;
    }
    let last = shape[n - 1];
    let cm_last: usize = shape[..n - 1].iter().product();
    let mut mid = Middle::new(shape);
    loop {
        let (rm_base, cm_base) = (mid.rm, mid.cm);
        ok &= etranspose::<W, S, _>(x, cm_base + row0, cm_last, row1 - row0, last, out, rm_base, rl, &mut conv);
        if !mid.advance() {
            return ok;
        }
    }
}

/// Transposes a `rows x cols` slab back to row-major: element `(i, j)` is
/// read at `xbase + i + j * xstride` of `x` and written as `W` bytes at
/// element `base + i * stride + j` of `out`, in tiles of 16 x 16, strips of
/// 16 columns down all the rows (see [`transpose`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn etranspose<const W: usize, S: Copy, F: FnMut(S) -> Option<[u8; W]>>(
    x: &[S],
    xbase: usize,
    xstride: usize,
    rows: usize,
    cols: usize,
    out: &mut [u8],
    base: usize,
    stride: usize,
    conv: &mut F,
) -> bool {
    let mut ok = true;
    let mut tile = [[[0u8; W]; KTILE]; KTILE];
    // One tile of `ti` rows and `tj` columns; called with the constants
    // KTILE for whole tiles, so that those loops unroll.
    #[inline(always)]
    fn one<const W: usize, S: Copy, F: FnMut(S) -> Option<[u8; W]>>(
        tile: &mut [[[u8; W]; KTILE]; KTILE],
        (x, xbase, xstride, conv): (&[S], usize, usize, &mut F),
        (out, base, stride): (&mut [u8], usize, usize),
        (ib, jb, ti, tj): (usize, usize, usize, usize),
    ) -> bool {
        let mut ok = true;
        for j in 0..tj {
            let at = xbase + ib + (jb + j) * xstride;
            for (row, &v) in tile.iter_mut().zip(&x[at..at + ti]) {
                let b = conv(v);
                ok &= b.is_some();
                row[j] = b.unwrap_or([0; W]);
            }
        }
        for (i, row) in tile[..ti].iter().enumerate() {
            let at = (base + (ib + i) * stride + jb) * W;
            out[at..at + tj * W].copy_from_slice(&row.as_flattened()[..tj * W]);
        }
        ok
    }
    for_each_tile(rows, cols, |ib, jb, ti, tj| {
        let from = (x, xbase, xstride, &mut *conv);
        let to = (&mut *out, base, stride);
        ok &= if ti == KTILE && tj == KTILE {
            prefetch_next_tile::<false, S>(x.as_ptr(), xbase, xstride, rows, ib, jb);
            one(&mut tile, from, to, (ib, jb, KTILE, KTILE))
        } else {
            one(&mut tile, from, to, (ib, jb, ti, tj))
        };
    });
    ok
}

/// The element-by-element encoder for every dtype and R type: the
/// reference the fast kernels are tested against, and the path for the
/// rarer pairs. Returns whether every value could be encoded (those that
/// couldn't are left as zero bytes).
fn encode_generic(
    dtype: Dtype,
    src: Src<'_>,
    shape: &[usize],
    row0: usize,
    row1: usize,
    out: &mut [u8],
    rounding: Rounding,
) -> bool {
    let mut ok = true;
    let exact = rounding == Rounding::Exact;
    // With `Exact`, a code only if it decodes to the value itself.
    let keep = |code: Option<u32>, x: f64, decode: &dyn Fn(u32) -> f64| code.filter(|&b| !exact || same(decode(b), x));
    macro_rules! run {
        ($w:literal, |$v:ident| $e:expr) => {{
            for_each_index(shape, row0, row1, |rm, cm| {
                let $v = get(src, cm);
                let enc: Option<[u8; $w]> = $e;
                match enc {
                    Some(b) => out[rm * $w..rm * $w + $w].copy_from_slice(&b),
                    None => ok = false,
                }
            });
        }};
    }
    match dtype {
        Dtype::F64 => run!(8, |v| v.real().map(f64::to_le_bytes)),
        Dtype::F32 => run!(4, |v| v.real_narrow().and_then(|x| {
            let f = narrow_f32(x);
            let fits = if exact { same(f as f64, x) } else { f.is_finite() || !x.is_finite() };
            fits.then(|| f.to_le_bytes())
        })),
        Dtype::F16 | Dtype::BF16 => {
            let Some(c) = floats::codec(dtype) else {
                return false;
            };
            run!(2, |v| v.real_narrow().and_then(|x| keep(c.encode(x), x, &|b| c.decode(b))).map(|b| (b as u16).to_le_bytes()))
        }
        Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E4M3Fnuz | Dtype::F8E5M2Fnuz => {
            let Some(c) = floats::codec(dtype) else {
                return false;
            };
            run!(1, |v| v.real_narrow().and_then(|x| keep(c.encode(x), x, &|b| c.decode(b))).map(|b| [b as u8]))
        }
        Dtype::F8E8M0 => run!(1, |v| v
            .real_narrow()
            .and_then(|x| keep(encode_e8m0(x).map(u32::from), x, &|b| decode_e8m0(b as u8)))
            .map(|b| [b as u8])),
        Dtype::F6E2M3 | Dtype::F6E3M2 | Dtype::F4 => {
            let Some(c) = floats::codec(dtype) else {
                return false;
            };
            let bits = dtype.bits();
            for_each_index(shape, row0, row1, |rm, cm| {
                let v = get(src, cm);
                match v.real_narrow().and_then(|x| keep(c.encode(x), x, &|b| c.decode(b))) {
                    Some(code) => {
                        let pos = rm * bits;
                        let word = code << (pos % 8);
                        out[pos / 8] |= word as u8;
                        if word > 0xff {
                            out[pos / 8 + 1] |= (word >> 8) as u8;
                        }
                    }
                    None => ok = false,
                }
            });
        }
        Dtype::I64 => run!(8, |v| int_in::<i64>(v).map(i64::to_le_bytes)),
        Dtype::U64 => run!(8, |v| int_in::<u64>(v).map(u64::to_le_bytes)),
        Dtype::I32 => run!(4, |v| int_in::<i32>(v).map(i32::to_le_bytes)),
        Dtype::U32 => run!(4, |v| int_in::<u32>(v).map(u32::to_le_bytes)),
        Dtype::I16 => run!(2, |v| int_in::<i16>(v).map(i16::to_le_bytes)),
        Dtype::U16 => run!(2, |v| int_in::<u16>(v).map(u16::to_le_bytes)),
        Dtype::I8 => run!(1, |v| int_in::<i8>(v).map(i8::to_le_bytes)),
        Dtype::U8 => run!(1, |v| int_in::<u8>(v).map(u8::to_le_bytes)),
        Dtype::Bool => run!(1, |v| v.int().filter(|i| *i == 0 || *i == 1).map(|i| [i as u8])),
        Dtype::C64 => run!(8, |v| {
            let (re, im) = match v {
                Num::C(re, im) => (re, im),
                other => match other.real_narrow() {
                    Some(x) => (x, 0.0),
                    None => (f64::NAN, f64::NAN),
                },
            };
            let fits = |x: f64, f: f32| if exact { same(f as f64, x) } else { f.is_finite() || !x.is_finite() };
            let (fr, fi) = (narrow_f32(re), narrow_f32(im));
            (v != Num::Na && fits(re, fr) && fits(im, fi)).then(|| {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&fr.to_le_bytes());
                b[4..].copy_from_slice(&fi.to_le_bytes());
                b
            })
        }),
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::ALL;

    /// Reference: column-major index of each row-major element, by brute force.
    fn reference_cm(shape: &[usize]) -> Vec<usize> {
        let n: usize = shape.iter().product();
        (0..n)
            .map(|rm| {
                let mut rest = rm;
                let mut idx = vec![0; shape.len()];
                for k in (0..shape.len()).rev() {
                    idx[k] = rest % shape[k];
                    rest /= shape[k];
                }
                let mut cm = 0;
                let mut stride = 1;
                for k in 0..shape.len() {
                    cm += idx[k] * stride;
                    stride *= shape[k];
                }
                cm
            })
            .collect()
    }

    fn shapes() -> Vec<Vec<usize>> {
        vec![
            vec![],
            vec![5],
            vec![0],
            vec![3, 0],
            vec![2, 3],
            vec![1, 7],
            vec![7, 1],
            vec![40, 70],
            vec![2, 3, 4],
            vec![3, 1, 5],
            vec![2, 3, 4, 5],
            vec![33, 2, 35],
            vec![1, 2, 1, 3, 1],
        ]
    }

    #[test]
    fn index_walk_matches_brute_force_for_every_block_split() {
        for shape in shapes() {
            let want = reference_cm(&shape);
            let rows = n_rows(&shape);
            let rl = row_len(&shape);
            for step in [1usize, 2, 3, 64] {
                let mut got = vec![usize::MAX; want.len()];
                let mut r0 = 0;
                while r0 < rows {
                    let r1 = (r0 + step).min(rows);
                    for_each_index(&shape, r0, r1, |rm, cm| got[r0 * rl + rm] = cm);
                    r0 = r1;
                }
                if shape.is_empty() {
                    for_each_index(&shape, 0, 1, |rm, cm| got[rm] = cm);
                }
                assert_eq!(got, want, "shape {shape:?} step {step}");
            }
        }
    }

    #[test]
    fn tensors_without_elements_visit_nothing() {
        // Found by fuzzing (index_walk, deserialize, convert): an empty
        // middle axis used to let the tiled walk visit the outer axes.
        for shape in [vec![2, 0, 3], vec![4, 0, 2], vec![2, 3, 0, 5], vec![0], vec![3, 0]] {
            let rows = n_rows(&shape);
            for_each_index(&shape, 0, rows, |rm, cm| panic!("{shape:?} visited ({rm}, {cm})"));
            let mut out: Vec<f64> = Vec::new();
            decode(Dtype::F64, &[], &shape, 0, rows, Dst::Real(&mut out)).unwrap();
            let mut ints: Vec<i32> = Vec::new();
            decode(Dtype::U8, &[], &shape, 0, rows, Dst::Integer(&mut ints)).unwrap();
            encode(Dtype::F64, Src::Real(&[]), &shape, 0, rows, &mut []).unwrap();
        }
        // An empty row range visits nothing either.
        for_each_index(&[2, 3, 4], 1, 1, |rm, cm| panic!("visited ({rm}, {cm})"));
    }

    #[test]
    fn inconsistent_arguments_are_errors_that_write_nothing() {
        let bytes: Vec<u8> = (1..=6u8).collect();
        // A destination of the wrong length, rows past the end, too few
        // bytes, a type the dtype doesn't decode into: errors, and the
        // destination keeps its filler.
        let mut short = vec![-1.0; 5];
        assert_eq!(decode(Dtype::U8, &bytes, &[2, 3], 0, 2, Dst::Real(&mut short)).unwrap_err().kind, Kind::InvalidArgument);
        let mut out = vec![-1.0; 6];
        assert!(decode(Dtype::U8, &bytes, &[2, 3], 0, 3, Dst::Real(&mut out)).is_err());
        assert!(decode(Dtype::U8, &bytes[..5], &[2, 3], 0, 2, Dst::Real(&mut out)).is_err());
        assert!(decode(Dtype::U8, &bytes, &[2, 3], 2, 1, Dst::Real(&mut out)).is_err());
        assert_eq!(out, vec![-1.0; 6]);
        let mut ints = vec![-1; 6];
        assert!(decode(Dtype::F16, &[0; 12], &[2, 3], 0, 2, Dst::Integer(&mut ints)).is_err());
        assert!(decode(Dtype::C64, &[0; 48], &[2, 3], 0, 2, Dst::Integer(&mut ints)).is_err());
        assert!(decode(Dtype::I8, &bytes, &[2, 3], 0, 2, Dst::Logical(&mut ints)).is_err());
        assert_eq!(ints, vec![-1; 6]);
        let mut cplx = vec![[-1.0, -1.0]; 6];
        assert!(decode(Dtype::F64, &[0; 48], &[2, 3], 0, 2, Dst::Complex(&mut cplx)).is_err());
        let mut reals = vec![-1.0; 6];
        assert!(decode(Dtype::C64, &[0; 48], &[2, 3], 0, 2, Dst::Real(&mut reals)).is_err());
        assert_eq!(reals, vec![-1.0; 6]);
        // Encoding: values or output of the wrong length, rows past the end.
        let vals = [1.0; 6];
        let mut b = vec![0u8; 6];
        assert_eq!(encode(Dtype::U8, Src::Real(&vals[..5]), &[2, 3], 0, 2, &mut b), Err(EncodeError::Mismatch));
        assert_eq!(encode(Dtype::U8, Src::Real(&vals), &[2, 3], 0, 2, &mut b[..5]), Err(EncodeError::Mismatch));
        assert_eq!(encode(Dtype::U8, Src::Real(&vals), &[2, 3], 1, 3, &mut b), Err(EncodeError::Mismatch));
        assert_eq!(b, vec![0u8; 6]);
    }

    #[test]
    fn exact_rounding_keeps_only_values_the_dtype_holds() {
        let third = [1.0 / 3.0];
        let whole = [0.5, -2.0, 0.0, f64::INFINITY, f64::NAN];
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F8E4M3, Dtype::F8E5M2, Dtype::F6E2M3, Dtype::F4] {
            let n = if dtype.bits() % 8 == 0 { 1 } else { 4 };
            let thirds = vec![1.0 / 3.0; n];
            let mut out = [0u8; 8];
            let bytes = dtype.bytes_for(n).unwrap();
            assert!(encode_with(dtype, Src::Real(&thirds), &[n], 0, n, &mut out[..bytes], Rounding::Nearest).is_ok(), "{dtype}");
            out.fill(0);
            let e = encode_with(dtype, Src::Real(&thirds), &[n], 0, n, &mut out[..bytes], Rounding::Exact).unwrap_err();
            assert!(matches!(e, EncodeError::Value(BadValue { index: 0, .. })), "{dtype}");
            assert!(fits_rounded(dtype, Num::F(third[0])), "{dtype}");
        }
        // Values every float dtype holds (those with infinities and NaN).
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F8E5M2] {
            let mut out = [0u8; 5 * 4];
            let bytes = dtype.bytes_for(5).unwrap();
            encode_with(dtype, Src::Real(&whole), &[5], 0, 5, &mut out[..bytes], Rounding::Exact).unwrap();
            let ints = [1, 2, -8];
            encode_with(dtype, Src::Integer(&ints), &[3], 0, 3, &mut out[..dtype.bytes_for(3).unwrap()], Rounding::Exact).unwrap();
        }
        // 2^24 + 1 is exact in F64 and I32 but not in F32.
        let big = [16_777_217];
        let mut out = [0u8; 4];
        assert!(encode_with(Dtype::F32, Src::Integer(&big), &[1], 0, 1, &mut out, Rounding::Exact).is_err());
        assert!(encode_with(Dtype::F32, Src::Integer(&big), &[1], 0, 1, &mut out, Rounding::Nearest).is_ok());
        assert!(!fits_rounded(Dtype::F16, Num::F(1e6)));
    }

    fn encode_all(dtype: Dtype, src: Src<'_>, shape: &[usize]) -> std::result::Result<Vec<u8>, EncodeError> {
        let n: usize = shape.iter().product();
        let mut out = vec![0u8; dtype.bytes_for(n).unwrap()];
        encode(dtype, src, shape, 0, n_rows(shape), &mut out)?;
        Ok(out)
    }

    fn decode_real(dtype: Dtype, bytes: &[u8], shape: &[usize]) -> Vec<f64> {
        let n: usize = shape.iter().product();
        let mut out = vec![0.0; n];
        decode(dtype, bytes, shape, 0, n_rows(shape), Dst::Real(&mut out)).unwrap();
        out
    }

    #[test]
    fn numeric_dtypes_round_trip_small_integers_in_every_shape() {
        for dtype in ALL {
            if matches!(dtype, Dtype::C64 | Dtype::Bool | Dtype::F8E8M0) {
                continue;
            }
            for shape in shapes() {
                let n: usize = shape.iter().product();
                if dtype.bytes_for(n).is_none() {
                    continue;
                }
                // Values 0..5 are exact in every numeric dtype, F4 included.
                let vals: Vec<f64> = (0..n).map(|i| (i % 5) as f64).collect();
                let bytes = encode_all(dtype, Src::Real(&vals), &shape).unwrap();
                assert_eq!(decode_real(dtype, &bytes, &shape), vals, "{dtype} {shape:?}");
            }
        }
    }

    #[test]
    fn layout_is_row_major_on_disk() {
        // R matrix(1:6, 2) is [[1,3,5],[2,4,6]] row by row.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bytes = encode_all(Dtype::U8, Src::Real(&x), &[2, 3]).unwrap();
        assert_eq!(bytes, vec![1, 3, 5, 2, 4, 6]);
        let mut back = vec![0i32; 6];
        decode(Dtype::U8, &bytes, &[2, 3], 0, 2, Dst::Integer(&mut back)).unwrap();
        assert_eq!(back, vec![1, 2, 3, 4, 5, 6]);
        // F4 packs the first element in the low nibble.
        let bytes = encode_all(Dtype::F4, Src::Real(&[1.0, 6.0]), &[2]).unwrap();
        assert_eq!(bytes, vec![0x72]);
    }

    #[test]
    fn rejects_unrepresentable_values() {
        let EncodeError::Value(e) = encode_all(Dtype::I8, Src::Real(&[1.0, 128.0]), &[2]).unwrap_err() else {
            panic!("not a value error");
        };
        assert_eq!(e.index, 1);
        assert!(encode_all(Dtype::I32, Src::Real(&[1.5]), &[1]).is_err());
        assert!(encode_all(Dtype::I32, Src::Real(&[f64::NAN]), &[1]).is_err());
        assert!(encode_all(Dtype::I32, Src::Integer(&[i32::MIN]), &[1]).is_err());
        assert!(encode_all(Dtype::F64, Src::Logical(&[i32::MIN]), &[1]).is_err());
        assert!(encode_all(Dtype::Bool, Src::Integer(&[2]), &[1]).is_err());
        assert!(encode_all(Dtype::F32, Src::Real(&[1e39]), &[1]).is_err());
        assert!(encode_all(Dtype::F32, Src::Real(&[f64::INFINITY]), &[1]).is_ok());
        // 2^63 and 2^64, the doubles just past I64's and U64's largest
        // values, are out of range: nothing saturates.
        assert!(encode_all(Dtype::I64, Src::Real(&[9223372036854775808.0]), &[1]).is_err());
        assert!(encode_all(Dtype::I64, Src::Real(&[9223372036854777856.0]), &[1]).is_err());
        assert!(encode_all(Dtype::U64, Src::Real(&[18446744073709551616.0]), &[1]).is_err());
        assert_eq!(encode_all(Dtype::U64, Src::Real(&[18446744073709549568.0]), &[1]).unwrap(), (u64::MAX - 2047).to_le_bytes());
        assert_eq!(encode_all(Dtype::I64, Src::Real(&[-9223372036854775808.0]), &[1]).unwrap(), i64::MIN.to_le_bytes());
        assert!(encode_all(Dtype::I64, Src::Real(&[-9223372036854777856.0]), &[1]).is_err());
        // Integers beyond 2^53 round once to a narrower float: 2^60 + 2^36 + 1
        // is above the midpoint between two F32 values, which rounding it
        // to a double first would make a tie, rounded down to even.
        let i = (1i64 << 60) + (1 << 36) + 1;
        assert_eq!(encode_all(Dtype::F32, Src::Int64(&[i, -i]), &[2]).unwrap(), [(i as f32).to_le_bytes(), (-i as f32).to_le_bytes()].concat());
        assert_eq!(i as f32, ((1i64 << 60) + (1 << 37)) as f32);
        assert_eq!(encode_all(Dtype::F64, Src::Int64(&[i]), &[1]).unwrap(), (i as f64).to_le_bytes());
        assert!(encode_all(Dtype::C64, Src::Complex(&[[1e300, 0.0]]), &[1]).is_err());
        assert!(encode_all(Dtype::F8E4M3, Src::Real(&[1000.0]), &[1]).is_err());
    }

    #[test]
    fn integers_and_complex_round_trip() {
        let ints = [0, 1, -5, i32::MAX, -i32::MAX];
        let bytes = encode_all(Dtype::I32, Src::Integer(&ints), &[5]).unwrap();
        let mut back = vec![0; 5];
        decode(Dtype::I32, &bytes, &[5], 0, 5, Dst::Integer(&mut back)).unwrap();
        assert_eq!(back, ints);
        let bytes = encode_all(Dtype::Bool, Src::Logical(&[1, 0, 1]), &[3]).unwrap();
        assert_eq!(bytes, vec![1, 0, 1]);
        let z = [[1.5, -2.0], [0.0, 3.25]];
        let bytes = encode_all(Dtype::C64, Src::Complex(&z), &[2]).unwrap();
        let mut back = vec![[0.0; 2]; 2];
        decode(Dtype::C64, &bytes, &[2], 0, 2, Dst::Complex(&mut back)).unwrap();
        assert_eq!(back, z);
        let big = (1u64 << 60).to_le_bytes();
        let mut out = [0.0];
        let stats = decode(Dtype::U64, &big, &[1], 0, 1, Dst::Real(&mut out)).unwrap();
        assert_eq!(stats.inexact, 1);
        let min = i32::MIN.to_le_bytes();
        let mut out = [0];
        assert_eq!(decode(Dtype::I32, &min, &[1], 0, 1, Dst::Integer(&mut out)).unwrap().int_min, 1);
    }

    #[test]
    fn sub_byte_blocks_start_on_byte_boundaries() {
        // An F6 tensor of 8 rows x 4, written and read 4 rows at a time.
        let shape = [8usize, 4];
        let vals: Vec<f64> = (0..32).map(|i| (i % 7) as f64 * 0.5).collect();
        let whole = encode_all(Dtype::F6E2M3, Src::Real(&vals), &shape).unwrap();
        let rb = 4 * 6 / 8 * 4;
        let mut halves = vec![0u8; whole.len()];
        encode(Dtype::F6E2M3, Src::Real(&vals), &shape, 0, 4, &mut halves[..rb]).unwrap();
        encode(Dtype::F6E2M3, Src::Real(&vals), &shape, 4, 8, &mut halves[rb..]).unwrap();
        assert_eq!(halves, whole);
        let mut out = vec![0.0; 32];
        decode(Dtype::F6E2M3, &whole[..rb], &shape, 0, 4, Dst::Real(&mut out)).unwrap();
        decode(Dtype::F6E2M3, &whole[rb..], &shape, 4, 8, Dst::Real(&mut out)).unwrap();
        assert_eq!(out, vals);
    }

    // ---- Optimized kernels against a straightforward reference ----------

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Shapes that exercise whole tiles, partial tiles on both edges, middle
    /// axes, axes of extent 1 and 0, and block splits.
    fn kernel_shapes() -> Vec<Vec<usize>> {
        let mut v = shapes();
        v.extend([
            vec![16, 16],
            vec![17, 33],
            vec![32, 48],
            vec![47, 16],
            vec![16, 5],
            vec![5, 40],
            vec![40, 3, 37],
            vec![3, 20, 1, 18],
            vec![1, 37, 1, 19],
            vec![18, 2, 3, 17],
            vec![64, 1],
            vec![1, 1, 70],
            vec![2, 0, 3],
            vec![0, 17],
            vec![33, 0],
            vec![200],
        ]);
        v
    }

    /// The value of element `i` of `bytes`, decoded one element at a time
    /// with the scalar helpers (the reference for the decode kernels).
    fn ref_value(dtype: Dtype, bytes: &[u8], i: usize) -> [f64; 2] {
        let w = dtype.bits() / 8;
        let b = |k: usize| bytes[i * w + k];
        let u16_ = || u16::from_le_bytes([b(0), b(1)]);
        let u32_ = |o: usize| u32::from_le_bytes([b(o), b(o + 1), b(o + 2), b(o + 3)]);
        let u64_ = || u64::from_le_bytes(std::array::from_fn(&b));
        let re = match dtype {
            Dtype::F64 => f64::from_bits(u64_()),
            Dtype::F32 => widen_f32(u32_(0)),
            Dtype::F16 => decode_f16(u16_()),
            Dtype::BF16 => decode_bf16(u16_()),
            Dtype::F8E8M0 => decode_e8m0(b(0)),
            Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E4M3Fnuz | Dtype::F8E5M2Fnuz => {
                floats::codec(dtype).unwrap().decode(b(0) as u32)
            }
            Dtype::F6E2M3 | Dtype::F6E3M2 | Dtype::F4 => {
                floats::codec(dtype).unwrap().decode(packed(bytes, i, dtype.bits()))
            }
            Dtype::I64 => u64_() as i64 as f64,
            Dtype::U64 => u64_() as f64,
            Dtype::U32 => u32_(0) as f64,
            Dtype::I32 => u32_(0) as i32 as f64,
            Dtype::I16 => u16_() as i16 as f64,
            Dtype::U16 => u16_() as f64,
            Dtype::I8 => b(0) as i8 as f64,
            Dtype::U8 => b(0) as f64,
            Dtype::Bool => (b(0) != 0) as i32 as f64,
            Dtype::C64 => return [widen_f32(u32_(0)), widen_f32(u32_(4))],
        };
        [re, 0.0]
    }

    /// Bit patterns, so NaN payloads are compared too.
    fn bits(x: &[f64]) -> Vec<u64> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// Decodes `bytes` (the whole tensor) into each R type the dtype can
    /// become, with row blocks of `step` rows, each block on its own thread
    /// when `threaded`.
    fn decode_blocks(
        dtype: Dtype,
        rt: RType,
        bytes: &[u8],
        shape: &[usize],
        step: usize,
        threaded: bool,
    ) -> Vec<[f64; 2]> {
        let n: usize = shape.iter().product();
        let rows = n_rows(shape);
        let rl = row_len(shape);
        let ranges: Vec<(usize, usize)> = (0..rows.max(1)).step_by(step).map(|r| (r, (r + step).min(rows))).collect();
        let run = |target: Target<'_>| {
            let one = |(r0, r1): (usize, usize)| {
                let (b0, b1) = (dtype.bytes_for(r0 * rl).unwrap(), dtype.bytes_for(r1 * rl).unwrap());
                // SAFETY: each block decodes its own rows.
                unsafe { decode_rows(dtype, &bytes[b0..b1], shape, r0, r1, target) }.unwrap();
            };
            if threaded {
                std::thread::scope(|s| {
                    for &r in &ranges {
                        s.spawn(move || one(r));
                    }
                });
            } else {
                ranges.iter().for_each(|&r| one(r));
            }
        };
        match rt {
            RType::Real => {
                let mut out = vec![f64::from_bits(1); n];
                run(Target::Real(Out::new(&mut out)));
                out.iter().map(|&v| [v, 0.0]).collect()
            }
            RType::Integer | RType::Logical => {
                let mut out = vec![-7i32; n];
                let o = Out::new(&mut out);
                run(if rt == RType::Integer { Target::Integer(o) } else { Target::Logical(o) });
                out.iter().map(|&v| [v as f64, 0.0]).collect()
            }
            RType::Complex => {
                let mut out = vec![[f64::from_bits(1); 2]; n];
                run(Target::Complex(Out::new(&mut out)));
                out
            }
        }
    }

    #[test]
    fn decode_kernels_match_the_reference_for_every_dtype_shape_and_split() {
        let mut rng = Rng(0x5eed);
        for dtype in ALL {
            for shape in kernel_shapes() {
                let n: usize = shape.iter().product();
                let Some(nbytes) = dtype.bytes_for(n) else { continue };
                let bytes = rng.bytes(nbytes);
                let cm = reference_cm(&shape);
                let mut want = vec![[0.0; 2]; n];
                for (rm, &c) in cm.iter().enumerate() {
                    want[c] = ref_value(dtype, &bytes, rm);
                }
                let mut rts = vec![r_type(dtype)];
                if dtype != Dtype::C64 && r_type(dtype) != RType::Real {
                    rts.push(RType::Real);
                }
                let rows = n_rows(&shape);
                let align = if dtype.bits() % 8 == 0 { 1 } else { 8 };
                for rt in rts {
                    for (step, threaded) in [(rows.max(1), false), (align, false), (3 * align, true), (16, true)] {
                        let got = decode_blocks(dtype, rt, &bytes, &shape, step, threaded);
                        let flat = |v: &[[f64; 2]]| bits(&v.iter().flatten().copied().collect::<Vec<_>>());
                        // Integer and logical targets hold the same numbers.
                        assert_eq!(flat(&got), flat(&want), "{dtype} {shape:?} {rt:?} step {step}");
                    }
                }
            }
        }
    }

    /// The element `i` of `bytes` as each new target holds it, decoded one
    /// element at a time (the reference for the byte and 64-bit kernels).
    fn ref_word(dtype: Dtype, kind: Word, bytes: &[u8], i: usize) -> u64 {
        let w = dtype.bits() / 8;
        let word = |k: usize| bytes[i * w + k];
        match kind {
            Word::Byte => word(0) as u64,
            Word::Bits64 => u64::from_le_bytes(std::array::from_fn(word)),
            Word::Int64 => {
                let v = u64::from_le_bytes(std::array::from_fn(word));
                if dtype == Dtype::U64 && v > i64::MAX as u64 {
                    i64::MIN as u64
                } else {
                    v
                }
            }
        }
    }

    /// The targets that keep values whole: raw, integer64 and 64-bit words.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Word {
        Byte,
        Int64,
        Bits64,
    }

    /// As [`decode_blocks`], into a [`Word`] target; the values as u64 and
    /// the summed stats.
    fn decode_words(
        dtype: Dtype,
        kind: Word,
        bytes: &[u8],
        shape: &[usize],
        step: usize,
        threaded: bool,
    ) -> (Vec<u64>, DecodeStats) {
        let n: usize = shape.iter().product();
        let rows = n_rows(shape);
        let rl = row_len(shape);
        let ranges: Vec<(usize, usize)> = (0..rows.max(1)).step_by(step).map(|r| (r, (r + step).min(rows))).collect();
        let run = |target: Target<'_>| {
            let one = |(r0, r1): (usize, usize)| {
                let (b0, b1) = (dtype.bytes_for(r0 * rl).unwrap(), dtype.bytes_for(r1 * rl).unwrap());
                // SAFETY: each block decodes its own rows.
                unsafe { decode_rows(dtype, &bytes[b0..b1], shape, r0, r1, target) }.unwrap()
            };
            if threaded {
                std::thread::scope(|s| {
                    let hs: Vec<_> = ranges.iter().map(|&r| s.spawn(move || one(r))).collect();
                    hs.into_iter().fold(DecodeStats::default(), |a, h| a.merge(h.join().unwrap()))
                })
            } else {
                ranges.iter().fold(DecodeStats::default(), |a, &r| a.merge(one(r)))
            }
        };
        match kind {
            Word::Byte => {
                let mut out = vec![0xa5u8; n];
                let st = run(Target::Byte(Out::new(&mut out)));
                (out.iter().map(|&v| v as u64).collect(), st)
            }
            Word::Int64 => {
                let mut out = vec![7i64; n];
                let st = run(Target::Int64(Out::new(&mut out)));
                (out.iter().map(|&v| v as u64).collect(), st)
            }
            Word::Bits64 => {
                let mut out = vec![7u64; n];
                let st = run(Target::Bits64(Out::new(&mut out)));
                (out, st)
            }
        }
    }

    #[test]
    fn byte_and_64_bit_kernels_match_the_reference_for_every_shape_and_split() {
        let mut rng = Rng(0xb17e);
        let cases = [
            (Dtype::U8, Word::Byte),
            (Dtype::I64, Word::Int64),
            (Dtype::U64, Word::Int64),
            (Dtype::I64, Word::Bits64),
            (Dtype::U64, Word::Bits64),
        ];
        for (dtype, kind) in cases {
            for shape in kernel_shapes() {
                let n: usize = shape.iter().product();
                let mut bytes = rng.bytes(dtype.bytes_for(n).unwrap());
                // Plant the extremes: i64::MIN (integer64's NA), i64::MAX,
                // u64::MAX and 2^63 (above i64::MAX as U64).
                if dtype.bits() == 64 {
                    for (k, v) in [i64::MIN as u64, i64::MAX as u64, u64::MAX, 1 << 63].into_iter().enumerate() {
                        if k * 3 < n {
                            bytes[k * 3 * 8..k * 3 * 8 + 8].copy_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                let cm = reference_cm(&shape);
                let mut want = vec![0u64; n];
                for (rm, &c) in cm.iter().enumerate() {
                    want[c] = ref_word(dtype, kind, &bytes, rm);
                }
                let want_na = match kind {
                    Word::Int64 => want.iter().filter(|&&v| v == i64::MIN as u64).count(),
                    _ => 0,
                };
                let rows = n_rows(&shape);
                for (step, threaded) in [(rows.max(1), false), (1, false), (3, true), (16, true)] {
                    let (got, stats) = decode_words(dtype, kind, &bytes, &shape, step, threaded);
                    assert_eq!(got, want, "{dtype} {kind:?} {shape:?} step {step}");
                    assert_eq!(stats, DecodeStats { na: want_na, ..DecodeStats::default() }, "{dtype} {kind:?} {shape:?}");
                }
            }
        }
    }

    #[test]
    fn integer64_marks_what_it_cannot_hold_as_na() {
        let vals: [u64; 5] = [0, i64::MAX as u64, 1 << 63, u64::MAX, 5];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0i64; 5];
        let st = decode(Dtype::U64, &bytes, &[5], 0, 5, Dst::Int64(&mut out)).unwrap();
        assert_eq!(out, [0, i64::MAX, i64::MIN, i64::MIN, 5]);
        assert_eq!(st.na, 2);
        // As I64 the same bits are -2^63 (integer64's NA) and -1.
        let st = decode(Dtype::I64, &bytes, &[5], 0, 5, Dst::Int64(&mut out)).unwrap();
        assert_eq!(out, [0, i64::MAX, i64::MIN, -1, 5]);
        assert_eq!(st.na, 1);
        let mut words = [0u64; 5];
        assert_eq!(decode(Dtype::U64, &bytes, &[5], 0, 5, Dst::Bits64(&mut words)).unwrap(), DecodeStats::default());
        assert_eq!(words, vals);
    }

    #[test]
    fn byte_and_64_bit_targets_refuse_other_dtypes_and_sizes() {
        let bytes = [1u8; 48];
        let mut raw = vec![9u8; 6];
        for d in [Dtype::I8, Dtype::Bool, Dtype::F8E4M3] {
            assert!(decode(d, &bytes, &[2, 3], 0, 2, Dst::Byte(&mut raw)).is_err(), "{d}");
        }
        assert!(decode(Dtype::U8, &bytes, &[2, 3], 0, 2, Dst::Byte(&mut raw[..5])).is_err());
        assert_eq!(raw, vec![9u8; 6]);
        let mut ints = vec![9i64; 6];
        let mut words = vec![9u64; 6];
        for d in [Dtype::F64, Dtype::U32, Dtype::C64, Dtype::U8] {
            assert!(decode(d, &bytes, &[2, 3], 0, 2, Dst::Int64(&mut ints)).is_err(), "{d}");
            assert!(decode(d, &bytes, &[2, 3], 0, 2, Dst::Bits64(&mut words)).is_err(), "{d}");
        }
        assert!(decode(Dtype::I64, &bytes[..40], &[2, 3], 0, 2, Dst::Int64(&mut ints)).is_err());
        assert!(decode(Dtype::I64, &bytes, &[2, 3], 0, 2, Dst::Bits64(&mut words[..5])).is_err());
        assert_eq!(ints, vec![9i64; 6]);
        assert_eq!(words, vec![9u64; 6]);
    }

    #[test]
    fn integer64_values_are_written_exactly() {
        let vals = [0, -1, (1 << 53) + 1, i64::MAX, -i64::MAX, 42];
        let bytes = encode_all(Dtype::I64, Src::Int64(&vals), &[2, 3]).unwrap();
        let mut back = [0i64; 6];
        decode(Dtype::I64, &bytes, &[2, 3], 0, 2, Dst::Int64(&mut back)).unwrap();
        assert_eq!(back, vals);
        // Row-major on disk: R's x[1, 2] is element 1 in the file.
        assert_eq!(bytes[8..16], ((1i64 << 53) + 1).to_le_bytes());
        // U64 takes the non-negative ones; NA is refused everywhere.
        let pos = [0, (1 << 53) + 1, i64::MAX];
        assert_eq!(encode_all(Dtype::U64, Src::Int64(&pos), &[3]).unwrap(), encode_all(Dtype::I64, Src::Int64(&pos), &[3]).unwrap());
        let EncodeError::Value(bad) = encode_all(Dtype::U64, Src::Int64(&vals), &[6]).unwrap_err() else { panic!() };
        assert_eq!((bad.index, bad.value), (1, Num::I(-1)));
        for d in [Dtype::I64, Dtype::U64, Dtype::F64, Dtype::I32] {
            let EncodeError::Value(bad) = encode_all(d, Src::Int64(&[1, i64::MIN]), &[2]).unwrap_err() else { panic!() };
            assert_eq!((bad.index, bad.value), (1, Num::Na), "{d}");
        }
        // Other dtypes take the values they hold: whole numbers in range,
        // floats rounded to nearest.
        assert_eq!(encode_all(Dtype::I8, Src::Int64(&[-128, 127]), &[2]).unwrap(), vec![0x80, 0x7f]);
        assert!(encode_all(Dtype::I8, Src::Int64(&[128]), &[1]).is_err());
        assert_eq!(encode_all(Dtype::F64, Src::Int64(&[(1 << 53) + 1]), &[1]).unwrap(), (9007199254740992.0f64).to_le_bytes());
    }

    #[test]
    fn decode_counts_inexact_and_int_min_across_blocks() {
        let shape = [20usize, 17];
        let n = 340;
        let mut vals: Vec<i64> = (0..n as i64).collect();
        vals[3] = (1 << 60) + 1;
        vals[300] = -(1 << 55) - 1;
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = vec![0.0; n];
        let mut total = 0;
        for r0 in (0..20).step_by(7) {
            let r1 = (r0 + 7).min(20);
            total += decode(Dtype::I64, &bytes[r0 * 17 * 8..r1 * 17 * 8], &shape, r0, r1, Dst::Real(&mut out)).unwrap().inexact;
        }
        assert_eq!(total, 2);
        let ints: Vec<u8> =
            (0..n as i32).map(|i| if i % 50 == 0 { i32::MIN } else { i }).flat_map(|v| v.to_le_bytes()).collect();
        let mut out = vec![0; n];
        assert_eq!(decode(Dtype::I32, &ints, &shape, 0, 20, Dst::Integer(&mut out)).unwrap().int_min, 7);
        assert_eq!(count_i32_min(&ints), 7);
    }

    /// Values that every dtype meets: small integers, fractions, extremes,
    /// infinities, NaN and R's NA.
    fn test_reals(rng: &mut Rng, n: usize) -> Vec<f64> {
        let special = [
            0.0,
            -0.0,
            1.0,
            -3.0,
            0.5,
            255.0,
            256.0,
            -129.0,
            65504.0,
            1e39,
            3.4e38,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_07a2),
            9223372036854775808.0,
            1e-40,
        ];
        (0..n)
            .map(|_| {
                let r = rng.next();
                if r % 4 == 0 {
                    special[(r >> 8) as usize % special.len()]
                } else {
                    ((r >> 16) % 200) as f64 - 100.0
                }
            })
            .collect()
    }

    fn ref_encode(dtype: Dtype, src: Src<'_>, shape: &[usize]) -> std::result::Result<Vec<u8>, EncodeError> {
        let n: usize = shape.iter().product();
        let mut out = vec![0u8; dtype.bytes_for(n).unwrap()];
        let cm = reference_cm(shape);
        let bits = dtype.bits();
        let mut first_bad: Option<usize> = None;
        for (rm, &c) in cm.iter().enumerate() {
            let mut one = [0u8; 8];
            if encode_generic(dtype, src.slice(c, 1), &[1], 0, 1, &mut one, Rounding::Nearest) {
                if bits % 8 == 0 {
                    let w = bits / 8;
                    out[rm * w..rm * w + w].copy_from_slice(&one[..w]);
                } else {
                    let pos = rm * bits;
                    let word = (one[0] as u32) << (pos % 8);
                    out[pos / 8] |= word as u8;
                    if word > 0xff {
                        out[pos / 8 + 1] |= (word >> 8) as u8;
                    }
                }
            } else if first_bad.is_none_or(|b| c < b) {
                first_bad = Some(c);
            }
        }
        match first_bad {
            Some(index) => Err(EncodeError::Value(BadValue { index, value: get(src, index) })),
            None => Ok(out),
        }
    }

    fn encode_blocks(dtype: Dtype, src: Src<'_>, shape: &[usize], step: usize) -> std::result::Result<Vec<u8>, EncodeError> {
        let n: usize = shape.iter().product();
        let mut out = vec![0u8; dtype.bytes_for(n).unwrap()];
        let rows = n_rows(shape);
        let rl = row_len(shape);
        let mut parts = Vec::new();
        let mut rest = &mut out[..];
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + step).min(rows);
            let len = dtype.bytes_for((r1 - r0) * rl).unwrap();
            let (head, tail) = rest.split_at_mut(len);
            parts.push((r0, r1, head));
            rest = tail;
            r0 = r1;
        }
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> =
                parts.into_iter().map(|(a, b, o)| s.spawn(move || encode(dtype, src, shape, a, b, o))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        if shape.is_empty() {
            encode(dtype, src, shape, 0, 1, &mut out)?;
        }
        match results.into_iter().find_map(|r| r.err()) {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    #[test]
    fn encode_kernels_match_the_reference_for_every_dtype_shape_and_split() {
        let mut rng = Rng(0xc0ffee);
        for dtype in ALL {
            for shape in kernel_shapes() {
                let n: usize = shape.iter().product();
                if dtype.bytes_for(n).is_none() {
                    continue;
                }
                let reals = test_reals(&mut rng, n);
                // Mostly valid values, so some tensors encode without error.
                let clean: Vec<f64> =
                    reals.iter().map(|&x| if x.is_finite() { (x.abs() % 4.0).floor() } else { 1.0 }).collect();
                let ints: Vec<i32> = (0..n)
                    .map(|_| match rng.next() % 10 {
                        0 => i32::MIN,
                        1 => 300,
                        _ => (rng.next() % 3) as i32,
                    })
                    .collect();
                let clean_ints: Vec<i32> = ints.iter().map(|&v| v.clamp(0, 1)).collect();
                let raws = rng.bytes(n);
                let cplx: Vec<[f64; 2]> = reals.iter().zip(clean.iter()).map(|(&a, &b)| [b, a]).collect();
                let int64s: Vec<i64> = (0..n)
                    .map(|_| match rng.next() % 8 {
                        0 => i64::MIN,
                        1 => i64::MAX,
                        2 => -((rng.next() >> 1) as i64),
                        3 => (1 << 53) + 1,
                        _ => (rng.next() % 3) as i64,
                    })
                    .collect();
                let clean_int64s: Vec<i64> = int64s.iter().map(|&v| v.clamp(0, 1)).collect();
                let srcs = [
                    Src::Real(&reals),
                    Src::Real(&clean),
                    Src::Integer(&ints),
                    Src::Integer(&clean_ints),
                    Src::Logical(&clean_ints),
                    Src::Logical(&ints),
                    Src::Raw(&raws),
                    Src::Complex(&cplx),
                    Src::Int64(&int64s),
                    Src::Int64(&clean_int64s),
                ];
                let rows = n_rows(&shape);
                let align = if dtype.bits() % 8 == 0 { 1 } else { 8 };
                for src in srcs {
                    if matches!(src, Src::Complex(_)) && dtype != Dtype::C64 {
                        continue;
                    }
                    // NaN != NaN: compare errors by index and printed value.
                    let key = |r: std::result::Result<Vec<u8>, EncodeError>| {
                        r.map_err(|e| match e {
                            EncodeError::Value(b) => (b.index, format!("{:?}", b.value)),
                            EncodeError::Mismatch => (usize::MAX, "mismatch".to_string()),
                        })
                    };
                    let want = key(ref_encode(dtype, src, &shape));
                    for step in [rows.max(1), align, 3 * align, 16] {
                        let got = key(encode_blocks(dtype, src, &shape, step));
                        assert_eq!(got, want, "{dtype} {shape:?} step {step}");
                    }
                }
            }
        }
    }
}
