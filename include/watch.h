/* A watched mailbox: keeps one IMAP link in IDLE, turns new messages into events, persists
 * how far it has reported, and reconnects forever with backoff.
 *
 * State is advanced only for what has been reported, and is reloaded on every (re)connect,
 * so a daemon restart or a dropped link neither repeats nor loses a message. */
#pragma once

#include <systemd/sd-event.h>

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
	void *userdata;
};

/* cfg and password are borrowed and must outlive the watch. */
int watch_new(const struct watch_context *ctx, const struct config_account *cfg,
	      const char *password, const char *mailbox, struct watch **ret);
struct watch *watch_free(struct watch *w);

void watch_start(struct watch *w);
bool watch_is_idle(const struct watch *w);
const char *watch_name(const struct watch *w);
