use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::{report, suite};
use std::path::PathBuf;

/// Judge kept runs again without booting: each scenario's expectations
/// and the reference model, as they are now, against what the run
/// observed (its observations.json). Exits 1 when one fails.
#[derive(clap::Args)]
pub struct Args {
    /// Output: a table for people, JSON for tools, or Markdown.
    #[arg(long, default_value = "table", value_parser = super::names_of(report::Format::ALL))]
    format: report::Format,
    /// Run directories, e.g. target/klp-harness/runs/SCENARIO/KERNEL.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
}

pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    let report = suite::rejudge(project, &args.runs, args.format)?;
    print!("{}", report.text);
    Ok(match report.failed() {
        true => ExitStatus::Failed,
        false => ExitStatus::Ok,
    })
}
