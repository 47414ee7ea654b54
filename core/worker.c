/*
 * core/worker.c: the worker pools (see worker.h). Each class has a FIFO,
 * its own lock and its own threads; finished jobs of every class go on one
 * lock-free stack, and an ev_async wakes the loop, which takes the whole
 * stack at once and runs the `done` callbacks in completion order.
 *
 * Why no single lock: with one mutex for every queue and the done list,
 * the loop's submits, the workers' pops and their completions all fought
 * for it (strace at 1,500 msg/s: six futex calls per message in the
 * pool alone, each a system call and often a context switch, which on a
 * paravirtualised guest is the most expensive thing frugal does). Now a
 * pool's lock is held only to queue or take a job, the signal is sent
 * after it is released (the woken thread does not wake into a held
 * lock), and a completion is one compare-and-swap.
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>

#define MAX_THREADS 32   /* per class */

struct pool {
	pthread_mutex_t mu;        /* guards head, tail, idle, stopping */
	pthread_cond_t cv;
	struct worker_job *head, *tail;
	int idle;                  /* threads waiting on cv */
	int stopping;
	pthread_t threads[MAX_THREADS];
	int nthreads;
};

static struct pool pools[WORKER_CLASSES] = {
	[0 ... WORKER_CLASSES - 1] = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER },
};
static struct worker_job *done_top;   /* finished jobs, newest first (atomic; the loop takes all) */
static int pending;                   /* loop only */
static struct ev_loop *wloop;
static ev_async wake;

/* a finished job: pushed by its worker; whoever makes the stack non-empty wakes the loop */
static void push_done(struct worker_job *job)
{
	struct worker_job *top = __atomic_load_n(&done_top, __ATOMIC_RELAXED);

	do
		job->next = top;
	while (!__atomic_compare_exchange_n(&done_top, &top, job, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
	/*
	 * A later pusher sees a non-empty stack and relies on this wake-up; the
	 * loop takes the whole stack when it comes, so none is lost (and one that
	 * finds it already taken is a harmless extra wake-up).
	 */
	if (top == NULL)
		ev_async_send(wloop, &wake);
}

static void *worker_main(void *arg)
{
	struct pool *p = arg;
	struct worker_job *job;

	/* password checks yield the CPU to the loop and the commits (per-thread nice on Linux) */
	if (p == &pools[WORKER_AUTH])
		(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->head && !p->stopping) {
			p->idle++;
			pthread_cond_wait(&p->cv, &p->mu);
			p->idle--;
		}
		if (!p->head)
			break;   /* stopping, and the queue is drained */
		job = p->head;
		if ((p->head = job->next) == NULL)
			p->tail = NULL;
		pthread_mutex_unlock(&p->mu);
		job->work(job);
		push_done(job);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct worker_job *list, *next, *fifo = NULL;

	(void)loop; (void)w; (void)revents;
	list = __atomic_exchange_n(&done_top, NULL, __ATOMIC_ACQUIRE);
	/* the stack is newest first: reverse it, so `done` runs in completion order */
	for (; list; list = next) {
		next = list->next;
		list->next = fifo;
		fifo = list;
	}
	for (; fifo; fifo = next) {
		next = fifo->next;
		pending--;
		fifo->done(fifo);
	}
}

int worker_init(struct ev_loop *loop, const int nthreads[WORKER_CLASSES])
{
	pthread_attr_t attr;
	int c, i, err;

	wloop = loop;
	ev_async_init(&wake, wake_cb);
	ev_async_start(loop, &wake);
	ev_unref(loop); /* the pool alone must not keep the loop alive */
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, WORKER_STACK);
	for (c = 0; c < WORKER_CLASSES; c++) {
		struct pool *p = &pools[c];
		int n = nthreads[c] < 0 ? 0 : nthreads[c] > MAX_THREADS ? MAX_THREADS : nthreads[c];

		p->head = p->tail = NULL;
		p->idle = p->stopping = 0;
		for (i = 0; i < n; i++) {
			if ((err = pthread_create(&p->threads[i], &attr, worker_main, p)) != 0) {
				/* fewer threads is still a working pool; none is not */
				if (i == 0) {
					pthread_attr_destroy(&attr);
					errno = err;
					return -1;
				}
				break;
			}
		}
		p->nthreads = i;
	}
	pthread_attr_destroy(&attr);
	return 0;
}

void worker_submit(enum worker_class c, struct worker_job *job)
{
	struct pool *p = &pools[(unsigned)c < WORKER_CLASSES ? c : WORKER_COMMIT];
	int idle;

	job->next = NULL;
	pending++;
	pthread_mutex_lock(&p->mu);
	if (p->tail)
		p->tail->next = job;
	else
		p->head = job;
	p->tail = job;
	idle = p->idle;
	pthread_mutex_unlock(&p->mu);
	/*
	 * After the unlock: the thread woken takes the lock at once instead of
	 * sleeping on it again. With none idle, a busy thread finds the job when
	 * it comes back for the next one (it checks the queue under the lock).
	 */
	if (idle)
		pthread_cond_signal(&p->cv);
}

int worker_pending(void) { return pending; }

int worker_threads(void)
{
	int c, n = 0;

	for (c = 0; c < WORKER_CLASSES; c++)
		n += pools[c].nthreads;
	return n;
}

void worker_shutdown(void)
{
	int c, i;

	for (c = 0; c < WORKER_CLASSES; c++) {
		pthread_mutex_lock(&pools[c].mu);
		pools[c].stopping = 1;
		pthread_cond_broadcast(&pools[c].cv);
		pthread_mutex_unlock(&pools[c].mu);
	}
	for (c = 0; c < WORKER_CLASSES; c++) {
		for (i = 0; i < pools[c].nthreads; i++)
			pthread_join(pools[c].threads[i], NULL);
		pools[c].nthreads = 0;
	}
	if (wloop) {
		ev_ref(wloop);
		ev_async_stop(wloop, &wake);
		wake_cb(wloop, &wake, 0); /* run what finished */
	}
}
