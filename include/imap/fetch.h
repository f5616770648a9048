/* Typed view of one "* n FETCH (...)" response (RFC 3501 §7.4.2, RFC 7162 §3.1.4).
 *
 * Every string is borrowed from the response and lives as long as it does (until the next
 * call on the parser); NIL becomes NULL. Only the address arrays are allocated, in one
 * block that imap_fetch_done() frees. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap/parse.h"

enum imap_flag {
	IMAP_FLAG_SEEN = 1U << 0,
	IMAP_FLAG_ANSWERED = 1U << 1,
	IMAP_FLAG_FLAGGED = 1U << 2,
	IMAP_FLAG_DELETED = 1U << 3,
	IMAP_FLAG_DRAFT = 1U << 4,
	IMAP_FLAG_RECENT = 1U << 5,
};

/* RFC 3501 group syntax is kept as sent: a group starts with an entry whose host is NULL
 * (mailbox = group name) and ends with one whose mailbox and host are both NULL. */
struct imap_address {
	const char *name, *adl, *mailbox, *host;
};

struct imap_address_list {
	const struct imap_address *items;
	size_t n;
};

struct imap_envelope {
	const char *date, *subject, *in_reply_to, *message_id;
	struct imap_address_list from, sender, reply_to, to, cc, bcc;
};

struct imap_fetch {
	uint32_t seq;
	uint32_t uid; /* 0 when absent */
	unsigned flags; /* enum imap_flag bits */
	bool has_flags;
	const struct imap_value *flag_list; /* FLAGS as sent, keywords included, or NULL */
	uint64_t size; /* RFC822.SIZE */
	bool has_size;
	const char *internaldate; /* raw, e.g. "17-Jul-1996 02:44:25 -0700", or NULL */
	uint64_t modseq; /* 0 when absent */
	bool has_envelope;
	struct imap_envelope envelope;
	/* BODY[HEADER], BODY[HEADER.FIELDS (...)], BODY[HEADER.FIELDS.NOT (...)] or
	 * RFC822.HEADER; NULL when absent or NIL. May contain NUL bytes: use header_len. */
	const char *header;
	size_t header_len;

	struct imap_address *addresses; /* owned: backs every envelope address list */
};

/* Decode r, which must be an untagged FETCH with a non-zero number (else -EINVAL).
 * Unknown items are skipped. A malformed known item, UID 0 or above 2^32-1, an odd item
 * list, or a repeated UID with another value is -EBADMSG. *ret is written only on success;
 * release it with imap_fetch_done(). */
int imap_fetch_parse(const struct imap_response *r, struct imap_fetch *ret);
void imap_fetch_done(struct imap_fetch *f);
