//! The kernel's own livepatch selftests (tools/testing/selftests/livepatch)
//! as they are in the kernel's tree, run in the guest with their test
//! modules built from the same tree: `test_modules/` beside the scripts
//! where the tree has it, `lib/livepatch` (CONFIG_TEST_LIVEPATCH) before.
//!
//! A script passes when it exits 0 and printed no "not ok"; it exits 4
//! when it skips itself (kselftest's convention).

use super::GuestKit;
use crate::cache::Cache;
use crate::fixture::{self, BuiltFixture, ExternalDir, Fixture, FixtureSource};
use crate::guest::Guest;
use crate::kernel::{Kernel, KernelSpec};
use crate::project::Project;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the livepatch selftests live in a kernel tree.
pub const DIR: &str = "tools/testing/selftests/livepatch";

/// The scripts every tree of the matrix has, or some do: trials are
/// listed for these even when no tree is at hand yet.
pub const KNOWN_SCRIPTS: &[&str] = &[
    "test-livepatch.sh",
    "test-callbacks.sh",
    "test-shadow-vars.sh",
    "test-state.sh",
    "test-ftrace.sh",
    "test-sysfs.sh",
    "test-syscall.sh",
    "test-kprobe.sh",
];

/// Kernel options a script needs: it checks for some itself before it
/// skips (its own `skip` guard); others its expected output assumes.
const NEEDS: &[(&str, &str)] = &[
    ("test-kprobe.sh", "CONFIG_KPROBES_ON_FTRACE"),
    // Its expected log has "%pe" error names (test_klp_speaker_livepatch.c).
    ("test-state-callbacks.sh", "CONFIG_SYMBOLIC_ERRNAME"),
];

/// The selftests of one kernel tree.
#[derive(Clone, Debug)]
pub struct Selftests {
    pub tree: PathBuf,
    /// Script file names, sorted.
    pub scripts: Vec<String>,
    /// The test modules' directory (relative to the tree) and make
    /// arguments, if the tree has them.
    modules_dir: Option<(PathBuf, Vec<String>)>,
    pub modules: Vec<String>,
}

impl Selftests {
    pub fn find(tree: &Path) -> Result<Self> {
        let dir = tree.join(DIR);
        let mut scripts = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("test-") && name.ends_with(".sh") {
                scripts.push(name);
            }
        }
        scripts.sort();
        let candidates = [
            (PathBuf::from(DIR).join("test_modules"), Vec::new()),
            (
                PathBuf::from("lib/livepatch"),
                vec!["CONFIG_TEST_LIVEPATCH=m".to_string()],
            ),
        ];
        let modules_dir = candidates
            .into_iter()
            .find(|(dir, _)| tree.join(dir).join("Makefile").is_file());
        let modules = match &modules_dir {
            Some((dir, _)) => {
                module_names(&std::fs::read_to_string(tree.join(dir).join("Makefile"))?)
            }
            None => Vec::new(),
        };
        Ok(Self {
            tree: tree.to_path_buf(),
            scripts,
            modules_dir,
            modules,
        })
    }

    /// Why `script` cannot run on this tree and kernel configuration, if
    /// it cannot.
    /// Why `script` cannot finish under TCG, if it cannot.
    pub fn needs_kvm(&self, script: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.tree.join(DIR).join(script)).unwrap_or_default();
        // trace_function() (functions.sh) sets the function tracer before
        // its filter: every kernel function is traced for a while, which
        // takes minutes on one emulated CPU.
        (script == "test-ftrace.sh" && text.contains("trace_function ")).then(|| {
            format!(
                "{script}'s \"livepatch a traced function\" turns the function tracer on for \
                 every kernel function before it sets the filter, which takes longer than \
                 the selftest bound under TCG; it runs where KVM is known to work \
                 (KLP_HARNESS_ACCEL=kvm, or a KVM probe since the host booted)"
            )
        })
    }

    pub fn not_applicable(&self, script: &str, config: &str) -> Option<String> {
        if !self.scripts.iter().any(|s| s == script) {
            return Some(format!("the tree has no {DIR}/{script}"));
        }
        if self.modules.is_empty() {
            return Some(format!(
                "the tree has neither {DIR}/test_modules nor lib/livepatch"
            ));
        }
        NEEDS
            .iter()
            .filter(|(name, _)| *name == script)
            .find(|(_, option)| !config.lines().any(|l| l == format!("{option}=y")))
            .map(|(_, option)| format!("{script} needs {option}, which the kernel lacks"))
    }

    /// Build the test modules against `kernel` (cached like fixtures).
    pub fn build_modules(
        &self,
        project: &Project,
        kernel: &Kernel,
        cache: &Cache,
    ) -> Result<Vec<BuiltFixture>> {
        let Some((dir, make)) = &self.modules_dir else {
            bail!("{}: no livepatch test modules", self.tree.display());
        };
        self.modules
            .iter()
            .map(|name| {
                let module = Fixture {
                    name: name.clone(),
                    source: FixtureSource::External {
                        dir: ExternalDir::InKernel(dir.clone()),
                        make: make.clone(),
                    },
                };
                fixture::build(project, &module, kernel, cache, None)
            })
            .collect()
    }
}

/// Module names of a Makefile's `obj-m +=` / `obj-$(CONFIG_...) +=` lists.
fn module_names(makefile: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_list = false;
    for line in makefile.lines() {
        let line = line.trim();
        let list = match line.split_once("+=") {
            Some((target, rest)) if target.trim().starts_with("obj-") => rest,
            _ if in_list => line,
            _ => continue,
        };
        in_list = list.ends_with('\\');
        names.extend(
            list.trim_end_matches('\\')
                .split_whitespace()
                .filter_map(|word| word.strip_suffix(".o"))
                .map(str::to_string),
        );
    }
    names
}

/// How a script ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ScriptResult {
    Pass,
    /// The test that failed and what the script printed.
    Fail {
        test: String,
        output: String,
    },
    /// It skipped itself, saying why.
    Skip(String),
}

#[derive(Clone, Debug)]
pub struct ScriptRun {
    pub script: String,
    pub outcome: ScriptResult,
    pub elapsed: Duration,
}

/// Put the scripts, their modules and the tools they use into a running
/// guest, under /peer.
pub fn prepare_guest(
    guest: &mut Guest,
    kit: &GuestKit,
    selftests: &Selftests,
    modules: &[BuiltFixture],
    kernel: &Kernel,
) -> Result<()> {
    kit.install(guest)?;
    let dir = selftests.tree.join(DIR);
    let functions = std::fs::read_to_string(dir.join("functions.sh"))
        .with_context(|| format!("cannot read {}", dir.join("functions.sh").display()))?;
    guest.push_file(
        "/peer/functions.sh",
        super::debug_dir_moved(&functions)?.as_bytes(),
    )?;
    for script in &selftests.scripts {
        let text = std::fs::read(dir.join(script))?;
        guest.push_file(&format!("/peer/{script}"), &text)?;
    }
    for module in modules {
        let bytes = module.guest_copy(&kernel.arch, kit.cache())?;
        guest.push_file(&format!("/peer/test_modules/{}.ko", module.name), &bytes)?;
    }
    let getpid = dir.join("test_klp-call_getpid.c");
    if getpid.is_file() {
        let binary = super::static_program(kit.cache(), &std::fs::read_to_string(&getpid)?)?;
        guest.push_file("/peer/test_klp-call_getpid", &std::fs::read(binary)?)?;
    }
    guest.run_ok("chmod 755 /peer/*.sh; [ ! -e /peer/test_klp-call_getpid ] || chmod 755 /peer/test_klp-call_getpid")?;
    Ok(())
}

/// Run one script in a prepared guest.
pub fn run_script(guest: &mut Guest, script: &str, timeout: Duration) -> Result<ScriptRun> {
    let started = Instant::now();
    let result = guest.run_for(
        &format!("cd /peer && PATH=/peer/bin:$PATH /bin/bash ./{script}"),
        timeout,
    )?;
    let elapsed = started.elapsed();
    let outcome = judge(result.status, &result.output);
    Ok(ScriptRun {
        script: script.to_string(),
        outcome,
        elapsed,
    })
}

/// kselftest's exit status 4 is a skip; any other failure, or a "not ok"
/// line, a failure of the last test started.
fn judge(status: i32, output: &str) -> ScriptResult {
    const SKIP: i32 = 4;
    let last_test = || {
        output
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("TEST: "))
            .map(|line| line.split(" ... ").next().unwrap_or(line).to_string())
            .unwrap_or_default()
    };
    if status == SKIP {
        let why = output
            .lines()
            .find_map(|line| line.strip_prefix("SKIP: "))
            .or_else(|| output.lines().find(|l| l.contains("skip")))
            .unwrap_or("no reason given");
        return ScriptResult::Skip(why.to_string());
    }
    if status != 0 || output.lines().any(|line| line.contains("not ok")) {
        return ScriptResult::Fail {
            test: last_test(),
            output: output.to_string(),
        };
    }
    ScriptResult::Pass
}

/// The longest a script may take: `KLP_HARNESS_SELFTEST_TIMEOUT` seconds,
/// 300 by default (the scripts poll every 100 ms, and under TCG).
pub fn timeout() -> Duration {
    crate::settings::get().selftest_timeout
}

/// Boot a guest of `spec` (a kernel built from source) with the selftests
/// in place; its tree's selftests and the kernel. `label` names the run's
/// log directory (runs/kselftest-LABEL/KERNEL).
pub fn guest_for(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    label: &str,
) -> Result<(Guest, Selftests, Kernel)> {
    let prepared = crate::testbed::prepare_kernel(spec, cache)?;
    let kernel = &prepared.kernel;
    let tree = kernel
        .source
        .clone()
        .with_context(|| format!("{} is prebuilt: it has no selftests", spec.name))?;
    let selftests = Selftests::find(&tree)?;
    let modules = selftests.build_modules(project, kernel, cache)?;
    let kit = GuestKit::new(cache)?;
    let log_dir =
        crate::scenario::artifacts_dir(project, &format!("kselftest-{label}"), &spec.name);
    let request = crate::testbed::Request::new(&[], log_dir);
    let mut guest = match prepared.start(project, cache, &request)? {
        crate::testbed::Ready::Up(testbed) => testbed.guest,
        crate::testbed::Ready::NotApplicable(why) => bail!("{}: {why}", spec.name),
    };
    prepare_guest(&mut guest, &kit, &selftests, &modules, kernel)?;
    Ok((guest, selftests, prepared.kernel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_lists_of_both_makefile_styles() {
        let selftests = "obj-m += test_klp_atomic_replace.o \\\n\ttest_klp_callbacks_busy.o \\\n\ttest_klp_livepatch.o\n\n# Ensure that KDIR exists\nmodules:\n";
        assert_eq!(
            module_names(selftests),
            [
                "test_klp_atomic_replace",
                "test_klp_callbacks_busy",
                "test_klp_livepatch"
            ]
        );
        let lib = "obj-$(CONFIG_TEST_LIVEPATCH) += test_klp_atomic_replace.o \\\n\t\t\t\ttest_klp_state3.o\n";
        assert_eq!(
            module_names(lib),
            ["test_klp_atomic_replace", "test_klp_state3"]
        );
    }

    #[test]
    fn scripts_are_judged_by_status_and_not_ok() {
        assert_eq!(
            judge(0, "TEST: basic function patching ... ok\n"),
            ScriptResult::Pass
        );
        assert_eq!(
            judge(
                1,
                "TEST: basic ... ok\nTEST: multiple livepatches ... not ok\n\n--- expected\n"
            ),
            ScriptResult::Fail {
                test: "multiple livepatches".into(),
                output:
                    "TEST: basic ... ok\nTEST: multiple livepatches ... not ok\n\n--- expected\n"
                        .into()
            }
        );
        assert_eq!(
            judge(4, "SKIP: test-kprobe requires CONFIG_KPROBES_ON_FTRACE\n"),
            ScriptResult::Skip("test-kprobe requires CONFIG_KPROBES_ON_FTRACE".into())
        );
    }

    #[test]
    fn a_missing_script_or_option_is_not_applicable_with_a_reason() {
        let selftests = Selftests {
            tree: PathBuf::from("/t"),
            scripts: vec!["test-kprobe.sh".into(), "test-state.sh".into()],
            modules_dir: Some((PathBuf::from("lib/livepatch"), Vec::new())),
            modules: vec!["test_klp_state".into()],
        };
        assert_eq!(
            selftests.not_applicable("test-syscall.sh", "").as_deref(),
            Some("the tree has no tools/testing/selftests/livepatch/test-syscall.sh")
        );
        assert_eq!(
            selftests
                .not_applicable("test-kprobe.sh", "CONFIG_KPROBES=y\n")
                .as_deref(),
            Some("test-kprobe.sh needs CONFIG_KPROBES_ON_FTRACE, which the kernel lacks")
        );
        assert_eq!(
            selftests.not_applicable("test-kprobe.sh", "CONFIG_KPROBES_ON_FTRACE=y\n"),
            None
        );
    }
}
