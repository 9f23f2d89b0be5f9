//! Differential test against the reference implementation (the
//! `safetensors` crate 0.8.0): on valid files, on every fixture, and on many
//! thousands of deterministic mutations of them, our reader and the
//! reference accept and reject the same files, for the same reason where
//! the reason is well defined, and accepted files give the same tensors
//! (name, dtype, shape, bytes) and metadata.
//!
//! The one documented difference: a tensor name that appears twice in the
//! header is always an error here (`DuplicateName`), while the reference
//! silently keeps the last entry.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use safetensors::SafeTensorError;
use safetensors_core::dtype::{Dtype, ALL};
use safetensors_core::error::Kind;
use safetensors_core::format::{layout, Header, TensorSpec, N_LEN};
use safetensors_core::io::{read_header, Memory};

/// Mutated files per base file.
const MUTATIONS: usize = 40;
/// Randomly generated base files.
const BASES: usize = 1000;

/// SplitMix64: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const NAMES: [&str; 12] = [
    "w",
    "bias",
    "layer.0.weight",
    "",
    "é",
    "a\"b",
    "tab\there",
    "model.embed_tokens",
    "x/y",
    "\u{1F600}",
    "__meta",
    "A",
];

/// A valid file: (JSON header bytes including padding, data section).
fn base_file(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let n = rng.below(5);
    let mut specs = Vec::new();
    for i in 0..n {
        let dtype = *rng.pick(&ALL);
        let rank = rng.below(4);
        let mut shape: Vec<usize> = (0..rank).map(|_| rng.below(5)).collect();
        // Sub-byte dtypes need a whole number of bytes: make the last extent even/4k.
        if let Some(last) = shape.last_mut() {
            if dtype.bits() % 8 != 0 {
                *last = (*last).next_multiple_of(4);
            }
        } else if dtype.bits() % 8 != 0 {
            shape.push(4);
        }
        let name = format!(
            "{}{}",
            rng.pick(&NAMES),
            if rng.chance(50) {
                i.to_string()
            } else {
                String::new()
            }
        );
        if specs.iter().any(|s: &TensorSpec| s.name == name) {
            continue;
        }
        specs.push(TensorSpec { name, dtype, shape });
    }
    let meta: Option<Vec<(String, String)>> = if rng.chance(50) {
        Some(
            (0..rng.below(3))
                .map(|i| (format!("k{i}"), rng.pick(&NAMES).to_string()))
                .collect(),
        )
    } else {
        None
    };
    let l = layout(&specs, meta.as_deref()).expect("layout of generated tensors");
    let len = l.file_len().expect("size") - l.prefix.len();
    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    (l.prefix[N_LEN..].to_vec(), data)
}

fn assemble(json: &[u8], data: &[u8]) -> Vec<u8> {
    let mut f = (json.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(json);
    f.extend_from_slice(data);
    f
}

/// Positions of the decimal numbers in `s`: (start, end).
fn numbers(s: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i].is_ascii_digit() {
            let j = i + s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            out.push((i, j));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return Vec::new();
    }
    (0..=hay.len() - needle.len())
        .filter(|&i| &hay[i..i + needle.len()] == needle)
        .collect()
}

fn splice(v: &mut Vec<u8>, at: (usize, usize), with: &[u8]) {
    v.splice(at.0..at.1, with.iter().copied());
}

const BIG: [&str; 14] = [
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "4294967296",
    "4294967295",
    "2147483648",
    "100000000",
    "0",
    "-1",
    "1e3",
    "1.0",
    "00",
    "340282366920938463463374607431768211456",
    "9007199254740993",
];

const DTYPE_SWAPS: [&str; 10] = [
    "F32", "f32", "F128", "C128", "BOOL", "F4", "U8", "F6_E3M2", "\"", "I64 ",
];

/// Applies one mutation to the file parts; returns a short label.
fn mutate(
    rng: &mut Rng,
    json: &mut Vec<u8>,
    data: &mut Vec<u8>,
    len_field: &mut Option<u64>,
) -> &'static str {
    match rng.below(17) {
        0 if !json.is_empty() => {
            let i = rng.below(json.len());
            json[i] = rng.next() as u8;
            "byte"
        }
        1 if !json.is_empty() => {
            let i = rng.below(json.len());
            json[i] ^= 1 << rng.below(8);
            "bit"
        }
        2 if !json.is_empty() => {
            let i = rng.below(json.len());
            if rng.chance(50) {
                json.remove(i);
                "delete"
            } else {
                let c = *rng.pick(&[
                    b'{', b'}', b'[', b']', b',', b':', b'"', b'\\', b'0', b'9', b'-', b' ', 0u8,
                ]);
                json.insert(i, c);
                "insert"
            }
        }
        3 => {
            let nums = numbers(json);
            if nums.is_empty() {
                return "none";
            }
            let at = *rng.pick(&nums);
            let v: u128 = std::str::from_utf8(&json[at.0..at.1])
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            let new = if rng.chance(50) {
                v + 1
            } else {
                v.saturating_sub(1)
            };
            splice(json, at, new.to_string().as_bytes());
            "off-by-one"
        }
        4 => {
            let hits: Vec<usize> = find_all(json, b"\"dtype\":\"");
            if hits.is_empty() {
                return "none";
            }
            let start = *rng.pick(&hits) + 9;
            let end = start + json[start..].iter().take_while(|&&c| c != b'"').count();
            let new: String = if rng.chance(60) {
                rng.pick(&ALL).name().to_string()
            } else {
                rng.pick(&DTYPE_SWAPS).to_string()
            };
            splice(json, (start, end), new.as_bytes());
            "dtype"
        }
        5 => {
            // Duplicate a tensor entry (same name), at the end of the object.
            let text = String::from_utf8_lossy(json).to_string();
            let Ok(serde_json::Value::Object(map)) =
                serde_json::from_str::<serde_json::Value>(&text)
            else {
                return "none";
            };
            let Some((k, v)) = map.iter().find(|(k, _)| *k != "__metadata__") else {
                return "none";
            };
            let mut v = v.clone();
            if rng.chance(50) {
                if let Some(o) = v.get_mut("data_offsets") {
                    *o = serde_json::json!([rng.below(3) * 4, rng.below(3) * 4]);
                }
            }
            let entry = format!(",{}:{}", serde_json::to_string(k).unwrap(), v);
            let close = json.iter().rposition(|&c| c == b'}').unwrap_or(json.len());
            json.splice(close..close, entry.bytes());
            "duplicate-tensor"
        }
        6 => {
            let entry: &[u8] = if rng.chance(50) {
                b"\"__metadata__\":{\"a\":\"b\"},"
            } else {
                b"\"__metadata__\":null,"
            };
            if let Some(open) = json.iter().position(|&c| c == b'{') {
                json.splice(open + 1..open + 1, entry.iter().copied());
            }
            "metadata-insert"
        }
        7 => {
            let &pad = rng.pick(&[
                &b" "[..],
                b"\t",
                b"\n",
                b"\r",
                b"\0",
                b"\xef\xbb\xbf",
                b"\x0b",
                b"\x0c",
                b"  \n",
            ]);
            let at = if rng.chance(50) { 0 } else { json.len() };
            json.splice(at..at, pad.iter().copied());
            "whitespace"
        }
        8 => {
            let nums = numbers(json);
            if nums.is_empty() {
                return "none";
            }
            let at = *rng.pick(&nums);
            let new = rng.pick(&BIG);
            splice(json, at, new.as_bytes());
            "huge-number"
        }
        9 => {
            let real = json.len() as u64;
            *len_field = Some(*rng.pick(&[
                real.wrapping_add(1),
                real.wrapping_sub(1),
                real + (1 << 32),
                u64::MAX,
                100_000_000,
                100_000_001,
                0,
                7,
            ]));
            "length-field"
        }
        10 => {
            if rng.chance(50) && !data.is_empty() {
                let cut = rng.below(data.len());
                data.truncate(cut);
                "truncate"
            } else {
                data.extend(std::iter::repeat(0).take(1 + rng.below(8)));
                "append"
            }
        }
        11 => {
            let hits = find_all(json, b"\"shape\":[");
            if hits.is_empty() {
                return "none";
            }
            let at = *rng.pick(&hits) + 9;
            let &ins = rng.pick(&[&b"1,"[..], b"0,", b"2,", b"-0,", b"[1],", b"null,"]);
            json.splice(at..at, ins.iter().copied());
            "shape"
        }
        12 => {
            let hits = find_all(json, b"\"__metadata__\":{");
            let Some(&h) = hits.first() else {
                return "none";
            };
            let at = h + 16;
            let &ins = rng.pick(&[
                &b"\"n\":1,"[..],
                b"\"n\":null,",
                b"\"n\":{},",
                b"\"n\":[\"a\"],",
                b"\"k0\":\"dup\",",
            ]);
            json.splice(at..at, ins.iter().copied());
            "metadata-value"
        }
        13 => {
            // Escape the first letter of a key: "w" -> "\u0077".
            let hits = find_all(json, b"{\"");
            let Some(&h) = hits.get(rng.below(hits.len().max(1))) else {
                return "none";
            };
            let at = h + 2;
            if at < json.len() && json[at].is_ascii_alphanumeric() {
                let esc = format!("\\u{:04x}", json[at]);
                splice(json, (at, at + 1), esc.as_bytes());
            }
            "escape"
        }
        14 => {
            // Swap the offsets of two tensors.
            let hits = find_all(json, b"\"data_offsets\":[");
            if hits.len() < 2 {
                return "none";
            }
            let (a, b) = (hits[0] + 16, hits[1] + 16);
            let ea = a + json[a..].iter().position(|&c| c == b']').unwrap_or(0);
            let eb = b + json[b..].iter().position(|&c| c == b']').unwrap_or(0);
            let (ta, tb) = (json[a..ea].to_vec(), json[b..eb].to_vec());
            let mut out = json[..a].to_vec();
            out.extend_from_slice(&tb);
            out.extend_from_slice(&json[ea..b]);
            out.extend_from_slice(&ta);
            out.extend_from_slice(&json[eb..]);
            *json = out;
            "swap-offsets"
        }
        15 => {
            let from = *rng.pick(b"{[\":,");
            let to = *rng.pick(b"{[\":,]}");
            let pos = find_all(json, &[from]);
            if let Some(&p) = pos.get(rng.below(pos.len().max(1))) {
                json[p] = to;
            }
            "structure"
        }
        _ => {
            // Non-UTF-8 or unusual text inside a string.
            let quotes = find_all(json, b"\"");
            if let Some(&q) = quotes.get(rng.below(quotes.len().max(1))) {
                let &ins = rng.pick(&[
                    &b"\xff"[..],
                    b"\xc3",
                    b"\xed\xa0\x80",
                    b"\\ud800",
                    b"\\u0000",
                    b"\\x",
                    b"\x01",
                    b"\\/",
                ]);
                json.splice(q + 1..q + 1, ins.iter().copied());
            }
            "string"
        }
    }
}

fn kind_of(e: &SafeTensorError) -> Option<Kind> {
    Some(match e {
        SafeTensorError::HeaderTooSmall => Kind::HeaderTooSmall,
        SafeTensorError::HeaderTooLarge => Kind::HeaderTooLarge,
        SafeTensorError::InvalidHeaderLength => Kind::InvalidHeaderLength,
        SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderDeserialization(_) => {
            Kind::InvalidHeader
        }
        SafeTensorError::InvalidOffset(_) => Kind::InvalidOffset,
        SafeTensorError::TensorInvalidInfo => Kind::InvalidTensorInfo,
        SafeTensorError::MetadataIncompleteBuffer => Kind::IncompleteBuffer,
        SafeTensorError::ValidationOverflow => Kind::Overflow,
        SafeTensorError::MisalignedSlice => Kind::Misaligned,
        _ => return None,
    })
}

/// Whether two tensors of the header share their `data_offsets`: the
/// reference sorts them in hash order then, so which one it blames varies.
fn has_tied_offsets(json: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(json)
    else {
        return false;
    };
    let mut seen = std::collections::HashSet::new();
    map.iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets").map(|o| o.to_string()))
        .any(|o| !seen.insert(o))
}

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    both_accept: usize,
    both_reject: usize,
    same_kind: usize,
    duplicate_names: usize,
    reference_panics: usize,
    by_mutation: HashMap<&'static str, usize>,
}

fn compare(file: &[u8], label: &'static str, tally: &mut Tally) {
    tally.cases += 1;
    *tally.by_mutation.entry(label).or_default() += 1;
    let ours = read_header(&Memory(file));
    let theirs = catch_unwind(AssertUnwindSafe(|| {
        safetensors::SafeTensors::deserialize(file)
    }));
    let theirs = match theirs {
        Ok(r) => r,
        Err(_) => {
            // The reference overflows (a debug-build panic) computing
            // `buffer_end + 8 + n` for tensors near usize::MAX bytes; we
            // must reject such a file.
            tally.reference_panics += 1;
            assert!(
                ours.is_err(),
                "[{label}] the reference panicked on a file we accept"
            );
            return;
        }
    };
    match (&ours, &theirs) {
        (Err(e), _) if e.kind == Kind::DuplicateName => {
            // Our documented stricter case.
            tally.duplicate_names += 1;
        }
        (Ok(h), Ok(st)) => {
            tally.both_accept += 1;
            same_tensors(file, h, st, label);
        }
        (Err(e), Err(r)) => {
            tally.both_reject += 1;
            let want = kind_of(r);
            if want == Some(e.kind) {
                tally.same_kind += 1;
            } else {
                let json = split_file(file).map(|(j, _)| j).unwrap_or_default();
                assert!(
                    has_tied_offsets(&json),
                    "[{label}] both reject, ours as {:?} ({}), the reference as {r:?}\nfile: {:?}",
                    e.kind,
                    e.message,
                    String::from_utf8_lossy(file)
                );
            }
        }
        (Ok(_), Err(r)) => panic!(
            "[{label}] we accept, the reference rejects ({r}): {:?}",
            String::from_utf8_lossy(file)
        ),
        (Err(e), Ok(_)) => panic!(
            "[{label}] the reference accepts, we reject ({:?}: {}): {:?}",
            e.kind,
            e.message,
            String::from_utf8_lossy(file)
        ),
    }
}

fn same_tensors(file: &[u8], h: &Header, st: &safetensors::SafeTensors<'_>, label: &str) {
    assert_eq!(h.tensors.len(), st.len(), "[{label}] tensor count");
    let start = h.data_start();
    for t in &h.tensors {
        let view = st
            .tensor(&t.name)
            .unwrap_or_else(|_| panic!("[{label}] the reference lacks `{}`", t.name));
        assert_eq!(
            format!("{:?}", view.dtype()),
            t.dtype.name(),
            "[{label}] dtype of `{}`",
            t.name
        );
        assert_eq!(
            view.shape(),
            &t.shape[..],
            "[{label}] shape of `{}`",
            t.name
        );
        assert_eq!(
            view.data(),
            &file[start + t.begin..start + t.end],
            "[{label}] bytes of `{}`",
            t.name
        );
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(file).expect("accepted above");
    let ours: Option<HashMap<String, String>> = h.metadata.clone().map(|m| m.into_iter().collect());
    assert_eq!(&ours, meta.metadata(), "[{label}] metadata");
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/testthat/fixtures");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) == Some("safetensors") {
            if let Ok(bytes) = std::fs::read(&p) {
                out.push((p.display().to_string(), bytes));
            }
        }
    }
    out.sort();
    out
}

fn split_file(file: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let n = u64::from_le_bytes(file.get(..N_LEN)?.try_into().ok()?) as usize;
    let json = file.get(N_LEN..N_LEN.checked_add(n)?)?.to_vec();
    Some((json, file[N_LEN + n..].to_vec()))
}

fn mutate_and_compare(rng: &mut Rng, json: &[u8], data: &[u8], tally: &mut Tally) {
    for _ in 0..MUTATIONS {
        let (mut j, mut d) = (json.to_vec(), data.to_vec());
        let mut len_field = None;
        let mut label = "";
        for _ in 0..1 + rng.below(3) {
            label = mutate(rng, &mut j, &mut d, &mut len_field);
        }
        let mut file = assemble(&j, &d);
        if let Some(n) = len_field {
            file[..N_LEN].copy_from_slice(&n.to_le_bytes());
        }
        compare(&file, label, tally);
    }
}

#[test]
fn reader_agrees_with_the_reference_on_mutated_headers() {
    let mut rng = Rng(0x5afe_7e45_0250_0001);
    let mut tally = Tally::default();
    for (name, bytes) in fixtures() {
        let _ = name;
        compare(&bytes, "fixture", &mut tally);
        if let Some((json, data)) = split_file(&bytes) {
            if data.len() <= 1 << 20 {
                mutate_and_compare(&mut rng, &json, &data, &mut tally);
            }
        }
    }
    for _ in 0..BASES {
        let (json, data) = base_file(&mut rng);
        compare(&assemble(&json, &data), "valid", &mut tally);
        mutate_and_compare(&mut rng, &json, &data, &mut tally);
    }
    let mut kinds: Vec<_> = tally.by_mutation.iter().collect();
    kinds.sort();
    eprintln!(
        "differential: {} cases, {} both accept, {} both reject ({} with the same error kind), \
         {} duplicate names (ours stricter), {} reference panics\nby mutation: {kinds:?}",
        tally.cases,
        tally.both_accept,
        tally.both_reject,
        tally.same_kind,
        tally.duplicate_names,
        tally.reference_panics
    );
    assert!(tally.cases >= 20_000);
    // The mutations must exercise both outcomes substantially.
    assert!(tally.both_accept >= 1_000, "{tally:?}");
    assert!(tally.both_reject >= 10_000, "{tally:?}");
}

#[test]
fn duplicate_names_are_our_only_stricter_case() {
    // The reference keeps the last entry; we reject the file.
    let json = br#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[8,16]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    let file = assemble(json, &[7]);
    assert!(safetensors::SafeTensors::deserialize(&file).is_ok());
    assert_eq!(
        read_header(&Memory(&file)).unwrap_err().kind,
        Kind::DuplicateName
    );
}

#[test]
fn every_dtype_agrees_on_size_and_name() {
    for d in ALL {
        let json = format!(
            r#"{{"t":{{"dtype":"{}","shape":[8],"data_offsets":[0,{}]}}}}"#,
            d.name(),
            d.bits()
        );
        let file = assemble(json.as_bytes(), &vec![0u8; d.bits()]);
        let st = safetensors::SafeTensors::deserialize(&file).expect("reference accepts");
        let h = read_header(&Memory(&file)).expect("we accept");
        assert_eq!(format!("{:?}", st.tensor("t").unwrap().dtype()), d.name());
        assert_eq!(Dtype::from_name(d.name()), Some(h.tensors[0].dtype));
    }
}
