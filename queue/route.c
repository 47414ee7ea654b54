/*
 * queue/route.c: which delivery agent and which next hop a recipient goes
 * to (the part of Postfix's trivial-rewrite that reads transport_maps),
 * and which transports wait for a flush (defer_transports). Owns its open
 * tables; called on the loop by qmgr.c when a message is loaded.
 *
 * transport(5) semantics: the table is searched for the full address, the
 * address without its extension (recipient_delimiter), the domain, each
 * parent domain as ".parent", then "*". A value is "transport:nexthop";
 * an empty transport keeps the address's default agent, an empty next hop
 * keeps the default destination. error:TEXT and discard:TEXT carry their
 * text in the next-hop field.
 */
#include "queue/queue_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/mem.h"

struct router {
	struct map_list *maps;
	char **defer;            /* defer_transports, owned */
	char  *relayhost;        /* owned; "" when unset */
	char  *delim;            /* recipient_delimiter, owned */
	char  *mailbox_tr;       /* mailbox_transport, owned ("" unset) */
	char  *virtual_tr;       /* virtual_transport, owned ("virtual" by default) */
};

struct router *router_new(const struct conf *c, char *err, size_t errlen)
{
	struct router *rt;
	const char *v;

	if ((rt = mem_calloc(1, sizeof *rt)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	v = conf_str(c, "transport_maps", 0);
	if ((rt->maps = map_list_open(v ? v : "", err, errlen)) == NULL)
		goto fail;
	v = conf_str(c, "relayhost", 0);
	if ((rt->relayhost = mem_strdup(v ? v : "")) == NULL)
		goto nomem;
	v = conf_str(c, "recipient_delimiter", 0);
	if ((rt->delim = mem_strdup(v ? v : "")) == NULL)
		goto nomem;
	if ((rt->defer = conf_list(c, "defer_transports", 0)) == NULL)
		goto nomem;
	v = conf_str(c, "mailbox_transport", 0);
	if ((rt->mailbox_tr = mem_strdup(v ? v : "")) == NULL)
		goto nomem;
	v = conf_str(c, "virtual_transport", 0);
	if ((rt->virtual_tr = mem_strdup(v && *v ? v : "virtual")) == NULL)
		goto nomem;
	return rt;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	router_free(rt);
	return NULL;
}

void router_free(struct router *rt)
{
	if (rt == NULL)
		return;
	map_list_close(rt->maps);
	conf_list_free(rt->defer);
	mem_free(rt->relayhost);
	mem_free(rt->delim);
	mem_free(rt->mailbox_tr);
	mem_free(rt->virtual_tr);
	mem_free(rt);
}

int router_deferred(const struct router *rt, const char *transport)
{
	char **p;

	for (p = rt->defer; p && *p; p++)
		if (strcasecmp(*p, transport) == 0)
			return 1;
	return 0;
}

const char *router_relayhost(const struct router *rt)
{
	return rt->relayhost;
}

/* 1 found (*v set), 0 not, -1 error */
static int lookup(struct router *rt, const char *addr, char **v)
{
	char key[1100];
	const char *at = strrchr(addr, '@'), *dom, *p;
	int rc;

	if ((rc = map_list_lookup(rt->maps, addr, v)) != 0)
		return rc;
	/* without the extension: user+ext@domain -> user@domain */
	if (*rt->delim && at) {
		size_t cut = map_addr_ext(addr, rt->delim);   /* Postfix's split_addr rules */
		if (cut > 0 && addr + cut < at) {
			snprintf(key, sizeof key, "%.*s%s", (int)cut, addr, at);
			if ((rc = map_list_lookup(rt->maps, key, v)) != 0)
				return rc;
		}
	}
	if (at == NULL)
		return map_list_lookup(rt->maps, "*", v);
	dom = at + 1;
	if ((rc = map_list_lookup(rt->maps, dom, v)) != 0)
		return rc;
	for (p = strchr(dom, '.'); p; p = strchr(p + 1, '.')) {
		if ((rc = map_list_lookup(rt->maps, p, v)) != 0)   /* ".parent.example" */
			return rc;
	}
	return map_list_lookup(rt->maps, "*", v);
}

/* "transport:nexthop" into out; an empty part keeps what out holds. */
static void split_value(char *v, struct route *out)
{
	char *colon = strchr(v, ':');

	if (colon)
		*colon = '\0';
	if (*v)
		snprintf(out->transport, sizeof out->transport, "%s", v);
	if (colon && colon[1])
		snprintf(out->nexthop, sizeof out->nexthop, "%s", colon + 1);
	else if (*v && (strcasecmp(v, "error") == 0 || strcasecmp(v, "discard") == 0))
		out->nexthop[0] = '\0';
}

int router_mailbox(const struct router *rt, int is_virtual, struct route *out)
{
	const char *v = is_virtual ? rt->virtual_tr : rt->mailbox_tr;
	char buf[sizeof out->transport + sizeof out->nexthop + 2];

	if (*v == '\0' || strcasecmp(v, is_virtual ? "virtual" : "local") == 0)
		return 0;
	snprintf(buf, sizeof buf, "%s", v);
	split_value(buf, out);
	return 1;
}

int router_lookup(struct router *rt, const char *addr, const char *def_transport,
    const char *def_nexthop, struct route *out)
{
	char *v = NULL;
	int rc;

	snprintf(out->transport, sizeof out->transport, "%s", def_transport);
	snprintf(out->nexthop, sizeof out->nexthop, "%s", def_nexthop);
	if (map_list_empty(rt->maps))
		return 0;
	if ((rc = lookup(rt, addr, &v)) <= 0)
		return rc;
	split_value(v, out);
	mem_free(v);
	return 1;
}

/* A domain as ETRN takes it: labels of letters, digits and '-', an optional leading '.' (subdomains too). */
int queue_flush_domain_valid(const char *d)
{
	size_t n = strlen(d), i;

	if (n == 0 || n > 253)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)d[i];
		if (!(isalnum(ch) || ch == '-' || ch == '.'))
			return 0;
		if (ch == '.' && i > 0 && d[i - 1] == '.')
			return 0;
	}
	return d[n - 1] != '.';
}
