//! A C entry point over the core crate, for tools/windows-check.sh (see
//! Cargo.toml): it goes through the Windows file access of the core (an
//! atomic replace, a positioned read and a memory map) from inside a DLL.

use std::io::Write;
use std::path::PathBuf;

use safetensors_core::io::{read_header, AtomicFile, Backend, FileSource, Source};

/// A safetensors file with one F32 tensor `x` of shape `[2]`: 1.5, -2.
fn example() -> Vec<u8> {
    let json = br#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json);
    bytes.extend_from_slice(&1.5f32.to_le_bytes());
    bytes.extend_from_slice(&(-2.0f32).to_le_bytes());
    bytes
}

/// Saves the example twice at the UTF-8 path `path[0..len)` (the second
/// save replaces the first), reads it back with both backends, and returns
/// the number of tensors found (1), or a negative step number on failure.
///
/// # Safety
/// `path` must point to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn safetensors_linkcheck(path: *const u8, len: usize) -> i32 {
    if path.is_null() {
        return -1;
    }
    // SAFETY: the caller passes `len` readable bytes at `path`.
    let raw = unsafe { std::slice::from_raw_parts(path, len) };
    let Ok(text) = std::str::from_utf8(raw) else { return -2 };
    let target = PathBuf::from(text);
    let bytes = example();
    for _ in 0..2 {
        let Ok(mut f) = AtomicFile::create(&target) else { return -3 };
        let Ok(file) = f.file() else { return -4 };
        if file.write_all(&bytes).is_err() {
            return -5;
        }
        if f.commit(true).is_err() {
            return -6;
        }
    }
    let mut found = -7;
    for backend in [Backend::Read, Backend::Mmap] {
        let Ok(src) = FileSource::open(&target, backend) else { return -8 };
        let Ok(header) = read_header(&src) else { return -9 };
        let mut data = [0u8; 8];
        if src.read_at(header.data_start(), &mut data).is_err() || data[..] != bytes[bytes.len() - 8..] {
            return -10;
        }
        found = header.tensors.len() as i32;
    }
    found
}
