#include "event.h"
#include "hash.h"

#include <inttypes.h>
#include <stdio.h>

#include <jansson.h>

/* RFC 3339 covers years 0000-9999 only. */
#define TIME_MIN ((time_t)-62167219200LL) /* 0000-01-01T00:00:00Z */
#define TIME_MAX ((time_t)253402300799LL) /* 9999-12-31T23:59:59Z */
#define RFC3339_LEN 20                    /* "YYYY-MM-DDTHH:MM:SSZ" */
/* Room for any int in every field, so the compiler can prove snprintf never truncates. */
#define RFC3339_BUF 64

static const char *const flag_names[] = {
	"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft",
};

/* ---- UTF-8 ---------------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 character at s (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), or 0 if there is none. s is NUL-terminated, so reading stops there. */
static size_t utf8_char_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	/* The second byte carries the range restrictions. */
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

static bool utf8_is_valid(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		size_t n = utf8_char_len(p);

		if (n == 0)
			return false;
		p += n;
	}
	return true;
}

/* A copy of s with every byte that does not start a well-formed character replaced by U+FFFD,
 * cut at a character boundary to at most max bytes. NULL stays NULL (returns 0). */
static int utf8_sanitize_dup(const char *s, size_t max, char **ret)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len = 0;
	char *d;

	if (!s) {
		*ret = NULL;
		return 0;
	}
	d = malloc(MIN(strlen(s) * 3, max) + 1);
	if (!d)
		return -ENOMEM;
	while (*p) {
		size_t n = utf8_char_len(p);
		const char *c = n ? (const char *)p : "\xef\xbf\xbd";
		size_t out = n ? n : 3;

		if (len + out > max)
			break;
		memcpy(d + len, c, out);
		len += out;
		p += n ? n : 1;
	}
	d[len] = '\0';
	*ret = d;
	return 0;
}

/* ---- Time ----------------------------------------------------------------------------- */

static bool time_representable(time_t t)
{
	return t >= TIME_MIN && t <= TIME_MAX;
}

/* false if t is not representable in RFC 3339. */
static bool format_rfc3339(time_t t, char buf[static RFC3339_BUF])
{
	struct tm tm;

	if (!time_representable(t) || !gmtime_r(&t, &tm))
		return false;
	/* Not strftime("%Y"): it does not pad years below 1000 to four digits. */
	snprintf(buf, RFC3339_BUF, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return true;
}

static bool parse_digits(const char *s, size_t n, int *ret)
{
	int v = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return true;
}

/* Exactly the form format_rfc3339() writes; a date like Feb 30 is rejected, not normalized. */
static int parse_rfc3339(const char *s, time_t *ret)
{
	struct tm tm = {}, check;
	int year, mon;
	time_t t;

	if (strlen(s) != RFC3339_LEN || s[4] != '-' || s[7] != '-' || s[10] != 'T' ||
	    s[13] != ':' || s[16] != ':' || s[19] != 'Z')
		return -EBADMSG;
	if (!parse_digits(s, 4, &year) || !parse_digits(s + 5, 2, &mon) ||
	    !parse_digits(s + 8, 2, &tm.tm_mday) || !parse_digits(s + 11, 2, &tm.tm_hour) ||
	    !parse_digits(s + 14, 2, &tm.tm_min) || !parse_digits(s + 17, 2, &tm.tm_sec))
		return -EBADMSG;
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	check = tm;
	t = timegm(&tm);
	if (!gmtime_r(&t, &tm) || tm.tm_year != check.tm_year || tm.tm_mon != check.tm_mon ||
	    tm.tm_mday != check.tm_mday || tm.tm_hour != check.tm_hour ||
	    tm.tm_min != check.tm_min || tm.tm_sec != check.tm_sec)
		return -EBADMSG;
	*ret = t;
	return 0;
}

/* ---- Identity ------------------------------------------------------------------------- */

static int id_from_parts(const char *prefix, const char *const *parts, size_t n_parts,
			 char ret[static MAIL_EVENT_ID_LEN + 1])
{
	memcpy(ret, prefix, 4);
	return hash_parts_hex(parts, n_parts, MAIL_EVENT_ID_LEN - 4, ret + 4);
}

int mail_event_id(const char *account, const char *mailbox, uint32_t uidvalidity, uint32_t uid,
		  char ret[static MAIL_EVENT_ID_LEN + 1])
{
	char v[16], u[16];

	snprintf(v, sizeof(v), "%" PRIu32, uidvalidity);
	snprintf(u, sizeof(u), "%" PRIu32, uid);
	return id_from_parts("msg_", (const char *const[]){ account, mailbox, v, u }, 4, ret);
}

int mail_event_summary_id(const char *account, const char *mailbox, uint32_t uidvalidity,
			  uint32_t first_uid, uint32_t last_uid,
			  char ret[static MAIL_EVENT_ID_LEN + 1])
{
	char v[16], range[32];

	snprintf(v, sizeof(v), "%" PRIu32, uidvalidity);
	snprintf(range, sizeof(range), "%" PRIu32 ":%" PRIu32, first_uid, last_uid);
	return id_from_parts("sum_", (const char *const[]){ account, mailbox, v, range }, 4,
			     ret);
}

/* ---- Life cycle ----------------------------------------------------------------------- */

static void mail_address_done(struct mail_address *a)
{
	a->name = mfree(a->name);
	a->address = mfree(a->address);
}

static struct mail_event *mail_event_free(struct mail_event *e)
{
	if (!e)
		return NULL;
	free(e->account);
	free(e->mailbox);
	free(e->message_id);
	free(e->subject);
	mail_address_done(&e->from);
	for (size_t i = 0; i < e->n_to; i++)
		mail_address_done(&e->to[i]);
	free(e->to);
	return mfree(e);
}

static inline void mail_event_freep(struct mail_event **e)
{
	mail_event_free(*e);
}

struct mail_event *mail_event_ref(struct mail_event *e)
{
	if (e)
		e->ref++;
	return e;
}

struct mail_event *mail_event_unref(struct mail_event *e)
{
	if (!e)
		return NULL;
	if (--e->ref > 0)
		return NULL;
	return mail_event_free(e);
}

static bool name_valid(const char *s)
{
	return s && *s && strlen(s) <= MAIL_EVENT_NAME_MAX && utf8_is_valid(s);
}

/* The common part: type, identity fields, one reference. */
static int event_alloc(const char *type, const char *account, const char *mailbox,
		       uint32_t uidvalidity, struct mail_event **ret)
{
	struct mail_event *e;

	if (!name_valid(account) || !name_valid(mailbox) || uidvalidity == 0)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	*e = (struct mail_event){ .ref = 1, .type = type, .uidvalidity = uidvalidity };
	e->account = strdup(account);
	e->mailbox = strdup(mailbox);
	if (!e->account || !e->mailbox) {
		mail_event_free(e);
		return -ENOMEM;
	}
	*ret = e;
	return 0;
}

static int address_copy(const struct mail_address_view *in, struct mail_address *out)
{
	int r;

	r = utf8_sanitize_dup(in->name, MAIL_EVENT_STRING_MAX, &out->name);
	if (r < 0)
		return r;
	return utf8_sanitize_dup(in->address, MAIL_EVENT_STRING_MAX, &out->address);
}

static int copy_recipients(struct mail_event *e, const struct mail_address_view *to, size_t n)
{
	n = MIN(n, (size_t)MAIL_EVENT_TO_MAX);
	if (n == 0)
		return 0;
	e->to = calloc(n, sizeof(*e->to));
	if (!e->to)
		return -ENOMEM;
	/* n_to grows with each copy, so a failure half-way frees exactly what was made. */
	for (; e->n_to < n; e->n_to++) {
		int r = address_copy(&to[e->n_to], &e->to[e->n_to]);

		if (r < 0) {
			e->n_to++;
			return r;
		}
	}
	return 0;
}

static int copy_received_fields(struct mail_event *e, const struct mail_event_input *in)
{
	int r;

	r = utf8_sanitize_dup(in->message_id, MAIL_EVENT_STRING_MAX, &e->message_id);
	if (r < 0)
		return r;
	r = utf8_sanitize_dup(in->subject, MAIL_EVENT_STRING_MAX, &e->subject);
	if (r < 0)
		return r;
	r = address_copy(&in->from, &e->from);
	if (r < 0)
		return r;
	if (in->n_to > 0 && !in->to)
		return -EINVAL;
	r = copy_recipients(e, in->to, in->n_to);
	if (r < 0)
		return r;
	e->date = time_representable(in->date) ? in->date : 0;
	e->received = time_representable(in->received) ? in->received : 0;
	e->size = MIN(in->size, (uint64_t)INT64_MAX);
	e->flags = in->flags & _MAIL_FLAG_ALL;
	return 0;
}

int mail_event_new_received(const struct mail_event_input *in, struct mail_event **ret)
{
	_cleanup_(mail_event_freep) struct mail_event *e = NULL;
	int r;

	if (!in || in->uid == 0)
		return -EINVAL;
	r = event_alloc(MAIL_EVENT_RECEIVED, in->account, in->mailbox, in->uidvalidity, &e);
	if (r < 0)
		return r;
	e->first_uid = e->uid = in->uid;
	e->count = 1;
	r = copy_received_fields(e, in);
	if (r < 0)
		return r;
	r = mail_event_id(e->account, e->mailbox, e->uidvalidity, e->uid, e->id);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(e);
	return 0;
}

int mail_event_new_summary(const char *account, const char *mailbox, uint32_t uidvalidity,
			   uint32_t first_uid, uint32_t last_uid, uint32_t count,
			   struct mail_event **ret)
{
	_cleanup_(mail_event_freep) struct mail_event *e = NULL;
	int r;

	if (first_uid == 0 || first_uid > last_uid || count == 0 ||
	    count - 1 > last_uid - first_uid)
		return -EINVAL;
	r = event_alloc(MAIL_EVENT_SUMMARY, account, mailbox, uidvalidity, &e);
	if (r < 0)
		return r;
	e->first_uid = first_uid;
	e->uid = last_uid;
	e->count = count;
	r = mail_event_summary_id(account, mailbox, uidvalidity, first_uid, last_uid, e->id);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(e);
	return 0;
}

/* ---- JSON out ------------------------------------------------------------------------- */

/* jansson provides json_decrefp() for exactly this. */
#define _cleanup_json_ _cleanup_(json_decrefp)

/* Event strings are valid UTF-8 by construction, so only allocation can fail here. */
static json_t *json_string_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *json_time_or_null(time_t t)
{
	char buf[RFC3339_BUF];

	return t != 0 && format_rfc3339(t, buf) ? json_string(buf) : json_null();
}

/* json_object_set_new() consumes v even on failure and fails on a NULL v, so a chain of these
 * needs no error handling per value. */
static bool set(json_t *o, const char *key, json_t *v)
{
	return json_object_set_new(o, key, v) == 0;
}

static json_t *address_to_json(const struct mail_address *a)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	if (!set(o, "name", json_string_or_null(a->name)) ||
	    !set(o, "address", json_string_or_null(a->address))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *recipients_to_json(const struct mail_event *e)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < e->n_to; i++)
		if (json_array_append_new(a, address_to_json(&e->to[i])) < 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static json_t *flags_to_json(unsigned flags)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < ELEMENTSOF(flag_names); i++)
		if ((flags & (1u << i)) && json_array_append_new(a, json_string(flag_names[i])) < 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static bool identity_to_json(json_t *d, const struct mail_event *e)
{
	return set(d, "id", json_string(e->id)) && set(d, "account", json_string(e->account)) &&
	       set(d, "mailbox", json_string(e->mailbox)) &&
	       set(d, "uidvalidity", json_integer(e->uidvalidity));
}

static bool received_to_json(json_t *d, const struct mail_event *e)
{
	return identity_to_json(d, e) && set(d, "uid", json_integer(e->uid)) &&
	       set(d, "message_id", json_string_or_null(e->message_id)) &&
	       set(d, "from", address_to_json(&e->from)) && set(d, "to", recipients_to_json(e)) &&
	       set(d, "subject", json_string_or_null(e->subject)) &&
	       set(d, "date", json_time_or_null(e->date)) &&
	       set(d, "received", json_time_or_null(e->received)) &&
	       set(d, "size", json_integer((json_int_t)e->size)) &&
	       set(d, "flags", flags_to_json(e->flags));
}

static bool summary_to_json(json_t *d, const struct mail_event *e)
{
	return identity_to_json(d, e) && set(d, "first_uid", json_integer(e->first_uid)) &&
	       set(d, "last_uid", json_integer(e->uid)) && set(d, "count", json_integer(e->count));
}

int mail_event_to_json(const struct mail_event *e, time_t now, char **ret_json)
{
	_cleanup_json_ json_t *root = NULL;
	json_t *data;
	char ts[RFC3339_BUF];
	char *s;

	if (!e || !format_rfc3339(now, ts))
		return -EINVAL;
	root = json_object();
	/* The data object is filled after it is linked: root owns it from the start. */
	if (!root || !set(root, "type", json_string(e->type)) ||
	    !set(root, "timestamp", json_string(ts)) || !set(root, "data", json_object()))
		return -ENOMEM;
	data = json_object_get(root, "data");
	if (!(mail_event_is_summary(e) ? summary_to_json(data, e) : received_to_json(data, e)))
		return -ENOMEM;
	s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!s)
		return -ENOMEM;
	*ret_json = s;
	return 0;
}

/* ---- JSON in -------------------------------------------------------------------------- */

static int get_string(const json_t *o, const char *key, bool nullable, const char **ret)
{
	const json_t *v = json_object_get(o, key);

	if (nullable && json_is_null(v)) {
		*ret = NULL;
		return 0;
	}
	if (!json_is_string(v) || json_string_length(v) > MAIL_EVENT_STRING_MAX)
		return -EBADMSG;
	*ret = json_string_value(v);
	return 0;
}

static int get_uint(const json_t *o, const char *key, uint64_t min, uint64_t max, uint64_t *ret)
{
	const json_t *v = json_object_get(o, key);
	json_int_t i;

	if (!json_is_integer(v))
		return -EBADMSG;
	i = json_integer_value(v);
	if (i < 0 || (uint64_t)i < min || (uint64_t)i > max)
		return -EBADMSG;
	*ret = (uint64_t)i;
	return 0;
}

static int get_u32(const json_t *o, const char *key, uint32_t min, uint32_t *ret)
{
	uint64_t v;
	int r = get_uint(o, key, min, UINT32_MAX, &v);

	if (r < 0)
		return r;
	*ret = (uint32_t)v;
	return 0;
}

static int get_time(const json_t *o, const char *key, time_t *ret)
{
	const char *s;
	int r = get_string(o, key, true, &s);
	time_t t;

	if (r < 0)
		return r;
	if (!s) {
		*ret = 0;
		return 0;
	}
	/* 0 means unknown, which to_json writes as null, never as 1970-01-01T00:00:00Z. */
	if (parse_rfc3339(s, &t) < 0 || t == 0)
		return -EBADMSG;
	*ret = t;
	return 0;
}

static int address_from_json(const json_t *o, struct mail_address_view *ret)
{
	struct mail_address_view a;

	if (!json_is_object(o) || json_object_size(o) != 2 ||
	    get_string(o, "name", true, &a.name) < 0 ||
	    get_string(o, "address", true, &a.address) < 0)
		return -EBADMSG;
	*ret = a;
	return 0;
}

static int flags_from_json(const json_t *a, unsigned *ret)
{
	unsigned flags = 0;
	size_t i, k;
	json_t *v;

	if (!json_is_array(a))
		return -EBADMSG;
	json_array_foreach(a, i, v) {
		for (k = 0; k < ELEMENTSOF(flag_names); k++)
			if (json_is_string(v) && streq(json_string_value(v), flag_names[k]))
				break;
		if (k == ELEMENTSOF(flag_names) || (flags & (1u << k)))
			return -EBADMSG; /* unknown or repeated */
		flags |= 1u << k;
	}
	*ret = flags;
	return 0;
}

/* Identity fields shared by both types. */
struct identity {
	const char *id, *account, *mailbox;
	uint32_t uidvalidity;
};

static int identity_from_json(const json_t *d, struct identity *ret)
{
	struct identity x;

	if (get_string(d, "id", false, &x.id) < 0 || get_string(d, "account", false, &x.account) < 0 ||
	    get_string(d, "mailbox", false, &x.mailbox) < 0 ||
	    get_u32(d, "uidvalidity", 1, &x.uidvalidity) < 0)
		return -EBADMSG;
	*ret = x;
	return 0;
}

/* The stored id must be the one the fields give: a mismatch means a corrupt or forged spool
 * entry, and delivering it would break receivers' de-duplication. */
static int check_id(const struct mail_event *e, const char *id)
{
	return streq(e->id, id) ? 0 : -EBADMSG;
}

static int recipients_from_json(const json_t *a, struct mail_address_view **ret, size_t *ret_n)
{
	_cleanup_free_ struct mail_address_view *v = NULL;
	size_t n = json_array_size(a);

	if (!json_is_array(a) || n > MAIL_EVENT_TO_MAX)
		return -EBADMSG;
	if (n > 0) {
		v = calloc(n, sizeof(*v));
		if (!v)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		if (address_from_json(json_array_get(a, i), &v[i]) < 0)
			return -EBADMSG;
	*ret = TAKE_PTR(v);
	*ret_n = n;
	return 0;
}

static int received_scalars_from_json(const json_t *d, struct mail_event_input *in)
{
	uint64_t size;

	if (json_object_size(d) != 13 || get_u32(d, "uid", 1, &in->uid) < 0 ||
	    get_string(d, "message_id", true, &in->message_id) < 0 ||
	    address_from_json(json_object_get(d, "from"), &in->from) < 0 ||
	    get_string(d, "subject", true, &in->subject) < 0 ||
	    get_time(d, "date", &in->date) < 0 || get_time(d, "received", &in->received) < 0 ||
	    get_uint(d, "size", 0, INT64_MAX, &size) < 0 ||
	    flags_from_json(json_object_get(d, "flags"), &in->flags) < 0)
		return -EBADMSG;
	in->size = size;
	return 0;
}

static int received_from_json(const json_t *d, const struct identity *x, struct mail_event **ret)
{
	_cleanup_free_ struct mail_address_view *to = NULL;
	_cleanup_mail_event_ struct mail_event *e = NULL;
	struct mail_event_input in = {
		.account = x->account,
		.mailbox = x->mailbox,
		.uidvalidity = x->uidvalidity,
	};
	int r;

	r = received_scalars_from_json(d, &in);
	if (r < 0)
		return r;
	r = recipients_from_json(json_object_get(d, "to"), &to, &in.n_to);
	if (r < 0)
		return r;
	in.to = to;
	r = mail_event_new_received(&in, &e);
	if (r < 0)
		return r == -ENOMEM ? r : -EBADMSG;
	r = check_id(e, x->id);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(e);
	return 0;
}

static int summary_from_json(const json_t *d, const struct identity *x, struct mail_event **ret)
{
	_cleanup_mail_event_ struct mail_event *e = NULL;
	uint32_t first, last, count;
	int r;

	if (json_object_size(d) != 7 || get_u32(d, "first_uid", 1, &first) < 0 ||
	    get_u32(d, "last_uid", 1, &last) < 0 || get_u32(d, "count", 1, &count) < 0)
		return -EBADMSG;
	r = mail_event_new_summary(x->account, x->mailbox, x->uidvalidity, first, last, count, &e);
	if (r < 0)
		return r == -ENOMEM ? r : -EBADMSG;
	r = check_id(e, x->id);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(e);
	return 0;
}

int mail_event_from_json(const char *json, struct mail_event **ret)
{
	_cleanup_json_ json_t *root = NULL;
	const char *type, *ts;
	struct identity x;
	const json_t *d;
	size_t len;
	time_t t;

	if (!json)
		return -EINVAL;
	len = strnlen(json, MAIL_EVENT_JSON_MAX + 1);
	if (len > MAIL_EVENT_JSON_MAX)
		return -EBADMSG;
	/* Defaults reject NUL inside strings and trailing garbage; duplicate keys are ambiguous. */
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root) || json_object_size(root) != 3 ||
	    get_string(root, "type", false, &type) < 0 ||
	    get_string(root, "timestamp", false, &ts) < 0 || parse_rfc3339(ts, &t) < 0)
		return -EBADMSG;
	d = json_object_get(root, "data");
	if (!json_is_object(d) || identity_from_json(d, &x) < 0)
		return -EBADMSG;
	if (streq(type, MAIL_EVENT_RECEIVED))
		return received_from_json(d, &x, ret);
	if (streq(type, MAIL_EVENT_SUMMARY))
		return summary_from_json(d, &x, ret);
	return -EBADMSG;
}

/* ---- Exec environment ----------------------------------------------------------------- */

static int env_push(char ***env, const char *name, const char *value)
{
	char *s;

	if (asprintf(&s, "IMAPIDLED_%s=%s", name, strempty(value)) < 0)
		return -ENOMEM;
	return strv_push(env, s);
}

static int env_push_u32(char ***env, const char *name, uint32_t v)
{
	char buf[16];

	snprintf(buf, sizeof(buf), "%" PRIu32, v);
	return env_push(env, name, buf);
}

int mail_event_to_env(const struct mail_event *e, char ***ret_env)
{
	_cleanup_strv_free_ char **env = NULL;

	if (!e)
		return -EINVAL;
	if (env_push(&env, "EVENT", e->type) < 0 || env_push(&env, "ACCOUNT", e->account) < 0 ||
	    env_push(&env, "MAILBOX", e->mailbox) < 0 || env_push_u32(&env, "UID", e->uid) < 0 ||
	    env_push_u32(&env, "UIDVALIDITY", e->uidvalidity) < 0 ||
	    env_push(&env, "MESSAGE_ID", e->message_id) < 0 ||
	    env_push(&env, "FROM_NAME", e->from.name) < 0 ||
	    env_push(&env, "FROM_ADDRESS", e->from.address) < 0 ||
	    env_push(&env, "SUBJECT", e->subject) < 0 || env_push_u32(&env, "COUNT", e->count) < 0)
		return -ENOMEM;
	*ret_env = TAKE_PTR(env);
	return 0;
}
