/*
 * smtpd/command.h: the SMTP command parser. Pure functions over a line
 * (no session, no I/O), so they are unit-tested and fuzzed directly
 * (tests/fuzz/fuzz_smtpd_command.c). The session (smtpd/session.c) turns
 * the typed result into state changes and replies.
 */
#ifndef FRUGAL_SMTPD_COMMAND_H
#define FRUGAL_SMTPD_COMMAND_H

#include <stddef.h>

enum smtpd_verb {
	CMD_UNKNOWN = 0,
	CMD_HELO, CMD_EHLO, CMD_MAIL, CMD_RCPT, CMD_DATA, CMD_RSET, CMD_NOOP,
	CMD_QUIT, CMD_VRFY, CMD_EXPN, CMD_HELP, CMD_STARTTLS, CMD_AUTH, CMD_BDAT,
	CMD_ETRN,
};

/* Longest command line we accept, CRLF included (RFC 5321 4.5.3.1.4: 512),
 * plus RFC 1869/6531 room for MAIL/RCPT parameters. */
#define SMTPD_CMD_LINE_MAX   512
#define SMTPD_PATH_LINE_MAX  1024
#define SMTPD_ADDR_MAX       320  /* 64 local part + @ + 255 domain */

struct smtpd_cmd {
	enum smtpd_verb verb;
	const char *arg;     /* points into the caller's line: text after the verb and one space */
	size_t arglen;
};

/* Split `line` (no CRLF; may contain any bytes) into verb and argument. */
void smtpd_cmd_parse(const char *line, size_t len, struct smtpd_cmd *out);
const char *smtpd_verb_name(enum smtpd_verb v);

/* Parse errors of a MAIL/RCPT path and its parameters. */
enum smtpd_path_err {
	PATH_OK = 0,
	PATH_SYNTAX,          /* 501 5.5.4 / 5.1.7 / 5.1.3 */
	PATH_TOO_LONG,        /* 501 5.1.3 */
	PATH_BAD_PARAM,       /* 555 5.5.4 unsupported parameter */
	PATH_BAD_SIZE,        /* 501 5.5.4 bad SIZE= */
	PATH_BAD_BODY,        /* 501 5.5.4 bad BODY= */
	PATH_BAD_RET,         /* 501 5.5.4 Bad RET parameter syntax (RFC 3461; also a repeated RET) */
	PATH_BAD_ENVID,       /* 501 5.5.4 Bad ENVID parameter syntax */
	PATH_BAD_NOTIFY,      /* 501 5.5.4 Error: Bad NOTIFY parameter syntax */
	PATH_BAD_ORCPT,       /* 501 5.5.4 Error: Bad ORCPT parameter syntax */
};

/*
 * RFC 3461 values. The same numbers as queue.h's DSN_* (verbs.c asserts
 * it): the parser stays free of the queue room's header.
 */
#define SMTPD_DSN_RET_FULL       1
#define SMTPD_DSN_RET_HDRS       2
#define SMTPD_DSN_NOTIFY_NEVER   1
#define SMTPD_DSN_NOTIFY_SUCCESS 2
#define SMTPD_DSN_NOTIFY_FAILURE 4
#define SMTPD_DSN_NOTIFY_DELAY   8
#define SMTPD_ENVID_MAX  100      /* RFC 3461 4.4: the ENVID value, encoded */
#define SMTPD_ORCPT_MAX  500      /* RFC 3461 4.2: the ORCPT value, encoded */

struct smtpd_path {
	char addr[SMTPD_ADDR_MAX + 1]; /* without angle brackets; "" for <> */
	int  null_path;                /* "<>" */
	long long size;                /* SIZE= (MAIL), -1 when absent */
	int  body_8bit;                /* BODY=8BITMIME */
	int  smtputf8;                 /* SMTPUTF8 */
	int  dsn_ret;                  /* MAIL RET=: 0 absent, SMTPD_DSN_RET_* */
	int  has_envid;                /* MAIL ENVID= given */
	char envid[SMTPD_ENVID_MAX + 1];  /* ENVID, xtext-decoded (printable ASCII) */
	int  notify;                   /* RCPT NOTIFY=: 0 absent, SMTPD_DSN_NOTIFY_* bits */
	char orcpt[SMTPD_ORCPT_MAX + 1];  /* RCPT ORCPT= as "type;address", address xtext-decoded; "" absent */
};

/*
 * RFC 3461 4: decode xtext (xchar = '!'..'~' but '+' and '='; "+XX" with
 * two upper-case hex digits) into out (NUL-terminated). The decoded bytes
 * must be printable ASCII (space included), as Postfix's allprint(): they
 * end up in queue-file lines and report headers. 0, or -1 on bad syntax or
 * when it does not fit.
 */
int smtpd_xtext_decode(const char *in, size_t len, char *out, size_t outlen);

/*
 * Parse the argument of MAIL ("FROM:<addr> params") or RCPT ("TO:<addr>
 * params"). `keyword` is "FROM:" or "TO:". Postfix-like leniency: white
 * space after the colon is allowed; the address must be in angle brackets
 * (strict_rfc821_envelopes off would allow bare; we require brackets but
 * accept a bare address without spaces, as many bots and scripts send it).
 */
enum smtpd_path_err smtpd_parse_path(const char *arg, size_t len, const char *keyword,
    int allow_null, struct smtpd_path *out);

/* Is `domain` a syntactically valid hostname (letters, digits, hyphens, dots)? */
int smtpd_valid_hostname(const char *s);
/* Is it a valid address literal "[1.2.3.4]" / "[IPv6:...]"? */
int smtpd_valid_addr_literal(const char *s);
/* FQDN: valid hostname with at least one dot, or an address literal. */
int smtpd_fqdn(const char *s);

#endif
