/*
 * smtpd/dmarc.h: the pure parts of DMARC (RFC 7489): the Public Suffix
 * List and the organizational domain (3.2), a DMARC record's tags (6.3),
 * identifier alignment (3.1). No I/O but loading the list; no DNS (the
 * lookups are smtpd/authres.c's). Pure and bounded, fuzzed by
 * tests/fuzz/fuzz_dmarc.c.
 */
#ifndef FRUGAL_SMTPD_DMARC_H
#define FRUGAL_SMTPD_DMARC_H

#include <stddef.h>

/* ---- the Public Suffix List ---------------------------------------------- */

#define DMARC_PSL_MAX (1024 * 1024)   /* a list file past this is refused */

struct dmarc_psl;
/* Read the list (publicsuffix.org's format) into memory charged to core/mem. NULL + err. */
struct dmarc_psl *dmarc_psl_load(const char *path, char *err, size_t errlen);
/* The same from text in memory (tests, the fuzz target). */
struct dmarc_psl *dmarc_psl_parse(const char *text, size_t n);
void   dmarc_psl_free(struct dmarc_psl *p);
int    dmarc_psl_rules(const struct dmarc_psl *p);
size_t dmarc_psl_bytes(const struct dmarc_psl *p);
/*
 * The organizational domain of `name` (RFC 7489 3.2: its public suffix and
 * one label more; a name that is itself a public suffix is its own), lower
 * case without a trailing dot, into out. 0, or -1: not a domain name or
 * does not fit. p NULL: the last two labels.
 */
int dmarc_org_domain(const struct dmarc_psl *p, const char *name, char *out, size_t outlen);
/*
 * Are two domains aligned (RFC 7489 3.1)? strict: equal (case aside);
 * relaxed: the same organizational domain. 1 or 0.
 */
int dmarc_aligned(const struct dmarc_psl *p, const char *a, const char *b, int strict);

/* ---- a DMARC record ------------------------------------------------------ */

enum dmarc_policy { DMARC_P_NONE, DMARC_P_QUARANTINE, DMARC_P_REJECT };

struct dmarc_record {
	enum dmarc_policy p;     /* p= (a record with an invalid or no p= but an rua= is p=none, 6.6.3) */
	enum dmarc_policy sp;    /* sp=, else p */
	int has_sp;
	int adkim_strict;        /* adkim=s */
	int aspf_strict;         /* aspf=s */
	int pct;                 /* pct= 0..100, default 100 */
};

#define DMARC_RECORD_MAX 2048   /* a TXT record longer than this is not looked at */

/*
 * Parse one TXT record (n bytes, not NUL-terminated). 0: a usable DMARC
 * record in r; -1: not a DMARC record (no leading v=DMARC1: another TXT
 * record at the name, ignored as 6.6.3 says); -2: a DMARC record without a
 * usable policy (no valid p= and no rua=: no DMARC processing).
 */
int dmarc_record_parse(const char *txt, size_t n, struct dmarc_record *r);
const char *dmarc_policy_name(enum dmarc_policy p);   /* "none", "quarantine", "reject" */

#endif
