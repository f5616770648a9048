/* What the unit tests share: log capture, temporary directories, running the loop until
 * something happens, small file helpers. Linked into every test binary (see the Makefile);
 * include after <cmocka.h>. Everything here fails the running test on an unexpected error,
 * so that a test reads as its checks, not as its plumbing. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include <systemd/sd-event.h>

#include "util.h"

struct mail_event;

/* ---- Log capture ------------------------------------------------------------------------ */

struct log_line {
	int level;
	char *text;
};

/* Lines kept in the order they were logged. Zero-initialise, then log_capture_start(). */
struct log_capture {
	struct log_line *lines;
	size_t n;
};

/* Sends every line that passes the log level (log_set_level() is the caller's) into c, which
 * must stay where it is until log_capture_done(). */
void log_capture_start(struct log_capture *c);

/* Restores logging to stderr and frees the lines; a zeroed c is fine, and so is a second call. */
void log_capture_done(struct log_capture *c);

/* Forgets the lines so far; capture goes on. */
void log_capture_clear(struct log_capture *c);

/* How many lines at level (at any level if level < 0) contain needle. */
size_t log_capture_count(const struct log_capture *c, int level, const char *needle);

/* Whether some line, at any level, contains needle. */
bool log_capture_has(const struct log_capture *c, const char *needle);

/* Whether some line at level is exactly text. */
bool log_capture_has_line(const struct log_capture *c, int level, const char *text);

/* The last line, "" before the first. */
const char *log_capture_last(const struct log_capture *c);

/* Every line with its level on stderr: what a failure message cannot hold. */
void log_capture_dump(const struct log_capture *c);

/* ---- Temporary directories -------------------------------------------------------------- */

/* A new, empty /tmp/test-NAME-XXXXXX written into buf. tmpdir_remove() takes it away; one
 * still there when the process exits (a setup that failed half-way, so that its teardown never
 * ran) goes then. */
void tmpdir_make(char *buf, size_t size, const char *name);

/* Removes dir and everything below it, as rm_rf() does, and forgets it; 0 or a negative errno. */
int tmpdir_remove(const char *dir);

/* Removes path and, for a directory, everything below it; directories a test made read-only
 * are made writable first. Never follows a symbolic link. 0 or a negative errno. */
int rm_rf(const char *path);

/* dir/name, allocated; the caller frees. */
char *path_join(const char *dir, const char *name);

/* ---- Files ------------------------------------------------------------------------------ */

/* The whole file, NUL bytes included, with a NUL after it; *ret_size (if given) does not count
 * that NUL. NULL if the file cannot be opened; a read error fails the test. The caller frees. */
char *file_read(const char *path, size_t *ret_size);

/* The file's text, or "" if it does not exist, in a buffer the next call reuses: for asserting
 * on a file some other process appends to. */
char *file_text(const char *path);

/* Creates or truncates path with exactly size bytes of data and exactly mode (not masked by
 * the umask). */
void file_write(const char *path, const void *data, size_t size, mode_t mode);

/* file_write() of a string, mode 0644. */
void file_write_text(const char *path, const char *text);

/* How many entries a directory holds, names starting with '.' left out; fails the test when
 * it cannot be read. */
size_t dir_count(const char *path);

/* ---- Events ----------------------------------------------------------------------------- */

#define TEST_UIDVALIDITY 1700000000u

/* A received event of account "a" in mailbox, UIDVALIDITY TEST_UIDVALIDITY, from Alice with
 * subject "hello"; fails the test if it cannot be built. */
struct mail_event *test_event_new(const char *mailbox, uint32_t uid);

/* ---- Processes -------------------------------------------------------------------------- */

/* Gone, or a zombie: a process that no longer runs, whoever is left to reap it. */
bool process_gone(pid_t pid);

/* ---- The event loop --------------------------------------------------------------------- */

/* One round of e that waits no later than deadline (CLOCK_MONOTONIC) and no longer than
 * 10 ms, so that a condition set outside the loop is seen soon; a failing sd_event_run() fails
 * the test. false, without running, once the deadline has passed. */
bool loop_step(sd_event *e, usec_t deadline);

/* Runs e until cond (any expression, evaluated before each round) holds or limit (usec) has
 * passed; the value of cond at the end. */
#define LOOP_RUN_UNTIL(e, cond, limit)                                                             \
	({                                                                                         \
		usec_t _deadline_ = now_usec(CLOCK_MONOTONIC) + (limit);                           \
		while (!(cond) && loop_step((e), _deadline_))                                      \
			;                                                                          \
		(cond);                                                                            \
	})

/* Runs e for duration, dispatching whatever comes. */
void loop_run_for(sd_event *e, usec_t duration);

/* Dispatches what is ready now, without waiting; 0, or what a failing sd_event_run() said. */
int loop_drain(sd_event *e);
