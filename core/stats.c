/* core/stats.c: see stats.h */
#include "core/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const stats_name[STATS_COUNT] = {
	"received", "delivered", "deferred", "bounced", "rejected", "sessions_peak", "inflight", "active",
	"screen_refused", "screen_passed",
};

static long long counters[STATS_COUNT];

void stats_inc(enum stats_counter c)
{
	__atomic_add_fetch(&counters[c], 1, __ATOMIC_RELAXED);
}

void stats_set(enum stats_counter c, long long v)
{
	__atomic_store_n(&counters[c], v, __ATOMIC_RELAXED);
}

void stats_peak(enum stats_counter c, long long v)
{
	long long cur = __atomic_load_n(&counters[c], __ATOMIC_RELAXED);

	while (cur < v && !__atomic_compare_exchange_n(&counters[c], &cur, v, 0,
	    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

long long stats_get(enum stats_counter c)
{
	return __atomic_load_n(&counters[c], __ATOMIC_RELAXED);
}

int stats_format(const long long v[STATS_COUNT], char *buf, size_t len)
{
	size_t off = 0;
	int k, n;

	for (k = 0; k < STATS_COUNT; k++) {
		n = snprintf(buf + off, len - off, "stat %s %lld\n", stats_name[k], v[k]);
		if (n < 0 || (size_t)n >= len - off)
			return -1;
		off += (size_t)n;
	}
	return (int)off;
}

void stats_parse(const char *buf, size_t len, long long v[STATS_COUNT])
{
	const char *p = buf, *end = buf + len;
	int k;

	for (k = 0; k < STATS_COUNT; k++)
		v[k] = -1;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		char line[128];
		size_t n = (size_t)(le - p);

		if (n < sizeof line && n > 5 && memcmp(p, "stat ", 5) == 0) {
			char *sp;

			memcpy(line, p + 5, n - 5);
			line[n - 5] = '\0';
			if ((sp = strchr(line, ' ')) != NULL) {
				*sp = '\0';
				for (k = 0; k < STATS_COUNT; k++)
					if (strcmp(line, stats_name[k]) == 0)
						v[k] = strtoll(sp + 1, NULL, 10);
			}
		}
		p = nl ? nl + 1 : end;
	}
}
