/* The benchmarks' exec sink command: note when it started, as early and as cheaply as a
 * process can (CLOCK_MONOTONIC, the clock of Python's time.monotonic()).
 *
 *   stamp FILE [LINES]
 *
 * Appends "<CLOCK_MONOTONIC seconds> <IMAPIDLED_UID> <IMAPIDLED_COUNT> <stdin lines>\n" to
 * FILE in one write (O_APPEND: runs never interleave); with LINES, also appends what came on
 * stdin (one JSON event a line) to that file. Built static by bench/run: no loader work. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 16];

/* Empty for a batch that spans mailboxes: "-" keeps the record's four fields. */
static const char *env_or_dash(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : "-";
}

int main(int argc, char **argv)
{
	struct timespec ts;
	char rec[256];
	long lines = 0;
	int out = -1, n;
	ssize_t k;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (argc < 2)
		return 2;
	if (argc > 2)
		out = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	/* Read stdin to its end: the sink expects its input consumed. */
	while ((k = read(0, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < k; i++)
			lines += buf[i] == '\n';
		if (out >= 0 && write(out, buf, (size_t)k) != k)
			return 1;
	}
	n = snprintf(rec, sizeof(rec), "%lld.%09ld %s %s %ld\n", (long long)ts.tv_sec, ts.tv_nsec,
		     env_or_dash("IMAPIDLED_UID"), env_or_dash("IMAPIDLED_COUNT"), lines);
	int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, rec, (size_t)n) != n)
		return 1;
	return 0;
}
