//! Prebuilt Debian kernels: image, headers, common headers and kbuild
//! packages, fetched with `apt-get download` through a private apt
//! configuration (the host's sources are never touched) and unpacked with
//! `dpkg-deb -x` into the cache, where the packages' relative symlinks
//! join into one usable kbuild tree.

use super::pins;
use super::{spec_hash, Kernel, KernelSpec};
use crate::cache::{Cache, ContentHash};
use crate::host::private_apt::PrivateApt;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

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
    /// `name=version` of every package to download.
    packages: Vec<String>,
}

impl Prebuilt {
    /// Image, flavour headers, common headers, and the kbuild packages under
    /// both names Debian has used (after the ABI since 6.12, after the series
    /// before). The unsigned image is the one built with these headers; the
    /// signed one can lag behind and boots the same under QEMU.
    fn packages(&self, abi: &str) -> Vec<Vec<String>> {
        vec![
            vec![format!("linux-image-{abi}-{}-unsigned", self.flavour)],
            vec![format!("linux-headers-{abi}-{}", self.flavour)],
            vec![format!("linux-headers-{abi}-common")],
            vec![
                format!("linux-kbuild-{abi}"),
                format!("linux-kbuild-{}", self.series),
            ],
        ]
    }

    /// `name=version` for each package, if the suites offer them all; each
    /// at the image's version where it exists, so the kbuild tools match.
    fn resolve_packages(&self, abi: &str, apt: &PrivateApt) -> Result<Option<Vec<String>>> {
        let mut pinned = Vec::new();
        let mut image_version: Option<String> = None;
        for alternatives in self.packages(abi) {
            let mut found = None;
            for name in alternatives {
                let same = image_version.as_ref().filter(|v| apt.offers(&name, v));
                if let Some(version) = same.cloned().or(apt.version_of(&name)?) {
                    image_version.get_or_insert(version.clone());
                    found = Some(format!("{name}={version}"));
                    break;
                }
            }
            match found {
                Some(package) => pinned.push(package),
                None => return Ok(None),
            }
        }
        Ok(Some(pinned))
    }
}

pub(super) fn prepare(
    spec: &KernelSpec,
    prebuilt: &Prebuilt,
    lock: &Path,
    cache: &Cache,
) -> Result<Kernel> {
    if !spec.arch.is_native() {
        anyhow::bail!(
            "debian_prebuilt kernels are fetched for this host's architecture ({}), not {}",
            std::env::consts::ARCH,
            spec.arch.name
        );
    }
    let apt = PrivateApt::new(cache, &prebuilt.suites)?;
    let resolved = resolve(prebuilt, lock, &apt)?;
    let kernels = cache.kind_dir("kernels")?;
    let used = pins::resolve(&spec.name, &resolved.packages, &apt, |used| {
        entry_key(spec, lock, used).is_ok_and(|key| kernels.join(key).is_dir())
    })?;
    let key = entry_key(spec, lock, &used)?;
    let architecture = &spec.arch.record.debian_arch;
    let dir = cache.entry("kernels", &key, |dir| {
        fetch(prebuilt, &resolved.abi, &used, &apt, architecture, dir)
    })?;
    let root = dir.join("root");
    let release = format!("{}-{}", resolved.abi, prebuilt.flavour);
    Ok(Kernel {
        name: spec.name.clone(),
        module_abi: key.clone(),
        id: key,
        arch: spec.arch.clone(),
        image: root.join(format!("boot/vmlinuz-{release}")),
        config: root.join(format!("boot/config-{release}")),
        kbuild: root.join(format!("usr/src/linux-headers-{release}")),
        version: pins::upstream_version(&resolved.packages[0]),
        source: None,
        boot_modules: super::modules::boot_modules(&root.join(format!("lib/modules/{release}")))?,
        release,
    })
}

/// The cache entry of this spec and lock, and of the versions used where
/// they are not the lock's.
fn entry_key(spec: &KernelSpec, lock: &Path, used: &[pins::Resolved]) -> Result<String> {
    let pinned = spec_hash(spec, lock)?;
    let hash = match pins::drift_key(used) {
        None => pinned,
        Some(drift) => ContentHash::new()
            .add("lock", pinned)
            .add("used", drift)
            .finish(),
    };
    Ok(format!("{}-{hash}", spec.name))
}

/// The ABI pinned in the lock file, or the newest one for which the suites
/// offer every package (then pinned).
fn resolve(prebuilt: &Prebuilt, lock: &Path, apt: &PrivateApt) -> Result<Resolved> {
    super::pinned(lock, &prebuilt.abi, || {
        apt.update_if_missing()?;
        let candidates = if prebuilt.abi == "latest" {
            let prefix = format!("linux-image-{}.", prebuilt.series);
            let names = apt.run("apt-cache", &["pkgnames", &prefix], None)?;
            abis_newest_first(&names, &format!("{}-unsigned", prebuilt.flavour))
        } else {
            vec![prebuilt.abi.clone()]
        };
        for abi in candidates {
            if let Some(packages) = prebuilt.resolve_packages(&abi, apt)? {
                return Ok(Resolved { abi, packages });
            }
        }
        bail!(
            "no linux-image-{}.*-{} with headers and kbuild in {}",
            prebuilt.series,
            prebuilt.flavour,
            prebuilt.suites.join(", ")
        )
    })
}

/// ABIs of the `linux-image-<abi>-<suffix>` package names, newest first.
fn abis_newest_first(names: &str, suffix: &str) -> Vec<String> {
    let suffix = format!("-{suffix}");
    let mut abis: Vec<&str> = names
        .lines()
        .filter_map(|name| name.strip_prefix("linux-image-")?.strip_suffix(&suffix))
        .collect();
    abis.sort_by_key(|abi| std::cmp::Reverse(version_key(abi)));
    abis.into_iter().map(str::to_string).collect()
}

/// Every number in an ABI name, for numeric ordering:
/// `6.12.117+deb12` ──> [6, 12, 117, 12], `6.1.0-51` ──> [6, 1, 0, 51].
fn version_key(abi: &str) -> Vec<u64> {
    abi.split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

fn fetch(
    prebuilt: &Prebuilt,
    abi: &str,
    used: &[pins::Resolved],
    apt: &PrivateApt,
    architecture: &str,
    dir: &Path,
) -> Result<()> {
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    pins::download(used, apt, architecture, &debs)?;
    let root = dir.join("root");
    PrivateApt::extract_all(&debs, &root)?;
    fs::remove_dir_all(&debs)?;
    let release = format!("{abi}-{}", prebuilt.flavour);
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
    fn abis_order_numerically_and_skip_other_variants() {
        let names = "linux-image-6.12.99+deb12-cloud-amd64-unsigned\n\
                     linux-image-6.12.117+deb12-cloud-amd64-unsigned\n\
                     linux-image-6.12.118+deb12-cloud-amd64-dbg\n\
                     linux-image-6.12.119+deb12-cloud-amd64\n\
                     linux-image-6.12.120+deb12-amd64-unsigned\n";
        let suffix = "cloud-amd64-unsigned";
        assert_eq!(
            abis_newest_first(names, suffix),
            ["6.12.117+deb12", "6.12.99+deb12"]
        );
        let names = "linux-image-6.1.0-9-cloud-amd64-unsigned\n\
                     linux-image-6.1.0-51-cloud-amd64-unsigned\n";
        assert_eq!(abis_newest_first(names, suffix), ["6.1.0-51", "6.1.0-9"]);
    }
}
