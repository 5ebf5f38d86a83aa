//! A prepared kernel ──> what `kernel show` prints: its version, config
//! hash, cache paths, livepatch sysfs attributes and behaviours.

use crate::cache::ContentHash;
use crate::kernel::{behaviour::BEHAVIOURS, Kernel};
use anyhow::Result;
use std::fmt::Write;

pub fn show(kernel: &Kernel) -> Result<String> {
    let config = ContentHash::new()
        .add_file("config", &kernel.config)?
        .finish();
    let profile = kernel.profile()?;
    let mut out = String::new();
    writeln!(out, "name:        {}", kernel.name)?;
    writeln!(out, "version:     {}", kernel.version)?;
    writeln!(out, "release:     {}", kernel.release)?;
    writeln!(out, "config hash: {config}")?;
    writeln!(out, "cache:       {}", kernel.id)?;
    writeln!(out, "image:       {}", kernel.image.display())?;
    writeln!(out, "kbuild:      {}", kernel.kbuild.display())?;
    writeln!(out, "config:      {}", kernel.config.display())?;
    writeln!(out, "livepatch sysfs: {}", profile.attributes().join(", "))?;
    writeln!(out, "livepatch behaviours:")?;
    for behaviour in BEHAVIOURS {
        let has = if profile.has(behaviour.id) {
            "yes"
        } else {
            "no "
        };
        let basis = profile.basis(behaviour.id).map(ToString::to_string);
        writeln!(
            out,
            "  {has} {:<40} since {:<5} {}",
            behaviour.id,
            behaviour
                .since
                .or(behaviour.proposed.map(|_| "series"))
                .unwrap_or("-"),
            basis.unwrap_or_default()
        )?;
    }
    Ok(out)
}
