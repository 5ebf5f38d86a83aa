//! Finding scenario files under scenarios/, and naming them.

use crate::project::Project;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Scenario name: its path under scenarios/ without `.yaml`, or the file
/// stem for a scenario kept elsewhere.
pub fn scenario_name(project: &Project, file: &Path) -> String {
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    match absolute.strip_prefix(project.scenarios_dir()) {
        Ok(relative) => relative.with_extension("").to_string_lossy().into_owned(),
        Err(_) => file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
    }
}

/// The directory of fixture specs that belong to one scenario file.
pub fn local_fixtures_dir(scenario_file: &Path) -> PathBuf {
    scenario_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(LOCAL_FIXTURES)
}

const LOCAL_FIXTURES: &str = "fixtures";

/// Every scenario file under scenarios/, sorted (fixture specs kept
/// beside scenarios are not scenarios).
pub fn scenario_files(project: &Project) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(project.scenarios_dir()).sort_by_file_name();
    for entry in walk
        .into_iter()
        .filter_entry(|entry| !(entry.file_type().is_dir() && entry.file_name() == LOCAL_FIXTURES))
    {
        let entry = entry?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "yaml") {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}
