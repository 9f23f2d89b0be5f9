//! (c) The tiled index walker behind every conversion and slice, against
//! brute force, for arbitrary shapes and splits of the rows into blocks.
//! (Slicing itself gets its own target once src/slice.rs exists.)
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&rank, rest)) = data.split_first() else {
        return;
    };
    let rank = (rank % 7) as usize;
    if rest.len() < rank {
        return;
    }
    let (dims, splits) = rest.split_at(rank);
    // Extents up to 63, the edge cases 0 and 1 included.
    let shape: Vec<usize> = dims.iter().map(|&d| (d % 64) as usize).collect();
    let splits: Vec<usize> = splits.iter().map(|&s| s as usize).collect();
    fuzzcheck::check_walk(&shape, &splits);
});
