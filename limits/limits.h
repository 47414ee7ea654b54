/*
 * limits/limits.h: the only place that decides "is there room". Detects the
 * container's limits (OpenVZ beancounters, cgroup v1/v2, rlimits, manual
 * limit_* parameters), keeps frugal's own ledger of sockets, descriptors
 * and memory, derives concurrency from it, switches stress mode, and writes
 * the limits report.
 *
 * Accounting rule: the counts live at the ground floor, beside what they
 * count: core/fd.h counts every descriptor and socket as it is opened and
 * closed, core/mem.h every byte. limits/ sets their caps from the budget
 * (an open past the cap fails with EMFILE, an allocation with NULL, and the
 * caller degrades: 421/451/pause) and reads the counts.
 */
#ifndef FRUGAL_LIMITS_LIMITS_H
#define FRUGAL_LIMITS_LIMITS_H

#include <stdio.h>
#include <ev.h>

struct conf;

/* Detect limits, compute the budget, start periodic re-sampling on `loop`.
 * Logs what it found ("limits: smtpd sessions 180: bound by numtcpsock"). */
int  limits_init(struct ev_loop *loop, const struct conf *c);
void limits_reconfigure(const struct conf *c);   /* reload: recompute the budget */
void limits_shutdown(void);
void limits_resample(void);                      /* one sample now (and the status file) */
/* Open the beancounters file now (still root) and keep reading that descriptor. */
void limits_beancounters_keep(const char *path);

/*
 * A TCP connection frugal just accepted (and counted, core/fd.h): is it
 * within the socket and descriptor budgets? 1 yes; 0 no, and *why names
 * the exhausted budget ("numtcpsock", "descriptor").
 */
int  limits_tcp_admit(const char **why);

/*
 * Disk: room in the queue's file system for a message of `size` bytes (SIZE=,
 * 0 unknown)? 1 yes; 0 no (the caller answers 452 4.3.1) with why naming
 * the file system and the numbers. Cheap: statvfs at most once a second.
 */
int  limits_disk_admit(long long size, char *why, size_t whylen);

/* Sessions: admission against the derived smtpd concurrency. */
int  limits_session_admit(void);                 /* 1: room for one more session (counted) */
void limits_session_done(void);
int  limits_smtpd_concurrency(void);             /* the derived (or configured) limit */
int  limits_delivery_concurrency(void);
int  limits_sessions(void);                      /* sessions now */
/* Socket buffer sizes for a session (SO_SNDBUF/SO_RCVBUF), 0 = leave the kernel's. */
int  limits_session_sndbuf(void);
int  limits_session_rcvbuf(void);

/*
 * Private memory the allocator does not count. limits_measure_fixed()
 * takes this process's (VmData less what core/mem holds) once start-up is
 * done: thread stacks, libraries' data. Sibling processes (the master, the
 * delivery helpers) are sampled with every re-sample. Both count as
 * frugal's own use and come off the allocator's budget.
 */
#define LIMITS_MAX_SIBLINGS 4
void limits_measure_fixed(void);
void limits_set_siblings(const long *pids, int n);
/* what the siblings hold of descriptors and non-TCP sockets, as they report it */
void limits_set_sibling_fds(long long fds, long long socks);
/* called before each sample, to refresh those reports (the daemon's callback) */
void limits_on_sample(void (*fn)(void));
long long limits_proc_vmdata(long pid);   /* VmData in bytes (0: this process); -1 unknown */

/* Stress mode (stress_threshold, with hysteresis). */
int  limits_stress(void);
void limits_on_stress(void (*cb)(int on, void *arg), void *arg);
/* A failed resource (ENOMEM, EMFILE, ENFILE, ENOBUFS): count it, maybe resample. */
void limits_note_failure(const char *resource, int err);
/*
 * A socket the descriptor funnel refused with EMFILE (core/fd.h): the resource
 * whose pool set the cap that refused ("numtcpsock", "numothersock", "numfile",
 * "RLIMIT_NOFILE"), or NULL when the funnel has room (the kernel said EMFILE).
 */
const char *limits_socket_refusal(int is_unix);

/*
 * Where the daemon publishes its live use for `frugal limits` (a file under
 * queue_directory written atomically on each sample; no socket, no IPC).
 */
void limits_set_status_path(const char *path);

/*
 * The report's rows as gauges (`frugal status`): the same figures as
 * `frugal limits`. -1 where unknown or unlimited. Returns how many;
 * *running: 1 when the daemon's live use was read.
 */
struct limits_gauge {
	char name[40];       /* as the report shows it ("cgroup memory.max") */
	char key[32];        /* the resource's key ("numtcpsock", "cg_memory") */
	int  bytes;          /* an amount of memory */
	long long used, budget, limit;
};
int  limits_gauges(const struct conf *c, struct limits_gauge *g, int max, int *running);
/*
 * The running daemon's status file as `frugal status` shows it. 0 when the
 * file was read and its pid lives; -1 (daemon not running, or the file
 * unreadable: errno). counters: its "stat NAME VALUE" lines (core/stats.h).
 */
struct limits_daemon {
	long pid;
	long long time, started;        /* the sample's time, the daemon's start (epoch seconds) */
	long long sessions, sessions_limit, deliveries_limit;
	int stress;
	long long log_lost;             /* log lines the daemon could not write since start */
	char counters[1024];
	size_t counters_len;
};
int  limits_daemon_status(const struct conf *c, struct limits_daemon *d);

/* `frugal limits [-c DIR] [--json]`; returns an exit code. */
int  limits_cmd(int argc, char **argv);
/* The limits and the concurrency frugal would use, in plain sentences (frugal wizard). */
void limits_describe(const struct conf *c, FILE *f);
/* frugal's memory budget under this configuration, detected now (bytes; -1 no limit found). */
long long limits_memory_budget(const struct conf *c);

#endif
