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

/* ---- header addresses (Postfix's header_opts.c classes) -------------------- */

static const struct {
	const char *name;
	enum cleanup_hdr cls;
} hdr_names[] = {
	{ "Apparently-To", CLEANUP_HDR_RECIPIENT }, { "Bcc", CLEANUP_HDR_RECIPIENT },
	{ "Cc", CLEANUP_HDR_RECIPIENT }, { "Errors-To", CLEANUP_HDR_SENDER },
	{ "From", CLEANUP_HDR_SENDER }, { "Mail-Followup-To", CLEANUP_HDR_SENDER },
	{ "Reply-To", CLEANUP_HDR_SENDER }, { "Resent-Bcc", CLEANUP_HDR_RECIPIENT },
	{ "Resent-Cc", CLEANUP_HDR_RECIPIENT }, { "Resent-From", CLEANUP_HDR_SENDER },
	{ "Resent-Reply-To", CLEANUP_HDR_RECIPIENT }, { "Resent-Sender", CLEANUP_HDR_SENDER },
	{ "Resent-To", CLEANUP_HDR_RECIPIENT }, { "Return-Receipt-To", CLEANUP_HDR_SENDER },
	{ "Sender", CLEANUP_HDR_SENDER }, { "To", CLEANUP_HDR_RECIPIENT },
};

enum cleanup_hdr cleanup_header_class(const char *line, size_t n)
{
	const char *colon = memchr(line, ':', n);
	size_t len, i;

	if (colon == NULL)
		return CLEANUP_HDR_NONE;
	len = (size_t)(colon - line);
	while (len && (line[len - 1] == ' ' || line[len - 1] == '\t'))   /* "To :" (RFC 822's obsolete form) */
		len--;
	for (i = 0; i < sizeof hdr_names / sizeof hdr_names[0]; i++)
		if (strlen(hdr_names[i].name) == len && strncasecmp(hdr_names[i].name, line, len) == 0)
			return hdr_names[i].cls;
	return CLEANUP_HDR_NONE;
}

int cleanup_headers_wanted(struct resolver *r)
{
	struct cleanup *cl = resolver_cleanup(r);

	return !map_list_empty(cl->scanon) || !map_list_empty(cl->rcanon) || (cl->masq && cl->masq[0]);
}

/* past a quoted string or a (nested) comment starting at v[i]; len when it never ends */
static size_t skip_quoted(const char *v, size_t i, size_t len)
{
	for (i++; i < len && v[i] != '"'; i++)
		if (v[i] == '\\' && i + 1 < len)
			i++;
	return i < len ? i + 1 : len;
}

static size_t skip_comment(const char *v, size_t i, size_t len)
{
	int depth = 0;

	for (; i < len; i++) {
		if (v[i] == '\\' && i + 1 < len)
			i++;
		else if (v[i] == '(')
			depth++;
		else if (v[i] == ')' && --depth == 0)
			return i + 1;
	}
	return len;
}

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * An RFC 5322 address list, read the forgiving way: elements end at a
 * top-level ',' or ';'; "name:" starts a group; an element with <...>
 * has its address there (a source route "@a,@b:" skipped); an element
 * without is an address when its words are one run ("a@b (comment)" is;
 * "John Smith" and "a(c)@b" are left alone).
 */
int cleanup_addr_scan(const char *v, size_t len, cleanup_addr_fn *fn, void *arg)
{
	size_t i = 0, first = 0, last = 0, a, b;
	int angle = 0, words = 0, broken = 0, multi = 0, r;

	while (i <= len) {
		char c = i < len ? v[i] : ',';   /* the end ends the last element */

		if (c == ',' || c == ';') {
			if (!angle && words && !multi && last > first && (r = fn(arg, first, last)) != 0)
				return r;
			angle = words = broken = multi = 0;
			i++;
		} else if (c == '(') {
			i = skip_comment(v, i, len);
			broken = words;
		} else if (is_ws(c)) {
			i++;
			broken = words;
		} else if (c == ':' && !angle) {   /* a group's name: its members follow */
			angle = words = broken = multi = 0;
			i++;
		} else if (c == '<') {
			for (b = i + 1; b < len && v[b] != '>'; b++)
				if (v[b] == '"')
					b = skip_quoted(v, b, len) - 1;
			a = i + 1;
			i = b < len ? b + 1 : len;
			if (a < b && v[a] == '@') {   /* obsolete source route */
				const char *colon = memchr(v + a, ':', b - a);
				a = colon ? (size_t)(colon - v) + 1 : b;
			}
			while (a < b && is_ws(v[a]))
				a++;
			while (b > a && is_ws(v[b - 1]))
				b--;
			if (b > a && (r = fn(arg, a, b)) != 0)
				return r;
			angle = 1;
		} else {   /* a word: atoms, dots, '@', quoted strings */
			if (!words) {
				first = i;
				words = 1;
			} else if (broken) {
				multi = 1;    /* a phrase, unless an angle address follows */
			}
			i = c == '"' ? skip_quoted(v, i, len) : i + 1;
			if (!broken)
				last = i;
		}
	}
	return 0;
}

/* One header's addresses through a per-address function, spliced into out. */
struct hdr_splice {
	cleanup_rewrite_fn *fn;
	void *arg;
	const char *hdr;        /* the whole header */
	size_t base;            /* where its value starts (the scanner's offsets are in the value) */
	size_t done;            /* bytes of hdr already in out */
	char *out;
	size_t outlen, used;
	int changed, failed;
};

static int put_out(struct hdr_splice *h, const char *p, size_t n)
{
	if (h->used + n >= h->outlen)
		return -1;
	memcpy(h->out + h->used, p, n);
	h->used += n;
	h->out[h->used] = '\0';
	return 0;
}

static int splice_one(void *arg, size_t start, size_t end)
{
	struct hdr_splice *h = arg;
	char addr[ADDR_MAX], out[ADDR_MAX];
	int rc;

	start += h->base;
	end += h->base;
	if (end - start >= sizeof addr)
		return 0;   /* longer than any address: left as it is */
	memcpy(addr, h->hdr + start, end - start);
	addr[end - start] = '\0';
	rc = h->fn(h->arg, addr, out, sizeof out);
	if (rc < 0 || (rc == 1 && strcmp(out, addr) != 0 &&
	    (put_out(h, h->hdr + h->done, start - h->done) < 0 || put_out(h, out, strlen(out)) < 0))) {
		h->failed = 1;
		return -1;
	}
	if (rc == 1 && strcmp(out, addr) != 0) {
		h->done = end;
		h->changed = 1;
	}
	return 0;
}

int cleanup_header_rewrite(const char *hdr, size_t len, cleanup_rewrite_fn *fn, void *arg,
    char *out, size_t outlen, size_t *used)
{
	const char *colon = memchr(hdr, ':', len);
	struct hdr_splice h;

	if (colon == NULL || outlen == 0)
		return 0;
	memset(&h, 0, sizeof h);
	h.fn = fn;
	h.arg = arg;
	h.hdr = hdr;
	h.base = (size_t)(colon + 1 - hdr);
	h.out = out;
	h.outlen = outlen;
	if (cleanup_addr_scan(hdr + h.base, len - h.base, splice_one, &h) != 0 || h.failed)
		return -1;
	if (!h.changed)
		return 0;
	if (put_out(&h, hdr + h.done, len - h.done) < 0)
		return -1;
	if (used)
		*used = h.used;
	return 1;
}

/* cleanup's classes: the sender table (and masquerading), or the recipient table and masquerading */
struct cleanup_cls { struct resolver *r; enum cleanup_hdr cls; };

static int cleanup_one(void *arg, const char *addr, char *out, size_t outlen)
{
	struct cleanup_cls *c = arg;
	struct cleanup *cl = resolver_cleanup(c->r);
	const char *at, *m;
	int rc;

	if (c->cls == CLEANUP_HDR_SENDER)
		return cleanup_sender(c->r, addr, out, outlen);
	if ((rc = canonical(c->r, cl->rcanon, addr, out, outlen)) >= 0 &&
	    (at = strrchr(out, '@')) != NULL && at[1] && (m = cleanup_masquerade(cl->masq, at + 1)) != NULL) {
		/* masquerade_classes' default includes header_recipient (not envelope_recipient) */
		size_t pos = (size_t)(at + 1 - out);

		if (pos + strlen(m) >= outlen)
			return -1;
		memcpy(out + pos, m, strlen(m) + 1);
		rc = 1;
	}
	return rc;
}

int cleanup_header(struct resolver *r, enum cleanup_hdr cls, const char *hdr, size_t len,
    char *out, size_t outlen)
{
	struct cleanup_cls c = { r, cls };

	if (cls == CLEANUP_HDR_NONE)
		return 0;
	return cleanup_header_rewrite(hdr, len, cleanup_one, &c, out, outlen, NULL);
}
