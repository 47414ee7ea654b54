/*
 * smtpd/greylist.c: the greylisting table (see greylist.h), postgrey's
 * triplets in a fixed, budgeted block.
 *
 * One allocation holds the entries, the hash buckets and their links, so
 * the memory is fixed when the table is made and charged to the budget
 * (core/mem). An entry is 32 bytes and a bucket 4: a 64-bit hash of the triplet stands for
 * the strings (postgrey keeps them; a false match needs a 64-bit collision
 * under a seed the sender never sees, and only lets one message skip a
 * delay).
 *
 * Two age-ordered lists by index: first-seen (pending) triplets in the
 * order they came, passed ones in the order they were last seen. When the
 * table is full a newcomer takes the oldest entry: first an expired one,
 * then the oldest pending entry while pending entries hold more than half
 * the table, else the least recently seen passed one. A flood of new
 * triplets (a dictionary attack) so churns among pending entries and
 * cannot flush more than half of what legitimate senders have earned;
 * what it costs is that a real sender's first attempt may be forgotten
 * before its retry during such a flood (it is then greylisted once more).
 *
 * It never does I/O, logs nothing and reads no configuration.
 */
#include "smtpd/greylist.h"

#include <ctype.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/mem.h"

struct greylist_entry {
	uint64_t key;
	uint32_t first, last;    /* first and last seen, seconds */
	int hnext;               /* next in the bucket's chain, -1 ends */
	int prev, next;          /* its age list (or the free list: next only) */
	unsigned char used, passed;
};

enum { L_PENDING, L_PASSED, L_LISTS };

struct greylist {
	unsigned cap, used, mask;      /* entries; used ones; buckets - 1 (a power of two) */
	unsigned count[L_LISTS];       /* entries on each list */
	uint64_t seed;
	int head[L_LISTS], tail[L_LISTS];  /* oldest first */
	int free_head;
	unsigned long evicted;
	int dirty;
	int *bucket;                   /* mask + 1 chain heads, in the same block */
	struct greylist_entry e[];
};

static unsigned buckets_for(unsigned entries)
{
	unsigned b = 1;

	while (b < entries)
		b <<= 1;
	return b;
}

size_t greylist_bytes(unsigned entries)
{
	if (entries == 0)
		entries = 1;
	return sizeof(struct greylist) + (size_t)entries * sizeof(struct greylist_entry) +
	    (size_t)buckets_for(entries) * sizeof(int);
}

void greylist_net(const struct sockaddr_storage *ss, int v4prefix, int v6prefix,
    unsigned char net[GREYLIST_NETLEN])
{
	const unsigned char *a = NULL;
	int bits = 0, len = 0, i;
	static const unsigned char mapped[12] = { 0,0,0,0,0,0,0,0,0,0,0xff,0xff };

	memset(net, 0, GREYLIST_NETLEN);
	if (ss->ss_family == AF_INET) {
		a = (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr;
		len = 4;
	} else if (ss->ss_family == AF_INET6) {
		a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
		len = 16;
		if (memcmp(a, mapped, 12) == 0) {   /* ::ffff:a.b.c.d is the IPv4 client */
			a += 12;
			len = 4;
		}
	} else {
		net[0] = (unsigned char)ss->ss_family;
		return;
	}
	net[0] = len == 4 ? AF_INET : AF_INET6;
	bits = len == 4 ? v4prefix : v6prefix;
	if (bits < 0 || bits > 8 * len)
		bits = 8 * len;
	for (i = 0; i < len; i++) {
		int b = bits - 8 * i;
		if (b >= 8)
			net[1 + i] = a[i];
		else if (b > 0)
			net[1 + i] = a[i] & (unsigned char)(0xff << (8 - b));
	}
}

struct greylist *greylist_new(unsigned entries)
{
	struct greylist *g;
	unsigned i, nb;
	int l;

	if (entries == 0)
		entries = 1;
	nb = buckets_for(entries);
	if ((g = mem_alloc(greylist_bytes(entries))) == NULL)
		return NULL;
	memset(g, 0, sizeof *g);
	g->cap = entries;
	g->mask = nb - 1;
	g->bucket = (int *)(void *)&g->e[entries];
	for (i = 0; i < nb; i++)
		g->bucket[i] = -1;
	for (i = 0; i < entries; i++) {
		memset(&g->e[i], 0, sizeof g->e[i]);
		g->e[i].hnext = -1;
		g->e[i].prev = -1;
		g->e[i].next = i + 1 < entries ? (int)i + 1 : -1;
	}
	for (l = 0; l < L_LISTS; l++)
		g->head[l] = g->tail[l] = -1;
	/* a new store's seed; a loaded store brings its own (greylist_load) */
	{
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		g->seed = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 20) ^
		    (uint64_t)(uintptr_t)g;
	}
	return g;
}

void greylist_free(struct greylist *g)
{
	mem_free(g);
}

/* ---- the key ---------------------------------------------------------------- */

struct hasher { uint64_t h; };

static void feed(struct hasher *h, unsigned char c)
{
	h->h = (h->h ^ c) * 1099511628211ULL;   /* FNV-1a 64 */
}

static uint64_t mix(uint64_t k)   /* MurmurHash3's fmix64: every input bit moves the bucket */
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

static int wordc(int c)
{
	return isalnum(c) || c == '_';
}

/* postgrey's do_sender_substitutions: user+ext@d -> user@d, \b\d+\b -> # in the local part */
static void feed_sender(struct hasher *h, const char *s)
{
	const char *at = strrchr(s, '@'), *end = at ? at : s + strlen(s);
	const char *plus = memchr(s, '+', (size_t)(end - s));
	const char *lend = at && plus ? plus : end;
	const char *p;

	for (p = s; p < lend; ) {
		if (isdigit((unsigned char)*p) && (p == s || !wordc((unsigned char)p[-1]))) {
			const char *q = p;
			while (q < lend && isdigit((unsigned char)*q))
				q++;
			if (q == lend || !wordc((unsigned char)*q)) {
				feed(h, '#');
				p = q;
				continue;
			}
			for (; p < q; p++)
				feed(h, (unsigned char)*p);
			continue;
		}
		feed(h, (unsigned char)tolower((unsigned char)*p));
		p++;
	}
	for (p = end; *p; p++)
		feed(h, (unsigned char)tolower((unsigned char)*p));
}

uint64_t greylist_triplet(const struct greylist *g, const unsigned char net[GREYLIST_NETLEN],
    const char *sender, const char *rcpt)
{
	struct hasher h = { 14695981039346656037ULL ^ g->seed };
	int i;

	for (i = 0; i < GREYLIST_NETLEN; i++)
		feed(&h, net[i]);
	feed(&h, 0);
	feed_sender(&h, sender ? sender : "");
	feed(&h, 0);
	for (; rcpt && *rcpt; rcpt++)
		feed(&h, (unsigned char)tolower((unsigned char)*rcpt));
	return mix(h.h ^ g->seed);
}

/* ---- lists ------------------------------------------------------------------ */

static void list_unlink(struct greylist *g, int i)
{
	struct greylist_entry *e = &g->e[i];
	int l = e->passed ? L_PASSED : L_PENDING;

	if (e->prev >= 0)
		g->e[e->prev].next = e->next;
	else
		g->head[l] = e->next;
	if (e->next >= 0)
		g->e[e->next].prev = e->prev;
	else
		g->tail[l] = e->prev;
	e->prev = e->next = -1;
	g->count[l]--;
}

static void list_append(struct greylist *g, int i)
{
	struct greylist_entry *e = &g->e[i];
	int l = e->passed ? L_PASSED : L_PENDING;

	e->next = -1;
	e->prev = g->tail[l];
	if (g->tail[l] >= 0)
		g->e[g->tail[l]].next = i;
	else
		g->head[l] = i;
	g->tail[l] = i;
	g->count[l]++;
}

static void hash_unlink(struct greylist *g, int i)
{
	int *pp = &g->bucket[g->e[i].key & g->mask];

	while (*pp >= 0 && *pp != i)
		pp = &g->e[*pp].hnext;
	if (*pp == i)
		*pp = g->e[i].hnext;
	g->e[i].hnext = -1;
}

static int expired(const struct greylist_entry *e, uint32_t now, const struct greylist_times *t)
{
	if (now < e->last)   /* the clock went back: keep it */
		return 0;
	return e->passed ? now - e->last > t->max_age : now - e->first > t->retry_window;
}

/* Give up entry i (it leaves its list and chain, then goes to the caller). */
static int take(struct greylist *g, int i, int live)
{
	list_unlink(g, i);
	hash_unlink(g, i);
	g->e[i].used = 0;
	g->used--;
	if (live)
		g->evicted++;
	return i;
}

/* A free entry: the free list, an expired head, else the oldest by the rule at the top. */
static int entry_for_newcomer(struct greylist *g, uint32_t now, const struct greylist_times *t)
{
	int i, l;

	if ((i = g->free_head) >= 0) {
		g->free_head = g->e[i].next;
		return i;
	}
	for (l = 0; l < L_LISTS; l++)
		if (g->head[l] >= 0 && expired(&g->e[g->head[l]], now, t))
			return take(g, g->head[l], 0);
	if (g->head[L_PENDING] >= 0 && (g->count[L_PENDING] > g->cap / 2 || g->head[L_PASSED] < 0))
		return take(g, g->head[L_PENDING], 1);
	return take(g, g->head[L_PASSED], 1);
}

static int find(const struct greylist *g, uint64_t key)
{
	int i;

	for (i = g->bucket[key & g->mask]; i >= 0; i = g->e[i].hnext)
		if (g->e[i].key == key)
			return i;
	return -1;
}

static int insert(struct greylist *g, uint64_t key, uint32_t first, uint32_t last, int passed,
    uint32_t now, const struct greylist_times *t)
{
	int i = entry_for_newcomer(g, now, t);
	struct greylist_entry *e = &g->e[i];

	e->key = key;
	e->first = first;
	e->last = last;
	e->passed = (unsigned char)(passed != 0);
	e->used = 1;
	e->hnext = g->bucket[key & g->mask];
	g->bucket[key & g->mask] = i;
	list_append(g, i);
	g->used++;
	return i;
}

enum greylist_verdict greylist_check(struct greylist *g, uint64_t key, uint32_t now,
    const struct greylist_times *t, uint32_t *age)
{
	int i = find(g, key);
	struct greylist_entry *e;

	g->dirty = 1;
	*age = 0;
	if (i < 0) {
		insert(g, key, now, now, 0, now, t);
		return GREYLIST_NEW;
	}
	e = &g->e[i];
	if (expired(e, now, t)) {
		/* forgotten: a passed triplet unseen for max_age, or a retry after the window */
		list_unlink(g, i);
		e->passed = 0;
		e->first = e->last = now;
		list_append(g, i);
		return GREYLIST_NEW;
	}
	*age = now >= e->first ? now - e->first : 0;
	if (e->passed) {
		list_unlink(g, i);   /* to the young end: least recently seen goes first */
		e->last = now;
		list_append(g, i);
		return GREYLIST_KNOWN;
	}
	e->last = now;
	if (*age < t->delay)
		return GREYLIST_EARLY;   /* stays where it came in: early retries do not buy time */
	list_unlink(g, i);
	e->passed = 1;
	list_append(g, i);
	return GREYLIST_PASSED;
}

unsigned greylist_used(const struct greylist *g) { return g ? g->used : 0; }
unsigned greylist_capacity(const struct greylist *g) { return g ? g->cap : 0; }
unsigned long greylist_evicted(const struct greylist *g) { return g ? g->evicted : 0; }
int greylist_dirty(const struct greylist *g) { return g ? g->dirty : 0; }
uint64_t greylist_seed(const struct greylist *g) { return g->seed; }

/* ---- the store -------------------------------------------------------------- */

#define MAGIC "frugal-greylist 1 "

struct greylist_record *greylist_snapshot(struct greylist *g, size_t *n)
{
	struct greylist_record *v;
	size_t k = 0;
	int l, i;

	*n = 0;
	if (g->used == 0 || (v = mem_alloc(g->used * sizeof *v)) == NULL)
		return NULL;
	/* pending first, then passed, each oldest first: loading them in this order keeps the ages */
	for (l = 0; l < L_LISTS; l++)
		for (i = g->head[l]; i >= 0 && k < g->used; i = g->e[i].next) {
			v[k].key = g->e[i].key;
			v[k].first = g->e[i].first;
			v[k].last = g->e[i].last;
			v[k].passed = g->e[i].passed;
			k++;
		}
	g->dirty = 0;
	*n = k;
	return v;
}

int greylist_format_header(char *buf, size_t len, uint64_t seed)
{
	return snprintf(buf, len, MAGIC "%016" PRIx64 "\n", seed);
}

int greylist_format_record(char *buf, size_t len, const struct greylist_record *r)
{
	return snprintf(buf, len, "%016" PRIx64 " %" PRIu32 " %" PRIu32 " %d\n", r->key, r->first, r->last,
	    r->passed ? 1 : 0);
}

/* exactly 16 lower- or upper-case hex digits */
static int hex64(const char **p, const char *end, uint64_t *out)
{
	uint64_t v = 0;
	int i;

	if (end - *p < 16)
		return -1;
	for (i = 0; i < 16; i++) {
		int c = (unsigned char)(*p)[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -1;
		v = v << 4 | (uint64_t)d;
	}
	*p += 16;
	*out = v;
	return 0;
}

/* 1 to 10 decimal digits that fit 32 bits */
static int dec32(const char **p, const char *end, uint32_t *out)
{
	uint64_t v = 0;
	int n = 0;

	while (*p < end && **p >= '0' && **p <= '9' && n < 11) {
		v = v * 10 + (uint64_t)(**p - '0');
		(*p)++;
		n++;
	}
	if (n == 0 || n > 10 || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int space(const char **p, const char *end)
{
	if (*p >= end || **p != ' ')
		return -1;
	(*p)++;
	return 0;
}

int greylist_parse_record(const char *line, size_t len, struct greylist_record *r)
{
	const char *p = line, *end = line + len;

	if (hex64(&p, end, &r->key) < 0 || space(&p, end) < 0 || dec32(&p, end, &r->first) < 0 ||
	    space(&p, end) < 0 || dec32(&p, end, &r->last) < 0 || space(&p, end) < 0)
		return -1;
	if (end - p != 1 || (*p != '0' && *p != '1'))
		return -1;
	r->passed = *p == '1';
	if (r->last < r->first)
		return -1;
	return 0;
}

long greylist_load(struct greylist *g, const char *buf, size_t len, uint32_t now,
    const struct greylist_times *t, unsigned long *bad)
{
	const char *p = buf, *end = buf + len, *nl;
	size_t mlen = sizeof MAGIC - 1;
	uint64_t seed;
	long n = 0;

	*bad = 0;
	if (len < mlen || memcmp(buf, MAGIC, mlen) != 0)
		return -1;
	p += mlen;
	if (hex64(&p, end, &seed) < 0 || p >= end || *p != '\n')
		return -1;
	p++;
	if (g->used == 0)
		g->seed = seed;   /* the keys in the file were made with it */
	else if (g->seed != seed)
		return -1;
	for (; p < end; p = nl + 1) {
		struct greylist_record r;
		struct greylist_entry probe;

		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL) {
			(*bad)++;   /* a last line cut short (the crash the store may lose) */
			break;
		}
		if (greylist_parse_record(p, (size_t)(nl - p), &r) < 0 || r.last > now + 86400) {
			(*bad)++;
			continue;
		}
		probe.first = r.first;
		probe.last = r.last;
		probe.passed = (unsigned char)r.passed;
		if (expired(&probe, now, t))
			continue;
		if (find(g, r.key) >= 0)
			continue;   /* a duplicate: the first kept */
		insert(g, r.key, r.first, r.last, r.passed, now, t);
		n++;
	}
	g->dirty = 0;
	return n;
}
