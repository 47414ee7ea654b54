/*
 * smtpd/authres.c: DKIM verification, DMARC and Authentication-Results for
 * one message from outside (issue 16; smtpd/authres.h).
 *
 * A spool filter (queue.h) over the client's bytes: the header block is
 * buffered (at most AUTHRES_HDR_MAX) until its end; then the From: domain
 * is known and the DKIM-Signature fields are parsed by libopendkim, so the
 * key lookups (SEL._domainkey.DOMAIN) and the DMARC record lookup
 * (_dmarc.DOMAIN, then the organizational domain's) start at once on
 * core/dns, while the body streams into libopendkim's hashes. At the end
 * of the data the answers are usually in; dkim_eom then verifies with the
 * keys handed in by a key-lookup callback that only reads what core/dns
 * fetched (libopendkim's own resolver is never used: DELAYSIGPROC keeps it
 * from looking keys up at the end of the headers, the callback answers
 * every lookup). Without a check_spf result, an SPF check of the sender
 * runs alongside for DMARC (smtpd/spf.h).
 *
 * Bounds: AUTHRES_SIGS_MAX signatures (the topmost; the others are not
 * given to libopendkim at all, so they cost no hash), key records of at
 * most AUTHRES_KEY_MAX bytes (RSA up to 4096 bits; RFC 8301's range), keys
 * of at least 1024 bits. Memory: libopendkim allocates through core/mem;
 * the verify step runs under mem_nofail after a room check, as the signer
 * does (libopendkim 2.11's failure paths inside dkim_eom are unsafe).
 */
#include "smtpd/authres.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <opendkim/dkim.h>

#include "core/dns.h"
#include "core/log.h"
#include "core/mem.h"
#include "queue/queue.h"
#include "smtpd/dmarc.h"
#include "smtpd/spf.h"

#define EOM_ROOM (256 * 1024)   /* checked free before dkim_eom, which then is not refused */
#define CHUNK    4096

enum hstate { H_HEADERS, H_BODY, H_OFF };

/* One signature given to libopendkim, and its key lookup. */
struct asig {
	struct authres *a;
	DKIM_SIGINFO *si;         /* libopendkim's; valid while a->dkim lives */
	char d[256], s[128];
	char b8[9];               /* the first 8 characters of b= (RFC 6008 header.b) */
	struct dns_query *q;      /* in flight, or NULL */
	int asked, answered, same_as;   /* same_as: index of an earlier signature with the same key, or -1 */
	int temp, too_big, none;  /* the lookup: temporary failure, record over AUTHRES_KEY_MAX, no record */
	char *key;                /* owned; the key record */
};

struct authres {
	struct dns *dns;
	struct authres_opts o;
	char id[32];
	enum hstate st;
	char *hbuf;               /* owned; the header block until its end */
	size_t hlen, hcap;
	DKIM *dkim;               /* owned; NULL: no signature, or not verifying */
	int body_open;
	const char *dkim_err;     /* a reason the whole message is not verified (static), or NULL */
	int nsig_total;           /* DKIM-Signature fields in the message */
	struct asig sig[AUTHRES_SIGS_MAX];
	int nsig;
	/* DMARC */
	int from_ok;              /* exactly one From: with one address */
	char from[256];
	char org[256];
	struct dns_query *dq;
	int dstep;                /* 0 not asked, 1 asking the From: domain, 2 the organizational domain, 3 done */
	int dstatus;              /* 0 a record, 1 none, 2 temperror, 3 permerror (several, or unusable) */
	int d_at_org;             /* the record is the organizational domain's */
	struct dmarc_record rec;
	/* SPF: the transaction's, or our own */
	struct spf_check *spf;    /* borrowed (check_spf's) or owned (own_spf) */
	int own_spf;
	int pending;              /* lookups and checks in flight */
	authres_cb cb;
	void *cbarg;
};

/* ---- libopendkim: one verifying library handle per process -------------------- */

static DKIM_LIB *vlib;

static void *lib_alloc(void *closure, size_t n) { (void)closure; return mem_alloc(n ? n : 1); }
static void lib_free(void *closure, void *p) { (void)closure; mem_free(p); }

static DKIM_CBSTAT key_lookup(DKIM *dkim, DKIM_SIGINFO *si, u_char *buf, size_t buflen);

static DKIM_LIB *vlib_get(void)
{
	unsigned int flags = DKIM_LIBFLAGS_BADSIGHANDLES | DKIM_LIBFLAGS_DELAYSIGPROC;
	unsigned int minbits = 1024;   /* RFC 8301 3.2 */
	DKIM_LIB *l;

	if (vlib)
		return vlib;
	if ((l = dkim_init(lib_alloc, lib_free)) == NULL)
		return NULL;
	if (dkim_options(l, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof flags) != DKIM_STAT_OK ||
	    dkim_options(l, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &minbits, sizeof minbits) != DKIM_STAT_OK ||
	    dkim_set_key_lookup(l, key_lookup) != DKIM_STAT_OK) {
		dkim_close(l);
		return NULL;
	}
	return vlib = l;
}

/* ---- lookups -------------------------------------------------------------------- */

static void settle(struct authres *a)
{
	if (--a->pending == 0 && a->cb) {
		authres_cb cb = a->cb;
		a->cb = NULL;
		cb(a->cbarg);
	}
}

static void key_answer(void *arg, const struct dns_answer *ans)
{
	struct asig *g = arg;
	int i;

	g->q = NULL;
	g->answered = 1;
	if (ans->status == DNS_TEMPFAIL)
		g->temp = 1;
	else if (ans->status != DNS_FOUND)
		g->none = 1;
	else {
		g->none = 1;
		/* the first record that holds a key (another TXT record at the name is not ours) */
		for (i = 0; i < ans->n; i++) {
			const char *t = ans->rr[i].text;
			if (t == NULL || (strstr(t, "p=") == NULL && strstr(t, "p =") == NULL))
				continue;
			g->none = 0;
			if (ans->rr[i].len > AUTHRES_KEY_MAX || strlen(t) != ans->rr[i].len)
				g->too_big = 1;
			else if ((g->key = mem_strdup(t)) == NULL)
				g->temp = 1;   /* no memory: the same as a lookup that failed for now */
			break;
		}
	}
	settle(g->a);
}

/*
 * libopendkim 2.11 may not meet a refused allocation while it sets up a
 * verification: a failed DKIM_SIGINFO allocation in dkim_eoh leaves a NULL
 * in its signature list that dkim_free then reads (SEGV; found by
 * test_dmarc's allocation sweep), as a failed OpenSSL allocation in the
 * signer's dkim_eom frees twice (queue/dkim.c). So every libopendkim call
 * runs under mem_nofail once room for it was checked: its allocations are
 * counted, never refused, and bounded by what it is given (64 KB of
 * headers, 5 signatures, lines of at most 2 KB).
 */
static int lib_room(size_t n)
{
	if (mem_charge(n) < 0)
		return errno = ENOMEM, -1;
	mem_uncharge(n);
	return 0;
}

static int dns_name_ok(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > 200 || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
		return 0;
	for (i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '.' || s[i] == '_'))
			return 0;
	return 1;
}

static void dmarc_answer(void *arg, const struct dns_answer *ans);

static void dmarc_ask(struct authres *a, const char *domain)
{
	char name[DNS_NAME_MAX + 1];

	snprintf(name, sizeof name, "_dmarc.%s", domain);
	a->pending++;
	if (a->dns == NULL || (a->dq = dns_lookup(a->dns, name, DNS_TXT, dmarc_answer, a)) == NULL) {
		a->dstatus = 2;
		a->dstep = 3;
		a->pending--;
	}
}

static void dmarc_answer(void *arg, const struct dns_answer *ans)
{
	struct authres *a = arg;
	int i, found = 0, bad = 0;
	struct dmarc_record r;

	a->dq = NULL;
	if (ans->status == DNS_TEMPFAIL) {
		a->dstatus = 2;
		a->dstep = 3;
		settle(a);
		return;
	}
	for (i = 0; ans->status == DNS_FOUND && i < ans->n; i++) {
		int rc = dmarc_record_parse(ans->rr[i].text, ans->rr[i].len, &r);
		if (rc == -1)
			continue;
		if (rc == -2)
			bad++;
		else if (found++ == 0)
			a->rec = r;
	}
	if (found + bad > 1 || (bad && !found)) {
		a->dstatus = 3;   /* 6.6.3: several records, or one without a policy */
		a->dstep = 3;
	} else if (found) {
		a->dstatus = 0;
		a->d_at_org = a->dstep == 2;
		a->dstep = 3;
	} else if (a->dstep == 1 && strcmp(a->org, a->from) != 0) {
		a->dstep = 2;   /* 6.6.3 step 3: the organizational domain's record */
		dmarc_ask(a, a->org);
	} else {
		a->dstatus = 1;
		a->dstep = 3;
	}
	settle(a);
}

static void spf_done(void *arg)
{
	settle(arg);
}

/* ---- the header block ------------------------------------------------------------- */

static int is_hdr(const char *p, size_t n, const char *name)
{
	size_t l = strlen(name);
	return n > l && strncasecmp(p, name, l) == 0 && p[l] == ':';
}

static DKIM_STAT feed(struct authres *a, int hdr, const char *p, size_t n)
{
	unsigned char out[2 * CHUNK + 2];
	size_t i, o = 0;
	DKIM_STAT st = DKIM_STAT_OK;

	if (hdr) {
		unsigned char *h = mem_alloc(2 * n + 1);
		if (h == NULL)
			return DKIM_STAT_NORESOURCE;
		for (i = 0; i < n; i++) {
			if (p[i] == '\n')
				h[o++] = '\r';
			h[o++] = (unsigned char)p[i];
		}
		st = dkim_header(a->dkim, h, o);
		mem_free(h);
		return st;
	}
	for (i = 0; i < n; i++) {
		if (p[i] == '\n')
			out[o++] = '\r';
		out[o++] = (unsigned char)p[i];
		if (o >= sizeof out - 2 || i + 1 == n) {
			if ((st = dkim_body(a->dkim, out, o)) != DKIM_STAT_OK)
				return st;
			o = 0;
		}
	}
	return st;
}

static void sigs_start(struct authres *a)
{
	DKIM_SIGINFO **sigs;
	int n, i, j;

	if (dkim_getsiglist(a->dkim, &sigs, &n) != DKIM_STAT_OK)
		return;
	for (i = 0; i < n && a->nsig < AUTHRES_SIGS_MAX; i++) {
		struct asig *g = &a->sig[a->nsig++];
		const unsigned char *d = dkim_sig_getdomain(sigs[i]), *s = dkim_sig_getselector(sigs[i]);
		const unsigned char *b = dkim_sig_gettagvalue(sigs[i], 0, (u_char *)"b");
		char name[DNS_NAME_MAX + 1];

		g->a = a;
		g->si = sigs[i];
		g->same_as = -1;
		snprintf(g->d, sizeof g->d, "%s", d ? (const char *)d : "");
		snprintf(g->s, sizeof g->s, "%s", s ? (const char *)s : "");
		for (j = 0; b && b[j] && j < 8; j++)
			g->b8[j] = isalnum(b[j]) || b[j] == '+' || b[j] == '/' ? (char)b[j] : '_';
		g->b8[j] = '\0';
		if (dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_UNKNOWN || !dns_name_ok(g->d) || !dns_name_ok(g->s))
			continue;   /* libopendkim found it broken already, or no name to ask */
		for (j = 0; j < a->nsig - 1; j++)
			if (a->sig[j].asked && strcasecmp(a->sig[j].d, g->d) == 0 && strcasecmp(a->sig[j].s, g->s) == 0)
				break;
		if (j < a->nsig - 1) {
			g->same_as = j;
			continue;
		}
		snprintf(name, sizeof name, "%s._domainkey.%s", g->s, g->d);
		g->asked = 1;
		a->pending++;
		if (a->dns == NULL || (g->q = dns_lookup(a->dns, name, DNS_TXT, key_answer, g)) == NULL) {
			g->temp = 1;
			g->answered = 1;
			a->pending--;
		}
	}
}

/* The header block is hbuf[0..hend): From:, the signatures, the lookups. 0, or -1 errno. */
static int headers_done(struct authres *a, size_t hend)
{
	size_t p, q, nfrom = 0, from_at = 0, from_len = 0;
	int nsig = 0;
	DKIM_STAT st;

	for (p = 0; p < hend; p = q + 1) {
		for (q = p; q < hend; q++)
			if (a->hbuf[q] == '\n' && (q + 1 >= hend || (a->hbuf[q + 1] != ' ' && a->hbuf[q + 1] != '\t')))
				break;
		if (is_hdr(a->hbuf + p, q - p, "from")) {
			nfrom++;
			from_at = p + 5;
			from_len = q - p - 5;
		} else if (is_hdr(a->hbuf + p, q - p, "dkim-signature")) {
			a->nsig_total++;
		}
	}
	a->from_ok = nfrom == 1 && dkim_from_domain(a->hbuf + from_at, from_len, a->from, sizeof a->from) == 0 &&
	    dmarc_org_domain(a->o.psl, a->from, a->org, sizeof a->org) == 0;
	if (a->o.dmarc && a->from_ok) {
		a->dstep = 1;
		dmarc_ask(a, a->from);
	}
	if (!a->o.dkim || a->nsig_total == 0) {
		a->st = H_OFF;
		return 0;
	}
	if (lib_room(EOM_ROOM + 4 * hend) < 0)
		return -1;
	mem_nofail(1);
	if (vlib_get() == NULL || (a->dkim = dkim_verify(vlib, (const unsigned char *)a->id, NULL, &st)) == NULL) {
		mem_nofail(0);
		a->dkim_err = "out of memory";
		a->st = H_OFF;
		return 0;
	}
	dkim_set_user_context(a->dkim, a);
	for (p = 0; p < hend; p = q + 1) {
		for (q = p; q < hend; q++)
			if (a->hbuf[q] == '\n' && (q + 1 >= hend || (a->hbuf[q + 1] != ' ' && a->hbuf[q + 1] != '\t')))
				break;
		/* only the topmost AUTHRES_SIGS_MAX signatures exist for libopendkim: no hash for the rest */
		if (is_hdr(a->hbuf + p, q - p, "dkim-signature") && ++nsig > AUTHRES_SIGS_MAX)
			continue;
		if (q > p && (st = feed(a, 1, a->hbuf + p, q - p)) != DKIM_STAT_OK)
			goto fail;
	}
	st = dkim_eoh(a->dkim);
	mem_nofail(0);
	if (st == DKIM_STAT_NOSIG) {   /* none it could parse */
		a->st = H_OFF;
		return 0;
	}
	if (st != DKIM_STAT_OK)
		goto fail;
	sigs_start(a);
	a->st = H_BODY;
	return 0;
fail:
	mem_nofail(0);
	if (st == DKIM_STAT_NORESOURCE)
		return errno = ENOMEM, -1;
	a->dkim_err = dkim_getresultstr(st);
	dkim_free(a->dkim);
	a->dkim = NULL;
	a->st = H_OFF;
	return 0;
}

static int body(struct authres *a, const char *p, size_t n)
{
	DKIM_STAT st;

	if (n == 0 || a->dkim == NULL)
		return 0;
	if (lib_room(4 * n + 64 * 1024) < 0)
		return -1;
	mem_nofail(1);
	st = feed(a, 0, p, n);
	mem_nofail(0);
	if (st != DKIM_STAT_OK) {
		if (st == DKIM_STAT_NORESOURCE)
			return errno = ENOMEM, -1;
		a->dkim_err = dkim_getresultstr(st);
		a->st = H_OFF;
		return 0;
	}
	a->body_open = p[n - 1] != '\n';
	return 0;
}

static size_t find_eoh(const struct authres *a, size_t from)
{
	const char *e;

	if (a->hlen > 0 && a->hbuf[0] == '\n')
		return 0;
	from = from > 0 ? from - 1 : 0;
	e = memmem(a->hbuf + from, a->hlen - from, "\n\n", 2);
	return e ? (size_t)(e - a->hbuf) + 1 : (size_t)-1;
}

static int f_data(void *arg, const void *data, size_t n)
{
	struct authres *a = arg;
	size_t eoh, take = n;
	char *nb;

	if (a->st == H_OFF)
		return 0;
	if (a->st == H_BODY)
		return body(a, data, n);
	if (a->hlen + n > AUTHRES_HDR_MAX)
		take = AUTHRES_HDR_MAX - a->hlen;
	if (a->hlen + take > a->hcap) {
		size_t cap = a->hcap ? a->hcap : 4096;
		while (cap < a->hlen + take)
			cap *= 2;
		if (cap > AUTHRES_HDR_MAX)
			cap = AUTHRES_HDR_MAX;
		if ((nb = mem_realloc(a->hbuf, cap)) == NULL)
			return errno = ENOMEM, -1;
		a->hbuf = nb;
		a->hcap = cap;
	}
	memcpy(a->hbuf + a->hlen, data, take);
	a->hlen += take;
	if ((eoh = find_eoh(a, a->hlen - take)) == (size_t)-1) {
		if (take < n) {   /* past the bound without the end of the headers */
			a->dkim_err = "header block too large";
			a->st = H_OFF;
			mem_free(a->hbuf);
			a->hbuf = NULL;
		}
		return 0;
	}
	if (headers_done(a, eoh) < 0)
		return -1;
	if (a->st == H_BODY && (body(a, a->hbuf + eoh + 1, a->hlen - eoh - 1) < 0 ||
	    body(a, (const char *)data + take, n - take) < 0))
		return -1;
	mem_free(a->hbuf);
	a->hbuf = NULL;
	return 0;
}

static void f_free(void *arg)
{
	struct authres *a = arg;
	int i;

	for (i = 0; i < a->nsig; i++) {
		dns_cancel(a->sig[i].q);
		mem_free(a->sig[i].key);
	}
	dns_cancel(a->dq);
	if (a->own_spf)
		spf_check_free(a->spf);
	if (a->dkim)
		dkim_free(a->dkim);
	mem_free(a->hbuf);
	mem_free(a);
}

static const struct spool_filter filter_ops = { f_data, NULL, f_free };

struct authres *authres_start(struct spool_txn *txn, struct dns *dns, const struct authres_opts *o,
    struct spf_check *spf, const struct sockaddr_storage *client, const char *helo, const char *sender,
    const char *myhostname)
{
	struct authres *a;

	if ((a = mem_calloc(1, sizeof *a)) == NULL)
		return errno = ENOMEM, NULL;
	a->dns = dns;
	a->o = *o;
	snprintf(a->id, sizeof a->id, "%s", spool_txn_id(txn));
	a->st = H_HEADERS;
	if (o->dmarc && spf == NULL && dns != NULL) {
		/* DMARC needs the SPF result; check_spf was not in the restrictions: our own check */
		if ((a->spf = spf_check_new(dns, client, helo, sender, myhostname, 1)) == NULL) {
			mem_free(a);
			return errno = ENOMEM, NULL;
		}
		a->own_spf = 1;
		a->pending++;
		if (spf_check_run(a->spf, spf_done, a) == 1)
			a->pending--;
	} else {
		a->spf = spf;
	}
	spool_txn_filter(txn, &filter_ops, a);
	return a;
}

int authres_ready(struct authres *a, authres_cb cb, void *arg)
{
	if (a->st == H_HEADERS) {
		/* the message ended inside its headers: all of it is headers, the body empty */
		if (a->hlen == 0 || a->hbuf[a->hlen - 1] != '\n' || headers_done(a, a->hlen) < 0)
			a->st = H_OFF;
		mem_free(a->hbuf);
		a->hbuf = NULL;
	}
	if (a->pending == 0)
		return 1;
	a->cb = cb;
	a->cbarg = arg;
	return 0;
}

/* ---- the key lookup libopendkim asks for (answers only what core/dns fetched) ---------- */

static DKIM_CBSTAT key_lookup(DKIM *dkim, DKIM_SIGINFO *si, u_char *buf, size_t buflen)
{
	struct authres *a = dkim_get_user_context(dkim);
	struct asig *g = NULL;
	int i;

	for (i = 0; a && i < a->nsig; i++)
		if (a->sig[i].si == si)
			g = &a->sig[i];
	if (g == NULL)
		return DKIM_CBSTAT_NOTFOUND;
	if (g->same_as >= 0)
		g = &a->sig[g->same_as];
	if (!g->asked || g->none || g->too_big)
		return DKIM_CBSTAT_NOTFOUND;
	if (g->temp || g->key == NULL)
		return DKIM_CBSTAT_TRYAGAIN;
	if (strlen(g->key) >= buflen)
		return DKIM_CBSTAT_NOTFOUND;
	memcpy(buf, g->key, strlen(g->key) + 1);
	return DKIM_CBSTAT_CONTINUE;
}

/* ---- the results ------------------------------------------------------------------------ */

enum res { R_NONE, R_PASS, R_FAIL, R_NEUTRAL, R_TEMPERROR, R_PERMERROR };
static const char *res_name[] = { "none", "pass", "fail", "neutral", "temperror", "permerror" };

static enum res sig_result(const struct authres *a, int i, const char **why)
{
	const struct asig *g = &a->sig[i], *k = g->same_as >= 0 ? &a->sig[g->same_as] : g;
	unsigned flags = dkim_sig_getflags(g->si);
	int err = dkim_sig_geterror(g->si), bh = dkim_sig_getbh(g->si);

	*why = NULL;
	if ((flags & DKIM_SIGFLAG_PASSED) && bh == DKIM_SIGBH_MATCH && err == DKIM_SIGERROR_OK)
		return R_PASS;
	if (err == DKIM_SIGERROR_UNKNOWN || err == DKIM_SIGERROR_OK) {
		if (k->asked && k->temp)
			return *why = "key lookup failed for now", R_TEMPERROR;
		if (k->too_big)
			return *why = "key record too large", R_PERMERROR;
		if ((flags & DKIM_SIGFLAG_PASSED) && bh == DKIM_SIGBH_MISMATCH)
			return *why = "body hash did not verify", R_FAIL;
		if (flags & DKIM_SIGFLAG_PROCESSED)
			return *why = "signature verification failed", R_FAIL;
		return *why = "not verified", R_NEUTRAL;
	}
	*why = dkim_sig_geterrorstr(err);
	switch (err) {
	case DKIM_SIGERROR_BADSIG:
		return R_FAIL;
	case DKIM_SIGERROR_KEYFAIL:
		return R_TEMPERROR;
	case DKIM_SIGERROR_NOKEY:
		if (k->too_big)
			*why = "key record too large";
		return R_PERMERROR;
	case DKIM_SIGERROR_KEYREVOKED: case DKIM_SIGERROR_DNSSYNTAX: case DKIM_SIGERROR_MULTIREPLY:
	case DKIM_SIGERROR_KEYVERSION: case DKIM_SIGERROR_KEYUNKNOWNHASH: case DKIM_SIGERROR_KEYHASHMISMATCH:
	case DKIM_SIGERROR_NOTEMAILKEY: case DKIM_SIGERROR_KEYTYPEMISSING: case DKIM_SIGERROR_KEYTYPEUNKNOWN:
	case DKIM_SIGERROR_KEYDECODE: case DKIM_SIGERROR_KEYTOOSMALL:
		return R_PERMERROR;
	default:
		return R_NEUTRAL;   /* RFC 8601 2.7.1: a signature with syntax errors */
	}
}

/* a value as an RFC 8601 token, or "" when it is not one (then the property is left out) */
static const char *tokenish(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!(isalnum((unsigned char)s[i]) || strchr("-._+/=", s[i])))
			return "";
	return s;
}

static void quoted(char *out, size_t len, const char *s)
{
	size_t o = 0;

	for (; s && *s && o + 2 < len; s++)
		if ((unsigned char)*s >= ' ' && *s != '"' && *s != '\\' && *s != 0x7f)
			out[o++] = *s;
	out[o] = '\0';
}

struct out {
	char *p;
	size_t len, o;
	int over;
};

static void put(struct out *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *w, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (w->over)
		return;
	va_start(ap, fmt);
	n = vsnprintf(w->p + w->o, w->len - w->o, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= w->len - w->o)
		w->over = 1;
	else
		w->o += (size_t)n;
}

int authres_finish(struct authres *a, const char *authserv_id, int enforce, char *hdr, size_t hdrlen,
    enum authres_verdict *verdict, char *reply, size_t replylen)
{
	struct out w = { hdr, hdrlen, 0, 0 };
	enum res rs[AUTHRES_SIGS_MAX];
	const char *why[AUTHRES_SIGS_MAX];
	enum spf_result spf = SPFR_NONE;
	int i, methods = 0, have_spf = a->spf && spf_check_done(a->spf);
	char q[200];

	*verdict = AUTHRES_ACCEPT;
	reply[0] = '\0';
	if (a->dkim && a->st == H_BODY) {
		if (a->body_open && body(a, "\n", 1) < 0)
			return -1;
		/*
		 * dkim_eom may not meet a refused allocation (libopendkim 2.11's
		 * failure paths there are unsafe, see queue/dkim.c): the room is
		 * checked, then the step runs unrefused. Its memory is a few KB per
		 * signature (the keys, OpenSSL's bignums).
		 */
		if (mem_charge(EOM_ROOM) < 0)
			return errno = ENOMEM, -1;
		mem_uncharge(EOM_ROOM);
		mem_nofail(1);
		(void)dkim_eom(a->dkim, NULL);
		mem_nofail(0);
	}
	for (i = 0; i < a->nsig; i++)
		rs[i] = sig_result(a, i, &why[i]);
	put(&w, "Authentication-Results: %s", authserv_id);
	/* DKIM: one result per signature verified (RFC 8601 2.7.1) */
	if (a->o.dkim) {
		if (a->dkim_err) {
			quoted(q, sizeof q, a->dkim_err);
			put(&w, ";\n\tdkim=permerror reason=\"%s\"", q);
			methods++;
		} else if (a->nsig == 0) {
			put(&w, ";\n\tdkim=none");
			methods++;
		}
		for (i = 0; i < a->nsig && !a->dkim_err; i++) {
			put(&w, ";\n\tdkim=%s", res_name[rs[i]]);
			if (why[i]) {
				quoted(q, sizeof q, why[i]);
				put(&w, " reason=\"%s\"", q);
			}
			if (*tokenish(a->sig[i].d))
				put(&w, " header.d=%s", a->sig[i].d);
			if (*tokenish(a->sig[i].s))
				put(&w, " header.s=%s", a->sig[i].s);
			if (a->sig[i].b8[0])
				put(&w, " header.b=\"%s\"", a->sig[i].b8);
			methods++;
		}
		if (a->nsig_total > a->nsig && a->nsig == AUTHRES_SIGS_MAX)
			put(&w, " (%d more signatures not verified)", a->nsig_total - a->nsig);
	}
	if (have_spf) {
		const char *dom = spf_check_domain(a->spf);
		spf = spf_check_result(a->spf);
		put(&w, ";\n\tspf=%s", spf == SPFR_PASS ? "pass" : spf == SPFR_FAIL ? "fail" : spf == SPFR_SOFTFAIL ?
		    "softfail" : spf == SPFR_NEUTRAL ? "neutral" : spf == SPFR_TEMPERROR ? "temperror" :
		    spf == SPFR_PERMERROR ? "permerror" : "none");
		if (*tokenish(dom))
			put(&w, " smtp.%s=%s", strcmp(spf_check_identity(a->spf), "helo") == 0 ? "helo" : "mailfrom", dom);
		methods++;
	}
	if (a->o.dmarc) {
		enum res dr;
		enum dmarc_policy pol = DMARC_P_NONE;
		const char *dis = "none";

		if (!a->from_ok) {
			dr = R_PERMERROR;   /* no From:, several, or one with several addresses */
		} else if (a->dstatus == 2) {
			dr = R_TEMPERROR;
		} else if (a->dstatus == 3) {
			dr = R_PERMERROR;
		} else if (a->dstatus == 1 || a->dstep != 3) {
			dr = R_NONE;
		} else {
			int dkim_ok = 0, spf_ok = 0, temp = 0;

			for (i = 0; i < a->nsig; i++) {
				int al = dmarc_aligned(a->o.psl, a->sig[i].d, a->from, a->rec.adkim_strict);
				if (rs[i] == R_PASS && al)
					dkim_ok = 1;
				else if (rs[i] == R_TEMPERROR && al)
					temp = 1;
			}
			if (have_spf && dmarc_aligned(a->o.psl, spf_check_domain(a->spf), a->from, a->rec.aspf_strict)) {
				if (spf == SPFR_PASS)
					spf_ok = 1;
				else if (spf == SPFR_TEMPERROR)
					temp = 1;
			}
			pol = a->d_at_org && a->rec.has_sp ? a->rec.sp : a->rec.p;
			if (dkim_ok || spf_ok) {
				dr = R_PASS;
			} else if (temp) {
				dr = R_TEMPERROR;   /* an aligned identifier may yet pass: never a reject on that */
			} else {
				dr = R_FAIL;
				/* pct (6.6.4): outside the sample the next policy down applies */
				if (a->rec.pct < 100 && arc4random_uniform(100) >= (unsigned)a->rec.pct && pol != DMARC_P_NONE)
					pol = pol == DMARC_P_REJECT ? DMARC_P_QUARANTINE : DMARC_P_NONE;
				if (enforce && pol == DMARC_P_REJECT) {
					dis = "reject";
					*verdict = AUTHRES_REJECT;
					snprintf(reply, replylen, "550 5.7.1 rejected by DMARC policy for %s", a->from);
				} else if (enforce && pol == DMARC_P_QUARANTINE) {
					dis = "quarantine";
				}
			}
		}
		put(&w, ";\n\tdmarc=%s", res_name[dr]);
		if (dr == R_PASS || dr == R_FAIL)
			put(&w, " (p=%s dis=%s)", dmarc_policy_name(pol), dis);
		if (a->from_ok && *tokenish(a->from))
			put(&w, " header.from=%s", a->from);
		methods++;
	}
	if (methods == 0)
		put(&w, "; none");
	if (w.over)
		return errno = ENOSPC, -1;
	return 0;
}

/* ---- RFC 8601 section 5: our own authserv-id in mail from outside ------------------------- */

int authres_claims_id(const char *v, size_t n, const char *id)
{
	size_t i = 0, s, idlen = strlen(id);
	int depth = 0;

	/* CFWS, then the authserv-id (a token up to ';' or white space or a comment) */
	for (;;) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == '\r' || v[i] == '\n'))
			i++;
		if (i < n && v[i] == '(') {
			for (depth = 0; i < n; i++) {
				if (v[i] == '\\' && i + 1 < n)
					i++;
				else if (v[i] == '(')
					depth++;
				else if (v[i] == ')' && --depth == 0) {
					i++;
					break;
				}
			}
			continue;
		}
		break;
	}
	s = i;
	if (i < n && v[i] == '"') {   /* a quoted authserv-id */
		s = ++i;
		while (i < n && v[i] != '"')
			i++;
		return i - s == idlen && strncasecmp(v + s, id, idlen) == 0;
	}
	while (i < n && v[i] != ';' && v[i] != ' ' && v[i] != '\t' && v[i] != '\r' && v[i] != '\n' && v[i] != '(')
		i++;
	/* a trailing dot names the same host */
	if (i - s == idlen + 1 && v[i - 1] == '.')
		i--;
	return i - s == idlen && strncasecmp(v + s, id, idlen) == 0;
}
