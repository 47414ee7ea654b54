/*
 * tests/unit/test_worker.c: core/worker.h, the pools. Every job's `work`
 * runs once on a worker thread, its `done` once on the loop thread after
 * it, in completion order (with one thread: submission order); a class
 * whose threads are all blocked does not hold up another class; shutdown
 * runs what finished. Many jobs from the loop while the workers complete
 * others at once: the lock-free done stack must lose none.
 */
#include <check.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>

#include "core/worker.h"

#define JOBS 20000

struct tjob {
	struct worker_job wj;
	int idx;
	int worked;            /* set by work */
	int done;              /* set by done */
	pthread_t worker;
};

static pthread_t loop_thread;
static struct tjob *jobs;
static int ndone, bad, order_bad, last_done = -1;
static unsigned long spin_sink;
static sem_t gate;         /* a job of the delivery class blocks on it */
static int gate_waiting;

static void t_work(struct worker_job *wj)
{
	struct tjob *j = (struct tjob *)wj;
	unsigned long i;

	for (i = 0; i < (unsigned long)(j->idx % 64) * 50; i++)   /* uneven work */
		__atomic_add_fetch(&spin_sink, 1, __ATOMIC_RELAXED);
	j->worker = pthread_self();
	__atomic_add_fetch(&j->worked, 1, __ATOMIC_RELAXED);
}

static void t_done(struct worker_job *wj)
{
	struct tjob *j = (struct tjob *)wj;

	if (!pthread_equal(pthread_self(), loop_thread) || pthread_equal(j->worker, loop_thread) ||
	    j->worked != 1 || j->done++ != 0)
		bad++;
	ndone++;
}

static void t_done_ordered(struct worker_job *wj)
{
	struct tjob *j = (struct tjob *)wj;

	if (j->idx != last_done + 1)
		order_bad++;
	last_done = j->idx;
	t_done(wj);
}

static void run_until(struct ev_loop *loop, int n)
{
	while (ndone < n)
		ev_run(loop, EVRUN_ONCE);
}

START_TEST(every_job_once)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	int i, k;

	loop_thread = pthread_self();
	ndone = bad = 0;
	ck_assert_ptr_nonnull(jobs = calloc(JOBS, sizeof *jobs));
	ck_assert_int_eq(worker_init(loop, (const int[WORKER_CLASSES]){ 4, 8, 2 }), 0);
	ck_assert_int_eq(worker_threads(), 14);
	/* in bursts, so completions land while the loop is submitting and while it runs dones */
	for (i = 0; i < JOBS; i += 500) {
		for (k = i; k < i + 500; k++) {
			jobs[k].idx = k;
			jobs[k].wj.work = t_work;
			jobs[k].wj.done = t_done;
			worker_submit((enum worker_class)(k % WORKER_CLASSES), &jobs[k].wj);
		}
		ev_run(loop, EVRUN_NOWAIT);
	}
	run_until(loop, JOBS);
	ck_assert_int_eq(worker_pending(), 0);
	ck_assert_int_eq(bad, 0);
	for (i = 0; i < JOBS; i++)
		ck_assert_int_eq(jobs[i].done, 1);
	worker_shutdown();
	ck_assert_int_eq(worker_threads(), 0);
	free(jobs);
	ev_loop_destroy(loop);
}
END_TEST

/* one thread: jobs complete in the order submitted, and their dones must run in that order */
START_TEST(completion_order)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	int i;

	loop_thread = pthread_self();
	ndone = bad = order_bad = 0;
	last_done = -1;
	ck_assert_ptr_nonnull(jobs = calloc(JOBS, sizeof *jobs));
	ck_assert_int_eq(worker_init(loop, (const int[WORKER_CLASSES]){ 0, 1, 0 }), 0);
	for (i = 0; i < JOBS; i++) {
		jobs[i].idx = i;
		jobs[i].wj.work = t_work;
		jobs[i].wj.done = t_done_ordered;
		worker_submit(WORKER_DELIVERY, &jobs[i].wj);
		if (i % 97 == 0)
			ev_run(loop, EVRUN_NOWAIT);
	}
	run_until(loop, JOBS);
	ck_assert_int_eq(bad, 0);
	ck_assert_int_eq(order_bad, 0);
	worker_shutdown();
	free(jobs);
	ev_loop_destroy(loop);
}
END_TEST

static void gate_work(struct worker_job *wj)
{
	__atomic_store_n(&gate_waiting, 1, __ATOMIC_RELEASE);
	sem_wait(&gate);
	t_work(wj);
}

/* the delivery class's only thread is blocked: commits still complete; shutdown waits, then runs its done */
START_TEST(classes_independent)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct tjob blocked = { .idx = 0 }, commits[100];
	int i;

	loop_thread = pthread_self();
	ndone = bad = 0;
	gate_waiting = 0;
	ck_assert_int_eq(sem_init(&gate, 0, 0), 0);
	ck_assert_int_eq(worker_init(loop, (const int[WORKER_CLASSES]){ 1, 1, 0 }), 0);
	blocked.wj.work = gate_work;
	blocked.wj.done = t_done;
	worker_submit(WORKER_DELIVERY, &blocked.wj);
	for (i = 0; i < 100; i++) {
		commits[i] = (struct tjob){ .idx = i + 1 };
		commits[i].wj.work = t_work;
		commits[i].wj.done = t_done;
		worker_submit(WORKER_COMMIT, &commits[i].wj);
	}
	run_until(loop, 100);
	ck_assert_int_eq(blocked.done, 0);
	ck_assert_int_eq(worker_pending(), 1);
	while (!__atomic_load_n(&gate_waiting, __ATOMIC_ACQUIRE))
		sched_yield();
	sem_post(&gate);
	worker_shutdown();   /* joins the thread, then runs the done that finished */
	ck_assert_int_eq(blocked.done, 1);
	ck_assert_int_eq(bad, 0);
	ck_assert_int_eq(worker_pending(), 0);
	sem_destroy(&gate);
	ev_loop_destroy(loop);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker");
	TCase *t = tcase_create("core");
	SRunner *r;
	int failed;

	tcase_set_timeout(t, 120);
	tcase_add_test(t, every_job_once);
	tcase_add_test(t, completion_order);
	tcase_add_test(t, classes_independent);
	suite_add_tcase(s, t);
	r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
