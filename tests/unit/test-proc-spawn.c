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
#include "proc/spawn.h"

/* Real commands on a real sd-event loop. */

#define WAIT_MS 5000 /* generous: a wait that needs it has already failed */
#define LABEL "work/INBOX: oauth_token_command"

struct fixture {
	char dir[64];
	sd_event *loop;
	struct spawn_job *job;
	struct log_capture logs;

	unsigned calls;
	int error;
	char *line;
	char *why;
	bool free_in_callback;
};

/* ---- Fixture ------------------------------------------------------------------------------ */

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->dir, sizeof(f->dir), "spawn");
	assert_int_equal(sd_event_new(&f->loop), 0);
	log_set_level(LOG_DEBUG);
	log_capture_start(&f->logs);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	f->job = spawn_job_free(f->job);
	f->loop = sd_event_unref(f->loop);
	log_capture_done(&f->logs);
	secure_free(f->line);
	free(f->why);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

/* ---- Helpers ------------------------------------------------------------------------------ */

static void on_done(void *userdata, int error, char *line, const char *why)
{
	struct fixture *f = userdata;

	f->calls++;
	f->error = error;
	secure_free(f->line);
	f->line = line;
	free(f->why);
	f->why = why ? strdup(why) : NULL;
	if (error < 0) {
		assert_null(line);
		assert_non_null(why);
	} else {
		assert_non_null(line);
		assert_null(why);
	}
	if (f->free_in_callback)
		f->job = spawn_job_free(f->job);
}

static void run_until_done(struct fixture *f)
{
	if (!LOOP_RUN_UNTIL(f->loop, f->calls > 0, WAIT_MS * USEC_PER_MSEC))
		fail_msg("the job did not finish within %d ms", WAIT_MS);
}

static void start(struct fixture *f, char **argv, usec_t timeout)
{
	assert_int_equal(spawn_capture(f->loop, argv, LABEL, timeout, on_done, f, &f->job), 0);
	assert_true(spawn_job_running(f->job));
	assert_int_equal(f->calls, 0); /* never from inside spawn_capture() */
}

/* Run argv to its end; returns the error given to done. */
static int run(struct fixture *f, char **argv, usec_t timeout)
{
	start(f, argv, timeout);
	run_until_done(f);
	assert_int_equal(f->calls, 1);
	assert_false(spawn_job_running(f->job));
	return f->error;
}

static int run_sh(struct fixture *f, const char *script)
{
	return run(f, (char *[]){ (char *)"sh", (char *)"-c", (char *)script, NULL },
		   30 * USEC_PER_SEC);
}

/* The number in the file, once it exists (within WAIT_MS). */
static pid_t wait_pid_file(struct fixture *f, const char *path)
{
	usec_t end = now_usec(CLOCK_MONOTONIC) + WAIT_MS * USEC_PER_MSEC;
	int pid = 0;

	for (;;) {
		FILE *s = fopen(path, "re");

		if (s && fscanf(s, "%d", &pid) == 1 && pid > 0) {
			fclose(s);
			return pid;
		}
		if (s)
			fclose(s);
		if (!loop_step(f->loop, end))
			fail_msg("%s was not written", path);
	}
}

static bool wait_dead(pid_t pid)
{
	usec_t end = now_usec(CLOCK_MONOTONIC) + WAIT_MS * USEC_PER_MSEC;

	while (!process_gone(pid)) {
		if (now_usec(CLOCK_MONOTONIC) >= end)
			return false;
		usleep(10 * 1000);
	}
	return true;
}

/* ---- Results ------------------------------------------------------------------------------ */

static void test_echo(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run(f, (char *[]){ (char *)"/bin/echo", (char *)"tok-123", NULL },
			     USEC_INFINITY),
			 0);
	assert_string_equal(f->line, "tok-123");
	/* stdout is a secret: never logged */
	assert_false(log_capture_has(&f->logs, "tok-123"));
}

static void test_first_line_only(void **state)
{
	struct fixture *f = *state;

	/* printf from PATH (posix_spawnp); CRLF is one line end */
	assert_int_equal(run(f, (char *[]){ (char *)"printf", (char *)"a b\tc\r\nsecond\n", NULL },
			     30 * USEC_PER_SEC),
			 0);
	assert_string_equal(f->line, "a b\tc");
}

static void test_no_final_newline(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run(f, (char *[]){ (char *)"printf", (char *)"abc", NULL }, 0), 0);
	assert_string_equal(f->line, "abc");
}

static void test_exit_status(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run_sh(f, "echo would-be-token; exit 3"), -EIO);
	assert_null(f->line);
	assert_string_equal(f->why, "\"sh\" exited with status 3");
}

static void test_killed_by_signal(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run_sh(f, "kill -USR1 $$"), -EIO);
	assert_string_equal(f->why, "\"sh\" was killed by signal SIGUSR1");
}

static void test_timeout(void **state)
{
	struct fixture *f = *state;
	usec_t t0 = now_usec(CLOCK_MONOTONIC), elapsed;

	assert_int_equal(run(f, (char *[]){ (char *)"sleep", (char *)"10", NULL },
			     200 * USEC_PER_MSEC),
			 -ETIME);
	elapsed = now_usec(CLOCK_MONOTONIC) - t0;
	assert_true(elapsed >= 190 * USEC_PER_MSEC);
	assert_true(elapsed < 2 * USEC_PER_SEC);
	assert_string_equal(f->why, "\"sleep\" timed out after 200ms");
}

static void test_timeout_kills_group(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *pidfile = path_join(f->dir, "bg.pid");
	_cleanup_free_ char *script = NULL;
	pid_t bg;

	/* The background sleep keeps stdout open: the timeout must not wait for it either. */
	assert_true(asprintf(&script, "sleep 30 & echo $! > %s; wait", pidfile) > 0);
	start(f, (char *[]){ (char *)"sh", (char *)"-c", script, NULL }, 300 * USEC_PER_MSEC);
	bg = wait_pid_file(f, pidfile);
	run_until_done(f);
	assert_int_equal(f->error, -ETIME);
	assert_true(wait_dead(bg));
}

static void test_not_found(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run(f, (char *[]){ (char *)"/nonexistent/token-helper", NULL },
			     30 * USEC_PER_SEC),
			 -ENOENT);
	assert_string_equal(f->why,
			    "\"/nonexistent/token-helper\": cannot run: No such file or directory");
}

static void test_not_found_in_path(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run(f, (char *[]){ (char *)"imapidled-no-such-helper", NULL }, 0),
			 -ENOENT);
}

static void test_nothing_printed(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run(f, (char *[]){ (char *)"true", NULL }, 0), -ENODATA);
	assert_string_equal(f->why, "\"true\" printed nothing on its first line");
}

static void test_empty_first_line(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run(f, (char *[]){ (char *)"printf", (char *)"\\r\\nlater\\n", NULL }, 0),
			 -ENODATA);
}

static void test_nul_byte(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run(f, (char *[]){ (char *)"printf", (char *)"ab\\000cd\\n", NULL }, 0),
			 -EBADMSG);
	assert_string_equal(f->why, "the first line \"printf\" printed contains a NUL byte");
}

static void test_huge_line(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run_sh(f, "head -c 1000000 /dev/zero | tr '\\0' a"), -E2BIG);
	assert_string_equal(f->why, "the first line \"sh\" printed is longer than 65536 bytes");
}

static void test_line_just_fits(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run_sh(f, "head -c 65536 /dev/zero | tr '\\0' b; echo; echo more"), 0);
	assert_int_equal(strlen(f->line), 65536);
}

static void test_huge_output_after_line(void **state)
{
	struct fixture *f = *state;

	/* Read and dropped beyond the cap: the command must not block on a full pipe. */
	assert_int_equal(run_sh(f, "echo tok; head -c 4000000 /dev/zero"), 0);
	assert_string_equal(f->line, "tok");
}

/* ---- The child's world -------------------------------------------------------------------- */

static void test_no_shell(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run(f, (char *[]){ (char *)"echo", (char *)"$HOME;`id`|x", NULL }, 0), 0);
	assert_string_equal(f->line, "$HOME;`id`|x");
}

static void test_empty_sigmask(void **state)
{
	struct fixture *f = *state;

	/* The test blocks SIGCHLD, as the daemon does; the command must not inherit that. */
	assert_int_equal(run_sh(f, "grep SigBlk /proc/self/status"), 0);
	assert_string_equal(f->line, "SigBlk:\t0000000000000000");
}

static void test_default_dispositions(void **state)
{
	struct fixture *f = *state;
	struct sigaction old, ign = { .sa_handler = SIG_IGN };

	/* The daemon ignores SIGPIPE. */
	assert_int_equal(sigaction(SIGPIPE, &ign, &old), 0);
	assert_int_equal(run_sh(f, "grep SigIgn /proc/self/status"), 0);
	assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
	/* Only glibc's internal real-time signals (32, 33) are beyond sigfillset()'s reach. */
	assert_int_equal(strncmp(f->line, "SigIgn:\t", 8), 0);
	assert_int_equal(strtoull(f->line + 8, NULL, 16) & 0x7fffffffULL, 0);
}

static void test_stdio_and_fds(void **state)
{
	struct fixture *f = *state;
	_cleanup_close_ int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC on purpose */
	_cleanup_free_ char *script = NULL;

	assert_true(leak >= 3);
	assert_true(asprintf(&script,
			     "if [ -e /proc/$$/fd/%d ]; then echo leaked; else "
			     "readlink /proc/$$/fd/0; fi", leak) > 0);
	assert_int_equal(run_sh(f, script), 0);
	assert_string_equal(f->line, "/dev/null");
}

static void test_own_process_group(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run_sh(f, "set -- $(cat /proc/$$/stat); "
				   "[ \"$5\" = \"$$\" ] && echo own-group || echo shared"),
			 0);
	assert_string_equal(f->line, "own-group");
}

/* ---- stderr ------------------------------------------------------------------------------- */

static void test_stderr_logged_token_scrubbed(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run_sh(f, "echo 'refreshing the token' >&2; echo tok-secret-987; "
				   "echo 'debug: got tok-secret-987 ok' >&2"),
			 0);
	assert_string_equal(f->line, "tok-secret-987");
	assert_true(log_capture_has(&f->logs, LABEL ": stderr: refreshing the token"));
	assert_true(log_capture_has(&f->logs, LABEL ": stderr: debug: got *** ok"));
	assert_false(log_capture_has(&f->logs, "tok-secret-987"));
}

static void test_stderr_of_failure(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run_sh(f, "echo tok-failed-456; echo 'oops tok-failed-456' >&2; "
				   "printf 'no newline' >&2; exit 1"),
			 -EIO);
	assert_true(log_capture_has(&f->logs, LABEL ": stderr: oops ***"));
	assert_true(log_capture_has(&f->logs, LABEL ": stderr: no newline"));
	assert_false(log_capture_has(&f->logs, "tok-failed-456"));
}

static void test_stderr_capped(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(run_sh(f, "head -c 3000 /dev/zero | tr '\\0' x >&2; echo >&2; "
				   "head -c 100000 /dev/zero | tr '\\0' y >&2; echo tok"),
			 0);
	assert_string_equal(f->line, "tok");
	assert_true(log_capture_has(&f->logs, "xxx [truncated]"));
	assert_true(log_capture_has(
	    &f->logs, LABEL ": stderr: [more than 16384 bytes, the rest is not shown]"));
}

/* ---- Lifetime ----------------------------------------------------------------------------- */

static void test_free_while_running(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *pidfile = path_join(f->dir, "pids");
	_cleanup_free_ char *script = NULL;
	pid_t leader, bg;
	int status;

	assert_true(asprintf(&script, "sleep 30 & echo $$ $! > %s; wait", pidfile) > 0);
	start(f, (char *[]){ (char *)"sh", (char *)"-c", script, NULL }, 30 * USEC_PER_SEC);
	leader = wait_pid_file(f, pidfile);
	{
		FILE *s = fopen(pidfile, "re");
		int a, b;

		assert_non_null(s);
		assert_int_equal(fscanf(s, "%d %d", &a, &b), 2);
		fclose(s);
		bg = b;
	}
	f->job = spawn_job_free(f->job);
	/* The leader is reaped already, the group is gone, and no callback follows. */
	assert_int_equal(waitpid(leader, &status, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	assert_true(wait_dead(bg));
	loop_run_for(f->loop, 300 * USEC_PER_MSEC);
	assert_int_equal(f->calls, 0);
}

static void test_free_after_exit_before_dispatch(void **state)
{
	struct fixture *f = *state;

	start(f, (char *[]){ (char *)"echo", (char *)"x", NULL }, 0);
	usleep(100 * 1000); /* exited, its SIGCHLD and output pending */
	f->job = spawn_job_free(f->job);
	loop_run_for(f->loop, 200 * USEC_PER_MSEC);
	assert_int_equal(f->calls, 0);
}

static void test_free_spawn_failure_before_dispatch(void **state)
{
	struct fixture *f = *state;

	start(f, (char *[]){ (char *)"/nonexistent/x", NULL }, 0);
	f->job = spawn_job_free(f->job);
	loop_run_for(f->loop, 100 * USEC_PER_MSEC);
	assert_int_equal(f->calls, 0);
}

static void test_free_in_callback(void **state)
{
	struct fixture *f = *state;

	f->free_in_callback = true;
	assert_int_equal(run(f, (char *[]){ (char *)"echo", (char *)"tok", NULL }, 0), 0);
	assert_null(f->job);
	f->calls = 0;
	assert_int_equal(run(f, (char *[]){ (char *)"false", NULL }, 0), -EIO);
	assert_null(f->job);
	f->calls = 0;
	assert_int_equal(run(f, (char *[]){ (char *)"/nonexistent/x", NULL }, 0), -ENOENT);
	assert_null(f->job);
	loop_run_for(f->loop, 100 * USEC_PER_MSEC);
	assert_int_equal(f->calls, 1);
}

static void test_invalid(void **state)
{
	struct fixture *f = *state;
	struct spawn_job *j = NULL;

	assert_int_equal(spawn_capture(NULL, (char *[]){ (char *)"echo", NULL }, NULL, 0, on_done,
				       f, &j),
			 -EINVAL);
	assert_int_equal(spawn_capture(f->loop, NULL, NULL, 0, on_done, f, &j), -EINVAL);
	assert_int_equal(spawn_capture(f->loop, (char *[]){ NULL }, NULL, 0, on_done, f, &j),
			 -EINVAL);
	assert_int_equal(spawn_capture(f->loop, (char *[]){ (char *)"", NULL }, NULL, 0, on_done,
				       f, &j),
			 -EINVAL);
	assert_int_equal(spawn_capture(f->loop, (char *[]){ (char *)"echo", NULL }, NULL, 0, NULL,
				       f, &j),
			 -EINVAL);
	assert_null(j);
	assert_null(spawn_job_free(NULL));
	assert_false(spawn_job_running(NULL));
}

static void test_many_in_parallel(void **state)
{
	struct fixture *f = *state;
	struct spawn_job *jobs[20] = {};
	char arg[20][16];

	for (size_t i = 0; i < ELEMENTSOF(jobs); i++) {
		snprintf(arg[i], sizeof(arg[i]), "t%zu", i);
		assert_int_equal(spawn_capture(f->loop, (char *[]){ (char *)"echo", arg[i], NULL },
					       LABEL, 0, on_done, f, &jobs[i]),
				 0);
	}
	LOOP_RUN_UNTIL(f->loop, f->calls >= ELEMENTSOF(jobs), WAIT_MS * USEC_PER_MSEC);
	assert_int_equal(f->calls, ELEMENTSOF(jobs));
	for (size_t i = 0; i < ELEMENTSOF(jobs); i++)
		spawn_job_free(jobs[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_echo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_first_line_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_final_newline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exit_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_killed_by_signal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_kills_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_found_in_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nothing_printed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_first_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nul_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_just_fits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_output_after_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_shell, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_sigmask, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_dispositions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stdio_and_fds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_own_process_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stderr_logged_token_scrubbed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stderr_of_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stderr_capped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_while_running, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_after_exit_before_dispatch, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_free_spawn_failure_before_dispatch, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_free_in_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_in_parallel, setup, teardown),
	};
	sigset_t mask;

	/* What the manager sets up for the whole daemon (proc/spawn.h, Requirements). */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
