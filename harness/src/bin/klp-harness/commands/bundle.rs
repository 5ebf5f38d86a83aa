use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::{bundle, suite};
use std::path::PathBuf;

/// Write a self-contained reproducer of a scenario: harness source,
/// kernel definitions, fixtures, the scenario and its last logs.
#[derive(clap::Args)]
pub struct Args {
    /// Scenario file or name.
    scenario: String,
    /// The .tar.gz to write.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    let loaded = suite::scenario(project, &args.scenario)?;
    bundle::write(project, &loaded, &args.output)?;
    println!("{}", args.output.display());
    Ok(ExitStatus::Ok)
}
