use klp_harness::cache::Cache;
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::{report, scenario, suite};

/// Run scenarios on kernels and print a scenario × kernel table.
/// Exits 1 when a scenario fails.
#[derive(clap::Args)]
pub struct Args {
    /// Kernel(s) to run on (default: debian-6.12); `all` for every kernel.
    #[arg(long, value_delimiter = ',')]
    kernel: Vec<String>,
    /// Output: a table for people, JSON for tools, or the Markdown
    /// kernel × scenario table docs/scenarios.md shows.
    #[arg(long, default_value = "table", value_parser = super::names_of(report::Format::ALL))]
    format: report::Format,
    /// How many guests run at once (default: one per CPU).
    #[arg(long, short = 'j', default_value_t = scenario::default_jobs())]
    jobs: usize,
    /// Scenario files or names (default: every scenario).
    scenarios: Vec<String>,
}

pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    let cache = Cache::from_env()?;
    let options = suite::Options {
        kernels: args.kernel,
        scenarios: args.scenarios,
        format: args.format,
        jobs: args.jobs,
    };
    let report = suite::run(project, &cache, &options, |stopped| {
        print!("{}", stopped.text);
        eprintln!("{}", stopped.message());
        std::process::exit(ExitStatus::Interrupted(stopped.signal).code());
    })?;
    print!("{}", report.text);
    Ok(match report.failed() {
        true => ExitStatus::Failed,
        false => ExitStatus::Ok,
    })
}
