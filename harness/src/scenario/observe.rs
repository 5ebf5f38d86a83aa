//! What the guest shows after a step, as data: one round trip reads the
//! command's status and output, the kernel log it caused, the sysfs
//! listing and the files its expectations name. The judge works from
//! this alone, live or from a kept run.

use super::format::{FeatureState, PatchState};
use super::header::TAINT_FLAGS;
use crate::guest::livepatch::{Listing, LISTING_COMMAND};
use crate::guest::{CommandResult, Link};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const LIVEPATCH: &str = "/sys/kernel/livepatch";

/// Everything one step showed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The guest shell command the step ran.
    pub command: String,
    /// None when the guest gave no answer (`lost` says why).
    pub result: Option<CommandResult>,
    /// Kernel messages the step caused.
    pub log: String,
    /// `LISTING_COMMAND`'s output after the step.
    pub listing: String,
    /// The files the step's expectations name: path ──> content.
    pub reads: BTreeMap<String, String>,
    /// Why the guest could not be observed (it stopped, or did not answer).
    pub lost: Option<String>,
}

/// What the guest shows once every step has run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndObservation {
    /// The whole console, boot included.
    pub console: String,
    /// /proc/sys/kernel/tainted, or why it could not be read.
    pub tainted: std::result::Result<String, String>,
}

const READ_START: &str = "@@klp-harness read@@";
const READ_END: &str = "@@klp-harness end@@";

/// Run `command`, then read the kernel log, the listing and `reads` in
/// one more round trip. A guest that stops answering ends the
/// observation with `lost` set.
pub fn observe(link: &mut dyn Link, command: &str, reads: &[String]) -> Observation {
    let mut observation = Observation {
        command: command.to_string(),
        ..Default::default()
    };
    match link.run(command) {
        Ok(result) => observation.result = Some(result),
        Err(err) => {
            observation.lost = Some(format!("{err:#}"));
            return observation;
        }
    }
    // A kernel that oopsed in the command (insmod killed with klp_mutex
    // held) may never answer a read of sysfs that takes the lock: when a
    // signal killed the command, read the kernel log alone first, and
    // stop there if it shows a crash, which fails the step.
    let mut log_before = String::new();
    if observation.result.as_ref().is_some_and(|r| r.status >= 128) {
        match link.kernel_log_since_last_and("true") {
            Ok((log, _)) if CRASHES.iter().any(|crash| log.contains(crash)) => {
                observation.log = log;
                return observation;
            }
            Ok((log, _)) => log_before = log,
            Err(err) => {
                observation.lost = Some(format!("{err:#}"));
                return observation;
            }
        }
    }
    let mut after = LISTING_COMMAND.to_string();
    for path in reads {
        after.push_str(&format!(
            "; echo '{READ_START}'; cat {} 2>&1; echo '{READ_END}'",
            crate::guest::shell_quote(path)
        ));
    }
    match link.kernel_log_since_last_and(&after) {
        Ok((log, output)) => {
            observation.log = log_before + &log;
            let start = format!("{READ_START}\n");
            let mut chunks = output.split(&start);
            observation.listing = chunks.next().unwrap_or_default().to_string();
            for (path, chunk) in reads.iter().zip(chunks) {
                let content = chunk
                    .strip_suffix(&format!("{READ_END}\n"))
                    .unwrap_or(chunk);
                observation.reads.insert(path.clone(), content.to_string());
            }
        }
        Err(err) => observation.lost = Some(format!("{err:#}")),
    }
    observation
}

/// The whole console and the taint flags, once the steps have run.
pub fn observe_end(link: &mut dyn Link) -> EndObservation {
    let tainted = match link.run("cat /proc/sys/kernel/tainted") {
        Ok(result) if result.status == 0 => Ok(result.output.trim().to_string()),
        Ok(result) => Err(format!(
            "cat /proc/sys/kernel/tainted failed with status {}: {}",
            result.status, result.output
        )),
        Err(err) => Err(format!("{err:#}")),
    };
    EndObservation {
        console: link.console(),
        tainted,
    }
}

/// A patch's attributes in the listing, with `patched` of the named
/// objects; None when the patch is not under /sys/kernel/livepatch.
pub fn patch_state(listing: &Listing, name: &str, objects: &[&str]) -> Option<PatchState> {
    let values = listing.dir(&format!("{LIVEPATCH}/{name}"))?;
    let patched: BTreeMap<String, u8> = objects
        .iter()
        .filter_map(|o| {
            Some((
                o.to_string(),
                values
                    .get(format!("{o}/patched").as_str())?
                    .trim()
                    .parse()
                    .ok()?,
            ))
        })
        .collect();
    let number = |name: &str| values.get(name).and_then(|v| v.trim().parse::<u32>().ok());
    let small = |name: &str| number(name).and_then(|v| u8::try_from(v).ok());
    Some(PatchState {
        enabled: small("enabled"),
        transition: small("transition"),
        replace: small("replace"),
        stack_order: number("stack_order"),
        patched: Some(patched),
    })
}

/// /sys/kernel/klp_features/<id>/ in the listing, or None.
pub fn feature_state(listing: &Listing, id: u64) -> Option<FeatureState> {
    let values = listing.dir(&format!("/sys/kernel/klp_features/{id}"))?;
    let text = |name: &str| values.get(name).map(|v| v.trim().to_string());
    Some(FeatureState {
        name: text("name"),
        version: text("version"),
        owner: text("owner"),
        allocations: text("allocations").and_then(|v| v.parse().ok()),
        enabled: text("enabled").and_then(|v| v.parse().ok()),
        shadow: text("shadow").and_then(|v| v.parse().ok()),
    })
}

/// None if every wanted fragment appears in `log`, each on a later line
/// than the one before. Otherwise a diff: each fragment marked with the
/// line that matched it or as missing, then the lines the step logged.
pub fn log_diff(log: &str, wanted: &[&str]) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut next = 0;
    let mut marks = Vec::new();
    let mut missing = false;
    for fragment in wanted {
        let found = lines[next..]
            .iter()
            .position(|line| line.contains(fragment))
            .map(|i| next + i);
        match found {
            Some(line) if !missing => {
                marks.push(format!("  found    {fragment:?}  (line {})", line + 1));
                next = line + 1;
            }
            _ => {
                missing = true;
                marks.push(format!("  MISSING  {fragment:?}"));
            }
        }
    }
    if !missing {
        return None;
    }
    let mut diff = marks.join("\n");
    diff.push_str("\nthis step logged:\n");
    for (number, line) in lines.iter().enumerate() {
        diff.push_str(&format!("  {:>3} | {line}\n", number + 1));
    }
    Some(diff.trim_end().to_string())
}

/// Logged by klp_enable_patch() on a kernel without reliable stack traces:
/// its transitions do not follow the consistency model, so no result means much.
pub const NO_CONSISTENCY_MODEL: &str = "doesn't have support for the livepatch consistency model";

/// Kernel messages of a crash that may leave locks held for good.
const CRASHES: &[&str] = &["Oops:", "Kernel panic"];

/// Kernel messages that mean something went wrong, whatever the scenario.
const SPLATS: &[&str] = &[
    "------------[ cut here ]------------",
    "WARNING: CPU:",
    "BUG:",
    "Oops:",
    "Kernel panic",
    "rcu: INFO: rcu_",
    "detected stalls on CPUs",
    "possible circular locking dependency",
    NO_CONSISTENCY_MODEL,
];

/// The first line that reports a warning or crash, other than the allowed ones.
pub fn kernel_splat<'a>(log: &'a str, allowed: &[String]) -> Option<&'a str> {
    log.lines().find(|line| {
        SPLATS.iter().any(|splat| line.contains(splat))
            && !allowed
                .iter()
                .any(|fragment| line.contains(fragment.as_str()))
    })
}

/// The letters of /proc/sys/kernel/tainted's bit mask.
pub fn taint_flags(mask: &str) -> Result<Vec<char>> {
    let bits: u64 = mask
        .parse()
        .map_err(|_| anyhow::anyhow!("/proc/sys/kernel/tainted: {mask:?} is not a number"))?;
    Ok((0..64)
        .filter(|bit| bits & (1 << bit) != 0)
        .map(|bit| TAINT_FLAGS.get(bit).copied().unwrap_or('?'))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest whose command oopses, killed, with `crash` in the kernel
    /// log (none when empty); every command is noted.
    struct Crashing {
        crash: &'static str,
        sent: Vec<String>,
    }

    impl Link for Crashing {
        fn run(&mut self, command: &str) -> Result<CommandResult> {
            self.sent.push(command.to_string());
            let killed = !self.crash.is_empty();
            Ok(CommandResult {
                status: if killed { 137 } else { 0 },
                output: if killed { "Killed\n" } else { "" }.into(),
            })
        }
        fn kernel_log_since_last_and(&mut self, also: &str) -> Result<(String, String)> {
            self.sent.push(also.to_string());
            Ok((self.crash.to_string(), String::new()))
        }
        fn console(&self) -> String {
            String::new()
        }
        fn command_line(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn after_an_oops_only_the_kernel_log_is_read() {
        let mut guest = Crashing {
            crash: "BUG: kernel NULL pointer dereference\nOops: Oops: 0000 [#1] SMP\n",
            sent: vec![],
        };
        let seen = observe(&mut guest, "insmod x.ko", &["/sys/x".into()]);
        assert_eq!(guest.sent, ["insmod x.ko", "true"]);
        assert!(seen.listing.is_empty() && seen.reads.is_empty());
        assert!(kernel_splat(&seen.log, &[]).is_some_and(|line| line.starts_with("BUG:")));
        // Without a crash the listing and the reads come with the log.
        guest.crash = "";
        observe(&mut guest, "true", &["/sys/x".into()]);
        assert!(guest.sent[3].starts_with(LISTING_COMMAND) && guest.sent[3].contains("/sys/x"));
    }

    #[test]
    fn log_lines_must_come_in_order() {
        let log = "a one\nb two\nc three\n";
        assert_eq!(log_diff(log, &["one", "three"]), None);
        assert_eq!(
            log_diff(log, &["three", "one"]).unwrap(),
            "  found    \"three\"  (line 3)\n  MISSING  \"one\"\nthis step logged:\n    1 | a one\n    2 | b two\n    3 | c three"
        );
        assert!(log_diff(log, &["four"])
            .unwrap()
            .starts_with("  MISSING  \"four\"\n"));
    }

    #[test]
    fn splats_are_found() {
        let oops = "[ 1.0] ok\n[ 2.0] BUG: unable to handle page fault\n";
        assert!(kernel_splat(oops, &[]).is_some());
        assert!(kernel_splat(oops, &["unable to handle".into()]).is_none());
        assert!(kernel_splat("[ 1.0] livepatch: enabling patch 'x'\n", &[]).is_none());
    }

    /// Kernel logs of real runs (tests/data/logs/), as the parsers meet them.
    const PANIC: &str = include_str!("../../tests/data/logs/panic-debian-6.12.log");
    const RCU_STALL: &str = include_str!("../../tests/data/logs/rcu-stall-debian-6.12.log");
    const NOT_COMPATIBLE: &str =
        include_str!("../../tests/data/logs/not-compatible-src-7.2.steps.log");
    const LOCKDEP: &str = include_str!("../../tests/data/logs/lockdep-src-6.12.log");

    #[test]
    fn real_crashes_are_named_by_their_first_line() {
        let panic = kernel_splat(PANIC, &[]).expect("a panic is a splat");
        assert!(
            panic.contains("Kernel panic - not syncing: sysrq triggered crash"),
            "{panic}"
        );
        let stall = kernel_splat(RCU_STALL, &[]).expect("a stall is a splat");
        assert!(
            stall.ends_with("rcu: INFO: rcu_preempt self-detected stall on CPU"),
            "{stall}"
        );
        let lockdep = kernel_splat(LOCKDEP, &[]).expect("lockdep is a splat");
        assert!(
            lockdep.contains("WARNING: possible circular locking dependency detected"),
            "{lockdep}"
        );
        // Allowed by a scenario, the stall is not one.
        assert_eq!(
            kernel_splat(RCU_STALL, &["rcu: ".into(), "detected stalls".into()]),
            None
        );
    }

    #[test]
    fn a_refused_livepatch_is_a_log_line_not_a_splat() {
        assert_eq!(kernel_splat(NOT_COMPATIBLE, &[]), None);
        let wanted = "is not compatible with the already installed livepatches";
        assert_eq!(log_diff(NOT_COMPATIBLE, &[wanted]), None);
        let diff = log_diff(NOT_COMPATIBLE, &[wanted, "patching complete"]).unwrap();
        assert!(diff.contains("MISSING  \"patching complete\""), "{diff}");
    }

    #[test]
    fn taint_mask_becomes_letters() {
        // K (bit 15) + O (12) + E (13) + W (9).
        assert_eq!(
            taint_flags(&((1 << 15) | (1 << 12) | (1 << 13) | (1 << 9)).to_string()).unwrap(),
            ['W', 'O', 'E', 'K']
        );
        assert_eq!(taint_flags("0").unwrap(), []);
        assert!(taint_flags("x").is_err());
    }
}
