//! The kernel console (ttyS0): every byte QEMU writes is kept, both in a
//! log file and in memory, so that a step can wait for a marker line.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

#[derive(Default)]
struct State {
    text: String,
    closed: bool,
}

#[derive(Clone, Default)]
pub struct Console {
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl Console {
    /// Copy `source` into `log` and memory until it closes, after `earlier`
    /// (the boot a saved state comes from, or nothing).
    pub fn capture(
        earlier: String,
        source: impl Read + Send + 'static,
        mut log: File,
    ) -> (Self, JoinHandle<()>) {
        let console = Self::default();
        let _ = log.write_all(earlier.as_bytes());
        console.shared.0.lock().unwrap().text = earlier;
        let sink = console.clone();
        let handle = std::thread::spawn(move || {
            let mut source = source;
            let mut buf = [0u8; 8192];
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let _ = log.write_all(&buf[..n]);
                let (lock, ready) = &*sink.shared;
                lock.lock()
                    .unwrap()
                    .text
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
                ready.notify_all();
            }
            let _ = log.flush();
            let (lock, ready) = &*sink.shared;
            lock.lock().unwrap().closed = true;
            ready.notify_all();
        });
        (console, handle)
    }

    pub fn text(&self) -> String {
        self.shared.0.lock().unwrap().text.clone()
    }

    /// Wait until there is text beyond byte `from` and return it; None once
    /// the console has closed with nothing more, or at the deadline.
    pub fn wait_beyond(&self, from: usize, deadline: Instant) -> Option<String> {
        let (lock, ready) = &*self.shared;
        let mut state = lock.lock().unwrap();
        loop {
            if state.text.len() > from {
                return Some(state.text[from..].to_string());
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return None;
            }
            state = ready.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.shared.0.lock().unwrap().closed
    }

    /// Wait until `needle` appears at or after byte `from`; returns the end of its line.
    pub fn wait_for(&self, needle: &str, from: usize, deadline: Instant) -> Option<usize> {
        let (lock, ready) = &*self.shared;
        let mut state = lock.lock().unwrap();
        loop {
            let start = from.min(state.text.len());
            if let Some(at) = state.text[start..].find(needle) {
                let end = start + at + needle.len();
                let line_end = state.text[end..]
                    .find('\n')
                    .map_or(state.text.len(), |i| end + i + 1);
                return Some(line_end);
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return None;
            }
            state = ready.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn waits_for_a_marker_and_keeps_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let log_path = tmp.path().join("console.log");
        let input: &[u8] = b"[    0.1] hello\n[    0.2] marker-1 done\n[    0.3] after\n";
        let (console, handle) =
            Console::capture(String::new(), input, File::create(&log_path).unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        let end = console.wait_for("marker-1", 0, deadline).unwrap();
        assert_eq!(
            &console.text()[..end],
            "[    0.1] hello\n[    0.2] marker-1 done\n"
        );
        handle.join().unwrap();
        assert_eq!(std::fs::read(&log_path).unwrap(), input);
        assert_eq!(
            console.wait_for("never", 0, deadline),
            None,
            "closed console must not block"
        );
    }
}
