//! The tiled transposes the decoding and encoding kernels run on: square
//! tiles, strips of columns, and prefetching the next tile's runs.

use super::shared::SharedSlice;

/// The first `W` bytes of `s`.
#[inline(always)]
pub(super) fn arr<const W: usize>(s: &[u8]) -> [u8; W] {
    let mut b = [0u8; W];
    b.copy_from_slice(&s[..W]);
    b
}

/// Edge of the square tiles the transposing kernels work in: a tile of
/// 16 x 16 elements reads 16 runs of 16 source elements and writes 16 runs
/// of 16 destination elements, whole cache lines for every element size
/// used here, so no line is fetched twice however the strides alias.
/// Callers split tensors into blocks of a multiple of this many rows.
pub const KTILE: usize = 16;

/// Transposes a `rows x cols` slab: element `(i, j)` is read at element
/// `base + i * stride + j` of `src` and written to `dbase + i + j * dstride`
/// of `out`, converted by `conv`, in tiles of 16 x 16.
///
/// Strips of 16 columns are done one after the other, each down all the
/// rows: every column then gets one long contiguous run of writes per call
/// (2 KiB for 128 rows of doubles), which matters more than anything else
/// here because the columns are far apart in memory (each run is a TLB
/// miss), while the source block stays in cache between strips.
///
/// # Safety
/// Every such read and write is in bounds, and nothing else accesses the
/// written elements meanwhile.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn transpose<const W: usize, T: Copy + Default, F: FnMut([u8; W]) -> T>(
    src: &[u8],
    base: usize,
    stride: usize,
    rows: usize,
    cols: usize,
    out: SharedSlice<'_, T>,
    dbase: usize,
    dstride: usize,
    conv: &mut F,
) {
    let mut tile = [[T::default(); KTILE]; KTILE];
    /// One tile of `ti` rows and `tj` columns; called with the constants
    /// KTILE for whole tiles, so that those loops unroll.
    ///
    /// # Safety
    /// As for `transpose`, for the tile's elements.
    #[inline(always)]
    unsafe fn one<const W: usize, T: Copy, F: FnMut([u8; W]) -> T>(
        tile: &mut [[T; KTILE]; KTILE],
        (src, base, stride, conv): (&[u8], usize, usize, &mut F),
        (out, dbase, dstride): (SharedSlice<'_, T>, usize, usize),
        (ib, jb, ti, tj): (usize, usize, usize, usize),
    ) {
        for i in 0..ti {
            let at = (base + (ib + i) * stride + jb) * W;
            let s = &src[at..at + tj * W];
            for (col, c) in tile.iter_mut().zip(s.chunks_exact(W)) {
                col[i] = conv(arr(c));
            }
        }
        for (j, col) in tile[..tj].iter().enumerate() {
            // SAFETY: the caller's contract covers (ib..ib+ti, jb + j).
            unsafe { out.part(dbase + ib + (jb + j) * dstride, ti) }.copy_from_slice(&col[..ti]);
        }
    }
    for_each_tile(rows, cols, |ib, jb, ti, tj| {
        let from = (src, base, stride, &mut *conv);
        let to = (out, dbase, dstride);
        if ti == KTILE && tj == KTILE {
            prefetch_next_tile::<true, T>(out.ptr, dbase, dstride, rows, ib, jb);
            // SAFETY: the caller's contract covers every tile.
            unsafe { one(&mut tile, from, to, (ib, jb, KTILE, KTILE)) };
        } else {
            // SAFETY: as above.
            unsafe { one(&mut tile, from, to, (ib, jb, ti, tj)) };
        }
    });
}

/// Calls `f(ib, jb, ti, tj)` for the tiles of a `rows x cols` slab, of `ti`
/// rows from `ib` and `tj` columns from `jb` (KTILE each, less at the
/// edges), in strips of KTILE columns, each down all the rows (see
/// [`transpose`]).
#[inline(always)]
fn for_each_tile(rows: usize, cols: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut jb = 0;
    while jb < cols {
        let tj = KTILE.min(cols - jb);
        let mut ib = 0;
        while ib < rows {
            let ti = KTILE.min(rows - ib);
            f(ib, jb, ti, tj);
            ib += ti;
        }
        jb += tj;
    }
}

/// Prefetches, for the tile of rows `ib..ib+16` and columns `jb..jb+16`
/// of a column-major vector at `p` (element `(i, j)` at `base + i + j *
/// stride`), the 16 column runs of the tile below it, when that tile is a
/// whole one of `rows`. Both transposes touch those runs one tile later:
/// 16 far-apart runs whose fetches otherwise stall the stores (decode) or
/// loads (encode) one after the other; this about halves the time of a
/// large transpose.
#[inline(always)]
fn prefetch_next_tile<const WRITE: bool, T>(
    p: *const T,
    base: usize,
    stride: usize,
    rows: usize,
    ib: usize,
    jb: usize,
) {
    if ib + 2 * KTILE > rows {
        return;
    }
    for j in 0..KTILE {
        prefetch_run::<WRITE, T>(p.wrapping_add(base + ib + KTILE + (jb + j) * stride), KTILE);
    }
}

/// Hints the cache to fetch the lines of `n` elements at `p`, which are
/// about to be written (`WRITE`) or read. Only a hint: it has no effect on
/// the program's results, and the processor ignores it for addresses it
/// can't translate, so `p` needn't be in bounds.
#[inline(always)]
fn prefetch_run<const WRITE: bool, T>(p: *const T, n: usize) {
    const LINE: usize = 64;
    let bytes = n * std::mem::size_of::<T>();
    if bytes == 0 {
        return;
    }
    // Every line the run touches, also when it doesn't start on a line.
    let first = (p as usize) % LINE;
    let mut off = 0;
    while off < first + bytes {
        let a = (p as *const u8).wrapping_sub(first).wrapping_add(off);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetch is a hint that never faults or changes memory.
        // (A read prefetch also serves writes: the line arrives exclusive
        // when no other core holds it.)
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(a as *const i8)
        };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above; PRFM has no architectural effect.
        unsafe {
            if WRITE {
                std::arch::asm!("prfm pstl1keep, [{0}]", in(reg) a, options(nostack, preserves_flags, readonly));
            } else {
                std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) a, options(nostack, preserves_flags, readonly));
            }
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = a;
        off += LINE;
    }
}

/// Transposes a `rows x cols` slab back to row-major: element `(i, j)` is
/// read at `xbase + i + j * xstride` of `x` and written as `W` bytes at
/// element `base + i * stride + j` of `out`, in tiles of 16 x 16, strips of
/// 16 columns down all the rows (see [`transpose`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn etranspose<const W: usize, S: Copy, F: FnMut(S) -> Option<[u8; W]>>(
    x: &[S],
    xbase: usize,
    xstride: usize,
    rows: usize,
    cols: usize,
    out: &mut [u8],
    base: usize,
    stride: usize,
    conv: &mut F,
) -> bool {
    let mut ok = true;
    let mut tile = [[[0u8; W]; KTILE]; KTILE];
    // One tile of `ti` rows and `tj` columns; called with the constants
    // KTILE for whole tiles, so that those loops unroll.
    #[inline(always)]
    fn one<const W: usize, S: Copy, F: FnMut(S) -> Option<[u8; W]>>(
        tile: &mut [[[u8; W]; KTILE]; KTILE],
        (x, xbase, xstride, conv): (&[S], usize, usize, &mut F),
        (out, base, stride): (&mut [u8], usize, usize),
        (ib, jb, ti, tj): (usize, usize, usize, usize),
    ) -> bool {
        let mut ok = true;
        for j in 0..tj {
            let at = xbase + ib + (jb + j) * xstride;
            for (row, &v) in tile.iter_mut().zip(&x[at..at + ti]) {
                let b = conv(v);
                ok &= b.is_some();
                row[j] = b.unwrap_or([0; W]);
            }
        }
        for (i, row) in tile[..ti].iter().enumerate() {
            let at = (base + (ib + i) * stride + jb) * W;
            out[at..at + tj * W].copy_from_slice(&row.as_flattened()[..tj * W]);
        }
        ok
    }
    for_each_tile(rows, cols, |ib, jb, ti, tj| {
        let from = (x, xbase, xstride, &mut *conv);
        let to = (&mut *out, base, stride);
        ok &= if ti == KTILE && tj == KTILE {
            prefetch_next_tile::<false, S>(x.as_ptr(), xbase, xstride, rows, ib, jb);
            one(&mut tile, from, to, (ib, jb, KTILE, KTILE))
        } else {
            one(&mut tile, from, to, (ib, jb, ti, tj))
        };
    });
    ok
}
