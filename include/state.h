/* Per-mailbox progress persisted across restarts: which UIDVALIDITY epoch we saw and the
 * highest UID already reported, so that a restart neither repeats nor loses mail.
 *
 * One file per (account, mailbox) in STATE_DIR/mailboxes/, written atomically (tmp file in
 * the same directory, fsync, rename, fsync of the directory), so after a crash the file holds
 * either the old or the new state, never a mix.
 *
 * File name: pct(account) "@" pct(mailbox) ".state", where pct() percent-encodes (upper-case
 * hex) every byte outside [A-Za-z0-9._-], so '/', spaces, '%', '@' and UTF-8 all become %XX:
 * the name is reversible, and because '@' never survives pct() the split is unambiguous. A
 * name can never be "." or "..", contain '/', or end in a temporary file's ".tmp.XXXXXX"
 * suffix. If the encoded name would exceed STATE_NAME_MAX bytes (file systems allow 255) it
 * becomes a readable prefix of it, '~', then 32 hex digits of sha256(account "\0" mailbox);
 * '~' is never produced by pct(), so the two forms cannot collide.
 *
 * Content, parsed strictly (lines in this order, decimal without leading zeros, final newline,
 * nothing else, at most STATE_FILE_MAX bytes):
 *     uidvalidity 1700000000
 *     uid 4711
 *     highestmodseq 90210          (only when non-zero)
 */
#pragma once

#include "util.h"

#define STATE_NAME_MAX 240
#define STATE_FILE_MAX 256

struct mailbox_state {
	uint32_t uidvalidity;   /* non-zero when known (RFC 3501: nz-number) */
	uint32_t uid;           /* highest UID reported; 0 = none yet */
	uint64_t highestmodseq; /* RFC 7162 CONDSTORE; 0 = not tracked */
	bool known;             /* false: no state saved yet, the other fields are zero */
};

/* Load the state of a mailbox. A missing file (or directory) is not an error: *ret gets
 * known = false. A file that does not parse gives -EBADMSG; the caller logs it together with
 * state_path(), and decides (typically: start over as if unknown, and say so). */
int state_load(const char *state_dir, const char *account, const char *mailbox,
	       struct mailbox_state *ret);

/* Save atomically, creating STATE_DIR and STATE_DIR/mailboxes with mode 0700 as needed. s must
 * have a non-zero uidvalidity (-EINVAL otherwise); s->known is ignored. On failure the old file,
 * if any, is left untouched and no temporary file remains. */
int state_save(const char *state_dir, const char *account, const char *mailbox,
	       const struct mailbox_state *s);

/* The same, without waiting for the disk: the new content is in place for any reader at
 * once (it survives the process being killed), and state_sync() makes it survive a power
 * cut too. For the hot path, where an fsync per message would stall the event loop. */
int state_save_nosync(const char *state_dir, const char *account, const char *mailbox,
		      const struct mailbox_state *s);
int state_sync(const char *state_dir, const char *account, const char *mailbox);

/* The file name (no directory) for account + mailbox, as described above. Both must be
 * non-empty (-EINVAL). */
int state_file_name(const char *account, const char *mailbox, char **ret_name);

/* STATE_DIR/mailboxes/<state_file_name()>, for log messages and tests. */
int state_path(const char *state_dir, const char *account, const char *mailbox, char **ret_path);
