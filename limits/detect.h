/*
 * limits/detect.h: the inside of the limits room, shared by its files and
 * by tests and fuzzers. Holds the pure parsers (beancounters, cgroup value
 * files, /proc/self/cgroup, file-nr), the snapshot of every resource
 * detected, and the pure budget arithmetic. Nothing outside limits/ and
 * tests/ includes this header; the daemon uses limits/limits.h.
 *
 * Every parser takes a buffer and a length (not a NUL-terminated string, so
 * a fuzzer can hand it any bytes) and never allocates, so it cannot crash
 * on garbage and cannot fail for lack of memory.
 */
#ifndef FRUGAL_LIMITS_DETECT_H
#define FRUGAL_LIMITS_DETECT_H

#include <stddef.h>
#include <limits.h>

struct conf;
struct ev_loop;

/* "unlimited" in /proc/user_beancounters is LONG_MAX of a 64-bit kernel */
#define LIMITS_UNLIMITED LLONG_MAX

/* ---- /proc/user_beancounters, "Version: 2.5" ---- */

#define LIMITS_UBC_MAX_ROWS 40   /* a 2.5 block has 20-24 rows; extra rows are ignored */

struct limits_ubc_row {
	char name[24];               /* resource name: "numtcpsock" */
	long long held;              /* use now */
	long long maxheld;           /* high-water mark since the counter was reset */
	long long barrier;           /* soft cap: new objects fail past it (sockets, files) */
	long long limit;             /* hard cap */
	long long failcnt;           /* refusals so far */
};

struct limits_ubc {
	long long uid;               /* the container id of the chosen block (0: the host) */
	int blocks;                  /* how many blocks the file had */
	int nrows;
	struct limits_ubc_row rows[LIMITS_UBC_MAX_ROWS];
};

/*
 * Parse a whole beancounters file. Chooses the block of the container
 * itself: a container sees exactly one block (its own); a host node sees
 * several and is itself uid 0, so with several blocks uid 0 is chosen, and
 * when there is none, the first block with rows.
 * Returns 0, or -1 with a reason in err (bad version line, no block,
 * truncated row...). Rows that parsed before an error are kept in *out only
 * when 0 is returned: a caller never works on half a file.
 */
int limits_ubc_parse(const char *buf, size_t len, struct limits_ubc *out,
    char *err, size_t errlen);
const struct limits_ubc_row *limits_ubc_find(const struct limits_ubc *u, const char *name);

/* ---- cgroup files ---- */

/* One value file (memory.max, pids.current...): a number, or "max" (unlimited).
 * Returns 0 and *v, or -1 on garbage. */
int limits_cgroup_parse_value(const char *buf, size_t len, long long *v);
/* A "key value" file (memory.events, memory.stat): the value of `key`, or -1
 * when absent or garbage. */
int limits_cgroup_parse_keyed(const char *buf, size_t len, const char *key, long long *v);
/*
 * /proc/self/cgroup: the path of the v2 entry ("0::/path") when v1 is 0,
 * else the path of the v1 hierarchy that lists controller `v1` ("4:memory:/x").
 * Returns 0 with the path in out, or -1.
 */
int limits_cgroup_parse_self(const char *buf, size_t len, const char *v1,
    char *out, size_t outlen);

/* ---- /proc/sys/fs/file-nr: "allocated unused max" ---- */
int limits_filenr_parse(const char *buf, size_t len, long long *allocated, long long *max);

/* ---- the snapshot: every resource frugal knows ---- */

enum limits_res {
	LR_NUMOTHERSOCK,   /* beancounters numothersock (or manual) */
	LR_NUMTCPSOCK,     /* beancounters numtcpsock (or manual) */
	LR_NUMFILE,        /* beancounters numfile (or manual): all open files, sockets too */
	LR_NUMPROC,        /* beancounters numproc: processes and threads; report only */
	LR_MEMORY,         /* beancounters privvmpages (physpages when unlimited), or manual; bytes */
	LR_TCPSNDBUF,      /* beancounters tcpsndbuf, bytes */
	LR_TCPRCVBUF,      /* beancounters tcprcvbuf, bytes */
	LR_OTHERSOCKBUF,   /* beancounters othersockbuf, bytes; report only */
	LR_NOFILE,         /* RLIMIT_NOFILE of this process */
	LR_AS,             /* RLIMIT_AS of this process, bytes */
	LR_NPROC,          /* RLIMIT_NPROC; report only */
	LR_FILENR,         /* /proc/sys/fs/file-nr */
	LR_CG_MEMORY,      /* cgroup memory.max / memory.limit_in_bytes, bytes */
	LR_CG_PIDS,        /* cgroup pids.max; report only */
	LR_QUEUE_SPACE,    /* the queue's file system: bytes (limit: size, held: used) */
	LR_QUEUE_INODES,   /* the queue's file system: inodes */
	LR_MBOX_SPACE,     /* the mailboxes' file system, when another one: bytes */
	LR_MBOX_INODES,    /* the mailboxes' file system: inodes */
	LR_COUNT
};

extern const char *const limits_res_name[LR_COUNT];

struct limits_res_state {
	const char *source;   /* NULL: nothing known; "beancounters", "cgroup v2", "rlimit", "manual"... */
	long long limit;      /* the cap new objects fail at (a beancounter's barrier); LIMITS_UNLIMITED */
	long long hardlimit;  /* a beancounter's limit column; else = limit */
	long long held;       /* container-wide use now; -1 unknown */
	long long maxheld;    /* -1 unknown */
	long long failcnt;    /* -1 unknown */
};

/* which sources limits_source allows (bits) */
#define LIMITS_SRC_BEANCOUNTERS 1
#define LIMITS_SRC_CGROUP       2
#define LIMITS_SRC_RLIMIT       4
#define LIMITS_SRC_MANUAL       8
#define LIMITS_SRC_AUTO         (LIMITS_SRC_BEANCOUNTERS | LIMITS_SRC_CGROUP | LIMITS_SRC_RLIMIT | LIMITS_SRC_MANUAL)

#define LIMITS_MAX_WARN 6

struct limits_snapshot {
	struct limits_res_state r[LR_COUNT];
	int found;                     /* LIMITS_SRC_* bits that produced a limit */
	int cgroup_version;            /* 0 none, 1, 2 */
	char cgroup_dir[512];          /* the memory cgroup directory read */
	long long cg_oom_events;       /* memory.events oom (v2) or memory.failcnt (v1); -1 */
	long long cg_max_events;       /* memory.events max (v2); -1 */
	int nwarn;
	char warn[LIMITS_MAX_WARN][200]; /* detection problems: garbage files, fallbacks */
};

/* What the budget is computed from: the limits and concurrency parameters. */
struct limits_params {
	int sources;                   /* LIMITS_SRC_* allowed */
	char beancounters_file[256];
	char cgroup_root[256];
	long long manual_numothersock; /* 0: not set */
	long long manual_numtcpsock;
	long long manual_numfile;
	long long manual_memory;       /* bytes */
	int share;                     /* percent of each container limit frugal may take */
	int reserve;                   /* percent left free container-wide */
	int stress_threshold;          /* percent */
	long long smtpd_concurrency;   /* 0: auto */
	long long delivery_concurrency;/* 0: auto */
	int listeners;                 /* listening TCP sockets frugal keeps open */
	char queue_dir[512];           /* the file systems budgeted as disk ("" = none) */
	char mailbox_dir[512];
	long long queue_minfree;       /* bytes */
	long long message_size_limit;  /* bytes; 0 = none */
	long long session_mem;         /* one session's memory: LIMITS_SESSION_MEM, plus
	                                * LIMITS_TLS_SESSION_MEM where TLS is offered */
	long long delivery_mem;        /* one delivery's memory: LIMITS_DELIVERY_MEM, plus
	                                * LIMITS_TLS_CLIENT_MEM where the SMTP client may
	                                * use TLS (0: LIMITS_DELIVERY_MEM) */
};

/*
 * Disk (OpenVZ diskspace/diskinodes, a small VPS disk): MAIL is refused
 * with 452 4.3.1 while the queue's file system has less free than this
 * (Postfix: queue_minfree, and at least 1.5 x message_size_limit), or fewer
 * free inodes than LIMITS_INODES_MIN (1% of its inodes when that is fewer);
 * stress mode starts at twice that.
 */
#define LIMITS_INODES_MIN 1000
long long limits_disk_need_bytes(const struct limits_params *p);
long long limits_disk_need_inodes(long long total_inodes);
/* statvfs of the budgeted file systems into s (LR_QUEUE_*, LR_MBOX_*) */
void limits_detect_disk(const struct limits_params *p, struct limits_snapshot *s);

/* Defaults as in PRODUCT.md section 2 (auto, 50%, 5%, 80%). */
void limits_params_default(struct limits_params *p);
/* From a loaded configuration; bad values get a warning and the default. */
void limits_params_from_conf(const struct conf *c, struct limits_params *p);

/* Read every source p allows into *s (files, getrlimit). Never fails: what
 * cannot be read is left unknown and a warning is added to s->warn. */
void limits_detect(const struct limits_params *p, struct limits_snapshot *s);
/* the parts of limits_detect, one per source file */
void limits_detect_beancounters(const char *path, struct limits_snapshot *s);
void limits_detect_cgroup(const char *root, struct limits_snapshot *s);
/* Read the cgroup of process pid from now on (0: our own). */
void limits_cgroup_view(long pid);
void limits_detect_rlimit(struct limits_snapshot *s);
/* a source that knows a cap and maybe a use, no maxheld/failcnt (cgroup, rlimit) */
void limits_set_plain(struct limits_snapshot *s, enum limits_res k, long long limit,
    long long held, const char *source);
void limits_snapshot_warn(struct limits_snapshot *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* read a small file into buf (NUL-terminated); length, or -1 with errno */
long limits_read_file(const char *path, char *buf, size_t size);

/* ---- the budget: pure arithmetic over a snapshot ---- */

enum limits_pool {
	LP_TCP,        /* TCP sockets */
	LP_OTHER,      /* non-TCP sockets */
	LP_FD,         /* all descriptors */
	LP_MEM,        /* bytes through core/mem.c */
	LP_COUNT
};

/* frugal's own use, which is part of the container's held */
struct limits_own {
	long long tcp, other, fd;   /* descriptors taken */
	long long mem;              /* all private memory: allocator + fixed (below) */
	long long mem_fixed;        /* what the allocator does not see: thread stacks, libraries'
	                             * data, helper processes; measured, 0 = not yet */
	long long sib_fd, sib_other;/* the master's and the helpers' descriptors and non-TCP
	                             * sockets: frugal's too, in container-wide limits */
	long long sessions;
};

/* Descriptors never charged through limits_take: stdio, the log, the
 * listener's spare fd, libraries' own. Kept below RLIMIT_NOFILE. */
#define LIMITS_NOFILE_RESERVE 16
/* Charged descriptors that do not grow with load: listeners, the spool
 * directory, maps, worker pipes, the resolver's socket. */
#define LIMITS_FIXED_FDS      16
#define LIMITS_TCP_REFUSAL    1    /* TCP sockets of the pool kept for the 421 to a client over it */
#define LIMITS_FIXED_MEM      (4LL << 20)   /* fixed overhead assumed until it is measured */
#define LIMITS_SESSION_MEM    4096          /* struct session, line buffers */
/*
 * What TLS adds to a session, through the allocator (OpenSSL's memory is
 * charged there): 14.1 KiB held by an idle TLS 1.3 session after EHLO
 * (OpenSSL 3.0, measured over 200 sessions with SSL_MODE_RELEASE_BUFFERS),
 * plus one 16.7 KiB record buffer while it reads or writes.
 */
#define LIMITS_TLS_SESSION_MEM (32LL << 10)
#define LIMITS_DELIVERY_FDS   2             /* a spool file and a Maildir file or a socket */
#define LIMITS_DELIVERY_MEM   (64LL << 10)
/*
 * What TLS adds to an outbound connection: 32.0 KB held by an idle TLS 1.3
 * client connection (OpenSSL 3.0, tests/unit/test_tls_client.c: the
 * server's certificate and session are kept), plus one 16.7 KiB record
 * buffer while it reads or writes.
 */
#define LIMITS_TLS_CLIENT_MEM (48LL << 10)
#define LIMITS_DELIVERY_MAX   20            /* auto never goes past this */
#define LIMITS_SESSIONS_MAX   10000         /* auto when nothing at all bounds sessions */
#define LIMITS_USEFUL_SESSIONS 10           /* below this the report warns */
/* kernel defaults (tcp_wmem/tcp_rmem middle values) used as the cost of a
 * session whose buffers frugal does not set */
#define LIMITS_KERNEL_SNDBUF  16384
#define LIMITS_KERNEL_RCVBUF  131072
/* SO_SNDBUF/SO_RCVBUF values frugal sets (the kernel charges twice that) */
#define LIMITS_BUF_MIN        4096
#define LIMITS_BUF_MAX        65536

struct limits_budget {
	long long pool[LP_COUNT];          /* frugal's budget per pool; LIMITS_UNLIMITED */
	enum limits_res pool_by[LP_COUNT]; /* the resource that set it; LR_COUNT if none */
	long long res_budget[LR_COUNT];    /* frugal's budget per resource; -1 not applicable */
	long long sessions;                /* smtpd concurrency */
	const char *sessions_by;           /* "numtcpsock", "configured", "no limit found"... */
	long long deliveries;
	const char *deliveries_by;
	int sndbuf, rcvbuf;                /* SO_SNDBUF / SO_RCVBUF for sessions; 0 = kernel's */
};

/* One resource's budget: share of the limit, shrunk so that the container
 * keeps `reserve` percent free given what others hold. */
long long limits_res_budget(long long limit, long long held, long long own, int share, int reserve);
void limits_compute(const struct limits_params *p, const struct limits_snapshot *s,
    const struct limits_own *own, struct limits_budget *b);

/*
 * Stress evaluation with hysteresis: on at threshold percent of the session
 * limit or of a container limit (numtcpsock, numothersock, numfile, memory),
 * off below threshold - LIMITS_STRESS_HYSTERESIS. Returns the new state and
 * says why in `why` ("sessions 160/200", "numtcpsock 300/360").
 */
#define LIMITS_STRESS_HYSTERESIS 10
int limits_stress_eval(int was_on, int threshold, const struct limits_snapshot *s,
    long long sessions, long long session_limit, char *why, size_t whylen);

/* ---- the status file the daemon writes for `frugal limits` ---- */

#define LIMITS_STATUS_NAME "status/limits.status"   /* under queue_directory */

struct limits_status {
	long pid;
	long long time, started;
	struct limits_own own;
	long long fd_kernel;                /* /proc/PID/fd entries when own.fd was counted; -1 unknown */
	long long sessions_limit, deliveries_limit;
	int stress;
	long long log_lost;                 /* log lines the daemon could not write since start (core/log.h) */
	long long failcnt_start[LR_COUNT];  /* -1 unknown */
	long long pool[LP_COUNT];
};
/* Text form, "key value" lines; parse is pure. */
int limits_status_format(const struct limits_status *st, char *buf, size_t len);
int limits_status_parse(const char *buf, size_t len, struct limits_status *st);

/* Budget internals tests drive without a configuration or a loop. */
int  limits_init_params(struct ev_loop *loop, const struct limits_params *p);
const struct limits_snapshot *limits_current_snapshot(void);
const struct limits_budget *limits_current_budget(void);
/* Replace detection (tests): the snapshot every sample returns. NULL: real. */
void limits_set_detect_override(void (*fn)(const struct limits_params *, struct limits_snapshot *));

#endif
