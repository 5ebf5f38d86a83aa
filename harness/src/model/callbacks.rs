//! The fixture library's callbacks (fixtures/templates/livepatch.c.in,
//! fixtures/klp_features/): feature data taken over or allocated in
//! pre_patch, published in post_patch, withdrawn and freed in post_unpatch;
//! in each, what klp_get_prev_state() gives, then the spec's shadow
//! variable operations.

use super::state::{Feature, Model, Patch};
use super::{Mutation, Unsupported};
use crate::fixture::shadow::Callback;

/// The fixture library's table can hold this many owners per feature
/// (KLP_FEATURES_DEPTH in klp_features.c); pushes beyond it are dropped.
const FEATURE_DEPTH: usize = 8;

impl Model {
    /// The fixture's pre_patch: take each feature's data over from the
    /// topmost patch below that has it (sharing it), or allocate it.
    pub(super) fn pre_patch(&mut self, index: usize) -> Result<(), Unsupported> {
        let def = self.def(&self.patches[index].module).clone();
        for feature in &def.features {
            self.saw_prev(index, feature.id, &feature.name, Callback::PrePatch);
            let previous = self
                .prev_state(index, feature.id)
                .and_then(|p| p.data[&feature.id]);
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
        self.run_shadow_ops(&def, Callback::PrePatch)
    }

    /// What klp_get_prev_state() gives the patch at `index` for `id`, as
    /// klp_features shows it.
    fn saw_prev(&mut self, index: usize, id: u64, name: &str, callback: Callback) {
        let observer = self.patches[index].module.clone();
        let prev = self
            .prev_state(index, id)
            .map_or("none".to_string(), |p| p.module.clone());
        self.feature_entry(id, name).prev[callback.index()] =
            Some(format!("{observer} saw {prev}"));
    }

    /// klp_get_prev_state() (kernel/livepatch/state.c): the patch whose
    /// state it gives, the last before `index` in klp_patches that carries
    /// `id` (every listed patch has an entry in `data` for each of its ids).
    fn prev_state(&self, index: usize, id: u64) -> Option<&Patch> {
        self.patches[..index]
            .iter()
            .rev()
            .find(|p| p.data.contains_key(&id))
    }

    pub(super) fn feature_entry(&mut self, id: u64, name: &str) -> &mut Feature {
        self.features.entry(id).or_insert_with(|| Feature {
            name: name.to_string(),
            ..Feature::default()
        })
    }

    /// The fixture's post_patch: each feature is published; a cumulative
    /// patch replaces the feature's whole owner stack. Publishing again
    /// (after a reversed disable) keeps the patch's place.
    pub(super) fn post_patch(&mut self, index: usize) -> Result<(), Unsupported> {
        let module = self.patches[index].module.clone();
        let def = self.def(&module).clone();
        for feature in &def.features {
            self.saw_prev(index, feature.id, &feature.name, Callback::PostPatch);
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
        self.run_shadow_ops(&def, Callback::PostPatch)
    }

    /// The fixture's pre_unpatch: it only logs, and reports what
    /// klp_get_prev_state() gives it.
    pub(super) fn pre_unpatch(&mut self, index: usize) -> Result<(), Unsupported> {
        let def = self.def(&self.patches[index].module).clone();
        for feature in &def.features {
            self.saw_prev(index, feature.id, &feature.name, Callback::PreUnpatch);
        }
        self.run_shadow_ops(&def, Callback::PreUnpatch)
    }

    /// The fixture's post_unpatch: withdraw each feature, and free its
    /// data once no listed patch holds it.
    pub(super) fn post_unpatch(&mut self, index: usize) -> Result<(), Unsupported> {
        let module = self.patches[index].module.clone();
        let def = self.def(&module).clone();
        for feature in &def.features {
            self.saw_prev(index, feature.id, &feature.name, Callback::PostUnpatch);
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
        self.run_shadow_ops(&def, Callback::PostUnpatch)
    }
}
