//! scenario ──> steps ──> observations ──> verdict, in one booted guest.

use super::follow::Follower;
use super::format::{FeatureState, PatchState};
use super::header::EXPECTED_TAINT;
use super::load::Scenario;
use super::observe;
use super::step::{Action, CheckedStep, Kind};
use super::verdict::{FailedStep, Mismatch, StepError};
use crate::errno;
use crate::fixture;
use crate::guest::Guest;
use crate::kernel::behaviour::Profile;
use crate::model::Response;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// In an expected file's content, the command line the guest's kernel
/// booted with (it differs between architectures: the console).
pub const KERNEL_COMMAND_LINE: &str = "{kernel_command_line}";

/// Limits that keep a stuck guest from stalling a run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub transition: Duration,
}

/// Printed by a step's command when the transition did not end in time.
const STILL_RUNNING: &str = "@@klp-harness: transition still running@@";

pub struct Settings {
    pub limits: Limits,
    /// Where the sysfs snapshot after each step goes.
    pub snapshots: PathBuf,
    /// The reference model, for scenarios with steps that follow it.
    pub follower: Option<Follower>,
}

impl Settings {
    pub fn new(artifacts: &Path) -> Self {
        Self {
            limits: Limits {
                transition: super::Timeouts::from_env().transition,
            },
            snapshots: artifacts.join("snapshots"),
            follower: None,
        }
    }

    /// Follow the scenario with the reference model, if it asks for that.
    pub fn follow(mut self, scenario: &Scenario, profile: &Profile) -> Self {
        if let Some(defs) = &scenario.model {
            self.follower = Some(Follower::new(defs.clone(), profile, None));
        }
        self
    }
}

/// Run the steps; the first unmet expectation ends the scenario.
pub fn run_steps(
    guest: &mut Guest,
    scenario: &Scenario,
    steps: &[CheckedStep],
    mut settings: Settings,
    trace: &mut String,
) -> Result<()> {
    let limits = settings.limits;
    std::fs::create_dir_all(&settings.snapshots)?;
    // Transitions started without a wait: module ──> what the kernel has
    // logged since.
    let mut open = BTreeMap::new();
    for (order, step) in steps.iter().enumerate() {
        let _ = writeln!(
            trace,
            "== step {} ({}): {}",
            step.label, step.position, step.action
        );
        let mut snapshot = None;
        let mut step_log = String::new();
        let earlier_log = match step.action.kind {
            Kind::Wait => open.remove(&fixture::module_name(&step.action.operand)),
            _ => None,
        };
        let result = run_step(
            guest,
            step,
            StepContext {
                limits,
                allowed_log: &scenario.allow.log,
                follower: settings.follower.as_mut(),
                earlier_log: earlier_log.as_deref().unwrap_or_default(),
            },
            trace,
            (&mut snapshot, &mut step_log),
        );
        record_open_transitions(&mut open, step, &step_log);
        // A step that failed early has none yet; the guest may be gone.
        let snapshot = match snapshot {
            Some(taken) => taken,
            None => guest
                .run(observe::SNAPSHOT_COMMAND)
                .map(|r| r.output)
                .unwrap_or_else(|err| format!("no snapshot: {err:#}\n")),
        };
        // Run order first, so that a listing sorts; then the step's label.
        let file = settings
            .snapshots
            .join(format!("{:03}-step-{}.txt", order + 1, step.label));
        std::fs::write(&file, snapshot)?;
        result.map_err(|error| StepError {
            step: FailedStep {
                label: step.label.clone(),
                action: step.action.to_string(),
                position: step.position.clone(),
            },
            error,
        })?;
    }
    // Boot messages belong to no step; look at the whole console once more.
    let log = guest.vm.console.text();
    if let Some(line) = observe::kernel_splat(&log, &scenario.allow.log) {
        bail!(
            "{}: the kernel logged a warning or crash: {line}",
            scenario.file.display()
        );
    }
    let tainted = guest.run_ok("cat /proc/sys/kernel/tainted")?;
    let unexpected: String = observe::taint_flags(tainted.trim())?
        .into_iter()
        .filter(|flag| !EXPECTED_TAINT.contains(flag) && !scenario.allow.taint.contains(flag))
        .collect();
    if !unexpected.is_empty() {
        bail!(
            "{}: the kernel is tainted {unexpected} (/proc/sys/kernel/tainted = {}); \
             expected no flags beyond {} unless the scenario lists them under allow: taint",
            scenario.file.display(),
            tainted.trim(),
            EXPECTED_TAINT.iter().collect::<String>()
        );
    }
    Ok(())
}

/// What a step runs with besides the guest.
struct StepContext<'a> {
    limits: Limits,
    allowed_log: &'a [String],
    follower: Option<&'a mut Follower>,
    /// For a `wait`: what the kernel logged since its transition started,
    /// which its `log` and `not_logged` expectations cover too. klp's
    /// retry may complete the transition during an earlier step (a
    /// `release`), or while the harness is between steps.
    earlier_log: &'a str,
}

/// Keep what each transition started without a wait has logged so far.
fn record_open_transitions(open: &mut BTreeMap<String, String>, step: &CheckedStep, log: &str) {
    for logged in open.values_mut() {
        logged.push_str(log);
    }
    let starts = match step.action.kind {
        Kind::Load | Kind::Disable => !step.wait_transition && step.expected_errno.is_none(),
        Kind::Reverse => step.expected_errno.is_none(),
        _ => false,
    };
    if starts {
        open.insert(fixture::module_name(&step.action.operand), log.to_string());
    }
}

fn run_step(
    guest: &mut Guest,
    step: &CheckedStep,
    context: StepContext,
    trace: &mut String,
    (snapshot, step_log): (&mut Option<String>, &mut String),
) -> Result<()> {
    let StepContext {
        mut limits,
        allowed_log,
        mut follower,
        earlier_log,
    } = context;
    if let Some(within) = step.within {
        limits.transition = within;
    }
    let prediction = match follower.as_deref_mut() {
        Some(follower) => follower.predict(step)?,
        None => None,
    };
    let mut command = guest_command(&step.action, limits);
    // Waiting for the transition goes into the same command: one round
    // trip. A loaded plain module has no directory under livepatch/.
    let waits_for = match step.action.kind {
        Kind::Load | Kind::Disable if step.wait_transition && step.expected_errno.is_none() => {
            Some(fixture::module_name(&step.action.operand))
        }
        _ => None,
    };
    if let Some(name) = &waits_for {
        let wait = observe::wait_transition_command(name, limits.transition);
        command = format!(
            "{command} && if [ -d /sys/kernel/livepatch/{name} ]; then {wait} || echo {STILL_RUNNING}; fi"
        );
    }
    let result = guest.run(&command)?;
    let _ = writeln!(
        trace,
        "$ {command}\n{}[status {}]",
        result.output, result.status
    );
    match (&step.expected_errno, result.status) {
        (None, 0) => {
            if let Some(name) = waits_for.filter(|_| result.output.contains(STILL_RUNNING)) {
                bail!(
                    "transition of {name} still running after {:?}",
                    limits.transition
                );
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
    if let Some(prediction) = prediction.as_ref().filter(|_| step.follow_model) {
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
    // The sysfs snapshot rides along with the kernel log sync.
    let (log, taken) = guest.kernel_log_since_last_and(observe::SNAPSHOT_COMMAND)?;
    *snapshot = Some(taken.clone());
    trace.push_str(&log);
    step_log.push_str(&log);
    if let Some(line) = observe::kernel_splat(&log, allowed_log) {
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
    let window = match earlier_log.is_empty() {
        true => Window::Step,
        false => Window::Transition,
    };
    check_expectations(guest, step, &format!("{earlier_log}{log}"), window)?;
    match (prediction.filter(|_| step.follow_model), follower) {
        (Some(prediction), Some(follower)) if prediction.settled => follower.check_files(&taken),
        (Some(_), Some(_)) => {
            trace.push_str(
                "(sysfs not compared with the model: a transition may end at any moment)\n",
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The guest shell command that performs an action.
fn guest_command(action: &Action, limits: Limits) -> String {
    // Steps name fixtures by file; the kernel knows them by module name.
    let module = fixture::module_name(&action.operand);
    let livepatch = format!("/sys/kernel/livepatch/{module}");
    let target = crate::fixture::target::SYSFS_DIR;
    match action.kind {
        Kind::Load => format!("insmod /klp/{}.ko", action.operand),
        Kind::Disable => format!("echo 0 > {livepatch}/enabled"),
        Kind::Unload => format!("rmmod {module}"),
        Kind::Wait => observe::wait_transition_command(&module, limits.transition),
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

fn check_expectations(
    guest: &mut Guest,
    step: &CheckedStep,
    log: &str,
    window: Window,
) -> Result<()> {
    let expect = &step.expect;
    if let Some(expected) = &expect.patches {
        let found = observe::patch_stack(guest)?;
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
        let found = observe::patch_state(guest, name, &objects)?;
        check_patch_state(name, &expected.value, &found)?;
    }
    for (file, expected) in &expect.target {
        let found = guest.run(&format!("cat /sys/kernel/klp_target/{file}"))?;
        let found = found.output.trim_end_matches('\n');
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
            .replace(KERNEL_COMMAND_LINE, &guest.vm.command_line);
        let found = guest.run(&format!("cat {}", shell_quote(path)))?;
        let found = found.output.trim_end_matches('\n');
        if found != wanted {
            return Err(Mismatch::new(path, &wanted, found).quoted().into());
        }
    }
    for (id, expected) in &expect.features {
        let found = observe::feature_state(guest, *id)?;
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

/// Single-quote for the guest shell.
pub(super) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_sees_what_its_transition_logged_since_it_started() {
        let project =
            crate::project::Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let text = "description: d\nfixtures: [klp_target, klp_cumul_v1]\nsteps:\n\
                    \x20 - load: klp_target\n\
                    \x20 - park: klp_target\n\
                    \x20 - load: klp_cumul_v1\n    wait_transition: false\n\
                    \x20 - release: klp_target\n\
                    \x20 - wait: klp_cumul_v1\n";
        let scenario = super::super::parse(&project, Path::new("s.yaml"), text).unwrap();
        let mut open = BTreeMap::new();
        for (step, log) in scenario.steps.iter().zip(["a\n", "b\n", "c\n", "d\n"]) {
            record_open_transitions(&mut open, step, log);
        }
        // Started at the third step; the release's lines belong to it too.
        assert_eq!(open.get("klp_cumul_v1").map(String::as_str), Some("c\nd\n"));
        assert_eq!(open.len(), 1);
    }

    #[test]
    fn reversing_a_missing_patch_fails_without_ending_the_shell() {
        let action = Action::new(Kind::Reverse, String::from("klp_not_loaded_anywhere"));
        let limits = Limits {
            transition: std::time::Duration::from_secs(1),
        };
        let script = format!("{}; echo status $?", guest_command(&action, limits));
        let output = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(text.contains("status 1"), "{text}");
        assert_eq!(errno::from_message(&text), Some("ENOENT"), "{text}");
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

    #[test]
    fn quotes_survive_the_shell() {
        assert_eq!(shell_quote("echo 'hi'"), r"'echo '\''hi'\'''");
    }
}
