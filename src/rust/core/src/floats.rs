//! Decoding and correctly rounded encoding of the small float formats
//! (F16, BF16, the five F8, two F6 and F4).
//!
//! Encoding rounds to nearest, ties to even, straight from the f64 (no
//! double rounding through f32). A finite value that would round beyond the
//! largest finite value, an infinity or NaN the format can't hold, give
//! `None`: the caller reports them as out of range.

use std::sync::OnceLock;

use crate::dtype::Dtype;

/// How a small format spends its special encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    /// IEEE-like: the top exponent holds infinities (mantissa 0) and NaNs.
    Ieee,
    /// Finite only; exponent and mantissa all ones is NaN (`e4m3fn`).
    Fn,
    /// Finite only, no negative zero; the negative-zero code is NaN (`fnuz`).
    Fnuz,
    /// Finite only, no NaN at all (MX F6 and F4).
    None,
}

/// A sign-exponent-mantissa layout.
#[derive(Clone, Copy, Debug)]
struct Format {
    ebits: u32,
    mbits: u32,
    bias: i32,
    special: Special,
}

impl Format {
    fn of(dtype: Dtype) -> Option<Format> {
        let f = |ebits, mbits, bias, special| {
            Some(Format {
                ebits,
                mbits,
                bias,
                special,
            })
        };
        match dtype {
            Dtype::F16 => f(5, 10, 15, Special::Ieee),
            Dtype::BF16 => f(8, 7, 127, Special::Ieee),
            Dtype::F8E5M2 => f(5, 2, 15, Special::Ieee),
            Dtype::F8E4M3 => f(4, 3, 7, Special::Fn),
            Dtype::F8E4M3Fnuz => f(4, 3, 8, Special::Fnuz),
            Dtype::F8E5M2Fnuz => f(5, 2, 16, Special::Fnuz),
            Dtype::F6E2M3 => f(2, 3, 1, Special::None),
            Dtype::F6E3M2 => f(3, 2, 3, Special::None),
            Dtype::F4 => f(2, 1, 1, Special::None),
            _ => None,
        }
    }

    fn bits(self) -> u32 {
        1 + self.ebits + self.mbits
    }

    fn decode(self, code: u32) -> f64 {
        let sign = (code >> (self.ebits + self.mbits)) & 1;
        let emask = (1 << self.ebits) - 1;
        let mmask = (1 << self.mbits) - 1;
        let exp = (code >> self.mbits) & emask;
        let man = code & mmask;
        match self.special {
            Special::Ieee if exp == emask => {
                return if man == 0 {
                    if sign == 1 {
                        f64::NEG_INFINITY
                    } else {
                        f64::INFINITY
                    }
                } else {
                    nan_f64(sign, man, self.mbits)
                };
            }
            Special::Fn if exp == emask && man == mmask => return nan_f64(sign, man, self.mbits),
            Special::Fnuz if sign == 1 && exp == 0 && man == 0 => return f64::NAN,
            _ => {}
        }
        let m = self.mbits as i32;
        let mag = if exp == 0 {
            man as f64 * pow2(1 - self.bias - m)
        } else {
            ((1u32 << self.mbits) + man) as f64 * pow2(exp as i32 - self.bias - m)
        };
        if sign == 1 {
            -mag
        } else {
            mag
        }
    }

    fn max_finite(self) -> f64 {
        let emask = (1u32 << self.ebits) - 1;
        let mmask = (1u32 << self.mbits) - 1;
        let code = match self.special {
            Special::Ieee => ((emask - 1) << self.mbits) | mmask,
            Special::Fn => (emask << self.mbits) | (mmask - 1),
            Special::Fnuz | Special::None => (emask << self.mbits) | mmask,
        };
        self.decode(code)
    }

    fn encode(self, v: f64, max: f64) -> Option<u32> {
        let sign_bit = 1u32 << (self.ebits + self.mbits);
        let emask = (1u32 << self.ebits) - 1;
        if v.is_nan() {
            // Keep the NaN's sign and payload, so decoded NaNs encode to
            // the codes they came from.
            let sign = if v.is_sign_negative() { sign_bit } else { 0 };
            return match self.special {
                Special::Ieee => Some(sign | (emask << self.mbits) | nan_mantissa(v, self.mbits)),
                Special::Fn => Some(sign | (emask << self.mbits) | ((1 << self.mbits) - 1)),
                Special::Fnuz => Some(sign_bit),
                Special::None => None,
            };
        }
        let neg = v.is_sign_negative();
        let a = v.abs();
        if a.is_infinite() {
            return match self.special {
                Special::Ieee => Some(if neg { sign_bit } else { 0 } | (emask << self.mbits)),
                _ => None,
            };
        }
        let m = self.mbits as i32;
        let emin = 1 - self.bias;
        // Exponent of the quantum: values below the normal range share the
        // subnormal spacing.
        let qexp = exponent(a).max(emin) - m;
        let r = (a * pow2(-qexp)).round_ties_even();
        if r * pow2(qexp) > max {
            return None;
        }
        let mut r = r as u64;
        let mut qexp = qexp;
        if r >= 1 << (m + 1) {
            r >>= 1;
            qexp += 1;
        }
        let (expf, man) = if r >= 1 << m {
            ((qexp + m + self.bias) as u32, (r - (1 << m)) as u32)
        } else {
            (0, r as u32)
        };
        let mut code = (expf << self.mbits) | man;
        if neg && !(self.special == Special::Fnuz && code == 0) {
            code |= sign_bit;
        }
        Some(code)
    }
}

/// The f64 NaN standing for a narrower format's NaN with `sign` and
/// mantissa `man` (`mbits` wide, not zero): the mantissa goes to the top
/// mantissa bits, where widening IEEE conversions put it, but unlike them
/// this does not set the quiet bit, so [`nan_mantissa`] gives `man` back and
/// every NaN code survives a read and a write.
fn nan_f64(sign: u32, man: u32, mbits: u32) -> f64 {
    f64::from_bits(((sign as u64 & 1) << 63) | (0x7ff << 52) | ((man as u64) << (52 - mbits)))
}

/// The top `mbits` mantissa bits of the NaN `v`, or the quiet bit alone when
/// those are all zero (R's `NA` keeps its payload in the low bits).
fn nan_mantissa(v: f64, mbits: u32) -> u32 {
    let man = ((v.to_bits() >> (52 - mbits)) & ((1 << mbits) - 1)) as u32;
    if man == 0 {
        1 << (mbits - 1)
    } else {
        man
    }
}

/// Widens F32 bits to f64, exactly, NaN sign and payload included.
#[inline(always)]
pub fn widen_f32(bits: u32) -> f64 {
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        nan_f64(bits >> 31, bits & 0x7f_ffff, 23)
    } else {
        f32::from_bits(bits) as f64
    }
}

/// Narrows f64 to F32 rounding to nearest even; a NaN keeps its sign and
/// the top of its payload (the inverse of [`widen_f32`]).
#[inline(always)]
pub fn narrow_f32(x: f64) -> f32 {
    if x.is_nan() {
        let sign = (x.is_sign_negative() as u32) << 31;
        f32::from_bits(sign | 0x7f80_0000 | nan_mantissa(x, 23))
    } else {
        x as f32
    }
}

/// 2^e for the exponents used here (well inside f64's normal range).
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// floor(log2(a)) for finite positive a; subnormal f64 report -1023, which
/// rounds them to zero in every format here.
fn exponent(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// A decoder and encoder for one small format, with lookup tables for the
/// formats of at most 8 bits.
pub struct Codec {
    format: Format,
    max: f64,
    table: Vec<f64>,
}

impl Codec {
    fn new(format: Format) -> Codec {
        let table = if format.bits() <= 8 {
            (0..1u32 << format.bits())
                .map(|c| format.decode(c))
                .collect()
        } else {
            Vec::new()
        };
        Codec {
            format,
            max: format.max_finite(),
            table,
        }
    }

    /// The value of `code` (its low bits).
    #[inline(always)]
    pub fn decode(&self, code: u32) -> f64 {
        match self.table.get(code as usize) {
            Some(v) => *v,
            None => self.format.decode(code),
        }
    }

    /// The nearest code to `v`, or `None` when `v` is out of range.
    #[inline]
    pub fn encode(&self, v: f64) -> Option<u32> {
        self.format.encode(v, self.max)
    }

    /// Largest finite value.
    pub fn max(&self) -> f64 {
        self.max
    }
}

/// The shared codec of a small float dtype, `None` for other dtypes.
pub fn codec(dtype: Dtype) -> Option<&'static Codec> {
    static CODECS: OnceLock<Vec<(Dtype, Codec)>> = OnceLock::new();
    let all = CODECS.get_or_init(|| {
        crate::dtype::ALL
            .iter()
            .filter_map(|&d| Format::of(d).map(|f| (d, Codec::new(f))))
            .collect()
    });
    all.iter().find(|(d, _)| *d == dtype).map(|(_, c)| c)
}

/// Decodes an F8_E8M0 scale: 2^(code - 127), 0xFF is NaN.
#[inline(always)]
pub fn decode_e8m0(code: u8) -> f64 {
    if code == 0xff {
        f64::NAN
    } else {
        pow2(code as i32 - 127)
    }
}

/// Encodes a positive power-of-two scale, rounding the mantissa to nearest
/// even; zero, negatives and values outside 2^-127..2^127 give `None`.
pub fn encode_e8m0(v: f64) -> Option<u8> {
    if v.is_nan() {
        return Some(0xff);
    }
    if v <= 0.0 || v.is_infinite() {
        return None;
    }
    let e = exponent(v);
    if e < -1022 {
        return None;
    }
    let r = (v * pow2(-e)).round_ties_even();
    let code = e + 127 + if r >= 2.0 { 1 } else { 0 };
    (0..=254).contains(&code).then_some(code as u8)
}

/// Decodes an IEEE half from its bits.
#[inline(always)]
pub fn decode_f16(bits: u16) -> f64 {
    if bits & 0x7fff > 0x7c00 {
        nan_f64(bits as u32 >> 15, bits as u32 & 0x3ff, 10)
    } else {
        half::f16::from_bits(bits).to_f64()
    }
}

/// Decodes a bfloat16 from its bits.
#[inline(always)]
pub fn decode_bf16(bits: u16) -> f64 {
    widen_f32((bits as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(d: Dtype) -> &'static Codec {
        codec(d).unwrap()
    }

    #[test]
    fn maxima_match_the_specs() {
        assert_eq!(c(Dtype::F16).max(), 65504.0);
        assert_eq!(c(Dtype::BF16).max(), f32::from_bits(0x7f7f_0000) as f64);
        assert_eq!(c(Dtype::F8E4M3).max(), 448.0);
        assert_eq!(c(Dtype::F8E5M2).max(), 57344.0);
        assert_eq!(c(Dtype::F8E4M3Fnuz).max(), 240.0);
        assert_eq!(c(Dtype::F8E5M2Fnuz).max(), 57344.0);
        assert_eq!(c(Dtype::F6E2M3).max(), 7.5);
        assert_eq!(c(Dtype::F6E3M2).max(), 28.0);
        assert_eq!(c(Dtype::F4).max(), 6.0);
    }

    #[test]
    fn f4_values() {
        let vals: Vec<f64> = (0..16).map(|i| c(Dtype::F4).decode(i)).collect();
        assert_eq!(&vals[..8], &[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(vals[9], -0.5);
    }

    #[test]
    fn specials() {
        assert!(c(Dtype::F8E4M3).decode(0x7f).is_nan());
        assert!(c(Dtype::F8E4M3).decode(0xff).is_nan());
        assert_eq!(c(Dtype::F8E4M3).decode(0x7e), 448.0);
        assert!(c(Dtype::F8E4M3Fnuz).decode(0x80).is_nan());
        assert_eq!(c(Dtype::F8E5M2).decode(0x7c), f64::INFINITY);
        assert!(c(Dtype::F8E5M2).decode(0x7d).is_nan());
        assert_eq!(c(Dtype::F8E4M3).decode(0x01), 2f64.powi(-9));
        assert_eq!(decode_e8m0(127), 1.0);
        assert!(decode_e8m0(255).is_nan());
        assert_eq!(decode_e8m0(0), 2f64.powi(-127));
    }

    #[test]
    fn f16_and_bf16_agree_with_half() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            let ours = c(Dtype::F16).decode(bits as u32);
            assert!(
                ours == h.to_f64() || (ours.is_nan() && h.is_nan()),
                "bits {bits:#x}"
            );
            if !h.is_nan() {
                assert_eq!(c(Dtype::F16).encode(h.to_f64()), Some(bits as u32));
            }
            let b = half::bf16::from_bits(bits);
            let ours = c(Dtype::BF16).decode(bits as u32);
            assert!(ours == decode_bf16(bits) || (ours.is_nan() && b.is_nan()));
        }
    }

    #[test]
    fn every_code_round_trips() {
        for d in [
            Dtype::F8E5M2,
            Dtype::F8E4M3,
            Dtype::F8E4M3Fnuz,
            Dtype::F8E5M2Fnuz,
            Dtype::F6E2M3,
            Dtype::F6E3M2,
            Dtype::F4,
            Dtype::BF16,
        ] {
            let codec = c(d);
            let n = 1u32 << codec.format.bits();
            for code in 0..n {
                let v = codec.decode(code);
                if v.is_nan() {
                    continue;
                }
                let back = codec.encode(v).unwrap();
                assert_eq!(codec.decode(back), v, "{d} code {code:#x}");
                if v != 0.0 || !matches!(d, Dtype::F8E4M3Fnuz | Dtype::F8E5M2Fnuz) {
                    assert_eq!(back, code, "{d} code {code:#x}");
                }
            }
        }
        for code in 0..255u8 {
            assert_eq!(encode_e8m0(decode_e8m0(code)), Some(code));
        }
    }

    #[test]
    fn nan_codes_round_trip_bit_for_bit() {
        // Every NaN code of the formats with more than one, signs included.
        for d in [
            Dtype::F16,
            Dtype::BF16,
            Dtype::F8E5M2,
            Dtype::F8E4M3,
            Dtype::F8E4M3Fnuz,
            Dtype::F8E5M2Fnuz,
        ] {
            let codec = c(d);
            for code in 0..1u32 << codec.format.bits() {
                if codec.decode(code).is_nan() {
                    assert_eq!(
                        codec.encode(codec.decode(code)),
                        Some(code),
                        "{d} code {code:#x}"
                    );
                }
            }
        }
        for bits in 0..=u16::MAX {
            let (h, b) = (decode_f16(bits), decode_bf16(bits));
            if h.is_nan() {
                assert_eq!(c(Dtype::F16).encode(h), Some(bits as u32), "F16 {bits:#x}");
            }
            if b.is_nan() {
                assert_eq!(
                    c(Dtype::BF16).encode(b),
                    Some(bits as u32),
                    "BF16 {bits:#x}"
                );
            }
        }
        for bits in [
            0x7f80_0001u32,
            0x7fbf_ffff,
            0x7fc0_0000,
            0xffc0_1234,
            0xff80_0001,
            0x3f80_0000,
            0x8000_0000,
        ] {
            assert_eq!(narrow_f32(widen_f32(bits)).to_bits(), bits, "F32 {bits:#x}");
        }
        // R's NaN and NA (payload in the low bits) become the quiet NaN.
        let na = f64::from_bits(0x7ff0_0000_0000_07a2);
        assert_eq!(c(Dtype::F16).encode(na), Some(0x7e00));
        assert_eq!(c(Dtype::F16).encode(f64::NAN), Some(0x7e00));
        assert_eq!(c(Dtype::F16).encode(-f64::NAN), Some(0xfe00));
        assert_eq!(narrow_f32(na).to_bits(), 0x7fc0_0000);
        assert_eq!(c(Dtype::F8E4M3).encode(-f64::NAN), Some(0xff));
        assert_eq!(c(Dtype::F8E4M3Fnuz).encode(-f64::NAN), Some(0x80));
    }

    #[test]
    fn rounds_to_nearest_even_and_rejects_overflow() {
        let e4 = c(Dtype::F8E4M3);
        // 1 + 1/16 is halfway between 1 and 1.125: ties go to the even 1.
        assert_eq!(e4.decode(e4.encode(1.0625).unwrap()), 1.0);
        assert_eq!(e4.decode(e4.encode(1.1875).unwrap()), 1.25);
        assert_eq!(e4.decode(e4.encode(1.07).unwrap()), 1.125);
        assert_eq!(e4.encode(464.0), Some(0x7e));
        assert_eq!(e4.encode(465.0), None);
        assert_eq!(e4.encode(f64::INFINITY), None);
        let h = c(Dtype::F16);
        assert_eq!(h.encode(65519.0), Some(0x7bff));
        assert_eq!(h.encode(65520.0), None);
        assert_eq!(h.encode(f64::NEG_INFINITY), Some(0xfc00));
        assert_eq!(h.decode(h.encode(1e-9).unwrap()), 0.0);
        // Correct rounding from f64 where a trip through f32 would round twice.
        let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(h.decode(h.encode(x).unwrap()), 1.0 + 2f64.powi(-10));
        let b = c(Dtype::BF16);
        let y = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        assert_eq!(b.decode(b.encode(y).unwrap()), 1.0 + 2f64.powi(-7));
        assert_eq!(c(Dtype::F4).encode(0.25), Some(0));
        assert_eq!(c(Dtype::F4).encode(0.75), Some(2));
        assert_eq!(c(Dtype::F4).encode(f64::NAN), None);
        assert_eq!(c(Dtype::F8E4M3Fnuz).encode(-0.0), Some(0));
        assert_eq!(encode_e8m0(3.0), Some(129));
        assert_eq!(encode_e8m0(0.0), None);
        assert_eq!(encode_e8m0(-1.0), None);
    }
}
