#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "helpers.h"
#include "log.h"
#include "net/conn.h"

/* ---- a throwaway PKI, made at start-up in a temporary directory ------------------------ */

struct pki {
	char dir[64];
	char ca_file[96];
	EVP_PKEY *ca_key, *key;
	X509 *ca, *good, *other; /* good: localhost + 127.0.0.1; other: other.example */
	uint8_t good_sha256[32], other_sha256[32];
};

static struct pki pki;

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(ext);
	assert_true(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
}

static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer,
		       EVP_PKEY *issuer_key)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *name;

	assert_non_null(x);
	assert_true(X509_set_version(x, 2));
	assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++));
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
	assert_true(X509_set_pubkey(x, key));
	name = X509_get_subject_name(x);
	assert_true(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn,
					       -1, -1, 0));
	assert_true(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name));
	if (!issuer) {
		add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
		add_ext(x, x, NID_subject_key_identifier, "hash");
	} else {
		add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, issuer, NID_subject_alt_name, san);
		add_ext(x, issuer, NID_ext_key_usage, "serverAuth");
	}
	assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static int pki_setup(void **state)
{
	unsigned len = 0;
	FILE *f;

	tmpdir_make(pki.dir, sizeof(pki.dir), "conn");
	snprintf(pki.ca_file, sizeof(pki.ca_file), "%s/ca.pem", pki.dir);

	pki.ca_key = EVP_EC_gen("P-256");
	pki.key = EVP_EC_gen("P-256");
	assert_non_null(pki.ca_key);
	assert_non_null(pki.key);
	pki.ca = make_cert(pki.ca_key, "imapidled test CA", NULL, NULL, NULL);
	pki.good =
	    make_cert(pki.key, "localhost", "DNS:localhost,IP:127.0.0.1", pki.ca, pki.ca_key);
	pki.other = make_cert(pki.key, "other.example", "DNS:other.example", pki.ca, pki.ca_key);
	assert_true(X509_digest(pki.other, EVP_sha256(), pki.other_sha256, &len));
	assert_int_equal(len, 32);
	assert_true(X509_digest(pki.good, EVP_sha256(), pki.good_sha256, &len));

	f = fopen(pki.ca_file, "we");
	assert_non_null(f);
	assert_true(PEM_write_X509(f, pki.ca));
	assert_int_equal(fclose(f), 0);
	return 0;
}

static int pki_teardown(void **state)
{
	tmpdir_remove(pki.dir);
	X509_free(pki.ca);
	X509_free(pki.good);
	X509_free(pki.other);
	EVP_PKEY_free(pki.ca_key);
	EVP_PKEY_free(pki.key);
	return 0;
}

/* ---- a scripted server on 127.0.0.1, one connection, in a thread ------------------------ */

struct server;
typedef void (*server_script)(struct server *s, int fd);

struct server {
	int lfd;
	uint16_t port;
	server_script script;
	X509 *cert; /* for TLS scripts */
	SSL_CTX *ctx;
	pthread_t thread;
	int max_proto;	  /* 0, or e.g. TLS1_2_VERSION */
	atomic_bool flag; /* set by a script at a point the test waits for */
};

static void *server_main(void *userdata)
{
	struct server *s = userdata;
	struct pollfd p = {.fd = s->lfd, .events = POLLIN};
	struct timeval tv = {.tv_sec = 3};
	sigset_t ss;
	int fd;

	/* The test server may write to a client that left; only the client must not see SIGPIPE,
	 * and this way the test proves it (main thread keeps the default action). */
	sigemptyset(&ss);
	sigaddset(&ss, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);

	if (poll(&p, 1, 3000) != 1)
		return NULL;
	fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return NULL;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	s->script(s, fd);
	close(fd);
	ERR_clear_error();
	OPENSSL_thread_stop();
	return NULL;
}

static void server_start(struct server *s, server_script script, X509 *cert)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);

	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &len), 0);
	s->port = ntohs(sa.sin_port);
	s->script = script;
	if (cert) {
		s->ctx = SSL_CTX_new(TLS_server_method());
		assert_non_null(s->ctx);
		assert_true(SSL_CTX_use_certificate(s->ctx, cert));
		assert_true(SSL_CTX_use_PrivateKey(s->ctx, pki.key));
		if (s->max_proto)
			assert_true(SSL_CTX_set_max_proto_version(s->ctx, s->max_proto));
	}
	if (script)
		assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(struct server *s)
{
	if (s->script)
		pthread_join(s->thread, NULL);
	close(s->lfd);
	SSL_CTX_free(s->ctx);
}

static void send_all(int fd, const char *text)
{
	size_t len = strlen(text);

	assert_int_equal(send(fd, text, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void script_plain_echo(struct server *s, int fd)
{
	char buf[4096];
	ssize_t n;

	send_all(fd, "* OK plain\r\n");
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
			break;
}

static void script_plain_bye(struct server *s, int fd)
{
	send_all(fd, "* BYE\r\n");
}

static void script_reset(struct server *s, int fd)
{
	struct linger l = {.l_onoff = 1, .l_linger = 0};
	char c;

	send_all(fd, "* OK about to reset\r\n");
	(void)recv(fd, &c, 1, 0); /* wait for the client's first command */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

static void script_silent(struct server *s, int fd)
{
	char buf[4096];

	/* Never answer (a TLS server that hangs in the handshake); wait for the client to go. */
	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
}

static SSL *tls_accept(struct server *s, int fd)
{
	SSL *ssl = SSL_new(s->ctx);

	assert_non_null(ssl);
	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

static void tls_echo(SSL *ssl)
{
	char buf[16384];
	int n;

	while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0)
		if (SSL_write(ssl, buf, n) != n)
			break;
}

static void script_tls_echo(struct server *s, int fd)
{
	SSL *ssl = tls_accept(s, fd);

	if (!ssl)
		return;
	SSL_write(ssl, "* OK tls\r\n", 10);
	tls_echo(ssl);
	SSL_shutdown(ssl);
	SSL_free(ssl);
}

static void script_tls_close_notify(struct server *s, int fd)
{
	SSL *ssl = tls_accept(s, fd);

	if (!ssl)
		return;
	SSL_write(ssl, "* BYE\r\n", 7);
	SSL_shutdown(ssl);
	SSL_free(ssl);
}

static void script_tls_abrupt(struct server *s, int fd)
{
	SSL *ssl = tls_accept(s, fd);

	if (!ssl)
		return;
	SSL_write(ssl, "* BYE\r\n", 7);
	SSL_free(ssl);
}

/* Read one line of plaintext (the STARTTLS command) byte by byte, so nothing past it is
 * consumed before the TLS handshake. */
static bool read_line(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size && recv(fd, buf + n, 1, 0) == 1)
		if (buf[n++] == '\n') {
			buf[n] = 0;
			return true;
		}
	return false;
}

/* The response injection attack: plaintext appended to "OK Begin TLS" that a vulnerable client
 * would take as a protected server response. */
static void script_starttls_inject(struct server *s, int fd)
{
	char line[256];
	SSL *ssl;

	send_all(fd, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n");
	if (!read_line(fd, line, sizeof(line)) || strcmp(line, "a STARTTLS\r\n") != 0)
		return;
	send_all(fd, "a OK Begin TLS\r\n* INJECTED plaintext\r\n");
	atomic_store(&s->flag, true);
	ssl = tls_accept(s, fd);
	if (!ssl)
		return;
	SSL_write(ssl, "* SECURE\r\n", 10);
	tls_echo(ssl);
	SSL_free(ssl);
}

/* The same attack with the injected bytes arriving after the client started its handshake. */
static void script_starttls_inject_late(struct server *s, int fd)
{
	char line[256];
	SSL *ssl;

	send_all(fd, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n");
	if (!read_line(fd, line, sizeof(line)))
		return;
	send_all(fd, "a OK Begin TLS\r\n");
	usleep(100 * 1000);
	send_all(fd, "* INJECTED late\r\n");
	ssl = tls_accept(s, fd);
	SSL_free(ssl);
}

/* ---- the client side -------------------------------------------------------------------- */

struct client {
	struct conn *conn;
	bool connected, tls_ready, closed;
	int error;
	char why[512];
	char data[512 * 1024];
	size_t n_data;
	size_t n_data_after_tls; /* bytes delivered after tls_ready */
	bool sent_starttls, starttls_called;
	bool pause_for_starttls; /* send STARTTLS on the greeting and pause reading */
	bool free_in_data, free_in_closed;
	unsigned data_calls_after_free;
};

static void on_connected(struct conn *c, void *userdata)
{
	struct client *cl = userdata;

	assert_ptr_equal(c, cl->conn);
	cl->connected = true;
}

static void on_tls_ready(struct conn *c, void *userdata)
{
	struct client *cl = userdata;

	cl->tls_ready = true;
	cl->n_data_after_tls = cl->n_data;
}

static bool data_has(const struct client *cl, const char *s)
{
	return memmem(cl->data, cl->n_data, s, strlen(s)) != NULL;
}

static void on_data(struct conn *c, const uint8_t *buf, size_t len, void *userdata)
{
	struct client *cl = userdata;

	assert_ptr_equal(c, cl->conn);
	assert_true(cl->n_data + len <= sizeof(cl->data));
	memcpy(cl->data + cl->n_data, buf, len);
	cl->n_data += len;
	if (cl->free_in_data) {
		cl->conn = conn_free(cl->conn);
		return;
	}
	if (cl->pause_for_starttls && data_has(cl, "ready\r\n") && !cl->starttls_called) {
		assert_int_equal(conn_write(c, "a STARTTLS\r\n", 12), 0);
		conn_pause_reading(c, true);
		cl->starttls_called = true;
	}
}

static void on_data_starttls_now(struct conn *c, const uint8_t *buf, size_t len, void *userdata)
{
	struct client *cl = userdata;
	const char *ok;

	/* Nothing may be delivered between conn_start_tls() and tls_ready. */
	assert_false(cl->starttls_called && !cl->tls_ready);
	on_data(c, buf, len, userdata);
	if (data_has(cl, "ready\r\n") && !cl->sent_starttls) {
		assert_int_equal(conn_write(c, "a STARTTLS\r\n", 12), 0);
		cl->sent_starttls = true;
	}
	ok = memmem(buf, len, "a OK Begin TLS\r\n", 16);
	if (ok) {
		/* What the session does: its parser drops the rest of this very buffer. */
		cl->n_data -= (size_t)((const char *)buf + len - (ok + 16));
		cl->starttls_called = true;
		assert_int_equal(conn_start_tls(c), 0);
	}
}

static void on_closed(struct conn *c, int error, const char *why, void *userdata)
{
	struct client *cl = userdata;

	assert_ptr_equal(c, cl->conn);
	assert_false(cl->closed);
	cl->closed = true;
	cl->error = error;
	snprintf(cl->why, sizeof(cl->why), "%s", why);
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "closed: %d %s\n", error, why);
	if (cl->free_in_closed)
		cl->conn = conn_free(cl->conn);
}

static const struct conn_callbacks callbacks = {
    .connected = on_connected,
    .tls_ready = on_tls_ready,
    .data = on_data,
    .closed = on_closed,
};

struct env {
	sd_event *event;
	struct resolver *resolver;
};

static void env_init(struct env *env)
{
	assert_int_equal(sd_event_new(&env->event), 0);
	env->resolver = resolver_new(env->event);
	assert_non_null(env->resolver);
}

static void env_done(struct env *env)
{
	/* Let the servers' last words and the freed sources drain. */
	sd_event_run(env->event, 0);
	env->resolver = resolver_free(env->resolver);
	env->event = sd_event_unref(env->event);
}

static bool wait_for(struct env *env, const bool *flag)
{
	return LOOP_RUN_UNTIL(env->event, *flag, 5 * USEC_PER_SEC);
}

static bool wait_for_data(struct env *env, struct client *cl, const char *s)
{
	LOOP_RUN_UNTIL(env->event, data_has(cl, s) || cl->closed, 5 * USEC_PER_SEC);
	return data_has(cl, s);
}

static void client_start(struct env *env, struct client *cl, const char *host, uint16_t port,
			 enum tls_mode tls, const char *ca_file, const uint8_t *pin, usec_t timeout,
			 const struct conn_callbacks *cb)
{
	struct conn_params p = {
	    .host = host,
	    .port = port,
	    .tls = tls,
	    .ca_file = ca_file,
	    .fingerprint = pin,
	    .connect_timeout = timeout,
	    .name = "test/INBOX",
	};

	assert_int_equal(
	    conn_new(env->event, env->resolver, &p, cb ? cb : &callbacks, cl, &cl->conn), 0);
	/* conn_new never calls back from inside itself. */
	assert_false(cl->connected || cl->closed);
}

static void assert_why_contains(const struct client *cl, const char *s)
{
	if (!strstr(cl->why, s))
		fail_msg("expected closed reason containing \"%s\", got \"%s\"", s, cl->why);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_plain_round_trip(void **state)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {};
	char peer[64], info[64];

	env_init(&env);
	server_start(&s, script_plain_echo, NULL);
	client_start(&env, &cl, "127.0.0.1", s.port, TLS_NONE, NULL, NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.connected));
	assert_false(conn_is_tls(cl.conn));
	snprintf(peer, sizeof(peer), "127.0.0.1:%u", (unsigned)s.port);
	assert_string_equal(conn_peer(cl.conn), peer);
	assert_int_equal(conn_tls_info(cl.conn, info, sizeof(info)), -ENOTCONN);
	assert_true(wait_for_data(&env, &cl, "* OK plain\r\n"));
	assert_int_equal(conn_write(cl.conn, "a NOOP\r\n", 8), 0);
	assert_true(wait_for_data(&env, &cl, "a NOOP\r\n"));
	assert_false(cl.closed);
	cl.conn = conn_free(cl.conn);
	server_stop(&s);
	env_done(&env);
}

static void test_write_limits(void **state)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {};
	static uint8_t big[CONN_WRITE_MAX + 1];

	env_init(&env);
	server_start(&s, script_plain_echo, NULL);
	client_start(&env, &cl, "127.0.0.1", s.port, TLS_NONE, NULL, NULL, 0, NULL);
	assert_int_equal(conn_write(cl.conn, "x", 1), -ENOTCONN);
	assert_true(wait_for(&env, &cl.connected));
	assert_int_equal(conn_write(cl.conn, big, sizeof(big)), -ENOBUFS);
	assert_int_equal(conn_write(cl.conn, big, 0), 0);
	assert_int_equal(conn_start_tls(NULL), -EINVAL);
	cl.conn = conn_free(cl.conn);
	assert_null(conn_free(NULL));
	server_stop(&s);
	env_done(&env);
}

static void tls_round_trip(const char *host, X509 *cert, int max_proto, const char *version)
{
	struct env env = {};
	struct server s = {.max_proto = max_proto};
	struct client cl = {};
	static char big[200 * 1024];
	char info[128];

	env_init(&env);
	server_start(&s, script_tls_echo, cert);
	client_start(&env, &cl, host, s.port, TLS_IMPLICIT, pki.ca_file, NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.connected));
	assert_true(conn_is_tls(cl.conn));
	assert_int_equal(conn_tls_info(cl.conn, info, sizeof(info)), 0);
	assert_true(strncmp(info, version, strlen(version)) == 0);
	assert_int_equal(conn_tls_info(cl.conn, info, 4), -ENOBUFS);
	assert_true(wait_for_data(&env, &cl, "* OK tls\r\n"));

	/* Larger than the socket buffers, the read chunk and the per-wake-up budget. */
	memset(big, 'x', sizeof(big));
	memcpy(big + sizeof(big) - 6, "\r\nEND\n", 6);
	assert_int_equal(conn_write(cl.conn, big, sizeof(big)), 0);
	assert_int_equal(conn_write(cl.conn, "a NOOP\r\n", 8), 0);
	assert_true(wait_for_data(&env, &cl, "END\na NOOP\r\n"));
	assert_int_equal(cl.n_data, 10 + sizeof(big) + 8);
	assert_false(cl.closed);
	cl.conn = conn_free(cl.conn);
	server_stop(&s);
	env_done(&env);
}

static void test_tls_round_trip(void **state)
{
	/* The client's suite order wins against a server without a preference of its own. */
	tls_round_trip("localhost", pki.good, 0, "TLSv1.3 TLS_CHACHA20_POLY1305_SHA256");
}

static void test_tls12_round_trip(void **state)
{
	tls_round_trip("localhost", pki.good, TLS1_2_VERSION, "TLSv1.2 ");
}

static void test_tls_ip_literal(void **state)
{
	tls_round_trip("127.0.0.1", pki.good, 0, "TLSv1.3 ");
}

/* A TLS client against a server that fails it; returns with cl closed. */
static void tls_expect_failure(struct client *cl, const char *host, X509 *cert, const char *ca_file,
			       const uint8_t *pin, int error)
{
	struct env env = {};
	struct server s = {};

	env_init(&env);
	server_start(&s, script_tls_echo, cert);
	client_start(&env, cl, host, s.port, TLS_IMPLICIT, ca_file, pin, 0, NULL);
	assert_true(wait_for(&env, &cl->closed));
	assert_false(cl->connected);
	assert_int_equal(cl->error, error);
	if (cl->conn)
		assert_int_equal(conn_write(cl->conn, "x", 1), -ENOTCONN);
	cl->conn = conn_free(cl->conn);
	server_stop(&s);
	env_done(&env);
}

static void test_tls_untrusted(void **state)
{
	struct client cl = {};

	/* The system store does not know the test CA. */
	tls_expect_failure(&cl, "localhost", pki.good, NULL, NULL, -EPERM);
	assert_why_contains(&cl, "certificate verify failed: unable to get local issuer");
}

static void test_tls_host_mismatch(void **state)
{
	struct client cl = {}, cl_ip = {};

	tls_expect_failure(&cl, "localhost", pki.other, pki.ca_file, NULL, -EPERM);
	assert_why_contains(&cl, "host name mismatch: certificate is for other.example");
	tls_expect_failure(&cl_ip, "127.0.0.1", pki.other, pki.ca_file, NULL, -EPERM);
	assert_why_contains(&cl_ip, "host name mismatch: certificate is for other.example");
}

static void test_tls_bad_ca_file(void **state)
{
	struct client cl = {};
	struct env env = {};

	env_init(&env);
	client_start(&env, &cl, "127.0.0.1", 1, TLS_IMPLICIT, "/nonexistent/ca.pem", NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.closed));
	assert_int_equal(cl.error, -EINVAL);
	assert_why_contains(&cl, "cannot load CA file /nonexistent/ca.pem");
	cl.conn = conn_free(cl.conn);
	env_done(&env);
}

/* A pin is accepted on its own: unknown CA (system store) and a name that does not match. */
static void test_pin_match(void **state)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {.free_in_closed = true};

	env_init(&env);
	server_start(&s, script_tls_echo, pki.other);
	client_start(&env, &cl, "localhost", s.port, TLS_IMPLICIT, NULL, pki.other_sha256, 0, NULL);
	assert_true(wait_for(&env, &cl.connected));
	assert_true(wait_for_data(&env, &cl, "* OK tls\r\n"));
	cl.conn = conn_free(cl.conn);
	server_stop(&s);
	env_done(&env);
}

static void test_pin_mismatch(void **state)
{
	struct client cl = {.free_in_closed = true};
	uint8_t pin[32];
	char got[128] = "got sha256:";

	memset(pin, 0xAB, sizeof(pin));
	for (size_t i = 0; i < 32; i++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%02X", i ? ":" : "",
			 pki.good_sha256[i]);
	/* Even with the right CA and name: the pin is what was configured. */
	tls_expect_failure(&cl, "localhost", pki.good, pki.ca_file, pin, -EPERM);
	assert_why_contains(&cl, "certificate fingerprint mismatch: expected sha256:AB:AB:");
	assert_why_contains(&cl, got);
}

static void test_starttls_injection(void **state)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {.pause_for_starttls = true};
	char info[128];

	env_init(&env);
	server_start(&s, script_starttls_inject, pki.good);
	client_start(&env, &cl, "localhost", s.port, TLS_STARTTLS, pki.ca_file, NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.connected));
	assert_false(conn_is_tls(cl.conn));
	assert_true(wait_for(&env, &cl.starttls_called));
	/* The OK and the injected line now sit in the kernel, unread. */
	while (!atomic_load(&s.flag))
		usleep(1000);
	usleep(50 * 1000);
	assert_int_equal(conn_start_tls(cl.conn), 0);
	assert_int_equal(conn_start_tls(cl.conn), -EINVAL);
	assert_true(wait_for(&env, &cl.tls_ready));
	assert_true(conn_is_tls(cl.conn));
	assert_int_equal(conn_tls_info(cl.conn, info, sizeof(info)), 0);
	conn_pause_reading(cl.conn, false);
	assert_true(wait_for_data(&env, &cl, "* SECURE\r\n"));
	assert_false(data_has(&cl, "INJECTED"));
	assert_int_equal(cl.n_data - cl.n_data_after_tls, 10);
	assert_int_equal(conn_write(cl.conn, "a CAPABILITY\r\n", 14), 0);
	assert_true(wait_for_data(&env, &cl, "a CAPABILITY\r\n"));
	cl.conn = conn_free(cl.conn);
	server_stop(&s);
	env_done(&env);
}

static void test_starttls_injection_late(void **state)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {};
	struct conn_callbacks cb = callbacks;

	cb.data = on_data_starttls_now;
	env_init(&env);
	server_start(&s, script_starttls_inject_late, pki.good);
	client_start(&env, &cl, "localhost", s.port, TLS_STARTTLS, pki.ca_file, NULL, 0, &cb);
	assert_true(wait_for(&env, &cl.closed));
	assert_true(cl.starttls_called);
	assert_false(cl.tls_ready);
	assert_false(data_has(&cl, "INJECTED"));
	assert_int_equal(cl.error, -EPROTO);
	assert_why_contains(&cl, "TLS handshake failed");
	cl.conn = conn_free(cl.conn);
	server_stop(&s);
	env_done(&env);
}

static void test_refused(void **state)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {.free_in_closed = true};

	env_init(&env);
	server_start(&s, NULL, NULL);
	close(s.lfd); /* now nobody listens on s.port */
	s.lfd = -1;
	client_start(&env, &cl, "127.0.0.1", s.port, TLS_IMPLICIT, pki.ca_file, NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.closed));
	assert_int_equal(cl.error, -ECONNREFUSED);
	assert_why_contains(&cl, "cannot connect to 127.0.0.1");
	assert_null(cl.conn);
	server_stop(&s);
	env_done(&env);
}

/* ---- a DNS server on loopback that answers every A query with a fixed list -------------- */

struct fake_dns {
	int fd;
	uint16_t port;
	const char *const *addrs; /* IPv4 literals, in answer order */
	sd_event_source *source;
};

static size_t dns_put(uint8_t *buf, size_t at, const void *p, size_t n)
{
	memcpy(buf + at, p, n);
	return at + n;
}

static int on_dns_query(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct fake_dns *dns = userdata;
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	uint8_t buf[512];
	size_t end = 12, n_answers = 0;
	uint16_t qtype;
	ssize_t n;

	n = recvfrom(fd, buf, 256, 0, (struct sockaddr *)&from, &fromlen);
	if (n < 12)
		return 0;
	while (end < (size_t)n && buf[end] != 0)
		end += 1 + buf[end];
	if (end + 5 > (size_t)n)
		return 0;
	qtype = (uint16_t)(buf[end + 1] << 8 | buf[end + 2]);
	end += 5;
	for (size_t i = 0; qtype == 1 && dns->addrs[i]; i++) {
		/* name: pointer to the question; type A, class IN, TTL 60, 4 bytes */
		static const uint8_t rr[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4};
		struct in_addr a;

		assert_int_equal(inet_pton(AF_INET, dns->addrs[i], &a), 1);
		end = dns_put(buf, end, rr, sizeof(rr));
		end = dns_put(buf, end, &a, 4);
		n_answers++;
	}
	buf[2] = 0x81; /* QR, RD */
	buf[3] = 0x80; /* RA, NOERROR */
	memset(buf + 6, 0, 6);
	buf[7] = (uint8_t)n_answers;
	sendto(fd, buf, end, 0, (struct sockaddr *)&from, fromlen);
	return 0;
}

static void fake_dns_start(struct env *env, struct fake_dns *dns, const char *const *addrs)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	char servers[64];

	dns->addrs = addrs;
	dns->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(dns->fd >= 0);
	assert_int_equal(bind(dns->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(dns->fd, (struct sockaddr *)&sa, &len), 0);
	dns->port = ntohs(sa.sin_port);
	assert_int_equal(
	    sd_event_add_io(env->event, &dns->source, dns->fd, EPOLLIN, on_dns_query, dns), 0);
	snprintf(servers, sizeof(servers), "127.0.0.1:%u", (unsigned)dns->port);
	assert_int_equal(resolver_set_servers(env->resolver, servers), 0);
}

static void fake_dns_stop(struct fake_dns *dns)
{
	sd_event_source_disable_unref(dns->source);
	close(dns->fd);
}

static char log_lines[8192];

static void capture_log(int level, const char *line, void *userdata)
{
	size_t used = strlen(log_lines);

	snprintf(log_lines + used, sizeof(log_lines) - used, "%s\n", line);
}

/* The first address refuses; the second (where the server is) is tried next. */
static void test_fallback_to_next_address(void **state)
{
	static const char *const addrs[] = {"127.0.0.2", "127.0.0.1", NULL};
	struct env env = {};
	struct server s = {};
	struct client cl = {};
	struct fake_dns dns = {};
	int level = log_get_level();
	char expect[64];

	log_lines[0] = 0;
	log_set_sink(capture_log, NULL);
	log_set_level(LOG_DEBUG);
	env_init(&env);
	fake_dns_start(&env, &dns, addrs);
	server_start(&s, script_tls_echo, pki.other);
	client_start(&env, &cl, "other.example", s.port, TLS_IMPLICIT, pki.ca_file, NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.connected));
	snprintf(expect, sizeof(expect), "127.0.0.1:%u", (unsigned)s.port);
	assert_string_equal(conn_peer(cl.conn), expect);
	snprintf(expect, sizeof(expect), "connect to 127.0.0.2:%u: ", (unsigned)s.port);
	log_set_sink(NULL, NULL);
	log_set_level(level);
	if (!strstr(log_lines, expect))
		fail_msg("expected a refused attempt (\"%s\") in:\n%s", expect, log_lines);
	cl.conn = conn_free(cl.conn);
	server_stop(&s);
	fake_dns_stop(&dns);
	env_done(&env);
}

static void test_all_addresses_fail(void **state)
{
	static const char *const addrs[] = {"127.0.0.2", "127.0.0.3", NULL};
	struct env env = {};
	struct server s = {};
	struct client cl = {};
	struct fake_dns dns = {};
	char expect[96];

	env_init(&env);
	fake_dns_start(&env, &dns, addrs);
	server_start(&s, NULL, NULL);
	client_start(&env, &cl, "mail.example", s.port, TLS_IMPLICIT, pki.ca_file, NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.closed));
	assert_int_equal(cl.error, -ECONNREFUSED);
	snprintf(expect, sizeof(expect),
		 "cannot connect to mail.example (2 addresses, last 127.0.0.3:%u)",
		 (unsigned)s.port);
	assert_why_contains(&cl, expect);
	cl.conn = conn_free(cl.conn);
	server_stop(&s);
	fake_dns_stop(&dns);
	env_done(&env);
}

static void expect_timeout(server_script script, enum tls_mode tls, const char *phase)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {.free_in_closed = true};
	usec_t start;

	env_init(&env);
	server_start(&s, script, pki.good);
	start = now_usec(CLOCK_MONOTONIC);
	client_start(&env, &cl, "127.0.0.1", s.port, tls, pki.ca_file, NULL, 200 * USEC_PER_MSEC,
		     NULL);
	assert_true(wait_for(&env, &cl.closed));
	assert_true(now_usec(CLOCK_MONOTONIC) - start < 2 * USEC_PER_SEC);
	assert_int_equal(cl.error, -ETIMEDOUT);
	assert_why_contains(&cl, phase);
	server_stop(&s);
	env_done(&env);
}

static void test_timeout_never_accepted(void **state)
{
	/* The kernel completes the TCP handshake for a listener that never accepts. */
	expect_timeout(NULL, TLS_IMPLICIT, "TLS handshake");
}

static void test_timeout_silent_tls(void **state)
{
	expect_timeout(script_silent, TLS_IMPLICIT, "timed out after 200ms in the TLS handshake");
}

static void test_timeout_resolve(void **state)
{
	struct env env = {};
	struct client cl = {.free_in_closed = true};
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	char servers[64];
	int dns;

	/* A DNS server that never answers. */
	dns = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(dns, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(dns, (struct sockaddr *)&sa, &len), 0);
	env_init(&env);
	snprintf(servers, sizeof(servers), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
	assert_int_equal(resolver_set_servers(env.resolver, servers), 0);
	client_start(&env, &cl, "mail.example.invalid", 993, TLS_IMPLICIT, pki.ca_file, NULL,
		     200 * USEC_PER_MSEC, NULL);
	assert_true(wait_for(&env, &cl.closed));
	assert_int_equal(cl.error, -ETIMEDOUT);
	assert_why_contains(&cl, "resolving mail.example.invalid");
	env_done(&env);
	close(dns);
}

static void expect_server_close(server_script script, X509 *cert, int error, const char *why,
				bool write_first)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {.free_in_closed = true};

	env_init(&env);
	server_start(&s, script, cert);
	client_start(&env, &cl, "localhost", s.port, cert ? TLS_IMPLICIT : TLS_NONE, pki.ca_file,
		     NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.connected));
	if (write_first) {
		assert_true(wait_for_data(&env, &cl, "\r\n"));
		assert_int_equal(conn_write(cl.conn, "a NOOP\r\n", 8), 0);
	}
	assert_true(wait_for(&env, &cl.closed));
	assert_true(data_has(&cl, "\r\n"));
	assert_int_equal(cl.error, error);
	assert_why_contains(&cl, why);
	server_stop(&s);
	env_done(&env);
}

static void test_server_closes(void **state)
{
	expect_server_close(script_plain_bye, NULL, 0, "connection closed by server", false);
	expect_server_close(script_tls_close_notify, pki.good, 0, "connection closed by server",
			    false);
	expect_server_close(script_tls_abrupt, pki.good, 0, "without TLS close_notify", false);
	expect_server_close(script_reset, NULL, -ECONNRESET, "connection reset by peer", true);
}

/* Writing into a connection the server has reset must neither raise SIGPIPE (the test keeps the
 * default action, which would kill it) nor report anything but closed. */
static void test_no_sigpipe(void **state)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {.free_in_closed = true};
	char line[64];

	env_init(&env);
	server_start(&s, script_plain_bye, NULL);
	client_start(&env, &cl, "127.0.0.1", s.port, TLS_NONE, NULL, NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.connected));
	server_stop(&s); /* the server has written BYE and closed */
	usleep(20 * 1000);
	memset(line, 'x', sizeof(line));
	for (int i = 0; i < 100 && cl.conn && conn_write(cl.conn, line, sizeof(line)) == 0; i++)
		usleep(1000);
	assert_true(wait_for(&env, &cl.closed));
	env_done(&env);
}

static void test_free_inside_data(void **state)
{
	struct env env = {};
	struct server s = {};
	struct client cl = {.free_in_data = true};

	env_init(&env);
	server_start(&s, script_tls_echo, pki.good);
	client_start(&env, &cl, "localhost", s.port, TLS_IMPLICIT, pki.ca_file, NULL, 0, NULL);
	assert_true(wait_for(&env, &cl.connected));
	assert_true(wait_for_data(&env, &cl, "\r\n"));
	assert_null(cl.conn);
	server_stop(&s);
	env_done(&env);
	assert_false(cl.closed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_round_trip),
	    cmocka_unit_test(test_write_limits),
	    cmocka_unit_test(test_tls_round_trip),
	    cmocka_unit_test(test_tls12_round_trip),
	    cmocka_unit_test(test_tls_ip_literal),
	    cmocka_unit_test(test_tls_untrusted),
	    cmocka_unit_test(test_tls_host_mismatch),
	    cmocka_unit_test(test_tls_bad_ca_file),
	    cmocka_unit_test(test_pin_match),
	    cmocka_unit_test(test_pin_mismatch),
	    cmocka_unit_test(test_starttls_injection),
	    cmocka_unit_test(test_starttls_injection_late),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_fallback_to_next_address),
	    cmocka_unit_test(test_all_addresses_fail),
	    cmocka_unit_test(test_timeout_never_accepted),
	    cmocka_unit_test(test_timeout_silent_tls),
	    cmocka_unit_test(test_timeout_resolve),
	    cmocka_unit_test(test_server_closes),
	    cmocka_unit_test(test_no_sigpipe),
	    cmocka_unit_test(test_free_inside_data),
	};

	if (getenv("TEST_VERBOSE"))
		log_set_level(LOG_DEBUG);
	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
