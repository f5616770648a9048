#include "status.h"

#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"

/* A failure's own words are in the log; the status line has room for a glimpse. */
#define REASON_MAX 40

struct status {
	sd_event *event;
	sd_event_source *timer; /* armed while an update is due */
	usec_t interval;
	usec_t last_sent;       /* CLOCK_MONOTONIC */
	status_collect_fn collect;
	void *userdata;
	char line[256];         /* the last line sent */
};

static const char *reason_text(enum backoff_class c, const char *why, char *buf, size_t size)
{
	size_t n;

	switch (c) {
	case BACKOFF_AUTH:
		return "auth failed";
	case BACKOFF_TOO_MANY:
		return "too many connections";
	case BACKOFF_MISSING_MAILBOX:
		return "mailbox missing";
	case BACKOFF_FINAL:
		return "refused until reload";
	default:
		break;
	}
	n = strlen(why);
	if (n <= REASON_MAX)
		return why;
	n = REASON_MAX;
	while (n > 0 && ((unsigned char)why[n] & 0xC0) == 0x80) /* not inside a UTF-8 sequence */
		n--;
	snprintf(buf, size, "%.*s…", (int)n, why);
	return buf;
}

static void format_last_mail(usec_t when, char *buf, size_t size)
{
	time_t t = (time_t)(when / USEC_PER_SEC), now = time(NULL);
	struct tm tm, today;

	if (!localtime_r(&t, &tm) || !localtime_r(&now, &today)) {
		snprintf(buf, size, "?");
		return;
	}
	if (tm.tm_year == today.tm_year && tm.tm_yday == today.tm_yday)
		strftime(buf, size, "%H:%M", &tm);
	else
		strftime(buf, size, "%Y-%m-%d %H:%M", &tm);
}

void status_format(const struct status_counts *c, char *buf, size_t size)
{
	char reason[REASON_MAX + 8], when[32];
	size_t n = 0;

#define APPEND(...)                                                              \
	do {                                                                     \
		if (n < size)                                                    \
			n += (size_t)MAX(0, snprintf(buf + n, size - n, __VA_ARGS__)); \
	} while (0)

	if (size == 0)
		return;
	buf[0] = '\0';
	if (c->phase) {
		APPEND("%s", c->phase);
		return;
	}
	APPEND("%zu/%zu mailboxes idle", c->idle, c->mailboxes);
	if (c->accounts_failing > 0) {
		APPEND(" · %zu account%s reconnecting", c->accounts_failing,
		       c->accounts_failing == 1 ? "" : "s");
		if (c->reason)
			APPEND(" (%s)", reason_text(c->reason_class, c->reason, reason,
						    sizeof(reason)));
	}
	if (c->last_mail > 0) {
		format_last_mail(c->last_mail, when, sizeof(when));
		APPEND(" · last mail %s", when);
	}
#undef APPEND
}

static void status_send(struct status *s, const char *extra)
{
	struct status_counts c = {};
	char line[sizeof(s->line)];
	int r;

	s->collect(s->userdata, &c);
	status_format(&c, line, sizeof(line));
	if (!extra && streq(line, s->line))
		return;
	r = sd_notifyf(0, "%s%sSTATUS=%s", strempty(extra), extra ? "\n" : "", line);
	if (r < 0)
		log_debug_errno(r, "Cannot send the status to the service manager: %m, ignoring");
	snprintf(s->line, sizeof(s->line), "%s", line);
	s->last_sent = now_usec(CLOCK_MONOTONIC);
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
	status_send(userdata, NULL);
	return 0;
}

void status_changed(struct status *s)
{
	int enabled = SD_EVENT_OFF;
	usec_t at;
	int r;

	if (!s)
		return;
	at = MAX(s->last_sent + s->interval, now_usec(CLOCK_MONOTONIC));
	sd_event_source_get_enabled(s->timer, &enabled);
	if (enabled != SD_EVENT_OFF)
		return; /* already due: it will read the counts then */
	/* A timer in the past still waits for the next iteration, so one loop iteration's
	 * changes (a hundred watches going idle together) make one line. */
	r = sd_event_source_set_time(s->timer, at);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
	if (r < 0)
		log_debug_errno(r, "Cannot schedule a status update: %m, ignoring");
}

void status_send_now(struct status *s, const char *extra)
{
	if (!s)
		return;
	sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
	status_send(s, extra);
}

struct status *status_free(struct status *s)
{
	if (!s)
		return NULL;
	sd_event_source_disable_unref(s->timer);
	sd_event_unref(s->event);
	return mfree(s);
}

int status_new(sd_event *e, usec_t interval, status_collect_fn collect, void *userdata,
	       struct status **ret)
{
	struct status *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->event = sd_event_ref(e);
	s->interval = interval;
	s->collect = collect;
	s->userdata = userdata;
	r = sd_event_add_time(e, &s->timer, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC, on_timer, s);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
	if (r < 0) {
		status_free(s);
		return r;
	}
	*ret = s;
	return 0;
}
