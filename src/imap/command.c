/* IMAP command builder (RFC 3501 §6, RFC 9051 §6, RFC 7888, RFC 4616, RFC 7628).
 *
 * Base64 comes from OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock rather than our own code;
 * this is the one place outside net/conn.c that includes an OpenSSL header, and only for
 * those two pure functions. */
#include "imap/command.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <strings.h>

#include "imap/parse.h"
#include "util.h"

/* ---------------------------------------------------------------- buffer */

void imap_cmd_init(struct imap_cmd *c, uint64_t caps)
{
	*c = (struct imap_cmd){ .caps = caps };
}

static void cmd_clear(struct imap_cmd *c)
{
	secure_wipe(c->buf, c->cap);
	c->len = 0;
	c->n_cuts = 0;
	c->n_secrets = 0;
}

void imap_cmd_done(struct imap_cmd *c)
{
	if (!c)
		return;
	cmd_clear(c);
	c->buf = mfree(c->buf);
	c->cap = 0;
}

/* Grow by copying, never realloc: the old block may hold a password. */
static int cmd_reserve(struct imap_cmd *c, size_t more)
{
	size_t need, ncap;
	char *n;

	if (more > IMAP_CMD_MAX - c->len)
		return -ENOBUFS;
	need = c->len + more + 1;
	if (need <= c->cap)
		return 0;
	ncap = MAX((size_t)256, c->cap);
	while (ncap < need)
		ncap *= 2;
	n = malloc(ncap);
	if (!n)
		return -ENOMEM;
	if (c->buf) {
		memcpy(n, c->buf, c->len + 1);
		secure_wipe(c->buf, c->cap);
		free(c->buf);
	}
	c->buf = n;
	c->cap = ncap;
	return 0;
}

static int put(struct imap_cmd *c, const void *s, size_t n)
{
	int r = cmd_reserve(c, n);

	if (r < 0)
		return r;
	memcpy(c->buf + c->len, s, n);
	c->len += n;
	c->buf[c->len] = '\0';
	return 0;
}

static int puts_(struct imap_cmd *c, const char *s)
{
	return put(c, s, strlen(s));
}

static int secret_begin(struct imap_cmd *c)
{
	if (c->n_secrets >= IMAP_CMD_MAX_SECRETS)
		return -ENOBUFS;
	c->secrets[c->n_secrets].start = c->secrets[c->n_secrets].end = c->len;
	return 0;
}

static void secret_end(struct imap_cmd *c)
{
	c->secrets[c->n_secrets++].end = c->len;
}

/* ---------------------------------------------------------------- arguments */

/* ATOM-CHAR: not atom-specials "(" ")" "{" SP CTL "%" "*" quoted-specials "]" (we also
 * keep "]" out, since servers differ on resp-specials in astrings). */
static bool is_atom_char(unsigned char ch)
{
	if (ch <= 0x20 || ch >= 0x7f)
		return false;
	return !strchr("(){%*\"\\]", ch);
}

static bool is_atom(const char *s)
{
	if (!*s)
		return false;
	for (const char *p = s; *p; p++) {
		if (!is_atom_char((unsigned char)*p))
			return false;
	}
	return true;
}

static bool has_line_break(const char *s)
{
	return strpbrk(s, "\r\n") != NULL;
}

static bool quotable(const char *s, size_t n)
{
	if (n > IMAP_QUOTED_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] >= 0x80)
			return false;
	}
	return true;
}

static int put_quoted(struct imap_cmd *c, const char *s)
{
	int r = put(c, "\"", 1);

	for (; r >= 0 && *s; s++) {
		if (*s == '"' || *s == '\\')
			r = put(c, "\\", 1);
		if (r >= 0)
			r = put(c, s, 1);
	}
	return r < 0 ? r : put(c, "\"", 1);
}

static bool literal_nonsync(const struct imap_cmd *c, size_t n)
{
	if (c->caps & IMAP_CAP(IMAP_CAP_LITERAL_PLUS))
		return true;
	return (c->caps & IMAP_CAP(IMAP_CAP_LITERAL_MINUS)) && n <= IMAP_LITERAL_MINUS_MAX;
}

/* "{n}\r\n" + cut + bytes, or "{n+}\r\n" + bytes. *ret_data is where the bytes begin. */
static int put_literal(struct imap_cmd *c, const char *s, size_t n, bool secret)
{
	bool nonsync = literal_nonsync(c, n);
	char head[32];
	int r;

	snprintf(head, sizeof(head), "{%zu%s}\r\n", n, nonsync ? "+" : "");
	r = puts_(c, head);
	if (r < 0)
		return r;
	if (!nonsync) {
		if (c->n_cuts >= IMAP_CMD_MAX_LITERALS)
			return -ENOBUFS;
		c->cuts[c->n_cuts++] = c->len;
	}
	r = secret ? secret_begin(c) : 0;
	if (r >= 0)
		r = put(c, s, n);
	if (r >= 0 && secret)
		secret_end(c);
	return r;
}

static int put_string(struct imap_cmd *c, const char *s, bool allow_atom, bool secret)
{
	size_t n = strlen(s);
	int r;

	if (has_line_break(s))
		return -EINVAL;
	r = put(c, " ", 1);
	if (r < 0)
		return r;
	if (!quotable(s, n))
		return put_literal(c, s, n, secret);
	r = secret ? secret_begin(c) : 0;
	if (r < 0)
		return r;
	/* an atom "NIL" would read as nil where an nstring may appear */
	if (allow_atom && is_atom(s) && strcasecmp(s, "NIL") != 0)
		r = put(c, s, n);
	else
		r = put_quoted(c, s);
	if (r >= 0 && secret)
		secret_end(c);
	return r;
}

int imap_cmd_astring(struct imap_cmd *c, const char *s)
{
	return put_string(c, s, true, false);
}

int imap_cmd_string(struct imap_cmd *c, const char *s)
{
	return put_string(c, s, false, false);
}

int imap_cmd_astring_secret(struct imap_cmd *c, const char *s)
{
	return put_string(c, s, true, true);
}

int imap_cmd_atom(struct imap_cmd *c, const char *atom)
{
	int r;

	if (!is_atom(atom))
		return -EINVAL;
	r = put(c, " ", 1);
	return r < 0 ? r : puts_(c, atom);
}

int imap_cmd_raw(struct imap_cmd *c, const char *s)
{
	int r;

	for (const char *p = s; *p; p++) {
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			return -EINVAL;
	}
	r = put(c, " ", 1);
	return r < 0 ? r : puts_(c, s);
}

int imap_cmd_number(struct imap_cmd *c, uint64_t n)
{
	char b[24];

	snprintf(b, sizeof(b), " %" PRIu64, n);
	return puts_(c, b);
}

int imap_cmd_mailbox(struct imap_cmd *c, const char *utf8)
{
	_cleanup_free_ char *m = NULL;
	int r;

	r = imap_mutf7_encode(utf8, &m);
	return r < 0 ? r : imap_cmd_astring(c, m);
}

int imap_cmd_begin(struct imap_cmd *c, const char *tag, const char *verb)
{
	int r;

	cmd_clear(c);
	if (!is_atom(tag) || strchr(tag, '+'))
		return -EINVAL;
	r = puts_(c, tag);
	/* verb: atoms separated by single spaces */
	for (const char *p = verb; r >= 0 && *p;) {
		size_t n = strcspn(p, " ");
		char word[64];
		if (n == 0 || n >= sizeof(word))
			return -EINVAL;
		memcpy(word, p, n);
		word[n] = '\0';
		r = imap_cmd_atom(c, word);
		p += n;
		if (*p == ' ' && *++p == '\0')
			return -EINVAL;
	}
	return r;
}

int imap_cmd_end(struct imap_cmd *c)
{
	return put(c, "\r\n", 2);
}

int imap_cmd_segment(const struct imap_cmd *c, size_t i, const char **ret, size_t *ret_len)
{
	size_t from, to;

	if (i > c->n_cuts)
		return -ERANGE;
	from = i == 0 ? 0 : c->cuts[i - 1];
	to = i == c->n_cuts ? c->len : c->cuts[i];
	*ret = c->buf + from;
	*ret_len = to - from;
	return 0;
}

/* ---------------------------------------------------------------- tracing */

static bool secret_at(const struct imap_cmd *c, size_t i, size_t *ret_end)
{
	for (size_t k = 0; k < c->n_secrets; k++) {
		if (i >= c->secrets[k].start && i < c->secrets[k].end) {
			*ret_end = c->secrets[k].end;
			return true;
		}
	}
	return false;
}

char *imap_cmd_redacted(const struct imap_cmd *c)
{
	size_t n = c->len, out_len = 0;
	char *out = NULL;
	FILE *f;

	if (n >= 2 && c->buf[n - 2] == '\r' && c->buf[n - 1] == '\n')
		n -= 2;
	f = open_memstream(&out, &out_len);
	if (!f)
		return NULL;
	for (size_t i = 0; i < n;) {
		unsigned char ch = (unsigned char)c->buf[i];
		size_t end;
		if (secret_at(c, i, &end)) {
			fputs("***", f);
			i = end;
			continue;
		}
		if (ch == '\r')
			fputs("\\r", f);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(f, "\\x%02x", ch);
		else
			fputc(ch, f);
		i++;
	}
	if (fclose(f) != 0)
		return mfree(out);
	return out;
}

/* ---------------------------------------------------------------- tags */

const char *imap_tagger_next(struct imap_tagger *t, char buf[static IMAP_TAG_MAX])
{
	if (t->next == 0)
		t->next = 1;
	snprintf(buf, IMAP_TAG_MAX, "a%" PRIu32, t->next);
	t->next = t->next == UINT32_MAX ? 1 : t->next + 1;
	return buf;
}

int imap_tag_parse(const char *tag, uint32_t *ret)
{
	uint64_t v;

	if (!tag || tag[0] != 'a' || tag[1] < '1' || tag[1] > '9')
		return -EINVAL;
	if (safe_atou64(tag + 1, &v) < 0 || v > UINT32_MAX)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

/* ---------------------------------------------------------------- base64 */

/* Append base64(data) and mark it secret. */
static int put_base64_secret(struct imap_cmd *c, const void *data, size_t n)
{
	size_t b64 = 4 * ((n + 2) / 3);
	int r;

	if (n > INT32_MAX / 2)
		return -ENOBUFS;
	r = cmd_reserve(c, b64);
	if (r >= 0)
		r = secret_begin(c);
	if (r < 0)
		return r;
	EVP_EncodeBlock((unsigned char *)c->buf + c->len, data, (int)n);
	c->len += b64;
	c->buf[c->len] = '\0';
	secret_end(c);
	return 0;
}

/* ---------------------------------------------------------------- SASL */

const char *imap_sasl_mech_to_string(enum imap_sasl_mech m)
{
	static const char *const names[] = {
		[IMAP_SASL_PLAIN] = "PLAIN",
		[IMAP_SASL_XOAUTH2] = "XOAUTH2",
		[IMAP_SASL_OAUTHBEARER] = "OAUTHBEARER",
	};
	return (size_t)m < ELEMENTSOF(names) ? names[m] : NULL;
}

static bool sasl_field_ok(const char *s, bool oauth)
{
	return s && !has_line_break(s) && !(oauth && strchr(s, '\1'));
}

/* A fixed buffer for the raw payload, so no copy of the secret is left behind by a
 * realloc; the caller wipes it. */
struct payload {
	char *buf;
	size_t len, cap;
};

static void payload_add(struct payload *p, const char *s, size_t n)
{
	/* cap is computed from the inputs up front; this only guards that arithmetic */
	if (n > p->cap - p->len)
		n = p->cap - p->len;
	memcpy(p->buf + p->len, s, n);
	p->len += n;
}

static void payload_adds(struct payload *p, const char *s)
{
	payload_add(p, s, strlen(s));
}

static void payload_build(struct payload *p, enum imap_sasl_mech mech,
			  const struct imap_sasl_creds *cr)
{
	char port[16];

	switch (mech) {
	case IMAP_SASL_PLAIN:
		payload_add(p, "", 1);
		payload_adds(p, cr->user);
		payload_add(p, "", 1);
		payload_adds(p, cr->secret);
		return;
	case IMAP_SASL_XOAUTH2:
		payload_adds(p, "user=");
		payload_adds(p, cr->user);
		payload_adds(p, "\1auth=Bearer ");
		payload_adds(p, cr->secret);
		payload_adds(p, "\1\1");
		return;
	default:
		/* gs2-header: a saslname escapes ',' and '=' (RFC 5801 §4) */
		payload_adds(p, "n,a=");
		for (const char *u = cr->user; *u; u++)
			payload_adds(p, *u == ',' ? "=2C" : *u == '=' ? "=3D" : (char[]){ *u, 0 });
		payload_adds(p, ",\1");
		if (cr->host) {
			payload_adds(p, "host=");
			payload_adds(p, cr->host);
			payload_adds(p, "\1");
		}
		if (cr->port) {
			snprintf(port, sizeof(port), "port=%u\1", (unsigned)cr->port);
			payload_adds(p, port);
		}
		payload_adds(p, "auth=Bearer ");
		payload_adds(p, cr->secret);
		payload_adds(p, "\1\1");
	}
}

static int sasl_payload(enum imap_sasl_mech mech, const struct imap_sasl_creds *cr,
			struct payload *ret)
{
	bool oauth = mech != IMAP_SASL_PLAIN;
	struct payload p = {};

	if (!imap_sasl_mech_to_string(mech) || !cr || !sasl_field_ok(cr->user, oauth) ||
	    !sasl_field_ok(cr->secret, oauth) || (cr->host && !sasl_field_ok(cr->host, true)))
		return -EINVAL;
	p.cap = 3 * strlen(cr->user) + strlen(cr->secret) + (cr->host ? strlen(cr->host) : 0) +
		64;
	if (p.cap > IMAP_CMD_MAX)
		return -ENOBUFS;
	p.buf = malloc(p.cap);
	if (!p.buf)
		return -ENOMEM;
	payload_build(&p, mech, cr);
	*ret = p;
	return 0;
}

static int put_sasl_payload(struct imap_cmd *c, enum imap_sasl_mech mech,
			    const struct imap_sasl_creds *cr)
{
	struct payload p;
	int r;

	r = sasl_payload(mech, cr, &p);
	if (r < 0)
		return r;
	r = put_base64_secret(c, p.buf, p.len);
	secure_wipe(p.buf, p.cap);
	free(p.buf);
	return r;
}

int imap_cmd_authenticate(struct imap_cmd *c, const char *tag, enum imap_sasl_mech mech,
			  const struct imap_sasl_creds *cr, bool initial_response)
{
	const char *name = imap_sasl_mech_to_string(mech);
	int r;

	if (!name)
		return -EINVAL;
	r = imap_cmd_begin(c, tag, "AUTHENTICATE");
	if (r >= 0)
		r = imap_cmd_atom(c, name);
	if (r >= 0 && initial_response) {
		r = put(c, " ", 1);
		if (r >= 0)
			r = put_sasl_payload(c, mech, cr);
	}
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_sasl_response(struct imap_cmd *c, enum imap_sasl_mech mech,
			   const struct imap_sasl_creds *cr)
{
	int r;

	cmd_clear(c);
	r = put_sasl_payload(c, mech, cr);
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_sasl_empty(struct imap_cmd *c)
{
	cmd_clear(c);
	return imap_cmd_end(c);
}

int imap_cmd_sasl_cancel(struct imap_cmd *c)
{
	cmd_clear(c);
	return puts_(c, "*\r\n");
}

/* ---------------------------------------------------------------- commands */

int imap_cmd_simple(struct imap_cmd *c, const char *tag, const char *verb)
{
	int r = imap_cmd_begin(c, tag, verb);
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_idle_done(struct imap_cmd *c)
{
	cmd_clear(c);
	return puts_(c, "DONE\r\n");
}

int imap_cmd_login(struct imap_cmd *c, const char *tag, const char *user, const char *pass)
{
	int r;

	/* a NUL can't even be passed here; CR and LF are refused by the string writers */
	r = imap_cmd_begin(c, tag, "LOGIN");
	if (r >= 0)
		r = imap_cmd_astring(c, user);
	if (r >= 0)
		r = imap_cmd_astring_secret(c, pass);
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_enable(struct imap_cmd *c, const char *tag, uint64_t mask)
{
	int r;

	if (mask == 0 || mask >= IMAP_CAP(_IMAP_CAP_MAX))
		return -EINVAL;
	r = imap_cmd_begin(c, tag, "ENABLE");
	for (unsigned k = 0; r >= 0 && k < _IMAP_CAP_MAX; k++) {
		if (mask & IMAP_CAP(k))
			r = imap_cmd_atom(c, imap_cap_to_string((enum imap_cap)k));
	}
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_examine(struct imap_cmd *c, const char *tag, const char *mailbox, bool condstore)
{
	int r = imap_cmd_begin(c, tag, "EXAMINE");

	if (r >= 0)
		r = imap_cmd_mailbox(c, mailbox);
	if (r >= 0 && condstore)
		r = imap_cmd_raw(c, "(CONDSTORE)");
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_status(struct imap_cmd *c, const char *tag, const char *mailbox)
{
	int r = imap_cmd_begin(c, tag, "STATUS");

	if (r >= 0)
		r = imap_cmd_mailbox(c, mailbox);
	if (r >= 0)
		r = imap_cmd_raw(c, "(UIDNEXT UIDVALIDITY MESSAGES)");
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_list_all(struct imap_cmd *c, const char *tag)
{
	int r = imap_cmd_begin(c, tag, "LIST");

	if (r >= 0)
		r = imap_cmd_raw(c, "\"\" \"*\"");
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_id(struct imap_cmd *c, const char *tag, const char *version)
{
	int r = imap_cmd_begin(c, tag, "ID");

	if (r >= 0)
		r = imap_cmd_raw(c, "(\"name\" \"imapidled\" \"version\"");
	if (r >= 0)
		r = imap_cmd_string(c, version);
	if (r >= 0)
		r = put(c, ")", 1);
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_uid_fetch(struct imap_cmd *c, const char *tag, uint32_t from, const char *items)
{
	char range[24];
	int r;

	if (from == 0)
		return -EINVAL;
	snprintf(range, sizeof(range), "%" PRIu32 ":*", from);
	r = imap_cmd_begin(c, tag, "UID FETCH");
	if (r >= 0)
		r = imap_cmd_raw(c, range);
	if (r >= 0)
		r = imap_cmd_raw(c, items);
	return r < 0 ? r : imap_cmd_end(c);
}

int imap_cmd_uid_store_seen(struct imap_cmd *c, const char *tag, uint32_t uid)
{
	int r;

	if (uid == 0)
		return -EINVAL;
	r = imap_cmd_begin(c, tag, "UID STORE");
	if (r >= 0)
		r = imap_cmd_number(c, uid);
	if (r >= 0)
		r = imap_cmd_raw(c, "+FLAGS.SILENT (\\Seen)");
	return r < 0 ? r : imap_cmd_end(c);
}

/* ---------------------------------------------------------------- modified UTF-7 */

/* One code point from UTF-8, strictly (no overlongs, surrogates or > U+10FFFF). */
static int utf8_next(const unsigned char **s, uint32_t *ret)
{
	const unsigned char *p = *s;
	uint32_t cp, min;
	int extra;

	if (p[0] < 0x80) {
		cp = p[0], extra = 0, min = 0;
	} else if ((p[0] & 0xe0) == 0xc0) {
		cp = p[0] & 0x1f, extra = 1, min = 0x80;
	} else if ((p[0] & 0xf0) == 0xe0) {
		cp = p[0] & 0x0f, extra = 2, min = 0x800;
	} else if ((p[0] & 0xf8) == 0xf0) {
		cp = p[0] & 0x07, extra = 3, min = 0x10000;
	} else {
		return -EINVAL;
	}
	for (int i = 1; i <= extra; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -EINVAL;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -EINVAL;
	*s = p + 1 + extra;
	*ret = cp;
	return 0;
}

/* "&" + modified base64 of the UTF-16BE units + "-" */
static int mutf7_flush(FILE *f, const unsigned char *u16, size_t n)
{
	_cleanup_free_ unsigned char *b = NULL;

	if (n == 0)
		return 0;
	b = malloc(4 * ((n + 2) / 3) + 1);
	if (!b)
		return -ENOMEM;
	EVP_EncodeBlock(b, u16, (int)n);
	fputc('&', f);
	for (unsigned char *p = b; *p && *p != '='; p++)
		fputc(*p == '/' ? ',' : *p, f);
	fputc('-', f);
	return 0;
}

static int mutf7_encode_stream(FILE *f, const char *utf8)
{
	const unsigned char *s = (const unsigned char *)utf8;
	_cleanup_free_ unsigned char *u16 = malloc(4 * strlen(utf8) + 4);
	size_t n = 0;
	int r;

	if (!u16)
		return -ENOMEM;
	while (*s) {
		uint32_t cp;
		r = utf8_next(&s, &cp);
		if (r < 0)
			return r;
		if (cp >= 0x20 && cp <= 0x7e) {
			r = mutf7_flush(f, u16, n);
			if (r < 0)
				return r;
			n = 0;
			if (cp == '&')
				fputs("&-", f);
			else
				fputc((int)cp, f);
			continue;
		}
		if (cp >= 0x10000) {
			cp -= 0x10000;
			uint32_t hi = 0xd800 | (cp >> 10), lo = 0xdc00 | (cp & 0x3ff);
			u16[n++] = (unsigned char)(hi >> 8), u16[n++] = (unsigned char)hi;
			u16[n++] = (unsigned char)(lo >> 8), u16[n++] = (unsigned char)lo;
		} else {
			u16[n++] = (unsigned char)(cp >> 8), u16[n++] = (unsigned char)cp;
		}
	}
	return mutf7_flush(f, u16, n);
}

int imap_mutf7_encode(const char *utf8, char **ret)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f;
	int r;

	if (strcasecmp(utf8, "INBOX") == 0)
		utf8 = "INBOX";
	f = open_memstream(&out, &len);
	if (!f)
		return -ENOMEM;
	r = mutf7_encode_stream(f, utf8);
	if (fclose(f) != 0 && r >= 0)
		r = -ENOMEM;
	if (r < 0)
		return free(out), r;
	*ret = out;
	return 0;
}

static void utf8_put(FILE *f, uint32_t cp)
{
	if (cp < 0x80) {
		fputc((int)cp, f);
	} else if (cp < 0x800) {
		fputc((int)(0xc0 | (cp >> 6)), f);
		fputc((int)(0x80 | (cp & 0x3f)), f);
	} else if (cp < 0x10000) {
		fputc((int)(0xe0 | (cp >> 12)), f);
		fputc((int)(0x80 | ((cp >> 6) & 0x3f)), f);
		fputc((int)(0x80 | (cp & 0x3f)), f);
	} else {
		fputc((int)(0xf0 | (cp >> 18)), f);
		fputc((int)(0x80 | ((cp >> 12) & 0x3f)), f);
		fputc((int)(0x80 | ((cp >> 6) & 0x3f)), f);
		fputc((int)(0x80 | (cp & 0x3f)), f);
	}
}

/* Decode one "&...-" run (s points after '&', n chars before '-') as UTF-16BE. */
static int mutf7_run(FILE *f, const char *s, size_t n)
{
	size_t padded = (n + 3) / 4 * 4, bytes = n * 6 / 8;
	_cleanup_free_ unsigned char *in = malloc(padded + 1), *out = malloc(padded);
	uint32_t hi = 0;

	if (!in || !out)
		return -ENOMEM;
	for (size_t i = 0; i < padded; i++) {
		char ch = i < n ? s[i] : '=';
		if (i < n && !(ch == '+' || ch == ',' || (ch >= '0' && ch <= '9') ||
			       (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z')))
			return -EINVAL;
		in[i] = (unsigned char)(ch == ',' ? '/' : ch);
	}
	in[padded] = '\0';
	if (n % 4 == 1 || EVP_DecodeBlock(out, in, (int)padded) < 0 || bytes % 2 != 0 ||
	    bytes == 0)
		return -EINVAL;
	for (size_t i = 0; i < bytes; i += 2) {
		uint32_t u = (uint32_t)out[i] << 8 | out[i + 1];
		if (u >= 0xd800 && u <= 0xdbff) {
			if (hi)
				return -EINVAL;
			hi = u;
			continue;
		}
		if (u >= 0xdc00 && u <= 0xdfff) {
			if (!hi)
				return -EINVAL;
			u = 0x10000 + ((hi - 0xd800) << 10) + (u - 0xdc00);
			hi = 0;
		} else if (hi || (u >= 0x20 && u <= 0x7e)) {
			/* printable ASCII must not be encoded (RFC 3501 §5.1.3) */
			return -EINVAL;
		}
		utf8_put(f, u);
	}
	return hi ? -EINVAL : 0;
}

static int mutf7_decode_stream(FILE *f, const char *s)
{
	while (*s) {
		const char *e;
		int r;

		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return -EINVAL;
		if (*s != '&') {
			fputc(*s++, f);
			continue;
		}
		e = strchr(++s, '-');
		if (!e)
			return -EINVAL;
		if (e == s)
			fputc('&', f);
		else if ((r = mutf7_run(f, s, (size_t)(e - s))) < 0)
			return r;
		s = e + 1;
	}
	return 0;
}

int imap_mutf7_decode(const char *mutf7, char **ret)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	int r;

	if (!f)
		return -ENOMEM;
	r = mutf7_decode_stream(f, mutf7);
	if (fclose(f) != 0 && r >= 0)
		r = -ENOMEM;
	if (r < 0)
		return free(out), r;
	*ret = out;
	return 0;
}
