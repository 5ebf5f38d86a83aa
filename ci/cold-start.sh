#!/usr/bin/env bash
# The README's test command as a newcomer meets it: from an empty cache
# (a new KLP_HARNESS_CACHE), two tests at a time as nextest's default
# profile runs them. Its default set holds every fault test and the
# scenario tests of the default kernel and of one kernel built from
# source, so every kind of cache entry is made here by racing tests, not
# found ready. Prints how long it took; the cache is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=$(mktemp -d /tmp/klp-cold-cache.XXXXXX)
trap 'rm -rf "$cache"' EXIT
started=$(date +%s)
status=0
KLP_HARNESS_CACHE="$cache" cargo nextest run --no-fail-fast "$@" || status=$?
echo "cold start: cargo nextest run from an empty cache took $(($(date +%s) - started)) s" \
	"(exit $status); the cache grew to $(du -sh "$cache" | cut -f1)"
exit $status
