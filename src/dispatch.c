#include "dispatch.h"

#include <stdio.h>

#include "log.h"
#include "sink/desktop.h"
#include "sink/exec.h"
#include "sink/sink.h"
#include "sink/webhook.h"

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
	struct sink_context ctx; /* what the implementation was built with */
	enum sink_type type;
	char *name;           /* "exec:sync", for logs */
	const char *cfg_name; /* the section's name, NULL for desktop; borrowed */
	const struct sink_ops *ops;
	void *impl; /* NULL: this kind of sink is not built yet */
	struct ticket_ref *head, **tail; /* FIFO of tickets waiting for this sink */
};

struct dispatch {
	sd_event *event;
	const struct config *config; /* borrowed: routes are looked up in it */
	struct sink *sinks;
	size_t n_sinks;
	struct ticket *pending; /* submitted, not yet accepted by all sinks */
	struct ticket *done;    /* accepted; callbacks due from the loop */
	struct ticket **done_tail;
	sd_event_source *defer;
	int (*mark_seen)(void *userdata, const struct mail_event *e);
	void *hook_userdata;
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
	r = s->impl ? s->ops->push(s->impl, t->e) : -EOPNOTSUPP;
	if (r < 0) {
		/* Not queued: it will never be accepted by this sink, so stop waiting. */
		sink_accepted(s, t->e);
		return r;
	}
	return 0;
}

int dispatch_submit(struct dispatch *d, struct mail_event *e, dispatch_accepted_fn accepted,
		    void *userdata)
{
	const struct sink_ref *sinks = NULL;
	size_t n_sinks = 0;
	struct ticket *t;

	if (!config_mailbox_sinks(d->config, e->account, e->mailbox, &sinks, &n_sinks))
		log_debug("%s/%s: no such account in the config, event %s goes nowhere",
			  e->account, e->mailbox, e->id);
	t = calloc(1, sizeof(*t));
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

		if (!s || !s->impl)
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

bool dispatch_is_idle(const struct dispatch *d)
{
	if (d->pending || d->done)
		return false;
	for (size_t i = 0; i < d->n_sinks; i++) {
		const struct sink *s = &d->sinks[i];
		if (s->impl && s->ops->busy && s->ops->busy(s->impl))
			return false;
	}
	return true;
}

/* One row per kind of sink; a NULL row is a sink that is configured but not built yet. */
static const struct sink_ops *const sink_types[] = {
	[SINK_EXEC] = &sink_exec_ops,
	[SINK_WEBHOOK] = &sink_webhook_ops,
	[SINK_DESKTOP] = &sink_desktop_ops,
};

static const char *const sink_type_names[] = {
	[SINK_DESKTOP] = "desktop",
	[SINK_WEBHOOK] = "webhook",
	[SINK_EXEC] = "exec",
};

static int sink_init(struct dispatch *d, const struct config *c, struct sink *s,
		     enum sink_type type, const char *name)
{
	int r;

	s->d = d;
	s->type = type;
	s->cfg_name = name;
	s->tail = &s->head;
	s->ops = sink_types[type];
	if (name ? asprintf(&s->name, "%s:%s", sink_type_names[type], name) < 0
		 : !(s->name = strdup(sink_type_names[type]))) {
		s->name = NULL;
		return -ENOMEM;
	}
	if (!s->ops) {
		log_warning("%s: this kind of sink is not implemented yet; its events are only "
			    "logged", s->name);
		return 0;
	}
	s->ctx = (struct sink_context){
		.event = d->event,
		.config = c,
		.accepted = sink_accepted,
		.userdata = s,
		.mark_seen = d->mark_seen,
		.hook_userdata = d->hook_userdata,
	};
	r = s->ops->new(&s->ctx, name, &s->impl);
	if (r < 0)
		return log_error_errno(r, "%s: cannot set up: %m", s->name);
	return 0;
}

static int dispatch_add_sinks(struct dispatch *d, const struct config *c)
{
	size_t n = c->n_execs + c->n_webhooks + 1;
	int r = 0;

	d->sinks = calloc(n, sizeof(struct sink));
	if (!d->sinks)
		return -ENOMEM;
	for (size_t i = 0; r >= 0 && i < c->n_execs; i++)
		r = sink_init(d, c, &d->sinks[d->n_sinks++], SINK_EXEC, c->execs[i].name);
	for (size_t i = 0; r >= 0 && i < c->n_webhooks; i++)
		r = sink_init(d, c, &d->sinks[d->n_sinks++], SINK_WEBHOOK, c->webhooks[i].name);
	/* desktop needs no section: `sinks = desktop` alone uses the defaults. */
	if (r >= 0 && (c->desktop.present || config_uses_sink(c, SINK_DESKTOP)))
		r = sink_init(d, c, &d->sinks[d->n_sinks++], SINK_DESKTOP, NULL);
	return r;
}

struct dispatch *dispatch_free(struct dispatch *d)
{
	if (!d)
		return NULL;
	for (size_t i = 0; i < d->n_sinks; i++) {
		struct sink *s = &d->sinks[i];
		if (s->impl)
			s->ops->free(s->impl);
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

void dispatch_message_changed(struct dispatch *d, const char *account, const char *mailbox,
			      uint32_t uidvalidity, uint32_t uid, enum mail_change change)
{
	for (size_t i = 0; i < d->n_sinks; i++)
		if (d->sinks[i].impl && d->sinks[i].ops->message_changed)
			d->sinks[i].ops->message_changed(d->sinks[i].impl, account, mailbox,
							 uidvalidity, uid, change);
}

int dispatch_new(sd_event *e, const struct config *c,
		 int (*mark_seen)(void *userdata, const struct mail_event *e), void *userdata,
		 struct dispatch **ret)
{
	struct dispatch *d = calloc(1, sizeof(*d));
	int r;

	if (!d)
		return -ENOMEM;
	d->event = sd_event_ref(e);
	d->config = c;
	d->mark_seen = mark_seen;
	d->hook_userdata = userdata;
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
