/*
 * smtpd/dovecot.c: password checks by Dovecot's auth service
 * (smtpd_sasl_type = dovecot, smtpd_sasl_path = its auth-client socket),
 * over Dovecot's auth protocol 1.2 (doc.dovecot.org, "Dovecot SASL
 * protocol"), on the loop.
 *
 * One connection for the whole daemon, whatever the number of sessions:
 * one non-TCP socket, opened through the descriptor funnel (so charged),
 * when the first check needs it. Requests carry an id; answers (OK, FAIL,
 * CONT) are matched by it. A session that ends cancels its request (its
 * callback is dropped; Dovecot's answer is read and ignored). When the
 * connection breaks, every request in flight gets a temporary failure
 * (454 to its client) and the next check connects again, at most once a
 * second.
 *
 * Every check is sent as PLAIN (authzid empty, login, password): LOGIN's
 * two steps are collected by auth.c first, so Dovecot sees one mechanism.
 */
#include "smtpd/smtpd_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/buf.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "smtpd/sasl.h"

#define DOVECOT_IN_MAX  (64 * 1024)   /* a line from Dovecot (answers are short) */
#define DOVECOT_OUT_MAX (256 * 1024)  /* requests waiting to be written: about 500 */
#define DOVECOT_RETRY   1.0           /* seconds between connection attempts */
#define DOVECOT_TIMEOUT 30.0          /* an answer later than this: the connection is dropped */

struct dovecot_req {
	unsigned id;
	ev_tstamp sent;
	dovecot_cb cb;               /* NULL once cancelled */
	void *arg;
	struct dovecot_req *next;
};

struct dovecot {
	struct ev_loop *loop;
	ev_io io;
	ev_timer timer;              /* checks the oldest request's age while any is in flight */
	int fd;                      /* -1 while not connected */
	char path[108];
	ev_tstamp last_try;
	unsigned next_id;
	struct buf in, out;
	struct dovecot_req *reqs;    /* in flight, owned */
};

static struct log_rate conn_rate = LOG_RATE_INIT(60, 5);

static void io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

struct dovecot *dovecot_new(struct ev_loop *loop)
{
	struct dovecot *d = mem_calloc(1, sizeof *d);

	if (d == NULL)
		return NULL;
	d->loop = loop;
	d->fd = -1;
	buf_init(&d->in, DOVECOT_IN_MAX);
	buf_init(&d->out, DOVECOT_OUT_MAX);
	ev_init(&d->io, io_cb);
	ev_init(&d->timer, timer_cb);
	return d;
}

/* The connection is gone: every request in flight fails for now (454). */
static void disconnect(struct dovecot *d, const char *why)
{
	struct dovecot_req *r, *next;

	ev_timer_stop(d->loop, &d->timer);
	if (d->fd >= 0) {
		log_ratelimited(&conn_rate, "smtpd", "dovecot auth %s: %s", d->path, why);
		ev_io_stop(d->loop, &d->io);
		fd_close(d->fd);
		d->fd = -1;
	}
	buf_release(&d->in);
	buf_release(&d->out);
	r = d->reqs;
	d->reqs = NULL;
	for (; r; r = next) {
		next = r->next;
		if (r->cb)
			r->cb(r->arg, -1, NULL, "Connection lost to authentication server");
		mem_free(r);
	}
}

void dovecot_free(struct dovecot *d)
{
	if (d == NULL)
		return;
	disconnect(d, "closing");
	mem_free(d);
}

static void want(struct dovecot *d)
{
	int ev = EV_READ | (buf_used(&d->out) ? EV_WRITE : 0);

	if (ev_is_active(&d->io) && d->io.events == ev)
		return;
	ev_io_stop(d->loop, &d->io);
	ev_io_set(&d->io, d->fd, ev);
	ev_io_start(d->loop, &d->io);
}

static int connect_to(struct dovecot *d, const char *path)
{
	struct sockaddr_un sa;
	char hello[64];

	if (d->fd >= 0 && strcmp(d->path, path) == 0)
		return 0;
	if (d->fd >= 0)
		disconnect(d, "smtpd_sasl_path changed");
	if (ev_now(d->loop) - d->last_try < DOVECOT_RETRY && d->last_try > 0) {
		errno = EAGAIN;
		return -1;
	}
	d->last_try = ev_now(d->loop);
	if (strlen(path) >= sizeof sa.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	if ((d->fd = fd_socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (connect(d->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;
		fd_close(d->fd);
		d->fd = -1;
		errno = e;
		return -1;
	}
	snprintf(d->path, sizeof d->path, "%s", path);
	/* our handshake goes first; Dovecot's (VERSION, MECH..., DONE) is read as it comes */
	snprintf(hello, sizeof hello, "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
	if (buf_append(&d->out, hello, strlen(hello)) < 0) {
		disconnect(d, "out of memory");
		errno = ENOMEM;
		return -1;
	}
	want(d);
	return 0;
}

/* "OK\t7\tuser=x", "FAIL\t7\treason=...", "CONT\t7\t...": the request's answer. */
static void answer(struct dovecot *d, char *line)
{
	char *f[8], *save = NULL, *p = line, *reason = "authentication failure", *user = NULL;
	struct dovecot_req **pp, *r;
	unsigned id;
	int n = 0, i, result;

	while (n < 8 && (f[n] = strtok_r(p, "\t", &save)) != NULL) {
		p = NULL;
		n++;
	}
	if (n < 2)
		return;
	if (strcmp(f[0], "OK") == 0)
		result = 1;
	else if (strcmp(f[0], "FAIL") == 0)
		result = 0;
	else if (strcmp(f[0], "CONT") == 0)
		result = -2;   /* a challenge: PLAIN with its response never gets one */
	else
		return;        /* VERSION, MECH, SPID, CUID, COOKIE, DONE: nothing to do */
	id = (unsigned)strtoul(f[1], NULL, 10);
	for (pp = &d->reqs; (r = *pp) != NULL; pp = &r->next)
		if (r->id == id)
			break;
	if (r == NULL)
		return;
	*pp = r->next;
	for (i = 2; i < n; i++) {
		if (strncmp(f[i], "reason=", 7) == 0)
			reason = f[i] + 7;
		if (strncmp(f[i], "user=", 5) == 0)
			user = f[i] + 5;
		if (strcmp(f[i], "temp") == 0 && result == 0)
			result = -1;   /* Dovecot could not decide (its backend failed): try again later */
	}
	if (result == -2)
		result = -1;
	if (r->cb)
		r->cb(r->arg, result, result == 1 ? user : NULL, reason);
	mem_free(r);
}

/* A Dovecot that stops answering is dropped: what waits gets 454, the next check reconnects. */
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dovecot *d = (struct dovecot *)((char *)w - offsetof(struct dovecot, timer));
	struct dovecot_req *r;
	ev_tstamp oldest = ev_now(loop);

	(void)revents;
	for (r = d->reqs; r; r = r->next)
		if (r->sent < oldest)
			oldest = r->sent;
	if (d->reqs && ev_now(loop) - oldest >= DOVECOT_TIMEOUT)
		disconnect(d, "no answer in time");
	else if (d->reqs)
		ev_timer_again(loop, w);
	else
		ev_timer_stop(loop, w);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct dovecot *d = (struct dovecot *)((char *)w - offsetof(struct dovecot, io));
	ssize_t n;
	char *nl;

	(void)loop;
	if (revents & EV_WRITE) {
		while (buf_used(&d->out)) {
			if ((n = buf_write_fd(&d->out, d->fd)) < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				disconnect(d, strerror(errno));
				return;
			}
		}
		if (buf_used(&d->out) == 0)
			buf_release(&d->out);
	}
	if (revents & EV_READ) {
		if ((n = buf_read_fd(&d->in, d->fd, 4096)) == 0 || n == -2) {
			disconnect(d, n == 0 ? "closed by Dovecot" : "line too long");
			return;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			disconnect(d, strerror(errno));
			return;
		}
		while ((nl = memchr(buf_head(&d->in), '\n', buf_used(&d->in))) != NULL) {
			size_t len = (size_t)(nl - buf_head(&d->in));

			*nl = '\0';
			answer(d, buf_head(&d->in));
			buf_consume(&d->in, len + 1);
			if (d->fd < 0)
				return;
		}
		if (buf_used(&d->in) == 0)
			buf_release(&d->in);
	}
	if (d->fd >= 0)
		want(d);
}

int dovecot_check(struct dovecot *d, const char *path, const char *user, const char *pass,
    const char *service, const char *rip, int secured, dovecot_cb cb, void *arg, unsigned *id)
{
	unsigned char plain[2 * SASL_FIELD_MAX + 3];
	char b64[4 * ((sizeof plain + 2) / 3) + 1], *line;
	size_t ul = strlen(user), pl = strlen(pass);
	struct dovecot_req *r;
	int rc = -1;

	if (ul > SASL_FIELD_MAX || pl > SASL_FIELD_MAX || strpbrk(user, "\t\n")) {
		errno = EINVAL;
		return -1;
	}
	if (connect_to(d, path) < 0)
		return -1;
	plain[0] = '\0';
	memcpy(plain + 1, user, ul);
	plain[1 + ul] = '\0';
	memcpy(plain + 2 + ul, pass, pl);
	EVP_EncodeBlock((unsigned char *)b64, plain, (int)(2 + ul + pl));
	OPENSSL_cleanse(plain, sizeof plain);
	if ((r = mem_calloc(1, sizeof *r)) == NULL)
		goto out;
	if (++d->next_id == 0)
		d->next_id = 1;   /* 0 means "no request" to the sessions */
	r->id = d->next_id;
	r->sent = ev_now(d->loop);
	line = mem_printf("AUTH\t%u\tPLAIN\tservice=%s\tnologin\trip=%s%s\tresp=%s\n", r->id, service, rip,
	    secured ? "\tsecured" : "", b64);
	if (line == NULL || buf_append(&d->out, line, strlen(line)) < 0) {
		mem_free(line);
		mem_free(r);
		errno = ENOMEM;
		goto out;
	}
	OPENSSL_cleanse(line, strlen(line));
	mem_free(line);
	r->cb = cb;
	r->arg = arg;
	r->next = d->reqs;
	d->reqs = r;
	*id = r->id;
	want(d);
	if (!ev_is_active(&d->timer)) {
		d->timer.repeat = DOVECOT_TIMEOUT / 3;
		ev_timer_again(d->loop, &d->timer);
	}
	rc = 0;
out:
	OPENSSL_cleanse(b64, sizeof b64);
	return rc;
}

void dovecot_cancel(struct dovecot *d, unsigned id)
{
	struct dovecot_req *r;

	for (r = d ? d->reqs : NULL; r; r = r->next)
		if (r->id == id)
			r->cb = NULL;   /* the answer is still read, and dropped */
}

int dovecot_connected(const struct dovecot *d)
{
	return d && d->fd >= 0;
}
