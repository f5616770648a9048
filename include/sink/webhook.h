/* sink/webhook: POST each event to a URL, signed, retried, spooled ([webhook NAME]).
 *
 * Acceptance and durability: push only queues the event in memory; it never touches the disk.
 * A defer source at SD_EVENT_PRIORITY_IDLE then writes every queued event into the sink's
 * spool (STATE_DIR/spool/NAME, see spool.h: each file fsynced, then one fsync of the directory
 * for all of them), so that the other sinks' work of the same loop iteration (the exec sink's
 * start, the desktop's Notify, at normal priority) is not held up by it. An event counts as
 * accepted only once it is in the spool: from the loop, in push order, after the directory
 * fsync; then its delivery starts. It is deleted from the spool after a 2xx.
 * So a SIGKILL, a reboot or a receiver that is down for hours loses nothing: at-least-once,
 * and the stable webhook-id lets the receiver make it effectively-once. Entries left by an
 * earlier run are delivered first, in their order.
 *
 * Spool full (spool_max) or not writable: the event is NOT accepted. It waits in memory, in
 * order, with every event pushed after it, and the sink logs once "spool full (N bytes):
 * holding new mail until the receiver takes some". Each time a request finishes (and every
 * SINK_WEBHOOK_SPOOL_RETRY_USEC), the waiting events are written and accepted, oldest first.
 * Because they are not accepted, the mailbox state does not advance past them: a restart
 * meanwhile finds them again on the server. Nothing is dropped silently.
 *
 * Request (Standard Webhooks): POST to cfg->url with the body as spooled (mail_event_to_json()
 * with the spool time as "timestamp"), and the headers
 *     webhook-id: EVENT ID (the same on every attempt)
 *     webhook-timestamp: Unix seconds of this attempt
 *     webhook-signature: v1,BASE64(HMAC-SHA256(key, id "." timestamp "." body))
 *                        (only with a secret; recomputed per attempt)
 *     content-type: application/json
 *     user-agent: imapidled/VERSION
 * plus cfg->headers. Timeout cfg->timeout; TLS verified (cfg->tls_ca_file or the system
 * store); redirects are not followed.
 *
 * Concurrency and order: up to cfg->max_in_flight requests at once, in spool order, but never
 * two of the same mailbox: an event waits while an earlier one of its mailbox is in flight or
 * waiting for a retry (head-of-line per mailbox, parallel across mailboxes). So every mailbox's
 * events arrive in order.
 *
 * Outcomes:
 *   2xx                         delivered: removed from the spool.
 *   network error, timeout,     retried after a delay: Retry-After when the answer has one
 *   408, 429, 5xx               (clamped to [1 s, 1 d]), otherwise attempt n waits a uniform
 *                               time in [1 s, min(10 min, 2^n s)] (full jitter above 1 s). A
 *                               2xx from the receiver ends the wait of every event held back by
 *                               a network error or 5xx: the receiver is back. After
 *                               cfg->max_retry_age since the event was spooled, the sink gives
 *                               up on it: logged as an error with the last failure, removed.
 *   410 Gone                    the sink is disabled until reload: logged once as an error;
 *                               events stay in the spool and new ones are still spooled.
 *   3xx, other 4xx, other       final for that event: logged as an error with the status and
 *                               the first SINK_WEBHOOK_LOG_BODY bytes of the answer (control
 *                               characters and non-ASCII bytes shown as '?'), removed.
 *
 * Batches (cfg->batch): one request carries up to SINK_WEBHOOK_BATCH_MAX events (and at most
 * SINK_WEBHOOK_BATCH_BYTES of them), taken in spool order under the same per-mailbox rule,
 * several of one mailbox allowed in the same batch in order. Body:
 *     {"type":"mail.batch","timestamp":NOW,"data":[EVENT,EVENT,...]}
 * each EVENT the document a single request would carry. webhook-id: "batch_" and the first 32
 * hex digits of sha256 of the event ids joined by "\n": the same batch always has the same id,
 * but a retry may carry a different batch, so receivers should de-duplicate per event
 * (data[i].data.id). The outcome applies to every event of the batch; max_in_flight still
 * bounds the requests.
 *
 * Memory: per spooled event only its small spool entry; bodies are read from disk per attempt.
 *
 * Everything runs on the given loop. Start-up (sink_webhook_new) does blocking work: fetching
 * the secret (a command may run) and loading the spool. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "config.h"
#include "event.h"
#include "sink/sink.h"

#define SINK_WEBHOOK_BATCH_MAX 100
#define SINK_WEBHOOK_BATCH_BYTES (4u * 1024 * 1024)
#define SINK_WEBHOOK_LOG_BODY 200
#define SINK_WEBHOOK_RETRY_BASE_USEC (1 * USEC_PER_SEC)
#define SINK_WEBHOOK_RETRY_CAP_USEC (10 * USEC_PER_MINUTE)
#define SINK_WEBHOOK_SPOOL_RETRY_USEC (30 * USEC_PER_SEC)
#define SINK_WEBHOOK_SECRET_TIMEOUT_USEC (30 * USEC_PER_SEC)
/* "v1," + base64 of 32 bytes + NUL */
#define SINK_WEBHOOK_SIGNATURE_MAX 64

struct sink_webhook;

/* A new sink for cfg on loop e, spooling under state_dir (STATE_DIR/spool/NAME). The secret is
 * fetched here (config_path names the config in errors). cfg is copied. -EINVAL for a bad
 * config or a whsec_ secret that is not base64, the errors of secret_fetch() and spool_open(),
 * -ENOMEM. */
int sink_webhook_new(sd_event *e, const struct config_webhook *cfg, const char *state_dir,
		     const char *config_path, sink_accepted_fn accepted, void *userdata,
		     struct sink_webhook **ret);

/* NULL-safe; returns NULL. Requests in flight are cancelled (their events stay spooled and are
 * sent again by the next run); events not yet in the spool (queued, or waiting for space) are
 * dropped unaccepted, and are not written here: since they were never accepted, the mailbox
 * state has not advanced past them, and the next start finds them on the server again. */
struct sink_webhook *sink_webhook_free(struct sink_webhook *s);
static inline void sink_webhook_freep(struct sink_webhook **s)
{
	sink_webhook_free(*s);
}
#define _cleanup_sink_webhook_ _cleanup_(sink_webhook_freep)

/* Queue e (a reference is taken) for the spool; it is written, accepted and sent from the
 * loop. No disk access. -EINVAL, -ENOMEM (then nothing was queued). */
int sink_webhook_push(struct sink_webhook *s, struct mail_event *e);

/* Counters for tests and status. */
struct sink_webhook_stats {
	size_t spooled;     /* entries in the spool */
	uint64_t spool_bytes;
	size_t queued;      /* pushed, to be spooled at the next idle turn of the loop, unaccepted */
	size_t held;        /* waiting for spool space (a write failed), unaccepted */
	size_t in_flight;   /* requests */
	uint64_t delivered; /* events, since start */
	uint64_t dropped;   /* final failures and expired events, since start */
	bool disabled;      /* 410 seen */
};
void sink_webhook_get_stats(const struct sink_webhook *s, struct sink_webhook_stats *ret);

/* The HMAC key for a secret: "whsec_BASE64" decoded (-EINVAL when not base64 or empty), any
 * other string its bytes. *ret is freed with free() after secure_wipe(). */
int sink_webhook_key(const char *secret, uint8_t **ret, size_t *ret_len);

/* "v1," + base64(HMAC-SHA256(key, id "." timestamp "." body)) into ret. -EIO if hashing
 * fails. */
int sink_webhook_sign(const uint8_t *key, size_t key_len, const char *id, uint64_t timestamp,
		      const char *body, size_t len, char ret[static SINK_WEBHOOK_SIGNATURE_MAX]);

/* The dispatcher's view of this sink (sink/sink.h). */
extern const struct sink_ops sink_webhook_ops;
