#!/usr/bin/env bash
# The kernels of kernels/*.yaml as a JSON list, for the GitHub Actions
# matrix: the directory is the one place where kernels are listed.
set -euo pipefail
cd "$(dirname "$0")/.."
names=()
for definition in kernels/*.yaml; do
	name=$(basename "$definition" .yaml)
	names+=("\"$name\"")
done
(IFS=,; echo "[${names[*]}]")
