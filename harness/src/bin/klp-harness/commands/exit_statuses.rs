use klp_harness::exit::{self, ExitStatus};
use klp_harness::project::Project;

/// Print the table of exit statuses (docs/exit-statuses.md), as
/// Markdown.
#[derive(clap::Args)]
pub struct Args {}

pub fn exec(_: &Project, _: Args) -> anyhow::Result<ExitStatus> {
    print!("{}", exit::markdown());
    Ok(ExitStatus::Ok)
}
