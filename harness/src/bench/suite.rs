//! Whole runs: every scenario on a kernel or on the matrix, and explore.

use super::table::*;
use crate::cache::Cache;
use crate::kernel::KernelSpec;
use crate::project::Project;
use crate::scenario::{self, Outcome, Scenario};
use anyhow::Result;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

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

pub(super) fn suite(
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
