//! The R bindings of the safetensors core (crate `safetensors-core`): glue
//! only, one module per R file of the same name (R/load.R and load.rs, and
//! so on), plus `robj` (the R API made safe) and `decimal` (64-bit integers
//! as decimal strings). See ARCHITECTURE.md.

#![deny(unsafe_op_in_unsafe_fn)]

mod convert;
mod decimal;
mod download;
mod dtypes;
mod frameworks;
mod hf;
mod info;
mod load;
mod open;
mod robj;
mod shards;
mod slice;
mod sources;
mod tensors;
mod write;
mod writer;

use extendr_api::prelude::*;

extendr_module! {
    mod safetensors;
    use convert;
    use download;
    use dtypes;
    use frameworks;
    use hf;
    use load;
    use open;
    use shards;
    use slice;
    use sources;
    use write;
    use writer;
}
