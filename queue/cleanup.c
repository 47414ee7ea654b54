/*
 * queue/cleanup.c: address rewriting when a message is received, the part
 * of Postfix's cleanup(8) frugal does: sender_canonical_maps and
 * recipient_canonical_maps on the envelope, masquerade_domains on the
 * envelope sender. Owns those tables (opened per configuration generation
 * with the resolver, which holds this state). Rewrites envelope addresses
 * only, never header lines (DESIGN.md, "Addresses"). Must never let a table
 * error pass as "no rewrite": that is -1 and a 451.
 */
#include "queue/queue_int.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/mem.h"

#define CANON_ROUNDS 10    /* Postfix cleanup_map11: a canonical loop stops here */
#define ADDR_MAX 1024      /* longer results are refused as a table error, never truncated */

struct cleanup {
	struct map_list *scanon;    /* sender_canonical_maps; owned */
	struct map_list *rcanon;    /* recipient_canonical_maps; owned */
	char **masq;                /* masquerade_domains, lower-case, "!x" exceptions; conf_list_free() */
};

struct cleanup *cleanup_new(const struct conf *c, char *err, size_t errlen)
{
	struct cleanup *cl;
	const char *v;
	int i;

	if ((cl = mem_calloc(1, sizeof *cl)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	v = conf_str(c, "sender_canonical_maps", 0);
	if ((cl->scanon = map_list_open(v ? v : "", err, errlen)) == NULL)
		goto fail;
	v = conf_str(c, "recipient_canonical_maps", 0);
	if ((cl->rcanon = map_list_open(v ? v : "", err, errlen)) == NULL)
		goto fail;
	if ((cl->masq = conf_list(c, "masquerade_domains", 0)) == NULL) {
		snprintf(err, errlen, "masquerade_domains: out of memory");
		goto fail;
	}
	for (i = 0; cl->masq[i]; i++)
		for (char *p = cl->masq[i]; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
	return cl;
fail:
	cleanup_free(cl);
	return NULL;
}

void cleanup_free(struct cleanup *cl)
{
	if (cl == NULL)
		return;
	map_list_close(cl->scanon);
	map_list_close(cl->rcanon);
	if (cl->masq)
		conf_list_free(cl->masq);
	mem_free(cl);
}

/*
 * Postfix masquerade.c: the first element that is the domain itself or a
 * parent of it decides; "!sub.example.com" keeps that domain and its
 * subdomains as they are. A domain equal to an element is left alone.
 */
const char *cleanup_masquerade(char *const *masq, const char *domain)
{
	size_t dlen = strlen(domain), mlen;
	int i;

	for (i = 0; masq && masq[i]; i++) {
		const char *m = masq[i];
		int excluded = *m == '!';

		m += excluded;
		if ((mlen = strlen(m)) == 0)
			continue;
		if (mlen == dlen) {
			if (strcasecmp(m, domain) == 0)
				return NULL;
		} else if (mlen < dlen && domain[dlen - mlen - 1] == '.' &&
		    strcasecmp(m, domain + dlen - mlen) == 0) {
			return excluded ? NULL : m;
		}
	}
	return NULL;
}

/*
 * One canonical lookup of `in` into out: 1 found (out rewritten), 0 not,
 * -1 table error or a result that does not fit.
 */
static int canon_once(struct resolver *r, struct map_list *l, const char *in, char *out, size_t outlen)
{
	const char *at = strrchr(in, '@'), *delims = resolver_delims(r);
	char *v = NULL, **items = NULL;
	const char *res, *ext = "", *rat;
	size_t unmatched = 0;
	int loc = 1, rc, n, elen = 0, llen;

	if (at && at[1] && (loc = resolver_local_domain(r, at + 1)) < 0)
		return -1;
	if ((rc = map_list_lookup_ext(l, in, loc, delims, &v, &unmatched)) <= 0)
		return rc;
	/* canonical(5) maps one address to one: the first of a list, as Postfix warns and does */
	if ((items = conf_split_list(v)) == NULL || items[0] == NULL) {
		rc = items ? 0 : -1;
		goto done;
	}
	res = items[0];
	if (unmatched) {   /* propagate_unmatched_extensions includes canonical */
		ext = in + unmatched;
		elen = at ? (int)(at - ext) : (int)strlen(ext);
	}
	if (*res == '@') {   /* "@other": the same user in the other domain */
		llen = at ? (int)(at - in) : (int)strlen(in);
		if (unmatched)
			llen = (int)unmatched;
		n = snprintf(out, outlen, "%.*s%.*s%s", llen, in, elen, ext, res);
	} else {
		/* a bare result is in $myorigin (Postfix's append_at_myorigin, done by trivial-rewrite) */
		rat = strrchr(res, '@');
		llen = rat ? (int)(rat - res) : (int)strlen(res);
		n = snprintf(out, outlen, "%.*s%.*s%s%s", llen, res, elen, ext, rat ? "" : "@",
		    rat ? rat : resolver_myorigin(r));
	}
	rc = n < 0 || (size_t)n >= outlen ? -1 : 1;
done:
	if (items)
		conf_list_free(items);
	mem_free(v);
	return rc;
}

static int canonical(struct resolver *r, struct map_list *l, const char *addr, char *out, size_t outlen)
{
	char cur[ADDR_MAX], next[ADDR_MAX];
	int i, rc, changed = 0;

	if (snprintf(cur, sizeof cur, "%s", addr) >= (int)sizeof cur)
		return -1;
	for (i = 0; *cur && !map_list_empty(l) && i < CANON_ROUNDS; i++) {
		if ((rc = canon_once(r, l, cur, next, sizeof next)) < 0)
			return -1;
		if (rc == 0 || strcasecmp(next, cur) == 0)
			break;
		memcpy(cur, next, sizeof cur);
		changed = 1;
	}
	if (snprintf(out, outlen, "%s", cur) >= (int)outlen)
		return -1;
	return changed;
}

int cleanup_sender(struct resolver *r, const char *addr, char *out, size_t outlen)
{
	struct cleanup *cl = resolver_cleanup(r);
	const char *at, *m;
	int rc;

	if ((rc = canonical(r, cl->scanon, addr, out, outlen)) < 0)
		return -1;
	/* masquerade_classes' default includes envelope_sender */
	if ((at = strrchr(out, '@')) != NULL && at[1] && (m = cleanup_masquerade(cl->masq, at + 1)) != NULL) {
		size_t pos = (size_t)(at + 1 - out);

		if (pos + strlen(m) >= outlen)
			return -1;
		memcpy(out + pos, m, strlen(m) + 1);
		rc = 1;
	}
	return rc;
}

int cleanup_rcpt_listed(struct resolver *r, const char *addr)
{
	struct cleanup *cl = resolver_cleanup(r);
	const char *at = strrchr(addr, '@');
	char *v = NULL;
	int loc = 1, rc;

	if (map_list_empty(cl->rcanon))
		return 0;
	if (at && at[1] && (loc = resolver_local_domain(r, at + 1)) < 0)
		return -1;
	rc = map_list_lookup_ext(cl->rcanon, addr, loc, resolver_delims(r), &v, NULL);
	mem_free(v);
	return rc;
}

int cleanup_recipient(struct resolver *r, const char *addr, char *out, size_t outlen)
{
	return canonical(r, resolver_cleanup(r)->rcanon, addr, out, outlen);
}
