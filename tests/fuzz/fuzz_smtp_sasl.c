/*
 * tests/fuzz/fuzz_smtp_sasl.c: libFuzzer target for the SMTP client's AUTH
 * (queue/smtp_sasl.c), the server's side of it: the first line is an EHLO
 * AUTH value (and, parsed on its own, an options string); each further
 * line a reply "CODE text" fed to the exchange. Checks: every line made is
 * one CRLF-terminated base64 line inside the cap, and nothing is sent
 * after the exchange ended.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/smtp_sasl.h"

static void check_line(const char *line)
{
	size_t n = strlen(line);

	if (n < 3 || n >= SMTP_SASL_LINE_MAX || strcmp(line + n - 2, "\r\n") != 0 || memchr(line, '\r', n - 2))
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size, *nl;
	char line[SMTP_SASL_LINE_MAX], *copy;
	struct smtp_sasl s;
	unsigned opts;
	int mech, rc, ended = 0;
	size_t n;

	nl = memchr(p, '\n', size);
	n = nl ? (size_t)(nl - p) : size;
	if ((copy = malloc(n + 1)) == NULL)
		return 0;
	memcpy(copy, p, n);
	copy[n] = '\0';
	(void)smtp_sasl_options_parse(copy, &opts);
	free(copy);
	mech = smtp_sasl_choose(p, n, size & 1 ? SMTP_SASL_NOPLAINTEXT : 0);
	if (mech == SMTP_SASL_MECH_NONE)
		return 0;
	if (smtp_sasl_start(&s, mech, "fuzz@example.com", "p\001ss:word", line, sizeof line) != 0)
		__builtin_trap();
	check_line(line);
	for (p += n + (nl != NULL); p < end; p += n + 1) {
		int code = 0;

		nl = memchr(p, '\n', (size_t)(end - p));
		n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (n >= 3 && p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9')
			code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
		line[0] = '\0';
		rc = smtp_sasl_reply(&s, code, p + (n > 4 ? 4 : n), n > 4 ? n - 4 : 0, line, sizeof line);
		if (rc == SMTP_SASL_SEND) {
			if (ended)
				__builtin_trap();
			check_line(line);
		} else {
			if (s.pass[0] != '\0')
				__builtin_trap();   /* the password is forgotten whatever the end */
			ended = 1;
		}
		if (!nl)
			break;
	}
	smtp_sasl_clear(&s);
	return 0;
}
