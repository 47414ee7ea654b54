/*
 * tests/fuzz/fuzz_mta_sts.c: libFuzzer target for MTA-STS's parsers
 * (queue/mta_sts_policy.c). The first byte picks one: the _mta-sts TXT
 * record, the policy file (then every pattern is matched against a host name
 * taken from the input), or the HTTP response (parsed at every prefix length,
 * as it arrives, and once more with the close). The invariants: an id is
 * 1..32 alphanumerics; a policy has at most MTA_STS_MX_MAX patterns, each
 * NUL-terminated inside mx, max_age at most a year; a body is at most 64 KiB
 * and a complete answer never turns incomplete when more bytes come.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/mta_sts.h"

static char body[MTA_STS_BODY_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in;
	size_t n, i;
	char why[200];

	if (size == 0)
		return 0;
	in = (const char *)data + 1;
	n = size - 1;
	switch (data[0] % 3) {
	case 0: {
		char id[MTA_STS_ID_MAX + 1];
		if (mta_sts_txt_parse(in, n, id) == 0) {
			size_t l = strlen(id);
			if (l == 0 || l > MTA_STS_ID_MAX)
				abort();
			for (i = 0; i < l; i++)
				if (!isalnum((unsigned char)id[i]))
					abort();
		}
		break;
	}
	case 1: {
		struct mta_sts_policy p, q;
		const char *nl = memchr(in, '\n', n);
		char host[300];
		size_t hl = nl ? (size_t)(nl - in) : 0, off = 0;
		int k;

		if (hl >= sizeof host)
			hl = sizeof host - 1;
		memcpy(host, in, hl);
		host[hl] = '\0';
		if (mta_sts_policy_parse(in, n, &p, why, sizeof why) != 0)
			break;
		if (p.nmx > MTA_STS_MX_MAX || p.max_age < 0 || p.max_age > MTA_STS_MAX_AGE)
			abort();
		for (k = 0; k < p.nmx; k++) {
			const char *e = memchr(p.mx + off, '\0', p.mxlen - off);
			if (off >= p.mxlen || e == NULL)
				abort();
			off = (size_t)(e - p.mx) + 1;
		}
		if (off != p.mxlen)
			abort();
		(void)mta_sts_mx_match(&p, host);
		if (mta_sts_policy_copy(&q, &p) == 0) {
			if (q.mxlen != p.mxlen || (p.mxlen && memcmp(q.mx, p.mx, p.mxlen) != 0))
				abort();
			mta_sts_policy_free(&q);
		}
		mta_sts_policy_free(&p);
		break;
	}
	default: {
		size_t blen;
		int done = 0, rc;

		for (i = 0; i <= n; i++) {
			rc = mta_sts_http_parse(in, i, 0, body, &blen, why, sizeof why);
			if (rc == 1) {
				if (blen > MTA_STS_BODY_MAX)
					abort();
				done = 1;
			} else if (done && rc == 0)
				abort();
		}
		rc = mta_sts_http_parse(in, n, 1, body, &blen, why, sizeof why);
		if (rc == 1 && blen > MTA_STS_BODY_MAX)
			abort();
		if (rc == 0)
			abort();     /* with the close, an answer is complete or refused */
		break;
	}
	}
	return 0;
}
