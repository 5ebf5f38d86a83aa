//! The kernel's test-state.sh against the same flows run as a scenario.

use super::table::*;
use super::Context;
use crate::cache::Cache;
use crate::kernel::KernelSpec;
use crate::project::Project;
use crate::scenario::{self};
use anyhow::{bail, Context as _, Result};
use std::time::{Duration, Instant};

pub(super) fn peer_rows(context: &Context) -> Result<Vec<Row>> {
    let (script, harness) = peer(context.project, context.cache, context.spec)?;
    Ok(vec![
        Row::new("peer: test-state.sh in the guest", script),
        Row::new("harness: the same flows as a scenario", harness).floor("test-state.sh", script),
    ])
}

/// The kernel's test-state.sh, then the same flows as a scenario, in one
/// guest: how long each took.
pub(super) fn peer(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
) -> Result<(Duration, Duration)> {
    let kernel = crate::kernel::prepare(spec, cache)?;
    let source = kernel.source.clone().with_context(|| {
        format!(
            "--peer needs the kernel's source tree (test-state.sh and its modules); {} is prebuilt",
            spec.name
        )
    })?;
    let file = project.scenarios_dir().join(PEER_SCENARIO);
    let flows = scenario::load(project, &file)?;
    let selftests = crate::peer::selftests::Selftests::find(&source)?;
    let modules = selftests.build_modules(project, &kernel, cache)?;
    let kit = crate::peer::GuestKit::new(cache)?;
    let request = scenario::testbed_request(
        &flows,
        scenario::artifacts_dir(project, &flows.name, &spec.name),
    );
    let (testbed, _) = crate::testbed::start(project, cache, spec, &request)?;
    let mut guest = testbed.guest;
    crate::peer::selftests::prepare_guest(&mut guest, &kit, &selftests, &modules, &kernel)?;
    let script = crate::peer::selftests::run_script(
        &mut guest,
        "test-state.sh",
        crate::peer::selftests::timeout(),
    )?;
    if script.outcome != crate::peer::selftests::ScriptResult::Pass {
        bail!(
            "test-state.sh did not pass in the guest: {:?}",
            script.outcome
        );
    }
    guest.kernel_log_since_last()?;
    let artifacts = scenario::artifacts_dir(project, "bench-peer", &spec.name);
    let started = Instant::now();
    let mut trace = String::new();
    scenario::run_steps(
        &mut guest,
        &flows,
        &flows.steps,
        scenario::Settings::new(&artifacts, crate::testbed::Timeouts::from_env().transition),
        &mut trace,
    )
    .with_context(|| format!("{} after test-state.sh", flows.name))?;
    let harness = started.elapsed();
    guest.shutdown()?;
    Ok((script.elapsed, harness))
}

/// The scenario with test-state.sh's flows and the kernel's own modules.
pub(super) const PEER_SCENARIO: &str = "selftests/test-state-kernel-modules.yaml";
