/* FETCH response items → struct imap_fetch. */
#include "imap/fetch.h"

#include <strings.h>

#include "util.h"

static const struct {
	const char *name;
	enum imap_flag flag;
} system_flags[] = {
	{ "\\Seen", IMAP_FLAG_SEEN },       { "\\Answered", IMAP_FLAG_ANSWERED },
	{ "\\Flagged", IMAP_FLAG_FLAGGED }, { "\\Deleted", IMAP_FLAG_DELETED },
	{ "\\Draft", IMAP_FLAG_DRAFT },     { "\\Recent", IMAP_FLAG_RECENT },
};

static int parse_flags(const struct imap_value *v, struct imap_fetch *f)
{
	unsigned mask = 0;

	if (!imap_value_is_list(v))
		return -EBADMSG;
	for (size_t i = 0; i < v->n_items; i++) {
		if (v->items[i].type != IMAP_VAL_ATOM)
			return -EBADMSG;
		for (size_t k = 0; k < ELEMENTSOF(system_flags); k++) {
			if (imap_value_is_atom(&v->items[i], system_flags[k].name))
				mask |= system_flags[k].flag;
		}
	}
	f->flags = mask;
	f->has_flags = true;
	f->flag_list = v;
	return 0;
}

/* MODSEQ (12345): RFC 7162 §3.1.4.1, a parenthesized mod-sequence-value. */
static int parse_modseq(const struct imap_value *v, struct imap_fetch *f)
{
	if (!imap_value_is_list(v) || v->n_items != 1)
		return -EBADMSG;
	return imap_value_to_u64(&v->items[0], &f->modseq);
}

/* An address list is NIL or a list of 4-item lists. Returns how many, or -EBADMSG. */
static int address_count(const struct imap_value *v)
{
	if (imap_value_is_nil(v))
		return 0;
	if (!imap_value_is_list(v))
		return -EBADMSG;
	for (size_t i = 0; i < v->n_items; i++) {
		if (!imap_value_is_list(&v->items[i]) || v->items[i].n_items != 4)
			return -EBADMSG;
	}
	return v->n_items > INT32_MAX ? -EBADMSG : (int)v->n_items;
}

static int address_fill(const struct imap_value *v, struct imap_address *a)
{
	const struct imap_value *it = v->items;
	int r;

	r = imap_value_get_nstring(&it[0], &a->name, NULL);
	if (r >= 0)
		r = imap_value_get_nstring(&it[1], &a->adl, NULL);
	if (r >= 0)
		r = imap_value_get_nstring(&it[2], &a->mailbox, NULL);
	if (r >= 0)
		r = imap_value_get_nstring(&it[3], &a->host, NULL);
	return r;
}

/* ENVELOPE: date subject from sender reply-to to cc bcc in-reply-to message-id */
static int parse_envelope(const struct imap_value *v, struct imap_fetch *f)
{
	struct imap_envelope *e = &f->envelope;
	struct imap_address_list *lists[] = { &e->from, &e->sender, &e->reply_to,
					      &e->to,   &e->cc,     &e->bcc };
	struct imap_address *a;
	size_t total = 0, used = 0;
	int r;

	if (!imap_value_is_list(v) || v->n_items != 10)
		return -EBADMSG;
	const struct imap_value *it = v->items;
	for (size_t i = 0; i < ELEMENTSOF(lists); i++) {
		r = address_count(&it[2 + i]);
		if (r < 0)
			return r;
		total += (size_t)r;
	}
	a = total ? calloc(total, sizeof(*a)) : NULL;
	if (total && !a)
		return -ENOMEM;
	free(f->addresses); /* a repeated ENVELOPE replaces the first */
	f->addresses = a;

	*e = (struct imap_envelope){};
	for (size_t i = 0; i < ELEMENTSOF(lists); i++) {
		const struct imap_value *l = &it[2 + i];
		size_t n = imap_value_is_list(l) ? l->n_items : 0;
		*lists[i] = (struct imap_address_list){ .items = n ? a + used : NULL, .n = n };
		for (size_t k = 0; k < n; k++) {
			r = address_fill(&l->items[k], &a[used++]);
			if (r < 0)
				return r;
		}
	}
	r = imap_value_get_nstring(&it[0], &e->date, NULL);
	if (r >= 0)
		r = imap_value_get_nstring(&it[1], &e->subject, NULL);
	if (r >= 0)
		r = imap_value_get_nstring(&it[8], &e->in_reply_to, NULL);
	if (r >= 0)
		r = imap_value_get_nstring(&it[9], &e->message_id, NULL);
	if (r < 0)
		return r;
	f->has_envelope = true;
	return 0;
}

static bool is_header_section(const char *name)
{
	static const char *const prefixes[] = {
		"BODY[HEADER]",
		"BODY[HEADER.FIELDS ",
		"BODY[HEADER.FIELDS.NOT ",
		"RFC822.HEADER",
	};

	for (size_t i = 0; i < ELEMENTSOF(prefixes); i++) {
		if (strncasecmp(name, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	}
	return false;
}

static int parse_uid(const struct imap_value *v, struct imap_fetch *f)
{
	uint32_t uid;

	if (imap_value_to_u32(v, false, &uid) < 0)
		return -EBADMSG;
	if (f->uid != 0 && f->uid != uid)
		return -EBADMSG;
	f->uid = uid;
	return 0;
}

static int parse_item(const struct imap_value *name, const struct imap_value *v,
		      struct imap_fetch *f)
{
	if (name->type != IMAP_VAL_ATOM)
		return -EBADMSG;
	if (imap_value_is_atom(name, "UID"))
		return parse_uid(v, f);
	if (imap_value_is_atom(name, "FLAGS"))
		return parse_flags(v, f);
	if (imap_value_is_atom(name, "RFC822.SIZE")) {
		f->has_size = true;
		return imap_value_to_u64(v, &f->size);
	}
	if (imap_value_is_atom(name, "INTERNALDATE")) {
		if (v->type != IMAP_VAL_STRING)
			return -EBADMSG;
		f->internaldate = v->str;
		return 0;
	}
	if (imap_value_is_atom(name, "MODSEQ"))
		return parse_modseq(v, f);
	if (imap_value_is_atom(name, "ENVELOPE"))
		return parse_envelope(v, f);
	if (is_header_section(name->str))
		return imap_value_get_nstring(v, &f->header, &f->header_len);
	return 0;
}

int imap_fetch_parse(const struct imap_response *r, struct imap_fetch *ret)
{
	struct imap_fetch f = {};
	const struct imap_value *l;
	int k;

	if (!r || r->kind != IMAP_RESP_UNTAGGED || !r->name || strcmp(r->name, "FETCH") != 0 ||
	    !r->has_number || r->number == 0)
		return -EINVAL;
	if (r->n_args != 1 || !imap_value_is_list(&r->args[0]))
		return -EBADMSG;
	l = &r->args[0];
	if (l->n_items % 2 != 0)
		return -EBADMSG;
	f.seq = r->number;
	for (size_t i = 0; i < l->n_items; i += 2) {
		k = parse_item(&l->items[i], &l->items[i + 1], &f);
		if (k < 0) {
			imap_fetch_done(&f);
			return k == -ENOMEM ? k : -EBADMSG;
		}
	}
	*ret = f;
	return 0;
}

void imap_fetch_done(struct imap_fetch *f)
{
	if (!f)
		return;
	f->addresses = mfree(f->addresses);
	f->envelope = (struct imap_envelope){};
	f->has_envelope = false;
}
