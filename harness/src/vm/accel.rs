//! Which accelerator QEMU can use. /dev/kvm may exist and still fail
//! (nested virtualisation), so KVM is probed by booting the kernel under it.

use crate::host::qemu::Qemu;
use crate::settings::AccelChoice;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    pub fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            // Multi-threaded TCG races with the kernel's int3-based text
            // patching (ftrace, jump labels): a vCPU may run a stale block
            // holding the int3 after the poke ended ("Oops: int3").
            Accel::Tcg => &["-accel", "tcg,thread=single"],
        }
    }
}

/// `KLP_HARNESS_ACCEL=kvm|tcg` decides; otherwise KVM if a probe boot of
/// `bzimage` under it prints the kernel banner within a few seconds.
pub fn choose(qemu: &Qemu, bzimage: &Path, cache_dir: &Path) -> Accel {
    match crate::settings::get().accel {
        AccelChoice::Kvm => return Accel::Kvm,
        AccelChoice::Tcg => return Accel::Tcg,
        AccelChoice::Probe => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return Accel::Tcg;
    }
    // The answer holds until the host reboots.
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let record = cache_dir.join(format!("kvm-probe-{}", boot_id.trim()));
    if let Ok(answer) = std::fs::read_to_string(&record) {
        return if answer == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
    }
    let accel = if kvm_boots(qemu, bzimage) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let _ = std::fs::create_dir_all(cache_dir);
    let _ = std::fs::write(&record, accel.name());
    accel
}

fn kvm_boots(qemu: &Qemu, bzimage: &Path) -> bool {
    let Ok(mut child) = qemu
        .command()
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args([
            "-m",
            "256",
            "-serial",
            "stdio",
            "-append",
            "console=ttyS0 panic=-1",
        ])
        .arg("-kernel")
        .arg(bzimage)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let mut stdout = child.stdout.take().expect("piped stdout");
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
    let _ = child.wait();
    booted
}
