//! Reading the guest's livepatch state and the kernel log.

use super::format::{FeatureState, PatchState};
use super::header::TAINT_FLAGS;
use crate::guest::Guest;
use anyhow::Result;
use std::collections::BTreeMap;
use std::time::Duration;

const LIVEPATCH: &str = "/sys/kernel/livepatch";

/// Every readable file under the livepatch, feature and target sysfs
/// directories, one `path:value` per line, as `grep -r .` prints them,
/// but read by shell builtins: a step takes one, and under TCG the fork
/// and exec of grep cost 5 to 6 ms of the guest's time where the
/// builtins take 3. The globs reach every depth that holds attributes:
/// livepatch/PATCH/ATTR, livepatch/PATCH/OBJECT/patched,
/// klp_features/ID/ATTR and klp_target/ATTR. Every attribute is one line.
pub const SNAPSHOT_COMMAND: &str =
    "for f in /sys/kernel/livepatch/*/* /sys/kernel/livepatch/*/*/* \
     /sys/kernel/klp_features/*/* /sys/kernel/klp_target/*; do \
     [ -f \"$f\" ] && { IFS= read -r v < \"$f\"; } 2>/dev/null && echo \"$f:$v\"; done; true";

/// Shell that waits until the patch's `transition` is not 1, for at most
/// `limit` on the guest's clock (/proc/uptime, in hundredths of a second);
/// succeeds when the transition has ended or the patch has left sysfs.
/// A read that fails means the patch is leaving: when the attribute goes
/// away under it, a read can get "1" and then fail, so its value is not
/// trusted then. Nothing in the loop forks: `read` is a shell builtin, and
/// the pause is a `read -t` on a FIFO nobody writes. Under TCG each fork
/// costs milliseconds of the guest's CPU, which the transition's own work
/// (klp's retry, RCU grace periods) then waits for. Once the transition
/// has ended, every disabled patch is waited for until it has left sysfs:
/// the patch just disabled, and the patches an atomic replace just
/// replaced. klp removes them from work items after the transition
/// (`klp_free_patch_async()`, `klp_free_replaced_patches_async()`,
/// kernel/livepatch/transition.c), which can run after the wait saw
/// `transition` 0; no patch stays in sysfs disabled. One brace group, so
/// that `A && WAIT && B` chains.
pub fn wait_transition_command(name: &str, limit: Duration) -> String {
    let hundredths = (limit.as_millis() / 10).max(1);
    // "12.05" -> 1205; `1${up#*.} - 100` keeps "05" from reading as octal.
    let now = "read -r up _ < /proc/uptime; now=$((${up%.*} * 100 + 1${up#*.} - 100))";
    format!(
        "{{ [ -p {PAUSE_FIFO} ] || mkfifo {PAUSE_FIFO}; {now}; end=$((now + {hundredths})); \
         while {{ read -r t < {LIVEPATCH}/{name}/transition; }} 2>/dev/null || t=gone; \
         [ \"$t\" = 1 ] && [ $now -lt $end ]; do read -t 0.005 p <> {PAUSE_FIFO}; {now}; done; \
         while [ \"$t\" != 1 ] && [ $now -lt $end ]; do g=0; \
         for e in {LIVEPATCH}/*/enabled; do {{ read -r v < \"$e\"; }} 2>/dev/null && [ \"$v\" = 0 ] && g=1; done; \
         [ $g = 1 ] || break; read -t 0.005 p <> {PAUSE_FIFO}; {now}; done; \
         [ \"$t\" != 1 ]; }}"
    )
}

/// Shell that runs `command` until it succeeds, at most `tries` times,
/// 10 ms apart (forking nothing in between); succeeds if one try did.
/// Removing a disabled patch's module can fail for a moment after the
/// transition: klp drops the module's reference from a work item.
pub fn retry_command(command: &str, tries: u32) -> String {
    format!(
        "{{ [ -p {PAUSE_FIFO} ] || mkfifo {PAUSE_FIFO}; n=0; ok=1; \
         while [ $ok = 1 ] && [ $n -lt {tries} ]; do n=$((n+1)); \
         if {command}; then ok=0; else read -t 0.01 p <> {PAUSE_FIFO}; fi; done; [ $ok = 0 ]; }}"
    )
}

/// A FIFO nobody writes: `read -t` on it pauses the wait loop without a fork.
const PAUSE_FIFO: &str = "/tmp/klp-pause";

/// How many CPUs a list like /sys/devices/system/cpu/online's ("0-1,3") names.
pub fn cpu_count(list: &str) -> Result<u32> {
    let mut count = 0;
    for range in list.trim().split(',') {
        let bad = || anyhow::anyhow!("{list:?} is not a CPU list such as 0-1,3");
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let (first, last): (u32, u32) = (
            first.parse().map_err(|_| bad())?,
            last.parse().map_err(|_| bad())?,
        );
        if last < first {
            return Err(bad());
        }
        count += last - first + 1;
    }
    Ok(count)
}

/// Patches under /sys/kernel/livepatch, bottom of the stack first. Uses
/// `stack_order` where the kernel has it, else module load order (patches
/// are added to the stack as their modules load; /proc/modules lists the
/// newest module first).
pub fn patch_stack(guest: &mut Guest) -> Result<Vec<String>> {
    let output = guest.run_ok(&format!(
        "for m in $(cut -d' ' -f1 /proc/modules); do [ -d {LIVEPATCH}/$m ] && \
         echo \"$m $(cat {LIVEPATCH}/$m/stack_order 2>/dev/null)\"; done; true"
    ))?;
    Ok(stack_from_listing(&output))
}

fn stack_from_listing(output: &str) -> Vec<String> {
    let mut entries: Vec<(Option<u32>, usize, String)> = output
        .lines()
        .enumerate()
        .filter_map(|(newest_first, line)| {
            let mut words = line.split_whitespace();
            let name = words.next()?.to_string();
            let order = words.next().and_then(|o| o.parse().ok());
            Some((order, usize::MAX - newest_first, name))
        })
        .collect();
    entries.sort();
    entries.into_iter().map(|(_, _, name)| name).collect()
}

/// A patch's attributes, with `patched` of the named objects.
pub fn patch_state(guest: &mut Guest, name: &str, objects: &[&str]) -> Result<Option<PatchState>> {
    let per_object: Vec<String> = objects.iter().map(|o| format!("{o}/patched")).collect();
    let mut attributes = vec!["enabled", "transition", "replace", "stack_order"];
    attributes.extend(per_object.iter().map(String::as_str));
    let Some(values) = read_attributes(guest, &format!("{LIVEPATCH}/{name}"), &attributes)? else {
        return Ok(None);
    };
    let patched: BTreeMap<String, u8> = objects
        .iter()
        .filter_map(|o| {
            Some((
                o.to_string(),
                values.get(&format!("{o}/patched"))?.parse().ok()?,
            ))
        })
        .collect();
    let number = |name: &str| values.get(name).and_then(|v| v.parse::<u32>().ok());
    let small = |name: &str| number(name).and_then(|v| u8::try_from(v).ok());
    Ok(Some(PatchState {
        enabled: small("enabled"),
        transition: small("transition"),
        replace: small("replace"),
        stack_order: number("stack_order"),
        patched: Some(patched),
    }))
}

/// /sys/kernel/klp_features/<id>/, or None if the feature is not there.
pub fn feature_state(guest: &mut Guest, id: u64) -> Result<Option<FeatureState>> {
    let attributes = [
        "name",
        "version",
        "owner",
        "allocations",
        "enabled",
        "shadow",
    ];
    let dir = format!("/sys/kernel/klp_features/{id}");
    let Some(values) = read_attributes(guest, &dir, &attributes)? else {
        return Ok(None);
    };
    Ok(Some(FeatureState {
        name: values.get("name").cloned(),
        version: values.get("version").cloned(),
        owner: values.get("owner").cloned(),
        allocations: values.get("allocations").and_then(|v| v.parse().ok()),
        enabled: values.get("enabled").and_then(|v| v.parse().ok()),
        shadow: values.get("shadow").and_then(|v| v.parse().ok()),
    }))
}

/// The named files of a sysfs directory that exist, in one round trip;
/// None if the directory does not.
fn read_attributes(
    guest: &mut Guest,
    dir: &str,
    attributes: &[&str],
) -> Result<Option<BTreeMap<String, String>>> {
    let output = guest.run(&format!(
        "cd {dir} && for a in {}; do [ -f $a ] && echo \"$a $(cat $a)\"; done; true",
        attributes.join(" ")
    ))?;
    if output.status != 0 {
        return Ok(None);
    }
    Ok(Some(
        output
            .output
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(name, value)| (name.to_string(), value.trim().to_string()))
            .collect(),
    ))
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

    #[test]
    fn stack_follows_load_order_without_stack_order() {
        // /proc/modules: newest first.
        assert_eq!(stack_from_listing("klp_b\nklp_a\n"), ["klp_a", "klp_b"]);
    }

    #[test]
    fn stack_order_attribute_wins_over_load_order() {
        assert_eq!(stack_from_listing("klp_a 1\nklp_b 2\n"), ["klp_a", "klp_b"]);
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

    /// Run shell text with the busybox the guest gets (busybox-static).
    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new(crate::host::BUSYBOX_STATIC)
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    }

    #[test]
    fn waits_and_retries_chain_as_one_command() {
        let root = tempfile::tempdir().unwrap();
        let in_dir = |command: String| {
            command
                .replace(LIVEPATCH, &root.path().display().to_string())
                .replace(PAUSE_FIFO, &root.path().join("pause").display().to_string())
        };
        // The directories stand in for /sys/kernel/livepatch/NAME and OTHER.
        let dir = root.path().join("NAME");
        std::fs::create_dir(&dir).unwrap();
        let transition = dir.join("transition");
        std::fs::write(&transition, "0\n").unwrap();
        let wait = in_dir(wait_transition_command("NAME", Duration::from_millis(50)));
        let out = sh(&format!("false && {wait} && echo after"));
        assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
        let out = sh(&format!("true && {wait} && echo after"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");
        // Ended disabled: waits (bounded) for the patch to leave sysfs,
        // and then goes on.
        let enabled = dir.join("enabled");
        std::fs::write(&enabled, "0\n").unwrap();
        let started = std::time::Instant::now();
        let out = sh(&format!("true && {wait} && echo after"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");
        assert!(started.elapsed() >= Duration::from_millis(40), "{out:?}");
        // Enabled, with a replaced patch still there: waits for it too.
        std::fs::write(&enabled, "1\n").unwrap();
        let other = root.path().join("OTHER");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("enabled"), "0\n").unwrap();
        let started = std::time::Instant::now();
        let out = sh(&format!("true && {wait} && echo after"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");
        assert!(started.elapsed() >= Duration::from_millis(40), "{out:?}");
        // Every patch enabled: no wait, even with a long bound.
        std::fs::write(other.join("enabled"), "1\n").unwrap();
        let long = in_dir(wait_transition_command("NAME", Duration::from_secs(3)));
        let started = std::time::Instant::now();
        assert_eq!(
            String::from_utf8_lossy(&sh(&format!("{long} && echo after")).stdout),
            "after\n"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        std::fs::remove_file(&enabled).unwrap();
        // Still in transition: the bounded wait fails, and the chain stops.
        // The bound is time on the clock, however long each round takes.
        std::fs::write(&transition, "1\n").unwrap();
        let started = std::time::Instant::now();
        let out = sh(&format!("{wait} && echo after || echo still"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "still\n");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");

        let tries = root.path().join("tries");
        let third = format!("echo x >> {0}; [ $(wc -l < {0}) -ge 3 ]", tries.display());
        let out = sh(&format!(
            "{} && echo done",
            in_dir(retry_command(&third, 5))
        ));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
        assert_eq!(std::fs::read_to_string(&tries).unwrap().lines().count(), 3);
        let never = in_dir(retry_command("false", 2));
        assert!(!sh(&format!("{never} && echo done")).status.success());
    }

    #[test]
    fn the_snapshot_reads_what_grep_reads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let files = [
            ("livepatch/p/enabled", "1\n"),
            ("livepatch/p/vmlinux/patched", "1\n"),
            ("livepatch/p/klp_target/patched", "0\n"),
            ("klp_features/1/name", "demo-fix\n"),
            ("klp_target/status", "klp_cumul_v2 f1=v2 \n"),
            ("klp_target/empty", ""),
        ];
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("livepatch/p/vmlinux/func,1")).unwrap();
        let local = |command: &str| command.replace("/sys/kernel", &root);
        let lines = |command: &str| {
            let out = sh(&local(command));
            assert!(out.status.success(), "{out:?}");
            let mut lines: Vec<String> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            lines.sort();
            lines
        };
        let grep =
            "grep -r . /sys/kernel/livepatch /sys/kernel/klp_features /sys/kernel/klp_target";
        assert_eq!(lines(SNAPSHOT_COMMAND), lines(grep));
        assert_eq!(lines(SNAPSHOT_COMMAND).len(), 5);
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_count("0").unwrap(), 1);
        assert_eq!(cpu_count("0-1\n").unwrap(), 2);
        assert_eq!(cpu_count("0,2-3").unwrap(), 3);
        assert!(cpu_count("").is_err());
        assert!(cpu_count("1-0").is_err());
        assert!(cpu_count("a-b").is_err());
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
