/* A tiny HTTP/1.1 server for unit tests: a forked child on 127.0.0.1 that answers each request
 * by its path:
 *   /status/NNN         status NNN, body "status NNN"
 *   /retry/VALUE        503 with "Retry-After: VALUE" ('_' in VALUE becomes ' ')
 *   /redirect           301 to /status/200
 *   /slow               never answers (the client's timeout must end it)
 *   /big                200 with a 10,000-byte body
 * anything else: 200. Each request is appended to FILE (the request line, then the body on the
 * next line), so the parent can see what arrived. One connection at a time, one request per
 * connection (Connection: close), so that concurrent clients are served in turn. */
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

struct test_server {
	pid_t pid;
	int port;
};

static void ts_send(int fd, int status, const char *extra, const char *body, size_t len)
{
	char head[512];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", status, len, extra);

	(void)!write(fd, head, (size_t)n);
	(void)!write(fd, body, len);
}

/* One request from fd into buf; returns its total length, or 0 at EOF. */
static size_t ts_read_request(int fd, char *buf, size_t size, size_t *body_off)
{
	size_t n = 0;
	char *end;

	for (;;) {
		ssize_t k;

		buf[n] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (end) {
			char *cl = strcasestr(buf, "content-length:");
			size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);

			if (n >= want) {
				*body_off = (size_t)(end + 4 - buf);
				return want;
			}
		}
		if (n + 1 >= size)
			return 0;
		k = read(fd, buf + n, size - 1 - n);
		if (k <= 0)
			return 0;
		n += (size_t)k;
	}
}

static void ts_answer(int fd, const char *path)
{
	static char big[10000];
	char extra[320], body[64];

	if (strncmp(path, "/status/", 8) == 0) {
		int st = atoi(path + 8);

		snprintf(body, sizeof(body), "status %d", st);
		ts_send(fd, st, "", body, strlen(body));
	} else if (strncmp(path, "/retry/", 7) == 0) {
		snprintf(extra, sizeof(extra), "Retry-After: %s\r\n", path + 7);
		for (char *p = extra; *p; p++)
			if (*p == '_')
				*p = ' ';
		ts_send(fd, 503, extra, "", 0);
	} else if (strcmp(path, "/redirect") == 0) {
		ts_send(fd, 301, "Location: /status/200\r\n", "", 0);
	} else if (strcmp(path, "/slow") == 0) {
		pause();
	} else if (strcmp(path, "/big") == 0) {
		memset(big, 'x', sizeof(big));
		ts_send(fd, 200, "", big, sizeof(big));
	} else {
		ts_send(fd, 200, "", "ok", 2);
	}
}

static void ts_serve(int lfd, const char *log_path)
{
	static char buf[1 << 20];

	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		size_t len, body_off;

		if (fd < 0)
			continue;
		if ((len = ts_read_request(fd, buf, sizeof(buf), &body_off)) > 0) {
			char method[16], path[256];
			FILE *log = fopen(log_path, "a");

			if (sscanf(buf, "%15s %255s", method, path) != 2)
				method[0] = path[0] = '\0';
			if (log) {
				fprintf(log, "%s %s\n%.*s\n", method, path, (int)(len - body_off),
					buf + body_off);
				fclose(log);
			}
			ts_answer(fd, path);
		}
		close(fd);
	}
}

static struct test_server test_server_start(const char *log_path)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	struct test_server s = { 0 };
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 16) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
		abort();
	s.port = ntohs(sa.sin_port);
	s.pid = fork();
	if (s.pid < 0)
		abort();
	if (s.pid == 0) {
		/* Dies with the test, even when the test aborts. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		ts_serve(lfd, log_path);
		_exit(0);
	}
	close(lfd);
	return s;
}

static void test_server_stop(struct test_server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
	}
	s->pid = 0;
}

/* A port nothing listens on (bound, then closed). */
static int test_closed_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
		abort();
	close(fd);
	return ntohs(sa.sin_port);
}
