/*
 * tests/fuzz/fuzz_greylist_store.c: libFuzzer target for the greylist store
 * (smtpd/greylist.c): the input is a store file as the daemon reads it at
 * start (the file sits in the queue directory; a crash, a full disk or an
 * admin's editor may have left anything in it). Invariants: loading never
 * overruns, the table never holds more than its size, every record the
 * parser takes formats back to a line it takes again with the same fields,
 * and the loaded table answers lookups.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/greylist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct greylist_times t = { 300, 2 * 86400, 35 * 86400 };
	struct greylist *g = greylist_new(64);
	const char *p = (const char *)data, *end = p + size, *nl;
	unsigned long bad = 0;
	uint32_t age;
	long n;

	if (g == NULL)
		return 0;
	n = greylist_load(g, p, size, 1700000000u, &t, &bad);
	if (n > 64 || greylist_used(g) > greylist_capacity(g) || (n < 0 && greylist_used(g) != 0))
		abort();
	(void)greylist_check(g, 0x0123456789abcdefULL, 1700000001u, &t, &age);
	for (; p < end; p = nl + 1) {
		struct greylist_record r, r2;
		char line[128];
		int len;

		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			nl = end;
		if (greylist_parse_record(p, (size_t)(nl - p), &r) < 0)
			continue;
		len = greylist_format_record(line, sizeof line, &r);
		if (len <= 1 || (size_t)len >= sizeof line || line[len - 1] != '\n')
			abort();
		if (greylist_parse_record(line, (size_t)len - 1, &r2) < 0 || r2.key != r.key || r2.first != r.first ||
		    r2.last != r.last || r2.passed != r.passed)
			abort();
	}
	greylist_free(g);
	return 0;
}
