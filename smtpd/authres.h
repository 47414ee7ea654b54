/*
 * smtpd/authres.h: the inbound authentication of one message from outside
 * (issue 16): DKIM verification (RFC 6376) with libopendkim as the bytes
 * stream into the spool, DMARC (RFC 7489, smtpd/dmarc.h), and the
 * Authentication-Results: header (RFC 8601). Every DNS lookup goes through
 * core/dns on the loop and starts as soon as its name is known (the keys
 * and the DMARC record at the end of the headers), so the wait at the end
 * of the data is usually none. Knows no SMTP replies: content.c turns the
 * verdict into the 550 or the late header.
 */
#ifndef FRUGAL_SMTPD_AUTHRES_H
#define FRUGAL_SMTPD_AUTHRES_H

#include <stddef.h>
#include <sys/socket.h>

struct dns;
struct dmarc_psl;
struct spool_txn;
struct spf_check;

#define AUTHRES_SIGS_MAX   5              /* DKIM signatures verified per message (the topmost) */
#define AUTHRES_HDR_MAX    (64 * 1024)    /* a header block past this is not verified (permerror) */
#define AUTHRES_KEY_MAX    1023           /* a key record longer (RSA over 4096 bits) is refused */

struct authres;
typedef void (*authres_cb)(void *arg);

struct authres_opts {
	int dkim;                  /* smtpd_dkim_verify */
	int dmarc;                 /* smtpd_dmarc */
	const struct dmarc_psl *psl;  /* borrowed (the generation's); NULL: the last two labels */
};

/*
 * Start checking the message of txn (call after the trace headers are
 * written: the filter sees the client's own bytes only). spf: the
 * transaction's check_spf result (borrowed; NULL: DMARC starts its own
 * check of the sender, from client/helo/sender). The check is the txn's
 * spool filter and is freed with the txn (commit or abort), its lookups
 * cancelled. NULL without memory (errno).
 */
struct authres *authres_start(struct spool_txn *txn, struct dns *dns, const struct authres_opts *o,
    struct spf_check *spf, const struct sockaddr_storage *client, const char *helo, const char *sender,
    const char *myhostname);
/* 1: every answer is in; 0: lookups run, cb(arg) runs once on the loop when they are (not from here). */
int  authres_ready(struct authres *a, authres_cb cb, void *arg);

enum authres_verdict { AUTHRES_ACCEPT, AUTHRES_REJECT };
/*
 * Evaluate (the DKIM signatures, then DMARC) once authres_ready said 1.
 * The Authentication-Results: header (authserv_id first, one method per
 * line, LF line ends, no final LF) goes into hdr; with enforce, a DMARC
 * fail under p=reject is AUTHRES_REJECT and reply gets the 550 text. -1:
 * out of memory.
 */
int  authres_finish(struct authres *a, const char *authserv_id, int enforce, char *hdr, size_t hdrlen,
    enum authres_verdict *verdict, char *reply, size_t replylen);

/* Exposed for the unit test: does an Authentication-Results: value claim this authserv-id? */
int  authres_claims_id(const char *value, size_t n, const char *authserv_id);

#endif
