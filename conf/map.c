/*
 * conf/map.c: lookup tables as other rooms see them: opening a spec
 * ("cdb:/path", "inline:{...}", "unix:passwd.byname"), lower-casing keys,
 * Postfix's address lookup order, and lists of tables searched in order.
 * The back ends live in map_cdb.c and map_inline.c.
 */
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/map_impl.h"
#include "core/mem.h"

#define KEY_MAX 4096   /* longer keys cannot be addresses: "not found" */

struct map *map_alloc(const char *spec)
{
	struct map *m;

	if ((m = mem_calloc(1, sizeof *m)) == NULL)
		return NULL;
	if ((m->spec = mem_strdup(spec)) == NULL) {
		mem_free(m);
		return NULL;
	}
	return m;
}

void map_free_shell(struct map *m)
{
	if (m) {
		mem_free(m->spec);
		mem_free(m);
	}
}

/* unix:passwd.byname: the value is the user's home directory */
static int passwd_lookup(struct map *m, const char *key, char **value)
{
	struct passwd pw, *res = NULL;
	long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
	size_t len = sz > 0 ? (size_t)sz : 4096;
	char *buf;
	int r;

	(void)m;
	for (;;) {
		if ((buf = mem_alloc(len)) == NULL)
			return -1;
		r = getpwnam_r(key, &pw, buf, len, &res);
		if (r != ERANGE || len >= 1024 * 1024)
			break;
		mem_free(buf);
		len *= 2;
	}
	if (r != 0 && r != ENOENT && r != ESRCH && r != EBADF && r != EPERM) {
		mem_free(buf);
		return -1;
	}
	if (res == NULL) {
		mem_free(buf);
		return 0;
	}
	*value = mem_strdup(pw.pw_dir ? pw.pw_dir : "");
	mem_free(buf);
	return *value ? 1 : -1;
}

static void passwd_close(struct map *m)
{
	map_free_shell(m);
}

struct map *map_open(const char *spec, char *err, size_t errlen)
{
	struct map *m;
	const char *colon;

	if (spec == NULL || *spec == 0) {
		snprintf(err, errlen, "empty table name");
		return NULL;
	}
	if ((colon = strchr(spec, ':')) == NULL) {
		snprintf(err, errlen, "%.200s: table name must be type:name (cdb:/path or inline:{...})",
		    spec);
		return NULL;
	}
	if (strncmp(spec, "cdb:", 4) == 0)
		return map_cdb_open(spec, spec + 4, err, errlen);
	if (strncmp(spec, "inline:", 7) == 0)
		return map_inline_open(spec, spec + 7, err, errlen);
	if (strcmp(spec, "unix:passwd.byname") == 0) {
		if ((m = map_alloc(spec)) == NULL) {
			snprintf(err, errlen, "%s: out of memory", spec);
			return NULL;
		}
		m->lookup = passwd_lookup;
		m->close = passwd_close;
		return m;
	}
	snprintf(err, errlen, "%.200s: unsupported table type \"%.*s\" (use cdb:, inline: or unix:passwd.byname)",
	    spec, (int)(colon - spec > 40 ? 40 : colon - spec), spec);
	return NULL;
}

void map_close(struct map *m)
{
	if (m)
		m->close(m);
}

const char *map_spec(const struct map *m)
{
	return m ? m->spec : "";
}

int map_lookup(struct map *m, const char *key, char **value)
{
	char lower[KEY_MAX + 1];
	size_t i, n;

	*value = NULL;
	if (m == NULL || key == NULL)
		return 0;
	if ((n = strlen(key)) > KEY_MAX)
		return 0;
	for (i = 0; i < n; i++)
		lower[i] = tolower((unsigned char)key[i]);
	lower[n] = 0;
	return m->lookup(m, lower, value);
}

/*
 * The keys Postfix tries for an address, in order: user@domain, user
 * (local_part_ok only), @domain. Returns how many keys were written.
 */
static int addr_keys(const char *addr, int local_part_ok, char keys[3][KEY_MAX + 1])
{
	const char *at = strrchr(addr, '@');
	size_t len = strlen(addr);
	int n = 0;

	if (len > KEY_MAX)
		return 0;
	memcpy(keys[n++], addr, len + 1);
	if (at == NULL)
		return n;
	if (local_part_ok && at > addr) {
		memcpy(keys[n], addr, (size_t)(at - addr));
		keys[n++][at - addr] = 0;
	}
	if (at[1])
		memcpy(keys[n++], at, strlen(at) + 1);
	return n;
}

int map_lookup_addr(struct map *m, const char *addr, int local_part_ok, char **value)
{
	char keys[3][KEY_MAX + 1];
	int i, n, r;

	*value = NULL;
	if (m == NULL || addr == NULL)
		return 0;
	n = addr_keys(addr, local_part_ok, keys);
	for (i = 0; i < n; i++)
		if ((r = map_lookup(m, keys[i], value)) != 0)
			return r;
	return 0;
}

/* lists */

struct map_list {
	struct map **v;
	size_t n;
};

struct map_list *map_list_open(const char *specs, char *err, size_t errlen)
{
	struct map_list *l;
	char **names;
	size_t i, n;

	if ((names = conf_split_list(specs ? specs : "")) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (n = 0; names[n]; n++)
		;
	if ((l = mem_calloc(1, sizeof *l)) == NULL ||
	    (n && (l->v = mem_calloc(n, sizeof *l->v)) == NULL)) {
		snprintf(err, errlen, "out of memory");
		mem_free(l);
		conf_list_free(names);
		return NULL;
	}
	for (i = 0; i < n; i++) {
		if ((l->v[i] = map_open(names[i], err, errlen)) == NULL) {
			map_list_close(l);
			conf_list_free(names);
			return NULL;
		}
		l->n++;
	}
	conf_list_free(names);
	return l;
}

void map_list_close(struct map_list *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++)
		map_close(l->v[i]);
	mem_free(l->v);
	mem_free(l);
}

int map_list_empty(const struct map_list *l)
{
	return l == NULL || l->n == 0;
}

int map_list_lookup(struct map_list *l, const char *key, char **value)
{
	size_t i;
	int r;

	*value = NULL;
	if (l == NULL)
		return 0;
	for (i = 0; i < l->n; i++)
		if ((r = map_lookup(l->v[i], key, value)) != 0)
			return r;
	return 0;
}

/* Key-major, as Postfix maps_find(): every table for user@domain first. */
int map_list_lookup_addr(struct map_list *l, const char *addr, int local_part_ok, char **value)
{
	char keys[3][KEY_MAX + 1];
	int k, n, r;

	*value = NULL;
	if (l == NULL || addr == NULL)
		return 0;
	n = addr_keys(addr, local_part_ok, keys);
	for (k = 0; k < n; k++)
		if ((r = map_list_lookup(l, keys[k], value)) != 0)
			return r;
	return 0;
}

/* ---- address extensions (recipient_delimiter) ------------------------------ */

size_t map_addr_ext(const char *addr, const char *delims)
{
	const char *at;
	size_t len, n;

	if (addr == NULL || delims == NULL || *delims == 0)
		return 0;
	at = strrchr(addr, '@');
	len = at ? (size_t)(at - addr) : strlen(addr);
	/* Postfix split_addr(): these names are never split, whatever the delimiter */
	if ((len == 10 && strncasecmp(addr, "postmaster", 10) == 0) ||
	    (len == 13 && strncasecmp(addr, "mailer-daemon", 13) == 0) ||
	    (len == 13 && strncasecmp(addr, "double-bounce", 13) == 0))
		return 0;
	if (strchr(delims, '-') &&
	    ((len > 6 && strncasecmp(addr, "owner-", 6) == 0) ||
	    (len > 8 && strncasecmp(addr + len - 8, "-request", 8) == 0)))
		return 0;
	for (n = 0; n < len; n++)
		if (strchr(delims, addr[n]))
			break;
	return n < len ? n : 0;
}

/*
 * The keys for an address with an extension at `ext` (0: none), in
 * Postfix's order; strip[k] says whether key k lost the extension.
 */
static int ext_keys(const char *addr, size_t ext, int local_part_ok, char keys[5][KEY_MAX + 1], int strip[5])
{
	const char *at = strrchr(addr, '@');
	size_t len = strlen(addr), llen = at ? (size_t)(at - addr) : len;
	int n = 0;

	if (len > KEY_MAX)
		return 0;
#define KEY(s, l, st) do { memcpy(keys[n], (s), (l)); keys[n][(l)] = 0; strip[n++] = (st); } while (0)
	KEY(addr, len, 0);                                   /* user+ext@domain */
	if (ext && at) {                                     /* user@domain */
		memcpy(keys[n], addr, ext);
		memcpy(keys[n] + ext, at, len - llen);
		keys[n][ext + len - llen] = 0;
		strip[n++] = 1;
	}
	if (at == NULL) {                                    /* a bare local part */
		if (ext)
			KEY(addr, ext, 1);
		return n;
	}
	if (local_part_ok && llen) {
		KEY(addr, llen, 0);                          /* user+ext */
		if (ext)
			KEY(addr, ext, 1);                   /* user */
	}
	if (at[1])
		KEY(at, len - llen, 0);                      /* @domain: the extension never mattered */
#undef KEY
	return n;
}

int map_list_lookup_ext(struct map_list *l, const char *addr, int local_part_ok, const char *delims,
    char **value, size_t *unmatched)
{
	char keys[5][KEY_MAX + 1];
	int strip[5], k, n, r;
	size_t ext;

	*value = NULL;
	if (unmatched)
		*unmatched = 0;
	if (l == NULL || addr == NULL)
		return 0;
	ext = map_addr_ext(addr, delims);
	n = ext_keys(addr, ext, local_part_ok, keys, strip);
	for (k = 0; k < n; k++)
		if ((r = map_list_lookup(l, keys[k], value)) != 0) {
			if (r == 1 && strip[k] && unmatched)
				*unmatched = ext;
			return r;
		}
	return 0;
}

int map_walk(struct map *m, map_walk_fn *fn, void *arg)
{
	if (m == NULL || m->walk == NULL)
		return 0;
	return m->walk(m, fn, arg);
}

int map_list_walk(struct map_list *l, map_walk_fn *fn, void *arg, const char **spec)
{
	size_t i;
	int r;

	for (i = 0; l && i < l->n; i++)
		if ((r = map_walk(l->v[i], fn, arg)) != 0) {
			if (spec)
				*spec = l->v[i]->spec;
			return r;
		}
	return 0;
}
