/*
 * queue/mta_sts.h: MTA-STS (RFC 8461) for the SMTP client. Two halves:
 * - pure parsers (mta_sts_policy.c): the `_mta-sts` TXT record, the policy
 *   file, the HTTP/1.1 response that carries it, and the MX pattern match.
 *   Bounded, no I/O, fuzzed (tests/fuzz/fuzz_mta_sts.c).
 * - discovery (mta_sts.c): TXT through core/dns, the HTTPS fetch over
 *   core/transport on the loop, and the cache in queue_directory/sts/.
 * The SMTP client (smtpc.c) asks before it looks the MX up and enforces
 * what it is told; nothing here knows SMTP.
 */
#ifndef FRUGAL_QUEUE_MTA_STS_H
#define FRUGAL_QUEUE_MTA_STS_H

#include <stddef.h>

struct dns;
struct tls_ctx;

enum mta_sts_mode { MTA_STS_NONE, MTA_STS_TESTING, MTA_STS_ENFORCE };

#define MTA_STS_ID_MAX     32              /* RFC 8461 3.1: 1*32 alphanumerics */
#define MTA_STS_MX_MAX     32              /* mx patterns kept (more: the policy is invalid) */
#define MTA_STS_BODY_MAX   (64 * 1024)     /* the policy file (RFC 8461 3.3 suggests 64 KiB) */
#define MTA_STS_MAX_AGE    31557600L       /* RFC 8461 3.2: a year */

struct mta_sts_policy {
	enum mta_sts_mode mode;
	long  max_age;                         /* seconds, at most MTA_STS_MAX_AGE */
	int   nmx;
	char *mx;                              /* nmx NUL-terminated lowercase patterns back to back; owned */
	size_t mxlen;                          /* bytes of mx, all NULs included */
};

/* ---- pure parsers (mta_sts_policy.c) ---- */

/*
 * The TXT record of _mta-sts.DOMAIN: "v=STSv1; id=ID;" (RFC 8461 3.1: v first,
 * id 1*32 alphanumerics, other fields name=value ignored). 0 with id filled,
 * -1 not a valid STS record. A record that does not start with "v=STSv1" is -2
 * (some other TXT at that name: not counted).
 */
int  mta_sts_txt_parse(const char *txt, size_t len, char id[MTA_STS_ID_MAX + 1]);
/*
 * The policy file (RFC 8461 3.2): "key: value" lines ended by LF or CRLF;
 * version STSv1, mode, max_age required, mx required unless mode is none;
 * unknown keys ignored; a known key twice (mx aside) or a malformed value
 * makes it invalid. 0 with *p filled (free with mta_sts_policy_free), -1
 * invalid (why says which line), -2 out of memory.
 */
int  mta_sts_policy_parse(const char *text, size_t len, struct mta_sts_policy *p, char *why, size_t whylen);
void mta_sts_policy_free(struct mta_sts_policy *p);
/* A copy (mx duplicated): 0, or -1 without memory. */
int  mta_sts_policy_copy(struct mta_sts_policy *dst, const struct mta_sts_policy *src);
/* Does host (an MX name, any case, trailing dot or not) match a pattern ("*.x.y" covers one label)? */
int  mta_sts_mx_match(const struct mta_sts_policy *p, const char *host);
const char *mta_sts_mode_name(enum mta_sts_mode m);

/*
 * An HTTP/1.1 response as far as it has arrived (eof: the peer closed):
 * 1 complete and acceptable: 200, Content-Type text/plain, the body
 * (Content-Length, chunked or up to the close) copied to body (at most
 * MTA_STS_BODY_MAX bytes) with *blen; 0 need more; -1 refused, why says
 * (a redirect is refused: RFC 8461 3.3 says it is not followed).
 */
int  mta_sts_http_parse(const char *buf, size_t len, int eof, char *body, size_t *blen, char *why, size_t whylen);

/* ---- discovery and cache (mta_sts.c) ---- */

struct mta_sts_conf {
	struct dns *dns;                       /* the daemon's resolver */
	const char *queue_dir;                 /* the cache lives in queue_dir/sts */
	struct tls_ctx *tls;                   /* trust anchors for the HTTPS fetch (smtp_mta_sts_CAfile) */
	double timeout;                        /* smtp_mta_sts_timeout: resolve, connect and fetch */
	double failure_ttl;                    /* smtp_mta_sts_failure_cache_time: a failed fetch not retried (0: always retried) */
	const char *service;                   /* the log's service name ("smtp") */
};

/*
 * p: the policy in force (borrowed for the call), or NULL: no policy. shortage (p NULL): none
 * could be learnt for a local shortage (socket, memory, no TLS context) and none is cached:
 * the caller should wait rather than send without one (our shortage must not downgrade).
 */
typedef void (*mta_sts_cb)(void *arg, const struct mta_sts_policy *p, int shortage);
struct mta_sts_wait;

/*
 * The policy in force for domain. Returns the handle; the callback runs
 * later on the loop, exactly once, unless cancelled (never from inside this
 * call). NULL (no memory, no resolver): the caller goes on without a policy
 * it could not learn, as RFC 8461 section 5 has it for a failed discovery;
 * mta_sts_peek() still gives a cached one.
 */
struct mta_sts_wait *mta_sts_lookup(const struct mta_sts_conf *cf, const char *domain, mta_sts_cb cb, void *arg);
void mta_sts_cancel(struct mta_sts_wait *w);
/* The cached policy's mode for domain, no I/O (MTA_STS_NONE when none is cached or it expired). */
enum mta_sts_mode mta_sts_peek(const struct mta_sts_conf *cf, const char *domain);
/* Shutdown: every fetch stopped (its waiters' callbacks do not run), the memory cache dropped. */
void mta_sts_stop_all(void);

/* Counters for tests and the status report. */
struct mta_sts_stats { unsigned long fetches, fetch_failures, cache_hits, failures_remembered; int cached, inflight, failed; };
void mta_sts_stats(struct mta_sts_stats *st);

#endif
