#include "net/resolve.h"

#include <arpa/inet.h>

#include <ares.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"

/* c-ares' defaults (5 s, 4 tries per server) outlast any sensible connect timeout; the
 * connection's own deadline covers the whole attempt anyway. */
#define RESOLVE_TIMEOUT_MSEC 2000
#define RESOLVE_TRIES	     2

/* One socket c-ares asked us to watch. */
struct resolver_socket {
	int fd;
	sd_event_source *source;
	struct resolver_socket *next;
};

struct resolve_query {
	struct resolver *resolver; /* NULL once unlinked (being dispatched) */
	struct resolve_query *prev, *next;
	resolve_cb cb;
	void *userdata;
	sd_event_source *defer; /* delivers the answer on the next loop iteration */
	bool cancelled;		/* still inside c-ares; freed when c-ares lets go of it */
	bool done;		/* answer stored, delivery pending */
	bool dispatching;	/* callback running */
	int error;
	struct addrinfo *ai;
};

struct resolver {
	sd_event *event;
	ares_channel channel;
	bool channel_ready;
	bool freeing;
	sd_event_source *timer;
	struct resolver_socket *sockets; /* linked list of the c-ares sockets */
	struct resolve_query *queries;	 /* linked list of every live query */
};

static unsigned library_users;

static int errno_from_ares(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return 0;
	case ARES_ENOTFOUND:
	case ARES_ENONAME:
		return -ENOENT;
	case ARES_ENODATA:
		return -ENODATA;
	case ARES_ETIMEOUT:
		return -ETIMEDOUT;
	case ARES_ECONNREFUSED:
	case ARES_ESERVFAIL:
	case ARES_EREFUSED:
	case ARES_EFORMERR:
	case ARES_ENOTIMP:
	case ARES_EBADRESP:
		return -EHOSTUNREACH;
	case ARES_EBADNAME:
	case ARES_EBADFAMILY:
	case ARES_EBADFLAGS:
	case ARES_EBADHINTS:
	case ARES_EBADSTR:
	case ARES_ESERVICE:
		return -EINVAL;
	case ARES_ENOMEM:
		return -ENOMEM;
	case ARES_ECANCELLED:
	case ARES_EDESTRUCTION:
		return -ECANCELED;
	default:
		return -EIO;
	}
}

const char *resolve_strerror(int error)
{
	switch (error) {
	case 0:
		return "success";
	case -ENOENT:
		return "host not found";
	case -ENODATA:
		return "host has no address";
	case -ETIMEDOUT:
		return "DNS query timed out";
	case -EHOSTUNREACH:
		return "no DNS server answered";
	case -EINVAL:
		return "invalid host name";
	case -ENOMEM:
		return "out of memory";
	case -ECANCELED:
		return "cancelled";
	default:
		return "resolver error";
	}
}

static void addrinfo_list_free(struct addrinfo *ai)
{
	while (ai) {
		struct addrinfo *next = ai->ai_next;
		free(ai);
		ai = next;
	}
}

/* Callers get a plain struct addrinfo list, so nothing outside this file sees c-ares types.
 * Each entry and its address share one allocation. */
struct addrinfo_entry {
	struct addrinfo ai;
	struct sockaddr_storage addr;
};

static int addrinfo_from_ares(const struct ares_addrinfo *res, struct addrinfo **ret)
{
	struct addrinfo *head = NULL, **tail = &head;

	for (const struct ares_addrinfo_node *n = res ? res->nodes : NULL; n; n = n->ai_next) {
		struct addrinfo_entry *e;

		if (n->ai_addrlen > sizeof(e->addr))
			continue;
		e = calloc(1, sizeof(*e));
		if (!e) {
			addrinfo_list_free(head);
			return -ENOMEM;
		}
		memcpy(&e->addr, n->ai_addr, n->ai_addrlen);
		e->ai.ai_family = n->ai_family;
		e->ai.ai_socktype = SOCK_STREAM;
		e->ai.ai_protocol = n->ai_protocol;
		e->ai.ai_addrlen = n->ai_addrlen;
		e->ai.ai_addr = (struct sockaddr *)&e->addr;
		*tail = &e->ai;
		tail = &e->ai.ai_next;
	}
	if (!head)
		return -ENODATA;
	*ret = head;
	return 0;
}

static void query_unlink(struct resolve_query *q)
{
	struct resolver *r = q->resolver;

	if (!r)
		return;
	if (q->prev)
		q->prev->next = q->next;
	else
		r->queries = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
	q->resolver = NULL;
}

static void query_free(struct resolve_query *q)
{
	query_unlink(q);
	sd_event_source_disable_unref(q->defer);
	addrinfo_list_free(q->ai);
	free(q);
}

static int on_query_done(sd_event_source *s, void *userdata)
{
	struct resolve_query *q = userdata;

	/* Unlinked first: the callback may free the resolver, which must not find this query. */
	query_unlink(q);
	q->dispatching = true;
	if (q->cb)
		q->cb(q->error, q->error < 0 ? NULL : q->ai, q->userdata);
	query_free(q);
	return 0;
}

static void on_ares_result(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct resolve_query *q = arg;

	if (q->cancelled || !q->resolver || q->resolver->freeing) {
		if (res)
			ares_freeaddrinfo(res);
		query_free(q);
		return;
	}

	q->error = errno_from_ares(status);
	if (q->error == 0)
		q->error = addrinfo_from_ares(res, &q->ai);
	if (res)
		ares_freeaddrinfo(res);
	q->done = true;
	/* c-ares may answer from inside ares_getaddrinfo() (numeric hosts, /etc/hosts): never
	 * call the owner from here, always from the loop. */
	(void)sd_event_source_set_enabled(q->defer, SD_EVENT_ONESHOT);
}

static void resolver_rearm(struct resolver *r)
{
	struct timeval tv;
	usec_t usec;
	int k;

	if (!r->channel_ready || !ares_timeout(r->channel, NULL, &tv)) {
		if (r->timer)
			(void)sd_event_source_set_enabled(r->timer, SD_EVENT_OFF);
		return;
	}
	usec = (usec_t)tv.tv_sec * USEC_PER_SEC + (usec_t)tv.tv_usec;
	k = sd_event_source_set_time_relative(r->timer, usec);
	if (k >= 0)
		k = sd_event_source_set_enabled(r->timer, SD_EVENT_ONESHOT);
	if (k < 0)
		log_debug_errno(k, "resolver: cannot arm timer: %m");
}

static int on_ares_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct resolver *r = userdata;

	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	resolver_rearm(r);
	return 0;
}

static int on_ares_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct resolver *r = userdata;
	bool readable = revents & (EPOLLIN | EPOLLERR | EPOLLHUP);
	bool writable = revents & EPOLLOUT;

	/* May close fd and free its resolver_socket (via on_sock_state): touch neither after. */
	ares_process_fd(r->channel, readable ? fd : ARES_SOCKET_BAD,
			writable ? fd : ARES_SOCKET_BAD);
	resolver_rearm(r);
	return 0;
}

static struct resolver_socket **socket_find(struct resolver *r, int fd)
{
	struct resolver_socket **p = &r->sockets;

	while (*p && (*p)->fd != fd)
		p = &(*p)->next;
	return p;
}

static int socket_watch(struct resolver *r, int fd, uint32_t events)
{
	struct resolver_socket *sock;
	int k;

	sock = calloc(1, sizeof(*sock));
	if (!sock)
		return -ENOMEM;
	k = sd_event_add_io(r->event, &sock->source, fd, events, on_ares_io, r);
	if (k < 0) {
		free(sock);
		return k;
	}
	sock->fd = fd;
	sock->next = r->sockets;
	r->sockets = sock;
	return 0;
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct resolver *r = data;
	struct resolver_socket **p = socket_find(r, fd), *sock = *p;
	uint32_t events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
	int k = 0;

	if (!events) {
		if (sock) {
			*p = sock->next;
			sd_event_source_disable_unref(sock->source);
			free(sock);
		}
		return;
	}
	if (sock)
		k = sd_event_source_set_io_events(sock->source, events);
	else
		k = socket_watch(r, fd, events);
	/* Nothing to tell c-ares: its query times out through the timer instead. */
	if (k < 0)
		log_debug_errno(k, "resolver: cannot watch DNS socket %d: %m", fd);
}

static int library_ref(void)
{
	int status;

	if (library_users == 0) {
		status = ares_library_init(ARES_LIB_INIT_ALL);
		if (status != ARES_SUCCESS)
			return errno_from_ares(status);
	}
	library_users++;
	return 0;
}

static void library_unref(void)
{
	if (library_users > 0 && --library_users == 0)
		ares_library_cleanup();
}

static int resolver_init_channel(struct resolver *r)
{
	struct ares_options opts = {
	    .timeout = RESOLVE_TIMEOUT_MSEC,
	    .tries = RESOLVE_TRIES,
	    .sock_state_cb = on_sock_state,
	    .sock_state_cb_data = r,
	};
	int status;

	status = ares_init_options(&r->channel, &opts,
				   ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB);
	if (status != ARES_SUCCESS)
		return errno_from_ares(status);
	r->channel_ready = true;
	return 0;
}

struct resolver *resolver_new(sd_event *e)
{
	struct resolver *r;
	int k;

	if (!e)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->event = sd_event_ref(e);
	k = library_ref();
	if (k < 0) {
		sd_event_unref(r->event);
		free(r);
		return NULL;
	}
	k = resolver_init_channel(r);
	if (k >= 0)
		/* Accuracy 1 µs: 0 would mean a default slack of 250 ms on every lookup step. */
		k = sd_event_add_time_relative(e, &r->timer, CLOCK_BOOTTIME, 0, 1, on_ares_timer,
					       r);
	if (k >= 0)
		k = sd_event_source_set_enabled(r->timer, SD_EVENT_OFF);
	if (k < 0) {
		log_debug_errno(k, "resolver: cannot initialise: %m");
		return resolver_free(r);
	}
	return r;
}

struct resolver *resolver_free(struct resolver *r)
{
	if (!r)
		return NULL;

	r->freeing = true;
	/* Calls on_ares_result (EDESTRUCTION) for every query inside c-ares, which frees it, and
	 * on_sock_state for every socket, which unwatches it. */
	if (r->channel_ready)
		ares_destroy(r->channel);
	r->channel_ready = false;
	while (r->queries)
		query_free(r->queries);
	while (r->sockets) {
		struct resolver_socket *sock = r->sockets;
		r->sockets = sock->next;
		sd_event_source_disable_unref(sock->source);
		free(sock);
	}
	sd_event_source_disable_unref(r->timer);
	sd_event_unref(r->event);
	library_unref();
	free(r);
	return NULL;
}

int resolver_set_servers(struct resolver *r, const char *servers)
{
	int status;

	if (!r || !servers)
		return -EINVAL;
	status = ares_set_servers_ports_csv(r->channel, servers);
	return status == ARES_SUCCESS ? 0 : errno_from_ares(status) ?: -EINVAL;
}

static struct resolve_query *query_new(struct resolver *r, resolve_cb cb, void *userdata)
{
	struct resolve_query *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	if (sd_event_add_defer(r->event, &q->defer, on_query_done, q) < 0 ||
	    sd_event_source_set_enabled(q->defer, SD_EVENT_OFF) < 0) {
		sd_event_source_unref(q->defer);
		free(q);
		return NULL;
	}
	q->cb = cb;
	q->userdata = userdata;
	q->resolver = r;
	q->next = r->queries;
	if (r->queries)
		r->queries->prev = q;
	r->queries = q;
	return q;
}

/* An IP literal needs no DNS, and must not get any: c-ares 1.18 sends A and AAAA queries
 * for "127.0.0.1" to the configured name server even with ARES_AI_NUMERICHOST, so a
 * hundred watches of a numeric host stalled for seconds behind an unreachable server (and
 * sent packets off the machine). Literals are answered here, through the same deferred path. */
static int literal_addrinfo(const char *host, uint16_t port, struct addrinfo **ret)
{
	struct addrinfo_entry *e = calloc(1, sizeof(*e));
	struct sockaddr_in *in = (struct sockaddr_in *)&e->addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&e->addr;

	if (!e)
		return -ENOMEM;
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		e->ai.ai_addrlen = sizeof(*in);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		e->ai.ai_addrlen = sizeof(*in6);
	} else {
		free(e);
		return 0;
	}
	e->ai.ai_family = ((struct sockaddr *)&e->addr)->sa_family;
	e->ai.ai_socktype = SOCK_STREAM;
	e->ai.ai_protocol = IPPROTO_TCP;
	e->ai.ai_addr = (struct sockaddr *)&e->addr;
	*ret = &e->ai;
	return 1;
}

int resolver_resolve(struct resolver *r, const char *host, uint16_t port, resolve_cb cb,
		     void *userdata, struct resolve_query **ret)
{
	struct ares_addrinfo_hints hints = {
	    .ai_flags = ARES_AI_NUMERICSERV,
	    .ai_family = AF_UNSPEC,
	    .ai_socktype = SOCK_STREAM,
	};
	struct resolve_query *q;
	char service[6];
	int k;

	if (!r || !host || !*host || !cb || r->freeing)
		return -EINVAL;
	q = query_new(r, cb, userdata);
	if (!q)
		return -ENOMEM;
	k = literal_addrinfo(host, port, &q->ai);
	if (k != 0) {
		q->error = MIN(k, 0);
		q->done = true;
		(void)sd_event_source_set_enabled(q->defer, SD_EVENT_ONESHOT);
	} else {
		snprintf(service, sizeof(service), "%u", (unsigned)port);
		ares_getaddrinfo(r->channel, host, service, &hints, on_ares_result, q);
		resolver_rearm(r);
	}
	if (ret)
		*ret = q;
	return 0;
}

struct resolve_query *resolve_query_cancel(struct resolve_query *q)
{
	if (!q)
		return NULL;
	q->cb = NULL;
	if (q->dispatching)
		return NULL; /* on_query_done frees it when the callback returns */
	if (q->done)
		query_free(q);
	else
		q->cancelled = true; /* c-ares still holds it; on_ares_result frees it */
	return NULL;
}
