//! A run's observations, kept in its directory (`observations.json`) with
//! what judging them needs, and judged again without a guest: `rejudge`.
//! Like kunit.py's `parse`, it works from what the run left alone.

use super::artifacts::rerun_command;
use super::follow::Follower;
use super::judge::Judge;
use super::load::{parse, Scenario};
use super::observe::{EndObservation, Observation};
use super::verdict::{conclude, Failure, StepError, Verdict};
use crate::kernel::behaviour::{Profile, ProfileRecord};
use crate::project::Project;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The file in a run's directory.
pub const OBSERVATIONS: &str = "observations.json";
/// The scenario's text as it ran, beside the observations.
pub const SCENARIO_COPY: &str = "scenario.yaml";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub scenario: String,
    /// The scenario file, relative to the project's root: messages name it.
    pub scenario_file: String,
    pub kernel: String,
    pub kernel_version: String,
    pub profile: ProfileRecord,
    pub command_line: String,
    pub transition_limit_ms: u64,
    /// How many of the scenario's steps the run meant to run (`shell`
    /// may stop early).
    pub steps_planned: usize,
    /// One per step run, in order.
    pub steps: Vec<Observation>,
    /// Once every step passed.
    pub end: Option<EndObservation>,
}

impl RunRecord {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let file = dir.join(OBSERVATIONS);
        let text = serde_json::to_string_pretty(self).expect("a record serialises");
        std::fs::write(&file, text + "\n")
            .with_context(|| format!("cannot write {}", file.display()))
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let file = dir.join(OBSERVATIONS);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "cannot read {}: expected the directory of a scenario run \
                 (target/klp-harness/runs/SCENARIO/KERNEL)",
                file.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a run record", file.display()))
    }
}

/// Judge a kept run again: the scenario's expectations and the model, as
/// they are now, against the observations the run kept.
pub fn rejudge(project: &Project, dir: &Path) -> Result<Verdict> {
    let record = RunRecord::read(dir)?;
    let copy = dir.join(SCENARIO_COPY);
    let text = std::fs::read_to_string(&copy)
        .with_context(|| format!("cannot read {}", copy.display()))?;
    // Named from the current directory where it can be, as `run` names it.
    let file = crate::project::shown_path(&project.root().join(&record.scenario_file));
    let scenario = parse(project, Path::new(&file), &text)?;
    let profile = Profile::from_record(&record.profile)
        .map_err(|why| anyhow::anyhow!("{}: {why}", dir.join(OBSERVATIONS).display()))?;
    let result = judge_kept(&scenario, &profile, &record);
    let failure = |err: &anyhow::Error| {
        Failure::from_error(
            err,
            dir.to_path_buf(),
            rerun_command(project, &scenario, &record.kernel),
        )
    };
    let mut verdict = Verdict::kept(&scenario.name, &record.kernel, dir);
    verdict.kernel_version = Some(record.kernel_version.clone());
    verdict.outcome = conclude(&scenario, Some(&profile), result, failure);
    Ok(verdict)
}

fn judge_kept(scenario: &Scenario, profile: &Profile, record: &RunRecord) -> Result<()> {
    let steps = &scenario.steps[..record.steps_planned.min(scenario.steps.len())];
    let follower = scenario
        .model
        .as_ref()
        .map(|defs| Follower::new(defs.clone(), profile, None));
    let limit = Duration::from_millis(record.transition_limit_ms);
    let mut judge = Judge::new(scenario, follower, limit, record.command_line.clone());
    for (index, step) in steps.iter().enumerate() {
        let prediction = judge
            .predict(step)
            .map_err(|err| StepError::at(step, err))?;
        let Some(observation) = record.steps.get(index) else {
            bail!(
                "the kept run has no observation of step {} ({}): it was cut short",
                step.label,
                step.position
            );
        };
        judge
            .step(step, observation, prediction, &mut String::new())
            .map_err(|err| StepError::at(step, err))?;
    }
    match &record.end {
        Some(end) => judge.end(end),
        None => bail!("the kept run has no observation of the guest after its last step"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scenario::verdict::Outcome;
    use std::path::PathBuf;

    pub(crate) fn project() -> Project {
        Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
    }

    /// Runs kept from live runs on debian-6.12: their observations, the
    /// scenario's text, and the verdict the live run gave.
    pub(crate) fn kept(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/runs")
            .join(name)
    }

    fn live_verdict(dir: &Path) -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join("verdict.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The result word, the failure's step label and message, and the
    /// known bug's row, as verdict.json writes them.
    fn summary(outcome: &Outcome) -> (&str, Option<String>, Option<String>, Option<&str>) {
        let failure = match outcome {
            Outcome::Fail(failure) => Some(failure),
            Outcome::KnownBug(bug) => Some(&bug.failure),
            _ => None,
        };
        let result = match outcome {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::NotApplicable(_) => "n/a",
            Outcome::KnownBug(_) => "known-bug",
        };
        let fix = match outcome {
            Outcome::KnownBug(bug) => Some(bug.fix.id),
            _ => None,
        };
        (
            result,
            failure.and_then(|f| f.step.as_ref().map(|s| s.label.clone())),
            failure.map(|f| f.message.clone()),
            fix,
        )
    }

    pub(crate) fn live_summary(
        dir: &Path,
    ) -> (String, Option<String>, Option<String>, Option<String>) {
        let live = live_verdict(dir);
        let failure = match live["result"].as_str() {
            Some("known-bug") => &live["known_bug"]["failure"],
            _ => &live["failure"],
        };
        let text = |value: &serde_json::Value| value.as_str().map(str::to_string);
        (
            live["result"].as_str().unwrap().to_string(),
            text(&failure["step"]["label"]),
            text(&failure["message"]),
            text(&live["known_bug"]["fix"]),
        )
    }

    pub(crate) fn outcome_summary(
        outcome: &Outcome,
    ) -> (String, Option<String>, Option<String>, Option<String>) {
        let (result, label, message, fix) = summary(outcome);
        (result.to_string(), label, message, fix.map(str::to_string))
    }

    #[test]
    fn kept_runs_are_judged_as_they_were_live() {
        for name in ["pass", "fail", "known-bug"] {
            let dir = kept(name);
            let verdict = rejudge(&project(), &dir).unwrap();
            assert_eq!(
                outcome_summary(&verdict.outcome),
                live_summary(&dir),
                "{name}"
            );
        }
    }

    #[test]
    fn a_changed_expectation_is_judged_against_what_was_seen() {
        let scratch = tempfile::tempdir().unwrap();
        for file in [OBSERVATIONS, SCENARIO_COPY] {
            std::fs::copy(kept("pass").join(file), scratch.path().join(file)).unwrap();
        }
        let scenario = scratch.path().join(SCENARIO_COPY);
        let text = std::fs::read_to_string(&scenario).unwrap();
        let wrong = text.replacen("klp_cumul_v1b f1=v1", "klp_cumul_v1b f1=v9", 1);
        assert_ne!(text, wrong, "the kept scenario expects the target's status");
        std::fs::write(&scenario, wrong).unwrap();
        let verdict = rejudge(&project(), scratch.path()).unwrap();
        let Outcome::Fail(failure) = verdict.outcome else {
            panic!("expected a failure, got {:?}", verdict.outcome);
        };
        assert_eq!(failure.expected.as_deref(), Some("klp_cumul_v1b f1=v9"));
        assert_eq!(failure.found.as_deref(), Some("klp_cumul_v1b f1=v1"));
    }

    #[test]
    fn a_directory_without_observations_is_named() {
        let scratch = tempfile::tempdir().unwrap();
        let err = format!("{:#}", rejudge(&project(), scratch.path()).unwrap_err());
        assert!(
            err.contains("observations.json")
                && err.contains("expected the directory of a scenario run"),
            "{err}"
        );
    }
}
