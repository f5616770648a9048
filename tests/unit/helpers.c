#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>

#include "event.h"
#include "fsutil.h"
#include "helpers.h"
#include "log.h"

/* ---- Log capture ------------------------------------------------------------------------ */

static void log_capture_sink(int level, const char *line, void *userdata)
{
	struct log_capture *c = userdata;
	struct log_line *lines = reallocarray(c->lines, c->n + 1, sizeof(*lines));

	assert_non_null(lines);
	c->lines = lines;
	c->lines[c->n] = (struct log_line){ .level = level, .text = strdup(line) };
	assert_non_null(c->lines[c->n].text);
	c->n++;
}

void log_capture_start(struct log_capture *c)
{
	log_set_sink(log_capture_sink, c);
}

void log_capture_done(struct log_capture *c)
{
	log_set_sink(NULL, NULL);
	log_capture_clear(c);
}

void log_capture_clear(struct log_capture *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->lines[i].text);
	c->lines = mfree(c->lines);
	c->n = 0;
}

size_t log_capture_count(const struct log_capture *c, int level, const char *needle)
{
	size_t n = 0;

	for (size_t i = 0; i < c->n; i++)
		n += (level < 0 || c->lines[i].level == level) && strstr(c->lines[i].text, needle);
	return n;
}

bool log_capture_has(const struct log_capture *c, const char *needle)
{
	return log_capture_count(c, -1, needle) > 0;
}

bool log_capture_has_line(const struct log_capture *c, int level, const char *text)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->lines[i].level == level && streq(c->lines[i].text, text))
			return true;
	return false;
}

const char *log_capture_last(const struct log_capture *c)
{
	return c->n > 0 ? c->lines[c->n - 1].text : "";
}

void log_capture_dump(const struct log_capture *c)
{
	for (size_t i = 0; i < c->n; i++)
		fprintf(stderr, "  log <%d> %s\n", c->lines[i].level, c->lines[i].text);
}

/* ---- Temporary directories -------------------------------------------------------------- */

/* The directories made and not yet removed, for the exit handler. */
static char *tmpdirs[16];
static pid_t tmpdirs_owner;

/* The first error of the current rm_rf() walk: nftw() has no userdata, and stopping at the
 * first file that will not go would leave the rest behind. */
static int rm_rf_error;

static int make_writable(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (type == FTW_D && (st->st_mode & 0700) != 0700)
		(void)chmod(path, st->st_mode | 0700);
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (remove(path) < 0 && rm_rf_error == 0)
		rm_rf_error = -errno;
	return 0;
}

int rm_rf(const char *path)
{
	rm_rf_error = 0;
	/* A read-only directory would keep its entries from anyone but root. */
	(void)nftw(path, make_writable, 16, FTW_PHYS);
	if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
		return -errno;
	return rm_rf_error;
}

static void tmpdirs_remove_left(void)
{
	/* A forked child that exits must not take its parent's directories with it. */
	if (getpid() != tmpdirs_owner)
		return;
	for (size_t i = 0; i < ELEMENTSOF(tmpdirs); i++) {
		if (tmpdirs[i]) {
			(void)rm_rf(tmpdirs[i]);
			tmpdirs[i] = mfree(tmpdirs[i]);
		}
	}
}

void tmpdir_make(char *buf, size_t size, const char *name)
{
	int n = snprintf(buf, size, "/tmp/test-%s-XXXXXX", name);
	size_t i = 0;

	assert_true(n > 0 && (size_t)n < size);
	while (i < ELEMENTSOF(tmpdirs) && tmpdirs[i])
		i++;
	if (i == ELEMENTSOF(tmpdirs))
		fail_msg("more than %zu temporary directories at once", ELEMENTSOF(tmpdirs));
	if (!mkdtemp(buf))
		fail_msg("cannot make %s: %s", buf, strerror(errno));
	tmpdirs[i] = strdup(buf);
	assert_non_null(tmpdirs[i]);
	if (tmpdirs_owner == 0) {
		tmpdirs_owner = getpid();
		assert_int_equal(atexit(tmpdirs_remove_left), 0);
	}
}

int tmpdir_remove(const char *dir)
{
	for (size_t i = 0; i < ELEMENTSOF(tmpdirs); i++)
		if (tmpdirs[i] && streq(tmpdirs[i], dir))
			tmpdirs[i] = mfree(tmpdirs[i]);
	return rm_rf(dir);
}

char *path_join(const char *dir, const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

/* ---- Files ------------------------------------------------------------------------------ */

char *file_read(const char *path, size_t *ret_size)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf = NULL;
	size_t size = 0, cap = 4096;

	if (fd < 0)
		return NULL;
	for (;;) {
		char *p = realloc(buf, cap + 1);
		size_t n;
		int r;

		assert_non_null(p);
		buf = p;
		r = fs_read_all(fd, buf + size, cap - size, &n);
		if (r < 0)
			fail_msg("cannot read %s: %s", path, strerror(-r));
		size += n;
		if (size < cap)
			break;
		cap *= 2;
	}
	buf[size] = '\0';
	if (ret_size)
		*ret_size = size;
	return buf;
}

char *file_text(const char *path)
{
	static char *text;

	free(text);
	text = file_read(path, NULL);
	if (!text) {
		text = strdup("");
		assert_non_null(text);
	}
	return text;
}

void file_write(const char *path, const void *data, size_t size, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	int r;

	if (fd < 0)
		fail_msg("cannot create %s: %s", path, strerror(errno));
	r = fs_write_all(fd, data, size);
	if (r < 0)
		fail_msg("cannot write %s: %s", path, strerror(-r));
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
}

void file_write_text(const char *path, const char *text)
{
	file_write(path, text, strlen(text), 0644);
}

size_t dir_count(const char *path)
{
	struct dirent *de;
	size_t n = 0;
	DIR *d = opendir(path);

	assert_non_null(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* ---- Events ----------------------------------------------------------------------------- */

struct mail_event *test_event_new(const char *mailbox, uint32_t uid)
{
	struct mail_event_input in = {
		.account = "a",
		.mailbox = mailbox,
		.uidvalidity = TEST_UIDVALIDITY,
		.uid = uid,
		.subject = "hello",
		.from = { "Alice", "alice@example.com" },
	};
	struct mail_event *e = NULL;

	assert_int_equal(mail_event_new_received(&in, &e), 0);
	return e;
}

/* ---- Processes -------------------------------------------------------------------------- */

bool process_gone(pid_t pid)
{
	char path[64], buf[512], *p;
	_cleanup_close_ int fd = -1;
	size_t n = 0;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fs_read_all(fd, buf, sizeof(buf) - 1, &n) < 0 || n == 0)
		return true; /* reaped between the two looks */
	buf[n] = '\0';
	/* The state follows the command name, which may itself hold ") ". */
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* ---- The event loop --------------------------------------------------------------------- */

bool loop_step(sd_event *e, usec_t deadline)
{
	usec_t now = now_usec(CLOCK_MONOTONIC);
	int r;

	if (now >= deadline)
		return false;
	r = sd_event_run(e, MIN(deadline - now, 10 * USEC_PER_MSEC));
	if (r < 0)
		fail_msg("sd_event_run: %s", strerror(-r));
	return true;
}

void loop_run_for(sd_event *e, usec_t duration)
{
	usec_t deadline = now_usec(CLOCK_MONOTONIC) + duration;

	while (loop_step(e, deadline))
		;
}

int loop_drain(sd_event *e)
{
	int r;

	while ((r = sd_event_run(e, 0)) > 0)
		;
	return r;
}
