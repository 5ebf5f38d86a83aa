use anyhow::Result;
use klp_harness::cache::Cache;
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::{bench, explore, kernel, scenario};

/// Measure the harness's own costs on kernels and print them.
#[derive(clap::Args)]
pub struct Args {
    /// Kernels to measure on, one table each (default: debian-6.12).
    #[arg(long, value_delimiter = ',', default_value = kernel::DEFAULT)]
    kernel: Vec<String>,
    #[arg(long, default_value_t = 5)]
    boots: usize,
    #[arg(long, default_value_t = 100)]
    round_trips: usize,
    /// Transitions of each kind timed (on 1 and on 2 guest CPUs).
    #[arg(long, default_value_t = 10)]
    transitions: usize,
    /// Also run every scenario on the kernel (warm cache) and report
    /// the time spent outside the guests.
    #[arg(long)]
    suite: bool,
    /// Also run every scenario from an empty cache (downloads, kernel
    /// and fixture builds included).
    #[arg(long)]
    cold: bool,
    /// Also time the kernel's own test-state.sh in the guest against
    /// the same flows as a scenario (kernels built from source).
    #[arg(long)]
    peer: bool,
    /// Also run every scenario on every kernel (as `run --kernel all`)
    /// and report the wall time.
    #[arg(long)]
    matrix: bool,
    /// Also explore this many sequences on the first kernel and report
    /// sequences per minute.
    #[arg(long, value_name = "RUNS")]
    explore: Option<usize>,
    /// Also time the edit loop: one line of kernel/livepatch/core.c
    /// changed, rebuilt, first scenario verdict; against a full build
    /// (kernels built from source).
    #[arg(long)]
    edit_loop: bool,
    #[arg(long, short = 'j', default_value_t = scenario::default_jobs())]
    jobs: usize,
}

/// Each measurement is printed as it ends: a bench takes minutes to
/// hours, and the tables so far are worth having if it is stopped.
pub fn exec(project: &Project, args: Args) -> Result<ExitStatus> {
    let cache = Cache::from_env()?;
    let specs = args
        .kernel
        .iter()
        .map(|name| kernel::find(project, name))
        .collect::<Result<Vec<_>>>()?;
    let options = bench::Options {
        boots: args.boots,
        round_trips: args.round_trips,
        transitions: args.transitions,
        suite: args.suite,
        cold: args.cold,
        peer: args.peer,
        edit_loop: args.edit_loop,
        jobs: args.jobs,
    };
    for spec in &specs {
        print!("{}", bench::run(project, &cache, spec, &options)?);
    }
    if let Some(runs) = args.explore {
        let jobs = explore::default_jobs();
        print!(
            "{}",
            bench::explore_rate(project, &cache, &specs[0], runs, jobs)?
        );
    }
    if args.matrix {
        print!("{}", bench::matrix(project, &cache, args.jobs)?);
    }
    Ok(ExitStatus::Ok)
}
