//! scenario ──> a self-contained reproducer (.tar.gz): the harness's own
//! source, the kernel definitions with their config fragments and patches,
//! the fixtures the scenario uses, the scenario, and the logs of its last
//! run, with a README that gives the one command re-running it.

use crate::fixture::{self, ExternalDir, FixtureSource};
use crate::project::Project;
use crate::scenario::{self, Scenario};
use anyhow::{bail, Context, Result};
use flate2::{write::GzEncoder, Compression};
use std::path::{Path, PathBuf};

/// Project files every reproducer needs, relative to the project root.
const ALWAYS: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "harness",
    "ci",
    "kernels",
    "fixtures/templates",
];

pub fn write(project: &Project, scenario: &Scenario, out: &Path) -> Result<()> {
    let top = PathBuf::from(format!("klp-repro-{}", scenario.name.replace('/', "-")));
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    tar.follow_symlinks(true);
    let root = project.root();
    let mut add = |relative: &Path, source: &Path| -> Result<()> {
        let inside = top.join(relative);
        if source.is_dir() {
            for entry in walkdir::WalkDir::new(source).sort_by_file_name() {
                let entry = entry?;
                if entry.file_type().is_file() {
                    let rest = entry.path().strip_prefix(source)?;
                    tar.append_path_with_name(entry.path(), inside.join(rest))
                        .with_context(|| format!("cannot add {}", entry.path().display()))?;
                }
            }
            Ok(())
        } else {
            tar.append_path_with_name(source, &inside)
                .with_context(|| format!("cannot add {}", source.display()))
        }
    };
    for relative in ALWAYS {
        add(Path::new(relative), &root.join(relative))?;
    }
    let support = root.join("fixtures").join(fixture::SUPPORT_MODULE);
    add(
        &Path::new("fixtures").join(fixture::SUPPORT_MODULE),
        &support,
    )?;

    let scenario_at = bundled_scenario_path(project, scenario);
    for fixture in &scenario.fixtures {
        match &fixture.source {
            // A scenario's own fixture specs stay beside it.
            FixtureSource::Livepatch { file, .. }
                if file.parent() == Some(&scenario::local_fixtures_dir(&scenario.file)) =>
            {
                let beside = scenario::local_fixtures_dir(&scenario_at);
                add(&beside.join(file.file_name().unwrap_or_default()), file)?
            }
            FixtureSource::Livepatch { file, .. } => add(&in_project(root, file)?, file)?,
            FixtureSource::Module { dir } => add(&in_project(root, dir)?, dir)?,
            FixtureSource::External {
                dir: ExternalDir::InKernel(_),
                ..
            } => {}
            FixtureSource::External {
                dir: ExternalDir::Path(dir),
                ..
            } => {
                let from_scenario = scenario.file.parent().unwrap_or(Path::new("."));
                let relative = pathdiff(dir, from_scenario)?;
                add(
                    &scenario_at.parent().unwrap_or(Path::new("")).join(relative),
                    dir,
                )?;
            }
        }
    }
    add(&scenario_at, &scenario.file)?;

    let runs = scenario::artifacts_dir(project, &scenario.name, "any")
        .parent()
        .map(Path::to_path_buf);
    let mut logged = Vec::new();
    if let Some(runs) = runs.filter(|dir| dir.is_dir()) {
        for entry in std::fs::read_dir(&runs)? {
            let entry = entry?;
            logged.push(entry.file_name().to_string_lossy().into_owned());
            add(&Path::new("logs").join(entry.file_name()), &entry.path())?;
        }
    }
    logged.sort();
    let readme = readme(scenario, &scenario_at, &logged);
    let mut header = tar::Header::new_gnu();
    header.set_size(readme.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, top.join("README.md"), readme.as_bytes())?;
    tar.into_inner()?.finish()?;
    Ok(())
}

/// Where the scenario goes inside the bundle: its place under scenarios/,
/// or scenarios/<file name> for one kept elsewhere.
fn bundled_scenario_path(project: &Project, scenario: &Scenario) -> PathBuf {
    let absolute = std::path::absolute(&scenario.file).unwrap_or_else(|_| scenario.file.clone());
    match absolute.strip_prefix(project.root()) {
        Ok(relative) if relative.starts_with("scenarios") => relative.to_path_buf(),
        _ => Path::new("scenarios").join(scenario.file.file_name().unwrap_or_default()),
    }
}

fn in_project(root: &Path, path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    match absolute.strip_prefix(root) {
        Ok(relative) => Ok(relative.to_path_buf()),
        Err(_) => bail!(
            "{} is outside the project {}",
            path.display(),
            root.display()
        ),
    }
}

/// `dir` relative to `base`, for a directory below it.
fn pathdiff(dir: &Path, base: &Path) -> Result<PathBuf> {
    let (dir, base) = (std::path::absolute(dir)?, std::path::absolute(base)?);
    match dir.strip_prefix(&base) {
        Ok(relative) => Ok(relative.to_path_buf()),
        Err(_) => bail!(
            "external dir {} is not below the scenario's directory {}; a bundle cannot place it",
            dir.display(),
            base.display()
        ),
    }
}

fn readme(scenario: &Scenario, scenario_at: &Path, logged: &[String]) -> String {
    let logs = if logged.is_empty() {
        "No run had left logs when this bundle was made.".to_string()
    } else {
        format!("logs/ holds the last run's logs on: {}.", logged.join(", "))
    };
    format!(
        "# Reproducer: {name}\n\n{description}\n\nRe-run it on every kernel (needs Rust and the host packages that\n`ci/install-host-deps.sh` installs):\n\n    cargo run --release -- repro {file} --kernels all\n\n{logs}\n",
        name = scenario.name,
        description = scenario.description,
        file = scenario_at.display(),
    )
}
