#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "helpers.h"
#include "state.h"

/* Each test gets a fresh directory; the state dir inside it does not exist yet, so every
 * test also exercises mkdir -p. */
struct fixture {
	char root[64];
	char dir[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->root, sizeof(f->root), "state");
	snprintf(f->dir, sizeof(f->dir), "%s/a/state", f->root);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	tmpdir_remove(f->root);
	free(f);
	return 0;
}

static char *read_text(const char *path)
{
	static char buf[512];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
	return buf;
}

/* Number of entries in STATE_DIR/mailboxes; *n_tmp: how many of them are temporary files. */
static unsigned count_entries(const char *dir, unsigned *n_tmp)
{
	char path[256];
	DIR *d;
	struct dirent *de;
	unsigned n = 0;

	snprintf(path, sizeof(path), "%s/mailboxes", dir);
	d = opendir(path);
	assert_non_null(d);
	if (n_tmp)
		*n_tmp = 0;
	while ((de = readdir(d))) {
		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		n++;
		if (n_tmp && strstr(de->d_name, ".tmp."))
			(*n_tmp)++;
	}
	closedir(d);
	return n;
}

/* The hot path writes without an fsync and syncs later: readers see the new state at once. */
static void test_nosync_then_sync(void **state)
{
	struct fixture *f = *state;
	struct mailbox_state s = { .uidvalidity = 7, .uid = 1 }, l;

	assert_int_equal(state_sync(f->dir, "work", "INBOX"), -ENOENT);
	assert_int_equal(state_save_nosync(f->dir, "work", "INBOX", &s), 0);
	s.uid = 2;
	assert_int_equal(state_save_nosync(f->dir, "work", "INBOX", &s), 0);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), 0);
	assert_int_equal(l.uid, 2);
	assert_int_equal(state_sync(f->dir, "work", "INBOX"), 0);
	assert_int_equal(state_save_nosync(f->dir, "work", "INBOX",
					   &(struct mailbox_state){ .uid = 3 }),
			 -EINVAL);
}

static void test_round_trip(void **state)
{
	struct fixture *f = *state;
	struct mailbox_state s = { .uidvalidity = 1700000000, .uid = 4711 }, l;
	_cleanup_free_ char *path = NULL;
	struct stat st;

	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), 0);
	assert_true(l.known);
	assert_int_equal(l.uidvalidity, 1700000000);
	assert_int_equal(l.uid, 4711);
	assert_int_equal(l.highestmodseq, 0);
	assert_int_equal(state_path(f->dir, "work", "INBOX", &path), 0);
	assert_string_equal(read_text(path), "uidvalidity 1700000000\nuid 4711\n");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(f->dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);

	/* Overwrite with extremes, modseq included. */
	s = (struct mailbox_state){ .uidvalidity = UINT32_MAX, .uid = UINT32_MAX,
				    .highestmodseq = INT64_MAX };
	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	assert_string_equal(read_text(path), "uidvalidity 4294967295\nuid 4294967295\n"
					     "highestmodseq 9223372036854775807\n");
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), 0);
	assert_int_equal(l.uid, UINT32_MAX);
	assert_int_equal(l.highestmodseq, INT64_MAX);
	assert_int_equal(count_entries(f->dir, NULL), 1);

	/* uid 0: nothing reported yet in this epoch. */
	s = (struct mailbox_state){ .uidvalidity = 1 };
	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), 0);
	assert_true(l.known);
	assert_int_equal(l.uid, 0);
}

static void test_missing(void **state)
{
	struct fixture *f = *state;
	struct mailbox_state l = { .uid = 99, .known = true };
	struct mailbox_state s = { .uidvalidity = 5, .uid = 6 };

	/* Neither the directory nor the file exists. */
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), 0);
	assert_false(l.known);
	assert_int_equal(l.uid, 0);
	/* The directory exists, another mailbox's file does not. */
	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	l.known = true;
	assert_int_equal(state_load(f->dir, "work", "Sent", &l), 0);
	assert_false(l.known);
}

static void test_corrupt(void **state)
{
	static const struct {
		const char *content;
		size_t len; /* 0: strlen */
	} bad[] = {
		{ "", 0 },
		{ "garbage\n", 0 },
		{ "uidvalidity 1\n", 0 },
		{ "uidvalidity 1\nuid 2", 0 },           /* no final newline */
		{ "uidvalidity 1\r\nuid 2\r\n", 0 },     /* CRLF */
		{ "uidvalidity 0\nuid 2\n", 0 },         /* not a nz-number */
		{ "uidvalidity 4294967296\nuid 2\n", 0 }, /* 2^32 */
		{ "uidvalidity 1\nuid 4294967296\n", 0 },
		{ "uidvalidity 1\nuid 99999999999999999999999\n", 0 },
		{ "uidvalidity 1\nuid 18446744073709551616\n", 0 }, /* 2^64 */
		{ "uidvalidity 1\nuid -2\n", 0 },
		{ "uidvalidity 1\nuid +2\n", 0 },
		{ "uidvalidity 1\nuid 02\n", 0 },
		{ "uidvalidity 1\nuid 2 \n", 0 },
		{ "uidvalidity 1\nuid  2\n", 0 },
		{ "uidvalidity 1\nuid \n", 0 },
		{ "uid 2\nuidvalidity 1\n", 0 },          /* order */
		{ "uidvalidity 1\nuidvalidity 1\nuid 2\n", 0 },
		{ "uidvalidity 1\nuid 2\nuid 3\n", 0 },
		{ "uidvalidity 1\nuid 2\n\n", 0 },
		{ "uidvalidity 1\nuid 2\nhighestmodseq 0\n", 0 },
		{ "uidvalidity 1\nuid 2\nhighestmodseq 9223372036854775808\n", 0 },
		{ "uidvalidity 1\nuid 2\nhighestmodseq 3\nx\n", 0 },
		{ "uidvalidity 1\nuid 2\0\n", 19 },       /* NUL */
		{ "UIDVALIDITY 1\nUID 2\n", 0 },
	};
	struct fixture *f = *state;
	struct mailbox_state s = { .uidvalidity = 1, .uid = 1 }, l;
	_cleanup_free_ char *path = NULL;
	char big[STATE_FILE_MAX + 64];

	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	assert_int_equal(state_path(f->dir, "work", "INBOX", &path), 0);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		size_t n = bad[i].len ? bad[i].len : strlen(bad[i].content);

		file_write(path, bad[i].content, n, 0600);
		l.known = false;
		if (state_load(f->dir, "work", "INBOX", &l) != -EBADMSG)
			fail_msg("expected -EBADMSG for case %zu: \"%s\"", i, bad[i].content);
		assert_false(l.known); /* ret untouched on failure */
	}
	/* Larger than the bound, even if it would parse. */
	memset(big, '\n', sizeof(big));
	memcpy(big, "uidvalidity 1\nuid 2\n", 20);
	file_write(path, big, sizeof(big), 0600);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), -EBADMSG);
	/* A directory in the file's place is not state. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), -EBADMSG);
	/* A symlink is not followed. */
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), -ELOOP);
}

static void test_names(void **state)
{
	static const char *const mailboxes[] = {
		"INBOX", "Lists/urgent", "Lists%2Furgent", "with space", "..", ".", "../../etc",
		"Entwürfe", "日本語", "a@b", "Lists.urgent", "INBOX.state.tmp.abc123", "~",
	};
	struct fixture *f = *state;
	_cleanup_free_ char *n1 = NULL, *n2 = NULL, *n3 = NULL;

	assert_int_equal(state_file_name("work", "Lists/urgent", &n1), 0);
	assert_string_equal(n1, "work@Lists%2Furgent.state");
	assert_int_equal(state_file_name("my acct", "Entwürfe", &n2), 0);
	assert_string_equal(n2, "my%20acct@Entw%C3%BCrfe.state");
	/* '@' is encoded, so the account/mailbox split cannot be shifted. */
	assert_int_equal(state_file_name("a@b", "c", &n3), 0);
	assert_string_equal(n3, "a%40b@c.state");
	assert_int_equal(state_file_name("", "c", &n3), -EINVAL);
	assert_int_equal(state_file_name("a", "", &n3), -EINVAL);

	for (size_t i = 0; i < ELEMENTSOF(mailboxes); i++) {
		struct mailbox_state s = { .uidvalidity = 7, .uid = (uint32_t)i + 100 };
		_cleanup_free_ char *name = NULL;

		assert_int_equal(state_file_name("work", mailboxes[i], &name), 0);
		assert_null(strchr(name, '/'));
		assert_int_equal(state_save(f->dir, "work", mailboxes[i], &s), 0);
	}
	(void)state_save(f->dir, "a", "b@c", &(struct mailbox_state){ .uidvalidity = 1 });
	/* Distinct files, all inside the directory, each reading back its own value. */
	assert_int_equal(count_entries(f->dir, NULL), ELEMENTSOF(mailboxes) + 1);
	for (size_t i = 0; i < ELEMENTSOF(mailboxes); i++) {
		struct mailbox_state l;

		assert_int_equal(state_load(f->dir, "work", mailboxes[i], &l), 0);
		assert_int_equal(l.uid, i + 100);
	}
}

static void test_long_names(void **state)
{
	struct fixture *f = *state;
	char a[600], b[600];
	_cleanup_free_ char *na = NULL, *nb = NULL;
	struct mailbox_state l;

	/* Same long prefix, different tails: the hash keeps them apart. */
	memset(a, 'x', sizeof(a));
	a[sizeof(a) - 1] = '\0';
	memcpy(b, a, sizeof(b));
	a[sizeof(a) - 2] = 'a';
	b[sizeof(b) - 2] = 'b';
	assert_int_equal(state_file_name("work", a, &na), 0);
	assert_int_equal(state_file_name("work", b, &nb), 0);
	assert_true(strlen(na) <= STATE_NAME_MAX);
	assert_string_not_equal(na, nb);
	assert_non_null(strchr(na, '~'));
	assert_int_equal(strncmp(na, "work@xxxx", 9), 0);
	assert_int_equal(state_save(f->dir, "work", a, &(struct mailbox_state){ 1, 11, 0, 0 }), 0);
	assert_int_equal(state_save(f->dir, "work", b, &(struct mailbox_state){ 1, 22, 0, 0 }), 0);
	assert_int_equal(state_load(f->dir, "work", a, &l), 0);
	assert_int_equal(l.uid, 11);
	assert_int_equal(state_load(f->dir, "work", b, &l), 0);
	assert_int_equal(l.uid, 22);

	/* Multi-byte characters: the prefix is not cut inside a %XX triple. */
	for (size_t i = 0; i + 2 < sizeof(a); i += 2)
		memcpy(a + i, "\xc3\xbc", 2);
	a[sizeof(a) - 2] = '\0';
	free(na);
	assert_int_equal(state_file_name("work", a, &na), 0);
	assert_true(strlen(na) <= STATE_NAME_MAX);
	char *tilde = strchr(na, '~');
	assert_non_null(tilde);
	assert_int_equal((tilde - strchr(na, '@') - 1) % 3, 0);
}

static void test_leftover_tmp(void **state)
{
	struct fixture *f = *state;
	struct mailbox_state s = { .uidvalidity = 3, .uid = 30 }, l;
	_cleanup_free_ char *path = NULL, *tmp = NULL;

	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	assert_int_equal(state_path(f->dir, "work", "INBOX", &path), 0);
	/* What a crash between mkstemp and rename leaves behind. */
	assert_true(asprintf(&tmp, "%s.tmp.Ab12Cd", path) > 0);
	file_write(tmp, "uidvalid", 8, 0600);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), 0);
	assert_int_equal(l.uid, 30);
	s.uid = 31;
	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), 0);
	assert_int_equal(l.uid, 31);
}

/* A save that fails half-way (here: the write hits RLIMIT_FSIZE, which stops root too) leaves
 * the old file intact and no temporary file behind. */
static void test_failed_save_keeps_old(void **state)
{
	struct fixture *f = *state;
	struct mailbox_state s = { .uidvalidity = 9, .uid = 90 }, l;
	struct rlimit old, tiny = { .rlim_cur = 5 };
	unsigned n_tmp;

	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	tiny.rlim_max = old.rlim_max;
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &tiny), 0);
	s.uid = 91;
	int r = state_save(f->dir, "work", "INBOX", &s);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(r, -EFBIG);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), 0);
	assert_int_equal(l.uid, 90);
	assert_int_equal(count_entries(f->dir, &n_tmp), 1);
	assert_int_equal(n_tmp, 0);
}

static void test_read_only_dir(void **state)
{
	struct fixture *f = *state;
	struct mailbox_state s = { .uidvalidity = 9, .uid = 90 }, l;
	char mb[200];

	if (geteuid() == 0)
		skip(); /* root ignores the mode; test_failed_save_keeps_old covers this */
	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	snprintf(mb, sizeof(mb), "%s/mailboxes", f->dir);
	assert_int_equal(chmod(mb, 0500), 0);
	s.uid = 91;
	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), -EACCES);
	assert_int_equal(chmod(mb, 0700), 0);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), 0);
	assert_int_equal(l.uid, 90);
}

/* A relative state dir (cwd-relative, all components new) works the same way. */
static void test_relative_dir(void **state)
{
	struct fixture *f = *state;
	struct mailbox_state s = { .uidvalidity = 4, .uid = 40 }, l;
	char cwd[4096];

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(f->root), 0);
	int r1 = state_save("rel", "work", "INBOX", &s);
	int r2 = state_load("rel", "work", "INBOX", &l);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(r1, 0);
	assert_int_equal(r2, 0);
	assert_int_equal(l.uid, 40);
}

static void test_invalid(void **state)
{
	struct fixture *f = *state;
	struct mailbox_state s = { .uidvalidity = 0, .uid = 1 }, l;

	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), -EINVAL);
	s.uidvalidity = 1;
	s.highestmodseq = (uint64_t)INT64_MAX + 1;
	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), -EINVAL);
	s.highestmodseq = 0;
	assert_int_equal(state_save("", "work", "INBOX", &s), -EINVAL);
	assert_int_equal(state_save(f->dir, "", "INBOX", &s), -EINVAL);
	assert_int_equal(state_load(NULL, "work", "INBOX", &l), -EINVAL);
	/* A file where the mailboxes directory should be. */
	char mb[200];
	snprintf(mb, sizeof(mb), "%s/mailboxes", f->dir);
	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), 0);
	assert_int_equal(rm_rf(mb), 0);
	file_write(mb, "", 0, 0600);
	assert_int_equal(state_save(f->dir, "work", "INBOX", &s), -ENOTDIR);
	assert_int_equal(state_load(f->dir, "work", "INBOX", &l), -ENOTDIR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nosync_then_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leftover_tmp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_save_keeps_old, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relative_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
	};
	return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
