/* Sees the fsync() calls of the code under test, and can make them fail.
 *
 * The library is linked statically into the test binary, so its fsync() calls bind to the
 * definition below, which asks the kernel itself (syscall(SYS_fsync)). Only descriptors whose
 * path lies below fsync_probe.under are counted or failed: anything else passes through. */
#pragma once

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct fsync_probe_state {
	char under[128];   /* "" counts nothing */
	unsigned files;    /* fsyncs of regular files below under, failed ones included */
	unsigned dirs;     /* the same for directories */
	int file_error;    /* non-zero: file fsyncs fail with it, once file_error_after passed */
	unsigned file_error_after;
	int dir_error;     /* non-zero: directory fsyncs fail with it */
};

static struct fsync_probe_state fsync_probe;

static void fsync_probe_start(const char *under)
{
	fsync_probe = (struct fsync_probe_state){};
	snprintf(fsync_probe.under, sizeof(fsync_probe.under), "%s", under);
}

static bool fsync_probe_watches(int fd)
{
	char link[64], path[PATH_MAX];
	size_t len = strlen(fsync_probe.under);
	ssize_t n;

	if (len == 0)
		return false;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return false;
	path[n] = '\0';
	return strncmp(path, fsync_probe.under, len) == 0;
}

int fsync(int fd)
{
	struct stat st;
	int error = 0;

	if (fsync_probe_watches(fd) && fstat(fd, &st) == 0) {
		if (S_ISDIR(st.st_mode)) {
			fsync_probe.dirs++;
			error = fsync_probe.dir_error;
		} else {
			if (fsync_probe.file_error && fsync_probe.files >= fsync_probe.file_error_after)
				error = fsync_probe.file_error;
			fsync_probe.files++;
		}
	}
	if (error) {
		errno = error;
		return -1;
	}
	return (int)syscall(SYS_fsync, fd);
}
