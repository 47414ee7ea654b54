/*
 * tests/unit/test_resolve.c: address classes (what smtpd's
 * reject_unlisted_recipient and reject_unauth_destination rely on) and
 * expansion for delivery (virtual aliases, aliases with loops and
 * self-references, local_mailbox_base, system users, virtual mailboxes).
 */
#include <check.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "core/mem.h"
#include "queue/queue.h"
#include "queue/queue_int.h"

static const char cf[] =
	"myhostname = mx.example.com\n"
	"mydestination = $myhostname, localhost, Example.COM\n"
	"alias_maps = inline:{ info=alice, { multi = alice, bob }, loop1=loop2, loop2=loop1,"
	" { selfish = selfish, alice }, { piped = |/bin/cat } }\n"
	"local_recipient_maps = inline:{ alice=1, bob=1, selfish=1 } $alias_maps\n"
	"local_mailbox_base = /srv/mail\n"
	"home_mailbox = Maildir/\n"
	"virtual_alias_maps = inline:{ info@virt.example=alice@mx.example.com,"
	" { group@virt.example = alice, bob@remote.example }, { me@virt.example = me@virt.example, bob } }\n"
	"virtual_mailbox_domains = vhost.example\n"
	"virtual_mailbox_maps = inline:{ u1@vhost.example=vhost.example/u1/, u2@vhost.example=vhost.example/u2 }\n"
	"virtual_mailbox_base = /srv/vmail\n"
	"relay_domains = relay.example\n";

static struct conf *load(const char *text)
{
	struct conf_diags d = { 0 };
	struct conf *c = conf_load_text(text, "test.cf", &d);
	int i;

	for (i = 0; i < d.n; i++)
		fprintf(stderr, "%s\n", d.v[i].text);
	conf_diags_free(&d);
	ck_assert_ptr_nonnull(c);
	return c;
}

static struct resolver *rnew(struct conf *c)
{
	char err[512];
	struct resolver *r = resolver_new(c, err, sizeof err);

	ck_assert_msg(r != NULL, "resolver_new: %s", err);
	return r;
}

static void expect(struct resolver *r, const char *addr, enum resolve_class cls, int known)
{
	struct resolve_result res;

	ck_assert_int_eq(resolver_classify(r, addr, &res), 0);
	ck_assert_msg(res.cls == cls, "%s: class %d, expected %d", addr, res.cls, cls);
	ck_assert_msg(res.known == known, "%s: known %d, expected %d", addr, res.known, known);
}

START_TEST(classify)
{
	struct conf *c = load(cf);
	struct resolver *r = rnew(c);

	expect(r, "alice@mx.example.com", RESOLVE_LOCAL, 1);
	expect(r, "ALICE@MX.Example.Com", RESOLVE_LOCAL, 1);
	expect(r, "alice@example.com", RESOLVE_LOCAL, 1);
	expect(r, "alice", RESOLVE_LOCAL, 1);
	expect(r, "info@localhost", RESOLVE_LOCAL, 1);       /* an alias is a recipient */
	expect(r, "nobody@mx.example.com", RESOLVE_LOCAL, 0);
	expect(r, "postmaster@mx.example.com", RESOLVE_LOCAL, 1);
	expect(r, "Postmaster", RESOLVE_LOCAL, 1);
	expect(r, "info@virt.example", RESOLVE_VIRTUAL_ALIAS, 1);
	expect(r, "u1@vhost.example", RESOLVE_VIRTUAL, 1);
	expect(r, "nobody@vhost.example", RESOLVE_VIRTUAL, 0);
	expect(r, "x@relay.example", RESOLVE_RELAY, 1);
	expect(r, "x@gmail.com", RESOLVE_REMOTE, 1);
	expect(r, "x@virt.example", RESOLVE_REMOTE, 1);      /* only listed aliases are ours */
	resolver_free(r);
	conf_unref(c);
}
END_TEST

START_TEST(empty_local_recipient_maps_accepts_anyone)
{
	struct conf *c = load("myhostname = mx.example.com\nalias_maps =\nlocal_recipient_maps =\n");
	struct resolver *r = rnew(c);

	expect(r, "whoever@mx.example.com", RESOLVE_LOCAL, 1);
	expect(r, "whoever@localhost", RESOLVE_LOCAL, 1);
	expect(r, "whoever@elsewhere.example", RESOLVE_REMOTE, 1);
	resolver_free(r);
	conf_unref(c);
}
END_TEST

static void expand(struct resolver *r, const char *addr, struct target_list *l)
{
	memset(l, 0, sizeof *l);
	ck_assert_int_eq(resolver_expand(r, addr, l), 0);
}

START_TEST(expand_aliases)
{
	struct conf *c = load(cf);
	struct resolver *r = rnew(c);
	struct target_list l;

	expand(r, "alice@mx.example.com", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_int_eq(l.v[0].kind, TGT_MAILDIR);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	ck_assert_int_eq(l.v[0].via, VIA_SELF);   /* local_mailbox_base: written by frugal itself */
	ck_assert_str_eq(l.v[0].base, "/srv/mail");
	ck_assert_str_eq(l.v[0].rel, "alice/Maildir/");
	ck_assert_str_eq(l.v[0].service, "local");
	target_list_free(&l);

	expand(r, "info@localhost", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	target_list_free(&l);

	expand(r, "multi@mx.example.com", &l);
	ck_assert_int_eq(l.n, 2);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	ck_assert_str_eq(l.v[1].path, "/srv/mail/bob/Maildir/");
	target_list_free(&l);

	/* an alias to itself delivers to the user, plus the rest of the list */
	expand(r, "selfish@mx.example.com", &l);
	ck_assert_int_eq(l.n, 2);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/selfish/Maildir/");
	ck_assert_str_eq(l.v[1].path, "/srv/mail/alice/Maildir/");
	target_list_free(&l);

	/* a loop terminates and delivers nowhere (qmgr bounces it as a loop) */
	expand(r, "loop1@mx.example.com", &l);
	ck_assert_int_eq(l.n, 0);
	target_list_free(&l);

	expand(r, "piped@mx.example.com", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_int_eq(l.v[0].kind, TGT_BOUNCE);
	target_list_free(&l);

	resolver_free(r);
	conf_unref(c);
}
END_TEST

START_TEST(expand_virtual)
{
	struct conf *c = load(cf);
	struct resolver *r = rnew(c);
	struct target_list l;

	expand(r, "info@virt.example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].addr, "alice@mx.example.com");
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	target_list_free(&l);

	/* bare names in virtual alias values are in $myorigin; remote stays queued */
	expand(r, "group@virt.example", &l);
	ck_assert_int_eq(l.n, 2);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	ck_assert_int_eq(l.v[1].kind, TGT_DEFER);
	ck_assert_int_eq(l.v[1].never_expire, 1);
	ck_assert_ptr_nonnull(strstr(l.v[1].reason, "smtp is not available"));
	target_list_free(&l);

	expand(r, "u1@vhost.example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_int_eq(l.v[0].kind, TGT_MAILDIR);
	ck_assert_str_eq(l.v[0].path, "/srv/vmail/vhost.example/u1/");
	ck_assert_str_eq(l.v[0].service, "virtual");
	target_list_free(&l);

	expand(r, "u2@vhost.example", &l);   /* no trailing slash: mbox */
	ck_assert_int_eq(l.v[0].kind, TGT_MBOX);
	target_list_free(&l);

	expand(r, "nobody@vhost.example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_int_eq(l.v[0].kind, TGT_BOUNCE);
	ck_assert_str_eq(l.v[0].dsn, "5.1.1");
	target_list_free(&l);

	expand(r, "x@relay.example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_int_eq(l.v[0].kind, TGT_DEFER);
	target_list_free(&l);

	resolver_free(r);
	conf_unref(c);
}
END_TEST

START_TEST(expand_virtual_self_reference)
{
	struct conf *c = load(cf);
	struct resolver *r = rnew(c);
	struct target_list l;

	/* me@virt.example = me@virt.example, bob: itself goes on (remote here), plus bob */
	expand(r, "me@virt.example", &l);
	ck_assert_int_eq(l.n, 2);
	ck_assert_str_eq(l.v[0].addr, "me@virt.example");
	ck_assert_int_eq(l.v[0].kind, TGT_DEFER);
	ck_assert_str_eq(l.v[1].path, "/srv/mail/bob/Maildir/");
	target_list_free(&l);
	resolver_free(r);
	conf_unref(c);
}
END_TEST

START_TEST(expand_system_users)
{
	struct conf *c = load("myhostname = mx.example.com\nalias_maps =\nhome_mailbox = Maildir/\n");
	struct resolver *r = rnew(c);
	struct target_list l;

	expand(r, "root@localhost", &l);
	ck_assert_int_eq(l.n, 1);
	if (geteuid() == 0) {
		/* the user frugal itself runs as: written by this process */
		ck_assert_int_eq(l.v[0].kind, TGT_MAILDIR);
		ck_assert_int_eq(l.v[0].via, VIA_SELF);
		ck_assert_int_eq((int)l.v[0].uid, 0);
		ck_assert_ptr_nonnull(strstr(l.v[0].path, "/Maildir/"));
	} else {
		/* unprivileged: another user's mailbox cannot be written */
		ck_assert_int_eq(l.v[0].kind, TGT_DEFER);
		ck_assert_ptr_nonnull(strstr(l.v[0].reason, "not running as root"));
	}
	target_list_free(&l);
	/* with the delivery helpers: another user's home goes to the local helper, by name */
	{
		struct passwd *pw = getpwnam("daemon");

		resolver_use_helpers(1);
		if (pw && pw->pw_uid != geteuid()) {
			expand(r, "daemon@localhost", &l);
			ck_assert_int_eq(l.v[0].kind, TGT_MAILDIR);
			ck_assert_int_eq(l.v[0].via, VIA_LOCAL);
			ck_assert_str_eq(l.v[0].rel, "daemon");
			ck_assert_int_eq((int)l.v[0].uid, (int)pw->pw_uid);
			target_list_free(&l);
		}
		if (geteuid() != 0) {
			expand(r, "root@localhost", &l);   /* never as root */
			ck_assert_int_eq(l.v[0].kind, TGT_DEFER);
			ck_assert_ptr_nonnull(strstr(l.v[0].reason, "does not deliver as root"));
			target_list_free(&l);
		}
		resolver_use_helpers(0);
	}

	expand(r, "no-such-user-xyzzy@localhost", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_int_eq(l.v[0].kind, TGT_BOUNCE);
	ck_assert_ptr_nonnull(strstr(l.v[0].reason, "unknown user"));
	target_list_free(&l);

	expand(r, "..@localhost", &l);   /* never a path component */
	ck_assert_int_eq(l.v[0].kind, TGT_BOUNCE);
	target_list_free(&l);
	resolver_free(r);
	conf_unref(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("resolve");
	TCase *tc = tcase_create("resolve");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, classify);
	tcase_add_test(tc, empty_local_recipient_maps_accepts_anyone);
	tcase_add_test(tc, expand_aliases);
	tcase_add_test(tc, expand_virtual);
	tcase_add_test(tc, expand_virtual_self_reference);
	tcase_add_test(tc, expand_system_users);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
