/*
 * tests/fuzz/fuzz_spf_rr.c: libFuzzer target for what frugal hands libspf2
 * (smtpd/spf.c): a raw DNS answer through the resolver's parser
 * (dns_parse_answer), then spf_rr_from_answer, the one place frugal turns
 * resolver answers into libspf2 RR sets (types, families, the filter that
 * keeps only "v=spf1" TXT records, the byte count charged), and a copy as
 * libspf2 makes one for each lookup. Then the Received-SPF: header from
 * the same bytes as HELO name and sender (quoting, no control character,
 * always folded the same way). Input: one byte choosing the type and
 * c-ares's status, one byte splitting the rest, the rest.
 */
#include <ares.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>

#include <spf2/spf.h>

#include "core/dns.h"
#include "smtpd/spf.h"

static void check_rr(const SPF_dns_rr_t *rr, const struct dns_answer *a, int type)
{
	int i;

	if (rr->num_rr < 0 || rr->num_rr > a->n || (a->status != DNS_FOUND && rr->num_rr != 0))
		__builtin_trap();
	if ((a->status == DNS_FOUND && rr->num_rr > 0) != (rr->herrno == NETDB_SUCCESS))
		__builtin_trap();   /* a success keeps a record; nothing kept is "no data" */
	for (i = 0; i < rr->num_rr; i++) {
		const char *t = rr->rr[i]->txt;
		if (type == DNS_TXT && (strncasecmp(t, "v=spf1", 6) != 0 || (t[6] != ' ' && t[6] != '\0')))
			__builtin_trap();
		if ((type == DNS_TXT || type == DNS_MX || type == DNS_PTR) &&
		    (rr->rr_buf_len[i] == 0 || strnlen(t, rr->rr_buf_len[i]) >= rr->rr_buf_len[i]))
			__builtin_trap();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum dns_type types[] = { DNS_A, DNS_AAAA, DNS_MX, DNS_PTR, DNS_TXT };
	static const int statuses[] = { ARES_SUCCESS, ARES_ENOTFOUND, ARES_ENODATA, ARES_ESERVFAIL };
	struct dns_answer *a;
	SPF_dns_rr_t *rr, *copy = NULL;
	size_t bytes = 0, cut, i;
	int type;

	if (size < 2)
		return 0;
	type = types[data[0] % 5];
	a = dns_parse_answer(type, statuses[(data[0] / 5) % 4], data + 2, (int)(size - 2), 60);
	if (a != NULL) {
		if ((rr = spf_rr_from_answer("fuzz.example", type, a, &bytes)) != NULL) {
			check_rr(rr, a, type);
			if (bytes < sizeof *rr)
				__builtin_trap();
			if (SPF_dns_rr_dup(&copy, rr) == SPF_E_SUCCESS && copy) {
				check_rr(copy, a, type);
				SPF_dns_rr_free(copy);
			}
			spf_rr_free(rr);
		}
		dns_answer_free(a);
	}

	/* the header: bytes 2.. split at data[1] into HELO name and sender */
	{
		char helo[300], sender[600], hdr[2400];
		struct sockaddr_storage ss;
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		struct spf_check *c;
		int n;

		size -= 2;
		cut = data[1] < size ? data[1] : size;
		if (cut >= sizeof helo || size - cut >= sizeof sender)
			return 0;
		memcpy(helo, data + 2, cut);
		helo[cut] = '\0';
		memcpy(sender, data + 2 + cut, size - cut);
		sender[size - cut] = '\0';
		memset(&ss, 0, sizeof ss);
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(0xc000020a);
		if ((c = spf_check_new(NULL, &ss, helo, sender, "mx.example", 1)) == NULL)
			return 0;
		n = spf_received_header(c, helo, sender, "mx.example", hdr, sizeof hdr);
		if (n >= 0) {
			if ((size_t)n != strlen(hdr) || n == 0 || hdr[n - 1] != '\n' || strncmp(hdr, "Received-SPF: ", 14) != 0)
				__builtin_trap();
			for (i = 0; i < (size_t)n; i++) {
				unsigned char ch = (unsigned char)hdr[i];
				if ((ch < 0x20 && ch != '\n' && ch != '\t') || ch == 0x7f)
					__builtin_trap();
				if (ch == '\n' && i + 1 < (size_t)n && hdr[i + 1] != '\t')
					__builtin_trap();   /* every line after the first is a continuation */
			}
		}
		spf_check_free(c);
	}
	return 0;
}
