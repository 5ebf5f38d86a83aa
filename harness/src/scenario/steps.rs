//! Checking a scenario's steps: one action each, operands among the
//! scenario's fixtures, repeat blocks unrolled, and an order that can work.

use super::format::Step;
use super::step::{action_keys, actions_of, Action, CheckedStep, Effect, Kind, Operand, StepLabel};
use crate::errno;
use crate::fixture::target::MODULE as TARGET;
use crate::fixture::Fixture;
use crate::yaml::{Position, Spanned};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// What every step of a scenario is checked against.
pub struct BlockContext<'a> {
    pub file: &'a Path,
    pub fixtures: &'a [Fixture],
    /// The scenario's `follow_model`, which a step may override.
    pub follow_model: bool,
    /// The scenario's guest CPUs.
    pub cpus: u32,
}

/// Check the steps of one block and append them, unrolling repeat blocks.
pub fn check_steps(
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
                if let Some((action, _)) = actions_of(&step.value).first() {
                    bail!(
                        "{position}: a `repeat` step cannot also {}; put it inside `steps`",
                        action.key
                    );
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

/// Reject step orders that cannot work: loading a module that is already
/// loaded, or acting on one that is not. A step expected to fail changes
/// nothing; `run` and `write` steps are not followed.
pub fn check_order(steps: &[CheckedStep]) -> Result<()> {
    let mut loaded: BTreeMap<&str, &Position> = BTreeMap::new();
    let mut unloaded_at: BTreeMap<&str, &Position> = BTreeMap::new();
    for step in steps {
        let succeeds = step.expected_errno.is_none();
        let at = &step.position;
        let name = step.action.operand.as_str();
        match step.action.kind.info().effect {
            Effect::Loads => {
                if let Some(before) = loaded.get(name) {
                    if succeeds {
                        bail!("{at}: step {} loads {name}, which step at {before} already loaded; expected an `unload: {name}` between them, or `error: EEXIST`", step.label);
                    }
                } else if succeeds {
                    loaded.insert(name, at);
                }
            }
            effect @ (Effect::Unloads | Effect::NeedsLoaded) => {
                if !loaded.contains_key(name) && succeeds {
                    let why = match unloaded_at.get(name) {
                        Some(before) => format!("step at {before} unloaded it"),
                        None => "no earlier step loads it".to_string(),
                    };
                    bail!(
                        "{at}: step {} `{}` needs {name} loaded, but {why}; expected a `load: {name}` before it",
                        step.label,
                        step.action
                    );
                }
                if effect == Effect::Unloads && succeeds {
                    loaded.remove(name);
                    unloaded_at.insert(name, at);
                }
            }
            Effect::Unknown => {}
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
    let (kind, target) = match actions_of(&step).as_slice() {
        [one] => *one,
        [] => bail!(
            "{position}: step has no action; expected one of: {}, or repeat",
            action_keys()
        ),
        [_, second, ..] => bail!(
            "{}: step has more than one action; expected exactly one of: {}",
            Position::new(file, &second.1.referenced),
            action_keys()
        ),
    };
    let needs = kind.kind.min_cpus();
    if needs > context.cpus {
        bail!(
            "{position}: `{}` needs a CPU beside the guest's shell; expected `cpus: {needs}` or more in the scenario (it has {})",
            kind.key,
            context.cpus
        );
    }
    let mut action = Action::new(kind.kind, target.value.clone());
    match (&step.value, kind.operand) {
        (Some(given), Operand::File) => action.value = Some(given.value.clone()),
        (None, Operand::File) => bail!("{position}: `{}` needs a `value` to write", kind.key),
        (Some(value), _) => bail!(
            "{}: `value` belongs to a `write` step",
            Position::new(file, &value.referenced)
        ),
        (None, _) => {}
    }
    if let Some(name) = action.fixture() {
        let target_at = Position::new(file, &target.referenced);
        let Some(fixture) = fixtures.iter().find(|f| f.name == name) else {
            bail!(
                "{target_at}: {name:?} is not among this scenario's fixtures ({})",
                fixtures
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        match kind.operand {
            Operand::Target if fixture.name != TARGET => bail!(
                "{target_at}: {name:?} has no busy thread to {}; expected {TARGET}",
                kind.key
            ),
            Operand::Livepatch if !fixture.is_livepatch() => bail!(
                "{target_at}: {name:?} is a plain module, not a livepatch; expected a livepatch fixture"
            ),
            _ => {}
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
    let waits = match action.kind {
        Kind::Wait => true,
        Kind::Load | Kind::Disable => step.wait_transition && step.error.is_none(),
        _ => false,
    };
    if let Some(modules) = &step.expect.modules {
        if let Some(name) = modules
            .value
            .iter()
            .find(|name| !super::format::is_watched_module(name))
        {
            bail!(
                "{}: `modules` lists {name:?}, which it never sees; expected names starting with {}",
                Position::new(file, &modules.referenced),
                super::format::WATCHED_MODULES.join(" or ")
            );
        }
    }
    let within = match &step.within {
        Some(within) if !waits => bail!(
            "{}: `within` bounds a transition wait, and this step waits for none; \
             expected it on a `wait` step, or a `load` or `disable` that waits",
            Position::new(file, &within.referenced)
        ),
        Some(within) if within.value == 0 => bail!(
            "{}: `within: 0` leaves no time; expected whole seconds, 1 or more",
            Position::new(file, &within.referenced)
        ),
        Some(within) => Some(std::time::Duration::from_secs(within.value.into())),
        None => None,
    };
    Ok(CheckedStep {
        label,
        position,
        action,
        expected_errno: step.error.map(|e| e.value),
        wait_transition: step.wait_transition,
        within,
        follow_model: step.follow_model.map_or(context.follow_model, |f| f.value),
        shows_bug: step.shows_bug,
        expect: step.expect,
        op: None,
    })
}
