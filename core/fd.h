/*
 * core/fd.h: the descriptor funnel. Every descriptor the daemon opens and
 * closes goes through here, beside the allocator's byte counter
 * (core/mem.h), so "how many descriptors and sockets do we hold" is a few
 * counters, exact at every moment: sockets by kind (TCP, which OpenVZ
 * charges to numtcpsock; any other socket, numothersock) and files. limits/
 * sets the caps (fd_set_caps) and reads the counts; no lower room calls up.
 *
 * Descriptors that libraries open for good (libev's epoll and eventfd, the
 * syslog socket, stdio) are adopted once start-up is done (fd_adopt_open);
 * fd_audit() then compares the counters with /proc/self/fd while no funnel
 * call can run, so drift is seen, not guessed.
 *
 * Thread-safe: worker threads open and close spool and Maildir files.
 */
#ifndef FRUGAL_CORE_FD_H
#define FRUGAL_CORE_FD_H

#include <dirent.h>
#include <sys/socket.h>
#include <sys/types.h>

enum fd_kind {
	FD_FILE,       /* regular files, directories, pipes, eventfds: numfile */
	FD_TCP,        /* TCP sockets: numtcpsock (and numfile) */
	FD_SOCK,       /* every other socket (UNIX, UDP, netlink): numothersock (and numfile) */
	FD_KINDS
};

/*
 * Opening: -1 with errno as the system call sets it, or EMFILE when the
 * cap of the kind or of all descriptors is reached (the caller degrades:
 * 451, 421, a deferral, a paused listener).
 */
int  fd_open(const char *path, int flags, ...);                 /* mode if O_CREAT */
int  fd_openat(int dirfd, const char *path, int flags, ...);
int  fd_socket(int domain, int type, int protocol);             /* FD_TCP for stream IP, else FD_SOCK */
int  fd_socketpair(int domain, int type, int protocol, int sv[2]);
int  fd_dup(int fd);                                            /* same kind, close-on-exec */
DIR *fd_opendir(const char *path);                              /* counted while open */
/* accept4(): counted, never refused by a cap (admission answers 421 itself) */
int  fd_accept(int lfd, struct sockaddr *sa, socklen_t *len, int flags);
/* A descriptor that arrived another way (SCM_RIGHTS): count it. */
void fd_received(int fd, enum fd_kind k);

int  fd_close(int fd);                                          /* uncounts, then close(2) */
int  fd_closedir(DIR *d);

/* Counts now. */
long long fd_count(enum fd_kind k);
long long fd_total(void);
/* Is there room for n more of kind k (and n more descriptors in all)? */
int  fd_room(enum fd_kind k, long long n);
/* The same under the cap of kind k alone (which of the two caps refused, for the warning). */
int  fd_kind_room(enum fd_kind k, long long n);
/* Caps from limits/: per kind and for all descriptors; 0 = none, negative = none allowed. */
void fd_set_caps(long long total, long long tcp, long long sock);

/* Count every descriptor open now that the funnel does not know (library,
 * inherited): once start-up is over. Returns how many were adopted. */
int  fd_adopt_open(void);
/*
 * Compare with the kernel: *kernel gets the entries of /proc/self/fd,
 * *ledger fd_total(), both read with every funnel call held off. 0, or -1
 * when /proc cannot be read.
 */
int  fd_audit(long long *kernel, long long *ledger);
/*
 * In a freshly forked child (one thread): close every descriptor the funnel
 * opened but the n in keep (and stdio), then count what remains: what
 * libraries hold (the log, syslog's socket) is theirs and stays.
 */
void fd_close_except(const int *keep, int n);

#endif
