#include "sink/exec.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include "log.h"
#include "proc/child.h"

extern char **environ;

#define ENV_PREFIX "IMAPIDLED_"
#define READ_CHUNK 4096
/* Per wake-up, so that a chatty command cannot starve the rest of the loop. */
#define READ_BUDGET (64 * 1024)
/* After the command exited its pipes hold at most their capacity, unless something it left
 * behind keeps writing: stop there. */
#define DRAIN_MAX (1024 * 1024)

enum phase {
	PHASE_IDLE,
	PHASE_COMMAND,
	PHASE_POST,
	_PHASE_MAX,
};

/* Log prefixes after "exec NAME: ", per phase. */
static const char *const phase_label[_PHASE_MAX] = {
	[PHASE_IDLE] = "",
	[PHASE_COMMAND] = "",
	[PHASE_POST] = "post_command: ",
};

/* One of the command's output pipes, split into log lines. */
struct line_reader {
	struct sink_exec *sink;
	const char *stream; /* "stdout" or "stderr" */
	int fd;
	sd_event_source *source;
	char line[SINK_EXEC_LINE_MAX + 1];
	size_t len;
	bool truncated;
};

/* The one process a sink runs at a time (the command, then maybe post_command). */
struct exec_child {
	pid_t pid; /* 0 when none; also its process group */
	bool term_sent;
	sd_event_source *exit_source;
	sd_event_source *timer_source;
	int stdin_fd;
	sd_event_source *stdin_source;
	size_t stdin_off; /* into sink->input */
	struct line_reader out, err;
};

struct sink_exec {
	sd_event *event;
	char *name;
	char **command, **post_command;
	usec_t timeout;
	sink_accepted_fn accepted;
	void *userdata;

	/* Events for the next run, oldest first (owned references); see the header's bounds. */
	struct mail_event **pending;
	size_t n_pending, allocated_pending;
	uint64_t pending_messages; /* including the coalesced ones */
	uint64_t pending_coalesced;
	bool pending_many_accounts, pending_many_mailboxes;

	/* Coalesced events waiting for their accepted() call (owned references). */
	struct mail_event **accepting;
	size_t n_accepting, allocated_accepting;

	/* Starts runs and calls accepted(): both from the loop, never inside push. */
	sd_event_source *defer_source;

	enum phase phase;
	struct exec_child child;
	/* The current run's IMAPIDLED_* variables and stdin, kept for post_command. */
	char **run_env;
	char *input;
	size_t input_len;
	/* Per phase: the last spawn failed, so the next one is logged at debug only. */
	bool failing[_PHASE_MAX];
};

/* ---- Event arrays ---------------------------------------------------------------------- */

static int events_reserve(struct mail_event ***a, size_t n, size_t *allocated)
{
	struct mail_event **na;
	size_t want;

	if (n < *allocated)
		return 0;
	want = MAX((size_t)8, *allocated * 2);
	na = reallocarray(*a, want, sizeof(**a));
	if (!na)
		return -ENOMEM;
	*a = na;
	*allocated = want;
	return 0;
}

static void events_unref(struct mail_event **a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mail_event_unref(a[i]);
}

static bool same_mailbox(const struct mail_event *a, const struct mail_event *b)
{
	return streq(a->account, b->account) && streq(a->mailbox, b->mailbox) &&
	       a->uidvalidity == b->uidvalidity;
}

/* ---- Output: lines to the log ---------------------------------------------------------- */

static void reader_init(struct line_reader *r, struct sink_exec *s, const char *stream)
{
	*r = (struct line_reader){ .sink = s, .stream = stream, .fd = -1 };
}

static void reader_emit(struct line_reader *r)
{
	struct sink_exec *s = r->sink;

	/* A CRLF line end is one line end, not a '?' at the end of every line. */
	if (!r->truncated && r->len > 0 && r->line[r->len - 1] == '\r')
		r->len--;
	r->line[r->len] = '\0';
	log_info("exec %s: %s%s: %s%s", s->name, phase_label[s->phase], r->stream, r->line,
		 r->truncated ? " [truncated]" : "");
	r->len = 0;
	r->truncated = false;
}

static void reader_feed(struct line_reader *r, const char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (buf[i] == '\n')
			reader_emit(r);
		else if (r->len < SINK_EXEC_LINE_MAX)
			r->line[r->len++] = buf[i];
		else
			r->truncated = true;
	}
}

static void reader_close(struct line_reader *r)
{
	if (r->len > 0 || r->truncated)
		reader_emit(r); /* a last line without '\n' */
	r->source = sd_event_source_disable_unref(r->source);
	r->fd = safe_close(r->fd);
}

/* 1: more may come later; 0: end of file; negative errno: read error. */
static int reader_read(struct line_reader *r, size_t budget)
{
	char buf[READ_CHUNK];

	while (budget > 0) {
		ssize_t n = read(r->fd, buf, MIN(sizeof(buf), budget));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? 1 : -errno;
		if (n == 0)
			return 0;
		reader_feed(r, buf, (size_t)n);
		budget -= (size_t)n;
	}
	return 1;
}

static int on_output(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct line_reader *r = userdata;
	int k = reader_read(r, READ_BUDGET);

	if (k < 0)
		log_warning_errno(k, "exec %s: %s%s: read failed, ignoring the rest: %m",
				  r->sink->name, phase_label[r->sink->phase], r->stream);
	if (k <= 0)
		reader_close(r);
	return 0;
}

/* After the exit: what the command wrote is all in the pipe now. */
static void reader_drain(struct line_reader *r)
{
	if (r->fd >= 0)
		(void)reader_read(r, DRAIN_MAX);
	reader_close(r);
}

static int reader_start(struct line_reader *r, int fd)
{
	int k = sd_event_add_io(r->sink->event, &r->source, fd, EPOLLIN, on_output, r);

	if (k < 0)
		return k;
	r->fd = fd;
	return 0;
}

/* ---- Input: the batch on stdin ---------------------------------------------------------- */

static void stdin_close(struct exec_child *c)
{
	c->stdin_source = sd_event_source_disable_unref(c->stdin_source);
	c->stdin_fd = safe_close(c->stdin_fd);
}

static int on_stdin(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
	struct sink_exec *s = userdata;
	struct exec_child *c = &s->child;

	while (c->stdin_off < s->input_len) {
		ssize_t n = write(fd, s->input + c->stdin_off, s->input_len - c->stdin_off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0) {
			/* EPIPE: it closed stdin without reading all of it; its choice. */
			log_full_errno(errno == EPIPE ? LOG_DEBUG : LOG_WARNING, errno,
				       "exec %s: %sstdin: %m, %zu bytes not written", s->name,
				       phase_label[s->phase], s->input_len - c->stdin_off);
			break;
		}
		c->stdin_off += (size_t)n;
	}
	stdin_close(c);
	return 0;
}

static int stdin_start(struct sink_exec *s, int fd)
{
	struct exec_child *c = &s->child;
	int r;

	c->stdin_fd = fd;
	c->stdin_off = 0;
	if (s->input_len == 0) {
		stdin_close(c); /* end of file at once */
		return 0;
	}
	r = sd_event_add_io(s->event, &c->stdin_source, fd, EPOLLOUT, on_stdin, s);
	if (r < 0)
		c->stdin_fd = -1; /* the caller still owns fd on failure */
	return r;
}

/* ---- Spawning ---------------------------------------------------------------------------- */

/* The daemon's environment without IMAPIDLED_*, then the run's variables. The strings are
 * borrowed: free only the array. */
static int envp_new(char *const *run_env, char ***ret)
{
	size_t n = 0;
	char **v;

	v = calloc(strv_length(environ) + strv_length(run_env) + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (char **p = environ; p && *p; p++)
		if (strncmp(*p, ENV_PREFIX, strlen(ENV_PREFIX)) != 0)
			v[n++] = *p;
	for (char *const *p = run_env; p && *p; p++)
		v[n++] = *p;
	*ret = v;
	return 0;
}

/* ---- The running child ------------------------------------------------------------------- */

/* The whole group first (what the command started), then the leader itself in case it left
 * the group. Only while the leader is unreaped: until then its pid, and so the group id,
 * cannot be reused by an unrelated process. */
static void child_signal(struct exec_child *c, int sig)
{
	if (c->pid <= 0 || !c->exit_source)
		return;
	(void)kill(-c->pid, sig);
	(void)sd_event_source_send_child_signal(c->exit_source, sig, NULL, 0);
}

static void child_terminate(struct exec_child *c)
{
	child_signal(c, SIGTERM);
	child_signal(c, SIGCONT); /* a stopped process acts on SIGTERM only once continued */
}

static void child_close_io(struct exec_child *c)
{
	stdin_close(c);
	reader_close(&c->out);
	reader_close(&c->err);
}

/* Drops every source; with process ownership set, sd-event SIGKILLs and reaps a leader that
 * has not exited (only on error paths: normally it has). */
static void child_release(struct exec_child *c)
{
	child_close_io(c);
	c->timer_source = sd_event_source_disable_unref(c->timer_source);
	c->exit_source = sd_event_source_disable_unref(c->exit_source);
	c->pid = 0;
	c->term_sent = false;
}

static void run_continue(struct sink_exec *s, bool success);

static bool log_exit(struct sink_exec *s, const siginfo_t *si)
{
	const char *label = phase_label[s->phase];

	if (si->si_code == CLD_EXITED && si->si_status == 0) {
		log_debug("exec %s: %sexited with status 0", s->name, label);
		return true;
	}
	if (si->si_code == CLD_EXITED)
		log_warning("exec %s: %sexited with status %d", s->name, label, si->si_status);
	else
		log_warning("exec %s: %skilled by signal SIG%s", s->name, label,
			    strna(sigabbrev_np(si->si_status)));
	return false;
}

/* A command handed over by sink_exec_free() has exited: drop the loop's reference, and with it
 * the source (sd-event reaps the zombie). */
static void orphan_exited(sd_event_source *source)
{
	sd_event_source_ref(source);
	(void)sd_event_source_set_floating(source, false);
	sd_event_source_unref(source);
}

static int on_child_exit(sd_event_source *source, const siginfo_t *si, void *userdata)
{
	struct sink_exec *s = userdata;
	struct exec_child *c;
	bool success;

	if (!s) {
		orphan_exited(source);
		return 0;
	}
	c = &s->child;
	reader_drain(&c->out);
	reader_drain(&c->err);
	success = log_exit(s, si);
	/* Unreferencing the source inside its own callback is fine: sd-event frees it, and reaps
	 * the zombie, once the callback has returned. */
	child_release(c);
	run_continue(s, success);
	return 0;
}

static int on_timeout(sd_event_source *source, uint64_t usec, void *userdata)
{
	struct sink_exec *s = userdata;
	struct exec_child *c = &s->child;
	char buf[32];

	if (c->term_sent) {
		log_warning("exec %s: %sstill running %s after SIGTERM, sending SIGKILL", s->name,
			    phase_label[s->phase],
			    format_duration(buf, sizeof(buf), SINK_EXEC_KILL_GRACE_USEC));
		child_signal(c, SIGKILL);
		return 0;
	}
	log_warning("exec %s: %stimed out after %s, killed", s->name, phase_label[s->phase],
		    format_duration(buf, sizeof(buf), s->timeout));
	child_terminate(c);
	c->term_sent = true;
	if (sd_event_source_set_time_relative(source, SINK_EXEC_KILL_GRACE_USEC) < 0 ||
	    sd_event_source_set_enabled(source, SD_EVENT_ONESHOT) < 0)
		child_signal(c, SIGKILL); /* no grace period without a timer */
	return 0;
}

static int child_watch(struct sink_exec *s, pid_t pid)
{
	struct exec_child *c = &s->child;
	int r;

	c->pid = pid;
	r = sd_event_add_child(s->event, &c->exit_source, pid, WEXITED, on_child_exit, s);
	if (r < 0)
		return r;
	r = sd_event_source_set_child_process_own(c->exit_source, true);
	if (r < 0 || s->timeout == 0 || s->timeout == USEC_INFINITY)
		return r;
	/* CLOCK_BOOTTIME (DESIGN.md, Clocks): a command that was running across a suspend is most
	 * likely stuck on a connection the suspend killed. */
	return sd_event_add_time_relative(s->event, &c->timer_source, CLOCK_BOOTTIME, s->timeout,
					  0, on_timeout, s);
}

/* After a successful spawn: the exit watch, the timeout and the pipes. Consumes the three fds,
 * also on failure. */
static int child_setup(struct sink_exec *s, pid_t pid, int in_fd, int out_fd, int err_fd)
{
	struct exec_child *c = &s->child;
	int r;

	r = child_watch(s, pid);
	if (r >= 0)
		r = stdin_start(s, in_fd);
	if (r >= 0)
		in_fd = -1;
	if (r >= 0)
		r = reader_start(&c->out, out_fd);
	if (r >= 0)
		out_fd = -1;
	if (r >= 0)
		r = reader_start(&c->err, err_fd);
	if (r >= 0)
		err_fd = -1;
	safe_close(in_fd);
	safe_close(out_fd);
	safe_close(err_fd);
	return r;
}

/* Spawns argv for the current run; the run's phase must be set. */
static int child_start(struct sink_exec *s, char **argv)
{
	_cleanup_close_ int in_r = -1, in_w = -1, out_r = -1, out_w = -1, err_r = -1, err_w = -1;
	_cleanup_free_ char **envp = NULL;
	int p[2], r;
	pid_t pid;

	r = child_pipe_new(p, 1);
	if (r < 0)
		return r;
	in_r = p[0], in_w = p[1];
	r = child_pipe_new(p, 0);
	if (r < 0)
		return r;
	out_r = p[0], out_w = p[1];
	r = child_pipe_new(p, 0);
	if (r < 0)
		return r;
	err_r = p[0], err_w = p[1];
	r = envp_new(s->run_env, &envp);
	if (r < 0)
		return r;
	r = child_spawn(argv, envp, (const int[]){ in_r, out_w, err_w }, 0, &pid);
	if (r < 0)
		return r;
	r = child_setup(s, pid, TAKE_FD(in_w), TAKE_FD(out_r), TAKE_FD(err_r));
	if (r < 0) {
		/* Half watched at best: kill it and reap it right here. SIGKILL cannot be caught,
		 * so the wait is short (ECHILD if the exit source's ownership reaped it already). */
		(void)kill(-pid, SIGKILL);
		child_release(&s->child);
		(void)waitpid(pid, NULL, 0);
		return r;
	}
	return 0;
}

/* ---- Runs -------------------------------------------------------------------------------- */

static void log_spawn(struct sink_exec *s, char *const *argv, int r)
{
	bool *failing = &s->failing[s->phase];

	if (r >= 0) {
		if (*failing)
			log_notice("exec %s: %s%s starts again", s->name, phase_label[s->phase],
				   argv[0]);
		*failing = false;
		return;
	}
	/* Once per change of state: a broken command would otherwise log at every new mail. */
	log_full_errno(*failing ? LOG_DEBUG : LOG_ERR, r,
		       "exec %s: %scannot run %s: %m%s", s->name, phase_label[s->phase], argv[0],
		       s->phase == PHASE_COMMAND ? "; the events count as handled" : "");
	*failing = true;
}

static void kick(struct sink_exec *s)
{
	int r = sd_event_source_set_enabled(s->defer_source, SD_EVENT_ONESHOT);

	if (r < 0)
		log_error_errno(r, "exec %s: cannot schedule a run: %m", s->name);
}

static void run_end(struct sink_exec *s)
{
	s->phase = PHASE_IDLE;
	s->run_env = strv_free(s->run_env);
	s->input = mfree(s->input);
	s->input_len = 0;
	if (s->n_pending > 0)
		kick(s); /* the one follow-up run for what arrived meanwhile */
}

static void run_continue(struct sink_exec *s, bool success)
{
	int r;

	if (s->phase == PHASE_COMMAND && success && s->post_command) {
		s->phase = PHASE_POST;
		r = child_start(s, s->post_command);
		log_spawn(s, s->post_command, r);
		if (r >= 0)
			return;
	}
	run_end(s);
}

static int env_set(char **env, const char *name, const char *value)
{
	size_t len = strlen(ENV_PREFIX) + strlen(name);

	for (char **p = env; p && *p; p++) {
		char *n;

		if (strncmp(*p, ENV_PREFIX, strlen(ENV_PREFIX)) != 0 ||
		    strncmp(*p + strlen(ENV_PREFIX), name, strlen(name)) != 0 || (*p)[len] != '=')
			continue;
		if (asprintf(&n, ENV_PREFIX "%s=%s", name, value) < 0)
			return -ENOMEM;
		free(*p);
		*p = n;
		return 0;
	}
	return -ENOENT;
}

/* What a batch tells its command, as described in the header. */
struct batch {
	struct mail_event **events; /* owned references */
	size_t n;
	uint64_t messages, coalesced;
	bool many_accounts, many_mailboxes;
};

static int batch_env(const struct batch *b, char ***ret)
{
	_cleanup_strv_free_ char **env = NULL;
	char count[32];
	int r;

	r = mail_event_to_env(b->events[b->n - 1], &env);
	if (r < 0)
		return r;
	if (b->n > 1 || b->coalesced > 0) {
		snprintf(count, sizeof(count), "%" PRIu64, b->messages);
		r = env_set(env, "EVENT", MAIL_EVENT_SUMMARY);
		if (r >= 0)
			r = env_set(env, "COUNT", count);
		if (r >= 0 && b->many_accounts)
			r = env_set(env, "ACCOUNT", "");
		for (size_t i = 0; r >= 0 && b->many_mailboxes && i < 3; i++)
			r = env_set(env, (const char *const[]){ "MAILBOX", "UIDVALIDITY", "UID" }[i],
				    "");
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(env);
	return 0;
}

/* The newest events whose lines fit SINK_EXEC_STDIN_MAX, oldest first. Encoded newest first
 * so that no more than the cap (and one line) is ever held. */
static int batch_input(const struct batch *b, char **ret, size_t *ret_len, size_t *ret_omitted)
{
	_cleanup_strv_free_ char **lines = NULL;
	time_t now = time(NULL);
	size_t first = b->n, total = 0, off = 0;
	char *buf;
	int r;

	lines = calloc(b->n + 1, sizeof(*lines));
	if (!lines)
		return -ENOMEM;
	while (first > 0) {
		_cleanup_free_ char *json = NULL;

		r = mail_event_to_json(b->events[first - 1], now, &json);
		if (r < 0)
			return r;
		if (total + strlen(json) + 1 > SINK_EXEC_STDIN_MAX)
			break;
		total += strlen(json) + 1;
		lines[--first] = TAKE_PTR(json);
	}
	buf = malloc(total + 1);
	if (!buf)
		return -ENOMEM;
	for (size_t i = first; i < b->n; i++) {
		size_t len = strlen(lines[i]);

		memcpy(buf + off, lines[i], len);
		buf[off + len] = '\n';
		off += len + 1;
	}
	buf[off] = '\0';
	/* strv_free() stops at the first NULL: move the lines down to the start. */
	memmove(lines, lines + first, (b->n - first) * sizeof(*lines));
	memset(lines + (b->n - first), 0, first * sizeof(*lines));
	*ret = buf;
	*ret_len = total;
	*ret_omitted = first;
	return 0;
}

static void batch_take(struct sink_exec *s, struct batch *b)
{
	*b = (struct batch){
		.events = TAKE_PTR(s->pending),
		.n = s->n_pending,
		.messages = s->pending_messages,
		.coalesced = s->pending_coalesced,
		.many_accounts = s->pending_many_accounts,
		.many_mailboxes = s->pending_many_mailboxes,
	};
	s->n_pending = s->allocated_pending = 0;
	s->pending_messages = s->pending_coalesced = 0;
	s->pending_many_accounts = s->pending_many_mailboxes = false;
}

static int run_prepare(struct sink_exec *s, const struct batch *b)
{
	size_t omitted = 0;
	int r;

	r = batch_env(b, &s->run_env);
	if (r < 0)
		return r;
	r = batch_input(b, &s->input, &s->input_len, &omitted);
	if (r < 0)
		return r;
	if (b->coalesced + omitted > 0)
		log_warning("exec %s: %" PRIu64 " of %" PRIu64 " events are not on stdin (queue or "
			    "size limit); IMAPIDLED_COUNT counts them",
			    s->name, b->coalesced + omitted, b->coalesced + b->n);
	return 0;
}

/* From the loop only: the batch is accepted right here, after its spawn. */
static void run_start(struct sink_exec *s)
{
	struct batch b;
	int r;

	batch_take(s, &b);
	s->phase = PHASE_COMMAND;
	r = run_prepare(s, &b);
	if (r < 0)
		log_error_errno(r, "exec %s: cannot prepare a run: %m; the events count as handled",
				s->name);
	else {
		r = child_start(s, s->command);
		log_spawn(s, s->command, r);
	}
	if (r < 0)
		run_end(s);
	for (size_t i = 0; i < b.n; i++) {
		if (s->accepted)
			s->accepted(s->userdata, b.events[i]);
		b.events[i] = mail_event_unref(b.events[i]);
	}
	free(b.events);
}

/* Coalesced events first: they were pushed before anything still pending. The array may grow
 * during a callback (a push into a full queue), hence the index. */
static void accept_coalesced(struct sink_exec *s)
{
	for (size_t i = 0; i < s->n_accepting; i++) {
		struct mail_event *e = TAKE_PTR(s->accepting[i]);

		if (s->accepted)
			s->accepted(s->userdata, e);
		mail_event_unref(e);
	}
	s->n_accepting = 0;
}

static int on_defer(sd_event_source *source, void *userdata)
{
	struct sink_exec *s = userdata;

	accept_coalesced(s);
	if (s->phase == PHASE_IDLE && s->n_pending > 0)
		run_start(s);
	return 0;
}

/* ---- Public ------------------------------------------------------------------------------ */

static int check_signals(void)
{
	struct sigaction sa;
	sigset_t mask;

	if (sigprocmask(SIG_SETMASK, NULL, &mask) < 0 || sigaction(SIGPIPE, NULL, &sa) < 0)
		return -errno;
	if (!sigismember(&mask, SIGCHLD))
		return -EBUSY;
	if (sa.sa_handler != SIG_IGN && !sigismember(&mask, SIGPIPE))
		return -EBUSY;
	return 0;
}

static int copy_config(struct sink_exec *s, const struct config_exec *cfg)
{
	s->name = strdup(cfg->name);
	s->command = strv_copy(cfg->command);
	if (!s->name || !s->command)
		return -ENOMEM;
	if (strv_length(cfg->post_command) > 0) {
		s->post_command = strv_copy(cfg->post_command);
		if (!s->post_command)
			return -ENOMEM;
	}
	s->timeout = cfg->timeout;
	return 0;
}

int sink_exec_new(sd_event *e, const struct config_exec *cfg, sink_accepted_fn accepted,
		  void *userdata, struct sink_exec **ret)
{
	_cleanup_sink_exec_ struct sink_exec *s = NULL;
	int r;

	if (!e || !cfg || !cfg->name || strv_length(cfg->command) == 0 || !ret)
		return -EINVAL;
	r = check_signals();
	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->event = sd_event_ref(e);
	s->accepted = accepted;
	s->userdata = userdata;
	s->child.stdin_fd = -1;
	reader_init(&s->child.out, s, "stdout");
	reader_init(&s->child.err, s, "stderr");
	r = copy_config(s, cfg);
	if (r < 0)
		return r;
	r = sd_event_add_defer(e, &s->defer_source, on_defer, s);
	if (r < 0)
		return r;
	r = sd_event_source_set_enabled(s->defer_source, SD_EVENT_OFF);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

/* Hands a running command to the loop (see the header): it gets SIGTERM now; the floating
 * exit source, owned by the loop and told so by its NULL userdata, reaps it later, and its
 * process ownership SIGKILLs and reaps it if the loop is freed first. */
static void child_orphan(struct exec_child *c)
{
	if (!c->exit_source)
		return;
	child_terminate(c);
	c->timer_source = sd_event_source_disable_unref(c->timer_source);
	(void)sd_event_source_set_userdata(c->exit_source, NULL);
	if (sd_event_source_set_floating(c->exit_source, true) >= 0)
		c->exit_source = sd_event_source_unref(c->exit_source);
	/* else: child_release() below SIGKILLs and reaps it, which is all that is left */
}

struct sink_exec *sink_exec_free(struct sink_exec *s)
{
	if (!s)
		return NULL;
	child_orphan(&s->child);
	child_release(&s->child);
	s->defer_source = sd_event_source_disable_unref(s->defer_source);
	events_unref(s->pending, s->n_pending);
	free(s->pending);
	events_unref(s->accepting, s->n_accepting);
	free(s->accepting);
	strv_free(s->run_env);
	free(s->input);
	strv_free(s->command);
	strv_free(s->post_command);
	free(s->name);
	sd_event_unref(s->event);
	return mfree(s);
}

/* Full queue: the oldest waiting event is coalesced (see the header). */
static int pending_coalesce_oldest(struct sink_exec *s)
{
	int r = events_reserve(&s->accepting, s->n_accepting, &s->allocated_accepting);

	if (r < 0)
		return r;
	s->accepting[s->n_accepting++] = s->pending[0];
	memmove(s->pending, s->pending + 1, (s->n_pending - 1) * sizeof(*s->pending));
	s->n_pending--;
	s->pending_coalesced++;
	return 0;
}

int sink_exec_push(struct sink_exec *s, struct mail_event *e)
{
	int r;

	if (!s || !e)
		return -EINVAL;
	if (s->n_pending >= SINK_EXEC_QUEUE_MAX)
		r = pending_coalesce_oldest(s);
	else
		r = events_reserve(&s->pending, s->n_pending, &s->allocated_pending);
	if (r < 0)
		return r;
	/* Comparing each event with the one before is enough: all agree iff neighbours do. */
	if (s->n_pending > 0) {
		const struct mail_event *newest = s->pending[s->n_pending - 1];

		s->pending_many_accounts |= !streq(newest->account, e->account);
		s->pending_many_mailboxes |= !same_mailbox(newest, e);
	}
	s->pending[s->n_pending++] = mail_event_ref(e);
	s->pending_messages += e->count;
	kick(s);
	return 0;
}

bool sink_exec_busy(const struct sink_exec *s)
{
	return s && (s->phase != PHASE_IDLE || s->n_pending > 0 || s->n_accepting > 0);
}

static int ops_new(const struct sink_context *ctx, const char *name, void **ret)
{
	const struct config_exec *cfg = config_find_exec(ctx->config, name);

	if (!cfg)
		return -ENOENT;
	return sink_exec_new(ctx->event, cfg, ctx->accepted, ctx->userdata,
			     (struct sink_exec **)ret);
}

static int ops_push(void *sink, struct mail_event *e)
{
	return sink_exec_push(sink, e);
}

static void *ops_free(void *sink)
{
	return sink_exec_free(sink);
}

static bool ops_busy(void *sink)
{
	const struct sink_exec *s = sink;

	return s->child.pid > 0;
}

const struct sink_ops sink_exec_ops = {
	.type = "exec",
	.new = ops_new,
	.push = ops_push,
	.free = ops_free,
	.busy = ops_busy,
};
