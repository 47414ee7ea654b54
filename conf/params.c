/*
 * conf/params.c: the typed table of every frugal.conf parameter with its
 * default and a one-line description (PRODUCT.md section 2 plus frugal's
 * additions), and the parsers for typed values. Defaults are written the
 * way `frugal config -d` prints them, unexpanded. This file owns no state.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf_impl.h"
#include "core/dns.h"
#include "core/mem.h"

#define S(n, d, desc)          { n, CT_STR, 0, d, NULL, desc }
#define L(n, d, desc)          { n, CT_LIST, 0, d, NULL, desc }
#define I(n, d, desc)          { n, CT_INT, 0, d, NULL, desc }
#define T(n, d, desc)          { n, CT_TIME, 0, d, NULL, desc }
#define B(n, d, desc)          { n, CT_BOOL, 0, d, NULL, desc }
#define P(n, d, desc)          { n, CT_PERCENT, 0, d, NULL, desc }
#define E(n, d, allowed, desc) { n, CT_ENUM, 0, d, allowed, desc }
/* the same, for parameters this version accepts but does not act on (CF_LATER) */
#define SX(n, d, desc)          { n, CT_STR, CF_LATER, d, NULL, desc }
#define LX(n, d, desc)          { n, CT_LIST, CF_LATER, d, NULL, desc }
#define IX(n, d, desc)          { n, CT_INT, CF_LATER, d, NULL, desc }
#define TX(n, d, desc)          { n, CT_TIME, CF_LATER, d, NULL, desc }
#define BX(n, d, desc)          { n, CT_BOOL, CF_LATER, d, NULL, desc }
#define EX(n, d, allowed, desc) { n, CT_ENUM, CF_LATER, d, allowed, desc }

/* In PRODUCT.md's order, by area; conf_param_find() does not rely on order. */
const struct conf_param conf_param_table[] = {
	/* identity */
	{ "myhostname", CT_STR, CF_DYNAMIC, "", NULL,
	  "the fully qualified host name of this system (default: from gethostname())" },
	{ "mydomain", CT_STR, CF_DYNAMIC, "", NULL,
	  "the internet domain of this system: $myhostname minus its first label, or localdomain" },
	S("myorigin", "$myhostname", "the domain appended to unqualified sender addresses of local mail"),
	L("mydestination", "$myhostname, localhost", "domains delivered locally (to system users or $local_mailbox_base)"),
	S("mail_name", "frugal", "the mail system name used in the banner and in bounces"),
	S("smtpd_banner", "$myhostname ESMTP $mail_name", "text that follows the 220 code of the SMTP greeting"),
	/* listeners */
	S("smtpd_listen", "0.0.0.0:25", "address:port of the SMTP listener (empty: off)"),
	S("submission_listen", "", "address:port of the submission listener, e.g. 0.0.0.0:587 (empty: off)"),
	S("smtps_listen", "", "address:port of the implicit-TLS submission listener, e.g. 0.0.0.0:465 (empty: off)"),
	/* routing */
	L("mynetworks", "127.0.0.0/8 [::1]/128", "client networks trusted to relay (permit_mynetworks)"),
	L("relay_domains", "", "domains this server relays mail to"),
	S("relayhost", "", "send all non-local mail through this host ([host]:port); empty: direct MX delivery"),
	L("transport_maps", "", "tables mapping recipient domains to transports"),
	L("alias_maps", "cdb:/etc/frugal/aliases", "alias tables for local recipients (aliases(5) syntax)"),
	L("virtual_alias_maps", "", "tables rewriting recipient addresses to other addresses"),
	L("virtual_mailbox_domains", "", "domains whose mailboxes are virtual (not system accounts)"),
	L("virtual_mailbox_maps", "", "tables mapping virtual addresses to mailbox paths under $virtual_mailbox_base"),
	S("virtual_mailbox_base", "/var/mail/vhosts", "directory prefix of virtual mailboxes"),
	S("virtual_mailbox_owner", "vmail", "the user that owns virtual mailboxes"),
	S("home_mailbox", "Maildir/", "mailbox path relative to a local user's home; a trailing / means Maildir"),
	S("mailbox_transport", "", "deliver local mail through this transport instead, e.g. lmtp:unix:/run/dovecot/lmtp"),
	/* smtpd */
	T("smtpd_timeout", "${stress?{10}:{300}}s", "time to wait for an SMTP client command or data"),
	T("smtpd_shutdown_timeout", "30s", "at frugal stop: how long transactions in flight may take to finish before their sessions get 421"),
	T("smtpd_starttls_timeout", "${stress?{10}:{300}}s", "time for the TLS handshake after STARTTLS (or on smtps_listen)"),
	I("smtpd_hard_error_limit", "${stress?{1}:{20}}", "errors after which the SMTP session is disconnected"),
	I("smtpd_soft_error_limit", "10", "errors after which every reply is delayed by $smtpd_error_sleep_time"),
	T("smtpd_error_sleep_time", "1s", "delay before an error reply once the soft error limit is reached"),
	I("smtpd_junk_command_limit", "${stress?{1}:{100}}", "NOOP, RSET, VRFY, ETRN, HELP commands allowed before errors count"),
	I("smtpd_recipient_limit", "1000", "recipients accepted per message"),
	I("message_size_limit", "10240000", "largest message accepted, in bytes"),
	B("smtpd_helo_required", "no", "require HELO or EHLO before MAIL FROM"),
	B("smtpd_forbid_bare_newline", "yes", "refuse bare LF or CR in commands and message data"),
	I("smtpd_client_connection_count_limit", "50", "simultaneous connections per client address (0: no limit)"),
	I("smtpd_client_connection_rate_limit", "0", "connections per client per $anvil_rate_time_unit (0: no limit)"),
	I("smtpd_client_message_rate_limit", "0", "messages per client per $anvil_rate_time_unit (0: no limit)"),
	I("smtpd_client_recipient_rate_limit", "0", "recipients per client per $anvil_rate_time_unit (0: no limit)"),
	I("smtpd_client_auth_rate_limit", "0", "AUTH commands per client per $anvil_rate_time_unit (0: no limit)"),
	T("anvil_rate_time_unit", "60s", "time unit of the client rate limits"),
	L("smtpd_client_event_limit_exceptions", "$mynetworks", "client networks exempt from the connection, rate and AUTH limits"),
	I("anvil_table_size", "0", "clients the rate and connection limits remember at once (0: 4 x the session limit, 1024 to 65536)"),
	I("smtpd_client_ipv6_prefix_length", "84", "IPv6 clients are counted per prefix of this length (rate and connection limits)"),
	B("smtpd_hide_client_session", "no", "leave the client's name and address out of the Received: header"),
	I("unknown_address_reject_code", "450", "reply code of reject_unknown_sender_domain when the domain is not found"),
	I("unknown_client_reject_code", "450", "reply code of reject_unknown_(reverse_)client_hostname when no name is found"),
	B("spf_helo_check", "yes", "check_spf: a null sender (<>) is checked as postmaster@ its HELO name (RFC 7208 2.4); no: result none"),
	B("spf_permerror_reject", "no", "check_spf: reject an SPF permerror with 550 5.5.2 (postfix-policyd-spf-python's PermError_reject)"),
	B("spf_softfail_reject", "no", "check_spf: reject an SPF softfail with 550 5.7.23 (policyd-spf's Mail_From_reject = Softfail)"),
	T("greylist_delay", "300s", "check_greylist: a new (client network, sender, recipient) triplet is deferred for this long (postgrey --delay)"),
	T("greylist_max_age", "35d", "check_greylist: a triplet that passed is remembered this long after it was last seen (postgrey --max-age)"),
	T("greylist_retry_window", "2d", "check_greylist: a deferred triplet is forgotten when no retry came within this time (postgrey --retry-window)"),
	I("greylist_client_prefix", "24", "check_greylist: IPv4 clients are one client per network of this prefix length (postgrey --ipv4cidr)"),
	I("greylist_client_ipv6_prefix", "64", "check_greylist: IPv6 clients are one client per network of this prefix length (postgrey --ipv6cidr)"),
	L("greylist_allowlist_clients", "", "check_greylist: client networks (CIDR) and tables (cdb:, inline:, keyed as check_client_access) never greylisted"),
	I("greylist_table_size", "65536", "check_greylist: triplets remembered at once (36 bytes each, charged to the memory budget); the oldest go first"),
	S("greylist_store", "$queue_directory/data/greylist", "check_greylist: the file the triplets are saved to (every minute and at stop) and read from at start"),
	B("smtpd_dkim_verify", "yes", "verify the DKIM signatures of mail from outside (not AUTH, not mynetworks): Authentication-Results"),
	B("smtpd_dmarc", "yes", "evaluate DMARC (RFC 7489) for mail from outside: dmarc= in Authentication-Results"),
	B("smtpd_dmarc_enforce", "no", "reject a DMARC fail under p=reject with 550 5.7.1 (OpenDMARC's RejectFailures)"),
	S("smtpd_authserv_id", "$myhostname", "the authserv-id of the Authentication-Results header (RFC 8601)"),
	S("smtpd_dmarc_public_suffix_list", "/usr/share/publicsuffix/public_suffix_list.dat",
	  "the Public Suffix List DMARC's organizational domains come from (Debian's publicsuffix)"),
	T("smtpd_pregreet_wait", "0s", "pause before the greeting; clients that talk first are dropped (0: off)"),
	L("smtpd_client_restrictions", "", "restrictions applied when a client connects"),
	L("smtpd_helo_restrictions", "", "restrictions applied to HELO/EHLO"),
	L("smtpd_sender_restrictions", "", "restrictions applied to MAIL FROM"),
	L("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
	  "relay restrictions applied to RCPT TO before smtpd_recipient_restrictions"),
	L("smtpd_recipient_restrictions",
	  "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, reject_unlisted_recipient",
	  "restrictions applied to RCPT TO"),
	L("postscreen_dnsbl_sites", "", "DNS blocklists scored for each port 25 client before its session (site[=127.0.0.N][*weight])"),
	I("postscreen_dnsbl_threshold", "1", "score at which a client is refused"),
	S("postscreen_dnsbl_allowlist_threshold", "0", "a score at or below this (when negative) skips the other tests"),
	T("postscreen_dnsbl_timeout", "10s", "how long the screen waits for the DNS lists' answers"),
	E("postscreen_dnsbl_action", "drop", "drop|ignore", "a client at the threshold: drop (521 and close) or ignore (log only)"),
	T("postscreen_greet_ttl", "1d", "how long a client that passed the pregreet wait skips it"),
	T("postscreen_dnsbl_max_ttl", "1h", "how long a client that passed the DNS list score skips it"),
	I("postscreen_cache_size", "16384", "clients the screen remembers as passed (kept in $queue_directory/postscreen_cache)"),
	L("rbl_reply_maps", "", "tables of reply templates for the DNS list words, keyed by the list as written (zone=filter), then its zone"),
	{ "default_rbl_reply", CT_STR, CF_RAW,
	  "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}", NULL,
	  "the reply template of a DNS list rejection when rbl_reply_maps has none ($rbl_code, $rbl_class, $rbl_what, $rbl_domain, $rbl_reason ...)" },
	I("maps_rbl_reject_code", "554", "$rbl_code: the reply code of reject_rbl_client and reject_rhsbl_* when a list has the client"),
	I("unknown_hostname_reject_code", "450", "reply code of reject_unknown_helo_hostname when the HELO name has no A, AAAA or MX record"),
	/* TLS and AUTH */
	S("smtpd_tls_cert_file", "", "PEM certificate chain of the SMTP server, leaf first (empty: no STARTTLS)"),
	S("smtpd_tls_key_file", "", "PEM private key of the SMTP server (empty: in smtpd_tls_cert_file)"),
	E("smtpd_tls_security_level", "may", "none|may|encrypt", "inbound TLS: none, may (offered when a cert is set) or encrypt"),
	B("smtpd_tls_auth_only", "yes", "offer AUTH only after STARTTLS"),
	B("smtpd_sasl_auth_enable", "no", "offer AUTH on port 25 (always on for submission)"),
	L("smtpd_sasl_users", "cdb:/etc/frugal/users", "tables mapping login addresses to crypt(3) hashes"),
	E("smtpd_sasl_type", "frugal", "frugal|dovecot", "SASL back end: frugal ($smtpd_sasl_users) or dovecot"),
	L("smtpd_sender_login_maps", "", "tables mapping envelope senders to the logins allowed to use them"),
	S("smtpd_sasl_path", "", "dovecot auth socket when smtpd_sasl_type = dovecot"),
	E("smtp_tls_security_level", "may", "none|may|encrypt|dane|verify|secure",
	  "outbound TLS policy (may: STARTTLS when offered; Postfix's own default is none)"),
	L("smtp_sasl_password_maps", "", "tables of username:password per relay host for outbound AUTH"),
	B("smtp_sasl_auth_enable", "no", "authenticate to the next hop with smtp_sasl_password_maps"),
	S("smtp_sasl_security_options", "noplaintext, noanonymous",
	  "outbound SASL mechanisms refused on plain-text sessions (noplaintext refuses PLAIN and LOGIN)"),
	S("smtp_sasl_tls_security_options", "$smtp_sasl_security_options",
	  "outbound SASL mechanisms refused on TLS sessions (a relayhost set-up says noanonymous)"),
	S("smtp_tls_CAfile", "", "PEM trust anchors for outbound TLS (empty: no peer is Trusted; verify/secure fail)"),
	B("smtp_mta_sts", "yes", "honour the MTA-STS policies of recipient domains (RFC 8461) for MX deliveries"),
	S("smtp_mta_sts_CAfile", "", "PEM trust anchors for MTA-STS: the policy fetch and enforced MX certificates (empty: the system's bundle)"),
	T("smtp_mta_sts_timeout", "10s", "time limit of one MTA-STS policy fetch: resolve, connect, TLS and the HTTP response"),
	T("smtp_mta_sts_failure_cache_time", "300s",
	  "how long a failed MTA-STS policy fetch is remembered (per domain and TXT id) before deliveries fetch again; 0: not remembered"),
	B("disable_mime_output_conversion", "no",
	  "send 8-bit mail as is to a peer without 8BITMIME instead of converting it to quoted-printable"),
	/* queue and delivery */
	S("queue_directory", "/var/spool/frugal", "the mail queue"),
	S("mail_owner", "frugal", "the user frugal runs as after binding its ports"),
	S("setgid_group", "frugal-drop", "the group of frugal-postdrop (set-group-ID) and of queue_directory/maildrop, as Postfix's postdrop"),
	S("command_directory", "", "where sendmail finds frugal-postdrop (empty: beside the running binary)"),
	T("queue_run_delay", "300s", "how often deferred mail is scanned"),
	T("minimal_backoff_time", "300s", "least time between delivery attempts of deferred mail"),
	T("maximal_backoff_time", "4000s", "most time between delivery attempts of deferred mail"),
	T("maximal_queue_lifetime", "5d", "how long undeliverable mail stays queued before it bounces"),
	T("bounce_queue_lifetime", "5d", "how long undeliverable bounces stay queued"),
	T("delay_warning_time", "0h", "send a delay notice after mail is this old (0: never)"),
	L("defer_transports", "", "transports whose mail is held until frugal queue flush (or ETRN)"),
	I("qmgr_message_active_limit", "20000", "messages the scheduler keeps in memory; the rest wait on disk"),
	S("2bounce_notice_recipient", "postmaster", "who gets bounces that cannot be delivered"),
	I("bounce_size_limit", "50000", "the most of the original message a non-delivery report returns (larger: headers only)"),
	I("initial_destination_concurrency", "5", "first number of parallel deliveries to one destination"),
	I("default_destination_concurrency_limit", "20", "most parallel deliveries to one destination"),
	I("default_destination_recipient_limit", "50", "most recipients per delivery"),
	/* per transport (Postfix's TRANSPORT_destination_* for the transports frugal has) */
	I("local_destination_concurrency_limit", "2", "parallel deliveries to one local recipient"),
	I("local_destination_recipient_limit", "1", "recipients per local delivery"),
	I("virtual_destination_concurrency_limit", "$default_destination_concurrency_limit", "parallel deliveries to one virtual domain"),
	I("virtual_destination_recipient_limit", "$default_destination_recipient_limit", "recipients per virtual delivery"),
	I("smtp_destination_concurrency_limit", "$default_destination_concurrency_limit", "parallel SMTP deliveries to one destination"),
	I("smtp_destination_recipient_limit", "$default_destination_recipient_limit", "recipients per SMTP delivery"),
	I("relay_destination_concurrency_limit", "$default_destination_concurrency_limit", "parallel relay deliveries to one destination"),
	I("relay_destination_recipient_limit", "$default_destination_recipient_limit", "recipients per relay delivery"),
	I("lmtp_destination_concurrency_limit", "$default_destination_concurrency_limit", "parallel LMTP deliveries to one destination"),
	I("lmtp_destination_recipient_limit", "$default_destination_recipient_limit", "recipients per LMTP delivery"),
	T("smtp_connect_timeout", "30s", "time to wait for an outbound SMTP connection"),
	T("smtp_helo_timeout", "300s", "time to wait for the greeting and the HELO reply of a remote server"),
	T("smtp_mail_timeout", "300s", "time to wait for the reply to MAIL FROM"),
	T("smtp_rcpt_timeout", "300s", "time to wait for the reply to each RCPT TO"),
	T("smtp_data_init_timeout", "120s", "time to wait for the reply to DATA"),
	T("smtp_data_xfer_timeout", "180s", "time a write of message data may take to progress"),
	T("smtp_data_done_timeout", "600s", "time to wait for the reply to the end of data"),
	TX("smtp_quit_timeout", "300s", "time to wait for the reply to QUIT (never waited for: smtp_skip_quit_response = yes)"),
	I("smtp_mx_address_limit", "5", "most addresses of the MX hosts tried per delivery (0: no limit)"),
	T("smtp_rset_timeout", "20s", "time to wait for the reply to RSET (a connection kept for reuse)"),
	B("smtp_connection_cache_on_demand", "yes", "keep an SMTP/LMTP connection open after a delivery for the next message to the same destination"),
	T("smtp_connection_cache_time_limit", "2s", "how long a kept connection waits idle for the next message"),
	T("smtp_connection_reuse_time_limit", "300s", "age after which a connection is no longer reused"),
	I("smtp_connection_reuse_count_limit", "0", "times a connection may be reused (0: no limit)"),
	L("sender_canonical_maps", "", "tables rewriting the envelope sender and sender headers (From:, Sender:, Reply-To: ...)"),
	L("recipient_canonical_maps", "", "tables rewriting envelope recipients and recipient headers (To:, Cc: ...)"),
	L("smtp_generic_maps", "", "tables rewriting addresses of mail sent out over SMTP"),
	L("dkim_signing_maps", "", "tables mapping a From: domain to its DKIM key as selector:keyfile; mail from AUTH, mynetworks and sendmail is signed"),
	S("dkim_key_directory", "/etc/frugal/dkim", "where frugal dkim keygen writes private keys"),
	L("masquerade_domains", "", "domains whose subdomains are stripped from the envelope sender and header addresses"),
	S("inet_protocols", "all", "address families of outbound connections: all, ipv4 or ipv6"),
	E("smtp_address_preference", "any", "any|ipv4|ipv6", "address family tried first when a host has both"),
	S("smtp_bind_address", "", "local IPv4 address of outbound connections"),
	S("smtp_bind_address6", "", "local IPv6 address of outbound connections"),
	S("smtp_helo_name", "$myhostname", "host name sent in the outbound EHLO"),
	IX("queue_minfree", "0", "free bytes the queue file system keeps; at least 1.5 x $message_size_limit is always kept"),
	S("virtual_transport", "virtual", "transport of virtual mailbox domains"),
	S("dns_servers", "", "DNS servers (ip or ip:port, list); empty: /etc/resolv.conf"),
	/* limits */
	{ "limits_source", CT_ENUM, CF_MULTI, "auto", "auto|beancounters|cgroup|rlimit|manual",
	  "where container limits are read from: auto, or a list of the sources" },
	S("beancounters_file", "/proc/user_beancounters", "the OpenVZ/Virtuozzo beancounters file"),
	S("cgroup_root", "/sys/fs/cgroup", "where the cgroup file system is mounted"),
	{ "limit_numothersock", CT_INT, CF_EMPTY_OK, "", NULL, "manual override of the numothersock limit (empty: detect)" },
	{ "limit_numtcpsock", CT_INT, CF_EMPTY_OK, "", NULL, "manual override of the numtcpsock limit (empty: detect)" },
	{ "limit_numfile", CT_INT, CF_EMPTY_OK, "", NULL, "manual override of the open file limit (empty: detect)" },
	{ "limit_memory", CT_INT, CF_EMPTY_OK, "", NULL, "manual override of the memory limit in bytes (empty: detect)" },
	P("limits_share", "50%", "the most of each container limit frugal takes for itself"),
	P("limits_reserve", "5%", "the part of each container limit left free container-wide"),
	{ "smtpd_concurrency_limit", CT_INT_AUTO, 0, "auto", NULL, "simultaneous SMTP sessions (auto: derived from the budget)" },
	{ "delivery_concurrency_limit", CT_INT_AUTO, 0, "auto", NULL, "simultaneous deliveries (auto: derived from the budget)" },
	P("stress_threshold", "80%", "budget use at which stress mode starts"),
	/* logging */
	S("maillog_file", "", "log destination: empty for syslog, /dev/stderr, or a file"),
	S("syslog_facility", "mail", "syslog facility"),
	S("syslog_name", "frugal", "the name that prefixes every log line"),
	/* frugal additions and Postfix names used internally */
	S("stress", "", "stress flag: \"yes\" while the daemon is near its budget (selects ${stress?{a}:{b}})"),
	L("local_recipient_maps", "unix:passwd.byname $alias_maps", "tables of the local users that exist (empty: any local part is accepted)"),
	S("local_mailbox_base", "", "when set, USER@$mydestination is delivered to $local_mailbox_base/USER/$home_mailbox without a system account"),
	I("hopcount_limit", "50", "Received: headers after which a message bounces as a loop"),
	S("double_bounce_sender", "double-bounce", "sender of bounces that themselves cannot be delivered"),
	S("recipient_delimiter", "", "characters that separate a user name from an address extension"),
	{ "mail_version", CT_STR, CF_READONLY, "0.1", NULL, "the frugal version (read-only)" },
};
const size_t conf_param_count = sizeof conf_param_table / sizeof conf_param_table[0];

const struct conf_param *conf_param_find(const char *name)
{
	size_t i;

	for (i = 0; i < conf_param_count; i++)
		if (strcmp(conf_param_table[i].name, name) == 0)
			return &conf_param_table[i];
	return NULL;
}

int conf_param_describe(size_t i, const char **name, const char **def,
    const char **type, const char **desc)
{
	const struct conf_param *p;

	if (i >= conf_param_count)
		return -1;
	p = &conf_param_table[i];
	if (name)
		*name = p->name;
	if (def)
		*def = p->def;
	if (type)
		*type = conf_type_name(p->type);
	if (desc)
		*desc = p->desc;
	return 0;
}

const char *conf_type_name(enum conf_type t)
{
	switch (t) {
	case CT_STR:      return "string";
	case CT_LIST:     return "list";
	case CT_INT:      return "integer";
	case CT_INT_AUTO: return "integer or auto";
	case CT_TIME:     return "time";
	case CT_BOOL:     return "boolean";
	case CT_PERCENT:  return "percent";
	case CT_ENUM:     return "keyword";
	}
	return "?";
}

static int parse_digits(const char **pp, long long *out)
{
	const char *p = *pp;
	long long v = 0;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (LLONG_MAX - (*p - '0')) / 10)
			return -2;
		v = v * 10 + (*p - '0');
	}
	*pp = p;
	*out = v;
	return 0;
}

int conf_parse_number(const struct conf_param *prm, const char *v, long long *out,
    const char **why)
{
	const char *p = v;
	long long n, mult = 1;
	int r;

	*out = 0;
	if (*v == 0 && (prm->flags & CF_EMPTY_OK))
		return 0;
	switch (prm->type) {
	case CT_INT_AUTO:
		if (strcasecmp(v, "auto") == 0) {
			*out = -1;
			return 0;
		}
		/* FALLTHROUGH */
	case CT_INT:
		if ((r = parse_digits(&p, &n)) < 0 || *p) {
			*why = r == -2 ? "integer out of range" : "bad integer value";
			return -1;
		}
		*out = n;
		return 0;
	case CT_TIME:
		if ((r = parse_digits(&p, &n)) < 0) {
			*why = r == -2 ? "time value out of range" : "bad time value";
			return -1;
		}
		if (*p) {
			switch (*p) {
			case 's': mult = 1; break;
			case 'm': mult = 60; break;
			case 'h': mult = 3600; break;
			case 'd': mult = 86400; break;
			case 'w': mult = 604800; break;
			default:
				*why = "bad time unit (use s, m, h, d or w)";
				return -1;
			}
			if (p[1]) {
				*why = "bad time unit (use s, m, h, d or w)";
				return -1;
			}
		}
		if (n > LLONG_MAX / mult) {
			*why = "time value out of range";
			return -1;
		}
		*out = n * mult;
		return 0;
	case CT_BOOL:
		if (strcasecmp(v, "yes") == 0)
			*out = 1;
		else if (strcasecmp(v, "no") == 0)
			*out = 0;
		else {
			*why = "bad boolean value (use yes or no)";
			return -1;
		}
		return 0;
	case CT_PERCENT:
		if (parse_digits(&p, &n) < 0 || (*p && strcmp(p, "%") != 0) || n > 100) {
			*why = "bad percent value (use 0% to 100%)";
			return -1;
		}
		*out = n;
		return 0;
	case CT_ENUM: {
		const char *w = v;

		/* one keyword, or (CF_MULTI) a list of them */
		do {
			const char *a = prm->allowed;
			size_t len;
			int ok = 0;

			if (prm->flags & CF_MULTI) {
				w += strspn(w, ", \t");
				len = strcspn(w, ", \t");
			} else {
				len = strlen(w);
			}
			while (a && *a && !ok) {
				const char *bar = strchr(a, '|');
				size_t alen = bar ? (size_t)(bar - a) : strlen(a);

				ok = alen == len && strncasecmp(a, w, len) == 0;
				a = bar ? bar + 1 : NULL;
			}
			if (!ok) {
				*why = "bad value (not one of the allowed keywords)";
				return -1;
			}
			w += len;
		} while ((prm->flags & CF_MULTI) && *(w + strspn(w, ", \t")));
		return 0;
	}
	case CT_STR:
	case CT_LIST:
		return 0;
	}
	return 0;
}

/*
 * Postfix takes gethostname() and, when that is not qualified, asks the
 * resolver for the canonical name. frugal asks the hosts file only (no
 * network, so nothing can wait here). Computed once per process.
 */
static unsigned long hostname_lookups;

unsigned long conf_hostname_lookups(void)
{
	return __atomic_load_n(&hostname_lookups, __ATOMIC_RELAXED);
}

const char *conf_system_hostname(void)
{
	static char name[256];
	static int done;

	if (__atomic_load_n(&done, __ATOMIC_ACQUIRE))
		return name;
	__atomic_add_fetch(&hostname_lookups, 1, __ATOMIC_RELAXED);
	char tmp[256];
	if (gethostname(tmp, sizeof tmp - 1) < 0 || tmp[0] == 0)
		strcpy(tmp, "localhost");
	tmp[sizeof tmp - 1] = 0;
	if (strchr(tmp, '.') == NULL) {
		/*
		 * The canonical name from /etc/hosts only (c-ares's file lookup):
		 * getaddrinfo(AI_CANONNAME) asked DNS too, and a container with an
		 * unreachable resolver hung here for its whole timeout at every
		 * start (no blocking DNS anywhere: DESIGN.md, the resolver).
		 * Without a dotted name there, set myhostname.
		 */
		char canon[256];
		if (dns_hosts_canonical(tmp, canon, sizeof canon) == 0 && strchr(canon, '.'))
			strcpy(tmp, canon);
	}
	for (char *p = tmp; *p; p++)
		*p = tolower((unsigned char)*p);
	memcpy(name, tmp, sizeof name);
	__atomic_store_n(&done, 1, __ATOMIC_RELEASE);
	return name;
}

char *conf_domain_of(const char *host)
{
	const char *dot = strchr(host, '.');

	return mem_strdup(dot && dot[1] ? dot + 1 : "localdomain");
}
