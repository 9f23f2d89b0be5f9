//! The R objects the package returns for tensors (R/tensors.R shapes them
//! further): the one place that decides what R vector a tensor becomes,
//! allocates it, and hands its memory to the core's read engine.
//!
//! A tensor becomes, in mode `Array`, an R vector of the dtype's natural
//! type ([`dtypes::r_type_name`]) with `dim` (or `shape = integer(0)` for a
//! scalar) and `dtype`, except as the mode's choices say: I64 and U64 as
//! bit64's `integer64` or as decimal strings ([`Int64`]), U8 as raw
//! ([`Uint8`]); in mode `Raw`, its bytes with `dtype` and `shape`. An I32
//! tensor holding `i32::MIN` (R's `NA_integer_`) comes back as double.
//! Whole tensors and slices are built here alike.

use extendr_api::prelude::*;
use extendr_ffi::{
    R_ClassSymbol, R_DimSymbol, R_NamesSymbol, Rf_protect, Rf_setAttrib, Rf_unprotect,
    SET_VECTOR_ELT, SEXP, SEXPTYPE, VECTOR_ELT,
};
use safetensors_core::convert::{self, r_type, DecodeStats, RType, SharedSlice, SharedVector};
use safetensors_core::dtype::Dtype;
use safetensors_core::error::{Error, Kind, Result};
use safetensors_core::format::{Header, TensorInfo};
use safetensors_core::io::{Segments, Source};
use safetensors_core::read::{self, Fetch, Piece, ReadInto, Task};
use safetensors_core::slice::Plan;

use crate::decimal::{fill_decimal, Scratch};
use crate::info::header_sexp;
use crate::robj::{
    self, build, check_interrupt_now, named_list_sexp, r_reals, r_set_attr, r_shape, r_strings,
    r_vec, vec_data, AttrCache,
};

/// What I64 and U64 tensors become in mode `Array` (R's `int64 =`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int64 {
    /// `double`, rounded beyond 2^53 (counted in `inexact`).
    Double,
    /// bit64's `integer64`: exact, but for U64 values above `i64::MAX`
    /// and I64's `i64::MIN`, which are its `NA` (counted in `na`).
    Integer64,
    /// `character`: exact decimal strings.
    Character,
}

/// What U8 tensors become in mode `Array` (R's `uint8 =`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uint8 {
    /// `integer`, four bytes per value.
    Integer,
    /// `raw`, one byte per value.
    Raw,
}

/// What each tensor becomes in R.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// An R vector with `dim` and `dtype`: of the dtype's natural type, or
    /// as the choices for 64-bit integers and U8 say.
    Array { int64: Int64, uint8: Uint8 },
    /// The tensor's bytes as stored, with `dtype` and `shape` attributes.
    Raw,
}

impl Mode {
    /// Parses a mode from R: `"raw"`, or `"array"` followed by the `int64`
    /// and `uint8` choices (`c("array", "integer64", "raw")`; left out,
    /// they are `"double"` and `"integer"`).
    pub fn from_r(x: &Robj) -> Result<Mode> {
        let bad = || Error::new(Kind::InvalidArgument, "internal error: malformed read mode");
        let Some(v) = x.as_str_vector() else {
            return Err(bad());
        };
        match v[..] {
            ["raw"] => Ok(Mode::Raw),
            ["array"] => Ok(Mode::Array {
                int64: Int64::Double,
                uint8: Uint8::Integer,
            }),
            ["array", int64, uint8] => {
                let int64 = match int64 {
                    "double" => Int64::Double,
                    "integer64" => Int64::Integer64,
                    "character" => Int64::Character,
                    _ => return Err(bad()),
                };
                let uint8 = match uint8 {
                    "integer" => Uint8::Integer,
                    "raw" => Uint8::Raw,
                    _ => return Err(bad()),
                };
                Ok(Mode::Array { int64, uint8 })
            }
            _ => Err(bad()),
        }
    }
}

/// What is being built: a whole tensor or a slice of one (their errors
/// differ).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TensorOrSlice {
    Tensor,
    Slice,
}

/// One tensor's R object to build: its name, dtype and (result) shape.
pub struct TensorDesc<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
}

/// What the elements of a tensor's R vector are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Elem {
    Real,
    Integer,
    Logical,
    Complex,
    /// `raw`: U8 values, or any tensor's bytes in mode `Raw`.
    Byte,
    /// bit64's `integer64` (a double vector with that class).
    Integer64,
    /// Decimal strings, made from 64-bit integers the read engine puts in
    /// a scratch buffer.
    Decimal,
}

/// How one tensor's R object is made.
#[derive(Clone, Copy)]
struct Spec {
    ty: SEXPTYPE,
    len: usize,
    elem: Elem,
    /// Copy the bytes as they are: raw mode, or F64, I32 and U8 read into
    /// double, integer and raw when the layout needs no permutation.
    copy: bool,
    /// Count I32 values equal to `NA_integer_` (copied I32).
    count_i32_min: bool,
}

fn elem_of(rt: RType) -> Elem {
    match rt {
        RType::Real => Elem::Real,
        RType::Integer => Elem::Integer,
        RType::Logical => Elem::Logical,
        RType::Complex => Elem::Complex,
    }
}

fn sexptype(elem: Elem) -> SEXPTYPE {
    match elem {
        Elem::Real | Elem::Integer64 => SEXPTYPE::REALSXP,
        Elem::Integer => SEXPTYPE::INTSXP,
        Elem::Logical => SEXPTYPE::LGLSXP,
        Elem::Complex => SEXPTYPE::CPLXSXP,
        Elem::Byte => SEXPTYPE::RAWSXP,
        Elem::Decimal => SEXPTYPE::STRSXP,
    }
}

fn spec_of(w: &TensorDesc<'_>, mode: Mode, what: TensorOrSlice) -> Result<Spec> {
    let numel = w.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let nbytes = numel
        .and_then(|n| n.checked_mul(w.dtype.bits()))
        .map(|b| b.div_ceil(8));
    let (Some(numel), Some(nbytes)) = (numel, nbytes) else {
        return Err(Error::tensor(
            Kind::Overflow,
            w.name,
            format!("the size of tensor `{}` overflows", w.name),
        ));
    };
    match mode {
        Mode::Raw => Ok(Spec {
            ty: SEXPTYPE::RAWSXP,
            len: nbytes,
            elem: Elem::Byte,
            copy: true,
            count_i32_min: false,
        }),
        Mode::Array { int64, uint8 } => {
            if let Some(&d) = w.shape.iter().find(|&&d| d > i32::MAX as usize) {
                return Err(match what {
                    TensorOrSlice::Tensor => Error::tensor(
                        Kind::Unsupported,
                        w.name,
                        format!(
                            "tensor `{}` has dimension {d}, larger than .Machine$integer.max, the largest R `dim`; \
                             read it with `framework = \"raw\"`",
                            w.name
                        ),
                    ),
                    TensorOrSlice::Slice => Error::tensor(
                        Kind::InvalidSlice,
                        w.name,
                        format!("the slice has extent {d}, larger than .Machine$integer.max, the largest R `dim`"),
                    ),
                });
            }
            let elem = match (w.dtype, int64, uint8) {
                (Dtype::U8, _, Uint8::Raw) => Elem::Byte,
                (Dtype::I64 | Dtype::U64, Int64::Integer64, _) => Elem::Integer64,
                (Dtype::I64 | Dtype::U64, Int64::Character, _) => Elem::Decimal,
                _ => elem_of(r_type(w.dtype)),
            };
            let copy = what == TensorOrSlice::Tensor
                && convert::is_trivial_layout(w.shape)
                && matches!(
                    (w.dtype, elem),
                    (Dtype::F64, Elem::Real)
                        | (Dtype::I32, Elem::Integer)
                        | (Dtype::U8, Elem::Byte)
                );
            Ok(Spec {
                ty: sexptype(elem),
                len: numel,
                elem,
                copy,
                count_i32_min: copy && w.dtype == Dtype::I32,
            })
        }
    }
}

/// Sets the attributes of a tensor's R object: `dim` (or `shape =
/// integer(0)` for a scalar) and `dtype` for arrays (and class
/// `"integer64"` for `elem` Integer64), `dtype` and `shape` for raw bytes.
///
/// # Safety
/// Inside [`build`], with `x` protected (or in a protected list) and its
/// length matching the shape, whose extents fit an int in mode `Array`
/// ([`spec_of`] checked).
unsafe fn set_tensor_attrs(
    x: SEXP,
    w: &TensorDesc<'_>,
    mode: Mode,
    elem: Elem,
    attrs: &mut AttrCache,
) {
    // SAFETY: inside build with `x` protected (the caller's promise); each
    // attribute value is protected by r_set_attr or the cache while it is
    // set, and `dim` fits an int (spec_of checked).
    unsafe {
        match mode {
            Mode::Array { .. } => {
                if w.shape.is_empty() {
                    r_set_attr(x, attrs.shape_sym, r_vec(SEXPTYPE::INTSXP, 0));
                } else {
                    r_set_attr(x, R_DimSymbol, r_shape(w.shape));
                }
            }
            Mode::Raw => r_set_attr(x, attrs.shape_sym, r_shape(w.shape)),
        }
        let d = attrs.dtype(w.dtype);
        Rf_setAttrib(x, attrs.dtype_sym, d);
        if elem == Elem::Integer64 {
            // Sets the object bit too.
            Rf_setAttrib(x, R_ClassSymbol, attrs.integer64());
        }
    }
}

/// The R objects of some tensors, allocated with their attributes but not
/// yet filled, in a list.
pub struct Tensors {
    list: Robj,
    specs: Vec<Spec>,
    /// The buffers of the tensors read as decimal strings (`None` for the
    /// others).
    scratch: Vec<Option<Scratch>>,
}

/// Bytes a decimal string takes in R, about (a cached CHARSXP of up to 20
/// characters), for the memory check.
const STRING_BYTES: usize = 64;

impl Tensors {
    /// Allocates the R objects of `descs` (with their attributes) in a new
    /// list. The memory is checked against what the machine has first, and
    /// R's heap grown once for all of them.
    pub fn allocate(descs: &[TensorDesc<'_>], mode: Mode, what: TensorOrSlice) -> Result<Tensors> {
        let mut specs = Vec::with_capacity(descs.len());
        let mut total = 0usize;
        let mut largest = 0usize;
        let mut strings = 0usize;
        for w in descs {
            let spec = spec_of(w, mode, what)?;
            let bytes = robj::vec_bytes(spec.ty, spec.len)?;
            total = total.saturating_add(bytes);
            largest = largest.max(bytes);
            if spec.elem == Elem::Decimal {
                // The scratch buffer and the strings.
                strings = strings.saturating_add(spec.len.saturating_mul(8 + STRING_BYTES));
            }
            specs.push(spec);
        }
        robj::check_available(total.saturating_add(strings))?;
        let scratch = specs
            .iter()
            .map(|s| {
                if s.elem == Elem::Decimal {
                    Scratch::new(s.len).map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        // One large vector costs one collection either way; several add more.
        robj::reserve_vector_heap(total - largest, total);
        let list = build(|| {
            // SAFETY: inside build; `list` is protected while its elements
            // are allocated, and each element is reachable from it once
            // stored.
            unsafe {
                let list = Rf_protect(r_vec(SEXPTYPE::VECSXP, specs.len()));
                let mut attrs = AttrCache::new();
                for (k, (spec, w)) in specs.iter().zip(descs).enumerate() {
                    let x = r_vec(spec.ty, spec.len);
                    SET_VECTOR_ELT(list, k as isize, x);
                    set_tensor_attrs(x, w, mode, spec.elem, &mut attrs);
                }
                attrs.release();
                Rf_unprotect(1);
                list
            }
        })?;
        Ok(Tensors {
            list,
            specs,
            scratch,
        })
    }

    /// Where tensor `k`'s values go.
    ///
    /// # Safety
    /// Nothing else may touch the vector's data while the destination is
    /// used; `self` must outlive it.
    unsafe fn read_into(&self, k: usize) -> ReadInto<'_> {
        let spec = self.specs[k];
        let len = spec.len;
        if let Some(scratch) = &self.scratch[k] {
            // SAFETY: the buffer holds the tensor's `len` values, and only
            // the destination writes them while it is used.
            return ReadInto::Values(SharedVector::Bits64(unsafe {
                SharedSlice::from_raw(scratch.ptr, scratch.len)
            }));
        }
        // SAFETY: element k exists and has the spec's type and length (not
        // character: those have a scratch buffer).
        unsafe {
            let ptr = vec_data(VECTOR_ELT(self.list.get(), k as isize), spec.ty);
            if spec.copy {
                let nbytes = match spec.ty {
                    SEXPTYPE::REALSXP => len * 8,
                    SEXPTYPE::INTSXP => len * 4,
                    _ => len,
                };
                ReadInto::Bytes(SharedSlice::from_raw(ptr, nbytes))
            } else {
                ReadInto::Values(match spec.elem {
                    Elem::Integer => {
                        SharedVector::Integer(SharedSlice::from_raw(ptr as *mut i32, len))
                    }
                    Elem::Logical => {
                        SharedVector::Logical(SharedSlice::from_raw(ptr as *mut i32, len))
                    }
                    Elem::Complex => {
                        SharedVector::Complex(SharedSlice::from_raw(ptr as *mut [f64; 2], len))
                    }
                    Elem::Byte => SharedVector::Byte(SharedSlice::from_raw(ptr, len)),
                    Elem::Integer64 => {
                        SharedVector::Int64(SharedSlice::from_raw(ptr as *mut i64, len))
                    }
                    Elem::Real | Elem::Decimal => {
                        SharedVector::Real(SharedSlice::from_raw(ptr as *mut f64, len))
                    }
                })
            }
        }
    }

    /// The read of tensor `info` (whose data section starts at
    /// `data_start`) into vector `k`.
    ///
    /// # Safety
    /// Only the returned task may write vector `k` while it is used, and
    /// `self` must outlive it.
    unsafe fn task(&self, k: usize, info: &TensorInfo, data_start: usize) -> Result<Task<'_>> {
        // SAFETY: the caller's promise.
        let task = Task::new(info, data_start, unsafe { self.read_into(k) })?;
        Ok(if self.specs[k].count_i32_min {
            task.counting_i32_min()
        } else {
            task
        })
    }

    /// Reads whole tensors `which` of `header` from `src` into these
    /// vectors (allocated for exactly those tensors, in that order) with the
    /// read engine, on up to `threads` threads.
    pub fn read(
        &self,
        src: &dyn Source,
        header: &Header,
        which: &[usize],
        threads: usize,
    ) -> Result<Vec<DecodeStats>> {
        let tasks = which
            .iter()
            .enumerate()
            // SAFETY: the vectors live in `self.list` for this call and
            // only the tasks write them.
            .map(|(k, &i)| unsafe { self.task(k, &header.tensors[i], header.data_start()) })
            .collect::<Result<Vec<_>>>()?;
        read::read_tasks(src, &tasks, threads, &mut check_interrupt_now)
    }

    /// Reads the selection `plan` of tensor `info` into the only vector
    /// (allocated for the slice's shape).
    pub fn read_slice(
        &self,
        src: &dyn Source,
        header: &Header,
        info: &TensorInfo,
        plan: &Plan,
    ) -> Result<DecodeStats> {
        // SAFETY: the vector lives in `self.list` for this call and only
        // the read writes it.
        let dest = unsafe { self.read_into(0) };
        read::read_slice(
            src,
            info,
            header.data_start(),
            plan,
            dest,
            &mut check_interrupt_now,
        )
    }

    /// The list of filled tensors: decimal strings made from the scratch
    /// buffers, and each I32 tensor read as integer that holds
    /// `NA_integer_`'s bit pattern replaced by a double copy (which keeps
    /// the value).
    pub fn finish(
        self,
        descs: &[TensorDesc<'_>],
        mode: Mode,
        stats: &[DecodeStats],
    ) -> Result<Robj> {
        for (k, (scratch, w)) in self.scratch.iter().zip(descs).enumerate() {
            if let Some(scratch) = scratch {
                // SAFETY: element k is the character vector of the
                // tensor's length, kept alive by `self.list`.
                let x = unsafe { VECTOR_ELT(self.list.get(), k as isize) };
                fill_decimal(x, scratch.values(), w.dtype)?;
            }
        }
        if !stats.iter().any(|s| s.int_min > 0) {
            return Ok(self.list);
        }
        let list = self.list;
        let specs = self.specs;
        build(|| {
            // SAFETY: inside build; each new vector is stored in the
            // protected list right after allocation; the old one is read
            // before that.
            unsafe {
                let mut attrs = AttrCache::new();
                for (k, ((spec, w), st)) in specs.iter().zip(descs).zip(stats).enumerate() {
                    if st.int_min == 0 || spec.ty != SEXPTYPE::INTSXP {
                        continue;
                    }
                    // `x` stays in the list until `y` replaces it.
                    let x = VECTOR_ELT(list.get(), k as isize);
                    let y = Rf_protect(r_vec(SEXPTYPE::REALSXP, spec.len));
                    let (src, dst) = (
                        vec_data(x, SEXPTYPE::INTSXP) as *const i32,
                        vec_data(y, SEXPTYPE::REALSXP) as *mut f64,
                    );
                    for i in 0..spec.len {
                        *dst.add(i) = *src.add(i) as f64;
                    }
                    SET_VECTOR_ELT(list.get(), k as isize, y);
                    Rf_unprotect(1);
                    // `y` is in the list now; what the cache protects stays
                    // on top of R's protection stack until it is released.
                    set_tensor_attrs(y, w, mode, Elem::Real, &mut attrs);
                }
                attrs.release();
                list.get()
            }
        })
    }
}

/// Reads tensors `which` of `header` from `src` as `mode` makes them:
/// `list(tensors, [header,] inexact, int_min, na, max_offset)`, `tensors`
/// named, in the order of `which`, and with `with_header` the header as
/// safetensors 0.2.x gave it. Only those tensors' bytes are read.
pub fn read_tensors(
    src: &dyn Source,
    header: &Header,
    which: &[usize],
    mode: Mode,
    threads: usize,
    with_header: bool,
) -> Result<Robj> {
    let descs: Vec<TensorDesc<'_>> = which
        .iter()
        .map(|&i| {
            let t = &header.tensors[i];
            TensorDesc {
                name: &t.name,
                dtype: t.dtype,
                shape: &t.shape,
            }
        })
        .collect();
    let tensors = Tensors::allocate(&descs, mode, TensorOrSlice::Tensor)?;
    let stats = tensors.read(src, header, which, threads)?;
    let list = tensors.finish(&descs, mode, &stats)?;
    let max_offset = which
        .iter()
        .map(|&i| header.data_start() + header.tensors[i].end)
        .max()
        .unwrap_or(0);
    read_result(
        list,
        &descs,
        &stats,
        max_offset,
        with_header.then_some(header),
    )
}

/// The result of a read of whole tensors: `list(tensors, [header,]
/// inexact, int_min, max_offset)`, `tensors` (the filled `list`) named.
fn read_result(
    list: Robj,
    descs: &[TensorDesc<'_>],
    stats: &[DecodeStats],
    max_offset: usize,
    header: Option<&Header>,
) -> Result<Robj> {
    let inexact: Vec<f64> = stats.iter().map(|s| s.inexact as f64).collect();
    let int_min: Vec<f64> = stats.iter().map(|s| s.int_min as f64).collect();
    let na: Vec<f64> = stats.iter().map(|s| s.na as f64).collect();
    // SAFETY: inside build; every value is stored as soon as it is made.
    build(|| unsafe {
        r_set_attr(
            list.get(),
            R_NamesSymbol,
            r_strings(descs.iter().map(|w| w.name)),
        );
        let mut tensors = || list.get();
        let mut head = || header.map_or(extendr_ffi::R_NilValue, |h| header_sexp(h));
        let mut inexact = || r_reals(&inexact);
        let mut int_min = || r_reals(&int_min);
        let mut na = || r_reals(&na);
        let mut max_offset = || r_reals(&[max_offset as f64]);
        if header.is_some() {
            named_list_sexp(
                &[
                    "tensors",
                    "header",
                    "inexact",
                    "int_min",
                    "na",
                    "max_offset",
                ],
                &mut [
                    &mut tensors,
                    &mut head,
                    &mut inexact,
                    &mut int_min,
                    &mut na,
                    &mut max_offset,
                ],
            )
        } else {
            named_list_sexp(
                &["tensors", "inexact", "int_min", "na", "max_offset"],
                &mut [
                    &mut tensors,
                    &mut inexact,
                    &mut int_min,
                    &mut na,
                    &mut max_offset,
                ],
            )
        }
    })
}

/// Whole tensors read from bytes that arrive in pieces ([`read::plan_fetches`]),
/// from a source that is fetched rather than read (a file over HTTP): the
/// R vectors are allocated first, each piece is read into them as it
/// comes, and [`Loader::finish`] returns what [`read_tensors`] would have.
/// Only one piece of the source is in memory at a time. A local file is
/// read in the same pieces ([`Loader::read_piece`]) when R moves a progress
/// bar between them.
pub struct Loader {
    /// `None` once finished.
    tensors: Option<Tensors>,
    mode: Mode,
    /// The tensors asked for, in the order asked (repeats allowed).
    infos: Vec<TensorInfo>,
    /// Their positions in the header.
    positions: Vec<usize>,
    data_start: usize,
    file_len: u64,
    /// The pieces of every fetch, in order.
    pieces: Vec<Piece>,
    /// Which pieces have been read.
    done: Vec<bool>,
    stats: Vec<DecodeStats>,
}

impl Loader {
    /// Allocates the tensors `which` (positions in `header`) of a source of
    /// `file_len` bytes and plans their fetches in pieces of at most `max`
    /// bytes: the loader and the fetches, whose pieces [`Loader::feed`]
    /// takes in order.
    pub fn new(
        header: &Header,
        file_len: u64,
        which: &[usize],
        mode: Mode,
        max: usize,
    ) -> Result<(Loader, Vec<Fetch>)> {
        let infos: Vec<TensorInfo> = which.iter().map(|&i| header.tensors[i].clone()).collect();
        let descs = descs_of(&infos);
        let tensors = Tensors::allocate(&descs, mode, TensorOrSlice::Tensor)?;
        let fetches = read::plan_fetches(&header.tensors, header.data_start(), which, max)?;
        let pieces: Vec<Piece> = fetches
            .iter()
            .flat_map(|f| f.pieces.iter().cloned())
            .collect();
        let loader = Loader {
            tensors: Some(tensors),
            mode,
            stats: vec![DecodeStats::default(); infos.len()],
            infos,
            positions: which.to_vec(),
            data_start: header.data_start(),
            file_len,
            done: vec![false; pieces.len()],
            pieces,
        };
        Ok((loader, fetches))
    }

    /// Reads piece `p` (counted over all fetches, from 0), whose bytes are
    /// `bytes`, into the tensors, on up to `threads` threads.
    pub fn feed(&mut self, p: usize, bytes: &[u8], threads: usize) -> Result<()> {
        if self
            .pieces
            .get(p)
            .is_some_and(|piece| bytes.len() != piece.len)
        {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: the piece's bytes don't match it",
            ));
        }
        let off = self.pieces.get(p).map_or(0, |piece| piece.off);
        let src = Segments::new(self.file_len, vec![(off, bytes)])?;
        self.read_piece(p, &src, threads)
    }

    /// Reads piece `p` (counted over all fetches, from 0) from `src`, which
    /// holds at least its bytes (the whole file, for a local read in
    /// pieces), into the tensors, on up to `threads` threads.
    pub fn read_piece(&mut self, p: usize, src: &dyn Source, threads: usize) -> Result<()> {
        let internal = |m: &str| Error::new(Kind::InvalidArgument, format!("internal error: {m}"));
        let Some(tensors) = &self.tensors else {
            return Err(internal("the read is finished"));
        };
        let Some(piece) = self.pieces.get(p) else {
            return Err(internal("no such piece"));
        };
        if self.done[p] {
            return Err(internal("the piece was read already"));
        }
        let mut slots = Vec::new();
        let mut tasks = Vec::new();
        for (k, (info, &pos)) in self.infos.iter().zip(&self.positions).enumerate() {
            if !piece.tensors.contains(&pos) {
                continue;
            }
            // SAFETY: the vectors live in `tensors.list` for this call, and
            // each is written by its one task.
            let task = unsafe { tensors.task(k, info, self.data_start) }?;
            tasks.push(match piece.rows {
                Some((r0, r1)) => task.rows(r0, r1)?,
                None => task,
            });
            slots.push(k);
        }
        let stats = read::read_tasks(src, &tasks, threads, &mut check_interrupt_now)?;
        for (k, s) in slots.into_iter().zip(stats) {
            self.stats[k] = self.stats[k].merge(s);
        }
        self.done[p] = true;
        Ok(())
    }

    /// The tensors, once every piece was read: `list(tensors, inexact,
    /// int_min, max_offset)` as [`read_tensors`] returns it.
    pub fn finish(&mut self) -> Result<Robj> {
        if self.done.contains(&false) {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: a piece was not read",
            ));
        }
        let Some(tensors) = self.tensors.take() else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: the read is finished",
            ));
        };
        let descs = descs_of(&self.infos);
        let list = tensors.finish(&descs, self.mode, &self.stats)?;
        let max_offset = self
            .infos
            .iter()
            .map(|t| self.data_start + t.end)
            .max()
            .unwrap_or(0);
        read_result(list, &descs, &self.stats, max_offset, None)
    }
}

fn descs_of(infos: &[TensorInfo]) -> Vec<TensorDesc<'_>> {
    infos
        .iter()
        .map(|t| TensorDesc {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
        })
        .collect()
}

/// Reads the selection `plan` of tensor `info` as `mode` makes it:
/// `list(tensor, inexact, int_min, na)`.
pub fn read_slice(
    src: &dyn Source,
    header: &Header,
    info: &TensorInfo,
    plan: &Plan,
    mode: Mode,
) -> Result<Robj> {
    let desc = [TensorDesc {
        name: &info.name,
        dtype: info.dtype,
        shape: plan.out_shape(),
    }];
    let tensors = Tensors::allocate(&desc, mode, TensorOrSlice::Slice)?;
    let stats = tensors.read_slice(src, header, info, plan)?;
    let list = tensors.finish(&desc, mode, &[stats])?;
    // SAFETY: inside build; every value is stored as soon as it is made.
    build(|| unsafe {
        named_list_sexp(
            &["tensor", "inexact", "int_min", "na"],
            &mut [
                &mut || VECTOR_ELT(list.get(), 0),
                &mut || r_reals(&[stats.inexact as f64]),
                &mut || r_reals(&[stats.int_min as f64]),
                &mut || r_reals(&[stats.na as f64]),
            ],
        )
    })
}
