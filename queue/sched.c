/*
 * queue/sched.c: destinations, slow start, dead destinations and backoff
 * (see sched.h). Owns the destination structs; never the jobs, which stay
 * the caller's (qmgr.c) and only pass through the wait lists.
 *
 * Slow start is Postfix's (qmgr_queue.c, "concurrency feedback"): a
 * destination starts at initial_destination_concurrency; each delivery that
 * reaches the destination adds 1/window (one more slot per window of
 * successes), each that fails at the destination (connection refused,
 * greeting 4xx, timeout: the agent says so) removes 1/window, never below
 * 1, and counts 1/window of a failed "pseudo-cohort". After
 * cohort_limit consecutive failed cohorts (Postfix's
 * default_destination_concurrency_failed_cohort_limit = 1) the destination
 * is dead for dead_time: its jobs are deferred without an attempt, so a
 * dead host is not tried once per message. A success clears the count.
 */
#include "queue/sched.h"

#include <stdio.h>
#include <string.h>

#include "core/mem.h"

#define SCHED_BUCKETS 256

struct sched {
	struct sched_dest *hash[SCHED_BUCKETS];
	struct sched_dest *ring;   /* last destination served; the ring is circular through rnext */
	int ndests;
};

struct sched *sched_new(void)
{
	return mem_calloc(1, sizeof(struct sched));
}

int sched_ndests(const struct sched *s)
{
	return s->ndests;
}

static unsigned hash_key(const char *k)
{
	unsigned h = 2166136261u;

	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 16777619u;
	return h % SCHED_BUCKETS;
}

void sched_free(struct sched *s)
{
	struct sched_dest *d, *next;
	int i;

	if (s == NULL)
		return;
	for (i = 0; i < SCHED_BUCKETS; i++)
		for (d = s->hash[i]; d; d = next) {
			next = d->hnext;
			mem_free(d);
		}
	mem_free(s);
}

static void set_params(struct sched_dest *d, const struct sched_params *p)
{
	d->p = *p;
	if (d->p.initial < 1)
		d->p.initial = 1;
	if (d->p.limit > 0 && d->p.initial > d->p.limit)
		d->p.initial = d->p.limit;
	if (d->p.limit > 0 && d->window > d->p.limit)
		d->window = d->p.limit;
}

struct sched_dest *sched_dest(struct sched *s, const char *transport, const char *nexthop,
    const struct sched_params *p)
{
	char key[SCHED_KEY_MAX];
	struct sched_dest *d;
	unsigned h;

	/* a longer next hop is cut: two such hops share a window, which is harmless */
	snprintf(key, sizeof key, "%s:%s", transport, nexthop);
	h = hash_key(key);
	for (d = s->hash[h]; d; d = d->hnext)
		if (strcmp(d->key, key) == 0) {
			set_params(d, p);
			return d;
		}
	if ((d = mem_calloc(1, sizeof *d)) == NULL)
		return NULL;
	memcpy(d->key, key, sizeof key);
	set_params(d, p);
	d->window = d->p.initial;
	d->wait_tail = &d->wait_head;
	d->hnext = s->hash[h];
	s->hash[h] = d;
	s->ndests++;
	return d;
}

static void ring_add(struct sched *s, struct sched_dest *d)
{
	if (d->on_ring)
		return;
	d->on_ring = 1;
	if (s->ring == NULL) {
		d->rnext = d;
		s->ring = d;
	} else {
		/* behind the last served: served after every destination already waiting */
		d->rnext = s->ring->rnext;
		s->ring->rnext = d;
		s->ring = d;
	}
}

static void ring_remove(struct sched *s, struct sched_dest *prev, struct sched_dest *d)
{
	d->on_ring = 0;
	if (d->rnext == d) {
		s->ring = NULL;
	} else {
		prev->rnext = d->rnext;
		if (s->ring == d)
			s->ring = prev;
	}
	d->rnext = NULL;
}

void sched_wait(struct sched *s, struct sched_dest *d, struct sched_link *job)
{
	job->next = NULL;
	*d->wait_tail = job;
	d->wait_tail = &job->next;
	d->nwait++;
	ring_add(s, d);
}

int sched_dead(const struct sched_dest *d, double now)
{
	return d->dead_until > now;
}

static int has_slot(const struct sched_dest *d)
{
	if (d->p.limit > 0 && d->active >= d->p.limit)
		return 0;
	return d->active < (int)d->window;
}

struct sched_link *sched_next(struct sched *s, double now, int room, struct sched_dest **dp, int *dead)
{
	struct sched_dest *prev, *d;
	struct sched_link *j;
	int looked = 0, total = s->ndests;

	/* one turn of the ring at most, starting after the destination served last */
	prev = s->ring;
	while (s->ring != NULL && looked++ <= total) {
		d = prev->rnext;
		if (d->nwait == 0) {
			ring_remove(s, prev, d);   /* prev->rnext is now the next one */
			continue;
		}
		*dead = sched_dead(d, now);
		if (*dead || (room > 0 && has_slot(d))) {
			j = d->wait_head;
			if ((d->wait_head = j->next) == NULL)
				d->wait_tail = &d->wait_head;
			j->next = NULL;
			d->nwait--;
			if (!*dead)
				d->active++;
			s->ring = d;           /* the next call starts after it: round-robin */
			if (d->nwait == 0)
				ring_remove(s, prev, d);
			*dp = d;
			return j;
		}
		prev = d;
	}
	return NULL;
}

void sched_done(struct sched *s, struct sched_dest *d, int failed, const char *reason, double now)
{
	(void)s;
	if (d->active > 0)
		d->active--;
	if (!failed) {
		d->failed_cohorts = 0;
		d->window += 1.0 / d->window;
		if (d->p.limit > 0 && d->window > d->p.limit)
			d->window = d->p.limit;
		return;
	}
	d->failed_cohorts += 1.0 / d->window;
	d->window -= 1.0 / d->window;
	if (d->window < 1)
		d->window = 1;
	if (d->p.cohort_limit > 0 && d->failed_cohorts >= d->p.cohort_limit) {
		d->dead_until = now + d->p.dead_time;
		d->failed_cohorts = 0;
		d->window = d->p.initial;   /* a destination that comes back starts slowly again */
		snprintf(d->dead_reason, sizeof d->dead_reason, "%s", reason && *reason ? reason : "destination failed");
	}
}

void sched_reap(struct sched *s, double now)
{
	struct sched_dest **pp, *d;
	int i;

	for (i = 0; i < SCHED_BUCKETS; i++)
		for (pp = &s->hash[i]; (d = *pp) != NULL;) {
			if (d->active == 0 && d->nwait == 0 && !d->on_ring && !sched_dead(d, now) &&
			    d->failed_cohorts == 0) {
				*pp = d->hnext;
				s->ndests--;
				mem_free(d);
			} else {
				pp = &d->hnext;
			}
		}
}

long sched_backoff(long prev, long min, long max)
{
	long b = prev > 0 ? prev * 2 : min;

	if (b > max)
		b = max;
	if (b < min)
		b = min;
	return b;
}
