/* Suspend and resume, as logind announces them on the system bus (PrepareForSleep).
 *
 * After a resume every connection may be dead without knowing it (the server dropped it
 * long ago, or the address changed): the owner probes them all at once instead of waiting
 * for the next IDLE refresh. Without a system bus (a container, a minimal host) the monitor
 * says so once and is inert: dead links are then found by their own timeouts. */
#pragma once

#include <systemd/sd-event.h>

struct sleep_monitor;

/* resumed(userdata) is called from the loop after each resume. Never fails for want of a
 * bus; only -ENOMEM. *ret is always set on success (an inert monitor without a bus). */
int sleep_monitor_new(sd_event *e, void (*resumed)(void *userdata), void *userdata,
		      struct sleep_monitor **ret);
struct sleep_monitor *sleep_monitor_free(struct sleep_monitor *m);
