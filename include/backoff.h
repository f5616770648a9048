/* Reconnect pacing: capped exponential backoff with jitter, and a connect rate limiter.
 *
 * Pure: no clock, no I/O, no global state. Randomness comes from a small PRNG seeded by the
 * caller (getrandom() in production, a constant in tests), so every schedule is reproducible.
 *
 * Delays by failure class (attempt = failures since the last backoff_reset()):
 *   BACKOFF_RETRY_NOW       first failure after a reset: uniform in [0, base]; a repeated one is
 *                           treated as BACKOFF_RETRY_LATER, so "retry now" can never hot-loop.
 *   BACKOFF_RETRY_LATER     "full jitter above a floor": uniform in [base, min(cap, base·2^(attempt+1))].
 *                           With base 1 s and cap 5 min: [1 s, 2 s], [1 s, 4 s], [1 s, 8 s], ...,
 *                           [1 s, 5 min]. The floor of one base keeps a dead server from being
 *                           polled in a tight loop even when the dice roll zero.
 *   BACKOFF_AUTH            a rejected login: 15 min, 1 h, 6 h, 6 h, ... plus up to 10 % jitter
 *                           (never less), so a wrong password never locks the account.
 *   BACKOFF_TOO_MANY        the server refuses more connections: 10 min plus up to 10 %.
 *   BACKOFF_MISSING_MAILBOX the mailbox does not exist (yet): 1 h plus up to 10 %.
 *   BACKOFF_FINAL           no retry until reconfigured: USEC_INFINITY.
 * The fixed schedules ignore the cap: it bounds the exponential class only. Every class except
 * BACKOFF_FINAL counts as a failed attempt, so a later BACKOFF_RETRY_LATER keeps escalating. */
#pragma once

#include "util.h"

#define BACKOFF_BASE_DEFAULT (1 * USEC_PER_SEC)
#define BACKOFF_CAP_DEFAULT (5 * USEC_PER_MINUTE)

enum backoff_class {
	BACKOFF_RETRY_NOW,
	BACKOFF_RETRY_LATER,
	BACKOFF_AUTH,
	BACKOFF_TOO_MANY,
	BACKOFF_MISSING_MAILBOX,
	BACKOFF_FINAL,
	_BACKOFF_CLASS_MAX,
};

/* Embedded in its owner; no destructor needed. Fields are private to backoff.c. */
struct backoff {
	usec_t base, cap;
	unsigned attempt;       /* failures since the last reset, saturating */
	unsigned auth_failures; /* rejected logins since the last reset, saturating */
	uint64_t rng_state;
};

/* base is the floor of every exponential delay (0 is raised to 1 µs); a cap below base is
 * raised to base. */
void backoff_init(struct backoff *b, usec_t base, usec_t cap, uint64_t seed);

/* The delay before the next attempt after a failure of class c; advances the schedule. */
usec_t backoff_next(struct backoff *b, enum backoff_class c);

/* Forget past failures. Call it once a session has proved healthy (logged in and idling for a
 * while), not merely on connect: a server that accepts and then drops would otherwise make
 * BACKOFF_RETRY_NOW a hot loop. The PRNG state is kept. */
void backoff_reset(struct backoff *b);

const char *backoff_class_to_string(enum backoff_class c);

/* Connect rate limiter for reconnect storms (after a resume or a network change, hundreds of
 * watches want to connect at once). A token bucket in its GCRA form: one token per interval,
 * up to burst tokens saved up. Time is passed in (any monotonic clock, µs). */
struct token_bucket {
	usec_t interval; /* one token earned per interval */
	usec_t tolerance; /* (burst - 1) · interval */
	usec_t tat;       /* theoretical arrival time of the next token */
};

/* rate = USEC_PER_SEC / interval connections per second; burst ≥ 1 (0 is raised to 1). An
 * interval of 0 disables limiting. The bucket starts full. */
void token_bucket_init(struct token_bucket *tb, usec_t interval, unsigned burst);

/* Take a token at time now. Returns 0 to go ahead at once, or how long to wait first. Either
 * way the token is reserved for the caller: start after the returned delay, do not call again.
 * So N simultaneous callers get burst immediate slots, then one slot per interval. */
usec_t token_bucket_take(struct token_bucket *tb, usec_t now);
