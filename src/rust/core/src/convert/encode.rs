//! Encoding: R's column-major vectors into a tensor's row-major bytes,
//! fused with the dtype conversion, and the values that can't be encoded.

use super::index::{for_each_index, is_trivial_layout, n_rows, row_len, Middle};
use super::transpose::etranspose;
use crate::dtype::Dtype;
use crate::floats::{self, decode_e8m0, encode_e8m0, narrow_f32};

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
pub(super) fn get(src: Src<'_>, cm: usize) -> Num {
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
    let need = (row1.saturating_sub(row0))
        .checked_mul(row_len(shape))
        .and_then(|n| dtype.bytes_for(n));
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
            Some(c) => k!(2, x, |v| c
                .encode(v)
                .filter(|&b| same(c.decode(b), v))
                .map(|b| (b as u16).to_le_bytes())),
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
        (Dtype::F64, Src::Integer(x)) => k!(8, x, |v| (v != i32::MIN)
            .then_some((v as f64).to_le_bytes())),
        (Dtype::I32, Src::Integer(x)) => k!(4, x, |v| (v != i32::MIN).then_some(v.to_le_bytes())),
        (Dtype::I64, Src::Integer(x)) => k!(8, x, |v| (v != i32::MIN)
            .then_some((v as i64).to_le_bytes())),
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
        (!ok).then(|| BadValue {
            index: i,
            value: get(src, i),
        })
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
        ok &= etranspose::<W, S, _>(
            x,
            cm_base + row0,
            cm_last,
            row1 - row0,
            last,
            out,
            rm_base,
            rl,
            &mut conv,
        );
        if !mid.advance() {
            return ok;
        }
    }
}

/// The element-by-element encoder for every dtype and R type: the
/// reference the fast kernels are tested against, and the path for the
/// rarer pairs. Returns whether every value could be encoded (those that
/// couldn't are left as zero bytes).
pub(super) fn encode_generic(
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
    let keep = |code: Option<u32>, x: f64, decode: &dyn Fn(u32) -> f64| {
        code.filter(|&b| !exact || same(decode(b), x))
    };
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
            let fits = if exact {
                same(f as f64, x)
            } else {
                f.is_finite() || !x.is_finite()
            };
            fits.then(|| f.to_le_bytes())
        })),
        Dtype::F16 | Dtype::BF16 => {
            let Some(c) = floats::codec(dtype) else {
                return false;
            };
            run!(2, |v| v
                .real_narrow()
                .and_then(|x| keep(c.encode(x), x, &|b| c.decode(b)))
                .map(|b| (b as u16).to_le_bytes()))
        }
        Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E4M3Fnuz | Dtype::F8E5M2Fnuz => {
            let Some(c) = floats::codec(dtype) else {
                return false;
            };
            run!(1, |v| v
                .real_narrow()
                .and_then(|x| keep(c.encode(x), x, &|b| c.decode(b)))
                .map(|b| [b as u8]))
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
                match v
                    .real_narrow()
                    .and_then(|x| keep(c.encode(x), x, &|b| c.decode(b)))
                {
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
        Dtype::Bool => run!(1, |v| v
            .int()
            .filter(|i| *i == 0 || *i == 1)
            .map(|i| [i as u8])),
        Dtype::C64 => run!(8, |v| {
            let (re, im) = match v {
                Num::C(re, im) => (re, im),
                other => match other.real_narrow() {
                    Some(x) => (x, 0.0),
                    None => (f64::NAN, f64::NAN),
                },
            };
            let fits = |x: f64, f: f32| {
                if exact {
                    same(f as f64, x)
                } else {
                    f.is_finite() || !x.is_finite()
                }
            };
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
