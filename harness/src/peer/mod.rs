//! The kernel's own livepatch selftests, the harness's closest peer, run
//! inside the guest (`selftests`): for trials of their own, beside the
//! suite in `mutate`, and timed against the harness in `bench --peer`.
//!
//! The scripts run as the kernel tree has them, with what a busybox guest
//! lacks for them: bash from Debian's bash-static; shims for the GNU
//! sysctl, date, mktemp, stat, getconf and comm options they use and for
//! kmod's modinfo; insmod and modprobe that behave like kmod's (one
//! finit_module, kmod's messages); /dev/fd for bash's process
//! substitution; tracefs mounted; and the dynamic debug control file
//! reached through /proc, since the test kernels have no debugfs: the
//! one change to the scripts is that functions.sh looks for it there.

pub mod selftests;

use crate::cache::{Cache, ContentHash};
use crate::guest::Guest;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

const SHIMS: &[(&str, &str)] = &[
    ("sysctl", include_str!("sysctl")),
    ("date", include_str!("date")),
    ("modinfo", include_str!("modinfo")),
    ("comm", include_str!("comm")),
    ("mktemp", include_str!("mktemp")),
    ("stat", include_str!("stat")),
    ("getconf", include_str!("getconf")),
];

/// kmod's insmod and modprobe behaviour, built static on the host.
const INSMOD_C: &str = include_str!("insmod.c");

/// Where the guest offers the dynamic debug control file.
const GUEST_DEBUG_DIR: &str = "/tmp/debug";

/// What every guest that runs a selftest gets, read once.
pub struct GuestKit {
    cache: Cache,
    bash: Vec<u8>,
    insmod: Vec<u8>,
}

impl GuestKit {
    pub fn new(cache: &Cache) -> Result<Self> {
        crate::host::ensure(&[crate::host::BASH_STATIC], &cache.root().join("locks"))?;
        let bash_path = PathBuf::from(&*crate::host::BASH_STATIC.program);
        let bash = std::fs::read(&bash_path)
            .with_context(|| format!("cannot read {}", bash_path.display()))?;
        let insmod = std::fs::read(static_program(cache, INSMOD_C)?)?;
        Ok(Self {
            cache: cache.clone(),
            bash,
            insmod,
        })
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// bash, the shims and the module tools under /peer/bin; /bin/stat
    /// (the selftests call it by that path) becomes the stat shim.
    pub fn install(&self, guest: &mut Guest) -> Result<()> {
        guest.run_ok(&format!(
            "mkdir -p /peer/bin /peer/test_modules {GUEST_DEBUG_DIR} /lib/modules/$(uname -r)/build && \
             ln -sf /proc/dynamic_debug {GUEST_DEBUG_DIR}/dynamic_debug && \
             {{ [ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd; }} && \
             {{ [ ! -d /sys/kernel/tracing ] || [ -e /sys/kernel/tracing/trace ] || \
                mount -t tracefs nodev /sys/kernel/tracing; }}"
        ))?;
        guest.push_file("/bin/bash", &self.bash)?;
        guest.push_file("/peer/bin/insmod", &self.insmod)?;
        for (name, text) in SHIMS {
            guest.push_file(&format!("/peer/bin/{name}"), text.as_bytes())?;
        }
        guest.run_ok(
            "chmod 755 /bin/bash /peer/bin/* && ln -sf insmod /peer/bin/modprobe && \
             rm -f /bin/stat && ln -s /peer/bin/stat /bin/stat",
        )?;
        Ok(())
    }
}

/// functions.sh with the debugfs paths moved to where the guest offers
/// dynamic_debug: trees up to 6.12 name /sys/kernel/debug, later ones
/// build it from $SYSFS_KERNEL_DIR.
fn debug_dir_moved(functions: &str) -> Result<String> {
    const LATER: &str = "SYSFS_DEBUG_DIR=\"$SYSFS_KERNEL_DIR/debug\"";
    if functions.contains(LATER) {
        return Ok(functions.replace(LATER, &format!("SYSFS_DEBUG_DIR=\"{GUEST_DEBUG_DIR}\"")));
    }
    if functions.contains("/sys/kernel/debug/") {
        return Ok(functions.replace("/sys/kernel/debug/", &format!("{GUEST_DEBUG_DIR}/")));
    }
    bail!("functions.sh names no debugfs directory this harness knows ({LATER} or /sys/kernel/debug/)")
}

/// A C program compiled static on the host, once per source.
fn static_program(cache: &Cache, source: &str) -> Result<PathBuf> {
    let key = ContentHash::new().add("program.c", source).finish();
    let dir = cache.entry("tools", &format!("static-{key}"), |dir| {
        let file = dir.join("program.c");
        std::fs::write(&file, source)?;
        let output = std::process::Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(dir.join("program"))
            .arg(&file)
            .output()
            .context("cannot run gcc")?;
        if !output.status.success() {
            bail!(
                "gcc could not build a guest program:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    })?;
    Ok(dir.join("program"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_sh_of_every_era_finds_dynamic_debug_in_the_guest() {
        let old =
            "DYNAMIC_DEBUG=$(grep '^kernel/livepatch' /sys/kernel/debug/dynamic_debug/control)\n";
        assert_eq!(
            debug_dir_moved(old).unwrap(),
            "DYNAMIC_DEBUG=$(grep '^kernel/livepatch' /tmp/debug/dynamic_debug/control)\n"
        );
        let new = "SYSFS_DEBUG_DIR=\"$SYSFS_KERNEL_DIR/debug\"\n";
        assert_eq!(
            debug_dir_moved(new).unwrap(),
            "SYSFS_DEBUG_DIR=\"/tmp/debug\"\n"
        );
        assert!(debug_dir_moved("nothing\n").is_err());
    }
}
