//! What a kernel version offers: the livepatch sysfs attributes
//! (Documentation/ABI/testing/sysfs-kernel-livepatch), for deciding which
//! scenarios apply.

use anyhow::{bail, Result};
use std::cmp::Ordering;

/// Each livepatch sysfs attribute, with the release that added it.
pub const SYSFS_ATTRIBUTES: &[(&str, &str)] = &[
    ("enabled", "4.0"),
    ("transition", "4.12"),
    ("force", "4.12"),
    ("patched", "6.1"),
    ("replace", "6.11"),
    ("stack_order", "6.14"),
];

/// `6.12.117` ──> [6, 12, 117]; missing parts compare as 0.
pub fn parse_version(text: &str) -> Result<Vec<u32>> {
    let parts: Result<Vec<u32>, _> = text.split('.').map(str::parse).collect();
    match parts {
        Ok(parts) if !parts.is_empty() => Ok(parts),
        _ => bail!("{text:?} is not a kernel version such as 6.12 or 5.10.240"),
    }
}

pub fn compare(a: &[u32], b: &[u32]) -> Ordering {
    let len = a.len().max(b.len());
    (0..len)
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|order| order.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// The release that added `attribute`, if it is a livepatch sysfs attribute.
pub fn attribute_since(attribute: &str) -> Option<&'static str> {
    SYSFS_ATTRIBUTES
        .iter()
        .find(|(name, _)| *name == attribute)
        .map(|(_, since)| *since)
}

/// The livepatch sysfs attributes a kernel of this version has.
pub fn attributes_of(version: &[u32]) -> Vec<&'static str> {
    SYSFS_ATTRIBUTES
        .iter()
        .filter(|(_, since)| compare(version, &parse_version(since).expect("valid table")).is_ge())
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_follow_the_version() {
        assert_eq!(
            attributes_of(&[5, 10, 240]),
            ["enabled", "transition", "force"]
        );
        assert_eq!(
            attributes_of(&[6, 12]),
            ["enabled", "transition", "force", "patched", "replace"]
        );
        assert!(attributes_of(&[7, 2]).contains(&"stack_order"));
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(compare(&[6, 9], &[6, 11]).is_lt());
        assert!(compare(&[6, 1], &[6, 1, 0]).is_eq());
        assert!(parse_version("6.x").is_err());
    }
}
