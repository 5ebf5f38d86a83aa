#!/usr/bin/env bash
# Fetch or build every kernel of kernels/ (or the ones named) into the
# cache, one at a time, so that the tests that follow only boot them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
if [ $# -eq 0 ]; then
	set -- all
fi
for kernel in "$@"; do
	target/release/klp-harness kernel build "$kernel"
done
