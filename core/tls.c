/*
 * core/tls.c: TLS contexts (see tls.h). The files are read here, through
 * the descriptor funnel, into memory and parsed from there: OpenSSL never
 * opens a file behind the ledger's back, and a descriptor handed over by
 * the master reads the same as a path.
 */
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/fd.h"
#include "core/mem.h"

#define PEM_MAX (1024 * 1024)   /* a certificate chain or key file larger than this is not one */

/* TLS 1.2 suites: forward secrecy and AEAD only (Mozilla "intermediate") */
#define CIPHERS_12 "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define GROUPS "X25519:P-256:P-384"

/* struct tls_ctx is OpenSSL's SSL_CTX under another name: its own reference count serves */
#define CTX(c) ((SSL_CTX *)(void *)(c))

int tls_init(void)
{
	return OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL) == 1 ? 0 : -1;
}

const char *tls_error_text(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* The whole file, from its descriptor (rewound) or its path. NULL with err. */
static char *slurp(const char *what, const char *path, int fd, size_t *len, char *err, size_t errlen)
{
	int own = -1;
	char *data = NULL;
	size_t n = 0, cap;
	ssize_t r;
	struct stat st;

	if (fd < 0) {
		if (path == NULL || *path == '\0') {
			snprintf(err, errlen, "%s is not set", what);
			return NULL;
		}
		if ((own = fd = fd_open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
			snprintf(err, errlen, "%s %s: cannot open: %s", what, path, strerror(errno));
			return NULL;
		}
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s %s: not a regular file", what, path);
		goto fail;
	}
	if (st.st_size > PEM_MAX) {
		snprintf(err, errlen, "%s %s: larger than %d bytes: not a PEM file", what, path, PEM_MAX);
		goto fail;
	}
	cap = (size_t)st.st_size + 1;   /* one more: a file that grew while read is seen */
	if ((data = mem_alloc(cap)) == NULL) {
		snprintf(err, errlen, "%s %s: out of memory", what, path);
		goto fail;
	}
	for (;;) {
		r = pread(fd, data + n, cap - n, (off_t)n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "%s %s: cannot read: %s", what, path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == cap) {
			snprintf(err, errlen, "%s %s: changed while it was read", what, path);
			goto fail;
		}
	}
	if (own >= 0)
		fd_close(own);
	*len = n;
	return data;
fail:
	mem_free(data);
	if (own >= 0)
		fd_close(own);
	return NULL;
}

/* never prompt on a terminal for a passphrase: an encrypted key is an error */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf; (void)size; (void)rwflag; (void)u;
	return -1;
}

static int load_chain(SSL_CTX *ctx, const char *path, const char *data, size_t len, char *err, size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	X509 *x;
	char e[256];
	int n = 0;

	if (bio == NULL) {
		snprintf(err, errlen, "smtpd_tls_cert_file %s: out of memory", path);
		return -1;
	}
	if ((x = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL)) == NULL) {
		snprintf(err, errlen, "smtpd_tls_cert_file %s: no PEM certificate found (%s)", path,
		    tls_error_text(e, sizeof e));
		BIO_free(bio);
		return -1;
	}
	if (SSL_CTX_use_certificate(ctx, x) != 1) {
		snprintf(err, errlen, "smtpd_tls_cert_file %s: certificate not usable: %s", path,
		    tls_error_text(e, sizeof e));
		X509_free(x);
		BIO_free(bio);
		return -1;
	}
	X509_free(x);
	/* the rest of the file is the chain, leaf's issuer first */
	while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			X509_free(x);
			snprintf(err, errlen, "smtpd_tls_cert_file %s: chain certificate %d not usable: %s", path,
			    n + 1, tls_error_text(e, sizeof e));
			BIO_free(bio);
			return -1;
		}
		n++;
	}
	BIO_free(bio);
	/* the loop ends on "no start line" at the end of the file: that is not an error */
	if (ERR_GET_REASON(ERR_peek_last_error()) == PEM_R_NO_START_LINE)
		ERR_clear_error();
	else if (ERR_peek_error()) {
		snprintf(err, errlen, "smtpd_tls_cert_file %s: after %d chain certificate(s): %s", path, n,
		    tls_error_text(e, sizeof e));
		return -1;
	}
	return 0;
}

static int load_key(SSL_CTX *ctx, const char *path, const char *cert_path, const char *data, size_t len,
    char *err, size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	EVP_PKEY *k;
	char e[256];

	if (bio == NULL) {
		snprintf(err, errlen, "smtpd_tls_key_file %s: out of memory", path);
		return -1;
	}
	k = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (k == NULL) {
		snprintf(err, errlen, "smtpd_tls_key_file %s: no usable PEM private key (an encrypted key is not "
		    "supported) (%s)", path, tls_error_text(e, sizeof e));
		return -1;
	}
	if (SSL_CTX_use_PrivateKey(ctx, k) != 1) {
		if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH) {
			ERR_clear_error();
			snprintf(err, errlen, "smtpd_tls_key_file %s does not match the certificate in "
			    "smtpd_tls_cert_file %s", path, cert_path);
		} else {
			snprintf(err, errlen, "smtpd_tls_key_file %s: key not usable: %s", path, tls_error_text(e, sizeof e));
		}
		EVP_PKEY_free(k);
		return -1;
	}
	EVP_PKEY_free(k);
	return 0;
}

static unsigned long sweep_at;   /* tests: tls_sweep_server() */
static int sweep_read;

void tls_sweep_server(unsigned long n)
{
	sweep_read = 1;
	sweep_at = n;
}

/* tests: the armed failure's countdown starts with the build (see tls_sweep_server) */
static int sweep_arm(void)
{
	const char *s;

	if (!sweep_read && (s = getenv("FRUGAL_ALLOC_SWEEP_TLS_START")) != NULL)
		sweep_at = strtoul(s, NULL, 10);
	sweep_read = 1;
	if (sweep_at == 0)
		return 0;
	mem_fail_at(sweep_at);
	sweep_at = 0;
	return 1;
}

static struct tls_ctx *server_new(const char *cert_path, int cert_fd, const char *key_path, int key_fd,
    char *err, size_t errlen);

struct tls_ctx *tls_server_new(const char *cert_path, int cert_fd, const char *key_path, int key_fd,
    char *err, size_t errlen)
{
	int armed = sweep_arm();
	struct tls_ctx *t = server_new(cert_path, cert_fd, key_path, key_fd, err, errlen);

	if (armed)
		mem_fail_at(0);
	return t;
}

static struct tls_ctx *server_new(const char *cert_path, int cert_fd, const char *key_path, int key_fd,
    char *err, size_t errlen)
{
	SSL_CTX *ctx = NULL;
	char *cert = NULL, *key = NULL, e[256];
	size_t clen = 0, klen = 0;
	unsigned long refused = mem_failures();

	snprintf(err, errlen, "%s", "");   /* the check at the end fails with no text of its own */
	if (tls_init() < 0) {
		snprintf(err, errlen, "cannot initialise OpenSSL");
		goto fail;
	}
	if ((cert = slurp("smtpd_tls_cert_file", cert_path, cert_fd, &clen, err, errlen)) == NULL ||
	    (key = slurp("smtpd_tls_key_file", key_path, key_fd, &klen, err, errlen)) == NULL)
		goto fail;
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		snprintf(err, errlen, "cannot make a TLS context: %s", tls_error_text(e, sizeof e));
		goto fail;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, CIPHERS_12) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, GROUPS) != 1 ||
	    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"frugal", 6) != 1 ||
	    SSL_CTX_set_num_tickets(ctx, 1) != 1) {
		snprintf(err, errlen, "cannot set the TLS policy: %s", tls_error_text(e, sizeof e));
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	/*
	 * Release the 16 KB read and write buffers whenever a connection has
	 * nothing buffered (an idle SMTP session); let a write be retried from
	 * a buffer that moved and completed in parts (the session's output
	 * buffer grows and compacts between attempts).
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* resumption by stateless tickets only: no server-side session cache to grow */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (load_chain(ctx, cert_path, cert, clen, err, errlen) < 0 ||
	    load_key(ctx, key_path, cert_path, key, klen, err, errlen) < 0)
		goto fail;
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "smtpd_tls_key_file %s does not match the certificate in smtpd_tls_cert_file %s",
		    key_path, cert_path);
		goto fail;
	}
	/*
	 * As for the client's context (tls_client_new): OpenSSL swallows some refused
	 * allocations while it builds a context and returns one that looks whole. A
	 * context built while memory was refused is not kept: the start fails, a reload
	 * keeps the running generation (test_faults_tlsctx.py).
	 */
	if (mem_failures() != refused)
		goto fail;
	OPENSSL_cleanse(key, klen);
	mem_free(cert);
	mem_free(key);
	return (struct tls_ctx *)(void *)ctx;
fail:
	/*
	 * A refused allocation is the reason whatever OpenSSL made of it ("malloc failure",
	 * "decode error", "no PEM certificate found", or no error queued at all): say so.
	 */
	if (mem_failures() != refused && strstr(err, "out of memory") == NULL) {
		ERR_clear_error();
		snprintf(err, errlen, "smtpd_tls_cert_file %s: cannot make a TLS context: out of memory", cert_path);
	}
	if (key)
		OPENSSL_cleanse(key, klen);
	mem_free(cert);
	mem_free(key);
	SSL_CTX_free(ctx);
	return NULL;
}

void tls_ctx_ref(struct tls_ctx *c)
{
	SSL_CTX_up_ref(CTX(c));
}

void tls_ctx_unref(struct tls_ctx *c)
{
	if (c)
		SSL_CTX_free(CTX(c));
}

void tls_ctx_describe(const struct tls_ctx *c, char *buf, size_t len)
{
	X509 *x = SSL_CTX_get0_certificate(CTX(c));
	EVP_PKEY *k = SSL_CTX_get0_privatekey(CTX(c));
	char cn[256] = "?";
	struct tm tm;
	const char *type = "?";

	if (x == NULL || k == NULL) {
		snprintf(buf, len, "no certificate");
		return;
	}
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
	switch (EVP_PKEY_get_base_id(k)) {
	case EVP_PKEY_RSA: type = "RSA"; break;
	case EVP_PKEY_EC: type = "ECDSA"; break;
	case EVP_PKEY_ED25519: type = "Ed25519"; break;
	}
	memset(&tm, 0, sizeof tm);
	ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm);
	snprintf(buf, len, "CN=%s, %s %d bits, valid until %04d-%02d-%02d%s", cn, type, EVP_PKEY_get_bits(k),
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
	    X509_cmp_current_time(X509_get0_notAfter(x)) < 0 ? " (EXPIRED)" : "");
}

const char *tls_default_ca_file(void)
{
	return X509_get_default_cert_file();
}

/* Every certificate in a PEM file, into the context's store. */
static int load_anchors(SSL_CTX *ctx, const char *path, const char *data, size_t len, char *err, size_t errlen)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	X509 *x;
	char e[256];
	int n = 0;

	if (bio == NULL) {
		snprintf(err, errlen, "smtp_tls_CAfile %s: out of memory", path);
		return -1;
	}
	ERR_clear_error();
	while ((x = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL)) != NULL) {
		/* a bundle may list one anchor twice: OpenSSL 3 accepts the duplicate */
		if (X509_STORE_add_cert(store, x) != 1) {
			X509_free(x);
			BIO_free(bio);
			snprintf(err, errlen, "smtp_tls_CAfile %s: certificate %d not usable: %s", path, n + 1,
			    tls_error_text(e, sizeof e));
			return -1;
		}
		X509_free(x);
		n++;
	}
	BIO_free(bio);
	if (ERR_GET_REASON(ERR_peek_last_error()) == PEM_R_NO_START_LINE && n > 0) {
		ERR_clear_error();
		return 0;
	}
	snprintf(err, errlen, "smtp_tls_CAfile %s: %s", path,
	    n == 0 ? "no PEM certificate found" : tls_error_text(e, sizeof e));
	ERR_clear_error();
	return -1;
}

struct tls_ctx *tls_client_new(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	char *ca = NULL, e[256];
	size_t calen = 0;
	unsigned long refused = mem_failures();

	if (tls_init() < 0) {
		snprintf(err, errlen, "cannot initialise OpenSSL");
		return NULL;
	}
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		snprintf(err, errlen, "cannot make a TLS client context: %s", tls_error_text(e, sizeof e));
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, GROUPS) != 1) {
		snprintf(err, errlen, "cannot set the TLS client policy: %s", tls_error_text(e, sizeof e));
		goto fail;
	}
	/* no tickets asked for: nothing keeps sessions to resume, so they would be memory for nothing */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF |
	    SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* the chain is checked (for "Trusted" in the log) but never fails a handshake unless a connection asks */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (ca_file && *ca_file) {
		if ((ca = slurp("smtp_tls_CAfile", ca_file, -1, &calen, err, errlen)) == NULL)
			goto fail;
		if (load_anchors(ctx, ca_file, ca, calen, err, errlen) < 0)
			goto fail;
		mem_free(ca);
		ca = NULL;
	}
	/*
	 * OpenSSL swallows some refused allocations while it builds a context (its provider's
	 * groups or algorithms) and returns one that fails every handshake: the sweep of
	 * test_faults_out.py saw a kept context defer every retry ("sslv3 alert handshake
	 * failure") for the rest of the generation. A context built while memory was refused is
	 * not kept; the next delivery makes another.
	 */
	if (mem_failures() != refused) {
		snprintf(err, errlen, "cannot make a TLS client context: out of memory");
		goto fail;
	}
	return (struct tls_ctx *)(void *)ctx;
fail:
	mem_free(ca);
	SSL_CTX_free(ctx);
	return NULL;
}

static const char *const level_names[] = { "none", "may", "encrypt", "verify", "secure" };

int tls_level_parse(const char *s)
{
	size_t i;

	if (strcasecmp(s, "dane") == 0)   /* no DNSSEC here: Postfix's own downgrade */
		return TLS_LEVEL_MAY;
	for (i = 0; i < sizeof level_names / sizeof level_names[0]; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *tls_level_name(int level)
{
	return level >= 0 && level <= TLS_LEVEL_SECURE ? level_names[level] : "unknown";
}

int tls_level_required(int level)
{
	return level >= TLS_LEVEL_ENCRYPT;
}

int tls_level_verifies(int level)
{
	return level >= TLS_LEVEL_VERIFY;
}

int tls_plaintext_fallback_ok(int level, long long queued_seconds, long long minimal_backoff_seconds,
    int have_sasl_credentials)
{
	return level == TLS_LEVEL_MAY && queued_seconds >= minimal_backoff_seconds && !have_sasl_credentials;
}

/* A PEM object from a memory BIO as a mem_alloc'd string; NULL on failure. */
static char *bio_string(BIO *bio)
{
	char *data, *s;
	long n = BIO_get_mem_data(bio, &data);

	if (n <= 0 || (s = mem_alloc((size_t)n + 1)) == NULL)
		return NULL;
	memcpy(s, data, (size_t)n);
	s[n] = '\0';
	return s;
}

/*
 * A self-signed certificate for `name` (CN and subjectAltName DNS:name),
 * ECDSA P-256, valid ten years: what `frugal wizard` offers when the admin
 * has no certificate yet. Senders on port 25 do not verify the server's
 * certificate (RFC 7435 opportunistic TLS), so a self-signed one still
 * encrypts; the admin replaces it with a real one for submission clients.
 */
int tls_selfsigned_pem(const char *name, char **cert_pem, char **key_pem, char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;
	X509 *x = NULL;
	X509_NAME *n;
	X509_EXTENSION *ext = NULL;
	X509V3_CTX v3;
	BIO *cb = NULL, *kb = NULL;
	char san[300];
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	int rc = -1;

	*cert_pem = *key_pem = NULL;
	if (tls_init() < 0 || (k = EVP_EC_gen("P-256")) == NULL || (x = X509_new()) == NULL)
		goto fail;
	if (RAND_bytes(serial, sizeof serial) != 1)
		goto fail;
	serial[0] &= 0x7f;   /* a positive serial (RFC 5280 4.1.2.2) */
	if ((bn = BN_bin2bn(serial, sizeof serial, NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
		goto fail;
	if (X509_set_version(x, 2) != 1 || X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400) == NULL || X509_set_pubkey(x, k) != 1)
		goto fail;
	n = X509_get_subject_name(x);
	if (X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)name, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, n) != 1)
		goto fail;
	snprintf(san, sizeof san, "DNS:%s", name);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san)) == NULL || X509_add_ext(x, ext, -1) != 1)
		goto fail;
	if (X509_sign(x, k, EVP_sha256()) <= 0)
		goto fail;
	if ((cb = BIO_new(BIO_s_mem())) == NULL || (kb = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509(cb, x) != 1 || PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL, NULL) != 1)
		goto fail;
	if ((*cert_pem = bio_string(cb)) == NULL || (*key_pem = bio_string(kb)) == NULL)
		goto fail;
	rc = 0;
fail:
	if (rc < 0) {
		char e[200];

		snprintf(err, errlen, "self-signed certificate for %s: %s", name, tls_error_text(e, sizeof e));
		mem_free(*cert_pem);
		if (*key_pem)
			OPENSSL_cleanse(*key_pem, strlen(*key_pem));
		mem_free(*key_pem);
		*cert_pem = *key_pem = NULL;
	}
	X509_EXTENSION_free(ext);
	BN_free(bn);
	BIO_free(cb);
	BIO_free(kb);   /* a memory BIO: its copy of the key goes with it */
	X509_free(x);
	EVP_PKEY_free(k);
	return rc;
}
