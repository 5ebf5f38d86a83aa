//! Reading YAML files into typed values, with errors that name file:line:column.

use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

pub use serde_saphyr::{Location, Spanned};

/// A position in a source file, printed as `file:line:column`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub fn new(file: &Path, location: &Location) -> Self {
        Self {
            file: file.to_path_buf(),
            line: location.line(),
            column: location.column(),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

pub fn parse_str<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|err| {
        let position = err
            .location()
            .map(|location| format!("{}: ", Position::new(file, &location)))
            .unwrap_or_else(|| format!("{}: ", file.display()));
        anyhow!("{position}{}", strip_location(&err.to_string()))
    })
}

pub fn parse_file<T: DeserializeOwned>(file: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    parse_str(file, &text)
}

/// serde-saphyr writes "error: line L column C: message"; the position is
/// already printed in front, in the file:line:column form editors understand.
fn strip_location(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    let rest = first.strip_prefix("error: ").unwrap_or(first);
    let rest = match rest.strip_prefix("line ") {
        Some(positioned) => positioned
            .split_once(": ")
            .map_or(rest, |(_, message)| message),
        None => rest,
    };
    rest.replace("expected sequence start", "expected a list")
        .replace("expected mapping start", "expected a mapping (key: value)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_is_printed_once_in_front() {
        assert_eq!(
            strip_location("error: line 5 column 5: unknown field `bogus`, expected one of a, b"),
            "unknown field `bogus`, expected one of a, b"
        );
        assert_eq!(
            strip_location("error: line 2 column 11: expected sequence start"),
            "expected a list"
        );
    }
}
