#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "util.h"

static void test_safe_atou64(void **state)
{
	uint64_t v;

	assert_int_equal(safe_atou64("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(safe_atou64("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(safe_atou64("18446744073709551616", &v), -ERANGE);
	assert_int_equal(safe_atou64("", &v), -EINVAL);
	assert_int_equal(safe_atou64("-1", &v), -EINVAL);
	assert_int_equal(safe_atou64("12a", &v), -EINVAL);
	assert_int_equal(safe_atou64(" 1", &v), -EINVAL);
}

static void test_strv(void **state)
{
	_cleanup_strv_free_ char **v = NULL, **c = NULL;

	assert_int_equal(strv_length(v), 0);
	assert_int_equal(strv_extend(&v, "a"), 0);
	assert_int_equal(strv_extend(&v, "b"), 0);
	assert_int_equal(strv_length(v), 2);
	assert_string_equal(v[1], "b");
	assert_null(v[2]);
	c = strv_copy(v);
	assert_true(strv_equal(v, c));
	assert_int_equal(strv_extend(&c, "c"), 0);
	assert_false(strv_equal(v, c));
}

static void test_strstrip(void **state)
{
	char a[] = "  x y \t\n", b[] = "", c[] = "   ";

	assert_string_equal(strstrip(a), "x y");
	assert_string_equal(strstrip(b), "");
	assert_string_equal(strstrip(c), "");
}

static void test_format_duration(void **state)
{
	char buf[32];

	assert_string_equal(format_duration(buf, sizeof(buf), 0), "0s");
	assert_string_equal(format_duration(buf, sizeof(buf), 30 * USEC_PER_SEC), "30s");
	assert_string_equal(format_duration(buf, sizeof(buf), 90 * USEC_PER_MINUTE), "1h30m");
	assert_string_equal(format_duration(buf, sizeof(buf), 1500 * USEC_PER_MSEC), "1s500ms");
	assert_string_equal(format_duration(buf, sizeof(buf), USEC_INFINITY), "infinity");
	/* Two units at most, and no gap: 1h0m5s is "1h", not "1h5s". */
	assert_string_equal(format_duration(buf, sizeof(buf), 15 * USEC_PER_MINUTE +
							      9211481),
			    "15m9s");
	assert_string_equal(format_duration(buf, sizeof(buf), USEC_PER_HOUR + 5 * USEC_PER_SEC),
			    "1h");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_safe_atou64),
		cmocka_unit_test(test_strv),
		cmocka_unit_test(test_strstrip),
		cmocka_unit_test(test_format_duration),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
