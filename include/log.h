/* Logging: syslog priorities, journald-aware output, secret redaction.
 *
 * Lines go to stderr. When stderr is the journal stream (JOURNAL_STREAM names its
 * device:inode) each line carries an sd-daemon "<N>" priority prefix; otherwise it is a
 * plain human line with a time stamp. Every line is scrubbed of every registered secret
 * before it leaves, so a password or token can never be logged by accident.
 *
 * All functions preserve errno. The *_errno forms accept an error (positive or negative
 * errno), make it available to "%m", and return it as a negative errno so that callers can
 * write `return log_error_errno(r, "...: %m");`. */
#pragma once

#include <stdarg.h>
#include <syslog.h>

#include "util.h"

/* Detect journald vs terminal; read no environment after this. Call once at start. */
void log_init(void);

void log_set_level(int level); /* LOG_ERR .. LOG_DEBUG */
int log_get_level(void);
static inline bool log_enabled(int level)
{
	return level <= log_get_level();
}

/* Parse "error", "warning", "notice", "info", "debug"; returns level or -EINVAL. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

/* Register a secret whose every occurrence is replaced by "***" in log lines. The
 * registry keeps a wiped-on-removal copy and counts holders: each add needs its remove.
 * Strings shorter than 3 bytes are ignored because redacting them would mangle ordinary
 * text. */
int log_secret_add(const char *secret);
void log_secret_remove(const char *secret);
void log_secret_clear(void);

/* Redirect formatted lines (after redaction) to a callback instead of stderr; for tests.
 * Pass NULL to restore stderr. */
typedef void (*log_sink_fn)(int level, const char *line, void *userdata);
void log_set_sink(log_sink_fn fn, void *userdata);

/* Scrub registered secrets from buf in place (buf must have room: the result never grows
 * beyond the input because "***" is no longer than any registered secret). */
void log_redact(char *buf);

/* An error that stops imapidled before it runs (a bad config, a secret that cannot be
 * fetched): one line "imapidled: PLACE: MESSAGE" on stderr, or priority err under journald.
 * Redacted like every other line. */
void log_config_error(const char *message);

int log_internal(int level, int error, const char *file, int line, const char *fmt, ...)
	_printf_(5, 6);

#define log_full_errno(level, error, ...)                                                     \
	({                                                                                    \
		int _lvl_ = (level), _e_ = (error);                                           \
		log_enabled(_lvl_) ? log_internal(_lvl_, _e_, __FILE__, __LINE__, __VA_ARGS__) \
				   : -abs(_e_);                                               \
	})
#define log_full(level, ...) (void)log_full_errno(level, 0, __VA_ARGS__)

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...) log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, e, __VA_ARGS__)

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")
