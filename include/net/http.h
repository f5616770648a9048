/* net/http: a small asynchronous HTTP client on the sd-event loop (the only libcurl user).
 *
 * One curl multi handle per client, driven by the loop: curl's socket callback becomes one
 * sd-event I/O source per socket, its timer callback one CLOCK_MONOTONIC timer; every wake-up
 * calls curl_multi_socket_action() and then collects finished transfers. Connections are
 * reused between requests of the same client. Nothing here blocks (name resolution is curl's
 * asynchronous resolver).
 *
 * Every request is a POST with the policy a webhook needs: redirects are never followed (a
 * 3xx is returned as such), only http and https, TLS verification on (peer and host name),
 * no signals, no "Expect: 100-continue", a total time limit. At most HTTP_BODY_KEEP bytes of
 * the response body are kept; the rest is read and dropped. A Retry-After header (RFC 9110
 * 10.2.3: delay-seconds or an HTTP-date) is parsed into a delay.
 *
 * Ownership: a request belongs to the client until its done callback has returned, then it is
 * gone; http_request_cancel() ends it earlier without a callback. The done callback is always
 * called from the loop, never from inside http_post(). It may start and cancel requests
 * (cancelling its own is a no-op), but may not free the client. */
#pragma once

#include <stdbool.h>

#include <systemd/sd-event.h>

#include "util.h"

#define HTTP_BODY_KEEP 4096
/* Retry-After values beyond this are clamped (a receiver cannot park us for a year). */
#define HTTP_RETRY_AFTER_MAX (7 * USEC_PER_DAY)

struct http_client;
struct http_request;

struct http_response {
	/* The HTTP status (100-599) of the final response, or a negative errno when there was
	 * none: -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH (name not resolved), -ECONNRESET,
	 * -EPROTO (TLS or HTTP protocol error, certificate not trusted), -EIO otherwise. */
	int status;
	const char *error; /* curl's description when status < 0, else NULL */
	const char *body;  /* the first body_len bytes of the body, NUL-terminated (may hold NULs) */
	size_t body_len;
	bool body_truncated;
	usec_t retry_after; /* from Retry-After, relative to when it was received; USEC_INFINITY:
			     * none or unparsable */
};

/* resp and everything it points to are borrowed for the call. */
typedef void (*http_done_fn)(void *userdata, const struct http_response *resp);

int http_client_new(sd_event *e, struct http_client **ret);
/* NULL-safe; returns NULL. Cancels every request without calling back. */
struct http_client *http_client_free(struct http_client *c);
static inline void http_client_freep(struct http_client **c)
{
	http_client_free(*c);
}
#define _cleanup_http_client_ _cleanup_(http_client_freep)

/* POST len bytes of body (copied) to url. headers: "Name: value" lines (borrowed for the
 * call), may be NULL. timeout: the whole request, connection included (0 or USEC_INFINITY:
 * none). ca_file: a PEM bundle to trust instead of the system store, or NULL. ret may be NULL
 * when the caller never cancels. -EINVAL, -ENOMEM, -EIO (curl refused an option). */
int http_post(struct http_client *c, const char *url, char *const *headers, const char *body,
	      size_t len, usec_t timeout, const char *ca_file, http_done_fn done, void *userdata,
	      struct http_request **ret);

/* End a request early; its callback is not called. NULL-safe; returns NULL. */
struct http_request *http_request_cancel(struct http_request *r);

/* Requests in progress. */
size_t http_client_in_flight(const struct http_client *c);

/* Parse a Retry-After value: delay-seconds or an HTTP-date (relative to now, a Unix time).
 * USEC_INFINITY when neither; a date in the past is 0; clamped to HTTP_RETRY_AFTER_MAX. */
usec_t http_parse_retry_after(const char *value, time_t now);
