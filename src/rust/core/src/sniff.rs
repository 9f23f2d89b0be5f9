//! Recognising files that are not safetensors files from their first bytes
//! (PyTorch checkpoints, NumPy, GGUF, HDF5, compressed files, R data files,
//! Git LFS pointers, web pages and other text), for errors that say what a
//! file looks like and what to do about it.

use crate::error::{Error, Kind};

/// Fewer bytes than this are too few to call a file text (as many as the
/// header length a safetensors file starts with).
const MIN_TEXT: usize = 8;

const TORCH_ZIP_HINT: &str =
    "Read it in R with `torch::load_state_dict()` (from the torch package), \
    or convert it to safetensors in Python: \
    `safetensors.torch.save_file(torch.load(path), \"model.safetensors\")`.";
const TORCH_PICKLE_HINT: &str = "Convert it to safetensors in Python: \
    `safetensors.torch.save_file(torch.load(path), \"model.safetensors\")`; \
    R torch reads only the zip format of PyTorch 1.6 and later, with `torch::load_state_dict()`.";
const NPZ_HINT: &str = "Convert it to safetensors in Python: \
    `safetensors.numpy.save_file(dict(numpy.load(path)), \"model.safetensors\")`.";
const NPY_HINT: &str = "Convert it to safetensors in Python: \
    `safetensors.numpy.save_file({\"x\": numpy.load(path)}, \"model.safetensors\")`.";
const GZIP_HINT: &str =
    "If it holds a safetensors file, read it through a connection that decompresses it, \
    `gzfile(path)`; if it holds an R object saved with `saveRDS()`, with `readRDS()`.";
const LFS_HINT: &str = "Fetch the file itself, with `git lfs pull` in a clone, or download it \
    (from the Hugging Face Hub, through its `resolve/` address).";
const HTML_HINT: &str = "If it was downloaded, its address led to a page instead of the file: \
    on the Hugging Face Hub, file addresses contain `resolve/`, not `blob/`.";
const JSON_HINT: &str =
    "The index of a sharded checkpoint (`model.safetensors.index.json`) is read through a path ending in `.json`.";

/// The error for a file that is not a safetensors file, of `kind`, saying
/// what the file looks like from its first bytes (`prefix`) and what to do;
/// `None` when it looks like nothing known.
pub fn not_safetensors(kind: Kind, prefix: &[u8]) -> Option<Error> {
    let (what, hint) = looks_like(prefix)?;
    let err = Error::new(
        kind,
        format!("it is not a safetensors file: it looks like {what}"),
    );
    Some(match hint {
        Some(h) => err.with_hint(h),
        None => err,
    })
}

/// What a file starting with `prefix` looks like (a noun phrase), and what
/// to do about it, for files that are not safetensors files: PyTorch
/// checkpoints (zip or pickle), NumPy, GGUF, HDF5, compressed files, R data
/// files, Git LFS pointers, web pages and other text.
pub fn looks_like(prefix: &[u8]) -> Option<(String, Option<&'static str>)> {
    let p = |s: &str, h: Option<&'static str>| Some((s.to_string(), h));
    if prefix.starts_with(b"PK\x03\x04") || prefix.starts_with(b"PK\x05\x06") {
        // A zip archive: its first entry's name tells PyTorch from NumPy.
        let name = zip_first_name(prefix);
        // PyTorch writes `<name>/data.pkl` first (newer versions may start
        // with its format records).
        let torch_entry = |n: &str| {
            n == "data.pkl"
                || ["/data.pkl", "/.format_version", "/byteorder"]
                    .iter()
                    .any(|e| n.ends_with(e))
        };
        return match name {
            Some(n) if torch_entry(&n) => p(
                "a PyTorch checkpoint (the zip archive `torch.save()` writes)",
                Some(TORCH_ZIP_HINT),
            ),
            Some(n) if n.ends_with(".npy") => p("a NumPy `.npz` archive", Some(NPZ_HINT)),
            Some(_) => p("a zip archive", None),
            None => p(
                "a zip archive, such as a PyTorch checkpoint or a NumPy `.npz` file",
                Some(TORCH_ZIP_HINT),
            ),
        };
    }
    // Python pickles start with the PROTO opcode; PyTorch's legacy format
    // with a pickled magic number.
    if prefix.len() >= 2 && prefix[0] == 0x80 && (2..=5).contains(&prefix[1]) {
        const LEGACY: [u8; 12] = [
            0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
        ];
        if prefix[2..].starts_with(&LEGACY) {
            return p(
                "a PyTorch checkpoint in the legacy format of `torch.save()` (before PyTorch 1.6)",
                Some(TORCH_PICKLE_HINT),
            );
        }
        return p(
            "a Python pickle, such as a PyTorch checkpoint",
            Some(TORCH_PICKLE_HINT),
        );
    }
    if prefix.starts_with(b"GGUF") {
        return p("a GGUF file (the format of llama.cpp)", None);
    }
    if prefix.starts_with(b"\x93NUMPY") {
        return p("a NumPy `.npy` file", Some(NPY_HINT));
    }
    if prefix.starts_with(b"\x89HDF\r\n\x1a\n") {
        return p(
            "an HDF5 file, such as a Keras `.h5` model",
            Some("Read it with an HDF5 package, such as hdf5r or rhdf5."),
        );
    }
    if prefix.get(4..8) == Some(b"TFL3".as_slice()) {
        return p("a TensorFlow Lite model", None);
    }
    if prefix.starts_with(b"\x1f\x8b") {
        return p("a gzip-compressed file", Some(GZIP_HINT));
    }
    if prefix.starts_with(b"BZh") {
        return p(
            "a bzip2-compressed file",
            Some("If it holds a safetensors file, read it through a connection that decompresses it: `bzfile(path)`."),
        );
    }
    if prefix.starts_with(b"\xfd7zXZ\x00") {
        return p(
            "an xz-compressed file",
            Some("If it holds a safetensors file, read it through a connection that decompresses it: `xzfile(path)`."),
        );
    }
    if prefix.starts_with(b"\x28\xb5\x2f\xfd") {
        return p(
            "a zstd-compressed file",
            Some("If it holds a safetensors file, decompress it first."),
        );
    }
    if [b"RDX2\n", b"RDX3\n", b"RDA2\n", b"RDA3\n"]
        .iter()
        .any(|m| prefix.starts_with(*m))
        || prefix.starts_with(b"X\n\x00\x00\x00")
        || prefix.starts_with(b"A\n2\n")
        || prefix.starts_with(b"A\n3\n")
    {
        return p(
            "an R data file",
            Some("Read it with `load()`, `readRDS()` or `unserialize()`."),
        );
    }
    looks_like_text(prefix)
}

/// The name of the first entry of a zip archive starting with `prefix`
/// (its local file header), if `prefix` holds it.
fn zip_first_name(prefix: &[u8]) -> Option<String> {
    let len = u16::from_le_bytes([*prefix.get(26)?, *prefix.get(27)?]) as usize;
    let name = prefix.get(30..30 + len)?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// What a text file is: a Git LFS pointer, a web page, JSON or other text.
fn looks_like_text(prefix: &[u8]) -> Option<(String, Option<&'static str>)> {
    // A UTF-8 character may be cut at the end of the prefix.
    let text = match std::str::from_utf8(prefix) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() && e.valid_up_to() + 4 > prefix.len() => {
            std::str::from_utf8(&prefix[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    if text.len() < MIN_TEXT
        || text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
    {
        return None;
    }
    let start = text.trim_start_matches('\u{feff}').trim_start();
    let lower = start
        .get(..start.len().min(16))
        .unwrap_or("")
        .to_ascii_lowercase();
    let found = if start.starts_with("version https://git-lfs") {
        (
            "a Git LFS pointer file, not the data it points to",
            Some(LFS_HINT),
        )
    } else if lower.starts_with("<!doctyp") || lower.starts_with("<html") {
        ("a web page (HTML)", Some(HTML_HINT))
    } else if start.starts_with('{') || start.starts_with('[') {
        ("JSON text", Some(JSON_HINT))
    } else {
        ("a text file", None)
    };
    Some((found.0.to_string(), found.1))
}
