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
    /// What a kernel with the change does that one without it does not.
    pub what: &'static str,
    /// The upstream commit(s), first 12 hex digits, and the first one's
    /// title, where they could be named.
    pub commits: &'static [&'static str],
    pub title: Option<&'static str>,
    /// The first upstream release with the change.
    pub since: &'static str,
    /// A livepatch sysfs attribute the change added.
    pub sysfs: Option<&'static str>,
    /// How a source tree shows whether it has the change.
    pub detect: Option<Detect>,
}

/// Text that only a tree with the change has, in one file (whitespace
/// runs compare as one space). A tree whose file lacks it lacks the change;
/// a tree without the file is decided by its version.
#[derive(Debug)]
pub struct Detect {
    pub file: &'static str,
    pub with: &'static str,
}

/// Every behaviour the harness knows, oldest first.
pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        id: "sysfs-enabled",
        what: "/sys/kernel/livepatch/<patch>/enabled",
        commits: &[],
        title: None,
        since: "4.0",
        sysfs: Some("enabled"),
        detect: None,
    },
    Behaviour {
        id: "sysfs-transition",
        what: "/sys/kernel/livepatch/<patch>/transition",
        commits: &[],
        title: None,
        since: "4.12",
        sysfs: Some("transition"),
        detect: None,
    },
    Behaviour {
        id: "sysfs-force",
        what: "/sys/kernel/livepatch/<patch>/force",
        commits: &[],
        title: None,
        since: "4.15",
        sysfs: Some("force"),
        detect: None,
    },
    Behaviour {
        id: "force-pins-only-the-transition-patch",
        what: "forcing a transition marks only the patch in transition as forced: \
               patches below it can still be disabled and their modules removed",
        commits: &["2957308343fa"],
        title: Some("livepatch: Don't block removal of patches that are safe to unload"),
        since: "5.18",
        sysfs: None,
        detect: Some(Detect {
            file: "kernel/livepatch/transition.c",
            with: "klp_transition_patch->forced = true;",
        }),
    },
    Behaviour {
        id: "sysfs-patched",
        what: "/sys/kernel/livepatch/<patch>/<object>/patched",
        commits: &["bb26cfd9e77e"],
        title: None,
        since: "6.1",
        sysfs: Some("patched"),
        detect: Some(Detect {
            file: "kernel/livepatch/core.c",
            with: "patched_show(",
        }),
    },
    Behaviour {
        id: "cond-resched-switches-task",
        what: "a task that loops calling cond_resched() switches itself to the \
               transition's target state, so a CPU-bound kernel thread no longer \
               holds a transition open",
        commits: &["e3ff7c609f39", "383439d3d400"],
        title: None,
        since: "6.4",
        sysfs: None,
        detect: Some(Detect {
            file: "kernel/livepatch/transition.c",
            with: "void __klp_sched_try_switch(void)",
        }),
    },
    Behaviour {
        id: "sysfs-replace",
        what: "/sys/kernel/livepatch/<patch>/replace",
        commits: &["adb68ed26a3e"],
        title: None,
        since: "6.11",
        sysfs: Some("replace"),
        detect: Some(Detect {
            file: "kernel/livepatch/core.c",
            with: "static ssize_t replace_show(",
        }),
    },
    Behaviour {
        id: "sysfs-stack-order",
        what: "/sys/kernel/livepatch/<patch>/stack_order",
        commits: &["3dae09de4061"],
        title: None,
        since: "6.14",
        sysfs: Some("stack_order"),
        detect: Some(Detect {
            file: "kernel/livepatch/core.c",
            with: "static ssize_t stack_order_show(",
        }),
    },
];

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
}

impl std::fmt::Display for Basis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Basis::Source(file) => write!(f, "decided from the source ({file})"),
            Basis::Version => write!(f, "decided from the version"),
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
                let by_version = || {
                    let since = parse_version(behaviour.since).expect("valid table");
                    (compare(version, &since).is_ge(), Basis::Version)
                };
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

    /// The livepatch sysfs attributes the kernel has.
    pub fn attributes(&self) -> Vec<&'static str> {
        BEHAVIOURS
            .iter()
            .filter(|behaviour| self.has(behaviour.id))
            .filter_map(|behaviour| behaviour.sysfs)
            .collect()
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

/// The release that added a sysfs attribute, if it is one.
pub fn attribute_since(attribute: &str) -> Option<&'static str> {
    BEHAVIOURS
        .iter()
        .find(|behaviour| behaviour.sysfs == Some(attribute))
        .map(|behaviour| behaviour.since)
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
            parse_version(behaviour.since).unwrap();
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
