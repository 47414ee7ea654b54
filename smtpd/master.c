/*
 * smtpd/master.c: `frugal serve` started as root (PRODUCT.md 3.5). A small
 * supervisor that keeps root and never talks to the network: it lays out
 * the queue directory, holds the pid file, binds the listeners, and forks
 *   - the delivery helpers that are needed: `virtual` (as
 *     virtual_mailbox_owner) and `local` (root, becoming each system user
 *     per delivery), each with one socketpair to the daemon;
 *   - the daemon (smtpd, queue manager, spool) as mail_owner: real,
 *     effective and saved IDs dropped, supplementary groups dropped,
 *     PR_SET_NO_NEW_PRIVS; it cannot become root again.
 * Then it waits: a helper that dies is restarted and the daemon gets the
 * new socket over the control socketpair (deliveries in flight fail soft
 * and are retried); a daemon that dies after start-up is restarted with
 * fresh helpers; HUP reloads: the master opens the TLS certificate and
 * key again as root and sends the daemon a reload message carrying both
 * descriptors (the key stays readable by root only), and passes HUP on to
 * the helpers; USR1 is passed on; TERM stops the daemon (which drains its
 * commits and deliveries), then the helpers.
 *
 * Single-threaded, no libev: signals arrive through a signalfd and children
 * are reaped here only (libev's default loop, in the children, reaps its
 * own: none). Children die with the master (PR_SET_PDEATHSIG).
 */
#include "smtpd/smtpd_int.h"

#include <errno.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/daemon.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/privs.h"
#include "core/sync.h"
#include "limits/limits.h"
#include "queue/queue.h"

#define BACKOFF_MAX  60   /* seconds between restarts of something that keeps dying */
#define STOP_GRACE   60   /* seconds the daemon gets to drain before it is killed */

struct child {
	pid_t pid;            /* 0: not running */
	int needed;           /* a helper this configuration uses */
	int backoff;          /* seconds before the next restart */
	time_t restart_at;    /* 0: no restart pending */
	time_t started;
};

static struct {
	struct conf *c;
	const char *conf_dir;
	uid_t uid, vuid;      /* mail_owner, virtual_mailbox_owner */
	gid_t gid, vgid;
	int listen_fds[SMTPD_MAX_LISTENERS];
	int nlisten;
	int control;          /* our end of the control socketpair; -1 */
	int sigfd;
	struct child smtpd, helper[HELPER_COUNT];
	int helper_daemon_end[HELPER_COUNT];  /* the daemon's ends, handed over at its fork */
	int ready;            /* the daemon said it serves */
	int stopping;
	time_t stop_deadline; /* past it, what still runs is killed */
	int exit_code;
} M;

static const char *child_name(const struct child *ch)
{
	int i;

	for (i = 0; i < HELPER_COUNT; i++)
		if (ch == &M.helper[i])
			return helper_name((enum helper_which)i);
	return "smtpd";
}

/* In a child: only what it needs stays open; the log is opened afresh. */
static void child_setup(const int *keep, int nkeep)
{
	sigset_t all;

	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGUSR1, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	int k2[SMTPD_MAX_LISTENERS + 3 + HELPER_COUNT + 1], n2 = 0, i;

	for (i = 0; i < nkeep && n2 < (int)(sizeof k2 / sizeof k2[0]) - 1; i++)
		k2[n2++] = keep[i];
	if (log_fd() >= 0)
		k2[n2++] = log_fd();   /* the log's descriptor (through the funnel) stays: one log for every process */
	fd_close_except(k2, n2);
}

/*
 * A child's exit status, after LeakSanitizer's check in an ASan build. LSan checks at exit(),
 * and a forked child ends with _exit() (the parent's atexit handlers and stdio buffers are
 * not its own), so without this the daemon and the helpers were never leak-checked by make
 * check's ASan pass (valgrind checks at any exit). A leak ends the child with LSan's status.
 */
static int child_status(int rc)
{
#if defined(__SANITIZE_ADDRESS__)
	__lsan_do_leak_check();
#endif
	return rc;
}

/* After the child's identity is final (a credential change clears it): die with the master. */
static void die_with_master(pid_t master)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != master)
		_exit(75);   /* the master went already */
}

static int start_helper(enum helper_which w)
{
	struct child *ch = &M.helper[w];
	pid_t master = getpid(), pid;
	int sv[2], keep[1];

	if (fd_socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_warning("master", "socketpair for helper %s: %s", helper_name(w), strerror(errno));
		return -1;
	}
	if ((pid = fork()) < 0) {
		log_warning("master", "fork helper %s: %s", helper_name(w), strerror(errno));
		fd_close(sv[0]);
		fd_close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		char err[256];

		keep[0] = sv[1];
		child_setup(keep, 1);
		if (w == HELPER_VIRTUAL && privs_drop(M.vuid, M.vgid, err, sizeof err) < 0) {
			log_warning(helper_name(w), "%s", err);
			_exit(75);
		}
		die_with_master(master);
		_exit(child_status(helperd_run(w, sv[1], M.c, M.conf_dir)));
	}
	fd_close(sv[1]);
	ch->pid = pid;
	ch->started = time(NULL);
	ch->restart_at = 0;
	M.helper_daemon_end[w] = sv[0];
	return 0;
}

/* Tell the daemon what this process holds: its ledger counts frugal's processes together. */
static void send_stats(void)
{
	char text[64];
	int n;

	if (M.control < 0)
		return;
	/* the listeners are the daemon's sockets too: counted there, once */
	n = snprintf(text, sizeof text, "master %lld %lld", fd_total() - M.nlisten, fd_count(FD_SOCK));
	if (send(M.control, text, (size_t)n, MSG_NOSIGNAL) < 0)
		log_warning("master", "cannot report to the daemon: %s", strerror(errno));
}

/* One control message to the daemon: text, and up to 2 descriptors (SCM_RIGHTS). 0, or -1 (errno). */
static int control_send(const char *text, const int *fds, int n)
{
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(2 * sizeof(int))];
	} u;
	struct iovec iov;
	struct msghdr mh;
	struct cmsghdr *cm;

	iov.iov_base = (void *)text;
	iov.iov_len = strlen(text);
	memset(&mh, 0, sizeof mh);
	memset(&u, 0, sizeof u);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (n > 0) {
		mh.msg_control = u.space;
		mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(n * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
	}
	return sendmsg(M.control, &mh, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

/* Hand the daemon the socket of a helper that was (re)started. */
static void hand_over(enum helper_which w)
{
	char text[64];
	int fd = M.helper_daemon_end[w];

	if (fd < 0 || M.control < 0)
		return;
	snprintf(text, sizeof text, "helper %s %ld", helper_name(w), (long)M.helper[w].pid);
	if (control_send(text, &fd, 1) < 0)
		log_warning("master", "cannot hand helper %s to the daemon: %s", helper_name(w), strerror(errno));
	fd_close(fd);
	M.helper_daemon_end[w] = -1;
	send_stats();
}

static int start_smtpd(void)
{
	struct serve_inherit in;
	pid_t master = getpid(), pid;
	int sv[2], keep[SMTPD_MAX_LISTENERS + 3 + HELPER_COUNT], nkeep = 0, i;

	if (fd_socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_warning("master", "control socketpair: %s", strerror(errno));
		return -1;
	}
	memset(&in, 0, sizeof in);
	/* the certificate and key as root reads them (a root-only key is the usual case) */
	smtpd_tls_files_open(M.c, &in.tls);
	if (in.tls.cert_fd >= 0)
		keep[nkeep++] = in.tls.cert_fd;
	if (in.tls.key_fd >= 0)
		keep[nkeep++] = in.tls.key_fd;
	for (i = 0; i < M.nlisten; i++)
		keep[nkeep++] = in.listen_fds[i] = M.listen_fds[i];
	in.nlisten = M.nlisten;
	keep[nkeep++] = in.control_fd = sv[1];
	for (i = 0; i < HELPER_COUNT; i++) {
		in.helper_fd[i] = M.helper_daemon_end[i];
		in.helper_pid[i] = (long)M.helper[i].pid;
		if (in.helper_fd[i] >= 0)
			keep[nkeep++] = in.helper_fd[i];
	}
	in.master_pid = (long)master;
	if ((pid = fork()) < 0) {
		log_warning("master", "fork smtpd: %s", strerror(errno));
		fd_close(sv[0]);
		fd_close(sv[1]);
		smtpd_tls_files_close(&in.tls);
		return -1;
	}
	if (pid == 0) {
		char err[256];

		child_setup(keep, nkeep);
		/* procfs checks at open: read as root now, re-read as mail_owner later */
		limits_beancounters_keep(conf_str(M.c, "beancounters_file", 0));
		if (privs_drop(M.uid, M.gid, err, sizeof err) < 0) {
			log_warning("master", "cannot run as mail_owner: %s", err);
			_exit(1);
		}
		die_with_master(master);
		_exit(child_status(serve_run(conf_ref(M.c), &in)));
	}
	fd_close(sv[1]);
	smtpd_tls_files_close(&in.tls);
	for (i = 0; i < HELPER_COUNT; i++)
		if (M.helper_daemon_end[i] >= 0) {
			fd_close(M.helper_daemon_end[i]);
			M.helper_daemon_end[i] = -1;
		}
	M.control = sv[0];
	M.smtpd.pid = pid;
	M.smtpd.started = time(NULL);
	M.smtpd.restart_at = 0;
	M.ready = 0;
	send_stats();
	return 0;
}

static int start_all(void)
{
	int i;

	for (i = 0; i < HELPER_COUNT; i++)
		if (M.helper[i].needed && start_helper((enum helper_which)i) < 0)
			return -1;
	return start_smtpd();
}

static void signal_children(int sig)
{
	int i;

	if (M.smtpd.pid > 0)
		kill(M.smtpd.pid, sig);
	for (i = 0; i < HELPER_COUNT; i++)
		if (M.helper[i].pid > 0)
			kill(M.helper[i].pid, sig);
}

static void schedule(struct child *ch)
{
	time_t now = time(NULL);

	/* something that ran a minute is not a crash loop: start the backoff again */
	if (now - ch->started >= BACKOFF_MAX)
		ch->backoff = 0;
	ch->backoff = ch->backoff ? ch->backoff * 2 : 1;
	if (ch->backoff > BACKOFF_MAX)
		ch->backoff = BACKOFF_MAX;
	ch->restart_at = now + ch->backoff;
}

static void describe(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
}

static void reaped(pid_t pid, int status)
{
	char how[64];
	int i;

	describe(status, how, sizeof how);
	if (pid == M.smtpd.pid) {
		M.smtpd.pid = 0;
		fd_close(M.control);
		M.control = -1;
		if (M.stopping)
			return;
		if (!M.ready) {
			/* start-up failed (its fatal line says why): no restart loop for a broken configuration */
			log_warning("master", "smtpd (pid %ld) did not start (%s): stopping", (long)pid, how);
			M.stopping = 1;
			M.exit_code = WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
			return;
		}
		schedule(&M.smtpd);
		log_warning("master", "smtpd (pid %ld) %s: restarting it and the delivery helpers in %d s",
		    (long)pid, how, M.smtpd.backoff);
		/* fresh helpers with it: their sockets went with the old daemon */
		for (i = 0; i < HELPER_COUNT; i++)
			if (M.helper[i].pid > 0)
				kill(M.helper[i].pid, SIGTERM);
		return;
	}
	for (i = 0; i < HELPER_COUNT; i++) {
		struct child *ch = &M.helper[i];

		if (pid != ch->pid)
			continue;
		ch->pid = 0;
		if (M.stopping || M.smtpd.restart_at)
			return;   /* stopping, or restarted with the daemon */
		schedule(ch);
		log_warning("master", "delivery helper %s (pid %ld) %s: restarting it in %d s", child_name(ch),
		    (long)pid, how, ch->backoff);
		return;
	}
}

static void restarts(void)
{
	time_t now = time(NULL);
	int i, helpers_alive = 0;

	for (i = 0; i < HELPER_COUNT; i++)
		helpers_alive |= M.helper[i].pid > 0;
	if (M.smtpd.restart_at && now >= M.smtpd.restart_at && !helpers_alive) {
		if (start_all() < 0)
			schedule(&M.smtpd);
		return;
	}
	if (M.smtpd.restart_at || M.smtpd.pid == 0)
		return;
	for (i = 0; i < HELPER_COUNT; i++) {
		struct child *ch = &M.helper[i];

		if (ch->restart_at && now >= ch->restart_at) {
			if (start_helper((enum helper_which)i) == 0)
				hand_over((enum helper_which)i);
			else
				schedule(ch);
		}
	}
}

static int next_timeout(void)
{
	time_t now = time(NULL), t = 0;
	int i;

	if (M.smtpd.restart_at)
		t = M.smtpd.restart_at;
	for (i = 0; i < HELPER_COUNT; i++)
		if (M.helper[i].restart_at && (!t || M.helper[i].restart_at < t))
			t = M.helper[i].restart_at;
	if (M.stopping)
		return 1000;
	return t ? (t > now ? (int)(t - now) * 1000 : 0) : -1;
}

/*
 * The daemon reloads on a "reload" message that carries the certificate
 * and key opened here as root (it runs as mail_owner and could not read a
 * root-only key); without a control socket, a plain SIGHUP.
 */
static void reload_daemon(void)
{
	struct smtpd_tls_files tf;
	char text[1100];
	int fds[2], n = 0;

	if (M.smtpd.pid <= 0)
		return;
	if (M.control < 0) {
		kill(M.smtpd.pid, SIGHUP);
		return;
	}
	smtpd_tls_files_open(M.c, &tf);
	if (tf.cert_fd >= 0 && tf.key_fd >= 0) {
		snprintf(text, sizeof text, "reload %s\t%s", tf.cert_path, tf.key_path);
		fds[n++] = tf.cert_fd;
		fds[n++] = tf.key_fd;
	} else {
		snprintf(text, sizeof text, "reload");
	}
	if (control_send(text, fds, n) < 0) {
		log_warning("master", "cannot ask the daemon to reload: %s; signalling it", strerror(errno));
		kill(M.smtpd.pid, SIGHUP);
	}
	smtpd_tls_files_close(&tf);
}

static void reload(void)
{
	struct conf_diags d;
	struct conf *c;
	int i;

	/* as root first (it may create the file in a root-owned directory), then mail_owner's own */
	if (log_reopen("master") == 0)
		log_file_chown(M.uid, M.gid);
	c = conf_load_for_command(M.conf_dir, &d);
	conf_diags_free(&d);
	/* the daemon says what is wrong with a configuration; we keep the last good one for restarts */
	if (c) {
		conf_unref(M.c);
		M.c = c;
	}
	reload_daemon();
	for (i = 0; i < HELPER_COUNT; i++)
		if (M.helper[i].pid > 0)
			kill(M.helper[i].pid, SIGHUP);
}

static int lookup_user(const char *param, uid_t *uid, gid_t *gid)
{
	const char *name = conf_str(M.c, param, 0);
	struct passwd *pw = getpwnam(name);

	if (pw == NULL) {
		log_warning("master", "%s %s: unknown user (create it, or set %s)", param, name, param);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

int master_run(struct conf *c, const char *conf_dir)
{
	char err[1024], *pidpath;
	struct smtpd_gen *g;
	sigset_t set;
	long running;
	int i, pidfd;

	memset(&M, 0, sizeof M);
	M.c = c;
	M.conf_dir = conf_dir;
	M.control = -1;
	for (i = 0; i < HELPER_COUNT; i++)
		M.helper_daemon_end[i] = -1;
	/* the configuration as the daemon will take it: refused here, before anything starts */
	resolver_use_helpers(1);
	if ((g = smtpd_gen_new(c, NULL, err, sizeof err)) == NULL) {
		log_warning("master", "fatal: %s", err);
		return 1;
	}
	smtpd_gen_unref(g);
	if (lookup_user("mail_owner", &M.uid, &M.gid) < 0)
		return 1;
	log_file_chown(M.uid, M.gid);   /* mail_owner reopens it after rotation (DESIGN.md, Logging) */
	if (M.uid == 0)
		log_warning("master", "mail_owner is %s (uid 0): the SMTP process runs as root",
		    conf_str(c, "mail_owner", 0));
	/* virtual mailboxes of another owner: the virtual helper writes them */
	if (*conf_str(c, "virtual_mailbox_domains", 0) && lookup_user("virtual_mailbox_owner", &M.vuid, &M.vgid) == 0 &&
	    M.vuid != M.uid)
		M.helper[HELPER_VIRTUAL].needed = 1;
	/* system users' homes (no local_mailbox_base): the local helper becomes each of them */
	if (*conf_str(c, "local_mailbox_base", 0) == '\0')
		M.helper[HELPER_LOCAL].needed = 1;
	if (spool_prepare(conf_str(c, "queue_directory", 0), M.uid, M.gid, err, sizeof err) < 0) {
		log_warning("master", "queue_directory: %s", err);
		return 1;
	}
	{
		/* local submission: only frugal-postdrop (set-group-ID setgid_group) writes the maildrop */
		const char *gname = conf_str(c, "setgid_group", 0);
		struct group *gr = getgrnam(gname);

		if (gr == NULL)
			log_warning("master", "setgid_group %s: no such group: the maildrop is writable by "
			    "root alone (sendmail fails for other users)", gname);
		if (spool_prepare_maildrop(conf_str(c, "queue_directory", 0), M.uid, gr ? gr->gr_gid : M.gid,
		    err, sizeof err) < 0) {
			log_warning("master", "queue_directory: %s", err);
			return 1;
		}
	}
	if ((pidpath = mem_printf("%s/pid/frugal.pid", conf_str(c, "queue_directory", 0))) == NULL)
		return 75;
	if ((pidfd = daemon_pidfile_lock(pidpath, &running)) < 0) {
		if (errno == EWOULDBLOCK)
			log_warning("master", "the frugal daemon is already running (pid %ld, %s)", running, pidpath);
		else
			log_warning("master", "pid file %s: %s", pidpath, strerror(errno));
		mem_free(pidpath);
		return 1;
	}
	mem_free(pidpath);
	if ((M.nlisten = listen_bind(c, M.listen_fds, SMTPD_MAX_LISTENERS)) < 0) {
		log_warning("master", "fatal: cannot open the SMTP listeners");
		return 1;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if ((M.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
		log_warning("master", "fatal: signalfd: %s", strerror(errno));
		return 1;
	}
	fd_received(M.sigfd, FD_FILE);
	/* one group commit for the daemon and the helpers: they sync the same file systems */
	if (sync_share_processes() < 0)
		log_warning("master", "shared group commit unavailable: %s", strerror(errno));
	if (start_all() < 0) {
		signal_children(SIGTERM);
		return 75;
	}
	log_info("master", "master started: smtpd pid %ld as %s%s%s", (long)M.smtpd.pid,
	    conf_str(c, "mail_owner", 0), M.helper[HELPER_VIRTUAL].needed ? ", virtual helper" : "",
	    M.helper[HELPER_LOCAL].needed ? ", local helper" : "");

	for (;;) {
		struct pollfd pf[2];
		struct signalfd_siginfo si;
		int n = 0, alive;

		alive = M.smtpd.pid > 0;
		for (i = 0; i < HELPER_COUNT; i++)
			alive |= M.helper[i].pid > 0;
		if (M.stopping && !alive)
			break;
		pf[n].fd = M.sigfd;
		pf[n++].events = POLLIN;
		if (M.control >= 0) {
			pf[n].fd = M.control;
			pf[n++].events = POLLIN;
		}
		if (poll(pf, (nfds_t)n, next_timeout()) < 0 && errno != EINTR)
			break;
		while (read(M.sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
			switch (si.ssi_signo) {
			case SIGCHLD: {
				pid_t pid;
				int status;

				while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
					reaped(pid, status);
				/* the daemon is gone for good: the helpers have nobody to serve */
				if (M.stopping && M.smtpd.pid == 0)
					for (i = 0; i < HELPER_COUNT; i++)
						if (M.helper[i].pid > 0)
							kill(M.helper[i].pid, SIGTERM);
				break;
			}
			case SIGHUP:
				log_info("master", "reload requested");
				reload();
				break;
			case SIGUSR1:
				if (M.smtpd.pid > 0)
					kill(M.smtpd.pid, SIGUSR1);
				break;
			case SIGTERM:
			case SIGINT:
				if (!M.stopping) {
					log_info("master", "terminating on signal %d", (int)si.ssi_signo);
					M.stopping = 1;
					M.smtpd.restart_at = 0;
					/*
					 * our copies of the listeners would keep accepting into
					 * the backlog a daemon that stops never reads: the
					 * stop closes the port here too (no restart needs them)
					 */
					for (i = 0; i < M.nlisten; i++)
						fd_close(M.listen_fds[i]);
					M.nlisten = 0;
					if (M.smtpd.pid > 0)
						kill(M.smtpd.pid, SIGTERM);
					else
						signal_children(SIGTERM);
					/* the daemon's own bound (smtpd_shutdown_timeout), then its drain */
					M.stop_deadline = time(NULL) + STOP_GRACE
					    + (time_t)conf_time(M.c, "smtpd_shutdown_timeout", 0);
				}
				break;
			}
		}
		if (M.control >= 0 && n > 1 && (pf[1].revents & POLLIN)) {
			char buf[64];
			ssize_t r = recv(M.control, buf, sizeof buf - 1, MSG_DONTWAIT);

			if (r > 0) {
				buf[r] = '\0';
				if (strcmp(buf, "ready") == 0) {
					M.ready = 1;
					daemon_detach_done(0);   /* `frugal serve` returns now, with the pid file written */
				}
			}
		}
		if (!M.stopping)
			restarts();
		else if (M.stop_deadline && time(NULL) > M.stop_deadline) {
			log_warning("master", "still running %d s after the stop: killed", STOP_GRACE);
			signal_children(SIGKILL);
			M.stop_deadline = 0;
		}
	}
	log_info("master", "master stopped");
	daemon_detach_done(M.exit_code ? M.exit_code : 1);   /* stopped before it served (no-op once ready) */
	fd_close(pidfd);
	return M.exit_code;
}
