/* The one digest the daemon computes: SHA-256 over NUL-separated parts, as hex. Used for
 * event ids (receivers de-duplicate on them) and for state file names that are too long. */
#pragma once

#include <stddef.h>

#define HASH_HEX_MAX 64

/* The first n_hex (even, at most HASH_HEX_MAX) hex digits of sha256(parts[0] "\0" parts[1]
 * "\0" ... parts[n-1]) into ret (n_hex + 1 bytes). No part contains a NUL, so the split is
 * unambiguous. -EINVAL for a bad n_hex, -ENOMEM, -EIO when the digest fails. */
int hash_parts_hex(const char *const *parts, size_t n_parts, size_t n_hex, char *ret);
