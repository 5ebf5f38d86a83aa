//! Where the project's data lives: kernels/, fixtures/, scenarios/.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// A path as messages show it: relative to the current directory when it
/// lies inside it, so that output does not depend on where a checkout is.
pub fn shown_path(path: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    relative.as_deref().unwrap_or(path).display().to_string()
}

#[derive(Clone, Debug)]
pub struct Project {
    root: PathBuf,
}

impl Project {
    /// `$KLP_HARNESS_ROOT`, else the nearest directory upwards from the
    /// current one that has both `kernels/` and `scenarios/`, else the
    /// checkout this binary was built from.
    pub fn locate() -> Result<Self> {
        if let Some(root) = &crate::settings::load()?.root {
            return Self::at(root.clone());
        }
        let cwd = std::env::current_dir()?;
        let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        cwd.ancestors()
            .chain(std::iter::once(built_from.as_path()))
            .find(|dir| dir.join("kernels").is_dir() && dir.join("scenarios").is_dir())
            .map(|dir| Self::at(dir.to_path_buf()))
            .unwrap_or_else(|| bail!("no kernels/ and scenarios/ found above {}", cwd.display()))
    }

    pub fn at(root: PathBuf) -> Result<Self> {
        let root = root.canonicalize().unwrap_or(root);
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kernels_dir(&self) -> PathBuf {
        self.root.join("kernels")
    }

    pub fn fixtures_dir(&self) -> PathBuf {
        self.root.join("fixtures")
    }

    pub fn scenarios_dir(&self) -> PathBuf {
        self.root.join("scenarios")
    }

    /// Where runs and explorations keep their logs: `$KLP_HARNESS_ARTIFACTS`,
    /// else target/klp-harness in the checkout.
    pub fn output_dir(&self) -> PathBuf {
        crate::settings::get()
            .artifacts
            .clone()
            .unwrap_or_else(|| self.root.join("target/klp-harness"))
    }
}
