//! kernel spec ──> kernel artifact (bzImage + kbuild dir).

mod apt;
mod debian;
mod modules;

use crate::cache::{Cache, ContentHash};
use crate::project::Project;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One `kernels/NAME.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum KernelSource {
    /// A prebuilt Debian kernel with its headers, fetched with apt-get download.
    DebianPrebuilt(debian::Prebuilt),
}

#[derive(Clone, Debug)]
pub struct KernelSpec {
    pub name: String,
    pub file: PathBuf,
    pub source: KernelSource,
}

/// A kernel ready to boot and to build modules against.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    /// Cache key: identifies exactly this build, for the fixture cache.
    pub id: String,
    /// `uname -r` of the kernel.
    pub release: String,
    pub bzimage: PathBuf,
    /// Directory to pass as `make -C`.
    pub kbuild: PathBuf,
    pub config: PathBuf,
    /// Modules /init loads before anything else (see `modules`).
    pub boot_modules: Vec<PathBuf>,
}

impl KernelSpec {
    pub fn load(file: &Path) -> Result<Self> {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("bad kernel file name {}", file.display()))?
            .to_string();
        let source = crate::yaml::parse_file(file)?;
        Ok(Self {
            name,
            file: file.to_path_buf(),
            source,
        })
    }

    /// Lock file next to the spec: what "latest" resolved to.
    fn lock_file(&self) -> PathBuf {
        self.file.with_extension("lock")
    }
}

/// Every `kernels/*.yaml`, sorted by name.
pub fn list(project: &Project) -> Result<Vec<KernelSpec>> {
    let dir = project.kernels_dir();
    let mut specs = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            specs.push(KernelSpec::load(&path)?);
        }
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}

pub fn find(project: &Project, name: &str) -> Result<KernelSpec> {
    let file = project.kernels_dir().join(format!("{name}.yaml"));
    if !file.exists() {
        let known: Vec<String> = list(project)?.into_iter().map(|spec| spec.name).collect();
        bail!("no kernel named {name:?} (known: {})", known.join(", "));
    }
    KernelSpec::load(&file)
}

/// The default kernel for `klp-harness run` without `--kernel`.
pub const DEFAULT: &str = "debian-6.12";

/// Fetch or build the kernel (cached), and check that it can run livepatches.
pub fn prepare(spec: &KernelSpec, cache: &Cache) -> Result<Kernel> {
    let kernel = match &spec.source {
        KernelSource::DebianPrebuilt(prebuilt) => {
            debian::prepare(spec, prebuilt, &spec.lock_file(), cache)
        }
    }
    .with_context(|| format!("kernel {}", spec.name))?;
    check_config(&kernel)?;
    if let Some(compiler) = debian::compiler(&kernel.kbuild) {
        crate::host::ensure(&[compiler], &cache.root().join("locks"))?;
    }
    Ok(kernel)
}

/// Options without which no scenario can run.
const REQUIRED_CONFIG: &[&str] = &[
    "CONFIG_LIVEPATCH=y",
    "CONFIG_MODULES=y",
    "CONFIG_MODULE_UNLOAD=y",
    "CONFIG_UNWINDER_ORC=y",
    "CONFIG_SERIAL_8250_CONSOLE=y",
    "CONFIG_BLK_DEV_INITRD=y",
    "CONFIG_DEVTMPFS=y",
];

fn check_config(kernel: &Kernel) -> Result<()> {
    let config = std::fs::read_to_string(&kernel.config)
        .with_context(|| format!("cannot read {}", kernel.config.display()))?;
    let missing: Vec<&str> = REQUIRED_CONFIG
        .iter()
        .copied()
        .filter(|option| !config.lines().any(|line| line == *option))
        .collect();
    if !missing.is_empty() {
        bail!(
            "kernel {} ({}) lacks {}",
            kernel.name,
            kernel.config.display(),
            missing.join(", ")
        );
    }
    for part in [
        "Makefile",
        ".config",
        "Module.symvers",
        "scripts/mod/modpost",
    ] {
        let path = kernel.kbuild.join(part);
        if !path.exists() {
            bail!(
                "kbuild tree {} is unusable: {} is missing",
                kernel.kbuild.display(),
                part
            );
        }
    }
    Ok(())
}

/// Hash of a spec file and its lock: what decides which kernel is fetched.
fn spec_hash(spec: &KernelSpec, lock: &Path) -> Result<String> {
    let mut hash = ContentHash::new();
    hash.add_file("spec", &spec.file)?;
    if lock.exists() {
        hash.add_file("lock", lock)?;
    }
    Ok(hash.finish())
}

/// What `resolve` finds, pinned in `lock` the first time so that later runs
/// (and other machines) use the same kernel until the lock is deleted.
fn pinned<T: serde::de::DeserializeOwned + serde::Serialize>(
    lock: &Path,
    cache: &Cache,
    wanted: &str,
    resolve: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if lock.exists() {
        return crate::yaml::parse_file(lock);
    }
    let _guard = cache.lock("apt-resolve")?;
    if lock.exists() {
        return crate::yaml::parse_file(lock);
    }
    let resolved = resolve()?;
    let text = format!(
        "# What {wanted:?} resolved to; delete this file to move to a newer kernel.\n{}",
        serde_saphyr::to_string(&resolved)?
    );
    std::fs::write(lock, text).with_context(|| format!("cannot write {}", lock.display()))?;
    eprintln!("klp-harness: pinned {} in {}", wanted, lock.display());
    Ok(resolved)
}
