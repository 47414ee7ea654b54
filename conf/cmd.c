/*
 * conf/cmd.c: the configuration commands: `frugal config` (postconf),
 * `frugal check` (validate config, tables, directories, TLS files) and
 * `frugal map` (postmap). Short-lived tools: they print to stdout/stderr
 * and return exit codes (0 ok, 1 user or config error).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf_impl.h"
#include "conf/map.h"
#include "core/mem.h"

void conf_print_diags(const struct conf_diags *d)
{
	int i;

	for (i = 0; i < d->n; i++)
		fprintf(stderr, "%s%s\n", d->v[i].is_error ? "" : "warning: ", d->v[i].text);
	if (d->errors + d->warnings > d->n)
		fprintf(stderr, "(%d more diagnostics not shown)\n", d->errors + d->warnings - d->n);
}

int conf_cmd_config(int argc, char **argv)
{
	struct conf_diags d;
	struct conf *c;
	const char *dir = NULL;
	int ch, flags = 0, rc;

	optind = 1;
	while ((ch = getopt(argc, argv, "+c:nd")) != -1) {
		switch (ch) {
		case 'c': dir = optarg; break;
		case 'n': flags |= CONF_PRINT_NONDEFAULT; break;
		case 'd': flags |= CONF_PRINT_DEFAULTS; break;
		default:
			fprintf(stderr, "usage: frugal config [-c DIR] [-n] [-d] [NAME...]\n");
			return 1;
		}
	}
	if ((flags & CONF_PRINT_NONDEFAULT) && (flags & CONF_PRINT_DEFAULTS)) {
		fprintf(stderr, "frugal config: -n and -d cannot be combined\n");
		return 1;
	}
	c = conf_load_for_command(dir, &d);
	conf_print_diags(&d);
	conf_diags_free(&d);
	if (c == NULL)
		return 1;
	rc = conf_print(c, stdout, flags, optind < argc ? argv + optind : NULL);
	if (fflush(stdout) != 0)
		rc = 1;
	conf_unref(c);
	return rc;
}

/* tables already opened by check_maps(): $alias_maps appears in two lists */
#define CHECKED_MAX 64
static char *checked[CHECKED_MAX];
static size_t nchecked;

static int seen_before(const char *spec)
{
	size_t i;

	for (i = 0; i < nchecked; i++)
		if (strcmp(checked[i], spec) == 0)
			return 1;
	if (nchecked < CHECKED_MAX)
		checked[nchecked++] = xstrdup(spec);
	return 0;
}

static void checked_free(void)
{
	while (nchecked > 0)
		mem_free(checked[--nchecked]);
}

static int check_maps(const struct conf *c, const char *name)
{
	char **v, err[512], loc[600];
	struct map *m;
	int errors = 0;
	size_t i;

	if ((v = conf_list(c, name, 0)) == NULL) {
		fprintf(stderr, "%s: out of memory\n", c->file);
		return 1;
	}
	conf_where(c, name, loc, sizeof loc);
	for (i = 0; v[i]; i++) {
		if (seen_before(v[i]))
			continue;
		if ((m = map_open(v[i], err, sizeof err)) == NULL) {
			fprintf(stderr, "%s: parameter %s: %s\n", loc, name, err);
			errors++;
		} else
			map_close(m);
	}
	conf_list_free(v);
	return errors;
}

static int check_queue_dir(const struct conf *c)
{
	const char *q = conf_str(c, "queue_directory", 0);
	char loc[600], *parent, *slash;
	struct stat st;
	int errors = 0;

	conf_where(c, "queue_directory", loc, sizeof loc);
	if (q == NULL || *q != '/') {
		fprintf(stderr, "%s: queue_directory must be an absolute path\n", loc);
		return 1;
	}
	if (stat(q, &st) == 0) {
		if (!S_ISDIR(st.st_mode)) {
			fprintf(stderr, "%s: queue_directory %s is not a directory\n", loc, q);
			return 1;
		}
		return 0;
	}
	if (errno != ENOENT) {
		fprintf(stderr, "%s: queue_directory %s: %s\n", loc, q, strerror(errno));
		return 1;
	}
	/* frugal serve creates it: the nearest existing ancestor must be writable */
	parent = xstrdup(q);
	for (;;) {
		if ((slash = strrchr(parent, '/')) == NULL)
			break;
		if (slash == parent)
			slash[1] = 0;
		else
			*slash = 0;
		if (stat(parent, &st) == 0)
			break;
		if (slash == parent)
			break;
	}
	if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "%s: queue_directory %s: no existing parent directory\n", loc, q);
		errors++;
	} else if (access(parent, W_OK) != 0) {
		fprintf(stderr, "%s: queue_directory %s does not exist and %s is not writable: %s\n",
		    loc, q, parent, strerror(errno));
		errors++;
	}
	mem_free(parent);
	return errors;
}


int conf_check(const struct conf *c)
{
	int errors = 0;
	size_t i;

	for (i = 0; i < c->n; i++) {
		size_t len = strlen(c->e[i].name);

		if (c->e[i].param && len > 5 && strcmp(c->e[i].name + len - 5, "_maps") == 0)
			errors += check_maps(c, c->e[i].name);
	}
	/*
	 * The SASL user table is a table too, used only where AUTH is offered
	 * (smtpd_sasl_auth_enable, or a submission listener). The TLS
	 * certificate and key are checked by the daemon's own loading code
	 * (smtpd_gen_new), which `frugal check` runs after this.
	 */
	if ((conf_bool(c, "smtpd_sasl_auth_enable", 0) || *conf_str(c, "submission_listen", 0) ||
	    *conf_str(c, "smtps_listen", 0)) && strcmp(conf_str(c, "smtpd_sasl_type", 0), "frugal") == 0)
		errors += check_maps(c, "smtpd_sasl_users");
	errors += check_queue_dir(c);
	checked_free();
	return errors;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

int conf_cmd_map(int argc, char **argv)
{
	const char *key = NULL, *file;
	char err[1024], *spec, *value = NULL;
	struct map *m;
	int ch, aliases = 0, r;

	optind = 1;
	while ((ch = getopt(argc, argv, "+aq:")) != -1) {
		switch (ch) {
		case 'a': aliases = 1; break;
		case 'q': key = optarg; break;
		default:
			goto usage;
		}
	}
	if (optind != argc - 1)
		goto usage;
	file = argv[optind];
	if (strncmp(file, "cdb:", 4) == 0)
		file += 4;
	if (key == NULL) {
		if (strcmp(base_name(file), "aliases") == 0)
			aliases = 1;
		if (map_compile(file, aliases, err, sizeof err) < 0) {
			fprintf(stderr, "frugal map: %s\n", err);
			return 1;
		}
		return 0;
	}
	spec = xmalloc(strlen(file) + 5);
	sprintf(spec, "cdb:%s", file);
	m = map_open(spec, err, sizeof err);
	mem_free(spec);
	if (m == NULL) {
		fprintf(stderr, "frugal map: %s\n", err);
		return 1;
	}
	r = map_lookup(m, key, &value);
	map_close(m);
	if (r < 0) {
		fprintf(stderr, "frugal map: %s: lookup error\n", file);
		return 1;
	}
	if (r == 0)
		return 1;
	printf("%s\n", value);
	mem_free(value);
	return fflush(stdout) == 0 ? 0 : 1;
usage:
	fprintf(stderr, "usage: frugal map [-a] [-q KEY] FILE\n");
	return 1;
}
