/* The benchmarks' exec sink command: note when it started, as early and as cheaply as a
 * process can (CLOCK_MONOTONIC, the clock of Python's time.monotonic()).
 *
 *   stamp FILE [LINES]
 *
 * Appends "<CLOCK_MONOTONIC seconds> <IMAPIDLED_UID> <IMAPIDLED_COUNT> <stdin lines>\n" to
 * FILE in one write (O_APPEND: runs never interleave); with LINES, also appends what came on
 * stdin (one JSON event a line) to that file. An empty or missing variable is written "-".
 *
 * On x86_64 it is built without libc (-nostdlib -static, raw system calls): the clock is read
 * at the first instruction, before any start-up code (a static glibc spends ~0.2 ms in CPUID
 * probing on a VM before main). Elsewhere the same code runs on top of libc. */
#ifdef STAMP_NOLIBC
typedef long ssize_t;
typedef unsigned long size_t;
struct timespec {
	long tv_sec, tv_nsec;
};
#define O_WRONLY 01
#define O_CREAT 0100
#define O_APPEND 02000
#define O_CLOEXEC 02000000
#define CLOCK_MONOTONIC 1

static long sys3(long n, long a, long b, long c)
{
	long r;

	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}
#define read(fd, b, n) sys3(0, (fd), (long)(b), (long)(n))
#define write(fd, b, n) sys3(1, (fd), (long)(b), (long)(n))
#define open(p, f, m) sys3(2, (long)(p), (f), (m))
#define clock_gettime(c, t) sys3(228, (c), (long)(t), 0)
#define _exit(s) sys3(60, (s), 0, 0)
#else
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#endif

static char buf[1 << 16];

static int prefix(const char *s, const char *p)
{
	while (*p)
		if (*s++ != *p++)
			return 0;
	return 1;
}

/* name includes the '='. */
static const char *env_or_dash(char **envp, const char *name)
{
	size_t len = 0;

	while (name[len])
		len++;
	for (; envp && *envp; envp++)
		if (prefix(*envp, name))
			return (*envp)[len] ? *envp + len : "-";
	return "-";
}

static char *put_str(char *o, const char *s)
{
	while (*s)
		*o++ = *s++;
	return o;
}

static char *put_num(char *o, unsigned long v, int width)
{
	char tmp[24];
	int k = 0;

	do {
		tmp[k++] = (char)('0' + v % 10);
		v /= 10;
	} while (v || k < width);
	while (k)
		*o++ = tmp[--k];
	return o;
}

static int stamp(int argc, char **argv, char **envp, const struct timespec *ts)
{
	char rec[256], *o = rec;
	unsigned long lines = 0;
	long out = -1, fd;
	ssize_t k;

	if (argc < 2)
		return 2;
	if (argc > 2)
		out = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	/* Read stdin to its end: the sink expects its input consumed. */
	while ((k = read(0, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < k; i++)
			lines += buf[i] == '\n';
		if (out >= 0 && write(out, buf, k) != k)
			return 1;
	}
	o = put_num(o, (unsigned long)ts->tv_sec, 1);
	*o++ = '.';
	o = put_num(o, (unsigned long)ts->tv_nsec, 9);
	*o++ = ' ';
	o = put_str(o, env_or_dash(envp, "IMAPIDLED_UID="));
	*o++ = ' ';
	o = put_str(o, env_or_dash(envp, "IMAPIDLED_COUNT="));
	*o++ = ' ';
	o = put_num(o, lines, 1);
	*o++ = '\n';
	fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, rec, o - rec) != o - rec)
		return 1;
	return 0;
}

#ifdef STAMP_NOLIBC
void stamp_start(long *sp);
void stamp_start(long *sp)
{
	struct timespec ts;
	int argc = (int)sp[0];
	char **argv = (char **)(sp + 1);

	clock_gettime(CLOCK_MONOTONIC, &ts);
	_exit(stamp(argc, argv, argv + argc + 1, &ts));
}
__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall stamp_start\n\thlt\n");
#else
int main(int argc, char **argv, char **envp)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return stamp(argc, argv, envp, &ts);
}
#endif
