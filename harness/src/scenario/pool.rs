//! Running many (scenario, kernel) pairs, a few guests at once.

use super::load::Scenario;
use super::session::execute;
use super::verdict::Verdict;
use crate::cache::Cache;
use crate::kernel::KernelSpec;
use crate::project::Project;

/// One guest per CPU: under TCG each guest keeps one host CPU busy.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Execute every (scenario, kernel) pair, up to `jobs` at once; verdicts
/// come back in the order of `runs`, and `done` sees each as it ends.
pub fn execute_many(
    project: &Project,
    cache: &Cache,
    runs: &[(&Scenario, &KernelSpec)],
    jobs: usize,
    done: impl Fn(&Verdict) + Sync,
) -> Vec<Verdict> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; runs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, runs.len().max(1)) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((scenario, spec)) = runs.get(index) else {
                    return;
                };
                let verdict = execute(project, cache, scenario, spec);
                done(&verdict);
                results.lock().unwrap()[index] = Some(verdict);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|verdict| verdict.expect("every run has a verdict"))
        .collect()
}
