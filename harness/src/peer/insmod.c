// SPDX-License-Identifier: GPL-2.0
/*
 * insmod the way kmod's behaves: one finit_module(2), and kmod's message
 * on failure. busybox's insmod retries a refused module with
 * init_module(2), so the kernel would log the refusal twice, and the
 * livepatch selftests compare the log line by line.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *why(int err)
{
	switch (err) {
	case ENOEXEC:
		return "Invalid module format";
	case ENOENT:
		return "Unknown symbol in module";
	case ESRCH:
		return "Module has wrong symbol version";
	case EINVAL:
		return "Invalid parameters";
	default:
		return strerror(err);
	}
}

int main(int argc, char **argv)
{
	char params[4096] = "";
	size_t used = 0;
	int fd, i;

	if (argc < 2) {
		fprintf(stderr, "usage: insmod FILE [PARAMETER...]\n");
		return 1;
	}
	for (i = 2; i < argc; i++)
		used += snprintf(params + used, sizeof(params) - used, "%s ",
				 argv[i]);
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || syscall(SYS_finit_module, fd, params, 0)) {
		fprintf(stderr,
			"insmod: ERROR: could not insert module %s: %s\n",
			argv[1], why(errno));
		return 1;
	}
	return 0;
}
