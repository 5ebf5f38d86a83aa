//! `klp-harness bench`: what the harness costs next to the kernel's own
//! work, measured in one run on one kernel, printed as a table.
//!
//! - boot: QEMU start ──> guest ready, against the kernel's uptime at /init;
//! - round trips: a no-op command, a dozen sysfs reads, a whole scenario
//!   step (command, kernel log sync, sysfs listing);
//! - transition detection: how long after the kernel logged "patching
//!   complete" the guest-side wait saw it (guest clock on both sides);
//! - transition times: from "starting ... transition" to "... complete" in
//!   the kernel log, and the command that started one and waited for its
//!   end as the host timed it; on 1 CPU with the counted and the real
//!   clock and on 2 CPUs, and what failed klp's tries;
//! - suite: every scenario on the kernel, warm, and the time spent outside
//!   the guests;
//! - peer: the kernel's test-state.sh in the guest against the same flows
//!   run as a scenario, in the same guest;
//! - matrix: every scenario on every kernel, the wall time;
//! - explore: sequences per minute;
//! - edit loop: one line of the livepatch core changed, rebuilt and run,
//!   against a full build (`edit_loop`).

mod guest;
mod peer;
mod suite;
mod table;
mod transitions;

use crate::cache::Cache;
use crate::kernel::KernelSpec;
use crate::project::Project;
use crate::scenario::{self};
use anyhow::Result;
use guest::{bench_guest, round_trips, startup, MEASURED_STEP};
use peer::peer_rows;
use std::path::Path;
use table::{load_average, table};
use transitions::{transition_sightings, transition_times, TRANSITION_SETTINGS};

use suite::suite;
pub use suite::{explore_rate, matrix};

pub struct Options {
    pub boots: usize,
    pub round_trips: usize,
    pub transitions: usize,
    /// Also run the whole scenario suite (warm) on the kernel.
    pub suite: bool,
    /// Also time the kernel's test-state.sh in the guest against the
    /// same flows as a scenario (kernels built from source).
    pub peer: bool,
    /// And once more from an empty cache (downloads, kernel and fixture
    /// builds included).
    pub cold: bool,
    /// Also time the edit loop (kernels built from source).
    pub edit_loop: bool,
    pub jobs: usize,
}

pub fn run(
    project: &Project,
    cache: &Cache,
    spec: &KernelSpec,
    options: &Options,
) -> Result<String> {
    let step = scenario::parse(project, Path::new("bench.yaml"), MEASURED_STEP)?;
    let context = Context {
        project,
        cache,
        spec,
        options,
    };
    let load = load_average();
    let mut rows = startup(&context)?;
    let mut guest = bench_guest(&context, 1, None, false)?;
    rows.extend(round_trips(&context, &step, &mut guest)?);
    rows.extend(transition_sightings(&context, &mut guest)?);
    guest.shutdown()?;
    for setting in &TRANSITION_SETTINGS {
        rows.extend(transition_times(&context, setting)?);
    }
    if options.peer {
        rows.extend(peer_rows(&context)?);
    }
    let mut out = table(spec, &load, &rows);
    if options.edit_loop {
        let measured = crate::edit_loop::measure(project, cache, spec)?;
        out += &crate::edit_loop::render(spec, &measured);
    }
    if options.suite {
        out += &suite(
            "warm",
            project,
            cache,
            std::slice::from_ref(spec),
            options.jobs,
        )?;
    }
    if options.cold {
        let empty = tempfile::Builder::new()
            .prefix("klp-bench-cache-")
            .tempdir()?;
        let cold_cache = Cache::at(empty.path().to_path_buf())?;
        out += &suite(
            "cold",
            project,
            &cold_cache,
            std::slice::from_ref(spec),
            options.jobs,
        )?;
    }
    Ok(out)
}

/// What every section measures with.
struct Context<'a> {
    project: &'a Project,
    cache: &'a Cache,
    spec: &'a KernelSpec,
    options: &'a Options,
}
