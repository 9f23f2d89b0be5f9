//! Property tests of every dtype's conversions at their boundaries, both
//! ways: a value (double, integer or 64-bit integer, as R holds them)
//! written as a dtype and read back is the value itself, or the value
//! correctly rounded (to nearest, ties to even) where the dtype is a
//! narrower float, or an error; never a value clamped to the largest one
//! or wrapped around. Stored bytes read as values and written again are
//! the same bytes, and bytes recoded to another dtype are what the values
//! give.
//!
//! The oracles are independent of the encoders: a float format's correct
//! rounding is found among all its values (decoded one code at a time),
//! F32's is Rust's `as f32`, and integers are checked with exact `i128`
//! arithmetic. The number of cases is proptest's, `PROPTEST_CASES` (256
//! by default).

use proptest::prelude::*;
use safetensors_core::convert::{decode, encode_with, EncodeError, Rounding, Src, VectorMut};
use safetensors_core::dtype::{Dtype, ALL};
use safetensors_core::recode::{group, recode};

/// Elements per group that fills whole bytes (2 for F4, 4 for F6, else 1).
fn per_group(d: Dtype) -> usize {
    group(d, d)
}

/// Bytes of `codes` (one per element) as `d` stores them: little-endian,
/// sub-byte codes packed from the least significant bit.
fn pack(d: Dtype, codes: &[u64]) -> Vec<u8> {
    let bits = d.bits();
    let mut out = vec![0u8; d.bytes_for(codes.len()).expect("whole bytes")];
    if bits >= 8 {
        let w = bits / 8;
        for (i, &c) in codes.iter().enumerate() {
            out[i * w..i * w + w].copy_from_slice(&c.to_le_bytes()[..w]);
        }
    } else {
        for (i, &c) in codes.iter().enumerate() {
            let pos = i * bits;
            let word = (c as u32) << (pos % 8);
            out[pos / 8] |= word as u8;
            if word > 0xff {
                out[pos / 8 + 1] |= (word >> 8) as u8;
            }
        }
    }
    out
}

/// The code of element 0 of `bytes` (of dtype `d`).
fn first_code(d: Dtype, bytes: &[u8]) -> u64 {
    let bits = d.bits();
    if bits >= 8 {
        let mut b = [0u8; 8];
        b[..bits / 8].copy_from_slice(&bytes[..bits / 8]);
        u64::from_le_bytes(b)
    } else {
        (bytes[0] & ((1u8 << bits) - 1)) as u64
    }
}

/// Code `code` of `d` read as a double.
fn dec(d: Dtype, code: u64) -> f64 {
    let n = per_group(d);
    let mut codes = vec![0u64; n];
    codes[0] = code;
    let bytes = pack(d, &codes);
    let mut out = vec![0.0; n];
    decode(d, &bytes, &[n], 0, n, VectorMut::Real(&mut out))
        .expect("every code of a float dtype decodes");
    out[0]
}

/// `src`'s element 0 written as `d` (the other elements of its group are
/// zeros): its code, or `None` when it can't be.
fn enc(d: Dtype, src: Src<'_>, rounding: Rounding) -> Option<u64> {
    let n = src.len();
    let mut out = vec![0u8; d.bytes_for(n).expect("whole bytes")];
    match encode_with(d, src, &[n], 0, n, &mut out, rounding) {
        Ok(()) => Some(first_code(d, &out)),
        Err(EncodeError::Value(b)) => {
            assert_eq!(b.index, 0, "only element 0 can fail");
            None
        }
        Err(EncodeError::Mismatch) => panic!("mismatched arguments"),
    }
}

fn enc_f64(d: Dtype, x: f64) -> Option<u64> {
    let mut v = vec![0.0; per_group(d)];
    v[0] = x;
    enc(d, Src::Real(&v), Rounding::Nearest)
}

/// The float dtypes narrower than F32 that have a code table here.
const SMALL: [Dtype; 9] = [
    Dtype::F16,
    Dtype::BF16,
    Dtype::F8E5M2,
    Dtype::F8E4M3,
    Dtype::F8E4M3Fnuz,
    Dtype::F8E5M2Fnuz,
    Dtype::F6E2M3,
    Dtype::F6E3M2,
    Dtype::F4,
];

const INTS: [Dtype; 8] = [
    Dtype::U8,
    Dtype::I8,
    Dtype::U16,
    Dtype::I16,
    Dtype::U32,
    Dtype::I32,
    Dtype::U64,
    Dtype::I64,
];

/// A small float format's positive finite values (zero included) with
/// their codes, in increasing order, and whether it has infinities and
/// NaN.
struct Table {
    values: Vec<(f64, u64)>,
    has_inf: bool,
    has_nan: bool,
    has_neg_zero: bool,
}

fn table(d: Dtype) -> Table {
    let half = 1u64 << (d.bits() - 1);
    let mut values: Vec<(f64, u64)> = (0..half)
        .map(|c| (dec(d, c), c))
        .filter(|(v, _)| v.is_finite() && *v >= 0.0)
        .collect();
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    values.dedup_by(|a, b| a.0 == b.0);
    let all: Vec<f64> = (0..2 * half).map(|c| dec(d, c)).collect();
    Table {
        values,
        has_inf: all.iter().any(|v| v.is_infinite()),
        has_nan: all.iter().any(|v| v.is_nan()),
        has_neg_zero: all.iter().any(|v| *v == 0.0 && v.is_sign_negative()),
    }
}

/// What writing `x` as a dtype must give: a value (read back), or an error.
#[derive(Debug, PartialEq)]
enum Want {
    Value(f64),
    NaN,
    Error,
}

/// Correct rounding of the magnitude `a` (finite, >= 0) among `t`'s
/// values, ties to the even code; `None` beyond the largest value's
/// rounding range (the next value would be past it).
fn round_magnitude(t: &Table, a: f64) -> Option<f64> {
    let vals = &t.values;
    let i = vals.partition_point(|&(v, _)| v <= a);
    if i == 0 {
        return Some(vals[0].0);
    }
    let (lo, lo_code) = vals[i - 1];
    if lo == a {
        return Some(lo);
    }
    let (hi, hi_code, overflow) = match vals.get(i) {
        Some(&(hi, c)) => (hi, c, false),
        None => {
            // Past the largest value: the next would be one spacing on.
            let step = lo - vals[vals.len() - 2].0;
            (lo + step, lo_code + 1, true)
        }
    };
    let mid = lo + (hi - lo) / 2.0;
    let pick_hi = a > mid || (a == mid && hi_code % 2 == 0);
    match (pick_hi, overflow) {
        (false, _) => Some(lo),
        (true, false) => Some(hi),
        (true, true) => None,
    }
}

fn oracle_small(t: &Table, x: f64) -> Want {
    if x.is_nan() {
        return if t.has_nan { Want::NaN } else { Want::Error };
    }
    if x.is_infinite() {
        return if t.has_inf {
            Want::Value(x)
        } else {
            Want::Error
        };
    }
    match round_magnitude(t, x.abs()) {
        None => Want::Error,
        Some(0.0) if x.is_sign_negative() && t.has_neg_zero => Want::Value(-0.0),
        Some(r) if x.is_sign_negative() => Want::Value(if r == 0.0 { 0.0 } else { -r }),
        Some(r) => Want::Value(r),
    }
}

/// F8_E8M0 (powers of two 2^-127..2^127, NaN): the nearest power of two,
/// the midpoint 1.5 * 2^e rounding up; zero, negatives, infinities and
/// values beyond the range are errors (it has no zero, so a value that
/// rounds to 2^-128 or less is one too).
fn oracle_e8m0(x: f64) -> Want {
    if x.is_nan() {
        return Want::NaN;
    }
    if x <= 0.0 || x.is_infinite() || x < 1.5 * 2f64.powi(-128) {
        return Want::Error;
    }
    let e = x.log2().floor() as i32;
    // log2 may be off by one near powers of two: settle it exactly.
    let e = if 2f64.powi(e) > x {
        e - 1
    } else if 2f64.powi(e + 1) <= x {
        e + 1
    } else {
        e
    };
    let r = if x >= 1.5 * 2f64.powi(e) { e + 1 } else { e };
    if r > 127 {
        Want::Error
    } else {
        Want::Value(2f64.powi(r))
    }
}

fn got(d: Dtype, code: Option<u64>) -> Want {
    match code {
        None => Want::Error,
        Some(c) => {
            let v = dec(d, c);
            if v.is_nan() {
                Want::NaN
            } else {
                Want::Value(v)
            }
        }
    }
}

fn same(a: &Want, b: &Want) -> bool {
    match (a, b) {
        (Want::Value(x), Want::Value(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// Doubles at and around every boundary that matters here: each format's
/// largest value, its rounding midpoints and its smallest values, 2^53,
/// 2^63, 2^64 and the integer ranges, each moved by a few ulps, either
/// sign; and any double at all (NaN, infinities and subnormals included).
fn boundary_f64() -> impl Strategy<Value = f64> {
    let anchors: Vec<f64> = vec![
        0.0,
        f64::MIN_POSITIVE,
        5e-324,
        1.0,
        1.5,
        0.1,
        65504.0,
        65520.0,
        65536.0,
        448.0,
        464.0,
        480.0,
        240.0,
        248.0,
        57344.0,
        61440.0,
        7.5,
        7.75,
        28.0,
        30.0,
        6.0,
        7.0,
        f32::MAX as f64,
        3.4028235677973366e38,
        3.3895313892515355e38,
        f32::MIN_POSITIVE as f64,
        1.401298464324817e-45,
        5.960464477539063e-8,
        2.9802322387695312e-8,
        9.183549615799121e-41,
        2f64.powi(-127),
        1.5 * 2f64.powi(127),
        2f64.powi(53),
        2f64.powi(63),
        2f64.powi(64),
        127.0,
        128.0,
        255.0,
        256.0,
        32767.0,
        32768.0,
        65535.0,
        2147483647.0,
        2147483648.0,
        4294967295.0,
        4294967296.0,
    ];
    prop_oneof![
        3 => (proptest::sample::select(anchors), -4i64..=4, any::<bool>()).prop_map(|(a, k, neg)| {
            let x = f64::from_bits((a.to_bits() as i64 + k).max(0) as u64);
            if neg { -x } else { x }
        }),
        1 => proptest::num::f64::ANY,
        1 => (-70.0f64..70.0).prop_map(|e: f64| 2f64.powf(e)),
    ]
}

/// Integers at and around the integer dtypes' limits, 2^53 and 2^63, and
/// any i64 at all.
fn boundary_i64() -> impl Strategy<Value = i64> {
    let anchors: Vec<i64> = vec![
        0,
        1,
        127,
        128,
        255,
        256,
        32767,
        32768,
        65535,
        65536,
        i32::MAX as i64,
        u32::MAX as i64,
        1 << 53,
        (1 << 60) + (1 << 36),
        i64::MAX,
        1 << 24,
        65504,
        65520,
    ];
    prop_oneof![
        3 => (proptest::sample::select(anchors), -3i64..=3, any::<bool>()).prop_map(|(a, k, neg)| {
            let x = a.saturating_add(k);
            if neg { x.saturating_neg() } else { x }
        }),
        1 => any::<i64>(),
    ]
}

/// The range of integer dtype `d`.
fn int_range(d: Dtype) -> (i128, i128) {
    match d {
        Dtype::U8 => (0, u8::MAX as i128),
        Dtype::I8 => (i8::MIN as i128, i8::MAX as i128),
        Dtype::U16 => (0, u16::MAX as i128),
        Dtype::I16 => (i16::MIN as i128, i16::MAX as i128),
        Dtype::U32 => (0, u32::MAX as i128),
        Dtype::I32 => (i32::MIN as i128, i32::MAX as i128),
        Dtype::U64 => (0, u64::MAX as i128),
        Dtype::I64 => (i64::MIN as i128, i64::MAX as i128),
        _ => unreachable!(),
    }
}

/// The code integer `v` has in `d` (two's complement, `d`'s width).
fn int_code(d: Dtype, v: i128) -> u64 {
    let bits = d.bits() as u32;
    (v as u64)
        & if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
}

/// Correct rounding of integer `i` to small format `t` (exact, in i128,
/// where doubles would not be).
fn oracle_small_int(t: &Table, i: i64) -> Want {
    let a = i.unsigned_abs() as i128;
    if a <= 1 << 53 {
        return oracle_small(t, i as f64);
    }
    // Values this large in these formats are integers, exact in i128.
    let vals = &t.values;
    let k = vals.partition_point(|&(v, _)| (v as i128) <= a);
    let (lo, lo_code) = (vals[k - 1].0 as i128, vals[k - 1].1);
    if lo == a {
        return Want::Value(if i < 0 { -(lo as f64) } else { lo as f64 });
    }
    let (hi, hi_code, overflow) = match vals.get(k) {
        Some(&(v, c)) => (v as i128, c, false),
        None => (2 * lo - vals[vals.len() - 2].0 as i128, lo_code + 1, true),
    };
    let twice = 2 * a;
    let pick_hi = twice > lo + hi || (twice == lo + hi && hi_code % 2 == 0);
    let r = match (pick_hi, overflow) {
        (false, _) => lo,
        (true, false) => hi,
        (true, true) => return Want::Error,
    };
    Want::Value(if i < 0 { -(r as f64) } else { r as f64 })
}

fn tables() -> &'static Vec<(Dtype, Table)> {
    static T: std::sync::OnceLock<Vec<(Dtype, Table)>> = std::sync::OnceLock::new();
    T.get_or_init(|| SMALL.iter().map(|&d| (d, table(d))).collect())
}

proptest! {
    /// A double written as any float dtype is itself, correctly rounded,
    /// or an error (out of range, NaN or infinity where the dtype has
    /// none); never the largest value in place of a larger one.
    #[test]
    fn doubles_round_to_nearest_even_or_fail(x in boundary_f64()) {
        for (d, t) in tables() {
            let want = oracle_small(t, x);
            let have = got(*d, enc_f64(*d, x));
            prop_assert!(same(&have, &want), "{x:e} ({:#x}) as {d}: {have:?}, want {want:?}", x.to_bits());
        }
        let f = x as f32;
        let want32 = if x.is_nan() { Want::NaN } else if f.is_infinite() && x.is_finite() { Want::Error } else { Want::Value(f as f64) };
        prop_assert!(same(&got(Dtype::F32, enc_f64(Dtype::F32, x)), &want32), "{x:e} as F32");
        let want64 = if x.is_nan() { Want::NaN } else { Want::Value(x) };
        prop_assert!(same(&got(Dtype::F64, enc_f64(Dtype::F64, x)), &want64), "{x:e} as F64");
        prop_assert!(same(&got(Dtype::F8E8M0, enc_f64(Dtype::F8E8M0, x)), &oracle_e8m0(x)), "{x:e} as F8_E8M0");
    }

    /// A double written as an integer dtype (or BOOL) is exact or an
    /// error: a fraction, NaN, an infinity or a value out of range fails.
    #[test]
    fn doubles_become_integers_exactly_or_fail(x in boundary_f64()) {
        let whole = x.is_finite() && x.fract() == 0.0;
        for d in INTS {
            let (lo, hi) = int_range(d);
            let ok = whole && (x as i128) >= lo && (x as i128) <= hi && x.abs() < 2f64.powi(64);
            let code = enc_f64(d, x);
            prop_assert_eq!(code.is_some(), ok, "{} as {}", x, d);
            if let Some(c) = code {
                prop_assert_eq!(c, int_code(d, x as i128), "{} as {}", x, d);
            }
        }
        let code = enc_f64(Dtype::Bool, x);
        prop_assert_eq!(code, (x == 0.0 || x == 1.0).then_some(x as u64), "{} as BOOL", x);
    }

    /// R integers (NA is i32::MIN) and bit64's integer64 (NA is i64::MIN)
    /// written as every dtype: integers exactly or an error, floats
    /// rounded once, correctly.
    #[test]
    fn integers_convert_exactly_or_round_once(i in boundary_i64()) {
        let int64 = [i];
        for d in INTS.iter().copied().chain([Dtype::Bool]) {
            let code = enc(d, Src::Int64(&int64), Rounding::Nearest);
            let ok = i != i64::MIN && match d {
                Dtype::Bool => i == 0 || i == 1,
                _ => { let (lo, hi) = int_range(d); (i as i128) >= lo && (i as i128) <= hi }
            };
            prop_assert_eq!(code.is_some(), ok, "integer64 {} as {}", i, d);
            if let Some(c) = code {
                prop_assert_eq!(c, int_code(d, i as i128));
            }
        }
        if i != i64::MIN {
            let mut v = vec![0i64; 4];
            v[0] = i;
            for (d, t) in tables() {
                let mut src = v.clone();
                src.truncate(per_group(*d));
                let have = got(*d, enc(*d, Src::Int64(&src), Rounding::Nearest));
                let want = oracle_small_int(t, i);
                prop_assert!(same(&have, &want), "integer64 {i} as {d}: {have:?}, want {want:?}");
            }
            prop_assert!(same(&got(Dtype::F32, enc(Dtype::F32, Src::Int64(&int64), Rounding::Nearest)), &Want::Value(i as f32 as f64)));
            prop_assert!(same(&got(Dtype::F64, enc(Dtype::F64, Src::Int64(&int64), Rounding::Nearest)), &Want::Value(i as f64)));
        } else {
            prop_assert!(enc(Dtype::F64, Src::Int64(&int64), Rounding::Nearest).is_none(), "integer64 NA");
        }
        // R integers: the same, with NA at i32::MIN.
        if let Ok(j) = i32::try_from(i) {
            let ints = [j];
            for d in INTS {
                let code = enc(d, Src::Integer(&ints), Rounding::Nearest);
                let (lo, hi) = int_range(d);
                let ok = j != i32::MIN && (j as i128) >= lo && (j as i128) <= hi;
                prop_assert_eq!(code.is_some(), ok, "integer {} as {}", j, d);
            }
            let f = enc(Dtype::F64, Src::Integer(&ints), Rounding::Nearest);
            prop_assert_eq!(f.map(f64::from_bits), (j != i32::MIN).then_some(j as f64));
        }
    }

    /// Stored bytes read as doubles and written again, keeping values
    /// exactly (the `"dtype"` attribute's rule), are the same bytes: for
    /// every code of every dtype that decodes to a double (NaN keeps being
    /// NaN; 64-bit integers beyond 2^53 don't fit a double and are left to
    /// the integer64 test below).
    #[test]
    fn bytes_read_and_written_again_are_the_same(bits in any::<u64>()) {
        for d in ALL {
            if d == Dtype::C64 || d == Dtype::Bool {
                continue;
            }
            let code = if d.bits() == 64 { bits } else { bits & ((1u64 << d.bits()) - 1) };
            if matches!(d, Dtype::I64 | Dtype::U64) && (int_value(d, code).unsigned_abs() > 1 << 53) {
                continue;
            }
            let v = dec(d, code);
            let mut src = vec![0.0; per_group(d)];
            src[0] = v;
            let back = enc(d, Src::Real(&src), Rounding::Exact);
            if v.is_nan() {
                prop_assert!(back.map(|c| dec(d, c).is_nan()) == Some(true), "NaN code {code:#x} of {d}");
            } else if !(v == 0.0 && back.is_some_and(|c| c != code && dec(d, c) == 0.0)) {
                prop_assert_eq!(back, Some(code), "code {:#x} of {} ({})", code, d, v);
            }
        }
        // I64 and U64 through integer64, exactly (NA aside).
        let i = bits as i64;
        if i != i64::MIN {
            prop_assert_eq!(enc(Dtype::I64, Src::Int64(&[i]), Rounding::Exact), Some(bits));
        }
    }

    /// Bytes recoded to another dtype (a framework's tensor or a raw
    /// vector saved with `dtype =`) are what their values give.
    #[test]
    fn recoded_bytes_are_what_the_values_give(
        codes in proptest::collection::vec(any::<u64>(), 4),
        from in proptest::sample::select(ALL.iter().copied().filter(|&d| d != Dtype::C64 && d != Dtype::Bool).collect::<Vec<_>>()),
        to in proptest::sample::select(ALL.iter().copied().filter(|&d| d != Dtype::C64).collect::<Vec<_>>()),
    ) {
        let codes: Vec<u64> = codes.iter().map(|&c| if from.bits() == 64 { c } else { c & ((1u64 << from.bits()) - 1) }).collect();
        // Four elements: whole bytes in every dtype.
        let src = pack(from, &codes);
        let mut out = vec![0u8; to.bytes_for(4).expect("whole bytes")];
        let recoded = recode(from, to, &src, 0, &mut out).map(|_| out.clone());
        let values: Option<Vec<f64>> = if from.is_float() || from.bits() < 64 {
            let mut v = vec![0.0; 4];
            decode(from, &src, &[4], 0, 4, VectorMut::Real(&mut v)).expect("decodes");
            Some(v)
        } else {
            None
        };
        if let Some(v) = values {
            let mut want = vec![0u8; to.bytes_for(4).expect("whole bytes")];
            let ok = encode_with(to, Src::Real(&v), &[4], 0, 4, &mut want, Rounding::Nearest).is_ok();
            prop_assert_eq!(recoded.is_ok(), ok, "{} -> {}: {:?}", from, to, v);
            if ok {
                prop_assert_eq!(recoded.unwrap(), want);
            }
        } else {
            // 64-bit integers: exactly, through i128.
            let vals: Vec<i128> = codes.iter().map(|&c| int_value(from, c)).collect();
            if to.is_integer() {
                let (lo, hi) = int_range(to);
                let ok = vals.iter().all(|&v| v >= lo && v <= hi);
                prop_assert_eq!(recoded.is_ok(), ok, "{} -> {}", from, to);
                if ok {
                    let want: Vec<u64> = vals.iter().map(|&v| int_code(to, v)).collect();
                    prop_assert_eq!(recoded.unwrap(), pack(to, &want));
                }
            }
        }
    }
}

/// The integer code `c` of `d` stands for.
fn int_value(d: Dtype, c: u64) -> i128 {
    match d {
        Dtype::I8 => c as u8 as i8 as i128,
        Dtype::I16 => c as u16 as i16 as i128,
        Dtype::I32 => c as u32 as i32 as i128,
        Dtype::I64 => c as i64 as i128,
        _ => c as i128,
    }
}

/// Every code of every dtype of at most 16 bits, once: read as a double
/// and written again exactly, the same code (NaN aside).
#[test]
fn every_small_code_round_trips() {
    for d in ALL {
        if d.bits() > 16 || d == Dtype::Bool {
            continue;
        }
        for code in 0..(1u64 << d.bits()) {
            let v = dec(d, code);
            let mut src = vec![0.0; per_group(d)];
            src[0] = v;
            let back = enc(d, Src::Real(&src), Rounding::Exact);
            if v.is_nan() {
                assert!(
                    back.is_some_and(|c| dec(d, c).is_nan()),
                    "NaN code {code:#x} of {d}"
                );
            } else {
                assert_eq!(back, Some(code), "code {code:#x} of {d} ({v})");
            }
        }
    }
}
