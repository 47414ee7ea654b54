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

static int generic_one(void *arg, const char *addr, char *res, size_t cap)
{
	return smtp_generic_addr(arg, addr, res, cap);
}

int smtp_generic_header(struct smtp_generic *g, const char *hdr, size_t len, char *out, size_t cap,
    size_t *outlen)
{
	if (map_list_empty(g->maps) || cleanup_header_class(hdr, len) == CLEANUP_HDR_NONE)
		return 0;
	/* the splice NUL-terminates, so a header needs one byte less than cap */
	return cleanup_header_rewrite(hdr, len, generic_one, g, out, cap, outlen);
}
