//! Steps checked against the reference model (`follow_model`): the model
//! follows every step and predicts its outcome and the sysfs files after it.

use super::step::{Action, CheckedStep, Kind};
use crate::fixture::target::{self, MODULE as TARGET};
use crate::fixture::{self, Fixture, FixtureSource};
use crate::guest::livepatch::Listing;
use crate::kernel::behaviour::Profile;
use crate::model::{listing, Defs, Model, Mutation, Op, PatchDef, Prediction, Response};
use anyhow::{bail, Result};

/// The scenario's fixtures as the model knows them; an error, at the step,
/// for anything the model cannot follow.
pub fn model_defs(fixtures: &[Fixture], steps: &[CheckedStep]) -> Result<Defs> {
    let mut defs = Defs::new();
    for fixture in fixtures {
        match &fixture.source {
            FixtureSource::Livepatch { spec, .. } => {
                let module = fixture.module_name();
                defs.insert(module.clone(), PatchDef::from_spec(&module, spec));
            }
            FixtureSource::Module { .. } if fixture.name == target::MODULE => {}
            _ => {
                let loads = Action::new(Kind::Load, fixture.name.clone());
                if let Some(step) = steps.iter().find(|step| step.action == loads) {
                    bail!(
                        "{}: step {} loads {}, which the reference model does not know \
                         (it knows {TARGET} and the livepatches of fixtures/*.yaml); \
                         expected `follow_model: false` on the scenario",
                        step.position,
                        step.label,
                        fixture.name
                    );
                }
            }
        }
    }
    for step in steps {
        if let Err(why) = op(&step.action) {
            bail!("{}: step {}: {why}", step.position, step.label);
        }
    }
    Ok(defs)
}

/// The model's operation for a step; None for `run`, which the model
/// takes to change no livepatch state.
pub fn op(action: &Action) -> Result<Option<Op>, String> {
    let module = fixture::module_name(&action.operand);
    Ok(Some(match action.kind {
        Kind::Load => Op::Load(module),
        Kind::Disable => Op::Disable(module),
        Kind::Unload => Op::Unload(module),
        Kind::Wait => Op::Wait(module),
        Kind::Reverse => Op::Reverse(module),
        Kind::Force => Op::Force(module),
        Kind::Park => Op::Park,
        Kind::Release => Op::Release,
        Kind::Spin => Op::Spin,
        Kind::StopSpin => Op::StopSpin,
        Kind::Run => return Ok(None),
        Kind::Write => write_op(&action.operand, action.value.as_deref().unwrap_or_default())?,
    }))
}

fn write_op(path: &str, value: &str) -> Result<Op, String> {
    let flag = match value.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    };
    let livepatch = path.strip_prefix("/sys/kernel/livepatch/");
    let feature = path.strip_prefix("/sys/kernel/klp_features/");
    match (
        livepatch.and_then(|p| p.split_once('/')),
        feature.and_then(|f| f.split_once('/')),
        flag,
    ) {
        (Some((patch, "enabled")), _, Some(value)) => Ok(Op::WritePatchEnabled {
            module: patch.to_string(),
            value,
        }),
        (Some((patch, "force")), _, Some(true)) => Ok(Op::Force(patch.to_string())),
        (_, Some((id, "enabled")), Some(value)) if id.parse::<u64>().is_ok() => {
            Ok(Op::WriteFeatureEnabled {
                id: id.parse().expect("checked"),
                value,
            })
        }
        _ => Err(format!(
            "the reference model does not know what writing {value:?} to {path} does; \
             it follows 0/1 written to a patch's enabled or force and to a feature's \
             enabled; expected `follow_model: false` on the scenario"
        )),
    }
}

/// The model, stepped along with a scenario in one guest.
pub struct Follower {
    model: Model,
}

impl Follower {
    pub fn new(defs: Defs, profile: &Profile, mutation: Option<Mutation>) -> Self {
        Follower {
            model: Model::new(defs, profile).with_mutation(mutation),
        }
    }

    /// Step the model; None for a step it does not predict (`run`).
    pub fn predict(&mut self, step: &CheckedStep) -> Result<Option<Prediction>> {
        let Some(op) = &step.op else {
            return Ok(None);
        };
        let waits = step.wait_transition && step.expected_errno.is_none();
        Ok(Some(self.model.step(op, waits)?))
    }

    /// The step's outcome against the prediction.
    pub fn check_outcome(predicted: &Response, found: &Response) -> Result<()> {
        if predicted != found {
            bail!(
                "the reference model predicts {}, the kernel {}",
                describe(predicted),
                describe(found)
            );
        }
        Ok(())
    }

    /// The step's sysfs listing against the model's files.
    pub fn check_files(&self, found: &Listing) -> Result<()> {
        let predicted = self.model.predicted_files();
        if let Some(diff) = listing::diff(&predicted, &found.files) {
            bail!("sysfs differs from the reference model after this step:\n{diff}");
        }
        Ok(())
    }
}

fn describe(outcome: &Response) -> String {
    match outcome {
        Response::Done => "success".to_string(),
        Response::Refused(errno) => format!("failure with {errno}"),
        Response::StillRunning => "a transition that does not end".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_model_knows() {
        assert_eq!(
            write_op("/sys/kernel/livepatch/klp_a/enabled", "0"),
            Ok(Op::WritePatchEnabled {
                module: "klp_a".into(),
                value: false
            })
        );
        assert_eq!(
            write_op("/sys/kernel/klp_features/4/enabled", "1\n"),
            Ok(Op::WriteFeatureEnabled { id: 4, value: true })
        );
        let err = write_op("/proc/sys/kernel/printk", "8").unwrap_err();
        assert!(err.contains("follow_model: false"), "{err}");
    }
}
