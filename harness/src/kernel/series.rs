//! A patch series as people receive it: a folder of `.patch` files
//! (applied in name order) or one mbox file (`git format-patch --stdout`,
//! b4 output), its messages applied in order. A patch that does not apply
//! is named with its subject, and so is each hunk that failed.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Clone, Debug)]
pub struct Patch {
    /// The file name, or for a message of an mbox its number and subject.
    pub name: String,
    pub text: Vec<u8>,
}

/// The patches of `path`: every `*.patch` of a folder, by name, or the
/// messages of an mbox file.
pub fn read(path: &Path) -> Result<Vec<Patch>> {
    if path.is_dir() {
        let mut files = Vec::new();
        for entry in
            std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?
        {
            let file = entry?.path();
            if file.extension().is_some_and(|ext| ext == "patch") {
                files.push(file);
            }
        }
        files.sort();
        return files
            .into_iter()
            .map(|file| {
                Ok(Patch {
                    name: file
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into(),
                    text: std::fs::read(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                })
            })
            .collect();
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the patch series {}", path.display()))?;
    let patches = split_mbox(&text);
    if patches.is_empty() {
        bail!(
            "{}: no patches (expected a folder of .patch files or an mbox of messages starting with `From `)",
            path.display()
        );
    }
    Ok(patches)
}

/// The messages of an mbox: each starts, at the top or after a blank
/// line, with a `From SENDER DATE` line whose date ends with the year
/// (git format-patch does not escape `From ` at the start of body lines).
fn split_mbox(text: &str) -> Vec<Patch> {
    let separator = |line: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.len() >= 3
            && words[0] == "From"
            && words
                .last()
                .is_some_and(|year| year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut messages: Vec<String> = Vec::new();
    let mut previous_blank = true;
    for line in text.split_inclusive('\n') {
        if previous_blank && separator(line) {
            messages.push(String::new());
        }
        if let Some(message) = messages.last_mut() {
            message.push_str(line);
        }
        previous_blank = line.trim_end_matches(['\r', '\n']).is_empty();
    }
    let total = messages.len();
    messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            let subject = subject(&message).unwrap_or_else(|| "no subject".to_string());
            Patch {
                name: format!("message {} of {total} ({subject:?})", index + 1),
                text: message.into_bytes(),
            }
        })
        .collect()
}

/// The Subject header, unfolded.
fn subject(message: &str) -> Option<String> {
    let mut lines = message.lines().take_while(|line| !line.is_empty());
    let mut subject = lines
        .by_ref()
        .find_map(|line| line.strip_prefix("Subject:"))?
        .trim()
        .to_string();
    for line in lines {
        if !line.starts_with([' ', '\t']) {
            break;
        }
        subject.push(' ');
        subject.push_str(line.trim());
    }
    Some(subject)
}

/// Apply the series to `tree`, in order; `series` names it in errors.
pub fn apply(tree: &Path, series: &str, patches: &[Patch]) -> Result<()> {
    for (index, patch) in patches.iter().enumerate() {
        let mut child = Command::new("patch")
            .args(["-p1", "--forward", "--batch", "--no-backup-if-mismatch"])
            .current_dir(tree)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run patch (package patch)")?;
        let mut stdin = child.stdin.take().expect("piped");
        let text = patch.text.clone();
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &text));
        let output = child.wait_with_output()?;
        writer.join().ok();
        if !output.status.success() {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            bail!(
                "{series}: patch {} of {}, {}, does not apply{}\n{said}",
                index + 1,
                patches.len(),
                patch.name,
                failed_hunks(&said)
            );
        }
    }
    Ok(())
}

/// `: FILE hunk #N (at line L), ...` from patch's output, or nothing.
fn failed_hunks(output: &str) -> String {
    let mut file = "";
    let mut failed = Vec::new();
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("patching file ") {
            file = name.trim_matches(['\'', '`']);
        } else if let Some(rest) = line.strip_prefix("Hunk #") {
            if let Some((number, at)) = rest.split_once(" FAILED at ") {
                let at = at.trim_end_matches('.');
                failed.push(format!("{file} hunk #{number} (at line {at})"));
            }
        } else if line.contains("Only garbage was found") {
            failed.push("it holds no diff".to_string());
        } else if line.starts_with("can't find file to patch") {
            failed.push("a file it changes does not exist".to_string());
        } else if line.starts_with("Reversed (or previously applied) patch detected") {
            failed.push(format!("{file} is already patched this way"));
        }
    }
    match failed.is_empty() {
        true => String::new(),
        false => format!(": {}", failed.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBOX: &str = "\
From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: A <a@example.org>
Subject: [PATCH 1/2] livepatch: first
 change

body
---
--- a/f
+++ b/f
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three

From 2222222222222222222222222222222222222222 Mon Sep 17 00:00:00 2001
From: A <a@example.org>
Subject: [PATCH 2/2] livepatch: second

From here on, a body line starting with From after text is no separator.
---
--- a/f
+++ b/f
@@ -1,3 +1,3 @@
 one
-TWO
+2
 three
";

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "one\ntwo\nthree\n").unwrap();
        dir
    }

    #[test]
    fn an_mbox_is_split_into_its_messages_and_applied_in_order() {
        let patches = split_mbox(MBOX);
        let names: Vec<&str> = patches.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "message 1 of 2 (\"[PATCH 1/2] livepatch: first change\")",
                "message 2 of 2 (\"[PATCH 2/2] livepatch: second\")"
            ]
        );
        let dir = tree();
        apply(dir.path(), "fix.mbox", &patches).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("f")).unwrap(),
            "one\n2\nthree\n"
        );
    }

    #[test]
    fn a_patch_that_does_not_apply_is_named_with_its_hunk() {
        let mut patches = split_mbox(MBOX);
        patches.remove(0);
        let dir = tree();
        let err = format!("{:#}", apply(dir.path(), "fix.mbox", &patches).unwrap_err());
        assert!(
            err.starts_with(
                "fix.mbox: patch 1 of 1, message 2 of 2 (\"[PATCH 2/2] livepatch: second\"), \
                 does not apply: f hunk #1 (at line 1)"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_folder_is_read_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["0002-b.patch", "0001-a.patch", "notes.txt"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let names: Vec<String> = read(dir.path())
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["0001-a.patch", "0002-b.patch"]);
        let empty = dir.path().join("empty.mbox");
        std::fs::write(&empty, "no messages\n").unwrap();
        assert!(format!("{:#}", read(&empty).unwrap_err()).contains("no patches"));
    }
}
