/*
 * core/daemon.h: the process around a daemon: leaving the terminal, and
 * the pid file that says one instance runs. The pid file is locked
 * (flock) for the daemon's whole life, so "running" has one test
 * everywhere: somebody holds the lock. A pid file nobody locks is stale,
 * whatever pid it names (no signal ever goes to a stranger's process).
 */
#ifndef FRUGAL_CORE_DAEMON_H
#define FRUGAL_CORE_DAEMON_H

/*
 * fork; the child leads a new session with stdio on /dev/null and returns
 * 0 (or -1 when it cannot fork). The parent waits until the child calls
 * daemon_detach_done(STATUS) and exits with STATUS; it exits 1 when the
 * child goes without a word. So the pid file exists when the command that
 * started the daemon returns, and its status says whether it serves.
 */
int  daemon_detach(void);
/* Once, when start-up is over: 0 serving, else the exit status. Nothing without a detach. */
void daemon_detach_done(int status);
/*
 * Create, lock and fill PATH (mode 0644, its directory created 0755). The
 * descriptor stays open for the lock; it is returned (>= 0). -1 with errno:
 * EWOULDBLOCK when another instance holds it (*running gets its pid).
 */
int  daemon_pidfile_lock(const char *path, long *running);
/* The pid of the daemon that holds PATH's lock, or -1 (missing or stale). */
long daemon_pidfile_read(const char *path);
/*
 * This process's pid, cached: getpid(2) is a system call (glibc caches
 * nothing) and the log line and the group commit name it every time. Right
 * in a child forked by fork(3) (reset by an atfork handler).
 */
long daemon_self(void);

#endif
