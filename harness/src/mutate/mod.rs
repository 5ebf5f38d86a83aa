//! `klp-harness mutate`: small deliberate bugs in the livepatch core of a
//! kernel built from source (`operators`), or hand-written patches, each
//! built incrementally in the kernel's work directory and run against
//! the scenario suite, and optionally the kernel's own selftests and
//! random exploration; each mutant is killed, timed out, crashed,
//! survived, not compiled or equivalent (same object code).
//!
//! Before any mutant, the unmutated kernel runs every scenario and
//! selftest once: what fails there cannot judge a mutant and is left out.
//! A mutant's checks stop at the first detection, trying first what
//! killed most mutants before (kept per kernel definition).

pub mod candidates;
pub mod checks;
pub mod lexer;
pub mod operators;
mod order;
pub mod report;

use crate::cache::Cache;
use crate::event::{self, Event};
use crate::kernel::{self, KernelSpec};
use crate::peer::selftests::Selftests;
use crate::project::Project;
use crate::scenario::{self, Scenario};
use anyhow::{bail, Context, Result};
use candidates::Candidate;
use checks::Check;
use report::{MutantResult, Report, Status};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Options {
    /// Files to mutate, relative to the tree (default: the livepatch core).
    pub files: Vec<PathBuf>,
    /// Stop after this many mutants that compiled to different code.
    pub sample: Option<usize>,
    /// Order in which candidates are drawn.
    pub seed: u64,
    /// Hand-written mutant patches instead of generated mutants.
    pub patches: Option<PathBuf>,
    /// Also explore this many random sequences on each mutant.
    pub explore: Option<usize>,
    /// Also run the kernel's own selftests on each mutant.
    pub selftests: bool,
    /// Run only these scenarios (by name) instead of the whole suite.
    pub scenarios: Vec<String>,
    /// Guests at once.
    pub jobs: usize,
}

/// Mutate the kernel, run every mutant, and write the results under
/// `target/klp-harness/mutate/`.
pub fn run(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    options: &Options,
) -> Result<Report> {
    let started = Instant::now();
    if spec.is_prebuilt() {
        bail!(
            "{} is prebuilt: mutate needs a kernel built from source",
            spec.name
        );
    }
    let run_name = match &options.patches {
        Some(_) => format!("{}-patches", spec.name),
        None => format!("{}-seed{}", spec.name, options.seed),
    };
    let output = project.output_dir().join("mutate").join(run_name);
    if output.exists() {
        std::fs::remove_dir_all(&output)
            .with_context(|| format!("cannot clear {}", output.display()))?;
    }
    std::fs::create_dir_all(&output)?;

    let base = kernel::prepare_work_dir(spec, cache)?;
    let tree = base
        .source
        .clone()
        .context("a kernel built from source has a tree")?;
    let all = match &options.patches {
        Some(dir) => candidates::from_patches(&tree, dir)?,
        None => {
            let files = if options.files.is_empty() {
                candidates::DEFAULT_FILES
                    .iter()
                    .map(PathBuf::from)
                    .collect()
            } else {
                options.files.clone()
            };
            candidates::shuffled(candidates::generated(&tree, &files)?, options.seed)
        }
    };
    let base_objects = base_objects(spec, cache, &all)?;

    let history_file = project
        .output_dir()
        .join("mutate")
        .join(format!("history-{}.json", spec.definition()));
    let mut history = order::History::load(&history_file);
    let mut left_out = Vec::new();
    let scenarios = baseline_scenarios(project, cache, spec, options, &mut history, &mut left_out)?;
    let scripts = match options.selftests {
        true => baseline_selftests(
            project,
            cache,
            spec,
            &base,
            options.jobs,
            &mut history,
            &mut left_out,
        )?,
        false => Vec::new(),
    };
    history.save()?;

    let planned = options.sample.unwrap_or(all.len()).min(all.len());
    event::emit(Event::MutateStarted {
        kernel: spec.name.clone(),
        planned,
    });
    let mut results = Vec::new();
    let mut done = 0;
    let deleting = std::sync::Mutex::new(Vec::new());
    for candidate in &all {
        if done >= planned {
            break;
        }
        let label = format!("m{:03}", results.len() + 1);
        let result = try_mutant(
            &Trial {
                project,
                cache,
                spec,
                options,
                scenarios: &scenarios,
                scripts: &scripts,
                base_objects: &base_objects,
                output: &output,
                deleting: &deleting,
            },
            &label,
            candidate,
            &mut history,
        )?;
        history.save()?;
        if result.ran() {
            done += 1;
        }
        event::emit(Event::MutantFinished {
            kernel: spec.name.clone(),
            done,
            planned,
            summary: summary(&result),
        });
        results.push(result);
    }
    for deletion in deleting.into_inner().unwrap() {
        deletion.join().ok();
    }
    event::emit(Event::MutateFinished {
        kernel: spec.name.clone(),
    });
    let report = Report {
        kernel: spec.name.clone(),
        seed: options.patches.is_none().then_some(options.seed),
        candidates: all.len(),
        scenarios: scenarios.iter().map(|s| s.name.clone()).collect(),
        selftests: scripts,
        left_out,
        mutants: results,
        elapsed: started.elapsed(),
        output: output.clone(),
    };
    std::fs::write(output.join("results.json"), report.json())?;
    std::fs::write(output.join("table.txt"), report.table())?;
    Ok(report)
}

/// A hash of each object file the candidates change, unmutated.
fn base_objects(
    spec: &KernelSpec,
    cache: &Cache,
    all: &[Candidate],
) -> Result<BTreeMap<String, String>> {
    let mut objects: Vec<String> = all.iter().flat_map(|c| c.objects.clone()).collect();
    objects.sort();
    objects.dedup();
    let names: Vec<&str> = objects.iter().map(String::as_str).collect();
    let hashes = kernel::built_objects(spec, cache, &names)?;
    Ok(objects.into_iter().zip(hashes).collect())
}

/// The scenarios that apply to the kernel and pass on it unmutated.
fn baseline_scenarios(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    options: &Options,
    history: &mut order::History,
    left_out: &mut Vec<String>,
) -> Result<Vec<Scenario>> {
    let jobs = options.jobs;
    let mut all = Vec::new();
    for file in scenario::scenario_files(project)? {
        all.push(scenario::load(project, &file)?);
    }
    if !options.scenarios.is_empty() {
        if let Some(unknown) = options
            .scenarios
            .iter()
            .find(|name| !all.iter().any(|s| &s.name == *name))
        {
            bail!("no scenario named {unknown:?}");
        }
        all.retain(|s| options.scenarios.contains(&s.name));
    }
    let runs: Vec<(&Scenario, &KernelSpec)> = all.iter().map(|s| (s, spec)).collect();
    let verdicts = scenario::execute_many(project, cache, &runs, jobs, |_| {});
    let mut kept = Vec::new();
    for (scenario, verdict) in all.into_iter().zip(verdicts) {
        match &verdict.outcome {
            // A known upstream bug showing as expected is the scenario's
            // passing result on this kernel.
            scenario::Outcome::Pass | scenario::Outcome::KnownBug(_) => {
                history.record(&scenario.name, false, verdict.duration);
                kept.push(scenario);
            }
            scenario::Outcome::Fail(failure) => left_out.push(format!(
                "{}: {}",
                scenario.name,
                failure.message.lines().next().unwrap_or_default()
            )),
            scenario::Outcome::NotApplicable(_) => {}
        }
    }
    Ok(kept)
}

/// The selftest scripts that can run on the kernel and pass unmutated.
fn baseline_selftests(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    base: &kernel::Kernel,
    jobs: usize,
    history: &mut order::History,
    left_out: &mut Vec<String>,
) -> Result<Vec<String>> {
    let tree = base
        .source
        .clone()
        .context("a kernel built from source has a tree")?;
    let found = Selftests::find(&tree)?;
    let config = std::fs::read_to_string(&base.config)?;
    let scripts: Vec<String> = found
        .scripts
        .iter()
        .filter(|script| found.not_applicable(script, &config).is_none())
        .cloned()
        .collect();
    let mut kept = Vec::new();
    for script in &scripts {
        let check = checks::kernel_selftests(
            project,
            cache,
            spec,
            std::slice::from_ref(script),
            jobs,
            "baseline",
        );
        match &check.detection {
            None => {
                history.record(&selftest_key(script), false, check.elapsed);
                kept.push(script.clone());
            }
            Some(detection) => left_out.push(format!("{script}: {}", detection.detail)),
        }
    }
    Ok(kept)
}

fn selftest_key(script: &str) -> String {
    format!("kselftest:{script}")
}

/// What every mutant is tried with.
struct Trial<'a> {
    project: &'a Project,
    cache: &'a Cache,
    spec: &'a KernelSpec,
    options: &'a Options,
    scenarios: &'a [Scenario],
    scripts: &'a [String],
    base_objects: &'a BTreeMap<String, String>,
    output: &'a Path,
    /// Discarded builds being deleted.
    deleting: &'a std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

fn try_mutant(
    trial: &Trial,
    label: &str,
    candidate: &Candidate,
    history: &mut order::History,
) -> Result<MutantResult> {
    let spec = trial.spec.with_overlay(label, candidate.overlay.clone())?;
    let phase = |phase: &str| {
        event::emit(Event::MutantPhase {
            kernel: trial.spec.name.clone(),
            mutant: candidate.id.clone(),
            phase: phase.to_string(),
        })
    };
    let mut result = MutantResult {
        kernel: spec.name.clone(),
        candidate: candidate.clone(),
        status: Status::NotCompiled,
        compile_error: None,
        build: Duration::ZERO,
        suite: None,
        selftests: None,
        explore: None,
        kept: None,
    };

    // One build: a mutant that does not compile fails it within
    // seconds; one that compiles to the same code is found after it.
    phase("building");
    let started = Instant::now();
    let built = kernel::prepare(&spec, trial.cache);
    result.build = started.elapsed();
    let built = match built {
        Ok(built) => built,
        Err(err) => {
            result.compile_error = Some(crate::kbuild::compiler_messages(&format!("{err:#}")));
            return Ok(result);
        }
    };
    let objects: Vec<&str> = candidate.objects.iter().map(String::as_str).collect();
    if !objects.is_empty() {
        let hashes = kernel::built_objects(&spec, trial.cache, &objects)?;
        let same = candidate
            .objects
            .iter()
            .zip(&hashes)
            .all(|(object, hash)| trial.base_objects.get(object) == Some(hash));
        if same {
            result.status = Status::Equivalent;
            clean_up(trial, &spec, &built)?;
            return Ok(result);
        }
    }

    phase("suite");
    let mut names: Vec<String> = trial.scenarios.iter().map(|s| s.name.clone()).collect();
    history.order(&mut names);
    let ordered: Vec<&Scenario> = names
        .iter()
        .filter_map(|name| trial.scenarios.iter().find(|s| &s.name == name))
        .collect();
    let suite = checks::suite(
        trial.project,
        trial.cache,
        &spec,
        &ordered,
        trial.options.jobs,
    );
    record(history, &suite, |name| name.to_string());
    result.suite = Some(suite);

    if !trial.scripts.is_empty() {
        phase("selftests");
        let mut keys: Vec<String> = trial.scripts.iter().map(|s| selftest_key(s)).collect();
        history.order(&mut keys);
        let scripts: Vec<String> = keys
            .iter()
            .map(|key| key.trim_start_matches("kselftest:").to_string())
            .collect();
        let check = checks::kernel_selftests(
            trial.project,
            trial.cache,
            &spec,
            &scripts,
            trial.options.jobs,
            label,
        );
        record(history, &check, selftest_key);
        result.selftests = Some(check);
    }
    if let Some(runs) = trial.options.explore {
        phase("explore");
        result.explore = Some(checks::explore(
            trial.project,
            trial.cache,
            &spec,
            runs,
            trial.options.seed,
        ));
    }
    result.status = report::status_of(&[&result.suite, &result.selftests, &result.explore]);
    result.kept = keep(trial, label, &result)?;
    clean_up(trial, &spec, &built)?;
    Ok(result)
}

fn record(history: &mut order::History, check: &Check, key: impl Fn(&str) -> String) {
    for (name, failed, took) in &check.runs {
        history.record(&key(name), *failed, *took);
    }
}

/// A survivor's diff, or the logs of a crash or a timeout, into the
/// run's output directory.
fn keep(trial: &Trial, label: &str, result: &MutantResult) -> Result<Option<PathBuf>> {
    let safe = |id: &str| id.replace([':', '/', ' '], "_");
    if result.status == Status::Survived {
        let dir = trial.output.join("survivors");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(format!("{label}-{}.diff", safe(&result.candidate.id)));
        std::fs::write(&file, &result.candidate.diff)?;
        return Ok(Some(file));
    }
    let detection = [&result.suite, &result.selftests, &result.explore]
        .into_iter()
        .filter_map(|check| check.as_ref()?.detection.as_ref())
        .next();
    let Some(detection) = detection else {
        return Ok(None);
    };
    let Some(logs) = detection.logs.as_ref().filter(|logs| logs.is_dir()) else {
        return Ok(None);
    };
    let dir = trial.output.join("logs").join(label);
    std::fs::create_dir_all(&dir)?;
    for entry in walkdir::WalkDir::new(logs).min_depth(1) {
        let entry = entry?;
        let there = dir.join(entry.path().strip_prefix(logs)?);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&there)?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &there)?;
        }
    }
    std::fs::write(dir.join("mutant.diff"), &result.candidate.diff)?;
    Ok(Some(dir))
}

/// The mutant's run logs (kept above where they matter), its build and
/// its saved guest states go.
fn clean_up(trial: &Trial, spec: &KernelSpec, built: &kernel::Kernel) -> Result<()> {
    let runs = trial.project.output_dir().join("runs");
    for entry in walkdir::WalkDir::new(&runs).min_depth(1).max_depth(6) {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_dir() && entry.file_name().to_string_lossy() == spec.name {
            std::fs::remove_dir_all(entry.path()).ok();
        }
    }
    crate::guest::snapshot::discard_for(trial.cache, &built.image)?;
    let discarded = kernel::discard_variant(trial.cache, built)?;
    // Deleting the tree's links takes seconds; the next mutant need not wait.
    trial
        .deleting
        .lock()
        .unwrap()
        .push(std::thread::spawn(move || drop(discarded)));
    Ok(())
}

/// One line per mutant for the progress output.
fn summary(result: &MutantResult) -> String {
    let by = [&result.suite, &result.selftests, &result.explore]
        .into_iter()
        .filter_map(|check| check.as_ref()?.detection.as_ref())
        .map(|d| format!(" by {}: {}", d.by, d.detail))
        .next()
        .unwrap_or_default();
    let times = if result.ran() {
        format!(" ({:.0} s build and suite)", result.cost().as_secs_f64())
    } else {
        String::new()
    };
    format!(
        "{} {}{by}{times}",
        result.candidate.id,
        result.status.word()
    )
}
