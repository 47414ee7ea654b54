/*
 * tests/fuzz/fake_dns.h: a resolver that never touches the network, for
 * fuzz targets (fuzz_spf_eval): dns_lookup keeps the one question asked and
 * the driver answers it when it likes, never inside the call.
 */
#ifndef FRUGAL_FAKE_DNS_H
#define FRUGAL_FAKE_DNS_H

#include <stddef.h>

#include "core/dns.h"

struct dns *fake_dns(void);
/* The question waiting (1, and it is taken: the driver calls cb), or 0. name NULL: only look. */
int fake_dns_pending(char *name, size_t len, enum dns_type *t, dns_cb *cb, void **arg);

#endif
