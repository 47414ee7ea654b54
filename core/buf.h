/*
 * core/buf.h: a byte buffer with a hard cap. Growing past `max` is refused
 * (the caller answers with a protocol reply, never a bigger realloc), and so
 * is an allocation the budget refuses. Storage comes from mem_alloc().
 */
#ifndef FRUGAL_CORE_BUF_H
#define FRUGAL_CORE_BUF_H

#include <stddef.h>
#include <sys/types.h>

struct buf {
	char  *data;  /* owned; NULL until the first append */
	size_t off;   /* start of unconsumed bytes */
	size_t len;   /* end of valid bytes (data[off..len) is the content) */
	size_t cap;   /* allocated size */
	size_t max;   /* hard cap on cap */
};

void    buf_init(struct buf *b, size_t max);
void    buf_release(struct buf *b);            /* frees storage; buf stays usable */
int     buf_reserve(struct buf *b, size_t n);  /* room for n more bytes: 0 or -1 */
/* Room for up to `want` more bytes, less at the cap: the room, -2 at the cap, -1 no memory. */
ssize_t buf_reserve_upto(struct buf *b, size_t want);
int     buf_append(struct buf *b, const void *p, size_t n);
int     buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void    buf_consume(struct buf *b, size_t n);
size_t  buf_used(const struct buf *b);
char   *buf_head(const struct buf *b);
ssize_t buf_read_fd(struct buf *b, int fd, size_t want); /* read(2) into free space */
ssize_t buf_write_fd(struct buf *b, int fd);               /* write(2) from the head */

#endif
