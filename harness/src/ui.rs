//! Rendering events on the terminal: progress bars where stderr is a
//! terminal, plain lines elsewhere (CI logs).

use crate::event::{self, Event};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Render every event of this process on stderr.
pub fn subscribe() {
    let terminal = Terminal::default();
    event::subscribe(move |event| terminal.render(event));
}

#[derive(Default)]
struct Terminal {
    /// One bar per kernel being built, and one per exploration.
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Terminal {
    fn render(&self, event: &Event) {
        if let Some(text) = message(event) {
            return self.line(&text);
        }
        match event {
            Event::KernelBuildStarted { .. }
            | Event::KernelBuildOutput { .. }
            | Event::KernelBuildFinished { .. } => self.kernel_build(event),
            Event::ExploreStarted { .. }
            | Event::ExploreProgress { .. }
            | Event::ExploreFinished { .. } => self.explore(event),
            Event::MutateStarted { .. }
            | Event::MutantPhase { .. }
            | Event::MutantFinished { .. }
            | Event::MutateFinished { .. } => self.mutate(event),
            Event::ShellReady {
                scenario,
                kernel,
                steps_run,
                steps,
                failure,
                logs,
            } => {
                if let Some(failure) = failure {
                    self.line(&format!(
                        "{failure}\nThe guest stays up as the failing step left it."
                    ));
                }
                self.line(&format!(
                    "{scenario} on {kernel}, {steps_run} of {steps} steps run; serial console \
                     follows (Ctrl-] leaves; logs in {})",
                    logs.display()
                ));
            }
            Event::GuestStopped => eprintln!("\nklp-harness: guest stopped"),
            Event::RunFinished {
                scenario,
                kernel,
                outcome,
                failure,
            } => match failure {
                Some(why) => self.line_raw(&format!("FAIL {scenario} on {kernel}:\n{why}\n")),
                None => self.line(&format!("{scenario} on {kernel}: {outcome}")),
            },
            Event::ExploreDiverged { sequence, failure } => {
                self.line_raw(&format!("{sequence} diverged; shrinking it:\n{failure}"))
            }
            _ => {}
        }
    }

    /// A spinner per kernel being built, showing its last output line.
    fn kernel_build(&self, event: &Event) {
        match event {
            Event::KernelBuildStarted { kernel } => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} building kernel {prefix} [{elapsed}] {wide_msg}",
                    )
                    .expect("valid template"),
                );
                bar.set_prefix(kernel.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                if bar.is_hidden() {
                    self.line(&format!("building kernel {kernel}"));
                }
                self.bars.lock().unwrap().insert(build_key(kernel), bar);
            }
            Event::KernelBuildOutput { kernel, line } => {
                if let Some(bar) = self.bars.lock().unwrap().get(&build_key(kernel)) {
                    bar.set_message(line.trim().to_string());
                }
            }
            Event::KernelBuildFinished { kernel } => {
                if let Some(bar) = self.bars.lock().unwrap().remove(&build_key(kernel)) {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }

    /// A bar per exploration; a line every ten sequences where it is hidden.
    fn explore(&self, event: &Event) {
        match event {
            Event::ExploreStarted { kernel, runs } => {
                let bar = counting_bar(*runs, "sequences on");
                bar.set_prefix(kernel.clone());
                self.bars.lock().unwrap().insert(explore_key(kernel), bar);
            }
            Event::ExploreProgress {
                kernel,
                done,
                runs,
                steps,
                boots,
                elapsed,
            } => {
                let status = format!("{steps} steps, {boots} boots, 0 divergences");
                let bars = self.bars.lock().unwrap();
                let Some(bar) = bars.get(&explore_key(kernel)) else {
                    return;
                };
                // Without a terminal (CI logs) the bar is hidden: a line every 10.
                if bar.is_hidden() && done % 10 == 0 {
                    eprintln!(
                        "explore {kernel}: {done}/{runs} sequences, {status}, {:.0} s",
                        elapsed.as_secs_f64()
                    );
                }
                bar.set_message(status);
                bar.set_position(*done as u64);
            }
            Event::ExploreFinished { kernel } => {
                if let Some(bar) = self.bars.lock().unwrap().remove(&explore_key(kernel)) {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }

    /// A bar per mutation run, each mutant's result printed above it.
    fn mutate(&self, event: &Event) {
        match event {
            Event::MutateStarted { kernel, planned } => {
                let bar = counting_bar(*planned, "mutants of");
                bar.set_prefix(kernel.clone());
                self.bars.lock().unwrap().insert(mutate_key(kernel), bar);
            }
            Event::MutantPhase {
                kernel,
                mutant,
                phase,
            } => {
                if let Some(bar) = self.bars.lock().unwrap().get(&mutate_key(kernel)) {
                    bar.set_message(format!("{mutant} {phase}"));
                }
            }
            Event::MutantFinished {
                kernel,
                done,
                planned,
                summary,
            } => {
                let bars = self.bars.lock().unwrap();
                match bars.get(&mutate_key(kernel)) {
                    Some(bar) if !bar.is_hidden() => {
                        bar.suspend(|| eprintln!("{summary}"));
                        bar.set_position(*done as u64);
                    }
                    _ => eprintln!("mutate {kernel} [{done}/{planned}] {summary}"),
                }
            }
            Event::MutateFinished { kernel } => {
                if let Some(bar) = self.bars.lock().unwrap().remove(&mutate_key(kernel)) {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }

    /// A `klp-harness:` line, printed above any progress bar.
    fn line(&self, text: &str) {
        self.line_raw(&format!("klp-harness: {text}"));
    }

    fn line_raw(&self, text: &str) {
        let bars = self.bars.lock().unwrap();
        match bars.values().next() {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

/// The text of an event that is one `klp-harness:` line; None for the
/// others.
fn message(event: &Event) -> Option<String> {
    Some(match event {
        Event::InstallingPackages { packages } => {
            format!("installing host packages: {}", packages.join(" "))
        }
        Event::UsingPrivateQemu { why, package } => {
            format!("{why}\nusing a private copy of Debian's {package} instead")
        }
        Event::BootingEveryGuest { why } => format!("{why}\nevery guest boots instead"),
        Event::UpdatingAptLists { dir } => {
            format!("updating the private apt lists in {}", dir.display())
        }
        Event::Downloading { what } => format!("downloading {what}"),
        Event::Unpacking { archive } => format!("unpacking {}", archive.display()),
        Event::Pinned { what, lock } => format!("pinned {what} in {}", lock.display()),
        Event::LockDrifted {
            kernel,
            package,
            pinned,
            used,
        } => format!(
            "{kernel}: {package}={pinned} is no longer offered; using {used} (same upstream \
             version {}); the lock still says {pinned}",
            crate::kernel::upstream_version(pinned)
        ),
        Event::WorkDirReset { dir } => format!(
            "{} was left mid-build or by another compiler; it starts afresh (a full build)",
            dir.display()
        ),
        Event::SavedStateDropped { why } => why.clone(),
        Event::CacheEntryDropped { path, why } => format!(
            "dropped {} from the cache ({why}); it is made anew",
            path.display()
        ),
        _ => return None,
    })
}

/// A bar counting `total` things, named after its prefix (the kernel).
fn counting_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {what} {{prefix}}: {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

fn build_key(kernel: &str) -> String {
    format!("build {kernel}")
}

fn mutate_key(kernel: &str) -> String {
    format!("mutate {kernel}")
}

fn explore_key(kernel: &str) -> String {
    format!("explore {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_events_are_one_line_and_progress_events_none() {
        let drifted = Event::LockDrifted {
            kernel: "debian-6.1".into(),
            package: "linux-kbuild-6.1".into(),
            pinned: "6.1.192-2".into(),
            used: "6.1.192-3".into(),
        };
        assert_eq!(
            message(&drifted).unwrap(),
            "debian-6.1: linux-kbuild-6.1=6.1.192-2 is no longer offered; using 6.1.192-3 \
             (same upstream version 6.1.192); the lock still says 6.1.192-2"
        );
        let build = Event::KernelBuildStarted {
            kernel: "src-7.2".into(),
        };
        assert_eq!(message(&build), None);
    }
}
