/* Asynchronous name resolution: c-ares driven by the sd-event loop.
 *
 * One resolver per process (it owns the c-ares channel and library initialisation). A query
 * asks for every TCP address of a host, IPv6 and IPv4 (AF_UNSPEC), in the order c-ares sorts
 * them (RFC 6724). Numeric hosts ("127.0.0.1", "::1") and names in /etc/hosts ("localhost")
 * are answered without any DNS server.
 *
 * Callbacks: always from the event loop, never from inside resolver_resolve() even when the
 * answer is known at once (it is deferred to the next loop iteration). Each query's callback
 * runs at most once; after it has run the query is gone (its handle must not be cancelled).
 *
 * Lifetimes: the resolver must outlive the event loop's dispatching of its queries; freeing it
 * drops every pending query without calling its callback. resolver_free() and
 * resolve_query_cancel() may be called from inside a resolve callback. */
#pragma once

#include <netdb.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "util.h"

struct resolver;
struct resolve_query;

/* error: 0, or a negative errno: -ENOENT (no such host), -ENODATA (host has no address),
 * -ETIMEDOUT (no DNS answer in time), -EHOSTUNREACH (no DNS server answered usefully),
 * -EINVAL (malformed name), -ENOMEM, -EIO (anything else).
 * ai: on success a non-empty list with the port filled in; owned by the resolver and valid only
 * during the callback. NULL on error. */
typedef void (*resolve_cb)(int error, const struct addrinfo *ai, void *userdata);

/* Takes a reference on e. Returns NULL on failure (out of memory, c-ares init failed). */
struct resolver *resolver_new(sd_event *e);
struct resolver *resolver_free(struct resolver *r);
static inline void resolver_freep(struct resolver **r)
{
	resolver_free(*r);
}
#define _cleanup_resolver_free_ _cleanup_(resolver_freep)

/* Use these DNS servers instead of /etc/resolv.conf's: "127.0.0.1:5353,[::1]:53".
 * For tests and for a future config option. */
int resolver_set_servers(struct resolver *r, const char *servers);

/* Start resolving host. On success *ret (if ret is not NULL) is a handle the caller may use
 * with resolve_query_cancel() until the callback runs. */
int resolver_resolve(struct resolver *r, const char *host, uint16_t port, resolve_cb cb,
		     void *userdata, struct resolve_query **ret);

/* The callback will not be called. NULL-safe; returns NULL. */
struct resolve_query *resolve_query_cancel(struct resolve_query *q);

/* A message for a resolve_cb error, worded for DNS ("host not found" rather than strerror's
 * "No such file or directory"). */
const char *resolve_strerror(int error);
