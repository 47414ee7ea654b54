/*
 * tests/fuzz/fuzz_dkim.c: libFuzzer target for queue/dkim.c's two parsers
 * of untrusted or admin text: the domain of a From: value (any sender
 * writes it) and a dkim_signing_maps value ("selector:/path"). Invariants:
 * a found domain is non-empty, lower case, of letters, digits, '-', '.'
 * and 8-bit bytes only, and fits its buffer; a parsed key value gives a
 * selector of label characters and an absolute path, both NUL-terminated
 * inside their buffers. Reads nothing past the input (ASan says).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dom[64], sel[64], file[256], *s;
	size_t i, n;

	/* exactly the input, no terminator: the parser takes a length */
	s = malloc(size ? size : 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	if (dkim_from_domain(s, size, dom, sizeof dom) == 0) {
		n = strlen(dom);
		if (n == 0 || n >= sizeof dom || dom[0] == '.')
			__builtin_trap();
		for (i = 0; i < n; i++) {
			unsigned char c = (unsigned char)dom[i];
			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c >= 0x80))
				__builtin_trap();
		}
	}
	free(s);
	/* the table value is a C string */
	s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (dkim_key_spec_parse(s, sel, sizeof sel, file, sizeof file) == 0) {
		if (sel[0] == '\0' || strchr(sel, ':') || strchr(sel, '/') || file[0] != '/' ||
		    strlen(sel) >= sizeof sel || strlen(file) >= sizeof file)
			__builtin_trap();
	}
	free(s);
	return 0;
}
