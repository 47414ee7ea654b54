/*
 * queue/maildir.c: the local delivery agent. Writes one queued message into
 * a Maildir (or appends it to an mbox file) with Return-Path: and
 * Delivered-To: prepended, and reads the header facts that mail-loop
 * detection needs. Runs on worker threads: touches nothing the loop owns,
 * keeps no state but an atomic counter. Must never report success before
 * the file is synced and renamed into new/ and new/ itself is synced, and
 * never write as another user without dropping to that user first.
 */
#include "queue/queue_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fd.h"
#include "core/file.h"
#include "core/mem.h"
#include "core/sync.h"

#define HEADER_MAX (1024 * 1024)   /* header block kept for loop checks and bounces */
#define COPY_BUF   (64 * 1024)

static unsigned int delivery_counter;   /* Maildir's Q<n>: unique within this process */

/* ---- header facts ----------------------------------------------------------- */

void maildir_headers_free(struct msg_headers *h)
{
	int i;

	for (i = 0; i < h->ndelivered_to; i++)
		mem_free(h->delivered_to[i]);
	mem_free(h->delivered_to);
	mem_free(h->header_text);
	memset(h, 0, sizeof *h);
}

static int note_header(struct msg_headers *h, const char *line, size_t len)
{
	char *v, **nv;
	size_t i, s, e;

	if (len >= 9 && strncasecmp(line, "Received:", 9) == 0) {
		h->received++;
		return 0;
	}
	if (len < 13 || strncasecmp(line, "Delivered-To:", 13) != 0)
		return 0;
	for (s = 13; s < len && isspace((unsigned char)line[s]); s++)
		;
	for (e = len; e > s && isspace((unsigned char)line[e - 1]); e--)
		;
	if ((v = mem_strndup(line + s, e - s)) == NULL)
		return -1;
	for (i = 0; v[i]; i++)
		v[i] = (char)tolower((unsigned char)v[i]);
	if ((nv = mem_realloc(h->delivered_to, (size_t)(h->ndelivered_to + 1) * sizeof *nv)) == NULL) {
		mem_free(v);
		return -1;
	}
	h->delivered_to = nv;
	h->delivered_to[h->ndelivered_to++] = v;
	return 0;
}

int maildir_scan_headers(const struct msg_src *m, struct msg_headers *h)
{
	size_t cap = m->size < HEADER_MAX ? (size_t)m->size : HEADER_MAX;
	char *buf, *p, *end, *line, *nl;
	size_t len = 0;
	ssize_t r;

	memset(h, 0, sizeof *h);
	if ((buf = mem_alloc(cap + 1)) == NULL)
		return -1;
	while (len < cap) {
		if ((r = pread(m->fd, buf + len, cap - len, m->off + (off_t)len)) < 0) {
			if (errno == EINTR)
				continue;
			mem_free(buf);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (memmem(buf, len, "\n\n", 2) || (len >= 1 && buf[0] == '\n'))
			break;
	}
	buf[len] = '\0';
	/* the header ends at the first empty line */
	end = buf[0] == '\n' ? buf : memmem(buf, len, "\n\n", 2);
	end = end ? (end == buf ? buf : end + 1) : buf + len;
	h->header_text = buf;
	h->header_len = (size_t)(end - buf);
	/* one logical header per line; continuation lines belong to the previous */
	for (p = buf, line = NULL; p < end; p = nl + 1) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			nl = end;
		if (*p != ' ' && *p != '\t') {
			if (line && note_header(h, line, (size_t)(p - line)) < 0)
				goto nomem;
			line = p;
		}
	}
	if (line && note_header(h, line, (size_t)(end - line)) < 0)
		goto nomem;
	return 0;
nomem:
	maildir_headers_free(h);
	errno = ENOMEM;
	return -1;
}

int maildir_loop_check(const struct msg_headers *h, const char *rcpt, long hopcount_limit,
    char *reason, size_t rlen)
{
	int i;

	for (i = 0; i < h->ndelivered_to; i++)
		if (strcasecmp(h->delivered_to[i], rcpt) == 0) {
			snprintf(reason, rlen, "mail forwarding loop for %s", rcpt);
			return 1;
		}
	if (hopcount_limit > 0 && h->received > hopcount_limit) {
		snprintf(reason, rlen, "mail forwarding loop for %s (too many hops: %d Received: headers)",
		    rcpt, h->received);
		return 1;
	}
	return 0;
}

/* ---- writing ---------------------------------------------------------------- */


/* Return-Path and Delivered-To first (RFC 5321 4.4; Postfix local(8)) */
static int write_prefix(int fd, const struct msg_src *m, const struct target *t)
{
	char hdr[2048];
	int n = snprintf(hdr, sizeof hdr, "Return-Path: <%s>\nDelivered-To: %s\n", m->sender, t->addr);

	if (n < 0 || (size_t)n >= sizeof hdr)
		return errno = EINVAL, -1;
	return queue_write_all(fd, hdr, (size_t)n);
}

/*
 * Copy the message. mbox quoting turns "From " at a line start into
 * ">From " (mboxrd readers undo one level); a match is tracked across
 * buffer boundaries, `k` being how much of "From " the current line start
 * has matched so far.
 */
static int copy_message(int fd, const struct msg_src *m, int mbox_quote)
{
	static const char from_[] = "From ";
	char *buf, out[COPY_BUF + 16];
	off_t done = 0;
	ssize_t r;
	int bol = 1, k = 0, rc = -1;
	size_t i, o;

	if ((buf = mem_alloc(COPY_BUF)) == NULL)
		return -1;
	while (done < m->size) {
		size_t want = (size_t)(m->size - done) < COPY_BUF ? (size_t)(m->size - done) : COPY_BUF;
		if ((r = pread(m->fd, buf, want, m->off + done)) < 0) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		if (r == 0) {
			errno = EIO;   /* the queue file shrank under us */
			goto out;
		}
		done += r;
		if (!mbox_quote) {
			if (queue_write_all(fd, buf, (size_t)r) < 0)
				goto out;
			continue;
		}
		for (i = 0, o = 0; i < (size_t)r; i++) {
			char c = buf[i];
			if (bol) {
				if (c == from_[k]) {
					if (++k == 5) {
						memcpy(out + o, ">From ", 6);
						o += 6;
						bol = 0;
						k = 0;
					}
				} else {
					memcpy(out + o, from_, (size_t)k);
					o += (size_t)k;
					k = 0;
					out[o++] = c;
					bol = c == '\n';
				}
			} else {
				out[o++] = c;
				bol = c == '\n';
			}
			if (o >= COPY_BUF) {
				if (queue_write_all(fd, out, o) < 0)
					goto out;
				o = 0;
			}
		}
		if (o && queue_write_all(fd, out, o) < 0)
			goto out;
	}
	if (k && queue_write_all(fd, from_, (size_t)k) < 0)
		goto out;
	rc = 0;
out:
	mem_free(buf);
	return rc;
}

/*
 * In the daemon's worker threads, syncs are shared with every delivery and
 * commit in flight (core/sync.h); a delivery child forked to run as a
 * system user must not touch the parent's mutexes and syncs alone.
 */
static int in_child;

static int dsync(int fd)
{
	return in_child ? fsync(fd) : sync_shared(fd);
}

static int fsync_dir(const char *path)
{
	int fd = fd_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;

	if (fd < 0)
		return -1;
	rc = dsync(fd);
	if (rc < 0) {
		int e = errno;
		fd_close(fd);
		errno = e;
		return -1;
	}
	return fd_close(fd);
}

/* Maildir (cr.yp.to/proto/maildir.html): tmp/ unique name, sync, rename into new/. */
static int deliver_maildir(const struct msg_src *m, const struct target *t, char *reason, size_t rlen)
{
	char dir[4096], tmpname[4608], newname[4608], host[256], uniq[512];
	struct timeval tv;
	const char *step;
	size_t i, n;
	int fd = -1, e;
	static const char *const sub[] = { "tmp", "new", "cur" };

	n = strlen(t->path);
	if (n == 0 || n >= sizeof dir - 8)
		return snprintf(reason, rlen, "bad maildir path"), -1;
	memcpy(dir, t->path, n + 1);
	while (n > 1 && dir[n - 1] == '/')
		dir[--n] = '\0';
	step = "create maildir";
	if (file_mkdir_p(dir, 0700) < 0)
		goto fail_path;
	for (i = 0; i < 3; i++) {
		snprintf(tmpname, sizeof tmpname, "%s/%s", dir, sub[i]);
		if (mkdir(tmpname, 0700) < 0 && errno != EEXIST) {
			snprintf(reason, rlen, "create maildir file %s: %s", tmpname, strerror(errno));
			return -1;
		}
	}
	if (gethostname(host, sizeof host) < 0)
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	/* the spec: "/" and ":" in the host name are written as \057 and \072 */
	for (i = 0, n = 0; host[i] && n < sizeof uniq - 8; i++) {
		if (host[i] == '/' || host[i] == ':') {
			n += (size_t)snprintf(uniq + n, sizeof uniq - n, "\\%03o", (unsigned char)host[i]);
		} else {
			uniq[n++] = host[i];
		}
	}
	uniq[n] = '\0';
	gettimeofday(&tv, NULL);
	snprintf(host, sizeof host, "%lld.M%ldP%ldQ%u.%.180s", (long long)tv.tv_sec, (long)tv.tv_usec,
	    (long)getpid(), __atomic_add_fetch(&delivery_counter, 1, __ATOMIC_RELAXED), uniq);
	snprintf(tmpname, sizeof tmpname, "%s/tmp/%s", dir, host);
	snprintf(newname, sizeof newname, "%s/new/%s", dir, host);
	step = "create maildir file";
	if ((fd = fd_open(tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		goto fail_file;
	step = "write maildir file";
	if (write_prefix(fd, m, t) < 0 || copy_message(fd, m, 0) < 0)
		goto fail_file;
	step = "sync maildir file";
	if (dsync(fd) < 0)
		goto fail_file;
	if (fd_close(fd) < 0) {
		fd = -1;
		goto fail_file;
	}
	fd = -1;
	step = "rename maildir file";
	if (rename(tmpname, newname) < 0)
		goto fail_file;
	snprintf(tmpname, sizeof tmpname, "%s/new", dir);
	step = "sync maildir directory";
	if (fsync_dir(tmpname) < 0) {
		/* delivered but not known durable: take it back, the retry delivers again */
		e = errno;
		unlink(newname);
		snprintf(reason, rlen, "%s %s: %s", step, tmpname, strerror(e));
		return -1;
	}
	return 0;
fail_file:
	e = errno;
	if (fd >= 0)
		fd_close(fd);
	unlink(tmpname);
	snprintf(reason, rlen, "%s %s: %s", step, tmpname, strerror(e));
	return -1;
fail_path:
	snprintf(reason, rlen, "%s %s: %s", step, dir, strerror(errno));
	return -1;
}

static int deliver_mbox(const struct msg_src *m, const struct target *t, char *reason, size_t rlen)
{
	char line[1200];
	struct stat st;
	time_t now = time(NULL);
	struct tm tm;
	int fd, n, e;
	const char *step = "open mailbox";

	if ((fd = fd_open(t->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
		goto fail;
	step = "lock mailbox";
	if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0)
		goto fail;
	gmtime_r(&now, &tm);
	n = snprintf(line, sizeof line, "From %s ", *m->sender ? m->sender : "MAILER-DAEMON");
	if (n < 0 || (size_t)n >= sizeof line - 32)
		n = snprintf(line, sizeof line, "From MAILER-DAEMON ");
	strftime(line + n, sizeof line - (size_t)n, "%a %b %e %H:%M:%S %Y\n", &tm);
	step = "write mailbox";
	if (queue_write_all(fd, line, strlen(line)) < 0 || write_prefix(fd, m, t) < 0 ||
	    copy_message(fd, m, 1) < 0 || queue_write_all(fd, "\n", 1) < 0)
		goto undo;
	step = "sync mailbox";
	if (dsync(fd) < 0)
		goto undo;
	fd_close(fd);
	return 0;
undo:
	e = errno;
	/* a half-written message would corrupt the mailbox for every reader */
	if (ftruncate(fd, st.st_size) == 0)
		(void)fsync(fd);
	errno = e;
fail:
	e = errno;
	if (fd >= 0)
		fd_close(fd);
	snprintf(reason, rlen, "%s %s: %s", step, t->path, strerror(e));
	return -1;
}

static int deliver_here(const struct msg_src *m, const struct target *t, char *reason, size_t rlen)
{
	if (t->kind == TGT_MBOX)
		return deliver_mbox(m, t, reason, rlen);
	return deliver_maildir(m, t, reason, rlen);
}

/*
 * A system user's mailbox is written by a child that has become the user
 * (PRODUCT.md 3.5). Only async-signal-safe work would be strictly allowed
 * after fork() in a threaded process; the group list is computed before,
 * the child uses no stdio, and glibc's fork handlers leave malloc usable.
 * The child's errno comes back as its exit status (no pipe: no descriptors).
 */
static int deliver_as_user(const struct msg_src *m, const struct target *t, char *reason, size_t rlen)
{
	gid_t groups[64];
	int ngroups = 64, status;
	pid_t pid;
	char creason[256];

	if (getgrouplist(t->user, t->gid, groups, &ngroups) < 0)
		ngroups = 1, groups[0] = t->gid;
	if ((pid = fork()) < 0) {
		snprintf(reason, rlen, "cannot fork local delivery for %s: %s", t->user, strerror(errno));
		return -1;
	}
	if (pid == 0) {
		in_child = 1;
		/* the daemon runs as mail_owner with saved set-user-ID 0 (smtpd/server.c) */
		if ((geteuid() != 0 && setresuid(0, 0, 0) < 0) ||
		    setgroups((size_t)ngroups, groups) < 0 || setgid(t->gid) < 0 || setuid(t->uid) < 0)
			_exit(200);
		_exit(deliver_here(m, t, creason, sizeof creason) == 0 ? 0 : errno ? (errno & 0x7f) + 1 : 1);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			snprintf(reason, rlen, "wait for local delivery to %s: %s", t->user, strerror(errno));
			return -1;
		}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 200)
		snprintf(reason, rlen, "cannot become user %s (uid %ld)", t->user, (long)t->uid);
	else if (WIFEXITED(status))
		snprintf(reason, rlen, "delivery to %s as user %s failed: %s", t->path, t->user,
		    strerror(WEXITSTATUS(status) - 1));
	else
		snprintf(reason, rlen, "local delivery to %s as %s was killed", t->path, t->user);
	return -1;
}

int maildir_deliver(const struct msg_src *m, const struct target *t, char *reason, size_t rlen)
{
	uid_t ruid, euid, suid;

	if (getresuid(&ruid, &euid, &suid) < 0)
		euid = suid = geteuid();
	if (t->as_user && t->uid != euid) {
		if (euid != 0 && suid != 0) {
			snprintf(reason, rlen, "cannot deliver to %s as user %s (uid %ld): frugal is not "
			    "running as root (set local_mailbox_base to deliver without system accounts)",
			    t->path, t->user ? t->user : "?", (long)t->uid);
			return -1;
		}
		return deliver_as_user(m, t, reason, rlen);
	}
	return deliver_here(m, t, reason, rlen);
}
