/* sink/exec: run a command for new mail ([exec NAME] in the config).
 *
 * One run at a time per sink. A run carries a batch: every event queued when it starts. Events
 * pushed while a run is in progress wait, and cause exactly one more run after it, however many
 * there are (a burst becomes one `mbsync`, not fifty).
 *
 * A run spawns cfg->command with posix_spawnp(), never through a shell (with `shell = yes` the
 * config has already made it {"/bin/sh", "-c", TEXT}: that shell is the user's choice). The
 * child gets:
 *   - environment: the daemon's own (PATH, HOME, DISPLAY, DBUS_SESSION_BUS_ADDRESS, ... are
 *     needed by mbsync and notify-send) without any inherited IMAPIDLED_* variable, plus the
 *     batch's ten IMAPIDLED_* variables (event.h, mail_event_to_env()):
 *       one event:      exactly that event's variables;
 *       several events: the newest event's variables, except IMAPIDLED_EVENT=mail.summary and
 *                       IMAPIDLED_COUNT = the number of messages in the batch (a summary event
 *                       counts as its count). When the batch spans several accounts,
 *                       IMAPIDLED_ACCOUNT is empty; when it spans several mailboxes (or
 *                       UIDVALIDITY values), IMAPIDLED_MAILBOX, _UIDVALIDITY and _UID are
 *                       empty: a value that is true of only part of the batch would make
 *                       `mbsync "$IMAPIDLED_ACCOUNT"` skip the rest. stdin has every event.
 *   - stdin: one mail_event_to_json() line per event, oldest first. Written without blocking;
 *     a command that never reads stdin, or closes it, is fine: what it does not take is dropped
 *     when it exits.
 *   - stdout, stderr: read line by line and logged at info ("exec sync: stderr: ..."); lines
 *     longer than SINK_EXEC_LINE_MAX bytes are cut. What the command leaves in the pipes when it
 *     exits is still read; a background process that keeps them open is not waited for.
 *   - no other file descriptor, an empty signal mask, default signal dispositions, and a
 *     process group of its own (so that a timeout reaches everything it started).
 * Never a secret: argv comes from the config, the environment from the event.
 *
 * cfg->timeout (0 or USEC_INFINITY: none; CLOCK_BOOTTIME, so time suspended counts): SIGTERM
 * to the process group, then SIGKILL after SINK_EXEC_KILL_GRACE_USEC. The exit is logged: status 0 at debug, anything else (non-zero
 * status, a signal) at warning.
 *
 * cfg->post_command (like goimapnotify's onNewMailPost) runs once after the command, with the
 * same environment, stdin and timeout, but only when the command exited with status 0: after
 * a failed `mbsync`, `notmuch new` has nothing new to index. Its failure is only logged.
 *
 * Bounds: at most SINK_EXEC_QUEUE_MAX events wait for a run. Beyond that the oldest waiting
 * event is coalesced: it is accepted at once (the follow-up run that covers it is already due)
 * and appears in the next run's IMAPIDLED_COUNT but not on its stdin. A run's stdin holds at most
 * SINK_EXEC_STDIN_MAX bytes: the newest events that fit. Both cases are logged at warning.
 *
 * Requirements (process-wide, set up by the manager at start-up): SIGCHLD blocked, because
 * sd-event watches children through it; SIGPIPE ignored or blocked, because a command that
 * closes its stdin early must cost a write error, not the daemon. sink_exec_new() checks both
 * and fails with -EBUSY otherwise.
 *
 * Everything runs on the given sd-event loop; nothing here blocks. */
#pragma once

#include <stdbool.h>

#include <systemd/sd-event.h>

#include "config.h"
#include "event.h"
#include "sink/sink.h"

#define SINK_EXEC_QUEUE_MAX 1000
#define SINK_EXEC_STDIN_MAX (4u * 1024 * 1024)
#define SINK_EXEC_LINE_MAX 1024
#define SINK_EXEC_KILL_GRACE_USEC (5 * USEC_PER_SEC)

struct sink_exec;

/* Called once per pushed event, when it is durably accepted: for exec, when the run that
 * carries it on stdin has started. Also when the sink gave up on it: a spawn failure (ENOENT,
 * ...) is logged (as an error the first time, then at debug until the command starts again)
 * and its batch counts as handled, since retrying a broken command forever would hold up the
 * mailbox. And for an event coalesced beyond SINK_EXEC_QUEUE_MAX (see above).
 *
 * Always called from the event loop, never from inside sink_exec_push(), in push order. e is
 * borrowed for the call (take a reference to keep it). The callee may push more events but may
 * not free the sink. */

/* A new idle sink on loop e. cfg is copied (it may be freed after the call); accepted may be
 * NULL. -EINVAL for a config without a command, -EBUSY when the signal requirements above are
 * not met, -ENOMEM. */
int sink_exec_new(sd_event *e, const struct config_exec *cfg, sink_accepted_fn accepted,
		  void *userdata, struct sink_exec **ret);

/* NULL-safe; returns NULL. No callback after this: events not yet accepted are dropped (the
 * mailbox state was not advanced past them). A running command gets SIGTERM (its whole process
 * group) and is left to the loop, which reaps it when it exits, or kills it with SIGKILL and
 * reaps it when the loop itself is freed: waiting out a grace period here would block. */
struct sink_exec *sink_exec_free(struct sink_exec *s);
static inline void sink_exec_freep(struct sink_exec **s)
{
	sink_exec_free(*s);
}
#define _cleanup_sink_exec_ _cleanup_(sink_exec_freep)

/* Queue e for the next run (taking a reference of its own) and start that run from the event
 * loop if none is in progress. -EINVAL, -ENOMEM (then nothing was queued). */
int sink_exec_push(struct sink_exec *s, struct mail_event *e);

/* True while a run (command or post_command) is in progress, events wait for one, or accepted
 * callbacks are still due. */
bool sink_exec_busy(const struct sink_exec *s);

/* The dispatcher's view of this sink (sink/sink.h). */
extern const struct sink_ops sink_exec_ops;
