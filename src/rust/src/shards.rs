//! Sharded checkpoints (R/shards.R): the `model.safetensors.index.json`
//! file beside the shards, read (from a file, or from bytes fetched over
//! HTTP) and written by the core.

use std::path::Path;

use extendr_api::prelude::*;
use safetensors_core::error::{Error, Kind, Result};
use safetensors_core::shards;

use crate::robj::{check_r_string, named_list, raw_bytes, to_r};

fn json_to_robj(v: &serde_json::Value) -> Robj {
    match v {
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN).into(),
        serde_json::Value::String(s) if !s.contains('\0') => s.as_str().into(),
        serde_json::Value::Bool(b) => (*b).into(),
        serde_json::Value::Null => ().into(),
        other => other.to_string().replace('\0', "\\u0000").into(),
    }
}

/// Reads the index file at `path`: `list(names, files, metadata)`.
/// @noRd
#[extendr]
fn read_index_(path: &str) -> Robj {
    to_r(shards::read_index(Path::new(path)).and_then(|index| index_robj(&index)))
}

/// Parses an index from its bytes (a raw vector, such as an index fetched
/// over HTTP): `list(names, files, metadata)`.
/// @noRd
#[extendr]
fn parse_index_(bytes: Robj) -> Robj {
    to_r((|| {
        let text = std::str::from_utf8(raw_bytes(&bytes)?).map_err(|e| {
            Error::new(
                Kind::InvalidIndex,
                format!("the index is not valid UTF-8: {e}"),
            )
        })?;
        index_robj(&shards::parse_index(text)?)
    })())
}

fn index_robj(index: &shards::Index) -> Result<Robj> {
    for (name, file) in &index.weight_map {
        check_r_string(name, "tensor name")?;
        check_r_string(file, "shard file name")?;
    }
    let names = Strings::from_values(index.weight_map.iter().map(|(n, _)| n.as_str()));
    let files = Strings::from_values(index.weight_map.iter().map(|(_, f)| f.as_str()));
    let keys: Vec<String> = index
        .metadata
        .iter()
        .map(|(k, _)| k.replace('\0', "\\0"))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values: Vec<Robj> = index
        .metadata
        .iter()
        .map(|(_, v)| json_to_robj(v))
        .collect();
    Ok(named_list(
        &["names", "files", "metadata"],
        vec![names.into(), files.into(), named_list(&keys, values)],
    ))
}

/// Writes an index file atomically: `total_size`, and each tensor of
/// `names` mapped to the shard in `files`.
/// @noRd
#[extendr]
fn write_index_(path: &str, total_size: f64, names: Robj, files: Robj, sync: bool) -> Robj {
    to_r((|| -> Result<Robj> {
        let (Some(names), Some(files)) = (names.as_str_vector(), files.as_str_vector()) else {
            return Err(Error::new(Kind::InvalidArgument, "malformed weight map"));
        };
        if names.len() != files.len() || !(total_size >= 0.0 && total_size < 2f64.powi(63)) {
            return Err(Error::new(Kind::InvalidArgument, "malformed weight map"));
        }
        let map: Vec<(String, String)> = names
            .iter()
            .zip(&files)
            .map(|(n, f)| (n.to_string(), f.to_string()))
            .collect();
        shards::write_index(Path::new(path), total_size as u64, &map, sync)?;
        Ok(().into())
    })())
}

extendr_module! {
    mod shards;
    fn read_index_;
    fn parse_index_;
    fn write_index_;
}
