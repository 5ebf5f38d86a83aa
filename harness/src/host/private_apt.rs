//! apt-get and apt-cache through a private configuration: sources list,
//! lists and cache of the harness's own under its cache directory, so any
//! Debian suite is reachable without touching the host's apt sources.

use crate::cache::{Cache, ContentHash};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const KEYRING_FILE: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The keys Debian signs its archive with; Ubuntu ships them too, in universe.
pub const KEYRING: super::Tool = super::Tool::fixed(KEYRING_FILE, "debian-archive-keyring");

/// Make sure the keyring is there and readable, installing its package as
/// root; otherwise one line that names the package. Without it apt only
/// says "NO_PUBKEY ... is not signed".
pub fn ensure_keyring(lock_dir: &Path) -> Result<()> {
    super::ensure(&[KEYRING], lock_dir)?;
    let path = Path::new(KEYRING_FILE);
    let usable = fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() > 0)
        && fs::File::open(path).is_ok();
    if !usable {
        bail!(
            "{} is missing, empty or unreadable: Debian's archive cannot be checked without it; \
             install the package {} ({}; Ubuntu has it in universe)",
            path.display(),
            KEYRING.package,
            super::install_command(&[KEYRING.package.as_ref()])
        );
    }
    Ok(())
}

/// One `deb` line per suite; `*-security` suites live in their own archive.
pub fn sources_list(suites: &[String]) -> String {
    let mirror = &crate::settings::get().debian_mirror;
    suites
        .iter()
        .map(|suite| {
            let archive = if suite.ends_with("-security") {
                "debian-security"
            } else {
                "debian"
            };
            format!("deb [signed-by={KEYRING_FILE}] {mirror}/{archive} {suite} main\n")
        })
        .collect()
}

/// apt-get and apt-cache with sources, lists and cache of the harness's own.
///
/// apt runs without its own locks here (Debug::NoLocking). The entry's
/// lock (`Cache::lock_entry`, in the real `apt/` directory, so that every
/// cache reaching it through a link shares it) stands in: an update of
/// the lists holds it exclusively, every other use shares it, so that no
/// reader sees the lists replaced under it.
pub struct PrivateApt {
    cache: Cache,
    key: String,
    dir: PathBuf,
    locks: PathBuf,
    /// A Debian architecture other than the host's, whose packages this
    /// configuration lists instead.
    architecture: Option<String>,
}

impl PrivateApt {
    pub fn new(cache: &Cache, suites: &[String]) -> Result<Self> {
        Self::with_architecture(cache, suites, None)
    }

    /// Lists and packages of another Debian architecture (`arm64`).
    pub fn foreign(cache: &Cache, suites: &[String], architecture: &str) -> Result<Self> {
        Self::with_architecture(cache, suites, Some(architecture))
    }

    fn with_architecture(
        cache: &Cache,
        suites: &[String],
        architecture: Option<&str>,
    ) -> Result<Self> {
        let sources = sources_list(suites);
        let sources = sources.as_str();
        let mut key = ContentHash::new();
        key.add("sources", sources);
        if let Some(architecture) = architecture {
            key.add("architecture", architecture);
        }
        let key = key.finish();
        let dir = cache.kind_dir("apt")?.join(&key);
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        // Written once, whole: another process's apt may be reading it.
        let list = dir.join("sources.list");
        if fs::read_to_string(&list).ok().as_deref() != Some(sources) {
            let staged = tempfile::NamedTempFile::new_in(&dir)?;
            fs::write(staged.path(), sources)?;
            staged
                .persist(&list)
                .with_context(|| format!("cannot write {}", list.display()))?;
        }
        Ok(Self {
            cache: cache.clone(),
            key,
            dir,
            locks: cache.root().join("locks"),
            architecture: architecture.map(String::from),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let options = [
            format!(
                "Dir::Etc::SourceList={}",
                self.dir.join("sources.list").display()
            ),
            "Dir::Etc::SourceParts=/dev/null".to_string(),
            format!("Dir::State::Lists={}", self.dir.join("lists").display()),
            format!("Dir::Cache={}", self.dir.join("cache").display()),
            "Dir::State::status=/dev/null".to_string(),
            "APT::Sandbox::User=root".to_string(),
            "Debug::NoLocking=1".to_string(),
        ];
        for option in options {
            command.arg("-o").arg(option);
        }
        if let Some(architecture) = &self.architecture {
            command
                .arg("-o")
                .arg(format!("APT::Architecture={architecture}"))
                .arg("-o")
                .arg(format!("APT::Architectures={architecture}"));
        }
        command
    }

    /// `program args` on the lists as they are (no update runs meanwhile).
    pub fn run(&self, program: &str, args: &[&str], cwd: Option<&Path>) -> Result<String> {
        let _reading = self.cache.lock_entry_shared("apt", &self.key)?;
        self.run_unlocked(program, args, cwd)
    }

    fn run_unlocked(&self, program: &str, args: &[&str], cwd: Option<&Path>) -> Result<String> {
        let mut command = self.command(program);
        command.args(args);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        crate::host::run_checked(&mut command)
    }

    pub fn has_lists(&self) -> bool {
        fs::read_dir(self.dir.join("lists"))
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
            .unwrap_or(false)
    }

    pub fn update(&self) -> Result<()> {
        self.update_unless(|| false).map(drop)
    }

    /// Fetch the lists unless they are there (another process may have
    /// fetched them while this one waited for the lock). True if they were
    /// not: the lists are fresh.
    pub fn update_if_missing(&self) -> Result<bool> {
        if self.has_lists() {
            return Ok(false);
        }
        self.update_unless(|| self.has_lists())?;
        Ok(true)
    }

    /// True if this call updated the lists.
    fn update_unless(&self, done: impl Fn() -> bool) -> Result<bool> {
        ensure_keyring(&self.locks)?;
        let _writing = self.cache.lock_entry("apt", &self.key)?;
        if done() {
            return Ok(false);
        }
        crate::event::emit(crate::event::Event::UpdatingAptLists {
            dir: self.dir.clone(),
        });
        self.run_unlocked("apt-get", &["-q", "update"], None)?;
        self.cache
            .journal(&format!("updated the lists of apt/{}", self.key));
        Ok(true)
    }

    /// When the lists last changed.
    fn lists_modified(&self) -> Option<SystemTime> {
        fs::read_dir(self.dir.join("lists"))
            .ok()?
            .flatten()
            .filter_map(|entry| entry.metadata().ok()?.modified().ok())
            .max()
    }

    /// What the lists are: their names, sizes and times, which change
    /// with every update that brings something new.
    pub fn lists_identity(&self) -> String {
        let mut entries: Vec<String> = fs::read_dir(self.dir.join("lists"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| {
                        let meta = entry.metadata().ok()?;
                        let modified = meta.modified().ok()?;
                        Some(format!(
                            "{} {} {:?}",
                            entry.file_name().to_string_lossy(),
                            meta.len(),
                            modified
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        entries.sort();
        entries.join("\n")
    }

    /// `apt-get -s install` of `packages` from these lists against the
    /// installed packages listed in `status` (a dpkg status file).
    pub fn simulate_install(&self, packages: &[&str], status: &Path) -> Result<String> {
        let _reading = self.cache.lock_entry_shared("apt", &self.key)?;
        let mut command = self.command("apt-get");
        command
            .arg("-o")
            .arg(format!("Dir::State::status={}", status.display()))
            .args(["-q", "-s", "install", "--no-install-recommends"])
            .args(packages);
        crate::host::run_checked(&mut command)
    }

    /// Candidate version of a package, if the lists know it.
    pub fn version_of(&self, package: &str) -> Result<Option<String>> {
        let policy = self.run("apt-cache", &["policy", package], None)?;
        Ok(policy
            .lines()
            .find_map(|line| line.trim().strip_prefix("Candidate: "))
            .filter(|version| *version != "(none)")
            .map(str::to_string))
    }
}

impl PrivateApt {
    /// Whether the lists hold this exact version of the package. (Not
    /// `apt-cache show NAME=VERSION`: it succeeds, silently, for a version
    /// the lists lack.)
    pub fn offers(&self, package: &str, version: &str) -> bool {
        self.versions_offered(&[package]).is_ok_and(|offered| {
            offered
                .get(package)
                .is_some_and(|v| v.iter().any(|v| v == version))
        })
    }

    /// The versions the lists offer of each package, newest first (apt
    /// orders them so); a package the lists lack is absent.
    pub fn versions_offered(&self, packages: &[&str]) -> Result<HashMap<String, Vec<String>>> {
        let mut args = vec!["madison"];
        args.extend(packages);
        Ok(parse_madison(&self.run("apt-cache", &args, None)?))
    }

    /// Update the lists unless another process did since `since`.
    pub fn refresh_since(&self, since: SystemTime) -> Result<()> {
        self.update_unless(|| self.lists_modified().is_some_and(|when| when > since))
            .map(drop)
    }

    /// Download `package=version` files into `dir`. A failure may come of
    /// lists that are stale or were replaced during the read: they are
    /// refreshed and the download tried again. Only a version the fresh
    /// lists lack is called no longer offered; anything else is apt's own
    /// error.
    pub fn download(&self, packages: &[String], dir: &Path) -> Result<()> {
        let mut args = vec!["-q", "download"];
        args.extend(packages.iter().map(String::as_str));
        ensure_keyring(&self.locks)?;
        crate::event::emit(crate::event::Event::Downloading {
            what: packages.join(" "),
        });
        let tried = SystemTime::now();
        if self.run("apt-get", &args, Some(dir)).is_ok() {
            return Ok(());
        }
        self.refresh_since(tried)?;
        let lacking: Vec<&str> = packages
            .iter()
            .map(String::as_str)
            .filter(|package| match package.split_once('=') {
                Some((name, version)) => !self.offers(name, version),
                None => self.version_of(package).ok().flatten().is_none(),
            })
            .collect();
        if !lacking.is_empty() {
            bail!(
                "apt's fresh lists no longer offer {}: the archive moved on while this \
                 ran; run again to resolve it anew",
                lacking.join(" ")
            );
        }
        self.run("apt-get", &args, Some(dir))
            .with_context(|| format!("cannot download {}", packages.join(" ")))
            .map(drop)
    }

    /// Unpack every .deb in `debs` into `root`.
    pub fn extract_all(debs: &Path, root: &Path) -> Result<()> {
        for deb in fs::read_dir(debs)? {
            let deb = deb?.path();
            let status = super::stop_with_harness(&mut Command::new("dpkg-deb"))
                .arg("-x")
                .arg(&deb)
                .arg(root)
                .status()
                .context("cannot run dpkg-deb")?;
            if !status.success() {
                bail!("dpkg-deb -x {} failed", deb.display());
            }
        }
        Ok(())
    }
}

/// `apt-cache madison` lines, `name | version | origin`, by name.
fn parse_madison(text: &str) -> HashMap<String, Vec<String>> {
    let mut versions: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split('|').map(str::trim);
        if let (Some(name), Some(version), Some(_)) = (fields.next(), fields.next(), fields.next())
        {
            let known = versions.entry(name.to_string()).or_default();
            if !known.iter().any(|v| v == version) {
                known.push(version.to_string());
            }
        }
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madison_lines_give_each_package_its_versions_in_order() {
        let text = " linux-kbuild-6.1 | 6.1.192-3 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n\
                    linux-kbuild-6.1 | 6.1.190-1 | http://deb.debian.org/debian bookworm/main amd64 Packages\n\
                    linux-kbuild-6.1 | 6.1.190-1 | http://deb.debian.org/debian bookworm-updates/main amd64 Packages\n\
                    N: Unable to locate package linux-kbuild-9.9\n";
        let versions = parse_madison(text);
        assert_eq!(versions["linux-kbuild-6.1"], ["6.1.192-3", "6.1.190-1"]);
        assert_eq!(versions.len(), 1);
    }

    #[test]
    fn security_suite_uses_the_security_archive() {
        let list = sources_list(&["bookworm".into(), "bookworm-security".into()]);
        assert!(list.contains("/debian bookworm main"));
        assert!(list.contains("/debian-security bookworm-security main"));
    }
}
