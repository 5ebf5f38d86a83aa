//! One scenario on one kernel: build what it needs, start the guest, run
//! the steps and judge; or hand the guest to a person (`shell`).

use super::artifacts::{self, rerun_command};
use super::load::Scenario;
use super::observe;
use super::run;
use super::verdict::{applicability, Failure, KnownBug, Outcome, StepError, Verdict};
use crate::cache::Cache;
use crate::guest::{snapshot, Guest};
use crate::kernel::behaviour::{Basis, Profile};
use crate::kernel::KernelSpec;
use crate::project::Project;
use crate::vm::VmConfig;
use crate::{fixture, host, image, kernel, vm};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// Bounds on waiting for the guest, from the environment or defaults
/// generous enough for TCG on a loaded two-core machine.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub boot: Duration,
    pub command: Duration,
    pub transition: Duration,
}

impl Timeouts {
    pub fn from_env() -> Self {
        let settings = crate::settings::get();
        Self {
            boot: settings.boot_timeout,
            command: settings.command_timeout,
            transition: settings.transition_timeout,
        }
    }
}

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
    let failure = |err: &anyhow::Error| {
        Failure::from_error(
            err,
            verdict.artifacts.clone(),
            rerun_command(project, scenario, &spec.name),
        )
    };
    // The fix the scenario checks, when this kernel lacks it.
    let absent = scenario
        .fix
        .zip(profile.as_ref())
        .filter(|(fix, profile)| !profile.has(fix.id))
        .map(|(fix, profile)| {
            (
                fix,
                profile.basis(fix.id).cloned().unwrap_or(Basis::Version),
            )
        });
    let outcome = match (result, absent) {
        (Ok(()), None) => None,
        (Ok(()), Some((fix, basis))) => {
            let err = anyhow::anyhow!(
                "expected known bug {} to show at a `shows_bug` step: the fix is absent \
                 ({basis}), yet every step passed",
                fix.label()
            );
            Some(Outcome::Fail(failure(&err)))
        }
        (Err(err), Some((fix, basis))) if shows_bug(scenario, &err) => {
            Some(Outcome::KnownBug(KnownBug {
                fix,
                basis,
                failure: failure(&err),
            }))
        }
        (Err(err), _) => Some(Outcome::Fail(failure(&err))),
    };
    if let Some(outcome) = outcome {
        verdict.outcome = outcome;
    }
    verdict.duration = started.elapsed();
    verdict
}

/// Whether the run failed at a step marked `shows_bug`.
fn shows_bug(scenario: &Scenario, err: &anyhow::Error) -> bool {
    err.downcast_ref::<StepError>().is_some_and(|failed| {
        scenario
            .steps
            .iter()
            .any(|step| step.shows_bug && step.label == failed.step.label)
    })
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
    let result = run::run_steps(
        &mut guest,
        scenario,
        &scenario.steps,
        run::Settings::new(&verdict.artifacts).follow(scenario, &profile),
        &mut trace,
    );
    std::fs::write(verdict.artifacts.join("steps.log"), &trace)?;
    let started = guest.vm.started;
    // The guest is discarded either way, and everything it logged is on
    // the console already: no need to wait for it to power off.
    guest.vm.kill();
    verdict.guest_time = Some(started.elapsed());
    result
}

/// Boot the guest a scenario would run in, without running its steps
/// (for the benchmark).
pub fn boot_guest(
    project: &Project,
    cache: &Cache,
    scenario: &Scenario,
    spec: &KernelSpec,
) -> Result<Guest> {
    let mut verdict = Verdict::new(project, scenario, spec);
    match boot(project, cache, scenario, spec, &mut verdict, false)? {
        Some((guest, _)) => Ok(guest),
        None => bail!(
            "{} does not apply to {}: {:?}",
            scenario.name,
            spec.name,
            verdict.outcome
        ),
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
    host::ensure(host::SCENARIO_TOOLS, &cache.root().join("locks"))?;
    let qemu = host::qemu::locate(cache, &spec.arch.record.qemu)?;
    let kernel = kernel::prepare(spec, cache)?;
    verdict.kernel_version = Some(kernel.version.clone());
    let profile = kernel.profile()?;
    if let Some(reason) = applicability(scenario, spec, Some(&profile)) {
        verdict.outcome = Outcome::NotApplicable(reason);
        return Ok(None);
    }
    let (support, built) = fixture::build_all(project, &scenario.fixtures, &kernel, cache)?;
    let mut boot_modules = kernel.boot_modules.clone();
    boot_modules.push(support.ko.clone());
    // Fixtures are copied in once the guest is up, so that every scenario
    // on a kernel boots the same image and can start from its saved state.
    let initramfs = image::build(
        cache,
        &host::guest_busybox(cache, &kernel.arch)?,
        crate::guest::INIT_SCRIPT,
        &boot_modules,
    )?;

    if verdict.artifacts.exists() {
        std::fs::remove_dir_all(&verdict.artifacts).ok();
    }
    std::fs::create_dir_all(&verdict.artifacts)
        .with_context(|| format!("cannot create {}", verdict.artifacts.display()))?;
    artifacts::write_sources(
        project,
        &scenario.fixtures,
        kernel.source.as_deref(),
        &verdict.artifacts.join("fixtures"),
    )?;
    std::fs::write(
        verdict.artifacts.join("rerun.sh"),
        artifacts::rerun_script(project, scenario, &spec.name),
    )?;
    let timeouts = Timeouts::from_env();
    let accel = vm::choose_accel(
        &qemu,
        &kernel.image,
        &kernel.arch,
        &cache.root().join("probe"),
    );
    verdict.accel = Some(accel.name());
    let clock = vm::clock::choose(accel, scenario.cpus, scenario.clock);
    verdict.clock = Some(clock.name());
    let config = VmConfig {
        qemu,
        arch: kernel.arch.clone(),
        image: kernel.image.clone(),
        initramfs,
        log_dir: verdict.artifacts.clone(),
        memory_mb: 512,
        cpus: scenario.cpus,
        accel,
        clock,
        interactive,
        incoming: None,
        earlier_console: None,
    };
    let limits = snapshot::StartLimits {
        boot: timeouts.boot,
        command: timeouts.command,
    };
    let mut guest = if interactive
        || scenario.fresh_boot
        || !snapshot::enabled(&kernel.arch, &config.qemu, scenario.cpus)
    {
        snapshot::boot(&config, limits)?
    } else {
        snapshot::start(cache, &config, limits)?
    };
    verdict.boot = Some(guest.boot);
    if scenario.cpus > 1 {
        let online = observe::cpu_count(&guest.run_ok("cat /sys/devices/system/cpu/online")?)?;
        if online < scenario.cpus {
            verdict.outcome = Outcome::NotApplicable(format!(
                "the kernel brought up {online} of {} CPUs",
                scenario.cpus
            ));
            guest.vm.kill();
            return Ok(None);
        }
    }
    for fixture in &built {
        let ko = fixture.guest_copy(&kernel.arch, cache)?;
        guest.push_file(&format!("/klp/{}.ko", fixture.name), &ko)?;
    }
    Ok(Some((guest, profile)))
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
    let result = run::run_steps(
        &mut guest,
        scenario,
        steps,
        run::Settings::new(&verdict.artifacts).follow(scenario, &profile),
        &mut trace,
    );
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
