/*
 * tests/unit/test_sched.c: the scheduler's arithmetic (queue/sched.h) on a
 * simulated clock: slow start grows the window with successes up to the
 * limit, failures shrink it and a failed cohort makes the destination dead
 * for dead_time (its jobs come out as dead, no attempt), round-robin over
 * destinations, the total room, reaping idle destinations, and backoff.
 */
#include <check.h>
#include <stdlib.h>

#include "queue/sched.h"

struct job {
	struct sched_link link;
	int id;
};

static const struct sched_params P = { 2, 5, 50, 1.0, 300.0 };

static struct job *next_job(struct sched *s, double now, int room, struct sched_dest **d, int *dead)
{
	struct sched_link *l = sched_next(s, now, room, d, dead);
	return l ? (struct job *)l : NULL;
}

START_TEST(slow_start_grows_to_limit)
{
	struct sched *s = sched_new();
	struct sched_dest *d = sched_dest(s, "smtp", "example.com", &P), *got;
	struct job jobs[40];
	int i, dead, running = 0, peak = 0;
	struct job *j;

	for (i = 0; i < 40; i++) {
		jobs[i].id = i;
		sched_wait(s, d, &jobs[i].link);
	}
	/* at first only the initial window may run */
	while ((j = next_job(s, 0, 100, &got, &dead)) != NULL)
		running++;
	ck_assert_int_eq(running, 2);
	ck_assert_int_eq(d->active, 2);
	/* complete one at a time, successfully: the window widens to the limit, never past */
	for (i = 0; i < 200 && d->nwait > 0; i++) {
		sched_done(s, d, 0, NULL, 1);
		running--;
		while ((j = next_job(s, 1, 100, &got, &dead)) != NULL) {
			ck_assert(!dead);
			running++;
		}
		if (running > peak)
			peak = running;
	}
	ck_assert_int_eq(peak, 5);
	ck_assert(d->window <= 5.0);
	sched_free(s);
}
END_TEST

START_TEST(failures_shrink_then_dead)
{
	struct sched *s = sched_new();
	struct sched_params p = P;
	struct sched_dest *d, *got;
	struct job jobs[10];
	int i, dead = 0, n;
	struct job *j;

	p.initial = 4;
	d = sched_dest(s, "smtp", "dead.example", &p);
	for (i = 0; i < 10; i++)
		sched_wait(s, d, &jobs[i].link);
	for (n = 0; next_job(s, 0, 100, &got, &dead) != NULL; n++)
		;
	ck_assert_int_eq(n, 4);
	/* 1/window of a cohort per failure: four failures from window 4 pass the limit of 1 */
	sched_done(s, d, 1, "connect to dead.example: Connection refused", 10);
	ck_assert(d->window < 4.0);
	ck_assert(!sched_dead(d, 10));
	for (i = 0; i < 3 && !sched_dead(d, 10); i++)
		sched_done(s, d, 1, "connect to dead.example: Connection refused", 10);
	ck_assert(sched_dead(d, 10));
	ck_assert_str_eq(d->dead_reason, "connect to dead.example: Connection refused");
	/* while dead, waiting jobs come out flagged, with no slot and no attempt */
	j = next_job(s, 11, 0, &got, &dead);
	ck_assert_ptr_nonnull(j);
	ck_assert_int_eq(dead, 1);
	ck_assert_ptr_eq(got, d);
	/* remembered for dead_time (300 s), then it is tried again, slowly */
	ck_assert(sched_dead(d, 309));
	ck_assert(!sched_dead(d, 311));
	sched_free(s);
}
END_TEST

START_TEST(success_clears_failed_cohort)
{
	struct sched *s = sched_new();
	struct sched_dest *d = sched_dest(s, "smtp", "flaky.example", &P);

	d->active = 2;
	sched_done(s, d, 1, "timeout", 0);
	ck_assert(d->failed_cohorts > 0);
	sched_done(s, d, 0, NULL, 0);
	ck_assert(d->failed_cohorts == 0);
	ck_assert(!sched_dead(d, 0));
	sched_free(s);
}
END_TEST

START_TEST(round_robin_and_total_room)
{
	struct sched *s = sched_new();
	struct sched_dest *a = sched_dest(s, "smtp", "a.example", &P);
	struct sched_dest *b = sched_dest(s, "smtp", "b.example", &P), *got;
	struct job ja[3], jb[3];
	int i, dead, na = 0, nb = 0;
	struct job *j;

	for (i = 0; i < 3; i++) {
		sched_wait(s, a, &ja[i].link);
		sched_wait(s, b, &jb[i].link);
	}
	/* room for 2 in all: one from each destination, not two from the first */
	for (i = 0; i < 2; i++) {
		j = next_job(s, 0, 2 - i, &got, &dead);
		ck_assert_ptr_nonnull(j);
		if (got == a)
			na++;
		else
			nb++;
	}
	ck_assert_int_eq(na, 1);
	ck_assert_int_eq(nb, 1);
	/* no room: nothing comes out, though both windows have a slot */
	ck_assert_ptr_null(next_job(s, 0, 0, &got, &dead));
	sched_free(s);
}
END_TEST

START_TEST(reap_idle_only)
{
	struct sched *s = sched_new();
	struct sched_dest *a = sched_dest(s, "local", "u@x", &P);
	struct sched_dest *b = sched_dest(s, "smtp", "busy.example", &P), *got;
	struct job j;
	int dead;

	(void)a;
	sched_wait(s, b, &j.link);
	ck_assert_ptr_nonnull(next_job(s, 0, 1, &got, &dead));
	ck_assert_int_eq(sched_ndests(s), 2);
	sched_reap(s, 0);
	ck_assert_int_eq(sched_ndests(s), 1);   /* the busy one stays */
	sched_done(s, b, 0, NULL, 0);
	sched_reap(s, 0);
	ck_assert_int_eq(sched_ndests(s), 0);
	/* the same destination asked again is a new one, at the initial window */
	b = sched_dest(s, "smtp", "busy.example", &P);
	ck_assert(b->window == 2.0);
	sched_free(s);
}
END_TEST

START_TEST(backoff_doubles_within_bounds)
{
	ck_assert_int_eq(sched_backoff(0, 300, 4000), 300);
	ck_assert_int_eq(sched_backoff(300, 300, 4000), 600);
	ck_assert_int_eq(sched_backoff(2400, 300, 4000), 4000);
	ck_assert_int_eq(sched_backoff(4000, 300, 4000), 4000);
	ck_assert_int_eq(sched_backoff(10, 300, 4000), 300);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int nf;

	tcase_add_test(tc, slow_start_grows_to_limit);
	tcase_add_test(tc, failures_shrink_then_dead);
	tcase_add_test(tc, success_clears_failed_cohort);
	tcase_add_test(tc, round_robin_and_total_room);
	tcase_add_test(tc, reap_idle_only);
	tcase_add_test(tc, backoff_doubles_within_bounds);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf == 0 ? 0 : 1;
}
