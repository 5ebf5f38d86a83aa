//! running guest <── commands / ──> results, kernel log.
//!
//! Commands go to a shell on a virtio serial port through rexpect; each is framed by a
//! numbered marker that carries its exit status. Kernel messages arrive on
//! ttyS0 only; a step ends with a numbered line written to /dev/kmsg, and
//! the harness waits for it on the console, so every message a step caused
//! is attributed to that step.

use crate::vm::Vm;
use anyhow::{anyhow, bail, Context, Result};
use rexpect::reader::Options;
use rexpect::session::StreamSession;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

pub mod livepatch;
pub mod snapshot;
pub mod transitions;

pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Why a command got no answer.
#[derive(Debug, Clone, Copy)]
enum Lost {
    Timeout,
    Stopped,
}

/// Read the control channel until `done` accepts what has arrived (it is
/// asked after each complete line). rexpect's own expect sleeps 100 ms
/// whenever nothing has matched yet, which would be most of a command's
/// cost; this polls its reader every millisecond at first, then less
/// often while a command runs long (a transition), so that two guests and
/// the harness share two host CPUs with fewer wake-ups.
fn poll_lines<T>(
    session: &mut StreamSession<UnixStream>,
    console: &crate::vm::Console,
    deadline: Instant,
    done: impl Fn(&str) -> Option<T>,
) -> std::result::Result<T, Lost> {
    let mut text = String::new();
    let mut idle_polls = 0u32;
    loop {
        while let Some(c) = session.try_read() {
            idle_polls = 0;
            text.push(c);
            if c == '\n' {
                if let Some(found) = done(&text) {
                    return Ok(found);
                }
            }
        }
        // The console closes when QEMU exits.
        if console.is_closed() {
            return Err(Lost::Stopped);
        }
        if Instant::now() >= deadline {
            return Err(Lost::Timeout);
        }
        idle_polls += 1;
        std::thread::sleep(poll_pause(idle_polls));
    }
}

/// 1 ms for the first 20 quiet polls, then up to 4 ms: a command that has
/// been quiet for 20 ms is seldom about to answer.
fn poll_pause(quiet_polls: u32) -> Duration {
    Duration::from_millis(match quiet_polls {
        0..=20 => 1,
        21..=40 => 2,
        _ => 4,
    })
}

/// If `text` ends with the line `<marker><status>@@`, the output before it
/// and the status.
fn parse_marker(text: &str, marker: &str) -> Option<(String, i32)> {
    let body = text.strip_suffix("@@\n")?;
    let at = body.rfind(marker)?;
    let status = body[at + marker.len()..].parse().ok()?;
    Some((body[..at].to_string(), status))
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommandResult {
    pub status: i32,
    pub output: String,
}

fn console_tail(vm: &Vm) -> String {
    let text = vm.console.text();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Timing of the boot, for reports and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct BootTimes {
    /// QEMU start until the guest shell answered.
    pub ready: Duration,
    /// The guest kernel's own uptime when /init ran.
    pub init_uptime: Duration,
    /// Started from a saved state rather than booted.
    pub restored: bool,
}

pub struct Guest {
    pub vm: Vm,
    session: StreamSession<UnixStream>,
    sequence: u64,
    /// Console offset up to which the kernel log has been handed out.
    log_offset: usize,
    pub boot: BootTimes,
    command_timeout: Duration,
}

impl Guest {
    /// Wait for /init to report on the control channel.
    pub fn attach(vm: Vm, boot_timeout: Duration, command_timeout: Duration) -> Result<Self> {
        let mut session = session(&vm, command_timeout)?;
        let deadline = vm.started + boot_timeout;
        let ready = poll_lines(&mut session, &vm.console, deadline, |text| {
            let line = text.strip_suffix('\n')?.rsplit('\n').next()?;
            line.starts_with("KLP-READY ").then(|| line.to_string())
        })
        .map_err(|why| match why {
            Lost::Timeout => anyhow!("guest did not become ready within {boot_timeout:?}"),
            Lost::Stopped => anyhow!(
                "guest stopped before it became ready:\n{}",
                console_tail(&vm)
            ),
        })?;
        let uptime: f64 = ready["KLP-READY ".len()..].parse().unwrap_or(0.0);
        let boot = BootTimes {
            ready: vm.started.elapsed(),
            init_uptime: Duration::from_secs_f64(uptime),
            restored: false,
        };
        let mut guest = Self {
            vm,
            session,
            sequence: 0,
            log_offset: 0,
            boot,
            command_timeout,
        };
        // The boot messages are not any step's.
        guest.kernel_log_since_last()?;
        Ok(guest)
    }

    /// Take over a guest started from a state saved after `attach`: its
    /// shell is waiting for a command. `init_uptime` is the saved boot's.
    pub fn resume(
        vm: Vm,
        init_uptime: Duration,
        boot_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self> {
        let session = session(&vm, command_timeout)?;
        let mut guest = Self {
            vm,
            session,
            sequence: 0,
            log_offset: 0,
            boot: BootTimes {
                ready: Duration::ZERO,
                init_uptime,
                restored: true,
            },
            // Loading the state counts against the boot timeout.
            command_timeout: boot_timeout,
        };
        // If it does not answer, keep QEMU's view of it: still loading the
        // state, or running, and where its vCPUs are.
        if let Err(err) = guest.run_ok("true") {
            return Err(err.context(format!(
                "the guest started from a saved state did not answer; QEMU's view:\n{}",
                guest.vm.monitor_report()
            )));
        }
        guest.command_timeout = command_timeout;
        guest.boot.ready = guest.vm.started.elapsed();
        guest.kernel_log_since_last()?;
        Ok(guest)
    }

    /// Write `bytes` to `path` in the guest (base64 through the shell).
    pub fn push_file(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
            .collect();
        self.run_ok(&format!(
            "base64 -d > '{path}' <<'@@KLP-DATA@@'\n{}\n@@KLP-DATA@@",
            lines.join("\n")
        ))
        .with_context(|| format!("cannot copy {path} into the guest"))?;
        Ok(())
    }

    /// Run a shell command in the guest; stdin is /dev/null, stderr joins stdout.
    pub fn run(&mut self, command: &str) -> Result<CommandResult> {
        self.sequence += 1;
        let marker = format!("@@KLP-{}-", self.sequence);
        let framed = format!("{{\n{command}\n}} </dev/null 2>&1; echo \"{marker}$?@@\"\n");
        self.session
            .send(&framed)
            .context("cannot write to the guest")?;
        self.session.flush()?;
        let deadline = Instant::now() + self.command_timeout;
        let (output, status) = poll_lines(&mut self.session, &self.vm.console, deadline, |text| {
            parse_marker(text, &marker)
        })
        .map_err(|why| self.lost(command, why))?;
        Ok(CommandResult { status, output })
    }

    /// `run` the way it first worked, through rexpect's own expect, which
    /// sleeps 100 ms whenever nothing has matched yet: kept for the
    /// benchmark's before/after comparison only.
    pub fn run_with_rexpect_expect(&mut self, command: &str) -> Result<()> {
        self.sequence += 1;
        let marker = format!("@@KLP-{}-", self.sequence);
        let framed = format!("{{\n{command}\n}} </dev/null 2>&1; echo \"{marker}$?@@\"\n");
        self.session.send(&framed)?;
        self.session.flush()?;
        self.session
            .exp_regex(&format!("{marker}-?[0-9]+@@\n"))
            .map_err(|err| anyhow!("{err}"))?;
        Ok(())
    }

    /// `run` with a timeout of its own (for commands that take long).
    pub fn run_for(&mut self, command: &str, timeout: Duration) -> Result<CommandResult> {
        let usual = std::mem::replace(&mut self.command_timeout, timeout);
        let result = self.run(command);
        self.command_timeout = usual;
        result
    }

    /// Run and require exit status 0.
    pub fn run_ok(&mut self, command: &str) -> Result<String> {
        let result = self.run(command)?;
        if result.status != 0 {
            bail!(
                "guest command `{command}` failed with status {}:\n{}",
                result.status,
                result.output
            );
        }
        Ok(result.output)
    }

    fn lost(&self, command: &str, why: Lost) -> anyhow::Error {
        let what = match why {
            Lost::Timeout => format!("no answer within {:?}", self.command_timeout),
            Lost::Stopped => "the guest stopped".to_string(),
        };
        anyhow!(
            "{what} while running `{command}`; last console lines:\n{}",
            console_tail(&self.vm)
        )
    }

    /// Kernel messages logged since the previous call (or since boot).
    pub fn kernel_log_since_last(&mut self) -> Result<String> {
        Ok(self.kernel_log_since_last_and("true")?.0)
    }

    /// Kernel messages logged since the previous call, and the output of
    /// `also`, run in the same round trip after the log's end marker.
    pub fn kernel_log_since_last_and(&mut self, also: &str) -> Result<(String, String)> {
        let mark = format!("klp-harness: sync {}", self.sequence);
        let output = self.run_ok(&format!("echo '{mark}' > /dev/kmsg; {also}"))?;
        let deadline = Instant::now() + self.command_timeout;
        let end = self
            .vm
            .console
            .wait_for(&mark, self.log_offset, deadline)
            .ok_or_else(|| anyhow!("kernel log marker {mark:?} never reached the console"))?;
        let text = self.vm.console.text();
        let chunk = text[self.log_offset..end].to_string();
        self.log_offset = end;
        Ok((chunk, output))
    }

    /// Power off and wait for QEMU to exit.
    pub fn shutdown(mut self) -> Result<()> {
        self.session.send("reboot -f\n")?;
        self.session.flush()?;
        self.vm.wait_exit(Duration::from_secs(10))
    }
}

/// Single-quote for the guest shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What a scenario's steps need from a guest: commands, the kernel log a
/// step caused, the whole console and the kernel's command line. `Guest`
/// is the real one; unit tests play recorded transcripts through it.
pub trait Link {
    fn run(&mut self, command: &str) -> Result<CommandResult>;
    /// Kernel messages logged since the previous call, and the output of
    /// `also`, run in the same round trip.
    fn kernel_log_since_last_and(&mut self, also: &str) -> Result<(String, String)>;
    /// Everything the console has shown since the guest started.
    fn console(&self) -> String;
    fn command_line(&self) -> String;
}

impl Link for Guest {
    fn run(&mut self, command: &str) -> Result<CommandResult> {
        Guest::run(self, command)
    }

    fn kernel_log_since_last_and(&mut self, also: &str) -> Result<(String, String)> {
        Guest::kernel_log_since_last_and(self, also)
    }

    fn console(&self) -> String {
        self.vm.console.text()
    }

    fn command_line(&self) -> String {
        self.vm.command_line.clone()
    }
}

/// One session for the guest's lifetime: its reader thread owns the socket's input.
fn session(vm: &Vm, command_timeout: Duration) -> Result<StreamSession<UnixStream>> {
    let reader = vm
        .control
        .try_clone()
        .context("cannot clone the control socket")?;
    let writer = vm.control.try_clone()?;
    let options = Options::new().timeout_ms(Some(command_timeout.as_millis() as u64));
    Ok(StreamSession::new(reader, writer, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_survive_the_shell() {
        assert_eq!(shell_quote("echo 'hi'"), r"'echo '\''hi'\'''");
    }

    #[test]
    fn marker_ends_the_output_and_carries_the_status() {
        assert_eq!(
            parse_marker("a\nb\n@@KLP-3-17@@\n", "@@KLP-3-"),
            Some(("a\nb\n".to_string(), 17))
        );
        assert_eq!(
            parse_marker("@@KLP-3--1@@\n", "@@KLP-3-"),
            Some((String::new(), -1))
        );
        // An earlier command's marker, or a line that is not one.
        assert_eq!(parse_marker("@@KLP-2-0@@\n", "@@KLP-3-"), None);
        assert_eq!(parse_marker("text\n", "@@KLP-3-"), None);
    }
}
