//! Hugging Face Hub paths (R/hf.R): the API's description of a repository
//! at a revision, for R.

use extendr_api::prelude::*;
use safetensors_core::error::Result;
use safetensors_core::hub::parse_revision;

use crate::robj::{named_list, raw_bytes, to_r};

/// The commit and the files of the API's answer (a raw vector of JSON):
/// `list(commit, files)`.
/// @noRd
#[extendr]
fn hf_revision_(bytes: Robj) -> Robj {
    to_r((|| -> Result<Robj> {
        let r = parse_revision(raw_bytes(&bytes)?)?;
        Ok(named_list(
            &["commit", "files"],
            vec![r.commit.into(), r.files.into()],
        ))
    })())
}

extendr_module! {
    mod hf;
    fn hf_revision_;
}
