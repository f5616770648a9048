#include "watch.h"

#include <stdio.h>
#include <sys/random.h>
#include <time.h>

#include "backoff.h"
#include "dispatch.h"
#include "event.h"
#include "gate.h"
#include "link.h"
#include "log.h"
#include "message.h"
#include "proc/spawn.h"
#include "secret.h"
#include "state.h"

/* A session that stayed idle this long was healthy: its failure starts a fresh schedule. */
#define HEALTHY_AFTER (60 * USEC_PER_SEC)

/* Most outages are short (a server restart, a flaky link): for the first minute of one, a
 * network failure is retried within a few seconds, so a mailbox is back soon after the
 * server is; the backoff keeps counting, and its long waits take over after that. */
#define EARLY_OUTAGE (60 * USEC_PER_SEC)
#define EARLY_RETRY_MAX (5 * USEC_PER_SEC)

/* How long a changed state may wait before it is written (see state_advance). */
#define STATE_FLUSH_DELAY (1 * USEC_PER_SEC)
/* oauth_token_command gets this long; it may have to refresh the token over the network. */
#define TOKEN_TIMEOUT (30 * USEC_PER_SEC)
/* A probe after a resume or a route change: a live server answers DONE or NOOP at once. */
#define PROBE_TIMEOUT (5 * USEC_PER_SEC)

struct watch {
	const struct watch_context *ctx;
	const struct config_account *cfg;
	const char *password;
	char *mailbox;
	char *name; /* "account/mailbox", for logs */

	struct link *link;
	struct gate_slot slot; /* held from connect until idle or failure */
	/* OAuth: each attempt first runs oauth_token_command (token_job), then connects with
	 * its token, which is kept (registered for redaction) until that link closes. */
	struct spawn_job *token_job;
	char *oauth_token;
	char *token_label; /* "account/mailbox: oauth_token_command", for its stderr */
	sd_event_source *retry;
	sd_event_source *write; /* deferred state write, once per loop iteration */
	sd_event_source *flush; /* the fsync that follows it */
	struct backoff backoff;

	struct mailbox_state state; /* what the sinks have accepted; persisted */
	bool state_unsynced;        /* written, not yet fsynced */
	uint32_t reported_uid;      /* highest UID handed to the dispatcher (same UIDVALIDITY) */
	unsigned n_unaccepted;      /* events submitted that not every sink has accepted yet */
	uint32_t skipped_uid;       /* highest UID skipped while some were; 0: none */
	bool state_loaded;
	bool state_dirty;

	bool idle;
	usec_t idle_since;
	usec_t outage_since; /* first failure since the last IDLE; 0 while healthy */
	char *last_error; /* logged once; repeats go to debug */
	enum backoff_class last_class; /* of the failure behind last_error */
	usec_t last_mail;              /* CLOCK_REALTIME of the last event, 0: none yet */

	bool probing;  /* watch_probe(): a link found dead reconnects without backoff */
	bool stopping; /* watch_stop(): logging out, never reconnecting */
};

static void watch_connect(struct watch *w);

const char *watch_name(const struct watch *w)
{
	return w->name;
}

bool watch_is_idle(const struct watch *w)
{
	return w->idle;
}

const char *watch_problem(const struct watch *w, enum backoff_class *ret_class)
{
	if (w->idle || w->stopping || !w->last_error)
		return NULL;
	if (ret_class)
		*ret_class = w->last_class;
	return w->last_error;
}

usec_t watch_last_mail(const struct watch *w)
{
	return w->last_mail;
}

static void watch_changed(struct watch *w)
{
	if (w->ctx->changed)
		w->ctx->changed(w->ctx->userdata);
}

/* ---- state ------------------------------------------------------------------------------ */

/* Write the state now if it changed, and make what was written durable: on the timer, and
 * when the watch stops. */
static void state_flush(struct watch *w)
{
	int r;

	w->write = sd_event_source_disable_unref(w->write);
	w->flush = sd_event_source_disable_unref(w->flush);
	if (!w->state_dirty) {
		if (w->state_unsynced &&
		    (r = state_sync(w->ctx->state_dir, w->cfg->name, w->mailbox)) < 0)
			log_debug_errno(r, "%s: cannot sync the state file: %m", w->name);
		w->state_unsynced = false;
		return;
	}
	r = state_save(w->ctx->state_dir, w->cfg->name, w->mailbox, &w->state);
	if (r < 0) {
		/* Stays dirty: the next change tries again. Nothing is lost meanwhile, only a
		 * restart would report these messages a second time. */
		log_error_errno(r, "%s: cannot save state in %s: %m", w->name, w->ctx->state_dir);
		return;
	}
	w->state_dirty = w->state_unsynced = false;
}

static int on_flush(sd_event_source *s, uint64_t usec, void *userdata)
{
	state_flush(userdata);
	return 0;
}

/* Once per loop iteration: the new state replaces the old file without an fsync (it then
 * survives SIGKILL, so a killed daemon repeats nothing), and the fsync follows at most
 * STATE_FLUSH_DELAY later. A burst of a thousand accepted messages costs one write and one
 * fsync, and no fsync stalls the loop between a new mail and the sinks acting on the next.
 * A power cut inside the delay reports those messages again after the reboot (their ids are
 * stable); it never loses one. */
static int on_write(sd_event_source *s, void *userdata)
{
	struct watch *w = userdata;

	w->write = sd_event_source_disable_unref(w->write);
	if (w->state_dirty &&
	    state_save_nosync(w->ctx->state_dir, w->cfg->name, w->mailbox, &w->state) >= 0) {
		w->state_dirty = false;
		w->state_unsynced = true;
	}
	if (!w->flush && sd_event_add_time_relative(w->ctx->event, &w->flush, CLOCK_MONOTONIC,
						    STATE_FLUSH_DELAY, 100 * USEC_PER_MSEC,
						    on_flush, w) < 0)
		state_flush(w);
	return 0;
}

static void state_advance(struct watch *w, uint32_t uidvalidity, uint32_t uid)
{
	if (w->state.known && w->state.uidvalidity == uidvalidity && uid <= w->state.uid)
		return;
	w->state.uidvalidity = uidvalidity;
	w->state.uid = uid;
	w->state.known = true;
	w->state_dirty = true;
	if (!w->write && sd_event_add_defer(w->ctx->event, &w->write, on_write, w) < 0)
		state_flush(w);
}

static void state_load_once(struct watch *w)
{
	_cleanup_free_ char *path = NULL;
	int r;

	if (w->state_loaded)
		return;
	w->state_loaded = true;
	r = state_load(w->ctx->state_dir, w->cfg->name, w->mailbox, &w->state);
	if (r >= 0)
		return;
	state_path(w->ctx->state_dir, w->cfg->name, w->mailbox, &path);
	log_warning_errno(r, "%s: cannot read state file %s: %m; starting over without reporting "
			     "old mail", w->name, strna(path));
	w->state = (struct mailbox_state){};
}

/* ---- session callbacks ----------------------------------------------------------------- */

static void on_selected(void *userdata, uint32_t uidvalidity, uint32_t last_uid, bool baseline)
{
	struct watch *w = userdata;

	if (baseline)
		log_info("%s: watching from UID %u on (UIDVALIDITY %u)", w->name, last_uid + 1,
			 uidvalidity);
	else if (w->state.uid < last_uid)
		log_debug("%s: resuming after UID %u", w->name, last_uid);
	if (w->state.uidvalidity != uidvalidity)
		w->reported_uid = w->skipped_uid = 0;
	w->reported_uid = MAX(w->reported_uid, last_uid);
	w->state.uidvalidity = uidvalidity; /* the epoch of every UID that follows */
	if (baseline)
		state_advance(w, uidvalidity, last_uid);
}

static void on_accepted(void *userdata, struct mail_event *e)
{
	struct watch *w = userdata;

	state_advance(w, e->uidvalidity, e->uid);
	if (w->n_unaccepted > 0 && --w->n_unaccepted == 0 && w->skipped_uid) {
		state_advance(w, w->state.uidvalidity, w->skipped_uid);
		w->skipped_uid = 0;
	}
}

static void deliver(struct watch *w, struct mail_event *e)
{
	int r;

	if (mail_event_is_summary(e))
		log_info("%s: %u new messages (UID %u to %u)", w->name, e->count, e->first_uid,
			 e->uid);
	else
		log_info("%s: new mail, UID %u, from %s: %s", w->name, e->uid,
			 e->from.name ? e->from.name : strna(e->from.address), strempty(e->subject));
	w->reported_uid = MAX(w->reported_uid, e->uid);
	w->last_mail = now_usec(CLOCK_REALTIME);
	watch_changed(w);
	r = dispatch_submit(w->ctx->dispatch, e, on_accepted, w);
	if (r < 0)
		log_error_errno(r, "%s: cannot dispatch UID %u: %m", w->name, e->uid);
	else
		w->n_unaccepted++;
	mail_event_unref(e);
}

static void on_message(void *userdata, const struct imap_fetch *f)
{
	struct watch *w = userdata;
	struct mail_event *e = NULL;
	int r;

	r = message_event_from_fetch(w->cfg->name, w->mailbox, w->state.uidvalidity, f, &e);
	if (r < 0) {
		log_error_errno(r, "%s: cannot build the event for UID %u: %m", w->name, f->uid);
		return;
	}
	deliver(w, e);
}

static void on_summary(void *userdata, uint32_t first, uint32_t last, uint32_t count)
{
	struct watch *w = userdata;
	struct mail_event *e = NULL;
	int r;

	log_info("%s: %u messages arrived while away (UID %u to %u): one summary", w->name, count,
		 first, last);
	r = mail_event_new_summary(w->cfg->name, w->mailbox, w->state.uidvalidity, first, last,
				   count, &e);
	if (r < 0) {
		log_error_errno(r, "%s: cannot build the summary event: %m", w->name);
		return;
	}
	deliver(w, e);
}

static void on_skipped(void *userdata, uint32_t uid)
{
	struct watch *w = userdata;

	log_debug("%s: UID %u is already \\Seen, skipping", w->name, uid);
	w->reported_uid = MAX(w->reported_uid, uid);
	/* Not past an event a sink still holds (a webhook whose spool is full may hold one for
	 * hours): the state would skip it too, and a crash would lose it. */
	if (w->n_unaccepted > 0) {
		w->skipped_uid = MAX(w->skipped_uid, uid);
		return;
	}
	state_advance(w, w->state.uidvalidity, uid);
}

/* Another device read or deleted a message: the desktop closes its popup. Only \Seen
 * matters; the session may repeat a change, and the sinks ignore messages they never showed. */
static void on_flags_changed(void *userdata, uint32_t uid, unsigned flags)
{
	struct watch *w = userdata;

	if (!(flags & IMAP_FLAG_SEEN))
		return;
	log_debug("%s: UID %u is now \\Seen", w->name, uid);
	if (w->ctx->dispatch)
		dispatch_message_changed(w->ctx->dispatch, w->cfg->name, w->mailbox,
					 w->state.uidvalidity, uid, MAIL_CHANGE_SEEN);
}

static void on_expunged(void *userdata, uint32_t uid)
{
	struct watch *w = userdata;

	log_debug("%s: UID %u expunged", w->name, uid);
	if (w->ctx->dispatch)
		dispatch_message_changed(w->ctx->dispatch, w->cfg->name, w->mailbox,
					 w->state.uidvalidity, uid, MAIL_CHANGE_EXPUNGED);
}

static void on_idle(void *userdata)
{
	struct watch *w = userdata;

	w->probing = false; /* alive, or back */
	if (w->idle)
		return;
	gate_leave(w->ctx->gate, &w->slot);
	w->idle = true;
	w->idle_since = now_usec(CLOCK_BOOTTIME);
	w->outage_since = 0;
	if (w->last_error) {
		bool network = w->last_class == BACKOFF_RETRY_NOW ||
			       w->last_class == BACKOFF_RETRY_LATER;

		log_info("%s: back in IDLE", w->name);
		w->last_error = mfree(w->last_error);
		if (network && w->ctx->recovered)
			w->ctx->recovered(w->ctx->userdata, w->cfg->name);
	} else {
		log_info("%s: idle", w->name);
	}
	watch_changed(w);
}

static void on_alert(void *userdata, const char *text)
{
	struct watch *w = userdata;

	log_warning("%s: ALERT from the server: %s", w->name, text);
}

static enum backoff_class failure_class(struct watch *w, enum imap_failure f)
{
	switch (f) {
	case IMAP_FAIL_AUTH:
		return BACKOFF_AUTH;
	case IMAP_FAIL_TOO_MANY:
		return BACKOFF_TOO_MANY;
	case IMAP_FAIL_NO_MAILBOX:
		return BACKOFF_MISSING_MAILBOX;
	case IMAP_FAIL_FINAL:
		return BACKOFF_FINAL;
	default:
		return BACKOFF_RETRY_NOW;
	}
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct watch *w = userdata;

	w->retry = sd_event_source_disable_unref(w->retry);
	watch_connect(w);
	return 0;
}

static void schedule_retry(struct watch *w, usec_t delay)
{
	int r;

	if (delay == USEC_INFINITY)
		return;
	r = sd_event_add_time_relative(w->ctx->event, &w->retry, CLOCK_BOOTTIME, delay, 0,
				       on_retry, w);
	if (r < 0)
		log_error_errno(r, "%s: cannot schedule reconnect: %m", w->name);
}

/* Log a failed attempt (once; repeats of the same reason at debug) and schedule the next. */
static void retry_after_failure(struct watch *w, enum backoff_class c, const char *why)
{
	usec_t delay = backoff_next(&w->backoff, c), now = now_usec(CLOCK_BOOTTIME);
	bool network = c == BACKOFF_RETRY_NOW || c == BACKOFF_RETRY_LATER;
	char buf[32];
	bool repeat;

	gate_leave(w->ctx->gate, &w->slot);
	if (!w->outage_since)
		w->outage_since = now;
	if (network && now - w->outage_since < EARLY_OUTAGE)
		delay = MIN(delay, EARLY_RETRY_MAX);
	/* The link was found dead by a probe after a resume or a network change: the network
	 * is back, so waiting would only add to the gap (a failure from here on backs off). */
	if (w->probing && network)
		delay = 0;
	w->probing = false;
	w->last_class = c;
	repeat = w->last_error && streq(w->last_error, why);
	if (!repeat) {
		free(w->last_error);
		w->last_error = strdup(why);
	}
	if (delay == USEC_INFINITY)
		log_full(repeat ? LOG_DEBUG : LOG_ERR, "%s: %s; not retrying until reloaded",
			 w->name, why);
	else if (delay == 0)
		log_full(repeat ? LOG_DEBUG : LOG_WARNING, "%s: %s; reconnecting now", w->name, why);
	else
		log_full(repeat ? LOG_DEBUG : LOG_WARNING, "%s: %s; reconnecting in %s", w->name,
			 why, format_duration(buf, sizeof(buf), delay));
	schedule_retry(w, delay);
	watch_changed(w);
}

static void on_closed(void *userdata, enum imap_failure failure, int error, const char *why)
{
	struct watch *w = userdata;
	usec_t now = now_usec(CLOCK_BOOTTIME);

	w->link = link_release(w->link);
	/* The session is dead and reads its params no more: the token goes with it. */
	w->oauth_token = secret_free(w->oauth_token);
	if (w->idle && now - w->idle_since >= HEALTHY_AFTER)
		backoff_reset(&w->backoff);
	w->idle = false;
	if (w->stopping) {
		if (failure == IMAP_FAIL_NONE)
			log_debug("%s: logged out", w->name);
		else
			log_debug("%s: closed while logging out: %s", w->name, why);
		watch_changed(w);
		return;
	}
	retry_after_failure(w, failure_class(w, failure), why);
}

static const struct imap_session_ops watch_ops = {
	.selected = on_selected,
	.message = on_message,
	.summary = on_summary,
	.skipped = on_skipped,
	.idle = on_idle,
	.flags_changed = on_flags_changed,
	.expunged = on_expunged,
	.alert = on_alert,
	.closed = on_closed,
};

/* ---- connecting ------------------------------------------------------------------------ */

static void watch_link_new(struct watch *w)
{
	const struct config_account *c = w->cfg;
	int r;

	struct conn_params cp;
	struct imap_session_params sp;

	link_params_from_account(c, w->name, IMAP_GOAL_WATCH, w->password, w->oauth_token, &cp, &sp);
	sp.mailbox = w->mailbox;
	sp.known = w->state.known;
	sp.uidvalidity = w->state.uidvalidity;
	/* Events still on their way through the sinks are not fetched again. */
	sp.last_uid = MAX(w->state.uid, w->reported_uid);
	sp.catch_up = c->catch_up;
	sp.skip_seen = c->skip_seen;
	sp.idle_refresh = c->idle_refresh;
	sp.poll_interval = c->poll_interval;
	sp.probe_timeout = MIN(PROBE_TIMEOUT, c->reply_timeout);
	r = link_new(w->ctx->event, w->ctx->resolver, &cp, &sp, &watch_ops, w, &w->link);
	if (r < 0) {
		w->oauth_token = secret_free(w->oauth_token);
		gate_leave(w->ctx->gate, &w->slot);
		log_error_errno(r, "%s: cannot start connecting: %m", w->name);
		schedule_retry(w, backoff_next(&w->backoff, BACKOFF_RETRY_LATER));
	}
}

/* XOAUTH2 / OAUTHBEARER, chosen or (auto) the only credential there is. */
static bool wants_token(const struct watch *w)
{
	const struct config_account *c = w->cfg;

	if (c->auth == AUTH_XOAUTH2 || c->auth == AUTH_OAUTHBEARER)
		return true;
	return c->auth == AUTH_AUTO && !w->password && strv_length(c->oauth_token_command) > 0;
}

/* A broken helper is a transient failure: exponential backoff, never a hot loop. */
static void token_failed(struct watch *w, const char *why)
{
	_cleanup_free_ char *msg = NULL;

	if (asprintf(&msg, "oauth_token_command failed: %s", why) < 0)
		msg = NULL;
	retry_after_failure(w, BACKOFF_RETRY_LATER, msg ? msg : "oauth_token_command failed");
}

static void on_token(void *userdata, int error, char *token, const char *why)
{
	struct watch *w = userdata;
	int r;

	w->token_job = spawn_job_free(w->token_job);
	if (error < 0) {
		token_failed(w, why);
		return;
	}
	r = secret_register(token);
	if (r < 0) {
		secure_free(token);
		token_failed(w, strerror(-r));
		return;
	}
	log_debug("%s: got a fresh OAuth token from oauth_token_command", w->name);
	secret_free(w->oauth_token); /* none is expected: a link that closed dropped its own */
	w->oauth_token = token;
	watch_link_new(w);
}

/* Run from the gate slot: the token is part of the attempt, so a thousand watches of one
 * account do not run a thousand helpers at once. */
static void token_fetch(struct watch *w)
{
	int r;

	r = spawn_capture(w->ctx->event, w->cfg->oauth_token_command, w->token_label,
			  TOKEN_TIMEOUT, on_token, w, &w->token_job);
	if (r < 0) {
		log_debug_errno(r, "%s: cannot start oauth_token_command: %m", w->name);
		token_failed(w, strerror(-r));
	}
}

static void watch_connect_now(void *userdata)
{
	struct watch *w = userdata;

	state_load_once(w);
	if (wants_token(w))
		token_fetch(w);
	else
		watch_link_new(w);
}

static void watch_connect(struct watch *w)
{
	if (w->ctx->gate)
		gate_enter(w->ctx->gate, &w->slot, watch_connect_now, w);
	else
		watch_connect_now(w);
}

void watch_start(struct watch *w)
{
	if (!w->stopping && !w->link && !w->retry && !w->slot.waiting && !w->token_job)
		watch_connect(w);
}

void watch_probe(struct watch *w)
{
	if (w->stopping)
		return;
	if (w->link) {
		w->probing = true;
		if (link_probe(w->link) < 0)
			w->probing = false;
		return;
	}
	/* The network may be back after a resume or a route change. */
	watch_retry_now(w);
}

void watch_retry_now(struct watch *w)
{
	/* A rejected login or a missing mailbox is not fixed by the network coming back, so
	 * those keep their schedule. */
	if (w->stopping || !w->retry ||
	    (w->last_class != BACKOFF_RETRY_NOW && w->last_class != BACKOFF_RETRY_LATER))
		return;
	w->retry = sd_event_source_disable_unref(w->retry);
	log_debug("%s: reconnecting now instead of waiting", w->name);
	watch_connect(w);
}

void watch_stop(struct watch *w)
{
	if (w->stopping)
		return;
	w->stopping = true;
	w->retry = sd_event_source_disable_unref(w->retry);
	w->token_job = spawn_job_free(w->token_job);
	gate_leave(w->ctx->gate, &w->slot);
	/* LOGOUT may end the session at once (closed before login): on_closed then releases
	 * the link from inside this call, which is why it is not touched afterwards. */
	if (w->link && link_logout(w->link) < 0)
		w->link = link_release(w->link);
	state_flush(w);
	watch_changed(w);
}

bool watch_is_stopped(const struct watch *w)
{
	return w->stopping && !w->link;
}

void watch_set_context(struct watch *w, const struct watch_context *ctx)
{
	w->ctx = ctx;
}

struct watch *watch_free(struct watch *w)
{
	if (!w)
		return NULL;
	if (w->ctx->dispatch)
		dispatch_forget(w->ctx->dispatch, w);
	state_flush(w);
	sd_event_source_disable_unref(w->retry);
	spawn_job_free(w->token_job);
	gate_leave(w->ctx->gate, &w->slot);
	link_release(w->link);
	secret_free(w->oauth_token);
	free(w->token_label);
	free(w->last_error);
	free(w->mailbox);
	free(w->name);
	return mfree(w);
}

int watch_new(const struct watch_context *ctx, const struct config_account *cfg,
	      const char *password, const char *mailbox, struct watch **ret)
{
	struct watch *w = calloc(1, sizeof(*w));
	uint64_t seed = 0;

	if (!w)
		return -ENOMEM;
	w->ctx = ctx;
	w->cfg = cfg;
	w->password = password;
	w->mailbox = strdup(mailbox);
	if (!w->mailbox || asprintf(&w->name, "%s/%s", cfg->name, mailbox) < 0) {
		w->name = NULL;
		watch_free(w);
		return -ENOMEM;
	}
	if (asprintf(&w->token_label, "%s: oauth_token_command", w->name) < 0) {
		w->token_label = NULL;
		watch_free(w);
		return -ENOMEM;
	}
	/* Jitter must differ between watches and between runs, or a thousand of them
	 * reconnect in lockstep. */
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = now_usec(CLOCK_MONOTONIC) ^ (uintptr_t)w;
	backoff_init(&w->backoff, BACKOFF_BASE_DEFAULT, BACKOFF_CAP_DEFAULT, seed);
	*ret = w;
	return 0;
}
