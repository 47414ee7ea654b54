/*
 * core/tls.h: TLS contexts (OpenSSL 3): what a server (and later the SMTP
 * client) needs to make TLS connections, built once per configuration and
 * shared by every connection made with it. The per-connection half is
 * core/transport.h. Nothing here knows SMTP.
 *
 * The policy is fixed here, not configurable: TLS 1.2 and 1.3 only; for
 * 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305 (the Mozilla "intermediate"
 * list); groups X25519, P-256, P-384; no renegotiation, no compression;
 * stateless session tickets (one per handshake) for resumption; read and
 * write buffers released while a connection is idle, which is most of an
 * SMTP session's life.
 *
 * A context is reference-counted: a configuration generation holds one,
 * and every connection made from it holds its own (SSL_new takes one), so
 * a reload that loads a new certificate leaves live sessions on the old.
 */
#ifndef FRUGAL_CORE_TLS_H
#define FRUGAL_CORE_TLS_H

#include <stddef.h>

struct tls_ctx;

/* OpenSSL's initialisation (idempotent; tls_server_new calls it). 0 or -1. */
int tls_init(void);

/*
 * A server context from a PEM certificate chain (leaf first) and its key.
 * Each is read from its descriptor when fd >= 0 (opened by the master as
 * root, so that the daemon, which is not root, can load a root-only key at
 * start and at every reload); else from its path. The descriptors are not
 * closed. NULL with `err` naming the file and the reason ("cannot open",
 * "no certificate", "no private key", "does not match the certificate").
 */
struct tls_ctx *tls_server_new(const char *cert_path, int cert_fd, const char *key_path, int key_fd,
    char *err, size_t errlen);
void tls_ctx_ref(struct tls_ctx *c);
void tls_ctx_unref(struct tls_ctx *c);   /* NULL is fine */

/* "subject CN, RSA 2048 bits, expires YYYY-MM-DD" for the start-up log. */
void tls_ctx_describe(const struct tls_ctx *c, char *buf, size_t len);

/* The oldest OpenSSL error queued on this thread as text (and the queue emptied). */
const char *tls_error_text(char *buf, size_t len);

#endif
