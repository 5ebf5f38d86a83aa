//! klp_target coming and going (klp_module_coming() and klp_module_going()
//! in kernel/livepatch/core.c): the klp relocations livepatches write into
//! their own modules for it, and its pre_patch callbacks.

use super::state::Model;
use super::Response;
use crate::fixture::target;

/// kernel::behaviour rows the module hooks depend on.
const CLEARED_ON_UNLOAD: &str = "klp-relocs-cleared-on-module-unload";
const CLEARED_AFTER_FAILED_COMING: &str = "klp-relocs-cleared-after-failed-coming";

/// busybox's insmod tries finit_module(), then init_module() once more.
const LOAD_ATTEMPTS: usize = 2;

impl Model {
    /// insmod klp_target: every listed patch is patched into it, or the
    /// load fails; the errno of the last attempt is the one insmod shows.
    pub(super) fn load_target(&mut self) -> Response {
        let mut refused = "EINVAL";
        for _ in 0..LOAD_ATTEMPTS {
            match self.target_coming() {
                Ok(()) => {
                    self.loaded.push(target::MODULE.to_string());
                    return Response::Done;
                }
                Err(errno) => refused = errno,
            }
        }
        Response::Refused(refused)
    }

    /// klp_module_coming(), patch by patch in list order: write the patch's
    /// klp relocations (ENOEXEC if they are still written), then run its
    /// klp_target pre_patch callback.
    fn target_coming(&mut self) -> Result<(), &'static str> {
        for index in 0..self.patches.len() {
            let def = self.def(&self.patches[index].module).clone();
            let patch = &mut self.patches[index];
            let failed = if def.klp_relocs && patch.relocs_written {
                // apply_relocate_add(): "existing value is nonzero".
                Some("ENOEXEC")
            } else {
                patch.relocs_written |= def.klp_relocs;
                match def.target_pre_patch_error_once.as_deref() {
                    Some(errno) if patch.target_refusal_pending => {
                        patch.target_refusal_pending = false;
                        Some(crate::errno::canonical(errno))
                    }
                    _ => None,
                }
            };
            if let Some(errno) = failed {
                // klp_cleanup_module_patches_limited() undoes the patches
                // before this one, which clears their relocations only
                // where klp_module_going() would; this one's stay.
                let clears = self.profile.has(CLEARED_ON_UNLOAD);
                for earlier in &mut self.patches[..index] {
                    earlier.relocs_written &= !clears;
                }
                if self.profile.has(CLEARED_AFTER_FAILED_COMING) {
                    self.patches[index].relocs_written = false;
                }
                return Err(errno);
            }
        }
        Ok(())
    }

    /// klp_module_going(): the patches let go of klp_target; their
    /// relocations are cleared since 6.3 and stay written before.
    pub(super) fn target_going(&mut self) {
        if self.profile.has(CLEARED_ON_UNLOAD) {
            for patch in &mut self.patches {
                patch.relocs_written = false;
            }
        }
    }
}
