/*
 * core/transport.h: one connection's bytes, plain or TLS, over one
 * non-blocking descriptor. Server sessions use it now, the SMTP client
 * will. The caller never reads or writes the socket itself: a call that
 * cannot progress returns -1 with errno EAGAIN and says in t->want whether
 * it waits for the socket to become readable or writable (a TLS write can
 * need a read and the other way round), and the caller's event loop
 * watches for that. The handshake is a state too: transport_handshake()
 * is called again on every event until it is done.
 *
 * Owns the descriptor (closed by transport_close, through core/fd) and
 * the TLS connection state (OpenSSL's, charged to the budget through the
 * allocator hooks).
 */
#ifndef FRUGAL_CORE_TRANSPORT_H
#define FRUGAL_CORE_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>

struct buf;
struct tls_ctx;
struct ssl_st;

enum { TRANSPORT_WANT_READ = 1, TRANSPORT_WANT_WRITE = 2 };

struct transport {
	int fd;                  /* owned */
	struct ssl_st *ssl;      /* owned; NULL while plain */
	struct ssl_st *next;     /* owned; made by transport_tls_prepare, in use from transport_tls_begin */
	unsigned char want;      /* TRANSPORT_WANT_*: what the last EAGAIN waits for */
	unsigned char handshaking;
	unsigned char verify;    /* client: the handshake fails unless the peer's certificate verifies */
};

void transport_init(struct transport *t, int fd);

/*
 * Server TLS in two steps, so that a STARTTLS reply can still go out in
 * plain text: prepare (allocates; -1 with ENOMEM, the caller answers 454),
 * then begin once the reply is written. Implicit TLS calls both at once.
 */
int  transport_tls_prepare(struct transport *t, struct tls_ctx *ctx);
void transport_tls_begin(struct transport *t);
/*
 * Client TLS (the SMTP client, after the 220 reply to STARTTLS, or at
 * once for implicit TLS): makes the connection state and starts the
 * handshake, driven by transport_handshake() as on the server side (the
 * first want is WRITE: the ClientHello). `sni`: the server name sent
 * (the MX host name; NULL, empty or an address literal sends none).
 * `verify_name`: NULL for may and encrypt (nothing about the certificate
 * fails the handshake); else the chain must verify against the context's
 * CA file and the certificate match this name (verify, secure), and a
 * failed check fails the handshake with "certificate verification failed
 * for NAME: REASON" as why. 0, or -1 with errno (ENOMEM, EALREADY).
 */
int  transport_tls_client(struct transport *t, struct tls_ctx *ctx, const char *sni, const char *verify_name);

/* 1 done, 0 call again when t->want is ready, -1 failed (why: OpenSSL's reason, for the log). */
int  transport_handshake(struct transport *t, char *why, size_t whylen);

/* >0 bytes, 0 end of stream, -1 with errno (EAGAIN: see t->want; ECONNRESET, EPROTO, ENOMEM ...). */
ssize_t transport_read(struct transport *t, void *p, size_t n);
ssize_t transport_write(struct transport *t, const void *p, size_t n);
/* Decrypted bytes held inside the TLS layer: readable although the socket may not be. */
size_t  transport_pending(const struct transport *t);

/*
 * The struct buf forms (core/buf.h semantics): read at most `want` more
 * bytes into b (-2 when b is at its cap), write from b's head.
 */
ssize_t transport_read_buf(struct transport *t, struct buf *b, size_t want);
ssize_t transport_write_buf(struct transport *t, struct buf *b);

/*
 * Make sure the next write needs no allocation (the TLS record buffers,
 * released while idle): a reply that must not be lost to memory pressure,
 * such as the 250 after a commit. 0, or -1 with ENOMEM.
 */
int     transport_reserve_write(struct transport *t);

/* End our side: TLS close_notify (best effort, never blocks), then shutdown(SHUT_WR). */
void transport_shutdown(struct transport *t);
/* Free the TLS state, close the descriptor. */
void transport_close(struct transport *t);

int  transport_is_tls(const struct transport *t);
/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)", Postfix's wording. */
void transport_describe(const struct transport *t, char *buf, size_t len);
/*
 * What a client knows of its peer after the handshake, in Postfix's words:
 * Anonymous (no certificate), Untrusted (the chain did not verify against
 * the CA file, or none is loaded), Trusted (it did, name not checked),
 * Verified (it did and the name matched: verify_name was given).
 */
enum transport_trust { TRANSPORT_ANONYMOUS, TRANSPORT_UNTRUSTED, TRANSPORT_TRUSTED, TRANSPORT_VERIFIED };
int  transport_peer_trust(const struct transport *t);
const char *transport_trust_name(int trust);
/* Does the peer's certificate name `name` (RFC 6125, as the verify level checks it)? 1 yes, 0 no. */
int  transport_peer_name_ok(const struct transport *t, const char *name);   /* "Anonymous", "Untrusted", "Trusted", "Verified" */
/*
 * Postfix's client log line after a handshake:
 * "Untrusted TLS connection established to mx.example.com[192.0.2.1]:25:
 * TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)".
 */
void transport_describe_peer(const struct transport *t, const char *host, const char *addr, unsigned port,
    char *buf, size_t len);

/* Did this handshake resume an earlier session (a ticket)? */
int  transport_resumed(const struct transport *t);

#endif
