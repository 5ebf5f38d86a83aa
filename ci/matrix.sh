#!/usr/bin/env bash
# The kernels of kernels/*.yaml as a JSON list, for the GitHub Actions
# matrix: the directory is the one place where kernels are listed. Names
# are sorted bytewise, as the harness lists them (a glob sorts by locale).
set -euo pipefail
cd "$(dirname "$0")/.."
names=()
while read -r name; do
	names+=("\"$name\"")
done < <(for definition in kernels/*.yaml; do basename "$definition" .yaml; done | LC_ALL=C sort)
(IFS=,; echo "[${names[*]}]")
