/*
 * smtpd/anvil.c: per-client event rates, Postfix's anvil(8) in miniature
 * and in-process: a fixed table of ANVIL_SLOTS clients (made on first use,
 * from the budget), each counting events in the current window of
 * anvil_rate_time_unit. When the table is full, the client whose window is
 * oldest gives its slot up: a flood of addresses can make the table forget,
 * never make it grow. Used by AUTH (smtpd_client_auth_rate_limit).
 */
#include "smtpd/smtpd_int.h"

#include <string.h>

#include "core/mem.h"

#define ANVIL_SLOTS 1024   /* clients remembered at once (about 40 KiB) */
#define ANVIL_PROBE 8      /* slots looked at per client: a bounded search */

struct anvil_slot {
	unsigned char key[17];   /* family, then the address (16 bytes; IPv4 in the first 4) */
	unsigned char used;
	int count;
	double start;            /* the window's start */
};

struct anvil {
	struct anvil_slot slot[ANVIL_SLOTS];
};

static void client_key(const struct sockaddr_storage *ss, unsigned char key[17])
{
	memset(key, 0, 17);
	key[0] = (unsigned char)ss->ss_family;
	if (ss->ss_family == AF_INET)
		memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	else if (ss->ss_family == AF_INET6)
		memcpy(key + 1, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
}

static unsigned hash(const unsigned char *k)
{
	unsigned h = 2166136261u;
	int i;

	for (i = 0; i < 17; i++)
		h = (h ^ k[i]) * 16777619u;
	return h;
}

int anvil_hit(struct anvil **ap, const struct sockaddr_storage *ss, double now, double unit)
{
	struct anvil *a = *ap;
	struct anvil_slot *s, *victim = NULL;
	unsigned char key[17];
	unsigned h;
	int i;

	if (a == NULL && (a = *ap = mem_calloc(1, sizeof *a)) == NULL)
		return -1;
	client_key(ss, key);
	h = hash(key);
	for (i = 0; i < ANVIL_PROBE; i++) {
		s = &a->slot[(h + (unsigned)i) % ANVIL_SLOTS];
		if (s->used && memcmp(s->key, key, sizeof key) == 0) {
			if (now - s->start >= unit) {   /* a new window */
				s->start = now;
				s->count = 0;
			}
			return ++s->count;
		}
		if (!s->used || now - s->start >= unit) {
			if (victim == NULL || victim->used)
				victim = s;       /* a free or expired slot */
		} else if (victim == NULL || (victim->used && s->start < victim->start)) {
			victim = s;           /* else the oldest window */
		}
	}
	memcpy(victim->key, key, sizeof key);
	victim->used = 1;
	victim->start = now;
	victim->count = 1;
	return 1;
}

void anvil_free(struct anvil *a)
{
	mem_free(a);
}
