/*
 * queue/mime_downgrade.c: 8-bit bodies to quoted-printable for a peer
 * without 8BITMIME (see mime_downgrade.h). One byte at a time through a
 * small header state machine, shared by both passes, then the encoder;
 * nothing is buffered but a header's name and the start of its value.
 */
#include "queue/mime_downgrade.h"

#include <string.h>
#include <strings.h>

enum { H_OTHER, H_CTE, H_CTYPE, H_MIMEVER };
enum { HS_NAME, HS_VALUE, HS_DROP };

#define QP_LINE 76   /* RFC 2045 6.7 rule 5: encoded lines of at most 76 characters, the soft break's '=' included */

void mime_downgrade_init(struct mime_downgrade *d)
{
	memset(d, 0, sizeof *d);
	d->line_start = 1;
	d->pending_ws = -1;
}

/* ---- output (pass 2); the caller keeps MIME_DG_OUT_MIN bytes of room per input byte ---- */

struct out {
	char *p;
	size_t n;
};

static void put(struct out *o, const char *s, size_t n)
{
	memcpy(o->p + o->n, s, n);
	o->n += n;
}

static void tok(struct mime_downgrade *d, struct out *o, const char *s, size_t w)
{
	if (d->col + w > QP_LINE - 1) {
		put(o, "=\n", 2);
		d->col = 0;
	}
	put(o, s, w);
	d->col += w;
}

static void tok_byte(struct mime_downgrade *d, struct out *o, unsigned char c, int literal)
{
	static const char hex[] = "0123456789ABCDEF";
	char e[3] = { '=', hex[c >> 4], hex[c & 15] };

	if (literal)
		tok(d, o, (const char *)&c, 1);
	else
		tok(d, o, e, 3);
}

static void body_byte(struct mime_downgrade *d, struct out *o, unsigned char c)
{
	if (!d->converting) {
		d->body_8bit |= c >= 0x80;
		return;
	}
	if (c == '\n') {
		if (d->pending_ws >= 0)   /* white space before a line end would be lost in transit (rule 3) */
			tok_byte(d, o, (unsigned char)d->pending_ws, 0);
		d->pending_ws = -1;
		put(o, "\n", 1);
		d->col = 0;
		return;
	}
	if (d->pending_ws >= 0)
		tok_byte(d, o, (unsigned char)d->pending_ws, 1);
	d->pending_ws = -1;
	if (c == ' ' || c == '\t')
		d->pending_ws = c;
	else
		tok_byte(d, o, c, c >= 33 && c <= 126 && c != '=');
}

/* ---- headers ---- */

static int value_is(const struct mime_downgrade *d, const char *word)
{
	size_t n = strlen(word), end;

	if (d->valuelen < n || strncasecmp(d->value, word, n) != 0)
		return 0;
	end = n;
	return word[n - 1] == '/' || end == d->valuelen || strchr(" \t\n;(", d->value[end]) != NULL;
}

/* A header ended: what it says about the body */
static void header_done(struct mime_downgrade *d)
{
	if (d->hdr_state == HS_NAME)
		return;
	switch (d->hdr) {
	case H_CTE:
		d->seen_cte = 1;
		d->cte = value_is(d, "7bit") ? MIME_DG_CTE_7BIT : value_is(d, "8bit") ? MIME_DG_CTE_8BIT : MIME_DG_CTE_OTHER;
		break;
	case H_CTYPE:
		d->composite = value_is(d, "multipart/") || value_is(d, "message/");
		break;
	case H_MIMEVER:
		d->seen_mime_version = 1;
		break;
	}
	d->hdr = H_OTHER;
}

/* The header block ended (an empty line, or a line that is no header): our additions, then the separator */
static void headers_end(struct mime_downgrade *d, struct out *o, int blank_seen)
{
	header_done(d);
	d->in_body = 1;
	if (!d->converting)
		return;
	if (!d->cte_written) {
		if (!d->seen_mime_version)
			put(o, "MIME-Version: 1.0\n", 18);
		put(o, "Content-Transfer-Encoding: quoted-printable\n", 44);
		d->cte_written = 1;
	}
	if (!blank_seen)
		put(o, "\n", 1);   /* a body must be set off by an empty line once headers are added before it */
}

static int name_is(const struct mime_downgrade *d, const char *n)
{
	return d->namelen == strlen(n) && strncasecmp(d->name, n, d->namelen) == 0;
}

static void header_byte(struct mime_downgrade *d, struct out *o, unsigned char c)
{
	size_t i;

	if (d->line_start) {
		d->line_start = 0;
		if (c == '\n') {
			headers_end(d, o, 1);
			if (d->converting)
				put(o, "\n", 1);
			return;
		}
		if ((c == ' ' || c == '\t') && d->hdr_state != HS_NAME) {
			/* a folded header's next line: same fate as its first */
			if (d->converting && d->hdr_state != HS_DROP)
				put(o, (const char *)&c, 1);
			return;
		}
		header_done(d);
		d->hdr_state = HS_NAME;
		d->namelen = 0;
		d->valuelen = 0;
	}
	switch (d->hdr_state) {
	case HS_NAME:
		if (c == ':') {
			d->hdr = name_is(d, "content-transfer-encoding") ? H_CTE : name_is(d, "content-type") ? H_CTYPE
			    : name_is(d, "mime-version") ? H_MIMEVER : H_OTHER;
			if (d->converting && d->hdr == H_CTE) {
				if (!d->cte_written)
					put(o, "Content-Transfer-Encoding: quoted-printable\n", 44);
				d->cte_written = 1;
				d->hdr_state = HS_DROP;
				return;
			}
			if (d->converting) {
				put(o, d->name, d->namelen);
				put(o, ":", 1);
			}
			d->hdr_state = HS_VALUE;
			return;
		}
		if (c < 33 || c > 126) {
			/* not a header: the body starts here, without the empty line */
			headers_end(d, o, 0);
			for (i = 0; i < d->namelen; i++)
				body_byte(d, o, (unsigned char)d->name[i]);
			body_byte(d, o, c);
			return;
		}
		if (d->namelen == MIME_DG_NAME_MAX) {
			/* longer than any name that matters: pass it on */
			if (d->converting)
				put(o, d->name, d->namelen);
			d->hdr = H_OTHER;
			d->hdr_state = HS_VALUE;
			if (d->converting)
				put(o, (const char *)&c, 1);
			return;
		}
		d->name[d->namelen++] = (char)c;
		return;
	case HS_VALUE:
		if (d->converting)
			put(o, (const char *)&c, 1);
		if (d->valuelen < MIME_DG_VALUE_MAX && !(d->valuelen == 0 && (c == ' ' || c == '\t' || c == '\n')))
			d->value[d->valuelen++] = (char)c;
		break;
	}
	if (c == '\n')
		d->line_start = 1;
}

static void one(struct mime_downgrade *d, struct out *o, unsigned char c)
{
	if (d->in_body)
		body_byte(d, o, c);
	else
		header_byte(d, o, c);
}

void mime_downgrade_scan(struct mime_downgrade *d, const char *p, size_t n)
{
	struct out o = { NULL, 0 };
	size_t i;

	if (d->in_body) {
		/* the rest of pass 1 is only looking for an 8-bit byte */
		for (i = 0; i < n && !d->body_8bit; i++)
			d->body_8bit = (unsigned char)p[i] >= 0x80;
		return;
	}
	for (i = 0; i < n; i++)
		one(d, &o, (unsigned char)p[i]);
}

int mime_downgrade_verdict(const struct mime_downgrade *d)
{
	if (!d->body_8bit)
		return MIME_DG_AS_IS;
	if (d->composite || d->cte == MIME_DG_CTE_OTHER)
		return MIME_DG_CANNOT;
	return MIME_DG_CONVERT;
}

int mime_downgrade_start(struct mime_downgrade *d)
{
	struct mime_downgrade learnt = *d;

	if (mime_downgrade_verdict(d) != MIME_DG_CONVERT)
		return -1;
	mime_downgrade_init(d);
	d->converting = 1;
	d->seen_mime_version = learnt.seen_mime_version;
	d->body_8bit = learnt.body_8bit;
	d->cte = learnt.cte;
	return 0;
}

size_t mime_downgrade_convert(struct mime_downgrade *d, const char *in, size_t n, char *out, size_t cap,
    size_t *outlen)
{
	struct out o = { out, 0 };
	size_t i;

	for (i = 0; i < n && cap - o.n >= MIME_DG_OUT_MIN; i++)
		one(d, &o, (unsigned char)in[i]);
	*outlen = o.n;
	return i;
}

size_t mime_downgrade_finish(struct mime_downgrade *d, char *out, size_t cap)
{
	struct out o = { out, 0 };

	(void)cap;
	if (!d->in_body) {
		if (d->converting && d->hdr_state == HS_NAME && !d->line_start)
			put(&o, d->name, d->namelen);   /* a last header line without its colon: as it was */
		return o.n;
	}
	if (d->converting && d->pending_ws >= 0) {
		tok_byte(d, &o, (unsigned char)d->pending_ws, 0);   /* trailing, at the very end */
		d->pending_ws = -1;
	}
	return o.n;
}
