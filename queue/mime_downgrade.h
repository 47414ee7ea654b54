/*
 * queue/mime_downgrade.h: 8-bit mail for a peer without 8BITMIME (RFC
 * 6152), converted to 7 bits as Postfix does (disable_mime_output_conversion
 * = no): an 8-bit body becomes quoted-printable (RFC 2045 section 6.7) and
 * its Content-Transfer-Encoding header says so. Streaming, in two passes
 * over the message as read from the queue file (LF line ends, any chunk
 * sizes), in constant memory (this struct, no allocation):
 *
 *   1. mime_downgrade_init(), mime_downgrade_scan() over every chunk,
 *      mime_downgrade_verdict():
 *      MIME_DG_AS_IS: the body is 7-bit; send the message unchanged (8-bit
 *        bytes in headers go as they are, as Postfix sends them).
 *      MIME_DG_CONVERT: pass 2 is needed.
 *      MIME_DG_CANNOT: an 8-bit body this version does not convert: a
 *        multipart or message top-level type, or a body declared base64,
 *        quoted-printable, binary or an unknown encoding that holds 8-bit
 *        bytes anyway. Postfix converts MIME parts recursively; frugal does
 *        not yet (DESIGN.md says what the caller does).
 *   2. mime_downgrade_start() (same struct, after the verdict), then
 *      mime_downgrade_convert() over every chunk and mime_downgrade_finish().
 *      The output is the message with LF line ends (the client adds CR and
 *      the dot-stuffing as for any message): headers byte for byte except
 *      Content-Transfer-Encoding (replaced in place by "quoted-printable"; when
 *      absent it is added at the end of the header block, with
 *      "MIME-Version: 1.0" when that is absent too), and the body encoded:
 *      printable ASCII as is except '=', lines of at most 76 characters
 *      with soft breaks ("=" at the end), white space before a line end
 *      encoded (=20, =09), every other byte as =XX (a CR too).
 *
 * Which bodies are converted: one whose Content-Transfer-Encoding is 8bit,
 * 7bit or absent, holding 8-bit bytes. Postfix converts only a declared
 * 8bit; an unlabelled 8-bit body is converted too here, since sent as it
 * is it would break the 7-bit peer just the same.
 */
#ifndef FRUGAL_QUEUE_MIME_DOWNGRADE_H
#define FRUGAL_QUEUE_MIME_DOWNGRADE_H

#include <stddef.h>

enum { MIME_DG_AS_IS, MIME_DG_CONVERT, MIME_DG_CANNOT };

/* mime_downgrade_convert stops while fewer bytes than this are left in `out` */
#define MIME_DG_OUT_MIN 256

#define MIME_DG_NAME_MAX 64   /* a header name is kept this far: enough to know the three that matter */
#define MIME_DG_VALUE_MAX 32  /* and the start of their values */

struct mime_downgrade {
	int converting;        /* pass 2 */
	int in_body;
	int line_start;        /* at the start of a line (header block) */
	int hdr;               /* the current header: 0 other, 1 Content-Transfer-Encoding, 2 Content-Type, 3 MIME-Version */
	int hdr_state;         /* 0 reading its name, 1 its value, 2 passed through / dropped */
	char name[MIME_DG_NAME_MAX + 1];
	size_t namelen;
	char value[MIME_DG_VALUE_MAX + 1];
	size_t valuelen;
	/* what pass 1 learnt */
	int cte;               /* MIME_DG_CTE_* of the top-level body */
	int composite;         /* Content-Type multipart/ or message/ */
	int seen_cte, seen_mime_version;
	int body_8bit;
	/* pass 2: the encoder's line */
	size_t col;            /* characters on the output line so far */
	int pending_ws;        /* a space or tab not yet written (-1 none): encoded if a line end follows */
	int cte_written;
};

enum { MIME_DG_CTE_NONE, MIME_DG_CTE_7BIT, MIME_DG_CTE_8BIT, MIME_DG_CTE_OTHER };

void mime_downgrade_init(struct mime_downgrade *d);
void mime_downgrade_scan(struct mime_downgrade *d, const char *p, size_t n);
int  mime_downgrade_verdict(const struct mime_downgrade *d);

/* Pass 2 on the same struct: 0, or -1 when the verdict was not MIME_DG_CONVERT. */
int  mime_downgrade_start(struct mime_downgrade *d);
/*
 * Convert from in[0..n) into out[0..cap) (cap >= MIME_DG_OUT_MIN); returns
 * how many input bytes were taken (call again with the rest once out has
 * been drained); *outlen gets the bytes written.
 */
size_t mime_downgrade_convert(struct mime_downgrade *d, const char *in, size_t n, char *out, size_t cap,
    size_t *outlen);
/* The end of the message: what is held (a last line without LF). Returns the bytes written (< MIME_DG_OUT_MIN). */
size_t mime_downgrade_finish(struct mime_downgrade *d, char *out, size_t cap);

#endif
