/*
 * tests/fuzz/fuzz_spf_eval.c: libFuzzer target for a whole SPF check
 * (smtpd/spf.c with libspf2 behind it) against a zone the input describes:
 * the layer, the re-runs, frugal's limits (10 terms, 2 void lookups,
 * SPF_MAX_FETCH, the macro-term guard) and libspf2's record compiler and
 * interpreter on any record. The resolver is fake_dns.c: dns_lookup
 * queues the question and this driver answers it from the zone, outside
 * the call, as the real one does. Input: lines "NAME TYPE VALUE" (TYPE one
 * of A AAAA MX PTR TXT, or "NAME FAIL" for SERVFAIL); the check is for
 * a@z.test from 192.0.2.10 (or 2001:db8::10 when the input starts '6').
 * Every check must end, within its bounds, with a result in range.
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/dns.h"
#include "fake_dns.h"
#include "smtpd/spf.h"

#define ZONE_MAX 64

struct zrec {
	char name[DNS_NAME_MAX + 1];
	enum dns_type type;
	int fail;
	char value[600];
};

static int zone_parse(const uint8_t *data, size_t size, struct zrec *z)
{
	char buf[8192], *line, *save = NULL;
	int n = 0;

	if (size >= sizeof buf)
		size = sizeof buf - 1;
	memcpy(buf, data, size);
	buf[size] = '\0';
	for (line = strtok_r(buf, "\n", &save); line && n < ZONE_MAX; line = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(line, ' '), *tp;
		if (sp == NULL || sp - line > DNS_NAME_MAX || sp == line)
			continue;
		memset(&z[n], 0, sizeof z[n]);
		memcpy(z[n].name, line, (size_t)(sp - line));
		tp = sp + 1;
		if (strncmp(tp, "FAIL", 4) == 0) {
			z[n].fail = 1;
			z[n].type = DNS_TXT;
			n++;
			continue;
		}
		sp = strchr(tp, ' ');
		if (sp == NULL)
			continue;
		*sp = '\0';
		if (strcmp(tp, "A") == 0) z[n].type = DNS_A;
		else if (strcmp(tp, "AAAA") == 0) z[n].type = DNS_AAAA;
		else if (strcmp(tp, "MX") == 0) z[n].type = DNS_MX;
		else if (strcmp(tp, "PTR") == 0) z[n].type = DNS_PTR;
		else if (strcmp(tp, "TXT") == 0) z[n].type = DNS_TXT;
		else continue;
		snprintf(z[n].value, sizeof z[n].value, "%s", sp + 1);
		n++;
	}
	return n;
}

/* Answer one question from the zone (NXDOMAIN, NODATA, SERVFAIL or records). */
static void answer(const struct zrec *z, int nz, const char *name, enum dns_type t, struct dns_answer *a,
    struct dns_rr *rr)
{
	int i, known = 0;

	memset(a, 0, sizeof *a);
	a->type = t;
	a->why = "";
	a->rr = rr;
	for (i = 0; i < nz; i++) {
		if (strcasecmp(z[i].name, name) != 0)
			continue;
		known = 1;
		if (z[i].fail) {
			a->status = DNS_TEMPFAIL;
			a->n = 0;
			return;
		}
		if (z[i].type != t || a->n >= DNS_MAX_RR)
			continue;
		memset(&rr[a->n], 0, sizeof rr[a->n]);
		if (t == DNS_A) {
			if (inet_pton(AF_INET, z[i].value, rr[a->n].addr) != 1)
				continue;
			rr[a->n].family = AF_INET;
		} else if (t == DNS_AAAA) {
			if (inet_pton(AF_INET6, z[i].value, rr[a->n].addr) != 1)
				continue;
			rr[a->n].family = AF_INET6;
		} else {
			rr[a->n].text = z[i].value;
			rr[a->n].len = strlen(z[i].value);
		}
		a->n++;
	}
	a->status = a->n ? DNS_FOUND : known ? DNS_NODATA : DNS_NXDOMAIN;
}

static void done_cb(void *arg)
{
	(*(int *)arg)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct zrec z[ZONE_MAX];
	static struct dns_rr rr[DNS_MAX_RR];
	struct sockaddr_storage ss;
	struct spf_check *c;
	struct dns_answer a;
	int nz, calls = 0, steps = 0, r;

	nz = zone_parse(data, size, z);
	memset(&ss, 0, sizeof ss);
	if (size && data[0] == '6') {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, "2001:db8::10", &s6->sin6_addr);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		inet_pton(AF_INET, "192.0.2.10", &s4->sin_addr);
	}
	if ((c = spf_check_new(fake_dns(), &ss, "helo.z.test", "a@z.test", "mx.example", 1)) == NULL)
		return 0;
	r = spf_check_run(c, done_cb, &calls);
	while (r == 0 && calls == 0) {
		char name[DNS_NAME_MAX + 1];
		enum dns_type t;
		dns_cb cb;
		void *arg;

		if (!fake_dns_pending(name, sizeof name, &t, &cb, &arg))
			__builtin_trap();   /* waiting for nothing: it would never end */
		if (++steps > SPF_MAX_FETCH)
			__builtin_trap();   /* more fetches than the bound */
		answer(z, nz, name, t, &a, rr);
		cb(arg, &a);
	}
	if (!spf_check_done(c) || spf_check_result(c) > SPFR_PERMERROR || spf_check_fetches(c) > SPF_MAX_FETCH ||
	    spf_check_runs(c) > spf_check_fetches(c) + 1 || (r == 0 && calls != 1))
		__builtin_trap();
	spf_check_free(c);
	if (fake_dns_pending(NULL, 0, NULL, NULL, NULL))
		__builtin_trap();   /* a lookup left behind */
	return 0;
}
