/*
 * smtpd/anvil.h: per-client connection counts and event rates, Postfix's
 * anvil(8) in-process. A fixed table made once from the budget; every
 * operation is O(1) (a hash lookup, list splices); it never grows.
 */
#ifndef FRUGAL_SMTPD_ANVIL_H
#define FRUGAL_SMTPD_ANVIL_H

#include <stddef.h>
#include <sys/socket.h>

#define ANVIL_KEYLEN 17     /* address family, then 16 bytes of (masked) address */
#define ANVIL_NONE   (-1)   /* no entry: exempt, untracked or no table */

enum anvil_event { ANVIL_CONN, ANVIL_MAIL, ANVIL_RCPT, ANVIL_AUTH, ANVIL_EVENTS };

struct anvil;

/* The client's key: IPv4 as is (also IPv4-mapped IPv6), IPv6 cut to its first v6prefix bits. */
void anvil_key(const struct sockaddr_storage *ss, int v6prefix, unsigned char key[ANVIL_KEYLEN]);

struct anvil *anvil_new(unsigned entries);        /* mem_alloc'd; NULL when the budget says no */
void anvil_free(struct anvil *a);
size_t anvil_bytes(unsigned entries);             /* what anvil_new(entries) allocates */

/*
 * A connection from key begins: its entry's index, with *count its live
 * connections and *rate its connections in the current window, both
 * counting this one. ANVIL_NONE when every entry is busy: live, or idle
 * for less than unit (those are never given up, so churn cannot flush
 * what the table knows); the caller then goes without.
 */
int  anvil_connect(struct anvil *a, const unsigned char key[ANVIL_KEYLEN], double now, double unit,
    int *count, int *rate);
void anvil_disconnect(struct anvil *a, int slot, double now);
/* One more event for a live entry: its count in the current window, this one included. */
int  anvil_event(struct anvil *a, int slot, enum anvil_event ev, double now, double unit);

unsigned anvil_used(const struct anvil *a);       /* entries holding a client */
unsigned anvil_capacity(const struct anvil *a);
unsigned long anvil_untracked(const struct anvil *a); /* connections refused an entry so far */

#endif
