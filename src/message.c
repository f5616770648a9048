#include "message.h"

#include <stdio.h>

#include "mime.h"

#define SUBJECT_MAX 1024
#define MESSAGE_ID_MAX 998 /* RFC 5322 line length */

/* What a decoded address owns until the event has copied it. */
struct decoded_address {
	char *name, *address;
};

static void decoded_address_done(struct decoded_address *d)
{
	free(d->name);
	free(d->address);
}

/* In an ENVELOPE, group syntax shows up as entries without a host (RFC 3501 §7.4.2):
 * they name or close a group and are no address of their own. */
static bool is_address(const struct imap_address *a)
{
	return a->mailbox && a->host;
}

static int decode_address(const struct imap_address *a, struct decoded_address *ret)
{
	_cleanup_free_ char *raw = NULL;

	*ret = (struct decoded_address){};
	if (a->name && *a->name) {
		ret->name = mime_decode_header(a->name, strlen(a->name), MIME_NAME_MAX);
		if (!ret->name)
			return -ENOMEM;
		if (!*ret->name)
			ret->name = mfree(ret->name);
	}
	if (asprintf(&raw, "%s@%s", a->mailbox, a->host) < 0) {
		raw = NULL;
		decoded_address_done(ret);
		return -ENOMEM;
	}
	ret->address = mime_sanitize_utf8(raw, strlen(raw), MIME_ADDRESS_MAX);
	if (!ret->address) {
		decoded_address_done(ret);
		return -ENOMEM;
	}
	return 0;
}

static unsigned event_flags(const struct imap_fetch *f)
{
	static const struct {
		unsigned imap, event;
	} map[] = {
		{ IMAP_FLAG_SEEN, MAIL_FLAG_SEEN },         { IMAP_FLAG_ANSWERED, MAIL_FLAG_ANSWERED },
		{ IMAP_FLAG_FLAGGED, MAIL_FLAG_FLAGGED },   { IMAP_FLAG_DELETED, MAIL_FLAG_DELETED },
		{ IMAP_FLAG_DRAFT, MAIL_FLAG_DRAFT },
	};
	unsigned out = 0;

	for (size_t i = 0; f->has_flags && i < ELEMENTSOF(map); i++)
		if (f->flags & map[i].imap)
			out |= map[i].event;
	return out;
}

struct decoded {
	char *subject, *message_id;
	struct decoded_address from;
	struct decoded_address to[MAIL_EVENT_TO_MAX];
	struct mail_address_view to_view[MAIL_EVENT_TO_MAX];
	size_t n_to;
};

static void decoded_done(struct decoded *d)
{
	free(d->subject);
	free(d->message_id);
	decoded_address_done(&d->from);
	for (size_t i = 0; i < d->n_to; i++)
		decoded_address_done(&d->to[i]);
}

static int decode_envelope(const struct imap_envelope *env, struct decoded *d)
{
	int r;

	if (env->subject) {
		d->subject = mime_decode_header(env->subject, strlen(env->subject), SUBJECT_MAX);
		if (!d->subject)
			return -ENOMEM;
	}
	if (env->message_id) {
		d->message_id = mime_sanitize_utf8(env->message_id, strlen(env->message_id),
						   MESSAGE_ID_MAX);
		if (!d->message_id)
			return -ENOMEM;
	}
	for (size_t i = 0; i < env->from.n; i++)
		if (is_address(&env->from.items[i])) {
			r = decode_address(&env->from.items[i], &d->from);
			if (r < 0)
				return r;
			break;
		}
	for (size_t i = 0; i < env->to.n && d->n_to < MAIL_EVENT_TO_MAX; i++) {
		if (!is_address(&env->to.items[i]))
			continue;
		r = decode_address(&env->to.items[i], &d->to[d->n_to]);
		if (r < 0)
			return r;
		d->to_view[d->n_to] = (struct mail_address_view){ d->to[d->n_to].name,
								   d->to[d->n_to].address };
		d->n_to++;
	}
	return 0;
}

int message_event_from_fetch(const char *account, const char *mailbox, uint32_t uidvalidity,
			     const struct imap_fetch *f, struct mail_event **ret)
{
	struct decoded d = {};
	struct mail_event_input in = {
		.account = account,
		.mailbox = mailbox,
		.uidvalidity = uidvalidity,
		.uid = f->uid,
		.size = f->size,
		.flags = event_flags(f),
	};
	int r = 0;

	if (f->has_envelope)
		r = decode_envelope(&f->envelope, &d);
	if (r >= 0) {
		in.subject = d.subject;
		in.message_id = d.message_id;
		in.from = (struct mail_address_view){ d.from.name, d.from.address };
		in.to = d.to_view;
		in.n_to = d.n_to;
		if (f->has_envelope && f->envelope.date)
			(void)mime_parse_rfc5322_date(f->envelope.date, &in.date);
		if (f->internaldate)
			(void)mime_parse_internaldate(f->internaldate, &in.received);
		r = mail_event_new_received(&in, ret);
	}
	decoded_done(&d);
	return r;
}
