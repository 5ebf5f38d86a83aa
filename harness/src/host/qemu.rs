//! Which QEMU runs the guests: the host's `qemu-system-x86_64`, or a
//! private copy of Debian's packages unpacked into the cache.
//!
//! Installing qemu-system-x86 can harm a host: on Debian 12 with
//! qemu-utils 10 from bookworm-backports, apt would remove qemu-utils
//! (it Breaks qemu-system-common << 8.0, which bookworm's qemu-system-x86
//! needs). Where the host has no QEMU and apt cannot bring one without
//! removing or downgrading something, or the harness is not root, it
//! downloads qemu-system-x86 and whatever the host lacks of its
//! dependencies through the private apt configuration, unpacks them with
//! `dpkg-deb -x`, and runs that binary with its libraries
//! (`LD_LIBRARY_PATH`), its modules (`QEMU_MODULE_DIR`, for the TCG
//! accelerator) and its firmware (`-L`). Nothing is installed.

use super::apt::{AptGet, Plan};
use super::private_apt::PrivateApt;
use crate::arch::QemuRecord;
use crate::cache::{Cache, ContentHash};
use crate::settings::QemuChoice;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Debian suites the private copy comes from.
const SUITES: &[&str] = &["bookworm", "bookworm-updates", "bookworm-security"];
/// What every private copy needs besides the architecture's program
/// and firmware (kernels/arch/): its TCG module (qemu-system-common) and
/// option ROMs (qemu-system-data).
const COMMON_PACKAGES: &[&str] = &["qemu-system-common", "qemu-system-data"];
/// Bump when the way the private copy is made changes.
const RECIPE: &str = "private qemu v1";
const HOST_STATUS: &str = "/var/lib/dpkg/status";

#[derive(Clone, Debug)]
pub struct Qemu {
    pub program: PathBuf,
    /// The unpacked packages, for a private copy.
    private_root: Option<PathBuf>,
    /// Firmware packages whose files a private copy passes with `-L`.
    firmware: Vec<String>,
}

impl Qemu {
    /// A command running this QEMU, with what a private copy needs.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        if let Some(root) = &self.private_root {
            let mut libraries = vec![
                root.join("usr/lib/x86_64-linux-gnu"),
                root.join("lib/x86_64-linux-gnu"),
            ];
            if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH") {
                libraries.extend(std::env::split_paths(&existing));
            }
            command
                .env(
                    "LD_LIBRARY_PATH",
                    std::env::join_paths(libraries).unwrap_or_else(|_| OsString::new()),
                )
                .env(
                    "QEMU_MODULE_DIR",
                    root.join("usr/lib/x86_64-linux-gnu/qemu"),
                )
                .arg("-L")
                .arg(root.join("usr/share/qemu"));
            for package in &self.firmware {
                command.arg("-L").arg(root.join("usr/share").join(package));
            }
        }
        command
    }

    /// Where it comes from, for messages and reports.
    pub fn origin(&self) -> String {
        match &self.private_root {
            Some(_) => format!("private copy {}", self.program.display()),
            None => format!("host {}", self.program.display()),
        }
    }

    pub fn is_private(&self) -> bool {
        self.private_root.is_some()
    }

    /// What `--version` prints, asked once per program and process.
    pub fn version_text(&self) -> Result<String> {
        static VERSIONS: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
        let mut versions = VERSIONS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, version)) = versions.iter().find(|(p, _)| *p == self.program) {
            return Ok(version.clone());
        }
        let output = self
            .command()
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {} --version", self.program.display()))?;
        let version = String::from_utf8_lossy(&output.stdout).into_owned();
        versions.push((self.program.clone(), version.clone()));
        Ok(version)
    }

    /// Why guests of this architecture that this QEMU saved do not run
    /// again when restored; None where they do.
    pub fn saved_state_problem(&self, arch: &QemuRecord) -> Option<String> {
        let since = arch.saved_state_since.as_ref()?;
        let text = self.version_text().unwrap_or_default();
        // A version that does not read (here or in the record) counts as
        // too old: booting is slow but always right.
        match (parse_version(&text), parse_version(&since.version)) {
            (Some(version), Some(oldest)) if version >= oldest => None,
            _ => Some(format!(
                "{} is QEMU {}, older than {}: {}",
                self.origin(),
                version_number(&text),
                since.version,
                since.why
            )),
        }
    }
}

/// The numbers of "QEMU emulator version 7.2.22 (Debian ...)", or of "10.0".
fn parse_version(text: &str) -> Option<Vec<u32>> {
    version_number(text)
        .split('.')
        .map(|part| part.parse().ok())
        .collect()
}

fn version_number(text: &str) -> &str {
    let text = text.trim();
    let text = text
        .strip_prefix("QEMU emulator version ")
        .unwrap_or(text)
        .lines()
        .next()
        .unwrap_or_default();
    text.split_whitespace().next().unwrap_or_default()
}

/// The QEMU for guests of this architecture with this cache, decided
/// once per process.
pub fn locate(cache: &Cache, arch: &QemuRecord) -> Result<Qemu> {
    static FOUND: Mutex<Vec<(PathBuf, String, Qemu)>> = Mutex::new(Vec::new());
    let mut found = FOUND
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, _, qemu)) = found
        .iter()
        .find(|(root, program, _)| root == cache.root() && *program == arch.program)
    {
        return Ok(qemu.clone());
    }
    let qemu = decide(cache, arch)?;
    found.push((
        cache.root().to_path_buf(),
        arch.program.clone(),
        qemu.clone(),
    ));
    Ok(qemu)
}

fn host(program: PathBuf) -> Qemu {
    Qemu {
        program,
        private_root: None,
        firmware: Vec::new(),
    }
}

fn decide(cache: &Cache, arch: &QemuRecord) -> Result<Qemu> {
    let settings = crate::settings::get();
    let (program, package) = (&arch.program, &arch.package);
    let installed = super::find_program(program);
    match (settings.qemu, installed) {
        (QemuChoice::Private, _) => private(cache, arch),
        (QemuChoice::Auto, Some(program)) if settings.snapshots => {
            let host = host(program);
            let (Some(problem), Some(since)) =
                (host.saved_state_problem(arch), &arch.saved_state_since)
            else {
                return Ok(host);
            };
            // Booting every guest costs seconds each; a newer private copy
            // restores them in a fraction of a second.
            match private_from(cache, arch, Some(&since.suite)) {
                Ok(newer) => {
                    crate::event::emit(crate::event::Event::UsingPrivateQemu {
                        why: problem,
                        package: format!("{}/{}", package, since.suite),
                    });
                    Ok(newer)
                }
                Err(err) => {
                    crate::event::emit(crate::event::Event::BootingEveryGuest {
                        why: format!("{problem}; no private copy from {}: {err:#}", since.suite),
                    });
                    Ok(host)
                }
            }
        }
        (_, Some(program)) => Ok(host(program)),
        (QemuChoice::Host, None) => {
            install_on_host(cache, package).context(
                "KLP_HARNESS_QEMU=host: unset it, or set it to private, to run a private copy instead",
            )?;
            super::find_program(program)
                .map(host)
                .with_context(|| format!("{package} is installed, yet {program} is not on PATH"))
        }
        (QemuChoice::Auto, None) => {
            let why = match install_on_host(cache, package) {
                Ok(()) => match super::find_program(program) {
                    Some(program) => return Ok(host(program)),
                    None => format!("{program} is not on PATH after installing {package}"),
                },
                Err(err) => format!("{err:#}"),
            };
            crate::event::emit(crate::event::Event::UsingPrivateQemu {
                why: format!("no host QEMU: {why}"),
                package: package.clone(),
            });
            private(cache, arch)
        }
    }
}

/// Install QEMU's package on the host if the harness may (root, and apt
/// removes and downgrades nothing).
fn install_on_host(cache: &Cache, package: &str) -> Result<()> {
    if !super::is_root() || crate::settings::get().no_install {
        bail!(
            "{package} is not installed; install it with:\n    {}",
            super::install_command(&[package])
        );
    }
    std::fs::create_dir_all(cache.root().join("locks"))?;
    let _lock = cache.lock("apt-install")?;
    AptGet::default().install(&[package])
}

/// The private copy: planned against the host's installed packages (so
/// that only what the host lacks is fetched), downloaded and unpacked once.
fn private(cache: &Cache, arch: &QemuRecord) -> Result<Qemu> {
    let newer = arch
        .saved_state_since
        .as_ref()
        .map(|since| since.suite.as_str());
    private_from(cache, arch, newer)
}

/// A private copy from the host's release, or with its QEMU packages from
/// `newer` (a suite on top of it, such as bookworm-backports).
fn private_from(cache: &Cache, arch: &QemuRecord, newer: Option<&str>) -> Result<Qemu> {
    let mut suites: Vec<String> = SUITES.iter().map(|s| s.to_string()).collect();
    suites.extend(newer.map(String::from));
    let apt = PrivateApt::new(cache, &suites)?;
    apt.update_if_missing()?;
    let mut last_error = None;
    for attempt in 0..2 {
        if attempt > 0 {
            // The lists were stale: a pinned version is no longer offered.
            apt.update()?;
        }
        let packages = plan(cache, &apt, &private_packages(arch), newer)?;
        let key = ContentHash::new()
            .add("recipe", RECIPE)
            .add("packages", packages.join("\n"))
            .finish();
        let made = cache.entry("qemu", &key, |dir| {
            let debs = dir.join("debs");
            std::fs::create_dir_all(&debs)?;
            apt.download(&packages, &debs)?;
            PrivateApt::extract_all(&debs, &dir.join("root"))?;
            std::fs::remove_dir_all(&debs)?;
            let qemu = private_at(dir, arch);
            let version = crate::host::run_checked(qemu.command().arg("--version"))
                .context("the unpacked QEMU does not run")?;
            std::fs::write(dir.join("version"), version)?;
            Ok(())
        });
        match made {
            Ok(dir) => return Ok(private_at(&dir, arch)),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.expect("two attempts"))
        .context(format!("cannot make a private {}", arch.package))
}

/// The architecture's QEMU package and firmware, and what every copy needs.
fn private_packages(arch: &QemuRecord) -> Vec<String> {
    std::iter::once(arch.package.as_str())
        .chain(COMMON_PACKAGES.iter().copied())
        .chain(arch.firmware.iter().map(String::as_str))
        .map(String::from)
        .collect()
}

fn private_at(dir: &Path, arch: &QemuRecord) -> Qemu {
    let root = dir.join("root");
    Qemu {
        program: root.join("usr/bin").join(&arch.program),
        private_root: Some(root),
        firmware: arch.firmware.clone(),
    }
}

/// `name=version` of every package the private copy needs on this host:
/// apt's plan for installing qemu-system-x86 against the host's installed
/// packages, with the host's own QEMU packages left out (a newer
/// qemu-utils Breaks the qemu-system-common this one needs, and nothing
/// is installed anyway). Kept in the cache per host package state.
fn plan(
    cache: &Cache,
    apt: &PrivateApt,
    wanted: &[String],
    newer: Option<&str>,
) -> Result<Vec<String>> {
    let status = std::fs::read_to_string(HOST_STATUS).unwrap_or_default();
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    // `name/suite` makes apt take the package, and what it needs at
    // exactly its version, from that suite.
    let requested: Vec<String> = wanted
        .iter()
        .map(|name| match newer {
            Some(suite) => format!("{name}/{suite}"),
            None => name.to_string(),
        })
        .collect();
    let requested: Vec<&str> = requested.iter().map(String::as_str).collect();
    let key = ContentHash::new()
        .add("recipe", RECIPE)
        .add("wanted", requested.join(" "))
        .add("status", &status)
        .add("lists", apt.lists_identity())
        .finish();
    let dir = cache.entry("qemu-plans", &key, |dir| {
        let filtered = dir.join("status");
        std::fs::write(&filtered, without_qemu(&status))?;
        let simulation = apt.simulate_install(&requested, &filtered)?;
        let mut packages = Plan::parse(&simulation).pinned;
        for name in &wanted {
            if !packages.iter().any(|p| p.split('=').next() == Some(name)) {
                let version = apt
                    .version_of(name)?
                    .with_context(|| format!("{name} is not in {}", SUITES.join(", ")))?;
                packages.push(format!("{name}={version}"));
            }
        }
        packages.sort();
        std::fs::write(dir.join("packages"), packages.join("\n") + "\n")?;
        Ok(())
    })?;
    let text = std::fs::read_to_string(dir.join("packages"))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// A dpkg status file without its QEMU packages (source package qemu).
fn without_qemu(status: &str) -> String {
    status
        .split("\n\n")
        .filter(|stanza| {
            !stanza.lines().any(|line| {
                line.strip_prefix("Package: ")
                    .is_some_and(|name| name.starts_with("qemu-"))
                    || line == "Source: qemu"
                    || line.starts_with("Source: qemu ")
            })
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_their_numbers() {
        let bookworm = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright";
        assert_eq!(parse_version(bookworm), Some(vec![7, 2, 22]));
        assert_eq!(version_number(bookworm), "7.2.22");
        assert!(parse_version(bookworm) < parse_version("10.0"));
        let backports = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)";
        assert!(parse_version(backports) >= parse_version("10.0"));
        assert_eq!(parse_version("not a QEMU"), None);
    }

    #[test]
    fn every_records_oldest_qemu_reads_as_a_version() {
        let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels");
        for arch in crate::arch::list(&kernels).unwrap() {
            if let Some(since) = &arch.record.qemu.saved_state_since {
                assert!(parse_version(&since.version).is_some(), "{}", arch.name);
            }
        }
    }

    #[test]
    fn the_hosts_qemu_packages_are_left_out_of_the_plan() {
        let status = "Package: libc6\nStatus: install ok installed\nVersion: 2.36\n\n\
                      Package: qemu-utils\nStatus: install ok installed\nSource: qemu\n\
                      Version: 1:10.0.2+ds-2+deb13u1~bpo12+1\n\n\
                      Package: qemu-block-extra\nStatus: install ok installed\n\n\
                      Package: seabios\nStatus: install ok installed\nVersion: 1.16.2-1\n";
        let kept = without_qemu(status);
        assert!(kept.contains("Package: libc6\n"));
        assert!(kept.contains("Package: seabios\n"));
        assert!(!kept.contains("qemu-utils"));
        assert!(!kept.contains("qemu-block-extra"));
    }

    #[test]
    fn a_private_copy_runs_with_its_libraries_modules_and_firmware() {
        let x86 = crate::arch::Arch::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels"),
            crate::arch::DEFAULT,
        )
        .unwrap();
        let qemu = private_at(Path::new("/c/qemu/k"), &x86.record.qemu);
        let command = qemu.command();
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(
            args,
            [
                "-L",
                "/c/qemu/k/root/usr/share/qemu",
                "-L",
                "/c/qemu/k/root/usr/share/seabios"
            ]
        );
        let env: Vec<_> = command.get_envs().collect();
        assert!(env.iter().any(|(name, value)| *name == "QEMU_MODULE_DIR"
            && *value == Some("/c/qemu/k/root/usr/lib/x86_64-linux-gnu/qemu".as_ref())));
        assert!(env.iter().any(|(name, value)| *name == "LD_LIBRARY_PATH"
            && value.is_some_and(|v| v
                .to_string_lossy()
                .starts_with("/c/qemu/k/root/usr/lib/x86_64-linux-gnu:"))));
    }
}
