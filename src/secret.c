/* Secrets from a value, a file, a command or a systemd credential (see secret.h).
 *
 * Every buffer that held secret bytes is wiped before it is freed, and no error message
 * carries any of them: errors name the config place, the file or the command, never the
 * content. */
#include "secret.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"
#include "proc/child.h"
#include "fsutil.h"

#define SECRET_MAX (64 * 1024)
#define BUF_SIZE (SECRET_MAX + 1) /* one more byte tells "too long" from "just fits" */

extern char **environ;

/* Where the secret was configured, for messages. */
struct fetch {
	const struct secret_source *src;
	const char *config_path;
	const char *section;
	char **ret_error;
	bool reported; /* *ret_error was written */
};

static void wipe_bufp(char **p)
{
	if (*p) {
		secure_wipe(*p, BUF_SIZE);
		free(*p);
	}
}
#define _cleanup_wipe_buf_ _cleanup_(wipe_bufp)

static void secret_freep(char **p)
{
	secure_free(*p);
}

static char *fetch_where(struct fetch *f)
{
	char *w;

	if (asprintf(&w, "%s:%u: [%s] %s", strna(f->config_path), f->src->line,
		     strna(f->section), strna(f->src->key)) < 0)
		return NULL;
	return w;
}

/* Report an error as "PATH:LINE: [SECTION] KEY: MESSAGE"; returns r. */
_printf_(3, 4) static int fetch_fail(struct fetch *f, int r, const char *fmt, ...)
{
	_cleanup_free_ char *where = NULL, *msg = NULL;
	va_list ap;
	int n;

	if (!f->ret_error || f->reported)
		return r;
	f->reported = true;
	*f->ret_error = NULL; /* out of memory below: no message, but never garbage */
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		msg = NULL;
		return r;
	}
	where = fetch_where(f);
	if (where && asprintf(f->ret_error, "%s: %s", where, msg) < 0)
		*f->ret_error = NULL;
	return r;
}

int secret_register(const char *secret)
{
	if (!secret)
		return -EINVAL;
	return log_secret_add(secret); /* counted: each register needs its secret_free() */
}

char *secret_free(char *secret)
{
	if (!secret)
		return NULL;
	log_secret_remove(secret);
	return secure_free(secret);
}

/* The first line of what was read, without its CR/LF. truncated: more than SECRET_MAX bytes
 * came, so a line that does not end within them is too long. */
static int first_line(const char *data, size_t len, char **ret)
{
	size_t limit = MIN(len, (size_t)SECRET_MAX);
	const char *nl = memchr(data, '\n', limit);
	size_t n = nl ? (size_t)(nl - data) : limit;
	char *s;

	if (!nl && len > SECRET_MAX)
		return -E2BIG;
	if (n > 0 && data[n - 1] == '\r')
		n--;
	if (n == 0)
		return -ENODATA;
	if (memchr(data, '\0', n))
		return -EBADMSG; /* a C string would silently cut it */
	s = strndup(data, n);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

bool secret_check_file_mode(const char *path, const char *where)
{
	struct stat st;

	if (stat(path, &st) < 0 || !(st.st_mode & (S_IRGRP | S_IROTH)))
		return false;
	log_warning("%s: \"%s\" is readable by group or others; run chmod 600 \"%s\"",
		    strna(where), path, path);
	return true;
}

static int fail_line(struct fetch *f, int r, const char *what)
{
	switch (r) {
	case -ENODATA:
		return fetch_fail(f, r, "%s is empty", what);
	case -E2BIG:
		return fetch_fail(f, r, "%s: first line is longer than 64 KiB", what);
	case -EBADMSG:
		return fetch_fail(f, r, "%s: first line contains a NUL byte", what);
	default:
		return fetch_fail(f, r, "%s: %s", what, strerror(-r));
	}
}

static int fetch_file(struct fetch *f, const char *path_in, bool check_mode, char **ret)
{
	_cleanup_free_ char *path = NULL, *what = NULL, *where = NULL;
	_cleanup_wipe_buf_ char *data = NULL;
	_cleanup_close_ int fd = -1;
	size_t len = 0;
	int r = config_expand_path(path_in, &path);

	if (r == -EINVAL)
		return fetch_fail(f, r, "\"%s\": \"~user\" is not supported", path_in);
	if (r == -ENXIO)
		return fetch_fail(f, r, "cannot expand \"~\": $HOME is not set");
	if (r < 0)
		return r;
	if (asprintf(&what, "\"%s\"", path) < 0) {
		what = NULL;
		return -ENOMEM;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return fetch_fail(f, -errno, "cannot open %s: %s", what, strerror(errno));
	if (check_mode) {
		where = fetch_where(f);
		secret_check_file_mode(path, where);
	}
	data = malloc(BUF_SIZE);
	if (!data)
		return -ENOMEM;
	r = fs_read_all(fd, data, BUF_SIZE, &len);
	if (r < 0)
		return fetch_fail(f, r, "cannot read %s: %s", what, strerror(-r));
	r = first_line(data, len, ret);
	return r < 0 ? fail_line(f, r, what) : 0;
}

static int fetch_credential(struct fetch *f, const char *name, char **ret)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	_cleanup_free_ char *path = NULL;

	if (!dir || !*dir)
		return fetch_fail(f, -ENXIO,
				  "$CREDENTIALS_DIRECTORY is not set "
				  "(use LoadCredential= in the unit)");
	if (!name || !*name || strchr(name, '/'))
		return fetch_fail(f, -EINVAL, "expected a credential name without \"/\"");
	if (asprintf(&path, "%s/%s", dir, name) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	/* systemd sets the credential's mode; no chmod advice applies. */
	return fetch_file(f, path, false, ret);
}

/* Spawn argv with stdin from /dev/null and stdout into a pipe; stderr is inherited so that
 * the command's own complaints reach the log. */
static int spawn_command(char *const *argv, pid_t *ret_pid, int *ret_fd)
{
	int fds[2], r;

	/* The read end stays blocking: this runs at start-up and reads with poll(). */
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	r = child_spawn(argv, environ, (const int[]){ -1, fds[1], STDERR_FILENO }, 0, ret_pid);
	close(fds[1]);
	if (r < 0) {
		close(fds[0]);
		return r;
	}
	*ret_fd = fds[0];
	return 0;
}

static int poll_timeout_ms(usec_t deadline)
{
	usec_t now = now_usec(CLOCK_MONOTONIC);

	if (deadline == USEC_INFINITY)
		return -1;
	if (now >= deadline)
		return 0;
	return (int)MIN((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC, (usec_t)INT_MAX);
}

/* Read the command's output until end of file or the deadline (-ETIME). Beyond BUF_SIZE the
 * output is still read, and dropped, so that the command does not block on a full pipe. */
static int read_output(int fd, usec_t deadline, char *data, size_t *ret_len)
{
	char drain[4096];
	size_t len = 0;
	int r = 0;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int ms = poll_timeout_ms(deadline);
		bool keep = len < BUF_SIZE;
		ssize_t n;

		if (ms == 0) {
			r = -ETIME;
			break;
		}
		if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (pfd.revents == 0)
			continue;
		n = read(fd, keep ? data + len : drain, keep ? BUF_SIZE - len : sizeof(drain));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : 0;
			break;
		}
		if (keep)
			len += (size_t)n;
	}
	secure_wipe(drain, sizeof(drain));
	*ret_len = len;
	return r;
}

static int wait_child(pid_t pid, int *ret_status)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	*ret_status = status;
	return 0;
}

static int check_status(struct fetch *f, const char *cmd, int status)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		return fetch_fail(f, -EIO, "\"%s\" exited with status %d", cmd,
				  WEXITSTATUS(status));
	if (WIFSIGNALED(status))
		return fetch_fail(f, -EIO, "\"%s\" killed by signal %d", cmd, WTERMSIG(status));
	return fetch_fail(f, -EIO, "\"%s\" ended abnormally", cmd);
}

static int fetch_command(struct fetch *f, char *const *argv, usec_t timeout, char **ret)
{
	usec_t now = now_usec(CLOCK_MONOTONIC);
	usec_t deadline = timeout >= USEC_INFINITY - now ? USEC_INFINITY : now + timeout;
	_cleanup_wipe_buf_ char *data = malloc(BUF_SIZE);
	_cleanup_free_ char *what = NULL;
	_cleanup_close_ int fd = -1;
	char buf[32];
	size_t len = 0;
	int r, rw, status = 0;
	pid_t pid;

	if (!data)
		return -ENOMEM;
	if (!argv || !argv[0])
		return fetch_fail(f, -EINVAL, "no command is configured");
	r = spawn_command(argv, &pid, &fd);
	if (r < 0)
		return fetch_fail(f, r, "\"%s\": cannot run: %s", argv[0], strerror(-r));
	r = read_output(fd, deadline, data, &len);
	if (r == -ETIME) {
		/* Its own process group: what it started goes too. */
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
	}
	fd = safe_close(fd);
	rw = wait_child(pid, &status);
	if (r == -ETIME)
		return fetch_fail(f, r, "\"%s\" timed out after %s", argv[0],
				  format_duration(buf, sizeof(buf), timeout));
	if (r < 0 || rw < 0)
		return fetch_fail(f, r < 0 ? r : rw, "\"%s\": %s", argv[0],
				  strerror(-(r < 0 ? r : rw)));
	r = check_status(f, argv[0], status);
	if (r < 0)
		return r;
	if (asprintf(&what, "the output of \"%s\"", argv[0]) < 0) {
		what = NULL;
		return -ENOMEM;
	}
	r = first_line(data, len, ret);
	return r < 0 ? fail_line(f, r, what) : 0;
}

static int fetch_value(struct fetch *f, const char *value, char **ret)
{
	char *s;

	if (!value || !*value)
		return fetch_fail(f, -ENODATA, "the value is empty");
	s = strdup(value);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

int secret_fetch(const struct secret_source *src, const char *config_path, const char *section,
		 usec_t timeout, char **ret_secret, char **ret_error)
{
	struct fetch f = { src, config_path, section, ret_error };
	_cleanup_(secret_freep) char *s = NULL;
	int r;

	switch (src->kind) {
	case SECRET_VALUE:
		r = fetch_value(&f, src->value, &s);
		break;
	case SECRET_FILE:
		r = fetch_file(&f, strempty(src->value), true, &s);
		break;
	case SECRET_COMMAND:
		r = fetch_command(&f, src->argv, timeout, &s);
		break;
	case SECRET_CREDENTIAL:
		r = fetch_credential(&f, src->value, &s);
		break;
	default:
		r = fetch_fail(&f, -EINVAL, "no secret is configured");
	}
	if (r >= 0)
		r = log_secret_add(s);
	if (r < 0)
		return fetch_fail(&f, r, "%s", strerror(-r)); /* no-op when already reported */
	*ret_secret = TAKE_PTR(s);
	return 0;
}
