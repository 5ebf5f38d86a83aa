//! Kernel sources: a Debian `linux-source-X` package, a tarball (URL or
//! path, checked against its sha256), or a local tree / git checkout.
//! Packaged and tarball sources are unpacked and cached by their identity;
//! a patch series is applied to a copy made of hard links to that tree,
//! cached by identity plus series. A local tree is used where it is.

use super::series::{self, Patch};
use crate::cache::{Cache, ContentHash};
use crate::event::Event;
use crate::host::private_apt::PrivateApt;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    /// Debian suites to look in, e.g. `[bullseye, bullseye-security]`.
    pub suites: Vec<String>,
    /// The source package, e.g. `linux-source-5.10`.
    pub package: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tarball {
    /// `https://...`, `file://...` or a path relative to kernels/.
    pub url: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// A kernel source tree (absolute, or relative to kernels/); never modified.
    pub path: PathBuf,
}

/// Where the sources come from.
#[derive(Clone, Debug)]
pub enum Origin {
    Debian(DebianSource),
    Tarball(Tarball),
    Tree(Tree),
}

/// What the Debian package resolved to, pinned in the kernel's lock file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ResolvedSource {
    package: String,
}

/// A source tree ready for `make O=...`, and what identifies its contents.
pub struct Sources {
    pub tree: PathBuf,
    pub identity: String,
    /// A cache entry nothing writes to again (not a local tree).
    pub immutable: bool,
}

/// Fills a staging directory with `linux/`, the unpacked sources.
type Unpacker = dyn Fn(&Path) -> Result<()>;

/// A patch series and the name it has in kernels/patches/.
pub struct Series {
    pub name: String,
    pub patches: Vec<Patch>,
}

fn patch_hash(series: Option<&Series>) -> String {
    let mut hash = ContentHash::new();
    for patch in series.map_or(&[][..], |s| &s.patches[..]) {
        hash.add(&patch.name, &patch.text);
    }
    hash.finish()
}

/// The cache entry of sources with this identity and patch series.
fn entry_key(name: &str, identity: &str, patches: &str) -> String {
    format!(
        "{name}-{}",
        ContentHash::new()
            .add("source", identity)
            .add("patches", patches)
            .finish()
    )
}

/// The sources if the cache has them already; nothing is fetched.
pub fn cached(
    name: &str,
    origin: &Origin,
    series: Option<&Series>,
    kernels_dir: &Path,
    lock: &Path,
    cache: &Cache,
) -> Result<Option<Sources>> {
    let identity = match origin {
        Origin::Tree(_) => {
            return prepare(name, origin, series, kernels_dir, lock, cache).map(Some)
        }
        Origin::Tarball(tarball) => format!("tarball:{}", tarball.sha256),
        Origin::Debian(_) if !lock.exists() => return Ok(None),
        Origin::Debian(debian) => {
            let resolved: ResolvedSource = crate::yaml::parse_file(lock)?;
            let pinned = format!("debian:{}", resolved.package);
            let pristine = |identity: &str| {
                let key = entry_key(name, identity, &ContentHash::new().finish());
                cache.root().join("sources").join(key).is_dir()
            };
            if pristine(&pinned) {
                pinned
            } else {
                // Built from another revision if the pin has drifted.
                let apt = PrivateApt::new(cache, &debian.suites)?;
                let pin = std::slice::from_ref(&resolved.package);
                match super::pins::resolve_offline(pin, &apt) {
                    Some(used) => format!("debian:{}", used[0].used()),
                    None => pinned,
                }
            }
        }
    };
    let patches = patch_hash(series);
    let dir = cache
        .root()
        .join("sources")
        .join(entry_key(name, &identity, &patches));
    Ok(dir.is_dir().then(|| Sources {
        tree: dir.join("linux"),
        identity: format!("{identity} patches:{patches}"),
        immutable: true,
    }))
}

pub fn prepare(
    name: &str,
    origin: &Origin,
    series: Option<&Series>,
    kernels_dir: &Path,
    lock: &Path,
    cache: &Cache,
) -> Result<Sources> {
    let patches = series.map_or(&[][..], |s| &s.patches[..]);
    let patch_hash = patch_hash(series);
    let (identity, fetch): (String, Box<Unpacker>) = match origin {
        Origin::Tree(tree) => {
            let path = kernels_dir.join(&tree.path);
            if series.is_some() {
                bail!("a patch series cannot be applied to a local tree ({}); commit the patches on a branch instead", path.display());
            }
            let identity = tree_identity(&path)?;
            return Ok(Sources {
                tree: path,
                identity,
                immutable: false,
            });
        }
        Origin::Tarball(tarball) => {
            let archive = download(tarball, kernels_dir, cache)?;
            (
                format!("tarball:{}", tarball.sha256),
                Box::new(move |dir| unpack(&archive, dir)),
            )
        }
        Origin::Debian(debian) => {
            let apt = PrivateApt::new(cache, &debian.suites)?;
            let resolved: ResolvedSource = super::pinned(lock, &debian.package, || {
                apt.update_if_missing()?;
                let version = apt.version_of(&debian.package)?.with_context(|| {
                    format!("{} is not in {}", debian.package, debian.suites.join(", "))
                })?;
                Ok(ResolvedSource {
                    package: format!("{}={version}", debian.package),
                })
            })?;
            let sources = cache.kind_dir("sources")?;
            let no_patches = ContentHash::new().finish();
            let pin = std::slice::from_ref(&resolved.package);
            let used = super::pins::resolve(name, pin, &apt, |used| {
                let identity = format!("debian:{}", used[0].used());
                sources
                    .join(entry_key(name, &identity, &no_patches))
                    .is_dir()
            })?;
            (
                format!("debian:{}", used[0].used()),
                Box::new(move |dir| {
                    let debs = dir.join("debs");
                    fs::create_dir_all(&debs)?;
                    // linux-source is one package for every architecture.
                    super::pins::download(&used, &apt, "all", &debs)?;
                    PrivateApt::extract_all(&debs, &dir.join("deb"))?;
                    let tarball = find_source_tarball(&dir.join("deb/usr/src"))?;
                    unpack(&tarball, dir)?;
                    fs::remove_dir_all(&debs)?;
                    fs::remove_dir_all(dir.join("deb"))?;
                    Ok(())
                }),
            )
        }
    };
    let pristine = cache.entry(
        "sources",
        &entry_key(name, &identity, &ContentHash::new().finish()),
        |dir| fetch(dir),
    )?;
    let dir = match series {
        Some(series) if !patches.is_empty() => {
            cache.entry("sources", &entry_key(name, &identity, &patch_hash), |dir| {
                let tree = dir.join("linux");
                super::worktree::link_tree(&pristine.join("linux"), &tree)?;
                series::apply(&tree, &series.name, patches)
            })?
        }
        _ => pristine,
    };
    Ok(Sources {
        tree: dir.join("linux"),
        identity: format!("{identity} patches:{patch_hash}"),
        immutable: true,
    })
}

fn find_source_tarball(usr_src: &Path) -> Result<PathBuf> {
    for entry in
        fs::read_dir(usr_src).with_context(|| format!("cannot read {}", usr_src.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("linux-source-") && name.contains(".tar") {
            return Ok(path);
        }
    }
    bail!("no linux-source-*.tar.* in {}", usr_src.display())
}

/// Unpack a kernel tarball into `dir/linux`, whatever its top directory is called.
fn unpack(archive: &Path, dir: &Path) -> Result<()> {
    let target = dir.join("linux");
    fs::create_dir_all(&target)?;
    crate::event::emit(Event::Unpacking {
        archive: archive.to_path_buf(),
    });
    crate::host::run_checked(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(&target)
            .arg("--strip-components=1"),
    )
    .with_context(|| format!("cannot unpack {}", archive.display()))
    .map(drop)
}

/// Download (or copy) a tarball once, keyed by its expected sha256.
fn download(tarball: &Tarball, kernels_dir: &Path, cache: &Cache) -> Result<PathBuf> {
    let name = tarball.url.rsplit('/').next().unwrap_or("linux.tar");
    let dir = cache.entry("downloads", &tarball.sha256, |dir| {
        let target = dir.join(name);
        if tarball.url.contains("://") {
            crate::event::emit(Event::Downloading {
                what: tarball.url.clone(),
            });
            crate::host::run_checked(
                Command::new("curl")
                    .args(["-fsSL", "-o"])
                    .arg(&target)
                    .arg(&tarball.url),
            )
            .with_context(|| format!("cannot download {} (package curl)", tarball.url))?;
        } else {
            fs::copy(kernels_dir.join(&tarball.url), &target)
                .with_context(|| format!("cannot copy {}", tarball.url))?;
        }
        let mut file = fs::File::open(&target)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = hex::encode(hasher.finalize());
        if actual != tarball.sha256 {
            bail!(
                "{}: sha256 is {actual}, expected {}",
                tarball.url,
                tarball.sha256
            );
        }
        Ok(())
    })?;
    Ok(dir.join(name))
}

/// A git checkout is identified by its commit and uncommitted changes;
/// anything else by the content of every file.
fn tree_identity(tree: &Path) -> Result<String> {
    if !tree.join("Makefile").is_file() {
        bail!(
            "{} is not a kernel source tree (no Makefile)",
            tree.display()
        );
    }
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(tree)
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    if let Some(head) = git(&["rev-parse", "HEAD"]) {
        let dirty = git(&["diff", "HEAD"]).unwrap_or_default();
        let untracked = git(&["status", "--porcelain"]).unwrap_or_default();
        let changes = ContentHash::new()
            .add("diff", dirty)
            .add("status", untracked)
            .finish();
        return Ok(format!("git:{} changes:{changes}", head.trim()));
    }
    Ok(format!(
        "tree:{}",
        ContentHash::new().add_dir("tree", tree)?.finish()
    ))
}

/// `VERSION.PATCHLEVEL.SUBLEVEL` from a kernel tree's top Makefile.
pub fn makefile_version(makefile: &Path) -> Option<String> {
    let text = fs::read_to_string(makefile).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim_start().strip_prefix('='))
            .map(|value| value.trim().to_string())
    };
    Some(format!(
        "{}.{}.{}",
        field("VERSION")?,
        field("PATCHLEVEL")?,
        field("SUBLEVEL")?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_of(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn tarball_is_checked_against_its_sha256() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache")).unwrap();
        std::fs::write(tmp.path().join("linux-6.0.tar.xz"), b"not really xz").unwrap();
        let good = Tarball {
            url: "linux-6.0.tar.xz".into(),
            sha256: sha256_of(b"not really xz"),
        };
        let path = download(&good, tmp.path(), &cache).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"not really xz");

        let bad = Tarball {
            url: "linux-6.0.tar.xz".into(),
            sha256: sha256_of(b"other"),
        };
        let err = format!("{:#}", download(&bad, tmp.path(), &cache).unwrap_err());
        assert!(err.contains("sha256 is"), "{err}");
        assert!(!cache.root().join("downloads").join(&bad.sha256).exists());
    }

    #[test]
    fn git_tree_identity_follows_uncommitted_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path();
        std::fs::write(
            tree.join("Makefile"),
            "VERSION = 6\nPATCHLEVEL = 9\nSUBLEVEL = 3\n",
        )
        .unwrap();
        let git = |args: &[&str]| {
            let status = Command::new("git")
                .arg("-C")
                .arg(tree)
                .args(args)
                .status()
                .unwrap();
            assert!(status.success());
        };
        git(&["init", "-q"]);
        git(&["add", "Makefile"]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "x",
        ]);
        let clean = tree_identity(tree).unwrap();
        std::fs::write(
            tree.join("Makefile"),
            "VERSION = 6\nPATCHLEVEL = 9\nSUBLEVEL = 4\n",
        )
        .unwrap();
        assert_ne!(tree_identity(tree).unwrap(), clean);
        assert_eq!(
            makefile_version(&tree.join("Makefile")).as_deref(),
            Some("6.9.4")
        );
    }

    #[test]
    fn a_directory_without_makefile_is_not_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(tree_identity(tmp.path()).is_err());
    }
}
