//! Content-addressed build cache: every entry is keyed by a hash of its
//! inputs, built in a temporary directory and renamed into place, under a
//! file lock so that concurrent test processes build it once.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

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
        let dir = self.root.join(kind);
        let target = dir.join(key);
        if target.exists() {
            return Ok(target);
        }
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let _lock = self.lock(&format!("{kind}-{key}").replace('/', "-"))?;
        if target.exists() {
            return Ok(target);
        }
        let staging = tempfile::Builder::new()
            .prefix(".building-")
            .tempdir_in(&dir)
            .with_context(|| format!("cannot create a staging directory in {}", dir.display()))?;
        build(staging.path())?;
        let staged = staging.keep();
        fs::rename(&staged, &target).with_context(|| {
            format!(
                "cannot publish {} as {}",
                staged.display(),
                target.display()
            )
        })?;
        Ok(target)
    }

    /// An exclusive lock held until the returned file is dropped.
    pub fn lock(&self, name: &str) -> Result<File> {
        let locks = self.root.join("locks");
        fs::create_dir_all(&locks)?;
        let path = locks.join(format!("{name}.lock"));
        let file =
            File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    }
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
        let leftovers: Vec<_> = fs::read_dir(tmp.path().join("things")).unwrap().collect();
        assert!(leftovers.is_empty(), "staging directory left behind");
    }
}
