#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>
#include <cmocka.h>

#include "mime.h"
#include "util.h"

/* Every string the module returns must be safe UTF-8: checked independently here. */
static void assert_safe_utf8(const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);

	assert_true(n <= max);
	if (n > 0) {
		assert_true(p[0] != ' ');
		assert_true(p[n - 1] != ' ');
	}
	assert_null(strstr(s, "  "));
	for (size_t i = 0; i < n; i++) {
		assert_true(p[i] >= 0x20 && p[i] != 0x7F);
		assert_true(p[i] < 0xF5 && p[i] != 0xC0 && p[i] != 0xC1);
		if (p[i] == 0xC2) /* C1 controls U+0080-U+009F */
			assert_true(p[i + 1] >= 0xA0);
		if (p[i] == 0xE2 && p[i + 1] == 0x80) /* U+2028-U+202E */
			assert_true(p[i + 2] < 0xA8 || p[i + 2] > 0xAE);
		if (p[i] == 0xE2 && p[i + 1] == 0x81) /* U+2066-U+2069 */
			assert_true(p[i + 2] < 0xA6 || p[i + 2] > 0xA9);
	}
}

struct decode_case {
	const char *in;
	size_t len; /* 0: strlen(in) */
	size_t max; /* 0: 1000 */
	const char *out;
};

static void run_decode_cases(const struct decode_case *cases, size_t n,
			     char *(*fn)(const char *, size_t, size_t))
{
	for (size_t i = 0; i < n; i++) {
		const struct decode_case *c = &cases[i];
		size_t max = c->max ? c->max : 1000;
		_cleanup_free_ char *s = fn(c->in, c->len ? c->len : strlen(c->in), max);

		assert_non_null(s);
		if (!streq(s, c->out))
			fail_msg("case %zu: input \"%s\": expected \"%s\", got \"%s\"", i, c->in,
				 c->out, s);
		assert_safe_utf8(s, max);
	}
}

static const struct decode_case decode_cases[] = {
	/* B and Q, upper and lower case */
	{ "=?UTF-8?B?w6l0w6k=?=", 0, 0, "été" },
	{ "=?utf-8?b?aGk=?=", 0, 0, "hi" },
	{ "=?UTF-8?Q?caf=C3=A9?=", 0, 0, "café" },
	{ "=?utf-8?q?caf=c3=a9?=", 0, 0, "café" },
	{ "=?utf-8?q?hello_world?=", 0, 0, "hello world" },
	{ "=?utf-8?q?" "?=", 0, 0, "" }, /* split: "??=" is a trigraph */
	/* charsets */
	{ "=?ISO-8859-1?Q?Caf=E9?=", 0, 0, "Café" },
	{ "=?iso-8859-15?q?=A4uro?=", 0, 0, "€uro" },
	{ "=?windows-1252?Q?=93Hello=94_=80?=", 0, 0, "\u201cHello\u201d \u20ac" },
	{ "=?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=", 0, 0, "\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88" },
	{ "=?KOI8-R?Q?=F0=D2=C9=D7=C5=D4?=", 0, 0, "Привет" },
	{ "=?GB2312?B?1tDOxA==?=", 0, 0, "中文" },
	{ "=?GBK?Q?=86=B4?=", 0, 0, "喆" },
	{ "=?gb2312?Q?=86=B4?=", 0, 0, "喆" }, /* GBK sent as GB2312 */
	{ "=?ks_c_5601-1987?B?x9GxuQ==?=", 0, 0, "한국" },
	{ "=?us-ascii?q?caf=E9?=", 0, 0, "café" },
	{ "=?unknown-8bit?q?Gr=C3=BC=C3=9Fe?=", 0, 0, "Grüße" },
	{ "=?utf-8*en?q?hi?=", 0, 0, "hi" },
	{ "=?ISO-8859-1*fr?Q?=E9t=E9?=", 0, 0, "été" },
	/* adjacency (RFC 2047 §6.2) */
	{ "=?utf-8?q?a?= =?utf-8?q?b?=", 0, 0, "ab" },
	{ "=?utf-8?q?a?=\r\n =?utf-8?q?b?=\r\n\t=?utf-8?q?c?=", 0, 0, "abc" },
	{ "=?utf-8?q?a?= =?iso-8859-1?q?=E9?=", 0, 0, "aé" },
	{ "=?utf-8?q?a?= x =?utf-8?q?b?=", 0, 0, "a x b" },
	{ "Re: =?utf-8?q?a?= and =?utf-8?q?b?= done", 0, 0, "Re: a and b done" },
	{ "Re:=?utf-8?q?x?=y", 0, 0, "Re:xy" },
	{ "=?UTF-8?B?ww==?= =?UTF-8?B?qQ==?=", 0, 0, "é" },         /* split 2-byte char */
	{ "=?UTF-8?B?4oI=?=\r\n =?UTF-8?B?rA==?=", 0, 0, "€" },     /* split 3-byte char */
	{ "=?utf-8?q?=E2?= =?utf-8?q?=82=AC?=", 0, 0, "€" },
	{ "=?ISO-2022-JP?B?GyRCJUYbKEI=?= =?ISO-2022-JP?B?GyRCJTklSBsoQg==?=", 0, 0,
	  "テスト" },
	{ "=?UTF-8?B?ww==?= =?ISO-8859-1?Q?x?=", 0, 0, "\ufffdx" }, /* not the same charset */
	/* leniency */
	{ "=?utf-8?b?aGk?=", 0, 0, "hi" }, /* padding dropped */
	{ "=?utf-8?q?a=ZZb=?=", 0, 0, "a=ZZb=" },
	{ "=?utf-8?q?caf\xc3\xa9?=", 0, 0, "café" }, /* raw 8-bit in Q text */
	/* malformed words stay readable */
	{ "=?utf-8?b?!!!?=", 0, 0, "=?utf-8?b?!!!?=" },
	{ "=?utf-8?b?QQ=Q?=", 0, 0, "=?utf-8?b?QQ=Q?=" },
	{ "=?utf-8?b?Q?=", 0, 0, "=?utf-8?b?Q?=" },
	{ "=?x-bogus?Q?a?=", 0, 0, "=?x-bogus?Q?a?=" },
	{ "=?utf-8?q?abc", 0, 0, "=?utf-8?q?abc" },
	{ "=?utf-8?x?abc?=", 0, 0, "=?utf-8?x?abc?=" },
	{ "=?utf-8//TRANSLIT?q?a?=", 0, 0, "=?utf-8//TRANSLIT?q?a?=" },
	{ "=?*en?q?a?=", 0, 0, "=?*en?q?a?=" },
	{ "=?utf-8?q?a b?=", 0, 0, "=?utf-8?q?a b?=" },
	{ "=?utf-8?q?a?= =?x-bogus?q?b?=", 0, 0, "a =?x-bogus?q?b?=" },
	{ "=?x-bogus?q?a?= =?utf-8?q?b?=", 0, 0, "=?x-bogus?q?a?= b" },
	{ "=?=?utf-8?q?ok?=", 0, 0, "=?ok" },
	{ "=?utf-8?q?a=FFb?=", 0, 0, "a\ufffdb" },
	{ "=?koi8-r?q?=F0?= =?utf-8?q?x?=", 0, 0, "Пx" },
	{ "=?ISO-2022-JP?B?GyRCJUY=?=", 0, 0, "テ" }, /* unterminated shift state */
	/* 8 charsets fill the descriptor cache; the next new one must not evict the
	 * descriptor the pending koi8-r run still needs */
	{ "=?koi8-r?q?=F0?= =?b1?q?x?= =?b2?q?x?= =?b3?q?x?= =?b4?q?x?= =?b5?q?x?= "
	  "=?b6?q?x?= =?b7?q?x?= =?koi8-r?q?=F0?= =?iso-8859-5?q?=BF?=",
	  0, 0,
	  "П =?b1?q?x?= =?b2?q?x?= =?b3?q?x?= =?b4?q?x?= =?b5?q?x?= =?b6?q?x?= =?b7?q?x?= ПП" },
	/* found by fuzzing: with the cache full, the Windows-1252 fallback for the raw text
	 * before a word must not evict the descriptor that word was just given */
	{ "=?koi8-r?q?=F0?= =?iso-8859-2?q?a?= =?iso-8859-5?q?b?= =?iso-8859-7?q?c?= "
	  "=?windows-1251?q?d?= =?windows-1250?q?e?= =?cp437?q?f?= =?iso-8859-15?q?g?= "
	  "\xe9 =?koi8-r?q?=F0?=",
	  0, 0, "Пabcdefg é П" },
	/* raw 8-bit: UTF-8 passes, the rest is Windows-1252 */
	{ "Grüße, 日本", 0, 0, "Grüße, 日本" },
	{ "Gr\xfc\xdf" "e", 0, 0, "Grüße" },
	{ "caf\xe9 \x93quoted\x94 \x80", 0, 0, "café \u201cquoted\u201d \u20ac" },
	{ "mixed \xc3\xa9 and \xe9", 0, 0, "mixed é and é" },
	{ "undefined \x81\x8d", 0, 0, "undefined \ufffd\ufffd" },
	/* controls, escapes, injection, bidi */
	{ "a\x01" "b\x7f" "c", 0, 0, "a b c" },
	{ "\x1b[31mred\x1b[0m", 0, 0, "[31mred [0m" },
	{ "Hi\r\nBcc: evil@example.com", 0, 0, "Hi Bcc: evil@example.com" },
	{ "=?utf-8?q?Hi=0D=0ABcc:_x?=", 0, 0, "Hi Bcc: x" },
	{ "=?utf-8?q?a=C2=85b=C2=9Bc?=", 0, 0, "a b c" },
	{ "invoice\u202Efdp.exe", 0, 0, "invoice fdp.exe" },
	{ "=?utf-8?b?4oCu?=x", 0, 0, "x" },
	{ "a\u2066b\u2069c\u2028d", 0, 0, "a b c d" },
	{ "=?utf-16be?b?ACAAYQAAAGI=?=", 0, 0, "a b" },
	{ "tab\there", 0, 0, "tab here" },
	{ "  lots   of\t\t  space  ", 0, 0, "lots of space" },
	{ "\r\n\t", 0, 0, "" },
	{ "", 0, 0, "" },
	{ "a\0b", 3, 0, "a b" },
	/* bounds: cut on a character boundary, "…" counted in the bound */
	{ "abc", 0, 3, "abc" },
	{ "abcd", 0, 3, "…" },
	{ "abcd", 0, 2, "ab" },
	{ "héllo wörld", 0, 8, "héll…" },
	{ "ééééé", 0, 7, "éé…" },
	{ "ab   ", 0, 2, "ab" },
	{ "one two three", 0, 10, "one two…" },
	{ "=?UTF-8?B?w6l0w6k=?= =?UTF-8?B?w6l0w6k=?=", 0, 6, "ét…" },
};

static void test_decode_header(void **state)
{
	run_decode_cases(decode_cases, ELEMENTSOF(decode_cases), mime_decode_header);
}

static void test_decode_header_zero_bound(void **state)
{
	_cleanup_free_ char *s = mime_decode_header("abc", 3, 0);
	_cleanup_free_ char *e = mime_decode_header(NULL, 0, 10);

	assert_string_equal(s, "");
	assert_string_equal(e, "");
}

static char *sanitize_adapter(const char *in, size_t len, size_t max)
{
	return mime_sanitize_utf8(in, len, max);
}

static const struct decode_case sanitize_cases[] = {
	{ "plain", 0, 0, "plain" },
	{ "Grüße", 0, 0, "Grüße" },
	{ "=?utf-8?q?not_decoded?=", 0, 0, "=?utf-8?q?not_decoded?=" },
	{ "a\xff" "b", 0, 0, "a\ufffdb" },
	{ "caf\xe9", 0, 0, "caf\ufffd" },
	{ "\xc0\xaf", 0, 0, "\ufffd\ufffd" },           /* overlong "/" */
	{ "\xe0\x80\xaf", 0, 0, "\ufffd\ufffd\ufffd" }, /* overlong, 3 bytes */
	{ "\xed\xa0\x80", 0, 0, "\ufffd\ufffd\ufffd" }, /* surrogate */
	{ "\xf4\x90\x80\x80", 0, 0, "\ufffd\ufffd\ufffd\ufffd" }, /* above U+10FFFF */
	{ "\xf0\x9f\x98\x80", 0, 0, "😀" },
	{ "\xe2\x82", 0, 0, "\ufffd\ufffd" }, /* truncated sequence */
	{ "a\r\nb\tc\x1b" "d\u202ee", 0, 0, "a b c d e" },
	{ "\xc2\x80\xc2\x9f", 0, 0, "" },
	{ "😀😀", 0, 7, "😀…" },
};

static void test_sanitize_utf8(void **state)
{
	run_decode_cases(sanitize_cases, ELEMENTSOF(sanitize_cases), sanitize_adapter);
}

/* A hostile 1 MiB header must finish quickly and stay bounded, whatever its shape. */
static void test_decode_huge(void **state)
{
	static const char *const pieces[] = {
		"=?utf-8?q?a?= ", "=?x?q?", "=?=?", "\xe9\x93", "=?utf-8?b?w6l0w6k=?=",
		"=?iso-2022-jp?b?GyRCJUY=?= ", "=?koi8-r?q?=F0?=", " \r\n ", "\x1b\xe2\x80\xae",
		"=?a?q?", "=?b?q?", "=?c?q?", "=?d?q?", "=?e?q?", "=?f?q?", "=?g?q?",
	};
	const size_t size = 1024 * 1024;

	for (size_t shape = 0; shape <= ELEMENTSOF(pieces); shape++) {
		_cleanup_free_ char *in = malloc(size), *out = NULL, *all = NULL;
		size_t n = 0, k = 0;
		struct timespec a, b;

		assert_non_null(in);
		while (n < size) { /* one piece over and over, then all of them in turn */
			const char *p = pieces[shape < ELEMENTSOF(pieces) ? shape
									  : k++ % ELEMENTSOF(pieces)];
			size_t l = MIN(strlen(p), size - n);

			memcpy(in + n, p, l);
			n += l;
		}
		clock_gettime(CLOCK_MONOTONIC, &a);
		out = mime_decode_header(in, size, 1024);
		all = mime_decode_header(in, size, SIZE_MAX);
		clock_gettime(CLOCK_MONOTONIC, &b);
		assert_non_null(out);
		assert_non_null(all);
		assert_safe_utf8(out, 1024);
		assert_safe_utf8(all, SIZE_MAX);
		if ((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 > 2000)
			fail_msg("shape %zu took too long", shape);
	}
}

struct header_case {
	const char *name;
	int r;
	const char *value;
};

static void test_header_get(void **state)
{
	static const char block[] = "Return-Path: <bounce@example.com>\r\n"
				    "X-Folded: one\r\n"
				    " Subject: not a field\r\n"
				    "Subject: Hello\r\n"
				    " world\r\n"
				    "\tagain\r\n"
				    "subject: second\r\n"
				    "From : =?utf-8?q?J=C3=B6rg?= <j@example.com>\n"
				    "Empty:\r\n"
				    "Spaces:    padded   \r\n"
				    "Nul: a\0b\r\n"
				    "garbage line without colon\r\n"
				    "To: after@garbage\r\n"
				    "\r\n"
				    "Body: not a header\r\n";
	static const struct header_case cases[] = {
		{ "Subject", 0, "Hello world\tagain" },
		{ "SUBJECT", 0, "Hello world\tagain" },
		{ "x-folded", 0, "one Subject: not a field" },
		{ "From", 0, "=?utf-8?q?J=C3=B6rg?= <j@example.com>" },
		{ "Empty", 0, "" },
		{ "Spaces", 0, "padded" },
		{ "Nul", 0, "a b" },
		{ "To", 0, "after@garbage" },
		{ "Return-Path", 0, "<bounce@example.com>" },
		{ "Subj", -ENOENT, NULL },
		{ "Body", -ENOENT, NULL },
		{ "Cc", -ENOENT, NULL },
		{ "", -EINVAL, NULL },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *v = NULL;
		int r = mime_header_get(block, sizeof(block) - 1, cases[i].name, &v);

		if (r != cases[i].r)
			fail_msg("%s: expected %d, got %d", cases[i].name, cases[i].r, r);
		if (cases[i].value)
			assert_string_equal(v, cases[i].value);
		else
			assert_null(v);
	}
}

static void test_header_get_edges(void **state)
{
	_cleanup_free_ char *a = NULL, *b = NULL;
	char *none = NULL;

	/* no final line break, and a cut inside the block: never read past len */
	assert_int_equal(mime_header_get("Subject: x", 10, "subject", &a), 0);
	assert_string_equal(a, "x");
	assert_int_equal(mime_header_get("Subject: xyz", 10, "Subject", &b), 0);
	assert_string_equal(b, "x");
	assert_int_equal(mime_header_get("Subject", 7, "Subject", &none), -ENOENT);
	assert_int_equal(mime_header_get("", 0, "Subject", &none), -ENOENT);
	assert_int_equal(mime_header_get(NULL, 0, "Subject", &none), -ENOENT);
	assert_null(none);
}

struct address_case {
	const char *in;
	int n;
	const char *pairs[4][2]; /* name (NULL: none), address */
};

static const struct address_case address_cases[] = {
	{ "\"John Doe\" <john@example.com>", 1, { { "John Doe", "john@example.com" } } },
	{ "John Doe <john@example.com>", 1, { { "John Doe", "john@example.com" } } },
	{ "john@example.com", 1, { { NULL, "john@example.com" } } },
	{ "john@example.com (John Doe)", 1, { { "John Doe", "john@example.com" } } },
	{ "<john@example.com>", 1, { { NULL, "john@example.com" } } },
	{ "\"Doe, John\" <j@x.org>, b@y.org",
	  2,
	  { { "Doe, John", "j@x.org" }, { NULL, "b@y.org" } } },
	{ "undisclosed-recipients:;", 0, {} },
	{ "undisclosed-recipients: ;", 0, {} },
	{ "Team: a@b.c, \"C D\" <c@d.e>;, z@z.z",
	  3,
	  { { NULL, "a@b.c" }, { "C D", "c@d.e" }, { NULL, "z@z.z" } } },
	{ "=?utf-8?q?J=C3=B6rg?= <j@x>", 1, { { "Jörg", "j@x" } } },
	{ "\"=?utf-8?b?SsO2cmc=?=\" <j@x>", 1, { { "Jörg", "j@x" } } },
	{ "=?utf-8?q?Doe,_John?= <j@x>", 1, { { "Doe, John", "j@x" } } },
	{ "=?utf-8?q?J=C3=B6?= =?utf-8?q?rg?= Smith <j@x>", 1, { { "Jörg Smith", "j@x" } } },
	{ "\"a \\\"quoted\\\" name\" <q@x>", 1, { { "a \"quoted\" name", "q@x" } } },
	{ "Name (comment, with comma) <a@b>", 1, { { "Name", "a@b" } } },
	{ "a@b (x (nested, y) \\) z)", 1, { { "x (nested, y) ) z", "a@b" } } },
	{ "<@relay.example,@other:a@b>", 1, { { NULL, "a@b" } } },
	{ "John Smith john@example.com", 1, { { "John Smith", "john@example.com" } } },
	{ "\"john smith\"@example.com", 1, { { NULL, "\"johnsmith\"@example.com" } } },
	{ "John Smith", 1, { { "John Smith", "" } } },
	{ "Mailer <>", 1, { { "Mailer", "" } } },
	{ "root", 1, { { NULL, "root" } } },
	{ "<>, ,,, ;; (only a comment)", 0, {} },
	{ "", 0, {} },
	{ "Jos\xe9 <j@x>", 1, { { "José", "j@x" } } },
	{ "<j\u00f6rg@ex\u00e4mple.de>", 1, { { NULL, "jörg@exämple.de" } } },
	{ "\"Evil\r\n\x1b[2J\u202e\" <a\r\n @b\x01>", 1, { { "Evil [2J", "a@b" } } },
	{ "A <a@x> <b@y>, B <b@y>", 2, { { "A", "a@x" }, { "B", "b@y" } } },
	{ "\"unterminated <a@b>", 1, { { "unterminated <a@b>", "" } } },
	{ "\"Just A Name\"", 1, { { "Just A Name", "" } } },
	{ "Unclosed <a@b", 1, { { "Unclosed", "a@b" } } },
	{ "a@b, c@d\r\n\t, e@f", 3, { { NULL, "a@b" }, { NULL, "c@d" }, { NULL, "e@f" } } },
	{ "G1: a@a;G2: \"B\" <b@b>;", 2, { { NULL, "a@a" }, { "B", "b@b" } } },
	{ "x@y >)", 1, { { NULL, "x@y" } } },
};

static void check_addresses(size_t i, const struct address_case *c, int r,
			    const struct mime_address *a, size_t n)
{
	if (r != c->n || (size_t)r != n)
		fail_msg("case %zu \"%s\": expected %d entries, got %d", i, c->in, c->n, r);
	for (size_t k = 0; k < n; k++) {
		if (!streq_ptr(a[k].name, c->pairs[k][0]) || !streq(a[k].address, c->pairs[k][1]))
			fail_msg("case %zu \"%s\" entry %zu: expected (%s, %s), got (%s, %s)", i,
				 c->in, k, strna(c->pairs[k][0]), c->pairs[k][1], strna(a[k].name),
				 a[k].address);
		if (a[k].name)
			assert_safe_utf8(a[k].name, MIME_NAME_MAX);
		assert_safe_utf8(a[k].address, MIME_ADDRESS_MAX);
		assert_null(strchr(a[k].address, ' '));
	}
}

static void test_address_list(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(address_cases); i++) {
		const struct address_case *c = &address_cases[i];
		struct mime_address *a = (void *)1;
		size_t n = 99;
		int r = mime_parse_address_list(c->in, strlen(c->in), 10, &a, &n);

		check_addresses(i, c, r, a, n);
		if (n == 0)
			assert_null(a);
		a = mime_address_list_free(a, n);
		assert_null(a);
	}
}

static void test_address_list_bounds(void **state)
{
	struct mime_address *a = NULL;
	size_t n = 0;
	_cleanup_free_ char *big = NULL;

	assert_int_equal(mime_parse_address_list("a@a, b@b, c@c", 13, 2, &a, &n), 2);
	assert_int_equal(n, 2);
	assert_string_equal(a[1].address, "b@b");
	a = mime_address_list_free(a, n);
	assert_int_equal(mime_parse_address_list("a@a", 3, 0, &a, &n), 0);
	assert_null(a);
	assert_int_equal(mime_parse_address_list(NULL, 0, 5, &a, &n), 0);

	/* an overlong name and address are cut, not refused */
	big = malloc(4001);
	assert_non_null(big);
	memset(big, 'x', 4000);
	big[0] = '<';
	big[2000] = '@';
	big[3999] = '>';
	big[4000] = '\0';
	assert_int_equal(mime_parse_address_list(big, 4000, 5, &a, &n), 1);
	assert_true(strlen(a[0].address) <= MIME_ADDRESS_MAX);
	assert_non_null(strstr(a[0].address, "…"));
	a = mime_address_list_free(a, n);
	assert_null(mime_address_list_free(NULL, 3));
}

struct date_case {
	const char *in;
	int r;
	long long t;
};

static void test_rfc5322_date(void **state)
{
	static const struct date_case cases[] = {
		{ "Tue, 1 Jul 2003 10:52:37 +0200", 0, 1057049557 },
		{ "1 Jul 2003 10:52:37 +0200", 0, 1057049557 },
		{ "  Tue ,  01 Jul 2003 10:52:37 +0200", 0, 1057049557 },
		{ "Tuesday, 1 July 2003 10:52:37 +0200", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 10:52:37 +0200 (CEST)", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 10:52:37 +0200 trailing words", 0, 1057049557 },
		{ "(comment) Tue, 1 (x) Jul 2003 10:52:37 +0200", 0, 1057049557 },
		{ "1-Jul-2003 10:52:37 +0200", 0, 1057049557 },
		{ "tue, 1 jul 2003 10:52:37 +0200", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 10:52 +0200", 0, 1057049557 - 37 },
		{ "Tue, 1 Jul 2003 8:52:37 +0000", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 08:52:37 GMT", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 08:52:37 UT", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 08:52:37 Z", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 08:52:37 -0000", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 08:52:37", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 08:52:37 CEST", 0, 1057049557 }, /* unknown → -0000 */
		{ "Tue, 1 Jul 2003 08:52:37 A", 0, 1057049557 },    /* military → -0000 */
		{ "Tue, 1 Jul 2003 03:52:37 EST", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 04:52:37 EDT", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 02:52:37 CST", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 01:52:37 PDT", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 00:52:37 PST", 0, 1057049557 },
		{ "Tue, 1 Jul 2003 01:52:37 MST", 0, 1057049557 },
		{ "Wed, 2 Jul 2003 08:22:37 +2330", 0, 1057049557 },
		{ "1 Jul 03 08:52:37 +0000", 0, 1057049557 },
		{ "1 Jul 103 08:52:37 +0000", 0, 1057049557 },
		{ "1 Jul 99 10:52:37 +0000", 0, 930826357 },
		{ "29 Feb 2004 00:00:00 +0000", 0, 1078012800 },
		{ "28 Feb 2004 23:59:60 +0000", 0, 1078012800 }, /* leap second */
		{ "22 Nov 2026 12:03:00 +0000", 0, 1795348980 },
		{ "1 Jan 1970 00:00:00 +0000", 0, 0 },
		{ "31 Dec 1969 23:59:59 +0000", 0, -1 },
		{ "", -EINVAL, 0 },
		{ "garbage", -EINVAL, 0 },
		{ "Tue,", -EINVAL, 0 },
		{ "1 Jul 2003", -EINVAL, 0 },
		{ "32 Jul 2003 10:00 +0000", -EINVAL, 0 },
		{ "29 Feb 2003 10:00 +0000", -EINVAL, 0 },
		{ "31 Apr 2003 10:00 +0000", -EINVAL, 0 },
		{ "0 Jul 2003 10:00 +0000", -EINVAL, 0 },
		{ "1 Foo 2003 10:00 +0000", -EINVAL, 0 },
		{ "1 Jul 2003 24:00 +0000", -EINVAL, 0 },
		{ "1 Jul 2003 10:60 +0000", -EINVAL, 0 },
		{ "1 Jul 2003 10:00:61 +0000", -EINVAL, 0 },
		{ "1 Jul 2003 10:5 +0000", -EINVAL, 0 },
		{ "1 Jul 2003 10:00 +02", -EINVAL, 0 },
		{ "1 Jul 2003 10:00 +0260", -EINVAL, 0 },
		{ "1 Jul 1800 10:00 +0000", -EINVAL, 0 },
		{ "1 Jul 20031 10:00 +0000", -EINVAL, 0 },
		{ "123 Jul 2003 10:00 +0000", -EINVAL, 0 },
		{ "1 Jul 2003 100:00 +0000", -EINVAL, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		time_t t = 12345;
		int r = mime_parse_rfc5322_date(cases[i].in, &t);

		if (r != cases[i].r)
			fail_msg("\"%s\": expected %d, got %d", cases[i].in, cases[i].r, r);
		if (r == 0 && (long long)t != cases[i].t)
			fail_msg("\"%s\": expected %lld, got %lld", cases[i].in, cases[i].t,
				 (long long)t);
		if (r < 0)
			assert_int_equal(t, 12345); /* ret written only on success */
	}
}

static void test_internaldate(void **state)
{
	static const struct date_case cases[] = {
		{ "17-Jul-1996 02:44:25 -0700", 0, 837596665 },
		{ "\"17-Jul-1996 02:44:25 -0700\"", 0, 837596665 },
		{ "17-Jul-1996 09:44:25 +0000", 0, 837596665 },
		{ " 1-Jul-2003 10:52:37 +0200", 0, 1057049557 },
		{ "01-jul-2003 10:52:37 +0200", 0, 1057049557 },
		{ "17-Jul-1996 02:44:25 -0700 ", 0, 837596665 },
		{ "17-Jul-96 02:44:25 -0700", -EINVAL, 0 },
		{ "17-Jul-1996 02:44 -0700", -EINVAL, 0 },
		{ "17 Jul 1996 02:44:25 -0700", -EINVAL, 0 },
		{ "17-Jul-1996 02:44:25", -EINVAL, 0 },
		{ "17-Jul-1996 02:44:25 GMT", -EINVAL, 0 },
		{ "17-Jul-1996 02:44:25 -0700 x", -EINVAL, 0 },
		{ "\"17-Jul-1996 02:44:25 -0700", -EINVAL, 0 },
		{ "30-Feb-1996 02:44:25 -0700", -EINVAL, 0 },
		{ "", -EINVAL, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		time_t t = 12345;
		int r = mime_parse_internaldate(cases[i].in, &t);

		if (r != cases[i].r)
			fail_msg("\"%s\": expected %d, got %d", cases[i].in, cases[i].r, r);
		if (r == 0 && (long long)t != cases[i].t)
			fail_msg("\"%s\": expected %lld, got %lld", cases[i].in, cases[i].t,
				 (long long)t);
		if (r < 0)
			assert_int_equal(t, 12345);
	}
	assert_int_equal(mime_parse_internaldate(NULL, &(time_t){ 0 }), -EINVAL);
	assert_int_equal(mime_parse_rfc5322_date(NULL, &(time_t){ 0 }), -EINVAL);
}

static void test_format_rfc3339(void **state)
{
	char buf[32];

	mime_format_rfc3339(0, buf);
	assert_string_equal(buf, "1970-01-01T00:00:00Z");
	mime_format_rfc3339(1795348980, buf);
	assert_string_equal(buf, "2026-11-22T12:03:00Z");
	mime_format_rfc3339(-1, buf);
	assert_string_equal(buf, "1969-12-31T23:59:59Z");
	mime_format_rfc3339((time_t)INT64_MAX, buf);
	assert_string_equal(buf, "9999-12-31T23:59:59Z");
	mime_format_rfc3339((time_t)INT64_MIN, buf);
	assert_string_equal(buf, "0000-01-01T00:00:00Z");
}

/* Every prefix of a valid input is handled, bounded, and never reads past its length. */
static void test_prefixes(void **state)
{
	static const char in[] = "\"Doe, J\" <j@x>, =?UTF-8?B?w6l0w6k=?= =?utf-8?q?a?= "
				 "(c) Team: a@b;\r\n\tSubject: x";

	for (size_t n = 0; n <= sizeof(in) - 1; n++) {
		_cleanup_free_ char *copy = malloc(n ? n : 1), *d = NULL, *v = NULL;
		struct mime_address *a = NULL;
		size_t k = 0;

		assert_non_null(copy);
		memcpy(copy, in, n); /* exact size: ASan catches any over-read */
		d = mime_decode_header(copy, n, 64);
		assert_non_null(d);
		assert_safe_utf8(d, 64);
		assert_true(mime_parse_address_list(copy, n, 8, &a, &k) >= 0);
		mime_address_list_free(a, k);
		(void)mime_header_get(copy, n, "Subject", &v);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_header),
		cmocka_unit_test(test_decode_header_zero_bound),
		cmocka_unit_test(test_sanitize_utf8),
		cmocka_unit_test(test_decode_huge),
		cmocka_unit_test(test_header_get),
		cmocka_unit_test(test_header_get_edges),
		cmocka_unit_test(test_address_list),
		cmocka_unit_test(test_address_list_bounds),
		cmocka_unit_test(test_rfc5322_date),
		cmocka_unit_test(test_internaldate),
		cmocka_unit_test(test_format_rfc3339),
		cmocka_unit_test(test_prefixes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
