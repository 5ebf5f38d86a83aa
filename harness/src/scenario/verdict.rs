//! What a scenario run on one kernel comes to, and why: a failure names
//! the step, its position, what was expected and what was found.

use super::load::Scenario;
use crate::fixture::FixtureSource;
use crate::guest::BootTimes;
use crate::kernel::behaviour::{self, Basis, Behaviour, Profile};
use crate::kernel::KernelSpec;
use crate::project::Project;
use crate::yaml::Position;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(Failure),
    NotApplicable(String),
    /// The scenario's `fix` is absent from the kernel, and the bug showed
    /// where the scenario said it would: not a failure of the suite.
    KnownBug(KnownBug),
}

#[derive(Clone, Debug, PartialEq)]
pub struct KnownBug {
    pub fix: &'static Behaviour,
    /// How the fix was found absent.
    pub basis: Basis,
    /// What the bug looked like.
    pub failure: Failure,
}

impl fmt::Display for KnownBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let removed = match &self.fix.until {
            Some(until) => format!(", undone in {} by {}", until.release, until.commit),
            None => String::new(),
        };
        let fixed = match self.fix.since {
            Some(release) => format!("fixed in {release}{removed}"),
            None => "not fixed in any release".to_string(),
        };
        write!(
            f,
            "reproduces known bug {} ({fixed}; fix absent, {})",
            self.fix.label(),
            self.basis
        )
    }
}

/// Why a scenario failed on a kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The step that failed; None when the failure came before or after
    /// the steps (building, booting, the final taint check).
    pub step: Option<FailedStep>,
    /// What was wrong, without the step's position.
    pub message: String,
    /// The expected and the found value, when the failure is a mismatch.
    pub expected: Option<String>,
    pub found: Option<String>,
    /// Where the run's logs are.
    pub logs: PathBuf,
    /// The command that re-runs just this scenario on just this kernel.
    pub rerun: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FailedStep {
    pub label: String,
    /// The action as messages show it, e.g. "load klp_cumul_v1".
    pub action: String,
    pub position: Position,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(step) = &self.step {
            write!(
                f,
                "{}: step {} `{}`: ",
                step.position, step.label, step.action
            )?;
        }
        write!(
            f,
            "{}\n(logs: {}; re-run: {})",
            self.message,
            crate::project::shown_path(&self.logs),
            self.rerun
        )
    }
}

/// An error raised by one step; `Failure` takes its fields apart.
#[derive(Debug)]
pub struct StepError {
    pub step: FailedStep,
    pub error: anyhow::Error,
}

impl StepError {
    pub fn at(step: &super::step::CheckedStep, error: anyhow::Error) -> Self {
        StepError {
            step: FailedStep {
                label: step.label.clone(),
                action: step.action.to_string(),
                position: step.position.clone(),
            },
            error,
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: step {} `{}`: {:#}",
            self.step.position, self.step.label, self.step.action, self.error
        )
    }
}

impl std::error::Error for StepError {}

/// An observed value that differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// What was compared, e.g. "target status"; empty for the step's own outcome.
    pub what: String,
    pub expected: String,
    pub found: String,
    /// Show the values quoted (they are free text).
    pub quoted: bool,
}

impl Mismatch {
    pub fn new(
        what: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Self {
            what: what.into(),
            expected: expected.into(),
            found: found.into(),
            quoted: false,
        }
    }

    /// The same, with both values shown quoted.
    pub fn quoted(mut self) -> Self {
        self.quoted = true;
        self
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.what.is_empty() {
            write!(f, "{}: ", self.what)?;
        }
        if self.quoted {
            write!(f, "expected {:?}, found {:?}", self.expected, self.found)
        } else {
            write!(f, "expected {}, found {}", self.expected, self.found)
        }
    }
}

impl std::error::Error for Mismatch {}

impl Failure {
    /// The failure an error of a run comes to.
    pub fn from_error(err: &anyhow::Error, logs: PathBuf, rerun: String) -> Self {
        let (step, inner) = match err.downcast_ref::<StepError>() {
            Some(step_error) => (Some(step_error.step.clone()), &step_error.error),
            None => (None, err),
        };
        let mismatch = inner
            .chain()
            .find_map(|cause| cause.downcast_ref::<Mismatch>());
        Failure {
            step,
            message: format!("{inner:#}"),
            expected: mismatch.map(|m| m.expected.clone()),
            found: mismatch.map(|m| m.found.clone()),
            logs,
            rerun,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Verdict {
    pub scenario: String,
    pub kernel: String,
    pub outcome: Outcome,
    pub duration: Duration,
    pub accel: Option<&'static str>,
    /// The guest's clock, "counted" or "real" (`vm::clock`).
    pub clock: Option<&'static str>,
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
    /// The verdict of a kept run, judged again (`rejudge`).
    pub(super) fn kept(scenario: &str, kernel: &str, artifacts: &std::path::Path) -> Self {
        Self {
            scenario: scenario.to_string(),
            kernel: kernel.to_string(),
            outcome: Outcome::Pass,
            duration: Duration::ZERO,
            accel: None,
            clock: None,
            boot: None,
            kernel_version: None,
            guest_time: None,
            artifacts: artifacts.to_path_buf(),
        }
    }

    pub(super) fn new(project: &Project, scenario: &Scenario, spec: &KernelSpec) -> Self {
        Self {
            scenario: scenario.name.clone(),
            kernel: spec.name.clone(),
            outcome: Outcome::Pass,
            duration: Duration::ZERO,
            accel: None,
            clock: None,
            boot: None,
            kernel_version: spec.version_hint(),
            guest_time: None,
            artifacts: artifacts_dir(project, &scenario.name, &spec.name),
        }
    }
}

/// Where one scenario's run on one kernel keeps its logs.
pub fn artifacts_dir(project: &Project, scenario: &str, kernel: &str) -> PathBuf {
    project
        .output_dir()
        .join("runs")
        .join(scenario)
        .join(kernel)
}

/// What a run's result comes to, given what the kernel has: a failure at
/// a `shows_bug` step of a scenario whose fix the kernel lacks is that
/// known bug; every step passing where the fix is absent is a failure.
pub fn conclude(
    scenario: &Scenario,
    profile: Option<&Profile>,
    result: anyhow::Result<()>,
    failure: impl Fn(&anyhow::Error) -> Failure,
) -> Outcome {
    let absent = scenario
        .fix
        .zip(profile)
        .filter(|(fix, profile)| !profile.has(fix.id))
        .map(|(fix, profile)| {
            (
                fix,
                profile.basis(fix.id).cloned().unwrap_or(Basis::Version),
            )
        });
    match (result, absent) {
        (Ok(()), None) => Outcome::Pass,
        (Ok(()), Some((fix, basis))) => {
            let err = anyhow::anyhow!(
                "expected known bug {} to show at a `shows_bug` step: the fix is absent \
                 ({basis}), yet every step passed",
                fix.label()
            );
            Outcome::Fail(failure(&err))
        }
        (Err(err), Some((fix, basis))) if shows_bug(scenario, &err) => {
            Outcome::KnownBug(KnownBug {
                fix,
                basis,
                failure: failure(&err),
            })
        }
        (Err(err), _) => Outcome::Fail(failure(&err)),
    }
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

/// Why the scenario does not apply to this kernel (given what it is known
/// to have, when known), or None when it does.
pub fn applicability(
    scenario: &Scenario,
    kernel: &KernelSpec,
    profile: Option<&Profile>,
) -> Option<String> {
    if let Some(kernels) = &scenario.kernels {
        if !kernels.contains(&kernel.name) {
            return Some(format!("scenario is limited to {}", kernels.join(", ")));
        }
    }
    if scenario.needs_kernel_source && kernel.is_prebuilt() {
        return Some("needs the kernel source tree; this kernel is prebuilt".to_string());
    }
    let profile = profile?;
    let api = crate::fixture::spec::KernelApi::of(profile);
    for fixture in &scenario.fixtures {
        if let FixtureSource::Livepatch { spec, .. } = &fixture.source {
            if let Some(reason) = spec.kernel_refuses(api) {
                return Some(format!("fixture {}: {reason}", fixture.name));
            }
        }
    }
    let version = &profile.version;
    let shown = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
    if let Some(min) = &scenario.requires.min_version {
        let min_parsed = crate::kernel::version::parse_version(min).ok()?;
        if crate::kernel::version::compare(version, &min_parsed).is_lt() {
            return Some(format!("kernel {} < {min}", shown(version)));
        }
    }
    if let Some(row) = (scenario.requires.behaviours.iter()).find(|row| !profile.has(row)) {
        return Some(format!("needs behaviour {row}, which this kernel lacks"));
    }
    let present = profile.attributes();
    scenario
        .requires
        .sysfs
        .iter()
        .find(|a| !present.contains(&a.as_str()))
        .map(|attribute| match behaviour::attribute_since(attribute) {
            Ok(since) => format!("{attribute}: kernel {} < {since}", shown(version)),
            Err(series) => format!("{attribute}: only kernels with the series \"{series}\""),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_failure_keeps_its_parts() {
        let position = Position {
            file: "s.yaml".into(),
            line: 11,
            column: 5,
        };
        let inner: anyhow::Error = Mismatch::new("target status", "original", "klp_a f1=v1")
            .quoted()
            .into();
        let err: anyhow::Error = StepError {
            step: FailedStep {
                label: "2".into(),
                action: "load klp_a".into(),
                position,
            },
            error: inner,
        }
        .into();
        let failure = Failure::from_error(&err, "logs/dir".into(), "rerun cmd".into());
        assert_eq!(failure.expected.as_deref(), Some("original"));
        assert_eq!(failure.found.as_deref(), Some("klp_a f1=v1"));
        assert_eq!(
            failure.message,
            "target status: expected \"original\", found \"klp_a f1=v1\""
        );
        assert_eq!(
            failure.to_string(),
            "s.yaml:11:5: step 2 `load klp_a`: target status: expected \"original\", \
             found \"klp_a f1=v1\"\n(logs: logs/dir; re-run: rerun cmd)"
        );
    }

    #[test]
    fn a_failure_outside_the_steps_has_no_step() {
        let err = anyhow::anyhow!("kernel build failed");
        let failure = Failure::from_error(&err, "l".into(), "r".into());
        assert_eq!(failure.step, None);
        assert_eq!(failure.expected, None);
        assert_eq!(failure.message, "kernel build failed");
    }
}
