#include "log.h"

#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#define LOG_LINE_MAX 4096

static int max_level = LOG_INFO;
static bool to_journal;
static log_sink_fn sink;
static void *sink_userdata;
static char **secrets; /* owned copies, wiped on removal */

static const char *const level_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "error",   [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
};

/* journald sets JOURNAL_STREAM=dev:ino for the stream it reads; only trust it when it is
 * really our stderr, since the variable is inherited by children that redirect. */
static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(void)
{
	to_journal = stderr_is_journal();
}

void log_set_level(int level)
{
	max_level = level;
}

int log_get_level(void)
{
	return max_level;
}

int log_level_from_string(const char *s)
{
	if (streq(s, "warn"))
		return LOG_WARNING;
	if (streq(s, "err"))
		return LOG_ERR;
	for (int i = LOG_ERR; i <= LOG_DEBUG; i++)
		if (streq(s, level_names[i]))
			return i;
	return -EINVAL;
}

const char *log_level_to_string(int level)
{
	if (level < 0 || level > LOG_DEBUG)
		return "?";
	return level_names[level];
}

int log_secret_add(const char *secret)
{
	if (!secret || strlen(secret) < 3)
		return 0;
	for (char **i = secrets; i && *i; i++)
		if (streq(*i, secret))
			return 0;
	return strv_extend(&secrets, secret);
}

static void secret_drop_at(size_t idx)
{
	size_t n = strv_length(secrets);

	secure_free(secrets[idx]);
	memmove(secrets + idx, secrets + idx + 1, (n - idx) * sizeof(char *));
}

void log_secret_remove(const char *secret)
{
	for (size_t i = 0; secret && secrets && secrets[i]; i++)
		if (streq(secrets[i], secret)) {
			secret_drop_at(i);
			return;
		}
}

void log_secret_clear(void)
{
	while (secrets && secrets[0])
		secret_drop_at(0);
	secrets = mfree(secrets);
}

void log_set_sink(log_sink_fn fn, void *userdata)
{
	sink = fn;
	sink_userdata = userdata;
}

void log_redact(char *buf)
{
	for (char **s = secrets; s && *s; s++) {
		size_t len = strlen(*s);
		char *p;

		while ((p = strstr(buf, *s))) {
			memcpy(p, "***", 3);
			memmove(p + 3, p + len, strlen(p + len) + 1);
		}
	}
}

/* Control characters in a log line would let server-supplied text forge lines or
 * terminal escapes; show them as '?'. */
static void sanitize_line(char *buf)
{
	for (unsigned char *p = (unsigned char *)buf; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
}

static void write_line(int level, const char *line)
{
	if (sink) {
		sink(level, line, sink_userdata);
		return;
	}
	if (to_journal) {
		fprintf(stderr, "<%d>%s\n", level, line);
		return;
	}

	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	fprintf(stderr, "%02d:%02d:%02d.%03ld %-7s %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
		ts.tv_nsec / 1000000, level_names[level], line);
}

int log_internal(int level, int error, const char *file, int line, const char *fmt, ...)
{
	char buf[LOG_LINE_MAX];
	int saved = errno;
	va_list ap;

	(void)file;
	(void)line;
	if (level < 0 || level > LOG_DEBUG)
		level = LOG_ERR;
	errno = abs(error); /* for %m */
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	sanitize_line(buf);
	log_redact(buf);
	write_line(level, buf);
	errno = saved;
	return -abs(error);
}
