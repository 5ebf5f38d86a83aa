//! The scenario file format (`scenarios/*.yaml`).

use crate::yaml::Spanned;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// One line saying what the scenario shows.
    pub description: String,
    /// Kernels (names of `kernels/*.yaml`) to run on; all of them when absent.
    #[serde(default)]
    pub kernels: Option<Vec<Spanned<String>>>,
    /// What a kernel must offer for the scenario to apply; on other kernels
    /// it is reported as not applicable, with the reason.
    #[serde(default)]
    pub requires: Requires,
    /// Fixtures (names in `fixtures/`) to build and put into the guest.
    pub fixtures: Vec<Spanned<String>>,
    /// Modules built from a directory outside fixtures/, such as the
    /// kernel's samples/livepatch or the livepatch selftests' modules.
    #[serde(default)]
    pub external: Vec<Spanned<External>>,
    pub steps: Vec<Spanned<Step>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct External {
    /// `kernel:<path>` inside the kernel's source tree, or a directory
    /// relative to the scenario file.
    pub dir: String,
    /// Extra make arguments, e.g. CONFIG_SAMPLE_LIVEPATCH=m.
    #[serde(default)]
    pub make: Vec<String>,
    /// The .ko files (without .ko) the build makes, which steps load by name.
    pub modules: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// Lowest kernel version, e.g. "6.11".
    pub min_version: Option<Spanned<String>>,
    /// Livepatch sysfs attributes the scenario reads, e.g. [stack_order].
    #[serde(default)]
    pub sysfs: Vec<Spanned<String>>,
}

/// One action, with what must hold after it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// insmod a fixture; for a livepatch, then wait for its transition to end.
    pub load: Option<Spanned<String>>,
    /// Write 0 to the patch's `enabled`, then wait for the transition to end.
    pub disable: Option<Spanned<String>>,
    /// rmmod a fixture module.
    pub unload: Option<Spanned<String>>,
    /// Wait for the named patch's transition to end.
    pub wait: Option<Spanned<String>>,
    /// A guest shell command (escape hatch); must exit 0 unless `error` is set.
    pub run: Option<Spanned<String>>,
    /// Reverse the patch's transition in flight: write the opposite of its
    /// current target to `enabled` (no wait; follow with `wait`).
    pub reverse: Option<Spanned<String>>,
    /// Write 1 to the patch's `force`: complete its transition at once.
    pub force: Option<Spanned<String>>,
    /// Write `value` to this sysfs file, e.g. a feature's `enabled` knob.
    pub write: Option<Spanned<String>>,
    /// What `write` writes.
    pub value: Option<Spanned<String>>,
    /// The action must fail with this errno (e.g. EINVAL) instead of succeeding.
    pub error: Option<Spanned<String>>,
    /// Whether `load`/`disable` wait for the transition to end (default true).
    #[serde(default = "yes")]
    pub wait_transition: bool,
    #[serde(default)]
    pub expect: Expect,
}

fn yes() -> bool {
    true
}

/// Assertions checked after a step.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The patches under /sys/kernel/livepatch, bottom of the stack first.
    pub patches: Option<Spanned<Vec<String>>>,
    /// sysfs attributes of individual patches.
    #[serde(default)]
    pub patch: BTreeMap<String, Spanned<PatchState>>,
    /// Target outputs: file under /sys/kernel/klp_target ──> its content.
    #[serde(default)]
    pub target: BTreeMap<String, Spanned<String>>,
    /// Any guest file (e.g. /proc/cmdline) ──> its content.
    #[serde(default)]
    pub files: BTreeMap<String, Spanned<String>>,
    /// Lines that the kernel logged during this step, in this order
    /// (other lines may come between them).
    #[serde(default)]
    pub log: Vec<Spanned<String>>,
    /// The feature table under /sys/kernel/klp_features, by feature id.
    #[serde(default)]
    pub features: BTreeMap<u64, Spanned<FeatureState>>,
}

/// What /sys/kernel/klp_features/<id>/ shows; unset fields are not checked.
#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureState {
    pub name: Option<String>,
    /// A version number, or `none` once no patch carries the feature.
    pub version: Option<String>,
    pub owner: Option<String>,
    pub allocations: Option<u32>,
    pub enabled: Option<u8>,
    /// 1 while the feature's shadow variable exists.
    pub shadow: Option<u8>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PatchState {
    pub enabled: Option<u8>,
    pub transition: Option<u8>,
    pub replace: Option<u8>,
    pub stack_order: Option<u32>,
    /// `<object>/patched`, by object name (vmlinux for the kernel itself).
    pub patched: Option<BTreeMap<String, u8>>,
}
