//! The Windows side of file access, behind the functions `io` calls;
//! `unix.rs` provides the same ones.
//!
//! The few kernel32 functions needed beyond `std` are declared here rather
//! than taken from the `windows-sys` or `winapi` crates, which would add
//! megabytes to the vendored crates shipped to CRAN.

use std::ffi::{c_void, OsStr};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::FileExt;
use std::os::windows::io::{AsRawHandle, RawHandle};
use std::path::{Path, PathBuf};

use crate::error::{Error, Kind, Result};

/// `FILETIME`: 100-nanosecond intervals since 1601-01-01 (UTC), in two halves.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FileTime {
    low: u32,
    high: u32,
}

/// `BY_HANDLE_FILE_INFORMATION`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ByHandleFileInformation {
    attributes: u32,
    creation_time: FileTime,
    last_access_time: FileTime,
    last_write_time: FileTime,
    volume_serial_number: u32,
    file_size_high: u32,
    file_size_low: u32,
    number_of_links: u32,
    file_index_high: u32,
    file_index_low: u32,
}

const MOVEFILE_REPLACE_EXISTING: u32 = 0x1;
const MOVEFILE_WRITE_THROUGH: u32 = 0x8;

const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SHARING_VIOLATION: i32 = 32;
const ERROR_HANDLE_EOF: i32 = 38;
const ERROR_USER_MAPPED_FILE: i32 = 1224;

const ERROR_LOCK_VIOLATION: i32 = 33;
const LOCKFILE_FAIL_IMMEDIATELY: u32 = 0x1;
const LOCKFILE_EXCLUSIVE_LOCK: u32 = 0x2;

/// `OVERLAPPED`, whose offset fields name the start of a locked range.
#[repr(C)]
#[derive(Default)]
struct Overlapped {
    internal: usize,
    internal_high: usize,
    offset: u32,
    offset_high: u32,
    event: usize,
}

#[link(name = "kernel32")]
extern "system" {
    fn GetFileInformationByHandle(file: RawHandle, info: *mut ByHandleFileInformation) -> i32;
    fn MoveFileExW(existing: *const u16, new: *const u16, flags: u32) -> i32;
    fn VirtualUnlock(address: *mut c_void, size: usize) -> i32;
    fn GetVolumePathNameW(file_name: *const u16, volume: *mut u16, len: u32) -> i32;
    fn GetDriveTypeW(root: *const u16) -> u32;
    fn LockFileEx(
        file: RawHandle,
        flags: u32,
        reserved: u32,
        low: u32,
        high: u32,
        overlapped: *mut Overlapped,
    ) -> i32;
    fn UnlockFileEx(
        file: RawHandle,
        reserved: u32,
        low: u32,
        high: u32,
        overlapped: *mut Overlapped,
    ) -> i32;
    fn CreateMutexW(attributes: *mut c_void, initial_owner: i32, name: *const u16) -> RawHandle;
    fn WaitForSingleObject(handle: RawHandle, milliseconds: u32) -> u32;
    fn ReleaseMutex(handle: RawHandle) -> i32;
    fn CloseHandle(handle: RawHandle) -> i32;
}

const WAIT_OBJECT_0: u32 = 0;
const WAIT_ABANDONED: u32 = 0x80;
const WAIT_TIMEOUT: u32 = 0x102;

/// What identifies a file's contents for change detection: a file
/// truncated, rewritten or replaced in place changes one of these. They
/// come from `GetFileInformationByHandle` on the open handle; the volume
/// serial number and file index identify the file as the inode number does
/// on Unix. As there, a file renamed over the path is not a change: the
/// handle keeps the file it opened (and Windows mostly refuses that rename,
/// see [`open_read`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Size in bytes.
    pub len: u64,
    /// Last write time, in 100-nanosecond intervals since 1601.
    mtime: u64,
    volume: u32,
    index: u64,
}

/// The stamp of an open file, read from its handle (`meta` is not needed:
/// the one call gives the size and time along with the file's identity).
pub fn stamp(file: &File, _meta: &Metadata) -> io::Result<Stamp> {
    let mut info = ByHandleFileInformation::default();
    // SAFETY: the handle is open for as long as `file` lives, and `info` is
    // a writable BY_HANDLE_FILE_INFORMATION that the call only fills in.
    let ok = unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut info) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |high: u32, low: u32| (u64::from(high) << 32) | u64::from(low);
    Ok(Stamp {
        len: join(info.file_size_high, info.file_size_low),
        mtime: join(info.last_write_time.high, info.last_write_time.low),
        volume: info.volume_serial_number,
        index: join(info.file_index_high, info.file_index_low),
    })
}

/// Opens `path` for reading. `std` opens with the share mode read, write
/// and delete, which is kept: others may read and write the file while we
/// hold it (the stamp notices), and delete it or rename over it while it is
/// not memory-mapped, where the system allows that for an open file (POSIX
/// rename semantics, Windows 10 and later, as `std::fs::rename` asks for;
/// `MoveFileExW` and Wine still refuse). Pipes and devices are refused
/// later by their metadata, as on Unix; nothing here blocks on them.
pub fn open_read(path: &Path) -> io::Result<File> {
    match OpenOptions::new().read(true).open(path) {
        // Opening a directory without FILE_FLAG_BACKUP_SEMANTICS is refused
        // as "access denied"; say what it is instead.
        Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED) && path.is_dir() => Err(
            io::Error::new(e.kind(), "the path is a directory, not a file"),
        ),
        res => res,
    }
}

/// Fills `buf` from offset `off` of `file` with positioned reads
/// (`ReadFile` with an offset). Unlike `pread` on Unix, each read also moves
/// the handle's file position, which nothing here relies on: every read
/// names its offset, so threads can still share the file. A file that ends
/// first gives `ErrorKind::UnexpectedEof`, as `read_exact_at` does on Unix.
pub fn read_exact_at(file: &File, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_read(buf, off) {
            Ok(0) => break,
            Ok(n) => {
                buf = &mut buf[n..];
                off = off.checked_add(n as u64).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "file offset overflow")
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A read that starts at or past the end of the file.
            Err(e) if e.raw_os_error() == Some(ERROR_HANDLE_EOF) => break,
            Err(e) => return Err(e),
        }
    }
    if buf.is_empty() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "failed to fill whole buffer",
        ))
    }
}

/// Creates a new file for writing, failing if `path` exists. It gets the
/// permissions its directory passes on (Windows has no umask). It is shared
/// for read, write and delete, so that [`replace`] can rename it while it
/// is open.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Opens `path` for reading and writing at offsets, creating it if
/// missing, never truncating it; shared for read, write and delete, so
/// that [`replace`] can rename it.
pub fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Writes all of `buf` at offset `off` of `file` with positioned writes
/// (`WriteFile` with an offset; the handle's file position moves, which
/// nothing here relies on).
pub fn write_all_at(file: &File, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_write(buf, off) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ))
            }
            Ok(n) => {
                buf = &buf[n..];
                off = off.checked_add(n as u64).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "file offset overflow")
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens (creating it) a lock file: as [`open_rw`] (Windows has no
/// permission bits to give it).
pub fn open_lock(path: &Path) -> io::Result<File> {
    open_rw(path)
}

/// Takes an exclusive lock on the first byte of `file` without waiting
/// (`LockFileEx`): `Ok(false)` when another handle holds it. Python's
/// `filelock` locks the same byte (`msvcrt.locking`), so the two exclude
/// each other.
pub fn try_lock(file: &File) -> io::Result<bool> {
    let mut overlapped = Overlapped::default();
    // SAFETY: the handle is open for as long as `file` lives; `overlapped`
    // is a zeroed OVERLAPPED naming offset 0, which the call only reads for
    // a lock that completes (or fails) at once.
    let ok = unsafe {
        LockFileEx(
            file.as_raw_handle(),
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut overlapped,
        )
    };
    if ok != 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(ERROR_LOCK_VIOLATION) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Releases the lock [`try_lock`] took.
pub fn unlock(file: &File) {
    let mut overlapped = Overlapped::default();
    // SAFETY: as in try_lock; failure leaves the lock to the close.
    unsafe { UnlockFileEx(file.as_raw_handle(), 0, 1, 0, &mut overlapped) };
}

/// Paths at least this long get the `\\?\` prefix, which lifts the
/// 260-character limit of the classic Win32 path functions (the same bound
/// `std` uses for its own calls).
const LONG_PATH: usize = 248;

/// `path` as a NUL-terminated UTF-16 string for a wide (`...W`) call, so
/// that any name Windows allows works, not only ASCII ones; long paths are
/// made absolute and prefixed with `\\?\` (or `\\?\UNC\`).
fn wide_path(path: &Path) -> io::Result<Vec<u16>> {
    let mut wide: Vec<u16> = path.as_os_str().encode_wide().collect();
    if wide.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path contains a NUL character",
        ));
    }
    if wide.len() >= LONG_PATH {
        let abs: Vec<u16> = std::path::absolute(path)?
            .as_os_str()
            .encode_wide()
            .collect();
        let s = |text: &str| -> Vec<u16> { text.encode_utf16().collect() };
        let bs = u16::from(b'\\');
        wide = if abs.starts_with(&s(r"\\?\")) || abs.starts_with(&s(r"\\.\")) {
            abs
        } else if abs.starts_with(&[bs, bs]) {
            // \\server\share\... -> \\?\UNC\server\share\...
            [s(r"\\?\UNC\"), abs[2..].to_vec()].concat()
        } else if abs.get(1) == Some(&u16::from(b':')) {
            [s(r"\\?\"), abs].concat()
        } else {
            abs
        };
    }
    wide.push(0);
    Ok(wide)
}

/// Moves `from` over `to` in one step, with `MoveFileExW` and
/// `MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH` (the call returns
/// once the move is on disk).
///
/// Windows can't replace a file that is memory-mapped, or open by someone
/// who did not allow deleting it; that error says so, as the usual cause is
/// a handle still open on the file, here or in another process. Virus
/// scanners and search indexers open files for a moment too, so a file in
/// use is tried again for about a third of a second before giving up.
pub fn replace(from: &Path, to: &Path) -> io::Result<()> {
    let from_w = wide_path(from)?;
    let to_w = wide_path(to)?;
    let mut wait_ms = 10;
    loop {
        // SAFETY: both are NUL-terminated UTF-16 strings that outlive the
        // call, which only reads them.
        let ok = unsafe {
            MoveFileExW(
                from_w.as_ptr(),
                to_w.as_ptr(),
                MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
            )
        };
        if ok != 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        let Some(code) = in_use(&err, to) else {
            return Err(err);
        };
        if wait_ms > REPLACE_WAIT_MAX_MS {
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "it is open or memory-mapped elsewhere (for example by a safe_open() handle, in this \
                     or another process); Windows can't replace a file in use, so close it first (os error {code})"
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        wait_ms *= 2;
    }
}

/// The last wait before [`replace`] gives up on a file in use: waits of
/// 10, 20, ..., 160 ms, 310 ms in all.
const REPLACE_WAIT_MAX_MS: u64 = 160;

/// The error code when `err`, from replacing `to`, means that `to` is in
/// use: memory-mapped, or open without sharing delete access (or, with the
/// classic rename semantics of `MoveFileExW`, open at all).
fn in_use(err: &io::Error, to: &Path) -> Option<i32> {
    let code = err.raw_os_error()?;
    let in_use = match code {
        ERROR_SHARING_VIOLATION | ERROR_USER_MAPPED_FILE => true,
        // Also what a directory or a read-only file in the way gives, or a
        // directory we may not write to: those keep the system's message.
        ERROR_ACCESS_DENIED => match std::fs::symlink_metadata(to) {
            Ok(meta) => meta.is_file() && !meta.permissions().readonly(),
            Err(_) => false,
        },
        _ => false,
    };
    in_use.then_some(code)
}

/// What a file that is neither a regular file nor a directory is, for
/// messages.
pub fn special_kind(_meta: &Metadata) -> &'static str {
    "a special file"
}

/// An exclusive lock on a directory, held until dropped: a named mutex of
/// the session whose name comes from the directory's canonical path, so
/// that no file is created for it. The system releases it if its owner
/// dies (the next owner sees it abandoned, and takes it). `None` inside
/// when it can't be had: saves then go on without one.
pub struct DirLock(Option<RawHandle>);

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            // SAFETY: a mutex handle this thread owns (R calls on one
            // thread); releasing and closing it ends the lock.
            unsafe {
                ReleaseMutex(h);
                CloseHandle(h);
            }
        }
    }
}

/// Locks `dir` exclusively, waiting for another holder (another process's
/// save) and calling `poll` every 50 ms meanwhile.
pub fn lock_dir(dir: &Path, poll: &mut dyn FnMut() -> Result<()>) -> Result<DirLock> {
    let canonical =
        std::fs::canonicalize(dir).map_err(|e| Error::io(&e, "can't open the folder"))?;
    // FNV-1a of the lower-cased path: file names are case-insensitive.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.to_string_lossy().to_lowercase().bytes() {
        hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let name: Vec<u16> = OsStr::new(&format!("Local\\safetensors-save-{hash:016x}"))
        .encode_wide()
        .chain([0])
        .collect();
    // SAFETY: a NUL-terminated UTF-16 name that outlives the call; no
    // security attributes.
    let h = unsafe { CreateMutexW(std::ptr::null_mut(), 0, name.as_ptr()) };
    if h.is_null() {
        return Ok(DirLock(None));
    }
    let lock = DirLock(Some(h));
    loop {
        // SAFETY: a valid mutex handle.
        match unsafe { WaitForSingleObject(h, 50) } {
            WAIT_OBJECT_0 | WAIT_ABANDONED => return Ok(lock),
            WAIT_TIMEOUT => poll()?,
            _ => {
                // Not owned: close without releasing.
                let mut lock = lock;
                if let Some(h) = lock.0.take() {
                    // SAFETY: a valid handle, closed once.
                    unsafe { CloseHandle(h) };
                }
                return Ok(lock);
            }
        }
    }
}

/// Does nothing: Windows can't flush a directory as Unix does, and needs
/// not, since [`replace`] asks for `MOVEFILE_WRITE_THROUGH`, which returns
/// only once the move itself is on disk.
pub fn sync_dir(_dir: &Path) {}

/// The page size of every Windows architecture (x86, x64, ARM64).
const PAGE: usize = 4096;

/// The whole pages inside `[ptr, ptr + len)`, as (start, length), if any.
fn inner_pages(ptr: usize, len: usize) -> Option<(usize, usize)> {
    let start = ptr.checked_next_multiple_of(PAGE)?;
    let end = ptr.checked_add(len)? / PAGE * PAGE;
    (end > start).then(|| (start, end - start))
}

/// Lets go of the whole pages under `bytes`, part of a private read-only
/// file map: `VirtualUnlock` on pages that are not locked removes them from
/// the process's working set (its resident memory), and the system keeps
/// them in its file cache, from which a later access faults them in again.
/// Pages shared with bytes outside `bytes` stay.
///
/// # Safety
/// `bytes` must lie in a private map that is never written: the contract of
/// the Unix version, whose call drops the pages (trimming loses nothing, so
/// here it is kept only for that one contract).
pub unsafe fn release_pages(bytes: &[u8]) {
    if let Some((start, len)) = inner_pages(bytes.as_ptr() as usize, bytes.len()) {
        // SAFETY: whole pages of a mapped view, as the caller guarantees;
        // the call changes no contents, and its failure (ERROR_NOT_LOCKED is
        // its usual answer even when it trims) is harmless.
        unsafe { VirtualUnlock(start as *mut c_void, len) };
    }
}

/// Does nothing: Windows reads a mapped file's pages in clusters on a fault
/// already, and its prefetch call (`PrefetchVirtualMemory`, Windows 8 and
/// later) would add an import for a gain measured at about 10% on Linux.
pub fn populate_read(bytes: &[u8]) {
    let _ = bytes;
}

/// Does nothing: Windows has no call that faults in fresh anonymous memory
/// for writing ahead of the writes (`PrefetchVirtualMemory` reads from a
/// backing file; a new vector has none), so its pages fault in as written.
pub fn populate_write(ptr: *mut u8, len: usize) {
    let _ = (ptr, len);
}

/// Does nothing: Windows' cache manager starts writing a file's dirty pages
/// to disk on its own within about a second, and has no call that starts
/// writeback without waiting for it (`FlushFileBuffers`, the final fsync,
/// waits for all of them).
pub fn start_writeback(file: &File, off: u64, len: u64) {
    let _ = (file, off, len);
}

/// `None`: Windows has no anonymous file to link into place later (unlike
/// Linux's `O_TMPFILE`), so a named temporary file is used, as on macOS.
pub fn anonymous_in(_dir: &Path) -> Option<File> {
    None
}

/// Never called, since [`anonymous_in`] makes no anonymous file.
pub fn link_anonymous(_file: &File, _dir: &Path, _base: &OsStr) -> Result<PathBuf> {
    Err(Error::new(
        Kind::Io,
        "anonymous files are not supported on this system",
    ))
}

/// `DRIVE_REMOTE`: what `GetDriveTypeW` says of a network drive.
const DRIVE_REMOTE: u32 = 4;

/// Whether the file at `path` lies on a local drive, where memory-mapping
/// it is the fastest way to read it: not on a network share (a UNC path or
/// a mapped network drive, which `GetDriveTypeW` calls remote). When the
/// system can't say, the file counts as local.
pub fn is_local(_file: &File, path: &Path) -> bool {
    let Ok(wide) = wide_path(path) else {
        return true;
    };
    let mut root = vec![0u16; wide.len().max(260) + 1];
    // SAFETY: `wide` is NUL-terminated and `root` is a writable buffer of
    // the length given, which the call fills with a NUL-terminated path.
    let ok = unsafe { GetVolumePathNameW(wide.as_ptr(), root.as_mut_ptr(), root.len() as u32) };
    if ok == 0 {
        return true;
    }
    // SAFETY: `root` holds a NUL-terminated path.
    unsafe { GetDriveTypeW(root.as_ptr()) != DRIVE_REMOTE }
}

/// Does nothing: a mapped file's pages are read in clusters on a fault (see
/// [`populate_read`]).
pub fn prefetch(bytes: &[u8]) {
    let _ = bytes;
}

/// Never known: [`populate_read`] does nothing here, so the answer would
/// change nothing.
pub fn cached(bytes: &[u8]) -> bool {
    let _ = bytes;
    false
}

/// Windows refuses to truncate a file while it is mapped
/// (`ERROR_USER_MAPPED_FILE`), so no page of a map can vanish under a
/// read: the guard of the Unix version has nothing to do here.
pub struct MapGuard;

impl MapGuard {
    /// Always a guard.
    pub fn register(_ptr: *const u8, _len: usize) -> Option<MapGuard> {
        Some(MapGuard)
    }

    /// Never: no page of a map vanishes on Windows.
    pub fn damaged(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{AtomicFile, Backend, FileSource, Source};
    use std::io::Write;
    use std::os::windows::fs::OpenOptionsExt;

    const FILE_SHARE_READ: u32 = 0x1;

    use crate::io::test_dirs::entries;

    fn tempdir() -> PathBuf {
        crate::io::test_dirs::tempdir("win")
    }

    fn pattern(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
            .collect()
    }

    fn save(target: &Path, bytes: &[u8], sync: bool) -> Result<()> {
        let mut f = AtomicFile::create(target)?;
        f.file()?.write_all(bytes).unwrap();
        f.commit(sync)
    }

    /// The message `replace` gives for a target in use, as the user sees it.
    fn assert_in_use(err: &Error) {
        assert_eq!(err.kind, Kind::Io);
        assert!(
            err.message.starts_with("can't replace the target file: "),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("open or memory-mapped elsewhere"),
            "{}",
            err.message
        );
        assert!(err.message.contains("close it first"), "{}", err.message);
    }

    #[test]
    fn atomic_file_replaces_an_existing_target() {
        let dir = tempdir();
        let target = dir.join("m.safetensors");
        std::fs::write(&target, b"old contents").unwrap();
        let mut f = AtomicFile::create(&target).unwrap();
        assert!(!f.is_anonymous(), "Windows uses a named temporary file");
        f.file().unwrap().write_all(b"new").unwrap();
        assert_eq!(
            entries(&dir).len(),
            2,
            "the temporary file sits beside the target"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"old contents");
        f.commit(true).unwrap();
        assert_eq!(entries(&dir), vec!["m.safetensors"]);
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // Again without fsync, and to a target that does not exist yet.
        save(&target, b"newer", false).unwrap();
        save(&dir.join("second.bin"), b"2", false).unwrap();
        assert_eq!(entries(&dir), vec!["m.safetensors", "second.bin"]);
        assert_eq!(std::fs::read(&target).unwrap(), b"newer");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replacing_a_mapped_target_says_to_close_it_and_leaves_it_intact() {
        let dir = tempdir();
        let target = dir.join("mapped.safetensors");
        let old = pattern(64 << 10, 1);
        std::fs::write(&target, &old).unwrap();
        let src = FileSource::open(&target, Backend::Mmap).unwrap();
        assert_eq!(src.view(0, old.len()).unwrap(), Some(&old[..]));
        let err = save(&target, &pattern(100, 2), true).unwrap_err();
        assert_in_use(&err);
        assert!(
            err.message.ends_with("(os error 1224)") || err.message.ends_with("(os error 5)"),
            "{}",
            err.message
        );
        // The old file and the map are intact, and no temporary file is left.
        assert_eq!(entries(&dir), vec!["mapped.safetensors"]);
        assert_eq!(src.view(0, old.len()).unwrap(), Some(&old[..]));
        drop(src);
        assert_eq!(std::fs::read(&target).unwrap(), old);
        // Once the map is closed the same save works.
        save(&target, &pattern(100, 2), true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), pattern(100, 2));
        assert_eq!(entries(&dir), vec!["mapped.safetensors"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_target_in_use_for_a_moment_is_replaced_after_a_wait() {
        let dir = tempdir();
        let target = dir.join("busy.bin");
        std::fs::write(&target, b"old").unwrap();
        // Held without sharing delete access for 50 ms, as a virus scanner
        // might; the replace waits it out.
        let other = OpenOptions::new()
            .read(true)
            .share_mode(FILE_SHARE_READ)
            .open(&target)
            .unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(other);
        });
        let t0 = std::time::Instant::now();
        save(&target, b"new", false).unwrap();
        assert!(
            t0.elapsed() >= std::time::Duration::from_millis(40),
            "{:?}",
            t0.elapsed()
        );
        release.join().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(entries(&dir), vec!["busy.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replacing_a_target_open_elsewhere_says_to_close_it() {
        let dir = tempdir();
        let target = dir.join("open.bin");
        std::fs::write(&target, b"old").unwrap();
        // Open by a program that did not allow deleting it: sharing violation.
        let other = OpenOptions::new()
            .read(true)
            .share_mode(FILE_SHARE_READ)
            .open(&target)
            .unwrap();
        let err = save(&target, b"new", false).unwrap_err();
        assert_in_use(&err);
        assert_eq!(entries(&dir), vec!["open.bin"]);
        drop(other);
        // Open by a FileSource, not mapped. It allows deleting, but Windows
        // (classic rename semantics, as MoveFileExW has) still refuses to
        // replace an open file; with POSIX rename semantics, where a system
        // has them, the move succeeds and the handle keeps the old file.
        let src = FileSource::open(&target, Backend::Read).unwrap();
        match save(&target, b"new", false) {
            Err(err) => {
                assert_in_use(&err);
                assert_eq!(std::fs::read(&target).unwrap(), b"old");
            }
            Ok(()) => assert_eq!(std::fs::read(&target).unwrap(), b"new"),
        }
        assert_eq!(entries(&dir), vec!["open.bin"]);
        let mut buf = [0u8; 3];
        src.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"old", "the open handle reads the file it opened");
        src.check_unchanged().unwrap();
        drop(src);
        save(&target, b"new", false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_replace_failures_keep_the_system_message() {
        let dir = tempdir();
        // A directory in the way (ERROR_ACCESS_DENIED, like a file in use).
        let target = dir.join("d");
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().unwrap().write_all(b"x").unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"k").unwrap();
        let err = f.commit(false).unwrap_err();
        assert!(!err.message.contains("memory-mapped"), "{}", err.message);
        assert_eq!(entries(&dir), vec!["d"]);
        // A read-only target: refused on Windows (not as "in use"); Wine
        // may let it be replaced.
        let ro = dir.join("ro.bin");
        std::fs::write(&ro, b"old").unwrap();
        let mut perm = std::fs::metadata(&ro).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&ro, perm.clone()).unwrap();
        if let Err(err) = save(&ro, b"new", false) {
            assert!(!err.message.contains("memory-mapped"), "{}", err.message);
            assert_eq!(std::fs::read(&ro).unwrap(), b"old");
        }
        assert_eq!(entries(&dir), vec!["d", "ro.bin"]);
        let mut perm = std::fs::metadata(&ro).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&ro, perm).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_stamp_sees_truncation_growth_and_rewrites() {
        let dir = tempdir();
        let p = dir.join("s.bin");
        let bytes = pattern(8192, 3);
        let rewrite = |p: &Path, data: &[u8]| {
            // Bytes overwritten in place (a mapped file can't be truncated
            // first, as std::fs::write does); the new last-write time is set
            // apart from the old one, which a write in the same clock tick
            // could share.
            let f = OpenOptions::new().write(true).open(p).unwrap();
            (&f).write_all(data).unwrap();
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
            f.set_modified(later).unwrap();
        };
        for backend in [Backend::Read, Backend::Mmap] {
            std::fs::write(&p, &bytes).unwrap();
            let src = FileSource::open(&p, backend).unwrap();
            src.check_unchanged().unwrap();
            // Same size, other bytes.
            rewrite(&p, &pattern(8192, 4));
            let err = src.check_unchanged().unwrap_err();
            assert_eq!(err.kind, Kind::FileChanged);
            assert!(err.message.contains("was modified"), "{}", err.message);
            if backend == Backend::Mmap {
                assert_eq!(src.view(0, 16).unwrap_err().kind, Kind::FileChanged);
            }
            drop(src);
            // Grown.
            std::fs::write(&p, &bytes).unwrap();
            let src = FileSource::open(&p, backend).unwrap();
            OpenOptions::new()
                .append(true)
                .open(&p)
                .unwrap()
                .write_all(b"more")
                .unwrap();
            assert_eq!(src.check_unchanged().unwrap_err().kind, Kind::FileChanged);
            drop(src);
        }
        // Shrunk under a reader (a mapped file can't be truncated on Windows:
        // io::tests::file_source_detects_truncation).
        std::fs::write(&p, &bytes).unwrap();
        let src = FileSource::open(&p, Backend::Read).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(100)
            .unwrap();
        let err = src.check_unchanged().unwrap_err();
        assert_eq!(err.kind, Kind::FileChanged);
        assert!(err.message.contains("shrank"), "{}", err.message);
        let mut buf = [0u8; 16];
        assert_eq!(
            src.read_at(4000, &mut buf).unwrap_err().kind,
            Kind::FileChanged
        );
        drop(src);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_stamp_tells_files_apart_by_volume_and_index() {
        let dir = tempdir();
        let (a, b) = (dir.join("a.bin"), dir.join("b.bin"));
        let when =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        for p in [&a, &b] {
            std::fs::write(p, b"same bytes").unwrap();
            OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        let stamp_of = |p: &Path| {
            let f = open_read(p).unwrap();
            stamp(&f, &f.metadata().unwrap()).unwrap()
        };
        let (sa, sb) = (stamp_of(&a), stamp_of(&b));
        assert_eq!((sa.len, sa.mtime), (sb.len, sb.mtime), "same size and time");
        assert_ne!(sa.index, sb.index, "but other files");
        assert_eq!(sa, stamp_of(&a), "the same file twice");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn positioned_reads_at_offsets() {
        let dir = tempdir();
        let p = dir.join("p.bin");
        let bytes = pattern(3 * 65536 + 17, 5);
        std::fs::write(&p, &bytes).unwrap();
        let file = open_read(&p).unwrap();
        let n = bytes.len();
        for (off, len) in [
            (0, 1),
            (0, n),
            (1, 4095),
            (4095, 2),
            (4096, 4096),
            (65535, 65538),
            (n - 1, 1),
            (n - 100, 100),
        ] {
            let mut buf = vec![0u8; len];
            read_exact_at(&file, &mut buf, off as u64).unwrap();
            assert_eq!(buf, &bytes[off..off + len], "at {off}+{len}");
        }
        // Past the end: UnexpectedEof, as read_exact_at on Unix.
        for (off, len) in [(n - 3, 10), (n, 1), (n + 1000, 8)] {
            let mut buf = vec![0u8; len];
            let err = read_exact_at(&file, &mut buf, off as u64).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "at {off}+{len}");
        }
        read_exact_at(&file, &mut [], n as u64 + 5).unwrap();
        // The handle's position moves with every read; reads that name their
        // offsets don't care, so threads can share one handle.
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (file, bytes) = (&file, &bytes);
                s.spawn(move || {
                    for i in 0..200usize {
                        let off = (t * 7919 + i * 104_729) % (bytes.len() - 4096);
                        let mut buf = [0u8; 4096];
                        read_exact_at(file, &mut buf, off as u64).unwrap();
                        assert_eq!(&buf[..], &bytes[off..off + 4096]);
                    }
                });
            }
        });
        // Through a FileSource, an early end is a changed file.
        let src = FileSource::open(&p, Backend::Read).unwrap();
        let mut buf = [0u8; 32];
        src.read_at(n - 32, &mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[n - 32..]);
        assert_eq!(
            src.read_at(n - 16, &mut buf).unwrap_err().kind,
            Kind::FileChanged
        );
        drop((file, src));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_ascii_names_round_trip() {
        let dir = tempdir().join("Verzeichnis-ü-目录");
        std::fs::create_dir(&dir).unwrap();
        let target = dir.join("Grüße-模型.safetensors");
        let bytes = pattern(10_000, 6);
        save(&target, b"first", true).unwrap();
        // A second save replaces the existing file through MoveFileExW.
        save(&target, &bytes, true).unwrap();
        assert_eq!(entries(&dir), vec!["Grüße-模型.safetensors"]);
        for backend in [Backend::Read, Backend::Mmap] {
            let src = FileSource::open(&target, backend).unwrap();
            assert_eq!(src.len(), bytes.len() as u64);
            let mut buf = vec![0u8; bytes.len()];
            src.read_at(0, &mut buf).unwrap();
            assert_eq!(buf, bytes);
        }
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn long_paths_work() {
        let root = tempdir();
        let mut dir = root.clone();
        for i in 0..8 {
            dir.push(format!("a-rather-long-directory-name-number-{i}"));
        }
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("model.safetensors");
        assert!(target.as_os_str().len() > 300);
        save(&target, b"first", false).unwrap();
        save(&target, b"second", true).unwrap();
        assert_eq!(entries(&dir), vec!["model.safetensors"]);
        let src = FileSource::open(&target, Backend::Read).unwrap();
        let mut buf = [0u8; 6];
        src.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"second");
        drop(src);
        // Relative long paths too.
        let rel: PathBuf = ["."].iter().collect::<PathBuf>().join(&target);
        assert!(wide_path(&rel).is_ok());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn wide_paths_are_nul_terminated_and_prefixed_when_long() {
        let w = wide_path(Path::new(r"C:\x\Grüße.bin")).unwrap();
        assert_eq!(
            String::from_utf16(&w[..w.len() - 1]).unwrap(),
            r"C:\x\Grüße.bin"
        );
        assert_eq!(w.last(), Some(&0));
        let long = format!(r"C:\{}\f.bin", "d".repeat(300));
        let w = wide_path(Path::new(&long)).unwrap();
        assert_eq!(
            String::from_utf16(&w[..w.len() - 1]).unwrap(),
            format!(r"\\?\{long}")
        );
        let unc = format!(r"\\server\share\{}\f.bin", "d".repeat(300));
        let w = wide_path(Path::new(&unc)).unwrap();
        assert_eq!(
            String::from_utf16(&w[..w.len() - 1]).unwrap(),
            format!(r"\\?\UNC\server\share\{}\f.bin", "d".repeat(300))
        );
        assert_eq!(
            wide_path(Path::new("a\0b")).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn a_directory_is_refused_by_name() {
        let dir = tempdir();
        let err = FileSource::open(&dir, Backend::Read).err().unwrap();
        assert_eq!(err.kind, Kind::Io);
        assert!(err.message.contains("directory"), "{}", err.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_anonymous_files() {
        assert!(anonymous_in(&std::env::temp_dir()).is_none());
    }
}
