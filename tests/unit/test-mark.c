/* The marker against a scripted IMAP server on the same event loop (real TCP on loopback):
 * the exact commands per connection, one connection per account at a time, merged
 * duplicates, UIDVALIDITY mismatch without STORE, and the log lines that report the outcome. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "event.h"
#include "helpers.h"
#include "log.h"
#include "mark.h"
#include "net/resolve.h"
#include "util.h"

#define MAX_CONNS 16

struct server_conn {
	struct server *server;
	int fd;
	sd_event_source *io;
	char in[4096];
	size_t in_len;
	char transcript[4096]; /* every line the client sent, tags stripped */
	size_t t_len;
};

struct server {
	int lfd;
	uint16_t port;
	sd_event_source *io;
	uint32_t uidvalidity; /* what SELECT says */
	bool refuse_store;
	struct server_conn conns[MAX_CONNS];
	size_t n_conns;
	unsigned open, max_open;
};

struct env {
	sd_event *event;
	struct resolver *resolver;
	struct server server;
	struct config_account cfg;
	struct marker *marker;
	char log[16384];
	size_t log_len;
};

/* ---------------------------------------------------------------- the scripted server */

static void say(struct server_conn *c, const char *text)
{
	assert_int_equal(write(c->fd, text, strlen(text)), (ssize_t)strlen(text));
}

static void conn_close(struct server_conn *c)
{
	c->io = sd_event_source_disable_unref(c->io);
	close(c->fd);
	c->fd = -1;
	c->server->open--;
}

static bool startswith(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* One command line: answer it like Dovecot would, in short. */
static void on_line(struct server_conn *c, char *line)
{
	char *sp = strchr(line, ' '), reply[4096 + 256];
	const char *tag = line, *cmd = sp ? sp + 1 : "";

	if (!sp)
		fail_msg("no tag in \"%s\"", line);
	*sp = '\0';
	snprintf(c->transcript + c->t_len, sizeof(c->transcript) - c->t_len, "%s\n", cmd);
	c->t_len += strlen(c->transcript + c->t_len);
	if (startswith(cmd, "AUTHENTICATE PLAIN ")) {
		snprintf(reply, sizeof(reply), "%s OK [CAPABILITY IMAP4rev1 IDLE] in\r\n", tag);
	} else if (startswith(cmd, "SELECT ")) {
		snprintf(reply, sizeof(reply),
			 "* 3 EXISTS\r\n* OK [UIDVALIDITY %u] x\r\n* OK [UIDNEXT 9] x\r\n"
			 "%s OK [READ-WRITE] Select completed\r\n",
			 c->server->uidvalidity, tag);
	} else if (startswith(cmd, "UID STORE ")) {
		snprintf(reply, sizeof(reply), "%s %s\r\n", tag,
			 c->server->refuse_store ? "NO [READ-ONLY] read-only" : "OK Stored");
	} else if (streq(cmd, "LOGOUT")) {
		snprintf(reply, sizeof(reply), "* BYE bye\r\n%s OK out\r\n", tag);
		say(c, reply);
		conn_close(c);
		return;
	} else {
		snprintf(reply, sizeof(reply), "%s BAD what\r\n", tag);
	}
	say(c, reply);
}

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct server_conn *c = userdata;
	ssize_t n = read(fd, c->in + c->in_len, sizeof(c->in) - c->in_len - 1);
	char *eol;

	if (n <= 0) {
		conn_close(c);
		return 0;
	}
	c->in_len += (size_t)n;
	c->in[c->in_len] = '\0';
	while (c->fd >= 0 && (eol = strstr(c->in, "\r\n"))) {
		size_t used = (size_t)(eol - c->in) + 2;
		*eol = '\0';
		on_line(c, c->in);
		memmove(c->in, c->in + used, c->in_len - used + 1);
		c->in_len -= used;
	}
	return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct server *srv = userdata;
	struct server_conn *c;
	int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

	assert_true(cfd >= 0);
	assert_true(srv->n_conns < MAX_CONNS);
	c = &srv->conns[srv->n_conns++];
	*c = (struct server_conn){ .server = srv, .fd = cfd };
	srv->open++;
	srv->max_open = MAX(srv->max_open, srv->open);
	assert_int_equal(sd_event_add_io(sd_event_source_get_event(s), &c->io, cfd, EPOLLIN,
					 on_conn_io, c),
			 0);
	say(c, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n");
	return 0;
}

static void server_start(struct env *env)
{
	struct server *s = &env->server;
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);

	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->lfd, 8), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &len), 0);
	s->port = ntohs(sa.sin_port);
	assert_int_equal(sd_event_add_io(env->event, &s->io, s->lfd, EPOLLIN, on_accept, s), 0);
}

/* ---------------------------------------------------------------- the marker's side */

static int lookup(void *userdata, const char *name, struct marker_account *ret)
{
	struct env *env = userdata;

	if (!streq(name, "work"))
		return -ENOENT;
	*ret = (struct marker_account){ &env->cfg, "secret" };
	return 0;
}

static void capture_log(int level, const char *line, void *userdata)
{
	struct env *env = userdata;

	if (level > LOG_INFO)
		return;
	snprintf(env->log + env->log_len, sizeof(env->log) - env->log_len, "%s\n", line);
	env->log_len += strlen(env->log + env->log_len);
}

static int setup(void **state)
{
	struct env *env = calloc(1, sizeof(*env));

	assert_non_null(env);
	assert_int_equal(sd_event_new(&env->event), 0);
	env->resolver = resolver_new(env->event);
	assert_non_null(env->resolver);
	env->server.uidvalidity = 7;
	server_start(env);
	env->cfg = (struct config_account){
		.name = (char *)"work",
		.host = (char *)"127.0.0.1",
		.port = env->server.port,
		.tls = TLS_NONE,
		.allow_plaintext = true,
		.username = (char *)"alice",
		.auth = AUTH_AUTO,
		.connect_timeout = 5 * USEC_PER_SEC,
		.reply_timeout = 5 * USEC_PER_SEC,
	};
	assert_int_equal(marker_new(env->event, env->resolver, lookup, env, &env->marker), 0);
	log_set_level(LOG_INFO);
	log_set_sink(capture_log, env);
	*state = env;
	return 0;
}

static int teardown(void **state)
{
	struct env *env = *state;

	log_set_sink(NULL, NULL);
	env->marker = marker_free(env->marker);
	loop_drain(env->event);
	for (size_t i = 0; i < env->server.n_conns; i++)
		if (env->server.conns[i].fd >= 0)
			conn_close(&env->server.conns[i]);
	sd_event_source_disable_unref(env->server.io);
	close(env->server.lfd);
	resolver_free(env->resolver);
	sd_event_unref(env->event);
	free(env);
	return 0;
}

static void mark(struct env *env, const char *account, uint32_t uidvalidity, uint32_t uid,
		 int expected)
{
	struct mail_event_input in = { .account = account, .mailbox = "INBOX",
				       .uidvalidity = uidvalidity, .uid = uid };
	struct mail_event *e = NULL;

	assert_int_equal(mail_event_new_received(&in, &e), 0);
	assert_int_equal(marker_mark_seen(env->marker, e), expected);
	mail_event_unref(e);
}

static void run_until_done(struct env *env)
{
	assert_true(
	    LOOP_RUN_UNTIL(env->event, marker_pending(env->marker) == 0, 10 * USEC_PER_SEC));
	loop_drain(env->event);
}

#define STORE_TRANSCRIPT(uid) \
	"AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\nSELECT INBOX\n" \
	"UID STORE " uid " +FLAGS.SILENT (\\Seen)\nLOGOUT\n"

/* ---------------------------------------------------------------- tests */

static void test_one(void **state)
{
	struct env *env = *state;

	mark(env, "work", 7, 5, 0);
	run_until_done(env);
	assert_int_equal(env->server.n_conns, 1);
	assert_string_equal(env->server.conns[0].transcript, STORE_TRANSCRIPT("5"));
	assert_non_null(strstr(env->log, "work/INBOX: marked UID 5 as read\n"));
}

static void test_queue_one_at_a_time_and_merge(void **state)
{
	struct env *env = *state;

	mark(env, "work", 7, 5, 0);
	mark(env, "work", 7, 6, 0);
	mark(env, "work", 7, 5, 0); /* merged with the first */
	mark(env, "work", 7, 6, 0); /* merged with the second */
	assert_int_equal(marker_pending(env->marker), 2);
	run_until_done(env);
	assert_int_equal(env->server.n_conns, 2);
	assert_int_equal(env->server.max_open, 1);
	assert_string_equal(env->server.conns[0].transcript, STORE_TRANSCRIPT("5"));
	assert_string_equal(env->server.conns[1].transcript, STORE_TRANSCRIPT("6"));
	assert_non_null(strstr(env->log, "marked UID 5 as read\n"));
	assert_non_null(strstr(env->log, "marked UID 6 as read\n"));
	/* done: the same message may be marked again later */
	mark(env, "work", 7, 5, 0);
	run_until_done(env);
	assert_int_equal(env->server.n_conns, 3);
}

static void test_uidvalidity_changed(void **state)
{
	struct env *env = *state;

	env->server.uidvalidity = 8;
	mark(env, "work", 7, 5, 0);
	run_until_done(env);
	assert_string_equal(env->server.conns[0].transcript,
			    "AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\nSELECT INBOX\nLOGOUT\n");
	assert_non_null(strstr(env->log, "work/INBOX: not marking UID 5 as read: UIDVALIDITY is "
					 "now 8, not 7"));
	assert_null(strstr(env->log, "marked UID"));
}

static void test_store_refused(void **state)
{
	struct env *env = *state;

	env->server.refuse_store = true;
	mark(env, "work", 7, 5, 0);
	run_until_done(env);
	assert_string_equal(env->server.conns[0].transcript, STORE_TRANSCRIPT("5"));
	assert_non_null(strstr(env->log, "work/INBOX: cannot mark UID 5 as read: server refused "
					 "UID STORE: read-only\n"));
}

static void test_refusals(void **state)
{
	struct env *env = *state;
	struct mail_event *e = NULL;

	mark(env, "home", 7, 5, -ENOENT);
	assert_int_equal(mail_event_new_summary("work", "INBOX", 7, 1, 9, 9, &e), 0);
	assert_int_equal(marker_mark_seen(env->marker, e), -EINVAL);
	mail_event_unref(e);
	for (uint32_t uid = 1; uid <= MARKER_QUEUE_MAX; uid++)
		mark(env, "work", 7, uid, 0); /* all wait: the first starts from the loop */
	mark(env, "work", 7, 1000, -ENOBUFS);
	assert_int_equal(marker_pending(env->marker), MARKER_QUEUE_MAX);
	/* one connects, and is dropped with the rest half-way */
	assert_true(sd_event_run(env->event, 0) >= 0);
	assert_int_equal(marker_pending(env->marker), MARKER_QUEUE_MAX);
	/* marker_free (teardown) drops them all, connection and queue */
}

static void test_server_gone(void **state)
{
	struct env *env = *state;

	env->cfg.port = 1; /* nobody listens there */
	mark(env, "work", 7, 5, 0);
	run_until_done(env);
	assert_int_equal(env->server.n_conns, 0);
	assert_non_null(strstr(env->log, "work/INBOX: cannot mark UID 5 as read: "));
}

int main(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_one, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_one_at_a_time_and_merge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uidvalidity_changed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_gone, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
