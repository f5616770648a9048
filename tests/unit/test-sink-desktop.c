#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <systemd/sd-bus.h>

#include "helpers.h"
#include "log.h"
#include "sink/desktop.h"

/* The pure parts directly; the bus parts against a private dbus-daemon with a small fake
 * notification server on a second connection of the same loop, and fake dispatcher hooks
 * (acceptance, mark_seen). */

#define UIDVALIDITY 1700000000u
#define WAIT_MS 5000

extern char **environ;

/* ---- Pure parts ------------------------------------------------------------------------- */

static void test_escape_markup(void **state)
{
	char *s = sink_desktop_escape_markup("Tom & Jerry <3 \"x\" 'y' ok");

	assert_string_equal(s, "Tom &amp; Jerry &lt;3 &quot;x&quot; &apos;y&apos; ok");
	free(s);
	s = sink_desktop_escape_markup("");
	assert_string_equal(s, "");
	free(s);
	s = sink_desktop_escape_markup("Grüße <b>");
	assert_string_equal(s, "Grüße &lt;b&gt;");
	free(s);
}

static struct mail_event *received_in(const char *mailbox, const char *name,
				      const char *address, uint32_t uid)
{
	struct mail_event_input in = {
		.account = "work",
		.mailbox = mailbox,
		.uidvalidity = UIDVALIDITY,
		.uid = uid,
		.subject = "Lunch?",
		.from = { name, address },
	};
	struct mail_event *e = NULL;

	assert_int_equal(mail_event_new_received(&in, &e), 0);
	return e;
}

static struct mail_event *received(const char *name, const char *address, uint32_t uid)
{
	return received_in("INBOX", name, address, uid);
}

static void test_summary_text(void **state)
{
	struct mail_event *e = received("Jörg Müller", "joerg@example.com", 7), *sum = NULL;
	char *s;

	s = sink_desktop_summary_text(e, 1, false);
	assert_string_equal(s, "Jörg Müller");
	free(s);
	s = sink_desktop_summary_text(e, 12, true);
	assert_string_equal(s, "12 new messages in work/INBOX");
	free(s);
	s = sink_desktop_summary_text(e, 1, true);
	assert_string_equal(s, "1 new message in work/INBOX");
	free(s);
	mail_event_unref(e);

	e = received(NULL, "only@example.com", 8);
	s = sink_desktop_summary_text(e, 1, false);
	assert_string_equal(s, "only@example.com");
	free(s);
	mail_event_unref(e);
	e = received("", NULL, 9);
	s = sink_desktop_summary_text(e, 1, false);
	assert_string_equal(s, "Unknown sender");
	free(s);
	mail_event_unref(e);

	assert_int_equal(mail_event_new_summary("home", "Lists/x", UIDVALIDITY, 3, 40, 30, &sum), 0);
	s = sink_desktop_summary_text(sum, sum->count, true);
	assert_string_equal(s, "30 new messages in home/Lists/x");
	free(s);
	mail_event_unref(sum);
}

static void test_expire_ms(void **state)
{
	assert_int_equal(sink_desktop_expire_ms(USEC_INFINITY), -1);
	assert_int_equal(sink_desktop_expire_ms(0), 0);
	assert_int_equal(sink_desktop_expire_ms(5 * USEC_PER_SEC), 5000);
	assert_int_equal(sink_desktop_expire_ms(1), 1); /* rounded up, never "never" */
	assert_int_equal(sink_desktop_expire_ms(1500 * USEC_PER_MSEC + 1), 1501);
	assert_int_equal(sink_desktop_expire_ms(USEC_PER_DAY), 86400000);
	assert_int_equal(sink_desktop_expire_ms(USEC_INFINITY - 1), INT32_MAX);
}

/* ---- A private bus and a fake server ---------------------------------------------------- */

struct call {
	char *method, *summary, *body;
	uint32_t id, replaces_id;
	size_t n_actions;
};

struct fixture {
	char dir[64];
	pid_t bus_pid;
	sd_event *loop;
	sd_bus *server;
	sd_bus_slot *vtable;
	uint32_t next_id;
	struct call calls[64];
	size_t n_calls;
	struct config config;
	struct sink_desktop *sink;
	struct mail_event *accepted[64];
	size_t n_accepted;
	const struct mail_event *marked[8];
	size_t n_marked;
	int mark_result;
	size_t n_lost, n_back; /* log lines: the bus lost, connected (again) */
};

static struct call *record(struct fixture *f, const char *method)
{
	struct call *c;

	assert_true(f->n_calls < ELEMENTSOF(f->calls));
	c = &f->calls[f->n_calls++];
	*c = (struct call){ .method = strdup(method) };
	return c;
}

static int server_notify(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct fixture *f = userdata;
	struct call *c = record(f, "Notify");
	const char *app, *icon, *summary, *body, *action;
	int r;

	r = sd_bus_message_read(m, "susss", &app, &c->replaces_id, &icon, &summary, &body);
	assert_true(r >= 0);
	assert_string_equal(app, "imapidled");
	c->summary = strdup(summary);
	c->body = strdup(body);
	assert_true(sd_bus_message_enter_container(m, 'a', "s") >= 0);
	while ((r = sd_bus_message_read(m, "s", &action)) > 0)
		c->n_actions++;
	c->id = c->replaces_id ? c->replaces_id : f->next_id++;
	return sd_bus_reply_method_return(m, "u", c->id);
}

static int server_close(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct fixture *f = userdata;
	struct call *c = record(f, "CloseNotification");

	assert_true(sd_bus_message_read(m, "u", &c->id) >= 0);
	return sd_bus_reply_method_return(m, "");
}

static int server_caps(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	return sd_bus_reply_method_return(m, "as", 2, "actions", "body-markup");
}

static const sd_bus_vtable server_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD("GetCapabilities", "", "as", server_caps, 0),
	SD_BUS_METHOD("Notify", "susssasa{sv}i", "u", server_notify, 0),
	SD_BUS_METHOD("CloseNotification", "u", "", server_close, 0),
	SD_BUS_SIGNAL("ActionInvoked", "us", 0),
	SD_BUS_SIGNAL("NotificationClosed", "uu", 0),
	SD_BUS_VTABLE_END,
};

static void bus_start(struct fixture *f, char *address, size_t size)
{
	char conf[128], arg[160];
	FILE *c;
	int p[2];
	posix_spawn_file_actions_t fa;
	ssize_t n;
	size_t len = 0;

	snprintf(conf, sizeof(conf), "%s/bus.conf", f->dir);
	c = fopen(conf, "we");
	assert_non_null(c);
	fprintf(c, "<busconfig><type>session</type><listen>unix:path=%s/bus</listen>"
		   "<auth>EXTERNAL</auth><policy context=\"default\">"
		   "<allow send_destination=\"*\" eavesdrop=\"true\"/>"
		   "<allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n",
		f->dir);
	fclose(c);
	snprintf(arg, sizeof(arg), "--config-file=%s", conf);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	/* As root it says it cannot raise its fd limit: harmless, and not ours to show. */
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	assert_int_equal(posix_spawn(&f->bus_pid, "/usr/bin/dbus-daemon", &fa, NULL,
				     (char *[]){ "dbus-daemon", arg, "--nofork", "--nopidfile",
						 "--print-address=1", NULL },
				     environ),
			 0);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	while (len < size - 1 && (n = read(p[0], address + len, size - 1 - len)) > 0) {
		len += (size_t)n;
		if (memchr(address, '\n', len))
			break;
	}
	close(p[0]);
	address[len] = '\0';
	address[strcspn(address, "\n")] = '\0';
	assert_true(len > 0);
}

static void server_start(struct fixture *f, const char *address)
{
	int r;

	assert_true(sd_bus_new(&f->server) >= 0);
	assert_true(sd_bus_set_address(f->server, address) >= 0);
	assert_true(sd_bus_set_bus_client(f->server, true) >= 0);
	assert_true(sd_bus_start(f->server) >= 0);
	assert_true(sd_bus_add_object_vtable(f->server, &f->vtable,
					     "/org/freedesktop/Notifications",
					     "org.freedesktop.Notifications", server_vtable, f) >= 0);
	r = sd_bus_request_name(f->server, "org.freedesktop.Notifications", 0);
	if (r < 0)
		fprintf(stderr, "request_name: %s\n", strerror(-r));
	assert_true(r >= 0);
	assert_true(sd_bus_attach_event(f->server, f->loop, 0) >= 0);
}

static void on_accepted(void *userdata, struct mail_event *e)
{
	struct fixture *f = userdata;

	assert_true(f->n_accepted < ELEMENTSOF(f->accepted));
	f->accepted[f->n_accepted++] = mail_event_ref(e);
}

static int fake_mark_seen(void *userdata, const struct mail_event *e)
{
	struct fixture *f = userdata;

	assert_true(f->n_marked < ELEMENTSOF(f->marked));
	f->marked[f->n_marked++] = e;
	return f->mark_result;
}

static bool run_for(struct fixture *f, bool (*cond)(struct fixture *f, size_t n), size_t n,
		    unsigned ms)
{
	return LOOP_RUN_UNTIL(f->loop, cond(f, n), (usec_t)ms * USEC_PER_MSEC);
}

static bool run_until(struct fixture *f, bool (*cond)(struct fixture *f, size_t n), size_t n)
{
	return run_for(f, cond, n, WAIT_MS);
}

static bool have_calls(struct fixture *f, size_t n)
{
	return f->n_calls >= n;
}

static bool have_accepted(struct fixture *f, size_t n)
{
	return f->n_accepted >= n;
}

static bool have_marked(struct fixture *f, size_t n)
{
	return f->n_marked >= n;
}

static bool have_lost(struct fixture *f, size_t n)
{
	return f->n_lost >= n;
}

static bool have_back(struct fixture *f, size_t n)
{
	return f->n_back >= n;
}

static void sink_start(struct fixture *f)
{
	struct sink_context ctx = {
		.event = f->loop,
		.config = &f->config,
		.accepted = on_accepted,
		.userdata = f,
		.mark_seen = fake_mark_seen,
		.hook_userdata = f,
	};

	assert_int_equal(sink_desktop_new(&ctx, &f->sink), 0);
}

static char *on_click[] = { "true", NULL };

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char address[256], path[128];

	assert_non_null(f);
	tmpdir_make(f->dir, sizeof(f->dir), "sink-desktop");
	bus_start(f, address, sizeof(address));
	/* The sink gets the socket without the guid the daemon printed, as a systemd user
	 * session sets it: a bus restarted at the same path has another guid. */
	snprintf(path, sizeof(path), "unix:path=%s/bus", f->dir);
	assert_int_equal(setenv("DBUS_SESSION_BUS_ADDRESS", path, 1), 0);
	assert_int_equal(sd_event_new(&f->loop), 0);
	server_start(f, address);
	f->next_id = 1;
	f->config.desktop = (struct config_desktop){
		.action_open = true,
		.action_mark_read = true,
		.urgency = URGENCY_NORMAL,
		.expire_timeout = USEC_INFINITY,
		.summary_threshold = 3,
		.summary_window = 2 * USEC_PER_SEC,
		.on_click = on_click,
	};
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	sink_desktop_free(f->sink);
	for (size_t i = 0; i < f->n_accepted; i++)
		mail_event_unref(f->accepted[i]);
	for (size_t i = 0; i < f->n_calls; i++) {
		free(f->calls[i].method);
		free(f->calls[i].summary);
		free(f->calls[i].body);
	}
	sd_bus_slot_unref(f->vtable);
	sd_bus_flush_close_unref(f->server);
	sd_event_unref(f->loop);
	if (f->bus_pid > 0) {
		kill(f->bus_pid, SIGTERM);
		waitpid(f->bus_pid, NULL, 0);
	}
	tmpdir_remove(f->dir);
	unsetenv("DBUS_SESSION_BUS_ADDRESS");
	log_set_sink(NULL, NULL);
	log_set_level(LOG_WARNING);
	free(f);
	return 0;
}

/* The dbus-daemon dies (SIGKILL: nobody is told that the server's name is gone, and the
 * socket stays behind, refusing), and the fake server's connection with it. */
static void bus_stop(struct fixture *f)
{
	assert_int_equal(kill(f->bus_pid, SIGKILL), 0);
	assert_int_equal(waitpid(f->bus_pid, NULL, 0), f->bus_pid);
	f->bus_pid = 0;
	f->vtable = sd_bus_slot_unref(f->vtable);
	f->server = sd_bus_close_unref(f->server);
}

/* A new dbus-daemon at the same path, and a new server whose ids start at 1 again: the ids
 * the old one gave out are now someone else's. */
static void bus_restart(struct fixture *f)
{
	char address[256];

	bus_start(f, address, sizeof(address));
	server_start(f, address);
	f->next_id = 1;
}

static void count_bus_lines(int level, const char *line, void *userdata)
{
	struct fixture *f = userdata;

	if (strstr(line, "desktop: lost the session bus"))
		f->n_lost++;
	else if (strstr(line, "connected to the session bus"))
		f->n_back++;
}

/* Bus comings and goings are said at warning and notice: count them. */
static void watch_bus_lines(struct fixture *f)
{
	log_set_level(LOG_NOTICE);
	log_set_sink(count_bus_lines, f);
}

static void settle(struct fixture *f)
{
	for (int i = 0; i < 10; i++)
		sd_event_run(f->loop, 10 * USEC_PER_MSEC);
}

static void test_notify_then_mark_read(void **state)
{
	struct fixture *f = *state;
	struct mail_event *e = received("Alice", "alice@example.com", 42);

	sink_start(f);
	assert_int_equal(sink_desktop_push(f->sink, e), 0);
	assert_int_equal(f->n_accepted, 0); /* never from inside push */
	assert_true(run_until(f, have_calls, 1));
	assert_true(run_until(f, have_accepted, 1));
	assert_ptr_equal(f->accepted[0], e);
	assert_string_equal(f->calls[0].method, "Notify");
	assert_string_equal(f->calls[0].summary, "Alice");
	assert_string_equal(f->calls[0].body, "Lunch?");
	assert_int_equal(f->calls[0].n_actions, 6); /* default, open, mark-read: key + label */

	/* The server's id must be known before the click means anything: one loop turn. */
	settle(f);
	assert_true(sd_bus_emit_signal(f->server, "/org/freedesktop/Notifications",
				       "org.freedesktop.Notifications", "ActionInvoked", "us",
				       f->calls[0].id, "mark-read") >= 0);
	assert_true(run_until(f, have_marked, 1));
	assert_ptr_equal(f->marked[0], e);
	mail_event_unref(e);
}

static void test_message_changed_closes_popup(void **state)
{
	struct fixture *f = *state;
	struct mail_event *a = received("Alice", NULL, 5), *b = received("Bob", NULL, 6);
	struct mail_event *c = received("Carol", NULL, 7);

	sink_start(f);
	/* Read elsewhere before its popup went out: none, but accepted all the same. */
	assert_int_equal(sink_desktop_push(f->sink, c), 0);
	sink_desktop_message_changed(f->sink, "work", "INBOX", UIDVALIDITY, 7, MAIL_CHANGE_SEEN);
	assert_true(run_until(f, have_accepted, 1));
	settle(f);
	assert_int_equal(f->n_calls, 0);

	/* The server has both Notify calls, the sink not yet their answers: the close waits
	 * for the id. */
	assert_int_equal(sink_desktop_push(f->sink, a), 0);
	assert_int_equal(sink_desktop_push(f->sink, b), 0);
	assert_true(run_until(f, have_calls, 2));
	sink_desktop_message_changed(f->sink, "work", "INBOX", UIDVALIDITY, 6, MAIL_CHANGE_SEEN);
	assert_true(run_until(f, have_calls, 3));
	assert_string_equal(f->calls[2].method, "CloseNotification");
	assert_int_equal(f->calls[2].id, f->calls[1].id);

	/* Afterwards: at once. Other mailboxes, UIDVALIDITY values and UIDs are left alone. */
	sink_desktop_message_changed(f->sink, "work", "Other", UIDVALIDITY, 5, MAIL_CHANGE_SEEN);
	sink_desktop_message_changed(f->sink, "work", "INBOX", UIDVALIDITY + 1, 5,
				     MAIL_CHANGE_SEEN);
	sink_desktop_message_changed(f->sink, "work", "INBOX", UIDVALIDITY, 5,
				     MAIL_CHANGE_EXPUNGED);
	assert_true(run_until(f, have_calls, 4));
	assert_string_equal(f->calls[3].method, "CloseNotification");
	assert_int_equal(f->calls[3].id, f->calls[0].id);
	settle(f);
	assert_int_equal(f->n_calls, 4);
	assert_int_equal(f->n_accepted, 3);
	mail_event_unref(a);
	mail_event_unref(b);
	mail_event_unref(c);
}

static void test_summary_has_no_mark_read(void **state)
{
	struct fixture *f = *state;
	struct mail_event *sum = NULL;

	sink_start(f);
	assert_int_equal(mail_event_new_summary("work", "INBOX", UIDVALIDITY, 1, 30, 30, &sum), 0);
	assert_int_equal(sink_desktop_push(f->sink, sum), 0);
	assert_true(run_until(f, have_calls, 1));
	assert_string_equal(f->calls[0].summary, "30 new messages in work/INBOX");
	assert_string_equal(f->calls[0].body, "");
	assert_int_equal(f->calls[0].n_actions, 4); /* no mark-read on a summary */
	settle(f);
	assert_true(sd_bus_emit_signal(f->server, "/org/freedesktop/Notifications",
				       "org.freedesktop.Notifications", "ActionInvoked", "us",
				       f->calls[0].id, "mark-read") >= 0);
	settle(f);
	assert_int_equal(f->n_marked, 0);
	mail_event_unref(sum);
}

static void test_no_bus(void **state)
{
	struct fixture *f = *state;
	struct mail_event *e = received("Alice", NULL, 1);

	assert_int_equal(setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus", 1), 0);
	sink_start(f);
	assert_int_equal(sink_desktop_push(f->sink, e), 0);
	assert_true(run_until(f, have_accepted, 1));
	assert_int_equal(f->n_calls, 0);
	mail_event_unref(e);
}

static size_t count_calls(struct fixture *f, size_t since, const char *method)
{
	size_t n = 0;

	for (size_t i = since; i < f->n_calls; i++)
		n += streq(f->calls[i].method, method);
	return n;
}

static void push_all(struct fixture *f, struct mail_event **e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		assert_int_equal(sink_desktop_push(f->sink, e[i]), 0);
}

static void unref_all(struct mail_event **e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mail_event_unref(e[i]);
}

/* The bus restarts under a burst's summary: meanwhile events are accepted unseen; then the
 * sink is back on the new bus, and no id of the old server reaches the new one (its ids
 * start at 1 again, so a stale CloseNotification or replaces_id would hit a new popup). */
static void test_bus_restart(void **state)
{
	struct fixture *f = *state;
	struct mail_event *e[8], *other = received_in("Lists", "Bob", NULL, 100);
	size_t before;

	for (uint32_t i = 0; i < ELEMENTSOF(e); i++)
		e[i] = received("Alice", NULL, i + 1);
	f->config.desktop.summary_window = 60 * USEC_PER_SEC; /* the burst outlasts the outage */
	watch_bus_lines(f);
	sink_start(f);
	assert_int_equal(sink_desktop_push(f->sink, other), 0);
	push_all(f, e, 1);
	assert_true(run_until(f, have_calls, 2));
	settle(f); /* their ids are known */
	push_all(f, e + 1, 4);
	/* More than 3 in the window: a summary, and the single popup closed. */
	assert_true(run_until(f, have_calls, 4));
	assert_true(run_until(f, have_accepted, 6));
	settle(f);
	assert_int_equal(count_calls(f, 0, "CloseNotification"), 1);
	assert_string_equal(f->calls[f->n_calls - 1].summary, "5 new messages in work/INBOX");

	bus_stop(f);
	assert_true(run_until(f, have_lost, 1));
	before = f->n_calls;
	push_all(f, e + 5, 1);
	assert_true(run_until(f, have_accepted, 7)); /* at once, unseen */
	assert_int_equal(f->n_calls, before);

	bus_restart(f);
	/* The first attempt came within a second of the loss and may have failed: the next
	 * one follows within two more. */
	assert_true(run_for(f, have_back, 1, 10000));
	before = f->n_calls;
	/* Read elsewhere: its popup went with the old server, nothing to close. */
	sink_desktop_message_changed(f->sink, "work", "Lists", UIDVALIDITY, 100,
				     MAIL_CHANGE_SEEN);
	push_all(f, e + 6, 1);
	assert_true(run_until(f, have_calls, before + 1));
	assert_true(run_until(f, have_accepted, 8));
	settle(f);
	assert_int_equal(f->n_calls, before + 1);
	assert_string_equal(f->calls[before].method, "Notify");
	assert_int_equal(f->calls[before].replaces_id, 0); /* a new summary, not the old one's id */
	assert_string_equal(f->calls[before].summary, "6 new messages in work/INBOX");

	/* The new popup's id works for the new server's signals. */
	assert_true(sd_bus_emit_signal(f->server, "/org/freedesktop/Notifications",
				       "org.freedesktop.Notifications", "NotificationClosed", "uu",
				       f->calls[before].id, 2) >= 0);
	push_all(f, e + 7, 1);
	assert_true(run_until(f, have_calls, before + 2));
	assert_int_equal(f->calls[before + 1].replaces_id, f->calls[before].id);
	assert_int_equal(f->n_lost, 1);
	assert_int_equal(f->n_back, 1);
	unref_all(e, ELEMENTSOF(e));
	mail_event_unref(other);
}

/* No bus when the sink starts: said once, events accepted unseen; the bus appears later. */
static void test_bus_appears_later(void **state)
{
	struct fixture *f = *state;
	struct mail_event *a = received("Alice", NULL, 1), *b = received("Bob", NULL, 2);

	watch_bus_lines(f);
	bus_stop(f);
	sink_start(f);
	assert_int_equal(sink_desktop_push(f->sink, a), 0);
	assert_true(run_until(f, have_accepted, 1));
	assert_int_equal(f->n_calls, 0);
	bus_restart(f);
	assert_true(run_for(f, have_back, 1, 10000));
	assert_int_equal(sink_desktop_push(f->sink, b), 0);
	assert_true(run_until(f, have_calls, 1));
	assert_string_equal(f->calls[0].summary, "Bob");
	assert_int_equal(f->n_lost, 0);
	mail_event_unref(a);
	mail_event_unref(b);
}

/* A socket that takes the connection but never answers: the events that wait for the
 * connection are accepted when its deadline passes. */
static void test_bus_that_never_answers(void **state)
{
	struct fixture *f = *state;
	struct mail_event *e = received("Alice", NULL, 1);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char address[128];
	usec_t start;
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/silent", f->dir);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	snprintf(address, sizeof(address), "unix:path=%s", sa.sun_path);
	assert_int_equal(setenv("DBUS_SESSION_BUS_ADDRESS", address, 1), 0);
	sink_start(f);
	start = now_usec(CLOCK_MONOTONIC);
	assert_int_equal(sink_desktop_push(f->sink, e), 0);
	assert_true(run_for(f, have_accepted, 1,
			    (SINK_DESKTOP_CONNECT_TIMEOUT_USEC + 3 * USEC_PER_SEC) / USEC_PER_MSEC));
	assert_true(now_usec(CLOCK_MONOTONIC) - start >= SINK_DESKTOP_CONNECT_TIMEOUT_USEC / 2);
	assert_int_equal(f->n_calls, 0);
	close(fd);
	mail_event_unref(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_markup),
		cmocka_unit_test(test_summary_text),
		cmocka_unit_test(test_expire_ms),
		cmocka_unit_test_setup_teardown(test_notify_then_mark_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_message_changed_closes_popup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_has_no_mark_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_bus, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bus_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bus_appears_later, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bus_that_never_answers, setup, teardown),
	};
	sigset_t mask;

	/* As the manager does: sd-event watches on_click's children through SIGCHLD. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	log_set_level(LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
