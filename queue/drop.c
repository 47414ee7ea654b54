/*
 * queue/drop.c: the maildrop format's parser (see queue/drop.h). Owns no
 * state beyond the caller's struct drop_parser; must never allocate, block
 * or trust a length it did not bound: its input is written by any local user.
 */
#include "queue/drop.h"

#include <string.h>

void drop_parser_init(struct drop_parser *p, void *arg)
{
	memset(p, 0, sizeof *p);
	p->state = DROP_ST_MAGIC;
	p->arg = arg;
}

static int fail(struct drop_parser *p, const char *why)
{
	p->state = DROP_ST_ERROR;
	p->err = why;
	return -1;
}

/* no control characters: the value becomes an envelope line in the spool */
static int value_ok(const char *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			return 0;
	return 1;
}

/* one complete record line (without its LF) */
static int record(struct drop_parser *p)
{
	char *l = p->line, *v = l + 2;
	size_t n = p->linelen, vn = n >= 2 ? n - 2 : 0;
	unsigned long len = 0;
	size_t i;

	l[n] = '\0';
	if (p->state == DROP_ST_MAGIC) {
		if (strcmp(l, DROP_MAGIC) != 0)
			return fail(p, "not a maildrop file (bad magic)");
		p->state = DROP_ST_SENDER;
		return 0;
	}
	if (n == 1 && l[0] == 'Z') {
		if (p->state != DROP_ST_BODY)
			return fail(p, "end record before the recipients");
		p->state = DROP_ST_END;
		return 0;
	}
	if (n < 2 || l[1] != ' ')
		return fail(p, "malformed record");
	switch (l[0]) {
	case 'S':
		if (p->state != DROP_ST_SENDER)
			return fail(p, "sender record out of place");
		if (!value_ok(v, vn))
			return fail(p, "control character in the sender");
		if (p->on_sender && p->on_sender(p->arg, v))
			return fail(p, "rejected by the reader");
		p->state = DROP_ST_RCPT;
		return 0;
	case 'R':
		if (p->state != DROP_ST_RCPT && !(p->state == DROP_ST_BODY && p->size == 0 && p->nrcpt > 0))
			return fail(p, "recipient record out of place");
		if (vn == 0 || !value_ok(v, vn))
			return fail(p, "empty recipient or control character in it");
		if (++p->nrcpt > DROP_RCPT_MAX)
			return fail(p, "too many recipients");
		if (p->on_rcpt && p->on_rcpt(p->arg, v))
			return fail(p, "rejected by the reader");
		p->state = DROP_ST_BODY;   /* more R records may follow until the first D */
		return 0;
	case 'D':
		if (p->state != DROP_ST_BODY)
			return fail(p, "data record before a recipient");
		if (vn == 0 || vn > 5)
			return fail(p, "bad chunk length");
		for (i = 0; i < vn; i++) {
			if (v[i] < '0' || v[i] > '9')
				return fail(p, "bad chunk length");
			len = len * 10 + (unsigned long)(v[i] - '0');
		}
		if (len == 0 || len > DROP_CHUNK_MAX)
			return fail(p, "bad chunk length");
		p->chunk_left = len;
		p->state = DROP_ST_CHUNK;
		return 0;
	default:
		return fail(p, "unknown record");
	}
}

int drop_parse(struct drop_parser *p, const char *buf, size_t n)
{
	size_t i = 0, k;
	const char *lf;

	while (i < n) {
		switch (p->state) {
		case DROP_ST_ERROR:
			return -1;
		case DROP_ST_END:
			return fail(p, "data after the end record");
		case DROP_ST_CHUNK:
			k = n - i < p->chunk_left ? n - i : p->chunk_left;
			if (p->on_data && p->on_data(p->arg, buf + i, k))
				return fail(p, "rejected by the reader");
			p->chunk_left -= k;
			p->size += k;
			i += k;
			if (p->chunk_left == 0)
				p->state = DROP_ST_BODY;
			break;
		default:
			lf = memchr(buf + i, '\n', n - i);
			k = lf ? (size_t)(lf - (buf + i)) : n - i;
			if (p->linelen + k > DROP_VALUE_MAX + 2)
				return fail(p, "record too long");
			memcpy(p->line + p->linelen, buf + i, k);
			p->linelen += k;
			i += k;
			if (lf) {
				i++;
				if (record(p) < 0)
					return -1;
				p->linelen = 0;
			}
			break;
		}
	}
	return p->state == DROP_ST_ERROR ? -1 : 0;
}

int drop_finish(struct drop_parser *p)
{
	if (p->state == DROP_ST_END)
		return 0;
	if (p->state != DROP_ST_ERROR)
		fail(p, "incomplete (no end record)");
	return -1;
}

int drop_name_valid(const char *name)
{
	size_t i;

	if (name[0] == '.' || name[0] == '\0')
		return 0;
	for (i = 0; name[i]; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f') || name[i] == '.'))
			return 0;
	return i < 64;
}

int drop_req_name_valid(const char *name)
{
	size_t n = sizeof DROP_REQ_PREFIX - 1;

	return strncmp(name, DROP_REQ_PREFIX, n) == 0 && drop_name_valid(name + n);
}
