//! Rows of measurements, the table they print as, and the statistics.

use crate::kernel::KernelSpec;
use anyhow::Result;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

pub(super) struct Row {
    what: String,
    value: Duration,
    floor: Option<(String, Duration)>,
    note: Option<String>,
}

impl Row {
    pub(super) fn new(what: &str, value: Duration) -> Self {
        Self {
            what: what.to_string(),
            value,
            floor: None,
            note: None,
        }
    }

    pub(super) fn floor(mut self, what: &str, value: Duration) -> Self {
        self.floor = Some((what.to_string(), value));
        self
    }

    pub(super) fn note(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }
}

pub(super) fn table(spec: &KernelSpec, load: &str, rows: &[Row]) -> String {
    let mut out = format!(
        "klp-harness bench on {} ({} host CPUs, load average {load} at the start)\n{:<64} {:>10}  {}\n",
        spec.name,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        "measure",
        "value",
        "against"
    );
    for row in rows {
        let against = row.floor.as_ref().map_or(String::new(), |(what, floor)| {
            let difference = (row.value.as_secs_f64() - floor.as_secs_f64()) * 1000.0;
            format!(
                "{what} {} (x{:.2}, {difference:+.1} ms)",
                ms(*floor),
                row.value.as_secs_f64() / floor.as_secs_f64().max(1e-9),
            )
        });
        let against = row.note.clone().unwrap_or(against);
        let _ = writeln!(out, "{:<64} {:>10}  {against}", row.what, ms(row.value));
    }
    out
}

/// The host's one-minute load average: the machine is shared, and the
/// figures mean little without it.
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

pub(super) fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

pub(super) fn time_each(
    times: usize,
    mut once: impl FnMut() -> Result<()>,
) -> Result<Vec<Duration>> {
    (0..times.max(1))
        .map(|_| {
            let started = Instant::now();
            once().map(|()| started.elapsed())
        })
        .collect()
}

pub(super) fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

pub(super) fn p95(values: &mut [Duration]) -> Duration {
    values.sort();
    values[((values.len() * 95).div_ceil(100)).saturating_sub(1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(median(&mut v), Duration::from_millis(11));
        assert_eq!(p95(&mut v), Duration::from_millis(19));
    }
}
