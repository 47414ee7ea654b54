/*
 * smtpd/dnsbl.h: DNS list restrictions (reject_rbl_client, reject_rhsbl_*,
 * permit_dnswl_client): the list argument with its reply filter, the
 * query names, and Postfix's reply templates (rbl_reply_maps,
 * default_rbl_reply). Pure functions, unit-tested and fuzzed; the
 * session's per-client answer cache lives in dnsbl.c behind smtpd_int.h.
 */
#ifndef FRUGAL_SMTPD_DNSBL_H
#define FRUGAL_SMTPD_DNSBL_H

#include <stddef.h>
#include <sys/socket.h>

#include "core/dns.h"

/* One list as a restriction names it: "zone" or "zone=127.0.0.[2;4..7]". */
struct dnsbl_site {
	char arg[DNS_NAME_MAX + 64];   /* as written (rbl_reply_maps' first key) */
	char zone[DNS_NAME_MAX + 1];   /* without the filter: $rbl_domain */
	int filtered;                  /* a filter was given */
	unsigned char octet[4][32];    /* filtered: the bytes each octet may have (bit sets) */
};
/* 0, or -1 with err. */
int dnsbl_site_parse(const char *arg, struct dnsbl_site *site, char *err, size_t errlen);
/* Does an A answer (4 bytes) count as a listing? Any address without a filter. */
int dnsbl_site_match(const struct dnsbl_site *site, const unsigned char a[4]);

/* "4.3.2.1.zone" (IPv4, v4-mapped IPv6 as IPv4) or 32 reversed nibbles (IPv6): 0, or -1. */
int dnsbl_client_name(const struct sockaddr *sa, const char *zone, char *out, size_t outlen);
/* "domain.zone" for the rhsbl words: 0, or -1 (too long, empty). */
int dnsbl_domain_name(const char *domain, const char *zone, char *out, size_t outlen);

/*
 * Postfix's $name, ${name}, $(name), ${name?text}, ${name:text} and $$ in
 * a reply template; the texts of ? and : may hold $names again (nested
 * at most 8 deep). An unknown name is empty. Returns 0, or -1 (a bad
 * template: unbalanced braces, too deep; out holds what came before).
 * The output is cut at outlen - 1 bytes.
 */
struct dnsbl_var {
	const char *name;
	const char *value;
};
int dnsbl_expand(const char *tmpl, const struct dnsbl_var *vars, int nvars, char *out, size_t outlen);

/*
 * An expanded reply as it goes to the client: "NNN X.Y.Z text" with the
 * enhanced code inserted when the template has none (Postfix's 5.7.1 or
 * 4.7.1) and its class made the reply's when it has one, "Service
 * unavailable" when no text is left, control characters as spaces.
 * Returns the reply code (4xx/5xx), or -1 when the text starts with no
 * such code.
 */
int dnsbl_reply(const char *expanded, char *out, size_t outlen);

#endif
