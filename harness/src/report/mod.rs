//! verdicts ──> terminal table, JSON for tools, or a Markdown kernel ×
//! scenario table for docs/scenarios.md.

pub mod behaviours;
pub mod kernel;

use crate::kernel::behaviour::Basis;
use crate::scenario::{Failure, KnownBug, Outcome, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

impl Format {
    /// Every format, with the name `--format` takes.
    pub const ALL: &[(Format, &str)] = &[
        (Format::Table, "table"),
        (Format::Json, "json"),
        (Format::Markdown, "markdown"),
    ];
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(format, _)| *format)
            .ok_or_else(|| format!("unknown format {text:?}"))
    }
}

pub fn render(format: Format, verdicts: &[Verdict], rules: &BTreeMap<String, String>) -> String {
    match format {
        Format::Table => table(verdicts),
        Format::Json => json(verdicts),
        Format::Markdown => markdown(verdicts, rules),
    }
}

#[derive(Serialize)]
struct JsonVerdict<'a> {
    scenario: &'a str,
    kernel: &'a str,
    /// pass, fail or n/a.
    result: &'static str,
    /// Why it does not apply.
    reason: Option<&'a str>,
    /// Why it failed.
    failure: Option<JsonFailure<'a>>,
    /// The upstream bug it reproduces, on a kernel without the fix.
    known_bug: Option<JsonKnownBug<'a>>,
    seconds: f64,
    accel: Option<&'static str>,
    /// The guest's clock: "counted" (instructions, idle time skipped) or "real".
    clock: Option<&'static str>,
    ready_seconds: Option<f64>,
    init_uptime_seconds: Option<f64>,
    /// Started from a saved guest state instead of booting.
    restored: Option<bool>,
    artifacts: String,
}

#[derive(Serialize)]
struct JsonFailure<'a> {
    /// The step that failed, if one did.
    step: Option<JsonStep<'a>>,
    message: &'a str,
    expected: Option<&'a str>,
    found: Option<&'a str>,
    logs: String,
    rerun: &'a str,
}

#[derive(Serialize)]
struct JsonStep<'a> {
    label: &'a str,
    action: &'a str,
    file: String,
    line: u64,
    column: u64,
}

impl<'a> JsonFailure<'a> {
    fn of(failure: &'a Failure) -> Self {
        JsonFailure {
            step: failure.step.as_ref().map(|step| JsonStep {
                label: &step.label,
                action: &step.action,
                file: step.position.file.display().to_string(),
                line: step.position.line,
                column: step.position.column,
            }),
            message: &failure.message,
            expected: failure.expected.as_deref(),
            found: failure.found.as_deref(),
            logs: failure.logs.display().to_string(),
            rerun: &failure.rerun,
        }
    }
}

#[derive(Serialize)]
struct JsonKnownBug<'a> {
    /// The row of the kernel behaviour table.
    fix: &'static str,
    commits: &'static [&'static str],
    title: Option<&'static str>,
    /// The first release with the fix, or "no release yet".
    fixed_in: &'static str,
    /// "source", "version" or "architecture": how the fix was decided.
    decided_from: &'static str,
    /// The file of the source tree that decided it.
    source_file: Option<&'static str>,
    /// Where and how the bug showed.
    failure: JsonFailure<'a>,
}

impl<'a> JsonKnownBug<'a> {
    fn of(bug: &'a KnownBug) -> Self {
        let (decided_from, source_file) = match &bug.basis {
            Basis::Source(file) => ("source", Some(*file)),
            Basis::Version => ("version", None),
            Basis::Architecture(_) => ("architecture", None),
        };
        JsonKnownBug {
            fix: bug.fix.id,
            commits: bug.fix.commits,
            title: bug.fix.title,
            fixed_in: bug.fix.fixed_in(),
            decided_from,
            source_file,
            failure: JsonFailure::of(&bug.failure),
        }
    }
}

fn json_row(v: &Verdict) -> JsonVerdict<'_> {
    let (reason, failure, known_bug) = match &v.outcome {
        Outcome::Pass => (None, None, None),
        Outcome::Fail(failure) => (None, Some(JsonFailure::of(failure)), None),
        Outcome::NotApplicable(why) => (Some(why.as_str()), None, None),
        Outcome::KnownBug(bug) => (None, None, Some(JsonKnownBug::of(bug))),
    };
    let result = match &v.outcome {
        Outcome::Pass => "pass",
        Outcome::Fail(_) => "fail",
        Outcome::NotApplicable(_) => "n/a",
        Outcome::KnownBug(_) => "known-bug",
    };
    JsonVerdict {
        scenario: &v.scenario,
        kernel: &v.kernel,
        result,
        reason,
        failure,
        known_bug,
        seconds: v.duration.as_secs_f64(),
        accel: v.accel,
        clock: v.clock,
        ready_seconds: v.boot.map(|b| b.ready.as_secs_f64()),
        init_uptime_seconds: v.boot.map(|b| b.init_uptime.as_secs_f64()),
        restored: v.boot.map(|b| b.restored),
        artifacts: v.artifacts.display().to_string(),
    }
}

fn json(verdicts: &[Verdict]) -> String {
    let rows: Vec<JsonVerdict> = verdicts.iter().map(json_row).collect();
    serde_json::to_string_pretty(&rows).expect("verdicts serialise") + "\n"
}

/// One verdict as a line of JSON (the same fields as `--format json`).
pub fn json_line(verdict: &Verdict) -> String {
    serde_json::to_string(&json_row(verdict)).expect("a verdict serialises") + "\n"
}

/// Keep the verdict of a finished run in its run directory
/// (`verdict.json`), so that the runs that ended before a process was
/// killed still say how they ended.
pub fn keep_verdict(verdict: &Verdict) {
    if verdict.artifacts.is_dir() {
        let _ = std::fs::write(verdict.artifacts.join("verdict.json"), json_line(verdict));
    }
}

/// `report.jsonl`: one line per finished run, written as each ends, so
/// that a run killed part way keeps the report so far.
pub struct Journal {
    file: std::sync::Mutex<std::fs::File>,
    pub path: std::path::PathBuf,
}

impl Journal {
    pub fn create(path: std::path::PathBuf) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            file: std::sync::Mutex::new(file),
            path,
        })
    }

    /// Append the verdict as one line, in one write.
    pub fn append(&self, verdict: &Verdict) {
        use std::io::Write;
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.write_all(json_line(verdict).as_bytes());
    }
}

/// One row per scenario (with the rules it checks), one column per kernel.
fn markdown(verdicts: &[Verdict], rules: &BTreeMap<String, String>) -> String {
    let mut kernels: Vec<&str> = Vec::new();
    let mut scenarios: Vec<&str> = Vec::new();
    for v in verdicts {
        if !kernels.contains(&v.kernel.as_str()) {
            kernels.push(&v.kernel);
        }
        if !scenarios.contains(&v.scenario.as_str()) {
            scenarios.push(&v.scenario);
        }
    }
    let mut out = format!("| rule | scenario | {} |\n", kernels.join(" | "));
    out += &format!("|---|---|{}\n", "---|".repeat(kernels.len()));
    for scenario in scenarios {
        let cells: Vec<String> = kernels
            .iter()
            .map(|kernel| {
                verdicts
                    .iter()
                    .find(|v| v.scenario == scenario && v.kernel == *kernel)
                    .map_or("not run".to_string(), |v| match &v.outcome {
                        Outcome::Pass => "pass".to_string(),
                        Outcome::Fail(_) => "**FAIL**".to_string(),
                        Outcome::NotApplicable(why) => format!("n/a: {}", why.replace('|', "\\|")),
                        Outcome::KnownBug(bug) => format!("known bug {}", bug.fix.label()),
                    })
            })
            .collect();
        let rule = rules.get(scenario).map_or("", String::as_str);
        out += &format!("| {rule} | {scenario} | {} |\n", cells.join(" | "));
    }
    out
}

pub fn outcome_word(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Pass => "pass".to_string(),
        Outcome::Fail(_) => "FAIL".to_string(),
        Outcome::NotApplicable(reason) => format!("n/a ({reason})"),
        Outcome::KnownBug(bug) => format!("known bug {}", bug.fix.label()),
    }
}

/// How many verdicts came to each outcome.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub not_applicable: usize,
    pub known_bugs: usize,
}

impl Counts {
    pub fn of(verdicts: &[Verdict]) -> Self {
        let mut counts = Counts::default();
        for verdict in verdicts {
            match verdict.outcome {
                Outcome::Pass => counts.passed += 1,
                Outcome::Fail(_) => counts.failed += 1,
                Outcome::NotApplicable(_) => counts.not_applicable += 1,
                Outcome::KnownBug(_) => counts.known_bugs += 1,
            }
        }
        counts
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} reproduce known bugs, {} not applicable",
            self.passed, self.failed, self.known_bugs, self.not_applicable
        )
    }
}

/// One scenario on many kernels: which pass and which fail, with the
/// kernel versions, the view that says "broken since X, fixed in Y".
pub fn repro_table(verdicts: &[Verdict]) -> String {
    let rows: Vec<[String; 4]> = verdicts
        .iter()
        .map(|v| {
            let detail = match &v.outcome {
                Outcome::Pass => String::new(),
                Outcome::Fail(failure) => {
                    failure.to_string().lines().next().unwrap_or("").to_string()
                }
                Outcome::NotApplicable(why) => why.clone(),
                Outcome::KnownBug(bug) => bug.to_string(),
            };
            let result = match v.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail(_) => "FAIL",
                Outcome::NotApplicable(_) => "n/a",
                Outcome::KnownBug(_) => "known bug",
            };
            [
                v.kernel.clone(),
                v.kernel_version.clone().unwrap_or_else(|| "?".into()),
                result.to_string(),
                detail,
            ]
        })
        .collect();
    let header = ["kernel", "version", "result", "detail"].map(String::from);
    let mut widths = [0; 3];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out += line.trim_end();
        out.push('\n');
    }
    let names = |want: fn(&Outcome) -> bool| {
        let list: Vec<&str> = verdicts
            .iter()
            .filter(|v| want(&v.outcome))
            .map(|v| v.kernel.as_str())
            .collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    };
    out += &format!(
        "passes on: {}\nfails on: {}\nreproduces a known bug on: {}\n",
        names(|o| *o == Outcome::Pass),
        names(|o| matches!(o, Outcome::Fail(_))),
        names(|o| matches!(o, Outcome::KnownBug(_)))
    );
    out
}

/// A plain-text table: scenario, kernel, result, time, accelerator, guest clock, and the
/// boot: QEMU start to guest ready, next to the kernel's uptime at /init
/// (or "saved" when the guest started from a saved state).
pub fn table(verdicts: &[Verdict]) -> String {
    let header = [
        "scenario",
        "kernel",
        "result",
        "time",
        "accel",
        "clock",
        "ready (init)",
    ];
    let rows: Vec<[String; 7]> = verdicts
        .iter()
        .map(|v| {
            [
                v.scenario.clone(),
                v.kernel.clone(),
                outcome_word(&v.outcome),
                format!("{:.1}s", v.duration.as_secs_f64()),
                v.accel.unwrap_or("-").to_string(),
                v.clock.unwrap_or("-").to_string(),
                v.boot.map_or("-".to_string(), |boot| match boot.restored {
                    true => format!("{:.2}s (saved)", boot.ready.as_secs_f64()),
                    false => format!(
                        "{:.2}s ({:.2}s)",
                        boot.ready.as_secs_f64(),
                        boot.init_uptime.as_secs_f64()
                    ),
                }),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 7]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in &rows {
        out += &line(row.each_ref().map(String::as_str));
    }
    out += &format!("{}\n", Counts::of(verdicts));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn verdict(outcome: Outcome) -> Verdict {
        Verdict {
            scenario: "s".into(),
            kernel: "k".into(),
            outcome,
            duration: Duration::from_millis(1500),
            accel: Some("tcg"),
            clock: Some("counted"),
            boot: None,
            kernel_version: Some("6.12.117".into()),
            guest_time: None,
            artifacts: Default::default(),
        }
    }

    fn known_bug() -> Outcome {
        let Outcome::Fail(failure) = failure("unload: expected success") else {
            unreachable!()
        };
        Outcome::KnownBug(KnownBug {
            fix: crate::kernel::behaviour::find("force-pins-only-the-transition-patch").unwrap(),
            basis: Basis::Source("kernel/livepatch/transition.c"),
            failure,
        })
    }

    fn failure(message: &str) -> Outcome {
        Outcome::Fail(Failure {
            step: None,
            message: message.into(),
            expected: None,
            found: None,
            logs: "logs".into(),
            rerun: "rerun".into(),
        })
    }

    #[test]
    fn markdown_has_a_cell_for_every_kernel() {
        let mut other = verdict(Outcome::NotApplicable(
            "stack_order: kernel 6.1 < 6.14".into(),
        ));
        other.kernel = "k2".into();
        let rules = [("s".to_string(), "R10".to_string())].into_iter().collect();
        assert_eq!(
            markdown(&[verdict(Outcome::Pass), other], &rules),
            "| rule | scenario | k | k2 |\n|---|---|---|---|\n| R10 | s | pass | n/a: stack_order: kernel 6.1 < 6.14 |\n"
        );
    }

    #[test]
    fn repro_table_names_versions_and_first_failure_line() {
        let mut old = verdict(failure("s.yaml:4:5: step 2: expected 1, found 0\nmore"));
        old.kernel = "src-5.10".into();
        old.kernel_version = Some("5.10.262".into());
        let mut buggy = verdict(known_bug());
        buggy.kernel = "k2".into();
        let table = repro_table(&[old, verdict(Outcome::Pass), buggy]);
        assert_eq!(
            table,
            "kernel    version   result     detail\n\
             src-5.10  5.10.262  FAIL       s.yaml:4:5: step 2: expected 1, found 0\n\
             k         6.12.117  pass\n\
             k2        6.12.117  known bug  reproduces known bug 2957308343fa (fixed in 5.18; \
             fix absent, decided from the source (kernel/livepatch/transition.c))\n\
             passes on: k\nfails on: src-5.10\nreproduces a known bug on: k2\n"
        );
    }

    #[test]
    fn json_names_result_and_reason() {
        let na = verdict(Outcome::NotApplicable("too old".into()));
        let parsed: serde_json::Value =
            serde_json::from_str(&json(&[verdict(failure("boom")), na])).unwrap();
        assert_eq!(parsed[0]["result"], "fail");
        assert_eq!(parsed[0]["failure"]["message"], "boom");
        assert_eq!(parsed[0]["failure"]["rerun"], "rerun");
        assert_eq!(parsed[0]["reason"], serde_json::Value::Null);
        assert_eq!(parsed[0]["seconds"], 1.5);
        assert_eq!(parsed[1]["result"], "n/a");
        assert_eq!(parsed[1]["reason"], "too old");
        let parsed: serde_json::Value =
            serde_json::from_str(&json(&[verdict(known_bug())])).unwrap();
        let bug = &parsed[0]["known_bug"];
        assert_eq!(parsed[0]["result"], "known-bug");
        assert_eq!(bug["commits"][0], "2957308343fa");
        assert_eq!(bug["fixed_in"], "5.18");
        assert_eq!(bug["decided_from"], "source");
        assert_eq!(bug["source_file"], "kernel/livepatch/transition.c");
        assert_eq!(bug["failure"]["message"], "unload: expected success");
    }

    #[test]
    fn table_counts_every_outcome() {
        let table = table(&[
            verdict(Outcome::Pass),
            verdict(failure("x")),
            verdict(known_bug()),
        ]);
        let fail_row = table.lines().find(|line| line.contains("FAIL")).unwrap();
        assert_eq!(
            fail_row.split_whitespace().collect::<Vec<_>>(),
            ["s", "k", "FAIL", "1.5s", "tcg", "counted", "-"]
        );
        let bug_row = table
            .lines()
            .find(|line| line.contains("known bug"))
            .unwrap();
        assert!(bug_row.contains("known bug 2957308343fa"), "{bug_row}");
        assert!(
            table.ends_with("1 passed, 1 failed, 1 reproduce known bugs, 0 not applicable\n"),
            "{table}"
        );
    }
}
