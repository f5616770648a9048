#include "log.h"

#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#define LOG_LINE_MAX 4096

static int max_level = LOG_INFO;
static bool to_journal;
static log_sink_fn sink;
static void *sink_userdata;
/* Owned copies, wiped on removal, each with the number of its holders: two accounts (or
 * the old and the new config during a reload) may share a password, and the first to let
 * go must not end its redaction for the other. */
struct secret {
	char *text;
	unsigned holders;
};
static struct secret *secrets;
static size_t n_secrets;

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
	struct secret *grown;
	char *copy;

	if (!secret || strlen(secret) < 3)
		return 0;
	for (size_t i = 0; i < n_secrets; i++)
		if (streq(secrets[i].text, secret)) {
			secrets[i].holders++;
			return 0;
		}
	grown = reallocarray(secrets, n_secrets + 1, sizeof(*secrets));
	if (!grown)
		return -ENOMEM;
	secrets = grown;
	copy = strdup(secret);
	if (!copy)
		return -ENOMEM;
	secrets[n_secrets++] = (struct secret){ copy, 1 };
	return 0;
}

static void secret_drop_at(size_t i)
{
	secure_free(secrets[i].text);
	memmove(secrets + i, secrets + i + 1, (n_secrets - i - 1) * sizeof(*secrets));
	if (--n_secrets == 0)
		secrets = mfree(secrets);
}

void log_secret_remove(const char *secret)
{
	for (size_t i = 0; secret && i < n_secrets; i++)
		if (streq(secrets[i].text, secret)) {
			if (--secrets[i].holders == 0)
				secret_drop_at(i);
			return;
		}
}

void log_secret_clear(void)
{
	while (n_secrets > 0)
		secret_drop_at(n_secrets - 1);
}

void log_set_sink(log_sink_fn fn, void *userdata)
{
	sink = fn;
	sink_userdata = userdata;
}

void log_redact(char *buf)
{
	for (size_t i = 0; i < n_secrets; i++) {
		const char *secret = secrets[i].text;
		size_t len = strlen(secret);
		char *p;

		while ((p = strstr(buf, secret))) {
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

void log_config_error(const char *message)
{
	char buf[LOG_LINE_MAX];
	int saved = errno;

	snprintf(buf, sizeof(buf), "%s", message);
	sanitize_line(buf);
	log_redact(buf);
	if (sink)
		sink(LOG_ERR, buf, sink_userdata);
	else if (to_journal)
		fprintf(stderr, "<%d>%s\n", LOG_ERR, buf);
	else
		fprintf(stderr, "imapidled: %s\n", buf);
	errno = saved;
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
