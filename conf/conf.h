/*
 * conf/conf.h: frugal.conf (Postfix main.cf syntax) and its typed parameter
 * table. A loaded `struct conf` is immutable; `frugal reload` builds a new
 * one and the daemon swaps the pointer between events, so a session keeps
 * the object it started with (conf_ref/conf_unref).
 *
 * Every value is available in two expansions: stress = 0 (normal) and
 * stress = 1 (the parameter `stress` is "yes", which selects the first
 * branch of ${stress?{a}:{b}}). Both are computed at load time, so reading a
 * parameter on the hot path is a table lookup, never a re-parse.
 */
#ifndef FRUGAL_CONF_CONF_H
#define FRUGAL_CONF_CONF_H

#include <stdio.h>

struct conf;

/* Diagnostics collected while loading: "file:line: reason" lines. */
struct conf_diag {
	int  is_error;      /* 0: warning (e.g. unknown parameter name) */
	char text[512];     /* "FILE:LINE: reason" (or "FILE: reason") */
};
struct conf_diags {
	struct conf_diag *v;  /* owned; free with conf_diags_free() */
	int n, errors, warnings;
};
void conf_diags_free(struct conf_diags *d);

#define CONF_DEFAULT_DIR "/etc/frugal"

/*
 * Load DIR/frugal.conf. dir NULL: $FRUGAL_CONFIG_DIR, else /etc/frugal.
 * Returns NULL when any error was found (all of them are in *d).
 */
struct conf *conf_load(const char *dir, struct conf_diags *d);
/* Load from text (tests, fuzzing); `name` is used as the file name in diagnostics. */
struct conf *conf_load_text(const char *text, const char *name, struct conf_diags *d);
/*
 * The embedded development default (PRODUCT.md section 1): 127.0.0.1:2525,
 * queue under ./frugal-data/queue, Maildirs under ./frugal-data/mail, relays
 * for nobody, logs to stderr.
 */
struct conf *conf_load_embedded(struct conf_diags *d);
int  conf_is_embedded(const struct conf *c);
/*
 * What every command uses: dir_opt (-c DIR) if given, else
 * $FRUGAL_CONFIG_DIR, else /etc/frugal; when no directory was named and
 * /etc/frugal/frugal.conf does not exist, the embedded default.
 */
struct conf *conf_load_for_command(const char *dir_opt, struct conf_diags *d);
/* The same for a command that only reports: errors printed to stderr as "frugal: TEXT", NULL. */
struct conf *conf_load_or_say(const char *dir_opt);
const char *conf_dir(const struct conf *c);   /* directory it came from ("" when embedded) */

struct conf *conf_ref(struct conf *c);
void conf_unref(struct conf *c);              /* frees on the last reference */
/*
 * A number no other configuration object of this process had or will have
 * (0 for NULL): a cache keyed on a generation compares this, never the
 * pointer, which a later generation may get again once this one is freed.
 */
unsigned long long conf_serial(const struct conf *c);

/*
 * The loaders initialize *d (it may be NULL); free it with conf_diags_free().
 *
 * Typed accessors. conf_int() of an "auto" value is -1 (test with
 * conf_is_auto()); an empty value of a parameter that may be empty
 * (limit_memory ...) reads as 0. `name` must be a parameter in the table (PRODUCT.md
 * section 2); an unknown name is a programming error and returns NULL/0.
 */
const char *conf_str(const struct conf *c, const char *name, int stress);
long long   conf_int(const struct conf *c, const char *name, int stress);   /* integers and sizes */
long long   conf_time(const struct conf *c, const char *name, int stress);  /* seconds */
int         conf_bool(const struct conf *c, const char *name, int stress);
int         conf_percent(const struct conf *c, const char *name, int stress); /* "50%" -> 50 */
/* Is the value "auto"? (smtpd_concurrency_limit, delivery_concurrency_limit) */
int         conf_is_auto(const struct conf *c, const char *name, int stress);

/* Where NAME was set, for diagnostics: "FILE:LINE", or "FILE" when it was not. */
void conf_where(const struct conf *c, const char *name, char *buf, size_t len);
/* Was NAME assigned in the file (or the embedded default)? */
int  conf_is_set(const struct conf *c, const char *name);
/*
 * For every parameter assigned in the file that this version accepts but
 * does not act on: fn(arg, name, where) (where as conf_where gives it).
 * serve logs them at start and reload, check prints them: an admin who set
 * one must not believe it protects or routes anything.
 */
void conf_each_later(const struct conf *c,
    void (*fn)(void *arg, const char *name, const char *where), void *arg);

/*
 * Split a list value (commas and/or white space; "{ ... }" groups kept
 * whole, as Postfix does) into a NULL-terminated vector; caller frees with
 * conf_list_free(). NULL on allocation failure.
 */
char **conf_list(const struct conf *c, const char *name, int stress);
char **conf_split_list(const char *value);
void   conf_list_free(char **v);

/*
 * The parameter table, for documentation: entry i (0, 1, ...) of every
 * parameter with its default as written, its type ("integer", "time",
 * "boolean", "percent", "list", "string", "keyword", "integer or auto")
 * and a one-line description. -1 past the end.
 */
int conf_param_describe(size_t i, const char **name, const char **def,
    const char **type, const char **desc);

/* `frugal config` (postconf): print parameters; flags below; names NULL = all. */
#define CONF_PRINT_NONDEFAULT 1   /* -n */
#define CONF_PRINT_DEFAULTS   2   /* -d */
int conf_print(const struct conf *c, FILE *out, int flags, char *const *names);

/* Command-line entry points (core/main.c dispatches here). Return exit codes. */
int conf_cmd_config(int argc, char **argv);
int conf_cmd_map(int argc, char **argv);
/*
 * The conf room's part of `frugal check` (smtpd's smtpd_cmd_check runs the
 * rest): every table opens, the queue directory can exist, TLS files are
 * readable. Prints "FILE:LINE: reason" lines; returns the number of errors.
 */
int conf_check(const struct conf *c);
/* diagnostics to stderr ("warning: " before warnings), as every command prints them */
void conf_print_diags(const struct conf_diags *d);

#endif
