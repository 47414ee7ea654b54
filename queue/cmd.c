/*
 * queue/cmd.c: `frugal queue [-c DIR] list|show ID|delete ID|hold ID|release ID|flush [DOMAIN]` and
 * `mailq`. Reads the spool directly (works with or without the daemon, no
 * IPC); the daemon's pickup prints the same listing (queue_list_write) for
 * users who may not read the queue (queue/sendmail.c asks it); flush signals the daemon (SIGUSR1 to the pid in
 * $queue_directory/pid/frugal.pid). A short-lived tool: may exit on
 * allocation failure (75). Must never write into a committed message or
 * touch incoming/ (those files belong to live SMTP sessions).
 */
#include "queue/queue_int.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/daemon.h"
#include "core/mem.h"

#define EX_USAGE_ERR 1
#define EX_TEMPFAIL  75

struct idlist {
	char **v;
	int n, cap;
	int limit, more;   /* limit > 0: keep that many IDs, count the rest in more */
};

static void collect(void *arg, const char *id)
{
	struct idlist *l = arg;

	if (l->limit > 0 && l->n >= l->limit) {
		l->more++;
		return;
	}
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = xrealloc(l->v, (size_t)l->cap * sizeof *l->v);
	}
	l->v[l->n++] = xstrdup(id);
}

static void idlist_free(struct idlist *l)
{
	int i;

	for (i = 0; i < l->n; i++)
		mem_free(l->v[i]);
	mem_free(l->v);
}

/* the held messages' IDs (hold/), sorted like the scan's */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void collect_held(const char *qdir, struct idlist *l)
{
	char path[4096];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof path, "%s/%s", qdir, SPOOL_HOLD);
	if ((d = opendir(path)) == NULL)
		return;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			collect(l, de->d_name);
	closedir(d);
	if (l->n > 1)
		qsort(l->v, (size_t)l->n, sizeof *l->v, cmp_str);
}

/*
 * Postfix's mailq layout, so scripts that parse it keep working: a '!'
 * after the queue ID marks a held message (Postfix's mark; its '*' for the
 * active queue is not shown: the scheduler's memory is not visible here).
 */
int queue_list_write(FILE *out, const char *qdir, int max)
{
	struct idlist l = { 0 }, held = { 0 };
	struct spool_env e;
	long long total = 0;
	int i, k, shown = 0, nheld;
	char when[32], idm[QUEUE_ID_MAX + 2];
	struct tm tm;

	/* max > 0 (the daemon's snapshot): memory and envelope reads bounded on its loop */
	l.limit = held.limit = max;
	if (spool_scan(qdir, 0, collect, &l) < 0 && errno != ENOENT) {
		idlist_free(&l);
		return -1;
	}
	collect_held(qdir, &held);
	nheld = held.n;
	l.limit = 0;
	for (i = 0; i < held.n; i++)   /* held first would reorder; append them after the rest */
		collect(&l, held.v[i]);
	for (i = 0; i < l.n; i++) {
		int is_held = i >= l.n - nheld;

		if ((is_held ? spool_env_load_held(qdir, l.v[i], &e) : spool_env_load(qdir, l.v[i], &e, NULL)) < 0)
			continue;   /* delivered and removed while we looked */
		if (shown++ == 0)
			fprintf(out, "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
		localtime_r(&e.arrival, &tm);
		strftime(when, sizeof when, "%a %b %e %H:%M:%S", &tm);
		snprintf(idm, sizeof idm, "%s%s", e.id, is_held ? "!" : "");
		fprintf(out, "%-11s %8lld %20.20s  %s\n", idm, (long long)e.size, when,
		    *e.sender ? e.sender : "MAILER-DAEMON");
		for (k = 0; k < e.nrcpt; k++)
			if (e.rcpt[k].status == RCPT_TODO)
				fprintf(out, "%43s%s\n", "", e.rcpt[k].addr);
		fprintf(out, "\n");
		total += e.size;
		spool_env_free(&e);
	}
	if (l.more + held.more > 0)
		fprintf(out, "-- %d more messages not listed (this listing stops at %d queued and %d held)\n",
		    l.more + held.more, max, max);
	idlist_free(&l);
	idlist_free(&held);
	if (shown == 0)
		fprintf(out, "Mail queue is empty\n");
	else
		fprintf(out, "-- %lld Kbytes in %d Request%s.\n", (total + 1023) / 1024, shown,
		    shown == 1 ? "" : "s");
	return 0;
}

static int cmd_list(const char *qdir)
{
	if (queue_list_write(stdout, qdir, 0) < 0) {
		fprintf(stderr, "frugal queue: cannot read %s/%s: %s\n", qdir, SPOOL_COMMITTED,
		    strerror(errno));
		return EX_TEMPFAIL;
	}
	return 0;
}

static int cmd_show(const char *qdir, const char *id)
{
	struct spool_env e;
	char buf[65536], when[64];
	struct tm tm;
	off_t off;
	struct msg_src m;
	ssize_t r;
	int fd, k;
	static const char *const state[] = { "to do", "delivered", "bounced" };

	if (spool_env_load(qdir, id, &e, NULL) < 0) {
		fprintf(stderr, "frugal queue: %s: %s\n", id,
		    errno == ENOENT || errno == EINVAL ? "no such message in the queue" : strerror(errno));
		return EX_USAGE_ERR;
	}
	localtime_r(&e.arrival, &tm);
	strftime(when, sizeof when, "%a, %d %b %Y %H:%M:%S %z", &tm);
	printf("queue_id: %s\narrival: %s\nsize: %lld\nsender: <%s>\nclient: %s\n", e.id, when,
	    (long long)e.size, e.sender, e.client);
	/* RFC 3461 (only what was given), and whether the one delay warning went out */
	if (e.dsn_ret)
		printf("dsn_ret: %s\n", e.dsn_ret == DSN_RET_HDRS ? "HDRS" : "FULL");
	if (e.envid)
		printf("dsn_envid: %s\n", e.envid);
	if (e.warned == WARN_SENT)
		printf("delay_warning: sent\n");
	for (k = 0; k < e.nrcpt; k++) {
		char notify[64] = "";

		if (e.rcpt[k].notify)
			snprintf(notify, sizeof notify, " notify=%s%s%s%s",
			    e.rcpt[k].notify & DSN_NOTIFY_NEVER ? "NEVER," : "",
			    e.rcpt[k].notify & DSN_NOTIFY_SUCCESS ? "SUCCESS," : "",
			    e.rcpt[k].notify & DSN_NOTIFY_FAILURE ? "FAILURE," : "",
			    e.rcpt[k].notify & DSN_NOTIFY_DELAY ? "DELAY," : "");
		if (notify[0])
			notify[strlen(notify) - 1] = '\0';   /* the last comma */
		printf("recipient: <%s> orig_to=<%s>%s%s%s (%s)\n", e.rcpt[k].addr, e.rcpt[k].orig,
		    notify, e.rcpt[k].orcpt ? " orcpt=" : "", e.rcpt[k].orcpt ? e.rcpt[k].orcpt : "",
		    state[e.rcpt[k].status == RCPT_DELIVERED ? 1 : e.rcpt[k].status == RCPT_BOUNCED ? 2 : 0]);
	}
	printf("*** MESSAGE CONTENTS %s ***\n", e.id);
	fflush(stdout);
	snprintf(buf, sizeof buf, "%s/%s/%s", qdir, SPOOL_COMMITTED, e.id);
	if ((fd = open(buf, O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "frugal queue: %s: %s\n", e.id, strerror(errno));
		spool_env_free(&e);
		return EX_USAGE_ERR;
	}
	/* as every agent reads it: the late headers (DKIM-Signature) first */
	msg_src_from_env(&m, fd, &e);
	for (off = 0; (r = msg_src_pread(&m, buf, sizeof buf, off)) > 0; off += r)
		fwrite(buf, 1, (size_t)r, stdout);
	close(fd);
	spool_env_free(&e);
	return 0;
}

static int cmd_delete(const char *qdir, const char *id)
{
	if (spool_remove(qdir, id) < 0) {
		fprintf(stderr, "frugal queue: %s: %s\n", id,
		    errno == ENOENT || errno == EINVAL ? "no such message in the queue" : strerror(errno));
		return EX_USAGE_ERR;
	}
	printf("%s: removed\n", id);
	return 0;
}

/* Tell a running daemon (the flush file and SIGUSR1); 1 when none runs. */
static int tell_daemon(const char *qdir, const char *line)
{
	char path[4096], req[4096];
	long pid;
	int fd;

	snprintf(path, sizeof path, "%s/%s/frugal.pid", qdir, SPOOL_PID);
	if ((pid = daemon_pidfile_read(path)) < 0)
		return 1;
	snprintf(req, sizeof req, "%s/%s/flush", qdir, SPOOL_STATUS);
	if ((fd = open(req, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644)) < 0 ||
	    dprintf(fd, "%s\n", line) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return kill((pid_t)pid, SIGUSR1) < 0 ? -1 : 0;
}

/*
 * hold: committed/ -> hold/ (the scheduler forgets it at its next look:
 * the file is gone; a delivery in flight finishes first, as in Postfix).
 * release: back, and a running daemon rescans committed/ (no flush).
 */
static int cmd_hold(const char *qdir, const char *id, int hold)
{
	int r;

	if (spool_hold(qdir, id, hold) < 0) {
		fprintf(stderr, "frugal queue: %s: %s\n", id, errno == ENOENT || errno == EINVAL ?
		    (hold ? "no such message in the queue (or held already)" : "no such held message") :
		    strerror(errno));
		return EX_USAGE_ERR;
	}
	if (hold) {
		printf("%s: placed on hold\n", id);
		return 0;
	}
	r = tell_daemon(qdir, "+rescan");
	printf("%s: released from hold%s\n", id, r == 1 ? " (delivered when the mail system starts)" :
	    r < 0 ? " (the mail system takes it at its next queue run)" : "");
	return 0;
}

/*
 * The request goes through a file the daemon reads on SIGUSR1
 * ($queue_directory/status/flush: one line per request, "*" for
 * everything); a plain SIGUSR1 with no file flushes everything.
 */
static int cmd_flush(const char *qdir, const char *domain)
{
	char path[4096], req[4096];
	long pid;
	int fd;

	if (domain && !queue_flush_domain_valid(domain)) {
		fprintf(stderr, "frugal queue: flush: \"%s\" is not a domain name\n", domain);
		return EX_USAGE_ERR;
	}
	snprintf(path, sizeof path, "%s/%s/frugal.pid", qdir, SPOOL_PID);
	/* only a pid file whose lock is held names our daemon (core/daemon.h) */
	if ((pid = daemon_pidfile_read(path)) < 0) {
		fprintf(stderr, "frugal queue: the mail system is not running (no live pid in %s): "
		    "mail stays queued until it starts\n", path);
		return EX_TEMPFAIL;
	}
	snprintf(req, sizeof req, "%s/%s/flush", qdir, SPOOL_STATUS);
	if ((fd = open(req, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644)) < 0 ||
	    dprintf(fd, "%s\n", domain ? domain : "*") < 0) {
		fprintf(stderr, "frugal queue: cannot write the flush request %s: %s\n", req, strerror(errno));
		if (fd >= 0)
			close(fd);
		return EX_TEMPFAIL;
	}
	close(fd);
	if (kill((pid_t)pid, SIGUSR1) < 0) {
		fprintf(stderr, "frugal queue: cannot signal the mail system (pid %ld): %s\n", pid,
		    strerror(errno));
		return EX_TEMPFAIL;
	}
	if (domain)
		printf("frugal queue: flush requested: the mail system (pid %ld) retries deferred mail for %s now\n",
		    pid, domain);
	else
		printf("frugal queue: flush requested: the mail system (pid %ld) retries deferred mail now\n", pid);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: frugal queue [-c DIR] [list | show ID | delete ID | hold ID | release ID | flush [DOMAIN]]\n");
	return EX_USAGE_ERR;
}

int queue_cmd(int argc, char **argv)
{
	const char *dir = NULL, *sub = "list", *id = NULL, *qdir;
	struct conf_diags d = { 0 };
	struct conf *c;
	int i, rc, nargs = 0;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0) {
			if (++i >= argc)
				return usage();
			dir = argv[i];
		} else if (argv[i][0] == '-') {
			return usage();
		} else if (nargs == 0) {
			sub = argv[i];
			nargs++;
		} else if (nargs == 1) {
			id = argv[i];
			nargs++;
		} else {
			return usage();
		}
	}
	if ((c = conf_load_for_command(dir, &d)) == NULL) {
		for (i = 0; i < d.n; i++)
			fprintf(stderr, "%s\n", d.v[i].text);
		conf_diags_free(&d);
		return EX_USAGE_ERR;
	}
	conf_diags_free(&d);
	qdir = conf_str(c, "queue_directory", 0);
	if (qdir == NULL || *qdir == '\0') {
		fprintf(stderr, "frugal queue: queue_directory is not set\n");
		conf_unref(c);
		return EX_USAGE_ERR;
	}
	if (strcmp(sub, "list") == 0 && id == NULL)
		rc = cmd_list(qdir);
	else if (strcmp(sub, "show") == 0 && id)
		rc = cmd_show(qdir, id);
	else if (strcmp(sub, "delete") == 0 && id)
		rc = cmd_delete(qdir, id);
	else if (strcmp(sub, "flush") == 0)
		rc = cmd_flush(qdir, id);
	else if (strcmp(sub, "hold") == 0 && id)
		rc = cmd_hold(qdir, id, 1);
	else if (strcmp(sub, "release") == 0 && id)
		rc = cmd_hold(qdir, id, 0);
	else
		rc = usage();
	conf_unref(c);
	return rc;
}

/* entries of one queue subdirectory, dot files aside (a writer's temporaries) */
static long long count_dir(const char *qdir, const char *sub)
{
	char path[4096];
	struct dirent *de;
	long long n = 0;
	DIR *d;

	snprintf(path, sizeof path, "%s/%s", qdir, sub);
	if ((d = opendir(path)) == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

void queue_count(const char *queue_dir, struct queue_counts *n)
{
	n->committed = count_dir(queue_dir, SPOOL_COMMITTED);
	n->hold = count_dir(queue_dir, SPOOL_HOLD);
	n->maildrop = count_dir(queue_dir, SPOOL_MAILDROP);
	n->corrupt = count_dir(queue_dir, SPOOL_CORRUPT);
	n->incoming = count_dir(queue_dir, SPOOL_INCOMING);
}
