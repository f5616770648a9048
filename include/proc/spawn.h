/* proc/spawn: run a command on the event loop and capture the first line of its stdout.
 *
 * For secrets that must be fresh at each use (an OAuth access token from
 * oauth_token_command): secret.h runs its command blocking, which is right at start-up but
 * not on every reconnect of a running daemon.
 *
 * The command is argv, run with posix_spawnp() and never through a shell. The child gets:
 *   - stdin from /dev/null, stdout and stderr into pipes, no other file descriptor;
 *   - the daemon's environment, an empty signal mask, default signal dispositions;
 *   - a process group of its own, so that a timeout or spawn_job_free() reaches everything it
 *     started.
 * stdout is kept, up to SPAWN_OUTPUT_MAX bytes (the rest is read and dropped, so that the
 * command never blocks on a full pipe), and never logged: it is a secret. stderr is logged at
 * info, line by line, as "LABEL: stderr: TEXT", once the command has ended, with every
 * occurrence of the captured line replaced by "***" (a helper's debug output may echo its
 * token, and the caller can register the token for redaction only once it has it). At most
 * SPAWN_STDERR_MAX bytes of it are kept, lines are cut at SPAWN_STDERR_LINE_MAX.
 *
 * The result is the first line of stdout without its line end (CR LF or LF). It is an error
 * when the command cannot be started, does not exit with status 0, is still running after the
 * timeout (CLOCK_BOOTTIME, so time suspended counts; the process group then gets SIGKILL), or
 * its first line is empty, longer than SPAWN_OUTPUT_MAX bytes, or holds a NUL byte.
 *
 * Requirements: SIGCHLD blocked (sd-event watches children through it; sd_event_add_child()
 * fails with -EBUSY otherwise). Nothing here blocks, except spawn_job_free() reaping a child it
 * has just killed with SIGKILL. */
#pragma once

#include <systemd/sd-event.h>

#include "util.h"

#define SPAWN_OUTPUT_MAX (64 * 1024)
#define SPAWN_STDERR_MAX (16 * 1024)
#define SPAWN_STDERR_LINE_MAX 1024

struct spawn_job;

/* Called exactly once per job that spawn_capture() returned, from the event loop (never from
 * inside spawn_capture()), unless spawn_job_free() came first.
 *   success: error == 0, line is the first line (owned by the callee: a secret, so wipe it,
 *            e.g. with secure_free() or, once registered, secret_free()), why == NULL.
 *   failure: error is a negative errno, line == NULL, why a human sentence naming argv[0]
 *            and never any output, e.g. "\"oama\" exited with status 1". Errors: -ENOENT,
 *            -EACCES, ... (cannot run it), -EIO (non-zero status or killed by a signal),
 *            -ETIME (timed out), -ENODATA (empty first line), -E2BIG (first line too long),
 *            -EBADMSG (NUL byte in the first line).
 * The job is finished when this is called: the callee may free it (and should, eventually). */
typedef void (*spawn_done_fn)(void *userdata, int error, char *line, const char *why);

/* Start argv on loop e. label names the command in log lines ("work/INBOX:
 * oauth_token_command"); it and argv are copied. timeout 0 or USEC_INFINITY: none. Returns
 * 0 and the job in *ret, or a negative errno (-EINVAL, -ENOMEM, an sd-event error) when
 * nothing was started; then done is never called. A command that cannot be executed
 * (-ENOENT, ...) is reported through done, like every other failure of the command. */
int spawn_capture(sd_event *e, char *const *argv, const char *label, usec_t timeout,
		  spawn_done_fn done, void *userdata, struct spawn_job **ret);

/* NULL-safe; returns NULL. A command still running gets SIGKILL (its whole process group) and
 * is reaped here; done is not called after this. Everything that held output is wiped. */
struct spawn_job *spawn_job_free(struct spawn_job *j);
static inline void spawn_job_freep(struct spawn_job **j)
{
	spawn_job_free(*j);
}
#define _cleanup_spawn_job_ _cleanup_(spawn_job_freep)

/* True until done has been called. */
bool spawn_job_running(const struct spawn_job *j);
