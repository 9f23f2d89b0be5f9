//! A slice that several threads write at once, each its own elements: the
//! memory of an R vector that the decoding kernels fill from many threads.

use std::marker::PhantomData;

/// A slice that several threads share: a tensor's R vector as a pointer
/// and length, so that several threads can each write the elements of
/// their own outer rows (disjoint sets of elements) without holding
/// overlapping `&mut` slices.
pub struct SharedSlice<'a, T> {
    pub(super) ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<T> Clone for SharedSlice<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedSlice<'_, T> {}

// SAFETY: a `SharedSlice` is a `&mut [T]` split by rows: `decode_rows` requires
// that threads sharing one write disjoint elements, so sending it to
// another thread is sending part of a `&mut [T]`, which is Send for T: Send.
unsafe impl<T: Send> Send for SharedSlice<'_, T> {}

// SAFETY: as above; `&SharedSlice` only gives the same row-disjoint access.
unsafe impl<T: Send> Sync for SharedSlice<'_, T> {}

impl<'a, T> SharedSlice<'a, T> {
    /// Borrows `x` for the lifetime of the `SharedSlice`.
    pub fn new(x: &'a mut [T]) -> Self {
        SharedSlice {
            ptr: x.as_mut_ptr(),
            len: x.len(),
            _borrow: PhantomData,
        }
    }

    /// A `SharedSlice` over `len` elements at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` elements for `'a`
    /// (dangling but aligned when `len` is 0), and only accessed through
    /// this `SharedSlice` meanwhile.
    pub unsafe fn from_raw(ptr: *mut T, len: usize) -> Self {
        SharedSlice {
            ptr,
            len,
            _borrow: PhantomData,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The first element's address and the size in bytes.
    pub fn memory(&self) -> (*mut u8, usize) {
        (self.ptr as *mut u8, self.len * std::mem::size_of::<T>())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `[start, start + n)`.
    ///
    /// # Safety
    /// The range must be in bounds, and nothing else may access those
    /// elements while the slice lives.
    #[inline(always)]
    pub unsafe fn part(self, start: usize, n: usize) -> &'a mut [T] {
        debug_assert!(start <= self.len && n <= self.len - start);
        // SAFETY: in bounds and unaliased, as the caller guarantees; the
        // pointer comes from a live `&'a mut [T]`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), n) }
    }

    /// Writes element `i`.
    ///
    /// # Safety
    /// As for [`SharedSlice::part`] with the range `[i, i + 1)`.
    #[inline(always)]
    pub(super) unsafe fn set(self, i: usize, v: T) {
        debug_assert!(i < self.len);
        // SAFETY: as the caller guarantees.
        unsafe { self.ptr.add(i).write(v) }
    }
}
