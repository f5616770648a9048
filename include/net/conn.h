/* One client connection: resolve, non-blocking TCP connect, TLS (implicit or STARTTLS),
 * certificate verification or pinning, buffered writes, plaintext delivered through callbacks.
 * The only module that includes OpenSSL.
 *
 * Lifecycle: conn_new() starts connecting and never calls back from inside itself. Exactly one
 * of these happens next: connected (then, after conn_start_tls(), tls_ready), any number of
 * data, and finally closed — or conn_free() by the owner, after which nothing is called.
 * closed is always delivered from the event loop, never from inside a conn_* call; after it the
 * conn is dead (conn_write() fails with -ENOTCONN) and the owner frees it.
 *
 * conn_free() is safe anywhere, including from inside any of the conn's own callbacks (the conn
 * holds a reference on itself while it calls out, and stops as soon as it has been freed).
 *
 * Certificates: without a pin the chain must verify against ca_file (or the system store) and
 * the certificate must name host (DNS name, or IP address for a literal host). With a pin, the
 * pin alone decides: the SHA-256 of the server's DER certificate must equal it, and then the
 * certificate is accepted even when self-signed, expired or issued for another name (as mbsync
 * and other mail clients treat a pinned certificate: the user vouched for this exact one).
 *
 * Errors reported to closed (error, why):
 *   0 / -ECONNRESET   the server closed the connection (why says which)
 *   -ETIMEDOUT        resolve + connect + handshake took longer than connect_timeout
 *   -ECONNREFUSED, -ENETUNREACH, -EHOSTUNREACH, ...   TCP connect failed (last address tried)
 *   -ENOENT, -ENODATA ... resolver errors (see resolve.h)
 *   -EPERM            certificate not trusted: "certificate verify failed: ...",
 *                     "host name mismatch: certificate is for ...", "certificate fingerprint
 *                     mismatch: expected sha256:..., got sha256:..."
 *   -EPROTO           TLS protocol failure ("TLS handshake failed: wrong version number")
 *   -EINVAL           the CA file could not be loaded
 * The owner logs them (this module logs at debug only). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "net/resolve.h"
#include "util.h"

struct conn;

struct conn_params {
	const char *host; /* name or IP literal; also SNI and the name the certificate must carry */
	uint16_t port;
	/* IMPLICIT: handshake at once; STARTTLS, NONE: plaintext until conn_start_tls() */
	enum tls_mode tls;
	const char *ca_file;	    /* NULL: the system store */
	const uint8_t *fingerprint; /* NULL, or 32 bytes: SHA-256 of the server's DER certificate */
	usec_t connect_timeout;	    /* resolve + TCP connect + TLS handshake; 0: 30 s */
	const char *name;	    /* for logs: "work/INBOX" */
};

struct conn_callbacks {
	/* TCP is up (plain) or the implicit TLS handshake is done and verified. */
	void (*connected)(struct conn *c, void *userdata);
	/* The handshake started by conn_start_tls() is done and verified. */
	void (*tls_ready)(struct conn *c, void *userdata);
	/* Plaintext bytes; buf is valid only during the call. */
	void (*data)(struct conn *c, const uint8_t *buf, size_t len, void *userdata);
	/* The connection is over; see the error table above. why is valid only during the call. */
	void (*closed)(struct conn *c, int error, const char *why, void *userdata);
};

/* Copies p and cb; r is borrowed and must outlive the conn. Returns -EINVAL for bad
 * parameters, -ENOMEM; every network failure comes through closed instead. */
int conn_new(sd_event *e, struct resolver *r, const struct conn_params *p,
	     const struct conn_callbacks *cb, void *userdata, struct conn **ret);

/* Closes at once (a TLS connection gets a best-effort close_notify); no callback after this.
 * NULL-safe; returns NULL. */
struct conn *conn_free(struct conn *c);
static inline void conn_freep(struct conn **c)
{
	conn_free(*c);
}
#define _cleanup_conn_free_ _cleanup_(conn_freep)

/* Queue bytes and send what the socket takes now. -ENOTCONN before connected / during a
 * handshake / after closed; -ENOBUFS when more than CONN_WRITE_MAX bytes would be queued
 * (nothing is queued then). A send failure is reported through closed, not here. */
#define CONN_WRITE_MAX (1024 * 1024)
int conn_write(struct conn *c, const void *data, size_t len);

/* Upgrade a plaintext connection (after the server's "OK Begin TLS"). May be called from inside
 * the data callback. Plaintext the kernel has received but not yet delivered is discarded, and
 * nothing received from now on is delivered until the handshake has succeeded: bytes a
 * man-in-the-middle appends to the OK response can never reach the owner as data. (Bytes after
 * the OK line in the very buffer the data callback is looking at were delivered already; the
 * caller discards those.) The connect_timeout applies again to the handshake.
 * -EINVAL unless the conn is connected and plaintext; -EBUSY while plaintext writes are still
 * queued (they would be sent after the server started TLS). */
int conn_start_tls(struct conn *c);

/* Stop (true) or resume (false) delivering data; bytes wait in the kernel meanwhile.
 * Handshakes proceed regardless. */
void conn_pause_reading(struct conn *c, bool pause);

bool conn_is_tls(const struct conn *c);

/* "127.0.0.1:993", "[::1]:993"; "" before a TCP connection attempt has started. */
const char *conn_peer(const struct conn *c);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384". -ENOTCONN without TLS, -ENOBUFS when truncated. */
int conn_tls_info(const struct conn *c, char *buf, size_t size);
