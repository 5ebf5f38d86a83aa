//! verdicts ──> terminal table.

use crate::scenario::{Outcome, Verdict};

pub fn outcome_word(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Pass => "pass".to_string(),
        Outcome::Fail(_) => "FAIL".to_string(),
        Outcome::NotApplicable(reason) => format!("n/a ({reason})"),
    }
}

/// A plain-text table: scenario, kernel, result, time, accelerator, and the
/// boot: QEMU start to guest ready, next to the kernel's uptime at /init.
pub fn table(verdicts: &[Verdict]) -> String {
    let header = [
        "scenario",
        "kernel",
        "result",
        "time",
        "accel",
        "ready (init)",
    ];
    let rows: Vec<[String; 6]> = verdicts
        .iter()
        .map(|v| {
            [
                v.scenario.clone(),
                v.kernel.clone(),
                outcome_word(&v.outcome),
                format!("{:.1}s", v.duration.as_secs_f64()),
                v.accel.unwrap_or("-").to_string(),
                v.boot.map_or("-".to_string(), |boot| {
                    format!(
                        "{:.2}s ({:.2}s)",
                        boot.ready.as_secs_f64(),
                        boot.init_uptime.as_secs_f64()
                    )
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
    let line = |cells: [&str; 6]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in &rows {
        out += &line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    let failed = verdicts
        .iter()
        .filter(|v| matches!(v.outcome, Outcome::Fail(_)))
        .count();
    let passed = verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::Pass)
        .count();
    let skipped = verdicts.len() - failed - passed;
    out += &format!("{passed} passed, {failed} failed, {skipped} not applicable\n");
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
            boot: None,
            artifacts: Default::default(),
        }
    }

    #[test]
    fn table_counts_every_outcome() {
        let table = table(&[verdict(Outcome::Pass), verdict(Outcome::Fail("x".into()))]);
        let fail_row = table.lines().find(|line| line.contains("FAIL")).unwrap();
        assert_eq!(
            fail_row.split_whitespace().collect::<Vec<_>>(),
            ["s", "k", "FAIL", "1.5s", "tcg", "-"]
        );
        assert!(table.ends_with("1 passed, 1 failed, 0 not applicable\n"));
    }
}
