//! Access to a file's bytes: positioned reads, memory maps, in-memory
//! buffers, and atomic writes. No R types here.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Kind, Result};
use crate::format::{self, Header, N_LEN};

/// How a file's bytes are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Positioned reads (`pread`) into the destination; nothing mapped.
    Read,
    /// A read-only private memory map, faulted in on demand.
    Mmap,
}

/// Where tensor bytes come from.
pub trait Source {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Bytes `[off, off + n)`, borrowed, when the source holds them in
    /// memory; `None` when they must be read with [`Source::read_at`].
    fn view(&self, off: usize, n: usize) -> Result<Option<&[u8]>>;

    /// Copies bytes `[off, off + buf.len())` into `buf`.
    fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()>;

    /// The same source as one several threads can read at once, if it is
    /// one; readers then split large reads between threads.
    fn as_sync(&self) -> Option<&(dyn Source + Sync)> {
        None
    }
}

/// Reads and validates the header of `src`.
pub fn read_header(src: &dyn Source) -> Result<Header> {
    let total = src.len();
    let mut prefix = [0u8; N_LEN];
    let have = total.min(N_LEN as u64) as usize;
    src.read_at(0, &mut prefix[..have])?;
    let n = format::header_len(&prefix[..have], total)?;
    // header_len checked N_LEN + n <= total, so this allocation is backed by the file.
    let mut json = vec![0u8; n];
    src.read_at(N_LEN, &mut json)?;
    let data_len = (total - (N_LEN + n) as u64) as usize;
    format::parse_header(&json, data_len)
}

/// An in-memory buffer, such as an R raw vector.
pub struct Memory<'a>(pub &'a [u8]);

impl Source for Memory<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn view(&self, off: usize, n: usize) -> Result<Option<&[u8]>> {
        match off.checked_add(n).and_then(|end| self.0.get(off..end)) {
            Some(s) => Ok(Some(s)),
            None => Err(Error::new(Kind::IncompleteBuffer, "the buffer ends before the tensor does")),
        }
    }

    fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        let src = self.view(off, buf.len())?.unwrap_or_default();
        buf.copy_from_slice(src);
        Ok(())
    }

    fn as_sync(&self) -> Option<&(dyn Source + Sync)> {
        Some(self)
    }
}

/// What identifies a file's contents for change detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp { len: meta.len(), mtime: meta.mtime(), mtime_nsec: meta.mtime_nsec(), ino: meta.ino() }
    }
}

/// An open file, read with `pread` or through a memory map.
pub struct FileSource {
    path: PathBuf,
    file: File,
    stamp: Stamp,
    map: Option<Mmap>,
}

impl FileSource {
    /// Opens `path` for reading with `backend`.
    pub fn open(path: &Path, backend: Backend) -> Result<FileSource> {
        let file = File::open(path).map_err(|e| Error::io(&e, "can't open the file"))?;
        let meta = file.metadata().map_err(|e| Error::io(&e, "can't stat the file"))?;
        if meta.is_dir() {
            return Err(Error::new(Kind::Io, "the path is a directory, not a file"));
        }
        let map = match backend {
            Backend::Read => None,
            Backend::Mmap if meta.len() == 0 => None,
            // SAFETY: the map is private and read-only, so we never write
            // through it. Another process can still truncate or rewrite the
            // file; every access goes through `view`, which checks the
            // file's size and modification stamp first, so a changed file
            // becomes an error instead of a SIGBUS or silently mixed data
            // (short of a change racing with the copy itself).
            Backend::Mmap => Some(
                unsafe { MmapOptions::new().map_copy_read_only(&file) }
                    .map_err(|e| Error::io(&e, "can't memory-map the file"))?,
            ),
        };
        Ok(FileSource { path: path.to_path_buf(), file, stamp: Stamp::of(&meta), map })
    }

    /// Errors when the file no longer has the size and stamp it had when
    /// opened.
    pub fn check_unchanged(&self) -> Result<()> {
        let meta = self.file.metadata().map_err(|e| Error::io(&e, "can't stat the file"))?;
        let now = Stamp::of(&meta);
        if now != self.stamp {
            let what = if now.len < self.stamp.len { "shrank" } else { "was modified" };
            return Err(Error::new(
                Kind::FileChanged,
                format!("the file {what} after it was opened ({} bytes, now {})", self.stamp.len, now.len),
            ));
        }
        Ok(())
    }

    /// The path this source was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is memory-mapped.
    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.stamp.len
    }

    fn view(&self, off: usize, n: usize) -> Result<Option<&[u8]>> {
        let Some(map) = &self.map else { return Ok(None) };
        self.check_unchanged()?;
        match off.checked_add(n).and_then(|end| map.get(off..end)) {
            Some(s) => Ok(Some(s)),
            None => Err(Error::new(Kind::FileChanged, "the file is shorter than its header says")),
        }
    }

    fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        match self.file.read_exact_at(buf, off as u64) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::new(
                Kind::FileChanged,
                "the file ended early; it was truncated after it was opened",
            )),
            Err(e) => Err(Error::io(&e, "can't read the file")),
        }
    }

    fn as_sync(&self) -> Option<&(dyn Source + Sync)> {
        Some(self)
    }
}

/// A file being written next to its target, renamed over it on commit and
/// removed if dropped uncommitted: an existing target is never touched by a
/// write that fails.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Creates a temporary file in the target's directory, readable and
    /// writable as the umask allows (not 0600).
    pub fn create(target: &Path) -> Result<AtomicFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(base) = target.file_name() else {
            return Err(Error::new(Kind::InvalidArgument, "the path must name a file"));
        };
        if target.is_dir() {
            return Err(Error::new(Kind::InvalidArgument, "the path is a directory"));
        }
        let mut last_err = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!(".{}.{}-{}.tmp", base.to_string_lossy(), std::process::id(), n);
            let temp = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).mode(0o666).open(&temp) {
                Ok(file) => return Ok(AtomicFile { target: target.to_path_buf(), temp, file: Some(file) }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(Error::io(&e, "can't create a file in the target directory")),
            }
        }
        let e = last_err.unwrap_or_else(|| std::io::Error::other("temporary names exhausted"));
        Err(Error::io(&e, "can't create a temporary file"))
    }

    /// The open temporary file.
    pub fn file(&mut self) -> Result<&mut File> {
        self.file.as_mut().ok_or_else(|| Error::new(Kind::Io, "the file is already closed"))
    }

    /// Flushes (and with `sync`, fsyncs) the data, then renames the file
    /// over the target.
    pub fn commit(mut self, sync: bool) -> Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(Error::new(Kind::Io, "the file is already closed"));
        };
        file.flush().map_err(|e| Error::io(&e, "can't write the file"))?;
        if sync {
            file.sync_all().map_err(|e| Error::io(&e, "can't flush the file to disk"))?;
        }
        drop(file);
        std::fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&e, "can't replace the target file"))?;
        if sync {
            // Persist the rename itself; failure here leaves a complete file.
            if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!("st-io-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn atomic_file_replaces_only_on_commit() {
        let dir = tempdir();
        let target = dir.join("x.bin");
        std::fs::write(&target, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.file().unwrap().write_all(b"partial").unwrap();
            // dropped without commit
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().unwrap().write_all(b"new").unwrap();
        f.commit(true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_source_detects_truncation() {
        let dir = tempdir();
        let p = dir.join("t.bin");
        std::fs::write(&p, vec![7u8; 4096]).unwrap();
        for backend in [Backend::Read, Backend::Mmap] {
            let src = FileSource::open(&p, backend).unwrap();
            let mut buf = [0u8; 16];
            src.read_at(100, &mut buf).unwrap();
            assert_eq!(buf, [7u8; 16]);
            std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(10).unwrap();
            let err = match backend {
                Backend::Read => src.read_at(100, &mut buf).unwrap_err(),
                Backend::Mmap => src.view(100, 16).unwrap_err(),
            };
            assert_eq!(err.kind, Kind::FileChanged);
            std::fs::write(&p, vec![7u8; 4096]).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_is_file_not_found() {
        let e = FileSource::open(Path::new("/nonexistent/x.safetensors"), Backend::Read).err().unwrap();
        assert_eq!(e.kind, Kind::FileNotFound);
    }
}
