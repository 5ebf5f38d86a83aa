//! The model's state: the patches the kernel lists, the transition in
//! flight, the parked thread, the feature table; and what can be read off it.

use super::{Defs, Mutation, PatchDef};
use crate::fixture::target;
use crate::kernel::behaviour::Profile;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
pub struct Model {
    pub(super) defs: Defs,
    /// Which livepatch behaviours the kernel has (kernel::behaviour).
    pub(super) profile: Profile,
    /// Livepatch sysfs attributes this kernel has.
    pub(super) attributes: Vec<&'static str>,
    /// Loaded modules, in load order.
    pub(super) loaded: Vec<String>,
    /// Modules whose reference a forced transition kept (never removable).
    pub(super) pinned: BTreeSet<String>,
    /// klp_patches, in list order: the bottom of the stack first.
    pub(super) patches: Vec<Patch>,
    pub(super) transition: Option<Transition>,
    /// Where klp_target's busy thread sleeps, if parked.
    pub(super) parked: Option<Impl>,
    /// Whether klp_target's CPU-bound thread runs.
    pub(super) spinning: bool,
    pub(super) features: BTreeMap<u64, Feature>,
    /// Feature data blocks allocated and not yet freed.
    pub(super) live_data: BTreeSet<u64>,
    /// The fixtures' shadow variables: (object, id) ──> value.
    pub(super) shadow_vars: BTreeMap<(u8, u8), i64>,
    /// Destructor calls: (object, id, value, patch), sorted as
    /// /sys/kernel/klp_features/shadow/dtors shows them.
    pub(super) shadow_dtors: Vec<(u8, u8, i64, String)>,
    pub(super) next_instance: u64,
    pub(super) next_data: u64,
    pub(super) mutation: Option<Mutation>,
}

#[derive(Clone, Debug)]
pub(super) struct Patch {
    pub module: String,
    /// Tells apart two loads of the same module.
    pub instance: u64,
    pub enabled: bool,
    pub forced: bool,
    /// Each feature's klp_state data: None until allocated or after freed.
    pub data: BTreeMap<u64, Option<u64>>,
    /// Its klp relocations for klp_target are written in its module.
    pub relocs_written: bool,
    /// klp_target's pre_patch callback will still refuse once.
    pub target_refusal_pending: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    Patched,
    Unpatched,
}

#[derive(Clone, Debug)]
pub(super) struct Transition {
    pub module: String,
    pub target: Target,
    /// Held open by the parked thread.
    pub held_by_park: bool,
    /// Held open by the CPU-bound thread, which the kernel cannot switch.
    pub held_by_spinner: bool,
}

impl Transition {
    /// Held open; otherwise it ends at klp's next try.
    pub fn held(&self) -> bool {
        self.held_by_park || self.held_by_spinner
    }
}

/// A copy of a function: the original or one patch instance's replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Impl {
    Original,
    Patch(u64),
}

/// One row of /sys/kernel/klp_features.
#[derive(Clone, Debug, Default)]
pub(super) struct Feature {
    pub name: String,
    pub allocations: u32,
    pub enabled: bool,
    /// Whether its shadow variable exists on init_task.
    pub shadow: bool,
    /// (owner, version), bottom first; the top one is in force.
    pub owners: Vec<(String, u32)>,
    /// By callback (`shadow::Callback::index`): "<patch> saw <previous
    /// patch|none>", what klp_get_prev_state() last gave it.
    pub prev: [Option<String>; 4],
}

impl Model {
    /// A freshly booted guest with these fixtures available, on a kernel
    /// with these behaviours.
    pub fn new(defs: Defs, profile: &Profile) -> Self {
        Model {
            defs,
            profile: profile.clone(),
            attributes: profile.attributes(),
            loaded: Vec::new(),
            pinned: BTreeSet::new(),
            patches: Vec::new(),
            transition: None,
            parked: None,
            spinning: false,
            features: BTreeMap::new(),
            live_data: BTreeSet::new(),
            shadow_vars: BTreeMap::new(),
            shadow_dtors: Vec::new(),
            next_instance: 1,
            next_data: 1,
            mutation: None,
        }
    }
    pub fn with_mutation(mut self, mutation: Option<Mutation>) -> Self {
        if let Some(Mutation::Forget(id)) = mutation {
            // The model without that row: the kernel taken to behave as
            // the other side of the change does.
            self.profile = self.profile.clone().with_flipped(id);
            self.attributes = self.profile.attributes();
        }
        self.mutation = mutation;
        self
    }
    pub fn defs(&self) -> &Defs {
        &self.defs
    }
    pub fn is_loaded(&self, module: &str) -> bool {
        self.loaded.iter().any(|m| m == module)
    }
    pub fn is_pinned(&self, module: &str) -> bool {
        self.pinned.contains(module)
    }
    pub fn target_loaded(&self) -> bool {
        self.is_loaded(target::MODULE)
    }
    pub fn is_parked(&self) -> bool {
        self.parked.is_some()
    }
    /// Patch names in sysfs, bottom of the stack first.
    pub fn stack(&self) -> Vec<String> {
        self.patches.iter().map(|p| p.module.clone()).collect()
    }
    pub fn enabled(&self, module: &str) -> Option<bool> {
        self.patch_index(module).map(|i| self.patches[i].enabled)
    }
    /// The patch in transition, and whether a thread holds it open.
    pub fn in_transition(&self) -> Option<(&str, bool)> {
        self.transition
            .as_ref()
            .map(|t| (t.module.as_str(), t.held()))
    }
    /// Feature versions in force: id ──> version, or None once withdrawn.
    pub fn feature_versions(&self) -> BTreeMap<u64, Option<u32>> {
        self.features
            .iter()
            .map(|(id, f)| (*id, f.owners.last().map(|(_, v)| *v)))
            .collect()
    }
    pub(super) fn def(&self, module: &str) -> &PatchDef {
        &self.defs[module]
    }
    pub(super) fn patch_index(&self, module: &str) -> Option<usize> {
        self.patches.iter().position(|p| p.module == module)
    }
    pub(super) fn is_transition(&self, module: &str) -> bool {
        self.transition.as_ref().is_some_and(|t| t.module == module)
    }
}
