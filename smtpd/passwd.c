/*
 * smtpd/passwd.c: `frugal passwd [-c DIR] ADDRESS` (PRODUCT.md 1): set a
 * mailbox user's password hash in the first smtpd_sasl_users table
 * (cdb:PATH: the text file PATH, then PATH.cdb), so no admin needs
 * another tool.
 *
 * The password is read from the terminal without echo (twice), or as one
 * line from stdin. The hash is yescrypt at the highest cost up to Debian's
 * default (5: 16 MiB per check) whose memory, for AUTH_THREADS checks at
 * once, fits a quarter of frugal's memory budget on this machine; where
 * even cost 1 does not fit, SHA-512-crypt. The table is rewritten through
 * a temporary file (synced, renamed, directory synced), compiled the same
 * way (map_compile), made readable by mail_owner's group (the daemon reads
 * it as mail_owner), and a running daemon is told to reload.
 *
 * A command-line tool: it may exit on allocation failure (x* wrappers).
 */
#include "smtpd/smtpd_int.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/daemon.h"
#include "core/mem.h"
#include "limits/limits.h"
#include "smtpd/sasl.h"

/* One line from fp, without its line end; echo off when it is a terminal. 0, or -1. */
static int read_secret(FILE *fp, const char *prompt, char *out, size_t len)
{
	struct termios old, quiet;
	int tty = isatty(fileno(fp)), quieted = 0, r = 0;
	size_t n;

	if (tty) {
		fprintf(stderr, "%s", prompt);
		fflush(stderr);
		if (tcgetattr(fileno(fp), &old) == 0) {
			quiet = old;
			quiet.c_lflag &= ~(tcflag_t)ECHO;
			quieted = tcsetattr(fileno(fp), TCSAFLUSH, &quiet) == 0;
		}
	}
	if (fgets(out, (int)len, fp) == NULL)
		r = -1;
	if (quieted)
		(void)tcsetattr(fileno(fp), TCSAFLUSH, &old);
	if (tty)
		fprintf(stderr, "\n");
	if (r < 0)
		return -1;
	n = strcspn(out, "\r\n");
	if (out[n] == '\0' && n == len - 1)
		return -1;   /* longer than the buffer */
	out[n] = '\0';
	return 0;
}

/* The hash's setting: the strongest yescrypt that fits the budget, else SHA-512-crypt. */
static int choose_setting(const struct conf *c, char *setting, size_t len, char *why, size_t whylen)
{
	long long budget = limits_memory_budget(c), mem = 0;
	unsigned long cost;

	for (cost = 5; cost >= 1; cost--) {
		if (crypt_gensalt_rn("$y$", cost, NULL, 0, setting, (int)len) == NULL)
			break;   /* no yescrypt in this libcrypt */
		mem = sasl_hash_memory(setting);
		if (mem > 0 && (budget < 0 || AUTH_THREADS * mem <= budget / 4)) {
			snprintf(why, whylen, "yescrypt cost %lu: %lld KiB per check; memory budget %s", cost, mem >> 10,
			    budget < 0 ? "unlimited" : "");
			if (budget >= 0)
				snprintf(why + strlen(why), whylen - strlen(why), "%lld MiB", budget >> 20);
			return 0;
		}
	}
	if (crypt_gensalt_rn("$6$", 0, NULL, 0, setting, (int)len) == NULL)
		return -1;
	snprintf(why, whylen, "SHA-512-crypt: a memory budget of %lld MiB leaves no room for %d yescrypt checks at once",
	    budget >> 20, AUTH_THREADS);
	return 0;
}

/* A crypt(3) hash of pass as `frugal passwd` makes it (mem_alloc'd), or NULL with err. */
char *smtpd_passwd_hash(const struct conf *c, const char *pass, char *err, size_t errlen)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE], why[200], *hash;
	struct crypt_data *cd;

	if (choose_setting(c, setting, sizeof setting, why, sizeof why) < 0) {
		snprintf(err, errlen, "libcrypt makes no salt: %s", strerror(errno));
		return NULL;
	}
	cd = xcalloc(1, sizeof *cd);
	hash = crypt_rn(pass, setting, cd, (int)sizeof *cd);
	if (hash == NULL || hash[0] == '*') {
		snprintf(err, errlen, "libcrypt failed: %s", strerror(errno));
		hash = NULL;
	} else {
		hash = xstrdup(hash);
	}
	OPENSSL_cleanse(cd, sizeof *cd);
	mem_free(cd);
	return hash;
}

/* The daemon reads the table as mail_owner: root's, readable by mail_owner's group (0640), when run as root. */
static void owner_of_table(const struct conf *c, int fd, const char *path)
{
	struct passwd *pw = getpwnam(conf_str(c, "mail_owner", 0));

	if (geteuid() != 0 || pw == NULL || pw->pw_uid == 0)
		return;
	if (fd >= 0 ? fchown(fd, 0, pw->pw_gid) == 0 : chown(path, 0, pw->pw_gid) == 0)
		(void)(fd >= 0 ? fchmod(fd, 0640) : chmod(path, 0640));
}

/*
 * Rewrite PATH with ADDRESS's line replaced or added: a temporary file of
 * our own (mkstemp, in the same directory), owned and moded before it is
 * synced and renamed over PATH, then the directory synced. A read error
 * changes nothing.
 */
static int update_table(const struct conf *c, const char *path, const char *addr, const char *hash,
    char *err, size_t errlen)
{
	FILE *in = fopen(path, "r"), *out = NULL;
	char *tmp = mem_printf("%s.XXXXXX", path), line[4096], *dir, *slash;
	struct stat st;
	mode_t mode = 0640;
	int fd = -1, replaced = 0, dfd, bol = 1, e;

	if (tmp == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (in == NULL && errno != ENOENT) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (in && fstat(fileno(in), &st) == 0)
		mode = st.st_mode & 0660;   /* never readable by everyone: it holds password hashes */
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		mem_free(tmp);
		tmp = NULL;
		goto fail;
	}
	(void)fchmod(fd, mode);
	owner_of_table(c, fd, tmp);
	if ((out = fdopen(fd, "w")) == NULL) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		close(fd);
		goto fail;
	}
	while (in && fgets(line, sizeof line, in)) {
		size_t klen = strcspn(line, " \t\r\n");
		int key = bol && line[0] != '#' && line[0] != ' ' && line[0] != '\t';

		/* a line longer than the buffer comes in pieces: only a line's first piece has its key */
		bol = strchr(line, '\n') != NULL;
		if (key && klen == strlen(addr) && strncasecmp(line, addr, klen) == 0) {
			if (!replaced)
				fprintf(out, "%s %s\n", addr, hash);
			replaced = 1;
			while (!bol && fgets(line, sizeof line, in))   /* the rest of the old line */
				bol = strchr(line, '\n') != NULL;
			continue;
		}
		fputs(line, out);
	}
	if (in && ferror(in)) {
		snprintf(err, errlen, "%s: read error: nothing changed", path);
		goto fail;
	}
	if (!replaced)
		fprintf(out, "%s%s %s\n", bol ? "" : "\n", addr, hash);
	if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (rename(tmp, path) < 0) {
		e = errno;
		snprintf(err, errlen, "rename %s: %s", tmp, strerror(e));
		goto fail;
	}
	fclose(out);
	if (in)
		fclose(in);
	dir = mem_strdup(path);
	if (dir && (slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		if ((dfd = open(*dir ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
			(void)fsync(dfd);
			close(dfd);
		}
	}
	mem_free(dir);
	mem_free(tmp);
	return 0;
fail:
	if (out)
		fclose(out);
	if (tmp && fd >= 0)
		unlink(tmp);
	if (in)
		fclose(in);
	mem_free(tmp);
	return -1;
}

int smtpd_cmd_passwd(int argc, char **argv)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	const char *dir = NULL, *addr, *spec, *at;
	char pass[SASL_FIELD_MAX + 2], again[SASL_FIELD_MAX + 2], setting[CRYPT_GENSALT_OUTPUT_SIZE];
	char why[200], err[1200], path[600], *hash, *pidfile;
	struct crypt_data *cd;
	int opt, rc = 1;
	long pid;

	optind = 1;
	while ((opt = getopt(argc, argv, "+c:")) != -1) {
		if (opt == 'c')
			dir = optarg;
		else
			goto usage;
	}
	if (optind != argc - 1)
		goto usage;
	addr = argv[optind];
	at = strchr(addr, '@');
	if (!at || at == addr || !at[1] || strlen(addr) > SASL_FIELD_MAX || strpbrk(addr, " \t\r\n#:") ||
	    strchr(at + 1, '@')) {
		fprintf(stderr, "frugal passwd: %s: not a mailbox address (user@domain)\n", addr);
		return 1;
	}
	if ((c = conf_load_for_command(dir, &d)) == NULL) {
		conf_print_diags(&d);
		conf_diags_free(&d);
		return 1;
	}
	conf_diags_free(&d);
	spec = conf_str(c, "smtpd_sasl_users", 0);
	if (strncmp(spec, "cdb:", 4) != 0 || spec[4] == '\0') {
		fprintf(stderr, "frugal passwd: smtpd_sasl_users = %s: the first table must be cdb:PATH\n", spec);
		goto out;
	}
	snprintf(path, sizeof path, "%.*s", (int)strcspn(spec + 4, ", \t"), spec + 4);
	if (read_secret(stdin, "New password: ", pass, sizeof pass) < 0 || pass[0] == '\0') {
		fprintf(stderr, "frugal passwd: no password given (one line, 1 to %d bytes)\n", SASL_FIELD_MAX);
		goto out;
	}
	if (isatty(fileno(stdin))) {
		if (read_secret(stdin, "Again: ", again, sizeof again) < 0 || strcmp(pass, again) != 0) {
			fprintf(stderr, "frugal passwd: the passwords differ; nothing changed\n");
			goto out;
		}
	}
	if (choose_setting(c, setting, sizeof setting, why, sizeof why) < 0) {
		fprintf(stderr, "frugal passwd: libcrypt makes no salt: %s\n", strerror(errno));
		goto out;
	}
	cd = xcalloc(1, sizeof *cd);
	hash = crypt_rn(pass, setting, cd, (int)sizeof *cd);
	if (hash == NULL || hash[0] == '*') {
		fprintf(stderr, "frugal passwd: libcrypt failed: %s\n", strerror(errno));
		mem_free(cd);
		goto out;
	}
	hash = xstrdup(hash);
	OPENSSL_cleanse(cd, sizeof *cd);
	mem_free(cd);
	if (update_table(c, path, addr, hash, err, sizeof err) < 0 || map_compile(path, 0, err, sizeof err) < 0) {
		fprintf(stderr, "frugal passwd: %s\n", err);
		mem_free(hash);
		goto out;
	}
	mem_free(hash);
	{
		char *cdb = mem_printf("%s.cdb", path);   /* map_compile wrote it with the source's mode */

		if (cdb)
			owner_of_table(c, -1, cdb);
		mem_free(cdb);
	}
	printf("frugal passwd: %s: password set in %s (%s)\n", addr, path, why);
	/* a running daemon opens its tables at start and reload */
	if ((pidfile = smtpd_pid_path(c)) != NULL &&
	    (pid = daemon_pidfile_read(pidfile)) > 0 && kill((pid_t)pid, SIGHUP) == 0)
		printf("frugal passwd: the running daemon (pid %ld) reloads its tables\n", pid);
	mem_free(pidfile);
	rc = 0;
out:
	OPENSSL_cleanse(pass, sizeof pass);
	OPENSSL_cleanse(again, sizeof again);
	conf_unref(c);
	return rc;
usage:
	fprintf(stderr, "usage: frugal passwd [-c DIR] ADDRESS   (the password: on the terminal, or one line on stdin)\n");
	return 1;
}
