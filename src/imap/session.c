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
	[S_LIST] = "list",             [S_EXAMINE] = "examine",
	[S_FIND_LAST] = "find-last",   [S_SCAN] = "scan",
	[S_FETCH] = "fetch",           [S_IDLE_START] = "idle-start",
	[S_IDLING] = "idling",         [S_IDLE_DONE] = "idle-done",
	[S_POLL_WAIT] = "poll-wait",   [S_NOOP] = "noop",
	[S_LOGOUT] = "logout",         [S_DEAD] = "dead",
};

/* A long absence is scanned with UID FLAGS before fetching envelopes; the UIDs kept
 * meanwhile are bounded so a hostile server cannot make us grow without limit. */
#define SCAN_MAX_UIDS (1U << 20)

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

/* Capabilities are read again after login: servers advertise more (or less) then. */
static int step_after_login(struct imap_session *s, usec_t now)
{
	if (s->logout_requested) /* asked during login: nothing more to set up */
		return simple(s, "LOGOUT", S_LOGOUT, now);
	if (!s->caps_known)
		return simple(s, "CAPABILITY", S_AUTH_CAPS, now);
	if (s->state < S_ENABLE && has(s, IMAP_CAP_ENABLE) && has(s, IMAP_CAP_CONDSTORE)) {
		cmd_reset(s);
		int r = imap_cmd_enable(&s->cmd, next_tag(s), IMAP_CAP(IMAP_CAP_CONDSTORE));
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
	if (s->state != S_EXAMINE)
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
	if (s->state == S_FIND_LAST) {
		if (f->uid)
			s->uidnext = f->uid == UINT32_MAX ? UINT32_MAX : f->uid + 1;
		return 0;
	}
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
	} else if (s->ops->message) {
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
	if (streq(r->name, "EXPUNGE") && r->has_number) {
		if (s->exists > 0)
			s->exists--;
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
