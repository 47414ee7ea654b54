/*
 * core/dns.h: the resolver. c-ares on the loop, behind a bounded cache.
 * Lookups are asynchronous and callback-based; a caller that goes away
 * cancels its query with the handle it got. The resolver's sockets go
 * through the descriptor funnel (core/fd.h: UDP counts as numothersock,
 * the TCP fallback as numtcpsock) and c-ares's memory through core/mem.h,
 * so both are charged to the budget. Knows no SMTP.
 */
#ifndef FRUGAL_CORE_DNS_H
#define FRUGAL_CORE_DNS_H

#include <stddef.h>
#include <sys/socket.h>

struct ev_loop;

enum dns_type { DNS_A = 1, DNS_PTR = 12, DNS_MX = 15, DNS_TXT = 16, DNS_AAAA = 28 };

enum dns_status {
	DNS_FOUND,        /* at least one record of the type */
	DNS_NXDOMAIN,     /* the name does not exist */
	DNS_NODATA,       /* the name exists, with no record of this type */
	DNS_TEMPFAIL,     /* SERVFAIL, REFUSED, timeout, no socket or memory: ask again later */
};

struct dns_rr {
	unsigned ttl;
	int pref;                /* MX: preference */
	int family;              /* A: AF_INET, AAAA: AF_INET6; else 0 */
	unsigned char addr[16];  /* A (4 bytes), AAAA (16) */
	const char *text;        /* MX exchange, PTR name, TXT strings joined; NUL-terminated */
	size_t len;              /* strlen(text) (a TXT record may hold a NUL: len counts it) */
};

/* An answer. Borrowed by a callback for its duration; never modified. */
struct dns_answer {
	enum dns_status status;
	enum dns_type type;
	int n;                   /* records in rr (bounded: DNS_MAX_RR, DNS_ANSWER_MAX bytes) */
	unsigned ttl;            /* how long it is cached (0: not cached) */
	const char *why;         /* TEMPFAIL: c-ares's reason, for the log; else "" */
	const struct dns_rr *rr;
};

#define DNS_MAX_RR     64
#define DNS_ANSWER_MAX (16 * 1024)   /* bytes of one parsed answer, all included */
#define DNS_NAME_MAX   255

struct dns_opts {
	int timeout_ms;          /* first try (c-ares doubles it per retry); 0: 2000 */
	int tries;               /* 0: 2 */
	int cache_entries;       /* 0: 1000; negative: no cache */
	size_t cache_bytes;      /* 0: 256 KiB */
	int negative_ttl_max;    /* seconds an NXDOMAIN/NODATA is kept at most; 0: 60 */
	const char *hosts_file;  /* for dns_lookup_sys; NULL: $FRUGAL_HOSTS_FILE (tests only), else /etc/hosts */
};

struct dns;
struct dns_query;
typedef void (*dns_cb)(void *arg, const struct dns_answer *a);

/* NULL with err set (out of memory, bad servers). servers: as dns_set_servers. */
struct dns *dns_new(struct ev_loop *loop, const struct dns_opts *o, const char *servers,
    char *err, size_t errlen);
/* Outstanding queries are dropped without their callbacks. */
void dns_free(struct dns *d);
/*
 * dns_servers: "" reads /etc/resolv.conf (again: a reload picks up a
 * change), else "ip", "ip:port", "[v6]:port", comma or space separated.
 * 0, or -1 with err (the old servers stay). A reload: the hosts file is
 * read again too (a file that cannot be read keeps the old table, warned).
 */
int  dns_set_servers(struct dns *d, const char *servers, char *err, size_t errlen);

/*
 * Look name up. The callback runs later, on the loop, exactly once unless
 * the query is cancelled first (never from inside dns_lookup). Returns the
 * handle, or NULL with errno (ENOMEM, EINVAL for a bad name): the caller
 * treats that as a temporary failure.
 */
struct dns_query *dns_lookup(struct dns *d, const char *name, enum dns_type t, dns_cb cb, void *arg);
/*
 * As the system resolver answers with nsswitch's "hosts: files dns": an A,
 * AAAA or PTR name the hosts file lists is answered from it (read by
 * dns_new and each reload, never per lookup; not cached, not counted as a
 * query), anything else as dns_lookup. For the client's name
 * (smtpd/peer.c), where Postfix asks the system resolver; MX hosts and
 * sender domains stay DNS only, as Postfix's smtp_host_lookup = dns.
 */
struct dns_query *dns_lookup_sys(struct dns *d, const char *name, enum dns_type t, dns_cb cb, void *arg);
/* The callback will not run; the handle is invalid from now on. */
void dns_cancel(struct dns_query *q);

/* The PTR name of an address ("4.3.2.1.in-addr.arpa"; v4-mapped v6 as v4): 0, or -1. */
int  dns_ptr_name(const struct sockaddr *sa, char *out, size_t outlen);

/* Counters, for tests and the status report. */
struct dns_stats {
	unsigned long queries;        /* sent to c-ares */
	unsigned long cache_hits;
	int cache_entries;
	size_t cache_bytes;
	int pending;                  /* queries in flight or waiting for delivery */
	unsigned long hosts_hits;     /* dns_lookup_sys answers from the hosts file */
	int hosts_lines;              /* address lines of the hosts file held */
};
void dns_stats(const struct dns *d, struct dns_stats *st);

/*
 * Exposed for the fuzz target and unit tests: turn a raw DNS message (the
 * answer to a query of type t, with c-ares's status) into one allocation
 * (mem_alloc'd, free with mem_free). NULL only without memory.
 */
struct dns_answer *dns_parse_answer(enum dns_type t, int ares_status, const unsigned char *abuf, int alen,
    int negative_ttl_max);
void dns_answer_free(struct dns_answer *a);

/*
 * Names from the hosts file only (/etc/hosts; no network): the canonical
 * name of `name` into out. 0, or -1 (not listed). For start-up, where a
 * blocking DNS call must not happen (conf_system_hostname).
 */
int  dns_hosts_canonical(const char *name, char *out, size_t outlen);

#endif
