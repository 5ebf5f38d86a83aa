//! What the library reports while it works. The library never prints: it
//! emits events, and whoever drives it renders them (`ui` for the
//! terminal). Without a subscriber, events are dropped.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Host packages being installed with apt-get (as root).
    InstallingPackages {
        packages: Vec<String>,
    },
    /// No host QEMU (and none installable without harm), or one too old
    /// to restore saved guests: a private copy of Debian's runs instead.
    UsingPrivateQemu {
        why: String,
        /// The QEMU package a private copy is made of.
        package: String,
    },
    /// The QEMU cannot restore saved guests, and no newer copy could be
    /// made.
    BootingEveryGuest {
        why: String,
    },
    /// A private apt configuration refreshing its package lists.
    UpdatingAptLists {
        dir: PathBuf,
    },
    /// Packages or a tarball being downloaded.
    Downloading {
        what: String,
    },
    /// A source archive being unpacked.
    Unpacking {
        archive: PathBuf,
    },
    /// What "latest" resolved to, written to a kernel's lock file.
    Pinned {
        what: String,
        lock: PathBuf,
    },
    /// A lock's pinned version is no longer offered; the same package at
    /// the same upstream version, another Debian revision, is used.
    LockDrifted {
        kernel: String,
        package: String,
        pinned: String,
        used: String,
    },
    /// A kernel build from source started, printed a line, or ended.
    KernelBuildStarted {
        kernel: String,
    },
    KernelBuildOutput {
        kernel: String,
        line: String,
    },
    KernelBuildFinished {
        kernel: String,
    },
    /// A cache entry changed on disk since it was made; it is made anew.
    CacheEntryDropped {
        path: PathBuf,
        why: String,
    },
    /// A kernel's work directory was left mid-build (or by another
    /// compiler) and is made anew: the next build is a full one.
    WorkDirReset {
        dir: PathBuf,
    },
    /// A saved guest state did not start; the guest boots instead.
    SavedStateDropped {
        why: String,
    },
    /// `shell`: the steps ran (or one failed) and the console is handed over.
    ShellReady {
        scenario: String,
        kernel: String,
        steps_run: usize,
        steps: usize,
        failure: Option<String>,
        logs: PathBuf,
    },
    /// An interactive guest stopped.
    GuestStopped,
    /// `run`, `repro`: one scenario's run on one kernel ended.
    RunFinished {
        scenario: String,
        kernel: String,
        /// `pass`, `FAIL`, `n/a (why)`, ... (`report::outcome_word`).
        outcome: String,
        /// The failure in full, where it is to be shown.
        failure: Option<String>,
    },
    /// `explore`: a run began, a sequence ended, or one diverged.
    ExploreStarted {
        kernel: String,
        runs: usize,
    },
    ExploreProgress {
        kernel: String,
        done: usize,
        runs: usize,
        steps: usize,
        boots: usize,
        elapsed: Duration,
    },
    ExploreDiverged {
        sequence: String,
        failure: String,
    },
    ExploreFinished {
        kernel: String,
    },
    /// `mutate`: a run began, a mutant is tried (and is in a phase:
    /// compiling, building, suite, selftests, explore), a mutant's result,
    /// the run ended.
    MutateStarted {
        kernel: String,
        /// Mutants to run (those that compile), or every candidate.
        planned: usize,
    },
    MutantPhase {
        kernel: String,
        mutant: String,
        phase: String,
    },
    MutantFinished {
        kernel: String,
        /// Mutants run so far (compiled, not equivalent), of `planned`.
        done: usize,
        planned: usize,
        /// One line: the mutant, its result, what killed it, the times.
        summary: String,
    },
    MutateFinished {
        kernel: String,
    },
}

type Sink = Box<dyn Fn(&Event) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Route every event of this process to `sink`; only the first call counts.
pub fn subscribe(sink: impl Fn(&Event) + Send + Sync + 'static) {
    let _ = SINK.set(Box::new(sink));
}

pub fn emit(event: Event) {
    if let Some(sink) = SINK.get() {
        sink(&event);
    }
}
