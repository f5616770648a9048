#include "manager.h"

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
#include "secret.h"
#include "watch.h"

struct manager {
	sd_event *event;
	struct resolver *resolver;
	struct dispatch *dispatch;
	struct gate *gate;
	struct marker *marker; /* the desktop's mark-read action */
	struct config *config;
	struct watch_context ctx;
	struct account **accounts;
	size_t n_accounts;
	sd_event_source *sig_term, *sig_int, *sig_hup;
	sd_event_source *ready; /* one-shot: READY=1 from inside the running loop */
	bool all_idle_logged;
	bool stop; /* SIGTERM/SIGINT: leave the loop */
};

static size_t manager_count(const struct manager *m, size_t (*count)(const struct account *))
{
	size_t n = 0;

	for (size_t i = 0; i < m->n_accounts; i++)
		n += count(m->accounts[i]);
	return n;
}

/* Called by watches whenever something a status line shows has changed. */
static void manager_changed(void *userdata)
{
	struct manager *m = userdata;
	size_t total = manager_count(m, account_n_watches);
	size_t idle = manager_count(m, account_n_idle);

	sd_notifyf(0, "STATUS=%zu/%zu mailboxes idle", idle, total);
	if (idle == total && !m->all_idle_logged) {
		log_info("all %zu mailbox%s idle", total, total == 1 ? "" : "es");
		m->all_idle_logged = true;
	} else if (idle < total) {
		m->all_idle_logged = false;
	}
}

/* The marker borrows the accounts' credentials through this, each time a request starts. */
static int manager_find_account(void *userdata, const char *name, struct marker_account *ret)
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

static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct manager *m = userdata;

	log_info("received %s, shutting down", strsignal((int)si->ssi_signo));
	sd_notify(0, "STOPPING=1");
	/* Not sd_event_exit(): a finished loop never runs the deferred frees that objects
	 * released in this very iteration are waiting for (see manager_free). */
	m->stop = true;
	return 0;
}

static int on_hangup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	log_notice("received SIGHUP: reloading is not supported yet, ignoring");
	return 0;
}

static int on_ready(sd_event_source *s, void *userdata)
{
	struct manager *m = userdata;

	log_info("ready: watching %zu mailbox%s in %zu account%s",
		 manager_count(m, account_n_watches),
		 manager_count(m, account_n_watches) == 1 ? "" : "es", m->n_accounts,
		 m->n_accounts == 1 ? "" : "s");
	sd_notify(0, "READY=1");
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

static struct manager *manager_free(struct manager *m)
{
	if (!m)
		return NULL;
	/* The manager's own sources go first: draining the loop below must not announce
	 * readiness for a start-up that failed. */
	m->ready = sd_event_source_disable_unref(m->ready);
	m->sig_term = sd_event_source_disable_unref(m->sig_term);
	m->sig_int = sd_event_source_disable_unref(m->sig_int);
	m->sig_hup = sd_event_source_disable_unref(m->sig_hup);
	for (size_t i = 0; i < m->n_accounts; i++)
		account_free(m->accounts[i]);
	free(m->accounts);
	m->n_accounts = 0;
	m->marker = marker_free(m->marker);
	/* Links released by the watches are freed from the loop: let it run dry. */
	while (m->event && sd_event_run(m->event, 0) > 0)
		;
	dispatch_free(m->dispatch);
	gate_free(m->gate);
	resolver_free(m->resolver);
	sd_event_unref(m->event);
	config_free(m->config);
	return mfree(m);
}

static int manager_add_accounts(struct manager *m)
{
	m->accounts = calloc(m->config->n_accounts, sizeof(struct account *));
	if (!m->accounts)
		return log_oom();
	for (size_t i = 0; i < m->config->n_accounts; i++) {
		int r = account_new(&m->ctx, m->config, &m->config->accounts[i],
				    &m->accounts[m->n_accounts]);
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
	m->config = config;
	r = sd_event_new(&m->event);
	if (r < 0)
		goto fail;
	/* Pings the service manager from the loop itself, so a wedged loop is restarted. */
	sd_event_set_watchdog(m->event, true);
	m->resolver = resolver_new(m->event);
	m->gate = gate_new(m->event, config->max_connecting);
	if (!m->resolver || !m->gate ||
	    marker_new(m->event, m->resolver, manager_find_account, m, &m->marker) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	m->ctx = (struct watch_context){
		.event = m->event,
		.resolver = m->resolver,
		.state_dir = config->state_dir,
		.gate = m->gate,
		.changed = manager_changed,
		.userdata = m,
	};
	r = manager_add_signals(m);
	if (r >= 0)
		r = sd_event_add_defer(m->event, &m->ready, on_ready, m);
	if (r < 0)
		goto fail;
	r = dispatch_new(m->event, config, manager_mark_seen, m, &m->dispatch);
	if (r < 0) {
		manager_free(m);
		return log_error_errno(r, "Cannot set up the sinks: %m");
	}
	m->ctx.dispatch = m->dispatch;
	r = manager_add_accounts(m);
	if (r < 0) {
		manager_free(m);
		return r; /* logged by the account */
	}
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
	log_info("imapidled %s starting with %s", VERSION, m->config->path);
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
