#include "dispatch.h"

#include <stdio.h>

#include "log.h"
#include "sink/exec.h"

/* One submitted event on its way through its sinks. */
struct ticket {
	struct mail_event *e;
	unsigned remaining; /* sinks that have not accepted it yet */
	dispatch_accepted_fn accepted;
	void *userdata;
	struct ticket *next; /* all tickets, or the done list */
};

/* A ticket's place in one sink's queue. */
struct ticket_ref {
	struct ticket *t;
	struct ticket_ref *next;
};

struct sink {
	struct dispatch *d;
	enum sink_type type;
	char *name;           /* "exec:sync", for logs */
	const char *cfg_name; /* the section's name, NULL for desktop; borrowed */
	struct sink_exec *exec;
	struct ticket_ref *head, **tail; /* FIFO of tickets waiting for this sink */
};

struct dispatch {
	sd_event *event;
	struct sink *sinks;
	size_t n_sinks;
	struct ticket *pending; /* submitted, not yet accepted by all sinks */
	struct ticket *done;    /* accepted; callbacks due from the loop */
	struct ticket **done_tail;
	sd_event_source *defer;
};

static void ticket_unlink(struct ticket **list, struct ticket *t)
{
	for (struct ticket **i = list; *i; i = &(*i)->next)
		if (*i == t) {
			*i = t->next;
			t->next = NULL;
			return;
		}
}

static void ticket_complete(struct dispatch *d, struct ticket *t)
{
	ticket_unlink(&d->pending, t);
	*d->done_tail = t;
	d->done_tail = &t->next;
	sd_event_source_set_enabled(d->defer, SD_EVENT_ONESHOT);
}

static int on_defer(sd_event_source *s, void *userdata)
{
	struct dispatch *d = userdata;

	while (d->done) {
		struct ticket *t = d->done;

		d->done = t->next;
		if (!d->done)
			d->done_tail = &d->done;
		if (t->accepted)
			t->accepted(t->userdata, t->e);
		mail_event_unref(t->e);
		free(t);
	}
	return 0;
}

/* Sinks accept in submission order; the search only goes past the head if a sink ever
 * reorders, which keeps this correct rather than assumed. */
static void sink_accepted(void *userdata, struct mail_event *e)
{
	struct sink *s = userdata;

	for (struct ticket_ref **i = &s->head; *i; i = &(*i)->next) {
		struct ticket_ref *ref = *i;
		if (ref->t->e != e)
			continue;
		*i = ref->next;
		if (s->tail == &ref->next)
			s->tail = i;
		if (--ref->t->remaining == 0)
			ticket_complete(s->d, ref->t);
		free(ref);
		return;
	}
	log_debug("%s: accepted an event nobody waits for, ignoring", s->name);
}

static struct sink *find_sink(struct dispatch *d, const struct sink_ref *r)
{
	for (size_t i = 0; i < d->n_sinks; i++)
		if (d->sinks[i].type == r->type && streq_ptr(d->sinks[i].cfg_name, r->name))
			return &d->sinks[i];
	return NULL;
}

static int sink_push(struct sink *s, struct ticket *t)
{
	struct ticket_ref *ref = calloc(1, sizeof(*ref));
	int r;

	if (!ref)
		return -ENOMEM;
	ref->t = t;
	*s->tail = ref;
	s->tail = &ref->next;
	t->remaining++;
	r = s->exec ? sink_exec_push(s->exec, t->e) : -EOPNOTSUPP;
	if (r < 0) {
		/* Not queued: it will never be accepted by this sink, so stop waiting. */
		sink_accepted(s, t->e);
		return r;
	}
	return 0;
}

int dispatch_submit(struct dispatch *d, const struct sink_ref *sinks, size_t n_sinks,
		    struct mail_event *e, dispatch_accepted_fn accepted, void *userdata)
{
	struct ticket *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->e = mail_event_ref(e);
	t->accepted = accepted;
	t->userdata = userdata;
	t->next = d->pending;
	d->pending = t;
	t->remaining = 1; /* held while pushing, so a sink cannot complete it half-routed */
	for (size_t i = 0; i < n_sinks; i++) {
		struct sink *s = find_sink(d, &sinks[i]);
		int r;

		if (!s || !s->exec)
			continue; /* not built: said once at start-up */
		r = sink_push(s, t);
		if (r < 0)
			log_error_errno(r, "%s: cannot queue event %s: %m", s->name, e->id);
	}
	if (--t->remaining == 0)
		ticket_complete(d, t);
	return 0;
}

void dispatch_forget(struct dispatch *d, void *userdata)
{
	for (struct ticket *t = d->pending; t; t = t->next)
		if (t->userdata == userdata)
			t->accepted = NULL;
	for (struct ticket *t = d->done; t; t = t->next)
		if (t->userdata == userdata)
			t->accepted = NULL;
}

static int sink_init(struct dispatch *d, struct sink *s, enum sink_type type, const char *name)
{
	static const char *const prefix[] = {
		[SINK_DESKTOP] = "desktop", [SINK_WEBHOOK] = "webhook", [SINK_EXEC] = "exec"
	};

	s->d = d;
	s->type = type;
	s->cfg_name = name;
	s->tail = &s->head;
	if (name ? asprintf(&s->name, "%s:%s", prefix[type], name) < 0
		 : !(s->name = strdup(prefix[type]))) {
		s->name = NULL;
		return -ENOMEM;
	}
	return 0;
}

static int dispatch_add_sinks(struct dispatch *d, const struct config *c)
{
	size_t n = c->n_execs + c->n_webhooks + (c->desktop.present ? 1 : 0);
	int r;

	d->sinks = calloc(n ? n : 1, sizeof(struct sink));
	if (!d->sinks)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_execs; i++, d->n_sinks++) {
		struct sink *s = &d->sinks[d->n_sinks];
		r = sink_init(d, s, SINK_EXEC, c->execs[i].name);
		if (r >= 0)
			r = sink_exec_new(d->event, &c->execs[i], sink_accepted, s, &s->exec);
		if (r < 0)
			return log_error_errno(r, "%s: cannot set up: %m", strna(s->name));
	}
	for (size_t i = 0; i < c->n_webhooks; i++, d->n_sinks++) {
		r = sink_init(d, &d->sinks[d->n_sinks], SINK_WEBHOOK, c->webhooks[i].name);
		if (r < 0)
			return r;
		log_warning("%s: webhook delivery is not implemented yet; its events are only "
			    "logged", d->sinks[d->n_sinks].name);
	}
	if (c->desktop.present) {
		r = sink_init(d, &d->sinks[d->n_sinks++], SINK_DESKTOP, NULL);
		if (r < 0)
			return r;
		log_warning("desktop: notifications are not implemented yet; events are only logged");
	}
	return 0;
}

struct dispatch *dispatch_free(struct dispatch *d)
{
	if (!d)
		return NULL;
	for (size_t i = 0; i < d->n_sinks; i++) {
		struct sink *s = &d->sinks[i];
		sink_exec_free(s->exec);
		while (s->head) {
			struct ticket_ref *ref = s->head;
			s->head = ref->next;
			free(ref);
		}
		free(s->name);
	}
	free(d->sinks);
	for (struct ticket **list = &d->pending; list; list = list == &d->pending ? &d->done : NULL)
		while (*list) {
			struct ticket *t = *list;
			*list = t->next;
			mail_event_unref(t->e);
			free(t);
		}
	sd_event_source_disable_unref(d->defer);
	sd_event_unref(d->event);
	return mfree(d);
}

int dispatch_new(sd_event *e, const struct config *c, struct dispatch **ret)
{
	struct dispatch *d = calloc(1, sizeof(*d));
	int r;

	if (!d)
		return -ENOMEM;
	d->event = sd_event_ref(e);
	d->done_tail = &d->done;
	r = sd_event_add_defer(e, &d->defer, on_defer, d);
	if (r >= 0)
		r = sd_event_source_set_enabled(d->defer, SD_EVENT_OFF);
	if (r >= 0)
		r = dispatch_add_sinks(d, c);
	if (r < 0) {
		dispatch_free(d);
		return r;
	}
	*ret = d;
	return 0;
}
