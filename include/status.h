/* The STATUS= line the service manager shows (`systemctl status`), kept current from the
 * loop and rate-limited: a thousand watches flapping cost one datagram a second, and the last
 * change always makes it out.
 *
 *   5/5 mailboxes idle · 1 account reconnecting (auth failed) · last mail 12:03
 */
#pragma once

#include <systemd/sd-event.h>

#include "backoff.h"
#include "util.h"

struct status_counts {
	size_t mailboxes, idle;
	size_t accounts_failing;          /* accounts with a watch waiting to reconnect */
	const char *reason;               /* the first such failure, or NULL */
	enum backoff_class reason_class;
	usec_t last_mail;                 /* CLOCK_REALTIME µs, 0 when none yet */
	const char *phase;                /* "reloading", "shutting down", or NULL */
};

/* The line for c, in buf (always terminated; cut short if it does not fit). Pure but for the
 * local time zone of "last mail". */
void status_format(const struct status_counts *c, char *buf, size_t size);

struct status;

/* Fills in the counts when the line is due. */
typedef void (*status_collect_fn)(void *userdata, struct status_counts *ret);

int status_new(sd_event *e, usec_t interval, status_collect_fn collect, void *userdata,
	       struct status **ret);
struct status *status_free(struct status *s);

/* Something on the line may have changed: it is rebuilt from the loop (at once, or when the
 * interval since the last one has passed) and sent if it differs. */
void status_changed(struct status *s);
/* Rebuild and send now, with extra sd_notify fields in front ("RELOADING=1", may be NULL). */
void status_send_now(struct status *s, const char *extra);
