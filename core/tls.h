/*
 * core/tls.h: TLS contexts (OpenSSL 3): what a server and the SMTP
 * client need to make TLS connections, built once per configuration and
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
/*
 * Tests only (tests/integration/test_faults_tlsctx.py): the next
 * tls_server_new fails its n-th allocation (0 disarms); the build disarms
 * what it did not reach. FRUGAL_ALLOC_SWEEP_TLS_START=n arms the first
 * build of the process (the start-up check, under a master the master's).
 */
void tls_sweep_server(unsigned long n);

/*
 * The SMTP client's context (smtp_tls_*): TLS 1.2 and 1.3, OpenSSL's
 * default TLS 1.2 cipher list (CBC and RSA key exchange stay: at `may` the
 * alternative to an old cipher is plain text), no compression, no
 * renegotiation, no session cache, record buffers released while idle as
 * on the server side. Certificates are never required by the context
 * itself: each connection says whether it verifies (transport_tls_client).
 * `ca_file`: PEM trust anchors read through the descriptor funnel into the
 * context's store (Postfix's smtp_tls_CAfile; tls_default_ca_file() is the
 * system's bundle); NULL or "" loads none, and then no peer is Trusted and
 * a verifying connection always fails. NULL with `err` on failure.
 */
struct tls_ctx *tls_client_new(const char *ca_file, char *err, size_t errlen);
/* The system's CA bundle as OpenSSL was built to find it (Debian: /usr/lib/ssl/cert.pem). */
const char *tls_default_ca_file(void);

/*
 * smtp_tls_security_level, as Postfix (TLS_README, postconf(5)):
 * - none: never STARTTLS.
 * - may: STARTTLS when offered, certificate not checked; when STARTTLS is
 *   not offered, plain text.
 * - encrypt: TLS mandatory ("TLS is required, but was not offered by host
 *   H", 4.7.4), certificate not checked (no name, no chain).
 * - verify, secure: TLS mandatory and the chain must verify against the CA
 *   file and the certificate match the host name the caller passes (the MX
 *   host for verify, the next-hop domain for secure: the caller's choice).
 * - dane: without a DNSSEC-validating resolver (frugal's has none) Postfix
 *   itself downgrades dane to may; so does frugal.
 */
enum tls_level { TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_LEVEL_ENCRYPT, TLS_LEVEL_VERIFY, TLS_LEVEL_SECURE };
/* -1 for a word that is not a level (case-insensitive). */
int tls_level_parse(const char *s);
const char *tls_level_name(int level);
/* Must the connection be TLS (encrypt and above)? */
int tls_level_required(int level);
/* Must the peer's certificate verify (verify, secure)? */
int tls_level_verifies(int level);

/*
 * After STARTTLS failed (a non-2xx reply to it, or a failed handshake),
 * may the client connect to the same server again in plain text?
 * Postfix's PLAINTEXT_FALLBACK_OK_AFTER_STARTTLS_FAILURE (smtp.h): only at
 * `may`, only for a message that has waited in the queue at least
 * minimal_backoff_time (so a first attempt defers to the next MX, or to
 * later, and only a message that keeps failing goes out in clear), and
 * never when SASL credentials exist for this server (they would go in
 * clear). Otherwise the server counts as failed with 4.7.5 "Cannot start
 * TLS: handshake failure": next MX host, else defer. 1 yes, 0 no.
 */
int tls_plaintext_fallback_ok(int level, long long queued_seconds, long long minimal_backoff_seconds,
    int have_sasl_credentials);

/* "subject CN, RSA 2048 bits, expires YYYY-MM-DD" for the start-up log. */
void tls_ctx_describe(const struct tls_ctx *c, char *buf, size_t len);

/* The oldest OpenSSL error queued on this thread as text (and the queue emptied). */
const char *tls_error_text(char *buf, size_t len);

/*
 * A self-signed certificate and its key (ECDSA P-256, CN and subjectAltName
 * `name`, ten years) as PEM text, each mem_alloc'd (the caller cleanses and
 * frees the key). 0, or -1 with err.
 */
int tls_selfsigned_pem(const char *name, char **cert_pem, char **key_pem, char *err, size_t errlen);

#endif
