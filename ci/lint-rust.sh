#!/usr/bin/env bash
# Formatting and lints (docs/testing.md): rustfmt's layout, and clippy
# with every warning an error.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
