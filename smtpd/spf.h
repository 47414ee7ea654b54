/*
 * smtpd/spf.h: SPF (RFC 7208) for one transaction, on the loop. libspf2
 * evaluates; every DNS answer it reads comes from frugal's resolver
 * (core/dns.h) through a per-check cache. A lookup libspf2 needs and the
 * cache does not hold ends that run; the name is fetched asynchronously and
 * the evaluation runs again from the start. Knows no SMTP replies: the
 * restriction word (restrict.c) and the header (content.c) are built from
 * the result kept here, which DMARC will read too.
 */
#ifndef FRUGAL_SMTPD_SPF_H
#define FRUGAL_SMTPD_SPF_H

#include <stddef.h>
#include <sys/socket.h>

struct dns;
struct dns_answer;

enum spf_result { SPFR_NONE, SPFR_NEUTRAL, SPFR_PASS, SPFR_FAIL, SPFR_SOFTFAIL, SPFR_TEMPERROR, SPFR_PERMERROR };

#define SPF_MAX_FETCH  40            /* DNS lookups one check may make (then permerror) */
#define SPF_CACHE_MAX  (64 * 1024)   /* bytes of answers one check may hold (then permerror) */

struct spf_check;
typedef void (*spf_done_cb)(void *arg);

/*
 * A check of `sender`'s domain ("" or "<>": the HELO identity, when
 * helo_check; else the result is none) for a client at `client`. receiver:
 * our host name (the %{r} macro, the header). NULL without memory.
 */
struct spf_check *spf_check_new(struct dns *d, const struct sockaddr_storage *client, const char *helo,
    const char *sender, const char *receiver, int helo_check);
/*
 * 1: the result is known (perhaps at once); 0: lookups run, cb(arg) will be
 * called once on the loop when it is (never from inside this call).
 */
int  spf_check_run(struct spf_check *c, spf_done_cb cb, void *arg);
/* Cancels a lookup in flight; the callback will not run. NULL is fine. */
void spf_check_free(struct spf_check *c);

int  spf_check_done(const struct spf_check *c);             /* the result is known */
enum spf_result spf_check_result(const struct spf_check *c);
const char *spf_check_identity(const struct spf_check *c);  /* "mailfrom" or "helo" */
const char *spf_check_id(const struct spf_check *c);        /* the address checked (postmaster@helo for helo) */
const char *spf_check_domain(const struct spf_check *c);    /* the domain checked ("" when none) */
const char *spf_check_why(const struct spf_check *c);       /* a short reason (errors, none), or "" */
const char *spf_check_client_ip(const struct spf_check *c); /* the address evaluated */
int  spf_check_fetches(const struct spf_check *c);          /* DNS lookups made */
int  spf_check_runs(const struct spf_check *c);             /* libspf2 evaluations made */

const char *spf_result_name(enum spf_result r);             /* "Pass", "Fail", ... (RFC 7208 9.1) */

/*
 * The Received-SPF: header (RFC 7208 9.1, postfix-policyd-spf-python's
 * layout), folded, ending in "\n". Length written, or -1 when it does not fit.
 */
int  spf_received_header(const struct spf_check *c, const char *helo, const char *sender, const char *receiver,
    char *buf, size_t len);

/*
 * Exposed for the fuzz target: a resolver answer as the libspf2 RR set it
 * stands for (an SPF_dns_rr_t *, as void * so callers need not include
 * libspf2), with its size in bytes; NULL without memory. Free with
 * spf_rr_free.
 */
void *spf_rr_from_answer(const char *name, int type, const struct dns_answer *a, size_t *bytes);
void  spf_rr_free(void *rr);

#endif
