//! Rust core of the R package safetensors: the format, its validation, the
//! conversion kernels and file access, with thin extendr entry points.

pub mod convert;
pub mod dtype;
pub mod error;
pub mod floats;
pub mod format;
pub mod io;
mod info;
mod load;
mod open;
mod progress;
mod robj;
mod save;
pub mod shards;
pub mod slice;
mod torch;

use extendr_api::prelude::*;

extendr_module! {
    mod safetensors;
    use info;
    use load;
    use open;
    use progress;
    use save;
    use shards;
    use torch;
}
