/*
 * core/stats.h: the daemon's counters since start, for `frugal status`.
 * Bumped from the loop and from delivery workers, hence atomic; read by the
 * limits sampler, which appends them to the status file it already writes
 * (no socket, nothing the loop waits for).
 */
#ifndef FRUGAL_CORE_STATS_H
#define FRUGAL_CORE_STATS_H

#include <stddef.h>

enum stats_counter {
	STATS_RECEIVED,      /* messages acknowledged with 250 (SMTP) or picked up (maildrop) */
	STATS_DELIVERED,     /* recipients delivered (status=sent) */
	STATS_DEFERRED,      /* delivery attempts deferred (status=deferred) */
	STATS_BOUNCED,       /* recipients bounced or expired */
	STATS_REJECTED,      /* NOQUEUE/queue-id rejects logged by smtpd */
	STATS_SESSIONS_PEAK, /* most SMTP sessions at one time */
	STATS_INFLIGHT,      /* deliveries in flight now */
	STATS_ACTIVE,        /* messages the scheduler holds in memory (Postfix's active queue) */
	STATS_SCREEN_REFUSED,/* port 25 clients refused before a session (pregreet, DNS lists, hang-up) */
	STATS_SCREEN_PASSED, /* port 25 clients that passed the screen and became sessions */
	STATS_COUNT
};

extern const char *const stats_name[STATS_COUNT];   /* keys in the status file: "received", ... */

void      stats_inc(enum stats_counter c);
void      stats_set(enum stats_counter c, long long v);
void      stats_peak(enum stats_counter c, long long v);   /* raise to v if below */
long long stats_get(enum stats_counter c);

/* "stat NAME VALUE" lines (pure): format all of v; parse fills v (absent: -1). */
int  stats_format(const long long v[STATS_COUNT], char *buf, size_t len);
void stats_parse(const char *buf, size_t len, long long v[STATS_COUNT]);

#endif
