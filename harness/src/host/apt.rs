//! Installing host packages with apt-get without ever removing or
//! downgrading one: apt's plan is simulated first (`apt-get -s`), a plan
//! that removes or downgrades anything is refused with the command the
//! user can run instead, and the install itself runs with `--no-remove`
//! so that apt stops rather than remove if the plan changed meanwhile.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Command, Output};

/// What `apt-get -s install` says it would do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Packages apt would install or upgrade.
    pub install: Vec<String>,
    /// The same as `name=version`.
    pub pinned: Vec<String>,
    /// Packages apt would remove: the harness refuses.
    pub remove: Vec<String>,
    /// Packages apt would downgrade: the harness refuses.
    pub downgrade: Vec<String>,
}

impl Plan {
    /// Read the output of `apt-get -s install ...`: its `Inst`/`Remv`
    /// lines and the list under "will be DOWNGRADED".
    pub fn parse(simulation: &str) -> Self {
        let mut plan = Plan::default();
        let mut in_downgrades = false;
        for line in simulation.lines() {
            if in_downgrades {
                if let Some(names) = line.strip_prefix("  ") {
                    plan.downgrade
                        .extend(names.split_whitespace().map(str::to_string));
                    continue;
                }
                in_downgrades = false;
            }
            if line.starts_with("The following packages will be DOWNGRADED") {
                in_downgrades = true;
            } else if let Some(rest) = line.strip_prefix("Inst ") {
                // Inst NAME [INSTALLED] (VERSION ARCHIVE [ARCH])
                let name = rest.split_whitespace().next().unwrap_or_default();
                let version = rest
                    .split_once('(')
                    .and_then(|(_, after)| after.split_whitespace().next());
                if let Some(version) = version {
                    plan.pinned.push(format!("{name}={version}"));
                }
                plan.install.push(name.to_string());
            } else if let Some(rest) = line.strip_prefix("Remv ") {
                plan.remove
                    .extend(rest.split_whitespace().next().map(str::to_string));
            }
        }
        plan
    }

    pub fn harms_host(&self) -> bool {
        !self.remove.is_empty() || !self.downgrade.is_empty()
    }
}

/// apt-get as the harness runs it.
pub struct AptGet {
    program: PathBuf,
}

impl Default for AptGet {
    fn default() -> Self {
        Self {
            program: PathBuf::from("apt-get"),
        }
    }
}

impl AptGet {
    /// A different apt-get (tests use a fake one).
    pub fn at(program: PathBuf) -> Self {
        Self { program }
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.program)
            .args(["-q", "-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .with_context(|| format!("cannot run {}", self.program.display()))
    }

    /// apt's plan for installing `packages`; the package lists are
    /// refreshed once if apt does not know them yet (a fresh machine).
    pub fn plan(&self, packages: &[&str]) -> Result<Plan> {
        let mut args = vec!["-s", "install", "--no-install-recommends"];
        args.extend(packages);
        let mut output = self.run(&args)?;
        if !output.status.success() {
            self.run(&["update"])?;
            output = self.run(&args)?;
        }
        if !output.status.success() {
            bail!(
                "apt-get cannot install {}:\n{}",
                packages.join(" "),
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        Ok(Plan::parse(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Install `packages` if that removes and downgrades nothing.
    pub fn install(&self, packages: &[&str]) -> Result<()> {
        let plan = self.plan(packages)?;
        if plan.harms_host() {
            bail!("{}", refusal(packages, &plan));
        }
        crate::event::emit(crate::event::Event::InstallingPackages {
            packages: packages.iter().map(|p| p.to_string()).collect(),
        });
        let mut args = vec!["-y", "install", "--no-install-recommends", "--no-remove"];
        args.extend(packages);
        let output = self.run(&args)?;
        if !output.status.success() {
            bail!(
                "apt-get could not install {}:\n{}",
                packages.join(" "),
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        Ok(())
    }
}

/// Why the harness did not install, and what the user can run.
pub fn refusal(packages: &[&str], plan: &Plan) -> String {
    let mut harm = Vec::new();
    if !plan.remove.is_empty() {
        harm.push(format!("remove {}", plan.remove.join(", ")));
    }
    if !plan.downgrade.is_empty() {
        harm.push(format!("downgrade {}", plan.downgrade.join(", ")));
    }
    format!(
        "installing {} would {}, and klp-harness never removes or downgrades a host package.\n\
         See apt's whole plan with:\n    apt-get -s install --no-install-recommends {}\n\
         and run it yourself if that is what you want:\n    {}",
        packages.join(" "),
        harm.join(" and "),
        packages.join(" "),
        super::install_command(packages)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `apt-get -s install qemu-system-x86`, as Debian 12's apt printed it
    /// on a machine with qemu-utils 10.0.2 from bookworm-backports (which
    /// Breaks qemu-system-common << 1:8.0, while bookworm's qemu-system-x86
    /// needs qemu-system-common 7.2), shortened.
    const REMOVES_QEMU_UTILS: &str = "\
Reading package lists...
The following packages will be REMOVED:
  qemu-utils
The following NEW packages will be installed:
  ipxe-qemu libcapstone4 qemu-system-common qemu-system-data qemu-system-x86 seabios
0 upgraded, 6 newly installed, 1 to remove and 133 not upgraded.
Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]
Inst ipxe-qemu (1.0.0+git-20190125.36a4c85-5.1 Debian:12.12/oldstable [all])
Inst libcapstone4 (4.0.2-5 Debian:12.12/oldstable [amd64])
Inst qemu-system-common (1:7.2+dfsg-7+deb12u18+b3 Debian:12.12/oldstable [amd64])
Inst qemu-system-data (1:7.2+dfsg-7+deb12u18 Debian:12.12/oldstable [all])
Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.12/oldstable [amd64])
Inst seabios (1.16.2-1 Debian:12.12/oldstable [all])
Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.12/oldstable [amd64])
";

    const CLEAN: &str = "\
0 upgraded, 1 newly installed, 0 to remove and 133 not upgraded.
Inst busybox-static (1:1.35.0-4+b3 Debian:12.12/oldstable [amd64])
Conf busybox-static (1:1.35.0-4+b3 Debian:12.12/oldstable [amd64])
";

    const DOWNGRADES: &str = "\
The following packages will be DOWNGRADED:
  libfoo1 libbar2
0 upgraded, 0 newly installed, 2 downgraded, 0 to remove and 0 not upgraded.
Inst libfoo1 [2.0-1] (1.0-1 Debian:12.12/oldstable [amd64])
Inst libbar2 [2.0-1] (1.0-1 Debian:12.12/oldstable [amd64])
";

    #[test]
    fn a_plan_names_what_apt_would_remove_and_downgrade() {
        let plan = Plan::parse(REMOVES_QEMU_UTILS);
        assert_eq!(plan.remove, ["qemu-utils"]);
        assert!(plan.install.contains(&"qemu-system-x86".to_string()));
        assert!(plan
            .pinned
            .contains(&"qemu-system-common=1:7.2+dfsg-7+deb12u18+b3".to_string()));
        assert!(plan.harms_host());
        let plan = Plan::parse(DOWNGRADES);
        assert_eq!(plan.downgrade, ["libfoo1", "libbar2"]);
        assert_eq!(plan.pinned, ["libfoo1=1.0-1", "libbar2=1.0-1"]);
        assert!(plan.harms_host());
        let plan = Plan::parse(CLEAN);
        assert_eq!(plan.install, ["busybox-static"]);
        assert!(!plan.harms_host());
    }

    /// A fake apt-get that prints `simulation` for `-s` and otherwise
    /// records that it was asked to change the host.
    fn fake_apt(dir: &std::path::Path, simulation: &str) -> (AptGet, PathBuf) {
        let calls = dir.join("calls");
        std::fs::write(dir.join("simulation"), simulation).unwrap();
        let script = dir.join("apt-get");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{calls}'\n\
                 case \" $* \" in *' -s '*) cat '{sim}' ;; esac\n",
                calls = calls.display(),
                sim = dir.join("simulation").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (AptGet::at(script), calls)
    }

    #[test]
    fn an_install_that_would_remove_a_package_is_refused_before_apt_changes_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let (apt, calls) = fake_apt(tmp.path(), REMOVES_QEMU_UTILS);
        let err = format!("{:#}", apt.install(&["qemu-system-x86"]).unwrap_err());
        assert!(
            err.starts_with(
                "installing qemu-system-x86 would remove qemu-utils, and klp-harness never \
                 removes or downgrades a host package."
            ),
            "{err}"
        );
        assert!(
            err.contains("sudo apt-get install -y qemu-system-x86"),
            "{err}"
        );
        let calls = std::fs::read_to_string(calls).unwrap();
        assert_eq!(
            calls.lines().count(),
            1,
            "apt-get ran beyond the simulation:\n{calls}"
        );
        assert!(calls.contains("-s install"), "{calls}");
    }

    #[test]
    fn a_clean_install_runs_with_apts_no_remove_guard() {
        let tmp = tempfile::tempdir().unwrap();
        let (apt, calls) = fake_apt(tmp.path(), CLEAN);
        apt.install(&["busybox-static"]).unwrap();
        let calls = std::fs::read_to_string(calls).unwrap();
        let install = calls
            .lines()
            .nth(1)
            .expect("an install after the simulation");
        assert!(
            install.contains("--no-remove") && install.ends_with("busybox-static"),
            "{install}"
        );
    }
}
