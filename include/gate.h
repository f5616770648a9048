/* A cap on connection attempts in flight at once, across all accounts.
 *
 * A thousand watches reconnecting after a server restart (or a resume) must not open a
 * thousand TLS handshakes in the same millisecond. Each attempt holds a slot from connect
 * until it is idle or has failed; the others wait in FIFO order and are started from the
 * event loop as slots free up. */
#pragma once

#include <systemd/sd-event.h>

#include "util.h"

struct gate;

/* Embedded in its owner; zero-initialised is "not in the gate". */
struct gate_slot {
	void (*go)(void *userdata);
	void *userdata;
	struct gate_slot *next; /* in the wait queue */
	bool waiting, holding;
};

struct gate *gate_new(sd_event *e, unsigned max_in_flight);
struct gate *gate_free(struct gate *g);

/* Ask for a slot; go(userdata) is called from the event loop once one is granted (never
 * from inside this call). */
void gate_enter(struct gate *g, struct gate_slot *s, void (*go)(void *userdata), void *userdata);
/* Give the slot back, or stop waiting for one. Idempotent. */
void gate_leave(struct gate *g, struct gate_slot *s);

unsigned gate_in_flight(const struct gate *g);
size_t gate_waiting(const struct gate *g);
