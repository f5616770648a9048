#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>

#include "route.h"

/* One RTM_NEWROUTE/RTM_DELROUTE as the kernel sends it, optionally with RTA_TABLE. */
struct msg {
	struct nlmsghdr h;
	struct rtmsg rtm;
	struct rtattr table_attr;
	uint32_t table;
};

static struct msg route(uint16_t type, uint8_t family, uint8_t dst_len, uint8_t table)
{
	struct msg m = {
		.h = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg)), .nlmsg_type = type },
		.rtm = { .rtm_family = family, .rtm_dst_len = dst_len, .rtm_table = table,
			 .rtm_type = RTN_UNICAST },
	};
	return m;
}

static void test_default_routes(void **state)
{
	struct msg m = route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_MAIN);

	assert_true(route_message_is_default(&m, m.h.nlmsg_len));
	m = route(RTM_DELROUTE, AF_INET6, 0, RT_TABLE_MAIN);
	assert_true(route_message_is_default(&m, m.h.nlmsg_len));
}

static void test_other_routes(void **state)
{
	struct msg m = route(RTM_NEWROUTE, AF_INET, 24, RT_TABLE_MAIN); /* a subnet */

	assert_false(route_message_is_default(&m, m.h.nlmsg_len));
	m = route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_LOCAL);
	assert_false(route_message_is_default(&m, m.h.nlmsg_len));
	m = route(RTM_NEWADDR, AF_INET, 0, RT_TABLE_MAIN);
	assert_false(route_message_is_default(&m, m.h.nlmsg_len));
	m = route(RTM_NEWROUTE, AF_INET6, 0, RT_TABLE_MAIN);
	m.rtm.rtm_type = RTN_UNREACHABLE;
	assert_false(route_message_is_default(&m, m.h.nlmsg_len));
}

static void test_table_attribute_wins(void **state)
{
	/* Tables beyond 255 say RT_TABLE_COMPAT in the header and the real one in RTA_TABLE. */
	struct msg m = route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_COMPAT);

	m.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg) + RTA_LENGTH(sizeof(uint32_t)));
	m.table_attr = (struct rtattr){ .rta_len = RTA_LENGTH(sizeof(uint32_t)),
					.rta_type = RTA_TABLE };
	m.table = RT_TABLE_MAIN;
	assert_true(route_message_is_default(&m, m.h.nlmsg_len));
	m.table = 1000;
	assert_false(route_message_is_default(&m, m.h.nlmsg_len));
}

static void test_truncated_and_batched(void **state)
{
	struct msg two[2] = { route(RTM_NEWROUTE, AF_INET, 24, RT_TABLE_MAIN),
			      route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_MAIN) };

	two[0].h.nlmsg_len = sizeof(struct msg); /* padded so the next one is aligned */
	two[1].h.nlmsg_len = sizeof(struct msg);
	assert_true(route_message_is_default(two, sizeof(two)));
	assert_false(route_message_is_default(two, sizeof(two[0]))); /* only the first */
	two[1].h.nlmsg_len = NLMSG_LENGTH(4); /* claims less than an rtmsg */
	assert_false(route_message_is_default(&two[1], sizeof(two[1])));
	assert_false(route_message_is_default(&two[1], 3)); /* shorter than a header */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_routes),
		cmocka_unit_test(test_other_routes),
		cmocka_unit_test(test_table_attribute_wins),
		cmocka_unit_test(test_truncated_and_batched),
	};
	return cmocka_run_group_tests_name("route", tests, NULL, NULL);
}
