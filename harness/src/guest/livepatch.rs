//! Guest-side shell for livepatch work: the per-step listing of sysfs,
//! waiting for a transition, retrying, and counting CPUs. Every command
//! here runs in the guest's busybox shell and forks as little as it can.

use anyhow::Result;
use std::collections::BTreeMap;
use std::time::Duration;

const LIVEPATCH: &str = "/sys/kernel/livepatch";

/// Every readable file under the livepatch, feature and target sysfs
/// directories, one `path:value` per line, as `grep -r .` prints them,
/// then the loaded modules, newest first, as one `/proc/modules:` line.
/// Read by shell builtins: a step takes one, and under TCG the fork and
/// exec of grep cost 5 to 6 ms of the guest's time where the builtins
/// take 3. The globs reach every depth that holds attributes:
/// livepatch/PATCH/ATTR, livepatch/PATCH/OBJECT/patched,
/// klp_features/ID/ATTR and klp_target/ATTR. Every attribute is one line.
pub const LISTING_COMMAND: &str = "for f in /sys/kernel/livepatch/*/* /sys/kernel/livepatch/*/*/* \
     /sys/kernel/klp_features/*/* /sys/kernel/klp_target/*; do \
     [ -f \"$f\" ] && { IFS= read -r v < \"$f\"; } 2>/dev/null && echo \"$f:$v\"; done; \
     l=; while read -r m _; do l=\"$l $m\"; done < /proc/modules; echo \"/proc/modules:$l\"";

/// The line of a listing that names the loaded modules.
const MODULES_LINE: &str = "/proc/modules";

/// What `LISTING_COMMAND` printed, parsed: the sysfs files and the loaded
/// modules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    /// sysfs path ──> its first line.
    pub files: BTreeMap<String, String>,
    /// Loaded modules, newest first (/proc/modules' order).
    pub modules: Vec<String>,
}

impl Listing {
    /// Lines split at their first colon; a line without one is not a file.
    pub fn parse(text: &str) -> Self {
        let mut listing = Listing::default();
        for (path, value) in text.lines().filter_map(|line| line.split_once(':')) {
            if path == MODULES_LINE {
                listing.modules = value.split_whitespace().map(str::to_string).collect();
            } else {
                listing.files.insert(path.to_string(), value.to_string());
            }
        }
        listing
    }

    /// The attributes of one sysfs directory: name ──> value; None when
    /// the listing has nothing under it.
    pub fn dir(&self, dir: &str) -> Option<BTreeMap<&str, &str>> {
        let prefix = format!("{dir}/");
        let found: BTreeMap<&str, &str> = self
            .files
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .map(|(path, value)| (&path[prefix.len()..], value.as_str()))
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// Patches under /sys/kernel/livepatch, bottom of the stack first:
    /// by `stack_order` where the kernel has it, else by module load order
    /// (patches join the stack as their modules load).
    pub fn patch_stack(&self) -> Vec<String> {
        let mut entries: Vec<(Option<u32>, usize, &String)> = self
            .modules
            .iter()
            .enumerate()
            .filter(|(_, module)| self.dir(&format!("{LIVEPATCH}/{module}")).is_some())
            .map(|(newest_first, module)| {
                let order = self
                    .files
                    .get(&format!("{LIVEPATCH}/{module}/stack_order"))
                    .and_then(|o| o.parse().ok());
                (order, usize::MAX - newest_first, module)
            })
            .collect();
        entries.sort();
        entries
            .into_iter()
            .map(|(_, _, name)| name.clone())
            .collect()
    }
}

/// Shell that waits until the patch's `transition` is not 1, for at most
/// `limit` on the guest's clock (/proc/uptime, in hundredths of a second);
/// succeeds when the transition has ended or the patch has left sysfs.
/// A read that fails means the patch is leaving: when the attribute goes
/// away under it, a read can get "1" and then fail, so its value is not
/// trusted then. Nothing in the loop forks: `read` is a shell builtin, and
/// the pause is a `read -t` on a FIFO nobody writes. Under TCG each fork
/// costs milliseconds of the guest's CPU, which the transition's own work
/// (klp's retry, RCU grace periods) then waits for. Once the transition
/// has ended, every disabled patch is waited for until it has left sysfs:
/// the patch just disabled, and the patches an atomic replace just
/// replaced. klp removes them from work items after the transition
/// (`klp_free_patch_async()`, `klp_free_replaced_patches_async()`,
/// kernel/livepatch/transition.c), which can run after the wait saw
/// `transition` 0; no patch stays in sysfs disabled. One brace group, so
/// that `A && WAIT && B` chains.
pub fn wait_transition_command(name: &str, limit: Duration) -> String {
    let hundredths = (limit.as_millis() / 10).max(1);
    // "12.05" -> 1205; `1${up#*.} - 100` keeps "05" from reading as octal.
    let now = "read -r up _ < /proc/uptime; now=$((${up%.*} * 100 + 1${up#*.} - 100))";
    format!(
        "{{ [ -p {PAUSE_FIFO} ] || mkfifo {PAUSE_FIFO}; {now}; end=$((now + {hundredths})); \
         while {{ read -r t < {LIVEPATCH}/{name}/transition; }} 2>/dev/null || t=gone; \
         [ \"$t\" = 1 ] && [ $now -lt $end ]; do read -t 0.005 p <> {PAUSE_FIFO}; {now}; done; \
         while [ \"$t\" != 1 ] && [ $now -lt $end ]; do g=0; \
         for e in {LIVEPATCH}/*/enabled; do {{ read -r v < \"$e\"; }} 2>/dev/null && [ \"$v\" = 0 ] && g=1; done; \
         [ $g = 1 ] || break; read -t 0.005 p <> {PAUSE_FIFO}; {now}; done; \
         [ \"$t\" != 1 ]; }}"
    )
}

/// Shell that runs `command` until it succeeds, at most `tries` times,
/// 10 ms apart (forking nothing in between); succeeds if one try did.
/// Removing a disabled patch's module can fail for a moment after the
/// transition: klp drops the module's reference from a work item.
pub fn retry_command(command: &str, tries: u32) -> String {
    format!(
        "{{ [ -p {PAUSE_FIFO} ] || mkfifo {PAUSE_FIFO}; n=0; ok=1; \
         while [ $ok = 1 ] && [ $n -lt {tries} ]; do n=$((n+1)); \
         if {command}; then ok=0; else read -t 0.01 p <> {PAUSE_FIFO}; fi; done; [ $ok = 0 ]; }}"
    )
}

/// A FIFO nobody writes: `read -t` on it pauses the wait loop without a fork.
const PAUSE_FIFO: &str = "/tmp/klp-pause";

/// How many CPUs a list like /sys/devices/system/cpu/online's ("0-1,3") names.
pub fn cpu_count(list: &str) -> Result<u32> {
    let mut count = 0;
    for range in list.trim().split(',') {
        let bad = || anyhow::anyhow!("{list:?} is not a CPU list such as 0-1,3");
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let (first, last): (u32, u32) = (
            first.parse().map_err(|_| bad())?,
            last.parse().map_err(|_| bad())?,
        );
        if last < first {
            return Err(bad());
        }
        count += last - first + 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run shell text with the busybox the guest gets (busybox-static).
    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new(crate::host::BUSYBOX_STATIC)
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    }

    #[test]
    fn waits_and_retries_chain_as_one_command() {
        let root = tempfile::tempdir().unwrap();
        let in_dir = |command: String| {
            command
                .replace(LIVEPATCH, &root.path().display().to_string())
                .replace(PAUSE_FIFO, &root.path().join("pause").display().to_string())
        };
        // The directories stand in for /sys/kernel/livepatch/NAME and OTHER.
        let dir = root.path().join("NAME");
        std::fs::create_dir(&dir).unwrap();
        let transition = dir.join("transition");
        std::fs::write(&transition, "0\n").unwrap();
        let wait = in_dir(wait_transition_command("NAME", Duration::from_millis(50)));
        let out = sh(&format!("false && {wait} && echo after"));
        assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
        let out = sh(&format!("true && {wait} && echo after"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");
        // Ended disabled: waits (bounded) for the patch to leave sysfs,
        // and then goes on.
        let enabled = dir.join("enabled");
        std::fs::write(&enabled, "0\n").unwrap();
        let started = std::time::Instant::now();
        let out = sh(&format!("true && {wait} && echo after"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");
        assert!(started.elapsed() >= Duration::from_millis(40), "{out:?}");
        // Enabled, with a replaced patch still there: waits for it too.
        std::fs::write(&enabled, "1\n").unwrap();
        let other = root.path().join("OTHER");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("enabled"), "0\n").unwrap();
        let started = std::time::Instant::now();
        let out = sh(&format!("true && {wait} && echo after"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");
        assert!(started.elapsed() >= Duration::from_millis(40), "{out:?}");
        // Every patch enabled: no wait, even with a long bound.
        std::fs::write(other.join("enabled"), "1\n").unwrap();
        let long = in_dir(wait_transition_command("NAME", Duration::from_secs(3)));
        let started = std::time::Instant::now();
        assert_eq!(
            String::from_utf8_lossy(&sh(&format!("{long} && echo after")).stdout),
            "after\n"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        std::fs::remove_file(&enabled).unwrap();
        // Still in transition: the bounded wait fails, and the chain stops.
        // The bound is time on the clock, however long each round takes.
        std::fs::write(&transition, "1\n").unwrap();
        let started = std::time::Instant::now();
        let out = sh(&format!("{wait} && echo after || echo still"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "still\n");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");

        let tries = root.path().join("tries");
        let third = format!("echo x >> {0}; [ $(wc -l < {0}) -ge 3 ]", tries.display());
        let out = sh(&format!(
            "{} && echo done",
            in_dir(retry_command(&third, 5))
        ));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
        assert_eq!(std::fs::read_to_string(&tries).unwrap().lines().count(), 3);
        let never = in_dir(retry_command("false", 2));
        assert!(!sh(&format!("{never} && echo done")).status.success());
    }

    #[test]
    fn the_listing_reads_what_grep_reads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let files = [
            ("livepatch/p/enabled", "1\n"),
            ("livepatch/p/vmlinux/patched", "1\n"),
            ("livepatch/p/klp_target/patched", "0\n"),
            ("klp_features/1/name", "demo-fix\n"),
            ("klp_target/status", "klp_cumul_v2 f1=v2 \n"),
            ("klp_target/empty", ""),
        ];
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("livepatch/p/vmlinux/func,1")).unwrap();
        let local = |command: &str| command.replace("/sys/kernel", &root);
        let lines = |command: &str| {
            let out = sh(&local(command));
            assert!(out.status.success(), "{out:?}");
            let mut lines: Vec<String> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            lines.sort();
            lines
        };
        let grep =
            "grep -r . /sys/kernel/livepatch /sys/kernel/klp_features /sys/kernel/klp_target";
        let (modules, files): (Vec<String>, Vec<String>) = lines(LISTING_COMMAND)
            .into_iter()
            .partition(|line| line.starts_with("/proc/modules:"));
        assert_eq!(files, lines(grep));
        assert_eq!(files.len(), 5);
        assert_eq!(modules.len(), 1, "one line names the loaded modules");
    }

    fn listing(modules: &str, files: &[(&str, &str)]) -> Listing {
        let mut text = String::new();
        for (path, value) in files {
            text.push_str(&format!("{path}:{value}\n"));
        }
        text.push_str(&format!("/proc/modules: {modules}\n"));
        Listing::parse(&text)
    }

    #[test]
    fn stack_follows_load_order_without_stack_order() {
        let found = listing(
            "klp_b klp_target klp_a",
            &[
                ("/sys/kernel/livepatch/klp_a/enabled", "1"),
                ("/sys/kernel/livepatch/klp_b/enabled", "1"),
            ],
        );
        assert_eq!(found.modules, ["klp_b", "klp_target", "klp_a"]);
        assert_eq!(found.patch_stack(), ["klp_a", "klp_b"]);
    }

    #[test]
    fn stack_order_attribute_wins_over_load_order() {
        let found = listing(
            "klp_a klp_b",
            &[
                ("/sys/kernel/livepatch/klp_a/stack_order", "1"),
                ("/sys/kernel/livepatch/klp_b/stack_order", "2"),
            ],
        );
        assert_eq!(found.patch_stack(), ["klp_a", "klp_b"]);
    }

    #[test]
    fn listing_lines_split_at_the_first_colon() {
        let found = listing(
            "",
            &[
                ("/sys/kernel/klp_target/status", "klp_a f1=v1"),
                ("/x/y", "a:b"),
            ],
        );
        assert_eq!(found.files["/sys/kernel/klp_target/status"], "klp_a f1=v1");
        assert_eq!(found.files["/x/y"], "a:b");
        assert!(found.modules.is_empty());
        let dir = found.dir("/sys/kernel/klp_target").unwrap();
        assert_eq!(
            dir.into_iter().collect::<Vec<_>>(),
            [("status", "klp_a f1=v1")]
        );
        assert_eq!(found.dir("/sys/kernel/klp_tar"), None);
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_count("0").unwrap(), 1);
        assert_eq!(cpu_count("0-1\n").unwrap(), 2);
        assert_eq!(cpu_count("0,2-3").unwrap(), 3);
        assert!(cpu_count("").is_err());
        assert!(cpu_count("1-0").is_err());
        assert!(cpu_count("a-b").is_err());
    }
}
