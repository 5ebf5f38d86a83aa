//! Which scenario (or selftest) to try first on a mutant: the ones that
//! killed most mutants so far, then the quick ones. The tally is kept
//! between runs, per kernel definition.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tally {
    runs: u32,
    kills: u32,
    seconds: f64,
}

#[derive(Debug, Default)]
pub struct History {
    file: PathBuf,
    tallies: BTreeMap<String, Tally>,
}

impl History {
    /// The history in `file`, or an empty one.
    pub fn load(file: &Path) -> Self {
        let tallies = std::fs::read(file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            file: file.to_path_buf(),
            tallies,
        }
    }

    pub fn save(&self) -> Result<()> {
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&self.file, serde_json::to_vec_pretty(&self.tallies)?)
            .with_context(|| format!("cannot write {}", self.file.display()))
    }

    pub fn record(&mut self, name: &str, killed: bool, took: Duration) {
        let tally = self.tallies.entry(name.to_string()).or_default();
        tally.runs += 1;
        tally.kills += u32::from(killed);
        tally.seconds += took.as_secs_f64();
    }

    /// `names` reordered: most kills first, then the quickest on average,
    /// then by name.
    pub fn order(&self, names: &mut [String]) {
        let key = |name: &String| {
            let tally = self.tallies.get(name).cloned().unwrap_or_default();
            let mean = tally.seconds / f64::from(tally.runs.max(1));
            (
                std::cmp::Reverse(tally.kills),
                (mean * 1000.0) as u64,
                name.clone(),
            )
        };
        names.sort_by_cached_key(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn killers_first_then_quick_ones_and_kept_between_runs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("history.json");
        let mut history = History::load(&file);
        history.record("slow", false, Duration::from_secs(9));
        history.record("quick", false, Duration::from_secs(1));
        history.record("killer", true, Duration::from_secs(20));
        history.save().unwrap();
        let mut names: Vec<String> = ["new", "slow", "quick", "killer"].map(String::from).into();
        History::load(&file).order(&mut names);
        assert_eq!(names, ["killer", "new", "quick", "slow"]);
    }
}
