/*
 * queue/mta_sts_policy.c: MTA-STS's pure parsers (RFC 8461): the TXT record,
 * the policy file, the HTTP response that carries the file, and the MX
 * pattern match. Everything is length-bounded and allocation is one buffer
 * per policy (its mx patterns); nothing here does I/O or keeps state, so the
 * fuzz target (tests/fuzz/fuzz_mta_sts.c) reaches every line.
 */
#include "queue/mta_sts.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/mem.h"

#define HTTP_HEAD_MAX (8 * 1024)    /* status line and headers */

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

const char *mta_sts_mode_name(enum mta_sts_mode m)
{
	return m == MTA_STS_ENFORCE ? "enforce" : m == MTA_STS_TESTING ? "testing" : "none";
}

/* ---- the TXT record (RFC 8461 3.1) ---- */

int mta_sts_txt_parse(const char *txt, size_t len, char id[MTA_STS_ID_MAX + 1])
{
	size_t i = 0, n;
	int have_id = 0;

	id[0] = '\0';
	/* "v=STSv1" first, exactly: anything else at that name is some other record */
	if (len < 7 || memcmp(txt, "v=STSv1", 7) != 0)
		return -2;
	i = 7;
	while (i < len && is_wsp(txt[i]))
		i++;
	if (i == len)
		return -1;            /* no id */
	if (txt[i] != ';')
		return -1;
	i++;
	for (;;) {
		size_t k, v, ve;

		while (i < len && is_wsp(txt[i]))
			i++;
		if (i == len)
			break;
		/* field name: ALPHA/DIGIT then up to 31 of ALPHA/DIGIT/_/-/. */
		k = i;
		if (!isalnum((unsigned char)txt[i]))
			return -1;
		while (i < len && (isalnum((unsigned char)txt[i]) || txt[i] == '_' || txt[i] == '-' || txt[i] == '.'))
			i++;
		if (i - k > 32 || i == len || txt[i] != '=')
			return -1;
		v = ++i;
		/* value: printable ASCII but ';' and '=' and space */
		while (i < len && txt[i] > 0x20 && txt[i] < 0x7f && txt[i] != ';' && txt[i] != '=')
			i++;
		ve = i;
		if (ve == v)
			return -1;
		if (v - k == 3 && memcmp(txt + k, "id=", 3) == 0) {
			if (have_id)
				return -1;
			n = ve - v;
			if (n > MTA_STS_ID_MAX)
				return -1;
			for (size_t x = v; x < ve; x++)
				if (!isalnum((unsigned char)txt[x]))
					return -1;
			memcpy(id, txt + v, n);
			id[n] = '\0';
			have_id = 1;
		}
		while (i < len && is_wsp(txt[i]))
			i++;
		if (i == len)
			break;
		if (txt[i] != ';')
			return -1;
		i++;
	}
	return have_id ? 0 : -1;
}

/* ---- the policy file (RFC 8461 3.2) ---- */

void mta_sts_policy_free(struct mta_sts_policy *p)
{
	if (p == NULL)
		return;
	mem_free(p->mx);
	memset(p, 0, sizeof *p);
}

int mta_sts_policy_copy(struct mta_sts_policy *dst, const struct mta_sts_policy *src)
{
	*dst = *src;
	dst->mx = NULL;
	if (src->mxlen == 0)
		return 0;
	if ((dst->mx = mem_alloc(src->mxlen)) == NULL)
		return -1;
	memcpy(dst->mx, src->mx, src->mxlen);
	return 0;
}

/* A pattern: optional "*." then a domain of LDH labels (1..63 each, at most 253 in all). */
static int pattern_ok(const char *s, size_t n)
{
	size_t i = 0, label = 0;

	if (n >= 2 && s[0] == '*' && s[1] == '.')
		i = 2;
	if (i == n || n > 253 + 2)
		return 0;
	for (; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)c) && c != '-')
			return 0;
		if (++label > 63)
			return 0;
	}
	return label > 0;
}

static void why_line(char *why, size_t whylen, int line, const char *what)
{
	if (why && whylen)
		snprintf(why, whylen, "line %d: %s", line, what);
}

int mta_sts_policy_parse(const char *text, size_t len, struct mta_sts_policy *p, char *why, size_t whylen)
{
	size_t i = 0;
	int line = 0, have_v = 0, have_mode = 0, have_age = 0;
	char mx[MTA_STS_MX_MAX * 256];
	size_t mxlen = 0;

	memset(p, 0, sizeof *p);
	if (why && whylen)
		why[0] = '\0';
	if (len > MTA_STS_BODY_MAX) {
		why_line(why, whylen, 0, "policy too large");
		return -1;
	}
	while (i < len) {
		size_t s = i, e, k, ke, v, ve;
		const char *nl = memchr(text + i, '\n', len - i);

		line++;
		e = nl ? (size_t)(nl - text) : len;
		i = nl ? e + 1 : len;
		if (e > s && text[e - 1] == '\r')
			e--;
		if (e == s)
			continue;         /* an empty line (a trailing one is common): nothing */
		for (k = s; k < e; k++)
			if (text[k] == '\r' || text[k] == '\0') {
				why_line(why, whylen, line, "control character");
				return -1;
			}
		/* key: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
		k = s;
		if (!isalnum((unsigned char)text[k])) {
			why_line(why, whylen, line, "bad field name");
			return -1;
		}
		while (k < e && (isalnum((unsigned char)text[k]) || text[k] == '_' || text[k] == '-' || text[k] == '.'))
			k++;
		ke = k;
		if (ke - s > 32) {
			why_line(why, whylen, line, "field name too long");
			return -1;
		}
		while (k < e && is_wsp(text[k]))
			k++;
		if (k == e || text[k] != ':') {
			why_line(why, whylen, line, "no ':' after the field name");
			return -1;
		}
		k++;
		while (k < e && is_wsp(text[k]))
			k++;
		v = k;
		ve = e;
		while (ve > v && is_wsp(text[ve - 1]))
			ve--;
#define KEY(name) (ke - s == sizeof name - 1 && memcmp(text + s, name, sizeof name - 1) == 0)
#define VAL(name) (ve - v == sizeof name - 1 && memcmp(text + v, name, sizeof name - 1) == 0)
		if (KEY("version")) {
			if (have_v++ || !VAL("STSv1")) {
				why_line(why, whylen, line, have_v > 1 ? "version given twice" : "version is not STSv1");
				return -1;
			}
		} else if (KEY("mode")) {
			if (have_mode++) {
				why_line(why, whylen, line, "mode given twice");
				return -1;
			}
			if (VAL("enforce"))
				p->mode = MTA_STS_ENFORCE;
			else if (VAL("testing"))
				p->mode = MTA_STS_TESTING;
			else if (VAL("none"))
				p->mode = MTA_STS_NONE;
			else {
				why_line(why, whylen, line, "unknown mode");
				return -1;
			}
		} else if (KEY("max_age")) {
			long a = 0;
			size_t x;

			if (have_age++ || ve == v || ve - v > 10) {
				why_line(why, whylen, line, have_age > 1 ? "max_age given twice" : "bad max_age");
				return -1;
			}
			for (x = v; x < ve; x++) {
				if (!isdigit((unsigned char)text[x])) {
					why_line(why, whylen, line, "bad max_age");
					return -1;
				}
				/* 10 digits fit a long on 64 bits; clamp to the RFC's maximum below */
				a = a * 10 + (text[x] - '0');
			}
			p->max_age = a > MTA_STS_MAX_AGE ? MTA_STS_MAX_AGE : a;
		} else if (KEY("mx")) {
			size_t n = ve - v, x;

			if (!pattern_ok(text + v, n)) {
				why_line(why, whylen, line, "bad mx pattern");
				return -1;
			}
			if (p->nmx >= MTA_STS_MX_MAX) {
				why_line(why, whylen, line, "too many mx patterns");
				return -1;
			}
			for (x = 0; x < n; x++)
				mx[mxlen + x] = (char)tolower((unsigned char)text[v + x]);
			mx[mxlen + n] = '\0';
			mxlen += n + 1;
			p->nmx++;
		}
		/* any other field: an extension, ignored (RFC 8461 3.2) */
#undef KEY
#undef VAL
	}
	if (!have_v || !have_mode || !have_age) {
		why_line(why, whylen, line, !have_v ? "no version" : !have_mode ? "no mode" : "no max_age");
		p->nmx = 0;
		return -1;
	}
	if (p->mode != MTA_STS_NONE && p->nmx == 0) {
		why_line(why, whylen, line, "no mx");
		return -1;
	}
	if (mxlen) {
		if ((p->mx = mem_alloc(mxlen)) == NULL) {
			p->nmx = 0;
			return -2;
		}
		memcpy(p->mx, mx, mxlen);
		p->mxlen = mxlen;
	}
	return 0;
}

int mta_sts_mx_match(const struct mta_sts_policy *p, const char *host)
{
	size_t hl = strlen(host), off = 0;
	int i;

	if (hl && host[hl - 1] == '.')
		hl--;
	for (i = 0; i < p->nmx && off < p->mxlen; i++) {
		const char *pat = p->mx + off;
		size_t pl = strlen(pat);

		off += pl + 1;
		if (pl >= 2 && pat[0] == '*' && pat[1] == '.') {
			/* RFC 8461 4.1: the wildcard is one label, the leftmost, never empty or several */
			size_t sl = pl - 1;                 /* ".example.net" */
			const char *dot;

			if (hl <= sl || strncasecmp(host + hl - sl, pat + 1, sl) != 0)
				continue;
			dot = memchr(host, '.', hl - sl);
			if (dot == NULL)
				return 1;
		} else if (hl == pl && strncasecmp(host, pat, pl) == 0)
			return 1;
	}
	return 0;
}

/* ---- the HTTP response (RFC 9112, the little a policy fetch needs) ---- */

static void say(char *why, size_t whylen, const char *fmt, const char *arg)
{
	if (why && whylen)
		snprintf(why, whylen, fmt, arg);
}

/* Header value of name in [h, he) (the first), trimmed, into out; 0 found, -1 not. */
static int header(const char *h, const char *he, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);

	while (h < he) {
		const char *e = memchr(h, '\n', (size_t)(he - h)), *v, *ve;

		if (e == NULL)
			e = he;
		ve = e;
		if (ve > h && ve[-1] == '\r')
			ve--;
		if ((size_t)(ve - h) > nl && strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
			size_t n;

			v = h + nl + 1;
			while (v < ve && is_wsp(*v))
				v++;
			while (ve > v && is_wsp(ve[-1]))
				ve--;
			n = (size_t)(ve - v) < outlen - 1 ? (size_t)(ve - v) : outlen - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			return 0;
		}
		h = e + 1;
	}
	return -1;
}

/* chunked transfer coding into body: 1 done, 0 need more, -1 bad */
static int dechunk(const char *p, const char *end, char *body, size_t *blen, char *why, size_t whylen)
{
	size_t out = 0;

	for (;;) {
		unsigned long n = 0;
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *x;
		int digits = 0;

		if (nl == NULL)
			return (size_t)(end - p) > 1024 ? (say(why, whylen, "%s", "bad chunk size line"), -1) : 0;
		for (x = p; x < nl && isxdigit((unsigned char)*x); x++, digits++) {
			if (n > MTA_STS_BODY_MAX) {
				say(why, whylen, "%s", "policy body too large");
				return -1;
			}
			n = n * 16 + (unsigned long)(isdigit((unsigned char)*x) ? *x - '0' : (tolower((unsigned char)*x) - 'a' + 10));
		}
		if (digits == 0 || (x < nl && *x != ';' && *x != '\r' && !is_wsp(*x))) {
			say(why, whylen, "%s", "bad chunk size line");
			return -1;
		}
		p = nl + 1;
		if (n == 0) {
			/* trailers, then an empty line */
			for (;;) {
				nl = memchr(p, '\n', (size_t)(end - p));
				if (nl == NULL)
					return 0;
				if (nl == p || (nl == p + 1 && *p == '\r')) {
					*blen = out;
					return 1;
				}
				p = nl + 1;
			}
		}
		if (out + n > MTA_STS_BODY_MAX) {
			say(why, whylen, "%s", "policy body too large");
			return -1;
		}
		if ((size_t)(end - p) < n + 1)
			return 0;
		memcpy(body + out, p, n);
		out += n;
		p += n;
		if (*p == '\r') {
			if (end - p < 2)
				return 0;
			p++;
		}
		if (*p != '\n') {
			say(why, whylen, "%s", "bad chunk end");
			return -1;
		}
		p++;
	}
}

int mta_sts_http_parse(const char *buf, size_t len, int eof, char *body, size_t *blen, char *why, size_t whylen)
{
	const char *end = buf + len, *he = NULL, *b = NULL, *p;
	char v[128];
	int code;

	*blen = 0;
	/* the end of the headers: an empty line (CRLF CRLF, or bare LFs from a sloppy server) */
	for (p = buf; p < end; p++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			break;
		if (nl == p || (nl == p + 1 && *p == '\r')) {
			he = p;
			b = nl + 1;
			break;
		}
		p = nl;
	}
	if (he == NULL) {
		if (len > HTTP_HEAD_MAX) {
			say(why, whylen, "%s", "response headers too large");
			return -1;
		}
		if (eof) {
			say(why, whylen, "%s", len ? "connection closed in the response headers" : "empty response");
			return -1;
		}
		return 0;
	}
	if ((size_t)(he - buf) > HTTP_HEAD_MAX) {
		say(why, whylen, "%s", "response headers too large");
		return -1;
	}
	if (he - buf < 12 || (memcmp(buf, "HTTP/1.1 ", 9) != 0 && memcmp(buf, "HTTP/1.0 ", 9) != 0) ||
	    !isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) || !isdigit((unsigned char)buf[11]) ||
	    (he - buf > 12 && buf[12] != ' ' && buf[12] != '\r' && buf[12] != '\n')) {
		say(why, whylen, "%s", "not an HTTP/1.x response");
		return -1;
	}
	code = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	if (code != 200) {
		char c[4] = { buf[9], buf[10], buf[11], 0 };
		say(why, whylen, code / 100 == 3 ? "HTTP status %s (redirects are not followed)" : "HTTP status %s", c);
		return -1;
	}
	/* RFC 8461 3.3: media type text/plain (parameters such as charset allowed) */
	if (header(buf, he, "Content-Type", v, sizeof v) < 0) {
		say(why, whylen, "%s", "no Content-Type");
		return -1;
	}
	{
		char *semi = strchr(v, ';');
		size_t n;

		if (semi)
			*semi = '\0';
		n = strlen(v);
		while (n && is_wsp(v[n - 1]))
			v[--n] = '\0';
		if (strcasecmp(v, "text/plain") != 0) {
			say(why, whylen, "Content-Type %s is not text/plain", v);
			return -1;
		}
	}
	if (header(buf, he, "Transfer-Encoding", v, sizeof v) == 0) {
		if (strcasecmp(v, "chunked") != 0) {
			say(why, whylen, "Transfer-Encoding %s not supported", v);
			return -1;
		}
		{
			int rc = dechunk(b, end, body, blen, why, whylen);
			if (rc == 0 && eof) {
				say(why, whylen, "%s", "connection closed inside the chunked body");
				return -1;
			}
			return rc;
		}
	}
	if (header(buf, he, "Content-Length", v, sizeof v) == 0) {
		unsigned long n = 0;
		const char *x;

		if (*v == '\0') {
			say(why, whylen, "%s", "bad Content-Length");
			return -1;
		}
		for (x = v; *x; x++) {
			if (!isdigit((unsigned char)*x) || n > MTA_STS_BODY_MAX) {
				say(why, whylen, "%s", !isdigit((unsigned char)*x) ? "bad Content-Length" : "policy body too large");
				return -1;
			}
			n = n * 10 + (unsigned long)(*x - '0');
		}
		if (n > MTA_STS_BODY_MAX) {
			say(why, whylen, "%s", "policy body too large");
			return -1;
		}
		if ((size_t)(end - b) < n) {
			if (eof) {
				say(why, whylen, "%s", "connection closed before the whole body");
				return -1;
			}
			return 0;
		}
		memcpy(body, b, n);
		*blen = n;
		return 1;
	}
	/* neither: the body runs to the close */
	if ((size_t)(end - b) > MTA_STS_BODY_MAX) {
		say(why, whylen, "%s", "policy body too large");
		return -1;
	}
	if (!eof)
		return 0;
	memcpy(body, b, (size_t)(end - b));
	*blen = (size_t)(end - b);
	return 1;
}
