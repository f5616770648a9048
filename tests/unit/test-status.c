#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "status.h"

static void check(const struct status_counts *c, const char *want)
{
	char buf[256];

	status_format(c, buf, sizeof(buf));
	assert_string_equal(buf, want);
}

static void test_format(void **state)
{
	struct status_counts c = { .mailboxes = 5, .idle = 5 };

	check(&c, "5/5 mailboxes idle");
	c.idle = 4;
	c.accounts_failing = 1;
	c.reason = "login as me rejected: Authentication failed.";
	c.reason_class = BACKOFF_AUTH;
	check(&c, "4/5 mailboxes idle · 1 account reconnecting (auth failed)");
	c.accounts_failing = 2;
	c.reason = "connection refused";
	c.reason_class = BACKOFF_RETRY_LATER;
	check(&c, "4/5 mailboxes idle · 2 accounts reconnecting (connection refused)");
	c.phase = "shutting down";
	check(&c, "shutting down");
}

static void test_long_reason_is_cut_on_a_character(void **state)
{
	/* 39 ASCII bytes, then a two-byte character straddling the 40-byte limit. */
	struct status_counts c = { .mailboxes = 1, .accounts_failing = 1,
				   .reason = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaé and more",
				   .reason_class = BACKOFF_RETRY_NOW };

	check(&c, "0/1 mailboxes idle · 1 account reconnecting "
		  "(aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…)");
}

static void test_last_mail_and_small_buffers(void **state)
{
	struct status_counts c = { .mailboxes = 1, .idle = 1 };
	char buf[8];

	setenv("TZ", "UTC", 1);
	c.last_mail = (usec_t)time(NULL) * USEC_PER_SEC;
	status_format(&c, buf, sizeof(buf));
	assert_string_equal(buf, "1/1 mai"); /* cut, terminated */
	c.last_mail = 86400ULL * USEC_PER_SEC; /* 1970-01-02: not today */
	check(&c, "1/1 mailboxes idle · last mail 1970-01-02 00:00");
	status_format(&c, buf, 0); /* nothing written, nothing overrun */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_long_reason_is_cut_on_a_character),
		cmocka_unit_test(test_last_mail_and_small_buffers),
	};
	return cmocka_run_group_tests_name("status", tests, NULL, NULL);
}
