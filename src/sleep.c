#include "sleep.h"

#include <systemd/sd-bus.h>

#include "log.h"
#include "util.h"

struct sleep_monitor {
	sd_bus *bus;       /* the system bus, or NULL without one */
	sd_bus_slot *match;
	void (*resumed)(void *userdata);
	void *userdata;
};

static int on_prepare_for_sleep(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
	struct sleep_monitor *m = userdata;
	int going = 0;
	int r;

	r = sd_bus_message_read(msg, "b", &going);
	if (r < 0) {
		log_debug_errno(r, "logind: malformed PrepareForSleep: %m, ignoring");
		return 0;
	}
	if (going) {
		log_info("system is going to sleep");
		return 0;
	}
	log_info("system resumed: checking every connection");
	m->resumed(m->userdata);
	return 0;
}

/* The AddMatch reply: only now is it known whether the bus took the subscription. */
static int on_match_added(sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
	const sd_bus_error *e = sd_bus_message_get_error(reply);

	if (e)
		log_warning("system bus: cannot subscribe to logind's PrepareForSleep (%s), "
			    "ignoring: a resume is noticed only by timeouts", e->message);
	else
		log_info("system bus: listening for suspend and resume");
	return 0;
}

struct sleep_monitor *sleep_monitor_free(struct sleep_monitor *m)
{
	if (!m)
		return NULL;
	sd_bus_slot_unref(m->match);
	sd_bus_close_unref(m->bus);
	return mfree(m);
}

/* Connecting to the bus socket is a local connect(); the authentication, Hello and AddMatch
 * all run from the loop (the match is asynchronous), so nothing here waits on the bus. */
static int sleep_monitor_connect(struct sleep_monitor *m, sd_event *e)
{
	int r;

	r = sd_bus_open_system_with_description(&m->bus, "imapidled-sleep");
	if (r < 0)
		return r;
	r = sd_bus_attach_event(m->bus, e, SD_EVENT_PRIORITY_NORMAL);
	if (r < 0)
		return r;
	return sd_bus_match_signal_async(m->bus, &m->match, "org.freedesktop.login1",
					 "/org/freedesktop/login1",
					 "org.freedesktop.login1.Manager", "PrepareForSleep",
					 on_prepare_for_sleep, on_match_added, m);
}

int sleep_monitor_new(sd_event *e, void (*resumed)(void *userdata), void *userdata,
		      struct sleep_monitor **ret)
{
	struct sleep_monitor *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	m->resumed = resumed;
	m->userdata = userdata;
	r = sleep_monitor_connect(m, e);
	if (r == -ENOMEM) {
		sleep_monitor_free(m);
		return r;
	}
	if (r < 0) {
		log_info_errno(r, "no system bus (%m): a suspend is noticed only by timeouts");
		m->match = sd_bus_slot_unref(m->match);
		m->bus = sd_bus_close_unref(m->bus);
	}
	*ret = m;
	return 0;
}
