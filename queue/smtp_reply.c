/*
 * queue/smtp_reply.c: the SMTP client's reply parser (RFC 5321 4.2), pure
 * and bounded, fuzzed by tests/fuzz/fuzz_smtp_reply.c. Fed one line at a
 * time (without its CRLF), it assembles a possibly multi-line reply: the
 * code, the text for logs and reports (lines joined by a space, as Postfix
 * shows them, non-printable bytes as '?', truncated at SMTP_REPLY_TEXT), and
 * for an EHLO reply the extensions the client uses (RFC 1869 keywords).
 * Never allocates, never reads past the line it is given.
 */
#include "queue/queue_int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void smtp_reply_init(struct smtp_reply *r, int ehlo)
{
	memset(r, 0, sizeof *r);
	r->ehlo = ehlo;
}

static void append_text(struct smtp_reply *r, const char *p, size_t n)
{
	size_t i;

	if (r->len > 0 && r->len + 1 < sizeof r->text)
		r->text[r->len++] = ' ';
	for (i = 0; i < n && r->len + 1 < sizeof r->text; i++) {
		unsigned char ch = (unsigned char)p[i];
		/* keep UTF-8 (SMTPUTF8 replies), refuse controls: the text reaches logs and reports */
		r->text[r->len++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	r->text[r->len] = '\0';
}

/* An EHLO line's keyword (RFC 5321 4.1.1.1: ehlo-keyword [SP params]) */
static void ehlo_keyword(struct smtp_reply *r, const char *p, size_t n)
{
	static const struct { const char *kw; unsigned bit; } kws[] = {
		{ "PIPELINING", SMTP_EXT_PIPELINING }, { "SIZE", SMTP_EXT_SIZE },
		{ "8BITMIME", SMTP_EXT_8BITMIME }, { "SMTPUTF8", SMTP_EXT_SMTPUTF8 },
		{ "DSN", SMTP_EXT_DSN }, { "STARTTLS", SMTP_EXT_STARTTLS },
		{ "AUTH", SMTP_EXT_AUTH }, { "CHUNKING", SMTP_EXT_CHUNKING },
	};
	size_t k = 0, i;

	while (k < n && p[k] != ' ' && p[k] != '=')   /* "AUTH=LOGIN" is an old form of AUTH */
		k++;
	for (i = 0; i < sizeof kws / sizeof kws[0]; i++) {
		if (strlen(kws[i].kw) != k || strncasecmp(p, kws[i].kw, k) != 0)
			continue;
		r->ext |= kws[i].bit;
		if (kws[i].bit == SMTP_EXT_AUTH && k < n) {
			/* "AUTH PLAIN LOGIN" and the old "AUTH=PLAIN LOGIN": the list, printable only */
			size_t have = strlen(r->auth), d;

			if (have > 0 && have + 1 < sizeof r->auth)
				r->auth[have++] = ' ';
			for (d = k + 1; d < n && have + 1 < sizeof r->auth; d++)
				r->auth[have++] = (p[d] > ' ' && p[d] < 127) ? p[d] : ' ';
			r->auth[have] = '\0';
		}
		if (kws[i].bit == SMTP_EXT_SIZE) {
			/* "SIZE" alone or "SIZE 0": no fixed limit; an absurd number: none either */
			unsigned long long v = 0;
			size_t d = k;
			int digits = 0;

			while (d < n && p[d] == ' ')
				d++;
			for (; d < n && isdigit((unsigned char)p[d]) && digits < 19; d++, digits++)
				v = v * 10 + (unsigned long long)(p[d] - '0');
			r->size = (d == n && digits > 0) ? v : 0;
		}
	}
}

int smtp_reply_line(struct smtp_reply *r, const char *line, size_t n)
{
	int code;

	if (n < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]) || line[0] < '2' || line[0] > '5')
		return -1;
	if (n > 3 && line[3] != ' ' && line[3] != '-')
		return -1;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (r->lines > 0 && code != r->code)
		return -1;
	r->code = code;
	if (r->ehlo && r->lines > 0 && n > 4)
		ehlo_keyword(r, line + 4, n - 4);
	r->lines++;
	append_text(r, line, n);
	return n > 3 && line[3] == '-' ? 0 : 1;
}

/* The reply's enhanced status code (RFC 3463) when it has a plausible one, else X.0.0 */
void smtp_reply_dsn(const struct smtp_reply *r, char *dsn, size_t n)
{
	const char *p = r->text;
	size_t a, b, c;

	/* the first line: "550 5.1.1 text" or "550-5.1.1 text" */
	if (r->len > 4) {
		p = r->text + 4;
		a = 1;
		b = 0;
		while (isdigit((unsigned char)p[2 + b]) && b < 4)
			b++;
		c = 0;
		if (b > 0 && b <= 3 && p[2 + b] == '.')
			while (isdigit((unsigned char)p[3 + b + c]) && c < 4)
				c++;
		if (p[0] == r->text[0] && p[1] == '.' && b > 0 && b <= 3 && p[2 + b] == '.' && c > 0 && c <= 3 &&
		    (p[3 + b + c] == ' ' || p[3 + b + c] == '\0') && a + 1 + b + 1 + c < n) {
			memcpy(dsn, p, a + 1 + b + 1 + c);
			dsn[a + 1 + b + 1 + c] = '\0';
			return;
		}
	}
	snprintf(dsn, n, "%c.0.0", r->code ? '0' + r->code / 100 : '4');
}
