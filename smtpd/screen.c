/*
 * smtpd/screen.c: the screen, postscreen's before-the-banner tests in the
 * process. A port 25 client that is not in mynetworks (Postfix's default
 * postscreen_access_list = permit_mynetworks) waits here, in a record of
 * a few hundred bytes (its descriptor, address, one timer, one watcher and
 * its DNS queries; charged through core/mem, its socket already counted),
 * while two tests run at once:
 *   - the pregreet wait (smtpd_pregreet_wait): a client that talks before
 *     the banner is logged PREGREET and answered 521, then closed;
 *   - weighted DNS list scoring (postscreen_dnsbl_sites): every distinct
 *     zone asked once, in parallel, bounded by postscreen_dnsbl_timeout;
 *     at postscreen_dnsbl_threshold the client is logged "DNSBL rank N"
 *     and (drop) answered 521 5.7.1, then closed.
 * Only a client that passes both is handed to listen.c as a session, which
 * then greets at once. A pass is remembered (screen_cache.c) for
 * postscreen_greet_ttl / postscreen_dnsbl_max_ttl.
 * Never allocates a session or a buffer; never blocks the loop (the cache
 * file is written without fsync, at most once a minute and at exit).
 */
#include "smtpd/screen.h"
#include "smtpd/smtpd_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/dns.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"
#include "limits/limits.h"

#define SAVE_INTERVAL 60.   /* seconds between cache saves, when something changed */

/* ---- configuration ----------------------------------------------------------- */

int screen_site_parse(const char *arg, struct dnsbl_site *site, int *weight, char *err, size_t errlen)
{
	char buf[sizeof site->arg];
	const char *star = strrchr(arg, '*');
	size_t len = star ? (size_t)(star - arg) : strlen(arg);

	*weight = 1;
	if (len >= sizeof buf) {
		snprintf(err, errlen, "bad DNS list \"%s\"", arg);
		return -1;
	}
	if (star) {
		const char *p = star + 1;
		char *end;
		long w;

		errno = 0;
		w = strtol(p, &end, 10);
		if (*p == '\0' || *end != '\0' || errno || w < -1000000 || w > 1000000) {
			snprintf(err, errlen, "bad DNS list weight \"%s\" (want *N or *-N)", star);
			return -1;
		}
		*weight = (int)w;
	}
	memcpy(buf, arg, len);
	buf[len] = '\0';
	return dnsbl_site_parse(buf, site, err, errlen);
}

static int int_value(const char *v, int *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (*v == '\0' || *end != '\0' || errno || n < -1000000 || n > 1000000)
		return -1;
	*out = (int)n;
	return 0;
}

int screen_conf_load(const struct conf *c, struct screen_conf *sc, char *err, size_t errlen)
{
	char e[256], loc[600];
	char **v;
	int i, j;

	memset(sc, 0, sizeof *sc);
	sc->greet_wait = (double)conf_time(c, "smtpd_pregreet_wait", 0);
	sc->threshold = (int)conf_int(c, "postscreen_dnsbl_threshold", 0);
	sc->dnsbl_timeout = (double)conf_time(c, "postscreen_dnsbl_timeout", 0);
	sc->greet_ttl = (double)conf_time(c, "postscreen_greet_ttl", 0);
	sc->dnsbl_ttl = (double)conf_time(c, "postscreen_dnsbl_max_ttl", 0);
	sc->dnsbl_action = strcmp(conf_str(c, "postscreen_dnsbl_action", 0), "ignore") == 0 ? SCREEN_IGNORE
	    : SCREEN_DROP;
	sc->greet_action = SCREEN_DROP;
	if (sc->dnsbl_timeout <= 0)
		sc->dnsbl_timeout = 10;
	if (int_value(conf_str(c, "postscreen_dnsbl_allowlist_threshold", 0), &sc->allow_threshold) < 0) {
		conf_where(c, "postscreen_dnsbl_allowlist_threshold", loc, sizeof loc);
		snprintf(err, errlen, "%s: postscreen_dnsbl_allowlist_threshold: bad integer value", loc);
		return -1;
	}
	if ((v = conf_list(c, "postscreen_dnsbl_sites", 0)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; v[i]; i++) {
		if (sc->nsites >= SCREEN_MAX_SITES) {
			snprintf(e, sizeof e, "more than %d lists", SCREEN_MAX_SITES);
			goto bad;
		}
		if (screen_site_parse(v[i], &sc->site[sc->nsites], &sc->weight[sc->nsites], e, sizeof e) < 0)
			goto bad;
		for (j = 0; j < sc->nzones; j++)
			if (strcasecmp(sc->zone[j], sc->site[sc->nsites].zone) == 0)
				break;
		if (j == sc->nzones) {
			if (sc->nzones >= SCREEN_MAX_ZONES) {
				snprintf(e, sizeof e, "more than %d distinct zones", SCREEN_MAX_ZONES);
				goto bad;
			}
			/* both are DNS_NAME_MAX + 1 bytes: the zone fits */
			memcpy(sc->zone[sc->nzones++], sc->site[sc->nsites].zone, sizeof sc->zone[0]);
		}
		sc->zone_of[sc->nsites++] = j;
	}
	conf_list_free(v);
	if (sc->nsites > 0 && sc->threshold < 1) {
		conf_where(c, "postscreen_dnsbl_threshold", loc, sizeof loc);
		snprintf(err, errlen, "%s: postscreen_dnsbl_threshold: must be 1 or more", loc);
		return -1;
	}
	return 0;
bad:
	conf_list_free(v);
	conf_where(c, "postscreen_dnsbl_sites", loc, sizeof loc);
	snprintf(err, errlen, "%s: postscreen_dnsbl_sites: %s", loc, e);
	return -1;
}

int screen_conf_active(const struct screen_conf *sc)
{
	return sc && (sc->greet_wait > 0 || sc->nsites > 0);
}

/* ---- one client in the screen ------------------------------------------------- */

struct screen_conn;
struct screen_q {                 /* one zone's query: the callback's argument */
	struct screen_conn *c;
	struct dns_query *q;          /* NULL: answered, failed or cancelled */
};

struct screen_conn {
	ev_io io;                     /* readable: a pregreet talker (only while the greet test runs) */
	ev_timer timer;               /* the next deadline: greet wait, then DNS timeout */
	struct screen_conn *next, *prev;
	struct listener *l;
	struct smtpd_gen *gen;        /* one reference: a reload changes nothing mid-screen */
	struct sockaddr_storage peer;
	char addr[INET6_ADDRSTRLEN];
	int fd;
	int port;
	ev_tstamp connected;
	ev_tstamp greet_end, dnsbl_end;
	unsigned char greet_test;     /* the pregreet test runs (not cached) */
	unsigned char dnsbl_test;     /* the DNS list test runs (not cached) */
	unsigned char dns_timed_out;
	int dns_pending;              /* queries still out */
	int score;
	int listed_by;                /* the listing site with the largest weight (the reply names it), -1 */
	struct screen_q q[SCREEN_MAX_ZONES];
};

static struct log_rate nomem_rate = LOG_RATE_INIT(60, 5);
static struct log_rate cache_rate = LOG_RATE_INIT(600, 2);

static long long wall_now(void)
{
	return (long long)time(NULL);
}

static void conn_unlink(struct smtpd_server *srv, struct screen_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->screening = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nscreening--;
}

/* Stop everything and free the record; the descriptor is the caller's to close or hand over. */
static void conn_free(struct smtpd_server *srv, struct screen_conn *c)
{
	int i;

	for (i = 0; i < SCREEN_MAX_ZONES; i++)
		if (c->q[i].q) {
			dns_cancel(c->q[i].q);
			c->q[i].q = NULL;
		}
	ev_io_stop(srv->loop, &c->io);
	ev_timer_stop(srv->loop, &c->timer);
	conn_unlink(srv, c);
	smtpd_gen_unref(c->gen);
	mem_free(c);
}

/* The reply, best effort (a fresh socket: its send buffer takes it), then the close. */
static void refuse(struct smtpd_server *srv, struct screen_conn *c, const char *text)
{
	char line[512];
	int n = snprintf(line, sizeof line, "%s\r\n", text);

	if (write(c->fd, line, (size_t)n) < 0) {
		/* a client that is gone already needs nothing more */
	}
	fd_close(c->fd);
	stats_inc(STATS_SCREEN_REFUSED);
	conn_free(srv, c);
}

static void cache_dirty(struct smtpd_server *srv)
{
	if (!ev_is_active(&srv->screen_save)) {
		ev_timer_set(&srv->screen_save, SAVE_INTERVAL, 0.);
		ev_timer_start(srv->loop, &srv->screen_save);
	}
}

/* Passed: remember it, then the session (listen.c), which greets at once. */
static void pass(struct smtpd_server *srv, struct screen_conn *c, const char *why)
{
	const struct screen_conf *sc = c->gen->screen;
	struct listener *l = c->l;
	struct sockaddr_storage peer = c->peer;
	struct screen_rec r;
	long long now = wall_now();
	int fd = c->fd;

	screen_cache_key(&c->peer, r.key);
	if (!screen_cache_get(srv->screen_cache, r.key, &r))
		r.greet_until = r.dnsbl_until = 0;
	if (c->greet_test || (why && sc->greet_wait > 0))   /* an allowlisted client skips it for as long */
		r.greet_until = now + (long long)sc->greet_ttl;
	if (c->dnsbl_test && !c->dns_timed_out && c->score < sc->threshold)
		r.dnsbl_until = now + (long long)sc->dnsbl_ttl;
	if (r.greet_until > now || r.dnsbl_until > now) {
		screen_cache_put(srv->screen_cache, &r, now);
		cache_dirty(srv);
	}
	log_info("smtpd", "PASS NEW [%s]:%d%s", c->addr, c->port, why ? why : "");
	stats_inc(STATS_SCREEN_PASSED);
	conn_free(srv, c);
	listen_session(l, fd, &peer, 1);
}

static void decide(struct smtpd_server *srv, struct screen_conn *c)
{
	const struct screen_conf *sc = c->gen->screen;
	ev_tstamp now = ev_now(srv->loop), next = 0;
	int dns_final = !c->dnsbl_test || c->dns_pending == 0;
	int greet_over = !c->greet_test || now >= c->greet_end;

	if (c->dnsbl_test && c->dns_pending == 0 && sc->allow_threshold < 0 && c->score <= sc->allow_threshold) {
		char why[64];

		/* postscreen_dnsbl_allowlist_threshold: the other tests are skipped */
		snprintf(why, sizeof why, " (DNS allowlist, rank %d)", c->score);
		pass(srv, c, why);
		return;
	}
	if (dns_final && c->dnsbl_test && c->score >= sc->threshold) {
		char text[512];

		log_info("smtpd", "DNSBL rank %d for [%s]:%d", c->score, c->addr, c->port);
		if (sc->dnsbl_action == SCREEN_DROP) {
			snprintf(text, sizeof text, "521 5.7.1 Service unavailable; client [%s] blocked using %s",
			    c->addr, c->listed_by >= 0 ? sc->site[c->listed_by].zone : "DNS lists");
			refuse(srv, c, text);
			return;
		}
		c->dnsbl_test = 0;   /* ignore: logged, not remembered as a pass */
	}
	if (greet_over && dns_final) {
		pass(srv, c, NULL);
		return;
	}
	if (!greet_over)
		next = c->greet_end;
	if (!dns_final && (next == 0 || c->dnsbl_end < next))
		next = c->dnsbl_end;
	ev_timer_stop(srv->loop, &c->timer);
	ev_timer_set(&c->timer, next - now > 0 ? next - now : 0., 0.);
	ev_timer_start(srv->loop, &c->timer);
}

static void answer_cb(void *arg, const struct dns_answer *a)
{
	struct screen_q *q = arg;
	struct screen_conn *c = q->c;
	const struct screen_conf *sc = c->gen->screen;
	struct smtpd_server *srv = c->l->srv;
	int zone = (int)(q - c->q), s, i;

	q->q = NULL;
	c->dns_pending--;
	if (a->status == DNS_FOUND) {
		for (s = 0; s < sc->nsites; s++) {
			if (sc->zone_of[s] != zone)
				continue;
			for (i = 0; i < a->n; i++)
				if (a->rr[i].family == AF_INET && dnsbl_site_match(&sc->site[s], a->rr[i].addr))
					break;
			if (i == a->n)
				continue;
			c->score += sc->weight[s];
			if (sc->weight[s] > 0 && (c->listed_by < 0 || sc->weight[s] > sc->weight[c->listed_by]))
				c->listed_by = s;
		}
	}
	/* a failed list (SERVFAIL, timeout) adds nothing, as postscreen */
	decide(srv, c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct screen_conn *c = (struct screen_conn *)((char *)w - offsetof(struct screen_conn, timer));
	struct smtpd_server *srv = c->l->srv;
	int i;

	(void)loop; (void)revents;
	if (c->dnsbl_test && c->dns_pending > 0 && ev_now(srv->loop) >= c->dnsbl_end) {
		/* postscreen_dnsbl_timeout: the lists still out count for nothing */
		for (i = 0; i < SCREEN_MAX_ZONES; i++)
			if (c->q[i].q) {
				dns_cancel(c->q[i].q);
				c->q[i].q = NULL;
			}
		c->dns_pending = 0;
		c->dns_timed_out = 1;
	}
	decide(srv, c);
}

/* Readable before the banner: a talker (postscreen's PREGREET), or a client that went away. */
static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct screen_conn *c = (struct screen_conn *)w;
	struct smtpd_server *srv = c->l->srv;
	char buf[4096], text[256];
	ssize_t r = read(c->fd, buf, sizeof buf), more;

	(void)loop; (void)revents;
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		log_info("smtpd", "HANGUP after %.2f from [%s]:%d in tests before SMTP handshake",
		    ev_now(srv->loop) - c->connected, c->addr, c->port);
		fd_close(c->fd);
		stats_inc(STATS_SCREEN_REFUSED);
		conn_free(srv, c);
		return;
	}
	log_info("smtpd", "PREGREET %zd after %.2f from [%s]:%d: %s", r, ev_now(srv->loop) - c->connected,
	    c->addr, c->port, log_escape(text, sizeof text, buf, (size_t)r < 100 ? (size_t)r : 100));
	/* drain what else came (bounded): closing over unread bytes would reset before the 521 is read */
	for (more = 0; more < 65536; more += r)
		if ((r = read(c->fd, buf, sizeof buf)) <= 0)
			break;
	snprintf(text, sizeof text, "521 5.5.1 %s Error: protocol error: talked before the greeting",
	    c->gen->myhostname);
	refuse(srv, c, text);
}

int screen_admit(struct listener *l, int fd, const struct sockaddr_storage *ss)
{
	struct smtpd_server *srv = l->srv;
	const struct screen_conf *sc = srv->gen->screen;
	struct screen_conn *c;
	struct screen_rec r;
	long long wall = wall_now();
	ev_tstamp now = ev_now(srv->loop);
	int greet_test, dnsbl_test, i;

	if (l->submission || l->implicit_tls || !screen_conf_active(sc) ||
	    cidr_list_match(&srv->gen->mynetworks, ss))
		return 0;
	screen_cache_key(ss, r.key);
	if (!screen_cache_get(srv->screen_cache, r.key, &r))
		r.greet_until = r.dnsbl_until = 0;
	greet_test = sc->greet_wait > 0 && r.greet_until <= wall;
	dnsbl_test = sc->nsites > 0 && r.dnsbl_until <= wall;
	if ((c = mem_calloc(1, sizeof *c)) == NULL) {
		limits_note_failure("memory", ENOMEM);
		log_ratelimited(&nomem_rate, "smtpd", "memory budget exhausted: no screen for a client");
		return -1;
	}
	c->l = l;
	c->gen = srv->gen;
	c->gen->refs++;
	c->peer = *ss;
	c->fd = fd;
	c->connected = now;
	c->listed_by = -1;
	if (ss->ss_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, c->addr, sizeof c->addr);
		c->port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
	} else {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, c->addr, sizeof c->addr);
		c->port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	}
	c->next = srv->screening;
	if (srv->screening)
		srv->screening->prev = c;
	srv->screening = c;
	srv->nscreening++;
	ev_io_init(&c->io, io_cb, fd, EV_READ);
	ev_init(&c->timer, timer_cb);
	if (!greet_test && !dnsbl_test) {
		/* both passes remembered: the banner at once */
		log_info("smtpd", "PASS OLD [%s]:%d", c->addr, c->port);
		stats_inc(STATS_SCREEN_PASSED);
		conn_free(srv, c);
		listen_session(l, fd, ss, 1);
		return 1;
	}
	log_info("smtpd", "CONNECT from [%s]:%d", c->addr, c->port);
	c->greet_test = (unsigned char)greet_test;
	c->dnsbl_test = (unsigned char)dnsbl_test;
	c->greet_end = now + sc->greet_wait;
	c->dnsbl_end = now + sc->dnsbl_timeout;
	if (dnsbl_test) {
		for (i = 0; i < sc->nzones; i++) {
			char name[DNS_NAME_MAX + 1];

			c->q[i].c = c;
			if (srv->dns == NULL || dnsbl_client_name((const struct sockaddr *)ss, sc->zone[i], name,
			    sizeof name) < 0)
				continue;   /* no resolver, no name: that list adds nothing */
			if ((c->q[i].q = dns_lookup(srv->dns, name, DNS_A, answer_cb, &c->q[i])) != NULL)
				c->dns_pending++;
		}
	}
	if (greet_test)
		ev_io_start(srv->loop, &c->io);
	decide(srv, c);   /* never passes or refuses here unless nothing is pending */
	return 1;
}

void screen_shutdown(struct smtpd_server *srv)
{
	while (srv->screening) {
		struct screen_conn *c = srv->screening;

		fd_close(c->fd);   /* no banner was sent: a plain close, the client tries again later */
		conn_free(srv, c);
	}
}

/* ---- the cache's life --------------------------------------------------------- */

static void cache_path(const struct smtpd_server *srv, char *out, size_t len)
{
	snprintf(out, len, "%s/postscreen_cache", conf_str(srv->gen->conf, "queue_directory", 0));
}

static void save(struct smtpd_server *srv)
{
	char path[1024], err[1200];

	if (srv->screen_cache == NULL)
		return;
	cache_path(srv, path, sizeof path);
	if (screen_cache_save(srv->screen_cache, path, wall_now(), err, sizeof err) < 0)
		log_ratelimited(&cache_rate, "smtpd", "postscreen cache not saved: %s", err);
}

static void save_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct smtpd_server *srv = (struct smtpd_server *)((char *)w - offsetof(struct smtpd_server, screen_save));

	(void)loop; (void)revents;
	save(srv);
}

void screen_init(struct smtpd_server *srv)
{
	char path[1024], err[1200];
	long long n = conf_int(srv->gen->conf, "postscreen_cache_size", 0);
	int got;

	ev_init(&srv->screen_save, save_cb);
	if (!screen_conf_active(srv->gen->screen) || n <= 0)
		return;
	if (n > 1 << 22)
		n = 1 << 22;
	if ((srv->screen_cache = screen_cache_new((unsigned)n)) == NULL) {
		log_warning("smtpd", "memory budget exhausted: no postscreen cache of %lld clients (%zu bytes): "
		    "every client is screened", n, screen_cache_bytes((unsigned)n));
		return;
	}
	cache_path(srv, path, sizeof path);
	if ((got = screen_cache_load(srv->screen_cache, path, wall_now(), err, sizeof err)) < 0)
		log_warning("smtpd", "postscreen cache ignored: %s", err);
	else
		log_info("smtpd", "postscreen cache: %lld clients (%zu bytes), %d loaded from %s", n,
		    screen_cache_bytes((unsigned)n), got, path);
}

void screen_exit(struct smtpd_server *srv)
{
	screen_shutdown(srv);
	ev_timer_stop(srv->loop, &srv->screen_save);
	save(srv);
	screen_cache_free(srv->screen_cache);
	srv->screen_cache = NULL;
}
