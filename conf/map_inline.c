/*
 * conf/map_inline.c: `inline:{ key=value, { key = value with spaces }, ... }`
 * tables (Postfix dict_inline): entries are separated by commas or white
 * space; an entry in braces may contain white space around '=' and in its
 * value. Keys are lower-cased. The table lives in memory; lookups are a
 * linear scan, which is right for the handful of entries these hold.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/map_impl.h"
#include "core/mem.h"

struct inline_table {
	char **keys;
	char **values;
	size_t n;
};

static void free_vec(char **v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		mem_free(v[i]);
	mem_free(v);
}

static char *trimdup(const char *s, size_t len)
{
	while (len && isspace((unsigned char)*s))
		s++, len--;
	while (len && isspace((unsigned char)s[len - 1]))
		len--;
	return mem_strndup(s, len);
}

int map_inline_parse(const char *body, char ***keysp, char ***valuesp, size_t *np,
    char *err, size_t errlen)
{
	const char *p = body;
	char **items = NULL, **keys = NULL, **values = NULL, *inner = NULL;
	size_t i, n = 0, len;

	*keysp = *valuesp = NULL;
	*np = 0;
	while (isspace((unsigned char)*p))
		p++;
	len = strlen(p);
	while (len && isspace((unsigned char)p[len - 1]))
		len--;
	if (len < 2 || p[0] != '{' || p[len - 1] != '}') {
		snprintf(err, errlen, "inline table: expected \"{ key=value, ... }\"");
		return -1;
	}
	if ((inner = mem_strndup(p + 1, len - 2)) == NULL)
		goto nomem;
	if ((items = conf_split_list(inner)) == NULL)
		goto nomem;
	for (n = 0; items[n]; n++)
		;
	if ((keys = mem_calloc(n + 1, sizeof *keys)) == NULL ||
	    (values = mem_calloc(n + 1, sizeof *values)) == NULL)
		goto nomem;
	for (i = 0; i < n; i++) {
		const char *it = items[i], *eq;
		size_t ilen = strlen(it);

		if (it[0] == '{') {
			if (ilen < 2 || it[ilen - 1] != '}') {
				snprintf(err, errlen, "inline table: unbalanced '{' in \"%.100s\"", it);
				goto fail;
			}
			it++;
			ilen -= 2;
		}
		if ((eq = memchr(it, '=', ilen)) == NULL) {
			snprintf(err, errlen, "inline table: missing '=' in \"%.100s\"", items[i]);
			goto fail;
		}
		if ((keys[i] = trimdup(it, (size_t)(eq - it))) == NULL ||
		    (values[i] = trimdup(eq + 1, ilen - (size_t)(eq + 1 - it))) == NULL)
			goto nomem;
		if (keys[i][0] == 0) {
			snprintf(err, errlen, "inline table: empty key in \"%.100s\"", items[i]);
			goto fail;
		}
		for (char *k = keys[i]; *k; k++)
			*k = tolower((unsigned char)*k);
	}
	conf_list_free(items);
	mem_free(inner);
	*keysp = keys;
	*valuesp = values;
	*np = n;
	return 0;
nomem:
	snprintf(err, errlen, "inline table: out of memory");
fail:
	free_vec(keys, n);
	free_vec(values, n);
	conf_list_free(items);
	mem_free(inner);
	return -1;
}

static int inline_lookup(struct map *m, const char *key, char **value)
{
	struct inline_table *t = m->priv;
	size_t i;

	for (i = 0; i < t->n; i++)
		if (strcmp(t->keys[i], key) == 0) {
			if ((*value = mem_strdup(t->values[i])) == NULL)
				return -1;
			return 1;
		}
	return 0;
}

static int inline_walk(struct map *m, map_walk_fn *fn, void *arg)
{
	struct inline_table *t = m->priv;
	size_t i;
	int r;

	for (i = 0; i < t->n; i++)
		if ((r = fn(arg, t->keys[i], t->values[i])) != 0)
			return r;
	return 0;
}

static void inline_close(struct map *m)
{
	struct inline_table *t = m->priv;

	if (t) {
		free_vec(t->keys, t->n);
		free_vec(t->values, t->n);
		mem_free(t);
	}
	map_free_shell(m);
}

struct map *map_inline_open(const char *spec, const char *body, char *err, size_t errlen)
{
	struct inline_table *t;
	struct map *m;

	if ((t = mem_calloc(1, sizeof *t)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", spec);
		return NULL;
	}
	if (map_inline_parse(body, &t->keys, &t->values, &t->n, err, errlen) < 0) {
		mem_free(t);
		return NULL;
	}
	if ((m = map_alloc(spec)) == NULL) {
		free_vec(t->keys, t->n);
		free_vec(t->values, t->n);
		mem_free(t);
		snprintf(err, errlen, "%s: out of memory", spec);
		return NULL;
	}
	m->priv = t;
	m->lookup = inline_lookup;
	m->close = inline_close;
	m->walk = inline_walk;
	return m;
}
