//! Livepatch behaviour that differs between kernel versions, as one table:
//! sysfs attributes, and changes a scenario can observe (refusals, which
//! modules stay pinned, what holds a transition open). The reference model
//! and `requires:` read it; a scenario names a row with `fix:` when it
//! reproduces the bug that change fixed.
//!
//! Whether a kernel has a change is decided from its source tree when
//! there is one (stable backports move changes into older series), else
//! from its version.

use super::version::{compare, parse_version};
use std::collections::BTreeMap;
use std::path::Path;

/// One upstream change to livepatch behaviour.
#[derive(Debug)]
pub struct Behaviour {
    /// How scenarios (`fix:`) and the model name it.
    pub id: &'static str,
    /// What a kernel without the change does.
    pub before: &'static str,
    /// What a kernel with the change does.
    pub after: &'static str,
    /// The upstream commit(s), first 12 hex digits, and the first one's
    /// title, where they could be named.
    pub commits: &'static [&'static str],
    pub title: Option<&'static str>,
    /// The first upstream release with the change; None for a bug no
    /// release has fixed yet, or for a change only a series has.
    pub since: Option<&'static str>,
    /// The unmerged series that brings the change, as its cover letter
    /// names it: only variant kernels carrying it have the row.
    pub proposed: Option<&'static str>,
    /// A later change that took it away again.
    pub until: Option<Removal>,
    /// A livepatch sysfs attribute the change added.
    pub sysfs: Option<&'static str>,
    /// How a source tree shows whether it has the change.
    pub detect: Option<Detect>,
    /// What the reference model does with it.
    pub modelled: Modelled,
    /// The architectures (kbuild's ARCH) whose kernels show the "before"
    /// side; a kernel of any other acts as "after" whatever its version.
    /// None: every architecture.
    pub shows_on: Option<&'static [&'static str]>,
}

/// How far the reference model follows a behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modelled {
    /// It predicts both sides.
    Yes,
    No,
    /// It refuses to predict the steps where the kernel's answer depends
    /// on more than the model knows, so explore does not generate them.
    Refuses,
}

impl Modelled {
    pub fn label(self) -> &'static str {
        match self {
            Modelled::Yes => "yes",
            Modelled::No => "no",
            Modelled::Refuses => "refuses",
        }
    }
}

/// The release and commit that removed a behaviour again.
#[derive(Debug)]
pub struct Removal {
    pub release: &'static str,
    pub commit: &'static str,
    pub title: &'static str,
}

/// Text that only a tree with the change has, in one file (whitespace
/// runs compare as one space). A tree whose file lacks it lacks the change;
/// a tree without the file is decided by its version.
#[derive(Debug)]
pub struct Detect {
    pub file: &'static str,
    pub with: &'static str,
}

/// For the klp-relocation rows: only x86's apply_relocate_add() refuses
/// a target that is already written ("existing value is nonzero",
/// arch/x86/kernel/module.c); arm64's overwrites it, and powerpc's
/// restore_r2() accepts its own earlier write (arch/powerpc/kernel/
/// module_64.c).
const X86_ONLY: &[&str] = &["x86"];

/// The row of the unmerged replace set series: fixtures, scenarios and
/// the model ask for it by this name.
pub const REPLACE_SET: &str = "replace-set";

/// The rows of the unmerged states series ("livepatch: Better integrate
/// callbacks and shadow variables with the states API"): it adds the
/// first and takes the other two away.
pub const STATE_CALLBACKS: &str = "state-callbacks";
pub const STATE_VERSION: &str = "state-version";
pub const OBJECT_CALLBACKS: &str = "object-callbacks";

/// Every behaviour the harness knows, oldest first. Read from the
/// kernel/livepatch, include/linux, kernel/sched and arch/x86 sources of
/// 5.10.262, 6.1.192, 6.12.117 and 7.2.13; the commits and releases from
/// the live-patching list's pull requests.
pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        id: "sysfs-enabled",
        before: "no livepatch sysfs",
        after: "/sys/kernel/livepatch/<patch>/enabled",
        commits: &[],
        title: None,
        since: Some("4.0"),
        proposed: None,
        until: None,
        sysfs: Some("enabled"),
        detect: None,
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "sysfs-transition",
        before: "no transition attribute",
        after: "/sys/kernel/livepatch/<patch>/transition",
        commits: &[],
        title: None,
        since: Some("4.12"),
        proposed: None,
        until: None,
        sysfs: Some("transition"),
        detect: None,
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "sysfs-force",
        before: "no force attribute",
        after: "/sys/kernel/livepatch/<patch>/force",
        commits: &[],
        title: None,
        since: Some("4.15"),
        proposed: None,
        until: None,
        sysfs: Some("force"),
        detect: None,
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: OBJECT_CALLBACKS,
        before: "no callbacks",
        after: "klp_object.callbacks: pre/post (un)patch callbacks per object, run for every \
                patch that is enabled or disabled",
        commits: &[],
        title: Some("livepatch: add (un)patch callbacks"),
        since: Some("4.15"),
        proposed: None,
        until: None,
        sysfs: None,
        detect: Some(Detect {
            file: "include/linux/livepatch.h",
            with: "struct klp_callbacks callbacks;",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: STATE_VERSION,
        before: "no klp_state",
        after: "klp_state {id, version, data}: a cumulative patch must carry every installed \
                state at a version no lower (klp_is_patch_compatible())",
        commits: &[],
        title: Some("livepatch: Allow to distinguish different version of system state changes"),
        since: Some("5.5"),
        proposed: None,
        until: None,
        sysfs: None,
        detect: Some(Detect {
            file: "include/linux/livepatch.h",
            with: "unsigned int version;",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "idle-cpu-kicked",
        before: "the idle task of an idle CPU stays unswitched until that CPU schedules, \
                 and holds the transition meanwhile",
        after: "each retry wakes idle CPUs (wake_up_if_idle()), whose idle task then switches",
        commits: &["5de62ea84abd"],
        title: Some("sched,livepatch: Use wake_up_if_idle()"),
        since: Some("5.16"),
        proposed: None,
        until: None,
        sysfs: None,
        detect: Some(Detect {
            file: "kernel/livepatch/transition.c",
            with: "wake_up_if_idle(cpu);",
        }),
        modelled: Modelled::No,
        shows_on: None,
    },
    Behaviour {
        id: "null-funcs-checked-first",
        before: "a patch with no objects or an object with no functions is refused (EINVAL) \
                 after the compatibility check, which may log first",
        after: "refused first, silently",
        commits: &["5ef3dd20555e"],
        title: Some("livepatch: Fix kobject refcount bug on klp_init_patch_early failure path"),
        since: Some("5.17"),
        proposed: None,
        until: None,
        sysfs: None,
        detect: Some(Detect {
            file: "kernel/livepatch/core.c",
            with: "if (!patch || !patch->mod || !patch->objs) return -EINVAL;",
        }),
        modelled: Modelled::No,
        shows_on: None,
    },
    Behaviour {
        id: "force-pins-only-the-transition-patch",
        before: "forcing a transition marks every installed patch forced: all their \
                 modules stay pinned for good",
        after: "only the patches the forced transition removes are marked; the others \
                can be disabled and their modules removed",
        commits: &["2957308343fa"],
        title: Some("livepatch: Don't block removal of patches that are safe to unload"),
        since: Some("5.18"),
        proposed: None,
        until: None,
        sysfs: None,
        detect: Some(Detect {
            file: "kernel/livepatch/transition.c",
            with: "klp_transition_patch->forced = true;",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "sysfs-patched",
        before: "no per-object attribute",
        after: "/sys/kernel/livepatch/<patch>/<object>/patched",
        commits: &["bb26cfd9e77e"],
        title: Some("livepatch: add sysfs entry \"patched\" for each klp_object"),
        since: Some("6.1"),
        proposed: None,
        until: None,
        sysfs: Some("patched"),
        detect: Some(Detect {
            file: "kernel/livepatch/core.c",
            with: "patched_show(",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "long-function-names",
        before: "a function whose name has 128 characters or more cannot be patched \
                 (EINVAL from klp_init_func())",
        after: "names up to 511 characters",
        commits: &["b8a94bfb3395"],
        title: Some("kallsyms: increase maximum kernel symbol length to 512"),
        since: Some("6.1"),
        proposed: None,
        until: None,
        sysfs: None,
        detect: Some(Detect {
            file: "include/linux/kallsyms.h",
            with: "#define KSYM_NAME_LEN 512",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "klp-relocs-cleared-on-module-unload",
        before: "the klp relocations a livepatch applied for a module stay written when \
                 the module is removed: loading it again fails with ENOEXEC",
        after: "klp_module_going() clears them; the module loads and is patched again",
        commits: &["0c05e7bd2d01", "bbb93362a445"],
        title: Some("livepatch,x86: Clear relocation targets on a module removal"),
        since: Some("6.3"),
        proposed: None,
        until: None,
        sysfs: None,
        detect: Some(Detect {
            file: "kernel/livepatch/core.c",
            with: "klp_clear_object_relocs(",
        }),
        modelled: Modelled::Yes,
        shows_on: Some(X86_ONLY),
    },
    Behaviour {
        id: "cond-resched-switches-task",
        before: "a task that is running cannot be switched: a kernel thread that loops on \
                 cond_resched() without sleeping holds a transition open",
        after: "cond_resched() switches the calling task when its stack allows it",
        commits: &["e3ff7c609f39", "383439d3d400", "e92606fa172f"],
        title: Some("livepatch,sched: Add livepatch task switching to cond_resched()"),
        since: Some("6.4"),
        proposed: None,
        until: Some(Removal {
            release: "6.16",
            commit: "676e8cf70cb0",
            title: "sched,livepatch: Untangle cond_resched() and live-patching",
        }),
        sysfs: None,
        detect: Some(Detect {
            file: "include/linux/sched.h",
            with: "klp_sched_try_switch();",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "sysfs-replace",
        before: "no replace attribute",
        after: "/sys/kernel/livepatch/<patch>/replace",
        commits: &["adb68ed26a3e"],
        title: Some("livepatch: Add \"replace\" sysfs attribute"),
        since: Some("6.11"),
        proposed: None,
        until: None,
        sysfs: Some("replace"),
        detect: Some(Detect {
            file: "kernel/livepatch/core.c",
            with: "static ssize_t replace_show(",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "sysfs-stack-order",
        before: "no stack_order attribute",
        after: "/sys/kernel/livepatch/<patch>/stack_order",
        commits: &["3dae09de4061"],
        title: Some("livepatch: Add stack_order sysfs attribute"),
        since: Some("6.14"),
        proposed: None,
        until: None,
        sysfs: Some("stack_order"),
        detect: Some(Detect {
            file: "kernel/livepatch/core.c",
            with: "static ssize_t stack_order_show(",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "klp-relocs-cleared-after-failed-coming",
        before: "a module whose load fails in klp_module_coming() after a livepatch's \
                 klp relocations for it were written (its pre_patch callback fails) leaves \
                 them written: every later load of the module fails with ENOEXEC until the \
                 livepatch is removed (the error path cleans up only the patches before \
                 the failing one)",
        after: "the failing patch's relocations are cleared too",
        commits: &[],
        title: None,
        since: None,
        proposed: None,
        until: None,
        sysfs: None,
        detect: None,
        modelled: Modelled::Yes,
        shows_on: Some(X86_ONLY),
    },
    Behaviour {
        id: "reversed-disable-checks-real-function",
        before: "reversing the disable of a patch that is not on top of some function's \
                 stack, and is at its bottom: klp_check_stack_func() takes the list head in \
                 struct klp_ops for the previous patch's klp_func, so the switched tasks are \
                 checked against an address range read from the neighbouring slab object; \
                 when it covers kernel text, the reversed transition never completes \
                 (depends on heap contents)",
        after: "the reversed transition checks the function the tasks run and completes",
        commits: &[],
        title: None,
        since: None,
        proposed: None,
        until: None,
        sysfs: None,
        detect: None,
        modelled: Modelled::Refuses,
        shows_on: None,
    },
    Behaviour {
        id: "freezable-sleep-switches-task",
        before: "(see cond-resched-switches-task)",
        after: "a task switches itself when it goes to sleep with TASK_FREEZABLE; \
                cond_resched() and preemption no longer switch it",
        commits: &["676e8cf70cb0"],
        title: Some("sched,livepatch: Untangle cond_resched() and live-patching"),
        since: Some("6.16"),
        proposed: None,
        until: None,
        sysfs: None,
        detect: Some(Detect {
            file: "include/linux/livepatch_sched.h",
            with: "TASK_FREEZABLE",
        }),
        modelled: Modelled::No,
        shows_on: None,
    },
    Behaviour {
        id: REPLACE_SET,
        before: "klp_patch.replace: a cumulative patch (true) replaces every installed patch, \
                 a non-cumulative one (false) stacks on them",
        after: "klp_patch.replace_set: every patch replaces the installed patches of its set \
                and no other; patches of other sets stay, and may not patch the same function \
                or carry the same state id",
        commits: &[],
        title: Some("livepatch: Support scoped atomic replace using replace_set"),
        since: None,
        proposed: Some("livepatch: Introduce replace set support (v2, 2026-05-29)"),
        until: None,
        sysfs: Some("replace_set"),
        detect: Some(Detect {
            file: "include/linux/livepatch.h",
            with: "unsigned int replace_set;",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: STATE_CALLBACKS,
        before: "(see object-callbacks and state-version)",
        after: "klp_state {id, callbacks, block_disable, is_shadow}: a state's callbacks run \
                only when no other installed patch has the state (pre/post_patch when it \
                comes, pre/post_unpatch when it goes, with its shadow variables freed if \
                is_shadow); a patch with a block_disable state cannot be disabled, and a \
                replacing patch must carry it",
        commits: &[],
        title: Some("livepatch: Add callbacks for introducing and removing states"),
        since: None,
        proposed: Some(
            "livepatch: Better integrate callbacks and shadow variables with the states API \
             (v1, 2025-01-15)",
        ),
        until: None,
        sysfs: None,
        detect: Some(Detect {
            file: "include/linux/livepatch.h",
            with: "struct klp_state_callbacks {",
        }),
        modelled: Modelled::Yes,
        shows_on: None,
    },
    Behaviour {
        id: "null-old-name-refused-before-nops",
        before: "a replacing patch with a function whose old_name is NULL dereferences it \
                 when another patch is installed: klp_add_nops() runs before \
                 klp_init_func() refuses it, and klp_find_func() passes it to strcmp() (an \
                 oops in insmod, with klp_mutex held)",
        after: "refused with EINVAL, as with no patch installed",
        commits: &[],
        title: None,
        since: None,
        proposed: None,
        until: None,
        sysfs: None,
        detect: None,
        modelled: Modelled::No,
        shows_on: None,
    },
    Behaviour {
        id: "shared-state-removed-once",
        before: "(with the states series) one atomic replace that removes two patches sharing \
                 a state runs none of the state's unpatch callbacks and frees none of its \
                 shadow variables: for each replaced patch, is_state_in_other_patches() \
                 finds the state in the other, still listed",
        after: "the state's pre_unpatch and post_unpatch run once, and its shadow \
                variables are freed once",
        commits: &[],
        title: None,
        since: None,
        proposed: None,
        until: None,
        sysfs: None,
        detect: None,
        modelled: Modelled::No,
        shows_on: None,
    },
];

/// Rows are told apart by their id.
impl PartialEq for Behaviour {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Behaviour {
    /// How verdicts name the change: its commits, or its id while no
    /// release has it.
    pub fn label(&self) -> String {
        match self.commits {
            [] => self.id.to_string(),
            commits => commits.join("+"),
        }
    }

    /// The release that has the change, as messages show it.
    pub fn fixed_in(&self) -> &'static str {
        self.since.unwrap_or("no release yet")
    }

    /// Whether an upstream release of this version has the behaviour.
    pub fn in_release(&self, version: &[u32]) -> bool {
        let release = |text: &str| parse_version(text).expect("valid table");
        self.since
            .is_some_and(|since| compare(version, &release(since)).is_ge())
            && self
                .until
                .as_ref()
                .is_none_or(|until| compare(version, &release(until.release)).is_lt())
    }
}

pub fn find(id: &str) -> Option<&'static Behaviour> {
    BEHAVIOURS.iter().find(|behaviour| behaviour.id == id)
}

/// How it was decided whether a kernel has a behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The named file of the kernel's source tree.
    Source(&'static str),
    /// The kernel's version against the release that has the change.
    Version,
    /// The kernel's architecture, where the change makes no difference.
    Architecture(String),
}

impl std::fmt::Display for Basis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Basis::Source(file) => write!(f, "decided from the source ({file})"),
            Basis::Version => write!(f, "decided from the version"),
            Basis::Architecture(arch) => {
                write!(f, "decided by the architecture: {arch} never shows the bug")
            }
        }
    }
}

/// Which behaviours one kernel has.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub version: Vec<u32>,
    decided: BTreeMap<&'static str, (bool, Basis)>,
}

impl Profile {
    /// From the version alone (prebuilt kernels, and before a build).
    pub fn from_version(version: &[u32]) -> Self {
        Self::new(version, None)
    }

    /// From the kernel's source tree where a row says how, else the version.
    pub fn new(version: &[u32], source: Option<&Path>) -> Self {
        let decided = BEHAVIOURS
            .iter()
            .map(|behaviour| {
                let by_version = || (behaviour.in_release(version), Basis::Version);
                let decision = match (source, &behaviour.detect) {
                    (Some(tree), Some(detect)) => {
                        detect_in(tree, detect).unwrap_or_else(by_version)
                    }
                    _ => by_version(),
                };
                (behaviour.id, decision)
            })
            .collect();
        Self {
            version: version.to_vec(),
            decided,
        }
    }

    /// The same kernel on an architecture (kbuild's ARCH): rows whose
    /// "before" side only other architectures show count as present.
    pub fn on_arch(mut self, kernel_arch: &str) -> Self {
        for behaviour in BEHAVIOURS {
            let shown_here = behaviour
                .shows_on
                .is_none_or(|arches| arches.contains(&kernel_arch));
            if !shown_here {
                self.decided.insert(
                    behaviour.id,
                    (true, Basis::Architecture(kernel_arch.to_string())),
                );
            }
        }
        self
    }

    /// Whether the kernel has the behaviour. Unknown ids are a bug of the
    /// caller, caught by the tests that use every id.
    pub fn has(&self, id: &str) -> bool {
        self.decided
            .get(id)
            .unwrap_or_else(|| panic!("no behaviour {id:?} in kernel::behaviour::BEHAVIOURS"))
            .0
    }

    pub fn basis(&self, id: &str) -> Option<&Basis> {
        self.decided.get(id).map(|(_, basis)| basis)
    }

    /// The same kernel, with one behaviour decided the other way (to show
    /// that the model needs the row).
    pub fn with_flipped(mut self, id: &str) -> Self {
        if let Some((has, _)) = self.decided.get_mut(id) {
            *has = !*has;
        }
        self
    }

    /// The same kernel with a patch series applied, as far as its diffs
    /// tell before any tree is built: a row whose text a patch adds to its
    /// file is present, one whose text it removes is absent.
    pub fn with_series<'a>(mut self, diffs: impl IntoIterator<Item = &'a str>) -> Self {
        let mut added: BTreeMap<String, String> = BTreeMap::new();
        let mut removed: BTreeMap<String, String> = BTreeMap::new();
        for diff in diffs {
            let mut file = String::new();
            for line in diff.lines() {
                if let Some(path) = line.strip_prefix("+++ b/") {
                    file = path.trim().to_string();
                    continue;
                }
                // The old file's name, not a removed line.
                if line.starts_with("--- ") {
                    continue;
                }
                let (texts, text) = match line.split_at_checked(1) {
                    Some(("+", text)) => (&mut added, text),
                    Some(("-", text)) => (&mut removed, text),
                    _ => continue,
                };
                let kept = texts.entry(file.clone()).or_default();
                kept.push_str(text);
                kept.push('\n');
            }
        }
        for behaviour in BEHAVIOURS {
            let Some(detect) = &behaviour.detect else {
                continue;
            };
            let with = squeeze(detect.with);
            let in_text = |texts: &BTreeMap<String, String>| {
                texts
                    .get(detect.file)
                    .is_some_and(|text| squeeze(text).contains(&with))
            };
            let decision = if in_text(&added) {
                true
            } else if in_text(&removed) {
                false
            } else {
                continue;
            };
            self.decided
                .insert(behaviour.id, (decision, Basis::Source(detect.file)));
        }
        self
    }

    /// The livepatch sysfs attributes the kernel has.
    pub fn attributes(&self) -> Vec<&'static str> {
        BEHAVIOURS
            .iter()
            .filter(|behaviour| self.has(behaviour.id))
            .filter_map(|behaviour| behaviour.sysfs)
            .collect()
    }
}

/// A profile as kept with a run's observations: the version, and each
/// row's decision with how it was made.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProfileRecord {
    pub version: Vec<u32>,
    /// Row id ──> (present, "source FILE" | "version" | "architecture ARCH").
    pub decided: BTreeMap<String, (bool, String)>,
}

impl Profile {
    pub fn record(&self) -> ProfileRecord {
        let decided = self
            .decided
            .iter()
            .map(|(id, (has, basis))| {
                let basis = match basis {
                    Basis::Source(file) => format!("source {file}"),
                    Basis::Version => "version".to_string(),
                    Basis::Architecture(arch) => format!("architecture {arch}"),
                };
                (id.to_string(), (*has, basis))
            })
            .collect();
        ProfileRecord {
            version: self.version.clone(),
            decided,
        }
    }

    /// The profile a record keeps; rows it lacks (added since) are decided
    /// by the version, as for a prebuilt kernel.
    pub fn from_record(record: &ProfileRecord) -> Result<Self, String> {
        let mut profile = Profile::from_version(&record.version);
        for (id, (has, basis)) in &record.decided {
            let behaviour = find(id).ok_or_else(|| format!("no behaviour row {id:?}"))?;
            let basis = match basis.split_once(' ') {
                None if basis == "version" => Basis::Version,
                Some(("architecture", arch)) => Basis::Architecture(arch.to_string()),
                Some(("source", file)) => match &behaviour.detect {
                    Some(detect) if detect.file == file => Basis::Source(detect.file),
                    _ => return Err(format!("row {id} is not decided from {file}")),
                },
                _ => return Err(format!("row {id}: {basis:?} is not a basis")),
            };
            profile.decided.insert(behaviour.id, (*has, basis));
        }
        Ok(profile)
    }
}

fn detect_in(tree: &Path, detect: &Detect) -> Option<(bool, Basis)> {
    let text = std::fs::read_to_string(tree.join(detect.file)).ok()?;
    let text = squeeze(&text);
    Some((
        text.contains(&squeeze(detect.with)),
        Basis::Source(detect.file),
    ))
}

/// Every run of whitespace as one space.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The release that added a sysfs attribute, or the unmerged series that
/// adds it. Unknown attributes are a bug of the caller, which checks
/// them against `attributes()`.
pub fn attribute_since(attribute: &str) -> Result<&'static str, &'static str> {
    let behaviour = BEHAVIOURS
        .iter()
        .find(|behaviour| behaviour.sysfs == Some(attribute))
        .unwrap_or_else(|| panic!("no livepatch sysfs attribute {attribute:?} in BEHAVIOURS"));
    behaviour
        .since
        .ok_or_else(|| behaviour.proposed.unwrap_or("no release"))
}

/// Every livepatch sysfs attribute the table knows.
pub fn attributes() -> Vec<&'static str> {
    BEHAVIOURS.iter().filter_map(|b| b.sysfs).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_follow_the_version() {
        assert_eq!(
            Profile::from_version(&[5, 10, 240]).attributes(),
            ["enabled", "transition", "force"]
        );
        assert_eq!(
            Profile::from_version(&[6, 12]).attributes(),
            ["enabled", "transition", "force", "patched", "replace"]
        );
        assert!(Profile::from_version(&[7, 2])
            .attributes()
            .contains(&"stack_order"));
    }

    #[test]
    fn the_table_is_well_formed() {
        let mut ids = std::collections::BTreeSet::new();
        for behaviour in BEHAVIOURS {
            assert!(ids.insert(behaviour.id), "{} twice", behaviour.id);
            if let Some(since) = behaviour.since {
                parse_version(since).unwrap();
            }
            for commit in behaviour.commits {
                assert!(
                    commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()),
                    "{}: {commit}",
                    behaviour.id
                );
            }
        }
    }

    #[test]
    fn a_change_only_x86_shows_is_present_on_other_architectures() {
        let id = "klp-relocs-cleared-after-failed-coming";
        let profile = Profile::from_version(&[7, 2]);
        assert!(!profile.clone().on_arch("x86").has(id));
        let arm64 = profile.on_arch("arm64");
        assert!(arm64.has(id));
        assert_eq!(arm64.basis(id), Some(&Basis::Architecture("arm64".into())));
        // Changes every architecture shows stay decided by version.
        assert!(!arm64.has("reversed-disable-checks-real-function"));
    }

    #[test]
    fn a_series_decides_the_rows_its_diffs_touch() {
        let series = "--- a/include/linux/livepatch.h\n+++ b/include/linux/livepatch.h\n\
                      @@ -1 +1 @@\n-\tbool replace;\n+\tunsigned int replace_set;\n\
                      --- a/kernel/livepatch/core.c\n+++ b/kernel/livepatch/core.c\n\
                      @@ -1,2 +0,0 @@\n-static ssize_t stack_order_show(struct kobject *kobj,\n\
                      -\t\t\t\tstruct kobj_attribute *attr, char *buf)\n";
        let plain = Profile::from_version(&[7, 2]);
        assert!(!plain.has("replace-set") && plain.has("sysfs-stack-order"));
        let variant = plain.with_series([series]);
        assert!(variant.has("replace-set"));
        assert!(!variant.has("sysfs-stack-order"));
        assert_eq!(
            variant.basis("replace-set"),
            Some(&Basis::Source("include/linux/livepatch.h"))
        );
        // Rows the series does not touch keep the version's answer.
        assert!(variant.has("sysfs-replace"));
    }

    #[test]
    fn a_source_tree_decides_over_the_version() {
        let tree = tempfile::tempdir().unwrap();
        let file = tree.path().join("kernel/livepatch/transition.c");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        // A 5.10 tree that carries a backport of the fix.
        std::fs::write(&file, "\tklp_transition_patch->forced\n\t\t= true;\n").unwrap();
        let id = "force-pins-only-the-transition-patch";
        let backported = Profile::new(&[5, 10, 262], Some(tree.path()));
        assert!(backported.has(id));
        assert_eq!(
            backported.basis(id),
            Some(&Basis::Source("kernel/livepatch/transition.c"))
        );
        // Without the fix, as 5.10.262 has it.
        std::fs::write(
            &file,
            "\tklp_for_each_patch(patch)\n\t\tpatch->forced = true;\n",
        )
        .unwrap();
        assert!(!Profile::new(&[5, 10, 262], Some(tree.path())).has(id));
        // No source: the version decides.
        let by_version = Profile::from_version(&[5, 10, 262]);
        assert!(!by_version.has(id));
        assert_eq!(by_version.basis(id), Some(&Basis::Version));
        assert!(Profile::from_version(&[6, 1]).has(id));
    }
}
