// SPDX-License-Identifier: GPL-2.0
/*
 * insmod and modprobe the way kmod's behave: one finit_module(2), and
 * kmod's message on failure. busybox's insmod retries a refused module
 * with init_module(2), so the kernel would log the refusal twice, and the
 * livepatch selftests compare the log line by line.
 *
 * Called as modprobe (the selftests before test_modules/), it takes a
 * module name and loads MODULES_DIR/NAME.ko; --dry-run only checks that
 * the file is there.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MODULES_DIR "/peer/test_modules"

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

/* kmod's modprobe says strerror(), but for these two. */
static const char *modprobe_why(int err)
{
	switch (err) {
	case EEXIST:
		return "Module already in kernel";
	case ENOENT:
		return "Unknown symbol in module, or unknown parameter (see dmesg)";
	default:
		return strerror(err);
	}
}

static int load(const char *file, int argc, char **argv)
{
	char params[4096] = "";
	size_t used = 0;
	int fd, i;

	for (i = 0; i < argc; i++)
		used += snprintf(params + used, sizeof(params) - used, "%s ",
				 argv[i]);
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || syscall(SYS_finit_module, fd, params, 0))
		return errno;
	return 0;
}

static int modprobe(int argc, char **argv)
{
	char file[4096];
	int dry_run = argc > 1 && !strcmp(argv[1], "--dry-run");
	int err;

	if (argc < 2 + dry_run) {
		fprintf(stderr, "usage: modprobe [--dry-run] NAME [PARAMETER...]\n");
		return 1;
	}
	snprintf(file, sizeof(file), "%s/%s.ko", MODULES_DIR, argv[1 + dry_run]);
	if (dry_run)
		return access(file, R_OK) ? 1 : 0;
	err = load(file, argc - 2, argv + 2);
	if (err) {
		fprintf(stderr, "modprobe: ERROR: could not insert '%s': %s\n",
			argv[1], modprobe_why(err));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *name = strrchr(argv[0], '/');
	int err;

	name = name ? name + 1 : argv[0];
	if (!strcmp(name, "modprobe"))
		return modprobe(argc, argv);
	if (argc < 2) {
		fprintf(stderr, "usage: insmod FILE [PARAMETER...]\n");
		return 1;
	}
	err = load(argv[1], argc - 2, argv + 2);
	if (err) {
		fprintf(stderr,
			"insmod: ERROR: could not insert module %s: %s\n",
			argv[1], why(err));
		return 1;
	}
	return 0;
}
