#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "fsync-probe.h"
#include "helpers.h"
#include "log.h"
#include "spool.h"

#define UIDVALIDITY TEST_UIDVALIDITY
#define NOW 1700000123

struct fixture {
	char root[64];
	char dir[128];
	int errors;
};

static void capture_log(int level, const char *line, void *userdata)
{
	struct fixture *f = userdata;

	if (level <= LOG_ERR)
		f->errors++;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(f->root, sizeof(f->root), "spool");
	snprintf(f->dir, sizeof(f->dir), "%s/state/spool/hook", f->root);
	log_set_sink(capture_log, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	log_set_sink(NULL, NULL);
	tmpdir_remove(f->root);
	free(f);
	return 0;
}

static size_t count_files(const struct fixture *f, const char *sub)
{
	char path[192];

	snprintf(path, sizeof(path), "%s/%s", f->dir, sub);
	return dir_count(path);
}

static void add(struct spool *s, const char *mailbox, uint32_t uid)
{
	struct mail_event *e = test_event_new(mailbox, uid);

	assert_int_equal(spool_add(s, e, NOW, NULL), 0);
	mail_event_unref(e);
}

static void test_add_read_remove(void **state)
{
	struct fixture *f = *state;
	struct spool *s = NULL;
	struct mail_event *e = test_event_new("INBOX", 7), *back = NULL;
	struct spool_entry *en = NULL;
	char *body = NULL;
	size_t len;

	assert_int_equal(spool_open(f->dir, 1 << 20, "webhook hook", &s), 0);
	assert_int_equal(spool_count(s), 0);
	assert_int_equal(spool_add(s, e, NOW, &en), 0);
	assert_non_null(en);
	assert_string_equal(en->id, e->id);
	assert_true(en->spooled == NOW);
	assert_int_equal(count_files(f, "new"), 1);
	assert_int_equal(count_files(f, "tmp"), 0);
	assert_int_equal(spool_read(s, en, &body, &len), 0);
	assert_int_equal(len, strlen(body));
	assert_int_equal(len, en->size);
	assert_true(spool_bytes(s) == len);
	assert_int_equal(mail_event_from_json(body, &back), 0);
	assert_string_equal(back->id, e->id);
	assert_non_null(strstr(body, "\"timestamp\":\"2023-11-14T22:15:23Z\""));
	spool_remove(s, en);
	assert_int_equal(spool_count(s), 0);
	assert_true(spool_bytes(s) == 0);
	assert_int_equal(count_files(f, "new"), 0);
	free(body);
	mail_event_unref(back);
	mail_event_unref(e);
	spool_free(s);
}

static void test_reload_in_order(void **state)
{
	struct fixture *f = *state;
	struct spool *s = NULL;
	struct spool_entry *en;
	uint64_t last = 0;
	int i = 0;

	assert_int_equal(spool_open(f->dir, 1 << 20, "webhook hook", &s), 0);
	for (uint32_t uid = 1; uid <= 12; uid++)
		add(s, uid % 2 ? "INBOX" : "Other", uid);
	spool_remove(s, spool_first(s)); /* uid 1 delivered */
	s = spool_free(s);

	assert_int_equal(spool_open(f->dir, 1 << 20, "webhook hook", &s), 0);
	assert_int_equal(spool_count(s), 11);
	for (en = spool_first(s); en; en = spool_next(en), i++) {
		char id[MAIL_EVENT_ID_LEN + 1];
		uint32_t uid = (uint32_t)i + 2;

		assert_true(en->seq > last);
		last = en->seq;
		assert_int_equal(mail_event_id("a", uid % 2 ? "INBOX" : "Other", UIDVALIDITY, uid, id),
				 0);
		assert_string_equal(en->id, id);
		assert_true(en->mailbox_key ==
			    spool_mailbox_key("a", uid % 2 ? "INBOX" : "Other"));
		assert_true(en->spooled == NOW);
	}
	/* New entries continue after the highest sequence number. */
	add(s, "INBOX", 100);
	for (en = spool_first(s); spool_next(en); en = spool_next(en))
		;
	assert_true(en->seq == 13);
	assert_int_equal(f->errors, 0);
	spool_free(s);
}

static void write_file(const struct fixture *f, const char *sub, const char *name,
		       const char *content)
{
	char path[320];
	FILE *s;

	snprintf(path, sizeof(path), "%s/%s/%s", f->dir, sub, name);
	s = fopen(path, "we");
	assert_non_null(s);
	fputs(content, s);
	assert_int_equal(fclose(s), 0);
}

static void test_corrupt_and_leftovers(void **state)
{
	struct fixture *f = *state;
	struct spool *s = NULL;
	char name[128];

	assert_int_equal(spool_open(f->dir, 1 << 20, "webhook hook", &s), 0);
	add(s, "INBOX", 1);
	add(s, "INBOX", 2);
	s = spool_free(s);
	/* A half-written entry, a truncated one, a stranger, and one whose id lies. */
	write_file(f, "tmp", "0000000000000003-1700000000-msg_x", "{\"type\"");
	snprintf(name, sizeof(name), "0000000000000004-1700000000-msg_%032d", 0);
	write_file(f, "new", name, "{\"type\":\"mail.rec");
	write_file(f, "new", "README", "hello");
	{
		struct mail_event *e = test_event_new("INBOX", 9);
		char *json = NULL;

		assert_int_equal(mail_event_to_json(e, NOW, &json), 0);
		snprintf(name, sizeof(name), "0000000000000005-1700000000-msg_%032d", 1);
		write_file(f, "new", name, json);
		free(json);
		mail_event_unref(e);
	}
	assert_int_equal(spool_open(f->dir, 1 << 20, "webhook hook", &s), 0);
	assert_int_equal(spool_count(s), 2);
	assert_int_equal(count_files(f, "tmp"), 0);
	assert_int_equal(count_files(f, "bad"), 3);
	assert_int_equal(count_files(f, "new"), 2);
	assert_int_equal(f->errors, 3);
	spool_free(s);
}

static void test_cap(void **state)
{
	struct fixture *f = *state;
	struct mail_event *e = test_event_new("INBOX", 1);
	struct spool *s = NULL;
	char *json = NULL;
	size_t one;

	assert_int_equal(mail_event_to_json(e, NOW, &json), 0);
	one = strlen(json);
	assert_int_equal(spool_open(f->dir, 2 * one + 10, "webhook hook", &s), 0);
	add(s, "INBOX", 1);
	add(s, "INBOX", 2);
	mail_event_unref(e);
	e = test_event_new("INBOX", 3);
	assert_int_equal(spool_add(s, e, NOW, NULL), -ENOSPC);
	assert_int_equal(count_files(f, "new"), 2);
	assert_int_equal(count_files(f, "tmp"), 0);
	spool_remove(s, spool_first(s));
	assert_int_equal(spool_add(s, e, NOW, NULL), 0);
	s = spool_free(s);
	/* An entry that could never fit. */
	assert_int_equal(spool_open(f->dir, 10, "webhook hook", &s), 0);
	assert_int_equal(spool_add(s, e, NOW, NULL), -EFBIG);
	free(json);
	mail_event_unref(e);
	spool_free(s);
}

static void test_read_vanished(void **state)
{
	struct fixture *f = *state;
	struct spool *s = NULL;
	struct spool_entry *en = NULL;
	struct mail_event *e = test_event_new("INBOX", 1);
	char path[640], *body = NULL;
	size_t len;
	DIR *d;
	struct dirent *de;

	assert_int_equal(spool_open(f->dir, 1 << 20, "webhook hook", &s), 0);
	assert_int_equal(spool_add(s, e, NOW, &en), 0);
	snprintf(path, sizeof(path), "%s/new", f->dir);
	d = opendir(path);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/new/%s", f->dir, de->d_name);
			break;
		}
	closedir(d);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(spool_read(s, en, &body, &len), -ENOENT);
	spool_remove(s, en);
	assert_int_equal(spool_count(s), 0);
	mail_event_unref(e);
	spool_free(s);
}

/* Events of two mailboxes, uid 1 .. n; unref with unref_events(). */
static void new_events(struct mail_event **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		v[i] = test_event_new(i % 2 ? "Other" : "INBOX", (uint32_t)i + 1);
}

static void unref_events(struct mail_event **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mail_event_unref(v[i]);
}

static const struct mail_event *const *cv(struct mail_event **v)
{
	return (const struct mail_event *const *)v;
}

/* The entries, oldest first, are exactly the ids of v[0..n). */
static void assert_entries(const struct spool *s, struct mail_event **v, size_t n)
{
	const struct spool_entry *en = spool_first(s);

	assert_int_equal(spool_count(s), n);
	for (size_t i = 0; i < n; i++, en = spool_next(en)) {
		assert_non_null(en);
		assert_string_equal(en->id, v[i]->id);
	}
	assert_null(en);
}

/* A spool whose fsyncs from here on are counted. */
static struct spool *open_probed(const struct fixture *f, uint64_t max_bytes)
{
	struct spool *s = NULL;

	assert_int_equal(spool_open(f->dir, max_bytes, "webhook hook", &s), 0);
	fsync_probe_start(f->root);
	return s;
}

/* Exactly v[0..n) in the list and in new/, nothing in tmp/. */
static void assert_stored(const struct fixture *f, const struct spool *s,
			  struct mail_event **v, size_t n)
{
	assert_int_equal(count_files(f, "new"), n);
	assert_int_equal(count_files(f, "tmp"), 0);
	assert_entries(s, v, n);
}

static void test_add_many_one_directory_fsync(void **state)
{
	struct fixture *f = *state;
	struct mail_event *v[5];
	struct spool *s = open_probed(f, 1 << 20);
	size_t added = 99;

	new_events(v, 5);
	assert_int_equal(spool_add_many(s, cv(v), 5, NOW, &added), 0);
	assert_int_equal(added, 5);
	/* Every file on its own, the directory once for the whole batch. */
	assert_int_equal(fsync_probe.files, 5);
	assert_int_equal(fsync_probe.dirs, 1);
	assert_stored(f, s, v, 5);
	/* Nothing to write: no fsync at all. */
	assert_int_equal(spool_add_many(s, NULL, 0, NOW, &added), 0);
	assert_int_equal(added, 0);
	assert_int_equal(fsync_probe.dirs, 1);
	s = spool_free(s);
	s = open_probed(f, 1 << 20);
	assert_entries(s, v, 5);
	spool_free(s);
	unref_events(v, 5);
}

static void test_add_many_stops_at_cap(void **state)
{
	struct fixture *f = *state;
	struct mail_event *v[4];
	struct spool *s;
	char *json = NULL;
	size_t added = 99;

	new_events(v, 4);
	assert_int_equal(mail_event_to_json(v[0], NOW, &json), 0);
	s = open_probed(f, 2 * strlen(json) + strlen(json) / 2);
	assert_int_equal(spool_add_many(s, cv(v), 4, NOW, &added), -ENOSPC);
	assert_int_equal(added, 2);
	assert_int_equal(fsync_probe.dirs, 1); /* what fitted is durable */
	assert_stored(f, s, v, 2);
	free(json);
	spool_free(s);
	unref_events(v, 4);
}

static void test_add_many_directory_fsync_fails(void **state)
{
	struct fixture *f = *state;
	struct mail_event *v[3];
	struct spool *s = open_probed(f, 1 << 20);
	size_t added = 99;

	new_events(v, 3);
	fsync_probe.dir_error = EIO;
	assert_int_equal(spool_add_many(s, cv(v), 3, NOW, &added), -EIO);
	/* None was made durable, so none is reported added, and none is left behind. */
	assert_int_equal(added, 0);
	assert_true(spool_bytes(s) == 0);
	assert_stored(f, s, v, 0);
	fsync_probe.dir_error = 0;
	assert_int_equal(spool_add_many(s, cv(v), 3, NOW, &added), 0);
	assert_int_equal(added, 3);
	assert_stored(f, s, v, 3);
	spool_free(s);
	unref_events(v, 3);
}

static void test_add_many_file_fsync_fails(void **state)
{
	struct fixture *f = *state;
	struct mail_event *v[4];
	struct spool *s = open_probed(f, 1 << 20);
	size_t added = 99;

	new_events(v, 4);
	fsync_probe.file_error = EIO;
	fsync_probe.file_error_after = 2;
	assert_int_equal(spool_add_many(s, cv(v), 4, NOW, &added), -EIO);
	/* The two before the failure are in, and durable; nothing after it was tried. */
	assert_int_equal(added, 2);
	assert_int_equal(fsync_probe.files, 3);
	assert_int_equal(fsync_probe.dirs, 1);
	assert_stored(f, s, v, 2);
	/* The first one failing: no directory fsync for nothing. */
	fsync_probe_start(f->root);
	fsync_probe.file_error = EIO;
	assert_int_equal(spool_add_many(s, cv(v + 2), 2, NOW, &added), -EIO);
	assert_int_equal(added, 0);
	assert_int_equal(fsync_probe.dirs, 0);
	assert_stored(f, s, v, 2);
	spool_free(s);
	unref_events(v, 4);
}

static void test_invalid(void **state)
{
	struct spool *s = NULL;

	assert_int_equal(spool_open(NULL, 1, NULL, &s), -EINVAL);
	assert_int_equal(spool_open("", 1, NULL, &s), -EINVAL);
	assert_int_equal(spool_open("/proc/version/x", 1, NULL, &s) < 0, 1);
	assert_null(spool_free(NULL));
	assert_int_equal(spool_count(NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_add_read_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_and_leftovers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_vanished, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_many_one_directory_fsync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_many_stops_at_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_many_directory_fsync_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_many_file_fsync_fails, setup, teardown),
		cmocka_unit_test(test_invalid),
	};

	return cmocka_run_group_tests_name("spool", tests, NULL, NULL);
}
