//! (d) Shard index files: arbitrary bytes as `model.safetensors.index.json`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzcheck::check_index(data);
});
