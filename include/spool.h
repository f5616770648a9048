/* spool: a durable queue of events on disk, one directory per webhook sink.
 *
 * Maildir-like, in DIR (STATE_DIR/spool/NAME): an event is written to tmp/, fsynced, renamed
 * into new/, and new/ is fsynced; only then does spool_add() return. spool_add_many() does the
 * same for several events with one fsync of new/ for all of them. So after a crash (SIGKILL,
 * power cut) an entry is either complete in new/ or absent; a leftover in tmp/ is an entry that
 * was never reported added, and spool_open() deletes it. Removal is a plain unlink without a
 * directory fsync: if a crash undoes it, the event is delivered once more, which the stable
 * event id makes harmless (at-least-once).
 *
 * Entry file name: SEQ "-" SPOOLED "-" ID, where SEQ is the 16-digit zero-padded decimal
 * enqueue number (so that names sort in enqueue order and a restart resumes in order),
 * SPOOLED the Unix time the entry was written (retry ages count from it), ID the event id.
 * Content: exactly the mail_event_to_json() document with SPOOLED as its timestamp, which is
 * also the webhook body, so sending an entry is reading its file.
 *
 * spool_open() loads every entry in new/, checking each with mail_event_from_json(); an entry
 * that does not parse, or whose name is not of the form above, is moved to bad/ with a log
 * line and never read again. In memory an entry costs only its small struct spool_entry (no
 * body): 10,000 waiting events take about a megabyte.
 *
 * Size: the sum of the entries' file sizes is kept; spool_add() fails with -ENOSPC rather than
 * go beyond max_bytes. Every call here does blocking file I/O on local disk (open, fsync,
 * rename, unlink), short and bounded, like the state files. */
#pragma once

#include <stdbool.h>
#include <time.h>

#include "event.h"
#include "util.h"

struct spool;

struct spool_entry {
	uint64_t seq;
	time_t spooled; /* Unix time written */
	uint64_t mailbox_key; /* a hash of (account, mailbox): entries with equal keys belong
			       * to the same mailbox (a collision only serialises two mailboxes) */
	uint32_t size;        /* file size in bytes */
	char id[MAIL_EVENT_ID_LEN + 1];
	/* Free for the spool's owner (delivery state); the spool never reads them. */
	void *data;
	uint32_t attempts;
	usec_t not_before;
	/* Enqueue order; private to spool.c. */
	struct spool_entry *prev, *next;
};

/* Open (creating DIR, tmp/, new/ and bad/ with mode 0700 as needed) and load the spool.
 * -ENOTDIR, -EACCES and the like from the file system, -ENOMEM. log_prefix names the owner in
 * log lines ("webhook crm"). */
int spool_open(const char *dir, uint64_t max_bytes, const char *log_prefix, struct spool **ret);

/* NULL-safe; returns NULL. Frees memory only: the entries stay on disk. */
struct spool *spool_free(struct spool *s);
static inline void spool_freep(struct spool **s)
{
	spool_free(*s);
}
#define _cleanup_spool_ _cleanup_(spool_freep)

/* Write e durably (see above) as the newest entry. -ENOSPC when it would take the spool
 * beyond max_bytes, -EFBIG for an entry that could never fit, the errno of the file system
 * otherwise (nothing is left behind). *ret (may be NULL) is borrowed from the spool. */
int spool_add(struct spool *s, const struct mail_event *e, time_t now,
	      struct spool_entry **ret);

/* Write events[0..n) durably as the newest entries, in order: each file is written and
 * fsynced, then one fsync of new/ covers them all. *ret_added counts the events added, a
 * prefix of them, also on failure. 0 when all n were added; otherwise the error spool_add()
 * would give for events[*ret_added], which was not added, nor was anything after it. Should
 * the fsync of new/ fail, none was added (*ret_added is 0) and that error is returned. -EINVAL
 * (nothing set) for a NULL s or ret_added. */
int spool_add_many(struct spool *s, const struct mail_event *const *events, size_t n,
		   time_t now, size_t *ret_added);

/* The entry's file content (the webhook body), NUL-terminated; free() it. -ENOENT when the
 * file went away; -EBADMSG (after moving it to bad/) when it is no longer the size it had. */
int spool_read(struct spool *s, const struct spool_entry *en, char **ret, size_t *ret_len);

/* Delete the entry's file and forget it; en is freed. */
void spool_remove(struct spool *s, struct spool_entry *en);

/* Entries oldest first: spool_first(), then spool_next() until NULL. */
struct spool_entry *spool_first(const struct spool *s);
struct spool_entry *spool_next(const struct spool_entry *en);

size_t spool_count(const struct spool *s);
uint64_t spool_bytes(const struct spool *s);
uint64_t spool_max_bytes(const struct spool *s);
const char *spool_dir(const struct spool *s);

/* The mailbox_key of an event (what spool_add() records). */
uint64_t spool_mailbox_key(const char *account, const char *mailbox);
