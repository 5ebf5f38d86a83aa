//! A reference model of what scenarios observe, written from
//! Documentation/livepatch/ and kernel/livepatch/ (core.c, transition.c,
//! state.c) of the kernels in the matrix, and from the fixtures' callbacks
//! (fixtures/templates/livepatch.c.in, fixtures/klp_features/).
//!
//! It predicts, after every operation, whether the operation is refused
//! (and with which errno) and every file of the livepatch, feature and
//! target sysfs directories (see `listing`). It knows the fixtures that
//! `fixtures/*.yaml` generate and the busy target; nothing else.

mod callbacks;
pub mod listing;
mod modules;
mod operations;
mod replace_sets;
mod shadow;
mod state;
mod transitions;

use crate::fixture::shadow::ShadowVars;
use crate::fixture::spec::{LivepatchSpec, FUNCTIONS};
use std::collections::BTreeMap;

pub use state::Model;

pub use crate::fixture::target::{BUSY_FUNCTION, STATUS_FUNCTION};

/// What a generated livepatch fixture is, as far as observations go.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchDef {
    /// Module name, which is also the patch's name in sysfs.
    pub module: String,
    pub replace: bool,
    /// Its replace set, on a kernel with the replace set series.
    pub replace_set: u32,
    pub features: Vec<FeatureDef>,
    pub functions: Vec<&'static str>,
    /// What its replacement functions print before the feature list.
    pub reports: String,
    /// The errno its pre_patch callback fails with, if any.
    pub pre_patch_error: Option<String>,
    /// The errno klp_target's pre_patch callback fails with, once.
    pub target_pre_patch_error_once: Option<String>,
    /// Its status replacement reaches klp_target through a klp relocation.
    pub klp_relocs: bool,
    /// It names a symbol position that does not exist (`sympos`).
    pub missing_symbol: bool,
    /// The shadow variable operations its callbacks run.
    pub shadow_vars: ShadowVars,
    /// Its states, on a kernel with the states series.
    pub states: Vec<StateDef>,
}

/// A state of the states series, as far as the model follows it: which
/// replacements and disables it blocks (kernel/livepatch/state.c there).
#[derive(Clone, Debug, PartialEq)]
pub struct StateDef {
    pub id: u64,
    pub block_disable: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FeatureDef {
    pub id: u64,
    pub version: u32,
    pub name: String,
    pub opt_in: bool,
    pub shadow: bool,
}

impl PatchDef {
    pub fn from_spec(module: &str, spec: &LivepatchSpec) -> Self {
        PatchDef {
            module: module.to_string(),
            replace: spec.replace,
            replace_set: spec.replace_set.unwrap_or(0),
            features: spec
                .features
                .iter()
                .map(|f| FeatureDef {
                    id: f.id,
                    version: f.version,
                    name: f.display_name(),
                    opt_in: f.opt_in,
                    shadow: f.shadow,
                })
                .collect(),
            functions: spec.functions().into_iter().map(|f| f.name).collect(),
            reports: spec.reports.clone().unwrap_or_else(|| module.to_string()),
            // A state's failing pre_patch refuses the load as the vmlinux
            // callback's does; the states series has no per-object ones.
            pre_patch_error: spec
                .callbacks
                .pre_patch_error
                .clone()
                .or_else(|| spec.states().iter().find_map(|s| s.pre_patch_error.clone())),
            target_pre_patch_error_once: spec.callbacks.target_pre_patch_error_once.clone(),
            klp_relocs: spec.klp_relocs,
            missing_symbol: spec.sympos.is_some_and(|sympos| sympos > 1),
            shadow_vars: spec.shadow_vars.clone(),
            states: spec
                .states()
                .iter()
                .map(|s| StateDef {
                    id: s.id,
                    block_disable: s.block_disable,
                })
                .collect(),
        }
    }

    pub fn patches(&self, function: &str) -> bool {
        self.functions.contains(&function)
    }

    pub fn feature(&self, id: u64) -> Option<&FeatureDef> {
        self.features.iter().find(|f| f.id == id)
    }

    /// klp_patch_disable_blocked() of the states series.
    pub fn disable_blocked(&self) -> bool {
        self.states.iter().any(|s| s.block_disable)
    }
}

/// The functions a fixture replaces unless it names others, for generators.
pub fn replaceable_functions() -> Vec<&'static str> {
    FUNCTIONS
        .iter()
        .filter(|f| f.by_default)
        .map(|f| f.name)
        .collect()
}

/// One operation a scenario step performs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Load(String),
    /// Write 0 to the patch's `enabled`.
    Disable(String),
    Unload(String),
    /// Wait for the patch's transition to end.
    Wait(String),
    /// Write the opposite of the patch's `enabled` to it.
    Reverse(String),
    /// Write 1 to the patch's `force`.
    Force(String),
    Park,
    Release,
    /// Start klp_target's CPU-bound thread.
    Spin,
    /// Stop it.
    StopSpin,
    /// Write 0 or 1 to a patch's `enabled`.
    WritePatchEnabled {
        module: String,
        value: bool,
    },
    /// Write 0 or 1 to a feature's opt-in `enabled` knob.
    WriteFeatureEnabled {
        id: u64,
        value: bool,
    },
}

/// How the kernel answers an operation, as the model predicts or a step saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Done,
    /// Refused with this errno name (e.g. "EINVAL").
    Refused(&'static str),
    /// A wait that cannot end: the transition is held open.
    StillRunning,
}

/// The prediction for one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    pub outcome: Response,
    /// False while a transition may end at any moment (klp retries every
    /// second): the sysfs state right after the step is not predictable.
    pub settled: bool,
}

/// A deliberately wrong rule, to show that exploration finds and shrinks
/// the divergence it causes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Non-cumulative patches skip the version check (R3 broken).
    NoncumulativeUnchecked,
    /// A disabled top patch leaves its feature version in force (R5 broken).
    DisableKeepsVersion,
    /// The model forgets one row of kernel::behaviour: it takes the kernel
    /// to be on the other side of that change.
    Forget(&'static str),
}

impl Mutation {
    /// Every mutation, with the name `explore --mutate` takes.
    pub const ALL: &[(Mutation, &str)] = &[
        (Mutation::NoncumulativeUnchecked, "noncumulative-unchecked"),
        (Mutation::DisableKeepsVersion, "disable-keeps-version"),
    ];

    /// The name `--mutate` takes.
    pub fn name(self) -> String {
        match self {
            Mutation::Forget(id) => format!("{FORGET}{id}"),
            _ => Self::ALL
                .iter()
                .find(|(mutation, _)| *mutation == self)
                .map(|(_, name)| name.to_string())
                .expect("every other mutation is in ALL"),
        }
    }
}

/// `forget:<behaviour id>` names a `Mutation::Forget`.
const FORGET: &str = "forget:";

impl std::str::FromStr for Mutation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(id) = text.strip_prefix(FORGET) {
            return crate::kernel::behaviour::find(id)
                .map(|behaviour| Mutation::Forget(behaviour.id))
                .ok_or_else(|| {
                    let ids: Vec<&str> = crate::kernel::behaviour::BEHAVIOURS
                        .iter()
                        .map(|b| b.id)
                        .collect();
                    format!(
                        "unknown behaviour {id:?}; expected one of: {}",
                        ids.join(", ")
                    )
                });
        }
        Self::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(mutation, _)| *mutation)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, name)| *name).collect();
                format!(
                    "unknown mutation {text:?}; expected one of: {}, or {FORGET}<behaviour id>",
                    names.join(", ")
                )
            })
    }
}

/// Why the model cannot follow a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the model cannot predict this: {}", self.0)
    }
}

impl std::error::Error for Unsupported {}

/// Patch definitions by module name.
pub type Defs = BTreeMap<String, PatchDef>;

#[cfg(test)]
mod tests;
