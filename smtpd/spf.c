/*
 * smtpd/spf.c: SPF checks (RFC 7208) with libspf2, fed by frugal's
 * resolver. libspf2 asks its DNS "layer" synchronously; ours answers from
 * this check's cache of answers the resolver already gave. A name not in
 * the cache is answered "try again" (libspf2 then ends the run with a
 * temperror), remembered, fetched with dns_lookup on the loop, and the
 * whole evaluation runs again from the start with one more answer in the
 * cache. Every run is a pure function of the cache, so a re-run follows the
 * same path and goes one lookup further; at most SPF_MAX_FETCH lookups and
 * SPF_CACHE_MAX bytes of answers per check. Never blocks, never asks DNS
 * any other way (libspf2's own resolver layers are not used).
 *
 * What libspf2 does not do, done here: the void lookup limit (RFC 7208
 * 4.6.4: a third lookup answered NXDOMAIN or empty is a permerror), and the
 * deprecated SPF RR type 99 is answered "no data" without asking.
 */
#include "smtpd/spf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spf2/spf.h>

#include "core/dns.h"
#include "core/log.h"
#include "core/mem.h"

/* One answer the resolver gave, as libspf2 will read it. */
struct spf_entry {
	struct spf_entry *next;
	char *name;                 /* owned (mem_alloc) */
	enum dns_type type;
	enum dns_status status;
	SPF_dns_rr_t *rr;           /* owned (libspf2's malloc; charged with mem_charge) */
	int refused;                /* an SPF record here has a macro term too long for libspf2 (below) */
	size_t bytes;               /* what was charged for rr */
};

struct spf_check {
	struct dns *dns;
	struct dns_query *q;        /* the fetch in flight, or NULL */
	spf_done_cb cb;
	void *arg;
	int family;                 /* AF_INET or AF_INET6: the address evaluated */
	struct in_addr a4;
	struct in6_addr a6;
	char ip[INET6_ADDRSTRLEN];
	char helo[256];
	char sender[512];           /* as given ("" for <>) */
	char id[520];               /* the identity's address: sender, or postmaster@helo */
	char domain[256];
	char receiver[256];
	const char *identity;       /* "mailfrom" or "helo" (static) */
	int done;
	enum spf_result result;
	char why[200];
	struct spf_entry *cache;
	size_t cache_bytes;
	int fetches, runs;
	/* the fetch: what a run missed first */
	int miss;
	char miss_name[DNS_NAME_MAX + 1];
	enum dns_type miss_type;
	/* the run under way */
	int top_seen;               /* the identity's own TXT record was asked (it is not a term's lookup) */
	int voids;                  /* void lookups seen (RFC 7208 4.6.4) */
	int void_exceeded;
	int terms;                  /* DNS-querying terms evaluated (RFC 7208 4.6.4; libspf2 counts per record only) */
	int terms_exceeded;
	int refused;                /* the run met a record refused by risky_record() */
	int oom;
	SPF_dns_server_t layer;     /* our DNS layer; hook points back here */
};

/* ---- libspf2's process-wide state ------------------------------------------ */

/* libspf2 calls this only for broken invariants (and then aborts). */
__attribute__((noreturn)) static void spf_lib_error(const char *file, int line, const char *msg)
{
	log_panic("smtpd", "libspf2: %s (%s:%d)", msg, file ? file : "?", line);
}

static void spf_lib_quiet(const char *file, int line, const char *msg)
{
}

/*
 * One SPF_server for the process: making one compiles the default
 * explanation and calls SPF_error (abort) when malloc fails, so it is
 * made once, at the first check, and kept (reachable) until exit. Each run
 * points it at the check's layer.
 */
static SPF_server_t *spf_server(void)
{
	static SPF_server_t *srv;
	static SPF_dns_server_t placeholder;

	if (srv == NULL) {
		/*
		 * libspf2 aborts when malloc fails while it makes a server: try
		 * for much more than it needs first, and answer "no memory"
		 * (a temperror) instead. The odds, not a guarantee (DESIGN.md).
		 */
		void *probe = malloc(256 * 1024);
		if (probe == NULL)
			return NULL;
		free(probe);
		SPF_error_handler = spf_lib_error;
		SPF_warning_handler = spf_lib_quiet;
		SPF_info_handler = spf_lib_quiet;
		SPF_debug_handler = spf_lib_quiet;
		placeholder.name = "frugal";
		srv = SPF_server_new_dns(&placeholder, 0);
	}
	return srv;
}

/* ---- answers into libspf2's RRs ------------------------------------------- */

static int ns_of(enum dns_type t)
{
	switch (t) {
	case DNS_A: return ns_t_a;
	case DNS_AAAA: return ns_t_aaaa;
	case DNS_MX: return ns_t_mx;
	case DNS_PTR: return ns_t_ptr;
	case DNS_TXT: return ns_t_txt;
	}
	return ns_t_invalid;
}

/* An SPF record's start (RFC 7208 4.5): "v=spf1" then a space or the end. */
static int is_spf_record(const char *t, size_t len)
{
	return len >= 6 && strncasecmp(t, "v=spf1", 6) == 0 && (len == 6 || t[6] == ' ') && strlen(t) == len;
}

void *spf_rr_from_answer(const char *name, int type, const struct dns_answer *a, size_t *bytes)
{
	SPF_dns_stat_t herrno;
	SPF_dns_rr_t *rr;
	int i, n = 0;

	*bytes = sizeof *rr + strlen(name) + 1;
	switch (a->status) {
	case DNS_FOUND: herrno = NETDB_SUCCESS; break;
	case DNS_NXDOMAIN: herrno = HOST_NOT_FOUND; break;
	case DNS_NODATA: herrno = NO_DATA; break;
	default: herrno = TRY_AGAIN; break;
	}
	if ((rr = SPF_dns_rr_new_init(NULL, name, (ns_type)ns_of(type), (int)a->ttl, herrno)) == NULL)
		return NULL;
	if (herrno != NETDB_SUCCESS)
		return rr;
	for (i = 0; i < a->n && i < DNS_MAX_RR; i++) {
		const struct dns_rr *r = &a->rr[i];
		size_t need;

		switch (type) {
		case DNS_A:
			if (r->family != AF_INET)
				continue;
			need = sizeof(struct in_addr);
			break;
		case DNS_AAAA:
			if (r->family != AF_INET6)
				continue;
			need = sizeof(struct in6_addr);
			break;
		case DNS_TXT:
			/*
			 * Only SPF records are kept: the rest (site verifications,
			 * DKIM keys, exp= texts) is never needed, and an explanation
			 * never reaches libspf2's macro expander (where its CVEs were).
			 */
			if (r->text == NULL || !is_spf_record(r->text, r->len))
				continue;
			need = r->len + 1;
			break;
		case DNS_MX:
		case DNS_PTR:
			if (r->text == NULL || r->text[0] == '\0' || strlen(r->text) != r->len)
				continue;
			need = r->len + 1;
			break;
		default:
			continue;
		}
		if (SPF_dns_rr_buf_realloc(rr, n, need) != SPF_E_SUCCESS) {
			SPF_dns_rr_free(rr);
			return NULL;
		}
		if (type == DNS_A)
			memcpy(&rr->rr[n]->a, r->addr, 4);
		else if (type == DNS_AAAA)
			memcpy(&rr->rr[n]->aaaa, r->addr, 16);
		else
			memcpy(rr->rr[n]->txt, r->text, need);   /* the union: txt, mx and ptr share it */
		*bytes += need + sizeof(void *) + sizeof(size_t);
		n++;
		rr->num_rr = n;
	}
	/*
	 * Nothing kept (only non-SPF TXT strings, say): "no data" to libspf2,
	 * which means the same to it, whereas a success with no record leaks
	 * the RR in its explanation lookup (spf_get_exp.c; found by
	 * fuzz_spf_eval). Void lookups are counted from the resolver's status.
	 */
	if (n == 0)
		rr->herrno = NO_DATA;
	/* libspf2 keeps spare slots: count what it holds, not only what we filled */
	*bytes += (size_t)rr->rr_buf_num * (sizeof(void *) + sizeof(size_t));
	return rr;
}

void spf_rr_free(void *rr)
{
	SPF_dns_rr_free(rr);
}

/* ---- the per-check cache and the layer libspf2 asks ---------------------- */

static struct spf_entry *cache_find(struct spf_check *c, const char *name, enum dns_type t)
{
	struct spf_entry *e;

	for (e = c->cache; e; e = e->next)
		if (e->type == t && strcasecmp(e->name, name) == 0)
			return e;
	return NULL;
}

/*
 * Debian's libspf2 1.2.10 compiles a term with macros into a 511-byte
 * buffer and underflows its space count when the term nearly fills it
 * (upstream's "Fix integer underflow", 2023; CVE-2023-42118 as far as it
 * could be matched): a heap overflow from a record anybody can publish. A
 * term compiles to less than 3 bytes per character plus a few headers, so
 * a record whose macro terms are all shorter than SPF_MACRO_TERM_MAX
 * characters never comes near it. Real macro terms are under 60
 * ("exists:%{i}._spf.example.com"); a longer one is refused: permerror.
 */
#define SPF_MACRO_TERM_MAX 128
static int risky_record(const char *t)
{
	while (*t) {
		size_t n = strcspn(t, " ");
		if (n > SPF_MACRO_TERM_MAX && memchr(t, '%', n))
			return 1;
		t += n;
		t += strspn(t, " ");
	}
	return 0;
}

/* 0, or -1 (out of memory or over SPF_CACHE_MAX: c->result set). */
static int cache_add(struct spf_check *c, const char *name, enum dns_type t, const struct dns_answer *a)
{
	struct spf_entry *e = mem_calloc(1, sizeof *e);
	size_t bytes = 0;

	if (e == NULL || (e->name = mem_strdup(name)) == NULL) {
		mem_free(e);
		c->oom = 1;
		return -1;
	}
	e->type = t;
	e->status = a->status;
	if ((e->rr = spf_rr_from_answer(name, t, a, &bytes)) == NULL || mem_charge(bytes) < 0) {
		if (e->rr)
			SPF_dns_rr_free(e->rr);
		mem_free(e->name);
		mem_free(e);
		c->oom = 1;
		return -1;
	}
	e->bytes = bytes;
	if (t == DNS_TXT) {
		int i;
		for (i = 0; i < e->rr->num_rr; i++)
			if (risky_record(e->rr->rr[i]->txt))
				e->refused = 1;
	}
	e->next = c->cache;
	c->cache = e;
	c->cache_bytes += bytes;
	return 0;
}

/* Strip a final dot: the resolver and the cache key names without it. */
static void plain_name(const char *domain, char *out, size_t outlen)
{
	size_t n = strlen(domain);

	if (n && domain[n - 1] == '.')
		n--;
	snprintf(out, outlen, "%.*s", (int)n, domain);
}

/* An MX or PTR answer of this check named it: its A/AAAA lookup belongs to that mx or ptr term. */
static int is_target(struct spf_check *c, const char *name)
{
	struct spf_entry *e;
	int i;

	for (e = c->cache; e; e = e->next)
		if ((e->type == DNS_MX || e->type == DNS_PTR) && e->rr)
			for (i = 0; i < e->rr->num_rr; i++)
				if (strcasecmp(e->rr->rr[i]->mx, name) == 0)
					return 1;
	return 0;
}

static SPF_dns_rr_t *layer_lookup(SPF_dns_server_t *ds, const char *domain, ns_type t, int should_cache)
{
	struct spf_check *c = ds->hook;
	char name[DNS_NAME_MAX + 2];
	enum dns_type dt;
	struct spf_entry *e;
	SPF_dns_rr_t *rr = NULL;
	int top;

	switch (t) {
	case ns_t_a: dt = DNS_A; break;
	case ns_t_aaaa: dt = DNS_AAAA; break;
	case ns_t_mx: dt = DNS_MX; break;
	case ns_t_ptr: dt = DNS_PTR; break;
	case ns_t_txt: dt = DNS_TXT; break;
	default:
		/* type 99 (SPF) is obsolete (RFC 7208 3.1): never asked */
		return SPF_dns_rr_new_init(ds, domain, t, 0, NO_DATA);
	}
	plain_name(domain ? domain : "", name, sizeof name);
	if (strlen(name) > DNS_NAME_MAX)
		return SPF_dns_rr_new_init(ds, domain, t, 0, HOST_NOT_FOUND);
	/*
	 * RFC 7208 4.6.4: at most 10 terms that query DNS (include, redirect,
	 * a, mx, ptr, exists) in the whole evaluation, includes included.
	 * libspf2 counts per record, so a chain of includes escapes its limit:
	 * counted here, where every lookup passes. The identity's own TXT is
	 * the run's first TXT lookup and no term; the A/AAAA lookups of the
	 * names an mx or ptr term found are part of that term.
	 */
	top = dt == DNS_TXT && !c->top_seen;
	if (top)
		c->top_seen = 1;
	else if ((dt == DNS_TXT || dt == DNS_MX || dt == DNS_PTR || !is_target(c, name)) && ++c->terms > 10) {
		c->terms_exceeded = 1;   /* stop the run here, before asking */
		return SPF_dns_rr_new_init(ds, domain, t, 0, TRY_AGAIN);
	}
	if ((e = cache_find(c, name, dt)) != NULL) {
		int is_void = e->status == DNS_NXDOMAIN || e->status == DNS_NODATA;

		if (e->refused) {   /* never reaches libspf2's compiler: stop the run here */
			c->refused = 1;
			return SPF_dns_rr_new_init(ds, domain, t, 0, TRY_AGAIN);
		}
		/* the identity's own record is no term's lookup: it never counts */
		if (is_void && !top && ++c->voids > 2) {
			c->void_exceeded = 1;   /* stop the run here: libspf2 ends it as a temperror */
			return SPF_dns_rr_new_init(ds, domain, t, 0, TRY_AGAIN);
		}
		if (SPF_dns_rr_dup(&rr, e->rr) != SPF_E_SUCCESS || rr == NULL) {
			c->oom = 1;
			if (rr)
				SPF_dns_rr_free(rr);
			return SPF_dns_rr_new_init(ds, domain, t, 0, TRY_AGAIN);
		}
		return rr;
	}
	if (!c->miss) {   /* only the first: later lookups of this run may not happen once it is known */
		c->miss = 1;
		memcpy(c->miss_name, name, strlen(name) + 1);   /* at most DNS_NAME_MAX: checked above */
		c->miss_type = dt;
	}
	return SPF_dns_rr_new_init(ds, domain, t, 0, TRY_AGAIN);
}

/* ---- evaluation ------------------------------------------------------------ */

static void finish(struct spf_check *c, enum spf_result r, const char *why)
{
	c->done = 1;
	c->result = r;
	snprintf(c->why, sizeof c->why, "%s", why ? why : "");
}

static enum spf_result from_lib(SPF_result_t r)
{
	switch (r) {
	case SPF_RESULT_PASS: return SPFR_PASS;
	case SPF_RESULT_FAIL: return SPFR_FAIL;
	case SPF_RESULT_SOFTFAIL: return SPFR_SOFTFAIL;
	case SPF_RESULT_NEUTRAL: return SPFR_NEUTRAL;
	case SPF_RESULT_NONE: return SPFR_NONE;
	case SPF_RESULT_TEMPERROR: return SPFR_TEMPERROR;
	default: return SPFR_PERMERROR;
	}
}

/* The identity's record was missing (none), or there and broken (permerror, RFC 7208 4.6). */
static void not_spf(struct spf_check *c, SPF_response_t *resp)
{
	struct spf_entry *e = cache_find(c, c->domain, DNS_TXT);
	const char *why = "SPF record syntax error";
	int i;

	if (e == NULL || e->rr == NULL || e->rr->num_rr == 0) {
		finish(c, SPFR_NONE, "");
		return;
	}
	for (i = 0; i < SPF_response_messages(resp); i++) {   /* the compiler's own words, first */
		SPF_error_t *m = SPF_response_message(resp, i);
		if (m && SPF_error_code(m) != SPF_E_NOT_SPF && SPF_error_message(m)) {
			why = SPF_error_message(m);
			break;
		}
	}
	finish(c, SPFR_PERMERROR, why);
}

/* One libspf2 evaluation over the cache as it is. */
static void run_once(struct spf_check *c)
{
	SPF_server_t *srv = spf_server();
	SPF_request_t *rq;
	SPF_response_t *resp = NULL;
	SPF_errcode_t err;

	c->runs++;
	c->miss = 0;
	c->top_seen = 0;
	c->voids = 0;
	c->void_exceeded = 0;
	c->terms = 0;
	c->terms_exceeded = 0;
	c->refused = 0;
	if (srv == NULL || SPF_server_set_rec_dom(srv, c->receiver) != SPF_E_SUCCESS ||
	    (rq = SPF_request_new(srv)) == NULL) {
		c->oom = 1;
		return;
	}
	srv->resolver = &c->layer;
	if ((c->family == AF_INET ? SPF_request_set_ipv4(rq, c->a4) : SPF_request_set_ipv6(rq, c->a6)) != SPF_E_SUCCESS ||
	    (c->helo[0] && SPF_request_set_helo_dom(rq, c->helo) != SPF_E_SUCCESS) ||
	    SPF_request_set_env_from(rq, c->sender) != 0) {
		SPF_request_free(rq);
		c->oom = 1;
		return;
	}
	err = SPF_request_query_mailfrom(rq, &resp);
	if (resp == NULL) {
		c->oom = 1;
	} else if (!c->miss && !c->void_exceeded && !c->terms_exceeded && !c->refused && !c->oom) {
		SPF_result_t r = SPF_response_result(resp);
		SPF_errcode_t e = SPF_response_errcode(resp);

		if (err == SPF_E_NO_MEMORY || e == SPF_E_NO_MEMORY)
			c->oom = 1;
		else if (SPF_response_reason(resp) == SPF_REASON_LOCALHOST)
			finish(c, from_lib(r), "localhost always passes");
		else if (r == SPF_RESULT_INVALID && err == SPF_E_NOT_SPF)
			/*
			 * Debian's 1.2.10 leaves the result unset when the identity's
			 * record ends the run, and says "not SPF" both for no record
			 * and for one that does not compile: the cache tells which.
			 */
			not_spf(c, resp);
		else if (r == SPF_RESULT_INVALID && err == SPF_E_DNS_ERROR)
			finish(c, SPFR_TEMPERROR, "DNS lookup failure");
		else if (r == SPF_RESULT_INVALID)
			finish(c, SPFR_PERMERROR, SPF_strerror(err != SPF_E_SUCCESS ? err : e));
		else
			finish(c, from_lib(r), r == SPF_RESULT_PASS || r == SPF_RESULT_FAIL || r == SPF_RESULT_SOFTFAIL ||
			    r == SPF_RESULT_NEUTRAL || e == SPF_E_SUCCESS ? "" : SPF_strerror(e));
	}
	if (resp)
		SPF_response_free(resp);
	SPF_request_free(rq);
	srv->resolver = NULL;
}

static void fetched(void *arg, const struct dns_answer *a);

/* 1: done; 0: a fetch runs (fetched() goes on). */
static int evaluate(struct spf_check *c)
{
	char why[120];

	if (c->dns == NULL)
		finish(c, SPFR_TEMPERROR, "no resolver");
	while (!c->done) {
		run_once(c);
		if (c->oom) {
			finish(c, SPFR_TEMPERROR, "out of memory");
			break;
		}
		if (c->void_exceeded) {
			finish(c, SPFR_PERMERROR, "more than 2 void lookups (RFC 7208 4.6.4)");
			break;
		}
		if (c->terms_exceeded) {
			finish(c, SPFR_PERMERROR, "more than 10 DNS lookups (RFC 7208 4.6.4)");
			break;
		}
		if (c->refused) {
			snprintf(why, sizeof why, "an SPF record with a macro term over %d characters (refused)",
			    SPF_MACRO_TERM_MAX);
			finish(c, SPFR_PERMERROR, why);
			break;
		}
		if (c->done || !c->miss)
			break;
		if (c->fetches >= SPF_MAX_FETCH) {
			snprintf(why, sizeof why, "more than %d DNS lookups", SPF_MAX_FETCH);
			finish(c, SPFR_PERMERROR, why);
			break;
		}
		if (c->cache_bytes > SPF_CACHE_MAX) {
			snprintf(why, sizeof why, "more than %d bytes of DNS answers", SPF_CACHE_MAX);
			finish(c, SPFR_PERMERROR, why);
			break;
		}
		c->fetches++;
		if ((c->q = dns_lookup(c->dns, c->miss_name, c->miss_type, fetched, c)) != NULL)
			return 0;
		if (errno == EINVAL) {   /* a name no DNS server could hold: it does not exist */
			struct dns_answer nx = { .status = DNS_NXDOMAIN, .type = c->miss_type, .why = "" };
			if (cache_add(c, c->miss_name, c->miss_type, &nx) == 0)
				continue;
		}
		finish(c, SPFR_TEMPERROR, "resolver: out of memory");
	}
	return 1;
}

static void fetched(void *arg, const struct dns_answer *a)
{
	struct spf_check *c = arg;

	c->q = NULL;
	if (cache_add(c, c->miss_name, c->miss_type, a) < 0)
		finish(c, SPFR_TEMPERROR, "out of memory");
	else if (evaluate(c) == 0)
		return;
	c->cb(c->arg);
}

/* RFC 7208 4.3: a domain that is not a valid FQDN has no SPF (result none). */
static int domain_ok(const char *d)
{
	size_t n = strlen(d), label = 0;
	int dots = 0;

	if (n == 0 || n > 253 || d[0] == '.' || d[n - 1] == '.')
		return 0;
	for (; *d; d++) {
		if (*d == '.') {
			if (label == 0)
				return 0;
			label = 0;
			dots++;
		} else if ((*d >= 'a' && *d <= 'z') || (*d >= 'A' && *d <= 'Z') || (*d >= '0' && *d <= '9') ||
		    *d == '-' || *d == '_') {
			if (++label > 63)
				return 0;
		} else {
			return 0;
		}
	}
	return dots > 0;
}

static int is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return 0;
}

struct spf_check *spf_check_new(struct dns *d, const struct sockaddr_storage *client, const char *helo,
    const char *sender, const char *receiver, int helo_check)
{
	struct spf_check *c = mem_calloc(1, sizeof *c);
	const char *test_addr = getenv("FRUGAL_SPF_CLIENT_ADDR");
	const char *at;

	if (c == NULL)
		return NULL;
	c->dns = d;
	c->layer.name = "frugal";
	c->layer.lookup = layer_lookup;
	c->layer.hook = c;
	snprintf(c->receiver, sizeof c->receiver, "%s", receiver ? receiver : "");
	snprintf(c->helo, sizeof c->helo, "%s", helo ? helo : "");
	snprintf(c->sender, sizeof c->sender, "%s", sender ? sender : "");
	/* tests only: libspf2 passes every loopback client, and tests connect over loopback */
	if (!is_loopback(client))
		test_addr = NULL;
	if (test_addr && *test_addr && inet_pton(AF_INET, test_addr, &c->a4) == 1) {
		c->family = AF_INET;
	} else if (test_addr && *test_addr && inet_pton(AF_INET6, test_addr, &c->a6) == 1) {
		c->family = AF_INET6;
	} else if (client->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)client;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {   /* an IPv4 client on a dual-stack socket */
			c->family = AF_INET;
			memcpy(&c->a4, s6->sin6_addr.s6_addr + 12, 4);
		} else {
			c->family = AF_INET6;
			c->a6 = s6->sin6_addr;
		}
	} else {
		c->family = AF_INET;
		c->a4 = ((const struct sockaddr_in *)client)->sin_addr;
	}
	if (c->family == AF_INET)
		inet_ntop(AF_INET, &c->a4, c->ip, sizeof c->ip);
	else
		inet_ntop(AF_INET6, &c->a6, c->ip, sizeof c->ip);
	if (c->sender[0]) {
		c->identity = "mailfrom";
		snprintf(c->id, sizeof c->id, "%s", c->sender);
		at = strrchr(c->sender, '@');
		snprintf(c->domain, sizeof c->domain, "%s", at ? at + 1 : "");
		if (!domain_ok(c->domain))
			finish(c, SPFR_NONE, "no valid domain in the sender");
	} else {
		/* RFC 7208 2.4: a null reverse-path is checked as postmaster@ the HELO name */
		c->identity = "helo";
		snprintf(c->id, sizeof c->id, "postmaster@%s", c->helo);
		snprintf(c->domain, sizeof c->domain, "%s", c->helo);
		if (!helo_check)
			finish(c, SPFR_NONE, "null sender, spf_helo_check = no");
		else if (!domain_ok(c->domain))
			finish(c, SPFR_NONE, "no valid HELO name");
	}
	return c;
}

int spf_check_run(struct spf_check *c, spf_done_cb cb, void *arg)
{
	c->cb = cb;
	c->arg = arg;
	if (c->done)
		return 1;
	return evaluate(c);
}

void spf_check_free(struct spf_check *c)
{
	struct spf_entry *e, *next;

	if (c == NULL)
		return;
	dns_cancel(c->q);
	for (e = c->cache; e; e = next) {
		next = e->next;
		SPF_dns_rr_free(e->rr);
		mem_uncharge(e->bytes);
		mem_free(e->name);
		mem_free(e);
	}
	mem_free(c);
}

int spf_check_done(const struct spf_check *c) { return c->done; }
enum spf_result spf_check_result(const struct spf_check *c) { return c->result; }
const char *spf_check_identity(const struct spf_check *c) { return c->identity; }
const char *spf_check_id(const struct spf_check *c) { return c->id; }
const char *spf_check_domain(const struct spf_check *c) { return c->domain; }
const char *spf_check_why(const struct spf_check *c) { return c->why; }
const char *spf_check_client_ip(const struct spf_check *c) { return c->ip; }
int spf_check_fetches(const struct spf_check *c) { return c->fetches; }
int spf_check_runs(const struct spf_check *c) { return c->runs; }

const char *spf_result_name(enum spf_result r)
{
	static const char *names[] = { "None", "Neutral", "Pass", "Fail", "Softfail", "Temperror", "Permerror" };
	return r <= SPFR_PERMERROR ? names[r] : "None";
}

/* ---- Received-SPF ---------------------------------------------------------- */

/* RFC 7208 9.1: a value is a dot-atom or a quoted-string. */
static int put_value(char *out, size_t outlen, const char *v)
{
	static const char atext[] = "!#$%&'*+-/=?^_`{|}~.";
	const char *p;
	size_t n = 0;
	int plain = *v != '\0';

	for (p = v; *p && plain; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    strchr(atext, *p)))
			plain = 0;
	if (plain)
		return snprintf(out, outlen, "%s", v);
	if (outlen < 3)
		return -1;
	out[n++] = '"';
	for (p = v; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		if (ch < 0x20 || ch == 0x7f)
			continue;   /* never a control character in a header */
		if (n + 4 >= outlen)
			return -1;
		if (ch == '"' || ch == '\\')
			out[n++] = '\\';
		out[n++] = (char)ch;
	}
	out[n++] = '"';
	out[n] = '\0';
	return (int)n;
}

int spf_received_header(const struct spf_check *c, const char *helo, const char *sender, const char *receiver,
    char *buf, size_t len)
{
	char h[600], f[1100], r[600], w[450] = "";
	int n;

	if (put_value(h, sizeof h, helo && *helo ? helo : "unknown") < 0 ||
	    put_value(f, sizeof f, sender && *sender ? sender : "<>") < 0 ||
	    put_value(r, sizeof r, receiver && *receiver ? receiver : "unknown") < 0)
		return -1;
	if ((c->result == SPFR_TEMPERROR || c->result == SPFR_PERMERROR) && c->why[0]) {
		char q[420];
		if (put_value(q, sizeof q, c->why) < 0)
			return -1;
		snprintf(w, sizeof w, ";\n\tproblem=%s", q);
	}
	n = snprintf(buf, len, "Received-SPF: %s (%s) identity=%s; client-ip=%s;\n\thelo=%s;\n\tenvelope-from=%s;"
	    "\n\treceiver=%s%s\n", spf_result_name(c->result), c->identity, c->identity, c->ip, h, f, r, w);
	return n < 0 || (size_t)n >= len ? -1 : n;
}
