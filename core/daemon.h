/*
 * core/daemon.h: the process around a daemon: leaving the terminal, and
 * the pid file that says one instance runs. The pid file is locked
 * (flock) for the daemon's whole life, so "running" has one test
 * everywhere: somebody holds the lock. A pid file nobody locks is stale,
 * whatever pid it names (no signal ever goes to a stranger's process).
 */
#ifndef FRUGAL_CORE_DAEMON_H
#define FRUGAL_CORE_DAEMON_H

/* fork; the parent exits 0; the child leads a new session with stdio on /dev/null. 0 or -1. */
int  daemon_detach(void);
/*
 * Create, lock and fill PATH (mode 0644, its directory created 0755). The
 * descriptor stays open for the lock; it is returned (>= 0). -1 with errno:
 * EWOULDBLOCK when another instance holds it (*running gets its pid).
 */
int  daemon_pidfile_lock(const char *path, long *running);
/* The pid of the daemon that holds PATH's lock, or -1 (missing or stale). */
long daemon_pidfile_read(const char *path);

#endif
