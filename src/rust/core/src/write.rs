//! The write engine: every save goes through it, whatever the output (a
//! file written atomically, a buffer in memory, a stream) and wherever the
//! tensors come from (values converted by the kernels, bytes as stored, or
//! bytes the caller hands over piece by piece).
//!
//! A [`Writer`] is opened with the tensors' descriptions and the metadata,
//! which fix the header, so everything the header needs is validated before
//! a byte is written. It then writes the tensors in the order of the data
//! section: [`Writer::write`] encodes the tensors whose input it has, in
//! blocks, up to a byte budget (so a caller can show progress between
//! calls), and stops at a tensor whose bytes the caller supplies with
//! [`Writer::put`]. [`Writer::finish`] checks that every tensor was
//! written and returns the sink, which the caller commits
//! ([`FileSink::commit`]) or drops (a file sink dropped uncommitted leaves
//! no file behind).
//!
//! With two or more threads, a writer thread hands each block to the sink
//! while the calling thread (and helpers) encode the next one.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::convert::{self, encode_with, n_rows, row_len, EncodeError, Num, Rounding, Src};
use crate::dtype::Dtype;
use crate::error::{Error, Kind, Result};
use crate::format::{self, TensorSpec};
use crate::io::{start_writeback, sync_polling, AtomicFile};
use crate::recode::{self, RecodeError};
use crate::Poll;

/// Bytes encoded between two polls, and gathered before a write.
const BLOCK: usize = 4 << 20;
/// Blocks below this size are encoded on one thread.
const PARALLEL_MIN_BLOCK: usize = 1 << 20;
/// Bytes between two writeback starts of a file sink.
const WRITEBACK: u64 = 32 << 20;

/// Where a file's bytes go, in order.
pub trait Sink: Send {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]) -> Result<()>;
}

/// A file written atomically: a temporary file beside the target, renamed
/// over it by [`FileSink::commit`]; dropped uncommitted, it leaves no file.
pub struct FileSink {
    file: AtomicFile,
    sync: bool,
    written: u64,
    flushed: u64,
}

impl FileSink {
    /// Creates the temporary file for `target`. With `sync`, the data is
    /// flushed to disk before the rename, and disk writes start as it is
    /// written so the final flush has less to do.
    pub fn create(target: &Path, sync: bool) -> Result<FileSink> {
        Ok(FileSink {
            file: AtomicFile::create(target)?,
            sync,
            written: 0,
            flushed: 0,
        })
    }

    /// Flushes (with `sync`, to disk) and renames the file over its target;
    /// `poll` is called while the flush runs.
    pub fn commit(self, poll: Poll<'_>) -> Result<()> {
        self.file.commit_polling(self.sync, poll)
    }
}

impl Sink for FileSink {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.file()?;
        file.write_all(bytes)
            .map_err(|e| Error::io(&e, "can't write the file"))?;
        self.written += bytes.len() as u64;
        if self.sync && self.written - self.flushed >= WRITEBACK {
            start_writeback(file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(())
    }
}

/// A file written in place from a byte offset: the file a connection
/// writes, whose owner may write more after this file. Nothing is renamed
/// (the connection refers to this file), and a failure leaves the bytes
/// written so far, as a failed write to a connection does.
pub struct PlacedSink {
    file: File,
    sync: bool,
    written: u64,
    flushed: u64,
    start: u64,
}

impl PlacedSink {
    /// Opens the regular file at `path` for writing at byte `at`, which must
    /// be its size: the bytes before are left alone, and a file of another
    /// size is not the one the caller meant. With `sync`, the data is
    /// flushed to disk by [`PlacedSink::commit`].
    pub fn open(path: &Path, at: u64, sync: bool) -> Result<PlacedSink> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(&e, "can't open the file for writing"))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(&e, "can't stat the file"))?;
        if !meta.is_file() || meta.len() != at {
            return Err(Error::new(
                Kind::Io,
                format!(
                    "the file is not a regular file of {at} bytes (it has {})",
                    meta.len()
                ),
            ));
        }
        file.seek(SeekFrom::Start(at))
            .map_err(|e| Error::io(&e, "can't seek in the file"))?;
        Ok(PlacedSink {
            file,
            sync,
            written: 0,
            flushed: 0,
            start: at,
        })
    }

    /// Flushes the data (with `sync`, to disk); `poll` is called while the
    /// flush to disk runs.
    pub fn commit(mut self, poll: Poll<'_>) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| Error::io(&e, "can't write the file"))?;
        if self.sync {
            sync_polling(&self.file, poll)?;
        }
        Ok(())
    }
}

impl Sink for PlacedSink {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(&e, "can't write the file"))?;
        self.written += bytes.len() as u64;
        if self.sync && self.written - self.flushed >= WRITEBACK {
            start_writeback(
                &self.file,
                self.start + self.flushed,
                self.written - self.flushed,
            );
            self.flushed = self.written;
        }
        Ok(())
    }
}

/// A whole file in memory the caller allocated at its final size
/// ([`Writer::file_len`]).
pub struct MemSink<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> MemSink<'a> {
    /// A sink filling `out` from its start.
    pub fn new(out: &'a mut [u8]) -> MemSink<'a> {
        MemSink { out, pos: 0 }
    }
}

impl Sink for MemSink<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .filter(|&e| e <= self.out.len());
        let Some(end) = end else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: the output buffer is too small",
            ));
        };
        self.out[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

/// A stream's pending bytes, which the caller takes (and sends on) after
/// each call.
impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Where one tensor's bytes come from.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// Values in R's column-major order, converted to the dtype by the
    /// kernels: rounded to nearest, or refused unless the dtype holds them
    /// exactly.
    Values(Src<'a>, Rounding),
    /// The bytes as stored (row-major, little-endian) in the given dtype:
    /// written as they are when it is the tensor's, else converted to the
    /// tensor's dtype element by element ([`recode`]).
    Bytes(&'a [u8], Dtype),
    /// Bytes of the given dtype that the caller hands over with
    /// [`Writer::put`] when the tensor's turn comes (a framework's tensor,
    /// fetched one at a time), converted as for [`Input::Bytes`].
    Later(Dtype),
}

/// A file being written: its header is fixed, and the tensors follow in
/// the order of the data section.
pub struct Writer<S: Sink> {
    sink: S,
    st: State,
}

/// Where a [`Writer`] is: everything but its sink.
struct State {
    specs: Vec<TensorSpec>,
    /// Each tensor's `(begin, end)` in the data section, in the caller's order.
    offsets: Vec<(usize, usize)>,
    /// The tensors (positions in `specs`) in the order of the data section.
    order: Vec<usize>,
    prefix_len: usize,
    /// Position in `order` of the tensor being written.
    pos: usize,
    /// Of that tensor: outer rows encoded (values), or elements converted
    /// (bytes of another dtype); and bytes written.
    rows_done: usize,
    bytes_done: usize,
    /// Of a tensor whose bytes the caller puts in another dtype: the bytes
    /// taken, and those that don't make a whole group of elements yet.
    in_done: usize,
    carry: Vec<u8>,
    /// Bytes handed to the sink, header included.
    written: usize,
    threads: usize,
}

impl<S: Sink> Writer<S> {
    /// Validates the tensors' descriptions and the metadata, builds the
    /// header (see [`format::layout`]) and writes it to `sink`. Tensors are
    /// encoded with up to `threads` threads.
    pub fn new(
        specs: Vec<TensorSpec>,
        metadata: Option<&[(String, String)]>,
        sink: S,
        threads: usize,
    ) -> Result<Writer<S>> {
        Writer::start(specs, metadata, sink, threads, true)
    }

    /// A writer of the data section of `specs` alone, without a header:
    /// the bytes of a block of a file whose header is written elsewhere
    /// (see [`crate::placed`]), in the order of the data section.
    pub fn headless(specs: Vec<TensorSpec>, sink: S, threads: usize) -> Result<Writer<S>> {
        Writer::start(specs, None, sink, threads, false)
    }

    fn start(
        specs: Vec<TensorSpec>,
        metadata: Option<&[(String, String)]>,
        mut sink: S,
        threads: usize,
        header: bool,
    ) -> Result<Writer<S>> {
        let layout = format::layout(&specs, metadata)?;
        if layout.file_len().is_none() {
            return Err(Error::new(Kind::Overflow, "the file size overflows"));
        }
        let prefix_len = if header {
            sink.put(&layout.prefix)?;
            layout.prefix.len()
        } else {
            0
        };
        let st = State {
            specs,
            offsets: layout.offsets,
            order: layout.order,
            prefix_len,
            pos: 0,
            rows_done: 0,
            bytes_done: 0,
            in_done: 0,
            carry: Vec::new(),
            written: prefix_len,
            threads: threads.max(1),
        };
        Ok(Writer { sink, st })
    }

    /// The size of the whole file in bytes.
    pub fn file_len(&self) -> usize {
        self.st.prefix_len + self.st.offsets.iter().map(|o| o.1).max().unwrap_or(0)
    }

    /// Bytes written so far, header included.
    pub fn written(&self) -> usize {
        self.st.written
    }

    /// Each tensor's size in bytes, in the caller's order.
    pub fn sizes(&self) -> Vec<usize> {
        self.st.offsets.iter().map(|&(b, e)| e - b).collect()
    }

    /// The tensor (its position in the caller's order) whose bytes come
    /// next, or `None` when all were written.
    pub fn current(&mut self) -> Option<usize> {
        self.st.advance_if_done();
        self.st.current()
    }

    /// Bytes of the current tensor still to come, in its own dtype (all of
    /// them until some are written), or `None` when all were written.
    pub fn left(&mut self) -> Option<usize> {
        let i = self.current()?;
        let (b, e) = self.st.offsets[i];
        Some(e - b - self.st.bytes_done)
    }

    /// The sink, for callers that drain it between calls (a stream).
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// The same writer, where it is, with `sink` getting the bytes from
    /// here on; and the sink it had.
    pub fn with_sink<T: Sink>(self, sink: T) -> (Writer<T>, S) {
        (Writer { sink, st: self.st }, self.sink)
    }

    /// Writes tensors from `inputs` (one per tensor, in the caller's order),
    /// continuing where the writer is, until about `budget` bytes of data
    /// were written, every tensor is, or the next tensor's input is
    /// [`Input::Later`]. Returns the bytes written so far, header included.
    /// `poll` is called after each block.
    pub fn write(&mut self, inputs: &[Input<'_>], budget: usize, poll: Poll<'_>) -> Result<usize> {
        let st = &mut self.st;
        st.check_inputs(inputs)?;
        st.advance_if_done();
        if st.threads <= 1 || !st.worth_a_thread(inputs, budget) {
            let sink = &mut self.sink;
            let mut emit = |b: Vec<u8>| -> Result<Vec<u8>> {
                sink.put(&b)?;
                Ok(b)
            };
            st.produce(inputs, budget, 1, &mut emit, poll)?;
        } else {
            write_pipelined(st, &mut self.sink, inputs, budget, poll)?;
        }
        Ok(st.written)
    }

    /// Appends `bytes` to the current tensor, whose input is
    /// [`Input::Later`]: the caller hands its bytes over in pieces, in
    /// order, in the dtype the input names (converted to the tensor's).
    /// More bytes than the tensor has are an error.
    pub fn put(&mut self, bytes: &[u8], from: Dtype, poll: Poll<'_>) -> Result<usize> {
        let st = &mut self.st;
        st.advance_if_done();
        let Some(i) = st.current() else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "every tensor was written already",
            ));
        };
        let spec = &st.specs[i];
        let name = &spec.name;
        let numel: usize = spec.shape.iter().product();
        let have = from.bytes_for(numel).unwrap_or(usize::MAX);
        if bytes.len() > have - st.in_done {
            return Err(Error::tensor(
                Kind::InvalidArgument,
                name,
                format!("tensor `{name}` has {have} bytes as {from}; more were given"),
            ));
        }
        st.in_done += bytes.len();
        if from == spec.dtype {
            for chunk in bytes.chunks(4 * BLOCK) {
                self.sink.put(chunk)?;
                st.bytes_done += chunk.len();
                st.written += chunk.len();
                poll()?;
            }
        } else {
            let mut pending = std::mem::take(&mut st.carry);
            pending.extend_from_slice(bytes);
            let whole = recode::group(from, spec.dtype) * from.bits() / 8;
            let usable = pending.len() / whole * whole;
            let mut out = Vec::new();
            for chunk in pending[..usable].chunks(BLOCK / whole * whole) {
                out.clear();
                st.recode_chunk(i, from, chunk, &mut out)?;
                self.sink.put(&out)?;
                poll()?;
            }
            st.carry = pending.split_off(usable);
        }
        st.advance_if_done();
        Ok(st.written)
    }

    /// Checks that every tensor was written and returns the sink.
    pub fn finish(mut self) -> Result<S> {
        let st = &mut self.st;
        st.advance_if_done();
        if let Some(i) = st.current() {
            let name = &st.specs[i].name;
            let (b, e) = st.offsets[i];
            return Err(Error::tensor(
                Kind::InvalidArgument,
                name,
                format!(
                    "tensor `{name}` got {} of its {} bytes",
                    st.bytes_done,
                    e - b
                ),
            ));
        }
        Ok(self.sink)
    }
}

/// [`Writer::write`] with a writer thread: blocks travel to it and come
/// back empty, so at most `BUFFERS` blocks exist at a time.
fn write_pipelined<S: Sink>(
    st: &mut State,
    sink: &mut S,
    inputs: &[Input<'_>],
    budget: usize,
    poll: Poll<'_>,
) -> Result<()> {
    const BUFFERS: usize = 3;
    let (to_writer, blocks) = std::sync::mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    let (to_main, spare) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<()> {
            for b in blocks {
                sink.put(&b)?;
                let _ = to_main.send(b);
            }
            Ok(())
        });
        let mut made = 1;
        // Owns the sender: dropping it ends the writer's loop.
        let mut emit = move |b: Vec<u8>| -> Result<Vec<u8>> {
            // The writer hung up: it failed, and says why below.
            to_writer
                .send(b)
                .map_err(|_| Error::new(Kind::Io, "the writer stopped"))?;
            if made < BUFFERS {
                made += 1;
                return Ok(Vec::new());
            }
            spare
                .recv()
                .map_err(|_| Error::new(Kind::Io, "the writer stopped"))
        };
        let threads = st.threads - 1;
        let produced = st.produce(inputs, budget, threads, &mut emit, poll);
        drop(emit);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::new(Kind::Io, "the writer thread panicked")));
        // A write error explains a failure to send, so it comes first.
        written?;
        produced
    })
}

impl State {
    fn current(&self) -> Option<usize> {
        self.order.get(self.pos).copied()
    }

    /// Converts `src`, the next whole groups of elements of tensor `i`
    /// given in dtype `from`, to the tensor's dtype, appending them to
    /// `out` (converted in place there: no block of their own to allocate,
    /// zero and copy again), and counts them done.
    fn recode_chunk(&mut self, i: usize, from: Dtype, src: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let spec = &self.specs[i];
        let n = src.len() * 8 / from.bits();
        let len = spec
            .dtype
            .bytes_for(n)
            .ok_or_else(|| Error::new(Kind::InvalidArgument, "internal error: a partial group"))?;
        let before = out.len();
        out.resize(before + len, 0);
        recode_into(spec, from, src, self.rows_done, &mut out[before..], 1)?;
        self.rows_done += n;
        self.bytes_done += len;
        self.written += len;
        Ok(())
    }

    /// Checks that `inputs` (one per tensor, in the caller's order) fit
    /// the tensors' descriptions: values of the right length and type,
    /// bytes of the right size.
    fn check_inputs(&self, inputs: &[Input<'_>]) -> Result<()> {
        if inputs.len() != self.specs.len() {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: one input per tensor is needed",
            ));
        }
        for ((spec, input), &(b, e)) in self.specs.iter().zip(inputs).zip(&self.offsets) {
            let name = spec.name.as_str();
            match *input {
                Input::Values(values, _) => {
                    // The layout checked that the element count fits.
                    let numel: usize = spec.shape.iter().product();
                    if values.len() != numel {
                        return Err(Error::tensor(
                            Kind::InvalidArgument,
                            name,
                            format!(
                                "tensor `{name}` has {} values but its shape needs {numel}",
                                values.len()
                            ),
                        ));
                    }
                    if matches!(values, Src::Complex(_)) && spec.dtype != Dtype::C64 {
                        return Err(Error::tensor(
                            Kind::Conversion,
                            name,
                            format!(
                                "tensor `{name}` is complex and can only be written as C64, not {}",
                                spec.dtype
                            ),
                        ));
                    }
                }
                Input::Bytes(bytes, from) => check_bytes(spec, bytes, from, e - b)?,
                Input::Later(from) => check_from(spec, from)?,
            }
        }
        Ok(())
    }

    /// Moves to the next tensor when the current one is complete (or has
    /// no bytes).
    fn advance_if_done(&mut self) {
        while let Some(i) = self.current() {
            let (b, e) = self.offsets[i];
            if self.bytes_done < e - b {
                return;
            }
            self.pos += 1;
            self.rows_done = 0;
            self.bytes_done = 0;
            self.in_done = 0;
            self.carry.clear();
        }
    }

    /// Whether the data this call would encode is worth a writer thread.
    fn worth_a_thread(&self, inputs: &[Input<'_>], budget: usize) -> bool {
        let mut total = 0usize;
        for &i in &self.order[self.pos.min(self.order.len())..] {
            if matches!(inputs[i], Input::Later(_)) || total >= budget {
                break;
            }
            let (b, e) = self.offsets[i];
            total = total.saturating_add(e - b);
            if total >= 2 * BLOCK {
                return true;
            }
        }
        false
    }

    /// Encodes blocks of the tensors, handing each full block to `emit`
    /// (which returns the buffer to use next), as [`Writer::write`]
    /// describes; the last partial block is emitted too.
    fn produce(
        &mut self,
        inputs: &[Input<'_>],
        budget: usize,
        threads: usize,
        emit: &mut dyn FnMut(Vec<u8>) -> Result<Vec<u8>>,
        poll: Poll<'_>,
    ) -> Result<()> {
        let mut buf = Vec::new();
        let mut this_call = 0usize;
        while let Some(i) = self.current() {
            if this_call >= budget {
                break;
            }
            let spec = &self.specs[i];
            let (b, e) = self.offsets[i];
            let nbytes = e - b;
            // A block of at most BLOCK bytes, less to end near the budget;
            // small tensors are gathered into one block.
            let room = BLOCK.min(budget - this_call);
            match inputs[i] {
                Input::Later(_) => break,
                Input::Bytes(bytes, from) if from != spec.dtype => {
                    // Whole groups of elements, about `room` bytes of output.
                    let g = recode::group(from, spec.dtype);
                    let numel: usize = spec.shape.iter().product();
                    let per = (room.saturating_mul(8) / (g * spec.dtype.bits())).max(1) * g;
                    let k = per.min(numel - self.rows_done);
                    let (a, z) = (
                        from.bits() * self.rows_done / 8,
                        from.bits() * (self.rows_done + k) / 8,
                    );
                    let len = spec.dtype.bytes_for(k).ok_or_else(|| {
                        Error::new(Kind::InvalidArgument, "internal error: a partial group")
                    })?;
                    if !buf.is_empty() && buf.len() + len > BLOCK {
                        buf = emit(buf)?;
                        buf.clear();
                    }
                    self.recode_chunk(i, from, &bytes[a..z], &mut buf)?;
                    this_call += len;
                }
                Input::Bytes(bytes, _) => {
                    let n = (nbytes - self.bytes_done).min(room);
                    if !buf.is_empty() && buf.len() + n > BLOCK {
                        buf = emit(buf)?;
                        buf.clear();
                    }
                    buf.extend_from_slice(&bytes[self.bytes_done..self.bytes_done + n]);
                    self.bytes_done += n;
                    self.written += n;
                    this_call += n;
                }
                Input::Values(values, rounding) => {
                    let shape = convert::kernel_shape(&spec.shape);
                    let rows = n_rows(&shape);
                    let r0 = self.rows_done;
                    let r1 = (r0 + rows_per_block(spec.dtype, &shape, room)).min(rows);
                    let len =
                        row_offset(spec.dtype, &shape, r1) - row_offset(spec.dtype, &shape, r0);
                    if !buf.is_empty() && buf.len() + len > BLOCK {
                        buf = emit(buf)?;
                        buf.clear();
                    }
                    let before = buf.len();
                    // Zeroed: the sub-byte encoders OR their bits in.
                    buf.resize(before + len, 0);
                    encode_par(
                        spec,
                        values,
                        rounding,
                        &shape,
                        r0,
                        r1,
                        &mut buf[before..],
                        threads,
                    )?;
                    self.rows_done = r1;
                    self.bytes_done += len;
                    self.written += len;
                    this_call += len;
                }
            }
            self.advance_if_done();
            if buf.len() >= BLOCK / 2 {
                buf = emit(buf)?;
                buf.clear();
                poll()?;
            }
        }
        if !buf.is_empty() {
            emit(buf)?;
        }
        Ok(())
    }
}

/// Outer rows of `shape` per block of about `bytes` output bytes (see
/// [`convert::block_rows`]: at least one row).
fn rows_per_block(dtype: Dtype, shape: &[usize], bytes: usize) -> usize {
    let row_bits = row_len(shape).saturating_mul(dtype.bits()).max(1);
    convert::block_rows(bytes.saturating_mul(8) / row_bits, dtype)
}

/// Byte offset of outer row `r` of a tensor of `dtype` and (kernel) `shape`.
fn row_offset(dtype: Dtype, shape: &[usize], r: usize) -> usize {
    r * row_len(shape) * dtype.bits() / 8
}

/// Encodes rows `[r0, r1)` of `values` into `out` (their bytes), splitting
/// the rows between up to `threads` threads.
#[allow(clippy::too_many_arguments)]
fn encode_par(
    spec: &TensorSpec,
    values: Src<'_>,
    rounding: Rounding,
    shape: &[usize],
    r0: usize,
    r1: usize,
    out: &mut [u8],
    threads: usize,
) -> Result<()> {
    let dtype = spec.dtype;
    let rows = r1 - r0;
    // Split only blocks worth a thread, into whole tiles of rows where
    // there are enough, else on byte boundaries for sub-byte dtypes.
    let align = if rows >= 2 * convert::KTILE {
        convert::KTILE
    } else if dtype.bits() % 8 != 0 {
        8
    } else {
        1
    };
    let threads = threads
        .min(out.len() / PARALLEL_MIN_BLOCK)
        .min(rows / align)
        .max(1);
    if threads == 1 {
        return encode_with(dtype, values, shape, r0, r1, out, rounding)
            .map_err(|e| conversion_error(spec, e, rounding, false));
    }
    let per = rows.div_ceil(threads).next_multiple_of(align);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = out;
    let mut a = r0;
    while a < r1 {
        let b = (a + per).min(r1);
        let (head, tail) =
            rest.split_at_mut(row_offset(dtype, shape, b) - row_offset(dtype, shape, a));
        parts.push((a, b, head));
        rest = tail;
        a = b;
    }
    let results: Vec<std::result::Result<(), EncodeError>> = std::thread::scope(|s| {
        let mut parts = parts.into_iter();
        let first = parts.next();
        let enc = move |a, b, o: &mut [u8]| encode_with(dtype, values, shape, a, b, o, rounding);
        let handles: Vec<_> = parts
            .map(|(a, b, o)| s.spawn(move || enc(a, b, o)))
            .collect();
        let mut res = vec![first.map_or(Ok(()), |(a, b, o)| enc(a, b, o))];
        for h in handles {
            res.push(h.join().unwrap_or(Err(EncodeError::Mismatch)));
        }
        res
    });
    // Every failing part reports the same first bad value of the tensor.
    match results.into_iter().find_map(|r| r.err()) {
        Some(e) => Err(conversion_error(spec, e, rounding, false)),
        None => Ok(()),
    }
}

/// A value as R would print it, for messages.
fn describe(v: Num) -> String {
    match v {
        Num::Na => "NA".to_string(),
        Num::I(i) => i.to_string(),
        // R's NA is the NaN whose low word is 1954.
        Num::F(x) if x.is_nan() && x.to_bits() & 0xffff_ffff == 1954 => "NA".to_string(),
        Num::F(x) if x.is_nan() => "NaN".to_string(),
        Num::F(x) if x.is_infinite() => if x > 0.0 { "Inf" } else { "-Inf" }.to_string(),
        // Whole numbers exactly, as far as the 64-bit integers go (2^63
        // is 9223372036854775808, just past I64).
        Num::F(x) if x.fract() == 0.0 && x.abs() < 1e20 => format!("{x:.0}"),
        Num::F(x) if x.abs() >= 1e-4 && x.abs() < 1e15 => format!("{x}"),
        Num::F(x) => format!("{x:e}"),
        Num::C(re, im) => format!("{re}{im:+}i"),
    }
}

/// Bytes of dtype `from` can be written as the tensor's dtype: any real
/// dtypes, complex only as itself.
fn check_from(spec: &TensorSpec, from: Dtype) -> Result<()> {
    if recode::supported(from, spec.dtype) {
        return Ok(());
    }
    let name = &spec.name;
    Err(Error::tensor(
        Kind::Conversion,
        name,
        format!(
            "tensor `{name}` is complex ({from}) and can only be written as {from}, not {}",
            spec.dtype
        ),
    ))
}

/// Checks that `bytes`, given in dtype `from`, are all of tensor `spec`'s:
/// `size` bytes when `from` is its dtype, else its elements in `from`.
pub(crate) fn check_bytes(spec: &TensorSpec, bytes: &[u8], from: Dtype, size: usize) -> Result<()> {
    check_from(spec, from)?;
    let name = spec.name.as_str();
    let numel: usize = spec.shape.iter().product();
    let need = if from == spec.dtype {
        Some(size)
    } else {
        from.bytes_for(numel)
    };
    if Some(bytes.len()) != need {
        return Err(Error::tensor(
            Kind::InvalidArgument,
            name,
            format!(
                "the buffer of tensor `{name}` has {} bytes but dtype {from} and its shape need {}",
                bytes.len(),
                need.map_or_else(|| "a whole number of bytes".to_string(), |n| n.to_string())
            ),
        ));
    }
    Ok(())
}

/// Elements below which [`recode_into`] converts on one thread.
const RECODE_PAR_MIN: usize = 1 << 20;

/// Converts `src`, whole groups of elements of dtype `from` (the first
/// being element `first` of tensor `spec`, for errors), into `out`, exactly
/// their size in the tensor's dtype, splitting large blocks between
/// `threads` threads. A value the dtype can't hold is the error
/// [`Writer`] gives for it.
pub fn recode_into(
    spec: &TensorSpec,
    from: Dtype,
    src: &[u8],
    first: usize,
    out: &mut [u8],
    threads: usize,
) -> Result<()> {
    let to = spec.dtype;
    let mismatch = || conversion_error(spec, EncodeError::Mismatch, Rounding::Nearest, true);
    let n = src.len() * 8 / from.bits();
    if from.bytes_for(n) != Some(src.len()) || to.bytes_for(n) != Some(out.len()) {
        return Err(mismatch());
    }
    if to.bits() < 8 {
        // The sub-byte encoders OR their bits in.
        out.fill(0);
    }
    let one = |src: &[u8], first: usize, out: &mut [u8]| {
        recode::recode(from, to, src, first, out).map_err(|e| match e {
            RecodeError::Value(bad) => {
                conversion_error(spec, EncodeError::Value(bad), Rounding::Nearest, true)
            }
            RecodeError::Mismatch => mismatch(),
        })
    };
    let g = recode::group(from, to);
    let parts = threads.min(n / RECODE_PAR_MIN).max(1);
    // Whole groups per thread, the last taking the rest.
    let per = n / parts / g * g;
    if parts == 1 || per == 0 {
        return one(src, first, out);
    }
    let (Some(src_per), Some(out_per)) = (from.bytes_for(per), to.bytes_for(per)) else {
        return Err(mismatch());
    };
    std::thread::scope(|sc| {
        // Parts 0..parts - 1 on new threads, the last (with the rest) here.
        let (mut s, mut o) = (src, out);
        let mut others = Vec::with_capacity(parts - 1);
        for k in 0..parts - 1 {
            let (s1, s2) = s.split_at(src_per);
            let (o1, o2) = o.split_at_mut(out_per);
            let at = first + k * per;
            others.push(sc.spawn(move || one(s1, at, o1)));
            (s, o) = (s2, o2);
        }
        let last = one(s, first + (parts - 1) * per, o);
        // The first error in the order of the elements.
        let mut result = Ok(());
        for h in others {
            let got = h
                .join()
                .unwrap_or_else(|_| Err(Error::new(Kind::Io, "a conversion thread panicked")));
            if result.is_ok() {
                result = got;
            }
        }
        result.and(last)
    })
}

/// The error for value `e` of tensor `spec`; `row_major`: its index counts
/// elements in the order of the tensor's bytes (a framework's tensor),
/// not R's column-major order.
fn conversion_error(
    spec: &TensorSpec,
    e: EncodeError,
    rounding: Rounding,
    row_major: bool,
) -> Error {
    let name = &spec.name;
    let dtype = spec.dtype;
    let EncodeError::Value(bad) = e else {
        return Error::tensor(
            Kind::InvalidArgument,
            name,
            format!("internal error: the values of tensor `{name}` don't match its shape"),
        );
    };
    let why = match bad.value {
        Num::Na => format!("NA can't be stored as {dtype}"),
        v if rounding == Rounding::Exact && convert::fits_rounded(dtype, v) => {
            format!("{dtype} can't hold it exactly")
        }
        Num::F(x) if dtype.is_integer() && x.is_finite() && x.fract() != 0.0 => {
            format!("{dtype} holds whole numbers only")
        }
        // A NaN (R's NA among them) only fails where the dtype has no code
        // for it: integers, BOOL, F4 and the F6 types.
        Num::F(x) if x.is_nan() => {
            format!("{} can't be stored as {dtype}", describe(bad.value))
        }
        Num::F(x) if dtype == Dtype::Bool && x.is_finite() => format!("{dtype} holds 0 and 1 only"),
        Num::I(_) if dtype == Dtype::Bool => format!("{dtype} holds 0 and 1 only"),
        _ => format!("it is out of range for {dtype}"),
    };
    Error::tensor(
        Kind::Conversion,
        name,
        format!(
            "can't convert element {}{} of tensor `{name}` (value {}): {why}",
            bad.index + 1,
            if row_major {
                " (in row-major order)"
            } else {
                ""
            },
            describe(bad.value)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{read_header, Memory, Source};

    fn spec(name: &str, dtype: Dtype, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn ok() -> impl FnMut() -> Result<()> {
        || Ok(())
    }

    #[test]
    fn recode_into_on_threads_is_the_one_thread_result_and_names_the_first_bad_element() {
        // Enough elements for three parts, not a multiple of them.
        let n = 3 * RECODE_PAR_MIN + 5;
        let t = spec("w", Dtype::BF16, &[n]);
        let mut src = Vec::with_capacity(4 * n);
        let mut x: u32 = 0x2545_f491;
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Finite values of every magnitude BF16 holds.
            src.extend_from_slice(&(x & 0xbf7f_ffff).to_le_bytes());
        }
        let (mut one, mut three) = (vec![0u8; 2 * n], vec![0u8; 2 * n]);
        recode_into(&t, Dtype::F32, &src, 0, &mut one, 1).unwrap();
        recode_into(&t, Dtype::F32, &src, 0, &mut three, 3).unwrap();
        assert_eq!(one, three);
        // Elements past BF16's largest in the second and third parts: the
        // error names the first, counted from `first`.
        for k in [2 * RECODE_PAR_MIN + 7, RECODE_PAR_MIN + 3] {
            src[4 * k..4 * k + 4].copy_from_slice(&f32::MAX.to_le_bytes());
        }
        let e = recode_into(&t, Dtype::F32, &src, 100, &mut three, 3).unwrap_err();
        assert_eq!(e.kind, Kind::Conversion);
        let at = format!("{}", 100 + RECODE_PAR_MIN + 3 + 1);
        assert!(e.message.contains(&at), "{}", e.message);
        // Sizes that disagree are refused.
        assert!(recode_into(&t, Dtype::F32, &src[4..], 0, &mut three, 3).is_err());
    }

    /// The bytes the writer makes for these tensors, one `write` call with
    /// budget `budget` at a time (putting `Later` bytes in pieces of 3).
    fn file_of(
        specs: &[TensorSpec],
        inputs: &[Input<'_>],
        later: &[&[u8]],
        threads: usize,
        budget: usize,
    ) -> Vec<u8> {
        let mut w = Writer::new(
            specs.to_vec(),
            Some(&[("k".into(), "v".into())]),
            Vec::new(),
            threads,
        )
        .unwrap();
        let mut calls = 0;
        while let Some(i) = w.current() {
            calls += 1;
            assert!(calls < 100_000, "no progress");
            match inputs[i] {
                Input::Later(from) => {
                    let k = specs[..i]
                        .iter()
                        .zip(inputs)
                        .filter(|(_, x)| matches!(x, Input::Later(_)))
                        .count();
                    for piece in later[k].chunks(3) {
                        w.put(piece, from, &mut ok()).unwrap();
                    }
                }
                _ => {
                    w.write(inputs, budget, &mut ok()).unwrap();
                }
            }
        }
        let len = w.file_len();
        let out = w.finish().unwrap();
        assert_eq!(out.len(), len);
        out
    }

    #[test]
    fn a_stream_continues_in_place_in_the_file_it_was_writing() {
        let dir = std::env::temp_dir().join(format!("st-placed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.bin");
        let specs = [spec("a", Dtype::U8, &[5]), spec("b", Dtype::U16, &[3])];
        let (a, b): (Vec<u8>, Vec<u8>) = ((1..=5).collect(), (10..16).collect());
        let inputs = [Input::Later(Dtype::U8), Input::Later(Dtype::U16)];
        let want = file_of(&specs, &inputs, &[&a, &b], 1, usize::MAX);
        for sync in [false, true] {
            // What the connection wrote before, then the header through it.
            let mut w = Writer::new(
                specs.to_vec(),
                Some(&[("k".into(), "v".into())]),
                Vec::new(),
                1,
            )
            .unwrap();
            let header = std::mem::take(w.sink_mut());
            let mut before = b"before".to_vec();
            before.extend_from_slice(&header);
            std::fs::write(&path, &before).unwrap();
            // A file of another size is not the connection's.
            let wrong = before.len() as u64 + 1;
            assert_eq!(
                PlacedSink::open(&path, wrong, sync).err().unwrap().kind,
                Kind::Io
            );
            let placed = PlacedSink::open(&path, before.len() as u64, sync).unwrap();
            let (mut w, rest) = w.with_sink(placed);
            assert!(rest.is_empty());
            // In the order of the data section.
            while let Some(i) = w.current() {
                let (bytes, from) = if i == 0 {
                    (&a, Dtype::U8)
                } else {
                    (&b, Dtype::U16)
                };
                w.put(bytes, from, &mut ok()).unwrap();
            }
            w.finish().unwrap().commit(&mut ok()).unwrap();
            let got = std::fs::read(&path).unwrap();
            assert_eq!(&got[..6], b"before");
            assert_eq!(got[6..], want[..]);
        }
        assert!(PlacedSink::open(&dir, 0, false).is_err(), "a directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn budgets_threads_and_pieces_give_the_same_file() {
        let big: Vec<f64> = (0..(3 << 20)).map(|i| (i % 1000) as f64 / 8.0).collect();
        let ints: Vec<i32> = (0..12).collect();
        let raw: Vec<u8> = (0..10).collect();
        let later: Vec<u8> = (100..116).collect();
        let specs = [
            spec("big", Dtype::F32, &[3 << 10, 1 << 10]),
            spec("ints", Dtype::I16, &[3, 4]),
            spec("raw", Dtype::U8, &[10]),
            spec("later", Dtype::U16, &[2, 4]),
            spec("empty", Dtype::F64, &[0, 3]),
        ];
        let inputs = [
            Input::Values(Src::Real(&big), Rounding::Nearest),
            Input::Values(Src::Integer(&ints), Rounding::Nearest),
            Input::Bytes(&raw, Dtype::U8),
            Input::Later(Dtype::U16),
            Input::Later(Dtype::F64),
        ];
        let want = file_of(&specs, &inputs, &[&later, &[]], 1, usize::MAX);
        for (threads, budget) in [(2, usize::MAX), (2, 1), (1, 5 << 20), (3, 1 << 20)] {
            assert!(
                file_of(&specs, &inputs, &[&later, &[]], threads, budget) == want,
                "{threads} {budget}"
            );
        }
        // What the reader makes of it: the header in the order given, the
        // data ordered by alignment (F64, F32, I16, U16, U8), each tensor
        // at a multiple of its element size.
        let src = Memory(&want);
        let header = read_header(&src).unwrap();
        let listed: Vec<&str> = header
            .json_order
            .iter()
            .map(|&i| header.tensors[i].name.as_str())
            .collect();
        assert_eq!(listed, ["big", "ints", "raw", "later", "empty"]);
        let stored: Vec<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(stored, ["empty", "big", "ints", "later", "raw"]);
        for t in &header.tensors {
            assert_eq!(
                (header.data_start() + t.begin) % format::alignment(t.dtype),
                0,
                "{}",
                t.name
            );
        }
        let find = |name: &str| header.tensors.iter().find(|t| t.name == name).unwrap();
        let t = find("later");
        let mut back = vec![0u8; 16];
        src.read_at(header.data_start() + t.begin, &mut back)
            .unwrap();
        assert_eq!(back, later);
        // ints is column-major in R: row 1 of the [3, 4] tensor is 0, 3, 6, 9.
        let t = find("ints");
        let mut row = vec![0u8; 8];
        src.read_at(header.data_start() + t.begin, &mut row)
            .unwrap();
        assert_eq!(row, [0, 0, 3, 0, 6, 0, 9, 0]);
    }

    #[test]
    fn integer64_values_are_written_exactly_on_any_number_of_threads() {
        // 2^21 rows x 2 columns of int64 values beyond double's 2^53.
        let n = 1 << 22;
        let vals: Vec<i64> = (0..n as i64)
            .map(|i| (1 << 60) + i * 3 - (i % 7) * (1 << 40))
            .collect();
        let specs = [spec("w", Dtype::I64, &[n / 2, 2])];
        let inputs = [Input::Values(Src::Int64(&vals), Rounding::Exact)];
        let want = file_of(&specs, &inputs, &[], 1, usize::MAX);
        for threads in [2, 3] {
            assert!(
                file_of(&specs, &inputs, &[], threads, 1 << 20) == want,
                "{threads}"
            );
        }
        let src = Memory(&want);
        let header = read_header(&src).unwrap();
        let t = &header.tensors[0];
        let mut back = vec![0i64; n];
        let task = crate::read::Task::new(
            t,
            header.data_start(),
            crate::read::ReadInto::Values(convert::SharedVector::Int64(convert::SharedSlice::new(
                &mut back,
            ))),
        )
        .unwrap();
        crate::read::read_tasks(&src, std::slice::from_ref(&task), 2, &mut ok()).unwrap();
        drop(task);
        assert!(back == vals);
        // NA (i64::MIN) is named in the error, by its position in R's order.
        let mut with_na = vals.clone();
        with_na[n - 1] = i64::MIN;
        let mut w = Writer::new(specs.to_vec(), None, Vec::new(), 2).unwrap();
        let e = w
            .write(
                &[Input::Values(Src::Int64(&with_na), Rounding::Exact)],
                usize::MAX,
                &mut ok(),
            )
            .unwrap_err();
        assert_eq!(e.kind, Kind::Conversion);
        assert!(
            e.message.contains(&format!(
                "element {n} of tensor `w` (value NA): NA can't be stored as I64"
            )),
            "{}",
            e.message
        );
    }

    #[test]
    fn inputs_that_do_not_fit_are_refused_before_their_bytes() {
        let specs = vec![spec("a", Dtype::F32, &[2]), spec("b", Dtype::U8, &[3])];
        let two = [1.0, 2.0];
        let mut w = Writer::new(specs.clone(), None, Vec::new(), 1).unwrap();
        let header = w.written();
        let e = w
            .write(
                &[
                    Input::Values(Src::Real(&two), Rounding::Nearest),
                    Input::Bytes(&[1, 2], Dtype::U8),
                ],
                usize::MAX,
                &mut ok(),
            )
            .unwrap_err();
        assert_eq!(
            (e.kind, e.tensor.as_deref()),
            (Kind::InvalidArgument, Some("b"))
        );
        assert_eq!(w.written(), header, "nothing of the data was written");
        let e = w
            .write(
                &[
                    Input::Values(Src::Complex(&[[1.0, 0.0], [0.0, 1.0]]), Rounding::Nearest),
                    Input::Later(Dtype::U8),
                ],
                usize::MAX,
                &mut ok(),
            )
            .unwrap_err();
        assert_eq!(e.kind, Kind::Conversion);
        let e = w
            .write(
                &[
                    Input::Values(Src::Real(&[1.0, 1e300]), Rounding::Nearest),
                    Input::Later(Dtype::U8),
                ],
                usize::MAX,
                &mut ok(),
            )
            .unwrap_err();
        assert_eq!(e.kind, Kind::Conversion);
        assert!(
            e.message.contains("element 2 of tensor `a` (value 1e300)"),
            "{}",
            e.message
        );
        // With `Exact`, only values the dtype holds exactly.
        let mut w = Writer::new(vec![spec("h", Dtype::F16, &[3])], None, Vec::new(), 1).unwrap();
        let e = w
            .write(
                &[Input::Values(
                    Src::Real(&[0.5, 1.0 / 3.0, 2.0]),
                    Rounding::Exact,
                )],
                usize::MAX,
                &mut ok(),
            )
            .unwrap_err();
        assert!(
            e.message.contains("element 2 of tensor `h`")
                && e.message.contains("F16 can't hold it exactly"),
            "{}",
            e.message
        );
        let mut w = Writer::new(vec![spec("h", Dtype::F16, &[3])], None, Vec::new(), 1).unwrap();
        let e = w
            .write(
                &[Input::Values(Src::Real(&[0.5, 1e6, 2.0]), Rounding::Exact)],
                usize::MAX,
                &mut ok(),
            )
            .unwrap_err();
        assert!(e.message.contains("out of range for F16"), "{}", e.message);
        let mut w = Writer::new(vec![spec("h", Dtype::F16, &[3])], None, Vec::new(), 1).unwrap();
        w.write(
            &[Input::Values(
                Src::Real(&[0.5, f64::NAN, -2.0]),
                Rounding::Exact,
            )],
            usize::MAX,
            &mut ok(),
        )
        .unwrap();
        // A tensor not finished, or given too many bytes.
        let mut w = Writer::new(specs, None, Vec::new(), 1).unwrap();
        w.write(
            &[
                Input::Values(Src::Real(&two), Rounding::Nearest),
                Input::Later(Dtype::U8),
            ],
            usize::MAX,
            &mut ok(),
        )
        .unwrap();
        assert_eq!((w.current(), w.left()), (Some(1), Some(3)));
        assert!(w.put(&[1, 2, 3, 4], Dtype::U8, &mut ok()).is_err());
        w.put(&[1, 2], Dtype::U8, &mut ok()).unwrap();
        assert_eq!(w.left(), Some(1), "what is left of the tensor");
        assert_eq!(
            w.finish().err().map(|e| e.kind),
            Some(Kind::InvalidArgument)
        );
    }

    #[test]
    fn bytes_of_another_dtype_are_converted_as_values_are() {
        // 1-D, so that the bytes' order is R's order too.
        let vals: Vec<f32> = (0..(3 << 18)).map(|i| (i as f32 - 1000.0) / 70.0).collect();
        let wide: Vec<f64> = vals.iter().map(|&v| v as f64).collect();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let n = vals.len();
        for to in [
            Dtype::BF16,
            Dtype::F16,
            Dtype::F64,
            Dtype::F8E4M3,
            Dtype::F4,
        ] {
            let specs = [spec("w", to, &[n])];
            let vals_in = [Input::Values(Src::Real(&wide), Rounding::Nearest)];
            let small: Vec<f64>;
            let vals_in = if to == Dtype::F8E4M3 || to == Dtype::F4 {
                // In range for the small formats.
                small = wide.iter().map(|v| v / 1e4).collect();
                let b: Vec<u8> = small
                    .iter()
                    .flat_map(|v| (*v as f32).to_le_bytes())
                    .collect();
                let want = file_of(
                    &specs,
                    &[Input::Values(
                        Src::Real(&small.iter().map(|v| *v as f32 as f64).collect::<Vec<_>>()),
                        Rounding::Nearest,
                    )],
                    &[],
                    1,
                    usize::MAX,
                );
                assert!(
                    file_of(&specs, &[Input::Bytes(&b, Dtype::F32)], &[], 2, 1 << 20) == want,
                    "{to}"
                );
                assert!(
                    file_of(&specs, &[Input::Later(Dtype::F32)], &[&b], 1, usize::MAX) == want,
                    "{to}"
                );
                continue;
            } else {
                vals_in
            };
            let want = file_of(&specs, &vals_in, &[], 1, usize::MAX);
            assert!(
                file_of(&specs, &[Input::Bytes(&bytes, Dtype::F32)], &[], 2, 1 << 20) == want,
                "{to}"
            );
            assert!(
                file_of(
                    &specs,
                    &[Input::Later(Dtype::F32)],
                    &[&bytes],
                    1,
                    usize::MAX
                ) == want,
                "{to}"
            );
        }
        // A value the dtype can't hold names its element in row-major order.
        let mut w = Writer::new(vec![spec("h", Dtype::F16, &[2, 2])], None, Vec::new(), 1).unwrap();
        let b: Vec<u8> = [1.0f32, 2.0, 1e6, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let e = w.put(&b, Dtype::F32, &mut ok()).unwrap_err();
        assert_eq!(e.kind, Kind::Conversion);
        assert!(
            e.message
                .contains("element 3 (in row-major order) of tensor `h` (value 1000000)"),
            "{}",
            e.message
        );
        // More bytes than the tensor has in the given dtype, or a complex
        // source written as something else, are refused.
        let mut w = Writer::new(vec![spec("h", Dtype::F16, &[2])], None, Vec::new(), 1).unwrap();
        assert_eq!(
            w.put(&[0; 12], Dtype::F32, &mut ok()).unwrap_err().kind,
            Kind::InvalidArgument
        );
        let mut w = Writer::new(vec![spec("c", Dtype::F32, &[1])], None, Vec::new(), 1).unwrap();
        let e = w
            .write(&[Input::Bytes(&[0; 8], Dtype::C64)], usize::MAX, &mut ok())
            .unwrap_err();
        assert_eq!(e.kind, Kind::Conversion);
        // Integers: I64 bytes as I32, exact or refused.
        let mut w = Writer::new(vec![spec("i", Dtype::I32, &[2])], None, Vec::new(), 1).unwrap();
        let b: Vec<u8> = [5i64, 1 << 40]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let e = w
            .write(&[Input::Bytes(&b, Dtype::I64)], usize::MAX, &mut ok())
            .unwrap_err();
        assert!(
            e.message
                .contains("value 1099511627776): it is out of range for I32"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_failing_poll_stops_the_write() {
        let big = vec![1.0; 3 << 20];
        for threads in [1, 2] {
            let mut w = Writer::new(
                vec![spec("x", Dtype::F64, &[3 << 20])],
                None,
                Vec::new(),
                threads,
            )
            .unwrap();
            let mut stop = || Err(Error::new(Kind::Interrupted, "stop"));
            let e = w
                .write(
                    &[Input::Values(Src::Real(&big), Rounding::Nearest)],
                    usize::MAX,
                    &mut stop,
                )
                .unwrap_err();
            assert_eq!(e.kind, Kind::Interrupted);
        }
    }

    #[test]
    fn memory_and_file_sinks_hold_the_same_bytes() {
        let vals: Vec<f64> = (0..1000).map(f64::from).collect();
        let specs = vec![spec("v", Dtype::BF16, &[10, 100])];
        let inputs = [Input::Values(Src::Real(&vals), Rounding::Nearest)];
        let mut w = Writer::new(specs.clone(), None, Vec::new(), 1).unwrap();
        w.write(&inputs, usize::MAX, &mut ok()).unwrap();
        let want = w.finish().unwrap();
        let mut mem = vec![0u8; want.len()];
        let mut w = Writer::new(specs.clone(), None, MemSink::new(&mut mem), 2).unwrap();
        w.write(&inputs, usize::MAX, &mut ok()).unwrap();
        w.finish().unwrap();
        assert_eq!(mem, want);
        let dir = std::env::temp_dir().join(format!("st-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.safetensors");
        let mut w = Writer::new(specs, None, FileSink::create(&path, true).unwrap(), 2).unwrap();
        w.write(&inputs, 7, &mut ok()).unwrap();
        assert!(!path.exists(), "nothing at the target before the commit");
        w.write(&inputs, usize::MAX, &mut ok()).unwrap();
        w.finish().unwrap().commit(&mut ok()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
