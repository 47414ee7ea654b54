/*
 * core/sync.c: the shared sync barrier (see sync.h). One slot per file
 * system (by st_dev): a caller takes a ticket = the number of the next sync
 * to start on that file system; it returns when a sync with that number has
 * completed. The first caller that finds no sync running becomes the leader
 * and issues it; the others wait for it.
 *
 * Who is woken: a waiter sleeps on the futex word of its ticket's parity.
 * A completion wakes every waiter of that ticket (they are done) and one
 * waiter of the next (it starts the next sync for the others). Waking all
 * of them, as this did first, woke each waiter of the next sync only for it
 * to find a sync running and sleep again: in the bench, about 1.3 such
 * wake-ups per message, in every process sharing the group commit.
 *
 * Across processes: started as root, the master maps the slots shared
 * (sync_share_processes) before it forks the daemon and the delivery
 * helpers, so a spool commit in the daemon and a Maildir delivery in a
 * helper share one syncfs as threads of one process do; separate streams
 * would each pay for every sync. The mutex is robust (an owner that dies
 * with it is survived) and a leader that dies during its syncfs is taken
 * over by a waiter. Waiting is a bare futex, not a process-shared condition
 * variable: glibc's condvar keeps per-waiter counts in the shared object, and
 * a helper killed while waiting left a broadcaster blocked for good (the
 * daemon's commits hung; seen in the helper-restart test). A dead futex
 * waiter leaves nothing behind. What a process reads here decides only when it returns,
 * never what it may do: the worst a misbehaving process can do is delay or
 * hasten another's return, which it could equally do by not syncing at all.
 */
#include "sync.h"
#include "daemon.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 8        /* distinct file systems (queue, mail stores): few */
#define TAKEOVER_S 2   /* a sync running longer than this with its leader gone is abandoned */

struct slot {
	dev_t dev;
	int used;
	int running;            /* a syncfs is in progress */
	pid_t leader;           /* who runs it */
	uint64_t started;       /* syncs started */
	uint64_t completed;     /* syncs finished */
	int err[2];             /* errno of the last two syncs, by parity */
	uint32_t wake[2];       /* futex words, by the parity of the sync waited for: bumped (under mu) at completions */
	int waiting[2];         /* sleepers on each word (one killed asleep stays counted: it costs a wake, no more) */
};

struct shared {
	pthread_mutex_t mu;
	struct slot slots[SLOTS];
	unsigned long calls, syncs;
	unsigned long idle_wakes;   /* a waiter slept, and woke to find its sync neither done nor its to lead */
};

static struct shared local = { PTHREAD_MUTEX_INITIALIZER, { { 0 } }, 0, 0, 0 };
static struct shared *S = &local;

int sync_share_processes(void)
{
	pthread_mutexattr_t ma;
	struct shared *m;

	m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -1;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&m->mu, &ma);
	pthread_mutexattr_destroy(&ma);
	S = m;
	return 0;
}

static void lock(void)
{
	if (pthread_mutex_lock(&S->mu) == EOWNERDEAD)
		pthread_mutex_consistent(&S->mu);   /* the holder died between two lines: nothing half-done */
}

/*
 * Called with mu held; returns with it held. Wakes on a completion, a
 * spurious wake or the timeout. 1: it slept (0: the word had changed).
 */
static int wait_completion(struct slot *s, uint64_t ticket)
{
	int k = (int)(ticket & 1);
	uint32_t seen = s->wake[k];
	struct timespec t = { TAKEOVER_S, 0 };
	long r;

	s->waiting[k]++;
	pthread_mutex_unlock(&S->mu);
	/* not FUTEX_PRIVATE: the word may live in a mapping shared with other processes */
	r = syscall(SYS_futex, &s->wake[k], FUTEX_WAIT, seen, &t, NULL, 0);
	lock();
	s->waiting[k]--;
	return r == 0 || errno != EAGAIN;
}

static void wake(uint32_t *word, int n)
{
	(void)syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

static struct slot *slot_for(dev_t dev)
{
	int i;

	for (i = 0; i < SLOTS; i++)
		if (S->slots[i].used && S->slots[i].dev == dev)
			return &S->slots[i];
	for (i = 0; i < SLOTS; i++)
		if (!S->slots[i].used) {
			S->slots[i].used = 1;
			S->slots[i].dev = dev;
			return &S->slots[i];
		}
	return NULL;
}

/* Runs the next sync of slot s and wakes whom it concerns; called and returns with mu held. */
static void lead(struct slot *s, int fd)
{
	uint64_t n;
	int err, k, done, next;

	s->running = 1;
	s->leader = (pid_t)daemon_self();
	n = ++s->started;
	S->syncs++;
	pthread_mutex_unlock(&S->mu);
	err = syncfs(fd) < 0 ? errno : 0;
	lock();
	s->err[n & 1] = err;
	s->completed = n;
	s->running = 0;
	/*
	 * Sync n's waiters are done; the next one's arrived while it ran, and one
	 * of them leads it. Both words change, so a waiter between reading its
	 * word and sleeping does not sleep through this.
	 */
	k = (int)(n & 1);
	s->wake[k]++;
	s->wake[k ^ 1]++;
	done = s->waiting[k] > 0;
	next = s->waiting[k ^ 1] > 0;
	pthread_mutex_unlock(&S->mu);
	if (done)
		wake(&s->wake[k], INT_MAX);
	if (next)
		wake(&s->wake[k ^ 1], 1);
	lock();
}

int sync_shared(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -1;
	return sync_shared_dev(fd, st.st_dev);
}

int sync_shared_dev(int fd, dev_t dev)
{
	struct slot *s;
	uint64_t ticket;
	int err;

#ifdef FRUGAL_TEST_NO_SYNC
	/*
	 * The negative control of the power-loss test (build/nosync/frugal, never
	 * installed): every durability sync is skipped, and the test must see losses.
	 */
	lock();
	S->calls++;
	pthread_mutex_unlock(&S->mu);
	return 0;
#endif
	lock();
	S->calls++;
	if ((s = slot_for(dev)) == NULL) {
		/* more file systems than slots: no sharing, still durable (names too) */
		pthread_mutex_unlock(&S->mu);
		return syncfs(fd);
	}
	/* a sync already running may have started before our writes: we need the next one */
	ticket = s->started + 1;
	while (s->completed < ticket) {
		if (!s->running) {
			lead(s, fd);
		} else {
			int slept = wait_completion(s, ticket);

			if (s->running && s->completed < ticket) {
				S->idle_wakes += slept;
				/* a leader process that died mid-sync never completes it: take over */
				if (s->leader != (pid_t)daemon_self() && kill(s->leader, 0) < 0 && errno == ESRCH)
					s->running = 0;
			}
		}
	}
	/* the sync numbered `ticket` covered us, or a later one whose result is as good */
	err = s->err[s->completed & 1];
	pthread_mutex_unlock(&S->mu);
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

/* a counter of the shared state, read under its mutex (the workers and the helpers write them) */
static unsigned long counter(const unsigned long *c)
{
	unsigned long n;

	lock();
	n = *c;
	pthread_mutex_unlock(&S->mu);
	return n;
}

unsigned long sync_shared_calls(void) { return counter(&S->calls); }
unsigned long sync_shared_syncs(void) { return counter(&S->syncs); }
unsigned long sync_shared_idle_wakes(void) { return counter(&S->idle_wakes); }
