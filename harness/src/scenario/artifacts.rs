//! What a scenario run leaves behind besides the logs: the fixture sources
//! it built and the command that re-runs it.
//!
//! A run's directory holds console.log (the kernel log: ttyS0 carries
//! nothing else), qemu.log, steps.log (commands, their output and each
//! step's kernel messages), listings/NNN-step-N.txt (sysfs after each step),
//! observations.json and scenario.yaml (what `rejudge` reads),
//! fixtures/<name>/ and rerun.sh.

use super::Scenario;
use crate::fixture::{self, Fixture};
use crate::project::Project;
use anyhow::{Context, Result};
use std::path::Path;

pub fn write_sources(
    project: &Project,
    fixtures: &[Fixture],
    kernel: &crate::kernel::Kernel,
    out: &Path,
) -> Result<()> {
    for fixture in fixtures {
        let dir = out.join(&fixture.name);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in fixture::sources(project, fixture, Some(kernel))? {
            let file = dir.join(name);
            std::fs::write(&file, bytes)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
    }
    Ok(())
}

/// The command that runs just this scenario on just this kernel, from the
/// project's root.
pub fn rerun_command(project: &Project, scenario: &Scenario, kernel: &str) -> String {
    format!(
        "cargo run --release -- run --kernel {kernel} {}",
        project_relative(project, scenario).display()
    )
}

/// The scenario's file relative to the project's root, where it is inside.
pub fn project_relative(project: &Project, scenario: &Scenario) -> std::path::PathBuf {
    let file = std::path::absolute(&scenario.file).unwrap_or_else(|_| scenario.file.clone());
    file.strip_prefix(project.root())
        .unwrap_or(&file)
        .to_path_buf()
}

pub fn rerun_script(project: &Project, scenario: &Scenario, kernel: &str) -> String {
    format!(
        "#!/bin/sh\n# Re-runs {} on {kernel}.\ncd {} && {}\n",
        scenario.name,
        crate::guest::shell_quote(&project.root().display().to_string()),
        rerun_command(project, scenario, kernel)
    )
}
