//! A file written block by block at its offsets, in any order: the tensors
//! are declared first, which fixes the header and every tensor's place, so
//! each block (a contiguous range of rows of a tensor's first dimension)
//! can be written where it belongs as it comes, and only one block is ever
//! in memory. A file of any size is written this way without holding it.
//!
//! [`PlacedFile`] writes the header at once into an [`AtomicFile`] of the
//! file's final size, then each block with [`PlacedFile::write_block`],
//! encoding it with the write engine's kernels ([`Writer::headless`]: the
//! block is a tensor of its own whose data section is exactly the block's
//! bytes in the file) and positioned writes. It remembers which rows of
//! each tensor were written: a block that overlaps rows already written is
//! refused (kind `already_written`) before a byte is written, and a block
//! that fails midway (a value its dtype can't hold, an interrupt) counts
//! as not written, so it can be written again. [`PlacedFile::commit`]
//! refuses a file with rows not written, and otherwise renames it into
//! place; dropped uncommitted, the file leaves nothing behind.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Kind, Result};
use crate::format::{self, TensorSpec};
use crate::io::{self, start_writeback, AtomicFile};
use crate::write::{check_bytes, recode_into, Input, Sink, Writer};
use crate::Poll;

/// Bytes between two writeback starts (as the write engine's file sink).
const WRITEBACK: u64 = 32 << 20;

/// Bytes given to the sink at positions from `pos` on. With `sync`, disk
/// writes start every [`WRITEBACK`] bytes, so that dirty pages don't pile
/// up until the system throttles the writes (and the commit's flush has
/// less to do).
struct At<'a> {
    file: &'a File,
    pos: u64,
    sync: bool,
    /// Where the bytes not yet sent to disk start.
    unflushed: u64,
}

impl Sink for At<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        io::write_all_at(self.file, bytes, self.pos)
            .map_err(|e| Error::io(&e, "can't write the file"))?;
        self.pos += bytes.len() as u64;
        if self.sync && self.pos - self.unflushed >= WRITEBACK {
            start_writeback(self.file, self.unflushed, self.pos - self.unflushed);
            self.unflushed = self.pos;
        }
        Ok(())
    }
}

/// A file whose header is written and whose tensors are written in blocks,
/// in any order (see the module's documentation).
pub struct PlacedFile {
    file: AtomicFile,
    specs: Vec<TensorSpec>,
    /// Each tensor's first byte in the file, header included.
    starts: Vec<u64>,
    /// Each tensor's rows written: sorted, disjoint, non-adjacent `[a, b)`.
    done: Vec<Vec<(usize, usize)>>,
    threads: usize,
    sync: bool,
    /// A buffer lent to callers that read blocks before writing them
    /// ([`PlacedFile::take_scratch`]), so that each block does not
    /// allocate, zero and fault in a new one.
    scratch: Vec<u8>,
    /// The converted bytes of the last block of another dtype, kept for
    /// the next one.
    converted: Vec<u8>,
}

/// The rows of a tensor: the extent of its first dimension, one for a
/// scalar.
pub fn n_rows(spec: &TensorSpec) -> usize {
    spec.shape.first().copied().unwrap_or(1)
}

/// The elements of one row (of the first dimension) of a tensor.
fn row_numel(spec: &TensorSpec) -> usize {
    spec.shape.iter().skip(1).product()
}

impl PlacedFile {
    /// Validates the tensors' descriptions and the metadata, creates the
    /// temporary file for `target` (see [`AtomicFile::create`]) at the
    /// file's size, and writes the header. Blocks are encoded with up to
    /// `threads` threads; with `sync`, the data is flushed to disk at
    /// commit, and disk writes start after each block.
    pub fn create(
        target: &Path,
        specs: Vec<TensorSpec>,
        metadata: Option<&[(String, String)]>,
        threads: usize,
        sync: bool,
    ) -> Result<PlacedFile> {
        let layout = format::layout(&specs, metadata)?;
        let Some(len) = layout.file_len() else {
            return Err(Error::new(Kind::Overflow, "the file size overflows"));
        };
        let mut file = AtomicFile::create(target)?;
        let f = file.file()?;
        // Rows not written yet read as zeros; the file takes no disk space
        // for them where the file system has sparse files.
        f.set_len(len as u64)
            .map_err(|e| Error::io(&e, "can't make the file its size"))?;
        io::write_all_at(f, &layout.prefix, 0)
            .map_err(|e| Error::io(&e, "can't write the file"))?;
        let prefix = layout.prefix.len() as u64;
        let starts = layout
            .offsets
            .iter()
            .map(|&(b, _)| prefix + b as u64)
            .collect();
        let done = vec![Vec::new(); specs.len()];
        Ok(PlacedFile {
            file,
            specs,
            starts,
            done,
            threads: threads.max(1),
            sync,
            scratch: Vec::new(),
            converted: Vec::new(),
        })
    }

    /// Lends the scratch buffer (empty at first): reading each block into
    /// it and giving it back with [`PlacedFile::put_scratch`] reuses one
    /// buffer for the whole file.
    pub fn take_scratch(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.scratch)
    }

    /// Gives back the buffer [`PlacedFile::take_scratch`] lent.
    pub fn put_scratch(&mut self, buf: Vec<u8>) {
        self.scratch = buf;
    }

    /// The tensors' descriptions, in the order given.
    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    /// The rows of tensor `i` written so far.
    pub fn rows_written(&self, i: usize) -> usize {
        self.done
            .get(i)
            .map_or(0, |d| d.iter().map(|&(a, b)| b - a).sum())
    }

    /// Whether every row of tensor `i` was written (a tensor without
    /// elements always is).
    pub fn is_complete(&self, i: usize) -> bool {
        let Some(spec) = self.specs.get(i) else {
            return false;
        };
        let numel: usize = spec.shape.iter().product();
        numel == 0 || self.rows_written(i) == n_rows(spec)
    }

    /// The tensors (positions in the order given) not completely written.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.specs.len())
            .filter(|&i| !self.is_complete(i))
            .collect()
    }

    /// The description of rows `[r0, r0 + n)` of tensor `i` as a tensor of
    /// its own, and where its bytes start in the file; an error if the
    /// rows are out of range, don't start and end on byte boundaries, or
    /// overlap rows written already.
    pub fn check_block(&self, i: usize, r0: usize, n: usize) -> Result<(TensorSpec, u64)> {
        let Some(spec) = self.specs.get(i) else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: no such tensor",
            ));
        };
        let name = &spec.name;
        let rows = n_rows(spec);
        let end = r0.checked_add(n).filter(|&e| e <= rows);
        let Some(end) = end else {
            return Err(Error::tensor(
                Kind::InvalidArgument,
                name,
                format!("tensor `{name}` has {rows} rows; rows beyond them were given"),
            ));
        };
        if spec.shape.is_empty() && n != 1 {
            return Err(Error::tensor(
                Kind::InvalidArgument,
                name,
                format!("tensor `{name}` is a scalar, written whole"),
            ));
        }
        let per_row = row_numel(spec);
        let bytes_at = |r: usize| -> Option<usize> {
            r.checked_mul(per_row).and_then(|k| spec.dtype.bytes_for(k))
        };
        let (Some(off), Some(_)) = (bytes_at(r0), bytes_at(end)) else {
            return Err(Error::tensor(
                Kind::Misaligned,
                name,
                format!(
                    "rows {} to {end} of tensor `{name}` don't start and end on byte boundaries ({} is {} bits per element)",
                    r0 + 1,
                    spec.dtype,
                    spec.dtype.bits()
                ),
            ));
        };
        let numel = per_row.saturating_mul(rows);
        if numel > 0 {
            if let Some(&(a, b)) = self.done[i].iter().find(|&&(a, b)| a < end && r0 < b) {
                let (x, y) = (a.max(r0), b.min(end));
                return Err(Error::tensor(
                    Kind::AlreadyWritten,
                    name,
                    if x + 1 == y {
                        format!("row {y} of tensor `{name}` was written already")
                    } else {
                        format!(
                            "rows {} to {y} of tensor `{name}` were written already",
                            x + 1
                        )
                    },
                ));
            }
        }
        let mut shape = spec.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = n;
        }
        let block = TensorSpec {
            name: name.clone(),
            dtype: spec.dtype,
            shape,
        };
        Ok((block, self.starts[i] + off as u64))
    }

    /// Writes rows `[r0, r0 + n)` of tensor `i` from `input` (values in R's
    /// column-major order of the block, or the block's bytes in a dtype,
    /// converted to the tensor's as [`Writer`] converts them). The rows
    /// count as written only when the whole block is.
    pub fn write_block(
        &mut self,
        i: usize,
        r0: usize,
        n: usize,
        input: Input<'_>,
        poll: Poll<'_>,
    ) -> Result<()> {
        let (block, at) = self.check_block(i, r0, n)?;
        if matches!(input, Input::Later(_)) {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: a block's input must be at hand",
            ));
        }
        let (threads, sync) = (self.threads, self.sync);
        let file: &File = self.file.file()?;
        let mut sink = At {
            file,
            pos: at,
            sync,
            unflushed: at,
        };
        let sink = match input {
            // Bytes of another dtype (safe_convert()): converted on the
            // writer's threads into a buffer kept for the next block, and
            // written at once.
            Input::Bytes(bytes, from) if from != block.dtype => {
                let numel: usize = block.shape.iter().product();
                let len = block.dtype.bytes_for(numel).ok_or_else(|| {
                    Error::new(Kind::InvalidArgument, "internal error: a partial block")
                })?;
                check_bytes(&block, bytes, from, len)?;
                let mut out = std::mem::take(&mut self.converted);
                if out.len() < len {
                    out.resize(len, 0);
                }
                let first = r0.saturating_mul(row_numel(&block));
                recode_into(&block, from, bytes, first, &mut out[..len], threads)?;
                poll()?;
                sink.put(&out[..len])?;
                self.converted = out;
                sink
            }
            _ => {
                let mut w = Writer::headless(vec![block], sink, threads)?;
                w.write(&[input], usize::MAX, poll)?;
                w.finish()?
            }
        };
        if sync && sink.pos > sink.unflushed {
            start_writeback(file, sink.unflushed, sink.pos - sink.unflushed);
        }
        self.mark(i, r0, r0 + n);
        Ok(())
    }

    /// Records rows `[a, b)` of tensor `i` as written, merging ranges.
    fn mark(&mut self, i: usize, a: usize, b: usize) {
        if a == b {
            return;
        }
        let d = &mut self.done[i];
        let k = d.partition_point(|&(_, e)| e < a);
        let mut lo = a;
        let mut hi = b;
        let mut j = k;
        while j < d.len() && d[j].0 <= hi {
            lo = lo.min(d[j].0);
            hi = hi.max(d[j].1);
            j += 1;
        }
        d.splice(k..j, [(lo, hi)]);
    }

    /// Checks that every tensor was written completely, flushes the file
    /// (with `sync`, to disk, calling `poll` meanwhile) and renames it over
    /// its target.
    pub fn commit(self, poll: Poll<'_>) -> Result<()> {
        if let Some(&i) = self.missing().first() {
            let name = &self.specs[i].name;
            return Err(Error::tensor(
                Kind::InvalidArgument,
                name,
                format!(
                    "tensor `{name}` has {} of its {} rows written",
                    self.rows_written(i),
                    n_rows(&self.specs[i])
                ),
            ));
        }
        self.file.commit_polling(self.sync, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Rounding, Src};
    use crate::dtype::Dtype;
    use crate::io::test_dirs::{entries, tempdir};

    fn ok() -> impl FnMut() -> Result<()> {
        || Ok(())
    }

    fn spec(name: &str, dtype: Dtype, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    /// The file the write engine makes of whole tensors.
    fn whole(specs: &[TensorSpec], values: &[&[f64]], meta: &[(String, String)]) -> Vec<u8> {
        let inputs: Vec<Input<'_>> = values
            .iter()
            .map(|v| Input::Values(Src::Real(v), Rounding::Nearest))
            .collect();
        let mut w = Writer::new(specs.to_vec(), Some(meta), Vec::new(), 1).unwrap();
        w.write(&inputs, usize::MAX, &mut ok()).unwrap();
        w.finish().unwrap()
    }

    /// Column-major values of rows `[a, b)` of a row-major (r x c) matrix
    /// given in column-major order `v`.
    fn rows_of(v: &[f64], r: usize, c: usize, a: usize, b: usize) -> Vec<f64> {
        let mut out = Vec::new();
        for j in 0..c {
            for i in a..b {
                out.push(v[j * r + i]);
            }
        }
        out
    }

    #[test]
    fn blocks_in_any_order_make_the_file_the_engine_makes_whole() {
        let dir = tempdir("placed");
        let specs = vec![
            spec("m", Dtype::BF16, &[7, 3]),
            spec("s", Dtype::F64, &[]),
            spec("v", Dtype::I32, &[5]),
            spec("e", Dtype::F32, &[0, 4]),
        ];
        let m: Vec<f64> = (0..21).map(|i| i as f64 / 3.0).collect();
        let s = [2.5];
        let v = [1.0, -2.0, 3.0, 4.0, 5.0];
        let meta = vec![("k".to_string(), "v".to_string())];
        let want = whole(&specs, &[&m, &s, &v, &[]], &meta);
        for threads in [1, 3] {
            let target = dir.join("a.safetensors");
            let mut f =
                PlacedFile::create(&target, specs.clone(), Some(&meta), threads, true).unwrap();
            assert_eq!(f.missing(), vec![0, 1, 2]);
            let put = |f: &mut PlacedFile, i, a, b, vals: &[f64]| {
                f.write_block(
                    i,
                    a,
                    b - a,
                    Input::Values(Src::Real(vals), Rounding::Nearest),
                    &mut ok(),
                )
            };
            put(&mut f, 0, 4, 7, &rows_of(&m, 7, 3, 4, 7)).unwrap();
            put(&mut f, 2, 0, 5, &v).unwrap();
            // Overlapping rows are refused, and nothing changes.
            let err = put(&mut f, 0, 3, 5, &rows_of(&m, 7, 3, 3, 5)).unwrap_err();
            assert_eq!(err.kind, Kind::AlreadyWritten);
            assert_eq!(err.message, "row 5 of tensor `m` was written already");
            put(&mut f, 0, 0, 2, &rows_of(&m, 7, 3, 0, 2)).unwrap();
            assert_eq!(f.rows_written(0), 5);
            // A block whose values don't fit its rows is refused.
            assert!(put(&mut f, 0, 2, 4, &m[..3]).is_err());
            assert_eq!(f.missing(), vec![0, 1]);
            let err = f.check_block(0, 5, 3).expect_err("past the last row");
            assert_eq!(err.kind, Kind::InvalidArgument);
            put(&mut f, 0, 2, 4, &rows_of(&m, 7, 3, 2, 4)).unwrap();
            // The bytes as stored (F64 little-endian) for the scalar.
            let bytes = 2.5f64.to_le_bytes();
            f.write_block(1, 0, 1, Input::Bytes(&bytes, Dtype::F64), &mut ok())
                .unwrap();
            assert!(f.missing().is_empty());
            assert_eq!(f.done[0], vec![(0, 7)]);
            f.commit(&mut ok()).unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), want);
            std::fs::remove_file(&target).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_incomplete_or_dropped_file_leaves_nothing() {
        let dir = tempdir("placed");
        let target = dir.join("b.safetensors");
        let specs = vec![spec("a", Dtype::F32, &[4, 2]), spec("b", Dtype::U8, &[3])];
        let mut f = PlacedFile::create(&target, specs.clone(), None, 1, false).unwrap();
        let v = [1.0; 4];
        f.write_block(
            0,
            0,
            2,
            Input::Values(Src::Real(&v), Rounding::Nearest),
            &mut ok(),
        )
        .unwrap();
        let err = f.commit(&mut ok()).unwrap_err();
        assert_eq!(err.message, "tensor `a` has 2 of its 4 rows written");
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        // Dropped uncommitted.
        let f = PlacedFile::create(&target, specs, None, 1, false).unwrap();
        drop(f);
        assert!(entries(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_block_counts_as_not_written() {
        let dir = tempdir("placed");
        let target = dir.join("c.safetensors");
        let mut f =
            PlacedFile::create(&target, vec![spec("i", Dtype::U8, &[4])], None, 1, false).unwrap();
        let bad = [1.0, 2.0, 300.0, 4.0];
        let err = f
            .write_block(
                0,
                0,
                4,
                Input::Values(Src::Real(&bad), Rounding::Nearest),
                &mut ok(),
            )
            .unwrap_err();
        assert_eq!(err.kind, Kind::Conversion);
        assert_eq!(f.rows_written(0), 0);
        let good = [1.0, 2.0, 3.0, 4.0];
        f.write_block(
            0,
            0,
            4,
            Input::Values(Src::Real(&good), Rounding::Nearest),
            &mut ok(),
        )
        .unwrap();
        f.commit(&mut ok()).unwrap();
        let bytes = std::fs::read(&target).unwrap();
        assert_eq!(&bytes[bytes.len() - 4..], &[1, 2, 3, 4]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sub_byte_blocks_start_and_end_on_bytes() {
        let dir = tempdir("placed");
        let target = dir.join("d.safetensors");
        let f = PlacedFile::create(&target, vec![spec("q", Dtype::F4, &[6, 1])], None, 1, false)
            .unwrap();
        assert_eq!(f.check_block(0, 1, 2).unwrap_err().kind, Kind::Misaligned);
        assert_eq!(f.check_block(0, 0, 3).unwrap_err().kind, Kind::Misaligned);
        let (block, _) = f.check_block(0, 2, 2).unwrap();
        assert_eq!(block.shape, vec![2, 1]);
        assert!(f.check_block(0, 0, 4).is_ok());
        drop(f);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ranges_merge() {
        let dir = tempdir("placed");
        let target = dir.join("e.safetensors");
        let mut f =
            PlacedFile::create(&target, vec![spec("x", Dtype::U8, &[10])], None, 1, false).unwrap();
        for (a, b) in [(5, 6), (0, 2), (8, 10), (2, 5), (6, 8)] {
            f.mark(0, a, b);
        }
        assert_eq!(f.done[0], vec![(0, 10)]);
        assert!(f.is_complete(0));
        drop(f);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
