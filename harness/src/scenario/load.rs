//! Reading and checking a scenario before any VM starts: every mistake is
//! reported with file:line:column and what was expected.

use super::model::{Allow, ScenarioFile, Step};
use crate::errno;
use crate::fixture::target::MODULE as TARGET;
use crate::fixture::{self, ExternalDir, Fixture, FixtureSource};
use crate::kernel::features;
use crate::project::Project;
use crate::yaml::{Position, Spanned};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ACTIONS: &str = "load, disable, unload, wait, reverse, force, run, write, park, release";

/// A checked scenario.
#[derive(Debug)]
pub struct Scenario {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    /// Coverage rules it checks, e.g. ["R2", "R4"].
    pub rules: Vec<String>,
    pub kernels: Option<Vec<String>>,
    pub requires: Requirements,
    pub fixtures: Vec<Fixture>,
    /// Some fixture is built from the kernel's own source tree.
    pub needs_kernel_source: bool,
    /// Steps in the order they run, repeat blocks unrolled.
    pub steps: Vec<CheckedStep>,
    pub allow: Allowances,
    /// The fixtures as the reference model knows them, when some step
    /// follows the model.
    pub model: Option<crate::model::Defs>,
    /// Boot rather than start from a saved guest state.
    pub fresh_boot: bool,
}

/// Kernel log lines and taint flags a scenario tolerates.
#[derive(Debug, Default)]
pub struct Allowances {
    pub taint: Vec<char>,
    pub log: Vec<String>,
}

/// Taint flags any livepatch test sets: K (livepatch), O (built outside
/// the kernel tree: every fixture is), E (unsigned module).
pub const EXPECTED_TAINT: &[char] = &['K', 'O', 'E'];

/// Rules of the coverage suite, R1 to R14 (README.md, "Rules").
pub const RULES: u32 = 14;

/// A step's number as the trace and messages show it: `4`, or `4[2].1` for
/// the first step of a repeat block's second round.
pub type StepLabel = String;

/// A scenario's checked `requires`.
#[derive(Debug, Default)]
pub struct Requirements {
    pub min_version: Option<String>,
    pub sysfs: Vec<String>,
}

#[derive(Debug)]
pub struct CheckedStep {
    pub label: StepLabel,
    pub position: Position,
    pub action: Action,
    pub expected_errno: Option<String>,
    pub wait_transition: bool,
    /// Checked against the reference model.
    pub follow_model: bool,
    pub expect: super::model::Expect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Load(String),
    Disable(String),
    Unload(String),
    Wait(String),
    Reverse(String),
    Force(String),
    Run(String),
    Write { path: String, value: String },
    Park(String),
    Release(String),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Load(name) => write!(f, "load {name}"),
            Action::Disable(name) => write!(f, "disable {name}"),
            Action::Unload(name) => write!(f, "unload {name}"),
            Action::Wait(name) => write!(f, "wait {name}"),
            Action::Reverse(name) => write!(f, "reverse {name}"),
            Action::Force(name) => write!(f, "force {name}"),
            Action::Run(command) => write!(f, "run `{command}`"),
            Action::Write { path, value } => write!(f, "write {value:?} to {path}"),
            Action::Park(name) => write!(f, "park {name}"),
            Action::Release(name) => write!(f, "release {name}"),
        }
    }
}

/// Scenario name: its path under scenarios/ without `.yaml`, or the file
/// stem for a scenario kept elsewhere.
pub fn scenario_name(project: &Project, file: &Path) -> String {
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    match absolute.strip_prefix(project.scenarios_dir()) {
        Ok(relative) => relative.with_extension("").to_string_lossy().into_owned(),
        Err(_) => file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
    }
}

/// The directory of fixture specs that belong to one scenario file.
pub fn local_fixtures_dir(scenario_file: &Path) -> PathBuf {
    scenario_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(LOCAL_FIXTURES)
}

const LOCAL_FIXTURES: &str = "fixtures";

/// Every scenario file under scenarios/, sorted (fixture specs kept
/// beside scenarios are not scenarios).
pub fn scenario_files(project: &Project) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(project.scenarios_dir()).sort_by_file_name();
    for entry in walk
        .into_iter()
        .filter_entry(|entry| !(entry.file_type().is_dir() && entry.file_name() == LOCAL_FIXTURES))
    {
        let entry = entry?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "yaml") {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

pub fn load(project: &Project, file: &Path) -> Result<Scenario> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", file.display()))?;
    parse(project, file, &text)
}

pub fn parse(project: &Project, file: &Path, text: &str) -> Result<Scenario> {
    let raw: ScenarioFile = crate::yaml::parse_str(file, text)?;
    let at = |spanned_location: &crate::yaml::Location| Position::new(file, spanned_location);

    let kernels = match &raw.kernels {
        None => None,
        Some(names) => {
            let known: Vec<String> = crate::kernel::list(project)?
                .into_iter()
                .map(|spec| spec.name)
                .collect();
            for name in names {
                if !known.contains(&name.value) {
                    bail!(
                        "{}: unknown kernel {:?}; expected one of: {}",
                        at(&name.referenced),
                        name.value,
                        known.join(", ")
                    );
                }
            }
            Some(names.iter().map(|name| name.value.clone()).collect())
        }
    };

    let mut rules = Vec::new();
    for rule in &raw.rules {
        let number: Option<u32> = rule.value.strip_prefix('R').and_then(|n| n.parse().ok());
        if !number.is_some_and(|n| (1..=RULES).contains(&n)) {
            bail!(
                "{}: unknown rule {:?}; expected R1 to R{RULES}",
                at(&rule.referenced),
                rule.value
            );
        }
        rules.push(rule.value.clone());
    }

    let mut requires = Requirements::default();
    if let Some(version) = &raw.requires.min_version {
        if let Err(err) = features::parse_version(&version.value) {
            bail!("{}: {err}", at(&version.referenced));
        }
        requires.min_version = Some(version.value.clone());
    }
    for attribute in &raw.requires.sysfs {
        if features::attribute_since(&attribute.value).is_none() {
            let known: Vec<&str> = features::SYSFS_ATTRIBUTES
                .iter()
                .map(|(name, _)| *name)
                .collect();
            bail!(
                "{}: unknown livepatch sysfs attribute {:?}; expected one of: {}",
                at(&attribute.referenced),
                attribute.value,
                known.join(", ")
            );
        }
        requires.sysfs.push(attribute.value.clone());
    }

    // A scenario may carry fixture specs of its own in a fixtures/
    // directory beside it (as `explore` writes them); they come first.
    let local_dir = local_fixtures_dir(file);
    let local = match local_dir.is_dir() {
        true => fixture::names_in(&local_dir)?,
        false => Vec::new(),
    };
    let mut available = fixture::names(project)?;
    available.extend(local.iter().cloned());
    let mut fixtures = Vec::new();
    for name in &raw.fixtures {
        if !available.contains(&name.value) {
            bail!(
                "{}: unknown fixture {:?}; expected one of: {}",
                at(&name.referenced),
                name.value,
                available.join(", ")
            );
        }
        fixtures.push(match local.contains(&name.value) {
            true => fixture::find_in(&local_dir, &name.value)?,
            false => fixture::find(project, &name.value)?,
        });
    }
    let mut needs_kernel_source = false;
    for external in &raw.external {
        let position = at(&external.referenced);
        let external = &external.value;
        let dir = match external.dir.strip_prefix("kernel:") {
            Some(inside) => {
                needs_kernel_source = true;
                ExternalDir::InKernel(inside.into())
            }
            None => {
                let dir = file.parent().unwrap_or(Path::new(".")).join(&external.dir);
                if !dir.is_dir() {
                    bail!("{position}: external dir {} does not exist", dir.display());
                }
                ExternalDir::Path(dir)
            }
        };
        if external.modules.is_empty() {
            bail!("{position}: external {:?} lists no modules; expected the .ko names its build makes", external.dir);
        }
        for module in &external.modules {
            if fixtures.iter().any(|f: &Fixture| f.name == *module) {
                bail!("{position}: module {module:?} is already a fixture of this scenario");
            }
            fixtures.push(Fixture {
                name: module.clone(),
                source: FixtureSource::External {
                    dir: dir.clone(),
                    make: external.make.clone(),
                },
            });
        }
    }

    if raw.steps.is_empty() {
        bail!("{}: a scenario needs at least one step", file.display());
    }
    let mut steps = Vec::new();
    let context = BlockContext {
        file,
        fixtures: &fixtures,
        follow_model: raw.follow_model,
    };
    check_steps(&context, raw.steps, "", &mut steps)?;
    check_order(&steps)?;
    let allow = check_allow(file, &raw.allow)?;
    let model = if steps.iter().any(|step| step.follow_model) {
        Some(super::follow::model_defs(&fixtures, &steps)?)
    } else {
        None
    };
    Ok(Scenario {
        name: scenario_name(project, file),
        file: file.to_path_buf(),
        description: raw.description,
        rules,
        kernels,
        requires,
        fixtures,
        needs_kernel_source,
        steps,
        allow,
        model,
        fresh_boot: raw.fresh_boot,
    })
}

fn check_allow(file: &Path, allow: &Allow) -> Result<Allowances> {
    let mut taint = Vec::new();
    for flag in &allow.taint {
        match flag.value.chars().collect::<Vec<_>>().as_slice() {
            [letter] if TAINT_FLAGS.contains(letter) => taint.push(*letter),
            _ => bail!(
                "{}: unknown taint flag {:?}; expected one letter of {}",
                Position::new(file, &flag.referenced),
                flag.value,
                TAINT_FLAGS.iter().collect::<String>()
            ),
        }
    }
    Ok(Allowances {
        taint,
        log: allow.log.iter().map(|line| line.value.clone()).collect(),
    })
}

/// Taint flags by bit (Documentation/admin-guide/tainted-kernels.rst).
pub const TAINT_FLAGS: &[char] = &[
    'P', 'F', 'S', 'R', 'M', 'B', 'U', 'D', 'A', 'W', 'C', 'I', 'O', 'E', 'L', 'K', 'X', 'T', 'N',
    'J',
];

/// Check the steps of one block and append them, unrolling repeat blocks.
/// What every step of a scenario is checked against.
struct BlockContext<'a> {
    file: &'a Path,
    fixtures: &'a [Fixture],
    /// The scenario's `follow_model`, which a step may override.
    follow_model: bool,
}

fn check_steps(
    context: &BlockContext,
    block: Vec<Spanned<Step>>,
    prefix: &str,
    out: &mut Vec<CheckedStep>,
) -> Result<()> {
    let file = context.file;
    for (index, mut step) in block.into_iter().enumerate() {
        let label = format!("{prefix}{}", index + 1);
        let position = Position::new(file, &step.referenced);
        match (step.value.repeat.take(), step.value.steps.take()) {
            (None, None) => out.push(check_step(context, step, label)?),
            (Some(count), Some(body)) => {
                if count.value == 0 {
                    bail!(
                        "{}: `repeat: 0` runs nothing; expected a count of 1 or more",
                        Position::new(file, &count.referenced)
                    );
                }
                if body.is_empty() {
                    bail!(
                        "{position}: `repeat` has no steps; expected a list of steps under `steps`"
                    );
                }
                if let Some(field) = step_action_fields(&step.value).first() {
                    bail!("{position}: a `repeat` step cannot also {field}; put it inside `steps`");
                }
                for round in 1..=count.value {
                    check_steps(context, body.clone(), &format!("{label}[{round}]."), out)?;
                }
            }
            (Some(count), None) => bail!(
                "{}: `repeat` needs `steps`, the block to repeat",
                Position::new(file, &count.referenced)
            ),
            (None, Some(_)) => {
                bail!("{position}: `steps` inside a step needs `repeat`, the number of rounds")
            }
        }
    }
    Ok(())
}

/// Names of the action fields set on a step.
fn step_action_fields(step: &Step) -> Vec<&'static str> {
    [
        ("load", step.load.is_some()),
        ("disable", step.disable.is_some()),
        ("unload", step.unload.is_some()),
        ("wait", step.wait.is_some()),
        ("reverse", step.reverse.is_some()),
        ("force", step.force.is_some()),
        ("run", step.run.is_some()),
        ("write", step.write.is_some()),
        ("park", step.park.is_some()),
        ("release", step.release.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// Reject step orders that cannot work: loading a module that is already
/// loaded, or acting on one that is not. A step expected to fail changes
/// nothing; `run` steps are not followed.
fn check_order(steps: &[CheckedStep]) -> Result<()> {
    let mut loaded: BTreeMap<&str, &Position> = BTreeMap::new();
    let mut unloaded_at: BTreeMap<&str, &Position> = BTreeMap::new();
    for step in steps {
        let succeeds = step.expected_errno.is_none();
        let at = &step.position;
        match &step.action {
            Action::Load(name) => {
                if let Some(before) = loaded.get(name.as_str()) {
                    if succeeds {
                        bail!("{at}: step {} loads {name}, which step at {before} already loaded; expected an `unload: {name}` between them, or `error: EEXIST`", step.label);
                    }
                } else if succeeds {
                    loaded.insert(name, at);
                }
            }
            Action::Unload(name)
            | Action::Disable(name)
            | Action::Wait(name)
            | Action::Reverse(name)
            | Action::Force(name)
            | Action::Park(name)
            | Action::Release(name) => {
                if !loaded.contains_key(name.as_str()) && succeeds {
                    let why = match unloaded_at.get(name.as_str()) {
                        Some(before) => format!("step at {before} unloaded it"),
                        None => "no earlier step loads it".to_string(),
                    };
                    bail!(
                        "{at}: step {} `{}` needs {name} loaded, but {why}; expected a `load: {name}` before it",
                        step.label,
                        step.action
                    );
                }
                if matches!(step.action, Action::Unload(_)) && succeeds {
                    loaded.remove(name.as_str());
                    unloaded_at.insert(name, at);
                }
            }
            Action::Run(_) | Action::Write { .. } => {}
        }
    }
    Ok(())
}

fn check_step(
    context: &BlockContext,
    step: Spanned<Step>,
    label: StepLabel,
) -> Result<CheckedStep> {
    let (file, fixtures) = (context.file, context.fixtures);
    let position = Position::new(file, &step.referenced);
    let step = step.value;
    type MakeAction = fn(String) -> Action;
    let candidates: Vec<(&Spanned<String>, MakeAction, bool)> = [
        (&step.load, Action::Load as MakeAction, false),
        (&step.disable, Action::Disable, true),
        (&step.unload, Action::Unload, false),
        (&step.wait, Action::Wait, true),
        (&step.reverse, Action::Reverse, true),
        (&step.force, Action::Force, true),
        (&step.run, Action::Run, false),
        (
            &step.write,
            |path| Action::Write {
                path,
                value: String::new(),
            },
            false,
        ),
        (&step.park, Action::Park, false),
        (&step.release, Action::Release, false),
    ]
    .into_iter()
    .filter_map(|(field, make, needs_livepatch)| field.as_ref().map(|f| (f, make, needs_livepatch)))
    .collect();
    let (target, make, needs_livepatch) = match candidates.as_slice() {
        [one] => *one,
        [] => bail!("{position}: step has no action; expected one of: {ACTIONS}, or repeat"),
        [_, second, ..] => bail!(
            "{}: step has more than one action; expected exactly one of: {ACTIONS}",
            Position::new(file, &second.0.referenced)
        ),
    };
    let mut action = make(target.value.clone());
    if let Action::Write { value, .. } = &mut action {
        let Some(given) = &step.value else {
            bail!("{position}: `write` needs a `value` to write");
        };
        *value = given.value.clone();
    } else if let Some(value) = &step.value {
        bail!(
            "{}: `value` belongs to a `write` step",
            Position::new(file, &value.referenced)
        );
    }
    if !matches!(action, Action::Run(_) | Action::Write { .. }) {
        let Some(fixture) = fixtures.iter().find(|f| f.name == target.value) else {
            bail!(
                "{}: {:?} is not among this scenario's fixtures ({})",
                Position::new(file, &target.referenced),
                target.value,
                fixtures
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if matches!(action, Action::Park(_) | Action::Release(_)) && fixture.name != TARGET {
            bail!(
                "{}: {:?} has no busy thread to park; expected {TARGET}",
                Position::new(file, &target.referenced),
                target.value
            );
        }
        if needs_livepatch && !fixture.is_livepatch() {
            bail!(
                "{}: {:?} is a plain module, not a livepatch; expected a livepatch fixture",
                Position::new(file, &target.referenced),
                target.value
            );
        }
    }
    if let Some(errno_name) = &step.error {
        if !errno::is_known(&errno_name.value) {
            bail!(
                "{}: unknown errno {:?}; expected one of: {}",
                Position::new(file, &errno_name.referenced),
                errno_name.value,
                errno::names().collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(CheckedStep {
        label,
        position,
        action,
        expected_errno: step.error.map(|e| e.value),
        wait_transition: step.wait_transition,
        follow_model: step.follow_model.map_or(context.follow_model, |f| f.value),
        expect: step.expect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
    }

    /// The error for `text`, which must be rejected.
    fn error_of(text: &str) -> String {
        let err = parse(&project(), Path::new("s.yaml"), text).expect_err("must be rejected");
        format!("{err:#}")
    }

    const HEAD: &str = "description: d\nfixtures: [klp_target, klp_cumul_v1]\nsteps:\n";

    #[test]
    fn unknown_step_key() {
        let err = error_of(&format!("{HEAD}  - load: klp_target\n    bogus: 1\n"));
        assert!(
            err.starts_with("s.yaml:5:5: unknown field `bogus`, expected one of load, disable"),
            "{err}"
        );
    }

    #[test]
    fn misspelt_top_level_key() {
        let err = error_of("description: d\nfixture: [klp_target]\nsteps: []\n");
        assert_eq!(err, "s.yaml:2:1: unknown field `fixture`, expected one of description, rules, kernels, requires, fixtures, external, steps, fresh_boot, follow_model, allow");
    }

    #[test]
    fn wrong_type() {
        let err = error_of("description: d\nfixtures: klp_target\nsteps: []\n");
        assert_eq!(err, "s.yaml:2:11: expected a list");
    }

    #[test]
    fn undefined_fixture() {
        let err = error_of("description: d\nfixtures: [klp_target, klp_nope]\nsteps: []\n");
        assert!(
            err.starts_with("s.yaml:2:24: unknown fixture \"klp_nope\"; expected one of: "),
            "{err}"
        );
        assert!(err.contains("klp_cumul_v1"), "{err}");
    }

    #[test]
    fn step_uses_fixture_not_declared() {
        let err = error_of(&format!("{HEAD}  - load: klp_cumul_v2\n"));
        assert!(
            err.starts_with("s.yaml:4:11: \"klp_cumul_v2\" is not among this scenario's fixtures"),
            "{err}"
        );
    }

    #[test]
    fn unknown_kernel() {
        let err = error_of("description: d\nkernels: [linux-0.01]\nfixtures: []\nsteps: []\n");
        assert!(
            err.starts_with("s.yaml:2:11: unknown kernel \"linux-0.01\"; expected one of: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_errno() {
        let err = error_of(&format!(
            "{HEAD}  - load: klp_cumul_v1\n    error: EWHATEVER\n"
        ));
        assert!(
            err.starts_with("s.yaml:5:12: unknown errno \"EWHATEVER\"; expected one of: EPERM"),
            "{err}"
        );
    }

    #[test]
    fn two_actions_in_one_step() {
        let err = error_of(&format!(
            "{HEAD}  - load: klp_target\n    unload: klp_target\n"
        ));
        assert!(
            err.starts_with("s.yaml:5:13: step has more than one action"),
            "{err}"
        );
    }

    #[test]
    fn step_without_action() {
        let err = error_of(&format!("{HEAD}  - error: EINVAL\n"));
        assert!(err.starts_with("s.yaml:4:5: step has no action"), "{err}");
    }

    #[test]
    fn disabling_a_plain_module() {
        let err = error_of(&format!("{HEAD}  - disable: klp_target\n"));
        assert!(
            err.starts_with("s.yaml:4:14: \"klp_target\" is a plain module, not a livepatch"),
            "{err}"
        );
    }

    #[test]
    fn unknown_patch_attribute() {
        let text = format!("{HEAD}  - load: klp_cumul_v1\n    expect:\n      patch:\n        klp_cumul_v1: {{enabeld: 1}}\n");
        let err = error_of(&text);
        assert!(
            err.starts_with(
                "s.yaml:7:24: unknown field `enabeld`, expected one of enabled, transition"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_sysfs_requirement() {
        let text = "description: d\nrequires: {sysfs: [stack_ordre]}\nfixtures: []\nsteps: []\n";
        let err = error_of(text);
        assert!(
            err.starts_with("s.yaml:2:20: unknown livepatch sysfs attribute \"stack_ordre\""),
            "{err}"
        );
    }

    #[test]
    fn malformed_min_version() {
        let err =
            error_of("description: d\nrequires: {min_version: six}\nfixtures: []\nsteps: []\n");
        assert!(
            err.starts_with("s.yaml:2:25: \"six\" is not a kernel version"),
            "{err}"
        );
    }

    #[test]
    fn external_dir_must_exist() {
        let text = "description: d\nfixtures: []\nexternal:\n  - {dir: no/such/dir, modules: [m]}\nsteps:\n  - load: m\n";
        let err = error_of(text);
        assert!(
            err.starts_with("s.yaml:4:5: external dir no/such/dir does not exist"),
            "{err}"
        );
    }

    #[test]
    fn external_needs_modules() {
        let text = "description: d\nfixtures: []\nexternal:\n  - {dir: 'kernel:samples/livepatch', modules: []}\nsteps:\n  - run: 'true'\n";
        let err = error_of(text);
        assert!(
            err.starts_with("s.yaml:4:5: external \"kernel:samples/livepatch\" lists no modules"),
            "{err}"
        );
    }

    #[test]
    fn no_steps() {
        assert_eq!(
            error_of("description: d\nfixtures: []\nsteps: []\n"),
            "s.yaml: a scenario needs at least one step"
        );
    }

    #[test]
    fn repeat_zero_times() {
        let err = error_of(&format!(
            "{HEAD}  - repeat: 0\n    steps:\n      - load: klp_target\n"
        ));
        assert!(
            err.starts_with("s.yaml:4:13: `repeat: 0` runs nothing; expected a count of 1 or more"),
            "{err}"
        );
    }

    #[test]
    fn repeat_without_steps() {
        let err = error_of(&format!("{HEAD}  - repeat: 2\n"));
        assert_eq!(
            err,
            "s.yaml:4:13: `repeat` needs `steps`, the block to repeat"
        );
    }

    #[test]
    fn repeat_with_an_action_of_its_own() {
        let err = error_of(&format!(
            "{HEAD}  - repeat: 2\n    load: klp_target\n    steps:\n      - unload: klp_target\n"
        ));
        assert!(
            err.starts_with("s.yaml:4:5: a `repeat` step cannot also load"),
            "{err}"
        );
    }

    #[test]
    fn repeated_load_without_unload_is_caught_in_round_two() {
        let err = error_of(&format!(
            "{HEAD}  - repeat: 3\n    steps:\n      - load: klp_target\n"
        ));
        assert!(
            err.starts_with(
                "s.yaml:6:9: step 1[2].1 loads klp_target, which step at s.yaml:6:9 already loaded"
            ),
            "{err}"
        );
    }

    #[test]
    fn repeat_unrolls_with_labels() {
        let text = format!(
            "{HEAD}  - load: klp_target\n  - repeat: 2\n    steps:\n      - load: klp_cumul_v1\n      - disable: klp_cumul_v1\n      - unload: klp_cumul_v1\n"
        );
        let scenario = parse(&project(), Path::new("s.yaml"), &text).unwrap();
        let labels: Vec<&str> = scenario.steps.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            ["1", "2[1].1", "2[1].2", "2[1].3", "2[2].1", "2[2].2", "2[2].3"]
        );
    }

    #[test]
    fn unloading_what_was_never_loaded() {
        let err = error_of(&format!("{HEAD}  - unload: klp_cumul_v1\n"));
        assert!(
            err.starts_with("s.yaml:4:5: step 1 `unload klp_cumul_v1` needs klp_cumul_v1 loaded, but no earlier step loads it"),
            "{err}"
        );
    }

    #[test]
    fn disabling_after_unload() {
        let err = error_of(&format!(
            "{HEAD}  - load: klp_cumul_v1\n  - unload: klp_cumul_v1\n  - disable: klp_cumul_v1\n"
        ));
        assert!(
            err.starts_with("s.yaml:6:5: step 3 `disable klp_cumul_v1` needs klp_cumul_v1 loaded, but step at s.yaml:5:5 unloaded it"),
            "{err}"
        );
    }

    #[test]
    fn a_load_expected_to_fail_loads_nothing() {
        let text =
            format!("{HEAD}  - load: klp_cumul_v1\n    error: EINVAL\n  - unload: klp_cumul_v1\n");
        let err = error_of(&text);
        assert!(
            err.starts_with("s.yaml:6:5: step 2 `unload klp_cumul_v1` needs"),
            "{err}"
        );
    }

    #[test]
    fn parking_a_module_without_a_busy_thread() {
        let err = error_of(&format!(
            "{HEAD}  - load: klp_cumul_v1\n  - park: klp_cumul_v1\n"
        ));
        assert!(
            err.starts_with(
                "s.yaml:5:11: \"klp_cumul_v1\" has no busy thread to park; expected klp_target"
            ),
            "{err}"
        );
    }

    #[test]
    fn parking_before_the_target_is_loaded() {
        let err = error_of(&format!("{HEAD}  - park: klp_target\n"));
        assert!(
            err.starts_with("s.yaml:4:5: step 1 `park klp_target` needs klp_target loaded"),
            "{err}"
        );
    }

    #[test]
    fn unknown_taint_flag() {
        let err = error_of(
            "description: d\nallow: {taint: [WX]}\nfixtures: []\nsteps:\n  - run: 'true'\n",
        );
        assert!(
            err.starts_with("s.yaml:2:17: unknown taint flag \"WX\"; expected one letter of PFSRMBUDAWCIOELKXTNJ"),
            "{err}"
        );
    }

    #[test]
    fn unknown_rule() {
        let err = error_of("description: d\nrules: [R2, R15]\nfixtures: []\nsteps: []\n");
        assert_eq!(err, "s.yaml:2:13: unknown rule \"R15\"; expected R1 to R14");
    }

    #[test]
    fn write_without_value() {
        let err = error_of(&format!("{HEAD}  - write: /proc/sys/kernel/printk\n"));
        assert_eq!(err, "s.yaml:4:5: `write` needs a `value` to write");
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        let project = project();
        for file in scenario_files(&project).unwrap() {
            load(&project, &file).unwrap_or_else(|err| panic!("{err:#}"));
        }
    }
}
