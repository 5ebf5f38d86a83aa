//! scenario YAML ──> steps ──> observations ──> verdict.

mod artifacts;
mod discover;
pub mod follow;
pub mod format;
mod header;
mod load;
mod observe;
mod run;
pub mod step;
mod steps;

pub use artifacts::rerun_command;
pub use discover::{local_fixtures_dir, scenario_files, scenario_name};
pub use header::{EXPECTED_TAINT, RULES, TAINT_FLAGS};
pub use load::{load, parse, Scenario};
pub use observe::{wait_transition_command as wait_command, SNAPSHOT_COMMAND};
pub use run::{run_steps, Settings};
pub use step::{Action, Kind};

use crate::cache::Cache;
use crate::guest::{snapshot, BootTimes, Guest};
use crate::kernel::{features, KernelSpec};
use crate::project::Project;
use crate::vm::VmConfig;
use crate::{fixture, host, image, kernel, vm};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    NotApplicable(String),
}

#[derive(Clone, Debug)]
pub struct Verdict {
    pub scenario: String,
    pub kernel: String,
    pub outcome: Outcome,
    pub duration: Duration,
    pub accel: Option<&'static str>,
    pub boot: Option<BootTimes>,
    /// The kernel's upstream version, once known.
    pub kernel_version: Option<String>,
    /// From QEMU's start until it exited: the part of `duration` spent in
    /// the guest.
    pub guest_time: Option<Duration>,
    /// Console log, QEMU log and step trace of this run.
    pub artifacts: PathBuf,
}

impl Verdict {
    fn new(project: &Project, scenario: &Scenario, spec: &KernelSpec) -> Self {
        Self {
            scenario: scenario.name.clone(),
            kernel: spec.name.clone(),
            outcome: Outcome::Pass,
            duration: Duration::ZERO,
            accel: None,
            boot: None,
            kernel_version: spec.version_hint(),
            guest_time: None,
            artifacts: artifacts_dir(project, &scenario.name, &spec.name),
        }
    }
}

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
        let seconds = |var: &str, default: u64| {
            Duration::from_secs(
                std::env::var(var)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default),
            )
        };
        Self {
            boot: seconds("KLP_HARNESS_BOOT_TIMEOUT", 120),
            command: seconds("KLP_HARNESS_COMMAND_TIMEOUT", 60),
            transition: seconds("KLP_HARNESS_TRANSITION_TIMEOUT", 15),
        }
    }
}

/// The JSON Schema of scenario files, as kept in schema/scenario.schema.json
/// for editors (e.g. yaml-language-server).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(format::ScenarioFile);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

pub fn artifacts_dir(project: &Project, scenario: &str, kernel: &str) -> PathBuf {
    let base = std::env::var_os("KLP_HARNESS_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| project.root().join("target/klp-harness/runs"));
    base.join(scenario).join(kernel)
}

/// Why the scenario does not apply to this kernel (given its upstream
/// version, when known), or None when it does.
pub fn applicability(
    scenario: &Scenario,
    kernel: &KernelSpec,
    version: Option<&str>,
) -> Option<String> {
    if let Some(kernels) = &scenario.kernels {
        if !kernels.contains(&kernel.name) {
            return Some(format!("scenario is limited to {}", kernels.join(", ")));
        }
    }
    if scenario.needs_kernel_source && kernel.is_prebuilt() {
        return Some("needs the kernel source tree; this kernel is prebuilt".to_string());
    }
    let version = features::parse_version(version?).ok()?;
    let shown = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
    if let Some(min) = &scenario.requires.min_version {
        let min_parsed = features::parse_version(min).ok()?;
        if features::compare(&version, &min_parsed).is_lt() {
            return Some(format!("kernel {} < {min}", shown(&version)));
        }
    }
    let present = features::attributes_of(&version);
    scenario
        .requires
        .sysfs
        .iter()
        .find(|a| !present.contains(&a.as_str()))
        .map(|attribute| {
            let since = features::attribute_since(attribute).unwrap_or("?");
            format!("{attribute}: kernel {} < {since}", shown(&version))
        })
}

/// One guest per CPU: under TCG each guest keeps one host CPU busy.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Execute every (scenario, kernel) pair, up to `jobs` at once; verdicts
/// come back in the order of `runs`, and `done` sees each as it ends.
pub fn execute_many(
    project: &Project,
    cache: &Cache,
    runs: &[(&Scenario, &KernelSpec)],
    jobs: usize,
    done: impl Fn(&Verdict) + Sync,
) -> Vec<Verdict> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; runs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, runs.len().max(1)) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((scenario, spec)) = runs.get(index) else {
                    return;
                };
                let verdict = execute(project, cache, scenario, spec);
                done(&verdict);
                results.lock().unwrap()[index] = Some(verdict);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|verdict| verdict.expect("every run has a verdict"))
        .collect()
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
    let artifacts = verdict.artifacts.clone();
    if let Some(reason) = applicability(scenario, spec, spec.version_hint().as_deref()) {
        verdict.outcome = Outcome::NotApplicable(reason);
        return verdict;
    }
    if let Err(err) = execute_inner(project, cache, scenario, spec, &mut verdict) {
        verdict.outcome = Outcome::Fail(format!(
            "{err:#}\n(logs: {}; re-run: {})",
            artifacts.display(),
            rerun_command(project, scenario, &spec.name)
        ));
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
) -> Result<()> {
    let Some(mut guest) = boot(project, cache, scenario, spec, verdict, false)? else {
        return Ok(());
    };
    let mut trace = String::new();
    let result = run::run_steps(
        &mut guest,
        scenario,
        &scenario.steps,
        run::Settings::new(&verdict.artifacts).follow(
            scenario,
            verdict.kernel_version.as_deref().unwrap_or_default(),
        )?,
        &mut trace,
    );
    std::fs::write(verdict.artifacts.join("steps.log"), &trace)?;
    let started = guest.vm.started;
    let stopped = match result {
        Ok(()) => guest.shutdown(),
        Err(err) => {
            guest.vm.kill();
            Err(err)
        }
    };
    verdict.guest_time = Some(started.elapsed());
    stopped
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
        Some(guest) => Ok(guest),
        None => bail!(
            "{} does not apply to {}: {:?}",
            scenario.name,
            spec.name,
            verdict.outcome
        ),
    }
}

/// Build what the scenario needs and boot the guest; None (with the
/// verdict set) when the scenario does not apply to the kernel.
fn boot(
    project: &Project,
    cache: &Cache,
    scenario: &Scenario,
    spec: &KernelSpec,
    verdict: &mut Verdict,
    interactive: bool,
) -> Result<Option<Guest>> {
    host::ensure(host::SCENARIO_TOOLS, &cache.root().join("locks"))?;
    let kernel = kernel::prepare(spec, cache)?;
    verdict.kernel_version = Some(kernel.version.clone());
    if let Some(reason) = applicability(scenario, spec, Some(&kernel.version)) {
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
        std::path::Path::new(host::BUSYBOX_STATIC),
        crate::guest::INIT_SCRIPT,
        &boot_modules,
        &[],
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
    let accel = vm::choose_accel(&kernel.bzimage, &cache.root().join("probe"));
    verdict.accel = Some(accel.name());
    let config = VmConfig {
        bzimage: kernel.bzimage.clone(),
        initramfs,
        log_dir: verdict.artifacts.clone(),
        memory_mb: 512,
        cpus: 2,
        accel,
        interactive,
        incoming: None,
        earlier_console: None,
    };
    let limits = snapshot::StartLimits {
        boot: timeouts.boot,
        command: timeouts.command,
    };
    let mut guest = if interactive || scenario.fresh_boot || !snapshot::enabled() {
        snapshot::boot(&config, limits)?
    } else {
        snapshot::start(cache, &config, limits)?
    };
    verdict.boot = Some(guest.boot);
    for fixture in &built {
        let ko = std::fs::read(&fixture.ko)
            .with_context(|| format!("cannot read {}", fixture.ko.display()))?;
        guest.push_file(&format!("/klp/{}.ko", fixture.name), &ko)?;
    }
    Ok(Some(guest))
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
    let Some(mut guest) = boot(project, cache, scenario, spec, &mut verdict, true)? else {
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
        run::Settings::new(&verdict.artifacts).follow(
            scenario,
            verdict.kernel_version.as_deref().unwrap_or_default(),
        )?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn kernel() -> KernelSpec {
        let project = Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        crate::kernel::find(&project, "src-6.12").unwrap()
    }

    fn scenario(requires: &str) -> Scenario {
        let project = Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let text = format!(
            "description: d\nrequires: {requires}\nfixtures: []\nsteps:\n  - run: 'true'\n"
        );
        parse(&project, Path::new("s.yaml"), &text).unwrap()
    }

    #[test]
    fn the_kept_json_schema_is_current() {
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/scenario.schema.json");
        let kept = std::fs::read_to_string(&kept).unwrap_or_default();
        assert!(
            kept == json_schema(),
            "schema/scenario.schema.json is out of date; regenerate it with \
             `cargo run -- schema > schema/scenario.schema.json`"
        );
    }

    #[test]
    fn missing_sysfs_attribute_is_not_applicable_with_reason() {
        let s = scenario("{sysfs: [stack_order]}");
        assert_eq!(
            applicability(&s, &kernel(), Some("6.12.117")).as_deref(),
            Some("stack_order: kernel 6.12.117 < 6.14")
        );
        assert_eq!(applicability(&s, &kernel(), Some("7.2.1")), None);
    }

    #[test]
    fn old_kernel_is_not_applicable_with_reason() {
        let s = scenario("{min_version: '6.1'}");
        assert_eq!(
            applicability(&s, &kernel(), Some("5.10.240")).as_deref(),
            Some("kernel 5.10.240 < 6.1")
        );
        assert_eq!(applicability(&s, &kernel(), Some("6.1.0")), None);
    }

    #[test]
    fn kernel_tree_modules_do_not_apply_to_prebuilt_kernels() {
        let project = Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let text = "description: d\nfixtures: []\nexternal:\n  - {dir: 'kernel:samples/livepatch', modules: [livepatch-sample]}\nsteps:\n  - load: livepatch-sample\n";
        let s = parse(&project, Path::new("s.yaml"), text).unwrap();
        let prebuilt = crate::kernel::find(&project, "debian-6.12").unwrap();
        let built = crate::kernel::find(&project, "src-6.12").unwrap();
        assert_eq!(
            applicability(&s, &prebuilt, Some("6.12")).as_deref(),
            Some("needs the kernel source tree; this kernel is prebuilt")
        );
        assert_eq!(applicability(&s, &built, Some("6.12")), None);
    }
}
