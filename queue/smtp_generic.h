/*
 * queue/smtp_generic.h: smtp_generic_maps (Postfix's generic(5)): the
 * addresses of mail that leaves over SMTP rewritten on the way out, the
 * envelope (MAIL FROM, RCPT TO) and the address headers (From, Sender,
 * Reply-To, To, Cc, ...; cleanup_header_class's list). The queue file is
 * never changed: the log and DSNs keep the addresses as queued.
 *
 * Lookup keys, generic(5): user+ext@domain, user@domain, user+ext, user (the
 * two bare forms only when domain is $myorigin, in $mydestination or
 * localhost), @domain. One lookup, no recursion; the first of a list is
 * taken; a result "@other" keeps the local part; a result without a domain
 * gets @$myorigin. An unmatched extension is not kept (Postfix's
 * propagate_unmatched_extensions does not name generic by default).
 */
#ifndef FRUGAL_QUEUE_SMTP_GENERIC_H
#define FRUGAL_QUEUE_SMTP_GENERIC_H

#include <stddef.h>

struct conf;
struct smtp_generic;

/* The tables of one generation; NULL with a reason in err. Reference counted (open gives one). */
struct smtp_generic *smtp_generic_open(const struct conf *c, char *err, size_t errlen);
struct smtp_generic *smtp_generic_ref(struct smtp_generic *g);
void smtp_generic_unref(struct smtp_generic *g);

/* One address: 1 rewritten into out, 0 as it is, -1 table error or a result longer than outlen. */
int smtp_generic_addr(struct smtp_generic *g, const char *addr, char *out, size_t outlen);

/*
 * One whole header ("Name: value\n", folded lines included): 1 rewritten into
 * out[0..*outlen), 0 not an address header or nothing changed, -1 error.
 */
int smtp_generic_header(struct smtp_generic *g, const char *hdr, size_t len, char *out, size_t cap,
    size_t *outlen);

#endif
