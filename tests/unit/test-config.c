#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "config.h"
#include "helpers.h"
#include "log.h"

static char tmpdir[64];
static char config_path[256];

static int group_setup(void **state)
{
	tmpdir_make(tmpdir, sizeof(tmpdir), "config");
	snprintf(config_path, sizeof(config_path), "%s/config", tmpdir);
	return 0;
}

static int group_teardown(void **state)
{
	return tmpdir_remove(tmpdir) == 0 ? 0 : -1;
}

static struct config *parse_ok(const char *text)
{
	struct config *c = NULL;
	char *error = NULL;
	int r;

	file_write_text(config_path, text);
	r = config_parse(config_path, &c, &error);
	if (r < 0)
		fail_msg("expected a good config, got: %s", strna(error));
	assert_null(error);
	return c;
}

/* The error message with the temporary directory taken off, so that it reads "config:N: ...". */
static char *parse_error(const char *text)
{
	struct config *c = NULL;
	char *error = NULL;
	size_t len = strlen(tmpdir);

	file_write_text(config_path, text);
	assert_true(config_parse(config_path, &c, &error) < 0);
	assert_null(c);
	assert_non_null(error);
	assert_memory_equal(error, tmpdir, len);
	assert_int_equal(error[len], '/');
	memmove(error, error + len + 1, strlen(error + len + 1) + 1);
	return error;
}

#define ACCOUNT "[account work]\nhost = imap.example.com\nusername = me\npassword = hunter2x\n"

static const struct {
	const char *input;
	const char *expected;
} bad_configs[] = {
	{ ACCOUNT "port = 99999\n",
	  "config:5: [account work] port: expected 1-65535, got \"99999\"" },
	{ "[account work]\nhost = h\nprot = 993\n",
	  "config:3: [account work] prot: unknown key (did you mean \"port\"?)" },
	{ ACCOUNT "frobnicate = 1\n", "config:5: [account work] frobnicate: unknown key" },
	{ "[desktop]\nurgensy = low\n",
	  "config:2: [desktop] urgensy: unknown key (did you mean \"urgency\"?)" },
	{ "[acount work]\nhost = h\n",
	  "config:1: [acount work]: unknown section (did you mean \"account\"?)" },
	{ "[zzz]\n", "config:1: [zzz]: unknown section" },
	{ "[account work]\nusername = me\npassword = abc\n",
	  "config:1: [account work] host: required key is missing" },
	{ "; comment\n[account work]\nhost = h\nusername = me\n",
	  "config:2: [account work] password: required key is missing (or password_file, "
	  "password_command, password_credential)" },
	{ "[account work]\nhost = h\nusername = me\nauth = xoauth2\n",
	  "config:1: [account work] oauth_token_command: required key is missing "
	  "(auth = xoauth2)" },
	{ ACCOUNT "password_file = /x\n",
	  "config:5: [account work] password_file: conflicts with \"password\" at line 4: give "
	  "only one" },
	{ ACCOUNT "host = other\n",
	  "config:5: [account work] host: duplicate key (first at line 2)" },
	{ ACCOUNT "[account work]\n",
	  "config:5: [account work]: duplicate section (first at line 1)" },
	{ "[desktop]\n[desktop]\n", "config:2: [desktop]: duplicate section (first at line 1)" },
	{ "x = 1\n" ACCOUNT, "config:1: key \"x\" outside of any section" },
	{ "[imapidled]\nlog_level = debug\n", "config: no [account NAME] section" },
	{ "", "config: no [account NAME] section" },
	{ ACCOUNT "garbage\n", "config:5: expected \"key = value\" or a [section] header" },
	{ "[account work\n", "config:1: expected \"]\" at the end of the section header" },
	{ "[account work] junk\n", "config:1: expected the end of the line after \"]\"" },
	{ ACCOUNT "= x\n", "config:5: expected \"key = value\", got no key" },
	{ ACCOUNT "tls = none\n",
	  "config:5: [account work] tls: \"none\" sends the password unencrypted; add "
	  "allow_plaintext = yes to accept that" },
	{ ACCOUNT "tls = ssl\n",
	  "config:5: [account work] tls: expected implicit, starttls or none, got \"ssl\"" },
	{ ACCOUNT "auth = cram\n",
	  "config:5: [account work] auth: expected auto, login, plain, xoauth2 or oauthbearer, "
	  "got \"cram\"" },
	{ ACCOUNT "skip_seen = maybe\n",
	  "config:5: [account work] skip_seen: expected yes or no, got \"maybe\"" },
	{ ACCOUNT "idle_refresh = 30m\n",
	  "config:5: [account work] idle_refresh: expected a duration from 10s to 29m, got "
	  "\"30m\"" },
	{ ACCOUNT "poll_interval = soon\n",
	  "config:5: [account work] poll_interval: expected a duration such as \"30s\", \"10m\" "
	  "or \"1h30m\", got \"soon\"" },
	{ ACCOUNT "reply_timeout = 0\n",
	  "config:5: [account work] reply_timeout: expected a duration of at least 1s, got \"0\"" },
	{ ACCOUNT "catch_up = -1\n",
	  "config:5: [account work] catch_up: expected 0-100000, got \"-1\"" },
	{ ACCOUNT "tls_ca_file = /nonexistent/ca.pem\n",
	  "config:5: [account work] tls_ca_file: cannot read \"/nonexistent/ca.pem\": No such "
	  "file or directory" },
	{ ACCOUNT "tls_fingerprint = sha256:abcd\n",
	  "config:5: [account work] tls_fingerprint: expected \"sha256:\" and 64 hex digits, got "
	  "\"sha256:abcd\"" },
	{ ACCOUNT "sinks = desktop, webhook:crm\n",
	  "config:5: [account work] sinks: no [webhook crm] section" },
	{ ACCOUNT "sinks = exec:sync\n[exec other]\ncommand = true\n",
	  "config:5: [account work] sinks: no [exec sync] section" },
	{ ACCOUNT "sinks = email\n",
	  "config:5: [account work] sinks: expected desktop, webhook:NAME or exec:NAME, got "
	  "\"email\"" },
	{ ACCOUNT "sinks = desktop, desktop\n",
	  "config:5: [account work] sinks: \"desktop\" is listed twice" },
	{ ACCOUNT "mailboxes = INBOX, Lists, inbox\n",
	  "config:5: [account work] mailboxes: \"inbox\" is listed twice" },
	{ ACCOUNT "mailboxes = INBOX,,Lists\n",
	  "config:5: [account work] mailboxes: expected a comma-separated list, got an empty "
	  "item" },
	{ ACCOUNT "mailboxes =\n",
	  "config:5: [account work] mailboxes: expected at least one mailbox, got nothing" },
	{ "[account work]\nhost = h\nusername = me\npassword_command = pass 'show\n",
	  "config:4: [account work] password_command: unterminated quote or trailing backslash "
	  "in \"pass 'show\"" },
	{ "[account work]\nhost = h\nusername = me\npassword_credential = a/b\n",
	  "config:4: [account work] password_credential: expected a credential name without "
	  "\"/\", got \"a/b\"" },
	{ "[account work]\nhost = h\nusername = me\rx\n",
	  "config:3: [account work] username: expected text without control characters" },
	{ "[account work]\nhost = h\nusername = me\npassword =\n",
	  "config:4: [account work] password: expected a value, got nothing" },
	{ "[account work]\nhost = imap example\n",
	  "config:2: [account work] host: expected a host name, got \"imap example\"" },
	{ "[webhook crm]\nurl = ftp://x\n",
	  "config:2: [webhook crm] url: expected a URL starting with http:// or https://" },
	{ ACCOUNT "[webhook crm]\ntimeout = 10s\n",
	  "config:5: [webhook crm] url: required key is missing" },
	{ "[webhook crm]\nurl = https://x\nheader = Bad Name: v\n",
	  "config:3: [webhook crm] header: expected \"Name: value\" with a token as Name" },
	{ "[webhook crm]\nurl = https://x\nheader = X-Empty:\n",
	  "config:3: [webhook crm] header: expected \"Name: value\" with a value free of control "
	  "characters" },
	{ "[webhook crm]\nurl = https://x\nsecret = abc\nsecret_file = /s\n",
	  "config:4: [webhook crm] secret_file: conflicts with \"secret\" at line 3: give only "
	  "one" },
	{ "[webhook crm]\nurl = https://x\nspool_max = 1T\n",
	  "config:3: [webhook crm] spool_max: expected a size such as \"512M\" or \"1G\", got "
	  "\"1T\"" },
	{ "[webhook crm]\nurl = https://x\nmax_in_flight = 0\n",
	  "config:3: [webhook crm] max_in_flight: expected 1-1000, got \"0\"" },
	{ "[account]\n", "config:1: [account]: expected [account NAME]" },
	{ "[desktop foo]\n", "config:1: [desktop foo]: expected [desktop] without a name" },
	{ "[account a/b]\n",
	  "config:1: [account a/b]: expected a NAME without \"/\" or control characters" },
	{ "[imapidled]\nmax_connecting = 0\n",
	  "config:2: [imapidled] max_connecting: expected 1-10000, got \"0\"" },
	{ "[imapidled]\nlog_level = loud\n",
	  "config:2: [imapidled] log_level: expected error, warning, notice, info or debug, got "
	  "\"loud\"" },
	{ "[imapidled]\nstate_dir = ~bob/state\n",
	  "config:2: [imapidled] state_dir: expected a path (\"~user\" is not supported), got "
	  "\"~bob/state\"" },
	{ "[exec sync]\ncommand = mbsync \"work\n" ACCOUNT,
	  "config:2: [exec sync] command: unterminated quote or trailing backslash in \"mbsync "
	  "\"work\"" },
	{ "[exec sync]\nshell = yes\n", "config:1: [exec sync] command: required key is missing" },
	{ "[desktop]\nactions = open, close\n",
	  "config:2: [desktop] actions: expected open or mark-read, got \"close\"" },
	{ "[desktop]\nurgency = high\n",
	  "config:2: [desktop] urgency: expected low, normal or critical, got \"high\"" },
	{ "[desktop]\nexpire_timeout = 2d\n",
	  "config:2: [desktop] expire_timeout: expected a duration from 0s to 1d, got \"2d\"" },
	/* Repeated list keys append, and duplicates are found across the lines. */
	{ ACCOUNT "mailboxes = INBOX, A\nmailboxes = B, A\n",
	  "config:6: [account work] mailboxes: \"A\" is listed twice" },
	{ ACCOUNT "sinks = desktop\nsinks = exec:x, desktop\n",
	  "config:6: [account work] sinks: \"desktop\" is listed twice" },
	{ ACCOUNT "host = other.example\n",
	  "config:5: [account work] host: duplicate key (first at line 2)" },
	/* [mailbox ACCOUNT/MAILBOX] overrides the account's sinks for one mailbox. */
	{ ACCOUNT "[mailbox work]\nsinks = desktop\n",
	  "config:5: [mailbox work]: expected [mailbox ACCOUNT/MAILBOX]" },
	{ ACCOUNT "[mailbox work/INBOX]\n",
	  "config:5: [mailbox work/INBOX] sinks: required key is missing" },
	{ ACCOUNT "[mailbox work/Other]\nsinks = desktop\n",
	  "config:5: [mailbox work/Other]: \"Other\" is not among [account work]'s mailboxes" },
	{ ACCOUNT "[mailbox home/INBOX]\nsinks = desktop\n",
	  "config:5: [mailbox home/INBOX]: no [account home] section" },
	{ ACCOUNT "[mailbox work/INBOX]\nsinks = exec:zz\n",
	  "config:6: [mailbox work/INBOX] sinks: no [exec zz] section" },
	{ ACCOUNT "[mailbox work/INBOX]\nsinks = desktop\n[mailbox work/inbox]\nsinks = desktop\n",
	  "config:7: [mailbox work/inbox]: duplicate section (first at line 5)" },
	{ ACCOUNT "[mailbox work/INBOX]\nsink = desktop\n",
	  "config:6: [mailbox work/INBOX] sink: unknown key (did you mean \"sinks\"?)" },
};

static void test_bad_configs(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(bad_configs); i++) {
		char *error = parse_error(bad_configs[i].input);

		if (!streq(error, bad_configs[i].expected))
			fail_msg("case %zu:\nexpected: %s\n     got: %s", i,
				 bad_configs[i].expected, error);
		free(error);
	}
}

static void test_missing_file(void **state)
{
	struct config *c = NULL;
	char *error = NULL;

	assert_int_equal(config_parse("/nonexistent/imapidled.conf", &c, &error), -ENOENT);
	assert_string_equal(error, "/nonexistent/imapidled.conf: cannot open: No such file or "
				   "directory");
	assert_null(c);
	free(error);
	/* No message wanted: still fails cleanly. */
	assert_int_equal(config_parse("/nonexistent/imapidled.conf", &c, NULL), -ENOENT);
	assert_int_equal(config_parse(tmpdir, &c, &error), -EISDIR);
	free(error);
}

static void test_long_line(void **state)
{
	char text[512], *error;

	snprintf(text, sizeof(text), "[account work]\nhost = %0300d\n", 1);
	error = parse_error(text);
	assert_string_equal(error, "config:2: line is too long (at most 199 characters)");
	free(error);
}

static void test_repeated_lists_append(void **state)
{
	struct config *c = parse_ok(ACCOUNT "mailboxes = INBOX, A\nmailboxes = B\n"
					    "sinks = exec:x\nsinks = exec:y, desktop\n"
					    "[exec x]\ncommand = true\n[exec y]\ncommand = true\n"
					    "[desktop]\n");

	assert_int_equal(strv_length(c->accounts[0].mailboxes), 3);
	assert_string_equal(c->accounts[0].mailboxes[2], "B");
	assert_int_equal(c->accounts[0].n_sinks, 3);
	assert_string_equal(c->accounts[0].sinks[1].name, "y");
	assert_int_equal(c->accounts[0].sinks[2].type, SINK_DESKTOP);
	assert_int_equal(c->accounts[0].sinks_line, 8);
	config_free(c);
}

static void test_mailbox_sinks(void **state)
{
	struct config *c = parse_ok(ACCOUNT "mailboxes = INBOX, Lists/urgent\nsinks = exec:a\n"
					    "[exec a]\ncommand = true\n[exec b]\ncommand = true\n"
					    "[mailbox work/Lists/urgent]\nsinks = exec:b, desktop\n");
	const struct sink_ref *s;
	size_t n;

	assert_true(config_mailbox_sinks(c, "work", "INBOX", &s, &n));
	assert_int_equal(n, 1);
	assert_string_equal(s[0].name, "a");
	assert_true(config_mailbox_sinks(c, "work", "Lists/urgent", &s, &n));
	assert_int_equal(n, 2);
	assert_string_equal(s[0].name, "b");
	assert_int_equal(s[1].type, SINK_DESKTOP);
	assert_false(config_mailbox_sinks(c, "home", "INBOX", &s, &n));
	assert_true(config_uses_sink(c, SINK_DESKTOP));
	config_free(c);
}

static void test_defaults(void **state)
{
	struct config *c;
	const struct config_account *a;

	unsetenv("XDG_STATE_HOME");
	setenv("HOME", "/home/tester", 1);
	c = parse_ok("[account work]\nhost = imap.example.com\nusername = me\n"
		     "password_command = pass show mail/work\n");
	assert_string_equal(c->state_dir, "/home/tester/.local/state/imapidled");
	assert_int_equal(c->log_level, LOG_INFO);
	assert_int_equal(c->max_connecting, 50);
	assert_int_equal(c->n_accounts, 1);
	a = config_find_account(c, "work");
	assert_non_null(a);
	assert_null(config_find_account(c, "home"));
	assert_string_equal(a->host, "imap.example.com");
	assert_int_equal(a->port, 993);
	assert_int_equal(a->tls, TLS_IMPLICIT);
	assert_false(a->allow_plaintext);
	assert_null(a->tls_ca_file);
	assert_false(a->has_fingerprint);
	assert_int_equal(a->password.kind, SECRET_COMMAND);
	assert_string_equal(a->password.key, "password_command");
	assert_int_equal(a->password.line, 4);
	assert_int_equal(strv_length(a->password.argv), 3);
	assert_string_equal(a->password.argv[2], "mail/work");
	assert_int_equal(a->auth, AUTH_AUTO);
	assert_false(a->send_id);
	assert_int_equal(strv_length(a->mailboxes), 1);
	assert_string_equal(a->mailboxes[0], "INBOX");
	assert_int_equal(a->n_sinks, 0);
	assert_true(a->skip_seen);
	assert_int_equal(a->catch_up, 50);
	assert_int_equal(a->idle_refresh, 10 * USEC_PER_MINUTE);
	assert_int_equal(a->poll_interval, 2 * USEC_PER_MINUTE);
	assert_int_equal(a->connect_timeout, 30 * USEC_PER_SEC);
	assert_int_equal(a->reply_timeout, 30 * USEC_PER_SEC);
	/* No [desktop] section: still usable defaults. */
	assert_false(c->desktop.present);
	assert_true(c->desktop.action_open);
	assert_false(c->desktop.action_mark_read);
	assert_int_equal(c->desktop.urgency, URGENCY_NORMAL);
	assert_true(c->desktop.expire_timeout == USEC_INFINITY);
	assert_int_equal(c->desktop.summary_threshold, 3);
	assert_int_equal(c->desktop.summary_window, 2 * USEC_PER_SEC);
	config_free(c);

	setenv("XDG_STATE_HOME", "/xdg/state", 1);
	c = parse_ok("[account work]\nhost = h\nusername = me\npassword = pw1\ntls = starttls\n");
	assert_string_equal(c->state_dir, "/xdg/state/imapidled");
	assert_int_equal(c->accounts[0].port, 143);
	config_free(c);
	unsetenv("XDG_STATE_HOME");
}

static const char full_config[] =
	"\xef\xbb\xbf; a full config\n"
	"[imapidled]\n"
	"state_dir = ~/state      ; inline comment\n"
	"log_level = debug\n"
	"max_connecting = 7\n"
	"\n"
	"[account work]\n"
	"  host = imap.example.com   ; indented keys are fine\n"
	"port = 1993\n"
	"tls = none\n"
	"allow_plaintext = yes\n"
	"tls_ca_file = /dev/null\n"
	"tls_fingerprint = sha256:9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:"
	"0B:82:2C:D1:5D:6C:15:B0:F0:0A:08\n"
	"username = me@example.com\n"
	"auth = oauthbearer\n"
	"oauth_token_command = oama access \"me@example.com\"\n"
	"send_id = on\n"
	"mailboxes = INBOX , Lists/urgent,Archive\n"
	"sinks = desktop, webhook:crm, exec:sync\n"
	"skip_seen = false\n"
	"catch_up = 0\n"
	"idle_refresh = 29m\n"
	"poll_interval = 1h30m\n"
	"connect_timeout = 10s\n"
	"reply_timeout = 1500ms\n"
	"\n"
	"[desktop]\n"
	"on_click = thunderbird --mail\n"
	"actions = mark-read\n"
	"urgency = critical\n"
	"desktop_entry = thunderbird\n"
	"expire_timeout = never\n"
	"summary_threshold = 5\n"
	"summary_window = 3s\n"
	"\n"
	"[webhook crm]\n"
	"url = https://hooks.example.com/mail\n"
	"secret_file = ~/crm.secret\n"
	"header = Authorization: Bearer xyz\n"
	"header = X-Tag:  mail  \n"
	"tls_ca_file = /dev/null\n"
	"timeout = 10s\n"
	"max_retry_age = 24h\n"
	"max_in_flight = 2\n"
	"spool_max = 512M\n"
	"batch = yes\n"
	"\n"
	"[exec sync]\n"
	"command = mbsync work:INBOX\n"
	"post_command = notmuch new\n"
	"timeout = 1m\n"
	"\n"
	"[exec shelly]\n"
	"command = echo \"$IMAPIDLED_SUBJECT\" | wall\n"
	"shell = yes\n";

static void test_full(void **state)
{
	static const uint8_t fp[32] = {
		0x9f, 0x86, 0xd0, 0x81, 0x88, 0x4c, 0x7d, 0x65, 0x9a, 0x2f, 0xea,
		0xa0, 0xc5, 0x5a, 0xd0, 0x15, 0xa3, 0xbf, 0x4f, 0x1b, 0x2b, 0x0b,
		0x82, 0x2c, 0xd1, 0x5d, 0x6c, 0x15, 0xb0, 0xf0, 0x0a, 0x08,
	};
	struct config *c;
	const struct config_account *a;
	const struct config_webhook *w;
	const struct config_exec *e;

	setenv("HOME", "/home/tester", 1);
	c = parse_ok(full_config);
	assert_string_equal(c->state_dir, "/home/tester/state");
	assert_int_equal(c->log_level, LOG_DEBUG);
	assert_int_equal(c->max_connecting, 7);

	a = &c->accounts[0];
	assert_string_equal(a->name, "work");
	assert_int_equal(a->line, 7);
	assert_string_equal(a->host, "imap.example.com");
	assert_int_equal(a->port, 1993);
	assert_int_equal(a->tls, TLS_NONE);
	assert_true(a->allow_plaintext);
	assert_string_equal(a->tls_ca_file, "/dev/null");
	assert_true(a->has_fingerprint);
	assert_memory_equal(a->tls_fingerprint, fp, 32);
	assert_string_equal(a->username, "me@example.com");
	assert_int_equal(a->password.kind, SECRET_NONE);
	assert_int_equal(a->auth, AUTH_OAUTHBEARER);
	assert_int_equal(strv_length(a->oauth_token_command), 3);
	assert_string_equal(a->oauth_token_command[2], "me@example.com");
	assert_true(a->send_id);
	assert_int_equal(strv_length(a->mailboxes), 3);
	assert_string_equal(a->mailboxes[0], "INBOX");
	assert_string_equal(a->mailboxes[1], "Lists/urgent");
	assert_string_equal(a->mailboxes[2], "Archive");
	assert_int_equal(a->n_sinks, 3);
	assert_int_equal(a->sinks[0].type, SINK_DESKTOP);
	assert_null(a->sinks[0].name);
	assert_int_equal(a->sinks[1].type, SINK_WEBHOOK);
	assert_string_equal(a->sinks[1].name, "crm");
	assert_int_equal(a->sinks[2].type, SINK_EXEC);
	assert_string_equal(a->sinks[2].name, "sync");
	assert_int_equal(a->sinks_line, 19);
	assert_false(a->skip_seen);
	assert_int_equal(a->catch_up, 0);
	assert_int_equal(a->idle_refresh, 29 * USEC_PER_MINUTE);
	assert_int_equal(a->poll_interval, 90 * USEC_PER_MINUTE);
	assert_int_equal(a->connect_timeout, 10 * USEC_PER_SEC);
	assert_int_equal(a->reply_timeout, 1500 * USEC_PER_MSEC);

	assert_true(c->desktop.present);
	assert_int_equal(strv_length(c->desktop.on_click), 2);
	assert_false(c->desktop.action_open);
	assert_true(c->desktop.action_mark_read);
	assert_int_equal(c->desktop.urgency, URGENCY_CRITICAL);
	assert_string_equal(c->desktop.desktop_entry, "thunderbird");
	assert_int_equal(c->desktop.expire_timeout, 0);
	assert_int_equal(c->desktop.summary_threshold, 5);
	assert_int_equal(c->desktop.summary_window, 3 * USEC_PER_SEC);

	w = config_find_webhook(c, "crm");
	assert_non_null(w);
	assert_string_equal(w->url, "https://hooks.example.com/mail");
	assert_int_equal(w->secret.kind, SECRET_FILE);
	assert_string_equal(w->secret.value, "/home/tester/crm.secret");
	assert_string_equal(w->secret.key, "secret_file");
	assert_int_equal(strv_length(w->headers), 2);
	assert_string_equal(w->headers[0], "Authorization: Bearer xyz");
	assert_string_equal(w->headers[1], "X-Tag: mail");
	assert_string_equal(w->tls_ca_file, "/dev/null");
	assert_int_equal(w->timeout, 10 * USEC_PER_SEC);
	assert_int_equal(w->max_retry_age, 24 * USEC_PER_HOUR);
	assert_int_equal(w->max_in_flight, 2);
	assert_int_equal(w->spool_max_bytes, 512ULL << 20);
	assert_true(w->batch);

	e = config_find_exec(c, "sync");
	assert_non_null(e);
	assert_int_equal(strv_length(e->command), 2);
	assert_string_equal(e->command[0], "mbsync");
	assert_string_equal(e->post_command[1], "new");
	assert_false(e->shell);
	assert_int_equal(e->timeout, USEC_PER_MINUTE);
	e = config_find_exec(c, "shelly");
	assert_int_equal(strv_length(e->command), 3);
	assert_string_equal(e->command[0], "/bin/sh");
	assert_string_equal(e->command[1], "-c");
	assert_string_equal(e->command[2], "echo \"$IMAPIDLED_SUBJECT\" | wall");
	assert_null(e->post_command);
	assert_int_equal(e->timeout, 5 * USEC_PER_MINUTE);
	assert_null(config_find_exec(c, "none"));
	config_free(c);
}

static void test_webhook_defaults(void **state)
{
	struct config *c = parse_ok(ACCOUNT "[webhook w]\nurl = http://localhost:8080/\n"
					    "secret = whsec_abc\n[desktop]\n");
	const struct config_webhook *w = &c->webhooks[0];

	assert_int_equal(w->secret.kind, SECRET_VALUE);
	assert_string_equal(w->secret.value, "whsec_abc");
	assert_null(w->headers);
	assert_int_equal(w->timeout, 15 * USEC_PER_SEC);
	assert_int_equal(w->max_retry_age, 3 * USEC_PER_DAY);
	assert_int_equal(w->max_in_flight, 8);
	assert_int_equal(w->spool_max_bytes, 1ULL << 30);
	assert_false(w->batch);
	assert_true(c->desktop.present);
	assert_int_equal(c->desktop.line, 8);
	assert_true(c->desktop.expire_timeout == USEC_INFINITY);
	config_free(c);
}

static void test_example(void **state)
{
	struct config *c = NULL;
	char *error = NULL;

	/* Unit tests run from the top of the tree. */
	if (config_parse("config.example", &c, &error) < 0)
		fail_msg("config.example: %s", strna(error));
	assert_true(c->n_accounts >= 1);
	config_free(c);
}

static const struct {
	const char *s;
	usec_t usec;
} good_durations[] = {
	{ "30s", 30 * USEC_PER_SEC },
	{ "45", 45 * USEC_PER_SEC },
	{ "0", 0 },
	{ "500ms", 500 * USEC_PER_MSEC },
	{ "20m", 20 * USEC_PER_MINUTE },
	{ "24h", 24 * USEC_PER_HOUR },
	{ "3d", 3 * USEC_PER_DAY },
	{ "1h30m", 90 * USEC_PER_MINUTE },
	{ " 1h 30m ", 90 * USEC_PER_MINUTE },
	{ "1m30s250ms", 90 * USEC_PER_SEC + 250 * USEC_PER_MSEC },
	{ "10 s", 10 * USEC_PER_SEC },
};

static const struct {
	const char *s;
	int r;
} bad_durations[] = {
	{ "", -EINVAL },	     { "  ", -EINVAL },	       { "-5s", -EINVAL },
	{ "5x", -EINVAL },	     { "1h30", -EINVAL },      { "s", -EINVAL },
	{ "1.5h", -EINVAL },	     { "5 sec", -EINVAL },     { "1h-30m", -EINVAL },
	{ "99999999999999999999", -ERANGE }, { "213503983d", -ERANGE },
	{ "18446744073709551615ms", -ERANGE },
};

static void test_durations(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(good_durations); i++) {
		usec_t u = 1;

		if (config_parse_duration(good_durations[i].s, &u) < 0 ||
		    u != good_durations[i].usec)
			fail_msg("\"%s\": expected %llu us, got %llu", good_durations[i].s,
				 (unsigned long long)good_durations[i].usec, (unsigned long long)u);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad_durations); i++) {
		usec_t u = 7;
		int r = config_parse_duration(bad_durations[i].s, &u);

		if (r != bad_durations[i].r)
			fail_msg("\"%s\": expected %d, got %d", bad_durations[i].s,
				 bad_durations[i].r, r);
		assert_int_equal(u, 7); /* ret_ untouched on failure */
	}
}

static void test_bool_and_size(void **state)
{
	static const char *const yes[] = { "yes", "true", "on", "1", "YES" };
	static const char *const no[] = { "no", "false", "off", "0", "Off" };
	uint64_t n;
	bool b;

	for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
		assert_int_equal(config_parse_bool(yes[i], &b), 0);
		assert_true(b);
		assert_int_equal(config_parse_bool(no[i], &b), 0);
		assert_false(b);
	}
	assert_int_equal(config_parse_bool("2", &b), -EINVAL);
	assert_int_equal(config_parse_bool("", &b), -EINVAL);

	assert_int_equal(config_parse_size("1G", &n), 0);
	assert_int_equal(n, 1ULL << 30);
	assert_int_equal(config_parse_size("100k", &n), 0);
	assert_int_equal(n, 100 * 1024);
	assert_int_equal(config_parse_size("512 M", &n), 0);
	assert_int_equal(n, 512ULL << 20);
	assert_int_equal(config_parse_size("4096", &n), 0);
	assert_int_equal(n, 4096);
	assert_int_equal(config_parse_size("1T", &n), -EINVAL);
	assert_int_equal(config_parse_size("1GB", &n), -EINVAL);
	assert_int_equal(config_parse_size("", &n), -EINVAL);
	assert_int_equal(config_parse_size("17179869184G", &n), -ERANGE);
}

#define ARGV(...) ((const char *const[]){ __VA_ARGS__, NULL })

static const struct {
	const char *s;
	const char *const *argv; /* NULL: expect -EINVAL */
} commands[] = {
	{ "pass show mail/work", ARGV("pass", "show", "mail/work") },
	{ "  a \t  b  ", ARGV("a", "b") },
	{ "'a b' c", ARGV("a b", "c") },
	{ "\"a \\\" b\" c", ARGV("a \" b", "c") },
	{ "\"back\\\\slash\"", ARGV("back\\slash") },
	{ "\"a\\nb\"", ARGV("a\\nb") }, /* only \" and \\ escape inside double quotes */
	{ "'no \\escape'", ARGV("no \\escape") },
	{ "a\\ b", ARGV("a b") },
	{ "x'y'\"z\"w", ARGV("xyzw") },
	{ "'' \"\"", ARGV("", "") },
	{ "echo $HOME *", ARGV("echo", "$HOME", "*") },
	{ "'abc", NULL },
	{ "\"abc", NULL },
	{ "abc\\", NULL },
	{ "'it\\'s'", NULL },
};

static void test_split_command(void **state)
{
	char **argv = NULL;

	for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
		int r = config_split_command(commands[i].s, &argv);

		if (!commands[i].argv) {
			if (r != -EINVAL)
				fail_msg("%s: expected -EINVAL, got %d", commands[i].s, r);
			continue;
		}
		if (r < 0)
			fail_msg("%s: expected success, got %d", commands[i].s, r);
		if (!strv_equal(argv, (char *const *)commands[i].argv))
			fail_msg("%s: wrong split", commands[i].s);
		argv = strv_free(argv);
	}
	assert_int_equal(config_split_command("", &argv), -ENODATA);
	assert_int_equal(config_split_command(" \t ", &argv), -ENODATA);
	assert_null(argv);
}

static void test_fingerprint(void **state)
{
	static const char hex64[] =
		"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
	char buf[128];
	uint8_t fp[32], fp2[32];

	snprintf(buf, sizeof(buf), "sha256:%s", hex64);
	assert_int_equal(config_parse_fingerprint(buf, fp), 0);
	assert_int_equal(fp[0], 0x9f);
	assert_int_equal(fp[31], 0x08);
	assert_int_equal(config_parse_fingerprint(
				 "SHA256:9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:"
				 "1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08",
				 fp2),
			 0);
	assert_memory_equal(fp, fp2, 32);

	assert_int_equal(config_parse_fingerprint(hex64, fp), -EINVAL); /* no prefix */
	snprintf(buf, sizeof(buf), "sha1:%s", hex64);
	assert_int_equal(config_parse_fingerprint(buf, fp), -EINVAL);
	snprintf(buf, sizeof(buf), "sha256:%.62s", hex64); /* short */
	assert_int_equal(config_parse_fingerprint(buf, fp), -EINVAL);
	snprintf(buf, sizeof(buf), "sha256:%s00", hex64); /* long */
	assert_int_equal(config_parse_fingerprint(buf, fp), -EINVAL);
	snprintf(buf, sizeof(buf), "sha256:%s0", hex64); /* odd */
	assert_int_equal(config_parse_fingerprint(buf, fp), -EINVAL);
	snprintf(buf, sizeof(buf), "sha256:g%s", hex64 + 1);
	assert_int_equal(config_parse_fingerprint(buf, fp), -EINVAL);
	snprintf(buf, sizeof(buf), "sha256::%s", hex64);
	assert_int_equal(config_parse_fingerprint(buf, fp), -EINVAL);
	snprintf(buf, sizeof(buf), "sha256:%.2s::%s", hex64, hex64 + 2);
	assert_int_equal(config_parse_fingerprint(buf, fp), -EINVAL);
	snprintf(buf, sizeof(buf), "sha256:%s:", hex64);
	assert_int_equal(config_parse_fingerprint(buf, fp), -EINVAL);
}

static void test_find(void **state)
{
	char xdg[300], expect[400], *path = NULL, *tried = NULL;
	bool etc_exists = access("/etc/imapidled/config", F_OK) == 0;

	assert_int_equal(config_find("/explicit/missing", &path, &tried), 0);
	assert_string_equal(path, "/explicit/missing");
	path = mfree(path);

	snprintf(xdg, sizeof(xdg), "%s/xdg", tmpdir);
	setenv("XDG_CONFIG_HOME", xdg, 1);
	if (!etc_exists) {
		assert_int_equal(config_find(NULL, &path, &tried), -ENOENT);
		assert_null(path);
		snprintf(expect, sizeof(expect), "%s/imapidled/config, /etc/imapidled/config", xdg);
		assert_string_equal(tried, expect);
		tried = mfree(tried);
	}
	snprintf(expect, sizeof(expect), "%s/imapidled", xdg);
	assert_int_equal(mkdir(xdg, 0700), 0);
	assert_int_equal(mkdir(expect, 0700), 0);
	snprintf(expect, sizeof(expect), "%s/imapidled/config", xdg);
	file_write_text(expect, "");
	assert_int_equal(config_find(NULL, &path, &tried), 0);
	assert_string_equal(path, expect);
	path = mfree(path);

	/* Unset: $HOME/.config. A relative value is ignored like an unset one. */
	setenv("XDG_CONFIG_HOME", "relative", 1);
	setenv("HOME", tmpdir, 1);
	if (!etc_exists) {
		assert_int_equal(config_find(NULL, &path, &tried), -ENOENT);
		snprintf(expect, sizeof(expect),
			 "%s/.config/imapidled/config, /etc/imapidled/config", tmpdir);
		assert_string_equal(tried, expect);
		tried = mfree(tried);
	}
	unsetenv("XDG_CONFIG_HOME");
	snprintf(expect, sizeof(expect), "%s/.config", tmpdir);
	assert_int_equal(mkdir(expect, 0700), 0);
	snprintf(expect, sizeof(expect), "%s/.config/imapidled", tmpdir);
	assert_int_equal(mkdir(expect, 0700), 0);
	snprintf(expect, sizeof(expect), "%s/.config/imapidled/config", tmpdir);
	file_write_text(expect, "");
	assert_int_equal(config_find(NULL, &path, NULL), 0);
	assert_string_equal(path, expect);
	free(path);
}

static void test_account_equal(void **state)
{
	static const char base[] = ACCOUNT "mailboxes = INBOX, Lists\nsinks = desktop\n";
	struct config *a, *b;
	char text[1024];

	a = parse_ok(base);
	snprintf(text, sizeof(text), "; moved down a line\n%s", base);
	b = parse_ok(text);
	assert_int_not_equal(a->accounts[0].line, b->accounts[0].line);
	assert_true(config_account_equal(&a->accounts[0], &b->accounts[0]));
	config_free(b);

	static const char *const changes[] = {
		"port = 994\n",	      "mailboxes = INBOX\n",  "sinks = \n",
		"password = other\n", "catch_up = 51\n",      "idle_refresh = 11m\n",
		"tls = starttls\n",   "send_id = yes\n",     "tls_ca_file = /dev/null\n",
		"tls_fingerprint = sha256:"
		"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n",
	};
	for (size_t i = 0; i < ELEMENTSOF(changes); i++) {
		/* Later keys would be duplicates, so rebuild the text with the change instead. */
		const char *key_end = strchr(changes[i], ' ');
		char key[32];

		snprintf(key, sizeof(key), "%.*s =", (int)(key_end - changes[i]), changes[i]);
		text[0] = '\0';
		for (const char *line = base; *line;) {
			size_t len = strcspn(line, "\n") + 1;

			if (strncmp(line, key, strlen(key)) != 0)
				strncat(text, line, len);
			line += len;
		}
		strcat(text, changes[i]);
		b = parse_ok(text);
		if (config_account_equal(&a->accounts[0], &b->accounts[0]))
			fail_msg("change not noticed: %s", changes[i]);
		config_free(b);
	}
	config_free(a);
}

static void test_strings(void **state)
{
	assert_string_equal(tls_mode_to_string(TLS_STARTTLS), "starttls");
	assert_string_equal(auth_mech_to_string(AUTH_XOAUTH2), "xoauth2");
	assert_string_equal(tls_mode_to_string((enum tls_mode)42), "?");
	assert_null(config_free(NULL));
}

static void test_expand_path(void **state)
{
	char *p = NULL;

	setenv("HOME", "/home/tester", 1);
	assert_int_equal(config_expand_path("~/x", &p), 0);
	assert_string_equal(p, "/home/tester/x");
	p = mfree(p);
	assert_int_equal(config_expand_path("~", &p), 0);
	assert_string_equal(p, "/home/tester");
	p = mfree(p);
	assert_int_equal(config_expand_path("/abs/~", &p), 0);
	assert_string_equal(p, "/abs/~");
	p = mfree(p);
	assert_int_equal(config_expand_path("~bob/x", &p), -EINVAL);
	unsetenv("HOME");
	assert_int_equal(config_expand_path("~/x", &p), -ENXIO);
	assert_null(p);
	setenv("HOME", "/home/tester", 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_configs),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_repeated_lists_append),
		cmocka_unit_test(test_mailbox_sinks),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_webhook_defaults),
		cmocka_unit_test(test_example),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_bool_and_size),
		cmocka_unit_test(test_split_command),
		cmocka_unit_test(test_fingerprint),
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_account_equal),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_expand_path),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
