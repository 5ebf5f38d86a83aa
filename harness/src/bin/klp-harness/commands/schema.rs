use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::scenario;

/// Print the JSON Schema of scenario files.
#[derive(clap::Args)]
pub struct Args {}

pub fn exec(_: &Project, _: Args) -> anyhow::Result<ExitStatus> {
    print!("{}", scenario::json_schema());
    Ok(ExitStatus::Ok)
}
