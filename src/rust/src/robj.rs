//! The few R API operations the package needs, made safe to call from Rust.
//!
//! R errors raised inside an extendr call can abort the R process, so every
//! R call here either cannot fail (its inputs are validated first) or runs
//! under `R_tryCatchError` and comes back as a Rust error. Only R's API is
//! used (`tools/check-nonapi.R` checks): vectors' data through the typed
//! accessors (`REAL`, `INTEGER`, ...), never `DATAPTR`.

use std::os::raw::c_void;

use extendr_api::prelude::*;
use extendr_ffi::{
    cetype_t, R_NamesSymbol, R_NilValue, R_xlen_t, Rf_allocVector, Rf_error, Rf_install,
    Rf_mkCharLenCE, Rf_protect, Rf_setAttrib, Rf_unprotect, Rf_xlength, COMPLEX, INTEGER, LOGICAL,
    RAW, REAL, SET_STRING_ELT, SET_VECTOR_ELT, SEXP, SEXPTYPE, TYPEOF,
};
use safetensors_core::dtype::{Dtype, ALL};
use safetensors_core::error::{Error, Kind, Result};

#[allow(improper_ctypes)] // SEXP is an opaque pointer, as in extendr-ffi.
extern "C" {
    fn R_tryCatchError(
        body: Option<unsafe extern "C" fn(*mut c_void) -> SEXP>,
        bdata: *mut c_void,
        handler: Option<unsafe extern "C" fn(SEXP, *mut c_void) -> SEXP>,
        hdata: *mut c_void,
    ) -> SEXP;
    fn R_ToplevelExec(
        fun: Option<unsafe extern "C" fn(*mut c_void)>,
        data: *mut c_void,
    ) -> std::os::raw::c_int;
    fn R_CheckUserInterrupt();
}

struct AllocRequest {
    ty: SEXPTYPE,
    len: R_xlen_t,
    out: SEXP,
    /// Set by the error handler: R refused the allocation.
    failed: bool,
}

/// The body of [`alloc`]'s R_tryCatchError: allocates the vector.
///
/// # Safety
/// Called by R on R's thread, with `data` the AllocRequest of `alloc`.
unsafe extern "C" fn alloc_body(data: *mut c_void) -> SEXP {
    // SAFETY: `data` points to the AllocRequest on `alloc`'s stack.
    let req = unsafe { &*(data as *const AllocRequest) };
    // SAFETY: called by R_tryCatchError on R's thread; an allocation
    // failure is an R error that the handler catches.
    unsafe { Rf_allocVector(req.ty, req.len) }
}

/// The error handler of [`alloc`]'s R_tryCatchError: notes the failure.
///
/// # Safety
/// Called by R on R's thread, with `data` the AllocRequest of `alloc`.
unsafe extern "C" fn alloc_failed(_cond: SEXP, data: *mut c_void) -> SEXP {
    // SAFETY: `data` points to the AllocRequest on `alloc`'s stack.
    unsafe {
        (*(data as *mut AllocRequest)).failed = true;
        R_NilValue
    }
}

/// Runs the allocation under R_tryCatchError, itself inside R_ToplevelExec.
/// R_tryCatchError evaluates R code, which may notice a pending Ctrl-C: R's
/// implementation then returns NULL without calling the error handler, and
/// anything else that jumps is stopped by the top-level context, so nothing
/// unwinds through the Rust frames that called `alloc`.
///
/// # Safety
/// Called by R_ToplevelExec on R's thread, with `data` the AllocRequest of
/// `alloc`.
unsafe extern "C" fn alloc_toplevel(data: *mut c_void) {
    // SAFETY: `data` points to the AllocRequest on `alloc`'s stack; the
    // body reads it and the handler sets its flag.
    unsafe {
        let out = R_tryCatchError(Some(alloc_body), data, Some(alloc_failed), data);
        (*(data as *mut AllocRequest)).out = out;
    }
}

/// Bytes per element of an R vector type.
fn elt_size(ty: SEXPTYPE) -> usize {
    match ty {
        SEXPTYPE::RAWSXP => 1,
        SEXPTYPE::LGLSXP | SEXPTYPE::INTSXP => 4,
        SEXPTYPE::REALSXP => 8,
        SEXPTYPE::CPLXSXP => 16,
        _ => 8,
    }
}

/// Memory the system can still give, from /proc/meminfo (Linux), in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// Allocations above this size are checked against available memory first,
/// so the kernel's overcommit can't turn them into an OOM kill later.
const CHECK_ABOVE: usize = 256 << 20;

/// Errors when `bytes` more bytes are clearly more than the machine can
/// give (checked above 256 MiB only).
pub fn check_available(bytes: usize) -> Result<()> {
    if bytes > CHECK_ABOVE {
        if let Some(avail) = available_memory() {
            if bytes as u64 > avail {
                return Err(Error::new(
                    Kind::Memory,
                    format!(
                        "the result needs {:.1} GiB but only {:.1} GiB of memory is available",
                        bytes as f64 / (1u64 << 30) as f64,
                        avail as f64 / (1u64 << 30) as f64
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Prepares R's vector heap for `bytes` more bytes of vectors, when all
/// but the largest of them take `rest` bytes.
///
/// R runs a full garbage collection whenever a new vector does not fit its
/// current vector heap, and then grows the heap by about a fifth; so
/// allocating 1 GiB as 16 vectors costs some nine full collections (0.5 s
/// on a small machine, as much as reading the data). Allocating one unused
/// vector of about the total first grows the heap in one step, and the
/// vectors that follow fit (two collections instead of nine). The unused
/// vector is never written, so it takes address space but no memory, and
/// R frees it at the next collection. Failure (a memory limit set in R) is
/// ignored.
pub fn reserve_vector_heap(rest: usize, bytes: usize) {
    const WORTH_IT: usize = 16 << 20;
    if rest < WORTH_IT {
        return;
    }
    let reserve = bytes.saturating_add(bytes / 4);
    let mut req = AllocRequest {
        ty: SEXPTYPE::RAWSXP,
        len: reserve as R_xlen_t,
        // SAFETY: R_NilValue is a valid SEXP once R runs.
        out: unsafe { R_NilValue },
        failed: false,
    };
    // SAFETY: as in `alloc`: errors are caught by R_tryCatchError, anything
    // else by R_ToplevelExec; the outcome doesn't matter here.
    let _ = unsafe {
        R_ToplevelExec(
            Some(reserve_toplevel),
            &mut req as *mut AllocRequest as *mut c_void,
        )
    };
}

/// Allocates the vector `data` (an AllocRequest) asks for and drops it at
/// once. The body returns NULL rather than the vector: a value returned
/// through R_tryCatchError stays reachable for a while, so the collection
/// that the next allocations trigger would have to be a full one to free
/// it, where a young-generation collection does (measured: two full
/// collections of 1000 tensors took 63-69 ms, one full and one young 35-40).
///
/// # Safety
/// Called by R_ToplevelExec on R's thread, with `data` an AllocRequest.
unsafe extern "C" fn reserve_toplevel(data: *mut c_void) {
    /// # Safety
    /// Called by R_tryCatchError on R's thread, with `data` an AllocRequest.
    unsafe extern "C" fn body(data: *mut c_void) -> SEXP {
        // SAFETY: `data` points to the AllocRequest on the caller's stack.
        let req = unsafe { &*(data as *const AllocRequest) };
        // SAFETY: called by R_tryCatchError on R's thread; an allocation
        // failure is an R error that the handler catches.
        unsafe {
            Rf_allocVector(req.ty, req.len);
            R_NilValue
        }
    }
    // SAFETY: `data` points to the AllocRequest on the caller's stack; the
    // handler only sets its flag.
    unsafe {
        R_tryCatchError(Some(body), data, Some(alloc_failed), data);
    }
}

/// Size in bytes of an R vector of `len` elements of type `ty`, if it can
/// exist.
pub fn vec_bytes(ty: SEXPTYPE, len: usize) -> Result<usize> {
    len.checked_mul(elt_size(ty))
        .filter(|b| *b <= isize::MAX as usize)
        .ok_or_else(|| {
            Error::new(
                Kind::Memory,
                format!("a vector of {len} elements is too large"),
            )
        })
}

/// Allocates an R vector of `len` elements without initialising it. A
/// request the machine can't back, or an R allocation failure, is an error.
pub fn alloc(ty: SEXPTYPE, len: usize) -> Result<Robj> {
    let bytes = vec_bytes(ty, len)?;
    check_available(bytes)?;
    let mut req = AllocRequest {
        ty,
        len: len as R_xlen_t,
        // SAFETY: R_NilValue is a valid SEXP once R runs.
        out: unsafe { R_NilValue },
        failed: false,
    };
    // SAFETY: the callback only allocates; an R error inside it is caught
    // by R_tryCatchError (out = R_NilValue), and an interrupt by
    // R_ToplevelExec (returns FALSE), so nothing unwinds through Rust.
    let ok = unsafe {
        R_ToplevelExec(
            Some(alloc_toplevel),
            &mut req as *mut AllocRequest as *mut c_void,
        )
    };
    if ok == 0 {
        return Err(Error::new(Kind::Interrupted, "interrupted by the user"));
    }
    // No R allocation happens between here and from_sexp, so the fresh
    // vector can't be collected meanwhile.
    let sexp = req.out;
    // SAFETY: R_NilValue is a valid SEXP once R runs.
    if sexp == unsafe { R_NilValue } && !req.failed {
        // Another condition ended the R code: only an interrupt can.
        return Err(Error::new(Kind::Interrupted, "interrupted by the user"));
    }
    // SAFETY: as above.
    if sexp == unsafe { R_NilValue } {
        return Err(Error::new(
            Kind::Memory,
            format!("R can't allocate a vector of {bytes} bytes"),
        ));
    }
    // SAFETY: a fresh vector from Rf_allocVector; from_sexp protects it.
    Ok(unsafe { Robj::from_sexp(sexp) })
}

/// The data of the vector `x` of R type `ty` (double, integer, logical, raw
/// or complex), through R's typed accessors; a dangling, aligned pointer for
/// an empty vector (whose data R may give as an unaligned address).
///
/// # Safety
/// `x` must be a live vector of type `ty`.
pub unsafe fn vec_data(x: SEXP, ty: SEXPTYPE) -> *mut u8 {
    // SAFETY: `x` is a live vector of type `ty`, as the caller guarantees.
    unsafe {
        if Rf_xlength(x) == 0 {
            return match ty {
                SEXPTYPE::RAWSXP => std::ptr::NonNull::<u8>::dangling().as_ptr(),
                SEXPTYPE::INTSXP | SEXPTYPE::LGLSXP => {
                    std::ptr::NonNull::<i32>::dangling().as_ptr() as *mut u8
                }
                _ => std::ptr::NonNull::<f64>::dangling().as_ptr() as *mut u8,
            };
        }
        match ty {
            SEXPTYPE::REALSXP => REAL(x) as *mut u8,
            SEXPTYPE::INTSXP => INTEGER(x) as *mut u8,
            SEXPTYPE::LGLSXP => LOGICAL(x) as *mut u8,
            SEXPTYPE::CPLXSXP => COMPLEX(x) as *mut u8,
            _ => RAW(x),
        }
    }
}

/// The elements of `x` as a slice of `T` when `x` has R type `ty`, whose
/// storage `T` must be (f64 for double, i32 for integer and logical, u8 for
/// raw, [f64; 2] for complex).
///
/// # Safety
/// `T` must be the storage type of `ty`, and `x` must stay alive and
/// unmodified while the slice is used.
pub unsafe fn slice_of<'a, T>(x: SEXP, ty: SEXPTYPE) -> Option<&'a [T]> {
    // SAFETY: checked type; the caller keeps `x` alive and guarantees T.
    unsafe {
        if TYPEOF(x) != ty {
            return None;
        }
        let n = Rf_xlength(x) as usize;
        Some(std::slice::from_raw_parts(vec_data(x, ty) as *const T, n))
    }
}

/// The bytes of a raw vector (an error for anything else).
pub fn raw_bytes(x: &Robj) -> Result<&[u8]> {
    // SAFETY: `x` owns (protects) the vector for the borrow; RAWSXP is u8.
    unsafe { slice_of::<u8>(x.get(), SEXPTYPE::RAWSXP) }
        .ok_or_else(|| Error::new(Kind::InvalidArgument, "the buffer must be a raw vector"))
}

/// A thread count from R: 0 (or less) means the core's default.
pub fn threads_from_r(n: i32) -> usize {
    if n <= 0 {
        safetensors_core::read::default_threads()
    } else {
        n as usize
    }
}

struct Build<F> {
    f: Option<F>,
    out: SEXP,
    /// Set when `f` returned.
    done: bool,
    /// Set by the error handler: an R error (out of memory).
    failed: bool,
    /// Set when `f` panicked: what the panic said.
    panicked: Option<String>,
}

/// What a panic's payload says (a `&str` or a `String`, as `panic!` makes).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

/// The body of [`build`]'s R_tryCatchError: runs the job's function once.
///
/// # Safety
/// Called by R on R's thread, with `data` the `Build<F>` of `build`.
unsafe extern "C" fn build_body<F: FnOnce() -> SEXP>(data: *mut c_void) -> SEXP {
    // SAFETY: `data` points to the Build<F> on `build`'s stack.
    let job = unsafe { &mut *(data as *mut Build<F>) };
    let Some(f) = job.f.take() else {
        // SAFETY: R_NilValue is a valid SEXP once R runs.
        return unsafe { R_NilValue };
    };
    // A panic must not unwind out of this `extern "C"` function (Rust
    // aborts the process then): it is caught here and becomes an R error,
    // raised below with nothing left to drop in this frame, so that R's
    // jump to the error handler also undoes the protections `f` made.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(out) => {
            job.done = true;
            out
        }
        Err(payload) => {
            job.panicked = Some(panic_text(&*payload));
            drop(payload);
            // SAFETY: a constant format and argument; R jumps to the
            // handler of the R_tryCatchError around this call, over this
            // frame, which holds nothing with a destructor.
            unsafe { Rf_error(c"%s".as_ptr(), c"internal error".as_ptr()) }
        }
    }
}

/// The error handler of [`build`]'s R_tryCatchError: notes the failure.
///
/// # Safety
/// Called by R on R's thread, with `data` the `Build<F>` of `build`.
unsafe extern "C" fn build_failed<F>(_cond: SEXP, data: *mut c_void) -> SEXP {
    // SAFETY: `data` points to the Build<F> on `build`'s stack.
    unsafe {
        (*(data as *mut Build<F>)).failed = true;
        R_NilValue
    }
}

/// R_tryCatchError inside R_ToplevelExec, as for [`alloc`]: R errors reach
/// the handler, an interrupt stops at the top-level context.
///
/// # Safety
/// Called by R_ToplevelExec on R's thread, with `data` the `Build<F>` of
/// `build`.
unsafe extern "C" fn build_toplevel<F: FnOnce() -> SEXP>(data: *mut c_void) {
    // SAFETY: `data` points to the Build<F> on `build`'s stack.
    unsafe {
        let out = R_tryCatchError(Some(build_body::<F>), data, Some(build_failed::<F>), data);
        (*(data as *mut Build<F>)).out = out;
    }
}

/// Runs `f`, which builds R objects with the raw API (the `r_*` functions
/// below), under one `R_tryCatchError` inside `R_ToplevelExec`: an R error
/// inside it (R out of memory) becomes [`Kind::Memory`] here, Ctrl-C
/// [`Kind::Interrupted`], and a panic an internal error of kind
/// [`Kind::InvalidArgument`] naming it, without unwinding through Rust
/// frames or ending the R session. One call
/// costs about as much as a few allocations, so objects are built in bulk,
/// not one call each.
///
/// `f` must protect what it allocates until it is reachable from the value
/// it returns, and hold nothing with a destructor across R calls (an R
/// error jumps over its frame).
pub fn build<F: FnOnce() -> SEXP>(f: F) -> Result<Robj> {
    let mut job = Build {
        f: Some(f),
        // SAFETY: R_NilValue is a valid SEXP once R runs.
        out: unsafe { R_NilValue },
        done: false,
        failed: false,
        panicked: None,
    };
    // SAFETY: the callbacks only run `f` and record how it ended; R errors
    // are caught by R_tryCatchError and interrupts by R_ToplevelExec; the
    // data pointer outlives the call.
    let ok = unsafe {
        R_ToplevelExec(
            Some(build_toplevel::<F>),
            &mut job as *mut Build<F> as *mut c_void,
        )
    };
    if let Some(what) = job.panicked {
        return Err(Error::new(
            Kind::InvalidArgument,
            format!("internal error: {what}"),
        ));
    }
    if job.failed {
        return Err(Error::new(
            Kind::Memory,
            "R ran out of memory while building the result",
        ));
    }
    if ok == 0 || !job.done {
        return Err(Error::new(Kind::Interrupted, "interrupted by the user"));
    }
    // SAFETY: a live object just returned by `f`; no R allocation happens
    // before from_sexp protects it.
    Ok(unsafe { Robj::from_sexp(job.out) })
}

/// A new R vector (raw API, for use inside [`build`]).
///
/// # Safety
/// Only inside [`build`]; the result is unprotected.
pub unsafe fn r_vec(ty: SEXPTYPE, len: usize) -> SEXP {
    // SAFETY: inside build (the caller's promise), which catches an R
    // allocation error.
    unsafe { Rf_allocVector(ty, len as R_xlen_t) }
}

/// A CHARSXP of `s`, UTF-8 (`s` has no NUL: see [`check_r_string`]).
///
/// # Safety
/// Only inside [`build`]; the result is unprotected.
pub unsafe fn r_char(s: &str) -> SEXP {
    // SAFETY: inside build (the caller's promise); `s` is valid UTF-8 of
    // `s.len()` bytes, fewer than 2^31 (check_r_string), read, not kept.
    unsafe {
        Rf_mkCharLenCE(
            s.as_ptr() as *const std::os::raw::c_char,
            s.len() as i32,
            cetype_t::CE_UTF8,
        )
    }
}

/// A character vector of the strings `s`.
///
/// # Safety
/// Only inside [`build`]; the result is unprotected.
pub unsafe fn r_strings<'a>(s: impl ExactSizeIterator<Item = &'a str>) -> SEXP {
    // SAFETY: inside build (the caller's promise); the vector is protected
    // while its strings are made, each stored at once, at an index below
    // its length (`s` is exact-sized).
    unsafe {
        let v = Rf_protect(r_vec(SEXPTYPE::STRSXP, s.len()));
        for (i, x) in s.enumerate() {
            SET_STRING_ELT(v, i as R_xlen_t, r_char(x));
        }
        Rf_unprotect(1);
        v
    }
}

/// An integer vector.
///
/// # Safety
/// Only inside [`build`]; the result is unprotected.
pub unsafe fn r_ints(x: &[i32]) -> SEXP {
    // SAFETY: inside build (the caller's promise); the new vector has
    // `x.len()` ints, and INTEGER() is called only when it has any.
    unsafe {
        let v = r_vec(SEXPTYPE::INTSXP, x.len());
        if !x.is_empty() {
            std::ptr::copy_nonoverlapping(x.as_ptr(), INTEGER(v), x.len());
        }
        v
    }
}

/// A double vector.
///
/// # Safety
/// Only inside [`build`]; the result is unprotected.
pub unsafe fn r_reals(x: &[f64]) -> SEXP {
    // SAFETY: inside build (the caller's promise); the new vector has
    // `x.len()` doubles, and REAL() is called only when it has any.
    unsafe {
        let v = r_vec(SEXPTYPE::REALSXP, x.len());
        if !x.is_empty() {
            std::ptr::copy_nonoverlapping(x.as_ptr(), REAL(v), x.len());
        }
        v
    }
}

/// A shape as an R vector: integer when every extent fits, double
/// otherwise (raw API).
///
/// # Safety
/// Only inside [`build`]; the result is unprotected.
pub unsafe fn r_shape(shape: &[usize]) -> SEXP {
    // SAFETY: inside build, the callees' contract, passed on.
    unsafe {
        if shape.iter().all(|&d| d <= i32::MAX as usize) {
            let v: Vec<i32> = shape.iter().map(|&d| d as i32).collect();
            r_ints(&v)
        } else {
            let v: Vec<f64> = shape.iter().map(|&d| d as f64).collect();
            r_reals(&v)
        }
    }
}

/// Sets attribute `sym` of `x` (raw API).
///
/// # Safety
/// Only inside [`build`], with a value valid for the attribute.
pub unsafe fn r_set_attr(x: SEXP, sym: SEXP, value: SEXP) {
    // SAFETY: inside build (the caller's promise); `value` is protected
    // while Rf_setAttrib may allocate.
    unsafe {
        Rf_protect(value);
        Rf_setAttrib(x, sym, value);
        Rf_unprotect(1);
    }
}

/// The symbol `name` (raw API).
///
/// # Safety
/// `name` has no NUL; R symbols are never collected.
pub unsafe fn r_sym(name: &str) -> SEXP {
    let Ok(c) = std::ffi::CString::new(name) else {
        // SAFETY: R_NilValue is a valid SEXP once R runs.
        return unsafe { R_NilValue };
    };
    // SAFETY: `c` is a NUL-terminated string that outlives the call; R
    // copies the name into the symbol, which is never collected.
    unsafe { Rf_install(c.as_ptr()) }
}

/// Checks that `s` can become an R string (no NUL bytes).
pub fn check_r_string(s: &str, what: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(Error::new(
            Kind::InvalidHeader,
            format!(
                "{what} {:?} contains a NUL character, which R strings can't hold",
                s
            ),
        ));
    }
    Ok(())
}

/// Sets attribute `name` of `x` to `value`.
///
/// The caller guarantees the value is valid for the attribute (for `dim`,
/// non-negative integers whose product is the length).
pub fn set_attr(x: &mut Robj, name: &str, value: Robj) {
    let Ok(sym) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: both objects are protected by their Robj; the values were
    // validated so Rf_setAttrib can't raise an R error.
    unsafe {
        let s = Rf_install(sym.as_ptr());
        Rf_setAttrib(x.get_mut(), s, value.get());
    }
}

/// Sets `names` of a list or vector.
fn set_names<'a>(x: &mut Robj, names: impl ExactSizeIterator<Item = &'a str>) {
    let names = Strings::from_values(names);
    // SAFETY: the lengths match by construction of the callers.
    unsafe { Rf_setAttrib(x.get_mut(), R_NamesSymbol, names.get()) };
}

/// A plain named list.
pub fn named_list(names: &[&str], values: Vec<Robj>) -> Robj {
    let mut list: Robj = List::from_values(values).into();
    set_names(&mut list, names.iter().copied());
    list
}

/// R objects shared by the attributes of many tensors, built once per call:
/// symbols and one `"dtype"` string per dtype.
pub(crate) struct AttrCache {
    /// The symbol `dtype`.
    pub(crate) dtype_sym: SEXP,
    /// The symbol `shape`.
    pub(crate) shape_sym: SEXP,
    dtypes: [SEXP; ALL.len()],
    /// The class `"integer64"`, once needed.
    integer64: SEXP,
    /// How many of `dtypes` and `integer64` are protected.
    protected: i32,
}

impl AttrCache {
    /// # Safety
    /// Only inside [`build`]; call [`AttrCache::release`] before returning.
    pub(crate) unsafe fn new() -> AttrCache {
        // SAFETY: symbols are never collected.
        unsafe {
            AttrCache {
                dtype_sym: r_sym("dtype"),
                shape_sym: r_sym("shape"),
                dtypes: [std::ptr::null_mut(); ALL.len()],
                integer64: std::ptr::null_mut(),
                protected: 0,
            }
        }
    }

    /// The `"dtype"` attribute value for `d`, protected until `release`.
    ///
    /// # Safety
    /// Only inside [`build`], on a cache made there.
    pub(crate) unsafe fn dtype(&mut self, d: Dtype) -> SEXP {
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

    /// The class attribute of bit64's vectors, protected until `release`.
    ///
    /// # Safety
    /// Only inside [`build`], on a cache made there.
    pub(crate) unsafe fn integer64(&mut self) -> SEXP {
        if self.integer64.is_null() {
            // SAFETY: inside build; protected until release.
            unsafe {
                self.integer64 = Rf_protect(r_strings(["integer64"].into_iter()));
            }
            self.protected += 1;
        }
        self.integer64
    }

    /// Unprotects the values the cache made; they must not be used after.
    ///
    /// # Safety
    /// Only inside [`build`], once, when the values the cache protected are
    /// the top of R's protection stack (everything protected since they
    /// were has been unprotected).
    pub(crate) unsafe fn release(&self) {
        // SAFETY: exactly the values this cache protected, as the caller
        // promises they are the top of the stack.
        unsafe { Rf_unprotect(self.protected) };
    }
}

/// A named list (raw API); `values` run in order, each result stored at
/// once.
///
/// # Safety
/// Only inside [`build`]; the result is unprotected; each value function
/// returns an unprotected fresh object or a reachable one.
pub unsafe fn named_list_sexp(names: &[&str], values: &mut [&mut dyn FnMut() -> SEXP]) -> SEXP {
    // SAFETY: inside build (the caller's promise); the list is protected
    // while its values and names are made, and each value is stored at
    // once, at an index below its length.
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

/// The error as the condition data R's `st_check()` turns into a classed
/// error: `list(kind, message, tensor, format, hint)` of class
/// `safetensors_rust_error`.
pub fn error_robj(e: &Error) -> Robj {
    let tensor: Robj = match &e.tensor {
        // Names with NUL can't reach R; the message still names them.
        Some(t) if !t.contains('\0') => t.as_str().into(),
        _ => ().into(),
    };
    let hint: Robj = match &e.hint {
        Some(h) => h.replace('\0', "\\0").into(),
        None => ().into(),
    };
    let mut out = named_list(
        &["kind", "message", "tensor", "format", "hint"],
        vec![
            e.kind.class().into(),
            e.message.replace('\0', "\\0").into(),
            tensor,
            e.kind.is_format().into(),
            hint,
        ],
    );
    set_attr(&mut out, "class", "safetensors_rust_error".into());
    out
}

/// Converts a core result to what an `#[extendr]` entry point returns.
pub fn to_r(res: Result<Robj>) -> Robj {
    match res {
        Ok(x) => x,
        Err(e) => error_robj(&e),
    }
}

/// Lets R act on a pending Ctrl-C.
///
/// # Safety
/// Called by R_ToplevelExec on R's thread (an interrupt jumps to it).
unsafe extern "C" fn check_interrupt(_: *mut c_void) {
    // SAFETY: called by R_ToplevelExec on R's thread, which catches the
    // jump of an interrupt.
    unsafe { R_CheckUserInterrupt() };
}

/// A value R owns through an external pointer until it is taken out (a
/// save committed or abandoned): the garbage collector drops what is left.
pub struct Slot<T>(std::cell::RefCell<Option<T>>);

impl<T: 'static> Slot<T> {
    /// An external pointer holding `value`.
    pub fn new_ptr(value: T) -> Robj {
        ExternalPtr::new(Slot(std::cell::RefCell::new(Some(value)))).into()
    }

    /// Runs `f` on the value in the external pointer `x` (with `take`,
    /// taken out of it first, so that it is dropped whatever `f` does); an
    /// error of kind `Closed` saying `closed` if there is none.
    pub fn with<R>(
        x: &Robj,
        take: bool,
        closed: &str,
        f: impl FnOnce(&mut Option<T>) -> Result<R>,
    ) -> Result<R> {
        let closed = || Error::new(Kind::Closed, closed);
        let Ok(ptr) = <&ExternalPtr<Slot<T>>>::try_from(x) else {
            return Err(closed());
        };
        let Ok(slot) = ptr.try_addr() else {
            return Err(closed());
        };
        let Ok(mut state) = slot.0.try_borrow_mut() else {
            return Err(Error::new(Kind::InvalidArgument, "it is in use"));
        };
        if state.is_none() {
            return Err(closed());
        }
        if take {
            let mut owned = state.take();
            return f(&mut owned);
        }
        f(&mut state)
    }

    /// Drops the value in `x`; whether there was one.
    pub fn drop_value(x: &Robj) -> bool {
        let Ok(ptr) = <&ExternalPtr<Slot<T>>>::try_from(x) else {
            return false;
        };
        let Ok(slot) = ptr.try_addr() else {
            return false;
        };
        let Ok(mut state) = slot.0.try_borrow_mut() else {
            return false;
        };
        state.take().is_some()
    }
}

/// Errors if the user pressed Ctrl-C: the `poll` callback the core's
/// engines call between blocks. R's interrupt unwinds only to
/// R_ToplevelExec, so no Rust frame is skipped.
pub fn check_interrupt_now() -> Result<()> {
    // SAFETY: R_ToplevelExec runs the callback in a top-level context and
    // returns FALSE if it was interrupted (or errored).
    let ok = unsafe { R_ToplevelExec(Some(check_interrupt), std::ptr::null_mut()) };
    if ok == 0 {
        return Err(Error::new(Kind::Interrupted, "interrupted by the user"));
    }
    Ok(())
}

/// Runs `f` on the `T` that the external pointer `x` owns in a `RefCell`
/// (a loader, a piece reader): an error naming `what` if `x` is not one,
/// or is in use.
pub fn with_cell<T: 'static, R>(
    x: &Robj,
    what: &str,
    f: impl FnOnce(&mut T) -> Result<R>,
) -> Result<R> {
    let bad = || Error::new(Kind::InvalidArgument, format!("internal error: not {what}"));
    let Ok(ptr) = <&ExternalPtr<std::cell::RefCell<T>>>::try_from(x) else {
        return Err(bad());
    };
    let Ok(cell) = ptr.try_addr() else {
        return Err(bad());
    };
    let Ok(mut inner) = cell.try_borrow_mut() else {
        return Err(bad());
    };
    f(&mut inner)
}

/// The address torch writes for a pointer (`0x7f...`, or without the
/// prefix where the C++ library prints none), if it is one and not null.
pub(crate) fn parse_address(text: &str) -> Option<usize> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if hex.is_empty()
        || hex.len() > 2 * std::mem::size_of::<usize>()
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    usize::from_str_radix(hex, 16).ok().filter(|&a| a != 0)
}

#[cfg(test)]
#[path = "../test-support/embedded_r.rs"]
mod embedded_r;

#[cfg(test)]
mod tests {
    use super::*;

    use super::embedded_r::start_r;

    #[test]
    fn a_panic_while_building_is_an_error_and_r_goes_on() {
        start_r();
        // SAFETY (all the closures below): R runs; they allocate as `build`
        // asks, inside it.
        // SAFETY: as above.
        let ok = build(|| unsafe { r_vec(SEXPTYPE::INTSXP, 3) }).unwrap();
        assert_eq!(ok.len(), 3);
        // SAFETY: as above.
        let e = build(|| unsafe {
            // A protection left unbalanced by the panic is undone by R.
            Rf_protect(r_vec(SEXPTYPE::REALSXP, 10));
            panic!("boom {}", 42);
        })
        .unwrap_err();
        assert_eq!(e.kind, Kind::InvalidArgument);
        assert_eq!(e.message, "internal error: boom 42");
        // R still works, and its protection stack is balanced.
        // SAFETY: as above.
        let again = build(|| unsafe { r_vec(SEXPTYPE::RAWSXP, 5) }).unwrap();
        assert_eq!(again.len(), 5);
        let alloc_ok = alloc(SEXPTYPE::REALSXP, 4).unwrap();
        assert_eq!(alloc_ok.len(), 4);
    }

    #[test]
    fn addresses_parse_as_torch_prints_them_and_nothing_else() {
        assert_eq!(parse_address("0x7f3a5c000040"), Some(0x7f3a_5c00_0040));
        assert_eq!(parse_address("0X10"), Some(16));
        // MSVC's iostreams print pointers zero-padded, without the prefix.
        assert_eq!(parse_address("000001F2A3B40080"), Some(0x1f2_a3b4_0080));
        for bad in [
            "", "0x", "0", "0x0", "(nil)", "+10", "-10", "0x1g", " 0x10", "0x10 ",
        ] {
            assert_eq!(parse_address(bad), None, "{bad:?}");
        }
        let long = format!("0x1{}", "0".repeat(2 * std::mem::size_of::<usize>()));
        assert_eq!(parse_address(&long), None);
    }
}
