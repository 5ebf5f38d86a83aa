//! A mutation run's results: one row per mutant, the scores of the suite,
//! of the kernel's selftests and of both, and the times; JSON for tools.

use super::candidates::Candidate;
use super::checks::{seconds, Check, Class};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The mutated file does not compile, or the kernel does not link.
    NotCompiled,
    /// It compiles to the same object code as the original: no test can
    /// tell them apart, so it counts for nothing.
    Equivalent,
    Killed,
    TimedOut,
    /// The guest crashed (panic, oops): killed, with the logs kept.
    Crashed,
    Survived,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::NotCompiled => "not compiled",
            Status::Equivalent => "equivalent",
            Status::Killed => "killed",
            Status::TimedOut => "timed out",
            Status::Crashed => "crashed",
            Status::Survived => "survived",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MutantResult {
    /// The kernel it ran as, e.g. `src-6.12+m007`.
    pub kernel: String,
    #[serde(flatten)]
    pub candidate: Candidate,
    pub status: Status,
    /// The compiler's or linker's complaint, for a mutant that does not build.
    pub compile_error: Option<String>,
    #[serde(serialize_with = "seconds")]
    pub build: Duration,
    pub suite: Option<Check>,
    pub selftests: Option<Check>,
    pub explore: Option<Check>,
    /// Where the diff of a survivor, or the logs of a crash, were kept.
    pub kept: Option<PathBuf>,
}

impl MutantResult {
    /// Ran against the tests: it compiled to different code.
    pub fn ran(&self) -> bool {
        !matches!(self.status, Status::NotCompiled | Status::Equivalent)
    }

    /// Incremental build and the suite.
    pub fn cost(&self) -> Duration {
        self.build + self.suite.as_ref().map_or(Duration::ZERO, |c| c.elapsed)
    }

    fn detected_by(check: &Option<Check>) -> bool {
        check.as_ref().is_some_and(|c| c.detection.is_some())
    }
}

/// The overall status from what the checks found (the suite's first).
pub fn status_of(checks: &[&Option<Check>]) -> Status {
    checks
        .iter()
        .filter_map(|check| check.as_ref()?.detection.as_ref())
        .map(|detection| match detection.class {
            Class::Killed => Status::Killed,
            Class::TimedOut => Status::TimedOut,
            Class::Crashed => Status::Crashed,
        })
        .next()
        .unwrap_or(Status::Survived)
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub seed: Option<u64>,
    /// Candidates there were to draw from.
    pub candidates: usize,
    /// Scenarios and selftest scripts the mutants ran against (those that
    /// pass on the unmutated kernel), and those left out, with why.
    pub scenarios: Vec<String>,
    pub selftests: Vec<String>,
    pub left_out: Vec<String>,
    pub mutants: Vec<MutantResult>,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    pub output: PathBuf,
}

/// A share, as "killed/ran (percent)".
fn score(killed: usize, ran: usize) -> String {
    if ran == 0 {
        return "0/0".to_string();
    }
    format!(
        "{killed}/{ran} ({:.1}%)",
        100.0 * killed as f64 / ran as f64
    )
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

impl Report {
    pub fn table(&self) -> String {
        let ran: Vec<&MutantResult> = self.mutants.iter().filter(|m| m.ran()).collect();
        let count = |status| self.mutants.iter().filter(|m| m.status == status).count();
        let by_suite = ran
            .iter()
            .filter(|m| MutantResult::detected_by(&m.suite))
            .count();
        let by_selftests = ran
            .iter()
            .filter(|m| MutantResult::detected_by(&m.selftests))
            .count();
        let by_explore = ran
            .iter()
            .filter(|m| MutantResult::detected_by(&m.explore))
            .count();
        let by_any = ran.iter().filter(|m| m.status != Status::Survived).count();
        let by_both = ran
            .iter()
            .filter(|m| {
                MutantResult::detected_by(&m.suite) && MutantResult::detected_by(&m.selftests)
            })
            .count();
        let with_selftests = ran.iter().any(|m| m.selftests.is_some());
        let with_explore = ran.iter().any(|m| m.explore.is_some());

        let mut rows = vec![[
            "mutant".to_string(),
            "change".to_string(),
            "result".to_string(),
            "suite".to_string(),
            "selftests".to_string(),
            "build+suite".to_string(),
        ]];
        for m in &self.mutants {
            let by = |check: &Option<Check>| match check {
                None => "-".to_string(),
                Some(check) => match &check.detection {
                    Some(d) => d.by.clone(),
                    None => format!("survived {}", check.ran),
                },
            };
            let change = match m.candidate.operator {
                Some(_) => format!("{} -> {}", m.candidate.before, m.candidate.after),
                None => m.candidate.file.display().to_string(),
            };
            rows.push([
                m.candidate.id.clone(),
                truncate(&change, 60),
                m.status.word().to_string(),
                by(&m.suite),
                by(&m.selftests),
                if m.ran() {
                    format!("{:.1} s", m.cost().as_secs_f64())
                } else {
                    "-".to_string()
                },
            ]);
        }
        let mut widths = [0; 6];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            out += line.join("  ").trim_end();
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "\nmutate {}: {} candidates, {} tried: {} compiled, {} not compiled, {} equivalent (same object code)",
            self.kernel,
            self.candidates,
            self.mutants.len(),
            self.mutants.len() - count(Status::NotCompiled),
            count(Status::NotCompiled),
            count(Status::Equivalent),
        );
        let _ = writeln!(
            out,
            "of {} run: {} killed, {} timed out, {} crashed, {} survived",
            ran.len(),
            count(Status::Killed),
            count(Status::TimedOut),
            count(Status::Crashed),
            count(Status::Survived)
        );
        let _ = write!(out, "score: suite {}", score(by_suite, ran.len()));
        if with_selftests {
            let _ = write!(
                out,
                ", kernel selftests {}, both {} (suite and selftests each {})",
                score(by_selftests, ran.len()),
                score(by_any, ran.len()),
                by_both
            );
        } else if with_explore {
            let _ = write!(out, ", all checks {}", score(by_any, ran.len()));
        }
        if with_explore {
            let _ = write!(out, ", explore {}", score(by_explore, ran.len()));
        }
        out.push('\n');
        fn check_time(check: &Option<Check>) -> Duration {
            check.as_ref().map_or(Duration::ZERO, |c| c.elapsed)
        }
        let total = |pick: &dyn Fn(&MutantResult) -> Duration| -> f64 {
            self.mutants.iter().map(pick).map(|d| d.as_secs_f64()).sum()
        };
        let _ = writeln!(
            out,
            "time: {:.0} s in all; per mutant run, median {:.1} s for build and suite \
             (build {:.0} s, suite {:.0} s, selftests {:.0} s, explore {:.0} s in all)",
            self.elapsed.as_secs_f64(),
            median(ran.iter().map(|m| m.cost()).collect()).as_secs_f64(),
            total(&|m| m.build),
            total(&|m| check_time(&m.suite)),
            total(&|m| check_time(&m.selftests)),
            total(&|m| check_time(&m.explore)),
        );
        if !self.left_out.is_empty() {
            let _ = writeln!(out, "left out (they fail on the unmutated kernel):");
            for line in &self.left_out {
                let _ = writeln!(out, "  {line}");
            }
        }
        let _ = writeln!(
            out,
            "results, diffs of survivors, logs of crashes: {}",
            self.output.display()
        );
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises") + "\n"
    }
}

fn truncate(text: &str, width: usize) -> String {
    match text.char_indices().nth(width) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::checks::Detection;

    fn mutant(
        id: &str,
        status: Status,
        suite: Option<&str>,
        selftests: Option<&str>,
    ) -> MutantResult {
        let check = |by: Option<&str>| Check {
            detection: by.map(|by| Detection {
                by: by.to_string(),
                class: Class::Killed,
                detail: String::new(),
                logs: None,
            }),
            ran: 3,
            elapsed: Duration::from_secs(10),
            runs: Vec::new(),
        };
        let ran = !matches!(status, Status::NotCompiled | Status::Equivalent);
        MutantResult {
            kernel: "k+m".into(),
            candidate: Candidate {
                id: id.into(),
                operator: Some(crate::mutate::operators::Operator::Relational),
                file: "kernel/livepatch/core.c".into(),
                line: 1,
                function: "f".into(),
                before: "a == b".into(),
                after: "a != b".into(),
                diff: String::new(),
                overlay: Default::default(),
                objects: Vec::new(),
            },
            status,
            compile_error: None,
            build: Duration::from_secs(20),
            suite: ran.then(|| check(suite)),
            selftests: ran.then(|| check(selftests)),
            explore: None,
            kept: None,
        }
    }

    #[test]
    fn scores_count_the_mutants_that_ran_only() {
        let report = Report {
            kernel: "k".into(),
            seed: Some(1),
            candidates: 10,
            scenarios: Vec::new(),
            selftests: Vec::new(),
            left_out: Vec::new(),
            mutants: vec![
                mutant("a", Status::Killed, Some("s1"), Some("test-state.sh")),
                mutant("b", Status::Killed, Some("s2"), None),
                mutant("c", Status::Killed, None, Some("test-livepatch.sh")),
                mutant("d", Status::Survived, None, None),
                mutant("e", Status::NotCompiled, None, None),
                mutant("f", Status::Equivalent, None, None),
            ],
            elapsed: Duration::from_secs(100),
            output: PathBuf::from("out"),
        };
        let table = report.table();
        assert!(
            table.contains("10 candidates, 6 tried: 5 compiled, 1 not compiled, 1 equivalent"),
            "{table}"
        );
        assert!(
            table.contains("of 4 run: 3 killed, 0 timed out, 0 crashed, 1 survived"),
            "{table}"
        );
        assert!(
            table.contains("score: suite 2/4 (50.0%), kernel selftests 2/4 (50.0%), both 3/4 (75.0%) (suite and selftests each 1)"),
            "{table}"
        );
        assert!(
            table.contains("median 30.0 s for build and suite"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["mutants"][0]["status"], "killed");
        assert_eq!(json["mutants"][0]["suite"]["detection"]["by"], "s1");
        assert_eq!(json["mutants"][4]["status"], "not-compiled");
    }

    #[test]
    fn the_suite_decides_the_status_first() {
        let killed = Some(Check {
            detection: Some(Detection {
                by: "s".into(),
                class: Class::Crashed,
                detail: String::new(),
                logs: None,
            }),
            ..Check::default()
        });
        assert_eq!(status_of(&[&killed, &None]), Status::Crashed);
        assert_eq!(
            status_of(&[&Some(Check::default()), &None]),
            Status::Survived
        );
    }
}
