use klp_harness::cache::Cache;
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::{explore, kernel, model, vm};
use std::time::Duration;

/// Run random load / replace / revert sequences over a generated pool
/// of fixtures and compare every step with the reference model; shrink
/// the first divergence and write it as a scenario file. Exits 1 when
/// one is found.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = kernel::DEFAULT)]
    kernel: String,
    /// Seed of the pool and of every sequence (the run is reproducible).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sequences to run.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Operations per sequence.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Stop starting sequences after this many seconds.
    #[arg(long)]
    time: Option<u64>,
    /// Fixtures in the generated pool.
    #[arg(long, default_value_t = 6)]
    pool: usize,
    /// Put a known-wrong rule into the model, to check that exploration
    /// finds and shrinks the divergence it causes: noncumulative-unchecked,
    /// disable-keeps-version, or forget:<behaviour id> (the model takes
    /// the kernel to be on the other side of that row of `klp-harness
    /// kernel behaviours`).
    #[arg(long)]
    mutate: Option<model::Mutation>,
    /// Guest CPUs.
    #[arg(long, default_value_t = vm::DEFAULT_CPUS,
          value_parser = clap::value_parser!(u32).range(1..=vm::MAX_CPUS as i64))]
    cpus: u32,
    /// Guests exploring at once, each taking the next sequence (default:
    /// one per CPU, plus one). The sequences, and what is reported, do
    /// not depend on it.
    #[arg(long, short = 'j', default_value_t = explore::default_jobs())]
    jobs: usize,
}

pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    let spec = kernel::find(project, &args.kernel)?;
    let options = explore::Options {
        jobs: args.jobs,
        seed: args.seed,
        runs: args.runs,
        steps: args.steps,
        time: args.time.map(Duration::from_secs),
        pool: args.pool,
        mutation: args.mutate,
        cpus: args.cpus,
    };
    let report = explore::explore(project, &Cache::from_env()?, &spec, &options)?;
    print!("{}", explore::summary(&report));
    Ok(match report.divergences.is_empty() {
        true => ExitStatus::Ok,
        false => ExitStatus::Failed,
    })
}
