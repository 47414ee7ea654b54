/*
 * tests/fuzz/fuzz_screen_cache.c: libFuzzer target for the screen's pass
 * cache file (smtpd/screen_cache.c), which frugal reads back at start from
 * the queue directory: the record parser on the input as one line, and
 * the postscreen_dnsbl_sites entry parser (site=filter*weight) on it.
 * Invariants: a parsed record formats back and parses to the same record
 * (the save/load round trip loses nothing); nothing reads past the input
 * (the line is not NUL-terminated).
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/screen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct screen_rec r, back;
	char *line = malloc(size ? size : 1), again[160], addr[INET6_ADDRSTRLEN], err[200];
	struct dnsbl_site site;
	int n, weight;

	if (line == NULL)
		return 0;
	memcpy(line, data, size);   /* exactly size bytes: ASan sees any read past them */
	if (screen_cache_parse_line(line, size, &r) == 0) {
		if (r.key[0] != 4 && r.key[0] != 6)
			abort();
		if (inet_ntop(r.key[0] == 4 ? AF_INET : AF_INET6, r.key + 1, addr, sizeof addr) == NULL)
			abort();
		n = snprintf(again, sizeof again, "%s %lld %lld", addr, r.greet_until, r.dnsbl_until);
		if (n <= 0 || (size_t)n >= sizeof again)
			abort();
		if (screen_cache_parse_line(again, (size_t)n, &back) != 0 || memcmp(&r, &back, sizeof r) != 0)
			abort();
	}
	if (size < 512) {
		char *s = malloc(size + 1);

		if (s) {
			memcpy(s, data, size);
			s[size] = '\0';
			if (screen_site_parse(s, &site, &weight, err, sizeof err) == 0 &&
			    (site.zone[0] == '\0' || strlen(site.zone) > DNS_NAME_MAX))
				abort();
			free(s);
		}
	}
	free(line);
	return 0;
}
