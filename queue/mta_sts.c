/*
 * queue/mta_sts.c: MTA-STS discovery for the SMTP client (RFC 8461 3 and 5),
 * on the loop. A lookup asks the resolver for the TXT record of
 * _mta-sts.DOMAIN; a cached policy with the same id, within its max_age, is
 * the answer; a new id (or none cached) fetches
 * https://mta-sts.DOMAIN/.well-known/mta-sts.txt over core/transport (the
 * certificate verified for mta-sts.DOMAIN against smtp_mta_sts_CAfile), one
 * fetch per domain however many deliveries wait for it, all of it under
 * smtp_mta_sts_timeout. A failed fetch leaves a cached policy in force
 * (section 5.1) and otherwise means no policy (section 5). A failed fetch is
 * remembered (memory only, per domain and TXT id) for
 * smtp_mta_sts_failure_cache_time: a hanging policy host would otherwise
 * cost every delivery to its domain the whole timeout and a socket.
 *
 * Owns the cache: at most STS_CACHE_MAX domains in memory, each also a file
 * queue_directory/sts/DOMAIN (written as a temporary file, then renamed),
 * read once when the first lookup comes. Its sockets go through core/fd and
 * its memory through core/mem. Never blocks the loop on the network; the
 * cache files are small and are read and written on the loop without a
 * sync (a lost file costs a refetch, not mail).
 */
#include "queue/mta_sts.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "core/dns.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/tls.h"
#include "core/transport.h"

#define STS_CACHE_MAX   1000                         /* domains cached (memory and files) */
#define STS_FILE_MAX    (MTA_STS_BODY_MAX + 512)     /* a cache file: header line and the policy */
#define STS_RESP_MAX    (MTA_STS_BODY_MAX + 16 * 1024)   /* a response: headers and chunk framing too */
#define STS_ADDRS       8

struct sts_entry {
	struct sts_entry *next;
	char   domain[DNS_NAME_MAX + 1];
	char   id[MTA_STS_ID_MAX + 1];
	time_t fetched;
	struct mta_sts_policy pol;
};

/*
 * A failed fetch, remembered so the next deliveries do not fetch (and wait) again.
 * Memory only: after a restart one fetch is tried again, which is cheap.
 */
struct sts_fail {
	struct sts_fail *next;
	char   domain[DNS_NAME_MAX + 1];
	char   id[MTA_STS_ID_MAX + 1];              /* the TXT id the fetch was for: a new id ends it */
	time_t until;
};

enum fetch_state { F_RESOLVE_A, F_RESOLVE_AAAA, F_CONNECT, F_TLS, F_SEND, F_READ };

struct sts_fetch {
	struct sts_fetch *next;
	struct mta_sts_wait *waiters;
	char   domain[DNS_NAME_MAX + 1];
	char   host[DNS_NAME_MAX + 10];             /* mta-sts.DOMAIN */
	char   id[MTA_STS_ID_MAX + 1];              /* the TXT id this fetch is for */
	char   service[16];
	char   queue_dir[512];
	enum fetch_state st;
	struct ev_loop *loop;
	ev_io    io;
	ev_timer tmr;
	struct dns *dns;
	struct dns_query *q;
	struct tls_ctx *tls;                        /* a reference */
	struct transport tr;
	struct sockaddr_storage addrs[STS_ADDRS];
	socklen_t alen[STS_ADDRS];
	int    naddrs, ai, port;
	char   req[600];
	size_t reqlen, reqoff;
	char  *resp;                                /* STS_RESP_MAX */
	size_t resplen;
	char   err[512];
	int    shortage;                            /* failed for a local shortage, not the server */
	double failure_ttl;                         /* remember a failure this long (0: not) */
};

struct mta_sts_wait {
	struct mta_sts_wait *next;                  /* in its fetch's list, or the pending TXT list */
	struct mta_sts_wait *prev;
	struct sts_fetch *f;                        /* waiting for this fetch, or NULL (TXT pending) */
	struct dns_query *q;
	struct mta_sts_conf cf;
	char   queue_dir[512];
	char   service[16];
	char   domain[DNS_NAME_MAX + 1];
	mta_sts_cb cb;
	void  *arg;
	int    answering;                           /* on fetch_done's list: a cancel only marks it */
	int    cancelled;
};

static struct sts_entry *cache;
static int ncache;
static int cache_loaded;
static char cache_dir[512];                    /* the queue directory the cache was read from */
static struct sts_fetch *fetches;
static struct sts_fail *fails;                 /* at most STS_CACHE_MAX */
static int nfails;
static struct mta_sts_stats stats;

static void fetch_done(struct sts_fetch *f, const struct mta_sts_policy *p);

/* ---- the cache -------------------------------------------------------------- */

static int domain_ok(const char *d)
{
	size_t n = strlen(d);

	if (n == 0 || n > 253 || d[0] == '.' || strstr(d, ".."))
		return 0;
	for (; *d; d++)
		if (!((*d >= 'a' && *d <= 'z') || (*d >= '0' && *d <= '9') || *d == '-' || *d == '.'))
			return 0;
	return 1;
}

static void lower(char *out, const char *in, size_t cap)
{
	size_t i;

	for (i = 0; in[i] && i + 1 < cap; i++)
		out[i] = (char)((in[i] >= 'A' && in[i] <= 'Z') ? in[i] + 32 : in[i]);
	out[i] = '\0';
	if (i && out[i - 1] == '.')
		out[i - 1] = '\0';
}

static struct sts_entry *cache_find(const char *domain)
{
	struct sts_entry *e;

	for (e = cache; e; e = e->next)
		if (strcmp(e->domain, domain) == 0)
			return e;
	return NULL;
}

static int expired(const struct sts_entry *e, time_t now)
{
	return now - e->fetched >= e->pol.max_age;
}

static void entry_path(char *out, size_t n, const char *dir, const char *domain)
{
	snprintf(out, n, "%s/sts/%s", dir, domain);
}

static void cache_drop(struct sts_entry *e, int unlink_file)
{
	struct sts_entry **pp;

	for (pp = &cache; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	if (unlink_file && cache_dir[0]) {
		char path[1024];
		entry_path(path, sizeof path, cache_dir, e->domain);
		(void)unlink(path);
	}
	mta_sts_policy_free(&e->pol);
	mem_free(e);
	ncache--;
}

/* Room for one more: the expired first, then the one that expires soonest. */
static void cache_make_room(void)
{
	time_t now = time(NULL);

	while (ncache >= STS_CACHE_MAX && cache) {
		struct sts_entry *e, *victim = cache;

		for (e = cache; e; e = e->next) {
			if (expired(e, now)) {
				victim = e;
				break;
			}
			if (e->fetched + e->pol.max_age < victim->fetched + victim->pol.max_age)
				victim = e;
		}
		cache_drop(victim, 1);
	}
}

/* Takes ownership of p's mx. */
static struct sts_entry *cache_put(const char *domain, const char *id, time_t fetched, struct mta_sts_policy *p)
{
	struct sts_entry *e = cache_find(domain);

	if (e == NULL) {
		cache_make_room();
		if ((e = mem_calloc(1, sizeof *e)) == NULL) {
			mta_sts_policy_free(p);
			return NULL;
		}
		snprintf(e->domain, sizeof e->domain, "%s", domain);
		e->next = cache;
		cache = e;
		ncache++;
	} else
		mta_sts_policy_free(&e->pol);
	snprintf(e->id, sizeof e->id, "%s", id);
	e->fetched = fetched;
	e->pol = *p;
	memset(p, 0, sizeof *p);
	return e;
}

/*
 * The file: "frugal-mta-sts 1 ID FETCHED\n" then the policy as fetched. Written to a
 * temporary name and renamed, so a reader (the next start) sees the old file or the new.
 */
static void cache_write(const char *dir, const char *domain, const char *id, time_t fetched,
    const char *body, size_t blen, const char *service)
{
	char path[1024], tmp[1100], head[128];
	int fd, hl;
	ssize_t w1, w2;

	snprintf(path, sizeof path, "%s/sts", dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		log_warning(service, "MTA-STS cache: cannot create %s: %s", path, strerror(errno));
		return;
	}
	entry_path(path, sizeof path, dir, domain);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	hl = snprintf(head, sizeof head, "frugal-mta-sts 1 %s %lld\n", id, (long long)fetched);
	if ((fd = fd_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
		log_warning(service, "MTA-STS cache: cannot write %s: %s", tmp, strerror(errno));
		return;
	}
	w1 = write(fd, head, (size_t)hl);
	w2 = write(fd, body, blen);
	if (w1 != hl || w2 != (ssize_t)blen) {
		log_warning(service, "MTA-STS cache: cannot write %s: %s", tmp, w1 < 0 || w2 < 0 ? strerror(errno) : "short write");
		fd_close(fd);
		(void)unlink(tmp);
		return;
	}
	fd_close(fd);
	if (rename(tmp, path) < 0) {
		log_warning(service, "MTA-STS cache: cannot rename %s: %s", tmp, strerror(errno));
		(void)unlink(tmp);
	}
}

/* One cache file: 0 loaded, -1 not (bad, expired or too large: the caller removes it). */
static int cache_read_one(const char *dir, const char *domain, time_t now)
{
	char path[1024], *buf, *nl, id[MTA_STS_ID_MAX + 1], why[128];
	long long fetched;
	struct mta_sts_policy p;
	ssize_t n;
	int fd, rc = -1;

	if (!domain_ok(domain))
		return -1;
	entry_path(path, sizeof path, dir, domain);
	if ((fd = fd_open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return -1;
	if ((buf = mem_alloc(STS_FILE_MAX + 1)) == NULL) {
		fd_close(fd);
		return 0;      /* no memory now: keep the file for the next start */
	}
	n = read(fd, buf, STS_FILE_MAX + 1);
	fd_close(fd);
	if (n > 0 && n <= STS_FILE_MAX) {
		buf[n] = '\0';
		nl = memchr(buf, '\n', (size_t)n);
		if (nl && sscanf(buf, "frugal-mta-sts 1 %32[A-Za-z0-9] %lld\n", id, &fetched) == 2 &&
		    mta_sts_policy_parse(nl + 1, (size_t)(buf + n - nl - 1), &p, why, sizeof why) == 0) {
			if (now - (time_t)fetched < p.max_age && (time_t)fetched <= now + 60 &&
			    cache_put(domain, id, (time_t)fetched, &p) != NULL)
				rc = 0;
			mta_sts_policy_free(&p);
		}
	}
	mem_free(buf);
	return rc;
}

/* The cache directory, once per queue directory: what is valid is loaded, the rest removed. */
static void cache_load(const char *dir, const char *service)
{
	char path[1024];
	DIR *d;
	struct dirent *de;
	time_t now = time(NULL);
	int loaded = 0;

	if (cache_loaded && strcmp(cache_dir, dir) == 0)
		return;
	while (cache)
		cache_drop(cache, 0);
	cache_loaded = 1;
	snprintf(cache_dir, sizeof cache_dir, "%s", dir);
	snprintf(path, sizeof path, "%s/sts", dir);
	if ((d = fd_opendir(path)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (ncache < STS_CACHE_MAX && strstr(de->d_name, ".tmp") == NULL &&
		    cache_read_one(dir, de->d_name, now) == 0) {
			loaded++;
			continue;
		}
		/* expired, unreadable, a leftover temporary file, or beyond the bound */
		snprintf(path, sizeof path, "%s/sts/%s", dir, de->d_name);
		(void)unlink(path);
	}
	fd_closedir(d);
	if (loaded)
		log_info(service, "MTA-STS cache: %d policies loaded from %s/sts", loaded, dir);
}

/* ---- failed fetches remembered ------------------------------------------------ */

static void fail_drop(struct sts_fail **pp)
{
	struct sts_fail *x = *pp;

	*pp = x->next;
	mem_free(x);
	nfails--;
}

/* The remembered failure for domain, still in force; expired ones met on the way go. */
static struct sts_fail *fail_find(const char *domain, time_t now)
{
	struct sts_fail **pp = &fails;

	while (*pp) {
		if ((*pp)->until <= now) {
			fail_drop(pp);
			continue;
		}
		if (strcmp((*pp)->domain, domain) == 0)
			return *pp;
		pp = &(*pp)->next;
	}
	return NULL;
}

static void fail_forget(const char *domain)
{
	struct sts_fail **pp;

	for (pp = &fails; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->domain, domain) == 0) {
			fail_drop(pp);
			return;
		}
}

/* Without memory the failure is simply not remembered (the next delivery fetches again). */
static void fail_remember(const char *domain, const char *id, double ttl)
{
	time_t now = time(NULL);
	struct sts_fail *x, **pp, **soonest;

	if (ttl <= 0)
		return;
	fail_forget(domain);
	(void)fail_find("", now);   /* sweeps the expired */
	if (nfails >= STS_CACHE_MAX) {
		for (soonest = pp = &fails; *pp; pp = &(*pp)->next)
			if ((*pp)->until < (*soonest)->until)
				soonest = pp;
		fail_drop(soonest);
	}
	if ((x = mem_calloc(1, sizeof *x)) == NULL)
		return;
	snprintf(x->domain, sizeof x->domain, "%s", domain);
	snprintf(x->id, sizeof x->id, "%s", id);
	x->until = now + (time_t)ttl;
	x->next = fails;
	fails = x;
	nfails++;
}

/* ---- waiters ------------------------------------------------------------------ */

static struct mta_sts_wait *txt_pending;       /* waiters whose TXT query is out */

/* A waiter holds a reference on its TLS context: a background lookup may outlive its asker. */
static void wait_free(struct mta_sts_wait *w)
{
	tls_ctx_unref(w->cf.tls);
	mem_free(w);
}

static void unlink_wait(struct mta_sts_wait *w)
{
	struct mta_sts_wait **head = w->f ? &w->f->waiters : &txt_pending;

	if (w->prev)
		w->prev->next = w->next;
	else if (*head == w)
		*head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->next = w->prev = NULL;
}

static void link_wait(struct mta_sts_wait *w, struct mta_sts_wait **head)
{
	w->prev = NULL;
	if ((w->next = *head) != NULL)
		(*head)->prev = w;
	*head = w;
}

/* The answer for w: the cached policy within its max_age, else none (shortage: why). w is freed. */
static void answer_cached(struct mta_sts_wait *w, int shortage)
{
	struct sts_entry *e = cache_find(w->domain);
	mta_sts_cb cb = w->cb;
	void *arg = w->arg;
	struct mta_sts_policy copy;

	wait_free(w);
	if (e && !expired(e, time(NULL))) {
		/* a copy: the callback may start a lookup that replaces the entry */
		if (mta_sts_policy_copy(&copy, &e->pol) == 0) {
			stats.cache_hits++;
			cb(arg, &copy, 0);
			mta_sts_policy_free(&copy);
			return;
		}
		shortage = 1;
	}
	cb(arg, NULL, shortage);
}

/* ---- the fetch ---------------------------------------------------------------- */

static void fetch_free(struct sts_fetch *f)
{
	struct sts_fetch **pp;

	for (pp = &fetches; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	ev_io_stop(f->loop, &f->io);
	ev_timer_stop(f->loop, &f->tmr);
	if (f->q)
		dns_cancel(f->q);
	if (f->tr.fd >= 0)
		transport_close(&f->tr);
	tls_ctx_unref(f->tls);
	mem_free(f->resp);
	mem_free(f);
}

static void fetch_fail(struct sts_fetch *f, const char *fmt, const char *arg)
{
	snprintf(f->err, sizeof f->err, fmt, arg);
	/*
	 * Remembered unless the shortage was ours (a socket, memory): that one must neither
	 * downgrade the next deliveries nor stop them learning the policy once we recover.
	 */
	if (!f->shortage && f->failure_ttl > 0) {
		fail_remember(f->domain, f->id, f->failure_ttl);
		log_info(f->service, "MTA-STS policy fetch for %s failed: %s (not retried for %.0fs unless the id changes)",
		    f->domain, f->err, f->failure_ttl);
	} else
		log_info(f->service, "MTA-STS policy fetch for %s failed: %s", f->domain, f->err);
	stats.fetch_failures++;
	fetch_done(f, NULL);
}

static void fetch_watch(struct sts_fetch *f)
{
	int ev;

	if (f->st == F_CONNECT)
		ev = EV_WRITE;
	else if (f->st == F_TLS)
		ev = f->tr.want == TRANSPORT_WANT_READ ? EV_READ : EV_WRITE;
	else if (f->st == F_SEND)
		ev = f->tr.want == TRANSPORT_WANT_READ ? EV_READ : EV_WRITE;
	else
		ev = f->tr.want == TRANSPORT_WANT_WRITE ? EV_WRITE : EV_READ;
	ev_io_stop(f->loop, &f->io);
	ev_io_set(&f->io, f->tr.fd, ev);
	ev_io_start(f->loop, &f->io);
}

static void fetch_connect(struct sts_fetch *f);

static void fetch_next_addr(struct sts_fetch *f, const char *why)
{
	if (f->tr.fd >= 0)
		transport_close(&f->tr);
	f->tr.fd = -1;
	ev_io_stop(f->loop, &f->io);
	f->ai++;
	if (f->ai < f->naddrs) {
		fetch_connect(f);
		return;
	}
	fetch_fail(f, "%s", why);
}

static void fetch_connect(struct sts_fetch *f)
{
	int fd = fd_socket(f->addrs[f->ai].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	char why[400];

	if (fd < 0) {
		f->shortage = 1;   /* EMFILE, ENFILE, ENOMEM, ENOBUFS, the funnel's cap: ours */
		fetch_fail(f, "socket: %s", strerror(errno));
		return;
	}
	transport_init(&f->tr, fd);
	if (connect(fd, (const struct sockaddr *)&f->addrs[f->ai], f->alen[f->ai]) < 0 && errno != EINPROGRESS) {
		if (errno == EAGAIN || errno == ENOMEM || errno == ENOBUFS) {
			f->shortage = 1;   /* no local port, no socket memory */
			fetch_fail(f, "connect: %s", strerror(errno));
			return;
		}
		snprintf(why, sizeof why, "connect to %s: %s", f->host, strerror(errno));
		fetch_next_addr(f, why);
		return;
	}
	f->st = F_CONNECT;
	fetch_watch(f);
}

static void fetch_step(struct sts_fetch *f)
{
	char why[400];

	for (;;) {
		switch (f->st) {
		case F_CONNECT: {
			int err = 0, one = 1;
			socklen_t l = sizeof err;

			if (getsockopt(f->tr.fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
				err = errno;
			if (err) {
				snprintf(why, sizeof why, "connect to %s: %s", f->host, strerror(err));
				fetch_next_addr(f, why);
				return;
			}
			(void)setsockopt(f->tr.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			/* RFC 8461 3.3: HTTPS, the certificate valid for mta-sts.DOMAIN (RFC 6125) */
			if (f->tls == NULL || transport_tls_client(&f->tr, f->tls, f->host, f->host) < 0) {
				f->shortage = 1;   /* no trust anchors or no memory: nothing the server did */
				fetch_fail(f, "cannot start TLS: %s", f->tls ? strerror(errno) : "no TLS context");
				return;
			}
			f->st = F_TLS;
			break;
		}
		case F_TLS: {
			int rc = transport_handshake(&f->tr, why, sizeof why);
			if (rc == 0) {
				fetch_watch(f);
				return;
			}
			if (rc < 0) {
				fetch_fail(f, "TLS handshake: %s", why);
				return;
			}
			f->st = F_SEND;
			break;
		}
		case F_SEND: {
			ssize_t w = transport_write(&f->tr, f->req + f->reqoff, f->reqlen - f->reqoff);
			if (w < 0) {
				if (errno == EAGAIN) {
					fetch_watch(f);
					return;
				}
				fetch_fail(f, "write: %s", strerror(errno));
				return;
			}
			f->reqoff += (size_t)w;
			if (f->reqoff == f->reqlen)
				f->st = F_READ;
			break;
		}
		case F_READ: {
			char *body;
			size_t blen = 0;
			ssize_t r = 0;
			int eof = 0, rc;

			if (f->resplen < STS_RESP_MAX) {
				r = transport_read(&f->tr, f->resp + f->resplen, STS_RESP_MAX - f->resplen);
				if (r < 0 && errno == EAGAIN) {
					fetch_watch(f);
					return;
				}
				if (r < 0) {
					fetch_fail(f, "read: %s", strerror(errno));
					return;
				}
				if (r == 0)
					eof = 1;
				f->resplen += (size_t)r;
			} else
				eof = 1;   /* the buffer is full: what is there decides (too large, surely) */
			if ((body = mem_alloc(MTA_STS_BODY_MAX)) == NULL) {
				f->shortage = 1;
				fetch_fail(f, "%s", "out of memory");
				return;
			}
			rc = mta_sts_http_parse(f->resp, f->resplen, eof, body, &blen, why, sizeof why);
			if (rc == 0) {
				mem_free(body);
				if (transport_pending(&f->tr) == 0) {
					fetch_watch(f);
					return;
				}
				break;
			}
			if (rc < 0) {
				mem_free(body);
				fetch_fail(f, "%s", why);
				return;
			}
			{
				struct mta_sts_policy p;
				int prc = mta_sts_policy_parse(body, blen, &p, why, sizeof why);

				if (prc < 0) {
					mem_free(body);
					f->shortage = prc == -2;
					fetch_fail(f, prc == -2 ? "%s" : "invalid policy: %s", prc == -2 ? "out of memory" : why);
					return;
				}
				log_info(f->service, "MTA-STS policy for %s fetched: id=%s mode=%s max_age=%ld mx=%d",
				    f->domain, f->id, mta_sts_mode_name(p.mode), p.max_age, p.nmx);
				stats.fetches++;
				cache_write(f->queue_dir, f->domain, f->id, time(NULL), body, blen, f->service);
				mem_free(body);
				fetch_done(f, &p);
				mta_sts_policy_free(&p);
			}
			return;
		}
		default:
			return;
		}
	}
}

static void fetch_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	fetch_step((struct sts_fetch *)((char *)w - offsetof(struct sts_fetch, io)));
}

static void fetch_tmr_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sts_fetch *f = (struct sts_fetch *)((char *)w - offsetof(struct sts_fetch, tmr));

	fetch_fail(f, "%s", "timed out");
}

static void fetch_dns_cb(void *arg, const struct dns_answer *a)
{
	struct sts_fetch *f = arg;
	int i;

	f->q = NULL;
	if (a->status == DNS_FOUND)
		for (i = 0; i < a->n && f->naddrs < STS_ADDRS; i++) {
			struct sockaddr_storage *ss = &f->addrs[f->naddrs];

			memset(ss, 0, sizeof *ss);
			if (a->rr[i].family == AF_INET) {
				struct sockaddr_in *s = (struct sockaddr_in *)ss;
				s->sin_family = AF_INET;
				s->sin_port = htons((uint16_t)f->port);
				memcpy(&s->sin_addr, a->rr[i].addr, 4);
				f->alen[f->naddrs++] = sizeof *s;
			} else if (a->rr[i].family == AF_INET6) {
				struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
				s->sin6_family = AF_INET6;
				s->sin6_port = htons((uint16_t)f->port);
				memcpy(&s->sin6_addr, a->rr[i].addr, 16);
				f->alen[f->naddrs++] = sizeof *s;
			}
		}
	if (f->st == F_RESOLVE_A) {
		f->st = F_RESOLVE_AAAA;
		if ((f->q = dns_lookup(f->dns, f->host, DNS_AAAA, fetch_dns_cb, f)) != NULL)
			return;
	}
	if (f->naddrs == 0) {
		fetch_fail(f, "no address for %s", f->host);
		return;
	}
	f->ai = 0;
	fetch_connect(f);
}

/* A fetch for domain at id, or the one already running (which then serves this id too). */
static struct sts_fetch *fetch_start(const struct mta_sts_wait *w, const char *id)
{
	struct sts_fetch *f;
	const char *ps = getenv("FRUGAL_TEST_MTA_STS_PORT");
	int n;

	for (f = fetches; f; f = f->next)
		if (strcmp(f->domain, w->domain) == 0)
			return f;
	if ((f = mem_calloc(1, sizeof *f)) == NULL || (f->resp = mem_alloc(STS_RESP_MAX)) == NULL) {
		mem_free(f);
		return NULL;
	}
	f->loop = EV_DEFAULT;
	f->tr.fd = -1;
	f->dns = w->cf.dns;
	snprintf(f->domain, sizeof f->domain, "%s", w->domain);
	snprintf(f->host, sizeof f->host, "mta-sts.%s", w->domain);
	snprintf(f->id, sizeof f->id, "%s", id);
	snprintf(f->service, sizeof f->service, "%s", w->service);
	snprintf(f->queue_dir, sizeof f->queue_dir, "%s", w->queue_dir);
	f->failure_ttl = w->cf.failure_ttl;
	/* 443 (RFC 8461 3.3); the tests' HTTPS server cannot bind it unprivileged: a test-only override */
	f->port = ps && atoi(ps) > 0 && atoi(ps) < 65536 ? atoi(ps) : 443;
	n = snprintf(f->req, sizeof f->req, "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: frugal\r\nAccept: text/plain\r\nConnection: close\r\n\r\n", f->host);
	f->reqlen = (size_t)n;
	if (w->cf.tls) {
		tls_ctx_ref(w->cf.tls);
		f->tls = w->cf.tls;
	}
	ev_init(&f->io, fetch_io_cb);
	ev_timer_init(&f->tmr, fetch_tmr_cb, w->cf.timeout > 0 ? w->cf.timeout : 10, 0);
	f->next = fetches;
	fetches = f;
	f->st = F_RESOLVE_A;
	if ((f->q = dns_lookup(f->dns, f->host, DNS_A, fetch_dns_cb, f)) == NULL) {
		fetch_free(f);
		return NULL;
	}
	ev_timer_start(f->loop, &f->tmr);
	return f;
}

/*
 * The fetch is over (p: the new policy, or NULL: failed). The cache first, then every
 * waiter, from a list taken off the fetch (a callback may start lookups of its own).
 */
static void fetch_done(struct sts_fetch *f, const struct mta_sts_policy *p)
{
	struct mta_sts_wait *list = f->waiters, *w;
	int shortage = f->shortage;

	f->waiters = NULL;
	if (p) {
		struct mta_sts_policy copy;

		fail_forget(f->domain);
		if (mta_sts_policy_copy(&copy, p) == 0)
			(void)cache_put(f->domain, f->id, time(NULL), &copy);
	}
	for (w = list; w; w = w->next) {
		w->f = NULL;
		w->answering = 1;   /* a callback may cancel a waiter further down the list: marked, not freed */
	}
	fetch_free(f);
	while ((w = list) != NULL) {
		list = w->next;
		w->next = w->prev = NULL;
		if (w->cancelled)
			wait_free(w);
		else
			answer_cached(w, shortage);   /* the new policy is cached now; a failure leaves the old in force */
	}
}

/* ---- lookup --------------------------------------------------------------------- */

static void txt_cb(void *arg, const struct dns_answer *a)
{
	struct mta_sts_wait *w = arg;
	struct sts_entry *e;
	struct sts_fail *x;
	char id[MTA_STS_ID_MAX + 1] = "", one[MTA_STS_ID_MAX + 1];
	int i, found = 0;

	w->q = NULL;
	unlink_wait(w);
	if (a->status == DNS_FOUND)
		for (i = 0; i < a->n; i++) {
			int rc = mta_sts_txt_parse(a->rr[i].text, a->rr[i].len, one);
			if (rc == -2)
				continue;
			/* RFC 8461 3.1: not exactly one valid STSv1 record: no policy is available */
			found = rc == 0 && found == 0 ? 1 : -1;
			if (found == 1)
				memcpy(id, one, sizeof id);
		}
	e = cache_find(w->domain);
	if (found != 1 || (e && !expired(e, time(NULL)) && strcmp(e->id, id) == 0)) {
		/* no record (or TEMPFAIL): a cached policy stays in force until max_age (5.1) */
		answer_cached(w, 0);
		return;
	}
	if ((x = fail_find(w->domain, time(NULL))) != NULL) {
		if (strcmp(x->id, id) == 0) {
			/* this id's fetch failed lately: as for a failed fetch (5.1, 5), without a new one */
			stats.failures_remembered++;
			answer_cached(w, 0);
			return;
		}
		fail_forget(w->domain);   /* a new id: a new policy was announced */
	}
	if ((w->f = fetch_start(w, id)) == NULL) {
		answer_cached(w, 1);   /* no memory for the fetch, or its DNS query */
		return;
	}
	link_wait(w, &w->f->waiters);
}

/* NULL with errno: ENOMEM, ENXIO (no resolver), EINVAL (not a domain name). */
struct mta_sts_wait *mta_sts_lookup(const struct mta_sts_conf *cf, const char *domain, mta_sts_cb cb, void *arg)
{
	struct mta_sts_wait *w;
	char name[DNS_NAME_MAX + 12];

	if (cf->dns == NULL) {
		errno = ENXIO;
		return NULL;
	}
	if ((w = mem_calloc(1, sizeof *w)) == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	w->cf = *cf;
	if (w->cf.tls)
		tls_ctx_ref(w->cf.tls);
	snprintf(w->queue_dir, sizeof w->queue_dir, "%s", cf->queue_dir ? cf->queue_dir : ".");
	snprintf(w->service, sizeof w->service, "%s", cf->service ? cf->service : "smtp");
	w->cf.queue_dir = w->queue_dir;
	w->cf.service = w->service;
	lower(w->domain, domain, sizeof w->domain);
	w->cb = cb;
	w->arg = arg;
	if (!domain_ok(w->domain)) {
		wait_free(w);
		errno = EINVAL;
		return NULL;
	}
	cache_load(w->queue_dir, w->service);
	snprintf(name, sizeof name, "_mta-sts.%s", w->domain);
	if ((w->q = dns_lookup(cf->dns, name, DNS_TXT, txt_cb, w)) == NULL) {
		int e = errno;   /* ENOMEM, or EINVAL for a name the resolver refuses */
		wait_free(w);
		errno = e;
		return NULL;
	}
	link_wait(w, &txt_pending);
	return w;
}

void mta_sts_cancel(struct mta_sts_wait *w)
{
	if (w == NULL)
		return;
	if (w->answering) {
		w->cancelled = 1;
		return;
	}
	if (w->q)
		dns_cancel(w->q);
	unlink_wait(w);
	wait_free(w);
}

enum mta_sts_mode mta_sts_peek(const struct mta_sts_conf *cf, const char *domain)
{
	char d[DNS_NAME_MAX + 1];
	struct sts_entry *e;

	lower(d, domain, sizeof d);
	if (cf->queue_dir)
		cache_load(cf->queue_dir, cf->service ? cf->service : "smtp");
	e = cache_find(d);
	return e && !expired(e, time(NULL)) ? e->pol.mode : MTA_STS_NONE;
}

void mta_sts_stop_all(void)
{
	struct mta_sts_wait *w;

	while (fetches) {
		struct sts_fetch *f = fetches;
		while ((w = f->waiters) != NULL) {
			f->waiters = w->next;
			wait_free(w);
		}
		fetch_free(f);
	}
	while ((w = txt_pending) != NULL) {
		txt_pending = w->next;
		if (w->q)
			dns_cancel(w->q);
		wait_free(w);
	}
	while (cache)
		cache_drop(cache, 0);
	while (fails)
		fail_drop(&fails);
	cache_loaded = 0;
	cache_dir[0] = '\0';
}

void mta_sts_stats(struct mta_sts_stats *st)
{
	struct sts_fetch *f;

	*st = stats;
	st->cached = ncache;
	st->failed = nfails;
	st->inflight = 0;
	for (f = fetches; f; f = f->next)
		st->inflight++;
}
