//! The sysfs files the model predicts, in the format of the per-step
//! listing (`guest::livepatch::Listing`): one `path:value` line per file under the livepatch, feature
//! and target directories, as `grep -r .` prints them.

use super::state::Patch;
use super::state::Target;
use super::{Model, STATUS_FUNCTION};
use crate::fixture::shadow::Callback;
use crate::fixture::target::LONG_NAME_FUNCTION;
use std::collections::BTreeMap;

/// sysfs path ──> content (one line).
pub type Files = BTreeMap<String, String>;

const LIVEPATCH: &str = "/sys/kernel/livepatch";
const FEATURES: &str = "/sys/kernel/klp_features";
use crate::fixture::target::SYSFS_DIR as TARGET;

impl Model {
    /// Every file the listing after this state shows.
    pub fn predicted_files(&self) -> Files {
        let mut files = Files::new();
        let flag = |on: bool| if on { "1" } else { "0" }.to_string();
        let has = |attribute: &str| self.attributes.contains(&attribute);
        for (order, patch) in self.patches.iter().enumerate() {
            let dir = format!("{LIVEPATCH}/{}", patch.module);
            let in_transition = self
                .transition
                .as_ref()
                .is_some_and(|t| t.module == patch.module);
            files.insert(format!("{dir}/enabled"), flag(patch.enabled));
            files.insert(format!("{dir}/transition"), flag(in_transition));
            if has("replace") {
                let replace = self.defs[&patch.module].replace;
                files.insert(format!("{dir}/replace"), flag(replace));
            }
            if has("replace_set") {
                let set = self.defs[&patch.module].replace_set;
                files.insert(format!("{dir}/replace_set"), set.to_string());
            }
            if has("stack_order") {
                files.insert(format!("{dir}/stack_order"), (order + 1).to_string());
            }
            if has("patched") {
                files.insert(format!("{dir}/vmlinux/patched"), flag(true));
                let target = crate::fixture::target::MODULE;
                files.insert(
                    format!("{dir}/{target}/patched"),
                    flag(self.target_loaded()),
                );
            }
        }
        for (id, feature) in &self.features {
            let dir = format!("{FEATURES}/{id}");
            let (owner, version) = match feature.owners.last() {
                Some((owner, version)) => (owner.clone(), version.to_string()),
                None => ("none".to_string(), "none".to_string()),
            };
            files.insert(format!("{dir}/name"), feature.name.clone());
            files.insert(format!("{dir}/version"), version);
            files.insert(format!("{dir}/owner"), owner);
            files.insert(
                format!("{dir}/allocations"),
                feature.allocations.to_string(),
            );
            files.insert(format!("{dir}/enabled"), flag(feature.enabled));
            files.insert(format!("{dir}/shadow"), flag(feature.shadow));
            for callback in Callback::ALL {
                let seen = feature.prev[callback.index()].as_deref().unwrap_or("-");
                files.insert(format!("{dir}/prev_{}", callback.name()), seen.to_string());
            }
        }
        files.insert(format!("{FEATURES}/shadow/vars"), self.shadow_vars_file());
        files.insert(format!("{FEATURES}/shadow/dtors"), self.shadow_dtors_file());
        if self.target_loaded() {
            files.insert(format!("{TARGET}/park"), flag(self.parked.is_some()));
            files.insert(format!("{TARGET}/spin"), flag(self.spinning));
            files.insert(format!("{TARGET}/status"), self.target_status());
            let long_name = self
                .live_patch(LONG_NAME_FUNCTION)
                .map_or("original".to_string(), |p| {
                    self.def(&p.module).reports.clone()
                });
            files.insert(format!("{TARGET}/long_name"), long_name);
        }
        files
    }

    /// The patch whose copy of `function` a task in the transition's
    /// target state runs (every task but a parked one is in it), if any.
    pub(super) fn live_patch(&self, function: &str) -> Option<&Patch> {
        for (index, patch) in self.patches.iter().enumerate().rev() {
            let def = self.def(&patch.module);
            match &self.transition {
                Some(t) if t.module == patch.module && t.target == Target::Unpatched => continue,
                // A cumulative patch's nop, for a function of a patch it
                // replaces, leads to the original.
                Some(t)
                    if t.module == patch.module
                        && !def.patches(function)
                        && self.patches[..index].iter().any(|below| {
                            let below = self.def(&below.module);
                            self.replaces(def, below) && below.patches(function)
                        }) =>
                {
                    return None
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
        if def.klp_relocs {
            status.push_str(&format!(" secret={}", crate::fixture::target::SECRET_VALUE));
        }
        status
    }
}

/// None when they agree; otherwise one line per differing file.
pub fn diff(predicted: &Files, found: &Files) -> Option<String> {
    let mut lines = Vec::new();
    for (path, want) in predicted {
        match found.get(path) {
            Some(have) if have == want => {}
            Some(have) => lines.push(format!("  {path}: model {want}, kernel {have}")),
            None => lines.push(format!("  {path}: model {want}, kernel has no such file")),
        }
    }
    for (path, have) in found {
        if !predicted.contains_key(path) {
            lines.push(format!("  {path}: model has no such file, kernel {have}"));
        }
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_each_side() {
        let a: Files = [("/a".into(), "1".into()), ("/b".into(), "0".into())].into();
        let b: Files = [("/a".into(), "0".into()), ("/c".into(), "1".into())].into();
        let text = diff(&a, &b).unwrap();
        assert!(text.contains("/a: model 1, kernel 0"), "{text}");
        assert!(
            text.contains("/b: model 0, kernel has no such file"),
            "{text}"
        );
        assert!(
            text.contains("/c: model has no such file, kernel 1"),
            "{text}"
        );
        assert_eq!(diff(&a, &a), None);
    }
}
