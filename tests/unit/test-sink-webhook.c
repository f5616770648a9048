#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <dirent.h>
#include <sys/stat.h>

#include "fsync-probe.h"
#include "helpers.h"
#include "http-test-server.h"
#include "log.h"
#include "sink/webhook.h"

/* The webhook sink on a real loop against the forked loopback server (http-test-server.h),
 * whose answer is chosen by the URL's path. */

#define UIDVALIDITY TEST_UIDVALIDITY
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

struct fixture {
	char dir[64];
	char state[96];
	char log[96];
	struct test_server server;
	sd_event *loop;
	struct sink_webhook *sink;
	struct config_webhook cfg;
	char url[128];
	struct log_capture logs;
	struct mail_event **accepted;
	size_t n_accepted;
	uint32_t push_on_accept; /* accepting this uid pushes uid + 100 from the callback */
};

static void on_accepted(void *userdata, struct mail_event *e)
{
	struct fixture *f = userdata;

	f->accepted = reallocarray(f->accepted, f->n_accepted + 1, sizeof(*f->accepted));
	assert_non_null(f->accepted);
	f->accepted[f->n_accepted++] = mail_event_ref(e);
	if (f->push_on_accept && e->uid == f->push_on_accept) {
		struct mail_event *more = test_event_new(e->mailbox, e->uid + 100);

		assert_int_equal(sink_webhook_push(f->sink, more), 0);
		mail_event_unref(more);
	}
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->dir, sizeof(f->dir), "sink-webhook");
	snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
	snprintf(f->log, sizeof(f->log), "%s/requests", f->dir);
	f->server = test_server_start(f->log);
	assert_int_equal(sd_event_new(&f->loop), 0);
	f->cfg = (struct config_webhook){
		.name = (char *)"hook",
		.url = f->url,
		.timeout = 5 * USEC_PER_SEC,
		.max_retry_age = USEC_PER_DAY,
		.max_in_flight = 8,
		.spool_max_bytes = 1 << 30,
	};
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/status/200", f->server.port);
	log_set_level(LOG_DEBUG);
	log_capture_start(&f->logs);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	f->sink = sink_webhook_free(f->sink);
	f->loop = sd_event_unref(f->loop);
	test_server_stop(&f->server);
	log_capture_done(&f->logs);
	fsync_probe_start("");
	for (size_t i = 0; i < f->n_accepted; i++)
		mail_event_unref(f->accepted[i]);
	free(f->accepted);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

/* ---- Helpers ------------------------------------------------------------------------------ */

static void start(struct fixture *f, const char *path)
{
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d%s", f->server.port, path);
	assert_int_equal(sink_webhook_new(f->loop, &f->cfg, f->state, "config", on_accepted, f,
					  &f->sink),
			 0);
	fsync_probe_start(f->dir); /* what opening the spool synced does not count */
}

static void push(struct fixture *f, const char *mailbox, uint32_t uid)
{
	struct mail_event *e = test_event_new(mailbox, uid);

	assert_int_equal(sink_webhook_push(f->sink, e), 0);
	mail_event_unref(e);
}

static struct sink_webhook_stats stats(struct fixture *f)
{
	struct sink_webhook_stats st;

	sink_webhook_get_stats(f->sink, &st);
	return st;
}

/* Runs the loop until cond holds (or limit passes); returns whether it held. */
#define RUN_UNTIL(f, cond, limit) LOOP_RUN_UNTIL((f)->loop, cond, limit)

static bool logged(const struct fixture *f, const char *needle)
{
	return log_capture_has(&f->logs, needle);
}

static char *requests(struct fixture *f)
{
	return file_text(f->log);
}

static size_t count_files(const struct fixture *f, const char *sub)
{
	char path[192];

	snprintf(path, sizeof(path), "%s/spool/hook/%s", f->state, sub);
	return dir_count(path);
}

static void assert_accepted_in_order(const struct fixture *f, const uint32_t *uids, size_t n)
{
	assert_int_equal(f->n_accepted, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(f->accepted[i]->uid, uids[i]);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* ---- Signing ------------------------------------------------------------------------------ */

static void test_signature_vector(void **state)
{
	/* The Standard Webhooks example, recomputed with Python's hmac module. */
	static const char body[] = "{\"test\": 2432232314}";
	char sig[SINK_WEBHOOK_SIGNATURE_MAX];
	uint8_t *key = NULL;
	size_t len = 0;

	assert_int_equal(sink_webhook_key(SECRET, &key, &len), 0);
	assert_int_equal(len, 24);
	assert_int_equal(sink_webhook_sign(key, len, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
					   body, strlen(body), sig),
			 0);
	assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
	free(key);
}

static void test_key_forms(void **state)
{
	uint8_t *key = NULL;
	size_t len = 0;

	assert_int_equal(sink_webhook_key("plain secret", &key, &len), 0);
	assert_int_equal(len, 12);
	assert_memory_equal(key, "plain secret", 12);
	free(key);
	assert_int_equal(sink_webhook_key("whsec_YWJj", &key, &len), 0); /* "abc" */
	assert_int_equal(len, 3);
	assert_memory_equal(key, "abc", 3);
	free(key);
	assert_int_equal(sink_webhook_key("whsec_YWI=", &key, &len), 0); /* "ab" */
	assert_int_equal(len, 2);
	free(key);
	assert_int_equal(sink_webhook_key("whsec_", &key, &len), -EINVAL);
	assert_int_equal(sink_webhook_key("whsec_YW", &key, &len), -EINVAL);
	assert_int_equal(sink_webhook_key("whsec_YW=j", &key, &len), -EINVAL);
	assert_int_equal(sink_webhook_key("whsec_Y!Jj", &key, &len), -EINVAL);
	assert_int_equal(sink_webhook_key("", &key, &len), -EINVAL);
}

/* ---- Spooling from the loop ------------------------------------------------------------- */

static void test_push_spools_from_the_loop(void **state)
{
	static const uint32_t uids[] = { 1, 2, 3, 4, 5 };
	struct fixture *f = *state;

	/* A receiver that never answers: what is spooled stays there. */
	f->cfg.timeout = 30 * USEC_PER_SEC;
	start(f, "/slow");
	for (size_t i = 0; i < 5; i++)
		push(f, i % 2 ? "Other" : "INBOX", uids[i]);
	/* push touched no disk and accepted nothing. */
	assert_int_equal(fsync_probe.files + fsync_probe.dirs, 0);
	assert_int_equal(count_files(f, "new"), 0);
	assert_int_equal(count_files(f, "tmp"), 0);
	assert_int_equal(f->n_accepted, 0);
	assert_int_equal(stats(f).queued, 5);
	assert_int_equal(stats(f).spooled, 0);
	/* One turn of the loop: every file fsynced, one directory fsync for the batch, and
	 * only then the acceptances, in push order. */
	assert_true(sd_event_run(f->loop, 0) > 0);
	assert_int_equal(fsync_probe.files, 5);
	assert_int_equal(fsync_probe.dirs, 1);
	assert_int_equal(count_files(f, "new"), 5);
	assert_int_equal(count_files(f, "tmp"), 0);
	assert_accepted_in_order(f, uids, 5);
	assert_int_equal(stats(f).queued, 0);
	assert_int_equal(stats(f).spooled, 5);
	/* And the deliveries started. */
	assert_true(stats(f).in_flight > 0);
}

/* Each sink's work at normal priority, pending in the same turn, goes first. */
static int on_normal(sd_event_source *source, void *userdata)
{
	struct fixture *f = userdata;

	assert_int_equal(count_files(f, "new"), 0);
	assert_int_equal(fsync_probe.files + fsync_probe.dirs, 0);
	assert_int_equal(f->n_accepted, 0);
	return sd_event_source_set_enabled(source, SD_EVENT_OFF);
}

static void test_spooling_yields_to_normal_priority(void **state)
{
	struct fixture *f = *state;
	sd_event_source *other = NULL;

	start(f, "/status/200");
	push(f, "INBOX", 1);
	assert_int_equal(sd_event_add_defer(f->loop, &other, on_normal, f), 0);
	assert_true(sd_event_run(f->loop, 0) > 0);
	assert_int_equal(sd_event_source_get_enabled(other, NULL), 0); /* it ran, the sink not */
	assert_int_equal(f->n_accepted, 0);
	assert_true(sd_event_run(f->loop, 0) > 0);
	assert_int_equal(f->n_accepted, 1);
	assert_int_equal(count_files(f, "new") + stats(f).delivered, 1);
	sd_event_source_disable_unref(other);
}

static void test_push_from_accepted(void **state)
{
	static const uint32_t uids[] = { 1, 2, 101 };
	struct fixture *f = *state;

	f->cfg.timeout = 30 * USEC_PER_SEC;
	f->push_on_accept = 1;
	start(f, "/slow");
	push(f, "INBOX", 1);
	push(f, "INBOX", 2);
	assert_true(sd_event_run(f->loop, 0) > 0);
	/* The event pushed while 1 was accepted waits for the next turn, behind 2. */
	assert_accepted_in_order(f, uids, 2);
	assert_int_equal(stats(f).queued, 1);
	assert_true(RUN_UNTIL(f, f->n_accepted == 3, 5 * USEC_PER_SEC));
	assert_accepted_in_order(f, uids, 3);
	assert_int_equal(fsync_probe.dirs, 2);
}

static void test_spool_write_failure_holds(void **state)
{
	static const uint32_t uids[] = { 1, 2, 3 };
	struct fixture *f = *state;

	/* A receiver that fails: each answer (a retry within 1-2 s) is a finished request,
	 * which tries the held events again, as a delivery freeing space does. */
	start(f, "/status/503");
	push(f, "INBOX", 1);
	assert_true(RUN_UNTIL(f, f->n_accepted == 1, 5 * USEC_PER_SEC));
	fsync_probe.dir_error = EIO;
	push(f, "INBOX", 2);
	push(f, "Other", 3);
	assert_true(RUN_UNTIL(f, stats(f).held == 2, 5 * USEC_PER_SEC));
	assert_true(logged(f, "cannot write to the spool"));
	assert_int_equal(f->n_accepted, 1);
	assert_int_equal(stats(f).spooled, 1);
	assert_int_equal(count_files(f, "new"), 1); /* nothing half-written left behind */
	assert_int_equal(count_files(f, "tmp"), 0);
	fsync_probe.dir_error = 0;
	assert_true(RUN_UNTIL(f, f->n_accepted == 3, 10 * USEC_PER_SEC));
	assert_accepted_in_order(f, uids, 3);
	assert_int_equal(stats(f).held, 0);
	assert_int_equal(stats(f).spooled, 3);
	assert_true(logged(f, "the spool has room again"));
}

static void test_free_leaves_queued_unaccepted(void **state)
{
	struct fixture *f = *state;

	start(f, "/status/200");
	push(f, "INBOX", 1);
	push(f, "INBOX", 2);
	/* Freed before the loop ran (a shutdown): not written, never accepted, so the mailbox
	 * state never passed them and the next start finds them on the server. */
	f->sink = sink_webhook_free(f->sink);
	assert_int_equal(f->n_accepted, 0);
	assert_int_equal(fsync_probe.files + fsync_probe.dirs, 0);
	assert_int_equal(count_files(f, "new"), 0);
	assert_int_equal(count_files(f, "tmp"), 0);
	start(f, "/status/200");
	assert_false(logged(f, "undelivered events in the spool"));
	RUN_UNTIL(f, false, 500 * USEC_PER_MSEC);
	assert_int_equal(f->n_accepted, 0);
	assert_int_equal(count(requests(f), "POST"), 0);
}

/* ---- Delivery ----------------------------------------------------------------------------- */

static void test_deliver_in_order(void **state)
{
	struct fixture *f = *state;
	char *log;

	start(f, "/status/200");
	for (uint32_t uid = 1; uid <= 20; uid++)
		push(f, uid % 2 ? "INBOX" : "Other", uid);
	assert_int_equal(f->n_accepted, 0); /* never from inside push */
	assert_true(RUN_UNTIL(f, stats(f).delivered == 20, 10 * USEC_PER_SEC));
	assert_int_equal(f->n_accepted, 20);
	for (uint32_t i = 0; i < 20; i++)
		assert_int_equal(f->accepted[i]->uid, i + 1);
	assert_int_equal(stats(f).spooled, 0);
	log = requests(f);
	assert_int_equal(count(log, "POST /status/200"), 20);
	/* Per mailbox, in UID order. */
	for (const char *mb = "INBOX", *p = log; mb; mb = streq(mb, "INBOX") ? "Other" : NULL) {
		uint32_t last = 0;
		char pat[64];

		snprintf(pat, sizeof(pat), "\"mailbox\":\"%s\",\"uidvalidity\":%u,\"uid\":", mb,
			 UIDVALIDITY);
		for (p = strstr(log, pat); p; p = strstr(p + 1, pat)) {
			uint32_t uid = (uint32_t)strtoul(p + strlen(pat), NULL, 10);

			assert_true(uid > last);
			last = uid;
		}
		assert_true(last >= 19);
	}
}

static void test_restart_resumes_spool(void **state)
{
	struct fixture *f = *state;
	int port = f->server.port;

	/* A receiver that never answers in time: the events stay spooled. */
	f->cfg.timeout = 30 * USEC_PER_SEC;
	start(f, "/slow");
	push(f, "INBOX", 1);
	push(f, "INBOX", 2);
	assert_true(RUN_UNTIL(f, f->n_accepted == 2, 5 * USEC_PER_SEC));
	assert_int_equal(stats(f).spooled, 2);
	f->sink = sink_webhook_free(f->sink); /* like a SIGKILL: the spool stays */
	test_server_stop(&f->server);
	f->server = test_server_start(f->log);
	assert_int_not_equal(f->server.port, 0);
	(void)port;
	start(f, "/status/200");
	assert_true(logged(f, "2 undelivered events in the spool"));
	assert_true(RUN_UNTIL(f, stats(f).delivered == 2, 10 * USEC_PER_SEC));
	assert_int_equal(count(requests(f), "POST /status/200"), 2);
}

static void test_400_dropped(void **state)
{
	struct fixture *f = *state;

	start(f, "/status/400");
	push(f, "INBOX", 1);
	assert_true(RUN_UNTIL(f, stats(f).dropped == 1, 5 * USEC_PER_SEC));
	assert_int_equal(stats(f).spooled, 0);
	assert_true(logged(f, "with HTTP 400, dropping 1 event(s); answer: \"status 400\""));
	RUN_UNTIL(f, false, 1500 * USEC_PER_MSEC);
	assert_int_equal(count(requests(f), "POST"), 1);
}

static void test_410_disables(void **state)
{
	struct fixture *f = *state;

	start(f, "/status/410");
	push(f, "INBOX", 1);
	push(f, "Other", 2);
	assert_true(RUN_UNTIL(f, stats(f).disabled, 5 * USEC_PER_SEC));
	RUN_UNTIL(f, stats(f).in_flight == 0, 5 * USEC_PER_SEC);
	push(f, "INBOX", 3);
	RUN_UNTIL(f, false, 1500 * USEC_PER_MSEC);
	assert_int_equal(f->n_accepted, 3); /* still spooled and accepted */
	assert_int_equal(stats(f).spooled, 3);
	assert_int_equal(count(requests(f), "POST"), 2);
	assert_true(logged(f, "410 Gone"));
}

static void test_retry_then_give_up(void **state)
{
	struct fixture *f = *state;

	f->cfg.max_retry_age = 2 * USEC_PER_SEC;
	start(f, "/status/503");
	push(f, "INBOX", 1);
	assert_true(RUN_UNTIL(f, stats(f).dropped == 1, 15 * USEC_PER_SEC));
	assert_true(count(requests(f), "POST") >= 2);
	assert_true(logged(f, "delivery failed (HTTP 503)"));
	assert_true(logged(f, "giving up on event"));
}

static void test_spool_full_holds(void **state)
{
	struct fixture *f = *state;
	struct mail_event *e = test_event_new("INBOX", 1);
	char *json = NULL;

	assert_int_equal(mail_event_to_json(e, time(NULL), &json), 0);
	f->cfg.spool_max_bytes = strlen(json) + strlen(json) / 2;
	free(json);
	mail_event_unref(e);
	f->cfg.timeout = 30 * USEC_PER_SEC;
	start(f, "/status/200");
	for (uint32_t uid = 1; uid <= 4; uid++)
		push(f, "INBOX", uid);
	assert_int_equal(stats(f).queued, 4); /* push writes nothing, so it cannot fail yet */
	assert_int_equal(stats(f).held, 0);
	assert_true(sd_event_run(f->loop, 0) > 0);
	assert_int_equal(stats(f).held, 3);
	assert_int_equal(stats(f).queued, 0);
	assert_int_equal(f->n_accepted, 1);
	assert_true(logged(f, "spool full ("));
	assert_true(RUN_UNTIL(f, stats(f).delivered == 4, 10 * USEC_PER_SEC));
	assert_int_equal(f->n_accepted, 4);
	for (uint32_t i = 0; i < 4; i++)
		assert_int_equal(f->accepted[i]->uid, i + 1);
	assert_true(logged(f, "the spool has room again"));
}

static void test_batch(void **state)
{
	struct fixture *f = *state;
	char *log;

	f->cfg.batch = true;
	f->cfg.max_in_flight = 1;
	start(f, "/status/200");
	for (uint32_t uid = 1; uid <= 5; uid++)
		push(f, uid % 2 ? "INBOX" : "Other", uid);
	assert_true(RUN_UNTIL(f, stats(f).delivered == 5, 10 * USEC_PER_SEC));
	log = requests(f);
	assert_int_equal(count(log, "POST"), 1);
	assert_non_null(strstr(log, "{\"type\":\"mail.batch\",\"timestamp\":\""));
	assert_int_equal(count(log, "\"type\":\"mail.received\""), 5);
}

static void test_new_invalid(void **state)
{
	struct fixture *f = *state;
	struct sink_webhook *s = NULL;

	f->cfg.name = (char *)"..";
	assert_int_equal(sink_webhook_new(f->loop, &f->cfg, f->state, "config", NULL, NULL, &s),
			 -EINVAL);
	f->cfg.name = (char *)"hook";
	f->cfg.secret = (struct secret_source){ .kind = SECRET_VALUE, .value = (char *)"whsec_!",
						.key = (char *)"secret" };
	assert_int_equal(sink_webhook_new(f->loop, &f->cfg, f->state, "config", NULL, NULL, &s),
			 -EINVAL);
	assert_null(sink_webhook_free(NULL));
}

/* Not a check but a measurement for the report: 10,000 events waiting in the spool for a
 * receiver that refuses connections, 100 mailboxes. */
static long rss_kib(void)
{
	FILE *s = fopen("/proc/self/status", "re");
	char line[256];
	long v = -1;

	while (s && fgets(line, sizeof(line), s))
		if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
			break;
	if (s)
		fclose(s);
	return v;
}

static void test_ten_thousand_waiting(void **state)
{
	struct fixture *f = *state;
	char mb[16];
	long before, after;
	usec_t t0;

	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/", test_closed_port());
	f->cfg.url = f->url;
	log_set_level(LOG_WARNING);
	assert_int_equal(sink_webhook_new(f->loop, &f->cfg, f->state, "config", on_accepted, f,
					  &f->sink),
			 0);
	before = rss_kib();
	t0 = now_usec(CLOCK_MONOTONIC);
	for (uint32_t i = 0; i < 10000; i++) {
		snprintf(mb, sizeof(mb), "box%u", i % 100);
		push(f, mb, i / 100 + 1);
		if (i % 500 == 499)
			assert_true(sd_event_run(f->loop, 0) >= 0);
	}
	assert_true(RUN_UNTIL(f, f->n_accepted == 10000, 60 * USEC_PER_SEC));
	fprintf(stderr, "10000 events spooled (fsync each, one per directory per turn) in %.2f s\n",
		(double)(now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_SEC);
	for (size_t i = 0; i < f->n_accepted; i++)
		f->accepted[i] = mail_event_unref(f->accepted[i]);
	f->n_accepted = 0;
	RUN_UNTIL(f, false, 3 * USEC_PER_SEC); /* a few rounds of retries */
	after = rss_kib();
	fprintf(stderr, "VmRSS %ld KiB before, %ld KiB with 10000 waiting (+%ld KiB), spooled %zu\n",
		before, after, after - before, stats(f).spooled);
	assert_int_equal(stats(f).spooled, 10000);
	assert_int_equal(stats(f).delivered, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signature_vector),
		cmocka_unit_test(test_key_forms),
		cmocka_unit_test_setup_teardown(test_push_spools_from_the_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spooling_yields_to_normal_priority, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_push_from_accepted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_write_failure_holds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_leaves_queued_unaccepted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_resumes_spool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_400_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_410_disables, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_then_give_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_full_holds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_invalid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ten_thousand_waiting, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("sink-webhook", tests, NULL, NULL);
}
