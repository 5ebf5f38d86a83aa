//! Being stopped from outside. SIGINT or SIGTERM runs a handler on a
//! thread of its own (which reports what finished and ends the process);
//! a test process whose parent died (nextest killed) ends itself. Either
//! way the guests' QEMUs die with the process (PR_SET_PDEATHSIG), and so
//! do builds and downloads (`host::stop_with_harness`).

use anyhow::{bail, Result};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static WAKE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe; the pipe outlives the process.
    unsafe {
        libc::write(WAKE.load(Ordering::SeqCst), (&byte as *const u8).cast(), 1);
    }
}

/// Whether SIGINT or SIGTERM has arrived: results that come in after it
/// are the interruption's doing, not the kernel's.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Call `handler` with the signal's number on a thread of its own when
/// SIGINT or SIGTERM arrives; it is expected to end the process.
pub fn on_interrupt(handler: impl FnOnce(i32) + Send + 'static) -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("cannot create a pipe: {}", std::io::Error::last_os_error());
    }
    WAKE.store(fds[1], Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores an atomic and writes a byte.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if installed != 0 {
            bail!(
                "cannot handle signal {signal}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let read = fds[0];
    std::thread::spawn(move || {
        let mut byte = 0u8;
        // SAFETY: reads one byte into a local from a descriptor we own.
        while unsafe { libc::read(read, (&mut byte as *mut u8).cast(), 1) } != 1 {}
        handler(i32::from(byte));
    });
    Ok(())
}

/// End this process soon after its parent ends: a test process of a
/// nextest that was killed would otherwise run on, its guest with it.
pub fn exit_with_parent() {
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            // SAFETY: kill(2) on ourselves; SIGKILL also ends the QEMUs
            // through their PR_SET_PDEATHSIG.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    });
}
