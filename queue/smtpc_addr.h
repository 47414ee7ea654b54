/*
 * queue/smtpc_addr.h: the SMTP client's address parameters (internal to
 * queue/smtpc.c, pure): inet_protocols, smtp_address_preference and
 * smtp_bind_address(6) parsed and applied to a host's address list.
 * smtpc_check_conf() (queue.h) is here too, for serve, reload and check.
 */
#ifndef FRUGAL_QUEUE_SMTPC_ADDR_H
#define FRUGAL_QUEUE_SMTPC_ADDR_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct smtpc_addr {
	struct sockaddr_storage sa;
	socklen_t len;                  /* 0: none */
	char text[INET6_ADDRSTRLEN];
};

/* "all", or a list of ipv4 and ipv6: 0, or -1 (an unknown word, or nothing) */
int  smtpc_parse_inet_protocols(const char *v, int *inet4, int *inet6);
/* A numeric address of `family` (AF_INET or AF_INET6) into a, port 0; "" leaves a->len 0. 0, or -1 */
int  smtpc_parse_bind(const char *v, int family, struct smtpc_addr *a);
/*
 * smtp_address_preference on one host's n addresses, in place: pref AF_INET or AF_INET6 puts
 * that family first (each family in DNS order); 0 (any) alternates the families, starting with
 * IPv6 when v6_first (the caller's coin), so both are tried before smtp_mx_address_limit runs
 * out (Postfix's smtp_balance_inet_protocols).
 */
void smtpc_order_addrs(struct smtpc_addr *a, int n, int pref, int v6_first);

#endif
