//! A cache entry's seal: for the files whose content a later use relies
//! on (a saved guest state, a fixture's .ko), their SHA-256 when the
//! entry was made, with the size and modification time they had then.
//! A use compares size and time (cheap); a file whose size or time
//! changed is hashed again, and a different hash means the file was
//! truncated, corrupted or edited: the entry is dropped and made anew.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

pub const SEAL: &str = ".klp-seal";

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Sealed {
    path: String,
    size: u64,
    modified_ns: u128,
    sha256: String,
}

fn stat(path: &Path) -> Result<(u64, u128)> {
    let meta = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    let modified = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok((meta.len(), modified))
}

fn sha256(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Seal every file under `dir` that `wanted` picks (paths relative to `dir`).
pub fn write(dir: &Path, wanted: &dyn Fn(&Path) -> bool) -> Result<()> {
    let mut sealed = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry?;
        let relative = entry.path().strip_prefix(dir)?;
        if !entry.file_type().is_file() || !wanted(relative) {
            continue;
        }
        let (size, modified_ns) = stat(entry.path())?;
        sealed.push(Sealed {
            path: relative.to_string_lossy().into_owned(),
            size,
            modified_ns,
            sha256: sha256(entry.path())?,
        });
    }
    if sealed.is_empty() {
        return Ok(());
    }
    fs::write(dir.join(SEAL), serde_json::to_string_pretty(&sealed)?)
        .with_context(|| format!("cannot write {}", dir.join(SEAL).display()))
}

/// Whether the sealed files of the entry at `dir` are as they were made;
/// the reason when not. An entry without a seal passes.
pub fn check(dir: &Path) -> std::result::Result<(), String> {
    let Ok(text) = fs::read_to_string(dir.join(SEAL)) else {
        return Ok(());
    };
    let mut sealed: Vec<Sealed> = serde_json::from_str(&text)
        .map_err(|err| format!("{} is unreadable: {err}", dir.join(SEAL).display()))?;
    let mut restamped = false;
    for file in &mut sealed {
        let path = dir.join(&file.path);
        let (size, modified_ns) = stat(&path).map_err(|err| format!("{err:#}"))?;
        if (size, modified_ns) == (file.size, file.modified_ns) {
            continue;
        }
        if size != file.size {
            return Err(format!(
                "{} is {size} bytes, {} when it was made",
                path.display(),
                file.size
            ));
        }
        let sha = sha256(&path).map_err(|err| format!("{err:#}"))?;
        if sha != file.sha256 {
            return Err(format!(
                "{} changed since it was made (sha256 {sha}, was {})",
                path.display(),
                file.sha256
            ));
        }
        // Touched, not changed: remember the new time.
        file.modified_ns = modified_ns;
        restamped = true;
    }
    if restamped {
        if let Ok(text) = serde_json::to_string_pretty(&sealed) {
            let _ = fs::write(dir.join(SEAL), text);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    fn sealed_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state"), vec![7u8; 4096]).unwrap();
        fs::write(dir.path().join("console.log"), "boot").unwrap();
        write(dir.path(), &|path| path == Path::new("state")).unwrap();
        dir
    }

    #[test]
    fn an_untouched_entry_passes() {
        let dir = sealed_dir();
        assert_eq!(check(dir.path()), Ok(()));
        // Files that are not sealed may change.
        fs::write(dir.path().join("console.log"), "other").unwrap();
        assert_eq!(check(dir.path()), Ok(()));
    }

    #[test]
    fn a_truncated_file_is_found() {
        let dir = sealed_dir();
        let file = fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("state"))
            .unwrap();
        file.set_len(1000).unwrap();
        let why = check(dir.path()).unwrap_err();
        assert!(
            why.ends_with("state is 1000 bytes, 4096 when it was made"),
            "{why}"
        );
    }

    #[test]
    fn a_corrupted_file_of_the_same_size_is_found() {
        let dir = sealed_dir();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("state"))
            .unwrap();
        file.seek(SeekFrom::Start(2000)).unwrap();
        file.write_all(&[0]).unwrap();
        drop(file);
        let why = check(dir.path()).unwrap_err();
        assert!(why.contains("state changed since it was made"), "{why}");
    }

    #[test]
    fn a_touched_file_passes_and_is_restamped() {
        let dir = sealed_dir();
        let file = fs::File::options()
            .write(true)
            .open(dir.path().join("state"))
            .unwrap();
        file.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        assert_eq!(check(dir.path()), Ok(()));
        let seal = fs::read_to_string(dir.path().join(SEAL)).unwrap();
        assert!(seal.contains("1000000000000000"), "{seal}");
    }
}
