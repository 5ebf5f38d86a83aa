//! The kernel's own selftest test-state.sh, run inside the guest as the
//! peer the benchmark measures the harness against.
//!
//! The script and its functions.sh run as the kernel tree has them, with
//! the adaptations a busybox guest needs: bash from Debian's bash-static,
//! shims for the GNU sysctl and date options and the kmod insmod and
//! modinfo behaviour it relies on, /dev/fd for bash's process
//! substitution, and the dynamic debug control file reached through
//! /proc (the test kernels have no debugfs).

use crate::cache::{Cache, ContentHash};
use crate::guest::Guest;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the livepatch selftests live in a kernel tree.
pub const SELFTESTS: &str = "tools/testing/selftests/livepatch";

/// The modules test-state.sh loads.
pub const MODULES: &[&str] = &["test_klp_state", "test_klp_state2", "test_klp_state3"];

const SHIMS: &[(&str, &str)] = &[
    ("sysctl", include_str!("sysctl")),
    ("date", include_str!("date")),
    ("modinfo", include_str!("modinfo")),
];

/// kmod's insmod behaviour, built static on the host for the guest.
const INSMOD_C: &str = include_str!("insmod.c");

/// Where functions.sh looks for dynamic_debug/control, and where the
/// guest offers it instead.
const DEBUG_DIR_LINE: &str = "SYSFS_DEBUG_DIR=\"$SYSFS_KERNEL_DIR/debug\"";
const GUEST_DEBUG_DIR: &str = "/tmp/debug";

pub struct PeerRun {
    pub elapsed: Duration,
}

/// Copy bash, the shims, the scripts and the already copied-in modules
/// into /peer, run test-state.sh there, and time it. It must pass.
pub fn run_test_state(
    guest: &mut Guest,
    cache: &Cache,
    kernel_source: &Path,
    bash: &Path,
) -> Result<PeerRun> {
    let dir = kernel_source.join(SELFTESTS);
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .with_context(|| format!("cannot read {}", dir.join(name).display()))
    };
    let functions = read("functions.sh")?;
    if !functions.contains(DEBUG_DIR_LINE) {
        bail!(
            "{}/functions.sh has no line {DEBUG_DIR_LINE}",
            dir.display()
        );
    }
    let functions = functions.replace(
        DEBUG_DIR_LINE,
        &format!("SYSFS_DEBUG_DIR=\"{GUEST_DEBUG_DIR}\""),
    );
    guest.run_ok(&format!(
        "mkdir -p /peer/bin /peer/test_modules {GUEST_DEBUG_DIR} /lib/modules/$(uname -r)/build && \
         ln -sf /proc/dynamic_debug {GUEST_DEBUG_DIR}/dynamic_debug && \
         {{ [ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd; }}"
    ))?;
    let bash_bytes =
        std::fs::read(bash).with_context(|| format!("cannot read {}", bash.display()))?;
    guest.push_file("/bin/bash", &bash_bytes)?;
    let insmod = build_insmod(cache)?;
    guest.push_file("/peer/bin/insmod", &std::fs::read(&insmod)?)?;
    for (name, text) in SHIMS {
        guest.push_file(&format!("/peer/bin/{name}"), text.as_bytes())?;
    }
    guest.push_file("/peer/functions.sh", functions.as_bytes())?;
    guest.push_file("/peer/test-state.sh", read("test-state.sh")?.as_bytes())?;
    let modules: Vec<String> = MODULES.iter().map(|m| format!("/klp/{m}.ko")).collect();
    guest.run_ok(&format!(
        "chmod 755 /bin/bash /peer/bin/* /peer/test-state.sh && cp {} /peer/test_modules/",
        modules.join(" ")
    ))?;
    let started = Instant::now();
    let result = guest.run("cd /peer && PATH=/peer/bin:$PATH /bin/bash ./test-state.sh")?;
    let elapsed = started.elapsed();
    if result.status != 0 || result.output.contains("not ok") {
        bail!(
            "test-state.sh failed in the guest (status {}):\n{}",
            result.status,
            result.output
        );
    }
    Ok(PeerRun { elapsed })
}

/// The static insmod, compiled once per source.
fn build_insmod(cache: &Cache) -> Result<std::path::PathBuf> {
    let key = ContentHash::new().add("insmod.c", INSMOD_C).finish();
    let dir = cache.entry("tools", &format!("peer-insmod-{key}"), |dir| {
        let source = dir.join("insmod.c");
        std::fs::write(&source, INSMOD_C)?;
        let output = std::process::Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(dir.join("insmod"))
            .arg(&source)
            .output()
            .context("cannot run gcc")?;
        if !output.status.success() {
            bail!(
                "gcc could not build the guest's insmod:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    })?;
    Ok(dir.join("insmod"))
}
