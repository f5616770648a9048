#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "helpers.h"
#include "log.h"

static struct log_capture logs;

static int setup(void **state)
{
	log_capture_start(&logs);
	log_set_level(LOG_INFO);
	return 0;
}

static int teardown(void **state)
{
	log_secret_clear();
	log_capture_done(&logs);
	return 0;
}

static void test_levels(void **state)
{
	log_debug("hidden");
	assert_int_equal(logs.n, 0);
	log_info("shown %d", 1);
	assert_int_equal(logs.n, 1);
	assert_string_equal(log_capture_last(&logs), "shown 1");
	assert_int_equal(logs.lines[0].level, LOG_INFO);
	assert_int_equal(log_level_from_string("debug"), LOG_DEBUG);
	assert_int_equal(log_level_from_string("warning"), LOG_WARNING);
	assert_int_equal(log_level_from_string("loud"), -EINVAL);
}

static void test_errno_return_and_percent_m(void **state)
{
	errno = 42;
	assert_int_equal(log_error_errno(ECONNRESET, "x: %m"), -ECONNRESET);
	assert_string_equal(log_capture_last(&logs), "x: Connection reset by peer");
	assert_int_equal(errno, 42); /* preserved */
	assert_int_equal(log_debug_errno(-EIO, "not shown"), -EIO);
}

static void test_redaction(void **state)
{
	assert_int_equal(log_secret_add("hunter2"), 0);
	log_info("LOGIN me hunter2 and again hunter2!");
	assert_string_equal(log_capture_last(&logs), "LOGIN me *** and again ***!");
	log_secret_remove("hunter2");
	log_info("hunter2");
	assert_string_equal(log_capture_last(&logs), "hunter2");
	/* Too short to redact safely: ignored. */
	assert_int_equal(log_secret_add("ab"), 0);
	log_info("abc");
	assert_string_equal(log_capture_last(&logs), "abc");
}

static void test_redaction_counts_holders(void **state)
{
	assert_int_equal(log_secret_add("shared-pass"), 0);
	assert_int_equal(log_secret_add("shared-pass"), 0);
	log_secret_remove("shared-pass");
	log_info("still shared-pass");
	assert_string_equal(log_capture_last(&logs), "still ***");
	log_secret_remove("shared-pass");
	log_info("now shared-pass");
	assert_string_equal(log_capture_last(&logs), "now shared-pass");
}

static void test_control_characters(void **state)
{
	log_warning("server says: evil\r\n<3>forged\x1b[31m");
	assert_string_equal(log_capture_last(&logs), "server says: evil?" "?<3>forged?[31m");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errno_return_and_percent_m, setup, teardown),
		cmocka_unit_test_setup_teardown(test_redaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_redaction_counts_holders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_control_characters, setup, teardown),
	};
	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
