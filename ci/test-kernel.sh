#!/usr/bin/env bash
# What one GitHub Actions matrix job does, runnable the same way here:
# build (or fetch) one kernel, then run every test on it with the ci
# profile, which writes target/nextest/ci/junit.xml.
set -euo pipefail
cd "$(dirname "$0")/.."
kernel=${1:?usage: ci/test-kernel.sh KERNEL (one of: $(ci/matrix.sh))}
[ -f "kernels/$kernel.yaml" ] || { echo "no kernels/$kernel.yaml" >&2; exit 2; }
ci/build-kernels.sh "$kernel"
# Tests are named <scenario>::<kernel>.
cargo nextest run --profile ci -E "test(/::${kernel}\$/)"
