/*
 * queue/dkim_keygen.c: `frugal dkim keygen DOMAIN [SELECTOR] [--type
 * rsa|ed25519] [-c DIR]`. Writes a new private key (PEM, PKCS#8) as
 * dkim_key_directory/DOMAIN.SELECTOR.key and prints the DNS TXT record to
 * publish and the dkim_signing_maps entry. A short-lived command: exits on
 * error. Must never replace an existing key (the published record would
 * no longer match it): the file is written under a temporary name, synced,
 * then linked into place, which fails when the name exists.
 */
#include "queue/queue_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "conf/conf.h"
#include "core/file.h"

static int domain_ok(const char *d)
{
	size_t i, n = strlen(d);

	if (n == 0 || n > 253 || d[0] == '.' || d[n - 1] == '.' || strstr(d, ".."))
		return 0;
	for (i = 0; i < n; i++)
		if (!(isalnum((unsigned char)d[i]) || d[i] == '-' || d[i] == '.'))
			return 0;
	return 1;
}

static int selector_ok(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > 63)
		return 0;
	for (i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_'))
			return 0;
	return 1;
}

/* the p= value: RSA as SubjectPublicKeyInfo DER (RFC 6376 3.6.1), Ed25519 raw (RFC 8463 4.2) */
static char *public_b64(EVP_PKEY *pk, int ed)
{
	unsigned char raw[64], *der = NULL;
	size_t rawlen = sizeof raw;
	int n;
	char *out;

	if (ed) {
		if (EVP_PKEY_get_raw_public_key(pk, raw, &rawlen) != 1)
			return NULL;
		der = raw;
		n = (int)rawlen;
	} else if ((n = i2d_PUBKEY(pk, &der)) <= 0)
		return NULL;
	if ((out = malloc((size_t)(4 * ((n + 2) / 3) + 1))) != NULL)
		EVP_EncodeBlock((unsigned char *)out, der, n);
	if (!ed)
		OPENSSL_free(der);
	return out;
}

/* the record's text as DNS zone strings: "v=DKIM1; k=...; p=..." cut at 255 bytes (RFC 1035 3.3) */
static void txt_strings(EVP_PKEY *pk, int ed, char *out, size_t outlen)
{
	char rec[2048], *pub = public_b64(pk, ed);
	size_t plen, off, o = 0;

	*out = '\0';
	if (pub == NULL)
		return;
	plen = (size_t)snprintf(rec, sizeof rec, "v=DKIM1; k=%s; p=%s", ed ? "ed25519" : "rsa", pub);
	free(pub);
	for (off = 0; off < plen && o + 260 < outlen; off += 255)
		o += (size_t)snprintf(out + o, outlen - o, "%s\"%.*s\"", off ? " " : "",
		    (int)(plen - off < 255 ? plen - off : 255), rec + off);
}

int dkim_keygen(const char *kdir, const char *domain, const char *sel, int ed, gid_t gid,
    char *path, size_t pathlen, char *txt, size_t txtlen, char *err, size_t errlen)
{
	char tmp[1100];
	EVP_PKEY *pk = NULL;
	BIO *bio = NULL;
	char *pem = NULL;
	long pemlen;
	FILE *f;
	int fd = -1, rc = -1;

	snprintf(path, pathlen, "%s/%s.%s.key", kdir, domain, sel);
	if (file_mkdir_p(kdir, 0750) < 0 || (gid != (gid_t)-1 && (chown(kdir, 0, gid) < 0 || chmod(kdir, 0750) < 0))) {
		snprintf(err, errlen, "%s: %s", kdir, strerror(errno));
		return -1;
	}
	if ((f = fopen(path, "r")) != NULL) {
		/* kept: its record may be published; the record is said again */
		pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
		if (pk == NULL) {
			snprintf(err, errlen, "%s exists and is not a PEM private key", path);
			return -1;
		}
		txt_strings(pk, EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519, txt, txtlen);
		EVP_PKEY_free(pk);
		return 1;
	}
	pk = ed ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519") : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	if (pk == NULL || (bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
	    (pemlen = BIO_get_mem_data(bio, &pem)) <= 0) {
		snprintf(err, errlen, "key generation failed");
		goto out;
	}
	txt_strings(pk, ed, txt, txtlen);
	snprintf(tmp, sizeof tmp, "%s/.%s.%s.key.%ld", kdir, domain, sel, (long)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0 ||
	    (gid != (gid_t)-1 && (fchown(fd, 0, gid) < 0 || fchmod(fd, 0640) < 0)) ||
	    queue_write_all(fd, pem, (size_t)pemlen) < 0 || fsync(fd) < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		if (fd >= 0)
			unlink(tmp);
		goto out;
	}
	/* link, not rename: it refuses an existing name even if one appeared since the check */
	if (link(tmp, path) < 0) {
		snprintf(err, errlen, "%s: %s; not replaced", path, strerror(errno));
		unlink(tmp);
		goto out;
	}
	unlink(tmp);
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	BIO_free(bio);
	EVP_PKEY_free(pk);
	return rc;
}

static int usage(void)
{
	fprintf(stderr, "usage: frugal dkim keygen [-c DIR] [--type rsa|ed25519] DOMAIN [SELECTOR]\n");
	return 64;
}

int dkim_cmd(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "type", required_argument, NULL, 't' }, { NULL, 0, NULL, 0 },
	};
	const char *dir = NULL, *type = "rsa", *kdir, *owner;
	char domain[256], sel[64], path[1024], txt[2048], err[1200] = "";
	struct conf_diags d = { 0 };
	struct conf *c;
	struct passwd *pw;
	int opt, ed, rc = 1, root = geteuid() == 0;
	gid_t gid = (gid_t)-1;
	size_t i;

	if (argc < 2 || strcmp(argv[1], "keygen") != 0)
		return usage();
	argc--;
	argv++;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		if (opt == 'c')
			dir = optarg;
		else if (opt == 't')
			type = optarg;
		else
			return usage();
	}
	if (optind >= argc || argc - optind > 2)
		return usage();
	if (strcmp(type, "rsa") != 0 && strcmp(type, "ed25519") != 0) {
		fprintf(stderr, "frugal dkim: --type %s: rsa or ed25519\n", type);
		return 64;
	}
	ed = strcmp(type, "ed25519") == 0;
	snprintf(domain, sizeof domain, "%s", argv[optind]);
	for (i = 0; domain[i]; i++)
		domain[i] = (char)tolower((unsigned char)domain[i]);
	if (!domain_ok(domain)) {
		fprintf(stderr, "frugal dkim: %s: not a domain name\n", argv[optind]);
		return 64;
	}
	if (argc - optind == 2)
		snprintf(sel, sizeof sel, "%s", argv[optind + 1]);
	else {
		/* the year and month: a new key next time gets a new name (key rotation) */
		time_t now = time(NULL);
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(sel, sizeof sel, "%Y%m", &tm);
	}
	if (!selector_ok(sel)) {
		fprintf(stderr, "frugal dkim: %s: not a selector (letters, digits, '-', '_')\n", sel);
		return 64;
	}
	if ((c = conf_load_for_command(dir, &d)) == NULL) {
		conf_print_diags(&d);
		conf_diags_free(&d);
		return 1;
	}
	conf_diags_free(&d);
	kdir = conf_str(c, "dkim_key_directory", 0);
	owner = conf_str(c, "mail_owner", 0);
	if (root) {
		/* the daemon (mail_owner) reads the key through its group; nobody else does */
		if ((pw = getpwnam(owner)) == NULL) {
			fprintf(stderr, "frugal dkim: mail_owner %s: no such user (create it first)\n", owner);
			goto out;
		}
		gid = pw->pw_gid;
	}
	snprintf(path, sizeof path, "%s/%s.%s.key", kdir, domain, sel);
	if (access(path, F_OK) == 0) {
		fprintf(stderr, "frugal dkim: %s exists: not replaced (its public key may be published; "
		    "choose another selector)\n", path);
		goto out;
	}
	if (dkim_keygen(kdir, domain, sel, ed, gid, path, sizeof path, txt, sizeof txt, err, sizeof err) != 0) {
		fprintf(stderr, "frugal dkim: %s\n", err[0] ? err : "the key exists: not replaced");
		goto out;
	}
	printf("wrote %s (%s%s, mode %s)\n", path, ed ? "ed25519" : "rsa 2048", root ? ", group of mail_owner" : "",
	    root ? "0640" : "0600");
	printf("publish this DNS record:\n%s._domainkey.%s. IN TXT %s\n", sel, domain, txt);
	printf("add to dkim_signing_maps (a table: cdb:/etc/frugal/dkim_keys, or inline:{ ... }):\n%s %s:%s\n",
	    domain, sel, path);
	rc = 0;
out:
	conf_unref(c);
	return rc;
}
