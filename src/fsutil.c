#include "fsutil.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "util.h"

int fs_fsync_parent(const char *path)
{
	_cleanup_free_ char *parent = strdup(path);
	_cleanup_close_ int fd = -1;
	char *slash;

	if (!parent)
		return -ENOMEM;
	slash = strrchr(parent, '/');
	if (!slash)
		strcpy(parent, ".");
	else if (slash == parent)
		slash[1] = '\0';
	else
		*slash = '\0';
	fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

int fs_mkdir_p(const char *path, mode_t mode)
{
	_cleanup_free_ char *p = strdup(path);
	int r;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char saved = *s;

		*s = '\0';
		if (mkdir(p, mode) == 0) {
			r = fs_fsync_parent(p);
			if (r < 0)
				return r;
		} else if (errno != EEXIST) {
			return -errno;
		}
		*s = saved;
		if (!saved)
			return 0;
	}
}

int fs_read_all(int fd, void *buf, size_t max, size_t *ret_len)
{
	char *p = buf;
	size_t n = 0;

	while (n < max) {
		ssize_t k = read(fd, p + n, max - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			break;
		n += (size_t)k;
	}
	*ret_len = n;
	return 0;
}

int fs_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t k = write(fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}
