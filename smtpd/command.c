/*
 * smtpd/command.c: the SMTP command and path parser (see command.h). Pure:
 * no allocation, no globals, no I/O. Everything an attacker sends passes
 * here first, so every length is checked before it is used.
 */
#include "command.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct { const char *name; enum smtpd_verb verb; } verbs[] = {
	{ "HELO", CMD_HELO }, { "EHLO", CMD_EHLO }, { "MAIL", CMD_MAIL },
	{ "RCPT", CMD_RCPT }, { "DATA", CMD_DATA }, { "RSET", CMD_RSET },
	{ "NOOP", CMD_NOOP }, { "QUIT", CMD_QUIT }, { "VRFY", CMD_VRFY },
	{ "EXPN", CMD_EXPN }, { "HELP", CMD_HELP }, { "STARTTLS", CMD_STARTTLS },
	{ "AUTH", CMD_AUTH }, { "BDAT", CMD_BDAT }, { "ETRN", CMD_ETRN },
};

const char *smtpd_verb_name(enum smtpd_verb v)
{
	size_t i;

	for (i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "UNKNOWN";
}

void smtpd_cmd_parse(const char *line, size_t len, struct smtpd_cmd *out)
{
	size_t n = 0, i;

	out->verb = CMD_UNKNOWN;
	out->arg = line + len;
	out->arglen = 0;
	while (n < len && line[n] != ' ' && line[n] != '\t')
		n++;
	for (i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
		if (strlen(verbs[i].name) == n && strncasecmp(line, verbs[i].name, n) == 0) {
			out->verb = verbs[i].verb;
			break;
		}
	}
	if (n < len)
		n++; /* the separating space */
	out->arg = line + n;
	out->arglen = len - n;
	/* trailing white space is not part of the argument (RFC 5321 is strict; clients are not) */
	while (out->arglen && (out->arg[out->arglen - 1] == ' ' || out->arg[out->arglen - 1] == '\t'))
		out->arglen--;
}

int smtpd_valid_hostname(const char *s)
{
	size_t label = 0, total = 0;
	const unsigned char *p = (const unsigned char *)s;

	if (*p == '\0' || *p == '.' || *p == '-')
		return 0;
	for (; *p; p++, total++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!(isalnum(*p) || *p == '-' || *p == '_' || *p >= 0x80))
			return 0;
		if (label == 0 && *p == '-')
			return 0;
		if (++label > 63)
			return 0;
	}
	if (total > 255)
		return 0;
	return label > 0 || total > 1; /* a trailing dot is allowed */
}

int smtpd_valid_addr_literal(const char *s)
{
	char tmp[64];
	unsigned char bin[16];
	size_t n = strlen(s);

	if (n < 3 || s[0] != '[' || s[n - 1] != ']' || n - 2 >= sizeof tmp)
		return 0;
	memcpy(tmp, s + 1, n - 2);
	tmp[n - 2] = '\0';
	if (strncasecmp(tmp, "IPv6:", 5) == 0)
		return inet_pton(AF_INET6, tmp + 5, bin) == 1;
	return inet_pton(AF_INET, tmp, bin) == 1;
}

int smtpd_fqdn(const char *s)
{
	if (smtpd_valid_addr_literal(s))
		return 1;
	return smtpd_valid_hostname(s) && strchr(s, '.') != NULL;
}

/* One ESMTP parameter "KEY[=VALUE]" of MAIL/RCPT. */
static enum smtpd_path_err path_param(const char *p, size_t n, int is_mail, struct smtpd_path *out)
{
	const char *eq = memchr(p, '=', n);
	size_t klen = eq ? (size_t)(eq - p) : n;
	const char *v = eq ? eq + 1 : NULL;
	size_t vlen = eq ? n - klen - 1 : 0;

	if (is_mail && klen == 4 && strncasecmp(p, "SIZE", 4) == 0) {
		long long size = 0;
		size_t i;

		if (!v || vlen == 0 || vlen > 18)
			return PATH_BAD_SIZE;
		for (i = 0; i < vlen; i++) {
			if (!isdigit((unsigned char)v[i]))
				return PATH_BAD_SIZE;
			size = size * 10 + (v[i] - '0');
		}
		out->size = size;
		return PATH_OK;
	}
	if (is_mail && klen == 4 && strncasecmp(p, "BODY", 4) == 0) {
		if (v && vlen == 8 && strncasecmp(v, "8BITMIME", 8) == 0)
			out->body_8bit = 1;
		else if (v && vlen == 4 && strncasecmp(v, "7BIT", 4) == 0)
			out->body_8bit = 0;
		else
			return PATH_BAD_BODY;
		return PATH_OK;
	}
	if (is_mail && klen == 8 && strncasecmp(p, "SMTPUTF8", 8) == 0 && !v) {
		out->smtputf8 = 1;
		return PATH_OK;
	}
	return PATH_BAD_PARAM;
}

enum smtpd_path_err smtpd_parse_path(const char *arg, size_t len, const char *keyword,
    int allow_null, struct smtpd_path *out)
{
	size_t klen = strlen(keyword), i = 0, start, end, alen;
	int is_mail = strcasecmp(keyword, "FROM:") == 0;
	const char *a;

	memset(out, 0, sizeof *out);
	out->size = -1;
	if (len < klen || strncasecmp(arg, keyword, klen) != 0)
		return PATH_SYNTAX;
	i = klen;
	while (i < len && arg[i] == ' ')
		i++;
	if (i >= len)
		return PATH_SYNTAX;
	if (arg[i] == '<') {
		start = ++i;
		while (i < len && arg[i] != '>')
			i++;
		if (i >= len)
			return PATH_SYNTAX;
		end = i++;
	} else {
		start = i;
		while (i < len && arg[i] != ' ')
			i++;
		end = i;
	}
	a = arg + start;
	alen = end - start;
	/* RFC 5321 4.1.2 source routes "@a,@b:user@c" are accepted and ignored */
	if (alen && a[0] == '@') {
		const char *colon = memchr(a, ':', alen);
		if (!colon)
			return PATH_SYNTAX;
		alen -= (size_t)(colon + 1 - a);
		a = colon + 1;
	}
	if (alen > SMTPD_ADDR_MAX)
		return PATH_TOO_LONG;
	if (alen == 0) {
		if (!allow_null)
			return PATH_SYNTAX;
		out->null_path = 1;
	} else {
		size_t j;
		const char *at = NULL;

		for (j = 0; j < alen; j++) {
			unsigned char c = (unsigned char)a[j];
			/* control characters, spaces and brackets never belong in a path we pass on */
			if (c < 0x21 || c == 0x7f || c == '<' || c == '>' || c == '(' || c == ')' ||
			    c == ',' || c == ';' || c == '\\')
				return PATH_SYNTAX;
			if (c == '@')
				at = a + j;
		}
		if (at) {
			char dom[SMTPD_ADDR_MAX + 1];
			size_t dlen = alen - (size_t)(at + 1 - a);

			if (at == a || dlen == 0)
				return PATH_SYNTAX;
			memcpy(dom, at + 1, dlen);
			dom[dlen] = '\0';
			if (!smtpd_valid_hostname(dom) && !smtpd_valid_addr_literal(dom))
				return PATH_SYNTAX;
		}
		memcpy(out->addr, a, alen);
		out->addr[alen] = '\0';
	}
	/* parameters */
	while (i < len) {
		size_t ps;
		enum smtpd_path_err e;

		if (arg[i] == ' ') {
			i++;
			continue;
		}
		ps = i;
		while (i < len && arg[i] != ' ')
			i++;
		if ((e = path_param(arg + ps, i - ps, is_mail, out)) != PATH_OK)
			return e;
	}
	return PATH_OK;
}
