/*
 * conf/conf_impl.h: what the files of the conf room share and nobody else
 * may use: the typed parameter table, the loaded entries, diagnostics and
 * the main.cf lexer. Other rooms include conf.h and map.h only.
 */
#ifndef FRUGAL_CONF_CONF_IMPL_H
#define FRUGAL_CONF_CONF_IMPL_H

#include <stddef.h>
#include <sys/types.h>
#include "conf/conf.h"

enum conf_type {
	CT_STR,       /* any text */
	CT_LIST,      /* text split by conf_split_list() */
	CT_INT,       /* non-negative integer (counts, sizes in bytes) */
	CT_INT_AUTO,  /* "auto" or a non-negative integer */
	CT_TIME,      /* number with optional unit s/m/h/d/w (default s) */
	CT_BOOL,      /* yes / no */
	CT_PERCENT,   /* "50%" (0..100) */
	CT_ENUM,      /* one word of param->allowed ("a|b|c") */
};

#define CF_EMPTY_OK  1  /* a numeric parameter may be empty ("not set": 0) */
#define CF_READONLY  2  /* assignments are ignored with a warning */
#define CF_DYNAMIC   4  /* default computed at load time (myhostname, mydomain) */
#define CF_LATER     8  /* accepted, not acted on in this version: set, it gets a warning */
#define CF_MULTI    16  /* CT_ENUM: a list of the allowed keywords ("cgroup, rlimit") */
#define CF_RAW      32  /* not expanded at load: a template with $names of its own (default_rbl_reply) */

struct conf_param {
	const char     *name;
	enum conf_type  type;
	int             flags;    /* CF_* */
	const char     *def;      /* default as written (postconf -d); "" for dynamic */
	const char     *allowed;  /* CT_ENUM: "a|b|c" */
	const char     *desc;     /* one line, for the documentation */
};

extern const struct conf_param conf_param_table[];
extern const size_t conf_param_count;
const struct conf_param *conf_param_find(const char *name);
const char *conf_type_name(enum conf_type t);

/* 0 and *out set, or -1 with a reason in why (static text). */
int conf_parse_number(const struct conf_param *p, const char *v, long long *out,
    const char **why);

enum { ES_TODO, ES_BUSY, ES_DONE };

struct conf_entry {
	char *name;                     /* owned */
	const struct conf_param *param; /* NULL: a name not in the table */
	char *raw;                      /* value as written, or the default; owned */
	char *def;                      /* default as written; owned; NULL when unknown */
	int   line;                     /* line in the file; 0 when not assigned there */
	int   set;                      /* assigned in the file (or embedded override) */
	char *val[2];                   /* expanded with stress 0 / 1; owned */
	long long num[2];               /* numeric types: parsed val[] */
	int   state[2];                 /* ES_*: expansion progress, loop detection */
};

struct conf {
	int    refs;              /* atomic */
	unsigned long long serial; /* conf_serial() */
	int    embedded;
	char  *dir;               /* "" when embedded */
	char  *file;              /* name used in diagnostics */
	struct conf_entry *e;     /* sorted by name: accessors use bsearch */
	size_t n;
};

struct conf_entry *conf_entry_find(const struct conf *c, const char *name);

void conf_diag(struct conf_diags *d, int is_error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * The main.cf lexer: calls cb for every logical `name = value` line. Returns
 * 0, or -1 when cb returned -1 (allocation failure). Syntax problems go to d.
 */
typedef int (*conf_assign_fn)(void *arg, const char *name, const char *value, int line);
int conf_lex(const char *text, const char *file, struct conf_diags *d,
    conf_assign_fn cb, void *arg);

/* Expand every entry for stress 0 and 1 and check typed values. -1: out of memory. */
int conf_expand_all(struct conf *c, struct conf_diags *d);

/* The system's FQDN (cached) and the domain part of a host name. */
const char *conf_system_hostname(void);
unsigned long conf_hostname_lookups(void);   /* times the system's name was worked out (tests) */
char *conf_domain_of(const char *host); /* mem_alloc'd; "localdomain" when no dot */

/* a whole text file, NUL-terminated, mem_alloc'd; NULL with err "PATH: reason" */
char *conf_read_text(const char *path, size_t max, mode_t *mode, char *err, size_t errlen);

#endif
