use super::*;
use crate::dtype::{Dtype, ALL};
use crate::error::Kind;
use crate::floats::{self, decode_bf16, decode_e8m0, decode_f16, widen_f32};

use super::decode::packed;
use super::encode::{encode_generic, get};

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
    for shape in [
        vec![2, 0, 3],
        vec![4, 0, 2],
        vec![2, 3, 0, 5],
        vec![0],
        vec![3, 0],
    ] {
        let rows = n_rows(&shape);
        for_each_index(&shape, 0, rows, |rm, cm| {
            panic!("{shape:?} visited ({rm}, {cm})")
        });
        let mut out: Vec<f64> = Vec::new();
        decode(Dtype::F64, &[], &shape, 0, rows, VectorMut::Real(&mut out)).unwrap();
        let mut ints: Vec<i32> = Vec::new();
        decode(
            Dtype::U8,
            &[],
            &shape,
            0,
            rows,
            VectorMut::Integer(&mut ints),
        )
        .unwrap();
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
    assert_eq!(
        decode(
            Dtype::U8,
            &bytes,
            &[2, 3],
            0,
            2,
            VectorMut::Real(&mut short)
        )
        .unwrap_err()
        .kind,
        Kind::InvalidArgument
    );
    let mut out = vec![-1.0; 6];
    assert!(decode(Dtype::U8, &bytes, &[2, 3], 0, 3, VectorMut::Real(&mut out)).is_err());
    assert!(decode(
        Dtype::U8,
        &bytes[..5],
        &[2, 3],
        0,
        2,
        VectorMut::Real(&mut out)
    )
    .is_err());
    assert!(decode(Dtype::U8, &bytes, &[2, 3], 2, 1, VectorMut::Real(&mut out)).is_err());
    assert_eq!(out, vec![-1.0; 6]);
    let mut ints = vec![-1; 6];
    assert!(decode(
        Dtype::F16,
        &[0; 12],
        &[2, 3],
        0,
        2,
        VectorMut::Integer(&mut ints)
    )
    .is_err());
    assert!(decode(
        Dtype::C64,
        &[0; 48],
        &[2, 3],
        0,
        2,
        VectorMut::Integer(&mut ints)
    )
    .is_err());
    assert!(decode(
        Dtype::I8,
        &bytes,
        &[2, 3],
        0,
        2,
        VectorMut::Logical(&mut ints)
    )
    .is_err());
    assert_eq!(ints, vec![-1; 6]);
    let mut cplx = vec![[-1.0, -1.0]; 6];
    assert!(decode(
        Dtype::F64,
        &[0; 48],
        &[2, 3],
        0,
        2,
        VectorMut::Complex(&mut cplx)
    )
    .is_err());
    let mut reals = vec![-1.0; 6];
    assert!(decode(
        Dtype::C64,
        &[0; 48],
        &[2, 3],
        0,
        2,
        VectorMut::Real(&mut reals)
    )
    .is_err());
    assert_eq!(reals, vec![-1.0; 6]);
    // Encoding: values or output of the wrong length, rows past the end.
    let vals = [1.0; 6];
    let mut b = vec![0u8; 6];
    assert_eq!(
        encode(Dtype::U8, Src::Real(&vals[..5]), &[2, 3], 0, 2, &mut b),
        Err(EncodeError::Mismatch)
    );
    assert_eq!(
        encode(Dtype::U8, Src::Real(&vals), &[2, 3], 0, 2, &mut b[..5]),
        Err(EncodeError::Mismatch)
    );
    assert_eq!(
        encode(Dtype::U8, Src::Real(&vals), &[2, 3], 1, 3, &mut b),
        Err(EncodeError::Mismatch)
    );
    assert_eq!(b, vec![0u8; 6]);
}

#[test]
fn exact_rounding_keeps_only_values_the_dtype_holds() {
    let third = [1.0 / 3.0];
    let whole = [0.5, -2.0, 0.0, f64::INFINITY, f64::NAN];
    for dtype in [
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F8E4M3,
        Dtype::F8E5M2,
        Dtype::F6E2M3,
        Dtype::F4,
    ] {
        let n = if dtype.bits() % 8 == 0 { 1 } else { 4 };
        let thirds = vec![1.0 / 3.0; n];
        let mut out = [0u8; 8];
        let bytes = dtype.bytes_for(n).unwrap();
        assert!(
            encode_with(
                dtype,
                Src::Real(&thirds),
                &[n],
                0,
                n,
                &mut out[..bytes],
                Rounding::Nearest
            )
            .is_ok(),
            "{dtype}"
        );
        out.fill(0);
        let e = encode_with(
            dtype,
            Src::Real(&thirds),
            &[n],
            0,
            n,
            &mut out[..bytes],
            Rounding::Exact,
        )
        .unwrap_err();
        assert!(
            matches!(e, EncodeError::Value(BadValue { index: 0, .. })),
            "{dtype}"
        );
        assert!(fits_rounded(dtype, Num::F(third[0])), "{dtype}");
    }
    // Values every float dtype holds (those with infinities and NaN).
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F8E5M2] {
        let mut out = [0u8; 5 * 4];
        let bytes = dtype.bytes_for(5).unwrap();
        encode_with(
            dtype,
            Src::Real(&whole),
            &[5],
            0,
            5,
            &mut out[..bytes],
            Rounding::Exact,
        )
        .unwrap();
        let ints = [1, 2, -8];
        encode_with(
            dtype,
            Src::Integer(&ints),
            &[3],
            0,
            3,
            &mut out[..dtype.bytes_for(3).unwrap()],
            Rounding::Exact,
        )
        .unwrap();
    }
    // 2^24 + 1 is exact in F64 and I32 but not in F32.
    let big = [16_777_217];
    let mut out = [0u8; 4];
    assert!(encode_with(
        Dtype::F32,
        Src::Integer(&big),
        &[1],
        0,
        1,
        &mut out,
        Rounding::Exact
    )
    .is_err());
    assert!(encode_with(
        Dtype::F32,
        Src::Integer(&big),
        &[1],
        0,
        1,
        &mut out,
        Rounding::Nearest
    )
    .is_ok());
    assert!(!fits_rounded(Dtype::F16, Num::F(1e6)));
}

fn encode_all(
    dtype: Dtype,
    src: Src<'_>,
    shape: &[usize],
) -> std::result::Result<Vec<u8>, EncodeError> {
    let n: usize = shape.iter().product();
    let mut out = vec![0u8; dtype.bytes_for(n).unwrap()];
    encode(dtype, src, shape, 0, n_rows(shape), &mut out)?;
    Ok(out)
}

fn decode_real(dtype: Dtype, bytes: &[u8], shape: &[usize]) -> Vec<f64> {
    let n: usize = shape.iter().product();
    let mut out = vec![0.0; n];
    decode(
        dtype,
        bytes,
        shape,
        0,
        n_rows(shape),
        VectorMut::Real(&mut out),
    )
    .unwrap();
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
            assert_eq!(
                decode_real(dtype, &bytes, &shape),
                vals,
                "{dtype} {shape:?}"
            );
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
    decode(
        Dtype::U8,
        &bytes,
        &[2, 3],
        0,
        2,
        VectorMut::Integer(&mut back),
    )
    .unwrap();
    assert_eq!(back, vec![1, 2, 3, 4, 5, 6]);
    // F4 packs the first element in the low nibble.
    let bytes = encode_all(Dtype::F4, Src::Real(&[1.0, 6.0]), &[2]).unwrap();
    assert_eq!(bytes, vec![0x72]);
}

#[test]
fn rejects_unrepresentable_values() {
    let EncodeError::Value(e) = encode_all(Dtype::I8, Src::Real(&[1.0, 128.0]), &[2]).unwrap_err()
    else {
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
    assert_eq!(
        encode_all(Dtype::U64, Src::Real(&[18446744073709549568.0]), &[1]).unwrap(),
        (u64::MAX - 2047).to_le_bytes()
    );
    assert_eq!(
        encode_all(Dtype::I64, Src::Real(&[-9223372036854775808.0]), &[1]).unwrap(),
        i64::MIN.to_le_bytes()
    );
    assert!(encode_all(Dtype::I64, Src::Real(&[-9223372036854777856.0]), &[1]).is_err());
    // Integers beyond 2^53 round once to a narrower float: 2^60 + 2^36 + 1
    // is above the midpoint between two F32 values, which rounding it
    // to a double first would make a tie, rounded down to even.
    let i = (1i64 << 60) + (1 << 36) + 1;
    assert_eq!(
        encode_all(Dtype::F32, Src::Int64(&[i, -i]), &[2]).unwrap(),
        [(i as f32).to_le_bytes(), (-i as f32).to_le_bytes()].concat()
    );
    assert_eq!(i as f32, ((1i64 << 60) + (1 << 37)) as f32);
    assert_eq!(
        encode_all(Dtype::F64, Src::Int64(&[i]), &[1]).unwrap(),
        (i as f64).to_le_bytes()
    );
    assert!(encode_all(Dtype::C64, Src::Complex(&[[1e300, 0.0]]), &[1]).is_err());
    assert!(encode_all(Dtype::F8E4M3, Src::Real(&[1000.0]), &[1]).is_err());
}

#[test]
fn integers_and_complex_round_trip() {
    let ints = [0, 1, -5, i32::MAX, -i32::MAX];
    let bytes = encode_all(Dtype::I32, Src::Integer(&ints), &[5]).unwrap();
    let mut back = vec![0; 5];
    decode(
        Dtype::I32,
        &bytes,
        &[5],
        0,
        5,
        VectorMut::Integer(&mut back),
    )
    .unwrap();
    assert_eq!(back, ints);
    let bytes = encode_all(Dtype::Bool, Src::Logical(&[1, 0, 1]), &[3]).unwrap();
    assert_eq!(bytes, vec![1, 0, 1]);
    let z = [[1.5, -2.0], [0.0, 3.25]];
    let bytes = encode_all(Dtype::C64, Src::Complex(&z), &[2]).unwrap();
    let mut back = vec![[0.0; 2]; 2];
    decode(
        Dtype::C64,
        &bytes,
        &[2],
        0,
        2,
        VectorMut::Complex(&mut back),
    )
    .unwrap();
    assert_eq!(back, z);
    let big = (1u64 << 60).to_le_bytes();
    let mut out = [0.0];
    let stats = decode(Dtype::U64, &big, &[1], 0, 1, VectorMut::Real(&mut out)).unwrap();
    assert_eq!(stats.inexact, 1);
    let min = i32::MIN.to_le_bytes();
    let mut out = [0];
    assert_eq!(
        decode(Dtype::I32, &min, &[1], 0, 1, VectorMut::Integer(&mut out))
            .unwrap()
            .int_min,
        1
    );
}

#[test]
fn sub_byte_blocks_start_on_byte_boundaries() {
    // An F6 tensor of 8 rows x 4, written and read 4 rows at a time.
    let shape = [8usize, 4];
    let vals: Vec<f64> = (0..32).map(|i| (i % 7) as f64 * 0.5).collect();
    let whole = encode_all(Dtype::F6E2M3, Src::Real(&vals), &shape).unwrap();
    let rb = 4 * 6 / 8 * 4;
    let mut halves = vec![0u8; whole.len()];
    encode(
        Dtype::F6E2M3,
        Src::Real(&vals),
        &shape,
        0,
        4,
        &mut halves[..rb],
    )
    .unwrap();
    encode(
        Dtype::F6E2M3,
        Src::Real(&vals),
        &shape,
        4,
        8,
        &mut halves[rb..],
    )
    .unwrap();
    assert_eq!(halves, whole);
    let mut out = vec![0.0; 32];
    decode(
        Dtype::F6E2M3,
        &whole[..rb],
        &shape,
        0,
        4,
        VectorMut::Real(&mut out),
    )
    .unwrap();
    decode(
        Dtype::F6E2M3,
        &whole[rb..],
        &shape,
        4,
        8,
        VectorMut::Real(&mut out),
    )
    .unwrap();
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
    let re =
        match dtype {
            Dtype::F64 => f64::from_bits(u64_()),
            Dtype::F32 => widen_f32(u32_(0)),
            Dtype::F16 => decode_f16(u16_()),
            Dtype::BF16 => decode_bf16(u16_()),
            Dtype::F8E8M0 => decode_e8m0(b(0)),
            Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E4M3Fnuz | Dtype::F8E5M2Fnuz => {
                floats::codec(dtype).unwrap().decode(b(0) as u32)
            }
            Dtype::F6E2M3 | Dtype::F6E3M2 | Dtype::F4 => floats::codec(dtype)
                .unwrap()
                .decode(packed(bytes, i, dtype.bits())),
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
    let ranges: Vec<(usize, usize)> = (0..rows.max(1))
        .step_by(step)
        .map(|r| (r, (r + step).min(rows)))
        .collect();
    let run = |target: SharedVector<'_>| {
        let one = |(r0, r1): (usize, usize)| {
            let (b0, b1) = (
                dtype.bytes_for(r0 * rl).unwrap(),
                dtype.bytes_for(r1 * rl).unwrap(),
            );
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
            run(SharedVector::Real(SharedSlice::new(&mut out)));
            out.iter().map(|&v| [v, 0.0]).collect()
        }
        RType::Integer | RType::Logical => {
            let mut out = vec![-7i32; n];
            let o = SharedSlice::new(&mut out);
            run(if rt == RType::Integer {
                SharedVector::Integer(o)
            } else {
                SharedVector::Logical(o)
            });
            out.iter().map(|&v| [v as f64, 0.0]).collect()
        }
        RType::Complex => {
            let mut out = vec![[f64::from_bits(1); 2]; n];
            run(SharedVector::Complex(SharedSlice::new(&mut out)));
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
            let Some(nbytes) = dtype.bytes_for(n) else {
                continue;
            };
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
                for (step, threaded) in [
                    (rows.max(1), false),
                    (align, false),
                    (3 * align, true),
                    (16, true),
                ] {
                    let got = decode_blocks(dtype, rt, &bytes, &shape, step, threaded);
                    let flat =
                        |v: &[[f64; 2]]| bits(&v.iter().flatten().copied().collect::<Vec<_>>());
                    // Integer and logical targets hold the same numbers.
                    assert_eq!(
                        flat(&got),
                        flat(&want),
                        "{dtype} {shape:?} {rt:?} step {step}"
                    );
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
    let ranges: Vec<(usize, usize)> = (0..rows.max(1))
        .step_by(step)
        .map(|r| (r, (r + step).min(rows)))
        .collect();
    let run = |target: SharedVector<'_>| {
        let one = |(r0, r1): (usize, usize)| {
            let (b0, b1) = (
                dtype.bytes_for(r0 * rl).unwrap(),
                dtype.bytes_for(r1 * rl).unwrap(),
            );
            // SAFETY: each block decodes its own rows.
            unsafe { decode_rows(dtype, &bytes[b0..b1], shape, r0, r1, target) }.unwrap()
        };
        if threaded {
            std::thread::scope(|s| {
                let hs: Vec<_> = ranges.iter().map(|&r| s.spawn(move || one(r))).collect();
                hs.into_iter()
                    .fold(DecodeStats::default(), |a, h| a.merge(h.join().unwrap()))
            })
        } else {
            ranges
                .iter()
                .fold(DecodeStats::default(), |a, &r| a.merge(one(r)))
        }
    };
    match kind {
        Word::Byte => {
            let mut out = vec![0xa5u8; n];
            let st = run(SharedVector::Byte(SharedSlice::new(&mut out)));
            (out.iter().map(|&v| v as u64).collect(), st)
        }
        Word::Int64 => {
            let mut out = vec![7i64; n];
            let st = run(SharedVector::Int64(SharedSlice::new(&mut out)));
            (out.iter().map(|&v| v as u64).collect(), st)
        }
        Word::Bits64 => {
            let mut out = vec![7u64; n];
            let st = run(SharedVector::Bits64(SharedSlice::new(&mut out)));
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
                for (k, v) in [i64::MIN as u64, i64::MAX as u64, u64::MAX, 1 << 63]
                    .into_iter()
                    .enumerate()
                {
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
                assert_eq!(
                    stats,
                    DecodeStats {
                        na: want_na,
                        ..DecodeStats::default()
                    },
                    "{dtype} {kind:?} {shape:?}"
                );
            }
        }
    }
}

#[test]
fn integer64_marks_what_it_cannot_hold_as_na() {
    let vals: [u64; 5] = [0, i64::MAX as u64, 1 << 63, u64::MAX, 5];
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = [0i64; 5];
    let st = decode(Dtype::U64, &bytes, &[5], 0, 5, VectorMut::Int64(&mut out)).unwrap();
    assert_eq!(out, [0, i64::MAX, i64::MIN, i64::MIN, 5]);
    assert_eq!(st.na, 2);
    // As I64 the same bits are -2^63 (integer64's NA) and -1.
    let st = decode(Dtype::I64, &bytes, &[5], 0, 5, VectorMut::Int64(&mut out)).unwrap();
    assert_eq!(out, [0, i64::MAX, i64::MIN, -1, 5]);
    assert_eq!(st.na, 1);
    let mut words = [0u64; 5];
    assert_eq!(
        decode(
            Dtype::U64,
            &bytes,
            &[5],
            0,
            5,
            VectorMut::Bits64(&mut words)
        )
        .unwrap(),
        DecodeStats::default()
    );
    assert_eq!(words, vals);
}

#[test]
fn byte_and_64_bit_targets_refuse_other_dtypes_and_sizes() {
    let bytes = [1u8; 48];
    let mut raw = vec![9u8; 6];
    for d in [Dtype::I8, Dtype::Bool, Dtype::F8E4M3] {
        assert!(
            decode(d, &bytes, &[2, 3], 0, 2, VectorMut::Byte(&mut raw)).is_err(),
            "{d}"
        );
    }
    assert!(decode(
        Dtype::U8,
        &bytes,
        &[2, 3],
        0,
        2,
        VectorMut::Byte(&mut raw[..5])
    )
    .is_err());
    assert_eq!(raw, vec![9u8; 6]);
    let mut ints = vec![9i64; 6];
    let mut words = vec![9u64; 6];
    for d in [Dtype::F64, Dtype::U32, Dtype::C64, Dtype::U8] {
        assert!(
            decode(d, &bytes, &[2, 3], 0, 2, VectorMut::Int64(&mut ints)).is_err(),
            "{d}"
        );
        assert!(
            decode(d, &bytes, &[2, 3], 0, 2, VectorMut::Bits64(&mut words)).is_err(),
            "{d}"
        );
    }
    assert!(decode(
        Dtype::I64,
        &bytes[..40],
        &[2, 3],
        0,
        2,
        VectorMut::Int64(&mut ints)
    )
    .is_err());
    assert!(decode(
        Dtype::I64,
        &bytes,
        &[2, 3],
        0,
        2,
        VectorMut::Bits64(&mut words[..5])
    )
    .is_err());
    assert_eq!(ints, vec![9i64; 6]);
    assert_eq!(words, vec![9u64; 6]);
}

#[test]
fn integer64_values_are_written_exactly() {
    let vals = [0, -1, (1 << 53) + 1, i64::MAX, -i64::MAX, 42];
    let bytes = encode_all(Dtype::I64, Src::Int64(&vals), &[2, 3]).unwrap();
    let mut back = [0i64; 6];
    decode(
        Dtype::I64,
        &bytes,
        &[2, 3],
        0,
        2,
        VectorMut::Int64(&mut back),
    )
    .unwrap();
    assert_eq!(back, vals);
    // Row-major on disk: R's x[1, 2] is element 1 in the file.
    assert_eq!(bytes[8..16], ((1i64 << 53) + 1).to_le_bytes());
    // U64 takes the non-negative ones; NA is refused everywhere.
    let pos = [0, (1 << 53) + 1, i64::MAX];
    assert_eq!(
        encode_all(Dtype::U64, Src::Int64(&pos), &[3]).unwrap(),
        encode_all(Dtype::I64, Src::Int64(&pos), &[3]).unwrap()
    );
    let EncodeError::Value(bad) = encode_all(Dtype::U64, Src::Int64(&vals), &[6]).unwrap_err()
    else {
        panic!()
    };
    assert_eq!((bad.index, bad.value), (1, Num::I(-1)));
    for d in [Dtype::I64, Dtype::U64, Dtype::F64, Dtype::I32] {
        let EncodeError::Value(bad) = encode_all(d, Src::Int64(&[1, i64::MIN]), &[2]).unwrap_err()
        else {
            panic!()
        };
        assert_eq!((bad.index, bad.value), (1, Num::Na), "{d}");
    }
    // Other dtypes take the values they hold: whole numbers in range,
    // floats rounded to nearest.
    assert_eq!(
        encode_all(Dtype::I8, Src::Int64(&[-128, 127]), &[2]).unwrap(),
        vec![0x80, 0x7f]
    );
    assert!(encode_all(Dtype::I8, Src::Int64(&[128]), &[1]).is_err());
    assert_eq!(
        encode_all(Dtype::F64, Src::Int64(&[(1 << 53) + 1]), &[1]).unwrap(),
        (9007199254740992.0f64).to_le_bytes()
    );
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
        total += decode(
            Dtype::I64,
            &bytes[r0 * 17 * 8..r1 * 17 * 8],
            &shape,
            r0,
            r1,
            VectorMut::Real(&mut out),
        )
        .unwrap()
        .inexact;
    }
    assert_eq!(total, 2);
    let ints: Vec<u8> = (0..n as i32)
        .map(|i| if i % 50 == 0 { i32::MIN } else { i })
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut out = vec![0; n];
    assert_eq!(
        decode(
            Dtype::I32,
            &ints,
            &shape,
            0,
            20,
            VectorMut::Integer(&mut out)
        )
        .unwrap()
        .int_min,
        7
    );
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

fn ref_encode(
    dtype: Dtype,
    src: Src<'_>,
    shape: &[usize],
) -> std::result::Result<Vec<u8>, EncodeError> {
    let n: usize = shape.iter().product();
    let mut out = vec![0u8; dtype.bytes_for(n).unwrap()];
    let cm = reference_cm(shape);
    let bits = dtype.bits();
    let mut first_bad: Option<usize> = None;
    for (rm, &c) in cm.iter().enumerate() {
        let mut one = [0u8; 8];
        if encode_generic(
            dtype,
            src.slice(c, 1),
            &[1],
            0,
            1,
            &mut one,
            Rounding::Nearest,
        ) {
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
        } else if first_bad.map_or(true, |b| c < b) {
            first_bad = Some(c);
        }
    }
    match first_bad {
        Some(index) => Err(EncodeError::Value(BadValue {
            index,
            value: get(src, index),
        })),
        None => Ok(out),
    }
}

fn encode_blocks(
    dtype: Dtype,
    src: Src<'_>,
    shape: &[usize],
    step: usize,
) -> std::result::Result<Vec<u8>, EncodeError> {
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
        let hs: Vec<_> = parts
            .into_iter()
            .map(|(a, b, o)| s.spawn(move || encode(dtype, src, shape, a, b, o)))
            .collect();
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
            let clean: Vec<f64> = reals
                .iter()
                .map(|&x| {
                    if x.is_finite() {
                        (x.abs() % 4.0).floor()
                    } else {
                        1.0
                    }
                })
                .collect();
            let ints: Vec<i32> = (0..n)
                .map(|_| match rng.next() % 10 {
                    0 => i32::MIN,
                    1 => 300,
                    _ => (rng.next() % 3) as i32,
                })
                .collect();
            let clean_ints: Vec<i32> = ints.iter().map(|&v| v.clamp(0, 1)).collect();
            let raws = rng.bytes(n);
            let cplx: Vec<[f64; 2]> = reals
                .iter()
                .zip(clean.iter())
                .map(|(&a, &b)| [b, a])
                .collect();
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
