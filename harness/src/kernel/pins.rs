//! A lock pins Debian packages as `name=version`, but Debian keeps only
//! each package's current version. A pin the lists no longer offer is
//! resolved to the same package at the same upstream version under
//! another Debian revision (said in one line), or, where the snapshot
//! archive is set, fetched as pinned from there. Only a pin whose package
//! or upstream version is gone is refused.

use crate::cache::ContentHash;
use crate::event::{emit, Event};
use crate::host::debian_snapshot;
use crate::host::private_apt::PrivateApt;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// `linux-image-...=6.12.117-1~deb12u1` ──> `6.12.117`.
pub fn upstream_version(pinned_package: &str) -> String {
    let version = pinned_package.rsplit('=').next().unwrap_or_default();
    version
        .split(['-', '+', '~'])
        .next()
        .unwrap_or(version)
        .to_string()
}

/// What one pin resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The lists offer the pin itself.
    Exact { package: String, version: String },
    /// The lists offer the package at the same upstream version under
    /// another Debian revision.
    Drifted {
        package: String,
        pinned: String,
        used: String,
    },
    /// Not offered; the snapshot archive serves the pin itself.
    FromSnapshot { package: String, version: String },
}

impl Resolved {
    /// `name=version` of what is downloaded.
    pub fn used(&self) -> String {
        match self {
            Resolved::Exact { package, version } | Resolved::FromSnapshot { package, version } => {
                format!("{package}={version}")
            }
            Resolved::Drifted { package, used, .. } => format!("{package}={used}"),
        }
    }
}

/// `name=version` ──> (name, version).
fn split_pin(pin: &str) -> Result<(&str, &str)> {
    pin.split_once('=')
        .map(|(name, version)| (name.trim(), version.trim()))
        .filter(|(name, version)| !name.is_empty() && !version.is_empty())
        .with_context(|| format!("{pin:?} is not a `name=version` pin"))
}

/// Resolve each pin against `offered`, which gives the versions the lists
/// offer of a package (newest first; none if the package is gone). With
/// `snapshot`, a pin not offered comes from the snapshot archive instead.
/// Every pin that cannot be resolved is named in one error.
pub fn decide(
    pins: &[String],
    snapshot: bool,
    offered: impl Fn(&str) -> Vec<String>,
) -> Result<Vec<Resolved>> {
    let mut resolved = Vec::new();
    let mut refused = Vec::new();
    for pin in pins {
        let (package, pinned) = split_pin(pin)?;
        let versions = offered(package);
        if versions.iter().any(|version| version == pinned) {
            resolved.push(Resolved::Exact {
                package: package.to_string(),
                version: pinned.to_string(),
            });
            continue;
        }
        if snapshot {
            resolved.push(Resolved::FromSnapshot {
                package: package.to_string(),
                version: pinned.to_string(),
            });
            continue;
        }
        let upstream = upstream_version(pinned);
        match versions.iter().find(|v| upstream_version(v) == upstream) {
            Some(used) => resolved.push(Resolved::Drifted {
                package: package.to_string(),
                pinned: pinned.to_string(),
                used: used.clone(),
            }),
            None if versions.is_empty() => {
                refused.push(format!("{pin} is no longer offered, nor any {package}"))
            }
            None => refused.push(format!(
                "{pin} is no longer offered, nor any {package} of upstream version \
                 {upstream} (offered: {})",
                versions.join(", ")
            )),
        }
    }
    if !refused.is_empty() {
        bail!(
            "{}; deleting the kernel's lock file moves to the newest kernel",
            refused.join("; ")
        );
    }
    Ok(resolved)
}

/// What goes into a cache key besides the lock: nothing while every pin
/// is used as it is, else the versions used, so that a build from a
/// drifted revision is never taken for one from the pin.
pub fn drift_key(resolved: &[Resolved]) -> Option<String> {
    resolved
        .iter()
        .any(|pin| matches!(pin, Resolved::Drifted { .. }))
        .then(|| {
            let mut hash = ContentHash::new();
            for pin in resolved {
                hash.add("used", pin.used());
            }
            hash.finish()
        })
}

/// Resolve `pins` (of `kernel`) against apt's lists. What the cache
/// already holds made from the pins as they are (`cached`) needs no look
/// at the lists (apt-cache takes most of a second, on every test). The
/// lists are refreshed once when they lack a pin, unless the cache
/// already holds what the lists as they are resolve to: a lasting drift
/// costs no update on every run. Says in one line what drifted.
pub fn resolve(
    kernel: &str,
    pins: &[String],
    apt: &PrivateApt,
    cached: impl Fn(&[Resolved]) -> bool,
) -> Result<Vec<Resolved>> {
    let as_pinned = pins
        .iter()
        .map(|pin| {
            let (package, version) = split_pin(pin)?;
            Ok(Resolved::Exact {
                package: package.to_string(),
                version: version.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if cached(&as_pinned) {
        return Ok(as_pinned);
    }
    let snapshot = !crate::settings::get().debian_snapshot.is_empty();
    let fresh = apt.update_if_missing()?;
    let checked = std::time::SystemTime::now();
    let names: Vec<&str> = pins
        .iter()
        .map(|pin| split_pin(pin).map(|(name, _)| name))
        .collect::<Result<_>>()?;
    let offered = apt.versions_offered(&names)?;
    let now = decide(pins, snapshot, |name| lookup(&offered, name));
    let settled = fresh
        || match &now {
            Ok(resolved) => {
                resolved
                    .iter()
                    .all(|pin| matches!(pin, Resolved::Exact { .. }))
                    || cached(resolved)
            }
            Err(_) => false,
        };
    let resolved = if settled {
        now?
    } else {
        apt.refresh_since(checked)?;
        let offered = apt.versions_offered(&names)?;
        decide(pins, snapshot, |name| lookup(&offered, name))?
    };
    for pin in &resolved {
        if let Resolved::Drifted {
            package,
            pinned,
            used,
        } = pin
        {
            emit(Event::LockDrifted {
                kernel: kernel.to_string(),
                package: package.clone(),
                pinned: pinned.clone(),
                used: used.clone(),
            });
        }
    }
    Ok(resolved)
}

/// What `pins` resolve to on the lists as they are, without fetching
/// anything; None without lists, or if a pin cannot be resolved.
pub fn resolve_offline(pins: &[String], apt: &PrivateApt) -> Option<Vec<Resolved>> {
    if !apt.has_lists() {
        return None;
    }
    let names: Vec<&str> = pins
        .iter()
        .map(|pin| split_pin(pin).map(|(name, _)| name))
        .collect::<Result<_>>()
        .ok()?;
    let offered = apt.versions_offered(&names).ok()?;
    let snapshot = !crate::settings::get().debian_snapshot.is_empty();
    decide(pins, snapshot, |name| lookup(&offered, name)).ok()
}

fn lookup(offered: &HashMap<String, Vec<String>>, name: &str) -> Vec<String> {
    offered.get(name).cloned().unwrap_or_default()
}

/// Download what `resolved` says into `dir`: through apt, and from the
/// snapshot archive for the pins apt no longer offers.
pub fn download(
    resolved: &[Resolved],
    apt: &PrivateApt,
    architecture: &str,
    dir: &Path,
) -> Result<()> {
    let (from_snapshot, from_apt): (Vec<&Resolved>, Vec<&Resolved>) = resolved
        .iter()
        .partition(|pin| matches!(pin, Resolved::FromSnapshot { .. }));
    if !from_apt.is_empty() {
        let packages: Vec<String> = from_apt.iter().map(|pin| pin.used()).collect();
        apt.download(&packages, dir)?;
    }
    let base = &crate::settings::get().debian_snapshot;
    for pin in from_snapshot {
        if let Resolved::FromSnapshot { package, version } = pin {
            debian_snapshot::download(base, package, version, architecture, dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins(list: &[&str]) -> Vec<String> {
        list.iter().map(|pin| pin.to_string()).collect()
    }

    /// The lists of Debian's archive when 6.1.192-3 replaced kbuild
    /// 6.1.192-2 and the image was still at -2.
    fn bookworm(name: &str) -> Vec<String> {
        match name {
            "linux-image-6.1.0-56-cloud-amd64-unsigned" => vec!["6.1.192-2".into()],
            "linux-kbuild-6.1" => vec!["6.1.192-3".into()],
            "linux-source-7.2" => vec!["7.3.1-1".into()],
            _ => vec![],
        }
    }

    const IMAGE: &str = "linux-image-6.1.0-56-cloud-amd64-unsigned=6.1.192-2";
    const KBUILD: &str = "linux-kbuild-6.1=6.1.192-2";

    #[test]
    fn an_offered_pin_is_used_as_it_is() {
        let resolved = decide(&pins(&[IMAGE]), false, bookworm).unwrap();
        assert_eq!(
            resolved,
            [Resolved::Exact {
                package: "linux-image-6.1.0-56-cloud-amd64-unsigned".into(),
                version: "6.1.192-2".into()
            }]
        );
        assert_eq!(drift_key(&resolved), None);
    }

    #[test]
    fn another_debian_revision_of_the_same_upstream_version_is_used() {
        let resolved = decide(&pins(&[IMAGE, KBUILD]), false, bookworm).unwrap();
        assert_eq!(
            resolved[1],
            Resolved::Drifted {
                package: "linux-kbuild-6.1".into(),
                pinned: "6.1.192-2".into(),
                used: "6.1.192-3".into()
            }
        );
        assert_eq!(resolved[1].used(), "linux-kbuild-6.1=6.1.192-3");
        let key = drift_key(&resolved).expect("a drift changes the key");
        let other = decide(&pins(&[IMAGE, KBUILD]), false, |name| match name {
            "linux-kbuild-6.1" => vec!["6.1.192-4".into()],
            _ => bookworm(name),
        })
        .unwrap();
        assert_ne!(drift_key(&other), Some(key));
    }

    #[test]
    fn a_gone_upstream_version_is_refused_with_what_is_offered() {
        let err = decide(&pins(&["linux-source-7.2=7.2.13-1"]), false, bookworm).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "linux-source-7.2=7.2.13-1 is no longer offered, nor any linux-source-7.2 of \
             upstream version 7.2.13 (offered: 7.3.1-1); deleting the kernel's lock file \
             moves to the newest kernel"
        );
    }

    #[test]
    fn a_gone_package_is_refused() {
        let err = decide(
            &pins(&[IMAGE, "linux-headers-6.1.0-56-common=6.1.192-2"]),
            false,
            bookworm,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").starts_with(
                "linux-headers-6.1.0-56-common=6.1.192-2 is no longer offered, nor any \
                 linux-headers-6.1.0-56-common;"
            ),
            "{err:#}"
        );
    }

    #[test]
    fn a_source_package_drifts_by_the_same_rule() {
        let resolved = decide(&pins(&["linux-source-7.2=7.2.13-1"]), false, |_| {
            vec!["7.2.14-1".into(), "7.2.13-2".into()]
        })
        .unwrap();
        assert_eq!(resolved[0].used(), "linux-source-7.2=7.2.13-2");
    }

    #[test]
    fn with_the_snapshot_archive_a_pin_not_offered_is_fetched_as_pinned() {
        let resolved = decide(
            &pins(&[IMAGE, KBUILD, "linux-source-7.2=7.2.13-1"]),
            true,
            bookworm,
        )
        .unwrap();
        assert!(matches!(resolved[0], Resolved::Exact { .. }));
        assert_eq!(
            resolved[1],
            Resolved::FromSnapshot {
                package: "linux-kbuild-6.1".into(),
                version: "6.1.192-2".into()
            }
        );
        assert_eq!(resolved[2].used(), "linux-source-7.2=7.2.13-1");
        assert_eq!(drift_key(&resolved), None);
    }

    #[test]
    fn a_malformed_pin_is_named() {
        let err = decide(&pins(&["linux-kbuild-6.1"]), false, bookworm).unwrap_err();
        assert!(format!("{err:#}").contains("\"linux-kbuild-6.1\" is not a `name=version` pin"));
    }
}
