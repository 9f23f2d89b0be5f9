//! Writes seed corpora for the fuzz targets: valid files made with the
//! core's own writer (every dtype, scalars, empty and zero-size tensors,
//! metadata, several tensors), their bare JSON headers, and structured
//! seeds for `convert` and `index_walk`.
//!
//!     cargo run --example seeds -- corpus
use std::path::Path;

use safetensors_core::dtype::ALL;
use safetensors_core::format::{layout, TensorSpec, N_LEN};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let root = Path::new(&root);
    let shapes: [&[usize]; 7] = [
        &[],
        &[4],
        &[0],
        &[2, 4],
        &[3, 1, 8],
        &[2, 0, 3],
        &[2, 2, 2, 2],
    ];
    let mut k = 0;
    for (di, &dtype) in ALL.iter().enumerate() {
        for (si, shape) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let Some(nbytes) = dtype.bytes_for(n) else {
                continue;
            };
            let meta = vec![("format".to_string(), "pt".to_string())];
            let specs = [TensorSpec {
                name: format!("w{si}"),
                dtype,
                shape: shape.to_vec(),
            }];
            let l = layout(&specs, (si % 2 == 0).then_some(&meta[..])).expect("layout");
            let mut file = l.prefix.clone();
            file.extend((0..nbytes).map(|i| (i * 37 + di) as u8));
            write(&root.join("header"), &format!("file-{k}"), &file);
            write(
                &root.join("header"),
                &format!("json-{k}"),
                &l.prefix[N_LEN..],
            );
            write(&root.join("deserialize"), &format!("file-{k}"), &file);
            let mut s = vec![di as u8, shape.len() as u8];
            s.extend(shape.iter().map(|&d| d as u8));
            s.push(3);
            s.extend((0..nbytes).map(|i| (i * 91 + 7) as u8));
            write(&root.join("convert"), &format!("seed-{k}"), &s);
            k += 1;
        }
    }
    // Several tensors of mixed dtypes, one zero-size, in one file.
    let specs: Vec<TensorSpec> = ALL
        .iter()
        .enumerate()
        .map(|(i, &dtype)| TensorSpec {
            name: format!("t{i}"),
            dtype,
            shape: if i == 3 { vec![0, 5] } else { vec![2, 4] },
        })
        .collect();
    let l = layout(
        &specs,
        Some(&[("a".into(), "b".into()), ("c".into(), "\u{e9}\n".into())]),
    )
    .expect("layout");
    let mut file = l.prefix.clone();
    let len = l.file_len().expect("size") - file.len();
    file.extend((0..len).map(|i| (i * 13) as u8));
    write(&root.join("header"), "multi", &file);
    write(&root.join("deserialize"), "multi", &file);
    write(
        &root.join("header"),
        "empty",
        &layout(&[], None).expect("layout").prefix,
    );
    for (i, shape) in [
        vec![],
        vec![5],
        vec![2, 3],
        vec![3, 1, 5],
        vec![2, 3, 4, 5],
        vec![33, 2, 35],
        vec![4, 0, 2],
    ]
    .iter()
    .enumerate()
    {
        let mut s = vec![shape.len() as u8];
        s.extend(shape.iter().map(|&d| d as u8));
        s.extend([1, 2, 3, 64]);
        write(&root.join("index_walk"), &format!("seed-{i}"), &s);
    }
    // Slices: dtype, rank, shape, selection count, selections, chunk sizes, data.
    let slices: [&[u8]; 5] = [
        &[
            17, 2, 3, 4, 2, 1, 0, 3, 1, 0, 2, 1, 3, 2, 5, 7, 1, 2, 3, 4, 5, 6, 7, 8,
        ],
        &[
            4, 3, 2, 3, 4, 3, 0, 2, 1, 0, 3, 2, 1, 1, 1, 1, 2, 0, 1, 2, 3, 9, 9, 9, 9, 1, 2, 3,
        ],
        &[
            1, 2, 4, 6, 2, 1, 1, 2, 1, 1, 0, 6, 1, 2, 1, 0, 0, 0, 8, 8, 8, 8, 0x12, 0x34, 0x56,
        ],
        &[21, 1, 7, 1, 0, 4, 2, 0, 1, 6, 1, 3, 5, 0, 0, 0, 0, 1, 2, 3],
        &[2, 0, 0, 3, 3, 3, 3, 0xaa, 0xbb, 0xcc],
    ];
    for (i, s) in slices.iter().enumerate() {
        write(&root.join("slice"), &format!("seed-{i}"), s);
    }
    let indexes = [
        r#"{"metadata":{"total_size":24},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#,
        r#"{"weight_map":{"a":"./s.safetensors"},"metadata":{"format":"pt","n":[1,2]},"extra":null}"#,
        r#"{"weight_map":{"a":"../x.safetensors"}}"#,
        r#"{"weight_map":{"a":"/etc/passwd"}}"#,
        r#"{"weight_map":{"a":"x","a":"y"}}"#,
    ];
    for (i, s) in indexes.iter().enumerate() {
        write(&root.join("index"), &format!("seed-{i}"), s.as_bytes());
    }
    println!("seeds written under {}", root.display());
}
