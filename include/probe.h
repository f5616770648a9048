/* `imapidled check --connect`: log in to every account once, report what the server
 * offers and whether the watched mailboxes exist. */
#pragma once

#include "config.h"

/* Runs its own event loop until every account has answered or failed. Prints a report on
 * stdout; returns EX_OK when every account logged in and every watched mailbox exists,
 * EX_NOPERM when a login was rejected, EX_UNAVAILABLE for any other failure. */
int probe_run(const struct config *config);
