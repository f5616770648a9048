#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <time.h>

void secure_wipe(void *p, size_t n)
{
	if (p && n)
		explicit_bzero(p, n);
}

char *secure_free(char *s)
{
	if (s) {
		secure_wipe(s, strlen(s));
		free(s);
	}
	return NULL;
}

char **strv_free(char **v)
{
	if (!v)
		return NULL;
	for (char **i = v; *i; i++)
		free(*i);
	free(v);
	return NULL;
}

size_t strv_length(char *const *v)
{
	size_t n = 0;

	if (!v)
		return 0;
	while (v[n])
		n++;
	return n;
}

int strv_push(char ***v, char *s)
{
	size_t n = strv_length(*v);
	char **nv;

	if (!s)
		return -EINVAL;
	nv = reallocarray(*v, n + 2, sizeof(char *));
	if (!nv) {
		free(s);
		return -ENOMEM;
	}
	nv[n] = s;
	nv[n + 1] = NULL;
	*v = nv;
	return 0;
}

int strv_extend(char ***v, const char *s)
{
	char *c = strdup(s);

	if (!c)
		return -ENOMEM;
	return strv_push(v, c);
}

char **strv_copy(char *const *v)
{
	char **c = calloc(strv_length(v) + 1, sizeof(char *));

	if (!c)
		return NULL;
	for (size_t i = 0; v && v[i]; i++) {
		c[i] = strdup(v[i]);
		if (!c[i])
			return strv_free(c);
	}
	return c;
}

bool strv_equal(char *const *a, char *const *b)
{
	size_t na = strv_length(a), nb = strv_length(b);

	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!streq(a[i], b[i]))
			return false;
	return true;
}

char *strstrip(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		memmove(s, s + 1, strlen(s));
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int safe_atou64(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*ret = v;
	return 0;
}

const char *format_duration(char *buf, size_t size, usec_t u)
{
	static const struct {
		const char *suffix;
		usec_t usec;
	} units[] = {
		{ "d", USEC_PER_DAY }, { "h", USEC_PER_HOUR }, { "m", USEC_PER_MINUTE },
		{ "s", USEC_PER_SEC }, { "ms", USEC_PER_MSEC }, { "us", 1 },
	};
	size_t off = 0;

	if (size == 0)
		return buf;
	buf[0] = '\0';
	if (u == USEC_INFINITY) {
		snprintf(buf, size, "infinity");
		return buf;
	}
	if (u == 0) {
		snprintf(buf, size, "0s");
		return buf;
	}
	/* Two units are as precise as a person reads: "15m9s", not "15m9s211ms481us". */
	for (size_t i = 0, shown = 0; i < ELEMENTSOF(units) && off < size && shown < 2; i++) {
		if (u < units[i].usec) {
			if (shown)
				break;
			continue;
		}
		shown++;
		int n = snprintf(buf + off, size - off, "%llu%s",
				 (unsigned long long)(u / units[i].usec), units[i].suffix);
		if (n < 0)
			break;
		off += (size_t)n;
		u %= units[i].usec;
	}
	return buf;
}

usec_t now_usec(int clock_id)
{
	struct timespec ts;

	if (clock_gettime(clock_id, &ts) < 0)
		return 0;
	return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / 1000;
}
