#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "event.h"

#define NOW ((time_t)1714564800) /* 2024-05-01T12:00:00Z */

/* Expected ids computed independently:
 *   python3 -c "import hashlib; print(hashlib.sha256(b'work\0INBOX\x001700000000\x004711')
 *               .hexdigest()[:32])"
 * and the same with printf '...' | sha256sum. */
#define ID_WORK_INBOX_4711 "msg_2c6305a4ee8cb829d5ebac00ab767e67"
#define ID_SUMMARY_10_15 "sum_c77f5b44a5b7da98b0af0f6c639bdb0f" /* work, Lists/urgent, 7, "10:15" */

static const struct mail_address_view full_to[] = {
	{ NULL, "bob@example.com" },
	{ "Carol", "carol@example.com" },
};

static const struct mail_event_input full_input = {
	.account = "work",
	.mailbox = "INBOX",
	.uidvalidity = 1700000000,
	.uid = 4711,
	.message_id = "<abc@example.com>",
	.subject = "Hello \"world\" \\ ü\n",
	.from = { "Alice Ä", "alice@example.com" },
	.to = full_to,
	.n_to = ELEMENTSOF(full_to),
	.date = 1714468502,     /* 2024-04-30T09:15:02Z */
	.received = 1714468507, /* 2024-04-30T09:15:07Z */
	.size = 12345,
	.flags = MAIL_FLAG_SEEN | MAIL_FLAG_FLAGGED | MAIL_FLAG_DRAFT,
};

static const char full_json[] =
	"{\"type\":\"mail.received\",\"timestamp\":\"2024-05-01T12:00:00Z\",\"data\":{"
	"\"id\":\"" ID_WORK_INBOX_4711 "\",\"account\":\"work\",\"mailbox\":\"INBOX\","
	"\"uidvalidity\":1700000000,\"uid\":4711,\"message_id\":\"<abc@example.com>\","
	"\"from\":{\"name\":\"Alice Ä\",\"address\":\"alice@example.com\"},"
	"\"to\":[{\"name\":null,\"address\":\"bob@example.com\"},"
	"{\"name\":\"Carol\",\"address\":\"carol@example.com\"}],"
	"\"subject\":\"Hello \\\"world\\\" \\\\ ü\\n\","
	"\"date\":\"2024-04-30T09:15:02Z\",\"received\":\"2024-04-30T09:15:07Z\","
	"\"size\":12345,\"flags\":[\"\\\\Seen\",\"\\\\Flagged\",\"\\\\Draft\"]}}";

static const char summary_json[] =
	"{\"type\":\"mail.summary\",\"timestamp\":\"2024-05-01T12:00:00Z\",\"data\":{"
	"\"id\":\"" ID_SUMMARY_10_15 "\",\"account\":\"work\",\"mailbox\":\"Lists/urgent\","
	"\"uidvalidity\":7,\"first_uid\":10,\"last_uid\":15,\"count\":4}}";

static struct mail_event *new_full(void)
{
	struct mail_event *e = NULL;

	assert_int_equal(mail_event_new_received(&full_input, &e), 0);
	return e;
}

static char *to_json(const struct mail_event *e)
{
	char *s = NULL;

	assert_int_equal(mail_event_to_json(e, NOW, &s), 0);
	return s;
}

static void test_id(void **state)
{
	char id[MAIL_EVENT_ID_LEN + 1];

	assert_int_equal(mail_event_id("work", "INBOX", 1700000000, 4711, id), 0);
	assert_string_equal(id, ID_WORK_INBOX_4711);
	assert_int_equal(mail_event_summary_id("work", "Lists/urgent", 7, 10, 15, id), 0);
	assert_string_equal(id, ID_SUMMARY_10_15);
	/* Separators matter: moving a byte across the account/mailbox border changes the id. */
	assert_int_equal(mail_event_id("wor", "kINBOX", 1700000000, 4711, id), 0);
	assert_string_not_equal(id, ID_WORK_INBOX_4711);
	/* UTF-8 is hashed as bytes: python3 hashlib of 'wörk\0Entwürfe/α\x001\x001'.encode(). */
	assert_int_equal(mail_event_id("wörk", "Entwürfe/α", 1, 1, id), 0);
	assert_string_equal(id, "msg_d1a941810fbf1873208afc308e5a2993");
}

static void test_json_full(void **state)
{
	_cleanup_mail_event_ struct mail_event *e = new_full();
	_cleanup_free_ char *s = to_json(e);

	assert_string_equal(e->id, ID_WORK_INBOX_4711);
	assert_string_equal(e->type, MAIL_EVENT_RECEIVED);
	assert_int_equal(e->count, 1);
	assert_string_equal(s, full_json);
	assert_null(strchr(s, '\n')); /* one line: the exec sink's stdin framing */
}

static void test_json_nulls(void **state)
{
	struct mail_event_input in = {
		.account = "work", .mailbox = "INBOX", .uidvalidity = 1, .uid = 2,
	};
	_cleanup_mail_event_ struct mail_event *e = NULL;
	_cleanup_free_ char *s = NULL;
	char id[MAIL_EVENT_ID_LEN + 1];
	char expect[1024];

	assert_int_equal(mail_event_new_received(&in, &e), 0);
	assert_int_equal(mail_event_id("work", "INBOX", 1, 2, id), 0);
	snprintf(expect, sizeof(expect),
		 "{\"type\":\"mail.received\",\"timestamp\":\"2024-05-01T12:00:00Z\",\"data\":{"
		 "\"id\":\"%s\",\"account\":\"work\",\"mailbox\":\"INBOX\",\"uidvalidity\":1,"
		 "\"uid\":2,\"message_id\":null,\"from\":{\"name\":null,\"address\":null},"
		 "\"to\":[],\"subject\":null,\"date\":null,\"received\":null,\"size\":0,"
		 "\"flags\":[]}}",
		 id);
	s = to_json(e);
	assert_string_equal(s, expect);
}

static void test_json_summary(void **state)
{
	_cleanup_mail_event_ struct mail_event *e = NULL;
	_cleanup_free_ char *s = NULL;

	assert_int_equal(mail_event_new_summary("work", "Lists/urgent", 7, 10, 15, 4, &e), 0);
	assert_true(mail_event_is_summary(e));
	assert_string_equal(e->id, ID_SUMMARY_10_15);
	s = to_json(e);
	assert_string_equal(s, summary_json);

	/* Invalid ranges and counts. */
	struct mail_event *x = NULL;
	assert_int_equal(mail_event_new_summary("work", "I", 7, 0, 15, 4, &x), -EINVAL);
	assert_int_equal(mail_event_new_summary("work", "I", 7, 16, 15, 1, &x), -EINVAL);
	assert_int_equal(mail_event_new_summary("work", "I", 7, 10, 15, 0, &x), -EINVAL);
	assert_int_equal(mail_event_new_summary("work", "I", 7, 10, 15, 7, &x), -EINVAL);
	assert_int_equal(mail_event_new_summary("work", "I", 0, 10, 15, 1, &x), -EINVAL);
	assert_int_equal(mail_event_new_summary("", "I", 7, 10, 15, 1, &x), -EINVAL);
	assert_null(x);
	assert_int_equal(mail_event_new_summary("w", "I", 7, 1, UINT32_MAX, UINT32_MAX, &x), 0);
	x = mail_event_unref(x);
}

/* from_json(to_json(e)) gives back e, and writing it again gives the same bytes. */
static void check_round_trip(const struct mail_event *e)
{
	_cleanup_mail_event_ struct mail_event *back = NULL;
	_cleanup_free_ char *s1 = to_json(e), *s2 = NULL;

	assert_int_equal(mail_event_from_json(s1, &back), 0);
	s2 = to_json(back);
	assert_string_equal(s1, s2);
	assert_string_equal(back->id, e->id);
	assert_string_equal(back->type, e->type);
	assert_int_equal(back->first_uid, e->first_uid);
	assert_int_equal(back->uid, e->uid);
	assert_int_equal(back->count, e->count);
	assert_true(streq_ptr(back->subject, e->subject));
	assert_true(streq_ptr(back->from.name, e->from.name));
	assert_int_equal(back->n_to, e->n_to);
	assert_int_equal(back->date, e->date);
	assert_int_equal(back->received, e->received);
	assert_int_equal(back->size, e->size);
	assert_int_equal(back->flags, e->flags);
	assert_int_equal(back->ref, 1);
}

static void test_round_trip(void **state)
{
	_cleanup_mail_event_ struct mail_event *full = new_full(), *min = NULL, *sum = NULL,
					       *edge = NULL;
	struct mail_event_input in = {
		.account = "a", .mailbox = "Entwürfe/α \"x\"", .uidvalidity = UINT32_MAX,
		.uid = UINT32_MAX, .date = -62167219200LL, .received = 253402300799LL,
		.size = INT64_MAX, .flags = _MAIL_FLAG_ALL, .subject = "\x01\x1f\x7f",
	};
	_cleanup_free_ char *s = NULL;

	check_round_trip(full);
	assert_int_equal(mail_event_new_received(&(struct mail_event_input){ .account = "w",
			.mailbox = "I", .uidvalidity = 1, .uid = 1 }, &min), 0);
	check_round_trip(min);
	assert_int_equal(mail_event_new_summary("work", "Lists/urgent", 7, 10, 15, 4, &sum), 0);
	check_round_trip(sum);
	assert_int_equal(mail_event_new_received(&in, &edge), 0);
	check_round_trip(edge);
	s = to_json(edge);
	assert_non_null(strstr(s, "\"date\":\"0000-01-01T00:00:00Z\""));
	assert_non_null(strstr(s, "\"received\":\"9999-12-31T23:59:59Z\""));
	assert_non_null(strstr(s, "\"subject\":\"\\u0001\\u001F\x7f\""));
	assert_non_null(strstr(s, "\"size\":9223372036854775807"));
}

/* Replace the first occurrence of from by to in full_json (or summary_json). */
static char *mutate(const char *base, const char *from, const char *to)
{
	const char *p = strstr(base, from);
	char *s;

	if (!p)
		fail_msg("test bug: \"%s\" not in the base JSON", from);
	assert_true(asprintf(&s, "%.*s%s%s", (int)(p - base), base, to, p + strlen(from)) > 0);
	return s;
}

static void expect_bad(const char *json, const char *what)
{
	struct mail_event *e = NULL;
	int r = mail_event_from_json(json, &e);

	if (r != -EBADMSG)
		fail_msg("expected -EBADMSG for %s, got %d", what, r);
	assert_null(e);
}

static void test_from_json_rejects(void **state)
{
	static const struct {
		const char *from, *to;
	} mutations[] = {
		{ "\"size\":12345,", "" },                     /* missing */
		{ "\"size\":12345,", "\"size\":12345,\"x\":1," }, /* unknown key */
		{ "\"uid\":4711,", "\"uid\":4711,\"uid\":4711," }, /* duplicate */
		{ "\"uid\":4711", "\"uid\":\"4711\"" },
		{ "\"uid\":4711", "\"uid\":4711.0" },
		{ "\"uid\":4711", "\"uid\":0" },
		{ "\"uid\":4711", "\"uid\":-1" },
		{ "\"uid\":4711", "\"uid\":4294967296" },
		{ "\"uid\":4711", "\"uid\":99999999999999999999999" },
		{ "\"uid\":4711", "\"uid\":null" },
		{ "\"uidvalidity\":1700000000", "\"uidvalidity\":0" },
		{ "\"size\":12345", "\"size\":-1" },
		{ "\"size\":12345", "\"size\":1e3" },
		{ "\"size\":12345", "\"size\":true" },
		{ "\"message_id\":\"<abc@example.com>\"", "\"message_id\":5" },
		{ "\"subject\":\"Hello", "\"subject\":\"\\u0000Hello" },
		{ "\"flags\":[\"\\\\Seen\",", "\"flags\":[\"\\\\Seen\",\"\\\\Seen\"," },
		{ "\"flags\":[\"\\\\Seen\",", "\"flags\":[\"\\\\Bogus\"," },
		{ "\"flags\":[\"\\\\Seen\",", "\"flags\":[1," },
		{ "\"from\":{\"name\":\"Alice Ä\",", "\"from\":{" },
		{ "\"from\":{\"name\":\"Alice Ä\",", "\"from\":{\"name\":\"Alice Ä\",\"x\":1," },
		{ "\"to\":[", "\"to\":[1," },
		{ "\"to\":[{\"name\":null,", "\"to\":[{" },
		{ "\"date\":\"2024-04-30T09:15:02Z\"", "\"date\":\"2024-02-30T09:15:02Z\"" },
		{ "\"date\":\"2024-04-30T09:15:02Z\"", "\"date\":\"2024-04-30T09:15:02+00:00\"" },
		{ "\"date\":\"2024-04-30T09:15:02Z\"", "\"date\":\"2024-04-30 09:15:02Z\"" },
		{ "\"date\":\"2024-04-30T09:15:02Z\"", "\"date\":\"2024-04-30T24:15:02Z\"" },
		{ "\"date\":\"2024-04-30T09:15:02Z\"", "\"date\":\"2024-04-30T09:15:60Z\"" },
		{ "\"date\":\"2024-04-30T09:15:02Z\"", "\"date\":\"1970-01-01T00:00:00Z\"" },
		{ "\"date\":\"2024-04-30T09:15:02Z\"", "\"date\":1714468502" },
		{ "\"timestamp\":\"2024-05-01T12:00:00Z\"", "\"timestamp\":\"yesterday\"" },
		{ "\"timestamp\":\"2024-05-01T12:00:00Z\",", "" },
		{ "\"type\":\"mail.received\"", "\"type\":\"mail.bogus\"" },
		{ "\"type\":\"mail.received\"", "\"type\":\"mail.summary\"" },
		{ "\"type\":\"mail.received\"", "\"type\":null" },
		{ "\"id\":\"msg_2c", "\"id\":\"msg_3c" },      /* id does not match the fields */
		{ "\"id\":\"msg_2c", "\"id\":\"sum_2c" },
		{ "\"account\":\"work\"", "\"account\":\"\"" },
		{ "\"account\":\"work\"", "\"account\":\"wörk\"" }, /* id mismatch again */
		{ "{\"type\"", "{\"x\":1,\"type\"" },
		{ "}}", "}} x" },
		{ "}}", "}}{}" },
	};
	static const struct {
		const char *from, *to;
	} summary_mutations[] = {
		{ "\"count\":4", "\"count\":7" },
		{ "\"count\":4", "\"count\":0" },
		{ "\"first_uid\":10", "\"first_uid\":16" },
		{ "\"first_uid\":10,", "" },
		{ "\"count\":4", "\"count\":4,\"uid\":15" },
		{ "\"type\":\"mail.summary\"", "\"type\":\"mail.received\"" },
	};
	static const char *const garbage[] = {
		"", "garbage", "null", "[]", "{}", "\"x\"", "{\"type\":\"mail.received\"}",
		"{\"type\":\"mail.received\",\"timestamp\":\"2024-05-01T12:00:00Z\",\"data\":[]}",
	};
	struct mail_event *e = NULL;

	/* The bases themselves are fine. */
	assert_int_equal(mail_event_from_json(full_json, &e), 0);
	e = mail_event_unref(e);
	assert_int_equal(mail_event_from_json(summary_json, &e), 0);
	e = mail_event_unref(e);

	for (size_t i = 0; i < ELEMENTSOF(garbage); i++)
		expect_bad(garbage[i], garbage[i]);
	for (size_t i = 0; i < ELEMENTSOF(mutations); i++) {
		_cleanup_free_ char *s = mutate(full_json, mutations[i].from, mutations[i].to);
		expect_bad(s, mutations[i].to);
	}
	for (size_t i = 0; i < ELEMENTSOF(summary_mutations); i++) {
		_cleanup_free_ char *s = mutate(summary_json, summary_mutations[i].from,
						summary_mutations[i].to);
		expect_bad(s, summary_mutations[i].to);
	}
	assert_int_equal(mail_event_from_json(NULL, &e), -EINVAL);
}

static void test_from_json_bounds(void **state)
{
	_cleanup_free_ char *long_subject = malloc(MAIL_EVENT_STRING_MAX + 2);
	_cleanup_free_ char *s1 = NULL, *s2 = NULL, *huge = NULL, *many = NULL;
	const char to_item[] = "{\"name\":null,\"address\":\"x\"},";
	size_t n;

	assert_non_null(long_subject);
	memset(long_subject, 'x', MAIL_EVENT_STRING_MAX + 1);
	long_subject[MAIL_EVENT_STRING_MAX + 1] = '\0';
	s1 = mutate(full_json, "Hello \\\"world\\\" \\\\ ü\\n", long_subject);
	expect_bad(s1, "a subject over the limit");

	/* One recipient more than the limit. */
	many = calloc(MAIL_EVENT_TO_MAX + 2, sizeof(to_item));
	assert_non_null(many);
	strcpy(many, "\"to\":[");
	for (size_t i = 0; i < MAIL_EVENT_TO_MAX + 1; i++)
		strcat(many, to_item);
	s2 = mutate(full_json, "\"to\":[", many);
	expect_bad(s2, "too many recipients");

	/* Over MAIL_EVENT_JSON_MAX, even if it is only white space after a valid event. */
	n = MAIL_EVENT_JSON_MAX + 16;
	huge = malloc(n + 1);
	assert_non_null(huge);
	memset(huge, ' ', n);
	memcpy(huge, full_json, strlen(full_json));
	huge[n] = '\0';
	expect_bad(huge, "input over the size limit");
}

/* The largest event the bounds allow, made of characters JSON must escape as \u00XX, still
 * fits MAIL_EVENT_JSON_MAX: whatever to_json writes, the spool can read back. */
static void test_worst_case_size(void **state)
{
	char *big = malloc(MAIL_EVENT_STRING_MAX + 1);
	struct mail_address_view to[MAIL_EVENT_TO_MAX];
	_cleanup_mail_event_ struct mail_event *e = NULL;
	_cleanup_free_ char *s = NULL;

	assert_non_null(big);
	memset(big, '\x01', MAIL_EVENT_STRING_MAX);
	big[MAIL_EVENT_STRING_MAX] = '\0';
	for (size_t i = 0; i < ELEMENTSOF(to); i++)
		to[i] = (struct mail_address_view){ big, big };
	struct mail_event_input in = {
		.account = big, .mailbox = big, .uidvalidity = UINT32_MAX, .uid = UINT32_MAX,
		.message_id = big, .subject = big, .from = { big, big }, .to = to,
		.n_to = ELEMENTSOF(to), .date = 1, .received = 1, .size = INT64_MAX,
		.flags = _MAIL_FLAG_ALL,
	};
	assert_int_equal(mail_event_new_received(&in, &e), 0);
	free(big);
	s = to_json(e);
	assert_true(strlen(s) > 6 * MAIL_EVENT_STRING_MAX * (2 * MAIL_EVENT_TO_MAX + 6));
	assert_true(strlen(s) <= MAIL_EVENT_JSON_MAX);
	check_round_trip(e);
}

static void test_refcount(void **state)
{
	struct mail_event *e = new_full();

	assert_ptr_equal(mail_event_ref(e), e);
	assert_ptr_equal(mail_event_ref(e), e);
	assert_int_equal(e->ref, 3);
	assert_null(mail_event_unref(e));
	assert_null(mail_event_unref(e));
	assert_int_equal(e->ref, 1);
	assert_null(mail_event_unref(e)); /* freed: ASan would flag a later use or a leak */
	assert_null(mail_event_unref(NULL));
	assert_null(mail_event_ref(NULL));
}

static void test_sanitize(void **state)
{
	char big[3000];
	struct mail_address_view to[MAIL_EVENT_TO_MAX + 10];
	struct mail_event_input in = {
		.account = "w", .mailbox = "I", .uidvalidity = 1, .uid = 1,
		/* stray continuation, overlong '/', surrogate, above U+10FFFF, cut sequence */
		.subject = "a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xf4\x90\x80\x80" "e\xe2\x82",
		.from = { "\xff", NULL },
		.to = to, .n_to = ELEMENTSOF(to),
		.date = (time_t)253402300800LL, /* year 10000 */
		.received = (time_t)-62167219201LL,
		.size = UINT64_MAX,
		.flags = 0xffffffffu,
	};
	_cleanup_mail_event_ struct mail_event *e = NULL, *b = NULL;
	_cleanup_free_ char *s = NULL;
	struct mail_event *x = NULL;

	for (size_t i = 0; i < ELEMENTSOF(to); i++)
		to[i] = (struct mail_address_view){ "n", "a@b" };
	assert_int_equal(mail_event_new_received(&in, &e), 0);
	assert_string_equal(e->subject, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd"
					"c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
					"d\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
					"e\xef\xbf\xbd\xef\xbf\xbd");
	assert_string_equal(e->from.name, "\xef\xbf\xbd");
	assert_null(e->from.address);
	assert_int_equal(e->n_to, MAIL_EVENT_TO_MAX);
	assert_int_equal(e->date, 0);
	assert_int_equal(e->received, 0);
	assert_int_equal(e->size, INT64_MAX);
	assert_int_equal(e->flags, _MAIL_FLAG_ALL);
	check_round_trip(e);

	/* Truncation keeps whole characters: 1500 × "ü" (2 bytes) cut to 1024 bytes. */
	for (size_t i = 0; i < 1500; i++)
		memcpy(big + 2 * i, "\xc3\xbc", 2);
	big[3000 - 1] = '\0'; /* the last "ü" loses its second byte: replaced, then cut */
	in = (struct mail_event_input){ .account = "w", .mailbox = "I", .uidvalidity = 1,
					.uid = 1, .subject = big };
	assert_int_equal(mail_event_new_received(&in, &b), 0);
	assert_int_equal(strlen(b->subject), MAIL_EVENT_STRING_MAX);
	assert_int_equal(memcmp(b->subject + MAIL_EVENT_STRING_MAX - 2, "\xc3\xbc", 2), 0);
	check_round_trip(b);
	s = to_json(b);

	/* Identity fields are never rewritten: invalid ones are refused. */
	in.account = "w\xff";
	assert_int_equal(mail_event_new_received(&in, &x), -EINVAL);
	in.account = "";
	assert_int_equal(mail_event_new_received(&in, &x), -EINVAL);
	in.account = NULL;
	assert_int_equal(mail_event_new_received(&in, &x), -EINVAL);
	memset(big, 'm', MAIL_EVENT_NAME_MAX + 1);
	big[MAIL_EVENT_NAME_MAX + 1] = '\0';
	in.account = "w";
	in.mailbox = big;
	assert_int_equal(mail_event_new_received(&in, &x), -EINVAL);
	in.mailbox = "I";
	in.uid = 0;
	assert_int_equal(mail_event_new_received(&in, &x), -EINVAL);
	in.uid = 1;
	in.uidvalidity = 0;
	assert_int_equal(mail_event_new_received(&in, &x), -EINVAL);
	in.uidvalidity = 1;
	in.n_to = 1; /* recipients promised, none given */
	assert_int_equal(mail_event_new_received(&in, &x), -EINVAL);
	assert_null(x);
	assert_int_equal(mail_event_new_received(NULL, &x), -EINVAL);
}

static void test_env(void **state)
{
	_cleanup_mail_event_ struct mail_event *e = new_full(), *sum = NULL;
	_cleanup_strv_free_ char **env = NULL, **env2 = NULL;
	char *const expect[] = {
		"IMAPIDLED_EVENT=mail.received",
		"IMAPIDLED_ACCOUNT=work",
		"IMAPIDLED_MAILBOX=INBOX",
		"IMAPIDLED_UID=4711",
		"IMAPIDLED_UIDVALIDITY=1700000000",
		"IMAPIDLED_MESSAGE_ID=<abc@example.com>",
		"IMAPIDLED_FROM_NAME=Alice Ä",
		"IMAPIDLED_FROM_ADDRESS=alice@example.com",
		"IMAPIDLED_SUBJECT=Hello \"world\" \\ ü\n",
		"IMAPIDLED_COUNT=1",
		NULL,
	};
	char *const expect_summary[] = {
		"IMAPIDLED_EVENT=mail.summary",
		"IMAPIDLED_ACCOUNT=work",
		"IMAPIDLED_MAILBOX=Lists/urgent",
		"IMAPIDLED_UID=15",
		"IMAPIDLED_UIDVALIDITY=7",
		"IMAPIDLED_MESSAGE_ID=",
		"IMAPIDLED_FROM_NAME=",
		"IMAPIDLED_FROM_ADDRESS=",
		"IMAPIDLED_SUBJECT=",
		"IMAPIDLED_COUNT=4",
		NULL,
	};

	assert_int_equal(mail_event_to_env(e, &env), 0);
	assert_true(strv_equal(env, expect));
	assert_int_equal(mail_event_new_summary("work", "Lists/urgent", 7, 10, 15, 4, &sum), 0);
	assert_int_equal(mail_event_to_env(sum, &env2), 0);
	assert_true(strv_equal(env2, expect_summary));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_id),
		cmocka_unit_test(test_json_full),
		cmocka_unit_test(test_json_nulls),
		cmocka_unit_test(test_json_summary),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_from_json_rejects),
		cmocka_unit_test(test_from_json_bounds),
		cmocka_unit_test(test_worst_case_size),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_sanitize),
		cmocka_unit_test(test_env),
	};
	return cmocka_run_group_tests_name("event", tests, NULL, NULL);
}
