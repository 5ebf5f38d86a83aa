use klp_harness::cache::Cache;
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::{kernel, scenario, suite};

/// Boot a scenario's guest, run its steps (up to a step), then hand
/// over the serial console.
#[derive(clap::Args)]
pub struct Args {
    /// Scenario file or name.
    scenario: String,
    /// Kernel to boot (default: debian-6.12).
    #[arg(long, default_value = kernel::DEFAULT)]
    kernel: String,
    /// Last step to run, numbered as in steps.log (e.g. 3, or 2[1].1
    /// inside a repeat block); 0 runs none. Default: every step.
    #[arg(long)]
    until_step: Option<String>,
}

pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    let loaded = suite::scenario(project, &args.scenario)?;
    let spec = kernel::find(project, &args.kernel)?;
    let cache = Cache::from_env()?;
    scenario::shell(project, &cache, &loaded, &spec, args.until_step.as_deref())?;
    Ok(ExitStatus::Ok)
}
