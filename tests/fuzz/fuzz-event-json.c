/* Fuzz mail_event_from_json(), the reader of the webhook spool and of what exec commands are
 * given on stdin, and check the round trip: whatever it accepts, mail_event_to_json() must
 * write back in a form that parses to the same event and re-encodes to the same bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

#define NOW ((time_t)1714564800) /* a fixed timestamp, so that both encodings can be compared */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool address_equal(const struct mail_address *a, const struct mail_address *b)
{
	return streq_ptr(a->name, b->name) && streq_ptr(a->address, b->address);
}

/* Field by field rather than by JSON only: a field the encoder forgot would compare equal as
 * text on both sides and hide the loss. */
static bool event_equal(const struct mail_event *a, const struct mail_event *b)
{
	if (!streq(a->type, b->type) || !streq(a->id, b->id) || !streq(a->account, b->account) ||
	    !streq(a->mailbox, b->mailbox) || a->uidvalidity != b->uidvalidity ||
	    a->first_uid != b->first_uid || a->uid != b->uid || a->count != b->count ||
	    !streq_ptr(a->message_id, b->message_id) || !streq_ptr(a->subject, b->subject) ||
	    !address_equal(&a->from, &b->from) || a->n_to != b->n_to || a->date != b->date ||
	    a->received != b->received || a->size != b->size || a->flags != b->flags)
		return false;
	for (size_t i = 0; i < a->n_to; i++)
		if (!address_equal(&a->to[i], &b->to[i]))
			return false;
	return true;
}

static void fail(const char *what, const char *json)
{
	fprintf(stderr, "fuzz-event-json: %s\ninput re-encoded: %s\n", what, json);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_mail_event_ struct mail_event *e = NULL, *again = NULL;
	_cleanup_free_ char *text = NULL, *json = NULL, *json2 = NULL;
	int r;

	if (size > MAIL_EVENT_JSON_MAX + 1)
		return 0;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	if (mail_event_from_json(text, &e) < 0)
		return 0;
	if (e->ref != 1)
		fail("parsed event does not hold exactly one reference", text);

	r = mail_event_to_json(e, NOW, &json);
	if (r < 0)
		fail("accepted event cannot be encoded", text);
	r = mail_event_from_json(json, &again);
	if (r < 0)
		fail("re-encoded event does not parse", json);
	if (!event_equal(e, again))
		fail("round trip changed the event", json);
	r = mail_event_to_json(again, NOW, &json2);
	if (r < 0 || !streq(json, json2))
		fail("second encoding differs from the first", json);
	return 0;
}
