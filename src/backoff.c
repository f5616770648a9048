#include "backoff.h"

#include <limits.h>

/* Long schedule for rejected logins: many providers lock an account after a handful of bad
 * logins within an hour, so the second try already waits an hour. */
static const usec_t auth_schedule[] = {
	15 * USEC_PER_MINUTE,
	1 * USEC_PER_HOUR,
	6 * USEC_PER_HOUR,
};

#define TOO_MANY_DELAY (10 * USEC_PER_MINUTE)
#define MISSING_MAILBOX_DELAY (1 * USEC_PER_HOUR)

/* splitmix64: tiny, fast, full period 2^64, good enough to spread reconnects (not crypto). */
static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [lo, hi]; rejection sampling, so no modulo bias. */
static uint64_t rng_between(uint64_t *state, uint64_t lo, uint64_t hi)
{
	uint64_t span, limit, x;

	if (hi <= lo)
		return lo;
	span = hi - lo;
	if (span == UINT64_MAX)
		return rng_next(state);
	span++;
	/* The largest multiple of span that fits: draws at or above it would favour low values. */
	limit = UINT64_MAX - UINT64_MAX % span;
	do
		x = rng_next(state);
	while (x >= limit);
	return lo + x % span;
}

static usec_t usec_add_sat(usec_t a, usec_t b)
{
	return a > USEC_INFINITY - b ? USEC_INFINITY : a + b;
}

/* A fixed delay stretched by up to 10 % so that many watches failing together do not retry
 * together; never shortened, so the documented minimum holds. */
static usec_t jitter_fixed(struct backoff *b, usec_t d)
{
	return rng_between(&b->rng_state, d, usec_add_sat(d, d / 10));
}

/* min(cap, base · 2^n) without overflow. */
static usec_t exp_ceiling(const struct backoff *b, unsigned n)
{
	if (n >= 64 || b->base > (b->cap >> n))
		return b->cap;
	return b->base << n;
}

void backoff_init(struct backoff *b, usec_t base, usec_t cap, uint64_t seed)
{
	*b = (struct backoff){
		.base = MAX(base, (usec_t)1),
		.rng_state = seed,
	};
	b->cap = MAX(cap, b->base);
}

void backoff_reset(struct backoff *b)
{
	b->attempt = 0;
	b->auth_failures = 0;
}

static void count_failure(unsigned *n)
{
	if (*n < UINT_MAX)
		(*n)++;
}

static usec_t next_auth(struct backoff *b)
{
	size_t i = MIN((size_t)b->auth_failures, ELEMENTSOF(auth_schedule) - 1);

	count_failure(&b->auth_failures);
	return jitter_fixed(b, auth_schedule[i]);
}

static usec_t next_exponential(struct backoff *b)
{
	/* Saturate the exponent: the ceiling stops growing at cap anyway. */
	return rng_between(&b->rng_state, b->base, exp_ceiling(b, MIN(b->attempt, 63u) + 1));
}

usec_t backoff_next(struct backoff *b, enum backoff_class c)
{
	usec_t d;

	switch (c) {
	case BACKOFF_FINAL:
		return USEC_INFINITY;
	case BACKOFF_RETRY_NOW:
		/* A first "retry now" (e.g. the server ended an idle session with BYE) jitters
		 * inside one base so a fleet does not reconnect in the same millisecond. */
		d = b->attempt == 0 ? rng_between(&b->rng_state, 0, b->base) : next_exponential(b);
		break;
	case BACKOFF_RETRY_LATER:
		d = next_exponential(b);
		break;
	case BACKOFF_AUTH:
		d = next_auth(b);
		break;
	case BACKOFF_TOO_MANY:
		d = jitter_fixed(b, TOO_MANY_DELAY);
		break;
	case BACKOFF_MISSING_MAILBOX:
		d = jitter_fixed(b, MISSING_MAILBOX_DELAY);
		break;
	default:
		/* An unknown class is a bug; fail safe rather than spin. */
		d = next_exponential(b);
		break;
	}
	count_failure(&b->attempt);
	return d;
}

const char *backoff_class_to_string(enum backoff_class c)
{
	static const char *const names[_BACKOFF_CLASS_MAX] = {
		[BACKOFF_RETRY_NOW] = "retry-now",
		[BACKOFF_RETRY_LATER] = "retry-later",
		[BACKOFF_AUTH] = "auth",
		[BACKOFF_TOO_MANY] = "too-many-connections",
		[BACKOFF_MISSING_MAILBOX] = "missing-mailbox",
		[BACKOFF_FINAL] = "final",
	};

	if ((unsigned)c >= _BACKOFF_CLASS_MAX)
		return NULL;
	return names[c];
}

void token_bucket_init(struct token_bucket *tb, usec_t interval, unsigned burst)
{
	usec_t n = burst > 0 ? burst - 1 : 0;

	*tb = (struct token_bucket){
		.interval = interval,
		.tolerance = interval > 0 && n > USEC_INFINITY / interval ? USEC_INFINITY
									  : n * interval,
	};
}

usec_t token_bucket_take(struct token_bucket *tb, usec_t now)
{
	usec_t tat, earliest;

	if (tb->interval == 0)
		return 0;
	/* An idle bucket does not bank more than burst tokens: tat never lags behind now. */
	tat = MAX(tb->tat, now);
	/* The token may be used once tat - tolerance is reached: the tolerance is the "burst
	 * tokens saved up" of the bucket, in one subtraction. */
	earliest = tat > tb->tolerance ? tat - tb->tolerance : 0;
	tb->tat = usec_add_sat(tat, tb->interval);
	return earliest > now ? earliest - now : 0;
}
