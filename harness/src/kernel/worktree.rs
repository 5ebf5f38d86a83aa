//! A kernel definition's work directory: a copy of its sources at a path
//! that never changes (`src/`) and a `make O=` directory beside it
//! (`build/`), so that kbuild's own dependency tracking rebuilds only what
//! a change touched. Kbuild records both paths in what it generates,
//! which is why builds of other sources reuse this place rather than
//! copying a build directory elsewhere.
//!
//! The work directory is a starting point, never a result: `incremental`
//! publishes what a finished build produced under the build's own key.
//! The copy is made of hard links into the (immutable) cached source tree
//! where it can be; a file that changes is replaced by a new file with a
//! new modification time, never written through a link.
//!
//! `state.json` says what the copy mirrors. A process that dies while the
//! directory is busy leaves `phase: busy` behind; the next user cannot
//! trust what a killed compiler left half-written and starts afresh.

use super::overlay::Overlay;
use crate::cache::{Cache, ContentHash};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// The sources a build wants: a tree, with some files replaced.
pub struct Target<'a> {
    pub tree: &'a Path,
    /// Identifies the tree's contents (not the replaced files).
    pub identity: &'a str,
    /// Whether the tree is a cache entry that nothing writes to again, so
    /// that the copy may share its files through hard links.
    pub immutable: bool,
    pub overlay: &'a Overlay,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    /// Nothing runs in it; `src/` mirrors what the state says.
    #[default]
    Clean,
    /// Syncing or building: if found so, whoever did it died.
    Busy,
}

/// The last finished build made here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Good {
    pub key: String,
    pub module_abi: String,
    pub symvers: String,
    pub config: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    phase: Phase,
    compiler: String,
    /// Tree and identity `src/` mirrors, apart from `overlay`.
    tree: Option<PathBuf>,
    identity: String,
    /// Replaced files, by path, with the hash of what `src/` holds.
    overlay: BTreeMap<PathBuf, String>,
    /// Hash of the configuration recipe's inputs the `.config` came from.
    config_inputs: String,
    /// Files that changed since the last finished build.
    changed_since_good: BTreeSet<PathBuf>,
    good: Option<Good>,
}

/// A definition's work directory, locked for as long as this lives.
pub struct WorkDir {
    root: PathBuf,
    state: State,
    _lock: File,
}

impl WorkDir {
    /// Lock the work directory of `definition` (waiting for another
    /// process that holds it), discarding what an interrupted user left.
    pub fn open(cache: &Cache, definition: &str, compiler: &str) -> Result<Self> {
        let lock = cache.lock_entry("work", definition)?;
        let root = cache.kind_dir("work")?.join(definition);
        let state: State = fs::read(root.join(STATE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let mut work = Self {
            root,
            state,
            _lock: lock,
        };
        if work.state.phase == Phase::Busy || work.state.compiler != compiler {
            if work.root.exists() {
                cache.journal(&format!(
                    "dropped work/{definition}: a build that did not finish"
                ));
                crate::event::emit(crate::event::Event::WorkDirReset {
                    dir: work.root.clone(),
                });
            }
            work.wipe()?;
            work.state.compiler = compiler.to_string();
        }
        fs::create_dir_all(work.src())?;
        fs::create_dir_all(work.build())?;
        Ok(work)
    }

    pub fn src(&self) -> PathBuf {
        self.root.join("src")
    }

    pub fn build(&self) -> PathBuf {
        self.root.join("build")
    }

    pub fn good(&self) -> Option<&Good> {
        self.state.good.as_ref()
    }

    /// Files changed since the last finished build (all of them, as far
    /// as this directory knows, when there was none).
    pub fn changed_since_good(&self) -> &BTreeSet<PathBuf> {
        &self.state.changed_since_good
    }

    fn wipe(&mut self) -> Result<()> {
        if self.root.exists() {
            fs::remove_dir_all(&self.root)
                .with_context(|| format!("cannot clear {}", self.root.display()))?;
        }
        let compiler = std::mem::take(&mut self.state.compiler);
        self.state = State {
            compiler,
            ..State::default()
        };
        Ok(())
    }

    /// Make `src/` hold exactly the target's files; mark the directory
    /// busy until `finish`. Returns the paths whose contents changed.
    pub fn sync(&mut self, target: &Target) -> Result<Vec<PathBuf>> {
        self.state.phase = Phase::Busy;
        self.save()?;
        let src = self.src();
        let same_tree = self.state.tree.as_deref() == Some(target.tree)
            && self.state.identity == target.identity;
        let changed = if same_tree {
            let old: BTreeSet<PathBuf> = self.state.overlay.keys().cloned().collect();
            sync_overlay(target, &src, &old)?
        } else {
            let seeding = self.state.tree.is_none();
            sync_tree(target, &src, seeding)?
        };
        self.state.tree = Some(target.tree.to_path_buf());
        self.state.identity = target.identity.to_string();
        self.state.overlay = target
            .overlay
            .files()
            .map(|(path, bytes)| {
                (
                    path.to_path_buf(),
                    ContentHash::new().add("", bytes).finish(),
                )
            })
            .collect();
        self.state
            .changed_since_good
            .extend(changed.iter().cloned());
        self.save()?;
        Ok(changed)
    }

    /// Whether the configuration must be made again: never made, other
    /// recipe inputs, or a Kconfig file changed.
    pub fn needs_config(&self, inputs: &str, changed: &[PathBuf]) -> bool {
        !self.build().join(".config").is_file()
            || self.state.config_inputs != inputs
            || changed.iter().any(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("Kconfig"))
            })
    }

    pub fn configured(&mut self, inputs: &str) -> Result<()> {
        self.state.config_inputs = inputs.to_string();
        self.save()
    }

    /// make has returned (whatever it said): the directory is consistent
    /// again. `good` is the build it finished, if it did.
    pub fn finish(&mut self, good: Option<Good>) -> Result<()> {
        if let Some(good) = good {
            self.state.good = Some(good);
            self.state.changed_since_good.clear();
        }
        self.state.phase = Phase::Clean;
        self.save()
    }

    fn save(&self) -> Result<()> {
        fs::create_dir_all(&self.root)?;
        let path = self.root.join(STATE);
        let staged = self.root.join(format!("{STATE}.new"));
        fs::write(&staged, serde_json::to_vec_pretty(&self.state)?)?;
        fs::rename(&staged, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

const STATE: &str = "state.json";

/// Bring `src` to the target by walking both trees. Files that are the
/// same (same inode, or same size and modification time for a copy, or
/// same contents) stay as they are.
fn sync_tree(target: &Target, src: &Path, seeding: bool) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let mut wanted = BTreeSet::new();
    for entry in WalkDir::new(target.tree).min_depth(1) {
        let entry = entry.with_context(|| format!("cannot walk {}", target.tree.display()))?;
        let relative = entry.path().strip_prefix(target.tree)?.to_path_buf();
        let there = src.join(&relative);
        wanted.insert(relative.clone());
        let kind = entry.file_type();
        if kind.is_dir() {
            if !there.is_dir() {
                remove(&there)?;
                fs::create_dir_all(&there)?;
            }
        } else if kind.is_symlink() {
            let link = fs::read_link(entry.path())?;
            if fs::read_link(&there).ok().as_ref() != Some(&link) {
                remove(&there)?;
                std::os::unix::fs::symlink(&link, &there)?;
                changed.push(relative);
            }
        } else if target.overlay.get(&relative).is_none()
            && !same_file(entry.path(), &there, target.immutable)?
        {
            place(entry.path(), &there, target.immutable && seeding, seeding)?;
            if !seeding {
                changed.push(relative);
            }
        }
    }
    // What the target does not have goes (deepest first).
    let mut stale = Vec::new();
    for entry in WalkDir::new(src).min_depth(1).contents_first(true) {
        let entry = entry?;
        let relative = entry.path().strip_prefix(src)?.to_path_buf();
        if !wanted.contains(&relative) && target.overlay.get(&relative).is_none() {
            stale.push((relative, entry.path().to_path_buf()));
        }
    }
    for (relative, path) in stale {
        remove(&path)?;
        changed.push(relative);
    }
    for (relative, bytes) in target.overlay.files() {
        if write_if_different(&src.join(relative), Some(bytes))? {
            changed.push(relative.to_path_buf());
        }
    }
    Ok(changed)
}

/// Same tree as last time: only the replaced files of the last and of
/// this build can differ.
fn sync_overlay(target: &Target, src: &Path, old: &BTreeSet<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut paths: BTreeSet<&Path> = old.iter().map(PathBuf::as_path).collect();
    paths.extend(target.overlay.files().map(|(path, _)| path));
    let mut changed = Vec::new();
    for relative in paths {
        let wanted = match target.overlay.get(relative) {
            Some(bytes) => Some(bytes.to_vec()),
            None => match fs::read(target.tree.join(relative)) {
                Ok(bytes) => Some(bytes),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(err) => return Err(err.into()),
            },
        };
        if write_if_different(&src.join(relative), wanted.as_deref())? {
            changed.push(relative.to_path_buf());
        }
    }
    Ok(changed)
}

fn same_file(wanted: &Path, there: &Path, immutable: bool) -> Result<bool> {
    let Ok(have) = fs::symlink_metadata(there) else {
        return Ok(false);
    };
    let want = fs::metadata(wanted)?;
    if !have.is_file() || have.len() != want.len() {
        return Ok(false);
    }
    if have.dev() == want.dev() && have.ino() == want.ino() {
        return Ok(true);
    }
    // A copy of a tree someone edits keeps the original's time until it
    // changes (see `place`).
    if !immutable && have.mtime() == want.mtime() && have.mtime_nsec() == want.mtime_nsec() {
        return Ok(true);
    }
    Ok(fs::read(wanted)? == fs::read(there)?)
}

/// Put `wanted`'s file at `there`: a hard link if `link` (and the file
/// system allows it), else a copy. A copy made while seeding keeps the
/// original's time (nothing is built yet); a changed file gets the time
/// of now, so that make rebuilds what depends on it.
fn place(wanted: &Path, there: &Path, link: bool, keep_time: bool) -> Result<()> {
    remove(there)?;
    if link && fs::hard_link(wanted, there).is_ok() {
        return Ok(());
    }
    let bytes = fs::read(wanted).with_context(|| format!("cannot read {}", wanted.display()))?;
    write_new(there, &bytes)?;
    let metadata = fs::metadata(wanted)?;
    fs::set_permissions(there, metadata.permissions())?;
    if keep_time {
        File::options()
            .write(true)
            .open(there)?
            .set_modified(metadata.modified()?)?;
    }
    Ok(())
}

/// Replace `path` by a new file with `bytes` (or remove it for None),
/// unless it already holds exactly that. Whether anything changed.
fn write_if_different(path: &Path, bytes: Option<&[u8]>) -> Result<bool> {
    let have = fs::read(path).ok();
    if have.as_deref() == bytes {
        return Ok(false);
    }
    match bytes {
        Some(bytes) => {
            let mode = fs::metadata(path).ok().map(|m| m.permissions());
            write_new(path, bytes)?;
            if let Some(mode) = mode {
                fs::set_permissions(path, mode)?;
            }
        }
        None => remove(path)?,
    }
    Ok(true)
}

/// A new inode with `bytes`, renamed over `path`: a hard-linked original
/// is never written through.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().context("a file has a directory")?;
    fs::create_dir_all(parent)?;
    let mut staged = tempfile::NamedTempFile::new_in(parent)?;
    staged.write_all(bytes)?;
    staged
        .persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(_) => {}
    }
    Ok(())
}

/// A copy of `tree` made of hard links: whoever changes a file of either
/// copy replaces it (as the work directory and patch(1) do), never writes
/// through it.
pub(super) fn link_tree(tree: &Path, to: &Path) -> Result<()> {
    for entry in WalkDir::new(tree) {
        let entry = entry?;
        let there = to.join(entry.path().strip_prefix(tree)?);
        let kind = entry.file_type();
        if kind.is_dir() {
            fs::create_dir_all(&there)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &there)?;
        } else {
            fs::hard_link(entry.path(), &there)
                .with_context(|| format!("cannot link {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// A file whose change cannot alter what a module built against the
/// kernel compiles to: C sources of the kernel itself (not of the host
/// tools in scripts/ and tools/ that module builds run).
pub fn module_neutral(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "c")
        && !path.starts_with("scripts")
        && !path.starts_with("tools")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    fn read_all(dir: &Path) -> BTreeMap<String, String> {
        WalkDir::new(dir)
            .into_iter()
            .map(Result::unwrap)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let relative = e.path().strip_prefix(dir).unwrap().display().to_string();
                (relative, fs::read_to_string(e.path()).unwrap())
            })
            .collect()
    }

    fn target<'a>(tree: &'a Path, overlay: &'a Overlay, identity: &'a str) -> Target<'a> {
        Target {
            tree,
            identity,
            immutable: true,
            overlay,
        }
    }

    #[test]
    fn seeding_links_and_a_change_is_a_new_file() {
        let base = tree(&[("a.c", "one"), ("d/b.h", "two")]);
        let cache = Cache::at(tempfile::tempdir().unwrap().keep()).unwrap();
        let mut work = WorkDir::open(&cache, "k", "gcc").unwrap();
        let none = Overlay::default();
        let changed = work.sync(&target(base.path(), &none, "v1")).unwrap();
        assert!(changed.is_empty(), "seeding reports nothing: {changed:?}");
        let linked = fs::metadata(work.src().join("a.c")).unwrap();
        assert_eq!(
            linked.ino(),
            fs::metadata(base.path().join("a.c")).unwrap().ino()
        );

        let overlay = Overlay::from_files([("a.c", b"mutated".to_vec())]);
        let changed = work.sync(&target(base.path(), &overlay, "v1")).unwrap();
        assert_eq!(changed, [PathBuf::from("a.c")]);
        assert_eq!(fs::read_to_string(base.path().join("a.c")).unwrap(), "one");
        assert_eq!(read_all(&work.src())["a.c"], "mutated");

        // Back to the tree as it is: the file is restored, again a new one.
        let changed = work.sync(&target(base.path(), &none, "v1")).unwrap();
        assert_eq!(changed, [PathBuf::from("a.c")]);
        assert_eq!(read_all(&work.src()), read_all(base.path()));
    }

    #[test]
    fn another_tree_is_mirrored_exactly() {
        let first = tree(&[("a.c", "one"), ("gone/x.h", "x"), ("same.h", "s")]);
        let second = tree(&[("a.c", "uno"), ("new.c", "n"), ("same.h", "s")]);
        let cache = Cache::at(tempfile::tempdir().unwrap().keep()).unwrap();
        let mut work = WorkDir::open(&cache, "k", "gcc").unwrap();
        let none = Overlay::default();
        work.sync(&target(first.path(), &none, "v1")).unwrap();
        let mut changed = work.sync(&target(second.path(), &none, "v2")).unwrap();
        changed.sort();
        let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["a.c", "gone", "gone/x.h", "new.c"]);
        assert_eq!(read_all(&work.src()), read_all(second.path()));
        assert!(work.changed_since_good().contains(Path::new("new.c")));
    }

    #[test]
    fn a_directory_left_busy_is_started_afresh() {
        let base = tree(&[("a.c", "one")]);
        let cache = Cache::at(tempfile::tempdir().unwrap().keep()).unwrap();
        let none = Overlay::default();
        {
            let mut work = WorkDir::open(&cache, "k", "gcc").unwrap();
            work.sync(&target(base.path(), &none, "v1")).unwrap();
            fs::write(work.build().join("half.o"), "x").unwrap();
            // Dropped without finish: as if the process died.
        }
        let work = WorkDir::open(&cache, "k", "gcc").unwrap();
        assert!(!work.build().join("half.o").exists());
        assert!(work.good().is_none());
        drop(work);
        let mut work = WorkDir::open(&cache, "k", "gcc").unwrap();
        work.sync(&target(base.path(), &none, "v1")).unwrap();
        work.finish(None).unwrap();
        fs::write(work.build().join("kept.o"), "x").unwrap();
        drop(work);
        let work = WorkDir::open(&cache, "k", "gcc").unwrap();
        assert!(work.build().join("kept.o").exists());
    }

    #[test]
    fn only_kernel_c_files_are_module_neutral() {
        assert!(module_neutral(Path::new("kernel/livepatch/core.c")));
        assert!(!module_neutral(Path::new("include/linux/livepatch.h")));
        assert!(!module_neutral(Path::new("scripts/mod/modpost.c")));
        assert!(!module_neutral(Path::new("tools/objtool/check.c")));
        assert!(!module_neutral(Path::new("Makefile")));
    }
}
