#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "imap/command.h"
#include "imap/parse.h"
#include "util.h"

#define LITPLUS IMAP_CAP(IMAP_CAP_LITERAL_PLUS)
#define LITMINUS IMAP_CAP(IMAP_CAP_LITERAL_MINUS)

static void expect_cmd(const struct imap_cmd *c, const char *want)
{
	size_t n;
	const char *d = imap_cmd_data(c, &n);

	if (n != strlen(want) || memcmp(d, want, n) != 0)
		fail_msg("got  \"%.*s\"\nwant \"%s\"", (int)n, d, want);
}

static void expect_redacted(const struct imap_cmd *c, const char *want)
{
	_cleanup_free_ char *s = imap_cmd_redacted(c);
	assert_non_null(s);
	assert_string_equal(s, want);
}

/* Decode the base64 word of a line (after the last space, before CRLF). */
static size_t b64_word(const struct imap_cmd *c, unsigned char *out)
{
	const char *start = strrchr(c->buf, ' ');
	char word[1024];
	size_t n;
	int k;

	start = start ? start + 1 : c->buf;
	n = strcspn(start, "\r");
	assert_true(n < sizeof(word));
	memcpy(word, start, n);
	word[n] = '\0';
	k = EVP_DecodeBlock(out, (unsigned char *)word, (int)n);
	assert_true(k >= 0);
	while (n > 0 && word[n - 1] == '=') {
		k--;
		n--;
	}
	return (size_t)k;
}

static void test_simple(void **state)
{
	struct imap_cmd c;

	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_capability(&c, "a1"), 0);
	expect_cmd(&c, "a1 CAPABILITY\r\n");
	assert_int_equal(imap_cmd_n_segments(&c), 1);
	assert_int_equal(imap_cmd_starttls(&c, "a2"), 0);
	expect_cmd(&c, "a2 STARTTLS\r\n");
	assert_int_equal(imap_cmd_idle(&c, "a3"), 0);
	expect_cmd(&c, "a3 IDLE\r\n");
	assert_int_equal(imap_cmd_idle_done(&c), 0);
	expect_cmd(&c, "DONE\r\n");
	assert_int_equal(imap_cmd_noop(&c, "a4"), 0);
	expect_cmd(&c, "a4 NOOP\r\n");
	assert_int_equal(imap_cmd_logout(&c, "a5"), 0);
	expect_cmd(&c, "a5 LOGOUT\r\n");
	assert_int_equal(imap_cmd_enable(&c, "a6", IMAP_CAP(IMAP_CAP_CONDSTORE)), 0);
	expect_cmd(&c, "a6 ENABLE CONDSTORE\r\n");
	assert_int_equal(imap_cmd_enable(&c, "a6", IMAP_CAP(IMAP_CAP_QRESYNC) |
							    IMAP_CAP(IMAP_CAP_CONDSTORE)),
			 0);
	expect_cmd(&c, "a6 ENABLE CONDSTORE QRESYNC\r\n");
	assert_int_equal(imap_cmd_enable(&c, "a6", 0), -EINVAL);
	assert_int_equal(imap_cmd_examine(&c, "a7", "inbox", false), 0);
	expect_cmd(&c, "a7 EXAMINE INBOX\r\n");
	assert_int_equal(imap_cmd_examine(&c, "a7", "Lists/urgent", true), 0);
	expect_cmd(&c, "a7 EXAMINE Lists/urgent (CONDSTORE)\r\n");
	assert_int_equal(imap_cmd_examine(&c, "a7", "Sent Items", false), 0);
	expect_cmd(&c, "a7 EXAMINE \"Sent Items\"\r\n");
	assert_int_equal(imap_cmd_examine(&c, "a7", "Entwürfe", false), 0);
	expect_cmd(&c, "a7 EXAMINE Entw&APw-rfe\r\n");
	assert_int_equal(imap_cmd_examine(&c, "a7", "Q&A", false), 0);
	expect_cmd(&c, "a7 EXAMINE Q&-A\r\n");
	assert_int_equal(imap_cmd_uid_fetch(&c, "a8", 42, IMAP_FETCH_NEW_ITEMS), 0);
	expect_cmd(&c, "a8 UID FETCH 42:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)\r\n");
	assert_int_equal(imap_cmd_uid_fetch(&c, "a8", 0, IMAP_FETCH_NEW_ITEMS), -EINVAL);
	assert_int_equal(imap_cmd_status(&c, "a9", "INBOX"), 0);
	expect_cmd(&c, "a9 STATUS INBOX (UIDNEXT UIDVALIDITY MESSAGES)\r\n");
	assert_int_equal(imap_cmd_list_all(&c, "a10"), 0);
	expect_cmd(&c, "a10 LIST \"\" \"*\"\r\n");
	assert_int_equal(imap_cmd_id(&c, "a11", "0.1.0"), 0);
	expect_cmd(&c, "a11 ID (\"name\" \"imapidled\" \"version\" \"0.1.0\")\r\n");
	assert_int_equal(imap_cmd_uid_store_seen(&c, "a12", 4294967295U), 0);
	expect_cmd(&c, "a12 UID STORE 4294967295 +FLAGS.SILENT (\\Seen)\r\n");
	assert_int_equal(imap_cmd_uid_store_seen(&c, "a12", 0), -EINVAL);
	imap_cmd_done(&c);
	imap_cmd_done(&c); /* idempotent */
}

static void test_begin_validates(void **state)
{
	struct imap_cmd c;

	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_begin(&c, "a 1", "NOOP"), -EINVAL);
	assert_int_equal(imap_cmd_begin(&c, "a+1", "NOOP"), -EINVAL);
	assert_int_equal(imap_cmd_begin(&c, "", "NOOP"), -EINVAL);
	assert_int_equal(imap_cmd_begin(&c, "a1", "NO\r\nOP"), -EINVAL);
	assert_int_equal(imap_cmd_begin(&c, "a1", "UID  FETCH"), -EINVAL);
	assert_int_equal(imap_cmd_begin(&c, "a1", "UID "), -EINVAL);
	assert_int_equal(imap_cmd_begin(&c, "a1", "X"), 0);
	assert_int_equal(imap_cmd_atom(&c, "a b"), -EINVAL);
	assert_int_equal(imap_cmd_atom(&c, "a(b"), -EINVAL);
	assert_int_equal(imap_cmd_raw(&c, "x\ny"), -EINVAL);
	assert_int_equal(imap_cmd_number(&c, UINT64_MAX), 0);
	assert_int_equal(imap_cmd_end(&c), 0);
	expect_cmd(&c, "a1 X 18446744073709551615\r\n");
	imap_cmd_done(&c);
}

static void test_quoting(void **state)
{
	struct imap_cmd c;
	char longs[IMAP_QUOTED_MAX + 2];

	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_begin(&c, "a1", "X"), 0);
	assert_int_equal(imap_cmd_astring(&c, "plain"), 0);
	assert_int_equal(imap_cmd_astring(&c, "two words"), 0);
	assert_int_equal(imap_cmd_astring(&c, "q\"b\\s"), 0);
	assert_int_equal(imap_cmd_astring(&c, ""), 0);
	assert_int_equal(imap_cmd_astring(&c, "nil"), 0);
	assert_int_equal(imap_cmd_astring(&c, "a%b*c]"), 0);
	assert_int_equal(imap_cmd_string(&c, "atom"), 0);
	assert_int_equal(imap_cmd_end(&c), 0);
	expect_cmd(&c, "a1 X plain \"two words\" \"q\\\"b\\\\s\" \"\" \"nil\" \"a%b*c]\" "
		       "\"atom\"\r\n");
	assert_int_equal(imap_cmd_n_segments(&c), 1);

	assert_int_equal(imap_cmd_astring(&c, "a\rb"), -EINVAL);
	assert_int_equal(imap_cmd_astring(&c, "a\nb"), -EINVAL);

	/* long → literal */
	memset(longs, 'x', sizeof(longs) - 1);
	longs[sizeof(longs) - 1] = '\0';
	assert_int_equal(imap_cmd_begin(&c, "a2", "X"), 0);
	assert_int_equal(imap_cmd_astring(&c, longs), 0);
	assert_int_equal(imap_cmd_end(&c), 0);
	assert_true(strncmp(c.buf, "a2 X {1025}\r\nxxx", 16) == 0);
	assert_int_equal(imap_cmd_n_segments(&c), 2);
	imap_cmd_done(&c);
}

static void test_literals(void **state)
{
	struct imap_cmd c;
	const char *seg;
	size_t n;

	/* synchronizing: two segments per literal boundary */
	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_login(&c, "a1", "jörg", "pässword"), 0);
	expect_cmd(&c, "a1 LOGIN {5}\r\njörg {9}\r\npässword\r\n");
	assert_int_equal(imap_cmd_n_segments(&c), 3);
	assert_int_equal(imap_cmd_segment(&c, 0, &seg, &n), 0);
	assert_int_equal(n, strlen("a1 LOGIN {5}\r\n"));
	assert_memory_equal(seg, "a1 LOGIN {5}\r\n", n);
	assert_int_equal(imap_cmd_segment(&c, 1, &seg, &n), 0);
	assert_memory_equal(seg, "jörg {9}\r\n", n);
	assert_int_equal(imap_cmd_segment(&c, 2, &seg, &n), 0);
	assert_memory_equal(seg, "pässword\r\n", n);
	assert_int_equal(imap_cmd_segment(&c, 3, &seg, &n), -ERANGE);
	expect_redacted(&c, "a1 LOGIN {5}\\r\\njörg {9}\\r\\n***");
	imap_cmd_done(&c);

	/* LITERAL+: non-synchronizing, one segment */
	imap_cmd_init(&c, LITPLUS);
	assert_int_equal(imap_cmd_login(&c, "a1", "jörg", "pässword"), 0);
	expect_cmd(&c, "a1 LOGIN {5+}\r\njörg {9+}\r\npässword\r\n");
	assert_int_equal(imap_cmd_n_segments(&c), 1);
	imap_cmd_done(&c);

	/* LITERAL-: only up to 4096 bytes */
	_cleanup_free_ char *big = malloc(5000);
	memset(big, 0xc3, 4998);
	for (size_t i = 1; i < 4998; i += 2)
		big[i] = (char)0xa4;
	big[4998] = '\0';
	imap_cmd_init(&c, LITMINUS);
	assert_int_equal(imap_cmd_begin(&c, "a1", "X"), 0);
	assert_int_equal(imap_cmd_astring(&c, "ä"), 0);
	assert_int_equal(imap_cmd_astring(&c, big), 0);
	assert_int_equal(imap_cmd_end(&c), 0);
	static const char head[] = "a1 X {2+}\r\nä {4998}\r\n";
	assert_true(strncmp(c.buf, head, strlen(head)) == 0);
	assert_int_equal(imap_cmd_n_segments(&c), 2);
	imap_cmd_done(&c);
}

static void test_login_redacted(void **state)
{
	struct imap_cmd c;

	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_login(&c, "a1", "me@example.com", "s3cr3t pw"), 0);
	expect_cmd(&c, "a1 LOGIN me@example.com \"s3cr3t pw\"\r\n");
	expect_redacted(&c, "a1 LOGIN me@example.com ***");
	assert_int_equal(imap_cmd_login(&c, "a2", "me", "hunter2"), 0);
	expect_redacted(&c, "a2 LOGIN me ***");
	assert_int_equal(imap_cmd_login(&c, "a3", "me\r\n", "x"), -EINVAL);
	assert_int_equal(imap_cmd_login(&c, "a3", "me", "x\ry"), -EINVAL);
	assert_int_equal(imap_cmd_login(&c, "a3", "me", "x\ny"), -EINVAL);
	assert_int_equal(imap_cmd_noop(&c, "a4"), 0);
	expect_redacted(&c, "a4 NOOP");
	imap_cmd_done(&c);
}

static void test_sasl_plain(void **state)
{
	struct imap_sasl_creds cr = { .user = "alice", .secret = "secret" };
	unsigned char raw[512];
	struct imap_cmd c;

	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_authenticate(&c, "a3", IMAP_SASL_PLAIN, &cr, true), 0);
	expect_cmd(&c, "a3 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
	assert_int_equal(b64_word(&c, raw), 13);
	assert_memory_equal(raw, "\0alice\0secret", 13);
	expect_redacted(&c, "a3 AUTHENTICATE PLAIN ***");

	assert_int_equal(imap_cmd_authenticate(&c, "a4", IMAP_SASL_PLAIN, &cr, false), 0);
	expect_cmd(&c, "a4 AUTHENTICATE PLAIN\r\n");
	assert_int_equal(imap_cmd_sasl_response(&c, IMAP_SASL_PLAIN, &cr), 0);
	expect_cmd(&c, "AGFsaWNlAHNlY3JldA==\r\n");
	expect_redacted(&c, "***");

	cr.secret = "a\nb";
	assert_int_equal(imap_cmd_authenticate(&c, "a5", IMAP_SASL_PLAIN, &cr, true), -EINVAL);
	assert_int_equal(imap_cmd_sasl_response(&c, IMAP_SASL_PLAIN, &cr), -EINVAL);
	cr.secret = NULL;
	assert_int_equal(imap_cmd_sasl_response(&c, IMAP_SASL_PLAIN, &cr), -EINVAL);
	assert_int_equal(imap_cmd_sasl_response(&c, IMAP_SASL_PLAIN, NULL), -EINVAL);
	assert_int_equal(imap_cmd_sasl_response(&c, _IMAP_SASL_MAX, &cr), -EINVAL);

	assert_int_equal(imap_cmd_sasl_cancel(&c), 0);
	expect_cmd(&c, "*\r\n");
	assert_int_equal(imap_cmd_sasl_empty(&c), 0);
	expect_cmd(&c, "\r\n");
	imap_cmd_done(&c);
}

static void test_sasl_xoauth2(void **state)
{
	struct imap_sasl_creds cr = { .user = "me@gmail.com", .secret = "ya29.fresh" };
	static const char want[] = "user=me@gmail.com\1auth=Bearer ya29.fresh\1\1";
	unsigned char raw[512];
	struct imap_cmd c;

	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_authenticate(&c, "a3", IMAP_SASL_XOAUTH2, &cr, true), 0);
	/* the exact line recorded in tests/unit/transcripts/gmail.txt */
	expect_cmd(&c, "a3 AUTHENTICATE XOAUTH2 "
		       "dXNlcj1tZUBnbWFpbC5jb20BYXV0aD1CZWFyZXIgeWEyOS5mcmVzaAEB\r\n");
	assert_int_equal(b64_word(&c, raw), strlen(want));
	assert_memory_equal(raw, want, strlen(want));
	expect_redacted(&c, "a3 AUTHENTICATE XOAUTH2 ***");
	cr.secret = "tok\1en";
	assert_int_equal(imap_cmd_sasl_response(&c, IMAP_SASL_XOAUTH2, &cr), -EINVAL);
	imap_cmd_done(&c);
}

static void test_sasl_oauthbearer(void **state)
{
	struct imap_sasl_creds cr = {
		.user = "a,b=c@example.com", .secret = "T0K", .host = "imap.example.com",
		.port = 993,
	};
	static const char want[] = "n,a=a=2Cb=3Dc@example.com,\1host=imap.example.com\1port=993\1"
				   "auth=Bearer T0K\1\1";
	static const char want_bare[] = "n,a=u,\1auth=Bearer T\1\1";
	unsigned char raw[512];
	struct imap_cmd c;

	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_sasl_response(&c, IMAP_SASL_OAUTHBEARER, &cr), 0);
	assert_int_equal(b64_word(&c, raw), strlen(want));
	assert_memory_equal(raw, want, strlen(want));
	expect_redacted(&c, "***");

	cr = (struct imap_sasl_creds){ .user = "u", .secret = "T" };
	assert_int_equal(imap_cmd_authenticate(&c, "a9", IMAP_SASL_OAUTHBEARER, &cr, true), 0);
	assert_true(strncmp(c.buf, "a9 AUTHENTICATE OAUTHBEARER ", 28) == 0);
	assert_int_equal(b64_word(&c, raw), strlen(want_bare));
	assert_memory_equal(raw, want_bare, strlen(want_bare));
	imap_cmd_done(&c);
}

static void test_tags(void **state)
{
	struct imap_tagger t;
	char buf[IMAP_TAG_MAX];
	uint32_t n;

	imap_tagger_init(&t);
	assert_string_equal(imap_tagger_next(&t, buf), "a1");
	assert_string_equal(imap_tagger_next(&t, buf), "a2");
	assert_int_equal(imap_tag_parse("a2", &n), 0);
	assert_int_equal(n, 2);
	t.next = UINT32_MAX;
	assert_string_equal(imap_tagger_next(&t, buf), "a4294967295");
	assert_string_equal(imap_tagger_next(&t, buf), "a1");
	assert_int_equal(imap_tag_parse("a4294967295", &n), 0);
	assert_true(n == UINT32_MAX);
	assert_int_equal(imap_tag_parse("a4294967296", &n), -EINVAL);
	assert_int_equal(imap_tag_parse("a0", &n), -EINVAL);
	assert_int_equal(imap_tag_parse("a01", &n), -EINVAL);
	assert_int_equal(imap_tag_parse("A1", &n), -EINVAL);
	assert_int_equal(imap_tag_parse("a", &n), -EINVAL);
	assert_int_equal(imap_tag_parse("a1x", &n), -EINVAL);
	assert_int_equal(imap_tag_parse("*", &n), -EINVAL);
	assert_int_equal(imap_tag_parse(NULL, &n), -EINVAL);
}

static void mutf7_pair(const char *utf8, const char *mutf7)
{
	_cleanup_free_ char *e = NULL, *d = NULL;

	assert_int_equal(imap_mutf7_encode(utf8, &e), 0);
	assert_string_equal(e, mutf7);
	assert_int_equal(imap_mutf7_decode(mutf7, &d), 0);
	assert_string_equal(d, utf8);
}

static void test_mutf7(void **state)
{
	char *s;

	mutf7_pair("Entwürfe", "Entw&APw-rfe");
	mutf7_pair("台北", "&U,BTFw-");
	mutf7_pair("&", "&-");
	mutf7_pair("Q&A/Ünterordner", "Q&-A/&ANw-nterordner");
	mutf7_pair("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
	mutf7_pair("Sent Items", "Sent Items");
	mutf7_pair("😀", "&2D3eAA-");
	mutf7_pair("", "");
	mutf7_pair("Gelöschte Elemente", "Gel&APY-schte Elemente");

	assert_int_equal(imap_mutf7_encode("iNbOx", &s), 0);
	assert_string_equal(s, "INBOX");
	free(s);
	assert_int_equal(imap_mutf7_encode("inbox/Sub", &s), 0);
	assert_string_equal(s, "inbox/Sub");
	free(s);

	assert_int_equal(imap_mutf7_encode("\xc3", &s), -EINVAL);         /* truncated */
	assert_int_equal(imap_mutf7_encode("\xc0\xaf", &s), -EINVAL);     /* overlong */
	assert_int_equal(imap_mutf7_encode("\xed\xa0\x80", &s), -EINVAL); /* surrogate */
	assert_int_equal(imap_mutf7_encode("\xf4\x90\x80\x80", &s), -EINVAL);
	assert_int_equal(imap_mutf7_decode("&U,BTFw", &s), -EINVAL);   /* unterminated */
	assert_int_equal(imap_mutf7_decode("&U/BTFw-", &s), -EINVAL);  /* '/' is not modified */
	assert_int_equal(imap_mutf7_decode("&AGE-", &s), -EINVAL);     /* encoded ASCII 'a' */
	assert_int_equal(imap_mutf7_decode("&2D0-", &s), -EINVAL);     /* lone surrogate */
	assert_int_equal(imap_mutf7_decode("&A-", &s), -EINVAL);       /* 6 bits */
	assert_int_equal(imap_mutf7_decode("caf\xc3\xa9", &s), -EINVAL); /* raw 8-bit */

	struct imap_cmd c;
	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_begin(&c, "a1", "X"), 0);
	assert_int_equal(imap_cmd_mailbox(&c, "\xff"), -EINVAL);
	imap_cmd_done(&c);
}

static void test_bounds(void **state)
{
	struct imap_cmd c;
	_cleanup_free_ char *big = malloc(IMAP_CMD_MAX + 1);

	memset(big, 'x', IMAP_CMD_MAX);
	big[IMAP_CMD_MAX] = '\0';
	imap_cmd_init(&c, 0);
	assert_int_equal(imap_cmd_begin(&c, "a1", "X"), 0);
	assert_int_equal(imap_cmd_astring(&c, big), -ENOBUFS);
	assert_int_equal(imap_cmd_begin(&c, "a1", "X"), 0); /* incomplete after an error */
	for (int i = 0; i < IMAP_CMD_MAX_LITERALS; i++)
		assert_int_equal(imap_cmd_astring(&c, "ü"), 0);
	assert_int_equal(imap_cmd_astring(&c, "ü"), -ENOBUFS);
	imap_cmd_done(&c);
}

/* What we send, the parser's own grammar must read back (a quoted string is a quoted
 * string on both sides). */
static void test_round_trip_through_parser(void **state)
{
	static const char *const strs[] = { "a b", "q\"uote", "back\\slash", "", "NIL" };
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;
	struct imap_cmd c;

	imap_cmd_init(&c, LITPLUS);
	assert_int_equal(imap_cmd_begin(&c, "*", "X"), -EINVAL);
	assert_int_equal(imap_cmd_begin(&c, "a1", "OK"), 0);
	for (size_t i = 0; i < ELEMENTSOF(strs); i++)
		assert_int_equal(imap_cmd_astring(&c, strs[i]), 0);
	assert_int_equal(imap_cmd_end(&c), 0);
	/* "* X ..." instead of "a1 OK ...": reuse the bytes as untagged data */
	char line[256];
	snprintf(line, sizeof(line), "* X%s", c.buf + strlen("a1 OK"));
	assert_int_equal(imap_parser_feed(p, line, strlen(line)), 0);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_int_equal(r->n_args, ELEMENTSOF(strs));
	for (size_t i = 0; i < ELEMENTSOF(strs); i++)
		assert_string_equal(r->args[i].str, strs[i]);
	imap_cmd_done(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),
		cmocka_unit_test(test_begin_validates),
		cmocka_unit_test(test_quoting),
		cmocka_unit_test(test_literals),
		cmocka_unit_test(test_login_redacted),
		cmocka_unit_test(test_sasl_plain),
		cmocka_unit_test(test_sasl_xoauth2),
		cmocka_unit_test(test_sasl_oauthbearer),
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_mutf7),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_round_trip_through_parser),
	};
	return cmocka_run_group_tests_name("imap-command", tests, NULL, NULL);
}
