/*
 * smtpd/anvil.c: per-client connection counts and event rates, Postfix's
 * anvil(8) in miniature and in-process (see anvil.h).
 *
 * One allocation holds everything: the entries, a hash bucket array and
 * their links, so the memory is fixed when the table is made and charged to
 * the budget (core/mem). Per event: one hash lookup (a seeded FNV-1a, so a
 * client cannot pick addresses that chain up), and list splices by index.
 *
 * What it knows must survive a flood of addresses (a botnet that wants the
 * table to forget a heavy client). An entry with live connections is never
 * given up; an idle one is only given up once it has been idle for a whole
 * rate window, when its counts would have restarted anyway. Idle entries
 * wait on an LRU list in the order they went idle, so the candidate is the
 * list's head. When the head is too young the newcomer gets no entry
 * (ANVIL_NONE): the caller lets it in unlimited, as Postfix's smtpd does
 * when anvil does not answer, and the table's knowledge stays intact.
 *
 * It never does I/O, logs nothing and reads no configuration.
 */
#include "smtpd/anvil.h"

#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/mem.h"

struct anvil_entry {
	unsigned char key[ANVIL_KEYLEN];
	unsigned char used;
	int conns;               /* live connections */
	int n[ANVIL_EVENTS];     /* events in the current window */
	double start;            /* the window's start (Postfix: one window for every rate) */
	double idle_since;       /* when conns last fell to 0 (LRU order) */
	int hnext;               /* next in the hash bucket's chain, -1 ends */
	int prev, next;          /* idle LRU list (conns == 0) or the free list (next only) */
};

struct anvil {
	unsigned cap, used, mask;   /* entries; used ones; buckets - 1 (a power of two) */
	uint32_t seed;
	int lru_head, lru_tail;     /* idle entries, oldest first */
	int free_head;              /* never-used or released entries */
	unsigned long untracked;
	int *bucket;                /* mask + 1 chain heads, in the same block */
	struct anvil_entry e[];
};

static unsigned buckets_for(unsigned entries)
{
	unsigned b = 1;

	while (b < entries)
		b <<= 1;
	return b;
}

size_t anvil_bytes(unsigned entries)
{
	return sizeof(struct anvil) + (size_t)entries * sizeof(struct anvil_entry) +
	    (size_t)buckets_for(entries) * sizeof(int);
}

void anvil_key(const struct sockaddr_storage *ss, int v6prefix, unsigned char key[ANVIL_KEYLEN])
{
	memset(key, 0, ANVIL_KEYLEN);
	if (ss->ss_family == AF_INET) {
		key[0] = AF_INET;
		memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
		static const unsigned char mapped[12] = { 0,0,0,0,0,0,0,0,0,0,0xff,0xff };
		int i;

		if (memcmp(a, mapped, 12) == 0) {   /* ::ffff:a.b.c.d is the IPv4 client */
			key[0] = AF_INET;
			memcpy(key + 1, a + 12, 4);
			return;
		}
		key[0] = AF_INET6;
		if (v6prefix < 0 || v6prefix > 128)
			v6prefix = 128;
		for (i = 0; i < 16; i++) {
			int bits = v6prefix - 8 * i;
			if (bits >= 8)
				key[1 + i] = a[i];
			else if (bits > 0)
				key[1 + i] = a[i] & (unsigned char)(0xff << (8 - bits));
		}
	} else {
		key[0] = (unsigned char)ss->ss_family;
	}
}

struct anvil *anvil_new(unsigned entries)
{
	struct anvil *a;
	unsigned i, nb;

	if (entries == 0)
		entries = 1;
	nb = buckets_for(entries);
	if ((a = mem_alloc(anvil_bytes(entries))) == NULL)
		return NULL;
	memset(a, 0, sizeof *a);
	a->cap = entries;
	a->mask = nb - 1;
	a->bucket = (int *)(void *)&a->e[entries];
	for (i = 0; i < nb; i++)
		a->bucket[i] = -1;
	for (i = 0; i < entries; i++) {
		memset(&a->e[i], 0, sizeof a->e[i]);
		a->e[i].hnext = -1;
		a->e[i].prev = -1;
		a->e[i].next = i + 1 < entries ? (int)i + 1 : -1;
	}
	a->free_head = 0;
	a->lru_head = a->lru_tail = -1;
	a->seed = (uint32_t)time(NULL) ^ ((uint32_t)getpid() << 16) ^ (uint32_t)(uintptr_t)a;
	return a;
}

void anvil_free(struct anvil *a)
{
	mem_free(a);
}

static unsigned hash(const struct anvil *a, const unsigned char *k)
{
	uint32_t h = 2166136261u ^ a->seed;
	int i;

	for (i = 0; i < ANVIL_KEYLEN; i++)
		h = (h ^ k[i]) * 16777619u;
	h ^= h >> 15;
	return h & a->mask;
}

static void lru_unlink(struct anvil *a, int i)
{
	struct anvil_entry *e = &a->e[i];

	if (e->prev >= 0)
		a->e[e->prev].next = e->next;
	else
		a->lru_head = e->next;
	if (e->next >= 0)
		a->e[e->next].prev = e->prev;
	else
		a->lru_tail = e->prev;
	e->prev = e->next = -1;
}

static void lru_append(struct anvil *a, int i)
{
	struct anvil_entry *e = &a->e[i];

	e->next = -1;
	e->prev = a->lru_tail;
	if (a->lru_tail >= 0)
		a->e[a->lru_tail].next = i;
	else
		a->lru_head = i;
	a->lru_tail = i;
}

static void hash_unlink(struct anvil *a, int i)
{
	int *pp = &a->bucket[hash(a, a->e[i].key)];

	while (*pp >= 0 && *pp != i)
		pp = &a->e[*pp].hnext;
	if (*pp == i)
		*pp = a->e[i].hnext;
	a->e[i].hnext = -1;
}

/* The window restarts once unit has passed: all counts together, as Postfix's anvil. */
static void window(struct anvil_entry *e, double now, double unit)
{
	if (now - e->start >= unit || now < e->start) {
		e->start = now;
		memset(e->n, 0, sizeof e->n);
	}
}

int anvil_connect(struct anvil *a, const unsigned char key[ANVIL_KEYLEN], double now, double unit,
    int *count, int *rate)
{
	unsigned b = hash(a, key);
	struct anvil_entry *e;
	int i;

	for (i = a->bucket[b]; i >= 0; i = a->e[i].hnext)
		if (memcmp(a->e[i].key, key, ANVIL_KEYLEN) == 0)
			break;
	if (i < 0) {
		if ((i = a->free_head) >= 0) {
			a->free_head = a->e[i].next;
		} else if ((i = a->lru_head) >= 0 && now - a->e[i].idle_since >= unit) {
			lru_unlink(a, i);   /* idle a whole window: nothing it knew still counts */
			hash_unlink(a, i);
			a->used--;
		} else {
			a->untracked++;
			*count = *rate = 0;
			return ANVIL_NONE;
		}
		e = &a->e[i];
		memcpy(e->key, key, ANVIL_KEYLEN);
		e->used = 1;
		e->conns = 0;
		memset(e->n, 0, sizeof e->n);
		e->start = now;
		e->prev = e->next = -1;
		e->hnext = a->bucket[b];
		a->bucket[b] = i;
		a->used++;
	} else {
		e = &a->e[i];
		if (e->conns == 0)
			lru_unlink(a, i);
	}
	e->conns++;
	window(e, now, unit);
	*count = e->conns;
	*rate = ++e->n[ANVIL_CONN];
	return i;
}

void anvil_disconnect(struct anvil *a, int slot, double now)
{
	struct anvil_entry *e;

	if (a == NULL || slot < 0 || (unsigned)slot >= a->cap)
		return;
	e = &a->e[slot];
	if (!e->used || e->conns <= 0)
		return;
	if (--e->conns == 0) {
		e->idle_since = now;
		lru_append(a, slot);
	}
}

int anvil_event(struct anvil *a, int slot, enum anvil_event ev, double now, double unit)
{
	struct anvil_entry *e;

	if (a == NULL || slot < 0 || (unsigned)slot >= a->cap || ev < 0 || ev >= ANVIL_EVENTS)
		return 0;
	e = &a->e[slot];
	window(e, now, unit);
	return ++e->n[ev];
}

unsigned anvil_used(const struct anvil *a) { return a ? a->used : 0; }
unsigned anvil_capacity(const struct anvil *a) { return a ? a->cap : 0; }
unsigned long anvil_untracked(const struct anvil *a) { return a ? a->untracked : 0; }
