/* A watched mailbox: keeps one IMAP link in IDLE, turns new messages into events, persists
 * how far it has reported, and reconnects forever with backoff.
 *
 * State is advanced only for what has been reported, and is reloaded on every (re)connect,
 * so a daemon restart or a dropped link neither repeats nor loses a message. */
#pragma once

#include <systemd/sd-event.h>

#include "backoff.h"
#include "config.h"

struct dispatch;
struct gate;
struct resolver;
struct watch;

/* What every watch shares; owned by the manager and outliving the watches. */
struct watch_context {
	sd_event *event;
	struct resolver *resolver;
	const char *state_dir;
	struct dispatch *dispatch; /* routes events to the account's sinks */
	struct gate *gate;         /* caps connection attempts in flight; may be NULL */
	/* Something a status line would show changed (idle, reconnecting, new mail). */
	void (*changed)(void *userdata);
	/* A watch of this account reached IDLE again after a network failure: the server is
	 * back, so its siblings waiting out the same failure need not wait any longer. */
	void (*recovered)(void *userdata, const char *account);
	void *userdata;
};

/* cfg and password are borrowed and must outlive the watch. */
int watch_new(const struct watch_context *ctx, const struct config_account *cfg,
	      const char *password, const char *mailbox, struct watch **ret);
struct watch *watch_free(struct watch *w);

void watch_start(struct watch *w);
bool watch_is_idle(const struct watch *w);
const char *watch_name(const struct watch *w);

/* Why the watch is not idle (the last failure, and its class when ret_class is not NULL), or
 * NULL while idle, connecting for the first time, or stopping. Borrowed until the next
 * callback. */
const char *watch_problem(const struct watch *w, enum backoff_class *ret_class);
/* CLOCK_REALTIME µs of the last new-mail event, 0 when none yet. */
usec_t watch_last_mail(const struct watch *w);

/* Check the link now (after a resume or a route change): it must answer within a few
 * seconds, and one found dead reconnects at once, without backoff. A watch waiting out a
 * network failure reconnects now. */
void watch_probe(struct watch *w);
/* Waiting out a network failure: try now (through the gate). Other waits (a rejected login,
 * a missing mailbox) keep their schedule. */
void watch_retry_now(struct watch *w);

/* Leave for good: LOGOUT on a live link, no more reconnects, state written. ctx->changed is
 * called once the link is gone; watch_is_stopped() then says so. watch_free() afterwards
 * (or at any time: it closes whatever is left). */
void watch_stop(struct watch *w);
bool watch_is_stopped(const struct watch *w);

/* Re-point the watch at another context (a reload built new sinks). The old one must stay
 * valid until this call; events already submitted stay with the old dispatcher. */
void watch_set_context(struct watch *w, const struct watch_context *ctx);
