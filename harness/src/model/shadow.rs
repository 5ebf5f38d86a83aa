//! The fixtures' shadow variables (fixture::shadow) as kernel/livepatch/
//! shadow.c keeps them, and the destructor calls klp_features records.

use super::state::Model;
use super::{PatchDef, Unsupported};
use crate::fixture::shadow::{self, Callback, ShadowCall};

/// KLP_SHADOW_DTORS_MAX in klp_features.c: calls beyond it are counted only.
const DTOR_RECORDS: usize = 32;

impl Model {
    /// Run the operations `def`'s callback runs, in order.
    pub(super) fn run_shadow_ops(
        &mut self,
        def: &PatchDef,
        callback: Callback,
    ) -> Result<(), Unsupported> {
        for op in def.shadow_vars.at(callback) {
            let key = (op.object(), op.id);
            match op.op {
                ShadowCall::Get => {}
                // klp_shadow_alloc() of an existing variable WARNs
                // (__klp_shadow_get_or_alloc()), and a run judges the
                // warning a failure.
                ShadowCall::Alloc if self.shadow_vars.contains_key(&key) => {
                    return Err(Unsupported(format!(
                        "{} allocates shadow variable {}/{} in {}, which exists: \
                         klp_shadow_alloc() warns \"Duplicate shadow variable\"",
                        def.module,
                        key.0,
                        key.1,
                        callback.name()
                    )));
                }
                // get_or_alloc of an existing variable returns it without
                // calling the constructor.
                ShadowCall::GetOrAlloc if self.shadow_vars.contains_key(&key) => {}
                // A failing constructor: the new variable is thrown away.
                ShadowCall::Alloc | ShadowCall::GetOrAlloc if op.ctor_error.is_some() => {}
                ShadowCall::Alloc | ShadowCall::GetOrAlloc => {
                    self.shadow_vars.insert(key, op.value.unwrap_or(0));
                }
                ShadowCall::Free => self.free_shadow(key, op.dtor, &def.module)?,
                ShadowCall::FreeAll => {
                    for obj in 0..shadow::OBJECTS {
                        self.free_shadow((obj, op.id), op.dtor, &def.module)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn free_shadow(&mut self, key: (u8, u8), dtor: bool, patch: &str) -> Result<(), Unsupported> {
        let Some(value) = self.shadow_vars.remove(&key) else {
            return Ok(());
        };
        if dtor {
            if self.shadow_dtors.len() == DTOR_RECORDS {
                return Err(Unsupported(format!(
                    "more than {DTOR_RECORDS} shadow destructor calls: klp_features keeps \
                     the first {DTOR_RECORDS}, and free_all's order is the hash table's"
                )));
            }
            self.shadow_dtors
                .push((key.0, key.1, value, patch.to_string()));
            self.shadow_dtors.sort();
        }
        Ok(())
    }

    /// /sys/kernel/klp_features/shadow/vars.
    pub(super) fn shadow_vars_file(&self) -> String {
        let vars: Vec<String> = self
            .shadow_vars
            .iter()
            .map(|((obj, id), value)| format!("{obj}/{id}={value}"))
            .collect();
        if vars.is_empty() {
            "none".to_string()
        } else {
            vars.join(" ")
        }
    }

    /// /sys/kernel/klp_features/shadow/dtors.
    pub(super) fn shadow_dtors_file(&self) -> String {
        let calls: Vec<String> = self
            .shadow_dtors
            .iter()
            .map(|(obj, id, value, patch)| format!("{obj}/{id}={value}({patch})"))
            .collect();
        if calls.is_empty() {
            "none".to_string()
        } else {
            calls.join(" ")
        }
    }
}
