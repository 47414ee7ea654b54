/*
 * smtpd/greylist.h: the greylisting table (postgrey's triplets, in-process).
 * A fixed table made once from the budget, keyed by a seeded 64-bit hash of
 * (client network, sender, recipient); every operation is O(1); full, it
 * evicts the oldest entry instead of growing. Pure: no I/O, no logging, no
 * configuration. Its on-disk form is text (greylist_format_*,
 * greylist_load), written and read by smtpd/greylisting.c.
 */
#ifndef FRUGAL_SMTPD_GREYLIST_H
#define FRUGAL_SMTPD_GREYLIST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define GREYLIST_NETLEN 17   /* address family, then 16 bytes of masked address */

struct greylist;

struct greylist_times {
	uint32_t delay;          /* greylist_delay: a retry before this is deferred again */
	uint32_t retry_window;   /* greylist_retry_window: a first-seen triplet is forgotten after this */
	uint32_t max_age;        /* greylist_max_age: a passed triplet is forgotten this long after last seen */
};

enum greylist_verdict {
	GREYLIST_NEW,            /* first sight (or forgotten): defer */
	GREYLIST_EARLY,          /* seen, but the delay has not passed: defer */
	GREYLIST_PASSED,         /* the first retry after the delay: accept, and remember it */
	GREYLIST_KNOWN,          /* passed before: accept */
};

/* One record of the store: what greylist_format_record writes and greylist_parse_record reads. */
struct greylist_record {
	uint64_t key;
	uint32_t first, last;    /* first and last seen, seconds since the epoch */
	int passed;
};

/* The client's network: IPv4 (also IPv4-mapped IPv6) cut to v4prefix bits, IPv6 to v6prefix. */
void greylist_net(const struct sockaddr_storage *ss, int v4prefix, int v6prefix,
    unsigned char net[GREYLIST_NETLEN]);

struct greylist *greylist_new(unsigned entries);   /* mem_alloc'd; NULL when the budget says no */
void greylist_free(struct greylist *g);
size_t greylist_bytes(unsigned entries);          /* what greylist_new(entries) allocates */

/*
 * The triplet's key, with postgrey's normalisation: both addresses lower
 * case; the sender's +extension dropped and each standalone run of digits
 * in its local part made "#" (VERP and SRS senders are one sender).
 */
uint64_t greylist_triplet(const struct greylist *g, const unsigned char net[GREYLIST_NETLEN],
    const char *sender, const char *rcpt);

/* Record one attempt of key at now. *age: seconds since the triplet was first seen. */
enum greylist_verdict greylist_check(struct greylist *g, uint64_t key, uint32_t now,
    const struct greylist_times *t, uint32_t *age);

unsigned greylist_used(const struct greylist *g);
unsigned greylist_capacity(const struct greylist *g);
unsigned long greylist_evicted(const struct greylist *g);   /* live entries given up for newcomers */
int greylist_dirty(const struct greylist *g);               /* changed since the last greylist_snapshot */

/*
 * The store, text: "frugal-greylist 1 SEED\n" then one "KEY FIRST LAST P\n"
 * per entry (KEY and SEED 16 hex digits, times in decimal seconds, P 0 or 1),
 * oldest first. greylist_snapshot copies the live entries (mem_alloc'd,
 * *n of them, oldest first; NULL with *n 0 when empty or out of memory) so
 * a worker thread can write them while the loop goes on.
 */
struct greylist_record *greylist_snapshot(struct greylist *g, size_t *n);
uint64_t greylist_seed(const struct greylist *g);
int greylist_format_header(char *buf, size_t len, uint64_t seed);
int greylist_format_record(char *buf, size_t len, const struct greylist_record *r);
/* One line without its newline: 0, or -1 when it is not a well-formed record. */
int greylist_parse_record(const char *line, size_t len, struct greylist_record *r);

/*
 * Load a store into an empty table (it takes the file's seed, so keys stay
 * valid). Expired records are dropped, malformed ones counted in *bad.
 * Returns the entries loaded, or -1 when the header is not a store's.
 */
long greylist_load(struct greylist *g, const char *buf, size_t len, uint32_t now,
    const struct greylist_times *t, unsigned long *bad);

#endif
