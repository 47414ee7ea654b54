/*
 * smtpd/sasl.c: base64 lines, the PLAIN message and the cost of a hash
 * (see sasl.h). Pure functions: they touch only their arguments.
 */
#include "smtpd/sasl.h"

#include <string.h>

#include <openssl/evp.h>

static int b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t *outlen)
{
	size_t i, pad = 0;
	int n;

	*outlen = 0;
	if (len == 0)
		return 0;
	if (len % 4 != 0 || len > 0x7fffffff)
		return -1;
	/* OpenSSL decodes; the checks it does not make are made here: the alphabet, padding only at the end */
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '=') {
			if (i < len - 2)
				return -1;
			pad++;
		} else if (pad || !b64_char(c)) {
			return -1;
		}
	}
	if ((n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len)) < 0 || (size_t)n < pad)
		return -1;
	*outlen = (size_t)n - pad;   /* EVP_DecodeBlock counts the padding's zero bytes */
	return 0;
}

int sasl_field_copy(const unsigned char *p, size_t len, char *out)
{
	size_t i;

	if (len == 0 || len > SASL_FIELD_MAX)
		return -1;
	for (i = 0; i < len; i++)
		if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n')
			return -1;
	memcpy(out, p, len);
	out[len] = '\0';
	return 0;
}

int sasl_plain_parse(const unsigned char *msg, size_t len, char *user, char *pass)
{
	const unsigned char *z1, *z2, *end = msg + len;
	size_t zlen;

	if ((z1 = memchr(msg, '\0', len)) == NULL)
		return -1;
	if ((z2 = memchr(z1 + 1, '\0', (size_t)(end - z1 - 1))) == NULL)
		return -1;
	if (sasl_field_copy(z1 + 1, (size_t)(z2 - z1 - 1), user) < 0 ||
	    sasl_field_copy(z2 + 1, (size_t)(end - z2 - 1), pass) < 0)
		return -1;
	zlen = (size_t)(z1 - msg);
	/* an authorization identity other than the login would be acting for someone else */
	if (zlen && (zlen != strlen(user) || memcmp(msg, user, zlen) != 0))
		return -1;
	return 0;
}

/* crypt(3)'s alphabet: ./0-9A-Za-z */
static int itoa64(char c)
{
	if (c == '.') return 0;
	if (c == '/') return 1;
	if (c >= '0' && c <= '9') return c - '0' + 2;
	if (c >= 'A' && c <= 'Z') return c - 'A' + 12;
	if (c >= 'a' && c <= 'z') return c - 'a' + 38;
	return -1;
}

/*
 * yescrypt's parameter string after "$y$": a flavor character, then N's
 * log2 less one and r less one, one character each for the values Debian
 * and libxcrypt use (longer encodings, for parameters past those, are
 * refused).
 */
static long long yescrypt_memory(const char *p)
{
	int flavor, nlog, r;

	/* one character at a time: the string may end anywhere */
	if ((flavor = itoa64(p[0])) < 0 || (nlog = itoa64(p[1])) < 0 || (r = itoa64(p[2])) < 0 || nlog + 1 > 40)
		return -1;
	/* 'j' (YESCRYPT_DEFAULTS) with one-character N and r is what libxcrypt writes; other
	 * encodings carry parameters this reading would get wrong, and understate the memory */
	if (p[0] != 'j' || p[3] != '$')
		return -1;
	return 128LL * (r + 1) * (1LL << (nlog + 1));
}

long long sasl_hash_memory(const char *hash)
{
	if (strncmp(hash, "$y$", 3) == 0)
		return yescrypt_memory(hash + 3);
	if (strncmp(hash, "$7$", 3) == 0) {   /* scrypt: N log2 then r (5 characters, little-endian) */
		int nlog = itoa64(hash[3]), i, c;
		long long r = 0;

		if (nlog < 0 || nlog > 40)
			return -1;
		for (i = 0; i < 5; i++) {
			if ((c = itoa64(hash[4 + i])) < 0)   /* stops at the NUL: never reads past it */
				return -1;
			r |= (long long)c << (6 * i);
		}
		return r > 0 && r < 1024 ? 128LL * r * (1LL << nlog) : -1;
	}
	if (strncmp(hash, "$6$", 3) == 0 || strncmp(hash, "$5$", 3) == 0 ||
	    strncmp(hash, "$2b$", 4) == 0 || strncmp(hash, "$2y$", 4) == 0)
		return 16 << 10;
	return -1;
}
