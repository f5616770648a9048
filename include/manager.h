/* The root object: the one sd-event loop, the resolver, signals, and one account per
 * [account] section. Everything else hangs off it and runs on its loop. */
#pragma once

#include "config.h"

/* Run the daemon until SIGTERM/SIGINT. Takes ownership of config. Returns an exit code. */
int manager_main(struct config *config, const char *config_arg);

/* Fetch every secret the config names (and wipe them again), logging each failure once.
 * For `imapidled check`. Returns 0 or the first error. */
int manager_check_secrets(const struct config *c);
