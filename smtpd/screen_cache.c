/*
 * smtpd/screen_cache.c: the screen's pass cache (postscreen_cache_map's
 * job, in memory). A fixed table made once: sets of SCREEN_WAYS records
 * chosen by a seeded hash of the address; every operation looks at one set
 * (O(1)); a newcomer to a full set replaces the record that expires first,
 * so churn from many addresses costs old passes, never memory. Saved to a
 * text file in the queue directory (one line per record, written to a
 * temporary name and renamed) and loaded at start; a file that does not
 * parse is ignored whole. Owns no descriptor between calls.
 */
#include "smtpd/screen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fd.h"
#include "core/mem.h"

#define SCREEN_WAYS 4
#define FILE_MAGIC  "frugal-postscreen-cache 1"
#define LINE_MAX_LEN 128   /* an IPv6 address and two times fit with room to spare */

struct slot {
	struct screen_rec r;
	int used;
};

struct screen_cache {
	unsigned nsets;        /* a power of two */
	unsigned used;
	unsigned seed;         /* per process: a client cannot aim at one set from outside */
	struct slot slot[];    /* nsets * SCREEN_WAYS */
};

static unsigned sets_for(unsigned entries)
{
	unsigned n = 1;

	while (n * SCREEN_WAYS < entries && n < (1u << 24))
		n <<= 1;
	return n;
}

size_t screen_cache_bytes(unsigned entries)
{
	return sizeof(struct screen_cache) + (size_t)sets_for(entries) * SCREEN_WAYS * sizeof(struct slot);
}

struct screen_cache *screen_cache_new(unsigned entries)
{
	struct screen_cache *c = mem_calloc(1, screen_cache_bytes(entries));

	if (c == NULL)
		return NULL;
	c->nsets = sets_for(entries);
	c->seed = (unsigned)time(NULL) ^ (unsigned)getpid() * 2654435761u;
	return c;
}

void screen_cache_free(struct screen_cache *c)
{
	mem_free(c);
}

unsigned screen_cache_used(const struct screen_cache *c)
{
	return c ? c->used : 0;
}

void screen_cache_key(const struct sockaddr_storage *ss, unsigned char key[SCREEN_KEYLEN])
{
	memset(key, 0, SCREEN_KEYLEN);
	if (ss->ss_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		const unsigned char *a = (const unsigned char *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
		static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		if (memcmp(a, mapped, 12) == 0) {   /* a v4-mapped client is that IPv4 client */
			key[0] = 4;
			memcpy(key + 1, a + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, a, 16);
		}
	}
}

static struct slot *set_of(struct screen_cache *c, const unsigned char *key)
{
	unsigned h = 2166136261u ^ c->seed;
	int i;

	for (i = 0; i < SCREEN_KEYLEN; i++)
		h = (h ^ key[i]) * 16777619u;
	h ^= h >> 15;
	return &c->slot[(h & (c->nsets - 1)) * SCREEN_WAYS];
}

int screen_cache_get(struct screen_cache *c, const unsigned char key[SCREEN_KEYLEN], struct screen_rec *out)
{
	struct slot *set;
	int i;

	if (c == NULL)
		return 0;
	set = set_of(c, key);
	for (i = 0; i < SCREEN_WAYS; i++)
		if (set[i].used && memcmp(set[i].r.key, key, SCREEN_KEYLEN) == 0) {
			*out = set[i].r;
			return 1;
		}
	return 0;
}

static long long rec_end(const struct screen_rec *r)
{
	return r->greet_until > r->dnsbl_until ? r->greet_until : r->dnsbl_until;
}

void screen_cache_put(struct screen_cache *c, const struct screen_rec *r, long long now)
{
	struct slot *set, *victim = NULL;
	int i;

	if (c == NULL)
		return;
	set = set_of(c, r->key);
	for (i = 0; i < SCREEN_WAYS; i++)
		if (set[i].used && memcmp(set[i].r.key, r->key, SCREEN_KEYLEN) == 0) {
			set[i].r = *r;
			return;
		}
	for (i = 0; i < SCREEN_WAYS && victim == NULL; i++)
		if (!set[i].used || rec_end(&set[i].r) <= now)
			victim = &set[i];
	if (victim == NULL) {   /* a full set: the record that would expire first goes */
		victim = &set[0];
		for (i = 1; i < SCREEN_WAYS; i++)
			if (rec_end(&set[i].r) < rec_end(&victim->r))
				victim = &set[i];
	}
	if (!victim->used)
		c->used++;
	victim->used = 1;
	victim->r = *r;
}

/* ---- the file ---------------------------------------------------------------- */

/* A decimal time at *p (no sign, at most 18 digits): 0, or -1. */
static int time_at(const char **p, const char *end, long long *out)
{
	long long v = 0;
	int digits = 0;

	while (*p < end && **p >= '0' && **p <= '9' && digits < 18) {
		v = v * 10 + (**p - '0');
		(*p)++;
		digits++;
	}
	if (digits == 0 || (*p < end && **p >= '0' && **p <= '9'))
		return -1;
	*out = v;
	return 0;
}

int screen_cache_parse_line(const char *line, size_t len, struct screen_rec *r)
{
	const char *p = line, *end = line + len, *sp;
	char addr[INET6_ADDRSTRLEN + 1];
	unsigned char a[16];

	memset(r, 0, sizeof *r);
	if (len == 0 || len > LINE_MAX_LEN || (sp = memchr(line, ' ', len)) == NULL)
		return -1;
	if ((size_t)(sp - line) >= sizeof addr)
		return -1;
	memcpy(addr, line, (size_t)(sp - line));
	addr[sp - line] = '\0';
	if (inet_pton(AF_INET, addr, a) == 1) {
		r->key[0] = 4;
		memcpy(r->key + 1, a, 4);
	} else if (inet_pton(AF_INET6, addr, a) == 1) {
		r->key[0] = 6;
		memcpy(r->key + 1, a, 16);
	} else {
		return -1;
	}
	p = sp + 1;
	if (time_at(&p, end, &r->greet_until) < 0 || p >= end || *p++ != ' ')
		return -1;
	if (time_at(&p, end, &r->dnsbl_until) < 0 || p != end)
		return -1;
	return 0;
}

static int format_rec(const struct screen_rec *r, char *out, size_t len)
{
	char addr[INET6_ADDRSTRLEN];

	if (inet_ntop(r->key[0] == 4 ? AF_INET : AF_INET6, r->key + 1, addr, sizeof addr) == NULL)
		return -1;
	return snprintf(out, len, "%s %lld %lld\n", addr, r->greet_until, r->dnsbl_until);
}

static int write_all(int fd, const char *b, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, b, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * No fsync: the cache is an optimisation (a lost file costs clients one
 * more pregreet wait), and the loop must not wait for the disk. The rename
 * keeps a reader from ever seeing half a file.
 */
int screen_cache_save(struct screen_cache *c, const char *path, long long now, char *err, size_t errlen)
{
	char tmp[1024], buf[8192];
	size_t off = 0, i, n;
	int fd, len;

	if (c == NULL)
		return 0;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if ((fd = fd_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	off = (size_t)snprintf(buf, sizeof buf, "%s\n", FILE_MAGIC);
	n = (size_t)c->nsets * SCREEN_WAYS;
	for (i = 0; i < n; i++) {
		const struct slot *s = &c->slot[i];

		if (!s->used || rec_end(&s->r) <= now)
			continue;
		if (off + LINE_MAX_LEN > sizeof buf) {
			if (write_all(fd, buf, off) < 0)
				goto fail;
			off = 0;
		}
		if ((len = format_rec(&s->r, buf + off, sizeof buf - off)) > 0)
			off += (size_t)len;
	}
	if (write_all(fd, buf, off) < 0)
		goto fail;
	if (fd_close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	if (rename(tmp, path) < 0) {
		snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
fail:
	snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
	if (fd >= 0)
		fd_close(fd);
	unlink(tmp);
	return -1;
}

int screen_cache_load(struct screen_cache *c, const char *path, long long now, char *err, size_t errlen)
{
	char buf[8192];
	char line[LINE_MAX_LEN + 1];
	size_t llen = 0;
	int fd, lineno = 0, n = 0, magic = 0;
	ssize_t r;
	/* parsed first, kept only if the whole file parses: a corrupt file loads nothing */
	struct screen_cache *tmpc;

	if (c == NULL)
		return 0;
	if ((fd = fd_open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if ((tmpc = screen_cache_new(c->nsets * SCREEN_WAYS)) == NULL) {
		fd_close(fd);
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	tmpc->seed = c->seed;
	while ((r = read(fd, buf, sizeof buf)) != 0) {
		ssize_t i;

		if (r < 0) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto bad;
		}
		for (i = 0; i < r; i++) {
			struct screen_rec rec;

			if (buf[i] != '\n') {
				if (llen >= LINE_MAX_LEN) {
					snprintf(err, errlen, "%s:%d: line too long", path, lineno + 1);
					goto bad;
				}
				line[llen++] = buf[i];
				continue;
			}
			lineno++;
			if (!magic) {
				if (llen != strlen(FILE_MAGIC) || memcmp(line, FILE_MAGIC, llen) != 0) {
					snprintf(err, errlen, "%s:1: not a postscreen cache file", path);
					goto bad;
				}
				magic = 1;
			} else if (screen_cache_parse_line(line, llen, &rec) < 0) {
				snprintf(err, errlen, "%s:%d: bad record", path, lineno);
				goto bad;
			} else if (rec_end(&rec) > now) {
				screen_cache_put(tmpc, &rec, now);
				n++;
			}
			llen = 0;
		}
	}
	if (llen > 0 || !magic) {
		snprintf(err, errlen, "%s:%d: %s", path, lineno + 1, magic ? "truncated record" : "not a postscreen cache file");
		goto bad;
	}
	fd_close(fd);
	memcpy(c->slot, tmpc->slot, (size_t)c->nsets * SCREEN_WAYS * sizeof(struct slot));
	c->used = tmpc->used;
	screen_cache_free(tmpc);
	return n;
bad:
	fd_close(fd);
	screen_cache_free(tmpc);
	return -1;
}
