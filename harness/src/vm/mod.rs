//! kernel image + initramfs ──> running guest (QEMU).
//!
//! ttyS0 is the kernel console, captured whole into `console.log`; a virtio
//! serial port is the control channel, a unix socket the guest shell talks
//! on (a UART would cost an interrupt per byte and stalls under TCG). QEMU dies
//! with the harness (PR_SET_PDEATHSIG) and is killed when a `Vm` drops, so
//! no QEMU process outlives a test, even one that is killed.

mod accel;
pub mod clock;
mod console;
mod interact;
mod state;

pub use accel::Accel;
pub use clock::GuestClock;
pub use console::Console;
pub use interact::interact;

use crate::arch::Arch;
use crate::host::qemu::Qemu;
use anyhow::{bail, Context, Result};
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct VmConfig {
    pub qemu: Qemu,
    /// The guest's architecture: machine, CPU model and console.
    pub arch: Arch,
    pub image: PathBuf,
    pub initramfs: PathBuf,
    /// Directory that receives console.log and qemu.log.
    pub log_dir: PathBuf,
    pub memory_mb: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub clock: GuestClock,
    /// Start a shell on ttyS0 too, and keep QEMU's stdin (the serial
    /// console's input) for `klp-harness shell`.
    pub interactive: bool,
    /// Start from this saved state (see `Vm::save_state`) instead of booting.
    pub incoming: Option<PathBuf>,
    /// The console of the boot that state comes from: it goes first in
    /// console.log, so the log holds the whole boot either way.
    pub earlier_console: Option<PathBuf>,
}

pub struct Vm {
    /// The kernel command line the guest was started with.
    pub command_line: String,
    child: Child,
    pub console: Console,
    console_thread: Option<JoinHandle<()>>,
    pub control: UnixStream,
    /// Input of the serial console, for an interactive VM.
    pub console_input: Option<std::process::ChildStdin>,
    pub accel: Accel,
    pub started: Instant,
    /// QEMU's human monitor, for saving the guest's state.
    monitor: PathBuf,
    _socket_dir: tempfile::TempDir,
}

/// Guest CPUs unless a scenario asks for more. With one, a livepatch
/// transition completes at klp's first try; with two, the other CPU's idle
/// task is "running" at that try, so klp_try_complete_transition() gives
/// up and tries again a second later (kernel/livepatch/transition.c).
/// docs/performance.md, "Guest CPUs and transition times", has the figures.
pub const DEFAULT_CPUS: u32 = 1;

/// Single-threaded TCG runs every vCPU on one host thread: more only slow
/// the guest down.
pub const MAX_CPUS: u32 = 8;

/// Pick the accelerator for this kernel (probing KVM once per host boot).
pub use accel::known_kvm;

pub fn choose_accel(qemu: &Qemu, image: &Path, arch: &Arch, cache_dir: &Path) -> Accel {
    accel::choose(qemu, image, arch, cache_dir)
}

/// Kernel command line after the console: every message, timestamped
/// (the benchmark compares them; not every config turns PRINTK_TIME on),
/// stop on panic.
const APPEND: &str = "loglevel=8 printk.time=1 panic=-1 rdinit=/init";

/// The kernel command line: the architecture's console, then `APPEND`.
pub fn command_line(config: &VmConfig) -> String {
    let line = format!("{} {APPEND}", config.arch.console_arg());
    if config.interactive {
        format!("{line} {SHELL_FLAG}")
    } else {
        line
    }
}

/// The descriptor QEMU reads a saved state from (`-incoming fd:3`).
const INCOMING_FD: i32 = 3;

/// Tells /init to start a shell on the console as well (see init.sh).
const SHELL_FLAG: &str = "klp.shell";

impl Vm {
    pub fn start(config: &VmConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.log_dir)?;
        // Socket paths are limited to 108 bytes, so keep them short and private.
        let socket_dir = tempfile::Builder::new().prefix("klp-vm-").tempdir()?;
        let socket = socket_dir.path().join("ctl");
        let monitor = socket_dir.path().join("mon");
        let mut qemu_log = std::fs::File::create(config.log_dir.join("qemu.log"))?;
        let mut command = config.qemu.command();
        command
            .args(["-nodefaults", "-no-reboot", "-display", "none"])
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .args(hardware_args(config))
            .arg("-kernel")
            .arg(&config.image)
            .arg("-initrd")
            .arg(&config.initramfs)
            .arg("-append")
            .arg(command_line(config))
            .args([
                "-chardev",
                "stdio,id=console,signal=off",
                "-serial",
                "chardev:console",
            ])
            .arg("-chardev")
            .arg(format!(
                "socket,id=control,path={},server=on,wait=on",
                socket.display()
            ))
            // QEMU reads a saved state from the file itself, as fd 3: no
            // shell and `cat` to start, and no pipe to copy it through.
            .args(
                config
                    .incoming
                    .iter()
                    .flat_map(|_| ["-incoming".to_string(), format!("fd:{INCOMING_FD}")]),
            )
            .stdin(if config.interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped());
        // The log starts with the command line, so a failed start can be re-run by hand.
        let state_input = config.incoming.as_ref().map_or(String::new(), |state| {
            format!(" {INCOMING_FD}< '{}'", state.display())
        });
        writeln!(qemu_log, "{}{state_input}\n", shell_words(&command))?;
        command.stderr(qemu_log);
        let incoming = match &config.incoming {
            Some(state) => Some(
                std::fs::File::open(state)
                    .with_context(|| format!("cannot open the saved state {}", state.display()))?,
            ),
            None => None,
        };
        let incoming_fd = incoming.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: prctl and dup2 are async-signal-safe. prctl asks the
        // kernel to send SIGKILL to QEMU when the thread that started it
        // goes away; dup2 hands QEMU the saved state (without close-on-exec).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 onto itself would keep close-on-exec.
                let handed = match incoming_fd {
                    Some(fd) if fd == INCOMING_FD => libc::fcntl(fd, libc::F_SETFD, 0),
                    Some(fd) => libc::dup2(fd, INCOMING_FD),
                    None => 0,
                };
                if handed < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start QEMU, {}", config.qemu.origin()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let console_input = child.stdin.take();
        let log = std::fs::File::create(config.log_dir.join("console.log"))?;
        let earlier = match &config.earlier_console {
            Some(path) => {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    + "klp-harness: the guest starts here from the state saved above\n"
            }
            None => String::new(),
        };
        let (console, console_thread) = Console::capture(earlier, stdout, log);
        // QEMU waits for this connection before it starts the guest.
        let control = loop {
            match UnixStream::connect(&socket) {
                Ok(stream) => break stream,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    if let Some(status) = child.try_wait()? {
                        let qemu_errors = std::fs::read_to_string(config.log_dir.join("qemu.log"))
                            .unwrap_or_default();
                        bail!(
                            "QEMU exited at start ({status}):\n{}",
                            qemu_errors.trim_end()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(err) => return Err(err).context("QEMU did not open its control socket"),
            }
        };
        Ok(Self {
            child,
            console,
            console_thread: Some(console_thread),
            control,
            console_input,
            accel: config.accel,
            command_line: command_line(config),
            started,
            monitor,
            _socket_dir: socket_dir,
        })
    }

    /// Wait for QEMU to exit by itself (after the guest powers off), or kill it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                self.finish_console();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
        bail!("QEMU did not exit within {timeout:?} after poweroff; killed it")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.finish_console();
    }

    fn finish_console(&mut self) {
        if let Some(thread) = self.console_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The guest's hardware as QEMU's arguments: what a saved state must have
/// been made with to be started again.
pub fn hardware_args(config: &VmConfig) -> Vec<String> {
    let mut args = config.arch.record.qemu.machine.clone();
    args.extend(config.accel.qemu_args(&config.arch));
    args.extend(config.clock.qemu_args());
    args.extend([
        "-m".to_string(),
        config.memory_mb.to_string(),
        // One socket per CPU: a kernel without ACPI finds CPUs in the MP
        // table, where SeaBIOS lists only the first CPU of each package.
        "-smp".to_string(),
        format!("{0},sockets={0},cores=1,threads=1", config.cpus),
        "-device".to_string(),
        "virtio-serial-pci".to_string(),
        "-device".to_string(),
        "virtserialport,chardev=control,name=klp.control".to_string(),
    ]);
    args
}

/// A command as a shell would take it back: each word single-quoted
/// unless it is plain.
fn shell_words(command: &Command) -> String {
    // Variables set for the command (a private QEMU's libraries) first.
    let env: Vec<std::ffi::OsString> = command
        .get_envs()
        .filter_map(|(name, value)| {
            let mut word = name.to_os_string();
            word.push("=");
            word.push(value?);
            Some(word)
        })
        .collect();
    env.iter()
        .map(|word| word.as_os_str())
        .chain(std::iter::once(command.get_program()))
        .chain(command.get_args())
        .map(|word| {
            let word = word.to_string_lossy();
            let plain = word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@".contains(c));
            if plain && !word.is_empty() {
                word.into_owned()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_can_be_pasted_into_a_shell() {
        let mut command = Command::new("qemu-system-x86_64");
        command.args(["-m", "512", "-append", "console=ttyS0 panic=-1", "it's"]);
        assert_eq!(
            shell_words(&command),
            r"qemu-system-x86_64 -m 512 -append 'console=ttyS0 panic=-1' 'it'\''s'"
        );
    }
}
