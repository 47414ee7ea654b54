/*
 * smtpd/serve.c: the daemon's life: `frugal serve` and the commands that
 * signal it (`reload`, `stop`, `status`). Start-up in order (configuration,
 * queue directory, limits, pid file, listeners, privileges, workers, queue
 * manager, recovery), the signals (HUP reload, TERM/INT stop, USR1 flush),
 * and the stop that drains commits and deliveries before exiting. One
 * process, one loop, no internal sockets on the hot path (guarantee 2).
 *
 * Owns the one struct smtpd_server of the process; sessions (session.c),
 * their registry (server.c) and admission (listen.c) work on it. Started
 * as root, `frugal serve` is the master (master.c), which forks this daemon
 * as mail_owner with no way back to root, and serve_run() is what it runs.
 */
#include "smtpd/smtpd_int.h"
#include "smtpd/smtpd.h"
#include "smtpd/screen.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/dns.h"
#include "core/daemon.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/mem.h"
#include "core/sync.h"
#include "core/worker.h"
#include "limits/limits.h"
#include "queue/queue.h"

static struct smtpd_server server;
static int draining;  /* the main ev_run has returned; the shutdown code runs the loop itself */
static ev_timer stop_timer;
static ev_signal sig_hup, sig_term, sig_int, sig_usr1;
static char conf_dir_opt[4096];
static int have_conf_dir;
static struct pickup *pickup;   /* local submission: the maildrop into the spool (queue/pickup.c) */

/* ---- signals ------------------------------------------------------------- */

static void stress_cb(int on, void *arg)
{
	server_set_stress(arg, on);
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

/* parameters set but not acted on in this version: a warning each, at start and reload */
static void log_later(void *arg, const char *name, const char *where)
{
	(void)arg;
	log_warning("master", "%s: %s is set, but this version of frugal does not act on it", where, name);
}

static void print_later(void *arg, const char *name, const char *where)
{
	(void)arg;
	fprintf(stderr, "warning: %s: %s is set, but this version of frugal does not act on it\n", where, name);
}

/* Which certificate new TLS sessions get: at start and at every reload. */
static void log_tls(const struct smtpd_gen *g)
{
	char d[400];

	if (g->tls == NULL)
		return;
	tls_ctx_describe(g->tls, d, sizeof d);
	log_info("master", "TLS certificate %s: %s%s", conf_str(g->conf, "smtpd_tls_cert_file", 0), d,
	    g->tls_level >= 2 ? " (TLS required: smtpd_tls_security_level = encrypt)" : "");
}

/*
 * A new configuration generation, or the running one kept. tf: the
 * certificate and key the master opened as root (the daemon cannot read a
 * root-only key itself), or NULL when the daemon runs alone.
 */
static void reload(const struct smtpd_tls_files *tf)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	struct smtpd_gen *g;
	char err[1024];
	const char *sweep;

	/* a rotated log file is followed (PRODUCT.md section 1), by the delivery helpers too */
	if (log_reopen("master") == 0 && log_is_file())
		helper_pass_log(log_fd());
	c = conf_load_for_command(have_conf_dir ? conf_dir_opt : NULL, &d);
	print_diags(&d, 1);
	conf_diags_free(&d);
	if (c == NULL) {
		log_warning("master", "reload failed: configuration has errors; keeping the running one");
		return;
	}
	/*
	 * Tests only (FRUGAL_ALLOC_SWEEP_TLS_RELOAD=k, tests/integration/test_faults_tlsctx.py):
	 * reload n fails the (1 + (n-1)k)-th allocation of building the server TLS context.
	 */
	if ((sweep = getenv("FRUGAL_ALLOC_SWEEP_TLS_RELOAD")) != NULL) {
		static unsigned long n;
		unsigned long k = strtoul(sweep, NULL, 10);

		tls_sweep_server(1 + n++ * (k ? k : 1));
	}
	g = smtpd_gen_new(c, tf, err, sizeof err);
	tls_sweep_server(0);   /* a generation without TLS leaves it armed */
	if (g == NULL) {
		log_warning("master", "reload failed: %s; keeping the running configuration", err);
		conf_unref(c);
		return;
	}
	if (strcmp(conf_str(c, "smtpd_listen", 0), conf_str(server.gen->conf, "smtpd_listen", 0)) != 0 ||
	    strcmp(conf_str(c, "smtps_listen", 0), conf_str(server.gen->conf, "smtps_listen", 0)) != 0)
		log_warning("master", "smtpd_listen or smtps_listen changed: takes effect at the next restart");
	conf_each_later(c, log_later, NULL);
	if (server.dns && dns_set_servers(server.dns, conf_str(c, "dns_servers", 0), err, sizeof err) < 0)
		log_warning("master", "reload: %s; keeping the DNS servers in use", err);
	smtpd_gen_unref(server.gen);   /* live sessions keep their own reference */
	server.gen = g;
	greylisting_open(&server);     /* check_greylist newly in a list: its table and store now */
	if (server.qmgr)
		qmgr_set_conf(server.qmgr, c);
	if (pickup) {
		pickup_set_conf(pickup, c);
		pickup_set_dkim(pickup, g->dkim);
	}
	limits_reconfigure(c);
	if (server.qmgr)
		qmgr_set_delivery_limit(server.qmgr, limits_delivery_concurrency());
	conf_unref(c);                 /* the generation holds its own */
	log_info("master", "reload -- version %s, configuration %s",
	    conf_str(g->conf, "mail_version", 0), conf_is_embedded(g->conf) ? "(embedded default)" : conf_dir(g->conf));
	log_tls(g);
}

/* SIGHUP: alone, or from an admin beside the master (which then also sends "reload") */
static void reload_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	reload(NULL);
}

static void finish_stop(void)
{
	/* EVBREAK_ONE: the shutdown code below runs the loop again to drain work */
	ev_break(server.loop, EVBREAK_ONE);
}

/* the reaper's hook: a stop ends when the last session is gone */
static void reaped_cb(struct smtpd_server *srv)
{
	if (srv->stopping && !draining && srv->nsessions == 0 && srv->reap == NULL)
		finish_stop();
}

static void shutdown_text(char *text, size_t len)
{
	snprintf(text, len, "421 4.3.2 %s Service shutting down, closing transmission channel",
	    server.gen->myhostname);
}

static void stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	char text[256];

	(void)loop; (void)w; (void)revents;
	/*
	 * sessions still talking have nothing acknowledged in flight that we
	 * could lose: a message not yet answered 250 is not ours, and its
	 * client, told 421, sends it again later. A commit already under way
	 * gets its answer first (session_shutdown leaves S_COMMIT alone).
	 */
	log_info("master", "stop: %d sessions still open after smtpd_shutdown_timeout; closing them", server.nsessions);
	shutdown_text(text, sizeof text);
	server_shutdown_sessions(&server, text);
	finish_stop();
}

/* a transaction in flight: MAIL given, its answer after the data not yet sent */
static int in_transaction(const struct session *s)
{
	return s->state == S_MAIL || s->state == S_RCPT || s->state == S_DATA || s->state == S_BDAT
	    || s->state == S_COMMIT || s->state == S_DNS_WAIT;
}

static void term_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	char text[256];

	(void)revents;
	if (server.stopping)
		return;
	log_info("master", "terminating on signal %d", w->signum);
	server.stopping = 1;
	listen_close(&server);
	screen_shutdown(&server);   /* clients not yet greeted: closed, they try again later */
	shutdown_text(text, sizeof text);
	/*
	 * Idle sessions go now; a transaction in flight may finish within
	 * smtpd_shutdown_timeout (its 250, then the 421: content.c), as
	 * Postfix's smtpd finishes the message it is receiving.
	 */
	{
		struct session *s, *next;

		for (s = server.sessions; s; s = next) {
			next = s->next;   /* session_shutdown may reap s */
			if (!in_transaction(s))
				session_shutdown(s, text);
		}
	}
	ev_timer_init(&stop_timer, stop_timer_cb,
	    (double)conf_time(server.gen->conf, "smtpd_shutdown_timeout", 0), 0.);
	ev_timer_start(loop, &stop_timer);
	reaped_cb(&server);
}

/*
 * SIGUSR1: `frugal queue flush [DOMAIN]`. The requests wait in
 * $queue_directory/status/flush (one per line, "*" for everything, taken
 * whole by a rename so none is lost to a concurrent writer); a signal
 * without the file (kill -USR1 by hand) flushes everything.
 */
static void usr1_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	const char *qdir = spool_dir(server.spool);
	char path[4096], taken[4112], req[4096], *line, *save = NULL;
	ssize_t n = 0;
	int fd, any = 0, all = 0;

	(void)loop; (void)w; (void)revents;
	log_info("master", "flush requested");
	if (server.qmgr == NULL)
		return;
	snprintf(path, sizeof path, "%s/status/flush", qdir);
	snprintf(taken, sizeof taken, "%s.taken", path);
	if (rename(path, taken) == 0 && (fd = fd_open(taken, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) >= 0) {
		/* a few requests at most; more than fit here become a flush of everything */
		n = read(fd, req, sizeof req - 1);
		fd_close(fd);
		unlink(taken);
	}
	if (n > 0) {
		req[n] = '\0';
		if (n == (ssize_t)sizeof req - 1)
			all = 1;
		for (line = strtok_r(req, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
			any = 1;
			if (strcmp(line, "*") == 0)
				all = 1;
			else if (strcmp(line, "+rescan") == 0)
				qmgr_rescan(server.qmgr);   /* frugal queue release: not a flush */
			else if (qmgr_flush_domain(server.qmgr, line) < 0)
				all = 1;   /* too many at once: everything, rather than drop one */
		}
	}
	if (!any || all)
		qmgr_flush(server.qmgr);
}

/* ---- pid file ------------------------------------------------------------ */

char *smtpd_pid_path(const struct conf *c)
{
	return mem_printf("%s/pid/frugal.pid", conf_str(c, "queue_directory", 0));
}

static int write_pidfile(const struct conf *c)
{
	char *path = smtpd_pid_path(c);
	long running;
	int fd;

	if (path == NULL)
		return -1;
	if ((fd = daemon_pidfile_lock(path, &running)) < 0) {
		if (errno == EWOULDBLOCK)
			log_warning("master", "the frugal daemon is already running (pid %ld, %s)", running, path);
		else
			log_warning("master", "pid file %s: %s", path, strerror(errno));
		mem_free(path);
		return -1;
	}
	mem_free(path);   /* the descriptor stays open for the lock, for the daemon's life */
	return 0;
}

/* ---- serve --------------------------------------------------------------- */

/*
 * The master's control socket (started as root): it hands over the socket
 * of a delivery helper it has (re)started, "helper NAME PID" with the
 * descriptor; we tell it once we serve ("ready").
 */
static ev_io control_io;
static long master_pid;
static long long master_fds, master_socks;   /* as the master reports them */

/* before each limits sample: what frugal's other processes hold */
static void push_siblings(void)
{
	limits_set_sibling_fds(master_fds + helper_fds(), master_socks + helper_socks());
}

static void siblings_changed(void)
{
	long pids[1 + HELPER_COUNT];
	int i, n = 0;

	if (master_pid > 0)
		pids[n++] = master_pid;
	for (i = 0; i < HELPER_COUNT; i++)
		if (helper_pid((enum helper_which)i) > 0)
			pids[n++] = helper_pid((enum helper_which)i);
	limits_set_siblings(pids, n);
}

static void control_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(2 * sizeof(int))];
	} u;
	char buf[1280], name[16];
	int fds[2] = { -1, -1 }, nfds = 0;
	struct iovec iov = { buf, sizeof buf - 1 };
	struct msghdr mh;
	struct cmsghdr *cm;
	ssize_t n;
	long pid;
	int fd = -1, i;

	(void)revents;
	memset(&mh, 0, sizeof mh);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.space;
	mh.msg_controllen = sizeof u.space;
	if ((n = recvmsg(w->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* nobody will restart a helper now; we go on serving with the ones we have */
		log_warning("master", "lost the master process: delivery helpers that die will not come back");
		ev_io_stop(loop, w);
		return;
	}
	buf[n] = '\0';
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			size_t k, nk = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (k = 0; k < nk && nfds < 2; k++) {
				memcpy(&fds[nfds], CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
				fd_received(fds[nfds], strncmp(buf, "reload", 6) == 0 ? FD_FILE : FD_SOCK);
				nfds++;
			}
		}
	fd = fds[0];
	if (strncmp(buf, "reload", 6) == 0) {
		/* "reload CERT\tKEY" with both files opened by the master as root, or a bare "reload" */
		struct smtpd_tls_files tf;
		char *tab;

		memset(&tf, 0, sizeof tf);
		tf.cert_fd = fds[0];
		tf.key_fd = fds[1];
		if (buf[6] == ' ' && (tab = strchr(buf + 7, '\t')) != NULL && (size_t)(tab - (buf + 7)) < sizeof tf.cert_path &&
		    strlen(tab + 1) < sizeof tf.key_path) {
			/* paths that do not fit match no configured path: the daemon then opens its own */
			memcpy(tf.cert_path, buf + 7, (size_t)(tab - (buf + 7)));
			memcpy(tf.key_path, tab + 1, strlen(tab + 1));
		}
		reload(&tf);
		smtpd_tls_files_close(&tf);
		return;
	}
	if (nfds > 1)
		fd_close(fds[1]);
	if (sscanf(buf, "master %lld %lld", &master_fds, &master_socks) == 2 && fd < 0) {
		limits_resample();   /* the report shows frugal's processes together from now on */
		return;
	}
	if (sscanf(buf, "helper %15s %ld", name, &pid) == 2 && fd >= 0) {
		for (i = 0; i < HELPER_COUNT; i++)
			if (strcmp(name, helper_name((enum helper_which)i)) == 0) {
				helper_attach((enum helper_which)i, fd, pid);
				siblings_changed();
				return;
			}
	}
	log_warning("master", "unexpected message from the master: %.60s", buf);
	fd_close(fd);
}

int serve_run(struct conf *c, const struct serve_inherit *in)
{
	char err[1024];
	int found, i;

	/* glibc gives each thread an arena of its own otherwise: private memory the budget pays for */
	mallopt(M_ARENA_MAX, 2);
	mem_install_hooks();
	if (ev_default_loop(EVFLAG_AUTO) == NULL)
		log_fatal("master", "cannot initialise the event loop");
	server_init(&server, ev_default_loop(0));
	server.on_reaped = reaped_cb;
	/* before anything can make us visible (pid file, listeners): an early HUP must not kill us */
	ev_signal_init(&sig_hup, reload_cb, SIGHUP);
	ev_signal_init(&sig_term, term_cb, SIGTERM);
	ev_signal_init(&sig_int, term_cb, SIGINT);
	ev_signal_init(&sig_usr1, usr1_cb, SIGUSR1);
	ev_signal_start(server.loop, &sig_hup);
	ev_signal_start(server.loop, &sig_term);
	ev_signal_start(server.loop, &sig_int);
	ev_signal_start(server.loop, &sig_usr1);
	/* the queue directory first: limits/ writes its status file there */
	if ((server.spool = spool_open(conf_str(c, "queue_directory", 0), err, sizeof err)) == NULL)
		log_fatal("master", "queue_directory %s: %s", conf_str(c, "queue_directory", 0), err);
	if (limits_init(server.loop, c) < 0)
		log_fatal("master", "cannot determine resource limits");
	spool_set_loop(server.spool, server.loop);
	/* alone (unprivileged), the pid file is ours; under a master, the master's */
	if (in == NULL && write_pidfile(c) < 0) {
		spool_close(server.spool);
		conf_unref(c);
		return 1;
	}
	resolver_use_helpers(in != NULL);
	{
		struct smtpd_tls_files tf;

		if (in)
			tf = in->tls;
		server.gen = smtpd_gen_new(c, in ? &tf : NULL, err, sizeof err);
		if (in)
			smtpd_tls_files_close(&tf);
		if (server.gen == NULL)
			log_fatal("master", "%s", err);
		log_tls(server.gen);
	}
	conf_each_later(c, log_later, NULL);
	/* the resolver: its sockets are opened per query, through the funnel (counted, not adopted) */
	if ((server.dns = dns_new(server.loop, NULL, conf_str(c, "dns_servers", 0), err, sizeof err)) == NULL)
		log_fatal("master", "%s", err);
	agent_set_dns(server.dns);     /* the same handle for good: a reload changes its servers only */
	screen_init(&server);          /* the pass cache, from the queue directory */
	if (in == NULL ? listen_open(&server, c) < 0 : listen_attach(&server, c, in->listen_fds, in->nlisten) < 0)
		log_fatal("master", "cannot open the SMTP listeners");
	helper_init(server.loop);
	if (in) {
		master_pid = in->master_pid;
		for (i = 0; i < HELPER_COUNT; i++)
			if (in->helper_fd[i] >= 0)
				helper_attach((enum helper_which)i, in->helper_fd[i], in->helper_pid[i]);
		siblings_changed();
		limits_on_sample(push_siblings);
		ev_io_init(&control_io, control_cb, in->control_fd, EV_READ);
		ev_io_start(server.loop, &control_io);
		ev_unref(server.loop);   /* the master's socket alone must not keep us running */
	}
	/*
	 * Workers mostly wait on the disk; more of them in flight means more
	 * commits and deliveries sharing each sync (core/sync.h). Commits have
	 * threads of their own: a 250 never waits behind deliveries.
	 */
	/* password checks: AUTH_THREADS at once (yescrypt: 16 MiB and about 50 ms of CPU each) */
	if (worker_init(server.loop, (const int[WORKER_CLASSES]){ [WORKER_COMMIT] = 8, [WORKER_DELIVERY] = 16,
	    [WORKER_AUTH] = AUTH_THREADS }) < 0)
		log_fatal("master", "cannot start worker threads: %s", strerror(errno));
	if ((server.qmgr = qmgr_new(server.loop, server.spool, c)) == NULL)
		log_fatal("master", "cannot start the queue manager: out of memory");
	qmgr_set_delivery_limit(server.qmgr, limits_delivery_concurrency());
	found = qmgr_recover(server.qmgr);
	if (found > 0)
		log_info("qmgr", "recovered %d queued messages", found);
	/* after recovery: what sendmail dropped while we were down is queued next */
	pickup = pickup_new(server.loop, server.spool, c);
	if (pickup)
		pickup_set_dkim(pickup, server.gen->dkim);
	limits_on_stress(stress_cb, &server);
	greylisting_open(&server);   /* the greylist store read now, before the first client */
	/*
	 * Start-up is over: what libraries opened for good (libev's epoll and
	 * eventfd, stdio, the log) joins the descriptor ledger, and the private
	 * memory the allocator cannot see (thread stacks, libraries' data) is
	 * measured; the next sample publishes both.
	 */
	fd_adopt_open();
	limits_measure_fixed();
	limits_resample();
	log_info("master", "daemon started -- version %s, configuration %s",
	    conf_str(c, "mail_version", 0), conf_is_embedded(c) ? "(embedded default)" : conf_dir(c));
	if (in && send(in->control_fd, "ready", 5, MSG_NOSIGNAL) < 0)
		log_warning("master", "cannot tell the master we serve: %s", strerror(errno));
	if (in == NULL)
		daemon_detach_done(0);   /* alone (not root): `frugal serve` returns now (under a master, the master says it) */
	conf_unref(c); /* server.gen holds its own reference */
	mem_arm_deferred_failure();

	ev_run(server.loop, 0);
	draining = 1;

	/*
	 * Stopping. Commits in flight finish first (their sessions get the 250 or
	 * 451 they are owed, and no callback may outlive its session), then
	 * deliveries in flight, then the workers.
	 */
	pickup_free(pickup);   /* its commit in flight first: it calls back into the spool */
	pickup = NULL;
	while (server.commits > 0)
		ev_run(server.loop, EVRUN_ONCE);
	greylisting_close(&server);   /* the last snapshot (waits for one in flight) */
	qmgr_free(server.qmgr);
	worker_shutdown();
	helper_shutdown();
	server_free_sessions(&server);
	screen_exit(&server);   /* the pass cache saved for the next start */
	dovecot_free(server.dovecot);
	anvil_free(server.anvil);
	server.anvil = NULL;
	agent_set_dns(NULL);
	dns_free(server.dns);
	server.dns = NULL;
	limits_shutdown();
	log_info("master", "group commit: %lu syncs served %lu sync requests",
	    sync_shared_syncs(), sync_shared_calls());
	log_info("master", "daemon stopped");
	smtpd_gen_unref(server.gen);
	spool_close(server.spool);
	return 0;
}

int smtpd_cmd_serve(int argc, char **argv)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	int opt, foreground = 0;

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
	if (!foreground && !conf_is_embedded(c) && daemon_detach() < 0) {
		fprintf(stderr, "frugal: fork: %s\n", strerror(errno));
		return 75;
	}
	log_open(conf_str(c, "syslog_name", 0),
	    foreground ? "/dev/stderr" : conf_str(c, "maillog_file", 0), conf_str(c, "syslog_facility", 0));
	signal(SIGPIPE, SIG_IGN);
	if (conf_is_embedded(c))
		log_info("master", "no %s/frugal.conf: running the embedded development default: "
		    "listening on %s, queue %s, mail for localhost delivered to %s/USER/Maildir/, relaying for nobody",
		    CONF_DEFAULT_DIR, conf_str(c, "smtpd_listen", 0), conf_str(c, "queue_directory", 0),
		    conf_str(c, "local_mailbox_base", 0));
	/* started as root: a master that keeps root, a daemon and helpers that do not (master.c) */
	if (geteuid() == 0)
		return master_run(c, have_conf_dir ? conf_dir_opt : NULL);
	return serve_run(c, NULL);
}

static void print_error(const char *text)
{
	fprintf(stderr, "%s\n", text);
}

/*
 * maillog_file as the daemon will need it: a file it can append to, and
 * reopen after rotation as mail_owner. Started as root, the master creates
 * the file and gives it to mail_owner (log_file_chown), so what is left to
 * warn about is a directory that is not there, something that is not a
 * file, a directory mail_owner cannot pass through (the daemon reopens by
 * path after the master), and, for a check not run as root, a path the
 * account that runs it cannot write.
 */
static void check_maillog(const struct conf *c)
{
	const char *path = conf_str(c, "maillog_file", 0), *owner = conf_str(c, "mail_owner", 0);
	char dir[512], *slash;
	struct passwd *pw;
	struct stat st;

	if (path == NULL || *path == '\0' || strncmp(path, "/dev/", 5) == 0)
		return;
	snprintf(dir, sizeof dir, "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL)
		*(slash == dir ? slash + 1 : slash) = '\0';
	else
		snprintf(dir, sizeof dir, ".");
	errno = 0;
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "warning: maillog_file %s: its directory %s: %s\n", path, dir,
		    errno ? strerror(errno) : "not a directory");
		return;
	}
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		fprintf(stderr, "warning: maillog_file %s: not a regular file\n", path);
		return;
	}
	if (geteuid() != 0) {
		if (access(stat(path, &st) == 0 ? path : dir, W_OK) < 0)
			fprintf(stderr, "warning: maillog_file %s: not writable by this account: %s\n", path, strerror(errno));
		return;
	}
	/* the daemon reopens the file by its path as mail_owner: the directory must let it through */
	pw = owner ? getpwnam(owner) : NULL;
	if (pw && pw->pw_uid != 0 && stat(dir, &st) == 0 && !(st.st_uid == pw->pw_uid && (st.st_mode & S_IXUSR)) &&
	    !(st.st_gid == pw->pw_gid && (st.st_mode & S_IXGRP)) && !(st.st_mode & S_IXOTH))
		fprintf(stderr, "warning: maillog_file %s: mail_owner %s cannot reach it (directory %s): "
		    "the log would not be reopened after rotation\n", path, owner, dir);
}

/*
 * `frugal check`: the configuration as `serve` would take it. The conf room
 * checks files and tables (conf_check); the generation that serve and
 * reload build (smtpd_gen_new: restrictions, mynetworks, routing tables,
 * the relay rule) is built here too, by the same code, so check never
 * passes what serve refuses.
 */
int smtpd_cmd_check(int argc, char **argv)
{
	struct conf_diags d;
	struct smtpd_gen *g;
	struct conf *c;
	const char *dir = NULL;
	char err[1024];
	int opt, errors;

	optind = 1;
	while ((opt = getopt(argc, argv, "+c:")) != -1) {
		if (opt == 'c')
			dir = optarg;
		else
			goto usage;
	}
	if (optind < argc)
		goto usage;
	c = conf_load_for_command(dir, &d);
	conf_print_diags(&d);
	conf_diags_free(&d);
	if (c == NULL)
		return 1;
	errors = conf_check(c);
	if ((g = smtpd_gen_new(c, NULL, err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		errors++;
	} else {
		smtpd_gen_unref(g);
	}
	errors += resolver_check_forward(c, NULL, print_error);
	conf_each_later(c, print_later, NULL);
	check_maillog(c);
	conf_unref(c);
	return errors ? 1 : 0;
usage:
	fprintf(stderr, "usage: frugal check [-c DIR]\n");
	return 1;
}

/* a process that has exited but not been reaped (its parent's business) counts as gone */
static int still_running(long pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	int gone = 0;

	if (kill((pid_t)pid, 0) < 0 && errno != EPERM)
		return 0;
	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	if ((f = fopen(path, "r")) != NULL) {
		if (fgets(buf, sizeof buf, f) && (p = strrchr(buf, ')')) != NULL && p[1] == ' ')
			gone = p[2] == 'Z' || p[2] == 'X';
		fclose(f);
	}
	return !gone;
}

int smtpd_cmd_signal(const char *what, int argc, char **argv)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	const char *dir = NULL;
	char *path;
	long pid;
	long long grace, i;
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
	path = smtpd_pid_path(c);
	pid = path ? daemon_pidfile_read(path) : -1;
	mem_free(path);
	/* the daemon's own bound, and as long again for the queue's commits and deliveries */
	grace = conf_time(c, "smtpd_shutdown_timeout", 0) * 2 + 10;
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
		printf("frugal: stopping the frugal daemon\n");
		fflush(stdout);
		for (i = 0; i < grace * 10 && still_running(pid); i++)
			usleep(100000); /* waiting for another process to exit: nothing to poll but its pid */
		if (still_running(pid)) {
			fprintf(stderr, "frugal: the frugal daemon (pid %ld) is still running after %llds\n", pid, grace);
			return 75;
		}
	} else {
		printf("frugal: refreshing the frugal daemon\n");
	}
	return 0;
}
