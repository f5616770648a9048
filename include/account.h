/* One [account] section at run time: its secret and one watch per mailbox. */
#pragma once

#include "config.h"
#include "watch.h"

struct account;
struct dispatch;

/* Fetches the password (logged and returned as an error when that fails) and builds the
 * watches; nothing connects before account_start(). cfg is borrowed and must outlive the
 * account. */
int account_new(const struct watch_context *ctx, const struct config *config,
		const struct config_account *cfg, struct account **ret);
struct account *account_free(struct account *a);

void account_start(struct account *a);
size_t account_n_watches(const struct account *a);
size_t account_n_idle(const struct account *a);
const char *account_name(const struct account *a);
/* Borrowed; valid until the account is freed. The password is NULL with OAuth only. */
const struct config_account *account_config(const struct account *a);
const char *account_password(const struct account *a);

/* Per watch; see watch.h. */
void account_probe(struct account *a);
void account_retry_now(struct account *a);
void account_stop(struct account *a);
bool account_is_stopped(const struct account *a);
void account_set_context(struct account *a, const struct watch_context *ctx);
/* The first watch's problem (see watch_problem), NULL when none has one. */
const char *account_problem(const struct account *a, enum backoff_class *ret_class);
usec_t account_last_mail(const struct account *a);

/* Events of this account's watches still queued in d (an older dispatcher, kept until it
 * drains) will not be reported back to them: call before account_free(). */
void account_forget(struct account *a, struct dispatch *d);

/* Fetch the account's OAuth token by running oauth_token_command now (blocking: for
 * `imapidled check`; the daemon runs it without blocking before each connect). NULL when the
 * account has no token command. Failures are printed once with the config place. */
int account_fetch_token(const struct config *config, const struct config_account *cfg,
			char **ret);

/* Fetch the account's password per its secret_source, or NULL when it uses OAuth only. */
int account_fetch_password(const struct config *config, const struct config_account *cfg,
			   char **ret);
