//! A checked step, and the one table of the actions a step can take: the
//! loader's messages, its repeat-block check, its candidate list and its
//! step-order check all come from `ACTIONS`.

use super::format::{Expect, Step};
use crate::yaml::{Position, Spanned};

/// A step's number as the trace and messages show it: `4`, or `4[2].1` for
/// the first step of a repeat block's second round.
pub type StepLabel = String;

#[derive(Debug)]
pub struct CheckedStep {
    pub label: StepLabel,
    pub position: Position,
    pub action: Action,
    pub expected_errno: Option<String>,
    pub wait_transition: bool,
    /// The bound on this step's transition wait, where the step sets one.
    pub within: Option<std::time::Duration>,
    /// Checked against the reference model.
    pub follow_model: bool,
    /// Fails on a kernel without the scenario's fix (the known bug).
    pub shows_bug: bool,
    pub expect: Expect,
    /// The reference model's operation, in a scenario the model follows;
    /// None for a step that changes no livepatch state (`run`).
    pub op: Option<crate::model::Op>,
}

/// What a step does: an action kind and what it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub kind: Kind,
    /// A fixture name, a shell command or a file, as `ActionKind::operand` says.
    pub operand: String,
    /// What a `write` writes.
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Load,
    Disable,
    Unload,
    Wait,
    Reverse,
    Force,
    Run,
    Write,
    Park,
    Release,
    Spin,
    StopSpin,
}

/// What an action's operand names, and so what the loader checks it against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// Any fixture of the scenario.
    Fixture,
    /// A livepatch fixture of the scenario.
    Livepatch,
    /// The target module, whose busy thread the action drives.
    Target,
    /// A guest shell command.
    Command,
    /// A guest file; the step's `value` is written to it.
    File,
}

/// What an action does to the set of loaded modules, for checking the
/// order of steps before anything boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Loads,
    Unloads,
    /// Acts on a loaded module.
    NeedsLoaded,
    /// Not followed (commands and file writes).
    Unknown,
}

/// One kind of action.
pub struct ActionKind {
    pub kind: Kind,
    /// Its key in a scenario step.
    pub key: &'static str,
    pub operand: Operand,
    pub effect: Effect,
    /// The scenario file's field for it.
    pub field: fn(&Step) -> &Option<Spanned<String>>,
}

/// Every action a step can take, in the order messages list them.
pub const ACTIONS: &[ActionKind] = &[
    ActionKind {
        kind: Kind::Load,
        key: "load",
        operand: Operand::Fixture,
        effect: Effect::Loads,
        field: |step| &step.load,
    },
    ActionKind {
        kind: Kind::Disable,
        key: "disable",
        operand: Operand::Livepatch,
        effect: Effect::NeedsLoaded,
        field: |step| &step.disable,
    },
    ActionKind {
        kind: Kind::Unload,
        key: "unload",
        operand: Operand::Fixture,
        effect: Effect::Unloads,
        field: |step| &step.unload,
    },
    ActionKind {
        kind: Kind::Wait,
        key: "wait",
        operand: Operand::Livepatch,
        effect: Effect::NeedsLoaded,
        field: |step| &step.wait,
    },
    ActionKind {
        kind: Kind::Reverse,
        key: "reverse",
        operand: Operand::Livepatch,
        effect: Effect::NeedsLoaded,
        field: |step| &step.reverse,
    },
    ActionKind {
        kind: Kind::Force,
        key: "force",
        operand: Operand::Livepatch,
        effect: Effect::NeedsLoaded,
        field: |step| &step.force,
    },
    ActionKind {
        kind: Kind::Run,
        key: "run",
        operand: Operand::Command,
        effect: Effect::Unknown,
        field: |step| &step.run,
    },
    ActionKind {
        kind: Kind::Write,
        key: "write",
        operand: Operand::File,
        effect: Effect::Unknown,
        field: |step| &step.write,
    },
    ActionKind {
        kind: Kind::Park,
        key: "park",
        operand: Operand::Target,
        effect: Effect::NeedsLoaded,
        field: |step| &step.park,
    },
    ActionKind {
        kind: Kind::Release,
        key: "release",
        operand: Operand::Target,
        effect: Effect::NeedsLoaded,
        field: |step| &step.release,
    },
    ActionKind {
        kind: Kind::Spin,
        key: "spin",
        operand: Operand::Target,
        effect: Effect::NeedsLoaded,
        field: |step| &step.spin,
    },
    ActionKind {
        kind: Kind::StopSpin,
        key: "stop_spin",
        operand: Operand::Target,
        effect: Effect::NeedsLoaded,
        field: |step| &step.stop_spin,
    },
];

impl Kind {
    /// Guest CPUs the action needs: the spinning thread holds a transition
    /// only while it runs on a CPU of its own, beside the guest's shell.
    pub fn min_cpus(self) -> u32 {
        match self {
            Kind::Spin => 2,
            _ => 1,
        }
    }

    pub fn info(self) -> &'static ActionKind {
        ACTIONS
            .iter()
            .find(|action| action.kind == self)
            .expect("every kind is in ACTIONS")
    }
}

/// The action keys, for messages: "load, disable, ...".
pub fn action_keys() -> String {
    ACTIONS
        .iter()
        .map(|action| action.key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The actions set on a step, with their fields.
pub fn actions_of(step: &Step) -> Vec<(&'static ActionKind, &Spanned<String>)> {
    ACTIONS
        .iter()
        .filter_map(|action| (action.field)(step).as_ref().map(|field| (action, field)))
        .collect()
}

impl Action {
    pub fn new(kind: Kind, operand: impl Into<String>) -> Self {
        Self {
            kind,
            operand: operand.into(),
            value: None,
        }
    }

    /// The fixture the action names, if it names one.
    pub fn fixture(&self) -> Option<&str> {
        match self.kind.info().operand {
            Operand::Fixture | Operand::Livepatch | Operand::Target => Some(&self.operand),
            Operand::Command | Operand::File => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.kind.info().key;
        match self.kind.info().operand {
            Operand::Command => write!(f, "{key} `{}`", self.operand),
            Operand::File => write!(
                f,
                "{key} {:?} to {}",
                self.value.as_deref().unwrap_or_default(),
                self.operand
            ),
            _ => write!(f, "{key} {}", self.operand),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_row_and_its_own_field() {
        let kinds = [
            Kind::Load,
            Kind::Disable,
            Kind::Unload,
            Kind::Wait,
            Kind::Reverse,
            Kind::Force,
            Kind::Run,
            Kind::Write,
            Kind::Park,
            Kind::Release,
            Kind::Spin,
            Kind::StopSpin,
        ];
        assert_eq!(ACTIONS.len(), kinds.len());
        for kind in kinds {
            let rows = ACTIONS.iter().filter(|a| a.kind == kind).count();
            assert_eq!(rows, 1, "{kind:?}");
        }
        // Each row reads its own field: a step with only that key set
        // yields exactly that row.
        for action in ACTIONS {
            let text = format!("{}: x\n", action.key);
            let step: Step = serde_saphyr::from_str(&text).unwrap();
            let found: Vec<&str> = actions_of(&step).iter().map(|(a, _)| a.key).collect();
            assert_eq!(found, [action.key]);
        }
    }

    #[test]
    fn actions_show_as_in_messages() {
        assert_eq!(Action::new(Kind::Load, "klp_a").to_string(), "load klp_a");
        assert_eq!(Action::new(Kind::Run, "true").to_string(), "run `true`");
        let write = Action {
            value: Some("1".into()),
            ..Action::new(Kind::Write, "/x")
        };
        assert_eq!(write.to_string(), "write \"1\" to /x");
    }
}
