//! scenarios × kernels ──> verdicts ──> a report: the scenarios and
//! kernels a command names, run a few guests at once, each verdict kept
//! (an event, report.jsonl, the run's verdict.json) as its run ends, and
//! the report of the whole. `run` and `repro` are this.

use crate::cache::Cache;
use crate::event::{self, Event};
use crate::kernel::{self, KernelSpec};
use crate::project::Project;
use crate::report::{self, Format, Journal};
use crate::scenario::{self, Outcome, Scenario, Verdict};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What `run` runs, and how it reports.
pub struct Options {
    /// Kernel names, `all`, or none for the default kernel.
    pub kernels: Vec<String>,
    /// Scenario files or names, or none for every scenario.
    pub scenarios: Vec<String>,
    pub format: Format,
    /// Guests at once.
    pub jobs: usize,
}

/// A suite that ran to its end.
pub struct Report {
    /// The report, in the format asked for.
    pub text: String,
    pub verdicts: Vec<Verdict>,
}

impl Report {
    /// Whether a scenario failed on some kernel.
    pub fn failed(&self) -> bool {
        self.verdicts
            .iter()
            .any(|v| matches!(v.outcome, Outcome::Fail(_)))
    }
}

/// A suite stopped by SIGINT or SIGTERM part way, with the report of the
/// runs that finished.
pub struct Interrupted {
    pub signal: i32,
    /// The report so far, in the format asked for.
    pub text: String,
    pub finished: usize,
    pub total: usize,
    /// report.jsonl, which keeps the finished runs' verdicts.
    pub journal: PathBuf,
}

impl Interrupted {
    /// What the user is told (on stderr).
    pub fn message(&self) -> String {
        format!(
            "klp-harness: interrupted by signal {}: {} of {} runs finished; their verdicts are \
             in {}",
            self.signal,
            self.finished,
            self.total,
            self.journal.display()
        )
    }
}

/// Run the scenarios on the kernels `options` names. Each verdict goes
/// to report.jsonl as its run ends; when SIGINT or SIGTERM arrives,
/// `on_interrupt` gets the report so far (on a thread of its own) and is
/// expected to end the process.
pub fn run(
    project: &Project,
    cache: &Cache,
    options: &Options,
    on_interrupt: impl FnOnce(Interrupted) + Send + 'static,
) -> Result<Report> {
    let specs = kernels(project, &options.kernels)?;
    let loaded = scenarios(project, &options.scenarios)?.collect::<Result<Vec<_>>>()?;
    let runs: Vec<(&Scenario, &KernelSpec)> = specs
        .iter()
        .flat_map(|spec| loaded.iter().map(move |scenario| (scenario, spec)))
        .collect();
    let rules: BTreeMap<String, String> = loaded
        .iter()
        .map(|s| (s.name.clone(), s.rules.join(", ")))
        .collect();
    let format = options.format;
    let journal = Journal::create(project.output_dir().join("report.jsonl"))?;
    let finished = Arc::new(Mutex::new(Vec::new()));
    let total = runs.len();
    crate::interrupt::on_interrupt({
        let (finished, rules, journal) = (finished.clone(), rules.clone(), journal.path.clone());
        move |signal| {
            let finished = finished.lock().unwrap_or_else(|p| p.into_inner());
            on_interrupt(Interrupted {
                signal,
                text: report::render(format, &finished, &rules),
                finished: finished.len(),
                total,
                journal,
            })
        }
    })?;
    let verdicts = scenario::execute_many(project, cache, &runs, options.jobs, |verdict| {
        // A run cut short by the interruption has no verdict of its own.
        if crate::interrupt::interrupted() {
            return;
        }
        journal.append(verdict);
        report::keep_verdict(verdict);
        finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(verdict.clone());
        event::emit(run_finished(verdict, true));
    });
    Ok(Report {
        text: report::render(format, &verdicts, &rules),
        verdicts,
    })
}

/// Run one scenario (a file or a name) on the kernels named, and report
/// where it passes and fails.
pub fn repro(
    project: &Project,
    cache: &Cache,
    name: &str,
    kernel_names: &[String],
    jobs: usize,
) -> Result<Report> {
    let loaded = scenario(project, name)?;
    let specs = kernels(project, kernel_names)?;
    let runs: Vec<_> = specs.iter().map(|spec| (&loaded, spec)).collect();
    let verdicts = scenario::execute_many(project, cache, &runs, jobs, |verdict| {
        report::keep_verdict(verdict);
        event::emit(run_finished(verdict, false));
    });
    Ok(Report {
        text: report::repro_table(&verdicts),
        verdicts,
    })
}

/// Judge kept runs again from their directories, without a guest: the
/// report of what each comes to now.
pub fn rejudge(project: &Project, dirs: &[PathBuf], format: report::Format) -> Result<Report> {
    let verdicts = dirs
        .iter()
        .map(|dir| {
            let verdict = scenario::rejudge(project, dir)?;
            event::emit(run_finished(&verdict, true));
            Ok(verdict)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Report {
        text: report::render(format, &verdicts, &BTreeMap::new()),
        verdicts,
    })
}

/// The event of a run that ended; with its failure in full, or not.
fn run_finished(verdict: &Verdict, with_failure: bool) -> Event {
    Event::RunFinished {
        scenario: verdict.scenario.clone(),
        kernel: verdict.kernel.clone(),
        outcome: report::outcome_word(&verdict.outcome),
        failure: match &verdict.outcome {
            Outcome::Fail(why) if with_failure => Some(why.to_string()),
            _ => None,
        },
    }
}

/// Scenario files named (files, or names under scenarios/), or every
/// scenario; relative to the current directory where they can be, so
/// that messages name them the way the user would.
pub fn files(project: &Project, wanted: &[String]) -> Result<Vec<PathBuf>> {
    let cwd = std::env::current_dir()?;
    let relative = |path: PathBuf| match path.strip_prefix(&cwd) {
        Ok(inside) => inside.to_path_buf(),
        Err(_) => path,
    };
    if wanted.is_empty() {
        return Ok(scenario::scenario_files(project)?
            .into_iter()
            .map(relative)
            .collect());
    }
    wanted
        .iter()
        .map(|name| {
            let as_path = PathBuf::from(name);
            let by_name = project.scenarios_dir().join(format!("{name}.yaml"));
            if as_path.is_file() {
                Ok(as_path.canonicalize()?)
            } else if by_name.is_file() {
                Ok(by_name)
            } else {
                bail!("no scenario {name:?} (neither a file nor scenarios/{name}.yaml)")
            }
        })
        .map(|path| path.map(relative))
        .collect()
}

/// The scenarios named (as `files`), each loaded when the iterator gets
/// to it.
pub fn scenarios<'a>(
    project: &'a Project,
    wanted: &[String],
) -> Result<impl Iterator<Item = Result<Scenario>> + 'a> {
    Ok(files(project, wanted)?
        .into_iter()
        .map(move |file| scenario::load(project, &file)))
}

/// One scenario, by file or by name under scenarios/.
pub fn scenario(project: &Project, name: &str) -> Result<Scenario> {
    let file = files(project, &[name.to_string()])?.remove(0);
    scenario::load(project, &file)
}

/// Kernels named on the command line: `all`, some names, or (none) the
/// default.
pub fn kernels(project: &Project, names: &[String]) -> Result<Vec<KernelSpec>> {
    if names.iter().any(|k| k == "all") {
        kernel::list(project)
    } else if names.is_empty() {
        Ok(vec![kernel::find(project, kernel::DEFAULT)?])
    } else {
        names
            .iter()
            .map(|name| kernel::find(project, name))
            .collect()
    }
}
