//! Starting a guest from the saved state of an earlier boot of the same
//! kernel, image and QEMU settings, instead of booting it again.
//!
//! The first boot with a given key saves the guest's state right after
//! /init reported ready (cache entry `snapshots/<key>`); later starts load
//! it with `-incoming`. Fixtures are not in the image: they are copied in
//! after the start, so one state serves every scenario on a kernel.

use super::Guest;
use crate::cache::{Cache, ContentHash};
use crate::host::qemu::Qemu;
use crate::vm::{self, Vm, VmConfig};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

const STATE: &str = "state";
const INIT_UPTIME: &str = "init-uptime";
const BOOT_CONSOLE: &str = "console.log";

/// Bounds for starting a guest.
#[derive(Clone, Copy, Debug)]
pub struct StartLimits {
    pub boot: Duration,
    pub command: Duration,
}

/// Whether guests of this architecture with this many CPUs start from
/// saved states with this QEMU (unless KLP_HARNESS_SNAPSHOTS=0 turns them
/// off).
pub fn enabled(arch: &crate::arch::Arch, qemu: &Qemu, cpus: u32) -> bool {
    let record = &arch.record.qemu;
    crate::settings::get().snapshots
        && qemu.saved_state_problem(record).is_none()
        && record
            .saved_state_cpus
            .as_ref()
            .is_none_or(|limit| cpus <= limit.most)
}

/// Boot the guest.
pub fn boot(config: &VmConfig, limits: StartLimits) -> Result<Guest> {
    let vm = Vm::start(config)?;
    Guest::attach(vm, limits.boot, limits.command)
}

/// Start the guest from its saved state, saving one first if there is
/// none yet.
pub fn start(cache: &Cache, config: &VmConfig, limits: StartLimits) -> Result<Guest> {
    let key = key(config)?;
    let saved = cache.kind_dir("snapshots")?.join(&key);
    // A state truncated or corrupted on disk is dropped before QEMU reads it.
    if saved.is_dir() {
        if let Some(why) = cache.check_entry(&saved)? {
            std::fs::write(
                config.log_dir.join("restore-failed.log"),
                format!("{why}\nbooting instead; the saved state is made anew\n"),
            )?;
        }
    }
    if saved.join(STATE).is_file() {
        match restore(&saved, config, limits) {
            Ok(guest) => return Ok(guest),
            // A state that does not start is dropped, and made anew.
            Err(err) => {
                let why = format!("{err:#}\nbooting instead; the saved state is made anew\n");
                crate::event::emit(crate::event::Event::SavedStateDropped { why: why.clone() });
                std::fs::write(config.log_dir.join("restore-failed.log"), why)?;
                let _lock = crate::cache::lock_at(&saved)?;
                cache.discard(&saved)?;
            }
        }
    }
    let mut guest = boot(config, limits)?;
    let is_state = |path: &Path| path == Path::new(STATE);
    cache.sealed_entry("snapshots", &key, is_state, |dir| {
        guest.vm.save_state(&dir.join(STATE))?;
        std::fs::write(
            dir.join(INIT_UPTIME),
            guest.boot.init_uptime.as_secs_f64().to_string(),
        )?;
        std::fs::write(dir.join(BOOT_CONSOLE), guest.vm.console.text())?;
        std::fs::write(
            dir.join(KERNEL),
            config.image.as_os_str().as_encoded_bytes(),
        )?;
        Ok(())
    })?;
    Ok(guest)
}

/// Names the kernel image a saved state booted, so that states of a kernel
/// that is removed (a mutant's) can go with it.
const KERNEL: &str = "kernel";

/// Delete the saved states of the kernel at `image`; how many.
pub fn discard_for(cache: &Cache, image: &Path) -> Result<usize> {
    let dir = cache.root().join("snapshots");
    let mut discarded = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let saved = entry?.path();
        let booted = std::fs::read(saved.join(KERNEL)).unwrap_or_default();
        if booted == image.as_os_str().as_encoded_bytes() {
            cache.discard(&saved)?;
            discarded += 1;
        }
    }
    Ok(discarded)
}

/// Loading a saved state takes well under a second; a start that has not
/// answered by then will not.
const RESTORE_LIMIT: Duration = Duration::from_secs(15);

fn restore(saved: &Path, config: &VmConfig, limits: StartLimits) -> Result<Guest> {
    let mut config = config.clone();
    config.incoming = Some(saved.join(STATE));
    config.earlier_console = Some(saved.join(BOOT_CONSOLE));
    let uptime: f64 = std::fs::read_to_string(saved.join(INIT_UPTIME))?
        .trim()
        .parse()
        .with_context(|| format!("bad {INIT_UPTIME} in {}", saved.display()))?;
    let vm = Vm::start(&config)?;
    Guest::resume(
        vm,
        Duration::from_secs_f64(uptime),
        limits.boot.min(RESTORE_LIMIT),
        limits.command,
    )
    .with_context(|| format!("starting from the saved guest state {}", saved.display()))
}

/// Everything the saved state depends on.
fn key(config: &VmConfig) -> Result<String> {
    let mut hash = ContentHash::new();
    hash.add("format", "2")
        .add_file("image", &config.image)?
        .add_file("initramfs", &config.initramfs)?
        .add("hardware", vm::hardware_args(config).join(" "))
        .add("accel state", config.accel.saved_state_key())
        .add("append", vm::command_line(config))
        .add("qemu", config.qemu.version_text()?);
    Ok(hash.finish())
}
