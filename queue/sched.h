/*
 * queue/sched.h: the scheduler's arithmetic, apart from any I/O so that a
 * unit test can drive it on a simulated clock: destinations (one per
 * transport and next hop) with their wait lists, the concurrency window
 * with Postfix's slow start and failed-cohort rule, dead destinations, and
 * retry backoff. Only the queue room uses it (qmgr.c); nothing here
 * allocates on behalf of a job: jobs embed their struct sched_link.
 *
 * Time is a double in seconds given by the caller; nothing here reads a clock.
 */
#ifndef FRUGAL_QUEUE_SCHED_H
#define FRUGAL_QUEUE_SCHED_H

#include <stddef.h>

#define SCHED_KEY_MAX 320      /* "transport:nexthop", bounded */

struct sched_link {
	struct sched_link *next;
};

/* Per transport, from the configuration (TRANSPORT_destination_* overrides applied). */
struct sched_params {
	int    initial;            /* initial_destination_concurrency */
	int    limit;              /* *_destination_concurrency_limit (0: no limit of its own) */
	int    rcpt_limit;         /* *_destination_recipient_limit */
	double cohort_limit;       /* failed pseudo-cohorts after which the destination is dead */
	double dead_time;          /* how long a dead destination is remembered (minimal_backoff_time) */
};

struct sched_dest {
	char   key[SCHED_KEY_MAX];
	struct sched_params p;
	double window;             /* concurrency allowed now: slow start between 1 and p.limit */
	double failed_cohorts;     /* consecutive failures, in pseudo-cohorts (1/window each) */
	int    active;             /* jobs in flight */
	int    nwait;              /* jobs waiting for a slot */
	double dead_until;         /* > now: every job is deferred without an attempt */
	char   dead_reason[256];
	struct sched_link *wait_head, **wait_tail;
	struct sched_dest *hnext;  /* hash chain */
	struct sched_dest *rnext;  /* ready ring: destinations with waiting jobs */
	int    on_ring;
};

struct sched;

struct sched *sched_new(void);              /* NULL on allocation failure */
void sched_free(struct sched *s);           /* frees every destination (their jobs are the caller's) */
int  sched_ndests(const struct sched *s);

/* Find or create the destination; NULL on allocation failure. Params are refreshed from p. */
struct sched_dest *sched_dest(struct sched *s, const char *transport, const char *nexthop,
    const struct sched_params *p);
/* Queue a job behind the destination's slots. */
void sched_wait(struct sched *s, struct sched_dest *d, struct sched_link *job);

/*
 * The next job to run, round-robin over destinations: one whose destination
 * has a free slot (its window, and `room` more jobs in all), or one whose
 * destination is dead (*dead = 1: complete it as deferred, no attempt).
 * NULL when none may run now. With room <= 0 only dead-destination jobs come out.
 */
struct sched_link *sched_next(struct sched *s, double now, int room, struct sched_dest **dp, int *dead);

/* A job of d starts (sched_next already counted it) / ended. */
void sched_done(struct sched *s, struct sched_dest *d, int failed, const char *reason, double now);
int  sched_dead(const struct sched_dest *d, double now);
/* Free destinations with nothing active, nothing waiting and not dead (bounded memory). */
void sched_reap(struct sched *s, double now);

/* Retry backoff: the delay after `prev` seconds (0: first deferral), between min and max. */
long sched_backoff(long prev, long min, long max);

#endif
