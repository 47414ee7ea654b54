/*
 * limits/limits.h: the only place that decides "is there room". Detects the
 * container's limits (OpenVZ beancounters, cgroup v1/v2, rlimits, manual
 * limit_* parameters), keeps frugal's own ledger of sockets, descriptors
 * and memory, derives concurrency from it, switches stress mode, and writes
 * the limits report.
 *
 * Accounting rule: every descriptor frugal opens is taken here first
 * (limits_take) and given back when closed (limits_release). A take that
 * would pass the budget fails, and the caller degrades (421/451/pause).
 */
#ifndef FRUGAL_LIMITS_LIMITS_H
#define FRUGAL_LIMITS_LIMITS_H

#include <stdio.h>
#include <ev.h>

struct conf;

/* The kinds of resource frugal charges itself for. */
enum limits_kind {
	LIM_TCPSOCK,    /* a TCP socket: numtcpsock, and a descriptor */
	LIM_OTHERSOCK,  /* any non-TCP socket (UNIX, UDP, netlink): numothersock, and a descriptor */
	LIM_FILE,       /* a regular file or pipe descriptor: numfile */
	LIM_KIND_COUNT
};

/* Detect limits, compute the budget, start periodic re-sampling on `loop`.
 * Logs what it found ("limits: smtpd sessions 180: bound by numtcpsock"). */
int  limits_init(struct ev_loop *loop, const struct conf *c);
void limits_reconfigure(const struct conf *c);   /* reload: recompute the budget */
void limits_shutdown(void);

int  limits_take(enum limits_kind k, int n);     /* 0, or -1: over budget (nothing taken) */
void limits_release(enum limits_kind k, int n);
int  limits_in_use(enum limits_kind k);

/* Sessions: admission against the derived smtpd concurrency. */
int  limits_session_admit(void);                 /* 1: room for one more session (counted) */
void limits_session_done(void);
int  limits_smtpd_concurrency(void);             /* the derived (or configured) limit */
int  limits_delivery_concurrency(void);
int  limits_sessions(void);                      /* sessions now */
/* Socket buffer sizes for a session (SO_SNDBUF/SO_RCVBUF), 0 = leave the kernel's. */
int  limits_session_sndbuf(void);
int  limits_session_rcvbuf(void);

/* Stress mode (stress_threshold, with hysteresis). */
int  limits_stress(void);
void limits_on_stress(void (*cb)(int on, void *arg), void *arg);
/* A failed resource (ENOMEM, EMFILE, ENFILE, ENOBUFS): count it, maybe resample. */
void limits_note_failure(const char *resource, int err);

/*
 * Where the daemon publishes its live use for `frugal limits` (a file under
 * queue_directory written atomically on each sample; no socket, no IPC).
 */
void limits_set_status_path(const char *path);

/* `frugal limits [-c DIR] [--json]`; returns an exit code. */
int  limits_cmd(int argc, char **argv);

#endif
