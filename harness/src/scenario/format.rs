//! The scenario file format (`scenarios/*.yaml`), as serde reads it.
//!
//! `Spanned` fields keep their file position for error messages; for the
//! JSON Schema they are described as the value they wrap.

use crate::yaml::Spanned;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "klp-harness scenario")]
pub struct ScenarioFile {
    /// One line saying what the scenario shows.
    pub description: String,
    /// The rules of the coverage suite it checks, R1 to R16 (see docs/scenarios.md).
    #[schemars(with = "Vec<String>")]
    #[serde(default)]
    pub rules: Vec<Spanned<String>>,
    /// Kernels (names of `kernels/*.yaml`) to run on; all of them when absent.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub kernels: Option<Vec<Spanned<String>>>,
    /// What a kernel must offer for the scenario to apply; on other kernels
    /// it is reported as not applicable, with the reason.
    #[serde(default)]
    pub requires: Requires,
    /// Fixtures (names in `fixtures/`) to build and put into the guest.
    #[schemars(with = "Vec<String>")]
    pub fixtures: Vec<Spanned<String>>,
    /// Modules built from a directory outside fixtures/, such as the
    /// kernel's samples/livepatch or the livepatch selftests' modules.
    #[serde(default)]
    #[schemars(with = "Vec<External>")]
    pub external: Vec<Spanned<External>>,
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Spanned<Step>>,
    /// Boot the kernel for this scenario rather than start from the saved
    /// state of an earlier boot (for scenarios about the boot itself).
    #[serde(default)]
    pub fresh_boot: bool,
    /// Guest CPUs, 1 to 8 (default 1). On one CPU a transition completes at
    /// klp's first try; a scenario about concurrency asks for 2 or more.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub cpus: Option<Spanned<u32>>,
    /// The guest's clock under TCG: `counted` (the default with one CPU)
    /// counts guest time in instructions and skips idle time, so waits for
    /// klp's retries and `sleep` cost no host time; `real` runs it in real
    /// time. Guests with more than one CPU, and guests under KVM, always
    /// run on the real clock.
    #[serde(default)]
    #[schemars(with = "Option<crate::settings::ClockChoice>")]
    pub clock: Option<Spanned<crate::settings::ClockChoice>>,
    /// Check every step against the reference model as well: the step's
    /// outcome (success or errno) and every file under
    /// /sys/kernel/livepatch, /sys/kernel/klp_features and
    /// /sys/kernel/klp_target. Explicit expectations are checked first.
    #[serde(default)]
    pub follow_model: bool,
    /// Kernel log lines and taint flags this scenario expects, which would
    /// otherwise fail it.
    #[serde(default)]
    pub allow: Allow,
    /// The upstream fix this scenario checks: a row of the kernel behaviour
    /// table (`klp-harness kernel show` lists them), e.g.
    /// force-pins-only-the-transition-patch. On a kernel without the fix,
    /// a failure at a step marked `shows_bug` is reported as "reproduces
    /// known bug"; with the fix, the scenario must pass.
    #[schemars(with = "Option<String>")]
    pub fix: Option<Spanned<String>>,
}

/// Every scenario fails on a kernel warning, BUG, Oops, lockdep report or
/// RCU stall, and on any taint flag other than K (livepatch), O (module
/// built outside the tree) and E (unsigned module), unless allowed here.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Taint flag letters, e.g. [W].
    #[schemars(with = "Vec<String>")]
    #[serde(default)]
    pub taint: Vec<Spanned<String>>,
    /// Fragments of kernel log lines that may appear, e.g. "WARNING: CPU:".
    #[schemars(with = "Vec<String>")]
    #[serde(default)]
    pub log: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// Lowest kernel version, e.g. "6.11".
    #[schemars(with = "Option<String>")]
    pub min_version: Option<Spanned<String>>,
    /// Livepatch sysfs attributes the scenario reads, e.g. [stack_order].
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub sysfs: Vec<Spanned<String>>,
    /// Rows of kernels/BEHAVIOURS.md the kernel must have, e.g.
    /// [state-version] for modules written against `klp_state.version`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub behaviours: Vec<Spanned<String>>,
}

/// One action, with what must hold after it.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// insmod a fixture; for a livepatch, then wait for its transition to end.
    #[schemars(with = "Option<String>")]
    pub load: Option<Spanned<String>>,
    /// Write 0 to the patch's `enabled`, then wait for the transition to end.
    #[schemars(with = "Option<String>")]
    pub disable: Option<Spanned<String>>,
    /// rmmod a fixture module.
    #[schemars(with = "Option<String>")]
    pub unload: Option<Spanned<String>>,
    /// Wait for the named patch's transition to end.
    #[schemars(with = "Option<String>")]
    pub wait: Option<Spanned<String>>,
    /// A guest shell command (escape hatch); must exit 0 unless `error` is set.
    #[schemars(with = "Option<String>")]
    pub run: Option<Spanned<String>>,
    /// Reverse the patch's transition in flight: write the opposite of its
    /// current target to `enabled` (no wait; follow with `wait`).
    #[schemars(with = "Option<String>")]
    pub reverse: Option<Spanned<String>>,
    /// Write 1 to the patch's `force`: complete its transition at once.
    #[schemars(with = "Option<String>")]
    pub force: Option<Spanned<String>>,
    /// Write `value` to this sysfs file, e.g. a feature's `enabled` knob.
    #[schemars(with = "Option<String>")]
    pub write: Option<Spanned<String>>,
    /// What `write` writes.
    #[schemars(with = "Option<String>")]
    pub value: Option<Spanned<String>>,
    /// Park klp_target's busy kthread inside klp_target_busy_wait(), which
    /// keeps a transition of any patch replacing that function open.
    #[schemars(with = "Option<String>")]
    pub park: Option<Spanned<String>>,
    /// Let the parked kthread leave klp_target_busy_wait().
    #[schemars(with = "Option<String>")]
    pub release: Option<Spanned<String>>,
    /// Start klp_target's CPU-bound kthread, which loops on cond_resched()
    /// outside any patched function and never sleeps.
    #[schemars(with = "Option<String>")]
    pub spin: Option<Spanned<String>>,
    /// Stop the CPU-bound kthread.
    #[schemars(with = "Option<String>")]
    pub stop_spin: Option<Spanned<String>>,
    /// Run `steps` this many times.
    #[schemars(with = "Option<u32>")]
    pub repeat: Option<Spanned<u32>>,
    /// The block that `repeat` runs.
    #[schemars(with = "Option<Vec<Step>>")]
    pub steps: Option<Vec<Spanned<Step>>>,
    /// The action must fail with this errno (e.g. EINVAL) instead of succeeding.
    #[schemars(with = "Option<String>")]
    pub error: Option<Spanned<String>>,
    /// Check this step against the reference model, or not, whatever the
    /// scenario's `follow_model` says. The model follows the step either way.
    #[schemars(with = "Option<bool>")]
    pub follow_model: Option<Spanned<bool>>,
    /// Whether `load`/`disable` wait for the transition to end (default true).
    #[serde(default = "yes")]
    pub wait_transition: bool,
    /// Seconds this step waits for its transition to end, instead of
    /// `KLP_HARNESS_TRANSITION_TIMEOUT`: for a step that shows a transition
    /// staying open, where waiting longer shows nothing more.
    #[schemars(with = "Option<u32>")]
    pub within: Option<Spanned<u32>>,
    /// On a kernel without the scenario's `fix`, this step fails: that is
    /// the known bug showing.
    #[serde(default)]
    pub shows_bug: bool,
    #[serde(default)]
    pub expect: Expect,
}

fn yes() -> bool {
    true
}

/// Assertions checked after a step.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The patches under /sys/kernel/livepatch, bottom of the stack first.
    #[schemars(with = "Option<Vec<String>>")]
    pub patches: Option<Spanned<Vec<String>>>,
    /// sysfs attributes of individual patches.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, PatchState>")]
    pub patch: BTreeMap<String, Spanned<PatchState>>,
    /// Target outputs: file under /sys/kernel/klp_target ──> its content.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub target: BTreeMap<String, Spanned<String>>,
    /// Any guest file (e.g. /proc/cmdline) ──> its content;
    /// `{kernel_command_line}` in it stands for the command line the
    /// guest's kernel booted with.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub files: BTreeMap<String, Spanned<String>>,
    /// Lines that the kernel logged during this step, in this order
    /// (other lines may come between them). On a `wait` step: since the
    /// step that started or reversed the transition, which klp's retry
    /// may complete during any step in between.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub log: Vec<Spanned<String>>,
    /// What the step's own command printed (for `run`), without the final
    /// newline.
    #[schemars(with = "Option<String>")]
    pub output: Option<Spanned<String>>,
    /// Fragments that no line this step logged may contain, e.g. a
    /// replaced patch's callbacks; on a `wait` step, no line since its
    /// transition started.
    #[schemars(with = "Vec<String>")]
    #[serde(default)]
    pub not_logged: Vec<Spanned<String>>,
    /// The feature table under /sys/kernel/klp_features, by feature id.
    #[serde(default)]
    #[schemars(with = "BTreeMap<u64, FeatureState>")]
    pub features: BTreeMap<u64, Spanned<FeatureState>>,
    /// The modules loaded after the step, as /proc/modules lists them,
    /// in any order; only names starting with `klp_` or `livepatch` count,
    /// so modules the guest loads at boot do not.
    #[schemars(with = "Option<Vec<String>>")]
    pub modules: Option<Spanned<Vec<String>>>,
}

/// The prefixes of the module names that `modules` expectations see:
/// fixtures and livepatch samples, not what the guest loads at boot.
pub const WATCHED_MODULES: &[&str] = &["klp_", "livepatch"];

pub fn is_watched_module(name: &str) -> bool {
    WATCHED_MODULES
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// What /sys/kernel/klp_features/<id>/ shows; unset fields are not checked.
#[derive(Debug, Default, Deserialize, Clone, PartialEq, JsonSchema)]
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

#[derive(Debug, Default, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchState {
    pub enabled: Option<u8>,
    pub transition: Option<u8>,
    pub replace: Option<u8>,
    pub stack_order: Option<u32>,
    /// `<object>/patched`, by object name (vmlinux for the kernel itself).
    pub patched: Option<BTreeMap<String, u8>>,
}
