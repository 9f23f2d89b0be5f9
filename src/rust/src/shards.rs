//! Checkpoints (R/shards.R): the `model.safetensors.index.json` file beside
//! the shards, read (from a file, or from bytes fetched over HTTP), and
//! saves to a checkpoint's name, which replace it as a whole (the core's
//! `checkpoint::Save` behind an external pointer).

use std::path::Path;

use extendr_api::prelude::*;
use safetensors_core::checkpoint::Save;
use safetensors_core::error::{Error, Kind, Result};
use safetensors_core::shards;

use crate::robj::{check_interrupt_now, check_r_string, named_list, raw_bytes, to_r, Slot};
use crate::sources::{with_open, Backing};

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

/// `list(names, files, metadata, pending)`: each tensor's name and shard
/// file, the index's metadata, and for each file the name a save writes it
/// under until it renames it into place (`NA` when the index has no save
/// id, as those of other writers).
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
    let pending: Robj = match index.save_id() {
        Some(id) => Strings::from_values(
            index
                .weight_map
                .iter()
                .map(|(_, f)| shards::pending_name(f, id)),
        )
        .into(),
        None => Strings::from_values(index.weight_map.iter().map(|_| Rstr::na())).into(),
    };
    Ok(named_list(
        &["names", "files", "metadata", "pending"],
        vec![
            names.into(),
            files.into(),
            named_list(&keys, values),
            pending,
        ],
    ))
}

/// Whether the file of open handle `x` is still at `path` (see
/// `FileSource::is_at`); `FALSE` for other handles.
/// @noRd
#[extendr]
fn file_is_at_(x: Robj, path: &str) -> bool {
    with_open(&x, |open| {
        Ok(match &open.backing {
            Backing::File(f) => f.is_at(Path::new(path)),
            _ => false,
        })
    })
    .unwrap_or(false)
}

/// Runs `f` on the save of `ck` (taking it out when `take`).
fn with_save<T>(
    ck: &Robj,
    take: bool,
    f: impl FnOnce(&mut Option<Save>) -> Result<T>,
) -> Result<T> {
    Slot::<Save>::with(ck, take, "internal error: the save is over", f)
}

/// Begins a save to the checkpoint whose single file is `path`: follows
/// symbolic links, refuses FIFOs, devices and folders, locks the folder
/// (waiting for another save to it) and cleans up after killed saves.
/// Returns `list(save, target, index)`: the save (an external pointer; it
/// is abandoned, its temporary files removed, when garbage-collected
/// uncommitted), and the paths of the single file and of the index.
/// @noRd
#[extendr]
fn save_begin_(path: &str) -> Robj {
    to_r((|| {
        let save = Save::begin_unless_held(Path::new(path), &mut check_interrupt_now)?;
        let target = save.target().to_string_lossy().into_owned();
        let index = save.index_path().to_string_lossy().into_owned();
        let ptr = Slot::new_ptr(save);
        Ok(named_list(
            &["save", "target", "index"],
            vec![ptr, target.into(), index.into()],
        ))
    })())
}

/// Whether a save of this process holds the folder of the file `path`
/// (an open block writer's; see `Save::begin_unless_held`).
/// @noRd
#[extendr]
fn folder_held_(path: &str) -> bool {
    Save::is_held(Path::new(path))
}

/// The name of shard `k` of `n` and the path to write it to:
/// `list(name, temp)`.
/// @noRd
#[extendr]
fn save_shard_(ck: Robj, k: f64, n: f64) -> Robj {
    to_r(with_save(&ck, false, |save| {
        let Some(save) = save.as_mut() else {
            return Err(Error::new(Kind::Closed, "internal error: the save is over"));
        };
        let name = save.shard_name(k as usize, n as usize);
        let temp = save.shard_temp(&name).to_string_lossy().into_owned();
        Ok(named_list(
            &["name", "temp"],
            vec![name.into(), temp.into()],
        ))
    }))
}

/// Commits a single-file save (the file was just renamed into place).
/// @noRd
#[extendr]
fn save_commit_single_(ck: Robj) -> Robj {
    to_r(with_save(&ck, true, |save| {
        if let Some(save) = save.take() {
            save.commit_single();
        }
        Ok(().into())
    }))
}

/// Commits a sharded save: its index maps each tensor of `names` to the
/// shard in `files` and says `total_size`.
/// @noRd
#[extendr]
fn save_commit_shards_(ck: Robj, names: Robj, files: Robj, total_size: f64, sync: bool) -> Robj {
    to_r(with_save(&ck, true, |save| {
        let (Some(names), Some(files)) = (names.as_str_vector(), files.as_str_vector()) else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: malformed weight map",
            ));
        };
        if names.len() != files.len() || !(total_size >= 0.0 && total_size < 2f64.powi(63)) {
            return Err(Error::new(
                Kind::InvalidArgument,
                "internal error: malformed weight map",
            ));
        }
        let map: Vec<(String, String)> = names
            .iter()
            .zip(&files)
            .map(|(n, f)| (n.to_string(), f.to_string()))
            .collect();
        match save.take() {
            Some(save) => save.commit_shards(&map, total_size as u64, sync)?,
            None => return Err(Error::new(Kind::Closed, "internal error: the save is over")),
        }
        Ok(().into())
    }))
}

/// Abandons a save, removing its temporary files and releasing the
/// folder; harmless after a commit. Returns whether a save was abandoned.
/// @noRd
#[extendr]
fn save_abort_(ck: Robj) -> Robj {
    Slot::<Save>::drop_value(&ck).into()
}

extendr_module! {
    mod shards;
    fn read_index_;
    fn parse_index_;
    fn file_is_at_;
    fn save_begin_;
    fn folder_held_;
    fn save_shard_;
    fn save_commit_single_;
    fn save_commit_shards_;
    fn save_abort_;
}
