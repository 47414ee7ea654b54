/*
 * tests/unit/test_map.c: lookup tables (conf/map.h): compiling text tables
 * to cdb (plain and aliases syntax, errors naming file and line, atomic
 * replacement), lookups, Postfix's address lookup order, inline tables,
 * unix:passwd.byname, lists of tables, and `frugal map`.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/mem.h"

static char dir[64];
static char err[1024];

static void setup(void)
{
	strcpy(dir, "/tmp/test_map_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	err[0] = 0;
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", dir);
}

/* write dir/name with text; returns the path (static) */
static const char *write_file(const char *name, const char *text)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static struct map *open_cdb(const char *path)
{
	char spec[300];
	struct map *m;

	snprintf(spec, sizeof spec, "cdb:%s", path);
	m = map_open(spec, err, sizeof err);
	ck_assert_msg(m != NULL, "map_open: %s", err);
	return m;
}

/* lookup helper: the value or NULL, in a static buffer */
static const char *q(struct map *m, const char *key)
{
	static char out[1024];
	char *v = NULL;
	int r = map_lookup(m, key, &v);

	ck_assert_int_ge(r, 0);
	if (r == 0) {
		ck_assert_ptr_null(v);
		return NULL;
	}
	snprintf(out, sizeof out, "%s", v);
	mem_free(v);
	return out;
}

static const char *qa(struct map *m, const char *addr, int local_ok)
{
	static char out[1024];
	char *v = NULL;
	int r = map_lookup_addr(m, addr, local_ok, &v);

	ck_assert_int_ge(r, 0);
	if (r == 0)
		return NULL;
	snprintf(out, sizeof out, "%s", v);
	mem_free(v);
	return out;
}

START_TEST(compile_and_lookup)
{
	const char *p = write_file("virtual",
	    "# comment\n"
	    "info@example.com   alice@example.com\n"
	    "\n"
	    "Sales@Example.COM  bob@example.com,\n"
	    "   carol@example.com\n"
	    "  # indented comment\n"
	    "dup@example.com first\n"
	    "dup@example.com second\n"
	    "crlf@example.com dave\r\n");
	char cdb[300];
	struct stat st;
	struct map *m;

	ck_assert_msg(map_compile(p, 0, err, sizeof err) == 0, "%s", err);
	snprintf(cdb, sizeof cdb, "%s.cdb", p);
	ck_assert_int_eq(stat(cdb, &st), 0);
	snprintf(cdb, sizeof cdb, "%s.cdb.tmp", p);
	ck_assert_int_ne(stat(cdb, &st), 0);
	m = open_cdb(p);
	ck_assert_str_eq(q(m, "info@example.com"), "alice@example.com");
	ck_assert_str_eq(q(m, "INFO@EXAMPLE.COM"), "alice@example.com");
	ck_assert_str_eq(q(m, "sales@example.com"), "bob@example.com, carol@example.com");
	ck_assert_str_eq(q(m, "dup@example.com"), "first");
	ck_assert_str_eq(q(m, "crlf@example.com"), "dave");
	ck_assert_ptr_null(q(m, "nobody@example.com"));
	ck_assert_ptr_null(q(m, ""));
	ck_assert(strncmp(map_spec(m), "cdb:", 4) == 0);
	map_close(m);
}
END_TEST

START_TEST(keeps_source_permissions)
{
	const char *p = write_file("users", "a@example.com $6$hash\n");
	char cdb[300];
	struct stat st;

	chmod(p, 0640);
	ck_assert_msg(map_compile(p, 0, err, sizeof err) == 0, "%s", err);
	snprintf(cdb, sizeof cdb, "%s.cdb", p);
	ck_assert_int_eq(stat(cdb, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0640);
}
END_TEST

START_TEST(address_lookup_order)
{
	const char *p = write_file("vmap",
	    "user@example.com full\n"
	    "user local-part\n"
	    "@example.com catch-all\n"
	    "other catch-user\n");
	struct map *m;

	ck_assert_msg(map_compile(p, 0, err, sizeof err) == 0, "%s", err);
	m = open_cdb(p);
	ck_assert_str_eq(qa(m, "user@example.com", 1), "full");
	ck_assert_str_eq(qa(m, "User@Example.com", 0), "full");
	ck_assert_str_eq(qa(m, "user@other.org", 1), "local-part");
	ck_assert_ptr_null(qa(m, "user@other.org", 0));
	ck_assert_str_eq(qa(m, "other@example.com", 1), "catch-user");
	ck_assert_str_eq(qa(m, "other@example.com", 0), "catch-all");
	ck_assert_str_eq(qa(m, "nobody@example.com", 1), "catch-all");
	ck_assert_ptr_null(qa(m, "nobody@example.net", 1));
	ck_assert_str_eq(qa(m, "user", 1), "local-part");
	map_close(m);
}
END_TEST

START_TEST(aliases_syntax)
{
	const char *p = write_file("aliases",
	    "# aliases(5)\n"
	    "postmaster: root\n"
	    "root :  admin@example.com,\n"
	    "\tops@example.com\n"
	    "\"with space\": x\n"
	    "Abuse:root\n");
	struct map *m;

	ck_assert_msg(map_compile(p, 1, err, sizeof err) == 0, "%s", err);
	m = open_cdb(p);
	ck_assert_str_eq(q(m, "postmaster"), "root");
	ck_assert_str_eq(q(m, "root"), "admin@example.com, ops@example.com");
	ck_assert_str_eq(q(m, "with space"), "x");
	ck_assert_str_eq(q(m, "abuse"), "root");
	map_close(m);
}
END_TEST

static void expect_compile_error(const char *text, int aliases, const char *line, const char *reason)
{
	const char *p = write_file("bad", text);
	char want[300], cdb[300];
	struct stat st;

	ck_assert_int_eq(map_compile(p, aliases, err, sizeof err), -1);
	snprintf(want, sizeof want, "%s:%s:", p, line);
	ck_assert_msg(strstr(err, want) != NULL, "want %s in: %s", want, err);
	ck_assert_msg(strstr(err, reason) != NULL, "want %s in: %s", reason, err);
	snprintf(cdb, sizeof cdb, "%s.cdb.tmp", p);
	ck_assert_int_ne(stat(cdb, &st), 0);
}

START_TEST(malformed_lines)
{
	expect_compile_error("ok value\nlonely\n", 0, "2", "key whitespace value");
	expect_compile_error("# c\n  continued\n", 0, "2", "continues nothing");
	expect_compile_error("a: b\nno colon here\n", 1, "2", "missing ':'");
	expect_compile_error("a: b\n\n\nempty:\n", 1, "4", "missing value");
	expect_compile_error(": value\n", 1, "1", "empty key");
	expect_compile_error("\"open: x\n", 1, "1", "unbalanced");
}
END_TEST

START_TEST(failed_compile_keeps_old_table)
{
	const char *p = write_file("t", "k v1\n");
	struct map *m;

	ck_assert_int_eq(map_compile(p, 0, err, sizeof err), 0);
	write_file("t", "k v2\nbroken\n");
	ck_assert_int_eq(map_compile(p, 0, err, sizeof err), -1);
	m = open_cdb(p);
	ck_assert_str_eq(q(m, "k"), "v1");
	map_close(m);
	write_file("t", "k v3\n");
	ck_assert_int_eq(map_compile(p, 0, err, sizeof err), 0);
	m = open_cdb(p);
	ck_assert_str_eq(q(m, "k"), "v3");
	map_close(m);
}
END_TEST

START_TEST(missing_cdb)
{
	char spec[300];

	snprintf(spec, sizeof spec, "cdb:%s/nonexistent", dir);
	ck_assert_ptr_null(map_open(spec, err, sizeof err));
	ck_assert_ptr_nonnull(strstr(err, "nonexistent.cdb"));
	ck_assert_int_eq(map_compile("/nonexistent/dir/x", 0, err, sizeof err), -1);
	ck_assert_ptr_null(map_open("hash:/etc/aliases", err, sizeof err));
	ck_assert_ptr_nonnull(strstr(err, "unsupported"));
	ck_assert_ptr_null(map_open("/etc/aliases", err, sizeof err));
	ck_assert_ptr_null(map_open("", err, sizeof err));
}
END_TEST

START_TEST(inline_tables)
{
	struct map *m = map_open("inline:{ Key1=value1, key2=x, { key3 = value with spaces }, k4=a=b }",
	    err, sizeof err);

	ck_assert_msg(m != NULL, "%s", err);
	ck_assert_str_eq(q(m, "key1"), "value1");
	ck_assert_str_eq(q(m, "KEY1"), "value1");
	ck_assert_str_eq(q(m, "key3"), "value with spaces");
	ck_assert_str_eq(q(m, "k4"), "a=b");
	ck_assert_str_eq(q(m, "key2"), "x");
	map_close(m);
}
END_TEST

START_TEST(inline_errors)
{
	ck_assert_ptr_null(map_open("inline:key=value", err, sizeof err));
	ck_assert_ptr_nonnull(strstr(err, "inline"));
	ck_assert_ptr_null(map_open("inline:{ novalue }", err, sizeof err));
	ck_assert_ptr_nonnull(strstr(err, "missing '='"));
	/* white space separates entries (Postfix): spaces need { } */
	ck_assert_ptr_null(map_open("inline:{ key = value }", err, sizeof err));
	ck_assert_ptr_null(map_open("inline:{ =v }", err, sizeof err));
	ck_assert_ptr_nonnull(strstr(err, "empty key"));
	ck_assert_ptr_null(map_open("inline:{ {a=b }", err, sizeof err));
	struct map *m = map_open("inline:{}", err, sizeof err);
	ck_assert_ptr_nonnull(m);
	ck_assert_ptr_null(q(m, "x"));
	map_close(m);
}
END_TEST

START_TEST(unix_passwd)
{
	struct map *m = map_open("unix:passwd.byname", err, sizeof err);

	ck_assert_ptr_nonnull(m);
	ck_assert_str_eq(q(m, "root"), "/root");
	ck_assert_str_eq(qa(m, "root@localhost", 1), "/root");
	ck_assert_ptr_null(qa(m, "root@localhost", 0));
	ck_assert_ptr_null(q(m, "no-such-user-here"));
	map_close(m);
}
END_TEST

START_TEST(map_lists)
{
	const char *p1 = write_file("one", "a@x.org first\n@x.org wild1\n");
	char path1[300], specs[800];
	struct map_list *l;
	char *v;

	snprintf(path1, sizeof path1, "%s", p1);
	ck_assert_int_eq(map_compile(path1, 0, err, sizeof err), 0);
	snprintf(specs, sizeof specs, "cdb:%s, inline:{ b@x.org=second, a=local }", path1);
	l = map_list_open(specs, err, sizeof err);
	ck_assert_msg(l != NULL, "%s", err);
	ck_assert(!map_list_empty(l));
	ck_assert_int_eq(map_list_lookup(l, "b@x.org", &v), 1);
	ck_assert_str_eq(v, "second");
	mem_free(v);
	/* key-major: user@domain in every table before @domain in any */
	ck_assert_int_eq(map_list_lookup_addr(l, "b@x.org", 1, &v), 1);
	ck_assert_str_eq(v, "second");
	mem_free(v);
	ck_assert_int_eq(map_list_lookup_addr(l, "a@y.org", 1, &v), 1);
	ck_assert_str_eq(v, "local");
	mem_free(v);
	ck_assert_int_eq(map_list_lookup_addr(l, "c@x.org", 1, &v), 1);
	ck_assert_str_eq(v, "wild1");
	mem_free(v);
	ck_assert_int_eq(map_list_lookup_addr(l, "c@z.org", 1, &v), 0);
	ck_assert_ptr_null(v);
	map_list_close(l);

	l = map_list_open("", err, sizeof err);
	ck_assert_ptr_nonnull(l);
	ck_assert(map_list_empty(l));
	ck_assert_int_eq(map_list_lookup(l, "x", &v), 0);
	map_list_close(l);

	snprintf(specs, sizeof specs, "inline:{a=b} cdb:%s/missing", dir);
	ck_assert_ptr_null(map_list_open(specs, err, sizeof err));
	ck_assert_ptr_nonnull(strstr(err, "missing"));
}
END_TEST

START_TEST(map_command)
{
	const char *p = write_file("aliases", "postmaster: root\n");
	char path[300];
	char *argv_c[] = { "map", path, NULL };
	char *argv_q[] = { "map", "-q", "POSTMASTER", path, NULL };
	char *argv_miss[] = { "map", "-q", "nobody", path, NULL };
	char *argv_bad[] = { "map", NULL };

	snprintf(path, sizeof path, "%s", p);
	ck_assert_int_eq(conf_cmd_map(2, argv_c), 0);
	ck_assert_int_eq(conf_cmd_map(4, argv_q), 0);
	ck_assert_int_eq(conf_cmd_map(4, argv_miss), 1);
	ck_assert_int_eq(conf_cmd_map(1, argv_bad), 1);
	write_file("aliases", "no colon\n");
	ck_assert_int_eq(conf_cmd_map(2, argv_c), 1);
}
END_TEST

/* conf's part of `frugal check` on DIR/frugal.conf: 0 clean, 1 errors */
static int conf_check_dir(void)
{
	struct conf_diags d;
	struct conf *c = conf_load(dir, &d);
	int errors;

	conf_diags_free(&d);
	if (c == NULL)
		return 1;
	errors = conf_check(c);
	conf_unref(c);
	return errors ? 1 : 0;
}

START_TEST(check_command)
{
	char conf[2048];
	const char *p;

	p = write_file("aliases", "postmaster: root\n");
	ck_assert_int_eq(map_compile(p, 1, err, sizeof err), 0);
	snprintf(conf, sizeof conf,
	    "alias_maps = cdb:%s/aliases\nqueue_directory = %s/queue\nmy_unknown = 1\n", dir, dir);
	write_file("frugal.conf", conf);
	ck_assert_int_eq(conf_check_dir(), 0);

	/* a missing map is an error */
	snprintf(conf, sizeof conf, "alias_maps = cdb:%s/nothere\nqueue_directory = %s/queue\n", dir, dir);
	write_file("frugal.conf", conf);
	ck_assert_int_eq(conf_check_dir(), 1);

	/* TLS files: the daemon's own loader checks them (tests/integration/test_tls.py, frugal check) */

	/* a queue directory whose parent is not a directory is an error */
	snprintf(conf, sizeof conf, "alias_maps =\nqueue_directory = %s/aliases/queue\n", dir);
	write_file("frugal.conf", conf);
	ck_assert_int_eq(conf_check_dir(), 1);

	/* a bad value is an error */
	write_file("frugal.conf", "smtpd_timeout = never\n");
	ck_assert_int_eq(conf_check_dir(), 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("map");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, compile_and_lookup);
	tcase_add_test(tc, keeps_source_permissions);
	tcase_add_test(tc, address_lookup_order);
	tcase_add_test(tc, aliases_syntax);
	tcase_add_test(tc, malformed_lines);
	tcase_add_test(tc, failed_compile_keeps_old_table);
	tcase_add_test(tc, missing_cdb);
	tcase_add_test(tc, inline_tables);
	tcase_add_test(tc, inline_errors);
	tcase_add_test(tc, unix_passwd);
	tcase_add_test(tc, map_lists);
	tcase_add_test(tc, map_command);
	tcase_add_test(tc, check_command);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
