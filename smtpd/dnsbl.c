/*
 * smtpd/dnsbl.c: DNS list restrictions (Postfix's reject_rbl_client,
 * reject_rhsbl_sender/client/helo, permit_dnswl_client). The pure half:
 * the list argument and its reply filter, query names, reply templates.
 * The session half: a small per-session cache of answers, so a client
 * is looked up once per list however many RCPTs and transactions it
 * sends (Postfix's smtpd keeps the same per-session table, ctable).
 * A lookup runs on the loop (core/dns) with the session in S_DNS_WAIT;
 * the answer is stored and the RCPT decided again (restrict.c).
 */
#include "smtpd/dnsbl.h"
#include "smtpd/smtpd_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/mem.h"

/* ---- the list argument ---------------------------------------------------- */

/* One number 0..255 at *p; advances *p. -1 when there is none. */
static int byte_at(const char **p)
{
	int v = 0, digits = 0;

	while (**p >= '0' && **p <= '9' && digits < 4) {
		v = v * 10 + (**p - '0');
		(*p)++;
		digits++;
	}
	return digits == 0 || digits > 3 || v > 255 ? -1 : v;
}

static void set_range(unsigned char *bits, int lo, int hi)
{
	int i;

	for (i = lo; i <= hi; i++)
		bits[i / 8] |= (unsigned char)(1u << (i % 8));
}

/* "127.0.0.2", "127.0.0.[2;4..7]", "127.0.[0..255].[1..3]" (Postfix 2.8's filter). */
static int filter_parse(const char *p, struct dnsbl_site *site)
{
	int o, lo, hi;

	for (o = 0; o < 4; o++) {
		if (o > 0 && *p++ != '.')
			return -1;
		if (*p != '[') {
			if ((lo = byte_at(&p)) < 0)
				return -1;
			set_range(site->octet[o], lo, lo);
			continue;
		}
		p++;
		for (;;) {
			if ((lo = byte_at(&p)) < 0)
				return -1;
			hi = lo;
			if (p[0] == '.' && p[1] == '.') {
				p += 2;
				if ((hi = byte_at(&p)) < 0 || hi < lo)
					return -1;
			}
			set_range(site->octet[o], lo, hi);
			if (*p == ';') {
				p++;
				continue;
			}
			if (*p++ != ']')
				return -1;
			break;
		}
	}
	return *p == '\0' ? 0 : -1;
}

int dnsbl_site_parse(const char *arg, struct dnsbl_site *site, char *err, size_t errlen)
{
	const char *eq = strchr(arg, '=');
	size_t zlen = eq ? (size_t)(eq - arg) : strlen(arg);

	memset(site, 0, sizeof *site);
	if (strlen(arg) >= sizeof site->arg || zlen == 0 || zlen > DNS_NAME_MAX - 72) {
		/* 72: the longest reversed IPv6 address in front of the zone must still fit a DNS name */
		snprintf(err, errlen, "bad DNS list \"%s\"", arg);
		return -1;
	}
	memcpy(site->arg, arg, strlen(arg) + 1);
	memcpy(site->zone, arg, zlen);
	site->zone[zlen] = '\0';
	if (site->zone[zlen - 1] == '.')   /* "zen.example." is the same list */
		site->zone[zlen - 1] = '\0';
	if (site->zone[0] == '\0' || site->zone[0] == '.' || strstr(site->zone, "..")) {
		/* found by fuzz_dnsbl_reply: "." left an empty zone, and every query the root's */
		snprintf(err, errlen, "bad DNS list \"%s\"", arg);
		return -1;
	}
	if (eq) {
		site->filtered = 1;
		if (filter_parse(eq + 1, site) < 0) {
			snprintf(err, errlen, "bad DNS list reply filter \"%s\" (want 127.0.0.2 or 127.0.0.[2;4..7])", eq + 1);
			return -1;
		}
	}
	return 0;
}

int dnsbl_site_match(const struct dnsbl_site *site, const unsigned char a[4])
{
	int o;

	if (!site->filtered)
		return 1;
	for (o = 0; o < 4; o++)
		if (!(site->octet[o][a[o] / 8] & (1u << (a[o] % 8))))
			return 0;
	return 1;
}

/* ---- query names ---------------------------------------------------------- */

int dnsbl_client_name(const struct sockaddr *sa, const char *zone, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *b;
	size_t n = 0;
	int i, r;

	if (sa->sa_family == AF_INET ||
	    (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr))) {
		b = sa->sa_family == AF_INET ? (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr
		    : ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr + 12;
		r = snprintf(out, outlen, "%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0], zone);
		return r < 0 || (size_t)r >= outlen || (size_t)r > DNS_NAME_MAX ? -1 : 0;
	}
	if (sa->sa_family != AF_INET6 || outlen < 64 + strlen(zone) + 1 || 64 + strlen(zone) > DNS_NAME_MAX)
		return -1;
	b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	for (i = 15; i >= 0; i--) {   /* RFC 5782 2.4: nibbles, least significant first */
		out[n++] = hex[b[i] & 15];
		out[n++] = '.';
		out[n++] = hex[b[i] >> 4];
		out[n++] = '.';
	}
	memcpy(out + n, zone, strlen(zone) + 1);
	return 0;
}

int dnsbl_domain_name(const char *domain, const char *zone, char *out, size_t outlen)
{
	size_t dl = strlen(domain);
	int r;

	if (dl && domain[dl - 1] == '.')
		dl--;
	if (dl == 0)
		return -1;
	r = snprintf(out, outlen, "%.*s.%s", (int)dl, domain, zone);
	return r < 0 || (size_t)r >= outlen || (size_t)r > DNS_NAME_MAX ? -1 : 0;
}

/* ---- reply templates ------------------------------------------------------ */

struct out {
	char *p;
	size_t len, cap;   /* cap: room for text, the NUL excluded */
};

static void put(struct out *o, const char *s, size_t n)
{
	if (n > o->cap - o->len)
		n = o->cap - o->len;
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static const char *lookup(const struct dnsbl_var *vars, int nvars, const char *name, size_t nlen)
{
	int i;

	for (i = 0; i < nvars; i++)
		if (strlen(vars[i].name) == nlen && memcmp(vars[i].name, name, nlen) == 0)
			return vars[i].value ? vars[i].value : "";
	return "";
}

static int expand(const char *t, size_t n, const struct dnsbl_var *vars, int nvars, struct out *o, int depth);

/* The end of the {...} group that starts at t[0], or n when it does not close. */
static size_t group_end(const char *t, size_t n)
{
	size_t i;
	int level = 0;

	for (i = 0; i < n; i++)
		if (t[i] == '{')
			level++;
		else if (t[i] == '}' && --level == 0)
			return i;
	return n;
}

/*
 * The text of ${name?text} or ${name:text}: plain, or Postfix 3.0's
 * {text} and {a}:{b} (?: both branches). set: $name is non-empty.
 */
static int expand_branch(const char *t, size_t n, char op, int set, const struct dnsbl_var *vars, int nvars,
    struct out *o, int depth)
{
	size_t e;

	if (n == 0 || t[0] != '{')
		return (op == '?') == set ? expand(t, n, vars, nvars, o, depth + 1) : 0;
	if ((e = group_end(t, n)) == n)
		return -1;
	if (e + 1 == n)
		return (op == '?') == set ? expand(t + 1, e - 1, vars, nvars, o, depth + 1) : 0;
	/* {a}:{b}, only after ? */
	if (op != '?' || t[e + 1] != ':' || e + 2 >= n || t[e + 2] != '{' || group_end(t + e + 2, n - e - 2) != n - e - 3)
		return -1;
	return set ? expand(t + 1, e - 1, vars, nvars, o, depth + 1)
	    : expand(t + e + 3, n - e - 4, vars, nvars, o, depth + 1);
}

/* Expand t[0..n) into o. -1 on a bad template. */
static int expand(const char *t, size_t n, const struct dnsbl_var *vars, int nvars, struct out *o, int depth)
{
	size_t i = 0;

	if (depth > 8)
		return -1;
	while (i < n) {
		const char *name, *val;
		size_t nlen, start;
		char close;

		if (t[i] != '$') {
			start = i;
			while (i < n && t[i] != '$')
				i++;
			put(o, t + start, i - start);
			continue;
		}
		i++;
		if (i < n && t[i] == '$') {
			put(o, "$", 1);
			i++;
			continue;
		}
		if (i < n && (t[i] == '{' || t[i] == '(')) {
			int level = 1;
			size_t body;

			close = t[i] == '{' ? '}' : ')';
			name = t + ++i;
			while (i < n && (t[i] == '_' || (t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
			    (t[i] >= '0' && t[i] <= '9')))
				i++;
			nlen = (size_t)(t + i - name);
			if (nlen == 0 || i >= n)
				return -1;
			if (t[i] == close) {
				val = lookup(vars, nvars, name, nlen);
				put(o, val, strlen(val));
				i++;
				continue;
			}
			if (t[i] != '?' && t[i] != ':')
				return -1;
			{
				char op = t[i++];
				/* the text runs to the matching close: it may hold ${...} of its own */
				body = i;
				while (i < n) {
					if (t[i] == (close == '}' ? '{' : '('))
						level++;
					else if (t[i] == close && --level == 0)
						break;
					i++;
				}
				if (i >= n)
					return -1;
				val = lookup(vars, nvars, name, nlen);
				if (expand_branch(t + body, i - body, op, val[0] != '\0', vars, nvars, o, depth) < 0)
					return -1;
				i++;
			}
			continue;
		}
		name = t + i;
		while (i < n && (t[i] == '_' || (t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
		    (t[i] >= '0' && t[i] <= '9')))
			i++;
		nlen = (size_t)(t + i - name);
		if (nlen == 0)
			return -1;   /* a lone $ (Postfix: "unexpected end") */
		val = lookup(vars, nvars, name, nlen);
		put(o, val, strlen(val));
	}
	return 0;
}

int dnsbl_expand(const char *tmpl, const struct dnsbl_var *vars, int nvars, char *out, size_t outlen)
{
	struct out o;

	if (outlen == 0)
		return -1;
	o.p = out;
	o.len = 0;
	o.cap = outlen - 1;
	out[0] = '\0';
	return expand(tmpl, strlen(tmpl), vars, nvars, &o, 0);
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

int dnsbl_reply(const char *x, char *out, size_t outlen)
{
	const char *rest, *p;
	char dsn[16];
	size_t i, n = 0;
	int code, r, d1 = 0, d2 = 0;

	if (outlen == 0 || !(x[0] == '4' || x[0] == '5') || !is_digit(x[1]) || !is_digit(x[2]) ||
	    (x[3] != ' ' && x[3] != '\0'))
		return -1;
	code = (x[0] - '0') * 100 + (x[1] - '0') * 10 + (x[2] - '0');
	rest = x[3] ? x + 4 : "";
	/* an enhanced code of its own (RFC 3463 class.subject.detail); Postfix fixes its class to the reply's */
	if ((rest[0] == '2' || rest[0] == '4' || rest[0] == '5') && rest[1] == '.') {
		for (p = rest + 2; is_digit(*p) && d1 < 3; p++)
			d1++;
		if (d1 && *p == '.')
			for (p++; is_digit(*p) && d2 < 3; p++)
				d2++;
		if (d1 && d2 && (*p == ' ' || *p == '\0'))
			n = (size_t)(p - rest);
	}
	if (n) {
		snprintf(dsn, sizeof dsn, "%c%.*s", x[0], (int)n - 1, rest + 1);
		rest += n;
		if (*rest == ' ')
			rest++;
	} else {
		snprintf(dsn, sizeof dsn, "%c.7.1", x[0]);
	}
	r = snprintf(out, outlen, "%d %s %s", code, dsn, *rest ? rest : "Service unavailable");
	if (r < 0)
		return -1;
	/* a TXT record is the lister's text: no CR LF may end our reply early */
	for (i = 0; out[i]; i++)
		if ((unsigned char)out[i] < 32 || out[i] == 127)
			out[i] = ' ';
	return code;
}

/* ---- the session's answers -------------------------------------------------- */

/*
 * Bounded: a session asks at most a few names per list word, but a
 * client that sends many transactions with new senders would grow the
 * rhsbl_sender entries; past the bound the oldest answer goes (asked
 * again if needed, which is all it costs).
 */
#define DNSXL_MAX_ENTRIES 32
#define DNSXL_MAX_ADDRS   8
#define DNSXL_TXT_MAX     450   /* RFC 5782 says one string; a reply line must stay under 512 */

struct dnsxl_entry {
	struct dnsxl_entry *next;   /* newest first */
	struct dnsxl_answer ans;
	int type;                   /* enum dns_type */
	int done;                   /* the answer is in (else: its lookup is s->dns_q) */
	char name[];                /* the query name */
};

static struct log_rate lookup_err_rate = LOG_RATE_INIT(60, 10);

static const char *type_name(int t)
{
	return t == DNS_A ? "A" : t == DNS_TXT ? "TXT" : t == DNS_MX ? "MX" : t == DNS_AAAA ? "AAAA" : "?";
}

static void entry_free(struct dnsxl_entry *e)
{
	mem_free(e->ans.txt);
	mem_free(e);
}

static void answer_cb(void *arg, const struct dns_answer *a)
{
	struct session *s = arg;
	struct dnsxl_entry *e = s->dnsxl;   /* the one asked is the newest, and a session asks one at a time */
	int i;

	s->dns_q = NULL;
	if (e == NULL || e->done)
		return;
	e->done = 1;
	e->ans.status = a->status;
	if (a->status == DNS_FOUND) {
		for (i = 0; i < a->n && e->ans.naddr < DNSXL_MAX_ADDRS; i++)
			if (a->rr[i].family == AF_INET)
				memcpy(e->ans.addr[e->ans.naddr++], a->rr[i].addr, 4);
		if (e->type == DNS_TXT && a->n > 0 && (e->ans.txt = mem_alloc(DNSXL_TXT_MAX + 1)) != NULL) {
			/* Postfix joins the records with " / ", up to its limit; a NUL inside one ends that one */
			size_t len = 0, n;
			for (i = 0; i < a->n && len < DNSXL_TXT_MAX; i++) {
				if (a->rr[i].text == NULL)
					continue;
				if (len && len + 3 < DNSXL_TXT_MAX) {
					memcpy(e->ans.txt + len, " / ", 3);
					len += 3;
				}
				n = strnlen(a->rr[i].text, a->rr[i].len);
				if (n > DNSXL_TXT_MAX - len)
					n = DNSXL_TXT_MAX - len;
				memcpy(e->ans.txt + len, a->rr[i].text, n);
				len += n;
			}
			e->ans.txt[len] = '\0';
		}
	} else if (a->status == DNS_TEMPFAIL) {
		/* Postfix: "warning: ADDR: RBL lookup error: ..."; the list is then skipped */
		log_ratelimited(&lookup_err_rate, "smtpd", "%s[%s]: %s: RBL lookup error: type=%s: %s",
		    s->host, s->addr, e->name, type_name(e->type), a->why && a->why[0] ? a->why : "temporary failure");
	}
	if (s->state == S_DNS_WAIT && s->tx)
		verbs_rcpt_resume(s);
}

const struct dnsxl_answer *dnsbl_session_lookup(struct session *s, const char *name, int type)
{
	static const struct dnsxl_answer tempfail = { DNS_TEMPFAIL, 0, { { 0 } }, NULL };
	struct dnsxl_entry *e, **pp;
	size_t nlen = strlen(name);
	int n = 0;

	for (e = s->dnsxl; e != NULL; e = e->next)
		if (e->type == type && strcasecmp(e->name, name) == 0)
			return e->done ? &e->ans : &tempfail;   /* not done: cannot be (one lookup at a time) */
	/* room for the new one: the oldest answers go */
	for (pp = &s->dnsxl; *pp != NULL && n < DNSXL_MAX_ENTRIES - 1; pp = &(*pp)->next)
		n++;
	while ((e = *pp) != NULL) {
		*pp = e->next;
		entry_free(e);
	}
	if (s->srv->dns == NULL || (e = mem_calloc(1, sizeof *e + nlen + 1)) == NULL)
		return &tempfail;
	e->type = type;
	memcpy(e->name, name, nlen + 1);
	e->next = s->dnsxl;
	s->dnsxl = e;
	if ((s->dns_q = dns_lookup(s->srv->dns, name, (enum dns_type)type, answer_cb, s)) == NULL) {
		e->done = 1;
		e->ans.status = DNS_TEMPFAIL;
		log_ratelimited(&lookup_err_rate, "smtpd", "%s[%s]: %s: RBL lookup error: type=%s: cannot ask (%s)",
		    s->host, s->addr, name, type_name(type), strerror(errno));
		return &e->ans;
	}
	return NULL;
}

void dnsbl_session_free(struct session *s)
{
	struct dnsxl_entry *e;

	while ((e = s->dnsxl) != NULL) {
		s->dnsxl = e->next;
		entry_free(e);
	}
}
