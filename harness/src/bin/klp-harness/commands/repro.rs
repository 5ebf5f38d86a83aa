use klp_harness::cache::Cache;
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::{scenario, suite};

/// Run one scenario on many kernels and show where it passes and
/// fails. Exits 1 when it fails on any kernel.
#[derive(clap::Args)]
pub struct Args {
    /// Scenario file or name.
    scenario: String,
    /// Kernels to run on (default: all).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    kernels: Vec<String>,
    /// How many guests run at once (default: one per CPU).
    #[arg(long, short = 'j', default_value_t = scenario::default_jobs())]
    jobs: usize,
}

pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    let cache = Cache::from_env()?;
    let report = suite::repro(project, &cache, &args.scenario, &args.kernels, args.jobs)?;
    print!("{}", report.text);
    Ok(match report.failed() {
        true => ExitStatus::Failed,
        false => ExitStatus::Ok,
    })
}
