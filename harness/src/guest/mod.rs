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

pub const INIT_SCRIPT: &str = include_str!("init.sh");

#[derive(Debug, Clone)]
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
        let reader = vm
            .control
            .try_clone()
            .context("cannot clone the control socket")?;
        let writer = vm.control.try_clone()?;
        // One session for the guest's lifetime: its reader thread owns the socket's input.
        let options = Options::new().timeout_ms(Some(command_timeout.as_millis() as u64));
        let mut session = StreamSession::new(reader, writer, options);
        let deadline = vm.started + boot_timeout;
        let ready = loop {
            match session.exp_regex(r"KLP-READY [0-9.]+\n") {
                Ok((_, ready)) => break ready,
                Err(rexpect::error::Error::Timeout { .. }) if Instant::now() < deadline => continue,
                Err(rexpect::error::Error::Timeout { .. }) => {
                    bail!("guest did not become ready within {boot_timeout:?}")
                }
                Err(_) => bail!(
                    "guest stopped before it became ready:\n{}",
                    console_tail(&vm)
                ),
            }
        };
        let uptime: f64 = ready.trim_end()["KLP-READY ".len()..]
            .parse()
            .unwrap_or(0.0);
        let boot = BootTimes {
            ready: vm.started.elapsed(),
            init_uptime: Duration::from_secs_f64(uptime),
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

    /// Run a shell command in the guest; stdin is /dev/null, stderr joins stdout.
    pub fn run(&mut self, command: &str) -> Result<CommandResult> {
        self.sequence += 1;
        let marker = format!("@@KLP-{}-", self.sequence);
        let framed = format!("{{\n{command}\n}} </dev/null 2>&1; echo \"{marker}$?@@\"\n");
        self.session
            .send(&framed)
            .context("cannot write to the guest")?;
        self.session.flush()?;
        let (output, matched) = self
            .session
            .exp_regex(&format!("{marker}-?[0-9]+@@\n"))
            .map_err(|err| self.lost(command, &err))?;
        let status = matched[marker.len()..matched.len() - 3]
            .parse()
            .unwrap_or(-1);
        Ok(CommandResult { status, output })
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

    fn lost(&self, command: &str, why: &rexpect::error::Error) -> anyhow::Error {
        let what = match why {
            rexpect::error::Error::Timeout { .. } => {
                format!("no answer within {:?}", self.command_timeout)
            }
            _ => "the guest stopped".to_string(),
        };
        anyhow!(
            "{what} while running `{command}`; last console lines:\n{}",
            console_tail(&self.vm)
        )
    }

    /// Kernel messages logged since the previous call (or since boot).
    pub fn kernel_log_since_last(&mut self) -> Result<String> {
        let mark = format!("klp-harness: sync {}", self.sequence);
        self.run_ok(&format!("echo '{mark}' > /dev/kmsg"))?;
        let deadline = Instant::now() + self.command_timeout;
        let end = self
            .vm
            .console
            .wait_for(&mark, self.log_offset, deadline)
            .ok_or_else(|| anyhow!("kernel log marker {mark:?} never reached the console"))?;
        let text = self.vm.console.text();
        let chunk = text[self.log_offset..end].to_string();
        self.log_offset = end;
        Ok(chunk)
    }

    /// Power off and wait for QEMU to exit.
    pub fn shutdown(mut self) -> Result<()> {
        self.session.send("reboot -f\n")?;
        self.session.flush()?;
        self.vm.wait_exit(Duration::from_secs(10))
    }
}
