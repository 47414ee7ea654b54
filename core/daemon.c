/* core/daemon.c: detaching and the pid file (see daemon.h). */
#include "daemon.h"
#include "fd.h"
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* the write end of the start-up pipe: the waiting parent's exit status comes through it */
static int ready_fd = -1;

int daemon_detach(void)
{
	int p[2], fd;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	if ((pid = fork()) < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid > 0) {
		/*
		 * Wait for the daemon to say it serves (or why not) before the
		 * command returns: systemd's Type=forking reads the pid file when
		 * this process exits, and a script that runs `frugal serve` wants
		 * its exit status to mean something.
		 */
		unsigned char b;
		ssize_t r;

		close(p[1]);
		do
			r = read(p[0], &b, 1);
		while (r < 0 && errno == EINTR);
		if (r == 1)
			_exit(b);
		fprintf(stderr, "frugal: the daemon stopped during start-up (the log says why)\n");
		_exit(1);
	}
	close(p[0]);
	ready_fd = p[1];
	fd_received(ready_fd, FD_FILE);
	setsid();
	if ((fd = open("/dev/null", O_RDWR)) >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return 0;
}

void daemon_detach_done(int status)
{
	unsigned char b = (unsigned char)status;

	if (ready_fd < 0)
		return;
	if (write(ready_fd, &b, 1) < 0) {
		/* the parent is gone (killed): nobody waits for the answer */
	}
	fd_close(ready_fd);
	ready_fd = -1;
}

static long read_pid_fd(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	long pid;

	buf[n > 0 ? n : 0] = '\0';
	pid = strtol(buf, NULL, 10);
	return pid > 0 ? pid : -1;
}

int daemon_pidfile_lock(const char *path, long *running)
{
	char buf[32];
	int fd, n, e;

	*running = 0;
	if (file_mkdir_parent(path, 0755) < 0)
		return -1;
	if ((fd = fd_open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644)) < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		e = errno;
		*running = read_pid_fd(fd);
		fd_close(fd);
		errno = e;
		return -1;
	}
	n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
		e = errno;
		fd_close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

long daemon_pidfile_read(const char *path)
{
	int fd = fd_open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	long pid;

	if (fd < 0)
		return -1;
	/* a lock we can take is a lock nobody holds: stale */
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		fd_close(fd);
		return -1;
	}
	pid = read_pid_fd(fd);
	fd_close(fd);
	return pid;
}

static long self_pid;

static void forget_pid(void)
{
	__atomic_store_n(&self_pid, 0, __ATOMIC_RELAXED);
}

static void at_fork(void)
{
	pthread_atfork(NULL, NULL, forget_pid);
}

long daemon_self(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	long p = __atomic_load_n(&self_pid, __ATOMIC_RELAXED);

	if (p == 0) {
		pthread_once(&once, at_fork);
		p = (long)getpid();
		__atomic_store_n(&self_pid, p, __ATOMIC_RELAXED);
	}
	return p;
}
