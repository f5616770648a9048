#include "sink/webhook.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "log.h"
#include "net/http.h"
#include "secret.h"
#include "spool.h"

#define WHSEC_PREFIX "whsec_"
#define RETRY_AFTER_MIN (1 * USEC_PER_SEC)
#define RETRY_AFTER_CAP (1 * USEC_PER_DAY)
#define BATCH_ID_HEX 32

/* One request and the spool entries it carries (one, or a batch). */
struct delivery {
	struct sink_webhook *sink;
	struct http_request *req;
	struct spool_entry **entries;
	size_t n;
	char id[MAIL_EVENT_ID_LEN + 8];
	struct delivery *prev, *next;
};

/* A FIFO of event references. */
struct event_queue {
	struct mail_event **v;
	size_t head, n, allocated; /* live: v[head .. head + n) */
};

struct sink_webhook {
	sd_event *event;
	char *name;       /* "webhook crm", for logs */
	char *url;
	char **headers;   /* configured extra headers */
	char *ca_file;
	usec_t timeout, max_retry_age;
	unsigned max_in_flight;
	bool batch;
	uint8_t *key; /* NULL: unsigned */
	size_t key_len;
	sink_accepted_fn accepted;
	void *userdata;

	struct spool *spool;
	struct http_client *http;
	struct delivery *deliveries;
	size_t n_in_flight;

	struct event_queue queued; /* pushed, not yet in the spool, unaccepted */
	bool holding;              /* the last spool write failed (said once): queued events wait */

	/* At idle priority: spooling the queued events, their acceptance, the pump. */
	sd_event_source *defer;
	sd_event_source *retry_timer; /* CLOCK_BOOTTIME: the earliest retry, or a pause */
	sd_event_source *spool_timer; /* retrying held events when nothing else frees space */
	usec_t paused_until;          /* a Retry-After holds every request until then */

	bool disabled; /* 410 Gone */
	bool failing;  /* the last answer was a failure; said once */
	uint64_t delivered, dropped;
	uint64_t rng;
};

/* ---- Small helpers ------------------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *state)
{
	/* splitmix64: enough for jitter. */
	uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static int queue_push(struct event_queue *q, struct mail_event *e)
{
	if (q->head + q->n == q->allocated) {
		if (q->head > 0) {
			memmove(q->v, q->v + q->head, q->n * sizeof(*q->v));
			q->head = 0;
		} else {
			size_t want = MAX((size_t)16, q->allocated * 2);
			struct mail_event **nv = reallocarray(q->v, want, sizeof(*nv));

			if (!nv)
				return -ENOMEM;
			q->v = nv;
			q->allocated = want;
		}
	}
	q->v[q->head + q->n++] = mail_event_ref(e);
	return 0;
}

/* Returns the reference the queue held. */
static struct mail_event *queue_pop(struct event_queue *q)
{
	struct mail_event *e;

	if (q->n == 0)
		return NULL;
	e = q->v[q->head++];
	if (--q->n == 0)
		q->head = 0;
	return e;
}

static void queue_done(struct event_queue *q)
{
	while (q->n > 0)
		mail_event_unref(queue_pop(q));
	q->v = mfree(q->v);
	q->allocated = 0;
}

/* A set of mailbox keys, open addressing, growing; built per pump run, so it holds about one
 * key per mailbox with waiting events. */
struct key_set {
	uint64_t *v;
	bool *used;
	size_t mask, n;
};

static int key_set_alloc(struct key_set *ks, size_t cap)
{
	ks->v = calloc(cap, sizeof(*ks->v));
	ks->used = calloc(cap, sizeof(*ks->used));
	ks->mask = cap - 1;
	ks->n = 0;
	return ks->v && ks->used ? 0 : -ENOMEM;
}

static void key_set_done(struct key_set *ks)
{
	ks->v = mfree(ks->v);
	ks->used = mfree(ks->used);
}

static int key_set_init(struct key_set *ks)
{
	int r = key_set_alloc(ks, 64);

	if (r < 0)
		key_set_done(ks);
	return r;
}

static bool key_set_has(const struct key_set *ks, uint64_t k)
{
	for (size_t i = k & ks->mask; ks->used[i]; i = (i + 1) & ks->mask)
		if (ks->v[i] == k)
			return true;
	return false;
}

static void key_set_put(struct key_set *ks, uint64_t k)
{
	size_t i = k & ks->mask;

	for (; ks->used[i]; i = (i + 1) & ks->mask)
		if (ks->v[i] == k)
			return;
	ks->used[i] = true;
	ks->v[i] = k;
	ks->n++;
}

static int key_set_add(struct key_set *ks, uint64_t k)
{
	if ((ks->n + 1) * 2 > ks->mask + 1) {
		struct key_set bigger;

		if (key_set_alloc(&bigger, (ks->mask + 1) * 2) < 0) {
			key_set_done(&bigger);
			return -ENOMEM;
		}
		for (size_t i = 0; i <= ks->mask; i++)
			if (ks->used[i])
				key_set_put(&bigger, ks->v[i]);
		key_set_done(ks);
		*ks = bigger;
	}
	key_set_put(ks, k);
	return 0;
}

/* Printable ASCII only, at most SINK_WEBHOOK_LOG_BODY bytes, for a log line. */
static void sanitize_body(const char *body, size_t len, char *out, size_t size)
{
	size_t n = MIN(len, size - 1);

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)body[i];

		out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	out[n] = '\0';
}

/* ---- Signing ------------------------------------------------------------------------------ */

int sink_webhook_key(const char *secret, uint8_t **ret, size_t *ret_len)
{
	const char *b64;
	size_t len, pad = 0;
	uint8_t *key;
	int n;

	if (!secret || !ret || !ret_len)
		return -EINVAL;
	if (strncmp(secret, WHSEC_PREFIX, strlen(WHSEC_PREFIX)) != 0) {
		len = strlen(secret);
		if (len == 0)
			return -EINVAL;
		key = malloc(len);
		if (!key)
			return -ENOMEM;
		memcpy(key, secret, len);
		*ret = key;
		*ret_len = len;
		return 0;
	}
	b64 = secret + strlen(WHSEC_PREFIX);
	len = strlen(b64);
	if (len == 0 || len % 4 != 0 || len > INT_MAX)
		return -EINVAL;
	if (b64[len - 1] == '=')
		pad = b64[len - 2] == '=' ? 2 : 1;
	if (strcspn(b64, "=") < len - pad)
		return -EINVAL; /* '=' only at the end */
	key = malloc(len / 4 * 3 + 1);
	if (!key)
		return -ENOMEM;
	n = EVP_DecodeBlock(key, (const unsigned char *)b64, (int)len);
	if (n < 0 || (size_t)n < pad || (size_t)n - pad == 0) {
		secure_wipe(key, len / 4 * 3 + 1);
		free(key);
		return -EINVAL;
	}
	*ret = key;
	*ret_len = (size_t)n - pad;
	return 0;
}

int sink_webhook_sign(const uint8_t *key, size_t key_len, const char *id, uint64_t timestamp,
		      const char *body, size_t len, char ret[static SINK_WEBHOOK_SIGNATURE_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	char ts[24];
	size_t md_len = 0;
	EVP_MAC *mac;
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	bool ok;

	snprintf(ts, sizeof(ts), "%" PRIu64, timestamp);
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (mac)
		ctx = EVP_MAC_CTX_new(mac);
	ok = ctx && EVP_MAC_init(ctx, key, key_len, params) &&
	     EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) &&
	     EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
	     EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) &&
	     EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
	     EVP_MAC_update(ctx, (const unsigned char *)body, len) &&
	     EVP_MAC_final(ctx, md, &md_len, sizeof(md)) && md_len == 32;
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	if (!ok)
		return -EIO;
	memcpy(ret, "v1,", 3);
	EVP_EncodeBlock((unsigned char *)ret + 3, md, (int)md_len);
	return 0;
}

/* ---- Requests ----------------------------------------------------------------------------- */

static int build_headers(struct sink_webhook *s, const char *id, uint64_t ts, const char *body,
			 size_t len, char ***ret)
{
	_cleanup_strv_free_ char **h = NULL;
	char sig[SINK_WEBHOOK_SIGNATURE_MAX];
	char *line;
	int r;

	if (asprintf(&line, "webhook-id: %s", id) < 0 || strv_push(&h, line) < 0)
		return -ENOMEM;
	if (asprintf(&line, "webhook-timestamp: %" PRIu64, ts) < 0 || strv_push(&h, line) < 0)
		return -ENOMEM;
	if (s->key) {
		r = sink_webhook_sign(s->key, s->key_len, id, ts, body, len, sig);
		if (r < 0)
			return r;
		if (asprintf(&line, "webhook-signature: %s", sig) < 0 || strv_push(&h, line) < 0)
			return -ENOMEM;
	}
	if (strv_extend(&h, "content-type: application/json") < 0 ||
	    strv_extend(&h, "user-agent: imapidled/" VERSION) < 0)
		return -ENOMEM;
	for (char **p = s->headers; p && *p; p++)
		if (strv_extend(&h, *p) < 0)
			return -ENOMEM;
	*ret = TAKE_PTR(h);
	return 0;
}

static int batch_id(struct delivery *d)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned md_len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok;

	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (size_t i = 0; ok && i < d->n; i++)
		ok = (i == 0 || EVP_DigestUpdate(ctx, "\n", 1)) &&
		     EVP_DigestUpdate(ctx, d->entries[i]->id, strlen(d->entries[i]->id));
	ok = ok && EVP_DigestFinal_ex(ctx, md, &md_len);
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return -EIO;
	strcpy(d->id, "batch_");
	for (size_t i = 0; i < BATCH_ID_HEX / 2; i++)
		snprintf(d->id + 6 + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static void delivery_unlink(struct delivery *d)
{
	struct sink_webhook *s = d->sink;

	if (d->prev)
		d->prev->next = d->next;
	else
		s->deliveries = d->next;
	if (d->next)
		d->next->prev = d->prev;
	d->prev = d->next = NULL;
}

static struct delivery *delivery_free(struct delivery *d)
{
	if (!d)
		return NULL;
	for (size_t i = 0; i < d->n; i++)
		if (d->entries[i])
			d->entries[i]->data = NULL;
	http_request_cancel(d->req);
	free(d->entries);
	return mfree(d);
}

static void kick(struct sink_webhook *s)
{
	int r = sd_event_source_set_enabled(s->defer, SD_EVENT_ONESHOT);

	if (r < 0)
		log_error_errno(r, "%s: cannot schedule delivery: %m", s->name);
}

static usec_t retry_delay(struct sink_webhook *s, unsigned attempts)
{
	usec_t hi = SINK_WEBHOOK_RETRY_BASE_USEC;

	for (unsigned i = 0; i < attempts && hi < SINK_WEBHOOK_RETRY_CAP_USEC; i++)
		hi *= 2;
	hi = MIN(hi, SINK_WEBHOOK_RETRY_CAP_USEC);
	return SINK_WEBHOOK_RETRY_BASE_USEC +
	       rng_next(&s->rng) % (hi - SINK_WEBHOOK_RETRY_BASE_USEC + 1);
}

static const char *describe(const struct http_response *resp, char *buf, size_t size)
{
	if (resp->status < 0)
		snprintf(buf, size, "%s", strna(resp->error));
	else
		snprintf(buf, size, "HTTP %d", resp->status);
	return buf;
}

static void entry_drop(struct sink_webhook *s, struct spool_entry *en)
{
	spool_remove(s->spool, en);
	s->dropped++;
}

/* A failure worth retrying, for each entry of d. */
static void retry_later(struct sink_webhook *s, struct delivery *d,
			const struct http_response *resp)
{
	usec_t now = now_usec(CLOCK_BOOTTIME);
	time_t wall = time(NULL);
	char why[160], age[32];

	describe(resp, why, sizeof(why));
	if (resp->retry_after != USEC_INFINITY)
		s->paused_until = now + MIN(MAX(resp->retry_after, RETRY_AFTER_MIN), RETRY_AFTER_CAP);
	if (!s->failing)
		log_warning("%s: delivery failed (%s); retrying with backoff, %zu events in the "
			    "spool", s->name, why, spool_count(s->spool));
	s->failing = true;
	for (size_t i = 0; i < d->n; i++) {
		struct spool_entry *en = d->entries[i];

		en->attempts++;
		en->data = NULL;
		if (wall < en->spooled ||
		    (usec_t)(wall - en->spooled) * USEC_PER_SEC < s->max_retry_age) {
			en->not_before = now + retry_delay(s, en->attempts);
			log_debug("%s: %s: attempt %u failed (%s)", s->name, en->id, en->attempts,
				  why);
			continue;
		}
		log_error("%s: giving up on event %s after %u attempts over %s: %s", s->name,
			  en->id, en->attempts,
			  format_duration(age, sizeof(age),
					  (usec_t)(wall - en->spooled) * USEC_PER_SEC),
			  why);
		entry_drop(s, en);
		d->entries[i] = NULL;
	}
}

static void delivered(struct sink_webhook *s, struct delivery *d, int status)
{
	if (s->failing) {
		log_notice("%s: the receiver answers again (HTTP %d)", s->name, status);
		s->failing = false;
		/* It is back: what waits because it was down need not wait any longer. */
		for (struct spool_entry *en = spool_first(s->spool); en; en = spool_next(en))
			en->not_before = 0;
	}
	for (size_t i = 0; i < d->n; i++) {
		log_debug("%s: delivered %s (HTTP %d, attempt %u)", s->name, d->entries[i]->id,
			  status, d->entries[i]->attempts + 1);
		spool_remove(s->spool, d->entries[i]);
		s->delivered++;
	}
	d->n = 0;
}

static void refused(struct sink_webhook *s, struct delivery *d, const struct http_response *resp)
{
	char body[SINK_WEBHOOK_LOG_BODY + 1];

	sanitize_body(resp->body, resp->body_len, body, sizeof(body));
	log_error("%s: the receiver refused %s with HTTP %d%s, dropping %zu event(s); "
		  "answer: \"%s%s\"", s->name, d->id, resp->status,
		  resp->status < 400 ? " (redirects are not followed: check the url)" : "", d->n,
		  body, resp->body_len > SINK_WEBHOOK_LOG_BODY || resp->body_truncated ? "..." : "");
	for (size_t i = 0; i < d->n; i++)
		entry_drop(s, d->entries[i]);
	d->n = 0;
}

static void gone(struct sink_webhook *s)
{
	if (!s->disabled)
		log_error("%s: the receiver answered 410 Gone: this webhook is disabled until the "
			  "configuration is reloaded; %zu events stay in the spool %s",
			  s->name, spool_count(s->spool), spool_dir(s->spool));
	s->disabled = true;
}

static bool retryable(int status)
{
	return status < 0 || status == 408 || status == 429 || (status >= 500 && status <= 599);
}

static void on_done(void *userdata, const struct http_response *resp)
{
	struct delivery *d = userdata;
	struct sink_webhook *s = d->sink;

	d->req = NULL;
	delivery_unlink(d);
	s->n_in_flight--;
	if (resp->status >= 200 && resp->status <= 299)
		delivered(s, d, resp->status);
	else if (resp->status == 410)
		gone(s);
	else if (retryable(resp->status))
		retry_later(s, d, resp);
	else
		refused(s, d, resp);
	delivery_free(d);
	kick(s);
}

/* The body of one entry, or of a batch (see the header). */
static int delivery_body(struct sink_webhook *s, struct delivery *d, char **ret, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0, cap = 0;
	char head[96];
	struct tm tm;
	time_t now = time(NULL);
	int r;

	if (!s->batch)
		return spool_read(s->spool, d->entries[0], ret, ret_len);
	gmtime_r(&now, &tm);
	strftime(head, sizeof(head), "{\"type\":\"mail.batch\",\"timestamp\":\"%Y-%m-%dT%H:%M:%SZ\","
		 "\"data\":[", &tm);
	for (size_t i = 0; i < d->n; i++)
		cap += d->entries[i]->size + 1;
	cap += strlen(head) + 3;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, head, strlen(head));
	len = strlen(head);
	for (size_t i = 0; i < d->n; i++) {
		_cleanup_free_ char *one = NULL;
		size_t n;

		r = spool_read(s->spool, d->entries[i], &one, &n);
		if (r < 0)
			return r;
		if (i > 0)
			buf[len++] = ',';
		memcpy(buf + len, one, n);
		len += n;
	}
	memcpy(buf + len, "]}", 3);
	*ret_len = len + 2;
	*ret = TAKE_PTR(buf);
	return 0;
}

static int delivery_send(struct sink_webhook *s, struct delivery *d)
{
	_cleanup_strv_free_ char **headers = NULL;
	_cleanup_free_ char *body = NULL;
	size_t len;
	int r;

	r = delivery_body(s, d, &body, &len);
	if (r < 0)
		return r;
	if (s->batch)
		r = batch_id(d);
	else
		snprintf(d->id, sizeof(d->id), "%s", d->entries[0]->id);
	if (r >= 0)
		r = build_headers(s, d->id, (uint64_t)time(NULL), body, len, &headers);
	if (r >= 0)
		r = http_post(s->http, s->url, headers, body, len, s->timeout, s->ca_file, on_done,
			      d, &d->req);
	return r;
}

/* ---- The pump: what to send now ------------------------------------------------------------ */

static void arm_retry_timer(struct sink_webhook *s, usec_t when)
{
	int r;

	if (when == USEC_INFINITY) {
		(void)sd_event_source_set_enabled(s->retry_timer, SD_EVENT_OFF);
		return;
	}
	r = sd_event_source_set_time(s->retry_timer, when);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->retry_timer, SD_EVENT_ONESHOT);
	if (r < 0)
		log_error_errno(r, "%s: cannot arm the retry timer: %m", s->name);
}

static bool entry_ready(const struct spool_entry *en, usec_t now)
{
	return !en->data && en->not_before <= now;
}

/* Entries after first that may join its batch: ready, and of a mailbox not held back by an
 * entry outside the batch. */
static int batch_collect(struct sink_webhook *s, struct delivery *d, struct spool_entry *first,
			 struct key_set *blocked, usec_t now)
{
	struct key_set mine;
	size_t bytes = first->size;
	int r = key_set_init(&mine);

	if (r >= 0)
		r = key_set_add(&mine, first->mailbox_key);
	for (struct spool_entry *en = spool_next(first);
	     r >= 0 && en && d->n < SINK_WEBHOOK_BATCH_MAX; en = spool_next(en)) {
		uint64_t k = en->mailbox_key;
		bool ours = key_set_has(&mine, k);

		if (!ours && key_set_has(blocked, k))
			continue;
		if (!entry_ready(en, now) || bytes + en->size > SINK_WEBHOOK_BATCH_BYTES) {
			r = key_set_add(blocked, k); /* order: nothing after it of that mailbox */
			if (ours)
				break;
			continue;
		}
		r = key_set_add(&mine, k);
		if (r >= 0)
			r = key_set_add(blocked, k);
		if (r >= 0)
			d->entries[d->n++] = en;
		bytes += en->size;
	}
	key_set_done(&mine);
	return r;
}

/* Frees d; entries may be dropped. */
static void delivery_failed_to_start(struct sink_webhook *s, struct delivery *d, int r)
{
	struct http_response resp = { .status = r, .retry_after = USEC_INFINITY };
	char msg[128];

	if (r == -ENOENT || r == -EBADMSG) {
		/* The spool file is gone or damaged (already logged and moved aside). */
		for (size_t i = 0; i < d->n; i++)
			entry_drop(s, d->entries[i]);
		d->n = 0;
		delivery_free(d);
		return;
	}
	snprintf(msg, sizeof(msg), "cannot send: %s", strerror(-r));
	resp.error = msg;
	retry_later(s, d, &resp);
	delivery_free(d);
}

/* 0: started; 1: not started, and the spool list may have changed (entries dropped);
 * -ENOMEM. */
static int start_delivery(struct sink_webhook *s, struct spool_entry *first,
			  struct key_set *blocked, usec_t now)
{
	struct delivery *d = calloc(1, sizeof(*d));
	int r;

	if (!d)
		return -ENOMEM;
	d->sink = s;
	d->entries = calloc(s->batch ? SINK_WEBHOOK_BATCH_MAX : 1, sizeof(*d->entries));
	if (!d->entries) {
		free(d);
		return -ENOMEM;
	}
	d->entries[d->n++] = first;
	r = s->batch ? batch_collect(s, d, first, blocked, now) : 0;
	for (size_t i = 0; i < d->n; i++)
		d->entries[i]->data = d;
	if (r >= 0)
		r = delivery_send(s, d);
	if (r < 0) {
		delivery_failed_to_start(s, d, r);
		return 1;
	}
	d->next = s->deliveries;
	if (d->next)
		d->next->prev = d;
	s->deliveries = d;
	s->n_in_flight++;
	return 0;
}

/* One pass over the spool in order. 1: start over (the list changed under the pass). */
static int pump_pass(struct sink_webhook *s, usec_t now, usec_t *wake)
{
	struct key_set blocked;
	int r = key_set_init(&blocked);

	for (struct spool_entry *en = spool_first(s->spool), *next; r >= 0 && en; en = next) {
		next = spool_next(en);
		if (s->n_in_flight >= s->max_in_flight)
			break; /* a completion pumps again */
		if (key_set_has(&blocked, en->mailbox_key))
			continue;
		r = key_set_add(&blocked, en->mailbox_key);
		if (r < 0 || en->data)
			continue;
		if (en->not_before > now) {
			*wake = MIN(*wake, en->not_before);
			continue;
		}
		r = start_delivery(s, en, &blocked, now);
		if (r != 0)
			break;
		/* A batch may have taken entries after en; they are skipped by their data. */
	}
	key_set_done(&blocked);
	return r;
}

static void pump(struct sink_webhook *s)
{
	usec_t now = now_usec(CLOCK_BOOTTIME), wake = USEC_INFINITY;
	int r;

	if (s->disabled || spool_count(s->spool) == 0) {
		arm_retry_timer(s, USEC_INFINITY);
		return;
	}
	if (s->paused_until > now) {
		arm_retry_timer(s, s->paused_until);
		return;
	}
	/* Bounded: each restart follows a failed start, which took its entries out of the
	 * ready set (dropped, or waiting for a retry). */
	do {
		wake = USEC_INFINITY;
		r = pump_pass(s, now, &wake);
	} while (r == 1);
	if (r < 0) {
		log_oom();
		wake = now + SINK_WEBHOOK_RETRY_BASE_USEC;
	}
	arm_retry_timer(s, wake);
}

/* ---- Spooling and acceptance ----------------------------------------------------------------- */

/* A view of the queue's events as the spool takes them. */
static const struct mail_event *const *queue_at(const struct event_queue *q, size_t i)
{
	return (const struct mail_event *const *)(q->v + q->head + i);
}

static void hold(struct sink_webhook *s, int r)
{
	(void)sd_event_source_set_time_relative(s->spool_timer, SINK_WEBHOOK_SPOOL_RETRY_USEC);
	(void)sd_event_source_set_enabled(s->spool_timer, SD_EVENT_ONESHOT);
	if (s->holding)
		return;
	s->holding = true;
	if (r == -ENOSPC)
		log_warning("%s: spool full (%" PRIu64 " bytes): holding new mail until the receiver "
			    "takes some", s->name, spool_bytes(s->spool));
	else
		log_error_errno(r, "%s: cannot write to the spool %s: %m; holding new mail and "
				"trying again", s->name, spool_dir(s->spool));
}

static void unhold(struct sink_webhook *s)
{
	if (s->holding)
		log_notice("%s: the spool has room again; new mail is spooled", s->name);
	s->holding = false;
}

/* Writes the queued events into the spool, oldest first, each file fsynced and one directory
 * fsync per run of them. Returns how many at the head of the queue are settled (spooled, or
 * too large ever to be and dropped) and so may be accepted; the rest stay queued, held. */
static size_t write_queued(struct sink_webhook *s)
{
	time_t now = time(NULL);
	size_t done = 0, added;
	int r = 0;

	while (done < s->queued.n) {
		r = spool_add_many(s->spool, queue_at(&s->queued, done), s->queued.n - done, now,
				   &added);
		done += added;
		if (r != -EFBIG)
			break;
		log_error("%s: event %s is larger than spool_max (%" PRIu64 " bytes): it cannot be "
			  "delivered, dropping it", s->name, (*queue_at(&s->queued, done))->id,
			  spool_max_bytes(s->spool));
		s->dropped++;
		done++;
		r = 0;
	}
	if (r < 0)
		hold(s, r);
	else
		unhold(s);
	return done;
}

static void accept_first(struct sink_webhook *s, size_t n)
{
	/* accepted() may push: new events join the queue behind these n. */
	for (; n > 0; n--) {
		struct mail_event *e = queue_pop(&s->queued);

		if (s->accepted)
			s->accepted(s->userdata, e);
		mail_event_unref(e);
	}
}

/* Idle priority (add_sources): the other sinks' work of this loop iteration, an exec start or
 * a desktop notification, goes before this disk work, and every event pushed meanwhile shares
 * its directory fsync. */
static int on_defer(sd_event_source *source, void *userdata)
{
	struct sink_webhook *s = userdata;

	accept_first(s, write_queued(s));
	pump(s);
	return 0;
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata)
{
	kick(userdata);
	return 0;
}

int sink_webhook_push(struct sink_webhook *s, struct mail_event *e)
{
	int r;

	if (!s || !e)
		return -EINVAL;
	r = queue_push(&s->queued, e);
	if (r < 0)
		return r;
	/* While holding, the spool timer or a finished request tries again. */
	if (!s->holding)
		kick(s);
	return 0;
}

void sink_webhook_get_stats(const struct sink_webhook *s, struct sink_webhook_stats *ret)
{
	*ret = (struct sink_webhook_stats){
		.spooled = spool_count(s->spool),
		.spool_bytes = spool_bytes(s->spool),
		.queued = s->holding ? 0 : s->queued.n,
		.held = s->holding ? s->queued.n : 0,
		.in_flight = s->n_in_flight,
		.delivered = s->delivered,
		.dropped = s->dropped,
		.disabled = s->disabled,
	};
}

/* ---- Lifecycle ---------------------------------------------------------------------------- */

static int fetch_key(struct sink_webhook *s, const struct config_webhook *cfg,
		     const char *config_path)
{
	_cleanup_free_ char *section = NULL, *error = NULL;
	char *secret = NULL;
	int r;

	if (cfg->secret.kind == SECRET_NONE)
		return 0;
	if (asprintf(&section, "webhook %s", cfg->name) < 0)
		return -ENOMEM;
	r = secret_fetch(&cfg->secret, config_path, section, SINK_WEBHOOK_SECRET_TIMEOUT_USEC,
			 &secret, &error);
	if (r < 0) {
		log_error_errno(r, "%s: %s", s->name, error ? error : "cannot read the secret: %m");
		return r;
	}
	r = sink_webhook_key(secret, &s->key, &s->key_len);
	secret_free(secret);
	if (r == -EINVAL)
		log_error("%s: %s: a secret starting with \"" WHSEC_PREFIX "\" must continue in "
			  "base64", s->name, strna(cfg->secret.key));
	return r;
}

static int copy_config(struct sink_webhook *s, const struct config_webhook *cfg)
{
	if (asprintf(&s->name, "webhook %s", cfg->name) < 0) {
		s->name = NULL;
		return -ENOMEM;
	}
	s->url = strdup(cfg->url);
	if (!s->url)
		return -ENOMEM;
	if (cfg->headers && !(s->headers = strv_copy(cfg->headers)))
		return -ENOMEM;
	if (cfg->tls_ca_file && !(s->ca_file = strdup(cfg->tls_ca_file)))
		return -ENOMEM;
	s->timeout = cfg->timeout;
	s->max_retry_age = cfg->max_retry_age;
	s->max_in_flight = MAX(cfg->max_in_flight, 1u);
	s->batch = cfg->batch;
	return 0;
}

static int open_spool(struct sink_webhook *s, const struct config_webhook *cfg,
		      const char *state_dir)
{
	_cleanup_free_ char *dir = NULL;
	int r;

	if (asprintf(&dir, "%s/spool/%s", state_dir, cfg->name) < 0)
		return -ENOMEM;
	r = spool_open(dir, cfg->spool_max_bytes ? cfg->spool_max_bytes : UINT64_MAX, s->name,
		       &s->spool);
	if (r < 0)
		return log_error_errno(r, "%s: cannot open the spool %s: %m", s->name, dir);
	return 0;
}

static int add_sources(struct sink_webhook *s)
{
	int r;

	r = sd_event_add_defer(s->event, &s->defer, on_defer, s);
	if (r >= 0)
		r = sd_event_source_set_priority(s->defer, SD_EVENT_PRIORITY_IDLE);
	if (r >= 0)
		/* 1 ms: the timer also releases held events "now" (0 means 250 ms of slack). */
		r = sd_event_add_time(s->event, &s->retry_timer, CLOCK_BOOTTIME, USEC_INFINITY,
				      USEC_PER_MSEC, on_timer, s);
	if (r >= 0)
		r = sd_event_add_time(s->event, &s->spool_timer, CLOCK_BOOTTIME, USEC_INFINITY, 0,
				      on_timer, s);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->retry_timer, SD_EVENT_OFF);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->spool_timer, SD_EVENT_OFF);
	/* Entries from an earlier run: start on them at once. */
	if (r >= 0)
		r = sd_event_source_set_enabled(s->defer, SD_EVENT_ONESHOT);
	return r;
}

int sink_webhook_new(sd_event *e, const struct config_webhook *cfg, const char *state_dir,
		     const char *config_path, sink_accepted_fn accepted, void *userdata,
		     struct sink_webhook **ret)
{
	_cleanup_sink_webhook_ struct sink_webhook *s = NULL;
	uint64_t seed = 0;
	int r;

	if (!e || !cfg || !cfg->name || !cfg->url || !state_dir || !ret || streq(cfg->name, ".") ||
	    streq(cfg->name, "..") || strchr(cfg->name, '/'))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->event = sd_event_ref(e);
	s->accepted = accepted;
	s->userdata = userdata;
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = now_usec(CLOCK_MONOTONIC) ^ (uint64_t)getpid();
	s->rng = seed;
	r = copy_config(s, cfg);
	if (r < 0)
		return r;
	r = fetch_key(s, cfg, config_path);
	if (r < 0)
		return r;
	r = open_spool(s, cfg, state_dir);
	if (r < 0)
		return r;
	r = http_client_new(e, &s->http);
	if (r < 0)
		return r;
	r = add_sources(s);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

struct sink_webhook *sink_webhook_free(struct sink_webhook *s)
{
	if (!s)
		return NULL;
	while (s->deliveries) {
		struct delivery *d = s->deliveries;

		delivery_unlink(d);
		delivery_free(d);
	}
	s->http = http_client_free(s->http);
	s->defer = sd_event_source_disable_unref(s->defer);
	s->retry_timer = sd_event_source_disable_unref(s->retry_timer);
	s->spool_timer = sd_event_source_disable_unref(s->spool_timer);
	/* Never accepted, so the mailbox state has not passed them: the next start finds them
	 * on the server again. Writing them here instead would block on the way out, mostly in
	 * the one case that leaves any (a spool that fails), and what it saved would be
	 * reported again anyway, so sent twice. */
	queue_done(&s->queued);
	spool_free(s->spool);
	if (s->key) {
		secure_wipe(s->key, s->key_len);
		free(s->key);
	}
	strv_free(s->headers);
	free(s->ca_file);
	free(s->url);
	free(s->name);
	sd_event_unref(s->event);
	return mfree(s);
}

static int ops_new(const struct sink_context *ctx, const char *name, void **ret)
{
	const struct config_webhook *cfg = config_find_webhook(ctx->config, name);

	if (!cfg)
		return -ENOENT;
	return sink_webhook_new(ctx->event, cfg, ctx->config->state_dir, ctx->config->path,
				ctx->accepted, ctx->userdata, (struct sink_webhook **)ret);
}

static int ops_push(void *sink, struct mail_event *e)
{
	return sink_webhook_push(sink, e);
}

static void *ops_free(void *sink)
{
	return sink_webhook_free(sink);
}

const struct sink_ops sink_webhook_ops = {
	.type = "webhook",
	.new = ops_new,
	.push = ops_push,
	.free = ops_free,
};
