//! Guest architectures, one record each in `kernels/arch/NAME.yaml` with
//! its config fragment beside it (`NAME.config`): how to build a kernel
//! and modules for it, and how QEMU runs it. A kernel definition names
//! its architecture (`arch:`, x86_64 by default); nothing else in the
//! harness names one.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The architecture a kernel definition gets when it names none.
pub const DEFAULT: &str = "x86_64";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// kbuild's `ARCH=`.
    pub kernel_arch: String,
    /// Debian's name for it (the busybox-static package's architecture).
    pub debian_arch: String,
    /// What `std::env::consts::ARCH` says on a host of this architecture:
    /// such a host builds natively and may run guests under KVM.
    pub host_arch: String,
    pub cross_compiler: CrossCompiler,
    pub qemu: QemuRecord,
    /// The kernel's console device, for `console=`.
    pub console: String,
    pub image: Image,
    /// Config lines without which no scenario runs on this architecture
    /// (its console, its unwinder), checked in every kernel's .config.
    pub required_config: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossCompiler {
    /// The GNU triple: `CROSS_COMPILE=<triple>-`.
    pub triple: String,
    /// The Debian package that brings `<triple>-gcc`.
    pub package: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuRecord {
    pub program: String,
    /// The Debian package with the program.
    pub package: String,
    /// Firmware packages a private copy of QEMU needs besides
    /// qemu-system-data; each is passed with `-L /usr/share/<package>`.
    #[serde(default)]
    pub firmware: Vec<String>,
    /// Arguments choosing the machine, before every other.
    #[serde(default)]
    pub machine: Vec<String>,
    /// `-cpu` under TCG (KVM passes the host's CPU through).
    pub tcg_cpu: String,
    /// The oldest QEMU whose saved guests of this architecture run again
    /// when restored, where older ones do not. An older QEMU boots every
    /// guest; where the host has one, a private newer copy runs instead.
    #[serde(default)]
    pub saved_state_since: Option<QemuSince>,
    /// The most CPUs a guest restored from a saved state works with, where
    /// a guest with more does not: such guests boot.
    #[serde(default)]
    pub saved_state_cpus: Option<CpuLimit>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuLimit {
    pub most: u32,
    /// What a restored guest with more CPUs does wrong.
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSince {
    /// A QEMU version, `10.0`.
    pub version: String,
    /// What older versions do wrong.
    pub why: String,
    /// The Debian suite with a new enough QEMU for a private copy, on
    /// top of the host's release (`bookworm-backports`).
    pub suite: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The make target that builds it.
    pub target: String,
    /// Where it is, relative to the build directory.
    pub path: String,
}

/// One architecture: its name, its record and its config fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    pub name: String,
    pub record: Record,
    pub fragment: PathBuf,
}

impl Arch {
    /// `kernels/arch/NAME.yaml` and `NAME.config` under `kernels_dir`.
    pub fn load(kernels_dir: &Path, name: &str) -> Result<Self> {
        let dir = kernels_dir.join("arch");
        let file = dir.join(format!("{name}.yaml"));
        if !file.is_file() {
            let known = known(&dir);
            anyhow::bail!(
                "no architecture named {name:?}: {} does not exist (known: {})",
                file.display(),
                known.join(", ")
            );
        }
        let record: Record = crate::yaml::parse_file(&file)?;
        let fragment = dir.join(format!("{name}.config"));
        if !fragment.is_file() {
            anyhow::bail!(
                "{}: the architecture's config fragment {} is missing",
                file.display(),
                fragment.display()
            );
        }
        Ok(Self {
            name: name.to_string(),
            record,
            fragment,
        })
    }

    /// Whether this host runs the architecture's code itself: no cross
    /// compiler, and KVM may work.
    pub fn is_native(&self) -> bool {
        self.record.host_arch == std::env::consts::ARCH
    }

    /// `ARCH=` and, on another host, `CROSS_COMPILE=`: for every make call.
    pub fn make_args(&self) -> Vec<String> {
        let mut args = vec![format!("ARCH={}", self.record.kernel_arch)];
        if !self.is_native() {
            args.push(format!(
                "CROSS_COMPILE={}-",
                self.record.cross_compiler.triple
            ));
        }
        args
    }

    /// The compiler that builds for it on this host, with its package.
    pub fn compiler(&self) -> (String, String) {
        if self.is_native() {
            ("gcc".into(), "gcc".into())
        } else {
            let cross = &self.record.cross_compiler;
            (format!("{}-gcc", cross.triple), cross.package.clone())
        }
    }

    /// A binutils program for it on this host (`strip`, or
    /// `aarch64-linux-gnu-strip` on another host).
    pub fn binutil(&self, program: &str) -> String {
        if self.is_native() {
            program.to_string()
        } else {
            format!("{}-{program}", self.record.cross_compiler.triple)
        }
    }

    /// What of the record a build for it depends on, for cache keys: make's
    /// arguments, and the image a published build must keep (the
    /// fragment is hashed with the other fragments).
    pub fn identity(&self) -> String {
        let record = &self.record;
        format!(
            "ARCH={} CROSS_COMPILE={}- image={} at {}",
            record.kernel_arch,
            record.cross_compiler.triple,
            record.image.target,
            record.image.path
        )
    }

    /// The kernel command line's console argument.
    pub fn console_arg(&self) -> String {
        format!("console={}", self.record.console)
    }
}

fn known(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_stem()?.to_string_lossy().into_owned();
            (path.extension()? == "yaml").then_some(name)
        })
        .collect();
    names.sort();
    names
}

/// Every architecture record in `kernels/arch/`.
pub fn list(kernels_dir: &Path) -> Result<Vec<Arch>> {
    known(&kernels_dir.join("arch"))
        .iter()
        .map(|name| Arch::load(kernels_dir, name))
        .collect::<Result<_>>()
        .with_context(|| format!("reading {}", kernels_dir.join("arch").display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernels_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels")
    }

    #[test]
    fn every_record_loads_and_names_its_own_tools() {
        let arches = list(&kernels_dir()).unwrap();
        assert!(arches.iter().any(|a| a.name == DEFAULT));
        for arch in arches {
            let record = &arch.record;
            assert!(record.qemu.program.starts_with("qemu-system-"), "{arch:?}");
            assert!(
                record.cross_compiler.package.starts_with("gcc-"),
                "{arch:?}"
            );
            assert!(
                record.image.path.ends_with(&record.image.target)
                    || record.image.path.ends_with("vmlinux")
            );
            assert!(!std::fs::read_to_string(&arch.fragment).unwrap().is_empty());
        }
    }

    #[test]
    fn a_foreign_architecture_is_cross_compiled() {
        let mut arch = Arch::load(&kernels_dir(), DEFAULT).unwrap();
        arch.record.host_arch = "no-such-host".into();
        assert_eq!(
            arch.make_args(),
            ["ARCH=x86", "CROSS_COMPILE=x86_64-linux-gnu-"]
        );
        assert_eq!(arch.compiler().1, "gcc-x86-64-linux-gnu");
    }

    #[test]
    fn ci_installs_what_every_record_needs() {
        let script =
            std::fs::read_to_string(kernels_dir().join("../ci/install-host-deps.sh")).unwrap();
        let listed = |package: &str| {
            script
                .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
                .any(|word| word == package)
        };
        for arch in list(&kernels_dir()).unwrap() {
            assert!(listed(&arch.record.qemu.package), "{}", arch.name);
            if !arch.is_native() {
                let package = &arch.record.cross_compiler.package;
                assert!(listed(package), "{}: {package}", arch.name);
            }
        }
    }

    #[test]
    fn an_unknown_architecture_names_the_known_ones() {
        let err = Arch::load(&kernels_dir(), "vax").unwrap_err().to_string();
        assert!(err.contains("no architecture named \"vax\""), "{err}");
        assert!(err.contains("x86_64"), "{err}");
    }
}
