/* Configuration: INI (libinih) parsed and validated into typed structs.
 *
 * Pure: config_parse() reads a file and returns a struct config, or fails with one
 * human-readable error naming file, line, section and key:
 *     config:12: [account work] port: expected 1-65535, got "99999"
 * Secrets are not resolved here (see secret.h); the config only records where they come
 * from, so that `imapidled check` can validate a config without running commands.
 *
 * Ownership: struct config owns every string and array below; config_free() frees it all. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

enum tls_mode {
	TLS_IMPLICIT, /* TLS from the first byte (RFC 8314), port 993 */
	TLS_STARTTLS, /* plain greeting, then STARTTLS, port 143 */
	TLS_NONE,     /* plaintext; only with allow_plaintext = yes */
};

enum auth_mech {
	AUTH_AUTO, /* the best the server offers: PLAIN, then LOGIN */
	AUTH_LOGIN,
	AUTH_PLAIN,
	AUTH_XOAUTH2,
	AUTH_OAUTHBEARER,
};

enum secret_kind {
	SECRET_NONE,
	SECRET_VALUE,      /* value: the secret itself */
	SECRET_FILE,       /* value: a path; first line of the file */
	SECRET_COMMAND,    /* argv: run without a shell, first line of stdout */
	SECRET_CREDENTIAL, /* value: a name under $CREDENTIALS_DIRECTORY */
};

/* Where a secret comes from, and where in the config that was said (for errors). */
struct secret_source {
	enum secret_kind kind;
	char *value;
	char **argv;
	char *key;     /* the config key that set it, e.g. "password_file" */
	unsigned line; /* its line in the config file */
};

enum sink_type {
	SINK_DESKTOP,
	SINK_WEBHOOK,
	SINK_EXEC,
};

/* One entry of `sinks = desktop, webhook:crm, exec:sync`. */
struct sink_ref {
	enum sink_type type;
	char *name; /* NULL for desktop */
};

enum urgency {
	URGENCY_LOW = 0,
	URGENCY_NORMAL = 1,
	URGENCY_CRITICAL = 2,
};

struct config_account {
	char *name;
	unsigned line; /* line of the section header */

	char *host;
	uint16_t port;
	enum tls_mode tls;
	bool allow_plaintext;
	char *tls_ca_file;
	bool has_fingerprint;
	uint8_t tls_fingerprint[32]; /* SHA-256 of the server certificate (DER) */

	char *username;
	struct secret_source password;
	enum auth_mech auth;
	char **oauth_token_command; /* argv */
	bool send_id;               /* send ID (RFC 2971) after TLS */

	char **mailboxes; /* NULL-terminated, at least one ("INBOX" by default) */
	struct sink_ref *sinks;
	size_t n_sinks;
	unsigned sinks_line; /* line of the `sinks` key, 0 when absent */

	bool skip_seen;
	unsigned catch_up;
	usec_t idle_refresh;    /* re-issue IDLE after this long */
	usec_t poll_interval;   /* for servers without IDLE */
	usec_t connect_timeout; /* TCP + TLS + greeting */
	usec_t reply_timeout;   /* DONE / NOOP without an answer: the link is dead */
};

struct config_desktop {
	bool present; /* a [desktop] section exists */
	unsigned line;
	char **on_click; /* argv, or NULL */
	bool action_open;
	bool action_mark_read;
	enum urgency urgency;
	char *desktop_entry;
	usec_t expire_timeout;     /* 0: never expire, USEC_INFINITY: server default */
	unsigned summary_threshold; /* more messages than this in summary_window: one summary */
	usec_t summary_window;
};

struct config_webhook {
	char *name;
	unsigned line;
	char *url;
	struct secret_source secret;
	char **headers; /* "Name: value" lines */
	char *tls_ca_file;
	usec_t timeout;
	usec_t max_retry_age;
	unsigned max_in_flight;
	uint64_t spool_max_bytes;
	bool batch;
};

struct config_exec {
	char *name;
	unsigned line;
	char **command;      /* argv; with shell = yes, {"/bin/sh", "-c", text} */
	char **post_command; /* argv or NULL */
	bool shell;
	usec_t timeout;
};

/* [mailbox ACCOUNT/MAILBOX]: where one watched mailbox's events go, instead of its
 * account's sinks. */
struct config_mailbox {
	char *account, *mailbox;
	unsigned line;
	struct sink_ref *sinks;
	size_t n_sinks;
	unsigned sinks_line;
};

struct config {
	char *path;
	char *state_dir; /* expanded, absolute */
	int log_level;   /* LOG_* */
	unsigned max_connecting; /* connection attempts in flight at once, all accounts */

	struct config_account *accounts;
	size_t n_accounts;
	struct config_desktop desktop;
	struct config_webhook *webhooks;
	size_t n_webhooks;
	struct config_exec *execs;
	size_t n_execs;
	struct config_mailbox *mailboxes;
	size_t n_mailboxes;
};

/* Parse and validate the file at path. On failure returns a negative errno and, if
 * ret_error is not NULL, an allocated one-line message such as
 * "config:12: [account work] port: expected 1-65535, got \"99999\"" (the file name as given). */
int config_parse(const char *path, struct config **ret, char **ret_error);

/* The file to use: explicit (if not NULL), else $XDG_CONFIG_HOME/imapidled/config
 * (~/.config when unset), else /etc/imapidled/config. Returns an allocated path, or NULL
 * with -ENOENT when none exists (ret_tried then lists what was looked at). */
int config_find(const char *explicit_path, char **ret_path, char **ret_tried);

struct config *config_free(struct config *c);
static inline void config_freep(struct config **c)
{
	config_free(*c);
}
#define _cleanup_config_free_ _cleanup_(config_freep)

/* Find by name; NULL when absent. */
const struct config_account *config_find_account(const struct config *c, const char *name);
const struct config_webhook *config_find_webhook(const struct config *c, const char *name);
const struct config_exec *config_find_exec(const struct config *c, const char *name);

/* The sinks for one mailbox of an account: its [mailbox] section's, else the account's.
 * Looked up by name, so it works with whichever config is current. False when the account
 * is not in c. */
bool config_mailbox_sinks(const struct config *c, const char *account, const char *mailbox,
			  const struct sink_ref **ret, size_t *ret_n);

/* True when any account routes events to a sink of this type. */
bool config_uses_sink(const struct config *c, enum sink_type type);

/* True when two account configs would connect and watch identically (for reload): every
 * field is compared except line numbers, so moving a section does not reconnect it. */
bool config_account_equal(const struct config_account *a, const struct config_account *b);

/* "30s", "20m", "24h", "1h30m", "500ms", or a bare number of seconds. Units: ms s m h d;
 * white space between parts is allowed. -EINVAL when malformed, -ERANGE on overflow. */
int config_parse_duration(const char *s, usec_t *ret);

/* "yes"/"no", "true"/"false", "on"/"off", "1"/"0"; -EINVAL otherwise. */
int config_parse_bool(const char *s, bool *ret);

/* A byte count with an optional K, M or G suffix (powers of 1024). */
int config_parse_size(const char *s, uint64_t *ret);

/* "sha256:" and 64 hex digits, colons between byte pairs optional, any case. */
int config_parse_fingerprint(const char *s, uint8_t ret[32]);

/* Split a command line into argv the way a user expects from a shell, without a shell:
 * white space separates words, '...' groups literally, "..." groups with \" and \\ as
 * escapes, a backslash outside quotes escapes any character. No expansion of any kind.
 * -EINVAL for an unterminated quote or a trailing backslash, -ENODATA for no words. */
int config_split_command(const char *s, char ***ret_argv);

/* Expand a leading "~" or "~/" to $HOME. "~user" is -EINVAL, unset $HOME -ENXIO. */
int config_expand_path(const char *path, char **ret);

const char *tls_mode_to_string(enum tls_mode m);
const char *auth_mech_to_string(enum auth_mech m);
