#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include "helpers.h"
#include "net/resolve.h"

struct result {
	bool called;
	int calls;
	int error;
	int n_v4, n_v6;
	bool has_loopback4, has_loopback6;
	uint16_t port;
	struct resolver **free_resolver; /* free it from inside the callback */
};

static void on_resolved(int error, const struct addrinfo *ai, void *userdata)
{
	struct result *res = userdata;

	res->called = true;
	res->calls++;
	res->error = error;
	for (; ai; ai = ai->ai_next) {
		assert_int_equal(ai->ai_socktype, SOCK_STREAM);
		if (ai->ai_family == AF_INET) {
			const struct sockaddr_in *sin = (const void *)ai->ai_addr;
			res->n_v4++;
			res->port = ntohs(sin->sin_port);
			if (sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK))
				res->has_loopback4 = true;
		} else if (ai->ai_family == AF_INET6) {
			const struct sockaddr_in6 *sin6 = (const void *)ai->ai_addr;
			res->n_v6++;
			res->port = ntohs(sin6->sin6_port);
			if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
				res->has_loopback6 = true;
		}
	}
	if (res->free_resolver)
		*res->free_resolver = resolver_free(*res->free_resolver);
}

/* Run the loop until *flag is set or the deadline passes; returns the elapsed time. */
static usec_t run_until(sd_event *e, const bool *flag, usec_t max)
{
	usec_t start = now_usec(CLOCK_MONOTONIC);

	LOOP_RUN_UNTIL(e, *flag, max);
	return now_usec(CLOCK_MONOTONIC) - start;
}

static void resolve_one(const char *host, struct result *res)
{
	_cleanup_(sd_event_unrefp) sd_event *e = NULL;
	_cleanup_resolver_free_ struct resolver *r = NULL;
	struct resolve_query *q = NULL;

	assert_int_equal(sd_event_new(&e), 0);
	r = resolver_new(e);
	assert_non_null(r);
	assert_int_equal(resolver_resolve(r, host, 993, on_resolved, res, &q), 0);
	assert_non_null(q);
	/* Even an immediate answer is never delivered from inside resolver_resolve(). */
	assert_false(res->called);
	run_until(e, &res->called, 3 * USEC_PER_SEC);
	assert_true(res->called);
	assert_int_equal(res->calls, 1);
}

static void test_numeric_ipv4(void **state)
{
	struct result res = {};

	resolve_one("127.0.0.1", &res);
	assert_int_equal(res.error, 0);
	assert_int_equal(res.n_v4, 1);
	assert_int_equal(res.n_v6, 0);
	assert_true(res.has_loopback4);
	assert_int_equal(res.port, 993);
}

static bool have_ipv6_loopback(void)
{
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

static void test_numeric_ipv6(void **state)
{
	struct result res = {};

	if (!have_ipv6_loopback())
		skip();
	resolve_one("::1", &res);
	assert_int_equal(res.error, 0);
	assert_int_equal(res.n_v6, 1);
	assert_true(res.has_loopback6);
	assert_int_equal(res.port, 993);
}

static void test_localhost(void **state)
{
	struct result res = {};

	resolve_one("localhost", &res);
	assert_int_equal(res.error, 0);
	assert_true(res.has_loopback4 || res.has_loopback6);
}

/* A DNS server on loopback that answers every query with NXDOMAIN, or stays silent. */
struct fake_dns {
	int fd;
	uint16_t port;
	bool silent;
	unsigned queries;
	sd_event_source *source;
};

static size_t question_end(const uint8_t *p, size_t n)
{
	size_t i = 12;

	while (i < n && p[i] != 0)
		i += 1 + p[i];
	return i + 1 + 4 <= n ? i + 1 + 4 : 0;
}

static int on_dns_query(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct fake_dns *dns = userdata;
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	uint8_t buf[512];
	ssize_t n;
	size_t end;

	n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fromlen);
	if (n < 12)
		return 0;
	dns->queries++;
	end = question_end(buf, (size_t)n);
	if (dns->silent || end == 0)
		return 0;
	buf[2] |= 0x80;		      /* QR: a response */
	buf[3] = (uint8_t)(0x80 | 3); /* RA, RCODE 3: NXDOMAIN */
	memset(buf + 6, 0, 6);	      /* no answer, authority, additional records */
	sendto(fd, buf, end, 0, (struct sockaddr *)&from, fromlen);
	return 0;
}

static void fake_dns_start(sd_event *e, struct fake_dns *dns, bool silent)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);

	dns->silent = silent;
	dns->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(dns->fd >= 0);
	assert_int_equal(bind(dns->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(dns->fd, (struct sockaddr *)&sa, &len), 0);
	dns->port = ntohs(sa.sin_port);
	assert_int_equal(sd_event_add_io(e, &dns->source, dns->fd, EPOLLIN, on_dns_query, dns), 0);
}

static void fake_dns_stop(struct fake_dns *dns)
{
	sd_event_source_disable_unref(dns->source);
	close(dns->fd);
}

static struct resolver *resolver_with_server(sd_event *e, uint16_t port)
{
	struct resolver *r = resolver_new(e);
	char servers[64];

	assert_non_null(r);
	snprintf(servers, sizeof(servers), "127.0.0.1:%u", (unsigned)port);
	assert_int_equal(resolver_set_servers(r, servers), 0);
	return r;
}

static void test_nxdomain(void **state)
{
	_cleanup_(sd_event_unrefp) sd_event *e = NULL;
	_cleanup_resolver_free_ struct resolver *r = NULL;
	struct fake_dns dns = {};
	struct result res = {};
	usec_t took;

	assert_int_equal(sd_event_new(&e), 0);
	fake_dns_start(e, &dns, false);
	r = resolver_with_server(e, dns.port);
	assert_int_equal(resolver_resolve(r, "nonexistent.invalid", 993, on_resolved, &res, NULL),
			 0);
	took = run_until(e, &res.called, 3 * USEC_PER_SEC);
	assert_true(res.called);
	assert_int_equal(res.error, -ENOENT);
	assert_string_equal(resolve_strerror(res.error), "host not found");
	assert_true(dns.queries >= 1);
	assert_true(took < USEC_PER_SEC);
	r = resolver_free(r);
	fake_dns_stop(&dns);
}

/* IP literals never reach a name server: c-ares 1.18 would ask it for 127.0.0.1's A and
 * AAAA records and wait for a silent one, so many watches of a numeric host stalled. */
static void test_literals_send_no_query(void **state)
{
	_cleanup_(sd_event_unrefp) sd_event *e = NULL;
	_cleanup_resolver_free_ struct resolver *r = NULL;
	struct fake_dns dns = {};
	struct result res[40] = {};

	assert_int_equal(sd_event_new(&e), 0);
	fake_dns_start(e, &dns, true);
	r = resolver_with_server(e, dns.port);
	for (size_t i = 0; i < ELEMENTSOF(res); i++)
		assert_int_equal(resolver_resolve(r, i % 2 ? "::1" : "127.0.0.1", 993, on_resolved,
						  &res[i], NULL),
				 0);
	loop_run_for(e, 100 * USEC_PER_MSEC);
	for (size_t i = 0; i < ELEMENTSOF(res); i++) {
		assert_true(res[i].called);
		assert_int_equal(res[i].error, 0);
		assert_int_equal(res[i].port, 993);
		assert_true(i % 2 ? res[i].has_loopback6 : res[i].has_loopback4);
	}
	assert_int_equal(dns.queries, 0);
	r = resolver_free(r);
	fake_dns_stop(&dns);
}

/* No DNS server listening: the query fails instead of hanging. */
static void test_no_server(void **state)
{
	_cleanup_(sd_event_unrefp) sd_event *e = NULL;
	_cleanup_resolver_free_ struct resolver *r = NULL;
	struct fake_dns dns = {};
	struct result res = {};

	assert_int_equal(sd_event_new(&e), 0);
	fake_dns_start(e, &dns, false);
	fake_dns_stop(&dns); /* a port where nobody listens */
	r = resolver_with_server(e, dns.port);
	assert_int_equal(resolver_resolve(r, "nonexistent.invalid", 993, on_resolved, &res, NULL),
			 0);
	run_until(e, &res.called, 8 * USEC_PER_SEC);
	assert_true(res.called);
	assert_true(res.error == -EHOSTUNREACH || res.error == -ETIMEDOUT);
}

static void test_cancel(void **state)
{
	_cleanup_(sd_event_unrefp) sd_event *e = NULL;
	_cleanup_resolver_free_ struct resolver *r = NULL;
	struct fake_dns dns = {};
	struct result res_slow = {}, res_fast = {}, res_pending = {};
	struct resolve_query *slow = NULL, *fast = NULL, *pending = NULL;

	assert_int_equal(sd_event_new(&e), 0);
	fake_dns_start(e, &dns, true);
	r = resolver_with_server(e, dns.port);

	/* Cancelled while c-ares is waiting for a server. */
	assert_int_equal(resolver_resolve(r, "slow.invalid", 1, on_resolved, &res_slow, &slow), 0);
	/* Left pending: resolver_free() drops it without a callback. */
	assert_int_equal(
	    resolver_resolve(r, "pending.invalid", 1, on_resolved, &res_pending, &pending), 0);
	loop_run_for(e, 20 * USEC_PER_MSEC);
	assert_true(dns.queries >= 1);
	assert_null(resolve_query_cancel(slow));
	assert_null(resolve_query_cancel(NULL));

	/* Cancelled after the answer is known but before it was delivered. */
	assert_int_equal(resolver_resolve(r, "127.0.0.1", 1, on_resolved, &res_fast, &fast), 0);
	assert_null(resolve_query_cancel(fast));
	loop_run_for(e, 100 * USEC_PER_MSEC);
	assert_false(res_slow.called);
	assert_false(res_fast.called);
	assert_false(res_pending.called);

	r = resolver_free(r);
	loop_run_for(e, 20 * USEC_PER_MSEC);
	assert_false(res_pending.called);
	fake_dns_stop(&dns);
}

/* The owner may drop the whole resolver from inside a callback while other answers wait. */
static void test_free_from_callback(void **state)
{
	_cleanup_(sd_event_unrefp) sd_event *e = NULL;
	struct resolver *r;
	struct result a = {}, b = {};

	assert_int_equal(sd_event_new(&e), 0);
	r = resolver_new(e);
	assert_non_null(r);
	a.free_resolver = b.free_resolver = &r;
	assert_int_equal(resolver_resolve(r, "127.0.0.1", 1, on_resolved, &a, NULL), 0);
	assert_int_equal(resolver_resolve(r, "127.0.0.2", 1, on_resolved, &b, NULL), 0);
	loop_run_for(e, 100 * USEC_PER_MSEC);
	/* Whichever ran first freed the resolver; the other never ran. */
	assert_int_equal(a.calls + b.calls, 1);
	assert_null(r);
}

static void test_invalid_args(void **state)
{
	_cleanup_(sd_event_unrefp) sd_event *e = NULL;
	_cleanup_resolver_free_ struct resolver *r = NULL;
	struct result res = {};

	assert_null(resolver_new(NULL));
	assert_null(resolver_free(NULL));
	assert_int_equal(sd_event_new(&e), 0);
	r = resolver_new(e);
	assert_int_equal(resolver_resolve(r, "", 1, on_resolved, &res, NULL), -EINVAL);
	assert_int_equal(resolver_resolve(r, NULL, 1, on_resolved, &res, NULL), -EINVAL);
	assert_int_equal(resolver_resolve(r, "x", 1, NULL, &res, NULL), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_numeric_ipv4),       cmocka_unit_test(test_numeric_ipv6),
	    cmocka_unit_test(test_localhost),	       cmocka_unit_test(test_nxdomain),
	    cmocka_unit_test(test_literals_send_no_query),
	    cmocka_unit_test(test_no_server),	       cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_free_from_callback), cmocka_unit_test(test_invalid_args),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
