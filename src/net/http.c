#include "net/http.h"

#include <ctype.h>
#include <time.h>

#include <curl/curl.h>

#include "log.h"

/* One socket curl asked us to watch. Kept in a list as well as in curl (curl_multi_assign), so
 * that whatever curl does not remove before curl_multi_cleanup() is still freed. */
struct http_socket {
	struct http_client *client;
	curl_socket_t fd;
	sd_event_source *source;
	struct http_socket *prev, *next;
};

struct http_request {
	struct http_client *client;
	CURL *easy;
	struct curl_slist *headers;
	http_done_fn done;
	void *userdata;
	char error[CURL_ERROR_SIZE];
	char body[HTTP_BODY_KEEP + 1];
	size_t body_len;
	bool body_truncated;
	usec_t retry_after;
	bool finishing; /* inside its done callback: a cancel now is a no-op */
	struct http_request *prev, *next;
};

struct http_client {
	sd_event *event;
	CURLM *multi;
	sd_event_source *timer;
	struct http_socket *sockets;
	struct http_request *requests;
	size_t n_requests;
	bool global_init;
};

#define LIST_UNLINK(head, x)                              \
	do {                                              \
		if ((x)->prev)                            \
			(x)->prev->next = (x)->next;      \
		else                                      \
			(head) = (x)->next;               \
		if ((x)->next)                            \
			(x)->next->prev = (x)->prev;      \
		(x)->prev = (x)->next = NULL;             \
	} while (0)

#define LIST_PREPEND(head, x)                             \
	do {                                              \
		(x)->prev = NULL;                         \
		(x)->next = (head);                       \
		if (head)                                 \
			(head)->prev = (x);               \
		(head) = (x);                             \
	} while (0)

/* ---- Retry-After -------------------------------------------------------------------------- */

usec_t http_parse_retry_after(const char *value, time_t now)
{
	char buf[128];
	size_t len;
	uint64_t secs;
	time_t t;

	while (*value == ' ' || *value == '\t')
		value++;
	len = strcspn(value, "\r\n");
	while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
		len--;
	if (len == 0 || len >= sizeof(buf))
		return USEC_INFINITY;
	memcpy(buf, value, len);
	buf[len] = '\0';
	if (isdigit((unsigned char)buf[0])) {
		if (safe_atou64(buf, &secs) < 0)
			return USEC_INFINITY;
		return secs > HTTP_RETRY_AFTER_MAX / USEC_PER_SEC ? HTTP_RETRY_AFTER_MAX
								   : secs * USEC_PER_SEC;
	}
	t = curl_getdate(buf, NULL);
	if (t == (time_t)-1)
		return USEC_INFINITY;
	if (t <= now)
		return 0;
	if ((uint64_t)(t - now) > HTTP_RETRY_AFTER_MAX / USEC_PER_SEC)
		return HTTP_RETRY_AFTER_MAX;
	return (usec_t)(t - now) * USEC_PER_SEC;
}

/* ---- Per-request curl callbacks ----------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct http_request *r = userdata;
	size_t n = size * nmemb, room = HTTP_BODY_KEEP - r->body_len;

	if (n > room)
		r->body_truncated = true;
	memcpy(r->body + r->body_len, data, MIN(n, room));
	r->body_len += MIN(n, room);
	return n; /* the rest is read and dropped */
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
	static const char name[] = "retry-after:";
	struct http_request *r = userdata;
	size_t n = size * nmemb;
	char line[160];

	/* Each response (a 100 Continue, then the final one) starts with its status line. */
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		r->retry_after = USEC_INFINITY;
		return n;
	}
	if (n < strlen(name) || strncasecmp(data, name, strlen(name)) != 0 ||
	    n >= sizeof(line))
		return n;
	memcpy(line, data + strlen(name), n - strlen(name));
	line[n - strlen(name)] = '\0';
	r->retry_after = http_parse_retry_after(line, time(NULL));
	return n;
}

/* ---- Results ------------------------------------------------------------------------------ */

static int errno_from_curl(CURLcode code)
{
	switch (code) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_HTTP2:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EPROTO;
	default:
		return -EIO;
	}
}

static void request_free(struct http_request *r)
{
	if (!r)
		return;
	if (r->easy) {
		curl_multi_remove_handle(r->client->multi, r->easy);
		curl_easy_cleanup(r->easy);
	}
	curl_slist_free_all(r->headers);
	free(r);
}

static void request_detach(struct http_request *r)
{
	LIST_UNLINK(r->client->requests, r);
	r->client->n_requests--;
}

static void request_finish(struct http_request *r, CURLcode code)
{
	struct http_response resp = { .retry_after = USEC_INFINITY };
	long status = 0;

	if (code == CURLE_OK &&
	    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
	    status >= 100 && status <= 599) {
		resp.status = (int)status;
		resp.body = r->body;
		resp.body_len = r->body_len;
		resp.body_truncated = r->body_truncated;
		resp.retry_after = r->retry_after;
	} else {
		resp.status = code == CURLE_OK ? -EPROTO : errno_from_curl(code);
		resp.error = r->error[0] ? r->error : curl_easy_strerror(code);
		resp.body = "";
	}
	r->body[r->body_len] = '\0';
	request_detach(r);
	r->finishing = true;
	if (r->done)
		r->done(r->userdata, &resp);
	request_free(r);
}

/* After every curl_multi_socket_action(): hand finished transfers to their owners. */
static void collect_done(struct http_client *c)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left))) {
		struct http_request *r = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r) != CURLE_OK ||
		    !r)
			continue;
		request_finish(r, msg->data.result);
	}
}

static void socket_action(struct http_client *c, curl_socket_t fd, int mask)
{
	int running;
	CURLMcode mc = curl_multi_socket_action(c->multi, fd, mask, &running);

	if (mc != CURLM_OK)
		log_warning("http: curl_multi_socket_action: %s, ignoring", curl_multi_strerror(mc));
	collect_done(c);
}

/* ---- Loop integration --------------------------------------------------------------------- */

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct http_socket *hs = userdata;
	int mask = 0;

	if (revents & EPOLLIN)
		mask |= CURL_CSELECT_IN;
	if (revents & EPOLLOUT)
		mask |= CURL_CSELECT_OUT;
	if (revents & (EPOLLERR | EPOLLHUP))
		mask |= CURL_CSELECT_ERR;
	/* hs may be freed inside (CURL_POLL_REMOVE): only the client is used afterwards. */
	socket_action(hs->client, fd, mask);
	return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	socket_action(userdata, CURL_SOCKET_TIMEOUT, 0);
	return 0;
}

static void socket_free(struct http_socket *hs)
{
	LIST_UNLINK(hs->client->sockets, hs);
	sd_event_source_disable_unref(hs->source);
	free(hs);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct http_client *c = userp;
	struct http_socket *hs = socketp;
	uint32_t events = 0;
	int r;

	if (what == CURL_POLL_REMOVE) {
		if (hs)
			socket_free(hs);
		curl_multi_assign(c->multi, fd, NULL);
		return 0;
	}
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		events |= EPOLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		events |= EPOLLOUT;
	if (hs)
		return sd_event_source_set_io_events(hs->source, events) < 0 ? -1 : 0;
	hs = calloc(1, sizeof(*hs));
	if (!hs)
		return -1;
	hs->client = c;
	hs->fd = fd;
	r = sd_event_add_io(c->event, &hs->source, fd, events, on_io, hs);
	if (r < 0) {
		log_warning_errno(r, "http: cannot watch a socket: %m");
		free(hs);
		return -1;
	}
	LIST_PREPEND(c->sockets, hs);
	curl_multi_assign(c->multi, fd, hs);
	return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct http_client *c = userp;
	int r;

	if (timeout_ms < 0)
		return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
	/* Even for 0: curl wants the action from the loop, not from inside its callback. */
	r = sd_event_source_set_time(c->timer, now_usec(CLOCK_MONOTONIC) +
						      (usec_t)timeout_ms * USEC_PER_MSEC);
	if (r >= 0)
		r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
	return r < 0 ? -1 : 0;
}

/* ---- Client ------------------------------------------------------------------------------- */

int http_client_new(sd_event *e, struct http_client **ret)
{
	_cleanup_http_client_ struct http_client *c = NULL;
	int r;

	if (!e || !ret)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->event = sd_event_ref(e);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -EIO;
	c->global_init = true;
	c->multi = curl_multi_init();
	if (!c->multi)
		return -ENOMEM;
	/* Accuracy 1 µs, not 0: 0 means sd-event's default slack of 250 ms, and curl's "act
	 * now" (a timeout of 0) then waited a quarter second each time: a backlog of webhooks
	 * drained at 4 a second. */
	r = sd_event_add_time(e, &c->timer, CLOCK_MONOTONIC, USEC_INFINITY, 1, on_timer, c);
	if (r < 0)
		return r;
	r = sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
	if (r < 0)
		return r;
	if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
	    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK)
		return -EIO;
	*ret = TAKE_PTR(c);
	return 0;
}

struct http_client *http_client_free(struct http_client *c)
{
	if (!c)
		return NULL;
	while (c->requests) {
		struct http_request *r = c->requests;

		request_detach(r);
		request_free(r);
	}
	if (c->multi)
		curl_multi_cleanup(c->multi);
	while (c->sockets)
		socket_free(c->sockets);
	sd_event_source_disable_unref(c->timer);
	sd_event_unref(c->event);
	if (c->global_init)
		curl_global_cleanup();
	return mfree(c);
}

size_t http_client_in_flight(const struct http_client *c)
{
	return c ? c->n_requests : 0;
}

/* ---- Requests ----------------------------------------------------------------------------- */

static int request_headers(struct http_request *r, char *const *headers)
{
	struct curl_slist *l;

	for (char *const *h = headers; h && *h; h++) {
		l = curl_slist_append(r->headers, *h);
		if (!l)
			return -ENOMEM;
		r->headers = l;
	}
	/* An empty Expect: stops curl from waiting for "100 Continue" before a large body. */
	l = curl_slist_append(r->headers, "Expect:");
	if (!l)
		return -ENOMEM;
	r->headers = l;
	return 0;
}

static int request_setup(struct http_request *r, const char *url, const char *body, size_t len,
			 usec_t timeout, const char *ca_file)
{
	CURL *h = r->easy;
	bool ok;

	ok = curl_easy_setopt(h, CURLOPT_URL, url) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_PRIVATE, r) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->error) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_POST, 1L) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->headers) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_WRITEDATA, r) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
	     curl_easy_setopt(h, CURLOPT_HEADERDATA, r) == CURLE_OK;
	if (ok && timeout > 0 && timeout != USEC_INFINITY)
		ok = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
				      (long)MAX(timeout / USEC_PER_MSEC, (usec_t)1)) == CURLE_OK;
	if (ok && ca_file)
		ok = curl_easy_setopt(h, CURLOPT_CAINFO, ca_file) == CURLE_OK;
	return ok ? 0 : -EIO;
}

int http_post(struct http_client *c, const char *url, char *const *headers, const char *body,
	      size_t len, usec_t timeout, const char *ca_file, http_done_fn done, void *userdata,
	      struct http_request **ret)
{
	struct http_request *r;
	int k;

	if (!c || !url || (!body && len > 0))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->client = c;
	r->done = done;
	r->userdata = userdata;
	r->retry_after = USEC_INFINITY;
	r->easy = curl_easy_init();
	k = r->easy ? request_headers(r, headers) : -ENOMEM;
	if (k >= 0)
		k = request_setup(r, url, body ? body : "", len, timeout, ca_file);
	if (k >= 0 && curl_multi_add_handle(c->multi, r->easy) != CURLM_OK)
		k = -EIO;
	if (k < 0) {
		curl_easy_cleanup(r->easy);
		r->easy = NULL;
		request_free(r);
		return k;
	}
	LIST_PREPEND(c->requests, r);
	c->n_requests++;
	if (ret)
		*ret = r;
	return 0;
}

struct http_request *http_request_cancel(struct http_request *r)
{
	if (!r || r->finishing)
		return NULL;
	request_detach(r);
	request_free(r);
	return NULL;
}
