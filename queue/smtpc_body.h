/*
 * queue/smtpc_body.h: the message as the SMTP and LMTP clients put it on
 * the wire (internal to queue/smtpc.c): a scan of the queue file in bounded
 * slices (is it 8-bit, can it be converted), then the stream itself: LF to
 * CRLF, dot-stuffed (RFC 5321 4.5.2), converted to quoted-printable for a
 * peer without 8BITMIME (queue/mime_downgrade.h), address headers rewritten
 * by smtp_generic_maps when a rewriter is given. Never the whole message in
 * memory: a fixed struct and buffers on the stack.
 */
#ifndef FRUGAL_QUEUE_SMTPC_BODY_H
#define FRUGAL_QUEUE_SMTPC_BODY_H

#include <stddef.h>
#include <sys/types.h>

#include "queue/mime_downgrade.h"

struct msg_src;

/*
 * Queue file bytes read at once; the stream needs about 2x free room. A
 * header longer than this (folded lines and all) is sent as it is.
 */
#define SMTPC_BODY_CHUNK (8 * 1024)

/*
 * Rewrites one whole header ("Name: value\n", folded lines included) into out:
 * 1 rewritten (*outlen set), 0 keep it, -1 error (the stream fails, errno EIO).
 */
typedef int smtpc_hdr_fn(void *arg, const char *hdr, size_t len, char *out, size_t cap, size_t *outlen);

struct smtpc_body {
	/* the scan (pass 1), once per job */
	struct mime_downgrade scan;
	off_t  scan_off;
	int    scan_done;
	int    any8;          /* a byte >= 0x80 anywhere (headers or body) */
	int    verdict;       /* MIME_DG_*, once scan_done */
	/* the stream, once per transaction */
	struct mime_downgrade conv;
	int    convert;       /* quoted-printable on the way */
	off_t  off;           /* queue file bytes taken */
	int    bol;           /* at the start of an output line (dot-stuffing) */
	int    dot_added;
	int    in_hdrs;       /* rewriting: still in the header block */
	int    hdr_midline;   /* rewriting: passing the rest of a line too long to hold */
	smtpc_hdr_fn *hdr_fn;
	void  *hdr_arg;
};

/* A new job: the scan starts over. */
void smtpc_body_scan_init(struct smtpc_body *b);
/* Up to `budget` bytes of the scan: 1 done, 0 more to do, -1 read error (errno). */
int  smtpc_body_scan(struct smtpc_body *b, const struct msg_src *src, size_t budget);
/* A transaction's stream from the start: converted or not, headers rewritten by fn (NULL: none). */
void smtpc_body_begin(struct smtpc_body *b, int convert, smtpc_hdr_fn *fn, void *arg);
/*
 * Appends to out[*outlen..cap) while at least 2 * SMTPC_BODY_CHUNK + 8 bytes
 * are free, the end of data (CRLF.CRLF) included at the end: 0, or -1 (errno).
 */
int  smtpc_body_fill(struct smtpc_body *b, const struct msg_src *src, char *out, size_t *outlen, size_t cap);

#endif
