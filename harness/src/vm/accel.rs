//! Which accelerator QEMU uses, and everything that differs with it.
//! /dev/kvm may exist and still fail (nested virtualisation), so KVM is
//! probed by booting the kernel under it; the probe's log says why it
//! was or was not taken.

use crate::arch::Arch;
use crate::host::qemu::Qemu;
use crate::settings::AccelChoice;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// What differs between the accelerators, in one place.
pub struct Profile {
    pub name: &'static str,
    /// QEMU's `-accel` value.
    accel: &'static str,
    /// QEMU's `-cpu` value; None: the architecture record's `tcg_cpu`.
    pub cpu: Option<&'static str>,
    /// Where a saved guest state can be started again: a state holds the
    /// CPU model the guest booted with.
    pub saved_state: &'static str,
    /// The clock the guest kernel reads (timestamps of the kernel log,
    /// which the benchmark compares, and the guest's own timeouts).
    pub clock: &'static str,
    /// Whether this path has run on the machines the harness was built on.
    pub exercised: &'static str,
}

pub const PROFILES: [Profile; 2] = [
    Profile {
        name: "kvm",
        accel: "kvm",
        // The host's CPU, passed through: full speed, and the guest sees
        // the real CPU's features.
        cpu: Some("host"),
        saved_state: "only on the same host CPU model: the host CPU's model name and \
                       flags are part of the saved-state key",
        clock: "kvm-clock (paravirtual; arch/x86/kernel/kvmclock.c), carried across a \
                saved state by QEMU's kvmclock device",
        exercised: "never: KVM fails on the machines this was built on (QEMU aborts with \
                    \"failed to set MSR 0x10a\"); GitHub's hosted runners have working KVM",
    },
    Profile {
        name: "tcg",
        // Multi-threaded TCG races with the kernel's int3-based text
        // patching (ftrace, jump labels): a vCPU may run a stale block
        // holding the int3 after the poke ended ("Oops: int3").
        accel: "tcg,thread=single",
        // A model of the architecture record's, the same on every host.
        cpu: None,
        saved_state: "on any host with the same QEMU version",
        clock: "the emulated TSC, calibrated against the HPET at boot, running on \
                QEMU's virtual clock, which a saved state carries",
        exercised: "every run, boot and saved state in README.md and docs/",
    },
];

impl Accel {
    pub fn profile(self) -> &'static Profile {
        match self {
            Accel::Kvm => &PROFILES[0],
            Accel::Tcg => &PROFILES[1],
        }
    }

    pub fn name(self) -> &'static str {
        self.profile().name
    }

    /// `-accel` and `-cpu`: under TCG, the architecture's CPU model.
    pub fn qemu_args(self, arch: &Arch) -> Vec<String> {
        let profile = self.profile();
        let cpu = profile.cpu.unwrap_or(&arch.record.qemu.tcg_cpu);
        ["-accel", profile.accel, "-cpu", cpu]
            .map(String::from)
            .to_vec()
    }

    /// What a saved state started under this accelerator depends on
    /// beyond the guest's image and QEMU's version.
    pub fn saved_state_key(self) -> String {
        match self {
            Accel::Kvm => host_cpu(),
            Accel::Tcg => String::new(),
        }
    }
}

/// The host CPU's model name and flags, from /proc/cpuinfo.
fn host_cpu() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .take_while(|line| !line.is_empty())
        .filter(|line| line.starts_with("model name") || line.starts_with("flags"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether guests are known to run under KVM without booting anything:
/// `KLP_HARNESS_ACCEL=kvm`, or a probe since the host booted found it.
pub fn known_kvm(cache_dir: &Path) -> bool {
    match crate::settings::get().accel {
        AccelChoice::Kvm => true,
        AccelChoice::Tcg => false,
        AccelChoice::Probe => {
            let boot_id =
                std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
            let record = cache_dir.join(format!("kvm-probe-{}", boot_id.trim()));
            std::fs::read_to_string(record).is_ok_and(|answer| answer == "kvm")
        }
    }
}

/// `KLP_HARNESS_ACCEL=kvm|tcg` decides; otherwise KVM if a probe boot of
/// `image` under it prints the kernel banner within a few seconds. The
/// answer holds until the host reboots; `kvm-probe-<boot id>.log` in
/// `cache_dir` keeps the probe's command, QEMU's errors and the outcome.
pub fn choose(qemu: &Qemu, image: &Path, arch: &Arch, cache_dir: &Path) -> Accel {
    // KVM runs only the host's own instruction set.
    if !arch.is_native() {
        return Accel::Tcg;
    }
    match crate::settings::get().accel {
        AccelChoice::Kvm => return Accel::Kvm,
        AccelChoice::Tcg => return Accel::Tcg,
        AccelChoice::Probe => {}
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let record = cache_dir.join(format!("kvm-probe-{}", boot_id.trim()));
    if let Ok(answer) = std::fs::read_to_string(&record) {
        return if answer == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
    }
    let (accel, log) = if Path::new("/dev/kvm").exists() {
        probe(qemu, image, arch)
    } else {
        (Accel::Tcg, "no /dev/kvm: TCG\n".to_string())
    };
    let _ = std::fs::create_dir_all(cache_dir);
    let _ = std::fs::write(record.with_extension("log"), log);
    let _ = std::fs::write(&record, accel.name());
    accel
}

/// Boot `image` under KVM for at most a few seconds: KVM if the banner
/// shows, and a log of what happened either way.
fn probe(qemu: &Qemu, image: &Path, arch: &Arch) -> (Accel, String) {
    let mut command = qemu.command();
    command
        .args(&arch.record.qemu.machine)
        .args(Accel::Kvm.qemu_args(arch))
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-m", "256", "-serial", "stdio"])
        .arg("-append")
        .arg(format!("{} panic=-1", arch.console_arg()))
        .arg("-kernel")
        .arg(image);
    let mut log = format!("probe: {command:?}\n");
    let started = Instant::now();
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            log.push_str(&format!("cannot start QEMU: {err}\nresult: tcg\n"));
            return (Accel::Tcg, log);
        }
    };
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(13).any(|w| w == b"Linux version") {
                let _ = tx.send(());
                return;
            }
        }
    });
    let booted = rx.recv_timeout(Duration::from_secs(5)).is_ok();
    let _ = child.kill();
    let status = child.wait();
    let mut errors = String::new();
    let _ = stderr.read_to_string(&mut errors);
    log.push_str(&format!(
        "after {:.1} s: {}\nQEMU's exit: {status:?}\nQEMU's stderr:\n{}\nresult: {}\n",
        started.elapsed().as_secs_f64(),
        if booted {
            "the kernel banner appeared"
        } else {
            "no kernel banner"
        },
        errors.trim_end(),
        if booted { "kvm" } else { "tcg" },
    ));
    let accel = if booted { Accel::Kvm } else { Accel::Tcg };
    (accel, log)
}
