/*
 * smtpd/sasl.h: the pure parts of AUTH (RFC 4954): base64 lines, the PLAIN
 * message (RFC 4616), and what a crypt(3) hash will cost to check. No I/O,
 * no session: fuzzed by tests/fuzz/fuzz_sasl.c, tested by
 * tests/unit/test_sasl.c. smtpd/auth.c drives the exchange.
 */
#ifndef FRUGAL_SMTPD_SASL_H
#define FRUGAL_SMTPD_SASL_H

#include <stddef.h>

#define SASL_FIELD_MAX 255   /* a login or a password: longer is refused */

/*
 * Decode one base64 line (no white space inside, padding as RFC 4648).
 * out must hold (len / 4) * 3 bytes; *outlen gets the decoded length.
 * 0, or -1 when the line is not base64.
 */
int sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);

/*
 * PLAIN: authzid NUL authcid NUL passwd. authzid must be empty or equal to
 * authcid (no proxy authorization); fields are 1..SASL_FIELD_MAX bytes with
 * no NUL, CR or LF. Copies NUL-terminated into user and pass
 * (SASL_FIELD_MAX + 1 each). 0, or -1 malformed.
 */
int sasl_plain_parse(const unsigned char *msg, size_t len, char *user, char *pass);

/* A login or password from LOGIN's two steps: the same field rules. 0 or -1. */
int sasl_field_copy(const unsigned char *p, size_t len, char *out);

/*
 * Memory a check of this crypt(3) hash takes inside libcrypt: yescrypt
 * ($y$) N x r x 128 bytes from its parameters (Debian's default, $y$j9T$,
 * is 16 MiB); scrypt ($7$) likewise; the SHA-crypt and bcrypt families a
 * few KiB. -1 for a hash frugal does not take (DES, MD5, unknown).
 */
long long sasl_hash_memory(const char *hash);

#endif
