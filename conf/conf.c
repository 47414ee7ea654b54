/*
 * conf/conf.c: loading frugal.conf into an immutable `struct conf`
 * (defaults from the typed table, the file's assignments, the embedded
 * development default), the typed accessors the other rooms call on the hot
 * path (bsearch over entries expanded at load), list splitting, and
 * reference counting for `frugal reload`. Never aborts: allocation failure
 * is reported as a diagnostic and NULL.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf_impl.h"
#include "core/fd.h"
#include "core/mem.h"

#define CONF_FILE_MAX (16 * 1024 * 1024)

struct assign {
	char *name;
	char *value;
	int   line;
};

struct loader {
	struct assign *v;
	size_t n, cap;
};

static int collect(void *arg, const char *name, const char *value, int line)
{
	struct loader *l = arg;
	struct assign *nv;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;

		if ((nv = mem_realloc(l->v, cap * sizeof *nv)) == NULL)
			return -1;
		l->v = nv;
		l->cap = cap;
	}
	if ((l->v[l->n].name = mem_strdup(name)) == NULL)
		return -1;
	if ((l->v[l->n].value = mem_strdup(value)) == NULL) {
		mem_free(l->v[l->n].name);
		return -1;
	}
	l->v[l->n++].line = line;
	return 0;
}

static void loader_free(struct loader *l)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		mem_free(l->v[i].name);
		mem_free(l->v[i].value);
	}
	mem_free(l->v);
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct conf_entry *)a)->name, ((const struct conf_entry *)b)->name);
}

static int key_cmp(const void *key, const void *b)
{
	return strcmp(key, ((const struct conf_entry *)b)->name);
}

struct conf_entry *conf_entry_find(const struct conf *c, const char *name)
{
	if (c == NULL || name == NULL || c->e == NULL)
		return NULL;
	return bsearch(name, c->e, c->n, sizeof *c->e, key_cmp);
}

static void conf_free(struct conf *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < c->n; i++) {
		mem_free(c->e[i].name);
		mem_free(c->e[i].raw);
		mem_free(c->e[i].def);
		mem_free(c->e[i].val[0]);
		mem_free(c->e[i].val[1]);
	}
	mem_free(c->e);
	mem_free(c->dir);
	mem_free(c->file);
	mem_free(c);
}

void conf_where(const struct conf *c, const char *name, char *buf, size_t len)
{
	const struct conf_entry *e = conf_entry_find(c, name);

	if (e && e->line)
		snprintf(buf, len, "%s:%d", c->file, e->line);
	else
		snprintf(buf, len, "%s", c->file);
}

int conf_is_set(const struct conf *c, const char *name)
{
	const struct conf_entry *e = conf_entry_find(c, name);

	return e != NULL && e->set;
}

void conf_each_later(const struct conf *c,
    void (*fn)(void *arg, const char *name, const char *where), void *arg)
{
	char loc[600];
	size_t i;

	for (i = 0; i < c->n; i++) {
		const struct conf_entry *e = &c->e[i];

		if (e->set && e->param && (e->param->flags & CF_LATER)) {
			conf_where(c, e->name, loc, sizeof loc);
			fn(arg, e->name, loc);
		}
	}
}

/*
 * The default as written. The dynamic ones (myhostname, mydomain) come from
 * the system's host name, which may take a DNS lookup (conf_system_hostname):
 * only a configuration that leaves myhostname unset pays for it. mydomain
 * follows $myhostname at expansion (conf_expand_all); `frugal config -d`
 * asks the system itself (dynamic_default).
 */
static char *default_of(const struct conf_param *p, int myhostname_set)
{
	if (strcmp(p->name, "myhostname") == 0)
		return mem_strdup(myhostname_set ? "" : conf_system_hostname());
	if (strcmp(p->name, "mydomain") == 0)
		return mem_strdup("");
	return mem_strdup(p->def);
}

/* what `frugal config -d` prints for a dynamic parameter */
static const char *dynamic_default(const struct conf_entry *e, char *buf, size_t len)
{
	char *dom;

	if (e->param == NULL || !(e->param->flags & CF_DYNAMIC))
		return e->def;
	if (strcmp(e->name, "myhostname") == 0) {
		snprintf(buf, len, "%s", conf_system_hostname());
	} else if ((dom = conf_domain_of(conf_system_hostname())) != NULL) {
		snprintf(buf, len, "%s", dom);
		mem_free(dom);
	} else {
		return e->def;
	}
	return buf;
}

static int replace(char **dst, const char *src)
{
	char *s = mem_strdup(src);

	if (s == NULL)
		return -1;
	mem_free(*dst);
	*dst = s;
	return 0;
}

/*
 * Build a conf from the file's assignments plus `over` (name, value pairs,
 * NULL-terminated; the embedded default), then expand and check.
 */
/* every configuration object made by this process gets the next number */
static unsigned long long serial_next;

unsigned long long conf_serial(const struct conf *c)
{
	return c ? c->serial : 0;
}

static struct conf *build(const char *text, const char *file, const char *const *over,
    struct conf_diags *d)
{
	struct loader l = { NULL, 0, 0 };
	struct conf *c = NULL;
	size_t i, j, cap;
	int myhostname_set = 0;

	if ((c = mem_calloc(1, sizeof *c)) == NULL)
		goto nomem;
	c->refs = 1;
	c->serial = __atomic_add_fetch(&serial_next, 1, __ATOMIC_RELAXED);
	if ((c->file = mem_strdup(file)) == NULL || (c->dir = mem_strdup("")) == NULL)
		goto nomem;
	if (conf_lex(text, file, d, collect, &l) < 0)
		goto nomem;
	for (i = 0; over && over[i]; i += 2)
		if (collect(&l, over[i], over[i + 1], 0) < 0)
			goto nomem;

	for (i = 0; i < l.n; i++)
		if (strcmp(l.v[i].name, "myhostname") == 0)
			myhostname_set = 1;
	cap = conf_param_count + l.n;
	if ((c->e = mem_calloc(cap, sizeof *c->e)) == NULL)
		goto nomem;
	for (i = 0; i < conf_param_count; i++) {
		struct conf_entry *e = &c->e[c->n++];

		e->param = &conf_param_table[i];
		if ((e->name = mem_strdup(e->param->name)) == NULL ||
		    (e->def = default_of(e->param, myhostname_set)) == NULL ||
		    (e->raw = mem_strdup(e->def)) == NULL)
			goto nomem;
	}
	for (i = 0; i < l.n; i++) {
		const struct conf_param *p = conf_param_find(l.v[i].name);

		if (p && (p->flags & CF_READONLY)) {
			conf_diag(d, 0, "%s:%d: parameter %s is read-only; assignment ignored",
			    file, l.v[i].line, p->name);
			continue;
		}
		if (p)
			continue;
		if (l.v[i].line)
			conf_diag(d, 0, "%s:%d: unknown parameter name \"%.100s\"",
			    file, l.v[i].line, l.v[i].name);
		struct conf_entry *e = &c->e[c->n++];
		if ((e->name = mem_strdup(l.v[i].name)) == NULL ||
		    (e->raw = mem_strdup("")) == NULL)
			goto nomem;
	}
	qsort(c->e, c->n, sizeof *c->e, entry_cmp);
	/* the same unknown name assigned twice: keep one entry */
	for (i = j = 0; i < c->n; i++) {
		if (j > 0 && strcmp(c->e[j - 1].name, c->e[i].name) == 0) {
			mem_free(c->e[i].name);
			mem_free(c->e[i].raw);
			mem_free(c->e[i].def);
			continue;
		}
		c->e[j++] = c->e[i];
	}
	c->n = j;
	/* later assignments win, as in Postfix */
	for (i = 0; i < l.n; i++) {
		struct conf_entry *e = conf_entry_find(c, l.v[i].name);

		if (e == NULL || (e->param && (e->param->flags & CF_READONLY)))
			continue;
		if (replace(&e->raw, l.v[i].value) < 0)
			goto nomem;
		e->line = l.v[i].line;
		e->set = 1;
	}
	if (conf_expand_all(c, d) < 0)
		goto nomem;
	loader_free(&l);
	if (d && d->errors) {
		conf_free(c);
		return NULL;
	}
	return c;
nomem:
	conf_diag(d, 1, "%s: out of memory while loading the configuration", file);
	if (d && d->errors == 0)
		d->errors = 1;
	loader_free(&l);
	conf_free(c);
	return NULL;
}

static void diags_init(struct conf_diags *d)
{
	if (d)
		memset(d, 0, sizeof *d);
}

struct conf *conf_load_text(const char *text, const char *name, struct conf_diags *d)
{
	struct conf_diags local;

	if (d == NULL)
		d = &local;
	diags_init(d);
	struct conf *c = build(text ? text : "", name ? name : "(text)", NULL, d);
	if (d == &local)
		conf_diags_free(&local);
	return c;
}

/*
 * A whole text file into a NUL-terminated mem_alloc'd string: main.cf and
 * the sources `frugal map` compiles. NULL with err set ("PATH: reason").
 * *mode (if not NULL) gets the file's permission bits.
 */
char *conf_read_text(const char *path, size_t max, mode_t *mode, char *err, size_t errlen)
{
	struct stat st;
	char *text;
	size_t len = 0;
	ssize_t r;
	int fd;

	if ((fd = fd_open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		snprintf(err, errlen, "%s: not a regular file of reasonable size", path);
		fd_close(fd);
		return NULL;
	}
	if (mode)
		*mode = st.st_mode & 0666;
	if ((text = mem_alloc((size_t)st.st_size + 1)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		fd_close(fd);
		return NULL;
	}
	while (len < (size_t)st.st_size &&
	    (r = read(fd, text + len, (size_t)st.st_size - len)) != 0) {
		if (r < 0) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
			mem_free(text);
			fd_close(fd);
			return NULL;
		}
		len += (size_t)r;
	}
	fd_close(fd);
	text[len] = 0;
	if (strlen(text) != len) {
		snprintf(err, errlen, "%s: file contains a NUL byte", path);
		mem_free(text);
		return NULL;
	}
	return text;
}

static const char *default_dir(void)
{
	const char *env = getenv("FRUGAL_CONFIG_DIR");

	return env && *env ? env : CONF_DEFAULT_DIR;
}

struct conf *conf_load(const char *dir, struct conf_diags *d)
{
	struct conf_diags local;
	struct conf *c = NULL;
	char *path, *text, err[4352];   /* a path and a reason */

	if (d == NULL)
		d = &local;
	diags_init(d);
	if (dir == NULL)
		dir = default_dir();
	if ((path = mem_printf("%s/frugal.conf", dir)) == NULL) {
		conf_diag(d, 1, "%s/frugal.conf: out of memory", dir);
		goto out;
	}
	if ((text = conf_read_text(path, CONF_FILE_MAX, NULL, err, sizeof err)) == NULL) {
		conf_diag(d, 1, "%s", err);
	} else {
		c = build(text, path, NULL, d);
		mem_free(text);
		if (c && replace(&c->dir, dir) < 0) {
			conf_diag(d, 1, "%s: out of memory", path);
			conf_unref(c);
			c = NULL;
		}
	}
	mem_free(path);
out:
	if (d == &local)
		conf_diags_free(&local);
	return c;
}

/* A literal value for the embedded text: '$' doubled so it is not expanded. */
static char *literal(const char *s)
{
	size_t n = 0, i;
	char *r, *p;

	for (i = 0; s[i]; i++)
		n += s[i] == '$' ? 2 : 1;
	if ((r = mem_alloc(n + 1)) == NULL)
		return NULL;
	for (p = r, i = 0; s[i]; i++) {
		if (s[i] == '$')
			*p++ = '$';
		*p++ = s[i];
	}
	*p = 0;
	return r;
}

struct conf *conf_load_embedded(struct conf_diags *d)
{
	struct conf_diags local;
	struct conf *c = NULL;
	char cwd[4096], pwbuf[4096], uidname[32];
	struct passwd pw, *pwp = NULL;
	char *qdir = NULL, *mdir = NULL, *cwdlit = NULL, *owner = NULL;

	if (d == NULL)
		d = &local;
	diags_init(d);
	if (getcwd(cwd, sizeof cwd) == NULL) {
		conf_diag(d, 1, "(embedded default): cannot get the current directory: %s",
		    strerror(errno));
		goto out;
	}
	if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &pwp) != 0 || pwp == NULL) {
		snprintf(uidname, sizeof uidname, "%lu", (unsigned long)geteuid());
		owner = literal(uidname);
	} else
		owner = literal(pw.pw_name);
	if ((cwdlit = literal(strcmp(cwd, "/") ? cwd : "")) == NULL || owner == NULL ||
	    (qdir = mem_printf("%s/frugal-data/queue", cwdlit)) == NULL ||
	    (mdir = mem_printf("%s/frugal-data/mail", cwdlit)) == NULL) {
		conf_diag(d, 1, "(embedded default): out of memory");
		goto out;
	}
	{
		const char *const over[] = {
			"smtpd_listen", "127.0.0.1:2525",
			"queue_directory", qdir,
			"mydestination", "localhost",
			"myhostname", "localhost",
			"local_recipient_maps", "",
			"local_mailbox_base", mdir,
			"alias_maps", "",
			"mynetworks", "",
			"maillog_file", "/dev/stderr",
			"mail_owner", owner,
			NULL,
		};
		c = build("", "(embedded default)", over, d);
	}
	if (c)
		c->embedded = 1;
out:
	mem_free(qdir);
	mem_free(mdir);
	mem_free(cwdlit);
	mem_free(owner);
	if (d == &local)
		conf_diags_free(&local);
	return c;
}

struct conf *conf_load_for_command(const char *dir_opt, struct conf_diags *d)
{
	const char *env = getenv("FRUGAL_CONFIG_DIR");
	struct stat st;

	if (dir_opt)
		return conf_load(dir_opt, d);
	if (env && *env)
		return conf_load(env, d);
	if (stat(CONF_DEFAULT_DIR "/frugal.conf", &st) == 0 || errno != ENOENT)
		return conf_load(CONF_DEFAULT_DIR, d);
	return conf_load_embedded(d);
}

struct conf *conf_load_or_say(const char *dir_opt)
{
	struct conf_diags d;
	struct conf *c;
	int i;

	memset(&d, 0, sizeof d);
	if ((c = conf_load_for_command(dir_opt, &d)) == NULL)
		for (i = 0; i < d.n; i++)
			fprintf(stderr, "frugal: %s\n", d.v[i].text);
	conf_diags_free(&d);
	return c;
}

int conf_is_embedded(const struct conf *c)
{
	return c ? c->embedded : 0;
}

const char *conf_dir(const struct conf *c)
{
	return c ? c->dir : "";
}

struct conf *conf_ref(struct conf *c)
{
	if (c)
		__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	return c;
}

void conf_unref(struct conf *c)
{
	if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
		conf_free(c);
}

/* accessors: lookups only */

const char *conf_str(const struct conf *c, const char *name, int stress)
{
	const struct conf_entry *e = conf_entry_find(c, name);

	return e ? e->val[stress ? 1 : 0] : NULL;
}

static long long num(const struct conf *c, const char *name, int stress)
{
	const struct conf_entry *e = conf_entry_find(c, name);

	if (e == NULL || e->param == NULL)
		return 0;
	switch (e->param->type) {
	case CT_INT: case CT_INT_AUTO: case CT_TIME: case CT_BOOL: case CT_PERCENT:
		return e->num[stress ? 1 : 0];
	default:
		return 0;
	}
}

long long conf_int(const struct conf *c, const char *name, int stress)
{
	return num(c, name, stress);
}

long long conf_time(const struct conf *c, const char *name, int stress)
{
	return num(c, name, stress);
}

int conf_bool(const struct conf *c, const char *name, int stress)
{
	return num(c, name, stress) != 0;
}

int conf_percent(const struct conf *c, const char *name, int stress)
{
	return (int)num(c, name, stress);
}

int conf_is_auto(const struct conf *c, const char *name, int stress)
{
	const char *v = conf_str(c, name, stress);

	return v && strcasecmp(v, "auto") == 0;
}

/* lists */

void conf_list_free(char **v)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; v[i]; i++)
		mem_free(v[i]);
	mem_free(v);
}

static int is_sep(int ch)
{
	return ch == ',' || isspace((unsigned char)ch);
}

/* Postfix mystrtokq(): separators inside { } do not split. */
char **conf_split_list(const char *value)
{
	char **v, **nv;
	size_t n = 0, cap = 8;
	const char *p = value ? value : "", *start;
	int level;

	if ((v = mem_calloc(cap, sizeof *v)) == NULL)
		return NULL;
	for (;;) {
		while (*p && is_sep(*p))
			p++;
		if (*p == 0)
			break;
		start = p;
		for (level = 0; *p && (level > 0 || !is_sep(*p)); p++) {
			if (*p == '{')
				level++;
			else if (*p == '}' && level > 0)
				level--;
		}
		if (n + 2 > cap) {
			if ((nv = mem_realloc(v, cap * 2 * sizeof *v)) == NULL)
				goto nomem;
			v = nv;
			cap *= 2;
		}
		if ((v[n] = mem_strndup(start, (size_t)(p - start))) == NULL)
			goto nomem;
		v[++n] = NULL;
	}
	return v;
nomem:
	v[n] = NULL;
	conf_list_free(v);
	return NULL;
}

char **conf_list(const struct conf *c, const char *name, int stress)
{
	const char *s = conf_str(c, name, stress);

	return conf_split_list(s ? s : "");
}

/* postconf-style printing */

int conf_print(const struct conf *c, FILE *out, int flags, char *const *names)
{
	char dyn[256];
	size_t i;
	int rc = 0;

	if (c == NULL)
		return 1;
	if (names && names[0]) {
		for (i = 0; names[i]; i++) {
			const struct conf_entry *e = conf_entry_find(c, names[i]);

			if (e == NULL) {
				fprintf(stderr, "frugal config: warning: %s: unknown parameter\n", names[i]);
				rc = 1;
				continue;
			}
			if ((flags & CONF_PRINT_DEFAULTS) && e->def == NULL) {
				fprintf(stderr, "frugal config: warning: %s: unknown parameter (no default)\n",
				    names[i]);
				rc = 1;
				continue;
			}
			if ((flags & CONF_PRINT_NONDEFAULT) && !e->set)
				continue;
			fprintf(out, "%s = %s\n", e->name,
			    (flags & CONF_PRINT_DEFAULTS) ? dynamic_default(e, dyn, sizeof dyn) : e->raw);
		}
		return rc;
	}
	for (i = 0; i < c->n; i++) {
		const struct conf_entry *e = &c->e[i];

		if (flags & CONF_PRINT_DEFAULTS) {
			if (e->def)
				fprintf(out, "%s = %s\n", e->name, dynamic_default(e, dyn, sizeof dyn));
		} else if (!(flags & CONF_PRINT_NONDEFAULT) || e->set)
			fprintf(out, "%s = %s\n", e->name, e->raw);
	}
	return ferror(out) ? 1 : rc;
}
