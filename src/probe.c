#include "probe.h"

#include <stdio.h>
#include <sysexits.h>
#include <systemd/sd-event.h>

#include "account.h"
#include "imap/parse.h"
#include "link.h"
#include "log.h"
#include "net/resolve.h"
#include "secret.h"

struct probe_account {
	struct probe *probe;
	const struct config_account *cfg;
	char *password;
	char *token; /* OAuth access token from oauth_token_command */
	struct link *link;
	char **listed;      /* selectable mailboxes the server listed */
	uint64_t caps;
	bool done;
	enum imap_failure failure;
	char *why;
};

struct probe {
	sd_event *event;
	struct resolver *resolver;
	struct probe_account *accounts;
	size_t n_accounts, n_done;
};

static void probe_listed(void *userdata, const char *mailbox, bool noselect)
{
	struct probe_account *a = userdata;

	if (!noselect && strv_length(a->listed) < 100000)
		strv_extend(&a->listed, mailbox);
}

static void probe_alert(void *userdata, const char *text)
{
	struct probe_account *a = userdata;

	printf("%s: ALERT from the server: %s\n", a->cfg->name, text);
}

static void probe_closed(void *userdata, enum imap_failure failure, int error, const char *why)
{
	struct probe_account *a = userdata;

	a->caps = link_capabilities(a->link);
	a->link = link_release(a->link);
	a->failure = failure;
	a->why = strdup(why ? why : "");
	a->done = true;
	a->probe->n_done++;
}

static const struct imap_session_ops probe_ops = {
	.listed = probe_listed,
	.alert = probe_alert,
	.closed = probe_closed,
};

static int probe_start(struct probe *p, const struct config *config, struct probe_account *a)
{
	const struct config_account *c = a->cfg;
	int r = account_fetch_password(config, c, &a->password);

	if (r >= 0)
		r = account_fetch_token(config, c, &a->token);
	if (r < 0)
		return r;
	struct conn_params cp;
	struct imap_session_params sp;

	link_params_from_account(c, c->name, IMAP_GOAL_PROBE, a->password, a->token, &cp, &sp);
	r = link_new(p->event, p->resolver, &cp, &sp, &probe_ops, a, &a->link);
	if (r < 0)
		return log_error_errno(r, "%s: cannot start connecting: %m", c->name);
	return 0;
}

static void print_capabilities(const struct probe_account *a)
{
	char buf[1024];

	printf("%s: capabilities: %s\n", a->cfg->name, imap_caps_to_string(a->caps, buf, sizeof(buf)));
}

/* Report one account; returns its exit code. */
static int probe_report(const struct probe_account *a)
{
	const char *name = a->cfg->name;
	int ret = EX_OK;

	if (a->failure != IMAP_FAIL_NONE) {
		printf("%s: FAILED: %s\n", name, a->why ? a->why : "unknown error");
		return a->failure == IMAP_FAIL_AUTH ? EX_NOPERM : EX_UNAVAILABLE;
	}
	printf("%s: logged in to %s:%u as %s\n", name, a->cfg->host, a->cfg->port,
	       a->cfg->username);
	print_capabilities(a);
	printf("%s: %zu mailboxes:", name, strv_length(a->listed));
	for (char **m = a->listed; m && *m; m++)
		printf(" \"%s\"", *m);
	printf("\n");
	for (char **w = a->cfg->mailboxes; w && *w; w++) {
		bool found = false;
		for (char **m = a->listed; m && *m && !found; m++)
			found = streq(*m, *w) || (strcasecmp(*w, "INBOX") == 0 &&
						   strcasecmp(*m, "INBOX") == 0);
		if (!found) {
			printf("%s: watched mailbox \"%s\" does not exist on the server\n", name,
			       *w);
			ret = EX_UNAVAILABLE;
		}
	}
	if (ret == EX_OK)
		printf("%s: OK\n", name);
	return ret;
}

static void probe_free(struct probe *p)
{
	for (size_t i = 0; i < p->n_accounts; i++) {
		link_release(p->accounts[i].link);
		secret_free(p->accounts[i].password);
		secret_free(p->accounts[i].token);
		strv_free(p->accounts[i].listed);
		free(p->accounts[i].why);
	}
	free(p->accounts);
	/* Let the deferred link releases run before the loop goes. */
	while (p->event && sd_event_run(p->event, 0) > 0)
		;
	resolver_free(p->resolver);
	sd_event_unref(p->event);
}

int probe_run(const struct config *config)
{
	struct probe p = {};
	int r, ret = EX_OK;

	r = sd_event_new(&p.event);
	if (r < 0)
		return log_error_errno(r, "Cannot create event loop: %m"), EX_OSERR;
	p.resolver = resolver_new(p.event);
	p.accounts = calloc(config->n_accounts, sizeof(*p.accounts));
	if (!p.resolver || !p.accounts) {
		probe_free(&p);
		return EX_OSERR;
	}
	p.n_accounts = config->n_accounts;
	for (size_t i = 0; i < p.n_accounts; i++) {
		p.accounts[i] = (struct probe_account){ .probe = &p, .cfg = &config->accounts[i] };
		if (probe_start(&p, config, &p.accounts[i]) < 0) {
			probe_free(&p);
			return EX_CONFIG;
		}
	}
	/* Run until every account answered; not sd_event_exit(), which would stop the loop
	 * before the links released in their callbacks are freed. */
	r = 0;
	while (r >= 0 && p.n_done < p.n_accounts)
		r = sd_event_run(p.event, UINT64_MAX);
	for (size_t i = 0; i < p.n_accounts; i++) {
		int k = probe_report(&p.accounts[i]);
		if (k != EX_OK && (ret == EX_OK || k == EX_NOPERM))
			ret = k;
	}
	probe_free(&p);
	return r < 0 ? EX_SOFTWARE : ret;
}
