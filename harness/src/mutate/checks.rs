//! What may kill a mutant: the scenario suite, the kernel's own
//! selftests, random exploration. Each runs until the first detection
//! (up to `jobs` guests at once) and says what detected the mutant and
//! how: a failed expectation (killed), a guest that stopped answering
//! (timed out) or one that crashed (killed too, with its logs kept).

use crate::cache::Cache;
use crate::kernel::KernelSpec;
use crate::peer::selftests::{self, ScriptResult};
use crate::project::Project;
use crate::scenario::{self, Failure, Outcome, Scenario, Verdict};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Killed,
    TimedOut,
    Crashed,
}

#[derive(Clone, Debug, Serialize)]
pub struct Detection {
    /// The scenario, the selftest script, or `explore`.
    pub by: String,
    pub class: Class,
    /// Which step or test, and what differed.
    pub detail: String,
    /// The run's logs (console, QEMU, steps).
    pub logs: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Check {
    pub detection: Option<Detection>,
    /// Scenarios, scripts or sequences run.
    pub ran: usize,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Every verdict or script result, name and seconds (for the history).
    #[serde(skip)]
    pub runs: Vec<(String, bool, Duration)>,
}

/// Run `items` with up to `jobs` at once, in order, starting no new one
/// once `failed` said yes; every result that was produced, with its index.
fn until_first<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    run: impl Fn(usize, &T) -> R + Sync,
    failed: impl Fn(&R) -> bool + Sync,
) -> Vec<(usize, R)> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for lane in 0..jobs.clamp(1, items.len().max(1)) {
            let (next, stop, results, run, failed) = (&next, &stop, &results, &run, &failed);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(index) else {
                    return;
                };
                let result = run(lane, item);
                if failed(&result) {
                    stop.store(true, Ordering::SeqCst);
                }
                results.lock().unwrap().push((index, result));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(index, _)| *index);
    results
}

/// The scenarios, in this order, until one fails.
pub fn suite(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    scenarios: &[&Scenario],
    jobs: usize,
) -> Check {
    let started = Instant::now();
    let verdicts = until_first(
        scenarios,
        jobs,
        |_, scenario| scenario::execute(project, cache, scenario, spec),
        |verdict: &Verdict| matches!(verdict.outcome, Outcome::Fail(_)),
    );
    let detection = verdicts
        .iter()
        .find_map(|(_, verdict)| match &verdict.outcome {
            Outcome::Fail(failure) => Some(Detection {
                by: verdict.scenario.clone(),
                class: classify(&failure.message),
                detail: detail(failure),
                logs: Some(verdict.artifacts.clone()),
            }),
            _ => None,
        });
    Check {
        detection,
        ran: verdicts.len(),
        elapsed: started.elapsed(),
        runs: verdicts
            .iter()
            .map(|(_, v)| {
                let failed = matches!(v.outcome, Outcome::Fail(_));
                (v.scenario.clone(), failed, v.duration)
            })
            .collect(),
    }
}

/// How a run failed: its guest stopped answering, crashed, or showed
/// something else than expected.
pub fn classify(message: &str) -> Class {
    if message.contains("no answer within") || message.contains("did not become ready within") {
        return Class::TimedOut;
    }
    let splat = message
        .split("the kernel logged a warning or crash: ")
        .nth(1)
        .is_some_and(|line| !line.contains("WARNING"));
    if splat || message.contains("the guest stopped") || message.contains("guest stopped before") {
        return Class::Crashed;
    }
    Class::Killed
}

fn detail(failure: &Failure) -> String {
    let first = failure.message.lines().next().unwrap_or_default();
    match &failure.step {
        Some(step) => format!("step {} `{}`: {first}", step.label, step.action),
        None => first.to_string(),
    }
}

/// The kernel's selftest scripts, each lane one guest running them in
/// turn, until one fails.
pub fn kernel_selftests(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    scripts: &[String],
    jobs: usize,
    label: &str,
) -> Check {
    let started = Instant::now();
    let lanes: Vec<Mutex<Option<crate::guest::Guest>>> =
        (0..jobs.max(1)).map(|_| Mutex::new(None)).collect();
    let results = until_first(
        scripts,
        jobs,
        |lane, script| {
            let mut slot = lanes[lane].lock().unwrap();
            let run = (|| {
                if slot.is_none() {
                    let lane_label = format!("{label}-{lane}");
                    let (guest, _, _) = selftests::guest_for(project, cache, spec, &lane_label)?;
                    *slot = Some(guest);
                }
                let guest = slot.as_mut().expect("a guest");
                selftests::run_script(guest, script, selftests::timeout())
            })()
            .map_err(|e| format!("{e:#}"));
            if run.is_err() {
                if let Some(mut guest) = slot.take() {
                    guest.vm.kill();
                }
            }
            (lane, run)
        },
        |(_, result)| match result {
            Ok(run) => matches!(run.outcome, ScriptResult::Fail { .. }),
            Err(_) => true,
        },
    );
    for lane in lanes {
        if let Some(guest) = lane.into_inner().unwrap() {
            // A guest that does not power off is killed by its drop.
            let _ = guest.shutdown();
        }
    }
    let logs = |lane_label: &str| {
        scenario::artifacts_dir(project, &format!("kselftest-{lane_label}"), &spec.name)
    };
    let mut detection = None;
    let mut runs = Vec::new();
    for (index, (lane, result)) in &results {
        let script = &scripts[*index];
        match result {
            Ok(run) => {
                let failed = matches!(run.outcome, ScriptResult::Fail { .. });
                runs.push((script.clone(), failed, run.elapsed));
                if let (ScriptResult::Fail { test, output }, None) = (&run.outcome, &detection) {
                    detection = Some(Detection {
                        by: script.clone(),
                        class: Class::Killed,
                        detail: format!("{test}: {}", first_difference(output)),
                        logs: None,
                    });
                }
            }
            Err(message) => {
                runs.push((script.clone(), true, Duration::ZERO));
                if detection.is_none() {
                    detection = Some(Detection {
                        by: script.clone(),
                        class: classify(message),
                        detail: message.lines().next().unwrap_or_default().to_string(),
                        logs: Some(logs(&format!("{label}-{lane}"))),
                    });
                }
            }
        }
    }
    Check {
        detection,
        ran: results.len(),
        elapsed: started.elapsed(),
        runs,
    }
}

/// The first line the script's diff removes or adds.
fn first_difference(output: &str) -> String {
    output
        .lines()
        .find(|line| {
            (line.starts_with('-') || line.starts_with('+'))
                && !line.starts_with("---")
                && !line.starts_with("+++")
        })
        .or_else(|| output.lines().find(|line| line.starts_with("ERROR")))
        .unwrap_or("failed")
        .to_string()
}

/// `runs` random sequences against the reference model.
pub fn explore(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    runs: usize,
    seed: u64,
) -> Check {
    let started = Instant::now();
    let options = crate::explore::Options::new(seed, runs);
    let (detection, ran) = match crate::explore::explore(project, cache, spec, &options) {
        Ok(report) => (
            report.divergences.first().map(|divergence| Detection {
                by: "explore".to_string(),
                class: classify(&divergence.failure),
                detail: divergence
                    .failure
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                logs: Some(divergence.file.clone()),
            }),
            report.runs,
        ),
        Err(err) => {
            let message = format!("{err:#}");
            (
                Some(Detection {
                    by: "explore".to_string(),
                    class: classify(&message),
                    detail: message.lines().next().unwrap_or_default().to_string(),
                    logs: None,
                }),
                0,
            )
        }
    };
    Check {
        detection,
        ran,
        elapsed: started.elapsed(),
        runs: Vec::new(),
    }
}

/// Durations in JSON: seconds, to a tenth.
pub fn seconds<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((duration.as_secs_f64() * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_how_the_guest_ended() {
        assert_eq!(
            classify("no answer within 60s while running `insmod /klp/x.ko`"),
            Class::TimedOut
        );
        assert_eq!(
            classify("guest did not become ready within 60s"),
            Class::TimedOut
        );
        assert_eq!(
            classify("the guest stopped while running `rmmod x`; last console lines:"),
            Class::Crashed
        );
        assert_eq!(
            classify("s.yaml: the kernel logged a warning or crash: BUG: kernel NULL pointer dereference"),
            Class::Crashed
        );
        assert_eq!(
            classify("s.yaml: the kernel logged a warning or crash: WARNING: CPU: 0 PID: 1 at kernel/livepatch/core.c:9"),
            Class::Killed
        );
        assert_eq!(
            classify("target status: expected \"original\", found \"klp_cumul_v1 f1=v1\""),
            Class::Killed
        );
    }

    #[test]
    fn no_item_starts_after_the_first_failure() {
        let items: Vec<usize> = (0..20).collect();
        let results = until_first(&items, 1, |_, n| *n, |n| *n == 3);
        let ran: Vec<usize> = results.into_iter().map(|(_, n)| n).collect();
        assert_eq!(ran, [0, 1, 2, 3]);
        let all = until_first(&items, 2, |_, n| *n, |_| false);
        assert_eq!(all.len(), 20);
    }

    #[test]
    fn the_first_changed_line_of_a_selftest_diff() {
        let output = "TEST: x ... not ok\n\n--- expected\n+++ result\n@@ -1,2 +1,2 @@\n a\n-livepatch: b\n+livepatch: c\n";
        assert_eq!(first_difference(output), "-livepatch: b");
    }
}
