/*
 * smtpd/restrict.c: access restrictions (smtpd_*_restrictions), mynetworks,
 * and the configuration generation a session holds (struct smtpd_gen).
 * Evaluated at RCPT time, as Postfix does with smtpd_delay_reject = yes, so
 * a client always sees its rejection against a recipient and fail2ban's
 * postfix filter matches the log line. Lookups go through core/dns: a word
 * that needs one (reject_unknown_sender_domain, check_spf, the DNS lists and
 * reject_unknown_helo_hostname with their per-session answers in dnsbl.c)
 * starts it and answers
 * RESTR_WAIT; the session waits in S_DNS_WAIT and the whole evaluation runs
 * again with the verdict kept in the transaction (simpler than resuming
 * mid-list, and every other word is a pure function of the session).
 */
#include "smtpd/smtpd_int.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/dns.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/tls.h"
#include "queue/queue.h"
#include "smtpd/dnsbl.h"
#include "smtpd/screen.h"
#include "smtpd/spf.h"
#include "smtpd/dmarc.h"

/* ---- mynetworks ---------------------------------------------------------- */

static int cidr_parse_one(const char *tok, struct cidr *c)
{
	char buf[128], *slash, *a = buf;
	int maxbits;

	if (strlen(tok) >= sizeof buf)
		return -1;
	strcpy(buf, tok);
	slash = strchr(buf, '/');
	if (slash)
		*slash++ = '\0';
	if (a[0] == '[') {
		size_t n = strlen(a);
		if (a[n - 1] != ']')
			return -1;
		a[n - 1] = '\0';
		a++;
	}
	memset(c, 0, sizeof *c);
	if (inet_pton(AF_INET, a, c->addr) == 1) {
		c->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, a, c->addr) == 1) {
		c->family = AF_INET6;
		maxbits = 128;
	} else {
		return -1;
	}
	if (slash) {
		char *end;
		long v = strtol(slash, &end, 10);
		if (*slash == '\0' || *end || v < 0 || v > maxbits)
			return -1;
		c->prefix = (int)v;
	} else {
		c->prefix = maxbits;
	}
	return 0;
}

/*
 * Split a list parameter and allocate one `size`-byte slot per word: the
 * common start of the list parsers below. Returns the words (caller frees
 * with conf_list_free) and sets *slots and *n, or NULL with err set.
 */
static char **split_with_slots(const char *value, void **slots, size_t size, int *n,
    char *err, size_t errlen)
{
	char **v = conf_split_list(value);

	*slots = NULL;
	*n = 0;
	if (v == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	while (v[*n])
		(*n)++;
	if (*n && (*slots = mem_calloc((size_t)*n, size)) == NULL) {
		conf_list_free(v);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	return v;
}

int cidr_list_parse(const char *value, struct cidr_list *out, char *err, size_t errlen)
{
	void *slots;
	int i, n;
	char **v = split_with_slots(value, &slots, sizeof *out->v, &n, err, errlen);

	out->v = slots;
	out->n = 0;
	if (v == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		if (cidr_parse_one(v[i], &out->v[out->n]) < 0) {
			snprintf(err, errlen, "mynetworks: bad network \"%s\"", v[i]);
			conf_list_free(v);
			cidr_list_free(out);
			return -1;
		}
		out->n++;
	}
	conf_list_free(v);
	return 0;
}

void cidr_list_free(struct cidr_list *l)
{
	mem_free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int prefix_match(const unsigned char *a, const unsigned char *b, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[full] ^ b[full]) & (0xff << (8 - rest))) == 0;
}

int cidr_list_match(const struct cidr_list *l, const struct sockaddr_storage *sa)
{
	unsigned char a4[4], a6[16];
	int i, have4 = 0;

	if (sa->ss_family == AF_INET) {
		memcpy(a4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		have4 = 1;
	} else if (sa->ss_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		memcpy(a6, in6, 16);
		if (IN6_IS_ADDR_V4MAPPED(in6)) {  /* ::ffff:127.0.0.1 matches 127.0.0.0/8 */
			memcpy(a4, a6 + 12, 4);
			have4 = 1;
		}
	} else {
		return 0;
	}
	for (i = 0; i < l->n; i++) {
		const struct cidr *c = &l->v[i];
		if (c->family == AF_INET && have4 && prefix_match(a4, c->addr, c->prefix))
			return 1;
		if (c->family == AF_INET6 && sa->ss_family == AF_INET6 && prefix_match(a6, c->addr, c->prefix))
			return 1;
	}
	return 0;
}

/* ---- restriction lists --------------------------------------------------- */

static const struct { const char *name; enum restr_word word; int takes_table; } words[] = {
	{ "permit", R_PERMIT, 0 }, { "reject", R_REJECT, 0 }, { "dunno", R_DUNNO, 0 },
	{ "defer", R_DEFER, 0 }, { "defer_if_permit", R_DEFER_IF_PERMIT, 0 },
	{ "defer_unauth_destination", R_DEFER_UNAUTH_DESTINATION, 0 },
	{ "permit_mynetworks", R_PERMIT_MYNETWORKS, 0 },
	{ "permit_sasl_authenticated", R_PERMIT_SASL_AUTHENTICATED, 0 },
	{ "reject_sender_login_mismatch", R_REJECT_SENDER_LOGIN_MISMATCH, 0 },
	{ "reject_unauth_destination", R_REJECT_UNAUTH_DESTINATION, 0 },
	{ "reject_unlisted_recipient", R_REJECT_UNLISTED_RECIPIENT, 0 },
	{ "reject_invalid_helo_hostname", R_REJECT_INVALID_HELO_HOSTNAME, 0 },
	{ "reject_non_fqdn_helo_hostname", R_REJECT_NON_FQDN_HELO_HOSTNAME, 0 },
	{ "reject_non_fqdn_sender", R_REJECT_NON_FQDN_SENDER, 0 },
	{ "reject_non_fqdn_recipient", R_REJECT_NON_FQDN_RECIPIENT, 0 },
	{ "check_client_access", R_CHECK_CLIENT_ACCESS, 1 },
	{ "check_helo_access", R_CHECK_HELO_ACCESS, 1 },
	{ "check_sender_access", R_CHECK_SENDER_ACCESS, 1 },
	{ "check_recipient_access", R_CHECK_RECIPIENT_ACCESS, 1 },
	{ "reject_unknown_sender_domain", R_REJECT_UNKNOWN_SENDER_DOMAIN, 0 },
	{ "reject_unknown_client_hostname", R_REJECT_UNKNOWN_CLIENT_HOSTNAME, 0 },
	{ "reject_unknown_client", R_REJECT_UNKNOWN_CLIENT_HOSTNAME, 0 },   /* Postfix < 2.3's name */
	{ "reject_unknown_reverse_client_hostname", R_REJECT_UNKNOWN_REVERSE_CLIENT_HOSTNAME, 0 },
	{ "check_spf", R_CHECK_SPF, 0 },
	{ "check_greylist", R_CHECK_GREYLIST, 0 },
	/* 2: a DNS list argument, "zone" or "zone=127.0.0.[2;4..7]" */
	{ "reject_rbl_client", R_REJECT_RBL_CLIENT, 2 },
	{ "reject_rhsbl_client", R_REJECT_RHSBL_CLIENT, 2 },
	{ "reject_rhsbl_sender", R_REJECT_RHSBL_SENDER, 2 },
	{ "reject_rhsbl_helo", R_REJECT_RHSBL_HELO, 2 },
	{ "permit_dnswl_client", R_PERMIT_DNSWL_CLIENT, 2 },
	{ "reject_unknown_helo_hostname", R_REJECT_UNKNOWN_HELO_HOSTNAME, 0 },
};

void restr_list_free(struct restr_list *l)
{
	int i;

	for (i = 0; i < l->n; i++) {
		if (l->v[i].table)
			map_list_close(l->v[i].table);
		mem_free(l->v[i].site);
	}
	mem_free(l->v);
	l->v = NULL;
	l->n = 0;
}

int restr_list_parse(const char *value, struct restr_list *out, char *err, size_t errlen)
{
	void *slots;
	int i, n;
	size_t w;
	char **v = split_with_slots(value, &slots, sizeof *out->v, &n, err, errlen);

	out->v = slots;
	out->n = 0;
	if (v == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		for (w = 0; w < sizeof words / sizeof words[0]; w++)
			if (strcasecmp(v[i], words[w].name) == 0)
				break;
		if (w == sizeof words / sizeof words[0]) {
			/*
			 * Words not acted on (reject_rhsbl_reverse_client, check_policy_service ...)
			 * are refused loudly rather than silently ignored: an admin who
			 * wrote them expects them to reject.
			 */
			snprintf(err, errlen, "unsupported restriction \"%s\"", v[i]);
			goto fail;
		}
		out->v[out->n].word = words[w].word;
		if (words[w].takes_table == 2) {
			char derr[200];
			if (v[i + 1] == NULL) {
				snprintf(err, errlen, "%s needs a DNS list argument", v[i]);
				goto fail;
			}
			i++;
			if ((out->v[out->n].site = mem_alloc(sizeof *out->v[out->n].site)) == NULL) {
				snprintf(err, errlen, "out of memory");
				goto fail;
			}
			if (dnsbl_site_parse(v[i], out->v[out->n].site, derr, sizeof derr) < 0) {
				snprintf(err, errlen, "%s %s: %s", words[w].name, v[i], derr);
				mem_free(out->v[out->n].site);
				out->v[out->n].site = NULL;
				goto fail;
			}
		} else if (words[w].takes_table) {
			char merr[256];
			if (v[i + 1] == NULL) {
				snprintf(err, errlen, "%s needs a table argument", v[i]);
				goto fail;
			}
			i++;
			if ((out->v[out->n].table = map_list_open(v[i], merr, sizeof merr)) == NULL) {
				snprintf(err, errlen, "%s %s: %s", words[w].name, v[i], merr);
				goto fail;
			}
		}
		out->n++;
	}
	conf_list_free(v);
	return 0;
fail:
	conf_list_free(v);
	restr_list_free(out);
	return -1;
}

/* ---- generations --------------------------------------------------------- */

static void params_load(struct smtpd_params *p, const struct conf *c, int stress)
{
	p->timeout = (double)conf_time(c, "smtpd_timeout", stress);
	p->hard_error_limit = (int)conf_int(c, "smtpd_hard_error_limit", stress);
	p->soft_error_limit = (int)conf_int(c, "smtpd_soft_error_limit", stress);
	p->junk_command_limit = (int)conf_int(c, "smtpd_junk_command_limit", stress);
	p->recipient_limit = (int)conf_int(c, "smtpd_recipient_limit", stress);
	p->error_sleep_time = (double)conf_time(c, "smtpd_error_sleep_time", stress);
	p->message_size_limit = conf_int(c, "message_size_limit", stress);
	p->helo_required = conf_bool(c, "smtpd_helo_required", stress);
	p->forbid_bare_newline = conf_bool(c, "smtpd_forbid_bare_newline", stress);
	p->client_connection_count_limit = (int)conf_int(c, "smtpd_client_connection_count_limit", stress);
	p->starttls_timeout = (double)conf_time(c, "smtpd_starttls_timeout", stress);
	p->sasl_auth_enable = conf_bool(c, "smtpd_sasl_auth_enable", stress);
	p->tls_auth_only = conf_bool(c, "smtpd_tls_auth_only", stress);
	p->client_auth_rate_limit = (int)conf_int(c, "smtpd_client_auth_rate_limit", stress);
	p->anvil_rate_time_unit = (double)conf_time(c, "anvil_rate_time_unit", stress);
	p->client_connection_rate_limit = (int)conf_int(c, "smtpd_client_connection_rate_limit", stress);
	p->client_message_rate_limit = (int)conf_int(c, "smtpd_client_message_rate_limit", stress);
	p->client_recipient_rate_limit = (int)conf_int(c, "smtpd_client_recipient_rate_limit", stress);
	p->client_ipv6_prefix_length = (int)conf_int(c, "smtpd_client_ipv6_prefix_length", stress);
	p->hide_client_session = conf_bool(c, "smtpd_hide_client_session", stress);
	p->unknown_address_reject_code = (int)conf_int(c, "unknown_address_reject_code", stress);
	p->unknown_client_reject_code = (int)conf_int(c, "unknown_client_reject_code", stress);
	p->spf_helo_check = conf_bool(c, "spf_helo_check", stress);
	p->spf_permerror_reject = conf_bool(c, "spf_permerror_reject", stress);
	p->spf_softfail_reject = conf_bool(c, "spf_softfail_reject", stress);
	p->maps_rbl_reject_code = (int)conf_int(c, "maps_rbl_reject_code", stress);
	p->unknown_hostname_reject_code = (int)conf_int(c, "unknown_hostname_reject_code", stress);
	if (p->maps_rbl_reject_code < 400 || p->maps_rbl_reject_code > 599)
		p->maps_rbl_reject_code = 554;
	if (p->unknown_hostname_reject_code < 400 || p->unknown_hostname_reject_code > 599)
		p->unknown_hostname_reject_code = 450;
	if (p->unknown_address_reject_code < 400 || p->unknown_address_reject_code > 599)
		p->unknown_address_reject_code = 450;
	if (p->unknown_client_reject_code < 400 || p->unknown_client_reject_code > 599)
		p->unknown_client_reject_code = 450;
	if (p->anvil_rate_time_unit <= 0)
		p->anvil_rate_time_unit = 60;
	{
		long long d = conf_time(c, "greylist_delay", stress), a = conf_time(c, "greylist_max_age", stress);
		long long w = conf_time(c, "greylist_retry_window", stress);

		p->greylist_delay = d < 0 ? 0 : d > UINT32_MAX / 2 ? UINT32_MAX / 2 : (unsigned)d;
		p->greylist_max_age = a <= 0 ? 35 * 86400 : a > UINT32_MAX / 2 ? UINT32_MAX / 2 : (unsigned)a;
		p->greylist_retry_window = w <= 0 ? 2 * 86400 : w > UINT32_MAX / 2 ? UINT32_MAX / 2 : (unsigned)w;
	}
	p->greylist_client_prefix = (int)conf_int(c, "greylist_client_prefix", stress);
	p->greylist_client_ipv6_prefix = (int)conf_int(c, "greylist_client_ipv6_prefix", stress);
	if (p->timeout <= 0)
		p->timeout = 300;
	if (p->starttls_timeout <= 0)
		p->starttls_timeout = p->timeout;
}

/*
 * Postfix's rule against open relays (smtpd_check.c, has_required): one of
 * the two lists must stop unauthorised relaying, with a word that comes
 * before any unconditional permit. submission's "permit_sasl_authenticated,
 * reject" passes; "permit_mynetworks, permit" does not.
 */
static int stops_relaying(const struct restr_list *l)
{
	int i;

	for (i = 0; i < l->n; i++) {
		switch (l->v[i].word) {
		case R_PERMIT:
			return 0;
		case R_REJECT_UNAUTH_DESTINATION: case R_DEFER_UNAUTH_DESTINATION:
		case R_REJECT: case R_DEFER: case R_DEFER_IF_PERMIT:
			return 1;
		default:
			break;
		}
	}
	return 0;
}

/* The key's path: smtpd_tls_key_file, or the certificate file (Postfix's default: both in one file). */
static const char *key_path(const struct conf *c)
{
	const char *k = conf_str(c, "smtpd_tls_key_file", 0);

	return *k ? k : conf_str(c, "smtpd_tls_cert_file", 0);
}

void smtpd_tls_files_open(const struct conf *c, struct smtpd_tls_files *tf)
{
	const char *cert = conf_str(c, "smtpd_tls_cert_file", 0);

	memset(tf, 0, sizeof *tf);
	tf->cert_fd = tf->key_fd = -1;
	if (*cert == '\0')
		return;
	snprintf(tf->cert_path, sizeof tf->cert_path, "%s", cert);
	snprintf(tf->key_path, sizeof tf->key_path, "%s", key_path(c));
	/* a failure here is named by smtpd_gen_new, which then opens the path itself */
	tf->cert_fd = fd_open(tf->cert_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	tf->key_fd = fd_open(tf->key_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
}

void smtpd_tls_files_close(struct smtpd_tls_files *tf)
{
	if (tf->cert_fd >= 0)
		fd_close(tf->cert_fd);
	if (tf->key_fd >= 0)
		fd_close(tf->key_fd);
	tf->cert_fd = tf->key_fd = -1;
}

/*
 * TLS for this generation: smtpd_tls_security_level, and the certificate
 * when one is set (may: offered; encrypt: required; none: off). 0, or -1
 * with err "FILE:LINE: reason".
 */
static int gen_tls(struct smtpd_gen *g, struct conf *c, const struct smtpd_tls_files *tf, char *err, size_t errlen)
{
	const char *level = conf_str(c, "smtpd_tls_security_level", 0);
	const char *cert = conf_str(c, "smtpd_tls_cert_file", 0);
	char e[700], loc[600];
	int cfd = -1, kfd = -1;

	g->tls_level = strcmp(level, "encrypt") == 0 ? 2 : strcmp(level, "none") == 0 ? 0 : 1;
	if (*cert == '\0') {
		const char *what = g->tls_level == 2 ? "smtpd_tls_security_level" : *conf_str(c, "smtps_listen", 0)
		    ? "smtps_listen" : *conf_str(c, "submission_listen", 0) ? "submission_listen" : NULL;

		if (what) {
			conf_where(c, what, loc, sizeof loc);
			snprintf(err, errlen, "%s: %s needs a certificate: set smtpd_tls_cert_file and smtpd_tls_key_file",
			    loc, g->tls_level == 2 ? "smtpd_tls_security_level = encrypt" : what);
			return -1;
		}
		return 0;
	}
	/* the submission listeners use TLS whatever smtpd_tls_security_level says for port 25 */
	if (g->tls_level == 0 && !*conf_str(c, "smtps_listen", 0) && !*conf_str(c, "submission_listen", 0))
		return 0;
	/* descriptors from the master, when they are for these very files */
	if (tf && strcmp(tf->cert_path, cert) == 0 && strcmp(tf->key_path, key_path(c)) == 0) {
		cfd = tf->cert_fd;
		kfd = tf->key_fd;
	}
	if ((g->tls = tls_server_new(cert, cfd, key_path(c), kfd, e, sizeof e)) == NULL) {
		conf_where(c, strstr(e, "smtpd_tls_key_file") == e && conf_is_set(c, "smtpd_tls_key_file")
		    ? "smtpd_tls_key_file" : "smtpd_tls_cert_file", loc, sizeof loc);
		snprintf(err, errlen, "%s: %s", loc, e);
		return -1;
	}
	return 0;
}

/*
 * AUTH's tables: smtpd_sasl_users wherever AUTH can be offered (port 25 with
 * smtpd_sasl_auth_enable, or a submission listener), and
 * smtpd_sender_login_maps. 0, or -1 with err "FILE:LINE: reason".
 */
static int gen_sasl(struct smtpd_gen *g, struct conf *c, char *err, size_t errlen)
{
	char e[300], loc[600];
	int offered = conf_bool(c, "smtpd_sasl_auth_enable", 0) || *conf_str(c, "submission_listen", 0)
	    || *conf_str(c, "smtps_listen", 0);

	if (offered && strcmp(conf_str(c, "smtpd_sasl_type", 0), "dovecot") == 0) {
		const char *path = conf_str(c, "smtpd_sasl_path", 0);

		if (*path == '\0' || *path != '/') {
			conf_where(c, *path ? "smtpd_sasl_path" : "smtpd_sasl_type", loc, sizeof loc);
			snprintf(err, errlen, "%s: smtpd_sasl_type = dovecot needs smtpd_sasl_path: the absolute path "
			    "of Dovecot's auth-client socket (e.g. /var/spool/postfix/private/auth)", loc);
			return -1;
		}
		if ((g->sasl_path = mem_strdup(path)) == NULL) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	} else if (offered && (g->sasl_users = map_list_open(conf_str(c, "smtpd_sasl_users", 0), e, sizeof e)) == NULL) {
		conf_where(c, "smtpd_sasl_users", loc, sizeof loc);
		snprintf(err, errlen, "%s: smtpd_sasl_users: %s", loc, e);
		return -1;
	}
	if ((g->sender_logins = map_list_open(conf_str(c, "smtpd_sender_login_maps", 0), e, sizeof e)) == NULL) {
		conf_where(c, "smtpd_sender_login_maps", loc, sizeof loc);
		snprintf(err, errlen, "%s: smtpd_sender_login_maps: %s", loc, e);
		return -1;
	}
	return 0;
}

static int list_greylists(const struct restr_list *l)
{
	int i;

	for (i = 0; i < l->n; i++)
		if (l->v[i].word == R_CHECK_GREYLIST)
			return 1;
	return 0;
}

/*
 * check_greylist's part of a generation: whether any list uses it, the
 * prefix lengths, and greylist_allowlist_clients split into networks
 * (written as mynetworks) and tables (any "type:name" word). 0, or -1
 * with err "FILE:LINE: reason".
 */
static int gen_greylist(struct smtpd_gen *g, struct conf *c, char *err, size_t errlen)
{
	char loc[600], e[300], *tables = NULL, **v;
	size_t tl = 0;
	int i, rc = -1;

	g->greylisting = list_greylists(&g->client_r) || list_greylists(&g->helo_r) || list_greylists(&g->sender_r)
	    || list_greylists(&g->relay_r) || list_greylists(&g->recipient_r);
	if (g->params[0].greylist_client_prefix < 0 || g->params[0].greylist_client_prefix > 32 ||
	    g->params[0].greylist_client_ipv6_prefix < 0 || g->params[0].greylist_client_ipv6_prefix > 128) {
		int v4 = g->params[0].greylist_client_prefix < 0 || g->params[0].greylist_client_prefix > 32;
		conf_where(c, v4 ? "greylist_client_prefix" : "greylist_client_ipv6_prefix", loc, sizeof loc);
		snprintf(err, errlen, "%s: %s must be 0 to %d", loc, v4 ? "greylist_client_prefix"
		    : "greylist_client_ipv6_prefix", v4 ? 32 : 128);
		return -1;
	}
	if ((v = conf_split_list(conf_str(c, "greylist_allowlist_clients", 0))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; v[i]; i++)
		tl += strlen(v[i]) + 2;
	if ((g->greylist_allow_nets.v = mem_calloc((size_t)i + 1, sizeof *g->greylist_allow_nets.v)) == NULL ||
	    (tables = mem_calloc(1, tl + 1)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (i = 0; v[i]; i++) {
		const char *colon = strchr(v[i], ':');
		int table = colon && colon > v[i] && strspn(v[i], "abcdefghijklmnopqrstuvwxyz") == (size_t)(colon - v[i]);

		if (table) {
			if (*tables)
				strcat(tables, ", ");
			strcat(tables, v[i]);
		} else if (cidr_parse_one(v[i], &g->greylist_allow_nets.v[g->greylist_allow_nets.n]) == 0) {
			g->greylist_allow_nets.n++;
		} else {
			conf_where(c, "greylist_allowlist_clients", loc, sizeof loc);
			snprintf(err, errlen, "%s: greylist_allowlist_clients: bad network or table \"%s\"", loc, v[i]);
			goto out;
		}
	}
	if (*tables && (g->greylist_allow_maps = map_list_open(tables, e, sizeof e)) == NULL) {
		conf_where(c, "greylist_allowlist_clients", loc, sizeof loc);
		snprintf(err, errlen, "%s: greylist_allowlist_clients: %s", loc, e);
		goto out;
	}
	rc = 0;
out:
	mem_free(tables);
	conf_list_free(v);
	return rc;
}

struct smtpd_gen *smtpd_gen_new(struct conf *c, const struct smtpd_tls_files *tf, char *err, size_t errlen)
{
	struct smtpd_gen *g = mem_calloc(1, sizeof *g);
	char e[256], loc[600];

	if (g == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	g->refs = 1;
	g->conf = conf_ref(c);
	params_load(&g->params[0], c, 0);
	params_load(&g->params[1], c, 1);
	g->myhostname = mem_strdup(conf_str(c, "myhostname", 0));
	g->banner = mem_strdup(conf_str(c, "smtpd_banner", 0));
	if (!g->myhostname || !g->banner) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (cidr_list_parse(conf_str(c, "mynetworks", 0), &g->mynetworks, e, sizeof e) < 0) {
		conf_where(c, "mynetworks", loc, sizeof loc);
		snprintf(err, errlen, "%s: %s", loc, e);
		goto fail;
	}
	if (cidr_list_parse(conf_str(c, "smtpd_client_event_limit_exceptions", 0),
	    &g->event_limit_exceptions, e, sizeof e) < 0) {
		conf_where(c, "smtpd_client_event_limit_exceptions", loc, sizeof loc);
		snprintf(err, errlen, "%s: %s", loc, e);
		goto fail;
	}
#define RL(field, name) \
	if (restr_list_parse(conf_str(c, name, 0), &g->field, e, sizeof e) < 0) { \
		conf_where(c, name, loc, sizeof loc); \
		snprintf(err, errlen, "%s: %s: %s", loc, name, e); \
		goto fail; \
	}
	RL(client_r, "smtpd_client_restrictions");
	RL(helo_r, "smtpd_helo_restrictions");
	RL(sender_r, "smtpd_sender_restrictions");
	RL(relay_r, "smtpd_relay_restrictions");
	RL(recipient_r, "smtpd_recipient_restrictions");
#undef RL
	if (!stops_relaying(&g->relay_r) && !stops_relaying(&g->recipient_r)) {
		conf_where(c, conf_is_set(c, "smtpd_recipient_restrictions") ? "smtpd_recipient_restrictions"
		    : "smtpd_relay_restrictions", loc, sizeof loc);
		snprintf(err, errlen, "%s: in parameters smtpd_relay_restrictions or smtpd_recipient_restrictions, "
		    "specify at least one working instance of: reject_unauth_destination, defer_unauth_destination, "
		    "reject, defer or defer_if_permit (frugal would be an open relay)", loc);
		goto fail;
	}
	if ((g->default_rbl_reply = mem_strdup(conf_str(c, "default_rbl_reply", 0))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if ((g->rbl_reply_maps = map_list_open(conf_str(c, "rbl_reply_maps", 0), e, sizeof e)) == NULL) {
		conf_where(c, "rbl_reply_maps", loc, sizeof loc);
		snprintf(err, errlen, "%s: rbl_reply_maps: %s", loc, e);
		goto fail;
	}
	if (gen_greylist(g, c, err, errlen) < 0)
		goto fail;
	if ((g->screen = mem_alloc(sizeof *g->screen)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (screen_conf_load(c, g->screen, err, errlen) < 0)
		goto fail;
	if (gen_tls(g, c, tf, err, errlen) < 0)
		goto fail;
	if (gen_sasl(g, c, err, errlen) < 0)
		goto fail;
	if (smtpc_check_conf(c, err, errlen) < 0)
		goto fail;
	/* every key read now: a missing or unreadable one is `frugal check`'s error, not a 451 later */
	if ((g->dkim = dkim_keys_load(c, e, sizeof e)) == NULL && e[0]) {
		conf_where(c, "dkim_signing_maps", loc, sizeof loc);
		snprintf(err, errlen, "%s: %s", loc, e);
		goto fail;
	}
	g->dkim_verify = conf_bool(c, "smtpd_dkim_verify", 0);
	g->dmarc = conf_bool(c, "smtpd_dmarc", 0);
	g->dmarc_enforce = conf_bool(c, "smtpd_dmarc_enforce", 0);
	if ((g->authserv_id = mem_strdup(conf_str(c, "smtpd_authserv_id", 0))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (*g->authserv_id == '\0' || strpbrk(g->authserv_id, " \t;()\"\\") != NULL) {
		conf_where(c, "smtpd_authserv_id", loc, sizeof loc);
		snprintf(err, errlen, "%s: smtpd_authserv_id: \"%.100s\" is not a token (RFC 8601: a host name)",
		    loc, g->authserv_id);
		goto fail;
	}
	/*
	 * The list is read once per generation: an updated publicsuffix
	 * package takes effect at reload. Without it mail still flows (a data
	 * file must not stop a mail server): warned, and an organizational
	 * domain is then the last two labels.
	 */
	if (g->dmarc && (g->psl = dmarc_psl_load(conf_str(c, "smtpd_dmarc_public_suffix_list", 0), e, sizeof e)) == NULL) {
		conf_where(c, "smtpd_dmarc_public_suffix_list", loc, sizeof loc);
		log_warning("smtpd", "%s: smtpd_dmarc_public_suffix_list: %s: DMARC takes the last two labels as the "
		    "organizational domain (apt-get install publicsuffix)", loc, e);
	}
	/* last: its table errors are the ones `frugal check` has also named with their lines */
	if ((g->resolver = resolver_new(c, e, sizeof e)) == NULL) {
		conf_where(c, "", loc, sizeof loc);   /* the file: which table failed is in e */
		snprintf(err, errlen, "%s: routing tables: %s", loc, e);
		goto fail;
	}
	return g;
fail:
	smtpd_gen_unref(g);
	return NULL;
}

void smtpd_gen_unref(struct smtpd_gen *g)
{
	if (g == NULL || --g->refs > 0)
		return;
	if (g->resolver)
		resolver_free(g->resolver);
	cidr_list_free(&g->mynetworks);
	cidr_list_free(&g->event_limit_exceptions);
	cidr_list_free(&g->greylist_allow_nets);
	if (g->greylist_allow_maps)
		map_list_close(g->greylist_allow_maps);
	restr_list_free(&g->client_r);
	restr_list_free(&g->helo_r);
	restr_list_free(&g->sender_r);
	restr_list_free(&g->relay_r);
	restr_list_free(&g->recipient_r);
	mem_free(g->myhostname);
	mem_free(g->banner);
	tls_ctx_unref(g->tls);
	if (g->sasl_users)
		map_list_close(g->sasl_users);
	mem_free(g->sasl_path);
	if (g->sender_logins)
		map_list_close(g->sender_logins);
	dkim_keys_unref(g->dkim);
	if (g->rbl_reply_maps)
		map_list_close(g->rbl_reply_maps);
	mem_free(g->default_rbl_reply);
	mem_free(g->authserv_id);
	dmarc_psl_free(g->psl);
	mem_free(g->screen);
	conf_unref(g->conf);
	mem_free(g);
}

/* ---- evaluation ---------------------------------------------------------- */

/* every RCPT can hit a bad table entry: a few a minute, the rest counted */
static struct log_rate unknown_action_rate = LOG_RATE_INIT(60, 5);

/*
 * An access(5) table answer: OK/PERMIT, REJECT [text], DUNNO, or
 * "NNN text" (4xx/5xx). Anything else is logged and treated as DUNNO.
 */
static enum restr_result access_action(struct session *s, const char *value, const char *what,
    const char *reply_subject, char *reply, size_t replylen, int *stop)
{
	*stop = 1;
	if (strcasecmp(value, "OK") == 0 || strcasecmp(value, "PERMIT") == 0)
		return RESTR_PERMIT;
	if (strncasecmp(value, "REJECT", 6) == 0 && (value[6] == '\0' || value[6] == ' ')) {
		const char *text = value[6] ? value + 7 : "Access denied";
		snprintf(reply, replylen, "554 5.7.1 %s: %s rejected: %s", reply_subject, what, text);
		return RESTR_REJECT;
	}
	if ((value[0] == '4' || value[0] == '5') && value[1] >= '0' && value[1] <= '9' &&
	    value[2] >= '0' && value[2] <= '9' && (value[3] == ' ' || value[3] == '\0')) {
		snprintf(reply, replylen, "%.3s %s %s: %s rejected: %s", value,
		    value[0] == '4' ? "4.7.1" : "5.7.1", reply_subject, what,
		    value[3] ? value + 4 : "Access denied");
		return value[0] == '4' ? RESTR_DEFER : RESTR_REJECT;
	}
	if (strcasecmp(value, "DUNNO") != 0)
		log_ratelimited(&unknown_action_rate, "smtpd", "access table: unknown action \"%s\" for %s[%s]: ignored",
		    value, s->host, s->addr);
	*stop = 0;
	return RESTR_PERMIT;
}

/* Look `key` up, then its domain and "user@" forms (access(5) order for addresses). */
static int access_lookup_addr(struct map_list *t, const char *addr, char **val)
{
	const char *at = strrchr(addr, '@');
	char tmp[SMTPD_ADDR_MAX + 2];
	int r;

	if ((r = map_list_lookup(t, addr, val)) != 0)
		return r;
	if (at) {
		if ((r = map_list_lookup(t, at + 1, val)) != 0)
			return r;
		snprintf(tmp, sizeof tmp, "%.*s@", (int)(at - addr), addr);
		return map_list_lookup(t, tmp, val);
	}
	return 0;
}

/* Client address, then its parent networks "1.2.3", "1.2", "1" (access(5)). */
static int access_lookup_client(struct map_list *t, const char *ip, char **val)
{
	char tmp[64];
	char *dot;
	int r;

	if ((r = map_list_lookup(t, ip, val)) != 0)
		return r;
	if (strchr(ip, ':'))
		return 0;
	snprintf(tmp, sizeof tmp, "%s", ip);
	while ((dot = strrchr(tmp, '.')) != NULL) {
		*dot = '\0';
		if ((r = map_list_lookup(t, tmp, val)) != 0)
			return r;
	}
	return 0;
}

/*
 * Never greylisted: mynetworks, authenticated clients (whatever the list
 * says before check_greylist), and greylist_allowlist_clients. A table that
 * cannot be read exempts nobody: the worst is a 450 the client retries.
 */
static int greylist_exempt(struct session *s)
{
	char *val = NULL;
	int r;

	if (s->sasl_user || cidr_list_match(&s->gen->mynetworks, &s->peer) ||
	    cidr_list_match(&s->gen->greylist_allow_nets, &s->peer))
		return 1;
	if (s->gen->greylist_allow_maps == NULL)
		return 0;
	r = access_lookup_client(s->gen->greylist_allow_maps, s->addr, &val);
	mem_free(val);
	return r > 0;
}

/* ---- reject_unknown_sender_domain: the DNS part ------------------------------ */

/*
 * Postfix's reject_unknown_mailhost: the domain is known when it has an MX
 * record, else an A, else an AAAA record (asked in that order, stopping at
 * the first found). NXDOMAIN, or no record of the three, is "not found";
 * a temporary failure at any step is temporary. The verdict is kept in
 * the transaction, so the RCPT evaluation that resumes (and every later
 * RCPT of the transaction) reads it without asking again.
 */
static const enum dns_type sdom_types[] = { DNS_MX, DNS_A, DNS_AAAA };

static int sdom_ask(struct session *s, const char *domain);

static void sdom_cb(void *arg, const struct dns_answer *a)
{
	struct session *s = arg;
	struct smtp_tx *tx = s->tx;

	s->dns_q = NULL;
	if (s->state != S_DNS_WAIT || tx == NULL)
		return;   /* closed meanwhile (a 421 at shutdown was its last word) */
	if (a->status == DNS_FOUND)
		tx->sdom = SDOM_OK;
	else if (a->status == DNS_TEMPFAIL)
		tx->sdom = SDOM_TEMP;
	else if (a->status == DNS_NXDOMAIN || ++tx->sdom_step == (int)(sizeof sdom_types / sizeof sdom_types[0]))
		tx->sdom = SDOM_NOTFOUND;
	else if (sdom_ask(s, strrchr(tx->sender, '@') + 1) == 0)
		return;   /* the next type */
	verbs_rcpt_resume(s);
}

/* 0: asked (the answer comes to sdom_cb), -1: could not ask (tx->sdom is SDOM_TEMP). */
static int sdom_ask(struct session *s, const char *domain)
{
	if (s->srv->dns == NULL ||
	    (s->dns_q = dns_lookup(s->srv->dns, domain, sdom_types[s->tx->sdom_step], sdom_cb, s)) == NULL) {
		s->tx->sdom = SDOM_TEMP;
		return -1;
	}
	return 0;
}

/* The enhanced status code's class follows the reply's (Postfix's smtpd_check_reject). */
static enum restr_result coded(char *reply, size_t replylen, int code, const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static enum restr_result coded(char *reply, size_t replylen, int code, const char *detail, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(reply, replylen, "%d %c.%s ", code, code >= 500 ? '5' : '4', detail);

	va_start(ap, fmt);
	if (n > 0 && (size_t)n < replylen)
		vsnprintf(reply + n, replylen - (size_t)n, fmt, ap);
	va_end(ap);
	return code >= 500 ? RESTR_REJECT : RESTR_DEFER;
}

/* ---- check_spf ------------------------------------------------------------ */

/* The SPF result is known: the RCPT that waited is decided again (it reads tx->spf). */
static void spf_cb(void *arg)
{
	struct session *s = arg;

	if (s->state != S_DNS_WAIT || s->tx == NULL)
		return;   /* closed meanwhile (a 421 at shutdown was its last word) */
	verbs_rcpt_resume(s);
}

/*
 * postfix-policyd-spf-python's verdicts (Mail_From_reject = Fail,
 * PermError_reject = False, TempError_Defer = True), its texts as Postfix
 * shows them after "Recipient address rejected:". RESTR_PERMIT: go on with
 * the list (policyd-spf's PREPEND is a DUNNO: the header is written at DATA).
 */
static enum restr_result spf_verdict(struct session *s, const char *rcpt, char *reply, size_t replylen)
{
	struct spf_check *c = s->tx->spf;
	enum spf_result r = spf_check_result(c);
	int helo = strcmp(spf_check_identity(c), "helo") == 0;

	if (!s->tx->spf_logged) {
		s->tx->spf_logged = 1;
		log_info("smtpd", "%s: spf: %s identity=%s domain=%s client-ip=%s client=%s[%s] lookups=%d%s%s",
		    s->tx->txn ? spool_txn_id(s->tx->txn) : "NOQUEUE", spf_result_name(r), spf_check_identity(c),
		    spf_check_domain(c)[0] ? spf_check_domain(c) : "-", spf_check_client_ip(c), s->host, s->addr,
		    spf_check_fetches(c), spf_check_why(c)[0] ? " problem=" : "", spf_check_why(c));
	}
	if (r == SPFR_FAIL || (r == SPFR_SOFTFAIL && s->p->spf_softfail_reject))
		return coded(reply, replylen, 550, "7.23", "<%s>: Recipient address rejected: Message rejected due to: "
		    "SPF %s - not authorized. Please see http://www.open-spf.org/Why?s=%s;id=%s;ip=%s;r=%s", rcpt,
		    r == SPFR_FAIL ? "fail" : "softfail", helo ? "helo" : "mfrom", spf_check_id(c),
		    spf_check_client_ip(c), s->gen->myhostname);
	if (r == SPFR_TEMPERROR)
		return coded(reply, replylen, 451, "4.3", "<%s>: Recipient address rejected: Temporary SPF %s check "
		    "failure: %s", rcpt, helo ? "HELO" : "MAIL FROM", spf_check_why(c));
	if (r == SPFR_PERMERROR && s->p->spf_permerror_reject)
		return coded(reply, replylen, 550, "5.2", "<%s>: Recipient address rejected: Message rejected due to: "
		    "SPF Permanent Error: %s", rcpt, spf_check_why(c));
	return RESTR_PERMIT;
}

/* One RCPT's evaluation across the lists. */
struct restr_eval {
	struct session *s;
	const char *rcpt;
	const struct resolve_result *rr;
	int defer_if_permit;         /* a defer_if_permit was met: a final permit becomes 450 */
	char dip_reply[600];
	int defer_if_reject;         /* a DNS allowlist could not be asked: a later reject becomes 450 */
	char dir_reply[600];
};

/* ---- DNS lists and the HELO name (answers cached per session: dnsbl.c) ---- */

static struct log_rate rbl_template_rate = LOG_RATE_INIT(60, 5);

/* 1: listed (hit: the A record that matched the filter), 0: not, 2: a lookup error (skipped), -1: asked */
static int dnsxl_listed(struct session *s, const struct dnsbl_site *site, const char *qname, char *hit, size_t hitlen)
{
	const struct dnsxl_answer *a = dnsbl_session_lookup(s, qname, DNS_A);
	int i;

	if (a == NULL)
		return -1;
	if (a->status == DNS_TEMPFAIL)
		return 2;   /* logged when it came: Postfix skips the list */
	if (a->status != DNS_FOUND)
		return 0;
	for (i = 0; i < a->naddr; i++)
		if (dnsbl_site_match(site, a->addr[i])) {
			snprintf(hit, hitlen, "%u.%u.%u.%u", a->addr[i][0], a->addr[i][1], a->addr[i][2], a->addr[i][3]);
			return 1;
		}
	return 0;
}

/*
 * The reply to a listed client: the list's template from rbl_reply_maps
 * (keyed by the list as written, then its zone), else default_rbl_reply,
 * with Postfix's $rbl_* and $client_* names. A template that expands to
 * no reply code is logged and Postfix's default used instead.
 */
static enum restr_result rbl_reply(struct restr_eval *ev, const struct dnsbl_site *site, const char *cls,
    const char *what, const char *hit, const char *txt, char *reply, size_t replylen)
{
	static const char fallback[] =
	    "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}";
	struct session *s = ev->s;
	const char *sender = s->tx ? s->tx->sender : "", *sat = strrchr(sender, '@'), *rat = strrchr(ev->rcpt, '@');
	char code[8], client[sizeof s->host + sizeof s->addr + 2], exp[1024];
	char sname[SMTPD_ADDR_MAX + 1], rname[SMTPD_ADDR_MAX + 1];
	char *tmpl = NULL;
	int r, c;

	snprintf(code, sizeof code, "%d", s->p->maps_rbl_reject_code);
	snprintf(client, sizeof client, "%s[%s]", s->host, s->addr);
	snprintf(sname, sizeof sname, "%.*s", sat ? (int)(sat - sender) : (int)strlen(sender), sender);
	snprintf(rname, sizeof rname, "%.*s", rat ? (int)(rat - ev->rcpt) : (int)strlen(ev->rcpt), ev->rcpt);
	{
		const struct dnsbl_var vars[] = {
			{ "rbl_code", code }, { "rbl_class", cls }, { "rbl_what", what },
			{ "rbl_domain", site->zone }, { "rbl_reason", txt }, { "rbl_txt", txt },
			{ "rbl_response", hit }, { "client_address", s->addr }, { "client_name", s->host },
			{ "client", client }, { "helo_name", s->helo }, { "sender", sender },
			{ "sender_name", sname }, { "sender_domain", sat ? sat + 1 : "" },
			{ "recipient", ev->rcpt }, { "recipient_name", rname }, { "recipient_domain", rat ? rat + 1 : "" },
		};
		const int nvars = (int)(sizeof vars / sizeof vars[0]);

		r = map_list_lookup(s->gen->rbl_reply_maps, site->arg, &tmpl);
		if (r == 0 && strcmp(site->arg, site->zone) != 0)
			r = map_list_lookup(s->gen->rbl_reply_maps, site->zone, &tmpl);
		if (r < 0) {
			snprintf(reply, replylen, "451 4.3.0 <%s>: Temporary lookup failure", ev->rcpt);
			return RESTR_DEFER;
		}
		if (dnsbl_expand(r > 0 ? tmpl : s->gen->default_rbl_reply, vars, nvars, exp, sizeof exp) < 0) {
			/* Postfix: "bad rbl reply template for domain ...", then the default */
			log_ratelimited(&rbl_template_rate, "smtpd", "bad rbl reply template for domain %s: %.200s",
			    site->arg, r > 0 ? tmpl : s->gen->default_rbl_reply);
			dnsbl_expand(fallback, vars, nvars, exp, sizeof exp);
		}
		if ((c = dnsbl_reply(exp, reply, replylen)) < 0) {
			/* Postfix: a template that yields no 4xx/5xx code defers, it never rejects by mistake */
			log_ratelimited(&rbl_template_rate, "smtpd", "rbl response code configuration error: %.200s", exp);
			snprintf(reply, replylen, "450 4.7.1 Service unavailable");
			c = 450;
		}
	}
	mem_free(tmpl);
	return c >= 500 ? RESTR_REJECT : RESTR_DEFER;
}

/*
 * reject_rbl_client, reject_rhsbl_*, permit_dnswl_client. *decided: the
 * list ends here (a listing, a wait); else RESTR_PERMIT and on to the next
 * word. A name that cannot be formed (unknown client name, null sender,
 * address literal) skips the word, as Postfix does.
 */
static enum restr_result dnsxl_word(struct restr_eval *ev, const struct restr *r, char *reply, size_t replylen,
    int *decided)
{
	struct session *s = ev->s;
	const char *sender = s->tx ? s->tx->sender : "", *at = strrchr(sender, '@');
	const char *cls = "Client host", *what = s->addr;
	const struct dnsxl_answer *txt;
	char qname[DNS_NAME_MAX + 1], hit[16];
	int listed, ok;

	/* Postfix: an allowlist never permits relaying (permit_dnswl_client stops at unauthorised recipients) */
	if (r->word == R_PERMIT_DNSWL_CLIENT && ev->rr->cls == RESOLVE_REMOTE)
		return RESTR_PERMIT;
	switch (r->word) {
	case R_REJECT_RBL_CLIENT:
	case R_PERMIT_DNSWL_CLIENT:
		ok = dnsbl_client_name((const struct sockaddr *)&s->peer, r->site->zone, qname, sizeof qname) == 0;
		break;
	case R_REJECT_RHSBL_CLIENT:
		what = s->host;
		ok = s->name_status == PEER_OK && dnsbl_domain_name(s->host, r->site->zone, qname, sizeof qname) == 0;
		break;
	case R_REJECT_RHSBL_SENDER:
		cls = "Sender address";
		what = at ? at + 1 : "";
		ok = at && at[1] && at[1] != '[' && dnsbl_domain_name(at + 1, r->site->zone, qname, sizeof qname) == 0;
		break;
	case R_REJECT_RHSBL_HELO:
		cls = "Helo command";
		what = s->helo ? s->helo : "";
		ok = s->helo && s->helo[0] != '[' && dnsbl_domain_name(s->helo, r->site->zone, qname, sizeof qname) == 0;
		break;
	default:
		ok = 0;
	}
	if (ok && r->word != R_REJECT_RBL_CLIENT && r->word != R_PERMIT_DNSWL_CLIENT) {
		/* Postfix's find_dnsxl_domain: no invalid names, none ending in a number (lists refuse IP queries) */
		const char *last = strrchr(what, '.');
		ok = smtpd_valid_hostname(what) && strspn(last ? last + 1 : what, "0123456789") != strlen(last ? last + 1 : what);
	}
	if (!ok)
		return RESTR_PERMIT;
	if ((listed = dnsxl_listed(s, r->site, qname, hit, sizeof hit)) < 0) {
		*decided = 1;
		return RESTR_WAIT;
	}
	if (listed == 2 && r->word == R_PERMIT_DNSWL_CLIENT && !ev->defer_if_reject) {
		/* Postfix's DEFER_IF_REJECT: the allowlist could not be asked, so no later word may reject for good */
		ev->defer_if_reject = 1;
		snprintf(ev->dir_reply, sizeof ev->dir_reply, "450 4.7.1 <%s>: %s rejected: Service unavailable",
		    what, cls);
	}
	if (listed != 1)
		return RESTR_PERMIT;
	*decided = 1;
	if (r->word == R_PERMIT_DNSWL_CLIENT)
		return RESTR_PERMIT;
	/* the listing's reason ($rbl_reason): the TXT record of the same name, asked once listed */
	if ((txt = dnsbl_session_lookup(s, qname, DNS_TXT)) == NULL)
		return RESTR_WAIT;
	return rbl_reply(ev, r->site, cls, what, hit, txt->status == DNS_FOUND ? txt->txt : NULL, reply, replylen);
}

/*
 * Postfix's reject_unknown_helo_hostname: the name has an A, MX or AAAA
 * record (asked in that order, the first found ends it); NXDOMAIN or none
 * of the three is unknown_hostname_reject_code, a temporary failure a
 * defer_if_permit (450 unless a later word rejects). Address literals and
 * a session without HELO are not judged.
 */
static enum restr_result helo_known(struct restr_eval *ev, char *reply, size_t replylen, int *decided)
{
	static const enum dns_type types[] = { DNS_A, DNS_MX, DNS_AAAA };
	struct session *s = ev->s;
	const struct dnsxl_answer *a = NULL;
	size_t i;

	if (s->helo == NULL || s->helo[0] == '[' || !smtpd_valid_hostname(s->helo))
		return RESTR_PERMIT;
	for (i = 0; i < sizeof types / sizeof types[0]; i++) {
		if ((a = dnsbl_session_lookup(s, s->helo, types[i])) == NULL) {
			*decided = 1;
			return RESTR_WAIT;
		}
		if (a->status != DNS_NODATA)
			break;
	}
	if (a->status == DNS_FOUND)
		return RESTR_PERMIT;
	if (a->status == DNS_TEMPFAIL) {
		if (!ev->defer_if_permit)
			snprintf(ev->dip_reply, sizeof ev->dip_reply,
			    "450 4.7.1 <%s>: Helo command rejected: Host not found", s->helo);
		ev->defer_if_permit = 1;
		return RESTR_PERMIT;
	}
	*decided = 1;
	return coded(reply, replylen, s->p->unknown_hostname_reject_code, "7.1",
	    "<%s>: Helo command rejected: Host not found", s->helo);
}

static enum restr_result run_list(struct restr_eval *ev, const struct restr_list *l,
    char *reply, size_t replylen, int *decided)
{
	struct session *s = ev->s;
	const char *rcpt = ev->rcpt;
	const struct resolve_result *rr = ev->rr;
	const char *sender = s->tx ? s->tx->sender : "";
	const char *helo = s->helo ? s->helo : "";
	int i, stop;

	*decided = 0;
	for (i = 0; i < l->n; i++) {
		const struct restr *r = &l->v[i];
		char *val = NULL, subject[SMTPD_ADDR_MAX + 80];
		const char *what = NULL;   /* check_*_access: what the table judged */
		int found = 0;
		enum restr_result res;

		switch (r->word) {
		case R_PERMIT:
			*decided = 1;
			return RESTR_PERMIT;
		case R_REJECT:
			snprintf(reply, replylen, "554 5.7.1 <%s>: Recipient address rejected: Access denied", rcpt);
			*decided = 1;
			return RESTR_REJECT;
		case R_DEFER:
			snprintf(reply, replylen, "450 4.3.2 <%s>: Recipient address rejected: Try again later", rcpt);
			*decided = 1;
			return RESTR_DEFER;
		case R_DEFER_IF_PERMIT:
			if (!ev->defer_if_permit)
				snprintf(ev->dip_reply, sizeof ev->dip_reply,
				    "450 4.7.1 <%s>: Recipient address rejected: defer_if_permit requested", rcpt);
			ev->defer_if_permit = 1;
			break;
		case R_DEFER_UNAUTH_DESTINATION:
			if (rr->cls == RESOLVE_REMOTE) {
				snprintf(reply, replylen, "454 4.7.1 <%s>: Relay access denied", rcpt);
				*decided = 1;
				return RESTR_DEFER;
			}
			break;
		case R_DUNNO:
			break;
		case R_PERMIT_SASL_AUTHENTICATED:
			if (s->sasl_user) {
				*decided = 1;
				return RESTR_PERMIT;
			}
			break;
		case R_REJECT_SENDER_LOGIN_MISMATCH:
			if (!auth_sender_owned(s, sender)) {
				snprintf(reply, replylen, "553 5.7.1 <%s>: Sender address rejected: not owned by user %s",
				    sender, s->sasl_user ? s->sasl_user : "(unauthenticated)");
				*decided = 1;
				return RESTR_REJECT;
			}
			break;
		case R_PERMIT_MYNETWORKS:
			if (cidr_list_match(&s->gen->mynetworks, &s->peer)) {
				*decided = 1;
				return RESTR_PERMIT;
			}
			break;
		case R_REJECT_UNAUTH_DESTINATION:
			if (rr->cls == RESOLVE_REMOTE) {
				snprintf(reply, replylen, "554 5.7.1 <%s>: Relay access denied", rcpt);
				*decided = 1;
				return RESTR_REJECT;
			}
			break;
		case R_REJECT_UNLISTED_RECIPIENT:
			if (!rr->known) {
				snprintf(reply, replylen, "550 5.1.1 <%s>: Recipient address rejected: %s", rcpt,
				    rr->cls == RESOLVE_VIRTUAL ? "User unknown in virtual mailbox table"
				    : "User unknown in local recipient table");
				*decided = 1;
				return RESTR_REJECT;
			}
			break;
		case R_REJECT_INVALID_HELO_HOSTNAME:
			if (s->helo && !smtpd_valid_hostname(helo) && !smtpd_valid_addr_literal(helo)) {
				snprintf(reply, replylen, "501 5.5.2 <%s>: Helo command rejected: Invalid name", helo);
				*decided = 1;
				return RESTR_REJECT;
			}
			break;
		case R_REJECT_NON_FQDN_HELO_HOSTNAME:
			if (s->helo && !smtpd_fqdn(helo)) {
				snprintf(reply, replylen, "504 5.5.2 <%s>: Helo command rejected: need fully-qualified hostname", helo);
				*decided = 1;
				return RESTR_REJECT;
			}
			break;
		case R_REJECT_NON_FQDN_SENDER:
			if (*sender && (!strchr(sender, '@') || !smtpd_fqdn(strrchr(sender, '@') + 1))) {
				snprintf(reply, replylen, "504 5.5.2 <%s>: Sender address rejected: need fully-qualified address", sender);
				*decided = 1;
				return RESTR_REJECT;
			}
			break;
		case R_REJECT_NON_FQDN_RECIPIENT:
			if (!strchr(rcpt, '@') || !smtpd_fqdn(strrchr(rcpt, '@') + 1)) {
				snprintf(reply, replylen, "504 5.5.2 <%s>: Recipient address rejected: need fully-qualified address", rcpt);
				*decided = 1;
				return RESTR_REJECT;
			}
			break;
		case R_REJECT_UNKNOWN_SENDER_DOMAIN: {
			const char *at = strrchr(sender, '@');

			/* <> and address literals have no domain to find (Postfix skips them too) */
			if (s->tx == NULL || at == NULL || at[1] == '\0' || at[1] == '[')
				break;
			if (s->tx->sdom == SDOM_UNASKED && sdom_ask(s, at + 1) == 0) {
				*decided = 1;
				return RESTR_WAIT;
			}
			if (s->tx->sdom == SDOM_TEMP) {
				*decided = 1;
				return coded(reply, replylen, 450, "1.8", "<%s>: Sender address rejected: Domain not found", sender);
			}
			if (s->tx->sdom == SDOM_NOTFOUND) {
				*decided = 1;
				return coded(reply, replylen, s->p->unknown_address_reject_code, "1.8",
				    "<%s>: Sender address rejected: Domain not found", sender);
			}
			break;
		}
		case R_CHECK_SPF:
			if (s->tx == NULL)
				break;
			/* once per transaction: every later RCPT reads the same result */
			if (s->tx->spf == NULL) {
				s->tx->spf = spf_check_new(s->srv->dns, &s->peer, s->helo, s->tx->sender, s->gen->myhostname,
				    s->p->spf_helo_check);
				if (s->tx->spf == NULL) {
					snprintf(reply, replylen, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
					*decided = 1;
					return RESTR_DEFER;
				}
				if (spf_check_run(s->tx->spf, spf_cb, s) == 0) {
					*decided = 1;
					return RESTR_WAIT;
				}
			}
			if (!spf_check_done(s->tx->spf)) {   /* cannot happen: RCPT waits in S_DNS_WAIT meanwhile */
				snprintf(reply, replylen, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
				*decided = 1;
				return RESTR_DEFER;
			}
			if ((res = spf_verdict(s, rcpt, reply, replylen)) != RESTR_PERMIT) {
				*decided = 1;
				return res;
			}
			break;
		case R_CHECK_GREYLIST:
			/* postgrey answers DEFER_IF_PERMIT: a later reject still rejects for good */
			if (s->tx && !greylist_exempt(s)) {
				char grey[600];

				if (greylisting_check(s, rcpt, grey, sizeof grey) == 1) {
					if (!ev->defer_if_permit)
						snprintf(ev->dip_reply, sizeof ev->dip_reply, "%s", grey);
					ev->defer_if_permit = 1;
				}
			}
			break;
		case R_REJECT_RBL_CLIENT:
		case R_REJECT_RHSBL_CLIENT:
		case R_REJECT_RHSBL_SENDER:
		case R_REJECT_RHSBL_HELO:
		case R_PERMIT_DNSWL_CLIENT:
			if ((res = dnsxl_word(ev, r, reply, replylen, decided)) != RESTR_PERMIT || *decided)
				return res;
			break;
		case R_REJECT_UNKNOWN_HELO_HOSTNAME:
			if ((res = helo_known(ev, reply, replylen, decided)) != RESTR_PERMIT || *decided)
				return res;
			break;
		case R_REJECT_UNKNOWN_CLIENT_HOSTNAME:
			if (s->name_status != PEER_OK) {
				*decided = 1;
				return coded(reply, replylen, s->name_status == PEER_PERM ? s->p->unknown_client_reject_code : 450,
				    "7.1", "Client host rejected: cannot find your hostname, [%s]", s->addr);
			}
			break;
		case R_REJECT_UNKNOWN_REVERSE_CLIENT_HOSTNAME:
			if (s->rev_status != PEER_OK) {
				*decided = 1;
				return coded(reply, replylen, s->rev_status == PEER_PERM ? s->p->unknown_client_reject_code : 450,
				    "7.1", "Client host rejected: cannot find your reverse hostname, [%s]", s->addr);
			}
			break;
		case R_CHECK_CLIENT_ACCESS:
			found = access_lookup_client(r->table, s->addr, &val);
			what = "Client host";
			snprintf(subject, sizeof subject, "%s[%s]", s->host, s->addr);
			break;
		case R_CHECK_HELO_ACCESS:
			if (s->helo)
				found = map_list_lookup(r->table, helo, &val);
			what = "Helo command";
			snprintf(subject, sizeof subject, "<%s>", helo);
			break;
		case R_CHECK_SENDER_ACCESS:
			found = access_lookup_addr(r->table, sender, &val);
			what = "Sender address";
			snprintf(subject, sizeof subject, "<%s>", sender);
			break;
		case R_CHECK_RECIPIENT_ACCESS:
			found = access_lookup_addr(r->table, rcpt, &val);
			what = "Recipient address";
			snprintf(subject, sizeof subject, "<%s>", rcpt);
			break;
		}
		if (found > 0) {
			res = access_action(s, val, what, subject, reply, replylen, &stop);
			mem_free(val);
			if (stop) {
				*decided = 1;
				return res;
			}
		}
		if (found < 0) {
			snprintf(reply, replylen, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
			*decided = 1;
			return RESTR_DEFER;
		}
	}
	return RESTR_PERMIT;
}

static int is_postmaster(const char *rcpt)
{
	size_t n = strcspn(rcpt, "@");
	return n == 10 && strncasecmp(rcpt, "postmaster", 10) == 0;
}

/*
 * Postfix's order with smtpd_delay_reject = yes: client, helo, sender,
 * relay, then recipient restrictions, all at RCPT time. A permit ends its
 * own list only; every list must let the recipient through.
 */
enum restr_result restr_check_rcpt(struct session *s, const char *rcpt, char *reply, size_t replylen)
{
	const struct restr_list *lists[] = { &s->gen->client_r, &s->gen->helo_r, &s->gen->sender_r,
		&s->gen->relay_r, &s->gen->recipient_r };
	struct resolve_result rr;
	struct restr_eval ev;
	enum restr_result res;
	size_t i;
	int decided;

	if (resolver_classify(s->gen->resolver, rcpt, &rr) < 0) {
		snprintf(reply, replylen, "451 4.3.0 <%s>: Temporary lookup failure", rcpt);
		return RESTR_DEFER;
	}
	/* RFC 5321 4.5.1: postmaster at any of our domains is always accepted */
	if (is_postmaster(rcpt) && rr.cls != RESOLVE_REMOTE && rr.cls != RESOLVE_RELAY)
		return RESTR_PERMIT;
	memset(&ev, 0, sizeof ev);
	ev.s = s;
	ev.rcpt = rcpt;
	ev.rr = &rr;
	for (i = 0; i < sizeof lists / sizeof lists[0]; i++) {
		res = run_list(&ev, lists[i], reply, replylen, &decided);
		if (res == RESTR_REJECT && ev.defer_if_reject) {
			snprintf(reply, replylen, "%s", ev.dir_reply);
			return RESTR_DEFER;
		}
		if (res != RESTR_PERMIT)
			return res;
	}
	/*
	 * Postfix's smtpd_reject_unlisted_recipient = yes: unknown users of our
	 * own domains are refused even for clients the list permitted, so a
	 * dictionary attack from a trusted network cannot fill the queue with
	 * bounces.
	 */
	if (!rr.known) {
		snprintf(reply, replylen, "550 5.1.1 <%s>: Recipient address rejected: %s", rcpt,
		    rr.cls == RESOLVE_VIRTUAL ? "User unknown in virtual mailbox table"
		    : "User unknown in local recipient table");
		return RESTR_REJECT;
	}
	if (ev.defer_if_permit) {
		snprintf(reply, replylen, "%s", ev.dip_reply);
		return RESTR_DEFER;
	}
	return RESTR_PERMIT;
}
