/*
 * conf/map_cdb.c: `cdb:/path/file` tables read from /path/file.cdb with
 * tinycdb, and map_compile() (`frugal map`, like postmap): text table to
 * FILE.cdb through FILE.cdb.tmp, fsync, rename, directory fsync, so a
 * reader sees the old table or the new one, never half of one (Postfix
 * dict_cdb.c, OpenSMTPD's makemap). Keys are stored lower-cased, without
 * a trailing NUL.
 */
#include <cdb.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf_impl.h"
#include "conf/map_impl.h"
#include "core/buf.h"
#include "core/fd.h"
#include "core/mem.h"

/* core/buf's append of zero bytes to an empty buffer memcpy()s to NULL: skip it */
static int put(struct buf *b, const void *p, size_t n)
{
	return n ? buf_append(b, p, n) : 0;
}

#define MAP_TEXT_MAX (256 * 1024 * 1024)

struct cdb_table {
	int fd;
	struct cdb cdb;  /* mmap'd by cdb_init(); lookups work on a copy */
};

static int cdb_lookup(struct map *m, const char *key, char **value)
{
	struct cdb_table *t = m->priv;
	struct cdb c = t->cdb; /* cdb_find() writes the value position: keep t->cdb read-only */
	const void *data;
	unsigned len;
	char *v;
	int r;

	if ((r = cdb_find(&c, key, (unsigned)strlen(key))) < 0)
		return -1;
	if (r == 0)
		return 0;
	len = cdb_datalen(&c);
	if ((data = cdb_getdata(&c)) == NULL)
		return -1;
	if ((v = mem_alloc((size_t)len + 1)) == NULL)
		return -1;
	memcpy(v, data, len);
	v[len] = 0;
	*value = v;
	return 1;
}

/* tinycdb's sequential read (cdb_seqinit/cdb_seqnext): for checks, never on a hot path */
static int cdb_walk(struct map *m, map_walk_fn *fn, void *arg)
{
	struct cdb_table *t = m->priv;
	struct cdb c = t->cdb;
	unsigned pos;
	char *k, *v;
	int r = 0, got = 0;

	cdb_seqinit(&pos, &c);
	while (r == 0 && (got = cdb_seqnext(&pos, &c)) > 0) {
		unsigned kl = cdb_keylen(&c), vl = cdb_datalen(&c);
		const void *kp = cdb_getkey(&c), *vp = cdb_getdata(&c);

		if (kp == NULL || vp == NULL)
			return -1;
		k = mem_strndup(kp, kl);
		v = mem_strndup(vp, vl);
		if (k == NULL || v == NULL)
			r = -1;
		else
			r = fn(arg, k, v);
		mem_free(k);
		mem_free(v);
	}
	return got < 0 ? -1 : r;
}

static void cdb_close(struct map *m)
{
	struct cdb_table *t = m->priv;

	if (t) {
		cdb_free(&t->cdb);
		fd_close(t->fd);
		mem_free(t);
	}
	map_free_shell(m);
}

struct map *map_cdb_open(const char *spec, const char *path, char *err, size_t errlen)
{
	struct cdb_table *t;
	struct map *m;
	char *file;

	if (*path == 0) {
		snprintf(err, errlen, "%s: missing file name", spec);
		return NULL;
	}
	if ((file = mem_printf("%s.cdb", path)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", spec);
		return NULL;
	}
	if ((t = mem_calloc(1, sizeof *t)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", spec);
		mem_free(file);
		return NULL;
	}
	if ((t->fd = fd_open(file, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "%s: cannot open %s: %s", spec, file, strerror(errno));
		goto fail;
	}
	if (cdb_init(&t->cdb, t->fd) < 0) {
		snprintf(err, errlen, "%s: %s is not a valid cdb file: %s", spec, file,
		    errno ? strerror(errno) : "bad format");
		fd_close(t->fd);
		goto fail;
	}
	if ((m = map_alloc(spec)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", spec);
		cdb_free(&t->cdb);
		fd_close(t->fd);
		goto fail;
	}
	mem_free(file);
	m->priv = t;
	m->lookup = cdb_lookup;
	m->close = cdb_close;
	m->walk = cdb_walk;
	return m;
fail:
	mem_free(t);
	mem_free(file);
	return NULL;
}

/* compile */

/* one logical line -> key, value; 0 ok, -1 syntax error (err set) */
static int split_entry(char *s, int aliases, const char *path, int line,
    char **key, char **value, char *err, size_t errlen)
{
	char *k, *e, *v;

	while (isspace((unsigned char)*s))
		s++;
	for (e = s + strlen(s); e > s && isspace((unsigned char)e[-1]); e--)
		;
	*e = 0;
	k = s;
	if (aliases) {
		if (*k == '"') { /* "name with space": value (aliases(5)) */
			if ((e = strchr(k + 1, '"')) == NULL) {
				snprintf(err, errlen, "%s:%d: unbalanced '\"' in name", path, line);
				return -1;
			}
			k++;
			*e++ = 0;
			while (isspace((unsigned char)*e))
				e++;
			if (*e != ':') {
				snprintf(err, errlen, "%s:%d: missing ':' after name", path, line);
				return -1;
			}
			v = e + 1;
		} else {
			if ((e = strchr(k, ':')) == NULL) {
				snprintf(err, errlen, "%s:%d: missing ':' after name", path, line);
				return -1;
			}
			v = e + 1;
			while (e > k && isspace((unsigned char)e[-1]))
				e--;
			*e = 0;
		}
	} else {
		for (e = k; *e && !isspace((unsigned char)*e); e++)
			;
		v = e;
		if (*e)
			*e = 0, v = e + 1;
	}
	while (isspace((unsigned char)*v))
		v++;
	if (*k == 0) {
		snprintf(err, errlen, "%s:%d: empty key", path, line);
		return -1;
	}
	if (*v == 0) {
		snprintf(err, errlen, aliases ? "%s:%d: missing value after ':'"
		    : "%s:%d: expected format: key whitespace value", path, line);
		return -1;
	}
	for (e = k; *e; e++)
		*e = tolower((unsigned char)*e);
	*key = k;
	*value = v;
	return 0;
}

static int add_entry(struct cdb_make *cm, struct buf *lb, int aliases, const char *path,
    int line, char *err, size_t errlen)
{
	char *key, *value;

	if (put(lb, "", 1) < 0) {
		snprintf(err, errlen, "%s:%d: out of memory", path, line);
		return -1;
	}
	if (split_entry(buf_head(lb), aliases, path, line, &key, &value, err, errlen) < 0)
		return -1;
	/* the first entry for a key wins, as with postmap */
	if (cdb_make_put(cm, key, (unsigned)strlen(key), value, (unsigned)strlen(value),
	    CDB_PUT_INSERT) < 0) {
		snprintf(err, errlen, "%s:%d: cannot add entry: %s", path, line, strerror(errno));
		return -1;
	}
	return 0;
}

static int sync_dir(const char *path)
{
	char *dir, *slash;
	int fd, rc = 0;

	if ((dir = mem_strdup(path)) == NULL)
		return -1;
	if ((slash = strrchr(dir, '/')) == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		slash[1] = 0;
	else
		*slash = 0;
	if ((fd = fd_open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		rc = -1;
	else {
		if (fsync(fd) < 0 && errno != EINVAL)
			rc = -1;
		fd_close(fd);
	}
	mem_free(dir);
	return rc;
}

int map_compile(const char *path, int aliases, char *err, size_t errlen)
{
	char *text = NULL, *tmp = NULL, *dst = NULL;
	const char *p, *nl, *end, *q;
	struct cdb_make cm;
	struct buf lb;
	mode_t mode = 0644;
	int fd = -1, lineno = 0, start = 0, have = 0, started = 0;

	buf_init(&lb, 1024 * 1024);
	if ((text = conf_read_text(path, MAP_TEXT_MAX, &mode, err, errlen)) == NULL)
		return -1;
	if ((tmp = mem_printf("%s.cdb.tmp", path)) == NULL ||
	    (dst = mem_printf("%s.cdb", path)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	/*
	 * The table may hold password hashes: keep the source's permissions.
	 * O_RDWR: CDB_PUT_INSERT reads back what was written.
	 */
	if ((fd = fd_open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) < 0) {
		snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
		goto fail;
	}
	(void)fchmod(fd, mode);
	if (cdb_make_start(&cm, fd) < 0) {
		snprintf(err, errlen, "%s: cdb_make_start: %s", tmp, strerror(errno));
		goto fail;
	}
	started = 1;
	for (p = text; *p; p = nl ? nl + 1 : end) {
		lineno++;
		nl = strchr(p, '\n');
		end = nl ? nl : p + strlen(p);
		if (end > p && end[-1] == '\r')
			end--;
		for (q = p; q < end && isspace((unsigned char)*q); q++)
			;
		if (q == end || *q == '#') {
			if (!nl)
				break;
			continue;
		}
		if (q > p) { /* continuation */
			if (!have) {
				snprintf(err, errlen, "%s:%d: line starts with white space but continues nothing",
				    path, lineno);
				goto fail;
			}
			if (put(&lb, " ", 1) < 0 || put(&lb, q, (size_t)(end - q)) < 0) {
				snprintf(err, errlen, "%s:%d: logical line too long", path, start);
				goto fail;
			}
		} else {
			if (have && add_entry(&cm, &lb, aliases, path, start, err, errlen) < 0)
				goto fail;
			buf_release(&lb);
			have = 1;
			start = lineno;
			if (put(&lb, p, (size_t)(end - p)) < 0) {
				snprintf(err, errlen, "%s:%d: logical line too long", path, start);
				goto fail;
			}
		}
		if (!nl)
			break;
	}
	if (have && add_entry(&cm, &lb, aliases, path, start, err, errlen) < 0)
		goto fail;
	started = 0;
	if (cdb_make_finish(&cm) < 0) {
		snprintf(err, errlen, "%s: write error: %s", tmp, strerror(errno));
		goto fail;
	}
	if (fsync(fd) < 0) {
		snprintf(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
		goto fail;
	}
	if (fd_close(fd) < 0) {
		fd = -1;
		snprintf(err, errlen, "%s: close: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, dst) < 0) {
		snprintf(err, errlen, "%s: cannot rename to %s: %s", tmp, dst, strerror(errno));
		goto fail;
	}
	if (sync_dir(dst) < 0) {
		snprintf(err, errlen, "%s: cannot sync its directory: %s", dst, strerror(errno));
		goto out_err;
	}
	buf_release(&lb);
	mem_free(text);
	mem_free(tmp);
	mem_free(dst);
	return 0;
fail:
	if (started)
		(void)cdb_make_finish(&cm); /* the only way tinycdb frees its lists */
	if (fd >= 0)
		fd_close(fd);
	if (tmp)
		unlink(tmp);
out_err:
	buf_release(&lb);
	mem_free(text);
	mem_free(tmp);
	mem_free(dst);
	return -1;
}
