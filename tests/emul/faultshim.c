/*
 * tests/emul/faultshim.c: system-call fault injection for tests (room:
 * tests/emul). LD_PRELOAD it into frugal and chosen calls fail with a chosen
 * errno, or write only part of what they were given, so a test can check
 * that each fault gets the documented reply and loses nothing acknowledged.
 * It must never change a call it does not fault (every other call goes to
 * the real function), never fault before it is armed (start-up stays
 * clean), and be safe from any thread: frugal's workers write, sync and
 * rename while the loop accepts (counters are atomics, nothing locks).
 *
 * Environment:
 *   FAULTSHIM      rules separated by ';', each FAMILY:WHAT[:OPTION]...
 *     FAMILY  accept (accept, accept4), socket, connect, open (open, open64,
 *             openat, openat64, creat), write (write, pwrite, pwrite64,
 *             writev), fsync (fsync, fdatasync), syncfs, rename (rename,
 *             renameat, renameat2), read (read, readv: the sockets the
 *             daemon and OpenSSL read, e.g. ECONNRESET mid-handshake)
 *     WHAT    an errno name (EMFILE, ENFILE, ENOMEM, ENOBUFS, ENOSPC, EIO,
 *             EDQUOT, EAGAIN, ECONNREFUSED, ENETUNREACH, ECONNRESET,
 *             EPIPE), or SHORT (write family only: half of what was asked,
 *             at least one byte, is written and that count returned)
 *     path=P  only calls on a file whose absolute path starts with P (for
 *             descriptors, the path /proc/self/fd names; for rename, either
 *             name); a rule with path= never matches socket/connect/accept
 *     stream  socket/connect/write/read: only TCP (AF_INET/AF_INET6
 *             SOCK_STREAM), so DNS over UDP and UNIX sockets go on working
 *             (and a write rule leaves files and the log alone)
 *     unix    socket/connect/write/read: only AF_UNIX stream sockets (an
 *             LMTP server, a Dovecot auth socket)
 *     after=N the first N matching calls after arming pass (default 0)
 *     count=M at most M faults from this rule (default: no limit)
 *   FAULTSHIM_ARM  a path: rules fire only while this file exists (the test
 *                  creates it once the daemon listens, removes it to disarm).
 *                  Unset: armed from the start.
 *   FAULTSHIM_LOG  a path: one line per injected fault, "PID FUNC WHAT PATH",
 *                  so a test can tell the fault happened (a test of a fault
 *                  that never fired proves nothing).
 * Example: FAULTSHIM="write:ENOSPC:path=/tmp/q/queue/incoming/" FAULTSHIM_ARM=/tmp/arm
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <unistd.h>

enum fam { F_ACCEPT, F_SOCKET, F_CONNECT, F_OPEN, F_WRITE, F_FSYNC, F_SYNCFS, F_RENAME, F_READ, F_COUNT };
static const char *fam_names[F_COUNT] = {
	"accept", "socket", "connect", "open", "write", "fsync", "syncfs", "rename", "read"
};

/* what a descriptor is, for the stream and unix options; K_ANY: not asked (the rule has neither) */
enum kind { K_ANY = -1, K_OTHER = 0, K_TCP = 1, K_UNIX = 2 };

#define MAX_RULES 16
#define SHORT_WRITE (-1)

struct rule {
	int fam;
	int err;               /* errno, or SHORT_WRITE */
	char what[16];
	char path[512];        /* "" = any */
	int stream;            /* TCP sockets only */
	int unix_only;         /* AF_UNIX stream sockets only */
	long after, count;
	long seen;             /* matching armed calls (atomic) */
	long fired;            /* faults injected (atomic) */
};

static struct rule rules[MAX_RULES];
static int nrules;
static char arm_path[512], log_path[512];
static int fams_used[F_COUNT];

static const struct { const char *name; int e; } errnames[] = {
	{ "EMFILE", EMFILE }, { "ENFILE", ENFILE }, { "ENOMEM", ENOMEM }, { "ENOBUFS", ENOBUFS },
	{ "ENOSPC", ENOSPC }, { "EIO", EIO }, { "EDQUOT", EDQUOT }, { "EAGAIN", EAGAIN },
	{ "ECONNREFUSED", ECONNREFUSED }, { "ENETUNREACH", ENETUNREACH }, { "ECONNRESET", ECONNRESET },
	{ "EPIPE", EPIPE },
};

/* the real functions, resolved once in the constructor, before any thread exists */
static int (*r_accept)(int, struct sockaddr *, socklen_t *);
static int (*r_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*r_socket)(int, int, int);
static int (*r_connect)(int, const struct sockaddr *, socklen_t);
static int (*r_open)(const char *, int, ...);
static int (*r_open64)(const char *, int, ...);
static int (*r_openat)(int, const char *, int, ...);
static int (*r_openat64)(int, const char *, int, ...);
static int (*r_creat)(const char *, mode_t);
static ssize_t (*r_write)(int, const void *, size_t);
static ssize_t (*r_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*r_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*r_writev)(int, const struct iovec *, int);
static int (*r_fsync)(int);
static int (*r_fdatasync)(int);
static int (*r_syncfs)(int);
static int (*r_rename)(const char *, const char *);
static int (*r_renameat)(int, const char *, int, const char *);
static int (*r_renameat2)(int, const char *, int, const char *, unsigned);
static ssize_t (*r_read)(int, void *, size_t);
static ssize_t (*r_readv)(int, const struct iovec *, int);

static void *sym(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

static void parse_rule(char *s)
{
	struct rule *r;
	char *tok, *save = NULL;
	int i;

	if (nrules == MAX_RULES || !(tok = strtok_r(s, ":", &save)))
		return;
	r = &rules[nrules];
	memset(r, 0, sizeof *r);
	r->fam = -1;
	for (i = 0; i < F_COUNT; i++)
		if (strcmp(tok, fam_names[i]) == 0)
			r->fam = i;
	if (r->fam < 0 || !(tok = strtok_r(NULL, ":", &save)))
		return;
	snprintf(r->what, sizeof r->what, "%s", tok);
	r->err = 0;
	if (strcmp(tok, "SHORT") == 0)
		r->err = SHORT_WRITE;
	for (i = 0; i < (int)(sizeof errnames / sizeof errnames[0]); i++)
		if (strcmp(tok, errnames[i].name) == 0)
			r->err = errnames[i].e;
	if (r->err == 0 || (r->err == SHORT_WRITE && r->fam != F_WRITE))
		return;
	while ((tok = strtok_r(NULL, ":", &save))) {
		if (strncmp(tok, "path=", 5) == 0)
			snprintf(r->path, sizeof r->path, "%s", tok + 5);
		else if (strcmp(tok, "stream") == 0)
			r->stream = 1;
		else if (strcmp(tok, "unix") == 0)
			r->unix_only = 1;
		else if (strncmp(tok, "after=", 6) == 0)
			r->after = atol(tok + 6);
		else if (strncmp(tok, "count=", 6) == 0)
			r->count = atol(tok + 6);
	}
	fams_used[r->fam] = 1;
	nrules++;
}

__attribute__((constructor)) static void faultshim_init(void)
{
	const char *env = getenv("FAULTSHIM"), *p;
	char buf[4096], *tok, *save = NULL;

	r_accept = sym("accept");
	r_accept4 = sym("accept4");
	r_socket = sym("socket");
	r_connect = sym("connect");
	r_open = sym("open");
	r_open64 = sym("open64");
	r_openat = sym("openat");
	r_openat64 = sym("openat64");
	r_creat = sym("creat");
	r_write = sym("write");
	r_pwrite = sym("pwrite");
	r_pwrite64 = sym("pwrite64");
	r_writev = sym("writev");
	r_fsync = sym("fsync");
	r_fdatasync = sym("fdatasync");
	r_syncfs = sym("syncfs");
	r_rename = sym("rename");
	r_renameat = sym("renameat");
	r_renameat2 = sym("renameat2");
	r_read = sym("read");
	r_readv = sym("readv");
	if ((p = getenv("FAULTSHIM_ARM")))
		snprintf(arm_path, sizeof arm_path, "%s", p);
	if ((p = getenv("FAULTSHIM_LOG")))
		snprintf(log_path, sizeof log_path, "%s", p);
	if (!env)
		return;
	snprintf(buf, sizeof buf, "%s", env);
	for (tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save))
		parse_rule(tok);
}

/* raw system calls for the shim's own work: never intercepted, never recursive */
static int armed(void)
{
	if (!arm_path[0])
		return 1;
	return syscall(SYS_faccessat, AT_FDCWD, arm_path, F_OK, 0) == 0;
}

static void note(const char *func, const struct rule *r, const char *path)
{
	char line[800];
	int fd, n;

	if (!log_path[0])
		return;
	n = snprintf(line, sizeof line, "%d %s %s %s\n", (int)getpid(), func, r->what, path && *path ? path : "-");
	if (n < 0 || n >= (int)sizeof line)
		n = (int)sizeof line - 1;
	fd = (int)syscall(SYS_openat, AT_FDCWD, log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	(void)syscall(SYS_write, fd, line, (size_t)n);
	(void)syscall(SYS_close, fd);
}

static void fd_path(int fd, char *out, size_t len)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	n = syscall(SYS_readlinkat, AT_FDCWD, link, out, len - 1);
	out[n > 0 ? n : 0] = '\0';
}

static void at_path(int dirfd, const char *name, char *out, size_t len)
{
	char dir[512];

	if (!name)
		name = "";
	if (name[0] == '/' || dirfd == AT_FDCWD) {
		if (name[0] == '/' || !getcwd(dir, sizeof dir))
			snprintf(out, len, "%s", name);
		else
			snprintf(out, len, "%s/%s", dir, name);
		return;
	}
	fd_path(dirfd, dir, sizeof dir);
	snprintf(out, len, "%s/%s", dir, name);
}

static int fd_kind(int fd)
{
	int type = 0, dom = 0;
	socklen_t l = sizeof type;

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0)
		return K_OTHER;
	l = sizeof dom;
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0 || type != SOCK_STREAM)
		return K_OTHER;
	return dom == AF_INET || dom == AF_INET6 ? K_TCP : dom == AF_UNIX ? K_UNIX : K_OTHER;
}

/* whether any rule of this family cares what the descriptor is (getsockopt only then) */
static int fam_wants_kind(int fam)
{
	int i;

	for (i = 0; i < nrules; i++)
		if (rules[i].fam == fam && (rules[i].stream || rules[i].unix_only))
			return 1;
	return 0;
}

/*
 * The rule that faults this call, or NULL. path and path2 may be NULL
 * (no path known); kind is an enum kind (K_ANY: not known, every rule passes).
 * A matching call counts toward after= only while armed.
 */
static struct rule *match(int fam, const char *func, const char *path, const char *path2, int kind)
{
	int i;

	for (i = 0; i < nrules; i++) {
		struct rule *r = &rules[i];
		long seen;

		if (r->fam != fam)
			continue;
		if (r->path[0]) {
			size_t pl = strlen(r->path);
			if (!((path && strncmp(path, r->path, pl) == 0) || (path2 && strncmp(path2, r->path, pl) == 0)))
				continue;
		}
		if (r->stream && kind != K_ANY && kind != K_TCP)
			continue;
		if (r->unix_only && kind != K_ANY && kind != K_UNIX)
			continue;
		if (!armed())
			continue;
		seen = __atomic_fetch_add(&r->seen, 1, __ATOMIC_SEQ_CST);
		if (seen < r->after)
			continue;
		if (r->count > 0 && __atomic_fetch_add(&r->fired, 1, __ATOMIC_SEQ_CST) >= r->count)
			continue;
		note(func, r, path);
		return r;
	}
	return NULL;
}

#define FAIL(r) do { errno = (r)->err; return -1; } while (0)

/* ---- accept, socket, connect --------------------------------------------- */

int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct rule *r;

	if (fams_used[F_ACCEPT] && (r = match(F_ACCEPT, "accept", NULL, NULL, K_ANY)))
		FAIL(r);
	return r_accept(fd, sa, len);
}

int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	struct rule *r;

	if (fams_used[F_ACCEPT] && (r = match(F_ACCEPT, "accept4", NULL, NULL, K_ANY)))
		FAIL(r);
	return r_accept4(fd, sa, len, flags);
}

int socket(int domain, int type, int proto)
{
	struct rule *r;
	int kind = (type & 0xf) != SOCK_STREAM ? K_OTHER :
		domain == AF_INET || domain == AF_INET6 ? K_TCP : domain == AF_UNIX ? K_UNIX : K_OTHER;

	if (fams_used[F_SOCKET] && (r = match(F_SOCKET, "socket", NULL, NULL, kind)))
		FAIL(r);
	return r_socket(domain, type, proto);
}

int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct rule *r;

	if (fams_used[F_CONNECT] && (r = match(F_CONNECT, "connect", NULL, NULL, fd_kind(fd))))
		FAIL(r);
	return r_connect(fd, sa, len);
}

/* ---- open ---------------------------------------------------------------- */

static struct rule *open_rule(const char *func, int dirfd, const char *name)
{
	char p[1024];

	if (!fams_used[F_OPEN])
		return NULL;
	at_path(dirfd, name, p, sizeof p);
	return match(F_OPEN, func, p, NULL, K_ANY);
}

static mode_t open_mode(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;
	struct rule *r;

	va_start(ap, flags);
	m = open_mode(flags, ap);
	va_end(ap);
	if ((r = open_rule("open", AT_FDCWD, path)))
		FAIL(r);
	return r_open(path, flags, m);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;
	struct rule *r;

	va_start(ap, flags);
	m = open_mode(flags, ap);
	va_end(ap);
	if ((r = open_rule("open64", AT_FDCWD, path)))
		FAIL(r);
	return (r_open64 ? r_open64 : r_open)(path, flags, m);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;
	struct rule *r;

	va_start(ap, flags);
	m = open_mode(flags, ap);
	va_end(ap);
	if ((r = open_rule("openat", dirfd, path)))
		FAIL(r);
	return r_openat(dirfd, path, flags, m);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;
	struct rule *r;

	va_start(ap, flags);
	m = open_mode(flags, ap);
	va_end(ap);
	if ((r = open_rule("openat64", dirfd, path)))
		FAIL(r);
	return (r_openat64 ? r_openat64 : r_openat)(dirfd, path, flags, m);
}

int creat(const char *path, mode_t mode)
{
	struct rule *r;

	if ((r = open_rule("creat", AT_FDCWD, path)))
		FAIL(r);
	return r_creat(path, mode);
}

/* ---- write --------------------------------------------------------------- */

static struct rule *fd_rule(int fam, const char *func, int fd)
{
	char p[1024];

	if (!fams_used[fam])
		return NULL;
	fd_path(fd, p, sizeof p);
	return match(fam, func, p, NULL, fam_wants_kind(fam) ? fd_kind(fd) : K_ANY);
}

static size_t half(size_t n)
{
	return n > 1 ? n / 2 : n;
}

ssize_t write(int fd, const void *buf, size_t n)
{
	struct rule *r;

	if (n > 0 && (r = fd_rule(F_WRITE, "write", fd))) {
		if (r->err != SHORT_WRITE)
			FAIL(r);
		n = half(n);
	}
	return r_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	struct rule *r;

	if (n > 0 && (r = fd_rule(F_WRITE, "pwrite", fd))) {
		if (r->err != SHORT_WRITE)
			FAIL(r);
		n = half(n);
	}
	return r_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	struct rule *r;

	if (n > 0 && (r = fd_rule(F_WRITE, "pwrite64", fd))) {
		if (r->err != SHORT_WRITE)
			FAIL(r);
		n = half(n);
	}
	return (r_pwrite64 ? r_pwrite64 : r_pwrite)(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	struct rule *r;
	size_t total = 0, want;
	int i;

	for (i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	if (total > 0 && (r = fd_rule(F_WRITE, "writev", fd))) {
		if (r->err != SHORT_WRITE)
			FAIL(r);
		/* whole leading buffers up to half the bytes, or half of the first buffer */
		want = half(total);
		for (i = 0; i < cnt && iov[i].iov_len <= want; i++)
			want -= iov[i].iov_len;
		if (i == 0)
			return r_write(fd, iov[0].iov_base, half(iov[0].iov_len));
		return r_writev(fd, iov, i);
	}
	return r_writev(fd, iov, cnt);
}

/* ---- syncs and renames --------------------------------------------------- */

int fsync(int fd)
{
	struct rule *r;

	if ((r = fd_rule(F_FSYNC, "fsync", fd)))
		FAIL(r);
	return r_fsync(fd);
}

int fdatasync(int fd)
{
	struct rule *r;

	if ((r = fd_rule(F_FSYNC, "fdatasync", fd)))
		FAIL(r);
	return r_fdatasync(fd);
}

int syncfs(int fd)
{
	struct rule *r;

	if ((r = fd_rule(F_SYNCFS, "syncfs", fd)))
		FAIL(r);
	return r_syncfs(fd);
}

static struct rule *rename_rule(const char *func, int fd1, const char *a, int fd2, const char *b)
{
	char p1[1024], p2[1024];

	if (!fams_used[F_RENAME])
		return NULL;
	at_path(fd1, a, p1, sizeof p1);
	at_path(fd2, b, p2, sizeof p2);
	return match(F_RENAME, func, p1, p2, K_ANY);
}

int rename(const char *a, const char *b)
{
	struct rule *r;

	if ((r = rename_rule("rename", AT_FDCWD, a, AT_FDCWD, b)))
		FAIL(r);
	return r_rename(a, b);
}

int renameat(int fd1, const char *a, int fd2, const char *b)
{
	struct rule *r;

	if ((r = rename_rule("renameat", fd1, a, fd2, b)))
		FAIL(r);
	return r_renameat(fd1, a, fd2, b);
}

int renameat2(int fd1, const char *a, int fd2, const char *b, unsigned flags)
{
	struct rule *r;

	if ((r = rename_rule("renameat2", fd1, a, fd2, b)))
		FAIL(r);
	return r_renameat2(fd1, a, fd2, b, flags);
}

/* ---- read ------------------------------------------------------------------ */

ssize_t read(int fd, void *buf, size_t n)
{
	struct rule *r;

	if (n > 0 && (r = fd_rule(F_READ, "read", fd)))
		FAIL(r);
	if (!r_read)    /* a read by another library's constructor, before ours ran */
		r_read = sym("read");
	return r_read(fd, buf, n);
}

ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	struct rule *r;

	if (cnt > 0 && (r = fd_rule(F_READ, "readv", fd)))
		FAIL(r);
	if (!r_readv)
		r_readv = sym("readv");
	return r_readv(fd, iov, cnt);
}
