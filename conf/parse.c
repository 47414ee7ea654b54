/*
 * conf/parse.c: the main.cf lexer and the diagnostics list. Turns text into
 * logical `name = value` lines (a line starting with white space continues
 * the previous one; `#` comment lines and blank lines are skipped and do not
 * end a logical line, as in Postfix readlline()). It knows nothing about
 * parameter types; conf/conf.c and conf/expand.c do.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf_impl.h"
#include "core/buf.h"
#include "core/mem.h"

/* core/buf's append of zero bytes to an empty buffer memcpy()s to NULL: skip it */
static int put(struct buf *b, const void *p, size_t n)
{
	return n ? buf_append(b, p, n) : 0;
}

#define DIAG_MAX 1000        /* a hostile file cannot make diagnostics unbounded */
#define LOGICAL_LINE_MAX (1024 * 1024)

void conf_diag(struct conf_diags *d, int is_error, const char *fmt, ...)
{
	struct conf_diag *nv, tmp;
	va_list ap;
	int i;

	if (d == NULL)
		return;
	memset(&tmp, 0, sizeof tmp);
	tmp.is_error = is_error;
	va_start(ap, fmt);
	vsnprintf(tmp.text, sizeof tmp.text, fmt, ap);
	va_end(ap);
	/* both stress expansions report the same problem: say it once */
	for (i = 0; i < d->n; i++)
		if (d->v[i].is_error == is_error && strcmp(d->v[i].text, tmp.text) == 0)
			return;
	if (is_error)
		d->errors++;
	else
		d->warnings++;
	if (d->n >= DIAG_MAX)
		return;
	if ((nv = mem_realloc(d->v, (size_t)(d->n + 1) * sizeof *nv)) == NULL)
		return; /* counted above, so the caller still sees the failure */
	d->v = nv;
	d->v[d->n++] = tmp;
}

void conf_diags_free(struct conf_diags *d)
{
	if (d == NULL)
		return;
	mem_free(d->v);
	memset(d, 0, sizeof *d);
}

static int is_blank_or_comment(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f' || *p == '\v'))
		p++;
	return p == end || *p == '#';
}

static int flush_logical(struct buf *lb, int line, const char *file,
    struct conf_diags *d, conf_assign_fn cb, void *arg)
{
	char *s, *eq, *name, *value, *e;
	int rc;

	if (put(lb, "", 1) < 0)
		return -1;
	s = buf_head(lb);
	while (isspace((unsigned char)*s))
		s++;
	if ((eq = strchr(s, '=')) == NULL) {
		conf_diag(d, 1, "%s:%d: missing '=' after parameter name", file, line);
		return 0;
	}
	name = s;
	for (e = eq; e > name && isspace((unsigned char)e[-1]); e--)
		;
	*e = 0;
	if (*name == 0) {
		conf_diag(d, 1, "%s:%d: missing parameter name before '='", file, line);
		return 0;
	}
	for (e = name; *e; e++)
		if (!isalnum((unsigned char)*e) && *e != '_') {
			conf_diag(d, 1, "%s:%d: bad parameter name \"%.100s\"", file, line, name);
			return 0;
		}
	value = eq + 1;
	while (isspace((unsigned char)*value))
		value++;
	for (e = value + strlen(value); e > value && isspace((unsigned char)e[-1]); e--)
		;
	*e = 0;
	rc = cb(arg, name, value, line);
	return rc;
}

int conf_lex(const char *text, const char *file, struct conf_diags *d,
    conf_assign_fn cb, void *arg)
{
	const char *p = text, *nl, *end;
	struct buf lb;
	int lineno = 0, start = 0, have = 0, rc = 0;

	buf_init(&lb, LOGICAL_LINE_MAX);
	while (*p) {
		lineno++;
		nl = strchr(p, '\n');
		end = nl ? nl : p + strlen(p);
		if (is_blank_or_comment(p, end))
			goto next;
		if (*p == ' ' || *p == '\t') {
			if (!have) {
				conf_diag(d, 1, "%s:%d: line starts with white space but continues nothing",
				    file, lineno);
				goto next;
			}
			while (p < end && isspace((unsigned char)*p))
				p++;
			if (put(&lb, " ", 1) < 0)
				goto toolong;
		} else {
			if (have && (rc = flush_logical(&lb, start, file, d, cb, arg)) < 0)
				goto out;
			buf_release(&lb);
			have = 1;
			start = lineno;
		}
		if (end > p && end[-1] == '\r')
			end--;
		if (put(&lb, p, (size_t)(end - p)) < 0)
			goto toolong;
next:
		p = nl ? nl + 1 : end + (*end ? 1 : 0);
		if (!nl)
			break;
		continue;
toolong:
		if (errno != ENOBUFS) {
			rc = -1; /* the allocator said no */
			goto out;
		}
		conf_diag(d, 1, "%s:%d: logical line too long", file, start);
		buf_release(&lb);
		have = 0;
		p = nl ? nl + 1 : end;
		if (!nl)
			break;
	}
	if (have)
		rc = flush_logical(&lb, start, file, d, cb, arg);
out:
	buf_release(&lb);
	return rc;
}
