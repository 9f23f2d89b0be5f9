//! Conversion kernels between a tensor's row-major bytes and R's
//! column-major vectors, fused with the dtype conversion.
//!
//! A tensor of shape `(d0, ..., dn)` is stored row-major; R wants the same
//! `dim` in column-major order, so element `(i0, ..., in)` moves from
//! row-major position `rm` to column-major position `cm`. The kernels work
//! on a block of outer rows `[row0, row1)` of axis 0 at a time, so callers
//! can stream a tensor through a small buffer; they walk the first and last
//! axes in cache-sized tiles. No R types here: destinations and sources are
//! plain slices laid out as R lays out its vectors.

mod decode;
mod encode;
mod index;
mod shared;
mod transpose;

#[cfg(test)]
mod tests;

pub use decode::{
    count_i32_min, decode, decode_rows, decodes_into, r_type, DecodeStats, RType, SharedVector,
    VectorMut,
};
pub use encode::{
    encode, encode_with, fits_rounded, round_to_odd, BadValue, EncodeError, Num, Rounding, Src,
};
pub use index::{block_rows, for_each_index, is_trivial_layout, kernel_shape, n_rows, row_len};
pub use shared::SharedSlice;
pub use transpose::KTILE;
