/*
 * queue/maildir.c: the local delivery agent. Writes one queued message into
 * a Maildir (or appends it to an mbox file) with Return-Path: and
 * Delivered-To: prepended, and reads the header facts that mail-loop
 * detection needs. Runs on worker threads (the daemon's, or a delivery
 * helper's): touches nothing the loop owns, keeps no state but an atomic
 * counter. Must never report success before the file is synced and renamed
 * into new/ and new/ itself is synced, never follow a symbolic link below a
 * mailbox's base, and never write into a directory its owner does not own.
 * It writes as whoever calls it: changing identity is the helpers' job.
 */
#include "queue/queue_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

#include "core/daemon.h"
#include "core/fd.h"
#include "core/file.h"
#include "core/mem.h"
#include "core/sync.h"

#define HEADER_MAX (1024 * 1024)   /* header block kept for loop checks and bounces */
#define COPY_BUF   (64 * 1024)
#define MBOX_LOCK_TRIES    10        /* a locked mbox: tries... */
#define MBOX_LOCK_DELAY_US 100000    /* ...this far apart, then the delivery is deferred */

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
	size_t cap = msg_src_len(m) < HEADER_MAX ? (size_t)msg_src_len(m) : HEADER_MAX;
	char *buf, *p, *end, *line, *nl;
	size_t len = 0;
	ssize_t r;

	memset(h, 0, sizeof *h);
	if ((buf = mem_alloc(cap + 1)) == NULL)
		return -1;
	while (len < cap) {
		if ((r = msg_src_pread(m, buf + len, cap - len, (off_t)len)) < 0) {
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
static int write_prefix(int fd, const struct msg_src *m, const char *rcpt)
{
	char hdr[2048];
	int n = snprintf(hdr, sizeof hdr, "Return-Path: <%s>\nDelivered-To: %s\n", m->sender, rcpt);

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
	while (done < msg_src_len(m)) {
		size_t want = (size_t)(msg_src_len(m) - done) < COPY_BUF ? (size_t)(msg_src_len(m) - done) : COPY_BUF;
		if ((r = msg_src_pread(m, buf, want, done)) < 0)
			goto out;
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
 * The confined walk. Every component of a mailbox path below its base is
 * opened with O_NOFOLLOW from its parent's descriptor, so no symbolic link
 * is ever followed there (a link planted in a Maildir cannot send a write
 * elsewhere), created 0700 when missing, and must belong to the mailbox's
 * owner (a foreign directory is refused, not written into). Descriptors go
 * through core/fd: the delivery's budget covers them.
 */
static int open_component(int parent, const char *name, uid_t owner, int create, int *made,
    dev_t *dev, char *reason, size_t rlen)
{
	struct stat st;
	int fd;

	fd = fd_openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		if (mkdirat(parent, name, 0700) < 0 && errno != EEXIST) {
			snprintf(reason, rlen, "create directory %s: %s", name, strerror(errno));
			return -1;
		}
		if (made)
			*made = 1;
		fd = fd_openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0) {
		if (errno == ELOOP || errno == ENOTDIR)
			snprintf(reason, rlen, "mailbox path component %s is a symbolic link or not a directory: refused",
			    name);
		else
			snprintf(reason, rlen, "open directory %s: %s", name, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || st.st_uid != owner) {
		snprintf(reason, rlen, "mailbox directory %s belongs to uid %ld, not the mailbox owner %ld: refused",
		    name, (long)st.st_uid, (long)owner);
		fd_close(fd);
		return -1;
	}
	if (dev)
		*dev = st.st_dev;   /* for sync_shared_dev: the fstat is done */
	return fd;
}

/*
 * Walk REL (modified) under BASEFD: every component but the last when
 * `last` is set (it receives the file name), all of them otherwise. The
 * directory reached is returned (it may be basefd itself: not to close).
 */
static int walk(int basefd, char *rel, uid_t owner, char **last, char *reason, size_t rlen)
{
	char *p = rel, *comp;
	int cur = basefd;

	if (last)
		*last = NULL;
	for (;;) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		comp = p;
		while (*p && *p != '/')
			p++;
		if (*p)
			*p++ = '\0';
		if (strcmp(comp, ".") == 0 || strcmp(comp, "..") == 0) {
			snprintf(reason, rlen, "mailbox path with \"%s\": refused", comp);
			goto fail;
		}
		if (last) {
			const char *q = p;

			while (*q == '/')
				q++;
			if (*q == '\0') {   /* the file itself */
				*last = comp;
				return cur;
			}
		}
		{
			int next = open_component(cur, comp, owner, 1, NULL, NULL, reason, rlen);

			if (next < 0)
				goto fail;
			if (cur != basefd)
				fd_close(cur);
			cur = next;
		}
	}
	if (last) {
		snprintf(reason, rlen, "mailbox path names no file");
		goto fail;
	}
	return cur;
fail:
	if (cur != basefd)
		fd_close(cur);
	return -1;
}

/*
 * The host part of a Maildir file name, read once per process as Postfix
 * does (a system call per delivery otherwise). The spec: "/" and ":" in
 * the host name are written as \057 and \072.
 */
static char unique_host_buf[512];

static void unique_host_read(void)
{
	char host[256];
	size_t i, n;

	if (gethostname(host, sizeof host) < 0)
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	for (i = 0, n = 0; host[i] && n < sizeof unique_host_buf - 8; i++) {
		if (host[i] == '/' || host[i] == ':')
			n += (size_t)snprintf(unique_host_buf + n, sizeof unique_host_buf - n, "\\%03o",
			    (unsigned char)host[i]);
		else
			unique_host_buf[n++] = host[i];
	}
	unique_host_buf[n] = '\0';
}

static const char *unique_host(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, unique_host_read);
	return unique_host_buf;
}

/*
 * Maildir (cr.yp.to/proto/maildir.html): tmp/ unique name, sync, rename into
 * new/, sync new/. In two halves, so that a batch shares its syncs: stage()
 * writes the file into tmp/ (no sync), finish_batch() syncs every staged
 * file's file system once, renames them all into new/, and syncs new/'s once.
 * A batch of one is the same steps in the same order as a lone delivery.
 */
/* a staged file that will not be delivered: out of tmp/ */
static void unstage(struct maildir_req *r, const char *step, int err)
{
	if (r->p.fd >= 0) {
		fd_close(r->p.fd);
		r->p.fd = -1;
	}
	unlinkat(r->p.fds[0], r->p.name, 0);
	snprintf(r->reason, r->rlen, "%s %s: %s", step, r->p.name, strerror(err));
	r->rc = -1;
}

static int stage(struct maildir_req *r, int dirfd)
{
	static const char *const sub[] = { "tmp", "new", "cur" };
	int i, made = 0, curfd = -1;
	struct timeval tv;

	/*
	 * tmp/ and new/ are written, so each is opened and checked every time;
	 * cur/ is only made with them (a new Maildir), as Postfix's virtual does:
	 * nothing is written there, and three system calls per delivery were
	 * spent on it.
	 */
	for (i = 0; i < 2; i++)
		if ((r->p.fds[i] = open_component(dirfd, sub[i], r->owner, 1, &made, &r->p.dev[i], r->reason,
		    r->rlen)) < 0)
			return -1;
	if (made) {
		if ((curfd = open_component(dirfd, sub[2], r->owner, 1, NULL, NULL, r->reason, r->rlen)) < 0)
			return -1;
		fd_close(curfd);
	}
	gettimeofday(&tv, NULL);
	snprintf(r->p.name, sizeof r->p.name, "%lld.M%ldP%ldQ%u.%.180s", (long long)tv.tv_sec, (long)tv.tv_usec,
	    daemon_self(), __atomic_add_fetch(&delivery_counter, 1, __ATOMIC_RELAXED), unique_host());
	if ((r->p.fd = fd_openat(r->p.fds[0], r->p.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600)) < 0) {
		snprintf(r->reason, r->rlen, "create maildir file %s: %s", r->p.name, strerror(errno));
		return -1;
	}
	if (write_prefix(r->p.fd, r->m, r->rcpt) < 0 || copy_message(r->p.fd, r->m, 0) < 0) {
		unstage(r, "write maildir file", errno);   /* a torn write stays out of tmp/ */
		return -1;
	}
	return 0;
}

/*
 * One sync per file system for the staged requests (rc 1), each request's
 * result left in p.err (0 or an errno): which 0 syncs the files (written in
 * tmp/), 1 the new/ directories. A later request on a file system already
 * synced is covered by that sync and shares its result.
 */
static void sync_staged(struct maildir_req *r, int n, int which)
{
	int i, k, e;

	for (i = 0; i < n; i++)
		r[i].p.synced = 0;
	for (i = 0; i < n; i++) {
		if (r[i].rc != 1 || r[i].p.synced)
			continue;
		e = sync_shared_dev(which ? r[i].p.fds[1] : r[i].p.fd, r[i].p.dev[which]) < 0 ? errno : 0;
		for (k = i; k < n; k++)
			if (r[k].rc == 1 && !r[k].p.synced && r[k].p.dev[which] == r[i].p.dev[which]) {
				r[k].p.synced = 1;
				r[k].p.err = e;
			}
	}
}

static void finish_batch(struct maildir_req *r, int n)
{
	int i, e;

	sync_staged(r, n, 0);
	for (i = 0; i < n; i++) {
		if (r[i].rc != 1)
			continue;
		if (r[i].p.err) {
			unstage(&r[i], "sync maildir file", r[i].p.err);
			continue;
		}
		e = fd_close(r[i].p.fd);
		r[i].p.fd = -1;
		if (e < 0) {
			unstage(&r[i], "close maildir file", errno);
			continue;
		}
		if (renameat(r[i].p.fds[0], r[i].p.name, r[i].p.fds[1], r[i].p.name) < 0)
			unstage(&r[i], "rename maildir file", errno);
	}
	sync_staged(r, n, 1);
	for (i = 0; i < n; i++) {
		if (r[i].rc != 1)
			continue;
		if (r[i].p.err) {
			/* delivered but not known durable: take it back, the retry delivers again */
			unlinkat(r[i].p.fds[1], r[i].p.name, 0);
			snprintf(r[i].reason, r[i].rlen, "sync maildir directory new: %s", strerror(r[i].p.err));
			r[i].rc = -1;
		} else {
			r[i].rc = 0;
		}
	}
}

static int deliver_mbox(int dirfd, const char *file, uid_t owner, const struct msg_src *m,
    const char *rcpt, char *reason, size_t rlen)
{
	char line[1200];
	struct stat st;
	time_t now = time(NULL);
	struct tm tm;
	int fd, n, e;
	const char *step = "open mailbox";

	if ((fd = fd_openat(dirfd, file, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0)
		goto fail;
	step = "check mailbox";
	if (fstat(fd, &st) < 0)
		goto fail;
	/* a hard link planted in the mailbox's place would append to its target */
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != owner) {
		snprintf(reason, rlen, "mailbox %s is not a regular file of its owner with one link: refused", file);
		fd_close(fd);
		return -1;
	}
	step = "lock mailbox";
	/*
	 * Not a blocking flock: a reader that holds the lock (a mail client left
	 * open) would hold this thread, and with it a helper's whole batch, for as
	 * long as it likes. Postfix tries deliver_lock_attempts times and defers;
	 * so does this, within about a second: the retry delivers.
	 */
	for (n = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; n++) {
		if (errno != EWOULDBLOCK || n >= MBOX_LOCK_TRIES)
			goto fail;
		usleep(MBOX_LOCK_DELAY_US);
	}
	gmtime_r(&now, &tm);
	n = snprintf(line, sizeof line, "From %s ", *m->sender ? m->sender : "MAILER-DAEMON");
	if (n < 0 || (size_t)n >= sizeof line - 32)
		n = snprintf(line, sizeof line, "From MAILER-DAEMON ");
	strftime(line + n, sizeof line - (size_t)n, "%a %b %e %H:%M:%S %Y\n", &tm);
	step = "write mailbox";
	if (queue_write_all(fd, line, strlen(line)) < 0 || write_prefix(fd, m, rcpt) < 0 ||
	    copy_message(fd, m, 1) < 0 || queue_write_all(fd, "\n", 1) < 0)
		goto undo;
	step = "sync mailbox";
	if (sync_shared(fd) < 0)
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
	snprintf(reason, rlen, "%s %s: %s", step, file, strerror(e));
	return -1;
}

/* everything a request holds until the end of its batch: tmp/, new/ and its file */
static void req_close(struct maildir_req *r)
{
	int i;

	if (r->p.fd >= 0)
		fd_close(r->p.fd);
	for (i = 0; i < 2; i++)
		if (r->p.fds[i] >= 0)
			fd_close(r->p.fds[i]);
	r->p.fd = r->p.fds[0] = r->p.fds[1] = -1;
}

/* Walk to the mailbox; an mbox is delivered whole now, a Maildir file staged (rc 1). */
static void start_req(struct maildir_req *r)
{
	char path[4096], *file = NULL;
	size_t n = strlen(r->rel);
	int mbox = n > 0 && r->rel[n - 1] != '/';
	int basefd = r->base ? -1 : r->basefd, dirfd = -1;   /* basefd is ours only when opened here */

	r->rc = -1;
	r->p.fd = r->p.fds[0] = r->p.fds[1] = -1;
	r->p.synced = r->p.err = 0;
	if (n == 0 || n >= sizeof path) {
		snprintf(r->reason, r->rlen, "bad mailbox path");
		return;
	}
	if (r->base) {
		/* the base itself is the admin's (configuration, or a home directory): followed as named */
		if ((basefd = fd_open(r->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
			if (errno == ENOENT && file_mkdir_p(r->base, 0700) == 0)
				basefd = fd_open(r->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (basefd < 0) {
				snprintf(r->reason, r->rlen, "open mailbox base %s: %s", r->base, strerror(errno));
				return;
			}
		}
	}
	memcpy(path, r->rel, n + 1);
	if ((dirfd = walk(basefd, path, r->owner, mbox ? &file : NULL, r->reason, r->rlen)) >= 0) {
		if (mbox)
			r->rc = deliver_mbox(dirfd, file, r->owner, r->m, r->rcpt, r->reason, r->rlen);
		else if (stage(r, dirfd) == 0)
			r->rc = 1;   /* staged: finish_batch syncs and renames it */
	}
	/* a staged delivery needs only tmp/, new/ and its file until the end of the batch */
	if (dirfd >= 0 && dirfd != basefd)
		fd_close(dirfd);
	if (basefd >= 0 && r->base)
		fd_close(basefd);
}

void maildir_deliver_batch(struct maildir_req *r, int n)
{
	int i;

	for (i = 0; i < n; i++)
		start_req(&r[i]);
	finish_batch(r, n);
	for (i = 0; i < n; i++)
		req_close(&r[i]);
}

int maildir_deliver_at(int basefd, const char *rel, uid_t owner, const struct msg_src *m,
    const char *rcpt, char *reason, size_t rlen)
{
	struct maildir_req r = { .basefd = basefd, .rel = rel, .owner = owner, .m = m, .rcpt = rcpt,
	    .reason = reason, .rlen = rlen };

	maildir_deliver_batch(&r, 1);
	return r.rc;
}

int maildir_deliver_under(const char *base, const char *rel, uid_t owner, const struct msg_src *m,
    const char *rcpt, char *reason, size_t rlen)
{
	struct maildir_req r = { .base = base, .rel = rel, .owner = owner, .m = m, .rcpt = rcpt,
	    .reason = reason, .rlen = rlen };

	maildir_deliver_batch(&r, 1);
	return r.rc;
}
