//! Reading the guest's livepatch state and the kernel log.

use super::model::{FeatureState, PatchState};
use crate::guest::Guest;
use anyhow::Result;
use std::collections::BTreeMap;
use std::time::Duration;

const LIVEPATCH: &str = "/sys/kernel/livepatch";

/// Shell that waits (bounded) until the patch's `transition` is not 1;
/// succeeds when the transition has ended or the patch has left sysfs.
pub fn wait_transition_command(name: &str, limit: Duration) -> String {
    let rounds = (limit.as_millis() / 5).max(1);
    format!(
        "n=0; while t=$(cat {LIVEPATCH}/{name}/transition 2>/dev/null) && [ \"$t\" = 1 ] && [ $n -lt {rounds} ]; \
         do n=$((n+1)); usleep 5000; done; [ \"$t\" != 1 ]"
    )
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

/// Ok if every wanted fragment appears in `log`, each on a later line than
/// the one before; otherwise the first fragment not found.
pub fn log_subsequence<'a>(log: &str, wanted: &[&'a str]) -> std::result::Result<(), &'a str> {
    let mut lines = log.lines();
    for fragment in wanted {
        if !lines.any(|line| line.contains(fragment)) {
            return Err(fragment);
        }
    }
    Ok(())
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

pub fn kernel_splat(log: &str) -> Option<&str> {
    log.lines()
        .find(|line| SPLATS.iter().any(|splat| line.contains(splat)))
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
        assert_eq!(log_subsequence(log, &["one", "three"]), Ok(()));
        assert_eq!(log_subsequence(log, &["three", "one"]), Err("one"));
        assert_eq!(log_subsequence(log, &["four"]), Err("four"));
    }

    #[test]
    fn splats_are_found() {
        assert!(kernel_splat("[ 1.0] ok\n[ 2.0] BUG: unable to handle page fault\n").is_some());
        assert!(kernel_splat("[ 1.0] livepatch: enabling patch 'x'\n").is_none());
    }
}
