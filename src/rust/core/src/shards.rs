//! Sharded checkpoints: the `model.safetensors.index.json` file that
//! transformers writes beside its shards, read and written with serde_json.
//!
//! The index is `{"metadata": {"total_size": N, ...}, "weight_map": {tensor:
//! shard file, ...}}`. Shard files are relative to the index's directory and
//! must stay inside it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Write;
use std::path::{Component, Path};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::error::{Error, Kind, Result};
use crate::io::AtomicFile;

/// Largest index file read, in bytes (the header limit of the format).
const MAX_INDEX_SIZE: u64 = 100_000_000;

/// A parsed index.
#[derive(Debug, PartialEq)]
pub struct Index {
    /// `(tensor, shard file)` in the order of the file.
    pub weight_map: Vec<(String, String)>,
    /// The `metadata` object, in the order of the file.
    pub metadata: Vec<(String, serde_json::Value)>,
}

/// Parses an index file's text.
pub fn parse_index(text: &str) -> Result<Index> {
    let raw: RawIndex = serde_json::from_str(text)
        .map_err(|e| Error::new(Kind::InvalidIndex, format!("the index is not valid: {e}")))?;
    let Some(weight_map) = raw.weight_map else {
        return Err(Error::new(
            Kind::InvalidIndex,
            "the index has no `weight_map`",
        ));
    };
    let mut seen = HashSet::with_capacity(weight_map.len());
    for (name, file) in &weight_map {
        if !seen.insert(name.as_str()) {
            return Err(Error::tensor(
                Kind::InvalidIndex,
                name,
                format!("tensor `{name}` appears more than once in the weight map"),
            ));
        }
        check_shard_path(file)?;
    }
    Ok(Index {
        weight_map,
        metadata: raw.metadata.unwrap_or_default(),
    })
}

/// A shard file must be a relative path that stays in the index's
/// directory: no root, no `..`.
pub fn check_shard_path(file: &str) -> Result<()> {
    let p = Path::new(file);
    let ok = !file.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && p.components().any(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            Kind::InvalidIndex,
            format!("shard file `{file}` is not a relative path inside the index's directory"),
        ))
    }
}

/// The key of an index's `metadata` that holds the random id of the save
/// that wrote it (see [`crate::checkpoint`]).
pub const SAVE_ID_KEY: &str = "save_id";

impl Index {
    /// The id of the save that wrote this index, if it has one: 32
    /// lower-case hexadecimal digits (anything else is ignored).
    pub fn save_id(&self) -> Option<&str> {
        let (_, v) = self.metadata.iter().find(|(k, _)| k == SAVE_ID_KEY)?;
        let id = v.as_str()?;
        (id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then_some(id)
    }

    /// The shard files, each once, in the order of the weight map.
    pub fn files(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.weight_map
            .iter()
            .map(|(_, f)| f.as_str())
            .filter(|f| seen.insert(*f))
            .collect()
    }
}

/// The name under which the save `id` writes shard `file` (a path relative
/// to the index's directory) until it renames it into place:
/// `dir/.name.<id>.tmp`. Readers of an index with that id read it there
/// while it exists.
pub fn pending_name(file: &str, id: &str) -> String {
    match file.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.{name}.{id}.tmp"),
        None => format!(".{file}.{id}.tmp"),
    }
}

/// Serializes an index as transformers does: keys sorted, two-space indent,
/// a final newline; with `save_id`, the metadata holds it (see
/// [`SAVE_ID_KEY`]).
pub fn format_index(
    total_size: u64,
    weight_map: &[(String, String)],
    save_id: Option<&str>,
) -> Result<Vec<u8>> {
    let mut map = BTreeMap::new();
    for (name, file) in weight_map {
        if map.insert(name.as_str(), file.as_str()).is_some() {
            return Err(Error::tensor(
                Kind::DuplicateName,
                name,
                format!("tensor name `{name}` appears more than once"),
            ));
        }
    }
    let mut metadata = serde_json::Map::new();
    metadata.insert("total_size".to_string(), total_size.into());
    if let Some(id) = save_id {
        metadata.insert(SAVE_ID_KEY.to_string(), id.into());
    }
    let index = serde_json::json!({
        "metadata": metadata,
        "weight_map": map,
    });
    let mut out = serde_json::to_vec_pretty(&index)
        .map_err(|e| Error::new(Kind::InvalidArgument, format!("can't write the index: {e}")))?;
    out.push(b'\n');
    Ok(out)
}

// ---- JSON decoding -------------------------------------------------------

struct RawIndex {
    weight_map: Option<Vec<(String, String)>>,
    metadata: Option<Vec<(String, serde_json::Value)>>,
}

impl<'de> Deserialize<'de> for RawIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<RawIndex, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawIndex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object with a `weight_map`")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawIndex, A::Error> {
                let mut out = RawIndex {
                    weight_map: None,
                    metadata: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "weight_map" => {
                            if out.weight_map.is_some() {
                                return Err(de::Error::duplicate_field("weight_map"));
                            }
                            out.weight_map = Some(map.next_value::<Ordered<String>>()?.0);
                        }
                        "metadata" => {
                            if out.metadata.is_some() {
                                return Err(de::Error::duplicate_field("metadata"));
                            }
                            out.metadata = map
                                .next_value::<Option<Ordered<serde_json::Value>>>()?
                                .map(|o| o.0);
                        }
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object as `(key, value)` pairs in file order, repeats kept.
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Ordered<T>, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Ordered<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Reads and parses the index file at `path` (at most 100,000,000 bytes
/// of UTF-8 JSON).
pub fn read_index(path: &Path) -> Result<Index> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(&e, "can't open the index"))?;
    if meta.len() > MAX_INDEX_SIZE {
        return Err(Error::new(
            Kind::InvalidIndex,
            "the index is larger than 100,000,000 bytes",
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(&e, "can't read the index"))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::new(
            Kind::InvalidIndex,
            format!("the index is not valid UTF-8: {e}"),
        )
    })?;
    parse_index(text)
}

/// Writes `bytes` to the file `path` atomically (an index, or a copy of
/// one).
pub fn write_index_bytes(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.file()?
        .write_all(bytes)
        .map_err(|e| Error::io(&e, "can't write the index"))?;
    file.commit(sync)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_transformers_index_in_file_order() {
        let text = r#"{
  "metadata": {"total_size": 28, "format": "pt"},
  "weight_map": {"b": "model-00002-of-00002.safetensors", "a": "model-00001-of-00002.safetensors"}
}"#;
        let idx = parse_index(text).unwrap();
        assert_eq!(
            idx.weight_map,
            vec![
                (
                    "b".to_string(),
                    "model-00002-of-00002.safetensors".to_string()
                ),
                (
                    "a".to_string(),
                    "model-00001-of-00002.safetensors".to_string()
                )
            ]
        );
        assert_eq!(idx.metadata[0].0, "total_size");
        assert_eq!(idx.metadata[0].1, serde_json::json!(28));
        // No metadata at all is fine.
        assert!(parse_index(r#"{"weight_map": {}}"#)
            .unwrap()
            .metadata
            .is_empty());
    }

    #[test]
    fn rejects_malformed_indexes() {
        let kind = |t: &str| parse_index(t).unwrap_err().kind;
        assert_eq!(kind("[]"), Kind::InvalidIndex);
        assert_eq!(kind("{}"), Kind::InvalidIndex);
        assert_eq!(kind(r#"{"weight_map": {"a": 1}}"#), Kind::InvalidIndex);
        assert_eq!(
            kind(r#"{"weight_map": {"a": "x", "a": "y"}}"#),
            Kind::InvalidIndex
        );
        assert_eq!(
            kind(r#"{"weight_map": {}, "weight_map": {}}"#),
            Kind::InvalidIndex
        );
        for bad in [
            "../x.safetensors",
            "/etc/passwd",
            "a/../../b",
            "",
            ".",
            "sub/..",
        ] {
            let text = format!(
                r#"{{"weight_map": {{"a": {}}}}}"#,
                serde_json::to_string(bad).unwrap()
            );
            assert_eq!(kind(&text), Kind::InvalidIndex, "{bad}");
        }
        assert!(parse_index(r#"{"weight_map": {"a": "sub/./x.safetensors"}}"#).is_ok());
    }

    #[test]
    fn writes_sorted_pretty_json_that_reads_back() {
        let map = vec![
            ("z".to_string(), "m-2.safetensors".to_string()),
            ("a".to_string(), "m-1.safetensors".to_string()),
        ];
        let bytes = format_index(40, &map, None).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            "{\n  \"metadata\": {\n    \"total_size\": 40\n  },\n  \"weight_map\": {\n    \"a\": \"m-1.safetensors\",\n    \"z\": \"m-2.safetensors\"\n  }\n}\n"
        );
        let back = parse_index(&text).unwrap();
        assert_eq!(back.weight_map.len(), 2);
        assert_eq!(
            format_index(1, &[map[0].clone(), map[0].clone()], None)
                .unwrap_err()
                .kind,
            Kind::DuplicateName
        );
        // A save's id goes in the metadata, and is read back only when well formed.
        let id = "0123456789abcdef0123456789abcdef";
        let text = String::from_utf8(format_index(40, &map, Some(id)).unwrap()).unwrap();
        assert!(text.starts_with("{\n  \"metadata\": {\n    \"save_id\": \"0123456789abcdef0123456789abcdef\",\n    \"total_size\": 40\n  },"), "{text}");
        assert_eq!(parse_index(&text).unwrap().save_id(), Some(id));
        for bad in [
            "\"0123\"",
            "7",
            "\"0123456789ABCDEF0123456789ABCDEF\"",
            "\"../../0123456789abcdef01234567\"",
        ] {
            let t = format!(r#"{{"metadata": {{"save_id": {bad}}}, "weight_map": {{}}}}"#);
            assert_eq!(parse_index(&t).unwrap().save_id(), None, "{bad}");
        }
        assert_eq!(
            pending_name("m-1.safetensors", id),
            format!(".m-1.safetensors.{id}.tmp")
        );
        assert_eq!(
            pending_name("sub/m-1.safetensors", id),
            format!("sub/.m-1.safetensors.{id}.tmp")
        );
    }
}
