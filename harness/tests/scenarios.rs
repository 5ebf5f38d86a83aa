//! One test per scenario × kernel, named `<scenario>::<kernel>`, each
//! booting a real kernel in QEMU. Listing (`--list`) only reads YAML.

use klp_harness::cache::Cache;
use klp_harness::kernel::{self, KernelSpec};
use klp_harness::project::Project;
use klp_harness::scenario::{self, Outcome, Scenario};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::Path;

fn main() {
    // A killed nextest must not leave this process and its guest running.
    klp_harness::interrupt::exit_with_parent();
    klp_harness::ui::subscribe();
    let args = Arguments::from_args();
    let trials = match trials() {
        Ok(trials) => trials,
        Err(err) => vec![Trial::test("scenarios::load", move || {
            Err(format!("{err:#}").into())
        })],
    };
    libtest_mimic::run(&args, trials).exit();
}

fn trials() -> anyhow::Result<Vec<Trial>> {
    klp_harness::settings::load()?;
    let project = Project::locate()?;
    let kernels = kernel::list(&project)?;
    let mut trials = Vec::new();
    for file in scenario::scenario_files(&project)? {
        let name = scenario::scenario_name(&project, &file);
        match scenario::load(&project, &file) {
            Ok(loaded) => {
                for spec in &kernels {
                    trials.push(scenario_trial(&project, &loaded, spec));
                }
            }
            Err(err) => {
                let message = format!("{err:#}");
                trials.push(Trial::test(format!("{name}::load"), move || {
                    Err(message.into())
                }));
            }
        }
    }
    for spec in &kernels {
        trials.push(explore_trial(spec));
    }
    if let Some(spec) = kernels.iter().find(|spec| spec.name == "src-6.12") {
        trials.push(mutate_trial(spec));
    }
    let cache = Cache::from_env()?;
    for spec in kernels.iter().filter(|spec| !spec.is_prebuilt()) {
        trials.extend(selftest_trials(&project, &cache, spec)?);
    }
    // The self-built kernel finishes transitions in milliseconds.
    let fast = ["src-7.2", kernel::DEFAULT]
        .into_iter()
        .find_map(|name| kernels.iter().find(|spec| spec.name == name));
    if let Some(spec) = fast {
        trials.push(injected_rule_trial(spec));
    }
    // 5.10 lacks 2957308343fa: a model without that row must be caught.
    if let Some(spec) = kernels.iter().find(|spec| spec.name == "src-5.10") {
        trials.push(forgotten_behaviour_trial(spec));
    }
    if let Some(spec) = kernels.iter().find(|spec| spec.name == kernel::DEFAULT) {
        trials.push(wrong_expectation_trial(&project, spec)?);
        trials.push(shell_trial(spec));
        trials.push(rejudge_trial(spec));
        trials.push(bundle_trial(spec));
        trials.push(must_fail_trial(
            &project,
            spec,
            "panic",
            "panic.yaml:6:5: step 1 `write \"c\" to /proc/sysrq-trigger`: the guest stopped",
        ));
        trials.push(must_fail_trial(
            &project,
            spec,
            "rcu-stall",
            "rcu-stall.yaml:13:5: step 2 `load rcu_stall`: the kernel logged a warning or crash: ",
        ));
        trials.push(must_fail_trial(
            &project,
            spec,
            "taint",
            "the kernel is tainted W (/proc/sys/kernel/tainted = ",
        ));
    }
    Ok(trials)
}

fn scenario_trial(project: &Project, loaded: &Scenario, spec: &KernelSpec) -> Trial {
    let name = format!("{}::{}", loaded.name, spec.name);
    let not_applicable =
        scenario::applicability(loaded, spec, spec.profile_hint().as_ref()).is_some();
    let (project, spec, file) = (project.clone(), spec.clone(), loaded.file.clone());
    Trial::test(name, move || {
        let loaded = scenario::load(&project, &file).map_err(|e| format!("{e:#}"))?;
        let verdict = scenario::execute(&project, &Cache::from_env()?, &loaded, &spec);
        klp_harness::report::keep_verdict(&verdict);
        match verdict.outcome {
            Outcome::Pass => Ok(()),
            // Not a failure of the suite: the kernel lacks the fix, and the
            // bug showed where the scenario says it does.
            Outcome::KnownBug(bug) => {
                println!("{}: {bug}", verdict.kernel);
                Ok(())
            }
            Outcome::Fail(why) => Err(why.to_string().into()),
            Outcome::NotApplicable(why) => {
                Err(format!("not applicable, yet selected: {why}").into())
            }
        }
    })
    .with_ignored_flag(not_applicable)
}

/// `mutate --patches` with three hand-written mutants of state.c: one
/// the suite must kill, one that changes only a comment (equivalent: the
/// same object code) and one that does not compile. It builds each one
/// incrementally from the kernel's work directory.
fn mutate_trial(spec: &KernelSpec) -> Trial {
    let kernel = spec.name.clone();
    Trial::test(
        format!("mutate::scores-known-mutants::{kernel}"),
        move || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_klp-harness"))
                .args(["mutate", "--kernel", &kernel, "--json", "--patches"])
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mutants"))
                .args([
                    "--scenarios",
                    "rules/r02-cumulative/missing-id-on-top,rules/r01-new-id/cumulative-adds-id",
                ])
                .output()?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let fail = |why: &str| {
                format!(
                    "{why} ({}):\n{stdout}\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )
            };
            if !output.status.success() {
                return Err(fail("mutate failed").into());
            }
            let report: serde_json::Value = serde_json::from_str(&stdout)?;
            let status = |id: &str| {
                report["mutants"]
                    .as_array()
                    .and_then(|all| all.iter().find(|m| m["id"] == id))
                    .map(|m| m["status"].as_str().unwrap_or_default().to_string())
            };
            let wanted = [
                ("0001-cumulative-may-drop-states.patch", "killed"),
                ("0002-comment-only.patch", "equivalent"),
                ("0003-does-not-compile.patch", "not-compiled"),
            ];
            for (id, want) in wanted {
                if status(id).as_deref() != Some(want) {
                    return Err(fail(&format!("{id} is {:?}, expected {want}", status(id))).into());
                }
            }
            let killer = &report["mutants"][0]["suite"]["detection"]["by"];
            if killer != "rules/r02-cumulative/missing-id-on-top" {
                return Err(fail(&format!("killed by {killer}")).into());
            }
            Ok(())
        },
    )
}

/// One trial per livepatch selftest script of the kernel's tree, run as
/// the tree has it. Which scripts a tree has, and whether the kernel has
/// what a script checks for, is read from the cache when the kernel is
/// built already (listing never fetches or builds); until then every
/// known script is listed.
fn selftest_trials(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
) -> anyhow::Result<Vec<Trial>> {
    use klp_harness::peer::selftests::{self, ScriptResult, Selftests};
    let known = match kernel::cached(spec, cache)? {
        Some(built) => {
            let tree = built.source.clone().unwrap_or_default();
            let config = std::fs::read_to_string(&built.config).unwrap_or_default();
            Some((Selftests::find(&tree)?, config))
        }
        None => None,
    };
    let mut scripts: Vec<String> = selftests::KNOWN_SCRIPTS
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some((found, _)) = &known {
        scripts.extend(
            found
                .scripts
                .iter()
                .filter(|s| !scripts.contains(s))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    Ok(scripts
        .into_iter()
        .map(|script| {
            let kvm = klp_harness::vm::known_kvm(&cache.root().join("probe"));
            // bash-static and the static insmod the scripts run with are
            // the host's own.
            let foreign = (!spec.arch.is_native()).then(|| {
                format!(
                    "the selftests run with the host's static programs, not {}'s",
                    spec.arch.name
                )
            });
            let not_applicable = foreign.or_else(|| {
                known.as_ref().and_then(|(found, config)| {
                    found
                        .not_applicable(&script, config)
                        .or_else(|| found.needs_kvm(&script).filter(|_| !kvm))
                })
            });
            let name = format!(
                "kselftest::{}::{}",
                script.trim_end_matches(".sh"),
                spec.name
            );
            let (project, spec) = (project.clone(), spec.clone());
            Trial::test(name, move || {
                let cache = Cache::from_env()?;
                let (mut guest, found, kernel) =
                    selftests::guest_for(&project, &cache, &spec, script.trim_end_matches(".sh"))
                        .map_err(|e| format!("{e:#}"))?;
                let config = std::fs::read_to_string(&kernel.config)?;
                if let Some(why) = found.not_applicable(&script, &config) {
                    guest.vm.kill();
                    return Err(format!("not applicable, yet selected: {why}").into());
                }
                let run = selftests::run_script(&mut guest, &script, selftests::timeout());
                let stopped = guest.shutdown();
                let run = run.map_err(|e| format!("{e:#}"))?;
                stopped.map_err(|e| format!("{e:#}"))?;
                match run.outcome {
                    ScriptResult::Pass => Ok(()),
                    ScriptResult::Fail { test, output } => {
                        Err(format!("{script}: test {test:?} failed:\n{output}").into())
                    }
                    ScriptResult::Skip(why) => {
                        Err(format!("{script} skipped itself: {why}").into())
                    }
                }
            })
            .with_ignored_flag(not_applicable.is_some())
        })
        .collect())
}

/// The assertion machinery must be able to fail: a scenario whose last
/// expectation is wrong on purpose must fail, naming the step and the
/// difference.
fn wrong_expectation_trial(project: &Project, spec: &KernelSpec) -> anyhow::Result<Trial> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wrong-expectation.yaml");
    let (project, spec) = (project.clone(), spec.clone());
    Ok(Trial::test(
        format!("harness::wrong-expectation-fails::{}", spec.name),
        move || {
            let loaded = scenario::load(&project, &file).map_err(|e| format!("{e:#}"))?;
            let verdict = scenario::execute(&project, &Cache::from_env()?, &loaded, &spec);
            let Outcome::Fail(why) = verdict.outcome else {
                return Err(Failed::from(format!(
                    "expected a failure, got {:?}",
                    verdict.outcome
                )));
            };
            let wanted = "wrong-expectation.yaml:11:5: step 2 `load klp_cumul_v1`: \
                      target status: expected \"original\", found \"klp_cumul_v1 f1=v1\"";
            if !why.to_string().contains(wanted) {
                return Err(format!("failure message lacks {wanted:?}:\n{why}").into());
            }
            // The same, as fields for tools.
            let step = why.step.as_ref().ok_or("the failure names no step")?;
            let fields = (
                step.label.as_str(),
                step.action.as_str(),
                step.position.line,
                step.position.column,
                why.expected.as_deref(),
                why.found.as_deref(),
            );
            let wanted = (
                "2",
                "load klp_cumul_v1",
                11,
                5,
                Some("original"),
                Some("klp_cumul_v1 f1=v1"),
            );
            if fields != wanted {
                return Err(format!("failure fields {fields:?}, expected {wanted:?}").into());
            }
            Ok(())
        },
    ))
}

/// A scenario in tests/data that must fail with a message containing `wanted`.
fn must_fail_trial(
    project: &Project,
    spec: &KernelSpec,
    name: &str,
    wanted: &'static str,
) -> Trial {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{name}.yaml"));
    let (project, spec) = (project.clone(), spec.clone());
    Trial::test(format!("harness::{name}-fails::{}", spec.name), move || {
        let loaded = scenario::load(&project, &file).map_err(|e| format!("{e:#}"))?;
        let verdict = scenario::execute(&project, &Cache::from_env()?, &loaded, &spec);
        let Outcome::Fail(why) = verdict.outcome else {
            return Err(format!("expected a failure, got {:?}", verdict.outcome).into());
        };
        if !why.to_string().contains(wanted) {
            return Err(format!("failure message lacks {wanted:?}:\n{why}").into());
        }
        let console = std::fs::read_to_string(verdict.artifacts.join("console.log"))?;
        if !console.contains("Linux version") {
            return Err("console.log does not hold the whole boot".into());
        }
        Ok(())
    })
}

/// A pass, a failure and a known bug, run live and then judged again from
/// their run directories without a guest, come to the same verdicts.
fn rejudge_trial(spec: &KernelSpec) -> Trial {
    let kernel = spec.name.clone();
    Trial::test(
        format!("harness::rejudge-agrees-with-live::{kernel}"),
        move || {
            use std::process::Command;
            let binary = env!("CARGO_BIN_EXE_klp-harness");
            let scenarios = [
                "rules/r02-cumulative/equal-version",
                "harness/tests/data/wrong-expectation.yaml",
                "bugs/failed-module-load-leaves-klp-relocs",
            ];
            let project = Project::locate()?;
            // Run directories of its own: the scenario trials of this
            // kernel run the same scenarios at the same time.
            let runs = tempfile::tempdir()?;
            let live = Command::new(binary)
                .current_dir(project.root())
                .env("KLP_HARNESS_ARTIFACTS", runs.path())
                .args(["run", "--format", "json", "--kernel", &kernel])
                .args(scenarios)
                .output()?;
            let live: serde_json::Value = serde_json::from_slice(&live.stdout)
                .map_err(|err| format!("run --format json: {err}"))?;
            let dirs: Vec<String> = live
                .as_array()
                .ok_or("run printed no array")?
                .iter()
                .map(|v| v["artifacts"].as_str().unwrap_or_default().to_string())
                .collect();
            let again = Command::new(binary)
                .current_dir(project.root())
                .env("KLP_HARNESS_ARTIFACTS", runs.path())
                .args(["rejudge", "--format", "json"])
                .args(&dirs)
                .output()?;
            let again: serde_json::Value =
                serde_json::from_slice(&again.stdout).map_err(|err| {
                    format!("rejudge: {err}: {}", String::from_utf8_lossy(&again.stderr))
                })?;
            let verdicts = |all: &serde_json::Value| -> Vec<String> {
                let mut rows: Vec<String> = all
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        let failure = match v["result"].as_str() {
                            Some("known-bug") => &v["known_bug"]["failure"],
                            _ => &v["failure"],
                        };
                        format!(
                            "{} {} step={} fix={} {}",
                            v["scenario"],
                            v["result"],
                            failure["step"]["label"],
                            v["known_bug"]["fix"],
                            failure["message"]
                        )
                    })
                    .collect();
                rows.sort();
                rows
            };
            let (live, again) = (verdicts(&live), verdicts(&again));
            let results: Vec<&str> = live
                .iter()
                .map(|row| row.split(' ').nth(1).unwrap_or(""))
                .collect();
            if results != ["\"known-bug\"", "\"pass\"", "\"fail\""] {
                return Err(format!(
                    "the live runs did not give a known bug, a pass and a failure:\n{live:#?}"
                )
                .into());
            }
            if live != again {
                return Err(format!("live:\n{live:#?}\nrejudged:\n{again:#?}").into());
            }
            Ok(())
        },
    )
}

/// `klp-harness shell` runs the steps up to the one asked for, then passes
/// what comes on stdin to a shell on the serial console.
fn shell_trial(spec: &KernelSpec) -> Trial {
    let kernel = spec.name.clone();
    Trial::test(
        format!("harness::shell-stops-after-step::{kernel}"),
        move || {
            use std::io::Write;
            use std::process::{Command, Stdio};
            // Run directories of its own, apart from the scenario's trial.
            let runs = tempfile::tempdir()?;
            let mut child = Command::new(env!("CARGO_BIN_EXE_klp-harness"))
                .env("KLP_HARNESS_ARTIFACTS", runs.path())
                .args([
                    "shell",
                    "rules/r07-blocked-transition/blocked-then-released",
                    "--kernel",
                    &kernel,
                ])
                .args(["--until-step", "3"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            child.stdin.take().unwrap().write_all(
                b"echo transition=$(cat /sys/kernel/livepatch/klp_cumul_v1/transition)\n",
            )?;
            let output = child.wait_with_output()?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !output.status.success() || !stderr.contains("3 of 6 steps run") {
                return Err(format!("shell failed ({}):\n{stderr}", output.status).into());
            }
            // Step 3 loads the patch while the target is parked: still in transition.
            if !stdout.contains("\ntransition=1") {
                return Err(format!("no `transition=1` on the console:\n{stdout}").into());
            }
            Ok(())
        },
    )
}

/// A bundle unpacked in an empty directory re-runs its scenario there, with
/// nothing from this checkout: the data comes from the bundle alone.
fn bundle_trial(spec: &KernelSpec) -> Trial {
    let kernel = spec.name.clone();
    Trial::test(
        format!("harness::bundle-reruns-elsewhere::{kernel}"),
        move || {
            use std::process::Command;
            let binary = env!("CARGO_BIN_EXE_klp-harness");
            let scratch = tempfile::tempdir()?;
            let archive = scratch.path().join("repro.tar.gz");
            let status = Command::new(binary)
                .args(["bundle", "rules/r02-cumulative/equal-version", "-o"])
                .arg(&archive)
                .status()?;
            if !status.success() {
                return Err("bundle failed".into());
            }
            let unpacked = scratch.path().join("unpacked");
            std::fs::create_dir(&unpacked)?;
            let tarball = flate2::read::GzDecoder::new(std::fs::File::open(&archive)?);
            tar::Archive::new(tarball).unpack(&unpacked)?;
            let root = std::fs::read_dir(&unpacked)?
                .next()
                .ok_or("empty bundle")??
                .path();
            let readme = std::fs::read_to_string(root.join("README.md"))?;
            let command = "cargo run --release -- repro scenarios/rules/r02-cumulative/equal-version.yaml --kernels all";
            if !readme.contains(command) {
                return Err(format!("README lacks `{command}`:\n{readme}").into());
            }
            let output = Command::new(binary)
                .current_dir(&root)
                .env_remove("KLP_HARNESS_ROOT")
                .args(["repro", "scenarios/rules/r02-cumulative/equal-version.yaml"])
                .args(["--kernels", &kernel])
                .output()?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let row = stdout.lines().find(|line| line.starts_with(&kernel));
            if row.is_none_or(|row| row.split_whitespace().nth(2) != Some("pass")) {
                return Err(format!(
                    "the unpacked bundle did not pass on {kernel}:\n{stdout}\n{}",
                    String::from_utf8_lossy(&output.stderr)
                )
                .into());
            }
            if !root.join("target/klp-harness/runs").is_dir() {
                return Err("the re-run did not keep its logs inside the bundle".into());
            }
            Ok(())
        },
    )
}

fn explore_command(
    kernel: &str,
    seed: &str,
    extra: &[&str],
) -> std::io::Result<std::process::Output> {
    std::process::Command::new(env!("CARGO_BIN_EXE_klp-harness"))
        .args([
            "explore", "--kernel", kernel, "--seed", seed, "--steps", "10",
        ])
        .args(extra)
        .output()
}

/// Random sequences on a real kernel agree with the reference model.
fn explore_trial(spec: &KernelSpec) -> Trial {
    let kernel = spec.name.clone();
    Trial::test(format!("explore::agrees-with-model::{kernel}"), move || {
        let output = explore_command(&kernel, "2", &["--runs", "10"])?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !stdout.contains("no divergence from the reference model") {
            return Err(format!(
                "explore on {kernel} ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(())
    })
}

/// With the pre-5.18 force row taken out of the model, exploration on a
/// kernel without 2957308343fa finds a divergence within 100 sequences and
/// shrinks it to at most 8 steps; the scenario it writes fails on the
/// kernel, where the forced patch's module stays pinned.
fn forgotten_behaviour_trial(spec: &KernelSpec) -> Trial {
    let kernel = spec.name.clone();
    Trial::test(
        format!("explore::finds-forgotten-behaviour::{kernel}"),
        move || {
            let forget = "forget:force-pins-only-the-transition-patch";
            let output = explore_command(&kernel, "3", &["--runs", "100", "--mutate", forget])?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let fail = |why: &str| format!("{why} ({}):\n{stdout}", output.status);
            let (shrunk, file) =
                divergence(&stdout).ok_or_else(|| fail("no divergence reported"))?;
            if output.status.code() != Some(1) {
                return Err(fail("expected exit status 1 for a divergence").into());
            }
            if shrunk > 8 {
                return Err(fail(&format!("shrunk only to {shrunk} steps")).into());
            }
            let rerun = std::process::Command::new(env!("CARGO_BIN_EXE_klp-harness"))
                .args(["run", "--kernel", &kernel, &file])
                .output()?;
            let rerun_err = String::from_utf8_lossy(&rerun.stderr);
            if rerun.status.success() || !rerun_err.contains("(EAGAIN)") {
                return Err(format!("re-running {file}:\n{rerun_err}").into());
            }
            Ok(())
        },
    )
}

/// The steps and file of the divergence `explore` reports.
fn divergence(stdout: &str) -> Option<(usize, String)> {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("divergence, shrunk from"))?;
    let shrunk = line.split(" to ").nth(1)?.split(' ').next()?.parse().ok()?;
    Some((shrunk, line.rsplit(": ").next()?.to_string()))
}

/// With one rule of the model made wrong on purpose, exploration finds a
/// divergence and shrinks it to a scenario of at most 5 steps, which fails.
fn injected_rule_trial(spec: &KernelSpec) -> Trial {
    let kernel = spec.name.clone();
    Trial::test(
        format!("explore::finds-injected-wrong-rule::{kernel}"),
        move || {
            let output = explore_command(
                &kernel,
                "1",
                &["--runs", "50", "--mutate", "noncumulative-unchecked"],
            )?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let fail = |why: &str| format!("{why} ({}):\n{stdout}", output.status);
            if output.status.code() != Some(1) {
                return Err(fail("expected exit status 1 for a divergence").into());
            }
            let (shrunk, file) =
                divergence(&stdout).ok_or_else(|| fail("no divergence reported"))?;
            if shrunk > 5 {
                return Err(fail(&format!("shrunk only to {shrunk} steps")).into());
            }
            // The file is an ordinary scenario, and it fails on the kernel: the
            // kernel refuses the non-cumulative patch the wrong rule let in.
            let rerun = std::process::Command::new(env!("CARGO_BIN_EXE_klp-harness"))
                .args(["run", "--kernel", &kernel, &file])
                .output()?;
            let rerun_out = String::from_utf8_lossy(&rerun.stdout);
            let rerun_err = String::from_utf8_lossy(&rerun.stderr);
            if rerun.status.success() || !rerun_err.contains("Invalid argument") {
                return Err(format!("re-running {file}: {rerun_out}\n{rerun_err}").into());
            }
            Ok(())
        },
    )
}
