#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gate.h"
#include "helpers.h"

struct client {
	struct gate *g;
	struct gate_slot slot;
	unsigned started;
	bool leave_at_once;
};

static void go(void *userdata)
{
	struct client *c = userdata;

	c->started++;
	if (c->leave_at_once)
		gate_leave(c->g, &c->slot);
}

static void test_cap_and_fifo(void **state)
{
	sd_event *e = NULL;
	struct client c[5] = {};
	struct gate *g;

	assert_int_equal(sd_event_new(&e), 0);
	g = gate_new(e, 2);
	assert_non_null(g);
	for (int i = 0; i < 5; i++) {
		c[i].g = g;
		gate_enter(g, &c[i].slot, go, &c[i]);
	}
	/* Never from inside gate_enter. */
	assert_int_equal(c[0].started, 0);
	loop_drain(e);
	assert_int_equal(c[0].started + c[1].started, 2);
	assert_int_equal(c[2].started + c[3].started + c[4].started, 0);
	assert_int_equal(gate_in_flight(g), 2);
	assert_int_equal(gate_waiting(g), 3);

	/* A waiter that gives up is skipped; order is kept. */
	gate_leave(g, &c[2].slot);
	gate_leave(g, &c[0].slot);
	gate_leave(g, &c[0].slot); /* idempotent */
	loop_drain(e);
	assert_int_equal(c[3].started, 1);
	assert_int_equal(c[2].started, 0);
	assert_int_equal(c[4].started, 0);
	gate_leave(g, &c[1].slot);
	loop_drain(e);
	assert_int_equal(c[4].started, 1);
	assert_int_equal(gate_waiting(g), 0);
	gate_free(g);
	sd_event_unref(e);
}

static void test_leave_inside_go(void **state)
{
	sd_event *e = NULL;
	struct client c[100] = {};
	struct gate *g;

	assert_int_equal(sd_event_new(&e), 0);
	g = gate_new(e, 1);
	for (int i = 0; i < 100; i++) {
		c[i] = (struct client){ .g = g, .leave_at_once = true };
		gate_enter(g, &c[i].slot, go, &c[i]);
	}
	loop_drain(e);
	for (int i = 0; i < 100; i++)
		assert_int_equal(c[i].started, 1);
	assert_int_equal(gate_in_flight(g), 0);
	gate_free(g);
	sd_event_unref(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cap_and_fifo),
		cmocka_unit_test(test_leave_inside_go),
	};
	return cmocka_run_group_tests_name("gate", tests, NULL, NULL);
}
