use klp_harness::cache::Cache;
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::{kernel, mutate, scenario};
use std::path::PathBuf;

/// Put small bugs into the livepatch core of a kernel built from
/// source, build each mutant incrementally, run the suite on it (and
/// the kernel's selftests, and explore), and score what was caught.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    kernel: String,
    /// Files to mutate, relative to the kernel tree (default:
    /// kernel/livepatch/{core,transition,state,shadow,patch}.c).
    #[arg(long, value_delimiter = ',')]
    files: Vec<PathBuf>,
    /// Stop once this many mutants compiled to different code and ran.
    #[arg(long)]
    sample: Option<usize>,
    /// Order in which mutants are drawn.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Hand-written mutants: a folder of .patch files or an mbox, one
    /// mutant per patch, instead of generated ones.
    #[arg(long)]
    patches: Option<PathBuf>,
    /// Also run this many random sequences (explore) on each mutant.
    #[arg(long)]
    explore: Option<usize>,
    /// Also run the kernel's own livepatch selftests on each mutant.
    #[arg(long)]
    selftests: bool,
    /// Run only these scenarios (names as `run` shows them) instead
    /// of the whole suite.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// How many guests run at once.
    #[arg(long, short = 'j', default_value_t = scenario::default_jobs())]
    jobs: usize,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn exec(project: &Project, args: Args) -> anyhow::Result<ExitStatus> {
    let spec = kernel::find(project, &args.kernel)?;
    let options = mutate::Options {
        files: args.files,
        sample: args.sample,
        seed: args.seed,
        patches: args.patches,
        explore: args.explore,
        selftests: args.selftests,
        scenarios: args.scenarios,
        jobs: args.jobs,
    };
    let report = mutate::run(project, &Cache::from_env()?, &spec, &options)?;
    match args.json {
        true => print!("{}", report.json()),
        false => print!("{}", report.table()),
    }
    Ok(ExitStatus::Ok)
}
