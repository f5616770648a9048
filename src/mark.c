#include "mark.h"

#include <stdio.h>

#include "link.h"
#include "log.h"
#include "proc/spawn.h"
#include "secret.h"

/* oauth_token_command gets this long; it may have to refresh the token over the network. */
#define TOKEN_TIMEOUT (30 * USEC_PER_SEC)

struct mark_job {
	struct mark_job *next;
	char *mailbox;
	uint32_t uidvalidity, uid;
};

/* One account's requests: at most one of them on the wire. */
struct mark_queue {
	struct marker *marker;
	char *account;
	struct mark_job *head, **tail; /* waiting, oldest first */
	size_t n_waiting;

	struct mark_job *running; /* owned; NULL when idle */
	char *name;               /* "account/mailbox" of the running job, for logs */
	struct spawn_job *token_job;
	struct link *link;
	char *password, *token;   /* the running job's credentials: registered copies */
	bool told;                /* the running job's outcome was logged */
	sd_event_source *kick;    /* deferred start of the next job */
};

struct marker {
	sd_event *event;
	struct resolver *resolver;
	marker_lookup_fn lookup;
	void *userdata;
	struct mark_queue **queues; /* one per account ever asked for; few */
	size_t n_queues;
};

static void queue_kick(struct mark_queue *q);

static struct mark_job *job_free(struct mark_job *j)
{
	if (!j)
		return NULL;
	free(j->mailbox);
	return mfree(j);
}

static bool job_same(const struct mark_job *j, const struct mail_event *e)
{
	return j && j->uid == e->uid && j->uidvalidity == e->uidvalidity &&
	       streq(j->mailbox, e->mailbox);
}

/* ---- the running job ---------------------------------------------------------------- */

/* The connection is over (or never started): forget it and go on with the next job. */
static void job_finish(struct mark_queue *q)
{
	q->token_job = spawn_job_free(q->token_job);
	q->link = link_release(q->link);
	/* The session is dead and reads its params no more. */
	q->password = secret_free(q->password);
	q->token = secret_free(q->token);
	q->running = job_free(q->running);
	q->name = mfree(q->name);
	q->told = false;
	queue_kick(q);
}

static void job_failed(struct mark_queue *q, const char *why)
{
	if (!q->told)
		log_warning("%s: cannot mark UID %u as read: %s", q->name, q->running->uid, why);
	q->told = true;
	job_finish(q);
}

static void on_stored(void *userdata, int result, const char *why)
{
	struct mark_queue *q = userdata;

	if (result == 0)
		log_info("%s: marked UID %u as read", q->name, q->running->uid);
	else if (result == -ESTALE)
		log_notice("%s: not marking UID %u as read: %s", q->name, q->running->uid, why);
	else
		log_warning("%s: cannot mark UID %u as read: %s", q->name, q->running->uid, why);
	q->told = true;
}

static void on_alert(void *userdata, const char *text)
{
	struct mark_queue *q = userdata;

	log_warning("%s: ALERT from the server: %s", q->name, text);
}

static void on_closed(void *userdata, enum imap_failure failure, int error, const char *why)
{
	struct mark_queue *q = userdata;

	job_failed(q, why ? why : "connection closed");
}

static const struct imap_session_ops mark_ops = {
	.stored = on_stored,
	.alert = on_alert,
	.closed = on_closed,
};

static void job_connect(struct mark_queue *q, const struct config_account *c)
{
	const struct mark_job *j = q->running;
	int r;

	struct conn_params cp = {
		.host = c->host,
		.port = c->port,
		.tls = c->tls,
		.ca_file = c->tls_ca_file,
		.fingerprint = c->has_fingerprint ? c->tls_fingerprint : NULL,
		.connect_timeout = c->connect_timeout,
		.name = q->name,
	};
	struct imap_session_params sp = {
		.name = q->name,
		.goal = IMAP_GOAL_STORE_SEEN,
		.tls = c->tls,
		.allow_plaintext = c->allow_plaintext,
		.host = c->host,
		.port = c->port,
		.username = c->username,
		.password = q->password,
		.oauth_token = q->token,
		.auth = c->auth,
		.send_id = c->send_id,
		.mailbox = j->mailbox,
		.uidvalidity = j->uidvalidity,
		.store_uid = j->uid,
		.reply_timeout = c->reply_timeout,
		.greeting_timeout = c->connect_timeout,
	};
	r = link_new(q->marker->event, q->marker->resolver, &cp, &sp, &mark_ops, q, &q->link);
	if (r < 0)
		job_failed(q, strerror(-r));
}

/* The account as it is configured now; a request for one that went away is dropped. */
static bool job_lookup(struct mark_queue *q, struct marker_account *ret)
{
	if (q->marker->lookup(q->marker->userdata, q->account, ret) < 0) {
		job_failed(q, "the account is no longer configured");
		return false;
	}
	return true;
}

static void on_token(void *userdata, int error, char *token, const char *why)
{
	struct mark_queue *q = userdata;
	struct marker_account a;
	int r;

	q->token_job = spawn_job_free(q->token_job);
	if (error < 0) {
		job_failed(q, why);
		return;
	}
	r = secret_register(token);
	if (r < 0) {
		secure_free(token);
		job_failed(q, strerror(-r));
		return;
	}
	q->token = token;
	if (job_lookup(q, &a))
		job_connect(q, a.cfg);
}

/* XOAUTH2 / OAUTHBEARER, chosen or (auto) the only credential there is. */
static bool wants_token(const struct marker_account *a)
{
	const struct config_account *c = a->cfg;

	if (c->auth == AUTH_XOAUTH2 || c->auth == AUTH_OAUTHBEARER)
		return true;
	return c->auth == AUTH_AUTO && !a->password && strv_length(c->oauth_token_command) > 0;
}

static int job_start_token(struct mark_queue *q, const struct marker_account *a)
{
	_cleanup_free_ char *label = NULL;

	if (asprintf(&label, "%s: oauth_token_command", q->name) < 0)
		return -ENOMEM;
	return spawn_capture(q->marker->event, a->cfg->oauth_token_command, label, TOKEN_TIMEOUT,
			     on_token, q, &q->token_job);
}

static void job_start(struct mark_queue *q)
{
	struct marker_account a;
	int r;

	if (asprintf(&q->name, "%s/%s", q->account, q->running->mailbox) < 0) {
		q->name = NULL;
		q->running = job_free(q->running);
		log_oom();
		queue_kick(q);
		return;
	}
	log_debug("%s: marking UID %u as read", q->name, q->running->uid);
	if (!job_lookup(q, &a))
		return;
	if (a.password) {
		q->password = strdup(a.password);
		r = q->password ? secret_register(q->password) : -ENOMEM;
		if (r < 0) {
			q->password = secure_free(q->password);
			job_failed(q, strerror(-r));
			return;
		}
	}
	if (!wants_token(&a)) {
		job_connect(q, a.cfg);
		return;
	}
	r = job_start_token(q, &a);
	if (r < 0)
		job_failed(q, strerror(-r));
}

/* ---- the queue ------------------------------------------------------------------------ */

static int on_kick(sd_event_source *s, void *userdata)
{
	struct mark_queue *q = userdata;

	q->kick = sd_event_source_disable_unref(q->kick);
	if (q->running || !q->head)
		return 0;
	q->running = q->head;
	q->head = q->head->next;
	if (!q->head)
		q->tail = &q->head;
	q->n_waiting--;
	q->running->next = NULL;
	job_start(q); /* one that cannot start is finished at once, and the next one kicked */
	return 0;
}

/* Start the next job from the loop, never from inside a caller's or a link's callback. */
static void queue_kick(struct mark_queue *q)
{
	int r;

	if (q->running || !q->head || q->kick)
		return;
	r = sd_event_add_defer(q->marker->event, &q->kick, on_kick, q);
	if (r < 0)
		log_error_errno(r, "%s: cannot start marking messages as read: %m", q->account);
}

static struct mark_queue *queue_free(struct mark_queue *q)
{
	if (!q)
		return NULL;
	q->kick = sd_event_source_disable_unref(q->kick);
	spawn_job_free(q->token_job);
	link_release(q->link);
	secret_free(q->password);
	secret_free(q->token);
	job_free(q->running);
	while (q->head) {
		struct mark_job *j = q->head;
		q->head = j->next;
		job_free(j);
	}
	free(q->name);
	free(q->account);
	return mfree(q);
}

static struct mark_queue *queue_get(struct marker *m, const char *account)
{
	struct mark_queue *q, **qs;

	for (size_t i = 0; i < m->n_queues; i++)
		if (streq(m->queues[i]->account, account))
			return m->queues[i];
	qs = reallocarray(m->queues, m->n_queues + 1, sizeof(*qs));
	if (!qs)
		return NULL;
	m->queues = qs;
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->marker = m;
	q->tail = &q->head;
	q->account = strdup(account);
	if (!q->account)
		return queue_free(q);
	m->queues[m->n_queues++] = q;
	return q;
}

static bool queue_has(const struct mark_queue *q, const struct mail_event *e)
{
	if (job_same(q->running, e))
		return true;
	for (const struct mark_job *j = q->head; j; j = j->next)
		if (job_same(j, e))
			return true;
	return false;
}

int marker_mark_seen(struct marker *m, const struct mail_event *e)
{
	struct marker_account a;
	struct mark_queue *q;
	struct mark_job *j;

	if (mail_event_is_summary(e))
		return -EINVAL;
	if (m->lookup(m->userdata, e->account, &a) < 0) {
		log_warning("%s/%s: cannot mark UID %u as read: no such account", e->account,
			    e->mailbox, e->uid);
		return -ENOENT;
	}
	q = queue_get(m, e->account);
	if (!q)
		return log_oom();
	if (queue_has(q, e)) {
		log_debug("%s/%s: UID %u is already being marked as read", e->account, e->mailbox,
			  e->uid);
		return 0;
	}
	if (q->n_waiting >= MARKER_QUEUE_MAX) {
		log_warning("%s/%s: cannot mark UID %u as read: %u requests are waiting already",
			    e->account, e->mailbox, e->uid, MARKER_QUEUE_MAX);
		return -ENOBUFS;
	}
	j = calloc(1, sizeof(*j));
	if (!j || !(j->mailbox = strdup(e->mailbox))) {
		job_free(j);
		return log_oom();
	}
	j->uidvalidity = e->uidvalidity;
	j->uid = e->uid;
	*q->tail = j;
	q->tail = &j->next;
	q->n_waiting++;
	queue_kick(q);
	return 0;
}

size_t marker_pending(const struct marker *m)
{
	size_t n = 0;

	for (size_t i = 0; m && i < m->n_queues; i++)
		n += m->queues[i]->n_waiting + !!m->queues[i]->running;
	return n;
}

struct marker *marker_free(struct marker *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < m->n_queues; i++)
		queue_free(m->queues[i]);
	free(m->queues);
	return mfree(m);
}

int marker_new(sd_event *e, struct resolver *r, marker_lookup_fn lookup, void *userdata,
	       struct marker **ret)
{
	struct marker *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->event = e;
	m->resolver = r;
	m->lookup = lookup;
	m->userdata = userdata;
	*ret = m;
	return 0;
}
