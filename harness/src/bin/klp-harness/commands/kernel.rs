use clap::Subcommand;
use klp_harness::cache::Cache;
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::{kernel, report, suite};

/// Kernels under kernels/.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the kernel definitions.
    List,
    /// Fetch or build a kernel (or `all`) into the cache.
    Build { name: String },
    /// Print a kernel's version, config hash, cache path, livepatch sysfs
    /// attributes and which livepatch behaviours it has.
    Show { name: String },
    /// Print the table of livepatch behaviours that differ between kernel
    /// versions (kernels/BEHAVIOURS.md), as Markdown.
    Behaviours,
}

/// `build` and `show` with `all` print each kernel as it is ready.
pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    match args.command {
        Command::List => {
            for spec in kernel::list(project)? {
                println!("{}", spec.name);
            }
        }
        Command::Build { name } => {
            let cache = Cache::from_env()?;
            for spec in suite::kernels(project, &[name])? {
                let kernel = kernel::prepare(&spec, &cache)?;
                println!("{} {}", kernel.name, kernel.image.display());
            }
        }
        Command::Show { name } => {
            let cache = Cache::from_env()?;
            for spec in suite::kernels(project, &[name])? {
                let kernel = kernel::prepare(&spec, &cache)?;
                print!("{}", report::kernel::show(&kernel)?);
            }
        }
        Command::Behaviours => print!("{}", report::behaviours::markdown(project)?),
    }
    Ok(ExitStatus::Ok)
}
