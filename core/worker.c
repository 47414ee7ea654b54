/*
 * core/worker.c: the worker pool (see worker.h). Threads take jobs from one
 * FIFO; finished jobs go on a done list and an ev_async wakes the loop,
 * which runs the `done` callbacks in completion order.
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#define MAX_THREADS 16

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct worker_job *todo_head, *todo_tail, *done_head, *done_tail;
static pthread_t threads[MAX_THREADS];
static int nthreads_running, stopping, pending;
static struct ev_loop *wloop;
static ev_async wake;

static void *worker_main(void *arg)
{
	struct worker_job *job;

	(void)arg;
	pthread_mutex_lock(&mu);
	for (;;) {
		while (!todo_head && !stopping)
			pthread_cond_wait(&cv, &mu);
		if (!todo_head && stopping)
			break;
		job = todo_head;
		todo_head = job->next;
		if (!todo_head)
			todo_tail = NULL;
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

int worker_init(struct ev_loop *loop, int n)
{
	int i, err;

	if (n < 1)
		n = 1;
	if (n > MAX_THREADS)
		n = MAX_THREADS;
	wloop = loop;
	stopping = 0;
	ev_async_init(&wake, wake_cb);
	ev_async_start(loop, &wake);
	ev_unref(loop); /* the pool alone must not keep the loop alive */
	for (i = 0; i < n; i++) {
		if ((err = pthread_create(&threads[i], NULL, worker_main, NULL)) != 0) {
			if (i == 0) {
				errno = err;
				return -1;
			}
			break; /* fewer threads is still a working pool */
		}
	}
	nthreads_running = i;
	return 0;
}

void worker_submit(struct worker_job *job)
{
	job->next = NULL;
	pending++;
	pthread_mutex_lock(&mu);
	if (todo_tail)
		todo_tail->next = job;
	else
		todo_head = job;
	todo_tail = job;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
}

int worker_pending(void) { return pending; }

void worker_shutdown(void)
{
	int i;

	pthread_mutex_lock(&mu);
	stopping = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	for (i = 0; i < nthreads_running; i++)
		pthread_join(threads[i], NULL);
	nthreads_running = 0;
	if (wloop) {
		ev_ref(wloop);
		ev_async_stop(wloop, &wake);
		wake_cb(wloop, &wake, 0); /* run what finished */
	}
}
