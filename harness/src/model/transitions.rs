//! Transitions: what holds one open (the parked busy thread), how one
//! completes, reverses or is forced, and what it leaves pinned.

use super::state::{Impl, Model, Patch, Target, Transition};
use super::{Response, Unsupported, BUSY_FUNCTION};

/// kernel::behaviour rows the transitions depend on.
const FORCE_PINS_ONLY_LEAVING: &str = "force-pins-only-the-transition-patch";
const COND_RESCHED_SWITCHES: &str = "cond-resched-switches-task";
const REVERSAL_CHECKS_REAL_FUNCTION: &str = "reversed-disable-checks-real-function";

impl Model {
    pub(super) fn wait(&mut self, module: &str) -> Result<Response, Unsupported> {
        Ok(match &self.transition {
            Some(t) if t.module == module && t.held() => Response::StillRunning,
            Some(t) if t.module == module => {
                self.complete_transition()?;
                Response::Done
            }
            _ => Response::Done,
        })
    }

    /// Whether the parked thread keeps the transition of the patch at
    /// `index` towards `target` open (klp_check_stack_func()).
    pub(super) fn blocks(&self, index: usize, target: Target) -> bool {
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
                    || self.patches[..index].iter().any(|p| {
                        let below = self.def(&p.module);
                        self.replaces(def, below) && below.patches(BUSY_FUNCTION)
                    });
                touches && parked == self.busy_copy_below(index)
            }
            // The patch's own copy must not be on the stack.
            Target::Unpatched => {
                def.patches(BUSY_FUNCTION) && parked == Impl::Patch(patch.instance)
            }
        }
    }

    pub(super) fn busy_copy_below(&self, index: usize) -> Impl {
        self.patches[..index]
            .iter()
            .rev()
            .find(|p| self.def(&p.module).patches(BUSY_FUNCTION))
            .map_or(Impl::Original, |p| Impl::Patch(p.instance))
    }

    /// The patch at `index` starts its transition, held open or not.
    pub(super) fn start_transition(&mut self, index: usize, target: Target) {
        self.transition = Some(Transition {
            module: self.patches[index].module.clone(),
            target,
            held_by_park: self.blocks(index, target),
            // A running task cannot be switched by klp_try_switch_task();
            // since 6.4 cond_resched() switches it (klp_sched_try_switch).
            held_by_spinner: self.spinning && !self.profile.has(COND_RESCHED_SWITCHES),
        });
    }

    /// klp_reverse_transition(): the only task not yet switched is the
    /// parked one, which already is in the new target state, so nothing
    /// holds the reversed transition, except an unfixed upstream bug.
    pub(super) fn reverse(&mut self) -> Result<(), Unsupported> {
        if let Some(function) = self.reversal_reads_list_head() {
            return Err(Unsupported(format!(
                "reversing the disable of {}: it is the bottom but not the top of \
                 {function}'s stack, so klp_check_stack_func() reads the previous \
                 function from the list head in struct klp_ops (unfixed upstream, \
                 kernel::behaviour `{REVERSAL_CHECKS_REAL_FUNCTION}`); whether the \
                 reversed transition ever completes depends on heap contents",
                self.transition.as_ref().map_or("", |t| t.module.as_str())
            )));
        }
        let t = self.transition.as_mut().expect("a transition to reverse");
        t.target = match t.target {
            Target::Patched => Target::Unpatched,
            Target::Unpatched => Target::Patched,
        };
        t.held_by_park = false;
        t.held_by_spinner = false;
        let module = t.module.clone();
        let index = self.patch_index(&module).expect("transition patch listed");
        self.patches[index].enabled = !self.patches[index].enabled;
        Ok(())
    }

    /// A function the patch in an unpatching transition replaces, with a
    /// patch above it on that function's stack and none below. Reversed to
    /// "patched", klp_check_stack_func() takes list_next_entry() of the
    /// bottom entry as the previous patch's klp_func: the list head.
    fn reversal_reads_list_head(&self) -> Option<&'static str> {
        let t = self.transition.as_ref()?;
        if t.target != Target::Unpatched || self.profile.has(REVERSAL_CHECKS_REAL_FUNCTION) {
            return None;
        }
        let index = self.patch_index(&t.module)?;
        let replaces = |p: &Patch, f: &str| self.def(&p.module).patches(f);
        self.def(&t.module).functions.iter().copied().find(|f| {
            self.patches[index + 1..].iter().any(|p| replaces(p, f))
                && !self.patches[..index].iter().any(|p| replaces(p, f))
        })
    }

    /// klp_force_transition(): every task switches now; patches on their
    /// way out are marked forced, which keeps their modules for good (on
    /// older kernels, every installed patch is).
    pub(super) fn force(&mut self, module: &str) -> Response {
        if self.patch_index(module).is_none() {
            return Response::Refused("ENOENT");
        }
        let Some(t) = self.transition.as_mut().filter(|t| t.module == module) else {
            return Response::Refused("EINVAL");
        };
        t.held_by_park = false;
        t.held_by_spinner = false;
        let target = t.target;
        let def = self.def(module);
        let leaving: Vec<bool> = self
            .patches
            .iter()
            .map(|patch| {
                if patch.module == module {
                    target == Target::Unpatched
                } else {
                    target == Target::Patched && self.replaces(def, self.def(&patch.module))
                }
            })
            .collect();
        // Before 2957308343fa (5.18) every installed patch was marked.
        let only_leaving = self.profile.has(FORCE_PINS_ONLY_LEAVING);
        for (patch, leaving) in self.patches.iter_mut().zip(leaving) {
            patch.forced |= leaving || !only_leaving;
        }
        Response::Done
    }

    /// klp_target's spin knob: start or stop the CPU-bound thread. One
    /// started during a transition copies an already switched parent's
    /// state (klp_copy_process()), so it holds nothing.
    pub(super) fn spin(&mut self, on: bool) -> Response {
        if !self.target_loaded() {
            return Response::Refused("ENOENT");
        }
        self.spinning = on;
        if !on {
            if let Some(t) = &mut self.transition {
                t.held_by_spinner = false;
            }
        }
        Response::Done
    }

    pub(super) fn park(&mut self) -> Response {
        if !self.target_loaded() {
            return Response::Refused("ENOENT");
        }
        if self.parked.is_none() {
            self.parked = Some(self.busy_copy_below(self.patches.len()));
        }
        Response::Done
    }

    /// klp_complete_transition() and the freeing that follows it.
    pub(super) fn complete_transition(&mut self) -> Result<(), Unsupported> {
        let t = self.transition.take().expect("a transition to complete");
        let index = self
            .patch_index(&t.module)
            .expect("transition patch listed");
        match t.target {
            Target::Patched => {
                self.post_patch(index)?;
                // Replaced: the patches before it in the list (of its set),
                // without their callbacks (klp_unpatch_replaced_patches()).
                let new = self.def(&t.module);
                let is_replaced: Vec<bool> = self.patches[..index]
                    .iter()
                    .map(|p| self.replaces(new, self.def(&p.module)))
                    .collect();
                let below: Vec<Patch> = self.patches.drain(..index).collect();
                let mut kept = Vec::new();
                for (patch, replaced) in below.into_iter().zip(is_replaced) {
                    match replaced {
                        true => self.free_patch(patch),
                        false => kept.push(patch),
                    }
                }
                self.patches.splice(0..0, kept);
            }
            Target::Unpatched => {
                self.post_unpatch(index)?;
                let patch = self.patches.remove(index);
                self.free_patch(patch);
            }
        }
        Ok(())
    }

    pub(super) fn free_patch(&mut self, patch: Patch) {
        if patch.forced {
            self.pinned.insert(patch.module);
        }
    }
}
