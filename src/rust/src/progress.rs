//! A streaming writer, for saves that show a progress bar (R/progress.R).
//!
//! `write_file_()` in save.rs writes a whole file in one call, which is the
//! fast path. A progress bar needs R to get control back between tensors,
//! so this writer splits the same work into steps: `writer_open_()`
//! validates every tensor, creates the temporary file and writes the
//! header; `writer_write_()` appends one tensor; `writer_commit_()` flushes
//! and renames the file over its target. The writer lives in an external
//! pointer; `writer_abort_()`, an error in a step, or the garbage collector
//! dropping an uncommitted writer removes the temporary file, so an
//! interrupted save leaves no partial file behind.

use std::cell::RefCell;
use std::io::Write;

use extendr_api::prelude::*;

use crate::error::{Error, Kind, Result};
use crate::format::TensorSpec;
use crate::io::AtomicFile;
use crate::load::threads_from_r;
use crate::robj::{self, to_r};
use crate::save::{encode_blocks, items, plan};

/// A save in progress: the temporary file, and the tensors still to write.
struct Open {
    file: AtomicFile,
    /// Every tensor of the file, in order, as validated when opened.
    specs: Vec<TensorSpec>,
    /// Each tensor's `(begin, end)` in the data section.
    offsets: Vec<(usize, usize)>,
    /// Bytes of the header (8 + N).
    prefix_len: usize,
    /// The position of the next tensor to write.
    next: usize,
    /// Threads for encoding.
    threads: usize,
}

/// What R's external pointer owns: a save in progress, or nothing once
/// committed or aborted.
pub struct Writer {
    state: RefCell<Option<Open>>,
}

fn writer_of(x: &Robj) -> Result<&Writer> {
    let Ok(ptr) = <&ExternalPtr<Writer>>::try_from(x) else {
        return Err(Error::new(Kind::InvalidArgument, "not a safetensors writer"));
    };
    ptr.try_addr().map_err(|_| Error::new(Kind::Closed, "the writer is closed"))
}

/// Runs `f` on the open save of writer `x`. If `f` fails, the save is
/// abandoned and its temporary file removed.
fn with_writer<T>(x: &Robj, f: impl FnOnce(&mut Open) -> Result<T>) -> Result<T> {
    let writer = writer_of(x)?;
    let Ok(mut state) = writer.state.try_borrow_mut() else {
        return Err(Error::new(Kind::InvalidArgument, "the writer is in use"));
    };
    let Some(open) = state.as_mut() else {
        return Err(Error::new(Kind::Closed, "the writer is closed"));
    };
    let res = f(open);
    if res.is_err() {
        // Dropping the AtomicFile removes the temporary file.
        state.take();
    }
    res
}

/// Opens a save to `path`: validates all tensors (as `write_file_()` does,
/// so the same errors come before any file is created), creates the
/// temporary file beside `path` and writes the header. Tensors are encoded
/// on `threads` threads (0: the default).
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn writer_open_(
    path: &str,
    tensors: List,
    names: Robj,
    dtypes: Robj,
    shapes: List,
    permute: Robj,
    meta_keys: Robj,
    meta_values: Robj,
    threads: i32,
) -> Robj {
    to_r((|| {
        let (items, layout) = plan(&tensors, &names, &dtypes, &shapes, &permute, &meta_keys, &meta_values)?;
        let specs: Vec<TensorSpec> = items.into_iter().map(|i| i.spec).collect();
        let mut file = AtomicFile::create(std::path::Path::new(path))?;
        file.file()?.write_all(&layout.prefix).map_err(|e| Error::io(&e, "can't write the file"))?;
        let open = Open {
            file,
            specs,
            offsets: layout.offsets,
            prefix_len: layout.prefix.len(),
            next: 0,
            threads: threads_from_r(threads),
        };
        Ok(ExternalPtr::new(Writer { state: RefCell::new(Some(open)) }).into())
    })())
}

/// Appends tensor `i` (0-based; the tensors must come in order): the
/// one-element lists and vectors describe it as for `write_file_()`, and
/// must match what `writer_open_()` was given. Returns the bytes written so
/// far, header included.
/// @noRd
#[extendr]
fn writer_write_(w: Robj, i: f64, tensor: List, name: Robj, dtype: Robj, shape: List, permute: Robj) -> Robj {
    to_r(with_writer(&w, |open| {
        if i.fract() != 0.0 || i < 0.0 || i as usize != open.next || open.next >= open.specs.len() {
            return Err(Error::new(Kind::InvalidArgument, "tensors must be written once each, in order"));
        }
        let item = items(&tensor, &name, &dtype, &shape, &permute)?;
        let [item] = item.as_slice() else {
            return Err(Error::new(Kind::InvalidArgument, "one tensor must be written at a time"));
        };
        let want = &open.specs[open.next];
        if item.spec.name != want.name || item.spec.dtype != want.dtype || item.spec.shape != want.shape {
            return Err(Error::tensor(
                Kind::InvalidArgument,
                &item.spec.name,
                format!("tensor `{}` is not the one the file was opened for", item.spec.name),
            ));
        }
        let file = open.file.file()?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let werr = |e: std::io::Error| Error::io(&e, "can't write the file");
        let mut buf = Vec::new();
        encode_blocks(item, &mut buf, open.threads, |b| out.write_all(b).map_err(werr))?;
        out.flush().map_err(werr)?;
        let end = open.offsets[open.next].1;
        open.next += 1;
        Ok(Robj::from(open.prefix_len.saturating_add(end) as f64))
    }))
}

/// Finishes a save: checks that every tensor was written, flushes (and with
/// `sync`, fsyncs) the file and renames it over the target. Returns the file
/// size.
/// @noRd
#[extendr]
fn writer_commit_(w: Robj, sync: bool) -> Robj {
    to_r((|| {
        let writer = writer_of(&w)?;
        let Ok(mut state) = writer.state.try_borrow_mut() else {
            return Err(Error::new(Kind::InvalidArgument, "the writer is in use"));
        };
        let Some(open) = state.take() else {
            return Err(Error::new(Kind::Closed, "the writer is closed"));
        };
        if open.next != open.specs.len() {
            return Err(Error::new(
                Kind::InvalidArgument,
                format!("only {} of the {} tensors were written", open.next, open.specs.len()),
            ));
        }
        let size = open.prefix_len.saturating_add(open.offsets.last().map_or(0, |o| o.1));
        open.file.commit_polling(sync, &mut robj::check_interrupt_now)?;
        Ok(Robj::from(size as f64))
    })())
}

/// Abandons a save, removing its temporary file; harmless after a commit
/// or a previous abort. Returns whether a save was abandoned.
/// @noRd
#[extendr]
fn writer_abort_(w: Robj) -> Robj {
    to_r((|| {
        let writer = writer_of(&w)?;
        let Ok(mut state) = writer.state.try_borrow_mut() else {
            return Err(Error::new(Kind::InvalidArgument, "the writer is in use"));
        };
        Ok(Robj::from(state.take().is_some()))
    })())
}

extendr_module! {
    mod progress;
    fn writer_open_;
    fn writer_write_;
    fn writer_commit_;
    fn writer_abort_;
}
