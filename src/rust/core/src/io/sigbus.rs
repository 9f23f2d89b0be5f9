//! Memory maps that survive their file being truncated (Unix).
//!
//! A page of a file map that lies past the file's end once another process
//! truncated the file can't be read: the access raises SIGBUS, whose
//! default action (and R's handler) ends the process. Every map the
//! package reads from is registered here ([`MapGuard`]); a process-wide
//! SIGBUS handler, installed with the first map, answers a fault inside a
//! registered map by mapping zero pages over the rest of that map (every
//! page from the faulting one on lies past the file's new end) and marking
//! it damaged, then lets the access resume. A fault anywhere else goes to
//! the handler that was there before (R's, or the default action), exactly
//! as without this module. The reader checks the mark after each copy from
//! the map and reports a changed file instead of the zeros
//! (`FileSource::verify`). Faults on any thread are handled alike: torch
//! copies from maps on its own worker threads.
//!
//! The handler only reads a fixed table of atomics, calls `mmap` (a system
//! call) and, for other faults, the previous handler: nothing that
//! allocates or locks, as a signal handler must.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many maps can be registered at once (a slot each: three words).
const SLOTS: usize = 1024;

/// One registered map: `[start, start + len)`, with the number of faults
/// answered in it. `start == 0` marks a free slot.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    faults: AtomicUsize,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        faults: AtomicUsize::new(0),
    }
}; SLOTS];

/// The page size, read once when the handler is installed.
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// The disposition of SIGBUS before ours, which other faults go to.
struct Previous(UnsafeCell<Option<libc::sigaction>>);

// SAFETY: written only under INSTALL, before the handler that reads it is
// installed (see `install`); read only by that handler.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous(UnsafeCell::new(None));

/// Serialises installation.
static INSTALL: Mutex<()> = Mutex::new(());

/// How many times the previous handler is running, on any thread: a
/// handler that itself passes faults on to ours would otherwise recurse.
static CHAINED: AtomicUsize = AtomicUsize::new(0);

/// A map registered with the SIGBUS handler for as long as this lives.
pub struct MapGuard {
    slot: usize,
}

impl MapGuard {
    /// Registers `[ptr, ptr + len)`, a read-only private file map of this
    /// process, installing the handler if it is not the current one.
    /// `None` when the handler can't be installed or every slot is taken:
    /// then a fault in the map is not caught.
    pub fn register(ptr: *const u8, len: usize) -> Option<MapGuard> {
        if len == 0 || !install() {
            return None;
        }
        let start = ptr as usize;
        for (i, slot) in TABLE.iter().enumerate() {
            // Claim a free slot; its length and count are set before its
            // start, which the handler reads first.
            if slot
                .start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.len.store(len, Ordering::Release);
                slot.faults.store(0, Ordering::Release);
                slot.start.store(start, Ordering::Release);
                return Some(MapGuard { slot: i });
            }
        }
        None
    }

    /// Whether a fault was answered in the map: some of its pages now read
    /// as zeros instead of the file's bytes.
    pub fn damaged(&self) -> bool {
        TABLE[self.slot].faults.load(Ordering::Acquire) > 0
    }
}

impl Drop for MapGuard {
    fn drop(&mut self) {
        // Before the map is unmapped (its owner drops the guard first), so
        // a later map at the same address is never mistaken for this one.
        TABLE[self.slot].start.store(0, Ordering::Release);
    }
}

/// Installs the handler unless it is the current one; whether it is.
fn install() -> bool {
    let _lock = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let ours = handler as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t;
    // SAFETY: a zeroed sigaction is a valid value to be filled in.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: querying the disposition only writes `current`.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut current) } != 0 {
        return false;
    }
    if current.sa_sigaction == ours {
        return true;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        PAGE.store(page as usize, Ordering::Release);
    }
    // SAFETY: ours is not installed (checked above, under the lock), so no
    // handler of this module reads PREVIOUS while it is written.
    unsafe { *PREVIOUS.0.get() = Some(current) };
    // SAFETY: a zeroed sigaction with an empty mask and our handler, which
    // has the three-argument signature SA_SIGINFO calls for.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = ours;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: `act.sa_mask` is a valid sigset to empty; installing a valid
    // action for SIGBUS.
    unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) == 0
    }
}

/// The registered map holding `addr`, if any, as (slot, start, len).
fn find(addr: usize) -> Option<(&'static Slot, usize, usize)> {
    TABLE.iter().find_map(|slot| {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || start == usize::MAX || addr < start {
            return None;
        }
        let len = slot.len.load(Ordering::Acquire);
        (addr - start < len).then_some((slot, start, len))
    })
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a handler installed
    // with SA_SIGINFO; for SIGBUS si_addr is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some((slot, start, len)) = find(addr) {
        let page = PAGE.load(Ordering::Acquire);
        let from = addr / page * page;
        // Maps start on a page boundary, so `from` is inside this one.
        let end = start + len.div_ceil(page) * page;
        // SAFETY: replaces pages of a read-only private map that this
        // process registered and still holds (a reader is using it: the
        // fault came from a read of it) with zero pages, equally read-only
        // and private; no other memory is touched.
        let p = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            slot.faults.fetch_add(1, Ordering::AcqRel);
            return;
        }
    }
    // SAFETY: passes the signal on as the kernel gave it to us.
    unsafe { chain(sig, info, ctx) };
}

/// Passes a fault that is not ours to the previous disposition: its
/// handler, or (for the default action, or when handlers keep passing the
/// fault back and forth) the default action, which ends the process.
///
/// # Safety
/// Called from the handler with the arguments it received.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: PREVIOUS was written before the handler was installed and is
    // not written while it is installed.
    let previous = unsafe { *PREVIOUS.0.get() };
    let depth = CHAINED.fetch_add(1, Ordering::AcqRel);
    match previous {
        Some(prev)
            if depth < 4
                && prev.sa_sigaction != libc::SIG_DFL
                && prev.sa_sigaction != libc::SIG_IGN =>
        {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: a handler installed with SA_SIGINFO has this
                // signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a handler installed without SA_SIGINFO has this
                // signature.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // The default action: restore it and let the fault happen again
            // (a signal sent with kill() is raised again instead; it stays
            // blocked until this handler returns).
            // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
            let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: installing the default action; raise is
            // async-signal-safe.
            unsafe {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
                if (*info).si_code <= 0 {
                    libc::raise(sig);
                }
            }
        }
    }
    CHAINED.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_claimed_and_freed() {
        let a = MapGuard::register(0x10000 as *const u8, 4096).unwrap();
        let b = MapGuard::register(0x20000 as *const u8, 8192).unwrap();
        assert_ne!(a.slot, b.slot);
        assert!(find(0x10000).is_some_and(|(_, s, _)| s == 0x10000));
        assert!(find(0x21fff).is_some_and(|(_, s, _)| s == 0x20000));
        assert!(find(0x22000).is_none());
        assert!(!a.damaged());
        drop(a);
        assert!(find(0x10000).is_none());
        assert!(MapGuard::register(0x30000 as *const u8, 0).is_none());
        drop(b);
    }
}
