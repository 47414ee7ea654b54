/*
 * core/sync.c: the shared sync barrier (see sync.h). One slot per file
 * system (by st_dev): a caller takes a ticket = the number of the next sync
 * to start on that file system; it returns when a sync with that number has
 * completed. The first caller that finds no sync running becomes the leader
 * and issues it; the others wait on the condition variable.
 */
#include "sync.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLOTS 8 /* distinct file systems (queue, mail stores): few */

struct slot {
	dev_t dev;
	int used;
	int running;            /* a syncfs is in progress */
	uint64_t started;       /* syncs started */
	uint64_t completed;     /* syncs finished */
	int err[2];             /* errno of the last two syncs, by parity */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct slot slots[SLOTS];
static unsigned long calls, syncs;

static struct slot *slot_for(dev_t dev)
{
	int i;

	for (i = 0; i < SLOTS; i++)
		if (slots[i].used && slots[i].dev == dev)
			return &slots[i];
	for (i = 0; i < SLOTS; i++)
		if (!slots[i].used) {
			slots[i].used = 1;
			slots[i].dev = dev;
			return &slots[i];
		}
	return NULL;
}

int sync_shared(int fd)
{
	struct stat st;
	struct slot *s;
	uint64_t ticket;
	int err;

	if (fstat(fd, &st) < 0)
		return -1;
	pthread_mutex_lock(&mu);
	calls++;
	if ((s = slot_for(st.st_dev)) == NULL) {
		/* more file systems than slots: no sharing, still durable (names too) */
		pthread_mutex_unlock(&mu);
		return syncfs(fd);
	}
	/* a sync already running may have started before our writes: we need the next one */
	ticket = s->started + 1;
	while (s->completed < ticket) {
		if (!s->running) {
			s->running = 1;
			s->started++;
			syncs++;
			pthread_mutex_unlock(&mu);
			err = syncfs(fd) < 0 ? errno : 0;
			pthread_mutex_lock(&mu);
			s->err[s->started & 1] = err;
			s->completed = s->started;
			s->running = 0;
			pthread_cond_broadcast(&cv);
		} else {
			pthread_cond_wait(&cv, &mu);
		}
	}
	/* the sync numbered `ticket` covered us, or a later one whose result is as good */
	err = s->err[s->completed & 1];
	pthread_mutex_unlock(&mu);
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

unsigned long sync_shared_calls(void)
{
	unsigned long n;

	pthread_mutex_lock(&mu);
	n = calls;
	pthread_mutex_unlock(&mu);
	return n;
}

unsigned long sync_shared_syncs(void)
{
	unsigned long n;

	pthread_mutex_lock(&mu);
	n = syncs;
	pthread_mutex_unlock(&mu);
	return n;
}
