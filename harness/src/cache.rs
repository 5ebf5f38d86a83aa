//! Content-addressed build cache: every entry is keyed by a hash of its
//! inputs, built in a temporary directory and renamed into place, under a
//! file lock so that concurrent test processes build it once. Files a use
//! relies on can be sealed (see `seal`), `journal.log` records what was
//! built and dropped, and `gc` removes what is stale.

pub mod gc;
pub mod seal;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};
use walkdir::WalkDir;

/// Staging directories are named `.building-<key>-<random>`: `gc` can
/// tell whose they are.
const STAGING: &str = ".building-";
/// An entry being removed is renamed to `.discarded-<key>-<random>` first.
const DISCARDED: &str = ".discarded-";
/// Each kind's entry locks, beside its entries.
pub const LOCKS: &str = ".locks";

/// Root of the per-user cache, outside any checkout so that clones share it.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// `$KLP_HARNESS_CACHE`, else `$XDG_CACHE_HOME/klp-harness`, else `~/.cache/klp-harness`.
    pub fn from_env() -> Result<Self> {
        let root = if let Some(dir) = &crate::settings::load()?.cache {
            dir.clone()
        } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            PathBuf::from(dir).join("klp-harness")
        } else {
            let home =
                std::env::var_os("HOME").context("neither KLP_HARNESS_CACHE nor HOME is set")?;
            PathBuf::from(home).join(".cache/klp-harness")
        };
        Self::at(root)
    }

    pub fn at(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(&root)
            .with_context(|| format!("cannot create cache directory {}", root.display()))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the entry `kind/key`, building it with `build` first if it is
    /// not there yet. `build` fills an empty directory; on error nothing is
    /// published, so a half-built entry is never seen.
    pub fn entry(
        &self,
        kind: &str,
        key: &str,
        build: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        self.checked_entry(kind, key, |_| false, |_| Ok(()), build)
    }

    /// `entry`, with the files `sealed` picks (paths relative to the entry)
    /// sealed once built: an entry whose sealed files changed on disk is
    /// dropped and built again.
    pub fn sealed_entry(
        &self,
        kind: &str,
        key: &str,
        sealed: impl Fn(&Path) -> bool,
        build: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        self.checked_entry(kind, key, sealed, |_| Ok(()), build)
    }

    /// `sealed_entry`, where `usable` also checks what the entry refers to
    /// outside itself (a source tree, say): an entry it refuses, with its
    /// reason, is dropped and built again like a corrupted one.
    ///
    /// The returned path is the entry's real path (no link in it), so that
    /// what is built from it refers to the entry itself, not to a link that
    /// may go away with the cache that made it.
    pub fn checked_entry(
        &self,
        kind: &str,
        key: &str,
        sealed: impl Fn(&Path) -> bool,
        usable: impl Fn(&Path) -> std::result::Result<(), String>,
        build: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let check = |target: &Path| seal::check(target).and_then(|()| usable(target));
        let dir = self.kind_dir(kind)?;
        let target = dir.join(key);
        if target.exists() && check(&target).is_ok() {
            touch(&target);
            return Ok(target);
        }
        let _lock = self.lock_entry(kind, key)?;
        if target.exists() {
            match check(&target) {
                Ok(()) => {
                    touch(&target);
                    return Ok(target);
                }
                Err(why) => self.drop_entry(&target, &why)?,
            }
        }
        let started = Instant::now();
        let staging = tempfile::Builder::new()
            .prefix(&format!("{STAGING}{key}-"))
            .tempdir_in(&dir)
            .with_context(|| format!("cannot create a staging directory in {}", dir.display()))?;
        let built = build(staging.path()).and_then(|()| seal::write(staging.path(), &sealed));
        if let Err(err) = built {
            return Err(self.explain_failure(err, &format!("{kind}/{key}")));
        }
        let staged = staging.keep();
        if let Err(err) = fs::rename(&staged, &target) {
            // Published first by a process that does not share this lock
            // (a cache of an older harness): theirs is as good as ours.
            if target.exists() && check(&target).is_ok() {
                self.discard(&staged)?;
                self.journal(&format!("found {kind}/{key} published by another process"));
                return Ok(target);
            }
            return Err(err).with_context(|| {
                format!(
                    "cannot publish {} as {}",
                    staged.display(),
                    target.display()
                )
            });
        }
        self.journal(&format!(
            "built {kind}/{key} in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(target)
    }

    /// The directory of entries of `kind` (made if missing), by its real
    /// path: a kind reached through a link is the linked directory.
    pub fn kind_dir(&self, kind: &str) -> Result<PathBuf> {
        let dir = self.root.join(kind);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))
    }

    /// The lock file of the entry at `entry` (`<kind>/<key>`). It lives
    /// beside the entries of its kind (`<kind>/.locks/<key>.lock`), in the
    /// kind's real directory, so that every process that reaches the
    /// entry, through whatever cache or link, takes the same lock.
    fn lock_path(entry: &Path) -> Result<PathBuf> {
        let kind = entry
            .parent()
            .with_context(|| format!("{} is no cache entry", entry.display()))?;
        let kind =
            fs::canonicalize(kind).with_context(|| format!("cannot resolve {}", kind.display()))?;
        let locks = kind.join(LOCKS);
        fs::create_dir_all(&locks).with_context(|| format!("cannot create {}", locks.display()))?;
        let key = entry.file_name().unwrap_or_default().to_string_lossy();
        Ok(locks.join(format!("{key}.lock")))
    }

    /// An exclusive lock on the entry `kind/key`, held until the returned
    /// file is dropped: for building, replacing or removing it.
    pub fn lock_entry(&self, kind: &str, key: &str) -> Result<File> {
        lock_at(&self.kind_dir(kind)?.join(key))
    }

    /// A shared lock on the entry `kind/key`: for reading an entry that an
    /// exclusive holder rewrites in place (apt's lists).
    pub fn lock_entry_shared(&self, kind: &str, key: &str) -> Result<File> {
        let path = Self::lock_path(&self.kind_dir(kind)?.join(key))?;
        let file = open_lock(&path)?;
        file.lock_shared()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    }

    /// `lock_entry` if no other process holds the lock now.
    pub fn try_lock_entry(&self, kind: &str, key: &str) -> Result<Option<File>> {
        let path = Self::lock_path(&self.kind_dir(kind)?.join(key))?;
        let file = open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(err)) => {
                Err(err).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// Whether the entry at `path` is as it was made; if not, it is dropped
    /// (the caller makes it anew) and the reason returned.
    pub fn check_entry(&self, path: &Path) -> Result<Option<String>> {
        if seal::check(path).is_ok() {
            touch(path);
            return Ok(None);
        }
        let _lock = lock_at(path)?;
        if !path.exists() {
            return Ok(Some("removed by another process".to_string()));
        }
        match seal::check(path) {
            Ok(()) => {
                touch(path);
                Ok(None)
            }
            Err(why) => {
                self.drop_entry(path, &why)?;
                Ok(Some(why))
            }
        }
    }

    fn drop_entry(&self, path: &Path, why: &str) -> Result<()> {
        self.journal(&format!("dropped {}: {why}", self.name_of(path).display()));
        crate::event::emit(crate::event::Event::CacheEntryDropped {
            path: path.to_path_buf(),
            why: why.to_string(),
        });
        self.discard(path)
    }

    /// An entry's path as `kind/key`, whether it came through the root or
    /// by its real path.
    fn name_of<'a>(&self, path: &'a Path) -> &'a Path {
        let real_root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        path.strip_prefix(&self.root)
            .or_else(|_| path.strip_prefix(&real_root))
            .unwrap_or(path)
    }

    /// Remove an entry: renamed aside first, so that it disappears at once
    /// (a process still reading one of its files keeps its open file).
    pub fn discard(&self, path: &Path) -> Result<()> {
        let parent = path.parent().unwrap_or(&self.root);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let trash = tempfile::Builder::new()
            .prefix(&format!("{DISCARDED}{name}-"))
            .tempdir_in(parent)
            .with_context(|| format!("cannot make room to discard {}", path.display()))?;
        let moved = trash.path().join("entry");
        if fs::rename(path, &moved).is_ok() {
            fs::remove_dir_all(&moved).ok();
        }
        Ok(())
    }

    /// Say so when a build failed because the cache's file system is full.
    pub fn explain_failure(&self, err: anyhow::Error, what: &str) -> anyhow::Error {
        let out_of_space = err.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
                || cause.to_string().contains("No space left on device")
        });
        match free_space(&self.root) {
            Some((free, total)) if out_of_space || free < 1 << 20 => err.context(format!(
                "the file system holding the cache {} is full ({} free of {}); \
                 nothing was published for {what}",
                self.root.display(),
                gc::human(free),
                gc::human(total)
            )),
            _ => err,
        }
    }

    /// Append a line to `journal.log`: what was built or dropped, when, by
    /// which process. Best effort: a full disk must not hide the real error.
    pub fn journal(&self, line: &str) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Ok(mut file) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("journal.log"))
        {
            let _ = file.write_all(format!("{now} pid {} {line}\n", std::process::id()).as_bytes());
        }
    }

    /// An exclusive lock on something of this cache that is no entry
    /// (nothing another cache reaches), held until the file is dropped.
    pub fn lock(&self, name: &str) -> Result<File> {
        let locks = self.root.join("locks");
        fs::create_dir_all(&locks)?;
        let path = locks.join(format!("{name}.lock"));
        let file = open_lock(&path)?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    }
}

/// An exclusive lock on the cache entry at `entry` (see `Cache::lock_path`).
pub fn lock_at(entry: &Path) -> Result<File> {
    let path = Cache::lock_path(entry)?;
    let file = open_lock(&path)?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

/// A lock file, created if missing; one made by another user is opened
/// for reading, which is all `flock` needs.
fn open_lock(path: &Path) -> Result<File> {
    match fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
    {
        Ok(file) => Ok(file),
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            File::open(path).with_context(|| format!("cannot open {}", path.display()))
        }
        Err(err) => Err(err).with_context(|| format!("cannot open {}", path.display())),
    }
}

/// An exclusive lock on a directory itself (`flock` on the directory),
/// for what lives outside any cache: every process that reaches the
/// directory shares it, and no lock file is left behind.
pub fn lock_dir(dir: &Path) -> Result<File> {
    let file = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", dir.display()))?;
    Ok(file)
}

/// Mark an entry used now (its directory's modification time), for `gc`.
pub fn touch(path: &Path) {
    if let Ok(dir) = File::open(path) {
        let _ = dir.set_modified(SystemTime::now());
    }
}

/// Free and total bytes of the file system holding `path`.
fn free_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the struct we own and reads a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize;
    Some((stat.f_bavail * block, stat.f_blocks * block))
}

/// A SHA-256 over labelled inputs; labels keep `("a", "bc")` apart from `("ab", "c")`.
#[derive(Default)]
pub struct ContentHash(Sha256);

impl ContentHash {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, label: &str, bytes: impl AsRef<[u8]>) -> &mut Self {
        let bytes = bytes.as_ref();
        for part in [label.as_bytes(), bytes] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn add_file(&mut self, label: &str, path: &Path) -> Result<&mut Self> {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(self.add(label, bytes))
    }

    /// Every regular file under `dir`, by relative path, in a stable order.
    pub fn add_dir(&mut self, label: &str, dir: &Path) -> Result<&mut Self> {
        for entry in WalkDir::new(dir).sort_by_file_name() {
            let entry = entry.with_context(|| format!("cannot walk {}", dir.display()))?;
            if entry.file_type().is_file() {
                let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
                self.add_file(&format!("{label}/{}", relative.display()), entry.path())?;
            }
        }
        Ok(self)
    }

    /// First 16 hex digits: plenty to tell cache entries apart.
    pub fn finish(&self) -> String {
        let digest = self.0.clone().finalize();
        hex::encode(&digest[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_separate_inputs() {
        let a = ContentHash::new().add("a", "bc").finish();
        let b = ContentHash::new().add("ab", "c").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn entry_is_built_once_and_published_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().to_path_buf()).unwrap();
        let mut builds = 0;
        for _ in 0..2 {
            let path = cache
                .entry("things", "k1", |dir| {
                    builds += 1;
                    fs::write(dir.join("out"), "x")?;
                    Ok(())
                })
                .unwrap();
            assert_eq!(fs::read_to_string(path.join("out")).unwrap(), "x");
        }
        assert_eq!(builds, 1);
    }

    #[test]
    fn failed_build_publishes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().to_path_buf()).unwrap();
        let result = cache.entry("things", "k2", |_| anyhow::bail!("compiler exploded"));
        assert!(result.is_err());
        assert!(!tmp.path().join("things/k2").exists());
        let leftovers: Vec<_> = fs::read_dir(tmp.path().join("things"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != LOCKS)
            .collect();
        assert!(leftovers.is_empty(), "staging directory left behind");
    }

    #[test]
    fn a_sealed_file_changed_on_disk_is_built_again() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().to_path_buf()).unwrap();
        let mut builds = 0;
        let mut get = || {
            cache
                .sealed_entry(
                    "things",
                    "k3",
                    |path| path.extension().is_some_and(|e| e == "ko"),
                    |dir| {
                        builds += 1;
                        fs::write(dir.join("m.ko"), "module")?;
                        Ok(())
                    },
                )
                .unwrap()
        };
        let path = get();
        fs::write(path.join("m.ko"), "edited").unwrap();
        let path = get();
        assert_eq!(fs::read_to_string(path.join("m.ko")).unwrap(), "module");
        get();
        assert_eq!(builds, 2);
        let journal = fs::read_to_string(tmp.path().join("journal.log")).unwrap();
        assert!(journal.contains("dropped things/k3: "), "{journal}");
    }

    #[test]
    fn a_kind_reached_through_a_link_shares_its_owners_locks() {
        let tmp = tempfile::tempdir().unwrap();
        let owner = Cache::at(tmp.path().join("owner")).unwrap();
        let other = Cache::at(tmp.path().join("other")).unwrap();
        fs::create_dir_all(owner.root().join("builds")).unwrap();
        std::os::unix::fs::symlink(owner.root().join("builds"), other.root().join("builds"))
            .unwrap();
        let held = owner.lock_entry("builds", "k").unwrap();
        assert!(other.try_lock_entry("builds", "k").unwrap().is_none());
        assert!(other
            .try_lock_entry("builds", "other-key")
            .unwrap()
            .is_some());
        drop(held);
        assert!(other.try_lock_entry("builds", "k").unwrap().is_some());
        // Entries are named by their real path, not the link's.
        let path = other.entry("builds", "k", |_| Ok(())).unwrap();
        assert_eq!(
            path,
            fs::canonicalize(owner.root().join("builds/k")).unwrap()
        );
    }

    #[test]
    fn an_entry_published_by_another_process_first_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().to_path_buf()).unwrap();
        let path = cache
            .entry("things", "k4", |dir| {
                // What a process that does not share the lock publishes meanwhile.
                let theirs = dir.parent().unwrap().join("k4");
                fs::create_dir(&theirs)?;
                fs::write(theirs.join("out"), "theirs")?;
                fs::write(dir.join("out"), "ours").map_err(Into::into)
            })
            .unwrap();
        assert_eq!(fs::read_to_string(path.join("out")).unwrap(), "theirs");
        let journal = fs::read_to_string(tmp.path().join("journal.log")).unwrap();
        assert!(
            journal.contains("found things/k4 published by another process"),
            "{journal}"
        );
    }

    #[test]
    fn an_entry_whose_dependency_is_gone_is_built_again() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache")).unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir(&tree).unwrap();
        let usable = |dir: &Path| match dir.join("tree").exists() {
            true => Ok(()),
            false => Err("its tree is gone".to_string()),
        };
        let mut builds = 0;
        let mut get = || {
            cache
                .checked_entry(
                    "things",
                    "k5",
                    |_| false,
                    usable,
                    |dir| {
                        builds += 1;
                        std::os::unix::fs::symlink(&tree, dir.join("tree"))?;
                        Ok(())
                    },
                )
                .unwrap()
        };
        get();
        get();
        fs::remove_dir(&tree).unwrap();
        fs::create_dir(&tree).unwrap();
        get();
        fs::remove_dir(&tree).unwrap();
        get();
        assert_eq!(builds, 2);
        let journal = fs::read_to_string(tmp.path().join("cache/journal.log")).unwrap();
        assert!(
            journal.contains("dropped things/k5: its tree is gone"),
            "{journal}"
        );
    }
}
