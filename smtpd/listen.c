/*
 * smtpd/listen.c: listeners and admission. Opens the smtpd_listen and
 * smtps_listen (implicit TLS) sockets
 * and admits or refuses each client against the budget in limits/: a TCP
 * socket charge, the session budget, socket buffer sizes, the per-client
 * connection count. Refusals get 421 4.3.2 and a rate-limited warning that
 * names the resource.
 *
 * Admission never busy-loops: when accept() fails for lack of descriptors
 * (EMFILE/ENFILE) or memory (ENOMEM/ENOBUFS), one reserved descriptor is
 * released to accept and answer 421 to the waiting client; if even that
 * fails, the listeners pause until a session ends (or a 1 s retry timer
 * fires, for descriptors freed elsewhere in the container).
 */
#include "smtpd/smtpd_int.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "limits/limits.h"
#include "smtpd/screen.h"

#define ACCEPT_BATCH  64   /* accepts per wake-up: fairness against sessions */

static struct log_rate refuse_rate = LOG_RATE_INIT(10, 5);
static struct log_rate exhaust_rate = LOG_RATE_INIT(10, 5);

static void resume(struct smtpd_server *srv)
{
	int i;

	if (!srv->paused || srv->stopping)
		return;
	srv->paused = 0;
	ev_timer_stop(srv->loop, &srv->resume_timer);
	for (i = 0; i < srv->nlisteners; i++)
		ev_io_start(srv->loop, &srv->listeners[i].io);
}

static void pause_accepting(struct smtpd_server *srv)
{
	int i;

	if (srv->paused)
		return;
	srv->paused = 1;
	for (i = 0; i < srv->nlisteners; i++)
		ev_io_stop(srv->loop, &srv->listeners[i].io);
	ev_timer_stop(srv->loop, &srv->resume_timer);
	ev_timer_set(&srv->resume_timer, 1.0, 0.);
	ev_timer_start(srv->loop, &srv->resume_timer);
}

static void reserve(struct smtpd_server *srv)
{
	if (srv->reserve_fd < 0)
		srv->reserve_fd = fd_open("/dev/null", O_RDONLY | O_CLOEXEC);
}

void listen_session_freed(struct smtpd_server *srv)
{
	if (srv->paused && srv->reserve_fd >= 0)
		resume(srv);
	reserve(srv);
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct smtpd_server *srv = (struct smtpd_server *)((char *)w - offsetof(struct smtpd_server, resume_timer));

	(void)loop; (void)revents;
	reserve(srv);
	if (srv->reserve_fd >= 0) {
		resume(srv);
	} else {
		ev_timer_set(&srv->resume_timer, 1.0, 0.);
		ev_timer_start(srv->loop, &srv->resume_timer);
	}
}

/* Best effort: the socket is fresh and its send buffer empty, so this fits. */
static void refuse(int fd, const char *text)
{
	char line[256];
	int n = snprintf(line, sizeof line, "%s\r\n", text);

	if (write(fd, line, (size_t)n) < 0) {
		/* nothing more to do for a client we cannot even answer */
	}
	fd_close(fd);
}

static void refuse_unavailable(struct smtpd_server *srv, int fd, const char *addr, const char *why, int tls)
{
	char text[256];

	if (tls) {
		/* an smtps client expects a ClientHello answer, not clear text: just close */
		log_ratelimited(&refuse_rate, "smtpd", "%s: closed the TLS connection from %s", why, addr);
		fd_close(fd);
		return;
	}
	snprintf(text, sizeof text, "421 4.3.2 %s Service temporarily unavailable", srv->gen->myhostname);
	log_ratelimited(&refuse_rate, "smtpd", "%s: 421 to %s", why, addr);
	refuse(fd, text);
}

static void peer_string(const struct sockaddr_storage *ss, char *out, size_t len)
{
	if (getnameinfo((const struct sockaddr *)ss, sizeof *ss, out, (socklen_t)len, NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(out, len, "unknown");
}

/* accept() failed for lack of a resource: answer one client with the reserve fd, or pause. */
static void accept_exhausted(struct listener *l, int err)
{
	struct smtpd_server *srv = l->srv;
	const char *res = err == EMFILE ? "descriptors (RLIMIT_NOFILE)" : err == ENFILE ? "descriptors (numfile/file-max)"
	    : err == ENOBUFS ? "socket buffers" : "kernel memory";
	int fd;

	limits_note_failure(res, err);
	if (srv->reserve_fd >= 0) {
		fd_close(srv->reserve_fd);
		srv->reserve_fd = -1;
		if ((fd = fd_accept(l->fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
			char text[256];
			snprintf(text, sizeof text, "421 4.3.2 %s Service temporarily unavailable", srv->gen->myhostname);
			refuse(fd, text);
		}
		reserve(srv);
	}
	log_ratelimited(&exhaust_rate, "smtpd", "%s exhausted (%s): accepting paused until a session ends",
	    res, strerror(err));
	pause_accepting(srv);
}

/* One client: charge, admit, size, register, greet; or refuse with 421. */
/* ---- per-client limits (Postfix's anvil, in-process: anvil.c) ---- */

/* Every anvil warning is one an attacker can cause at will. */
static struct log_rate anvil_log_rate = LOG_RATE_INIT(10, 10);

/*
 * The table is made at the first connection that needs it, its size from
 * anvil_table_size or the session limit, and kept for the daemon's life
 * (a reload does not resize it: its entries belong to live sessions).
 */
static void anvil_open(struct smtpd_server *srv)
{
	const struct conf *c = srv->gen->conf;
	long long n = conf_int(c, "anvil_table_size", 0);

	if (n <= 0) {
		n = 4LL * limits_smtpd_concurrency();
		if (n < 1024)
			n = 1024;
		if (n > 65536)
			n = 65536;
	}
	if (n > 1 << 20)
		n = 1 << 20;
	if ((srv->anvil = anvil_new((unsigned)n)) == NULL)
		log_ratelimited(&anvil_log_rate, "smtpd", "memory budget exhausted: no anvil table of %lld clients "
		    "(%zu bytes): client limits fall back to counting sessions", n, anvil_bytes((unsigned)n));
	else
		log_info("smtpd", "anvil: table of %lld clients (%zu bytes)", n, anvil_bytes((unsigned)n));
}

/*
 * At connect, before the banner: count the connection (Postfix's
 * anvil_clnt_connect) and apply smtpd_client_connection_count_limit and
 * smtpd_client_connection_rate_limit, with Postfix's replies and warnings.
 * Clients in smtpd_client_event_limit_exceptions are not counted at all, as
 * Postfix's hogger list. Submission listeners are counted (the AUTH rate)
 * but not limited at connect: users behind one NAT share an address.
 * 0, or -1 when the session was refused (421 queued, closing).
 */
static int client_limits(struct smtpd_server *srv, struct listener *l, struct session *s)
{
	const struct smtpd_params *p = s->p;
	unsigned char key[ANVIL_KEYLEN];
	const char *service = l->submission ? "submission" : "smtp";
	char reply[512];
	int count = 0, rate = 0;

	if (cidr_list_match(&s->gen->event_limit_exceptions, &s->peer))
		return 0;
	if (srv->anvil == NULL)
		anvil_open(srv);
	if (srv->anvil) {
		anvil_key(&s->peer, p->client_ipv6_prefix_length, key);
		s->anvil_slot = anvil_connect(srv->anvil, key, ev_now(srv->loop), p->anvil_rate_time_unit,
		    &count, &rate);
	}
	if (s->anvil_slot == ANVIL_NONE) {
		/* the count limit still holds, the slow way; the rates cannot */
		if (srv->anvil)
			log_ratelimited(&anvil_log_rate, "smtpd", "anvil table full (%u clients, none idle for "
			    "anvil_rate_time_unit): %s[%s] not rate limited", anvil_capacity(srv->anvil), s->host, s->addr);
		count = server_client_count(srv, s);
	}
	if (l->submission)
		return 0;
	if (p->client_connection_count_limit > 0 && count > p->client_connection_count_limit) {
		log_ratelimited(&anvil_log_rate, "smtpd", "Connection concurrency limit exceeded: %d from %s[%s] "
		    "for service %s", count, s->host, s->addr, service);
	} else if (p->client_connection_rate_limit > 0 && rate > p->client_connection_rate_limit) {
		log_ratelimited(&anvil_log_rate, "smtpd", "Connection rate limit exceeded: %d from %s[%s] "
		    "for service %s", rate, s->host, s->addr, service);
	} else {
		return 0;
	}
	snprintf(reply, sizeof reply, "421 4.7.0 %s Error: too many connections from %s",
	    s->gen->myhostname, s->addr);
	session_shutdown(s, reply);
	return -1;
}

int smtpd_anvil_event(struct session *s, enum anvil_event ev, int limit)
{
	static const char *const what[ANVIL_EVENTS] = {
		"Connection", "Message delivery request", "Recipient address", "AUTH command",
	};
	int n;

	if (limit <= 0 || s->anvil_slot == ANVIL_NONE)
		return 0;
	n = anvil_event(s->srv->anvil, s->anvil_slot, ev, ev_now(s->srv->loop), s->p->anvil_rate_time_unit);
	if (n <= limit)
		return 0;
	log_ratelimited(&anvil_log_rate, "smtpd", "%s rate limit exceeded: %d from %s[%s] for service %s",
	    what[ev], n, s->host, s->addr, s->submission ? "submission" : "smtp");
	return n;
}

/*
 * A client charged for its TCP socket becomes a session: the session
 * budget, socket buffers, the struct, the per-client limits, the banner.
 * Called at accept, or by the screen (screen.c) once the client passed it.
 */
void listen_session(struct listener *l, int fd, const struct sockaddr_storage *ss, int screened)
{
	struct smtpd_server *srv = l->srv;
	struct session *s;
	char addr[64];
	int sz;

	peer_string(ss, addr, sizeof addr);
	if (!limits_session_admit()) {
		char why[96];
		snprintf(why, sizeof why, "smtpd session budget exhausted (%d/%d)",
		    limits_sessions(), limits_smtpd_concurrency());
		refuse_unavailable(srv, fd, addr, why, l->implicit_tls);
		return;
	}
	/*
	 * Replies leave as whole pipelining groups already (one write each):
	 * Nagle only delays the second of two small writes in a row, such as a
	 * TLS 1.3 session ticket then the banner, by the client's delayed ACK.
	 */
	sz = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &sz, sizeof sz);
	if ((sz = limits_session_sndbuf()) > 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
	if ((sz = limits_session_rcvbuf()) > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	if (srv->sweep_client && strcmp(addr, srv->sweep_client) == 0) {
		srv->sweep_n++;   /* tests: see struct smtpd_server */
		mem_fail_at(1 + (srv->sweep_n - 1) * srv->sweep_stride);
	}
	if ((s = session_new(srv, fd, ss, l->submission, l->implicit_tls)) == NULL) {
		if (srv->sweep_client && strcmp(addr, srv->sweep_client) == 0)
			server_sweep_end(srv);
		limits_session_done();
		limits_note_failure("memory", ENOMEM);
		refuse_unavailable(srv, fd, addr, "memory budget exhausted", l->implicit_tls);
		return;
	}
	s->admitted = 1;
	s->screened = screened;
	s->fault_sweep = srv->sweep_client && strcmp(addr, srv->sweep_client) == 0;
	server_session_add(srv, s);
	if (client_limits(srv, l, s) < 0)
		return;
	session_start(s);
}

static void admit(struct listener *l, int fd, const struct sockaddr_storage *ss)
{
	struct smtpd_server *srv = l->srv;
	const char *res;
	char addr[64];
	int r;

	if (!limits_tcp_admit(&res)) {   /* the socket is counted already (fd_accept) */
		char why[96];
		peer_string(ss, addr, sizeof addr);
		snprintf(why, sizeof why, "%s budget exhausted", res);
		refuse_unavailable(srv, fd, addr, why, l->implicit_tls);
		return;
	}
	/*
	 * Port 25 clients outside mynetworks wait in the screen first (pregreet,
	 * DNS list scoring: screen.c), as a small record instead of a session;
	 * the session budget is asked only for those that pass.
	 */
	if ((r = screen_admit(l, fd, ss)) > 0)
		return;
	if (r < 0) {
		peer_string(ss, addr, sizeof addr);
		refuse_unavailable(srv, fd, addr, "memory budget exhausted", 0);
		return;
	}
	listen_session(l, fd, ss, 0);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = (struct listener *)w;
	struct smtpd_server *srv = l->srv;
	int i;

	(void)loop; (void)revents;
	for (i = 0; i < ACCEPT_BATCH && !srv->paused; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		int fd = fd_accept(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
				accept_exhausted(l, errno);
			else if (errno == EAGAIN && i == 0) {
				/*
				 * Readable but nothing to take: OpenVZ past numtcpsock keeps the
				 * connection in the backlog. Level-triggered, this would spin:
				 * pause until a session ends or the retry timer fires.
				 */
				limits_note_failure("numtcpsock", EAGAIN);
				pause_accepting(srv);
			}
			break;
		}
		if (srv->stopping) {
			fd_close(fd);
			continue;
		}
		admit(l, fd, &ss);
	}
}

/*
 * Bind one "host:port", "[v6]:port" or "port" (any address). Returns the
 * listening descriptor (counted, core/fd), or -1 (logged).
 */
static int bind_one(const char *spec)
{
	char host[256], *port, *end;
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t sslen;
	long pn;
	int fd, one = 1;

	snprintf(host, sizeof host, "%s", spec);
	if (host[0] == '[') {
		char *close_br = strchr(host, ']');
		if (!close_br || close_br[1] != ':') {
			log_warning("smtpd", "bad listen address \"%s\"", spec);
			return -1;
		}
		*close_br = '\0';
		port = close_br + 2;
		memmove(host, host + 1, strlen(host + 1) + 1); /* port lies beyond and stays put */
	} else if ((port = strrchr(host, ':')) != NULL) {
		*port++ = '\0';
	} else {
		port = host;
	}
	/*
	 * Numeric addresses only, parsed here: no resolver call can happen at
	 * start-up (getaddrinfo with a name would ask DNS and block; a name in
	 * smtpd_listen is an error that says so).
	 */
	memset(&ss, 0, sizeof ss);
	pn = strtol(port, &end, 10);
	if (*port == '\0' || *end != '\0' || pn < 0 || pn > 65535) {
		log_warning("smtpd", "bad listen address \"%s\": the port must be a number", spec);
		return -1;
	}
	if (port == host || !*host || inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;   /* "port" alone: every IPv4 address */
		sin->sin_port = htons((unsigned short)pn);
		sslen = sizeof *sin;
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((unsigned short)pn);
		sslen = sizeof *sin6;
	} else {
		log_warning("smtpd", "bad listen address \"%s\": a numeric IPv4 or [IPv6] address is needed "
		    "(names are not resolved)", spec);
		return -1;
	}
	fd = fd_socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_warning("smtpd", "socket for %s: %s", spec, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, 1024) < 0) {
		log_warning("smtpd", "bind %s: %s", spec, strerror(errno));
		fd_close(fd);
		return -1;
	}
	return fd;
}

/* The listener parameters in binding order (the master binds, the daemon attaches in the same order). */
static const char *const listen_params[] = { "smtpd_listen", "smtps_listen", "submission_listen" };

/* "smtpd_listen" addresses first, then "smtps_listen", then "submission_listen". */
int listen_bind(const struct conf *c, int *fds, int max)
{
	size_t k;
	int i, n = 0;

	for (k = 0; k < sizeof listen_params / sizeof listen_params[0]; k++) {
		char **v = conf_list(c, listen_params[k], 0);

		if (v == NULL)
			goto fail;
		for (i = 0; v[i]; i++) {
			if (n >= max) {
				log_warning("smtpd", "too many listeners: %s ignored", v[i]);
				continue;
			}
			if ((fds[n] = bind_one(v[i])) < 0) {
				conf_list_free(v);
				goto fail;
			}
			n++;
		}
		conf_list_free(v);
	}
	if (n == 0) {
		log_warning("smtpd", "smtpd_listen, smtps_listen and submission_listen are empty: no listener");
		return -1;
	}
	return n;
fail:
	while (n > 0)
		fd_close(fds[--n]);
	return -1;
}

int listen_attach(struct smtpd_server *srv, const struct conf *c, const int *fds, int n)
{
	size_t k;
	int i, j = 0;

	ev_init(&srv->resume_timer, resume_cb);
	srv->sweep_client = getenv("FRUGAL_ALLOC_SWEEP_CLIENT");
	srv->sweep_stride = getenv("FRUGAL_ALLOC_SWEEP_STRIDE") ? strtoul(getenv("FRUGAL_ALLOC_SWEEP_STRIDE"), NULL, 10) : 1;
	if (srv->sweep_stride == 0)
		srv->sweep_stride = 1;
	for (k = 0; k < sizeof listen_params / sizeof listen_params[0]; k++) {
		char **v = conf_list(c, listen_params[k], 0);

		for (i = 0; v && v[i] && j < n && srv->nlisteners < SMTPD_MAX_LISTENERS; i++, j++) {
			struct listener *l = &srv->listeners[srv->nlisteners++];

			l->srv = srv;
			l->fd = fds[j];
			l->submission = k >= 1;     /* smtps and submission: AUTH before MAIL, never stress */
			l->implicit_tls = k == 1;   /* smtps: TLS from the first byte */
			snprintf(l->name, sizeof l->name, "%s %s", listen_params[k], v[i]);
			ev_io_init(&l->io, accept_cb, fds[j], EV_READ);
			ev_io_start(srv->loop, &l->io);
		}
		if (v)
			conf_list_free(v);
	}
	reserve(srv);
	return 0;
}

int listen_open(struct smtpd_server *srv, const struct conf *c)
{
	int fds[SMTPD_MAX_LISTENERS], n;

	if ((n = listen_bind(c, fds, SMTPD_MAX_LISTENERS)) < 0)
		return -1;
	return listen_attach(srv, c, fds, n);
}

void listen_close(struct smtpd_server *srv)
{
	int i;

	for (i = 0; i < srv->nlisteners; i++) {
		ev_io_stop(srv->loop, &srv->listeners[i].io);
		fd_close(srv->listeners[i].fd);
	}
	srv->nlisteners = 0;
	ev_timer_stop(srv->loop, &srv->resume_timer);
	if (srv->reserve_fd >= 0) {
		fd_close(srv->reserve_fd);
		srv->reserve_fd = -1;
	}
}
