//! Slices of one tensor: which bytes a selection needs, and reading only
//! those bytes into a new R vector.
//!
//! A selection gives, for every dimension, the indices wanted (0-based): a
//! strided range or an explicit list. The elements of the result, in
//! row-major order, come from runs of consecutive source elements: the
//! selected indices of the innermost dimension that is not wholly selected,
//! times everything inside it. [`Plan::ranges`] streams those runs, merged
//! where they touch, without materialising them; [`Cursor`] copies them into
//! consecutive buffers, from which the read engine
//! ([`crate::read::read_slice`]) decodes the result block by block. Nothing outside the tensor's byte range is ever read, and an
//! index outside a dimension is an error, never a wrap-around.

use crate::error::{Error, Kind, Result};
use crate::io::Source;

/// Largest read-ahead when the source has to be read (not mapped).
const WINDOW: usize = 1 << 20;
/// Runs separated by at most this many bytes are read with one read into
/// the window (the bytes between them are read too), and fetched with one
/// request ([`Plan::fetch_ranges`]).
pub const GAP: usize = 16 << 10;

/// The indices selected along one dimension, 0-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sel {
    /// `count` indices `start, start + step, ...` (`step >= 1`).
    Range {
        /// First index.
        start: usize,
        /// Number of indices.
        count: usize,
        /// Distance between indices.
        step: usize,
    },
    /// Explicit indices in the order wanted; repeats are allowed.
    List(Vec<usize>),
}

impl Sel {
    /// The whole of a dimension of extent `d`.
    pub fn all(d: usize) -> Sel {
        Sel::Range {
            start: 0,
            count: d,
            step: 1,
        }
    }

    /// Number of indices selected.
    pub fn len(&self) -> usize {
        match self {
            Sel::Range { count, .. } => *count,
            Sel::List(v) => v.len(),
        }
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th selected index (`i < len()`; validated ranges can't overflow).
    fn get(&self, i: usize) -> usize {
        match self {
            Sel::Range { start, step, .. } => start + i * step,
            Sel::List(v) => v[i],
        }
    }

    /// Whether this selects `0..d` in order.
    fn is_full(&self, d: usize) -> bool {
        match self {
            Sel::Range { start, count, step } => {
                *count == d && (*start == 0) && (*step == 1 || d <= 1)
            }
            Sel::List(v) => v.len() == d && v.iter().enumerate().all(|(i, &x)| i == x),
        }
    }

    /// Length of the run of consecutive indices starting at position `pos`.
    fn run_at(&self, pos: usize) -> usize {
        match self {
            Sel::Range { count, step, .. } => {
                if *step == 1 {
                    count - pos
                } else {
                    1
                }
            }
            Sel::List(v) => {
                let s = v[pos];
                let mut n = 1;
                while pos + n < v.len() && v[pos + n] == s + n {
                    n += 1;
                }
                n
            }
        }
    }

    /// Checks every index against the extent `d` of dimension `axis`.
    fn check(&self, d: usize, axis: usize, name: &str) -> Result<()> {
        let out_of_range = |i: usize| {
            Error::tensor(
                Kind::InvalidSlice,
                name,
                format!(
                    "index {} is out of range for dimension {} of tensor `{name}`, which has extent {d}",
                    i as u128 + 1,
                    axis + 1
                ),
            )
        };
        match self {
            Sel::Range { start, count, step } => {
                if *count == 0 {
                    return Ok(());
                }
                if *step == 0 {
                    return Err(Error::tensor(
                        Kind::InvalidSlice,
                        name,
                        "a slice step must be positive",
                    ));
                }
                let last = (count - 1)
                    .checked_mul(*step)
                    .and_then(|x| x.checked_add(*start));
                match last {
                    Some(l) if l < d => Ok(()),
                    Some(l) => Err(out_of_range(l)),
                    None => Err(out_of_range(usize::MAX)),
                }
            }
            Sel::List(v) => match v.iter().find(|&&i| i >= d) {
                Some(&i) => Err(out_of_range(i)),
                None => Ok(()),
            },
        }
    }
}

/// What a selection reads from a tensor and the shape it produces.
#[derive(Debug)]
pub struct Plan {
    sels: Vec<Sel>,
    /// Row-major strides of the source, in elements.
    strides: Vec<usize>,
    /// The innermost dimension that is not wholly selected (0 if all are).
    k: usize,
    /// Elements per index of dimension `k` (the product of the dimensions
    /// inside it).
    inner: usize,
    out_shape: Vec<usize>,
    out_numel: usize,
}

impl Plan {
    /// Plans selection `sels` (one per dimension) of a tensor of `shape`;
    /// `name` is for messages.
    pub fn new(shape: &[usize], sels: Vec<Sel>, name: &str) -> Result<Plan> {
        if sels.len() != shape.len() {
            return Err(Error::tensor(
                Kind::InvalidSlice,
                name,
                format!(
                    "tensor `{name}` has {} dimension{} but the slice gives {} ind{}",
                    shape.len(),
                    if shape.len() == 1 { "" } else { "s" },
                    sels.len(),
                    if sels.len() == 1 { "ex" } else { "ices" }
                ),
            ));
        }
        for (axis, (s, &d)) in sels.iter().zip(shape).enumerate() {
            s.check(d, axis, name)?;
        }
        let n = shape.len();
        let mut strides = vec![1usize; n];
        for j in (0..n.saturating_sub(1)).rev() {
            // Validated headers guarantee the tensor's numel fits.
            strides[j] = strides[j + 1] * shape[j + 1];
        }
        let k = (0..n)
            .rev()
            .find(|&j| !sels[j].is_full(shape[j]))
            .unwrap_or(0);
        let inner = if n == 0 { 1 } else { strides[k] };
        let out_shape: Vec<usize> = sels.iter().map(Sel::len).collect();
        let Some(out_numel) = out_shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
            return Err(Error::tensor(
                Kind::Overflow,
                name,
                "the slice has too many elements",
            ));
        };
        Ok(Plan {
            sels,
            strides,
            k,
            inner,
            out_shape,
            out_numel,
        })
    }

    /// Shape of the result.
    pub fn out_shape(&self) -> &[usize] {
        &self.out_shape
    }

    /// Number of elements of the result.
    pub fn out_numel(&self) -> usize {
        self.out_numel
    }

    /// The runs of source elements `(offset, length)`, in the result's
    /// row-major order, merged where one ends where the next starts.
    pub fn ranges(&self) -> Ranges<'_> {
        let empty = self.out_numel == 0;
        let outer = vec![0; self.k];
        let base = if empty { 0 } else { self.base_of(&outer) };
        Ranges {
            plan: self,
            outer,
            base,
            pos: 0,
            done: empty,
            pending: None,
            scalar: self.sels.is_empty() && !empty,
        }
    }

    /// The runs in bytes for a dtype of `bits` bits per element. For
    /// sub-byte dtypes every run must start and end on a byte boundary.
    pub fn byte_ranges(&self, bits: usize, name: &str) -> Result<ByteRanges<'_>> {
        if bits % 8 != 0 {
            for (off, len) in self.ranges() {
                if (off * bits) % 8 != 0 || (len * bits) % 8 != 0 {
                    return Err(Error::tensor(
                        Kind::Misaligned,
                        name,
                        format!(
                            "the slice of tensor `{name}` does not start and end on byte boundaries, \
                             which {bits}-bit elements need"
                        ),
                    ));
                }
            }
        }
        Ok(ByteRanges {
            inner: self.ranges(),
            bits,
        })
    }

    /// The byte ranges `(offset, length)` relative to the tensor start that
    /// reading this selection through a [`Cursor`] touches, for a source
    /// that must be fetched first: the runs of [`Plan::byte_ranges`] in
    /// increasing order, those less than [`GAP`] bytes apart merged (the
    /// cursor reads such gaps through), repeats fetched once.
    pub fn fetch_ranges(&self, bits: usize, name: &str) -> Result<Vec<(usize, usize)>> {
        let mut runs: Vec<(usize, usize)> =
            self.byte_ranges(bits, name)?.filter(|r| r.1 > 0).collect();
        runs.sort_unstable();
        let mut out: Vec<(usize, usize)> = Vec::new();
        for (off, len) in runs {
            // Within the tensor, whose size was checked not to overflow.
            match out.last_mut() {
                Some((o, l)) if off <= *o + *l + GAP => *l = (*l).max(off + len - *o),
                _ => out.push((off, len)),
            }
        }
        Ok(out)
    }

    fn base_of(&self, outer: &[usize]) -> usize {
        outer
            .iter()
            .enumerate()
            .map(|(j, &p)| self.sels[j].get(p) * self.strides[j])
            .sum()
    }
}

/// Iterator over the element runs of a [`Plan`].
#[derive(Clone)]
pub struct Ranges<'a> {
    plan: &'a Plan,
    /// Positions in the selections of dimensions `0..k`.
    outer: Vec<usize>,
    /// Source offset of the current outer position.
    base: usize,
    /// Position in the selection of dimension `k`.
    pos: usize,
    done: bool,
    pending: Option<(usize, usize)>,
    scalar: bool,
}

impl Ranges<'_> {
    /// The next unmerged run, advancing the odometer.
    fn next_run(&mut self) -> Option<(usize, usize)> {
        if self.done {
            return None;
        }
        if self.scalar {
            self.done = true;
            return Some((0, 1));
        }
        let p = self.plan;
        let sel = &p.sels[p.k];
        let len = sel.run_at(self.pos);
        let run = (self.base + sel.get(self.pos) * p.inner, len * p.inner);
        self.pos += len;
        if self.pos == sel.len() {
            self.pos = 0;
            // Odometer over dimensions 0..k, the last fastest.
            let mut j = p.k;
            loop {
                if j == 0 {
                    self.done = true;
                    break;
                }
                j -= 1;
                self.outer[j] += 1;
                if self.outer[j] < p.sels[j].len() {
                    break;
                }
                self.outer[j] = 0;
            }
            self.base = p.base_of(&self.outer);
        }
        Some(run)
    }
}

impl Iterator for Ranges<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        loop {
            let Some(run) = self.next_run() else {
                return self.pending.take();
            };
            match self.pending {
                Some((off, len)) if off + len == run.0 => self.pending = Some((off, len + run.1)),
                Some(prev) => {
                    self.pending = Some(run);
                    return Some(prev);
                }
                None => self.pending = Some(run),
            }
        }
    }
}

/// Iterator over the byte runs of a [`Plan`], relative to the tensor start.
#[derive(Clone)]
pub struct ByteRanges<'a> {
    inner: Ranges<'a>,
    bits: usize,
}

impl Iterator for ByteRanges<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        // Offsets and lengths are within the tensor (or a repeat of its
        // runs), whose bit size was checked not to overflow.
        self.inner
            .next()
            .map(|(off, len)| (off * self.bits / 8, len * self.bits / 8))
    }
}

/// Copies byte runs of a tensor into consecutive buffers, reading the source
/// through its memory view or through a small read-ahead window.
pub struct Cursor<'a> {
    src: &'a dyn Source,
    /// Absolute offset of the tensor's first byte.
    base: usize,
    /// The tensor's length in bytes.
    limit: usize,
    ranges: ByteRanges<'a>,
    current: Option<(usize, usize)>,
    window: Vec<u8>,
    /// Tensor-relative offset of `window[0]`.
    window_start: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over `ranges` of the tensor at absolute offset `base` with
    /// `limit` bytes.
    pub fn new(
        src: &'a dyn Source,
        base: usize,
        limit: usize,
        ranges: ByteRanges<'a>,
    ) -> Cursor<'a> {
        Cursor {
            src,
            base,
            limit,
            ranges,
            current: None,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// Fills `out` with the next `out.len()` bytes of the runs.
    pub fn fill(&mut self, out: &mut [u8]) -> Result<()> {
        let view = self.src.view(self.base, self.limit)?;
        let mut done = 0;
        while done < out.len() {
            let (off, len) = match self.current.take() {
                Some(r) => r,
                None => match self.ranges.next() {
                    Some(r) => r,
                    None => {
                        return Err(Error::new(
                            Kind::InvalidSlice,
                            "internal error: the slice ran out of bytes",
                        ))
                    }
                },
            };
            let n = len.min(out.len() - done);
            if off.checked_add(len).map_or(true, |e| e > self.limit) {
                return Err(Error::new(
                    Kind::InvalidSlice,
                    "internal error: the slice runs past its tensor",
                ));
            }
            let dst = &mut out[done..done + n];
            match view {
                Some(bytes) => dst.copy_from_slice(&bytes[off..off + n]),
                None => self.read(off, len, dst)?,
            }
            if n < len {
                self.current = Some((off + n, len - n));
            }
            done += n;
        }
        Ok(())
    }

    /// Reads the first `dst.len()` bytes of the run `(off, len)` into `dst`,
    /// through the window unless the piece is large.
    fn read(&mut self, off: usize, len: usize, dst: &mut [u8]) -> Result<()> {
        let n = dst.len();
        let inside = off >= self.window_start && off + n <= self.window_start + self.window.len();
        if !inside {
            if n >= WINDOW / 2 {
                return self.src.read_at(self.base + off, dst);
            }
            // The window covers this run and the runs after it that follow
            // closely, and nothing else.
            let mut end = off + len.min(WINDOW);
            for (o, l) in self.ranges.clone() {
                if o < end || o - end > GAP || o + l - off > WINDOW {
                    break;
                }
                end = o + l;
            }
            self.window.resize(end - off, 0);
            self.src.read_at(self.base + off, &mut self.window)?;
            self.window_start = off;
        }
        let s = off - self.window_start;
        dst.copy_from_slice(&self.window[s..s + n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Memory;

    /// Brute force: the source element of every result element, row-major.
    fn reference(shape: &[usize], sels: &[Sel]) -> Vec<usize> {
        let out: Vec<usize> = sels.iter().map(Sel::len).collect();
        let n: usize = out.iter().product();
        let mut res = Vec::with_capacity(n);
        for flat in 0..n {
            let mut rest = flat;
            let mut src = 0;
            let mut stride = 1;
            let mut idx = vec![0; out.len()];
            for j in (0..out.len()).rev() {
                idx[j] = rest % out[j];
                rest /= out[j];
            }
            for j in (0..shape.len()).rev() {
                src += sels[j].get(idx[j]) * stride;
                stride *= shape[j];
            }
            res.push(src);
        }
        res
    }

    fn expand(plan: &Plan) -> Vec<usize> {
        plan.ranges().flat_map(|(o, l)| o..o + l).collect()
    }

    /// A small deterministic generator, so failures reproduce.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n.max(1) as u64) as usize
        }
    }

    fn random_sel(rng: &mut Lcg, d: usize) -> Sel {
        match rng.next(6) {
            0 => Sel::all(d),
            1 if d > 0 => {
                let start = rng.next(d);
                let step = 1 + rng.next(3);
                let count = rng.next((d - start - 1) / step + 2);
                Sel::Range { start, count, step }
            }
            2 if d > 0 => {
                let i = rng.next(d);
                Sel::Range {
                    start: i,
                    count: 1,
                    step: 1,
                }
            }
            3 if d > 0 => Sel::List((0..rng.next(2 * d + 1)).map(|_| rng.next(d)).collect()),
            4 if d > 0 => {
                let start = rng.next(d);
                Sel::Range {
                    start,
                    count: d - start,
                    step: 1,
                }
            }
            _ => Sel::List((0..d).collect()),
        }
    }

    #[test]
    fn ranges_match_brute_force() {
        let mut rng = Lcg(42);
        let shapes: Vec<Vec<usize>> = vec![
            vec![],
            vec![1],
            vec![7],
            vec![0],
            vec![3, 4],
            vec![1, 5],
            vec![5, 1],
            vec![2, 3, 4],
            vec![4, 0, 3],
            vec![3, 1, 2, 5],
            vec![2, 2, 2, 2, 2],
        ];
        for shape in &shapes {
            for _ in 0..300 {
                let sels: Vec<Sel> = shape.iter().map(|&d| random_sel(&mut rng, d)).collect();
                let plan = Plan::new(shape, sels.clone(), "t").unwrap();
                let want = reference(shape, &sels);
                assert_eq!(expand(&plan), want, "shape {shape:?} sels {sels:?}");
                assert_eq!(plan.out_numel(), want.len());
                // Runs are maximal: no two consecutive runs touch.
                let runs: Vec<_> = plan.ranges().collect();
                for w in runs.windows(2) {
                    assert_ne!(w[0].0 + w[0].1, w[1].0, "{shape:?} {sels:?}");
                }
                assert!(runs.iter().all(|r| r.1 > 0));
            }
        }
    }

    #[test]
    fn contiguous_selections_are_one_run() {
        let shape = [10, 4, 3];
        let rows = Plan::new(
            &shape,
            vec![
                Sel::Range {
                    start: 2,
                    count: 5,
                    step: 1,
                },
                Sel::all(4),
                Sel::all(3),
            ],
            "t",
        )
        .unwrap();
        assert_eq!(rows.ranges().collect::<Vec<_>>(), vec![(24, 60)]);
        let all = Plan::new(&shape, vec![Sel::all(10), Sel::all(4), Sel::all(3)], "t").unwrap();
        assert_eq!(all.ranges().collect::<Vec<_>>(), vec![(0, 120)]);
        let col = Plan::new(
            &[3, 4],
            vec![
                Sel::all(3),
                Sel::Range {
                    start: 1,
                    count: 1,
                    step: 1,
                },
            ],
            "t",
        )
        .unwrap();
        assert_eq!(
            col.ranges().collect::<Vec<_>>(),
            vec![(1, 1), (5, 1), (9, 1)]
        );
        let scalar = Plan::new(&[], vec![], "t").unwrap();
        assert_eq!(scalar.ranges().collect::<Vec<_>>(), vec![(0, 1)]);
        assert_eq!(scalar.out_shape(), &[] as &[usize]);
    }

    #[test]
    fn out_of_range_and_rank_errors() {
        let e = Plan::new(&[3, 4], vec![Sel::List(vec![3]), Sel::all(4)], "w").unwrap_err();
        assert_eq!(e.kind, Kind::InvalidSlice);
        assert!(
            e.message
                .contains("index 4 is out of range for dimension 1"),
            "{}",
            e.message
        );
        let e = Plan::new(
            &[3, 4],
            vec![
                Sel::all(3),
                Sel::Range {
                    start: 1,
                    count: 3,
                    step: 2,
                },
            ],
            "w",
        )
        .unwrap_err();
        assert!(e.message.contains("index 6"), "{}", e.message);
        let e = Plan::new(
            &[3],
            vec![Sel::Range {
                start: 1,
                count: usize::MAX,
                step: usize::MAX,
            }],
            "w",
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::InvalidSlice);
        assert_eq!(
            Plan::new(&[3, 4], vec![Sel::all(3)], "w").unwrap_err().kind,
            Kind::InvalidSlice
        );
        assert_eq!(
            Plan::new(&[], vec![Sel::all(1)], "w").unwrap_err().kind,
            Kind::InvalidSlice
        );
        // An empty range may start anywhere.
        assert!(Plan::new(
            &[3],
            vec![Sel::Range {
                start: 9,
                count: 0,
                step: 1
            }],
            "w"
        )
        .is_ok());
    }

    #[test]
    fn sub_byte_slices_must_land_on_byte_boundaries() {
        // F4 [4, 4]: a row is 16 bits, so whole rows are aligned.
        let p = Plan::new(
            &[4, 4],
            vec![
                Sel::Range {
                    start: 1,
                    count: 2,
                    step: 1,
                },
                Sel::all(4),
            ],
            "f",
        )
        .unwrap();
        assert_eq!(
            p.byte_ranges(4, "f").unwrap().collect::<Vec<_>>(),
            vec![(2, 4)]
        );
        // One element is half a byte.
        let p = Plan::new(&[4, 4], vec![Sel::all(4), Sel::List(vec![1])], "f").unwrap();
        assert_eq!(
            p.byte_ranges(4, "f").err().map(|e| e.kind),
            Some(Kind::Misaligned)
        );
        // F4 [4, 3]: one row is 12 bits, two rows are 3 bytes.
        let two = Plan::new(
            &[4, 3],
            vec![
                Sel::Range {
                    start: 0,
                    count: 2,
                    step: 1,
                },
                Sel::all(3),
            ],
            "f",
        )
        .unwrap();
        assert_eq!(
            two.byte_ranges(4, "f").unwrap().collect::<Vec<_>>(),
            vec![(0, 3)]
        );
        let one = Plan::new(
            &[4, 3],
            vec![
                Sel::Range {
                    start: 1,
                    count: 1,
                    step: 1,
                },
                Sel::all(3),
            ],
            "f",
        )
        .unwrap();
        assert!(one.byte_ranges(4, "f").is_err());
    }

    #[test]
    fn fetched_ranges_are_all_a_cursor_reads() {
        use crate::io::Segments;
        let mut rng = Lcg(7);
        // U8 and F32 tensors (elements of 1 and 4 bytes) at offset 100 of a
        // larger source, with extents that put rows near and far apart.
        let shapes: Vec<Vec<usize>> = vec![
            vec![9],
            vec![6, 7],
            vec![40, 3000],
            vec![3, 2, 20000],
            vec![2, 1, 5],
        ];
        for shape in &shapes {
            for bits in [8usize, 32] {
                let numel: usize = shape.iter().product();
                let nbytes = numel * bits / 8;
                let bytes: Vec<u8> = (0..100 + nbytes + 50).map(|i| (i % 253) as u8).collect();
                for _ in 0..40 {
                    let sels: Vec<Sel> = shape.iter().map(|&d| random_sel(&mut rng, d)).collect();
                    let plan = Plan::new(shape, sels, "t").unwrap();
                    let ranges = plan.fetch_ranges(bits, "t").unwrap();
                    // Sorted, apart by more than GAP, inside the tensor.
                    for w in ranges.windows(2) {
                        assert!(w[1].0 > w[0].0 + w[0].1 + GAP, "{ranges:?}");
                    }
                    assert!(ranges.iter().all(|&(o, l)| l > 0 && o + l <= nbytes));
                    let parts: Vec<(usize, &[u8])> = ranges
                        .iter()
                        .map(|&(o, l)| (100 + o, &bytes[100 + o..100 + o + l]))
                        .collect();
                    let src = Segments::new(bytes.len() as u64, parts).unwrap();
                    let n = plan.out_numel() * bits / 8;
                    let mut want = vec![0u8; n];
                    let mem = Memory(&bytes);
                    Cursor::new(&mem, 100, nbytes, plan.byte_ranges(bits, "t").unwrap())
                        .fill(&mut want)
                        .unwrap();
                    let mut got = vec![0u8; n];
                    let mut cur =
                        Cursor::new(&src, 100, nbytes, plan.byte_ranges(bits, "t").unwrap());
                    for c in got.chunks_mut(5000) {
                        cur.fill(c).unwrap();
                    }
                    assert_eq!(got, want, "{shape:?}");
                }
            }
        }
        // Rows far apart are fetched apart; close ones together.
        let far = Plan::new(
            &[100, 10000],
            vec![Sel::List(vec![90, 2]), Sel::all(10000)],
            "t",
        )
        .unwrap();
        assert_eq!(
            far.fetch_ranges(8, "t").unwrap(),
            vec![(20000, 10000), (900000, 10000)]
        );
        let near = Plan::new(
            &[100, 100],
            vec![
                Sel::List(vec![5, 1, 5]),
                Sel::Range {
                    start: 0,
                    count: 2,
                    step: 1,
                },
            ],
            "t",
        )
        .unwrap();
        assert_eq!(near.fetch_ranges(8, "t").unwrap(), vec![(100, 402)]);
    }

    #[test]
    fn cursor_splits_runs_across_buffers_and_reads_only_inside_the_tensor() {
        struct Counting<'a> {
            mem: Memory<'a>,
            reads: std::cell::RefCell<Vec<(usize, usize)>>,
        }
        impl Source for Counting<'_> {
            fn len(&self) -> u64 {
                self.mem.len()
            }
            fn view(&self, _: usize, _: usize) -> Result<Option<&[u8]>> {
                Ok(None)
            }
            fn read_at(&self, off: usize, buf: &mut [u8]) -> Result<()> {
                self.reads.borrow_mut().push((off, buf.len()));
                self.mem.read_at(off, buf)
            }
        }
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        // A U8 tensor [20, 50] stored at offset 1000.
        let shape = [20usize, 50];
        let sels = vec![
            Sel::Range {
                start: 3,
                count: 4,
                step: 2,
            },
            Sel::Range {
                start: 10,
                count: 5,
                step: 1,
            },
        ];
        let want: Vec<u8> = reference(&shape, &sels)
            .iter()
            .map(|&i| bytes[1000 + i])
            .collect();
        let plan = Plan::new(&shape, sels, "t").unwrap();
        for (mapped, chunk) in [(true, 1usize), (true, 7), (false, 3), (false, 20)] {
            let src = Counting {
                mem: Memory(&bytes),
                reads: Default::default(),
            };
            let mem = Memory(&bytes);
            let s: &dyn Source = if mapped { &mem } else { &src };
            let mut cur = Cursor::new(s, 1000, 1000, plan.byte_ranges(8, "t").unwrap());
            let mut got = vec![0u8; want.len()];
            for c in got.chunks_mut(chunk) {
                cur.fill(c).unwrap();
            }
            assert_eq!(got, want);
            assert!(src
                .reads
                .borrow()
                .iter()
                .all(|&(o, n)| o >= 1000 && o + n <= 2000));
            if !mapped {
                // Rows 3..9 step 2, columns 10..15: from the first byte
                // needed to the last, in one read.
                assert_eq!(*src.reads.borrow(), vec![(1000 + 3 * 50 + 10, 6 * 50 + 5)]);
            }
        }
    }
}
