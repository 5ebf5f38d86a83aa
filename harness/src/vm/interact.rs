//! Handing the serial console to a person: their keystrokes go to ttyS0,
//! where /init started a shell, and everything the console prints comes
//! back. On a terminal, keys pass through raw (so Ctrl-C reaches the guest)
//! and Ctrl-] leaves; from a pipe, input ends at end of file.

use super::Vm;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Ctrl-], as in telnet.
const LEAVE: u8 = 0x1d;

/// After input ends, how long the console must stay quiet before the
/// guest is stopped, so that the last command's output is shown.
const QUIET: Duration = Duration::from_millis(700);

pub fn interact(vm: &mut Vm) -> Result<()> {
    let mut input = vm
        .console_input
        .take()
        .context("the VM was not started with an interactive console")?;
    let console = vm.console.clone();
    let mut shown = console.text().len();
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        loop {
            match console.wait_beyond(shown, Instant::now() + Duration::from_millis(100)) {
                Some(more) => {
                    shown += more.len();
                    let _ = out.write_all(more.as_bytes());
                    let _ = out.flush();
                }
                None if console.is_closed() => return,
                None => {}
            }
        }
    });
    // A nudge so that the shell prints a fresh prompt.
    input.write_all(b"\n")?;
    let raw = RawTerminal::enter();
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte) {
            Ok(0) | Err(_) => break,
            Ok(_) if raw.is_some() && byte[0] == LEAVE => break,
            Ok(_) => {
                if input.write_all(&byte).and_then(|()| input.flush()).is_err() {
                    break; // The guest went away.
                }
            }
        }
    }
    drop(raw);
    // Let the output of what was typed last arrive, then stop the guest.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = vm.console.text().len();
    while Instant::now() < deadline && !vm.console.is_closed() {
        std::thread::sleep(QUIET);
        let now = vm.console.text().len();
        if now == seen {
            break;
        }
        seen = now;
    }
    vm.kill();
    let _ = printer.join();
    crate::event::emit(crate::event::Event::GuestStopped);
    Ok(())
}

/// The terminal on stdin in raw mode, restored on drop; None when stdin
/// is not a terminal.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> Option<Self> {
        // SAFETY: plain termios calls on fd 0 with a properly sized struct.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            Some(Self { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}
