/* struct mail_event: one new message (or a burst of them), decoded and immutable once built.
 *
 * Built by watch, shared by every sink (refcounted: each sink queue holds a reference). After
 * construction nobody writes a field; only the reference count changes. Every string in it is
 * valid UTF-8 without NUL (the constructors guarantee it), so the JSON form cannot fail on
 * encoding and can always be read back by mail_event_from_json().
 *
 * Identity (DESIGN.md, Conventions), decimal numbers, "\0" a NUL byte:
 *   mail.received: "msg_" + hex(sha256(account "\0" mailbox "\0" uidvalidity "\0" uid))[0..32)
 *   mail.summary:  "sum_" + hex(sha256(account "\0" mailbox "\0" uidvalidity "\0"
 *                                     first_uid ":" last_uid))[0..32)
 * The summary's range uses IMAP sequence-set syntax, which never equals a single uid, so a
 * summary id can never collide with a message id even apart from the prefix.
 *
 * Bounds, so that whatever to_json writes from_json accepts (the webhook spool relies on it):
 * account and mailbox at most MAIL_EVENT_NAME_MAX bytes (longer is -EINVAL: they are the
 * identity); other strings are cut at a character boundary to MAIL_EVENT_STRING_MAX bytes;
 * invalid UTF-8 is replaced by U+FFFD; at most MAIL_EVENT_TO_MAX recipients are kept. */
#pragma once

#include <time.h>

#include "util.h"

#define MAIL_EVENT_RECEIVED "mail.received"
#define MAIL_EVENT_SUMMARY "mail.summary"

#define MAIL_EVENT_ID_LEN 36 /* prefix + 32 hex digits */
#define MAIL_EVENT_NAME_MAX 1024
#define MAIL_EVENT_STRING_MAX 1024
#define MAIL_EVENT_TO_MAX 64
#define MAIL_EVENT_JSON_MAX (1024 * 1024) /* > the largest to_json output the bounds allow */

/* IMAP system flags (RFC 3501 2.3.2), in the order the JSON lists them. */
enum {
	MAIL_FLAG_SEEN = 1u << 0,
	MAIL_FLAG_ANSWERED = 1u << 1,
	MAIL_FLAG_FLAGGED = 1u << 2,
	MAIL_FLAG_DELETED = 1u << 3,
	MAIL_FLAG_DRAFT = 1u << 4,
	_MAIL_FLAG_ALL = (1u << 5) - 1,
};

struct mail_address {
	char *name;    /* display name, NULL if none */
	char *address; /* addr-spec, NULL if none (e.g. an undisclosed-recipients group) */
};

struct mail_event {
	unsigned ref;
	const char *type; /* MAIL_EVENT_RECEIVED or MAIL_EVENT_SUMMARY (static strings) */
	char id[MAIL_EVENT_ID_LEN + 1];
	char *account, *mailbox;
	uint32_t uidvalidity;
	uint32_t first_uid, uid; /* summary: the covered range; received: both the uid */
	uint32_t count;          /* 1 for mail.received */
	/* mail.received only; NULL / 0 when unknown and always for a summary: */
	char *message_id, *subject;
	struct mail_address from;
	struct mail_address *to;
	size_t n_to;
	time_t date;     /* Date: header */
	time_t received; /* INTERNALDATE */
	uint64_t size;   /* RFC822.SIZE */
	unsigned flags;  /* MAIL_FLAG_* */
};

/* Borrowed inputs for mail_event_new_received(); everything is copied. */
struct mail_address_view {
	const char *name, *address; /* either may be NULL */
};

struct mail_event_input {
	const char *account, *mailbox; /* required, non-empty, valid UTF-8 */
	uint32_t uidvalidity, uid;     /* required, non-zero */
	const char *message_id, *subject; /* NULL if unknown */
	struct mail_address_view from;
	const struct mail_address_view *to;
	size_t n_to;
	time_t date, received; /* 0 if unknown; outside years 0000-9999 counts as unknown */
	uint64_t size;         /* clamped to INT64_MAX (a JSON integer) */
	unsigned flags;        /* unknown bits are dropped */
};

/* A new mail.received event with one reference. -EINVAL for a missing or invalid required
 * field, -ENOMEM. */
int mail_event_new_received(const struct mail_event_input *in, struct mail_event **ret);

/* A new mail.summary event covering count messages with UIDs in [first_uid, last_uid].
 * Requires 1 <= first_uid <= last_uid and 1 <= count <= last_uid - first_uid + 1. */
int mail_event_new_summary(const char *account, const char *mailbox, uint32_t uidvalidity,
			   uint32_t first_uid, uint32_t last_uid, uint32_t count,
			   struct mail_event **ret);

struct mail_event *mail_event_ref(struct mail_event *e);
struct mail_event *mail_event_unref(struct mail_event *e); /* NULL-safe; returns NULL */
static inline void mail_event_unrefp(struct mail_event **e)
{
	mail_event_unref(*e);
}
#define _cleanup_mail_event_ _cleanup_(mail_event_unrefp)

static inline bool mail_event_is_summary(const struct mail_event *e)
{
	return streq(e->type, MAIL_EVENT_SUMMARY);
}

/* The ids described above, into ret (MAIL_EVENT_ID_LEN + 1 bytes). -EIO if hashing fails. */
int mail_event_id(const char *account, const char *mailbox, uint32_t uidvalidity, uint32_t uid,
		  char ret[static MAIL_EVENT_ID_LEN + 1]);
int mail_event_summary_id(const char *account, const char *mailbox, uint32_t uidvalidity,
			  uint32_t first_uid, uint32_t last_uid,
			  char ret[static MAIL_EVENT_ID_LEN + 1]);

/* The Standard Webhooks body (also the exec sink's stdin line): compact JSON on one line, keys
 * in a fixed order, "timestamp" = now as RFC 3339 UTC ("2024-05-01T12:00:00Z"):
 *   {"type":"mail.received","timestamp":T,"data":{"id","account","mailbox","uidvalidity",
 *    "uid","message_id","from":{"name","address"},"to":[{"name","address"}...],"subject",
 *    "date","received","size","flags":["\\Seen",...]}}
 *   {"type":"mail.summary","timestamp":T,"data":{"id","account","mailbox","uidvalidity",
 *    "first_uid","last_uid","count"}}
 * Unknown strings and times are null. *ret_json is freed with free(). */
int mail_event_to_json(const struct mail_event *e, time_t now, char **ret_json);

/* Parse what mail_event_to_json() wrote, strictly: every key present with its type, no other
 * key, no duplicate, numbers in range, times in the exact form above, the id matching the one
 * computed from the fields, at most MAIL_EVENT_JSON_MAX bytes. The timestamp is checked and
 * dropped (each delivery attempt gets its own). -EBADMSG for anything else, -ENOMEM. */
int mail_event_from_json(const char *json, struct mail_event **ret);

/* "NAME=value" strings for the exec sink, all ten always present (empty when unknown) so that
 * scripts under `set -u` work: IMAPIDLED_EVENT, _ACCOUNT, _MAILBOX, _UID (summary: the last),
 * _UIDVALIDITY, _MESSAGE_ID, _FROM_NAME, _FROM_ADDRESS, _SUBJECT, _COUNT. A new strv. */
int mail_event_to_env(const struct mail_event *e, char ***ret_env);
