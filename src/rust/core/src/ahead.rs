//! Reading ahead: a helper thread that reads the next piece of a file
//! while the caller copies the current one.
//!
//! A framework that copies tensors into its own memory (torch, through
//! `R/frameworks.R`) takes a file read without a map one piece at a time,
//! from a staging buffer the file was read into. [`ReadAhead`] reads piece
//! k + 1 into the other of two staging buffers on its own thread while the
//! caller copies piece k (double buffering). From a map, [`Pager`] does
//! the page-table work around the copies on its own thread instead.
//!
//! Jobs run one at a time, in the order given; [`ReadAhead::wait`] returns
//! the result of the oldest one, calling `poll` while it waits.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Kind, Result};
use crate::io::{FileSource, Source};
use crate::Poll;

/// A job of the helper thread: read bytes `[off, off + dest.n)` of the
/// source into `dest`.
struct Job {
    off: usize,
    dest: Dest,
}

/// Memory the caller lent the helper: `n` bytes at `ptr`.
struct Dest {
    ptr: *mut u8,
    n: usize,
}

// SAFETY: the caller of `ReadAhead::read` guarantees that the memory stays
// valid and that nothing else touches it until the job's `wait` returns, so
// the helper thread has exclusive use of it meanwhile.
unsafe impl Send for Dest {}

/// A helper thread reading ahead in one file.
pub struct ReadAhead {
    jobs: Option<Sender<Job>>,
    done: Receiver<Result<()>>,
    pending: usize,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts the helper thread for `src`.
    pub fn new(src: Arc<FileSource>) -> Result<ReadAhead> {
        let (jobs, todo) = mpsc::channel::<Job>();
        let (tell, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("safetensors-ahead".into())
            .spawn(move || {
                for Job { off, dest } in todo {
                    // SAFETY: see `Dest`: this thread alone uses the memory
                    // until the caller's wait returns, which it can't before
                    // this job's result is sent.
                    let buf = unsafe { std::slice::from_raw_parts_mut(dest.ptr, dest.n) };
                    let res = src.read_at(off, buf);
                    if tell.send(res).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io(&e, "can't start a thread"))?;
        Ok(ReadAhead {
            jobs: Some(jobs),
            done,
            pending: 0,
            thread: Some(thread),
        })
    }

    fn send(&mut self, job: Job) -> Result<()> {
        let stopped = || Error::new(Kind::Io, "the read-ahead thread stopped");
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        self.pending += 1;
        Ok(())
    }

    /// Reads bytes `[off, off + n)` of the source into the `n` bytes at
    /// `dest`, on the helper thread.
    ///
    /// # Safety
    /// `dest` must be valid for writes of `n` bytes, and nothing else may
    /// read or write them, until [`ReadAhead::wait`] returned this job's
    /// result (or the `ReadAhead` was dropped).
    pub unsafe fn read(&mut self, off: usize, dest: *mut u8, n: usize) -> Result<()> {
        self.send(Job {
            off,
            dest: Dest { ptr: dest, n },
        })
    }

    /// Jobs sent whose result was not taken yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Waits for the oldest pending job and returns its result, calling
    /// `poll` every few milliseconds meanwhile (an error from `poll` is
    /// returned at once; the job then completes before the `ReadAhead` is
    /// dropped).
    pub fn wait(&mut self, poll: Poll<'_>) -> Result<()> {
        if self.pending == 0 {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: no read ahead to wait for",
            ));
        }
        loop {
            match self.done.recv_timeout(Duration::from_millis(20)) {
                Ok(res) => {
                    self.pending -= 1;
                    return res;
                }
                Err(RecvTimeoutError::Timeout) => poll()?,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::new(Kind::Io, "the read-ahead thread stopped"))
                }
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Ends the thread's loop once it has done what it was given, and
        // waits for it: memory lent to it must not outlive the job.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Requests the pager takes before its caller waits for it.
const PAGER_QUEUE: usize = 4;

/// A helper thread that takes page-table work off the thread that copies
/// from a memory map: it maps the first pages of piece k + 1 in (one
/// `MADV_POPULATE_READ` call, [`FileSource::populate`]) while the caller
/// copies piece k. Its caller asks for pieces the page cache lacks
/// ([`FileSource::cached`]): pages the kernel must read from disk are read
/// ahead of the copy that way, while pages in the cache fault in faster on
/// the copying threads themselves than this thread maps them beside them
/// on two cores (the measurements are at `MAP_AHEAD`, in the R package's
/// `src/frameworks.rs`). Letting go of a piece's pages stays with the caller
/// (with both cores copying, a thread doing it ran late enough for two
/// whole pieces to be held).
///
/// Requests are about pages only, never about bytes: a range mapped late,
/// or not at all, changes no value read. A piece is never mapped once the
/// caller took it ([`Pager::handed`]), so pages the caller let go of stay
/// let go of, however late the thread runs.
pub struct Pager {
    jobs: Option<SyncSender<(usize, usize, usize)>>,
    /// The last piece handed to the caller; held while a piece is mapped.
    handed: Arc<Mutex<usize>>,
    thread: Option<JoinHandle<()>>,
}

impl Pager {
    /// Starts the pager thread for mapped file `src`, whose caller has
    /// taken no piece after the one it holds.
    pub fn new(src: Arc<FileSource>) -> Result<Pager> {
        // A caller more than a few requests ahead waits for the thread.
        let (jobs, todo) = mpsc::sync_channel::<(usize, usize, usize)>(PAGER_QUEUE);
        let handed = Arc::new(Mutex::new(0));
        let taken = Arc::clone(&handed);
        let thread = std::thread::Builder::new()
            .name("safetensors-pager".into())
            .spawn(move || {
                for (k, off, n) in todo {
                    let taken = taken.lock().unwrap_or_else(PoisonError::into_inner);
                    if k > *taken {
                        src.populate(off, n);
                    }
                }
            })
            .map_err(|e| Error::io(&e, "can't start a thread"))?;
        Ok(Pager {
            jobs: Some(jobs),
            handed,
            thread: Some(thread),
        })
    }

    /// Maps the pages of bytes `[off, off + n)`, part of piece `k`, in
    /// soon, unless the caller takes piece `k` first.
    pub fn map(&self, k: usize, off: usize, n: usize) {
        // A thread that stopped only leaves the pages as they are.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send((k, off, n));
        }
    }

    /// Records that the caller takes piece `k` (waiting while the thread
    /// maps it): no pages of it or of an earlier piece are mapped after.
    pub fn handed(&self, k: usize) {
        let mut taken = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        *taken = (*taken).max(k);
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        // Lets the thread finish what it was given, then waits for it (it
        // holds the map).
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Backend;

    fn never() -> impl FnMut() -> Result<()> {
        || Ok(())
    }

    #[test]
    fn reads_ahead_into_buffers_in_order() {
        let dir = std::env::temp_dir().join(format!("st-ahead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.bin");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        for backend in [Backend::Read, Backend::Mmap] {
            let src = Arc::new(FileSource::open(&p, backend).unwrap());
            let mut ra = ReadAhead::new(Arc::clone(&src)).unwrap();
            let mut a = vec![0u8; 40_000];
            let mut b = vec![0u8; 40_000];
            // SAFETY: `a` and `b` are untouched until their waits return.
            unsafe {
                ra.read(0, a.as_mut_ptr(), 40_000).unwrap();
                ra.read(40_000, b.as_mut_ptr(), 30_000).unwrap();
            }
            assert_eq!(ra.pending(), 2);
            ra.wait(&mut never()).unwrap();
            assert_eq!(a[..], bytes[..40_000]);
            ra.wait(&mut never()).unwrap();
            assert_eq!(b[..30_000], bytes[40_000..70_000]);
            // Past the end: the error comes back from the wait.
            // SAFETY: as above.
            unsafe { ra.read(90_000, a.as_mut_ptr(), 20_000).unwrap() };
            assert_eq!(ra.wait(&mut never()).unwrap_err().kind, Kind::FileChanged);
            assert!(ra.wait(&mut never()).is_err(), "nothing pending");
            // Dropped with a job in flight: the drop waits for it.
            // SAFETY: as above; `a` outlives `ra`.
            unsafe { ra.read(0, a.as_mut_ptr(), 40_000).unwrap() };
            drop(ra);
            assert_eq!(a[..], bytes[..40_000]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pager_maps_pages_in_without_changing_bytes() {
        let dir = std::env::temp_dir().join(format!("st-pager-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.bin");
        let bytes: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        let src = Arc::new(FileSource::open(&p, Backend::Mmap).unwrap());
        let pager = Pager::new(Arc::clone(&src)).unwrap();
        let half = 2 << 20;
        // Piece 1 is taken: requests for it are dropped.
        pager.handed(1);
        pager.map(1, 0, half);
        // More requests than the queue holds: the caller waits, never fails.
        for _ in 0..4 * PAGER_QUEUE {
            pager.map(2, half, half);
        }
        // Past the end (a truncated file): nothing happens.
        pager.map(3, bytes.len(), half);
        // Dropping it waits for what it was given.
        drop(pager);
        let view = src.view(0, bytes.len()).unwrap().unwrap();
        // The second half mapped in, the first not (before any read).
        #[cfg(target_os = "linux")]
        assert_eq!(
            crate::io::test_dirs::resident_kib(view.as_ptr() as usize),
            half as u64 / 1024
        );
        assert_eq!(view, &bytes[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_interrupt_while_waiting_is_returned() {
        let dir = std::env::temp_dir().join(format!("st-ahead-i-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("b.bin");
        std::fs::write(&p, vec![1u8; 1 << 20]).unwrap();
        let src = Arc::new(FileSource::open(&p, Backend::Read).unwrap());
        let mut ra = ReadAhead::new(src).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        // Many reads, so that the first wait has to wait.
        for _ in 0..200 {
            // SAFETY: `buf` outlives `ra`, and the reads only write it.
            unsafe { ra.read(0, buf.as_mut_ptr(), 1 << 20).unwrap() };
        }
        let mut poll = || Err(Error::new(Kind::Interrupted, "stop"));
        // Either the first job was quick (Ok) or the poll stopped the wait.
        for _ in 0..200 {
            match ra.wait(&mut poll) {
                Ok(()) => continue,
                Err(e) => {
                    assert_eq!(e.kind, Kind::Interrupted);
                    break;
                }
            }
        }
        drop(ra);
        assert_eq!(buf, vec![1u8; 1 << 20]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
