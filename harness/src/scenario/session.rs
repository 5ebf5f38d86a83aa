//! One scenario on one kernel: build what it needs, start the guest, run
//! the steps and judge; or hand the guest to a person (`shell`).

use super::artifacts::{self, rerun_command};
use super::load::Scenario;
use super::record::{RunRecord, SCENARIO_COPY};
use super::run;
use super::verdict::{applicability, conclude, Failure, Outcome, Verdict};
use crate::cache::Cache;
use crate::guest::Guest;
use crate::kernel::behaviour::Profile;
use crate::kernel::KernelSpec;
use crate::project::Project;
use crate::testbed::{self, Ready, Request, Timeouts};
use crate::vm;
use anyhow::{bail, Context, Result};
use std::time::Instant;

/// Build what the scenario needs, boot, run the steps, and judge.
pub fn execute(
    project: &Project,
    cache: &Cache,
    scenario: &Scenario,
    spec: &KernelSpec,
) -> Verdict {
    let started = Instant::now();
    let mut verdict = Verdict::new(project, scenario, spec);
    if let Some(reason) = applicability(scenario, spec, spec.profile_hint().as_ref()) {
        verdict.outcome = Outcome::NotApplicable(reason);
        return verdict;
    }
    let mut profile = None;
    let result = execute_inner(project, cache, scenario, spec, &mut verdict, &mut profile);
    if !matches!(verdict.outcome, Outcome::NotApplicable(_)) {
        let failure = |err: &anyhow::Error| {
            Failure::from_error(
                err,
                verdict.artifacts.clone(),
                rerun_command(project, scenario, &spec.name),
            )
        };
        verdict.outcome = conclude(scenario, profile.as_ref(), result, failure);
    }
    verdict.duration = started.elapsed();
    verdict
}

fn execute_inner(
    project: &Project,
    cache: &Cache,
    scenario: &Scenario,
    spec: &KernelSpec,
    verdict: &mut Verdict,
    kernel_has: &mut Option<Profile>,
) -> Result<()> {
    let Some((mut guest, profile)) = boot(project, cache, scenario, spec, verdict, false)? else {
        return Ok(());
    };
    *kernel_has = Some(profile.clone());
    let mut trace = String::new();
    let settings = settings(
        project,
        scenario,
        spec,
        verdict,
        &profile,
        &guest,
        scenario.steps.len(),
    );
    let result = run::run_steps(&mut guest, scenario, &scenario.steps, settings, &mut trace);
    std::fs::write(verdict.artifacts.join("steps.log"), &trace)?;
    let started = guest.vm.started;
    // The guest is discarded either way, and everything it logged is on
    // the console already: no need to wait for it to power off.
    guest.vm.kill();
    verdict.guest_time = Some(started.elapsed());
    result
}

/// How the steps run: bounded, followed by the model if the scenario
/// asks, and kept for `rejudge`.
fn settings(
    project: &Project,
    scenario: &Scenario,
    spec: &KernelSpec,
    verdict: &Verdict,
    profile: &Profile,
    guest: &Guest,
    steps_planned: usize,
) -> run::Settings {
    let limit = Timeouts::from_env().transition;
    let record = RunRecord {
        scenario: scenario.name.clone(),
        scenario_file: artifacts::project_relative(project, scenario)
            .display()
            .to_string(),
        kernel: spec.name.clone(),
        kernel_version: verdict.kernel_version.clone().unwrap_or_default(),
        profile: profile.record(),
        command_line: guest.vm.command_line.clone(),
        transition_limit_ms: limit.as_millis() as u64,
        steps_planned,
        steps: Vec::new(),
        end: None,
    };
    run::Settings::new(&verdict.artifacts, limit)
        .follow(scenario, profile)
        .keep(record)
}

/// The guest a scenario asks for, its logs going to `log_dir`.
pub fn testbed_request(scenario: &Scenario, log_dir: std::path::PathBuf) -> Request<'_> {
    Request {
        fixtures: &scenario.fixtures,
        cpus: scenario.cpus,
        clock: scenario.clock,
        fresh_boot: scenario.fresh_boot,
        interactive: false,
        log_dir,
    }
}

/// Build what the scenario needs and boot the guest, which comes back
/// with what its kernel has; None (with the verdict set) when the scenario
/// does not apply to the kernel.
fn boot(
    project: &Project,
    cache: &Cache,
    scenario: &Scenario,
    spec: &KernelSpec,
    verdict: &mut Verdict,
    interactive: bool,
) -> Result<Option<(Guest, Profile)>> {
    let prepared = testbed::prepare_kernel(spec, cache)?;
    verdict.kernel_version = Some(prepared.kernel.version.clone());
    if let Some(reason) = applicability(scenario, spec, Some(&prepared.profile)) {
        verdict.outcome = Outcome::NotApplicable(reason);
        return Ok(None);
    }
    if verdict.artifacts.exists() {
        std::fs::remove_dir_all(&verdict.artifacts).ok();
    }
    std::fs::create_dir_all(&verdict.artifacts)
        .with_context(|| format!("cannot create {}", verdict.artifacts.display()))?;
    artifacts::write_sources(
        project,
        &scenario.fixtures,
        &prepared.kernel,
        &verdict.artifacts.join("fixtures"),
    )?;
    std::fs::write(
        verdict.artifacts.join("rerun.sh"),
        artifacts::rerun_script(project, scenario, &spec.name),
    )?;
    std::fs::copy(&scenario.file, verdict.artifacts.join(SCENARIO_COPY))
        .with_context(|| format!("cannot keep a copy of {}", scenario.file.display()))?;
    let request = Request {
        interactive,
        ..testbed_request(scenario, verdict.artifacts.clone())
    };
    match prepared.start(project, cache, &request)? {
        Ready::Up(testbed) => {
            verdict.accel = Some(testbed.accel);
            verdict.clock = Some(testbed.clock);
            verdict.boot = Some(testbed.guest.boot);
            Ok(Some((testbed.guest, prepared.profile)))
        }
        Ready::NotApplicable(why) => {
            verdict.outcome = Outcome::NotApplicable(why);
            Ok(None)
        }
    }
}

/// Boot the scenario's guest, run its steps up to and including `until`
/// (a step number as the trace shows it; all steps when None), then hand
/// the serial console to the user until they leave.
pub fn shell(
    project: &Project,
    cache: &Cache,
    scenario: &Scenario,
    spec: &KernelSpec,
    until: Option<&str>,
) -> Result<()> {
    let steps = match until {
        None => &scenario.steps[..],
        Some("0") => &[],
        Some(label) => {
            let Some(last) = scenario.steps.iter().position(|s| s.label == label) else {
                let labels: Vec<&str> = scenario.steps.iter().map(|s| s.label.as_str()).collect();
                bail!(
                    "{} has no step {label}; expected 0 or one of: {}",
                    scenario.file.display(),
                    labels.join(", ")
                );
            };
            &scenario.steps[..=last]
        }
    };
    let mut verdict = Verdict::new(project, scenario, spec);
    let Some((mut guest, profile)) = boot(project, cache, scenario, spec, &mut verdict, true)?
    else {
        if let Outcome::NotApplicable(why) = verdict.outcome {
            bail!("{} does not apply to {}: {why}", scenario.name, spec.name);
        }
        return Ok(());
    };
    let mut trace = String::new();
    let settings = settings(
        project,
        scenario,
        spec,
        &verdict,
        &profile,
        &guest,
        steps.len(),
    );
    let result = run::run_steps(&mut guest, scenario, steps, settings, &mut trace);
    std::fs::write(verdict.artifacts.join("steps.log"), &trace)?;
    crate::event::emit(crate::event::Event::ShellReady {
        scenario: scenario.name.clone(),
        kernel: spec.name.clone(),
        steps_run: steps.len(),
        steps: scenario.steps.len(),
        failure: result.err().map(|err| format!("{err:#}")),
        logs: verdict.artifacts.clone(),
    });
    vm::interact(&mut guest.vm)
}
