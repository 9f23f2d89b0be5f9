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

use crate::dtype::Dtype;
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
    let middle = &shape[1..n - 1];
    // Row-major and column-major strides of the middle axes.
    let mut rm_strides = vec![0usize; middle.len()];
    let mut cm_strides = vec![0usize; middle.len()];
    {
        let mut s = last;
        for k in (0..middle.len()).rev() {
            rm_strides[k] = s;
            s *= middle[k];
        }
        let mut s = shape[0];
        for k in 0..middle.len() {
            cm_strides[k] = s;
            s *= middle[k];
        }
    }
    let mut idx = vec![0usize; middle.len()];
    let (mut rm_base, mut cm_base) = (0usize, 0usize);
    loop {
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
        // Odometer over the middle axes, last fastest as in row-major order.
        let mut k = middle.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            idx[k] += 1;
            rm_base += rm_strides[k];
            cm_base += cm_strides[k];
            if idx[k] < middle[k] {
                break;
            }
            rm_base -= rm_strides[k] * middle[k];
            cm_base -= cm_strides[k] * middle[k];
            idx[k] = 0;
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
}

/// What decoding noticed about the values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// 64-bit integers whose magnitude exceeds 2^53 (not exact as double).
    pub inexact: usize,
    /// I32 values equal to R's `NA_integer_` bit pattern.
    pub int_min: usize,
}

#[inline(always)]
fn le<const W: usize>(src: &[u8], i: usize) -> [u8; W] {
    let mut b = [0u8; W];
    b.copy_from_slice(&src[i * W..i * W + W]);
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
/// The caller guarantees `src` holds the rows, `dst` holds the tensor, and
/// `dst`'s type is the one [`r_type`] gives (or `Real` for any numeric dtype).
pub fn decode(dtype: Dtype, src: &[u8], shape: &[usize], row0: usize, row1: usize, dst: Dst<'_>) -> DecodeStats {
    let mut stats = DecodeStats::default();
    macro_rules! run {
        ($out:expr, |$s:ident, $i:ident| $e:expr) => {{
            let out = $out;
            let $s = src;
            for_each_index(shape, row0, row1, |$i, cm| out[cm] = $e);
        }};
    }
    match dst {
        Dst::Real(out) => match dtype {
            Dtype::F64 => run!(out, |s, i| f64::from_le_bytes(le(s, i))),
            Dtype::F32 => run!(out, |s, i| widen_f32(u32::from_le_bytes(le(s, i)))),
            Dtype::F16 => run!(out, |s, i| decode_f16(u16::from_le_bytes(le(s, i)))),
            Dtype::BF16 => run!(out, |s, i| decode_bf16(u16::from_le_bytes(le(s, i)))),
            Dtype::F8E8M0 => run!(out, |s, i| decode_e8m0(s[i])),
            Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E4M3Fnuz | Dtype::F8E5M2Fnuz => {
                let Some(c) = floats::codec(dtype) else { return stats };
                run!(out, |s, i| c.decode(s[i] as u32))
            }
            Dtype::F6E2M3 | Dtype::F6E3M2 | Dtype::F4 => {
                let Some(c) = floats::codec(dtype) else { return stats };
                let bits = dtype.bits();
                run!(out, |s, i| c.decode(packed(s, i, bits)))
            }
            Dtype::I64 => {
                let mut inexact = 0;
                run!(out, |s, i| {
                    let v = i64::from_le_bytes(le(s, i));
                    inexact += (v.unsigned_abs() > EXACT_LIMIT) as usize;
                    v as f64
                });
                stats.inexact = inexact;
            }
            Dtype::U64 => {
                let mut inexact = 0;
                run!(out, |s, i| {
                    let v = u64::from_le_bytes(le(s, i));
                    inexact += (v > EXACT_LIMIT) as usize;
                    v as f64
                });
                stats.inexact = inexact;
            }
            Dtype::U32 => run!(out, |s, i| u32::from_le_bytes(le(s, i)) as f64),
            Dtype::I32 => run!(out, |s, i| i32::from_le_bytes(le(s, i)) as f64),
            Dtype::I16 => run!(out, |s, i| i16::from_le_bytes(le(s, i)) as f64),
            Dtype::U16 => run!(out, |s, i| u16::from_le_bytes(le(s, i)) as f64),
            Dtype::I8 => run!(out, |s, i| s[i] as i8 as f64),
            Dtype::U8 => run!(out, |s, i| s[i] as f64),
            Dtype::Bool => run!(out, |s, i| (s[i] != 0) as i32 as f64),
            // C64 is always read as complex.
            Dtype::C64 => {}
        },
        Dst::Integer(out) => match dtype {
            Dtype::I32 => {
                let mut int_min = 0;
                run!(out, |s, i| {
                    let v = i32::from_le_bytes(le(s, i));
                    int_min += (v == i32::MIN) as usize;
                    v
                });
                stats.int_min = int_min;
            }
            Dtype::I16 => run!(out, |s, i| i16::from_le_bytes(le(s, i)) as i32),
            Dtype::U16 => run!(out, |s, i| u16::from_le_bytes(le(s, i)) as i32),
            Dtype::I8 => run!(out, |s, i| s[i] as i8 as i32),
            Dtype::U8 => run!(out, |s, i| s[i] as i32),
            Dtype::Bool => run!(out, |s, i| (s[i] != 0) as i32),
            _ => {}
        },
        Dst::Logical(out) => run!(out, |s, i| (s[i] != 0) as i32),
        Dst::Complex(out) => {
            run!(out, |s, i| [widen_f32(u32::from_le_bytes(le(s, 2 * i))), widen_f32(u32::from_le_bytes(le(s, 2 * i + 1)))])
        }
    }
    stats
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
}

impl Src<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Src::Real(x) => x.len(),
            Src::Integer(x) | Src::Logical(x) => x.len(),
            Src::Raw(x) => x.len(),
            Src::Complex(x) => x.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One element of an R vector, as the encoders see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    /// A double (NaN and NA included).
    F(f64),
    /// An integer, logical or raw value.
    I(i64),
    /// A complex value.
    C(f64, f64),
    /// `NA` of an integer or logical vector.
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

#[inline(always)]
fn get(src: Src<'_>, cm: usize) -> Num {
    match src {
        Src::Real(x) => Num::F(x[cm]),
        Src::Integer(x) | Src::Logical(x) => {
            let v = x[cm];
            if v == i32::MIN { Num::Na } else { Num::I(v as i64) }
        }
        Src::Raw(x) => Num::I(x[cm] as i64),
        Src::Complex(x) => Num::C(x[cm][0], x[cm][1]),
    }
}

/// The first element that could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncodeError {
    /// Its column-major index in the whole tensor (0-based).
    pub index: usize,
    /// Its value.
    pub value: Num,
}

#[inline(always)]
fn int_in<T: TryFrom<i128>>(v: Num) -> Option<T> {
    v.int().and_then(|i| T::try_from(i).ok())
}

/// Like [`int_in`] for the 64-bit types, whose largest value has no double:
/// the double just above it (2^63 or 2^64, what reading that largest value
/// gives) saturates to it, so loaded extremes can be saved back.
#[inline(always)]
fn int64_in<T: TryFrom<i128> + Copy>(v: Num, max: T, max_plus_one: f64) -> Option<T> {
    match v {
        Num::F(x) if x == max_plus_one => Some(max),
        _ => int_in(v),
    }
}

/// Encodes outer rows `[row0, row1)` of a tensor whose values are `src`
/// (the whole tensor, column-major) into `out`, the row-major bytes of
/// exactly those rows. For sub-byte dtypes `out` must start zeroed.
///
/// Floats round to nearest even; integers must be whole and in range;
/// BOOL takes 0 and 1; NA of integer and logical vectors is rejected.
pub fn encode(
    dtype: Dtype,
    src: Src<'_>,
    shape: &[usize],
    row0: usize,
    row1: usize,
    out: &mut [u8],
) -> Result<(), EncodeError> {
    let mut bad: Option<EncodeError> = None;
    macro_rules! run {
        ($w:literal, |$v:ident| $e:expr) => {{
            for_each_index(shape, row0, row1, |rm, cm| {
                let $v = get(src, cm);
                let enc: Option<[u8; $w]> = $e;
                match enc {
                    Some(b) => out[rm * $w..rm * $w + $w].copy_from_slice(&b),
                    None => {
                        if bad.is_none() {
                            bad = Some(EncodeError { index: cm, value: $v });
                        }
                    }
                }
            });
        }};
    }
    match dtype {
        Dtype::F64 => run!(8, |v| v.real().map(f64::to_le_bytes)),
        Dtype::F32 => run!(4, |v| v.real().and_then(|x| {
            let f = narrow_f32(x);
            (f.is_finite() || !x.is_finite()).then(|| f.to_le_bytes())
        })),
        Dtype::F16 | Dtype::BF16 => {
            let Some(c) = floats::codec(dtype) else { return Ok(()) };
            run!(2, |v| v.real().and_then(|x| c.encode(x)).map(|b| (b as u16).to_le_bytes()))
        }
        Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E4M3Fnuz | Dtype::F8E5M2Fnuz => {
            let Some(c) = floats::codec(dtype) else { return Ok(()) };
            run!(1, |v| v.real().and_then(|x| c.encode(x)).map(|b| [b as u8]))
        }
        Dtype::F8E8M0 => run!(1, |v| v.real().and_then(encode_e8m0).map(|b| [b])),
        Dtype::F6E2M3 | Dtype::F6E3M2 | Dtype::F4 => {
            let Some(c) = floats::codec(dtype) else { return Ok(()) };
            let bits = dtype.bits();
            for_each_index(shape, row0, row1, |rm, cm| {
                let v = get(src, cm);
                match v.real().and_then(|x| c.encode(x)) {
                    Some(code) => {
                        let pos = rm * bits;
                        let word = code << (pos % 8);
                        out[pos / 8] |= word as u8;
                        if word > 0xff {
                            out[pos / 8 + 1] |= (word >> 8) as u8;
                        }
                    }
                    None => {
                        if bad.is_none() {
                            bad = Some(EncodeError { index: cm, value: v });
                        }
                    }
                }
            });
        }
        Dtype::I64 => run!(8, |v| int64_in(v, i64::MAX, 9223372036854775808.0).map(i64::to_le_bytes)),
        Dtype::U64 => run!(8, |v| int64_in(v, u64::MAX, 18446744073709551616.0).map(u64::to_le_bytes)),
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
                other => match other.real() {
                    Some(x) => (x, 0.0),
                    None => (f64::NAN, f64::NAN),
                },
            };
            let fits = |x: f64, f: f32| f.is_finite() || !x.is_finite();
            let (fr, fi) = (narrow_f32(re), narrow_f32(im));
            (v != Num::Na && fits(re, fr) && fits(im, fi)).then(|| {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&fr.to_le_bytes());
                b[4..].copy_from_slice(&fi.to_le_bytes());
                b
            })
        }),
    }
    match bad {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
            decode(Dtype::F64, &[], &shape, 0, rows, Dst::Real(&mut out));
            let mut ints: Vec<i32> = Vec::new();
            decode(Dtype::U8, &[], &shape, 0, rows, Dst::Integer(&mut ints));
            encode(Dtype::F64, Src::Real(&[]), &shape, 0, rows, &mut []).unwrap();
        }
        // An empty row range visits nothing either.
        for_each_index(&[2, 3, 4], 1, 1, |rm, cm| panic!("visited ({rm}, {cm})"));
    }

    fn encode_all(dtype: Dtype, src: Src<'_>, shape: &[usize]) -> Result<Vec<u8>, EncodeError> {
        let n: usize = shape.iter().product();
        let mut out = vec![0u8; dtype.bytes_for(n).unwrap()];
        encode(dtype, src, shape, 0, n_rows(shape), &mut out)?;
        Ok(out)
    }

    fn decode_real(dtype: Dtype, bytes: &[u8], shape: &[usize]) -> Vec<f64> {
        let n: usize = shape.iter().product();
        let mut out = vec![0.0; n];
        decode(dtype, bytes, shape, 0, n_rows(shape), Dst::Real(&mut out));
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
        decode(Dtype::U8, &bytes, &[2, 3], 0, 2, Dst::Integer(&mut back));
        assert_eq!(back, vec![1, 2, 3, 4, 5, 6]);
        // F4 packs the first element in the low nibble.
        let bytes = encode_all(Dtype::F4, Src::Real(&[1.0, 6.0]), &[2]).unwrap();
        assert_eq!(bytes, vec![0x72]);
    }

    #[test]
    fn rejects_unrepresentable_values() {
        let e = encode_all(Dtype::I8, Src::Real(&[1.0, 128.0]), &[2]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(encode_all(Dtype::I32, Src::Real(&[1.5]), &[1]).is_err());
        assert!(encode_all(Dtype::I32, Src::Real(&[f64::NAN]), &[1]).is_err());
        assert!(encode_all(Dtype::I32, Src::Integer(&[i32::MIN]), &[1]).is_err());
        assert!(encode_all(Dtype::F64, Src::Logical(&[i32::MIN]), &[1]).is_err());
        assert!(encode_all(Dtype::Bool, Src::Integer(&[2]), &[1]).is_err());
        assert!(encode_all(Dtype::F32, Src::Real(&[1e39]), &[1]).is_err());
        assert!(encode_all(Dtype::F32, Src::Real(&[f64::INFINITY]), &[1]).is_ok());
        // The double nearest i64::MAX (2^63) saturates; anything beyond is out of range.
        assert_eq!(
            encode_all(Dtype::I64, Src::Real(&[9223372036854775808.0]), &[1]).unwrap(),
            i64::MAX.to_le_bytes()
        );
        assert!(encode_all(Dtype::I64, Src::Real(&[9223372036854777856.0]), &[1]).is_err());
        assert_eq!(
            encode_all(Dtype::U64, Src::Real(&[18446744073709551616.0]), &[1]).unwrap(),
            u64::MAX.to_le_bytes()
        );
        assert!(encode_all(Dtype::I64, Src::Real(&[-9223372036854775808.0]), &[1]).is_ok());
        assert!(encode_all(Dtype::C64, Src::Complex(&[[1e300, 0.0]]), &[1]).is_err());
        assert!(encode_all(Dtype::F8E4M3, Src::Real(&[1000.0]), &[1]).is_err());
    }

    #[test]
    fn integers_and_complex_round_trip() {
        let ints = [0, 1, -5, i32::MAX, -i32::MAX];
        let bytes = encode_all(Dtype::I32, Src::Integer(&ints), &[5]).unwrap();
        let mut back = vec![0; 5];
        decode(Dtype::I32, &bytes, &[5], 0, 5, Dst::Integer(&mut back));
        assert_eq!(back, ints);
        let bytes = encode_all(Dtype::Bool, Src::Logical(&[1, 0, 1]), &[3]).unwrap();
        assert_eq!(bytes, vec![1, 0, 1]);
        let z = [[1.5, -2.0], [0.0, 3.25]];
        let bytes = encode_all(Dtype::C64, Src::Complex(&z), &[2]).unwrap();
        let mut back = vec![[0.0; 2]; 2];
        decode(Dtype::C64, &bytes, &[2], 0, 2, Dst::Complex(&mut back));
        assert_eq!(back, z);
        let big = (1u64 << 60).to_le_bytes();
        let mut out = [0.0];
        let stats = decode(Dtype::U64, &big, &[1], 0, 1, Dst::Real(&mut out));
        assert_eq!(stats.inexact, 1);
        let min = i32::MIN.to_le_bytes();
        let mut out = [0];
        assert_eq!(decode(Dtype::I32, &min, &[1], 0, 1, Dst::Integer(&mut out)).int_min, 1);
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
        decode(Dtype::F6E2M3, &whole[..rb], &shape, 0, 4, Dst::Real(&mut out));
        decode(Dtype::F6E2M3, &whole[rb..], &shape, 4, 8, Dst::Real(&mut out));
        assert_eq!(out, vals);
    }
}
