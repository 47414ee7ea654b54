/*
 * core/dns.c: the resolver (core/dns.h). One c-ares channel on the libev
 * loop: c-ares tells us which sockets to watch (sock_state_cb -> one ev_io
 * each) and when to wake (ares_timeout -> one ev_timer). In front of it a
 * bounded cache: at most cache_entries answers and cache_bytes bytes,
 * least recently used first out, each kept for its TTL (negative answers
 * for at most negative_ttl_max seconds, RFC 2308; temporary failures not
 * at all).
 *
 * Owns: the channel, its sockets (opened and closed through core/fd.h, so
 * the ledger counts them by kind), the watchers, the cache, and every
 * query until it is delivered or, cancelled, until c-ares is done with it
 * (c-ares has no per-query cancel: a cancelled query only loses its
 * callback, and its answer still fills the cache).
 *
 * The hosts file (dns_lookup_sys): read whole at dns_new and at each
 * reload into a list of its address lines, bounded by HOSTS_MAX_BYTES;
 * lookups walk it in memory, so no file is read on the loop per lookup.
 * c-ares 1.18 can read the file itself, but ares_gethostbyaddr re-reads
 * the fixed /etc/hosts on every call and only ares_getaddrinfo takes
 * another path (CARES_HOSTS): a test could not point the reverse lookup
 * at its own file, and every connection would pay a file read.
 *
 * Callbacks are never called from inside dns_lookup(): a cache hit, and a
 * c-ares failure reported synchronously (no socket), are queued and
 * delivered from an ev_prepare, so a caller never re-enters itself.
 *
 * Parsing: c-ares's own parsers give the records; the one thing parsed
 * here is the TTL (c-ares does not report it for MX, PTR and TXT, nor the
 * SOA minimum of a negative answer): answer_ttl(), a bounded walk over the
 * message, fuzzed by tests/fuzz/fuzz_dns_answer.c.
 */
#include "core/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"

#define CACHE_BUCKETS 256
#define POSITIVE_TTL_MAX 86400   /* a day, as Postfix's own caches never keep more */
#define HOSTS_MAX_BYTES (1024 * 1024)   /* of parsed lines held; the rest of a bigger file is ignored, warned */

/* One address line of the hosts file. */
struct hline {
	struct hline *next;
	int family;                  /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	char ptr[80];                /* dns_ptr_name of addr: what a PTR lookup asks */
	size_t len;                  /* bytes of names */
	char names[];                /* lower case, each NUL-terminated; the first is the canonical name */
};

/* An answer with its reference count: the cache and queries waiting for delivery share it. */
struct ablock {
	int refs;
	size_t bytes;                /* the whole allocation, charged to the cache */
	struct dns_answer a;         /* rr and the strings follow in the same block */
};

struct centry {
	struct centry *hnext;        /* bucket chain */
	struct centry *older, *newer;/* LRU list */
	ev_tstamp expires;
	enum dns_type type;
	struct ablock *ans;          /* one reference */
	char name[DNS_NAME_MAX + 1]; /* lower case */
};

struct sockw {
	ev_io io;                    /* first member: the callback casts back */
	struct dns *d;
	struct sockw *next;
};

struct dns_query {
	struct dns *d;
	struct dns_query *next;      /* ready list */
	dns_cb cb;                   /* NULL once cancelled */
	void *arg;
	struct ablock *ans;          /* one reference, once answered */
	int in_ares;                 /* c-ares still holds it */
	enum dns_type type;
	char name[DNS_NAME_MAX + 1];
};

struct dns {
	struct ev_loop *loop;
	ares_channel ch;
	struct dns_opts o;
	ev_timer timer;              /* ares_timeout() */
	ev_prepare deliver;          /* runs the callbacks of the ready list */
	struct sockw *socks;
	struct dns_query *ready, **ready_tail;
	int in_ares;                 /* queries c-ares holds */
	char *pending_servers;       /* dns_set_servers while queries were in flight: applied after */
	struct centry *bucket[CACHE_BUCKETS];
	struct centry *oldest, *newest;
	int nentries;
	size_t nbytes;
	struct dns_stats st;
	struct hline *hosts;         /* the hosts file, in file order */
	size_t hosts_bytes;
	char hosts_path[256];
	int destroying;
};

static struct log_rate sock_rate = LOG_RATE_INIT(60, 5);

/* ---- the library: once per process, c-ares's memory through ours ---------- */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_status = -1;

static void lib_init(void)
{
	lib_status = ares_library_init_mem(ARES_LIB_INIT_ALL, mem_alloc, mem_free, mem_realloc);
}

static int lib_ready(void)
{
	pthread_once(&lib_once, lib_init);
	return lib_status == ARES_SUCCESS ? 0 : -1;
}

/* ---- sockets through the funnel ------------------------------------------- */

static ares_socket_t f_socket(int domain, int type, int protocol, void *data)
{
	/* c-ares 1.18 leaves sockets from these hooks blocking (and reads until EAGAIN): never on our loop */
	int fd = fd_socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);

	if (fd < 0)   /* c-ares fails the query: a temporary failure for the caller */
		log_ratelimited(&sock_rate, "dns", "no %s socket for a DNS query: %s", type == SOCK_STREAM ?
		    "TCP (numtcpsock)" : "UDP (numothersock)", strerror(errno));
	return fd < 0 ? ARES_SOCKET_BAD : fd;
}

static int f_close(ares_socket_t fd, void *data) { return fd_close(fd); }

static int f_connect(ares_socket_t fd, const struct sockaddr *sa, ares_socklen_t len, void *data)
{
	return connect(fd, sa, len);
}

static ares_ssize_t f_recvfrom(ares_socket_t fd, void *buf, size_t len, int flags, struct sockaddr *from,
    ares_socklen_t *fromlen, void *data)
{
	return recvfrom(fd, buf, len, flags, from, fromlen);
}

static ares_ssize_t f_sendv(ares_socket_t fd, const struct iovec *iov, int n, void *data)
{
	return writev(fd, iov, n);
}

static const struct ares_socket_functions funnel = { f_socket, f_close, f_connect, f_recvfrom, f_sendv };

/* ---- the loop -------------------------------------------------------------- */

static void update_timer(struct dns *d)
{
	struct timeval tv, *tvp = ares_timeout(d->ch, NULL, &tv);

	ev_timer_stop(d->loop, &d->timer);
	if (tvp) {
		ev_timer_set(&d->timer, (double)tvp->tv_sec + tvp->tv_usec / 1e6 + 0.001, 0.);
		ev_timer_start(d->loop, &d->timer);
	}
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sockw *s = (struct sockw *)w;
	struct dns *d = s->d;
	int fd = w->fd;

	/* may close this very socket (sock_state_cb frees s): nothing of s after it */
	ares_process_fd(d->ch, (revents & EV_READ) ? fd : ARES_SOCKET_BAD, (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	update_timer(d);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dns *d = (struct dns *)((char *)w - offsetof(struct dns, timer));

	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	update_timer(d);
}

static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct sockw **pp, *s;

	for (pp = &d->socks; *pp && (*pp)->io.fd != fd; pp = &(*pp)->next)
		;
	s = *pp;
	if (!readable && !writable) {
		if (s) {
			ev_io_stop(d->loop, &s->io);
			*pp = s->next;
			mem_free(s);
		}
		return;
	}
	if (s == NULL) {
		if ((s = mem_calloc(1, sizeof *s)) == NULL) {
			/* unwatched: the timer still ends its queries (as timeouts) */
			log_ratelimited(&sock_rate, "dns", "memory budget exhausted: DNS socket %d not watched", fd);
			return;
		}
		s->d = d;
		s->next = d->socks;
		d->socks = s;
		ev_io_init(&s->io, io_cb, fd, 0);
	}
	ev_io_stop(d->loop, &s->io);
	ev_io_set(&s->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
	ev_io_start(d->loop, &s->io);
}

/* ---- answers --------------------------------------------------------------- */

static void ablock_unref(struct ablock *b)
{
	if (b && --b->refs == 0)
		mem_free(b);
}

/* Skip one (possibly compressed) name at *off: 0, or -1 when it runs off the message. */
static int skip_name(const unsigned char *m, int len, int *off)
{
	int o = *off, hops = 0;

	while (o < len) {
		unsigned l = m[o];
		if ((l & 0xc0) == 0xc0) {   /* a pointer ends the name here */
			if (o + 2 > len)
				return -1;
			*off = o + 2;
			return 0;
		}
		if (l & 0xc0)
			return -1;
		if (l == 0) {
			*off = o + 1;
			return 0;
		}
		o += 1 + (int)l;
		if (++hops > 128)
			return -1;
	}
	return -1;
}

static unsigned get16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }
static unsigned long get32(const unsigned char *p)
{
	return (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | p[3];
}

/*
 * The TTL to cache an answer for: the least TTL of the answer records of
 * the type asked (or CNAMEs on the way), or for a negative answer the
 * SOA's TTL bounded by its minimum field (RFC 2308 section 5). -1 when
 * the message gives none (not cached).
 */
static long answer_ttl(const unsigned char *m, int len, enum dns_type t, int negative)
{
	int off = 12, i;
	unsigned qd, an, ns;
	long best = -1;

	if (m == NULL || len < 12)
		return -1;
	qd = get16(m + 4);
	an = get16(m + 6);
	ns = get16(m + 8);
	for (i = 0; i < (int)qd; i++) {
		if (skip_name(m, len, &off) < 0 || off + 4 > len)
			return -1;
		off += 4;
	}
	for (i = 0; i < (int)(an + ns); i++) {
		unsigned type, rdlen;
		long ttl;

		if (skip_name(m, len, &off) < 0 || off + 10 > len)
			return best;
		type = get16(m + off);
		ttl = (long)(get32(m + off + 4) & 0x7fffffffUL);   /* RFC 2181 8: the top bit set means 0 */
		if (get32(m + off + 4) & 0x80000000UL)
			ttl = 0;
		rdlen = get16(m + off + 8);
		off += 10;
		if (off + (int)rdlen > len)
			return best;
		if (i < (int)an && !negative && (type == (unsigned)t || type == ns_t_cname)) {
			if (best < 0 || ttl < best)
				best = ttl;
		} else if (i >= (int)an && negative && type == ns_t_soa && rdlen >= 20) {
			long min = (long)(get32(m + off + rdlen - 4) & 0x7fffffffUL);
			long v = ttl < min ? ttl : min;
			if (best < 0 || v < best)
				best = v;
		}
		off += (int)rdlen;
	}
	return best;
}

/* Records parsed by c-ares, before they are packed into one block. */
struct tmp_rr {
	struct dns_rr rr;
	char *owned;   /* mem_alloc'd text (TXT), or NULL */
};

static struct ablock *pack(enum dns_type t, enum dns_status status, const char *why, struct tmp_rr *v, int n,
    long ttl)
{
	size_t size = sizeof(struct ablock), whylen = strlen(why) + 1, room;
	struct ablock *b;
	struct dns_rr *rr;
	char *p;
	int i, keep = 0;

	size += whylen;
	/* keep the records that fit in DNS_ANSWER_MAX, in order */
	for (i = 0; i < n; i++) {
		size_t need = sizeof(struct dns_rr) + (v[i].rr.text ? v[i].rr.len + 1 : 0);
		if (size + need > DNS_ANSWER_MAX)
			break;
		size += need;
		keep++;
	}
	if ((b = mem_calloc(1, size)) == NULL)
		return NULL;
	b->refs = 1;
	b->bytes = size;
	rr = (struct dns_rr *)(b + 1);
	p = (char *)(rr + keep);
	room = size - (size_t)(p - (char *)b);
	for (i = 0; i < keep; i++) {
		rr[i] = v[i].rr;
		if (v[i].rr.text) {
			memcpy(p, v[i].rr.text, v[i].rr.len);
			p[v[i].rr.len] = '\0';
			rr[i].text = p;
			p += v[i].rr.len + 1;
		}
	}
	memcpy(p, why, whylen);
	(void)room;
	b->a.status = keep == 0 && status == DNS_FOUND ? DNS_NODATA : status;
	b->a.type = t;
	b->a.n = keep;
	b->a.rr = rr;
	b->a.why = p;
	b->a.ttl = ttl < 0 ? 0 : (unsigned)ttl;
	return b;
}

static struct ablock *parse(enum dns_type t, int status, const unsigned char *abuf, int alen, int negmax)
{
	struct tmp_rr v[DNS_MAX_RR];
	int n = 0, i, r = status;
	long ttl;
	struct ablock *b;

	memset(v, 0, sizeof v);
	if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
		ttl = answer_ttl(abuf, alen, t, 1);
		if (ttl > negmax)
			ttl = negmax;
		return pack(t, status == ARES_ENOTFOUND ? DNS_NXDOMAIN : DNS_NODATA, "", v, 0, ttl);
	}
	if (status != ARES_SUCCESS || abuf == NULL)
		return pack(t, DNS_TEMPFAIL, ares_strerror(status), v, 0, -1);
	switch (t) {
	case DNS_A: {
		struct ares_addrttl at[DNS_MAX_RR];
		n = DNS_MAX_RR;
		if ((r = ares_parse_a_reply(abuf, alen, NULL, at, &n)) != ARES_SUCCESS)
			break;
		for (i = 0; i < n; i++) {
			v[i].rr.family = AF_INET;
			memcpy(v[i].rr.addr, &at[i].ipaddr, 4);
			v[i].rr.ttl = at[i].ttl < 0 ? 0 : (unsigned)at[i].ttl;
		}
		break;
	}
	case DNS_AAAA: {
		struct ares_addr6ttl at[DNS_MAX_RR];
		n = DNS_MAX_RR;
		if ((r = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n)) != ARES_SUCCESS)
			break;
		for (i = 0; i < n; i++) {
			v[i].rr.family = AF_INET6;
			memcpy(v[i].rr.addr, &at[i].ip6addr, 16);
			v[i].rr.ttl = at[i].ttl < 0 ? 0 : (unsigned)at[i].ttl;
		}
		break;
	}
	case DNS_MX: {
		struct ares_mx_reply *mx = NULL, *m;
		if ((r = ares_parse_mx_reply(abuf, alen, &mx)) != ARES_SUCCESS)
			break;
		for (m = mx; m && n < DNS_MAX_RR; m = m->next, n++) {
			v[n].rr.pref = m->priority;
			v[n].owned = mem_strdup(m->host ? m->host : "");
			v[n].rr.text = v[n].owned;
			v[n].rr.len = v[n].owned ? strlen(v[n].owned) : 0;
			if (v[n].owned == NULL)
				r = ARES_ENOMEM;
		}
		ares_free_data(mx);
		break;
	}
	case DNS_PTR: {
		struct hostent *h = NULL;
		unsigned char dummy[4] = { 0 };
		if ((r = ares_parse_ptr_reply(abuf, alen, dummy, 4, AF_INET, &h)) != ARES_SUCCESS)
			break;
		if (h->h_name) {
			v[n].owned = mem_strdup(h->h_name);
			v[n].rr.text = v[n].owned;
			v[n].rr.len = v[n].owned ? strlen(v[n].owned) : 0;
			if (v[n].owned == NULL)
				r = ARES_ENOMEM;
			n++;
		}
		for (i = 0; h->h_aliases && h->h_aliases[i] && n < DNS_MAX_RR; i++) {
			if (h->h_name && strcmp(h->h_aliases[i], h->h_name) == 0)
				continue;
			v[n].owned = mem_strdup(h->h_aliases[i]);
			v[n].rr.text = v[n].owned;
			v[n].rr.len = v[n].owned ? strlen(v[n].owned) : 0;
			if (v[n].owned == NULL)
				r = ARES_ENOMEM;
			n++;
		}
		ares_free_hostent(h);
		break;
	}
	case DNS_TXT: {
		struct ares_txt_ext *txt = NULL, *x;
		if ((r = ares_parse_txt_reply_ext(abuf, alen, &txt)) != ARES_SUCCESS)
			break;
		/* one record is several strings (RFC 7208 3.3: joined without spaces) */
		for (x = txt; x && r == ARES_SUCCESS; x = x->next) {
			size_t old;
			char *nt;
			if (x->record_start || n == 0) {
				if (n == DNS_MAX_RR)
					break;
				n++;
			}
			old = v[n - 1].rr.len;
			if (old + x->length > DNS_ANSWER_MAX) {
				r = ARES_EBADRESP;
				break;
			}
			if ((nt = mem_realloc(v[n - 1].owned, old + x->length + 1)) == NULL) {
				r = ARES_ENOMEM;
				break;
			}
			memcpy(nt + old, x->txt, x->length);
			nt[old + x->length] = '\0';
			v[n - 1].owned = nt;
			v[n - 1].rr.text = nt;
			v[n - 1].rr.len = old + x->length;
		}
		ares_free_data(txt);
		break;
	}
	}
	ttl = answer_ttl(abuf, alen, t, 0);
	if (ttl > POSITIVE_TTL_MAX)
		ttl = POSITIVE_TTL_MAX;
	for (i = 0; i < n; i++)
		v[i].rr.ttl = t == DNS_A || t == DNS_AAAA ? v[i].rr.ttl : (unsigned)(ttl < 0 ? 0 : ttl);
	if (r == ARES_ENODATA)
		b = pack(t, DNS_NODATA, "", v, 0, negmax < ttl || ttl < 0 ? negmax : ttl);
	else if (r != ARES_SUCCESS)
		b = pack(t, DNS_TEMPFAIL, ares_strerror(r), v, 0, -1);
	else
		b = pack(t, DNS_FOUND, "", v, n, ttl);
	/* "found" with no record kept (e.g. a TXT answer of no strings) is no data: cached as briefly */
	if (b && b->a.status == DNS_NODATA && b->a.ttl > (unsigned)negmax)
		b->a.ttl = (unsigned)negmax;
	for (i = 0; i < DNS_MAX_RR; i++)
		mem_free(v[i].owned);
	return b;
}

struct dns_answer *dns_parse_answer(enum dns_type t, int ares_status, const unsigned char *abuf, int alen,
    int negative_ttl_max)
{
	struct ablock *b = parse(t, ares_status, abuf, alen, negative_ttl_max);
	return b ? &b->a : NULL;
}

void dns_answer_free(struct dns_answer *a)
{
	if (a)
		ablock_unref((struct ablock *)((char *)a - offsetof(struct ablock, a)));
}

/* A static answer for when there is no memory to make one. */
static struct ablock nomem_answer = { 1 << 30, 0, { DNS_TEMPFAIL, DNS_A, 0, 0, "out of memory", NULL } };

/* ---- the cache -------------------------------------------------------------- */

static unsigned hash(const char *name, enum dns_type t)
{
	unsigned h = 2166136261u ^ (unsigned)t;
	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 16777619u;
	return h % CACHE_BUCKETS;
}

static void centry_unlink(struct dns *d, struct centry *e)
{
	struct centry **pp = &d->bucket[hash(e->name, e->type)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->older) e->older->newer = e->newer; else d->oldest = e->newer;
	if (e->newer) e->newer->older = e->older; else d->newest = e->older;
	d->nentries--;
	d->nbytes -= e->ans->bytes + sizeof *e;
	ablock_unref(e->ans);
	mem_free(e);
}

static void lru_front(struct dns *d, struct centry *e)
{
	if (d->newest == e)
		return;
	if (e->older) e->older->newer = e->newer; else d->oldest = e->newer;
	if (e->newer) e->newer->older = e->older;
	e->older = d->newest;
	e->newer = NULL;
	if (d->newest) d->newest->newer = e;
	d->newest = e;
	if (!d->oldest) d->oldest = e;
}

static struct centry *cache_find(struct dns *d, const char *name, enum dns_type t)
{
	struct centry *e;

	for (e = d->bucket[hash(name, t)]; e; e = e->hnext)
		if (e->type == t && strcmp(e->name, name) == 0)
			break;
	if (e && e->expires <= ev_now(d->loop)) {
		centry_unlink(d, e);
		return NULL;
	}
	if (e)
		lru_front(d, e);
	return e;
}

static void cache_put(struct dns *d, const char *name, enum dns_type t, struct ablock *b)
{
	struct centry *e;
	size_t need = b->bytes + sizeof *e;

	if (d->o.cache_entries < 0 || b->a.ttl == 0 || b->a.status == DNS_TEMPFAIL || need > d->o.cache_bytes)
		return;
	if ((e = cache_find(d, name, t)) != NULL)
		centry_unlink(d, e);
	while (d->oldest && (d->nentries >= d->o.cache_entries || d->nbytes + need > d->o.cache_bytes))
		centry_unlink(d, d->oldest);
	if ((e = mem_calloc(1, sizeof *e)) == NULL)
		return;   /* not cached: the next lookup asks again */
	snprintf(e->name, sizeof e->name, "%s", name);
	e->type = t;
	e->expires = ev_now(d->loop) + b->a.ttl;
	e->ans = b;
	b->refs++;
	e->hnext = d->bucket[hash(name, t)];
	d->bucket[hash(name, t)] = e;
	e->older = d->newest;
	if (d->newest) d->newest->newer = e;
	d->newest = e;
	if (!d->oldest) d->oldest = e;
	d->nentries++;
	d->nbytes += need;
}

/* ---- queries ---------------------------------------------------------------- */

static void ready_push(struct dns *d, struct dns_query *q)
{
	q->next = NULL;
	*d->ready_tail = q;
	d->ready_tail = &q->next;
	ev_prepare_start(d->loop, &d->deliver);
	/*
	 * And pending now: a prepare watcher started from a prepare callback (qmgr's kick_cb
	 * dispatching a delivery whose MX answer is cached) is not run before this iteration's
	 * poll, which then sleeps until some other event, up to the next timer (a relay waited
	 * a second on a quiet daemon; found by test_faults_out). Run twice, deliver_cb is harmless.
	 */
	ev_feed_event(d->loop, &d->deliver, EV_PREPARE);
}

static void query_free(struct dns *d, struct dns_query *q)
{
	if (q->ans != &nomem_answer)
		ablock_unref(q->ans);
	d->st.pending--;
	mem_free(q);
}

static void apply_pending_servers(struct dns *d);

static void ares_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query *q = arg;
	struct dns *d = q->d;

	q->in_ares = 0;
	d->in_ares--;
	if (d->destroying) {
		query_free(d, q);
		return;
	}
	if ((q->ans = parse(q->type, status, abuf, alen, d->o.negative_ttl_max)) == NULL)
		q->ans = &nomem_answer;
	else
		cache_put(d, q->name, q->type, q->ans);
	if (q->cb)
		ready_push(d, q);
	else
		query_free(d, q);   /* cancelled: only the cache wanted it */
	if (d->in_ares == 0 && d->pending_servers)
		apply_pending_servers(d);
}

static void deliver_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct dns *d = (struct dns *)((char *)w - offsetof(struct dns, deliver));
	struct dns_query *q;

	/* callbacks may start new lookups (appended to the list): they run in this pass or the next */
	while ((q = d->ready) != NULL) {
		d->ready = q->next;
		if (d->ready == NULL)
			d->ready_tail = &d->ready;
		if (q->cb)
			q->cb(q->arg, &q->ans->a);
		query_free(d, q);
	}
	ev_prepare_stop(loop, w);
}

static int valid_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > DNS_NAME_MAX)
		return 0;
	for (; *name; name++)
		if ((unsigned char)*name <= ' ' || *name == 0x7f)
			return 0;
	return 1;
}

/* The query for name, its name in the form the cache and the hosts table compare; NULL with errno. */
static struct dns_query *query_new(struct dns *d, const char *name, enum dns_type t, dns_cb cb, void *arg)
{
	struct dns_query *q;
	size_t i;

	if (!valid_name(name)) {
		errno = EINVAL;
		return NULL;
	}
	if ((q = mem_calloc(1, sizeof *q)) == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	q->d = d;
	q->cb = cb;
	q->arg = arg;
	q->type = t;
	for (i = 0; name[i]; i++)   /* DNS names compare without case (RFC 4343) */
		q->name[i] = (char)tolower((unsigned char)name[i]);
	if (i > 1 && q->name[i - 1] == '.')   /* "example.org." and "example.org" are one entry */
		q->name[i - 1] = '\0';
	d->st.pending++;
	return q;
}

/* Ask c-ares (or the cache) for q. */
static struct dns_query *query_start(struct dns *d, struct dns_query *q)
{
	struct centry *e;
	enum dns_type t = q->type;

	if ((e = cache_find(d, q->name, t)) != NULL) {
		d->st.cache_hits++;
		q->ans = e->ans;
		q->ans->refs++;
		ready_push(d, q);
		return q;
	}
	d->st.queries++;
	q->in_ares = 1;
	d->in_ares++;
	/* may call ares_done at once (no socket): that only queues the answer */
	ares_query(d->ch, q->name, ns_c_in, (int)t, ares_done, q);
	update_timer(d);
	return q;
}

struct dns_query *dns_lookup(struct dns *d, const char *name, enum dns_type t, dns_cb cb, void *arg)
{
	struct dns_query *q = query_new(d, name, t, cb, arg);

	return q ? query_start(d, q) : NULL;
}

/* ---- the hosts file ---------------------------------------------------------- */

static void hosts_free(struct hline *h)
{
	struct hline *next;

	for (; h; h = next) {
		next = h->next;
		mem_free(h);
	}
}

/*
 * Read the hosts file as glibc's files backend reads it: "ADDRESS NAME
 * [ALIAS...]", '#' to the end of the line a comment, lines whose first
 * field is no address skipped. 0 (a missing file is an empty table), or
 * -1 with err (the old table stays).
 */
static int hosts_load(struct dns *d, char *err, size_t errlen)
{
	struct hline *list = NULL, **tail = &list, *h;
	size_t bytes = 0;
	char line[4096];
	FILE *f;

	if ((f = fopen(d->hosts_path, "re")) == NULL) {
		if (errno != ENOENT) {
			snprintf(err, errlen, "dns: %s: %s", d->hosts_path, strerror(errno));
			return -1;
		}
	} else {
		while (fgets(line, sizeof line, f)) {
			char names[sizeof line], *tok, *save, *c;
			unsigned char a[16];
			size_t len = 0, n, i;
			int fam, ch;
			struct sockaddr_storage ss;

			if (strchr(line, '\n') == NULL && !feof(f)) {
				/* longer than any sane line: skip it whole */
				while ((ch = getc(f)) != EOF && ch != '\n')
					;
				continue;
			}
			if ((c = strchr(line, '#')) != NULL)
				*c = '\0';
			if ((tok = strtok_r(line, " \t\r\n", &save)) == NULL)
				continue;
			memset(&ss, 0, sizeof ss);
			if (inet_pton(AF_INET, tok, a) == 1) {
				fam = AF_INET;
				memcpy(&((struct sockaddr_in *)&ss)->sin_addr, a, 4);
			} else if (inet_pton(AF_INET6, tok, a) == 1) {
				fam = AF_INET6;
				memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, a, 16);
			} else {
				continue;
			}
			ss.ss_family = (sa_family_t)fam;
			while ((tok = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
				n = strlen(tok);
				if (n > 1 && tok[n - 1] == '.')
					n--;
				if (n > DNS_NAME_MAX)
					continue;
				for (i = 0; i < n; i++)
					names[len + i] = (char)tolower((unsigned char)tok[i]);
				names[len + n] = '\0';
				len += n + 1;
			}
			if (len == 0)
				continue;
			if (bytes + sizeof *h + len > HOSTS_MAX_BYTES) {
				log_warning("dns", "%s: more than %d KiB of entries: the rest is ignored", d->hosts_path,
				    HOSTS_MAX_BYTES / 1024);
				break;
			}
			if ((h = mem_calloc(1, sizeof *h + len)) == NULL) {
				snprintf(err, errlen, "dns: %s: out of memory", d->hosts_path);
				fclose(f);
				hosts_free(list);
				return -1;
			}
			h->family = fam;
			memcpy(h->addr, a, fam == AF_INET ? 4 : 16);
			if (dns_ptr_name((const struct sockaddr *)&ss, h->ptr, sizeof h->ptr) < 0)
				h->ptr[0] = '\0';
			h->len = len;
			memcpy(h->names, names, len);
			*tail = h;
			tail = &h->next;
			bytes += sizeof *h + len;
			d->st.hosts_lines++;
		}
		fclose(f);
	}
	hosts_free(d->hosts);
	d->hosts = list;
	d->hosts_bytes = bytes;
	return 0;
}

static int hosts_reload(struct dns *d, char *err, size_t errlen)
{
	int old = d->st.hosts_lines;

	d->st.hosts_lines = 0;
	if (hosts_load(d, err, errlen) < 0) {
		d->st.hosts_lines = old;
		return -1;
	}
	return 0;
}

/*
 * Whether the hosts file lists q (1) or not (0: ask DNS); when listed, its
 * answer in *out (NULL without memory). A PTR gets
 * the canonical name of the first line with the address (glibc without
 * "multi on"); A and AAAA every address of the family on lines naming it.
 */
static int hosts_answer(struct dns *d, const struct dns_query *q, struct ablock **out)
{
	struct tmp_rr v[DNS_MAX_RR];
	const struct hline *h;
	const char *p;
	int n = 0, fam = q->type == DNS_A ? AF_INET : AF_INET6;

	memset(v, 0, sizeof v);
	for (h = d->hosts; h && n < DNS_MAX_RR; h = h->next) {
		if (q->type == DNS_PTR) {
			if (strcmp(h->ptr, q->name) == 0) {
				v[n].rr.text = h->names;
				v[n++].rr.len = strlen(h->names);
				break;
			}
			continue;
		}
		if (h->family != fam)
			continue;
		for (p = h->names; p < h->names + h->len; p += strlen(p) + 1)
			if (strcmp(p, q->name) == 0) {
				v[n].rr.family = fam;
				memcpy(v[n++].rr.addr, h->addr, fam == AF_INET ? 4 : 16);
				break;
			}
	}
	if (n == 0)
		return 0;
	*out = pack(q->type, DNS_FOUND, "", v, n, 0);   /* ttl 0: not cached, the table is the cache */
	return 1;
}

struct dns_query *dns_lookup_sys(struct dns *d, const char *name, enum dns_type t, dns_cb cb, void *arg)
{
	struct dns_query *q = query_new(d, name, t, cb, arg);

	if (q == NULL)
		return NULL;
	if (d->hosts && (t == DNS_A || t == DNS_AAAA || t == DNS_PTR)) {
		struct ablock *b = NULL;
		if (hosts_answer(d, q, &b)) {
			q->ans = b ? b : &nomem_answer;
			d->st.hosts_hits++;
			ready_push(d, q);
			return q;
		}
	}
	return query_start(d, q);
}

void dns_cancel(struct dns_query *q)
{
	if (q)
		q->cb = NULL;   /* freed when delivered or when c-ares lets go of it */
}

/* ---- servers ---------------------------------------------------------------- */

static int set_servers_now(struct dns *d, const char *servers, char *err, size_t errlen)
{
	int r;

	if (*servers == '\0') {
		/* /etc/resolv.conf, read afresh: a channel of its own gives its servers */
		ares_channel tmp;
		struct ares_addr_port_node *list = NULL;

		if ((r = ares_init(&tmp)) != ARES_SUCCESS) {
			snprintf(err, errlen, "dns: reading /etc/resolv.conf: %s", ares_strerror(r));
			return -1;
		}
		if ((r = ares_get_servers_ports(tmp, &list)) == ARES_SUCCESS)
			r = ares_set_servers_ports(d->ch, list);
		ares_free_data(list);
		ares_destroy(tmp);
	} else {
		char csv[1024];
		size_t i;

		if (strlen(servers) >= sizeof csv) {
			snprintf(err, errlen, "dns_servers: too long");
			return -1;
		}
		/* a frugal.conf list is separated by commas or white space; c-ares wants commas */
		for (i = 0; servers[i]; i++)
			csv[i] = servers[i] == ' ' || servers[i] == '\t' || servers[i] == '\n' ? ',' : servers[i];
		csv[i] = '\0';
		r = ares_set_servers_ports_csv(d->ch, csv);
	}
	if (r != ARES_SUCCESS) {
		snprintf(err, errlen, "dns_servers \"%s\": %s", servers, ares_strerror(r));
		return -1;
	}
	return 0;
}

static void apply_pending_servers(struct dns *d)
{
	char err[256];
	char *s = d->pending_servers;

	d->pending_servers = NULL;
	if (set_servers_now(d, s, err, sizeof err) < 0)
		log_warning("dns", "%s", err);
	mem_free(s);
}

int dns_set_servers(struct dns *d, const char *servers, char *err, size_t errlen)
{
	char herr[256];

	/* a reload: the hosts file may have changed too (its failure is not the servers') */
	if (hosts_reload(d, herr, sizeof herr) < 0)
		log_warning("dns", "%s; keeping the hosts entries read before", herr);
	if (d->in_ares > 0) {
		/* c-ares refuses to change servers under live queries: after the last one */
		char *s = mem_strdup(servers);
		if (s == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		mem_free(d->pending_servers);
		d->pending_servers = s;
		return 0;
	}
	return set_servers_now(d, servers, err, errlen);
}

/* ---- life ------------------------------------------------------------------- */

struct dns *dns_new(struct ev_loop *loop, const struct dns_opts *o, const char *servers, char *err, size_t errlen)
{
	struct ares_options ao;
	struct dns *d;
	int r;

	const char *hosts;

	if (lib_ready() < 0) {
		snprintf(err, errlen, "c-ares: library initialisation failed");
		return NULL;
	}
	if ((d = mem_calloc(1, sizeof *d)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (o)
		d->o = *o;
	/* FRUGAL_HOSTS_FILE: the tests' way to give the daemon a hosts file of their own */
	if ((hosts = d->o.hosts_file) == NULL && (hosts = getenv("FRUGAL_HOSTS_FILE")) == NULL)
		hosts = "/etc/hosts";
	snprintf(d->hosts_path, sizeof d->hosts_path, "%s", hosts);
	d->o.hosts_file = NULL;   /* the caller's string is not kept */
	if (hosts_load(d, err, errlen) < 0) {
		mem_free(d);
		return NULL;
	}
	if (d->o.timeout_ms <= 0) d->o.timeout_ms = 2000;
	if (d->o.tries <= 0) d->o.tries = 2;
	if (d->o.cache_entries == 0) d->o.cache_entries = 1000;
	if (d->o.cache_bytes == 0) d->o.cache_bytes = 256 * 1024;
	if (d->o.negative_ttl_max <= 0) d->o.negative_ttl_max = 60;
	d->loop = loop;
	d->ready_tail = &d->ready;
	memset(&ao, 0, sizeof ao);
	ao.sock_state_cb = sock_state_cb;
	ao.sock_state_cb_data = d;
	ao.timeout = d->o.timeout_ms;
	ao.tries = d->o.tries;
	ao.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	if ((r = ares_init_options(&d->ch, &ao, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
	    ARES_OPT_FLAGS)) != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(r));
		hosts_free(d->hosts);
		mem_free(d);
		return NULL;
	}
	ares_set_socket_functions(d->ch, &funnel, d);
	ev_init(&d->timer, timer_cb);
	ev_prepare_init(&d->deliver, deliver_cb);
	if (servers && *servers && set_servers_now(d, servers, err, errlen) < 0) {
		ares_destroy(d->ch);
		hosts_free(d->hosts);
		mem_free(d);
		return NULL;
	}
	return d;
}

void dns_free(struct dns *d)
{
	struct dns_query *q;
	struct sockw *s;

	if (d == NULL)
		return;
	d->destroying = 1;
	ares_destroy(d->ch);   /* ares_done for each query in flight: freed there */
	while ((q = d->ready) != NULL) {
		d->ready = q->next;
		query_free(d, q);
	}
	while ((s = d->socks) != NULL) {
		ev_io_stop(d->loop, &s->io);
		d->socks = s->next;
		mem_free(s);
	}
	while (d->oldest)
		centry_unlink(d, d->oldest);
	ev_timer_stop(d->loop, &d->timer);
	ev_prepare_stop(d->loop, &d->deliver);
	mem_free(d->pending_servers);
	hosts_free(d->hosts);
	mem_free(d);
}

void dns_stats(const struct dns *d, struct dns_stats *st)
{
	*st = d->st;
	st->cache_entries = d->nentries;
	st->cache_bytes = d->nbytes;
}

int dns_ptr_name(const struct sockaddr *sa, char *out, size_t outlen)
{
	const unsigned char *a;
	size_t o = 0;
	int i, n;

	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (!IN6_IS_ADDR_V4MAPPED(in6)) {
			static const char hex[] = "0123456789abcdef";
			if (outlen < 64 + 9 + 1)
				return -1;
			for (i = 15; i >= 0; i--) {
				out[o++] = hex[in6->s6_addr[i] & 15];
				out[o++] = '.';
				out[o++] = hex[in6->s6_addr[i] >> 4];
				out[o++] = '.';
			}
			memcpy(out + o, "ip6.arpa", 9);
			return 0;
		}
		a = in6->s6_addr + 12;
	} else if (sa->sa_family == AF_INET) {
		a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else {
		return -1;
	}
	n = snprintf(out, outlen, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

int dns_hosts_canonical(const char *name, char *out, size_t outlen)
{
	static const int fams[] = { AF_INET, AF_INET6 };
	ares_channel ch;
	struct ares_options ao;
	size_t i;
	int found = -1;

	if (lib_ready() < 0)
		return -1;
	memset(&ao, 0, sizeof ao);
	ao.lookups = (char *)"f";
	if (ares_init_options(&ch, &ao, ARES_OPT_LOOKUPS) != ARES_SUCCESS)
		return -1;
	for (i = 0; i < sizeof fams / sizeof fams[0] && found < 0; i++) {
		struct hostent *h = NULL;
		if (ares_gethostbyname_file(ch, name, fams[i], &h) == ARES_SUCCESS && h) {
			if (h->h_name && strlen(h->h_name) < outlen) {
				strcpy(out, h->h_name);
				found = 0;
			}
			ares_free_hostent(h);
		}
	}
	ares_destroy(ch);
	return found;
}
