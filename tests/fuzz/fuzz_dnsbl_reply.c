/*
 * tests/fuzz/fuzz_dnsbl_reply.c: libFuzzer target for the DNS list reply
 * templates (smtpd/dnsbl.c): the input up to a NUL is a template (an
 * admin's rbl_reply_maps value), the rest the TXT record a list serves
 * ($rbl_reason: the attacker's part). Also the list argument parser on
 * the template. Invariants: the expansion and the reply stay terminated
 * inside their buffers; a reply has a 4xx/5xx code, an enhanced code of
 * the same class, and no control character (no CR LF reaches the client).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/dnsbl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), exp[1024], reply[600], err[200];
	const char *tmpl, *txt;
	struct dnsbl_site site;
	size_t tl, i;
	int code;

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	tmpl = buf;
	tl = strlen(buf);
	txt = tl < size ? buf + tl + 1 : "";
	{
		const struct dnsbl_var vars[] = {
			{ "rbl_code", "554" }, { "rbl_class", "Client host" }, { "rbl_what", "192.0.2.1" },
			{ "rbl_domain", "zen.example" }, { "rbl_reason", txt }, { "rbl_txt", txt }, { "empty", "" },
		};
		dnsbl_expand(tmpl, vars, (int)(sizeof vars / sizeof vars[0]), exp, sizeof exp);
	}
	if (strlen(exp) >= sizeof exp)
		abort();
	if ((code = dnsbl_reply(exp, reply, sizeof reply)) >= 0) {
		size_t n = strlen(reply);
		if (n >= sizeof reply || code < 400 || code > 599 || reply[4] != reply[0] || reply[5] != '.')
			abort();
		for (i = 0; i < n; i++)
			if ((unsigned char)reply[i] < 32 || reply[i] == 127)
				abort();
	}
	if (dnsbl_site_parse(tmpl, &site, err, sizeof err) == 0) {
		unsigned char a[4] = { 127, 0, 0, (unsigned char)size };
		if (strlen(site.zone) == 0 || strlen(site.zone) >= sizeof site.zone)
			abort();
		(void)dnsbl_site_match(&site, a);
	}
	free(buf);
	return 0;
}
