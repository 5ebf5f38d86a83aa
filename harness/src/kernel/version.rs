//! Kernel versions: `6.12.117` read as numbers, and compared.

use anyhow::{bail, Result};
use std::cmp::Ordering;

/// `6.12.117` ──> [6, 12, 117]; missing parts compare as 0.
pub fn parse_version(text: &str) -> Result<Vec<u32>> {
    let parts: Result<Vec<u32>, _> = text.split('.').map(str::parse).collect();
    match parts {
        Ok(parts) if !parts.is_empty() => Ok(parts),
        _ => bail!("{text:?} is not a kernel version such as 6.12 or 5.10.240"),
    }
}

/// The version a release string starts with: `6.12.57+deb12-cloud-amd64`
/// ──> [6, 12, 57].
pub fn leading_version(release: &str) -> Result<Vec<u32>> {
    let numeric = release
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or_default();
    parse_version(numeric.trim_end_matches('.'))
}

pub fn compare(a: &[u32], b: &[u32]) -> Ordering {
    let len = a.len().max(b.len());
    (0..len)
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|order| order.is_ne())
        .unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_releases_start_with_a_version() {
        assert_eq!(
            leading_version("6.12.57+deb12-cloud-amd64").unwrap(),
            [6, 12, 57]
        );
        assert_eq!(leading_version("5.10.240").unwrap(), [5, 10, 240]);
        assert!(leading_version("linux").is_err());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(compare(&[6, 9], &[6, 11]).is_lt());
        assert!(compare(&[6, 1], &[6, 1, 0]).is_eq());
        assert!(parse_version("6.x").is_err());
    }
}
