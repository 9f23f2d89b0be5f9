//! (b) Full deserialization of arbitrary bytes as a file: every tensor of a
//! valid file is converted to every R type it can become, whole and in
//! blocks, and encoded back.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The last byte picks the block size, so a file's blocks vary too.
    let per = data.last().map_or(1, |&b| (b % 17) as usize + 1);
    fuzzcheck::check_file(data, per);
});
