//! Reading tensors into R vectors: each vector is allocated once and filled
//! straight from the mapped, buffered or read bytes, large reads split
//! between threads.
//!
//! A read is planned as tasks (one per tensor: where its bytes are and the
//! R vector receiving them) and jobs (a block of rows of a large tensor, or
//! a span of adjacent small tensors read with one call). Jobs write
//! disjoint parts of the vectors, so threads can run them in any order; only
//! the main thread touches R (allocation before, interrupt checks between
//! its jobs, attributes after).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use extendr_api::prelude::*;
use extendr_ffi::{
    R_DimSymbol, R_NamesSymbol, Rf_protect, Rf_setAttrib, Rf_unprotect, DATAPTR, SET_STRING_ELT, SET_VECTOR_ELT, SEXP,
    SEXPTYPE, VECTOR_ELT,
};

use crate::convert::{self, decode_rows, n_rows, r_type, row_len, DecodeStats, Dst, Out, RType, Target};
use crate::dtype::Dtype;
use crate::error::{Error, Kind, Result};
use crate::format::{Header, TensorInfo};
use crate::io::{self, Backend, FileSource, Memory, Source};
use crate::robj::{
    self, build, check_r_string, data_mut, r_char, r_reals, r_set_attr, r_shape, r_strings, r_sym, r_vec, to_r,
};

/// Bytes of source per job: a block of rows of a large tensor, or a span of
/// small adjacent tensors.
const JOB: usize = 2 << 20;
/// Tensors up to this size are read in spans with their neighbours.
const SMALL: usize = 1 << 20;
/// Reads smaller than this in total stay on one thread.
const PARALLEL_MIN: usize = 4 << 20;
/// Size of a [`Reader`]'s window for single small tensors.
#[allow(dead_code)]
const WINDOW: usize = 8 << 20;

/// What each tensor becomes in R.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// An R vector of the dtype's natural type with `dim` and `dtype`.
    Array,
    /// The tensor's bytes as stored, with `dtype` and `shape` attributes.
    Raw,
}

impl Mode {
    /// Parses a mode name.
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "array" => Ok(Mode::Array),
            "raw" => Ok(Mode::Raw),
            _ => Err(Error::new(Kind::InvalidArgument, format!("unknown read mode `{s}`"))),
        }
    }
}

/// Parses a backend name.
pub fn parse_backend(s: &str) -> Result<Backend> {
    match s {
        "read" => Ok(Backend::Read),
        "mmap" => Ok(Backend::Mmap),
        _ => Err(Error::new(Kind::InvalidArgument, format!("unknown backend `{s}`"))),
    }
}

/// The default number of threads: the available cores, at most 2.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(2)
}

/// A thread count from R: 0 (or less) means [`default_threads`].
pub fn threads_from_r(n: i32) -> usize {
    if n <= 0 {
        default_threads()
    } else {
        n as usize
    }
}

/// Reads tensors through a source, keeping a window of small tensors.
// `Reader`, `read_tensor`, `fill`, `read_all` and `header_robj` also serve
// the tensor handles of safe_open().
#[allow(dead_code)]
pub struct Reader<'a> {
    pub(crate) src: &'a dyn Source,
    window: Vec<u8>,
    window_start: usize,
    /// Absolute byte spans the window may cover (sorted, disjoint), so that
    /// reading some tensors never reads the bytes of others; empty means the
    /// whole source.
    spans: Vec<(usize, usize)>,
    threads: usize,
}

#[allow(dead_code)]
impl<'a> Reader<'a> {
    /// A reader over `src` whose window may cover any of its bytes, using
    /// [`default_threads`] threads.
    pub fn new(src: &'a dyn Source) -> Reader<'a> {
        Reader { src, window: Vec::new(), window_start: 0, spans: Vec::new(), threads: default_threads() }
    }

    /// A reader over `src` for the tensors at `which` only: its window
    /// never extends past the bytes of those tensors.
    pub fn for_tensors(src: &'a dyn Source, header: &Header, which: &[usize]) -> Reader<'a> {
        let base = header.data_start();
        let mut spans: Vec<(usize, usize)> =
            which.iter().map(|&i| (base + header.tensors[i].begin, base + header.tensors[i].end)).collect();
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (b, e) in spans {
            match merged.last_mut() {
                Some(last) if b <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((b, e)),
            }
        }
        Reader { src, window: Vec::new(), window_start: 0, spans: merged, threads: default_threads() }
    }

    /// The same reader splitting large tensors between `threads` threads
    /// (1: no threads).
    pub fn with_threads(mut self, threads: usize) -> Reader<'a> {
        self.threads = threads.max(1);
        self
    }

    /// End of the span holding `off`, or of the source.
    fn span_end(&self, off: usize) -> usize {
        let total = self.src.len() as usize;
        if self.spans.is_empty() {
            return total;
        }
        let i = self.spans.partition_point(|s| s.1 <= off);
        match self.spans.get(i) {
            Some(&(b, e)) if b <= off => e.min(total),
            _ => total,
        }
    }

    /// Bytes `[off, off + n)` from the source's memory or the window, or
    /// `None` for a large tensor that should be streamed.
    fn small_or_view(&mut self, off: usize, n: usize) -> Result<Option<&[u8]>> {
        if self.src.view(off, n)?.is_some() {
            return self.src.view(off, n);
        }
        if n > SMALL {
            return Ok(None);
        }
        let end = off + n;
        let inside = off >= self.window_start && end <= self.window_start + self.window.len();
        if !inside {
            let len = WINDOW.max(n).min(self.span_end(off).saturating_sub(off));
            if len < n {
                return Err(Error::new(
                    Kind::FileChanged,
                    "the file ended early; it was truncated after it was opened",
                ));
            }
            self.window.resize(len, 0);
            self.src.read_at(off, &mut self.window)?;
            self.window_start = off;
        }
        let start = off - self.window_start;
        Ok(Some(&self.window[start..start + n]))
    }
}

/// Outer rows per job so one job reads about `JOB` bytes (see
/// [`convert::block_rows`]).
fn rows_per_job(t: &Task<'_>) -> usize {
    let row_bits = row_len(&t.shape).saturating_mul(t.info.dtype.bits()).max(1);
    convert::block_rows(JOB * 8 / row_bits, t.info.dtype)
}

/// Byte offset of outer row `r` (of its kernel shape) within a tensor.
fn row_offset(t: &Task<'_>, r: usize) -> usize {
    r * row_len(&t.shape) * t.info.dtype.bits() / 8
}

/// How one tensor's bytes reach its R vector.
#[derive(Clone, Copy)]
enum Dest<'a> {
    /// Copied as they are: raw mode, or F64 and I32 read into double and
    /// integer when the layout needs no permutation.
    Bytes(Out<'a, u8>),
    /// Converted (and permuted) by the kernels.
    Values(Target<'a>),
}

impl Dest<'_> {
    /// The vector's data address and size in bytes.
    fn memory(&self) -> (*mut u8, usize) {
        match self {
            Dest::Bytes(o) => o.memory(),
            Dest::Values(t) => t.memory(),
        }
    }
}

/// Bytes of a vector faulted in per job.
const POPULATE: usize = 16 << 20;
/// Vectors smaller than this are left to fault in as they are written.
const POPULATE_MIN: usize = 256 << 10;

/// Asks the kernel to fault in the pages of `[ptr, ptr + len)` (the whole
/// pages inside it) for writing, in one call: a new R vector's memory is
/// untouched, and taking its page faults one at a time as the data is
/// written costs about half again as much on Linux (more in a VM). The
/// contents don't change. Needs Linux 5.14; elsewhere, or if refused, the
/// pages fault in as usual.
fn populate(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize).saturating_add(len) / PAGE * PAGE;
        if end > start {
            // SAFETY: whole pages inside memory this process owns (an R
            // vector's data); MADV_POPULATE_WRITE only faults them in,
            // keeping their contents, and its failure is harmless.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_POPULATE_WRITE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// One tensor to read.
struct Task<'a> {
    info: &'a TensorInfo,
    /// Its shape as the kernels see it ([`convert::kernel_shape`]).
    shape: Vec<usize>,
    /// Absolute offset of its bytes in the source.
    off: usize,
    dest: Dest<'a>,
    /// Count I32 values equal to `NA_integer_` (copied I32).
    count_int_min: bool,
}

/// A unit of work for one thread.
enum Job {
    /// Fault in bytes `[b0, b1)` of task `task`'s vector (see [`populate`]).
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
}

impl Notes {
    fn add(&self, s: DecodeStats) {
        if s.inexact > 0 {
            self.inexact.fetch_add(s.inexact, Ordering::Relaxed);
        }
        if s.int_min > 0 {
            self.int_min.fetch_add(s.int_min, Ordering::Relaxed);
        }
    }

    fn get(&self) -> DecodeStats {
        DecodeStats { inexact: self.inexact.load(Ordering::Relaxed), int_min: self.int_min.load(Ordering::Relaxed) }
    }
}

fn plan_jobs(tasks: &[Task<'_>]) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut k = 0;
    while k < tasks.len() {
        let t = &tasks[k];
        let n = t.info.nbytes();
        if n <= SMALL {
            let first = k;
            let mut end = t.off + n;
            k += 1;
            while k < tasks.len() {
                let u = &tasks[k];
                let m = u.info.nbytes();
                if m > SMALL || u.off != end || end + m - tasks[first].off > JOB {
                    break;
                }
                end += m;
                k += 1;
            }
            jobs.push(Job::Span { first, last: k });
        } else {
            let (_, size) = t.dest.memory();
            let mut b0 = 0;
            while b0 < size {
                let b1 = (b0 + POPULATE).min(size);
                jobs.push(Job::Populate { task: k, b0, b1 });
                b0 = b1;
            }
            let rows = n_rows(&t.shape);
            let per = rows_per_job(t);
            let mut r0 = 0;
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
fn bytes_at<'b>(src: &'b dyn Source, off: usize, n: usize, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
    if let Some(v) = src.view_whole(off, n)? {
        return Ok(v);
    }
    buf.resize(n, 0);
    src.read_at(off, &mut buf[..n])?;
    Ok(&buf[..n])
}

/// Fills all of task `t` from `bytes`, its whole data.
fn fill_whole(t: &Task<'_>, bytes: &[u8], notes: &Notes) {
    let (ptr, size) = t.dest.memory();
    if size >= POPULATE_MIN {
        populate(ptr, size);
    }
    match t.dest {
        Dest::Bytes(out) => {
            // SAFETY: this job owns the whole vector; `bytes` has its size.
            let dst = unsafe { out.part(0, out.len().min(bytes.len())) };
            dst.copy_from_slice(&bytes[..dst.len()]);
            if t.count_int_min {
                notes.add(DecodeStats { inexact: 0, int_min: convert::count_i32_min(dst) });
            }
        }
        Dest::Values(target) => {
            let rows = n_rows(&t.shape);
            // SAFETY: this job owns all rows of the tensor.
            notes.add(unsafe { decode_rows(t.info.dtype, bytes, &t.shape, 0, rows, target) });
        }
    }
}

fn run_job(job: &Job, tasks: &[Task<'_>], src: &dyn Source, buf: &mut Vec<u8>, notes: &[Notes]) -> Result<()> {
    match *job {
        Job::Populate { task, b0, b1 } => {
            let (ptr, size) = tasks[task].dest.memory();
            if b1 <= size {
                // SAFETY: [b0, b1) lies inside the task's vector.
                populate(unsafe { ptr.add(b0) }, b1 - b0);
            }
        }
        Job::Rows { task, r0, r1 } => {
            let t = &tasks[task];
            let (b0, b1) = (row_offset(t, r0), row_offset(t, r1));
            match t.dest {
                Dest::Bytes(out) => {
                    // SAFETY: bytes [b0, b1) of the vector are rows [r0, r1),
                    // which only this job writes.
                    let dst = unsafe { out.part(b0, b1 - b0) };
                    match src.view_whole(t.off + b0, b1 - b0)? {
                        Some(v) => {
                            dst.copy_from_slice(v);
                            src.done_with(t.off + b0, b1 - b0);
                        }
                        None => src.read_at(t.off + b0, dst)?,
                    }
                    if t.count_int_min {
                        notes[task].add(DecodeStats { inexact: 0, int_min: convert::count_i32_min(dst) });
                    }
                }
                Dest::Values(target) => {
                    let bytes = bytes_at(src, t.off + b0, b1 - b0, buf)?;
                    // SAFETY: rows [r0, r1) are only this job's.
                    notes[task].add(unsafe { decode_rows(t.info.dtype, bytes, &t.shape, r0, r1, target) });
                    src.done_with(t.off + b0, b1 - b0);
                }
            }
        }
        Job::Span { first, last } => {
            let start = tasks[first].off;
            let end = tasks[last - 1].off + tasks[last - 1].info.nbytes();
            let bytes = bytes_at(src, start, end - start, buf)?;
            for (t, n) in tasks[first..last].iter().zip(&notes[first..last]) {
                let at = t.off - start;
                fill_whole(t, &bytes[at..at + t.info.nbytes()], n);
            }
            src.done_with(start, end - start);
        }
    }
    Ok(())
}

/// Runs the jobs of `tasks`, on up to `threads` threads when the source
/// allows it and the read is large enough. Returns each task's notes.
fn fill_tasks(src: &dyn Source, tasks: &[Task<'_>], threads: usize) -> Result<Vec<DecodeStats>> {
    let jobs = plan_jobs(tasks);
    let notes: Vec<Notes> = tasks.iter().map(|_| Notes::default()).collect();
    let total: usize = tasks.iter().map(|t| t.info.nbytes()).sum();
    let threads = if total < PARALLEL_MIN { 1 } else { threads.min(jobs.len()) };
    match src.as_sync() {
        Some(shared) if threads > 1 => run_parallel(shared, tasks, &jobs, &notes, threads)?,
        _ => {
            let mut buf = Vec::new();
            for (j, job) in jobs.iter().enumerate() {
                run_job(job, tasks, src, &mut buf, &notes)?;
                if j + 1 < jobs.len() {
                    robj::check_interrupt_now()?;
                }
            }
        }
    }
    Ok(notes.iter().map(Notes::get).collect())
}

fn run_parallel(
    src: &(dyn Source + Sync),
    tasks: &[Task<'_>],
    jobs: &[Job],
    notes: &[Notes],
    threads: usize,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // The failure of the earliest job, so the error doesn't depend on timing
    // (an interrupt counts as job `usize::MAX`).
    let failure: Mutex<Option<(usize, Error)>> = Mutex::new(None);
    let fail = |j: usize, e: Error| {
        let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.as_ref().map_or(true, |(k, _)| j < *k) {
            *f = Some((j, e));
        }
        stop.store(true, Ordering::Relaxed);
    };
    let work = |main: bool| {
        let mut buf = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let j = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(j) else { break };
            if let Err(e) = run_job(job, tasks, src, &mut buf, notes) {
                fail(j, e);
                break;
            }
            // Only the main thread may call R.
            if main {
                if let Err(e) = robj::check_interrupt_now() {
                    fail(usize::MAX, e);
                    break;
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| work(false));
        }
        work(true);
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

fn sexptype(rt: RType) -> SEXPTYPE {
    match rt {
        RType::Real => SEXPTYPE::REALSXP,
        RType::Integer => SEXPTYPE::INTSXP,
        RType::Logical => SEXPTYPE::LGLSXP,
        RType::Complex => SEXPTYPE::CPLXSXP,
    }
}

/// What R object one tensor becomes.
#[derive(Clone, Copy)]
struct Spec {
    ty: SEXPTYPE,
    len: usize,
    /// Copy the bytes as they are (see [`Dest::Bytes`]).
    copy: bool,
}

fn spec_of(info: &TensorInfo, mode: Mode) -> Result<Spec> {
    match mode {
        Mode::Raw => Ok(Spec { ty: SEXPTYPE::RAWSXP, len: info.nbytes(), copy: true }),
        Mode::Array => {
            for &d in &info.shape {
                if d > i32::MAX as usize {
                    return Err(Error::tensor(
                        Kind::Unsupported,
                        &info.name,
                        format!(
                            "tensor `{}` has dimension {d}, larger than .Machine$integer.max, the largest R `dim`; \
                             read it with `framework = \"raw\"`",
                            info.name
                        ),
                    ));
                }
            }
            let rt = r_type(info.dtype);
            let copy = convert::is_trivial_layout(&info.shape)
                && matches!((info.dtype, rt), (Dtype::F64, RType::Real) | (Dtype::I32, RType::Integer));
            Ok(Spec { ty: sexptype(rt), len: info.numel(), copy })
        }
    }
}

/// R objects shared by the attributes of many tensors, built once per call:
/// symbols and one `"dtype"` string per dtype.
struct Shared {
    dtype_sym: SEXP,
    shape_sym: SEXP,
    dtypes: [SEXP; 22],
    /// How many of `dtypes` are protected.
    protected: i32,
}

impl Shared {
    /// # Safety
    /// Only inside [`build`]; call [`Shared::release`] before returning.
    unsafe fn new() -> Shared {
        // SAFETY: symbols are never collected.
        unsafe {
            Shared {
                dtype_sym: r_sym("dtype"),
                shape_sym: r_sym("shape"),
                dtypes: [std::ptr::null_mut(); 22],
                protected: 0,
            }
        }
    }

    /// The `"dtype"` attribute value for `d`, protected until `release`.
    unsafe fn dtype(&mut self, d: Dtype) -> SEXP {
        let slot = &mut self.dtypes[d as usize];
        if slot.is_null() {
            // SAFETY: inside build; protected until release.
            unsafe {
                *slot = Rf_protect(r_strings([d.name()].into_iter()));
            }
            self.protected += 1;
        }
        *slot
    }

    unsafe fn release(&self) {
        unsafe { Rf_unprotect(self.protected) };
    }
}

/// Sets the attributes of a tensor's R object: `dim` (or `shape =
/// integer(0)` for a scalar) and `dtype` for arrays, `dtype` and `shape`
/// for raw bytes.
///
/// # Safety
/// Inside [`build`], with `x` protected and its length matching the shape.
unsafe fn set_tensor_attrs(x: SEXP, info: &TensorInfo, mode: Mode, shared: &mut Shared) {
    unsafe {
        match mode {
            Mode::Array => {
                if info.shape.is_empty() {
                    r_set_attr(x, shared.shape_sym, r_vec(SEXPTYPE::INTSXP, 0));
                } else {
                    // Dimensions were checked to fit in an int (spec_of).
                    r_set_attr(x, R_DimSymbol, r_shape(&info.shape));
                }
            }
            Mode::Raw => r_set_attr(x, shared.shape_sym, r_shape(&info.shape)),
        }
        let d = shared.dtype(info.dtype);
        Rf_setAttrib(x, shared.dtype_sym, d);
    }
}

/// Allocates the R objects of tensors `which` into a new list, with their
/// attributes, and describes how to fill each.
fn allocate<'h>(header: &'h Header, which: &[usize], mode: Mode) -> Result<(Robj, Vec<(Spec, &'h TensorInfo)>)> {
    let mut specs = Vec::with_capacity(which.len());
    let mut total = 0usize;
    let mut largest = 0usize;
    for &i in which {
        let info = &header.tensors[i];
        let spec = spec_of(info, mode)?;
        let bytes = robj::vec_bytes(spec.ty, spec.len)?;
        total = total.saturating_add(bytes);
        largest = largest.max(bytes);
        specs.push((spec, info));
    }
    robj::check_available(total)?;
    // One large vector costs one collection either way; several add more.
    robj::reserve_vector_heap(total - largest, total);
    let list = build(|| {
        // SAFETY: inside build; `list` is protected while its elements are
        // allocated, and each element is reachable from it once stored.
        unsafe {
            let list = Rf_protect(r_vec(SEXPTYPE::VECSXP, specs.len()));
            let mut shared = Shared::new();
            for (k, (spec, info)) in specs.iter().enumerate() {
                let x = r_vec(spec.ty, spec.len);
                SET_VECTOR_ELT(list, k as isize, x);
                set_tensor_attrs(x, info, mode, &mut shared);
            }
            shared.release();
            Rf_unprotect(1);
            list
        }
    })?;
    Ok((list, specs))
}

/// The tasks filling the elements of `list` as `specs` describe them.
///
/// # Safety
/// `list` holds vectors allocated as `specs` says, and nothing else touches
/// their data while the tasks live.
unsafe fn tasks_for<'a>(list: &'a Robj, specs: &[(Spec, &'a TensorInfo)], data_start: usize) -> Vec<Task<'a>> {
    specs
        .iter()
        .enumerate()
        .map(|(k, (spec, info))| {
            // SAFETY: element k exists and has the spec's type and length.
            let (ptr, len) = unsafe {
                let x = VECTOR_ELT(list.get(), k as isize);
                (DATAPTR(x), spec.len)
            };
            // SAFETY: the vector's data, of the spec's type and length.
            let dest = unsafe {
                if spec.copy {
                    Dest::Bytes(Out::from_raw(ptr as *mut u8, info.nbytes()))
                } else {
                    Dest::Values(match spec.ty {
                        SEXPTYPE::INTSXP => Target::Integer(Out::from_raw(ptr as *mut i32, len)),
                        SEXPTYPE::LGLSXP => Target::Logical(Out::from_raw(ptr as *mut i32, len)),
                        SEXPTYPE::CPLXSXP => Target::Complex(Out::from_raw(ptr as *mut [f64; 2], len)),
                        _ => Target::Real(Out::from_raw(ptr as *mut f64, len)),
                    })
                }
            };
            Task {
                info,
                shape: convert::kernel_shape(&info.shape),
                off: data_start + info.begin,
                dest,
                count_int_min: spec.copy && info.dtype == Dtype::I32 && spec.ty == SEXPTYPE::INTSXP,
            }
        })
        .collect()
}

/// The data of `x`, allocated as `rt`, as a decode destination.
pub(crate) fn dst_of(x: &mut Robj, rt: RType) -> Dst<'_> {
    // SAFETY: each arm matches the type the vector was allocated with.
    unsafe {
        match rt {
            RType::Real => Dst::Real(data_mut::<f64>(x)),
            RType::Integer => Dst::Integer(data_mut::<i32>(x)),
            RType::Logical => Dst::Logical(data_mut::<i32>(x)),
            RType::Complex => Dst::Complex(data_mut::<[f64; 2]>(x)),
        }
    }
}

/// The counts of `a` and `b` added.
pub(crate) fn merge(a: DecodeStats, b: DecodeStats) -> DecodeStats {
    a.merge(b)
}

/// Replaces each I32 tensor read as integer that holds `NA_integer_`'s
/// bit pattern by a double copy, which keeps the value.
fn fix_int_min(list: &Robj, specs: &[(Spec, &TensorInfo)], mode: Mode, stats: &[DecodeStats]) -> Result<()> {
    if !stats.iter().any(|s| s.int_min > 0) {
        return Ok(());
    }
    build(|| {
        // SAFETY: inside build; each new vector is stored in the protected
        // list right after allocation; the old one is read before that.
        unsafe {
            let mut shared = Shared::new();
            for (k, ((spec, info), st)) in specs.iter().zip(stats).enumerate() {
                if st.int_min == 0 || spec.ty != SEXPTYPE::INTSXP {
                    continue;
                }
                let x = Rf_protect(VECTOR_ELT(list.get(), k as isize));
                let y = Rf_protect(r_vec(SEXPTYPE::REALSXP, spec.len));
                let (src, dst) = (DATAPTR(x) as *const i32, DATAPTR(y) as *mut f64);
                for i in 0..spec.len {
                    *dst.add(i) = *src.add(i) as f64;
                }
                set_tensor_attrs(y, info, mode, &mut shared);
                SET_VECTOR_ELT(list.get(), k as isize, y);
                Rf_unprotect(2);
            }
            shared.release();
            list.get()
        }
    })?;
    Ok(())
}

/// Fills `x` (allocated as `rt`) with the tensor at absolute offset `off`.
#[allow(dead_code)]
pub(crate) fn fill(
    reader: &mut Reader<'_>,
    info: &TensorInfo,
    off: usize,
    x: &mut Robj,
    rt: RType,
) -> Result<DecodeStats> {
    let n = info.numel();
    // SAFETY: x was allocated as rt with the tensor's element count; the
    // task is the only writer while it lives.
    let dest = unsafe {
        let ptr = DATAPTR(x.get_mut());
        Dest::Values(match rt {
            RType::Real => Target::Real(Out::from_raw(ptr as *mut f64, n)),
            RType::Integer => Target::Integer(Out::from_raw(ptr as *mut i32, n)),
            RType::Logical => Target::Logical(Out::from_raw(ptr as *mut i32, n)),
            RType::Complex => Target::Complex(Out::from_raw(ptr as *mut [f64; 2], n)),
        })
    };
    let task = Task { info, shape: convert::kernel_shape(&info.shape), off, dest, count_int_min: false };
    if let Some(bytes) = reader.small_or_view(off, info.nbytes())? {
        let notes = Notes::default();
        fill_whole(&task, bytes, &notes);
        return Ok(notes.get());
    }
    let stats = fill_tasks(reader.src, std::slice::from_ref(&task), reader.threads)?;
    Ok(stats.first().copied().unwrap_or_default())
}

/// Reads one tensor into a new R object.
#[allow(dead_code)]
pub fn read_tensor(reader: &mut Reader<'_>, header: &Header, i: usize, mode: Mode) -> Result<(Robj, DecodeStats)> {
    let (list, specs) = allocate(header, &[i], mode)?;
    let info = &header.tensors[i];
    let off = header.data_start() + info.begin;
    let stats = {
        // SAFETY: `list` holds the vector `specs` describes; nothing else
        // touches it until the tasks are dropped.
        let tasks = unsafe { tasks_for(&list, &specs, header.data_start()) };
        match reader.small_or_view(off, info.nbytes())? {
            Some(bytes) => {
                let notes = Notes::default();
                if let Some(t) = tasks.first() {
                    fill_whole(t, bytes, &notes);
                }
                vec![notes.get()]
            }
            None => fill_tasks(reader.src, &tasks, reader.threads)?,
        }
    };
    fix_int_min(&list, &specs, mode, &stats)?;
    // SAFETY: element 0 exists; from_sexp protects it beyond the list.
    let x = unsafe { Robj::from_sexp(VECTOR_ELT(list.get(), 0)) };
    Ok((x, stats.first().copied().unwrap_or_default()))
}

/// Resolves requested tensor names (an R character vector or NULL for all)
/// to positions in the header, in the order asked.
pub(crate) fn select(header: &Header, names: &Robj) -> Result<Vec<usize>> {
    if names.is_null() {
        return Ok((0..header.tensors.len()).collect());
    }
    let Some(wanted) = names.as_str_iter() else {
        return Err(Error::new(Kind::InvalidArgument, "`tensors` must be a character vector"));
    };
    let index: std::collections::HashMap<&str, usize> =
        header.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    wanted
        .map(|name| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| Error::tensor(Kind::TensorNotFound, name, format!("tensor `{name}` is not in the file")))
        })
        .collect()
}

/// Checks that every name and metadata string can become an R string.
pub(crate) fn check_strings(header: &Header) -> Result<()> {
    for t in &header.tensors {
        check_r_string(&t.name, "tensor name")?;
    }
    for (k, v) in header.metadata.iter().flatten() {
        check_r_string(k, "metadata key")?;
        check_r_string(v, "metadata value")?;
    }
    Ok(())
}

/// The parsed header as CRAN 0.2.x exposed it in the `"metadata"`
/// attribute: a named list in header order, one `list(dtype, shape,
/// data_offsets)` per tensor, and `__metadata__` as a named list of strings.
/// (R `NULL` if R runs out of memory building it.)
#[allow(dead_code)]
pub fn header_robj(header: &Header) -> Robj {
    // SAFETY: header_sexp's contract is build's.
    build(|| unsafe { header_sexp(header) }).unwrap_or_else(|_| ().into())
}

/// [`header_robj`] with the raw API.
///
/// # Safety
/// Only inside [`build`]; the result is unprotected.
unsafe fn header_sexp(header: &Header) -> SEXP {
    unsafe {
        let n = header.tensors.len() + header.metadata_position.is_some() as usize;
        let list = Rf_protect(r_vec(SEXPTYPE::VECSXP, n));
        let names = Rf_protect(r_vec(SEXPTYPE::STRSXP, n));
        // Shared by every entry: R copies them before any change.
        let entry_names = Rf_protect(r_strings(["dtype", "shape", "data_offsets"].into_iter()));
        // jsonlite turned an empty shape into list(); keep that for 0.2.x code.
        let empty_shape = Rf_protect(r_vec(SEXPTYPE::VECSXP, 0));
        let mut shared = Shared::new();
        let mut pos = 0isize;
        let put_metadata = |pos: &mut isize| {
            SET_STRING_ELT(names, *pos, r_char("__metadata__"));
            let value = match &header.metadata {
                None => extendr_ffi::R_NilValue,
                Some(m) => {
                    let v = Rf_protect(r_vec(SEXPTYPE::VECSXP, m.len()));
                    for (i, (_, x)) in m.iter().enumerate() {
                        SET_VECTOR_ELT(v, i as isize, r_strings([x.as_str()].into_iter()));
                    }
                    r_set_attr(v, R_NamesSymbol, r_strings(m.iter().map(|(k, _)| k.as_str())));
                    Rf_unprotect(1);
                    v
                }
            };
            SET_VECTOR_ELT(list, *pos, value);
            *pos += 1;
        };
        for (json_pos, &file_pos) in header.json_order.iter().enumerate() {
            if header.metadata_position == Some(json_pos) {
                put_metadata(&mut pos);
            }
            let t = &header.tensors[file_pos];
            let entry = r_vec(SEXPTYPE::VECSXP, 3);
            SET_VECTOR_ELT(list, pos, entry);
            SET_STRING_ELT(names, pos, r_char(&t.name));
            pos += 1;
            SET_VECTOR_ELT(entry, 0, shared.dtype(t.dtype));
            SET_VECTOR_ELT(entry, 1, if t.shape.is_empty() { empty_shape } else { r_shape(&t.shape) });
            let offsets = if t.end <= i32::MAX as usize {
                robj::r_ints(&[t.begin as i32, t.end as i32])
            } else {
                r_reals(&[t.begin as f64, t.end as f64])
            };
            SET_VECTOR_ELT(entry, 2, offsets);
            Rf_setAttrib(entry, R_NamesSymbol, entry_names);
        }
        if header.metadata_position == Some(header.tensors.len()) {
            put_metadata(&mut pos);
        }
        Rf_setAttrib(list, R_NamesSymbol, names);
        shared.release();
        Rf_unprotect(4);
        list
    }
}

/// A named list (raw API); `values` run in order, each result stored at
/// once.
///
/// # Safety
/// Only inside [`build`]; the result is unprotected; each value function
/// returns an unprotected fresh object or a reachable one.
unsafe fn named_list_sexp(names: &[&str], values: &mut [&mut dyn FnMut() -> SEXP]) -> SEXP {
    unsafe {
        let list = Rf_protect(r_vec(SEXPTYPE::VECSXP, values.len()));
        for (i, f) in values.iter_mut().enumerate() {
            SET_VECTOR_ELT(list, i as isize, f());
        }
        r_set_attr(list, R_NamesSymbol, r_strings(names.iter().copied()));
        Rf_unprotect(1);
        list
    }
}

/// Header facts for `safe_info()` and handles, one element per tensor in
/// file order.
pub fn info_robj(header: &Header, file_len: u64) -> Robj {
    let ts = &header.tensors;
    let numel: Vec<f64> = ts.iter().map(|t| t.numel() as f64).collect();
    let begin: Vec<f64> = ts.iter().map(|t| t.begin as f64).collect();
    let end: Vec<f64> = ts.iter().map(|t| t.end as f64).collect();
    // SAFETY: inside build; every value is stored as soon as it is made.
    build(|| unsafe {
        named_list_sexp(
            &["name", "dtype", "shape", "numel", "begin", "end", "metadata", "header_len", "file_len", "header"],
            &mut [
                &mut || r_strings(ts.iter().map(|t| t.name.as_str())),
                &mut || r_strings(ts.iter().map(|t| t.dtype.name())),
                &mut || {
                    let v = Rf_protect(r_vec(SEXPTYPE::VECSXP, ts.len()));
                    for (i, t) in ts.iter().enumerate() {
                        SET_VECTOR_ELT(v, i as isize, r_shape(&t.shape));
                    }
                    Rf_unprotect(1);
                    v
                },
                &mut || r_reals(&numel),
                &mut || r_reals(&begin),
                &mut || r_reals(&end),
                &mut || match &header.metadata {
                    None => extendr_ffi::R_NilValue,
                    Some(m) => {
                        let v = Rf_protect(r_strings(m.iter().map(|(_, v)| v.as_str())));
                        r_set_attr(v, R_NamesSymbol, r_strings(m.iter().map(|(k, _)| k.as_str())));
                        Rf_unprotect(1);
                        v
                    }
                },
                &mut || r_reals(&[header.header_len as f64]),
                &mut || r_reals(&[file_len as f64]),
                &mut || header_sexp(header),
            ],
        )
    })
    .unwrap_or_else(|_| ().into())
}

/// Reads the tensors at `which` into a named list, returned with the header
/// list, per-tensor conversion notes and the largest absolute end offset,
/// using [`default_threads`] threads.
#[allow(dead_code)]
pub fn read_all(src: &dyn Source, header: &Header, which: &[usize], mode: Mode) -> Result<Robj> {
    read_all_with(src, header, which, mode, default_threads())
}

/// [`read_all`] on up to `threads` threads.
pub fn read_all_with(src: &dyn Source, header: &Header, which: &[usize], mode: Mode, threads: usize) -> Result<Robj> {
    let (list, stats) = read_many(src, header, which, mode, threads)?;
    let inexact: Vec<f64> = stats.iter().map(|s| s.inexact as f64).collect();
    let int_min: Vec<f64> = stats.iter().map(|s| s.int_min as f64).collect();
    let max_offset = max_offset(header, which);
    // SAFETY: inside build; every value is stored as soon as it is made.
    build(|| unsafe {
        named_list_sexp(
            &["tensors", "header", "inexact", "int_min", "max_offset"],
            &mut [
                &mut || list.get(),
                &mut || header_sexp(header),
                &mut || r_reals(&inexact),
                &mut || r_reals(&int_min),
                &mut || r_reals(&[max_offset as f64]),
            ],
        )
    })
}

/// The largest absolute end offset of the tensors at `which`.
pub(crate) fn max_offset(header: &Header, which: &[usize]) -> usize {
    which.iter().map(|&i| header.data_start() + header.tensors[i].end).max().unwrap_or(0)
}

/// Reads the tensors at `which` into a list named by tensor, on up to
/// `threads` threads, with each tensor's conversion notes. Only those
/// tensors' bytes are read.
pub(crate) fn read_many(
    src: &dyn Source,
    header: &Header,
    which: &[usize],
    mode: Mode,
    threads: usize,
) -> Result<(Robj, Vec<DecodeStats>)> {
    let (list, specs) = allocate(header, which, mode)?;
    let stats = {
        // SAFETY: `list` holds the vectors `specs` describes; nothing else
        // touches them until the tasks are dropped.
        let tasks = unsafe { tasks_for(&list, &specs, header.data_start()) };
        fill_tasks(src, &tasks, threads)?
    };
    fix_int_min(&list, &specs, mode, &stats)?;
    // SAFETY: inside build; the names vector is stored at once.
    build(|| unsafe {
        r_set_attr(list.get(), R_NamesSymbol, r_strings(which.iter().map(|&i| header.tensors[i].name.as_str())));
        list.get()
    })?;
    Ok((list, stats))
}

pub(crate) fn raw_bytes(buf: &Robj) -> Result<&[u8]> {
    buf.as_raw_slice().ok_or_else(|| Error::new(Kind::InvalidArgument, "the buffer must be a raw vector"))
}

fn read_source(src: &dyn Source, names: &Robj, mode: &str, threads: i32) -> Result<Robj> {
    let mode = Mode::parse(mode)?;
    let header = io::read_header(src)?;
    check_strings(&header)?;
    let which = select(&header, names)?;
    read_all_with(src, &header, &which, mode, threads_from_r(threads))
}

/// Reads tensors from the file at `path` on `threads` threads (0: the
/// default).
/// @noRd
#[extendr]
fn read_file_(path: &str, names: Robj, mode: &str, backend: &str, threads: i32) -> Robj {
    to_r((|| {
        let src = FileSource::open(std::path::Path::new(path), parse_backend(backend)?)?;
        read_source(&src, &names, mode, threads)
    })())
}

/// Reads tensors from a raw vector holding a whole file.
/// @noRd
#[extendr]
fn read_raw_(buf: Robj, names: Robj, mode: &str, threads: i32) -> Robj {
    to_r((|| read_source(&Memory(raw_bytes(&buf)?), &names, mode, threads))())
}

/// Header facts of the file at `path`, reading the header only.
/// @noRd
#[extendr]
fn info_file_(path: &str) -> Robj {
    to_r((|| {
        let src = FileSource::open(std::path::Path::new(path), Backend::Read)?;
        let header = io::read_header(&src)?;
        check_strings(&header)?;
        Ok(info_robj(&header, src.len()))
    })())
}

/// Header facts of a raw vector holding a whole file.
/// @noRd
#[extendr]
fn info_raw_(buf: Robj) -> Robj {
    to_r((|| {
        let src = Memory(raw_bytes(&buf)?);
        let header = io::read_header(&src)?;
        check_strings(&header)?;
        Ok(info_robj(&header, src.len()))
    })())
}

extendr_module! {
    mod load;
    fn read_file_;
    fn read_raw_;
    fn info_file_;
    fn info_raw_;
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn window_covers_only_the_tensors_asked_for() {
        // Four U8 tensors of 100 bytes each.
        let json = r#"{"a":{"dtype":"U8","shape":[100],"data_offsets":[0,100]},"b":{"dtype":"U8","shape":[100],"data_offsets":[100,200]},"c":{"dtype":"U8","shape":[100],"data_offsets":[200,300]},"d":{"dtype":"U8","shape":[100],"data_offsets":[300,400]}}"#;
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.extend((0..400).map(|i| (i % 251) as u8));
        let src = Counting { bytes, reads: RefCell::new(Vec::new()) };
        let header = io::read_header(&src).unwrap();
        let base = header.data_start();
        src.reads.borrow_mut().clear();
        // Adjacent b and c come in one read; b and d apart in two; a never.
        for (which, want) in [
            (vec![1, 2], vec![(base + 100, 200)]),
            (vec![3, 1], vec![(base + 300, 100), (base + 100, 100)]),
        ] {
            src.reads.borrow_mut().clear();
            let mut reader = Reader::for_tensors(&src, &header, &which);
            for &i in &which {
                let t = &header.tensors[i];
                let got = reader.small_or_view(base + t.begin, t.nbytes()).unwrap().unwrap().to_vec();
                assert_eq!(got, src.bytes[base + t.begin..base + t.end]);
            }
            assert_eq!(*src.reads.borrow(), want);
        }
        // A reader over the whole source reads ahead to its end.
        src.reads.borrow_mut().clear();
        let mut all = Reader::new(&src);
        all.small_or_view(base + 100, 100).unwrap();
        assert_eq!(*src.reads.borrow(), vec![(base + 100, 300)]);
    }
}
