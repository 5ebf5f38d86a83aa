//! One file per subcommand: its flags (a clap `Args`) and an `exec` that
//! checks them, calls the library and prints what it returns.

mod bench;
mod bundle;
mod cache;
mod check;
mod exit_statuses;
mod explore;
mod fixture;
mod kernel;
mod mutate;
mod rejudge;
mod repro;
mod run;
mod schema;
mod shell;

use anyhow::Result;
use clap::Subcommand;
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;

#[derive(Subcommand)]
pub enum Command {
    Run(run::Args),
    Shell(shell::Args),
    Repro(repro::Args),
    Rejudge(rejudge::Args),
    Bundle(bundle::Args),
    Bench(bench::Args),
    Explore(explore::Args),
    Mutate(mutate::Args),
    Check(check::Args),
    Schema(schema::Args),
    ExitStatuses(exit_statuses::Args),
    Fixture(fixture::Args),
    Kernel(kernel::Args),
    Cache(cache::Args),
}

pub fn exec(project: &Project, command: Command) -> Result<ExitStatus> {
    match command {
        Command::Run(args) => run::exec(project, args),
        Command::Shell(args) => shell::exec(project, args),
        Command::Repro(args) => repro::exec(project, args),
        Command::Rejudge(args) => rejudge::exec(project, args),
        Command::Bundle(args) => bundle::exec(project, args),
        Command::Bench(args) => bench::exec(project, args),
        Command::Explore(args) => explore::exec(project, args),
        Command::Mutate(args) => mutate::exec(project, args),
        Command::Check(args) => check::exec(project, args),
        Command::Schema(args) => schema::exec(project, args),
        Command::ExitStatuses(args) => exit_statuses::exec(project, args),
        Command::Fixture(args) => fixture::exec(project, args),
        Command::Kernel(args) => kernel::exec(project, args),
        Command::Cache(args) => cache::exec(project, args),
    }
}

/// A clap parser that offers the names of a table and parses the value
/// the table's way.
fn names_of<T>(
    table: &'static [(T, &'static str)],
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(table.iter().map(|(_, name)| *name)).map(|name| {
        name.parse::<T>()
            .ok()
            .expect("clap offers only the table's names")
    })
}
