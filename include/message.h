/* From a fetched message (ENVELOPE and friends, borrowed from the parser) to a decoded,
 * immutable mail_event: RFC 2047 words decoded, addresses joined, control characters gone. */
#pragma once

#include "event.h"
#include "imap/fetch.h"

int message_event_from_fetch(const char *account, const char *mailbox, uint32_t uidvalidity,
			     const struct imap_fetch *f, struct mail_event **ret);
