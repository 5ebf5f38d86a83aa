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
use crate::cache::{Cache, ContentHash};
use crate::settings::QemuChoice;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub const PROGRAM: &str = "qemu-system-x86_64";
pub const PACKAGE: &str = "qemu-system-x86";

/// Debian suites the private copy comes from.
const SUITES: &[&str] = &["bookworm", "bookworm-updates", "bookworm-security"];
/// What the private copy needs besides the libraries: the binary, its
/// TCG module (qemu-system-common), option ROMs (qemu-system-data) and
/// the BIOS (seabios).
const PRIVATE_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
];
/// Bump when the way the private copy is made changes.
const RECIPE: &str = "private qemu v1";
const HOST_STATUS: &str = "/var/lib/dpkg/status";

#[derive(Clone, Debug)]
pub struct Qemu {
    pub program: PathBuf,
    /// The unpacked packages, for a private copy.
    private_root: Option<PathBuf>,
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
                .arg(root.join("usr/share/qemu"))
                .arg("-L")
                .arg(root.join("usr/share/seabios"));
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
}

/// The QEMU to use with this cache, decided once per process.
pub fn locate(cache: &Cache) -> Result<Qemu> {
    static FOUND: Mutex<Vec<(PathBuf, Qemu)>> = Mutex::new(Vec::new());
    let mut found = FOUND
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, qemu)) = found.iter().find(|(root, _)| root == cache.root()) {
        return Ok(qemu.clone());
    }
    let qemu = decide(cache)?;
    found.push((cache.root().to_path_buf(), qemu.clone()));
    Ok(qemu)
}

fn host(program: PathBuf) -> Qemu {
    Qemu {
        program,
        private_root: None,
    }
}

fn decide(cache: &Cache) -> Result<Qemu> {
    let settings = crate::settings::get();
    let installed = super::find_program(PROGRAM);
    match (settings.qemu, installed) {
        (QemuChoice::Private, _) => private(cache),
        (_, Some(program)) => Ok(host(program)),
        (QemuChoice::Host, None) => {
            install_on_host(cache).context(
                "KLP_HARNESS_QEMU=host: unset it, or set it to private, to run a private copy instead",
            )?;
            super::find_program(PROGRAM)
                .map(host)
                .with_context(|| format!("{PACKAGE} is installed, yet {PROGRAM} is not on PATH"))
        }
        (QemuChoice::Auto, None) => {
            let why = match install_on_host(cache) {
                Ok(()) => match super::find_program(PROGRAM) {
                    Some(program) => return Ok(host(program)),
                    None => format!("{PROGRAM} is not on PATH after installing {PACKAGE}"),
                },
                Err(err) => format!("{err:#}"),
            };
            crate::event::emit(crate::event::Event::UsingPrivateQemu { why });
            private(cache)
        }
    }
}

/// Install qemu-system-x86 on the host if the harness may (root, and apt
/// removes and downgrades nothing).
fn install_on_host(cache: &Cache) -> Result<()> {
    if !super::is_root() || crate::settings::get().no_install {
        bail!(
            "{PACKAGE} is not installed; install it with:\n    {}",
            super::install_command(&[PACKAGE])
        );
    }
    std::fs::create_dir_all(cache.root().join("locks"))?;
    let _lock = cache.lock("apt-install")?;
    AptGet::default().install(&[PACKAGE])
}

/// The private copy: planned against the host's installed packages (so
/// that only what the host lacks is fetched), downloaded and unpacked once.
fn private(cache: &Cache) -> Result<Qemu> {
    let suites: Vec<String> = SUITES.iter().map(|s| s.to_string()).collect();
    let apt = PrivateApt::new(cache, &suites)?;
    apt.update_if_missing()?;
    let mut last_error = None;
    for attempt in 0..2 {
        if attempt > 0 {
            // The lists were stale: a pinned version is no longer offered.
            apt.update()?;
        }
        let packages = plan(cache, &apt)?;
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
            let qemu = private_at(dir);
            let version = crate::host::run_checked(qemu.command().arg("--version"))
                .context("the unpacked QEMU does not run")?;
            std::fs::write(dir.join("version"), version)?;
            Ok(())
        });
        match made {
            Ok(dir) => return Ok(private_at(&dir)),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.expect("two attempts")).context(format!("cannot make a private {PACKAGE}"))
}

fn private_at(dir: &Path) -> Qemu {
    let root = dir.join("root");
    Qemu {
        program: root.join("usr/bin").join(PROGRAM),
        private_root: Some(root),
    }
}

/// `name=version` of every package the private copy needs on this host:
/// apt's plan for installing qemu-system-x86 against the host's installed
/// packages, with the host's own QEMU packages left out (a newer
/// qemu-utils Breaks the qemu-system-common this one needs, and nothing
/// is installed anyway). Kept in the cache per host package state.
fn plan(cache: &Cache, apt: &PrivateApt) -> Result<Vec<String>> {
    let status = std::fs::read_to_string(HOST_STATUS).unwrap_or_default();
    let key = ContentHash::new()
        .add("recipe", RECIPE)
        .add("status", &status)
        .add("lists", apt.lists_identity())
        .finish();
    let dir = cache.entry("qemu-plans", &key, |dir| {
        let filtered = dir.join("status");
        std::fs::write(&filtered, without_qemu(&status))?;
        let simulation = apt.simulate_install(PRIVATE_PACKAGES, &filtered)?;
        let mut packages = Plan::parse(&simulation).pinned;
        for name in PRIVATE_PACKAGES {
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
        let qemu = private_at(Path::new("/c/qemu/k"));
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
