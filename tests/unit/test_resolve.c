/*
 * tests/unit/test_resolve.c: address classes (what smtpd's
 * reject_unlisted_recipient and reject_unauth_destination rely on) and
 * expansion for delivery (virtual aliases, aliases with loops and
 * self-references, local_mailbox_base, system users, virtual mailboxes);
 * recipient_delimiter, catch-all virtual aliases, alias forms refused at
 * open (|command, /file, :include:) and bounced at delivery, and
 * queue/cleanup.c (canonical maps, masquerade_domains).
 */
#include <check.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/map.h"
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

/* lax: cf's "piped" alias is there for the delivery-time bounce (a table changed without check) */
static struct resolver *rnew(struct conf *c)
{
	char err[512];
	struct resolver *r;

	resolver_lax_tables(1);
	r = resolver_new(c, err, sizeof err);
	resolver_lax_tables(0);

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
	ck_assert_str_eq(l.v[0].dsn, "5.7.1");
	ck_assert_str_eq(l.v[0].reason, "mail to command is restricted");
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


/* ---- alias forms frugal does not deliver to ------------------------------ */

static void refused(const char *text, const char *want1, const char *want2)
{
	struct conf *c = load(text);
	char err[1024] = "";
	struct resolver *r = resolver_new(c, err, sizeof err);

	ck_assert_msg(r == NULL, "opened a table with a refused form: %s", text);
	ck_assert_msg(strstr(err, want1) && strstr(err, want2), "error \"%s\" lacks \"%s\" / \"%s\"", err,
	    want1, want2);
	conf_unref(c);
}

START_TEST(refuse_alias_forms)
{
	char dir[] = "/tmp/test_resolve_XXXXXX", path[256], err[512], *text;
	FILE *f;
	struct target_list l;
	struct conf *c;
	struct resolver *r;

	refused("alias_maps = inline:{ a=alice, { prog = alice, |/usr/bin/prog } }\n",
	    "alias_maps: inline:", "key \"prog\": \"|/usr/bin/prog\": mail to command is restricted");
	refused("alias_maps = inline:{ log=/var/log/mail.copy }\n", "key \"log\"", "mail to file is restricted");
	refused("alias_maps = inline:{ list=:include:/etc/list }\n", "key \"list\"",
	    "mail to :include: file is restricted");
	refused("alias_maps =\nvirtual_alias_maps = inline:{ x@virt.example=|/bin/cat }\n",
	    "virtual_alias_maps", "mail to command is restricted");

	/* a cdb table (what `frugal map -a` builds): walked with cdb_seqnext, named in the error */
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/aliases", dir);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fprintf(f, "postmaster: alice\nsales: alice, bob\nprog: \"|/usr/bin/procmail -a x\"\n");
	fclose(f);
	ck_assert_int_eq(map_compile(path, 1, err, sizeof err), 0);
	ck_assert_ptr_nonnull(text = mem_printf("alias_maps = cdb:%s\n", path));
	c = load(text);
	r = resolver_new(c, err, sizeof err);
	ck_assert_ptr_null(r);
	ck_assert_msg(strstr(err, "alias_maps: cdb:") && strstr(err, "key \"prog\"") &&
	    strstr(err, "mail to command is restricted"), "%s", err);
	conf_unref(c);
	mem_free(text);

	/* opened anyway (changed after check): delivery bounces with Postfix's words */
	c = load("myhostname = mx.example.com\nlocal_mailbox_base = /srv/mail\n"
	    "alias_maps = inline:{ { both = alice, /tmp/file } }\n");
	r = rnew(c);
	expand(r, "both@localhost", &l);
	ck_assert_int_eq(l.n, 2);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	ck_assert_int_eq(l.v[1].kind, TGT_BOUNCE);
	ck_assert_str_eq(l.v[1].dsn, "5.7.1");
	ck_assert_str_eq(l.v[1].reason, "mail to file is restricted");
	target_list_free(&l);
	resolver_free(r);
	conf_unref(c);
	unlink(path);
	snprintf(path, sizeof path, "%s/aliases.cdb", dir);
	unlink(path);
	rmdir(dir);
}
END_TEST

/* ---- recipient_delimiter --------------------------------------------------- */

START_TEST(addr_ext_split)
{
	ck_assert_uint_eq(map_addr_ext("alice+tag@x", "+"), 5);
	ck_assert_uint_eq(map_addr_ext("alice+tag", "+"), 5);
	ck_assert_uint_eq(map_addr_ext("alice+tag@x", ""), 0);
	ck_assert_uint_eq(map_addr_ext("alice+tag@x", NULL), 0);
	ck_assert_uint_eq(map_addr_ext("alice@x+y", "+"), 0);      /* a delimiter in the domain is none */
	ck_assert_uint_eq(map_addr_ext("+tag@x", "+"), 0);         /* nothing before it: no split */
	ck_assert_uint_eq(map_addr_ext("a-b+c@x", "+-"), 1);       /* the first of any delimiter */
	ck_assert_uint_eq(map_addr_ext("a+b-c@x", "-+"), 1);
	ck_assert_uint_eq(map_addr_ext("owner-list@x", "-"), 0);   /* Postfix never splits these */
	ck_assert_uint_eq(map_addr_ext("list-request@x", "-"), 0);
	ck_assert_uint_eq(map_addr_ext("owner-list@x", "+"), 0);   /* no '-' delimiter: nothing to split */
	ck_assert_uint_eq(map_addr_ext("mailer-daemon@x", "-"), 0);
	ck_assert_uint_eq(map_addr_ext("Postmaster@x", "+"), 0);
	ck_assert_uint_eq(map_addr_ext("postmaster+x@x", "+"), 10);
}
END_TEST

static const char cfd[] =
	"myhostname = mx.example.com\n"
	"mydestination = $myhostname, localhost\n"
	"recipient_delimiter = +-\n"
	"alias_maps = inline:{ info=alice, { alice+special = bob }, owner-list=carol }\n"
	"local_recipient_maps = inline:{ alice=1, bob=1, carol=1 } $alias_maps\n"
	"local_mailbox_base = /srv/mail\n"
	"home_mailbox = Maildir/\n"
	"virtual_alias_maps = inline:{ info@virt.example=alice@mx.example.com,"
	" { vip+boss@virt.example = bob }, vip@virt.example=carol,"
	" { both@virt.example = alice, bob@remote.example },"
	" sales@catch.example=bob, @catch.example=alice@mx.example.com }\n"
	"virtual_mailbox_domains = vhost.example\n"
	"virtual_mailbox_maps = inline:{ u1@vhost.example=vhost.example/u1/ }\n"
	"virtual_mailbox_base = /srv/vmail\n";

START_TEST(delimiter_classify)
{
	struct conf *c = load(cfd);
	struct resolver *r = rnew(c);

	expect(r, "alice+tag@mx.example.com", RESOLVE_LOCAL, 1);
	expect(r, "alice-tag@mx.example.com", RESOLVE_LOCAL, 1);
	expect(r, "alice+tag", RESOLVE_LOCAL, 1);
	expect(r, "info+x@localhost", RESOLVE_LOCAL, 1);          /* an alias found as "info" */
	expect(r, "nobody+tag@mx.example.com", RESOLVE_LOCAL, 0);  /* reject_unlisted_recipient: 550 */
	expect(r, "owner-list@localhost", RESOLVE_LOCAL, 1);
	expect(r, "info+tag@virt.example", RESOLVE_VIRTUAL_ALIAS, 1);
	expect(r, "u1+tag@vhost.example", RESOLVE_VIRTUAL, 1);
	expect(r, "u2+tag@vhost.example", RESOLVE_VIRTUAL, 0);
	resolver_free(r);
	conf_unref(c);

	/* without recipient_delimiter the extension is part of the name */
	c = load("myhostname = mx.example.com\nalias_maps =\nlocal_recipient_maps = inline:{ alice=1 }\n");
	r = rnew(c);
	expect(r, "alice+tag@mx.example.com", RESOLVE_LOCAL, 0);
	resolver_free(r);
	conf_unref(c);
}
END_TEST

START_TEST(delimiter_expand)
{
	struct conf *c = load(cfd);
	struct resolver *r = rnew(c);
	struct target_list l;

	/* user+tag: user's mailbox, Delivered-To: the whole address */
	expand(r, "Alice+Tag@mx.example.com", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	ck_assert_str_eq(l.v[0].addr, "Alice+Tag@mx.example.com");
	target_list_free(&l);

	/* aliases(5): user+ext is looked up before user */
	expand(r, "alice+special@mx.example.com", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/bob/Maildir/");
	target_list_free(&l);

	/* found as "info": the extension is not propagated to alias results (Postfix's default) */
	expand(r, "info+x@localhost", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	ck_assert_str_eq(l.v[0].addr, "alice@mx.example.com");
	target_list_free(&l);

	/* virtual(5): found as info@virt.example, the extension is carried to the result */
	expand(r, "info+tag@virt.example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].addr, "alice+tag@mx.example.com");
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	target_list_free(&l);

	/* the full address wins over the unextended one */
	expand(r, "vip+boss@virt.example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/bob/Maildir/");
	target_list_free(&l);
	expand(r, "vip+other@virt.example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/carol/Maildir/");
	ck_assert_str_eq(l.v[0].addr, "carol+other@mx.example.com");
	target_list_free(&l);

	/* every result address gets the extension */
	expand(r, "both-x@virt.example", &l);
	ck_assert_int_eq(l.n, 2);
	ck_assert_str_eq(l.v[0].addr, "alice-x@mx.example.com");
	ck_assert_str_eq(l.v[1].addr, "bob-x@remote.example");
	target_list_free(&l);

	/* virtual mailboxes: user+ext@domain, then user@domain */
	expand(r, "u1+tag@vhost.example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/vmail/vhost.example/u1/");
	ck_assert_str_eq(l.v[0].addr, "u1+tag@vhost.example");
	target_list_free(&l);

	/* owner-list is never split, even with '-' as a delimiter */
	expand(r, "owner-list@localhost", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/carol/Maildir/");
	target_list_free(&l);
	resolver_free(r);
	conf_unref(c);
}
END_TEST

/* ---- catch-all: @domain in virtual_alias_maps ------------------------------ */

START_TEST(catch_all)
{
	struct conf *c = load(cfd);
	struct resolver *r = rnew(c);
	struct target_list l;

	expect(r, "anyone@catch.example", RESOLVE_VIRTUAL_ALIAS, 1);
	expect(r, "sales@catch.example", RESOLVE_VIRTUAL_ALIAS, 1);
	expect(r, "anyone@other.example", RESOLVE_REMOTE, 1);

	expand(r, "sales@catch.example", &l);      /* user@domain before @domain */
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/bob/Maildir/");
	target_list_free(&l);
	expand(r, "Whoever@Catch.Example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/alice/Maildir/");
	ck_assert_str_eq(l.v[0].addr, "alice@mx.example.com");
	target_list_free(&l);
	/* sales+x: sales+x@, sales@ (found: bob+x) come before @catch.example */
	expand(r, "sales+x@catch.example", &l);
	ck_assert_int_eq(l.n, 1);
	ck_assert_str_eq(l.v[0].path, "/srv/mail/bob/Maildir/");
	ck_assert_str_eq(l.v[0].addr, "bob+x@mx.example.com");
	target_list_free(&l);
	resolver_free(r);
	conf_unref(c);
}
END_TEST

/* ---- cleanup: canonical maps and masquerading ------------------------------ */

static void sender_is(struct resolver *r, const char *in, const char *want, int rc)
{
	char out[512];

	ck_assert_int_eq(cleanup_sender(r, in, out, sizeof out), rc);
	ck_assert_msg(strcmp(out, want) == 0, "sender %s: \"%s\", expected \"%s\"", in, out, want);
}

static void rcpt_is(struct resolver *r, const char *in, const char *want, int rc)
{
	char out[512];

	ck_assert_int_eq(cleanup_recipient(r, in, out, sizeof out), rc);
	ck_assert_msg(strcmp(out, want) == 0, "recipient %s: \"%s\", expected \"%s\"", in, out, want);
}

START_TEST(canonical_order)
{
	struct conf *c = load(
	    "myhostname = mx.example.com\nmydestination = $myhostname, localhost\nalias_maps =\n"
	    "recipient_delimiter = +\nlocal_recipient_maps = inline:{ alice=1 }\n"
	    "sender_canonical_maps = inline:{ alice@mx.example.com=a1@corp.example, alice=a2@corp.example,"
	    " @mx.example.com=@corp.example, bob=robert, chain1@x.example=chain2@x.example,"
	    " chain2@x.example=chain3@x.example, l1@x.example=l2@x.example, l2@x.example=l1@x.example,"
	    " @old.example=@new.example }\n"
	    "recipient_canonical_maps = inline:{ info@mx.example.com=alice@mx.example.com }\n");
	struct resolver *r = rnew(c);
	char out[8];

	sender_is(r, "alice@mx.example.com", "a1@corp.example", 1);      /* user@domain first */
	sender_is(r, "alice@localhost", "a2@corp.example", 1);           /* then user, our domains only */
	sender_is(r, "alice@remote.example", "alice@remote.example", 0); /* not ours: no "user" key */
	sender_is(r, "carol@mx.example.com", "carol@corp.example", 1);   /* then @domain: same user */
	/* a bare result is in $myorigin, where @mx.example.com applies in the next round */
	sender_is(r, "bob@localhost", "robert@corp.example", 1);
	sender_is(r, "alice+tag@mx.example.com", "a1+tag@corp.example", 1); /* the extension is kept */
	sender_is(r, "carol+tag@mx.example.com", "carol+tag@corp.example", 1);
	sender_is(r, "x@old.example", "x@new.example", 1);
	sender_is(r, "chain1@x.example", "chain3@x.example", 1);          /* applied until it settles */
	sender_is(r, "l1@x.example", "l1@x.example", 1);                  /* a loop ends */
	sender_is(r, "", "", 0);                                          /* the null sender stays */
	/* recipients have their own table; the sender's does not apply */
	rcpt_is(r, "info@mx.example.com", "alice@mx.example.com", 1);
	rcpt_is(r, "alice@mx.example.com", "alice@mx.example.com", 0);
	/* a recipient the table rewrites is not "unlisted" (Postfix's check_rcpt_maps) */
	expect(r, "info@mx.example.com", RESOLVE_LOCAL, 1);
	expect(r, "nobody@mx.example.com", RESOLVE_LOCAL, 0);
	sender_is(r, "info@mx.example.com", "info@corp.example", 1);
	/* a result that does not fit is an error, never a truncated address */
	ck_assert_int_eq(cleanup_sender(r, "alice@mx.example.com", out, sizeof out), -1);
	resolver_free(r);
	conf_unref(c);
}
END_TEST

START_TEST(masquerade)
{
	char *m1[] = { "!sub.example.com", "example.com", NULL };
	char *m2[] = { "example.com", "!sub.example.com", NULL };
	struct conf *c;
	struct resolver *r;

	ck_assert_str_eq(cleanup_masquerade(m1, "host.example.com"), "example.com");
	ck_assert_str_eq(cleanup_masquerade(m1, "a.b.example.com"), "example.com");
	ck_assert_ptr_null(cleanup_masquerade(m1, "example.com"));      /* itself: as it is */
	ck_assert_ptr_null(cleanup_masquerade(m1, "sub.example.com"));  /* the exception */
	ck_assert_ptr_null(cleanup_masquerade(m1, "a.sub.example.com"));
	ck_assert_ptr_null(cleanup_masquerade(m1, "notexample.com"));   /* a suffix is not a parent */
	ck_assert_ptr_null(cleanup_masquerade(m1, "example.org"));
	/* order matters, as in Postfix: an exception after its parent comes too late */
	ck_assert_str_eq(cleanup_masquerade(m2, "sub.example.com"), "example.com");

	c = load("myhostname = mx.example.com\nalias_maps =\n"
	    "masquerade_domains = !sub.example.com, Example.COM\n"
	    "sender_canonical_maps = inline:{ alice@corp.test=alice@dev.example.com }\n"
	    "recipient_canonical_maps =\n");
	r = rnew(c);
	sender_is(r, "user@host.example.com", "user@example.com", 1);
	sender_is(r, "user@sub.example.com", "user@sub.example.com", 0);
	sender_is(r, "user@example.com", "user@example.com", 0);
	sender_is(r, "alice@corp.test", "alice@example.com", 1);         /* canonical, then masquerading */
	rcpt_is(r, "user@host.example.com", "user@host.example.com", 0);  /* envelope_sender only */
	resolver_free(r);
	conf_unref(c);
}
END_TEST

/* ---- header addresses -------------------------------------------------------- */

struct spans {
	char got[8][128];
	int n;
	const char *v;
};

static int collect(void *arg, size_t a, size_t b)
{
	struct spans *sp = arg;

	if (sp->n < 8)
		snprintf(sp->got[sp->n++], sizeof sp->got[0], "%.*s", (int)(b - a), sp->v + a);
	return 0;
}

static void scan_is(const char *v, int n, const char *a0, const char *a1, const char *a2)
{
	struct spans sp;
	const char *want[3] = { a0, a1, a2 };
	int i;

	memset(&sp, 0, sizeof sp);
	sp.v = v;
	ck_assert_int_eq(cleanup_addr_scan(v, strlen(v), collect, &sp), 0);
	ck_assert_msg(sp.n == n, "\"%s\": %d addresses, expected %d", v, sp.n, n);
	for (i = 0; i < n && i < 3; i++)
		ck_assert_msg(strcmp(sp.got[i], want[i]) == 0, "\"%s\": #%d \"%s\", expected \"%s\"", v, i,
		    sp.got[i], want[i]);
}

START_TEST(header_scan)
{
	scan_is(" a@b.example", 1, "a@b.example", NULL, NULL);
	scan_is(" John Smith <j@x.example>, k@y.example (Kay)", 2, "j@x.example", "k@y.example", NULL);
	scan_is(" \"Smith, John\" <j@x.example>", 1, "j@x.example", NULL, NULL);   /* a comma in quotes */
	scan_is(" (c, d) <j@x.example>", 1, "j@x.example", NULL, NULL);             /* and in a comment */
	scan_is(" friends: a@x.example, b@y.example;, c@z.example", 3, "a@x.example", "b@y.example", "c@z.example");
	scan_is(" undisclosed-recipients:;", 0, NULL, NULL, NULL);
	scan_is(" <@relay.example:j@x.example>", 1, "j@x.example", NULL, NULL);     /* source route */
	scan_is(" John Smith", 0, NULL, NULL, NULL);                                  /* a phrase only */
	scan_is(" a(c)@b.example", 0, NULL, NULL, NULL);                              /* left alone */
	scan_is(" \"j d\"@x.example", 1, "\"j d\"@x.example", NULL, NULL);
	scan_is(" a@x.example,\n\tb@y.example", 2, "a@x.example", "b@y.example", NULL); /* folded */
	scan_is(" <>", 0, NULL, NULL, NULL);
	scan_is(" <unterminated@x", 1, "unterminated@x", NULL, NULL);
	scan_is(" \"unterminated", 1, "\"unterminated", NULL, NULL);
	scan_is(" ((", 0, NULL, NULL, NULL);
}
END_TEST

START_TEST(header_rewrite)
{
	struct conf *c = load("myhostname = mx.example.com\nalias_maps =\n"
	    "sender_canonical_maps = inline:{ alice@mx.example.com=alice.smith@example.com }\n"
	    "recipient_canonical_maps = inline:{ info@mx.example.com=help@example.com }\n"
	    "masquerade_domains = example.com\n");
	struct resolver *r = rnew(c);
	char out[512], tiny[24];
	const char *h;

	ck_assert_int_eq(cleanup_header_class("From: x", 7), CLEANUP_HDR_SENDER);
	ck_assert_int_eq(cleanup_header_class("reply-to: x", 11), CLEANUP_HDR_SENDER);   /* Postfix's class */
	ck_assert_int_eq(cleanup_header_class("CC : x", 6), CLEANUP_HDR_RECIPIENT);
	ck_assert_int_eq(cleanup_header_class("Resent-Reply-To: x", 18), CLEANUP_HDR_RECIPIENT);
	ck_assert_int_eq(cleanup_header_class("Subject: From: x", 16), CLEANUP_HDR_NONE);
	ck_assert_int_eq(cleanup_header_class("From x", 6), CLEANUP_HDR_NONE);
	ck_assert_int_eq(cleanup_headers_wanted(r), 1);

	h = "From: Alice <alice@mx.example.com>\n";
	ck_assert_int_eq(cleanup_header(r, CLEANUP_HDR_SENDER, h, strlen(h), out, sizeof out), 1);
	ck_assert_str_eq(out, "From: Alice <alice.smith@example.com>\n");
	/* recipients: their own table, then masquerading (header_recipient is in its default classes) */
	h = "To: info@mx.example.com,\n\tBob <bob@host.example.com>, carol@other.example\n";
	ck_assert_int_eq(cleanup_header(r, CLEANUP_HDR_RECIPIENT, h, strlen(h), out, sizeof out), 1);
	ck_assert_str_eq(out, "To: help@example.com,\n\tBob <bob@example.com>, carol@other.example\n");
	/* the sender table is not the recipients': only masquerading applies */
	h = "Cc: alice@mx.example.com\n";
	ck_assert_int_eq(cleanup_header(r, CLEANUP_HDR_RECIPIENT, h, strlen(h), out, sizeof out), 1);
	ck_assert_str_eq(out, "Cc: alice@example.com\n");
	h = "Sender: nobody@example.com\n";
	ck_assert_int_eq(cleanup_header(r, CLEANUP_HDR_SENDER, h, strlen(h), out, sizeof out), 0);
	/* no room: -1, and the caller keeps the header */
	h = "From: alice@mx.example.com\n";
	ck_assert_int_eq(cleanup_header(r, CLEANUP_HDR_SENDER, h, strlen(h), tiny, sizeof tiny), -1);
	resolver_free(r);
	conf_unref(c);

	c = load("myhostname = mx.example.com\nalias_maps =\n");
	r = rnew(c);
	ck_assert_int_eq(cleanup_headers_wanted(r), 0);   /* nothing set: no header is held */
	resolver_free(r);
	conf_unref(c);
}
END_TEST

/* ---- ~/.forward at check ------------------------------------------------------- */

static int reports;
static char last_report[512];

static void report(const char *text)
{
	reports++;
	snprintf(last_report, sizeof last_report, "%s", text);
}

START_TEST(forward_files)
{
	char dir[] = "/tmp/test_forward_XXXXXX", path[400], home[200];
	struct conf *c;
	FILE *f, *pw;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(home, sizeof home, "%s/home", dir);
	ck_assert_int_eq(mkdir(home, 0700), 0);
	snprintf(path, sizeof path, "%s/.forward", home);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fputs("|/usr/bin/procmail\n", f);
	fclose(f);
	snprintf(path, sizeof path, "%s/passwd", dir);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fprintf(f, "fwd:x:1234:1234::%s:/bin/sh\nplain:x:1235:1235::%s/nohome:/bin/sh\n", home, dir);
	fclose(f);

	c = load("myhostname = mx.example.com\nalias_maps =\n");
	ck_assert_ptr_nonnull(pw = fopen(path, "r"));
	ck_assert_int_eq(resolver_check_forward(c, pw, report), 1);
	fclose(pw);
	ck_assert_int_eq(reports, 1);
	ck_assert_ptr_nonnull(strstr(last_report, "/home/.forward: user fwd: frugal does not read .forward"));
	conf_unref(c);

	/* local_mailbox_base: homes are not where mail goes, nothing to say */
	c = load("myhostname = mx.example.com\nalias_maps =\nlocal_mailbox_base = /srv/mail\n");
	ck_assert_ptr_nonnull(pw = fopen(path, "r"));
	ck_assert_int_eq(resolver_check_forward(c, pw, report), 0);
	fclose(pw);
	conf_unref(c);

	unlink(path);
	snprintf(path, sizeof path, "%s/.forward", home);
	unlink(path);
	rmdir(home);
	rmdir(dir);
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
	tcase_add_test(tc, refuse_alias_forms);
	tcase_add_test(tc, addr_ext_split);
	tcase_add_test(tc, delimiter_classify);
	tcase_add_test(tc, delimiter_expand);
	tcase_add_test(tc, catch_all);
	tcase_add_test(tc, canonical_order);
	tcase_add_test(tc, masquerade);
	tcase_add_test(tc, header_scan);
	tcase_add_test(tc, header_rewrite);
	tcase_add_test(tc, forward_files);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
