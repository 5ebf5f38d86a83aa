//! `klp-harness`: builds the command line, loads the settings, finds the
//! project and hands the subcommand to its file under commands/, which
//! calls the library.

mod commands;

use clap::{CommandFactory, FromArgMatches, Parser};
use klp_harness::exit::{self, ExitStatus};
use klp_harness::project::Project;
use klp_harness::settings;
use std::process::ExitCode;

/// QEMU-based integration tests for Linux kernel livepatching.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    klp_harness::ui::subscribe();
    let command = Cli::command().after_help(format!("{}\n{}", settings::help(), exit::help()));
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|err| err.exit());
    let status = settings::load()
        .and_then(|_| Project::locate())
        .and_then(|project| commands::exec(&project, cli.command))
        .unwrap_or_else(|err| {
            eprintln!("error: {err:#}");
            ExitStatus::HarnessError
        });
    status.into()
}
