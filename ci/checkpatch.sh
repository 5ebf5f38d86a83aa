#!/usr/bin/env bash
# Run the kernel's checkpatch.pl on every fixture source, hand-written or
# generated. checkpatch comes from a kernel source tree: $CHECKPATCH, or
# the newest one the harness has unpacked (ci/build-kernels.sh does that).
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${KLP_HARNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/klp-harness}
checkpatch=${CHECKPATCH:-$(ls -d "$cache"/sources/*/linux/scripts/checkpatch.pl 2>/dev/null | sort -V | tail -n 1)}
if [ ! -f "$checkpatch" ]; then
	echo "no checkpatch.pl: set CHECKPATCH or run ci/build-kernels.sh first" >&2
	exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo run --release --quiet -- fixture sources "$out"

status=0
for file in "$out"/*/*.c "$out"/*/*.h; do
	if ! perl "$checkpatch" --no-tree --quiet -f "$file"; then
		echo "checkpatch: ${file#"$out"/} (fixtures/)" >&2
		status=1
	fi
done
[ $status -eq 0 ] && echo "checkpatch: $(ls "$out"/*/*.[ch] | wc -l) fixture files clean"
exit $status
