use clap::Subcommand;
use klp_harness::exit::ExitStatus;
use klp_harness::fixture;
use klp_harness::project::Project;
use std::path::PathBuf;

/// Fixtures under fixtures/.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the fixtures scenarios can use.
    List,
    /// Write every fixture's sources (generated C included), scenarios' own
    /// fixtures too, under DIR/NAME/.
    Sources { out: PathBuf },
}

pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    match args.command {
        Command::List => {
            for name in fixture::names(project)? {
                println!("{name}");
            }
        }
        Command::Sources { out } => fixture::write_sources(project, &out)?,
    }
    Ok(ExitStatus::Ok)
}
