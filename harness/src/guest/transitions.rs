//! Livepatch transitions as the kernel log shows them: when each started
//! and completed, and what failed klp's tries in between (livepatch's
//! pr_debug lines from klp_try_switch_task(), once dynamic debug turns
//! them on).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub patch: String,
    /// "patching" or "unpatching", as started.
    pub kind: String,
    /// Seconds on the kernel log's clock.
    pub started: f64,
    pub completed: f64,
    /// What failed a try, e.g. "swapper/1:0 is running"; empty when the
    /// first try completed it (or the pr_debug lines are off).
    pub blocked: Vec<String>,
}

impl Transition {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64((self.completed - self.started).max(0.0))
    }
}

/// Every transition that both starts and completes in `log`, in order.
pub fn transitions(log: &str) -> Vec<Transition> {
    let mut done = Vec::new();
    let mut open: Option<Transition> = None;
    for line in log.lines() {
        let Some(at) = printk_seconds(line) else {
            continue;
        };
        if let Some((patch, kind)) = started(line) {
            open = Some(Transition {
                patch,
                kind,
                started: at,
                completed: at,
                blocked: Vec::new(),
            });
        } else if let Some(current) = open.as_mut() {
            if let Some(why) = line.split("klp_try_switch_task: ").nth(1) {
                current.blocked.push(why.trim().to_string());
            } else if completed(line, &current.patch) {
                let mut finished = open.take().expect("open transition");
                finished.completed = at;
                done.push(finished);
            }
        }
    }
    done
}

/// "livepatch: 'NAME': starting patching transition" (klp_start_transition()).
fn started(line: &str) -> Option<(String, String)> {
    let rest = line.split("livepatch: '").nth(1)?;
    let (patch, rest) = rest.split_once("': starting ")?;
    let kind = rest.strip_suffix(" transition")?.trim();
    Some((patch.to_string(), kind.to_string()))
}

/// "livepatch: 'NAME': patching complete" or "unpatching complete"; a
/// reversed transition completes the other way.
fn completed(line: &str, patch: &str) -> bool {
    line.split(&format!("livepatch: '{patch}': "))
        .nth(1)
        .is_some_and(|rest| matches!(rest.trim_end(), "patching complete" | "unpatching complete"))
}

/// "[   12.345678] text" ──> 12.345678
pub fn printk_seconds(line: &str) -> Option<f64> {
    let inside = line.trim_start().strip_prefix('[')?;
    inside.split(']').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[    3.503105] livepatch: enabling patch 'klp_cumul_v1'
[    3.549009] livepatch: 'klp_cumul_v1': starting patching transition
[    3.550000] livepatch: klp_try_switch_task: swapper/1:0 is running
[    4.307153] livepatch: 'klp_cumul_v1': completing patching transition
[    4.309944] livepatch: 'klp_cumul_v1': patching complete
[    4.400000] klp-harness: sync 9
[    5.272103] livepatch: 'klp_cumul_v1': starting unpatching transition
[    6.444319] livepatch: 'klp_cumul_v1': unpatching complete
[    7.000000] livepatch: 'klp_cumul_v2': starting patching transition
";

    #[test]
    fn started_and_completed_transitions_are_timed() {
        let found = transitions(LOG);
        assert_eq!(found.len(), 2, "the last one never completed: {found:?}");
        assert_eq!(found[0].patch, "klp_cumul_v1");
        assert_eq!(found[0].kind, "patching");
        assert_eq!(found[0].blocked, ["swapper/1:0 is running"]);
        let seconds = |t: &Transition| t.duration().as_secs_f64();
        assert!((seconds(&found[0]) - 0.760935).abs() < 1e-6);
        assert_eq!(found[1].kind, "unpatching");
        assert!(found[1].blocked.is_empty());
        assert!((seconds(&found[1]) - 1.172216).abs() < 1e-6);
    }

    #[test]
    fn a_reversed_transition_completes_the_other_way() {
        let log = "\
[ 1.000000] livepatch: 'p': starting patching transition
[ 1.100000] livepatch: 'p': reversing transition from patching
[ 2.000000] livepatch: 'p': unpatching complete
";
        let found = transitions(log);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, "patching");
        assert!((found[0].duration().as_secs_f64() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn printk_timestamp_is_read() {
        assert_eq!(
            printk_seconds("[   12.345678] livepatch: 'x': patching complete"),
            Some(12.345678)
        );
        assert_eq!(printk_seconds("no stamp"), None);
    }
}
