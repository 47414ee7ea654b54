/*
 * queue/smtp_sasl.c: the SMTP client's AUTH PLAIN and LOGIN (see
 * smtp_sasl.h). Everything but smtp_sasl_lookup touches only its
 * arguments.
 */
#include "queue/smtp_sasl.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "conf/map.h"
#include "core/mem.h"

int smtp_sasl_options_parse(const char *s, unsigned *opts)
{
	static const struct { const char *name; unsigned bit; } words[] = {
		{ "noplaintext", SMTP_SASL_NOPLAINTEXT }, { "noactive", SMTP_SASL_NOACTIVE },
		{ "nodictionary", SMTP_SASL_NODICTIONARY }, { "noanonymous", SMTP_SASL_NOANONYMOUS },
		{ "mutual_auth", SMTP_SASL_MUTUAL_AUTH },
	};
	size_t n, i;

	*opts = 0;
	for (;;) {
		s += strspn(s, ", \t\r\n");
		if (*s == '\0')
			return 0;
		n = strcspn(s, ", \t\r\n");
		for (i = 0; i < sizeof words / sizeof words[0]; i++)
			if (strlen(words[i].name) == n && strncasecmp(s, words[i].name, n) == 0)
				break;
		if (i == sizeof words / sizeof words[0])
			return -1;
		*opts |= words[i].bit;
		s += n;
	}
}

int smtp_sasl_choose(const char *mechs, size_t len, unsigned opts)
{
	const char *p = mechs, *end = mechs + len;
	int plain = 0, login = 0;
	size_t n;

	/* PLAIN and LOGIN pass the password itself: plaintext, active and dictionary attacks, no mutual auth */
	if (opts & (SMTP_SASL_NOPLAINTEXT | SMTP_SASL_NOACTIVE | SMTP_SASL_NODICTIONARY | SMTP_SASL_MUTUAL_AUTH))
		return SMTP_SASL_MECH_NONE;
	while (p < end) {
		while (p < end && (*p == ' ' || *p == '\t' || *p == '='))
			p++;
		for (n = 0; p + n < end && p[n] != ' ' && p[n] != '\t' && p[n] != '='; n++)
			;
		if (n == 5 && strncasecmp(p, "PLAIN", 5) == 0)
			plain = 1;
		else if (n == 5 && strncasecmp(p, "LOGIN", 5) == 0)
			login = 1;
		p += n;
	}
	return plain ? SMTP_SASL_MECH_PLAIN : login ? SMTP_SASL_MECH_LOGIN : SMTP_SASL_MECH_NONE;
}

static int field_ok(const char *f)
{
	size_t n = strlen(f);

	return n > 0 && n <= SMTP_SASL_FIELD_MAX && strpbrk(f, "\r\n") == NULL;
}

/* "PREFIX<base64 of p[0..n)>\r\n" into line; -1 if it does not fit */
static int b64_line(const char *prefix, const unsigned char *p, size_t n, char *line, size_t linelen)
{
	size_t pl = strlen(prefix);

	if (pl + 4 * ((n + 2) / 3) + 3 > linelen)
		return -1;
	memcpy(line, prefix, pl);
	pl += (size_t)EVP_EncodeBlock((unsigned char *)line + pl, p, (int)n);
	memcpy(line + pl, "\r\n", 3);
	return 0;
}

int smtp_sasl_start(struct smtp_sasl *s, int mech, const char *user, const char *pass, char *line, size_t linelen)
{
	unsigned char msg[2 * SMTP_SASL_FIELD_MAX + 2];
	size_t ul, pl;
	int rc;

	memset(s, 0, sizeof *s);
	s->step = SS_FAILED;
	if (!field_ok(user) || !field_ok(pass))
		return -1;
	ul = strlen(user);
	pl = strlen(pass);
	memcpy(s->user, user, ul + 1);
	memcpy(s->pass, pass, pl + 1);
	s->mech = mech;
	switch (mech) {
	case SMTP_SASL_MECH_PLAIN:
		/* RFC 4616: empty authzid (act as ourselves), authcid, password; sent as the initial response */
		msg[0] = '\0';
		memcpy(msg + 1, user, ul);
		msg[1 + ul] = '\0';
		memcpy(msg + 2 + ul, pass, pl);
		rc = b64_line("AUTH PLAIN ", msg, 2 + ul + pl, line, linelen);
		OPENSSL_cleanse(msg, sizeof msg);
		break;
	case SMTP_SASL_MECH_LOGIN:
		rc = linelen >= sizeof "AUTH LOGIN\r\n" ? 0 : -1;
		if (rc == 0)
			memcpy(line, "AUTH LOGIN\r\n", sizeof "AUTH LOGIN\r\n");
		break;
	default:
		rc = -1;
	}
	if (rc < 0) {
		smtp_sasl_clear(s);
		return -1;
	}
	s->step = SS_WAIT_AUTH;
	return 0;
}

int smtp_sasl_reply(struct smtp_sasl *s, int code, const char *text, size_t textlen, char *line, size_t linelen)
{
	const char *f;

	(void)text;
	(void)textlen;   /* LOGIN's prompts are not read: Cyrus answers by step, and servers word them freely */
	if (s->step == SS_DONE || s->step == SS_FAILED || s->step == SS_START || code < 200 || code > 599)
		goto protocol;
	if (code == 235) {
		smtp_sasl_clear(s);
		s->step = SS_DONE;
		return SMTP_SASL_OK;
	}
	if (code >= 400) {
		smtp_sasl_clear(s);
		s->step = SS_FAILED;
		return SMTP_SASL_REFUSED;
	}
	if (code != 334 || s->mech != SMTP_SASL_MECH_LOGIN || s->step == SS_LOGIN_PASS)
		goto protocol;   /* a challenge PLAIN never needs, a third one for LOGIN, or another 2xx/3xx */
	f = s->step == SS_WAIT_AUTH ? s->user : s->pass;
	if (b64_line("", (const unsigned char *)f, strlen(f), line, linelen) < 0)
		goto protocol;
	s->step = s->step == SS_WAIT_AUTH ? SS_LOGIN_USER : SS_LOGIN_PASS;
	return SMTP_SASL_SEND;
protocol:
	smtp_sasl_clear(s);
	s->step = SS_FAILED;
	return SMTP_SASL_PROTOCOL;
}

void smtp_sasl_clear(struct smtp_sasl *s)
{
	OPENSSL_cleanse(s->pass, sizeof s->pass);
	OPENSSL_cleanse(s->user, sizeof s->user);
}

int smtp_sasl_split(const char *value, char *user, char *pass)
{
	const char *colon = strchr(value, ':');
	size_t ul;

	if (colon == NULL)
		return -1;
	ul = (size_t)(colon - value);
	if (ul == 0 || ul > SMTP_SASL_FIELD_MAX || strlen(colon + 1) > SMTP_SASL_FIELD_MAX)
		return -1;
	memcpy(user, value, ul);
	user[ul] = '\0';
	strcpy(pass, colon + 1);
	if (!field_ok(user) || !field_ok(pass)) {
		OPENSSL_cleanse(pass, SMTP_SASL_FIELD_MAX + 1);
		return -1;
	}
	return 0;
}

int smtp_sasl_lookup(struct map_list *maps, const char *host, const char *nexthop, char *user, char *pass)
{
	const char *keys[2] = { host, nexthop };
	char *value = NULL;
	int i, rc = 0;

	for (i = 0; i < 2 && rc == 0; i++)
		if (keys[i] && *keys[i])
			rc = map_list_lookup(maps, keys[i], &value);
	if (rc <= 0)
		return rc;
	rc = smtp_sasl_split(value, user, pass) == 0 ? 1 : -1;
	OPENSSL_cleanse(value, strlen(value));
	mem_free(value);
	return rc;
}
