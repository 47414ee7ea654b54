/*
 * tests/fuzz/fuzz_dmarc.c: libFuzzer target for smtpd/dmarc.c's parsers of
 * text from DNS and from files, and smtpd/authres.c's authserv-id reader
 * (any sender writes Authentication-Results:). The input is split at its
 * first NUL: a Public Suffix List before it, and after it one line that
 * is a DMARC TXT record, a domain name and an Authentication-Results:
 * value at once. Invariants: a record's policies and pct are in range and
 * sp is p when absent; an organizational domain is a non-empty suffix of
 * the lower-cased name on a label boundary, and aligned with the name in
 * relaxed mode; the same answer twice (no state); nothing leaks, nothing
 * is read past the input (ASan says).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/authres.h"
#include "smtpd/dmarc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t lsz = nul ? (size_t)(nul - data) : 0, rsz = nul ? size - lsz - 1 : size;
	const char *rest = (const char *)(nul ? nul + 1 : data);
	struct dmarc_record r;
	struct dmarc_psl *p;
	char *name, o1[256], o2[256];
	size_t i, n, m;
	int rc;

	/* the record: exactly the bytes, no terminator */
	rc = dmarc_record_parse(rest, rsz, &r);
	if (rc == 0 && (r.p > DMARC_P_REJECT || r.sp > DMARC_P_REJECT || r.pct < 0 || r.pct > 100 ||
	    (!r.has_sp && r.sp != r.p)))
		__builtin_trap();
	if (rc < -2 || rc > 0)
		__builtin_trap();
	(void)authres_claims_id(rest, rsz, "mx.example.org");
	p = nul ? dmarc_psl_parse((const char *)data, lsz) : NULL;
	if ((name = malloc(rsz + 1)) == NULL) {
		dmarc_psl_free(p);
		return 0;
	}
	memcpy(name, rest, rsz);
	name[rsz] = '\0';
	if (dmarc_org_domain(p, name, o1, sizeof o1) == 0) {
		n = strlen(name);
		if (n && name[n - 1] == '.')
			n--;
		m = strlen(o1);
		if (m == 0 || m > n)
			__builtin_trap();
		for (i = 0; i < m; i++) {
			char c = name[n - m + i];
			if (c >= 'A' && c <= 'Z')
				c = (char)(c - 'A' + 'a');
			if (c != o1[i])
				__builtin_trap();
		}
		if (m < n && name[n - m - 1] != '.')
			__builtin_trap();
		if (dmarc_org_domain(p, name, o2, sizeof o2) != 0 || strcmp(o1, o2) != 0)
			__builtin_trap();
		if (!dmarc_aligned(p, name, o1, 0))
			__builtin_trap();
	}
	free(name);
	dmarc_psl_free(p);
	return 0;
}
