//! Saving a running guest's whole state to a file (QEMU migration to
//! `exec:cat`), which `VmConfig::incoming` starts from instead of booting.

use super::Vm;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

impl Vm {
    /// Write the guest's state to `file`, then let it run on.
    pub fn save_state(&mut self, file: &Path) -> Result<()> {
        let path = file.display().to_string();
        if path.contains('\'') {
            bail!("cannot save guest state to {path}: quote in the path");
        }
        let mut monitor = Monitor::connect(&self.monitor)?;
        // Not stopped first: a state saved while running starts running.
        // The guest is idle, so the copy converges at once; QEMU pauses it
        // for the last pages, and `cont` lets it go on.
        monitor.command(&format!("migrate \"exec:cat > '{path}'\""))?;
        let status = monitor.command("info migrate")?;
        monitor.command("cont")?;
        if !status.contains("Migration status: completed") {
            bail!("QEMU did not save the guest state to {path}:\n{status}");
        }
        Ok(())
    }

    /// What QEMU says of a guest that does not answer: run state,
    /// migration state and each vCPU's registers, for the logs. Best effort,
    /// bounded by a few seconds (QEMU's main loop may be what hangs).
    pub fn monitor_report(&self) -> String {
        let report = || -> Result<String> {
            let mut monitor = Monitor::connect_within(&self.monitor, Duration::from_secs(3))?;
            let mut text = String::new();
            for command in ["info status", "info migrate", "info registers -a"] {
                let output = monitor.command(command)?;
                let body = output
                    .strip_suffix(PROMPT)
                    .unwrap_or(&output)
                    .lines()
                    .skip(1)
                    .filter(|line| !line.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join("\n");
                text += &format!("(qemu) {command}\n{body}\n");
            }
            Ok(text)
        };
        report().unwrap_or_else(|err| format!("QEMU's monitor did not answer: {err:#}\n"))
    }
}

/// QEMU's human monitor on a unix socket: a command, then its output up
/// to the next prompt.
struct Monitor {
    stream: UnixStream,
}

const PROMPT: &str = "(qemu) ";

impl Monitor {
    fn connect(socket: &Path) -> Result<Self> {
        // Saving a few hundred MB of guest memory takes seconds under TCG.
        Self::connect_within(socket, Duration::from_secs(60))
    }

    fn connect_within(socket: &Path, limit: Duration) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("cannot reach QEMU's monitor at {}", socket.display()))?;
        stream.set_read_timeout(Some(limit))?;
        let mut monitor = Monitor { stream };
        monitor.until_prompt()?;
        Ok(monitor)
    }

    fn command(&mut self, command: &str) -> Result<String> {
        self.stream.write_all(format!("{command}\n").as_bytes())?;
        self.until_prompt()
            .with_context(|| format!("QEMU monitor command `{command}`"))
    }

    fn until_prompt(&mut self) -> Result<String> {
        let mut text = Vec::new();
        let mut buffer = [0u8; 4096];
        while !text.ends_with(PROMPT.as_bytes()) {
            let read = self.stream.read(&mut buffer)?;
            if read == 0 {
                bail!("QEMU's monitor closed");
            }
            text.extend_from_slice(&buffer[..read]);
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}
