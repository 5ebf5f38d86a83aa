//! Host prerequisites: which programs the harness runs and which Debian
//! package brings each. As root the harness installs what is missing, as
//! long as apt removes and downgrades nothing (see `apt`); otherwise it
//! names the one command that does.

pub mod apt;
pub mod debian_snapshot;
pub mod private_apt;
pub mod qemu;

use anyhow::{bail, Context, Result};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Debug)]
pub struct Tool {
    pub program: Cow<'static, str>,
    pub package: Cow<'static, str>,
}

impl Tool {
    const fn fixed(program: &'static str, package: &'static str) -> Self {
        Self {
            program: Cow::Borrowed(program),
            package: Cow::Borrowed(package),
        }
    }
}

pub const MAKE: Tool = Tool::fixed("make", "make");
pub const GCC: Tool = Tool::fixed("gcc", "gcc");
pub const APT_GET: Tool = Tool::fixed("apt-get", "apt");
pub const DPKG_DEB: Tool = Tool::fixed("dpkg-deb", "dpkg");
/// What building a kernel from source needs beyond make and gcc.
pub const KERNEL_BUILD_TOOLS: &[Tool] = &[
    MAKE,
    GCC,
    Tool::fixed("flex", "flex"),
    Tool::fixed("bison", "bison"),
    Tool::fixed("bc", "bc"),
    Tool::fixed("xz", "xz-utils"),
    Tool::fixed("patch", "patch"),
    // objtool links against libelf; a path stands for the header here.
    Tool::fixed("/usr/include/libelf.h", "libelf-dev"),
];

/// The C compiler that builds kernels and modules for `arch` here: gcc,
/// or the architecture's cross compiler.
pub fn compiler_for(arch: &crate::arch::Arch) -> Tool {
    let (program, package) = arch.compiler();
    Tool {
        program: Cow::Owned(program),
        package: Cow::Owned(package),
    }
}

/// Debian's bash-static: the bash the kernel's selftest scripts run under
/// in the guest (`bench --peer`).
pub const BASH_STATIC: Tool = Tool::fixed("/bin/bash-static", "bash-static");

/// Debian's busybox-static installs a static binary at this path.
pub const BUSYBOX_STATIC: &str = "/bin/busybox";
const BUSYBOX_PACKAGE: &str = "busybox-static";

/// The static busybox the guest's /init runs: the host's own for its
/// architecture, else Debian's busybox-static for the guest's
/// architecture, downloaded and unpacked into the cache (nothing is
/// installed).
pub fn guest_busybox(cache: &crate::cache::Cache, arch: &crate::arch::Arch) -> Result<PathBuf> {
    if arch.is_native() {
        return Ok(PathBuf::from(BUSYBOX_STATIC));
    }
    let architecture = &arch.record.debian_arch;
    let apt = private_apt::PrivateApt::foreign(cache, &["bookworm".to_string()], architecture)?;
    apt.update_if_missing()?;
    let key = crate::cache::ContentHash::new()
        .add("recipe", "guest busybox v1")
        .add("architecture", architecture)
        .add("lists", apt.lists_identity())
        .finish();
    let dir = cache.entry("guest-tools", &key, |dir| {
        let debs = dir.join("debs");
        std::fs::create_dir_all(&debs)?;
        apt.download(&[BUSYBOX_PACKAGE.to_string()], &debs)?;
        private_apt::PrivateApt::extract_all(&debs, &dir.join("root"))?;
        std::fs::remove_dir_all(&debs)?;
        let busybox = dir.join("root/bin/busybox");
        let elf = std::fs::read(&busybox)
            .with_context(|| format!("{BUSYBOX_PACKAGE}:{architecture} has no /bin/busybox"))?;
        if !is_static_elf(&elf) {
            bail!("{BUSYBOX_PACKAGE}:{architecture}'s /bin/busybox is not a static 64-bit ELF");
        }
        Ok(())
    })?;
    Ok(dir.join("root/bin/busybox"))
}

/// Everything a scenario run needs on the host besides QEMU (see `qemu`).
pub const SCENARIO_TOOLS: &[Tool] = &[MAKE, GCC, APT_GET, DPKG_DEB];

pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.starts_with('/') {
        return Path::new(program).exists().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn busybox_is_static() -> bool {
    std::fs::read(BUSYBOX_STATIC).is_ok_and(|elf| is_static_elf(&elf))
}

/// A 64-bit ELF without a PT_INTERP program header needs no dynamic loader.
fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at + len)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0, |acc, b| (acc << 8) | u64::from(*b)),
        )
    };
    let header = || -> Option<bool> {
        if elf.get(..5)? != b"\x7fELF\x02" {
            return Some(false);
        }
        let (phoff, phentsize, phnum) = (read(0x20, 8)?, read(0x36, 2)?, read(0x38, 2)?);
        for index in 0..phnum {
            if read((phoff + index * phentsize) as usize, 4)? == u64::from(PT_INTERP) {
                return Some(false);
            }
        }
        Some(true)
    };
    header().unwrap_or(false)
}

/// Packages that must be installed for `tools` (and a static busybox).
pub fn missing_packages(tools: &[Tool]) -> Vec<&str> {
    let mut packages: Vec<&str> = tools
        .iter()
        .filter(|tool| find_program(&tool.program).is_none())
        .map(|tool| tool.package.as_ref())
        .collect();
    if !busybox_is_static() {
        packages.push(BUSYBOX_PACKAGE);
    }
    packages.sort_unstable();
    packages.dedup();
    packages
}

/// Let `command` stop when the thread that starts it goes away (the
/// harness killed, say): SIGTERM, on which make stops its jobs and deletes
/// its half-written targets. A build or download must not go on writing
/// into the cache after its harness died while the next run rebuilds.
pub fn stop_with_harness(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send
    // SIGTERM to the child when the thread that started it goes away.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Run a command to completion; its stdout on success, its stderr in the error.
pub fn run_checked(command: &mut Command) -> Result<String> {
    let output = stop_with_harness(command)
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn install_command(packages: &[&str]) -> String {
    format!("sudo apt-get install -y {}", packages.join(" "))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Make sure every tool is there: install as root, else fail with the command to run.
pub fn ensure(tools: &[Tool], lock_dir: &Path) -> Result<()> {
    let missing = missing_packages(tools);
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || crate::settings::load()?.no_install {
        bail!(
            "missing host packages: {}\ninstall them with:\n    {}",
            missing.join(", "),
            install_command(&missing)
        );
    }
    std::fs::create_dir_all(lock_dir)?;
    let lock = std::fs::File::create(lock_dir.join("apt-install.lock"))?;
    lock.lock()?;
    let missing = missing_packages(tools);
    if missing.is_empty() {
        return Ok(());
    }
    apt::AptGet::default().install(&missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_command_names_every_package() {
        assert_eq!(
            install_command(&["busybox-static", "qemu-system-x86"]),
            "sudo apt-get install -y busybox-static qemu-system-x86"
        );
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // The test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn absent_program_maps_to_its_package() {
        let tool = Tool::fixed("klp-harness-no-such-program", "no-such-package");
        assert!(missing_packages(&[tool]).contains(&"no-such-package"));
    }
}
