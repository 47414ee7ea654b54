/*
 * core/fd.c: the descriptor funnel (see fd.h). One byte per descriptor
 * number remembers its kind (so fd_close knows what to uncount), the
 * counters are atomic, and a read-write lock lets any number of threads
 * open and close at once while fd_audit alone holds it exclusively to read
 * /proc/self/fd: at that moment the counters and the kernel agree or the
 * ledger is wrong.
 */
#include "fd.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define KIND_NONE 0xff
#define TABLE_MAX (1 << 20)   /* descriptor numbers we track: RLIMIT_NOFILE's usual hard ceiling */

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *kinds;       /* kinds[fd]: FD_* or KIND_NONE; grown under table_mu */
static size_t nkinds;
static long long count[FD_KINDS];
static long long cap_total, cap_kind[FD_KINDS];

static long long get(long long *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

long long fd_count(enum fd_kind k) { return (unsigned)k < FD_KINDS ? get(&count[k]) : 0; }
long long fd_total(void) { return get(&count[FD_FILE]) + get(&count[FD_TCP]) + get(&count[FD_SOCK]); }

void fd_set_caps(long long total, long long tcp, long long sock)
{
	__atomic_store_n(&cap_total, total, __ATOMIC_RELAXED);
	__atomic_store_n(&cap_kind[FD_TCP], tcp, __ATOMIC_RELAXED);
	__atomic_store_n(&cap_kind[FD_SOCK], sock, __ATOMIC_RELAXED);
}

int fd_room(enum fd_kind k, long long n)
{
	long long ct = get(&cap_total), ck = (unsigned)k < FD_KINDS ? get(&cap_kind[k]) : 0;

	/* 0: no cap; negative: an empty budget, nothing allowed */
	if (ct != 0 && fd_total() + n > (ct < 0 ? 0 : ct))
		return 0;
	if (ck != 0 && fd_count(k) + n > (ck < 0 ? 0 : ck))
		return 0;
	return 1;
}

int fd_kind_room(enum fd_kind k, long long n)
{
	long long ck = (unsigned)k < FD_KINDS ? get(&cap_kind[k]) : 0;

	return ck == 0 || fd_count(k) + n <= (ck < 0 ? 0 : ck);
}

/*
 * The table is touched only under table_mu: growing it moves it (realloc), so
 * a pointer into it must never outlive the lock (a thread holding one while
 * another grew the table wrote into freed memory; ThreadSanitizer's report).
 * The kind of fd, grown as needed; KIND_NONE when out of range or memory is
 * short (then the descriptor is counted but its kind is not remembered).
 */
static int table_has(int fd)   /* table_mu held */
{
	if (fd < 0 || fd >= TABLE_MAX)
		return 0;
	if ((size_t)fd >= nkinds) {
		size_t n = nkinds ? nkinds : 1024;
		unsigned char *nk;

		while (n <= (size_t)fd)
			n *= 2;
		/* plain realloc: the funnel sits below the accounting allocator's users */
		if ((nk = realloc(kinds, n)) != NULL) {
			memset(nk + nkinds, KIND_NONE, n - nkinds);
			kinds = nk;
			nkinds = n;
		}
	}
	return (size_t)fd < nkinds;
}

static unsigned char kind_get(int fd)
{
	unsigned char k = KIND_NONE;

	pthread_mutex_lock(&table_mu);
	if (table_has(fd))
		k = kinds[fd];
	pthread_mutex_unlock(&table_mu);
	return k;
}

static void note_open(int fd, enum fd_kind k)
{
	pthread_mutex_lock(&table_mu);
	if (table_has(fd)) {
		if (kinds[fd] != KIND_NONE)   /* a number we thought open: somebody closed it behind our back */
			__atomic_sub_fetch(&count[kinds[fd]], 1, __ATOMIC_RELAXED);
		kinds[fd] = (unsigned char)k;
		__atomic_add_fetch(&count[k], 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&table_mu);
}

void fd_received(int fd, enum fd_kind k)
{
	pthread_rwlock_rdlock(&lock);
	note_open(fd, k);
	pthread_rwlock_unlock(&lock);
}

/* Hold the lock across the system call: an audit never sees a descriptor the counters miss. */
#define FUNNEL(kind, call) do { \
	int fd_, e_; \
	if (!fd_room((kind), 1)) { errno = EMFILE; return -1; } \
	pthread_rwlock_rdlock(&lock); \
	fd_ = (call); \
	e_ = errno; \
	if (fd_ >= 0) note_open(fd_, (kind)); \
	pthread_rwlock_unlock(&lock); \
	errno = e_; \
	return fd_; \
} while (0)

int fd_open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	va_list ap;

	if (flags & (O_CREAT | O_TMPFILE)) {
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	FUNNEL(FD_FILE, open(path, flags, mode));
}

int fd_openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	va_list ap;

	if (flags & (O_CREAT | O_TMPFILE)) {
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	FUNNEL(FD_FILE, openat(dirfd, path, flags, mode));
}

static enum fd_kind socket_kind(int domain, int type)
{
	type &= ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
	return (domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM ? FD_TCP : FD_SOCK;
}

int fd_socket(int domain, int type, int protocol)
{
	FUNNEL(socket_kind(domain, type), socket(domain, type, protocol));
}

int fd_socketpair(int domain, int type, int protocol, int sv[2])
{
	int rc, e;

	if (!fd_room(FD_SOCK, 2)) {
		errno = EMFILE;
		return -1;
	}
	pthread_rwlock_rdlock(&lock);
	rc = socketpair(domain, type, protocol, sv);
	e = errno;
	if (rc == 0) {
		note_open(sv[0], FD_SOCK);
		note_open(sv[1], FD_SOCK);
	}
	pthread_rwlock_unlock(&lock);
	errno = e;
	return rc;
}

int fd_accept(int lfd, struct sockaddr *sa, socklen_t *len, int flags)
{
	int fd, e;

	pthread_rwlock_rdlock(&lock);
	fd = accept4(lfd, sa, len, flags);
	e = errno;
	if (fd >= 0)
		note_open(fd, FD_TCP);
	pthread_rwlock_unlock(&lock);
	errno = e;
	return fd;
}

static enum fd_kind kind_of(int fd)
{
	unsigned char k = kind_get(fd);

	return k != KIND_NONE ? (enum fd_kind)k : FD_FILE;
}

int fd_dup(int fd)
{
	FUNNEL(kind_of(fd), fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

static void note_close(int fd)
{
	pthread_mutex_lock(&table_mu);
	if (table_has(fd) && kinds[fd] != KIND_NONE) {
		__atomic_sub_fetch(&count[kinds[fd]], 1, __ATOMIC_RELAXED);
		kinds[fd] = KIND_NONE;
	}
	pthread_mutex_unlock(&table_mu);
}

int fd_close(int fd)
{
	int rc, e;

	if (fd < 0)
		return 0;
	pthread_rwlock_rdlock(&lock);
	note_close(fd);
	rc = close(fd);
	e = errno;
	pthread_rwlock_unlock(&lock);
	errno = e;
	return rc;
}

DIR *fd_opendir(const char *path)
{
	DIR *d;
	int e;

	if (!fd_room(FD_FILE, 1)) {
		errno = EMFILE;
		return NULL;
	}
	pthread_rwlock_rdlock(&lock);
	d = opendir(path);
	e = errno;
	if (d)
		note_open(dirfd(d), FD_FILE);
	pthread_rwlock_unlock(&lock);
	errno = e;
	return d;
}

int fd_closedir(DIR *d)
{
	int rc, e;

	if (d == NULL)
		return 0;
	pthread_rwlock_rdlock(&lock);
	note_close(dirfd(d));
	rc = closedir(d);
	e = errno;
	pthread_rwlock_unlock(&lock);
	errno = e;
	return rc;
}

static enum fd_kind classify(int fd)
{
	struct stat st;
	int domain = 0, type = 0;
	socklen_t len = sizeof domain;

	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return FD_FILE;
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
		return FD_SOCK;
	len = sizeof type;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return FD_SOCK;
	return socket_kind(domain, type);
}

/* Numbers of /proc/self/fd, without the directory's own descriptor. fn may be NULL. */
static long long scan(void (*fn)(int fd))
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long long n = 0;
	int self;

	if (d == NULL)
		return -1;
	self = dirfd(d);
	while ((e = readdir(d)) != NULL) {
		int fd;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		fd = atoi(e->d_name);
		if (fd == self)
			continue;
		n++;
		if (fn)
			fn(fd);
	}
	closedir(d);
	return n;
}

static int adopted;

static void adopt(int fd)   /* lock held exclusively: no open or close in between */
{
	int unknown;

	pthread_mutex_lock(&table_mu);
	unknown = table_has(fd) && kinds[fd] == KIND_NONE;
	pthread_mutex_unlock(&table_mu);
	if (unknown) {
		note_open(fd, classify(fd));
		adopted++;
	}
}

int fd_adopt_open(void)
{
	pthread_rwlock_wrlock(&lock);
	adopted = 0;
	scan(adopt);
	pthread_rwlock_unlock(&lock);
	return adopted;
}

void fd_close_except(const int *keep, int n)
{
	size_t i;
	int k;

	pthread_rwlock_wrlock(&lock);
	/*
	 * Only what the funnel opened: a library's own descriptors (the log,
	 * syslog's socket, a preloaded test shim's) stay with their library.
	 */
	pthread_mutex_lock(&table_mu);
	for (i = 0; i < nkinds; i++) {
		int kept = i <= 2;

		for (k = 0; k < n && !kept; k++)
			kept = (size_t)keep[k] == i;
		if (kinds[i] != KIND_NONE && !kept)
			close((int)i);
		kinds[i] = KIND_NONE;   /* the ledger starts again from what is left */
	}
	pthread_mutex_unlock(&table_mu);
	count[FD_FILE] = count[FD_TCP] = count[FD_SOCK] = 0;
	adopted = 0;
	scan(adopt);
	pthread_rwlock_unlock(&lock);
}

int fd_audit(long long *kernel, long long *ledger)
{
	long long k;

	pthread_rwlock_wrlock(&lock);
	k = scan(NULL);
	*ledger = fd_total();
	pthread_rwlock_unlock(&lock);
	*kernel = k;
	return k < 0 ? -1 : 0;
}
