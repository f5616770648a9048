/* Run a command on the event loop, capture the first line of its stdout (see proc/spawn.h).
 *
 * One job, one child. Its end is seen by three sources (the exit, and end of file on each
 * pipe) in any order: the exit decides, reading whatever the pipes still hold, and then the job
 * reports from the exit callback. A spawn failure is reported from a defer source, so that the
 * caller never sees its callback inside spawn_capture(). */
#include "proc/spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>

#include "log.h"
#include "proc/child.h"

extern char **environ;

#define OUT_SIZE (SPAWN_OUTPUT_MAX + 1) /* one more byte tells "too long" from "just fits" */
#define READ_CHUNK 4096
/* Per wake-up, so that a chatty command cannot starve the rest of the loop. */
#define READ_BUDGET (64 * 1024)
/* After the exit the pipes hold at most their capacity, unless something the command left
 * behind keeps writing: stop there. */
#define DRAIN_MAX (1024 * 1024)

/* One output pipe. Bytes beyond size are read and dropped. */
struct capture {
	int fd;
	sd_event_source *source;
	char *buf;
	size_t size, len;
	bool dropped; /* more came than fits */
};

struct spawn_job {
	sd_event *event;
	char *label;
	char *command; /* argv[0], for messages */
	usec_t timeout;
	spawn_done_fn done;
	void *userdata;

	pid_t pid; /* also the process group; 0 once reaped or never started */
	sd_event_source *exit_source;
	sd_event_source *timer_source;
	sd_event_source *defer_source; /* reports a spawn failure */
	int spawn_error;
	bool timed_out;
	bool finished; /* done was called (or is being called) */

	struct capture out, err;
};

/* ---- Pipes ------------------------------------------------------------------------------- */

static void capture_init(struct capture *c)
{
	*c = (struct capture){ .fd = -1 };
}

static void capture_close(struct capture *c)
{
	c->source = sd_event_source_disable_unref(c->source);
	c->fd = safe_close(c->fd);
}

/* Both pipes may have seen secret bytes: stdout is the token, stderr may echo it. */
static void capture_done(struct capture *c)
{
	capture_close(c);
	if (c->buf) {
		secure_wipe(c->buf, c->size);
		c->buf = mfree(c->buf);
	}
}

/* 1: more may come later; 0: end of file; negative errno: read error. */
static int capture_read(struct capture *c, size_t budget)
{
	char drop[READ_CHUNK];
	int r = 1;

	while (budget > 0) {
		bool keep = c->len < c->size;
		size_t want = MIN(keep ? c->size - c->len : sizeof(drop), budget);
		ssize_t n = read(c->fd, keep ? c->buf + c->len : drop, want);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n == 0 ? 0 : errno == EAGAIN ? 1 : -errno;
			break;
		}
		if (keep)
			c->len += (size_t)n;
		else
			c->dropped = true;
		budget -= (size_t)n;
	}
	secure_wipe(drop, sizeof(drop));
	return r;
}

static int on_output(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct capture *c = userdata;

	/* A read error ends this pipe early; the exit status still decides the result. */
	if (capture_read(c, READ_BUDGET) <= 0)
		capture_close(c);
	return 0;
}

/* After the exit: what the command wrote is all in the pipe now. A process it left behind
 * holding the pipe open is not waited for. */
static void capture_drain(struct capture *c)
{
	if (c->fd >= 0)
		(void)capture_read(c, DRAIN_MAX);
	capture_close(c);
}

static int capture_start(struct spawn_job *j, struct capture *c, int fd)
{
	int r = sd_event_add_io(j->event, &c->source, fd, EPOLLIN, on_output, c);

	if (r < 0)
		return r;
	c->fd = fd;
	return 0;
}

/* ---- Spawning ---------------------------------------------------------------------------- */

/* ---- The result -------------------------------------------------------------------------- */

/* Replace every occurrence of secret in line by "***" (never longer: secrets under 3 bytes are
 * left alone, as the logger does). */
static void scrub(char *line, const char *secret)
{
	size_t n = secret ? strlen(secret) : 0;
	char *p;

	if (n < 3)
		return;
	while ((p = strstr(line, secret))) {
		memcpy(p, "***", 3);
		memmove(p + 3, p + n, strlen(p + n) + 1);
	}
}

static void log_stderr_line(struct spawn_job *j, char *line, size_t len, const char *secret)
{
	bool cut = len > SPAWN_STDERR_LINE_MAX;

	if (cut)
		len = SPAWN_STDERR_LINE_MAX;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	scrub(line, secret);
	log_info("%s: stderr: %s%s", j->label, line, cut ? " [truncated]" : "");
}

/* After the command ended, so that the token is known and can be scrubbed from its stderr. */
static void log_stderr(struct spawn_job *j, const char *secret)
{
	struct capture *c = &j->err;
	char *p = c->buf, *end = c->buf + c->len;

	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);

		/* Writing the terminator over the '\n' (or the spare byte at the end) is fine:
		 * the buffer is only read once. */
		log_stderr_line(j, p, len, secret);
		p += len + 1;
	}
	if (c->dropped)
		log_info("%s: stderr: [more than %u bytes, the rest is not shown]", j->label,
			 (unsigned)SPAWN_STDERR_MAX);
}

/* The first line of stdout, or why there is none. */
static int first_line(const struct capture *c, char **ret)
{
	/* A line of exactly SPAWN_OUTPUT_MAX bytes has its '\n' in the spare byte. */
	const char *nl = memchr(c->buf, '\n', c->len);
	size_t n = nl ? (size_t)(nl - c->buf) : MIN(c->len, (size_t)SPAWN_OUTPUT_MAX);
	char *s;

	if (!nl && (c->len > SPAWN_OUTPUT_MAX || c->dropped))
		return -E2BIG;
	if (n > 0 && c->buf[n - 1] == '\r')
		n--;
	if (n == 0)
		return -ENODATA;
	if (memchr(c->buf, '\0', n))
		return -EBADMSG; /* a C string would silently cut it */
	s = strndup(c->buf, n);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

static int status_error(struct spawn_job *j, const siginfo_t *si, char **ret_why)
{
	char buf[32];
	int r;

	if (j->timed_out)
		r = asprintf(ret_why, "\"%s\" timed out after %s", j->command,
			     format_duration(buf, sizeof(buf), j->timeout));
	else if (si->si_code == CLD_EXITED && si->si_status == 0)
		return 0;
	else if (si->si_code == CLD_EXITED)
		r = asprintf(ret_why, "\"%s\" exited with status %d", j->command, si->si_status);
	else
		r = asprintf(ret_why, "\"%s\" was killed by signal SIG%s", j->command,
			     strna(sigabbrev_np(si->si_status)));
	if (r < 0)
		*ret_why = NULL;
	return j->timed_out ? -ETIME : -EIO;
}

static char *line_error(struct spawn_job *j, int r)
{
	char *why;
	int n;

	switch (r) {
	case -ENODATA:
		n = asprintf(&why, "\"%s\" printed nothing on its first line", j->command);
		break;
	case -E2BIG:
		n = asprintf(&why, "the first line \"%s\" printed is longer than %u bytes",
			     j->command, (unsigned)SPAWN_OUTPUT_MAX);
		break;
	case -EBADMSG:
		n = asprintf(&why, "the first line \"%s\" printed contains a NUL byte", j->command);
		break;
	default:
		n = asprintf(&why, "\"%s\": %s", j->command, strerror(-r));
	}
	return n < 0 ? NULL : why;
}

/* The last thing a job does: the callee may free it. */
static void finish(struct spawn_job *j, int error, char *line, const char *why)
{
	j->finished = true;
	if (error < 0 && !why)
		why = "out of memory";
	j->done(j->userdata, error, error < 0 ? NULL : line, error < 0 ? why : NULL);
}

/* ---- The running child ------------------------------------------------------------------- */

/* The whole group first (what the command started), then the leader itself in case it left
 * the group. Only while the leader is unreaped: until then its pid, and so the group id,
 * cannot be reused by an unrelated process. */
static void child_kill(struct spawn_job *j)
{
	if (j->pid <= 0 || !j->exit_source)
		return;
	(void)kill(-j->pid, SIGKILL);
	(void)sd_event_source_send_child_signal(j->exit_source, SIGKILL, NULL, 0);
}

/* Drops the child's sources; with process ownership set, sd-event SIGKILLs and reaps a leader
 * that has not exited yet. */
static void child_release(struct spawn_job *j)
{
	j->timer_source = sd_event_source_disable_unref(j->timer_source);
	j->exit_source = sd_event_source_disable_unref(j->exit_source);
	j->pid = 0;
}

static int on_child_exit(sd_event_source *source, const siginfo_t *si, void *userdata)
{
	struct spawn_job *j = userdata;
	_cleanup_free_ char *why = NULL;
	char *line = NULL;
	int r, k;

	capture_drain(&j->out);
	capture_drain(&j->err);
	/* The line is read even from a failed command: its stderr may echo it. */
	k = first_line(&j->out, &line);
	r = status_error(j, si, &why);
	if (r >= 0 && k < 0) {
		r = k;
		why = line_error(j, r);
	}
	log_stderr(j, line);
	if (r < 0)
		line = secure_free(line);
	capture_done(&j->out);
	capture_done(&j->err);
	/* Unreferencing the source inside its own callback is fine: sd-event frees it, and reaps
	 * the zombie, once the callback has returned. */
	child_release(j);
	finish(j, r, line, why);
	return 0;
}

static int on_timeout(sd_event_source *source, uint64_t usec, void *userdata)
{
	struct spawn_job *j = userdata;

	/* SIGKILL at once: a token helper has no state worth a grace period. The exit callback
	 * reports the timeout. */
	j->timed_out = true;
	child_kill(j);
	return 0;
}

static int on_spawn_failed(sd_event_source *source, void *userdata)
{
	struct spawn_job *j = userdata;
	_cleanup_free_ char *why = NULL;

	j->defer_source = sd_event_source_disable_unref(j->defer_source);
	if (asprintf(&why, "\"%s\": cannot run: %s", j->command, strerror(-j->spawn_error)) < 0)
		why = NULL;
	finish(j, j->spawn_error, NULL, why);
	return 0;
}

static int child_watch(struct spawn_job *j, pid_t pid)
{
	int r;

	j->pid = pid;
	r = sd_event_add_child(j->event, &j->exit_source, pid, WEXITED, on_child_exit, j);
	if (r < 0)
		return r;
	r = sd_event_source_set_child_process_own(j->exit_source, true);
	if (r < 0 || j->timeout == 0 || j->timeout == USEC_INFINITY)
		return r;
	/* CLOCK_BOOTTIME (DESIGN.md, Clocks): a helper that was running across a suspend is most
	 * likely stuck on a connection the suspend killed. */
	return sd_event_add_time_relative(j->event, &j->timer_source, CLOCK_BOOTTIME, j->timeout,
					  0, on_timeout, j);
}

/* Spawns argv and watches it; a failed posix_spawnp() is kept for on_spawn_failed(). */
static int job_start(struct spawn_job *j, char *const *argv)
{
	_cleanup_close_ int out_w = -1, err_w = -1;
	int p[2], r;
	pid_t pid;

	r = child_pipe_new(p, 0);
	if (r < 0)
		return r;
	j->out.fd = p[0], out_w = p[1];
	r = child_pipe_new(p, 0);
	if (r < 0)
		return r;
	j->err.fd = p[0], err_w = p[1];
	r = child_spawn(argv, environ, (const int[]){ -1, out_w, err_w }, 0, &pid);
	if (r < 0) {
		j->spawn_error = r;
		return sd_event_add_defer(j->event, &j->defer_source, on_spawn_failed, j);
	}
	r = child_watch(j, pid);
	if (r >= 0)
		r = capture_start(j, &j->out, j->out.fd);
	if (r >= 0)
		r = capture_start(j, &j->err, j->err.fd);
	if (r < 0 && !j->exit_source) {
		/* Not watched: kill it and reap it right here (SIGKILL cannot be caught). */
		(void)kill(-pid, SIGKILL);
		(void)waitpid(pid, NULL, 0);
		j->pid = 0;
	}
	return r; /* on failure the caller's spawn_job_free() kills and reaps a watched child */
}

/* ---- Public ------------------------------------------------------------------------------ */

static int job_alloc(sd_event *e, char *const *argv, const char *label, struct spawn_job **ret)
{
	struct spawn_job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->event = sd_event_ref(e);
	capture_init(&j->out);
	capture_init(&j->err);
	*ret = j; /* half-built is fine for spawn_job_free() */
	j->label = strdup(label ? label : argv[0]);
	j->command = strdup(argv[0]);
	j->out.size = OUT_SIZE;
	j->out.buf = malloc(OUT_SIZE);
	j->err.size = SPAWN_STDERR_MAX + 1; /* room for the last line's terminator */
	j->err.buf = malloc(j->err.size);
	if (!j->label || !j->command || !j->out.buf || !j->err.buf)
		return -ENOMEM;
	j->err.size--; /* keep the spare byte out of reach of capture_read() */
	return 0;
}

int spawn_capture(sd_event *e, char *const *argv, const char *label, usec_t timeout,
		  spawn_done_fn done, void *userdata, struct spawn_job **ret)
{
	_cleanup_spawn_job_ struct spawn_job *j = NULL;
	int r;

	if (!e || !argv || !argv[0] || !*argv[0] || !done || !ret)
		return -EINVAL;
	r = job_alloc(e, argv, label, &j);
	if (r < 0)
		return r;
	j->timeout = timeout;
	j->done = done;
	j->userdata = userdata;
	r = job_start(j, argv);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(j);
	return 0;
}

struct spawn_job *spawn_job_free(struct spawn_job *j)
{
	if (!j)
		return NULL;
	child_kill(j);
	child_release(j);
	j->defer_source = sd_event_source_disable_unref(j->defer_source);
	capture_done(&j->out);
	/* the spare byte beyond err.size was never written */
	capture_done(&j->err);
	free(j->label);
	free(j->command);
	sd_event_unref(j->event);
	return mfree(j);
}

bool spawn_job_running(const struct spawn_job *j)
{
	return j && !j->finished;
}
