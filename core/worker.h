/*
 * core/worker.h: a tiny pool of threads for the blocking work that must not
 * stall the loop (fsync, Maildir writes, password hashing). A job is
 * embedded in the caller's struct (no allocation); `work` runs on a worker
 * thread and must touch nothing the loop owns; `done` runs back on the loop.
 */
#ifndef FRUGAL_CORE_WORKER_H
#define FRUGAL_CORE_WORKER_H

#include <ev.h>

struct worker_job {
	void (*work)(struct worker_job *);  /* on a worker thread (may use mem_*, which is thread-safe) */
	void (*done)(struct worker_job *);  /* on the loop thread */
	struct worker_job *next;            /* pool's queue link */
};

int  worker_init(struct ev_loop *loop, int nthreads); /* 0 or -1 (errno) */
void worker_submit(struct worker_job *job);
int  worker_pending(void);  /* jobs submitted and not yet done */
void worker_shutdown(void); /* waits for running jobs */

#endif
