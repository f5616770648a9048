/* Fuzz the configuration parser: the whole input as a config file through config_parse(),
 * and every line's value (the text after the first "=", or the whole line) through the value
 * parsers config_parse_duration/_size/_fingerprint/_bool and config_split_command.
 *
 * Beyond "no crash, no leak", it checks the contracts of config.h: a parsed config has at
 * least one account, every account has a host, a user name, a port, a mailbox and a way to
 * log in, every sink reference resolves, the state directory is absolute; a failure comes
 * with a message that starts with the file's name; a fingerprint reads back the same in
 * another spelling; a command without quotes or backslashes splits like white space does.
 *
 * config_parse() runs no command and fetches no secret (secret.c does that, later); it only
 * open()s the files that tls_ca_file names, to check they are readable, and reads $HOME
 * for "~" and $XDG_STATE_HOME. So that the fuzzer cannot touch anything real:
 *   - $HOME and $XDG_STATE_HOME point to a directory that does not exist;
 *   - an input that names anything under dev/, proc/, sys/ or run/ is not given to
 *     config_parse() (opening a device can have side effects, opening a FIFO blocks).
 * The input reaches the parser as /proc/self/fd/N of a memfd, rewritten for every run. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

#define CHECK(x)                                                                 \
	do {                                                                     \
		if (!(x)) {                                                      \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,   \
				__LINE__, #x);                                   \
			abort();                                                 \
		}                                                                \
	} while (0)

#define INPUT_MAX (64 * 1024) /* a config is a few KiB; longer only slows the search */
#define LINES_MAX 256

#define HOME "/nonexistent/imapidled-fuzz-config"

static int memfd = -1;
static char path[64];

static void init(void)
{
	if (memfd >= 0)
		return;
	CHECK(setenv("HOME", HOME, 1) == 0);
	CHECK(setenv("XDG_STATE_HOME", HOME "/state", 1) == 0);
	unsetenv("CREDENTIALS_DIRECTORY");
	memfd = memfd_create("fuzz-config", MFD_CLOEXEC);
	CHECK(memfd >= 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
}

static bool names_system_files(const char *data, size_t size)
{
	static const char *const dirs[] = { "dev/", "proc/", "sys/", "run/" };

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (memmem(data, size, dirs[i], strlen(dirs[i])))
			return true;
	return false;
}

static void check_account(const struct config *c, const struct config_account *a)
{
	CHECK(a->name && a->name[0] && !strchr(a->name, '/'));
	CHECK(a->host && a->host[0] && !strpbrk(a->host, " \t"));
	CHECK(a->username && a->username[0]);
	CHECK(a->port > 0);
	CHECK(a->tls != TLS_NONE || a->allow_plaintext);
	CHECK(a->mailboxes && a->mailboxes[0]);
	if (a->auth == AUTH_XOAUTH2 || a->auth == AUTH_OAUTHBEARER)
		CHECK(a->oauth_token_command && a->oauth_token_command[0]);
	else if (a->auth == AUTH_AUTO)
		/* auto logs in with OAuth when a token command is the only secret */
		CHECK(a->password.kind != SECRET_NONE || a->oauth_token_command);
	else
		CHECK(a->password.kind != SECRET_NONE);
	CHECK(a->password.kind == SECRET_NONE || a->password.key);
	CHECK(a->idle_refresh >= 10 * USEC_PER_SEC && a->idle_refresh <= 29 * USEC_PER_MINUTE);
	for (size_t i = 0; i < a->n_sinks; i++) {
		const struct sink_ref *s = &a->sinks[i];

		if (s->type == SINK_DESKTOP)
			CHECK(!s->name);
		else if (s->type == SINK_WEBHOOK)
			CHECK(config_find_webhook(c, s->name));
		else
			CHECK(config_find_exec(c, s->name));
	}
	CHECK(config_find_account(c, a->name) == a);
	CHECK(config_account_equal(a, a));
}

/* A [mailbox ACCOUNT/MAILBOX] section names a watched mailbox and sinks that exist. */
static void check_mailbox_section(const struct config *c, const struct config_mailbox *m)
{
	const struct config_account *a = config_find_account(c, m->account);
	const struct sink_ref *sinks;
	size_t n;

	CHECK(a && m->mailbox && m->mailbox[0] && m->n_sinks > 0);
	CHECK(config_mailbox_sinks(c, m->account, m->mailbox, &sinks, &n));
	CHECK(sinks == m->sinks && n == m->n_sinks);
	for (size_t i = 0; i < n; i++)
		CHECK(sinks[i].type == SINK_DESKTOP ||
		      (sinks[i].type == SINK_WEBHOOK && config_find_webhook(c, sinks[i].name)) ||
		      (sinks[i].type == SINK_EXEC && config_find_exec(c, sinks[i].name)));
}

static void check_config(const struct config *c)
{
	CHECK(c->path && strcmp(c->path, path) == 0);
	CHECK(c->state_dir && c->state_dir[0] == '/');
	CHECK(c->max_connecting >= 1 && c->max_connecting <= 10000);
	CHECK(c->n_accounts > 0);
	for (size_t i = 0; i < c->n_accounts; i++)
		check_account(c, &c->accounts[i]);
	for (size_t i = 0; i < c->n_mailboxes; i++)
		check_mailbox_section(c, &c->mailboxes[i]);
	for (size_t i = 0; i < c->n_webhooks; i++) {
		const struct config_webhook *w = &c->webhooks[i];

		CHECK(w->url && w->spool_max_bytes > 0);
		CHECK(w->max_in_flight >= 1 && w->max_in_flight <= 1000);
		CHECK(config_find_webhook(c, w->name) == w);
	}
	for (size_t i = 0; i < c->n_execs; i++) {
		const struct config_exec *e = &c->execs[i];

		CHECK(e->command && e->command[0]);
		CHECK(!e->shell || strv_length(e->command) == 3);
		CHECK(config_find_exec(c, e->name) == e);
	}
}

static void fuzz_parse(const uint8_t *data, size_t size)
{
	struct config *c = NULL;
	char *error = NULL;
	int r;

	CHECK(ftruncate(memfd, 0) == 0);
	CHECK(pwrite(memfd, data, size, 0) == (ssize_t)size);
	r = config_parse(path, &c, &error);
	if (r >= 0) {
		CHECK(r == 0 && c && !error);
		check_config(c);
	} else {
		CHECK(!c);
		/* Every message names the file first; only out of memory may leave none. */
		CHECK(error || r == -ENOMEM);
		CHECK(!error || strncmp(error, path, strlen(path)) == 0);
		CHECK(!error || !strchr(error, '\n'));
	}
	config_free(c);
	free(error);
}

/* Formatted back in two other spellings, a fingerprint must read back the same. */
static void fuzz_fingerprint(const char *s)
{
	uint8_t fp[32], again[32];
	char text[7 + 32 * 3 + 1];
	size_t off;

	if (config_parse_fingerprint(s, fp) < 0)
		return;
	off = (size_t)snprintf(text, sizeof(text), "SHA256:");
	for (size_t i = 0; i < 32; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%s%02X", i ? ":" : "", fp[i]);
	CHECK(config_parse_fingerprint(text, again) == 0 && memcmp(fp, again, 32) == 0);
	off = (size_t)snprintf(text, sizeof(text), "sha256:");
	for (size_t i = 0; i < 32; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%02x", fp[i]);
	CHECK(config_parse_fingerprint(text, again) == 0 && memcmp(fp, again, 32) == 0);
}

/* Without quotes and backslashes, splitting is exactly splitting at white space. */
static void fuzz_split(const char *s)
{
	char **argv = NULL;
	size_t total = 0;
	int r = config_split_command(s, &argv);

	CHECK(r == 0 || r == -EINVAL || r == -ENODATA || r == -ENOMEM);
	CHECK((r == 0) == (argv != NULL));
	if (r < 0)
		return;
	CHECK(argv[0]);
	for (char **w = argv; *w; w++)
		total += strlen(*w);
	CHECK(total <= strlen(s));
	if (!strpbrk(s, "'\"\\")) {
		char *copy = strdup(s), *save = NULL, *tok;
		size_t i = 0;

		CHECK(copy);
		for (tok = strtok_r(copy, " \t\n\v\f\r", &save); tok;
		     tok = strtok_r(NULL, " \t\n\v\f\r", &save), i++)
			CHECK(argv[i] && strcmp(argv[i], tok) == 0);
		CHECK(!argv[i]);
		free(copy);
	}
	strv_free(argv);
}

static void fuzz_values(const char *s)
{
	usec_t u;
	uint64_t n;
	bool b;
	char *expanded = NULL;
	int r;

	r = config_parse_duration(s, &u);
	CHECK(r == 0 || r == -EINVAL || r == -ERANGE);
	CHECK(r < 0 || u != USEC_INFINITY);
	r = config_parse_size(s, &n);
	CHECK(r == 0 || r == -EINVAL || r == -ERANGE);
	r = config_parse_bool(s, &b);
	CHECK(r == 0 || r == -EINVAL);
	fuzz_fingerprint(s);
	fuzz_split(s);
	/* Only text is built: nothing is looked up. */
	r = config_expand_path(s, &expanded);
	CHECK((r == 0) == (expanded != NULL));
	free(expanded);
}

/* Each line's value as a NUL-terminated string, trimmed like inih trims it. */
static void fuzz_lines(const char *text, size_t size)
{
	const char *end = text + size;
	unsigned n = 0;

	for (const char *line = text; line < end && n < LINES_MAX; n++) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *stop = nl ? nl : end;
		const char *eq = memchr(line, '=', (size_t)(stop - line));
		const char *v = eq ? eq + 1 : line;
		char *s;

		while (v < stop && (*v == ' ' || *v == '\t'))
			v++;
		s = strndup(v, (size_t)(stop - v)); /* also cuts at a NUL byte */
		CHECK(s);
		fuzz_values(s);
		free(s);
		line = stop + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > INPUT_MAX)
		return 0;
	init();
	fuzz_lines((const char *)data, size);
	if (!names_system_files((const char *)data, size))
		fuzz_parse(data, size);
	return 0;
}
