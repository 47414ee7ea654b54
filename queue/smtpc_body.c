/*
 * queue/smtpc_body.c: the message on the client's wire (see smtpc_body.h).
 * Reads the queue file by msg_src_pread (late headers first) in SMTPC_BODY_CHUNK pieces, never more than
 * that at once; owns no memory (the caller's struct and output buffer).
 * Three stages, each optional but the last: address headers rewritten
 * (one logical header at a time), the quoted-printable conversion, and
 * LF to CRLF with dot-stuffing.
 */
#include "queue/smtpc_body.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "queue/queue_int.h"

/* the conversion's room beyond its input: CTE and MIME-Version added, under MIME_DG_OUT_MIN */
#define CONV_SLACK 512

void smtpc_body_scan_init(struct smtpc_body *b)
{
	memset(b, 0, sizeof *b);
	mime_downgrade_init(&b->scan);
}

int smtpc_body_scan(struct smtpc_body *b, const struct msg_src *src, size_t budget)
{
	char tmp[SMTPC_BODY_CHUNK];

	while (!b->scan_done && budget > 0) {
		off_t left = msg_src_len(src) - b->scan_off;
		size_t want = SMTPC_BODY_CHUNK, i;
		ssize_t n;

		/* an 8-bit byte in the body settles it: the headers (read before it) said the rest */
		if (left <= 0 || b->scan.body_8bit) {
			b->verdict = mime_downgrade_verdict(&b->scan);
			b->scan_done = 1;
			break;
		}
		if ((off_t)want > left)
			want = (size_t)left;
		if (want > budget)
			want = budget;
		n = msg_src_pread(src, tmp, want, b->scan_off);
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		for (i = 0; i < (size_t)n && !b->any8; i++)
			b->any8 = (unsigned char)tmp[i] >= 0x80;
		mime_downgrade_scan(&b->scan, tmp, (size_t)n);
		b->scan_off += n;
		budget -= (size_t)n;
	}
	return b->scan_done;
}

void smtpc_body_begin(struct smtpc_body *b, int convert, smtpc_hdr_fn *fn, void *arg)
{
	b->convert = 0;
	if (convert) {
		b->conv = b->scan;
		b->convert = mime_downgrade_start(&b->conv) == 0;
	}
	b->off = 0;
	b->bol = 1;
	b->dot_added = 0;
	b->in_hdrs = fn != NULL;
	b->hdr_midline = 0;
	b->hdr_fn = fn;
	b->hdr_arg = arg;
}

/* LF to CRLF, a dot at a line's start doubled: at most 2n bytes into out */
static void stuff(struct smtpc_body *b, const char *p, size_t n, char *out, size_t *outlen)
{
	size_t k, o = *outlen;

	for (k = 0; k < n; k++) {
		if (b->bol && p[k] == '.')
			out[o++] = '.';
		if (p[k] == '\n') {
			out[o++] = '\r';
			b->bol = 1;
		} else
			b->bol = 0;
		out[o++] = p[k];
	}
	*outlen = o;
}

/* A piece of the message through the conversion (when on) and stuffing: the bytes of p taken. */
static size_t emit(struct smtpc_body *b, const char *p, size_t n, char *out, size_t *outlen)
{
	char q[SMTPC_BODY_CHUNK + CONV_SLACK];
	size_t w, taken;

	if (!b->convert) {
		stuff(b, p, n, out, outlen);
		return n;
	}
	taken = mime_downgrade_convert(&b->conv, p, n, q, sizeof q, &w);
	stuff(b, q, w, out, outlen);
	return taken;
}

/* length of the first line of p[0..n) with its LF, or 0 when it has none */
static size_t line_len(const char *p, size_t n)
{
	const char *nl = memchr(p, '\n', n);

	return nl ? (size_t)(nl - p) + 1 : 0;
}

/*
 * In the header block with a rewriter: one logical header (or one raw line) from the file,
 * through the rewriter, to the output. 0, or -1 (errno).
 */
static int header_step(struct smtpc_body *b, const struct msg_src *src, off_t left, char *out, size_t *outlen)
{
	char h[SMTPC_BODY_CHUNK], rw[SMTPC_BODY_CHUNK];
	size_t n, len, i, rwlen, taken;
	ssize_t r;
	int rc;

	r = msg_src_pread(src, h, left < SMTPC_BODY_CHUNK ? (size_t)left : SMTPC_BODY_CHUNK, b->off);
	if (r <= 0) {
		if (r == 0)
			errno = EIO;
		return -1;
	}
	n = (size_t)r;
	if (b->hdr_midline || h[0] == ' ' || h[0] == '\t') {
		/* the rest of a line, or a folded line of a header passed as it was */
		len = line_len(h, n);
		b->hdr_midline = len == 0 && (off_t)n < left;
		if (len == 0)
			len = n;
		goto raw;
	}
	for (i = 0; i < n && h[i] != ':' && h[i] > 32 && h[i] < 127; i++)
		;
	if (i == n || h[i] != ':' || i == 0) {
		b->in_hdrs = 0;   /* the empty line, or no header: the body (the ordinary way) */
		return 0;
	}
	/* the logical header: its lines up to one that does not start with white space */
	for (len = 0;;) {
		size_t l = line_len(h + len, n - len);

		if (l == 0) {
			len = (off_t)n == left ? n : 0;   /* the file's last line, without LF; else too long */
			break;
		}
		len += l;
		if (len == n) {
			if ((off_t)n != left)
				len = 0;          /* what follows is not in sight: too long to hold */
			break;
		}
		if (h[len] != ' ' && h[len] != '\t')
			break;
	}
	if (len == 0) {
		len = line_len(h, n);
		b->hdr_midline = len == 0;
		if (len == 0)
			len = n;
		goto raw;
	}
	rc = b->hdr_fn(b->hdr_arg, h, len, rw, sizeof rw, &rwlen);
	if (rc < 0) {
		errno = EIO;
		return -1;
	}
	if (rc == 1) {
		/* the conversion passes headers nearly 1:1, inside its slack: all of it is taken */
		if (emit(b, rw, rwlen, out, outlen) != rwlen) {
			errno = EOVERFLOW;
			return -1;
		}
		b->off += (off_t)len;
		return 0;
	}
raw:
	taken = emit(b, h, len, out, outlen);
	b->off += (off_t)taken;
	return 0;
}

int smtpc_body_fill(struct smtpc_body *b, const struct msg_src *src, char *out, size_t *outlen, size_t cap)
{
	char tmp[SMTPC_BODY_CHUNK];

	while (!b->dot_added && *outlen + 2 * (SMTPC_BODY_CHUNK + CONV_SLACK) + 8 <= cap) {
		off_t left = msg_src_len(src) - b->off;
		ssize_t n;

		if (left <= 0) {
			if (b->convert) {
				char q[MIME_DG_OUT_MIN];
				stuff(b, q, mime_downgrade_finish(&b->conv, q, sizeof q), out, outlen);
			}
			if (!b->bol) {
				memcpy(out + *outlen, "\r\n", 2);
				*outlen += 2;
			}
			memcpy(out + *outlen, ".\r\n", 3);
			*outlen += 3;
			b->dot_added = 1;
			break;
		}
		if (b->in_hdrs) {
			if (header_step(b, src, left, out, outlen) < 0)
				return -1;
			continue;
		}
		n = msg_src_pread(src, tmp, left < SMTPC_BODY_CHUNK ? (size_t)left : SMTPC_BODY_CHUNK, b->off);
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		/* what the conversion did not take is read again next time */
		b->off += (off_t)emit(b, tmp, (size_t)n, out, outlen);
	}
	return 0;
}
