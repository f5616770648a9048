/* Header decoding to safe UTF-8; see mime.h for the contract.
 *
 * Shape: every decoder pushes code points (or UTF-8 bytes) into a `struct sink`, which
 * alone knows the output rules — strip controls, collapse and trim white space, stay
 * within the bound, cut on a character boundary with "…". Once the sink is full the
 * decoders stop, so the work done for a huge input is bounded by what can still be
 * shown, not by the input. */
#include "mime.h"

#include <iconv.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

#define ELLIPSIS "\xe2\x80\xa6" /* U+2026 */
#define REPLACEMENT 0xFFFDu
#define CHARSET_MAX 64 /* longest charset label we look up; real ones are < 30 */

/* ---- ASCII, locale-independent ---------------------------------------------------- */

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Folding white space as it arrives: SP, HT and the line breaks folding leaves behind. */
static bool is_lwsp(char c)
{
	return is_wsp(c) || c == '\r' || c == '\n';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool ascii_caseeq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ascii_lower(a[i]) != ascii_lower(b[i]))
			return false;
	return true;
}

static int hex_value(char c)
{
	if (is_digit(c))
		return c - '0';
	c = ascii_lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* ---- UTF-8 ------------------------------------------------------------------------ */

/* Decode one well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates, at
 * most U+10FFFF). Returns its length, or 0 when s does not start one. */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *ret)
{
	uint32_t cp;
	size_t len;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		*ret = s[0];
		return 1;
	}
	if (s[0] < 0xC2) /* a continuation byte, or an overlong 2-byte lead */
		return 0;
	if (s[0] < 0xE0) {
		len = 2;
		cp = s[0] & 0x1F;
	} else if (s[0] < 0xF0) {
		len = 3;
		cp = s[0] & 0x0F;
	} else if (s[0] < 0xF5) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	*ret = cp;
	return len;
}

static size_t utf8_encode(uint32_t cp, char out[static 4])
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Characters that must never reach a notification, a log line or a terminal: C0 (line
 * breaks and ESC would let a subject forge lines or terminal sequences), DEL, C1, the
 * Unicode line separators, and the bidi controls that make "exe.pdf" read as "fdp.exe". */
static bool is_stripped(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 ||
	       (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/* ---- growable byte buffer --------------------------------------------------------- */

struct bytes {
	char *data;
	size_t len, cap;
};

/* Make room for n more bytes; returns where they go, or NULL on out-of-memory. */
static char *bytes_extend(struct bytes *b, size_t n)
{
	char *at;

	if (!b->data || n > b->cap - b->len) {
		size_t cap = MAX(MAX(b->cap * 2, (size_t)64), b->len + n);
		char *d = realloc(b->data, cap);

		if (!d)
			return NULL;
		b->data = d;
		b->cap = cap;
	}
	at = b->data + b->len;
	b->len += n;
	return at;
}

static int bytes_append(struct bytes *b, const void *p, size_t n)
{
	char *at = bytes_extend(b, n);

	if (!at)
		return -ENOMEM;
	if (n > 0)
		memcpy(at, p, n);
	return 0;
}

static void bytes_done(struct bytes *b)
{
	b->data = mfree(b->data);
	b->len = b->cap = 0;
}

/* ---- the sink: safe, bounded UTF-8 output ----------------------------------------- */

struct sink {
	char *buf;
	size_t len, cap, max;
	bool space;      /* a space is owed before the next visible character */
	bool drop_space; /* addresses: white space and controls vanish instead */
	bool full;       /* the bound was reached; further input is ignored */
	bool oom;
};

static void sink_init(struct sink *s, size_t max)
{
	*s = (struct sink){ .max = max };
}

/* Room for n more bytes and the terminating NUL. Never grows past max + 1 because the
 * callers check the bound first. */
static bool sink_reserve(struct sink *s, size_t n)
{
	size_t want, cap;
	char *b;

	if (s->oom)
		return false;
	want = s->len + n + 1;
	if (want <= s->cap)
		return true;
	cap = MAX(MAX(s->cap * 2, (size_t)64), want);
	if (s->max < SIZE_MAX)
		cap = MIN(cap, MAX(s->max + 1, want));
	b = realloc(s->buf, cap);
	if (!b) {
		s->oom = true;
		return false;
	}
	s->buf = b;
	s->cap = cap;
	return true;
}

/* The bound was hit with more to come: back off to a character boundary that leaves room
 * for "…", so the reader sees that something was cut. */
static void sink_truncate(struct sink *s)
{
	const size_t el = strlen(ELLIPSIS);

	s->full = true;
	if (s->max < el) /* no room for the mark at all: keep what fits */
		return;
	while (s->len > 0 && s->max - s->len < el) {
		do
			s->len--;
		while (s->len > 0 && ((uint8_t)s->buf[s->len] & 0xC0) == 0x80);
	}
	while (s->len > 0 && s->buf[s->len - 1] == ' ')
		s->len--;
	if (sink_reserve(s, el)) {
		memcpy(s->buf + s->len, ELLIPSIS, el);
		s->len += el;
	}
}

static void sink_put(struct sink *s, uint32_t cp)
{
	char enc[4];
	size_t n, need;

	if (s->full || s->oom)
		return;
	if (cp == ' ' || is_stripped(cp)) {
		/* Only a space between two visible characters survives: that both collapses
		 * runs and trims both ends. */
		if (!s->drop_space && s->len > 0)
			s->space = true;
		return;
	}
	n = utf8_encode(cp, enc);
	need = n + (s->space ? 1 : 0);
	if (need > s->max - s->len) {
		sink_truncate(s);
		return;
	}
	if (!sink_reserve(s, need))
		return;
	if (s->space)
		s->buf[s->len++] = ' ';
	s->space = false;
	memcpy(s->buf + s->len, enc, n);
	s->len += n;
}

/* UTF-8 in; each byte that does not start a valid sequence becomes U+FFFD. */
static void sink_put_utf8(struct sink *s, const char *in, size_t n)
{
	const uint8_t *p = (const uint8_t *)in;

	for (size_t i = 0; i < n && !s->full && !s->oom;) {
		uint32_t cp;
		size_t k = utf8_decode(p + i, n - i, &cp);

		if (k == 0) {
			cp = REPLACEMENT;
			k = 1;
		}
		sink_put(s, cp);
		i += k;
	}
}

/* Hand over the result: NULL on out-of-memory, else an owned NUL-terminated string. */
static char *sink_finish(struct sink *s)
{
	if (!sink_reserve(s, 0)) {
		s->buf = mfree(s->buf);
		return NULL;
	}
	s->buf[s->len] = '\0';
	return TAKE_PTR(s->buf);
}

/* ---- charsets --------------------------------------------------------------------- */

enum charset_kind {
	CHARSET_ICONV, /* convert with iconv */
	CHARSET_UTF8,  /* already UTF-8: validate only */
	CHARSET_RAW,   /* promises nothing: UTF-8 where valid, else Windows-1252 per byte */
};

struct charset {
	enum charset_kind kind;
	iconv_t cd; /* CHARSET_ICONV only; borrowed from the cache */
};

/* Labels seen in real mail that glibc does not know, or knows by a narrower charset than
 * the one senders actually use. Following the WHATWG Encoding Standard, which codifies
 * what mail and web clients do, Latin-1 labels read as Windows-1252 and so on; a NULL
 * target means "raw". */
static const struct {
	const char *label;
	const char *target;
} charset_aliases[] = {
	{ "us-ascii", NULL },
	{ "ascii", NULL },
	{ "ansi_x3.4-1968", NULL },
	{ "unknown-8bit", NULL },
	{ "unknown", NULL },
	{ "x-unknown", NULL },
	{ "x-user-defined", NULL },
	{ "default", NULL },
	{ "iso-8859-1", "WINDOWS-1252" },
	{ "iso8859-1", "WINDOWS-1252" },
	{ "iso_8859-1", "WINDOWS-1252" },
	{ "latin1", "WINDOWS-1252" },
	{ "l1", "WINDOWS-1252" },
	{ "iso-8859-9", "WINDOWS-1254" },
	{ "latin5", "WINDOWS-1254" },
	{ "iso-8859-11", "CP874" },
	{ "tis-620", "CP874" },
	{ "iso-8859-8-i", "ISO-8859-8" },
	{ "ks_c_5601-1987", "CP949" },
	{ "ks_c_5601-1989", "CP949" },
	{ "ksc5601", "CP949" },
	{ "euc-kr", "CP949" },
	{ "gb2312", "GB18030" },
	{ "gbk", "GB18030" },
	{ "x-gbk", "GB18030" },
	{ "cp936", "GB18030" },
	{ "big5", "BIG5-HKSCS" },
	{ "x-sjis", "CP932" },
	{ "shift_jis", "CP932" },
	{ "sjis", "CP932" },
	{ "ms_kanji", "CP932" },
	{ "windows-31j", "CP932" },
	{ "x-mac-roman", "MACINTOSH" },
};

/* iconv descriptors opened during one call, also remembering failures, so a header that
 * repeats a charset opens it once. Closed when the call ends.
 *
 * Eviction closes a descriptor, and glibc writes into a closed one without complaint, so
 * lookups happen in one place only (charset_resolve), at a moment when the only
 * descriptor still in use is the pending run's: that one is pinned. The Windows-1252
 * fallback, needed at any moment, has a slot of its own outside the rotation. */
#define CONV_SLOTS 8
struct conv_cache {
	struct {
		char label[CHARSET_MAX + 1]; /* lower-case; "" for a free slot */
		iconv_t cd;                  /* (iconv_t)-1 when glibc does not know it */
	} slot[CONV_SLOTS];
	size_t next;
	iconv_t pinned; /* in use by the pending run of words: never evicted */
	iconv_t fallback;
	bool fallback_tried;
};

static void conv_cache_init(struct conv_cache *c)
{
	for (size_t i = 0; i < CONV_SLOTS; i++) {
		c->slot[i].label[0] = '\0';
		c->slot[i].cd = (iconv_t)-1;
	}
	c->next = 0;
	c->pinned = (iconv_t)-1;
	c->fallback = (iconv_t)-1;
	c->fallback_tried = false;
}

static void conv_cache_done(struct conv_cache *c)
{
	for (size_t i = 0; i < CONV_SLOTS; i++)
		if (c->slot[i].cd != (iconv_t)-1)
			iconv_close(c->slot[i].cd);
	if (c->fallback != (iconv_t)-1)
		iconv_close(c->fallback);
	conv_cache_init(c);
}

static iconv_t conv_cache_fallback(struct conv_cache *c)
{
	if (!c->fallback_tried) {
		c->fallback = iconv_open("UTF-8", "WINDOWS-1252");
		c->fallback_tried = true;
	}
	return c->fallback;
}

/* Open (or find) a decoder from `target` to UTF-8, cached under `label`. */
static iconv_t conv_cache_get(struct conv_cache *c, const char *label, const char *target)
{
	size_t i;

	for (i = 0; i < CONV_SLOTS; i++)
		if (c->slot[i].label[0] && streq(c->slot[i].label, label))
			return c->slot[i].cd;
	i = c->next;
	if (c->pinned != (iconv_t)-1 && c->slot[i].cd == c->pinned)
		i = (i + 1) % CONV_SLOTS;
	c->next = (i + 1) % CONV_SLOTS;
	if (c->slot[i].cd != (iconv_t)-1)
		iconv_close(c->slot[i].cd);
	snprintf(c->slot[i].label, sizeof(c->slot[i].label), "%s", label);
	c->slot[i].cd = iconv_open("UTF-8", target);
	return c->slot[i].cd;
}

/* Resolve a charset label (as written, language already removed) to a way of decoding it.
 * Returns false for one we cannot decode. The label's syntax (see is_charset_char) keeps
 * "//" suffixes, which would switch iconv modes, out. */
static bool charset_resolve(struct conv_cache *c, const char *label, size_t n,
			    struct charset *ret)
{
	char lower[CHARSET_MAX + 1];
	const char *target;

	if (n == 0 || n > CHARSET_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		lower[i] = ascii_lower(label[i]);
	lower[n] = '\0';
	if (streq(lower, "utf-8") || streq(lower, "utf8")) {
		*ret = (struct charset){ .kind = CHARSET_UTF8, .cd = (iconv_t)-1 };
		return true;
	}
	target = lower;
	for (size_t i = 0; i < ELEMENTSOF(charset_aliases); i++) {
		if (!streq(lower, charset_aliases[i].label))
			continue;
		if (!charset_aliases[i].target) {
			*ret = (struct charset){ .kind = CHARSET_RAW, .cd = (iconv_t)-1 };
			return true;
		}
		target = charset_aliases[i].target;
		break;
	}
	iconv_t cd = conv_cache_get(c, lower, target);
	if (cd == (iconv_t)-1)
		return false;
	*ret = (struct charset){ .kind = CHARSET_ICONV, .cd = cd };
	return true;
}

static bool charset_same(const struct charset *a, const struct charset *b)
{
	return a->kind == b->kind && (a->kind != CHARSET_ICONV || a->cd == b->cd);
}

/* Convert bytes with iconv into the sink; a byte the charset cannot decode (or an
 * incomplete sequence at the end) becomes U+FFFD and decoding goes on after it. */
static void sink_put_iconv(struct sink *s, iconv_t cd, const char *in, size_t n)
{
	char *ip = (char *)in;
	size_t il = n;

	iconv(cd, NULL, NULL, NULL, NULL); /* a fresh shift state for every run */
	while (!s->full && !s->oom) {
		char out[1024], *op = out;
		size_t ol = sizeof(out), r;
		bool flush = il == 0; /* stateful charsets may still owe output */
		int e;

		r = iconv(cd, flush ? NULL : &ip, flush ? NULL : &il, &op, &ol);
		e = errno;
		sink_put_utf8(s, out, sizeof(out) - ol);
		if (r != (size_t)-1) {
			if (flush)
				break;
			continue;
		}
		if (e == E2BIG)
			continue;
		if (flush || (e != EILSEQ && e != EINVAL) || il == 0)
			break;
		sink_put(s, REPLACEMENT);
		ip++;
		il--;
	}
}

/* Raw 8-bit text: valid UTF-8 passes (RFC 6532); every other byte is read as
 * Windows-1252, the usual truth behind undeclared 8-bit headers. */
static void sink_put_raw(struct sink *s, struct conv_cache *c, const char *in, size_t n)
{
	const uint8_t *p = (const uint8_t *)in;
	size_t i = 0;

	while (i < n && !s->full && !s->oom) {
		uint32_t cp;
		size_t k = utf8_decode(p + i, n - i, &cp), bad;
		iconv_t cd;

		if (k > 0) {
			sink_put(s, cp);
			i += k;
			continue;
		}
		for (bad = 1; i + bad < n && utf8_decode(p + i + bad, n - i - bad, &cp) == 0; bad++)
			;
		cd = conv_cache_fallback(c);
		if (cd != (iconv_t)-1) {
			sink_put_iconv(s, cd, in + i, bad);
		} else {
			for (size_t j = 0; j < bad; j++)
				sink_put(s, REPLACEMENT);
		}
		i += bad;
	}
}

static void sink_put_charset(struct sink *s, struct conv_cache *c, const struct charset *cs,
			     const char *in, size_t n)
{
	switch (cs->kind) {
	case CHARSET_UTF8:
		sink_put_utf8(s, in, n);
		break;
	case CHARSET_RAW:
		sink_put_raw(s, c, in, n);
		break;
	case CHARSET_ICONV:
		sink_put_iconv(s, cs->cd, in, n);
		break;
	}
}

/* ---- RFC 2047 encoded-words ------------------------------------------------------- */

struct encoded_word {
	const char *charset; /* without an RFC 2231 "*language" suffix */
	size_t charset_len;
	char encoding; /* 'B' or 'Q' */
	const char *text;
	size_t text_len;
	size_t len; /* of the whole word, "=?" to "?=" */
};

/* RFC 2047 token characters, minus "/" (it would reach iconv_open's "//" suffixes) and
 * plus "*", the RFC 2231 language separator. */
static bool is_charset_char(char c)
{
	return is_alpha(c) || is_digit(c) || (c && strchr("!#$%&'*+-^_`{|}~.:", c));
}

/* encoded-text is printable ASCII without "?" and space; we also take raw 8-bit bytes,
 * which broken mailers put into Q text. */
static bool is_encoded_text_char(char c)
{
	uint8_t u = (uint8_t)c;

	return u > 0x20 && u != 0x7F && c != '?';
}

/* Recognise the syntax of an encoded-word at the start of p. Each scan stops at a "?",
 * and every word start is "=?", so trying this at every "=?" of a hostile string stays
 * linear. */
static bool encoded_word_parse(const char *p, size_t n, struct encoded_word *ret)
{
	size_t i = 2, cs_end, star, t;

	if (n < 2 || p[0] != '=' || p[1] != '?')
		return false;
	while (i < n && is_charset_char(p[i]))
		i++;
	cs_end = i;
	if (i + 3 >= n || p[i] != '?' || p[i + 2] != '?')
		return false;
	if (p[i + 1] == '\0' || !strchr("BbQq", p[i + 1]))
		return false;
	for (star = 2; star < cs_end && p[star] != '*'; star++)
		;
	if (star == 2)
		return false;
	for (t = i + 3; t < n && is_encoded_text_char(p[t]); t++)
		;
	if (t + 1 >= n || p[t] != '?' || p[t + 1] != '=')
		return false;
	*ret = (struct encoded_word){
		.charset = p + 2,
		.charset_len = star - 2,
		.encoding = (char)(p[i + 1] & ~0x20),
		.text = p + i + 3,
		.text_len = t - (i + 3),
		.len = t + 2,
	};
	return true;
}

static bool is_base64_char(char c)
{
	return is_alpha(c) || is_digit(c) || c == '+' || c == '/';
}

/* "B" encoding (RFC 2047 §4.1 = RFC 4648 base64). Missing padding is forgiven, since some
 * mailers drop it; any other defect rejects the word. */
static int decode_b(const char *t, size_t n, struct bytes *out)
{
	size_t pad = 0, k, whole, rem;
	unsigned char tail[4];

	while (pad < n && t[n - 1 - pad] == '=')
		pad++;
	k = n - pad;
	if (pad > 2 || k % 4 == 1 || k > INT_MAX)
		return -EBADMSG;
	for (size_t i = 0; i < k; i++)
		if (!is_base64_char(t[i]))
			return -EBADMSG;
	rem = k % 4;
	whole = k - rem;
	if (whole > 0) {
		char *at = bytes_extend(out, whole / 4 * 3);

		if (!at)
			return -ENOMEM;
		if (EVP_DecodeBlock((unsigned char *)at, (const unsigned char *)t, (int)whole) < 0)
			return -EBADMSG;
	}
	if (rem > 0) {
		unsigned char dec[3];

		memcpy(tail, t + whole, rem);
		memset(tail + rem, '=', 4 - rem);
		if (EVP_DecodeBlock(dec, tail, 4) < 0)
			return -EBADMSG;
		/* rem chars carry rem - 1 whole bytes; DecodeBlock counts the padding too. */
		return bytes_append(out, dec, rem - 1);
	}
	return 0;
}

/* "Q" encoding (RFC 2047 §4.2): "_" is a space, "=XX" a byte. A "=" without two hex
 * digits is kept as it is: more readable than dropping the word. */
static int decode_q(const char *t, size_t n, struct bytes *out)
{
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		int r;

		if (c == '_') {
			c = ' ';
		} else if (c == '=' && i + 2 < n && hex_value(t[i + 1]) >= 0 &&
			   hex_value(t[i + 2]) >= 0) {
			c = (char)(hex_value(t[i + 1]) << 4 | hex_value(t[i + 2]));
			i += 2;
		}
		r = bytes_append(out, &c, 1);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- mime_decode_header ----------------------------------------------------------- */

struct decoder {
	struct sink sink;
	struct conv_cache cache;
	struct bytes run;      /* decoded bytes of adjacent words in one charset */
	struct charset run_cs; /* valid while in_run */
	bool in_run;
	struct bytes word; /* scratch: one word's bytes */
};

static void decoder_flush_run(struct decoder *d)
{
	if (!d->in_run)
		return;
	sink_put_charset(&d->sink, &d->cache, &d->run_cs, d->run.data, d->run.len);
	d->run.len = 0;
	d->in_run = false;
	d->cache.pinned = (iconv_t)-1;
}

/* Decode a recognised word into d->word. Returns 1 when it decoded, 0 when it is to be
 * kept as raw text (unknown charset, bad base64), -ENOMEM. */
static int decoder_word(struct decoder *d, const struct encoded_word *w, struct charset *ret)
{
	int r;

	if (!charset_resolve(&d->cache, w->charset, w->charset_len, ret))
		return 0;
	d->word.len = 0;
	if (w->encoding == 'B')
		r = decode_b(w->text, w->text_len, &d->word);
	else
		r = decode_q(w->text, w->text_len, &d->word);
	if (r == -ENOMEM)
		return r;
	return r == 0;
}

/* Add a decoded word. `joined` says only white space separated it from the previous word,
 * which is then dropped (RFC 2047 §6.2); the bytes of same-charset neighbours are decoded
 * together so that a character split across two words survives. */
static void decoder_add_word(struct decoder *d, const struct charset *cs, bool joined,
			     const char *text, size_t text_len)
{
	if (!joined || !d->in_run || !charset_same(&d->run_cs, cs)) {
		decoder_flush_run(d);
		if (!joined)
			sink_put_raw(&d->sink, &d->cache, text, text_len);
	}
	if (bytes_append(&d->run, d->word.data, d->word.len) < 0) {
		d->sink.oom = true;
		return;
	}
	d->run_cs = *cs;
	d->in_run = true;
	d->cache.pinned = cs->kind == CHARSET_ICONV ? cs->cd : (iconv_t)-1;
}

static void decoder_run(struct decoder *d, const char *in, size_t len)
{
	size_t i = 0, text = 0; /* text: start of raw text not yet emitted */
	bool blank = true;      /* in[text..i) is white space only */

	while (i < len && !d->sink.full && !d->sink.oom) {
		struct encoded_word w;
		struct charset cs;
		int r;

		if (in[i] != '=' || !encoded_word_parse(in + i, len - i, &w)) {
			blank = blank && is_lwsp(in[i]);
			i++;
			continue;
		}
		r = decoder_word(d, &w, &cs);
		if (r < 0) {
			d->sink.oom = true;
			return;
		}
		if (r == 0) { /* keep it as text; its "=" cannot start another word */
			blank = false;
			i++;
			continue;
		}
		decoder_add_word(d, &cs, d->in_run && blank, in + text, i - text);
		i += w.len;
		text = i;
		blank = true;
	}
	decoder_flush_run(d);
	sink_put_raw(&d->sink, &d->cache, in + text, i - text);
}

char *mime_decode_header(const char *in, size_t len, size_t max_out)
{
	struct decoder d = {};
	char *s;

	sink_init(&d.sink, max_out);
	conv_cache_init(&d.cache);
	decoder_run(&d, in ? in : "", in ? len : 0);
	s = sink_finish(&d.sink);
	conv_cache_done(&d.cache);
	bytes_done(&d.run);
	bytes_done(&d.word);
	return s;
}

char *mime_sanitize_utf8(const char *in, size_t len, size_t max_out)
{
	struct sink s;

	sink_init(&s, max_out);
	if (in)
		sink_put_utf8(&s, in, len);
	return sink_finish(&s);
}

/* ---- mime_header_get -------------------------------------------------------------- */

/* A line of the block: [start, end) without its CR LF (or LF); next is the line after. */
struct line {
	size_t start, end, next;
};

static struct line line_at(const char *b, size_t len, size_t at)
{
	const char *nl = memchr(b + at, '\n', len - at);
	struct line l = { .start = at, .end = nl ? (size_t)(nl - b) : len };

	l.next = nl ? l.end + 1 : len;
	if (l.end > l.start && b[l.end - 1] == '\r')
		l.end--;
	return l;
}

/* Does the line hold field `name`? Returns the offset just after its colon, or 0. */
static size_t field_match(const char *b, const struct line *l, const char *name, size_t nlen)
{
	size_t i = l->start + nlen;

	if (l->end - l->start < nlen + 1 || !ascii_caseeq(b + l->start, name, nlen))
		return 0;
	while (i < l->end && is_wsp(b[i])) /* RFC 5322 §4.5 obsolete: WSP before the colon */
		i++;
	return i < l->end && b[i] == ':' ? i + 1 : 0;
}

/* Unfold the value starting at `at` on line l and any continuation lines after it. */
static int field_value(const char *b, size_t len, struct line l, size_t at, char **ret)
{
	_cleanup_free_ char *v = NULL;
	struct bytes out = {};
	size_t s = 0, e;

	for (;;) {
		if (bytes_append(&out, b + at, l.end - at) < 0)
			goto oom;
		if (l.next >= len || !is_wsp(b[l.next]))
			break;
		l = line_at(b, len, l.next);
		at = l.start;
	}
	if (bytes_append(&out, "", 1) < 0)
		goto oom;
	v = TAKE_PTR(out.data);
	e = out.len - 1;
	for (size_t i = 0; i < e; i++)
		if (v[i] == '\0')
			v[i] = ' ';
	while (s < e && is_lwsp(v[s]))
		s++;
	while (e > s && is_lwsp(v[e - 1]))
		e--;
	memmove(v, v + s, e - s);
	v[e - s] = '\0';
	*ret = TAKE_PTR(v);
	return 0;
oom:
	bytes_done(&out);
	return -ENOMEM;
}

int mime_header_get(const char *block, size_t len, const char *name, char **ret_value)
{
	size_t nlen = name ? strlen(name) : 0;

	if (nlen == 0)
		return -EINVAL;
	if (!block)
		return -ENOENT;
	for (size_t at = 0; at < len;) {
		struct line l = line_at(block, len, at);
		size_t colon;

		if (l.end == l.start) /* the empty line that ends a header block */
			break;
		colon = is_wsp(block[l.start]) ? 0 : field_match(block, &l, name, nlen);
		if (colon > 0)
			return field_value(block, len, l, colon, ret_value);
		at = l.next;
	}
	return -ENOENT;
}

/* ---- address lists ---------------------------------------------------------------- */

/* Input offsets of a token's content. */
struct span {
	size_t start, end;
};

/* The mailbox being read (RFC 5322 §3.4): words outside angle brackets, the angle-addr,
 * the first comment. */
struct mailbox {
	struct bytes phrase; /* words, quoted strings unquoted, one space between groups */
	size_t groups;       /* runs of words not separated by white space or comments */
	struct span tail;    /* input span of the last such run: the address when no <> */
	size_t tail_phrase;  /* phrase length before the last run */
	bool tail_has_at;    /* an atom of the last run holds "@" */
	bool tail_quoted;    /* the last run holds a quoted-string */
	bool glued;          /* the last token was a word: the next one continues its run */
	bool have_angle;
	struct span angle;
	bool have_comment;
	struct span comment;
};

struct address_parser {
	const char *in;
	size_t len, pos, max;
	bool in_group;
	struct mailbox mb;
	struct mime_address *list;
	size_t n, cap;
};

static void mailbox_reset(struct mailbox *m)
{
	struct bytes keep = m->phrase;

	keep.len = 0;
	*m = (struct mailbox){ .phrase = keep };
}

/* Copy a quoted-string or comment body, dropping the backslash of each quoted-pair. */
static int unescape_into(struct bytes *out, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\\' && i + 1 < n)
			i++;
		if (bytes_append(out, p + i, 1) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* Skip a construct opened by in[pos] up to its closing character, honouring quoted-pairs;
 * comments nest. Unterminated means "to the end". Returns the content span. */
static struct span scan_delimited(struct address_parser *p, char open, char close)
{
	size_t depth = 1, i = p->pos + 1;
	struct span s = { .start = i };
	bool quoted = false; /* inside "..." within <...> */

	for (; i < p->len; i++) {
		char c = p->in[i];

		if (c == '\\') {
			i++;
			continue;
		}
		if (open == '<' && c == '"') {
			quoted = !quoted;
		} else if (quoted) {
			continue;
		} else if (c == close && --depth == 0) {
			break;
		} else if (c == open && open == '(') {
			depth++;
		}
	}
	s.end = MIN(i, p->len);
	p->pos = MIN(i + 1, p->len);
	return s;
}

static bool is_address_special(char c)
{
	return is_lwsp(c) || (c && strchr("()<>,;:\"", c));
}

/* A word token (atom or quoted-string) enters the phrase and extends or starts a run. */
static int mailbox_add_word(struct address_parser *p, size_t start, size_t end,
			    const struct span *quoted)
{
	struct mailbox *m = &p->mb;

	if (!m->glued) {
		m->groups++;
		m->tail_phrase = m->phrase.len;
		m->tail.start = start;
		m->tail_has_at = m->tail_quoted = false;
		if (m->phrase.len > 0 && bytes_append(&m->phrase, " ", 1) < 0)
			return -ENOMEM;
	}
	m->tail.end = end;
	m->glued = true;
	m->tail_quoted = m->tail_quoted || quoted;
	m->tail_has_at = m->tail_has_at || (!quoted && memchr(p->in + start, '@', end - start));
	if (quoted)
		return unescape_into(&m->phrase, p->in + quoted->start,
				     quoted->end - quoted->start);
	return bytes_append(&m->phrase, p->in + start, end - start);
}

/* An atom; an encoded-word inside it is taken whole, even when its text holds specials
 * that RFC 2047 §5 forbids there ("=?utf-8?q?Doe,_John?="), so its comma splits nothing. */
static int parse_atom(struct address_parser *p)
{
	size_t start = p->pos, i = p->pos;

	while (i < p->len && !is_address_special(p->in[i])) {
		struct encoded_word w;

		if (p->in[i] == '=' && encoded_word_parse(p->in + i, p->len - i, &w))
			i += w.len;
		else
			i++;
	}
	p->pos = i;
	return mailbox_add_word(p, start, i, NULL);
}

static int parse_quoted(struct address_parser *p)
{
	size_t start = p->pos, i;
	struct span content;

	for (i = start + 1; i < p->len && p->in[i] != '"'; i++)
		if (p->in[i] == '\\')
			i++;
	content = (struct span){ start + 1, MIN(i, p->len) }; /* unterminated: to the end */
	p->pos = MIN(i + 1, p->len);
	return mailbox_add_word(p, start, p->pos, &content);
}

static char *address_from_span(struct address_parser *p, struct span s)
{
	const char *a = p->in + s.start;
	size_t n = s.end - s.start, i = 0;
	struct sink k;

	while (i < n && is_lwsp(a[i]))
		i++;
	if (i < n && a[i] == '@') { /* obsolete source route "@relay,@relay:" (RFC 5322 §4.4) */
		const char *colon = memchr(a + i, ':', n - i);

		if (colon)
			i = (size_t)(colon - a) + 1;
	}
	sink_init(&k, MIME_ADDRESS_MAX);
	k.drop_space = true;
	sink_put_utf8(&k, a + i, n - i);
	return sink_finish(&k);
}

static char *name_from_bytes(const char *p, size_t n)
{
	return mime_decode_header(p, n, MIME_NAME_MAX);
}

static char *name_from_comment(struct address_parser *p)
{
	struct bytes b = {};
	char *s;

	if (!p->mb.have_comment)
		return strdup("");
	if (unescape_into(&b, p->in + p->mb.comment.start,
			  p->mb.comment.end - p->mb.comment.start) < 0) {
		bytes_done(&b);
		return NULL;
	}
	s = name_from_bytes(b.data, b.len);
	bytes_done(&b);
	return s;
}

/* Decide name and address of the finished mailbox (see mime.h for the forms). */
static int mailbox_resolve(struct address_parser *p, char **ret_name, char **ret_addr)
{
	struct mailbox *m = &p->mb;
	_cleanup_free_ char *name = NULL, *addr = NULL;

	if (m->have_angle) {
		addr = address_from_span(p, m->angle);
		name = m->phrase.len > 0 ? name_from_bytes(m->phrase.data, m->phrase.len)
					 : name_from_comment(p);
	} else if (m->tail_has_at || (m->groups == 1 && !m->tail_quoted)) {
		/* "a@b", "a@b (Name)", "root", or "Name a@b" with the brackets forgotten; a
		 * quoted string alone is a name */
		addr = address_from_span(p, m->tail);
		name = m->groups > 1 ? name_from_bytes(m->phrase.data, m->tail_phrase)
				     : name_from_comment(p);
	} else {
		addr = strdup("");
		name = name_from_bytes(m->phrase.data, m->phrase.len);
	}
	if (!name || !addr)
		return -ENOMEM;
	*ret_name = TAKE_PTR(name);
	*ret_addr = TAKE_PTR(addr);
	return 0;
}

static int mailbox_finish(struct address_parser *p)
{
	_cleanup_free_ char *name = NULL, *addr = NULL;
	int r;

	if (p->n >= p->max || (p->mb.groups == 0 && !p->mb.have_angle)) {
		mailbox_reset(&p->mb);
		return 0;
	}
	r = mailbox_resolve(p, &name, &addr);
	mailbox_reset(&p->mb);
	if (r < 0)
		return r;
	if (!*name)
		name = mfree(name);
	if (!name && !*addr)
		return 0;
	if (p->n == p->cap) {
		size_t cap = MAX(p->cap * 2, (size_t)4);
		struct mime_address *l = reallocarray(p->list, cap, sizeof(*l));

		if (!l)
			return -ENOMEM;
		p->list = l;
		p->cap = cap;
	}
	p->list[p->n++] = (struct mime_address){ .name = TAKE_PTR(name), .address = TAKE_PTR(addr) };
	return 0;
}

static int address_parser_step(struct address_parser *p)
{
	struct mailbox *m = &p->mb;
	char c = p->in[p->pos];

	if (c == '"')
		return parse_quoted(p);
	if (!is_address_special(c) && c != '>' && c != ')')
		return parse_atom(p);
	m->glued = false;
	if (c == '(') {
		struct span s = scan_delimited(p, '(', ')');

		if (!m->have_comment)
			m->comment = s;
		m->have_comment = true;
		return 0;
	}
	if (c == '<') {
		struct span s = scan_delimited(p, '<', '>');

		if (!m->have_angle) /* a second <...> in one mailbox is ignored */
			m->angle = s;
		m->have_angle = true;
		return 0;
	}
	p->pos++;
	if (c == ':' && !p->in_group && !m->have_angle) {
		/* "display-name:" opens a group; the group's own name is not reported */
		mailbox_reset(m);
		p->in_group = true;
	} else if (c == ',' || c == ';') {
		if (c == ';')
			p->in_group = false;
		return mailbox_finish(p);
	}
	return 0;
}

int mime_parse_address_list(const char *in, size_t len, size_t max_addrs,
			    struct mime_address **ret, size_t *ret_n)
{
	struct address_parser p = { .in = in ? in : "", .len = in ? len : 0, .max = max_addrs };
	int r = 0;

	while (p.pos < p.len && p.n < p.max && r >= 0)
		r = address_parser_step(&p);
	if (r >= 0)
		r = mailbox_finish(&p);
	bytes_done(&p.mb.phrase);
	if (r < 0) {
		mime_address_list_free(p.list, p.n);
		return r;
	}
	if (p.n == 0)
		p.list = mfree(p.list);
	*ret = p.list;
	*ret_n = p.n;
	return (int)MIN(p.n, (size_t)INT_MAX);
}

struct mime_address *mime_address_list_free(struct mime_address *a, size_t n)
{
	if (!a)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		free(a[i].name);
		free(a[i].address);
	}
	free(a);
	return NULL;
}

/* ---- dates ------------------------------------------------------------------------ */

/* A broken-down date-time and its zone offset, as read. */
struct date {
	int year, mon, day, hour, min, sec; /* mon 1-12 */
	int offset;                         /* seconds east of UTC */
};

static void skip_ws(const char **p)
{
	while (is_lwsp(**p))
		(*p)++;
}

/* White space and (possibly nested) comments, RFC 5322 CFWS. */
static void skip_cfws(const char **p)
{
	for (;;) {
		size_t depth = 0;

		skip_ws(p);
		if (**p != '(')
			return;
		for (; **p; (*p)++) {
			if (**p == '\\' && (*p)[1]) {
				(*p)++;
			} else if (**p == '(') {
				depth++;
			} else if (**p == ')' && --depth == 0) {
				(*p)++;
				break;
			}
		}
	}
}

static int parse_digits(const char **p, size_t min, size_t max, int *ret)
{
	size_t n = 0;
	int v = 0;

	while (n < max && is_digit((*p)[n])) {
		v = v * 10 + ((*p)[n] - '0');
		n++;
	}
	if (n < min || is_digit((*p)[n]))
		return -EINVAL;
	*p += n;
	*ret = v;
	return 0;
}

/* Month names; the first three letters decide ("Jul", "July"). */
static int parse_month(const char **p, int *ret)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	const char *s = *p;

	if (!is_alpha(s[0]) || !is_alpha(s[1]) || !is_alpha(s[2]))
		return -EINVAL;
	for (int m = 0; m < 12; m++) {
		if (!ascii_caseeq(s, months + 3 * m, 3))
			continue;
		for (s += 3; is_alpha(*s); s++)
			;
		*p = s;
		*ret = m + 1;
		return 0;
	}
	return -EINVAL;
}

static int parse_time_of_day(const char **p, bool need_seconds, struct date *d)
{
	if (parse_digits(p, 1, 2, &d->hour) < 0 || **p != ':')
		return -EINVAL;
	(*p)++;
	if (parse_digits(p, 2, 2, &d->min) < 0)
		return -EINVAL;
	d->sec = 0;
	if (**p == ':') {
		(*p)++;
		return parse_digits(p, 2, 2, &d->sec);
	}
	return need_seconds ? -EINVAL : 0;
}

static int parse_numeric_zone(const char **p, int *ret)
{
	int sign = **p == '-' ? -1 : 1, v;

	if (**p != '+' && **p != '-')
		return -EINVAL;
	(*p)++;
	if (parse_digits(p, 4, 4, &v) < 0 || v % 100 > 59)
		return -EINVAL;
	*ret = sign * ((v / 100) * 3600 + (v % 100) * 60);
	return 0;
}

/* RFC 5322 §4.3 obsolete zones. Military letters and unknown names carry no reliable
 * meaning and count as -0000, i.e. UTC. */
static int parse_zone(const char **p, int *ret)
{
	static const struct {
		const char *name;
		int hours;
	} zones[] = {
		{ "ut", 0 },  { "utc", 0 }, { "gmt", 0 }, { "z", 0 },   { "est", -5 }, { "edt", -4 },
		{ "cst", -6 }, { "cdt", -5 }, { "mst", -7 }, { "mdt", -6 }, { "pst", -8 }, { "pdt", -7 },
	};
	const char *s = *p;
	size_t n = 0;

	if (*s == '+' || *s == '-')
		return parse_numeric_zone(p, ret);
	while (is_alpha(s[n]))
		n++;
	*ret = 0;
	*p = s + n;
	for (size_t i = 0; i < ELEMENTSOF(zones); i++)
		if (strlen(zones[i].name) == n && ascii_caseeq(s, zones[i].name, n))
			*ret = zones[i].hours * 3600;
	return 0;
}

static bool is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Range checks, then seconds since the epoch in UTC. */
static int date_to_time(const struct date *d, time_t *ret)
{
	static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	struct tm tm = {};
	time_t t;

	if (d->year < 1900 || d->year > 9999 || d->mon < 1 || d->mon > 12 || d->day < 1 ||
	    d->day > mdays[d->mon - 1] + (d->mon == 2 && is_leap(d->year)) || d->hour > 23 ||
	    d->min > 59 || d->sec > 60)
		return -EINVAL;
	tm.tm_year = d->year - 1900;
	tm.tm_mon = d->mon - 1;
	tm.tm_mday = d->day;
	tm.tm_hour = d->hour;
	tm.tm_min = d->min;
	tm.tm_sec = d->sec; /* a leap second :60 rolls into the next minute */
	t = timegm(&tm);
	*ret = t - d->offset;
	return 0;
}

/* RFC 5322 §4.3: two-digit years 00-49 are 20xx, 50-99 and three-digit years 19xx. */
static int parse_year(const char **p, int *ret)
{
	const char *s = *p;
	int y;

	if (parse_digits(p, 2, 4, &y) < 0)
		return -EINVAL;
	if (*p - s == 2)
		y += y < 50 ? 2000 : 1900;
	else if (*p - s == 3)
		y += 1900;
	*ret = y;
	return 0;
}

static void skip_date_separator(const char **p)
{
	skip_cfws(p);
	if (**p == '-') {
		(*p)++;
		skip_cfws(p);
	}
}

int mime_parse_rfc5322_date(const char *s, time_t *ret)
{
	struct date d = {};
	const char *p = s;

	if (!s)
		return -EINVAL;
	skip_cfws(&p);
	if (is_alpha(*p)) { /* day-of-week, not checked against the date */
		while (is_alpha(*p))
			p++;
		skip_cfws(&p);
		if (*p == ',')
			p++;
		skip_cfws(&p);
	}
	if (parse_digits(&p, 1, 2, &d.day) < 0)
		return -EINVAL;
	skip_date_separator(&p);
	if (parse_month(&p, &d.mon) < 0)
		return -EINVAL;
	skip_date_separator(&p);
	if (parse_year(&p, &d.year) < 0)
		return -EINVAL;
	skip_cfws(&p);
	if (parse_time_of_day(&p, false, &d) < 0)
		return -EINVAL;
	skip_cfws(&p);
	/* A missing zone is taken as UTC; whatever follows the zone ("(CEST)") is ignored. */
	if (parse_zone(&p, &d.offset) < 0)
		return -EINVAL;
	return date_to_time(&d, ret);
}

/* RFC 3501: date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone
 * DQUOTE, with date-day-fixed = (SP DIGIT) / 2DIGIT. */
int mime_parse_internaldate(const char *s, time_t *ret)
{
	struct date d = {};
	const char *p = s;
	bool quoted;

	if (!s)
		return -EINVAL;
	quoted = *p == '"';
	if (quoted)
		p++;
	while (*p == ' ')
		p++;
	if (parse_digits(&p, 1, 2, &d.day) < 0 || *p++ != '-' || parse_month(&p, &d.mon) < 0 ||
	    *p++ != '-' || parse_digits(&p, 4, 4, &d.year) < 0 || *p++ != ' ' ||
	    parse_time_of_day(&p, true, &d) < 0 || *p++ != ' ' ||
	    parse_numeric_zone(&p, &d.offset) < 0)
		return -EINVAL;
	if (quoted && *p++ != '"')
		return -EINVAL;
	skip_ws(&p);
	if (*p)
		return -EINVAL;
	return date_to_time(&d, ret);
}

void mime_format_rfc3339(time_t t, char buf[static 32])
{
	/* 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the four-digit years RFC 3339 has */
	const time_t lo = (time_t)-62167219200LL, hi = (time_t)253402300799LL;
	struct tm tm;

	t = t < lo ? lo : t > hi ? hi : t;
	if (!gmtime_r(&t, &tm)) {
		snprintf(buf, 32, "1970-01-01T00:00:00Z");
		return;
	}
	/* The clamp keeps every field in range; the modulos only show the compiler so. */
	snprintf(buf, 32, "%04u-%02u-%02uT%02u:%02u:%02uZ", (unsigned)(tm.tm_year + 1900) % 10000,
		 (unsigned)(tm.tm_mon + 1) % 100, (unsigned)tm.tm_mday % 100,
		 (unsigned)tm.tm_hour % 100, (unsigned)tm.tm_min % 100, (unsigned)tm.tm_sec % 100);
}
