/*
 * tests/fuzz/fuzz_mime_downgrade.c: libFuzzer target for the 8BITMIME
 * downgrade (queue/mime_downgrade.c). The input as a whole message, fed
 * whole and in 1-byte and 7-byte chunks through the smallest output buffer:
 * the outputs must be identical. Then the input as the body of a declared
 * 8bit message: the encoded body must be 7-bit, lines of at most 76
 * characters, no white space before a line end, and decode to the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/mime_downgrade.h"

struct sink {
	char *p;
	size_t n, cap;
};

static void add(struct sink *s, const char *p, size_t n)
{
	if (n == 0)
		return;
	if (s->n + n > s->cap) {
		s->cap = (s->n + n) * 2 + 64;
		if ((s->p = realloc(s->p, s->cap)) == NULL)
			abort();
	}
	memcpy(s->p + s->n, p, n);
	s->n += n;
}

static int run(const char *msg, size_t n, size_t chunk, struct sink *out)
{
	struct mime_downgrade d;
	char buf[MIME_DG_OUT_MIN];
	size_t i, k, t, w;
	int v;

	mime_downgrade_init(&d);
	for (i = 0; i < n; i += k) {
		k = n - i < chunk ? n - i : chunk;
		mime_downgrade_scan(&d, msg + i, k);
	}
	if ((v = mime_downgrade_verdict(&d)) != MIME_DG_CONVERT)
		return v;
	if (mime_downgrade_start(&d) != 0)
		__builtin_trap();
	for (i = 0; i < n; i += k) {
		k = n - i < chunk ? n - i : chunk;
		for (t = 0; t < k; ) {
			size_t used = mime_downgrade_convert(&d, msg + i + t, k - t, buf, sizeof buf, &w);
			if (w > sizeof buf || (used == 0 && w == 0))
				__builtin_trap();   /* no progress with an empty buffer would loop for ever */
			t += used;
			add(out, buf, w);
		}
	}
	w = mime_downgrade_finish(&d, buf, sizeof buf);
	add(out, buf, w);
	return v;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char hdr[] = "Content-Transfer-Encoding: 8bit\n\n";
	static const char want_hdr[] = "Content-Transfer-Encoding: quoted-printable\n\n";
	struct sink a = { 0 }, b = { 0 }, c = { 0 }, m = { 0 }, dec = { 0 };
	int va, vb, vc;
	size_t i, col = 0;

	va = run((const char *)data, size, size ? size : 1, &a);
	vb = run((const char *)data, size, 1, &b);
	vc = run((const char *)data, size, 7, &c);
	if (va != vb || va != vc || a.n != b.n || a.n != c.n || (a.n && (memcmp(a.p, b.p, a.n) || memcmp(a.p, c.p, a.n))))
		__builtin_trap();

	/* the body of a declared 8bit message */
	add(&m, hdr, sizeof hdr - 1);
	add(&m, (const char *)data, size);
	free(a.p);
	a.p = NULL;
	a.n = a.cap = 0;
	if (run(m.p, m.n, 5, &a) == MIME_DG_CONVERT) {
		if (a.n < sizeof want_hdr - 1 || memcmp(a.p, want_hdr, sizeof want_hdr - 1) != 0)
			__builtin_trap();
		for (i = sizeof want_hdr - 1; i < a.n; i++) {
			unsigned char ch = (unsigned char)a.p[i];
			if (ch >= 0x80)
				__builtin_trap();
			if (ch == '\n') {
				if (col && (a.p[i - 1] == ' ' || a.p[i - 1] == '\t'))
					__builtin_trap();
				add(&dec, "\n", 1);
				col = 0;
				continue;
			}
			if (++col > 76)
				__builtin_trap();
			if (ch == '=') {
				if (i + 1 < a.n && a.p[i + 1] == '\n') {
					i++;
					col = 0;
					continue;
				}
				if (i + 2 >= a.n || hexval(a.p[i + 1]) < 0 || hexval(a.p[i + 2]) < 0)
					__builtin_trap();
				ch = (unsigned char)(hexval(a.p[i + 1]) * 16 + hexval(a.p[i + 2]));
				i += 2;
				if ((col += 2) > 76)
					__builtin_trap();
			}
			add(&dec, (const char *)&ch, 1);
		}
		if (col && (a.p[a.n - 1] == ' ' || a.p[a.n - 1] == '\t'))
			__builtin_trap();
		if (dec.n != size || (size && memcmp(dec.p, data, size) != 0))
			__builtin_trap();
	}
	free(a.p);
	free(b.p);
	free(c.p);
	free(m.p);
	free(dec.p);
	return 0;
}
