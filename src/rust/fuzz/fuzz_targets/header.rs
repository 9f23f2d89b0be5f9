//! (a) Header parsing and validation on arbitrary bytes, as a whole file
//! and as a bare JSON header.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzcheck::check_header_bytes(data);
});
