//! The safetensors format as the R package `safetensors` reads and writes
//! it, with no R in sight: dtypes, errors, header parsing and validation,
//! file access and atomic writes, small floats, the conversion kernels,
//! slice planning, the shard index, the Hub API's description of a
//! repository, the two engines every load and every save goes through
//! ([`read`] and [`write`](mod@write)), and the helper thread that reads
//! ahead for frameworks copying tensors in pieces ([`ahead`]).
//!
//! The R binding crate (`safetensors-r`, one level up) only converts between
//! R objects and these types. Long operations take a `poll` callback, called
//! between blocks on the calling thread, through which the caller checks
//! for interrupts (and may report progress); an error from it stops the
//! operation and is returned.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod ahead;
pub mod checkpoint;
pub mod convert;
pub mod dtype;
pub mod error;
pub mod floats;
pub mod format;
pub mod hub;
pub mod io;
pub mod placed;
pub mod read;
pub mod recode;
pub mod shards;
pub mod slice;
pub mod sniff;
pub mod write;

/// The callback long operations call between blocks, on the thread that
/// started them: an error (an interrupt) stops the operation.
pub type Poll<'a> = &'a mut dyn FnMut() -> error::Result<()>;
