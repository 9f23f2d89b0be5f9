//! The read engine: every load goes through it, whatever reads the file
//! (whole loads, handles, slices, torch) and wherever the values go.
//!
//! The caller allocates each destination (an R vector, a torch tensor's
//! staging buffer) and describes it as a [`Task`]: where the tensor's bytes
//! are, and whether they are copied as they are ([`ReadInto::Bytes`]) or
//! converted by the kernels ([`ReadInto::Values`]). [`read_tasks`] plans the
//! work as jobs (a block of rows of a large tensor, or a span of adjacent
//! small tensors read with one call), which write disjoint parts of the
//! destinations, so threads can run them in any order. Only the calling
//! thread runs the `poll` callback, between its jobs.
//!
//! [`read_slice`] reads a selection of one tensor ([`crate::slice`]),
//! touching only the bytes it needs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::convert::{self, decode_rows, n_rows, row_len, DecodeStats, SharedSlice, SharedVector};
use crate::dtype::Dtype;
use crate::error::{Error, Kind, Result};
use crate::format::TensorInfo;
use crate::io::{populate_write, Source};
use crate::slice::{Cursor, Plan};
use crate::Poll;

/// Bytes of source per job: a block of rows of a large tensor, or a span of
/// small adjacent tensors.
const JOB: usize = 2 << 20;
/// Tensors up to this size are read in spans with their neighbours.
const SMALL: usize = 1 << 20;
/// Reads smaller than this in total stay on one thread.
const PARALLEL_MIN: usize = 4 << 20;
/// Bytes of a destination faulted in per job.
const POPULATE: usize = 16 << 20;
/// Destinations smaller than this are left to fault in as they are written.
const POPULATE_MIN: usize = 256 << 10;
/// Bytes of a slice decoded between two polls.
const SLICE_BLOCK: usize = 4 << 20;

/// The default number of threads: the available cores, at most 2.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2)
}

/// What the read engine reads one tensor into: its bytes as stored, or its
/// values decoded into an R vector.
#[derive(Clone, Copy)]
pub enum ReadInto<'a> {
    /// The bytes as stored (row-major, little-endian): a raw copy.
    Bytes(SharedSlice<'a, u8>),
    /// Values converted and permuted to column-major by the kernels.
    Values(SharedVector<'a>),
}

impl ReadInto<'_> {
    /// The destination's address and size in bytes.
    fn memory(&self) -> (*mut u8, usize) {
        match self {
            ReadInto::Bytes(o) => o.memory(),
            ReadInto::Values(t) => t.memory(),
        }
    }
}

/// One read: a tensor (or a byte range of one) and its destination.
pub struct Task<'a> {
    dtype: Dtype,
    /// The shape as the kernels see it ([`convert::kernel_shape`]).
    shape: Vec<usize>,
    /// Absolute offset of the bytes in the source.
    off: usize,
    nbytes: usize,
    dest: ReadInto<'a>,
    count_i32_min: bool,
    /// Whether the destination is new memory, faulted in ahead of the copy
    /// (see [`Task::in_use`]).
    fresh: bool,
    /// The outer rows (of the kernel shape) this task reads: all of them,
    /// unless [`Task::rows`] restricted it to a piece.
    rows: (usize, usize),
}

impl<'a> Task<'a> {
    /// Reads tensor `info`, whose data section starts at absolute offset
    /// `data_start`, into `dest`, which must be exactly the tensor's size:
    /// its bytes, or its elements of a type the dtype decodes into.
    pub fn new(info: &TensorInfo, data_start: usize, dest: ReadInto<'a>) -> Result<Task<'a>> {
        let off = data_start.checked_add(info.begin).ok_or_else(|| {
            Error::tensor(Kind::Overflow, &info.name, "the tensor's offset overflows")
        })?;
        let fits = match &dest {
            ReadInto::Bytes(o) => o.len() == info.nbytes(),
            ReadInto::Values(t) => t.len() == info.numel() && convert::decodes_into(info.dtype, t),
        };
        if !fits {
            return Err(mismatch(&info.name));
        }
        let shape = convert::kernel_shape(&info.shape);
        let rows = (0, n_rows(&shape));
        Ok(Task {
            dtype: info.dtype,
            shape,
            off,
            nbytes: info.nbytes(),
            dest,
            count_i32_min: false,
            fresh: true,
            rows,
        })
    }

    /// The same task restricted to outer rows `[r0, r1)` of the kernel
    /// shape (see [`plan_fetches`]): only their bytes are read, only their
    /// part of the destination written. The rows must start and end on
    /// byte boundaries.
    pub fn rows(mut self, r0: usize, r1: usize) -> Result<Task<'a>> {
        let bits = |r: usize| {
            r.checked_mul(row_len(&self.shape))
                .and_then(|n| n.checked_mul(self.dtype.bits()))
        };
        let aligned = |r: usize| bits(r).is_some_and(|b| b % 8 == 0);
        if r0 > r1 || r1 > self.rows.1 || !aligned(r0) || !aligned(r1) {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: a piece's rows don't fit its tensor",
            ));
        }
        self.rows = (r0, r1);
        Ok(self)
    }

    /// Whether the task reads the whole tensor.
    fn is_whole(&self) -> bool {
        self.rows == (0, n_rows(&self.shape))
    }

    /// Copies bytes `[off, off + dest.len())` of the source, as they are:
    /// part of a tensor read in pieces (torch's staging buffer).
    pub fn bytes(off: usize, dest: SharedSlice<'a, u8>) -> Task<'a> {
        let n = dest.len();
        Task {
            dtype: Dtype::U8,
            shape: vec![n],
            off,
            nbytes: n,
            dest: ReadInto::Bytes(dest),
            count_i32_min: false,
            fresh: true,
            rows: (0, n),
        }
    }

    /// Also counts, in the notes, the I32 values equal to `i32::MIN` among
    /// bytes copied as they are (R's `NA_integer_`).
    pub fn counting_i32_min(mut self) -> Task<'a> {
        self.count_i32_min = matches!(self.dest, ReadInto::Bytes(_)) && self.dtype == Dtype::I32;
        self
    }

    /// Says that the destination is memory already in use (a module's
    /// parameters), whose pages are there: asking the kernel to fault them
    /// in ahead would only walk them (40-60 ms a GiB here, where reading
    /// the GiB into them takes 90-100 ms).
    pub fn in_use(mut self) -> Task<'a> {
        self.fresh = false;
        self
    }

    /// Outer rows per job so one job reads about `JOB` bytes.
    fn rows_per_job(&self) -> usize {
        let row_bits = row_len(&self.shape)
            .saturating_mul(self.dtype.bits())
            .max(1);
        convert::block_rows(JOB * 8 / row_bits, self.dtype)
    }

    /// Byte offset of outer row `r` (of the kernel shape).
    fn row_offset(&self, r: usize) -> usize {
        r * row_len(&self.shape) * self.dtype.bits() / 8
    }
}

fn mismatch(name: &str) -> Error {
    Error::tensor(
        Kind::InvalidArgument,
        name,
        format!(
            "internal error: the destination of tensor `{name}` doesn't match its size or type"
        ),
    )
}

/// A unit of work for one thread.
enum Job {
    /// Fault in bytes `[b0, b1)` of task `task`'s destination.
    Populate { task: usize, b0: usize, b1: usize },
    /// Outer rows `[r0, r1)` of task `task`.
    Rows { task: usize, r0: usize, r1: usize },
    /// Tasks `[first, last)`, adjacent in the source, read in one go.
    Span { first: usize, last: usize },
}

/// Conversion notes per task, added to by any thread.
#[derive(Default)]
struct Notes {
    inexact: AtomicUsize,
    int_min: AtomicUsize,
    na: AtomicUsize,
}

impl Notes {
    fn add(&self, s: DecodeStats) {
        if s.inexact > 0 {
            self.inexact.fetch_add(s.inexact, Ordering::Relaxed);
        }
        if s.int_min > 0 {
            self.int_min.fetch_add(s.int_min, Ordering::Relaxed);
        }
        if s.na > 0 {
            self.na.fetch_add(s.na, Ordering::Relaxed);
        }
    }

    fn get(&self) -> DecodeStats {
        DecodeStats {
            inexact: self.inexact.load(Ordering::Relaxed),
            int_min: self.int_min.load(Ordering::Relaxed),
            na: self.na.load(Ordering::Relaxed),
        }
    }
}

fn plan_jobs(tasks: &[Task<'_>]) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut k = 0;
    while k < tasks.len() {
        let t = &tasks[k];
        if t.nbytes <= SMALL && t.is_whole() {
            let first = k;
            let mut end = t.off + t.nbytes;
            k += 1;
            while k < tasks.len() {
                let u = &tasks[k];
                if u.nbytes > SMALL
                    || !u.is_whole()
                    || u.off != end
                    || end + u.nbytes - tasks[first].off > JOB
                {
                    break;
                }
                end += u.nbytes;
                k += 1;
            }
            jobs.push(Job::Span { first, last: k });
        } else {
            // A piece of a tensor writes rows spread over all of its
            // (column-major) destination: no faulting in ahead.
            if t.is_whole() && t.fresh {
                let (_, size) = t.dest.memory();
                let mut b0 = 0;
                while b0 < size {
                    let b1 = (b0 + POPULATE).min(size);
                    jobs.push(Job::Populate { task: k, b0, b1 });
                    b0 = b1;
                }
            }
            let (mut r0, rows) = t.rows;
            let per = t.rows_per_job();
            while r0 < rows {
                let r1 = (r0 + per).min(rows);
                jobs.push(Job::Rows { task: k, r0, r1 });
                r0 = r1;
            }
            k += 1;
        }
    }
    jobs
}

/// Bytes `[off, off + n)` of `src`: borrowed from its memory, or read into
/// `buf`.
fn bytes_at<'b>(
    src: &'b dyn Source,
    off: usize,
    n: usize,
    buf: &'b mut Vec<u8>,
) -> Result<&'b [u8]> {
    if let Some(v) = src.view_whole(off, n)? {
        return Ok(v);
    }
    buf.resize(n, 0);
    src.read_at(off, &mut buf[..n])?;
    Ok(&buf[..n])
}

/// Fills all of task `t` from `bytes`, its whole data.
fn fill_whole(t: &Task<'_>, bytes: &[u8], notes: &Notes) -> Result<()> {
    let (ptr, size) = t.dest.memory();
    if size >= POPULATE_MIN && t.fresh {
        populate_write(ptr, size);
    }
    match t.dest {
        ReadInto::Bytes(out) => {
            // SAFETY: this job owns the whole destination, whose size is
            // the task's (checked when the task was made), as is `bytes`'s.
            let dst = unsafe { out.part(0, out.len()) };
            dst.copy_from_slice(bytes);
            if t.count_i32_min {
                notes.add(DecodeStats {
                    int_min: convert::count_i32_min(dst),
                    ..DecodeStats::default()
                });
            }
        }
        ReadInto::Values(target) => {
            let rows = n_rows(&t.shape);
            // SAFETY: this job owns all rows of the tensor.
            notes.add(unsafe { decode_rows(t.dtype, bytes, &t.shape, 0, rows, target) }?);
        }
    }
    Ok(())
}

fn run_job(
    job: &Job,
    tasks: &[Task<'_>],
    src: &dyn Source,
    buf: &mut Vec<u8>,
    notes: &[Notes],
) -> Result<()> {
    match *job {
        Job::Populate { task, b0, b1 } => {
            let (ptr, size) = tasks[task].dest.memory();
            if b1 <= size {
                // Inside the destination (b1 <= size); populate_write only
                // faults pages in.
                populate_write(ptr.wrapping_add(b0), b1 - b0);
            }
        }
        Job::Rows { task, r0, r1 } => {
            let t = &tasks[task];
            let (b0, b1) = (t.row_offset(r0), t.row_offset(r1));
            match t.dest {
                ReadInto::Bytes(out) => {
                    // SAFETY: bytes [b0, b1) of the destination are rows
                    // [r0, r1), which only this job writes.
                    let dst = unsafe { out.part(b0, b1 - b0) };
                    match src.view_whole(t.off + b0, b1 - b0)? {
                        Some(v) => {
                            dst.copy_from_slice(v);
                            src.done_with(t.off + b0, b1 - b0);
                        }
                        None => src.read_at(t.off + b0, dst)?,
                    }
                    if t.count_i32_min {
                        notes[task].add(DecodeStats {
                            int_min: convert::count_i32_min(dst),
                            ..DecodeStats::default()
                        });
                    }
                }
                ReadInto::Values(target) => {
                    let bytes = bytes_at(src, t.off + b0, b1 - b0, buf)?;
                    // SAFETY: rows [r0, r1) are only this job's.
                    notes[task]
                        .add(unsafe { decode_rows(t.dtype, bytes, &t.shape, r0, r1, target) }?);
                    src.done_with(t.off + b0, b1 - b0);
                }
            }
        }
        Job::Span { first, last } => {
            let start = tasks[first].off;
            let end = tasks[last - 1].off + tasks[last - 1].nbytes;
            let bytes = bytes_at(src, start, end - start, buf)?;
            for (t, n) in tasks[first..last].iter().zip(&notes[first..last]) {
                let at = t.off - start;
                fill_whole(t, &bytes[at..at + t.nbytes], n)?;
            }
            src.done_with(start, end - start);
        }
    }
    Ok(())
}

/// Reads every task, on up to `threads` threads when the source allows it
/// and the read is large enough, calling `poll` between the calling
/// thread's jobs. Returns each task's conversion notes. On error (from the
/// source, or from `poll`), the destinations are partly written.
pub fn read_tasks(
    src: &dyn Source,
    tasks: &[Task<'_>],
    threads: usize,
    poll: Poll<'_>,
) -> Result<Vec<DecodeStats>> {
    let jobs = plan_jobs(tasks);
    let notes: Vec<Notes> = tasks.iter().map(|_| Notes::default()).collect();
    let total: usize = tasks
        .iter()
        .map(|t| t.row_offset(t.rows.1) - t.row_offset(t.rows.0))
        .sum();
    let threads = if total < PARALLEL_MIN {
        1
    } else {
        threads.min(jobs.len())
    };
    match src.as_sync() {
        Some(shared) if threads > 1 => run_parallel(shared, tasks, &jobs, &notes, threads, poll)?,
        _ => {
            let mut buf = Vec::new();
            for (j, job) in jobs.iter().enumerate() {
                run_job(job, tasks, src, &mut buf, &notes)?;
                if j + 1 < jobs.len() {
                    poll()?;
                }
            }
        }
    }
    // A file that changed under the read (or whose map lost pages) is an
    // error, never silently mixed or zeroed values.
    src.verify()?;
    Ok(notes.iter().map(Notes::get).collect())
}

fn run_parallel(
    src: &(dyn Source + Sync),
    tasks: &[Task<'_>],
    jobs: &[Job],
    notes: &[Notes],
    threads: usize,
    poll: Poll<'_>,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // The failure of the earliest job, so the error doesn't depend on timing
    // (a failed poll counts as job `usize::MAX`).
    let failure: Mutex<Option<(usize, Error)>> = Mutex::new(None);
    let fail = |j: usize, e: Error| {
        let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.as_ref().map_or(true, |(k, _)| j < *k) {
            *f = Some((j, e));
        }
        stop.store(true, Ordering::Relaxed);
    };
    let work = |mut poll: Option<Poll<'_>>| {
        let mut buf = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let j = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(j) else { break };
            if let Err(e) = run_job(job, tasks, src, &mut buf, notes) {
                fail(j, e);
                break;
            }
            // Only the calling thread polls (the callback may call into R).
            if let Some(p) = poll.as_mut() {
                if let Err(e) = p() {
                    fail(usize::MAX, e);
                    break;
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| work(None));
        }
        work(Some(poll));
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// A contiguous byte range of a source to fetch from afar (an HTTP range
/// request), cut into pieces that are fetched and read one at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// Absolute offset of the first byte.
    pub off: usize,
    /// Number of bytes (the sum of the pieces').
    pub len: usize,
    /// The pieces, back to back from `off`.
    pub pieces: Vec<Piece>,
}

/// A piece of a [`Fetch`]: whole tensors, or some outer rows of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Absolute offset of the first byte.
    pub off: usize,
    /// Number of bytes.
    pub len: usize,
    /// Positions in the header of the tensors it holds (consecutive, so
    /// adjacent in the source).
    pub tensors: std::ops::Range<usize>,
    /// For a piece of one tensor, its outer rows `[r0, r1)` of the kernel
    /// shape ([`Task::rows`]); `None` for whole tensors.
    pub rows: Option<(usize, usize)>,
}

/// What reading tensors `which` (positions in `tensors`, the header's
/// tensors in file order, whose data section starts at `data_start`) needs
/// from a source that is fetched rather than read: one [`Fetch`] per
/// contiguous run of the tensors asked for (tensors are back to back, so
/// consecutive positions are adjacent), each in pieces of at most `max`
/// bytes (whole tensors together, or one tensor's rows; a single row
/// larger than `max` is a piece of its own). Repeated and empty tensors
/// need nothing; the fetches are in file order.
pub fn plan_fetches(
    tensors: &[TensorInfo],
    data_start: usize,
    which: &[usize],
    max: usize,
) -> Result<Vec<Fetch>> {
    let max = max.max(1);
    let mut wanted: Vec<usize> = which
        .iter()
        .copied()
        .filter(|&i| i < tensors.len() && tensors[i].nbytes() > 0)
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let abs = |t: &TensorInfo| {
        data_start
            .checked_add(t.begin)
            .ok_or_else(|| Error::tensor(Kind::Overflow, &t.name, "the tensor's offset overflows"))
    };
    let mut fetches: Vec<Fetch> = Vec::new();
    let mut prev: Option<usize> = None;
    for &i in &wanted {
        let t = &tensors[i];
        let off = abs(t)?;
        let nbytes = t.nbytes();
        if prev.map_or(true, |p| p + 1 != i) {
            fetches.push(Fetch {
                off,
                len: 0,
                pieces: Vec::new(),
            });
        }
        prev = Some(i);
        let Some(fetch) = fetches.last_mut() else {
            continue;
        };
        fetch.len += nbytes;
        if nbytes <= max {
            // With the previous whole tensors, if they fit together.
            if let Some(p) = fetch.pieces.last_mut() {
                if p.rows.is_none() && p.off + p.len == off && p.len + nbytes <= max {
                    p.len += nbytes;
                    p.tensors.end = i + 1;
                    continue;
                }
            }
            fetch.pieces.push(Piece {
                off,
                len: nbytes,
                tensors: i..i + 1,
                rows: None,
            });
            continue;
        }
        let shape = convert::kernel_shape(&t.shape);
        let rows = n_rows(&shape);
        let row_bits = row_len(&shape).saturating_mul(t.dtype.bits()).max(1);
        let per = convert::block_rows(max.saturating_mul(8) / row_bits, t.dtype);
        // Rows of whole bytes: validated sizes make these products fit.
        let at = |r: usize| r * row_len(&shape) * t.dtype.bits() / 8;
        let mut r0 = 0;
        while r0 < rows {
            let r1 = r0.saturating_add(per).min(rows);
            fetch.pieces.push(Piece {
                off: off + at(r0),
                len: at(r1) - at(r0),
                tensors: i..i + 1,
                rows: Some((r0, r1)),
            });
            r0 = r1;
        }
    }
    Ok(fetches)
}

/// Output rows per decoded block of a slice: about `SLICE_BLOCK` bytes, a
/// multiple of 8 rows for sub-byte dtypes so every block starts on a byte
/// boundary.
fn slice_rows_per_block(shape: &[usize], dtype: Dtype) -> usize {
    let row_bits = row_len(shape).saturating_mul(dtype.bits()).max(1);
    let rows = (SLICE_BLOCK * 8 / row_bits).max(1);
    if dtype.bits() % 8 != 0 {
        rows.next_multiple_of(8)
    } else {
        rows
    }
}

/// Reads the selection `plan` of tensor `info` (its data section at
/// absolute offset `data_start` of `src`) into `dest`: the selection's
/// row-major bytes, or its values converted, column-major, in the shape
/// `plan.out_shape()`. Only the bytes of the selected elements are read
/// (with small gaps between runs read through), never bytes outside the
/// tensor.
pub fn read_slice(
    src: &dyn Source,
    info: &TensorInfo,
    data_start: usize,
    plan: &Plan,
    dest: ReadInto<'_>,
    poll: Poll<'_>,
) -> Result<DecodeStats> {
    let name = info.name.as_str();
    let dtype = info.dtype;
    let shape = plan.out_shape();
    let numel = plan.out_numel();
    let Some(nbytes) = numel.checked_mul(dtype.bits()).map(|b| b.div_ceil(8)) else {
        return Err(Error::tensor(
            Kind::Overflow,
            name,
            "the slice has too many elements",
        ));
    };
    let fits = match &dest {
        ReadInto::Bytes(o) => o.len() == nbytes,
        ReadInto::Values(t) => t.len() == numel && convert::decodes_into(dtype, t),
    };
    let off = data_start.checked_add(info.begin);
    let (true, Some(off)) = (fits, off) else {
        return Err(mismatch(name));
    };
    let ranges = plan.byte_ranges(dtype.bits(), name)?;
    let mut cursor = Cursor::new(src, off, info.nbytes(), ranges);
    match dest {
        ReadInto::Bytes(out) => {
            // SAFETY: the destination is borrowed whole for this call.
            let out = unsafe { out.part(0, out.len()) };
            let mut done = 0;
            while done < nbytes {
                let n = (nbytes - done).min(16 * SLICE_BLOCK);
                cursor.fill(&mut out[done..done + n])?;
                done += n;
                poll()?;
            }
            // A file that changed under the read is an error (see read_tasks).
            src.verify()?;
            Ok(DecodeStats::default())
        }
        ReadInto::Values(target) => {
            let mut stats = DecodeStats::default();
            if numel == 0 {
                return Ok(stats);
            }
            // A scalar is one row; otherwise rows are the first extent.
            let rows = shape.first().copied().unwrap_or(1);
            let row_bits = row_len(shape) * dtype.bits();
            let per = slice_rows_per_block(shape, dtype);
            let mut buf = vec![0u8; (per.min(rows) * row_bits).div_ceil(8)];
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + per).min(rows);
                let n = ((r1 - r0) * row_bits).div_ceil(8);
                let block = &mut buf[..n];
                cursor.fill(block)?;
                // SAFETY: the destination is borrowed whole for this call,
                // and the blocks write disjoint rows.
                stats = stats.merge(unsafe { decode_rows(dtype, block, shape, r0, r1, target) }?);
                r0 = r1;
                poll()?;
            }
            src.verify()?;
            Ok(stats)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{read_header, Memory, Segments};
    use crate::slice::Sel;
    use std::cell::RefCell;

    /// A source that must be read (no memory view) and records its reads.
    struct Counting {
        bytes: Vec<u8>,
        reads: RefCell<Vec<(usize, usize)>>,
    }

    impl Source for Counting {
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn view(&self, _: usize, _: usize) -> Result<Option<&[u8]>> {
            Ok(None)
        }
        fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()> {
            self.reads.borrow_mut().push((off, buf.len()));
            Memory(&self.bytes).read_at(off, buf)
        }
    }

    fn file(json: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    fn never() -> impl FnMut() -> Result<()> {
        || Ok(())
    }

    #[test]
    fn reads_only_the_tensors_asked_for_coalescing_neighbours() {
        // Four U8 tensors of 100 bytes each.
        let json = r#"{"a":{"dtype":"U8","shape":[100],"data_offsets":[0,100]},"b":{"dtype":"U8","shape":[100],"data_offsets":[100,200]},"c":{"dtype":"U8","shape":[100],"data_offsets":[200,300]},"d":{"dtype":"U8","shape":[100],"data_offsets":[300,400]}}"#;
        let data: Vec<u8> = (0..400).map(|i| (i % 251) as u8).collect();
        let src = Counting {
            bytes: file(json, &data),
            reads: RefCell::new(Vec::new()),
        };
        let header = read_header(&src).unwrap();
        let base = header.data_start();
        // Adjacent b and c come in one read; d and b apart in two; a never.
        for (which, want) in [
            (vec![1, 2], vec![(base + 100, 200)]),
            (vec![3, 1], vec![(base + 300, 100), (base + 100, 100)]),
        ] {
            src.reads.borrow_mut().clear();
            let mut outs: Vec<Vec<u8>> = which.iter().map(|_| vec![0u8; 100]).collect();
            let tasks: Vec<Task<'_>> = which
                .iter()
                .zip(outs.iter_mut())
                .map(|(&i, o)| {
                    Task::new(
                        &header.tensors[i],
                        base,
                        ReadInto::Bytes(SharedSlice::new(o)),
                    )
                    .unwrap()
                })
                .collect();
            read_tasks(&src, &tasks, 2, &mut never()).unwrap();
            drop(tasks);
            assert_eq!(*src.reads.borrow(), want);
            for (&i, o) in which.iter().zip(&outs) {
                let t = &header.tensors[i];
                assert_eq!(o[..], data[t.begin..t.end]);
            }
        }
    }

    #[test]
    fn memory_in_use_is_read_into_without_faulting_it_in_ahead() {
        // Over SMALL, so that a new destination gets populate jobs.
        let n = 3 << 20;
        let json = format!(r#"{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let bytes = file(&json, &data);
        let src = Memory(&bytes);
        let header = read_header(&src).unwrap();
        for fresh in [true, false] {
            let mut out = vec![0u8; n];
            let task = Task::new(
                &header.tensors[0],
                header.data_start(),
                ReadInto::Bytes(SharedSlice::new(&mut out)),
            )
            .unwrap();
            let tasks = [if fresh { task } else { task.in_use() }];
            let populates = plan_jobs(&tasks)
                .iter()
                .filter(|j| matches!(j, Job::Populate { .. }))
                .count();
            assert_eq!(populates > 0, fresh);
            read_tasks(&src, &tasks, 2, &mut never()).unwrap();
            drop(tasks);
            assert_eq!(out, data);
        }
    }

    #[test]
    fn fetched_pieces_read_what_whole_reads_read() {
        // U8 [10], F32 [40, 30], F4 [50, 3] (rows of 12 bits), F16 [3], an empty F32 [0, 4],
        // F64 [1, 1000] (one row of 8000 bytes after squeezing: 1000 rows).
        let specs: [(&str, &str, Vec<usize>, usize); 6] = [
            ("a", "U8", vec![10], 8),
            ("b", "F32", vec![40, 30], 32),
            ("c", "F4", vec![50, 3], 4),
            ("d", "F16", vec![3], 16),
            ("e", "F32", vec![0, 4], 32),
            ("f", "F64", vec![1, 1000], 64),
        ];
        let mut json = String::from("{");
        let mut at = 0;
        for (i, (name, dtype, shape, bits)) in specs.iter().enumerate() {
            let n = shape.iter().product::<usize>() * bits / 8;
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            json += &format!(
                "{}\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{at},{}]}}",
                if i > 0 { "," } else { "" },
                dims.join(","),
                at + n
            );
            at += n;
        }
        json.push('}');
        // Small byte values: every dtype decodes them to finite numbers.
        let data: Vec<u8> = (0..at).map(|i| (i % 61) as u8).collect();
        let bytes = file(&json, &data);
        let mem = Memory(&bytes);
        let header = read_header(&mem).unwrap();
        let base = header.data_start();
        let whole = |i: usize| -> Vec<f64> {
            let mut out = vec![0.0; header.tensors[i].numel()];
            let t = Task::new(
                &header.tensors[i],
                base,
                ReadInto::Values(SharedVector::Real(SharedSlice::new(&mut out))),
            )
            .unwrap();
            read_tasks(&mem, std::slice::from_ref(&t), 1, &mut never()).unwrap();
            out
        };
        let ints = |i: usize| -> Vec<f64> {
            let mut out = vec![0i32; header.tensors[i].numel()];
            let t = Task::new(
                &header.tensors[i],
                base,
                ReadInto::Values(SharedVector::Integer(SharedSlice::new(&mut out))),
            )
            .unwrap();
            read_tasks(&mem, std::slice::from_ref(&t), 1, &mut never()).unwrap();
            out.into_iter().map(f64::from).collect()
        };
        let want: Vec<Vec<f64>> = (0..specs.len())
            .map(|i| if i == 0 { ints(0) } else { whole(i) })
            .collect();
        for (which, max) in [
            (vec![0, 1, 2, 3, 4, 5], 256),
            (vec![3, 1], 1000),
            (vec![5, 0, 2], 100),
            (vec![1, 1, 3], 1 << 20),
        ] {
            let fetches = plan_fetches(&header.tensors, base, &which, max).unwrap();
            // Fetches are the contiguous runs; pieces cover them exactly.
            for f in &fetches {
                assert_eq!(f.pieces.iter().map(|p| p.len).sum::<usize>(), f.len);
                assert_eq!(f.pieces[0].off, f.off);
                for w in f.pieces.windows(2) {
                    assert_eq!(w[0].off + w[0].len, w[1].off);
                }
                assert!(f.pieces.iter().all(|p| p.len <= max || p.rows.is_some()));
            }
            let mut outs: Vec<Vec<f64>> = which
                .iter()
                .map(|&i| vec![f64::NAN; header.tensors[i].numel()])
                .collect();
            let mut int_out = vec![i32::MIN; 10];
            for f in &fetches {
                for p in &f.pieces {
                    let seg = Segments::new(
                        bytes.len() as u64,
                        vec![(p.off, &bytes[p.off..p.off + p.len])],
                    )
                    .unwrap();
                    let mut tasks = Vec::new();
                    for (k, &i) in which.iter().enumerate() {
                        if !p.tensors.contains(&i) {
                            continue;
                        }
                        let dest = if i == 0 {
                            // SAFETY: as below.
                            ReadInto::Values(SharedVector::Integer(unsafe {
                                SharedSlice::from_raw(int_out.as_mut_ptr(), int_out.len())
                            }))
                        } else {
                            let o = &mut outs[k];
                            // SAFETY: each output is written by one task per piece, and outlives it.
                            ReadInto::Values(SharedVector::Real(unsafe {
                                SharedSlice::from_raw(o.as_mut_ptr(), o.len())
                            }))
                        };
                        let t = Task::new(&header.tensors[i], base, dest).unwrap();
                        tasks.push(match p.rows {
                            Some((r0, r1)) => t.rows(r0, r1).unwrap(),
                            None => t,
                        });
                    }
                    read_tasks(&seg, &tasks, 2, &mut never()).unwrap();
                }
            }
            for (k, &i) in which.iter().enumerate() {
                let got: Vec<f64> = if i == 0 {
                    int_out.iter().map(|&v| f64::from(v)).collect()
                } else {
                    outs[k].clone()
                };
                assert_eq!(got, want[i], "tensor {i} of {which:?} in pieces of {max}");
            }
        }
        // Adjacent tensors make one fetch; a gap makes two; empty ones none.
        let f = plan_fetches(&header.tensors, base, &[2, 1, 4], 1 << 20).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].off, f[0].len), (base + 10, 4800 + 75));
        assert_eq!(
            plan_fetches(&header.tensors, base, &[0, 2], 1 << 20)
                .unwrap()
                .len(),
            2
        );
        assert!(plan_fetches(&header.tensors, base, &[4], 1 << 20)
            .unwrap()
            .is_empty());
        // F4 rows of 12 bits split on byte boundaries (even rows).
        let f = plan_fetches(&header.tensors, base, &[2], 10).unwrap();
        assert!(f[0].pieces.len() > 1);
        assert!(f[0]
            .pieces
            .iter()
            .all(|p| p.rows.is_some_and(|(r0, _)| r0 % 2 == 0)));
        // Rows that don't fit, or split a byte, are refused.
        let mut out = vec![0.0; 150];
        for (r0, r1, ok) in [
            (1, 4, false),
            (2, 51, false),
            (4, 2, false),
            (2, 4, true),
            (48, 50, true),
        ] {
            let t = Task::new(
                &header.tensors[2],
                base,
                ReadInto::Values(SharedVector::Real(SharedSlice::new(&mut out))),
            )
            .unwrap();
            assert_eq!(t.rows(r0, r1).is_ok(), ok, "rows {r0}..{r1}");
        }
    }

    #[test]
    fn destinations_that_do_not_fit_are_refused_before_any_read() {
        let json = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
        let bytes = file(json, &[0u8; 24]);
        let header = read_header(&Memory(&bytes)).unwrap();
        let t = &header.tensors[0];
        let base = header.data_start();
        let mut short = vec![0u8; 23];
        assert_eq!(
            Task::new(t, base, ReadInto::Bytes(SharedSlice::new(&mut short)))
                .err()
                .unwrap()
                .kind,
            Kind::InvalidArgument
        );
        let mut five = vec![0.0f64; 5];
        assert!(Task::new(
            t,
            base,
            ReadInto::Values(SharedVector::Real(SharedSlice::new(&mut five)))
        )
        .is_err());
        // F32 is never read into an R integer or logical vector.
        let mut ints = vec![0i32; 6];
        assert!(Task::new(
            t,
            base,
            ReadInto::Values(SharedVector::Integer(SharedSlice::new(&mut ints)))
        )
        .is_err());
        let mut ok = vec![0.0f64; 6];
        assert!(Task::new(
            t,
            base,
            ReadInto::Values(SharedVector::Real(SharedSlice::new(&mut ok)))
        )
        .is_ok());
    }

    #[test]
    fn a_failing_poll_stops_the_read() {
        let n = 3 << 20;
        let json = format!(r#"{{"x":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
        let bytes = file(&json, &vec![1u8; n]);
        let src = Memory(&bytes);
        let header = read_header(&src).unwrap();
        let mut out = vec![0.0f64; n];
        let task = Task::new(
            &header.tensors[0],
            header.data_start(),
            ReadInto::Values(SharedVector::Real(SharedSlice::new(&mut out))),
        )
        .unwrap();
        let mut polls = 0;
        let mut poll = || {
            polls += 1;
            Err(Error::new(Kind::Interrupted, "stop"))
        };
        for threads in [1, 2] {
            let e = read_tasks(&src, std::slice::from_ref(&task), threads, &mut poll).unwrap_err();
            assert_eq!(e.kind, Kind::Interrupted);
        }
        assert!(polls >= 2);
    }

    #[test]
    fn pieces_of_a_tensor_are_copied_as_stored() {
        let data: Vec<u8> = (0..=255u8).collect();
        let bytes = file(
            r#"{"b":{"dtype":"U8","shape":[256],"data_offsets":[0,256]}}"#,
            &data,
        );
        let src = Memory(&bytes);
        let header = read_header(&src).unwrap();
        let mut piece = vec![0u8; 56];
        let task = Task::bytes(header.data_start() + 200, SharedSlice::new(&mut piece));
        read_tasks(&src, std::slice::from_ref(&task), 1, &mut never()).unwrap();
        assert_eq!(piece[..], data[200..]);
    }

    #[test]
    fn slices_decode_into_values_or_bytes() {
        // I16 [3, 4] holding 0..12; rows 2..3, columns 2 and 4 (1-based).
        let data: Vec<u8> = (0..12i16).flat_map(|v| v.to_le_bytes()).collect();
        let bytes = file(
            r#"{"m":{"dtype":"I16","shape":[3,4],"data_offsets":[0,24]}}"#,
            &data,
        );
        let src = Memory(&bytes);
        let header = read_header(&src).unwrap();
        let t = &header.tensors[0];
        let sels = || {
            vec![
                Sel::Range {
                    start: 1,
                    count: 2,
                    step: 1,
                },
                Sel::List(vec![1, 3]),
            ]
        };
        let plan = Plan::new(&t.shape, sels(), "m").unwrap();
        let mut vals = vec![0i32; 4];
        read_slice(
            &src,
            t,
            header.data_start(),
            &plan,
            ReadInto::Values(SharedVector::Integer(SharedSlice::new(&mut vals))),
            &mut never(),
        )
        .unwrap();
        // Column-major [[5, 7], [9, 11]].
        assert_eq!(vals, vec![5, 9, 7, 11]);
        let mut raw = vec![0u8; 8];
        read_slice(
            &src,
            t,
            header.data_start(),
            &plan,
            ReadInto::Bytes(SharedSlice::new(&mut raw)),
            &mut never(),
        )
        .unwrap();
        let back: Vec<i16> = raw
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(back, vec![5, 7, 9, 11]);
        let mut wrong = vec![0.0f64; 3];
        let e = read_slice(
            &src,
            t,
            header.data_start(),
            &plan,
            ReadInto::Values(SharedVector::Real(SharedSlice::new(&mut wrong))),
            &mut never(),
        );
        assert_eq!(e.unwrap_err().kind, Kind::InvalidArgument);
    }
}
