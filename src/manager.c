#include "manager.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sysexits.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "account.h"
#include "dispatch.h"
#include "gate.h"
#include "log.h"
#include "mark.h"
#include "net/resolve.h"
#include "route.h"
#include "secret.h"
#include "sleep.h"
#include "status.h"
#include "watch.h"

/* SIGTERM or a reload: servers get this long to answer LOGOUT before the link is just
 * closed. systemd's default stop timeout is 90 s; a user waits for a few. */
#define LOGOUT_DEADLINE (2 * USEC_PER_SEC)
/* STATUS= at most this often; the last change always makes it out. */
#define STATUS_INTERVAL (1 * USEC_PER_SEC)
/* A route change comes in bursts (both families, replace = delete + add). */
#define ROUTE_DEBOUNCE (1 * USEC_PER_SEC)
/* How often retired generations are checked for having drained. */
#define GC_INTERVAL (1 * USEC_PER_SEC)

/* One loaded configuration and the sinks built from it.
 *
 * A reload builds a new generation and swaps it in only when everything in it was built.
 * The old one is kept until nothing refers to it: accounts borrow their section (struct
 * config_account) from the config they were built with, and an account whose section did
 * not change keeps its connections, and so that section, across any number of reloads; the
 * old dispatcher keeps the events it holds until its sinks have accepted them. Every live
 * watch, current or logging out, uses the current generation's context (its dispatcher). */
struct generation {
	struct config *config;
	struct dispatch *dispatch;
	struct watch_context ctx;
	struct generation *next; /* in manager.old */
};

struct manager {
	sd_event *event;
	struct resolver *resolver;
	struct gate *gate;
	struct marker *marker; /* the desktop's mark-read action */
	struct generation *gen; /* current */
	struct generation *old; /* retired, still referenced or draining */
	struct account **accounts; /* current, one per [account] section of gen */
	size_t n_accounts;
	struct account **retiring; /* removed, changed or shutting down: logging out */
	size_t n_retiring;
	struct status *status;
	struct sleep_monitor *sleep;
	struct route_monitor *route;
	sd_event_source *sig_term, *sig_int, *sig_hup;
	sd_event_source *ready;    /* one-shot: READY=1 from inside the running loop */
	sd_event_source *reap;     /* deferred: free what has finished (never from a callback) */
	sd_event_source *deadline; /* retiring accounts are closed at this time */
	sd_event_source *gc;       /* while old generations wait for their dispatcher */
	bool all_idle_logged;
	bool stopping; /* SIGTERM/SIGINT: logging out */
	bool stop;     /* leave the loop */
	bool freeing;
};

static void manager_schedule_reap(struct manager *m);

/* ---- generations ------------------------------------------------------------------------ */

static struct generation *generation_free(struct generation *g)
{
	if (!g)
		return NULL;
	dispatch_free(g->dispatch);
	config_free(g->config);
	return mfree(g);
}

static void manager_changed(void *userdata);

/* One mailbox of the account got through again: the others waiting out the same outage go
 * now (the gate still paces them) instead of sitting out a backoff drawn while it lasted. */
static void manager_recovered(void *userdata, const char *account)
{
	struct manager *m = userdata;

	for (size_t i = 0; i < m->n_accounts; i++)
		if (streq(account_name(m->accounts[i]), account))
			account_retry_now(m->accounts[i]);
}

/* The marker borrows the current accounts' credentials through this, each time a request
 * starts, so a reload is picked up. */
static int manager_marker_lookup(void *userdata, const char *name, struct marker_account *ret)
{
	struct manager *m = userdata;

	for (size_t i = 0; i < m->n_accounts; i++)
		if (streq(account_name(m->accounts[i]), name)) {
			*ret = (struct marker_account){ account_config(m->accounts[i]),
							account_password(m->accounts[i]) };
			return 0;
		}
	return -ENOENT;
}

static int manager_mark_seen(void *userdata, const struct mail_event *e)
{
	struct manager *m = userdata;

	return m->marker ? marker_mark_seen(m->marker, e) : -ESHUTDOWN;
}

/* Takes config, also on failure. */
static int generation_new(struct manager *m, struct config *config, struct generation **ret)
{
	struct generation *g = calloc(1, sizeof(*g));
	int r;

	if (!g) {
		config_free(config);
		return -ENOMEM;
	}
	g->config = config;
	r = dispatch_new(m->event, config, manager_mark_seen, m, &g->dispatch);
	if (r < 0) {
		generation_free(g);
		return r;
	}
	g->ctx = (struct watch_context){
		.event = m->event,
		.resolver = m->resolver,
		.state_dir = config->state_dir,
		.dispatch = g->dispatch,
		.gate = m->gate,
		.changed = manager_changed,
		.recovered = manager_recovered,
		.userdata = m,
	};
	*ret = g;
	return 0;
}

static bool generation_owns(const struct generation *g, const struct account *a)
{
	const struct config_account *cfg = account_config(a);

	return cfg >= g->config->accounts && cfg < g->config->accounts + g->config->n_accounts;
}

static bool generation_in_use(const struct manager *m, const struct generation *g)
{
	if (!dispatch_is_idle(g->dispatch))
		return true;
	for (size_t i = 0; i < m->n_accounts; i++)
		if (generation_owns(g, m->accounts[i]))
			return true;
	for (size_t i = 0; i < m->n_retiring; i++)
		if (generation_owns(g, m->retiring[i]))
			return true;
	return false;
}

static void manager_gc_generations(struct manager *m)
{
	for (struct generation **i = &m->old; *i;) {
		struct generation *g = *i;
		if (generation_in_use(m, g)) {
			i = &g->next;
			continue;
		}
		*i = g->next;
		log_debug("%s: an earlier configuration is no longer used, freeing it",
			  g->config->path);
		generation_free(g);
	}
	if (m->gc)
		sd_event_source_set_enabled(m->gc, m->old ? SD_EVENT_ON : SD_EVENT_OFF);
}

/* An old dispatcher may still hold events of the account's watches: they must not be
 * reported back to freed watches. */
static void manager_account_free(struct manager *m, struct account *a)
{
	for (struct generation *g = m->old; g; g = g->next)
		account_forget(a, g->dispatch);
	account_free(a);
}

/* ---- status ----------------------------------------------------------------------------- */

static size_t manager_count(const struct manager *m, size_t (*count)(const struct account *))
{
	size_t n = 0;

	for (size_t i = 0; i < m->n_accounts; i++)
		n += count(m->accounts[i]);
	return n;
}

static void manager_collect(void *userdata, struct status_counts *c)
{
	struct manager *m = userdata;

	c->mailboxes = manager_count(m, account_n_watches);
	c->idle = manager_count(m, account_n_idle);
	for (size_t i = 0; i < m->n_accounts; i++) {
		enum backoff_class cls = BACKOFF_RETRY_NOW;
		const char *why = account_problem(m->accounts[i], &cls);

		c->last_mail = MAX(c->last_mail, account_last_mail(m->accounts[i]));
		if (!why)
			continue;
		if (c->accounts_failing++ == 0) {
			c->reason = why;
			c->reason_class = cls;
		}
	}
	if (m->stopping)
		c->phase = "shutting down";
}

/* Called by watches whenever something a status line shows has changed. */
static void manager_changed(void *userdata)
{
	struct manager *m = userdata;
	size_t total, idle;

	if (m->freeing)
		return;
	if (m->n_retiring > 0 || m->stopping)
		manager_schedule_reap(m);
	if (m->stopping)
		return;
	status_changed(m->status);
	total = manager_count(m, account_n_watches);
	idle = manager_count(m, account_n_idle);
	if (idle == total && !m->all_idle_logged) {
		log_info("all %zu mailbox%s idle", total, total == 1 ? "" : "es");
		m->all_idle_logged = true;
	} else if (idle < total) {
		m->all_idle_logged = false;
	}
}

/* ---- retiring accounts and shutting down ---------------------------------------------- */

static bool manager_drained(const struct manager *m)
{
	if (m->n_retiring > 0)
		return false;
	if (!dispatch_is_idle(m->gen->dispatch))
		return false;
	for (const struct generation *g = m->old; g; g = g->next)
		if (!dispatch_is_idle(g->dispatch))
			return false;
	return true;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct manager *m = userdata;

	if (m->n_retiring > 0)
		log_notice("%zu account%s did not finish logging out in time; closing", m->n_retiring,
			   m->n_retiring == 1 ? "" : "s");
	for (size_t i = 0; i < m->n_retiring; i++)
		manager_account_free(m, m->retiring[i]);
	m->n_retiring = 0;
	m->deadline = sd_event_source_disable_unref(m->deadline);
	if (m->stopping) {
		if (!manager_drained(m))
			log_notice("events still on their way to the sinks are dropped; they are "
				   "reported again at the next start");
		m->stop = true;
	}
	manager_gc_generations(m);
	return 0;
}

static void manager_arm_deadline(struct manager *m)
{
	int r;

	m->deadline = sd_event_source_disable_unref(m->deadline);
	r = sd_event_add_time_relative(m->event, &m->deadline, CLOCK_MONOTONIC, LOGOUT_DEADLINE,
				       10 * USEC_PER_MSEC, on_deadline, m);
	/* sd-event dispatches one source per iteration, and every iteration polls again: with
	 * thousands of connections answering LOGOUT at once, a deadline of equal priority waited
	 * behind all of them (4,000 connections took 10 s to stop). It must cut in. */
	if (r < 0) {
		log_debug_errno(r, "Cannot arm the logout deadline: %m, closing at once");
		return;
	}
	(void)sd_event_source_set_priority(m->deadline, SD_EVENT_PRIORITY_IMPORTANT);
}

static int on_reap(sd_event_source *s, void *userdata)
{
	struct manager *m = userdata;
	size_t kept = 0;

	for (size_t i = 0; i < m->n_retiring; i++) {
		if (account_is_stopped(m->retiring[i])) {
			log_debug("%s: logged out", account_name(m->retiring[i]));
			manager_account_free(m, m->retiring[i]);
		} else {
			m->retiring[kept++] = m->retiring[i];
		}
	}
	m->n_retiring = kept;
	/* While stopping, the deadline also ends a wait for the dispatcher. */
	if (kept == 0 && !m->stopping)
		m->deadline = sd_event_source_disable_unref(m->deadline);
	manager_gc_generations(m);
	if (m->stopping && manager_drained(m))
		m->stop = true;
	return 0;
}

static void manager_schedule_reap(struct manager *m)
{
	if (m->reap)
		sd_event_source_set_enabled(m->reap, SD_EVENT_ONESHOT);
}

static int manager_retire(struct manager *m, struct account *a)
{
	struct account **v = reallocarray(m->retiring, m->n_retiring + 1, sizeof(*v));

	if (!v) {
		manager_account_free(m, a); /* no polite goodbye without memory */
		return -ENOMEM;
	}
	m->retiring = v;
	m->retiring[m->n_retiring++] = a;
	account_stop(a);
	if (!m->deadline)
		manager_arm_deadline(m);
	manager_schedule_reap(m);
	return 0;
}

static void manager_begin_stop(struct manager *m)
{
	m->stopping = true;
	status_send_now(m->status, "STOPPING=1");
	for (size_t i = 0; i < m->n_accounts; i++)
		manager_retire(m, m->accounts[i]);
	m->n_accounts = 0;
	manager_arm_deadline(m); /* the whole goodbye, sinks included, gets this long */
	manager_schedule_reap(m);
}

static int on_gc(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct manager *m = userdata;

	manager_gc_generations(m);
	if (m->old)
		sd_event_source_set_time_relative(s, GC_INTERVAL);
	return 0;
}

/* ---- suspend, resume and network changes ------------------------------------------------ */

static void manager_probe_all(void *userdata)
{
	struct manager *m = userdata;

	if (m->stopping)
		return;
	for (size_t i = 0; i < m->n_accounts; i++)
		account_probe(m->accounts[i]);
}

/* ---- reload ----------------------------------------------------------------------------- */

static struct account *manager_find_account(const struct manager *m, const char *name)
{
	for (size_t i = 0; i < m->n_accounts; i++)
		if (streq(account_name(m->accounts[i]), name))
			return m->accounts[i];
	return NULL;
}

/* An account keeps its connections when nothing it connects or watches with changed. */
static struct account *manager_reusable(const struct manager *m, const struct config *c,
					const struct config_account *cfg)
{
	struct account *a = manager_find_account(m, cfg->name);

	if (!a || !streq(m->gen->config->state_dir, c->state_dir))
		return NULL;
	return config_account_equal(account_config(a), cfg) ? a : NULL;
}

struct reload_plan {
	struct generation *gen;
	struct account **accounts; /* one per section of gen->config: kept or new */
	bool *kept;
	size_t n_built;
};

static void reload_plan_undo(struct manager *m, struct reload_plan *p)
{
	for (size_t i = 0; i < p->n_built; i++)
		if (!p->kept[i])
			account_free(p->accounts[i]);
	free(p->accounts);
	free(p->kept);
	generation_free(p->gen);
}

/* Everything that can fail happens here, before anything running is touched: the new
 * sinks, the new accounts (with their passwords fetched). */
static int reload_build(struct manager *m, struct reload_plan *p)
{
	const struct config *c = p->gen->config;
	int r;

	p->accounts = calloc(c->n_accounts, sizeof(*p->accounts));
	p->kept = calloc(c->n_accounts, sizeof(*p->kept));
	if ((!p->accounts || !p->kept) && c->n_accounts > 0)
		return -ENOMEM;
	for (; p->n_built < c->n_accounts; p->n_built++) {
		const struct config_account *cfg = &c->accounts[p->n_built];
		struct account *a = manager_reusable(m, c, cfg);

		if (a) {
			p->accounts[p->n_built] = a;
			p->kept[p->n_built] = true;
			continue;
		}
		r = account_new(&p->gen->ctx, c, cfg, &p->accounts[p->n_built]);
		if (r < 0)
			return r; /* logged by the account */
	}
	return 0;
}

static bool plan_keeps(const struct reload_plan *p, const struct account *a)
{
	for (size_t i = 0; i < p->n_built; i++)
		if (p->kept[i] && p->accounts[i] == a)
			return true;
	return false;
}

/* Nothing here fails but the goodbye to a retired account. */
static void reload_commit(struct manager *m, struct reload_plan *p)
{
	const struct config *c = p->gen->config;
	size_t kept = 0, added = 0, changed = 0, removed = 0;

	for (size_t i = 0; i < p->n_built; i++) {
		if (p->kept[i])
			kept++;
		else if (!manager_find_account(m, c->accounts[i].name))
			added++;
	}
	for (size_t i = 0; i < m->n_accounts; i++) {
		struct account *a = m->accounts[i];
		if (plan_keeps(p, a))
			continue;
		if (config_find_account(c, account_name(a))) {
			log_info("%s: settings changed, reconnecting", account_name(a));
			changed++;
		} else {
			log_info("%s: removed, logging out", account_name(a));
			removed++;
		}
		manager_retire(m, a);
	}
	if (c->max_connecting != m->gen->config->max_connecting)
		log_notice("%s: max_connecting takes effect at the next start", c->path);
	free(m->accounts);
	m->accounts = TAKE_PTR(p->accounts);
	m->n_accounts = p->n_built;
	m->gen->next = m->old;
	m->old = m->gen;
	m->gen = TAKE_PTR(p->gen);
	/* Everything alive now routes its events to the new sinks. */
	for (size_t i = 0; i < m->n_accounts; i++)
		account_set_context(m->accounts[i], &m->gen->ctx);
	for (size_t i = 0; i < m->n_retiring; i++)
		account_set_context(m->retiring[i], &m->gen->ctx);
	for (size_t i = 0; i < m->n_accounts; i++)
		if (!p->kept[i])
			account_start(m->accounts[i]);
	free(p->kept);
	log_info("reloaded %s: %zu account%s kept, %zu restarted, %zu added, %zu removed",
		 c->path, kept, kept == 1 ? "" : "s", changed, added, removed);
	sd_event_source_set_enabled(m->gc, SD_EVENT_ON);
}

static void manager_reload(struct manager *m)
{
	_cleanup_free_ char *error = NULL, *extra = NULL;
	struct reload_plan p = {};
	struct config *config = NULL;
	int r;

	if (asprintf(&extra, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
		     (uint64_t)now_usec(CLOCK_MONOTONIC)) < 0)
		extra = NULL;
	status_send_now(m->status, extra ? extra : "RELOADING=1");
	log_info("reloading %s", m->gen->config->path);
	r = config_parse(m->gen->config->path, &config, &error);
	if (r < 0) {
		log_config_error(error ? error : strerror(-r));
		log_error("reload failed; keeping the running configuration");
		goto done;
	}
	r = generation_new(m, config, &p.gen);
	if (r >= 0)
		r = reload_build(m, &p);
	if (r < 0) {
		if (r == -ENOMEM)
			log_oom();
		log_error("reload failed; keeping the running configuration");
		reload_plan_undo(m, &p);
		goto done;
	}
	reload_commit(m, &p);
done:
	m->all_idle_logged = false;
	status_send_now(m->status, "READY=1");
	manager_changed(m);
}

/* ---- signals and start-up --------------------------------------------------------------- */

static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct manager *m = userdata;

	if (m->stopping) {
		log_info("received %s again, closing at once", strsignal((int)si->ssi_signo));
		m->stop = true;
		return 0;
	}
	log_info("received %s, shutting down", strsignal((int)si->ssi_signo));
	/* Not sd_event_exit(): a finished loop never runs the deferred frees that objects
	 * released in this very iteration are waiting for (see manager_free). The loop runs on
	 * until every server has answered LOGOUT (or the deadline passed). */
	manager_begin_stop(m);
	return 0;
}

static int on_hangup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct manager *m = userdata;

	if (!m->stopping)
		manager_reload(m);
	return 0;
}

static int on_ready(sd_event_source *s, void *userdata)
{
	struct manager *m = userdata;

	log_info("ready: watching %zu mailbox%s in %zu account%s",
		 manager_count(m, account_n_watches),
		 manager_count(m, account_n_watches) == 1 ? "" : "es", m->n_accounts,
		 m->n_accounts == 1 ? "" : "s");
	status_send_now(m->status, "READY=1");
	manager_changed(m);
	m->ready = sd_event_source_disable_unref(m->ready);
	return 0;
}

static int manager_add_signals(struct manager *m)
{
	sigset_t mask;
	int r;

	/* sd-event delivers signals through a signalfd, which needs them blocked. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD); /* sd-event reaps the exec sink's children */
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	r = sd_event_add_signal(m->event, &m->sig_term, SIGTERM, on_terminate, m);
	if (r >= 0)
		r = sd_event_add_signal(m->event, &m->sig_int, SIGINT, on_terminate, m);
	if (r >= 0)
		r = sd_event_add_signal(m->event, &m->sig_hup, SIGHUP, on_hangup, m);
	return r;
}

static int manager_add_sources(struct manager *m)
{
	int r;

	r = manager_add_signals(m);
	if (r >= 0)
		r = sd_event_add_defer(m->event, &m->ready, on_ready, m);
	if (r >= 0)
		r = sd_event_add_defer(m->event, &m->reap, on_reap, m);
	if (r >= 0)
		r = sd_event_source_set_enabled(m->reap, SD_EVENT_OFF);
	if (r >= 0)
		r = sd_event_add_time_relative(m->event, &m->gc, CLOCK_MONOTONIC, GC_INTERVAL,
					       100 * USEC_PER_MSEC, on_gc, m);
	if (r >= 0)
		r = sd_event_source_set_enabled(m->gc, SD_EVENT_OFF);
	if (r >= 0)
		r = status_new(m->event, STATUS_INTERVAL, manager_collect, m, &m->status);
	return r;
}

/* Last: they say so when there is no system bus or no netlink, which is only worth saying
 * for a start-up that succeeds. */
static int manager_add_monitors(struct manager *m)
{
	int r = sleep_monitor_new(m->event, manager_probe_all, m, &m->sleep);

	if (r >= 0)
		r = route_monitor_new(m->event, ROUTE_DEBOUNCE, manager_probe_all, m, &m->route);
	return r;
}

static struct manager *manager_free(struct manager *m)
{
	if (!m)
		return NULL;
	m->freeing = true;
	/* The manager's own sources go first: draining the loop below must not announce
	 * readiness for a start-up that failed, nor read accounts that are gone. */
	m->ready = sd_event_source_disable_unref(m->ready);
	m->reap = sd_event_source_disable_unref(m->reap);
	m->deadline = sd_event_source_disable_unref(m->deadline);
	m->gc = sd_event_source_disable_unref(m->gc);
	m->sig_term = sd_event_source_disable_unref(m->sig_term);
	m->sig_int = sd_event_source_disable_unref(m->sig_int);
	m->sig_hup = sd_event_source_disable_unref(m->sig_hup);
	m->status = status_free(m->status);
	m->sleep = sleep_monitor_free(m->sleep);
	m->route = route_monitor_free(m->route);
	for (size_t i = 0; i < m->n_accounts; i++)
		manager_account_free(m, m->accounts[i]);
	for (size_t i = 0; i < m->n_retiring; i++)
		manager_account_free(m, m->retiring[i]);
	free(m->accounts);
	free(m->retiring);
	m->n_accounts = m->n_retiring = 0;
	m->marker = marker_free(m->marker);
	/* Links released by the watches are freed from the loop: let it run dry. */
	while (m->event && sd_event_run(m->event, 0) > 0)
		;
	while (m->old) {
		struct generation *g = m->old;
		m->old = g->next;
		generation_free(g);
	}
	generation_free(m->gen);
	gate_free(m->gate);
	resolver_free(m->resolver);
	sd_event_unref(m->event);
	return mfree(m);
}

static int manager_add_accounts(struct manager *m)
{
	const struct config *c = m->gen->config;

	m->accounts = calloc(c->n_accounts, sizeof(struct account *));
	if (!m->accounts && c->n_accounts > 0)
		return log_oom();
	for (size_t i = 0; i < c->n_accounts; i++) {
		int r = account_new(&m->gen->ctx, c, &c->accounts[i], &m->accounts[m->n_accounts]);
		if (r < 0)
			return r;
		m->n_accounts++;
	}
	return 0;
}

static int manager_new(struct config *config, struct manager **ret)
{
	struct manager *m = calloc(1, sizeof(*m));
	int r;

	if (!m) {
		config_free(config);
		return log_oom();
	}
	r = sd_event_new(&m->event);
	if (r < 0) {
		config_free(config);
		goto fail;
	}
	/* Pings the service manager from the loop itself, so a wedged loop is restarted. */
	sd_event_set_watchdog(m->event, true);
	m->resolver = resolver_new(m->event);
	m->gate = gate_new(m->event, config->max_connecting);
	if (!m->resolver || !m->gate ||
	    marker_new(m->event, m->resolver, manager_marker_lookup, m, &m->marker) < 0) {
		config_free(config);
		r = -ENOMEM;
		goto fail;
	}
	r = manager_add_sources(m);
	if (r < 0) {
		config_free(config);
		goto fail;
	}
	r = generation_new(m, config, &m->gen);
	if (r < 0) {
		manager_free(m);
		return log_error_errno(r, "Cannot set up the sinks: %m");
	}
	r = manager_add_accounts(m);
	if (r < 0) {
		manager_free(m);
		return r; /* logged by the account */
	}
	r = manager_add_monitors(m);
	if (r < 0)
		goto fail;
	*ret = m;
	return 0;
fail:
	manager_free(m);
	return log_error_errno(r, "Cannot set up the event loop: %m");
}

int manager_main(struct config *config, const char *config_arg)
{
	struct manager *m = NULL;
	int r;

	r = manager_new(config, &m);
	if (r < 0)
		return r == -ENOMEM ? EX_OSERR : EX_CONFIG;
	log_info("imapidled %s starting with %s", VERSION, m->gen->config->path);
	for (size_t i = 0; i < m->n_accounts; i++)
		account_start(m->accounts[i]);
	r = 0;
	while (!m->stop && r >= 0)
		r = sd_event_run(m->event, UINT64_MAX);
	manager_free(m);
	if (r < 0) {
		log_error_errno(r, "Event loop failed: %m");
		return EX_SOFTWARE;
	}
	return EX_OK;
}

int manager_check_secrets(const struct config *c)
{
	int ret = 0;

	for (size_t i = 0; i < c->n_accounts; i++) {
		char *password = NULL;
		int r = account_fetch_password(c, &c->accounts[i], &password);

		if (r < 0 && ret == 0)
			ret = r;
		secret_free(password);
	}
	return ret;
}
