#include "account.h"

#include <stdio.h>

#include "dispatch.h"
#include "log.h"
#include "secret.h"

/* A password command gets this long; it may have to ask a keyring or a GPG agent. */
#define SECRET_TIMEOUT (30 * USEC_PER_SEC)

struct account {
	const struct config_account *cfg;
	char *password;
	struct watch **watches;
	size_t n_watches;
};

int account_fetch_password(const struct config *config, const struct config_account *cfg,
			   char **ret)
{
	_cleanup_free_ char *section = NULL, *error = NULL;
	char *secret = NULL;
	int r;

	if (cfg->password.kind == SECRET_NONE) {
		*ret = NULL;
		return 0;
	}
	if (asprintf(&section, "account %s", cfg->name) < 0)
		return log_oom();
	r = secret_fetch(&cfg->password, config->path, section, SECRET_TIMEOUT, &secret, &error);
	if (r < 0) {
		log_config_error(error ? error : "cannot fetch the password");
		return r;
	}
	*ret = secret;
	return 0;
}

int account_fetch_token(const struct config *config, const struct config_account *cfg,
			char **ret)
{
	_cleanup_free_ char *section = NULL, *error = NULL;
	struct secret_source src = {
		.kind = SECRET_COMMAND,
		.argv = cfg->oauth_token_command,
		.key = (char *)"oauth_token_command",
	};
	char *token = NULL;
	int r;

	if (!cfg->oauth_token_command) {
		*ret = NULL;
		return 0;
	}
	if (asprintf(&section, "account %s", cfg->name) < 0)
		return log_oom();
	r = secret_fetch(&src, config->path, section, SECRET_TIMEOUT, &token, &error);
	if (r < 0) {
		log_config_error(error ? error : "cannot fetch the OAuth token");
		return r;
	}
	*ret = token;
	return 0;
}

struct account *account_free(struct account *a)
{
	if (!a)
		return NULL;
	for (size_t i = 0; i < a->n_watches; i++)
		watch_free(a->watches[i]);
	free(a->watches);
	secret_free(a->password);
	return mfree(a);
}

int account_new(const struct watch_context *ctx, const struct config *config,
		const struct config_account *cfg, struct account **ret)
{
	struct account *a = calloc(1, sizeof(*a));
	size_t n = strv_length(cfg->mailboxes);
	int r;

	if (!a)
		return log_oom();
	a->cfg = cfg;
	a->watches = calloc(n, sizeof(struct watch *));
	if (!a->watches) {
		account_free(a);
		return log_oom();
	}
	r = account_fetch_password(config, cfg, &a->password);
	for (size_t i = 0; r >= 0 && i < n; i++) {
		r = watch_new(ctx, cfg, a->password, cfg->mailboxes[i], &a->watches[i]);
		if (r < 0)
			log_error_errno(r, "%s/%s: cannot set up: %m", cfg->name, cfg->mailboxes[i]);
		else
			a->n_watches++;
	}
	if (r < 0) {
		account_free(a);
		return r;
	}
	*ret = a;
	return 0;
}

void account_start(struct account *a)
{
	for (size_t i = 0; i < a->n_watches; i++)
		watch_start(a->watches[i]);
}

size_t account_n_watches(const struct account *a)
{
	return a->n_watches;
}

size_t account_n_idle(const struct account *a)
{
	size_t n = 0;

	for (size_t i = 0; i < a->n_watches; i++)
		n += watch_is_idle(a->watches[i]);
	return n;
}

const char *account_name(const struct account *a)
{
	return a->cfg->name;
}

const struct config_account *account_config(const struct account *a)
{
	return a->cfg;
}

const char *account_password(const struct account *a)
{
	return a->password;
}

void account_probe(struct account *a)
{
	for (size_t i = 0; i < a->n_watches; i++)
		watch_probe(a->watches[i]);
}

void account_retry_now(struct account *a)
{
	for (size_t i = 0; i < a->n_watches; i++)
		watch_retry_now(a->watches[i]);
}

void account_stop(struct account *a)
{
	for (size_t i = 0; i < a->n_watches; i++)
		watch_stop(a->watches[i]);
}

bool account_is_stopped(const struct account *a)
{
	for (size_t i = 0; i < a->n_watches; i++)
		if (!watch_is_stopped(a->watches[i]))
			return false;
	return true;
}

void account_set_context(struct account *a, const struct watch_context *ctx)
{
	for (size_t i = 0; i < a->n_watches; i++)
		watch_set_context(a->watches[i], ctx);
}

void account_forget(struct account *a, struct dispatch *d)
{
	for (size_t i = 0; i < a->n_watches; i++)
		dispatch_forget(d, a->watches[i]);
}

const char *account_problem(const struct account *a, enum backoff_class *ret_class)
{
	for (size_t i = 0; i < a->n_watches; i++) {
		const char *why = watch_problem(a->watches[i], ret_class);
		if (why)
			return why;
	}
	return NULL;
}

usec_t account_last_mail(const struct account *a)
{
	usec_t t = 0;

	for (size_t i = 0; i < a->n_watches; i++)
		t = MAX(t, watch_last_mail(a->watches[i]));
	return t;
}
