//! Kernel modules the guest needs before the harness can talk to it: the
//! virtio console and its transport. Kernels that build them in need none;
//! others (Debian's 6.1 cloud kernel) get them, with their dependencies,
//! loaded by /init in dependency order.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// What the control channel needs, each after the modules it depends on.
const CONTROL_CHANNEL: &[&str] = &["virtio_pci", "virtio_console"];

/// `.ko` files to load, dependencies first; empty when all are built in.
pub fn boot_modules(modules_dir: &Path) -> Result<Vec<PathBuf>> {
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin
        .lines()
        .filter_map(|path| Path::new(path).file_name()?.to_str())
        .map(|file| file.trim_end_matches(".ko").replace('-', "_"))
        .collect();
    let mut available = HashMap::new();
    for entry in WalkDir::new(modules_dir.join("kernel")) {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy();
        if let Some(module) = name.strip_suffix(".ko") {
            available.insert(module.replace('-', "_"), entry.path().to_path_buf());
        }
    }
    let mut order = Vec::new();
    for module in CONTROL_CHANNEL {
        add_with_dependencies(module, &builtin, &available, &mut order, 0)?;
    }
    Ok(order)
}

fn add_with_dependencies(
    module: &str,
    builtin: &[String],
    available: &HashMap<String, PathBuf>,
    order: &mut Vec<PathBuf>,
    depth: usize,
) -> Result<()> {
    if builtin.iter().any(|b| b == module) {
        return Ok(());
    }
    let Some(path) = available.get(module) else {
        bail!("module {module} is neither built in nor shipped as an uncompressed .ko");
    };
    if order.contains(path) {
        return Ok(());
    }
    if depth > 16 {
        bail!("module dependencies of {module} nest too deep");
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    for dependency in depends(&bytes) {
        add_with_dependencies(&dependency, builtin, available, order, depth + 1)?;
    }
    order.push(path.clone());
    Ok(())
}

/// The `depends=a,b` entry of a module's .modinfo section.
fn depends(ko: &[u8]) -> Vec<String> {
    ko.split(|byte| *byte == 0)
        .find_map(|field| field.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|name| !name.is_empty())
                .map(|name| name.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_depends_from_modinfo() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(depends(ko), ["virtio", "virtio_ring"]);
        assert!(depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn orders_dependencies_first_and_skips_builtins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("kernel/drivers")).unwrap();
        let write = |name: &str, deps: &str| {
            let body = format!("\0depends={deps}\0");
            std::fs::write(dir.join(format!("kernel/drivers/{name}.ko")), body).unwrap();
        };
        write("virtio_console", "virtio,virtio_ring");
        write("virtio_pci", "virtio,virtio_ring,virtio_pci_modern_dev");
        write("virtio_pci_modern_dev", "");
        write("virtio_ring", "");
        std::fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\n",
        )
        .unwrap();
        let names: Vec<String> = boot_modules(dir)
            .unwrap()
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "virtio_console"
            ]
        );
    }
}
