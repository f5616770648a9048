#include "link.h"

#include <time.h>

#include "log.h"
#include "net/resolve.h"

struct link {
	sd_event *event;
	struct conn *conn;
	struct imap_session *session;
	sd_event_source *timer;
	sd_event_source *release; /* pending deferred free */
	const struct imap_session_ops *ops;
	void *userdata;
	bool dead; /* released: no more callbacks to the owner */
};

static usec_t link_now(void)
{
	return now_usec(CLOCK_BOOTTIME);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* After every input to the session its deadline may have moved: keep the one timer on it. */
static void link_rearm(struct link *l)
{
	usec_t deadline;
	int r;

	if (l->dead || !l->session)
		return;
	deadline = imap_session_deadline(l->session);
	if (deadline == USEC_INFINITY) {
		if (l->timer)
			sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
		return;
	}
	if (!l->timer) {
		r = sd_event_add_time(l->event, &l->timer, CLOCK_BOOTTIME, deadline, 0, on_timer, l);
		if (r < 0)
			log_error_errno(r, "Cannot add timer: %m");
		return;
	}
	sd_event_source_set_time(l->timer, deadline);
	sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct link *l = userdata;

	if (l->dead)
		return 0;
	imap_session_timeout(l->session, link_now());
	link_rearm(l);
	return 0;
}

static void on_connected(struct conn *c, void *userdata)
{
	struct link *l = userdata;

	if (l->dead)
		return;
	imap_session_connected(l->session, conn_is_tls(c), link_now());
	link_rearm(l);
}

static void on_tls_ready(struct conn *c, void *userdata)
{
	struct link *l = userdata;

	if (l->dead)
		return;
	imap_session_tls_ready(l->session, link_now());
	link_rearm(l);
}

static void on_data(struct conn *c, const uint8_t *buf, size_t len, void *userdata)
{
	struct link *l = userdata;

	if (l->dead)
		return;
	imap_session_feed(l->session, buf, len, link_now());
	link_rearm(l);
}

static void on_closed(struct conn *c, int error, const char *why, void *userdata)
{
	struct link *l = userdata;

	if (l->dead)
		return;
	imap_session_transport_closed(l->session, error, why);
}

static const struct conn_callbacks conn_callbacks = {
	.connected = on_connected,
	.tls_ready = on_tls_ready,
	.data = on_data,
	.closed = on_closed,
};

/* The session's own I/O requests, served by the transport. */
static int session_send(void *userdata, const void *data, size_t len)
{
	struct link *l = userdata;

	return conn_write(l->conn, data, len);
}

static int session_start_tls(void *userdata)
{
	struct link *l = userdata;

	return conn_start_tls(l->conn);
}

/* Everything else goes to the owner, unless it has let go of the link. */
#define FORWARD(name, ...)                                  \
	do {                                                \
		struct link *l = userdata;                  \
		if (!l->dead && l->ops->name)               \
			l->ops->name(l->userdata, __VA_ARGS__); \
	} while (0)

static void fwd_selected(void *userdata, uint32_t uidvalidity, uint32_t last_uid, bool baseline)
{
	FORWARD(selected, uidvalidity, last_uid, baseline);
}

static void fwd_message(void *userdata, const struct imap_fetch *f)
{
	FORWARD(message, f);
}

static void fwd_summary(void *userdata, uint32_t first, uint32_t last, uint32_t count)
{
	FORWARD(summary, first, last, count);
}

static void fwd_skipped(void *userdata, uint32_t uid)
{
	FORWARD(skipped, uid);
}

static void fwd_flags_changed(void *userdata, uint32_t uid, unsigned flags)
{
	FORWARD(flags_changed, uid, flags);
}

static void fwd_expunged(void *userdata, uint32_t uid)
{
	FORWARD(expunged, uid);
}

static void fwd_stored(void *userdata, int result, const char *why)
{
	FORWARD(stored, result, why);
}

static void fwd_listed(void *userdata, const char *mailbox, bool noselect)
{
	FORWARD(listed, mailbox, noselect);
}

static void fwd_alert(void *userdata, const char *text)
{
	FORWARD(alert, text);
}

static void fwd_idle(void *userdata)
{
	struct link *l = userdata;

	if (!l->dead && l->ops->idle)
		l->ops->idle(l->userdata);
}

static void fwd_closed(void *userdata, enum imap_failure failure, int error, const char *why)
{
	FORWARD(closed, failure, error, why);
}

static const struct imap_session_ops session_ops = {
	.send = session_send,
	.start_tls = session_start_tls,
	.selected = fwd_selected,
	.message = fwd_message,
	.summary = fwd_summary,
	.skipped = fwd_skipped,
	.idle = fwd_idle,
	.flags_changed = fwd_flags_changed,
	.expunged = fwd_expunged,
	.stored = fwd_stored,
	.listed = fwd_listed,
	.alert = fwd_alert,
	.closed = fwd_closed,
};

static struct link *link_free(struct link *l)
{
	if (!l)
		return NULL;
	sd_event_source_disable_unref(l->timer);
	sd_event_source_disable_unref(l->release);
	imap_session_free(l->session);
	conn_free(l->conn);
	sd_event_unref(l->event);
	return mfree(l);
}

int link_new(sd_event *e, struct resolver *r, const struct conn_params *cp,
	     const struct imap_session_params *sp, const struct imap_session_ops *ops,
	     void *userdata, struct link **ret)
{
	struct link *l = calloc(1, sizeof(*l));
	int k;

	if (!l)
		return -ENOMEM;
	l->event = sd_event_ref(e);
	l->ops = ops;
	l->userdata = userdata;
	k = imap_session_new(sp, &session_ops, l, link_now(), &l->session);
	if (k >= 0)
		k = conn_new(e, r, cp, &conn_callbacks, l, &l->conn);
	if (k < 0) {
		link_free(l);
		return k;
	}
	link_rearm(l);
	*ret = l;
	return 0;
}

void link_params_from_account(const struct config_account *c, const char *name,
			      enum imap_goal goal, const char *password, const char *token,
			      struct conn_params *ret_cp, struct imap_session_params *ret_sp)
{
	*ret_cp = (struct conn_params){
		.host = c->host,
		.port = c->port,
		.tls = c->tls,
		.ca_file = c->tls_ca_file,
		.fingerprint = c->has_fingerprint ? c->tls_fingerprint : NULL,
		.connect_timeout = c->connect_timeout,
		.name = name,
	};
	*ret_sp = (struct imap_session_params){
		.name = name,
		.goal = goal,
		.tls = c->tls,
		.allow_plaintext = c->allow_plaintext,
		.host = c->host,
		.port = c->port,
		.username = c->username,
		.password = password,
		.oauth_token = token,
		.auth = c->auth,
		.send_id = c->send_id,
		.reply_timeout = c->reply_timeout,
		.greeting_timeout = c->connect_timeout,
	};
}

static int on_release(sd_event_source *s, void *userdata)
{
	link_free(userdata);
	return 0;
}

struct link *link_release(struct link *l)
{
	if (!l || l->dead)
		return NULL;
	l->dead = true;
	if (l->timer)
		sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
	/* The socket goes at once (a conn may be freed inside its own callbacks): one that
	 * waited for the loop stayed ready in epoll, and sd-event polls every ready fd again for
	 * each source it dispatches. At shutdown that made stopping quadratic: 4,000
	 * connections took 4.9 s after the logout deadline. */
	l->conn = conn_free(l->conn);
	/* Freeing the rest now could pull the conn or session out from under a callback that is still
	 * on the stack; the loop frees it as soon as the current dispatch returns. */
	if (sd_event_add_defer(l->event, &l->release, on_release, l) < 0)
		link_free(l); /* out of memory: nothing else can be done; callers do not hold l */
	return NULL;
}

int link_probe(struct link *l)
{
	int r;

	if (!l || l->dead)
		return -ESTALE;
	r = imap_session_probe(l->session, link_now());
	link_rearm(l);
	return r;
}

int link_logout(struct link *l)
{
	int r;

	if (!l || l->dead)
		return -ESTALE;
	r = imap_session_logout(l->session, link_now());
	link_rearm(l);
	return r;
}

uint64_t link_capabilities(const struct link *l)
{
	return l && l->session ? imap_session_capabilities(l->session) : 0;
}

bool link_is_idle(const struct link *l)
{
	return l && !l->dead && imap_session_is_idle(l->session);
}
