//! What the harness asks of the host, tried the way a new user's machine
//! would meet it.

use std::process::Command;

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// With the Debian archive keyring hidden (as on an Ubuntu machine without
/// debian-archive-keyring), fetching a Debian kernel into an empty cache
/// fails at once with one line that names the package, not with apt's
/// "NO_PUBKEY" errors. The keyring is hidden by bind-mounting /dev/null
/// over it in a private mount namespace: as root directly; otherwise
/// through sudo, then back to the user for the harness (GitHub's runners
/// allow no unprivileged user namespaces), else in a user namespace.
#[test]
fn hidden_debian_keyring_is_named_in_one_line() {
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: geteuid and getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let sudo = uid != 0
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    let back_to_user = if sudo {
        format!("setpriv --reuid={uid} --regid={gid} --clear-groups ")
    } else {
        String::new()
    };
    let script = format!(
        "mount --bind /dev/null {KEYRING} && exec {back_to_user}\"$0\" kernel build debian-6.12"
    );
    let mut command = if sudo {
        let mut command = Command::new("sudo");
        command.args(["-n", "--preserve-env=KLP_HARNESS_CACHE", "unshare", "-m"]);
        command
    } else {
        let mut command = Command::new("unshare");
        command.args(if uid == 0 {
            &["-m"][..]
        } else {
            &["-r", "-m"][..]
        });
        command
    };
    let output = command
        .args(["sh", "-c", &script, env!("CARGO_BIN_EXE_klp-harness")])
        .env("KLP_HARNESS_CACHE", cache.path())
        .output()
        .expect("unshare runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("install the package debian-archive-keyring"),
        "the last line does not name the package:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with("klp-harness: "))
        .collect();
    assert_eq!(errors, [last], "more than the one line:\n{stderr}");
    assert!(!stderr.contains("NO_PUBKEY"), "{stderr}");
}
