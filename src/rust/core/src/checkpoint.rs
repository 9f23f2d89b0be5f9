//! What a save does to a path: the checkpoint of a name in a folder, a
//! single file `dir/NAME` or a shard set (the index `dir/NAME.index.json`
//! and the shards it names, `dir/STEM-0000k-of-0000n.safetensors` for
//! `NAME = STEM.safetensors`, as transformers writes them), replaced as a
//! whole by every save to that name, and never seen half replaced.
//!
//! The checkpoint a folder holds for a name is its single file if it
//! exists, else its index (transformers reads a folder so too), so that:
//!
//! * a single file replaces what was there when it is renamed into place;
//!   the index it makes stale and that index's shards are removed after;
//! * a shard set is written under temporary names first
//!   (`.SHARD.<id>.tmp`, `id` a random id of the save, see
//!   [`shards::pending_name`]), then its index (which holds the id) is
//!   renamed into place, then a single file that was there is removed: the
//!   commit is the first of these two steps that makes the index the
//!   checkpoint. Then the shards are renamed to their names, the files of
//!   the replaced index that the new one doesn't name are removed, and the
//!   index is written again without the id (the index transformers
//!   writes, the same bytes for the same tensors).
//!
//! Readers (R/shards.R) read a shard of an index with an id from its
//! temporary name while that exists, so an index renamed into place is
//! complete at once; and they read the index again after opening its
//! shards, and start over if it changed, so a shard renamed over one they
//! were about to open is never mixed with the other save's.
//!
//! A save holds a lock on the folder ([`DirLock`]) from [`Save::begin`]
//! until it is dropped, so saves to one folder run one at a time. When it
//! begins, it finishes what a save killed after its commit left (renames
//! its shards, removes the files it replaced) and removes what a save
//! killed before it left (its temporary files), so a kill at any point
//! leaves the complete old or the complete new checkpoint, and the next
//! save to the name leaves no trace of the kill.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use crate::error::{Error, Kind, Result};
use crate::io::{self, DirLock};
use crate::shards::{self, Index};
use crate::Poll;

/// A save to a checkpoint name in progress: it holds the folder's lock,
/// and the temporary files it made, which it removes when dropped before
/// its commit.
pub struct Save {
    dir: PathBuf,
    /// The single file's name, `NAME`.
    base: String,
    /// The shards' stem: `NAME` without `.safetensors`.
    stem: String,
    id: String,
    /// Temporary files of this save, removed if it doesn't commit.
    temps: Vec<PathBuf>,
    _lock: DirLock,
    _held: Held,
}

/// The folders this process is saving to (one entry per save). A save
/// holds its folder's lock until it ends, which a block writer's save does
/// while the user writes blocks (R's `safe_writer()`); in a
/// single-threaded caller (R), another save to that folder would wait for
/// that lock forever, so [`Save::begin_unless_held`] makes it an error.
static HELD: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// An entry of [`HELD`], until dropped.
struct Held(PathBuf);

impl Held {
    fn key(dir: &Path) -> PathBuf {
        std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
    }

    fn register(dir: &Path) -> Held {
        let key = Held::key(dir);
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.push(key.clone());
        Held(key)
    }

    fn is_held(dir: &Path) -> bool {
        let key = Held::key(dir);
        let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.contains(&key)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = held.iter().position(|d| d == &self.0) {
            held.swap_remove(k);
        }
    }
}

/// A new random save id: 32 lower-case hexadecimal digits. (The standard
/// library's hasher keys are random per process; the time, the process id
/// and a counter make ids differ within and across processes.)
pub fn new_save_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = String::with_capacity(32);
    for half in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(half);
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_u64(n);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// `name` as `.INNER.ID.EXT` (a save's temporary file or journal): its
/// inner name, id and extension.
fn parse_tagged(name: &str) -> Option<(&str, &str, &str)> {
    let rest = name.strip_prefix('.')?;
    let (rest, ext) = rest.rsplit_once('.')?;
    let (inner, id) = rest.rsplit_once('.')?;
    let ok = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (ok && !inner.is_empty() && (ext == "tmp" || ext == "old")).then_some((inner, id, ext))
}

/// `name` as `.INNER.PID-N.tmp` (an [`io::AtomicFile`]'s named temporary
/// file): its inner name.
fn parse_atomic_temp(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (inner, tag) = rest.rsplit_once('.')?;
    let (pid, n) = tag.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n) && !inner.is_empty()).then_some(inner)
}

/// Removes `path`; a file already gone is fine, and one that can't be
/// removed (open elsewhere, on Windows) is left for the next save.
fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

impl Save {
    /// Begins a save to the file `target` (a path whose symbolic links are
    /// followed, see [`io::resolve_links`]; a FIFO, a device or a folder is
    /// refused): locks its folder, waiting for another save to it and
    /// calling `poll` meanwhile, and cleans up after killed saves (see the
    /// module's documentation).
    pub fn begin(target: &Path, poll: Poll<'_>) -> Result<Save> {
        let target = io::resolve_links(target)?;
        io::check_file_target(&target)?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(base) = target
            .file_name()
            .and_then(|b| b.to_str())
            .map(str::to_string)
        else {
            return Err(Error::new(
                Kind::InvalidArgument,
                "the path must name a file",
            ));
        };
        if !dir.is_dir() {
            return Err(Error::new(Kind::FileNotFound, "its folder does not exist"));
        }
        let stem = base
            .strip_suffix(".safetensors")
            .unwrap_or(&base)
            .to_string();
        let lock = io::lock_dir(&dir, poll)?;
        let held = Held::register(&dir);
        let save = Save {
            dir,
            base,
            stem,
            id: new_save_id(),
            temps: Vec::new(),
            _lock: lock,
            _held: held,
        };
        save.recover();
        Ok(save)
    }

    /// As [`Save::begin`], for a caller with one thread: a folder that a
    /// save of this process holds (an open block writer) is an error at
    /// once, not a wait that can't end.
    pub fn begin_unless_held(target: &Path, poll: Poll<'_>) -> Result<Save> {
        if Save::is_held(target) {
            return Err(
                Error::new(Kind::Io, "a writer of this session is saving to its folder")
                    .with_hint("Close that writer first (`close(w)`), or write to another folder."),
            );
        }
        Save::begin(target, poll)
    }

    /// Whether a save of this process holds the folder of the file
    /// `target` (links followed).
    pub fn is_held(target: &Path) -> bool {
        let Ok(resolved) = io::resolve_links(target) else {
            return false;
        };
        let dir = match resolved.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        dir.is_dir() && Held::is_held(dir)
    }

    /// The single file's path (links resolved).
    pub fn target(&self) -> PathBuf {
        self.dir.join(&self.base)
    }

    /// The index's path.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join(self.index_name())
    }

    fn index_name(&self) -> String {
        format!("{}.index.json", self.base)
    }

    /// The name of shard `k` of `n` (from 1), as transformers names it.
    pub fn shard_name(&self, k: usize, n: usize) -> String {
        format!("{}-{k:05}-of-{n:05}.safetensors", self.stem)
    }

    /// Whether `name` is a shard name of this checkpoint's stem.
    fn is_shard_name(&self, name: &str) -> bool {
        let Some(rest) = name
            .strip_prefix(&self.stem)
            .and_then(|r| r.strip_suffix(".safetensors"))
        else {
            return false;
        };
        let b = rest.as_bytes();
        b.len() == 15
            && b[0] == b'-'
            && &rest[6..10] == "-of-"
            && b[1..6].iter().chain(&b[10..]).all(u8::is_ascii_digit)
    }

    /// The path to write shard `name` to: its temporary name, removed if
    /// the save doesn't commit.
    pub fn shard_temp(&mut self, name: &str) -> PathBuf {
        let p = self.dir.join(shards::pending_name(name, &self.id));
        self.temps.push(p.clone());
        p
    }

    /// The index in the folder, its bytes and what it says, if the folder
    /// has one that can be read.
    fn read_index(&self) -> Option<(Vec<u8>, Index)> {
        let bytes = std::fs::read(self.index_path()).ok()?;
        let idx = shards::parse_index(std::str::from_utf8(&bytes).ok()?).ok()?;
        Some((bytes, idx))
    }

    /// Whether `file`, named by an index, may be removed as part of a
    /// replaced checkpoint: not the single file, not the index.
    fn removable(&self, file: &str) -> bool {
        file != self.base && file != self.index_name() && shards::check_shard_path(file).is_ok()
    }

    /// Removes the index and the files it names (a checkpoint replaced by
    /// a single file): the files first, so that a kill meanwhile leaves an
    /// index naming those left.
    fn remove_index_set(&self) {
        if let Some((_, idx)) = self.read_index() {
            for f in idx.files() {
                if self.removable(f) {
                    remove(&self.dir.join(f));
                }
            }
        }
        remove(&self.index_path());
    }

    /// Finishes or undoes what killed saves to this name left: shards of
    /// the committed index still under their temporary names are renamed,
    /// the files of the checkpoint it replaced removed; temporary files of
    /// saves that didn't commit are removed; an index that the single file
    /// beside it replaced is removed with its shards. Best effort: what
    /// can't be removed is left for the next save.
    fn recover(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let single = self.target().is_file();
        let current = if single { None } else { self.read_index() };
        let committed = current.as_ref().and_then(|(_, idx)| idx.save_id());
        let named: HashSet<&str> = current
            .as_ref()
            .map(|(_, idx)| idx.files().into_iter().collect())
            .unwrap_or_default();
        let index_name = self.index_name();
        for name in &names {
            let path = self.dir.join(name);
            if let Some((inner, id, ext)) = parse_tagged(name) {
                let ours = Some(id) == committed;
                if ext == "tmp" && self.is_shard_name(inner) {
                    if ours && named.contains(inner) {
                        let _ = io::replace(&path, &self.dir.join(inner));
                    } else {
                        remove(&path);
                    }
                } else if ext == "old" && inner == index_name {
                    if ours {
                        self.remove_replaced(&path, &named);
                    }
                    remove(&path);
                }
            } else if let Some(inner) = parse_atomic_temp(name) {
                let belongs = inner == self.base
                    || inner == index_name
                    || parse_tagged(inner)
                        .is_some_and(|(i, _, _)| self.is_shard_name(i) || i == index_name);
                if belongs {
                    remove(&path);
                }
            }
        }
        if single && self.index_path().exists() {
            self.remove_index_set();
        }
    }

    /// Removes the files the index copied at `journal` names that `keep`
    /// (the committed index's files) doesn't.
    fn remove_replaced(&self, journal: &Path, keep: &HashSet<&str>) {
        let Ok(bytes) = std::fs::read(journal) else {
            return;
        };
        let Some(old) = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| shards::parse_index(t).ok())
        else {
            return;
        };
        for f in old.files() {
            if !keep.contains(f) && self.removable(f) {
                remove(&self.dir.join(f));
            }
        }
    }

    /// Commits a single file, which the caller has just renamed into place
    /// at [`Save::target`]: removes the index it replaced, if any, and that
    /// index's shards.
    pub fn commit_single(mut self) {
        self.temps.clear();
        if self.index_path().exists() {
            self.remove_index_set();
        }
    }

    /// Commits a shard set whose shards were written to their temporary
    /// names ([`Save::shard_temp`]): writes the index (`weight_map`, each
    /// tensor's shard, and `total_size`, with this save's id), removes the
    /// single file it replaces, renames the shards into place and removes
    /// the files of the index it replaced that it doesn't name. With
    /// `sync`, each step is on disk before the next.
    pub fn commit_shards(
        mut self,
        weight_map: &[(String, String)],
        total_size: u64,
        sync: bool,
    ) -> Result<()> {
        let index = self.index_path();
        let single = self.target();
        let had_single = single.is_file();
        let new_files: HashSet<&str> = weight_map.iter().map(|(_, f)| f.as_str()).collect();
        // The index being replaced, kept as a journal while its files that
        // the new one doesn't name are still there.
        let mut journal = None;
        if !had_single {
            if let Some((bytes, old)) = self.read_index() {
                if old
                    .files()
                    .iter()
                    .any(|f| !new_files.contains(f) && self.removable(f))
                {
                    let path = self
                        .dir
                        .join(format!(".{}.{}.old", self.index_name(), self.id));
                    self.temps.push(path.clone());
                    shards::write_index_bytes(&path, &bytes, sync)?;
                    journal = Some(path);
                }
            }
        }
        let text = shards::format_index(total_size, weight_map, Some(&self.id))?;
        shards::write_index_bytes(&index, &text, sync)?;
        if had_single {
            // The commit: without the single file, the folder is the index.
            if let Err(e) = std::fs::remove_file(&single) {
                // The single file is still the checkpoint: take the new
                // index back (the temporary files go when `self` drops).
                remove(&index);
                return Err(Error::io(&e, "can't remove the file the shards replace"));
            }
        }
        // Committed: the temporary files are the checkpoint's shards now.
        let temps = std::mem::take(&mut self.temps);
        if sync {
            io::sync_dir(&self.dir);
        }
        for temp in &temps {
            let Some((inner, _, "tmp")) = temp
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_tagged)
            else {
                continue;
            };
            // A shard that can't be renamed (open elsewhere, on Windows) is
            // read under its temporary name, and renamed by the next save.
            let _ = io::replace(temp, &self.dir.join(inner));
        }
        if sync {
            io::sync_dir(&self.dir);
        }
        if let Some(journal) = journal {
            self.remove_replaced(&journal, &new_files);
            remove(&journal);
        }
        // Done: the id is needed no more, and without it the index is the
        // one transformers writes, the same bytes for the same tensors. (If
        // this fails, the index with the id is as good.)
        if let Ok(text) = shards::format_index(total_size, weight_map, None) {
            let _ = shards::write_index_bytes(&index, &text, sync);
        }
        Ok(())
    }
}

impl Drop for Save {
    fn drop(&mut self) {
        for t in self.temps.drain(..) {
            remove(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ok() -> impl FnMut() -> Result<()> {
        || Ok(())
    }

    use crate::io::test_dirs::entries;

    fn tempdir() -> PathBuf {
        crate::io::test_dirs::tempdir("ckpt")
    }

    fn write(path: &Path, text: &str) {
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// A sharded save of `n` shards with contents `tag-k`.
    fn save_shards(dir: &Path, n: usize, tag: &str) {
        let mut s = Save::begin(&dir.join("model.safetensors"), &mut ok()).unwrap();
        let mut map = Vec::new();
        for k in 1..=n {
            let name = s.shard_name(k, n);
            write(&s.shard_temp(&name), &format!("{tag}-{k}"));
            map.push((format!("t{k}"), name));
        }
        s.commit_shards(&map, 0, false).unwrap();
    }

    fn save_single(dir: &Path, tag: &str) {
        let s = Save::begin(&dir.join("model.safetensors"), &mut ok()).unwrap();
        write(&s.target(), tag);
        s.commit_single();
    }

    #[test]
    fn a_second_save_to_a_folder_of_this_process_is_an_error_not_a_deadlock() {
        let dir = tempdir();
        let first = Save::begin(&dir.join("a.safetensors"), &mut ok()).unwrap();
        let err = Save::begin_unless_held(&dir.join("b.safetensors"), &mut ok())
            .err()
            .unwrap();
        assert_eq!(err.kind, Kind::Io);
        assert!(err.hint.is_some());
        drop(first);
        assert!(Save::begin_unless_held(&dir.join("b.safetensors"), &mut ok()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_and_ids_are_recognised_exactly() {
        let id = new_save_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_save_id());
        let t = format!(".model-00001-of-00002.safetensors.{id}.tmp");
        assert_eq!(
            parse_tagged(&t),
            Some(("model-00001-of-00002.safetensors", id.as_str(), "tmp"))
        );
        assert_eq!(parse_tagged(".x.0123.tmp"), None);
        assert_eq!(parse_tagged(&format!(".x.{id}.bak")), None);
        assert_eq!(
            parse_atomic_temp(".model.safetensors.123-4.tmp"),
            Some("model.safetensors")
        );
        assert_eq!(parse_atomic_temp(".model.safetensors.12a-4.tmp"), None);
        let dir = tempdir();
        let s = Save::begin(&dir.join("model.safetensors"), &mut ok()).unwrap();
        assert!(s.is_shard_name("model-00001-of-00002.safetensors"));
        assert!(!s.is_shard_name("model-0001-of-00002.safetensors"));
        assert!(!s.is_shard_name("other-00001-of-00002.safetensors"));
        assert!(!s.is_shard_name("model-00001-of-0000x.safetensors"));
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_form_replaces_the_checkpoint_as_a_whole() {
        let dir = tempdir();
        write(&dir.join("config.json"), "{}");
        save_shards(&dir, 3, "a");
        let shards3: Vec<String> = (1..=3)
            .map(|k| format!("model-{k:05}-of-00003.safetensors"))
            .collect();
        let mut want: Vec<String> = shards3.clone();
        want.extend(["config.json".into(), "model.safetensors.index.json".into()]);
        want.sort();
        assert_eq!(entries(&dir), want);
        // The same names again: replaced in place, nothing else left.
        save_shards(&dir, 3, "b");
        assert_eq!(entries(&dir), want);
        assert_eq!(
            std::fs::read_to_string(dir.join(&shards3[2])).unwrap(),
            "b-3"
        );
        let two_shards = [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        ];
        // Fewer shards: the others go.
        save_shards(&dir, 2, "c");
        assert_eq!(entries(&dir), two_shards);
        // A single file: the index and its shards go.
        save_single(&dir, "d");
        assert_eq!(entries(&dir), ["config.json", "model.safetensors"]);
        // Shards again: the single file goes.
        save_shards(&dir, 2, "e");
        assert_eq!(entries(&dir), two_shards);
        // Once done, the index holds no save id.
        let idx = shards::read_index(&dir.join("model.safetensors.index.json")).unwrap();
        assert!(idx.save_id().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_save_dropped_before_its_commit_leaves_nothing() {
        let dir = tempdir();
        save_shards(&dir, 2, "a");
        let before = entries(&dir);
        let mut s = Save::begin(&dir.join("model.safetensors"), &mut ok()).unwrap();
        for k in 1..=3 {
            let name = s.shard_name(k, 3);
            write(&s.shard_temp(&name), "x");
        }
        drop(s);
        assert_eq!(entries(&dir), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Leaves `dir` as a save killed at `step` would: 0 with its shards
    /// written, 1 after its index, 2 after one rename, 3 after the
    /// renames.
    fn killed_save(dir: &Path, n: usize, step: usize, tag: &str) -> Vec<(String, String)> {
        let mut s = Save::begin(&dir.join("model.safetensors"), &mut ok()).unwrap();
        let mut map = Vec::new();
        let mut temps = Vec::new();
        for k in 1..=n {
            let name = s.shard_name(k, n);
            let t = s.shard_temp(&name);
            write(&t, &format!("{tag}-{k}"));
            temps.push((t, name.clone()));
            map.push((format!("t{k}"), name));
        }
        let old = s.read_index();
        if step >= 1 {
            if let Some((bytes, _)) = &old {
                shards::write_index_bytes(
                    &dir.join(format!(".model.safetensors.index.json.{}.old", s.id)),
                    bytes,
                    false,
                )
                .unwrap();
            }
            let text = shards::format_index(0, &map, Some(&s.id)).unwrap();
            shards::write_index_bytes(&s.index_path(), &text, false).unwrap();
        }
        let renames = match step {
            0 | 1 => 0,
            2 => 1,
            _ => n,
        };
        for (t, name) in &temps[..renames] {
            std::fs::rename(t, dir.join(name)).unwrap();
        }
        // A kill: the files stay (the system releases the lock).
        s.temps.clear();
        drop(s);
        map
    }

    #[test]
    fn the_next_save_finishes_or_undoes_a_killed_one() {
        for step in 0..4 {
            let dir = tempdir();
            save_shards(&dir, 3, "a");
            killed_save(&dir, 2, step, "b");
            // The next save finds the folder as the killed one left it.
            let s = Save::begin(&dir.join("model.safetensors"), &mut ok()).unwrap();
            let names = entries(&dir);
            if step == 0 {
                // Not committed: the old checkpoint, exactly.
                assert_eq!(names.len(), 4, "{step}: {names:?}");
                assert_eq!(
                    std::fs::read_to_string(dir.join("model-00003-of-00003.safetensors")).unwrap(),
                    "a-3"
                );
            } else {
                // Committed: the new checkpoint, its shards in place.
                assert_eq!(
                    names,
                    [
                        "model-00001-of-00002.safetensors",
                        "model-00002-of-00002.safetensors",
                        "model.safetensors.index.json"
                    ],
                    "{step}"
                );
                assert_eq!(
                    std::fs::read_to_string(dir.join("model-00002-of-00002.safetensors")).unwrap(),
                    "b-2"
                );
            }
            drop(s);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_stale_index_beside_a_single_file_goes_with_its_shards_only() {
        let dir = tempdir();
        save_shards(&dir, 2, "a");
        write(&dir.join("model.safetensors"), "single");
        write(&dir.join("notes.txt"), "keep");
        write(
            &dir.join("model-00009-of-00009.safetensors"),
            "not named by the index",
        );
        let s = Save::begin(&dir.join("model.safetensors"), &mut ok()).unwrap();
        assert_eq!(
            entries(&dir),
            [
                "model-00009-of-00009.safetensors",
                "model.safetensors",
                "notes.txt"
            ]
        );
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn links_are_followed_and_special_files_refused() {
        let dir = tempdir();
        let real = dir.join("real.safetensors");
        write(&real, "x");
        std::os::unix::fs::symlink("real.safetensors", dir.join("link.safetensors")).unwrap();
        let s = Save::begin(&dir.join("link.safetensors"), &mut ok()).unwrap();
        assert_eq!(s.target(), real);
        drop(s);
        std::os::unix::fs::symlink("missing.safetensors", dir.join("dangling.safetensors"))
            .unwrap();
        let s = Save::begin(&dir.join("dangling.safetensors"), &mut ok()).unwrap();
        assert_eq!(s.target(), dir.join("missing.safetensors"));
        drop(s);
        let fifo = dir.join("fifo.safetensors");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Save::begin(&fifo, &mut ok()).err().unwrap();
        assert_eq!(e.kind, Kind::Io);
        assert!(e.message.contains("a FIFO"), "{}", e.message);
        // A device (when the system's /dev/zero is one).
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata("/dev/zero").is_ok_and(|m| m.file_type().is_char_device()) {
            let e = Save::begin(Path::new("/dev/zero"), &mut ok())
                .err()
                .unwrap();
            assert!(e.message.contains("a character device"), "{}", e.message);
        }
        // A link to a FIFO is the FIFO.
        std::os::unix::fs::symlink("fifo.safetensors", dir.join("to-fifo")).unwrap();
        assert_eq!(
            Save::begin(&dir.join("to-fifo"), &mut ok())
                .err()
                .unwrap()
                .kind,
            Kind::Io
        );
        let e = Save::begin(&dir.join("no-such-folder/m.safetensors"), &mut ok())
            .err()
            .unwrap();
        assert_eq!(e.kind, Kind::FileNotFound);
        assert_eq!(
            Save::begin(&dir, &mut ok()).err().unwrap().kind,
            Kind::InvalidArgument
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn saves_to_one_folder_wait_for_each_other() {
        let dir = tempdir();
        let s = Save::begin(&dir.join("model.safetensors"), &mut ok()).unwrap();
        let d = dir.clone();
        let waited = std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            let mut polls = 0;
            let s2 = Save::begin(&d.join("other.safetensors"), &mut || {
                polls += 1;
                Ok(())
            })
            .unwrap();
            drop(s2);
            (t0.elapsed(), polls)
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(s);
        let (elapsed, polls) = waited.join().unwrap();
        assert!(
            elapsed >= std::time::Duration::from_millis(150),
            "{elapsed:?}"
        );
        assert!(polls > 0);
        // An interrupt while waiting ends the wait with its error.
        let _s = Save::begin(&dir.join("model.safetensors"), &mut ok()).unwrap();
        let d = dir.clone();
        let e = std::thread::spawn(move || {
            Save::begin(&d.join("model.safetensors"), &mut || {
                Err(Error::new(Kind::Interrupted, "stop"))
            })
            .err()
            .unwrap()
            .kind
        })
        .join()
        .unwrap();
        assert_eq!(e, Kind::Interrupted);
        drop(_s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
