//! The bytes a framework copies tensors from, piece by piece
//! (R/frameworks.R): a framework with the read hooks (torch) allocates each
//! tensor itself and copies each piece into it. Apart from
//! [`read_into_memory_`] (below), nothing here touches a framework's memory:
//! the framework itself copies from either
//! * a view of the piece where the source holds it in memory (a memory map
//!   or a raw vector): an external pointer whose address is the piece's
//!   first byte and which keeps that memory alive, or
//! * one of two staging raw vectors (allocated by R, on R's thread), which
//!   the core reads the piece into.
//!
//! [`read_into_memory_`] reads tensors whose memory R torch showed to hold
//! exactly the file's bytes (new CPU tensors, a module's parameters of the
//! file's dtype) straight into it with the core's read engine, with no
//! piece handed to R.
//!
//! A reader ([`piece_reader_`]) hands the pieces of one source out in the
//! order given ([`piece_next_`]); while the framework copies piece k, a
//! helper thread ([`ReadAhead`]) reads piece k + 1 into the other staging
//! vector, or, from a map, a pager thread ([`Pager`]) maps the first pages
//! of piece k + 1 in if the page cache lacks them (with one thread, the
//! kernel is only asked to read them into the page cache). Handing out the
//! next piece first finishes the previous one: its pages of the map are let
//! go of, and the source is
//! verified, so a file that changed or was truncated under the copy is an
//! error (`file_changed`), never silently wrong bytes.

use std::cell::RefCell;
use std::sync::Arc;

use extendr_api::prelude::*;
use extendr_ffi::{R_ExternalPtrProtected, R_MakeExternalPtr, R_NilValue, SEXPTYPE, VECTOR_ELT};
use safetensors_core::ahead::{Pager, ReadAhead};
use safetensors_core::convert::SharedSlice;
use safetensors_core::error::{Error, Kind, Result};
use safetensors_core::io::{FileSource, Memory, Positioned, Source};
use safetensors_core::read::{read_tasks, ReadInto, Task};

use crate::robj::{
    alloc, check_interrupt_now, parse_address, threads_from_r, to_r, vec_data, with_cell,
};
use crate::sources::{with_open, Backing};

/// What keeps a memory map alive for the views of it.
struct MapOwner(#[allow(unused)] Arc<FileSource>);

/// Where a reader's pieces come from.
enum Origin {
    /// A file, mapped or read with positioned reads.
    File(Arc<FileSource>),
    /// A raw vector, kept alive by the reader's protected slot (element 1).
    Memory { ptr: *const u8, len: usize },
}

impl Origin {
    fn with_source<T>(&self, f: impl FnOnce(&dyn Source) -> Result<T>) -> Result<T> {
        match self {
            Origin::File(file) => f(file.as_ref()),
            Origin::Memory { ptr, len } => {
                // SAFETY: the raw vector stays alive (R never moves vectors)
                // for as long as the reader's protected slot holds it.
                let bytes: &[u8] = unsafe { std::slice::from_raw_parts(*ptr, *len) };
                f(&Memory(bytes))
            }
        }
    }
}

/// How the pieces are handed out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hand {
    /// Views of the source's memory.
    Views,
    /// The staging raw vectors (elements 2 and 3 of the protected slot, or
    /// only 2 when there is one piece), filled by the core.
    Stage,
}

/// Bytes at the start of the next piece that the pager maps in while the
/// current one (at most 32 MiB) is copied, when the page cache lacks them;
/// the rest faults in as it is copied. From a cold page cache, a 1 GiB F32
/// load into new tensors took 0.60-0.69 s with the pager, 0.71-0.86 s with
/// the kernel only asked to read ahead (`MADV_WILLNEED`; 7 fresh processes
/// each, caches dropped before each). From a warm one, pages fault in
/// faster on torch's copying threads than a third thread maps them beside
/// them on two cores: in 5 fresh processes, 4 GiB of shards into a module
/// took a median 0.570 s without the pager, 0.664 s with it; so a piece the
/// cache holds is left to faults.
const MAP_AHEAD: usize = 16 << 20;

/// A source's pieces, handed out one at a time.
struct Reader {
    /// The helper thread, if any. Dropped first: it joins the thread, which
    /// may be writing a staging vector, before anything else goes.
    ahead: Option<ReadAhead>,
    /// The pager thread of a mapped file's views, started for the first
    /// piece the page cache lacks when `threads` allow it.
    pager: Option<Pager>,
    /// Whether a pager thread may be started (`threads` above 1).
    threads: bool,
    /// The last piece the pager was asked to map in.
    paged: Option<usize>,
    /// The last piece asked about with [`Reader::cached`], and the answer:
    /// each piece is asked about once, as the next one and then as its own.
    known: Option<(usize, bool)>,
    from: Origin,
    hand: Hand,
    /// Each piece's offset in the source and length in bytes.
    pieces: Vec<(usize, usize)>,
    /// The data of the staging vectors.
    stage: Vec<*mut u8>,
    /// The next piece to hand out.
    next: usize,
    /// Pieces whose read was sent to the helper (staging).
    sent: usize,
    /// The piece handed out last, not finished yet.
    held: Option<usize>,
    done: bool,
}

impl Reader {
    /// Asks the helper to read piece `k` into staging vector `k % 2`.
    fn send(&mut self, k: usize) -> Result<()> {
        let Some(&(off, n)) = self.pieces.get(k) else {
            return Ok(());
        };
        let Some(ahead) = self.ahead.as_mut() else {
            return Ok(());
        };
        // SAFETY: staging vector k % 2 is at least n bytes (allocated for
        // the largest piece), kept alive by the protected slot, and
        // untouched until this job's wait: R copies from the other one
        // (k - 1) meanwhile, and gets this one only from `next` after the
        // wait.
        unsafe { ahead.read(off, self.stage[k % 2], n)? };
        self.sent = k + 1;
        Ok(())
    }

    /// Finishes the piece handed out last: lets go of its mapped pages, and
    /// checks that the source did not change under the copy.
    fn release(&mut self) -> Result<()> {
        let Some(k) = self.held.take() else {
            return Ok(());
        };
        let (off, n) = self.pieces[k];
        self.from.with_source(|src| {
            if self.hand == Hand::Views {
                // Here rather than on the pager: with both cores copying,
                // the pager ran late enough for two whole pieces to be held.
                src.done_with(off, n);
            }
            src.verify()
        })
    }

    /// Whether piece `k` of a mapped file is in the page cache, as far as a
    /// sample of its pages shows (`FileSource::cached`).
    fn cached(&mut self, k: usize) -> bool {
        if let Some((j, answer)) = self.known {
            if j == k {
                return answer;
            }
        }
        let answer = match (&self.from, self.pieces.get(k)) {
            (Origin::File(file), Some(&(off, n))) => file.cached(off, n),
            _ => false,
        };
        self.known = Some((k, answer));
        answer
    }

    /// Piece `self.next`: where it is handed out from.
    fn next(&mut self) -> Result<Handed> {
        self.release()?;
        let k = self.next;
        let Some(&(off, n)) = self.pieces.get(k) else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: every piece was read",
            ));
        };
        self.next += 1;
        match self.hand {
            Hand::Views => {
                // The pager mapped (the start of) this piece in while the
                // one before was copied, if the page cache lacked it; from
                // now on it leaves the piece alone, so its pages are let go
                // of for good. A first piece the cache lacks is mapped here
                // in one call; pages the cache holds fault in as torch
                // copies (MAP_AHEAD).
                let paged = self.paged == Some(k);
                if let Some(pager) = &self.pager {
                    pager.handed(k);
                }
                let whole = !paged && !self.cached(k);
                let addr = self.from.with_source(|src| {
                    let view = if whole {
                        src.view_whole(off, n)?
                    } else {
                        src.view(off, n)?
                    };
                    match view {
                        Some(bytes) => Ok(bytes.as_ptr()),
                        None => Err(Error::new(
                            Kind::InvalidArgument,
                            "internal error: the source holds no bytes in memory",
                        )),
                    }
                })?;
                let next_cached = self.cached(k + 1);
                if let (Origin::File(file), Some(&(off, n))) = (&self.from, self.pieces.get(k + 1))
                {
                    if !next_cached {
                        if self.pager.is_none() && self.threads {
                            self.pager = Some(Pager::new(Arc::clone(file))?);
                        }
                        match &self.pager {
                            Some(pager) => {
                                pager.map(k + 1, off, n.min(MAP_AHEAD));
                                self.paged = Some(k + 1);
                            }
                            None => file.prefetch(off, n),
                        }
                    }
                }
                self.held = Some(k);
                Ok(Handed::View(addr))
            }
            Hand::Stage => {
                if self.ahead.is_some() {
                    // The first call sends pieces 0 and 1; later ones send
                    // piece k + 1 into the vector R just finished with.
                    while self.sent <= (k + 1).min(self.pieces.len() - 1) {
                        self.send(self.sent)?;
                    }
                    if let Some(a) = self.ahead.as_mut() {
                        a.wait(&mut check_interrupt_now)?;
                    }
                } else {
                    // SAFETY: staging vector k % 2 holds at least n bytes and
                    // is not in R's hands (R finished with it).
                    let buf = unsafe { std::slice::from_raw_parts_mut(self.stage[k % 2], n) };
                    self.from.with_source(|src| src.read_at(off, buf))?;
                }
                self.held = Some(k);
                // The bytes just read are checked by the next release.
                Ok(Handed::Stage(k % 2))
            }
        }
    }

    /// Finishes the last piece and stops the helper thread.
    fn end(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let res = self.release();
        // Joins the helper, which may still work on a piece never handed
        // out, and the pager.
        self.ahead = None;
        self.pager = None;
        res
    }
}

/// Where [`Reader::next`] put a piece.
enum Handed {
    /// At this address of the source's memory.
    View(*const u8),
    /// In staging vector 0 or 1.
    Stage(usize),
}

fn with_reader<T>(r: &Robj, f: impl FnOnce(&mut Reader) -> Result<T>) -> Result<T> {
    with_cell(r, "a piece reader", f)
}

/// Whole bytes from R's doubles.
fn whole(v: f64) -> Option<usize> {
    (v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53)).then_some(v as usize)
}

/// A reader of the pieces of the source of handle `x` at byte `offsets`
/// (in the source) of byte lengths `sizes`, handed out in that order by
/// [`piece_next_`]. With `views`, pieces the source holds in memory (a map,
/// a raw vector) are handed out as views; otherwise (or for a file read
/// with positioned reads) as staging raw vectors allocated here. With
/// `threads` above 1, a helper thread reads the next piece of a file into
/// a staging vector ahead.
/// @noRd
#[extendr]
fn piece_reader_(x: Robj, offsets: &[f64], sizes: &[f64], views: bool, threads: i32) -> Robj {
    to_r(with_open(&x, |open| {
        let bad = || Error::new(Kind::InvalidArgument, "internal error: invalid pieces");
        if offsets.len() != sizes.len() {
            return Err(bad());
        }
        let (from, keep, in_memory) = match &open.backing {
            Backing::File(file) => (
                Origin::File(Arc::clone(file)),
                ().into(),
                file.backend() == safetensors_core::io::Backend::Mmap,
            ),
            Backing::Memory { ptr, len } => {
                // SAFETY: `x` is the handle's external pointer (with_open
                // checked it); its protected slot is the raw vector.
                let raw = unsafe { Robj::from_sexp(R_ExternalPtrProtected(x.get())) };
                (
                    Origin::Memory {
                        ptr: *ptr,
                        len: *len,
                    },
                    raw,
                    true,
                )
            }
            Backing::Remote { .. } => return Err(bad()),
        };
        let len = from.with_source(|s| Ok(s.len()))?;
        let mut pieces = Vec::with_capacity(offsets.len());
        for (&o, &s) in offsets.iter().zip(sizes) {
            let (Some(o), Some(s)) = (whole(o), whole(s)) else {
                return Err(bad());
            };
            if !o.checked_add(s).is_some_and(|e| e as u64 <= len) {
                return Err(bad());
            }
            pieces.push((o, s));
        }
        let hand = if views && in_memory {
            Hand::Views
        } else {
            Hand::Stage
        };
        let mut stage_robjs: Vec<Robj> = Vec::new();
        if hand == Hand::Stage {
            let most = pieces.iter().map(|p| p.1).max().unwrap_or(0);
            for _ in 0..pieces.len().min(2) {
                stage_robjs.push(alloc(SEXPTYPE::RAWSXP, most)?);
            }
        }
        let stage = stage_robjs
            .iter()
            // SAFETY: fresh raw vectors, alive while `stage_robjs` (and then
            // the protected slot) holds them.
            .map(|r| unsafe { vec_data(r.get(), SEXPTYPE::RAWSXP) })
            .collect();
        let ahead = match &from {
            Origin::File(file)
                if hand == Hand::Stage && threads_wanted(threads) && pieces.len() > 1 =>
            {
                Some(ReadAhead::new(Arc::clone(file))?)
            }
            _ => None,
        };
        let reader = Reader {
            ahead,
            pager: None,
            threads: threads_wanted(threads),
            paged: None,
            known: None,
            from,
            hand,
            pieces,
            stage,
            next: 0,
            sent: 0,
            held: None,
            done: false,
        };
        let ptr: Robj = ExternalPtr::new(RefCell::new(reader)).into();
        let mut slot = vec![keep];
        slot.extend(stage_robjs);
        let slot: Robj = List::from_values(slot).into();
        // SAFETY: both are valid R objects; the protected slot keeps the raw
        // vector the views point into and the staging vectors alive for as
        // long as the reader lives (its finalizer joins the helper thread
        // before they can go).
        unsafe { extendr_ffi::R_SetExternalPtrProtected(ptr.get(), slot.get()) };
        Ok(ptr)
    }))
}

fn threads_wanted(threads: i32) -> bool {
    crate::robj::threads_from_r(threads) > 1
}

/// The next piece of reader `r`: a view (an external pointer to its first
/// byte, which keeps the memory alive) or a staging raw vector whose first
/// bytes are the piece (it may be longer). The piece handed out before is
/// finished first (see the module's documentation); the bytes are valid
/// until the next call.
/// @noRd
#[extendr]
fn piece_next_(r: Robj) -> Robj {
    to_r(with_reader(&r, |reader| {
        let keep_memory = match &reader.from {
            Origin::File(file) => Some(Arc::clone(file)),
            Origin::Memory { .. } => None,
        };
        // SAFETY: `r` is the reader's external pointer (with_reader checked
        // it); its protected slot is the list made by piece_reader_.
        let slot = unsafe { R_ExternalPtrProtected(r.get()) };
        match reader.next()? {
            Handed::Stage(i) => {
                // SAFETY: elements 1 and 2 of the slot are the staging
                // vectors (piece_reader_ made one per piece, up to two).
                Ok(unsafe { Robj::from_sexp(VECTOR_ELT(slot, 1 + i as isize)) })
            }
            Handed::View(addr) => {
                let keep: Robj = match keep_memory {
                    Some(file) => ExternalPtr::new(MapOwner(file)).into(),
                    // SAFETY: element 0 of the slot is the raw vector.
                    None => unsafe { Robj::from_sexp(VECTOR_ELT(slot, 0)) },
                };
                // SAFETY: R torch only reads through the view, for as long as
                // R keeps the external pointer, whose protected slot keeps the
                // map (an Arc of it) or the raw vector alive; no finalizer is
                // needed, as the pointer owns nothing itself.
                Ok(unsafe {
                    Robj::from_sexp(R_MakeExternalPtr(
                        addr as *mut std::os::raw::c_void,
                        R_NilValue,
                        keep.get(),
                    ))
                })
            }
        }
    }))
}

/// Finishes reader `r`: the last piece handed out (its pages let go of, the
/// source verified), and the helper thread stopped. Returns `NULL`; calling
/// it again does nothing.
/// @noRd
#[extendr]
fn piece_end_(r: Robj) -> Robj {
    to_r(with_reader(&r, |reader| reader.end().map(|()| ().into())))
}

/// Reads tensors `names` of handle `x` (a local file or a raw vector) into
/// memory R torch owns: the bytes of tensor `names[k]`, as stored, to
/// `addresses[k]` (torch's text of the pointer), on up to `threads`
/// threads. `fresh`: the memory is new, to be faulted in ahead (else see
/// `Task::in_use()`). R checked with torch that each address is the start
/// of a CPU tensor's storage that holds exactly those bytes, row-major, in the
/// file's dtype (torch_memories() in R/torch.R), and R references the
/// tensors for this call, during which nothing else uses them. A file is
/// read with positioned reads whatever its backend (see [`Positioned`]) and
/// verified after. Returns `NULL`; on error the memory is partly written.
/// @noRd
#[extendr]
fn read_into_memory_(
    x: Robj,
    names: Strings,
    addresses: Strings,
    fresh: bool,
    threads: i32,
) -> Robj {
    to_r(with_open(&x, |open| {
        let bad = |what: &str| {
            Error::new(
                Kind::InvalidArgument,
                format!("internal error: {what} for a read into memory"),
            )
        };
        if names.len() != addresses.len() {
            return Err(bad("as many names as addresses are needed"));
        }
        let header = &open.header;
        let mut dests = Vec::with_capacity(names.len());
        for (name, address) in names.iter().zip(addresses.iter()) {
            let info = &header.tensors[open.find(name.as_ref())?];
            let ptr = parse_address(address.as_ref()).ok_or_else(|| bad("an invalid address"))?;
            let n = info.nbytes();
            let end = ptr
                .checked_add(n)
                .ok_or_else(|| bad("an invalid address"))?;
            dests.push((ptr, end, info));
        }
        // Every destination its own: tied weights share memory, and two
        // threads must never write the same bytes (R sends such tensors
        // through torch's copy_() instead).
        let mut spans: Vec<(usize, usize)> = dests.iter().map(|d| (d.0, d.1)).collect();
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[1].0 < w[0].1) {
            return Err(bad("overlapping memory"));
        }
        let tasks = dests
            .iter()
            .map(|&(ptr, _, info)| {
                // SAFETY: torch allocated `nbytes` bytes at `ptr` for this
                // tensor, which R keeps alive and nothing else touches for
                // this call (see above); the destinations are disjoint.
                let dest = unsafe { SharedSlice::from_raw(ptr as *mut u8, info.nbytes()) };
                let task = Task::new(info, header.data_start(), ReadInto::Bytes(dest))?;
                Ok(if fresh { task } else { task.in_use() })
            })
            .collect::<Result<Vec<_>>>()?;
        let threads = threads_from_r(threads);
        let poll = &mut check_interrupt_now;
        match &open.backing {
            Backing::File(file) => read_tasks(&Positioned(file.as_ref()), &tasks, threads, poll)?,
            _ => open.with_source(|src| read_tasks(src, &tasks, threads, poll))?,
        };
        Ok(().into())
    }))
}

extendr_module! {
    mod frameworks;
    fn read_into_memory_;
    fn piece_reader_;
    fn piece_next_;
    fn piece_end_;
}
