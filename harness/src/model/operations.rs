//! How each operation changes the model: load, disable, unload, the
//! writes to `enabled`, and the step that predicts them.

use super::state::{Model, Patch, Target};
use super::{Mutation, Op, PatchDef, Prediction, Response, Unsupported};
use crate::fixture::target::{self, LONG_NAME_FUNCTION};

/// kernel::behaviour rows the operations depend on.
const LONG_FUNCTION_NAMES: &str = "long-function-names";

impl Model {
    /// Apply one operation; `wait` is whether the step then waits for the
    /// transition it started (as `load` and `disable` do by default).
    pub fn step(&mut self, op: &Op, wait: bool) -> Result<Prediction, Unsupported> {
        // A transition nobody holds ends at klp's next try, within a
        // second: until a wait, only steps it cannot affect are predictable.
        if let Some(t) = self.transition.as_ref().filter(|t| !t.held()) {
            let independent = match op {
                Op::Wait(_) | Op::Release | Op::StopSpin | Op::WriteFeatureEnabled { .. } => true,
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
            Op::Wait(module) => self.wait(module)?,
            Op::Reverse(module) => match self.enabled(module) {
                Some(enabled) => self.write_enabled(module, !enabled)?,
                None => Response::Refused("ENOENT"),
            },
            Op::Force(module) => self.force(module),
            Op::Park => self.park(),
            Op::Release => {
                self.parked = None;
                if let Some(t) = &mut self.transition {
                    t.held_by_park = false;
                }
                Response::Done
            }
            Op::Spin => self.spin(true),
            Op::StopSpin => self.spin(false),
            Op::WritePatchEnabled { module, value } => self.write_enabled(module, *value)?,
            Op::WriteFeatureEnabled { id, value } => match self.features.get_mut(id) {
                Some(feature) => {
                    feature.enabled = *value;
                    Response::Done
                }
                None => Response::Refused("ENOENT"),
            },
        };
        let outcome = match (&outcome, op) {
            (Response::Done, Op::Load(module) | Op::Disable(module)) if wait => {
                match self.transition.as_ref() {
                    Some(t) if &t.module == module => self.wait(module)?,
                    _ => Response::Done,
                }
            }
            _ => outcome,
        };
        let settled = self.transition.as_ref().is_none_or(|t| t.held());
        Ok(Prediction { outcome, settled })
    }
    pub(super) fn load(&mut self, module: &str) -> Result<Response, Unsupported> {
        if self.is_loaded(module) {
            return Ok(Response::Refused("EEXIST"));
        }
        if module == target::MODULE {
            if self.transition.is_some() {
                return Err(Unsupported("loading klp_target during a transition".into()));
            }
            return Ok(self.load_target());
        }
        let Some(def) = self.defs.get(module).cloned() else {
            return Err(Unsupported(format!(
                "{module} is not a livepatch generated from fixtures/*.yaml"
            )));
        };
        // klp_enable_patch(): the compatibility check comes first
        // (state.c), then "one transition at a time" (__klp_enable_patch).
        if !self.compatible(&def) {
            return Ok(Response::Refused("EINVAL"));
        }
        // klp_init_func(): an old_name of KSYM_NAME_LEN characters or more
        // is refused, and KSYM_NAME_LEN was 128 before 6.1.
        if def.patches(LONG_NAME_FUNCTION) && !self.profile.has(LONG_FUNCTION_NAMES) {
            return Ok(Response::Refused("EINVAL"));
        }
        // klp_init_object_loaded(): klp_find_object_symbol() finds no
        // symbol at that position in vmlinux, which is always there.
        if def.missing_symbol {
            return Ok(Response::Refused("EINVAL"));
        }
        if self.transition.is_some() {
            return Ok(Response::Refused("EBUSY"));
        }
        if let Some(errno) = &def.pre_patch_error {
            // The vmlinux pre_patch callback fails before it allocates.
            return Ok(Response::Refused(crate::errno::canonical(errno)));
        }
        if let Some(errno) = def.target_pre_patch_error_once.as_deref() {
            if self.target_loaded() {
                // Every load attempt is a new module whose klp_target
                // callback refuses its first call.
                if !def.features.is_empty() {
                    return Err(Unsupported(format!(
                        "{module} carries features and klp_target's pre_patch refuses it: \
                         the vmlinux callbacks it ran first are not modelled"
                    )));
                }
                return Ok(Response::Refused(crate::errno::canonical(errno)));
            }
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
            // klp_init_object_loaded() writes them if klp_target is there.
            relocs_written: def.klp_relocs && self.target_loaded(),
            target_refusal_pending: def.target_pre_patch_error_once.is_some(),
        });
        let index = self.patches.len() - 1;
        self.pre_patch(index)?;
        self.start_transition(index, Target::Patched);
        Ok(Response::Done)
    }
    /// klp_is_patch_compatible(): every state on every installed patch
    /// must be carried by a patch that replaces it, and every carried
    /// state at a version no lower than the installed one. With replace
    /// sets, a patch of another set shares no state and no function.
    /// With the states series there are no versions: a patch that
    /// replaces another must carry each of its block_disable states.
    pub(super) fn compatible(&self, new: &PatchDef) -> bool {
        self.patches.iter().all(|old| {
            let old_def = self.def(&old.module);
            if self.shares_with_another_set(new, old_def) {
                return false;
            }
            let drops_blocking_state = old_def.states.iter().any(|old_state| {
                old_state.block_disable
                    && !new.states.iter().any(|s| s.id == old_state.id)
                    && self.replaces(new, old_def)
            });
            if drops_blocking_state {
                return false;
            }
            old_def
                .features
                .iter()
                .all(|old_state| match new.feature(old_state.id) {
                    None => !self.replaces(new, old_def),
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
    /// enabled_store(): the same value is EINVAL; the patch in transition
    /// reverses; 0 disables; 1 on a patch not in transition is EINVAL
    /// (a disabled patch cannot be enabled again).
    pub(super) fn write_enabled(
        &mut self,
        module: &str,
        value: bool,
    ) -> Result<Response, Unsupported> {
        let Some(index) = self.patch_index(module) else {
            return Ok(Response::Refused("ENOENT"));
        };
        if self.patches[index].enabled == value {
            return Ok(Response::Refused("EINVAL"));
        }
        // The states series refuses before it looks for a transition to
        // reverse, so a patch with a block_disable state cannot take back
        // its own patching transition either.
        if self.patches[index].enabled && self.def(module).disable_blocked() {
            return Ok(Response::Refused("EINVAL"));
        }
        if self.is_transition(module) {
            self.reverse()?;
            return Ok(Response::Done);
        }
        if value {
            return Ok(Response::Refused("EINVAL"));
        }
        if self.transition.is_some() {
            return Ok(Response::Refused("EBUSY"));
        }
        self.patches[index].enabled = false;
        self.pre_unpatch(index)?;
        self.start_transition(index, Target::Unpatched);
        Ok(Response::Done)
    }
    pub(super) fn unload(&mut self, module: &str) -> Result<Response, Unsupported> {
        if !self.is_loaded(module) {
            return Ok(Response::Refused("ENOENT"));
        }
        if module == target::MODULE {
            if self.transition.is_some() {
                return Err(Unsupported(
                    "unloading klp_target during a transition".into(),
                ));
            }
            // kthread_stop() wakes the parked thread and ends the spinning one.
            self.parked = None;
            self.spinning = false;
            self.target_going();
        } else if self.patch_index(module).is_some() || self.pinned.contains(module) {
            // The patch (or a forced transition) holds a module reference.
            return Ok(Response::Refused("EAGAIN"));
        }
        self.loaded.retain(|m| m != module);
        Ok(Response::Done)
    }
}
