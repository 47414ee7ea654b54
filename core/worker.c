/*
 * core/worker.c: the worker pools (see worker.h). Each class has a FIFO
 * and its own threads; finished jobs of every class go on one done list
 * and an ev_async wakes the loop, which runs the `done` callbacks in
 * completion order.
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
	pthread_cond_t cv;
	struct worker_job *head, *tail;
	pthread_t threads[MAX_THREADS];
	int nthreads;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct pool pools[WORKER_CLASSES];
static struct worker_job *done_head, *done_tail;
static int stopping, pending;
static struct ev_loop *wloop;
static ev_async wake;

static void *worker_main(void *arg)
{
	struct pool *p = arg;
	struct worker_job *job;

	/* password checks yield the CPU to the loop and the commits (per-thread nice on Linux) */
	if (p == &pools[WORKER_AUTH])
		(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
	pthread_mutex_lock(&mu);
	for (;;) {
		while (!p->head && !stopping)
			pthread_cond_wait(&p->cv, &mu);
		if (!p->head && stopping)
			break;
		job = p->head;
		if ((p->head = job->next) == NULL)
			p->tail = NULL;
		pthread_mutex_unlock(&mu);
		job->work(job);
		pthread_mutex_lock(&mu);
		job->next = NULL;
		if (done_tail)
			done_tail->next = job;
		else
			done_head = job;
		done_tail = job;
		ev_async_send(wloop, &wake);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct worker_job *list, *next;

	(void)loop; (void)w; (void)revents;
	pthread_mutex_lock(&mu);
	list = done_head;
	done_head = done_tail = NULL;
	pthread_mutex_unlock(&mu);
	for (; list; list = next) {
		next = list->next;
		pending--;
		list->done(list);
	}
}

int worker_init(struct ev_loop *loop, const int nthreads[WORKER_CLASSES])
{
	pthread_attr_t attr;
	int c, i, err;

	wloop = loop;
	stopping = 0;
	ev_async_init(&wake, wake_cb);
	ev_async_start(loop, &wake);
	ev_unref(loop); /* the pool alone must not keep the loop alive */
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, WORKER_STACK);
	for (c = 0; c < WORKER_CLASSES; c++) {
		struct pool *p = &pools[c];
		int n = nthreads[c] < 0 ? 0 : nthreads[c] > MAX_THREADS ? MAX_THREADS : nthreads[c];

		pthread_cond_init(&p->cv, NULL);
		for (i = 0; i < n; i++) {
			if ((err = pthread_create(&p->threads[i], &attr, worker_main, p)) != 0) {
				/* fewer threads is still a working pool; none is not */
				if (i == 0) {
					pthread_attr_destroy(&attr);
					errno = err;
					return -1;
				}
				break; /* fewer threads is still a working pool */
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

	job->next = NULL;
	pending++;
	pthread_mutex_lock(&mu);
	if (p->tail)
		p->tail->next = job;
	else
		p->head = job;
	p->tail = job;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&mu);
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

	pthread_mutex_lock(&mu);
	stopping = 1;
	for (c = 0; c < WORKER_CLASSES; c++)
		pthread_cond_broadcast(&pools[c].cv);
	pthread_mutex_unlock(&mu);
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
