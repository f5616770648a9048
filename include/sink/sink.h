/* What every sink offers the dispatcher.
 *
 * A sink takes events one by one (push takes its own reference) and calls back once per
 * event when it has durably accepted it: exec when the run carrying it started, desktop when
 * the notification was handed to the bus (or given up on), webhook when the event is in the
 * spool. Acceptance comes from the event loop, never from inside push, in push order. */
#pragma once

#include <systemd/sd-event.h>

#include "config.h"
#include "event.h"

/* Called once per pushed event; e is borrowed for the call. The callee may push more events
 * but may not free the sink. */
typedef void (*sink_accepted_fn)(void *userdata, struct mail_event *e);

/* What a message became after it was reported (another device read or deleted it). */
enum mail_change {
	MAIL_CHANGE_SEEN = 1 << 0,
	MAIL_CHANGE_EXPUNGED = 1 << 1,
};

/* Everything a sink gets from the dispatcher; borrowed, outlives the sink. */
struct sink_context {
	sd_event *event;
	const struct config *config;
	sink_accepted_fn accepted;
	void *userdata; /* for accepted */
	/* Set \Seen on the message behind e over IMAP (the desktop's mark-read action), from
	 * the loop, without blocking. NULL when not available. */
	int (*mark_seen)(void *hook_userdata, const struct mail_event *e);
	void *hook_userdata;
};

struct sink_ops {
	const char *type; /* "exec", "webhook", "desktop" */
	/* Build the sink for the section named name (NULL for desktop). */
	int (*new)(const struct sink_context *ctx, const char *name, void **ret);
	int (*push)(void *sink, struct mail_event *e);
	void *(*free)(void *sink);
	/* Optional: work is still under way (a command running). A reload keeps the old sinks
	 * until they are neither holding events nor busy, so a running command is not cut off. */
	bool (*busy)(void *sink);
	/* Optional: a reported message changed. */
	void (*message_changed)(void *sink, const char *account, const char *mailbox,
				uint32_t uidvalidity, uint32_t uid, enum mail_change change);
};
