/* The default route, watched over rtnetlink: a new one (another Wi-Fi, a VPN, the cable back)
 * or one gone means every connection may now be dead or going through the wrong door, so the
 * owner probes them all, as after a resume.
 *
 * Changes come in bursts (a DHCP lease adds and replaces routes for both families): the
 * owner is told once, debounce after the first change of a burst. Without a netlink socket
 * (a sandbox that forbids AF_NETLINK) the monitor says so once and is inert. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "util.h"

struct route_monitor;

/* changed(userdata) is called from the loop. Only -ENOMEM fails; *ret is always set on
 * success (an inert monitor without netlink). */
int route_monitor_new(sd_event *e, usec_t debounce, void (*changed)(void *userdata),
		      void *userdata, struct route_monitor **ret);
struct route_monitor *route_monitor_free(struct route_monitor *m);

/* Pure: whether a datagram from the kernel adds or removes a default route (IPv4 or IPv6,
 * destination length 0, main table, unicast). buf must be aligned for struct nlmsghdr. */
bool route_message_is_default(const void *buf, size_t len);
