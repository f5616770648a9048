#include "state.h"
#include "hash.h"
#include "fsutil.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>


#define STATE_SUBDIR "mailboxes"
#define STATE_SUFFIX ".state"
#define HASH_HEX_LEN 32

static bool pct_safe(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

static size_t pct_len(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += pct_safe((unsigned char)*s) ? 1 : 3;
	return n;
}

/* Appends the encoding of s at p (room checked by the caller); returns the new end. */
static char *pct_append(char *p, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (pct_safe(c)) {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	return p;
}


/* Too long for a file name: keep a readable prefix (not cut inside a %XX triple) and make it
 * unique with a hash. */
static int shorten_name(char *full, const char *account, const char *mailbox)
{
	size_t keep = STATE_NAME_MAX - 1 - HASH_HEX_LEN - strlen(STATE_SUFFIX);
	char hex[HASH_HEX_LEN + 1];
	int r;

	r = hash_parts_hex((const char *const[]){ account, mailbox }, 2, HASH_HEX_LEN, hex);
	if (r < 0)
		return r;
	if (full[keep - 1] == '%')
		keep -= 1;
	else if (full[keep - 2] == '%')
		keep -= 2;
	snprintf(full + keep, STATE_NAME_MAX + 1 - keep, "~%s%s", hex, STATE_SUFFIX);
	return 0;
}

int state_file_name(const char *account, const char *mailbox, char **ret_name)
{
	_cleanup_free_ char *name = NULL;
	size_t n;
	char *p;
	int r;

	if (!account || !*account || !mailbox || !*mailbox)
		return -EINVAL;
	n = pct_len(account) + 1 + pct_len(mailbox) + strlen(STATE_SUFFIX);
	name = malloc(MAX(n, (size_t)STATE_NAME_MAX) + 1);
	if (!name)
		return -ENOMEM;
	p = pct_append(name, account);
	*p++ = '@';
	p = pct_append(p, mailbox);
	strcpy(p, STATE_SUFFIX);
	if (n > STATE_NAME_MAX) {
		r = shorten_name(name, account, mailbox);
		if (r < 0)
			return r;
	}
	*ret_name = TAKE_PTR(name);
	return 0;
}

static int mailboxes_dir(const char *state_dir, char **ret)
{
	char *p;

	if (!state_dir || !*state_dir)
		return -EINVAL;
	if (asprintf(&p, "%s/" STATE_SUBDIR, state_dir) < 0)
		return -ENOMEM;
	*ret = p;
	return 0;
}

int state_path(const char *state_dir, const char *account, const char *mailbox, char **ret_path)
{
	_cleanup_free_ char *dir = NULL, *name = NULL;
	char *p;
	int r;

	r = mailboxes_dir(state_dir, &dir);
	if (r < 0)
		return r;
	r = state_file_name(account, mailbox, &name);
	if (r < 0)
		return r;
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return -ENOMEM;
	*ret_path = p;
	return 0;
}

/* "key N\n" at *p with N in [min, max], canonical decimal (no sign, no leading zero). */
static int parse_field(const char **p, const char *key, uint64_t min, uint64_t max,
		       uint64_t *ret)
{
	const char *s = *p;
	size_t klen = strlen(key);
	uint64_t v = 0;
	size_t digits = 0;

	if (strncmp(s, key, klen) != 0 || s[klen] != ' ')
		return -EBADMSG;
	s += klen + 1;
	for (; *s >= '0' && *s <= '9'; s++, digits++) {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -EBADMSG;
		v = v * 10 + d;
	}
	if (digits == 0 || *s != '\n' || (digits > 1 && s[-(ptrdiff_t)digits] == '0'))
		return -EBADMSG;
	if (v < min || v > max)
		return -EBADMSG;
	*p = s + 1;
	*ret = v;
	return 0;
}

static int state_parse(const char *buf, struct mailbox_state *ret)
{
	uint64_t uidvalidity, uid, modseq = 0;
	const char *p = buf;
	int r;

	r = parse_field(&p, "uidvalidity", 1, UINT32_MAX, &uidvalidity);
	if (r < 0)
		return r;
	r = parse_field(&p, "uid", 0, UINT32_MAX, &uid);
	if (r < 0)
		return r;
	/* RFC 7162: mod-sequence-value is 1 .. 2^63-1. */
	if (*p) {
		r = parse_field(&p, "highestmodseq", 1, INT64_MAX, &modseq);
		if (r < 0)
			return r;
	}
	if (*p)
		return -EBADMSG;
	*ret = (struct mailbox_state){
		.uidvalidity = (uint32_t)uidvalidity,
		.uid = (uint32_t)uid,
		.highestmodseq = modseq,
		.known = true,
	};
	return 0;
}

/* Reads the whole file into buf (NUL-terminated); a file longer than size - 2 is corrupt. */
static int read_bounded(int fd, char *buf, size_t size)
{
	size_t n;
	int r = fs_read_all(fd, buf, size - 1, &n);

	if (r < 0)
		return r;
	if (n > size - 2 || memchr(buf, '\0', n))
		return -EBADMSG;
	buf[n] = '\0';
	return 0;
}

int state_load(const char *state_dir, const char *account, const char *mailbox,
	       struct mailbox_state *ret)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int fd = -1;
	char buf[STATE_FILE_MAX + 2];
	struct mailbox_state s;
	struct stat st;
	int r;

	r = state_path(state_dir, account, mailbox, &path);
	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0 && errno == ENOENT) {
		*ret = (struct mailbox_state){ .known = false };
		return 0;
	}
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EBADMSG;
	r = read_bounded(fd, buf, sizeof(buf));
	if (r < 0)
		return r;
	r = state_parse(buf, &s);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

static int format_state(const struct mailbox_state *s, char *buf, size_t size)
{
	int n;

	if (s->highestmodseq)
		n = snprintf(buf, size, "uidvalidity %" PRIu32 "\nuid %" PRIu32
				       "\nhighestmodseq %" PRIu64 "\n",
			     s->uidvalidity, s->uid, s->highestmodseq);
	else
		n = snprintf(buf, size, "uidvalidity %" PRIu32 "\nuid %" PRIu32 "\n",
			     s->uidvalidity, s->uid);
	if (n < 0 || (size_t)n >= size)
		return -EINVAL;
	return n;
}

/* Writes content to a fresh temporary file beside path, then renames it over path. */
static int write_atomic(const char *dir, const char *path, const char *content, size_t n,
			bool sync)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1, dfd = -1;
	int r;

	if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
		return -ENOMEM;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = fs_write_all(fd, content, n);
	if (r == 0 && sync && fsync(fd) < 0)
		r = -errno;
	/* close() can report a delayed write error (NFS); it must not be lost. */
	if (close(TAKE_FD(fd)) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		(void)unlink(tmp);
		return r;
	}
	/* Without this the rename itself may not survive a power cut. */
	if (sync && fsync(dfd) < 0)
		return -errno;
	return 0;
}

static int state_save_full(const char *state_dir, const char *account, const char *mailbox,
			   const struct mailbox_state *s, bool sync)
{
	_cleanup_free_ char *dir = NULL, *path = NULL;
	char buf[STATE_FILE_MAX];
	int n, r;

	if (!s || s->uidvalidity == 0 || s->highestmodseq > INT64_MAX)
		return -EINVAL;
	r = state_path(state_dir, account, mailbox, &path);
	if (r < 0)
		return r;
	r = mailboxes_dir(state_dir, &dir);
	if (r < 0)
		return r;
	n = format_state(s, buf, sizeof(buf));
	if (n < 0)
		return n;
	r = fs_mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	return write_atomic(dir, path, buf, (size_t)n, sync);
}

int state_save(const char *state_dir, const char *account, const char *mailbox,
	       const struct mailbox_state *s)
{
	return state_save_full(state_dir, account, mailbox, s, true);
}

int state_save_nosync(const char *state_dir, const char *account, const char *mailbox,
		      const struct mailbox_state *s)
{
	return state_save_full(state_dir, account, mailbox, s, false);
}

int state_sync(const char *state_dir, const char *account, const char *mailbox)
{
	_cleanup_free_ char *dir = NULL, *path = NULL;
	_cleanup_close_ int fd = -1, dfd = -1;
	int r;

	r = state_path(state_dir, account, mailbox, &path);
	if (r >= 0)
		r = mailboxes_dir(state_dir, &dir);
	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0)
		return -errno;
	return 0;
}
