#include "imap/session.h"

#include <stdio.h>

#include "imap/command.h"
#include "imap/parse.h"
#include "log.h"
#include "mime.h"

enum state {
	S_GREETING,
	S_CAPABILITY,    /* CAPABILITY before STARTTLS or login */
	S_STARTTLS,      /* STARTTLS sent */
	S_TLS_HANDSHAKE, /* the transport is upgrading */
	S_AUTHENTICATE,  /* LOGIN or AUTHENTICATE sent */
	S_AUTH_CAPS,     /* CAPABILITY after login */
	S_ENABLE,
	S_ID,
	S_LIST,          /* PROBE */
	S_SELECT,        /* STORE_SEEN */
	S_STORE,         /* STORE_SEEN: UID STORE sent */
	S_EXAMINE,
	S_FIND_LAST,     /* FETCH * (UID) when the server gave no UIDNEXT */
	S_SCAN,          /* UID FETCH n:* (UID FLAGS): counting a long absence */
	S_FETCH,         /* UID FETCH n:* (... ENVELOPE) */
	S_IDLE_START,    /* IDLE sent, waiting for "+" */
	S_IDLING,
	S_IDLE_DONE,     /* DONE sent */
	S_POLL_WAIT,     /* no IDLE: waiting for the next NOOP */
	S_NOOP,
	S_LOGOUT,
	S_DEAD,
	_S_MAX,
};

static const char *const state_names[_S_MAX] = {
	[S_GREETING] = "greeting",     [S_CAPABILITY] = "capability",
	[S_STARTTLS] = "starttls",     [S_TLS_HANDSHAKE] = "tls-handshake",
	[S_AUTHENTICATE] = "authenticate", [S_AUTH_CAPS] = "auth-capability",
	[S_ENABLE] = "enable",         [S_ID] = "id",
	[S_LIST] = "list",             [S_SELECT] = "select",
	[S_STORE] = "store",           [S_EXAMINE] = "examine",
	[S_FIND_LAST] = "find-last",   [S_SCAN] = "scan",
	[S_FETCH] = "fetch",           [S_IDLE_START] = "idle-start",
	[S_IDLING] = "idling",         [S_IDLE_DONE] = "idle-done",
	[S_POLL_WAIT] = "poll-wait",   [S_NOOP] = "noop",
	[S_LOGOUT] = "logout",         [S_DEAD] = "dead",
};

/* A long absence is scanned with UID FLAGS before fetching envelopes; the UIDs kept
 * meanwhile are bounded so a hostile server cannot make us grow without limit. */
#define SCAN_MAX_UIDS (1U << 20)

/* A reported message's sequence number, for EXPUNGE without QRESYNC. */
struct seq_uid {
	uint32_t seq, uid;
};

struct imap_session {
	struct imap_session_params p;
	char *name, *username, *mailbox; /* owned copies of the borrowed params */
	const struct imap_session_ops *ops;
	void *userdata;

	enum state state;
	struct imap_parser *parser;
	unsigned tag_counter;
	char tag[16];        /* the one command in flight, "" when none */
	struct imap_cmd cmd; /* its bytes, sent segment by segment */
	size_t next_segment;
	enum imap_sasl_mech sasl_mech;
	bool sasl;              /* AUTHENTICATE (not LOGIN) is in flight */
	bool sasl_payload_sent;
	bool sasl_empty_sent;   /* the one empty reply to an error challenge */
	usec_t deadline;

	bool tls;
	uint64_t caps;
	bool caps_known;
	bool bye_seen;
	bool logout_requested;
	bool probe_requested;

	/* the selected mailbox */
	uint32_t uidvalidity, uidnext, exists;
	uint32_t last_uid; /* highest UID reported or skipped on this connection */
	bool new_mail;     /* an EXISTS asked for a fetch */
	uint32_t *scan_uids; /* ascending: the UIDs to report */
	size_t n_scan, scan_alloc;
	uint32_t scan_max;   /* highest UID the scan has seen, reported or not */
	bool qresync;        /* ENABLED: expunges come as VANISHED, never as EXPUNGE */
	struct seq_uid *known; /* ascending in both: the last messages reported (no QRESYNC) */
	size_t n_known, known_alloc;
};

/* ---- state and failure ---------------------------------------------------------------- */

static void set_state(struct imap_session *s, enum state st)
{
	if (s->state == st)
		return;
	log_debug("%s: imap state %s → %s", s->name, state_names[s->state], state_names[st]);
	s->state = st;
}

/* The one exit: report once, then the session is inert. */
static int fail(struct imap_session *s, enum imap_failure f, int error, const char *fmt, ...)
	_printf_(4, 5);
static int fail(struct imap_session *s, enum imap_failure f, int error, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	error = abs(error); /* callers pass either sign; closed() always gets a positive errno */
	if (s->state == S_DEAD)
		return -(error ? error : EPROTO);
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	set_state(s, S_DEAD);
	s->deadline = USEC_INFINITY;
	if (s->ops->closed)
		s->ops->closed(s->userdata, f, error, why);
	return -(error ? error : EPROTO);
}

#define protocol_error(s, ...) fail(s, IMAP_FAIL_TRANSIENT, EPROTO, __VA_ARGS__)

/* ---- sending ------------------------------------------------------------------------- */

static int send_bytes(struct imap_session *s, const void *data, size_t len)
{
	int r = s->ops->send(s->userdata, data, len);

	if (r < 0)
		return fail(s, IMAP_FAIL_TRANSIENT, r, "cannot send: %s", strerror(-r));
	return 0;
}

/* Sends the command's first segment; later segments follow each "+" (synchronizing
 * literals). The reply must come within reply_timeout or the link is taken for dead. */
static int send_command(struct imap_session *s, enum state st, usec_t now)
{
	const char *data;
	size_t len;
	int r;

	if (log_enabled(LOG_DEBUG)) {
		_cleanup_free_ char *trace = imap_cmd_redacted(&s->cmd);
		log_debug("%s: C: %s", s->name, strna(trace));
	}
	r = imap_cmd_segment(&s->cmd, s->next_segment++, &data, &len);
	if (r < 0)
		return fail(s, IMAP_FAIL_TRANSIENT, r, "cannot build command: %s", strerror(-r));
	set_state(s, st);
	s->deadline = now + s->p.reply_timeout;
	return send_bytes(s, data, len);
}

static bool cmd_has_more(const struct imap_session *s)
{
	return s->cmd.buf && s->next_segment < imap_cmd_n_segments(&s->cmd);
}

/* Forget the previous command and prepare for a new one with the current capabilities
 * (they decide between synchronizing and LITERAL+ literals). */
static void cmd_reset(struct imap_session *s)
{
	imap_cmd_done(&s->cmd);
	s->cmd.caps = s->caps;
	s->next_segment = 0;
}

static const char *next_tag(struct imap_session *s)
{
	snprintf(s->tag, sizeof(s->tag), "a%u", ++s->tag_counter);
	return s->tag;
}

/* Start a command "TAG VERB"; the caller adds arguments and ends it. */
static int begin(struct imap_session *s, const char *verb)
{
	cmd_reset(s);
	return imap_cmd_begin(&s->cmd, next_tag(s), verb);
}

static int simple(struct imap_session *s, const char *verb, enum state st, usec_t now)
{
	int r = begin(s, verb);

	if (r >= 0)
		r = imap_cmd_end(&s->cmd);
	if (r < 0)
		return fail(s, IMAP_FAIL_TRANSIENT, r, "cannot build %s: %s", verb, strerror(-r));
	return send_command(s, st, now);
}

/* ---- forward declarations of the steps ------------------------------------------------ */

static int step_after_greeting(struct imap_session *s, usec_t now);
static int step_authenticate(struct imap_session *s, usec_t now);
static int step_after_login(struct imap_session *s, usec_t now);
static int step_goal(struct imap_session *s, usec_t now);
static int step_after_select(struct imap_session *s, usec_t now);
static int step_wait(struct imap_session *s, usec_t now);

/* ---- capabilities -------------------------------------------------------------------- */

static void take_capabilities(struct imap_session *s, const struct imap_value *v, size_t n)
{
	uint64_t mask = 0;

	imap_capabilities_parse(v, n, &mask);
	s->caps = mask;
	s->caps_known = true;
}

static bool has(const struct imap_session *s, enum imap_cap c)
{
	return s->caps & IMAP_CAP(c);
}

/* ---- the steps ----------------------------------------------------------------------- */

static int step_after_greeting(struct imap_session *s, usec_t now)
{
	if (s->p.tls == TLS_STARTTLS && !s->tls) {
		if (!s->caps_known)
			return simple(s, "CAPABILITY", S_CAPABILITY, now);
		/* No fallback to plaintext, ever: a missing STARTTLS may be an attacker's edit. */
		if (!has(s, IMAP_CAP_STARTTLS))
			return fail(s, IMAP_FAIL_FINAL, EPROTO,
				    "server does not offer STARTTLS; refusing to continue "
				    "unencrypted");
		return simple(s, "STARTTLS", S_STARTTLS, now);
	}
	if (!s->caps_known)
		return simple(s, "CAPABILITY", S_CAPABILITY, now);
	return step_authenticate(s, now);
}

static enum auth_mech choose_mech(const struct imap_session *s)
{
	if (s->p.auth != AUTH_AUTO)
		return s->p.auth;
	if (!s->p.password && s->p.oauth_token)
		return has(s, IMAP_CAP_AUTH_OAUTHBEARER) ? AUTH_OAUTHBEARER : AUTH_XOAUTH2;
	if (has(s, IMAP_CAP_AUTH_PLAIN))
		return AUTH_PLAIN;
	return AUTH_LOGIN;
}

static int build_auth(struct imap_session *s, enum auth_mech mech)
{
	bool ir = has(s, IMAP_CAP_SASL_IR);
	const char *secret = mech == AUTH_XOAUTH2 || mech == AUTH_OAUTHBEARER ? s->p.oauth_token
									     : s->p.password;
	struct imap_sasl_creds cr = { s->p.username, secret, s->p.host, s->p.port };

	if (!secret)
		return -ENOKEY;
	cmd_reset(s);
	s->sasl = mech != AUTH_LOGIN;
	s->sasl_payload_sent = ir;
	s->sasl_empty_sent = false;
	switch (mech) {
	case AUTH_LOGIN:
		return imap_cmd_login(&s->cmd, next_tag(s), s->p.username, secret);
	case AUTH_PLAIN:
		s->sasl_mech = IMAP_SASL_PLAIN;
		break;
	case AUTH_XOAUTH2:
		s->sasl_mech = IMAP_SASL_XOAUTH2;
		break;
	case AUTH_OAUTHBEARER:
		s->sasl_mech = IMAP_SASL_OAUTHBEARER;
		break;
	default:
		return -EINVAL;
	}
	if (!ir) {
		/* The payload goes after the "+": build it now too, so that credentials that
		 * cannot be sent (CR, LF, NUL) are refused before anything reaches the server. */
		struct imap_cmd probe;
		int r;

		imap_cmd_init(&probe, s->caps);
		r = imap_cmd_sasl_response(&probe, s->sasl_mech, &cr);
		imap_cmd_done(&probe);
		if (r < 0)
			return r;
	}
	return imap_cmd_authenticate(&s->cmd, next_tag(s), s->sasl_mech, &cr, ir);
}

static int step_authenticate(struct imap_session *s, usec_t now)
{
	enum auth_mech mech = choose_mech(s);
	static const int needed[] = {
		[AUTH_PLAIN] = IMAP_CAP_AUTH_PLAIN,
		[AUTH_XOAUTH2] = IMAP_CAP_AUTH_XOAUTH2,
		[AUTH_OAUTHBEARER] = IMAP_CAP_AUTH_OAUTHBEARER,
	};
	int r;

	if (!s->tls && !s->p.allow_plaintext)
		return fail(s, IMAP_FAIL_FINAL, EPERM,
			    "refusing to send credentials over an unencrypted connection "
			    "(allow_plaintext = yes permits it)");
	if (mech == AUTH_LOGIN && has(s, IMAP_CAP_LOGINDISABLED))
		return fail(s, IMAP_FAIL_FINAL, EPERM,
			    "server does not allow LOGIN here (LOGINDISABLED) and offers no "
			    "AUTH=PLAIN");
	if (mech != AUTH_LOGIN && mech < ELEMENTSOF(needed) && !has(s, (enum imap_cap)needed[mech]))
		return fail(s, IMAP_FAIL_FINAL, EPERM, "server does not offer AUTH=%s",
			    auth_mech_to_string(mech));
	r = build_auth(s, mech);
	if (r == -ENOKEY)
		return fail(s, IMAP_FAIL_FINAL, ENOKEY, "no %s to log in with",
			    mech == AUTH_LOGIN || mech == AUTH_PLAIN ? "password" : "OAuth token");
	if (r < 0)
		return fail(s, IMAP_FAIL_FINAL, r, "cannot build the %s command: %s",
			    auth_mech_to_string(mech), strerror(-r));
	return send_command(s, S_AUTHENTICATE, now);
}

/* QRESYNC implies CONDSTORE (RFC 7162 §3.2.3) and turns EXPUNGE into VANISHED, which names
 * UIDs; either one puts the UID into every untagged FETCH. A one-shot STORE needs neither. */
static uint64_t enable_mask(const struct imap_session *s)
{
	if (!has(s, IMAP_CAP_ENABLE) || s->p.goal == IMAP_GOAL_STORE_SEEN)
		return 0;
	if (has(s, IMAP_CAP_QRESYNC))
		return IMAP_CAP(IMAP_CAP_QRESYNC);
	if (has(s, IMAP_CAP_CONDSTORE))
		return IMAP_CAP(IMAP_CAP_CONDSTORE);
	return 0;
}

/* Capabilities are read again after login: servers advertise more (or less) then. */
static int step_after_login(struct imap_session *s, usec_t now)
{
	if (s->logout_requested) /* asked during login: nothing more to set up */
		return simple(s, "LOGOUT", S_LOGOUT, now);
	if (!s->caps_known)
		return simple(s, "CAPABILITY", S_AUTH_CAPS, now);
	if (s->state < S_ENABLE && enable_mask(s)) {
		cmd_reset(s);
		int r = imap_cmd_enable(&s->cmd, next_tag(s), enable_mask(s));
		if (r < 0)
			return fail(s, IMAP_FAIL_TRANSIENT, r, "cannot build ENABLE");
		return send_command(s, S_ENABLE, now);
	}
	if (s->state < S_ID && s->p.send_id && has(s, IMAP_CAP_ID)) {
		cmd_reset(s);
		int r = imap_cmd_id(&s->cmd, next_tag(s), VERSION);
		if (r < 0)
			return fail(s, IMAP_FAIL_TRANSIENT, r, "cannot build ID");
		return send_command(s, S_ID, now);
	}
	return step_goal(s, now);
}

static int step_goal(struct imap_session *s, usec_t now)
{
	int r;

	if (s->p.goal == IMAP_GOAL_PROBE) {
		cmd_reset(s);
		r = imap_cmd_list_all(&s->cmd, next_tag(s));
		if (r < 0)
			return fail(s, IMAP_FAIL_TRANSIENT, r, "cannot build LIST");
		return send_command(s, S_LIST, now);
	}
	s->uidvalidity = s->uidnext = s->exists = 0;
	if (s->p.goal == IMAP_GOAL_STORE_SEEN) {
		/* SELECT, not EXAMINE: a read-only mailbox refuses STORE. */
		r = begin(s, "SELECT");
		if (r >= 0)
			r = imap_cmd_mailbox(&s->cmd, s->p.mailbox);
		if (r >= 0)
			r = imap_cmd_end(&s->cmd);
		if (r < 0)
			return fail(s, IMAP_FAIL_FINAL, r, "cannot encode mailbox name \"%s\"",
				    s->p.mailbox);
		return send_command(s, S_SELECT, now);
	}
	cmd_reset(s);
	r = imap_cmd_examine(&s->cmd, next_tag(s), s->p.mailbox, false);
	if (r < 0)
		return fail(s, IMAP_FAIL_FINAL, r, "cannot encode mailbox name \"%s\"",
			    s->p.mailbox);
	return send_command(s, S_EXAMINE, now);
}

static int fetch_from(struct imap_session *s, uint32_t first, bool envelope, enum state st,
		      usec_t now)
{
	int r;

	cmd_reset(s);
	r = imap_cmd_uid_fetch(&s->cmd, next_tag(s), first,
			       envelope ? IMAP_FETCH_NEW_ITEMS : "(UID FLAGS)");
	if (r < 0)
		return fail(s, IMAP_FAIL_TRANSIENT, r, "cannot build UID FETCH");
	s->new_mail = false;
	s->scan_max = s->last_uid;
	return send_command(s, st, now);
}

/* Where to start after EXAMINE: nothing old on a first run or a new UIDVALIDITY. */
static int step_after_select(struct imap_session *s, usec_t now)
{
	bool baseline = !s->p.known || s->p.uidvalidity != s->uidvalidity;
	uint32_t pending;

	if (s->uidnext == 0 && s->exists > 0 && s->state != S_FIND_LAST) {
		/* No UIDNEXT: learn the highest UID from the last message. */
		int r = begin(s, "FETCH");
		if (r >= 0)
			r = imap_cmd_raw(&s->cmd, "* (UID)");
		if (r >= 0)
			r = imap_cmd_end(&s->cmd);
		if (r < 0)
			return fail(s, IMAP_FAIL_TRANSIENT, r, "cannot build FETCH");
		return send_command(s, S_FIND_LAST, now);
	}
	if (s->uidnext == 0)
		s->uidnext = 1;
	if (baseline) {
		if (s->p.known)
			log_notice("%s: UIDVALIDITY changed from %u to %u: starting over after UID "
				   "%u without reporting old mail",
				   s->name, s->p.uidvalidity, s->uidvalidity, s->uidnext - 1);
		s->last_uid = s->uidnext - 1;
	} else {
		s->last_uid = s->p.last_uid;
	}
	if (s->ops->selected)
		s->ops->selected(s->userdata, s->uidvalidity, s->last_uid, baseline);
	if (s->state == S_DEAD)
		return -EPROTO;
	pending = s->uidnext - 1 > s->last_uid ? s->uidnext - 1 - s->last_uid : 0;
	if (pending == 0 || s->last_uid == UINT32_MAX || s->logout_requested)
		return step_wait(s, now);
	if (pending > s->p.catch_up)
		return fetch_from(s, s->last_uid + 1, false, S_SCAN, now);
	return fetch_from(s, s->last_uid + 1, true, S_FETCH, now);
}

/* Healthy and waiting for news: IDLE, or a NOOP timer on servers without it. */
static int step_wait(struct imap_session *s, usec_t now)
{
	if (s->logout_requested)
		return simple(s, "LOGOUT", S_LOGOUT, now);
	if (s->new_mail && s->last_uid < UINT32_MAX)
		return fetch_from(s, s->last_uid + 1, true, S_FETCH, now);
	s->new_mail = false; /* also with the UID space used up: else IDLE ends at its "+" */
	if (has(s, IMAP_CAP_IDLE))
		return simple(s, "IDLE", S_IDLE_START, now);
	set_state(s, S_POLL_WAIT);
	s->deadline = now + s->p.poll_interval;
	if (s->ops->idle)
		s->ops->idle(s->userdata);
	return 0;
}

static int leave_idle(struct imap_session *s, usec_t now)
{
	log_debug("%s: C: DONE", s->name);
	set_state(s, S_IDLE_DONE);
	s->deadline = now + s->p.reply_timeout;
	/* After a suspend the reply timeout (minutes, for slow servers) is too patient: a link
	 * that died meanwhile should be found within seconds. */
	if (s->probe_requested && s->p.probe_timeout > 0)
		s->deadline = MIN(s->deadline, now + s->p.probe_timeout);
	return send_bytes(s, "DONE\r\n", 6);
}

/* ---- untagged responses -------------------------------------------------------------- */

/* The text is shown to the user (desktop notification, terminal, journal): safe UTF-8,
 * so no ESC or C1 sequence, bidi override or invalid byte from the server gets there. */
static void check_alert(struct imap_session *s, const struct imap_response *r)
{
	_cleanup_free_ char *text = NULL;
	const char *t = strempty(r->text);

	if (!r->code || !streq(r->code, "ALERT") || !s->ops->alert)
		return;
	text = mime_sanitize_utf8(t, strlen(t), 1024);
	if (!text)
		return;
	s->ops->alert(s->userdata, text);
}

static int on_status_code(struct imap_session *s, const struct imap_response *r)
{
	uint32_t v;

	if (!r->code)
		return 0;
	if (streq(r->code, "CAPABILITY")) {
		/* Before TLS, capabilities are only used to decide on STARTTLS. */
		take_capabilities(s, r->code_args, r->n_code_args);
		return 0;
	}
	if (s->state != S_EXAMINE && s->state != S_SELECT)
		return 0;
	if (streq(r->code, "UIDVALIDITY") || streq(r->code, "UIDNEXT")) {
		if (r->n_code_args != 1 || imap_value_to_u32(&r->code_args[0], false, &v) < 0)
			return protocol_error(s, "invalid [%s] from server", r->code);
		*(streq(r->code, "UIDVALIDITY") ? &s->uidvalidity : &s->uidnext) = v;
	}
	return 0;
}

static int on_exists(struct imap_session *s, uint32_t n, usec_t now)
{
	bool more = n > s->exists;

	s->exists = n;
	if (!more || s->state == S_EXAMINE || s->state < S_EXAMINE)
		return 0;
	/* After UID 2^32-1 nothing can be fetched until UIDVALIDITY changes (next connect). */
	if (s->state != S_FIND_LAST && s->last_uid == UINT32_MAX)
		return 0;
	s->new_mail = true;
	if (s->state == S_IDLING)
		return leave_idle(s, now);
	if (s->state == S_POLL_WAIT) /* no command in flight: don't wait for the next NOOP */
		return step_wait(s, now);
	return 0; /* picked up when the command in flight completes */
}

static int scan_add(struct imap_session *s, uint32_t uid)
{
	if (s->n_scan >= SCAN_MAX_UIDS)
		return protocol_error(s, "server reports more than %u new messages", SCAN_MAX_UIDS);
	if (s->n_scan == s->scan_alloc) {
		size_t n = s->scan_alloc ? s->scan_alloc * 2 : 64;
		uint32_t *u = reallocarray(s->scan_uids, n, sizeof(uint32_t));
		if (!u)
			return fail(s, IMAP_FAIL_TRANSIENT, ENOMEM, "out of memory");
		s->scan_uids = u;
		s->scan_alloc = n;
	}
	s->scan_uids[s->n_scan++] = uid;
	return 0;
}

/* ---- what happens to reported messages -------------------------------------------------- */

/* Where seq is, or would be inserted. */
static size_t known_find(const struct imap_session *s, uint32_t seq)
{
	size_t lo = 0, hi = s->n_known;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->known[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static uint32_t known_uid(const struct imap_session *s, uint32_t seq)
{
	size_t i = known_find(s, seq);

	return i < s->n_known && s->known[i].seq == seq ? s->known[i].uid : 0;
}

/* Remember a reported message's sequence number; only needed while EXPUNGE names numbers.
 * Out of memory only costs a later expunge notice, never the session. */
static void known_add(struct imap_session *s, uint32_t seq, uint32_t uid)
{
	if (s->qresync || seq == 0)
		return;
	/* Reported messages come in UID order, so in sequence order too; if not, the server's
	 * numbers disagree with ours and nothing learned so far can be trusted. */
	if (s->n_known > 0 && (s->known[s->n_known - 1].seq >= seq ||
			       s->known[s->n_known - 1].uid >= uid))
		s->n_known = 0;
	if (s->n_known == IMAP_SESSION_KNOWN_MAX) {
		memmove(s->known, s->known + 1, (s->n_known - 1) * sizeof(*s->known));
		s->n_known--;
	}
	if (s->n_known == s->known_alloc) {
		size_t n = MIN(s->known_alloc ? s->known_alloc * 2 : 16,
			       (size_t)IMAP_SESSION_KNOWN_MAX);
		struct seq_uid *k = reallocarray(s->known, n, sizeof(*k));
		if (!k)
			return;
		s->known = k;
		s->known_alloc = n;
	}
	s->known[s->n_known++] = (struct seq_uid){ seq, uid };
}

/* RFC 3501 §7.4.1: every later message moves down by one. */
static int on_expunge(struct imap_session *s, uint32_t seq)
{
	size_t i = known_find(s, seq);
	uint32_t uid = 0;

	if (seq == 0)
		return protocol_error(s, "EXPUNGE of message 0");
	if (s->exists > 0)
		s->exists--;
	if (s->qresync) /* RFC 7162 §3.2.10: VANISHED instead; a stray EXPUNGE is not trusted */
		return 0;
	if (i < s->n_known && s->known[i].seq == seq) {
		uid = s->known[i].uid;
		memmove(s->known + i, s->known + i + 1, (s->n_known - i - 1) * sizeof(*s->known));
		s->n_known--;
	}
	for (size_t k = i; k < s->n_known; k++)
		s->known[k].seq--;
	if (uid && s->ops->expunged)
		s->ops->expunged(s->userdata, uid);
	return 0;
}

/* One "a", "a:b" or "a:*" of a uid-set (RFC 3501 §9 sequence-set; "*" is read as the
 * largest UID, so "1:*" is no worse than "1:4294967295"). */
static const char *parse_uid_range(const char *p, uint32_t *ret_lo, uint32_t *ret_hi)
{
	uint32_t v[2];

	for (unsigned k = 0; k < 2; k++) {
		uint64_t n = 0;

		if (*p == '*') {
			n = UINT32_MAX;
			p++;
		} else {
			if (*p < '1' || *p > '9')
				return NULL;
			for (; *p >= '0' && *p <= '9'; p++) {
				n = n * 10 + (uint64_t)(*p - '0');
				if (n > UINT32_MAX)
					return NULL;
			}
		}
		v[k] = (uint32_t)n;
		if (k == 0 && *p != ':') {
			v[1] = v[0];
			break;
		}
		if (k == 0)
			p++;
	}
	*ret_lo = MIN(v[0], v[1]);
	*ret_hi = MAX(v[0], v[1]);
	return p;
}

/* Walks a uid-set: counts its UIDs, and when report is set reports each one inside the window
 * once. Returns -EBADMSG for anything that is not a uid-set. Overlapping ranges are marked off
 * in a bitmap of the window; disjoint ranges visit each UID once, so the step budget only
 * ever cuts short a server that repeats itself. */
static int walk_uid_set(struct imap_session *s, const char *set, bool report, uint64_t *ret_count)
{
	uint32_t top = s->last_uid, window = IMAP_SESSION_VANISHED_WINDOW;
	uint32_t bottom = top >= window ? top - window + 1 : 1;
	uint8_t done[IMAP_SESSION_VANISHED_WINDOW / 8 + 1] = {};
	unsigned steps = 2 * window;
	uint64_t count = 0;
	const char *p = set;

	for (;;) {
		uint32_t lo, hi;

		p = parse_uid_range(p, &lo, &hi);
		if (!p)
			return -EBADMSG;
		count += (uint64_t)hi - lo + 1;
		lo = MAX(lo, bottom);
		hi = MIN(hi, top);
		for (uint64_t u = lo; report && top > 0 && u <= hi && steps > 0; u++, steps--) {
			uint32_t bit = (uint32_t)(u - bottom);
			if (done[bit / 8] & (1U << (bit % 8)))
				continue;
			done[bit / 8] |= (uint8_t)(1U << (bit % 8));
			if (s->ops->expunged)
				s->ops->expunged(s->userdata, (uint32_t)u);
		}
		if (*p == '\0')
			break;
		if (*p++ != ',')
			return -EBADMSG;
	}
	*ret_count = count;
	return 0;
}

/* "* VANISHED [(EARLIER)] uid-set" (RFC 7162 §3.2.10). Without EARLIER it stands for one
 * EXPUNGE per UID, so EXISTS goes down by as many: a count left too high would make the next
 * EXISTS look like no new mail. EARLIER answers a QRESYNC SELECT or UID FETCH (VANISHED),
 * neither of which is ever sent: old news, ignored. */
static int on_vanished(struct imap_session *s, const struct imap_response *r)
{
	const struct imap_value *set = r->n_args > 0 ? &r->args[0] : NULL;
	bool earlier = false;
	uint64_t count;

	if (imap_value_is_list(set)) {
		earlier = set->n_items == 1 && imap_value_is_atom(&set->items[0], "EARLIER");
		set = r->n_args == 2 ? &r->args[1] : NULL;
	} else if (r->n_args != 1) {
		set = NULL;
	}
	if (!set || (set->type != IMAP_VAL_ATOM && set->type != IMAP_VAL_NUMBER) ||
	    walk_uid_set(s, set->str, false, &count) < 0)
		return protocol_error(s, "malformed VANISHED response");
	if (earlier || !s->qresync) /* never asked for: a VANISHED we did not enable */
		return 0;
	s->exists = count >= s->exists ? 0 : s->exists - (uint32_t)count;
	if (s->p.goal == IMAP_GOAL_WATCH)
		walk_uid_set(s, set->str, true, &count);
	return 0;
}

static void on_enabled(struct imap_session *s, const struct imap_response *r)
{
	if (s->state != S_ENABLE)
		return;
	for (size_t i = 0; i < r->n_args; i++)
		if (imap_value_is_atom(&r->args[i], "QRESYNC"))
			s->qresync = true;
}

/* An untagged FETCH that is not the answer to ours: another client changed flags. Answers
 * are a UID FETCH's messages (with the envelope we asked for) and, while scanning, every
 * (UID FLAGS) line, which cannot be told apart from a change: changes during a scan are
 * missed. Without CONDSTORE/QRESYNC the UID may be missing: then only the messages reported
 * on this connection are known by their numbers. */
static void check_flag_change(struct imap_session *s, const struct imap_fetch *f)
{
	uint32_t uid = f->uid;

	if (!f->has_flags || s->state <= S_EXAMINE || s->state == S_SCAN ||
	    (s->state == S_FETCH && f->has_envelope))
		return;
	if (uid == 0 && !s->qresync)
		uid = known_uid(s, f->seq);
	if (uid == 0 || uid > s->last_uid)
		return; /* unknown, or new mail that the next fetch reports */
	if (s->ops->flags_changed)
		s->ops->flags_changed(s->userdata, uid, f->flags);
}

static int handle_fetch(struct imap_session *s, const struct imap_fetch *f);

static int on_fetch(struct imap_session *s, const struct imap_response *r)
{
	struct imap_fetch f;
	int k;

	k = imap_fetch_parse(r, &f);
	if (k < 0)
		return protocol_error(s, "malformed FETCH response");
	k = handle_fetch(s, &f);
	imap_fetch_done(&f);
	return k;
}

static int handle_fetch(struct imap_session *s, const struct imap_fetch *f)
{
	/* "UID FETCH n:*" also returns the last message when n is past the end (RFC 3501
	 * §6.4.8: * is the largest UID in use); and unsolicited FETCH (flag changes) may
	 * arrive at any time. Only UIDs above what was reported count. */
	if (s->p.goal != IMAP_GOAL_WATCH)
		return 0;
	if (s->state == S_FIND_LAST) {
		if (f->uid)
			s->uidnext = f->uid == UINT32_MAX ? UINT32_MAX : f->uid + 1;
		return 0;
	}
	check_flag_change(s, f);
	if ((s->state != S_FETCH && s->state != S_SCAN) || f->uid <= s->last_uid)
		return 0;
	bool seen = f->has_flags && (f->flags & IMAP_FLAG_SEEN);
	if (s->state == S_SCAN) {
		/* A flag change may repeat a UID, or come before the answer: count each once. */
		if (!f->has_flags || f->uid <= s->scan_max)
			return 0;
		s->scan_max = f->uid;
		return seen && s->p.skip_seen ? 0 : scan_add(s, f->uid);
	}
	/* An unsolicited FETCH (FLAGS) of the new message may come before the answer to
	 * ours: only the one with the envelope we asked for is the message. */
	if (!f->has_envelope)
		return 0;
	s->last_uid = f->uid;
	if (seen && s->p.skip_seen) {
		if (s->ops->skipped)
			s->ops->skipped(s->userdata, f->uid);
	} else {
		known_add(s, f->seq, f->uid);
		if (s->ops->message)
			s->ops->message(s->userdata, f);
	}
	return 0;
}

/* C0, DEL or C1 (U+0080-U+009F, UTF-8 C2 80..C2 9F): a name with them would reach a
 * terminal as escape sequences, and nobody can write it in a config file anyway. */
static bool has_control(const char *utf8)
{
	for (const unsigned char *p = (const unsigned char *)utf8; *p; p++)
		if (*p < 0x20 || *p == 0x7f || (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
			return true;
	return false;
}

static int on_list(struct imap_session *s, const struct imap_response *r)
{
	_cleanup_free_ char *name = NULL;
	bool noselect = false;
	const struct imap_value *flags;

	if (s->state != S_LIST || r->n_args < 3 || r->args[0].type != IMAP_VAL_LIST)
		return 0;
	flags = &r->args[0];
	for (size_t i = 0; i < flags->n_items; i++)
		if (imap_value_is_atom(&flags->items[i], "\\Noselect") ||
		    imap_value_is_atom(&flags->items[i], "\\NonExistent"))
			noselect = true;
	if (!imap_value_string(&r->args[2]) ||
	    imap_mutf7_decode(imap_value_string(&r->args[2]), &name) < 0)
		return 0; /* undecodable names are not ours to watch; skip */
	if (has_control(name)) {
		log_debug("%s: ignoring a mailbox name with control characters", s->name);
		return 0;
	}
	if (s->ops->listed)
		s->ops->listed(s->userdata, name, noselect);
	return 0;
}

static int on_untagged(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	if (r->status != IMAP_STATUS_NONE) {
		check_alert(s, r);
		if (r->status == IMAP_STATUS_BYE)
			s->bye_seen = true;
		return on_status_code(s, r);
	}
	if (!r->name)
		return 0;
	if (streq(r->name, "CAPABILITY")) {
		take_capabilities(s, r->args, r->n_args);
		return 0;
	}
	if (streq(r->name, "EXISTS") && r->has_number)
		return on_exists(s, r->number, now);
	if (streq(r->name, "EXPUNGE") && r->has_number)
		return on_expunge(s, r->number);
	if (streq(r->name, "VANISHED"))
		return on_vanished(s, r);
	if (streq(r->name, "ENABLED")) {
		on_enabled(s, r);
		return 0;
	}
	if (streq(r->name, "FETCH"))
		return on_fetch(s, r);
	if (streq(r->name, "LIST"))
		return on_list(s, r);
	return 0; /* RECENT, FLAGS, ENABLED, ID, ...: nothing to do */
}

/* RFC 5530 has [LIMIT], but many servers only say it in words. */
static bool text_says_too_many(const char *text)
{
	return text && (strcasestr(text, "too many") || strcasestr(text, "connection limit") ||
			strcasestr(text, "maximum number of connections"));
}

/* ---- greeting ------------------------------------------------------------------------ */

static int on_greeting(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	if (r->kind != IMAP_RESP_UNTAGGED || r->status == IMAP_STATUS_NONE)
		return protocol_error(s, "expected a greeting, got something else");
	check_alert(s, r);
	if (r->status == IMAP_STATUS_BYE)
		return fail(s, text_says_too_many(r->text) ? IMAP_FAIL_TOO_MANY
								: IMAP_FAIL_TRANSIENT,
			    ECONNREFUSED, "server refused the connection: %s", strempty(r->text));
	if (r->code && streq(r->code, "CAPABILITY"))
		take_capabilities(s, r->code_args, r->n_code_args);
	if (r->status == IMAP_STATUS_PREAUTH) {
		/* PREAUTH skips STARTTLS: on a connection that must be encrypted it is the
		 * classic stripping attack, so it is refused before anything is sent. */
		if (!s->tls && s->p.tls != TLS_NONE)
			return fail(s, IMAP_FAIL_FINAL, EPROTO,
				    "server sent PREAUTH on an unencrypted connection; refusing");
		s->caps_known = false;
		return step_after_login(s, now);
	}
	if (r->status != IMAP_STATUS_OK)
		return protocol_error(s, "unexpected greeting");
	return step_after_greeting(s, now);
}

/* ---- tagged responses ---------------------------------------------------------------- */

static enum imap_failure classify_login_failure(const struct imap_response *r)
{
	if (r->code && (streq(r->code, "UNAVAILABLE") || streq(r->code, "SERVERBUG")))
		return IMAP_FAIL_TRANSIENT;
	if ((r->code && streq(r->code, "LIMIT")) || text_says_too_many(r->text))
		return IMAP_FAIL_TOO_MANY;
	if (r->code && streq(r->code, "PRIVACYREQUIRED"))
		return IMAP_FAIL_FINAL;
	return IMAP_FAIL_AUTH;
}

static int on_login_done(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	if (r->status != IMAP_STATUS_OK)
		return fail(s, classify_login_failure(r), EACCES, "login as %s rejected: %s",
			    s->p.username, strempty(r->text));
	log_debug("%s: logged in as %s", s->name, s->p.username);
	/* Capabilities change at login; use the OK's [CAPABILITY] or ask again. */
	if (!(r->code && streq(r->code, "CAPABILITY")))
		s->caps_known = false;
	return step_after_login(s, now);
}

static int on_examine_done(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	if (r->status != IMAP_STATUS_OK)
		return fail(s, IMAP_FAIL_NO_MAILBOX, ENOENT, "cannot open mailbox \"%s\": %s",
			    s->p.mailbox, strempty(r->text));
	if (s->uidvalidity == 0)
		return protocol_error(s, "server selected \"%s\" without a UIDVALIDITY",
				      s->p.mailbox);
	return step_after_select(s, now);
}

static void report_stored(struct imap_session *s, int result, const char *fmt, ...)
	_printf_(3, 4);
static void report_stored(struct imap_session *s, int result, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (s->ops->stored)
		s->ops->stored(s->userdata, result, why);
}

/* A UID names a message only together with its UIDVALIDITY (RFC 3501 §2.3.1.1): after a
 * change the same number may be another message, which must not be marked. */
static int on_select_done(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	int k;

	if (r->status != IMAP_STATUS_OK)
		return fail(s, IMAP_FAIL_NO_MAILBOX, ENOENT, "cannot select mailbox \"%s\": %s",
			    s->p.mailbox, strempty(r->text));
	if (s->uidvalidity == 0)
		return protocol_error(s, "server selected \"%s\" without a UIDVALIDITY",
				      s->p.mailbox);
	if (s->uidvalidity != s->p.uidvalidity) {
		report_stored(s, -ESTALE, "UIDVALIDITY is now %u, not %u: UID %u is another message",
			      s->uidvalidity, s->p.uidvalidity, s->p.store_uid);
		return s->state == S_DEAD ? -EPROTO : simple(s, "LOGOUT", S_LOGOUT, now);
	}
	cmd_reset(s);
	k = imap_cmd_uid_store_seen(&s->cmd, next_tag(s), s->p.store_uid);
	if (k < 0)
		return fail(s, IMAP_FAIL_FINAL, k, "cannot build UID STORE for UID %u",
			    s->p.store_uid);
	return send_command(s, S_STORE, now);
}

static int on_store_done(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	if (r->status == IMAP_STATUS_OK)
		report_stored(s, 0, "stored");
	else
		report_stored(s, -EIO, "server refused UID STORE: %s", strempty(r->text));
	return s->state == S_DEAD ? -EPROTO : simple(s, "LOGOUT", S_LOGOUT, now);
}

/* The scan is done: report the oldest as one summary, fetch the newest one by one. */
static int on_scan_done(struct imap_session *s, usec_t now)
{
	size_t n = s->n_scan, keep = MIN(n, (size_t)s->p.catch_up);
	uint32_t first_individual;

	if (n > keep) {
		uint32_t last = s->scan_uids[n - keep - 1];
		if (s->ops->summary)
			s->ops->summary(s->userdata, s->scan_uids[0], last, (uint32_t)(n - keep));
		s->last_uid = last;
	}
	first_individual = keep ? s->scan_uids[n - keep] : 0;
	s->scan_uids = mfree(s->scan_uids);
	s->n_scan = s->scan_alloc = 0;
	if (s->state == S_DEAD)
		return -EPROTO;
	if (keep == 0) {
		/* Seen messages after the last one counted (or nothing but seen ones): move
		 * past them, or every later fetch would start before them again. */
		if (s->scan_max > s->last_uid) {
			s->last_uid = s->scan_max;
			if (s->ops->skipped)
				s->ops->skipped(s->userdata, s->scan_max);
			if (s->state == S_DEAD)
				return -EPROTO;
		}
		return step_wait(s, now);
	}
	/* Seen messages in between are filtered again by the full fetch. */
	s->last_uid = first_individual - 1;
	return fetch_from(s, first_individual, true, S_FETCH, now);
}

static int on_command_done(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	bool ok = r->status == IMAP_STATUS_OK;

	switch (s->state) {
	case S_CAPABILITY:
		if (!ok || !s->caps_known)
			return protocol_error(s, "CAPABILITY failed");
		return step_after_greeting(s, now);
	case S_STARTTLS:
		if (!ok)
			return fail(s, IMAP_FAIL_FINAL, EPROTO,
				    "server refused STARTTLS: %s; refusing to continue unencrypted",
				    strempty(r->text));
		/* Whatever followed the OK was sent in the clear and may be an injection. */
		imap_parser_reset(s->parser);
		s->caps = 0;
		s->caps_known = false;
		set_state(s, S_TLS_HANDSHAKE);
		s->deadline = now + s->p.greeting_timeout;
		if (s->ops->start_tls(s->userdata) < 0)
			return fail(s, IMAP_FAIL_TRANSIENT, EPROTO, "cannot start TLS");
		return 0;
	case S_AUTHENTICATE:
		return on_login_done(s, r, now);
	case S_AUTH_CAPS:
		if (!ok || !s->caps_known)
			return protocol_error(s, "CAPABILITY failed after login");
		return step_after_login(s, now);
	case S_ENABLE:
	case S_ID:
		return step_after_login(s, now); /* optional: a NO is fine */
	case S_LIST:
		if (!ok)
			return protocol_error(s, "LIST failed: %s", strempty(r->text));
		return simple(s, "LOGOUT", S_LOGOUT, now);
	case S_SELECT:
		return on_select_done(s, r, now);
	case S_STORE:
		return on_store_done(s, r, now);
	case S_EXAMINE:
		return on_examine_done(s, r, now);
	case S_FIND_LAST:
		if (!ok)
			return protocol_error(s, "FETCH failed: %s", strempty(r->text));
		return step_after_select(s, now);
	case S_SCAN:
		if (!ok)
			return protocol_error(s, "UID FETCH failed: %s", strempty(r->text));
		return on_scan_done(s, now);
	case S_FETCH:
		if (!ok)
			return protocol_error(s, "UID FETCH failed: %s", strempty(r->text));
		return step_wait(s, now);
	case S_IDLE_START:
	case S_IDLE_DONE:
		if (!ok)
			return protocol_error(s, "IDLE failed: %s", strempty(r->text));
		if (s->state == S_IDLE_START) {
			/* Done before it began: IDLE again would ping-pong as fast as the
			 * server answers. Poll on this connection instead. */
			log_info("%s: server ended IDLE without entering it; polling instead",
				 s->name);
			s->caps &= ~IMAP_CAP(IMAP_CAP_IDLE);
		}
		s->probe_requested = false;
		return step_wait(s, now);
	case S_NOOP:
		if (!ok)
			return protocol_error(s, "NOOP failed: %s", strempty(r->text));
		s->probe_requested = false;
		return step_wait(s, now);
	case S_LOGOUT:
		return fail(s, IMAP_FAIL_NONE, 0, "logged out");
	default:
		return protocol_error(s, "unexpected tagged response in state %s",
				      state_names[s->state]);
	}
}

static int on_tagged(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	/* Only the one command in flight may be answered; anything else is forged or a
	 * desynchronised stream. */
	if (!s->tag[0] || !streq(r->tag, s->tag))
		return protocol_error(s, "response for unknown tag \"%.16s\"", r->tag);
	check_alert(s, r);
	if (cmd_has_more(s) && r->status == IMAP_STATUS_OK)
		return protocol_error(s, "OK for a command that was not fully sent");
	if (r->status != IMAP_STATUS_OK && r->status != IMAP_STATUS_NO &&
	    r->status != IMAP_STATUS_BAD)
		return protocol_error(s, "invalid tagged status");
	s->tag[0] = '\0';
	cmd_reset(s);
	s->deadline = USEC_INFINITY;
	if (r->code && streq(r->code, "CAPABILITY"))
		take_capabilities(s, r->code_args, r->n_code_args);
	return on_command_done(s, r, now);
}

/* Without SASL-IR the payload follows the first "+"; a "+" after the payload is an
 * XOAUTH2/OAUTHBEARER error challenge, answered empty to get the final NO. */
static int on_sasl_challenge(struct imap_session *s)
{
	struct imap_sasl_creds cr = { s->p.username,
				      s->sasl_mech == IMAP_SASL_PLAIN ? s->p.password
								      : s->p.oauth_token,
				      s->p.host, s->p.port };
	struct imap_cmd reply;
	const char *data;
	size_t len;
	int r;

	/* LOGIN has no challenges, and an error challenge gets one empty reply: anything
	 * more is a server trying to keep us talking. */
	if (!s->sasl || s->sasl_empty_sent)
		return protocol_error(s, "unexpected continuation request during login");
	imap_cmd_init(&reply, s->caps);
	if (s->sasl_payload_sent) {
		r = imap_cmd_sasl_empty(&reply);
		s->sasl_empty_sent = true;
	} else {
		log_debug("%s: C: (SASL response) ***", s->name);
		r = imap_cmd_sasl_response(&reply, s->sasl_mech, &cr);
		s->sasl_payload_sent = true;
	}
	data = imap_cmd_data(&reply, &len);
	if (r < 0)
		r = fail(s, IMAP_FAIL_FINAL, r, "cannot build the SASL response: %s", strerror(-r));
	else
		r = send_bytes(s, data, len);
	imap_cmd_done(&reply);
	return r;
}

static int on_continuation(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	const char *data;
	size_t len;

	if (s->state == S_IDLE_START) {
		set_state(s, S_IDLING);
		imap_cmd_done(&s->cmd); /* sent in full; an idle session holds no buffer */
		s->deadline = now + s->p.idle_refresh;
		if (s->ops->idle)
			s->ops->idle(s->userdata);
		/* Mail that arrived between EXAMINE and the "+" is not lost. */
		if (s->new_mail || s->logout_requested || s->probe_requested)
			return leave_idle(s, now);
		return 0;
	}
	if (cmd_has_more(s)) {
		if (imap_cmd_segment(&s->cmd, s->next_segment++, &data, &len) < 0)
			return protocol_error(s, "internal: no segment");
		return send_bytes(s, data, len);
	}
	if (s->state == S_AUTHENTICATE)
		return on_sasl_challenge(s);
	return protocol_error(s, "unexpected continuation request");
}

static int dispatch(struct imap_session *s, const struct imap_response *r, usec_t now)
{
	if (s->state == S_GREETING)
		return on_greeting(s, r, now);
	switch (r->kind) {
	case IMAP_RESP_TAGGED:
		return on_tagged(s, r, now);
	case IMAP_RESP_CONTINUATION:
		return on_continuation(s, r, now);
	default:
		return on_untagged(s, r, now);
	}
}

/* ---- public entry points ------------------------------------------------------------- */

int imap_session_feed(struct imap_session *s, const void *data, size_t len, usec_t now)
{
	const struct imap_response *r;
	int k;

	if (s->state == S_DEAD)
		return -ESTALE;
	if (s->state == S_TLS_HANDSHAKE)
		return protocol_error(s, "data received during the TLS upgrade");
	k = imap_parser_feed(s->parser, data, len);
	while (k >= 0 && s->state != S_DEAD && s->state != S_TLS_HANDSHAKE) {
		k = imap_parser_next(s->parser, &r);
		if (k <= 0)
			break;
		k = dispatch(s, r, now);
	}
	if (k < 0 && s->state != S_DEAD)
		return protocol_error(s, "protocol error: %s", imap_parser_error(s->parser));
	return s->state == S_DEAD ? -ESTALE : 0;
}

int imap_session_connected(struct imap_session *s, bool tls, usec_t now)
{
	s->tls = tls;
	s->deadline = now + s->p.greeting_timeout;
	return 0;
}

int imap_session_tls_ready(struct imap_session *s, usec_t now)
{
	if (s->state != S_TLS_HANDSHAKE)
		return protocol_error(s, "TLS ready in state %s", state_names[s->state]);
	s->tls = true;
	return simple(s, "CAPABILITY", S_CAPABILITY, now);
}

void imap_session_transport_closed(struct imap_session *s, int error, const char *why)
{
	if (s->state == S_LOGOUT)
		fail(s, IMAP_FAIL_NONE, 0, "logged out");
	else if (s->bye_seen)
		fail(s, IMAP_FAIL_TRANSIENT, error ? error : ECONNRESET,
		     "server closed the connection after BYE");
	else
		fail(s, IMAP_FAIL_TRANSIENT, error ? error : ECONNRESET, "%s",
		     why ? why : "connection closed by server");
}

usec_t imap_session_deadline(const struct imap_session *s)
{
	return s->state == S_DEAD ? USEC_INFINITY : s->deadline;
}

int imap_session_timeout(struct imap_session *s, usec_t now)
{
	if (s->state == S_DEAD || now < s->deadline)
		return 0;
	switch (s->state) {
	case S_IDLING: /* time to refresh, before the server's own timeout drops us */
		return leave_idle(s, now);
	case S_POLL_WAIT:
		return simple(s, "NOOP", S_NOOP, now);
	case S_GREETING:
		return fail(s, IMAP_FAIL_TRANSIENT, ETIMEDOUT, "no greeting from server");
	case S_TLS_HANDSHAKE:
		return fail(s, IMAP_FAIL_TRANSIENT, ETIMEDOUT, "TLS upgrade timed out");
	default:
		return fail(s, IMAP_FAIL_TRANSIENT, ETIMEDOUT,
			    "no answer from server in state %s: the link is dead",
			    state_names[s->state]);
	}
}

int imap_session_probe(struct imap_session *s, usec_t now)
{
	int r;

	s->probe_requested = true;
	if (s->state == S_IDLING)
		return leave_idle(s, now);
	if (s->state != S_POLL_WAIT)
		return 0; /* a command is in flight: its reply timeout already watches the link */
	r = simple(s, "NOOP", S_NOOP, now);
	if (r >= 0 && s->p.probe_timeout > 0)
		s->deadline = MIN(s->deadline, now + s->p.probe_timeout);
	return r;
}

int imap_session_logout(struct imap_session *s, usec_t now)
{
	s->logout_requested = true;
	if (s->state == S_IDLING)
		return leave_idle(s, now);
	if (s->state == S_POLL_WAIT)
		return simple(s, "LOGOUT", S_LOGOUT, now);
	if (s->state < S_AUTHENTICATE || s->state == S_DEAD)
		return fail(s, IMAP_FAIL_NONE, 0, "closed before login");
	return 0;
}

uint64_t imap_session_capabilities(const struct imap_session *s)
{
	return s->caps;
}

const char *imap_session_state_name(const struct imap_session *s)
{
	return state_names[s->state];
}

bool imap_session_is_idle(const struct imap_session *s)
{
	return s->state == S_IDLING || s->state == S_POLL_WAIT;
}

struct imap_session *imap_session_free(struct imap_session *s)
{
	if (!s)
		return NULL;
	imap_parser_free(s->parser);
	imap_cmd_done(&s->cmd);
	free(s->scan_uids);
	free(s->known);
	free(s->name);
	free(s->username);
	free(s->mailbox);
	return mfree(s);
}

int imap_session_new(const struct imap_session_params *p, const struct imap_session_ops *ops,
		     void *userdata, usec_t now, struct imap_session **ret)
{
	struct imap_session *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->p = *p;
	s->ops = ops;
	s->userdata = userdata;
	s->name = strdup(p->name ? p->name : "imap");
	s->username = p->username ? strdup(p->username) : NULL;
	s->mailbox = p->mailbox ? strdup(p->mailbox) : NULL;
	s->parser = imap_parser_new(NULL);
	if (!s->name || (p->username && !s->username) || (p->mailbox && !s->mailbox) ||
	    !s->parser) {
		imap_session_free(s);
		return -ENOMEM;
	}
	/* The copies replace the borrowed pointers; passwords and tokens stay borrowed so
	 * that there is one copy to wipe. */
	s->p.name = s->name;
	s->p.username = s->username;
	s->p.mailbox = s->mailbox;
	s->state = S_GREETING;
	s->deadline = now + p->greeting_timeout;
	*ret = s;
	return 0;
}
