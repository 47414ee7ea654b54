/*
 * tests/fuzz/fuzz_sasl.c: libFuzzer target for AUTH's decoder (smtpd/sasl.c):
 * the client's base64 line, then the PLAIN message and LOGIN fields it
 * decodes to, and the hash-cost parser on the raw bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char out[4096];
	char user[SASL_FIELD_MAX + 1], pass[SASL_FIELD_MAX + 1], *copy;
	size_t n = 0;

	if (size <= 4 * (sizeof out / 3) && sasl_b64_decode((const char *)data, size, out, &n) == 0) {
		if (n > size)
			__builtin_trap();
		if (sasl_plain_parse(out, n, user, pass) == 0 && (strlen(user) > SASL_FIELD_MAX || !*user || !*pass))
			__builtin_trap();
		if (sasl_field_copy(out, n, user) == 0 && strlen(user) != n)
			__builtin_trap();
	}
	/* the raw bytes as a PLAIN message too (what a decoder bug would hand on) */
	(void)sasl_plain_parse(data, size, user, pass);
	/* exactly the string's size, so ASan sees a read past its NUL (a fixed buffer hid one) */
	if ((copy = malloc(size + 1)) != NULL) {
		memcpy(copy, data, size);
		copy[size] = '\0';
		(void)sasl_hash_memory(copy);
		free(copy);
	}
	return 0;
}
