#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <cmocka.h>

#include "helpers.h"
#include "log.h"
#include "secret.h"

static char tmpdir[64];
static struct log_capture logs;

static int group_setup(void **state)
{
	tmpdir_make(tmpdir, sizeof(tmpdir), "secret");
	return 0;
}

static int group_teardown(void **state)
{
	return tmpdir_remove(tmpdir) == 0 ? 0 : -1;
}

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

static void write_file(const char *name, const char *text, mode_t mode, char *ret_path,
		       size_t size)
{
	snprintf(ret_path, size, "%s/%s", tmpdir, name);
	file_write(ret_path, text, strlen(text), mode);
}

/* Fetch, expecting success; the value must be redacted from log lines while held. */
static char *fetch_ok(const struct secret_source *src, usec_t timeout)
{
	char *secret = NULL, *error = NULL;
	int r = secret_fetch(src, "config", "account work", timeout, &secret, &error);

	if (r < 0)
		fail_msg("expected a secret, got %d: %s", r, strna(error));
	assert_null(error);
	return secret;
}

/* Fetch, expecting failure with exactly this message, which must not contain `secret`. */
static void fetch_fails(const struct secret_source *src, usec_t timeout, int expected_r,
			const char *expected, const char *secret)
{
	char *s = NULL, *error = NULL;
	int r = secret_fetch(src, "config", "account work", timeout, &s, &error);

	assert_null(s);
	assert_non_null(error);
	if (!streq(error, expected))
		fail_msg("expected: %s\n     got: %s", expected, error);
	if (secret)
		assert_null(strstr(error, secret));
	assert_int_equal(r, expected_r);
	free(error);
}

#define ARGV(...) ((char *[]){ __VA_ARGS__, NULL })

static void test_value_and_redaction(void **state)
{
	struct secret_source src = { .kind = SECRET_VALUE, .value = "hunter2x", .key = "password",
				     .line = 4 };
	char *s = fetch_ok(&src, USEC_PER_SEC), *s2;

	assert_string_equal(s, "hunter2x");
	log_info("LOGIN me hunter2x");
	assert_string_equal(log_capture_last(&logs), "LOGIN me ***");

	/* A second holder of the same secret keeps it redacted after the first lets go. */
	s2 = fetch_ok(&src, USEC_PER_SEC);
	s = secret_free(s);
	assert_null(s);
	log_info("LOGIN me hunter2x");
	assert_string_equal(log_capture_last(&logs), "LOGIN me ***");
	secret_free(s2);
	log_info("LOGIN me hunter2x");
	assert_string_equal(log_capture_last(&logs), "LOGIN me hunter2x");
	assert_null(secret_free(NULL));

	src.value = "";
	fetch_fails(&src, USEC_PER_SEC, -ENODATA,
		    "config:4: [account work] password: the value is empty", NULL);
	src.kind = SECRET_NONE;
	fetch_fails(&src, USEC_PER_SEC, -EINVAL,
		    "config:4: [account work] password: no secret is configured", NULL);
}

static void test_file(void **state)
{
	char path[256], expected[1024], *s;
	struct secret_source src = { .kind = SECRET_FILE, .value = path, .key = "password_file",
				     .line = 7 };

	write_file("pw", "s3cr3t-line\r\nsecond line\n", 0600, path, sizeof(path));
	s = fetch_ok(&src, USEC_PER_SEC);
	assert_string_equal(s, "s3cr3t-line");
	assert_int_equal(logs.n, 0); /* mode 600: no warning */
	assert_false(secret_check_file_mode(path, "x"));
	log_info("got s3cr3t-line");
	assert_string_equal(log_capture_last(&logs), "got ***");
	secret_free(s);

	/* "~" is expanded. */
	setenv("HOME", tmpdir, 1);
	src.value = "~/pw";
	s = fetch_ok(&src, USEC_PER_SEC);
	assert_string_equal(s, "s3cr3t-line");
	secret_free(s);

	/* Readable by others: fetched, with a warning naming the file and the fix. */
	write_file("open", "no-newline", 0644, path, sizeof(path));
	src.value = path;
	log_capture_clear(&logs);
	s = fetch_ok(&src, USEC_PER_SEC);
	assert_string_equal(s, "no-newline");
	assert_int_equal(logs.n, 1);
	snprintf(expected, sizeof(expected),
		 "config:7: [account work] password_file: \"%s\" is readable by group or others; "
		 "run chmod 600 \"%s\"",
		 path, path);
	assert_string_equal(log_capture_last(&logs), expected);
	assert_true(secret_check_file_mode(path, "here"));
	secret_free(s);

	write_file("empty", "\nsecond\n", 0600, path, sizeof(path));
	snprintf(expected, sizeof(expected),
		 "config:7: [account work] password_file: \"%s\" is empty", path);
	fetch_fails(&src, USEC_PER_SEC, -ENODATA, expected, "second");

	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	snprintf(expected, sizeof(expected),
		 "config:7: [account work] password_file: cannot open \"%s\": No such file or "
		 "directory",
		 path);
	fetch_fails(&src, USEC_PER_SEC, -ENOENT, expected, NULL);
}

static void test_file_too_long(void **state)
{
	char path[256], expected[1024];
	struct secret_source src = { .kind = SECRET_FILE, .value = path, .key = "secret_file",
				     .line = 2 };
	char *big = malloc(70000);

	assert_non_null(big);
	memset(big, 'a', 69999);
	big[69999] = '\0';
	write_file("big", big, 0600, path, sizeof(path));
	free(big);
	snprintf(expected, sizeof(expected),
		 "config:2: [account work] secret_file: \"%s\": first line is longer than 64 KiB",
		 path);
	fetch_fails(&src, USEC_PER_SEC, -E2BIG, expected, NULL);
}

static void test_command(void **state)
{
	struct secret_source src = { .kind = SECRET_COMMAND, .key = "password_command", .line = 7 };
	char *s;

	src.argv = ARGV("/bin/echo", "tok-from-echo");
	s = fetch_ok(&src, 5 * USEC_PER_SEC);
	assert_string_equal(s, "tok-from-echo");
	log_info("token tok-from-echo");
	assert_string_equal(log_capture_last(&logs), "token ***");
	secret_free(s);

	/* Found through PATH; only the first line counts; no trailing newline is fine. */
	src.argv = ARGV("printf", "%s\\nsecond\\n", "first-line");
	s = fetch_ok(&src, 5 * USEC_PER_SEC);
	assert_string_equal(s, "first-line");
	secret_free(s);
	src.argv = ARGV("printf", "bare");
	s = fetch_ok(&src, 5 * USEC_PER_SEC);
	assert_string_equal(s, "bare");
	secret_free(s);

	/* stdin is /dev/null: a command reading it sees end of file at once. */
	src.argv = ARGV("sh", "-c", "cat; echo after-cat");
	s = fetch_ok(&src, 5 * USEC_PER_SEC);
	assert_string_equal(s, "after-cat");
	secret_free(s);

	/* Output beyond the cap is drained, not left to block the command. */
	src.argv = ARGV("sh", "-c", "echo first; head -c 300000 /dev/zero");
	s = fetch_ok(&src, 5 * USEC_PER_SEC);
	assert_string_equal(s, "first");
	secret_free(s);
}

static void test_command_failures(void **state)
{
	struct secret_source src = { .kind = SECRET_COMMAND, .key = "password_command", .line = 7 };

	src.argv = ARGV("false");
	fetch_fails(&src, 5 * USEC_PER_SEC, -EIO,
		    "config:7: [account work] password_command: \"false\" exited with status 1",
		    NULL);
	src.argv = ARGV("sh", "-c", "echo leaked-secret; exit 3");
	fetch_fails(&src, 5 * USEC_PER_SEC, -EIO,
		    "config:7: [account work] password_command: \"sh\" exited with status 3",
		    "leaked-secret");
	src.argv = ARGV("sh", "-c", "kill -9 $$");
	fetch_fails(&src, 5 * USEC_PER_SEC, -EIO,
		    "config:7: [account work] password_command: \"sh\" killed by signal 9", NULL);
	src.argv = ARGV("/nonexistent/pass", "show");
	fetch_fails(&src, 5 * USEC_PER_SEC, -ENOENT,
		    "config:7: [account work] password_command: \"/nonexistent/pass\": cannot run: "
		    "No such file or directory",
		    NULL);
	src.argv = ARGV("imapidled-no-such-command-anywhere");
	fetch_fails(&src, 5 * USEC_PER_SEC, -ENOENT,
		    "config:7: [account work] password_command: "
		    "\"imapidled-no-such-command-anywhere\": cannot run: No such file or directory",
		    NULL);
	src.argv = ARGV("printf", "ab\\000cd\\n");
	fetch_fails(&src, 5 * USEC_PER_SEC, -EBADMSG,
		    "config:7: [account work] password_command: the output of \"printf\": first "
		    "line contains a NUL byte",
		    NULL);
	src.argv = ARGV("true");
	fetch_fails(&src, 5 * USEC_PER_SEC, -ENODATA,
		    "config:7: [account work] password_command: the output of \"true\" is empty",
		    NULL);
	src.argv = ARGV("sh", "-c", "head -c 70000 /dev/zero | tr '\\0' x");
	fetch_fails(&src, 5 * USEC_PER_SEC, -E2BIG,
		    "config:7: [account work] password_command: the output of \"sh\": first line "
		    "is longer than 64 KiB",
		    NULL);
}

static void test_command_timeout(void **state)
{
	struct secret_source src = { .kind = SECRET_COMMAND, .key = "password_command", .line = 7,
				     .argv = ARGV("sleep", "10") };
	usec_t start = now_usec(CLOCK_MONOTONIC);

	fetch_fails(&src, 200 * USEC_PER_MSEC, -ETIME,
		    "config:7: [account work] password_command: \"sleep\" timed out after 200ms",
		    NULL);
	/* Killed, and reaped: well under the 10 s it would have slept. */
	assert_true(now_usec(CLOCK_MONOTONIC) - start < 2 * USEC_PER_SEC);
}

static void test_credential(void **state)
{
	struct secret_source src = { .kind = SECRET_CREDENTIAL, .value = "work.pass",
				     .key = "password_credential", .line = 9 };
	char path[256], *s;

	unsetenv("CREDENTIALS_DIRECTORY");
	fetch_fails(&src, USEC_PER_SEC, -ENXIO,
		    "config:9: [account work] password_credential: $CREDENTIALS_DIRECTORY is not "
		    "set (use LoadCredential= in the unit)",
		    NULL);
	setenv("CREDENTIALS_DIRECTORY", tmpdir, 1);
	write_file("work.pass", "cred-secret\n", 0644, path, sizeof(path));
	log_capture_clear(&logs);
	s = fetch_ok(&src, USEC_PER_SEC);
	assert_string_equal(s, "cred-secret");
	assert_int_equal(logs.n, 0); /* systemd owns the mode: no chmod advice */
	secret_free(s);

	src.value = "../work.pass";
	fetch_fails(&src, USEC_PER_SEC, -EINVAL,
		    "config:9: [account work] password_credential: expected a credential name "
		    "without \"/\"",
		    NULL);
	unsetenv("CREDENTIALS_DIRECTORY");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_value_and_redaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_too_long, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_command_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credential, setup, teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
