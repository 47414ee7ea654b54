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

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int smtpd_xtext_decode(const char *in, size_t len, char *out, size_t outlen)
{
	size_t i, o = 0;

	if (outlen == 0)
		return -1;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '+') {
			int h, l;

			if (i + 2 >= len || (h = hexval(in[i + 1])) < 0 || (l = hexval(in[i + 2])) < 0)
				return -1;
			c = (unsigned char)(h * 16 + l);
			i += 2;
			if (c < 0x20 || c > 0x7e)
				return -1;   /* decoded, it must still be printable (a queue-file line) */
		} else if (c < 0x21 || c > 0x7e || c == '=') {
			return -1;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

/* NOTIFY=NEVER | SUCCESS,FAILURE,DELAY in any order and combination (RFC 3461 4.1) */
static int notify_mask(const char *v, size_t n)
{
	static const struct { const char *w; int bit; } words[] = {
		{ "NEVER", SMTPD_DSN_NOTIFY_NEVER }, { "SUCCESS", SMTPD_DSN_NOTIFY_SUCCESS },
		{ "FAILURE", SMTPD_DSN_NOTIFY_FAILURE }, { "DELAY", SMTPD_DSN_NOTIFY_DELAY },
	};
	int mask = 0;
	size_t s = 0, e, k;

	if (n == 0)
		return 0;
	while (s <= n) {
		int bit = 0;

		for (e = s; e < n && v[e] != ','; e++)
			;
		for (k = 0; k < sizeof words / sizeof words[0]; k++)
			if (e - s == strlen(words[k].w) && strncasecmp(v + s, words[k].w, e - s) == 0)
				bit = words[k].bit;
		if (bit == 0)
			return 0;
		mask |= bit;
		s = e + 1;
	}
	/* NEVER alone */
	if ((mask & SMTPD_DSN_NOTIFY_NEVER) && mask != SMTPD_DSN_NOTIFY_NEVER)
		return 0;
	return mask;
}

/* ORCPT=addr-type;xtext (RFC 3461 4.2): kept as "type;decoded" */
static int orcpt_parse(const char *v, size_t n, char *out, size_t outlen)
{
	const char *semi = memchr(v, ';', n);
	size_t tlen, k;

	if (n > SMTPD_ORCPT_MAX || semi == NULL || semi == v || semi + 1 == v + n)
		return -1;
	tlen = (size_t)(semi - v);
	/* addr-type is an atom (RFC 3461 4.2: "rfc822", "utf-8", ...) */
	for (k = 0; k < tlen; k++) {
		unsigned char c = (unsigned char)v[k];
		if (!(isalnum(c) || c == '-' || c == '.' || c == '_'))
			return -1;
	}
	if (tlen + 2 > outlen)
		return -1;
	memcpy(out, v, tlen);
	out[tlen] = ';';
	return smtpd_xtext_decode(semi + 1, n - tlen - 1, out + tlen + 1, outlen - tlen - 1);
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
	/* RFC 3461; a repeated parameter is refused like a bad one (as Postfix) */
	if (is_mail && klen == 3 && strncasecmp(p, "RET", 3) == 0) {
		if (out->dsn_ret || !v)
			return PATH_BAD_RET;
		if (vlen == 4 && strncasecmp(v, "FULL", 4) == 0)
			out->dsn_ret = SMTPD_DSN_RET_FULL;
		else if (vlen == 4 && strncasecmp(v, "HDRS", 4) == 0)
			out->dsn_ret = SMTPD_DSN_RET_HDRS;
		else
			return PATH_BAD_RET;
		return PATH_OK;
	}
	if (is_mail && klen == 5 && strncasecmp(p, "ENVID", 5) == 0) {
		if (out->has_envid || !v || vlen == 0 || vlen > SMTPD_ENVID_MAX ||
		    smtpd_xtext_decode(v, vlen, out->envid, sizeof out->envid) < 0)
			return PATH_BAD_ENVID;
		out->has_envid = 1;
		return PATH_OK;
	}
	if (!is_mail && klen == 6 && strncasecmp(p, "NOTIFY", 6) == 0) {
		if (out->notify || !v || (out->notify = notify_mask(v, vlen)) == 0)
			return PATH_BAD_NOTIFY;
		return PATH_OK;
	}
	if (!is_mail && klen == 5 && strncasecmp(p, "ORCPT", 5) == 0) {
		if (out->orcpt[0] || !v || orcpt_parse(v, vlen, out->orcpt, sizeof out->orcpt) < 0) {
			out->orcpt[0] = '\0';
			return PATH_BAD_ORCPT;
		}
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
