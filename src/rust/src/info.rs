//! Header facts as R lists (R/info.R and R/open.R use them): `safe_info()`'s
//! columns, and the header as safetensors 0.2.x gave it in the `"metadata"`
//! attribute.

use extendr_api::prelude::*;
use extendr_ffi::{
    R_NamesSymbol, Rf_protect, Rf_setAttrib, Rf_unprotect, SET_STRING_ELT, SET_VECTOR_ELT, SEXP,
    SEXPTYPE,
};
use safetensors_core::error::Result;
use safetensors_core::format::{Header, TensorInfo};

use crate::robj::{
    self, build, named_list_sexp, r_char, r_reals, r_set_attr, r_shape, r_strings, r_vec, AttrCache,
};

/// Checks that every name and metadata string can become an R string.
pub fn check_strings(header: &Header) -> Result<()> {
    for t in &header.tensors {
        robj::check_r_string(&t.name, "tensor name")?;
    }
    for (k, v) in header.metadata.iter().flatten() {
        robj::check_r_string(k, "metadata key")?;
        robj::check_r_string(v, "metadata value")?;
    }
    Ok(())
}

/// The parsed header as CRAN 0.2.x exposed it in the `"metadata"`
/// attribute: a named list in header order, one `list(dtype, shape,
/// data_offsets)` per tensor, and `__metadata__` as a named list of strings.
///
/// # Safety
/// Only inside [`build`]; the result is unprotected.
pub(crate) unsafe fn header_sexp(header: &Header) -> SEXP {
    // SAFETY: inside build (the caller's promise); the list, its names and
    // the shared values are protected while the entries are made (4, plus
    // the cache's, released at the end), and each new entry is stored in
    // the protected list at once, at an index below `n` (one per tensor
    // and one for `__metadata__` when the header has it).
    unsafe {
        let n = header.tensors.len() + header.metadata_position.is_some() as usize;
        let list = Rf_protect(r_vec(SEXPTYPE::VECSXP, n));
        let names = Rf_protect(r_vec(SEXPTYPE::STRSXP, n));
        // Shared by every entry: R copies them before any change.
        let entry_names = Rf_protect(r_strings(["dtype", "shape", "data_offsets"].into_iter()));
        // jsonlite turned an empty shape into list(); keep that for 0.2.x code.
        let empty_shape = Rf_protect(r_vec(SEXPTYPE::VECSXP, 0));
        let mut attrs = AttrCache::new();
        let mut pos = 0isize;
        let put_metadata = |pos: &mut isize| {
            SET_STRING_ELT(names, *pos, r_char("__metadata__"));
            let value = match &header.metadata {
                None => extendr_ffi::R_NilValue,
                Some(m) => {
                    let v = Rf_protect(r_vec(SEXPTYPE::VECSXP, m.len()));
                    for (i, (_, x)) in m.iter().enumerate() {
                        SET_VECTOR_ELT(v, i as isize, r_strings([x.as_str()].into_iter()));
                    }
                    r_set_attr(
                        v,
                        R_NamesSymbol,
                        r_strings(m.iter().map(|(k, _)| k.as_str())),
                    );
                    Rf_unprotect(1);
                    v
                }
            };
            SET_VECTOR_ELT(list, *pos, value);
            *pos += 1;
        };
        for (json_pos, &file_pos) in header.json_order.iter().enumerate() {
            if header.metadata_position == Some(json_pos) {
                put_metadata(&mut pos);
            }
            let t = &header.tensors[file_pos];
            let entry = r_vec(SEXPTYPE::VECSXP, 3);
            SET_VECTOR_ELT(list, pos, entry);
            SET_STRING_ELT(names, pos, r_char(&t.name));
            pos += 1;
            SET_VECTOR_ELT(entry, 0, attrs.dtype(t.dtype));
            SET_VECTOR_ELT(
                entry,
                1,
                if t.shape.is_empty() {
                    empty_shape
                } else {
                    r_shape(&t.shape)
                },
            );
            let offsets = if t.end <= i32::MAX as usize {
                robj::r_ints(&[t.begin as i32, t.end as i32])
            } else {
                r_reals(&[t.begin as f64, t.end as f64])
            };
            SET_VECTOR_ELT(entry, 2, offsets);
            Rf_setAttrib(entry, R_NamesSymbol, entry_names);
        }
        if header.metadata_position == Some(header.tensors.len()) {
            put_metadata(&mut pos);
        }
        Rf_setAttrib(list, R_NamesSymbol, names);
        attrs.release();
        Rf_unprotect(4);
        list
    }
}

/// Header facts for `safe_info()` and handles, one element per tensor in
/// the order the header lists them: `list(name, dtype, shape, numel, begin,
/// end, metadata, header_len, file_len, header)`, `header` as
/// [`header_sexp`] makes it.
pub fn info_robj(header: &Header, file_len: u64) -> Result<Robj> {
    let ts: Vec<&TensorInfo> = header
        .json_order
        .iter()
        .map(|&i| &header.tensors[i])
        .collect();
    let numel: Vec<f64> = ts.iter().map(|t| t.numel() as f64).collect();
    let begin: Vec<f64> = ts.iter().map(|t| t.begin as f64).collect();
    let end: Vec<f64> = ts.iter().map(|t| t.end as f64).collect();
    // SAFETY: inside build; every value is stored as soon as it is made.
    build(|| unsafe {
        named_list_sexp(
            &[
                "name",
                "dtype",
                "shape",
                "numel",
                "begin",
                "end",
                "metadata",
                "header_len",
                "file_len",
                "header",
            ],
            &mut [
                &mut || r_strings(ts.iter().map(|t| t.name.as_str())),
                &mut || r_strings(ts.iter().map(|t| t.dtype.name())),
                &mut || {
                    let v = Rf_protect(r_vec(SEXPTYPE::VECSXP, ts.len()));
                    for (i, t) in ts.iter().enumerate() {
                        SET_VECTOR_ELT(v, i as isize, r_shape(&t.shape));
                    }
                    Rf_unprotect(1);
                    v
                },
                &mut || r_reals(&numel),
                &mut || r_reals(&begin),
                &mut || r_reals(&end),
                &mut || match &header.metadata {
                    None => extendr_ffi::R_NilValue,
                    Some(m) => {
                        let v = Rf_protect(r_strings(m.iter().map(|(_, v)| v.as_str())));
                        r_set_attr(
                            v,
                            R_NamesSymbol,
                            r_strings(m.iter().map(|(k, _)| k.as_str())),
                        );
                        Rf_unprotect(1);
                        v
                    }
                },
                &mut || r_reals(&[header.header_len as f64]),
                &mut || r_reals(&[file_len as f64]),
                &mut || header_sexp(header),
            ],
        )
    })
}
