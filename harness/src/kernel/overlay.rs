//! Files that replace (or add to) a kernel source tree's: a mutant, or an
//! edit being tried, without a copy of the whole tree.

use crate::cache::ContentHash;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overlay {
    files: Arc<BTreeMap<PathBuf, Vec<u8>>>,
}

impl Overlay {
    /// Paths relative to the tree's top.
    pub fn from_files<P: Into<PathBuf>>(files: impl IntoIterator<Item = (P, Vec<u8>)>) -> Self {
        Self {
            files: Arc::new(files.into_iter().map(|(p, b)| (p.into(), b)).collect()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn get(&self, path: &Path) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    pub fn files(&self) -> impl Iterator<Item = (&Path, &[u8])> {
        self.files.iter().map(|(p, b)| (p.as_path(), b.as_slice()))
    }

    /// Identifies the replaced files and their contents.
    pub fn hash(&self) -> String {
        let mut hash = ContentHash::new();
        for (path, bytes) in self.files() {
            hash.add(&path.display().to_string(), bytes);
        }
        hash.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_follows_paths_and_contents() {
        let a = Overlay::from_files([("k/a.c", b"x".to_vec())]);
        let b = Overlay::from_files([("k/b.c", b"x".to_vec())]);
        let c = Overlay::from_files([("k/a.c", b"y".to_vec())]);
        assert_ne!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        assert_eq!(a.hash(), a.clone().hash());
    }
}
