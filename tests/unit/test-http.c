#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "helpers.h"
#include "http-test-server.h"
#include "log.h"
#include "net/http.h"

/* net/http against a forked loopback server (http-test-server.h) on a real sd-event loop. */

struct fixture {
	char dir[64];
	char log[96];
	struct test_server server;
	sd_event *loop;
	struct http_client *client;
	int calls;
	struct http_response resp;
	char body[HTTP_BODY_KEEP + 1];
	char error[CURL_ERROR_SIZE];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->dir, sizeof(f->dir), "http");
	snprintf(f->log, sizeof(f->log), "%s/requests", f->dir);
	f->server = test_server_start(f->log);
	assert_int_equal(sd_event_new(&f->loop), 0);
	assert_int_equal(http_client_new(f->loop, &f->client), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	f->client = http_client_free(f->client);
	f->loop = sd_event_unref(f->loop);
	test_server_stop(&f->server);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static void on_done(void *userdata, const struct http_response *resp)
{
	struct fixture *f = userdata;

	f->calls++;
	f->resp = *resp;
	memcpy(f->body, resp->body, resp->body_len + 1);
	f->resp.body = f->body;
	snprintf(f->error, sizeof(f->error), "%s", strempty(resp->error));
	f->resp.error = f->error;
}

static void run_until_done(struct fixture *f, int calls, usec_t limit)
{
	LOOP_RUN_UNTIL(f->loop, f->calls >= calls, limit);
}

static void post(struct fixture *f, const char *path, usec_t timeout, struct http_request **ret)
{
	char url[128];
	char *const headers[] = { (char *)"content-type: application/json",
				  (char *)"x-test: yes", NULL };

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", f->server.port, path);
	assert_int_equal(http_post(f->client, url, headers, "{\"a\":1}", 7, timeout, NULL, on_done,
				   f, ret),
			 0);
}

static void test_200(void **state)
{
	struct fixture *f = *state;

	post(f, "/status/200", 5 * USEC_PER_SEC, NULL);
	assert_int_equal(f->calls, 0); /* never from inside http_post() */
	run_until_done(f, 1, 5 * USEC_PER_SEC);
	assert_int_equal(f->calls, 1);
	assert_int_equal(f->resp.status, 200);
	assert_string_equal(f->body, "status 200");
	assert_true(f->resp.retry_after == USEC_INFINITY);
	assert_string_equal(file_text(f->log), "POST /status/200\n{\"a\":1}\n");
	assert_int_equal(http_client_in_flight(f->client), 0);
}

static void test_500_then_404(void **state)
{
	struct fixture *f = *state;

	post(f, "/status/500", 5 * USEC_PER_SEC, NULL);
	run_until_done(f, 1, 5 * USEC_PER_SEC);
	assert_int_equal(f->resp.status, 500);
	post(f, "/status/404", 5 * USEC_PER_SEC, NULL);
	run_until_done(f, 2, 5 * USEC_PER_SEC);
	assert_int_equal(f->resp.status, 404);
	assert_string_equal(f->body, "status 404");
}

static void test_timeout(void **state)
{
	struct fixture *f = *state;
	usec_t t0 = now_usec(CLOCK_MONOTONIC);

	post(f, "/slow", 1 * USEC_PER_SEC, NULL);
	run_until_done(f, 1, 5 * USEC_PER_SEC);
	assert_int_equal(f->calls, 1);
	assert_int_equal(f->resp.status, -ETIMEDOUT);
	assert_true(f->error[0] != '\0');
	assert_true(now_usec(CLOCK_MONOTONIC) - t0 < 3 * USEC_PER_SEC);
}

static void test_refused(void **state)
{
	struct fixture *f = *state;
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", test_closed_port());
	assert_int_equal(http_post(f->client, url, NULL, "x", 1, 5 * USEC_PER_SEC, NULL, on_done, f,
				   NULL),
			 0);
	run_until_done(f, 1, 5 * USEC_PER_SEC);
	assert_int_equal(f->resp.status, -ECONNREFUSED);
}

static void test_redirect_not_followed(void **state)
{
	struct fixture *f = *state;

	post(f, "/redirect", 5 * USEC_PER_SEC, NULL);
	run_until_done(f, 1, 5 * USEC_PER_SEC);
	assert_int_equal(f->resp.status, 301);
	assert_string_equal(file_text(f->log), "POST /redirect\n{\"a\":1}\n");
}

static void test_retry_after(void **state)
{
	struct fixture *f = *state;

	post(f, "/retry/120", 5 * USEC_PER_SEC, NULL);
	run_until_done(f, 1, 5 * USEC_PER_SEC);
	assert_int_equal(f->resp.status, 503);
	assert_true(f->resp.retry_after == 120 * USEC_PER_SEC);
	post(f, "/retry/Wed,_21_Oct_2015_07:28:00_GMT", 5 * USEC_PER_SEC, NULL);
	run_until_done(f, 2, 5 * USEC_PER_SEC);
	assert_true(f->resp.retry_after == 0); /* in the past */
	post(f, "/retry/soon", 5 * USEC_PER_SEC, NULL);
	run_until_done(f, 3, 5 * USEC_PER_SEC);
	assert_true(f->resp.retry_after == USEC_INFINITY);
}

static void test_parse_retry_after(void **state)
{
	time_t now = 1445412480; /* Wed, 21 Oct 2015 07:28:00 GMT */

	assert_true(http_parse_retry_after(" 5 ", now) == 5 * USEC_PER_SEC);
	assert_true(http_parse_retry_after("0", now) == 0);
	assert_true(http_parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now) ==
		    60 * USEC_PER_SEC);
	assert_true(http_parse_retry_after("99999999999", now) == HTTP_RETRY_AFTER_MAX);
	assert_true(http_parse_retry_after("-5", now) == USEC_INFINITY);
	assert_true(http_parse_retry_after("5s", now) == USEC_INFINITY);
	assert_true(http_parse_retry_after("", now) == USEC_INFINITY);
}

static void test_body_capped(void **state)
{
	struct fixture *f = *state;

	post(f, "/big", 5 * USEC_PER_SEC, NULL);
	run_until_done(f, 1, 5 * USEC_PER_SEC);
	assert_int_equal(f->resp.status, 200);
	assert_int_equal(f->resp.body_len, HTTP_BODY_KEEP);
	assert_true(f->resp.body_truncated);
}

static void test_cancel(void **state)
{
	struct fixture *f = *state;
	struct http_request *r = NULL;

	post(f, "/slow", 5 * USEC_PER_SEC, &r);
	run_until_done(f, 1, 300 * USEC_PER_MSEC); /* connected and sent by now */
	assert_int_equal(http_client_in_flight(f->client), 1);
	assert_null(http_request_cancel(r));
	assert_int_equal(http_client_in_flight(f->client), 0);
	run_until_done(f, 1, 300 * USEC_PER_MSEC);
	assert_int_equal(f->calls, 0);
	/* Free with a request in flight: no callback either. */
	post(f, "/slow", 5 * USEC_PER_SEC, NULL);
	f->client = http_client_free(f->client);
	assert_int_equal(f->calls, 0);
}

static void test_many_in_flight(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < 8; i++)
		post(f, "/status/204", 5 * USEC_PER_SEC, NULL);
	assert_int_equal(http_client_in_flight(f->client), 8);
	run_until_done(f, 8, 10 * USEC_PER_SEC);
	assert_int_equal(f->calls, 8);
	assert_int_equal(f->resp.status, 204);
}

static void test_invalid(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(http_post(NULL, "http://x/", NULL, "", 0, 0, NULL, on_done, f, NULL),
			 -EINVAL);
	assert_int_equal(http_post(f->client, NULL, NULL, "", 0, 0, NULL, on_done, f, NULL),
			 -EINVAL);
	assert_null(http_client_free(NULL));
	assert_null(http_request_cancel(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_200, setup, teardown),
		cmocka_unit_test_setup_teardown(test_500_then_404, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_redirect_not_followed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_after, setup, teardown),
		cmocka_unit_test(test_parse_retry_after),
		cmocka_unit_test_setup_teardown(test_body_capped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
