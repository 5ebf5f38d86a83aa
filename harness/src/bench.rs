//! `klp-harness bench`: what the harness costs next to the kernel's own
//! work, measured in one run on one kernel, printed as a table.
//!
//! - boot: QEMU start ──> guest ready, against the kernel's uptime at /init;
//! - round trips: a no-op command, a dozen sysfs reads, a whole scenario
//!   step (command, kernel log sync, sysfs listing);
//! - transition detection: how long after the kernel logged "patching
//!   complete" the guest-side wait saw it (guest clock on both sides);
//! - transition times: from "starting ... transition" to "... complete" in
//!   the kernel log, and the command that started one and waited for its
//!   end as the host timed it; on 1 CPU with the counted and the real
//!   clock and on 2 CPUs, and what failed klp's tries;
//! - suite: every scenario on the kernel, warm, and the time spent outside
//!   the guests;
//! - peer: the kernel's test-state.sh in the guest against the same flows
//!   run as a scenario, in the same guest;
//! - matrix: every scenario on every kernel, the wall time;
//! - explore: sequences per minute;
//! - edit loop: one line of the livepatch core changed, rebuilt and run,
//!   against a full build (`edit_loop`).

use crate::cache::Cache;
use crate::guest::transitions::{printk_seconds, transitions, Transition};
use crate::guest::Guest;
use crate::kernel::KernelSpec;
use crate::project::Project;
use crate::scenario::{self, Outcome, Scenario};
use crate::settings::ClockChoice;
use crate::testbed::Request;
use crate::vm::GuestClock;
use anyhow::{bail, Context as _, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Options {
    pub boots: usize,
    pub round_trips: usize,
    pub transitions: usize,
    /// Also run the whole scenario suite (warm) on the kernel.
    pub suite: bool,
    /// Also time the kernel's test-state.sh in the guest against the
    /// same flows as a scenario (kernels built from source).
    pub peer: bool,
    /// And once more from an empty cache (downloads, kernel and fixture
    /// builds included).
    pub cold: bool,
    /// Also time the edit loop (kernels built from source).
    pub edit_loop: bool,
    pub jobs: usize,
}

/// A guest's CPUs and clock, whose transition times are compared.
struct GuestSetting {
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
const TRANSITION_SETTINGS: [GuestSetting; 3] = [
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

/// Remove klp_cumul_v1 once klp has let go of it (see `retry_command`).
fn unload_cumul_v1() -> String {
    crate::guest::livepatch::retry_command("rmmod klp_cumul_v1 2>/dev/null", 300)
}

/// Fixtures of the guest the measurements run in.
const BENCH_FIXTURES: [&str; 2] = ["klp_target", "klp_cumul_v1"];

/// The step whose whole cost (command, observation, judgement) is timed.
const MEASURED_STEP: &str = "description: one step\nfixtures: []\nsteps:\n  - run: 'true'\n";

/// A dozen sysfs files a typical step reads, once klp_cumul_v1 is loaded.
const DOZEN_FILES: &str = "cat /sys/kernel/livepatch/klp_cumul_v1/enabled \
/sys/kernel/livepatch/klp_cumul_v1/transition \
/sys/kernel/livepatch/klp_cumul_v1/vmlinux/patched \
/sys/kernel/livepatch/klp_cumul_v1/klp_target/patched \
/sys/kernel/klp_features/1/name /sys/kernel/klp_features/1/version \
/sys/kernel/klp_features/1/owner /sys/kernel/klp_features/1/allocations \
/sys/kernel/klp_features/1/enabled /sys/kernel/klp_features/1/shadow \
/sys/kernel/klp_target/status /sys/kernel/klp_target/park";

/// A guest with the bench fixtures, from the testbed.
fn bench_guest(
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

pub fn run(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    options: &Options,
) -> Result<String> {
    let step = scenario::parse(project, Path::new("bench.yaml"), MEASURED_STEP)?;
    let context = Context {
        project,
        cache,
        spec,
        options,
    };
    let load = load_average();
    let mut rows = startup(&context)?;
    let mut guest = bench_guest(&context, 1, None, false)?;
    rows.extend(round_trips(&context, &step, &mut guest)?);
    rows.extend(transition_sightings(&context, &mut guest)?);
    guest.shutdown()?;
    for setting in &TRANSITION_SETTINGS {
        rows.extend(transition_times(&context, setting)?);
    }
    if options.peer {
        rows.extend(peer_rows(&context)?);
    }
    let mut out = table(spec, &load, &rows);
    if options.edit_loop {
        let measured = crate::edit_loop::measure(project, cache, spec)?;
        out += &crate::edit_loop::render(spec, &measured);
    }
    if options.suite {
        out += &suite(
            "warm",
            project,
            cache,
            std::slice::from_ref(spec),
            options.jobs,
        )?;
    }
    if options.cold {
        let empty = tempfile::Builder::new()
            .prefix("klp-bench-cache-")
            .tempdir()?;
        let cold_cache = Cache::at(empty.path().to_path_buf())?;
        out += &suite(
            "cold",
            project,
            &cold_cache,
            std::slice::from_ref(spec),
            options.jobs,
        )?;
    }
    Ok(out)
}

/// What every section measures with.
struct Context<'a> {
    project: &'a Project,
    cache: &'a Cache,
    spec: &'a KernelSpec,
    options: &'a Options,
}

/// Booting against the kernel's own uptime at /init, and starting from
/// the saved state (with and without the fixtures copied in).
fn startup(context: &Context) -> Result<Vec<Row>> {
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
fn round_trips(context: &Context, bench: &Scenario, guest: &mut Guest) -> Result<Vec<Row>> {
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
            scenario::Settings::new(artifacts.path(), Duration::from_secs(30)),
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

/// How soon the guest-side wait sees a transition's end; starts from
/// klp_cumul_v1 loaded, as `round_trips` leaves it.
fn transition_sightings(context: &Context, guest: &mut Guest) -> Result<Vec<Row>> {
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
fn transition_times(context: &Context, setting: &GuestSetting) -> Result<Vec<Row>> {
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
fn tries_note(timed: &[&Transition]) -> String {
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

fn peer_rows(context: &Context) -> Result<Vec<Row>> {
    let (script, harness) = peer(context.project, context.cache, context.spec)?;
    Ok(vec![
        Row::new("peer: test-state.sh in the guest", script),
        Row::new("harness: the same flows as a scenario", harness).floor("test-state.sh", script),
    ])
}

/// Load klp_cumul_v1 without waiting and wait in the guest; when the
/// wait sees the end, a line goes to /dev/kmsg, so that the kernel log
/// holds both "patching complete" and the sighting, timestamped by the
/// same clock. Then unload it again.
fn transition_detection(guest: &mut Guest) -> Result<Duration> {
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

const SEEN: &str = "klp-harness: bench saw the transition end";

/// The kernel's test-state.sh, then the same flows as a scenario, in one
/// guest: how long each took.
fn peer(project: &Project, cache: &Cache, spec: &KernelSpec) -> Result<(Duration, Duration)> {
    let kernel = crate::kernel::prepare(spec, cache)?;
    let source = kernel.source.clone().with_context(|| {
        format!(
            "--peer needs the kernel's source tree (test-state.sh and its modules); {} is prebuilt",
            spec.name
        )
    })?;
    let file = project.scenarios_dir().join(PEER_SCENARIO);
    let flows = scenario::load(project, &file)?;
    let selftests = crate::peer::selftests::Selftests::find(&source)?;
    let modules = selftests.build_modules(project, &kernel, cache)?;
    let kit = crate::peer::GuestKit::new(cache)?;
    let request = scenario::testbed_request(
        &flows,
        scenario::artifacts_dir(project, &flows.name, &spec.name),
    );
    let (testbed, _) = crate::testbed::start(project, cache, spec, &request)?;
    let mut guest = testbed.guest;
    crate::peer::selftests::prepare_guest(&mut guest, &kit, &selftests, &modules, &kernel)?;
    let script = crate::peer::selftests::run_script(
        &mut guest,
        "test-state.sh",
        crate::peer::selftests::timeout(),
    )?;
    if script.outcome != crate::peer::selftests::ScriptResult::Pass {
        bail!(
            "test-state.sh did not pass in the guest: {:?}",
            script.outcome
        );
    }
    guest.kernel_log_since_last()?;
    let artifacts = scenario::artifacts_dir(project, "bench-peer", &spec.name);
    let started = Instant::now();
    let mut trace = String::new();
    scenario::run_steps(
        &mut guest,
        &flows,
        &flows.steps,
        scenario::Settings::new(&artifacts, crate::testbed::Timeouts::from_env().transition),
        &mut trace,
    )
    .with_context(|| format!("{} after test-state.sh", flows.name))?;
    let harness = started.elapsed();
    guest.shutdown()?;
    Ok((script.elapsed, harness))
}

/// The scenario with test-state.sh's flows and the kernel's own modules.
const PEER_SCENARIO: &str = "selftests/test-state-kernel-modules.yaml";

/// Every scenario on every kernel of the matrix, as `run --kernel all`
/// does: the wall time.
pub fn matrix(project: &Project, cache: &Cache, jobs: usize) -> Result<String> {
    let specs = crate::kernel::list(project)?;
    suite("matrix", project, cache, &specs, jobs)
}

/// `explore` on the kernel with the default settings: sequences per minute.
pub fn explore_rate(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    runs: usize,
    jobs: usize,
) -> Result<String> {
    let load = load_average();
    let options = crate::explore::Options {
        jobs,
        ..crate::explore::Options::new(1, runs)
    };
    let report = crate::explore::explore(project, cache, spec, &options)?;
    let minutes = report.elapsed.as_secs_f64() / 60.0;
    Ok(format!(
        "explore on {} (seed 1, {} sequences of 10 operations, {} guests at once): {:.1} s, {:.1} sequences per minute; \
         {} guest boots, {} divergences; load average {load} at the start, {} at the end\n",
        spec.name,
        report.runs,
        options.jobs,
        report.elapsed.as_secs_f64(),
        report.runs as f64 / minutes.max(1e-9),
        report.boots,
        report.divergences.len(),
        load_average()
    ))
}

fn suite(
    label: &str,
    project: &Project,
    cache: &Cache,
    specs: &[KernelSpec],
    jobs: usize,
) -> Result<String> {
    let scenarios: Vec<Scenario> = scenario::scenario_files(project)?
        .iter()
        .map(|file| scenario::load(project, file))
        .collect::<Result<_>>()?;
    let runs: Vec<_> = specs
        .iter()
        .flat_map(|spec| scenarios.iter().map(move |s| (s, spec)))
        .collect();
    let load = load_average();
    let started = Instant::now();
    let verdicts = scenario::execute_many(project, cache, &runs, jobs, |_| {});
    let wall = started.elapsed();
    let ran: Vec<_> = verdicts.iter().filter(|v| v.guest_time.is_some()).collect();
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| matches!(v.outcome, Outcome::Fail(_)))
        .map(|v| format!("{} on {}", v.scenario, v.kernel))
        .collect();
    let total: Duration = ran.iter().map(|v| v.duration).sum();
    let in_guest: Duration = ran.iter().filter_map(|v| v.guest_time).sum();
    let names: Vec<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "suite {label} on {} ({} scenarios run, {} failed, -j {jobs}): wall {:.1} s; \
         summed run time {:.1} s, of which in guests {:.1} s, outside {:.2} s ({:.1}%); \
         load average {load} at the start, {} at the end",
        names.join(", "),
        ran.len(),
        failed.len(),
        wall.as_secs_f64(),
        total.as_secs_f64(),
        in_guest.as_secs_f64(),
        (total - in_guest).as_secs_f64(),
        100.0 * (total - in_guest).as_secs_f64() / total.as_secs_f64().max(1e-9),
        load_average()
    );
    for failure in failed {
        let _ = writeln!(out, "  FAIL {failure}");
    }
    Ok(out)
}

struct Row {
    what: String,
    value: Duration,
    floor: Option<(String, Duration)>,
    note: Option<String>,
}

impl Row {
    fn new(what: &str, value: Duration) -> Self {
        Self {
            what: what.to_string(),
            value,
            floor: None,
            note: None,
        }
    }

    fn floor(mut self, what: &str, value: Duration) -> Self {
        self.floor = Some((what.to_string(), value));
        self
    }

    fn note(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }
}

fn table(spec: &KernelSpec, load: &str, rows: &[Row]) -> String {
    let mut out = format!(
        "klp-harness bench on {} ({} host CPUs, load average {load} at the start)\n{:<64} {:>10}  {}\n",
        spec.name,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        "measure",
        "value",
        "against"
    );
    for row in rows {
        let against = row.floor.as_ref().map_or(String::new(), |(what, floor)| {
            let difference = (row.value.as_secs_f64() - floor.as_secs_f64()) * 1000.0;
            format!(
                "{what} {} (x{:.2}, {difference:+.1} ms)",
                ms(*floor),
                row.value.as_secs_f64() / floor.as_secs_f64().max(1e-9),
            )
        });
        let against = row.note.clone().unwrap_or(against);
        let _ = writeln!(out, "{:<64} {:>10}  {against}", row.what, ms(row.value));
    }
    out
}

/// The host's one-minute load average: the machine is shared, and the
/// figures mean little without it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn time_each(times: usize, mut once: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    (0..times.max(1))
        .map(|_| {
            let started = Instant::now();
            once().map(|()| started.elapsed())
        })
        .collect()
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn p95(values: &mut [Duration]) -> Duration {
    values.sort();
    values[((values.len() * 95).div_ceil(100)).saturating_sub(1)]
}

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

    #[test]
    fn percentiles() {
        let mut v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(median(&mut v), Duration::from_millis(11));
        assert_eq!(p95(&mut v), Duration::from_millis(19));
    }
}
