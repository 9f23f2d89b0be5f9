//! Header inspection from a stream: the header length from the first eight
//! bytes, then the facts of a header read without the data after it.

use extendr_api::prelude::*;

use crate::format::{self, N_LEN};
use crate::load::{check_strings, info_robj, raw_bytes};
use crate::robj::to_r;

/// The header length N in the first eight bytes of a file, checked against
/// the format's limit.
/// @noRd
#[extendr]
fn header_len_(prefix: Robj) -> Robj {
    to_r((|| {
        let bytes = raw_bytes(&prefix)?;
        let n = format::header_len(bytes, u64::MAX)?;
        Ok((n as f64).into())
    })())
}

/// Header facts from the first `8 + N` bytes of a file whose data section
/// was not read; its length is taken to be what the tensors cover.
/// @noRd
#[extendr]
fn info_header_(prefix: Robj) -> Robj {
    to_r((|| {
        let bytes = raw_bytes(&prefix)?;
        let n = format::header_len(bytes, bytes.len() as u64)?;
        let header = format::parse_header_only(&bytes[N_LEN..N_LEN + n])?;
        check_strings(&header)?;
        let file_len = (N_LEN + n + header.data_len) as u64;
        Ok(info_robj(&header, file_len))
    })())
}

extendr_module! {
    mod info;
    fn header_len_;
    fn info_header_;
}
