//! Debian's snapshot archive (snapshot.debian.org), which keeps every
//! version ever uploaded: the exact file of a pin the archive no longer
//! offers. Its machine-readable API names a binary package's files by
//! SHA-1; the file is fetched by that hash and checked against it.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The answer of `/mr/binary/PACKAGE/VERSION/binfiles?fileinfo=1`.
#[derive(Debug, Deserialize)]
struct Binfiles {
    result: Vec<Binfile>,
    #[serde(default)]
    fileinfo: HashMap<String, Vec<FileInfo>>,
}

#[derive(Debug, Deserialize)]
struct Binfile {
    architecture: String,
    hash: String,
}

#[derive(Debug, Deserialize)]
struct FileInfo {
    name: String,
}

/// One .deb the snapshot archive serves.
#[derive(Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Its SHA-1, which also names it in the archive.
    pub sha1: String,
    /// Its file name, e.g. `linux-kbuild-6.1_6.1.192-2_amd64.deb`.
    pub name: String,
}

pub fn binfiles_url(base: &str, package: &str, version: &str) -> String {
    format!("{base}/mr/binary/{package}/{version}/binfiles?fileinfo=1")
}

pub fn file_url(base: &str, sha1: &str) -> String {
    format!("{base}/file/{sha1}")
}

/// The file built for `architecture` (or for all) in a binfiles answer.
pub fn choose(json: &str, architecture: &str) -> Result<SnapshotFile> {
    let binfiles: Binfiles =
        serde_json::from_str(json).context("the snapshot archive's answer is not binfiles JSON")?;
    let offered: Vec<&str> = binfiles
        .result
        .iter()
        .map(|file| file.architecture.as_str())
        .collect();
    let file = binfiles
        .result
        .iter()
        .find(|file| file.architecture == architecture || file.architecture == "all")
        .with_context(|| {
            format!(
                "no file for {architecture} or all (architectures: {})",
                offered.join(", ")
            )
        })?;
    let name = binfiles
        .fileinfo
        .get(&file.hash)
        .and_then(|infos| infos.first())
        .map(|info| info.name.clone())
        .with_context(|| format!("no file name for {}", file.hash))?;
    if name.contains('/') || !name.ends_with(".deb") {
        bail!("unexpected file name {name:?} for {}", file.hash);
    }
    Ok(SnapshotFile {
        sha1: file.hash.to_lowercase(),
        name,
    })
}

/// Fetch `package=version` for `architecture` from the archive at `base`
/// into `dir`, checked against its SHA-1.
pub fn download(
    base: &str,
    package: &str,
    version: &str,
    architecture: &str,
    dir: &Path,
) -> Result<PathBuf> {
    let what = format!("{package}={version} from the snapshot archive {base}");
    crate::event::emit(crate::event::Event::Downloading { what: what.clone() });
    let url = binfiles_url(base, package, version);
    let json = curl(&url, None).with_context(|| format!("cannot look up {what}"))?;
    let file = choose(&json, architecture).with_context(|| format!("the answer of {url}"))?;
    let target = dir.join(&file.name);
    curl(&file_url(base, &file.sha1), Some(&target))
        .with_context(|| format!("cannot download {what}"))?;
    let actual = hex::encode(Sha1::digest(
        fs::read(&target).with_context(|| format!("cannot read {}", target.display()))?,
    ));
    if actual != file.sha1 {
        fs::remove_file(&target)?;
        bail!("{what}: SHA-1 is {actual}, expected {}", file.sha1);
    }
    Ok(target)
}

/// `curl -fsSL URL`, into `output` or returned.
fn curl(url: &str, output: Option<&Path>) -> Result<String> {
    let mut command = Command::new("curl");
    command.arg("-fsSL");
    if let Some(output) = output {
        command.arg("-o").arg(output);
    }
    command.arg(url);
    super::run_checked(&mut command).context("(package curl)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of snapshot.debian.org's answer, as its API documents
    /// it; the archive is not reachable from where these tests ran.
    const KBUILD: &str = r#"{
        "_comment": "foo",
        "binary_version": "6.1.192-2",
        "binary": "linux-kbuild-6.1",
        "result": [
            {"architecture": "arm64", "hash": "1111111111111111111111111111111111111111"},
            {"architecture": "amd64", "hash": "AB12cd34ef56ab12cd34ef56ab12cd34ef56ab12"}
        ],
        "fileinfo": {
            "1111111111111111111111111111111111111111": [
                {"archive_name": "debian-security", "first_seen": "20250101T000000Z",
                 "name": "linux-kbuild-6.1_6.1.192-2_arm64.deb",
                 "path": "/pool/updates/main/l/linux", "size": 1000}
            ],
            "AB12cd34ef56ab12cd34ef56ab12cd34ef56ab12": [
                {"archive_name": "debian-security", "first_seen": "20250101T000000Z",
                 "name": "linux-kbuild-6.1_6.1.192-2_amd64.deb",
                 "path": "/pool/updates/main/l/linux", "size": 1000}
            ]
        }
    }"#;

    #[test]
    fn the_hosts_architecture_is_chosen() {
        assert_eq!(
            choose(KBUILD, "amd64").unwrap(),
            SnapshotFile {
                sha1: "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12".into(),
                name: "linux-kbuild-6.1_6.1.192-2_amd64.deb".into()
            }
        );
        assert_eq!(
            choose(KBUILD, "arm64").unwrap().name,
            "linux-kbuild-6.1_6.1.192-2_arm64.deb"
        );
    }

    #[test]
    fn an_architecture_independent_package_serves_every_host() {
        let source = r#"{"result": [{"architecture": "all", "hash": "ff"}],
            "fileinfo": {"ff": [{"name": "linux-source-7.2_7.2.13-1_all.deb"}]}}"#;
        assert_eq!(
            choose(source, "amd64").unwrap().name,
            "linux-source-7.2_7.2.13-1_all.deb"
        );
    }

    #[test]
    fn a_missing_architecture_names_those_there_are() {
        let err = choose(KBUILD, "ppc64el").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "no file for ppc64el or all (architectures: arm64, amd64)"
        );
    }

    #[test]
    fn urls_follow_the_api() {
        let base = "https://snapshot.debian.org";
        assert_eq!(
            binfiles_url(base, "linux-kbuild-6.1", "6.1.192-2"),
            "https://snapshot.debian.org/mr/binary/linux-kbuild-6.1/6.1.192-2/binfiles?fileinfo=1"
        );
        assert_eq!(
            file_url(base, "ab12"),
            "https://snapshot.debian.org/file/ab12"
        );
    }
}
