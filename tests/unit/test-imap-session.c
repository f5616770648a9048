/* The session state machine driven by scripted servers.
 *
 * A script is a list of steps: bytes from the server, the exact bytes the client must
 * have sent, the events it must have reported, and actions of the owner (TLS ready, time
 * passing, probe, logout, a hang-up). Every script runs
 *   - with each SERVER chunk fed whole,
 *   - byte by byte,
 *   - and, for every run of server bytes between two owner actions, cut in two at every
 *     byte boundary;
 * the transcript and the events must be the same each time (curl's test800 style, with
 * every split).
 *
 * Expectations are checked at checkpoints: before each server chunk (whole mode), before
 * each owner action and at the end (every mode). At a checkpoint, what was sent must equal
 * the concatenation of every C() so far, byte for byte, and the events must match the E()s
 * so far, in order (each expected event is a prefix of the recorded one); EN(t, n) expects n
 * events in a row that each start with t. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "imap/session.h"
#include "log.h"
#include "util.h"

/* Scripts override the default parameters with later designated initializers. */
#pragma GCC diagnostic ignored "-Woverride-init"

/* ---------------------------------------------------------------- the script language */

enum kind {
	END,
	SERVER,      /* bytes from the server; joined with its neighbours in split modes */
	SERVER_ONCE, /* bytes fed in one call in every mode (a barrier) */
	SERVER_FILL, /* text repeated n times, fed in one call (a barrier) */
	SENT,        /* the client sent exactly these bytes next */
	EVENT,       /* the next event starts with this text */
	EVENTS,      /* the next n events each start with this text */
	TLS_READY,   /* the STARTTLS handshake finished */
	ADVANCE,     /* time passes: n µs; the owner's timer fires if it is due */
	DEADLINE,    /* the session's deadline is n µs from now (USEC_INFINITY: none) */
	PROBE,       /* imap_session_probe() */
	LOGOUT,      /* imap_session_logout() */
	HANGUP,      /* imap_session_transport_closed() */
	SEND_FAILS,  /* every later ops->send fails with -EPIPE */
};

struct step {
	enum kind kind;
	const char *text;
	uint64_t n;
};

#define S(t) { SERVER, t, 0 }
#define S1(t) { SERVER_ONCE, t, 0 }
#define FILL(t, n) { SERVER_FILL, t, n }
#define C(t) { SENT, t, 0 }
#define E(t) { EVENT, t, 0 }
#define EN(t, n) { EVENTS, t, n }
#define CLOSED(cls) { EVENT, "closed " #cls, 0 }
#define TLS { TLS_READY, NULL, 0 }
#define WAIT(u) { ADVANCE, NULL, u }
#define DL(u) { DEADLINE, NULL, u }
#define DO_PROBE { PROBE, NULL, 0 }
#define DO_LOGOUT { LOGOUT, NULL, 0 }
#define DO_HANGUP { HANGUP, NULL, 0 }
#define DO_SEND_FAILS { SEND_FAILS, NULL, 0 }

#define SEC USEC_PER_SEC
#define MINUTE USEC_PER_MINUTE
#define PASSWORD "secret"
#define TOKEN "tok"

struct script {
	const char *name;
	struct imap_session_params p;
	bool secret_never_sent; /* no credential may appear in the transcript, in any form */
	const struct step *steps;
};

#define PARAMS(...)                                                                        \
	{ .name = "t/INBOX", .goal = IMAP_GOAL_WATCH, .tls = TLS_IMPLICIT,                 \
	  .host = "imap.example.com", .port = 993, .username = "alice",                    \
	  .password = PASSWORD, .mailbox = "INBOX", .catch_up = 50,                        \
	  .idle_refresh = 10 * MINUTE, .poll_interval = 2 * MINUTE, .reply_timeout = 30 * SEC,   \
	  .greeting_timeout = 20 * SEC, __VA_ARGS__ }
#define SCRIPT(nm, params, ...) \
	{ .name = nm, .p = params, .steps = (const struct step[]){ __VA_ARGS__, { END } } }
#define HOSTILE(nm, params, ...)                                    \
	{ .name = "hostile: " nm, .p = params, .secret_never_sent = true, \
	  .steps = (const struct step[]){ __VA_ARGS__, { END } } }
/* Hostility after a legitimate login: the credential was sent, and rightly. */
#define HOSTILE_LOGGED_IN(nm, params, ...) \
	{ .name = "hostile: " nm, .p = params,   \
	  .steps = (const struct step[]){ __VA_ARGS__, { END } } }

/* ---------------------------------------------------------------- common exchanges */

#define GREETING "* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN SASL-IR] ready\r\n"
#define PLAIN_IR "AGFsaWNlAHNlY3JldA==" /* "\0alice\0secret" */
#define FETCH_NEW "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)"

/* Implicit TLS, AUTH=PLAIN with SASL-IR, capabilities in the OK; then EXAMINE is sent. */
#define LOGIN_STEPS                                                  \
	S(GREETING), C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),    \
	S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 EXAMINE INBOX\r\n")

#define SELECT_AS(tag, uidvalidity, uidnext)                                               \
	S("* 3 EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Answered \\Seen)\r\n"                     \
	  "* OK [UIDVALIDITY " uidvalidity "] UIDs valid\r\n"                              \
	  "* OK [UIDNEXT " uidnext "] predicted next UID\r\n" tag " OK [READ-ONLY] done\r\n")
#define SELECT(uidvalidity, uidnext) SELECT_AS("a2", uidvalidity, uidnext)

/* A first run up to IDLE: a3 IDLE is in flight and was answered. */
#define IDLE_STEPS                                                               \
	LOGIN_STEPS, SELECT("7", "5"), E("selected uidvalidity=7 last=4 baseline=1"), \
	C("a3 IDLE\r\n"), S("+ idling\r\n"), E("idle")

/* The same with a server without IDLE: in the poll wait. */
#define POLL_STEPS                                                                           \
	S("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n"),                       \
	C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"), S("a1 OK [CAPABILITY IMAP4rev1] ok\r\n"), \
	C("a2 EXAMINE INBOX\r\n"), SELECT("7", "5"),                                          \
	E("selected uidvalidity=7 last=4 baseline=1"), E("idle")

/* QRESYNC offered and enabled; then EXAMINE (a3) is sent. */
#define QRESYNC_LOGIN_STEPS                                                        \
	S(GREETING), C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),                     \
	S("a1 OK [CAPABILITY IMAP4rev1 IDLE ENABLE CONDSTORE QRESYNC] logged in\r\n"), \
	C("a2 ENABLE QRESYNC\r\n"), S("* ENABLED QRESYNC\r\na2 OK enabled\r\n"),     \
	C("a3 EXAMINE INBOX\r\n")

/* The same up to IDLE on a first run: last UID 4, a4 IDLE answered. */
#define QRESYNC_IDLE_STEPS                                                              \
	QRESYNC_LOGIN_STEPS, SELECT_AS("a3", "7", "5"),                                   \
	E("selected uidvalidity=7 last=4 baseline=1"), C("a4 IDLE\r\n"), S("+ idling\r\n"), \
	E("idle")

/* Mark UID 5 of INBOX (UIDVALIDITY 7) as read. */
#define STORE_PARAMS(...) \
	PARAMS(.goal = IMAP_GOAL_STORE_SEEN, .uidvalidity = 7, .store_uid = 5, __VA_ARGS__)
#define STORE_SELECT(uidvalidity)                                                       \
	S("* FLAGS (\\Seen)\r\n* 3 EXISTS\r\n* OK [UIDVALIDITY " uidvalidity "] x\r\n"    \
	  "* OK [UIDNEXT 9] x\r\na2 OK [READ-WRITE] Select completed\r\n")

/* One message as UID FETCH returns it. */
#define MSG(seq, uid, flags, subject)                                                      \
	"* " seq " FETCH (UID " uid " FLAGS (" flags ") INTERNALDATE \"17-Jul-2024 02:44:25 " \
	"+0000\" RFC822.SIZE 1234 ENVELOPE (\"Wed, 17 Jul 2024 02:44:25 +0000\" \"" subject   \
	"\" ((\"Ann\" NIL \"ann\" \"example.com\")) NIL NIL ((NIL NIL \"alice\" "              \
	"\"example.com\")) NIL NIL NIL \"<" uid "@example.com>\"))\r\n"

/* ---------------------------------------------------------------- the recorder */

#define MAX_EVENTS 2048

struct rec {
	char *sent;
	size_t sent_len, sent_cap;
	char *events[MAX_EVENTS];
	size_t n_events;
	bool closed;
	bool send_fails;
};

static void rec_sent(struct rec *r, const void *data, size_t len)
{
	if (r->sent_len + len + 1 > r->sent_cap) {
		r->sent_cap = (r->sent_len + len + 1) * 2;
		r->sent = realloc(r->sent, r->sent_cap);
		assert_non_null(r->sent);
	}
	memcpy(r->sent + r->sent_len, data, len);
	r->sent_len += len;
	r->sent[r->sent_len] = '\0';
}

static void rec_event(struct rec *r, const char *fmt, ...) _printf_(2, 3);
static void rec_event(struct rec *r, const char *fmt, ...)
{
	char *e, *tagged;
	va_list ap;

	va_start(ap, fmt);
	assert_true(vasprintf(&e, fmt, ap) >= 0);
	va_end(ap);
	if (r->closed) { /* nothing may follow closed: make that a visible mismatch */
		assert_true(asprintf(&tagged, "AFTER-CLOSED %s", e) >= 0);
		free(e);
		e = tagged;
	}
	assert_true(r->n_events < ELEMENTSOF(r->events));
	r->events[r->n_events++] = e;
}

static int op_send(void *ud, const void *data, size_t len)
{
	struct rec *r = ud;

	if (r->closed)
		rec_event(r, "send");
	if (r->send_fails)
		return -EPIPE;
	rec_sent(r, data, len);
	return 0;
}

static int op_start_tls(void *ud)
{
	rec_event(ud, "start_tls");
	return 0;
}

static void op_selected(void *ud, uint32_t uidvalidity, uint32_t last_uid, bool baseline)
{
	rec_event(ud, "selected uidvalidity=%u last=%u baseline=%d", uidvalidity, last_uid,
		  baseline);
}

static void op_message(void *ud, const struct imap_fetch *f)
{
	rec_event(ud, "message uid=%u seen=%d subject=%s", f->uid,
		  !!(f->has_flags && (f->flags & IMAP_FLAG_SEEN)),
		  f->has_envelope ? strna(f->envelope.subject) : "(no envelope)");
}

static void op_summary(void *ud, uint32_t first, uint32_t last, uint32_t count)
{
	rec_event(ud, "summary %u-%u count=%u", first, last, count);
}

static void op_skipped(void *ud, uint32_t uid)
{
	rec_event(ud, "skipped uid=%u", uid);
}

static void op_flags_changed(void *ud, uint32_t uid, unsigned flags)
{
	rec_event(ud, "flags uid=%u seen=%d", uid, !!(flags & IMAP_FLAG_SEEN));
}

static void op_expunged(void *ud, uint32_t uid)
{
	rec_event(ud, "expunged uid=%u", uid);
}

static void op_stored(void *ud, int result, const char *why)
{
	assert_non_null(why);
	rec_event(ud, "stored %s %s", result ? strerrorname_np(-result) : "0", why);
}

static void op_idle(void *ud)
{
	rec_event(ud, "idle");
}

static void op_listed(void *ud, const char *name, bool noselect)
{
	rec_event(ud, "listed <%s> noselect=%d", name, noselect);
}

static void op_alert(void *ud, const char *text)
{
	rec_event(ud, "alert <%s>", text);
}

static const char *failure_name(enum imap_failure f)
{
	static const char *const names[] = {
		[IMAP_FAIL_NONE] = "NONE",           [IMAP_FAIL_TRANSIENT] = "TRANSIENT",
		[IMAP_FAIL_AUTH] = "AUTH",           [IMAP_FAIL_TOO_MANY] = "TOO_MANY",
		[IMAP_FAIL_NO_MAILBOX] = "NO_MAILBOX", [IMAP_FAIL_FINAL] = "FINAL",
	};
	return (size_t)f < ELEMENTSOF(names) ? names[f] : "?";
}

static void op_closed(void *ud, enum imap_failure f, int error, const char *why)
{
	struct rec *r = ud;

	assert_non_null(why);
	rec_event(r, "closed %s %s: %s", failure_name(f), error ? strerrorname_np(error) : "0",
		  why);
	r->closed = true;
}

static const struct imap_session_ops ops = {
	.send = op_send,
	.start_tls = op_start_tls,
	.selected = op_selected,
	.message = op_message,
	.summary = op_summary,
	.skipped = op_skipped,
	.idle = op_idle,
	.flags_changed = op_flags_changed,
	.expunged = op_expunged,
	.stored = op_stored,
	.listed = op_listed,
	.alert = op_alert,
	.closed = op_closed,
};

static void rec_done(struct rec *r)
{
	free(r->sent);
	for (size_t i = 0; i < r->n_events; i++)
		free(r->events[i]);
}

/* ---------------------------------------------------------------- secrets in transcripts */

static int b64_value(char c)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c ? strchr(alphabet, c) : NULL;
	return p ? (int)(p - alphabet) : -1;
}

/* Decode a run of base64 characters (padding and trailing bits ignored). */
static size_t b64_decode(const char *in, size_t len, char *out)
{
	size_t n = 0;
	unsigned acc = 0, bits = 0;

	for (size_t i = 0; i < len; i++) {
		acc = acc << 6 | (unsigned)b64_value(in[i]);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (char)(acc >> bits & 0xff);
		}
	}
	return n;
}

/* The secret raw, or inside any base64 word of the transcript. */
static bool transcript_has(const char *t, size_t len, const char *secret)
{
	size_t sl = strlen(secret);

	if (memmem(t, len, secret, sl))
		return true;
	for (size_t i = 0; i < len;) {
		size_t j = i;
		while (j < len && b64_value(t[j]) >= 0)
			j++;
		if (j - i >= 4) {
			_cleanup_free_ char *d = malloc(j - i);
			assert_non_null(d);
			size_t n = b64_decode(t + i, j - i, d);
			if (memmem(d, n, secret, sl))
				return true;
		}
		i = j + 1;
	}
	return false;
}

static void test_transcript_has(void **state)
{
	const char *t = "a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n";

	assert_true(transcript_has(t, strlen(t), "secret"));
	assert_true(transcript_has(t, strlen(t), "alice"));
	assert_true(transcript_has("a1 LOGIN x secret\r\n", 19, "secret"));
	assert_false(transcript_has(t, strlen(t), "bob"));
}

/* ---------------------------------------------------------------- the driver */

enum mode {
	WHOLE,
	BYTEWISE,
	SPLIT, /* every run of server bytes cut in two at one offset */
};

struct run {
	const struct script *sc;
	enum mode mode;
	size_t cut;
	struct imap_session *s;
	struct rec rec;
	usec_t now;

	char *exp_sent; /* concatenated C() so far */
	size_t exp_len;
	const char *exp_events[MAX_EVENTS];
	size_t n_exp_events;
	char *pending; /* server bytes not fed yet (split modes) */
	size_t pending_len;
	char *log; /* every debug line the session logged */
	size_t log_len;
};

static void print_escaped(const char *label, const char *s, size_t len)
{
	fprintf(stderr, "  %s: \"", label);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r')
			fputs("\\r", stderr);
		else if (c == '\n')
			fputs("\\n\"\n      \"", stderr);
		else if (c < 0x20 || c == 0x7f)
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
	fputs("\"\n", stderr);
}

static const char *mode_name(const struct run *r, char *buf, size_t size)
{
	if (r->mode == WHOLE)
		return "whole chunks";
	if (r->mode == BYTEWISE)
		return "byte by byte";
	snprintf(buf, size, "runs cut at offset %zu", r->cut);
	return buf;
}

static void checkpoint(struct run *r, size_t step)
{
	bool ok = r->rec.sent_len == r->exp_len &&
		  memcmp(r->rec.sent ? r->rec.sent : "", r->exp_sent ? r->exp_sent : "",
			 r->exp_len) == 0 &&
		  r->rec.n_events == r->n_exp_events;
	char buf[64];

	for (size_t i = 0; ok && i < r->n_exp_events; i++)
		ok = strncmp(r->rec.events[i], r->exp_events[i], strlen(r->exp_events[i])) == 0;
	if (ok)
		return;
	fprintf(stderr, "script \"%s\" (%s), checkpoint before step %zu:\n", r->sc->name,
		mode_name(r, buf, sizeof(buf)), step);
	print_escaped("expected sent", r->exp_sent ? r->exp_sent : "", r->exp_len);
	print_escaped("actually sent", r->rec.sent ? r->rec.sent : "", r->rec.sent_len);
	for (size_t i = 0; i < MAX(r->n_exp_events, r->rec.n_events); i++)
		fprintf(stderr, "  event %zu: expected \"%s\"\n             got      \"%s\"\n", i,
			i < r->n_exp_events ? r->exp_events[i] : "(none)",
			i < r->rec.n_events ? r->rec.events[i] : "(none)");
	fail_msg("script \"%s\": transcript or events differ", r->sc->name);
}

static void feed(struct run *r, const char *data, size_t len)
{
	int k = imap_session_feed(r->s, data, len, r->now);

	/* feed fails exactly when the session is dead */
	if ((k < 0) != r->rec.closed)
		fail_msg("script \"%s\": feed returned %d, closed=%d", r->sc->name, k,
			 r->rec.closed);
}

static void flush_pending(struct run *r)
{
	size_t len = r->pending_len;

	if (r->mode == BYTEWISE) {
		for (size_t i = 0; i < len; i++)
			feed(r, r->pending + i, 1);
	} else if (r->mode == SPLIT && r->cut < len) {
		feed(r, r->pending, r->cut);
		feed(r, r->pending + r->cut, len - r->cut);
	} else if (len > 0) {
		feed(r, r->pending, len);
	}
	r->pending_len = 0;
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
	*buf = realloc(*buf, *len + n + 1);
	assert_non_null(*buf);
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/* An owner action or a forced chunk: feed what is pending, then check. */
static void barrier(struct run *r, size_t step)
{
	flush_pending(r);
	checkpoint(r, step);
}

static void do_step(struct run *r, const struct step *st, size_t i)
{
	switch (st->kind) {
	case SERVER:
		if (r->mode == WHOLE) {
			checkpoint(r, i);
			feed(r, st->text, strlen(st->text));
		} else {
			append(&r->pending, &r->pending_len, st->text, strlen(st->text));
		}
		return;
	case SENT:
		append(&r->exp_sent, &r->exp_len, st->text, strlen(st->text));
		return;
	case EVENT:
		assert_true(r->n_exp_events < ELEMENTSOF(r->exp_events));
		r->exp_events[r->n_exp_events++] = st->text;
		return;
	case EVENTS:
		assert_true(r->n_exp_events + st->n <= ELEMENTSOF(r->exp_events));
		for (uint64_t k = 0; k < st->n; k++)
			r->exp_events[r->n_exp_events++] = st->text;
		return;
	default:
		break;
	}
	barrier(r, i);
	switch (st->kind) {
	case SERVER_ONCE:
		feed(r, st->text, strlen(st->text));
		break;
	case SERVER_FILL: {
		size_t piece = strlen(st->text), len = piece * st->n;
		_cleanup_free_ char *fill = malloc(len);
		assert_non_null(fill);
		for (uint64_t k = 0; k < st->n; k++)
			memcpy(fill + k * piece, st->text, piece);
		feed(r, fill, len);
		break;
	}
	case TLS_READY:
		imap_session_tls_ready(r->s, r->now);
		break;
	case ADVANCE:
		r->now += st->n;
		if (r->now >= imap_session_deadline(r->s))
			imap_session_timeout(r->s, r->now);
		break;
	case DEADLINE: {
		usec_t d = imap_session_deadline(r->s);
		if (st->n == USEC_INFINITY)
			assert_true(d == USEC_INFINITY);
		else if (d == USEC_INFINITY || d - r->now != st->n)
			fail_msg("script \"%s\" step %zu: deadline in %lld µs, expected %llu",
				 r->sc->name, i,
				 d == USEC_INFINITY ? -1LL : (long long)(d - r->now),
				 (unsigned long long)st->n);
		break;
	}
	case PROBE:
		imap_session_probe(r->s, r->now);
		break;
	case LOGOUT:
		imap_session_logout(r->s, r->now);
		break;
	case HANGUP:
		imap_session_transport_closed(r->s, 0, NULL);
		break;
	case SEND_FAILS:
		r->rec.send_fails = true;
		break;
	default:
		fail_msg("bad step kind %d", st->kind);
	}
}

static void capture_log(int level, const char *line, void *userdata)
{
	struct run *r = userdata;

	append(&r->log, &r->log_len, line, strlen(line));
	append(&r->log, &r->log_len, "\n", 1);
}

static void run_script(const struct script *sc, enum mode mode, size_t cut)
{
	struct run r = { .sc = sc, .mode = mode, .cut = cut, .now = 1000 * SEC };
	const char *secret = sc->p.password ? sc->p.password : sc->p.oauth_token;
	size_t i;

	/* Wire traces are checked for secrets once; the many split runs go quicker without. */
	log_set_level(mode == SPLIT ? LOG_WARNING : LOG_DEBUG);
	log_set_sink(capture_log, &r);
	assert_int_equal(imap_session_new(&sc->p, &ops, &r.rec, r.now, &r.s), 0);
	imap_session_connected(r.s, sc->p.tls == TLS_IMPLICIT, r.now);
	for (i = 0; sc->steps[i].kind != END; i++)
		do_step(&r, &sc->steps[i], i);
	barrier(&r, i);
	if (sc->secret_never_sent && secret &&
	    transcript_has(r.rec.sent ? r.rec.sent : "", r.rec.sent_len, secret))
		fail_msg("script \"%s\": the credential was sent", sc->name);
	/* Wire traces are redacted by the session itself, not only by the log's registry. */
	if (secret && r.log && transcript_has(r.log, r.log_len, secret)) {
		fputs(r.log, stderr);
		fail_msg("script \"%s\": the credential was logged", sc->name);
	}
	/* A dead session stays dead and quiet. */
	if (r.rec.closed) {
		assert_int_equal(imap_session_deadline(r.s), USEC_INFINITY);
		assert_true(imap_session_feed(r.s, "* 9 EXISTS\r\n", 12, r.now) < 0);
		assert_false(imap_session_is_idle(r.s));
	}
	r.s = imap_session_free(r.s);
	log_set_sink(NULL, NULL);
	rec_done(&r.rec);
	free(r.exp_sent);
	free(r.pending);
	free(r.log);
}

/* The longest run of server bytes between two barriers. */
static size_t longest_run(const struct script *sc)
{
	size_t best = 0, cur = 0;

	for (const struct step *st = sc->steps;; st++) {
		if (st->kind == SERVER) {
			cur += strlen(st->text);
		} else if (st->kind != SENT && st->kind != EVENT && st->kind != EVENTS) {
			best = MAX(best, cur);
			cur = 0;
		}
		if (st->kind == END)
			return best;
	}
}

static void test_script(void **state)
{
	const struct script *sc = *state;
	size_t longest = longest_run(sc);

	run_script(sc, WHOLE, 0);
	run_script(sc, BYTEWISE, 0);
	for (size_t cut = 1; cut < longest; cut++)
		run_script(sc, SPLIT, cut);
}

/* ---------------------------------------------------------------- happy paths */

static const struct script happy[] = {
	SCRIPT("implicit TLS, AUTH=PLAIN with SASL-IR, first run: baseline, IDLE", PARAMS(),
	       IDLE_STEPS, DL(10 * MINUTE)),

	SCRIPT("AUTH=PLAIN without SASL-IR: the payload follows the +", PARAMS(),
	       S("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN] ready\r\n"),
	       C("a1 AUTHENTICATE PLAIN\r\n"), S("+ \r\n"), C(PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 EXAMINE INBOX\r\n")),

	SCRIPT("LOGIN when AUTH=PLAIN is not offered", PARAMS(),
	       S("* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"), C("a1 LOGIN alice secret\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 EXAMINE INBOX\r\n")),

	SCRIPT("LOGIN with a literal password and LITERAL+: one segment",
	       PARAMS(.password = "pässword"),
	       S("* OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] ready\r\n"),
	       C("a1 LOGIN alice {9+}\r\npässword\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 EXAMINE INBOX\r\n")),

	SCRIPT("LOGIN with a synchronizing literal: the rest after +",
	       PARAMS(.password = "pässword"), S("* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"),
	       C("a1 LOGIN alice {9}\r\n"), S("+ go ahead\r\n"), C("pässword\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 EXAMINE INBOX\r\n")),

	SCRIPT("XOAUTH2 error challenge: empty reply, NO, closed AUTH",
	       PARAMS(.password = NULL, .oauth_token = TOKEN, .auth = AUTH_XOAUTH2),
	       S("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR] ready\r\n"),
	       C("a1 AUTHENTICATE XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2sBAQ==\r\n"),
	       S("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"), C("\r\n"),
	       S("a1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"), CLOSED(AUTH)),

	SCRIPT("XOAUTH2 without SASL-IR: payload after +, error challenge after that",
	       PARAMS(.password = NULL, .oauth_token = TOKEN, .auth = AUTH_XOAUTH2),
	       S("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n"),
	       C("a1 AUTHENTICATE XOAUTH2\r\n"), S("+\r\n"),
	       C("dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2sBAQ==\r\n"),
	       S("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"), C("\r\n"),
	       S("a1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"), CLOSED(AUTH)),

	SCRIPT("OAUTHBEARER chosen by auto when only a token is given",
	       PARAMS(.password = NULL, .oauth_token = TOKEN),
	       S("* OK [CAPABILITY IMAP4rev1 IDLE AUTH=XOAUTH2 AUTH=OAUTHBEARER SASL-IR] hi\r\n"),
	       C("a1 AUTHENTICATE OAUTHBEARER "
		 "bixhPWFsaWNlLAFob3N0PWltYXAuZXhhbXBsZS5jb20BcG9ydD05OTMBYXV0aD1CZWFyZXIgdG9rAQE="
		 "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 EXAMINE INBOX\r\n")),

	SCRIPT("STARTTLS: CAPABILITY, STARTTLS, handshake, CAPABILITY again, login",
	       PARAMS(.tls = TLS_STARTTLS, .port = 143), S("* OK server ready\r\n"),
	       C("a1 CAPABILITY\r\n"),
	       S("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na1 OK done\r\n"),
	       C("a2 STARTTLS\r\n"), S("a2 OK Begin TLS negotiation now\r\n"), E("start_tls"),
	       DL(20 * SEC), TLS, C("a3 CAPABILITY\r\n"),
	       S("* CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN SASL-IR\r\na3 OK done\r\n"),
	       C("a4 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a4 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a5 EXAMINE INBOX\r\n")),

	SCRIPT("STARTTLS offered in the greeting's [CAPABILITY]: no CAPABILITY before it",
	       PARAMS(.tls = TLS_STARTTLS, .port = 143),
	       S("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n"),
	       C("a1 STARTTLS\r\n"), S("a1 OK go\r\n"), E("start_tls"), TLS,
	       C("a2 CAPABILITY\r\n"), S("* CAPABILITY IMAP4rev1 IDLE\r\na2 OK\r\n"),
	       C("a3 LOGIN alice secret\r\n")),

	SCRIPT("capabilities re-read after login; ENABLE CONDSTORE; ID",
	       PARAMS(.send_id = true), S(GREETING), C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK logged in\r\n"), C("a2 CAPABILITY\r\n"),
	       S("* CAPABILITY IMAP4rev1 IDLE ENABLE CONDSTORE ID\r\na2 OK\r\n"),
	       C("a3 ENABLE CONDSTORE\r\n"), S("* ENABLED CONDSTORE\r\na3 OK enabled\r\n"),
	       C("a4 ID (\"name\" \"imapidled\" \"version\" \"" VERSION "\")\r\n"),
	       S("* ID (\"name\" \"Dovecot\")\r\na4 OK\r\n"), C("a5 EXAMINE INBOX\r\n")),

	SCRIPT("tls=none with allow_plaintext: LOGIN in the clear, as configured",
	       PARAMS(.tls = TLS_NONE, .allow_plaintext = true, .port = 143),
	       S("* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"), C("a1 LOGIN alice secret\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 EXAMINE INBOX\r\n")),

	SCRIPT("mailbox names: modified UTF-7, quoted when needed",
	       PARAMS(.mailbox = "Entwürfe/Sent Items"), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"),
	       C("a2 EXAMINE \"Entw&APw-rfe/Sent Items\"\r\n"),
	       S("a2 NO [NONEXISTENT] no such mailbox\r\n"),
	       CLOSED(NO_MAILBOX ENOENT: cannot open mailbox "Entwürfe/Sent Items")),

	SCRIPT("ENABLE and ID refused: both optional", PARAMS(.send_id = true), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE ENABLE CONDSTORE ID] logged in\r\n"),
	       C("a2 ENABLE CONDSTORE\r\n"), S("a2 BAD no\r\n"),
	       C("a3 ID (\"name\" \"imapidled\" \"version\" \"" VERSION "\")\r\n"),
	       S("a3 NO no\r\n"), C("a4 EXAMINE INBOX\r\n")),

	SCRIPT("no ID unless send_id", PARAMS(), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE ID] logged in\r\n"), C("a2 EXAMINE INBOX\r\n")),

	SCRIPT("PREAUTH over implicit TLS: capabilities, then EXAMINE", PARAMS(),
	       S("* PREAUTH [CAPABILITY IMAP4rev1 IDLE] welcome\r\n"), C("a1 CAPABILITY\r\n"),
	       S("* CAPABILITY IMAP4rev1 IDLE\r\na1 OK\r\n"), C("a2 EXAMINE INBOX\r\n")),

	SCRIPT("known state, new mail: UID FETCH last+1:*, messages, IDLE",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), LOGIN_STEPS,
	       SELECT("7", "7"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a3 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("2", "5", "", "Hello") MSG("3", "6", "\\Recent", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=")
			 "a3 OK fetched\r\n"),
	       E("message uid=5 seen=0 subject=Hello"),
	       E("message uid=6 seen=0 subject==?utf-8?q?Gr=C3=BC=C3=9Fe?="),
	       C("a4 IDLE\r\n"), S("+ idling\r\n"), E("idle")),

	SCRIPT("known state, nothing new: straight to IDLE",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), LOGIN_STEPS,
	       SELECT("7", "5"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a3 IDLE\r\n")),

	SCRIPT("EXISTS during IDLE: DONE, UID FETCH, IDLE again", PARAMS(), IDLE_STEPS,
	       S("* 4 EXISTS\r\n"), C("DONE\r\n"), DL(30 * SEC), S("a3 OK IDLE terminated\r\n"),
	       C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("4", "5", "", "New") "a4 OK done\r\n"), E("message uid=5 seen=0 subject=New"),
	       C("a5 IDLE\r\n"), S("+ idling\r\n"), E("idle"), DL(10 * MINUTE)),

	SCRIPT("EXISTS before the IDLE +: DONE right after it", PARAMS(), LOGIN_STEPS,
	       SELECT("7", "5"), E("selected uidvalidity=7 last=4 baseline=1"), C("a3 IDLE\r\n"),
	       S("* 4 EXISTS\r\n* 1 RECENT\r\n"), S("+ idling\r\n"), E("idle"), C("DONE\r\n"),
	       S("a3 OK done\r\n"), C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("4", "5", "", "Early") "a4 OK\r\n"), E("message uid=5 seen=0 subject=Early"),
	       C("a5 IDLE\r\n")),

	SCRIPT("EXISTS during the UID FETCH: another fetch before IDLE", PARAMS(), IDLE_STEPS,
	       S("* 4 EXISTS\r\n"), C("DONE\r\n"), S("a3 OK\r\n"),
	       C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("4", "5", "", "One") "* 5 EXISTS\r\na4 OK\r\n"),
	       E("message uid=5 seen=0 subject=One"), C("a5 UID FETCH 6:* " FETCH_NEW "\r\n"),
	       S(MSG("5", "6", "", "Two") "a5 OK\r\n"), E("message uid=6 seen=0 subject=Two"),
	       C("a6 IDLE\r\n")),

	SCRIPT("UID FETCH n:* answering with an old message: ignored (RFC 3501 *)", PARAMS(),
	       IDLE_STEPS, S("* 4 EXISTS\r\n"), C("DONE\r\n"), S("a3 OK\r\n"),
	       C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"), S(MSG("3", "4", "", "Old") "a4 OK\r\n"),
	       C("a5 IDLE\r\n"), S("+ idling\r\n"), E("idle")),

	SCRIPT("skip_seen: \\Seen messages are skipped, not reported",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4, .skip_seen = true),
	       LOGIN_STEPS, SELECT("7", "8"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a3 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("1", "5", "\\Seen", "Read") MSG("2", "6", "", "Unread")
			 MSG("3", "7", "\\Seen \\Answered", "Read too") "a3 OK\r\n"),
	       E("skipped uid=5"), E("message uid=6 seen=0 subject=Unread"), E("skipped uid=7"),
	       C("a4 IDLE\r\n")),

	SCRIPT("without skip_seen, \\Seen messages are reported",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), LOGIN_STEPS,
	       SELECT("7", "6"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a3 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("1", "5", "\\Seen", "Read") "a3 OK\r\n"),
	       E("message uid=5 seen=1 subject=Read"), C("a4 IDLE\r\n")),

	SCRIPT("catch-up beyond catch_up: scan, summary of the oldest, envelopes of the newest",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4, .catch_up = 2),
	       LOGIN_STEPS, SELECT("7", "10"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a3 UID FETCH 5:* (UID FLAGS)\r\n"),
	       S("* 1 FETCH (UID 5 FLAGS ())\r\n* 2 FETCH (UID 6 FLAGS (\\Seen))\r\n"
		 "* 3 FETCH (UID 7 FLAGS ())\r\n* 4 FETCH (UID 8 FLAGS ())\r\n"
		 "* 5 FETCH (UID 9 FLAGS ())\r\na3 OK\r\n"),
	       E("summary 5-7 count=3"), C("a4 UID FETCH 8:* " FETCH_NEW "\r\n"),
	       S(MSG("4", "8", "", "Eight") MSG("5", "9", "", "Nine") "a4 OK\r\n"),
	       E("message uid=8 seen=0 subject=Eight"), E("message uid=9 seen=0 subject=Nine"),
	       C("a5 IDLE\r\n")),

	SCRIPT("catch-up with skip_seen: seen messages are not counted",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4, .catch_up = 1,
		      .skip_seen = true),
	       LOGIN_STEPS, SELECT("7", "9"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a3 UID FETCH 5:* (UID FLAGS)\r\n"),
	       S("* 1 FETCH (UID 5 FLAGS ())\r\n* 2 FETCH (UID 6 FLAGS (\\Seen))\r\n"
		 "* 3 FETCH (UID 7 FLAGS ())\r\n* 4 FETCH (UID 8 FLAGS (\\Seen))\r\na3 OK\r\n"),
	       E("summary 5-5 count=1"), C("a4 UID FETCH 7:* " FETCH_NEW "\r\n"),
	       S(MSG("3", "7", "", "Seven") MSG("4", "8", "\\Seen", "Eight") "a4 OK\r\n"),
	       E("message uid=7 seen=0 subject=Seven"), E("skipped uid=8"), C("a5 IDLE\r\n")),

	SCRIPT("UIDVALIDITY changed: baseline at the new UIDNEXT, nothing old reported",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), LOGIN_STEPS,
	       SELECT("8", "20"), E("selected uidvalidity=8 last=19 baseline=1"),
	       C("a3 IDLE\r\n")),

	SCRIPT("no UIDNEXT: FETCH * (UID) finds the last UID", PARAMS(), LOGIN_STEPS,
	       S("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\na2 OK EXAMINE done\r\n"),
	       C("a3 FETCH * (UID)\r\n"), S("* 3 FETCH (UID 12)\r\na3 OK\r\n"),
	       E("selected uidvalidity=7 last=12 baseline=1"), C("a4 IDLE\r\n")),

	SCRIPT("no UIDNEXT, empty mailbox: baseline at 0", PARAMS(), LOGIN_STEPS,
	       S("* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\na2 OK EXAMINE done\r\n"),
	       E("selected uidvalidity=7 last=0 baseline=1"), C("a3 IDLE\r\n")),

	SCRIPT("no IDLE: poll wait, NOOP after poll_interval, EXISTS, fetch", PARAMS(),
	       POLL_STEPS, DL(2 * MINUTE),
	       WAIT(2 * MINUTE - 1), WAIT(1), C("a3 NOOP\r\n"), DL(30 * SEC),
	       S("* 4 EXISTS\r\na3 OK NOOP done\r\n"), C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("4", "5", "", "Polled") "a4 OK\r\n"),
	       E("message uid=5 seen=0 subject=Polled"), E("idle"), DL(2 * MINUTE),
	       WAIT(2 * MINUTE),
	       C("a5 NOOP\r\n"), S("a5 OK\r\n"), E("idle")),

	SCRIPT("no IDLE: an unsolicited EXISTS in the poll wait is fetched at once", PARAMS(),
	       POLL_STEPS,
	       S("* 4 EXISTS\r\n"), C("a3 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("4", "5", "", "Pushed") "a3 OK\r\n"),
	       E("message uid=5 seen=0 subject=Pushed"), E("idle"), DL(2 * MINUTE)),

	SCRIPT("IDLE refresh after idle_refresh: DONE, OK, IDLE", PARAMS(), IDLE_STEPS,
	       WAIT(10 * MINUTE - 1), WAIT(1), C("DONE\r\n"), DL(30 * SEC),
	       S("a3 OK IDLE terminated\r\n"), C("a4 IDLE\r\n"), S("+ idling\r\n"), E("idle"),
	       DL(10 * MINUTE)),

	SCRIPT("DONE unanswered for reply_timeout: the link is dead", PARAMS(), IDLE_STEPS,
	       WAIT(10 * MINUTE), C("DONE\r\n"), WAIT(30 * SEC - 1), WAIT(1),
	       CLOSED(TRANSIENT ETIMEDOUT)),

	SCRIPT("IDLE never answered: the link is dead", PARAMS(), LOGIN_STEPS,
	       SELECT("7", "5"), E("selected"), C("a3 IDLE\r\n"), WAIT(30 * SEC),
	       CLOSED(TRANSIENT ETIMEDOUT)),

	SCRIPT("greeting timeout", PARAMS(), DL(20 * SEC), WAIT(20 * SEC - 1), WAIT(1),
	       CLOSED(TRANSIENT ETIMEDOUT)),

	SCRIPT("STARTTLS handshake timeout", PARAMS(.tls = TLS_STARTTLS),
	       S("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"), C("a1 STARTTLS\r\n"),
	       S("a1 OK go\r\n"), E("start_tls"), WAIT(20 * SEC), CLOSED(TRANSIENT ETIMEDOUT)),

	SCRIPT("probe in IDLE: DONE, OK, IDLE", PARAMS(), IDLE_STEPS, DO_PROBE, C("DONE\r\n"),
	       DL(30 * SEC), S("a3 OK\r\n"), C("a4 IDLE\r\n"), S("+ idling\r\n"), E("idle")),

	SCRIPT("probe unanswered: the link is dead", PARAMS(), IDLE_STEPS, DO_PROBE,
	       C("DONE\r\n"), WAIT(30 * SEC), CLOSED(TRANSIENT ETIMEDOUT)),

	SCRIPT("probe while a command is in flight: answered by that command", PARAMS(),
	       LOGIN_STEPS, SELECT("7", "5"), E("selected"), C("a3 IDLE\r\n"), DO_PROBE,
	       S("+ idling\r\n"), E("idle"), C("DONE\r\n"), S("a3 OK\r\n"), C("a4 IDLE\r\n")),

	SCRIPT("probe in a poll wait: NOOP", PARAMS(),
	       POLL_STEPS, DO_PROBE,
	       C("a3 NOOP\r\n"), S("a3 OK\r\n"), E("idle")),

	SCRIPT("logout in IDLE: DONE, LOGOUT, BYE + OK, closed NONE", PARAMS(), IDLE_STEPS,
	       DO_LOGOUT, C("DONE\r\n"), S("a3 OK\r\n"), C("a4 LOGOUT\r\n"),
	       S("* BYE logging out\r\na4 OK bye\r\n"), CLOSED(NONE)),

	SCRIPT("logout, then the server hangs up before the OK: still clean", PARAMS(),
	       IDLE_STEPS, DO_LOGOUT, C("DONE\r\n"), S("a3 OK\r\n"), C("a4 LOGOUT\r\n"),
	       S("* BYE logging out\r\n"), DO_HANGUP, CLOSED(NONE)),

	SCRIPT("logout during login: LOGOUT right after it, no EXAMINE", PARAMS(), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"), DO_LOGOUT, S("a1 OK\r\n"),
	       C("a2 LOGOUT\r\n"), S("* BYE\r\na2 OK\r\n"), CLOSED(NONE)),

	SCRIPT("logout during EXAMINE: no catch-up fetch",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), LOGIN_STEPS, DO_LOGOUT,
	       SELECT("7", "9"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a3 LOGOUT\r\n"), S("a3 OK\r\n"), CLOSED(NONE)),

	SCRIPT("logout in a poll wait: LOGOUT at once", PARAMS(),
	       POLL_STEPS, DO_LOGOUT,
	       C("a3 LOGOUT\r\n"), S("* BYE\r\na3 OK\r\n"), CLOSED(NONE)),

	SCRIPT("logout before the greeting", PARAMS(), DO_LOGOUT, CLOSED(NONE)),

	SCRIPT("PROBE goal: LIST, listed (mUTF-7 decoded, \\Noselect), LOGOUT",
	       PARAMS(.goal = IMAP_GOAL_PROBE, .mailbox = NULL), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 LIST \"\" \"*\"\r\n"),
	       S("* LIST (\\HasNoChildren) \"/\" INBOX\r\n"
		 "* LIST (\\Noselect \\HasChildren) \"/\" \"Entw&APw-rfe\"\r\n"
		 "* LIST (\\HasNoChildren) \"/\" {12}\r\nLists/urgent\r\n"
		 "* LIST (\\NonExistent) \"/\" Gone\r\n"
		 "a2 OK LIST done\r\n"),
	       E("listed <INBOX> noselect=0"), E("listed <Entwürfe> noselect=1"),
	       E("listed <Lists/urgent> noselect=0"), E("listed <Gone> noselect=1"),
	       C("a3 LOGOUT\r\n"), S("* BYE bye\r\na3 OK\r\n"), CLOSED(NONE)),

	SCRIPT("[ALERT] in an untagged OK: shown, control characters removed", PARAMS(),
	       IDLE_STEPS, S("* OK [ALERT] Mailbox \x1b[31mover quota\x7f now\r\n"),
	       E("alert <Mailbox [31mover quota now>")),

	SCRIPT("[ALERT] in the greeting and in a login NO", PARAMS(),
	       S("* OK [ALERT] System going down at 22:00\r\n"),
	       E("alert <System going down at 22:00>"), C("a1 CAPABILITY\r\n"),
	       S("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK\r\n"),
	       C("a2 AUTHENTICATE PLAIN\r\n"), S("+\r\n"), C(PLAIN_IR "\r\n"),
	       S("a2 NO [ALERT] Password expired\r\n"), E("alert <Password expired>"),
	       CLOSED(AUTH)),

	SCRIPT("login NO [AUTHENTICATIONFAILED]: AUTH", PARAMS(), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
	       CLOSED(AUTH EACCES: login as alice rejected: Authentication failed.)),

	SCRIPT("login NO [UNAVAILABLE]: TRANSIENT", PARAMS(), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 NO [UNAVAILABLE] Backend down\r\n"), CLOSED(TRANSIENT)),

	SCRIPT("login NO too many connections (in words): TOO_MANY", PARAMS(), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 NO Too many simultaneous connections for alice\r\n"), CLOSED(TOO_MANY)),

	SCRIPT("login NO [LIMIT]: TOO_MANY", PARAMS(), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"), S("a1 NO [LIMIT] Go away\r\n"),
	       CLOSED(TOO_MANY)),

	SCRIPT("login BAD: AUTH, not a hot loop", PARAMS(), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"), S("a1 BAD Invalid base64\r\n"),
	       CLOSED(AUTH)),

	SCRIPT("EXAMINE NO: NO_MAILBOX", PARAMS(), LOGIN_STEPS,
	       S("a2 NO [NONEXISTENT] Mailbox doesn't exist: INBOX\r\n"), CLOSED(NO_MAILBOX)),

	SCRIPT("greeting BYE: TRANSIENT", PARAMS(), S("* BYE Server shutting down\r\n"),
	       CLOSED(TRANSIENT)),

	SCRIPT("greeting BYE too many connections: TOO_MANY", PARAMS(),
	       S("* BYE Too many connections from your IP\r\n"), CLOSED(TOO_MANY)),

	SCRIPT("BYE during IDLE, then the hang-up: TRANSIENT", PARAMS(), IDLE_STEPS,
	       S("* BYE Autologout; idle for too long\r\n"), DO_HANGUP,
	       CLOSED(TRANSIENT ECONNRESET: server closed the connection after BYE)),

	SCRIPT("hang-up during IDLE: TRANSIENT", PARAMS(), IDLE_STEPS, DO_HANGUP,
	       CLOSED(TRANSIENT)),

	SCRIPT("send fails: TRANSIENT", PARAMS(), IDLE_STEPS, DO_SEND_FAILS,
	       S("* 4 EXISTS\r\n"), CLOSED(TRANSIENT EPIPE)),

	/* ---- what happens to reported messages ---- */

	SCRIPT("QRESYNC offered: ENABLE QRESYNC; flag changes and VANISHED name UIDs",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), QRESYNC_LOGIN_STEPS,
	       SELECT_AS("a3", "7", "7"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("2", "5", "", "Hello") MSG("3", "6", "", "World") "a4 OK\r\n"),
	       E("message uid=5"), E("message uid=6"), C("a5 IDLE\r\n"), S("+ idling\r\n"),
	       E("idle"),
	       /* another client read UID 5: Dovecot's form, with MODSEQ */
	       S("* 2 FETCH (UID 5 MODSEQ (12) FLAGS (\\Seen))\r\n"), E("flags uid=5 seen=1"),
	       S("* 2 FETCH (FLAGS (\\Seen \\Flagged) UID 5 MODSEQ (13))\r\n"),
	       E("flags uid=5 seen=1"),
	       /* no UID: not trusted by number under QRESYNC; above last_uid: new mail */
	       S("* 3 FETCH (FLAGS (\\Seen))\r\n* 9 FETCH (UID 9 FLAGS ())\r\n"),
	       S("* VANISHED 5\r\n"), E("expunged uid=5"),
	       S("* VANISHED 1:3,6\r\n"), E("expunged uid=1"), E("expunged uid=2"),
	       E("expunged uid=3"), E("expunged uid=6"),
	       /* EXISTS counted down by the VANISHED: one message more is new mail */
	       S("* 1 EXISTS\r\n"), C("DONE\r\n"), S("a5 OK\r\n"),
	       C("a6 UID FETCH 7:* " FETCH_NEW "\r\n")),

	SCRIPT("QRESYNC: a stray EXPUNGE is not mapped to a UID",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), QRESYNC_LOGIN_STEPS,
	       SELECT_AS("a3", "7", "6"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"), S(MSG("3", "5", "", "Hello") "a4 OK\r\n"),
	       E("message uid=5"), C("a5 IDLE\r\n"), S("+ idling\r\n"), E("idle"),
	       S("* 3 EXPUNGE\r\n* 3 EXISTS\r\n"), C("DONE\r\n")),

	SCRIPT("CONDSTORE only: ENABLE CONDSTORE; EXPUNGE mapped through sequence numbers",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE ENABLE CONDSTORE] logged in\r\n"),
	       C("a2 ENABLE CONDSTORE\r\n"), S("* ENABLED CONDSTORE\r\na2 OK\r\n"),
	       C("a3 EXAMINE INBOX\r\n"), SELECT_AS("a3", "7", "7"),
	       E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("2", "5", "", "Hello") MSG("3", "6", "", "World") "a4 OK\r\n"),
	       E("message uid=5"), E("message uid=6"), C("a5 IDLE\r\n"), S("+ idling\r\n"),
	       E("idle"),
	       /* message 1 (not ours) goes: 5 and 6 move down to 1 and 2 */
	       S("* 1 EXPUNGE\r\n"),
	       S("* 1 FETCH (FLAGS (\\Seen))\r\n"), E("flags uid=5 seen=1"),
	       S("* 2 FETCH (UID 6 FLAGS (\\Seen) MODSEQ (4))\r\n"), E("flags uid=6 seen=1"),
	       S("* 2 EXPUNGE\r\n"), E("expunged uid=6"),
	       S("* 1 EXPUNGE\r\n"), E("expunged uid=5"),
	       /* nothing known any more, and a VANISHED nobody enabled is ignored */
	       S("* 1 FETCH (FLAGS (\\Seen))\r\n* VANISHED 1:6\r\n"),
	       S("* 1 EXISTS\r\n"), C("DONE\r\n"), S("a5 OK\r\n"),
	       C("a6 UID FETCH 7:* " FETCH_NEW "\r\n")),

	SCRIPT("no ENABLE: flag changes of reported messages found by number, others by UID",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), LOGIN_STEPS,
	       SELECT("7", "6"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a3 UID FETCH 5:* " FETCH_NEW "\r\n"), S(MSG("3", "5", "", "Hello") "a3 OK\r\n"),
	       E("message uid=5"), C("a4 IDLE\r\n"), S("+ idling\r\n"), E("idle"),
	       S("* 3 FETCH (FLAGS (\\Seen))\r\n"), E("flags uid=5 seen=1"),
	       S("* 2 FETCH (FLAGS (\\Seen))\r\n"),
	       S("* 1 FETCH (UID 2 FLAGS (\\Seen))\r\n"), E("flags uid=2 seen=1"),
	       S("* 3 FETCH (FLAGS ())\r\n"), E("flags uid=5 seen=0"),
	       S("* 3 EXPUNGE\r\n"), E("expunged uid=5")),

	SCRIPT("flag changes during a UID FETCH are told apart from its answers",
	       PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), LOGIN_STEPS,
	       SELECT("7", "6"), E("selected uidvalidity=7 last=4 baseline=0"),
	       C("a3 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S("* 1 FETCH (UID 3 FLAGS (\\Seen))\r\n" MSG("3", "5", "\\Seen", "Hello")
		 "* 3 FETCH (UID 5 FLAGS (\\Seen))\r\na3 OK\r\n"),
	       E("flags uid=3 seen=1"), E("message uid=5 seen=1"), E("flags uid=5 seen=1"),
	       C("a4 IDLE\r\n")),

	SCRIPT("nothing new: the answer of UID FETCH n:* for the last message is not a change",
	       PARAMS(), IDLE_STEPS, S("* 4 EXISTS\r\n"), C("DONE\r\n"), S("a3 OK\r\n"),
	       C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"),
	       S(MSG("3", "4", "\\Seen", "Old") "a4 OK\r\n"), C("a5 IDLE\r\n")),

	/* ---- STORE_SEEN: the mark-read action ---- */

	SCRIPT("STORE_SEEN: SELECT, UIDVALIDITY checked, UID STORE, LOGOUT", STORE_PARAMS(),
	       S(GREETING), C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE ENABLE CONDSTORE QRESYNC] logged in\r\n"),
	       C("a2 SELECT INBOX\r\n"), STORE_SELECT("7"),
	       C("a3 UID STORE 5 +FLAGS.SILENT (\\Seen)\r\n"), S("a3 OK Store completed\r\n"),
	       E("stored 0"), C("a4 LOGOUT\r\n"), S("* BYE Logging out\r\na4 OK\r\n"),
	       CLOSED(NONE)),

	SCRIPT("STORE_SEEN with LOGIN and a mailbox name to encode", STORE_PARAMS(
		       .mailbox = "Entwürfe"),
	       S("* OK [CAPABILITY IMAP4rev1] ready\r\n"), C("a1 LOGIN alice secret\r\n"),
	       S("a1 OK logged in\r\n"), C("a2 CAPABILITY\r\n"),
	       S("* CAPABILITY IMAP4rev1 ID\r\na2 OK\r\n"), C("a3 SELECT Entw&APw-rfe\r\n"),
	       S("* OK [UIDVALIDITY 7] x\r\na3 OK [READ-WRITE] done\r\n"),
	       C("a4 UID STORE 5 +FLAGS.SILENT (\\Seen)\r\n"), S("a4 OK\r\n"), E("stored 0"),
	       C("a5 LOGOUT\r\n"), S("a5 OK\r\n"), CLOSED(NONE)),

	SCRIPT("STORE_SEEN: UIDVALIDITY changed, so the UID is another message: no STORE",
	       STORE_PARAMS(), S(GREETING), C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 SELECT INBOX\r\n"),
	       STORE_SELECT("8"), E("stored ESTALE UIDVALIDITY is now 8, not 7"),
	       C("a3 LOGOUT\r\n"), S("a3 OK\r\n"), CLOSED(NONE)),

	SCRIPT("STORE_SEEN: STORE refused (read-only mailbox): reported, LOGOUT",
	       STORE_PARAMS(), S(GREETING), C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 SELECT INBOX\r\n"),
	       STORE_SELECT("7"), C("a3 UID STORE 5 +FLAGS.SILENT (\\Seen)\r\n"),
	       S("a3 NO [READ-ONLY] Mailbox is read-only\r\n"),
	       E("stored EIO server refused UID STORE: Mailbox is read-only"),
	       C("a4 LOGOUT\r\n"), S("a4 OK\r\n"), CLOSED(NONE)),

	SCRIPT("STORE_SEEN: no such mailbox", STORE_PARAMS(), S(GREETING),
	       C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 SELECT INBOX\r\n"),
	       S("a2 NO [NONEXISTENT] Mailbox doesn't exist\r\n"),
	       CLOSED(NO_MAILBOX ENOENT: cannot select mailbox "INBOX")),

	SCRIPT("STORE_SEEN: a flag change or expunge in the SELECT is not reported",
	       STORE_PARAMS(), S(GREETING), C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
	       S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 SELECT INBOX\r\n"),
	       S("* 2 FETCH (UID 5 FLAGS (\\Seen))\r\n* 1 EXPUNGE\r\n"), STORE_SELECT("7"),
	       C("a3 UID STORE 5 +FLAGS.SILENT (\\Seen)\r\n"),
	       S("* 2 FETCH (UID 5 FLAGS (\\Seen))\r\na3 OK\r\n"), E("stored 0"),
	       C("a4 LOGOUT\r\n")),
};

/* ---------------------------------------------------------------- hostile servers */

static const struct script hostile[] = {
	HOSTILE("STARTTLS not advertised: FINAL before any credential",
		PARAMS(.tls = TLS_STARTTLS), S("* OK ready\r\n"), C("a1 CAPABILITY\r\n"),
		S("* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\na1 OK\r\n"), CLOSED(FINAL)),

	HOSTILE("STARTTLS not advertised in the greeting's [CAPABILITY]",
		PARAMS(.tls = TLS_STARTTLS),
		S("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n"), CLOSED(FINAL)),

	HOSTILE("STARTTLS answered NO: FINAL", PARAMS(.tls = TLS_STARTTLS),
		S("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n"),
		C("a1 STARTTLS\r\n"), S("a1 NO TLS unavailable\r\n"), CLOSED(FINAL)),

	HOSTILE("STARTTLS answered BAD: FINAL", PARAMS(.tls = TLS_STARTTLS),
		S("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n"),
		C("a1 STARTTLS\r\n"), S("a1 BAD what\r\n"), CLOSED(FINAL)),

	HOSTILE("STARTTLS answered with +: no plaintext continuation",
		PARAMS(.tls = TLS_STARTTLS),
		S("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n"),
		C("a1 STARTTLS\r\n"), S("+ send your password\r\n"), CLOSED(TRANSIENT)),

	HOSTILE("CAPABILITY answered NO before STARTTLS", PARAMS(.tls = TLS_STARTTLS),
		S("* OK ready\r\n"), C("a1 CAPABILITY\r\n"), S("a1 NO nope\r\n"),
		CLOSED(TRANSIENT)),

	HOSTILE("CAPABILITY answered OK without capabilities", PARAMS(.tls = TLS_STARTTLS),
		S("* OK ready\r\n"), C("a1 CAPABILITY\r\n"), S("a1 OK\r\n"), CLOSED(TRANSIENT)),

	HOSTILE("PREAUTH on a connection that must be encrypted: FINAL, nothing sent",
		PARAMS(.tls = TLS_STARTTLS), S("* PREAUTH [CAPABILITY IMAP4rev1 IDLE] hi\r\n"),
		CLOSED(FINAL)),

	{ .name = "hostile: bytes after the STARTTLS OK in the same chunk are never read",
	  .p = PARAMS(.tls = TLS_STARTTLS),
	  .steps = (const struct step[]){
		  S("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n"),
		  C("a1 STARTTLS\r\n"),
		  S1("a1 OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] x\r\n"
		     "a2 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] injected\r\n"),
		  E("start_tls"), TLS, C("a2 CAPABILITY\r\n"),
		  S("* CAPABILITY IMAP4rev1 IDLE\r\na2 OK\r\n"), C("a3 LOGIN alice secret\r\n"),
		  { END } } },

	HOSTILE("bytes after the STARTTLS OK in a later chunk: dropped",
		PARAMS(.tls = TLS_STARTTLS),
		S("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n"),
		C("a1 STARTTLS\r\n"), S1("a1 OK Begin TLS\r\n"), E("start_tls"),
		S1("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] injected\r\n"),
		CLOSED(TRANSIENT), TLS),

	{ .name = "hostile: pre-TLS capabilities do not survive TLS",
	  .p = PARAMS(.tls = TLS_STARTTLS),
	  .steps = (const struct step[]){
		  S("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR LITERAL+] ready\r\n"),
		  C("a1 STARTTLS\r\n"), S("a1 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] go\r\n"),
		  E("start_tls"), TLS, C("a2 CAPABILITY\r\n"),
		  S("* CAPABILITY IMAP4rev1 IDLE\r\na2 OK\r\n"), C("a3 LOGIN alice secret\r\n"),
		  { END } } },

	HOSTILE("post-TLS CAPABILITY answered without capabilities: pre-TLS ones are not used",
		PARAMS(.tls = TLS_STARTTLS),
		S("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR] ready\r\n"),
		C("a1 STARTTLS\r\n"), S("a1 OK go\r\n"), E("start_tls"), TLS,
		C("a2 CAPABILITY\r\n"), S("a2 OK\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE("post-TLS LOGINDISABLED and no AUTH=PLAIN: FINAL", PARAMS(.tls = TLS_STARTTLS),
		S("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n"),
		C("a1 STARTTLS\r\n"), S("a1 OK go\r\n"), E("start_tls"), TLS,
		C("a2 CAPABILITY\r\n"), S("* CAPABILITY IMAP4rev1 LOGINDISABLED\r\na2 OK\r\n"),
		CLOSED(FINAL)),

	HOSTILE("tagged OK while a synchronizing literal is pending: protocol error",
		PARAMS(.password = "pässword"), S("* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"),
		C("a1 LOGIN alice {9}\r\n"), S("a1 OK welcome\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE("tagged NO while a synchronizing literal is pending: AUTH",
		PARAMS(.password = "pässword"), S("* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"),
		C("a1 LOGIN alice {9}\r\n"), S("a1 NO literal refused\r\n"), CLOSED(AUTH)),

	HOSTILE_LOGGED_IN("unknown tag: protocol error",
		PARAMS(), LOGIN_STEPS,
		S("* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 5] x\r\nx7 OK forged\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("duplicate tag: a second OK for a completed command",
		PARAMS(),
		IDLE_STEPS, S("* 4 EXISTS\r\n"), C("DONE\r\n"), S("a2 OK again\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("a tag of another form: protocol error",
		PARAMS(), LOGIN_STEPS,
		S("* OK [UIDVALIDITY 7] x\r\n* OK [UIDNEXT 5] x\r\nA2 OK\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("tagged response with no command in flight (poll wait)",
		PARAMS(),
		POLL_STEPS, S("a2 OK\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("tagged OK for IDLE without DONE",
		PARAMS(), IDLE_STEPS, S("a3 OK\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("IDLE answered OK without +: poll instead of re-sending IDLE at once",
			  PARAMS(), LOGIN_STEPS, SELECT("7", "5"), E("selected"),
			  C("a3 IDLE\r\n"), S("a3 OK nothing to see\r\n"), E("idle"),
			  DL(2 * MINUTE), WAIT(2 * MINUTE), C("a4 NOOP\r\n"), S("a4 OK\r\n"),
			  E("idle")),

	HOSTILE_LOGGED_IN("a second + during IDLE",
		PARAMS(), IDLE_STEPS, S("+ again\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE("a tagged response before the greeting", PARAMS(), S("a1 OK\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE("a continuation before the greeting", PARAMS(), S("+ hi\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE("[REFERRAL] on a login NO is never followed",
		PARAMS(.password = NULL, .oauth_token = TOKEN, .auth = AUTH_XOAUTH2),
		S("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n"),
		C("a1 AUTHENTICATE XOAUTH2\r\n"),
		S("a1 NO [REFERRAL imap://alice@evil.example/] Try elsewhere\r\n"), CLOSED(AUTH)),

	HOSTILE("[ALERT] with ESC and C1 controls is sanitised", PARAMS(),
		S("* OK [ALERT] \x1b]0;pwned\x07 Your \xc2\x9b" "31mmailbox\r\n"),
		E("alert <]0;pwned Your 31mmailbox>"), C("a1 CAPABILITY\r\n")),

	HOSTILE("[ALERT] with invalid UTF-8 is made valid", PARAMS(),
		S("* OK [ALERT] caf\xe9 \xff\r\n"), E("alert <caf\xef\xbf\xbd \xef\xbf\xbd>"),
		C("a1 CAPABILITY\r\n")),

	HOSTILE_LOGGED_IN("FETCH FLAGS in the middle of EXAMINE: not a message",
		PARAMS(), LOGIN_STEPS,
		S("* 3 EXISTS\r\n* 3 FETCH (UID 9 FLAGS (\\Seen))\r\n* OK [UIDVALIDITY 7] x\r\n"
		  "* 2 FETCH (FLAGS ())\r\n* OK [UIDNEXT 10] x\r\na2 OK\r\n"),
		E("selected uidvalidity=7 last=9 baseline=1"), C("a3 IDLE\r\n")),

	HOSTILE_LOGGED_IN("FETCH FLAGS for the new message before its envelope",
		PARAMS(), IDLE_STEPS,
		S("* 4 EXISTS\r\n"), C("DONE\r\n"), S("a3 OK\r\n"),
		C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"),
		S("* 4 FETCH (UID 5 FLAGS (\\Recent))\r\n* 1 FETCH (FLAGS (\\Seen))\r\n"
		  MSG("4", "5", "", "Real") "a4 OK\r\n"),
		E("message uid=5 seen=0 subject=Real"), C("a5 IDLE\r\n")),

	HOSTILE_LOGGED_IN("the same UID twice in a catch-up scan is counted once",
		PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4, .catch_up = 1),
		LOGIN_STEPS, SELECT("7", "8"), E("selected uidvalidity=7 last=4 baseline=0"),
		C("a3 UID FETCH 5:* (UID FLAGS)\r\n"),
		S("* 1 FETCH (UID 5 FLAGS ())\r\n* 1 FETCH (UID 5 FLAGS (\\Flagged))\r\n"
		  "* 2 FETCH (UID 6 FLAGS ())\r\n* 3 FETCH (UID 7 FLAGS ())\r\na3 OK\r\n"),
		E("summary 5-6 count=2"), C("a4 UID FETCH 7:* " FETCH_NEW "\r\n")),

	HOSTILE_LOGGED_IN("catch-up scan of only seen messages: state advances past them",
		PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4, .catch_up = 1,
		       .skip_seen = true),
		LOGIN_STEPS, SELECT("7", "8"), E("selected uidvalidity=7 last=4 baseline=0"),
		C("a3 UID FETCH 5:* (UID FLAGS)\r\n"),
		S("* 1 FETCH (UID 5 FLAGS (\\Seen))\r\n* 2 FETCH (UID 6 FLAGS (\\Seen))\r\n"
		  "* 3 FETCH (UID 7 FLAGS (\\Seen))\r\na3 OK\r\n"),
		E("skipped uid=7"), C("a4 IDLE\r\n"), S("+ idling\r\n"), E("idle"),
		S("* 4 EXISTS\r\n"), C("DONE\r\n"), S("a4 OK\r\n"),
		C("a5 UID FETCH 8:* " FETCH_NEW "\r\n")),

	HOSTILE_LOGGED_IN("UID 0 in FETCH: protocol error",
		PARAMS(), IDLE_STEPS, S("* 4 EXISTS\r\n"),
		C("DONE\r\n"), S("a3 OK\r\n"), C("a4 UID FETCH 5:* " FETCH_NEW "\r\n"),
		S("* 4 FETCH (UID 0 FLAGS ())\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("UID 4294967296 in FETCH: protocol error",
		PARAMS(), IDLE_STEPS,
		S("* 4 FETCH (UID 4294967296 FLAGS ())\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("FETCH for message 0: protocol error",
		PARAMS(), IDLE_STEPS,
		S("* 0 FETCH (FLAGS ())\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("UIDVALIDITY 0: protocol error",
		PARAMS(), LOGIN_STEPS,
		S("* 3 EXISTS\r\n* OK [UIDVALIDITY 0] x\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("UIDVALIDITY 2^32: protocol error",
		PARAMS(), LOGIN_STEPS,
		S("* OK [UIDVALIDITY 4294967296] x\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("no UIDVALIDITY at all: protocol error",
		PARAMS(), LOGIN_STEPS,
		S("* 3 EXISTS\r\n* OK [UIDNEXT 4] x\r\na2 OK\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("UIDNEXT 0: protocol error",
		PARAMS(), LOGIN_STEPS,
		S("* OK [UIDNEXT 0] x\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("UIDNEXT 2^32-1 (the last UID is 2^32-2): no overflow",
		PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4294967294u), LOGIN_STEPS,
		SELECT("7", "4294967295"), E("selected uidvalidity=7 last=4294967294 baseline=0"),
		C("a3 IDLE\r\n"), S("+ idling\r\n"), E("idle"), S("* 4 EXISTS\r\n"),
		C("DONE\r\n"), S("a3 OK\r\n"), C("a4 UID FETCH 4294967295:* " FETCH_NEW "\r\n"),
		S(MSG("4", "4294967295", "", "Last") "a4 OK\r\n"),
		E("message uid=4294967295 seen=0 subject=Last"), C("a5 IDLE\r\n"),
		S("+ idling\r\n"), E("idle"), S("* 5 EXISTS\r\n"), WAIT(10 * MINUTE),
		C("DONE\r\n"), S("a5 OK\r\n"), C("a6 IDLE\r\n"), S("+ idling\r\n"), E("idle")),

	HOSTILE_LOGGED_IN("a literal of 2 GiB announced: dropped",
		PARAMS(), IDLE_STEPS,
		S("* 4 FETCH (UID 5 BODY[] {2147483648}\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE("an endless line: dropped", PARAMS(), S("* OK "), FILL("x", 70000),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("an endless line after login: dropped",
		PARAMS(), IDLE_STEPS,
		S("* 4 FETCH (UID 5 X \""), FILL("abcdefghijklmnop", 8192),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("nesting depth bomb: dropped",
		PARAMS(), IDLE_STEPS,
		S("* 4 FETCH (UID 5 X "), FILL("(", 5000), S1("\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE("plaintext without allow_plaintext: FINAL before credentials",
		PARAMS(.tls = TLS_NONE, .port = 143), S(GREETING), CLOSED(FINAL EPERM)),

	HOSTILE("LOGINDISABLED with auth=login: FINAL", PARAMS(.auth = AUTH_LOGIN),
		S("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LOGINDISABLED] hi\r\n"),
		CLOSED(FINAL EPERM)),

	HOSTILE("auth=plain not offered: FINAL", PARAMS(.auth = AUTH_PLAIN),
		S("* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n"), CLOSED(FINAL EPERM)),

	HOSTILE("no password: FINAL", PARAMS(.password = NULL),
		S("* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n"), CLOSED(FINAL ENOKEY)),

	HOSTILE("password with CR LF: refused locally (LOGIN)",
		PARAMS(.password = "x\r\na2 LOGOUT"), S("* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n"),
		CLOSED(FINAL EINVAL)),

	HOSTILE("username with CR LF: refused locally (PLAIN, SASL-IR)",
		PARAMS(.username = "alice\r\na2 LOGOUT"), S(GREETING), CLOSED(FINAL EINVAL)),

	HOSTILE("password with LF: refused locally (PLAIN without SASL-IR)",
		PARAMS(.password = "x\ny"), S("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n"),
		CLOSED(FINAL EINVAL)),

	HOSTILE("token with CR: refused locally (XOAUTH2 without SASL-IR)",
		PARAMS(.password = NULL, .oauth_token = "t\r", .auth = AUTH_XOAUTH2),
		S("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] hi\r\n"), CLOSED(FINAL EINVAL)),

	HOSTILE_LOGGED_IN("+ for a LOGIN without a literal: protocol error",
		PARAMS(),
		S("* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n"), C("a1 LOGIN alice secret\r\n"),
		S("+ more please\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("endless XOAUTH2 error challenges: one empty reply only",
		PARAMS(.password = NULL, .oauth_token = TOKEN, .auth = AUTH_XOAUTH2),
		S("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready\r\n"),
		C("a1 AUTHENTICATE XOAUTH2\r\n"), S("+\r\n"),
		C("dXNlcj1hbGljZQFhdXRoPUJlYXJlciB0b2sBAQ==\r\n"), S("+ e30=\r\n"), C("\r\n"),
		S("+ e30=\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE("data during the TLS handshake: dropped", PARAMS(.tls = TLS_STARTTLS),
		S("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"), C("a1 STARTTLS\r\n"),
		S1("a1 OK go\r\n"), E("start_tls"), S1("\x16\x03\x01"), CLOSED(TRANSIENT)),

	HOSTILE("TLS ready when nobody asked: protocol error", PARAMS(), TLS,
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE("garbage instead of a greeting", PARAMS(), S("HTTP/1.1 400 Bad Request\r\n"),
		CLOSED(TRANSIENT)),

	HOSTILE("untagged data instead of a greeting", PARAMS(), S("* 3 EXISTS\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE("LIST names with control characters are not passed on raw",
		PARAMS(.goal = IMAP_GOAL_PROBE, .mailbox = NULL, .tls = TLS_IMPLICIT),
		S("* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n"), C("a1 CAPABILITY\r\n"),
		S("* CAPABILITY IMAP4rev1\r\na1 OK\r\n"), C("a2 LIST \"\" \"*\"\r\n"),
		S("* LIST () \"/\" \"A&ABs-]0;x&AAc-\"\r\n* LIST () \"/\" INBOX\r\na2 OK\r\n"),
		E("listed <INBOX> noselect=0"), C("a3 LOGOUT\r\n")),

	HOSTILE_LOGGED_IN("VANISHED 1:4294967295 with last UID 4: four reports, no loop",
		PARAMS(), QRESYNC_IDLE_STEPS,
		S("* VANISHED 1:4294967295\r\n"), E("expunged uid=1"), E("expunged uid=2"),
		E("expunged uid=3"), E("expunged uid=4"),
		S("* VANISHED *:3\r\n"), E("expunged uid=3"), E("expunged uid=4")),

	HOSTILE_LOGGED_IN("VANISHED 1:* near the top of the UID space: the window only",
		PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4294967294u),
		QRESYNC_LOGIN_STEPS, SELECT_AS("a3", "7", "4294967295"),
		E("selected uidvalidity=7 last=4294967294 baseline=0"), C("a4 IDLE\r\n"),
		S("+ idling\r\n"), E("idle"), S("* VANISHED 1:*\r\n"),
		E("expunged uid=4294966295"), EN("expunged uid=429496", 998),
		E("expunged uid=4294967294"), S("* 3 EXISTS\r\n"), C("DONE\r\n")),

	HOSTILE_LOGGED_IN("VANISHED with 4000 overlapping ranges: each UID reported once",
		PARAMS(), QRESYNC_IDLE_STEPS, S1("* VANISHED "), FILL("1:*,", 4000), S1("2\r\n"),
		E("expunged uid=1"), E("expunged uid=2"), E("expunged uid=3"),
		E("expunged uid=4"), S("* 1 EXISTS\r\n"), C("DONE\r\n")),

	HOSTILE_LOGGED_IN("VANISHED with 4000 repeated ranges: the steps run out, no CPU burnt",
		PARAMS(.known = true, .uidvalidity = 7, .last_uid = 100000),
		QRESYNC_LOGIN_STEPS, SELECT_AS("a3", "7", "100001"),
		E("selected uidvalidity=7 last=100000 baseline=0"), C("a4 IDLE\r\n"),
		S("+ idling\r\n"), E("idle"), S1("* VANISHED "), FILL("99001:99999,", 4000),
		S1("100000\r\n"), E("expunged uid=99001"), EN("expunged uid=99", 997),
		/* the steps ran out in the repeats: the last UID is not reached */
		E("expunged uid=99999")),

	HOSTILE_LOGGED_IN("VANISHED (EARLIER) nobody asked for: ignored, EXISTS kept",
		PARAMS(), QRESYNC_IDLE_STEPS, S("* VANISHED (EARLIER) 1:4\r\n* 3 EXISTS\r\n"),
		S("* 4 EXISTS\r\n"), C("DONE\r\n")),

	HOSTILE_LOGGED_IN("VANISHED UID 0: protocol error", PARAMS(), QRESYNC_IDLE_STEPS,
		S("* VANISHED 0:3\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("VANISHED UID 2^32: protocol error", PARAMS(), QRESYNC_IDLE_STEPS,
		S("* VANISHED 3,4294967296\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("VANISHED garbage set: protocol error, nothing reported first",
		PARAMS(), QRESYNC_IDLE_STEPS, S("* VANISHED 1:4,,2\r\n"),
		CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("VANISHED without a set: protocol error", PARAMS(), QRESYNC_IDLE_STEPS,
		S("* VANISHED\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("VANISHED with a string set: protocol error", PARAMS(),
		QRESYNC_IDLE_STEPS, S("* VANISHED \"1:4\"\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("EXPUNGE of message 0: protocol error", PARAMS(), IDLE_STEPS,
		S("* 0 EXPUNGE\r\n"), CLOSED(TRANSIENT EPROTO)),

	HOSTILE_LOGGED_IN("reported messages out of order: the number map starts over",
		PARAMS(.known = true, .uidvalidity = 7, .last_uid = 4), LOGIN_STEPS,
		SELECT("7", "7"), E("selected uidvalidity=7 last=4 baseline=0"),
		C("a3 UID FETCH 5:* " FETCH_NEW "\r\n"),
		S(MSG("3", "5", "", "Hello") MSG("2", "6", "", "World") "a3 OK\r\n"),
		E("message uid=5"), E("message uid=6"), C("a4 IDLE\r\n"), S("+ idling\r\n"),
		E("idle"), S("* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n"), E("expunged uid=6")),

	HOSTILE_LOGGED_IN("a flag change for UID 2^32-1 above last_uid: not reported",
		PARAMS(), IDLE_STEPS, S("* 1 FETCH (UID 4294967295 FLAGS (\\Seen))\r\n"),
		S("* 1 FETCH (UID 4 FLAGS (\\Seen))\r\n"), E("flags uid=4 seen=1")),

	HOSTILE_LOGGED_IN("STORE_SEEN: SELECT without UIDVALIDITY: nothing stored",
		STORE_PARAMS(), S(GREETING), C("a1 AUTHENTICATE PLAIN " PLAIN_IR "\r\n"),
		S("a1 OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n"), C("a2 SELECT INBOX\r\n"),
		S("* 3 EXISTS\r\na2 OK done\r\n"), CLOSED(TRANSIENT EPROTO)),
};

int main(void)
{
	static const struct CMUnitTest unit[] = {
		cmocka_unit_test(test_transcript_has),
	};
	struct CMUnitTest tests[ELEMENTSOF(happy) + ELEMENTSOF(hostile)];
	size_t n = 0;
	int failed;

	for (size_t i = 0; i < ELEMENTSOF(happy); i++)
		tests[n++] = (struct CMUnitTest){ .name = happy[i].name, .test_func = test_script,
						  .initial_state = (void *)&happy[i] };
	for (size_t i = 0; i < ELEMENTSOF(hostile); i++)
		tests[n++] = (struct CMUnitTest){ .name = hostile[i].name,
						  .test_func = test_script,
						  .initial_state = (void *)&hostile[i] };
	failed = cmocka_run_group_tests_name("imap-session helpers", unit, NULL, NULL);
	return failed + _cmocka_run_group_tests("imap-session scripts", tests, n, NULL, NULL);
}
