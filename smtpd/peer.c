/*
 * smtpd/peer.c: the client's name, found as Postfix finds it at connect
 * (smtpd_peer.c): the PTR record of the address, then the A (or AAAA)
 * records of that name must contain the address again; only then is the
 * name used (logs, Received:, check_client_access). Otherwise the client
 * is "unknown", with why: PERM (no PTR, or it does not point back) or
 * TEMP (a lookup failed for now), which reject_unknown_client_hostname
 * and reject_unknown_reverse_client_hostname answer with different codes.
 *
 * Both lookups go as the system resolver's would (dns_lookup_sys: the
 * hosts file first, then DNS), since Postfix asks getnameinfo and
 * getaddrinfo here: 127.0.0.1 is localhost[127.0.0.1], with no PTR query.
 *
 * Runs on the loop through core/dns; the session holds one query at a
 * time (s->dns_q) and is told when the name is settled
 * (session_name_known). Never blocks; the wait is bounded by the
 * resolver's own timeout.
 */
#include "smtpd/smtpd_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/dns.h"
#include "core/log.h"
#include "core/mem.h"

static struct log_rate fwd_rate = LOG_RATE_INIT(60, 10);

static void settle(struct session *s, enum peer_code name, enum peer_code rev, const char *host)
{
	s->name_status = name;
	s->rev_status = rev;
	snprintf(s->host, sizeof s->host, "%s", name == PEER_OK ? host : "unknown");
	mem_free(s->rev_name);
	s->rev_name = NULL;
	session_name_known(s);
}

/* The client's own address as 4 or 16 bytes; v4-mapped v6 as v4 (so it is compared with A records). */
static int peer_bytes(const struct session *s, unsigned char *out)
{
	if (s->peer.ss_family == AF_INET) {
		memcpy(out, &((const struct sockaddr_in *)&s->peer)->sin_addr, 4);
		return AF_INET;
	}
	if (s->peer.ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)&s->peer)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a)) {
			memcpy(out, a->s6_addr + 12, 4);
			return AF_INET;
		}
		memcpy(out, a, 16);
		return AF_INET6;
	}
	return 0;
}

static void forward_cb(void *arg, const struct dns_answer *a)
{
	struct session *s = arg;
	unsigned char me[16];
	int fam = peer_bytes(s, me), i;

	s->dns_q = NULL;
	if (a->status == DNS_TEMPFAIL) {
		settle(s, PEER_TEMP, PEER_OK, NULL);
		return;
	}
	for (i = 0; i < a->n; i++)
		if (a->rr[i].family == fam && memcmp(a->rr[i].addr, me, fam == AF_INET ? 4 : 16) == 0) {
			char host[256];
			snprintf(host, sizeof host, "%s", s->rev_name);
			settle(s, PEER_OK, PEER_OK, host);
			return;
		}
	/* Postfix's warnings, word for word (fail2ban's postfix filter knows them) */
	if (a->status == DNS_FOUND)
		log_ratelimited(&fwd_rate, "smtpd", "hostname %s does not resolve to address %s", s->rev_name, s->addr);
	else
		log_ratelimited(&fwd_rate, "smtpd", "hostname %s does not resolve to address %s: %s", s->rev_name, s->addr,
		    a->status == DNS_NXDOMAIN ? "Name or service not known" : "No address associated with hostname");
	settle(s, PEER_PERM, PEER_OK, NULL);
}

static void ptr_cb(void *arg, const struct dns_answer *a)
{
	struct session *s = arg;
	unsigned char me[16];
	int fam = peer_bytes(s, me);
	const char *name;

	s->dns_q = NULL;
	if (a->status == DNS_TEMPFAIL) {
		settle(s, PEER_TEMP, PEER_TEMP, NULL);
		return;
	}
	if (a->status != DNS_FOUND) {
		settle(s, PEER_PERM, PEER_PERM, NULL);
		return;
	}
	name = a->rr[0].text;
	if (!smtpd_valid_hostname(name)) {
		/* a PTR that is no host name (Postfix: "malformed domain name"): never shown as the client's name */
		log_ratelimited(&fwd_rate, "smtpd", "%s: the PTR record is not a valid host name: ignored", s->addr);
		settle(s, PEER_PERM, PEER_OK, NULL);
		return;
	}
	if ((s->rev_name = mem_strdup(name)) == NULL ||
	    (s->dns_q = dns_lookup_sys(s->srv->dns, name, fam == AF_INET ? DNS_A : DNS_AAAA, forward_cb, s)) == NULL) {
		settle(s, PEER_TEMP, PEER_OK, NULL);
		return;
	}
}

void peer_lookup_start(struct session *s)
{
	char ptr[80];

	s->name_pending = 1;
	if (s->srv->dns == NULL || dns_ptr_name((const struct sockaddr *)&s->peer, ptr, sizeof ptr) < 0 ||
	    (s->dns_q = dns_lookup_sys(s->srv->dns, ptr, DNS_PTR, ptr_cb, s)) == NULL)
		settle(s, PEER_TEMP, PEER_TEMP, NULL);
}

void peer_lookup_gone(struct session *s)
{
	dns_cancel(s->dns_q);
	s->dns_q = NULL;
	mem_free(s->rev_name);
	s->rev_name = NULL;
}
