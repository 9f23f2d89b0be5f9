//! (c) Slicing: selections (valid or not) of a tensor built from the input,
//! planned, read through the byte cursor and decoded, against brute force.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use safetensors_core::dtype::ALL;
use safetensors_core::slice::Sel;

fn sel(u: &mut Unstructured<'_>) -> arbitrary::Result<Sel> {
    Ok(if bool::arbitrary(u)? {
        Sel::Range {
            start: (u8::arbitrary(u)? % 12) as usize,
            count: (u8::arbitrary(u)? % 12) as usize,
            step: (u8::arbitrary(u)? % 5) as usize,
        }
    } else {
        let k = (u8::arbitrary(u)? % 12) as usize;
        let mut v = Vec::with_capacity(k);
        for _ in 0..k {
            v.push((u8::arbitrary(u)? % 12) as usize);
        }
        Sel::List(v)
    })
}

fn run(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let dtype = ALL[u8::arbitrary(&mut u)? as usize % ALL.len()];
    let rank = (u8::arbitrary(&mut u)? % 5) as usize;
    let mut shape = Vec::with_capacity(rank);
    for _ in 0..rank {
        shape.push((u8::arbitrary(&mut u)? % 10) as usize);
    }
    // Usually one selection per dimension; sometimes one too many or few.
    let nsel = match u8::arbitrary(&mut u)? % 16 {
        0 => rank + 1,
        1 => rank.saturating_sub(1),
        _ => rank,
    };
    let mut sels = Vec::with_capacity(nsel);
    for _ in 0..nsel {
        sels.push(sel(&mut u)?);
    }
    let chunks: Vec<usize> = (0..4)
        .map(|_| u8::arbitrary(&mut u).map(|c| c as usize))
        .collect::<arbitrary::Result<_>>()?;
    let n: usize = shape.iter().product();
    let Some(nbytes) = dtype.bytes_for(n) else {
        return Ok(());
    };
    let seed = u.bytes(u.len().min(nbytes))?.to_vec();
    let bytes: Vec<u8> = if seed.is_empty() {
        vec![0x3c; nbytes]
    } else {
        seed.iter().copied().cycle().take(nbytes).collect()
    };
    fuzzcheck::check_slice(dtype, &shape, sels, &bytes, &chunks);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
