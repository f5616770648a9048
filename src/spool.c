#include "spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "log.h"
#include "fsutil.h"

#define SEQ_DIGITS 16
#define SEQ_MAX 9999999999999999ULL
/* SEQ "-" SPOOLED "-" ID: room for the longest. */
#define NAME_MAX_LEN (SEQ_DIGITS + 1 + 20 + 1 + MAIL_EVENT_ID_LEN)

struct spool {
	char *dir;
	char *log_prefix;
	int new_fd, tmp_fd, bad_fd; /* directory fds */
	uint64_t max_bytes, bytes;
	uint64_t next_seq;
	size_t count;
	struct spool_entry *head, *tail;
};

/* ---- Names -------------------------------------------------------------------------------- */

static void entry_name(const struct spool_entry *en, char buf[static NAME_MAX_LEN + 1])
{
	snprintf(buf, NAME_MAX_LEN + 1, "%0*" PRIu64 "-%" PRId64 "-%s", SEQ_DIGITS, en->seq,
		 (int64_t)en->spooled, en->id);
}

/* Strict inverse of entry_name(): exactly 16 digits, a canonical decimal time, an id of the
 * event id's shape. */
static int parse_name(const char *name, struct spool_entry *en)
{
	const char *p = name, *dash;
	char num[24];
	uint64_t seq, t;
	size_t n;

	for (n = 0; n < SEQ_DIGITS; n++)
		if (p[n] < '0' || p[n] > '9')
			return -EBADMSG;
	if (p[SEQ_DIGITS] != '-')
		return -EBADMSG;
	memcpy(num, p, SEQ_DIGITS);
	num[SEQ_DIGITS] = '\0';
	if (safe_atou64(num, &seq) < 0)
		return -EBADMSG;
	p += SEQ_DIGITS + 1;
	dash = strchr(p, '-');
	if (!dash || dash == p || (size_t)(dash - p) >= sizeof(num) || (*p == '0' && dash - p > 1))
		return -EBADMSG;
	memcpy(num, p, (size_t)(dash - p));
	num[dash - p] = '\0';
	if (safe_atou64(num, &t) < 0 || t > INT64_MAX)
		return -EBADMSG;
	p = dash + 1;
	if (strlen(p) != MAIL_EVENT_ID_LEN)
		return -EBADMSG;
	en->seq = seq;
	en->spooled = (time_t)t;
	memcpy(en->id, p, MAIL_EVENT_ID_LEN + 1);
	return 0;
}

uint64_t spool_mailbox_key(const char *account, const char *mailbox)
{
	/* FNV-1a over account "\0" mailbox: cheap, and a collision only costs parallelism. */
	uint64_t h = 14695981039346656037ULL;

	for (const char *s = account;; s++) {
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
		if (!*s)
			break;
	}
	for (const char *s = mailbox; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* ---- Directories -------------------------------------------------------------------------- */

static int open_subdir(struct spool *s, const char *sub, int *ret)
{
	_cleanup_free_ char *path = NULL;
	int r, fd;

	if (asprintf(&path, "%s/%s", s->dir, sub) < 0)
		return -ENOMEM;
	r = fs_mkdir_p(path, 0700);
	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*ret = fd;
	return 0;
}

/* ---- Entries ------------------------------------------------------------------------------ */

static void entry_append(struct spool *s, struct spool_entry *en)
{
	en->prev = s->tail;
	en->next = NULL;
	if (s->tail)
		s->tail->next = en;
	else
		s->head = en;
	s->tail = en;
	s->count++;
	s->bytes += en->size;
}

static void entry_unlink(struct spool *s, struct spool_entry *en)
{
	if (en->prev)
		en->prev->next = en->next;
	else
		s->head = en->next;
	if (en->next)
		en->next->prev = en->prev;
	else
		s->tail = en->prev;
	s->count--;
	s->bytes -= en->size;
}

/* Reads at most max bytes of the file at dirfd/name; -EFBIG beyond. */
static int read_file_at(int dirfd, const char *name, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t n;
	int r;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EBADMSG;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	r = fs_read_all(fd, buf, (size_t)st.st_size, &n);
	if (r < 0)
		return r;
	buf[n] = '\0';
	*ret = TAKE_PTR(buf);
	*ret_len = n;
	return 0;
}

static void move_to_bad(struct spool *s, const char *name, const char *why)
{
	if (renameat(s->new_fd, name, s->bad_fd, name) < 0) {
		log_error_errno(errno, "%s: spool entry %s/new/%s %s, and it cannot be moved to "
				"bad/: %m; deleting it", s->log_prefix, s->dir, name, why);
		(void)unlinkat(s->new_fd, name, 0);
		return;
	}
	log_error("%s: spool entry %s/new/%s %s; moved to bad/, it will not be delivered",
		  s->log_prefix, s->dir, name, why);
}

/* One file of new/ into memory, or to bad/. */
static int load_entry(struct spool *s, const char *name, struct spool_entry **ret)
{
	_cleanup_free_ struct spool_entry *en = calloc(1, sizeof(*en));
	_cleanup_mail_event_ struct mail_event *e = NULL;
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r;

	if (!en)
		return -ENOMEM;
	if (parse_name(name, en) < 0) {
		move_to_bad(s, name, "has a name not written by imapidled");
		return 0;
	}
	r = read_file_at(s->new_fd, name, MAIL_EVENT_JSON_MAX, &buf, &len);
	if (r == -ENOMEM)
		return r;
	if (r >= 0 && strlen(buf) != len)
		r = -EBADMSG;
	if (r >= 0)
		r = mail_event_from_json(buf, &e);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || !streq(e->id, en->id)) {
		move_to_bad(s, name, r < 0 ? "cannot be read as an event" : "holds another event");
		return 0;
	}
	en->size = (uint32_t)len;
	en->mailbox_key = spool_mailbox_key(e->account, e->mailbox);
	*ret = TAKE_PTR(en);
	return 0;
}

static int cmp_entries(const void *a, const void *b)
{
	const struct spool_entry *x = *(struct spool_entry *const *)a;
	const struct spool_entry *y = *(struct spool_entry *const *)b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int list_dir(int dirfd, char ***ret)
{
	_cleanup_strv_free_ char **names = NULL;
	DIR *d;
	int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3), r = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		safe_close(fd);
		return -errno;
	}
	rewinddir(d);
	for (struct dirent *de; r >= 0 && (de = readdir(d));)
		if (de->d_name[0] != '.')
			r = strv_extend(&names, de->d_name);
	closedir(d);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(names);
	return 0;
}

/* What a crash left half-written was never reported added: delete it. */
static int clean_tmp(struct spool *s)
{
	_cleanup_strv_free_ char **names = NULL;
	int r = list_dir(s->tmp_fd, &names);

	if (r < 0)
		return r;
	for (char **n = names; n && *n; n++) {
		log_info("%s: removing %s/tmp/%s, left over from an interrupted write",
			 s->log_prefix, s->dir, *n);
		(void)unlinkat(s->tmp_fd, *n, 0);
	}
	return 0;
}

static int load_all(struct spool *s)
{
	_cleanup_strv_free_ char **names = NULL;
	_cleanup_free_ struct spool_entry **v = NULL;
	size_t n = 0;
	int r = list_dir(s->new_fd, &names);

	if (r < 0)
		return r;
	v = calloc(strv_length(names) + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (char **p = names; p && *p; p++) {
		r = load_entry(s, *p, &v[n]);
		if (r < 0)
			break;
		if (v[n])
			n++;
	}
	qsort(v, n, sizeof(*v), cmp_entries);
	for (size_t i = 0; i < n; i++) {
		entry_append(s, v[i]);
		s->next_seq = MAX(s->next_seq, v[i]->seq + 1);
	}
	return r;
}

/* ---- Public ------------------------------------------------------------------------------- */

int spool_open(const char *dir, uint64_t max_bytes, const char *log_prefix, struct spool **ret)
{
	_cleanup_spool_ struct spool *s = NULL;
	int r;

	if (!dir || !*dir || !ret)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->new_fd = s->tmp_fd = s->bad_fd = -1;
	s->max_bytes = max_bytes;
	s->next_seq = 1;
	s->dir = strdup(dir);
	s->log_prefix = strdup(log_prefix ? log_prefix : "spool");
	if (!s->dir || !s->log_prefix)
		return -ENOMEM;
	r = open_subdir(s, "tmp", &s->tmp_fd);
	if (r >= 0)
		r = open_subdir(s, "new", &s->new_fd);
	if (r >= 0)
		r = open_subdir(s, "bad", &s->bad_fd);
	if (r >= 0)
		r = clean_tmp(s);
	if (r >= 0)
		r = load_all(s);
	if (r < 0)
		return r;
	if (s->count > 0)
		log_info("%s: %zu undelivered events in the spool (%" PRIu64 " bytes)",
			 s->log_prefix, s->count, s->bytes);
	*ret = TAKE_PTR(s);
	return 0;
}

struct spool *spool_free(struct spool *s)
{
	if (!s)
		return NULL;
	while (s->head) {
		struct spool_entry *en = s->head;

		entry_unlink(s, en);
		free(en);
	}
	safe_close(s->new_fd);
	safe_close(s->tmp_fd);
	safe_close(s->bad_fd);
	free(s->dir);
	free(s->log_prefix);
	return mfree(s);
}

/* tmp/NAME, fsync, rename to new/NAME. Not durable until new/ is fsynced (batch_commit). */
static int write_entry(struct spool *s, const char *name, const char *json, size_t len)
{
	_cleanup_close_ int fd = -1;
	int r;

	fd = openat(s->tmp_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	r = fs_write_all(fd, json, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(TAKE_FD(fd)) < 0 && r == 0)
		r = -errno;
	if (r == 0 && renameat(s->tmp_fd, name, s->new_fd, name) < 0)
		r = -errno;
	if (r < 0)
		(void)unlinkat(s->tmp_fd, name, 0);
	return r;
}

/* Entries written into new/ by one spool_add_many() call, not yet fsynced into it: linked
 * through next, not yet in the spool's list. */
struct batch {
	struct spool_entry *head, **tail;
	uint64_t bytes;
};

/* e as the next entry of b (its file in new/); the cap counts b's entries too. */
static int batch_write(struct spool *s, struct batch *b, const struct mail_event *e, time_t now)
{
	_cleanup_free_ struct spool_entry *en = NULL;
	_cleanup_free_ char *json = NULL;
	char name[NAME_MAX_LEN + 1];
	size_t len;
	int r;

	if (s->next_seq > SEQ_MAX)
		return -EOVERFLOW;
	r = mail_event_to_json(e, now, &json);
	if (r < 0)
		return r;
	len = strlen(json);
	if (len > s->max_bytes || len > UINT32_MAX)
		return -EFBIG;
	if (s->bytes + b->bytes + len > s->max_bytes)
		return -ENOSPC;
	en = calloc(1, sizeof(*en));
	if (!en)
		return -ENOMEM;
	en->seq = s->next_seq;
	en->spooled = now;
	en->size = (uint32_t)len;
	en->mailbox_key = spool_mailbox_key(e->account, e->mailbox);
	memcpy(en->id, e->id, sizeof(en->id));
	entry_name(en, name);
	r = write_entry(s, name, json, len);
	if (r < 0)
		return r;
	/* Even if the batch fails later, the name stays used: its file may outlive an unlink
	 * that failed, and must never be replaced by another entry's. */
	s->next_seq++;
	b->bytes += len;
	*b->tail = TAKE_PTR(en);
	b->tail = &(*b->tail)->next;
	return 0;
}

/* One fsync of new/ makes every entry of b durable; they join the list in order. When it
 * fails, b's files are deleted again (none was reported added) and the error returned. */
static int batch_commit(struct spool *s, struct batch *b)
{
	int r = 0;

	if (b->head && fsync(s->new_fd) < 0)
		r = -errno;
	while (b->head) {
		struct spool_entry *en = b->head;
		char name[NAME_MAX_LEN + 1];

		b->head = en->next;
		if (r == 0) {
			entry_append(s, en);
			continue;
		}
		entry_name(en, name);
		(void)unlinkat(s->new_fd, name, 0);
		free(en);
	}
	return r;
}

int spool_add_many(struct spool *s, const struct mail_event *const *events, size_t n,
		   time_t now, size_t *ret_added)
{
	struct batch b = { .tail = &b.head };
	size_t added = 0;
	int r = 0, k;

	if (!s || (n > 0 && !events) || now < 0 || !ret_added)
		return -EINVAL;
	while (added < n && (r = batch_write(s, &b, events[added], now)) >= 0)
		added++;
	k = batch_commit(s, &b);
	if (k < 0) {
		added = 0;
		r = k;
	}
	*ret_added = added;
	return r;
}

int spool_add(struct spool *s, const struct mail_event *e, time_t now,
	      struct spool_entry **ret)
{
	size_t added;
	int r;

	if (!e)
		return -EINVAL;
	r = spool_add_many(s, &e, 1, now, &added);
	if (r < 0)
		return r;
	if (ret)
		*ret = s->tail;
	return 0;
}

int spool_read(struct spool *s, const struct spool_entry *en, char **ret, size_t *ret_len)
{
	char name[NAME_MAX_LEN + 1];
	char *buf;
	size_t len;
	int r;

	entry_name(en, name);
	r = read_file_at(s->new_fd, name, MAIL_EVENT_JSON_MAX, &buf, &len);
	if (r >= 0 && len != en->size) {
		free(buf);
		r = -EBADMSG;
	}
	if (r == -EBADMSG || r == -EFBIG) {
		move_to_bad(s, name, "changed since it was written");
		return -EBADMSG;
	}
	if (r < 0)
		return r;
	*ret = buf;
	*ret_len = len;
	return 0;
}

void spool_remove(struct spool *s, struct spool_entry *en)
{
	char name[NAME_MAX_LEN + 1];

	entry_name(en, name);
	if (unlinkat(s->new_fd, name, 0) < 0 && errno != ENOENT)
		log_warning_errno(errno, "%s: cannot delete %s/new/%s: %m; it may be sent again "
				  "after a restart", s->log_prefix, s->dir, name);
	entry_unlink(s, en);
	free(en);
}

struct spool_entry *spool_first(const struct spool *s)
{
	return s ? s->head : NULL;
}

struct spool_entry *spool_next(const struct spool_entry *en)
{
	return en ? en->next : NULL;
}

size_t spool_count(const struct spool *s)
{
	return s ? s->count : 0;
}

uint64_t spool_bytes(const struct spool *s)
{
	return s ? s->bytes : 0;
}

uint64_t spool_max_bytes(const struct spool *s)
{
	return s ? s->max_bytes : 0;
}

const char *spool_dir(const struct spool *s)
{
	return s ? s->dir : NULL;
}
