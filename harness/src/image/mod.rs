//! kernel + .ko + guest init ──> initramfs (a newc cpio archive, no root needed).

use crate::cache::{Cache, ContentHash};
use anyhow::{Context, Result};
use cpio::newc::Builder;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where fixtures sit inside the guest.
pub const GUEST_MODULE_DIR: &str = "/klp";

const DIRECTORIES: &[&str] = &["bin", "dev", "proc", "sys", "tmp", "klp", "boot-modules"];

const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFREG: u32 = 0o100000;

struct Entry {
    name: String,
    /// File type and permission bits, as in `st_mode`.
    mode: u32,
    contents: Vec<u8>,
    rdev: (u32, u32),
}

impl Entry {
    fn file(name: String, permissions: u32, contents: Vec<u8>) -> Self {
        Self {
            name,
            mode: S_IFREG | permissions,
            contents,
            rdev: (0, 0),
        }
    }
}

/// Build (or reuse) the initramfs holding busybox, `init` and the boot
/// modules (loaded by init in the given order). Fixtures are not in it:
/// they are copied into the running guest, so that every scenario on a
/// kernel starts from the same image.
pub fn build(
    cache: &Cache,
    busybox: &Path,
    init: &str,
    boot_modules: &[PathBuf],
) -> Result<PathBuf> {
    let mut entries: Vec<Entry> = DIRECTORIES
        .iter()
        .map(|dir| Entry {
            name: dir.to_string(),
            mode: S_IFDIR | 0o755,
            contents: vec![],
            rdev: (0, 0),
        })
        .collect();
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    entries.push(Entry {
        name: "dev/console".into(),
        mode: S_IFCHR | 0o600,
        contents: vec![],
        rdev: (5, 1),
    });
    entries.push(Entry::file("init".into(), 0o755, init.as_bytes().to_vec()));
    let busybox_bytes =
        std::fs::read(busybox).with_context(|| format!("cannot read {}", busybox.display()))?;
    entries.push(Entry::file("bin/busybox".into(), 0o755, busybox_bytes));
    for (index, module) in boot_modules.iter().enumerate() {
        let bytes =
            std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
        let name = module.file_name().unwrap_or_default().to_string_lossy();
        entries.push(Entry::file(
            format!("boot-modules/{index:02}-{name}"),
            0o644,
            bytes,
        ));
    }

    let mut hash = ContentHash::new();
    for entry in &entries {
        hash.add(
            &format!("{} {:o} {:?}", entry.name, entry.mode, entry.rdev),
            &entry.contents,
        );
    }
    let dir = cache.entry("initramfs", &hash.finish(), |dir| {
        write_cpio(&dir.join("initramfs.cpio"), &entries)
    })?;
    Ok(dir.join("initramfs.cpio"))
}

fn write_cpio(path: &Path, entries: &[Entry]) -> Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for (ino, entry) in entries.iter().enumerate() {
        let builder = Builder::new(&entry.name)
            .ino(ino as u32 + 1)
            .mode(entry.mode)
            .rdev_major(entry.rdev.0)
            .rdev_minor(entry.rdev.1);
        let mut writer = builder.write(&mut out, entry.contents.len() as u32);
        writer.write_all(&entry.contents)?;
        writer.finish()?;
    }
    cpio::newc::trailer(&mut out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_holds_init_busybox_and_modules() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache")).unwrap();
        let busybox = tmp.path().join("busybox");
        std::fs::write(&busybox, b"\x7fELF").unwrap();
        let ko = tmp.path().join("m.ko");
        std::fs::write(&ko, b"module").unwrap();
        let path = build(&cache, &busybox, "#!/bin/sh\n", std::slice::from_ref(&ko)).unwrap();

        let mut names = Vec::new();
        let mut reader = File::open(path).unwrap();
        loop {
            let entry = cpio::NewcReader::new(reader).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            names.push(entry.entry().name().to_string());
            reader = entry.finish().unwrap();
        }
        for expected in ["init", "bin/busybox", "dev/console", "boot-modules/00-m.ko"] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}
