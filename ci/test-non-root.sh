#!/usr/bin/env bash
# A small part of the suite as an unprivileged user, from an empty cache of
# its own: one scenario on a prebuilt Debian kernel and on a kernel built
# from source, from the apt list update and the downloads to the verdicts.
# Whatever only works as root (apt, /dev/kvm, the private QEMU, files the
# cache writes) fails here. As root (CI machines) it runs as the user
# klp-nonroot, created if missing; as any other user it runs as that user.
# Nothing is shared with the cache of earlier runs, so this costs a
# download of about 200 MB and one kernel build (3-5 min on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=rules/r02-cumulative/equal-version
kernels=${KLP_NON_ROOT_KERNELS:-debian-6.12,src-6.12}

cargo build --release --quiet
work=$(mktemp -d /tmp/klp-non-root.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The user gets its own copy of the project and the binary: the checkout
# may not be readable to it.
mkdir -p "$work/project" "$work/cache" "$work/out" "$work/home"
cp -r kernels scenarios fixtures "$work/project/"
cp target/release/klp-harness "$work/"

as_user=()
if [ "$(id -u)" -eq 0 ]; then
	user=klp-nonroot
	id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
	chown -R "$user:" "$work"
	chmod 755 "$work"
	as_user=(runuser -u "$user" --)
fi

echo "non-root: $scenario on $kernels as $(${as_user[@]+"${as_user[@]}"} id -un), cache $work/cache (empty)"
status=0
${as_user[@]+"${as_user[@]}"} env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work/home" \
	KLP_HARNESS_ROOT="$work/project" KLP_HARNESS_CACHE="$work/cache" \
	KLP_HARNESS_ARTIFACTS="$work/out" \
	"$work/klp-harness" run --kernel "$kernels" "$scenario" || status=$?
if [ $status -ne 0 ]; then
	echo "non-root run failed ($status); logs:" >&2
	find "$work/out" -name '*.log' -newer "$work/klp-harness" -exec sh -c 'echo "== $1"; tail -n 20 "$1"' sh {} \; >&2
	exit $status
fi
# Every file the run wrote belongs to the user.
if [ ${#as_user[@]} -gt 0 ] && [ -n "$(find "$work/cache" "$work/out" -not -user "$user" -print -quit)" ]; then
	echo "non-root: files not owned by $user:" >&2
	find "$work/cache" "$work/out" -not -user "$user" >&2
	exit 1
fi
echo "non-root: passed; the cache holds $(du -sh "$work/cache" | cut -f1);" \
	"KVM probe: $(grep -h -A1 "^QEMU's stderr" "$work"/cache/probe/*.log 2>/dev/null | tail -n 1)"
