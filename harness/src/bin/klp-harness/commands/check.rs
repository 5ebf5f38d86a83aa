use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::suite;

/// Check scenario files without booting anything.
#[derive(clap::Args)]
pub struct Args {
    scenarios: Vec<String>,
}

/// One line per scenario as it loads; the first that does not ends the
/// command with its error.
pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    for scenario in suite::scenarios(project, &args.scenarios)? {
        let scenario = scenario?;
        println!("{}: ok ({} steps)", scenario.name, scenario.steps.len());
    }
    Ok(ExitStatus::Ok)
}
