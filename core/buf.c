/* core/buf.c: bounded buffers (see buf.h). */
#include "buf.h"
#include "mem.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof *b);
	b->max = max;
}

void buf_release(struct buf *b)
{
	mem_free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

size_t buf_used(const struct buf *b) { return b->len - b->off; }
char *buf_head(const struct buf *b) { return b->data + b->off; }

void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len)
		b->off = b->len = 0;
}

int buf_reserve(struct buf *b, size_t n)
{
	size_t used = b->len - b->off, want;
	char *p;

	if (b->cap - b->len >= n)
		return 0;
	if (used + n > b->max) {
		errno = ENOBUFS;
		return -1;
	}
	if (b->off && b->cap - used >= n) { /* compact instead of growing */
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
		return 0;
	}
	want = b->cap ? b->cap : 256;
	while (want < used + n)
		want *= 2;
	if (want > b->max)
		want = b->max;
	if (b->off) {
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
	}
	if ((p = mem_realloc(b->data, want)) == NULL)
		return -1;
	b->data = p;
	b->cap = want;
	return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (buf_reserve(b, n) < 0)
		return -1;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof tmp)
		n = sizeof tmp - 1;
	return buf_append(b, tmp, (size_t)n);
}

ssize_t buf_reserve_upto(struct buf *b, size_t want)
{
	if (buf_reserve(b, want) == 0)
		return (ssize_t)want;
	/* take what fits under the cap */
	if (b->max <= buf_used(b))
		return -2;
	want = b->max - buf_used(b);
	return buf_reserve(b, want) < 0 ? -1 : (ssize_t)want;
}

ssize_t buf_read_fd(struct buf *b, int fd, size_t want)
{
	ssize_t r, room = buf_reserve_upto(b, want);

	if (room < 0)
		return room;
	r = read(fd, b->data + b->len, (size_t)room);
	if (r > 0)
		b->len += (size_t)r;
	return r;
}

ssize_t buf_write_fd(struct buf *b, int fd)
{
	ssize_t w = write(fd, buf_head(b), buf_used(b));
	if (w > 0)
		buf_consume(b, (size_t)w);
	return w;
}
