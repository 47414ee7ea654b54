/*
 * smtpd/server.c: the daemon: `frugal serve`. Opens the listeners, admits
 * or refuses clients against the budget in limits/, owns the list of live
 * sessions, wires the spool and the queue manager, handles signals
 * (HUP reload, TERM/INT stop, USR1 flush) and the pid file. One process,
 * one loop, no internal sockets (guarantee 2).
 *
 * Admission never busy-loops: when accept() fails for lack of descriptors
 * (EMFILE/ENFILE) or memory (ENOMEM/ENOBUFS), one reserved descriptor is
 * released to accept and answer 421 to the waiting client; if even that
 * fails, the listeners pause until a session ends (or a 1 s retry timer
 * fires, for descriptors freed elsewhere in the container).
 */
#include "smtpd/smtpd_int.h"
#include "smtpd/smtpd.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/sync.h"
#include "core/worker.h"
#include "limits/limits.h"
#include "queue/queue.h"

#define MAX_LISTENERS 8
#define ACCEPT_BATCH  64   /* accepts per wake-up: fairness against sessions */

struct listener {
	ev_io io;              /* first member */
	int fd;
	int submission;
	char name[96];
};

static struct smtpd_server server;
static struct listener listeners[MAX_LISTENERS];
static int nlisteners, paused, reserve_fd = -1;
static int draining;  /* the main ev_run has returned; the shutdown code runs the loop itself */
static ev_timer resume_timer, stop_timer;
static ev_signal sig_hup, sig_term, sig_int, sig_usr1;
static char conf_dir_opt[4096];
static int have_conf_dir;
static struct log_rate refuse_rate = LOG_RATE_INIT(10, 5);
static struct log_rate exhaust_rate = LOG_RATE_INIT(10, 5);

/* ---- session list and reaping -------------------------------------------- */

static void maybe_finish_stop(void);

int server_client_count(struct smtpd_server *srv, const struct session *s)
{
	const struct session *t;
	int n = 0;

	for (t = srv->sessions; t; t = t->next)
		if (strcmp(t->addr, s->addr) == 0)
			n++;
	return n;
}

static void resume_listeners(void)
{
	int i;

	if (!paused || server.stopping)
		return;
	paused = 0;
	ev_timer_stop(server.loop, &resume_timer);
	for (i = 0; i < nlisteners; i++)
		ev_io_start(server.loop, &listeners[i].io);
}

static void pause_listeners(void)
{
	int i;

	if (paused)
		return;
	paused = 1;
	for (i = 0; i < nlisteners; i++)
		ev_io_stop(server.loop, &listeners[i].io);
	ev_timer_stop(server.loop, &resume_timer);
	ev_timer_set(&resume_timer, 1.0, 0.);
	ev_timer_start(server.loop, &resume_timer);
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
	struct session *s, **pp;
	int freed = 0;

	(void)loop; (void)w; (void)revents;
	for (pp = &server.reap; (s = *pp) != NULL;) {
		if (s->committing) {
			pp = &s->next;
			continue;
		}
		*pp = s->next;
		session_free(s);
		freed++;
	}
	if (freed && paused && reserve_fd >= 0)
		resume_listeners();
	if (freed && reserve_fd < 0)
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (server.stopping && !draining)
		maybe_finish_stop();
}

/* ---- admission ----------------------------------------------------------- */

/* Best effort: the socket is fresh and its send buffer empty, so this fits. */
static void refuse(int fd, const char *text)
{
	char line[256];
	int n = snprintf(line, sizeof line, "%s\r\n", text);

	if (write(fd, line, (size_t)n) < 0) {
		/* nothing more to do for a client we cannot even answer */
	}
	close(fd);
}

static void refuse_unavailable(int fd, const char *addr, const char *why)
{
	char text[256];

	snprintf(text, sizeof text, "421 4.3.2 %s Service temporarily unavailable", server.gen->myhostname);
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
	const char *res = err == EMFILE ? "descriptors (RLIMIT_NOFILE)" : err == ENFILE ? "descriptors (numfile/file-max)"
	    : err == ENOBUFS ? "socket buffers" : "kernel memory";
	int fd;

	limits_note_failure(res, err);
	if (reserve_fd >= 0) {
		close(reserve_fd);
		reserve_fd = -1;
		if ((fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
			char text[256];
			snprintf(text, sizeof text, "421 4.3.2 %s Service temporarily unavailable", server.gen->myhostname);
			refuse(fd, text);
		}
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	log_ratelimited(&exhaust_rate, "smtpd", "%s exhausted (%s): accepting paused until a session ends",
	    res, strerror(err));
	pause_listeners();
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = (struct listener *)w;
	int i;

	(void)loop; (void)revents;
	for (i = 0; i < ACCEPT_BATCH && !paused; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		char addr[64];
		struct session *s;
		int fd, sz;

		fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
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
				pause_listeners();
			}
			break;
		}
		if (server.stopping) {
			close(fd);
			continue;
		}
		peer_string(&ss, addr, sizeof addr);
		if (limits_take(LIM_TCPSOCK, 1) < 0) {
			refuse_unavailable(fd, addr, errno == EMFILE ? "descriptor budget exhausted" : "numtcpsock budget exhausted");
			continue;
		}
		if (!limits_session_admit()) {
			char why[96];
			snprintf(why, sizeof why, "smtpd session budget exhausted (%d/%d)",
			    limits_sessions(), limits_smtpd_concurrency());
			limits_release(LIM_TCPSOCK, 1);
			refuse_unavailable(fd, addr, why);
			continue;
		}
		if ((sz = limits_session_sndbuf()) > 0)
			setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
		if ((sz = limits_session_rcvbuf()) > 0)
			setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
		if ((s = session_new(&server, fd, &ss, l->submission)) == NULL) {
			limits_session_done();
			limits_release(LIM_TCPSOCK, 1);
			limits_note_failure("memory", ENOMEM);
			refuse_unavailable(fd, addr, "memory budget exhausted");
			continue;
		}
		s->admitted = 1;
		s->next = server.sessions;
		if (server.sessions)
			server.sessions->prev = s;
		server.sessions = s;
		server.nsessions++;
		if (!l->submission && s->p->client_connection_count_limit > 0 &&
		    server_client_count(&server, s) > s->p->client_connection_count_limit) {
			log_ratelimited(&refuse_rate, "smtpd", "too many connections from %s", addr);
			session_shutdown(s, "421 4.7.0 Error: too many connections");
			continue;
		}
		session_start(s);
	}
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	if (reserve_fd < 0)
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (reserve_fd >= 0) {
		resume_listeners();
	} else {
		ev_timer_set(&resume_timer, 1.0, 0.);
		ev_timer_start(server.loop, &resume_timer);
	}
}

/* ---- listeners ----------------------------------------------------------- */

static int open_listener(const char *spec, int submission)
{
	char host[256], *port;
	struct addrinfo hints, *ai = NULL;
	struct listener *l;
	int fd, one = 1, r;

	if (nlisteners >= MAX_LISTENERS) {
		log_warning("smtpd", "too many listeners: %s ignored", spec);
		return 0;
	}
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
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
	if ((r = getaddrinfo(port == host || !*host ? NULL : host, port, &hints, &ai)) != 0) {
		log_warning("smtpd", "bad listen address \"%s\": %s", spec, gai_strerror(r));
		return -1;
	}
	if (limits_take(LIM_TCPSOCK, 1) < 0) {
		log_warning("smtpd", "no budget for listener %s", spec);
		freeaddrinfo(ai);
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_warning("smtpd", "socket for %s: %s", spec, strerror(errno));
		limits_release(LIM_TCPSOCK, 1);
		freeaddrinfo(ai);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
		log_warning("smtpd", "bind %s: %s", spec, strerror(errno));
		close(fd);
		limits_release(LIM_TCPSOCK, 1);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	l = &listeners[nlisteners++];
	l->fd = fd;
	l->submission = submission;
	snprintf(l->name, sizeof l->name, "%s", spec);
	ev_io_init(&l->io, accept_cb, fd, EV_READ);
	ev_io_start(server.loop, &l->io);
	return 0;
}

static int open_listeners(struct conf *c)
{
	char **v = conf_list(c, "smtpd_listen", 0);
	int i, ok = 0;

	if (v == NULL)
		return -1;
	for (i = 0; v[i]; i++) {
		if (open_listener(v[i], 0) < 0) {
			conf_list_free(v);
			return -1;
		}
		ok++;
	}
	conf_list_free(v);
	/*
	 * Submission needs STARTTLS and AUTH (PRODUCT.md section 2), which this
	 * version does not have: say so rather than open a port that can only
	 * refuse.
	 */
	if (*conf_str(c, "submission_listen", 0))
		log_warning("smtpd", "submission_listen is set, but TLS and AUTH are not in this version: not listening on %s",
		    conf_str(c, "submission_listen", 0));
	if (*conf_str(c, "smtps_listen", 0))
		log_warning("smtpd", "smtps_listen is set, but TLS is not in this version: not listening on %s",
		    conf_str(c, "smtps_listen", 0));
	if (ok == 0) {
		log_warning("smtpd", "smtpd_listen is empty: no listener");
		return -1;
	}
	return 0;
}

static void close_listeners(void)
{
	int i;

	for (i = 0; i < nlisteners; i++) {
		ev_io_stop(server.loop, &listeners[i].io);
		close(listeners[i].fd);
		limits_release(LIM_TCPSOCK, 1);
	}
	nlisteners = 0;
}

/* ---- signals ------------------------------------------------------------- */

static void stress_cb(int on, void *arg)
{
	struct session *s;

	(void)arg;
	server.stress = on;
	for (s = server.sessions; s; s = s->next)
		session_set_stress(s, on);
}

static void print_diags(const struct conf_diags *d, int to_log)
{
	int i;

	for (i = 0; i < d->n; i++) {
		if (to_log) {
			log_warning("master", "%s", d->v[i].text);
		} else {
			fprintf(stderr, "frugal: %s%s\n", d->v[i].is_error ? "" : "warning: ", d->v[i].text);
		}
	}
}

static void reload_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	struct smtpd_gen *g;
	char err[256];

	(void)loop; (void)w; (void)revents;
	c = conf_load_for_command(have_conf_dir ? conf_dir_opt : NULL, &d);
	print_diags(&d, 1);
	conf_diags_free(&d);
	if (c == NULL) {
		log_warning("master", "reload failed: configuration has errors; keeping the running one");
		return;
	}
	if ((g = smtpd_gen_new(c, err, sizeof err)) == NULL) {
		log_warning("master", "reload failed: %s; keeping the running configuration", err);
		conf_unref(c);
		return;
	}
	if (strcmp(conf_str(c, "smtpd_listen", 0), conf_str(server.gen->conf, "smtpd_listen", 0)) != 0)
		log_warning("master", "smtpd_listen changed: takes effect at the next restart");
	smtpd_gen_unref(server.gen);   /* live sessions keep their own reference */
	server.gen = g;
	if (server.qmgr)
		qmgr_set_conf(server.qmgr, c);
	limits_reconfigure(c);
	if (server.qmgr)
		qmgr_set_delivery_limit(server.qmgr, limits_delivery_concurrency());
	conf_unref(c);                 /* the generation holds its own */
	log_info("master", "reload -- version %s, configuration %s",
	    conf_str(g->conf, "mail_version", 0), conf_is_embedded(g->conf) ? "(embedded default)" : conf_dir(g->conf));
}

static void finish_stop(void)
{
	/* EVBREAK_ONE: the shutdown code below runs the loop again to drain work */
	ev_break(server.loop, EVBREAK_ONE);
}

static void maybe_finish_stop(void)
{
	if (server.nsessions == 0 && server.reap == NULL)
		finish_stop();
}

static void stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	/* sessions still talking have nothing acknowledged in flight that we could lose */
	log_info("master", "stop: %d sessions still open after the grace period; closing them", server.nsessions);
	finish_stop();
}

static void term_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct session *s, *next;
	char text[256];

	(void)revents;
	if (server.stopping)
		return;
	log_info("master", "terminating on signal %d", w->signum);
	server.stopping = 1;
	close_listeners();
	ev_timer_stop(loop, &resume_timer);
	snprintf(text, sizeof text, "421 4.3.2 %s Service shutting down, closing transmission channel",
	    server.gen->myhostname);
	for (s = server.sessions; s; s = next) {
		next = s->next;
		session_shutdown(s, text);
	}
	ev_timer_init(&stop_timer, stop_timer_cb, 10., 0.);
	ev_timer_start(loop, &stop_timer);
	maybe_finish_stop();
}

static void usr1_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	log_info("master", "flush requested");
	if (server.qmgr)
		qmgr_flush(server.qmgr);
}

/* ---- pid file ------------------------------------------------------------ */

static char *pid_path(const struct conf *c)
{
	return mem_printf("%s/pid/frugal.pid", conf_str(c, "queue_directory", 0));
}

static int write_pidfile(const struct conf *c)
{
	char *path = pid_path(c), *dir, buf[32];
	int fd, n;

	if (path == NULL)
		return -1;
	dir = mem_printf("%s/pid", conf_str(c, "queue_directory", 0));
	if (dir) {
		mkdir(dir, 0755);
		mem_free(dir);
	}
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0) {
		log_warning("master", "open %s: %s", path, strerror(errno));
		mem_free(path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		n = (int)read(fd, buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = '\0';
		log_warning("master", "the frugal daemon is already running (pid %ld, %s)", strtol(buf, NULL, 10), path);
		close(fd);
		mem_free(path);
		return -1;
	}
	n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || write(fd, buf, (size_t)n) != n)
		log_warning("master", "write %s: %s", path, strerror(errno));
	mem_free(path);
	limits_take(LIM_FILE, 1);  /* held open for the lock, for the daemon's life */
	return 0;
}

static long read_pid(const struct conf *c)
{
	char *path = pid_path(c), buf[32];
	int fd, n;
	long pid;

	if (path == NULL)
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	mem_free(path);
	if (fd < 0)
		return -1;
	/* a pid file whose lock nobody holds is stale */
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		close(fd);
		return -1;
	}
	n = (int)read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	pid = strtol(buf, NULL, 10);
	return pid > 0 ? pid : -1;
}

/* ---- privileges ---------------------------------------------------------- */

/*
 * Started as root: after binding, run as mail_owner (PRODUCT.md 3.5). The
 * saved set-user-ID stays root so that local delivery to a system user's
 * home can switch to that user in a child (queue/), as Postfix's local(8)
 * does; everything else runs with mail_owner's effective IDs.
 */
static uid_t chown_uid;
static gid_t chown_gid;

static int chown_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)type; (void)ftw;
	if ((st->st_uid != chown_uid || st->st_gid != chown_gid) && lchown(path, chown_uid, chown_gid) < 0)
		return -1;
	return 0;
}

static int drop_privileges(const struct conf *c)
{
	const char *owner = conf_str(c, "mail_owner", 0);
	struct passwd *pw;

	if (geteuid() != 0)
		return 0;
	if ((pw = getpwnam(owner)) == NULL) {
		log_warning("master", "mail_owner %s: unknown user (create it, or set mail_owner)", owner);
		return -1;
	}
	if (pw->pw_uid == 0) {
		log_warning("master", "mail_owner is %s (uid 0): running with root privileges", owner);
		return 0;
	}
	chown_uid = pw->pw_uid;
	chown_gid = pw->pw_gid;
	if (nftw(conf_str(c, "queue_directory", 0), chown_one, 16, FTW_PHYS) != 0)
		log_warning("master", "chown %s to %s: %s", conf_str(c, "queue_directory", 0), owner, strerror(errno));
	if (setgroups(1, &pw->pw_gid) < 0 || setresgid(pw->pw_gid, pw->pw_gid, 0) < 0 ||
	    setresuid(pw->pw_uid, pw->pw_uid, 0) < 0) {
		log_warning("master", "cannot switch to mail_owner %s: %s", owner, strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- serve --------------------------------------------------------------- */

static int daemonize(void)
{
	pid_t pid = fork();
	int fd;

	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	setsid();
	if ((fd = open("/dev/null", O_RDWR)) >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return 0;
}

int smtpd_cmd_serve(int argc, char **argv)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	char err[256];
	int opt, foreground = 0, found;

	optind = 1;
	while ((opt = getopt(argc, argv, "fc:")) != -1) {
		switch (opt) {
		case 'f': foreground = 1; break;
		case 'c':
			snprintf(conf_dir_opt, sizeof conf_dir_opt, "%s", optarg);
			have_conf_dir = 1;
			break;
		default:
			fprintf(stderr, "usage: frugal serve [-f] [-c DIR]\n");
			return 1;
		}
	}
	mem_init_from_env();
	c = conf_load_for_command(have_conf_dir ? conf_dir_opt : NULL, &d);
	print_diags(&d, 0);
	conf_diags_free(&d);
	if (c == NULL)
		return 1;
	if (!foreground && !conf_is_embedded(c) && daemonize() < 0) {
		fprintf(stderr, "frugal: fork: %s\n", strerror(errno));
		return 75;
	}
	log_open(conf_str(c, "syslog_name", 0),
	    foreground ? "/dev/stderr" : conf_str(c, "maillog_file", 0), conf_str(c, "syslog_facility", 0));
	signal(SIGPIPE, SIG_IGN);
	mem_install_hooks();
	server.loop = ev_default_loop(EVFLAG_AUTO);
	if (server.loop == NULL)
		log_fatal("master", "cannot initialise the event loop");
	/* before anything can make us visible (pid file, listeners): an early HUP must not kill us */
	ev_signal_init(&sig_hup, reload_cb, SIGHUP);
	ev_signal_init(&sig_term, term_cb, SIGTERM);
	ev_signal_init(&sig_int, term_cb, SIGINT);
	ev_signal_init(&sig_usr1, usr1_cb, SIGUSR1);
	ev_signal_start(server.loop, &sig_hup);
	ev_signal_start(server.loop, &sig_term);
	ev_signal_start(server.loop, &sig_int);
	ev_signal_start(server.loop, &sig_usr1);
	if (conf_is_embedded(c))
		log_info("master", "no %s/frugal.conf: running the embedded development default: "
		    "listening on %s, queue %s, mail for localhost delivered to %s/USER/Maildir/, relaying for nobody",
		    CONF_DEFAULT_DIR, conf_str(c, "smtpd_listen", 0), conf_str(c, "queue_directory", 0),
		    conf_str(c, "local_mailbox_base", 0));
	/* the queue directory first: limits/ writes its status file there */
	if ((server.spool = spool_open(conf_str(c, "queue_directory", 0), err, sizeof err)) == NULL)
		log_fatal("master", "queue_directory %s: %s", conf_str(c, "queue_directory", 0), err);
	if (limits_init(server.loop, c) < 0)
		log_fatal("master", "cannot determine resource limits");
	spool_set_loop(server.spool, server.loop);
	if (write_pidfile(c) < 0) {
		spool_close(server.spool);
		conf_unref(c);
		return 1;
	}
	if ((server.gen = smtpd_gen_new(c, err, sizeof err)) == NULL)
		log_fatal("master", "%s", err);
	if (open_listeners(c) < 0)
		log_fatal("master", "cannot open the SMTP listeners");
	if (drop_privileges(c) < 0)
		log_fatal("master", "cannot run as mail_owner");
	/*
	 * Workers mostly wait on the disk; more of them in flight means more
	 * commits and deliveries sharing each sync (core/sync.h).
	 */
	if (worker_init(server.loop, 16) < 0)
		log_fatal("master", "cannot start worker threads: %s", strerror(errno));
	if ((server.qmgr = qmgr_new(server.loop, server.spool, c)) == NULL)
		log_fatal("master", "cannot start the queue manager: out of memory");
	qmgr_set_delivery_limit(server.qmgr, limits_delivery_concurrency());
	found = qmgr_recover(server.qmgr);
	if (found > 0)
		log_info("qmgr", "recovered %d queued messages", found);
	limits_on_stress(stress_cb, NULL);
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ev_prepare_init(&server.reaper, reaper_cb);
	ev_prepare_start(server.loop, &server.reaper);
	ev_init(&resume_timer, resume_cb);
	log_info("master", "daemon started -- version %s, configuration %s",
	    conf_str(c, "mail_version", 0), conf_is_embedded(c) ? "(embedded default)" : conf_dir(c));
	conf_unref(c); /* server.gen holds its own reference */
	mem_arm_deferred_failure();

	ev_run(server.loop, 0);
	draining = 1;

	/*
	 * Stopping. Commits in flight finish first (their sessions get the 250 or
	 * 451 they are owed, and no callback may outlive its session), then
	 * deliveries in flight, then the workers.
	 */
	while (server.commits > 0)
		ev_run(server.loop, EVRUN_ONCE);
	qmgr_free(server.qmgr);
	worker_shutdown();
	while (server.sessions) {
		struct session *s = server.sessions;
		server_session_closed(&server, s);
		session_free(s);
	}
	while (server.reap) {
		struct session *s = server.reap;
		server.reap = s->next;
		session_free(s);
	}
	limits_shutdown();
	log_info("master", "group commit: %lu syncs served %lu sync requests",
	    sync_shared_syncs(), sync_shared_calls());
	log_info("master", "daemon stopped");
	smtpd_gen_unref(server.gen);
	spool_close(server.spool);
	return 0;
}

int smtpd_cmd_signal(const char *what, int argc, char **argv)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	const char *dir = NULL;
	long pid;
	int opt;

	optind = 1;
	while ((opt = getopt(argc, argv, "c:")) != -1) {
		if (opt == 'c')
			dir = optarg;
		else {
			fprintf(stderr, "usage: frugal %s [-c DIR]\n", what);
			return 1;
		}
	}
	c = conf_load_for_command(dir, &d);
	print_diags(&d, 0);
	conf_diags_free(&d);
	if (c == NULL)
		return 1;
	pid = read_pid(c);
	conf_unref(c);
	if (pid < 0) {
		fprintf(stderr, "frugal: the frugal daemon is not running\n");
		return strcmp(what, "stop") == 0 ? 1 : strcmp(what, "status") == 0 ? 1 : 75;
	}
	if (strcmp(what, "status") == 0) {
		printf("frugal: the frugal daemon is running: PID: %ld\n", pid);
		return 0;
	}
	if (kill((pid_t)pid, strcmp(what, "stop") == 0 ? SIGTERM : SIGHUP) < 0) {
		fprintf(stderr, "frugal: signal pid %ld: %s\n", pid, strerror(errno));
		return 75;
	}
	if (strcmp(what, "stop") == 0) {
		int i;
		printf("frugal: stopping the frugal daemon\n");
		for (i = 0; i < 300 && kill((pid_t)pid, 0) == 0; i++)
			usleep(100000); /* waiting for another process to exit: nothing to poll but its pid */
	} else {
		printf("frugal: refreshing the frugal daemon\n");
	}
	return 0;
}
