/*
 * conf/expand.c: Postfix-style parameter expansion, done once at load for
 * stress = 0 and stress = 1: $name, ${name}, $(name), $$, ${name?value},
 * ${name:value}, ${name?{a}:{b}}, ${name?{a}}, ${name:{b}}. Each entry is
 * expanded once per stress value and memoized, so a hostile file cannot
 * make expansion exponential; a reference back to a parameter still being
 * expanded is a loop and an error naming the parameter, and nesting is
 * bounded (Postfix: "unreasonable macro call nesting").
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "conf/conf_impl.h"
#include "core/buf.h"
#include "core/mem.h"

/* core/buf's append of zero bytes to an empty buffer memcpy()s to NULL: skip it */
static int put(struct buf *b, const void *p, size_t n)
{
	return n ? buf_append(b, p, n) : 0;
}

#define EXPAND_DEPTH_MAX 100
#define VALUE_MAX (256 * 1024)

struct xctx {
	struct conf *c;
	struct conf_diags *d;
	int stress;
};

static int resolve(struct xctx *x, struct conf_entry *e, int depth);

/* "FILE:LINE" when the parameter was assigned in the file, else "FILE" */
static const char *where(struct xctx *x, const struct conf_entry *e, char *tmp, size_t len)
{
	if (e->line)
		snprintf(tmp, len, "%s:%d", x->c->file, e->line);
	else
		snprintf(tmp, len, "%s", x->c->file);
	return tmp;
}

#define ERR(x, e, ...) do { \
	char w_[300], m_[400]; \
	snprintf(m_, sizeof m_, __VA_ARGS__); \
	conf_diag((x)->d, 1, "%s: parameter %s: %s", where((x), (e), w_, sizeof w_), (e)->name, m_); \
} while (0)
#define WARN(x, e, ...) do { \
	char w_[300], m_[400]; \
	snprintf(m_, sizeof m_, __VA_ARGS__); \
	conf_diag((x)->d, 0, "%s: parameter %s: %s", where((x), (e), w_, sizeof w_), (e)->name, m_); \
} while (0)

static int isname(int ch)
{
	return isalnum((unsigned char)ch) || ch == '_';
}

/* Index just past the bracket that closes the one at s[0]; 0 when unmatched. */
static size_t match(const char *s, size_t len, char open, char close)
{
	size_t i;
	int level = 0;

	for (i = 0; i < len; i++) {
		if (s[i] == open)
			level++;
		else if (s[i] == close && --level == 0)
			return i + 1;
	}
	return 0;
}

static int append_err(struct xctx *x, struct conf_entry *owner, int *bad)
{
	if (errno == ENOBUFS) {
		if (!*bad)
			ERR(x, owner, "value longer than %d bytes after expansion", VALUE_MAX);
		*bad = 1;
		return 0;
	}
	return -1;
}

/* 0 ok (problems reported, *bad set), -1 out of memory */
static int expand(struct xctx *x, struct conf_entry *owner, const char *s, size_t len,
    struct buf *out, int depth, int *bad)
{
	size_t i = 0, j, n;

	if (depth > EXPAND_DEPTH_MAX) {
		if (!*bad)
			ERR(x, owner, "unreasonable macro call nesting (more than %d levels)",
			    EXPAND_DEPTH_MAX);
		*bad = 1;
		return 0;
	}
	while (i < len) {
		const char *name, *val, *a = NULL, *b = NULL;
		size_t nlen, alen = 0, blen = 0;
		char op = 0, close;
		char namebuf[128];
		struct conf_entry *ref;

		/* copy the literal run up to the next '$' */
		for (j = i; j < len && s[j] != '$'; j++)
			;
		if (j > i && put(out, s + i, j - i) < 0 && append_err(x, owner, bad) < 0)
			return -1;
		if (*bad)
			return 0;
		if ((i = j) >= len)
			break;
		i++; /* past '$' */
		if (i < len && s[i] == '$') {
			if (put(out, "$", 1) < 0 && append_err(x, owner, bad) < 0)
				return -1;
			i++;
			continue;
		}
		if (i < len && (s[i] == '{' || s[i] == '(')) {
			char open = s[i];

			close = open == '{' ? '}' : ')';
			if ((n = match(s + i, len - i, open, close)) == 0) {
				ERR(x, owner, "unmatched '%c' in \"%.100s\"", open, s);
				*bad = 1;
				return 0;
			}
			/* s[i+1 .. i+n-1) is the inside */
			const char *in = s + i + 1;
			size_t inlen = n - 2, k = 0;

			i += n;
			while (k < inlen && isspace((unsigned char)in[k]))
				k++;
			name = in + k;
			while (k < inlen && isname(in[k]))
				k++;
			nlen = (size_t)(in + k - name);
			while (k < inlen && isspace((unsigned char)in[k]))
				k++;
			if (nlen == 0) {
				ERR(x, owner, "missing parameter name after '$%c'", open);
				*bad = 1;
				return 0;
			}
			if (k < inlen) {
				op = in[k++];
				if (op != '?' && op != ':') {
					ERR(x, owner, "bad macro syntax \"$%c%.*s%c\"", open,
					    (int)(inlen > 100 ? 100 : inlen), in, close);
					*bad = 1;
					return 0;
				}
				while (k < inlen && isspace((unsigned char)in[k]))
					k++;
				if (k < inlen && in[k] == '{') {
					/* ${name?{a}:{b}} (Postfix 3.0) */
					size_t m = match(in + k, inlen - k, '{', '}');

					if (m == 0) {
						ERR(x, owner, "unmatched '{' in \"%.100s\"", s);
						*bad = 1;
						return 0;
					}
					a = in + k + 1;
					alen = m - 2;
					k += m;
					while (k < inlen && isspace((unsigned char)in[k]))
						k++;
					if (op == '?' && k < inlen && in[k] == ':') {
						k++;
						while (k < inlen && isspace((unsigned char)in[k]))
							k++;
						if (k >= inlen || in[k] != '{' ||
						    (m = match(in + k, inlen - k, '{', '}')) == 0) {
							ERR(x, owner, "expected '{' after ':' in \"%.100s\"", s);
							*bad = 1;
							return 0;
						}
						b = in + k + 1;
						blen = m - 2;
						k += m;
						while (k < inlen && isspace((unsigned char)in[k]))
							k++;
					}
					if (k < inlen) {
						ERR(x, owner, "garbage after '}' in \"%.100s\"", s);
						*bad = 1;
						return 0;
					}
				} else {
					/* legacy ${name?value} / ${name:value}: the rest */
					a = in + k;
					alen = inlen - k;
				}
				if (op == ':') {  /* value when empty */
					b = a;
					blen = alen;
					a = NULL;
					alen = 0;
				}
			}
		} else if (i < len && isname(s[i])) {
			name = s + i;
			while (i < len && isname(s[i]))
				i++;
			nlen = (size_t)(s + i - name);
		} else {
			/* a lone '$' stays itself */
			if (put(out, "$", 1) < 0 && append_err(x, owner, bad) < 0)
				return -1;
			continue;
		}

		if (nlen >= sizeof namebuf) {
			ERR(x, owner, "parameter name too long in \"%.100s\"", s);
			*bad = 1;
			return 0;
		}
		memcpy(namebuf, name, nlen);
		namebuf[nlen] = 0;
		val = "";
		if (x->stress && strcmp(namebuf, "stress") == 0) {
			val = "yes";
		} else if ((ref = conf_entry_find(x->c, namebuf)) == NULL) {
			if (owner->set)
				WARN(x, owner, "undefined parameter $%s", namebuf);
		} else if (ref->state[x->stress] == ES_BUSY) {
			ERR(x, owner, "recursive expansion: $%s refers back to itself", namebuf);
			*bad = 1;
			return 0;
		} else {
			if (ref->state[x->stress] == ES_TODO && resolve(x, ref, depth + 1) < 0)
				return -1;
			val = ref->val[x->stress] ? ref->val[x->stress] : "";
		}
		if (op == 0) {
			if (put(out, val, strlen(val)) < 0 && append_err(x, owner, bad) < 0)
				return -1;
		} else if (*val && a) {
			if (expand(x, owner, a, alen, out, depth + 1, bad) < 0)
				return -1;
		} else if (*val == 0 && b) {
			if (expand(x, owner, b, blen, out, depth + 1, bad) < 0)
				return -1;
		}
		if (*bad)
			return 0;
	}
	return 0;
}

static int resolve(struct xctx *x, struct conf_entry *e, int depth)
{
	struct buf out;
	int bad = 0, s = x->stress;
	char *v;

	if (x->stress && strcmp(e->name, "stress") == 0) {
		e->state[s] = ES_DONE;
		return (e->val[s] = mem_strdup("yes")) ? 0 : -1;
	}
	if (e->param && (e->param->flags & CF_RAW)) {
		/* Postfix's raw parameters: $rbl_code and friends are expanded per reply */
		e->state[s] = ES_DONE;
		return (e->val[s] = mem_strdup(e->raw)) ? 0 : -1;
	}
	if (depth > EXPAND_DEPTH_MAX) {
		ERR(x, e, "unreasonable macro call nesting (more than %d levels)", EXPAND_DEPTH_MAX);
		e->state[s] = ES_DONE;
		return (e->val[s] = mem_strdup("")) ? 0 : -1;
	}
	e->state[s] = ES_BUSY;
	buf_init(&out, VALUE_MAX);
	if (expand(x, e, e->raw, strlen(e->raw), &out, depth, &bad) < 0 ||
	    buf_reserve(&out, 1) < 0) {
		buf_release(&out);
		e->state[s] = ES_DONE;
		return -1;
	}
	if (bad)
		v = mem_strdup("");
	else
		v = mem_strndup(buf_used(&out) ? buf_head(&out) : "", buf_used(&out));
	buf_release(&out);
	e->state[s] = ES_DONE;
	if (v == NULL)
		return -1;
	e->val[s] = v;
	return 0;
}

int conf_expand_all(struct conf *c, struct conf_diags *d)
{
	struct xctx x;
	size_t i;
	int s;

	x.c = c;
	x.d = d;
	/*
	 * mydomain defaults to $myhostname minus its first label (Postfix), so
	 * it follows a myhostname set in the file. myhostname may not refer
	 * to an unset mydomain: that is a loop.
	 */
	struct conf_entry *md = conf_entry_find(c, "mydomain");
	struct conf_entry *mh = conf_entry_find(c, "myhostname");
	if (md && mh && !md->set) {
		char *dom;

		md->state[0] = md->state[1] = ES_BUSY;
		x.stress = 0;
		if (resolve(&x, mh, 0) < 0)
			return -1;
		md->state[0] = md->state[1] = ES_TODO;
		if ((dom = conf_domain_of(mh->val[0])) == NULL)
			return -1;
		mem_free(md->raw);
		md->raw = dom;
	}
	for (s = 0; s < 2; s++) {
		x.stress = s;
		for (i = 0; i < c->n; i++)
			if (c->e[i].state[s] == ES_TODO && resolve(&x, &c->e[i], 0) < 0)
				return -1;
	}
	for (i = 0; i < c->n; i++) {
		struct conf_entry *e = &c->e[i];
		const char *why;

		if (e->param == NULL)
			continue;
		for (s = 0; s < 2; s++) {
			x.stress = s;
			if (conf_parse_number(e->param, e->val[s], &e->num[s], &why) < 0) {
				ERR(&x, e, "%s: \"%.100s\"%s", why, e->val[s],
				    s && strcmp(e->val[0], e->val[1]) ? " (with stress = yes)" : "");
				break;
			}
		}
	}
	return 0;
}
