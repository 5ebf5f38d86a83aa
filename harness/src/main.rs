use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use klp_harness::cache::Cache;
use klp_harness::exit::ExitStatus;
use klp_harness::project::Project;
use klp_harness::scenario;
use klp_harness::{fixture, kernel, report, suite};

/// QEMU-based integration tests for Linux kernel livepatching.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios on kernels and print a scenario × kernel table.
    /// Exits 1 when a scenario fails.
    Run {
        /// Kernel(s) to run on (default: debian-6.12); `all` for every kernel.
        #[arg(long, value_delimiter = ',')]
        kernel: Vec<String>,
        /// Output: a table for people, JSON for tools, or the Markdown
        /// kernel × scenario table docs/scenarios.md shows.
        #[arg(long, default_value = "table", value_parser = names_of(report::Format::ALL))]
        format: report::Format,
        /// How many guests run at once (default: one per CPU).
        #[arg(long, short = 'j', default_value_t = scenario::default_jobs())]
        jobs: usize,
        /// Scenario files or names (default: every scenario).
        scenarios: Vec<String>,
    },
    /// Boot a scenario's guest, run its steps (up to a step), then hand
    /// over the serial console.
    Shell {
        /// Scenario file or name.
        scenario: String,
        /// Kernel to boot (default: debian-6.12).
        #[arg(long, default_value = kernel::DEFAULT)]
        kernel: String,
        /// Last step to run, numbered as in steps.log (e.g. 3, or 2[1].1
        /// inside a repeat block); 0 runs none. Default: every step.
        #[arg(long)]
        until_step: Option<String>,
    },
    /// Run one scenario on many kernels and show where it passes and
    /// fails. Exits 1 when it fails on any kernel.
    Repro {
        /// Scenario file or name.
        scenario: String,
        /// Kernels to run on (default: all).
        #[arg(long, value_delimiter = ',', default_value = "all")]
        kernels: Vec<String>,
        /// How many guests run at once (default: one per CPU).
        #[arg(long, short = 'j', default_value_t = scenario::default_jobs())]
        jobs: usize,
    },
    /// Write a self-contained reproducer of a scenario: harness source,
    /// kernel definitions, fixtures, the scenario and its last logs.
    Bundle {
        /// Scenario file or name.
        scenario: String,
        /// The .tar.gz to write.
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    /// Measure the harness's own costs on kernels and print them.
    Bench {
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
    },
    /// Run random load / replace / revert sequences over a generated pool
    /// of fixtures and compare every step with the reference model; shrink
    /// the first divergence and write it as a scenario file. Exits 1 when
    /// one is found.
    Explore {
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
        mutate: Option<klp_harness::model::Mutation>,
        /// Guest CPUs.
        #[arg(long, default_value_t = klp_harness::vm::DEFAULT_CPUS,
              value_parser = clap::value_parser!(u32).range(1..=klp_harness::vm::MAX_CPUS as i64))]
        cpus: u32,
        /// Guests exploring at once, each taking the next sequence (default:
        /// one per CPU, plus one). The sequences, and what is reported, do
        /// not depend on it.
        #[arg(long, short = 'j', default_value_t = klp_harness::explore::default_jobs())]
        jobs: usize,
    },
    /// Put small bugs into the livepatch core of a kernel built from
    /// source, build each mutant incrementally, run the suite on it (and
    /// the kernel's selftests, and explore), and score what was caught.
    Mutate {
        #[arg(long)]
        kernel: String,
        /// Files to mutate, relative to the kernel tree (default:
        /// kernel/livepatch/{core,transition,state,shadow,patch}.c).
        #[arg(long, value_delimiter = ',')]
        files: Vec<std::path::PathBuf>,
        /// Stop once this many mutants compiled to different code and ran.
        #[arg(long)]
        sample: Option<usize>,
        /// Order in which mutants are drawn.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Hand-written mutants: a folder of .patch files or an mbox, one
        /// mutant per patch, instead of generated ones.
        #[arg(long)]
        patches: Option<std::path::PathBuf>,
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
    },
    /// Check scenario files without booting anything.
    Check { scenarios: Vec<String> },
    /// Print the JSON Schema of scenario files.
    Schema,
    /// Print the table of exit statuses (docs/exit-statuses.md), as
    /// Markdown.
    ExitStatuses,
    /// Fixtures under fixtures/.
    Fixture {
        #[command(subcommand)]
        command: FixtureCommand,
    },
    /// Kernels under kernels/.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// The cache (KLP_HARNESS_CACHE).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Remove what builds that died left behind, and entries (kernels,
    /// builds, fixtures, images, saved guest states) not used for DAYS;
    /// print what went and the size that stays. Entries being built are
    /// left alone.
    Gc {
        #[arg(long, default_value_t = 30)]
        unused_days: u64,
    },
}

#[derive(Subcommand)]
enum FixtureCommand {
    /// List the fixtures scenarios can use.
    List,
    /// Write every fixture's sources (generated C included) under DIR/NAME/.
    Sources { out: std::path::PathBuf },
}

#[derive(Subcommand)]
enum KernelCommand {
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

fn main() {
    klp_harness::ui::subscribe();
    if let Err(err) = real_main() {
        eprintln!("error: {err:#}");
        std::process::exit(ExitStatus::HarnessError.code());
    }
}

fn real_main() -> Result<()> {
    let command = Cli::command().after_help(format!(
        "{}\n{}",
        klp_harness::settings::help(),
        klp_harness::exit::help()
    ));
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|err| err.exit());
    klp_harness::settings::load()?;
    let project = Project::locate()?;
    match cli.command {
        Command::Run {
            kernel,
            format,
            jobs,
            scenarios,
        } => {
            let cache = Cache::from_env()?;
            let options = suite::Options {
                kernels: kernel,
                scenarios,
                format,
                jobs,
            };
            let report = suite::run(&project, &cache, &options, |stopped| {
                print!("{}", stopped.text);
                eprintln!("{}", stopped.message());
                std::process::exit(ExitStatus::Interrupted(stopped.signal).code());
            })?;
            print!("{}", report.text);
            if report.failed() {
                std::process::exit(ExitStatus::Failed.code());
            }
            Ok(())
        }
        Command::Check { scenarios } => {
            for scenario in suite::scenarios(&project, &scenarios)? {
                let scenario = scenario?;
                println!("{}: ok ({} steps)", scenario.name, scenario.steps.len());
            }
            Ok(())
        }
        Command::Shell {
            scenario,
            kernel,
            until_step,
        } => {
            let loaded = suite::scenario(&project, &scenario)?;
            let spec = kernel::find(&project, &kernel)?;
            scenario::shell(
                &project,
                &Cache::from_env()?,
                &loaded,
                &spec,
                until_step.as_deref(),
            )
        }
        Command::Repro {
            scenario,
            kernels,
            jobs,
        } => {
            let cache = Cache::from_env()?;
            let report = suite::repro(&project, &cache, &scenario, &kernels, jobs)?;
            print!("{}", report.text);
            if report.failed() {
                std::process::exit(ExitStatus::Failed.code());
            }
            Ok(())
        }
        Command::Bundle { scenario, output } => {
            let loaded = suite::scenario(&project, &scenario)?;
            klp_harness::bundle::write(&project, &loaded, &output)?;
            println!("{}", output.display());
            Ok(())
        }
        Command::Bench {
            kernel,
            boots,
            round_trips,
            transitions,
            suite,
            cold,
            peer,
            matrix,
            explore,
            edit_loop,
            jobs,
        } => {
            let cache = Cache::from_env()?;
            let specs = kernel
                .iter()
                .map(|name| kernel::find(&project, name))
                .collect::<Result<Vec<_>>>()?;
            let options = klp_harness::bench::Options {
                boots,
                round_trips,
                transitions,
                suite,
                cold,
                peer,
                edit_loop,
                jobs,
            };
            for spec in &specs {
                print!(
                    "{}",
                    klp_harness::bench::run(&project, &cache, spec, &options)?
                );
            }
            if let Some(runs) = explore {
                print!(
                    "{}",
                    klp_harness::bench::explore_rate(
                        &project,
                        &cache,
                        &specs[0],
                        runs,
                        klp_harness::explore::default_jobs()
                    )?
                );
            }
            if matrix {
                print!("{}", klp_harness::bench::matrix(&project, &cache, jobs)?);
            }
            Ok(())
        }
        Command::Explore {
            kernel,
            seed,
            runs,
            steps,
            time,
            pool,
            mutate,
            cpus,
            jobs,
        } => {
            let spec = kernel::find(&project, &kernel)?;
            let options = klp_harness::explore::Options {
                jobs,
                seed,
                runs,
                steps,
                time: time.map(std::time::Duration::from_secs),
                pool,
                mutation: mutate,
                cpus,
            };
            let report =
                klp_harness::explore::explore(&project, &Cache::from_env()?, &spec, &options)?;
            print!("{}", klp_harness::explore::summary(&report));
            if !report.divergences.is_empty() {
                std::process::exit(ExitStatus::Failed.code());
            }
            Ok(())
        }
        Command::Mutate {
            kernel,
            files,
            sample,
            seed,
            patches,
            explore,
            selftests,
            scenarios,
            jobs,
            json,
        } => {
            let spec = kernel::find(&project, &kernel)?;
            let options = klp_harness::mutate::Options {
                files,
                sample,
                seed,
                patches,
                explore,
                selftests,
                scenarios,
                jobs,
            };
            let report = klp_harness::mutate::run(&project, &Cache::from_env()?, &spec, &options)?;
            match json {
                true => print!("{}", report.json()),
                false => print!("{}", report.table()),
            }
            Ok(())
        }
        Command::Schema => {
            print!("{}", scenario::json_schema());
            Ok(())
        }
        Command::ExitStatuses => {
            print!("{}", klp_harness::exit::markdown());
            Ok(())
        }
        Command::Kernel { command } => kernel_command(&project, command),
        Command::Cache {
            command: CacheCommand::Gc { unused_days },
        } => {
            let cache = Cache::from_env()?;
            let keep = std::time::Duration::from_secs(unused_days * 86_400);
            print!(
                "{}",
                klp_harness::cache::gc::collect(&cache, keep)?.summary()
            );
            Ok(())
        }
        Command::Fixture { command } => fixture_command(&project, command),
    }
}

fn fixture_command(project: &Project, command: FixtureCommand) -> Result<()> {
    match command {
        FixtureCommand::List => {
            for name in fixture::names(project)? {
                println!("{name}");
            }
        }
        FixtureCommand::Sources { out } => fixture::write_sources(project, &out)?,
    }
    Ok(())
}

fn kernel_command(project: &Project, command: KernelCommand) -> Result<()> {
    match command {
        KernelCommand::List => {
            for spec in kernel::list(project)? {
                println!("{}", spec.name);
            }
        }
        KernelCommand::Build { name } => {
            let cache = Cache::from_env()?;
            for spec in suite::kernels(project, &[name])? {
                let kernel = kernel::prepare(&spec, &cache)?;
                println!("{} {}", kernel.name, kernel.image.display());
            }
        }
        KernelCommand::Behaviours => print!("{}", report::behaviours::markdown(project)?),
        KernelCommand::Show { name } => {
            let cache = Cache::from_env()?;
            for spec in suite::kernels(project, &[name])? {
                let kernel = kernel::prepare(&spec, &cache)?;
                print!("{}", report::kernel::show(&kernel)?);
            }
        }
    }
    Ok(())
}
