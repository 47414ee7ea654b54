/*
 * tests/fuzz/fuzz_drop.c: libFuzzer target for the maildrop parser
 * (queue/drop.c), whose input any local user writes. The input is fed
 * whole, then again split at every position the first byte picks (the
 * helper and the daemon read in pieces), and the two runs must agree on
 * the outcome, the recipients and the message bytes. Invariants: a stream
 * the parser accepts has a sender before its first recipient, at least one
 * recipient, values without control characters, and message bytes equal
 * to the sum of its D chunks.
 */
#include <stdint.h>
#include <string.h>

#include "queue/drop.h"

struct seen {
	int    sender, nrcpt;
	unsigned long long bytes;
	uint64_t hash;        /* FNV-1a over recipients and data: the two runs compare it */
};

static void mix(struct seen *s, const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		s->hash = (s->hash ^ (unsigned char)p[i]) * 0x100000001b3ULL;
}

static void clean(const char *v)
{
	for (; *v; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			__builtin_trap();
}

static int on_sender(void *arg, const char *a)
{
	struct seen *s = arg;

	if (s->sender || s->nrcpt)
		__builtin_trap();
	clean(a);
	s->sender = 1;
	return 0;
}

static int on_rcpt(void *arg, const char *a)
{
	struct seen *s = arg;

	if (!s->sender || *a == '\0' || s->bytes)
		__builtin_trap();
	clean(a);
	s->nrcpt++;
	mix(s, a, strlen(a) + 1);
	return 0;
}

static int on_data(void *arg, const char *p, size_t n)
{
	struct seen *s = arg;

	if (!s->nrcpt || n == 0)
		__builtin_trap();
	s->bytes += n;
	mix(s, p, n);
	return 0;
}

static int run(const uint8_t *data, size_t size, size_t split, struct seen *s, struct drop_parser *p)
{
	memset(s, 0, sizeof *s);
	s->hash = 0xcbf29ce484222325ULL;
	drop_parser_init(p, s);
	p->on_sender = on_sender;
	p->on_rcpt = on_rcpt;
	p->on_data = on_data;
	if (split > size)
		split = size;
	if (drop_parse(p, (const char *)data, split) < 0 ||
	    drop_parse(p, (const char *)data + split, size - split) < 0)
		return -1;
	return drop_finish(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct drop_parser p1, p2;
	struct seen a, b;
	int r1, r2;

	r1 = run(data, size, size, &a, &p1);
	r2 = run(data, size, size ? data[0] % (size + 1) : 0, &b, &p2);
	if (r1 != r2 || (r1 == 0 && (a.nrcpt != b.nrcpt || a.bytes != b.bytes || a.hash != b.hash)))
		__builtin_trap();
	if (r1 == 0 && (!a.sender || a.nrcpt < 1 || a.bytes != p1.size || p1.state != DROP_ST_END))
		__builtin_trap();
	if (r1 < 0 && p1.err == NULL)
		__builtin_trap();
	return 0;
}
