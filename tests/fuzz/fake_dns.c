/*
 * tests/fuzz/fake_dns.c: stands in for core/dns.c's dns_lookup and
 * dns_cancel (fake_dns.h). One question at a time, as an SPF check asks.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fake_dns.h"

static struct {
	int busy;
	char name[DNS_NAME_MAX + 1];
	enum dns_type t;
	dns_cb cb;
	void *arg;
} q;
static char handle;   /* what a struct dns_query * points at */
static char resolver; /* and a struct dns * */

struct dns *fake_dns(void)
{
	return (struct dns *)&resolver;
}

struct dns_query *dns_lookup(struct dns *d, const char *name, enum dns_type t, dns_cb cb, void *arg)
{
	if (strlen(name) > DNS_NAME_MAX || name[0] == '\0') {
		errno = EINVAL;
		return NULL;
	}
	if (q.busy)
		__builtin_trap();   /* a second question while one waits: the check asks one at a time */
	q.busy = 1;
	snprintf(q.name, sizeof q.name, "%s", name);
	q.t = t;
	q.cb = cb;
	q.arg = arg;
	return (struct dns_query *)&handle;
}

void dns_cancel(struct dns_query *h)
{
	if (h)
		q.busy = 0;
}

int fake_dns_pending(char *name, size_t len, enum dns_type *t, dns_cb *cb, void **arg)
{
	if (!q.busy)
		return 0;
	if (name == NULL)
		return 1;
	snprintf(name, len, "%s", q.name);
	*t = q.t;
	*cb = q.cb;
	*arg = q.arg;
	q.busy = 0;
	return 1;
}
