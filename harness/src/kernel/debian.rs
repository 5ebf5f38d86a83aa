//! Prebuilt Debian kernels: image, headers, common headers and kbuild
//! packages, fetched with `apt-get download` through a private apt
//! configuration (the host's sources are never touched) and unpacked with
//! `dpkg-deb -x` into the cache, where the packages' relative symlinks
//! join into one usable kbuild tree.

use super::{spec_hash, Kernel, KernelSpec};
use crate::cache::{Cache, ContentHash};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prebuilt {
    /// Debian suites to look in, e.g. `[bookworm, bookworm-security]`.
    pub suites: Vec<String>,
    /// Upstream series, e.g. `"6.12"`.
    pub series: String,
    /// Debian kernel flavour, e.g. `cloud-amd64`.
    pub flavour: String,
    /// `latest`, or an exact ABI name such as `6.12.117+deb12`.
    #[serde(default = "latest")]
    pub abi: String,
}

fn latest() -> String {
    "latest".to_string()
}

/// What `latest` resolved to, recorded in `kernels/NAME.lock` for reproducible runs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Resolved {
    abi: String,
    version: String,
}

impl Prebuilt {
    fn packages(&self, abi: &str) -> Vec<String> {
        vec![
            format!("linux-image-{abi}-{}", self.flavour),
            format!("linux-headers-{abi}-{}", self.flavour),
            format!("linux-headers-{abi}-common"),
            format!("linux-kbuild-{abi}"),
        ]
    }

    fn sources_list(&self) -> String {
        let mirror = std::env::var("KLP_HARNESS_DEBIAN_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org".to_string());
        self.suites
            .iter()
            .map(|suite| {
                let archive = if suite.ends_with("-security") {
                    "debian-security"
                } else {
                    "debian"
                };
                format!("deb [signed-by={KEYRING}] {mirror}/{archive} {suite} main\n")
            })
            .collect()
    }
}

/// apt-get and apt-cache with sources, lists and cache of the harness's own.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(cache: &Cache, sources: &str) -> Result<Self> {
        let key = ContentHash::new().add("sources", sources).finish();
        let dir = cache.root().join("apt").join(key);
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        fs::write(dir.join("sources.list"), sources)?;
        Ok(Self { dir })
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
        command
    }

    fn run(&self, program: &str, args: &[&str], cwd: Option<&Path>) -> Result<String> {
        let mut command = self.command(program);
        command.args(args);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let output = command
            .output()
            .with_context(|| format!("cannot run {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} {} failed:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn has_lists(&self) -> bool {
        fs::read_dir(self.dir.join("lists"))
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            })
            .unwrap_or(false)
    }

    fn update(&self) -> Result<()> {
        eprintln!(
            "klp-harness: updating the private apt lists in {}",
            self.dir.display()
        );
        self.run("apt-get", &["-q", "update"], None).map(drop)
    }

    /// Candidate version of a package, if the lists know it.
    fn version_of(&self, package: &str) -> Result<Option<String>> {
        let policy = self.run("apt-cache", &["policy", package], None)?;
        Ok(policy
            .lines()
            .find_map(|line| line.trim().strip_prefix("Candidate: "))
            .filter(|version| *version != "(none)")
            .map(str::to_string))
    }
}

pub(super) fn prepare(
    spec: &KernelSpec,
    prebuilt: &Prebuilt,
    lock: &Path,
    cache: &Cache,
) -> Result<Kernel> {
    let apt = PrivateApt::new(cache, &prebuilt.sources_list())?;
    let resolved = resolve(prebuilt, lock, &apt, cache)?;
    let key = format!("{}-{}", spec.name, spec_hash(spec, lock)?);
    let dir = cache.entry("kernels", &key, |dir| fetch(prebuilt, &resolved, &apt, dir))?;
    let root = dir.join("root");
    let release = format!("{}-{}", resolved.abi, prebuilt.flavour);
    Ok(Kernel {
        name: spec.name.clone(),
        id: key,
        bzimage: root.join(format!("boot/vmlinuz-{release}")),
        config: root.join(format!("boot/config-{release}")),
        kbuild: root.join(format!("usr/src/linux-headers-{release}")),
        release,
    })
}

/// The pinned ABI from the lock file, or the newest one the suites offer (then pinned).
fn resolve(prebuilt: &Prebuilt, lock: &Path, apt: &PrivateApt, cache: &Cache) -> Result<Resolved> {
    if lock.exists() {
        return crate::yaml::parse_file(lock);
    }
    let _guard = cache.lock("apt-resolve")?;
    if lock.exists() {
        return crate::yaml::parse_file(lock);
    }
    if !apt.has_lists() {
        apt.update()?;
    }
    let abi = if prebuilt.abi == "latest" {
        let prefix = format!("linux-image-{}.", prebuilt.series);
        let names = apt.run("apt-cache", &["pkgnames", &prefix], None)?;
        newest_abi(&names, &prebuilt.flavour).with_context(|| {
            format!(
                "no {prefix}*-{} package in {}",
                prebuilt.flavour,
                prebuilt.suites.join(", ")
            )
        })?
    } else {
        prebuilt.abi.clone()
    };
    let image = &prebuilt.packages(&abi)[0];
    let version = apt
        .version_of(image)?
        .with_context(|| format!("{image} is not in {}", prebuilt.suites.join(", ")))?;
    let resolved = Resolved { abi, version };
    let text = format!(
        "# What {} resolved to; delete this file to move to a newer kernel.\n{}",
        prebuilt.abi,
        serde_saphyr::to_string(&resolved)?
    );
    fs::write(lock, text).with_context(|| format!("cannot write {}", lock.display()))?;
    eprintln!(
        "klp-harness: pinned {} {} in {}",
        resolved.abi,
        resolved.version,
        lock.display()
    );
    Ok(resolved)
}

/// Highest `linux-image-<abi>-<flavour>` among package names (signed image, not -dbg/-unsigned).
fn newest_abi(names: &str, flavour: &str) -> Option<String> {
    let suffix = format!("-{flavour}");
    names
        .lines()
        .filter_map(|name| name.strip_prefix("linux-image-")?.strip_suffix(&suffix))
        .max_by_key(|abi| version_key(abi))
        .map(str::to_string)
}

/// `6.12.117+deb12` ──> [6, 12, 117], for numeric ordering.
fn version_key(abi: &str) -> Vec<u64> {
    let upstream = abi.split(['+', '-']).next().unwrap_or(abi);
    upstream
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

fn fetch(prebuilt: &Prebuilt, resolved: &Resolved, apt: &PrivateApt, dir: &Path) -> Result<()> {
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    let wanted: Vec<String> = prebuilt
        .packages(&resolved.abi)
        .into_iter()
        .map(|package| format!("{package}={}", resolved.version))
        .collect();
    let mut args = vec!["-q", "download"];
    args.extend(wanted.iter().map(String::as_str));
    eprintln!("klp-harness: downloading {}", wanted.join(" "));
    if apt.run("apt-get", &args, Some(&debs)).is_err() {
        apt.update()?;
        apt.run("apt-get", &args, Some(&debs)).with_context(|| {
            format!(
                "the pinned kernel {} is no longer offered; delete its .lock file to move on",
                resolved.abi
            )
        })?;
    }
    let root = dir.join("root");
    for deb in fs::read_dir(&debs)? {
        let deb = deb?.path();
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .status()
            .context("cannot run dpkg-deb")?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed", deb.display());
        }
    }
    fs::remove_dir_all(&debs)?;
    let release = format!("{}-{}", resolved.abi, prebuilt.flavour);
    relocate_headers(&root.join(format!("usr/src/linux-headers-{release}/Makefile")))
}

/// Debian's flavour Makefile includes the common headers by absolute path
/// (/usr/src/...); point it at the extracted copy next to it instead, so the
/// tree works wherever the cache is.
fn relocate_headers(makefile: &Path) -> Result<()> {
    let text = fs::read_to_string(makefile)
        .with_context(|| format!("cannot read {}", makefile.display()))?;
    let relocated = text.replace(
        "include /usr/src/",
        "include $(dir $(realpath $(lastword $(MAKEFILE_LIST))))../",
    );
    fs::write(makefile, relocated).with_context(|| format!("cannot write {}", makefile.display()))
}

/// The compiler Debian built the kernel with (`CC` in .kernelvariables),
/// which external modules must be built with too.
pub(super) fn compiler(kbuild: &Path) -> Option<crate::host::Tool> {
    let variables = fs::read_to_string(kbuild.join(".kernelvariables")).ok()?;
    let version = variables
        .lines()
        .find(|line| line.starts_with("CC "))?
        .rsplit_once("gcc-")?
        .1
        .trim()
        .to_string();
    Some(crate::host::Tool {
        program: format!("x86_64-linux-gnu-gcc-{version}").into(),
        package: format!("gcc-{version}").into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_abi_orders_numerically_and_skips_variants() {
        let names = "linux-image-6.12.99+deb12-cloud-amd64\n\
                     linux-image-6.12.117+deb12-cloud-amd64\n\
                     linux-image-6.12.118+deb12-cloud-amd64-dbg\n\
                     linux-image-6.12.119+deb12-cloud-amd64-unsigned\n\
                     linux-image-6.12.120+deb12-amd64\n";
        assert_eq!(
            newest_abi(names, "cloud-amd64").as_deref(),
            Some("6.12.117+deb12")
        );
    }

    #[test]
    fn security_suite_uses_the_security_archive() {
        let prebuilt = Prebuilt {
            suites: vec!["bookworm".into(), "bookworm-security".into()],
            series: "6.12".into(),
            flavour: "cloud-amd64".into(),
            abi: latest(),
        };
        let list = prebuilt.sources_list();
        assert!(list.contains("/debian bookworm main"));
        assert!(list.contains("/debian-security bookworm-security main"));
    }
}
