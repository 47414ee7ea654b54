/*
 * tests/unit/test_conf.c: frugal.conf loading (conf/conf.h): main.cf
 * syntax, expansion with stress 0/1, typed values and their errors (each
 * naming file and line), defaults, the embedded default, list splitting,
 * `frugal config` printing.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "conf/conf.h"
#include "conf/conf_impl.h"
#include "core/mem.h"

static struct conf_diags d;

static struct conf *load(const char *text)
{
	conf_diags_free(&d);   /* the previous load's diagnostics: conf_load_text starts afresh */
	return conf_load_text(text, "test.cf", &d);
}

/* is there a diagnostic (error or warning per is_error) containing all of a, b? */
static int has_diag(int is_error, const char *a, const char *b)
{
	int i;

	for (i = 0; i < d.n; i++)
		if (d.v[i].is_error == is_error && strstr(d.v[i].text, a) &&
		    (b == NULL || strstr(d.v[i].text, b)))
			return 1;
	return 0;
}

static void teardown(void)
{
	conf_diags_free(&d);
}

START_TEST(basic_assignment_and_spaces)
{
	struct conf *c = load("relayhost=[smtp.example.net]:587\n  \nmail_name   =   Frugal Mail   \n");

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(d.errors, 0);
	ck_assert_int_eq(d.warnings, 0);
	ck_assert_str_eq(conf_str(c, "relayhost", 0), "[smtp.example.net]:587");
	ck_assert_str_eq(conf_str(c, "mail_name", 0), "Frugal Mail");
	conf_unref(c);
}
END_TEST

START_TEST(continuation_and_comments)
{
	struct conf *c = load(
	    "# a comment\n"
	    "mynetworks = 10.0.0.0/8,\n"
	    "    192.168.0.0/16\n"
	    "# comment inside does not end the logical line\n"
	    "\t172.16.0.0/12\n"
	    "\n"
	    "   # indented comment\n"
	    "relay_domains = example.org\r\n");
	char **v;

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(d.errors, 0);
	ck_assert_str_eq(conf_str(c, "mynetworks", 0), "10.0.0.0/8, 192.168.0.0/16 172.16.0.0/12");
	ck_assert_str_eq(conf_str(c, "relay_domains", 0), "example.org");
	v = conf_list(c, "mynetworks", 0);
	ck_assert_ptr_nonnull(v);
	ck_assert_str_eq(v[0], "10.0.0.0/8");
	ck_assert_str_eq(v[1], "192.168.0.0/16");
	ck_assert_str_eq(v[2], "172.16.0.0/12");
	ck_assert_ptr_null(v[3]);
	conf_list_free(v);
	conf_unref(c);
}
END_TEST

START_TEST(last_assignment_wins)
{
	struct conf *c = load("mail_name = a\nmail_name = b\n");

	ck_assert_str_eq(conf_str(c, "mail_name", 0), "b");
	conf_unref(c);
}
END_TEST

START_TEST(expansion_simple_and_nested)
{
	struct conf *c = load(
	    "myhostname = mx.example.com\n"
	    "mail_name = Frugal\n"
	    "my_a = $myhostname\n"
	    "my_b = <${my_a}> $(mail_name) $$literal $ end\n"
	    "myorigin = $mydomain\n");

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(d.errors, 0);
	ck_assert_str_eq(conf_str(c, "my_b", 0), "<mx.example.com> Frugal $literal $ end");
	ck_assert_str_eq(conf_str(c, "mydomain", 0), "example.com");
	ck_assert_str_eq(conf_str(c, "myorigin", 1), "example.com");
	ck_assert_str_eq(conf_str(c, "smtpd_banner", 0), "mx.example.com ESMTP Frugal");
	ck_assert_str_eq(conf_str(c, "mydestination", 0), "mx.example.com, localhost");
	conf_unref(c);
}
END_TEST

START_TEST(expansion_conditionals_stress)
{
	struct conf *c = load(
	    "my_x = ${stress?{fast}:{slow}}\n"
	    "my_y = ${stress?on}${stress:off}\n"
	    "my_z = ${stress:{calm ${mail_name}}}\n"
	    "my_w = ${stress ? { a } : { b }}\n"
	    "smtpd_timeout = ${stress?{1}:{2}}m\n");

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(d.errors, 0);
	ck_assert_str_eq(conf_str(c, "my_x", 0), "slow");
	ck_assert_str_eq(conf_str(c, "my_x", 1), "fast");
	ck_assert_str_eq(conf_str(c, "my_y", 0), "off");
	ck_assert_str_eq(conf_str(c, "my_y", 1), "on");
	ck_assert_str_eq(conf_str(c, "my_z", 0), "calm frugal");
	ck_assert_str_eq(conf_str(c, "my_z", 1), "");
	ck_assert_str_eq(conf_str(c, "my_w", 0), " b ");
	ck_assert_str_eq(conf_str(c, "stress", 1), "yes");
	ck_assert_str_eq(conf_str(c, "stress", 0), "");
	ck_assert_int_eq(conf_time(c, "smtpd_timeout", 0), 120);
	ck_assert_int_eq(conf_time(c, "smtpd_timeout", 1), 60);
	conf_unref(c);
}
END_TEST

START_TEST(stress_set_in_file)
{
	struct conf *c = load("stress = yes\n");

	ck_assert_int_eq(conf_time(c, "smtpd_timeout", 0), 10);
	ck_assert_int_eq(conf_time(c, "smtpd_timeout", 1), 10);
	conf_unref(c);
}
END_TEST

START_TEST(defaults)
{
	struct conf *c = load("");

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(d.n, 0);
	ck_assert_int_eq(conf_time(c, "smtpd_timeout", 0), 300);
	ck_assert_int_eq(conf_time(c, "smtpd_timeout", 1), 10);
	ck_assert_int_eq(conf_int(c, "smtpd_hard_error_limit", 0), 20);
	ck_assert_int_eq(conf_int(c, "smtpd_hard_error_limit", 1), 1);
	ck_assert_int_eq(conf_int(c, "smtpd_junk_command_limit", 0), 100);
	ck_assert_int_eq(conf_int(c, "smtpd_junk_command_limit", 1), 1);
	ck_assert_int_eq(conf_int(c, "smtpd_soft_error_limit", 1), 10);
	ck_assert_int_eq(conf_int(c, "message_size_limit", 0), 10240000);
	ck_assert_int_eq(conf_time(c, "maximal_queue_lifetime", 0), 5 * 86400);
	ck_assert_int_eq(conf_time(c, "maximal_backoff_time", 0), 4000);
	ck_assert_int_eq(conf_time(c, "anvil_rate_time_unit", 0), 60);
	ck_assert_int_eq(conf_bool(c, "smtpd_helo_required", 0), 0);
	ck_assert_int_eq(conf_bool(c, "smtpd_forbid_bare_newline", 0), 1);
	ck_assert_int_eq(conf_bool(c, "smtpd_tls_auth_only", 0), 1);
	ck_assert_int_eq(conf_percent(c, "limits_share", 0), 50);
	ck_assert_int_eq(conf_percent(c, "limits_reserve", 0), 5);
	ck_assert_int_eq(conf_percent(c, "stress_threshold", 0), 80);
	ck_assert(conf_is_auto(c, "smtpd_concurrency_limit", 0));
	ck_assert_int_eq(conf_int(c, "smtpd_concurrency_limit", 0), -1);
	ck_assert_int_eq(conf_int(c, "limit_memory", 0), 0);
	ck_assert_int_eq(conf_int(c, "hopcount_limit", 0), 50);
	ck_assert_str_eq(conf_str(c, "smtpd_listen", 0), "0.0.0.0:25");
	ck_assert_str_eq(conf_str(c, "submission_listen", 0), "");
	ck_assert_str_eq(conf_str(c, "mynetworks", 0), "127.0.0.0/8 [::1]/128");
	ck_assert_str_eq(conf_str(c, "alias_maps", 0), "cdb:/etc/frugal/aliases");
	ck_assert_str_eq(conf_str(c, "local_recipient_maps", 0),
	    "unix:passwd.byname cdb:/etc/frugal/aliases");
	ck_assert_str_eq(conf_str(c, "smtpd_recipient_restrictions", 0),
	    "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, reject_unlisted_recipient");
	ck_assert_str_eq(conf_str(c, "queue_directory", 0), "/var/spool/frugal");
	ck_assert_str_eq(conf_str(c, "mail_owner", 0), "frugal");
	ck_assert_str_eq(conf_str(c, "double_bounce_sender", 0), "double-bounce");
	ck_assert_str_eq(conf_str(c, "home_mailbox", 0), "Maildir/");
	ck_assert_str_eq(conf_str(c, "limits_source", 0), "auto");
	ck_assert_str_eq(conf_str(c, "mail_version", 0), "0.1");
	ck_assert_str_eq(conf_str(c, "local_mailbox_base", 0), "");
	ck_assert_ptr_nonnull(conf_str(c, "myhostname", 0));
	ck_assert(strlen(conf_str(c, "myhostname", 0)) > 0);
	ck_assert(strlen(conf_str(c, "mydomain", 0)) > 0);
	/* not in the table: a programming error, NULL/0 */
	ck_assert_ptr_null(conf_str(c, "no_such_parameter", 0));
	ck_assert_int_eq(conf_int(c, "no_such_parameter", 0), 0);
	ck_assert(!conf_is_embedded(c));
	conf_unref(c);
}
END_TEST

/*
 * A configuration that names its host never asks the system for its name
 * (which may take a DNS timeout on a machine without a resolver), and
 * mydomain follows myhostname as in Postfix.
 */
START_TEST(myhostname_set_means_no_lookup)
{
	struct conf *c = load("myhostname = mx.example.com\n");

	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(conf_str(c, "mydomain", 0), "example.com");
	ck_assert_str_eq(conf_str(c, "myorigin", 0), "mx.example.com");
	ck_assert_uint_eq(conf_hostname_lookups(), 0);
	conf_unref(c);
	/* and one that does not name it asks, once */
	c = load("mail_name = x\n");
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(conf_hostname_lookups(), 1);
	conf_unref(c);
}
END_TEST

/* a keyword list where the parameter takes one (limits_source = cgroup, rlimit) */
START_TEST(keyword_lists)
{
	struct conf *c = load("limits_source = cgroup, rlimit\n");

	ck_assert_ptr_nonnull(c);
	conf_unref(c);
	ck_assert_ptr_null(load("limits_source = cgroup, bogus\n"));
	ck_assert_ptr_null(load("smtpd_tls_security_level = may, encrypt\n"));   /* one keyword only */
}
END_TEST

START_TEST(time_units)
{
	struct conf *c = load("smtpd_timeout = 2m\nqueue_run_delay = 1h\nmaximal_queue_lifetime = 1w\n"
	    "bounce_queue_lifetime = 3d\nsmtp_connect_timeout = 45\n");

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(conf_time(c, "smtpd_timeout", 1), 120);
	ck_assert_int_eq(conf_time(c, "queue_run_delay", 0), 3600);
	ck_assert_int_eq(conf_time(c, "maximal_queue_lifetime", 0), 604800);
	ck_assert_int_eq(conf_time(c, "bounce_queue_lifetime", 0), 3 * 86400);
	ck_assert_int_eq(conf_time(c, "smtp_connect_timeout", 0), 45);
	conf_unref(c);
}
END_TEST

/* every error kind names the file and the line */
static void expect_error(const char *text, const char *fileline, const char *reason)
{
	struct conf *c = load(text);

	ck_assert_msg(c == NULL, "loaded despite error: %s", text);
	ck_assert_msg(d.errors >= 1, "no error for: %s", text);
	ck_assert_msg(has_diag(1, fileline, reason), "no \"%s ... %s\" diagnostic for: %s (first: %s)",
	    fileline, reason, text, d.n ? d.v[0].text : "-");
	conf_diags_free(&d);
}

START_TEST(errors_name_file_and_line)
{
	expect_error("mail_name = x\njust some words\n", "test.cf:2:", "missing '='");
	expect_error("\n\nsmtpd_recipient_limit = lots\n", "test.cf:3:", "bad integer");
	expect_error("smtpd_recipient_limit = -5\n", "test.cf:1:", "bad integer");
	expect_error("message_size_limit = 99999999999999999999999\n", "test.cf:1:", "out of range");
	expect_error("# c\nsmtpd_timeout = 10x\n", "test.cf:2:", "bad time unit");
	expect_error("smtpd_timeout = 10ss\n", "test.cf:1:", "bad time unit");
	expect_error("smtpd_timeout = s\n", "test.cf:1:", "bad time value");
	expect_error("smtpd_helo_required = maybe\n", "test.cf:1:", "bad boolean");
	expect_error("limits_share = 150%\n", "test.cf:1:", "bad percent");
	expect_error("limits_share = half\n", "test.cf:1:", "bad percent");
	expect_error("limits_source = guess\n", "test.cf:1:", "limits_source");
	expect_error("smtpd_concurrency_limit = some\n", "test.cf:1:", "bad integer");
	expect_error("  indented = 1\n", "test.cf:1:", "continues nothing");
	expect_error("bad-name = 1\n", "test.cf:1:", "bad parameter name");
	expect_error(" \n= value\n", "test.cf:2:", "missing parameter name");
	expect_error("my_a = ${mail_name\n", "test.cf:1:", "unmatched");
	expect_error("my_a = ${mail_name?{x}:y}\n", "test.cf:1:", "expected '{'");
	expect_error("my_a = ${mail_name!x}\n", "test.cf:1:", "bad macro syntax");
	/* a bad value only under stress is still an error */
	expect_error("smtpd_timeout = ${stress?{x}:{10}}\n", "test.cf:1:", "stress = yes");
}
END_TEST

START_TEST(error_line_of_continued_value)
{
	struct conf *c = load("mail_name = x\nsmtpd_recipient_limit =\n   12\n   x\n");

	ck_assert_ptr_null(c);
	ck_assert(has_diag(1, "test.cf:2:", "smtpd_recipient_limit"));
}
END_TEST

START_TEST(all_errors_reported)
{
	struct conf *c = load("a b c\nsmtpd_timeout = 1y\nsmtpd_helo_required = perhaps\n");

	ck_assert_ptr_null(c);
	ck_assert_int_eq(d.errors, 3);
	ck_assert(has_diag(1, "test.cf:1:", NULL));
	ck_assert(has_diag(1, "test.cf:2:", NULL));
	ck_assert(has_diag(1, "test.cf:3:", NULL));
}
END_TEST

START_TEST(recursion_loop_is_error)
{
	struct conf *c = load("my_a = x $my_b\nmy_b = y $my_a\n");

	ck_assert_ptr_null(c);
	ck_assert(d.errors >= 1);
	ck_assert(has_diag(1, "recursive", "my_"));
	ck_assert(has_diag(1, "test.cf:", NULL));
	conf_diags_free(&d);

	c = load("myhostname = $myhostname.example\n");
	ck_assert_ptr_null(c);
	ck_assert(has_diag(1, "test.cf:1:", "myhostname"));
	conf_diags_free(&d);

	/* myhostname may not depend on a mydomain derived from it */
	c = load("myhostname = mail.$mydomain\n");
	ck_assert_ptr_null(c);
	ck_assert(has_diag(1, "recursive", "mydomain"));
}
END_TEST

START_TEST(deep_nesting_is_error)
{
	char text[64 * 200];
	size_t off = 0;
	int i;

	for (i = 0; i < 150; i++)
		off += (size_t)snprintf(text + off, sizeof text - off, "p%d = $p%d\n", i, i + 1);
	struct conf *c = load(text);
	ck_assert_ptr_null(c);
	ck_assert(has_diag(1, "nesting", NULL));
}
END_TEST

START_TEST(unknown_name_is_warning)
{
	struct conf *c = load("mail_name = a\nmy_custom = hello\nmyorigin = $my_custom\n");

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(d.errors, 0);
	ck_assert_int_eq(d.warnings, 1);
	ck_assert(has_diag(0, "test.cf:2:", "my_custom"));
	ck_assert_str_eq(conf_str(c, "my_custom", 0), "hello");
	ck_assert_str_eq(conf_str(c, "myorigin", 0), "hello");
	conf_unref(c);
}
END_TEST

START_TEST(undefined_reference_is_warning)
{
	struct conf *c = load("myorigin = x$nothing_here\n");

	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(conf_str(c, "myorigin", 0), "x");
	ck_assert(has_diag(0, "test.cf:1:", "nothing_here"));
	conf_unref(c);
}
END_TEST

START_TEST(readonly_is_warning)
{
	struct conf *c = load("mail_version = 9\n");

	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(conf_str(c, "mail_version", 0), "0.1");
	ck_assert(has_diag(0, "test.cf:1:", "read-only"));
	conf_unref(c);
}
END_TEST

START_TEST(embedded_default)
{
	char cwd[4096], want[4200];
	struct conf *c = conf_load_embedded(&d);

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(d.errors, 0);
	ck_assert(conf_is_embedded(c));
	ck_assert_str_eq(conf_dir(c), "");
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	ck_assert_str_eq(conf_str(c, "smtpd_listen", 0), "127.0.0.1:2525");
	snprintf(want, sizeof want, "%s/frugal-data/queue", strcmp(cwd, "/") ? cwd : "");
	ck_assert_str_eq(conf_str(c, "queue_directory", 0), want);
	ck_assert(conf_str(c, "queue_directory", 0)[0] == '/');
	snprintf(want, sizeof want, "%s/frugal-data/mail", strcmp(cwd, "/") ? cwd : "");
	ck_assert_str_eq(conf_str(c, "local_mailbox_base", 0), want);
	ck_assert_str_eq(conf_str(c, "mydestination", 0), "localhost");
	ck_assert_str_eq(conf_str(c, "myhostname", 0), "localhost");
	ck_assert_str_eq(conf_str(c, "local_recipient_maps", 0), "");
	ck_assert_str_eq(conf_str(c, "alias_maps", 0), "");
	ck_assert_str_eq(conf_str(c, "mynetworks", 0), "");
	ck_assert_str_eq(conf_str(c, "maillog_file", 0), "/dev/stderr");
	ck_assert_str_eq(conf_str(c, "home_mailbox", 0), "Maildir/");
	ck_assert(strlen(conf_str(c, "mail_owner", 0)) > 0);
	ck_assert_str_ne(conf_str(c, "mail_owner", 0), "frugal");
	ck_assert_int_eq(conf_time(c, "smtpd_timeout", 0), 300);
	conf_unref(c);
}
END_TEST

START_TEST(load_from_dir_and_for_command)
{
	char dir[] = "/tmp/test_conf_XXXXXX", path[256];
	struct conf *c;
	FILE *f;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/frugal.conf", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("mail_name = FromDir\nsmtpd_timeout = 7\n", f);
	fclose(f);
	c = conf_load(dir, &d);
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(conf_str(c, "mail_name", 0), "FromDir");
	ck_assert_str_eq(conf_dir(c), dir);
	conf_unref(c);
	conf_diags_free(&d);

	setenv("FRUGAL_CONFIG_DIR", dir, 1);
	c = conf_load_for_command(NULL, &d);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(conf_time(c, "smtpd_timeout", 0), 7);
	ck_assert(!conf_is_embedded(c));
	conf_unref(c);
	conf_diags_free(&d);
	unsetenv("FRUGAL_CONFIG_DIR");

	/* a named directory without frugal.conf is an error, never the embedded default */
	unlink(path);
	c = conf_load_for_command(dir, &d);
	ck_assert_ptr_null(c);
	ck_assert(has_diag(1, "frugal.conf", "cannot open"));
	rmdir(dir);
}
END_TEST

START_TEST(errors_in_file_name_path)
{
	char dir[] = "/tmp/test_conf_XXXXXX", path[256], want[300];
	struct conf *c;
	FILE *f;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/frugal.conf", dir);
	f = fopen(path, "w");
	fputs("# x\n\nsmtpd_timeout = soon\n", f);
	fclose(f);
	c = conf_load(dir, &d);
	ck_assert_ptr_null(c);
	snprintf(want, sizeof want, "%s:3:", path);
	ck_assert(has_diag(1, want, "smtpd_timeout"));
	unlink(path);
	rmdir(dir);
}
END_TEST

START_TEST(split_list)
{
	char **v = conf_split_list(" a, b ,,c\td\n inline:{ x=1, { y = 2 3 } }, cdb:/etc/z ");

	ck_assert_ptr_nonnull(v);
	ck_assert_str_eq(v[0], "a");
	ck_assert_str_eq(v[1], "b");
	ck_assert_str_eq(v[2], "c");
	ck_assert_str_eq(v[3], "d");
	ck_assert_str_eq(v[4], "inline:{ x=1, { y = 2 3 } }");
	ck_assert_str_eq(v[5], "cdb:/etc/z");
	ck_assert_ptr_null(v[6]);
	conf_list_free(v);

	v = conf_split_list("");
	ck_assert_ptr_nonnull(v);
	ck_assert_ptr_null(v[0]);
	conf_list_free(v);

	v = conf_split_list("{unbalanced, x");
	ck_assert_str_eq(v[0], "{unbalanced, x");
	ck_assert_ptr_null(v[1]);
	conf_list_free(v);
}
END_TEST

START_TEST(list_allocation_failure)
{
	char **v;

	mem_fail_at(2);
	v = conf_split_list("a b c");
	mem_fail_at(0);
	ck_assert_ptr_null(v);
}
END_TEST

START_TEST(allocation_failure_every_site)
{
	/* each allocation in turn fails: NULL and an error, never a crash or a half conf */
	unsigned long n;
	int ok = 0;

	for (n = 1; n < 5000 && !ok; n++) {
		struct conf *c;

		mem_fail_at(n);
		c = load("myhostname = a.example\nmy_x = ${stress?{1}:{2}}\nmy_y = $my_x\n");
		mem_fail_at(0);
		if (c) {
			ck_assert_str_eq(conf_str(c, "my_y", 1), "1");
			ok = 1;
			conf_unref(c);
		} else
			ck_assert(d.errors >= 1);
		conf_diags_free(&d);
	}
	ck_assert(ok);
}
END_TEST

static char *print_to_string(struct conf *c, int flags, char *const *names, int *rc)
{
	static char out[65536];
	FILE *f = fmemopen(out, sizeof out, "w");

	*rc = conf_print(c, f, flags, names);
	fclose(f);
	return out;
}

START_TEST(print_like_postconf)
{
	struct conf *c = load("myhostname = mx.example.com\nsmtpd_timeout = ${stress?{5}:{60}}s\n");
	char *names[] = { "smtpd_timeout", "mail_name", NULL };
	char *bad[] = { "nonexistent", NULL };
	char *s;
	int rc;

	ck_assert_ptr_nonnull(c);
	s = print_to_string(c, CONF_PRINT_NONDEFAULT, NULL, &rc);
	ck_assert_int_eq(rc, 0);
	ck_assert_str_eq(s, "myhostname = mx.example.com\nsmtpd_timeout = ${stress?{5}:{60}}s\n");
	s = print_to_string(c, 0, names, &rc);
	ck_assert_str_eq(s, "smtpd_timeout = ${stress?{5}:{60}}s\nmail_name = frugal\n");
	s = print_to_string(c, CONF_PRINT_DEFAULTS, names, &rc);
	ck_assert_str_eq(s, "smtpd_timeout = ${stress?{10}:{300}}s\nmail_name = frugal\n");
	s = print_to_string(c, 0, NULL, &rc);
	ck_assert_ptr_nonnull(strstr(s, "\nsmtpd_banner = $myhostname ESMTP $mail_name\n"));
	ck_assert_ptr_nonnull(strstr(s, "\nmydestination = $myhostname, localhost\n"));
	print_to_string(c, 0, bad, &rc);
	ck_assert_int_eq(rc, 1);
	conf_unref(c);
}
END_TEST

START_TEST(param_table_described)
{
	const char *name, *def, *type, *desc;
	size_t i;
	int seen_timeout = 0;

	for (i = 0; conf_param_describe(i, &name, &def, &type, &desc) == 0; i++) {
		ck_assert(strlen(desc) > 10);
		if (strcmp(name, "smtpd_timeout") == 0) {
			ck_assert_str_eq(def, "${stress?{10}:{300}}s");
			ck_assert_str_eq(type, "time");
			seen_timeout = 1;
		}
	}
	ck_assert(i > 80);
	ck_assert(seen_timeout);
}
END_TEST

START_TEST(refcount)
{
	struct conf *c = load("");
	struct conf *r = conf_ref(c);

	ck_assert_ptr_eq(r, c);
	conf_unref(c);
	ck_assert_str_eq(conf_str(r, "mail_name", 0), "frugal"); /* still alive */
	conf_unref(r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, basic_assignment_and_spaces);
	tcase_add_test(tc, continuation_and_comments);
	tcase_add_test(tc, last_assignment_wins);
	tcase_add_test(tc, expansion_simple_and_nested);
	tcase_add_test(tc, expansion_conditionals_stress);
	tcase_add_test(tc, stress_set_in_file);
	tcase_add_test(tc, defaults);
	tcase_add_test(tc, time_units);
	tcase_add_test(tc, errors_name_file_and_line);
	tcase_add_test(tc, error_line_of_continued_value);
	tcase_add_test(tc, all_errors_reported);
	tcase_add_test(tc, recursion_loop_is_error);
	tcase_add_test(tc, deep_nesting_is_error);
	tcase_add_test(tc, unknown_name_is_warning);
	tcase_add_test(tc, undefined_reference_is_warning);
	tcase_add_test(tc, readonly_is_warning);
	tcase_add_test(tc, embedded_default);
	tcase_add_test(tc, load_from_dir_and_for_command);
	tcase_add_test(tc, errors_in_file_name_path);
	tcase_add_test(tc, split_list);
	tcase_add_test(tc, list_allocation_failure);
	tcase_add_test(tc, allocation_failure_every_site);
	tcase_add_test(tc, print_like_postconf);
	tcase_add_test(tc, param_table_described);
	tcase_add_test(tc, refcount);
	tcase_add_test(tc, myhostname_set_means_no_lookup);
	tcase_add_test(tc, keyword_lists);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
