/*
 * core/transport.c: plain or TLS bytes over one descriptor (see
 * transport.h). OpenSSL reads and writes the socket itself (SSL_set_fd);
 * its "want read/want write" results become EAGAIN and t->want.
 */
#include "transport.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/buf.h"
#include "core/fd.h"
#include "core/tls.h"

void transport_init(struct transport *t, int fd)
{
	memset(t, 0, sizeof *t);
	t->fd = fd;
}

int transport_tls_prepare(struct transport *t, struct tls_ctx *ctx)
{
	SSL *ssl;

	if (t->ssl || t->next) {
		errno = EALREADY;
		return -1;
	}
	if ((ssl = SSL_new((SSL_CTX *)(void *)ctx)) == NULL) {
		ERR_clear_error();
		errno = ENOMEM;
		return -1;
	}
	if (SSL_set_fd(ssl, t->fd) != 1) {
		ERR_clear_error();
		SSL_free(ssl);
		errno = ENOMEM;
		return -1;
	}
	SSL_set_accept_state(ssl);
	t->next = ssl;
	return 0;
}

/* An address literal is not a server name (RFC 6066 section 3) */
static int is_address(const char *s)
{
	unsigned char b[16];

	return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1 || *s == '[';
}

int transport_tls_client(struct transport *t, struct tls_ctx *ctx, const char *sni, const char *verify_name)
{
	SSL *ssl;

	if (t->ssl || t->next) {
		errno = EALREADY;
		return -1;
	}
	if ((ssl = SSL_new((SSL_CTX *)(void *)ctx)) == NULL)
		goto nomem;
	if (SSL_set_fd(ssl, t->fd) != 1)
		goto nomem_ssl;
	if (sni && *sni && !is_address(sni) && SSL_set_tlsext_host_name(ssl, sni) != 1)
		goto nomem_ssl;
	if (verify_name) {
		/* the name check is part of the chain's verification: a mismatch fails like an unknown issuer */
		if (SSL_set1_host(ssl, verify_name) != 1)
			goto nomem_ssl;
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	}
	SSL_set_connect_state(ssl);
	t->ssl = ssl;
	t->handshaking = 1;
	t->verify = verify_name != NULL;
	t->want = TRANSPORT_WANT_WRITE;   /* a client speaks first */
	return 0;
nomem_ssl:
	SSL_free(ssl);
nomem:
	ERR_clear_error();
	errno = ENOMEM;
	return -1;
}

void transport_tls_begin(struct transport *t)
{
	if (t->next == NULL)
		return;
	t->ssl = t->next;
	t->next = NULL;
	t->handshaking = 1;
	t->want = TRANSPORT_WANT_READ;   /* a server waits for the ClientHello */
}

/* An SSL_* result that is not success: errno and t->want set, -1 or 0 (clean end). */
static int ssl_fail(struct transport *t, int rc)
{
	int e = SSL_get_error(t->ssl, rc);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		t->want = TRANSPORT_WANT_READ;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		t->want = TRANSPORT_WANT_WRITE;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;      /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		if (errno == 0 || errno == EAGAIN)
			errno = ECONNRESET;
		return -1;
	default:
		/* a protocol error (or an allocation that failed inside OpenSSL) */
		if (ERR_GET_REASON(ERR_peek_error()) == ERR_R_MALLOC_FAILURE)
			errno = ENOMEM;
		else
			errno = EPROTO;
		ERR_clear_error();
		return -1;
	}
}

int transport_handshake(struct transport *t, char *why, size_t whylen)
{
	int rc;

	if (!t->handshaking)
		return 1;
	ERR_clear_error();
	errno = 0;
	rc = SSL_do_handshake(t->ssl);
	if (rc == 1) {
		t->handshaking = 0;
		t->want = 0;
		return 1;
	}
	switch (SSL_get_error(t->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		t->want = TRANSPORT_WANT_READ;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		t->want = TRANSPORT_WANT_WRITE;
		return 0;
	case SSL_ERROR_SYSCALL:
		snprintf(why, whylen, "%s", errno ? strerror(errno) : "lost connection");
		break;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(why, whylen, "lost connection");
		break;
	default:
		if (t->verify && SSL_get_verify_result(t->ssl) != X509_V_OK) {
			const char *name = SSL_get0_peername(t->ssl);
			X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
			char *host = name ? NULL : X509_VERIFY_PARAM_get0_host(vp, 0);

			snprintf(why, whylen, "certificate verification failed for %s: %s",
			    name ? name : host ? host : "the server",
			    X509_verify_cert_error_string(SSL_get_verify_result(t->ssl)));
		} else {
			tls_error_text(why, whylen);
		}
		break;
	}
	ERR_clear_error();
	return -1;
}

ssize_t transport_read(struct transport *t, void *p, size_t n)
{
	int rc;

	if (t->ssl == NULL)
		return read(t->fd, p, n);
	if (t->handshaking) {
		errno = EAGAIN;
		return -1;
	}
	if (n > 0x7fffffff)
		n = 0x7fffffff;
	ERR_clear_error();
	errno = 0;
	if ((rc = SSL_read(t->ssl, p, (int)n)) > 0)
		return rc;
	return ssl_fail(t, rc);
}

ssize_t transport_write(struct transport *t, const void *p, size_t n)
{
	int rc;

	if (t->ssl == NULL)
		return write(t->fd, p, n);
	if (t->handshaking) {
		errno = EAGAIN;
		return -1;
	}
	if (n == 0)
		return 0;
	if (n > 0x7fffffff)
		n = 0x7fffffff;
	ERR_clear_error();
	errno = 0;
	if ((rc = SSL_write(t->ssl, p, (int)n)) > 0)
		return rc;
	if (ssl_fail(t, rc) == 0)
		errno = EPIPE;   /* the peer closed: nothing more goes out */
	return -1;
}

size_t transport_pending(const struct transport *t)
{
	return t->ssl && !t->handshaking ? (size_t)SSL_pending(t->ssl) : 0;
}

ssize_t transport_read_buf(struct transport *t, struct buf *b, size_t want)
{
	ssize_t r, room = buf_reserve_upto(b, want);

	if (room < 0)
		return room;
	r = transport_read(t, b->data + b->len, (size_t)room);
	if (r > 0)
		b->len += (size_t)r;
	return r;
}

ssize_t transport_write_buf(struct transport *t, struct buf *b)
{
	ssize_t w = transport_write(t, buf_head(b), buf_used(b));

	if (w > 0)
		buf_consume(b, (size_t)w);
	return w;
}

void transport_shutdown(struct transport *t)
{
	if (t->ssl && !t->handshaking) {
		ERR_clear_error();
		/* one attempt: the close_notify goes out if the socket takes it; we never wait for the peer's */
		(void)SSL_shutdown(t->ssl);
		ERR_clear_error();
	}
	shutdown(t->fd, SHUT_WR);
}

void transport_close(struct transport *t)
{
	if (t->ssl) {
		SSL_free(t->ssl);
		t->ssl = NULL;
	}
	if (t->next) {
		SSL_free(t->next);
		t->next = NULL;
	}
	if (t->fd >= 0) {
		fd_close(t->fd);
		t->fd = -1;
	}
}

int transport_reserve_write(struct transport *t)
{
	if (t->ssl == NULL)
		return 0;
	/* OpenSSL releases idle buffers (SSL_MODE_RELEASE_BUFFERS): take them back now */
	if (SSL_alloc_buffers(t->ssl) != 1) {
		ERR_clear_error();
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

int transport_is_tls(const struct transport *t)
{
	return t->ssl != NULL && !t->handshaking;
}

void transport_describe(const struct transport *t, char *buf, size_t len)
{
	const SSL_CIPHER *c;
	int alg = 0, bits;

	if (!transport_is_tls(t) || (c = SSL_get_current_cipher(t->ssl)) == NULL) {
		snprintf(buf, len, "plain text");
		return;
	}
	bits = SSL_CIPHER_get_bits(c, &alg);
	snprintf(buf, len, "%s with cipher %s (%d/%d bits)", SSL_get_version(t->ssl), SSL_CIPHER_get_name(c),
	    bits, alg);
}

int transport_peer_trust(const struct transport *t)
{
	if (!transport_is_tls(t) || SSL_get0_peer_certificate(t->ssl) == NULL)
		return TRANSPORT_ANONYMOUS;
	if (SSL_get_verify_result(t->ssl) != X509_V_OK)
		return TRANSPORT_UNTRUSTED;
	return t->verify ? TRANSPORT_VERIFIED : TRANSPORT_TRUSTED;
}

int transport_peer_name_ok(const struct transport *t, const char *name)
{
	X509 *x;

	if (!transport_is_tls(t) || (x = SSL_get0_peer_certificate(t->ssl)) == NULL || name == NULL)
		return 0;
	return X509_check_host(x, name, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1;
}

const char *transport_trust_name(int trust)
{
	switch (trust) {
	case TRANSPORT_UNTRUSTED: return "Untrusted";
	case TRANSPORT_TRUSTED: return "Trusted";
	case TRANSPORT_VERIFIED: return "Verified";
	default: return "Anonymous";
	}
}

void transport_describe_peer(const struct transport *t, const char *host, const char *addr, unsigned port,
    char *buf, size_t len)
{
	char what[160];

	transport_describe(t, what, sizeof what);
	snprintf(buf, len, "%s TLS connection established to %s[%s]:%u: %s",
	    transport_trust_name(transport_peer_trust(t)), host, addr, port, what);
}

int transport_resumed(const struct transport *t)
{
	return t->ssl != NULL && SSL_session_reused(t->ssl);
}
