/* Secrets (passwords, OAuth tokens, webhook keys) fetched from where the config says.
 *
 * A secret is read from its value, a file (first line), a command run without a shell
 * (first line of its stdout; bounded time and size), or a systemd credential
 * ($CREDENTIALS_DIRECTORY/NAME). Every fetched secret is registered with the logger so it is
 * redacted from every log line, and wiped from memory when freed. */
#pragma once

#include "config.h"

/* Fetch the secret. On failure returns a negative errno and, if ret_error is not NULL, an
 * allocated message naming the config place, e.g.
 * "config:7: [account work] password_command: \"pass\" exited with status 1".
 * config_path is used to build that message. The command gets at most timeout to finish
 * (USEC_INFINITY: no limit) and is then killed; this call blocks until then, so use it at
 * start-up or reload, not per event. Errors: -ETIME timeout, -EIO the command failed,
 * -ENODATA empty, -E2BIG first line over 64 KiB, -ENXIO $CREDENTIALS_DIRECTORY unset, and
 * the errno of open()/posix_spawnp() (-ENOENT, -EACCES, ...). No message contains the secret.
 * The result is registered for log redaction (counted: the same secret fetched twice stays
 * redacted until both copies are freed with secret_free()). */
int secret_fetch(const struct secret_source *src, const char *config_path, const char *section,
		 usec_t timeout, char **ret_secret, char **ret_error);

/* Warn (through the logger) when a file that holds a secret is readable by group or others.
 * Returns true when it warned. */
bool secret_check_file_mode(const char *path, const char *where);

/* Register a secret obtained elsewhere (an OAuth token from spawn.h) for log redaction, with
 * the same counting as secret_fetch(): each call is undone by one secret_free() of a copy. */
int secret_register(const char *secret);

/* Unregister from the logger, wipe and free. Returns NULL. */
char *secret_free(char *secret);
