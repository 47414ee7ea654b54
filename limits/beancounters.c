/*
 * limits/beancounters.c: OpenVZ/Virtuozzo /proc/user_beancounters.
 * Owns the parser of the "Version: 2.5" format and the mapping of its rows
 * to frugal's resources. Must never allocate, never trust the file (it may
 * be garbage, truncated, or written by the test emulator), and never
 * change anything: it only reads.
 *
 * The format (one block per container; the uid sits on the block's first row):
 *   Version: 2.5
 *          uid  resource           held    maxheld    barrier      limit    failcnt
 *         101:  kmemsize        2147135    4308992   14372700   14790164          0
 *               lockedpages           0          0        256        256          0
 * "unlimited" is LONG_MAX (9223372036854775807 on 64-bit kernels).
 */
#include "limits/detect.h"
#include "core/fd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* a cursor over one line: [p, end) */
struct cur {
	const char *p, *end;
};

static void skip_blank(struct cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r'))
		c->p++;
}

/* next white-space separated token; 0 when the line is used up */
static size_t token(struct cur *c, const char **tok)
{
	const char *s;

	skip_blank(c);
	s = c->p;
	while (c->p < c->end && *c->p != ' ' && *c->p != '\t' && *c->p != '\r')
		c->p++;
	*tok = s;
	return (size_t)(c->p - s);
}

/* Decimal, no sign: the kernel prints unsigned longs. Past LLONG_MAX it is
 * "unlimited" anyway, so overflow saturates instead of failing. */
static int parse_num(const char *s, size_t n, long long *v)
{
	unsigned long long x = 0;
	size_t i;

	if (n == 0)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (x > (unsigned long long)LLONG_MAX / 10)
			x = (unsigned long long)LLONG_MAX + 1;
		else
			x = x * 10 + (unsigned)(s[i] - '0');
	}
	*v = x > (unsigned long long)LLONG_MAX ? LLONG_MAX : (long long)x;
	return 0;
}

static int tok_is(const char *t, size_t n, const char *word)
{
	return strlen(word) == n && memcmp(t, word, n) == 0;
}

int limits_ubc_parse(const char *buf, size_t len, struct limits_ubc *out,
    char *err, size_t errlen)
{
	const char *p = buf, *end = buf + len;
	int lineno = 0, have_version = 0, in_chosen = 0, chosen_any = 0;
	long long cur_uid = -1;

	memset(out, 0, sizeof *out);
	out->uid = -1;
	if (errlen)
		err[0] = '\0';
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		struct cur c = { p, nl ? nl : end };
		const char *t;
		size_t n;
		long long vals[5];
		int i;

		p = nl ? nl + 1 : end;
		lineno++;
		if ((n = token(&c, &t)) == 0)
			continue;                      /* blank line */
		if (!have_version) {
			const char *v;
			size_t vn;

			if (!tok_is(t, n, "Version:") || (vn = token(&c, &v)) < 2 || v[0] != '2' || v[1] != '.') {
				snprintf(err, errlen, "line %d: not a \"Version: 2.5\" beancounters file", lineno);
				return -1;
			}
			have_version = 1;
			continue;
		}
		if (tok_is(t, n, "uid"))
			continue;                      /* the column header */
		if (t[n - 1] == ':') {
			/* the first row of a block: "101:" */
			long long uid;

			if (parse_num(t, n - 1, &uid) < 0) {
				snprintf(err, errlen, "line %d: bad container id", lineno);
				return -1;
			}
			out->blocks++;
			cur_uid = uid;
			/* a container sees only its own block; on a host node frugal
			 * is charged to uid 0, so uid 0 wins over the first block */
			if (!chosen_any || (uid == 0 && out->uid != 0)) {
				in_chosen = 1;
				chosen_any = 1;
				out->uid = uid;
				out->nrows = 0;
			} else {
				in_chosen = 0;
			}
			if ((n = token(&c, &t)) == 0) {
				snprintf(err, errlen, "line %d: truncated row", lineno);
				return -1;
			}
		} else if (cur_uid < 0) {
			snprintf(err, errlen, "line %d: row outside a container block", lineno);
			return -1;
		}
		/* t is the resource name; five numbers follow */
		if (n >= sizeof out->rows[0].name) {
			snprintf(err, errlen, "line %d: resource name too long", lineno);
			return -1;
		}
		for (i = 0; i < 5; i++) {
			const char *v;
			size_t vn = token(&c, &v);

			if (vn == 0) {
				snprintf(err, errlen, "line %d: truncated row (%d of 5 values)", lineno, i);
				return -1;
			}
			if (parse_num(v, vn, &vals[i]) < 0) {
				snprintf(err, errlen, "line %d: bad value for %.*s", lineno, (int)n, t);
				return -1;
			}
		}
		{
			const char *extra;
			if (token(&c, &extra) != 0) {
				snprintf(err, errlen, "line %d: extra columns", lineno);
				return -1;
			}
		}
		if (in_chosen && out->nrows < LIMITS_UBC_MAX_ROWS) {
			struct limits_ubc_row *r = &out->rows[out->nrows++];

			memcpy(r->name, t, n);
			r->name[n] = '\0';
			r->held = vals[0];
			r->maxheld = vals[1];
			r->barrier = vals[2];
			r->limit = vals[3];
			r->failcnt = vals[4];
		}
	}
	if (!have_version) {
		snprintf(err, errlen, "empty file");
		return -1;
	}
	if (!chosen_any || out->nrows == 0) {
		snprintf(err, errlen, "no container block");
		return -1;
	}
	/* a file cut short in the middle of a number looks complete to the
	 * loop above; a real file always ends with a newline */
	if (len && buf[len - 1] != '\n') {
		snprintf(err, errlen, "truncated (no final newline)");
		return -1;
	}
	return 0;
}

const struct limits_ubc_row *limits_ubc_find(const struct limits_ubc *u, const char *name)
{
	int i;

	for (i = 0; i < u->nrows; i++)
		if (strcmp(u->rows[i].name, name) == 0)
			return &u->rows[i];
	return NULL;
}

static long long mul_sat(long long a, long long b)
{
	if (a == LIMITS_UNLIMITED || b == LIMITS_UNLIMITED)
		return LIMITS_UNLIMITED;
	if (a > 0 && b > 0 && a > LLONG_MAX / b)
		return LIMITS_UNLIMITED;
	return a * b;
}

/*
 * The cap new objects fail at. For counted objects (sockets, files,
 * processes) and privvmpages the kernel refuses at the barrier (the limit is
 * only a second line for some memory kinds), so the barrier is the cap. In
 * VSwap containers physpages and swappages have barrier 0 and the limit is
 * the cap; a barrier of 0 is read that way everywhere.
 */
static long long cap_of(const struct limits_ubc_row *r)
{
	if (r->barrier > 0 && r->barrier <= r->limit)
		return r->barrier;
	return r->limit;
}

static void set_res(struct limits_snapshot *s, enum limits_res k, const struct limits_ubc_row *r,
    long long unit, const char *source)
{
	struct limits_res_state *st = &s->r[k];

	st->source = source;
	st->limit = mul_sat(cap_of(r), unit);
	st->hardlimit = mul_sat(r->limit, unit);
	st->held = mul_sat(r->held, unit);
	st->maxheld = mul_sat(r->maxheld, unit);
	st->failcnt = r->failcnt;
}

/*
 * On OpenVZ /proc/user_beancounters is root's to read, and procfs checks at
 * open: the daemon opens it while still root and reads the same
 * descriptor from the start at every sample after it has become mail_owner.
 */
static int kept_fd = -1;
static char kept_path[256];

void limits_beancounters_keep(const char *path)
{
	if (path == NULL || *path == '\0' || kept_fd >= 0)
		return;
	if ((kept_fd = fd_open(path, O_RDONLY | O_CLOEXEC)) >= 0)
		snprintf(kept_path, sizeof kept_path, "%s", path);
}

static long read_kept(char *buf, size_t size)
{
	size_t got = 0;

	while (got < size - 1) {
		ssize_t n = pread(kept_fd, buf + got, size - 1 - got, (off_t)got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	return (long)got;
}

void limits_detect_beancounters(const char *path, struct limits_snapshot *s)
{
	static const struct { const char *row; enum limits_res res; } counted[] = {
		{ "numothersock", LR_NUMOTHERSOCK }, { "numtcpsock", LR_NUMTCPSOCK },
		{ "numfile", LR_NUMFILE }, { "numproc", LR_NUMPROC },
		{ "tcpsndbuf", LR_TCPSNDBUF }, { "tcprcvbuf", LR_TCPRCVBUF },
		{ "othersockbuf", LR_OTHERSOCKBUF },
	};
	/* a 2.5 file of a 24-row block is about 2.5 KB; a host's may be long */
	static char buf[64 * 1024];
	struct limits_ubc u;
	const struct limits_ubc_row *r;
	char err[160];
	long page = sysconf(_SC_PAGESIZE);
	long n;
	size_t i;
	int any = 0;

	if (path == NULL || *path == '\0')
		return;
	if ((n = kept_fd >= 0 && strcmp(path, kept_path) == 0 ? read_kept(buf, sizeof buf)
	    : limits_read_file(path, buf, sizeof buf)) < 0) {
		/* absent is normal outside OpenVZ; unreadable is worth a word */
		if (errno != ENOENT)
			limits_snapshot_warn(s, "%s: %s", path, strerror(errno));
		return;
	}
	if (limits_ubc_parse(buf, (size_t)n, &u, err, sizeof err) < 0) {
		limits_snapshot_warn(s, "%s: %s; beancounters ignored", path, err);
		return;
	}
	if (page <= 0)
		page = 4096;
	for (i = 0; i < sizeof counted / sizeof counted[0]; i++)
		if ((r = limits_ubc_find(&u, counted[i].row)) != NULL) {
			set_res(s, counted[i].res, r, 1, "beancounters");
			any = 1;
		}
	/* memory: privvmpages (what malloc draws on) unless it is unlimited, as
	 * in VSwap containers, where physpages' limit is the RAM the container has */
	r = limits_ubc_find(&u, "privvmpages");
	if (r && cap_of(r) != LIMITS_UNLIMITED) {
		set_res(s, LR_MEMORY, r, page, "beancounters privvmpages");
		any = 1;
	} else if ((r = limits_ubc_find(&u, "physpages")) != NULL && cap_of(r) != LIMITS_UNLIMITED) {
		set_res(s, LR_MEMORY, r, page, "beancounters physpages");
		any = 1;
	} else if (r || (r = limits_ubc_find(&u, "privvmpages")) != NULL) {
		set_res(s, LR_MEMORY, r, page, "beancounters privvmpages");
		any = 1;
	}
	if (any)
		s->found |= LIMITS_SRC_BEANCOUNTERS;
	else
		limits_snapshot_warn(s, "%s: no known resource rows", path);
}
