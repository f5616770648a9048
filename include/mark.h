/* Mark a reported message as read on the server (the desktop's mark-read action).
 *
 * Each request opens a short-lived connection of its own: login, SELECT the mailbox
 * (read-write, unlike the watcher's EXAMINE), check that its UIDVALIDITY is still the event's
 * (else the UID names another message and nothing is stored), UID STORE +FLAGS.SILENT (\Seen),
 * LOGOUT. The outcome is logged ("work/INBOX: marked UID 5 as read"); nobody waits for it.
 *
 * Bounds: one connection per account at a time; further requests wait in that account's
 * queue (at most MARKER_QUEUE_MAX), and a request for a message already queued or in flight
 * is merged with it. A failed request is not retried: the reason is logged.
 *
 * Credentials: the marker owns no account. It asks its owner through lookup() each time a
 * request starts (so a reloaded config is used as soon as it is in place) and keeps its own
 * copy of the password for as long as that connection lives. */
#pragma once

#include <systemd/sd-event.h>

#include "config.h"
#include "event.h"

#define MARKER_QUEUE_MAX 100

struct marker;
struct resolver;

/* An account as the owner has it now; borrowed for the duration of the lookup call. */
struct marker_account {
	const struct config_account *cfg;
	const char *password; /* NULL when the account logs in with OAuth only */
};

/* Fill *ret for the account named name and return 0, or return -ENOENT. */
typedef int (*marker_lookup_fn)(void *userdata, const char *name, struct marker_account *ret);

/* e and r are borrowed and must outlive the marker. */
int marker_new(sd_event *e, struct resolver *r, marker_lookup_fn lookup, void *userdata,
	       struct marker **ret);
/* Ends every connection and drops every queued request; NULL-safe, returns NULL. */
struct marker *marker_free(struct marker *m);

/* Queue "set \Seen on e's message". Returns 0 when queued or merged; -EINVAL for a summary
 * event (it stands for many messages), -ENOENT for an unknown account, -ENOBUFS when the
 * account's queue is full, -ENOMEM. Never blocks and never calls back into the caller. */
int marker_mark_seen(struct marker *m, const struct mail_event *e);

/* Requests queued or in flight, over all accounts (for tests and status). */
size_t marker_pending(const struct marker *m);
