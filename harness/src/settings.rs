//! The `KLP_HARNESS_*` environment variables: one table, read once, each
//! value checked. A bad value, or a variable the table does not know, is
//! an error naming the variable and the forms it accepts; nothing falls
//! back silently.

use anyhow::{bail, Result};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// One environment variable: its name, the values it accepts, its default
/// and what it does. `--help` and docs/host.md list this table.
pub struct Knob {
    pub name: &'static str,
    /// The value's form, as `--help` shows it.
    pub form: &'static str,
    /// What an error says it expected.
    pub accepts: &'static str,
    pub default: &'static str,
    pub what: &'static str,
}

pub const KNOBS: &[Knob] = &[
    Knob {
        name: "KLP_HARNESS_CACHE",
        form: "DIR",
        accepts: "a directory",
        default: "$XDG_CACHE_HOME/klp-harness, else ~/.cache/klp-harness",
        what: "kernels, fixtures, images and saved guest states",
    },
    Knob {
        name: "KLP_HARNESS_ROOT",
        form: "DIR",
        accepts: "a directory with kernels/ and scenarios/",
        default: "the nearest one upwards from the current directory",
        what: "the project: a directory with kernels/ and scenarios/",
    },
    Knob {
        name: "KLP_HARNESS_ARTIFACTS",
        form: "DIR",
        accepts: "a directory",
        default: "<root>/target/klp-harness",
        what: "logs of runs (runs/) and explorations (explore/)",
    },
    Knob {
        name: "KLP_HARNESS_BOOT_TIMEOUT",
        form: "SECONDS",
        accepts: "whole seconds, e.g. 120",
        default: "120",
        what: "bound on a guest's boot",
    },
    Knob {
        name: "KLP_HARNESS_COMMAND_TIMEOUT",
        form: "SECONDS",
        accepts: "whole seconds, e.g. 60",
        default: "60",
        what: "bound on one guest command",
    },
    Knob {
        name: "KLP_HARNESS_TRANSITION_TIMEOUT",
        form: "SECONDS",
        accepts: "whole seconds, e.g. 15",
        default: "15",
        what: "bound on a livepatch transition",
    },
    Knob {
        name: "KLP_HARNESS_SELFTEST_TIMEOUT",
        form: "SECONDS",
        accepts: "whole seconds, e.g. 300",
        default: "300",
        what: "bound on one kernel selftest script",
    },
    Knob {
        name: "KLP_HARNESS_ACCEL",
        form: "kvm|tcg",
        accepts: "kvm or tcg",
        default: "kvm if a probe boot under it works, else tcg",
        what: "QEMU's accelerator",
    },
    Knob {
        name: "KLP_HARNESS_CLOCK",
        form: "counted|real",
        accepts: "counted or real",
        default: "counted where QEMU can count it (TCG, one guest CPU), else real",
        what: "the guest's clock: counted in instructions, skipping idle time, or real time",
    },
    Knob {
        name: "KLP_HARNESS_SNAPSHOTS",
        form: "0|1",
        accepts: "0 or 1",
        default: "1",
        what: "start guests from saved states",
    },
    Knob {
        name: "KLP_HARNESS_QEMU",
        form: "host|private",
        accepts: "host or private",
        default: "the host's if installed or installable without removing anything, else private",
        what: "QEMU to run: the host's, or Debian's unpacked into the cache",
    },
    Knob {
        name: "KLP_HARNESS_NO_INSTALL",
        form: "0|1",
        accepts: "0 or 1",
        default: "0",
        what: "1: never install host packages, even as root",
    },
    Knob {
        name: "KLP_HARNESS_DEBIAN_MIRROR",
        form: "URL",
        accepts: "an http:// or https:// URL",
        default: "http://deb.debian.org",
        what: "Debian archive for kernels and the private QEMU",
    },
    Knob {
        name: "KLP_HARNESS_DEBIAN_SNAPSHOT",
        form: "URL",
        accepts: "an http:// or https:// URL, or nothing",
        default: "none: a pinned version no longer offered moves to its newest Debian revision",
        what: "Debian's snapshot archive (https://snapshot.debian.org), which serves a kernel's pinned packages exactly",
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    Probe,
    Kvm,
    Tcg,
}

/// How the guest's clock should run: from `KLP_HARNESS_CLOCK`, or a
/// scenario's `clock:`. What each means, and when a guest gets it, is in
/// `vm::clock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClockChoice {
    Counted,
    Real,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuChoice {
    Auto,
    Host,
    Private,
}

/// Every knob's value, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub cache: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub artifacts: Option<PathBuf>,
    pub boot_timeout: Duration,
    pub command_timeout: Duration,
    pub transition_timeout: Duration,
    pub selftest_timeout: Duration,
    pub accel: AccelChoice,
    pub clock: ClockChoice,
    pub snapshots: bool,
    pub qemu: QemuChoice,
    pub no_install: bool,
    pub debian_mirror: String,
    /// Empty when unset.
    pub debian_snapshot: String,
}

impl Settings {
    /// Read the knobs through `var`; every `KLP_HARNESS_*` name in `names`
    /// must be one of the table's.
    pub fn parse(
        names: impl IntoIterator<Item = String>,
        var: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self> {
        for name in names {
            if name.starts_with("KLP_HARNESS_") && !KNOBS.iter().any(|k| k.name == name) {
                bail!(
                    "unknown environment variable {name}; known: {}",
                    KNOBS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                );
            }
        }
        let text = |name: &str| -> Result<Option<String>> {
            match var(name) {
                None => Ok(None),
                Some(value) => match value.into_string() {
                    Ok(value) => Ok(Some(value)),
                    Err(_) => bail!("{name} is not valid UTF-8; expected {}", accepts(name)),
                },
            }
        };
        let checked = |name: &str, value: &str, ok: bool| -> Result<()> {
            if !ok {
                bail!("{name}={value}: expected {}", accepts(name));
            }
            Ok(())
        };
        let path = |name: &str| -> Result<Option<PathBuf>> {
            let Some(value) = text(name)? else {
                return Ok(None);
            };
            checked(name, &value, !value.is_empty())?;
            Ok(Some(PathBuf::from(value)))
        };
        let seconds = |name: &str, default: u64| -> Result<Duration> {
            let Some(value) = text(name)? else {
                return Ok(Duration::from_secs(default));
            };
            let parsed = value.parse::<u64>().ok().filter(|s| *s > 0);
            checked(name, &value, parsed.is_some())?;
            Ok(Duration::from_secs(parsed.unwrap_or(default)))
        };
        let switch = |name: &str, default: bool| -> Result<bool> {
            match text(name)?.as_deref() {
                None => Ok(default),
                Some("1") => Ok(true),
                Some("0") => Ok(false),
                Some(other) => bail!("{name}={other}: expected {}", accepts(name)),
            }
        };
        let accel = match text("KLP_HARNESS_ACCEL")?.as_deref() {
            None => AccelChoice::Probe,
            Some("kvm") => AccelChoice::Kvm,
            Some("tcg") => AccelChoice::Tcg,
            Some(other) => bail!("KLP_HARNESS_ACCEL={other}: expected kvm or tcg"),
        };
        let clock = match text("KLP_HARNESS_CLOCK")?.as_deref() {
            None | Some("counted") => ClockChoice::Counted,
            Some("real") => ClockChoice::Real,
            Some(other) => bail!("KLP_HARNESS_CLOCK={other}: expected counted or real"),
        };
        let qemu = match text("KLP_HARNESS_QEMU")?.as_deref() {
            None => QemuChoice::Auto,
            Some("host") => QemuChoice::Host,
            Some("private") => QemuChoice::Private,
            Some(other) => bail!("KLP_HARNESS_QEMU={other}: expected host or private"),
        };
        let url = |name: &str, default: &str| -> Result<String> {
            match text(name)? {
                None => Ok(default.to_string()),
                Some(url) if url.is_empty() && default.is_empty() => Ok(url),
                Some(url) => {
                    let ok = (url.starts_with("http://") || url.starts_with("https://"))
                        && !url.contains(char::is_whitespace);
                    checked(name, &url, ok)?;
                    Ok(url.trim_end_matches('/').to_string())
                }
            }
        };
        let debian_mirror = url("KLP_HARNESS_DEBIAN_MIRROR", "http://deb.debian.org")?;
        let debian_snapshot = url("KLP_HARNESS_DEBIAN_SNAPSHOT", "")?;
        Ok(Self {
            cache: path("KLP_HARNESS_CACHE")?,
            root: path("KLP_HARNESS_ROOT")?,
            artifacts: path("KLP_HARNESS_ARTIFACTS")?,
            boot_timeout: seconds("KLP_HARNESS_BOOT_TIMEOUT", 120)?,
            command_timeout: seconds("KLP_HARNESS_COMMAND_TIMEOUT", 60)?,
            transition_timeout: seconds("KLP_HARNESS_TRANSITION_TIMEOUT", 15)?,
            selftest_timeout: seconds("KLP_HARNESS_SELFTEST_TIMEOUT", 300)?,
            accel,
            clock,
            snapshots: switch("KLP_HARNESS_SNAPSHOTS", true)?,
            qemu,
            no_install: switch("KLP_HARNESS_NO_INSTALL", false)?,
            debian_mirror,
            debian_snapshot,
        })
    }
}

fn accepts(name: &str) -> &'static str {
    KNOBS
        .iter()
        .find(|knob| knob.name == name)
        .map_or("?", |knob| knob.accepts)
}

/// The process's settings, read from its environment the first time.
pub fn load() -> Result<&'static Settings> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    let parsed = SETTINGS.get_or_init(|| {
        let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        Settings::parse(names, |name| std::env::var_os(name)).map_err(|err| format!("{err:#}"))
    });
    match parsed {
        Ok(settings) => Ok(settings),
        Err(message) => bail!("{message}"),
    }
}

/// The settings, for code that runs after `load()` succeeded (the binaries
/// call it before anything else).
pub fn get() -> &'static Settings {
    load().unwrap_or_else(|err| panic!("{err:#}"))
}

/// The table as `--help` shows it.
pub fn help() -> String {
    let mut text = String::from("Environment (read once; a bad value is an error):\n");
    for knob in KNOBS {
        text.push_str(&format!(
            "  {}={}\n      {} (default: {})\n",
            knob.name, knob.form, knob.what, knob.default
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Settings> {
        let owned: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::parse(owned.iter().map(|(k, _)| k.clone()), |name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    fn error(vars: &[(&str, &str)]) -> String {
        format!("{:#}", parse(vars).unwrap_err())
    }

    #[test]
    fn defaults_without_variables() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.boot_timeout, Duration::from_secs(120));
        assert_eq!(settings.accel, AccelChoice::Probe);
        assert_eq!(settings.clock, ClockChoice::Counted);
        assert!(settings.snapshots);
        assert_eq!(settings.debian_mirror, "http://deb.debian.org");
        assert_eq!(settings.debian_snapshot, "");
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_accepted_forms() {
        assert_eq!(
            error(&[("KLP_HARNESS_BOOT_TIMEOUT", "2m")]),
            "KLP_HARNESS_BOOT_TIMEOUT=2m: expected whole seconds, e.g. 120"
        );
        assert_eq!(
            error(&[("KLP_HARNESS_ACCEL", "KVM")]),
            "KLP_HARNESS_ACCEL=KVM: expected kvm or tcg"
        );
        assert_eq!(
            error(&[("KLP_HARNESS_CLOCK", "icount")]),
            "KLP_HARNESS_CLOCK=icount: expected counted or real"
        );
        assert_eq!(
            error(&[("KLP_HARNESS_SNAPSHOTS", "no")]),
            "KLP_HARNESS_SNAPSHOTS=no: expected 0 or 1"
        );
        assert_eq!(
            error(&[("KLP_HARNESS_COMMAND_TIMEOUT", "0")]),
            "KLP_HARNESS_COMMAND_TIMEOUT=0: expected whole seconds, e.g. 60"
        );
        assert!(error(&[("KLP_HARNESS_DEBIAN_MIRROR", "deb.debian.org")])
            .starts_with("KLP_HARNESS_DEBIAN_MIRROR=deb.debian.org: expected an http://"));
        assert!(
            error(&[("KLP_HARNESS_DEBIAN_SNAPSHOT", "snapshot.debian.org")]).starts_with(
                "KLP_HARNESS_DEBIAN_SNAPSHOT=snapshot.debian.org: expected an http://"
            )
        );
    }

    #[test]
    fn an_unknown_variable_is_an_error() {
        let message = error(&[("KLP_HARNESS_BOOT_TIMOUT", "30")]);
        assert!(
            message.starts_with("unknown environment variable KLP_HARNESS_BOOT_TIMOUT;"),
            "{message}"
        );
        assert!(message.contains("KLP_HARNESS_BOOT_TIMEOUT"));
    }

    #[test]
    fn good_values_are_taken() {
        let settings = parse(&[
            ("KLP_HARNESS_BOOT_TIMEOUT", "30"),
            ("KLP_HARNESS_ACCEL", "tcg"),
            ("KLP_HARNESS_SNAPSHOTS", "0"),
            ("KLP_HARNESS_CLOCK", "real"),
            ("KLP_HARNESS_QEMU", "private"),
            ("KLP_HARNESS_DEBIAN_MIRROR", "http://mirror.example/"),
            ("KLP_HARNESS_DEBIAN_SNAPSHOT", "https://snapshot.example/"),
        ])
        .unwrap();
        assert_eq!(settings.boot_timeout, Duration::from_secs(30));
        assert_eq!(settings.accel, AccelChoice::Tcg);
        assert!(!settings.snapshots);
        assert_eq!(settings.clock, ClockChoice::Real);
        assert_eq!(settings.qemu, QemuChoice::Private);
        assert_eq!(settings.debian_mirror, "http://mirror.example");
        assert_eq!(settings.debian_snapshot, "https://snapshot.example");
    }

    #[test]
    fn every_variable_the_code_reads_is_in_the_table() {
        // The source must not read a KLP_HARNESS_ variable behind the table's back.
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for entry in walkdir::WalkDir::new(&src) {
            let entry = entry.unwrap();
            if entry.path().extension().is_none_or(|ext| ext != "rs")
                || entry.path().ends_with("settings.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap();
            assert!(
                !text.contains("env::var(\"KLP_HARNESS_")
                    && !text.contains("env::var_os(\"KLP_HARNESS_"),
                "{} reads a KLP_HARNESS_ variable itself",
                entry.path().display()
            );
        }
    }
}
