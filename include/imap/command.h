/* IMAP command builder: tags, quoting vs literals, mailbox names, SASL payloads. No I/O.
 *
 * A command is built into a struct imap_cmd, which owns its bytes and knows where the
 * sender must stop: after every synchronizing literal announcement "{n}\r\n" the server
 * has to answer "+" before the literal's bytes may follow (RFC 3501 §7.5). The bytes are
 * therefore handed out as segments; segment i+1 is sent only after a continuation.
 * With LITERAL+ (RFC 7888), or LITERAL- for literals up to 4096 bytes, the builder writes
 * "{n+}" and the command is a single segment.
 *
 * Every function returns 0 or a negative errno: -EINVAL for an argument that can't be
 * sent (CR, LF or NUL in a string, invalid UTF-8, a bad atom), -ENOBUFS when the command
 * would exceed IMAP_CMD_MAX bytes or IMAP_CMD_MAX_LITERALS literals. After an error the
 * command is incomplete and must be rebuilt (imap_cmd_begin() or a builder) before use.
 *
 * The buffer may hold a password or token: it is wiped when reset, grown or released. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAP_CMD_MAX (256U * 1024U)
#define IMAP_CMD_MAX_LITERALS 8
#define IMAP_CMD_MAX_SECRETS 4

/* Strings longer than this go as literals even when they could be quoted. */
#define IMAP_QUOTED_MAX 1024
/* LITERAL- (RFC 7888 §4) allows "{n+}" only up to this size. */
#define IMAP_LITERAL_MINUS_MAX 4096

struct imap_cmd {
	char *buf; /* owned, NUL-terminated */
	size_t len, cap;
	uint64_t caps; /* IMAP_CAP() bits of the server: LITERAL+ / LITERAL- */
	size_t cuts[IMAP_CMD_MAX_LITERALS]; /* segment ends: offsets after "{n}\r\n" */
	size_t n_cuts;
	struct {
		size_t start, end;
	} secrets[IMAP_CMD_MAX_SECRETS]; /* byte ranges redacted in traces */
	size_t n_secrets;
};

/* caps: the server's capability mask (only LITERAL+ and LITERAL- matter); may change later
 * by assigning c->caps. */
void imap_cmd_init(struct imap_cmd *c, uint64_t caps);
void imap_cmd_done(struct imap_cmd *c);

/* ---- building, piece by piece ---- */

/* Reset and start "tag verb". verb is one or more atoms separated by single spaces
 * ("UID FETCH"). */
int imap_cmd_begin(struct imap_cmd *c, const char *tag, const char *verb);
/* Each of these appends a SP and then its argument. */
int imap_cmd_atom(struct imap_cmd *c, const char *atom);
int imap_cmd_astring(struct imap_cmd *c, const char *s); /* atom, quoted or literal */
int imap_cmd_string(struct imap_cmd *c, const char *s);  /* quoted or literal, never atom */
int imap_cmd_astring_secret(struct imap_cmd *c, const char *s); /* redacted in traces */
int imap_cmd_mailbox(struct imap_cmd *c, const char *utf8);    /* modified UTF-7 astring */
int imap_cmd_number(struct imap_cmd *c, uint64_t n);
/* Printable ASCII as is ("4:*", "(UID FLAGS)"); no CR, LF or control characters. */
int imap_cmd_raw(struct imap_cmd *c, const char *s);
int imap_cmd_end(struct imap_cmd *c); /* CRLF */

/* ---- what to send ---- */

static inline const char *imap_cmd_data(const struct imap_cmd *c, size_t *ret_len)
{
	*ret_len = c->len;
	return c->buf;
}
/* Segments: 1 + the number of synchronizing literals. */
static inline size_t imap_cmd_n_segments(const struct imap_cmd *c)
{
	return c->n_cuts + 1;
}
int imap_cmd_segment(const struct imap_cmd *c, size_t i, const char **ret, size_t *ret_len);

/* A log-safe, single-line rendering: secrets become "***", CR/LF and control bytes are
 * escaped, the final CRLF is dropped. Owned by the caller; NULL on OOM. */
char *imap_cmd_redacted(const struct imap_cmd *c);

/* ---- tags ---- */

#define IMAP_TAG_MAX 12 /* "a4294967295" + NUL */

struct imap_tagger {
	uint32_t next;
};

static inline void imap_tagger_init(struct imap_tagger *t)
{
	t->next = 1;
}
/* Write the next tag ("a1", "a2", ..., wrapping to "a1" after "a4294967295"); returns buf. */
const char *imap_tagger_next(struct imap_tagger *t, char buf[static IMAP_TAG_MAX]);
/* Parse a tag of our form into its number; -EINVAL for anything else (a server's reply to
 * a tag we never sent, "A1", "a01", "a0"). */
int imap_tag_parse(const char *tag, uint32_t *ret);

/* ---- ready-made commands; each resets c and leaves a complete command ---- */

int imap_cmd_simple(struct imap_cmd *c, const char *tag, const char *verb);
static inline int imap_cmd_capability(struct imap_cmd *c, const char *tag)
{
	return imap_cmd_simple(c, tag, "CAPABILITY");
}
static inline int imap_cmd_starttls(struct imap_cmd *c, const char *tag)
{
	return imap_cmd_simple(c, tag, "STARTTLS");
}
static inline int imap_cmd_idle(struct imap_cmd *c, const char *tag)
{
	return imap_cmd_simple(c, tag, "IDLE");
}
static inline int imap_cmd_noop(struct imap_cmd *c, const char *tag)
{
	return imap_cmd_simple(c, tag, "NOOP");
}
static inline int imap_cmd_logout(struct imap_cmd *c, const char *tag)
{
	return imap_cmd_simple(c, tag, "LOGOUT");
}
/* "DONE\r\n", which ends IDLE; untagged. */
int imap_cmd_idle_done(struct imap_cmd *c);

/* LOGIN user pass; the password is redacted in traces. */
int imap_cmd_login(struct imap_cmd *c, const char *tag, const char *user, const char *pass);

enum imap_sasl_mech {
	IMAP_SASL_PLAIN,
	IMAP_SASL_XOAUTH2,
	IMAP_SASL_OAUTHBEARER,
	_IMAP_SASL_MAX,
};
const char *imap_sasl_mech_to_string(enum imap_sasl_mech m); /* "PLAIN", ... */

struct imap_sasl_creds {
	const char *user;
	const char *secret; /* PLAIN: the password; XOAUTH2 / OAUTHBEARER: the access token */
	const char *host;   /* OAUTHBEARER only, optional */
	uint16_t port;      /* OAUTHBEARER only, 0 = leave out */
};

/* "AUTHENTICATE MECH [base64 payload]": with initial_response (the server has SASL-IR) the
 * payload rides on the command line, otherwise imap_cmd_sasl_response() builds the line to
 * send after the server's "+". The payloads:
 *   PLAIN        "\0user\0password" (RFC 4616, empty authzid)
 *   XOAUTH2      "user=U\1auth=Bearer T\1\1"
 *   OAUTHBEARER  "n,a=U,\1host=H\1port=P\1auth=Bearer T\1\1" (RFC 7628; ',' and '=' in U
 *                escaped as "=2C" and "=3D")
 * User names and secrets containing CR, LF, NUL or (for the OAuth forms) \1 are -EINVAL. */
int imap_cmd_authenticate(struct imap_cmd *c, const char *tag, enum imap_sasl_mech mech,
			  const struct imap_sasl_creds *cr, bool initial_response);
int imap_cmd_sasl_response(struct imap_cmd *c, enum imap_sasl_mech mech,
			   const struct imap_sasl_creds *cr);
/* "\r\n": the empty reply a client owes an XOAUTH2/OAUTHBEARER error challenge. */
int imap_cmd_sasl_empty(struct imap_cmd *c);
/* "*\r\n": abort the exchange (RFC 3501 §6.2.2). */
int imap_cmd_sasl_cancel(struct imap_cmd *c);

/* ENABLE with the names of the IMAP_CAP() bits in mask (CONDSTORE, QRESYNC, ...). */
int imap_cmd_enable(struct imap_cmd *c, const char *tag, uint64_t mask);
/* EXAMINE mailbox [(CONDSTORE)] */
int imap_cmd_examine(struct imap_cmd *c, const char *tag, const char *mailbox, bool condstore);
/* STATUS mailbox (UIDNEXT UIDVALIDITY MESSAGES) */
int imap_cmd_status(struct imap_cmd *c, const char *tag, const char *mailbox);
/* LIST "" "*" */
int imap_cmd_list_all(struct imap_cmd *c, const char *tag);
/* ID ("name" "imapidled" "version" version) */
int imap_cmd_id(struct imap_cmd *c, const char *tag, const char *version);

#define IMAP_FETCH_NEW_ITEMS "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)"
/* UID FETCH <from>:* items; from >= 1; items is raw, e.g. IMAP_FETCH_NEW_ITEMS. */
int imap_cmd_uid_fetch(struct imap_cmd *c, const char *tag, uint32_t from, const char *items);
/* UID STORE uid +FLAGS.SILENT (\Seen) */
int imap_cmd_uid_store_seen(struct imap_cmd *c, const char *tag, uint32_t uid);

/* ---- mailbox names (RFC 3501 §5.1.3) ---- */

/* UTF-8 → modified UTF-7; "INBOX" in any case becomes "INBOX". -EINVAL on bad UTF-8. */
int imap_mutf7_encode(const char *utf8, char **ret);
/* modified UTF-7 → UTF-8; -EINVAL on anything malformed. */
int imap_mutf7_decode(const char *mutf7, char **ret);
