/*
 * queue/smtp_sasl.h: the SMTP client's AUTH (RFC 4954) to a relayhost, as
 * Postfix's smtp_sasl_*: the credentials from smtp_sasl_password_maps, the
 * mechanism chosen from the server's EHLO AUTH list, the command lines and
 * the 334 continuations. Pure except smtp_sasl_lookup (a table lookup): no
 * socket, no session; the SMTP client sends the lines and feeds back the
 * replies. Fuzzed by tests/fuzz/fuzz_smtp_sasl.c.
 *
 * Postfix's rules, followed:
 * - Credentials: smtp_sasl_password_maps is looked up with the server's
 *   host name first, then the next hop exactly as written in relayhost or
 *   the transport ("[mail.example.com]:587", "example.com"); the value is
 *   "user:password", split at the first ':'.
 * - No AUTH keyword in the EHLO reply: the mail goes without AUTH.
 * - Mechanisms: PLAIN (with its initial response) is preferred, else
 *   LOGIN. Both send the password as is, so smtp_sasl_security_options
 *   (default "noplaintext, noanonymous") and, on a TLS session,
 *   smtp_sasl_tls_security_options (default $smtp_sasl_security_options)
 *   decide: noplaintext (and noactive, nodictionary, mutual_auth, which
 *   PLAIN and LOGIN do not meet either) refuse them. With Postfix's
 *   defaults no mechanism frugal has is allowed, exactly as with Postfix:
 *   a relayhost set-up says `smtp_sasl_tls_security_options = noanonymous`
 *   (Postfix's SASL_README). No acceptable mechanism: "SASL
 *   authentication failed; cannot authenticate to server H[A]: no
 *   mechanism available", 4.7.0, the server counts as failed (next host,
 *   else defer).
 * - A refused AUTH (4xx or 5xx) defers: "SASL authentication failed;
 *   server H[A] said: REPLY", 4.7.0 (smtp_sasl_auth_soft_bounce = yes).
 */
#ifndef FRUGAL_QUEUE_SMTP_SASL_H
#define FRUGAL_QUEUE_SMTP_SASL_H

#include <stddef.h>

struct map_list;

#define SMTP_SASL_FIELD_MAX 255                /* user or password: longer is refused */
#define SMTP_SASL_LINE_MAX  (4 * ((2 * SMTP_SASL_FIELD_MAX + 2 + 2) / 3) + 32)   /* longest line made */

/* smtp_sasl_security_options words (Cyrus SASL's names) */
enum {
	SMTP_SASL_NOPLAINTEXT = 1, SMTP_SASL_NOACTIVE = 2, SMTP_SASL_NODICTIONARY = 4,
	SMTP_SASL_NOANONYMOUS = 8, SMTP_SASL_MUTUAL_AUTH = 16,
};
/* "noplaintext, noanonymous" (commas or white space; empty is none) into *opts. 0, or -1 with an unknown word. */
int smtp_sasl_options_parse(const char *s, unsigned *opts);

enum smtp_sasl_mech { SMTP_SASL_MECH_NONE, SMTP_SASL_MECH_PLAIN, SMTP_SASL_MECH_LOGIN };

/*
 * The mechanism to use from the EHLO AUTH keyword's value ("LOGIN PLAIN
 * CRAM-MD5"; case-insensitive; the old "AUTH=LOGIN PLAIN" form is the same
 * list) under the options in force (the TLS set on a TLS session).
 * SMTP_SASL_MECH_NONE when nothing fits.
 */
int smtp_sasl_choose(const char *mechs, size_t len, unsigned opts);

enum smtp_sasl_step { SS_START, SS_WAIT_AUTH, SS_LOGIN_USER, SS_LOGIN_PASS, SS_DONE, SS_FAILED };

struct smtp_sasl {
	int mech;                               /* enum smtp_sasl_mech */
	int step;                               /* enum smtp_sasl_step */
	char user[SMTP_SASL_FIELD_MAX + 1];
	char pass[SMTP_SASL_FIELD_MAX + 1];
};

/*
 * Take the credentials and the mechanism; the first command line ("AUTH
 * PLAIN <base64 NUL user NUL pass>\r\n" or "AUTH LOGIN\r\n") into line
 * (SMTP_SASL_LINE_MAX). 0, or -1 (fields empty, too long, or holding NUL,
 * CR or LF; no mechanism).
 */
int smtp_sasl_start(struct smtp_sasl *s, int mech, const char *user, const char *pass, char *line, size_t linelen);

enum { SMTP_SASL_SEND = 1, SMTP_SASL_OK = 0, SMTP_SASL_REFUSED = -1, SMTP_SASL_PROTOCOL = -2 };
/*
 * The server's reply to the last line sent: its code and the text of its
 * last line (after "334 "). SMTP_SASL_SEND: send `line` next (LOGIN's
 * user, then password, each base64, answering 334 whatever its prompt
 * says, as Cyrus does); SMTP_SASL_OK on 235; SMTP_SASL_REFUSED on a 4xx or
 * 5xx (defer, as above); SMTP_SASL_PROTOCOL on anything else (a 334 where
 * none is due, a code out of range): the connection is not trusted further.
 */
int smtp_sasl_reply(struct smtp_sasl *s, int code, const char *text, size_t textlen, char *line, size_t linelen);

/* Forget the password (zeroed). */
void smtp_sasl_clear(struct smtp_sasl *s);

/*
 * The credentials for a server: smtp_sasl_password_maps looked up with
 * `host` (the server's name) and then `nexthop` (as written), Postfix's
 * order. 1 found (user and pass, SMTP_SASL_FIELD_MAX + 1 bytes each), 0
 * none (no AUTH: the mail goes without), -1 a table error or a value that
 * is not "user:password" (defer).
 */
int smtp_sasl_lookup(struct map_list *maps, const char *host, const char *nexthop, char *user, char *pass);
/* The value's split: 0, or -1 when it has no ':' or a field is not usable. */
int smtp_sasl_split(const char *value, char *user, char *pass);

#endif
