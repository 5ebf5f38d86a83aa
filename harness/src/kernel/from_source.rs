//! Kernels built from source: sources (fetched, unpacked, patched), the
//! configuration fragments, and the build in the definition's work
//! directory (`incremental`).

use super::{incremental, series, source, BuildOptions, Kernel, KernelSource, KernelSpec};
use crate::cache::Cache;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From the cache, or fetched and built.
    Build,
    /// Built in the work directory even if the cache has it.
    Seed,
    /// Only if the cache has it; nothing is fetched or built.
    Peek,
}

/// The definition's inputs besides its sources.
struct Inputs {
    series: Option<source::Series>,
    fragments: Vec<PathBuf>,
}

fn inputs(spec: &KernelSpec, options: &BuildOptions) -> Result<Inputs> {
    let kernels_dir = kernels_dir(spec);
    let series = match &options.patches {
        Some(name) => Some(source::Series {
            name: name.clone(),
            patches: series::read(&kernels_dir.join("patches").join(name))?,
        }),
        None => None,
    };
    let fragments = match &options.fragments {
        Some(names) => names
            .iter()
            .map(|n| kernels_dir.join("config").join(format!("{n}.config")))
            .collect(),
        None => sorted_files(&kernels_dir.join("config"), "config")?,
    };
    for fragment in &fragments {
        if !fragment.is_file() {
            bail!("config fragment {} does not exist", fragment.display());
        }
    }
    // The architecture's own fragment goes last: its console and unwinder.
    let mut fragments = fragments;
    fragments.push(spec.arch.fragment.clone());
    Ok(Inputs { series, fragments })
}

fn kernels_dir(spec: &KernelSpec) -> &Path {
    spec.file.parent().unwrap_or(Path::new("."))
}

/// None for a prebuilt kernel, or in `Peek` mode for one not built yet.
pub fn prepare(spec: &KernelSpec, cache: &Cache, mode: Mode) -> Result<Option<Kernel>> {
    let KernelSource::FromSource { origin, build } = &spec.source else {
        return Ok(None);
    };
    let inputs = inputs(spec, build)?;
    let definition = spec.definition();
    let lock = spec.lock_file();
    let sources = if mode == Mode::Peek {
        let found = source::cached(
            &definition,
            origin,
            inputs.series.as_ref(),
            kernels_dir(spec),
            &lock,
            cache,
        )?;
        match found {
            Some(sources) => sources,
            None => return Ok(None),
        }
    } else {
        let mut tools = crate::host::KERNEL_BUILD_TOOLS.to_vec();
        tools.push(crate::host::compiler_for(&spec.arch));
        crate::host::ensure(&tools, &cache.root().join("locks"))?;
        source::prepare(
            &definition,
            origin,
            inputs.series.as_ref(),
            kernels_dir(spec),
            &lock,
            cache,
        )?
    };
    let request = incremental::Request {
        definition: &definition,
        sources: &sources,
        overlay: &spec.overlay,
        fragments: &inputs.fragments,
        arch: &spec.arch,
    };
    let built = match mode {
        Mode::Build => incremental::build(cache, &request)?,
        Mode::Seed => incremental::seed(cache, &request)?,
        Mode::Peek => match incremental::cached(cache, &request)? {
            Some(built) => built,
            None => return Ok(None),
        },
    };
    Ok(Some(Kernel {
        name: spec.name.clone(),
        id: built.key.clone(),
        module_abi: built.module_abi.clone(),
        release: built.release.clone(),
        version: built.version.clone(),
        arch: spec.arch.clone(),
        image: built.dir.join(&spec.arch.record.image.path),
        config: built.dir.join(".config"),
        kbuild: built.dir.clone(),
        boot_modules: Vec::new(),
        source: Some(built.source.unwrap_or_else(|| sources.tree.clone())),
    }))
}

pub fn built_objects(spec: &KernelSpec, cache: &Cache, objects: &[&str]) -> Result<Vec<String>> {
    let KernelSource::FromSource { origin, build } = &spec.source else {
        bail!("{} is prebuilt: it has no sources to compile", spec.name);
    };
    let inputs = inputs(spec, build)?;
    let definition = spec.definition();
    let sources = source::prepare(
        &definition,
        origin,
        inputs.series.as_ref(),
        kernels_dir(spec),
        &spec.lock_file(),
        cache,
    )?;
    let request = incremental::Request {
        definition: &definition,
        sources: &sources,
        overlay: &spec.overlay,
        fragments: &inputs.fragments,
        arch: &spec.arch,
    };
    incremental::built_objects(cache, &request, objects)
        .with_context(|| format!("kernel {}", spec.name))
}

/// Files with this extension in `dir`, by name.
fn sorted_files(dir: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == extension) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
