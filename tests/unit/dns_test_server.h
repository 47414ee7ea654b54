/*
 * tests/unit/dns_test_server.h: tests/integration/dnsserver.py as a
 * subprocess on loopback, for the unit tests that need real DNS answers
 * (test_dns, test_spf). Header-only: each test program includes it once.
 * The server reads its records from a JSON spec file, prints its port when
 * it listens, and serves until its stdin closes.
 */
#ifndef FRUGAL_TESTS_DNS_TEST_SERVER_H
#define FRUGAL_TESTS_DNS_TEST_SERVER_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t dts_pid;
static int dts_stdin = -1;

/* Start the server with SPEC (JSON); servers gets "127.0.0.1:PORT". Exits the test program on failure. */
static void dts_start(const char *who, const char *spec, char *servers, size_t len)
{
	char path[] = "/tmp/frugal-dnsspec-XXXXXX", port[32];
	int in[2], out[2], fd = mkstemp(path);
	const char *src = getenv("FRUGAL_SRCDIR");
	char script[1024];
	ssize_t n;

	if (fd < 0 || write(fd, spec, strlen(spec)) != (ssize_t)strlen(spec) || close(fd) < 0) {
		fprintf(stderr, "%s: spec file: %s\n", who, strerror(errno));
		exit(1);
	}
	snprintf(script, sizeof script, "%s/tests/integration/dnsserver.py", src ? src : ".");
	if (pipe(in) < 0 || pipe(out) < 0) {
		fprintf(stderr, "%s: pipe: %s\n", who, strerror(errno));
		exit(1);
	}
	if ((dts_pid = fork()) == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		execlp("python3", "python3", script, path, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	dts_stdin = in[1];
	/* the server prints its port once it listens: read up to the line's end */
	for (n = 0; n < (ssize_t)sizeof port - 1 && (n == 0 || port[n - 1] != '\n'); ) {
		ssize_t r = read(out[0], port + n, sizeof port - 1 - (size_t)n);
		if (r <= 0)
			break;
		n += r;
	}
	close(out[0]);
	unlink(path);
	if (n <= 0 || port[n - 1] != '\n') {
		fprintf(stderr, "%s: %s did not start\n", who, script);
		exit(1);
	}
	port[n] = '\0';
	port[strcspn(port, "\n")] = '\0';
	snprintf(servers, len, "127.0.0.1:%s", port);
}

static void dts_stop(void)
{
	close(dts_stdin);   /* it serves until its stdin closes */
	waitpid(dts_pid, NULL, 0);
}

#endif
