/*
 * queue/smtpc_addr.c: the SMTP client's address parameters (see
 * smtpc_addr.h). Pure: no I/O, no allocation; the caller owns the lists.
 */
#include "queue/smtpc_addr.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "queue/queue.h"

#define SMTPC_ADDR_MAX 64   /* addresses of one host ordered at most (the client keeps 16) */

int smtpc_parse_inet_protocols(const char *v, int *inet4, int *inet6)
{
	char w[16];
	size_t n;

	*inet4 = *inet6 = 0;
	while (v && *v) {
		v += strspn(v, " \t,");
		if ((n = strcspn(v, " \t,")) == 0)
			break;
		if (n >= sizeof w)
			return -1;
		memcpy(w, v, n);
		w[n] = '\0';
		v += n;
		if (strcasecmp(w, "all") == 0)
			*inet4 = *inet6 = 1;
		else if (strcasecmp(w, "ipv4") == 0)
			*inet4 = 1;
		else if (strcasecmp(w, "ipv6") == 0)
			*inet6 = 1;
		else
			return -1;
	}
	return *inet4 || *inet6 ? 0 : -1;
}

int smtpc_parse_bind(const char *v, int family, struct smtpc_addr *a)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)&a->sa;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->sa;

	memset(a, 0, sizeof *a);
	if (v == NULL || *v == '\0')
		return 0;
	if (family == AF_INET && inet_pton(AF_INET, v, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		a->len = sizeof *s4;
	} else if (family == AF_INET6 && inet_pton(AF_INET6, v, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		a->len = sizeof *s6;
	} else
		return -1;
	snprintf(a->text, sizeof a->text, "%s", v);
	return 0;
}

int smtpc_check_conf(const struct conf *cf, char *err, size_t errlen)
{
	static const char *const bind_name[2] = { "smtp_bind_address", "smtp_bind_address6" };
	struct smtpc_addr a;
	char loc[600];
	int i4, i6, k;

	if (smtpc_parse_inet_protocols(conf_str(cf, "inet_protocols", 0), &i4, &i6) < 0) {
		conf_where(cf, "inet_protocols", loc, sizeof loc);
		snprintf(err, errlen, "%s: inet_protocols: \"%s\": expected all, ipv4, ipv6 or \"ipv4, ipv6\"", loc,
		    conf_str(cf, "inet_protocols", 0));
		return -1;
	}
	for (k = 0; k < 2; k++) {
		const char *v = conf_str(cf, bind_name[k], 0);

		if (smtpc_parse_bind(v, k ? AF_INET6 : AF_INET, &a) < 0) {
			conf_where(cf, bind_name[k], loc, sizeof loc);
			snprintf(err, errlen, "%s: %s: \"%s\" is not a numeric %s address", loc, bind_name[k], v,
			    k ? "IPv6" : "IPv4");
			return -1;
		}
	}
	return 0;
}

void smtpc_order_addrs(struct smtpc_addr *a, int n, int pref, int v6_first)
{
	struct smtpc_addr v4[SMTPC_ADDR_MAX], v6[SMTPC_ADDR_MAX];
	int n4 = 0, n6 = 0, i, k = 0, first;

	if (n > SMTPC_ADDR_MAX)
		n = SMTPC_ADDR_MAX;
	for (i = 0; i < n; i++) {
		if (a[i].sa.ss_family == AF_INET)
			v4[n4++] = a[i];
		else
			v6[n6++] = a[i];
	}
	if (n4 == 0 || n6 == 0)
		return;
	first = pref ? pref : v6_first ? AF_INET6 : AF_INET;
	if (pref) {
		for (i = 0; i < (first == AF_INET ? n4 : n6); i++)
			a[k++] = first == AF_INET ? v4[i] : v6[i];
		for (i = 0; i < (first == AF_INET ? n6 : n4); i++)
			a[k++] = first == AF_INET ? v6[i] : v4[i];
		return;
	}
	for (i = 0; i < n4 || i < n6; i++) {
		if (first == AF_INET && i < n4)
			a[k++] = v4[i];
		if (i < n6)
			a[k++] = v6[i];
		if (first == AF_INET6 && i < n4)
			a[k++] = v4[i];
	}
}
