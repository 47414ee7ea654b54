/*
 * smtpd/wizard.c: `frugal wizard [-c DIR] [--answers FILE]` (PRODUCT.md 1):
 * set a server up in minutes. Shows the host name and the container's
 * limits, asks (defaults in brackets; an existing installation's values
 * are the defaults), validates each answer as it is given, shows a
 * summary, and only on confirmation writes frugal.conf and its tables,
 * compiles them, creates the accounts (as root) and directories, runs
 * `frugal check` and says what to do next (DNS, PTR, ports, swaks).
 *
 * What it must never do: write an open relay (mynetworks is loopback only,
 * relaying needs AUTH), write anything before the confirmation (Ctrl-C or
 * end of input before it leaves the disk as it was), or leave a file half
 * written (each one is a temporary file, synced, renamed; a file it
 * replaces is kept as NAME.bak-TIMESTAMP).
 *
 * --answers FILE: the same questions answered from "key = value" lines;
 * the files written are byte-identical to an interactive run with the same
 * answers, except salted password hashes and generated keys/certificates.
 *
 * A command-line tool: it may exit on allocation failure (x* wrappers).
 */
#include "smtpd/smtpd.h"
#include "smtpd/smtpd_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/crypto.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/file.h"
#include "core/mem.h"
#include "core/tls.h"
#include "limits/limits.h"
#include "smtpd/sasl.h"

#define W_LINE 1024
#define W_MAX_MAILBOXES 256
#define W_MAX_ANSWERS 512

extern char **environ;

enum delivery { D_VIRTUAL, D_LOCAL, D_LMTP };
static const char *const delivery_names[] = { "virtual", "local", "lmtp" };

struct mailbox {
	char addr[SASL_FIELD_MAX + 1];
	char *hash;               /* crypt(3), owned */
};

struct answer {
	char key[32];
	char *value;              /* owned */
	int used;
};

struct wiz {
	char dir[512];            /* the configuration directory */
	int tty;                  /* stdin is a terminal: passwords without echo */
	struct answer ans[W_MAX_ANSWERS]; /* --answers: in file order */
	int nans, unattended;
	struct conf *base;        /* defaults only: for the hash cost and the limits */
	/* the answers */
	char host[256];
	char domains[W_LINE];     /* "a.example, b.example" */
	struct mailbox mb[W_MAX_MAILBOXES];
	int nmb, nkept;           /* nkept: the first nkept came from an existing users file */
	char postmaster[SASL_FIELD_MAX + 1];
	enum delivery delivery;
	char lmtp[300];
	char mailbox_base[400], queue_dir[400];
	char owner[64], vowner[64];
	char relayhost[300], relay_user[SASL_FIELD_MAX + 1], relay_pass[SASL_FIELD_MAX + 1];
	char cert[600], key[600];
	int selfsigned, notls, submission;
	char listen[100], sub_listen[100], smtps_listen[100];
	char pregreet[16];        /* smtpd_pregreet_wait, "0s": off */
	int dkim;                 /* sign with a key per domain (dkim_signing_maps = cdb:DIR/dkim_keys) */
	char dnsbl[512];          /* reject_rbl_client zones, "a, b=127.0.0.2"; "": none */
	int greylist;             /* check_greylist at the end of smtpd_recipient_restrictions */
	char *dkim_dns;           /* the TXT records to publish, for the next steps; open_memstream's */
	size_t dkim_dns_len;
};

/* ---- the terminal, and Ctrl-C ---------------------------------------- */

static struct termios saved_tty;
static volatile sig_atomic_t echo_off;

/* Before the confirmation nothing is on disk: an interrupt only restores the terminal. */
static void on_interrupt(int sig)
{
	static const char msg[] = "\nfrugal wizard: interrupted: nothing written\n";

	if (echo_off)
		(void)tcsetattr(0, TCSANOW, &saved_tty);
	(void)!write(2, msg, sizeof msg - 1);
	_exit(128 + sig);
}

static void abort_wizard(const char *why)
{
	fprintf(stderr, "frugal wizard: %s: nothing written\n", why);
	exit(1);
}

/*
 * Echo off (for a secret) before its prompt is shown, so nothing typed
 * after the prompt can be echoed; TCSADRAIN, not TCSAFLUSH, so nothing
 * typed ahead is thrown away.
 */
static void echo_quiet(void)
{
	struct termios quiet;

	if (tcgetattr(0, &saved_tty) == 0) {
		quiet = saved_tty;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		echo_off = tcsetattr(0, TCSADRAIN, &quiet) == 0;
	}
}

/* One line from stdin without its end (echo already off for a secret). 0, or -1 at end of input. */
static int read_line(char *out, size_t len)
{
	int r = 0;
	size_t n;

	fflush(stdout);
	if (fgets(out, (int)len, stdin) == NULL)
		r = -1;
	if (echo_off) {
		(void)tcsetattr(0, TCSADRAIN, &saved_tty);
		echo_off = 0;
		printf("\n");
	}
	if (r < 0)
		return -1;
	n = strcspn(out, "\r\n");
	if (out[n] == '\0' && n == len - 1) {
		int ch;

		while ((ch = getchar()) != EOF && ch != '\n')
			;
		snprintf(out, len, "%c", 1);   /* too long: a value no validator takes */
		return 0;
	}
	out[n] = '\0';
	return 0;
}

/* strlcpy: answers are bounded by their validators; a longer one is cut, never overrun */
static void scopy(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void trim(char *s)
{
	size_t n = strlen(s), i = 0;

	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	while (isspace((unsigned char)s[i]))
		i++;
	memmove(s, s + i, n - i + 1);
}

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* ---- validators: NULL when the answer is good, else the reason ------- */

typedef const char *validator(struct wiz *w, char *value);

static const char *check_domain_name(const char *s)
{
	const char *label = s, *p;
	int dots = 0;

	if (*s == '\0')
		return "empty";
	if (strlen(s) > 253)
		return "longer than 253 characters";
	for (p = s;; p++) {
		if (*p == '.' || *p == '\0') {
			size_t n = (size_t)(p - label);

			if (n == 0)
				return "an empty label (two dots, or a dot at either end)";
			if (n > 63)
				return "a label longer than 63 characters";
			if (label[0] == '-' || p[-1] == '-')
				return "a label starts or ends with '-'";
			if (*p == '\0')
				break;
			dots++;
			label = p + 1;
		} else if (!isalnum((unsigned char)*p) && *p != '-') {
			return "only letters, digits, '-' and '.' are allowed";
		}
	}
	if (dots == 0)
		return "not a fully qualified name (it needs a dot: example.com)";
	if (isdigit((unsigned char)label[0]) && strspn(label, "0123456789") == strlen(label))
		return "the last label is a number: an address, not a name";
	return NULL;
}

static const char *v_host(struct wiz *w, char *v)
{
	lower(v);
	return check_domain_name(v);
}

/* a comma and/or space separated list, normalised to "a, b" */
static const char *v_domains(struct wiz *w, char *v)
{
	static char why[400];
	char out[W_LINE] = "", *tok, *save = NULL, copy[W_LINE];
	const char *e;

	lower(v);
	scopy(copy, sizeof copy, v);
	for (tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		if ((e = check_domain_name(tok)) != NULL) {
			snprintf(why, sizeof why, "%s: %s", tok, e);
			return why;
		}
		if (strlen(out) + strlen(tok) + 3 >= sizeof out)
			return "too many domains";
		snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s", out[0] ? ", " : "", tok);
	}
	if (out[0] == '\0')
		return "at least one mail domain is needed";
	strcpy(v, out);
	return NULL;
}

static int in_domains(const struct wiz *w, const char *dom)
{
	char copy[W_LINE], *tok, *save = NULL;

	scopy(copy, sizeof copy, w->domains);
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
		if (strcmp(tok, dom) == 0)
			return 1;
	return 0;
}

/* local@domain, the local part in RFC 5321 dot-atom characters */
static const char *check_address(const char *v)
{
	static char why[400];
	const char *at = strrchr(v, '@'), *p, *e;

	if (!at || at == v)
		return "not an address: it needs local-part@domain";
	if (strlen(v) > SASL_FIELD_MAX)
		return "longer than 255 characters";
	for (p = v; p < at; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".!#$%&'*+/=?^_`{|}~-", *p))
			return "the local part has a character other than letters, digits and .!#$%&'*+/=?^_`{|}~-";
	if (v[0] == '.' || at[-1] == '.' || strstr(v, ".."))
		return "the local part starts or ends with a dot, or has two in a row";
	if ((e = check_domain_name(at + 1)) != NULL) {
		snprintf(why, sizeof why, "domain %s: %s", at + 1, e);
		return why;
	}
	return NULL;
}

static const char *v_mailbox_addr(struct wiz *w, char *v)
{
	static char why[400];
	const char *e;
	int i;

	lower(v);
	if (v[0] == '\0')
		return NULL;   /* done */
	if ((e = check_address(v)) != NULL)
		return e;
	if (!in_domains(w, strrchr(v, '@') + 1)) {
		snprintf(why, sizeof why, "%.60s is not one of the mail domains (%.300s)", strrchr(v, '@') + 1, w->domains);
		return why;
	}
	for (i = 0; i < w->nmb; i++)
		if (strcmp(w->mb[i].addr, v) == 0 && i >= w->nkept)
			return "that mailbox was given already";
	return NULL;
}

static const char *v_password(struct wiz *w, char *v)
{
	if (v[0] == '\0')
		return "empty: a mailbox needs a password";
	if (strlen(v) > SASL_FIELD_MAX)
		return "longer than 255 bytes";
	return NULL;
}

static const char *v_alias_target(struct wiz *w, char *v)
{
	lower(v);
	return check_address(v);
}

static const char *v_delivery(struct wiz *w, char *v)
{
	int i;

	lower(v);
	for (i = 0; i < 3; i++)
		if (strcmp(v, delivery_names[i]) == 0)
			return NULL;
	return "answer virtual, local or lmtp";
}

static const char *check_abs_path(const char *v)
{
	if (v[0] != '/')
		return "not an absolute path (it must start with /)";
	if (strpbrk(v, " \t,#$\"'\\"))
		return "white space, commas, #, $, quotes and backslashes are not allowed in a path here";
	if (strlen(v) > 380)
		return "too long";
	return NULL;
}

/* a directory that is one or can be made (no file in the way) */
static const char *v_dir(struct wiz *w, char *v)
{
	static char why[500];
	struct stat st;
	const char *e = check_abs_path(v);

	if (e)
		return e;
	while (strlen(v) > 1 && v[strlen(v) - 1] == '/')
		v[strlen(v) - 1] = '\0';
	if (stat(v, &st) == 0 && !S_ISDIR(st.st_mode)) {
		snprintf(why, sizeof why, "%s exists and is not a directory", v);
		return why;
	}
	return NULL;
}

static const char *v_lmtp(struct wiz *w, char *v)
{
	char *colon;
	long port;

	if (strncmp(v, "unix:", 5) == 0)
		return check_abs_path(v + 5) ? "unix:PATH needs an absolute path (unix:/run/dovecot/lmtp)" : NULL;
	if (strncmp(v, "inet:", 5) == 0 && (colon = strrchr(v + 5, ':')) != NULL && colon > v + 5) {
		port = strtol(colon + 1, NULL, 10);
		if (port > 0 && port < 65536 && strspn(colon + 1, "0123456789") == strlen(colon + 1))
			return NULL;
	}
	return "answer unix:/PATH (Dovecot's socket) or inet:HOST:PORT";
}

static const char *v_account(struct wiz *w, char *v)
{
	size_t i;

	if (v[0] == '\0' || strlen(v) > 32 || v[0] == '-')
		return "a user name of 1 to 32 characters";
	for (i = 0; v[i]; i++)
		if (!isalnum((unsigned char)v[i]) && !strchr("_-.", v[i]))
			return "only letters, digits, '_', '-' and '.' in a user name";
	if (geteuid() != 0 && getpwnam(v) == NULL)
		return "no such account, and only root can create it";
	return NULL;
}

/* [host]:port, host:port or host; empty: none */
static const char *v_relayhost(struct wiz *w, char *v)
{
	char host[300];
	const char *p = v, *end, *port = NULL;

	lower(v);
	if (v[0] == '\0')
		return NULL;
	if (*p == '[') {
		if ((end = strchr(p, ']')) == NULL)
			return "a '[' without its ']'";
		snprintf(host, sizeof host, "%.*s", (int)(end - p - 1), p + 1);
		if (end[1] == ':')
			port = end + 2;
		else if (end[1])
			return "after ']' only :PORT may follow";
	} else {
		end = strchr(p, ':');
		snprintf(host, sizeof host, "%.*s", end ? (int)(end - p) : (int)strlen(p), p);
		if (end)
			port = end + 1;
	}
	if (port && (strspn(port, "0123456789") != strlen(port) || atoi(port) < 1 || atoi(port) > 65535))
		return "the port must be a number from 1 to 65535";
	return check_domain_name(host);
}

static const char *v_nonempty(struct wiz *w, char *v)
{
	if (v[0] == '\0')
		return "empty";
	if (strlen(v) > SASL_FIELD_MAX || strpbrk(v, "\r\n"))
		return "longer than 255 bytes";
	return NULL;
}

static const char *v_yesno(struct wiz *w, char *v)
{
	lower(v);
	if (!strcmp(v, "y") || !strcmp(v, "yes")) {
		strcpy(v, "yes");
		return NULL;
	}
	if (!strcmp(v, "n") || !strcmp(v, "no")) {
		strcpy(v, "no");
		return NULL;
	}
	return "answer yes or no";
}

/* ADDRESS:PORT, the address IPv4 or [IPv6]; empty for none where allowed */
static const char *v_listen(struct wiz *w, char *v)
{
	char addr[64];
	const char *colon;
	unsigned char buf[16];
	long port;

	if (v[0] == '\0')
		return NULL;
	if (v[0] == '[') {
		const char *end = strchr(v, ']');

		if (!end || end[1] != ':' || (size_t)(end - v - 1) >= sizeof addr)
			return "an IPv6 address is written [ADDRESS]:PORT";
		snprintf(addr, sizeof addr, "%.*s", (int)(end - v - 1), v + 1);
		if (inet_pton(AF_INET6, addr, buf) != 1)
			return "not an IPv6 address";
		colon = end + 1;
	} else {
		if ((colon = strrchr(v, ':')) == NULL || (size_t)(colon - v) >= sizeof addr)
			return "write ADDRESS:PORT (0.0.0.0:25, 127.0.0.1:2525, [::]:25)";
		snprintf(addr, sizeof addr, "%.*s", (int)(colon - v), v);
		if (inet_pton(AF_INET, addr, buf) != 1)
			return "not an IPv4 address (0.0.0.0 listens on all)";
	}
	port = strtol(colon + 1, NULL, 10);
	if (colon[1] == '\0' || strspn(colon + 1, "0123456789") != strlen(colon + 1) || port < 1 || port > 65535)
		return "the port must be a number from 1 to 65535";
	return NULL;
}

static const char *v_listen_required(struct wiz *w, char *v)
{
	return v[0] ? v_listen(w, v) : "the SMTP listener cannot be off (empty)";
}

/* "self-signed", "none", or a readable PEM certificate file */
static const char *v_cert(struct wiz *w, char *v)
{
	static char why[500];
	const char *e;

	if (!strcasecmp(v, "self-signed") || !strcasecmp(v, "none")) {
		lower(v);
		return NULL;
	}
	if ((e = check_abs_path(v)) != NULL)
		return e;
	if (access(v, R_OK) < 0) {
		snprintf(why, sizeof why, "%s: %s", v, strerror(errno));
		return why;
	}
	return NULL;
}

/* the key, and whether it matches the certificate (the daemon's own loader says) */
static const char *v_key(struct wiz *w, char *v)
{
	static char why[700];
	struct tls_ctx *t;
	const char *e;

	if ((e = check_abs_path(v)) != NULL)
		return e;
	if ((t = tls_server_new(w->cert, -1, v, -1, why, sizeof why)) == NULL)
		return why;
	tls_ctx_unref(t);
	return NULL;
}

/*
 * DNS blocklists: zones, each optionally with the one answer it means
 * (ZONE=127.0.0.N, Postfix's reject_rbl_client syntax), normalised to
 * "a, b"; "" or "none": none.
 */
static const char *v_dnsbl(struct wiz *w, char *v)
{
	static char why[400];
	char out[512] = "", *tok, *save = NULL, copy[W_LINE], *eq;
	const char *e;
	struct in_addr a;

	(void)w;
	lower(v);
	if (strcmp(v, "none") == 0)
		v[0] = '\0';
	scopy(copy, sizeof copy, v);
	for (tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		if ((eq = strchr(tok, '=')) != NULL) {
			*eq = '\0';
			if (inet_pton(AF_INET, eq + 1, &a) != 1 || strncmp(eq + 1, "127.", 4) != 0) {
				snprintf(why, sizeof why, "%s: after = comes the answer that means listed, 127.0.0.N", tok);
				return why;
			}
		}
		if ((e = check_domain_name(tok)) != NULL) {
			snprintf(why, sizeof why, "%s: %s", tok, e);
			return why;
		}
		if (eq)
			*eq = '=';
		if (strlen(out) + strlen(tok) + 3 >= sizeof out)
			return "too many blocklists";
		snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s", out[0] ? ", " : "", tok);
	}
	strcpy(v, out);
	return NULL;
}

/* seconds, 0 to 60, written with its unit */
static const char *v_pregreet(struct wiz *w, char *v)
{
	size_t n = strspn(v, "0123456789");

	lower(v);
	if (n == 0 || n > 2 || (v[n] != '\0' && strcmp(v + n, "s") != 0) || atoi(v) > 60)
		return "a number of seconds from 0 (off) to 60";
	snprintf(v, 8, "%ds", atoi(v));
	return NULL;
}

static const char *v_relayhost_user_ok(struct wiz *w, char *v)
{
	return v[0] ? v_nonempty(w, v) : NULL;
}

/* ---- asking ------------------------------------------------------------ */

/* The next unused --answers value for key; NULL when there is none. */
static const char *next_answer(struct wiz *w, const char *key)
{
	int i;

	for (i = 0; i < w->nans; i++)
		if (!w->ans[i].used && strcmp(w->ans[i].key, key) == 0) {
			w->ans[i].used = 1;
			return w->ans[i].value;
		}
	return NULL;
}

/*
 * Ask until the answer is valid. Interactive: the reason, and again.
 * Unattended: the answer for `key` (or the default when the file has
 * none); an invalid one ends the run, naming the key. The valid answer is
 * in out. `secret`: no echo, never shown.
 */
static void ask(struct wiz *w, const char *key, const char *question, const char *def, validator *valid,
    int secret, char *out, size_t outlen)
{
	char line[W_LINE];
	const char *why;

	for (;;) {
		if (w->unattended) {
			const char *a = next_answer(w, key);

			scopy(line, sizeof line, a ? a : def ? def : "");
			trim(line);
			printf("%s%s%s%s: %s\n", question, def && *def && !secret ? " [" : "",
			    def && !secret ? def : "", def && *def && !secret ? "]" : "",
			    secret ? "(hidden)" : line);
		} else {
			if (secret && w->tty)
				echo_quiet();
			printf("%s%s%s%s: ", question, def && *def ? " [" : "", def ? def : "", def && *def ? "]" : "");
			if (read_line(line, sizeof line) < 0)
				abort_wizard("end of input");
			trim(line);
			if (line[0] == '\0' && def)
				scopy(line, sizeof line, def);
		}
		if ((why = valid(w, line)) == NULL)
			break;
		if (w->unattended) {
			fprintf(stderr, "frugal wizard: --answers %s = %s: %s\n", key, secret ? "(hidden)" : line, why);
			abort_wizard("a bad answer");
		}
		printf("  %s. Try again.\n", why);
	}
	if (strlen(line) >= outlen)
		abort_wizard("an answer too long");
	scopy(out, outlen, line);
	OPENSSL_cleanse(line, sizeof line);
}

/* ---- what is there already --------------------------------------------- */

static void detect_host(char *out, size_t len)
{
	char name[256] = "";
	struct addrinfo hints, *ai = NULL;

	if (gethostname(name, sizeof name - 1) < 0)
		name[0] = '\0';
	if (!strchr(name, '.') && name[0]) {
		memset(&hints, 0, sizeof hints);
		hints.ai_flags = AI_CANONNAME;
		if (getaddrinfo(name, NULL, &hints, &ai) == 0 && ai && ai->ai_canonname &&
		    strchr(ai->ai_canonname, '.'))
			scopy(name, sizeof name, ai->ai_canonname);
		if (ai)
			freeaddrinfo(ai);
	}
	lower(name);
	scopy(out, len, name);
}

/* the path of a "cdb:PATH" parameter's first table, or "" */
static void table_path(const struct conf *c, const char *name, char *out, size_t len)
{
	const char *v = conf_str(c, name, 0);

	out[0] = '\0';
	if (v && strncmp(v, "cdb:", 4) == 0)
		snprintf(out, len, "%.*s", (int)strcspn(v + 4, ", \t"), v + 4);
}

/* An existing users file: its mailboxes stay (with their hashes) unless answered again. */
static void keep_users(struct wiz *w, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[W_LINE], *sp;

	if (!f)
		return;
	while (fgets(line, sizeof line, f) && w->nmb < W_MAX_MAILBOXES) {
		trim(line);
		if (line[0] == '#' || (sp = strpbrk(line, " \t")) == NULL)
			continue;
		*sp++ = '\0';
		trim(sp);
		if (strlen(line) > SASL_FIELD_MAX || check_address(line))
			continue;
		scopy(w->mb[w->nmb].addr, sizeof w->mb[w->nmb].addr, line);
		w->mb[w->nmb++].hash = xstrdup(sp);
	}
	fclose(f);
	w->nkept = w->nmb;
}

/* The relay host's login of an existing smtp_sasl_password_maps file ("HOST user:password"). */
static void keep_relay_login(struct wiz *w, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[W_LINE], *sp, *colon;

	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		trim(line);
		if ((sp = strpbrk(line, " \t")) == NULL)
			continue;
		*sp++ = '\0';
		trim(sp);
		if (strcasecmp(line, w->relayhost) != 0 || (colon = strchr(sp, ':')) == NULL)
			continue;
		*colon = '\0';
		scopy(w->relay_user, sizeof w->relay_user, sp);
		scopy(w->relay_pass, sizeof w->relay_pass, colon + 1);
		break;
	}
	OPENSSL_cleanse(line, sizeof line);
	fclose(f);
}

/* The postmaster alias of an existing aliases file. */
static void keep_postmaster(struct wiz *w, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[W_LINE];

	if (!f)
		return;
	while (fgets(line, sizeof line, f))
		if (strncasecmp(line, "postmaster:", 11) == 0) {
			trim(line + 11);
			if (check_address(line + 11) == NULL)
				scopy(w->postmaster, sizeof w->postmaster, line + 11);
			break;
		}
	fclose(f);
}

/*
 * Defaults: the current installation's values when DIR/frugal.conf loads,
 * else what this machine suggests. Returns 1 when there is one.
 */
static int load_defaults(struct wiz *w, char *host, size_t hlen, char *domains, size_t dlen)
{
	struct conf_diags d = { 0 };
	struct conf *c;
	char path[600], p2[600];
	const char *v;
	struct stat st;

	snprintf(path, sizeof path, "%s/frugal.conf", w->dir);
	if (stat(path, &st) < 0)
		return 0;
	c = conf_load(w->dir, &d);
	conf_diags_free(&d);
	if (c == NULL) {
		printf("%s does not load (frugal check says why): its values are not offered as defaults.\n", path);
		return 0;
	}
	scopy(host, hlen, conf_str(c, "myhostname", 0));
	v = conf_str(c, "virtual_mailbox_domains", 0);
	if (*v)
		scopy(domains, dlen, v);
	else
		scopy(domains, dlen, conf_str(c, "mydomain", 0));
	w->delivery = *v ? (strncmp(conf_str(c, "virtual_transport", 0), "lmtp:", 5) == 0 ? D_LMTP : D_VIRTUAL) : D_LOCAL;
	if (w->delivery == D_LMTP)
		scopy(w->lmtp, sizeof w->lmtp, conf_str(c, "virtual_transport", 0) + 5);
	scopy(w->mailbox_base, sizeof w->mailbox_base, conf_str(c, "virtual_mailbox_base", 0));
	scopy(w->queue_dir, sizeof w->queue_dir, conf_str(c, "queue_directory", 0));
	scopy(w->owner, sizeof w->owner, conf_str(c, "mail_owner", 0));
	scopy(w->vowner, sizeof w->vowner, conf_str(c, "virtual_mailbox_owner", 0));
	scopy(w->relayhost, sizeof w->relayhost, conf_str(c, "relayhost", 0));
	scopy(w->cert, sizeof w->cert, conf_str(c, "smtpd_tls_cert_file", 0));
	scopy(w->key, sizeof w->key, conf_str(c, "smtpd_tls_key_file", 0));
	if (w->cert[0] == '\0')
		snprintf(w->cert, sizeof w->cert, "none");
	scopy(w->listen, sizeof w->listen, conf_str(c, "smtpd_listen", 0));
	scopy(w->sub_listen, sizeof w->sub_listen, conf_str(c, "submission_listen", 0));
	scopy(w->smtps_listen, sizeof w->smtps_listen, conf_str(c, "smtps_listen", 0));
	w->submission = w->sub_listen[0] || w->smtps_listen[0];
	snprintf(w->pregreet, sizeof w->pregreet, "%llds", conf_time(c, "smtpd_pregreet_wait", 0));
	{
		/* the zones of the reject_rbl_client words the wizard wrote (or the admin added) */
		char copy[W_LINE], *tok, *save = NULL;
		int next = 0;

		scopy(copy, sizeof copy, conf_str(c, "smtpd_recipient_restrictions", 0));
		for (tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
			if (next && strlen(w->dnsbl) + strlen(tok) + 3 < sizeof w->dnsbl)
				snprintf(w->dnsbl + strlen(w->dnsbl), sizeof w->dnsbl - strlen(w->dnsbl), "%s%s",
				    w->dnsbl[0] ? ", " : "", tok);
			next = strcasecmp(tok, "reject_rbl_client") == 0;
			if (strcasecmp(tok, "check_greylist") == 0)
				w->greylist = 1;
		}
	}
	table_path(c, "smtpd_sasl_users", p2, sizeof p2);
	if (p2[0])
		keep_users(w, p2);
	table_path(c, "alias_maps", p2, sizeof p2);
	if (p2[0])
		keep_postmaster(w, p2);
	table_path(c, "smtp_sasl_password_maps", p2, sizeof p2);
	if (p2[0] && w->relayhost[0])
		keep_relay_login(w, p2);
	conf_unref(c);
	printf("Found %s: its values are the defaults below.\n", path);
	return 1;
}

/* ---- the questions ------------------------------------------------------ */

static void ask_mailboxes(struct wiz *w)
{
	char addr[SASL_FIELD_MAX + 1], pass[SASL_FIELD_MAX + 2], again[SASL_FIELD_MAX + 2], err[300];
	int i;

	if (w->nkept)
		printf("%d mailbox(es) kept from the current users table; a mailbox given again gets the new password.\n",
		    w->nkept);
	for (;;) {
		if (w->unattended) {
			const char *a = next_answer(w, "mailbox");
			const char *why;
			char line[W_LINE], *sp;

			if (a == NULL)
				break;
			scopy(line, sizeof line, a);
			trim(line);
			if ((sp = strpbrk(line, " \t")) == NULL) {
				fprintf(stderr, "frugal wizard: --answers mailbox = %s: write ADDRESS PASSWORD\n", line);
				abort_wizard("a bad answer");
			}
			*sp++ = '\0';
			trim(sp);
			scopy(addr, sizeof addr, line);
			scopy(pass, sizeof pass, sp);
			OPENSSL_cleanse(line, sizeof line);
			if ((why = v_mailbox_addr(w, addr)) != NULL || (why = v_password(w, pass)) != NULL || !addr[0]) {
				fprintf(stderr, "frugal wizard: --answers mailbox = %s: %s\n", addr, why ? why : "empty");
				abort_wizard("a bad answer");
			}
			printf("Mailbox address: %s\nPassword: (hidden)\n", addr);
		} else {
			ask(w, "mailbox", "Mailbox address (user@domain; empty when done)", "", v_mailbox_addr, 0,
			    addr, sizeof addr);
			if (addr[0] == '\0') {
				if (w->nmb == 0) {
					printf("  At least one mailbox is needed (postmaster's mail goes to one). Try again.\n");
					continue;
				}
				break;
			}
			for (;;) {
				ask(w, "password", "Password", NULL, v_password, 1, pass, sizeof pass);
				if (!w->tty)
					break;
				ask(w, "password", "Again", NULL, v_password, 1, again, sizeof again);
				if (strcmp(pass, again) == 0)
					break;
				printf("  The passwords differ. Try again.\n");
			}
		}
		for (i = 0; i < w->nmb; i++)
			if (strcmp(w->mb[i].addr, addr) == 0)
				break;
		if (i == W_MAX_MAILBOXES)
			abort_wizard("too many mailboxes");
		if (i == w->nmb)
			scopy(w->mb[w->nmb++].addr, sizeof w->mb[0].addr, addr);
		mem_free(w->mb[i].hash);
		if ((w->mb[i].hash = smtpd_passwd_hash(w->base, pass, err, sizeof err)) == NULL)
			abort_wizard(err);
		OPENSSL_cleanse(pass, sizeof pass);
		OPENSSL_cleanse(again, sizeof again);
	}
	if (w->nmb == 0)
		abort_wizard("no mailbox (--answers needs at least one line mailbox = ADDRESS PASSWORD)");
}

static void ask_all(struct wiz *w)
{
	char host[256] = "", domains[W_LINE] = "", def[W_LINE], v[W_LINE];
	const char *dot;
	int existing;
	uid_t euid = geteuid();
	struct passwd *pw = getpwuid(euid);

	w->delivery = D_VIRTUAL;
	existing = load_defaults(w, host, sizeof host, domains, sizeof domains);
	if (!existing) {
		detect_host(host, sizeof host);
		dot = strchr(host, '.');
		scopy(domains, sizeof domains, dot && strchr(dot + 1, '.') ? dot + 1 : host);
		snprintf(w->lmtp, sizeof w->lmtp, "unix:/run/dovecot/lmtp");
		snprintf(w->mailbox_base, sizeof w->mailbox_base, "/var/mail/vhosts");
		snprintf(w->queue_dir, sizeof w->queue_dir, "/var/spool/frugal");
		/* not root: the daemon cannot change users, so it runs as whoever runs it */
		scopy(w->owner, sizeof w->owner, euid == 0 ? "frugal" : pw ? pw->pw_name : "nobody");
		scopy(w->vowner, sizeof w->vowner, euid == 0 ? "vmail" : pw ? pw->pw_name : "nobody");
		snprintf(w->cert, sizeof w->cert, "self-signed");
		snprintf(w->listen, sizeof w->listen, "0.0.0.0:25");
		w->submission = 1;
	}
	if (w->lmtp[0] == '\0')
		snprintf(w->lmtp, sizeof w->lmtp, "unix:/run/dovecot/lmtp");
	if (w->pregreet[0] == '\0')
		snprintf(w->pregreet, sizeof w->pregreet, "0s");
	if (w->mailbox_base[0] == '\0')
		snprintf(w->mailbox_base, sizeof w->mailbox_base, "/var/mail/vhosts");

	ask(w, "hostname", "Host name of this mail server (its MX name)", host, v_host, 0, w->host, sizeof w->host);
	ask(w, "domains", "Mail domains (comma-separated)", domains[0] ? domains : w->host, v_domains, 0,
	    w->domains, sizeof w->domains);
	ask_mailboxes(w);
	scopy(def, sizeof def, w->postmaster[0] ? w->postmaster : w->mb[w->nkept < w->nmb ? w->nkept : 0].addr);
	ask(w, "postmaster", "Who gets mail for postmaster, abuse and root", def, v_alias_target, 0,
	    w->postmaster, sizeof w->postmaster);
	ask(w, "delivery", "Delivery: virtual (Maildirs under one directory), local (system users' ~/Maildir), "
	    "or lmtp (to Dovecot)", delivery_names[w->delivery], v_delivery, 0, v, sizeof v);
	w->delivery = !strcmp(v, "lmtp") ? D_LMTP : !strcmp(v, "local") ? D_LOCAL : D_VIRTUAL;
	if (w->delivery == D_LMTP)
		ask(w, "lmtp", "Dovecot's LMTP socket", w->lmtp, v_lmtp, 0, w->lmtp, sizeof w->lmtp);
	if (w->delivery == D_VIRTUAL) {
		ask(w, "mailbox_base", "Directory for the Maildirs", w->mailbox_base, v_dir, 0,
		    w->mailbox_base, sizeof w->mailbox_base);
		ask(w, "vmail_owner", "Account that owns the Maildirs", w->vowner, v_account, 0,
		    w->vowner, sizeof w->vowner);
	}
	ask(w, "queue_directory", "Queue directory", w->queue_dir, v_dir, 0, w->queue_dir, sizeof w->queue_dir);
	ask(w, "mail_owner", "Account frugal runs as", w->owner, v_account, 0, w->owner, sizeof w->owner);
	ask(w, "relayhost", "Relay host for outgoing mail ([smtp.provider.com]:587; empty: deliver directly)",
	    w->relayhost, v_relayhost, 0, w->relayhost, sizeof w->relayhost);
	if (w->relayhost[0]) {
		char user[SASL_FIELD_MAX + 1], pass[SASL_FIELD_MAX + 1];

		ask(w, "relay_user", "Login at the relay host (empty: none)", w->relay_user, v_relayhost_user_ok, 0,
		    user, sizeof user);
		if (user[0]) {
			/* the current password is kept when the login stays and the answer is empty */
			int keep = w->relay_pass[0] && strcmp(user, w->relay_user) == 0;

			ask(w, "relay_password", keep ? "Password at the relay host (empty: keep the current one)" :
			    "Password at the relay host", NULL, keep ? v_relayhost_user_ok : v_nonempty, 1, pass, sizeof pass);
			if (pass[0] || !keep)
				scopy(w->relay_pass, sizeof w->relay_pass, pass);
			OPENSSL_cleanse(pass, sizeof pass);
		}
		scopy(w->relay_user, sizeof w->relay_user, user);
	} else {
		w->relay_user[0] = '\0';
	}
	ask(w, "tls_cert", "TLS certificate file (PEM), self-signed to make one, or none", w->cert, v_cert, 0,
	    w->cert, sizeof w->cert);
	w->selfsigned = strcmp(w->cert, "self-signed") == 0;
	w->notls = strcmp(w->cert, "none") == 0;
	if (w->selfsigned) {
		snprintf(w->cert, sizeof w->cert, "%s/frugal.crt", w->dir);
		snprintf(w->key, sizeof w->key, "%s/frugal.key", w->dir);
	} else if (!w->notls) {
		ask(w, "tls_key", "Its private key file (PEM)", w->key[0] ? w->key : NULL, v_key, 0, w->key, sizeof w->key);
	}
	ask(w, "smtpd_listen", "Address and port for SMTP (port 25)", w->listen, v_listen_required, 0,
	    w->listen, sizeof w->listen);
	if (w->notls) {
		printf("Submission (587, 465) needs TLS: it stays off without a certificate.\n");
		w->submission = 0;
	} else {
		ask(w, "submission", "Submission for mail clients (ports 587 and 465, login required)",
		    w->submission ? "yes" : "no", v_yesno, 0, v, sizeof v);
		w->submission = strcmp(v, "yes") == 0;
	}
	if (w->submission) {
		ask(w, "submission_listen", "Address and port for submission with STARTTLS (empty: off)",
		    w->sub_listen[0] ? w->sub_listen : "0.0.0.0:587", v_listen, 0, w->sub_listen, sizeof w->sub_listen);
		ask(w, "smtps_listen", "Address and port for submission with implicit TLS (empty: off)",
		    w->smtps_listen[0] ? w->smtps_listen : "0.0.0.0:465", v_listen, 0, w->smtps_listen,
		    sizeof w->smtps_listen);
	} else {
		w->sub_listen[0] = w->smtps_listen[0] = '\0';
	}
	/* the hardening this version has */
	ask(w, "pregreet_wait", "Hardening: seconds port 25 waits before its greeting; clients that talk first "
	    "(spam bots) are dropped; 0: off", w->pregreet, v_pregreet, 0, w->pregreet, sizeof w->pregreet);
	ask(w, "dnsbl", "Hardening: DNS blocklists that refuse clients on port 25, comma-separated "
	    "(e.g. zen.spamhaus.org; never this host or logged-in users; empty: none)", w->dnsbl, v_dnsbl, 0,
	    w->dnsbl, sizeof w->dnsbl);
	ask(w, "greylist", "Hardening: greylisting on port 25: mail from a new client network, sender and "
	    "recipient is deferred for 5 minutes; real servers retry, most bots do not (never this host or "
	    "logged-in users)", w->greylist ? "yes" : "no", v_yesno, 0, v, sizeof v);
	w->greylist = strcmp(v, "yes") == 0;
	/* one answer for every domain: a key each (kept when the month's key exists), its TXT record below */
	ask(w, "dkim", "DKIM: sign outgoing mail with a key per domain (frugal dkim keygen)", "yes", v_yesno, 0,
	    v, sizeof v);
	w->dkim = strcmp(v, "yes") == 0;
}

/* ---- the files ---------------------------------------------------------- */

struct out {
	char *text;               /* open_memstream's (free()) */
	size_t len;
	FILE *f;
};

static FILE *out_open(struct out *o)
{
	memset(o, 0, sizeof *o);
	if ((o->f = open_memstream(&o->text, &o->len)) == NULL)
		abort_wizard("out of memory");
	return o->f;
}

static void out_close(struct out *o)
{
	if (fclose(o->f) != 0)
		abort_wizard("out of memory");
	o->f = NULL;
}

/* Each domain of the list in turn: fn(f, domain, arg). */
static void each_domain(const struct wiz *w, FILE *f, void (*fn)(FILE *, const char *, const void *), const void *arg)
{
	char copy[W_LINE], *tok, *save = NULL;

	scopy(copy, sizeof copy, w->domains);
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
		fn(f, tok, arg);
}

static void virtual_aliases(FILE *f, const char *dom, const void *arg)
{
	const struct wiz *w = arg;

	fprintf(f, "postmaster@%s %s\nabuse@%s %s\n", dom, w->postmaster, dom, w->postmaster);
}

static void first_domain(FILE *f, const char *dom, const void *arg)
{
	char *out = (char *)arg;

	if (out[0] == '\0')
		scopy(out, 254, dom);
}

/*
 * frugal.conf. Only answers go into it (no date, no detected value that
 * was not asked): the same answers give the same bytes, which is what
 * --answers promises.
 */
static void make_conf(const struct wiz *w, struct out *o)
{
	FILE *f = out_open(o);
	char mydomain[256] = "";
	const char *d = w->dir;

	each_domain(w, NULL, first_domain, mydomain);
	fprintf(f, "# %s/frugal.conf, written by `frugal wizard` (run it again to change the answers;\n"
	    "# the previous file is kept as frugal.conf.bak-TIMESTAMP). Postfix main.cf syntax;\n"
	    "# `frugal config -n` lists what is set here, `frugal check` validates it.\n\n", d);
	fprintf(f, "myhostname = %s\nmydomain = %s\n", w->host, mydomain);
	if (w->delivery == D_LOCAL)
		fprintf(f, "mydestination = $myhostname, localhost, %s\n", w->domains);
	else
		fprintf(f, "mydestination = $myhostname, localhost\n");
	fprintf(f, "\n# Listeners (empty: off).\nsmtpd_listen = %s\nsubmission_listen = %s\nsmtps_listen = %s\n",
	    w->listen, w->sub_listen, w->smtps_listen);
	if (strcmp(w->pregreet, "0s") != 0)
		fprintf(f, "# Clients that talk before the greeting are dropped (postscreen's pregreet test).\n"
		    "smtpd_pregreet_wait = %s\n", w->pregreet);
	fprintf(f, "\n# Never an open relay: only this host itself relays without a login;\n"
	    "# everyone else may send only to the domains above, or must authenticate.\n"
	    "mynetworks = 127.0.0.0/8 [::1]/128\n");
	if (w->dnsbl[0] || w->greylist) {
		char copy[sizeof w->dnsbl], *tok, *save = NULL;

		/* the default list with the blocklists after the relay check, before recipients are judged */
		if (w->dnsbl[0])
			fprintf(f, "# Clients listed in these DNS blocklists are refused (this host and logged-in users\n"
			    "# are permitted first); before reject_unlisted_recipient, so a listed bot learns no address.\n");
		/* greylisting last: only mail that would be accepted is deferred (postgrey's DEFER_IF_PERMIT) */
		if (w->greylist)
			fprintf(f, "# Greylisting last: mail every other check accepts is deferred once per new client\n"
			    "# network, sender and recipient (greylist_delay, DESIGN.md \"Greylisting\").\n");
		fprintf(f, "smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,\n"
		    "    reject_unauth_destination");
		scopy(copy, sizeof copy, w->dnsbl);
		for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
			fprintf(f, ",\n    reject_rbl_client %s", tok);
		fprintf(f, ",\n    reject_unlisted_recipient%s\n", w->greylist ? ",\n    check_greylist" : "");
	}
	fprintf(f, "\nqueue_directory = %s\nmail_owner = %s\n", w->queue_dir, w->owner);
	fprintf(f, "\n# postmaster, abuse and root (compile with `frugal map -a %s/aliases`)\n"
	    "alias_maps = cdb:%s/aliases\n", d, d);
	if (w->delivery == D_LOCAL) {
		fprintf(f, "# Mail for the domains goes to system users' ~/Maildir/.\nhome_mailbox = Maildir/\n");
	} else {
		fprintf(f, "\n# Mailboxes: %s/vmailbox (compile with `frugal map`), aliases: %s/virtual\n", d, d);
		fprintf(f, "virtual_mailbox_domains = %s\nvirtual_mailbox_maps = cdb:%s/vmailbox\n"
		    "virtual_alias_maps = cdb:%s/virtual\n", w->domains, d, d);
		if (w->delivery == D_LMTP)
			fprintf(f, "# Dovecot stores the mail.\nvirtual_transport = lmtp:%s\n", w->lmtp);
		else
			fprintf(f, "virtual_mailbox_base = %s\nvirtual_mailbox_owner = %s\n", w->mailbox_base, w->vowner);
	}
	fprintf(f, "\n# Logins for submission (and AUTH): `frugal passwd ADDRESS` changes a password.\n"
	    "smtpd_sasl_users = cdb:%s/users\n", d);
	if (!w->notls)
		fprintf(f, "\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\nsmtpd_tls_security_level = may\n",
		    w->cert, w->key);
	if (w->relayhost[0]) {
		fprintf(f, "\n# Outgoing mail goes through the relay host.\nrelayhost = %s\n", w->relayhost);
		if (w->relay_user[0])
			/* PLAIN and LOGIN only over TLS, as Postfix's SASL_README relayhost set-up says */
			fprintf(f, "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = cdb:%s/relay_passwd\n"
			    "smtp_sasl_tls_security_options = noanonymous\nsmtp_tls_security_level = encrypt\n", d);
	}
	if (w->dkim)
		fprintf(f, "\n# DKIM: mail from this host, logged-in users and sendmail is signed when its From:\n"
		    "# domain has a key here (`frugal dkim keygen DOMAIN` makes one; publish its TXT record).\n"
		    "dkim_key_directory = %s/dkim\ndkim_signing_maps = cdb:%s/dkim_keys\n", d, d);
	out_close(o);
}

static void make_tables(const struct wiz *w, struct out *aliases, struct out *users, struct out *vmailbox,
    struct out *virt, struct out *relay)
{
	FILE *f;
	int i;

	f = out_open(aliases);
	fprintf(f, "# written by frugal wizard (aliases(5) syntax; frugal map -a compiles it)\n"
	    "postmaster: %s\nabuse: %s\nroot: %s\nmailer-daemon: postmaster\n", w->postmaster, w->postmaster,
	    w->postmaster);
	out_close(aliases);
	f = out_open(users);
	for (i = 0; i < w->nmb; i++)
		fprintf(f, "%s %s\n", w->mb[i].addr, w->mb[i].hash);
	out_close(users);
	if (w->delivery != D_LOCAL) {
		f = out_open(vmailbox);
		fprintf(f, "# written by frugal wizard: ADDRESS DOMAIN/USER/ (a Maildir under virtual_mailbox_base)\n");
		for (i = 0; i < w->nmb; i++) {
			const char *at = strrchr(w->mb[i].addr, '@');

			if (in_domains(w, at + 1))
				fprintf(f, "%s %s/%.*s/\n", w->mb[i].addr, at + 1, (int)(at - w->mb[i].addr), w->mb[i].addr);
		}
		out_close(vmailbox);
		f = out_open(virt);
		fprintf(f, "# written by frugal wizard: ADDRESS TARGET\n");
		each_domain(w, f, virtual_aliases, w);
		out_close(virt);
	}
	if (w->relay_user[0]) {
		f = out_open(relay);
		fprintf(f, "%s %s:%s\n", w->relayhost, w->relay_user, w->relay_pass);
		out_close(relay);
	}
}

/* ---- writing ------------------------------------------------------------ */

static char stamp[32];   /* one TIMESTAMP for every backup of this run */

static void sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

/* Is the file at path exactly these bytes? */
static int same_content(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "r");
	char buf[4096];
	size_t n, off = 0;
	int same = 1;

	if (!f)
		return 0;
	while (same && (n = fread(buf, 1, sizeof buf, f)) > 0) {
		if (off + n > len || memcmp(buf, text + off, n) != 0)
			same = 0;
		off += n;
	}
	if (ferror(f) || off != len)
		same = 0;
	fclose(f);
	return same;
}

/*
 * DIR/name := text, whole or not at all: a temporary file of our own,
 * moded and owned before a byte is in it, synced, then renamed. A
 * different file already there is kept first as name.bak-TIMESTAMP (a hard
 * link: the old bytes, untouched). 0, or -1 with err.
 */
static int write_file(const char *dir, const char *name, const char *text, size_t len, mode_t mode, gid_t gid,
    char *err, size_t errlen)
{
	char path[700], tmp[720], bak[760];
	int fd;
	size_t off = 0;
	ssize_t n;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (same_content(path, text, len))
		return 0;
	snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	(void)fchmod(fd, mode);
	if (gid != (gid_t)-1 && fchown(fd, 0, gid) < 0) {
		snprintf(err, errlen, "chown %s: %s", tmp, strerror(errno));
		goto fail;
	}
	while (off < len) {
		if ((n = write(fd, text + off, len - off)) < 0) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
			goto fail;
		}
		off += (size_t)n;
	}
	if (fsync(fd) < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (access(path, F_OK) == 0) {
		snprintf(bak, sizeof bak, "%s.bak-%s", path, stamp);
		if (link(path, bak) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot keep %.500s as %.560s: %s", path, bak, strerror(errno));
			goto fail;
		}
		printf("kept the previous %s as %s\n", path, bak);
	}
	if (rename(tmp, path) < 0) {
		snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
		goto fail;
	}
	close(fd);
	sync_dir(dir);
	printf("wrote %s\n", path);
	return 0;
fail:
	close(fd);
	unlink(tmp);
	return -1;
}

/* useradd --system NAME, when NAME is missing and we are root (PRODUCT.md: the frugal and vmail accounts). */
static int make_account(const char *name, const char *home, char *err, size_t errlen)
{
	char *argv[] = { "useradd", "--system", "--user-group", "--no-create-home", "--home-dir", (char *)home,
		"--shell", "/usr/sbin/nologin", (char *)name, NULL };
	pid_t pid;
	int st, e;

	if (getpwnam(name) != NULL)
		return 0;
	if (geteuid() != 0) {
		snprintf(err, errlen, "account %s is missing and only root can create it", name);
		return -1;
	}
	fflush(stdout);
	if ((e = posix_spawnp(&pid, "useradd", NULL, NULL, argv, environ)) != 0) {
		snprintf(err, errlen, "useradd %s: %s", name, strerror(e));
		return -1;
	}
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || getpwnam(name) == NULL) {
		snprintf(err, errlen, "useradd --system %s failed", name);
		return -1;
	}
	printf("created the system account %s\n", name);
	return 0;
}

/* mkdir -p, then (as root) owned by name with mode */
static int make_dir(const char *path, const char *owner, mode_t mode, char *err, size_t errlen)
{
	struct passwd *pw = owner ? getpwnam(owner) : NULL;
	struct stat st;
	int existed = stat(path, &st) == 0;

	if (file_mkdir_p(path, 0755) < 0) {
		snprintf(err, errlen, "mkdir %s: %s", path, strerror(errno));
		return -1;
	}
	if (!existed)
		(void)chmod(path, mode);
	if (geteuid() == 0 && pw && chown(path, pw->pw_uid, pw->pw_gid) < 0) {
		snprintf(err, errlen, "chown %s %s: %s", owner, path, strerror(errno));
		return -1;
	}
	if (!existed)
		printf("created %s (%s, mode %03o)\n", path, owner ? owner : "", (unsigned)mode);
	return 0;
}

/* ---- the summary and what comes next ----------------------------------- */

static void summary(const struct wiz *w)
{
	int i;

	printf("\nSummary:\n  host name    %s\n  mail domains %s\n  mailboxes   ", w->host, w->domains);
	for (i = 0; i < w->nmb; i++)
		printf(" %s%s", w->mb[i].addr, i < w->nkept ? " (kept)" : "");
	printf("\n  postmaster, abuse, root -> %s\n", w->postmaster);
	if (w->delivery == D_VIRTUAL)
		printf("  delivery     Maildirs under %s, owned by %s\n", w->mailbox_base, w->vowner);
	else if (w->delivery == D_LMTP)
		printf("  delivery     LMTP to Dovecot at %s\n", w->lmtp);
	else
		printf("  delivery     system users' ~/Maildir/\n");
	printf("  queue        %s; frugal runs as %s\n", w->queue_dir, w->owner);
	printf("  outgoing     %s%s\n", w->relayhost[0] ? "through " : "directly to each domain's MX",
	    w->relayhost[0] ? w->relayhost : "");
	if (w->relay_user[0])
		printf("               logging in as %s\n", w->relay_user);
	printf("  TLS          %s\n", w->notls ? "none" : w->selfsigned ? "a new self-signed certificate" : w->cert);
	printf("  listening    SMTP %s%s%s%s%s\n", w->listen, w->sub_listen[0] ? ", submission " : "", w->sub_listen,
	    w->smtps_listen[0] ? ", submissions (TLS) " : "", w->smtps_listen);
	if (strcmp(w->pregreet, "0s") != 0)
		printf("  pregreet     port 25 waits %s before greeting; clients that talk first are dropped\n", w->pregreet);
	printf("  relaying     only for this host and for logged-in users (never an open relay)\n");
	if (w->dnsbl[0])
		printf("  DNSBL        clients listed in %s are refused\n", w->dnsbl);
	if (w->greylist)
		printf("  greylisting  new senders on port 25 are deferred for 5 minutes, once\n");
	if (w->dkim)
		printf("  DKIM         outgoing mail signed, a key per domain in %s/dkim\n", w->dir);
	printf("  files        %s/frugal.conf and its tables, compiled\n\n", w->dir);
}

static void port_of(const char *listen, char *out, size_t len)
{
	const char *c = strrchr(listen, ':');

	scopy(out, len, c ? c + 1 : "");
}

static void dns_lines(FILE *f, const char *dom, const void *arg)
{
	const struct wiz *w = arg;

	fprintf(f, "    %s.  MX  10 %s.\n", dom, w->host);
	fprintf(f, "    %s.  TXT \"v=spf1 mx -all\"\n", dom);
	fprintf(f, "    _dmarc.%s.  TXT \"v=DMARC1; p=none; rua=mailto:%s\"\n", dom, w->postmaster);
}

static void next_steps(const struct wiz *w)
{
	char p[3][16];

	port_of(w->listen, p[0], sizeof p[0]);
	port_of(w->sub_listen, p[1], sizeof p[1]);
	port_of(w->smtps_listen, p[2], sizeof p[2]);
	printf("\nWhat to do next:\n");
	printf("  1. DNS records to publish (A/AAAA of %s: this server's public addresses):\n", w->host);
	each_domain(w, stdout, dns_lines, w);
	if (w->dkim_dns)
		fwrite(w->dkim_dns, 1, w->dkim_dns_len, stdout);
	printf("  2. Ask your provider for the reverse DNS (PTR) of this server's addresses: %s.\n", w->host);
	printf("  3. Open TCP port %s%s%s%s%s in the firewall (and check your provider does not block 25).\n",
	    p[0], p[1][0] ? ", " : "", p[1], p[2][0] ? ", " : "", p[2]);
	/* with make install's service files for this directory, the way it is meant to run (README) */
	if (strcmp(w->dir, CONF_DEFAULT_DIR) == 0 && access("/lib/systemd/system/frugal.service", F_OK) == 0)
		printf("  4. Start frugal: systemctl enable --now frugal   (then frugal limits shows its budget)\n");
	else if (strcmp(w->dir, CONF_DEFAULT_DIR) == 0 && access("/etc/init.d/frugal", F_OK) == 0)
		printf("  4. Start frugal: update-rc.d frugal defaults; /etc/init.d/frugal start   (then frugal limits)\n");
	else
		printf("  4. Start frugal: frugal serve -c %s   (then frugal limits -c %s shows its budget)\n", w->dir, w->dir);
	printf("  5. Test it:\n     swaks --server %s --port %s --to %s\n", w->host, p[0], w->mb[0].addr);
	/* --from: swaks' default sender (user@this host) is not the login's (smtpd_sender_login_maps) */
	if (w->sub_listen[0])
		printf("     swaks --server %s --port %s --tls --auth-user %s --from %s --to someone@example.org\n",
		    w->host, p[1], w->mb[0].addr, w->mb[0].addr);
}

/*
 * DKIM: a key per domain under DIR/dkim (this month's selector; an existing
 * one is kept, its record said again), the table DIR/dkim_keys compiled,
 * and the TXT records kept for the next steps. 0 or -1 with err.
 */
static int make_dkim(struct wiz *w, gid_t gid, char *err, size_t errlen)
{
	char copy[W_LINE], *tok, *save = NULL, kdir[600], sel[16], path[1024], txt[2048], e[1200];
	struct out table, dns;
	time_t now = time(NULL);
	int rc = -1;

	snprintf(kdir, sizeof kdir, "%s/dkim", w->dir);
	strftime(sel, sizeof sel, "%Y%m", gmtime(&now));
	out_open(&table);
	out_open(&dns);
	fprintf(table.f, "# written by frugal wizard: DOMAIN SELECTOR:KEYFILE (dkim_signing_maps; frugal map compiles it)\n");
	scopy(copy, sizeof copy, w->domains);
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		if (dkim_keygen(kdir, tok, sel, 0, gid, path, sizeof path, txt, sizeof txt, e, sizeof e) < 0) {
			snprintf(err, errlen, "DKIM key for %.200s: %.900s", tok, e);
			out_close(&table);
			out_close(&dns);
			goto out;
		}
		fprintf(table.f, "%s %s:%s\n", tok, sel, path);
		fprintf(dns.f, "    %s._domainkey.%s.  TXT %s\n", sel, tok, txt);
	}
	out_close(&table);
	out_close(&dns);
	free(w->dkim_dns);
	w->dkim_dns = dns.text;
	w->dkim_dns_len = dns.len;
	dns.text = NULL;
	if (write_file(w->dir, "dkim_keys", table.text, table.len, 0644, (gid_t)-1, err, errlen) < 0)
		goto out;
	snprintf(path, sizeof path, "%s/dkim_keys", w->dir);
	if (map_compile(path, 0, err, errlen) < 0)
		goto out;
	rc = 0;
out:
	free(table.text);
	free(dns.text);
	return rc;
}

/* ---- the command --------------------------------------------------------- */

static int load_answers(struct wiz *w, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[W_LINE], *eq;
	int lineno = 0;
	static const char *const keys[] = { "hostname", "domains", "mailbox", "postmaster", "delivery", "lmtp",
		"mailbox_base", "vmail_owner", "queue_directory", "mail_owner", "relayhost", "relay_user",
		"relay_password", "tls_cert", "tls_key", "smtpd_listen", "submission", "submission_listen",
		"smtps_listen", "pregreet_wait", "dnsbl", "greylist", "dkim", "confirm", NULL };
	int k;

	if (!f) {
		fprintf(stderr, "frugal wizard: --answers %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof line, f)) {
		lineno++;
		trim(line);
		if (line[0] == '#' || line[0] == '\0')
			continue;
		if ((eq = strchr(line, '=')) == NULL) {
			fprintf(stderr, "frugal wizard: %s:%d: not key = value\n", path, lineno);
			goto fail;
		}
		*eq++ = '\0';
		trim(line);
		trim(eq);
		for (k = 0; keys[k] && strcmp(keys[k], line); k++)
			;
		if (!keys[k]) {
			fprintf(stderr, "frugal wizard: %s:%d: unknown question %s\n", path, lineno, line);
			goto fail;
		}
		if (w->nans == W_MAX_ANSWERS) {
			fprintf(stderr, "frugal wizard: %s:%d: too many answers\n", path, lineno);
			goto fail;
		}
		scopy(w->ans[w->nans].key, sizeof w->ans[0].key, line);
		w->ans[w->nans++].value = xstrdup(eq);
	}
	fclose(f);
	OPENSSL_cleanse(line, sizeof line);
	return 0;
fail:
	fclose(f);
	return -1;
}

/* After the confirmation: everything, in an order where a failure leaves a working old set-up. */
static int write_all(struct wiz *w)
{
	struct out conf, aliases, users, vmailbox, virt, relay;
	struct passwd *pw;
	gid_t secret_gid = (gid_t)-1;
	char err[1200], path[700], *cert = NULL, *key = NULL;
	char *check_argv[] = { "check", "-c", w->dir, NULL };
	sigset_t block, old;
	time_t now = time(NULL);
	int rc = 1;

	/* from here on an interrupt would leave a half-done set-up: let the writes finish */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGQUIT);
	sigprocmask(SIG_BLOCK, &block, &old);
	strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", gmtime(&now));
	memset(&vmailbox, 0, sizeof vmailbox);
	memset(&virt, 0, sizeof virt);
	memset(&relay, 0, sizeof relay);
	make_conf(w, &conf);
	make_tables(w, &aliases, &users, &vmailbox, &virt, &relay);

	if (make_account(w->owner, w->queue_dir, err, sizeof err) < 0 ||
	    (w->delivery == D_VIRTUAL && make_account(w->vowner, w->mailbox_base, err, sizeof err) < 0))
		goto fail;
	/* the daemon reads the secrets as mail_owner: root's, group mail_owner's, 0640 */
	if (geteuid() == 0 && (pw = getpwnam(w->owner)) != NULL && pw->pw_uid != 0)
		secret_gid = pw->pw_gid;
	if (file_mkdir_p(w->dir, 0755) < 0) {
		snprintf(err, sizeof err, "mkdir %s: %s", w->dir, strerror(errno));
		goto fail;
	}
	if (w->selfsigned) {
		if (tls_selfsigned_pem(w->host, &cert, &key, err, sizeof err) < 0 ||
		    write_file(w->dir, "frugal.key", key, strlen(key), 0600, (gid_t)-1, err, sizeof err) < 0 ||
		    write_file(w->dir, "frugal.crt", cert, strlen(cert), 0644, (gid_t)-1, err, sizeof err) < 0)
			goto fail;
	}
	/* tables first, compiled; frugal.conf that names them last */
	if (w->dkim && make_dkim(w, secret_gid, err, sizeof err) < 0)
		goto fail;
	if (write_file(w->dir, "aliases", aliases.text, aliases.len, 0644, (gid_t)-1, err, sizeof err) < 0 ||
	    write_file(w->dir, "users", users.text, users.len, secret_gid == (gid_t)-1 ? 0600 : 0640, secret_gid,
	        err, sizeof err) < 0)
		goto fail;
	snprintf(path, sizeof path, "%s/aliases", w->dir);
	if (map_compile(path, 1, err, sizeof err) < 0)
		goto fail;
	snprintf(path, sizeof path, "%s/users", w->dir);
	if (map_compile(path, 0, err, sizeof err) < 0)
		goto fail;
	if (secret_gid != (gid_t)-1) {
		snprintf(path, sizeof path, "%s/users.cdb", w->dir);
		(void)!chown(path, 0, secret_gid);
	}
	if (vmailbox.f == NULL && vmailbox.text) {
		if (write_file(w->dir, "vmailbox", vmailbox.text, vmailbox.len, 0644, (gid_t)-1, err, sizeof err) < 0 ||
		    write_file(w->dir, "virtual", virt.text, virt.len, 0644, (gid_t)-1, err, sizeof err) < 0)
			goto fail;
		snprintf(path, sizeof path, "%s/vmailbox", w->dir);
		if (map_compile(path, 0, err, sizeof err) < 0)
			goto fail;
		snprintf(path, sizeof path, "%s/virtual", w->dir);
		if (map_compile(path, 0, err, sizeof err) < 0)
			goto fail;
	}
	if (relay.text) {
		if (write_file(w->dir, "relay_passwd", relay.text, relay.len, secret_gid == (gid_t)-1 ? 0600 : 0640,
		        secret_gid, err, sizeof err) < 0)
			goto fail;
		snprintf(path, sizeof path, "%s/relay_passwd", w->dir);
		if (map_compile(path, 0, err, sizeof err) < 0)
			goto fail;
		if (secret_gid != (gid_t)-1) {
			snprintf(path, sizeof path, "%s/relay_passwd.cdb", w->dir);
			(void)!chown(path, 0, secret_gid);
		}
	}
	if (make_dir(w->queue_dir, w->owner, 0750, err, sizeof err) < 0 ||
	    (w->delivery == D_VIRTUAL && make_dir(w->mailbox_base, w->vowner, 0750, err, sizeof err) < 0))
		goto fail;
	if (write_file(w->dir, "frugal.conf", conf.text, conf.len, 0644, (gid_t)-1, err, sizeof err) < 0)
		goto fail;
	/* written: an interrupt from here on must not claim "nothing written" */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	sigprocmask(SIG_SETMASK, &old, NULL);
	printf("\nRunning frugal check -c %s:\n", w->dir);
	fflush(stdout);
	if (smtpd_cmd_check(3, check_argv) != 0) {
		printf("frugal check found the problems above: fix them, then run frugal check -c %s.\n", w->dir);
		rc = 1;
	} else {
		printf("frugal check: no problems.\n");
		rc = 0;
	}
	next_steps(w);
	goto done;
fail:
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	sigprocmask(SIG_SETMASK, &old, NULL);
	fprintf(stderr, "frugal wizard: %s\n", err);
	fprintf(stderr, "frugal wizard: stopped; what was written above is complete, the rest is as it was\n");
done:
	free(conf.text);
	free(aliases.text);
	free(users.text);
	free(vmailbox.text);
	free(virt.text);
	if (relay.text)
		OPENSSL_cleanse(relay.text, relay.len);
	free(relay.text);
	if (key)
		OPENSSL_cleanse(key, strlen(key));
	mem_free(key);
	mem_free(cert);
	return rc;
}

int smtpd_cmd_wizard(int argc, char **argv)
{
	static struct wiz w;   /* large: off the stack */
	struct conf_diags d = { 0 };
	const char *dir = NULL, *answers = NULL, *env;
	char v[16];
	int i, rc;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			dir = argv[++i];
		else if (strcmp(argv[i], "--answers") == 0 && i + 1 < argc)
			answers = argv[++i];
		else if (strncmp(argv[i], "--answers=", 10) == 0)
			answers = argv[i] + 10;
		else {
			fprintf(stderr, "usage: frugal wizard [-c DIR] [--answers FILE]\n");
			return 1;
		}
	}
	memset(&w, 0, sizeof w);
	if (!dir)
		dir = (env = getenv("FRUGAL_CONFIG_DIR")) && *env ? env : CONF_DEFAULT_DIR;
	if (dir[0] != '/' && (realpath(".", w.dir) == NULL || strlen(w.dir) + strlen(dir) + 2 > sizeof w.dir))
		abort_wizard("cannot name the current directory");
	if (dir[0] != '/')
		snprintf(w.dir + strlen(w.dir), sizeof w.dir - strlen(w.dir), "/%s", dir);
	else
		scopy(w.dir, sizeof w.dir, dir);
	while (strlen(w.dir) > 1 && w.dir[strlen(w.dir) - 1] == '/')
		w.dir[strlen(w.dir) - 1] = '\0';
	if (check_abs_path(w.dir))
		abort_wizard("the configuration directory's path has characters a table name cannot carry");
	if (answers && load_answers(&w, answers) < 0)
		return 1;
	w.unattended = answers != NULL;
	w.tty = isatty(0);
	signal(SIGINT, on_interrupt);
	signal(SIGTERM, on_interrupt);
	signal(SIGHUP, on_interrupt);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((w.base = conf_load_text("", "(wizard)", &d)) == NULL)
		abort_wizard("the built-in defaults do not load");
	conf_diags_free(&d);

	printf("frugal wizard: sets up %s/frugal.conf. Nothing is written before you confirm; Ctrl-C stops.\n\n",
	    w.dir);
	{
		char host[256];

		detect_host(host, sizeof host);
		printf("This machine is called %s.\n", host[0] ? host : "(no host name set)");
	}
	limits_describe(w.base, stdout);
	printf("\n");
	ask_all(&w);
	summary(&w);
	ask(&w, "confirm", "Write this configuration", "yes", v_yesno, 0, v, sizeof v);
	if (strcmp(v, "yes") != 0) {
		printf("Nothing written.\n");
		rc = 1;
	} else {
		rc = write_all(&w);
	}
	for (i = 0; i < w.nmb; i++)
		mem_free(w.mb[i].hash);
	for (i = 0; i < w.nans; i++) {
		OPENSSL_cleanse(w.ans[i].value, strlen(w.ans[i].value));
		mem_free(w.ans[i].value);
	}
	OPENSSL_cleanse(w.relay_pass, sizeof w.relay_pass);
	free(w.dkim_dns);
	conf_unref(w.base);
	return rc;
}
