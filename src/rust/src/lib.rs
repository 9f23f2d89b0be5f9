//! The R bindings of the safetensors core (crate `safetensors-core`): glue
//! only, one module per R file of the same name (R/load.R and load.rs, and
//! so on), plus `robj` (the R API made safe) and `tensors` (the one place
//! tensors become R objects). See ARCHITECTURE.md.

#![deny(unsafe_op_in_unsafe_fn)]

mod download;
mod dtypes;
mod hf;
mod load;
mod open;
mod robj;
mod shards;
mod sources;
mod tensors;
mod torch;
mod write;

use extendr_api::prelude::*;

extendr_module! {
    mod safetensors;
    use download;
    use dtypes;
    use hf;
    use load;
    use open;
    use shards;
    use sources;
    use torch;
    use write;
}
