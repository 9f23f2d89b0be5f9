//! The safetensors container: reading, validating and writing headers.
//!
//! Accepts exactly what the reference implementation 0.8.0 accepts, with one
//! documented exception: a tensor name that appears twice in the header is
//! rejected (the reference keeps the last one silently). No R types here.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::dtype::{Dtype, NAMES};
use crate::error::{Error, Kind, Result};
use crate::sniff;

/// Largest header the format allows, in bytes (decimal, as the reference).
pub const MAX_HEADER_SIZE: usize = 100_000_000;
/// Size of the little-endian header length that starts every file.
pub const N_LEN: usize = 8;

/// One tensor's entry in a validated header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (any string, the empty one included).
    pub name: String,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape, outermost dimension first (row-major).
    pub shape: Vec<usize>,
    /// Start of its bytes, relative to the data section.
    pub begin: usize,
    /// End (exclusive) of its bytes, relative to the data section.
    pub end: usize,
}

impl TensorInfo {
    /// Number of elements (1 for a scalar). Validation guarantees no overflow.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of bytes of data.
    pub fn nbytes(&self) -> usize {
        self.end - self.begin
    }
}

/// A validated header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Tensors in file order (sorted by byte offset).
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` map, in header order, or `None` when absent or null.
    pub metadata: Option<Vec<(String, String)>>,
    /// Indices into `tensors` in the order the JSON lists them.
    pub json_order: Vec<usize>,
    /// How many tensors the JSON lists before `__metadata__`, when present.
    pub metadata_position: Option<usize>,
    /// The header length N (JSON plus padding).
    pub header_len: usize,
    /// Length of the data section in bytes.
    pub data_len: usize,
}

impl Header {
    /// Absolute file offset of the data section.
    pub fn data_start(&self) -> usize {
        N_LEN + self.header_len
    }

    /// Position of the tensor called `name`, if any.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }
}

/// How many bytes of a file's start [`header_len`] looks at, at most, to say
/// what a file that is not a safetensors file looks like.
pub const SNIFF_LEN: usize = 128;

/// Reads the header length from the first bytes of a file of `total_len`
/// bytes, checking it against the limit and the file size. `prefix` holds
/// at least the first 8 bytes (up to [`SNIFF_LEN`] help to say what a file
/// that fails looks like).
pub fn header_len(prefix: &[u8], total_len: u64) -> Result<usize> {
    let Some(first) = prefix.get(..N_LEN) else {
        return Err(Error::new(
            Kind::HeaderTooSmall,
            format!(
                "the file has {} bytes, too few for the 8-byte header length",
                prefix.len()
            ),
        ));
    };
    let mut le = [0u8; N_LEN];
    le.copy_from_slice(first);
    let n = u64::from_le_bytes(le);
    if n > MAX_HEADER_SIZE as u64 {
        if let Some(err) = sniff::not_safetensors(Kind::HeaderTooLarge, prefix) {
            return Err(err);
        }
        let hex: Vec<String> = first.iter().map(|b| format!("{b:02x}")).collect();
        return Err(Error::new(
            Kind::HeaderTooLarge,
            format!("the header length {n} exceeds the limit of 100,000,000 bytes"),
        )
        .with_hint(format!(
            "A safetensors file starts with the length of its JSON header; this one starts with the bytes {}, \
             so it is probably not a safetensors file.",
            hex.join(" ")
        )));
    }
    // n <= MAX_HEADER_SIZE, so neither the cast nor the addition can overflow.
    let n = n as usize;
    if (N_LEN + n) as u64 > total_len {
        if let Some(err) = sniff::not_safetensors(Kind::InvalidHeaderLength, prefix) {
            return Err(err);
        }
        return Err(Error::new(
            Kind::InvalidHeaderLength,
            format!("the header length {n} runs past the end of the file ({total_len} bytes)"),
        ));
    }
    Ok(n)
}

/// Parses and validates the JSON header `json` (N bytes) of a file whose data
/// section has `data_len` bytes.
pub fn parse_header(json: &[u8], data_len: usize) -> Result<Header> {
    parse_header_impl(json, Some(data_len))
}

/// Parses and validates the JSON header `json` when the length of the data
/// section is unknown (a header read from a stream): everything is checked
/// except that the tensors cover the data section exactly, whose length is
/// taken to be what the tensors cover.
pub fn parse_header_only(json: &[u8]) -> Result<Header> {
    parse_header_impl(json, None)
}

fn parse_header_impl(json: &[u8], data_len: Option<usize>) -> Result<Header> {
    let text = std::str::from_utf8(json).map_err(|e| {
        Error::new(
            Kind::InvalidHeader,
            format!("the header is not valid UTF-8: {e}"),
        )
    })?;
    let raw: RawHeader = serde_json::from_str(text).map_err(|e| {
        Error::new(
            Kind::InvalidHeader,
            format!("the header is not valid JSON: {e}"),
        )
    })?;
    if let Some(name) = raw.duplicate {
        return Err(Error::tensor(
            Kind::DuplicateName,
            &name,
            format!("tensor name `{name}` appears more than once in the header"),
        ));
    }
    validate(raw, json.len(), data_len)
}

fn validate(raw: RawHeader, header_len: usize, data_len: Option<usize>) -> Result<Header> {
    let mut order: Vec<usize> = (0..raw.tensors.len()).collect();
    // Stable sort: ties (zero-size tensors) keep their JSON order.
    order.sort_by_key(|&i| (raw.tensors[i].data_offsets.0, raw.tensors[i].data_offsets.1));
    let mut json_order = vec![0; order.len()];
    for (file_pos, &json_pos) in order.iter().enumerate() {
        json_order[json_pos] = file_pos;
    }
    let mut slots: Vec<Option<RawTensor>> = raw.tensors.into_iter().map(Some).collect();
    let mut tensors = Vec::with_capacity(order.len());
    let mut expected = 0usize;
    for &i in &order {
        let Some(t) = slots[i].take() else { continue };
        let (begin, end) = t.data_offsets;
        if begin != expected || end < begin {
            return Err(Error::tensor(
                Kind::InvalidOffset,
                &t.name,
                format!(
                    "invalid offset for tensor `{}`: data_offsets [{begin}, {end}] should start at {expected}",
                    t.name
                ),
            ));
        }
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let bits = numel.and_then(|n| n.checked_mul(t.dtype.bits()));
        let Some(bits) = bits else {
            return Err(Error::tensor(
                Kind::Overflow,
                &t.name,
                format!("the size of tensor `{}` overflows", t.name),
            ));
        };
        if bits % 8 != 0 {
            return Err(Error::tensor(
                Kind::Misaligned,
                &t.name,
                format!(
                    "tensor `{}` of dtype {} has {} element{}, which do not fill whole bytes",
                    t.name,
                    t.dtype,
                    bits / t.dtype.bits(),
                    if bits / t.dtype.bits() == 1 { "" } else { "s" }
                ),
            ));
        }
        if bits / 8 != end - begin {
            return Err(Error::tensor(
                Kind::InvalidTensorInfo,
                &t.name,
                format!(
                    "tensor `{}` has dtype {} and shape {} ({} bytes) but data_offsets [{begin}, {end}] span {} bytes",
                    t.name,
                    t.dtype,
                    ShapeFmt(&t.shape),
                    bits / 8,
                    end - begin
                ),
            ));
        }
        expected = end;
        tensors.push(TensorInfo {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
            begin,
            end,
        });
    }
    let data_len = data_len.unwrap_or(expected);
    if expected != data_len {
        return Err(Error::new(
            Kind::IncompleteBuffer,
            format!("the data section has {data_len} bytes but the tensors cover {expected}"),
        ));
    }
    Ok(Header {
        tensors,
        metadata: raw.metadata,
        json_order,
        metadata_position: raw.metadata_position,
        header_len,
        data_len,
    })
}

/// A tensor to write: name, dtype and shape; offsets follow from the order.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    /// Name, unique and not `__metadata__`.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
}

/// The serialized prefix of a file (length, JSON, padding) and the byte
/// ranges of its tensors relative to the data section.
#[derive(Debug)]
pub struct Layout {
    /// The first `8 + N` bytes of the file.
    pub prefix: Vec<u8>,
    /// `(begin, end)` for each tensor, in the order given.
    pub offsets: Vec<(usize, usize)>,
    /// The tensors (positions in the order given) in the order of the data
    /// section.
    pub order: Vec<usize>,
}

impl Layout {
    /// Total file size.
    pub fn file_len(&self) -> Option<usize> {
        let data = self.offsets.iter().map(|o| o.1).max().unwrap_or(0);
        self.prefix.len().checked_add(data)
    }
}

/// The alignment a writer gives `dtype`'s tensors, in bytes: its element
/// size, 1 for the sub-byte dtypes.
pub fn alignment(dtype: Dtype) -> usize {
    (dtype.bits() / 8).max(1)
}

/// Builds the header for `tensors`, listed in the order given, with
/// `metadata` written first and its keys sorted. The JSON is compact and
/// padded with spaces to a multiple of 8 bytes, as the reference writes it.
///
/// The data are stored back to back in order of [`alignment`], largest
/// first, and in the order given among equals (the reference writer orders
/// by dtype, largest first, then by name): as the data section starts at a
/// multiple of 8, every tensor then starts at a multiple of its element
/// size. A file whose header lists its tensors in that order (every file
/// Python's `safetensors` writes) is written again with the same bytes.
pub fn layout(tensors: &[TensorSpec], metadata: Option<&[(String, String)]>) -> Result<Layout> {
    let mut seen = HashSet::with_capacity(tensors.len());
    for t in tensors {
        if t.name == "__metadata__" {
            return Err(Error::tensor(
                Kind::InvalidArgument,
                &t.name,
                "a tensor can't be named `__metadata__`",
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(Error::tensor(
                Kind::DuplicateName,
                &t.name,
                format!("tensor name `{}` appears more than once", t.name),
            ));
        }
    }
    let mut json = Vec::with_capacity(64 + tensors.len() * 96);
    json.push(b'{');
    let mut first = true;
    if let Some(meta) = metadata {
        let mut sorted: Vec<&(String, String)> = meta.iter().collect();
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for w in sorted.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::new(
                    Kind::InvalidArgument,
                    format!("metadata key `{}` appears more than once", w[0].0),
                ));
            }
        }
        json.extend_from_slice(b"\"__metadata__\":{");
        for (i, (k, v)) in sorted.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            push_json_string(&mut json, k);
            json.push(b':');
            push_json_string(&mut json, v);
        }
        json.push(b'}');
        first = false;
    }
    // Each tensor's size first, then its offset in the order of the data.
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in tensors {
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let Some(numel) = numel else {
            return Err(Error::tensor(
                Kind::Overflow,
                &t.name,
                format!("the size of tensor `{}` overflows", t.name),
            ));
        };
        let Some(nbytes) = t.dtype.bytes_for(numel) else {
            // On write this is a bad argument, not a malformed file.
            return Err(Error::tensor(
                Kind::InvalidArgument,
                &t.name,
                format!(
                    "tensor `{}` of dtype {} has {numel} element{}, which do not fill whole bytes",
                    t.name,
                    t.dtype,
                    if numel == 1 { "" } else { "s" }
                ),
            ));
        };
        sizes.push(nbytes);
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    // A stable sort: equals keep the order given.
    order.sort_by_key(|&i| std::cmp::Reverse(alignment(tensors[i].dtype)));
    let mut offsets = vec![(0usize, 0usize); tensors.len()];
    let mut pos = 0usize;
    for &i in &order {
        let Some(end) = pos.checked_add(sizes[i]) else {
            return Err(Error::tensor(
                Kind::Overflow,
                &tensors[i].name,
                "the total size of the tensors overflows",
            ));
        };
        offsets[i] = (pos, end);
        pos = end;
    }
    for (t, &(begin, end)) in tensors.iter().zip(&offsets) {
        if !first {
            json.push(b',');
        }
        first = false;
        push_json_string(&mut json, &t.name);
        json.extend_from_slice(b":{\"dtype\":\"");
        json.extend_from_slice(t.dtype.name().as_bytes());
        json.extend_from_slice(b"\",\"shape\":[");
        for (i, d) in t.shape.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            json.extend_from_slice(d.to_string().as_bytes());
        }
        json.extend_from_slice(format!("],\"data_offsets\":[{begin},{end}]}}").as_bytes());
    }
    json.push(b'}');
    let padded = json.len().next_multiple_of(N_LEN);
    if padded > MAX_HEADER_SIZE {
        return Err(Error::new(
            Kind::HeaderTooLarge,
            format!("the header would have {padded} bytes, over the limit of 100,000,000"),
        ));
    }
    json.resize(padded, b' ');
    let mut prefix = Vec::with_capacity(N_LEN + padded);
    prefix.extend_from_slice(&(padded as u64).to_le_bytes());
    prefix.extend_from_slice(&json);
    Ok(Layout {
        prefix,
        offsets,
        order,
    })
}

/// Appends `s` as a JSON string, escaped exactly as serde_json (and so the
/// reference writer) escapes it.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json never fails on a &str written to a Vec.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

struct ShapeFmt<'a>(&'a [usize]);

impl fmt::Display for ShapeFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

// ---- JSON decoding -------------------------------------------------------

struct RawTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

#[derive(Deserialize)]
struct RawTensorFields {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

struct RawHeader {
    tensors: Vec<RawTensor>,
    metadata: Option<Vec<(String, String)>>,
    metadata_position: Option<usize>,
    duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for Dtype {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Dtype, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dtype;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a safetensors dtype name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Dtype, E> {
                Dtype::from_name(s).ok_or_else(|| E::unknown_variant(s, &NAMES))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<RawHeader, D::Error> {
        d.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object mapping tensor names to their dtype, shape and data_offsets")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawHeader, A::Error> {
        let mut tensors = Vec::new();
        let mut names = HashSet::new();
        let mut metadata = None;
        let mut metadata_position = None;
        let mut duplicate = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "__metadata__" {
                if metadata_position.is_some() {
                    return Err(de::Error::duplicate_field("__metadata__"));
                }
                metadata_position = Some(tensors.len());
                metadata = map.next_value_seed(MetadataSeed)?;
            } else {
                let fields: RawTensorFields = map.next_value()?;
                if !names.insert(key.clone()) && duplicate.is_none() {
                    duplicate = Some(key.clone());
                }
                tensors.push(RawTensor {
                    name: key,
                    dtype: fields.dtype,
                    shape: fields.shape,
                    data_offsets: fields.data_offsets,
                });
            }
        }
        Ok(RawHeader {
            tensors,
            metadata,
            metadata_position,
            duplicate,
        })
    }
}

/// `__metadata__`: null, or an object of strings whose repeated keys keep the
/// last value, as the reference does.
struct MetadataSeed;

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = Option<Vec<(String, String)>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        struct Entries(Vec<(String, String)>);
        impl<'de> Deserialize<'de> for Entries {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Entries, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Entries;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a map of strings to strings")
                    }
                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> std::result::Result<Entries, A::Error> {
                        let mut out: Vec<(String, String)> = Vec::new();
                        // Position of each key in `out`: a hostile header
                        // may hold millions of keys, so no linear search.
                        let mut index: HashMap<String, usize> = HashMap::new();
                        while let Some((k, v)) = map.next_entry::<String, String>()? {
                            match index.get(&k) {
                                Some(&i) => out[i].1 = v,
                                None => {
                                    index.insert(k.clone(), out.len());
                                    out.push((k, v));
                                }
                            }
                        }
                        Ok(Entries(out))
                    }
                }
                d.deserialize_map(V)
            }
        }
        Ok(Option::<Entries>::deserialize(d)?.map(|e| e.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_are_ordered_by_alignment_and_the_header_as_given() {
        let t = |name: &str, dtype: Dtype, shape: &[usize]| TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        };
        let specs = [
            t("flag", Dtype::Bool, &[1]),
            t("w", Dtype::F64, &[2]),
            t("h", Dtype::F16, &[3]),
            t("q", Dtype::F4, &[2]),
            t("f", Dtype::F32, &[1]),
            t("v", Dtype::F64, &[1]),
        ];
        let l = layout(&specs, None).unwrap();
        // Largest alignment first, the order given among equals.
        assert_eq!(l.order, vec![1, 5, 4, 2, 0, 3]);
        assert_eq!(
            l.offsets,
            vec![(34, 35), (0, 16), (28, 34), (35, 36), (24, 28), (16, 24)]
        );
        assert_eq!(l.file_len(), Some(l.prefix.len() + 36));
        let h = parse_header(&l.prefix[N_LEN..], 36).unwrap();
        let listed: Vec<&str> = h
            .json_order
            .iter()
            .map(|&i| h.tensors[i].name.as_str())
            .collect();
        assert_eq!(listed, ["flag", "w", "h", "q", "f", "v"]);
        for x in &h.tensors {
            assert_eq!(
                (h.data_start() + x.begin) % alignment(x.dtype),
                0,
                "{}",
                x.name
            );
        }
        // Already in that order (as Python writes): the data follow the header.
        let sorted = [
            t("a", Dtype::U64, &[1]),
            t("b", Dtype::C64, &[1]),
            t("c", Dtype::F32, &[1]),
            t("d", Dtype::U8, &[1]),
            t("e", Dtype::F4, &[2]),
            t("f", Dtype::Bool, &[1]),
        ];
        assert_eq!(layout(&sorted, None).unwrap().order, vec![0, 1, 2, 3, 4, 5]);
    }

    fn file(json: &str, data_len: usize) -> Vec<u8> {
        let mut v = (json.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v.resize(v.len() + data_len, 0);
        v
    }

    fn parse_file(buf: &[u8]) -> Result<Header> {
        let n = header_len(buf, buf.len() as u64)?;
        parse_header(&buf[N_LEN..N_LEN + n], buf.len() - N_LEN - n)
    }

    fn kind(json: &str, data_len: usize) -> Kind {
        parse_file(&file(json, data_len)).unwrap_err().kind
    }

    #[test]
    fn accepts_a_plain_file() {
        let h = parse_file(&file(
            r#"{"__metadata__":{"a":"b"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#,
            24,
        ))
        .unwrap();
        assert_eq!(h.tensors.len(), 1);
        assert_eq!(h.tensors[0].shape, vec![2, 3]);
        assert_eq!(h.metadata, Some(vec![("a".into(), "b".into())]));
        assert_eq!(h.metadata_position, Some(0));
    }

    #[test]
    fn orders_tensors_by_offset_and_remembers_json_order() {
        let h = parse_file(&file(
            r#"{"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            4,
        ))
        .unwrap();
        assert_eq!(h.tensors[0].name, "a");
        assert_eq!(h.json_order, vec![1, 0]);
    }

    #[test]
    fn rejects_malformed_headers_with_their_kind() {
        assert_eq!(
            parse_file(&[1, 2, 3]).unwrap_err().kind,
            Kind::HeaderTooSmall
        );
        let mut big = (100_000_001u64).to_le_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert_eq!(parse_file(&big).unwrap_err().kind, Kind::HeaderTooLarge);
        let mut short = (100u64).to_le_bytes().to_vec();
        short.extend_from_slice(b"{}");
        assert_eq!(
            parse_file(&short).unwrap_err().kind,
            Kind::InvalidHeaderLength
        );
        assert_eq!(kind("[]", 0), Kind::InvalidHeader);
        assert_eq!(kind("{", 0), Kind::InvalidHeader);
        assert_eq!(kind(r#"{"a":"b"}"#, 0), Kind::InvalidHeader);
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}"#,
                4
            ),
            Kind::InvalidHeader
        );
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                4
            ),
            Kind::InvalidHeader
        );
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}"#,
                4
            ),
            Kind::InvalidHeader
        );
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
                8
            ),
            Kind::InvalidHeader
        );
        assert_eq!(kind(r#"{"__metadata__":{"a":1}}"#, 0), Kind::InvalidHeader);
        assert_eq!(
            kind(r#"{"__metadata__":{},"__metadata__":{}}"#, 0),
            Kind::InvalidHeader
        );
        assert_eq!(kind("{}\0", 0), Kind::InvalidHeader);
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8
            ),
            Kind::InvalidOffset
        );
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                8
            ),
            Kind::InvalidOffset
        );
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                4
            ),
            Kind::InvalidTensorInfo
        );
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                5
            ),
            Kind::IncompleteBuffer
        );
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                3
            ),
            Kind::IncompleteBuffer
        );
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
                8
            ),
            Kind::Overflow
        );
        assert_eq!(
            kind(
                r#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
                2
            ),
            Kind::Misaligned
        );
        assert_eq!(
            kind(
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
                1
            ),
            Kind::DuplicateName
        );
    }

    #[test]
    fn accepts_what_the_reference_accepts() {
        // Whitespace padding on either side, null or empty metadata, unknown
        // fields, zero-size and scalar tensors, an empty name.
        parse_file(&file("  {}  \n\t", 0)).unwrap();
        parse_file(&file(r#"{"__metadata__":null}"#, 0)).unwrap();
        let h = parse_file(&file(
            r#"{"":{"dtype":"F32","shape":[],"data_offsets":[0,4],"x":1},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}"#,
            4,
        ))
        .unwrap();
        assert_eq!(h.tensors[0].name, "z");
        assert_eq!(h.tensors[1].numel(), 1);
        let h = parse_file(&file(r#"{"__metadata__":{"k":"a","k":"b"}}"#, 0)).unwrap();
        assert_eq!(h.metadata, Some(vec![("k".into(), "b".into())]));
    }

    #[test]
    fn many_metadata_keys_parse_in_linear_time() {
        // 1,000,000 distinct keys (16 MB of header): a linear scan per key
        // (as this parser once did) takes hours; a hash lookup, a second.
        // The thread turns a regression into a failure instead of a hang.
        let n = 1_000_000;
        let mut json = String::from(r#"{"__metadata__":{"#);
        for i in 0..n {
            json.push_str(&format!(r#""k{i}":"v","#));
        }
        json.push_str(r#""k0":"last"}}"#);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(parse_header(json.as_bytes(), 0));
        });
        let h = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("parsing took over two minutes")
            .unwrap();
        let meta = h.metadata.unwrap();
        assert_eq!(meta.len(), n);
        // Repeated keys keep their first position and their last value.
        assert_eq!(meta[0], ("k0".to_string(), "last".to_string()));
        assert_eq!(meta[n - 1].0, format!("k{}", n - 1));
    }

    fn spec(name: &str, dtype: Dtype, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn writes_the_reference_golden_headers() {
        let l = layout(&[spec("attn.0", Dtype::F32, &[1, 2, 3])], None).unwrap();
        let mut expected = vec![64u8, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(
            br#"{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}"#,
        );
        assert_eq!(l.prefix, expected);

        let l = layout(&[spec("attn0", Dtype::F32, &[1, 1, 2, 3])], None).unwrap();
        assert_eq!(&l.prefix[..8], &72u64.to_le_bytes());
        assert!(l.prefix.ends_with(b"}}       "));

        let l = layout(&[], None).unwrap();
        assert_eq!(l.prefix, b"\x08\0\0\0\0\0\0\0{}      ".to_vec());

        let meta = vec![("framework".to_string(), "pt".to_string())];
        let l = layout(&[], Some(&meta)).unwrap();
        assert_eq!(
            l.prefix,
            b"\x28\0\0\0\0\0\0\0{\"__metadata__\":{\"framework\":\"pt\"}}     ".to_vec()
        );

        let l = layout(&[spec("attn.0", Dtype::F4, &[1, 2])], None).unwrap();
        assert_eq!(&l.prefix[..8], &64u64.to_le_bytes());
        assert!(l.prefix.ends_with(b"}}    "));
        assert_eq!(l.offsets, vec![(0, 1)]);
    }

    #[test]
    fn writes_empty_metadata_as_valid_json_and_sorts_keys() {
        let l = layout(&[], Some(&[])).unwrap();
        assert!(l.prefix[8..].starts_with(b"{\"__metadata__\":{}}"));
        let meta = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1\n\"".to_string()),
        ];
        let l = layout(&[], Some(&meta)).unwrap();
        assert!(l.prefix[8..].starts_with(br#"{"__metadata__":{"a":"1\n\"","b":"2"}}"#));
    }

    #[test]
    fn rejects_bad_writes() {
        let e = layout(
            &[spec("a", Dtype::U8, &[1]), spec("a", Dtype::U8, &[1])],
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::DuplicateName);
        let e = layout(&[spec("__metadata__", Dtype::U8, &[1])], None).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidArgument);
        let e = layout(&[spec("a", Dtype::F4, &[3])], None).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidArgument);
    }

    #[test]
    fn says_what_a_file_that_is_not_safetensors_looks_like() {
        fn zip(name: &str) -> Vec<u8> {
            let mut v = b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec();
            v.resize(26, 0);
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(name.as_bytes());
            v.resize(200, 0);
            v
        }
        fn check(bytes: &[u8], kind: Kind, looks: &str, hint: Option<&str>) {
            let prefix = &bytes[..bytes.len().min(SNIFF_LEN)];
            let e = header_len(prefix, bytes.len() as u64).unwrap_err();
            assert_eq!(e.kind, kind, "{looks}");
            assert!(
                e.message
                    .starts_with("it is not a safetensors file: it looks like "),
                "{}",
                e.message
            );
            assert!(e.message.contains(looks), "{} lacks {looks}", e.message);
            match hint {
                Some(h) => assert!(
                    e.hint.as_deref().unwrap_or("").contains(h),
                    "{:?} lacks {h}",
                    e.hint
                ),
                None => assert_eq!(e.hint, None, "{looks}"),
            }
        }
        let large = Kind::HeaderTooLarge;
        check(
            &zip("archive/data.pkl"),
            large,
            "a PyTorch checkpoint",
            Some("torch::load_state_dict()"),
        );
        check(
            &zip("pytorch_model/data.pkl"),
            large,
            "a PyTorch checkpoint",
            Some("safetensors.torch.save_file"),
        );
        check(
            &zip("arr_0.npy"),
            large,
            "a NumPy `.npz` archive",
            Some("safetensors.numpy.save_file"),
        );
        check(&zip("metadata.json"), large, "a zip archive", None);
        // Only the first 8 bytes (a connection): a zip, of some kind.
        check(
            &zip("archive/data.pkl")[..8],
            large,
            "such as a PyTorch checkpoint",
            Some("torch"),
        );
        let mut legacy = vec![
            0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
        ];
        legacy.resize(64, 0x2e);
        check(&legacy, large, "legacy format", Some("Python"));
        check(
            b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}",
            large,
            "a Python pickle",
            Some("Python"),
        );
        check(b"GGUF\x03\x00\x00\x00\x10\x00", large, "GGUF", None);
        check(
            b"\x93NUMPY\x01\x00v\x00{'descr'",
            large,
            "`.npy`",
            Some("numpy.load"),
        );
        check(
            b"\x89HDF\r\n\x1a\n\x00\x00\x00\x00",
            large,
            "HDF5",
            Some("hdf5r"),
        );
        // A gzip file without a time stamp: its length is small, but runs
        // past the end.
        check(
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            Kind::InvalidHeaderLength,
            "gzip",
            Some("gzfile(path)"),
        );
        check(
            b"RDX3\nX\n\x00\x00\x00\x03",
            large,
            "an R data file",
            Some("load()"),
        );
        let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n";
        check(lfs, large, "Git LFS", Some("git lfs pull"));
        check(
            b"<!DOCTYPE html>\n<html class=\"\">",
            large,
            "a web page",
            Some("resolve/"),
        );
        check(
            b"  {\"weight_map\": {}}\n",
            large,
            "JSON text",
            Some(".json"),
        );
        check(
            "caf\u{e9} au lait, a text file\n".as_bytes(),
            large,
            "a text file",
            None,
        );
        // A UTF-8 character cut at the end of what is looked at.
        let mut cut = "a".repeat(SNIFF_LEN - 1).into_bytes();
        cut.extend_from_slice("\u{e9}".as_bytes());
        check(&cut, large, "a text file", None);

        // Unknown binary: the length and the first bytes.
        let e = header_len(&[0xff; 16], 16).unwrap_err();
        assert_eq!(e.kind, Kind::HeaderTooLarge);
        assert!(e.message.contains("exceeds the limit"));
        assert!(e.hint.unwrap().contains("ff ff ff ff ff ff ff ff"));
        // A truncated safetensors file is not mistaken for anything else.
        let mut short = 5000u64.to_le_bytes().to_vec();
        short.extend_from_slice(b"{\"w\":{\"dtype\"");
        let e = header_len(&short, short.len() as u64).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidHeaderLength);
        assert!(e.message.contains("runs past the end"), "{}", e.message);
        assert_eq!(e.hint, None);
        // Valid lengths are never looked at.
        assert_eq!(header_len(&file("{}", 0), 10).unwrap(), 2);
    }

    #[test]
    #[cfg_attr(
        debug_assertions,
        ignore = "100 MB of JSON: slow unoptimised; run with --release"
    )]
    fn header_limit_is_exact_on_write_and_read() {
        // One tensor whose name fills the header to exactly the limit.
        let fixed = r#"{"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#.len();
        let name = "n".repeat(MAX_HEADER_SIZE - fixed);
        let l = layout(&[spec(&name, Dtype::U8, &[0])], None).unwrap();
        assert_eq!(l.prefix.len(), N_LEN + MAX_HEADER_SIZE);
        let h = parse_file(&l.prefix).unwrap();
        assert_eq!(h.header_len, MAX_HEADER_SIZE);
        let name = "n".repeat(MAX_HEADER_SIZE - fixed + 1);
        let e = layout(&[spec(&name, Dtype::U8, &[0])], None).unwrap_err();
        assert_eq!(e.kind, Kind::HeaderTooLarge);
    }

    #[test]
    fn written_headers_parse_back() {
        let specs = [
            spec("x", Dtype::F64, &[2, 2]),
            spec("", Dtype::Bool, &[]),
            spec("e", Dtype::I8, &[0]),
        ];
        let meta = vec![("k".to_string(), "v".to_string())];
        let l = layout(&specs, Some(&meta)).unwrap();
        let mut buf = l.prefix.clone();
        buf.resize(l.file_len().unwrap(), 0);
        let h = parse_file(&buf).unwrap();
        let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["x", "", "e"]);
        assert_eq!(h.metadata, Some(meta));
    }
}
