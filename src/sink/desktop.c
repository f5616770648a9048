#include "sink/desktop.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/wait.h>

#include <systemd/sd-bus.h>

#include "backoff.h"
#include "log.h"
#include "proc/child.h"

extern char **environ;

#define NOTIFY_NAME "org.freedesktop.Notifications"
#define NOTIFY_PATH "/org/freedesktop/Notifications"
#define NOTIFY_IFACE "org.freedesktop.Notifications"
#define APP_NAME "imapidled"
#define ICON "mail-unread"
#define CATEGORY "email.arrived"
#define LOCAL_IFACE "org.freedesktop.DBus.Local"

/* A connection that stayed up this long was healthy: its loss starts the backoff afresh. */
#define BUS_HEALTHY_AFTER (60 * USEC_PER_SEC)

enum server_state {
	SERVER_NO_BUS,     /* no session bus, or it was lost: everything is accepted unseen */
	SERVER_CONNECTING, /* authentication and Hello under way: events wait */
	SERVER_ASKING,     /* GetCapabilities in flight: events wait */
	SERVER_MISSING,    /* nobody owns the name: events are accepted unseen */
	SERVER_READY,
	_SERVER_MAX,
};

static const char *const server_state_names[_SERVER_MAX] = {
	[SERVER_NO_BUS] = "no-bus",
	[SERVER_CONNECTING] = "connecting",
	[SERVER_ASKING] = "asking",
	[SERVER_MISSING] = "missing",
	[SERVER_READY] = "ready",
};

struct caps {
	bool actions, body_markup;
};

struct burst;

/* One notification we showed (or are about to): what its id means to us. */
struct popup {
	struct sink_desktop *sink;
	struct popup *prev, *next; /* sink->popups, oldest first */
	uint32_t id;               /* the server's; 0 until Notify answered */
	struct mail_event *e;      /* owned: what its actions act on */
	struct burst *burst;       /* the burst it summarises; NULL for a single message */
	char *token;               /* the last ActivationToken for it */
	sd_bus_slot *call;         /* its Notify, while in flight */
	bool close_on_reply;       /* the message changed before we knew the id */
	usec_t shown;              /* CLOCK_MONOTONIC, when it was sent */
};

/* One message's arrival, while a mailbox is not (yet) in a burst. */
struct arrival {
	usec_t at;
	uint32_t count, first_uid, last_uid;
};

/* A pushed event waiting for the loop. */
struct queued {
	struct mail_event *e; /* owned */
	bool gone;            /* read or expunged elsewhere meanwhile: no popup */
};

/* Recent arrivals in one mailbox, and its summary while a burst lasts. */
struct burst {
	struct burst *next;
	char *account, *mailbox;
	uint32_t uidvalidity;
	struct arrival *arrivals; /* oldest first, within summary_window of the newest */
	size_t n_arrivals, allocated;
	usec_t last;              /* the newest arrival */
	uint64_t count;           /* > 0: a burst, counting this many messages */
	uint32_t first_uid, last_uid;
	struct popup *summary; /* borrowed from sink->popups */
	bool dirty;            /* count changed since the summary's last Notify */
};

struct sink_desktop {
	sd_event *event;
	struct config_desktop cfg; /* on_click and desktop_entry owned */
	sink_accepted_fn accepted;
	void *userdata;
	int (*mark_seen)(void *hook_userdata, const struct mail_event *e);
	void *hook_userdata;

	sd_bus *bus; /* NULL, or closed, while SERVER_NO_BUS */
	sd_bus_slot *owner_match, *signal_match, *filter, *caps_call;
	enum server_state state;
	char *owner; /* unique name of the server, when known */
	struct caps caps;
	bool said_missing; /* "no notification server" was logged and not yet taken back */

	/* The connection's own life: lost, it is opened again after a backoff. */
	char *address;              /* of the last connection that was opened, for the logs */
	struct backoff backoff;     /* between attempts */
	sd_event_source *bus_timer; /* NO_BUS: the next attempt; CONNECTING: its deadline */
	usec_t up_since;            /* CLOCK_BOOTTIME, when a connection was last established */
	bool said_no_bus;           /* a lost or absent bus was logged and not yet taken back */

	struct queued *queue; /* pushed, not yet accepted */
	size_t n_queue, allocated_queue;
	sd_event_source *defer_source;

	struct popup *popups, *popups_tail;
	size_t n_popups;
	struct burst *bursts;
};

/* ---- Pure parts ------------------------------------------------------------------------- */

char *sink_desktop_escape_markup(const char *s)
{
	size_t len = 0;
	char *out, *p;

	for (const char *i = s; *i; i++)
		len += *i == '&' ? 5 : *i == '<' || *i == '>' ? 4 : *i == '"' || *i == '\'' ? 6 : 1;
	out = p = malloc(len + 1);
	if (!out)
		return NULL;
	for (const char *i = s; *i; i++) {
		const char *rep = *i == '&'    ? "&amp;"
				  : *i == '<'  ? "&lt;"
				  : *i == '>'  ? "&gt;"
				  : *i == '"'  ? "&quot;"
				  : *i == '\'' ? "&apos;"
					       : NULL;
		if (rep)
			p = stpcpy(p, rep);
		else
			*p++ = *i;
	}
	*p = '\0';
	return out;
}

char *sink_desktop_summary_text(const struct mail_event *e, uint64_t count, bool summary)
{
	char *s;

	if (!summary) {
		const char *from = e->from.name && *e->from.name	 ? e->from.name
				   : e->from.address && *e->from.address ? e->from.address
									 : "Unknown sender";
		return strdup(from);
	}
	if (asprintf(&s, "%" PRIu64 " new message%s in %s/%s", count, count == 1 ? "" : "s",
		     e->account, e->mailbox) < 0)
		return NULL;
	return s;
}

int32_t sink_desktop_expire_ms(usec_t timeout)
{
	if (timeout == USEC_INFINITY)
		return -1;
	if (timeout == 0)
		return 0;
	return (int32_t)MIN(timeout / USEC_PER_MSEC + (timeout % USEC_PER_MSEC != 0),
			    (usec_t)INT32_MAX);
}

/* ---- Popups ----------------------------------------------------------------------------- */

static struct popup *popup_free(struct popup *p)
{
	struct sink_desktop *s;

	if (!p)
		return NULL;
	s = p->sink;
	*(p->prev ? &p->prev->next : &s->popups) = p->next;
	*(p->next ? &p->next->prev : &s->popups_tail) = p->prev;
	s->n_popups--;
	if (p->burst)
		p->burst->summary = NULL;
	p->call = sd_bus_slot_unref(p->call); /* cancels a Notify in flight */
	mail_event_unref(p->e);
	free(p->token);
	return mfree(p);
}

static void popups_clear(struct sink_desktop *s)
{
	while (s->popups)
		popup_free(s->popups);
}

static struct popup *popup_new(struct sink_desktop *s, struct mail_event *e)
{
	struct popup *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	/* The bound: the oldest goes (a popup the user never touched, most likely expired). */
	if (s->n_popups >= SINK_DESKTOP_POPUPS_MAX)
		popup_free(s->popups);
	p->sink = s;
	p->e = mail_event_ref(e);
	p->prev = s->popups_tail;
	*(s->popups_tail ? &s->popups_tail->next : &s->popups) = p;
	s->popups_tail = p;
	s->n_popups++;
	return p;
}

static struct popup *popup_find(struct sink_desktop *s, uint32_t id)
{
	if (id == 0)
		return NULL;
	for (struct popup *p = s->popups; p; p = p->next)
		if (p->id == id)
			return p;
	return NULL;
}

/* ---- Bus calls -------------------------------------------------------------------------- */

static int close_notification(struct sink_desktop *s, uint32_t id)
{
	/* No callback: sent without expecting a reply; an id the server forgot is its business. */
	int r = sd_bus_call_method_async(s->bus, NULL, NOTIFY_NAME, NOTIFY_PATH, NOTIFY_IFACE,
					 "CloseNotification", NULL, NULL, "u", id);

	if (r < 0)
		log_debug_errno(r, "desktop: CloseNotification(%" PRIu32 ") not sent: %m", id);
	return r;
}

static int append_actions(struct sink_desktop *s, sd_bus_message *m, bool summary)
{
	bool open = s->cfg.action_open && s->cfg.on_click;
	int r;

	r = sd_bus_message_open_container(m, 'a', "s");
	if (r >= 0 && s->caps.actions && open)
		r = sd_bus_message_append(m, "ssss", "default", "Open", "open", "Open");
	if (r >= 0 && s->caps.actions && s->cfg.action_mark_read && !summary)
		r = sd_bus_message_append(m, "ss", "mark-read", "Mark as read");
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

static int append_hints(struct sink_desktop *s, sd_bus_message *m)
{
	int r;

	r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0)
		r = sd_bus_message_append(m, "{sv}", "category", "s", CATEGORY);
	if (r >= 0)
		r = sd_bus_message_append(m, "{sv}", "urgency", "y", (uint8_t)s->cfg.urgency);
	if (r >= 0 && s->cfg.desktop_entry)
		r = sd_bus_message_append(m, "{sv}", "desktop-entry", "s", s->cfg.desktop_entry);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

/* The body: a message's subject (escaped for a server that reads markup); none for a
 * summary. A new string. */
static char *body_text(struct sink_desktop *s, const struct popup *p)
{
	const char *subject = p->e->subject && *p->e->subject ? p->e->subject : "(no subject)";

	if (p->burst || mail_event_is_summary(p->e))
		return strdup("");
	return s->caps.body_markup ? sink_desktop_escape_markup(subject) : strdup(subject);
}

static int notify_message(struct sink_desktop *s, const struct popup *p, sd_bus_message **ret)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	_cleanup_free_ char *summary = NULL, *body = NULL;
	bool is_summary = p->burst || mail_event_is_summary(p->e);
	int r;

	summary = sink_desktop_summary_text(p->e, p->burst ? p->burst->count : p->e->count,
					    is_summary);
	body = body_text(s, p);
	if (!summary || !body)
		return -ENOMEM;
	r = sd_bus_message_new_method_call(s->bus, &m, NOTIFY_NAME, NOTIFY_PATH, NOTIFY_IFACE,
					   "Notify");
	if (r >= 0)
		r = sd_bus_message_append(m, "susss", APP_NAME, p->id, ICON, summary, body);
	if (r >= 0)
		r = append_actions(s, m, is_summary);
	if (r >= 0)
		r = append_hints(s, m);
	if (r >= 0)
		r = sd_bus_message_append(m, "i", sink_desktop_expire_ms(s->cfg.expire_timeout));
	if (r < 0)
		return r;
	*ret = TAKE_PTR(m);
	return 0;
}

static void summary_show(struct sink_desktop *s, struct burst *b);

static int on_notify_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct popup *p = userdata;
	struct sink_desktop *s = p->sink;
	const sd_bus_error *e = sd_bus_message_get_error(m);
	uint32_t id = 0;
	int r;

	p->call = sd_bus_slot_unref(p->call); /* sd-bus holds its own reference meanwhile */
	if (e) {
		log_debug("desktop: Notify for %s failed: %s: %s", p->e->id, e->name,
			  strna(e->message));
		popup_free(p);
		return 0;
	}
	r = sd_bus_message_read(m, "u", &id);
	if (r < 0 || id == 0) {
		log_debug("desktop: Notify for %s: no valid id in the reply, ignoring", p->e->id);
		popup_free(p);
		return 0;
	}
	p->id = id;
	if (p->close_on_reply) {
		close_notification(s, id);
		popup_free(p);
		return 0;
	}
	if (p->burst && p->burst->dirty)
		summary_show(s, p->burst);
	return 0;
}

/* Hands p's Notify to the bus. On failure p is freed: the event counts as given up on. */
static int popup_send(struct sink_desktop *s, struct popup *p)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	r = notify_message(s, p, &m);
	if (r >= 0)
		r = sd_bus_call_async(s->bus, &p->call, m, on_notify_reply, p,
				      SINK_DESKTOP_CALL_TIMEOUT_USEC);
	if (r < 0) {
		/* A connection that is going fails every call until its Disconnected is
		 * dispatched, which says so once (on_disconnect()). */
		log_full_errno(sd_bus_is_open(s->bus) > 0 && r != -ENOTCONN && r != -ECONNRESET
				       ? LOG_WARNING
				       : LOG_DEBUG,
			       r, "desktop: %s/%s: cannot send a notification: %m; ignoring",
			       p->e->account, p->e->mailbox);
		popup_free(p);
		return r;
	}
	(void)sd_event_now(s->event, CLOCK_MONOTONIC, &p->shown);
	return 0;
}

/* ---- Bursts ----------------------------------------------------------------------------- */

static struct burst *burst_free(struct burst *b)
{
	if (!b)
		return NULL;
	if (b->summary)
		b->summary->burst = NULL; /* the popup stays, with its last event */
	free(b->arrivals);
	free(b->account);
	free(b->mailbox);
	return mfree(b);
}

static bool burst_stale(const struct sink_desktop *s, const struct burst *b, usec_t now)
{
	return now - b->last > s->cfg.summary_window;
}

/* Drops the bursts that ended (no arrival for summary_window), and any of the mailbox of e
 * that is of another UIDVALIDITY; returns the one for e, made if needed. */
static struct burst *burst_get(struct sink_desktop *s, const struct mail_event *e, usec_t now)
{
	struct burst *found = NULL;

	for (struct burst **i = &s->bursts; *i;) {
		struct burst *b = *i;
		bool mine = streq(b->account, e->account) && streq(b->mailbox, e->mailbox);

		if (burst_stale(s, b, now) || (mine && b->uidvalidity != e->uidvalidity)) {
			*i = b->next;
			burst_free(b);
			continue;
		}
		if (mine)
			found = b;
		i = &b->next;
	}
	if (found)
		return found;
	found = calloc(1, sizeof(*found));
	if (!found)
		return NULL;
	found->account = strdup(e->account);
	found->mailbox = strdup(e->mailbox);
	if (!found->account || !found->mailbox)
		return burst_free(found);
	found->uidvalidity = e->uidvalidity;
	found->next = s->bursts;
	s->bursts = found;
	return found;
}

static struct burst *burst_find(struct sink_desktop *s, const struct mail_event *e)
{
	for (struct burst *b = s->bursts; b; b = b->next)
		if (streq(b->account, e->account) && streq(b->mailbox, e->mailbox) &&
		    b->uidvalidity == e->uidvalidity)
			return b;
	return NULL;
}

static void burst_extend(struct burst *b, uint64_t count, uint32_t first_uid, uint32_t last_uid)
{
	b->first_uid = b->count == 0 ? first_uid : MIN(b->first_uid, first_uid);
	b->last_uid = b->count == 0 ? last_uid : MAX(b->last_uid, last_uid);
	b->count += count;
	b->dirty = true;
}

/* A burst begins: everything in the window is counted by the summary from now on. */
static void burst_begin(struct burst *b)
{
	for (size_t i = 0; i < b->n_arrivals; i++)
		burst_extend(b, b->arrivals[i].count, b->arrivals[i].first_uid,
			     b->arrivals[i].last_uid);
	b->n_arrivals = 0;
}

/* Counts e in its mailbox's window. -ENOMEM leaves e out of the count (a popup of its own). */
static int burst_add(struct sink_desktop *s, struct burst *b, const struct mail_event *e,
		     usec_t now)
{
	uint64_t total = 0;
	size_t keep = 0;

	b->last = now;
	if (b->count > 0) {
		burst_extend(b, e->count, e->first_uid, e->uid);
		return 0;
	}
	if (b->n_arrivals >= b->allocated) {
		size_t want = MAX((size_t)4, b->allocated * 2);
		struct arrival *a = reallocarray(b->arrivals, want, sizeof(*a));

		if (!a)
			return -ENOMEM;
		b->arrivals = a;
		b->allocated = want;
	}
	b->arrivals[b->n_arrivals++] = (struct arrival){ now, e->count, e->first_uid, e->uid };
	/* Only the window counts; the list stays within summary_threshold + 1 entries, since a
	 * burst empties it. */
	while (keep < b->n_arrivals && now - b->arrivals[keep].at > s->cfg.summary_window)
		keep++;
	memmove(b->arrivals, b->arrivals + keep, (b->n_arrivals - keep) * sizeof(*b->arrivals));
	b->n_arrivals -= keep;
	for (size_t i = 0; i < b->n_arrivals; i++)
		total += b->arrivals[i].count;
	if (total > s->cfg.summary_threshold || mail_event_is_summary(e))
		burst_begin(b);
	return 0;
}

/* The summary's own event, for its "open" action's environment. */
static struct mail_event *burst_event(const struct burst *b)
{
	uint64_t span = (uint64_t)b->last_uid - b->first_uid + 1;
	struct mail_event *e = NULL;

	if (mail_event_new_summary(b->account, b->mailbox, b->uidvalidity, b->first_uid,
				   b->last_uid, (uint32_t)MIN(b->count, span), &e) < 0)
		return NULL;
	return e;
}

/* The single popups of the window the burst now counts: the summary stands for them. */
static void burst_close_singles(struct sink_desktop *s, const struct burst *b, usec_t since)
{
	for (struct popup *p = s->popups, *next; p; p = next) {
		next = p->next;
		if (p->burst || mail_event_is_summary(p->e) || p->shown < since ||
		    !streq(p->e->account, b->account) || !streq(p->e->mailbox, b->mailbox))
			continue;
		if (p->call) {
			p->close_on_reply = true;
			continue;
		}
		close_notification(s, p->id);
		popup_free(p);
	}
}

static void summary_show(struct sink_desktop *s, struct burst *b)
{
	struct mail_event *e;
	struct popup *p = b->summary;

	if (p && p->call)
		return; /* the reply sends the update */
	e = burst_event(b);
	if (!e) {
		log_warning("desktop: %s/%s: cannot build the summary, ignoring", b->account,
			    b->mailbox);
		return;
	}
	if (!p) {
		p = popup_new(s, e);
		if (!p) {
			mail_event_unref(e);
			return;
		}
		p->burst = b;
		b->summary = p;
	} else {
		mail_event_unref(p->e);
		p->e = mail_event_ref(e);
	}
	mail_event_unref(e);
	b->dirty = false;
	popup_send(s, p);
}

/* ---- Showing a batch -------------------------------------------------------------------- */

static void show_single(struct sink_desktop *s, struct mail_event *e)
{
	struct popup *p = popup_new(s, e);

	if (!p) {
		log_warning("desktop: %s/%s: out of memory, no popup for UID %" PRIu32, e->account,
			    e->mailbox, e->uid);
		return;
	}
	popup_send(s, p);
}

/* Counts the whole batch first, so that a burst that arrives in one FETCH becomes one
 * summary rather than a few popups and then a summary. */
static void show_batch(struct sink_desktop *s, const struct queued *batch, size_t n)
{
	usec_t now = 0, window_start;

	(void)sd_event_now(s->event, CLOCK_MONOTONIC, &now);
	window_start = now > s->cfg.summary_window ? now - s->cfg.summary_window : 0;
	for (size_t i = 0; i < n; i++) {
		struct mail_event *e = batch[i].e;
		struct burst *b = batch[i].gone ? NULL : burst_get(s, e, now);

		if (b && burst_add(s, b, e, now) < 0)
			log_warning("desktop: %s/%s: out of memory, UID %" PRIu32 " not counted",
				    e->account, e->mailbox, e->uid);
	}
	for (size_t i = 0; i < n; i++) {
		struct burst *b = batch[i].gone ? NULL : burst_find(s, batch[i].e);

		if (!batch[i].gone && (!b || b->count == 0))
			show_single(s, batch[i].e);
	}
	for (struct burst *b = s->bursts; b; b = b->next)
		if (b->dirty) {
			if (!b->summary)
				burst_close_singles(s, b, window_start);
			summary_show(s, b);
		}
}

static void accept_batch(struct sink_desktop *s, struct queued *batch, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s->accepted)
			s->accepted(s->userdata, batch[i].e);
		mail_event_unref(batch[i].e);
	}
	free(batch);
}

static void kick(struct sink_desktop *s)
{
	int r = sd_event_source_set_enabled(s->defer_source, SD_EVENT_ONESHOT);

	if (r < 0)
		log_error_errno(r, "desktop: cannot schedule the queue: %m");
}

static int on_defer(sd_event_source *source, void *userdata)
{
	struct sink_desktop *s = userdata;
	struct queued *batch;
	size_t n;

	if (s->state == SERVER_CONNECTING || s->state == SERVER_ASKING || s->n_queue == 0)
		return 0; /* the answer, or the deadline, kicks us again */
	batch = TAKE_PTR(s->queue);
	n = s->n_queue;
	s->n_queue = s->allocated_queue = 0;
	if (s->state == SERVER_READY)
		show_batch(s, batch, n);
	else
		log_debug("desktop: %s, %zu event(s) not shown",
			  s->state == SERVER_NO_BUS ? "no session bus" : "no notification server", n);
	accept_batch(s, batch, n);
	return 0;
}

/* ---- The server ------------------------------------------------------------------------- */

static void server_set_state(struct sink_desktop *s, enum server_state state)
{
	if (s->state == state)
		return;
	log_debug("desktop: server %s → %s", server_state_names[s->state],
		  server_state_names[state]);
	s->state = state;
	if (state != SERVER_ASKING)
		kick(s);
}

static void server_missing(struct sink_desktop *s, const char *why)
{
	if (!s->said_missing)
		log_warning("desktop: %s; notifications are not shown until one appears", why);
	s->said_missing = true;
	s->owner = mfree(s->owner);
	popups_clear(s);
	server_set_state(s, SERVER_MISSING);
}

static int caps_read(sd_bus_message *m, struct caps *ret)
{
	struct caps c = { 0 };
	const char *cap;
	int r;

	r = sd_bus_message_enter_container(m, 'a', "s");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_read(m, "s", &cap)) > 0) {
		if (streq(cap, "actions"))
			c.actions = true;
		else if (streq(cap, "body-markup"))
			c.body_markup = true;
	}
	if (r < 0)
		return r;
	*ret = c;
	return sd_bus_message_exit_container(m);
}

static int on_caps_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct sink_desktop *s = userdata;
	const sd_bus_error *e = sd_bus_message_get_error(m);
	int r;

	s->caps_call = sd_bus_slot_unref(s->caps_call);
	if (e && sd_bus_is_open(s->bus) <= 0)
		return 0; /* the connection is going: on_disconnect() says so */
	if (e && (sd_bus_error_has_name(e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
		  sd_bus_error_has_name(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER))) {
		server_missing(s, "no notification server on the session bus (" NOTIFY_NAME ")");
		return 0;
	}
	s->caps = (struct caps){ 0 };
	if (e)
		log_warning("desktop: GetCapabilities failed (%s: %s); assuming none", e->name,
			    strna(e->message));
	else if ((r = caps_read(m, &s->caps)) < 0)
		log_warning_errno(r, "desktop: GetCapabilities: cannot read the answer: %m; "
				  "assuming none");
	if (!s->owner && sd_bus_message_get_sender(m))
		s->owner = strdup(sd_bus_message_get_sender(m));
	if (s->said_missing)
		log_notice("desktop: a notification server appeared; notifications resume");
	s->said_missing = false;
	log_debug("desktop: server %s: actions %s, body-markup %s", strna(s->owner),
		  s->caps.actions ? "yes" : "no", s->caps.body_markup ? "yes" : "no");
	server_set_state(s, SERVER_READY);
	return 0;
}

/* Asks the (possibly new) server what it can do; what we knew about the old one goes. */
static void server_ask(struct sink_desktop *s)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
	int r;

	s->caps_call = sd_bus_slot_unref(s->caps_call);
	popups_clear(s);
	server_set_state(s, SERVER_ASKING);
	r = sd_bus_message_new_method_call(s->bus, &m, NOTIFY_NAME, NOTIFY_PATH, NOTIFY_IFACE,
					   "GetCapabilities");
	if (r >= 0)
		r = sd_bus_call_async(s->bus, &s->caps_call, m, on_caps_reply, s,
				      SINK_DESKTOP_CAPS_TIMEOUT_USEC);
	if (r < 0) {
		log_warning_errno(r, "desktop: cannot ask the notification server: %m");
		server_missing(s, "the notification server cannot be reached");
	}
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct sink_desktop *s = userdata;
	const char *name, *old_owner, *new_owner;

	if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 ||
	    !streq(name, NOTIFY_NAME) || s->state < SERVER_ASKING)
		return 0;
	if (!*new_owner) {
		server_missing(s, "the notification server left the session bus");
		return 0;
	}
	log_debug("desktop: %s is now owned by %s", NOTIFY_NAME, new_owner);
	free(s->owner);
	s->owner = strdup(new_owner);
	server_ask(s);
	return 0;
}

/* ---- Actions ---------------------------------------------------------------------------- */

static bool env_dropped(const char *entry)
{
	static const char *const names[] = { "XDG_ACTIVATION_TOKEN=", "DESKTOP_STARTUP_ID=" };

	if (strncmp(entry, "IMAPIDLED_", strlen("IMAPIDLED_")) == 0)
		return true;
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (strncmp(entry, names[i], strlen(names[i])) == 0)
			return true;
	return false;
}

/* The daemon's environment without what belongs to another click, then the event's. */
static int click_env(const struct popup *p, char ***ret)
{
	_cleanup_strv_free_ char **env = NULL;
	char *token = NULL;
	int r;

	r = mail_event_to_env(p->e, &env);
	if (r < 0)
		return r;
	if (p->token && asprintf(&token, "XDG_ACTIVATION_TOKEN=%s", p->token) < 0)
		return -ENOMEM;
	if (token && (r = strv_push(&env, token)) < 0)
		return r;
	for (char **i = environ; i && *i; i++)
		if (!env_dropped(*i) && (r = strv_extend(&env, *i)) < 0)
			return r;
	*ret = TAKE_PTR(env);
	return 0;
}

/* A mail client gets /dev/null, the daemon's stderr, and a session of its own: it is never
 * killed, unlike an exec sink's command. */
static int spawn_detached(char *const *argv, char *const *envp, pid_t *ret_pid)
{
	return child_spawn(argv, envp, (const int[]){ -1, -1, STDERR_FILENO }, CHILD_NEW_SESSION,
			   ret_pid);
}

/* The loop owns the source (floating); it lets go once the child is reaped. */
static int on_click_exit(sd_event_source *source, const siginfo_t *si, void *userdata)
{
	if (si->si_code == CLD_EXITED && si->si_status == 0)
		log_debug("desktop: on_click (pid %d) exited with status 0", (int)si->si_pid);
	else if (si->si_code == CLD_EXITED)
		log_warning("desktop: on_click (pid %d) exited with status %d", (int)si->si_pid,
			    si->si_status);
	else
		log_warning("desktop: on_click (pid %d) killed by signal SIG%s", (int)si->si_pid,
			    strna(sigabbrev_np(si->si_status)));
	sd_event_source_ref(source);
	(void)sd_event_source_set_floating(source, false);
	sd_event_source_unref(source);
	return 0;
}

static void action_open(struct sink_desktop *s, struct popup *p)
{
	_cleanup_strv_free_ char **env = NULL;
	sd_event_source *child = NULL;
	pid_t pid;
	int r;

	if (!s->cfg.on_click) {
		log_debug("desktop: open: no on_click configured, ignoring");
		return;
	}
	r = click_env(p, &env);
	if (r >= 0)
		r = spawn_detached(s->cfg.on_click, env, &pid);
	if (r < 0) {
		log_warning_errno(r, "desktop: cannot run on_click (%s): %m", s->cfg.on_click[0]);
		return;
	}
	log_debug("desktop: on_click (%s) started as pid %d for %s", s->cfg.on_click[0],
		  (int)pid, p->e->id);
	r = sd_event_add_child(s->event, &child, pid, WEXITED, on_click_exit, NULL);
	if (r >= 0)
		r = sd_event_source_set_floating(child, true);
	if (r < 0)
		log_warning_errno(r, "desktop: on_click (pid %d) will not be reaped: %m", (int)pid);
	sd_event_source_unref(child);
}

static void action_mark_read(struct sink_desktop *s, struct popup *p)
{
	int r;

	if (mail_event_is_summary(p->e))
		return;
	if (!s->mark_seen) {
		log_debug("desktop: mark-read: no IMAP connection for it here, ignoring");
		return;
	}
	r = s->mark_seen(s->hook_userdata, p->e);
	if (r < 0)
		log_warning_errno(r, "desktop: %s/%s: cannot mark UID %" PRIu32 " as read: %m",
				  p->e->account, p->e->mailbox, p->e->uid);
}

static void on_action(struct sink_desktop *s, struct popup *p, const char *key)
{
	log_debug("desktop: action %s on %s", key, p->e->id);
	if (streq(key, "default") || streq(key, "open")) {
		if (s->cfg.action_open)
			action_open(s, p);
	} else if (streq(key, "mark-read")) {
		if (s->cfg.action_mark_read)
			action_mark_read(s, p);
	} else
		log_debug("desktop: unknown action \"%s\", ignoring", key);
	p->token = mfree(p->token); /* a token is good for one activation */
}

static int on_server_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct sink_desktop *s = userdata;
	const char *member = sd_bus_message_get_member(m), *text;
	struct popup *p;
	uint32_t id;

	/* Anyone on the bus may send this interface's signals; only the server is believed. */
	if (!s->owner || !streq_ptr(sd_bus_message_get_sender(m), s->owner) || !member)
		return 0;
	if (streq(member, "NotificationClosed")) {
		if (sd_bus_message_read(m, "u", &id) >= 0 && (p = popup_find(s, id)) && !p->call)
			popup_free(p);
		return 0;
	}
	if (sd_bus_message_read(m, "us", &id, &text) < 0 || !(p = popup_find(s, id)))
		return 0;
	if (streq(member, "ActivationToken")) {
		free(p->token);
		p->token = strdup(text);
	} else if (streq(member, "ActionInvoked"))
		on_action(s, p, text);
	return 0;
}

/* ---- The connection --------------------------------------------------------------------- */

/* Lets go of the connection and of all that is tied to it: calls in flight, matches, and the
 * popups, whose ids would mean nothing to the server behind another connection. Never from
 * one of the connection's own callbacks. */
static void bus_release(struct sink_desktop *s)
{
	popups_clear(s);
	s->caps_call = sd_bus_slot_unref(s->caps_call);
	s->owner_match = sd_bus_slot_unref(s->owner_match);
	s->signal_match = sd_bus_slot_unref(s->signal_match);
	s->filter = sd_bus_slot_unref(s->filter);
	if (s->bus) {
		(void)sd_bus_detach_event(s->bus);
		s->bus = sd_bus_close_unref(s->bus);
	}
}

static void bus_timer_set(struct sink_desktop *s, usec_t delay)
{
	int r = sd_event_source_set_time_relative(s->bus_timer, delay);

	if (r >= 0)
		r = sd_event_source_set_enabled(s->bus_timer, SD_EVENT_ONESHOT);
	if (r < 0)
		log_error_errno(r, "desktop: cannot schedule the next session bus attempt: %m");
}

/* No usable connection (the connection may still exist, closed, when this runs from its
 * Disconnected): what belonged to it goes, events are accepted unseen, and the next attempt
 * follows the backoff. The first of an outage is said at warning, the rest at debug. */
static void bus_down(struct sink_desktop *s, enum backoff_class c, int error, const char *why)
{
	usec_t delay = backoff_next(&s->backoff, c);
	int level = s->said_no_bus ? LOG_DEBUG : LOG_WARNING;
	const char *until = s->up_since ? "it is back" : "it appears";
	char buf[32];

	format_duration(buf, sizeof(buf), delay);
	/* why reads on with " at ADDRESS". */
	if (error)
		log_full_errno(level, error, "desktop: %s%s%s (%m); no notifications until %s, "
			       "next attempt in %s", why, s->address ? " at " : "",
			       strempty(s->address), until, buf);
	else
		log_full(level, "desktop: %s%s%s; no notifications until %s, next attempt in %s",
			 why, s->address ? " at " : "", strempty(s->address), until, buf);
	s->said_no_bus = true;
	/* The server behind the next connection is reported afresh. */
	s->said_missing = false;
	s->owner = mfree(s->owner);
	s->caps = (struct caps){ 0 };
	s->caps_call = sd_bus_slot_unref(s->caps_call);
	popups_clear(s);
	server_set_state(s, SERVER_NO_BUS);
	bus_timer_set(s, delay);
}

/* The AddMatch reply for NameOwnerChanged, the first reply on a new connection: it is
 * established (authenticated, Hello answered), and the name is watched before
 * GetCapabilities is asked, so no change of owner falls in between. */
static int on_watching(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct sink_desktop *s = userdata;
	const sd_bus_error *e = sd_bus_message_get_error(m);

	if (s->state != SERVER_CONNECTING || (e && sd_bus_is_open(s->bus) <= 0))
		return 0; /* the connection is going: its Disconnected follows */
	if (e)
		log_warning("desktop: cannot watch %s (%s: %s); a restarted server is not noticed, "
			    "ignoring", NOTIFY_NAME, e->name, strna(e->message));
	(void)sd_event_source_set_enabled(s->bus_timer, SD_EVENT_OFF);
	if (s->said_no_bus)
		log_notice("desktop: %s the session bus at %s",
			   s->up_since ? "reconnected to" : "connected to", strna(s->address));
	s->said_no_bus = false;
	s->up_since = now_usec(CLOCK_BOOTTIME);
	server_ask(s);
	return 0;
}

static int on_disconnect(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct sink_desktop *s = userdata;
	bool healthy;

	if (!sd_bus_message_is_signal(m, LOCAL_IFACE, "Disconnected") ||
	    s->state == SERVER_NO_BUS)
		return 0;
	if (s->state == SERVER_CONNECTING) {
		/* sd-bus does not say why: refused, authentication, or a different guid. */
		bus_down(s, BACKOFF_RETRY_LATER, 0, "cannot connect to the session bus");
		return 0;
	}
	/* A connection that had stood for a while starts the schedule afresh: the bus was
	 * restarted, and is probably back in a moment. A short-lived one keeps climbing. */
	healthy = now_usec(CLOCK_BOOTTIME) - s->up_since >= BUS_HEALTHY_AFTER;
	if (healthy)
		backoff_reset(&s->backoff);
	bus_down(s, BACKOFF_RETRY_NOW, 0, "lost the session bus");
	return 0;
}

static int bus_watch(struct sink_desktop *s)
{
	int r;

	r = sd_bus_add_filter(s->bus, &s->filter, on_disconnect, s);
	if (r >= 0)
		r = sd_bus_add_match_async(s->bus, &s->owner_match,
					   "type='signal',sender='org.freedesktop.DBus',"
					   "path='/org/freedesktop/DBus',"
					   "interface='org.freedesktop.DBus',"
					   "member='NameOwnerChanged',arg0='" NOTIFY_NAME "'",
					   on_owner_changed, on_watching, s);
	/* No sender in the rule: on_server_signal() checks it against the owner's unique
	 * name, which is what a message carries. */
	if (r >= 0)
		r = sd_bus_add_match_async(s->bus, &s->signal_match,
					   "type='signal',path='" NOTIFY_PATH "',"
					   "interface='" NOTIFY_IFACE "'",
					   on_server_signal, NULL, s);
	return r;
}

static int bus_setup(struct sink_desktop *s)
{
	const char *address = NULL;
	char *copy;
	int r;

	(void)sd_bus_set_description(s->bus, "desktop");
	if (sd_bus_get_address(s->bus, &address) >= 0 && address && (copy = strdup(address))) {
		free(s->address);
		s->address = copy;
	}
	/* sink_desktop_free() closes it; a flush when the loop exits could wait on a bus that
	 * does not answer. */
	r = sd_bus_set_close_on_exit(s->bus, false);
	if (r >= 0)
		r = sd_bus_attach_event(s->bus, s->event, SD_EVENT_PRIORITY_NORMAL);
	if (r >= 0)
		r = bus_watch(s);
	return r;
}

/* One attempt. sd_bus_open_user() only connects the socket (a local connect() that does
 * not block); authentication and Hello run from the loop and end in on_watching() or
 * Disconnected, or in the deadline. */
static void bus_connect(struct sink_desktop *s)
{
	int r;

	bus_release(s);
	r = sd_bus_open_user(&s->bus);
	if (r == -ENOMEDIUM) {
		/* Neither $DBUS_SESSION_BUS_ADDRESS nor $XDG_RUNTIME_DIR: nothing to wait for. */
		log_warning_errno(r, "desktop: no session bus (%m); notifications are not shown");
		return;
	}
	if (r >= 0)
		r = bus_setup(s);
	if (r < 0) {
		bus_release(s);
		bus_down(s, BACKOFF_RETRY_LATER, r, "no session bus");
		return;
	}
	server_set_state(s, SERVER_CONNECTING);
	bus_timer_set(s, SINK_DESKTOP_CONNECT_TIMEOUT_USEC);
}

static int on_bus_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
	struct sink_desktop *s = userdata;

	if (s->state == SERVER_NO_BUS) {
		bus_connect(s);
	} else if (s->state == SERVER_CONNECTING) {
		bus_release(s);
		bus_down(s, BACKOFF_RETRY_LATER, 0, "no answer in time from the session bus");
	}
	return 0;
}

/* ---- Set-up ----------------------------------------------------------------------------- */

static int bus_init(struct sink_desktop *s)
{
	uint64_t seed;
	int r;

	/* Jitter differs between runs, so that the daemons of a session restarted with the bus
	 * do not come back in lockstep. */
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = now_usec(CLOCK_MONOTONIC) ^ (uintptr_t)s;
	backoff_init(&s->backoff, BACKOFF_BASE_DEFAULT, SINK_DESKTOP_RETRY_MAX_USEC, seed);
	r = sd_event_add_time_relative(s->event, &s->bus_timer, CLOCK_BOOTTIME, 0, USEC_PER_MSEC,
				       on_bus_timer, s);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->bus_timer, SD_EVENT_OFF);
	if (r < 0)
		return r;
	bus_connect(s);
	return 0;
}

static int copy_config(struct sink_desktop *s, const struct config_desktop *cfg)
{
	s->cfg = *cfg;
	s->cfg.on_click = NULL;
	s->cfg.desktop_entry = NULL;
	if (strv_length(cfg->on_click) > 0 && !(s->cfg.on_click = strv_copy(cfg->on_click)))
		return -ENOMEM;
	if (cfg->desktop_entry && *cfg->desktop_entry &&
	    !(s->cfg.desktop_entry = strdup(cfg->desktop_entry)))
		return -ENOMEM;
	return 0;
}

int sink_desktop_new(const struct sink_context *ctx, struct sink_desktop **ret)
{
	_cleanup_sink_desktop_ struct sink_desktop *s = NULL;
	int r;

	if (!ctx || !ctx->event || !ctx->config || !ret)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->event = sd_event_ref(ctx->event);
	s->accepted = ctx->accepted;
	s->userdata = ctx->userdata;
	s->mark_seen = ctx->mark_seen;
	s->hook_userdata = ctx->hook_userdata;
	s->state = SERVER_NO_BUS;
	r = copy_config(s, &ctx->config->desktop);
	if (r < 0)
		return r;
	r = sd_event_add_defer(s->event, &s->defer_source, on_defer, s);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->defer_source, SD_EVENT_OFF);
	if (r >= 0)
		r = bus_init(s);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

struct sink_desktop *sink_desktop_free(struct sink_desktop *s)
{
	if (!s)
		return NULL;
	popups_clear(s);
	while (s->bursts) {
		struct burst *b = s->bursts;
		s->bursts = b->next;
		burst_free(b);
	}
	s->bus_timer = sd_event_source_disable_unref(s->bus_timer);
	bus_release(s);
	for (size_t i = 0; i < s->n_queue; i++)
		mail_event_unref(s->queue[i].e);
	free(s->queue);
	s->defer_source = sd_event_source_disable_unref(s->defer_source);
	free(s->owner);
	free(s->address);
	strv_free(s->cfg.on_click);
	free(s->cfg.desktop_entry);
	sd_event_unref(s->event);
	return mfree(s);
}

int sink_desktop_push(struct sink_desktop *s, struct mail_event *e)
{
	if (!s || !e)
		return -EINVAL;
	if (s->n_queue >= s->allocated_queue) {
		size_t want = MAX((size_t)8, s->allocated_queue * 2);
		struct queued *q = reallocarray(s->queue, want, sizeof(*q));

		if (!q)
			return -ENOMEM;
		s->queue = q;
		s->allocated_queue = want;
	}
	s->queue[s->n_queue++] = (struct queued){ .e = mail_event_ref(e) };
	kick(s);
	return 0;
}

static bool event_is(const struct mail_event *e, const char *account, const char *mailbox,
		     uint32_t uidvalidity, uint32_t uid)
{
	return !mail_event_is_summary(e) && e->uid == uid && e->uidvalidity == uidvalidity &&
	       streq(e->account, account) && streq(e->mailbox, mailbox);
}

void sink_desktop_message_changed(struct sink_desktop *s, const char *account,
				  const char *mailbox, uint32_t uidvalidity, uint32_t uid,
				  enum mail_change change)
{
	/* Not shown yet: it never will be (it is still accepted in its turn). */
	for (size_t i = 0; i < s->n_queue; i++)
		if (event_is(s->queue[i].e, account, mailbox, uidvalidity, uid))
			s->queue[i].gone = true;
	for (struct popup *p = s->popups, *next; p; p = next) {
		next = p->next;
		if (p->burst || !event_is(p->e, account, mailbox, uidvalidity, uid))
			continue;
		log_debug("desktop: %s/%s: UID %" PRIu32 " was %s elsewhere, closing its popup",
			  account, mailbox, uid, change & MAIL_CHANGE_EXPUNGED ? "expunged" : "read");
		if (p->call) {
			p->close_on_reply = true;
			continue;
		}
		close_notification(s, p->id);
		popup_free(p);
	}
}

static int ops_new(const struct sink_context *ctx, const char *name, void **ret)
{
	return sink_desktop_new(ctx, (struct sink_desktop **)ret);
}

static int ops_push(void *sink, struct mail_event *e)
{
	return sink_desktop_push(sink, e);
}

static void *ops_free(void *sink)
{
	return sink_desktop_free(sink);
}

static void ops_message_changed(void *sink, const char *account, const char *mailbox,
				uint32_t uidvalidity, uint32_t uid, enum mail_change change)
{
	sink_desktop_message_changed(sink, account, mailbox, uidvalidity, uid, change);
}

const struct sink_ops sink_desktop_ops = {
	.type = "desktop",
	.new = ops_new,
	.push = ops_push,
	.free = ops_free,
	.message_changed = ops_message_changed,
};
