#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "backoff.h"

#define S USEC_PER_SEC
#define MIN_ USEC_PER_MINUTE
#define H USEC_PER_HOUR

static void assert_between(usec_t v, usec_t lo, usec_t hi)
{
	if (v < lo || v > hi)
		fail_msg("expected a delay in [%llu, %llu] µs, got %llu", (unsigned long long)lo,
			 (unsigned long long)hi, (unsigned long long)v);
}

/* Draw many first-retry delays: every one within bounds, the mean near the middle. */
static void check_distribution(usec_t base, usec_t cap, unsigned attempt, usec_t lo, usec_t hi)
{
	struct backoff b;
	double sum = 0, mid = ((double)lo + (double)hi) / 2, tolerance = ((double)hi - lo) * 0.02;
	usec_t seen_min = USEC_INFINITY, seen_max = 0;

	backoff_init(&b, base, cap, 12345);
	for (unsigned i = 0; i < 10000; i++) {
		b.attempt = attempt;
		usec_t d = backoff_next(&b, BACKOFF_RETRY_LATER);
		assert_between(d, lo, hi);
		sum += (double)d;
		seen_min = MIN(seen_min, d);
		seen_max = MAX(seen_max, d);
	}
	if (sum / 10000 < mid - tolerance || sum / 10000 > mid + tolerance)
		fail_msg("expected a mean near %.0f, got %.0f", mid, sum / 10000);
	/* The whole range is used, not just its middle. */
	assert_true(seen_min < lo + (hi - lo) / 50);
	assert_true(seen_max > hi - (hi - lo) / 50);
}

static void test_distribution(void **state)
{
	check_distribution(S, 5 * MIN_, 0, S, 2 * S);
	check_distribution(S, 5 * MIN_, 3, S, 16 * S);
	check_distribution(S, 5 * MIN_, 20, S, 5 * MIN_);
}

static void test_exponential_growth_and_cap(void **state)
{
	struct backoff b;

	backoff_init(&b, S, 5 * MIN_, 1);
	for (unsigned i = 0; i < 200; i++) {
		usec_t hi = i < 8 ? (S << (i + 1)) : 5 * MIN_;
		assert_between(backoff_next(&b, BACKOFF_RETRY_LATER), S, MIN(hi, 5 * MIN_));
	}
	/* A huge attempt count neither overflows nor exceeds the cap. */
	b.attempt = UINT32_MAX;
	assert_between(backoff_next(&b, BACKOFF_RETRY_LATER), S, 5 * MIN_);
	assert_int_equal(b.attempt, UINT32_MAX);
}

static void test_retry_now(void **state)
{
	struct backoff b;

	backoff_init(&b, S, 5 * MIN_, 7);
	/* The first "now" is within one base, possibly zero. */
	assert_between(backoff_next(&b, BACKOFF_RETRY_NOW), 0, S);
	/* Repeated, it escalates like retry-later: never a hot loop. */
	for (unsigned i = 0; i < 20; i++)
		assert_between(backoff_next(&b, BACKOFF_RETRY_NOW), S, 5 * MIN_);
	assert_int_equal(b.attempt, 21);
}

static void test_auth_schedule(void **state)
{
	static const usec_t expect[] = { 15 * MIN_, H, 6 * H, 6 * H, 6 * H };
	struct backoff b;

	backoff_init(&b, S, 5 * MIN_, 99);
	for (size_t i = 0; i < ELEMENTSOF(expect); i++)
		assert_between(backoff_next(&b, BACKOFF_AUTH), expect[i],
			       expect[i] + expect[i] / 10);
	/* Auth failures also count as attempts for a following network error. */
	assert_int_equal(b.attempt, 5);
	backoff_reset(&b);
	assert_between(backoff_next(&b, BACKOFF_AUTH), 15 * MIN_, 15 * MIN_ + 90 * S);
}

static void test_fixed_classes(void **state)
{
	struct backoff b;

	backoff_init(&b, S, 5 * MIN_, 3);
	/* The cap bounds the exponential class only. */
	assert_between(backoff_next(&b, BACKOFF_TOO_MANY), 10 * MIN_, 11 * MIN_);
	assert_between(backoff_next(&b, BACKOFF_MISSING_MAILBOX), H, H + 6 * MIN_);
	assert_int_equal(backoff_next(&b, BACKOFF_FINAL), USEC_INFINITY);
	assert_int_equal(b.attempt, 2); /* final does not advance */
	assert_string_equal(backoff_class_to_string(BACKOFF_AUTH), "auth");
	assert_null(backoff_class_to_string(_BACKOFF_CLASS_MAX));
}

static void test_reset(void **state)
{
	struct backoff b;

	backoff_init(&b, S, 5 * MIN_, 5);
	for (unsigned i = 0; i < 30; i++)
		(void)backoff_next(&b, BACKOFF_RETRY_LATER);
	(void)backoff_next(&b, BACKOFF_AUTH);
	backoff_reset(&b);
	assert_between(backoff_next(&b, BACKOFF_RETRY_LATER), S, 2 * S);
	assert_between(backoff_next(&b, BACKOFF_AUTH), 15 * MIN_, 15 * MIN_ + 90 * S);
}

static void test_deterministic_and_degenerate(void **state)
{
	struct backoff a, b;

	backoff_init(&a, S, 5 * MIN_, 42);
	backoff_init(&b, S, 5 * MIN_, 42);
	for (unsigned i = 0; i < 50; i++)
		assert_int_equal(backoff_next(&a, BACKOFF_RETRY_LATER),
				 backoff_next(&b, BACKOFF_RETRY_LATER));
	/* Different seeds give different schedules. */
	backoff_init(&a, S, 5 * MIN_, 1);
	backoff_init(&b, S, 5 * MIN_, 2);
	unsigned same = 0;
	for (unsigned i = 0; i < 50; i++)
		same += backoff_next(&a, BACKOFF_RETRY_LATER) == backoff_next(&b, BACKOFF_RETRY_LATER);
	assert_true(same < 5);
	/* base 0 and a cap below base are raised, not trusted. */
	backoff_init(&a, 0, 0, 0);
	assert_between(backoff_next(&a, BACKOFF_RETRY_LATER), 1, 1);
	backoff_init(&a, 10 * S, S, 0);
	assert_int_equal(a.cap, 10 * S);
	assert_int_equal(backoff_next(&a, BACKOFF_RETRY_LATER), 10 * S);
}

static void test_token_bucket(void **state)
{
	struct token_bucket tb;
	usec_t now = 1000 * S;

	token_bucket_init(&tb, 100 * USEC_PER_MSEC, 3); /* 10/s, burst 3 */
	/* A storm of 6 callers at the same instant: 3 go now, the rest get distinct slots. */
	assert_int_equal(token_bucket_take(&tb, now), 0);
	assert_int_equal(token_bucket_take(&tb, now), 0);
	assert_int_equal(token_bucket_take(&tb, now), 0);
	assert_int_equal(token_bucket_take(&tb, now), 100 * USEC_PER_MSEC);
	assert_int_equal(token_bucket_take(&tb, now), 200 * USEC_PER_MSEC);
	assert_int_equal(token_bucket_take(&tb, now), 300 * USEC_PER_MSEC);
	/* Once the reserved slots have passed and the bucket refilled, the burst is back. */
	now += 10 * S;
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(token_bucket_take(&tb, now), 0);
	assert_int_equal(token_bucket_take(&tb, now), 100 * USEC_PER_MSEC);
	/* Steady rate: one call per interval never waits. */
	now += 10 * S;
	for (unsigned i = 0; i < 100; i++, now += 100 * USEC_PER_MSEC)
		assert_int_equal(token_bucket_take(&tb, now), 0);
	/* Time going backwards (should not happen on a monotonic clock) is not a bonus. */
	assert_true(token_bucket_take(&tb, now - 5 * S) > 0);
}

static void test_token_bucket_degenerate(void **state)
{
	struct token_bucket tb;

	token_bucket_init(&tb, 0, 5); /* disabled */
	for (unsigned i = 0; i < 10; i++)
		assert_int_equal(token_bucket_take(&tb, 0), 0);
	token_bucket_init(&tb, S, 0); /* burst 0 is 1 */
	assert_int_equal(token_bucket_take(&tb, 0), 0);
	assert_int_equal(token_bucket_take(&tb, 0), S);
	token_bucket_init(&tb, USEC_INFINITY / 2, UINT32_MAX); /* no overflow */
	assert_int_equal(tb.tolerance, USEC_INFINITY);
	assert_int_equal(token_bucket_take(&tb, 0), 0);
	assert_int_equal(token_bucket_take(&tb, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_distribution),
		cmocka_unit_test(test_exponential_growth_and_cap),
		cmocka_unit_test(test_retry_now),
		cmocka_unit_test(test_auth_schedule),
		cmocka_unit_test(test_fixed_classes),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_deterministic_and_degenerate),
		cmocka_unit_test(test_token_bucket),
		cmocka_unit_test(test_token_bucket_degenerate),
	};
	return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}
