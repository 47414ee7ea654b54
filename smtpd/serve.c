/*
 * smtpd/serve.c: the daemon's life: `frugal serve` and the commands that
 * signal it (`reload`, `stop`, `status`). Start-up in order (configuration,
 * queue directory, limits, pid file, listeners, privileges, workers, queue
 * manager, recovery), the signals (HUP reload, TERM/INT stop, USR1 flush),
 * and the stop that drains commits and deliveries before exiting. One
 * process, one loop, no internal sockets on the hot path (guarantee 2).
 *
 * Owns the one struct smtpd_server of the process; sessions (session.c),
 * their registry (server.c) and admission (listen.c) work on it.
 */
#include "smtpd/smtpd_int.h"
#include "smtpd/smtpd.h"

#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/daemon.h"
#include "core/fd.h"
#include "core/log.h"
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

static void reload_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	struct smtpd_gen *g;
	char err[1024];

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
	conf_each_later(c, log_later, NULL);
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

/* the reaper's hook: a stop ends when the last session is gone */
static void reaped_cb(struct smtpd_server *srv)
{
	if (srv->stopping && !draining && srv->nsessions == 0 && srv->reap == NULL)
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
	char text[256];

	(void)revents;
	if (server.stopping)
		return;
	log_info("master", "terminating on signal %d", w->signum);
	server.stopping = 1;
	listen_close(&server);
	snprintf(text, sizeof text, "421 4.3.2 %s Service shutting down, closing transmission channel",
	    server.gen->myhostname);
	server_shutdown_sessions(&server, text);
	ev_timer_init(&stop_timer, stop_timer_cb, 10., 0.);
	ev_timer_start(loop, &stop_timer);
	reaped_cb(&server);
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
	char *path = pid_path(c);
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

int smtpd_cmd_serve(int argc, char **argv)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	char err[1024];
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
	if (!foreground && !conf_is_embedded(c) && daemon_detach() < 0) {
		fprintf(stderr, "frugal: fork: %s\n", strerror(errno));
		return 75;
	}
	log_open(conf_str(c, "syslog_name", 0),
	    foreground ? "/dev/stderr" : conf_str(c, "maillog_file", 0), conf_str(c, "syslog_facility", 0));
	signal(SIGPIPE, SIG_IGN);
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
	conf_each_later(c, log_later, NULL);
	if (listen_open(&server, c) < 0)
		log_fatal("master", "cannot open the SMTP listeners");
	if (drop_privileges(c) < 0)
		log_fatal("master", "cannot run as mail_owner");
	/*
	 * Workers mostly wait on the disk; more of them in flight means more
	 * commits and deliveries sharing each sync (core/sync.h). Commits have
	 * threads of their own: a 250 never waits behind deliveries.
	 */
	if (worker_init(server.loop, (const int[WORKER_CLASSES]){ [WORKER_COMMIT] = 8, [WORKER_DELIVERY] = 8 }) < 0)
		log_fatal("master", "cannot start worker threads: %s", strerror(errno));
	if ((server.qmgr = qmgr_new(server.loop, server.spool, c)) == NULL)
		log_fatal("master", "cannot start the queue manager: out of memory");
	qmgr_set_delivery_limit(server.qmgr, limits_delivery_concurrency());
	found = qmgr_recover(server.qmgr);
	if (found > 0)
		log_info("qmgr", "recovered %d queued messages", found);
	limits_on_stress(stress_cb, &server);
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
	server_free_sessions(&server);
	limits_shutdown();
	log_info("master", "group commit: %lu syncs served %lu sync requests",
	    sync_shared_syncs(), sync_shared_calls());
	log_info("master", "daemon stopped");
	smtpd_gen_unref(server.gen);
	spool_close(server.spool);
	return 0;
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
	if ((g = smtpd_gen_new(c, err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		errors++;
	} else {
		smtpd_gen_unref(g);
	}
	conf_each_later(c, print_later, NULL);
	conf_unref(c);
	return errors ? 1 : 0;
usage:
	fprintf(stderr, "usage: frugal check [-c DIR]\n");
	return 1;
}

int smtpd_cmd_signal(const char *what, int argc, char **argv)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	const char *dir = NULL;
	char *path;
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
	path = pid_path(c);
	pid = path ? daemon_pidfile_read(path) : -1;
	mem_free(path);
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
