//! The Unix side of file access (Linux, macOS and the BSDs), behind the
//! functions `io` calls; `windows.rs` provides the same ones.

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[path = "sigbus.rs"]
mod sigbus;
pub use sigbus::MapGuard;

use crate::error::{Error, Kind, Result};

/// What identifies a file's contents for change detection: a file
/// truncated, rewritten or replaced in place changes one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Size in bytes.
    pub len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
}

/// The stamp of an open file from its metadata.
pub fn stamp(_file: &File, meta: &Metadata) -> std::io::Result<Stamp> {
    Ok(Stamp {
        len: meta.len(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
        ino: meta.ino(),
    })
}

/// Opens `path` for reading, non-blocking, so that a FIFO can't stall the
/// open until a writer comes (no effect on reads of regular files).
pub fn open_read(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Fills `buf` from offset `off` of `file`, without moving a file position
/// (so threads can share the file).
pub fn read_exact_at(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    file.read_exact_at(buf, off)
}

/// Creates a new file for writing, failing if `path` exists; readable and
/// writable as the umask allows (not 0600).
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(path)
}

/// Opens `path` for reading and writing at offsets, creating it (as the
/// umask allows) if missing, never truncating it.
pub fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(path)
}

/// Writes all of `buf` at offset `off` of `file` (pwrite), without moving a
/// file position.
pub fn write_all_at(file: &File, buf: &[u8], off: u64) -> std::io::Result<()> {
    file.write_all_at(buf, off)
}

/// Opens (creating it, group-writable as the umask allows, as Python's
/// `filelock` does for the Hub cache) a lock file.
pub fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o664)
        .open(path)
}

/// Takes an exclusive `flock(2)` lock on `file` without waiting: `Ok(false)`
/// when another open file description holds it. This is the lock Python's
/// `filelock` (and so `huggingface_hub`) takes, so the two exclude each
/// other. A file system without `flock` (some network file systems) is
/// `Ok(true)`: the lock is then advisory in name only, as `filelock` falls
/// back to a lock file's existence there.
pub fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; flock only changes its lock.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(false),
        Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(true),
        _ => Err(err),
    }
}

/// Releases the lock [`try_lock`] took (closing the file releases it too).
pub fn unlock(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; failure leaves the lock to the close.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

/// Moves `from` over `to` in one step (rename(2) replaces atomically).
pub fn replace(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)
}

/// Makes a rename in `dir` durable; failure leaves the file complete
/// anyway, so it is ignored.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The system's page size (4096 when it can't be read).
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// The whole pages inside `[ptr, ptr + len)`, as (start, length), if any.
fn inner_pages(ptr: usize, len: usize) -> Option<(usize, usize)> {
    let page = page_size();
    let start = ptr.checked_next_multiple_of(page)?;
    let end = ptr.checked_add(len)? / page * page;
    (end > start).then(|| (start, end - start))
}

/// Lets go of the whole pages under `bytes`, part of a private read-only
/// file map: the kernel keeps them in its page cache, and a later access
/// faults them in again. Pages shared with bytes outside `bytes` stay.
///
/// # Safety
/// `bytes` must lie in a private map that is never written (dropping the
/// pages of written private memory would lose the writes).
pub unsafe fn release_pages(bytes: &[u8]) {
    if let Some((start, len)) = inner_pages(bytes.as_ptr() as usize, bytes.len()) {
        // SAFETY: whole pages of a never-written private map, as the caller
        // guarantees; failure is harmless.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    }
}

/// Maps the pages under `bytes` (part of a read-only file map) in one call
/// rather than one fault per page. Linux 5.14 and later; elsewhere, or if
/// refused, the pages fault in as usual.
pub fn populate_read(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        let page = page_size();
        let start = (bytes.as_ptr() as usize) / page * page;
        let end = (bytes.as_ptr() as usize).saturating_add(bytes.len());
        // SAFETY: pages of a read-only map that covers `bytes` (rounded down
        // to its page start, inside the map as maps are page-aligned);
        // MADV_POPULATE_READ only faults them in, and its failure (an I/O
        // error shows up again at the read) is harmless.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_READ,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// Asks the kernel to fault in the whole pages of `[ptr, ptr + len)` for
/// writing, in one call: a new vector's memory is untouched, and taking its
/// page faults one at a time as the data is written costs about half again
/// as much on Linux (more in a VM). The contents don't change. Linux 5.14
/// and later; elsewhere, or if refused, the pages fault in as usual.
pub fn populate_write(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    if let Some((start, len)) = inner_pages(ptr as usize, len) {
        // SAFETY: MADV_POPULATE_WRITE only faults in pages of memory this
        // process owns (the caller's destination), keeping their contents;
        // its failure is harmless.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// Starts writing bytes `[off, off + len)` of `file` to disk without
/// waiting (Linux); the final fsync still waits for all of them.
pub fn start_writeback(file: &File, off: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only schedules I/O and
        // its failure is harmless (fsync later does the work).
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                off as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, off, len);
}

/// An anonymous file (`O_TMPFILE`) in `dir`, which has no name until
/// [`link_anonymous`] gives it one, or `None` when the system or the file
/// system can't make one, or it could not be linked into place later.
#[cfg(target_os = "linux")]
pub fn anonymous_in(dir: &Path) -> Option<File> {
    // Linking it on commit goes through /proc/self/fd.
    if !Path::new("/proc/self/fd").is_dir() {
        return None;
    }
    OpenOptions::new()
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .ok()
}

#[cfg(not(target_os = "linux"))]
pub fn anonymous_in(_dir: &Path) -> Option<File> {
    None
}

/// Links the anonymous `file` into `dir` under a fresh temporary name.
#[cfg(target_os = "linux")]
pub fn link_anonymous(file: &File, dir: &Path, base: &OsStr) -> Result<PathBuf> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;

    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|_| Error::new(Kind::Io, "can't name the temporary file"))?;
    let mut last = std::io::Error::other("temporary names exhausted");
    for _ in 0..16 {
        let temp = super::temp_name(dir, base);
        let Ok(to) = CString::new(temp.as_os_str().as_bytes()) else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "the path contains a NUL byte",
            ));
        };
        // SAFETY: both paths are valid NUL-terminated strings that outlive
        // the call; linkat only reads them.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            return Ok(temp);
        }
        last = std::io::Error::last_os_error();
        if last.kind() != std::io::ErrorKind::AlreadyExists {
            break;
        }
    }
    Err(Error::io(
        &last,
        "can't link the new file into its directory",
    ))
}

#[cfg(not(target_os = "linux"))]
pub fn link_anonymous(_file: &File, _dir: &Path, _base: &OsStr) -> Result<PathBuf> {
    Err(Error::new(
        crate::error::Kind::Io,
        "anonymous files are not supported on this system",
    ))
}

/// What a file that is neither a regular file nor a directory is, for
/// messages.
pub fn special_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// An exclusive lock on a directory, held until dropped: `flock(2)` on the
/// directory itself, so that no file is created for it. `None` inside when
/// the file system has no such locks (some network file systems): saves
/// then go on without one.
pub struct DirLock {
    _held: Option<File>,
}

/// Locks `dir` exclusively, waiting for another holder (another process's
/// save) and calling `poll` every 10 ms meanwhile.
pub fn lock_dir(dir: &Path, poll: &mut dyn FnMut() -> Result<()>) -> Result<DirLock> {
    use std::os::fd::AsRawFd;
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| Error::io(&e, "can't open the folder"))?;
    loop {
        // SAFETY: a valid open descriptor; flock only takes a lock on it.
        if unsafe { libc::flock(d.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(DirLock { _held: Some(d) });
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => {
                poll()?;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Some(libc::EINTR) => {}
            // No locks here (ENOLCK, EOPNOTSUPP, EINVAL, EBADF on NFS).
            _ => return Ok(DirLock { _held: None }),
        }
    }
}

/// Whether `file` lies on a local file system, where memory-mapping it is
/// the fastest way to read it. Network and FUSE file systems (NFS,
/// SMB/CIFS, 9p, FUSE, Ceph, AFS, Lustre, ...) are not: a map of them
/// faults page by page over the network, where positioned reads fetch large
/// blocks, and their files may change on another machine. Linux tells by
/// the file system type, macOS and FreeBSD by the `MNT_LOCAL` flag; when
/// the system can't say, the file counts as local.
pub fn is_local(file: &File, _path: &Path) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // f_type is a signed word on some targets; the magic numbers are 32-bit.
    return fstatfs(file).map_or(true, |s| !is_remote_type(s.f_type as u32));
    #[cfg(any(target_vendor = "apple", target_os = "freebsd"))]
    return fstatfs(file).map_or(true, |s| (s.f_flags as u64) & (libc::MNT_LOCAL as u64) != 0);
    #[allow(unreachable_code)]
    {
        let _ = file;
        true
    }
}

/// The file system facts of the open `file` (`fstatfs`), if the system
/// gives them.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    target_os = "freebsd"
))]
fn fstatfs(file: &File) -> Option<libc::statfs> {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed statfs is valid for fstatfs to fill in.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid open descriptor and a writable statfs.
    (unsafe { libc::fstatfs(file.as_raw_fd(), &mut s) } == 0).then_some(s)
}

/// Whether a Linux file system type (statfs `f_type`) keeps its files
/// elsewhere: a network, cluster or FUSE file system (the magic numbers of
/// linux/magic.h and of the file systems' own sources).
#[cfg(any(target_os = "linux", target_os = "android", test))]
fn is_remote_type(f_type: u32) -> bool {
    const REMOTE: [u32; 18] = [
        0x6969,      // NFS
        0x517B,      // SMB
        0xFF53_4D42, // CIFS
        0xFE53_4D42, // SMB2
        0x0102_1997, // 9p (v9fs)
        0x6573_5546, // FUSE (sshfs, s3fs, virtiofs, ...)
        0x0065_735F, // fuseblk
        0x00C3_6400, // Ceph
        0x5346_414F, // AFS
        0x6B41_4653, // kAFS
        0x7375_7245, // Coda
        0x564C,      // NCP
        0x0BD0_0BD0, // Lustre
        0x4750_4653, // GPFS
        0x2003_0528, // OrangeFS
        0x786F_4256, // VirtualBox shared folders
        0x0116_1970, // GFS2
        0x7461_636F, // OCFS2
    ];
    REMOTE.contains(&f_type)
}

/// Starts reading the pages under `bytes` (part of a read-only file map)
/// into the page cache, without waiting and without mapping them, ahead of
/// a read of them (`MADV_WILLNEED`): a file not in the page cache is read
/// from disk while the caller copies the bytes before these, and the
/// process's memory does not grow until the read maps them.
pub fn prefetch(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let page = page_size();
    let start = (bytes.as_ptr() as usize) / page * page;
    let len = (bytes.as_ptr() as usize).saturating_add(bytes.len()) - start;
    // SAFETY: pages of a read-only map that covers `bytes` (rounded down to
    // its page start, inside the map as maps are page-aligned); the advice
    // changes no contents, and its failure is harmless.
    unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_WILLNEED) };
}

/// Whether every page under `bytes` (part of a read-only file map) is in
/// the page cache, as `mincore()` says; false if it can't tell. Linux
/// answers for the page cache only for a file this process may write (or
/// owns); for another it counts only pages mapped here, so such a file
/// reads as not cached.
pub fn cached(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let page = page_size();
    let start = (bytes.as_ptr() as usize) / page * page;
    let len = (bytes.as_ptr() as usize).saturating_add(bytes.len()) - start;
    let mut pages = vec![0u8; len.div_ceil(page)];
    // SAFETY: pages of a map that covers `bytes` (rounded down to its page
    // start, inside the map as maps are page-aligned); mincore writes one
    // byte per page of the range into `pages`, which holds that many.
    let done = unsafe { libc::mincore(start as *mut libc::c_void, len, pages.as_mut_ptr() as _) };
    done == 0 && pages.iter().all(|p| p & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_fuse_file_systems_are_remote_and_disks_local() {
        // NFS, CIFS as a signed 64-bit word would hold it, FUSE, 9p.
        for t in [
            0x6969u32,
            (0xFF53_4D42u32 as i32) as i64 as u32,
            0x6573_5546,
            0x0102_1997,
        ] {
            assert!(is_remote_type(t), "{t:#x}");
        }
        // ext4, xfs, btrfs, tmpfs, overlayfs.
        for t in [
            0xEF53u32,
            0x5846_5342,
            0x9123_683E,
            0x0102_1994,
            0x794C_7630,
        ] {
            assert!(!is_remote_type(t), "{t:#x}");
        }
        // The test's own temporary files are on a local file system here.
        let dir = std::env::temp_dir();
        let f = File::open(&dir).unwrap();
        let _ = is_local(&f, &dir);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn new_memory_populated_for_writing_is_resident_and_keeps_what_is_written() {
        let n = 16 << 20;
        // Pages of the `n` bytes at `p` that are resident (mincore).
        let resident = |p: *mut libc::c_void| {
            let mut vec = vec![0u8; n / 4096];
            // SAFETY: `p` is a map of `n` bytes; `vec` has a byte per page.
            assert_eq!(unsafe { libc::mincore(p, n, vec.as_mut_ptr()) }, 0);
            vec.iter().filter(|&&b| b & 1 == 1).count()
        };
        // New memory of its own (a vector might reuse the heap's).
        // SAFETY: an anonymous private map of `n` bytes, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                n,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let before = resident(p);
        populate_write(p.cast(), n / 2);
        let after = resident(p);
        // Written after, and written before and populated again.
        // SAFETY: the `n` bytes of the map.
        let same = unsafe {
            std::ptr::write_bytes(p.cast::<u8>(), 7, n);
            populate_write(p.cast(), n);
            std::slice::from_raw_parts(p.cast::<u8>(), n)
                .iter()
                .all(|&b| b == 7)
        };
        // SAFETY: the map made above, no longer used.
        unsafe { libc::munmap(p, n) };
        assert!(same);
        assert_eq!(before, 0);
        // Linux 5.14 and later fault the first half in; older ones refuse.
        assert!(after == 0 || after == n / 2 / 4096, "{after} pages");
        // Nothing for memory that is not mapped, or a range of no page.
        populate_write(0x10 as *mut u8, 4096);
        populate_write((usize::MAX - 10) as *mut u8, 5);
    }
}
