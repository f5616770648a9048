/* Small helpers every module uses: cleanup attributes, ownership transfer, sizes, time.
 *
 * Conventions (see STYLE.md): functions return 0 or a negative errno; out-parameters
 * named ret_* are written only on success; destructors accept NULL and return NULL. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _unused_ __attribute__((unused))
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_ __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Take ownership of a pointer: returns it and leaves NULL behind, so the cleanup
 * attribute of the source no longer frees it. */
#define TAKE_PTR(p)                         \
	({                                  \
		__typeof__(p) _p_ = (p);    \
		(p) = NULL;                 \
		_p_;                        \
	})

/* Take ownership of a file descriptor, leaving -1 behind. */
#define TAKE_FD(fd)                         \
	({                                  \
		int _fd_ = (fd);            \
		(fd) = -1;                  \
		_fd_;                       \
	})

static inline void *mfree(void *p)
{
	free(p);
	return NULL;
}

static inline void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline int safe_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return -1;
}

static inline void closep(int *fd)
{
	safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline bool streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

static inline bool streq_ptr(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static inline const char *strempty(const char *s)
{
	return s ? s : "";
}

static inline const char *strna(const char *s)
{
	return s ? s : "n/a";
}

/* Microseconds, the unit sd-event uses. */
typedef uint64_t usec_t;
#define USEC_INFINITY ((usec_t)UINT64_MAX)
#define USEC_PER_MSEC ((usec_t)1000ULL)
#define USEC_PER_SEC ((usec_t)1000000ULL)
#define USEC_PER_MINUTE (60ULL * USEC_PER_SEC)
#define USEC_PER_HOUR (60ULL * USEC_PER_MINUTE)
#define USEC_PER_DAY (24ULL * USEC_PER_HOUR)

/* Wipe memory that held a secret; the compiler may not elide it. */
void secure_wipe(void *p, size_t n);

/* Free a NUL-terminated string after wiping it. Returns NULL. */
char *secure_free(char *s);

/* A NULL-terminated array of owned strings ("string vector"). */
char **strv_free(char **v);
size_t strv_length(char *const *v);
int strv_push(char ***v, char *s); /* takes ownership of s, even on failure */
int strv_extend(char ***v, const char *s); /* copies s */
char **strv_copy(char *const *v);
bool strv_equal(char *const *a, char *const *b);
static inline void strv_freep(char ***v)
{
	strv_free(*v);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)

/* Trim ASCII white space in place; returns s. */
char *strstrip(char *s);

/* Parse an unsigned decimal number with range check; no sign, no trailing junk. */
int safe_atou64(const char *s, uint64_t *ret);

/* Format a duration as "30s", "20m", "1h30m" into buf: the two largest units, the rest
 * dropped ("15m9s" for 15 min 9.2 s). Returns buf. */
const char *format_duration(char *buf, size_t size, usec_t u);

/* Current time on a clock, in microseconds. */
usec_t now_usec(int clock_id);
