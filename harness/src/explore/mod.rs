//! `klp-harness explore`: random load / replace / revert sequences over a
//! generated pool of fixtures, run in a real guest and compared step by
//! step with the reference model. A divergence is shrunk by delta
//! debugging and written as an ordinary scenario file.

mod pool;
mod sequence;
mod shrink;

use crate::cache::Cache;
use crate::event::{self, Event};
use crate::fixture::target::{self, MODULE as TARGET};
use crate::guest::Guest;
use crate::kernel::behaviour::Profile;
use crate::kernel::{self, KernelSpec};
use crate::model::{Defs, Model, Mutation, Op};
use crate::project::Project;
use crate::scenario::{self, follow::Follower, Scenario, Settings};
use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Options {
    pub seed: u64,
    /// Sequences to run at most.
    pub runs: usize,
    /// Operations per sequence (waits the sequence needs come on top).
    pub steps: usize,
    /// Stop starting sequences after this long.
    pub time: Option<Duration>,
    /// Fixtures in the generated pool.
    pub pool: usize,
    /// A wrong rule to put into the model, to check that exploration finds it.
    pub mutation: Option<Mutation>,
    /// Guest CPUs.
    pub cpus: u32,
    /// Guests exploring at once, each running its share of the sequences.
    pub jobs: usize,
}

impl Options {
    /// `runs` sequences from `seed`, with the command line's defaults
    /// otherwise.
    pub fn new(seed: u64, runs: usize) -> Self {
        Self {
            seed,
            runs,
            steps: 10,
            time: None,
            pool: 6,
            mutation: None,
            cpus: crate::vm::DEFAULT_CPUS,
            jobs: 1,
        }
    }
}

/// What an exploration did.
pub struct Report {
    pub kernel: String,
    pub runs: usize,
    pub steps: usize,
    pub elapsed: Duration,
    pub boots: usize,
    /// The pool, one line per fixture.
    pub pool: Vec<String>,
    /// Scenario files written for divergences.
    pub divergences: Vec<Divergence>,
    /// What the sequences did, by operation and outcome.
    pub tally: sequence::Tally,
    /// Sequences that force ("force") or reverse ("reverse") a transition
    /// and then disable or unload a patch involved.
    pub rare_flows: std::collections::BTreeMap<&'static str, usize>,
    pub workspace: PathBuf,
}

pub struct Divergence {
    pub file: PathBuf,
    /// Steps of the original sequence and of the shrunk scenario
    /// (klp_target's load included).
    pub original_steps: usize,
    pub shrunk_steps: usize,
    pub failure: String,
}

/// Guests exploring at once by default: one per CPU, plus one. A guest
/// waits idle for klp's next try (a second apart) in many sequences, and
/// on 2 CPUs three guests ran 30 sequences in 41.5 s against 52.5 s for
/// two (debian-6.12, one run each).
pub fn default_jobs() -> usize {
    scenario::default_jobs() + 1
}

/// Where the pool's fixture files go: beside the sequences, as a scenario's
/// own fixtures (`scenario::local_fixtures_dir`).
fn pool_fixtures_dir(workspace: &Path) -> PathBuf {
    scenario::local_fixtures_dir(&workspace.join("sequence.yaml"))
}

/// What running one sequence found.
struct Ran {
    ops: Vec<Op>,
    failure: Option<Failure>,
}

pub fn explore(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    options: &Options,
) -> Result<Report> {
    let started = Instant::now();
    let workspace = project
        .output_dir()
        .join("explore")
        .join(format!("{}-seed{}", spec.name, options.seed));
    if workspace.exists() {
        std::fs::remove_dir_all(&workspace)
            .with_context(|| format!("cannot clear {}", workspace.display()))?;
    }
    let fixtures_dir = pool_fixtures_dir(&workspace);
    std::fs::create_dir_all(&fixtures_dir)
        .with_context(|| format!("cannot create {}", fixtures_dir.display()))?;

    let profile = kernel::prepare(spec, cache)?.profile()?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let api = crate::fixture::spec::KernelApi::of(&profile);
    let fixtures = pool::generate(&mut rng, options.seed, options.pool, api);
    for fixture in &fixtures {
        std::fs::write(
            fixtures_dir.join(format!("{}.yaml", fixture.name)),
            fixture.yaml(options.seed),
        )?;
    }
    let names: Vec<String> = fixtures.iter().map(|f| f.name.clone()).collect();
    let defs: Defs = fixtures.iter().map(|f| (f.name.clone(), f.def())).collect();

    let mut start = Model::new(defs.clone(), &profile).with_mutation(options.mutation);
    start
        .step(&Op::Load(target::MODULE.to_string()), true)
        .expect("the model loads klp_target");
    let mut runners = (0..options.jobs.max(1))
        .map(|job| {
            let mut runner =
                Runner::new(project, cache, spec, &workspace, &names, options.cpus, job)?;
            runner.follow = Some((defs.clone(), profile.clone(), options.mutation));
            Ok(runner)
        })
        .collect::<Result<Vec<_>>>()?;

    event::emit(Event::ExploreStarted {
        kernel: spec.name.clone(),
        runs: options.runs,
    });
    let ran = run_sequences(&mut runners, &start, &names, options, spec, started)?;
    let mut report = Report {
        kernel: spec.name.clone(),
        runs: 0,
        steps: 0,
        elapsed: Duration::ZERO,
        boots: 0,
        pool: fixtures.iter().map(pool::PoolFixture::summary).collect(),
        divergences: Vec::new(),
        tally: sequence::Tally::new(),
        rare_flows: Default::default(),
        workspace: workspace.clone(),
    };
    // In the order of the sequences, up to the first divergence, whichever
    // guest ran them.
    for (run, ran) in ran.into_iter().enumerate() {
        let Some(Ran { ops, failure }) = ran else {
            break;
        };
        report.runs += 1;
        report.steps += ops.len() + 1;
        if let Some(moves) = sequence::replay(&start, &ops) {
            sequence::tally(&mut report.tally, &moves);
            if let Some(kind) = sequence::rare_flow(&start, &moves) {
                *report.rare_flows.entry(kind).or_default() += 1;
            }
        }
        if let Some(failure) = failure {
            let label = sequence_label(run);
            event::emit(Event::ExploreDiverged {
                sequence: label.clone(),
                failure: first_lines(&failure.text, 12),
            });
            let divergence =
                shrink_and_write(&mut runners[0], &start, ops, failure, &label, options, spec)?;
            report.divergences.push(divergence);
            break;
        }
    }
    event::emit(Event::ExploreFinished {
        kernel: spec.name.clone(),
    });
    for runner in &mut runners {
        runner.stop();
        report.boots += runner.boots;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Run the sequences on the runners' guests at once, each taking the next
/// sequence not yet taken; by sequence number, what each found (None for
/// a sequence not run: past the time limit, or after a divergence).
fn run_sequences(
    runners: &mut [Runner],
    start: &Model,
    names: &[String],
    options: &Options,
    spec: &KernelSpec,
    started: Instant,
) -> Result<Vec<Option<Ran>>> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let steps = AtomicUsize::new(0);
    let boots = AtomicUsize::new(0);
    // A guest that cannot go on stops them all.
    let stop = AtomicBool::new(false);
    // Sequences past the first divergence found are not started.
    let first_divergence = AtomicUsize::new(usize::MAX);
    let results: Mutex<Vec<Option<Ran>>> = Mutex::new((0..options.runs).map(|_| None).collect());
    std::thread::scope(|scope| {
        let workers: Vec<_> = runners
            .iter_mut()
            .map(|runner| {
                let (next, done, steps, boots) = (&next, &done, &steps, &boots);
                let (first_divergence, results, stop) = (&first_divergence, &results, &stop);
                scope.spawn(move || -> Result<()> {
                    loop {
                        if stop.load(Ordering::SeqCst)
                            || options.time.is_some_and(|limit| started.elapsed() >= limit)
                        {
                            return Ok(());
                        }
                        let run = next.fetch_add(1, Ordering::SeqCst);
                        if run >= options.runs || run > first_divergence.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        let mut rng = ChaCha8Rng::seed_from_u64(sequence_seed(options.seed, run));
                        let ops = sequence::generate(&mut rng, start, names, options.steps);
                        let booted = runner.boots;
                        let failure = runner
                            .run(start, &ops, &sequence_label(run))
                            .inspect_err(|_| stop.store(true, Ordering::SeqCst))?;
                        boots.fetch_add(runner.boots - booted, Ordering::SeqCst);
                        let steps_so_far =
                            steps.fetch_add(ops.len() + 1, Ordering::SeqCst) + ops.len() + 1;
                        if failure.is_some() {
                            first_divergence.fetch_min(run, Ordering::SeqCst);
                        }
                        results.lock().unwrap_or_else(|p| p.into_inner())[run] =
                            Some(Ran { ops, failure });
                        event::emit(Event::ExploreProgress {
                            kernel: spec.name.clone(),
                            done: done.fetch_add(1, Ordering::SeqCst) + 1,
                            runs: options.runs,
                            steps: steps_so_far,
                            boots: boots.load(Ordering::SeqCst),
                            elapsed: started.elapsed(),
                        });
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("an exploring thread panicked"))
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn sequence_label(run: usize) -> String {
    format!("sequence-{:04}", run + 1)
}

fn sequence_seed(seed: u64, run: usize) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(run as u64)
}

/// A divergence as the kernel showed it.
struct Failure {
    /// What a smaller sequence must fail the same way at to count as the
    /// same divergence.
    kind: String,
    text: String,
}

/// The action of the failing step ("wait klp_s2"), or the error itself
/// when no step failed (the guest died between steps).
fn failure_kind(err: &anyhow::Error) -> String {
    match err.downcast_ref::<scenario::StepError>() {
        Some(failed) => failed.step.action.clone(),
        None => first_lines(&format!("{err}"), 1),
    }
}

fn first_lines(text: &str, count: usize) -> String {
    text.lines().take(count).collect::<Vec<_>>().join("\n")
}

fn shrink_and_write(
    runner: &mut Runner,
    start: &Model,
    ops: Vec<Op>,
    original: Failure,
    label: &str,
    options: &Options,
    spec: &KernelSpec,
) -> Result<Divergence> {
    let original_steps = ops.len() + 1;
    let mut attempt = 0;
    let mut last_failure = None;
    let mut run_error = None;
    let shrunk = shrink::ddmin(ops, |candidate| {
        // A candidate is a sequence the model follows and the loader takes.
        if run_error.is_some() || runner.render(start, candidate, label).is_err() {
            return false;
        }
        attempt += 1;
        match runner.run(start, candidate, &format!("{label}-shrink-{attempt:03}")) {
            // Another failure is another divergence, not a smaller one.
            Ok(Some(failure)) if failure.kind == original.kind => {
                last_failure = Some(failure.text);
                true
            }
            Ok(_) => false,
            Err(err) => {
                run_error = Some(err);
                false
            }
        }
    });
    if let Some(err) = run_error {
        return Err(err.context("shrinking the divergent sequence"));
    }
    // Run the result once more: it is what the file shows.
    let failure = match runner.run(start, &shrunk, &format!("{label}-shrunk"))? {
        Some(failure) if failure.kind == original.kind => failure.text,
        Some(other) => format!(
            "the shrunk sequence failed another way when run again:\n{}",
            other.text
        ),
        None => last_failure.unwrap_or_else(|| {
            format!(
                "the shrunk sequence passed when run again; the first run failed:\n{}",
                original.text
            )
        }),
    };
    let moves = sequence::replay(start, &shrunk).expect("the shrunk sequence replays");
    let file = runner.workspace.join(format!("divergence-{label}.yaml"));
    let shown = file
        .strip_prefix(runner.project_root.as_path())
        .unwrap_or(&file)
        .display()
        .to_string();
    let mutation = options
        .mutation
        .map(|m| format!(" --mutate {}", m.name()))
        .unwrap_or_default();
    let cpus = match options.cpus {
        crate::vm::DEFAULT_CPUS => String::new(),
        cpus => format!(" --cpus {cpus}"),
    };
    let header = format!(
        "Found by `klp-harness explore --kernel {kernel} --seed {seed} --steps {steps} --pool {pool}{cpus}{mutation}`\n\
         ({label}, shrunk from {original_steps} to {shrunk_steps} steps by delta debugging).\n\
         The kernel disagreed with the reference model:\n{failure}\n\
         Re-run: cargo run --release -- run --kernel {kernel} {shown}",
        kernel = spec.name,
        seed = options.seed,
        steps = options.steps,
        pool = options.pool,
        shrunk_steps = moves.len() + 1,
        failure = first_lines(&failure, 6)
    );
    let description = format!(
        "explore seed {} {label} on {}, shrunk to {} steps",
        options.seed,
        spec.name,
        moves.len() + 1
    );
    let text = sequence::scenario_yaml(
        &header,
        &description,
        &sequence::fixtures_used(&runner.pool, &moves),
        &moves,
        options.cpus,
    );
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(Divergence {
        file,
        original_steps,
        shrunk_steps: moves.len() + 1,
        failure,
    })
}

/// Runs each sequence in a fresh guest started from the saved state;
/// where guests boot instead, in one guest while that is safe, booting a
/// fresh one after a failure or when the reset cannot clean up (a forced
/// transition pins modules for good).
struct Runner<'a> {
    project: &'a Project,
    project_root: PathBuf,
    cache: &'a Cache,
    spec: &'a KernelSpec,
    workspace: PathBuf,
    pool: Vec<String>,
    /// The target module and every pool fixture: each guest has them all.
    pool_fixtures: Vec<crate::fixture::Fixture>,
    cpus: u32,
    /// Where this runner's guests log.
    log_dir: PathBuf,
    guest: Option<Guest>,
    boots: usize,
    /// Model inputs for each run's follower.
    follow: Option<(Defs, Profile, Option<Mutation>)>,
}

impl<'a> Runner<'a> {
    fn new(
        project: &'a Project,
        cache: &'a Cache,
        spec: &'a KernelSpec,
        workspace: &Path,
        pool: &[String],
        cpus: u32,
        job: usize,
    ) -> Result<Self> {
        let fixtures_dir = pool_fixtures_dir(workspace);
        let mut pool_fixtures = vec![crate::fixture::find(project, TARGET)?];
        for name in pool {
            pool_fixtures.push(crate::fixture::find_in(&fixtures_dir, name)?);
        }
        Ok(Runner {
            project,
            project_root: project.root().to_path_buf(),
            cache,
            spec,
            workspace: workspace.to_path_buf(),
            pool: pool.to_vec(),
            pool_fixtures,
            cpus,
            log_dir: workspace.join(format!("pool-{}", job + 1)),
            guest: None,
            boots: 0,
            follow: None,
        })
    }

    /// The sequence as a scenario, made from the model's operations, and
    /// the text it would be saved as; an error when the model cannot
    /// follow it.
    fn render(&self, start: &Model, ops: &[Op], label: &str) -> Result<(String, Scenario)> {
        let moves = sequence::replay(start, ops).context("a sequence the model cannot follow")?;
        let file = self.workspace.join(format!("{label}.yaml"));
        let used = sequence::fixtures_used(&self.pool, &moves);
        let text = sequence::scenario_yaml(label, label, &used, &moves, self.cpus);
        let steps = sequence::checked_steps(&file, &text, &moves);
        let fixtures = self
            .pool_fixtures
            .iter()
            .filter(|f| f.name == TARGET || used.contains(&f.name))
            .cloned()
            .collect();
        let scenario = Scenario::generated(label.to_string(), file, fixtures, steps, self.cpus)?;
        Ok((text, scenario))
    }

    /// Run one sequence; Some(failure) when the kernel and the model differ.
    fn run(&mut self, start: &Model, ops: &[Op], label: &str) -> Result<Option<Failure>> {
        let (text, scenario) = self.render(start, ops, label)?;
        let artifacts = self.workspace.join("runs").join(label);
        std::fs::create_dir_all(&artifacts)?;
        let limit = crate::testbed::Timeouts::from_env().transition;
        let mut settings = Settings::new(&artifacts, limit);
        if let Some((defs, profile, mutation)) = &self.follow {
            settings.follower = Some(Follower::new(defs.clone(), profile, *mutation));
        }
        if self.guest.is_none() {
            let request = crate::testbed::Request {
                cpus: self.cpus,
                ..crate::testbed::Request::new(&self.pool_fixtures, self.log_dir.clone())
            };
            let (testbed, _) =
                crate::testbed::start(self.project, self.cache, self.spec, &request)?;
            self.guest = Some(testbed.guest);
            self.boots += 1;
        }
        let guest = self.guest.as_mut().expect("booted");
        let mut trace = String::new();
        let result = scenario::run_steps(guest, &scenario, &scenario.steps, settings, &mut trace);
        std::fs::write(artifacts.join("steps.log"), &trace)?;
        match result {
            Ok(()) => {
                // A guest that starts from a saved state starts afresh
                // faster than it disables what the sequence left enabled
                // (45 sequences on debian-6.12: 66.6 s against 71.9 s).
                let restored = self.guest.as_ref().is_some_and(|g| g.boot.restored);
                if restored || !self.reset(&artifacts)? {
                    self.stop();
                }
                Ok(None)
            }
            Err(err) => {
                // A sequence is written out only when it failed: to re-run it.
                let file = &scenario.file;
                std::fs::write(file, &text)
                    .with_context(|| format!("cannot write {}", file.display()))?;
                let console = self.workspace.join("runs").join(label).join("console.log");
                if let Some(guest) = self.guest.take() {
                    std::fs::write(&console, guest.vm.console.text()).ok();
                    drop(guest);
                }
                Ok(Some(Failure {
                    kind: failure_kind(&err),
                    text: format!("{err:#}\n(logs: {})", artifacts.display()),
                }))
            }
        }
    }

    /// Bring the guest back to a fresh boot's state; false if it cannot.
    /// What the reset printed goes to `artifacts`/reset.log.
    fn reset(&mut self, artifacts: &Path) -> Result<bool> {
        let Some(guest) = self.guest.as_mut() else {
            return Ok(false);
        };
        let limit = crate::testbed::Timeouts::from_env().transition;
        let wait = crate::guest::livepatch::wait_transition_command("$p", limit);
        let command = format!(
            "echo 0 > /sys/kernel/klp_target/park 2>/dev/null; r=0; \
             while p=$(ls /sys/kernel/livepatch | tail -n 1); [ -n \"$p\" ] && [ $r -lt 20 ]; do \
               r=$((r+1)); {wait}; echo 0 > /sys/kernel/livepatch/$p/enabled 2>/dev/null; {wait}; \
             done; \
             for m in $(cut -d' ' -f1 /proc/modules); do \
               case $m in klp_s*|{TARGET}) rmmod $m;; esac; done; \
             rmmod klp_features && insmod /boot-modules/*-klp_features.ko && \
             [ -z \"$(ls /sys/kernel/livepatch)\" ] && \
             ! grep -qE '^(klp_s|{TARGET} )' /proc/modules && echo CLEAN"
        );
        let output = guest.run(&command)?;
        std::fs::write(
            artifacts.join("reset.log"),
            format!("$ {command}\n{}[status {}]\n", output.output, output.status),
        )?;
        Ok(output.output.contains("CLEAN"))
    }

    fn stop(&mut self) {
        if let Some(mut guest) = self.guest.take() {
            guest.vm.kill();
        }
    }
}

/// The report as printed at the end of `explore`.
pub fn summary(report: &Report) -> String {
    let mut text = format!(
        "explored {}: {} sequences, {} steps, {} guest boots, {:.1} s\n\
         sequences, logs and divergences: {}\npool:\n",
        report.kernel,
        report.runs,
        report.steps,
        report.boots,
        report.elapsed.as_secs_f64(),
        crate::project::shown_path(&report.workspace)
    );
    for line in &report.pool {
        text.push_str(&format!("  {line}\n"));
    }
    text.push_str("operations (outcome as predicted and seen):\n");
    for (op, outcomes) in &report.tally {
        let outcomes: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        text.push_str(&format!("  {op:<8} {}\n", outcomes.join(", ")));
    }
    let rare: usize = report.rare_flows.values().sum();
    let kinds: Vec<String> = report
        .rare_flows
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    text.push_str(&format!(
        "sequences that force or reverse a transition, then disable or unload a patch \
         involved: {rare} of {} ({:.0}%){}\n",
        report.runs,
        100.0 * rare as f64 / report.runs.max(1) as f64,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(": {}", kinds.join(", "))
        }
    ));
    if report.divergences.is_empty() {
        text.push_str("no divergence from the reference model\n");
    }
    for d in &report.divergences {
        text.push_str(&format!(
            "divergence, shrunk from {} to {} steps: {}\n{}\n",
            d.original_steps,
            d.shrunk_steps,
            crate::project::shown_path(&d.file),
            first_lines(&d.failure, 8)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{FailedStep, StepError};

    fn failed_at(action: &str, why: &str) -> anyhow::Error {
        StepError {
            step: FailedStep {
                label: "3".into(),
                action: action.into(),
                position: crate::yaml::Position {
                    file: "s.yaml".into(),
                    line: 8,
                    column: 5,
                },
            },
            error: anyhow::anyhow!("{why}"),
        }
        .into()
    }

    #[test]
    fn a_failure_is_the_same_divergence_only_at_the_same_action() {
        let waited = failure_kind(&failed_at("wait klp_s2", "still in transition"));
        assert_eq!(waited, "wait klp_s2");
        // What the kernel said may differ; where it diverged may not.
        assert_eq!(
            failure_kind(&failed_at("wait klp_s2", "sysfs differs")),
            waited
        );
        assert_ne!(
            failure_kind(&failed_at("reverse klp_s2", "still in transition")),
            waited
        );
        // The guest died between steps: its first line is the kind.
        let died = anyhow::anyhow!("the guest stopped answering\nconsole: ...");
        assert_eq!(failure_kind(&died), "the guest stopped answering");
    }
}
