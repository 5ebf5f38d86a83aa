//! kernel spec ──> kernel artifact (bootable image + kbuild dir).

pub mod behaviour;
mod build;
mod debian;
mod from_source;
mod incremental;
mod modules;
mod overlay;
mod pins;
pub mod series;
mod source;
pub mod version;
mod worktree;

pub use overlay::Overlay;
pub use pins::upstream_version;

use crate::arch::{self, Arch};
use crate::cache::{Cache, ContentHash};
use crate::project::Project;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One `kernels/NAME.yaml`: exactly one source, and build options for
/// kernels built from source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelFile {
    /// A prebuilt Debian kernel with its headers, fetched with apt-get download.
    debian_prebuilt: Option<debian::Prebuilt>,
    /// Sources from a Debian `linux-source-X` package.
    debian_source: Option<source::DebianSource>,
    /// Sources from a tarball with a known sha256.
    tarball: Option<source::Tarball>,
    /// Sources from a local tree or git checkout.
    tree: Option<source::Tree>,
    /// A record in kernels/arch/; x86_64 unless named.
    arch: Option<String>,
    #[serde(default)]
    build: BuildOptions,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildOptions {
    /// Fragment names in kernels/config/ (without `.config`); default: all.
    pub fragments: Option<Vec<String>>,
    /// A patch series in kernels/patches/: a folder NAME of .patch files
    /// (applied in name order) or an mbox file NAME (applied in order).
    pub patches: Option<String>,
}

#[derive(Clone, Debug)]
pub enum KernelSource {
    DebianPrebuilt(debian::Prebuilt),
    FromSource {
        origin: source::Origin,
        build: BuildOptions,
    },
}

#[derive(Clone, Debug)]
pub struct KernelSpec {
    pub name: String,
    pub file: PathBuf,
    pub source: KernelSource,
    pub arch: Arch,
    /// Files that replace the definition's sources (a mutant, an edit).
    pub overlay: Overlay,
}

/// A kernel ready to boot and to build modules against.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub name: String,
    /// Cache key: identifies exactly this build.
    pub id: String,
    /// What modules built against this kernel depend on: kernels with the
    /// same value take the same .ko files (the fixture cache's key). A
    /// rebuild that changed only the kernel's own C files keeps it.
    pub module_abi: String,
    /// `uname -r` of the kernel.
    pub release: String,
    /// Upstream version, e.g. `6.12.117`.
    pub version: String,
    pub arch: Arch,
    /// What QEMU boots (`-kernel`): the architecture's image.
    pub image: PathBuf,
    /// Directory to pass as `make -C`.
    pub kbuild: PathBuf,
    pub config: PathBuf,
    /// Modules /init loads before anything else (see `modules`).
    pub boot_modules: Vec<PathBuf>,
    /// The source tree, for kernels built from source.
    pub source: Option<PathBuf>,
}

impl Kernel {
    /// Which livepatch behaviours this kernel has: from its source tree
    /// where it has one, else from its version.
    pub fn profile(&self) -> Result<behaviour::Profile> {
        let version = version::leading_version(&self.version)?;
        Ok(behaviour::Profile::new(&version, self.source.as_deref())
            .on_arch(&self.arch.record.kernel_arch))
    }
}

impl KernelSpec {
    pub fn load(file: &Path) -> Result<Self> {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("bad kernel file name {}", file.display()))?
            .to_string();
        let raw: KernelFile = crate::yaml::parse_file(file)?;
        let kernels_dir = file.parent().unwrap_or(Path::new("."));
        let arch = Arch::load(kernels_dir, raw.arch.as_deref().unwrap_or(arch::DEFAULT))
            .with_context(|| format!("{}: `arch`", file.display()))?;
        let build = raw.build;
        let from_source = |origin| KernelSource::FromSource {
            origin,
            build: build.clone(),
        };
        let mut origins = Vec::new();
        if let Some(prebuilt) = raw.debian_prebuilt {
            origins.push(("debian_prebuilt", KernelSource::DebianPrebuilt(prebuilt)));
        }
        if let Some(debian) = raw.debian_source {
            origins.push(("debian_source", from_source(source::Origin::Debian(debian))));
        }
        if let Some(tarball) = raw.tarball {
            origins.push(("tarball", from_source(source::Origin::Tarball(tarball))));
        }
        if let Some(tree) = raw.tree {
            origins.push(("tree", from_source(source::Origin::Tree(tree))));
        }
        let source = match origins.len() {
            1 => origins.pop().expect("one origin").1,
            0 => bail!(
                "{}: no source; expected one of debian_prebuilt, debian_source, tarball, tree",
                file.display()
            ),
            _ => bail!(
                "{}: more than one source ({}); expected exactly one",
                file.display(),
                origins
                    .iter()
                    .map(|(key, _)| *key)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if matches!(source, KernelSource::DebianPrebuilt(_))
            && (build.fragments.is_some() || build.patches.is_some())
        {
            bail!(
                "{}: `build` applies to kernels built from source, not to debian_prebuilt",
                file.display()
            );
        }
        Ok(Self {
            name,
            file: file.to_path_buf(),
            source,
            arch,
            overlay: Overlay::default(),
        })
    }

    /// The same definition with some source files replaced, named
    /// `NAME+label`. Only kernels built from source have files to replace.
    pub fn with_overlay(&self, label: &str, overlay: Overlay) -> Result<Self> {
        if self.is_prebuilt() {
            bail!("{} is prebuilt: it has no sources to change", self.name);
        }
        Ok(Self {
            name: format!("{}+{label}", self.definition()),
            overlay,
            ..self.clone()
        })
    }

    /// The definition's name (kernels/NAME.yaml), also for a spec with an
    /// overlay: it names the cached sources and the work directory.
    pub fn definition(&self) -> String {
        self.file
            .file_stem()
            .map_or_else(|| self.name.clone(), |s| s.to_string_lossy().into_owned())
    }

    /// The upstream version, known before anything is fetched or built:
    /// from the lock file, a tree's Makefile or a tarball's name; without a
    /// lock, a Debian kernel's series (`6.12`, or `5.10` from
    /// `linux-source-5.10`), so that applicability is decided the same way
    /// before and after the first fetch.
    pub fn version_hint(&self) -> Option<String> {
        match &self.source {
            KernelSource::FromSource {
                origin: source::Origin::Tree(tree),
                ..
            } => {
                let dir = self.file.parent()?.join(&tree.path);
                source::makefile_version(&dir.join("Makefile"))
            }
            KernelSource::FromSource {
                origin: source::Origin::Tarball(tarball),
                ..
            } => {
                let name = tarball.url.rsplit('/').next()?;
                let version = name.strip_prefix("linux-")?.split(".tar").next()?;
                version::parse_version(version)
                    .ok()
                    .map(|_| version.to_string())
            }
            KernelSource::DebianPrebuilt(prebuilt) => self
                .pinned_version()
                .or_else(|| Some(prebuilt.series.clone())),
            KernelSource::FromSource {
                origin: source::Origin::Debian(debian),
                ..
            } => self.pinned_version().or_else(|| {
                let series = debian.package.strip_prefix("linux-source-")?;
                version::parse_version(series)
                    .ok()
                    .map(|_| series.to_string())
            }),
        }
    }

    /// The upstream version of what the lock file pins, if there is one.
    fn pinned_version(&self) -> Option<String> {
        let lock = std::fs::read_to_string(self.lock_file()).ok()?;
        let pinned = lock
            .lines()
            .find_map(|line| line.split_once('=').map(|(_, v)| v))?;
        Some(pins::upstream_version(pinned.trim()))
    }

    /// What the kernel has, as far as its version hint tells (listing
    /// tests, before anything is fetched or built).
    /// A kernel with a patch series counts what the series' diffs add or
    /// remove.
    pub fn profile_hint(&self) -> Option<behaviour::Profile> {
        let version = version::parse_version(&self.version_hint()?).ok()?;
        let diffs: Vec<String> = self
            .series_patches()
            .unwrap_or_default()
            .iter()
            .map(|patch| String::from_utf8_lossy(&patch.text).into_owned())
            .collect();
        Some(
            behaviour::Profile::from_version(&version)
                .with_series(diffs.iter().map(String::as_str))
                .on_arch(&self.arch.record.kernel_arch),
        )
    }

    /// The patches of the definition's series, if it names one that reads.
    fn series_patches(&self) -> Option<Vec<series::Patch>> {
        let KernelSource::FromSource { build, .. } = &self.source else {
            return None;
        };
        let dir = self
            .file
            .parent()?
            .join("patches")
            .join(build.patches.as_ref()?);
        series::read(&dir).ok()
    }

    /// Prebuilt kernels have headers but no source tree.
    pub fn is_prebuilt(&self) -> bool {
        matches!(self.source, KernelSource::DebianPrebuilt(_))
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
        KernelSource::FromSource { .. } => {
            from_source::prepare(spec, cache, from_source::Mode::Build)
                .map(|kernel| kernel.expect("a kernel built from source"))
        }
    }
    .with_context(|| format!("kernel {}", spec.name))?;
    check_config(&kernel)?;
    if let Some(compiler) = debian::compiler(&kernel.kbuild) {
        crate::host::ensure(&[compiler], &cache.root().join("locks"))?;
    }
    Ok(kernel)
}

/// Build the kernel in its definition's work directory even if the cache
/// has it, so that later builds of small changes start from it.
pub fn prepare_work_dir(spec: &KernelSpec, cache: &Cache) -> Result<Kernel> {
    from_source::prepare(spec, cache, from_source::Mode::Seed)?
        .with_context(|| format!("{} is prebuilt: nothing to build", spec.name))
}

/// The kernel if the cache has it already built; nothing is fetched or
/// built (for listing tests). Prebuilt kernels give None.
pub fn cached(spec: &KernelSpec, cache: &Cache) -> Result<Option<Kernel>> {
    from_source::prepare(spec, cache, from_source::Mode::Peek)
}

/// A hash of each of `objects` (e.g. `kernel/livepatch/core.o`) as the
/// kernel's build in its definition's work directory makes them (built
/// there again if the work directory has moved on to another build).
pub fn built_objects(spec: &KernelSpec, cache: &Cache, objects: &[&str]) -> Result<Vec<String>> {
    from_source::built_objects(spec, cache, objects)
}

/// A discarded build, moved out of the cache's way; its files are
/// deleted when this is dropped (tens of thousands of links: a second or
/// more, which a caller may spend on another thread).
pub struct Discarded(#[allow(dead_code)] tempfile::TempDir);

/// Remove the published build of a kernel with replaced files (a
/// mutant's, which has a source tree of its own): nothing else refers to
/// it, and it is made again from its inputs if ever wanted.
pub fn discard_variant(cache: &Cache, kernel: &Kernel) -> Result<Discarded> {
    let builds = cache.kind_dir("builds")?;
    let own_tree = kernel.source.as_deref() == Some(kernel.kbuild.join("source").as_path());
    if !own_tree || kernel.kbuild.parent() != Some(builds.as_path()) {
        bail!(
            "{} is not a build with replaced files; it is kept",
            kernel.kbuild.display()
        );
    }
    let _lock = cache.lock_entry("builds", &kernel.id)?;
    let trash = tempfile::Builder::new()
        .prefix(".discarded-")
        .tempdir_in(&builds)?;
    std::fs::rename(&kernel.kbuild, trash.path().join("build"))
        .with_context(|| format!("cannot move {} away", kernel.kbuild.display()))?;
    Ok(Discarded(trash))
}

/// Options without which no scenario can run, on any architecture; each
/// record adds its own (`required_config`).
const REQUIRED_CONFIG: &[&str] = &[
    "CONFIG_LIVEPATCH=y",
    "CONFIG_MODULES=y",
    "CONFIG_MODULE_UNLOAD=y",
    "CONFIG_BLK_DEV_INITRD=y",
    "CONFIG_DEVTMPFS=y",
];

fn check_config(kernel: &Kernel) -> Result<()> {
    let config = std::fs::read_to_string(&kernel.config)
        .with_context(|| format!("cannot read {}", kernel.config.display()))?;
    let missing: Vec<&str> = REQUIRED_CONFIG
        .iter()
        .copied()
        .chain(
            kernel
                .arch
                .record
                .required_config
                .iter()
                .map(String::as_str),
        )
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
    wanted: &str,
    resolve: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if lock.exists() {
        return crate::yaml::parse_file(lock);
    }
    // Every process that would write this lock file, from any cache.
    let _guard = crate::cache::lock_dir(lock.parent().unwrap_or(Path::new(".")))?;
    if lock.exists() {
        return crate::yaml::parse_file(lock);
    }
    let resolved = resolve()?;
    let text = format!(
        "# What {wanted:?} resolved to; delete this file to move to a newer kernel.\n{}",
        serde_saphyr::to_string(&resolved)?
    );
    std::fs::write(lock, text).with_context(|| format!("cannot write {}", lock.display()))?;
    crate::event::emit(crate::event::Event::Pinned {
        what: wanted.to_string(),
        lock: lock.to_path_buf(),
    });
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_from(text: &str) -> Result<KernelSpec> {
        let tmp = tempfile::tempdir()?;
        let arch = tmp.path().join("arch");
        std::fs::create_dir(&arch)?;
        let records = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/arch");
        for entry in std::fs::read_dir(records)? {
            let entry = entry?;
            std::fs::copy(entry.path(), arch.join(entry.file_name()))?;
        }
        let file = tmp.path().join("k.yaml");
        std::fs::write(&file, text)?;
        KernelSpec::load(&file)
    }

    #[test]
    fn an_unknown_arch_is_named_with_the_file() {
        let err = format!(
            "{:#}",
            spec_from("tree: {path: /src}\narch: vax\n").unwrap_err()
        );
        assert!(err.contains("k.yaml: `arch`"), "{err}");
        assert!(err.contains("no architecture named \"vax\""), "{err}");
        let spec = spec_from("tree: {path: /src}\n").unwrap();
        assert_eq!(spec.arch.name, crate::arch::DEFAULT);
    }

    #[test]
    fn exactly_one_source() {
        let two = "tree: {path: /src}\ntarball: {url: x.tar.xz, sha256: ab}\n";
        let err = format!("{:#}", spec_from(two).unwrap_err());
        assert!(
            err.ends_with("more than one source (tarball, tree); expected exactly one"),
            "{err}"
        );
        let none = format!("{:#}", spec_from("build: {patches: fix}\n").unwrap_err());
        assert!(
            none.contains("no source; expected one of debian_prebuilt"),
            "{none}"
        );
    }

    #[test]
    fn prebuilt_kernels_take_no_build_options() {
        let text = "debian_prebuilt: {suites: [bookworm], series: '6.1', flavour: cloud-amd64}\nbuild: {patches: x}\n";
        assert!(format!("{:#}", spec_from(text).unwrap_err())
            .contains("`build` applies to kernels built from source"));
    }

    #[test]
    fn without_a_lock_a_debian_kernel_is_known_by_its_series() {
        let source = spec_from("debian_source: {suites: [sid], package: linux-source-7.2}\n");
        assert_eq!(source.unwrap().version_hint().as_deref(), Some("7.2"));
        let prebuilt = spec_from(
            "debian_prebuilt: {suites: [bookworm], series: '6.12', flavour: cloud-amd64}\n",
        );
        assert_eq!(prebuilt.unwrap().version_hint().as_deref(), Some("6.12"));
    }

    #[test]
    fn every_shipped_kernel_definition_loads_and_knows_its_version() {
        let project = Project::at(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        for spec in list(&project).unwrap() {
            let version = spec
                .version_hint()
                .unwrap_or_else(|| panic!("{}: no version", spec.name));
            version::parse_version(&version).unwrap();
        }
    }
}
