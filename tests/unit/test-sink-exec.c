#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "helpers.h"
#include "log.h"
#include "sink/exec.h"

/* Real processes on a real sd-event loop. The commands are small shell scripts written by the
 * tests: the script is the user's command; the sink itself uses no shell. Scripts find the
 * test's directory in $EXECSINK_TESTDIR, which also shows the daemon's environment reaching
 * them. */

#define UIDVALIDITY 1700000000u
#define WAIT_MS 5000 /* generous: a run_until() that needs it has already failed */

struct fixture {
	char dir[64];
	sd_event *loop;
	struct sink_exec *sink;
	struct log_capture logs;
	struct mail_event **accepted;
	size_t n_accepted;
};

/* ---- Fixture ------------------------------------------------------------------------------ */

static void on_accepted(void *userdata, struct mail_event *e)
{
	struct fixture *f = userdata;

	f->accepted = reallocarray(f->accepted, f->n_accepted + 1, sizeof(*f->accepted));
	assert_non_null(f->accepted);
	f->accepted[f->n_accepted++] = mail_event_ref(e);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->dir, sizeof(f->dir), "sink-exec");
	assert_int_equal(setenv("EXECSINK_TESTDIR", f->dir, 1), 0);
	assert_int_equal(sd_event_new(&f->loop), 0);
	log_set_level(LOG_DEBUG);
	log_capture_start(&f->logs);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	f->sink = sink_exec_free(f->sink);
	f->loop = sd_event_unref(f->loop);
	log_capture_done(&f->logs);
	for (size_t i = 0; i < f->n_accepted; i++)
		mail_event_unref(f->accepted[i]);
	free(f->accepted);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

/* ---- Helpers ------------------------------------------------------------------------------ */

static char *write_script(const struct fixture *f, const char *name, const char *body)
{
	char *p = path_join(f->dir, name);
	_cleanup_free_ char *text = NULL;
	int n = asprintf(&text, "#!/bin/sh\n%s\n", body);

	assert_true(n > 0);
	file_write(p, text, (size_t)n, 0755);
	return p;
}

/* The file in the test's directory, as file_read() gives it. */
static char *read_in(const struct fixture *f, const char *name, size_t *ret_size)
{
	_cleanup_free_ char *p = path_join(f->dir, name);

	return file_read(p, ret_size);
}

static bool exists_in(const struct fixture *f, const char *name)
{
	_cleanup_free_ char *p = path_join(f->dir, name);

	return access(p, F_OK) == 0;
}

/* A sink for argv (NULL-terminated), with post_command and timeout. */
static void start_sink(struct fixture *f, char **argv, char **post, usec_t timeout)
{
	struct config_exec cfg = {
		.name = (char *)"t",
		.command = argv,
		.post_command = post,
		.timeout = timeout,
	};

	assert_int_equal(sink_exec_new(f->loop, &cfg, on_accepted, f, &f->sink), 0);
}

static void start_script_sink(struct fixture *f, const char *body, usec_t timeout)
{
	_cleanup_free_ char *script = write_script(f, "cmd", body);

	start_sink(f, (char *[]){ script, NULL }, NULL, timeout);
}

static bool run_until(struct fixture *f, bool (*done)(struct fixture *f))
{
	return LOOP_RUN_UNTIL(f->loop, done(f), WAIT_MS * USEC_PER_MSEC);
}

static void run_until_idle(struct fixture *f)
{
	assert_true(LOOP_RUN_UNTIL(f->loop, !sink_exec_busy(f->sink), WAIT_MS * USEC_PER_MSEC));
}

static struct mail_event *new_event(const char *account, const char *mailbox, uint32_t uid,
				    const char *subject)
{
	struct mail_event_input in = {
		.account = account,
		.mailbox = mailbox,
		.uidvalidity = UIDVALIDITY,
		.uid = uid,
		.message_id = "<m1@example.com>",
		.subject = subject,
		.from = { "Alice Example", "alice@example.com" },
		.size = 1234,
	};
	struct mail_event *e = NULL;

	assert_int_equal(mail_event_new_received(&in, &e), 0);
	return e;
}

static void push_new(struct fixture *f, const char *account, const char *mailbox, uint32_t uid,
		     const char *subject)
{
	_cleanup_mail_event_ struct mail_event *e = new_event(account, mailbox, uid, subject);

	assert_int_equal(sink_exec_push(f->sink, e), 0);
}

/* The value of NAME in an `env -0` dump, and how often NAME occurs. */
static const char *env_get(const char *dump, size_t size, const char *name, unsigned *ret_n)
{
	const char *found = NULL;
	size_t len = strlen(name);
	unsigned n = 0;

	for (const char *p = dump; p < dump + size; p += strlen(p) + 1)
		if (strncmp(p, name, len) == 0 && p[len] == '=') {
			found = found ? found : p + len + 1;
			n++;
		}
	if (ret_n)
		*ret_n = n;
	return found;
}

static unsigned env_count_prefix(const char *dump, size_t size, const char *prefix)
{
	unsigned n = 0;

	for (const char *p = dump; p < dump + size; p += strlen(p) + 1)
		n += strncmp(p, prefix, strlen(prefix)) == 0;
	return n;
}

static void assert_env(const char *dump, size_t size, const char *name, const char *want)
{
	unsigned n;
	const char *v = env_get(dump, size, name, &n);

	if (!v || n != 1 || !streq(v, want))
		fail_msg("%s: expected exactly one \"%s\", got %u, first \"%s\"", name, want, n,
			 strna(v));
}

static void assert_log(const struct fixture *f, int level, const char *needle)
{
	if (log_capture_count(&f->logs, level, needle) == 0) {
		log_capture_dump(&f->logs);
		fail_msg("no log line at level %d containing \"%s\"", level, needle);
	}
}

static pid_t read_pid(const struct fixture *f, const char *name)
{
	_cleanup_free_ char *s = read_in(f, name, NULL);

	assert_non_null(s);
	return (pid_t)atoi(s);
}

/* ---- Environment and stdin ---------------------------------------------------------------- */

static const char env_script[] = "env -0 > \"$EXECSINK_TESTDIR/env\"\n"
				 "cat > \"$EXECSINK_TESTDIR/stdin\"";

static void test_single_event(void **state)
{
	struct fixture *f = *state;
	_cleanup_mail_event_ struct mail_event *e = NULL, *back = NULL;
	_cleanup_free_ char *env = NULL, *in = NULL;
	size_t size;

	start_script_sink(f, env_script, 10 * USEC_PER_SEC);
	e = new_event("work", "INBOX", 4711, "Hello wörld");
	assert_int_equal(sink_exec_push(f->sink, e), 0);
	assert_int_equal(f->n_accepted, 0); /* never from inside push */
	assert_true(sink_exec_busy(f->sink));
	run_until_idle(f);

	assert_int_equal(f->n_accepted, 1);
	assert_ptr_equal(f->accepted[0], e);
	env = read_in(f, "env", &size);
	assert_non_null(env);
	assert_env(env, size, "IMAPIDLED_EVENT", "mail.received");
	assert_env(env, size, "IMAPIDLED_ACCOUNT", "work");
	assert_env(env, size, "IMAPIDLED_MAILBOX", "INBOX");
	assert_env(env, size, "IMAPIDLED_UID", "4711");
	assert_env(env, size, "IMAPIDLED_UIDVALIDITY", "1700000000");
	assert_env(env, size, "IMAPIDLED_MESSAGE_ID", "<m1@example.com>");
	assert_env(env, size, "IMAPIDLED_FROM_NAME", "Alice Example");
	assert_env(env, size, "IMAPIDLED_FROM_ADDRESS", "alice@example.com");
	assert_env(env, size, "IMAPIDLED_SUBJECT", "Hello wörld");
	assert_env(env, size, "IMAPIDLED_COUNT", "1");
	assert_int_equal(env_count_prefix(env, size, "IMAPIDLED_"), 10);

	in = read_in(f, "stdin", &size);
	assert_non_null(in);
	assert_true(size > 0 && in[size - 1] == '\n');
	assert_ptr_equal(strchr(in, '\n'), in + size - 1); /* one line */
	in[size - 1] = '\0';
	assert_int_equal(mail_event_from_json(in, &back), 0);
	assert_string_equal(back->id, e->id);
	assert_string_equal(back->subject, "Hello wörld");
	assert_true(log_capture_has_line(&f->logs, LOG_DEBUG, "exec t: exited with status 0"));
}

static void assert_stdin_events(char *in, struct mail_event *const *want, size_t n)
{
	size_t i = 0;

	for (char *line = strtok(in, "\n"); line; line = strtok(NULL, "\n"), i++) {
		_cleanup_mail_event_ struct mail_event *e = NULL;

		assert_true(i < n);
		assert_int_equal(mail_event_from_json(line, &e), 0);
		assert_string_equal(e->id, want[i]->id);
	}
	assert_int_equal(i, n);
}

static void test_batch(void **state)
{
	struct fixture *f = *state;
	struct mail_event *e[3];
	_cleanup_free_ char *env = NULL, *in = NULL;
	size_t size;

	start_script_sink(f, env_script, 10 * USEC_PER_SEC);
	/* Pushed in one go, before the loop runs: one run carries all three. */
	e[0] = new_event("work", "INBOX", 10, "first");
	e[1] = new_event("work", "INBOX", 11, "second");
	assert_int_equal(mail_event_new_summary("work", "INBOX", UIDVALIDITY, 12, 20, 5, &e[2]), 0);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(sink_exec_push(f->sink, e[i]), 0);
	run_until_idle(f);

	assert_int_equal(f->n_accepted, 3);
	for (size_t i = 0; i < 3; i++)
		assert_ptr_equal(f->accepted[i], e[i]);
	env = read_in(f, "env", &size);
	assert_non_null(env);
	assert_env(env, size, "IMAPIDLED_EVENT", "mail.summary");
	assert_env(env, size, "IMAPIDLED_COUNT", "7"); /* 1 + 1 + the summary's 5 */
	assert_env(env, size, "IMAPIDLED_ACCOUNT", "work");
	assert_env(env, size, "IMAPIDLED_MAILBOX", "INBOX");
	assert_env(env, size, "IMAPIDLED_UIDVALIDITY", "1700000000");
	assert_env(env, size, "IMAPIDLED_UID", "20");
	assert_env(env, size, "IMAPIDLED_SUBJECT", ""); /* the newest, a summary, has none */
	assert_int_equal(env_count_prefix(env, size, "IMAPIDLED_"), 10);
	in = read_in(f, "stdin", NULL);
	assert_non_null(in);
	assert_stdin_events(in, e, 3);
	for (size_t i = 0; i < 3; i++)
		mail_event_unref(e[i]);
}

static void test_batch_mixed(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *env = NULL, *env2 = NULL;
	size_t size;

	start_script_sink(f, env_script, 10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 10, "a");
	push_new(f, "work", "Lists/urgent", 11, "b");
	run_until_idle(f);
	env = read_in(f, "env", &size);
	assert_non_null(env);
	/* One account: it is named. Two mailboxes: no mailbox, and no UID that is true of only
	 * one of them. The newest message's own fields stay. */
	assert_env(env, size, "IMAPIDLED_ACCOUNT", "work");
	assert_env(env, size, "IMAPIDLED_MAILBOX", "");
	assert_env(env, size, "IMAPIDLED_UIDVALIDITY", "");
	assert_env(env, size, "IMAPIDLED_UID", "");
	assert_env(env, size, "IMAPIDLED_SUBJECT", "b");
	assert_env(env, size, "IMAPIDLED_COUNT", "2");

	push_new(f, "work", "INBOX", 12, "c");
	push_new(f, "home", "INBOX", 13, "d");
	push_new(f, "home", "INBOX", 14, "e");
	run_until_idle(f);
	env2 = read_in(f, "env", &size);
	assert_non_null(env2);
	assert_env(env2, size, "IMAPIDLED_ACCOUNT", "");
	assert_env(env2, size, "IMAPIDLED_MAILBOX", "");
	assert_env(env2, size, "IMAPIDLED_COUNT", "3");
	assert_int_equal(f->n_accepted, 5);
}

static void test_inherited_environment(void **state)
{
	struct fixture *f = *state;
	_cleanup_mail_event_ struct mail_event *e = NULL;
	_cleanup_free_ char *env = NULL;
	size_t size;

	assert_int_equal(setenv("EXECSINK_INHERITED", "inherited value", 1), 0);
	assert_int_equal(setenv("IMAPIDLED_SUBJECT", "stale subject", 1), 0);
	assert_int_equal(setenv("IMAPIDLED_STALE", "stale", 1), 0);
	start_script_sink(f, env_script, 10 * USEC_PER_SEC);
	/* A summary has no subject: an inherited one must not fill the gap. */
	assert_int_equal(mail_event_new_summary("work", "INBOX", UIDVALIDITY, 1, 3, 3, &e), 0);
	assert_int_equal(sink_exec_push(f->sink, e), 0);
	run_until_idle(f);
	unsetenv("EXECSINK_INHERITED");
	unsetenv("IMAPIDLED_SUBJECT");
	unsetenv("IMAPIDLED_STALE");

	env = read_in(f, "env", &size);
	assert_non_null(env);
	assert_env(env, size, "EXECSINK_INHERITED", "inherited value");
	assert_env(env, size, "PATH", getenv("PATH"));
	assert_env(env, size, "IMAPIDLED_SUBJECT", "");
	assert_env(env, size, "IMAPIDLED_EVENT", "mail.summary");
	assert_env(env, size, "IMAPIDLED_COUNT", "3");
	assert_null(env_get(env, size, "IMAPIDLED_STALE", NULL));
	assert_int_equal(env_count_prefix(env, size, "IMAPIDLED_"), 10);
}

static void test_no_shell_injection(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *subject = NULL, *got = NULL, *in = NULL, *shell_text = NULL;
	_cleanup_free_ char *script = NULL;
	_cleanup_mail_event_ struct mail_event *back = NULL;
	size_t size;

	assert_true(asprintf(&subject,
			     "$(touch %1$s/pwned1) `touch %1$s/pwned2`; touch %1$s/pwned3 | "
			     "touch %1$s/pwned4 && ${IFS}'\"\\",
			     f->dir) > 0);
	script = write_script(f, "cmd",
			      "printf '%s' \"$IMAPIDLED_SUBJECT\" > \"$EXECSINK_TESTDIR/subject\"\n"
			      "cat > \"$EXECSINK_TESTDIR/stdin\"");
	start_sink(f, (char *[]){ script, NULL }, NULL, 10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 1, subject);
	run_until_idle(f);

	for (int i = 1; i <= 4; i++) {
		char name[16];

		snprintf(name, sizeof(name), "pwned%d", i);
		assert_false(exists_in(f, name));
	}
	got = read_in(f, "subject", NULL);
	assert_non_null(got);
	assert_string_equal(got, subject);
	in = read_in(f, "stdin", &size);
	assert_non_null(in);
	in[size - 1] = '\0';
	assert_int_equal(mail_event_from_json(in, &back), 0);
	assert_string_equal(back->subject, subject);

	/* With shell = yes the text is the user's own script; the subject still arrives as data. */
	f->sink = sink_exec_free(f->sink);
	assert_true(asprintf(&shell_text,
			     "printf '%%s' \"$IMAPIDLED_SUBJECT\" > \"$EXECSINK_TESTDIR/subject2\"") >
		    0);
	start_sink(f, (char *[]){ (char *)"/bin/sh", (char *)"-c", shell_text, NULL }, NULL,
		   10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 2, subject);
	run_until_idle(f);
	free(got);
	got = read_in(f, "subject2", NULL);
	assert_non_null(got);
	assert_string_equal(got, subject);
	for (int i = 1; i <= 4; i++) {
		char name[16];

		snprintf(name, sizeof(name), "pwned%d", i);
		assert_false(exists_in(f, name));
	}
}

/* ---- Runs ---------------------------------------------------------------------------------- */

static bool one_accepted(struct fixture *f)
{
	return f->n_accepted >= 1;
}

static void test_burst_two_runs(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *runs = NULL;

	start_script_sink(f,
			  "n=$(wc -l)\n"
			  "echo \"$n $IMAPIDLED_COUNT $IMAPIDLED_EVENT\" >> \"$EXECSINK_TESTDIR/runs\"\n"
			  "sleep 0.3",
			  10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 1, "first");
	assert_true(run_until(f, one_accepted)); /* the first run has started */
	for (uint32_t burst = 0; burst < 4; burst++) {
		for (uint32_t i = 0; i < 5; i++)
			push_new(f, "work", "INBOX", 2 + burst * 5 + i, "burst");
		loop_run_for(f->loop, 20 * USEC_PER_MSEC);
	}
	/* Still the first run: nothing of the burst is accepted before its run starts. */
	assert_int_equal(f->n_accepted, 1);
	assert_true(sink_exec_busy(f->sink));
	run_until_idle(f);

	assert_int_equal(f->n_accepted, 21);
	for (size_t i = 0; i < 21; i++)
		assert_int_equal(f->accepted[i]->uid, i + 1);
	runs = read_in(f, "runs", NULL);
	assert_non_null(runs);
	assert_string_equal(runs, "1 1 mail.received\n20 20 mail.summary\n");
}

static void test_timeout(void **state)
{
	struct fixture *f = *state;
	usec_t start = now_usec(CLOCK_MONOTONIC);
	pid_t pid, grandchild;

	/* The grandchild shows that the whole process group is killed. */
	start_script_sink(f,
			  "sleep 60 &\n"
			  "echo $! > \"$EXECSINK_TESTDIR/grandchild\"\n"
			  "echo $$ > \"$EXECSINK_TESTDIR/pid\"\n"
			  "exec sleep 60",
			  200 * USEC_PER_MSEC);
	push_new(f, "work", "INBOX", 1, "hang");
	run_until_idle(f);

	assert_true(now_usec(CLOCK_MONOTONIC) - start < 2 * USEC_PER_SEC);
	assert_int_equal(f->n_accepted, 1);
	pid = read_pid(f, "pid");
	grandchild = read_pid(f, "grandchild");
	assert_true(process_gone(pid));
	/* Reaped by the loop, not left as a zombie of ours. */
	assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	for (int i = 0; i < 100 && !process_gone(grandchild); i++)
		usleep(10 * 1000);
	assert_true(process_gone(grandchild));
	assert_true(log_capture_has_line(&f->logs, LOG_WARNING,
					 "exec t: timed out after 200ms, killed"));
	assert_true(
	    log_capture_has_line(&f->logs, LOG_WARNING, "exec t: killed by signal SIGTERM"));
}

static void test_missing_command(void **state)
{
	struct fixture *f = *state;

	start_sink(f, (char *[]){ (char *)"/nonexistent/imapidled-test-command", NULL }, NULL,
		   10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 1, "a");
	run_until_idle(f);
	assert_int_equal(f->n_accepted, 1);
	assert_true(log_capture_has_line(&f->logs, LOG_ERR,
					 "exec t: cannot run /nonexistent/imapidled-test-command: "
					 "No such file or directory; the events count as handled"));

	/* Logged once per change of state: the next failure is quiet. */
	push_new(f, "work", "INBOX", 2, "b");
	run_until_idle(f);
	assert_int_equal(f->n_accepted, 2);
	assert_int_equal(log_capture_count(&f->logs, LOG_ERR, "cannot run"), 1);
	assert_int_equal(log_capture_count(&f->logs, LOG_DEBUG, "cannot run"), 1);

	/* Looked up in PATH too. */
	f->sink = sink_exec_free(f->sink);
	start_sink(f, (char *[]){ (char *)"imapidled-no-such-command", NULL }, NULL,
		   10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 3, "c");
	run_until_idle(f);
	assert_int_equal(f->n_accepted, 3);
	assert_log(f, LOG_ERR, "exec t: cannot run imapidled-no-such-command: No such file");
}

static void test_output_and_status(void **state)
{
	struct fixture *f = *state;
	char want[SINK_EXEC_LINE_MAX + 64];

	start_script_sink(f,
			  "echo 'to stdout'\n"
			  "echo 'to stderr' >&2\n"
			  "printf 'crlf line\\r\\n'\n"
			  "head -c 3000 /dev/zero | tr '\\0' x; echo\n"
			  "printf 'no newline' >&2\n"
			  "exit 3",
			  10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 1, "a");
	run_until_idle(f);

	assert_true(log_capture_has_line(&f->logs, LOG_INFO, "exec t: stdout: to stdout"));
	assert_true(log_capture_has_line(&f->logs, LOG_INFO, "exec t: stderr: to stderr"));
	assert_true(log_capture_has_line(&f->logs, LOG_INFO, "exec t: stdout: crlf line"));
	assert_true(log_capture_has_line(&f->logs, LOG_INFO, "exec t: stderr: no newline"));
	strcpy(want, "exec t: stdout: ");
	memset(want + strlen(want), 'x', SINK_EXEC_LINE_MAX);
	strcpy(want + strlen("exec t: stdout: ") + SINK_EXEC_LINE_MAX, " [truncated]");
	assert_true(log_capture_has_line(&f->logs, LOG_INFO, want));
	assert_true(log_capture_has_line(&f->logs, LOG_WARNING, "exec t: exited with status 3"));
	assert_int_equal(f->n_accepted, 1);
}

static void test_post_command(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *cmd = NULL, *post = NULL, *order = NULL;

	cmd = write_script(f, "cmd",
			   "cat > /dev/null\n"
			   "echo \"cmd $IMAPIDLED_SUBJECT\" >> \"$EXECSINK_TESTDIR/order\"\n"
			   "[ \"$IMAPIDLED_SUBJECT\" != fail ]");
	post = write_script(f, "post",
			    "n=$(wc -l)\n"
			    "echo \"post $IMAPIDLED_COUNT $n\" >> \"$EXECSINK_TESTDIR/order\"");
	start_sink(f, (char *[]){ cmd, NULL }, (char *[]){ post, NULL }, 10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 1, "a");
	push_new(f, "work", "INBOX", 2, "ok");
	run_until_idle(f);
	order = read_in(f, "order", NULL);
	assert_non_null(order);
	assert_string_equal(order, "cmd ok\npost 2 2\n");

	/* After a failed command, post_command does not run. */
	push_new(f, "work", "INBOX", 3, "fail");
	run_until_idle(f);
	free(order);
	order = read_in(f, "order", NULL);
	assert_string_equal(order, "cmd ok\npost 2 2\ncmd fail\n");
	assert_true(log_capture_has_line(&f->logs, LOG_WARNING, "exec t: exited with status 1"));
	assert_int_equal(f->n_accepted, 3);
}

static void test_stdin_not_read(void **state)
{
	struct fixture *f = *state;
	char subject[1001];

	/* About 1.5 MB of stdin, far beyond a pipe's capacity, for a command that never reads. */
	memset(subject, 's', sizeof(subject) - 1);
	subject[sizeof(subject) - 1] = '\0';
	start_script_sink(f, "sleep 0.1", 10 * USEC_PER_SEC);
	for (uint32_t i = 1; i <= 1000; i++)
		push_new(f, "work", "INBOX", i, subject);
	run_until_idle(f);
	assert_int_equal(f->n_accepted, 1000);
	assert_true(log_capture_has_line(&f->logs, LOG_DEBUG, "exec t: exited with status 0"));

	/* One that closes stdin at once: the write fails with EPIPE, not the daemon. */
	f->sink = sink_exec_free(f->sink);
	start_script_sink(f, "exec 0<&-\nsleep 0.2", 10 * USEC_PER_SEC);
	for (uint32_t i = 1; i <= 100; i++)
		push_new(f, "work", "INBOX", i, subject);
	run_until_idle(f);
	assert_int_equal(f->n_accepted, 1100);
	assert_log(f, LOG_DEBUG, "exec t: stdin: Broken pipe");
}

static void test_queue_limit(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *runs = NULL;
	char want[64];

	start_script_sink(f,
			  "n=$(wc -l)\n"
			  "echo \"$n $IMAPIDLED_COUNT\" >> \"$EXECSINK_TESTDIR/runs\"\n"
			  "sleep 0.2",
			  10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 1, "first");
	assert_true(run_until(f, one_accepted));
	for (uint32_t i = 0; i < SINK_EXEC_QUEUE_MAX + 5; i++)
		push_new(f, "work", "INBOX", 2 + i, "queued");
	loop_run_for(f->loop, 20 * USEC_PER_MSEC);
	/* The five oldest were coalesced and accepted at once, in push order. */
	assert_int_equal(f->n_accepted, 1 + 5);
	for (size_t i = 0; i < f->n_accepted; i++)
		assert_int_equal(f->accepted[i]->uid, i + 1);
	run_until_idle(f);

	assert_int_equal(f->n_accepted, 1 + SINK_EXEC_QUEUE_MAX + 5);
	for (size_t i = 0; i < f->n_accepted; i++)
		assert_int_equal(f->accepted[i]->uid, i + 1);
	runs = read_in(f, "runs", NULL);
	assert_non_null(runs);
	snprintf(want, sizeof(want), "1 1\n%d %d\n", SINK_EXEC_QUEUE_MAX, SINK_EXEC_QUEUE_MAX + 5);
	assert_string_equal(runs, want);
	snprintf(want, sizeof(want), "exec t: 5 of %d events are not on stdin",
		 SINK_EXEC_QUEUE_MAX + 5);
	assert_log(f, LOG_WARNING, want);
}

static void test_no_fd_leak(void **state)
{
	struct fixture *f = *state;
	int leaky = open("/dev/null", O_RDONLY); /* deliberately without O_CLOEXEC */
	int p[2];
	size_t n = 0;

	assert_true(leaky >= 0);
	assert_int_equal(pipe(p), 0);
	/* ls itself opens /proc/self/fd as fd 3 to list it. */
	start_sink(f, (char *[]){ (char *)"ls", (char *)"-1", (char *)"/proc/self/fd", NULL },
		   NULL, 10 * USEC_PER_SEC);
	push_new(f, "work", "INBOX", 1, "a");
	run_until_idle(f);
	close(leaky);
	close(p[0]);
	close(p[1]);

	for (size_t i = 0; i < f->logs.n; i++) {
		const char *t = f->logs.lines[i].text;

		if (strncmp(t, "exec t: stdout: ", 16) != 0)
			continue;
		if (!streq(t + 16, "0") && !streq(t + 16, "1") && !streq(t + 16, "2") &&
		    !streq(t + 16, "3"))
			fail_msg("unexpected fd in the child: %s", t + 16);
		n++;
	}
	assert_int_equal(n, 4);
}

static bool pid_written(struct fixture *f)
{
	return exists_in(f, "pid");
}

static void test_free_while_running(void **state)
{
	struct fixture *f = *state;
	pid_t pid;

	start_script_sink(f, "echo $$ > \"$EXECSINK_TESTDIR/pid.tmp\"\n"
			     "mv \"$EXECSINK_TESTDIR/pid.tmp\" \"$EXECSINK_TESTDIR/pid\"\n"
			     "exec sleep 60",
			  0);
	push_new(f, "work", "INBOX", 1, "a");
	assert_true(run_until(f, pid_written));
	push_new(f, "work", "INBOX", 2, "b"); /* waits for the next run: dropped by free */
	pid = read_pid(f, "pid");
	f->sink = sink_exec_free(f->sink);
	for (int i = 0; i < 200 && !process_gone(pid); i++)
		assert_true(sd_event_run(f->loop, 10 * USEC_PER_MSEC) >= 0);
	assert_true(process_gone(pid));
	loop_run_for(f->loop, 20 * USEC_PER_MSEC); /* the loop reaps it */
	assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	assert_int_equal(f->n_accepted, 1);
}

static void test_free_then_loop_freed(void **state)
{
	struct fixture *f = *state;
	pid_t pid;

	/* Ignores SIGTERM: only freeing the loop ends it (SIGKILL), and reaps it. */
	start_script_sink(f, "trap '' TERM\n"
			     "echo $$ > \"$EXECSINK_TESTDIR/pid.tmp\"\n"
			     "mv \"$EXECSINK_TESTDIR/pid.tmp\" \"$EXECSINK_TESTDIR/pid\"\n"
			     "while :; do sleep 0.05; done",
			  0);
	push_new(f, "work", "INBOX", 1, "a");
	assert_true(run_until(f, pid_written));
	pid = read_pid(f, "pid");
	f->sink = sink_exec_free(f->sink);
	loop_run_for(f->loop, 100 * USEC_PER_MSEC);
	assert_false(process_gone(pid));
	f->loop = sd_event_unref(f->loop);
	assert_int_equal(kill(pid, 0), -1);
	assert_int_equal(errno, ESRCH);
}

static void test_new_invalid(void **state)
{
	struct fixture *f = *state;
	struct config_exec cfg = { .name = (char *)"t", .command = (char *[]){ NULL } };
	struct sink_exec *s = NULL;
	sigset_t chld;

	assert_int_equal(sink_exec_new(f->loop, &cfg, NULL, NULL, &s), -EINVAL);
	cfg.command = (char *[]){ (char *)"true", NULL };
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	assert_int_equal(sigprocmask(SIG_UNBLOCK, &chld, NULL), 0);
	assert_int_equal(sink_exec_new(f->loop, &cfg, NULL, NULL, &s), -EBUSY);
	assert_int_equal(sigprocmask(SIG_BLOCK, &chld, NULL), 0);
	assert_null(s);
	/* Without an accepted callback it still runs. */
	assert_int_equal(sink_exec_new(f->loop, &cfg, NULL, NULL, &f->sink), 0);
	push_new(f, "work", "INBOX", 1, "a");
	run_until_idle(f);
	assert_true(log_capture_has_line(&f->logs, LOG_DEBUG, "exec t: exited with status 0"));
	assert_null(sink_exec_free(NULL));
	assert_false(sink_exec_busy(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_single_event, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_mixed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inherited_environment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_shell_injection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_burst_two_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_output_and_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_post_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stdin_not_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_fd_leak, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_while_running, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_then_loop_freed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_invalid, setup, teardown),
	};
	sigset_t mask;

	/* What the manager sets up for the whole daemon (sink/exec.h, Requirements). */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("sink-exec", tests, NULL, NULL);
}
