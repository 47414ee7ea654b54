/*
 * smtpd/dmarc.c: the pure parts of DMARC (RFC 7489): the Public Suffix
 * List and the organizational domain, a record's tags, alignment.
 *
 * Why not libopendmarc (Debian's 1.4.2): its record lookup is blocking DNS
 * (res_query), and what remains once the record is handed in has flaws
 * that matter here: its public suffix code gets wildcard and exception
 * rules wrong (x.kawasaki.jp's organizational domain came out as
 * kawasaki.jp, foo.bar.ck's as bar.ck; for "com" it returned 0 and left the
 * buffer as it was), its relaxed alignment is a string-prefix test on
 * reversed names that aligns a.co.uk with co.uk, it keeps the list in
 * about 1 MB of malloc that frugal's budget cannot see, in globals that are
 * not thread-safe, and opendmarc_policy_store_dmarc replaces the From:
 * domain with the record's. So the ~200 lines of RFC 7489 it would save
 * are written here, bounded and fuzzed (tests/fuzz/fuzz_dmarc.c).
 *
 * Owns nothing global: a list is a value the configuration generation
 * holds. Must never read past its input or allocate outside core/mem.
 */
#include "smtpd/dmarc.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fd.h"
#include "core/mem.h"

#define NAME_MAX_LEN 253

struct dmarc_psl {
	char *text;          /* owned; the rules, lower case, each NUL-terminated */
	size_t textlen;
	uint32_t *slot;      /* owned; open addressing: offset + 1 into text, 0 empty */
	uint32_t nslot;      /* a power of two, at least twice the rules */
	int nrules;
};

static uint32_t hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;   /* FNV-1a */
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

static int psl_has(const struct dmarc_psl *p, const char *s, size_t n)
{
	uint32_t i = hash(s, n) & (p->nslot - 1), o;

	while ((o = p->slot[i]) != 0) {
		const char *r = p->text + o - 1;
		if (strncmp(r, s, n) == 0 && r[n] == '\0')
			return 1;
		i = (i + 1) & (p->nslot - 1);
	}
	return 0;
}

struct dmarc_psl *dmarc_psl_parse(const char *t, size_t n)
{
	struct dmarc_psl *p;
	size_t i = 0, o = 0, rules = 0;
	uint32_t k;

	if (n > DMARC_PSL_MAX || (p = mem_calloc(1, sizeof *p)) == NULL)
		return NULL;
	if ((p->text = mem_alloc(n + 1)) == NULL)
		goto fail;
	/* a rule is the first white-space-delimited token of a line; "//" starts a comment */
	while (i < n) {
		size_t e = i, start;

		while (e < n && t[e] != '\n')
			e++;
		while (i < e && (t[i] == ' ' || t[i] == '\t' || t[i] == '\r'))
			i++;
		start = o;
		if (i < e && !(e - i >= 2 && t[i] == '/' && t[i + 1] == '/')) {
			while (i < e && t[i] != ' ' && t[i] != '\t' && t[i] != '\r' && o - start < NAME_MAX_LEN + 2)
				p->text[o++] = (char)tolower((unsigned char)t[i++]);
			if (o > start && p->text[o - 1] == '.')
				o--;   /* "example." is "example" */
			if (o > start && memchr(p->text + start, '\0', o - start) == NULL) {
				p->text[o++] = '\0';
				rules++;
			} else {
				o = start;
			}
		}
		i = e + 1;
	}
	p->textlen = o;
	{
		char *t2 = mem_realloc(p->text, o + 1);   /* the comments' room back (Debian's file: 246 KB -> 115 KB) */
		if (t2 != NULL)
			p->text = t2;
	}
	for (p->nslot = 16; p->nslot < 2 * rules; p->nslot *= 2)
		;
	if ((p->slot = mem_calloc(p->nslot, sizeof *p->slot)) == NULL)
		goto fail;
	for (i = 0; i < o; i += strlen(p->text + i) + 1) {
		size_t len = strlen(p->text + i);

		if (psl_has(p, p->text + i, len))
			continue;   /* a duplicate line */
		for (k = hash(p->text + i, len) & (p->nslot - 1); p->slot[k]; k = (k + 1) & (p->nslot - 1))
			;
		p->slot[k] = (uint32_t)i + 1;
		p->nrules++;
	}
	return p;
fail:
	dmarc_psl_free(p);
	return NULL;
}

struct dmarc_psl *dmarc_psl_load(const char *path, char *err, size_t errlen)
{
	struct dmarc_psl *p;
	struct stat st;
	char *buf;
	size_t got = 0;
	ssize_t r;
	int fd;

	if ((fd = fd_open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > DMARC_PSL_MAX) {
		snprintf(err, errlen, "%s: not a regular file of at most %d bytes", path, DMARC_PSL_MAX);
		fd_close(fd);
		return NULL;
	}
	if ((buf = mem_alloc((size_t)st.st_size + 1)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		fd_close(fd);
		return NULL;
	}
	while (got < (size_t)st.st_size && (r = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
		got += (size_t)r;
	fd_close(fd);
	p = dmarc_psl_parse(buf, got);
	mem_free(buf);
	if (p == NULL)
		snprintf(err, errlen, "%s: out of memory", path);
	else if (p->nrules == 0) {
		snprintf(err, errlen, "%s: no rules", path);
		dmarc_psl_free(p);
		p = NULL;
	}
	return p;
}

void dmarc_psl_free(struct dmarc_psl *p)
{
	if (p == NULL)
		return;
	mem_free(p->text);
	mem_free(p->slot);
	mem_free(p);
}

int dmarc_psl_rules(const struct dmarc_psl *p) { return p ? p->nrules : 0; }

size_t dmarc_psl_bytes(const struct dmarc_psl *p)
{
	return p ? sizeof *p + p->textlen + 1 + (size_t)p->nslot * sizeof *p->slot : 0;
}

/* lower case, no trailing dot, labels of 1..63 bytes, no white space or control bytes: 0, else -1 */
static int norm(const char *name, char *out, size_t outlen)
{
	size_t n = strlen(name), i, lab = 0;

	if (n && name[n - 1] == '.')
		n--;
	if (n == 0 || n > NAME_MAX_LEN || n >= outlen)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c <= ' ' || c == 0x7f || c == '@' || c == '/' || c == '\\' || c == ';')
			return -1;
		if (c == '.') {
			if (lab == 0)
				return -1;
			lab = 0;
		} else if (++lab > 63) {
			return -1;
		}
		out[i] = (char)tolower(c);
	}
	if (lab == 0)
		return -1;   /* "a.b.." : an empty last label */
	out[n] = '\0';
	return 0;
}

int dmarc_org_domain(const struct dmarc_psl *p, const char *name, char *out, size_t outlen)
{
	char d[NAME_MAX_LEN + 1], probe[NAME_MAX_LEN + 4];
	size_t len, ps = (size_t)-1;   /* where the public suffix starts in d */
	const char *s;

	if (norm(name, d, sizeof d) < 0)
		return -1;
	len = strlen(d);
	/*
	 * Longest match first: each suffix of the name from the whole name
	 * down. An exception rule (!x) makes x's parent the public suffix; a
	 * wildcard (*.y) makes any one label under y one.
	 */
	for (s = d; p != NULL && s; s = strchr(s, '.') ? strchr(s, '.') + 1 : NULL) {
		size_t n = len - (size_t)(s - d);
		const char *dot = strchr(s, '.');

		probe[0] = '!';
		memcpy(probe + 1, s, n + 1);
		if (psl_has(p, probe, n + 1)) {
			ps = dot ? (size_t)(dot + 1 - d) : (size_t)(s - d);
			break;
		}
		if (psl_has(p, s, n)) {
			ps = (size_t)(s - d);
			break;
		}
		if (dot) {
			probe[0] = '*';
			probe[1] = '.';
			memcpy(probe + 2, dot + 1, len - (size_t)(dot + 1 - d) + 1);
			if (psl_has(p, probe, len - (size_t)(dot + 1 - d) + 2)) {
				ps = (size_t)(s - d);
				break;
			}
		}
	}
	if (ps == (size_t)-1) {
		/* no rule: the implicit "*" (the last label is the suffix) */
		const char *last = strrchr(d, '.');
		ps = last ? (size_t)(last + 1 - d) : 0;
	}
	if (ps == 0) {
		s = d;   /* the name is itself a public suffix: its own organizational domain */
	} else {
		/* one label more than the suffix */
		size_t i = ps - 1;   /* the dot before the suffix */
		while (i > 0 && d[i - 1] != '.')
			i--;
		s = d + i;
	}
	if (strlen(s) >= outlen)
		return -1;
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

int dmarc_aligned(const struct dmarc_psl *p, const char *a, const char *b, int strict)
{
	char na[NAME_MAX_LEN + 1], nb[NAME_MAX_LEN + 1];

	if (norm(a, na, sizeof na) < 0 || norm(b, nb, sizeof nb) < 0)
		return 0;
	if (strcmp(na, nb) == 0)
		return 1;
	if (strict)
		return 0;
	if (dmarc_org_domain(p, na, na, sizeof na) < 0 || dmarc_org_domain(p, nb, nb, sizeof nb) < 0)
		return 0;
	return strcmp(na, nb) == 0;
}

/* ---- the record ------------------------------------------------------------ */

const char *dmarc_policy_name(enum dmarc_policy p)
{
	return p == DMARC_P_REJECT ? "reject" : p == DMARC_P_QUARANTINE ? "quarantine" : "none";
}

static int policy_of(const char *v, size_t n, enum dmarc_policy *out)
{
	if (n == 4 && strncasecmp(v, "none", 4) == 0)
		*out = DMARC_P_NONE;
	else if (n == 10 && strncasecmp(v, "quarantine", 10) == 0)
		*out = DMARC_P_QUARANTINE;
	else if (n == 6 && strncasecmp(v, "reject", 6) == 0)
		*out = DMARC_P_REJECT;
	else
		return -1;
	return 0;
}

static int wsp(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int dmarc_record_parse(const char *t, size_t n, struct dmarc_record *r)
{
	size_t i = 0;
	int first = 1, p_ok = 0, p_seen = 0, sp_bad = 0, rua = 0;

	memset(r, 0, sizeof *r);
	r->pct = 100;
	if (n > DMARC_RECORD_MAX)
		return -1;
	/* tag-list: tag *WSP "=" *WSP value, separated by ";" (6.4); v=DMARC1 first */
	while (i < n) {
		size_t ts, te, vs, ve;

		while (i < n && wsp(t[i]))
			i++;
		if (i >= n)
			break;
		ts = i;
		while (i < n && t[i] != '=' && t[i] != ';' && !wsp(t[i]))
			i++;
		te = i;
		while (i < n && wsp(t[i]))
			i++;
		if (i >= n || t[i] != '=') {
			if (first)
				return -1;
			while (i < n && t[i] != ';')
				i++;
			i++;
			continue;   /* a malformed tag is ignored (6.3: defaults) */
		}
		i++;
		while (i < n && wsp(t[i]))
			i++;
		vs = i;
		while (i < n && t[i] != ';')
			i++;
		ve = i;
		while (ve > vs && wsp(t[ve - 1]))
			ve--;
		i++;   /* past the ';' */
		if (first) {
			/* "v=DMARC1" exactly (6.3: the record is discarded otherwise) */
			if (te - ts != 1 || t[ts] != 'v' || ve - vs != 6 || memcmp(t + vs, "DMARC1", 6) != 0)
				return -1;
			first = 0;
			continue;
		}
		if (te - ts == 1 && tolower((unsigned char)t[ts]) == 'p') {
			p_seen = 1;
			p_ok = policy_of(t + vs, ve - vs, &r->p) == 0;
		} else if (te - ts == 2 && strncasecmp(t + ts, "sp", 2) == 0) {
			if (policy_of(t + vs, ve - vs, &r->sp) == 0)
				r->has_sp = 1;
			else
				sp_bad = 1;
		} else if (te - ts == 5 && strncasecmp(t + ts, "adkim", 5) == 0) {
			if (ve - vs == 1 && tolower((unsigned char)t[vs]) == 's')
				r->adkim_strict = 1;
		} else if (te - ts == 4 && strncasecmp(t + ts, "aspf", 4) == 0) {
			if (ve - vs == 1 && tolower((unsigned char)t[vs]) == 's')
				r->aspf_strict = 1;
		} else if (te - ts == 3 && strncasecmp(t + ts, "pct", 3) == 0) {
			int v = 0;
			size_t k;
			for (k = vs; k < ve && k - vs < 3 && isdigit((unsigned char)t[k]); k++)
				v = v * 10 + (t[k] - '0');
			if (k == ve && ve > vs && v <= 100)
				r->pct = v;
		} else if (te - ts == 3 && strncasecmp(t + ts, "rua", 3) == 0) {
			rua = memmem(t + vs, ve - vs, "mailto:", 7) != NULL || memmem(t + vs, ve - vs, "MAILTO:", 7) != NULL;
		}
	}
	if (first)
		return -1;
	/*
	 * 6.6.3 step 6: no valid p= (or an invalid sp=): with a reporting
	 * address act as p=none, else no DMARC processing.
	 */
	if (!p_ok || sp_bad) {
		(void)p_seen;
		if (!rua)
			return -2;
		r->p = DMARC_P_NONE;
		r->has_sp = 0;
	}
	if (!r->has_sp)
		r->sp = r->p;
	return 0;
}
