/* sink/desktop: a popup per new message through org.freedesktop.Notifications ([desktop]).
 *
 * The sink opens its own connection to the user's session bus (sd_bus_open_user():
 * $DBUS_SESSION_BUS_ADDRESS, else $XDG_RUNTIME_DIR/bus) and drives it from the given sd-event
 * loop. Nothing here blocks: the socket's connect() is local, authentication and Hello run
 * from the loop, matches are added with the async calls, every method call is asynchronous.
 *
 * The bus:
 *   - Events pushed while the connection is being set up wait for it (at most
 *     SINK_DESKTOP_CONNECT_TIMEOUT_USEC; a bus that has not answered by then counts as a
 *     failed attempt).
 *   - No bus to connect to, or the connection lost (its Disconnected: the bus restarted or
 *     dropped us): said once at warning, with the address once known. Until a connection stands,
 *     every event is accepted without a popup, as without a server: a popup is of the moment,
 *     and neither the other sinks nor the mailboxes wait for the desktop. Attempts follow
 *     backoff.h's schedule with SINK_DESKTOP_RETRY_MAX_USEC as its cap: within a second of
 *     losing a connection that had stood for a minute, then retry-later with jitter. Failed
 *     attempts are logged at debug; the new connection once at notice. It gets its matches
 *     again and GetCapabilities is asked again. Everything tied to the old connection goes
 *     with it: calls in flight, and the popups (ids, tokens, a burst's summary), so that no
 *     id of the old server is ever sent to the new one (a burst then gets a new summary).
 *   - Neither $DBUS_SESSION_BUS_ADDRESS nor $XDG_RUNTIME_DIR: said once; never attempted.
 *
 * The server (Desktop Notifications Specification 1.2):
 *   - GetCapabilities is asked first and cached; events pushed meanwhile wait for the answer
 *     (at most SINK_DESKTOP_CAPS_TIMEOUT_USEC). It is asked again whenever the owner of
 *     org.freedesktop.Notifications changes (NameOwnerChanged).
 *   - No server (the name has no owner): said once at warning; events are accepted without a
 *     popup until the name appears again, which is said once at notice. The server's
 *     signals are only believed from the unique name that owns the name.
 *
 * One message (mail.received): Notify(app_name "imapidled", icon "mail-unread", summary = the
 * sender's display name, else address, body = the subject (markup-escaped when the server
 * has "body-markup"), hints category "email.arrived", urgency (byte 0/1/2) and desktop-entry
 * when configured, expire_timeout as sink_desktop_expire_ms() says). With the "actions"
 * capability: "default" and "open" (labelled "Open"; some servers ignore "default") when
 * on_click is set and the open action is on, "mark-read" when that action is on.
 *
 * Bursts, per account and mailbox: when more than summary_threshold messages arrive within
 * summary_window (a mail.summary event from a catch-up counts as its count and always starts
 * one), they become one summary notification, "N new messages in ACCOUNT/MAILBOX", that is
 * updated in place (replaces_id) while more keep arriving less than summary_window apart.
 * The single popups of that window are closed when the summary appears. At most one Notify
 * per summary is in flight; updates meanwhile are folded into the next one. Its "open"
 * action gets a mail.summary event's environment.
 *
 * Actions (ActionInvoked, after the ActivationToken signal that some servers send first):
 *   default, open: on_click runs with posix_spawnp(), never through a shell, in a session of
 *       its own (it is a mail client that outlives the click), stdin and stdout on /dev/null,
 *       stderr the daemon's, the daemon's environment without any IMAPIDLED_*,
 *       XDG_ACTIVATION_TOKEN or DESKTOP_STARTUP_ID, plus the event's IMAPIDLED_* variables
 *       (mail_event_to_env()) and XDG_ACTIVATION_TOKEN when the server sent a token. It is
 *       reaped from the loop; its exit status is logged (0 at debug, else at warning). It
 *       is not waited for, nor stopped, when the sink goes.
 *   mark-read: ctx->mark_seen(ctx->hook_userdata, e) (debug log when NULL).
 * A message that becomes \Seen or is expunged (sink_desktop_message_changed()) has its popup
 * closed with CloseNotification.
 *
 * Per-notification state (id → event, the last activation token) is freed on
 * NotificationClosed, on a server change, and beyond SINK_DESKTOP_POPUPS_MAX (oldest first).
 *
 * Acceptance (sink.h): from the loop, in push order, when the event's Notify was handed to
 * the bus, when it was folded into a summary whose Notify is sent or due, or when the sink
 * gave up on it (no bus, no server, a call that could not be sent). A Notify handed to a
 * connection that is then lost is not sent again.
 *
 * Requirement: SIGCHLD blocked (sd-event watches on_click's children through it). */
#pragma once

#include <stdint.h>

#include <systemd/sd-event.h>

#include "config.h"
#include "event.h"
#include "sink/sink.h"

#define SINK_DESKTOP_POPUPS_MAX 256
#define SINK_DESKTOP_CAPS_TIMEOUT_USEC (5 * USEC_PER_SEC)
#define SINK_DESKTOP_CALL_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define SINK_DESKTOP_CONNECT_TIMEOUT_USEC (5 * USEC_PER_SEC)
#define SINK_DESKTOP_RETRY_MAX_USEC (1 * USEC_PER_MINUTE)

struct sink_desktop;

/* A new sink on ctx->event with ctx->config->desktop (copied). A missing session bus is not
 * an error (see above). -ENOMEM, or an sd-event error. */
int sink_desktop_new(const struct sink_context *ctx, struct sink_desktop **ret);

/* NULL-safe; returns NULL. No callback after this; events not yet accepted are dropped. The
 * bus connection is closed without flushing (that could block), also when the loop exits
 * first; a pending attempt is cancelled. */
struct sink_desktop *sink_desktop_free(struct sink_desktop *s);
static inline void sink_desktop_freep(struct sink_desktop **s)
{
	sink_desktop_free(*s);
}
#define _cleanup_sink_desktop_ _cleanup_(sink_desktop_freep)

/* Queue e (taking a reference) for a popup from the loop. -EINVAL, -ENOMEM. */
int sink_desktop_push(struct sink_desktop *s, struct mail_event *e);

/* The message account/mailbox/uidvalidity/uid became \Seen or was expunged: close its popup
 * (at once, or as soon as the server has answered its Notify). */
void sink_desktop_message_changed(struct sink_desktop *s, const char *account,
				  const char *mailbox, uint32_t uidvalidity, uint32_t uid,
				  enum mail_change change);

/* The dispatcher's view of this sink (sink/sink.h). */
extern const struct sink_ops sink_desktop_ops;

/* ---- The pure parts, exposed for tests -------------------------------------------------- */

/* s with & < > " ' as XML entities (the body markup of the spec is a subset of XML). A new
 * string, NULL on ENOMEM. */
char *sink_desktop_escape_markup(const char *s);

/* The notification's summary line: the sender of one message (display name, else address,
 * else "Unknown sender"); "N new messages in ACCOUNT/MAILBOX" for count messages ("1 new
 * message ..."), used for a summary event (count = e->count) and for a burst. A new string,
 * NULL on ENOMEM. */
char *sink_desktop_summary_text(const struct mail_event *e, uint64_t count, bool summary);

/* expire_timeout for Notify: USEC_INFINITY → -1 (the server's default), 0 → 0 (never),
 * anything else → milliseconds, rounded up, at most INT32_MAX. */
int32_t sink_desktop_expire_ms(usec_t timeout);
