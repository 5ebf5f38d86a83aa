//! Kernels built from source are built in their definition's work
//! directory (`worktree`): the first build there is a full one, every
//! later one (other patches, an edited tree, a mutant) lets kbuild
//! rebuild what changed. The result is never the work directory itself:
//! a finished build is published under the key of its inputs (recipe,
//! sources, replaced files, compiler, fragments) like any cache entry,
//! atomically, with what booting and building modules need (the image,
//! .config, Module.symvers, generated headers, host programs), not the
//! object files. A build that fails or is interrupted publishes nothing,
//! and every build published before stays as it was.

use super::build::{self, Built, Log, MARKER};
use super::overlay::Overlay;
use super::source::Sources;
use super::worktree::{self, link_tree, Good, Target, WorkDir};
use crate::arch::Arch;
use crate::cache::{Cache, ContentHash};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// What to build.
pub struct Request<'a> {
    /// The kernel definition (kernels/NAME.yaml): one work directory each.
    pub definition: &'a str,
    pub sources: &'a Sources,
    /// Files replacing the sources' (empty for the definition as it is).
    pub overlay: &'a Overlay,
    pub fragments: &'a [PathBuf],
    pub arch: &'a Arch,
}

impl Request<'_> {
    pub fn key(&self) -> Result<String> {
        let identity = if self.overlay.is_empty() {
            self.sources.identity.clone()
        } else {
            format!("{} overlay:{}", self.sources.identity, self.overlay.hash())
        };
        build::key(self.definition, &identity, self.fragments, self.arch)
    }

    fn target(&self) -> Target<'_> {
        Target {
            tree: &self.sources.tree,
            identity: &self.sources.identity,
            immutable: self.sources.immutable,
            overlay: self.overlay,
        }
    }

    /// Where the build is published, and its key.
    fn published(&self, cache: &Cache) -> Result<(PathBuf, String)> {
        let key = self.key()?;
        Ok((cache.kind_dir("builds")?.join(&key), key))
    }
}

/// Whether the published build in `dir` can be used: it finished (its
/// marker), and the source tree its Makefile includes is still there. A
/// build refers to its definition's sources by path; if they are gone
/// (removed by hand, or the cache that held them deleted) it is dropped
/// and made again.
fn usable(dir: &Path) -> std::result::Result<(), String> {
    if !dir.join(MARKER).exists() {
        return Err("a kernel build that did not finish".to_string());
    }
    let source = dir.join(SOURCE);
    if !source.join("Makefile").is_file() {
        let target = fs::read_link(&source).unwrap_or(source);
        return Err(format!("its source tree {} is gone", target.display()));
    }
    Ok(())
}

/// The published build of `request`, if there is a usable one.
fn published_build(cache: &Cache, request: &Request) -> Result<Option<Built>> {
    let (dir, key) = request.published(cache)?;
    if usable(&dir).is_err() {
        return Ok(None);
    }
    crate::cache::touch(&dir);
    Built::read(dir, key).map(Some)
}

/// The build of `request`: from the cache, or made in the work directory
/// and published.
pub fn build(cache: &Cache, request: &Request) -> Result<Built> {
    if let Some(built) = published_build(cache, request)? {
        return Ok(built);
    }
    let mut work = WorkDir::open(
        cache,
        request.definition,
        &build::compiler_version(request.arch)?,
    )?;
    if let Some(built) = published_build(cache, request)? {
        return Ok(built);
    }
    let key = request.key()?;
    let started = std::time::Instant::now();
    make(&mut work, request).map_err(|err| cache.explain_failure(err, &format!("builds/{key}")))?;
    let (abi, good) = finished(&work, &key, None)?;
    let built = publish(cache, &work, request, &key, &abi)?;
    work.finish(Some(good))?;
    cache.journal(&format!(
        "compiled builds/{key} in work/{} in {:.1} s",
        request.definition,
        started.elapsed().as_secs_f64()
    ));
    Ok(built)
}

/// The build of `request` if the cache has it.
pub fn cached(cache: &Cache, request: &Request) -> Result<Option<Built>> {
    published_build(cache, request)
}

/// Make the work directory hold a finished build of `request` (building
/// it there even if the cache has it already), so that builds of small
/// changes to it start from there.
pub fn seed(cache: &Cache, request: &Request) -> Result<Built> {
    let mut work = WorkDir::open(
        cache,
        request.definition,
        &build::compiler_version(request.arch)?,
    )?;
    seed_locked(cache, request, &mut work)
}

fn seed_locked(cache: &Cache, request: &Request, work: &mut WorkDir) -> Result<Built> {
    let key = request.key()?;
    let published = published_build(cache, request)?;
    if work.good().is_some_and(|good| good.key == key) && work.changed_since_good().is_empty() {
        if let Some(built) = published {
            return Ok(built);
        }
    }
    make(work, request)?;
    match published {
        // The same inputs, so the same module ABI as the published build.
        Some(built) => {
            let (_, good) = finished(work, &key, Some(&built.module_abi))?;
            work.finish(Some(good))?;
            Ok(built)
        }
        None => {
            let (abi, good) = finished(work, &key, None)?;
            let built = publish(cache, work, request, &key, &abi)?;
            work.finish(Some(good))?;
            Ok(built)
        }
    }
}

/// A hash of each of `objects` (paths of .o files in the build
/// directory) as `request`'s build makes them: whether a change compiled
/// to other code. The work directory is brought back to that build first
/// if another one (another process's) took its place.
pub fn built_objects(cache: &Cache, request: &Request, objects: &[&str]) -> Result<Vec<String>> {
    let mut work = WorkDir::open(
        cache,
        request.definition,
        &build::compiler_version(request.arch)?,
    )?;
    seed_locked(cache, request, &mut work)?;
    objects
        .iter()
        .map(|object| {
            Ok(ContentHash::new()
                .add_file("object", &work.build().join(object))?
                .finish())
        })
        .collect()
}

/// Sync, configure if needed, `make <image> modules`. The directory is
/// busy until `finish`; a failure leaves it consistent (make removes what
/// it could not finish) and marked clean.
fn make(work: &mut WorkDir, request: &Request) -> Result<()> {
    let changed = work.sync(&request.target())?;
    let result = (|| {
        configure_if_needed(work, request, &changed)?;
        let mut log = Log::create(work.build().join("build.log"))?;
        build::compile(
            request.definition,
            &work.src(),
            &work.build(),
            request.arch,
            &mut log,
        )
    })();
    if result.is_err() {
        work.finish(None)?;
    }
    result
}

fn configure_if_needed(work: &mut WorkDir, request: &Request, changed: &[PathBuf]) -> Result<()> {
    let mut inputs = ContentHash::new();
    for fragment in request.fragments {
        inputs.add_file(&fragment.display().to_string(), fragment)?;
    }
    let inputs = inputs.finish();
    let since_good: Vec<PathBuf> = work
        .changed_since_good()
        .iter()
        .cloned()
        .chain(changed.iter().cloned())
        .collect();
    if work.needs_config(&inputs, &since_good) {
        let mut log = Log::create(work.build().join("config.log"))?;
        build::configure(
            &work.src(),
            &work.build(),
            request.fragments,
            request.arch,
            &mut log,
        )?;
        work.configured(&inputs)?;
    }
    Ok(())
}

/// The module ABI of the build just finished in `work`, and what the work
/// directory remembers of it. Modules built against the previous build
/// serve this one too if only kernel C files changed and neither the
/// exported symbols nor the configuration did.
fn finished(work: &WorkDir, key: &str, known_abi: Option<&str>) -> Result<(String, Good)> {
    let hash = |name: &str| -> Result<String> {
        Ok(ContentHash::new()
            .add_file(name, &work.build().join(name))?
            .finish())
    };
    let (symvers, config) = (hash("Module.symvers")?, hash(".config")?);
    let abi = match (known_abi, work.good()) {
        (Some(abi), _) => abi.to_string(),
        (None, Some(good))
            if good.symvers == symvers
                && good.config == config
                && work
                    .changed_since_good()
                    .iter()
                    .all(|path| worktree::module_neutral(path)) =>
        {
            good.module_abi.clone()
        }
        _ => key.to_string(),
    };
    let good = Good {
        key: key.to_string(),
        module_abi: abi.clone(),
        symvers,
        config,
    };
    Ok((abi, good))
}

/// Copy what a finished build's users need into the cache under `key`.
fn publish(
    cache: &Cache,
    work: &WorkDir,
    request: &Request,
    key: &str,
    abi: &str,
) -> Result<Built> {
    let release = build::query(&work.src(), &work.build(), "kernelrelease", request.arch)?;
    let version = build::query(&work.src(), &work.build(), "kernelversion", request.arch)?;
    let final_dir = cache.kind_dir("builds")?.join(key);
    // An unusable directory (what an earlier, in-place build left when it
    // was interrupted, or a build whose sources are gone) is replaced.
    let no_seal = |_: &Path| false;
    cache.checked_entry("builds", key, no_seal, usable, |staging| {
        copy_outputs(&work.build(), staging, &request.arch.record.image.path)?;
        // Replaced files need a tree of their own; links cost no data.
        let (source, own) = if request.overlay.is_empty() {
            (request.sources.tree.clone(), false)
        } else {
            link_tree(&work.src(), &staging.join(SOURCE))?;
            (final_dir.join(SOURCE), true)
        };
        fs::write(
            staging.join("Makefile"),
            // As the kernel's own mkmakefile writes it: from 7.x the top
            // Makefile takes the output directory from KBUILD_OUTPUT only.
            format!(
                "# The tree this build was made from (published by klp-harness)\n\
                 export KBUILD_OUTPUT = {}\ninclude {}/Makefile\n",
                final_dir.display(),
                source.display()
            ),
        )?;
        if !own {
            std::os::unix::fs::symlink(&source, staging.join(SOURCE))?;
        }
        fs::write(
            staging.join(MARKER),
            Built::marker(&release, &version, own.then_some(source.as_path()), abi),
        )?;
        Ok(())
    })?;
    Built::read(final_dir, key.to_string())
}

/// Where a published build keeps (or links to) its source tree.
const SOURCE: &str = "source";

/// Whether a build output is needed after the build: object files,
/// archives and the intermediate links of vmlinux are not (modules are
/// built against headers, Module.symvers and the host programs). The
/// bootable `image` is, even where it is vmlinux itself.
fn is_output_kept(relative: &Path, image: &str) -> bool {
    if relative == Path::new(image) {
        return true;
    }
    let name = relative
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // Written anew by `publish`.
    if relative.parent() == Some(Path::new("")) && (name == "Makefile" || name == SOURCE) {
        return false;
    }
    let object = [".o", ".a", ".ko", ".cmd", ".d", ".mod.c"]
        .iter()
        .any(|suffix| name.ends_with(suffix));
    let intermediate = name.starts_with(".tmp_")
        || name.starts_with(".vmlinux")
        || name.starts_with("vmlinux")
        || name == "setup.elf";
    !(object || intermediate)
}

fn copy_outputs(build: &Path, to: &Path, image: &str) -> Result<()> {
    for entry in WalkDir::new(build).min_depth(1) {
        let entry = entry?;
        let relative = entry.path().strip_prefix(build)?;
        let there = to.join(relative);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&there)?;
        } else if is_output_kept(relative, image) {
            if entry.file_type().is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(entry.path())?, &there)?;
            } else {
                fs::copy(entry.path(), &there)
                    .with_context(|| format!("cannot copy {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_link_intermediates_are_not_published() {
        for dropped in [
            "kernel/livepatch/core.o",
            "kernel/built-in.a",
            "vmlinux",
            "vmlinux.o",
            ".tmp_vmlinux.kallsyms1",
            "arch/x86/boot/compressed/vmlinux.bin",
            "kernel/livepatch/.core.o.cmd",
            "Makefile",
            "source",
        ] {
            assert!(
                !is_output_kept(Path::new(dropped), BZIMAGE),
                "{dropped} is kept"
            );
        }
        for kept in [
            "arch/x86/boot/bzImage",
            ".config",
            "Module.symvers",
            "System.map",
            "build.log",
            "include/generated/autoconf.h",
            "scripts/mod/modpost",
            "scripts/module.lds",
            "tools/objtool/objtool",
            "scripts/Makefile",
        ] {
            assert!(
                is_output_kept(Path::new(kept), BZIMAGE),
                "{kept} is dropped"
            );
        }
        assert!(is_output_kept(Path::new("vmlinux"), "vmlinux"));
    }

    const BZIMAGE: &str = "arch/x86/boot/bzImage";
}
