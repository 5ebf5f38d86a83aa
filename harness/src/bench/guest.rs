//! The guest the measurements run in, its start-up and its round trips.

use super::table::*;
use super::Context;
use crate::guest::Guest;
use crate::scenario::{self, Scenario};
use crate::settings::ClockChoice;
use crate::testbed::Request;
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// Remove klp_cumul_v1 once klp has let go of it (see `retry_command`).
pub(super) fn unload_cumul_v1() -> String {
    crate::guest::livepatch::retry_command("rmmod klp_cumul_v1 2>/dev/null", 300)
}

/// Fixtures of the guest the measurements run in.
pub(super) const BENCH_FIXTURES: [&str; 2] = ["klp_target", "klp_cumul_v1"];

/// The step whose whole cost (command, observation, judgement) is timed.
pub(super) const MEASURED_STEP: &str =
    "description: one step\nfixtures: []\nsteps:\n  - run: 'true'\n";

/// A dozen sysfs files a typical step reads, once klp_cumul_v1 is loaded.
pub(super) const DOZEN_FILES: &str = "cat /sys/kernel/livepatch/klp_cumul_v1/enabled \
/sys/kernel/livepatch/klp_cumul_v1/transition \
/sys/kernel/livepatch/klp_cumul_v1/vmlinux/patched \
/sys/kernel/livepatch/klp_cumul_v1/klp_target/patched \
/sys/kernel/klp_features/1/name /sys/kernel/klp_features/1/version \
/sys/kernel/klp_features/1/owner /sys/kernel/klp_features/1/allocations \
/sys/kernel/klp_features/1/enabled /sys/kernel/klp_features/1/shadow \
/sys/kernel/klp_target/status /sys/kernel/klp_target/park";

/// A guest with the bench fixtures, from the testbed.
pub(super) fn bench_guest(
    context: &Context,
    cpus: u32,
    clock: Option<ClockChoice>,
    fresh_boot: bool,
) -> Result<Guest> {
    let fixtures = BENCH_FIXTURES
        .iter()
        .map(|name| crate::fixture::spec::find(context.project, name))
        .collect::<Result<Vec<_>>>()?;
    let request = Request {
        fixtures: &fixtures,
        cpus,
        clock,
        fresh_boot,
        interactive: false,
        log_dir: scenario::artifacts_dir(context.project, "bench", &context.spec.name),
    };
    let (testbed, _) =
        crate::testbed::start(context.project, context.cache, context.spec, &request)?;
    Ok(testbed.guest)
}

/// Booting against the kernel's own uptime at /init, and starting from
/// the saved state (with and without the fixtures copied in).
pub(super) fn startup(context: &Context) -> Result<Vec<Row>> {
    let Context {
        cache,
        spec,
        options,
        ..
    } = *context;
    let mut ready = Vec::new();
    let mut init = Vec::new();
    for _ in 0..options.boots.max(1) {
        let guest = bench_guest(context, 1, None, true)?;
        ready.push(guest.boot.ready);
        init.push(guest.boot.init_uptime);
        guest.shutdown()?;
    }
    let (ready, init) = (median(&mut ready), median(&mut init));
    let boot = Row::new("boot: QEMU start -> guest ready (median)", ready)
        .floor("kernel uptime at /init", init);
    let qemu = crate::host::qemu::locate(cache, &spec.arch.record.qemu)?;
    if let Some(why) = qemu.saved_state_problem(&spec.arch.record.qemu) {
        return Ok(vec![
            boot.note(format!("no saved state on {}: {why}", spec.arch.name))
        ]);
    }
    // The first start saves the state if no earlier run did.
    bench_guest(context, 1, None, false)?.shutdown()?;
    let mut restored = Vec::new();
    let mut with_fixtures = Vec::new();
    for _ in 0..options.boots.max(1) {
        let started = Instant::now();
        let guest = bench_guest(context, 1, None, false)?;
        with_fixtures.push(started.elapsed());
        if !guest.boot.restored {
            bail!("the guest did not start from its saved state (KLP_HARNESS_SNAPSHOTS=0?)");
        }
        restored.push(guest.boot.ready);
        guest.shutdown()?;
    }
    Ok(vec![
        boot,
        Row::new(
            "saved state: QEMU start -> guest ready (median)",
            median(&mut restored),
        )
        .floor("kernel uptime at /init", init),
        Row::new(
            "saved state: ... -> fixtures copied in (median)",
            median(&mut with_fixtures),
        )
        .floor("booting, guest ready", ready),
    ])
}

/// Commands, sysfs reads and whole steps, each timed many times; leaves
/// klp_target and klp_cumul_v1 loaded.
pub(super) fn round_trips(
    context: &Context,
    bench: &Scenario,
    guest: &mut Guest,
) -> Result<Vec<Row>> {
    let times = context.options.round_trips;
    let mut noop = time_each(times, || guest.run_ok("true").map(drop))?;
    let mut noop_expect = time_each(times.min(20), || guest.run_with_rexpect_expect("true"))?;
    guest.run_ok("insmod /klp/klp_target.ko && insmod /klp/klp_cumul_v1.ko")?;
    let wait =
        crate::guest::livepatch::wait_transition_command("klp_cumul_v1", Duration::from_secs(30));
    guest.run_ok(&wait)?;
    let mut dozen = time_each(times, || guest.run_ok(DOZEN_FILES).map(drop))?;
    // A load-like step as first built: the action, "is it a livepatch?",
    // the wait, the log sync and the listing, each its own round trip;
    // against the same work in two.
    let lp = "/sys/kernel/livepatch/klp_cumul_v1";
    let mut separate = time_each(times, || {
        guest.run_ok("true")?;
        guest.run_ok(&format!("[ -d {lp} ]"))?;
        guest.run_ok(&wait)?;
        guest.kernel_log_since_last()?;
        guest
            .run_ok(crate::guest::livepatch::LISTING_COMMAND)
            .map(drop)
    })?;
    let mut merged = time_each(times, || {
        guest.run_ok(&format!(
            "true && if [ -d {lp} ]; then {wait} || echo late; fi"
        ))?;
        guest
            .kernel_log_since_last_and(crate::guest::livepatch::LISTING_COMMAND)
            .map(drop)
    })?;
    let artifacts = tempfile::tempdir()?;
    let mut step = time_each(times, || {
        let mut trace = String::new();
        scenario::run_steps(
            guest,
            bench,
            &bench.steps,
            scenario::Settings::new(
                artifacts.path(),
                crate::testbed::Timeouts::from_env().transition,
            ),
            &mut trace,
        )
    })?;
    Ok(vec![
        Row::new(
            "no-op command round trip (median)",
            median(&mut noop.clone()),
        ),
        Row::new("no-op command round trip (p95)", p95(&mut noop)),
        Row::new(
            "no-op round trip, rexpect's expect (median)",
            median(&mut noop_expect),
        ),
        Row::new("read 12 sysfs files (median)", median(&mut dozen.clone())),
        Row::new("read 12 sysfs files (p95)", p95(&mut dozen)),
        Row::new(
            "scenario step `run: true` (median)",
            median(&mut step.clone()),
        ),
        Row::new("scenario step `run: true` (p95)", p95(&mut step)),
        Row::new(
            "load-like step, 5 round trips (median)",
            median(&mut separate),
        ),
        Row::new(
            "load-like step, 2 round trips (median)",
            median(&mut merged),
        ),
    ])
}
