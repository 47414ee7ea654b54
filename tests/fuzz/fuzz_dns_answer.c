/*
 * tests/fuzz/fuzz_dns_answer.c: libFuzzer target for what frugal makes of a
 * DNS answer (core/dns.c dns_parse_answer): c-ares's record parsers, then
 * frugal's own TTL walk (answer_ttl: names, pointers, the SOA minimum) and
 * the packing of the records into one bounded block. Input: one byte
 * choosing the query type and c-ares's status, then the raw message as a
 * server sent it. Every answer must respect the documented bounds.
 */
#include <ares.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum dns_type types[] = { DNS_A, DNS_AAAA, DNS_MX, DNS_PTR, DNS_TXT };
	static const int statuses[] = { ARES_SUCCESS, ARES_ENOTFOUND, ARES_ENODATA, ARES_ESERVFAIL };
	struct dns_answer *a;
	int i;

	if (size < 1)
		return 0;
	a = dns_parse_answer(types[data[0] % 5], statuses[(data[0] / 5) % 4], data + 1, (int)(size - 1), 60);
	if (a == NULL)
		return 0;
	if (a->n < 0 || a->n > DNS_MAX_RR || (a->status != DNS_FOUND && a->n != 0) ||
	    (a->status == DNS_FOUND && a->n == 0) || a->why == NULL)
		__builtin_trap();
	if ((a->status == DNS_NXDOMAIN || a->status == DNS_NODATA) && a->ttl > 60)
		__builtin_trap();
	for (i = 0; i < a->n; i++) {
		const struct dns_rr *r = &a->rr[i];
		if (r->text && (r->len > DNS_ANSWER_MAX || r->text[r->len] != '\0'))
			__builtin_trap();
		if ((a->type == DNS_MX || a->type == DNS_PTR) && (r->text == NULL || strlen(r->text) != r->len))
			__builtin_trap();
	}
	dns_answer_free(a);
	return 0;
}
