/*
 * tests/emul/vzemul.c: an OpenVZ container in a bottle, for tests and
 * benchmarks (room: tests/emul, owned by the limits room). LD_PRELOAD it
 * into frugal, into test clients and into a "hog" process, and they share
 * numothersock, numtcpsock and numfile counters the way the processes of
 * one container share beancounters. It writes a /proc/user_beancounters
 * "Version: 2.5" file that frugal reads through beancounters_file.
 * It must never change what a call does below the limits (every call goes
 * to the real libc function), never count its own descriptors, and never
 * allocate or lock in a way a signal handler or a second thread could
 * deadlock on.
 *
 * Environment:
 *   VZEMUL_NUMOTHERSOCK, VZEMUL_NUMTCPSOCK, VZEMUL_NUMFILE  barriers (= limits);
 *                          absent or empty: unlimited
 *   VZEMUL_FILE            the beancounters file to write (absent: none)
 *   VZEMUL_STATE           a state file mmap'd MAP_SHARED: every process that
 *                          preloads the library with the same path shares the
 *                          counters (absent: shared with fork()ed children only)
 *   VZEMUL_UID             the container id printed in the file (default 101)
 * The first process to create the state file sets the barriers; later ones
 * join it. Remove the state file between test runs.
 *
 * What is counted (socket OBJECTS, as the kernel does, not descriptors):
 *   socket(AF_INET/AF_INET6, SOCK_STREAM) one numtcpsock; any other socket()
 *   one numothersock; socketpair() two numothersock; accept()/accept4() on a
 *   TCP listener one numtcpsock; connect() of a UNIX stream/seqpacket socket
 *   one more numothersock: the kernel creates the server's end at connect
 *   time, so a UNIX connection is two objects. That end is charged to the
 *   connecting descriptor and released with it, and accept() of a UNIX
 *   connection charges nothing (it was counted at connect).
 *   numfile: every socket and every open()/openat()/creat() descriptor, and
 *   both ends of pipe()/pipe2() (struct file objects, as OpenVZ counts).
 *   close() of a counted descriptor releases what it charged. dup() copies
 *   are not objects and are not counted. A process releases only objects it
 *   created: a fork()ed child starts with an empty table (inherited
 *   descriptors stay the parent's), a descriptor the parent held at fork()
 *   is not released when the parent closes it (the child may hold the
 *   object), and a process that dies is swept from the shared counters the
 *   next time anyone needs room.
 *
 * Past a barrier (failcnt rises each time, as in the kernel):
 *   numothersock: socket(), socketpair(), UNIX connect() fail with ENOMEM
 *                 ("Cannot allocate memory"), as OpenVZ does.
 *   numtcpsock:   socket(AF_INET*, SOCK_STREAM) fails with ENOMEM; accept()
 *                 and accept4() of a new TCP connection return EAGAIN
 *                 without taking it: the connection stays in the kernel's
 *                 backlog and the client waits, as when OpenVZ holds back a
 *                 connection. A level-triggered poller sees the listener
 *                 readable again at once: a server must pause its listener
 *                 on that EAGAIN, not spin.
 *   numfile:      open(), openat(), creat(), pipe(), socket(), accept()
 *                 fail with ENFILE.
 *
 * "Another process eating sockets" with python3 (no helper program needed):
 *   LD_PRELOAD=build/tests/vzemul.so VZEMUL_STATE=/tmp/vz.state \
 *   VZEMUL_FILE=/tmp/vz.ubc VZEMUL_NUMOTHERSOCK=120 python3 -c '
 *   import socket, time
 *   hog = []
 *   try:
 *       while True: hog.append(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
 *   except OSError as e: print(len(hog), e)      # [Errno 12] Cannot allocate memory
 *   time.sleep(3600)'
 * and start frugal with the same LD_PRELOAD, VZEMUL_STATE and
 * beancounters_file = /tmp/vz.ubc: frugal sees held = barrier and failcnt
 * rising. Kill the hog and its sockets are swept back.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#define VZ_MAGIC     0x567a454dU   /* "VzEM" */
#define VZ_SLOTS     512
#define VZ_FDMAX     65536          /* descriptors above this are not tracked */
#define VZ_UNLIMITED 9223372036854775807LL

enum { R_TCP, R_OTHER, R_FILE, R_COUNT };

/* per-descriptor record: what closing it releases */
#define K_NONE  0
#define K_TCP   1     /* numtcpsock + numfile */
#define K_OTHER 2     /* numothersock + numfile */
#define K_FILE  3     /* numfile */
#define K_PEER  0x10  /* plus one numothersock: the server end of a UNIX connection */
#define K_SHARED 0x20 /* open when the process forked: a child may hold the object still */

struct vz_slot {
	int pid;                     /* 0 free; -1 being swept */
	int pad;
	long long cnt[R_COUNT];      /* what this process holds */
};

struct vz_shared {
	unsigned magic;              /* VZ_MAGIC once initialized; 1 while initializing */
	int lock;                    /* serializes rewrites of the beancounters file */
	long long uid;
	long long barrier[R_COUNT];
	long long held[R_COUNT];
	long long maxheld[R_COUNT];
	long long failcnt[R_COUNT];
	struct vz_slot slots[VZ_SLOTS];
	struct vz_slot overflow;     /* when every slot is taken; never swept */
};

static struct vz_shared *S;
static struct vz_slot *me;
static int ubc_fd = -1;
static unsigned char fdkind[VZ_FDMAX];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* the real functions; NULL until resolved, then the wrappers use raw
 * syscalls, so a call made while dlsym runs cannot recurse */
static int (*r_socket)(int, int, int);
static int (*r_socketpair)(int, int, int, int[2]);
static int (*r_accept)(int, struct sockaddr *, socklen_t *);
static int (*r_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*r_connect)(int, const struct sockaddr *, socklen_t);
static int (*r_close)(int);
static int (*r_open)(const char *, int, ...);
static int (*r_openat)(int, const char *, int, ...);
static int (*r_pipe)(int[2]);
static int (*r_pipe2)(int[2], int);

/* ---------------- the beancounters file ---------------- */

static const char *const rows[] = {
	"kmemsize", "lockedpages", "privvmpages", "shmpages", "dummy", "numproc", "physpages",
	"vmguarpages", "oomguarpages", "numtcpsock", "numflock", "numpty", "numsiginfo",
	"tcpsndbuf", "tcprcvbuf", "othersockbuf", "dgramrcvbuf", "numothersock", "dcachesize",
	"numfile", "dummy", "dummy", "dummy", "numiptent",
};

static int res_of_row(const char *name)
{
	if (strcmp(name, "numtcpsock") == 0) return R_TCP;
	if (strcmp(name, "numothersock") == 0) return R_OTHER;
	if (strcmp(name, "numfile") == 0) return R_FILE;
	return -1;
}

static long long ld(const long long *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* fixed-width columns: the file never changes size, so one pwrite replaces it */
static void write_ubc(void)
{
	char buf[4096];
	size_t off = 0, i;
	int spins = 0, locked;

	if (ubc_fd < 0 || S == NULL)
		return;
	/* bounded: a holder that died or a signal handler on the holder's own
	 * thread must not hang us; an unlocked write is merely one stale file */
	while (!(locked = __atomic_exchange_n(&S->lock, 1, __ATOMIC_ACQUIRE) == 0) && ++spins < 200)
		sched_yield();
	off += (size_t)snprintf(buf + off, sizeof buf - off, "Version: 2.5\n"
	    "       uid  resource                     held              maxheld              barrier"
	    "                limit              failcnt\n");
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		char uid[24] = "";
		int r = res_of_row(rows[i]);
		long long h = 0, m = 0, b = VZ_UNLIMITED, f = 0;

		if (i == 0)
			snprintf(uid, sizeof uid, "%lld:", S->uid);
		if (r >= 0) {
			h = ld(&S->held[r]);
			m = ld(&S->maxheld[r]);
			b = S->barrier[r];
			f = ld(&S->failcnt[r]);
		}
		off += (size_t)snprintf(buf + off, sizeof buf - off, "%11s %-12s %20lld %20lld %20lld %20lld %20lld\n",
		    uid, rows[i], h, m, b, b, f);
	}
	(void)pwrite(ubc_fd, buf, off, 0);
	if (locked)
		__atomic_store_n(&S->lock, 0, __ATOMIC_RELEASE);
}

/* ---------------- counters ---------------- */

static void max_update(long long *mx, long long v)
{
	long long m = __atomic_load_n(mx, __ATOMIC_RELAXED);

	while (v > m && !__atomic_compare_exchange_n(mx, &m, v, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

/* a process that died holding objects gives them back */
static int sweep(void)
{
	int i, freed = 0, r;

	for (i = 0; i < VZ_SLOTS; i++) {
		struct vz_slot *s = &S->slots[i];
		int pid = __atomic_load_n(&s->pid, __ATOMIC_ACQUIRE);

		if (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		if (!__atomic_compare_exchange_n(&s->pid, &pid, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			continue;
		for (r = 0; r < R_COUNT; r++) {
			long long c = __atomic_exchange_n(&s->cnt[r], 0, __ATOMIC_ACQ_REL);
			__atomic_sub_fetch(&S->held[r], c, __ATOMIC_ACQ_REL);
			freed += c > 0;
		}
		__atomic_store_n(&s->pid, 0, __ATOMIC_RELEASE);
	}
	return freed;
}

static int charge_once(int r, long long n)
{
	long long h = __atomic_load_n(&S->held[r], __ATOMIC_RELAXED);

	do {
		if (h + n > S->barrier[r])
			return -1;
	} while (!__atomic_compare_exchange_n(&S->held[r], &h, h + n, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
	max_update(&S->maxheld[r], h + n);
	__atomic_add_fetch(&me->cnt[r], n, __ATOMIC_RELAXED);
	return 0;
}

/* 0, or -1 with failcnt raised (the file is rewritten by the caller) */
static int charge(int r, long long n)
{
	if (charge_once(r, n) == 0)
		return 0;
	if (sweep() && charge_once(r, n) == 0)
		return 0;
	__atomic_add_fetch(&S->failcnt[r], 1, __ATOMIC_RELAXED);
	return -1;
}

static void uncharge(int r, long long n)
{
	__atomic_sub_fetch(&S->held[r], n, __ATOMIC_ACQ_REL);
	__atomic_sub_fetch(&me->cnt[r], n, __ATOMIC_RELAXED);
}

/* charge a descriptor of kind k; 0, or -1 with errno set as the kernel would */
static int charge_kind(int k)
{
	int r = k == K_TCP ? R_TCP : k == K_OTHER ? R_OTHER : -1;

	if (r >= 0 && charge(r, 1) < 0) {
		write_ubc();
		errno = ENOMEM;
		return -1;
	}
	if (charge(R_FILE, 1) < 0) {
		if (r >= 0)
			uncharge(r, 1);
		write_ubc();
		errno = ENFILE;
		return -1;
	}
	return 0;
}

static void uncharge_kind(int k)
{
	if ((k & 0x0f) == K_TCP)
		uncharge(R_TCP, 1);
	else if ((k & 0x0f) == K_OTHER)
		uncharge(R_OTHER, 1);
	if (k & K_PEER)
		uncharge(R_OTHER, 1);
	if (k & 0x0f)
		uncharge(R_FILE, 1);
}

static void remember(int fd, int k)
{
	if (fd >= 0 && fd < VZ_FDMAX)
		__atomic_store_n(&fdkind[fd], (unsigned char)k, __ATOMIC_RELEASE);
}

/* a descriptor above VZ_FDMAX cannot be remembered, so it is not charged either */
static int trackable(void)
{
	return S != NULL;
}

/* ---------------- set-up ---------------- */

static long long env_num(const char *name, long long def)
{
	const char *v = getenv(name);
	char *end;
	long long n;

	if (v == NULL || *v == '\0')
		return def;
	n = strtoll(v, &end, 10);
	return *end == '\0' && n >= 0 ? n : def;
}

static int raw_open(const char *path, int flags, mode_t mode)
{
	return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}

static void claim_slot(void)
{
	int i, pid = getpid(), pass;

	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < VZ_SLOTS; i++) {
			int zero = 0;

			if (__atomic_compare_exchange_n(&S->slots[i].pid, &zero, pid, 0,
			    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
				me = &S->slots[i];
				return;
			}
		}
		sweep();
	}
	me = &S->overflow;
}

/*
 * A descriptor open at fork() names an object the child holds too: the
 * parent closing its copy frees nothing in the kernel, so nothing is
 * released here either; the object stays charged to the parent until the
 * parent exits (swept). A supervisor that forks a daemon and closes the
 * daemon's end of a socketpair keeps two objects charged, as OpenVZ does.
 */
static void after_fork_parent(void)
{
	int fd;

	for (fd = 0; fd < VZ_FDMAX; fd++) {
		int k = __atomic_load_n(&fdkind[fd], __ATOMIC_ACQUIRE);

		if (k)
			__atomic_store_n(&fdkind[fd], (unsigned char)(k | K_SHARED), __ATOMIC_RELEASE);
	}
}

static void after_fork_child(void)
{
	/* inherited descriptors are the parent's objects: the child releases
	 * only what it creates itself */
	memset(fdkind, 0, sizeof fdkind);
	if (S)
		claim_slot();
}

static void init(void)
{
	const char *state = getenv("VZEMUL_STATE"), *file = getenv("VZEMUL_FILE");
	struct vz_shared *s = MAP_FAILED;
	unsigned expect = 0;
	int fd;

	r_socket = dlsym(RTLD_NEXT, "socket");
	r_socketpair = dlsym(RTLD_NEXT, "socketpair");
	r_accept = dlsym(RTLD_NEXT, "accept");
	r_accept4 = dlsym(RTLD_NEXT, "accept4");
	r_connect = dlsym(RTLD_NEXT, "connect");
	r_close = dlsym(RTLD_NEXT, "close");
	r_open = dlsym(RTLD_NEXT, "open");
	r_openat = dlsym(RTLD_NEXT, "openat");
	r_pipe = dlsym(RTLD_NEXT, "pipe");
	r_pipe2 = dlsym(RTLD_NEXT, "pipe2");

	if (state && *state) {
		if ((fd = raw_open(state, O_RDWR | O_CREAT | O_CLOEXEC, 0666)) >= 0) {
			struct stat st;

			if (fstat(fd, &st) == 0 && (st.st_size >= (off_t)sizeof *s || ftruncate(fd, sizeof *s) == 0))
				s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			syscall(SYS_close, fd);
		}
	} else {
		s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	}
	if (s == MAP_FAILED)
		return;   /* no counting: the process runs unemulated rather than not at all */
	if (__atomic_compare_exchange_n(&s->magic, &expect, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		s->uid = env_num("VZEMUL_UID", 101);
		s->barrier[R_OTHER] = env_num("VZEMUL_NUMOTHERSOCK", VZ_UNLIMITED);
		s->barrier[R_TCP] = env_num("VZEMUL_NUMTCPSOCK", VZ_UNLIMITED);
		s->barrier[R_FILE] = env_num("VZEMUL_NUMFILE", VZ_UNLIMITED);
		__atomic_store_n(&s->magic, VZ_MAGIC, __ATOMIC_RELEASE);
	} else {
		int spins = 0;

		while (__atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) != VZ_MAGIC && ++spins < 100000)
			sched_yield();
		if (__atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) != VZ_MAGIC)
			return;
	}
	S = s;
	claim_slot();
	if (file && *file) {
		ubc_fd = raw_open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (ubc_fd >= 0 && ubc_fd < VZ_FDMAX) {
			/* move it out of the way of descriptors the program counts on */
			int hi = (int)syscall(SYS_fcntl, ubc_fd, F_DUPFD_CLOEXEC, 1000);
			if (hi >= 0) {
				syscall(SYS_close, ubc_fd);
				ubc_fd = hi;
			}
		}
		write_ubc();
	}
	pthread_atfork(NULL, after_fork_parent, after_fork_child);
}

__attribute__((constructor)) static void vz_ctor(void)
{
	pthread_once(&once, init);
}

static void ensure(void)
{
	pthread_once(&once, init);
}

/* ---------------- the wrappers ---------------- */

static int sock_kind(int domain, int type, int protocol)
{
	int t = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);

	if ((domain == AF_INET || domain == AF_INET6) && t == SOCK_STREAM
	    && (protocol == 0 || protocol == IPPROTO_TCP))
		return K_TCP;
	return K_OTHER;
}

int socket(int domain, int type, int protocol)
{
	int k = sock_kind(domain, type, protocol), fd;

	ensure();
	if (r_socket == NULL)
		return (int)syscall(SYS_socket, domain, type, protocol);
	if (!trackable())
		return r_socket(domain, type, protocol);
	if (charge_kind(k) < 0)
		return -1;
	if ((fd = r_socket(domain, type, protocol)) < 0 || fd >= VZ_FDMAX) {
		int e = errno;
		uncharge_kind(k);
		if (fd >= 0)
			return fd;   /* untracked: uncharged */
		errno = e;
		return -1;
	}
	remember(fd, k);
	write_ubc();
	return fd;
}

int socketpair(int domain, int type, int protocol, int sv[2])
{
	int rc;

	ensure();
	if (r_socketpair == NULL)
		return (int)syscall(SYS_socketpair, domain, type, protocol, sv);
	if (!trackable())
		return r_socketpair(domain, type, protocol, sv);
	if (charge_kind(K_OTHER) < 0)
		return -1;
	if (charge_kind(K_OTHER) < 0) {
		int e = errno;
		uncharge_kind(K_OTHER);
		write_ubc();
		errno = e;
		return -1;
	}
	if ((rc = r_socketpair(domain, type, protocol, sv)) < 0) {
		int e = errno;
		uncharge_kind(K_OTHER);
		uncharge_kind(K_OTHER);
		errno = e;
		return rc;
	}
	if (sv[0] >= VZ_FDMAX)
		uncharge_kind(K_OTHER);
	if (sv[1] >= VZ_FDMAX)
		uncharge_kind(K_OTHER);
	remember(sv[0], K_OTHER);
	remember(sv[1], K_OTHER);
	write_ubc();
	return rc;
}

static int getint(int fd, int opt)
{
	int v = -1;
	socklen_t l = sizeof v;

	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l) < 0)
		return -1;
	return v;
}

static int do_accept(int fd, struct sockaddr *a, socklen_t *al, int flags, int four)
{
	int domain = getint(fd, SO_DOMAIN), type = getint(fd, SO_TYPE), nfd, k;

	/* UNIX connections were counted at connect(); other kinds do not accept */
	k = (domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM ? K_TCP : K_NONE;
	if (k == K_TCP) {
		if (charge(R_TCP, 1) < 0) {
			/* the connection stays in the backlog: the client waits */
			write_ubc();
			errno = EAGAIN;
			return -1;
		}
		if (charge(R_FILE, 1) < 0) {
			uncharge(R_TCP, 1);
			write_ubc();
			errno = ENFILE;
			return -1;
		}
	}
	nfd = four ? r_accept4(fd, a, al, flags) : r_accept(fd, a, al);
	if (k == K_NONE)
		return nfd;
	if (nfd < 0 || nfd >= VZ_FDMAX) {
		int e = errno;
		uncharge_kind(K_TCP);
		errno = e;
		return nfd;
	}
	remember(nfd, K_TCP);
	write_ubc();
	return nfd;
}

int accept(int fd, struct sockaddr *a, socklen_t *al)
{
	ensure();
	if (r_accept == NULL)
		return (int)syscall(SYS_accept, fd, a, al);
	if (!trackable())
		return r_accept(fd, a, al);
	return do_accept(fd, a, al, 0, 0);
}

int accept4(int fd, struct sockaddr *a, socklen_t *al, int flags)
{
	ensure();
	if (r_accept4 == NULL)
		return (int)syscall(SYS_accept4, fd, a, al, flags);
	if (!trackable())
		return r_accept4(fd, a, al, flags);
	return do_accept(fd, a, al, flags, 1);
}

int connect(int fd, const struct sockaddr *a, socklen_t al)
{
	int type, rc, peer = 0;

	ensure();
	if (r_connect == NULL)
		return (int)syscall(SYS_connect, fd, a, al);
	if (!trackable() || a == NULL || a->sa_family != AF_UNIX || fd < 0 || fd >= VZ_FDMAX)
		return r_connect(fd, a, al);
	type = getint(fd, SO_TYPE);
	if ((type == SOCK_STREAM || type == SOCK_SEQPACKET)
	    && (__atomic_load_n(&fdkind[fd], __ATOMIC_ACQUIRE) & K_PEER) == 0) {
		if (charge(R_OTHER, 1) < 0) {
			write_ubc();
			errno = ENOMEM;
			return -1;
		}
		peer = 1;
	}
	rc = r_connect(fd, a, al);
	if (peer) {
		if (rc < 0 && errno != EINPROGRESS) {
			int e = errno;
			uncharge(R_OTHER, 1);
			errno = e;
		} else {
			unsigned char k = __atomic_load_n(&fdkind[fd], __ATOMIC_ACQUIRE);
			/* a socket created before the library loaded was never charged as
			 * one; only the peer is then released with it */
			__atomic_store_n(&fdkind[fd], (unsigned char)(k | K_PEER), __ATOMIC_RELEASE);
			write_ubc();
		}
	}
	return rc;
}

int close(int fd)
{
	int k = 0;

	ensure();
	/* forget before the number can be reused by another thread */
	if (fd >= 0 && fd < VZ_FDMAX && fd != ubc_fd)
		k = __atomic_exchange_n(&fdkind[fd], 0, __ATOMIC_ACQ_REL);
	if (k && S && !(k & K_SHARED)) {
		uncharge_kind(k);
		write_ubc();
	}
	if (r_close == NULL)
		return (int)syscall(SYS_close, fd);
	return r_close(fd);
}

static int opened(int fd)
{
	if (fd < 0)
		return fd;
	if (fd >= VZ_FDMAX) {
		uncharge(R_FILE, 1);
		return fd;
	}
	remember(fd, K_FILE);
	write_ubc();
	return fd;
}

static int do_open(int dirfd, const char *path, int flags, mode_t mode, int at)
{
	int fd, e;

	ensure();
	if (r_open == NULL || r_openat == NULL || !trackable())
		return at && r_openat ? r_openat(dirfd, path, flags, mode) : r_open ? r_open(path, flags, mode)
		    : (int)syscall(SYS_openat, at ? dirfd : AT_FDCWD, path, flags, mode);
	if (charge(R_FILE, 1) < 0) {
		write_ubc();
		errno = ENFILE;
		return -1;
	}
	fd = at ? r_openat(dirfd, path, flags, mode) : r_open(path, flags, mode);
	if (fd < 0) {
		e = errno;
		uncharge(R_FILE, 1);
		errno = e;
		return fd;
	}
	return opened(fd);
}

static mode_t mode_arg(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	return do_open(AT_FDCWD, path, flags, m, 0);
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	return do_open(AT_FDCWD, path, flags | O_LARGEFILE, m, 0);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	return do_open(dirfd, path, flags, m, 1);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t m;

	va_start(ap, flags);
	m = mode_arg(flags, ap);
	va_end(ap);
	return do_open(dirfd, path, flags | O_LARGEFILE, m, 1);
}

/* what _FORTIFY_SOURCE builds call when the flags are not constant */
int __open_2(const char *path, int flags)
{
	return do_open(AT_FDCWD, path, flags, 0, 0);
}

int __open64_2(const char *path, int flags)
{
	return do_open(AT_FDCWD, path, flags | O_LARGEFILE, 0, 0);
}

int creat(const char *path, mode_t mode)
{
	return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0);
}

int creat64(const char *path, mode_t mode)
{
	return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC | O_LARGEFILE, mode, 0);
}

static int do_pipe(int fds[2], int flags, int two)
{
	int rc, e;

	ensure();
	if (r_pipe == NULL || r_pipe2 == NULL)
		return (int)syscall(SYS_pipe2, fds, flags);
	if (!trackable())
		return two ? r_pipe2(fds, flags) : r_pipe(fds);
	if (charge(R_FILE, 2) < 0) {
		write_ubc();
		errno = ENFILE;
		return -1;
	}
	rc = two ? r_pipe2(fds, flags) : r_pipe(fds);
	if (rc < 0) {
		e = errno;
		uncharge(R_FILE, 2);
		errno = e;
		return rc;
	}
	if (fds[0] >= VZ_FDMAX)
		uncharge(R_FILE, 1);
	if (fds[1] >= VZ_FDMAX)
		uncharge(R_FILE, 1);
	remember(fds[0], K_FILE);
	remember(fds[1], K_FILE);
	write_ubc();
	return rc;
}

int pipe(int fds[2]) { return do_pipe(fds, 0, 0); }
int pipe2(int fds[2], int flags) { return do_pipe(fds, flags, 1); }
