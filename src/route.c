#include "route.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

struct route_monitor {
	sd_event *event;
	int fd;
	sd_event_source *io;
	sd_event_source *debounce; /* armed from the first change of a burst */
	usec_t delay;
	void (*changed)(void *userdata);
	void *userdata;
};

/* The table is in the header for the classic ones, in RTA_TABLE beyond 255. */
static unsigned route_table(const struct nlmsghdr *h, const struct rtmsg *rtm)
{
	size_t len = RTM_PAYLOAD(h);

	for (const struct rtattr *a = RTM_RTA(rtm); RTA_OK(a, len); a = RTA_NEXT(a, len))
		if (a->rta_type == RTA_TABLE && RTA_PAYLOAD(a) >= sizeof(uint32_t))
			return *(const uint32_t *)RTA_DATA(a);
	return rtm->rtm_table;
}

static bool is_default_route(const struct nlmsghdr *h)
{
	const struct rtmsg *rtm = NLMSG_DATA(h);

	if (h->nlmsg_type != RTM_NEWROUTE && h->nlmsg_type != RTM_DELROUTE)
		return false;
	if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*rtm)))
		return false;
	if (rtm->rtm_family != AF_INET && rtm->rtm_family != AF_INET6)
		return false;
	return rtm->rtm_dst_len == 0 && rtm->rtm_type == RTN_UNICAST &&
	       !(rtm->rtm_flags & RTM_F_CLONED) && route_table(h, rtm) == RT_TABLE_MAIN;
}

bool route_message_is_default(const void *buf, size_t len)
{
	for (const struct nlmsghdr *h = buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len))
		if (is_default_route(h))
			return true;
	return false;
}

static int on_debounce(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct route_monitor *m = userdata;

	log_info("default route changed: checking every connection");
	m->changed(m->userdata);
	return 0;
}

static void route_changed(struct route_monitor *m)
{
	int enabled = SD_EVENT_OFF;
	int r;

	sd_event_source_get_enabled(m->debounce, &enabled);
	if (enabled != SD_EVENT_OFF)
		return; /* part of the burst already counted */
	r = sd_event_source_set_time_relative(m->debounce, m->delay);
	if (r >= 0)
		r = sd_event_source_set_enabled(m->debounce, SD_EVENT_ONESHOT);
	if (r < 0)
		log_debug_errno(r, "Cannot arm the route debounce timer: %m, ignoring");
}

static int on_readable(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct route_monitor *m = userdata;
	union {
		struct nlmsghdr h;
		uint8_t bytes[16384];
	} buf;

	for (;;) {
		struct sockaddr_nl from = {};
		socklen_t fromlen = sizeof(from);
		ssize_t n = recvfrom(fd, &buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from,
				     &fromlen);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ENOBUFS) {
			/* The kernel dropped messages for us: one of them may have mattered. */
			route_changed(m);
			continue;
		}
		if (n < 0) {
			if (errno != EAGAIN)
				log_debug_errno(errno, "rtnetlink: %m, ignoring");
			return 0;
		}
		/* Only the kernel speaks for the routing table. */
		if (from.nl_pid == 0 && route_message_is_default(&buf, (size_t)n))
			route_changed(m);
	}
}

struct route_monitor *route_monitor_free(struct route_monitor *m)
{
	if (!m)
		return NULL;
	sd_event_source_disable_unref(m->io);
	sd_event_source_disable_unref(m->debounce);
	safe_close(m->fd);
	sd_event_unref(m->event);
	return mfree(m);
}

static int route_monitor_open(struct route_monitor *m)
{
	struct sockaddr_nl sa = {
		.nl_family = AF_NETLINK,
		.nl_groups = RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE,
	};
	int r;

	m->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
	if (m->fd < 0)
		return -errno;
	if (bind(m->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	r = sd_event_add_io(m->event, &m->io, m->fd, EPOLLIN, on_readable, m);
	if (r < 0)
		return r;
	r = sd_event_add_time(m->event, &m->debounce, CLOCK_MONOTONIC, 0, 50 * USEC_PER_MSEC,
			      on_debounce, m);
	if (r >= 0)
		r = sd_event_source_set_enabled(m->debounce, SD_EVENT_OFF);
	return r;
}

int route_monitor_new(sd_event *e, usec_t debounce, void (*changed)(void *userdata),
		      void *userdata, struct route_monitor **ret)
{
	struct route_monitor *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	m->event = sd_event_ref(e);
	m->fd = -EBADF;
	m->delay = debounce;
	m->changed = changed;
	m->userdata = userdata;
	r = route_monitor_open(m);
	if (r == -ENOMEM) {
		route_monitor_free(m);
		return r;
	}
	if (r < 0) {
		log_info_errno(r, "cannot watch the routing table (%m): a network change is "
				  "noticed only by timeouts");
		m->io = sd_event_source_disable_unref(m->io);
		m->debounce = sd_event_source_disable_unref(m->debounce);
		m->fd = safe_close(m->fd);
	}
	*ret = m;
	return 0;
}
