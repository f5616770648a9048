#include "gate.h"

struct gate {
	sd_event_source *defer; /* grants slots from the loop */
	unsigned max, in_flight;
	struct gate_slot *head, **tail;
	size_t n_waiting;
};

static int on_defer(sd_event_source *s, void *userdata)
{
	struct gate *g = userdata;

	while (g->head && g->in_flight < g->max) {
		struct gate_slot *slot = g->head;

		g->head = slot->next;
		if (!g->head)
			g->tail = &g->head;
		g->n_waiting--;
		slot->next = NULL;
		slot->waiting = false;
		slot->holding = true;
		g->in_flight++;
		slot->go(slot->userdata); /* may leave or re-enter the gate */
	}
	return 0;
}

static void gate_kick(struct gate *g)
{
	if (g->head && g->in_flight < g->max)
		sd_event_source_set_enabled(g->defer, SD_EVENT_ONESHOT);
}

void gate_enter(struct gate *g, struct gate_slot *s, void (*go)(void *userdata), void *userdata)
{
	if (s->waiting || s->holding)
		return;
	s->go = go;
	s->userdata = userdata;
	s->next = NULL;
	s->waiting = true;
	*g->tail = s;
	g->tail = &s->next;
	g->n_waiting++;
	gate_kick(g);
}

void gate_leave(struct gate *g, struct gate_slot *s)
{
	if (!g)
		return;
	if (s->holding) {
		s->holding = false;
		g->in_flight--;
		gate_kick(g);
		return;
	}
	if (!s->waiting)
		return;
	for (struct gate_slot **i = &g->head; *i; i = &(*i)->next)
		if (*i == s) {
			*i = s->next;
			if (g->tail == &s->next)
				g->tail = i;
			break;
		}
	s->next = NULL;
	s->waiting = false;
	g->n_waiting--;
}

unsigned gate_in_flight(const struct gate *g)
{
	return g->in_flight;
}

size_t gate_waiting(const struct gate *g)
{
	return g->n_waiting;
}

struct gate *gate_free(struct gate *g)
{
	if (!g)
		return NULL;
	sd_event_source_disable_unref(g->defer);
	return mfree(g);
}

struct gate *gate_new(sd_event *e, unsigned max_in_flight)
{
	struct gate *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->max = max_in_flight ? max_in_flight : 1;
	g->tail = &g->head;
	if (sd_event_add_defer(e, &g->defer, on_defer, g) < 0 ||
	    sd_event_source_set_enabled(g->defer, SD_EVENT_OFF) < 0)
		return gate_free(g);
	return g;
}
