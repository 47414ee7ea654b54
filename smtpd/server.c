/*
 * smtpd/server.c: the registry of live sessions. Owns the list of sessions
 * of one struct smtpd_server, their reaping outside their own callbacks,
 * the per-client connection count, and what applies to every session at
 * once (stress mode, shutdown). Opens nothing and knows no socket:
 * listen.c admits sessions, serve.c runs the daemon around both.
 */
#include "smtpd/smtpd_int.h"

#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "core/stats.h"
#include "limits/limits.h"

static void reaper_cb(struct ev_loop *loop, ev_prepare *w, int revents);

void server_init(struct smtpd_server *srv, struct ev_loop *loop)
{
	srv->loop = loop;
	srv->reserve_fd = -1;
	ev_prepare_init(&srv->reaper, reaper_cb);
	ev_prepare_start(loop, &srv->reaper);
	ev_unref(loop);   /* the reaper alone must not keep the loop alive */
}

/* tests: the swept connection is over; disarm what it did not reach, say so */
void server_sweep_end(struct smtpd_server *srv)
{
	mem_fail_at(0);
	log_info("smtpd", "fault sweep: connection %lu ended", srv->sweep_n);
}

void server_session_add(struct smtpd_server *srv, struct session *s)
{
	s->prev = NULL;
	s->next = srv->sessions;
	if (srv->sessions)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->nsessions++;
	stats_peak(STATS_SESSIONS_PEAK, srv->nsessions);
}

void server_session_closed(struct smtpd_server *srv, struct session *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;
	srv->nsessions--;
	anvil_disconnect(srv->anvil, s->anvil_slot, ev_now(srv->loop));
	s->anvil_slot = ANVIL_NONE;
	if (s->admitted)
		limits_session_done();
	s->admitted = 0;
}

void server_reap(struct smtpd_server *srv, struct session *s)
{
	if (s->reaping)
		return;
	s->reaping = 1;
	ev_io_stop(srv->loop, &s->io);
	ev_timer_stop(srv->loop, &s->timer);
	server_session_closed(srv, s);
	s->next = srv->reap;
	srv->reap = s;
}

/*
 * Free the sessions that closed, outside their callbacks. A session whose
 * commit is still on a worker stays on the list: the commit's callback
 * holds a pointer to it (a client that resets right after pipelining a
 * whole transaction must not free what the worker writes into).
 */
static void reaper_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct smtpd_server *srv = (struct smtpd_server *)((char *)w - offsetof(struct smtpd_server, reaper));
	struct session *s, **pp;
	int freed = 0;

	(void)loop; (void)revents;
	for (pp = &srv->reap; (s = *pp) != NULL;) {
		if (s->committing) {
			pp = &s->next;
			continue;
		}
		*pp = s->next;
		session_free(s);
		freed++;
	}
	if (freed)
		listen_session_freed(srv);
	if (srv->on_reaped)
		srv->on_reaped(srv);
}

/* Postfix's smtpd_client_connection_count_limit counts by address. */
int server_client_count(struct smtpd_server *srv, const struct session *s)
{
	const struct session *t;
	int n = 0;

	for (t = srv->sessions; t; t = t->next)
		if (strcmp(t->addr, s->addr) == 0)
			n++;
	return n;
}

void server_set_stress(struct smtpd_server *srv, int on)
{
	struct session *s;

	srv->stress = on;
	for (s = srv->sessions; s; s = s->next)
		session_set_stress(s, on);
}

void server_shutdown_sessions(struct smtpd_server *srv, const char *reply)
{
	struct session *s, *next;

	for (s = srv->sessions; s; s = next) {
		next = s->next;   /* session_shutdown may reap s */
		session_shutdown(s, reply);
	}
}

void server_free_sessions(struct smtpd_server *srv)
{
	struct session *s;

	while ((s = srv->sessions) != NULL) {
		server_session_closed(srv, s);
		session_free(s);
	}
	while ((s = srv->reap) != NULL) {
		srv->reap = s->next;
		session_free(s);
	}
	if (ev_is_active(&srv->reaper)) {
		ev_ref(srv->loop);
		ev_prepare_stop(srv->loop, &srv->reaper);
	}
}
