#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "imap/fetch.h"
#include "imap/parse.h"
#include "util.h"

/* ---------------------------------------------------------------- helpers */

static void dump_value(FILE *f, const struct imap_value *v)
{
	switch (v->type) {
	case IMAP_VAL_ATOM:
		fprintf(f, "A:%s", v->str);
		break;
	case IMAP_VAL_NUMBER:
		fprintf(f, "N:%llu", (unsigned long long)v->num);
		break;
	case IMAP_VAL_STRING:
		fprintf(f, "S%s%zu:", v->literal ? "L" : "", v->len);
		fwrite(v->str, 1, v->len, f);
		break;
	case IMAP_VAL_NIL:
		fputs("NIL", f);
		break;
	case IMAP_VAL_LIST:
		fputc('(', f);
		for (size_t i = 0; i < v->n_items; i++) {
			if (i)
				fputc(' ', f);
			dump_value(f, &v->items[i]);
		}
		fputc(')', f);
		break;
	}
}

static void dump_values(FILE *f, const struct imap_value *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		fputc(' ', f);
		dump_value(f, &v[i]);
	}
}

static void dump_response(FILE *f, const struct imap_response *r)
{
	static const char *const kinds[] = { "TAGGED", "UNTAGGED", "CONT" };

	fprintf(f, "%s tag=%s status=%s", kinds[r->kind], strna(r->tag),
		imap_status_to_string(r->status));
	if (r->has_number)
		fprintf(f, " number=%u", r->number);
	if (r->name) {
		fprintf(f, " name=%s args=[", r->name);
		dump_values(f, r->args, r->n_args);
		fputs(" ]", f);
	}
	if (r->code) {
		fprintf(f, " code=%s%s [", r->code, r->code_args_raw ? "(raw)" : "");
		dump_values(f, r->code_args, r->n_code_args);
		fputs(" ]", f);
	}
	if (r->text)
		fprintf(f, " text=<%s>", r->text);
	fputc('\n', f);
}

/* Feed data cut at the given offsets; after each feed pull every complete response.
 * Returns the dump of all responses; *ret_err gets the first error, 1 if bytes were left
 * over, or 0. */
static char *parse_chunks(const char *data, size_t len, const size_t *cuts, size_t n_cuts,
			  const struct imap_limits *lim, int *ret_err)
{
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(lim);
	char *out = NULL;
	size_t out_len = 0, pos = 0;
	FILE *f = open_memstream(&out, &out_len);
	int r = 0;

	assert_non_null(p);
	assert_non_null(f);
	for (size_t i = 0; i <= n_cuts && r >= 0; i++) {
		size_t end = i < n_cuts ? cuts[i] : len;
		const struct imap_response *resp;

		r = imap_parser_feed(p, data + pos, end - pos);
		pos = end;
		while (r >= 0 && (r = imap_parser_next(p, &resp)) > 0)
			dump_response(f, resp);
	}
	if (r >= 0 && imap_parser_buffered(p) > 0)
		r = 1; /* incomplete */
	fclose(f);
	*ret_err = r;
	return out;
}

static char *parse_whole(const char *data, size_t len, int *ret_err)
{
	return parse_chunks(data, len, NULL, 0, NULL, ret_err);
}

static char *parse_ok(const char *data)
{
	int err;
	char *s = parse_whole(data, strlen(data), &err);

	if (err < 0)
		fail_msg("parse of \"%s\" failed: %d", data, err);
	return s;
}

/* Parse exactly one response from a string; the parser lives in *pp for inspection. */
static const struct imap_response *parse_one(struct imap_parser **pp, const char *data)
{
	const struct imap_response *r = NULL;
	int k;

	*pp = imap_parser_new(NULL);
	assert_non_null(*pp);
	assert_int_equal(imap_parser_feed(*pp, data, strlen(data)), 0);
	k = imap_parser_next(*pp, &r);
	if (k != 1)
		fail_msg("expected a response from \"%s\", got %d (%s)", data, k,
			 strna(imap_parser_error(*pp)));
	return r;
}

/* Error from feeding data whole, and the message. */
static int parse_err(const char *data, size_t len, const struct imap_limits *lim)
{
	int err;
	free(parse_chunks(data, len, NULL, 0, lim, &err));
	return err;
}

static char *load_transcript(const char *name, size_t *ret_len)
{
	char path[1024], line[8192];
	const char *slash = strrchr(__FILE__, '/');
	char *out = NULL;
	size_t out_len = 0;
	FILE *in, *f;

	snprintf(path, sizeof(path), "%.*s/transcripts/%s",
		 slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".", name);
	in = fopen(path, "re");
	if (!in)
		fail_msg("cannot open %s", path);
	f = open_memstream(&out, &out_len);
	while (fgets(line, sizeof(line), in)) {
		size_t n = strlen(line);
		if (n && line[n - 1] == '\n')
			line[--n] = '\0';
		if (strncmp(line, "S:", 2) != 0)
			continue;
		fputs(line[2] == ' ' ? line + 3 : line + 2, f);
		fputs("\r\n", f);
	}
	fclose(in);
	fclose(f);
	*ret_len = out_len;
	return out;
}

static const char *const transcripts[] = {
	"dovecot-2.3-recorded.txt", /* a real session: record-dovecot.py */
	"dovecot-2.3.txt",
	"cyrus-3.txt",
	"gmail.txt",
	"outlook.txt",
};

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* ---------------------------------------------------------------- transcripts */

static void test_transcripts_every_split(void **state)
{
	for (size_t t = 0; t < ELEMENTSOF(transcripts); t++) {
		size_t len;
		_cleanup_free_ char *data = load_transcript(transcripts[t], &len);
		_cleanup_free_ char *whole = NULL, *bytes = NULL;
		_cleanup_free_ size_t *every = calloc(len, sizeof(size_t));
		int err;

		whole = parse_whole(data, len, &err);
		if (err < 0)
			fail_msg("%s: %d", transcripts[t], err);
		assert_true(count_lines(whole) > 20);

		/* (b) every split into two feeds */
		for (size_t cut = 1; cut < len; cut++) {
			_cleanup_free_ char *two = parse_chunks(data, len, &cut, 1, NULL, &err);
			assert_int_equal(err, 0);
			if (strcmp(two, whole) != 0)
				fail_msg("%s: split at %zu differs", transcripts[t], cut);
		}

		/* (c) one byte at a time */
		for (size_t i = 0; i + 1 < len; i++)
			every[i] = i + 1;
		bytes = parse_chunks(data, len, every, len - 1, NULL, &err);
		assert_int_equal(err, 0);
		assert_string_equal(bytes, whole);
	}
}

/* Each response: every proper prefix of it asks for more, never parses early. */
static void test_transcripts_no_early_parse(void **state)
{
	for (size_t t = 0; t < ELEMENTSOF(transcripts); t++) {
		size_t len, begin = 0;
		_cleanup_free_ char *data = load_transcript(transcripts[t], &len);
		_cleanup_(imap_parser_freep) struct imap_parser *all = imap_parser_new(NULL);
		const struct imap_response *r;

		assert_int_equal(imap_parser_feed(all, data, len), 0);
		while (imap_parser_next(all, &r) == 1) {
			size_t end = len - imap_parser_buffered(all);
			for (size_t k = begin; k < end; k++) {
				_cleanup_(imap_parser_freep) struct imap_parser *p =
					imap_parser_new(NULL);
				assert_int_equal(imap_parser_feed(p, data + begin, k - begin), 0);
				if (imap_parser_next(p, &r) != 0)
					fail_msg("%s: prefix %zu of response at %zu parsed early",
						 transcripts[t], k - begin, begin);
			}
			begin = end;
		}
		assert_int_equal(begin, len);
	}
}

static const struct imap_response *next_named(struct imap_parser *p, const char *name)
{
	const struct imap_response *r;

	while (imap_parser_next(p, &r) == 1) {
		if (streq_ptr(r->name, name))
			return r;
	}
	fail_msg("no %s response", name);
	return NULL;
}

static void test_transcript_dovecot(void **state)
{
	size_t len;
	_cleanup_free_ char *data = load_transcript("dovecot-2.3.txt", &len);
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;
	struct imap_fetch f;
	uint64_t caps;

	assert_int_equal(imap_parser_feed(p, data, len), 0);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_int_equal(r->kind, IMAP_RESP_UNTAGGED);
	assert_int_equal(r->status, IMAP_STATUS_OK);
	assert_string_equal(r->code, "CAPABILITY");
	assert_string_equal(r->text, "Dovecot (Debian) ready.");
	assert_int_equal(imap_capabilities_parse(r->code_args, r->n_code_args, &caps), 0);
	assert_true(caps & IMAP_CAP(IMAP_CAP_STARTTLS));
	assert_true(caps & IMAP_CAP(IMAP_CAP_LOGINDISABLED));
	assert_true(caps & IMAP_CAP(IMAP_CAP_LITERAL_PLUS));
	assert_false(caps & IMAP_CAP(IMAP_CAP_AUTH_PLAIN));

	/* STARTTLS: the OK is consumed alone, whatever follows stays buffered */
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_string_equal(r->tag, "a1");
	size_t after_ok = (size_t)(strstr(data, "a1 OK") - data) +
			  strlen("a1 OK Begin TLS negotiation now.\r\n");
	assert_int_equal(imap_parser_buffered(p), len - after_ok);

	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.seq, 4);
	assert_int_equal(f.uid, 4);
	assert_int_equal(f.modseq, 8);
	assert_int_equal(f.flags, IMAP_FLAG_RECENT);
	assert_int_equal(f.size, 2345);
	assert_string_equal(f.internaldate, "05-Mar-2024 10:15:02 +0100");
	assert_true(f.has_envelope);
	assert_string_equal(f.envelope.subject, "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_Berlin?=");
	assert_int_equal(f.envelope.from.n, 1);
	assert_string_equal(f.envelope.from.items[0].mailbox, "joerg");
	assert_string_equal(f.envelope.from.items[0].host, "example.de");
	assert_null(f.envelope.from.items[0].adl);
	assert_null(f.envelope.to.items[0].name);
	assert_int_equal(f.envelope.cc.n, 0);
	assert_null(f.envelope.in_reply_to);
	assert_string_equal(f.envelope.message_id, "<20240305091501.4711@example.de>");
	assert_non_null(f.header);
	assert_true(strncmp(f.header, "From: =?UTF-8?B?", 16) == 0);
	assert_int_equal(f.header[f.header_len - 1], '\n');
	assert_int_equal(f.header_len, strlen(f.header));
	imap_fetch_done(&f);
}

/* The recorded session: literals inside ENVELOPE (a quoted-looking subject and raw UTF-8),
 * group syntax in To, a BODY.PEEK[HEADER.FIELDS] literal, EXISTS while idling. */
static void test_transcript_dovecot_recorded(void **state)
{
	size_t len;
	_cleanup_free_ char *data = load_transcript("dovecot-2.3-recorded.txt", &len);
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;
	struct imap_fetch f;

	assert_int_equal(imap_parser_feed(p, data, len), 0);
	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.uid, 1);
	assert_string_equal(f.envelope.subject, "Plain ASCII subject");
	imap_fetch_done(&f);

	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.uid, 2);
	assert_string_equal(f.envelope.subject, "Quoted \"words\" and a \\ backslash");
	assert_string_equal(f.envelope.from.items[0].name, "Doe, Jane");
	imap_fetch_done(&f);

	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.uid, 3);
	assert_string_equal(f.envelope.subject, "Grüße aus Köln ✓");
	assert_string_equal(f.envelope.from.items[0].name, "=?ISO-8859-1?Q?J=F6rg_M=FCller?=");
	/* To: alice, then the empty group "undisclosed-recipients:;" as a start/end pair. */
	assert_int_equal(f.envelope.to.n, 3);
	assert_string_equal(f.envelope.to.items[1].mailbox, "undisclosed-recipients");
	assert_null(f.envelope.to.items[1].host);
	assert_null(f.envelope.to.items[2].mailbox);
	assert_string_equal(f.envelope.message_id, "<8bit@example.de>");
	imap_fetch_done(&f);

	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.uid, 3);
	assert_false(f.has_envelope);
	assert_int_equal(f.header_len, 93);
	assert_true(strncmp(f.header, "From: =?ISO-8859-1?Q?", 21) == 0);
	imap_fetch_done(&f);

	r = next_named(p, "EXISTS");
	assert_int_equal(r->number, 4);
	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.uid, 4);
	assert_string_equal(f.envelope.subject, "Hello =?utf-8?q?=F0=9F=8C=8E?=");
	imap_fetch_done(&f);
}

static void test_transcript_cyrus(void **state)
{
	size_t len;
	_cleanup_free_ char *data = load_transcript("cyrus-3.txt", &len);
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;
	struct imap_fetch f;

	assert_int_equal(imap_parser_feed(p, data, len), 0);
	r = next_named(p, "ID");
	assert_int_equal(r->n_args, 1);
	assert_int_equal(r->args[0].n_items, 14);
	r = next_named(p, "LIST");
	assert_string_equal(r->args[2].str, "INBOX");
	assert_int_equal(r->args[2].type, IMAP_VAL_ATOM);
	r = next_named(p, "LIST");
	r = next_named(p, "LIST");
	r = next_named(p, "LIST");
	assert_true(r->args[2].literal);
	assert_string_equal(r->args[2].str, "INBOX.Lists [x] \"y\"");
	r = next_named(p, "STATUS");
	assert_int_equal(r->n_args, 2);
	assert_true(imap_value_is_atom(&r->args[0], "inbox"));
	assert_int_equal(r->args[1].n_items, 6);

	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.uid, 13);
	assert_string_equal(f.internaldate, " 5-Mar-2024 11:02:03 +0000");
	assert_string_equal(f.envelope.date, "Tue, 05 Mar 2024 11:02:01 +0000");
	assert_string_equal(f.envelope.subject, "[list] \"quoted\" subject with \\ back");
	assert_string_equal(f.envelope.from.items[0].name, "Team: Ops");
	assert_int_equal(f.envelope.sender.n, 0);
	/* group syntax: start (host NIL), end (mailbox and host NIL) */
	assert_int_equal(f.envelope.to.n, 2);
	assert_string_equal(f.envelope.to.items[0].mailbox, "undisclosed-recipients");
	assert_null(f.envelope.to.items[0].host);
	assert_null(f.envelope.to.items[1].mailbox);
	assert_int_equal(f.envelope.cc.n, 3);
	assert_string_equal(f.envelope.cc.items[1].name, "Bob");
	assert_string_equal(f.envelope.in_reply_to, "<parent@example.org>");
	assert_true(strstr(f.header, "List-Id: <ops.lists.example.org>\r\n") != NULL);
	imap_fetch_done(&f);

	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_string_equal(r->tag, "a7");
}

static void test_transcript_gmail(void **state)
{
	size_t len;
	_cleanup_free_ char *data = load_transcript("gmail.txt", &len);
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;
	struct imap_fetch f;
	uint64_t caps;

	assert_int_equal(imap_parser_feed(p, data, len), 0);
	r = next_named(p, "CAPABILITY");
	assert_int_equal(imap_capabilities_parse(r->args, r->n_args, &caps), 0);
	assert_int_equal(caps, IMAP_CAP(IMAP_CAP_IMAP4REV1) | IMAP_CAP(IMAP_CAP_UNSELECT) |
				       IMAP_CAP(IMAP_CAP_IDLE) | IMAP_CAP(IMAP_CAP_NAMESPACE) |
				       IMAP_CAP(IMAP_CAP_ID) | IMAP_CAP(IMAP_CAP_SASL_IR) |
				       IMAP_CAP(IMAP_CAP_AUTH_XOAUTH2) |
				       IMAP_CAP(IMAP_CAP_AUTH_PLAIN) |
				       IMAP_CAP(IMAP_CAP_AUTH_OAUTHBEARER));
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_int_equal(r->kind, IMAP_RESP_CONTINUATION);
	assert_null(r->code);
	assert_true(strncmp(r->text, "eyJzdGF0dXMi", 12) == 0);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_int_equal(r->status, IMAP_STATUS_NO);
	assert_string_equal(r->code, "AUTHENTICATIONFAILED");
	assert_int_equal(r->n_code_args, 0);

	r = next_named(p, "NAMESPACE");
	assert_int_equal(r->n_args, 3);
	assert_true(imap_value_is_nil(&r->args[1]));

	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.seq, 1543);
	assert_int_equal(f.uid, 17234);
	assert_true(f.has_flags);
	assert_int_equal(f.flags, 0);
	assert_string_equal(f.envelope.message_id, "<CAF=abc+123@mail.gmail.com>");
	imap_fetch_done(&f);

	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.uid, 0);
	assert_int_equal(f.flags, IMAP_FLAG_SEEN);
	assert_false(f.has_envelope);
	imap_fetch_done(&f);
	r = next_named(p, "EXPUNGE");
	assert_int_equal(r->number, 1542);
}

static void test_transcript_outlook(void **state)
{
	size_t len;
	_cleanup_free_ char *data = load_transcript("outlook.txt", &len);
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;
	struct imap_fetch f;

	assert_int_equal(imap_parser_feed(p, data, len), 0);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_null(r->code);
	assert_true(strstr(r->text, "[TQBXADIAUABSADAAMQBD") != NULL);
	r = next_named(p, "CAPABILITY");
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_int_equal(r->kind, IMAP_RESP_CONTINUATION);
	assert_string_equal(r->text, "");
	r = next_named(p, "ID");
	assert_int_equal(r->n_args, 1);
	assert_true(imap_value_is_nil(&r->args[0]));
	r = next_named(p, "FETCH");
	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_string_equal(f.envelope.from.items[0].name, "Doe, Jane");
	assert_int_equal(f.envelope.sender.n, 0);
	assert_int_equal(f.envelope.to.n, 1);
	imap_fetch_done(&f);
}

/* ---------------------------------------------------------------- forms */

static void expect_dump(const char *in, const char *want)
{
	_cleanup_free_ char *got = parse_ok(in);
	if (strcmp(got, want) != 0)
		fail_msg("for  %s\ngot  %swant %s", in, got, want);
}

static void test_forms(void **state)
{
	expect_dump("a1 OK done\r\n", "TAGGED tag=a1 status=OK text=<done>\n");
	expect_dump("a1 OK\r\n", "TAGGED tag=a1 status=OK text=<>\n");
	expect_dump("a1 ok [READ-ONLY]\r\n",
		    "TAGGED tag=a1 status=OK code=READ-ONLY [ ] text=<>\n");
	expect_dump("* 23 EXISTS\r\n",
		    "UNTAGGED tag=n/a status=NONE number=23 name=EXISTS args=[ ]\n");
	expect_dump("* 3 expunge\n",
		    "UNTAGGED tag=n/a status=NONE number=3 name=EXPUNGE args=[ ]\n");
	expect_dump("+ idling\r\n", "CONT tag=n/a status=NONE text=<idling>\n");
	expect_dump("+\r\n", "CONT tag=n/a status=NONE text=<>\n");
	expect_dump("+ YmFzZTY0==\r\n", "CONT tag=n/a status=NONE text=<YmFzZTY0==>\n");
	expect_dump("* OK [PERMANENTFLAGS (\\Seen \\*)] x\r\n",
		    "UNTAGGED tag=n/a status=OK code=PERMANENTFLAGS [ (A:\\Seen A:\\*) ] "
		    "text=<x>\n");
	expect_dump("* OK [UIDVALIDITY 1] x\r\n",
		    "UNTAGGED tag=n/a status=OK code=UIDVALIDITY [ N:1 ] text=<x>\n");
	expect_dump("* OK [ALERT] Disk full\r\n",
		    "UNTAGGED tag=n/a status=OK code=ALERT [ ] text=<Disk full>\n");
	expect_dump("* BYE [REFERRAL imap://u;AUTH=*@s2/INBOX] go\r\n",
		    "UNTAGGED tag=n/a status=BYE code=REFERRAL [ A:imap://u;AUTH=*@s2/INBOX ] "
		    "text=<go>\n");
	expect_dump("a2 NO [BADCHARSET (UTF-8 \"X\")] no\r\n",
		    "TAGGED tag=a2 status=NO code=BADCHARSET [ (A:UTF-8 S1:X) ] text=<no>\n");
	expect_dump("* NO [XWEIRD a (b] c\r\n",
		    "UNTAGGED tag=n/a status=NO code=XWEIRD(raw) [ S4:a (b ] text=<c>\n");
	expect_dump("* OK [no close bracket\r\n",
		    "UNTAGGED tag=n/a status=OK text=<[no close bracket>\n");
	expect_dump("* PREAUTH hi\r\n", "UNTAGGED tag=n/a status=PREAUTH text=<hi>\n");
	expect_dump("* OK Grüße {5}\r\n", "UNTAGGED tag=n/a status=OK text=<Grüße {5}>\n");
	expect_dump("* CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL+\r\n",
		    "UNTAGGED tag=n/a status=NONE name=CAPABILITY args=[ A:IMAP4rev1 "
		    "A:AUTH=PLAIN A:LITERAL+ ]\n");
	expect_dump("* LIST (\\HasNoChildren) \"/\" INBOX\r\n",
		    "UNTAGGED tag=n/a status=NONE name=LIST args=[ (A:\\HasNoChildren) S1:/ "
		    "A:INBOX ]\n");
	expect_dump("* LIST () NIL {3}\r\na\"b\r\n",
		    "UNTAGGED tag=n/a status=NONE name=LIST args=[ () NIL SL3:a\"b ]\n");
	expect_dump("* SEARCH 1 2 3\r\n",
		    "UNTAGGED tag=n/a status=NONE name=SEARCH args=[ N:1 N:2 N:3 ]\n");
	expect_dump("* SEARCH \r\n", "UNTAGGED tag=n/a status=NONE name=SEARCH args=[ ]\n");
	expect_dump("* ESEARCH (TAG \"a5\") UID ALL 4:7,9\r\n",
		    "UNTAGGED tag=n/a status=NONE name=ESEARCH args=[ (A:TAG S2:a5) A:UID A:ALL "
		    "A:4:7,9 ]\n");
	expect_dump("* ENABLED CONDSTORE QRESYNC\r\n",
		    "UNTAGGED tag=n/a status=NONE name=ENABLED args=[ A:CONDSTORE A:QRESYNC ]\n");
	expect_dump("* VANISHED (EARLIER) 1:5\r\n",
		    "UNTAGGED tag=n/a status=NONE name=VANISHED args=[ (A:EARLIER) A:1:5 ]\n");
	expect_dump("* ID NIL\r\n", "UNTAGGED tag=n/a status=NONE name=ID args=[ NIL ]\n");
	expect_dump("* STATUS \"a b\" (MESSAGES 3 UIDNEXT 4)\r\n",
		    "UNTAGGED tag=n/a status=NONE name=STATUS args=[ S3:a b (A:MESSAGES N:3 "
		    "A:UIDNEXT N:4) ]\n");
	expect_dump("* NAMESPACE ((\"\" \"/\")) NIL ((\"#shared/\" \"/\"))\r\n",
		    "UNTAGGED tag=n/a status=NONE name=NAMESPACE args=[ ((S0: S1:/)) NIL "
		    "((S8:#shared/ S1:/)) ]\n");
	expect_dump("* XUNKNOWN foo (bar 1) \"baz\"\r\n",
		    "UNTAGGED tag=n/a status=NONE name=XUNKNOWN args=[ A:foo (A:bar N:1) "
		    "S3:baz ]\n");
}

static void test_forms_binary(void **state)
{
	static const char in[] = "* 1 FETCH (BINARY[1] ~{3}\r\na\0b BODY[]<0> NIL)\r\n";
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;

	assert_int_equal(imap_parser_feed(p, in, sizeof(in) - 1), 0);
	assert_int_equal(imap_parser_next(p, &r), 1);
	const struct imap_value *l = &r->args[0];
	assert_int_equal(l->n_items, 4);
	assert_string_equal(l->items[0].str, "BINARY[1]");
	assert_int_equal(l->items[1].len, 3);
	assert_memory_equal(l->items[1].str, "a\0b", 4);
	assert_string_equal(l->items[2].str, "BODY[]<0>");
	assert_true(imap_value_is_nil(&l->items[3]));
}

static void test_values(void **state)
{
	_cleanup_(imap_parser_freep) struct imap_parser *p = NULL;
	const struct imap_response *r =
		parse_one(&p, "* X \"q\\\\\\\"\" nil Nil 18446744073709551615 0 4294967296 "
			      "((()))\r\n");
	uint32_t u32;
	uint64_t u64;
	const char *s;

	assert_int_equal(r->n_args, 7);
	assert_string_equal(r->args[0].str, "q\\\"");
	assert_int_equal(r->args[0].len, 3);
	assert_true(imap_value_is_nil(&r->args[1]));
	assert_true(imap_value_is_nil(&r->args[2]));
	assert_int_equal(imap_value_to_u64(&r->args[3], &u64), 0);
	assert_true(u64 == UINT64_MAX);
	assert_string_equal(r->args[3].str, "18446744073709551615");
	assert_int_equal(imap_value_to_u32(&r->args[3], true, &u32), -ERANGE);
	assert_int_equal(imap_value_to_u32(&r->args[4], false, &u32), -ERANGE);
	assert_int_equal(imap_value_to_u32(&r->args[4], true, &u32), 0);
	assert_int_equal(u32, 0);
	assert_int_equal(imap_value_to_u32(&r->args[5], true, &u32), -ERANGE);
	assert_int_equal(imap_value_to_u32(&r->args[0], true, &u32), -EBADMSG);
	assert_int_equal(imap_value_to_u32(NULL, true, &u32), -EBADMSG);
	assert_int_equal(r->args[6].n_items, 1);
	assert_int_equal(r->args[6].items[0].items[0].n_items, 0);
	assert_int_equal(imap_value_get_nstring(&r->args[1], &s, NULL), 0);
	assert_null(s);
	assert_int_equal(imap_value_get_nstring(&r->args[6], &s, NULL), -EBADMSG);
	assert_string_equal(imap_value_string(&r->args[0]), "q\\\"");
	assert_null(imap_value_string(&r->args[6]));
	assert_false(imap_value_is_atom(&r->args[0], "q\\\""));
}

static void test_lf_line_ends(void **state)
{
	expect_dump("* 2 EXISTS\n* LIST () \".\" {2}\nab\na1 OK\n",
		    "UNTAGGED tag=n/a status=NONE number=2 name=EXISTS args=[ ]\n"
		    "UNTAGGED tag=n/a status=NONE name=LIST args=[ () S1:. SL2:ab ]\n"
		    "TAGGED tag=a1 status=OK text=<>\n");
}

/* ---------------------------------------------------------------- errors */

static void test_errors_syntax(void **state)
{
	static const char *const bad[] = {
		"* X \"a\\b\"\r\n",     /* only \\ and \" escape */
		"* X \"open\r\n",       /* unterminated quoted */
		"* X (a b\r\n",         /* unterminated list */
		"* X a)\r\n",           /* stray ')' */
		"* X a\"b\"\r\n",       /* no SP between values */
		"* X a\rb\r\n",         /* lone CR in a token */
		"* OK a\rb\r\n",        /* lone CR in text */
		"a1 FOO bar\r\n",       /* tagged must be OK/NO/BAD */
		"a1 BYE x\r\n",         /* not tagged either */
		"*  OK x\r\n",          /* double SP */
		"*OK\r\n",              /* no SP */
		"\x01\x02\x03\r\n",     /* garbage */
		"* 99999999999 EXISTS\r\n", /* message number over 32 bits */
		"* X 18446744073709551616\r\n", /* number over 64 bits */
		"* X BODY[HEADER\r\n",  /* unterminated section */
		"* X {3}x\r\nabc\r\n",  /* junk after literal size */
		"* X {}\r\n",           /* no size */
		"\r\n",                 /* empty line */
	};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		int err = parse_err(bad[i], strlen(bad[i]), NULL);
		if (err != -EBADMSG)
			fail_msg("\"%s\": got %d, want -EBADMSG", bad[i], err);
	}
	/* NUL in a line */
	assert_int_equal(parse_err("* X a\0b\r\n", 9, NULL), -EBADMSG);
	assert_int_equal(parse_err("* OK a\0b\r\n", 10, NULL), -EBADMSG);
}

static void test_error_message(void **state)
{
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;
	static const char in[] = "* LIST (a b) \".\" x)\r\n";

	assert_null(imap_parser_error(p));
	assert_int_equal(imap_parser_feed(p, in, strlen(in)), 0);
	assert_int_equal(imap_parser_next(p, &r), -EBADMSG);
	assert_string_equal(imap_parser_error(p),
			    "line 1: unexpected ')' at column 19");
}

static void test_error_nonsync_literal(void **state)
{
	assert_int_equal(parse_err("* X {5+}\r\nhello\r\n", 17, NULL), -EPROTO);
	assert_int_equal(parse_err("* X {5+}", 8, NULL), 1); /* no line end yet */
}

static void test_error_huge_literal(void **state)
{
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	static const char in[] = "* 1 FETCH (BODY[] {2147483648}\r\n";
	const struct imap_response *r;

	assert_int_equal(imap_parser_feed(p, in, strlen(in)), -EMSGSIZE);
	assert_string_equal(imap_parser_error(p),
			    "literal of 2147483648 bytes exceeds limit 16777216");
	assert_true(imap_parser_memory(p) == 0);
	/* poisoned */
	assert_int_equal(imap_parser_next(p, &r), -EMSGSIZE);
	assert_int_equal(imap_parser_feed(p, "a1 OK\r\n", 7), -EMSGSIZE);
	assert_int_equal(parse_err("* X {99999999999999999999999}\r\n", 31, NULL), -EMSGSIZE);
}

static void test_error_endless_line(void **state)
{
	struct imap_limits lim = { .max_line = 4096 };
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(&lim);
	char chunk[512];
	size_t fed = 0;
	int r = 0;

	memset(chunk, 'x', sizeof(chunk));
	memcpy(chunk, "* X ", 4);
	while (r == 0 && fed < 1024 * 1024) {
		r = imap_parser_feed(p, chunk, sizeof(chunk));
		fed += sizeof(chunk);
		assert_true(imap_parser_memory(p) <= 2 * lim.max_line);
	}
	assert_int_equal(r, -E2BIG);
	assert_true(fed <= lim.max_line + sizeof(chunk));
	assert_int_equal(imap_parser_buffered(p), 0);
	assert_non_null(strstr(imap_parser_error(p), "4096"));

	/* with the default limits too, fed in big chunks */
	_cleanup_(imap_parser_freep) struct imap_parser *q = imap_parser_new(NULL);
	_cleanup_free_ char *big = malloc(16384);
	memset(big, 'y', 16384);
	fed = 0;
	r = 0;
	while (r == 0) {
		r = imap_parser_feed(q, big, 16384);
		fed += 16384;
		assert_true(imap_parser_memory(q) <= 2 * imap_limits_default.max_line + 16384);
	}
	assert_int_equal(r, -E2BIG);
	assert_true(fed <= imap_limits_default.max_line + 16384);
}

static void test_error_depth(void **state)
{
	char in[128];
	size_t n = 0;

	n += (size_t)sprintf(in, "* X ");
	for (int i = 0; i < 16; i++)
		in[n++] = '(';
	for (int i = 0; i < 16; i++)
		in[n++] = ')';
	strcpy(in + n, "\r\n");
	assert_int_equal(parse_err(in, strlen(in), NULL), 0);

	n = (size_t)sprintf(in, "* X ");
	for (int i = 0; i < 17; i++)
		in[n++] = '(';
	for (int i = 0; i < 17; i++)
		in[n++] = ')';
	strcpy(in + n, "\r\n");
	assert_int_equal(parse_err(in, strlen(in), NULL), -E2BIG);

	struct imap_limits lim = { .max_depth = 2 };
	assert_int_equal(parse_err("* X ((a))\r\n", 11, &lim), 0);
	assert_int_equal(parse_err("* X (((a)))\r\n", 13, &lim), -E2BIG);
}

static void test_error_response_size(void **state)
{
	struct imap_limits lim = { .max_literal = 100, .max_response = 150 };
	char in[512];

	snprintf(in, sizeof(in), "* 1 FETCH (A {100}\r\n%0100d B {100}\r\n", 0);
	assert_int_equal(parse_err(in, strlen(in), &lim), -EMSGSIZE);
	assert_int_equal(parse_err("* 1 FETCH (A {101}\r\n", 20, &lim), -EMSGSIZE);
	snprintf(in, sizeof(in), "* 1 FETCH (A {100}\r\n%0100d)\r\n", 0);
	assert_int_equal(parse_err(in, strlen(in), &lim), 0);
}

static void test_error_feed_bound(void **state)
{
	struct imap_limits lim = { .max_line = 64, .max_response = 128 };
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(&lim);
	char many[400];

	/* complete responses are fine to buffer, up to the bound */
	for (size_t i = 0; i < sizeof(many); i += 8)
		memcpy(many + i, "* 1 X\r\n\n", 8);
	assert_int_equal(imap_parser_feed(p, many, 150), 0);
	assert_int_equal(imap_parser_feed(p, many, 100), -ENOBUFS);
	assert_int_equal(imap_parser_feed(p, many, 1), -ENOBUFS);
}

/* ---------------------------------------------------------------- memory, compaction */

static void test_buffered_is_leftover(void **state)
{
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	static const char in[] = "a1 OK Begin TLS now\r\n\x16\x03\x01garbage";
	const struct imap_response *r;

	assert_int_equal(imap_parser_feed(p, in, sizeof(in) - 1), 0);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_string_equal(r->text, "Begin TLS now");
	assert_int_equal(imap_parser_buffered(p), strlen("\x16\x03\x01garbage"));
	imap_parser_reset(p);
	assert_int_equal(imap_parser_buffered(p), 0);
	assert_int_equal(imap_parser_memory(p), 0);
	assert_int_equal(imap_parser_feed(p, "* OK [CAPABILITY IMAP4rev1] hi\r\n", 32), 0);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_string_equal(r->code, "CAPABILITY");
}

static void test_idle_is_cheap(void **state)
{
	_cleanup_(imap_parser_freep) struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_response *r;
	size_t big = 1024 * 1024;
	_cleanup_free_ char *in = malloc(big + 64);
	int n = snprintf(in, 64, "* 1 FETCH (BODY[] {%zu}\r\n", big);

	memset(in + n, 'm', big);
	memcpy(in + n + big, ")\r\n* 2 EXI", 10);
	assert_int_equal(imap_parser_feed(p, in, (size_t)n + big + 10), 0);
	assert_true(imap_parser_memory(p) >= big);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_int_equal(r->args[0].items[1].len, big);
	assert_int_equal(imap_parser_buffered(p), 7);
	assert_int_equal(imap_parser_next(p, &r), 0);
	assert_true(imap_parser_memory(p) <= 512);
	assert_int_equal(imap_parser_feed(p, "STS\r\n", 5), 0);
	assert_int_equal(imap_parser_next(p, &r), 1);
	assert_string_equal(r->name, "EXISTS");
	assert_int_equal(imap_parser_next(p, &r), 0);
	assert_int_equal(imap_parser_memory(p), 0);
	assert_int_equal(imap_parser_buffered(p), 0);
}

/* ---------------------------------------------------------------- fetch */

static int fetch_of(const char *line)
{
	_cleanup_(imap_parser_freep) struct imap_parser *p = NULL;
	const struct imap_response *r = parse_one(&p, line);
	struct imap_fetch f;
	int k = imap_fetch_parse(r, &f);

	if (k >= 0)
		imap_fetch_done(&f);
	return k;
}

static void test_fetch_errors(void **state)
{
	assert_int_equal(fetch_of("* 1 FETCH (UID 7)\r\n"), 0);
	assert_int_equal(fetch_of("* 1 FETCH (UID 0)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (UID 4294967296)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (UID 4294967295)\r\n"), 0);
	assert_int_equal(fetch_of("* 1 FETCH (UID \"7\")\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (UID 7 UID 8)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (UID 7 UID 7)\r\n"), 0);
	assert_int_equal(fetch_of("* 1 FETCH (UID)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (FLAGS \\Seen)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (FLAGS (\"x\"))\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (RFC822.SIZE x)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (MODSEQ 5)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (INTERNALDATE NIL)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (ENVELOPE (NIL))\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (ENVELOPE (NIL NIL (NIL) NIL NIL NIL NIL NIL NIL "
				  "NIL))\r\n"),
			 -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (ENVELOPE (NIL NIL ((NIL NIL (x) NIL)) NIL NIL NIL "
				  "NIL NIL NIL NIL))\r\n"),
			 -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL "
				  "NIL))\r\n"),
			 0);
	assert_int_equal(fetch_of("* 1 FETCH (BODY[HEADER] (x))\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (X-GM-LABELS (a b) BODYSTRUCTURE ((\"a\")(\"b\") "
				  "\"mixed\") UID 3)\r\n"),
			 0);
	assert_int_equal(fetch_of("* 1 FETCH (UID 3 FLAGS)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH UID 3\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 1 FETCH (3 4)\r\n"), -EBADMSG);
	assert_int_equal(fetch_of("* 0 FETCH (UID 3)\r\n"), -EINVAL);
	assert_int_equal(fetch_of("* 1 EXISTS\r\n"), -EINVAL);
	assert_int_equal(fetch_of("a1 OK\r\n"), -EINVAL);
}

static void test_fetch_flags(void **state)
{
	_cleanup_(imap_parser_freep) struct imap_parser *p = NULL;
	const struct imap_response *r =
		parse_one(&p, "* 9 FETCH (FLAGS (\\Seen \\answered \\Flagged \\Deleted \\Draft "
			      "\\Recent $Junk \\*) RFC822.HEADER {4}\r\nA:\r\n)\r\n");
	struct imap_fetch f;

	assert_int_equal(imap_fetch_parse(r, &f), 0);
	assert_int_equal(f.flags, IMAP_FLAG_SEEN | IMAP_FLAG_ANSWERED | IMAP_FLAG_FLAGGED |
					  IMAP_FLAG_DELETED | IMAP_FLAG_DRAFT | IMAP_FLAG_RECENT);
	assert_int_equal(f.flag_list->n_items, 8);
	assert_int_equal(f.header_len, 4);
	assert_int_equal(f.uid, 0);
	imap_fetch_done(&f);
}

static void test_capabilities(void **state)
{
	_cleanup_(imap_parser_freep) struct imap_parser *p = NULL;
	const struct imap_response *r = parse_one(
		&p, "* CAPABILITY imap4rev2 IMAP4rev1 idle STARTTLS LOGINDISABLED AUTH=plain "
		    "AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER SASL-IR LITERAL+ LITERAL- ENABLE "
		    "CONDSTORE QRESYNC UIDPLUS ID UTF8=ACCEPT ESEARCH NAMESPACE UNSELECT MOVE "
		    "SPECIAL-USE STATUS=SIZE X-UNKNOWN AUTH=GSSAPI\r\n");
	uint64_t m;
	char buf[512];

	assert_int_equal(imap_capabilities_parse(r->args, r->n_args, &m), 0);
	assert_true(m == IMAP_CAP(_IMAP_CAP_MAX) - 1);
	assert_string_equal(imap_cap_to_string(IMAP_CAP_AUTH_XOAUTH2), "AUTH=XOAUTH2");
	assert_null(imap_cap_to_string(_IMAP_CAP_MAX));
	assert_string_equal(imap_caps_to_string(IMAP_CAP(IMAP_CAP_IDLE) |
							IMAP_CAP(IMAP_CAP_LITERAL_PLUS),
						buf, sizeof(buf)),
			    "IDLE LITERAL+");
	assert_string_equal(imap_caps_to_string(m, buf, 10), "IMAP4rev1");
	assert_int_equal(imap_capabilities_parse(NULL, 0, &m), 0);
	assert_int_equal(m, 0);

	imap_parser_free(p);
	r = parse_one(&p, "* CAPABILITY IMAP4rev1 \"IDLE\"\r\n");
	assert_int_equal(imap_capabilities_parse(r->args, r->n_args, &m), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transcripts_every_split),
		cmocka_unit_test(test_transcripts_no_early_parse),
		cmocka_unit_test(test_transcript_dovecot),
		cmocka_unit_test(test_transcript_dovecot_recorded),
		cmocka_unit_test(test_transcript_cyrus),
		cmocka_unit_test(test_transcript_gmail),
		cmocka_unit_test(test_transcript_outlook),
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_forms_binary),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_lf_line_ends),
		cmocka_unit_test(test_errors_syntax),
		cmocka_unit_test(test_error_message),
		cmocka_unit_test(test_error_nonsync_literal),
		cmocka_unit_test(test_error_huge_literal),
		cmocka_unit_test(test_error_endless_line),
		cmocka_unit_test(test_error_depth),
		cmocka_unit_test(test_error_response_size),
		cmocka_unit_test(test_error_feed_bound),
		cmocka_unit_test(test_buffered_is_leftover),
		cmocka_unit_test(test_idle_is_cheap),
		cmocka_unit_test(test_fetch_errors),
		cmocka_unit_test(test_fetch_flags),
		cmocka_unit_test(test_capabilities),
	};
	return cmocka_run_group_tests_name("imap-parse", tests, NULL, NULL);
}
