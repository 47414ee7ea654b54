/*
 * queue/dkim.c: DKIM signing (RFC 6376; ed25519-sha256 RFC 8463) at queue
 * time, with libopendkim. Owns the key table of a configuration generation
 * (dkim_signing_maps: domain -> "selector:keyfile", every key read and
 * checked when the generation is built: `frugal check`, start, reload) and
 * the signer of one transaction, a spool filter (queue.h): it buffers the
 * header block (at most DKIM_HDR_MAX) until it knows the From: domain,
 * then hashes headers and body as they stream into the spool, and at
 * commit, on the commit worker, computes the signature and adds it as a
 * late header. One signature per message, whatever its recipients.
 *
 * Must never block the loop on more than hashing (the RSA or Ed25519 sign
 * runs on the commit worker), never abort on an allocation failure
 * (libopendkim allocates through core/mem with the closure, and its
 * failures fail the transaction: 451), and never sign mail the caller did
 * not vouch for: the decision (AUTH, mynetworks, sendmail) is the
 * caller's.
 */
#include "queue/queue_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <opendkim/dkim.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/fd.h"
#include "core/log.h"
#include "core/mem.h"

#define DKIM_HDR_MAX   (64 * 1024)    /* a header block past this is sent unsigned (warned) */
#define DKIM_KEY_MAX   (16 * 1024)    /* a PEM private key file; RSA-4096 is about 3.3 KB */
#define DKIM_CHUNK     4096           /* LF-to-CRLF conversion step */
#define DKIM_EOM_ROOM  (64 * 1024)    /* checked free before the sign (it is not refused: sig_finish) */

/* RFC 6376 5.4.1's recommended set; From is over-signed (one more h= entry than it occurs) */
static const char *sign_hdrs[] = {
	"from", "reply-to", "subject", "date", "to", "cc", "message-id", "in-reply-to",
	"references", "mime-version", "content-type", "content-transfer-encoding", "list-*", NULL,
};
static const char *oversign_hdrs[] = { "from", NULL };

struct dkim_key {
	char  *domain;        /* lower case; owned */
	char  *selector;      /* owned */
	char  *file;          /* owned; for the log */
	unsigned char *pem;   /* owned; NUL-terminated, wiped at free */
	size_t pemlen;
	dkim_alg_t alg;       /* DKIM_SIGN_RSASHA256 or DKIM_SIGN_ED25519SHA256 */
};

struct dkim_keys {
	int    refs;          /* the generation, pickup, each signer in flight */
	DKIM_LIB *lib;        /* one library handle per table; its options are ours */
	struct dkim_key *v;   /* owned */
	int    n, cap;
};

enum sig_state { SIG_HEADERS, SIG_BODY, SIG_OFF };

/* One transaction being signed (the spool filter's argument). */
struct dkim_sig {
	struct dkim_keys *keys;   /* one reference */
	const struct dkim_key *key;
	enum sig_state st;
	char   id[QUEUE_ID_MAX];
	char  *hbuf;              /* owned; the header block until its end */
	size_t hlen, hcap;
	DKIM  *dkim;              /* owned; NULL until the From: domain had a key */
	int    body_open;         /* body bytes fed whose last line has no LF yet */
	struct lib_block *blk;    /* owned; the blocks libopendkim holds for this handle */
	int    nblk, capblk;
};

/* ---- libopendkim's memory: through core/mem (counted, may fail) ------------- */

/*
 * A signer's handle gets its own closure (the struct dkim_sig) and every
 * block libopendkim takes for it is listed there, for one reason:
 * libopendkim 2.11 (Debian 12's 2.11.0~beta2) never frees an Ed25519
 * signing key. dkim_free() releases a signature's key state (the EVP_PKEY,
 * the BIO it was read from, the 64-byte signature buffer) only when the
 * key type is RSA, then frees the struct holding them: 568 bytes a signed
 * message, counted by core/mem, so the daemon's ledger would read a budget
 * ever more used (upstream fixed it in 2026, OpenDKIM PR #321). When that
 * struct comes back here to be freed and still holds a key, frugal frees
 * the key. The struct is the library's private struct dkim_crypto
 * (dkim-types.h, OpenSSL build), declared below with the same members; it
 * is recognised by the block's size, a signature buffer that is a block of
 * this handle of exactly crypto_outlen bytes, no RSA key, and an Ed25519
 * EVP_PKEY. A library that frees the key itself has set crypto_out to NULL
 * by then (its CLOBBER), and nothing is done; another version than 2.11.0
 * is left alone.
 */
struct odk_crypto_211 {
	unsigned char crypto_pad;
	int      crypto_keysize;
	size_t   crypto_inlen;
	size_t   crypto_outlen;
	EVP_PKEY *crypto_pkey;
	void    *crypto_key;        /* RSA *; NULL for Ed25519 */
	BIO     *crypto_keydata;
	unsigned char *crypto_in;
	unsigned char *crypto_out;
};

struct lib_block {
	void  *p;
	size_t n;
};

static int lib_block_find(const struct dkim_sig *g, const void *p)
{
	int i;

	for (i = g->nblk - 1; i >= 0; i--)   /* the newest first: frees mostly follow allocations */
		if (g->blk[i].p == p)
			return i;
	return -1;
}

static void lib_block_drop(struct dkim_sig *g, int i)
{
	g->blk[i] = g->blk[--g->nblk];
}

static int odk_leaks_ed25519_key(void)
{
	return OPENDKIM_LIB_VERSION == 0x020B0000 && dkim_libversion() == 0x020B0000;
}

/* p, a block of g about to be freed: if it is a key state dkim_free() left behind, free the key */
static void lib_reclaim_key(struct dkim_sig *g, void *p, size_t n)
{
	struct odk_crypto_211 *c = p;
	int i;

	if (n != sizeof *c || !odk_leaks_ed25519_key())
		return;
	if (c->crypto_out == NULL || c->crypto_key != NULL || c->crypto_pkey == NULL || c->crypto_outlen == 0 ||
	    c->crypto_keysize != (int)(c->crypto_outlen * 8) || (i = lib_block_find(g, c->crypto_out)) < 0 ||
	    g->blk[i].n != c->crypto_outlen || EVP_PKEY_get_id(c->crypto_pkey) != EVP_PKEY_ED25519)
		return;
	EVP_PKEY_free(c->crypto_pkey);
	BIO_free(c->crypto_keydata);
	mem_free(c->crypto_out);
	lib_block_drop(g, i);
}

static void *lib_alloc(void *closure, size_t n)
{
	struct dkim_sig *g = closure;
	void *p;

	if ((p = mem_alloc(n ? n : 1)) == NULL || g == NULL)
		return p;
	if (g->nblk == g->capblk) {
		int cap = g->capblk ? g->capblk * 2 : 32;
		struct lib_block *v = mem_realloc(g->blk, (size_t)cap * sizeof *v);
		if (v == NULL) {
			mem_free(p);
			return NULL;
		}
		g->blk = v;
		g->capblk = cap;
	}
	g->blk[g->nblk].p = p;
	g->blk[g->nblk++].n = n;
	return p;
}

static void lib_free(void *closure, void *p)
{
	struct dkim_sig *g = closure;
	int i;

	if (g != NULL && p != NULL && (i = lib_block_find(g, p)) >= 0) {
		size_t n = g->blk[i].n;
		lib_block_drop(g, i);
		lib_reclaim_key(g, p, n);
	}
	mem_free(p);
}

/* ---- the key table ------------------------------------------------------------ */

int dkim_key_spec_parse(const char *value, char *sel, size_t sellen, char *file, size_t filelen)
{
	const char *colon = strchr(value, ':');
	size_t n, i;

	if (colon == NULL || colon == value || colon[1] != '/')
		return -1;
	n = (size_t)(colon - value);
	if (n >= sellen || strlen(colon + 1) >= filelen)
		return -1;
	/* a selector is a DNS label sequence (RFC 6376 3.1) */
	for (i = 0; i < n; i++)
		if (!(isalnum((unsigned char)value[i]) || value[i] == '-' || value[i] == '.' || value[i] == '_'))
			return -1;
	if (value[0] == '.' || value[n - 1] == '.')
		return -1;
	memcpy(sel, value, n);
	sel[n] = '\0';
	memcpy(file, colon + 1, strlen(colon + 1) + 1);
	return 0;
}

/* the PEM text of path, and its algorithm; -1 with why */
static int key_read(const char *path, struct dkim_key *k, char *why, size_t whylen)
{
	struct stat st;
	EVP_PKEY *pk = NULL;
	BIO *bio;
	ssize_t r;
	size_t got = 0;
	int fd, id;

	if ((fd = fd_open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > DKIM_KEY_MAX) {
		snprintf(why, whylen, "not a regular file of 1 to %d bytes", DKIM_KEY_MAX);
		fd_close(fd);
		return -1;
	}
	if ((k->pem = mem_alloc((size_t)st.st_size + 1)) == NULL) {
		snprintf(why, whylen, "out of memory");
		fd_close(fd);
		return -1;
	}
	while (got < (size_t)st.st_size && (r = read(fd, k->pem + got, (size_t)st.st_size - got)) > 0)
		got += (size_t)r;
	fd_close(fd);
	k->pem[got] = '\0';
	k->pemlen = got;
	if ((bio = BIO_new_mem_buf(k->pem, (int)got)) != NULL) {
		pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
		BIO_free(bio);
	}
	if (pk == NULL) {
		snprintf(why, whylen, "not a PEM private key");
		return -1;
	}
	id = EVP_PKEY_get_base_id(pk);
	if (id == EVP_PKEY_RSA && EVP_PKEY_get_bits(pk) >= 1024)
		k->alg = DKIM_SIGN_RSASHA256;
	else if (id == EVP_PKEY_ED25519)
		k->alg = DKIM_SIGN_ED25519SHA256;
	else {
		/* RFC 8301: verifiers must reject RSA keys under 1024 bits */
		snprintf(why, whylen, id == EVP_PKEY_RSA ? "an RSA key under 1024 bits" :
		    "neither an RSA nor an Ed25519 key");
		EVP_PKEY_free(pk);
		return -1;
	}
	EVP_PKEY_free(pk);
	return 0;
}

static void key_free(struct dkim_key *k)
{
	mem_free(k->domain);
	mem_free(k->selector);
	mem_free(k->file);
	if (k->pem) {
		explicit_bzero(k->pem, k->pemlen);
		mem_free(k->pem);
	}
}

struct walk_ctx {
	struct dkim_keys *ks;
	char *err;
	size_t errlen;
};

static int walk_one(void *arg, const char *key, const char *value)
{
	struct walk_ctx *w = arg;
	struct dkim_keys *ks = w->ks;
	struct dkim_key k, *nv;
	char sel[64], file[1024], why[256];
	int i;

	memset(&k, 0, sizeof k);
	for (i = 0; i < ks->n; i++)
		if (strcasecmp(ks->v[i].domain, key) == 0)
			return 0;   /* the first table that has a domain wins, as a lookup would */
	if (dkim_key_spec_parse(value, sel, sizeof sel, file, sizeof file) < 0) {
		snprintf(w->err, w->errlen, "%s: value \"%.200s\" is not selector:/path/to/key", key, value);
		return 1;
	}
	if (key_read(file, &k, why, sizeof why) < 0) {
		snprintf(w->err, w->errlen, "%s: key file %s: %s", key, file, why);
		key_free(&k);
		return 1;
	}
	if ((k.domain = mem_strdup(key)) == NULL || (k.selector = mem_strdup(sel)) == NULL ||
	    (k.file = mem_strdup(file)) == NULL)
		goto nomem;
	for (i = 0; k.domain[i]; i++)
		k.domain[i] = (char)tolower((unsigned char)k.domain[i]);
	if (ks->n == ks->cap) {
		int cap = ks->cap ? ks->cap * 2 : 4;
		if ((nv = mem_realloc(ks->v, (size_t)cap * sizeof *nv)) == NULL)
			goto nomem;
		ks->v = nv;
		ks->cap = cap;
	}
	ks->v[ks->n++] = k;
	return 0;
nomem:
	key_free(&k);
	snprintf(w->err, w->errlen, "out of memory");
	return 1;
}

struct dkim_keys *dkim_keys_load(const struct conf *c, char *err, size_t errlen)
{
	const char *spec = conf_str(c, "dkim_signing_maps", 0);
	struct dkim_keys *ks;
	struct map_list *l;
	struct walk_ctx w;
	const char *where = NULL, **sh, **oh;
	char e[512];
	int rc;

	if (spec == NULL || *spec == '\0') {
		if (errlen)
			err[0] = '\0';
		errno = 0;
		return NULL;   /* not configured: nothing signed */
	}
	if ((ks = mem_calloc(1, sizeof *ks)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ks->refs = 1;
	if ((l = map_list_open(spec, e, sizeof e)) == NULL) {
		snprintf(err, errlen, "dkim_signing_maps: %s", e);
		goto fail;
	}
	w.ks = ks;
	w.err = e;
	w.errlen = sizeof e;
	e[0] = '\0';
	rc = map_list_walk(l, walk_one, &w, &where);
	if (rc != 0) {
		/* where is the table's spec, owned by l: said before l goes (an inline table: its start) */
		snprintf(err, errlen, "dkim_signing_maps: %.60s%s%s", where ? where : "", where ? ": " : "",
		    rc < 0 ? "cannot read the table" : e);
		map_list_close(l);
		goto fail;
	}
	map_list_close(l);
	/* the header lists go by pointer: libopendkim wants sizeof (char **), as opendkim passes them */
	sh = (const char **)sign_hdrs;
	oh = (const char **)oversign_hdrs;
	if ((ks->lib = dkim_init(lib_alloc, lib_free)) == NULL ||
	    dkim_options(ks->lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, sh, sizeof sh) != DKIM_STAT_OK ||
	    dkim_options(ks->lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS, oh, sizeof oh) != DKIM_STAT_OK) {
		snprintf(err, errlen, "dkim_signing_maps: cannot set up libopendkim (out of memory?)");
		goto fail;
	}
	return ks;
fail:
	ks->refs = 1;
	dkim_keys_unref(ks);
	errno = EINVAL;
	return NULL;
}

struct dkim_keys *dkim_keys_ref(struct dkim_keys *ks)
{
	if (ks)
		__atomic_add_fetch(&ks->refs, 1, __ATOMIC_ACQ_REL);
	return ks;
}

void dkim_keys_unref(struct dkim_keys *ks)
{
	int i;

	/* a signer drops its reference on the commit worker: atomic */
	if (ks == NULL || __atomic_sub_fetch(&ks->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	for (i = 0; i < ks->n; i++)
		key_free(&ks->v[i]);
	mem_free(ks->v);
	if (ks->lib)
		dkim_close(ks->lib);
	mem_free(ks);
}

int dkim_keys_count(const struct dkim_keys *ks)
{
	return ks ? ks->n : 0;
}

static const struct dkim_key *key_find(const struct dkim_keys *ks, const char *domain)
{
	int i;

	for (i = 0; i < ks->n; i++)
		if (strcasecmp(ks->v[i].domain, domain) == 0)
			return &ks->v[i];
	return NULL;
}

/* ---- From: ------------------------------------------------------------------- */

/*
 * The domain of the one address in a From: value (RFC 5322 3.6.2 allows a
 * list; DKIM's d= must then be one of them, and we sign only the plain
 * case). Quoted strings and comments are skipped; the address is the one
 * in angle brackets, else the bare addr-spec. 0 and out set, or -1: no
 * address, several, or a group.
 */
int dkim_from_domain(const char *v, size_t n, char *out, size_t outlen)
{
	size_t i, start = 0, end = 0;
	int depth = 0, in_q = 0, angle = 0, addrs = 0, have = 0;
	const char *at = NULL;

	for (i = 0; i < n; i++) {
		char c = v[i];

		if (in_q) {
			if (c == '\\' && i + 1 < n)
				i++;
			else if (c == '"')
				in_q = 0;
			continue;
		}
		if (depth) {
			if (c == '\\' && i + 1 < n)
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			continue;
		}
		switch (c) {
		case '"': in_q = 1; break;
		case '(': depth = 1; break;
		case ':': case ';': return -1;   /* a group */
		case ',': addrs++; break;
		case '<':
			if (angle)
				return -1;
			angle = 1;
			start = i + 1;
			break;
		case '>':
			if (angle != 1)
				return -1;
			angle = 2;
			end = i;
			have++;
			break;
		default: break;
		}
	}
	if (in_q || depth || angle == 1 || addrs > 0 || have > 1)
		return -1;
	if (!have) {
		/* a bare addr-spec: the one token with an '@', white space and comments aside */
		size_t a = 0, b = n;
		while (a < b && isspace((unsigned char)v[a]))
			a++;
		while (b > a && (isspace((unsigned char)v[b - 1]) || v[b - 1] == ')')) {
			if (v[b - 1] == ')') {   /* a trailing comment */
				while (b > a && v[b - 1] != '(')
					b--;
				if (b > a)
					b--;
				continue;
			}
			b--;
		}
		start = a;
		end = b;
	}
	for (i = start; i < end; i++)
		if (v[i] == '@')
			at = v + i;
	if (at == NULL || (size_t)(v + end - at - 1) == 0 || (size_t)(v + end - at - 1) >= outlen)
		return -1;
	for (i = 0; at + 1 + i < v + end; i++) {
		unsigned char c = (unsigned char)at[1 + i];
		if (!(isalnum(c) || c == '-' || c == '.' || c >= 0x80))
			return -1;   /* white space inside, a domain literal, a quote: not ours to guess */
		out[i] = (char)tolower(c);
	}
	out[i] = '\0';
	return out[0] == '.' ? -1 : 0;
}

/* ---- the signer (a spool filter) -------------------------------------------------- */

/* body bytes, LF made CRLF (libopendkim canonicalizes SMTP's line ends) */
static DKIM_STAT feed_body(struct dkim_sig *g, const char *p, size_t n)
{
	unsigned char out[2 * DKIM_CHUNK];
	size_t i, o = 0;
	DKIM_STAT st = DKIM_STAT_OK;

	for (i = 0; i < n; i++) {
		if (p[i] == '\n')
			out[o++] = '\r';
		out[o++] = (unsigned char)p[i];
		if (o >= sizeof out - 2 || i + 1 == n) {
			if ((st = dkim_body(g->dkim, out, o)) != DKIM_STAT_OK)
				return st;
			o = 0;
		}
	}
	return st;
}

/* one whole header, its folds CRLF, without its own line end */
static DKIM_STAT feed_header(struct dkim_sig *g, const char *p, size_t n)
{
	unsigned char *out;
	size_t i, o = 0;
	DKIM_STAT st;

	if ((out = mem_alloc(2 * n)) == NULL)
		return DKIM_STAT_NORESOURCE;
	for (i = 0; i < n; i++) {
		if (p[i] == '\n')
			out[o++] = '\r';
		out[o++] = (unsigned char)p[i];
	}
	st = dkim_header(g->dkim, out, o);
	mem_free(out);
	return st;
}

static int stat_errno(DKIM_STAT st)
{
	return st == DKIM_STAT_NORESOURCE ? ENOMEM : EIO;
}

/*
 * The header block is complete (hbuf[0..hend), without the empty line):
 * find From:, start signing when its domain has a key, feed the headers.
 * 0 (signing, or off for a reason logged), -1 errno.
 */
static int headers_done(struct dkim_sig *g, size_t hend)
{
	char dom[256];
	size_t p = 0, q, nfrom = 0, from_at = 0, from_len = 0;
	DKIM_STAT st;

	/* logical headers: a line, then its continuation lines */
	while (p < hend) {
		for (q = p; q < hend; q++)
			if (g->hbuf[q] == '\n' && (q + 1 >= hend || (g->hbuf[q + 1] != ' ' && g->hbuf[q + 1] != '\t')))
				break;
		if (q - p >= 5 && strncasecmp(g->hbuf + p, "from:", 5) == 0) {
			nfrom++;
			from_at = p + 5;
			from_len = q - p - 5;
		}
		p = q + 1;
	}
	if (nfrom != 1 || dkim_from_domain(g->hbuf + from_at, from_len, dom, sizeof dom) < 0 ||
	    (g->key = key_find(g->keys, dom)) == NULL) {
		g->st = SIG_OFF;   /* not ours to sign: nothing logged, as OpenDKIM with no key */
		return 0;
	}
	g->dkim = dkim_sign(g->keys->lib, (const unsigned char *)g->id, g, (dkim_sigkey_t)g->key->pem,
	    (const unsigned char *)g->key->selector, (const unsigned char *)g->key->domain,
	    DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, g->key->alg, -1L, &st);
	if (g->dkim == NULL) {
		log_warning("cleanup", "%s: DKIM signing for d=%s failed: %s", g->id, g->key->domain,
		    dkim_getresultstr(st));
		return errno = stat_errno(st), -1;
	}
	for (p = 0; p < hend; p = q + 1) {
		for (q = p; q < hend; q++)
			if (g->hbuf[q] == '\n' && (q + 1 >= hend || (g->hbuf[q + 1] != ' ' && g->hbuf[q + 1] != '\t')))
				break;
		/* one header, folded lines joined by CRLF, without its own line end */
		if (q > p && (st = feed_header(g, g->hbuf + p, q - p)) != DKIM_STAT_OK)
			goto fail;
	}
	if ((st = dkim_eoh(g->dkim)) != DKIM_STAT_OK)
		goto fail;
	g->st = SIG_BODY;
	return 0;
fail:
	log_warning("cleanup", "%s: DKIM signing for d=%s failed: %s", g->id, g->key->domain, dkim_getresultstr(st));
	return errno = stat_errno(st), -1;
}

static int body_feed(struct dkim_sig *g, const char *p, size_t n)
{
	DKIM_STAT st;

	if (n == 0)
		return 0;
	if ((st = feed_body(g, p, n)) != DKIM_STAT_OK) {
		log_warning("cleanup", "%s: DKIM signing for d=%s failed: %s", g->id, g->key->domain,
		    dkim_getresultstr(st));
		return errno = stat_errno(st), -1;
	}
	g->body_open = p[n - 1] != '\n';
	return 0;
}

/*
 * Where the header block ends in hbuf: the offset of the empty line's LF, or
 * (size_t)-1. Only the bytes new since `from` (and the one before them) are
 * searched: headers arrive a line at a time, and a rescan of the whole
 * buffer per line would be quadratic in its 64 KB.
 */
static size_t find_eoh(const struct dkim_sig *g, size_t from)
{
	const char *e;

	if (g->hlen > 0 && g->hbuf[0] == '\n')
		return 0;
	from = from > 0 ? from - 1 : 0;
	e = memmem(g->hbuf + from, g->hlen - from, "\n\n", 2);
	return e ? (size_t)(e - g->hbuf) + 1 : (size_t)-1;
}

static int sig_data(void *arg, const void *data, size_t n)
{
	struct dkim_sig *g = arg;
	size_t eoh;
	char *nb;

	if (g->st == SIG_OFF)
		return 0;
	if (g->st == SIG_BODY)
		return body_feed(g, data, n);
	if (g->hlen + n > DKIM_HDR_MAX) {
		/* past the cap: only the part that may still hold the end of the headers */
		size_t take = DKIM_HDR_MAX - g->hlen;
		if (g->hcap < DKIM_HDR_MAX) {
			if ((nb = mem_realloc(g->hbuf, DKIM_HDR_MAX)) == NULL)
				return errno = ENOMEM, -1;
			g->hbuf = nb;
			g->hcap = DKIM_HDR_MAX;
		}
		memcpy(g->hbuf + g->hlen, data, take);
		g->hlen += take;
		if ((eoh = find_eoh(g, g->hlen - take)) == (size_t)-1) {
			log_warning("cleanup", "%s: header block over %d bytes: not DKIM-signed", g->id, DKIM_HDR_MAX);
			g->st = SIG_OFF;
			mem_free(g->hbuf);
			g->hbuf = NULL;
			return 0;
		}
		/* the rest goes through below, from the buffer and what did not fit */
		if (headers_done(g, eoh) < 0)
			return -1;
		if (g->st == SIG_BODY && (body_feed(g, g->hbuf + eoh + 1, g->hlen - eoh - 1) < 0 ||
		    body_feed(g, (const char *)data + take, n - take) < 0))
			return -1;
		mem_free(g->hbuf);
		g->hbuf = NULL;
		return 0;
	}
	if (g->hlen + n > g->hcap) {
		size_t cap = g->hcap ? g->hcap : 4096;
		while (cap < g->hlen + n)
			cap *= 2;
		if (cap > DKIM_HDR_MAX)
			cap = DKIM_HDR_MAX;
		if ((nb = mem_realloc(g->hbuf, cap)) == NULL)
			return errno = ENOMEM, -1;
		g->hbuf = nb;
		g->hcap = cap;
	}
	memcpy(g->hbuf + g->hlen, data, n);
	g->hlen += n;
	if ((eoh = find_eoh(g, g->hlen - n)) == (size_t)-1)
		return 0;
	if (headers_done(g, eoh) < 0)
		return -1;
	if (g->st == SIG_BODY && body_feed(g, g->hbuf + eoh + 1, g->hlen - eoh - 1) < 0)
		return -1;
	mem_free(g->hbuf);
	g->hbuf = NULL;
	return 0;
}

/*
 * Is the field libopendkim made the one we asked for? It does not check
 * every allocation it makes: the sweep in tests/unit/test_dkim.c found a
 * signature with "d=(null)" after a failed copy of the domain, signed and
 * returned as a success. So the tags that name the key are checked here:
 * v, a, d, s, an h that has from, bh and a non-empty b. 1 sane, 0 not.
 */
static int sig_sane(const struct dkim_sig *g, const char *v, size_t n)
{
	char c[4096 + 8], want[400];
	size_t i, o = 0;

	/* tags without their folding white space, between ';'s */
	c[o++] = ';';
	for (i = 0; i < n && o < sizeof c - 2; i++)
		if (v[i] != ' ' && v[i] != '\t' && v[i] != '\r' && v[i] != '\n')
			c[o++] = v[i];
	if (i < n)
		return 0;
	if (c[o - 1] != ';')
		c[o++] = ';';
	c[o] = '\0';
	snprintf(want, sizeof want, ";d=%s;", g->key->domain);
	if (strstr(c, want) == NULL)
		return 0;
	snprintf(want, sizeof want, ";s=%s;", g->key->selector);
	if (strstr(c, want) == NULL)
		return 0;
	snprintf(want, sizeof want, ";a=%s;", g->key->alg == DKIM_SIGN_ED25519SHA256 ? "ed25519-sha256" : "rsa-sha256");
	return strncmp(c, ";v=1;", 5) == 0 && strstr(c, want) != NULL && strstr(c, ";bh=") != NULL &&
	    strstr(c, ";b=") != NULL && strstr(c, ";b=;") == NULL && strstr(c, ";h=") != NULL &&
	    strcasestr(c, "from") != NULL;
}

/* On the commit worker: the signature (the one CPU-heavy step), as a late header. */
static int sig_finish(void *arg, struct spool_txn *t)
{
	struct dkim_sig *g = arg;
	unsigned char *hdr = NULL;
	size_t len = 0, i, o;
	char *line;
	DKIM_STAT st;

	if (g->st == SIG_HEADERS) {
		/* the message ended inside its headers: all of it is headers, the body empty */
		if (g->hlen == 0 || g->hbuf[g->hlen - 1] != '\n')
			g->st = SIG_OFF;
		else if (headers_done(g, g->hlen) < 0)
			return -1;
	}
	if (g->st != SIG_BODY)
		return 0;
	/*
	 * A last line without LF (sendmail input can end so): libopendkim wants
	 * the CRLF, and both body canonicalizations read such a line as ended
	 * (RFC 6376 3.4.3, 3.4.4), as every verifier does.
	 */
	if (g->body_open && body_feed(g, "\n", 1) < 0)
		return -1;
	/*
	 * The sign itself may not meet a refused allocation: libopendkim 2.11's
	 * failure paths in dkim_eom free the RSA key twice (found by the sweep
	 * in tests/unit/test_dkim.c, OpenSSL's allocations failing one by one).
	 * So the room is checked first, and the step is then not refused: a
	 * signature's working memory (OpenSSL's bignums, the header) is a few KB.
	 */
	if (mem_charge(DKIM_EOM_ROOM) < 0) {
		log_warning("cleanup", "%s: DKIM signing for d=%s failed: no memory for the signature", g->id,
		    g->key->domain);
		return errno = ENOMEM, -1;
	}
	mem_uncharge(DKIM_EOM_ROOM);
	mem_nofail(1);
	if ((st = dkim_eom(g->dkim, NULL)) == DKIM_STAT_OK)
		st = dkim_getsighdr_d(g->dkim, strlen(DKIM_SIGNHEADER) + 2, &hdr, &len);
	mem_nofail(0);
	if (st != DKIM_STAT_OK) {
		log_warning("cleanup", "%s: DKIM signing for d=%s failed: %s", g->id, g->key->domain,
		    dkim_getresultstr(st));
		return errno = stat_errno(st), -1;
	}
	if (!sig_sane(g, (const char *)hdr, len)) {
		/* most likely a failed allocation inside libopendkim (see sig_sane) */
		log_warning("cleanup", "%s: DKIM signing for d=%s failed: libopendkim made a malformed signature "
		    "(out of memory?)", g->id, g->key->domain);
		return errno = ENOMEM, -1;
	}
	/* "DKIM-Signature: " + the value, its CRLF folds made LF like the rest of the file */
	if ((line = mem_alloc(strlen(DKIM_SIGNHEADER) + 3 + len)) == NULL)
		return errno = ENOMEM, -1;
	o = (size_t)sprintf(line, "%s: ", DKIM_SIGNHEADER);
	for (i = 0; i < len; i++)
		if (hdr[i] != '\r')
			line[o++] = (char)hdr[i];
	line[o] = '\0';
	if (spool_txn_late_header(t, line) < 0) {
		int e = errno;
		mem_free(line);
		return errno = e, -1;
	}
	mem_free(line);
	/* OpenDKIM's words, so log tools that know them still count */
	log_info("cleanup", "%s: DKIM-Signature field added (s=%s, d=%s)", g->id, g->key->selector, g->key->domain);
	return 0;
}

static void sig_free(void *arg)
{
	struct dkim_sig *g = arg;

	if (g->dkim)
		dkim_free(g->dkim);
	mem_free(g->blk);
	mem_free(g->hbuf);
	dkim_keys_unref(g->keys);
	mem_free(g);
}

static const struct spool_filter sig_ops = { sig_data, sig_finish, sig_free };

int dkim_sign_txn(struct dkim_keys *ks, struct spool_txn *t)
{
	struct dkim_sig *g;

	if (ks == NULL || ks->n == 0)
		return 0;
	if ((g = mem_calloc(1, sizeof *g)) == NULL)
		return errno = ENOMEM, -1;
	g->keys = dkim_keys_ref(ks);
	g->st = SIG_HEADERS;
	snprintf(g->id, sizeof g->id, "%s", spool_txn_id(t));
	spool_txn_filter(t, &sig_ops, g);
	return 0;
}
