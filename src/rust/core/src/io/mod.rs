//! Access to a file's bytes: positioned reads, memory maps, in-memory
//! buffers, and atomic writes. No R types here.
//!
//! Everything that differs between systems (how a file is opened, read at
//! an offset, stamped for change detection, replaced atomically, and the
//! memory advice given for maps) is in one module per platform family,
//! `unix.rs` and `windows.rs`, behind the same small set of functions.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Kind, Result};
use crate::format::{self, Header, N_LEN};

#[cfg(unix)]
#[path = "unix.rs"]
mod sys;
#[cfg(windows)]
#[path = "windows.rs"]
mod sys;

pub use sys::{lock_dir, populate_write, replace, start_writeback, sync_dir, DirLock};
use sys::{MapGuard, Stamp};

/// How a file's bytes are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Positioned reads (`pread`) into the destination; nothing mapped.
    Read,
    /// A read-only private memory map, faulted in on demand.
    Mmap,
    /// A map for a file on a local file system, positioned reads for one on
    /// a network or FUSE file system (see [`FileSource::open_at`]).
    Auto,
}

impl Backend {
    /// The backend named `name`: `"auto"`, `"mmap"` or `"read"`.
    pub fn from_name(name: &str) -> Result<Backend> {
        match name {
            "auto" => Ok(Backend::Auto),
            "mmap" => Ok(Backend::Mmap),
            "read" => Ok(Backend::Read),
            _ => Err(Error::new(
                Kind::InvalidArgument,
                format!("unknown backend `{name}`"),
            )),
        }
    }
}

/// Where tensor bytes come from.
pub trait Source {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Whether the source has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `[off, off + n)`, borrowed, when the source holds them in
    /// memory; `None` when they must be read with [`Source::read_at`].
    fn view(&self, off: usize, n: usize) -> Result<Option<&[u8]>>;

    /// [`Source::view`] for a reader about to read all of the bytes (not
    /// a slice picking a few): a memory map maps their pages at once.
    fn view_whole(&self, off: usize, n: usize) -> Result<Option<&[u8]>> {
        self.view(off, n)
    }

    /// Copies bytes `[off, off + buf.len())` into `buf`.
    fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()>;

    /// The same source as one several threads can read at once, if it is
    /// one; readers then split large reads between threads.
    fn as_sync(&self) -> Option<&(dyn Source + Sync)> {
        None
    }

    /// Says that this read is done with bytes `[off, off + n)`. A memory
    /// map lets go of their pages (the kernel keeps them in its page
    /// cache), so that reading a large file through a map doesn't hold the
    /// file's pages on top of the result; later views fault them in again.
    fn done_with(&self, off: usize, n: usize) {
        let _ = (off, n);
    }

    /// Errors when the bytes read since the source was opened may not be
    /// its own: a file that changed since (its size or modification stamp
    /// differ), or whose map lost pages under a read. Readers call it after
    /// copying, so that a change racing with a copy is an error, never
    /// silently mixed or zeroed data.
    fn verify(&self) -> Result<()> {
        Ok(())
    }
}

/// Reads and validates the header of `src`.
pub fn read_header(src: &dyn Source) -> Result<Header> {
    let total = src.len();
    let mut prefix = [0u8; format::SNIFF_LEN];
    let have = total.min(N_LEN as u64) as usize;
    src.read_at(0, &mut prefix[..have])?;
    let n = match format::header_len(&prefix[..have], total) {
        Ok(n) => n,
        Err(err) => {
            // More than the 8 bytes of the length say what a file that isn't
            // a safetensors file looks like. Only on failure: a remote source
            // may hold no more than the length and the header.
            let more = total.min(format::SNIFF_LEN as u64) as usize;
            if more <= have || src.read_at(0, &mut prefix[..more]).is_err() {
                return Err(err);
            }
            return Err(format::header_len(&prefix[..more], total)
                .err()
                .unwrap_or(err));
        }
    };
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
            None => Err(Error::new(
                Kind::IncompleteBuffer,
                "the buffer ends before the tensor does",
            )),
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

/// Some byte ranges of a larger source that is not here, such as a file on
/// an HTTP server of which the caller fetched only the ranges a read needs
/// ([`crate::read::plan_fetches`], [`crate::slice::Plan::fetch_ranges`]).
/// `len` is the whole source's length, so a header read from the segments
/// is validated against it exactly as a file's is. Reading bytes outside
/// the segments is an error, never a read of anything else.
pub struct Segments<'a> {
    len: u64,
    /// `(absolute offset, bytes)`, sorted by offset, not overlapping.
    parts: Vec<(usize, &'a [u8])>,
}

impl<'a> Segments<'a> {
    /// The segments `parts` (`(offset, bytes)`, in any order) of a source of
    /// `len` bytes. Segments that overlap or run past `len` are an error.
    pub fn new(len: u64, mut parts: Vec<(usize, &'a [u8])>) -> Result<Segments<'a>> {
        parts.sort_by_key(|p| p.0);
        let mut end = 0usize;
        for &(off, bytes) in &parts {
            let Some(stop) = off.checked_add(bytes.len()) else {
                return Err(Error::new(Kind::Overflow, "a segment's end overflows"));
            };
            if off < end || stop as u64 > len {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    format!("internal error: segment [{off}, {stop}) overlaps another or runs past the source's {len} bytes"),
                ));
            }
            end = stop;
        }
        Ok(Segments { len, parts })
    }

    /// The segment that holds byte `off`, if any, as `(its offset, bytes)`.
    fn holding(&self, off: usize) -> Option<(usize, &'a [u8])> {
        let i = self.parts.partition_point(|p| p.0 <= off).checked_sub(1)?;
        let (start, bytes) = self.parts[i];
        (off - start < bytes.len()).then_some((start, bytes))
    }

    fn missing(&self, off: usize, n: usize) -> Error {
        if (off as u64).saturating_add(n as u64) > self.len {
            Error::new(
                Kind::IncompleteBuffer,
                "the file ends before the tensor does",
            )
        } else {
            Error::new(
                Kind::InvalidArgument,
                format!(
                    "internal error: bytes [{off}, {}) of the source were not fetched",
                    off.saturating_add(n)
                ),
            )
        }
    }
}

impl Source for Segments<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn view(&self, off: usize, n: usize) -> Result<Option<&[u8]>> {
        if n == 0 {
            return Ok(Some(&[]));
        }
        let Some(end) = off.checked_add(n) else {
            return Ok(None);
        };
        // Bytes across segments, or not all fetched (a slice's cursor views
        // its whole tensor first), are for read_at, which copies what is
        // there and errors on the rest.
        Ok(self
            .holding(off)
            .and_then(|(start, bytes)| bytes.get(off - start..end - start)))
    }

    fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        let n = buf.len();
        let mut done = 0;
        while done < n {
            let at = off.checked_add(done).ok_or_else(|| self.missing(off, n))?;
            let Some((start, bytes)) = self.holding(at) else {
                return Err(self.missing(off, n));
            };
            let have = &bytes[at - start..];
            let k = have.len().min(n - done);
            buf[done..done + k].copy_from_slice(&have[..k]);
            done += k;
        }
        Ok(())
    }

    fn as_sync(&self) -> Option<&(dyn Source + Sync)> {
        Some(self)
    }
}

/// An open file, read with `pread` or through a memory map; or the part of
/// it from a byte offset on (`base`: a file a connection is positioned in).
pub struct FileSource {
    file: File,
    stamp: Stamp,
    /// Where the source starts in the file; offsets are relative to it.
    base: usize,
    map: Option<Map>,
}

/// A memory map of a whole file, registered with the guard that keeps a
/// truncation of the file from ending the process (Unix; see `sigbus.rs`).
struct Map {
    /// `None` when the guard's table is full (a map asked for explicitly).
    guard: Option<MapGuard>,
    bytes: Mmap,
}

impl Map {
    fn damaged(&self) -> bool {
        self.guard.as_ref().is_some_and(MapGuard::damaged)
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // Unregistered before it is unmapped (the field drops after this).
        self.guard = None;
    }
}

impl FileSource {
    /// Opens `path` for reading with `backend`.
    pub fn open(path: &Path, backend: Backend) -> Result<FileSource> {
        FileSource::open_at(path, backend, 0)
    }

    /// Opens `path` for reading with `backend`, as a source that starts at
    /// byte `base` of the file (which must not be past its end).
    /// [`Backend::Auto`] maps a file on a local file system and reads one on
    /// a network or FUSE file system with `pread`; it also reads with
    /// `pread` where a map could not be guarded against truncation.
    pub fn open_at(path: &Path, backend: Backend, base: u64) -> Result<FileSource> {
        let file = sys::open_read(path).map_err(|e| Error::io(&e, "can't open the file"))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(&e, "can't stat the file"))?;
        if meta.is_dir() {
            return Err(Error::new(Kind::Io, "the path is a directory, not a file"));
        }
        if !meta.is_file() {
            return Err(Error::new(
                Kind::Io,
                "the path is not a regular file (a FIFO, socket or device)",
            ));
        }
        let Some(base) = usize::try_from(base)
            .ok()
            .filter(|&b| b as u64 <= meta.len())
        else {
            return Err(Error::new(
                Kind::IncompleteBuffer,
                format!(
                    "the file has {} bytes, fewer than the {base} before the position to read from",
                    meta.len()
                ),
            ));
        };
        let want_map = match backend {
            Backend::Read => false,
            Backend::Mmap => true,
            Backend::Auto => sys::is_local(&file, path),
        };
        let map = if want_map && meta.len() > 0 {
            // SAFETY: the map is private and read-only, so we never write
            // through it. Another process can still truncate or rewrite the
            // file: every view checks the file's size and modification
            // stamp first, and a page that vanishes under a read in progress
            // (a truncation racing with the copy) is answered by the guard
            // with zeros and a mark that `verify` reports, instead of a
            // SIGBUS that would end the process.
            let bytes = unsafe { MmapOptions::new().map_copy_read_only(&file) }
                .map_err(|e| Error::io(&e, "can't memory-map the file"))?;
            let guard = MapGuard::register(bytes.as_ptr(), bytes.len());
            if guard.is_none() && backend == Backend::Auto {
                // An unguarded map is used only when asked for.
                None
            } else {
                Some(Map { guard, bytes })
            }
        } else {
            None
        };
        let stamp = sys::stamp(&file, &meta).map_err(|e| Error::io(&e, "can't stat the file"))?;
        Ok(FileSource {
            file,
            stamp,
            base,
            map,
        })
    }

    /// How the file is read: [`Backend::Mmap`] or [`Backend::Read`] (what
    /// [`Backend::Auto`] chose).
    pub fn backend(&self) -> Backend {
        if self.map.is_some() {
            Backend::Mmap
        } else {
            Backend::Read
        }
    }

    /// Whether `path` names this file now, as it was when opened (the same
    /// file, by its identity and modification time, not only its bytes):
    /// a reader of a shard set checks that no save replaced a shard it
    /// opened.
    pub fn is_at(&self, path: &Path) -> bool {
        let Ok(file) = sys::open_read(path) else {
            return false;
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        sys::stamp(&file, &meta).is_ok_and(|s| s == self.stamp)
    }

    /// Errors when the file no longer has the size and stamp it had when
    /// opened.
    pub fn check_unchanged(&self) -> Result<()> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::io(&e, "can't stat the file"))?;
        let now =
            sys::stamp(&self.file, &meta).map_err(|e| Error::io(&e, "can't stat the file"))?;
        if now != self.stamp {
            let what = if now.len < self.stamp.len {
                "shrank"
            } else {
                "was modified"
            };
            return Err(Error::new(
                Kind::FileChanged,
                format!(
                    "the file {what} after it was opened ({} bytes, now {})",
                    self.stamp.len, now.len
                ),
            ));
        }
        Ok(())
    }

    /// Errors when a page of the map vanished under a read (see
    /// [`Map`]): what was read from it since is not the file's.
    fn check_map(&self) -> Result<()> {
        if self.map.as_ref().is_some_and(Map::damaged) {
            return Err(Error::new(
                Kind::FileChanged,
                "the file was truncated (or could not be read) while it was being read",
            ));
        }
        Ok(())
    }

    /// Bytes `[off, off + n)` of the map (offsets relative to `base`), if
    /// the file is mapped, without any check.
    fn mapped(&self, off: usize, n: usize) -> Option<Option<&[u8]>> {
        let map = self.map.as_ref()?;
        Some(
            off.checked_add(self.base)
                .and_then(|start| start.checked_add(n).map(|end| (start, end)))
                .and_then(|(start, end)| map.bytes.get(start..end)),
        )
    }

    /// Starts reading bytes `[off, off + n)` of a mapped file into the page
    /// cache ahead of a read of them, without waiting and without mapping
    /// them (see `sys::prefetch`); for a file read with `pread`, nothing.
    pub fn prefetch(&self, off: usize, n: usize) {
        if let Some(Some(bytes)) = self.mapped(off, n) {
            sys::prefetch(bytes);
        }
    }

    /// Maps the pages of bytes `[off, off + n)` of a mapped file in one
    /// call, as [`Source::view_whole`] does, reading them from disk first
    /// if need be; for a file read with `pread`, or bytes past its end (a
    /// truncated file: the read of them reports it), nothing.
    pub fn populate(&self, off: usize, n: usize) {
        if let Some(Some(bytes)) = self.mapped(off, n) {
            sys::populate_read(bytes);
        }
    }

    /// Whether bytes `[off, off + n)` of a mapped file are in the page
    /// cache, as far as up to [`CACHE_SAMPLES`] of their pages, spread
    /// evenly and at least 4 KiB apart, show (`sys::cached`, a call per
    /// page: microseconds, where asking for every page of 32 MiB walks
    /// 8192); false for a file read with `pread`, or bytes past its end. A
    /// guess, which only decides whether pages are read ahead.
    pub fn cached(&self, off: usize, n: usize) -> bool {
        let Some(Some(bytes)) = self.mapped(off, n) else {
            return false;
        };
        let Some(last) = bytes.len().checked_sub(1) else {
            return true;
        };
        // The first and last bytes, and pages between them.
        let gaps = (CACHE_SAMPLES - 1).min(last >> 12).max(1);
        (0..=gaps).all(|i| {
            let at = last / gaps * i;
            sys::cached(&bytes[at..=at])
        })
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.stamp.len - self.base as u64
    }

    fn view(&self, off: usize, n: usize) -> Result<Option<&[u8]>> {
        let Some(bytes) = self.mapped(off, n) else {
            return Ok(None);
        };
        self.check_map()?;
        self.check_unchanged()?;
        match bytes {
            Some(s) => Ok(Some(s)),
            None => Err(Error::new(
                Kind::FileChanged,
                "the file is shorter than its header says",
            )),
        }
    }

    fn view_whole(&self, off: usize, n: usize) -> Result<Option<&[u8]>> {
        let v = self.view(off, n)?;
        if let Some(bytes) = v {
            if bytes.len() >= POPULATE_READ_MIN {
                // A 64 MiB tensor read from a map: 35 -> 31 ms on Linux.
                sys::populate_read(bytes);
            }
        }
        Ok(v)
    }

    fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        let Some(at) = off.checked_add(self.base) else {
            return Err(Error::new(Kind::Overflow, "the offset overflows"));
        };
        match sys::read_exact_at(&self.file, buf, at as u64) {
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

    fn done_with(&self, off: usize, n: usize) {
        if let Some(map) = &self.map {
            let len = map.bytes.len();
            let start = off.saturating_add(self.base).min(len);
            let end = off.saturating_add(self.base).saturating_add(n).min(len);
            // SAFETY: `bytes` lies in our private read-only map, which is
            // never written, so dropping its pages loses nothing.
            unsafe { sys::release_pages(&map.bytes[start..end]) };
        }
    }

    fn verify(&self) -> Result<()> {
        self.check_map()?;
        self.check_unchanged()
    }
}

/// A file read only with positioned reads, even where it is mapped: the
/// kernel copies straight from its page cache into the destination, with
/// no page of a map to fault in and drop again. Reading 1 GiB into new
/// memory on two threads took 0.25-0.27 s here, against 0.31-0.34 s copying
/// from the map; into memory already in use, 4 GiB took 0.39-0.40 s against
/// 0.44-0.46 s.
pub struct Positioned<'a>(pub &'a FileSource);

impl Source for Positioned<'_> {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn view(&self, _off: usize, _n: usize) -> Result<Option<&[u8]>> {
        Ok(None)
    }

    fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        self.0.read_at(off, buf)
    }

    fn as_sync(&self) -> Option<&(dyn Source + Sync)> {
        Some(self)
    }

    fn verify(&self) -> Result<()> {
        self.0.verify()
    }
}

/// Pages [`FileSource::cached`] asks about.
pub const CACHE_SAMPLES: usize = 16;

/// Whole views at least this large have their pages mapped in one call.
const POPULATE_READ_MIN: usize = 256 << 10;

/// A file being written next to its target, renamed over it on commit: an
/// existing target is never touched by a write that fails.
///
/// On Linux the data goes to an anonymous file (`O_TMPFILE`) in the
/// target's directory, which has no name until commit: if the process dies
/// mid-write (even by SIGKILL) the kernel frees it and nothing is left
/// behind. Commit links it under a temporary name and renames that over
/// the target. Where anonymous files are not available (other systems,
/// file systems without `O_TMPFILE`, no `/proc`), a named temporary file
/// `.<name>.<pid>-<n>.tmp` is used instead; it is removed on every failure
/// the process survives, but a killed process leaves it behind.
pub struct AtomicFile {
    target: PathBuf,
    dir: PathBuf,
    /// The temporary file's name; `None` while it is anonymous.
    temp: Option<PathBuf>,
    file: Option<File>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name for `base` in `dir`.
pub(crate) fn temp_name(dir: &Path, base: &std::ffi::OsStr) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        ".{}.{}-{}.tmp",
        base.to_string_lossy(),
        std::process::id(),
        n
    ))
}

/// `path` with its symbolic links followed to the file they name (which
/// need not exist: a dangling link names the file it would create), so
/// that a save through a link replaces the file it points to and keeps
/// the link. A path that is no link comes back as it is.
pub fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    // As many links as Linux follows (ELOOP beyond).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)
                    .map_err(|e| Error::io(&e, "can't read the symbolic link"))?;
                p = match p.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(Error::new(Kind::Io, "too many levels of symbolic links"))
}

/// Errors unless `target` (links followed) is a regular file or nothing:
/// a save replaces regular files only. A directory is an invalid argument;
/// a FIFO, a device or a socket is refused before anything is written (a
/// rename would replace it with a regular file).
pub fn check_file_target(target: &Path) -> Result<()> {
    match std::fs::metadata(target) {
        Ok(m) if m.is_dir() => Err(Error::new(Kind::InvalidArgument, "the path is a directory")),
        Ok(m) if !m.is_file() => Err(Error::new(
            Kind::Io,
            format!(
                "the path is {}, not a regular file; a save replaces regular files only",
                sys::special_kind(&m)
            ),
        )
        .with_hint("To write to it, pass a connection, as in `file(path, \"wb\")`.")),
        _ => Ok(()),
    }
}

impl AtomicFile {
    /// Creates the temporary file in the target's directory, readable and
    /// writable as the umask allows (not 0600). A target that is a
    /// symbolic link is followed ([`resolve_links`]): the file it names is
    /// replaced and the link kept. A target that is not a regular file is
    /// refused ([`check_file_target`]).
    pub fn create(target: &Path) -> Result<AtomicFile> {
        let target = &resolve_links(target)?;
        check_file_target(target)?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(base) = target.file_name() else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "the path must name a file",
            ));
        };
        if let Some(file) = sys::anonymous_in(&dir) {
            return Ok(AtomicFile {
                target: target.to_path_buf(),
                dir,
                temp: None,
                file: Some(file),
            });
        }
        AtomicFile::create_named(target, dir, base)
    }

    /// The fallback: a named temporary file.
    fn create_named(target: &Path, dir: PathBuf, base: &std::ffi::OsStr) -> Result<AtomicFile> {
        let mut last_err = None;
        for _ in 0..16 {
            let temp = temp_name(&dir, base);
            match sys::create_new(&temp) {
                Ok(file) => {
                    return Ok(AtomicFile {
                        target: target.to_path_buf(),
                        dir,
                        temp: Some(temp),
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(Error::io(&e, "can't create a file in the target directory")),
            }
        }
        let e = last_err.unwrap_or_else(|| std::io::Error::other("temporary names exhausted"));
        Err(Error::io(&e, "can't create a temporary file"))
    }

    /// The open temporary file.
    pub fn file(&mut self) -> Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| Error::new(Kind::Io, "the file is already closed"))
    }

    /// Whether the file is anonymous (nothing to clean up if the process
    /// dies before commit).
    pub fn is_anonymous(&self) -> bool {
        self.temp.is_none()
    }

    /// Flushes (and with `sync`, fsyncs) the data, then renames the file
    /// over the target.
    pub fn commit(self, sync: bool) -> Result<()> {
        self.commit_polling(sync, &mut || Ok(()))
    }

    /// As [`AtomicFile::commit`], calling `poll` every few milliseconds
    /// while the fsync runs; an error from `poll` (an interrupt) abandons
    /// the write at once, leaving the target as it was.
    pub fn commit_polling(
        mut self,
        sync: bool,
        poll: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(Error::new(Kind::Io, "the file is already closed"));
        };
        file.flush()
            .map_err(|e| Error::io(&e, "can't write the file"))?;
        if sync {
            sync_polling(file, poll)?;
        }
        if self.temp.is_none() {
            // Give the anonymous file a temporary name; from here on Drop
            // removes that name if the rename fails.
            let Some(base) = self.target.file_name().map(|b| b.to_os_string()) else {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    "the path must name a file",
                ));
            };
            self.temp = Some(sys::link_anonymous(file, &self.dir, &base)?);
        }
        let Some(temp) = self.temp.clone() else {
            return Err(Error::new(Kind::Io, "the temporary file has no name"));
        };
        sys::replace(&temp, &self.target)
            .map_err(|e| Error::io(&e, "can't replace the target file"))?;
        // Renamed: nothing left to remove.
        self.temp = None;
        self.file = None;
        if sync {
            // Persist the rename itself; failure here leaves a complete file.
            sys::sync_dir(&self.dir);
        }
        Ok(())
    }
}

/// Writes all of `buf` at byte `off` of `file`, without moving its cursor
/// (a positioned write, from any thread).
pub fn write_all_at(file: &File, buf: &[u8], off: u64) -> std::io::Result<()> {
    sys::write_all_at(file, buf, off)
}

/// fsyncs `file` on a helper thread, calling `poll` while it runs: flushing
/// gigabytes can take seconds, and the user may interrupt meanwhile. On an
/// error from `poll` the thread is left to finish on its own copy of the
/// descriptor; the caller drops the file.
pub(crate) fn sync_polling(file: &File, poll: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let copy = file
        .try_clone()
        .map_err(|e| Error::io(&e, "can't flush the file to disk"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(copy.sync_all());
    });
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(res) => return res.map_err(|e| Error::io(&e, "can't flush the file to disk")),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => poll()?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::new(Kind::Io, "can't flush the file to disk"))
            }
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // An anonymous file vanishes when closed; a named one not renamed
        // over the target is removed.
        self.file = None;
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(&temp);
        }
    }
}

/// A download's file, filled at offsets in any order (parallel ranges of
/// one file arrive interleaved) and renamed over its target once complete.
///
/// Writes are combined: bytes that continue a pending run are appended to
/// it, and a run is written (`pwrite`) once it holds [`PartialFile::RUN`]
/// bytes, so the small pieces an HTTP client delivers (16 KiB) cost one
/// system call per megabyte. [`PartialFile::flush`] writes every pending
/// run; only then are the bytes in the file (a caller recording progress
/// for a later resume records what was flushed).
pub struct PartialFile {
    path: PathBuf,
    file: Option<File>,
    /// Pending runs: (offset, bytes).
    runs: Vec<(u64, Vec<u8>)>,
}

impl PartialFile {
    /// Bytes a run collects before it is written.
    pub const RUN: usize = 1 << 20;

    /// Opens `path`, creating it if missing and keeping what it holds (a
    /// download to resume).
    pub fn open(path: &Path) -> Result<PartialFile> {
        let file = sys::open_rw(path)
            .map_err(|e| Error::io(&e, "can't open the file being downloaded"))?;
        Ok(PartialFile {
            path: path.to_path_buf(),
            file: Some(file),
            runs: Vec::new(),
        })
    }

    fn file(&self) -> Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| Error::new(Kind::Closed, "the file being downloaded is closed"))
    }

    /// Writes `bytes` at offset `off`, or keeps them to write with the run
    /// they continue.
    pub fn write_at(&mut self, off: u64, bytes: &[u8]) -> Result<()> {
        off.checked_add(bytes.len() as u64)
            .ok_or_else(|| Error::new(Kind::Overflow, "the download's offset overflows"))?;
        let at = self
            .runs
            .iter()
            .position(|(start, run)| *start + run.len() as u64 == off);
        let k = match at {
            Some(k) => k,
            None => {
                self.runs.push((off, Vec::with_capacity(Self::RUN)));
                self.runs.len() - 1
            }
        };
        self.runs[k].1.extend_from_slice(bytes);
        if self.runs[k].1.len() >= Self::RUN {
            let (start, run) = self.runs.swap_remove(k);
            self.write_run(start, &run)?;
        }
        Ok(())
    }

    fn write_run(&self, off: u64, run: &[u8]) -> Result<()> {
        sys::write_all_at(self.file()?, run, off)
            .map_err(|e| Error::io(&e, "can't write the file being downloaded"))
    }

    /// Writes every pending run.
    pub fn flush(&mut self) -> Result<()> {
        for (off, run) in std::mem::take(&mut self.runs) {
            self.write_run(off, &run)?;
        }
        Ok(())
    }

    /// The file's length now (pending runs not counted).
    pub fn size(&self) -> Result<u64> {
        let meta = self
            .file()?
            .metadata()
            .map_err(|e| Error::io(&e, "can't read the file being downloaded"))?;
        Ok(meta.len())
    }

    /// Cuts the file to `len` bytes, dropping pending runs (a download that
    /// starts over).
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        self.runs.clear();
        self.file()?
            .set_len(len)
            .map_err(|e| Error::io(&e, "can't truncate the file being downloaded"))
    }

    /// Flushes, checks that the file holds `len` bytes, closes it and
    /// renames it over `target` in one step.
    pub fn commit(mut self, target: &Path, len: u64) -> Result<()> {
        self.flush()?;
        let have = self.size()?;
        if have != len {
            return Err(Error::new(
                Kind::IncompleteBuffer,
                format!("the downloaded file has {have} bytes where {len} were expected"),
            ));
        }
        self.file = None;
        sys::replace(&self.path, target)
            .map_err(|e| Error::io(&e, "can't move the downloaded file into place"))
    }

    /// Closes the file, keeping it (and writing pending runs) for a later
    /// resume.
    pub fn close(mut self) -> Result<()> {
        self.flush()?;
        self.file = None;
        Ok(())
    }
}

/// An exclusive lock held on a lock file until dropped, the lock Python's
/// `filelock` takes (`flock` on Unix, the first byte's `LockFileEx` on
/// Windows), so that R and Python processes sharing a cache exclude each
/// other.
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Takes the lock on `path` (created if missing) without waiting;
    /// `None` when someone else holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let file = sys::open_lock(path).map_err(|e| Error::io(&e, "can't open the lock file"))?;
        match sys::try_lock(&file) {
            Ok(true) => Ok(Some(FileLock { file })),
            Ok(false) => Ok(None),
            Err(e) => Err(Error::io(&e, "can't lock the lock file")),
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        sys::unlock(&self.file);
    }
}

/// Folders for tests, here and in the modules that write files, and what a
/// map holds in memory.
#[cfg(test)]
pub(crate) mod test_dirs {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A new empty folder under the system's temporary folder.
    pub fn tempdir(prefix: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!(
            "st-{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Pages of the current process's mapping that contains `addr` which are
    /// resident, from /proc/self/smaps (Linux only).
    #[cfg(target_os = "linux")]
    pub fn resident_kib(addr: usize) -> u64 {
        smaps_kib(addr, "Rss")
    }

    /// Field `field` (in kB, such as `Rss` or `AnonHugePages`) of the current
    /// process's mapping that contains `addr`, from /proc/self/smaps (Linux
    /// only).
    #[cfg(target_os = "linux")]
    pub fn smaps_kib(addr: usize, field: &str) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = a <= addr && addr < b;
                    continue;
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix(field).and_then(|v| v.strip_prefix(':')) {
                    return v.trim().trim_end_matches(" kB").trim().parse().unwrap();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    /// The names in `dir`, sorted.
    pub fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    use test_dirs::resident_kib;

    fn tempdir() -> PathBuf {
        test_dirs::tempdir("io")
    }

    #[test]
    fn done_with_drops_mapped_pages_but_not_their_bytes() {
        let dir = tempdir();
        let path = dir.join("d.bin");
        let bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        for backend in [Backend::Read, Backend::Mmap] {
            let src = FileSource::open(&path, backend).unwrap();
            let whole = |src: &FileSource| match src.view(0, bytes.len()).unwrap() {
                Some(v) => v.to_vec(),
                None => {
                    let mut b = vec![0; bytes.len()];
                    src.read_at(0, &mut b).unwrap();
                    b
                }
            };
            assert_eq!(whole(&src), bytes);
            #[cfg(target_os = "linux")]
            let addr = src.map.as_ref().map(|m| m.bytes.as_ptr() as usize);
            #[cfg(target_os = "linux")]
            if let Some(a) = addr {
                assert!(resident_kib(a) >= 1000, "the view faulted the map in");
            }
            // Not on page boundaries: the partial pages at both ends stay.
            src.done_with(100, bytes.len() - 200);
            #[cfg(target_os = "linux")]
            if let Some(a) = addr {
                let kib = resident_kib(a);
                assert!(kib <= 8, "{kib} KiB still resident");
            }
            assert_eq!(whole(&src), bytes, "the same bytes after letting go");
            // Out-of-range and empty ranges are ignored.
            src.done_with(bytes.len() - 10, 1 << 30);
            src.done_with(usize::MAX - 5, 10);
            src.done_with(0, 0);
            assert_eq!(whole(&src), bytes);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_mapped_bytes_in_the_page_cache_are_cached() {
        let dir = tempdir();
        let path = dir.join("cached.bin");
        let bytes = vec![7u8; 1 << 20];
        std::fs::write(&path, &bytes).unwrap();
        // Read whole through a reader, the file is in the page cache.
        let r = FileSource::open(&path, Backend::Read).unwrap();
        let mut buf = vec![0u8; bytes.len()];
        r.read_at(0, &mut buf).unwrap();
        let src = FileSource::open(&path, Backend::Mmap).unwrap();
        // Linux tells for pages not mapped here (a file this process owns);
        // Windows never (sys::cached).
        #[cfg(target_os = "linux")]
        assert!(src.cached(0, bytes.len()));
        #[cfg(windows)]
        assert!(!src.cached(0, bytes.len()));
        // Past the end, or without a map: not known to be.
        assert!(!src.cached(bytes.len() - 10, 4096));
        assert!(!src.cached(usize::MAX - 5, 10));
        assert!(!r.cached(0, 10));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn view_whole_maps_the_pages_that_view_leaves_to_faults() {
        let dir = tempdir();
        let path = dir.join("w.bin");
        let bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let src = FileSource::open(&path, Backend::Mmap).unwrap();
        let addr = src.map.as_ref().unwrap().bytes.as_ptr() as usize;
        // A view touches nothing: a slice reading a few rows faults in only those.
        let v = src.view(0, bytes.len()).unwrap().unwrap();
        assert!(resident_kib(addr) <= 8, "a view alone mapped pages");
        assert_eq!(v.len(), bytes.len());
        // A whole view maps its pages (MADV_POPULATE_READ: Linux >= 5.14).
        let w = src.view_whole(4096, bytes.len() - 8192).unwrap().unwrap();
        let kib = resident_kib(addr);
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut ver = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|x| x.parse::<u32>().ok());
        if (ver.next().unwrap_or(0), ver.next().unwrap_or(0)) >= (5, 14) {
            assert!(kib >= 1000, "only {kib} KiB mapped by a whole view");
        }
        assert_eq!(w, &bytes[4096..bytes.len() - 4096]);
        // Below the threshold, nothing is done ahead of the read.
        src.done_with(0, bytes.len());
        src.view_whole(0, POPULATE_READ_MIN - 1).unwrap().unwrap();
        assert!(resident_kib(addr) <= 8);
        // A reader without a map reads as before.
        let r = FileSource::open(&path, Backend::Read).unwrap();
        assert!(r.view_whole(0, 10).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
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

    use test_dirs::entries;

    #[test]
    #[cfg(target_os = "linux")]
    fn anonymous_file_has_no_name_until_commit() {
        let dir = tempdir();
        let target = dir.join("m.safetensors");
        std::fs::write(&target, b"old").unwrap();
        let mut f = AtomicFile::create(&target).unwrap();
        assert!(f.is_anonymous(), "this file system supports O_TMPFILE");
        f.file().unwrap().write_all(b"new data").unwrap();
        // A process killed now leaves nothing behind: there is no name.
        assert_eq!(entries(&dir), vec!["m.safetensors"]);
        f.commit(false).unwrap();
        assert_eq!(entries(&dir), vec!["m.safetensors"]);
        assert_eq!(std::fs::read(&target).unwrap(), b"new data");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn named_fallback_is_removed_on_failure_and_renamed_on_commit() {
        let dir = tempdir();
        let target = dir.join("n.bin");
        std::fs::write(&target, b"old").unwrap();
        {
            let mut f =
                AtomicFile::create_named(&target, dir.clone(), std::ffi::OsStr::new("n.bin"))
                    .unwrap();
            f.file().unwrap().write_all(b"partial").unwrap();
            let names = entries(&dir);
            assert_eq!(names.len(), 2);
            assert!(
                names[0].starts_with(".n.bin.") && names[0].ends_with(".tmp"),
                "{names:?}"
            );
        }
        assert_eq!(entries(&dir), vec!["n.bin"]);
        let mut f =
            AtomicFile::create_named(&target, dir.clone(), std::ffi::OsStr::new("n.bin")).unwrap();
        f.file().unwrap().write_all(b"new").unwrap();
        f.commit(true).unwrap();
        assert_eq!(entries(&dir), vec!["n.bin"]);
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_rename_leaves_no_temporary_name() {
        // The target is a non-empty directory, which rename can't replace;
        // create() refuses directories, so make it one after creation.
        let dir = tempdir();
        let target = dir.join("d");
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().unwrap().write_all(b"x").unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"k").unwrap();
        assert!(f.commit(false).is_err());
        assert_eq!(entries(&dir), vec!["d"]);
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
            let truncated = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(10);
            // Windows refuses to truncate a mapped file (ERROR_USER_MAPPED_FILE),
            // which protects the map as well.
            #[cfg(windows)]
            if backend == Backend::Mmap {
                assert_eq!(truncated.unwrap_err().raw_os_error(), Some(1224));
                assert_eq!(src.view(100, 16).unwrap(), Some(&[7u8; 16][..]));
                continue;
            }
            truncated.unwrap();
            let err = match backend {
                Backend::Read => src.read_at(100, &mut buf).unwrap_err(),
                Backend::Mmap | Backend::Auto => src.view(100, 16).unwrap_err(),
            };
            assert_eq!(err.kind, Kind::FileChanged);
            std::fs::write(&p, vec![7u8; 4096]).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_positioned_source_reads_a_mapped_file_without_its_map() {
        let dir = tempdir();
        let p = dir.join("pos.bin");
        let bytes: Vec<u8> = (0..(1u32 << 16)).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        for backend in [Backend::Read, Backend::Mmap] {
            let file = FileSource::open(&p, backend).unwrap();
            let src = Positioned(&file);
            assert_eq!(src.len(), bytes.len() as u64);
            // Never a view, even of a map: every read is a positioned one.
            assert!(src.view(0, 16).unwrap().is_none());
            assert!(src.view_whole(0, bytes.len()).unwrap().is_none());
            assert!(src.as_sync().is_some());
            let mut buf = vec![0u8; 1000];
            src.read_at(777, &mut buf).unwrap();
            assert_eq!(buf, bytes[777..1777]);
            src.verify().unwrap();
        }
        // A file changed since it was opened: reads past its new end and
        // the check after a read are errors.
        let file = FileSource::open(&p, Backend::Mmap).unwrap();
        #[cfg(not(windows))]
        {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(100)
                .unwrap();
            let src = Positioned(&file);
            let mut buf = vec![0u8; 16];
            assert_eq!(
                src.read_at(1000, &mut buf).unwrap_err().kind,
                Kind::FileChanged
            );
            assert_eq!(src.verify().unwrap_err().kind, Kind::FileChanged);
        }
        drop(file);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_source_may_start_past_the_start_of_its_file() {
        let dir = tempdir();
        let p = dir.join("at.bin");
        let json = br#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#;
        let mut bytes = b"what came before".to_vec();
        let base = bytes.len();
        bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bytes.extend_from_slice(json);
        bytes.extend_from_slice(&[7, 8, 9]);
        std::fs::write(&p, &bytes).unwrap();
        for backend in [Backend::Read, Backend::Mmap, Backend::Auto] {
            let src = FileSource::open_at(&p, backend, base as u64).unwrap();
            assert_eq!(src.len(), (bytes.len() - base) as u64);
            let header = read_header(&src).unwrap();
            let at = header.data_start();
            let mut got = [0u8; 3];
            src.read_at(at, &mut got).unwrap();
            assert_eq!(got, [7, 8, 9]);
            if backend != Backend::Read {
                assert_eq!(src.view(at, 3).unwrap(), Some(&[7u8, 8, 9][..]));
            }
            assert!(src.read_at(at + 1, &mut got).is_err(), "past the end");
            src.done_with(0, usize::MAX);
            assert!(src.verify().is_ok());
        }
        // At the end: an empty source; past it: an error.
        let end = FileSource::open_at(&p, Backend::Auto, bytes.len() as u64).unwrap();
        assert!(end.is_empty());
        let e = FileSource::open_at(&p, Backend::Auto, bytes.len() as u64 + 1).err();
        assert_eq!(e.unwrap().kind, Kind::IncompleteBuffer);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn a_truncation_under_a_map_read_is_an_error_not_a_crash() {
        let dir = tempdir();
        let p = dir.join("bus.bin");
        let n = 64 * 4096;
        std::fs::write(&p, vec![9u8; n]).unwrap();
        for backend in [Backend::Auto, Backend::Mmap] {
            let src = FileSource::open(&p, backend).unwrap();
            if src.backend() != Backend::Mmap {
                // The temporary directory is on a network file system.
                assert_eq!(backend, Backend::Auto);
                continue;
            }
            let v = src.view(0, n).unwrap().unwrap();
            assert!(src.verify().is_ok());
            // Truncated while the view is in use: its pages past the new end
            // vanish, and reading them would be a SIGBUS.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(4096)
                .unwrap();
            let sum: u64 = v.iter().map(|&b| u64::from(b)).sum();
            // The first page is the file's; the rest read as zeros.
            assert_eq!(sum, 9 * 4096);
            let e = src.verify().unwrap_err();
            assert_eq!(e.kind, Kind::FileChanged);
            assert!(e.message.contains("truncated"), "{}", e.message);
            // Every later view says so too, even once the file is whole again.
            std::fs::write(&p, vec![9u8; n]).unwrap();
            assert_eq!(src.view(0, 10).unwrap_err().kind, Kind::FileChanged);
            drop(src);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn a_sigbus_outside_the_maps_read_still_ends_the_process() {
        // Run in a child: the test binary itself, asked to fault.
        if std::env::var_os("ST_SIGBUS_CHILD").is_some() {
            let dir = tempdir();
            let p = dir.join("other.bin");
            std::fs::write(&p, vec![1u8; 8192]).unwrap();
            // A guarded map, so that the handler is installed ...
            let ours = FileSource::open(&p, Backend::Mmap).unwrap();
            assert_eq!(ours.backend(), Backend::Mmap);
            // ... and a map of someone else's, which the handler leaves alone.
            let f = File::open(&p).unwrap();
            // SAFETY: the test truncates the file to show the fault.
            let theirs = unsafe { MmapOptions::new().map(&f) }.unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(0)
                .unwrap();
            // The directory goes first: the fault below ends the process.
            std::fs::remove_dir_all(&dir).unwrap();
            let x = std::hint::black_box(theirs[4096]);
            println!("survived {x}");
            std::process::exit(0);
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "io::tests::a_sigbus_outside_the_maps_read_still_ends_the_process",
                "--nocapture",
            ])
            .env("ST_SIGBUS_CHILD", "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGBUS),
            "{:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    #[cfg(unix)]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = tempdir();
        let fifo = dir.join("f");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // With no writer, a blocking open would never return.
        let e = FileSource::open(&fifo, Backend::Read).err().unwrap();
        assert_eq!(e.kind, Kind::Io);
        let e = FileSource::open(Path::new("/dev/zero"), Backend::Mmap)
            .err()
            .unwrap();
        assert_eq!(e.kind, Kind::Io);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_serve_their_bytes_and_nothing_else() {
        let file: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8).collect();
        // Two segments that touch ([10, 40) and [40, 60)) and one apart.
        let src = Segments::new(
            200,
            vec![
                (100, &file[100..150]),
                (10, &file[10..40]),
                (40, &file[40..60]),
            ],
        )
        .unwrap();
        assert_eq!(src.len(), 200);
        assert_eq!(src.view(12, 5).unwrap(), Some(&file[12..17]));
        assert_eq!(src.view(100, 50).unwrap(), Some(&file[100..150]));
        assert_eq!(src.view(7, 0).unwrap(), Some(&[][..]));
        // Across touching segments: no view, but a read.
        assert_eq!(src.view(35, 10).unwrap(), None);
        let mut buf = vec![0u8; 50];
        src.read_at(10, &mut buf).unwrap();
        assert_eq!(buf, file[10..60]);
        // Bytes not fetched, or past the end, are no view and a read error.
        for (off, n) in [
            (0, 5),
            (55, 10),
            (60, 1),
            (99, 2),
            (149, 2),
            (190, 20),
            (usize::MAX - 1, 4),
        ] {
            assert_eq!(src.view(off, n).unwrap(), None, "view({off}, {n})");
            let mut b = vec![0u8; n];
            assert!(src.read_at(off, &mut b).is_err(), "read_at({off}, {n})");
        }
        let mut b = vec![0u8; 20];
        assert_eq!(
            src.read_at(190, &mut b).unwrap_err().kind,
            Kind::IncompleteBuffer
        );
        assert_eq!(
            src.read_at(60, &mut b[..5]).unwrap_err().kind,
            Kind::InvalidArgument
        );
        // Overlapping segments, or segments past the end, are refused.
        assert!(Segments::new(200, vec![(0, &file[0..20]), (10, &file[10..30])]).is_err());
        assert!(Segments::new(100, vec![(90, &file[90..120])]).is_err());
        assert!(Segments::new(200, vec![(usize::MAX - 2, &file[0..10])]).is_err());
        assert!(Segments::new(0, vec![]).unwrap().is_empty());
    }

    #[test]
    fn a_header_read_from_segments_is_validated_against_the_whole_length() {
        let json = br#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
        let mut file = (json.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(json);
        let data_start = file.len();
        file.extend_from_slice(&[1, 2, 3, 4]);
        let prefix = &file[..data_start];
        let header =
            read_header(&Segments::new(file.len() as u64, vec![(0, prefix)]).unwrap()).unwrap();
        assert_eq!(header.data_start(), data_start);
        // A length that says the file is longer or shorter than its tensors.
        for len in [file.len() + 1, file.len() - 1] {
            let e =
                read_header(&Segments::new(len as u64, vec![(0, prefix)]).unwrap()).unwrap_err();
            assert_eq!(e.kind, Kind::IncompleteBuffer, "{len}");
        }
        // A length shorter than the header itself.
        let e = read_header(&Segments::new(20, vec![(0, &prefix[..20])]).unwrap()).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidHeaderLength);
        // The header's bytes must be there.
        let e = read_header(&Segments::new(file.len() as u64, vec![(0, &prefix[..30])]).unwrap())
            .unwrap_err();
        assert_eq!(e.kind, Kind::InvalidArgument);
        // A server that ignores ranges streams the file: the header is read
        // from the length and the header alone, however long the data.
        let json = br#"{"a":{"dtype":"U8","shape":[300],"data_offsets":[0,300]}}"#;
        let mut prefix = (json.len() as u64).to_le_bytes().to_vec();
        prefix.extend_from_slice(json);
        let len = prefix.len() as u64 + 300;
        let header = read_header(&Segments::new(len, vec![(0, &prefix)]).unwrap()).unwrap();
        assert_eq!(header.data_start(), prefix.len());
    }

    #[test]
    fn a_file_source_knows_whether_a_path_names_it() {
        let dir = tempdir();
        let p = dir.join("s.bin");
        std::fs::write(&p, b"same bytes").unwrap();
        let src = FileSource::open(&p, Backend::Read).unwrap();
        assert!(src.is_at(&p));
        assert!(!src.is_at(&dir.join("none")));
        // Another file with the same bytes renamed over it is another file.
        let q = dir.join("t.bin");
        std::fs::write(&q, b"same bytes").unwrap();
        std::fs::rename(&q, &p).unwrap();
        assert!(!src.is_at(&p));
        drop(src);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_is_file_not_found() {
        let e = FileSource::open(Path::new("/nonexistent/x.safetensors"), Backend::Read)
            .err()
            .unwrap();
        assert_eq!(e.kind, Kind::FileNotFound);
    }

    #[test]
    fn partial_file_combines_writes_in_any_order() {
        let dir = tempdir();
        let path = dir.join("blob.incomplete");
        let target = dir.join("blob");
        let data: Vec<u8> = (0..3 * PartialFile::RUN + 123)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut f = PartialFile::open(&path).unwrap();
        // Two interleaved ranges, in pieces of 16 KiB.
        let half = data.len() / 2;
        let mut a = 0;
        let mut b = half;
        while a < half || b < data.len() {
            if b < data.len() {
                let n = (data.len() - b).min(16384);
                f.write_at(b as u64, &data[b..b + n]).unwrap();
                b += n;
            }
            if a < half {
                let n = (half - a).min(16384);
                f.write_at(a as u64, &data[a..a + n]).unwrap();
                a += n;
            }
        }
        // Short of the full length: refused, and the file kept.
        let short = PartialFile::open(&dir.join("other")).unwrap();
        assert_eq!(
            short.commit(&target, 10).unwrap_err().kind,
            Kind::IncompleteBuffer
        );
        assert!(!target.exists());
        f.commit(&target, data.len() as u64).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), data);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn partial_file_resumes_and_truncates() {
        let dir = tempdir();
        let path = dir.join("x.incomplete");
        let mut f = PartialFile::open(&path).unwrap();
        f.write_at(0, b"hello").unwrap();
        assert_eq!(f.size().unwrap(), 0);
        f.close().unwrap();
        let mut f = PartialFile::open(&path).unwrap();
        assert_eq!(f.size().unwrap(), 5);
        f.write_at(5, b" world").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        f.truncate(2).unwrap();
        assert_eq!(f.size().unwrap(), 2);
        drop(f);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_lock_excludes_until_dropped() {
        let dir = tempdir();
        let path = dir.join("a.lock");
        let held = FileLock::try_acquire(&path).unwrap();
        assert!(held.is_some());
        // A second open file description is refused while the first holds it.
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_acquire(&path).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
