/*
 * queue/smtp_generic.c: smtp_generic_maps on the way out (see
 * smtp_generic.h). Owns its tables and the few parameters the lookup keys
 * need, per configuration generation; holds no per-message state. A table
 * error is never "no rewrite": it is -1 and the caller defers.
 */
#include "queue/smtp_generic.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/mem.h"
#include "queue/queue.h"

#define ADDR_MAX 1024

struct smtp_generic {
	int    refs;
	struct map_list *maps;   /* owned */
	char **mydest;           /* mydestination, as written; conf_list_free() */
	char   myorigin[256];
	char   delims[32];       /* recipient_delimiter */
};

struct smtp_generic *smtp_generic_open(const struct conf *c, char *err, size_t errlen)
{
	struct smtp_generic *g = mem_calloc(1, sizeof *g);
	const char *v;

	if (g == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	g->refs = 1;
	if ((g->maps = map_list_open(conf_str(c, "smtp_generic_maps", 0), err, errlen)) == NULL)
		goto fail;
	if ((g->mydest = conf_list(c, "mydestination", 0)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	v = conf_str(c, "myorigin", 0);
	if (v == NULL || *v == '\0')
		v = conf_str(c, "myhostname", 0);
	snprintf(g->myorigin, sizeof g->myorigin, "%s", v ? v : "localhost");
	v = conf_str(c, "recipient_delimiter", 0);
	snprintf(g->delims, sizeof g->delims, "%s", v ? v : "");
	return g;
fail:
	smtp_generic_unref(g);
	return NULL;
}

struct smtp_generic *smtp_generic_ref(struct smtp_generic *g)
{
	if (g)
		g->refs++;
	return g;
}

void smtp_generic_unref(struct smtp_generic *g)
{
	if (g == NULL || --g->refs > 0)
		return;
	map_list_close(g->maps);
	if (g->mydest)
		conf_list_free(g->mydest);
	mem_free(g);
}

/* generic(5): the bare "user" form is for $myorigin, $mydestination (plain names) and localhost */
static int local_domain(const struct smtp_generic *g, const char *domain)
{
	int i;

	if (strcasecmp(domain, g->myorigin) == 0 || strcasecmp(domain, "localhost") == 0)
		return 1;
	for (i = 0; g->mydest[i]; i++)
		if (strcasecmp(g->mydest[i], domain) == 0)
			return 1;
	return 0;
}

int smtp_generic_addr(struct smtp_generic *g, const char *addr, char *out, size_t outlen)
{
	const char *at = strrchr(addr, '@'), *res, *rat;
	char *v = NULL, **items = NULL;
	int rc, n, llen;

	if (*addr == '\0' || map_list_empty(g->maps))
		return 0;   /* the null sender is never mapped */
	rc = map_list_lookup_ext(g->maps, addr, at && at[1] ? local_domain(g, at + 1) : 1, g->delims, &v, NULL);
	if (rc <= 0)
		return rc;
	if ((items = conf_split_list(v)) == NULL || items[0] == NULL) {
		rc = items ? 0 : -1;
		goto done;
	}
	res = items[0];
	if (*res == '@') {   /* "@other": the same user in the other domain */
		llen = at ? (int)(at - addr) : (int)strlen(addr);
		n = snprintf(out, outlen, "%.*s%s", llen, addr, res);
	} else {
		rat = strrchr(res, '@');
		n = snprintf(out, outlen, "%s%s%s", res, rat ? "" : "@", rat ? "" : g->myorigin);
	}
	rc = n < 0 || (size_t)n >= outlen ? -1 : strcmp(out, addr) != 0;
done:
	if (items)
		conf_list_free(items);
	mem_free(v);
	return rc;
}

struct hdr_state {
	struct smtp_generic *g;
	const char *hdr;
	size_t base;        /* where the value starts in hdr */
	size_t done;        /* bytes of hdr already in out */
	char  *out;
	size_t cap, used;
	int    changed, failed;
};

static int put(struct hdr_state *h, const char *p, size_t n)
{
	if (h->used + n > h->cap)
		return -1;
	memcpy(h->out + h->used, p, n);
	h->used += n;
	return 0;
}

static int one_addr(void *arg, size_t start, size_t end)
{
	struct hdr_state *h = arg;
	char addr[ADDR_MAX], res[ADDR_MAX];
	int rc;

	start += h->base;
	end += h->base;
	if (end - start >= sizeof addr)
		return 0;   /* longer than any address: left as it is */
	memcpy(addr, h->hdr + start, end - start);
	addr[end - start] = '\0';
	if ((rc = smtp_generic_addr(h->g, addr, res, sizeof res)) < 0) {
		h->failed = 1;
		return -1;
	}
	if (rc == 0)
		return 0;
	if (put(h, h->hdr + h->done, start - h->done) < 0 || put(h, res, strlen(res)) < 0) {
		h->failed = 1;
		return -1;
	}
	h->done = end;
	h->changed = 1;
	return 0;
}

int smtp_generic_header(struct smtp_generic *g, const char *hdr, size_t len, char *out, size_t cap,
    size_t *outlen)
{
	const char *colon = memchr(hdr, ':', len);
	struct hdr_state h;

	if (colon == NULL || map_list_empty(g->maps) || cleanup_header_class(hdr, len) == CLEANUP_HDR_NONE)
		return 0;
	memset(&h, 0, sizeof h);
	h.g = g;
	h.hdr = hdr;
	h.base = (size_t)(colon + 1 - hdr);
	h.done = 0;
	h.out = out;
	h.cap = cap;
	if (cleanup_addr_scan(hdr + h.base, len - h.base, one_addr, &h) != 0 || h.failed)
		return -1;
	if (!h.changed)
		return 0;
	if (put(&h, hdr + h.done, len - h.done) < 0)
		return -1;
	*outlen = h.used;
	return 1;
}
