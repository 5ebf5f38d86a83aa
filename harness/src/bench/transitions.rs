//! Transitions: when the guest-side wait sees one end, and how long
//! they take on one and two CPUs, with the counted and the real clock.

use super::guest::{bench_guest, unload_cumul_v1};
use super::table::*;
use super::Context;
use crate::guest::transitions::{printk_seconds, transitions, Transition};
use crate::guest::Guest;
use crate::settings::ClockChoice;
use crate::vm::GuestClock;
use anyhow::{bail, Context as _, Result};
use std::time::{Duration, Instant};

/// A guest's CPUs and clock, whose transition times are compared.
pub(super) struct GuestSetting {
    cpus: u32,
    /// What the scenario's `clock:` asks for.
    clock: GuestClock,
}

impl std::fmt::Display for GuestSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let plural = if self.cpus == 1 { "" } else { "s" };
        write!(f, "{} CPU{plural}, {} clock", self.cpus, self.clock.name())
    }
}

/// The default guest, the same on the real clock, and two CPUs (which
/// always run on the real clock, `vm::clock::MANY_CPUS`).
pub(super) const TRANSITION_SETTINGS: [GuestSetting; 3] = [
    GuestSetting {
        cpus: 1,
        clock: GuestClock::Counted,
    },
    GuestSetting {
        cpus: 1,
        clock: GuestClock::Real,
    },
    GuestSetting {
        cpus: 2,
        clock: GuestClock::Real,
    },
];

/// How soon the guest-side wait sees a transition's end; starts from
/// klp_cumul_v1 loaded, as `round_trips` leaves it.
pub(super) fn transition_sightings(context: &Context, guest: &mut Guest) -> Result<Vec<Row>> {
    guest.run_ok("echo 0 > /sys/kernel/livepatch/klp_cumul_v1/enabled")?;
    guest.run_ok(&crate::guest::livepatch::wait_transition_command(
        "klp_cumul_v1",
        Duration::from_secs(30),
    ))?;
    guest.run_ok(&unload_cumul_v1())?;
    guest.kernel_log_since_last()?;
    let mut detection = Vec::new();
    for _ in 0..context.options.transitions.max(1) {
        detection.push(transition_detection(guest)?);
    }
    let worst = *detection.iter().max().expect("at least one transition");
    Ok(vec![
        Row::new(
            "transition end -> seen in guest (median)",
            median(&mut detection),
        ),
        Row::new("transition end -> seen in guest (max)", worst),
    ])
}

/// Load, disable and unload klp_cumul_v1 again and again in a guest of
/// `setting`; each kind of transition as the kernel log timed it, with
/// what failed klp's tries (livepatch's pr_debug lines are turned on),
/// and as the host timed the command that started it and waited for its
/// end. On the counted clock the kernel log's times are guest time, which
/// skips idle waits and runs at its own pace otherwise; the host's are
/// what a run costs.
pub(super) fn transition_times(context: &Context, setting: &GuestSetting) -> Result<Vec<Row>> {
    let options = context.options;
    let clock = match setting.clock {
        GuestClock::Real => ClockChoice::Real,
        GuestClock::Counted => ClockChoice::Counted,
    };
    let mut guest = bench_guest(context, setting.cpus, Some(clock), false)?;
    guest
        .run_ok("echo 'file transition.c +p' > /proc/dynamic_debug/control")
        .context("klp's tries are counted with dynamic debug (CONFIG_DYNAMIC_DEBUG)")?;
    guest.run_ok("insmod /klp/klp_target.ko")?;
    guest.kernel_log_since_last()?;
    let wait =
        crate::guest::livepatch::wait_transition_command("klp_cumul_v1", Duration::from_secs(30));
    let mut log = String::new();
    let mut host = [Vec::new(), Vec::new()];
    for _ in 0..options.transitions.max(1) {
        let started = Instant::now();
        guest.run_ok(&format!("insmod /klp/klp_cumul_v1.ko && {wait}"))?;
        host[0].push(started.elapsed());
        let started = Instant::now();
        guest.run_ok(&format!(
            "echo 0 > /sys/kernel/livepatch/klp_cumul_v1/enabled && {wait}"
        ))?;
        host[1].push(started.elapsed());
        guest.run_ok(&unload_cumul_v1())?;
        log += &guest.kernel_log_since_last()?;
    }
    guest.shutdown()?;
    let timed = transitions(&log);
    let mut rows = Vec::new();
    for (kind, host) in ["patching", "unpatching"].into_iter().zip(&mut host) {
        let of_kind: Vec<&Transition> = timed.iter().filter(|t| t.kind == kind).collect();
        let mut durations: Vec<Duration> = of_kind.iter().map(|t| t.duration()).collect();
        let Some(&worst) = durations.iter().max() else {
            bail!("no {kind} transition completed in the kernel log ({setting})");
        };
        let what = format!(
            "{kind}, {setting}: kernel log (median of {})",
            durations.len()
        );
        rows.push(Row::new(&what, median(&mut durations)).note(format!(
            "max {}; {}",
            ms(worst),
            tries_note(&of_kind)
        )));
        let command = match kind {
            "patching" => "insmod",
            _ => "disable",
        };
        rows.push(Row::new(
            &format!("{kind}, {setting}: host, {command} + wait (median)"),
            median(host),
        ));
    }
    Ok(rows)
}

/// "3 of 10 not done at klp's first try (swapper/1 is running 3)", or
/// "all done at klp's first try".
pub(super) fn tries_note(timed: &[&Transition]) -> String {
    let retried = timed.iter().filter(|t| !t.blocked.is_empty()).count();
    if retried == 0 {
        return "all done at klp's first try".to_string();
    }
    // "swapper/1:0 is running" ──> "swapper/1 is running": by task, not pid.
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for why in timed.iter().flat_map(|t| &t.blocked) {
        let (task, rest) = why.split_once(' ').unwrap_or((why, ""));
        let task = task.rsplit_once(':').map_or(task, |(name, _pid)| name);
        *reasons.entry(format!("{task} {rest}")).or_default() += 1;
    }
    let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
    format!(
        "{retried} of {} not done at klp's first try ({})",
        timed.len(),
        reasons.join(", ")
    )
}

/// Load klp_cumul_v1 without waiting and wait in the guest; when the
/// wait sees the end, a line goes to /dev/kmsg, so that the kernel log
/// holds both "patching complete" and the sighting, timestamped by the
/// same clock. Then unload it again.
pub(super) fn transition_detection(guest: &mut Guest) -> Result<Duration> {
    let wait =
        crate::guest::livepatch::wait_transition_command("klp_cumul_v1", Duration::from_secs(30));
    guest.run_ok(&format!(
        "insmod /klp/klp_cumul_v1.ko && {wait} && echo '{SEEN}' > /dev/kmsg"
    ))?;
    let log = guest.kernel_log_since_last()?;
    let stamp = |needle: &str| {
        log.lines()
            .find(|line| line.contains(needle))
            .and_then(printk_seconds)
            .with_context(|| format!("no timestamped {needle:?} in the kernel log"))
    };
    let (done, seen) = (stamp("'klp_cumul_v1': patching complete")?, stamp(SEEN)?);
    guest.run_ok(&format!(
        "echo 0 > /sys/kernel/livepatch/klp_cumul_v1/enabled && {wait} && {}",
        unload_cumul_v1()
    ))?;
    guest.kernel_log_since_last()?;
    if seen < done {
        bail!("the wait ended at {seen} s, before the transition did at {done} s");
    }
    Ok(Duration::from_secs_f64(seen - done))
}

pub(super) const SEEN: &str = "klp-harness: bench saw the transition end";

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(blocked: &[&str]) -> Transition {
        Transition {
            patch: "p".into(),
            kind: "patching".into(),
            started: 1.0,
            completed: 2.0,
            blocked: blocked.iter().map(|b| b.to_string()).collect(),
        }
    }

    #[test]
    fn failed_tries_are_counted_by_task() {
        let first = transition(&[]);
        assert_eq!(tries_note(&[&first]), "all done at klp's first try");
        let twice = transition(&["swapper/1:0 is running", "kworker/0:1:28 is running"]);
        let once = transition(&["swapper/1:0 is running"]);
        assert_eq!(
            tries_note(&[&first, &twice, &once]),
            "2 of 3 not done at klp's first try (kworker/0:1 is running 1, swapper/1 is running 2)"
        );
    }
}
