//! Stored bytes of one dtype written as another: a tensor handed over as
//! bytes (a framework's tensor, or a raw vector with a `"dtype"`) and
//! saved in another dtype is decoded element by element and encoded by the
//! value kernels, with the rules R vectors follow: floats rounded to
//! nearest (ties to even), integers exact, and a value the dtype can't hold
//! an error, never clamped or wrapped.

use crate::convert::{encode_with, round_to_odd, BadValue, EncodeError, Num, Rounding, Src};
use crate::dtype::Dtype;
use crate::floats;

/// The fewest elements that fill whole bytes in both `from` and `to`
/// (4 for F6, 2 for F4, else 1): the unit in which bytes are recoded.
pub fn group(from: Dtype, to: Dtype) -> usize {
    (1..8)
        .find(|n| n * from.bits() % 8 == 0 && n * to.bits() % 8 == 0)
        .unwrap_or(8)
}

/// Whether `recode` can write `from` as `to`: any pair of real dtypes, and
/// complex only as itself.
pub fn supported(from: Dtype, to: Dtype) -> bool {
    from == to || (from != Dtype::C64)
}

/// Why [`recode`] failed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RecodeError {
    /// A value `to` can't hold; its index counts elements of the tensor in
    /// the order of its bytes (row-major).
    Value(BadValue),
    /// The arguments don't fit together (sizes, a complex source): a
    /// caller's bug.
    Mismatch,
}

/// Bits `[i * bits, (i + 1) * bits)` of `src`, least significant first, as
/// the sub-byte dtypes pack them.
fn packed(src: &[u8], i: usize, bits: usize) -> u32 {
    let pos = i * bits;
    let lo = src[pos / 8] as u32;
    let hi = src.get(pos / 8 + 1).copied().unwrap_or(0) as u32;
    ((lo | (hi << 8)) >> (pos % 8)) & ((1 << bits) - 1)
}

/// Element `i` of `src` (a float dtype), exactly.
fn float_at(dtype: Dtype, src: &[u8], i: usize) -> f64 {
    let le = |w: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..w].copy_from_slice(&src[i * w..i * w + w]);
        u64::from_le_bytes(b)
    };
    match dtype {
        Dtype::F64 => f64::from_bits(le(8)),
        Dtype::F32 => floats::widen_f32(le(4) as u32),
        Dtype::F16 => floats::decode_f16(le(2) as u16),
        Dtype::BF16 => floats::decode_bf16(le(2) as u16),
        Dtype::F8E8M0 => floats::decode_e8m0(src[i]),
        d => match floats::codec(d) {
            Some(c) if d.bits() < 8 => c.decode(packed(src, i, d.bits())),
            Some(c) => c.decode(src[i] as u32),
            None => f64::NAN,
        },
    }
}

/// Element `i` of `src` (an integer dtype or BOOL).
fn int_at(dtype: Dtype, src: &[u8], i: usize) -> i128 {
    let w = dtype.bits() / 8;
    let mut b = [0u8; 8];
    b[..w].copy_from_slice(&src[i * w..i * w + w]);
    let u = u64::from_le_bytes(b);
    match dtype {
        Dtype::I8 => u as u8 as i8 as i128,
        Dtype::I16 => u as u16 as i16 as i128,
        Dtype::I32 => u as u32 as i32 as i128,
        Dtype::I64 => u as i64 as i128,
        _ => u as i128,
    }
}

/// Integer `v` as a double to be encoded as `to`: rounded to nearest for
/// F64; for narrower dtypes rounded to odd beyond 2^53, so that the second
/// rounding (to at most 24 bits of precision) is the only one that counts.
fn int_to_f64(v: i128, to: Dtype) -> f64 {
    if to == Dtype::F64 || v.unsigned_abs() <= 1 << 53 {
        v as f64
    } else {
        round_to_odd(v)
    }
}

/// A value as the messages show it.
fn num_of(v: i128) -> Num {
    match i64::try_from(v) {
        Ok(i) => Num::I(i),
        Err(_) => Num::F(v as f64),
    }
}

/// F32 to BF16, the conversion of "save the model in bfloat16", on the
/// bits: rounded to nearest, ties to even, as the general path rounds.
/// Returns `false`, leaving `out` to be written again, when `src` holds a
/// NaN or a finite value that rounds past BF16's largest: the general path
/// encodes NaN as the value kernels do and refuses the other.
fn f32_to_bf16(src: &[u8], out: &mut [u8]) -> bool {
    /// Elements converted at once. Each step is its own loop over
    /// fixed-size arrays (bytes to words, round, words to bytes), with the
    /// check folded into one flag tested at the end, so that each
    /// vectorizes: 0.77 ns an element against 1.2 for one loop doing all
    /// three with an exit per group.
    const LANES: usize = 16;
    fn one(b: u32) -> (u16, u32) {
        // Adding half an ulp of BF16 (less one, plus the kept bit's
        // parity, for ties to even) carries into the kept bits exactly when
        // the dropped half rounds up.
        let r = b.wrapping_add(0x7fff + ((b >> 16) & 1));
        // Both sides are below 2^31, so a signed compare (which SSE2 has)
        // is the unsigned one.
        let nan = ((b & 0x7fff_ffff) as i32 > 0x7f80_0000) as u32;
        let overflow =
            ((r & 0x7f80_0000 == 0x7f80_0000) as u32) & ((b & 0x7f80_0000 != 0x7f80_0000) as u32);
        ((r >> 16) as u16, nan | overflow)
    }
    let mut other = 0u32;
    let mut s = src.chunks_exact(4 * LANES);
    let mut o = out.chunks_exact_mut(2 * LANES);
    for (s, o) in (&mut s).zip(&mut o) {
        let mut w = [0u32; LANES];
        for (w, c) in w.iter_mut().zip(s.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        let mut h = [0u16; LANES];
        for (h, &w) in h.iter_mut().zip(w.iter()) {
            let (v, bad) = one(w);
            *h = v;
            other |= bad;
        }
        for (c, h) in o.chunks_exact_mut(2).zip(h.iter()) {
            c.copy_from_slice(&h.to_le_bytes());
        }
    }
    for (s, o) in s
        .remainder()
        .chunks_exact(4)
        .zip(o.into_remainder().chunks_exact_mut(2))
    {
        let (v, bad) = one(u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
        other |= bad;
        o.copy_from_slice(&v.to_le_bytes());
    }
    other == 0
}

/// Writes `src`, whole elements of dtype `from` in the order of their
/// bytes, as dtype `to` into `out` (exactly their size, zeroed for the
/// sub-byte dtypes, whose encoders OR their bits in). `first` is the index
/// of the first element in its tensor, for errors.
pub fn recode(
    from: Dtype,
    to: Dtype,
    src: &[u8],
    first: usize,
    out: &mut [u8],
) -> Result<(), RecodeError> {
    let n = src.len() * 8 / from.bits();
    if from.bytes_for(n) != Some(src.len())
        || to.bytes_for(n) != Some(out.len())
        || !supported(from, to)
    {
        return Err(RecodeError::Mismatch);
    }
    if from == to {
        out.copy_from_slice(src);
        return Ok(());
    }
    let bad = |e: EncodeError| match e {
        EncodeError::Value(b) => RecodeError::Value(BadValue {
            index: first + b.index,
            value: b.value,
        }),
        EncodeError::Mismatch => RecodeError::Mismatch,
    };
    if from == Dtype::F32 && to == Dtype::BF16 && f32_to_bf16(src, out) {
        return Ok(());
    }
    if from.is_float() || !(to.is_integer() || to == Dtype::Bool) {
        // Through doubles: floats decode exactly, integers round once.
        let vals: Vec<f64> = if from.is_float() {
            (0..n).map(|i| float_at(from, src, i)).collect()
        } else {
            (0..n)
                .map(|i| int_to_f64(int_at(from, src, i), to))
                .collect()
        };
        return encode_with(to, Src::Real(&vals), &[n], 0, n, out, Rounding::Nearest).map_err(bad);
    }
    // Integer (or BOOL) to integer (or BOOL): exact, range checked.
    let w = to.bits() / 8;
    for i in 0..n {
        let v = int_at(from, src, i);
        let fits = match to {
            Dtype::Bool => v == 0 || v == 1,
            Dtype::U8 => u8::try_from(v).is_ok(),
            Dtype::I8 => i8::try_from(v).is_ok(),
            Dtype::U16 => u16::try_from(v).is_ok(),
            Dtype::I16 => i16::try_from(v).is_ok(),
            Dtype::U32 => u32::try_from(v).is_ok(),
            Dtype::I32 => i32::try_from(v).is_ok(),
            Dtype::U64 => u64::try_from(v).is_ok(),
            Dtype::I64 => i64::try_from(v).is_ok(),
            _ => false,
        };
        if !fits {
            return Err(RecodeError::Value(BadValue {
                index: first + i,
                value: num_of(v),
            }));
        }
        // Two's complement: the low `w` bytes of the value.
        out[i * w..i * w + w].copy_from_slice(&(v as u64).to_le_bytes()[..w]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::ALL;

    fn rec(from: Dtype, to: Dtype, src: &[u8]) -> Result<Vec<u8>, RecodeError> {
        let n = src.len() * 8 / from.bits();
        let mut out = vec![0u8; to.bytes_for(n).unwrap()];
        recode(from, to, src, 0, &mut out).map(|_| out)
    }

    #[test]
    fn f32_to_bf16_on_the_bits_is_the_general_path() {
        // Random patterns, ties and their neighbours, subnormals, the
        // largest values, infinities and NaN.
        let mut bits: Vec<u32> = vec![
            0,
            0x8000_0000,
            1,
            0x007f_ffff,
            0x0000_8000,
            0x0001_8000,
            0x3f80_8000,
            0x3f81_8000,
            0x3f80_7fff,
            0x3f80_8001,
            0x7f7f_7fff,
            0x7f7f_8000,
            0x7f7f_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0x7f80_0001,
            0xffc0_1234,
        ];
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bits.push(x);
        }
        for chunk in bits.chunks(7) {
            let src: Vec<u8> = chunk.iter().flat_map(|b| b.to_le_bytes()).collect();
            let vals: Vec<f64> = chunk.iter().map(|&b| floats::widen_f32(b)).collect();
            let mut want = vec![0u8; chunk.len() * 2];
            let general = encode_with(
                Dtype::BF16,
                Src::Real(&vals),
                &[vals.len()],
                0,
                vals.len(),
                &mut want,
                Rounding::Nearest,
            );
            let got = rec(Dtype::F32, Dtype::BF16, &src);
            match general {
                Ok(()) => assert_eq!(got.unwrap(), want, "{chunk:x?}"),
                Err(_) => assert!(got.is_err(), "{chunk:x?}"),
            }
        }
    }

    #[test]
    fn groups_fill_whole_bytes_on_both_sides() {
        for from in ALL {
            for to in ALL {
                let g = group(from, to);
                assert!(
                    from.bytes_for(g).is_some() && to.bytes_for(g).is_some(),
                    "{from} {to}"
                );
            }
        }
        assert_eq!(group(Dtype::F32, Dtype::F16), 1);
        assert_eq!(group(Dtype::F32, Dtype::F4), 2);
        assert_eq!(group(Dtype::F6E2M3, Dtype::F4), 4);
    }

    #[test]
    fn floats_round_to_nearest_and_out_of_range_is_an_error() {
        let src: Vec<u8> = [1.0f32, 1.0 + f32::EPSILON, 65504.0, -0.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let out = rec(Dtype::F32, Dtype::F16, &src).unwrap();
        let h: Vec<u16> = out
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(h, [0x3c00, 0x3c00, 0x7bff, 0x8000]);
        let src: Vec<u8> = [1.0f32, 1e6].iter().flat_map(|x| x.to_le_bytes()).collect();
        let RecodeError::Value(b) = rec(Dtype::F32, Dtype::F16, &src).unwrap_err() else {
            panic!()
        };
        assert_eq!((b.index, b.value), (1, Num::F(1e6)));
        // Fractions and NaN can't become integers.
        let src: Vec<u8> = [2.0f64, 2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert!(rec(Dtype::F64, Dtype::I32, &src).is_err());
        assert_eq!(
            rec(Dtype::F64, Dtype::I32, &src[..8]).unwrap(),
            2i32.to_le_bytes()
        );
    }

    #[test]
    fn integers_convert_exactly_or_fail() {
        let src: Vec<u8> = [i64::MIN, -1, i64::MAX]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        // -2^63 is a double; 2^63 - 1 rounds to 2^63 in F64 and F32.
        let out = rec(Dtype::I64, Dtype::F64, &src).unwrap();
        assert_eq!(out[..8], (-9223372036854775808.0f64).to_le_bytes());
        assert_eq!(out[16..], (9223372036854775808.0f64).to_le_bytes());
        assert!(rec(Dtype::I64, Dtype::I32, &src).is_err());
        let RecodeError::Value(b) = rec(Dtype::I64, Dtype::U64, &src).unwrap_err() else {
            panic!()
        };
        assert_eq!((b.index, b.value), (0, Num::I(i64::MIN)));
        assert_eq!(
            rec(Dtype::I64, Dtype::U64, &src[16..]).unwrap(),
            (i64::MAX as u64).to_le_bytes()
        );
        let src: Vec<u8> = [0u8, 1, 255].to_vec();
        assert_eq!(
            rec(Dtype::U8, Dtype::I16, &src).unwrap(),
            [0, 0, 1, 0, 255, 0]
        );
        assert!(rec(Dtype::U8, Dtype::Bool, &src).is_err());
        assert_eq!(rec(Dtype::U8, Dtype::Bool, &src[..2]).unwrap(), [0, 1]);
        assert!(rec(Dtype::U8, Dtype::I8, &src).is_err());
        // Rounded once: 2^60 + 2^36 + 1 as F32 (see convert's tests).
        let i = (1i64 << 60) + (1 << 36) + 1;
        assert_eq!(
            rec(Dtype::I64, Dtype::F32, &i.to_le_bytes()).unwrap(),
            (i as f32).to_le_bytes()
        );
    }

    #[test]
    fn sub_byte_dtypes_decode_and_encode_packed() {
        // F4 codes 1 (0.5) and 0xF (-6) in one byte, low nibble first.
        let out = rec(Dtype::F4, Dtype::F32, &[0xf1]).unwrap();
        assert_eq!(
            out,
            [0.5f32.to_le_bytes(), (-6.0f32).to_le_bytes()].concat()
        );
        assert_eq!(rec(Dtype::F32, Dtype::F4, &out).unwrap(), [0xf1]);
        let f6: Vec<u8> = rec(
            Dtype::F32,
            Dtype::F6E2M3,
            &[1.0f32, 2.0, -1.0, 7.5]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let back = rec(Dtype::F6E2M3, Dtype::F64, &f6).unwrap();
        let vals: Vec<f64> = back
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(vals, [1.0, 2.0, -1.0, 7.5]);
    }

    #[test]
    fn complex_is_written_only_as_itself_and_sizes_must_fit() {
        assert_eq!(
            rec(Dtype::C64, Dtype::F64, &[0; 8]).unwrap_err(),
            RecodeError::Mismatch
        );
        assert_eq!(rec(Dtype::C64, Dtype::C64, &[7; 8]).unwrap(), [7; 8]);
        let mut out = [0u8; 3];
        assert_eq!(
            recode(Dtype::F32, Dtype::F16, &[0; 4], 0, &mut out),
            Err(RecodeError::Mismatch)
        );
        let out = rec(Dtype::F32, Dtype::C64, &2.0f32.to_le_bytes()).unwrap();
        assert_eq!(out, [2.0f32.to_le_bytes(), 0.0f32.to_le_bytes()].concat());
    }
}
