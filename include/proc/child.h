/* Starting a child process the way the daemon must: no shell, a clean slate.
 *
 * Every command the daemon runs (exec sinks, on_click, password and token commands) starts
 * with an empty signal mask and default dispositions (the daemon blocks signals for sd-event
 * and ignores SIGPIPE; `mbsync` must not inherit either), in a process group of its own (so
 * a timeout reaches whatever it starts), with exactly three descriptors open. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* A pipe whose ends are close-on-exec and above 0-2 (so dup2() onto 0-2 in the child cannot
 * clobber another pipe end); the daemon's end, ret[ours], is non-blocking, the child's stays
 * blocking, as programs expect of their stdio. */
int child_pipe_new(int ret[2], int ours);

enum child_flags {
	/* A session of its own instead of a process group: a program the user started (the
	 * mail client behind on_click) that the daemon never stops, nor its terminal. */
	CHILD_NEW_SESSION = 1 << 0,
};

/* posix_spawnp() argv with envp; fds[i] becomes the child's descriptor i (-1: /dev/null; a
 * descriptor equal to i is inherited as is), everything else is closed. Returns the spawn
 * error (ENOENT, EACCES, ...: glibc reports a failed execve() here) as a negative errno. */
int child_spawn(char *const *argv, char *const *envp, const int fds[3], unsigned flags,
		pid_t *ret_pid);
