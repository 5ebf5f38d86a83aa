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
for port in /sys/class/virtio-ports/*; do
	[ "$(cat "$port/name")" = klp.control ] && control=/dev/${port##*/}
done
if [ -z "$control" ]; then
	echo "klp-harness: no virtio port klp.control (CONFIG_VIRTIO_CONSOLE?)" > /dev/kmsg
	reboot -f
fi
# A port takes one opener, hence one read-write open. It is not a tty: the shell is non-interactive, with no prompt and no
# echo, and prints nothing but what the harness's commands print.
exec sh -c 'printf "KLP-READY %s\n" "$0"; exec sh' "$uptime" <>"$control" >&0 2>&0
