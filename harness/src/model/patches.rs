//! The model's state and how each operation changes it.

use super::{
    Defs, Mutation, Op, Outcome, PatchDef, Prediction, Unsupported, BUSY_FUNCTION, STATUS_FUNCTION,
};
use crate::fixture::target;
use std::collections::{BTreeMap, BTreeSet};

/// The fixture library's table can hold this many owners per feature
/// (KLP_FEATURES_DEPTH in klp_features.c); pushes beyond it are dropped.
const FEATURE_DEPTH: usize = 8;

#[derive(Clone, Debug)]
pub struct Model {
    pub(super) defs: Defs,
    /// Livepatch sysfs attributes this kernel has (kernel::features).
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
    pub(super) features: BTreeMap<u64, Feature>,
    /// Feature data blocks allocated and not yet freed.
    pub(super) live_data: BTreeSet<u64>,
    next_instance: u64,
    next_data: u64,
    mutation: Option<Mutation>,
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
    /// Held open by the parked thread; otherwise it ends at the next try.
    pub blocked: bool,
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
}

impl Model {
    /// A freshly booted guest with these fixtures available, on a kernel
    /// of this version (e.g. [6, 12, 57]).
    pub fn new(defs: Defs, kernel_version: &[u32]) -> Self {
        Model {
            defs,
            attributes: crate::kernel::features::attributes_of(kernel_version),
            loaded: Vec::new(),
            pinned: BTreeSet::new(),
            patches: Vec::new(),
            transition: None,
            parked: None,
            features: BTreeMap::new(),
            live_data: BTreeSet::new(),
            next_instance: 1,
            next_data: 1,
            mutation: None,
        }
    }

    pub fn with_mutation(mut self, mutation: Option<Mutation>) -> Self {
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

    /// The patch in transition, and whether the parked thread holds it.
    pub fn in_transition(&self) -> Option<(&str, bool)> {
        self.transition
            .as_ref()
            .map(|t| (t.module.as_str(), t.blocked))
    }

    /// Feature versions in force: id ──> version, or None once withdrawn.
    pub fn feature_versions(&self) -> BTreeMap<u64, Option<u32>> {
        self.features
            .iter()
            .map(|(id, f)| (*id, f.owners.last().map(|(_, v)| *v)))
            .collect()
    }

    /// Apply one operation; `wait` is whether the step then waits for the
    /// transition it started (as `load` and `disable` do by default).
    pub fn step(&mut self, op: &Op, wait: bool) -> Result<Prediction, Unsupported> {
        // A transition nobody holds ends at klp's next try, within a
        // second: until a wait, only steps it cannot affect are predictable.
        if let Some(t) = self.transition.as_ref().filter(|t| !t.blocked) {
            let independent = match op {
                Op::Wait(_) | Op::Release | Op::WriteFeatureEnabled { .. } => true,
                Op::Unload(module) => *module != t.module && module != target::MODULE,
                _ => false,
            };
            if !independent {
                return Err(Unsupported(format!(
                    "{op:?} while the transition of {} may end at any moment; \
                     expected a `wait: {}` before it",
                    t.module, t.module
                )));
            }
        }
        let outcome = match op {
            Op::Load(module) => self.load(module)?,
            Op::Disable(module) => self.write_enabled(module, false)?,
            Op::Unload(module) => self.unload(module)?,
            Op::Wait(module) => self.wait(module),
            Op::Reverse(module) => match self.enabled(module) {
                Some(enabled) => self.write_enabled(module, !enabled)?,
                None => Outcome::Refused("ENOENT"),
            },
            Op::Force(module) => self.force(module),
            Op::Park => self.park(),
            Op::Release => {
                self.parked = None;
                if let Some(t) = &mut self.transition {
                    t.blocked = false;
                }
                Outcome::Done
            }
            Op::WritePatchEnabled { module, value } => self.write_enabled(module, *value)?,
            Op::WriteFeatureEnabled { id, value } => match self.features.get_mut(id) {
                Some(feature) => {
                    feature.enabled = *value;
                    Outcome::Done
                }
                None => Outcome::Refused("ENOENT"),
            },
        };
        let outcome = match (&outcome, op) {
            (Outcome::Done, Op::Load(module) | Op::Disable(module)) if wait => {
                match self.transition.as_ref() {
                    Some(t) if &t.module == module => self.wait(module),
                    _ => Outcome::Done,
                }
            }
            _ => outcome,
        };
        let settled = self.transition.as_ref().is_none_or(|t| t.blocked);
        Ok(Prediction { outcome, settled })
    }

    fn def(&self, module: &str) -> &PatchDef {
        &self.defs[module]
    }

    fn patch_index(&self, module: &str) -> Option<usize> {
        self.patches.iter().position(|p| p.module == module)
    }

    fn is_transition(&self, module: &str) -> bool {
        self.transition.as_ref().is_some_and(|t| t.module == module)
    }

    fn wait(&mut self, module: &str) -> Outcome {
        match &self.transition {
            Some(t) if t.module == module && t.blocked => Outcome::StillRunning,
            Some(t) if t.module == module => {
                self.complete_transition();
                Outcome::Done
            }
            _ => Outcome::Done,
        }
    }

    fn load(&mut self, module: &str) -> Result<Outcome, Unsupported> {
        if self.is_loaded(module) {
            return Ok(Outcome::Refused("EEXIST"));
        }
        if module == target::MODULE {
            // klp_module_coming() patches the object in every patch.
            if self.transition.is_some() {
                return Err(Unsupported("loading klp_target during a transition".into()));
            }
            self.loaded.push(module.to_string());
            return Ok(Outcome::Done);
        }
        let Some(def) = self.defs.get(module).cloned() else {
            return Err(Unsupported(format!(
                "{module} is not a livepatch generated from fixtures/*.yaml"
            )));
        };
        // klp_enable_patch(): the compatibility check comes first
        // (state.c), then "one transition at a time" (__klp_enable_patch).
        if !self.compatible(&def) {
            return Ok(Outcome::Refused("EINVAL"));
        }
        if self.transition.is_some() {
            return Ok(Outcome::Refused("EBUSY"));
        }
        if let Some(errno) = &def.pre_patch_error {
            // The vmlinux pre_patch callback fails before it allocates.
            return Ok(Outcome::Refused(crate::errno::canonical(errno)));
        }
        self.loaded.push(module.to_string());
        let instance = self.next_instance;
        self.next_instance += 1;
        self.patches.push(Patch {
            module: module.to_string(),
            instance,
            enabled: true,
            forced: false,
            data: def.features.iter().map(|f| (f.id, None)).collect(),
        });
        let index = self.patches.len() - 1;
        self.pre_patch(index)?;
        self.start_transition(index, Target::Patched);
        Ok(Outcome::Done)
    }

    /// klp_is_patch_compatible(): every state on every installed patch
    /// must be carried by a cumulative patch, and every carried state at
    /// a version no lower than the installed one.
    fn compatible(&self, new: &PatchDef) -> bool {
        self.patches.iter().all(|old| {
            self.def(&old.module)
                .features
                .iter()
                .all(|old_state| match new.feature(old_state.id) {
                    None => !new.replace,
                    Some(_)
                        if !new.replace
                            && self.mutation == Some(Mutation::NoncumulativeUnchecked) =>
                    {
                        true
                    }
                    Some(state) => state.version >= old_state.version,
                })
        })
    }

    /// The fixture's pre_patch: take each feature's data over from the
    /// topmost patch below that has it (sharing it), or allocate it.
    fn pre_patch(&mut self, index: usize) -> Result<(), Unsupported> {
        let def = self.def(&self.patches[index].module).clone();
        for feature in &def.features {
            let previous = self.previous_data(index, feature.id).flatten();
            let data = match previous {
                Some(data) => data,
                None => {
                    let entry = self.feature_entry(feature.id, &feature.name);
                    if feature.shadow && entry.shadow {
                        return Err(Unsupported(format!(
                            "feature {}'s shadow variable already exists: klp_shadow_alloc() warns",
                            feature.id
                        )));
                    }
                    entry.allocations += 1;
                    entry.shadow |= feature.shadow;
                    self.next_data += 1;
                    self.live_data.insert(self.next_data);
                    self.next_data
                }
            };
            self.patches[index].data.insert(feature.id, Some(data));
        }
        Ok(())
    }

    /// klp_get_prev_state(): the state of the topmost patch below `index`
    /// that carries `id` (Some), with its data (None when freed).
    fn previous_data(&self, index: usize, id: u64) -> Option<Option<u64>> {
        self.patches[..index]
            .iter()
            .rev()
            .find_map(|p| p.data.get(&id).copied())
    }

    fn feature_entry(&mut self, id: u64, name: &str) -> &mut Feature {
        self.features.entry(id).or_insert_with(|| Feature {
            name: name.to_string(),
            ..Feature::default()
        })
    }

    /// Whether the parked thread keeps the transition of the patch at
    /// `index` towards `target` open (klp_check_stack_func()).
    fn blocks(&self, index: usize, target: Target) -> bool {
        let Some(parked) = self.parked else {
            return false;
        };
        let patch = &self.patches[index];
        let def = self.def(&patch.module);
        match target {
            // The previous copy must not be on the stack; a cumulative
            // patch has a nop for every function a patch below replaced.
            Target::Patched => {
                let touches = def.patches(BUSY_FUNCTION)
                    || def.replace
                        && self.patches[..index]
                            .iter()
                            .any(|p| self.def(&p.module).patches(BUSY_FUNCTION));
                touches && parked == self.busy_copy_below(index)
            }
            // The patch's own copy must not be on the stack.
            Target::Unpatched => {
                def.patches(BUSY_FUNCTION) && parked == Impl::Patch(patch.instance)
            }
        }
    }

    fn busy_copy_below(&self, index: usize) -> Impl {
        self.patches[..index]
            .iter()
            .rev()
            .find(|p| self.def(&p.module).patches(BUSY_FUNCTION))
            .map_or(Impl::Original, |p| Impl::Patch(p.instance))
    }

    /// enabled_store(): the same value is EINVAL; the patch in transition
    /// reverses; 0 disables; 1 on a patch not in transition is EINVAL
    /// (a disabled patch cannot be enabled again).
    fn write_enabled(&mut self, module: &str, value: bool) -> Result<Outcome, Unsupported> {
        let Some(index) = self.patch_index(module) else {
            return Ok(Outcome::Refused("ENOENT"));
        };
        if self.patches[index].enabled == value {
            return Ok(Outcome::Refused("EINVAL"));
        }
        if self.is_transition(module) {
            self.reverse();
            return Ok(Outcome::Done);
        }
        if value {
            return Ok(Outcome::Refused("EINVAL"));
        }
        if self.transition.is_some() {
            return Ok(Outcome::Refused("EBUSY"));
        }
        self.patches[index].enabled = false;
        self.start_transition(index, Target::Unpatched);
        Ok(Outcome::Done)
    }

    /// The patch at `index` starts its transition, held open or not.
    fn start_transition(&mut self, index: usize, target: Target) {
        self.transition = Some(Transition {
            module: self.patches[index].module.clone(),
            target,
            blocked: self.blocks(index, target),
        });
    }

    /// klp_reverse_transition(): the only task not yet switched is the
    /// parked one, which already is in the new target state, so nothing
    /// holds the reversed transition.
    fn reverse(&mut self) {
        let t = self.transition.as_mut().expect("a transition to reverse");
        t.target = match t.target {
            Target::Patched => Target::Unpatched,
            Target::Unpatched => Target::Patched,
        };
        t.blocked = false;
        let module = t.module.clone();
        let index = self.patch_index(&module).expect("transition patch listed");
        self.patches[index].enabled = !self.patches[index].enabled;
    }

    /// klp_force_transition(): every task switches now; patches on their
    /// way out are marked forced, which keeps their modules for good.
    fn force(&mut self, module: &str) -> Outcome {
        if self.patch_index(module).is_none() {
            return Outcome::Refused("ENOENT");
        }
        let Some(t) = self.transition.as_mut().filter(|t| t.module == module) else {
            return Outcome::Refused("EINVAL");
        };
        t.blocked = false;
        let target = t.target;
        let replace = self.def(module).replace;
        for patch in &mut self.patches {
            let leaving = if patch.module == module {
                target == Target::Unpatched
            } else {
                target == Target::Patched && replace
            };
            patch.forced |= leaving;
        }
        Outcome::Done
    }

    fn park(&mut self) -> Outcome {
        if !self.target_loaded() {
            return Outcome::Refused("ENOENT");
        }
        if self.parked.is_none() {
            self.parked = Some(self.busy_copy_below(self.patches.len()));
        }
        Outcome::Done
    }

    fn unload(&mut self, module: &str) -> Result<Outcome, Unsupported> {
        if !self.is_loaded(module) {
            return Ok(Outcome::Refused("ENOENT"));
        }
        if module == target::MODULE {
            if self.transition.is_some() {
                return Err(Unsupported(
                    "unloading klp_target during a transition".into(),
                ));
            }
            // klp_module_going() unpatches the object; kthread_stop()
            // wakes the parked thread.
            self.parked = None;
        } else if self.patch_index(module).is_some() || self.pinned.contains(module) {
            // The patch (or a forced transition) holds a module reference.
            return Ok(Outcome::Refused("EAGAIN"));
        }
        self.loaded.retain(|m| m != module);
        Ok(Outcome::Done)
    }

    /// klp_complete_transition() and the freeing that follows it.
    fn complete_transition(&mut self) {
        let t = self.transition.take().expect("a transition to complete");
        let index = self
            .patch_index(&t.module)
            .expect("transition patch listed");
        match t.target {
            Target::Patched => {
                self.post_patch(index);
                if self.def(&t.module).replace {
                    // Replaced: the patches before it in the list, without
                    // their callbacks (klp_unpatch_replaced_patches()).
                    let replaced: Vec<Patch> = self.patches.drain(..index).collect();
                    replaced.into_iter().for_each(|p| self.free_patch(p));
                }
            }
            Target::Unpatched => {
                self.post_unpatch(index);
                let patch = self.patches.remove(index);
                self.free_patch(patch);
            }
        }
    }

    fn free_patch(&mut self, patch: Patch) {
        if patch.forced {
            self.pinned.insert(patch.module);
        }
    }

    /// The fixture's post_patch: each feature is published; a cumulative
    /// patch replaces the feature's whole owner stack. Publishing again
    /// (after a reversed disable) keeps the patch's place.
    fn post_patch(&mut self, index: usize) {
        let module = self.patches[index].module.clone();
        let def = self.def(&module).clone();
        for feature in &def.features {
            let entry = self.feature_entry(feature.id, &feature.name);
            if def.replace {
                entry.owners.clear();
            }
            if let Some(owner) = entry.owners.iter_mut().find(|(o, _)| *o == module) {
                owner.1 = feature.version;
            } else if entry.owners.len() < FEATURE_DEPTH {
                entry.owners.push((module.clone(), feature.version));
            }
        }
    }

    /// The fixture's post_unpatch: withdraw each feature, and free its
    /// data once no listed patch holds it.
    fn post_unpatch(&mut self, index: usize) {
        let module = self.patches[index].module.clone();
        let def = self.def(&module).clone();
        for feature in &def.features {
            let keeps_version = self.mutation == Some(Mutation::DisableKeepsVersion);
            if let Some(entry) = self.features.get_mut(&feature.id) {
                if let Some(at) = entry.owners.iter().rposition(|(o, _)| *o == module) {
                    if !keeps_version {
                        entry.owners.remove(at);
                    }
                }
            }
            let Some(Some(data)) = self.patches[index].data.insert(feature.id, None) else {
                continue;
            };
            // Replaced patches left without callbacks and hold nothing.
            let still_held = self
                .patches
                .iter()
                .any(|p| p.data.values().any(|d| *d == Some(data)));
            if still_held {
                continue;
            }
            self.live_data.remove(&data);
            if feature.shadow {
                // klp_shadow_free() frees whatever variable has that id.
                if let Some(entry) = self.features.get_mut(&feature.id) {
                    entry.shadow = false;
                }
            }
        }
    }

    /// The patch whose copy of `function` a task in the transition's
    /// target state runs (every task but a parked one is in it), if any.
    pub(super) fn live_patch(&self, function: &str) -> Option<&Patch> {
        for patch in self.patches.iter().rev() {
            let def = self.def(&patch.module);
            match &self.transition {
                Some(t) if t.module == patch.module && t.target == Target::Unpatched => continue,
                // A cumulative patch's nop leads to the original.
                Some(t) if t.module == patch.module && def.replace => {
                    return def.patches(function).then_some(patch)
                }
                _ => {}
            }
            if def.patches(function) {
                return Some(patch);
            }
        }
        None
    }

    /// What /sys/kernel/klp_target/status prints.
    pub(super) fn target_status(&self) -> String {
        let Some(patch) = self.live_patch(STATUS_FUNCTION) else {
            return "original".to_string();
        };
        let def = self.def(&patch.module);
        let mut status = def.reports.clone();
        for feature in &def.features {
            let enabled = self.features.get(&feature.id).is_some_and(|f| f.enabled);
            if feature.opt_in && !enabled {
                status.push_str(&format!(" f{}=off", feature.id));
            } else {
                status.push_str(&format!(" f{}=v{}", feature.id, feature.version));
            }
        }
        status
    }
}
