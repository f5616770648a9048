/* One IMAP connection's protocol state machine, sans-I/O.
 *
 * Bytes from the server go in (imap_session_feed), with the current time; commands come out
 * through ops->send, a TLS upgrade through ops->start_tls, and what was learned through the
 * other callbacks. The session never touches a socket, a timer or the clock: the owner arms
 * one timer at imap_session_deadline() and calls imap_session_timeout() when it fires. That
 * is what lets tests drive it from recorded transcripts.
 *
 *   greeting → CAPABILITY → [STARTTLS → CAPABILITY] → LOGIN/AUTHENTICATE → CAPABILITY →
 *   ENABLE → [ID] → goal:
 *     WATCH: EXAMINE mailbox → catch-up UID FETCH → IDLE ⇄ (DONE, UID FETCH) ...
 *            (or NOOP polling when the server has no IDLE)
 *     PROBE: LIST "" "*" → LOGOUT (for `imapidled check --connect`)
 *     STORE_SEEN: SELECT mailbox → (UIDVALIDITY still the same) UID STORE uid
 *            +FLAGS.SILENT (\Seen) → LOGOUT (the desktop's mark-read action)
 *
 * ENABLE asks for QRESYNC when offered (it implies CONDSTORE), else CONDSTORE. Either way
 * the server puts the UID into every untagged FETCH (RFC 7162 §3.1, as clarified by the
 * verified erratum 1807), so a flag change made by another client names its message. With
 * QRESYNC an expunge comes as "VANISHED uid-set"; without it as "n EXPUNGE", which names a
 * sequence number only: the session keeps the sequence numbers of the last
 * IMAP_SESSION_KNOWN_MAX messages it reported on this connection (the ones that may still
 * have a popup), shifts them on every EXPUNGE, and reports expunges of those only.
 *
 * Failure is reported once through ops->closed with a class that tells the owner how long to
 * wait before the next attempt. After that the session is dead and only imap_session_free()
 * may be called on it. Callbacks must not free the session; defer that to the event loop. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "imap/fetch.h"
#include "util.h"

struct imap_session;

enum imap_goal {
	IMAP_GOAL_WATCH,
	IMAP_GOAL_PROBE,
	IMAP_GOAL_STORE_SEEN,
};

/* Messages reported on one connection whose sequence numbers are tracked (no QRESYNC). */
#define IMAP_SESSION_KNOWN_MAX 1000U
/* A VANISHED set is reported for the UIDs in (last_uid - this, last_uid] only, and at most
 * this many per response: "1:4294967295" costs no more than the popups that can exist. */
#define IMAP_SESSION_VANISHED_WINDOW 1000U

/* How the owner should retry after a failure (see backoff.h for the delays). */
enum imap_failure {
	IMAP_FAIL_NONE,         /* clean LOGOUT, or the probe is done */
	IMAP_FAIL_TRANSIENT,    /* network, timeout, BYE, protocol error: exponential backoff */
	IMAP_FAIL_AUTH,         /* credentials rejected: long backoff, no account lock-out */
	IMAP_FAIL_TOO_MANY,     /* server says too many connections: 10 minutes */
	IMAP_FAIL_NO_MAILBOX,   /* EXAMINE failed: long backoff */
	IMAP_FAIL_FINAL,        /* a policy refusal (no STARTTLS, plaintext login): until reload */
};

struct imap_session_params {
	const char *name;       /* for logs: "work/INBOX" */
	enum imap_goal goal;
	enum tls_mode tls;
	bool allow_plaintext;
	const char *host;       /* for OAUTHBEARER */
	uint16_t port;
	const char *username;
	const char *password;   /* borrowed; may be NULL with OAuth */
	const char *oauth_token;/* borrowed; for XOAUTH2 / OAUTHBEARER */
	enum auth_mech auth;
	bool send_id;

	/* WATCH and STORE_SEEN */
	const char *mailbox;    /* UTF-8; encoded to modified UTF-7 on the wire */
	uint32_t uidvalidity;   /* STORE_SEEN: the message's; nothing is stored if it changed */

	/* STORE_SEEN only */
	uint32_t store_uid;     /* the message to mark \Seen */

	/* WATCH only */
	bool known;             /* a previous run recorded uidvalidity and last_uid */
	uint32_t last_uid;      /* highest UID already reported (or being reported) */
	unsigned catch_up;      /* at most this many individual events after an absence */
	bool skip_seen;
	usec_t idle_refresh;
	usec_t poll_interval;
	usec_t reply_timeout;
	usec_t greeting_timeout;
};

struct imap_session_ops {
	/* Queue bytes for the server. A negative return kills the session (TRANSIENT). */
	int (*send)(void *userdata, const void *data, size_t len);
	/* Begin the TLS handshake; call imap_session_tls_ready() once it is verified. */
	int (*start_tls)(void *userdata);
	/* The mailbox is selected: its UIDVALIDITY and the highest UID already reported are
	 * settled (baseline==true: first run or UIDVALIDITY changed, nothing old is reported;
	 * the owner should persist this state right away). */
	void (*selected)(void *userdata, uint32_t uidvalidity, uint32_t last_uid, bool baseline);
	/* One new message (UID above last_uid; \Seen ones skipped when skip_seen). */
	void (*message)(void *userdata, const struct imap_fetch *f);
	/* Messages covered by a summary (catch-up beyond the limit); UIDs first..last. */
	void (*summary)(void *userdata, uint32_t first_uid, uint32_t last_uid, uint32_t count);
	/* Skipped (seen) messages up to this UID: state may advance past them. */
	void (*skipped)(void *userdata, uint32_t uid);
	/* Entered IDLE (or a poll wait): the session is healthy. */
	void (*idle)(void *userdata);
	/* WATCH: another client changed the flags (enum imap_flag bits) of a message at or
	 * below the highest UID reported so far. May repeat for the same message. */
	void (*flags_changed)(void *userdata, uint32_t uid, unsigned flags);
	/* WATCH: a message at or below the highest UID reported so far was expunged (see the
	 * bounds above; a UID that was never reported may be named). */
	void (*expunged)(void *userdata, uint32_t uid);
	/* STORE_SEEN: the outcome, before LOGOUT: 0 stored; -ESTALE the mailbox's UIDVALIDITY
	 * changed, so the UID means another message and nothing was stored; -EIO the server
	 * refused the STORE. why is a human sentence. closed() follows in every case. */
	void (*stored)(void *userdata, int result, const char *why);
	/* PROBE: a mailbox listed by the server. */
	void (*listed)(void *userdata, const char *mailbox_utf8, bool noselect);
	/* The server's [ALERT] text, sanitised; must be shown to the user. */
	void (*alert)(void *userdata, const char *text);
	/* The session ended. why is a human sentence (no secrets). */
	void (*closed)(void *userdata, enum imap_failure failure, int error, const char *why);
};

int imap_session_new(const struct imap_session_params *p, const struct imap_session_ops *ops,
		     void *userdata, usec_t now, struct imap_session **ret);
struct imap_session *imap_session_free(struct imap_session *s);

/* The transport is connected (TLS done already for implicit TLS). */
int imap_session_connected(struct imap_session *s, bool tls, usec_t now);
/* The STARTTLS handshake finished and the certificate verified. */
int imap_session_tls_ready(struct imap_session *s, usec_t now);
/* Bytes from the server. Returns 0, or a negative errno when the session died (closed was
 * called). */
int imap_session_feed(struct imap_session *s, const void *data, size_t len, usec_t now);
/* The transport failed or the peer closed. */
void imap_session_transport_closed(struct imap_session *s, int error, const char *why);

/* When the owner's timer should fire next (CLOCK_BOOTTIME µs), or USEC_INFINITY. */
usec_t imap_session_deadline(const struct imap_session *s);
int imap_session_timeout(struct imap_session *s, usec_t now);

/* Check liveness now (after resume or a route change): leave IDLE and expect an answer
 * within the reply timeout. */
int imap_session_probe(struct imap_session *s, usec_t now);
/* Polite shutdown: leave IDLE, LOGOUT; closed(IMAP_FAIL_NONE) when the server answers. */
int imap_session_logout(struct imap_session *s, usec_t now);

/* What the server offered (after login when logged in), as IMAP_CAP_* bits. */
uint64_t imap_session_capabilities(const struct imap_session *s);
const char *imap_session_state_name(const struct imap_session *s);
bool imap_session_is_idle(const struct imap_session *s);
