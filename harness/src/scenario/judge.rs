//! observation ──> pass or mismatch. Pure: the same observations give the
//! same verdict, live or from a kept run (`rejudge`).

use super::follow::Follower;
use super::format::{FeatureState, PatchState};
use super::header::EXPECTED_TAINT;
use super::load::Scenario;
use super::observe::{self, EndObservation, Observation};
use super::step::{CheckedStep, Kind};
use super::verdict::Mismatch;
use crate::errno;
use crate::fixture;
use crate::guest::livepatch::Listing;
use crate::model::{Prediction, Response};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::time::Duration;

/// In an expected file's content, the command line the guest's kernel
/// booted with (it differs between architectures: the console).
pub const KERNEL_COMMAND_LINE: &str = "{kernel_command_line}";

/// Printed by a step's command when the transition did not end in time.
pub const STILL_RUNNING: &str = "@@klp-harness: transition still running@@";

/// The patch whose transition a load or disable step waits for, in the
/// same command.
pub fn waits_for(step: &CheckedStep) -> Option<String> {
    match step.action.kind {
        Kind::Load | Kind::Disable if step.wait_transition && step.expected_errno.is_none() => {
            Some(fixture::module_name(&step.action.operand))
        }
        _ => None,
    }
}

/// The files a step's expectations read besides the listing.
pub fn reads_for(step: &CheckedStep) -> Vec<String> {
    let target = crate::fixture::target::SYSFS_DIR;
    let mut reads: Vec<String> = step
        .expect
        .target
        .keys()
        .map(|file| format!("{target}/{file}"))
        .collect();
    reads.extend(step.expect.files.keys().cloned());
    reads
}

/// Judges a scenario's steps in order, keeping what a step's verdict
/// depends on from earlier steps: the model, and the log of transitions
/// started without a wait.
pub struct Judge<'a> {
    scenario: &'a Scenario,
    follower: Option<Follower>,
    /// The bound on a transition, unless a step has its own (`within`).
    transition_limit: Duration,
    /// The kernel's command line, for `{kernel_command_line}`.
    command_line: String,
    /// Transitions started without a wait: module ──> what the kernel has
    /// logged since.
    open: BTreeMap<String, String>,
}

impl<'a> Judge<'a> {
    pub fn new(
        scenario: &'a Scenario,
        follower: Option<Follower>,
        transition_limit: Duration,
        command_line: String,
    ) -> Self {
        Judge {
            scenario,
            follower,
            transition_limit,
            command_line,
            open: BTreeMap::new(),
        }
    }

    /// The bound on this step's transition.
    pub fn transition_limit(&self, step: &CheckedStep) -> Duration {
        step.within.unwrap_or(self.transition_limit)
    }

    /// The model's prediction for a step, before it runs.
    pub fn predict(&mut self, step: &CheckedStep) -> Result<Option<Prediction>> {
        match self.follower.as_mut() {
            Some(follower) => follower.predict(step),
            None => Ok(None),
        }
    }

    /// The step's observation against its expectations and the model;
    /// `notes` gets what was deliberately not compared.
    pub fn step(
        &mut self,
        step: &CheckedStep,
        observation: &Observation,
        prediction: Option<Prediction>,
        notes: &mut String,
    ) -> Result<()> {
        let earlier_log = match step.action.kind {
            Kind::Wait => self
                .open
                .remove(&fixture::module_name(&step.action.operand)),
            _ => None,
        };
        self.record_open_transitions(step, &observation.log);
        let Some(result) = &observation.result else {
            bail!(
                "{}",
                observation
                    .lost
                    .as_deref()
                    .unwrap_or("the guest gave no answer")
            );
        };
        let limit = self.transition_limit(step);
        match (&step.expected_errno, result.status) {
            (None, 0) => {
                if let Some(name) =
                    waits_for(step).filter(|_| result.output.contains(STILL_RUNNING))
                {
                    bail!("transition of {name} still running after {limit:?}");
                }
            }
            (None, status) => {
                let errno = errno::from_message(&result.output)
                    .map(|name| format!(" ({name})"))
                    .unwrap_or_default();
                let found = format!("exit status {status}{errno}: {}", result.output.trim());
                return Err(Mismatch::new("", "success", found).into());
            }
            (Some(expected), 0) => return Err(Mismatch::new("", expected, "success").into()),
            (Some(expected), _) => {
                let found = errno::from_message(&result.output);
                if found != Some(expected.as_str()) {
                    let found = format!(
                        "{}: {}",
                        found.unwrap_or("an unrecognised error"),
                        result.output.trim()
                    );
                    return Err(Mismatch::new("", expected, found).into());
                }
            }
        }
        let prediction = prediction.filter(|_| step.follow_model);
        if let Some(prediction) = &prediction {
            let found = if result.status != 0 {
                Response::Refused(
                    errno::from_message(&result.output).unwrap_or("an unrecognised error"),
                )
            } else if result.output.contains(STILL_RUNNING) {
                Response::StillRunning
            } else {
                Response::Done
            };
            Follower::check_outcome(&prediction.outcome, &found)?;
        }
        if let Some(expected) = &step.expect.output {
            let found = result.output.trim_end_matches('\n');
            if found != expected.value {
                return Err(Mismatch::new("output", &expected.value, found)
                    .quoted()
                    .into());
            }
        }
        if let Some(lost) = &observation.lost {
            bail!("{lost}");
        }
        let log = &observation.log;
        if let Some(line) = observe::kernel_splat(log, &self.scenario.allow.log) {
            bail!("the kernel logged a warning or crash: {}", line.trim());
        }
        if let Some(line) = log
            .lines()
            .find(|line| line.contains(observe::NO_CONSISTENCY_MODEL))
        {
            bail!(
                "the kernel lacks the livepatch consistency model (CONFIG_UNWINDER_ORC?): {}",
                line.trim()
            );
        }
        let window = match &earlier_log {
            None => Window::Step,
            Some(_) => Window::Transition,
        };
        let log = format!("{}{log}", earlier_log.unwrap_or_default());
        let listing = Listing::parse(&observation.listing);
        self.check_expectations(step, observation, &listing, &log, window)?;
        match (prediction, self.follower.as_ref()) {
            (Some(prediction), Some(follower)) if prediction.settled => {
                follower.check_files(&listing)
            }
            (Some(_), Some(_)) => {
                notes.push_str(
                    "(sysfs not compared with the model: a transition may end at any moment)\n",
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Once every step has passed: boot messages belong to no step, so
    /// the whole console is looked at once more, and the taint flags.
    pub fn end(&self, end: &EndObservation) -> Result<()> {
        let scenario = self.scenario;
        if let Some(line) = observe::kernel_splat(&end.console, &scenario.allow.log) {
            bail!(
                "{}: the kernel logged a warning or crash: {line}",
                scenario.file.display()
            );
        }
        let tainted = match &end.tainted {
            Ok(tainted) => tainted.trim(),
            Err(why) => bail!("{why}"),
        };
        let unexpected: String = observe::taint_flags(tainted)?
            .into_iter()
            .filter(|flag| !EXPECTED_TAINT.contains(flag) && !scenario.allow.taint.contains(flag))
            .collect();
        if !unexpected.is_empty() {
            bail!(
                "{}: the kernel is tainted {unexpected} (/proc/sys/kernel/tainted = {tainted}); \
                 expected no flags beyond {} unless the scenario lists them under allow: taint",
                scenario.file.display(),
                EXPECTED_TAINT.iter().collect::<String>()
            );
        }
        Ok(())
    }

    /// Keep what each transition started without a wait has logged so far.
    fn record_open_transitions(&mut self, step: &CheckedStep, log: &str) {
        for logged in self.open.values_mut() {
            logged.push_str(log);
        }
        let starts = match step.action.kind {
            Kind::Load | Kind::Disable => !step.wait_transition && step.expected_errno.is_none(),
            Kind::Reverse => step.expected_errno.is_none(),
            _ => false,
        };
        if starts {
            self.open
                .insert(fixture::module_name(&step.action.operand), log.to_string());
        }
    }

    fn check_expectations(
        &self,
        step: &CheckedStep,
        observation: &Observation,
        listing: &Listing,
        log: &str,
        window: Window,
    ) -> Result<()> {
        let expect = &step.expect;
        // A kept run judged again may lack a file an edited expectation names.
        let read = |path: &str| match observation.reads.get(path) {
            Some(content) => Ok(content.trim_end_matches('\n').to_string()),
            None => Err(anyhow::anyhow!(
                "{path} was not read after this step: the run did not expect it then"
            )),
        };
        if let Some(expected) = &expect.patches {
            let found = listing.patch_stack();
            if found != expected.value {
                let shown = |stack: &[String]| format!("{stack:?}");
                return Err(Mismatch::new("patches", shown(&expected.value), shown(&found)).into());
            }
        }
        for (name, expected) in &expect.patch {
            let objects: Vec<&str> = expected
                .value
                .patched
                .iter()
                .flatten()
                .map(|(o, _)| o.as_str())
                .collect();
            let found = observe::patch_state(listing, name, &objects);
            check_patch_state(name, &expected.value, &found)?;
        }
        for (file, expected) in &expect.target {
            let target = crate::fixture::target::SYSFS_DIR;
            let found = read(&format!("{target}/{file}"))?;
            if found != expected.value {
                return Err(
                    Mismatch::new(format!("target {file}"), &expected.value, found)
                        .quoted()
                        .into(),
                );
            }
        }
        for (path, expected) in &expect.files {
            let wanted = expected
                .value
                .replace(KERNEL_COMMAND_LINE, &self.command_line);
            let found = read(path)?;
            if found != wanted {
                return Err(Mismatch::new(path, &wanted, found).quoted().into());
            }
        }
        if let Some(expected) = &expect.modules {
            let mut found: Vec<&String> = listing
                .modules
                .iter()
                .filter(|name| super::format::is_watched_module(name))
                .collect();
            found.sort();
            let mut wanted: Vec<&String> = expected.value.iter().collect();
            wanted.sort();
            if found != wanted {
                let shown = |names: &[&String]| format!("{names:?}");
                return Err(Mismatch::new("modules", shown(&wanted), shown(&found)).into());
            }
        }
        for (id, expected) in &expect.features {
            let found = observe::feature_state(listing, *id);
            check_feature_state(*id, &expected.value, &found)?;
        }
        let wanted: Vec<&str> = expect.log.iter().map(|line| line.value.as_str()).collect();
        if let Some(diff) = observe::log_diff(log, &wanted) {
            let diff = match window {
                Window::Step => diff,
                Window::Transition => diff.replace(
                    "\nthis step logged:\n",
                    "\nlogged since the transition started:\n",
                ),
            };
            bail!(
                "{window}: expected these lines in this order, other lines may come between:\n{diff}"
            );
        }
        for fragment in &expect.not_logged {
            if let Some(line) = log.lines().find(|line| line.contains(&fragment.value)) {
                bail!(
                    "{window}: expected no line containing {:?}, found: {}",
                    fragment.value,
                    line.trim()
                );
            }
        }
        Ok(())
    }
}

/// The part of the kernel log that `log` and `not_logged` are checked in.
#[derive(Clone, Copy)]
enum Window {
    Step,
    /// A `wait` step's transition, from the step that started it.
    Transition,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Window::Step => "kernel log",
            Window::Transition => "kernel log since the transition started",
        })
    }
}

fn check_patch_state(name: &str, expected: &PatchState, found: &Option<PatchState>) -> Result<()> {
    let Some(found) = found else {
        bail!("patch {name}: expected it under /sys/kernel/livepatch, found no such patch");
    };
    let text = |value: Option<u32>| value.map(|v| v.to_string());
    let small = |value: Option<u8>| value.map(|v| v.to_string());
    let subject = format!("patch {name}");
    compare(
        &subject,
        "enabled",
        small(expected.enabled),
        small(found.enabled),
    )?;
    compare(
        &subject,
        "transition",
        small(expected.transition),
        small(found.transition),
    )?;
    compare(
        &subject,
        "replace",
        small(expected.replace),
        small(found.replace),
    )?;
    compare(
        &subject,
        "stack_order",
        text(expected.stack_order),
        text(found.stack_order),
    )?;
    for (object, want) in expected.patched.iter().flatten() {
        let have = found.patched.as_ref().and_then(|p| p.get(object));
        compare(
            &subject,
            &format!("{object}/patched"),
            small(Some(*want)),
            small(have.copied()),
        )?;
    }
    Ok(())
}

fn check_feature_state(
    id: u64,
    expected: &FeatureState,
    found: &Option<FeatureState>,
) -> Result<()> {
    let Some(found) = found else {
        bail!("feature {id}: expected /sys/kernel/klp_features/{id}, found no such feature");
    };
    let number = |value: Option<u32>| value.map(|v| v.to_string());
    let small = |value: Option<u8>| value.map(|v| v.to_string());
    let subject = format!("feature {id}");
    compare(&subject, "name", expected.name.clone(), found.name.clone())?;
    compare(
        &subject,
        "version",
        expected.version.clone(),
        found.version.clone(),
    )?;
    compare(
        &subject,
        "owner",
        expected.owner.clone(),
        found.owner.clone(),
    )?;
    compare(
        &subject,
        "allocations",
        number(expected.allocations),
        number(found.allocations),
    )?;
    compare(
        &subject,
        "enabled",
        small(expected.enabled),
        small(found.enabled),
    )?;
    compare(
        &subject,
        "shadow",
        small(expected.shadow),
        small(found.shadow),
    )
}

/// One expected attribute value against the one found; None expected is not checked.
fn compare(
    subject: &str,
    attribute: &str,
    want: Option<String>,
    have: Option<String>,
) -> Result<()> {
    match (want, have) {
        (None, _) => Ok(()),
        (Some(want), Some(have)) if want == have => Ok(()),
        (Some(want), Some(have)) => {
            Err(Mismatch::new(format!("{subject}: {attribute}"), want, have).into())
        }
        (Some(want), None) => {
            bail!("{subject}: {attribute}: expected {want}, but there is no such attribute")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::CommandResult;
    use std::path::Path;

    fn scenario(steps: &str) -> Scenario {
        let project =
            crate::project::Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let text = format!("description: d\nfixtures: [klp_target, klp_cumul_v1]\nsteps:\n{steps}");
        super::super::parse(&project, Path::new("s.yaml"), &text).unwrap()
    }

    fn observed(status: i32, output: &str, log: &str) -> Observation {
        Observation {
            command: "cmd".into(),
            result: Some(CommandResult {
                status,
                output: output.into(),
            }),
            log: log.into(),
            ..Default::default()
        }
    }

    fn judge_all(scenario: &Scenario, observations: &[Observation]) -> Result<()> {
        let mut judge = Judge::new(scenario, None, Duration::from_secs(1), String::new());
        for (step, observation) in scenario.steps.iter().zip(observations) {
            judge.step(step, observation, None, &mut String::new())?;
        }
        Ok(())
    }

    #[test]
    fn a_wait_sees_what_its_transition_logged_since_it_started() {
        let scenario = scenario(
            "  - load: klp_target\n\
             \x20 - park: klp_target\n\
             \x20 - load: klp_cumul_v1\n    wait_transition: false\n\
             \x20 - release: klp_target\n\
             \x20 - wait: klp_cumul_v1\n    expect:\n      log: [started, released]\n",
        );
        let logs = ["", "", "started\n", "released\n", "done\n"];
        let observations: Vec<Observation> = logs.iter().map(|log| observed(0, "", log)).collect();
        // Started at the third step; the release's lines belong to it too.
        judge_all(&scenario, &observations).unwrap();
        let mut early = observations.clone();
        early[2].log = String::new();
        early[1].log = "started\n".into();
        let err = judge_all(&scenario, &early).unwrap_err().to_string();
        assert!(
            err.starts_with("kernel log since the transition started"),
            "{err}"
        );
    }

    #[test]
    fn modules_are_the_watched_ones_in_any_order() {
        let scenario = scenario(
            "  - load: klp_target\n    expect:\n      modules: [klp_target, klp_features]\n",
        );
        let mut seen = observed(0, "", "");
        seen.listing = "/proc/modules: klp_target virtio_blk klp_features\n".into();
        judge_all(&scenario, std::slice::from_ref(&seen)).unwrap();
        seen.listing = "/proc/modules: klp_cumul_v1 klp_target klp_features\n".into();
        let err = judge_all(&scenario, &[seen]).unwrap_err().to_string();
        assert_eq!(
            err,
            "modules: expected [\"klp_features\", \"klp_target\"], \
             found [\"klp_cumul_v1\", \"klp_features\", \"klp_target\"]"
        );
    }

    #[test]
    fn a_file_the_run_did_not_read_is_named_not_taken_as_empty() {
        let scenario = scenario("  - load: klp_target\n    expect:\n      target: {status: ''}\n");
        let err = judge_all(&scenario, &[observed(0, "", "")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/sys/kernel/klp_target/status was not read after this step: the run did not expect it then"
        );
    }

    #[test]
    fn an_expected_error_is_judged_by_its_errno() {
        let scenario = scenario("  - load: klp_cumul_v1\n    error: EINVAL\n");
        let refused = observed(1, "insmod: can't insert 'x': Invalid argument\n", "");
        judge_all(&scenario, &[refused]).unwrap();
        let err = judge_all(&scenario, &[observed(0, "", "")]).unwrap_err();
        assert_eq!(err.to_string(), "expected EINVAL, found success");
    }

    #[test]
    fn a_lost_guest_fails_the_step_with_why() {
        let scenario = scenario("  - load: klp_target\n");
        let lost = Observation {
            lost: Some("the guest stopped while running `insmod`".into()),
            ..Default::default()
        };
        let err = judge_all(&scenario, &[lost]).unwrap_err().to_string();
        assert_eq!(err, "the guest stopped while running `insmod`");
    }

    #[test]
    fn expectations_are_read_from_the_listing_and_the_reads() {
        let scenario = scenario(
            "  - load: klp_target\n    expect:\n      patches: [klp_cumul_v1]\n      \
             patch: {klp_cumul_v1: {enabled: 1}}\n      target: {status: klp_cumul_v1 f1=v1}\n",
        );
        let mut seen = observed(0, "", "");
        seen.listing = "/sys/kernel/livepatch/klp_cumul_v1/enabled:1\n\
                        /proc/modules: klp_cumul_v1 klp_target\n"
            .into();
        seen.reads.insert(
            "/sys/kernel/klp_target/status".into(),
            "klp_cumul_v1 f1=v1\n".into(),
        );
        judge_all(&scenario, std::slice::from_ref(&seen)).unwrap();
        seen.listing = seen.listing.replace("enabled:1", "enabled:0");
        let err = judge_all(&scenario, &[seen]).unwrap_err().to_string();
        assert_eq!(err, "patch klp_cumul_v1: enabled: expected 1, found 0");
    }

    #[test]
    fn wrong_patch_state_names_attribute_and_values() {
        let expected = PatchState {
            enabled: Some(1),
            ..Default::default()
        };
        let found = Some(PatchState {
            enabled: Some(0),
            transition: Some(0),
            ..Default::default()
        });
        let err = check_patch_state("klp_a", &expected, &found)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "patch klp_a: enabled: expected 1, found 0");
    }

    #[test]
    fn unpatched_object_is_named() {
        let object = |v: u8| Some([("klp_target".to_string(), v)].into_iter().collect());
        let expected = PatchState {
            patched: object(1),
            ..Default::default()
        };
        let found = Some(PatchState {
            patched: object(0),
            ..Default::default()
        });
        let err = check_patch_state("klp_a", &expected, &found)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "patch klp_a: klp_target/patched: expected 1, found 0");
    }

    #[test]
    fn missing_attribute_is_a_failure_not_a_pass() {
        let expected = PatchState {
            stack_order: Some(1),
            ..Default::default()
        };
        let found = Some(PatchState {
            enabled: Some(1),
            ..Default::default()
        });
        assert!(check_patch_state("klp_a", &expected, &found).is_err());
    }

    #[test]
    fn wrong_feature_owner_is_named() {
        let expected = FeatureState {
            owner: Some("klp_b".into()),
            ..Default::default()
        };
        let found = Some(FeatureState {
            owner: Some("klp_a".into()),
            version: Some("2".into()),
            ..Default::default()
        });
        let err = check_feature_state(1, &expected, &found)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "feature 1: owner: expected klp_b, found klp_a");
    }
}
