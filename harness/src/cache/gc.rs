//! Removing what is stale from the cache: leftovers of builds that died
//! (staging directories, kernel builds without their completion marker)
//! and entries not used for a while (a kernel whose lock moved on, the
//! saved states and fixtures of its old builds). An entry is removed only
//! under its lock, so nothing a running build holds is touched.

use super::{Cache, DISCARDED, LOCKS, STAGING};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use walkdir::WalkDir;

/// Kinds of entries, each a directory of `<key>` entries (fixtures are
/// one directory per kernel build).
const KINDS: &[&str] = &[
    "apt",
    "builds",
    "downloads",
    "initramfs",
    "kernels",
    "qemu",
    "qemu-plans",
    "snapshots",
    "sources",
    "tools",
];
/// Written last into a kernel build directory (kernel/build.rs).
const BUILD_MARKER: &str = ".klp-harness-complete";

#[derive(Debug)]
pub struct Removed {
    pub path: PathBuf,
    pub bytes: u64,
    pub why: &'static str,
}

#[derive(Debug)]
pub struct Report {
    pub removed: Vec<Removed>,
    /// What the cache holds afterwards.
    pub kept_bytes: u64,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut text = String::new();
        for removed in &self.removed {
            text += &format!(
                "removed {} ({}, {})\n",
                removed.path.display(),
                human(removed.bytes),
                removed.why
            );
        }
        let freed: u64 = self.removed.iter().map(|r| r.bytes).sum();
        text += &format!(
            "removed {} entries, {}; the cache holds {}\n",
            self.removed.len(),
            human(freed),
            human(self.kept_bytes)
        );
        text
    }
}

/// Remove leftovers, and entries unused for longer than `keep`.
pub fn collect(cache: &Cache, keep: Duration) -> Result<Report> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    let mut kinds: Vec<String> = KINDS.iter().map(|k| k.to_string()).collect();
    if let Ok(kernels) = fs::read_dir(cache.root().join("fixtures")) {
        for kernel in kernels.flatten() {
            kinds.push(format!("fixtures/{}", kernel.file_name().to_string_lossy()));
        }
    }
    for kind in &kinds {
        let Ok(entries) = fs::read_dir(cache.root().join(kind)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == LOCKS {
                continue;
            }
            // The lock each candidate's builder or user holds: that of its key.
            let why = if let Some(rest) = name.strip_prefix(STAGING) {
                // .building-<key>-<random>
                let key = rest.rsplit_once('-').map_or(rest, |(key, _)| key);
                Some(("a build that did not finish", Some(key)))
            } else if name.starts_with(DISCARDED) {
                Some(("left over from a removal", None))
            } else if kind == "builds" && !path.join(BUILD_MARKER).exists() {
                Some(("a kernel build that did not finish", Some(name.as_str())))
            } else if unused_for(&path, now) > keep {
                Some(("not used recently", Some(name.as_str())))
            } else {
                None
            };
            let Some((why, key)) = why else {
                continue;
            };
            // Held by a process building or using it right now: leave it.
            let _guard = match key {
                Some(key) => match cache.try_lock_entry(kind, key)? {
                    Some(guard) => Some(guard),
                    None => continue,
                },
                None => None,
            };
            let bytes = size_of(&path);
            remove(cache, &path)?;
            cache.journal(&format!(
                "gc removed {} ({why})",
                path.strip_prefix(cache.root()).unwrap_or(&path).display()
            ));
            removed.push(Removed { path, bytes, why });
        }
    }
    Ok(Report {
        removed,
        kept_bytes: size_of(cache.root()),
    })
}

fn unused_for(path: &Path, now: SystemTime) -> Duration {
    fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| now.duration_since(modified).ok())
        .unwrap_or_default()
}

fn remove(cache: &Cache, path: &Path) -> Result<()> {
    if path.is_dir() {
        cache.discard(path)?;
        if path.exists() {
            fs::remove_dir_all(path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    } else {
        fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
    }
}

/// Bytes of the regular files under `path` (symbolic links not followed).
pub fn size_of(path: &Path) -> u64 {
    WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.len())
        .sum()
}

pub fn human(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= 1024.0 * MB {
        format!("{:.1} GB", bytes as f64 / (1024.0 * MB))
    } else {
        format!("{:.1} MB", bytes as f64 / MB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn age(path: &Path, days: u64) {
        let when = SystemTime::now() - Duration::from_secs(days * 86_400);
        File::open(path).unwrap().set_modified(when).unwrap();
    }

    #[test]
    fn leftovers_and_unused_entries_go_while_used_and_locked_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().to_path_buf()).unwrap();
        let make = |path: &str, bytes: usize| {
            let dir = tmp.path().join(path);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("data"), vec![0u8; bytes]).unwrap();
            dir
        };
        let fresh = make("kernels/fresh", 10);
        let old = make("snapshots/old", 1000);
        age(&old, 40);
        let old_fixture = make("fixtures/k1/klp_a-1", 100);
        age(&old_fixture, 40);
        let dead_staging = make("fixtures/k1/.building-klp_b-2-XyZ", 100);
        let busy_staging = make("kernels/.building-busy-AbC", 100);
        let complete = make("builds/done", 10);
        fs::write(complete.join(BUILD_MARKER), "6.12\n").unwrap();
        let incomplete = make("builds/half", 10);
        let _busy = cache.lock_entry("kernels", "busy").unwrap();

        let report = collect(&cache, Duration::from_secs(30 * 86_400)).unwrap();
        let gone: Vec<&Path> = report.removed.iter().map(|r| r.path.as_path()).collect();
        for path in [&old, &old_fixture, &dead_staging, &incomplete] {
            assert!(gone.contains(&path.as_path()), "{} stayed", path.display());
            assert!(!path.exists(), "{} still there", path.display());
        }
        for path in [&fresh, &busy_staging, &complete] {
            assert!(path.exists(), "{} was removed", path.display());
        }
        assert_eq!(report.removed.iter().map(|r| r.bytes).sum::<u64>(), 1210);
        assert!(report.summary().contains("removed 4 entries, 0.0 MB"));
    }
}
