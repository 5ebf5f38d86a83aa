//! Replace sets, on a kernel with the unmerged replace set series
//! (kernel::behaviour `replace-set`): which installed patches a new patch
//! replaces, and what it may not share with the patches of other sets.
//! Read from kernel/livepatch/{core,state,transition}.c of
//! `src-7.2-replace-set`. Without the series every cumulative patch
//! replaces every installed patch, and nothing is shared out.

use super::state::Model;
use super::PatchDef;
use crate::kernel::behaviour::REPLACE_SET;

impl Model {
    /// Whether `new`, once its transition completes, replaces `old`:
    /// klp_unpatch_replaced_patches() and klp_add_nops() skip the
    /// patches of other sets.
    pub(super) fn replaces(&self, new: &PatchDef, old: &PatchDef) -> bool {
        if self.profile.has(REPLACE_SET) {
            new.replace_set == old.replace_set
        } else {
            new.replace
        }
    }

    /// klp_is_patch_compatible() with the series: a patch of another set
    /// may carry none of `new`'s state ids and replace none of its
    /// functions. (The nops of a patch in transition, which
    /// klp_find_func() also finds, are for functions of same-set patches
    /// still listed until the transition ends: they add nothing.)
    pub(super) fn shares_with_another_set(&self, new: &PatchDef, old: &PatchDef) -> bool {
        self.profile.has(REPLACE_SET)
            && new.replace_set != old.replace_set
            && (old.features.iter().any(|s| new.feature(s.id).is_some())
                || new.functions.iter().any(|f| old.patches(f)))
    }
}
