#include "net/conn.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"

#define DEFAULT_CONNECT_TIMEOUT (30 * USEC_PER_SEC)
#define READ_CHUNK		(16 * 1024)
/* Per wake-up, so that one fast server cannot starve the other connections on the loop. */
#define READ_BUDGET (256 * 1024)
/* A server has no business sending TLS before our ClientHello; anything beyond this much
 * plaintext after STARTTLS is an attack or a broken server. */
#define STARTTLS_DISCARD_MAX (64 * 1024)

/* Liveness: notice a dead peer within minutes even when idle (IDLE can sit silent for 29 min). */
#define KEEPALIVE_IDLE_SEC     60
#define KEEPALIVE_INTERVAL_SEC 20
#define KEEPALIVE_COUNT	       3
#define USER_TIMEOUT_MSEC      90000

enum conn_state {
	CONN_RESOLVING,
	CONN_CONNECTING,
	CONN_HANDSHAKE, /* implicit TLS */
	CONN_PLAIN,
	CONN_STARTTLS, /* handshake after conn_start_tls() */
	CONN_TLS,
	CONN_CLOSED,
};

static const char *const conn_state_names[] = {
    [CONN_RESOLVING] = "resolving",
    [CONN_CONNECTING] = "connecting",
    [CONN_HANDSHAKE] = "tls-handshake",
    [CONN_PLAIN] = "plain",
    [CONN_STARTTLS] = "starttls-handshake",
    [CONN_TLS] = "tls",
    [CONN_CLOSED] = "closed",
};

/* One SSL_CTX per CA file, shared by every connection that uses it. */
struct tls_context {
	char *ca_file; /* NULL: system store */
	SSL_CTX *ctx;
	unsigned n_ref;
	struct tls_context *next;
};

struct conn_addr {
	struct sockaddr_storage sa;
	socklen_t len;
};

struct conn {
	unsigned n_ref; /* the owner's, plus one while calling out */
	bool freed;
	enum conn_state state;

	sd_event *event;
	struct resolver *resolver; /* borrowed */
	struct conn_callbacks cb;
	void *userdata;

	char *host;
	char *name;
	uint16_t port;
	enum tls_mode tls;
	bool has_pin;
	uint8_t pin[32];
	usec_t timeout;

	struct resolve_query *query;
	struct conn_addr *addrs; /* only while connecting */
	size_t n_addrs, next_addr;
	int last_connect_error;

	int fd;
	sd_event_source *io;
	sd_event_source *timer; /* only while connecting or handshaking */
	sd_event_source *defer; /* closed notification, resumed reading */

	struct tls_context *tls_ctx;
	SSL *ssl;
	int sock_errno; /* errno of the socket call behind the last SSL_* call */
	bool sock_eof;

	/* Pending output; freed whenever it drains so an idle connection holds none. */
	uint8_t *wbuf;
	size_t wstart, wend, wcap;

	uint32_t hs_want;    /* during a handshake: what SSL_do_handshake waits for */
	uint32_t read_want;  /* EPOLLIN, or EPOLLOUT when SSL_read needs to write */
	uint32_t write_want; /* EPOLLOUT, or EPOLLIN when SSL_write needs to read */
	bool paused;
	bool kick_read;

	bool close_pending;
	int close_error;
	char *close_why;

	char peer[INET6_ADDRSTRLEN + 8];
};

static struct tls_context *tls_contexts;
static BIO_METHOD *sock_bio_method;

static void conn_close(struct conn *c, int error, const char *fmt, ...) _printf_(3, 4);
static void conn_update_events(struct conn *c);
static void conn_transfer(struct conn *c);

/* ---- lifetime around callbacks ---------------------------------------------------------- */

static void conn_destroy(struct conn *c)
{
	sd_event_source_disable_unref(c->defer);
	if (c->tls_ctx && --c->tls_ctx->n_ref == 0) {
		struct tls_context **p = &tls_contexts;
		while (*p != c->tls_ctx)
			p = &(*p)->next;
		*p = c->tls_ctx->next;
		SSL_CTX_free(c->tls_ctx->ctx);
		free(c->tls_ctx->ca_file);
		free(c->tls_ctx);
		if (!tls_contexts) {
			BIO_meth_free(sock_bio_method);
			sock_bio_method = NULL;
		}
	}
	free(c->close_why);
	free(c->host);
	free(c->name);
	sd_event_unref(c->event);
	free(c);
}

static void conn_ref(struct conn *c)
{
	c->n_ref++;
}

/* Drop a reference taken around a callback; false when the owner freed the conn meanwhile. */
static bool conn_unref_alive(struct conn *c)
{
	if (--c->n_ref == 0) {
		conn_destroy(c);
		return false;
	}
	return !c->freed;
}

static const char *conn_name(const struct conn *c)
{
	return c->name ? c->name : c->host;
}

static void conn_set_state(struct conn *c, enum conn_state s)
{
	if (c->state == s)
		return;
	log_debug("%s: %s → %s", conn_name(c), conn_state_names[c->state], conn_state_names[s]);
	c->state = s;
}

/* ---- the process-wide TLS contexts -------------------------------------------------------- */

static int sock_bio_write(BIO *b, const char *buf, int len)
{
	struct conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	/* MSG_NOSIGNAL: a peer that went away must not kill the daemon with SIGPIPE. */
	n = send(c->fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0) {
		c->sock_errno = errno;
		if (errno == EAGAIN || errno == EINTR)
			BIO_set_retry_write(b);
		return -1;
	}
	return (int)n;
}

static int sock_bio_read(BIO *b, char *buf, int len)
{
	struct conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = recv(c->fd, buf, (size_t)len, MSG_DONTWAIT);
	if (n < 0) {
		c->sock_errno = errno;
		if (errno == EAGAIN || errno == EINTR)
			BIO_set_retry_read(b);
		return -1;
	}
	if (n == 0)
		c->sock_eof = true;
	return (int)n;
}

static long sock_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct conn *c = BIO_get_data(b);

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_EOF:
		return c && c->sock_eof;
	default:
		return 0;
	}
}

static int sock_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static int sock_bio_method_init(void)
{
	BIO_METHOD *m;

	if (sock_bio_method)
		return 0;
	m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "imapidled socket");
	if (!m)
		return -ENOMEM;
	if (!BIO_meth_set_write(m, sock_bio_write) || !BIO_meth_set_read(m, sock_bio_read) ||
	    !BIO_meth_set_ctrl(m, sock_bio_ctrl) || !BIO_meth_set_create(m, sock_bio_create)) {
		BIO_meth_free(m);
		return -ENOMEM;
	}
	sock_bio_method = m;
	return 0;
}

static const char *openssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *s = e ? ERR_reason_error_string(e) : NULL;

	return s ? s : "unknown error";
}

#define TLS13_SUITES "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"

/* Says why in *ret_why (NULL if even that fails) and drops ctx; the arguments are evaluated,
 * OpenSSL's error queue read, before it is cleared here. */
_printf_(3, 4) static SSL_CTX *tls_ctx_fail(SSL_CTX *ctx, char **ret_why, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(ret_why, fmt, ap) < 0)
		*ret_why = NULL;
	va_end(ap);
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

static SSL_CTX *tls_ctx_new(const char *ca_file, char **ret_why)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int ok;

	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* RELEASE_BUFFERS keeps an idle connection small; the other two let a retried write come
	 * from a queue that moved or grew in the meantime. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Nothing here ever resumes a session (no SSL_set_session), so a TLS 1.2 ticket and a
	 * cached session copy would only be memory every idle connection keeps. A TLS 1.3 server
	 * still sends its tickets: OpenSSL 3.0 has no client switch against them. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* An idle connection keeps its two record-layer cipher contexts for hours, and
	 * ChaCha20-Poly1305's are smaller than AES-GCM's: 1.0 KiB less per idle connection
	 * (bench/run memory with ChaCha20 negotiated: 21.8 -> 20.8 KiB). A watcher moves a few
	 * kilobytes an hour, so AES-NI's throughput buys nothing. OpenSSL's three default
	 * suites, ChaCha20 first; a server that enforces its own order still picks. */
	if (!SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES))
		return tls_ctx_fail(ctx, ret_why, "cannot set TLS 1.3 cipher suites: %s",
				    openssl_reason());
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	ERR_clear_error();
	if (ca_file)
		ok = SSL_CTX_load_verify_locations(ctx, ca_file, NULL);
	else
		ok = SSL_CTX_set_default_verify_paths(ctx);
	if (!ok) {
		/* OpenSSL only says "system lib" for a missing file; errno says which problem. */
		const char *reason =
		    ca_file && access(ca_file, R_OK) < 0 ? strerror(errno) : openssl_reason();
		return tls_ctx_fail(ctx, ret_why, "cannot load CA file %s: %s", strna(ca_file),
				    reason);
	}
	return ctx;
}

static int tls_context_get(const char *ca_file, struct tls_context **ret, char **ret_why)
{
	struct tls_context *t;
	int k;

	for (t = tls_contexts; t; t = t->next)
		if (streq_ptr(t->ca_file, ca_file)) {
			t->n_ref++;
			*ret = t;
			return 0;
		}

	k = sock_bio_method_init();
	if (k < 0)
		return k;
	t = calloc(1, sizeof(*t));
	if (!t || (ca_file && !(t->ca_file = strdup(ca_file)))) {
		free(t);
		return -ENOMEM;
	}
	t->ctx = tls_ctx_new(ca_file, ret_why);
	if (!t->ctx) {
		free(t->ca_file);
		free(t);
		return *ret_why ? -EINVAL : -ENOMEM;
	}
	t->n_ref = 1;
	t->next = tls_contexts;
	tls_contexts = t;
	*ret = t;
	return 0;
}

/* ---- teardown and the closed notification --------------------------------------------- */

/* Release everything network-related; the struct and its defer source stay. */
static void conn_teardown(struct conn *c, bool graceful)
{
	c->query = resolve_query_cancel(c->query);
	c->io = sd_event_source_disable_unref(c->io);
	c->timer = sd_event_source_disable_unref(c->timer);
	if (c->ssl) {
		if (graceful && c->state == CONN_TLS) {
			/* One non-blocking attempt at close_notify; nobody waits for the answer. */
			ERR_clear_error();
			(void)SSL_shutdown(c->ssl);
			ERR_clear_error();
		}
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	c->fd = safe_close(c->fd);
	c->wbuf = mfree(c->wbuf);
	c->wstart = c->wend = c->wcap = 0;
	c->addrs = mfree(c->addrs);
	c->n_addrs = c->next_addr = 0;
}

/* Close with a reason; the owner hears of it from the loop, never from inside this call, so
 * every conn_* entry point may close without re-entering the owner. */
static void conn_close(struct conn *c, int error, const char *fmt, ...)
{
	va_list ap;

	if (c->state == CONN_CLOSED)
		return;
	conn_teardown(c, false);
	conn_set_state(c, CONN_CLOSED);
	c->close_error = error;
	va_start(ap, fmt);
	if (vasprintf(&c->close_why, fmt, ap) < 0)
		c->close_why = NULL;
	va_end(ap);
	log_debug("%s: closed: %s", conn_name(c), strna(c->close_why));
	c->close_pending = true;
	(void)sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT);
}

static int on_defer(sd_event_source *s, void *userdata)
{
	struct conn *c = userdata;

	if (c->close_pending) {
		c->close_pending = false;
		if (c->cb.closed) {
			conn_ref(c);
			c->cb.closed(c, c->close_error,
				     c->close_why ? c->close_why : "out of memory", c->userdata);
			if (!conn_unref_alive(c))
				return 0;
		}
		c->close_why = mfree(c->close_why);
		return 0;
	}
	if (c->kick_read) {
		c->kick_read = false;
		conn_ref(c); /* conn_transfer looks at c after the owner's data callback */
		conn_transfer(c);
		(void)conn_unref_alive(c);
	}
	return 0;
}

static void conn_kick_read(struct conn *c)
{
	c->kick_read = true;
	(void)sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT);
}

/* ---- TLS results: the one place SSL_get_error is interpreted --------------------------- */

enum tls_io {
	TLS_IO_OK,
	TLS_IO_AGAIN,  /* *want says which readiness to wait for */
	TLS_IO_CLOSED, /* EOF or error: the conn has been closed with a reason */
};

static bool tls_handshaking(const struct conn *c)
{
	return c->state == CONN_HANDSHAKE || c->state == CONN_STARTTLS;
}

static void conn_close_eof(struct conn *c, bool clean)
{
	if (tls_handshaking(c))
		conn_close(c, -ECONNRESET, "connection closed by server during TLS handshake");
	else
		conn_close(c, 0,
			   clean ? "connection closed by server"
				 : "connection closed by server (without TLS close_notify)");
}

/* The names a certificate is for, for the host-name-mismatch message. The certificate is the
 * peer's: only printable ASCII gets into our logs. */
static void cert_names(X509 *x, char *buf, size_t size)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	size_t used = 0;

	buf[0] = 0;
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && used + 1 < size; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		char name[256] = "";

		if (g->type == GEN_DNS) {
			int len = ASN1_STRING_length(g->d.dNSName);
			snprintf(name, sizeof(name), "%.*s", MIN(len, 255),
				 (const char *)ASN1_STRING_get0_data(g->d.dNSName));
		} else if (g->type == GEN_IPADD) {
			int len = ASN1_STRING_length(g->d.iPAddress);
			const unsigned char *ip = ASN1_STRING_get0_data(g->d.iPAddress);
			if (len == 4 || len == 16)
				inet_ntop(len == 4 ? AF_INET : AF_INET6, ip, name, sizeof(name));
		}
		if (!name[0])
			continue;
		used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "", name);
		used = MIN(used, size - 1);
	}
	GENERAL_NAMES_free(sans);
	if (!buf[0] &&
	    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, (int)size) < 0)
		snprintf(buf, size, "(no name)");
	for (char *p = buf; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			*p = '?';
}

static X509 *tls_peer_leaf(const struct conn *c)
{
	STACK_OF(X509) * chain;

	if (SSL_get0_peer_certificate(c->ssl))
		return SSL_get0_peer_certificate(c->ssl);
	/* After a failed verification only the chain has been kept; its first is the leaf. */
	chain = SSL_get_peer_cert_chain(c->ssl);
	return chain && sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : NULL;
}

static void conn_close_verify(struct conn *c, long result)
{
	char names[256] = "(unknown)";
	X509 *leaf;

	if (result == X509_V_ERR_HOSTNAME_MISMATCH || result == X509_V_ERR_IP_ADDRESS_MISMATCH) {
		leaf = tls_peer_leaf(c);
		if (leaf)
			cert_names(leaf, names, sizeof(names));
		conn_close(c, -EPERM, "host name mismatch: certificate is for %s, not %s", names,
			   c->host);
		return;
	}
	conn_close(c, -EPERM, "certificate verify failed: %s",
		   X509_verify_cert_error_string(result));
}

static void conn_close_ssl_error(struct conn *c, const char *op)
{
	unsigned long e = ERR_peek_last_error();
	long result = SSL_get_verify_result(c->ssl);

	if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
		conn_close_eof(c, false);
	else if (tls_handshaking(c) && !c->has_pin && result != X509_V_OK)
		conn_close_verify(c, result);
	else
		conn_close(c, -EPROTO, "%s failed: %s", op, openssl_reason());
	ERR_clear_error();
}

static void conn_close_sys_error(struct conn *c, int err, const char *op)
{
	if (err == ECONNRESET)
		conn_close(c, -ECONNRESET, "connection reset by peer");
	else
		conn_close(c, -err, "%s failed: %s", op, strerror(err));
}

/* Interpret ret from an SSL_* I/O call made right after tls_prepare(). */
static enum tls_io tls_result(struct conn *c, int ret, const char *op, uint32_t *want)
{
	int e = SSL_get_error(c->ssl, ret);

	switch (e) {
	case SSL_ERROR_NONE:
		return TLS_IO_OK;
	case SSL_ERROR_WANT_READ:
		*want = EPOLLIN;
		return TLS_IO_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		*want = EPOLLOUT;
		return TLS_IO_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		conn_close_eof(c, true);
		break;
	case SSL_ERROR_SYSCALL:
		if (c->sock_errno && c->sock_errno != EAGAIN)
			conn_close_sys_error(c, c->sock_errno, op);
		else if (ERR_peek_last_error())
			conn_close_ssl_error(c, op);
		else
			conn_close_eof(c, false);
		break;
	case SSL_ERROR_SSL:
		conn_close_ssl_error(c, op);
		break;
	default:
		conn_close(c, -EPROTO, "%s failed: unexpected OpenSSL error %d", op, e);
		break;
	}
	ERR_clear_error();
	return TLS_IO_CLOSED;
}

static void tls_prepare(struct conn *c)
{
	/* The error queue is per thread, shared by every connection: start each call clean. */
	ERR_clear_error();
	c->sock_errno = 0;
}

/* ---- socket I/O ----------------------------------------------------------------------- */

static bool conn_open(const struct conn *c)
{
	return c->state == CONN_PLAIN || c->state == CONN_TLS;
}

/* Deliver bytes; false when the read loop must stop (freed, closed, paused, upgraded). */
static bool conn_deliver(struct conn *c, const uint8_t *buf, size_t len)
{
	enum conn_state before = c->state;

	if (c->cb.data) {
		conn_ref(c);
		c->cb.data(c, buf, len, c->userdata);
		if (!conn_unref_alive(c))
			return false;
	}
	return c->state == before && !c->paused;
}

static void plain_read(struct conn *c)
{
	uint8_t buf[READ_CHUNK];

	for (size_t total = 0; total < READ_BUDGET;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0) {
			total += (size_t)n;
			if (!conn_deliver(c, buf, (size_t)n))
				return;
		} else if (n == 0) {
			conn_close(c, 0, "connection closed by server");
			return;
		} else if (errno == EAGAIN) {
			return;
		} else if (errno != EINTR) {
			conn_close_sys_error(c, errno, "read");
			return;
		}
	}
}

static void tls_read(struct conn *c)
{
	uint8_t buf[READ_CHUNK];

	c->read_want = EPOLLIN;
	for (size_t total = 0; total < READ_BUDGET;) {
		int n;

		tls_prepare(c);
		n = SSL_read(c->ssl, buf, sizeof(buf));
		if (n <= 0) {
			(void)tls_result(c, n, "TLS read", &c->read_want);
			return;
		}
		total += (size_t)n;
		if (!conn_deliver(c, buf, (size_t)n))
			return;
	}
	/* Out of budget: decrypted bytes never wake the fd, so come back for them ourselves. */
	if (SSL_has_pending(c->ssl))
		conn_kick_read(c);
}

static void wbuf_consumed(struct conn *c, size_t n)
{
	c->wstart += n;
	if (c->wstart == c->wend) {
		c->wbuf = mfree(c->wbuf);
		c->wstart = c->wend = c->wcap = 0;
	}
}

/* Send queued bytes until done or the socket is full; false when the conn got closed. */
static bool conn_flush(struct conn *c)
{
	c->write_want = EPOLLOUT;
	while (c->wstart < c->wend) {
		size_t len = c->wend - c->wstart;
		ssize_t n;

		if (c->ssl) {
			int k;
			tls_prepare(c);
			k = SSL_write(c->ssl, c->wbuf + c->wstart, (int)MIN(len, (size_t)INT_MAX));
			if (k <= 0)
				return tls_result(c, k, "TLS write", &c->write_want) !=
				       TLS_IO_CLOSED;
			n = k;
		} else {
			n = send(c->fd, c->wbuf + c->wstart, len, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && errno == EAGAIN)
				return true;
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				conn_close_sys_error(c, errno, "write");
				return false;
			}
		}
		wbuf_consumed(c, (size_t)n);
	}
	return true;
}

/* Readiness on an open connection: write what is queued, read what is there. */
static void conn_transfer(struct conn *c)
{
	if (!conn_open(c))
		return;
	if (c->wstart < c->wend && !conn_flush(c))
		return;
	if (!c->paused) {
		if (c->ssl)
			tls_read(c);
		else
			plain_read(c);
	}
	/* The owner may have freed or closed the conn inside data; the caller's reference keeps
	 * the struct itself valid. */
	if (c->freed || !conn_open(c))
		return;
	conn_update_events(c);
	/* An SSL_read that found nothing leaves a ~17 KiB record buffer behind even with
	 * SSL_MODE_RELEASE_BUFFERS; an idle connection must not keep one. */
	if (c->ssl && c->wstart == c->wend && !SSL_has_pending(c->ssl))
		(void)SSL_free_buffers(c->ssl);
}

static void conn_update_events(struct conn *c)
{
	uint32_t events = 0;
	int k;

	if (!c->io)
		return;
	switch (c->state) {
	case CONN_CONNECTING:
		events = EPOLLOUT;
		break;
	case CONN_HANDSHAKE:
	case CONN_STARTTLS:
		events = c->hs_want;
		break;
	case CONN_PLAIN:
	case CONN_TLS:
		events = (c->paused ? 0 : c->read_want) | (c->wstart < c->wend ? c->write_want : 0);
		break;
	default:
		break;
	}
	/* Off rather than an empty mask: epoll reports HUP regardless of the mask, which would
	 * spin while reading is paused. */
	if (events == 0) {
		k = sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
	} else {
		k = sd_event_source_set_io_events(c->io, events);
		if (k >= 0)
			k = sd_event_source_set_enabled(c->io, SD_EVENT_ON);
	}
	if (k < 0)
		conn_close(c, k, "cannot watch socket: %s", strerror(-k));
}

/* ---- connecting ----------------------------------------------------------------------- */

static bool host_is_ip(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void format_peer(const struct sockaddr_storage *sa, char *buf, size_t size)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(sin6->sin6_port));
	} else {
		const struct sockaddr_in *sin = (const void *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(sin->sin_port));
	}
}

static void set_sockopt_int(struct conn *c, int level, int opt, int value, const char *what)
{
	if (setsockopt(c->fd, level, opt, &value, sizeof(value)) < 0)
		log_debug_errno(errno, "%s: cannot set %s: %m, ignoring", conn_name(c), what);
}

static void conn_set_sockopts(struct conn *c)
{
	set_sockopt_int(c, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
	set_sockopt_int(c, IPPROTO_TCP, TCP_KEEPIDLE, KEEPALIVE_IDLE_SEC, "TCP_KEEPIDLE");
	set_sockopt_int(c, IPPROTO_TCP, TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SEC, "TCP_KEEPINTVL");
	set_sockopt_int(c, IPPROTO_TCP, TCP_KEEPCNT, KEEPALIVE_COUNT, "TCP_KEEPCNT");
	set_sockopt_int(c, IPPROTO_TCP, TCP_USER_TIMEOUT, USER_TIMEOUT_MSEC, "TCP_USER_TIMEOUT");
	/* IMAP is small commands and answers: never hold one back waiting for an ACK. */
	set_sockopt_int(c, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

/* Start a non-blocking connect to one address; a negative errno when it failed at once. */
static int conn_connect_one(struct conn *c, const struct conn_addr *a)
{
	int k;

	format_peer(&a->sa, c->peer, sizeof(c->peer));
	c->fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	conn_set_sockopts(c);
	if (connect(c->fd, (const struct sockaddr *)&a->sa, a->len) < 0 && errno != EINPROGRESS) {
		k = -errno;
		c->fd = safe_close(c->fd);
		return k;
	}
	/* Even an immediate success is reported by EPOLLOUT: one path for both. */
	k = sd_event_add_io(c->event, &c->io, c->fd, EPOLLOUT, on_io, c);
	if (k < 0) {
		c->fd = safe_close(c->fd);
		return k;
	}
	log_debug("%s: connecting to %s", conn_name(c), c->peer);
	return 0;
}

/* Try the remaining addresses in order; close when none is left. */
static void conn_connect_next(struct conn *c)
{
	int k;

	while (c->next_addr < c->n_addrs) {
		k = conn_connect_one(c, &c->addrs[c->next_addr++]);
		if (k >= 0)
			return;
		log_debug_errno(k, "%s: connect to %s: %m", conn_name(c), c->peer);
		c->last_connect_error = k;
	}
	k = c->last_connect_error ?: -EHOSTUNREACH;
	if (c->n_addrs == 1 && host_is_ip(c->host))
		conn_close(c, k, "cannot connect to %s: %s", c->peer, strerror(-k));
	else
		conn_close(c, k, "cannot connect to %s (%zu address%s, last %s): %s", c->host,
			   c->n_addrs, c->n_addrs == 1 ? "" : "es", c->peer, strerror(-k));
}

static void on_resolved(int error, const struct addrinfo *ai, void *userdata)
{
	struct conn *c = userdata;
	size_t n = 0;

	c->query = NULL;
	if (error < 0) {
		conn_close(c, error, "cannot resolve %s: %s", c->host, resolve_strerror(error));
		return;
	}
	for (const struct addrinfo *i = ai; i; i = i->ai_next)
		n++;
	c->addrs = calloc(n, sizeof(*c->addrs));
	if (!c->addrs) {
		conn_close(c, -ENOMEM, "out of memory");
		return;
	}
	for (const struct addrinfo *i = ai; i; i = i->ai_next) {
		if (i->ai_addrlen > sizeof(c->addrs[0].sa))
			continue;
		memcpy(&c->addrs[c->n_addrs].sa, i->ai_addr, i->ai_addrlen);
		c->addrs[c->n_addrs++].len = i->ai_addrlen;
	}
	conn_set_state(c, CONN_CONNECTING);
	conn_connect_next(c);
}

/* ---- TLS handshake -------------------------------------------------------------------- */

/* With a pin the chain's verdict does not count (the pin is checked once the handshake is
 * done, before a byte of application data moves). */
static int verify_accept(int preverify_ok, X509_STORE_CTX *ctx)
{
	return 1;
}

static int tls_begin(struct conn *c)
{
	BIO *bio;
	int ok;

	c->ssl = SSL_new(c->tls_ctx->ctx);
	bio = BIO_new(sock_bio_method);
	if (!c->ssl || !bio) {
		BIO_free(bio);
		return -ENOMEM;
	}
	BIO_set_data(bio, c);
	SSL_set_bio(c->ssl, bio, bio);
	c->sock_eof = false;

	if (host_is_ip(c->host)) {
		/* No SNI for literals (RFC 6066 §3); the certificate must carry the IP address. */
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->host);
	} else {
		SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		ok = SSL_set_tlsext_host_name(c->ssl, c->host) && SSL_set1_host(c->ssl, c->host);
	}
	if (!ok)
		return -ENOMEM;
	if (c->has_pin)
		SSL_set_verify(c->ssl, SSL_VERIFY_PEER, verify_accept);
	SSL_set_connect_state(c->ssl);
	/* Writable at once: the first handshake step (ClientHello) happens from the loop. */
	c->hs_want = EPOLLOUT;
	return 0;
}

static void format_fingerprint(const uint8_t *md, char *buf, size_t size)
{
	size_t used = (size_t)snprintf(buf, size, "sha256:");

	for (size_t i = 0; i < 32 && used + 3 < size; i++)
		used += (size_t)snprintf(buf + used, size - used, "%s%02X", i ? ":" : "", md[i]);
}

static bool tls_check_pin(struct conn *c)
{
	X509 *cert = SSL_get0_peer_certificate(c->ssl);
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned md_len = 0;
	char want[128], got[128];

	if (!cert) {
		conn_close(c, -EPERM, "server sent no certificate");
		return false;
	}
	if (!X509_digest(cert, EVP_sha256(), md, &md_len) || md_len != 32) {
		ERR_clear_error();
		conn_close(c, -ENOMEM, "cannot compute the certificate fingerprint");
		return false;
	}
	if (CRYPTO_memcmp(md, c->pin, 32) == 0) {
		long result = SSL_get_verify_result(c->ssl);
		log_debug("%s: certificate accepted by its pinned fingerprint (chain: %s)",
			  conn_name(c), X509_verify_cert_error_string(result));
		return true;
	}
	format_fingerprint(c->pin, want, sizeof(want));
	format_fingerprint(md, got, sizeof(got));
	conn_close(c, -EPERM, "certificate fingerprint mismatch: expected %s, got %s", want, got);
	return false;
}

static void tls_handshake_done(struct conn *c)
{
	void (*cb)(struct conn *, void *) =
	    c->state == CONN_HANDSHAKE ? c->cb.connected : c->cb.tls_ready;
	char info[128];

	if (c->has_pin && !tls_check_pin(c))
		return;
	c->timer = sd_event_source_disable_unref(c->timer);
	conn_set_state(c, CONN_TLS);
	c->read_want = EPOLLIN;
	if (log_enabled(LOG_DEBUG) && conn_tls_info(c, info, sizeof(info)) >= 0)
		log_debug("%s: TLS established with %s: %s", conn_name(c), c->peer, info);
	if (cb) {
		conn_ref(c);
		cb(c, c->userdata);
		if (!conn_unref_alive(c))
			return;
	}
	/* The server may have sent data right behind its Finished (a TLS 1.3 greeting): it sits
	 * decrypted in OpenSSL already and will not wake the fd. */
	conn_transfer(c);
}

static void tls_handshake_step(struct conn *c)
{
	int k;

	tls_prepare(c);
	k = SSL_do_handshake(c->ssl);
	if (k == 1) {
		tls_handshake_done(c);
		return;
	}
	if (tls_result(c, k, "TLS handshake", &c->hs_want) == TLS_IO_AGAIN)
		conn_update_events(c);
}

/* ---- the event handlers --------------------------------------------------------------- */

static void on_connect_ready(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		log_debug("%s: connect to %s: %s", conn_name(c), c->peer, strerror(err));
		c->last_connect_error = -err;
		c->io = sd_event_source_disable_unref(c->io);
		c->fd = safe_close(c->fd);
		conn_connect_next(c);
		return;
	}
	c->addrs = mfree(c->addrs);
	c->n_addrs = c->next_addr = 0;
	log_debug("%s: connected to %s", conn_name(c), c->peer);

	if (c->tls == TLS_IMPLICIT) {
		int k = tls_begin(c);
		if (k < 0) {
			conn_close(c, k, "cannot set up TLS: %s", strerror(-k));
			return;
		}
		conn_set_state(c, CONN_HANDSHAKE);
		conn_update_events(c);
		return;
	}
	c->timer = sd_event_source_disable_unref(c->timer);
	conn_set_state(c, CONN_PLAIN);
	c->read_want = EPOLLIN;
	if (c->cb.connected) {
		conn_ref(c);
		c->cb.connected(c, c->userdata);
		if (!conn_unref_alive(c))
			return;
	}
	conn_update_events(c);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct conn *c = userdata;

	conn_ref(c);
	switch (c->state) {
	case CONN_CONNECTING:
		on_connect_ready(c);
		break;
	case CONN_HANDSHAKE:
	case CONN_STARTTLS:
		tls_handshake_step(c);
		break;
	case CONN_PLAIN:
	case CONN_TLS:
		conn_transfer(c);
		break;
	default:
		break;
	}
	(void)conn_unref_alive(c);
	return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct conn *c = userdata;
	char d[32];

	format_duration(d, sizeof(d), c->timeout);
	switch (c->state) {
	case CONN_RESOLVING:
		conn_close(c, -ETIMEDOUT, "timed out after %s resolving %s", d, c->host);
		break;
	case CONN_CONNECTING:
		conn_close(c, -ETIMEDOUT, "timed out after %s connecting to %s (%s)", d, c->host,
			   c->peer);
		break;
	default:
		conn_close(c, -ETIMEDOUT, "timed out after %s in the TLS handshake with %s (%s)", d,
			   c->host, c->peer);
		break;
	}
	return 0;
}

static int conn_arm_timer(struct conn *c)
{
	c->timer = sd_event_source_disable_unref(c->timer);
	return sd_event_add_time_relative(c->event, &c->timer, CLOCK_BOOTTIME, c->timeout, 0,
					  on_timeout, c);
}

/* ---- the public API ------------------------------------------------------------------- */

static int conn_copy_params(struct conn *c, const struct conn_params *p)
{
	c->host = strdup(p->host);
	c->name = p->name ? strdup(p->name) : NULL;
	if (!c->host || (p->name && !c->name))
		return -ENOMEM;
	c->port = p->port;
	c->tls = p->tls;
	c->timeout = p->connect_timeout ? p->connect_timeout : DEFAULT_CONNECT_TIMEOUT;
	if (p->fingerprint) {
		c->has_pin = true;
		memcpy(c->pin, p->fingerprint, sizeof(c->pin));
	}
	return 0;
}

static int conn_start(struct conn *c, const struct conn_params *p)
{
	_cleanup_free_ char *why = NULL;
	int k;

	k = sd_event_add_defer(c->event, &c->defer, on_defer, c);
	if (k >= 0)
		k = sd_event_source_set_enabled(c->defer, SD_EVENT_OFF);
	if (k >= 0)
		k = conn_arm_timer(c);
	if (k < 0)
		return k;
	if (c->tls != TLS_NONE) {
		k = tls_context_get(p->ca_file, &c->tls_ctx, &why);
		if (k == -EINVAL) {
			/* A configuration problem, but reported like any other: through closed. */
			conn_close(c, k, "%s", why);
			return 0;
		}
		if (k < 0)
			return k;
	}
	return resolver_resolve(c->resolver, c->host, c->port, on_resolved, c, &c->query);
}

int conn_new(sd_event *e, struct resolver *r, const struct conn_params *p,
	     const struct conn_callbacks *cb, void *userdata, struct conn **ret)
{
	struct conn *c;
	int k;

	if (!e || !r || !p || !p->host || !*p->host || !cb || !ret)
		return -EINVAL;
	if (p->tls != TLS_IMPLICIT && p->tls != TLS_STARTTLS && p->tls != TLS_NONE)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->n_ref = 1;
	c->fd = -1;
	c->event = sd_event_ref(e);
	c->resolver = r;
	c->cb = *cb;
	c->userdata = userdata;
	c->state = CONN_RESOLVING;
	k = conn_copy_params(c, p);
	if (k >= 0)
		k = conn_start(c, p);
	if (k < 0) {
		conn_free(c);
		return k;
	}
	*ret = c;
	return 0;
}

struct conn *conn_free(struct conn *c)
{
	if (!c || c->freed)
		return NULL;
	c->freed = true;
	conn_teardown(c, true);
	c->defer = sd_event_source_disable_unref(c->defer);
	if (--c->n_ref == 0)
		conn_destroy(c);
	return NULL;
}

static int wbuf_append(struct conn *c, const void *data, size_t len)
{
	size_t queued = c->wend - c->wstart;

	if (len > CONN_WRITE_MAX || queued > CONN_WRITE_MAX - len)
		return -ENOBUFS;
	if (c->wend + len > c->wcap) {
		if (c->wstart > 0) {
			/* Moving queued bytes is allowed: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER. */
			memmove(c->wbuf, c->wbuf + c->wstart, queued);
			c->wstart = 0;
			c->wend = queued;
		}
		if (queued + len > c->wcap) {
			size_t cap = MAX(queued + len, c->wcap * 2);
			uint8_t *b = realloc(c->wbuf, cap);
			if (!b)
				return -ENOMEM;
			c->wbuf = b;
			c->wcap = cap;
		}
	}
	memcpy(c->wbuf + c->wend, data, len);
	c->wend += len;
	return 0;
}

int conn_write(struct conn *c, const void *data, size_t len)
{
	bool was_idle;
	int k;

	if (!c || c->freed || (!data && len))
		return -EINVAL;
	if (!conn_open(c))
		return -ENOTCONN;
	if (len == 0)
		return 0;
	was_idle = c->wstart == c->wend;
	k = wbuf_append(c, data, len);
	if (k < 0)
		return k;
	/* Only an idle queue is flushed here; otherwise the fd is already being watched and a
	 * TLS write must be retried by the loop, not raced with. */
	if (was_idle && !conn_flush(c))
		return 0; /* closed; the owner hears of it through closed */
	conn_update_events(c);
	return 0;
}

/* Throw away plaintext that arrived after the STARTTLS response and before our ClientHello:
 * the server cannot legitimately have sent any (the client speaks first in TLS). */
static int conn_discard_plaintext(struct conn *c)
{
	uint8_t buf[4096];
	size_t total = 0;

	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0) {
			total += (size_t)n;
			if (total > STARTTLS_DISCARD_MAX)
				return -EPROTO;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		break;
	}
	if (total > 0)
		log_debug("%s: discarded %zu bytes of plaintext received after STARTTLS",
			  conn_name(c), total);
	return 0;
}

int conn_start_tls(struct conn *c)
{
	_cleanup_free_ char *why = NULL;
	int k;

	if (!c || c->freed || c->state != CONN_PLAIN)
		return -EINVAL;
	if (c->wstart < c->wend)
		return -EBUSY;
	if (!c->tls_ctx) {
		k = tls_context_get(NULL, &c->tls_ctx, &why);
		if (k < 0)
			return k;
	}
	k = conn_discard_plaintext(c);
	if (k == -EPROTO) {
		conn_close(c, k, "too much plaintext received after STARTTLS");
		return 0;
	}
	if (k < 0) {
		conn_close_sys_error(c, -k, "read before TLS handshake");
		return 0;
	}
	k = tls_begin(c);
	if (k >= 0)
		k = conn_arm_timer(c);
	if (k < 0) {
		conn_close(c, k, "cannot set up TLS: %s", strerror(-k));
		return 0;
	}
	conn_set_state(c, CONN_STARTTLS);
	conn_update_events(c);
	return 0;
}

void conn_pause_reading(struct conn *c, bool pause)
{
	if (!c || c->freed || c->paused == pause)
		return;
	c->paused = pause;
	if (!conn_open(c))
		return;
	conn_update_events(c);
	if (!pause && c->ssl && SSL_has_pending(c->ssl))
		conn_kick_read(c);
}

bool conn_is_tls(const struct conn *c)
{
	return c && c->state == CONN_TLS;
}

const char *conn_peer(const struct conn *c)
{
	return c ? c->peer : "";
}

int conn_tls_info(const struct conn *c, char *buf, size_t size)
{
	int n;

	if (!c || !buf || size == 0)
		return -EINVAL;
	if (!c->ssl || c->state != CONN_TLS)
		return -ENOTCONN;
	n = snprintf(buf, size, "%s %s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
	if (n < 0)
		return -EIO;
	return (size_t)n < size ? 0 : -ENOBUFS;
}
