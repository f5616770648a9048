#include "proc/child.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>

#include "util.h"

/* Consumes fd. */
static int fd_above_stdio(int fd)
{
	int n, saved;

	if (fd >= 3)
		return fd;
	n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	saved = errno;
	close(fd);
	return n < 0 ? -saved : n;
}

int child_pipe_new(int ret[2], int ours)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	p[0] = fd_above_stdio(p[0]);
	p[1] = fd_above_stdio(p[1]);
	if (p[0] < 0 || p[1] < 0 || fcntl(p[ours], F_SETFL, O_NONBLOCK) < 0) {
		int r = p[0] < 0 ? p[0] : p[1] < 0 ? p[1] : -errno;

		safe_close(p[0]);
		safe_close(p[1]);
		return r;
	}
	ret[0] = p[0];
	ret[1] = p[1];
	return 0;
}

static int attr_init(posix_spawnattr_t *attr, unsigned flags)
{
	sigset_t none, all;
	int r;

	sigemptyset(&none);
	sigfillset(&all);
	sigdelset(&all, SIGKILL);
	sigdelset(&all, SIGSTOP);
	r = posix_spawnattr_init(attr);
	if (r != 0)
		return -r;
	r = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
						   (flags & CHILD_NEW_SESSION ? POSIX_SPAWN_SETSID
									      : POSIX_SPAWN_SETPGROUP));
	if (r == 0)
		r = posix_spawnattr_setsigmask(attr, &none);
	if (r == 0)
		r = posix_spawnattr_setsigdefault(attr, &all);
	if (r == 0 && !(flags & CHILD_NEW_SESSION))
		r = posix_spawnattr_setpgroup(attr, 0);
	if (r != 0) {
		posix_spawnattr_destroy(attr);
		return -r;
	}
	return 0;
}

/* Closing from 3 also closes a descriptor some library opened without O_CLOEXEC. */
static int actions_init(posix_spawn_file_actions_t *fa, const int fds[3])
{
	int r = posix_spawn_file_actions_init(fa);

	if (r != 0)
		return -r;
	for (int i = 0; r == 0 && i < 3; i++) {
		if (fds[i] < 0)
			r = posix_spawn_file_actions_addopen(fa, i, "/dev/null",
							     i == 0 ? O_RDONLY : O_WRONLY, 0);
		else if (fds[i] != i)
			r = posix_spawn_file_actions_adddup2(fa, fds[i], i);
	}
	if (r == 0)
		r = posix_spawn_file_actions_addclosefrom_np(fa, 3);
	if (r != 0) {
		posix_spawn_file_actions_destroy(fa);
		return -r;
	}
	return 0;
}

int child_spawn(char *const *argv, char *const *envp, const int fds[3], unsigned flags,
		pid_t *ret_pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	pid_t pid;
	int r;

	r = actions_init(&fa, fds);
	if (r < 0)
		return r;
	r = attr_init(&attr, flags);
	if (r < 0) {
		posix_spawn_file_actions_destroy(&fa);
		return r;
	}
	r = posix_spawnp(&pid, argv[0], &fa, &attr, argv, envp);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return -r;
	*ret_pid = pid;
	return 0;
}
