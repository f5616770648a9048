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

struct sink_ops {
	const char *type; /* "exec", "webhook", "desktop" */
	/* Build the sink for the section named name (NULL for desktop) of config c, which
	 * outlives it. */
	int (*new)(sd_event *e, const struct config *c, const char *name, sink_accepted_fn accepted,
		   void *userdata, void **ret);
	int (*push)(void *sink, struct mail_event *e);
	void *(*free)(void *sink);
};
