use clap::Subcommand;
use klp_harness::cache::{gc, Cache};
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use std::time::Duration;

/// The cache (KLP_HARNESS_CACHE).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Remove what builds that died left behind, and entries (kernels,
    /// builds, fixtures, images, saved guest states) not used for DAYS;
    /// print what went and the size that stays. Entries being built are
    /// left alone.
    Gc {
        #[arg(long, default_value_t = 30)]
        unused_days: u64,
    },
}

pub fn exec(_: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    match args.command {
        Command::Gc { unused_days } => {
            let cache = Cache::from_env()?;
            let keep = Duration::from_secs(unused_days * 86_400);
            print!("{}", gc::collect(&cache, keep)?.summary());
        }
    }
    Ok(ExitStatus::Ok)
}
