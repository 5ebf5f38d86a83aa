//! scenario ──> steps ──> observations ──> verdict, in one booted guest:
//! each step is run and observed, then judged from its observation alone.

use super::follow::Follower;
use super::judge::{self, Judge, STILL_RUNNING};
use super::load::Scenario;
use super::observe::{self, Observation};
use super::record::RunRecord;
use super::step::{Action, CheckedStep, Kind};
use super::verdict::StepError;
use crate::fixture;
use crate::guest::livepatch;
use crate::guest::{shell_quote, Link};
use crate::kernel::behaviour::Profile;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Settings {
    /// The bound on a transition, unless a step has its own.
    pub transition_limit: Duration,
    /// Where the run's logs go: the listing after each step under
    /// `listings/`, and the observations (`observations.json`).
    pub artifacts: PathBuf,
    /// The reference model, for scenarios with steps that follow it.
    pub follower: Option<Follower>,
    /// Kept with the observations, so that `rejudge` can judge them again.
    pub record: Option<RunRecord>,
}

impl Settings {
    pub fn new(artifacts: &Path, transition_limit: Duration) -> Self {
        Self {
            transition_limit,
            artifacts: artifacts.to_path_buf(),
            follower: None,
            record: None,
        }
    }

    /// Follow the scenario with the reference model, if it asks for that.
    pub fn follow(mut self, scenario: &Scenario, profile: &Profile) -> Self {
        if let Some(defs) = &scenario.model {
            self.follower = Some(Follower::new(defs.clone(), profile, None));
        }
        self
    }

    /// Keep the observations in `observations.json`, with what judging
    /// them again needs.
    pub fn keep(mut self, record: RunRecord) -> Self {
        self.record = Some(record);
        self
    }
}

/// Run the steps; the first unmet expectation ends the scenario.
pub fn run_steps(
    link: &mut dyn Link,
    scenario: &Scenario,
    steps: &[CheckedStep],
    mut settings: Settings,
    trace: &mut String,
) -> Result<()> {
    let listings = settings.artifacts.join("listings");
    std::fs::create_dir_all(&listings)?;
    let mut judge = Judge::new(
        scenario,
        settings.follower.take(),
        settings.transition_limit,
        link.command_line(),
    );
    let result = run_and_judge(link, steps, &mut judge, &listings, &mut settings, trace);
    let result = result.and_then(|()| {
        let end = observe::observe_end(link);
        let judged = judge.end(&end);
        if let Some(record) = settings.record.as_mut() {
            record.end = Some(end);
        }
        judged
    });
    if let Some(record) = &settings.record {
        record.write(&settings.artifacts)?;
    }
    result
}

fn run_and_judge(
    link: &mut dyn Link,
    steps: &[CheckedStep],
    judge: &mut Judge,
    listings: &Path,
    settings: &mut Settings,
    trace: &mut String,
) -> Result<()> {
    for (order, step) in steps.iter().enumerate() {
        let _ = writeln!(
            trace,
            "== step {} ({}): {}",
            step.label, step.position, step.action
        );
        let failed = |error| StepError::at(step, error);
        let prediction = judge.predict(step).map_err(failed)?;
        let command = step_command(step, judge.transition_limit(step));
        let mut observation = observe::observe(link, &command, &judge::reads_for(step));
        if observation.lost.is_some() && observation.listing.is_empty() {
            // The guest may be gone; what sysfs showed is still worth a try.
            observation.listing = link
                .run(livepatch::LISTING_COMMAND)
                .map(|r| r.output)
                .unwrap_or_else(|err| format!("no listing: {err:#}\n"));
        }
        trace_observation(trace, &observation);
        // Run order first, so that a listing sorts; then the step's label.
        let file = listings.join(format!("{:03}-step-{}.txt", order + 1, step.label));
        std::fs::write(&file, &observation.listing)?;
        let mut notes = String::new();
        let judged = judge.step(step, &observation, prediction, &mut notes);
        trace.push_str(&notes);
        if let Some(record) = settings.record.as_mut() {
            record.steps.push(observation);
        }
        judged.map_err(failed)?;
    }
    Ok(())
}

/// steps.log's lines for one step: the command, its output and status,
/// and the kernel messages it caused.
pub fn trace_observation(trace: &mut String, observation: &Observation) {
    match &observation.result {
        Some(result) => {
            let _ = writeln!(
                trace,
                "$ {}\n{}[status {}]",
                observation.command, result.output, result.status
            );
        }
        None => {
            let _ = writeln!(trace, "$ {}\n[no answer]", observation.command);
        }
    }
    trace.push_str(&observation.log);
}

/// The guest shell command of a step: its action, and for a load or
/// disable that waits, the wait in the same round trip (a loaded plain
/// module has no directory under livepatch/).
fn step_command(step: &CheckedStep, transition_limit: Duration) -> String {
    let command = guest_command(&step.action, transition_limit);
    match judge::waits_for(step) {
        Some(name) => {
            let wait = livepatch::wait_transition_command(&name, transition_limit);
            format!(
                "{command} && if [ -d /sys/kernel/livepatch/{name} ]; then {wait} || echo {STILL_RUNNING}; fi"
            )
        }
        None => command,
    }
}

/// The guest shell command that performs an action.
fn guest_command(action: &Action, transition_limit: Duration) -> String {
    // Steps name fixtures by file; the kernel knows them by module name.
    let module = fixture::module_name(&action.operand);
    let livepatch = format!("/sys/kernel/livepatch/{module}");
    let target = crate::fixture::target::SYSFS_DIR;
    match action.kind {
        Kind::Load => format!("insmod /klp/{}.ko", action.operand),
        Kind::Disable => format!("echo 0 > {livepatch}/enabled"),
        Kind::Unload => format!("rmmod {module}"),
        Kind::Wait => livepatch::wait_transition_command(&module, transition_limit),
        Kind::Run => format!("sh -c {}", shell_quote(&action.operand)),
        // In a transition `enabled` already shows the target state.
        // The guest's init shell runs this: a failed arithmetic expansion
        // would end it, and the guest with it, so a missing file stops at cat.
        Kind::Reverse => format!("f={livepatch}/enabled; v=$(cat $f) && echo $((1 - v)) > $f"),
        Kind::Force => format!("echo 1 > {livepatch}/force"),
        Kind::Write => format!(
            "echo {} > {}",
            shell_quote(action.value.as_deref().unwrap_or_default()),
            shell_quote(&action.operand)
        ),
        Kind::Park => format!("echo 1 > {target}/park"),
        Kind::Release => format!("echo 0 > {target}/park"),
        Kind::Spin => format!("echo 1 > {target}/spin"),
        Kind::StopSpin => format!("echo 0 > {target}/spin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::CommandResult;
    use crate::scenario::record::tests::{kept, live_summary, outcome_summary, project};
    use crate::scenario::record::{OBSERVATIONS, SCENARIO_COPY};
    use crate::scenario::verdict::{conclude, Failure};

    /// A kept run played back as the guest: each command must be the one
    /// the live run sent, and gets the answer the live guest gave.
    struct Transcript {
        record: RunRecord,
        next: usize,
    }

    impl Link for Transcript {
        fn run(&mut self, command: &str) -> Result<CommandResult> {
            let Some(observation) = self.record.steps.get(self.next) else {
                let end = self.record.end.as_ref().expect("the run ended");
                assert_eq!(command, "cat /proc/sys/kernel/tainted");
                let tainted = end.tainted.clone().map_err(anyhow::Error::msg)?;
                return Ok(CommandResult {
                    status: 0,
                    output: tainted + "\n",
                });
            };
            assert_eq!(command, observation.command, "step {}", self.next + 1);
            observation
                .result
                .clone()
                .ok_or_else(|| anyhow::anyhow!("{}", observation.lost.clone().unwrap_or_default()))
        }

        fn kernel_log_since_last_and(&mut self, also: &str) -> Result<(String, String)> {
            let observation = &self.record.steps[self.next];
            self.next += 1;
            assert!(also.starts_with(livepatch::LISTING_COMMAND), "{also}");
            let mut reads: Vec<(&String, &String)> = observation.reads.iter().collect();
            reads.sort_by_key(|(path, _)| also.find(&shell_quote(path)));
            let mut output = observation.listing.clone();
            for (_, content) in reads {
                output.push_str(&format!(
                    "@@klp-harness read@@\n{content}@@klp-harness end@@\n"
                ));
            }
            Ok((observation.log.clone(), output))
        }

        fn console(&self) -> String {
            self.record
                .end
                .as_ref()
                .map(|end| end.console.clone())
                .unwrap_or_default()
        }

        fn command_line(&self) -> String {
            self.record.command_line.clone()
        }
    }

    #[test]
    fn steps_run_on_a_transcript_see_and_judge_what_the_live_run_did() {
        let project = project();
        for name in ["pass", "fail", "known-bug"] {
            let dir = kept(name);
            let record = RunRecord::read(&dir).unwrap();
            let text = std::fs::read_to_string(dir.join(SCENARIO_COPY)).unwrap();
            let file = project.root().join(&record.scenario_file);
            let scenario = crate::scenario::parse(&project, &file, &text).unwrap();
            let profile = Profile::from_record(&record.profile).unwrap();
            let out = tempfile::tempdir().unwrap();
            let limit = Duration::from_millis(record.transition_limit_ms);
            let kept_record = RunRecord {
                steps: Vec::new(),
                end: None,
                ..record.clone()
            };
            let settings = Settings::new(out.path(), limit)
                .follow(&scenario, &profile)
                .keep(kept_record);
            let mut transcript = Transcript {
                record: record.clone(),
                next: 0,
            };
            let result = run_steps(
                &mut transcript,
                &scenario,
                &scenario.steps,
                settings,
                &mut String::new(),
            );
            let outcome = conclude(&scenario, Some(&profile), result, |err| {
                Failure::from_error(err, dir.clone(), String::new())
            });
            assert_eq!(outcome_summary(&outcome), live_summary(&dir), "{name}");
            // It observed what the live run did, step by step.
            assert_eq!(RunRecord::read(out.path()).unwrap(), record, "{name}");
            assert!(out.path().join(OBSERVATIONS).is_file());
        }
    }

    #[test]
    fn reversing_a_missing_patch_fails_without_ending_the_shell() {
        let action = Action::new(Kind::Reverse, String::from("klp_not_loaded_anywhere"));
        let limit = std::time::Duration::from_secs(1);
        let script = format!("{}; echo status $?", guest_command(&action, limit));
        let output = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(text.contains("status 1"), "{text}");
        assert_eq!(crate::errno::from_message(&text), Some("ENOENT"), "{text}");
    }
}
