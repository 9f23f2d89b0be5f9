//! The walk over a tensor's elements in both orders: for each element of a
//! block of outer rows, its row-major and its column-major position; and the
//! shape arithmetic the kernels and their callers share.

use super::transpose::KTILE;
use crate::dtype::Dtype;

/// Tile edge for the blocked transposition.
const TILE: usize = 32;

/// Whether row-major and column-major orders coincide (at most one
/// dimension longer than 1).
pub fn is_trivial_layout(shape: &[usize]) -> bool {
    shape.iter().filter(|&&d| d > 1).count() <= 1
}

/// Number of elements in one outer row (the product of all but the first
/// dimension; 1 for scalars and vectors).
pub fn row_len(shape: &[usize]) -> usize {
    shape.iter().skip(1).product()
}

/// The shape the kernels work on: `shape` without its axes of extent 1,
/// which change neither the row-major nor the column-major order (so a
/// `[1, 4096, 4096]` tensor is split into blocks like a matrix).
pub fn kernel_shape(shape: &[usize]) -> Vec<usize> {
    let squeezed: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
    if squeezed.is_empty() && !shape.is_empty() {
        vec![1]
    } else {
        squeezed
    }
}

/// Rows per block when a block should hold about `rows` rows: at least 1,
/// a whole number of tiles ([`KTILE`]) when that many fit, and a multiple
/// of 8 for sub-byte dtypes so every block starts on a byte boundary.
pub fn block_rows(rows: usize, dtype: Dtype) -> usize {
    if rows >= KTILE {
        rows / KTILE * KTILE
    } else if dtype.bits() % 8 != 0 {
        rows.max(1).next_multiple_of(8)
    } else {
        rows.max(1)
    }
}

/// Number of outer rows (the first dimension; 1 for a scalar).
pub fn n_rows(shape: &[usize]) -> usize {
    shape.first().copied().unwrap_or(1)
}

/// Calls `f(rm, cm)` for every element in outer rows `[row0, row1)`, where
/// `rm` is the row-major index relative to the block start and `cm` the
/// column-major index in the whole tensor.
#[inline(always)]
pub fn for_each_index(shape: &[usize], row0: usize, row1: usize, mut f: impl FnMut(usize, usize)) {
    let n = shape.len();
    // A tensor without elements has none to visit; the tiled walk below
    // would visit the first and last axes even when a middle one is empty.
    if row0 >= row1 || shape.contains(&0) {
        return;
    }
    if n <= 1 || is_trivial_layout(shape) {
        let r = row_len(shape);
        let (lo, hi) = (row0 * r, row1 * r);
        for k in lo..hi {
            f(k - lo, k);
        }
        return;
    }
    let last = shape[n - 1];
    let row = row_len(shape);
    // Column-major stride of the last axis; row-major stride of axis 0 is `row`.
    let cm_last: usize = shape[..n - 1].iter().product();
    let mut mid = Middle::new(shape);
    loop {
        let (rm_base, cm_base) = (mid.rm, mid.cm);
        let mut i0b = row0;
        while i0b < row1 {
            let i0e = (i0b + TILE).min(row1);
            let mut jb = 0;
            while jb < last {
                let je = (jb + TILE).min(last);
                for i0 in i0b..i0e {
                    let rm_row = (i0 - row0) * row + rm_base;
                    let cm_row = i0 + cm_base;
                    for j in jb..je {
                        f(rm_row + j, cm_row + j * cm_last);
                    }
                }
                jb = je;
            }
            i0b = i0e;
        }
        if !mid.advance() {
            return;
        }
    }
}

/// An index into the middle axes of a tensor (all but the first and the
/// last), stepped in row-major order, with the row-major and column-major
/// element offsets it stands for. The conversion kernels transpose one
/// (first axis x last axis) slab per middle index.
pub(super) struct Middle<'a> {
    shape: &'a [usize],
    idx: Vec<usize>,
    /// Row-major offset of the current middle index.
    pub(super) rm: usize,
    /// Column-major offset of the current middle index.
    pub(super) cm: usize,
}

impl<'a> Middle<'a> {
    /// The first middle index of `shape`, which has at least 2 axes.
    pub(super) fn new(shape: &'a [usize]) -> Middle<'a> {
        Middle {
            shape,
            idx: vec![0; shape.len().saturating_sub(2)],
            rm: 0,
            cm: 0,
        }
    }

    /// Steps to the next middle index (the last axis fastest); `false`
    /// after the last one.
    pub(super) fn advance(&mut self) -> bool {
        let n = self.shape.len();
        let last = self.shape[n - 1];
        let middle = &self.shape[1..n - 1];
        let mut k = middle.len();
        loop {
            if k == 0 {
                return false;
            }
            k -= 1;
            self.idx[k] += 1;
            // Row-major stride of middle axis k: the product of the axes
            // after it; column-major: the product of the axes before it.
            let rm_stride: usize = middle[k + 1..].iter().product::<usize>() * last;
            let cm_stride: usize = self.shape[..k + 1].iter().product();
            self.rm += rm_stride;
            self.cm += cm_stride;
            if self.idx[k] < middle[k] {
                return true;
            }
            self.rm -= rm_stride * middle[k];
            self.cm -= cm_stride * middle[k];
            self.idx[k] = 0;
        }
    }
}
