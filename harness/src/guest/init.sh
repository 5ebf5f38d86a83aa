#!/bin/busybox sh
# /init of the test guest: mount the pseudo file systems, then serve a
# shell to the harness on the virtio port named klp.control. ttyS0 stays
# the kernel's console, so kernel messages never mix with command output.
/bin/busybox mount -t proc proc /proc
read -r uptime _ < /proc/uptime
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "klp-harness: /init started at uptime $uptime" > /dev/kmsg
# Modules the kernel does not build in, dependencies first.
for module in /boot-modules/*.ko; do
	[ -e "$module" ] && insmod "$module"
done
# Ports appear as their device is probed: wait for ours, at most 5 s.
tries=0
while [ -z "$control" ] && [ $tries -lt 500 ]; do
	for port in /sys/class/virtio-ports/*; do
		[ -e "$port/name" ] && [ "$(cat "$port/name")" = klp.control ] &&
			control=/dev/${port##*/}
	done
	[ -n "$control" ] || usleep 10000
	tries=$((tries + 1))
done
if [ -z "$control" ]; then
	echo "klp-harness: no virtio port klp.control (CONFIG_VIRTIO_CONSOLE?)" > /dev/kmsg
	reboot -f
fi
# `klp-harness shell` hands the console to a person: give them a shell there.
if grep -qw klp.shell /proc/cmdline; then
	setsid cttyhack sh -l &
fi
# The shell and what it starts stay on CPU 0, so that a scenario can keep
# a busy kernel thread on another CPU (klp_target's spin knob).
taskset -p 1 $$ > /dev/null
# A port takes one opener, hence one read-write open. It is not a tty: the shell is non-interactive, with no prompt and no
# echo, and prints nothing but what the harness's commands print.
exec sh -c 'printf "KLP-READY %s\n" "$0"; exec sh' "$uptime" <>"$control" >&0 2>&0
