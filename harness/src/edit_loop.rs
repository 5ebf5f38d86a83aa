//! The kernel developer's edit loop, measured: one line of
//! kernel/livepatch/core.c changed, the kernel rebuilt from its work
//! directory, and the first scenario's verdict; against a full build of
//! the same kernel from scratch, in a cache of its own.

use crate::cache::Cache;
use crate::kernel::{self, KernelSpec, Overlay};
use crate::project::Project;
use crate::scenario::{self, Outcome};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// The file and line the loop edits.
pub const FILE: &str = "kernel/livepatch/core.c";
const LINE: &str = "pr_notice(\"enabling patch '%s'\\n\", patch->mod->name);";

/// The scenario whose verdict ends the loop.
pub const SCENARIO: &str = "rules/r01-new-id/cumulative-adds-id";

pub struct EditLoop {
    /// Changed file to kernel image (incremental build and publication).
    pub rebuild: Duration,
    /// And on to the scenario's verdict.
    pub verdict: Duration,
    pub outcome: String,
    /// The same kernel built from nothing.
    pub full_build: Duration,
}

pub fn measure(project: &Project, cache: &Cache, spec: &KernelSpec) -> Result<EditLoop> {
    let base = kernel::prepare_work_dir(spec, cache)?;
    let tree = base
        .source
        .clone()
        .with_context(|| format!("{} is prebuilt: it has no sources to edit", spec.name))?;
    let original = std::fs::read_to_string(tree.join(FILE))?;
    if !original.contains(LINE) {
        bail!("{FILE} of {} has no line {LINE}", spec.name);
    }
    // A new text each time, so that no earlier run's build is reused.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let edited = original.replacen(
        LINE,
        &LINE.replace("enabling patch", &format!("enabling patch (edit {stamp})")),
        1,
    );
    let variant = spec.with_overlay("edit", Overlay::from_files([(FILE, edited.into_bytes())]))?;
    let scenario = scenario::load(
        project,
        &project.scenarios_dir().join(format!("{SCENARIO}.yaml")),
    )?;

    let started = Instant::now();
    let built = kernel::prepare(&variant, cache)?;
    let rebuild = started.elapsed();
    let verdict = scenario::execute(project, cache, &scenario, &variant);
    let to_verdict = started.elapsed();
    let outcome = match &verdict.outcome {
        Outcome::Pass => "pass".to_string(),
        Outcome::Fail(failure) => format!("FAIL: {}", failure.message),
        Outcome::NotApplicable(why) => format!("n/a: {why}"),
        Outcome::KnownBug(bug) => format!("known bug: {bug}"),
    };
    crate::guest::snapshot::discard_for(cache, &built.image)?;
    drop(kernel::discard_variant(cache, &built)?);
    if verdict.artifacts.exists() {
        std::fs::remove_dir_all(&verdict.artifacts).ok();
    }

    let full_build = full_build(cache, spec)?;
    Ok(EditLoop {
        rebuild,
        verdict: to_verdict,
        outcome,
        full_build,
    })
}

/// Build the kernel from nothing in a cache of its own beside `cache`
/// (its unpacked sources are shared, read only), then remove that cache.
fn full_build(cache: &Cache, spec: &KernelSpec) -> Result<Duration> {
    let scratch = tempfile::Builder::new()
        .prefix("bench-full-build-")
        .tempdir_in(cache.root())?;
    let own = Cache::at(scratch.path().to_path_buf())?;
    share_entries(cache, &own, "sources")?;
    share_entries(cache, &own, "apt")?;
    let started = Instant::now();
    kernel::prepare(spec, &own)?;
    Ok(started.elapsed())
}

/// Make `kind/*` of `from` visible in `to` (symbolic links).
fn share_entries(from: &Cache, to: &Cache, kind: &str) -> Result<()> {
    let source = from.root().join(kind);
    let target = to.root().join(kind);
    std::fs::create_dir_all(&target)?;
    for entry in std::fs::read_dir(&source).into_iter().flatten() {
        let entry = entry?;
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with('.') {
            std::os::unix::fs::symlink(entry.path(), target.join(&name))?;
        }
    }
    Ok(())
}

/// The loop as `bench` prints it.
pub fn render(spec: &KernelSpec, measured: &EditLoop) -> String {
    let ratio = |value: Duration| value.as_secs_f64() / measured.full_build.as_secs_f64().max(1e-9);
    format!(
        "edit loop on {} (one line of {FILE} changed):\n\
         {:<48} {:>8.1} s  full build from scratch {:.1} s (x{:.2})\n\
         {:<48} {:>8.1} s  ({SCENARIO}: {})\n",
        spec.name,
        "  edit -> image (incremental)",
        measured.rebuild.as_secs_f64(),
        measured.full_build.as_secs_f64(),
        ratio(measured.rebuild),
        "  edit -> first scenario verdict",
        measured.verdict.as_secs_f64(),
        measured.outcome,
    )
}
