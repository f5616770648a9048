/* Routes each event to the sinks its account names, and tells the watch when every one of
 * them has durably accepted it (exec: started; desktop: handed to the bus; webhook: in the
 * spool). Only then does the watch advance its mailbox state, so a crash in between repeats
 * an event rather than losing it.
 *
 * Each sink keeps its own queue, so a slow sink never holds up another; per sink, events are
 * accepted in the order they were submitted, which keeps a mailbox's state moving forward. */
#pragma once

#include <systemd/sd-event.h>

#include "config.h"
#include "event.h"
#include "sink/sink.h"

struct dispatch;

/* Called once per submitted event, from the event loop, after all its sinks accepted it. */
typedef void (*dispatch_accepted_fn)(void *userdata, struct mail_event *e);

/* Builds one sink per [exec]/[webhook]/[desktop] section of c. c must outlive it.
 * mark_seen (may be NULL) serves the desktop's mark-read action. */
int dispatch_new(sd_event *e, const struct config *c,
		 int (*mark_seen)(void *userdata, const struct mail_event *e), void *userdata,
		 struct dispatch **ret);
struct dispatch *dispatch_free(struct dispatch *d);

/* Route e (a reference is taken) to the sinks of its account and mailbox (a [mailbox]
 * section overrides the account's list); accepted(userdata, e) follows. With no sinks the
 * event is accepted at once (from the loop). */
int dispatch_submit(struct dispatch *d, struct mail_event *e, dispatch_accepted_fn accepted,
		    void *userdata);

/* A reported message changed (seen elsewhere, expunged): sinks that care (desktop closes
 * its popup) are told. */
void dispatch_message_changed(struct dispatch *d, const char *account, const char *mailbox,
			      uint32_t uidvalidity, uint32_t uid, enum mail_change change);

/* The owner of userdata is going away: no more callbacks to it. */
void dispatch_forget(struct dispatch *d, void *userdata);
