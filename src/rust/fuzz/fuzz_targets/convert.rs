//! (b') Structure-aware conversion: a dtype, a shape and bytes of exactly
//! the right length are built from the input, written as a file with the
//! core's writer, read back, and converted as in `deserialize`.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use safetensors_core::dtype::ALL;
use safetensors_core::format::{layout, TensorSpec};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(dtype_ix) = u8::arbitrary(&mut u) else {
        return;
    };
    let dtype = ALL[dtype_ix as usize % ALL.len()];
    let Ok(rank) = u8::arbitrary(&mut u) else {
        return;
    };
    let mut shape = Vec::new();
    for _ in 0..rank % 6 {
        let Ok(d) = u8::arbitrary(&mut u) else { return };
        shape.push((d % 12) as usize);
    }
    let Ok(per) = u8::arbitrary(&mut u) else {
        return;
    };
    let n: usize = shape.iter().product();
    let Some(nbytes) = dtype.bytes_for(n) else {
        return;
    };
    let mut bytes = u.bytes(u.len().min(nbytes)).unwrap_or_default().to_vec();
    // Short inputs repeat their bytes to fill the tensor.
    if bytes.len() < nbytes {
        let seed = if bytes.is_empty() {
            vec![0x3c]
        } else {
            bytes.clone()
        };
        bytes = seed.iter().copied().cycle().take(nbytes).collect();
    }
    let spec = TensorSpec {
        name: "t".into(),
        dtype,
        shape: shape.clone(),
    };
    let Ok(l) = layout(&[spec], None) else {
        panic!("layout of a valid tensor failed")
    };
    let mut file = l.prefix.clone();
    file.extend_from_slice(&bytes);
    fuzzcheck::check_tensor(dtype, &shape, &bytes, per as usize);
    fuzzcheck::check_file(&file, per as usize);
});
