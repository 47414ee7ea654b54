/*
 * core/worker.h: small pools of threads for the blocking work that must not
 * stall the loop (syncs, Maildir writes, later password hashing). A job is
 * embedded in the caller's struct (no allocation); `work` runs on a worker
 * thread and must touch nothing the loop owns; `done` runs back on the loop.
 *
 * Each class of work has its own threads and queue, so one class never
 * waits behind another: a spool commit (a client waiting for its 250) never
 * queues behind Maildir deliveries, however many are pending.
 *
 * Thread stacks are sized explicitly (WORKER_STACK): glibc's default of
 * 8 MiB each is private virtual memory that OpenVZ's privvmpages charges.
 */
#ifndef FRUGAL_CORE_WORKER_H
#define FRUGAL_CORE_WORKER_H

#include <ev.h>

enum worker_class {
	WORKER_COMMIT,     /* spool commits: the 250s wait for these */
	WORKER_DELIVERY,   /* deliveries and their marks */
	WORKER_AUTH,       /* password checks: CPU and memory bound, run at a lower priority */
	WORKER_CLASSES
};

#define WORKER_STACK (256 * 1024)   /* the deepest job (a Maildir copy) uses under 100 KiB */

struct worker_job {
	void (*work)(struct worker_job *);  /* on a worker thread (may use mem_*, which is thread-safe) */
	void (*done)(struct worker_job *);  /* on the loop thread */
	struct worker_job *next;            /* pool's queue link */
};

/* nthreads[c]: threads for class c (0: a class this process never submits to). 0 or -1 (errno). */
int  worker_init(struct ev_loop *loop, const int nthreads[WORKER_CLASSES]);
void worker_submit(enum worker_class c, struct worker_job *job);
int  worker_pending(void);  /* jobs submitted and not yet done, all classes */
int  worker_threads(void);  /* threads running, all classes */
void worker_shutdown(void); /* waits for running jobs */

#endif
