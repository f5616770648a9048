/* Files that must survive a power cut: the state and the webhook spool both write this way. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* fsync() the directory that holds path, so that a new entry in it (a rename, a created
 * directory) is durable too. */
int fs_fsync_parent(const char *path);

/* mkdir -p with mode for every component created; each new directory is made durable in its
 * parent, or a power cut could take it, and the first file in it, away after success. */
int fs_mkdir_p(const char *path, mode_t mode);

/* write() all of buf, across short writes and EINTR. */
int fs_write_all(int fd, const void *buf, size_t n);

/* read() until end of file or max bytes, across short reads and EINTR; *ret_len gets how
 * many were read. A file longer than max is not an error here: the caller, who knows what
 * too long means, checks *ret_len. */
int fs_read_all(int fd, void *buf, size_t max, size_t *ret_len);
