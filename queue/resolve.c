/*
 * queue/resolve.c: which recipients are ours and where their mail goes
 * (Postfix's trivial-rewrite plus the expansion local(8) and virtual(8) do).
 * Owns the routing tables it opens from one conf (aliases, virtual aliases,
 * virtual mailboxes, local recipients). Classification answers smtpd's
 * reject_unlisted_recipient/reject_unauth_destination; expansion turns one
 * envelope recipient into mailbox targets for qmgr. Must never write
 * anything, and never let a table error look like "unknown user" (that
 * would bounce good mail): table errors are -1 or a deferral.
 *
 * Address extensions (recipient_delimiter) follow Postfix: every table is
 * asked for user+ext first, then user (map_list_lookup_ext); a virtual
 * alias found without the extension gets it back on each result address
 * (propagate_unmatched_extensions = canonical, virtual), an alias does not;
 * the mailbox is user's, Delivered-To: keeps user+ext@domain. Alias values
 * that need a process or a file (|command, /file, :include:) are refused
 * when the tables are opened (check, serve, reload): frugal forks nothing
 * per message; `frugal check` names every ~/.forward it would ignore.
 */
#include "queue/queue_int.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/map.h"
#include "core/log.h"
#include "core/mem.h"

#define EXPAND_DEPTH_MAX 20     /* Postfix's alias nesting is similar */
#define EXPAND_SEEN_MAX  1000   /* bounds work per recipient */

/* A domain list element: a literal domain or a table of domains. */
struct domlist {
	char **names;           /* literals, lower-case; conf_list_free() */
	struct map_list *maps;  /* elements of the form type:name; may be NULL */
};

struct resolver {
	char *myhostname, *mydomain, *myorigin;   /* owned */
	char *home_mailbox, *local_mailbox_base, *virtual_mailbox_base;
	struct domlist mydestination, virtual_domains, relay_domains;
	struct map_list *alias, *local_rcpt, *valias, *vmailbox;
	char *delims;        /* recipient_delimiter; "" for none */
	struct cleanup *cleanup; /* canonical maps and masquerading (queue/cleanup.c); owned */
	int vhelper;         /* virtual mailboxes are written by the virtual helper, as vuid */
	uid_t vuid;
};

/*
 * Started as root, frugal writes other users' mailboxes through its delivery
 * helpers (queue/helperd.c); unprivileged, it writes only what it owns.
 */
static int use_helpers;
static int lax_tables;   /* tests only: open tables with refused alias forms (resolver_lax_tables) */

void resolver_lax_tables(int on)
{
	lax_tables = on;
}

void resolver_use_helpers(int on)
{
	use_helpers = on;
}

static char *dup_param(const struct conf *c, const char *name)
{
	const char *v = conf_str(c, name, 0);
	return mem_strdup(v ? v : "");
}

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

static int domlist_open(struct resolver *r, const struct conf *c, const char *name,
    struct domlist *d, char *err, size_t errlen)
{
	char **v = conf_list(c, name, 0);
	char *specs = NULL, *n;
	size_t i, j = 0;

	if (v == NULL) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	for (i = 0; v[i]; i++) {
		if (strchr(v[i], ':')) {
			n = mem_printf("%s%s%s", specs ? specs : "", specs ? ", " : "", v[i]);
			mem_free(specs);
			mem_free(v[i]);
			if ((specs = n) == NULL)
				goto nomem;
			continue;
		}
		/* conf expands $names; these literal forms survive only in odd configs */
		if (strcasecmp(v[i], "$myhostname") == 0 || strcasecmp(v[i], "${myhostname}") == 0) {
			mem_free(v[i]);
			v[i] = mem_strdup(r->myhostname);
		} else if (strcasecmp(v[i], "$mydomain") == 0 || strcasecmp(v[i], "${mydomain}") == 0) {
			mem_free(v[i]);
			v[i] = mem_strdup(r->mydomain);
		}
		if (v[i] == NULL)
			goto nomem;
		lower(v[i]);
		v[j++] = v[i];
	}
	v[j] = NULL;
	d->names = v;
	if (specs) {
		d->maps = map_list_open(specs, err, errlen);
		mem_free(specs);
		if (d->maps == NULL)
			return -1;
	}
	return 0;
nomem:
	for (i++; v[i]; i++)
		mem_free(v[i]);
	v[j] = NULL;
	conf_list_free(v);
	snprintf(err, errlen, "%s: out of memory", name);
	return -1;
}

static void domlist_close(struct domlist *d)
{
	if (d->names)
		conf_list_free(d->names);
	map_list_close(d->maps);
}

/* 1 in the list, 0 not, -1 table error */
static int domlist_match(struct domlist *d, const char *domain)
{
	char *v = NULL;
	int i, rc;

	for (i = 0; d->names && d->names[i]; i++)
		if (strcasecmp(d->names[i], domain) == 0)
			return 1;
	if (d->maps == NULL)
		return 0;
	rc = map_list_lookup(d->maps, domain, &v);
	mem_free(v);
	return rc;
}

static struct map_list *open_maps(const struct conf *c, const char *name, char *err, size_t errlen)
{
	const char *v = conf_str(c, name, 0);
	return map_list_open(v ? v : "", err, errlen);
}

/*
 * What an alias destination needs that frugal does not do: NULL for an
 * address. The words are Postfix local(8)'s (allow_mail_to_commands,
 * allow_mail_to_files); Postfix has no switch for :include:, frugal
 * refuses it like a file.
 */
static const char *restricted_form(const char *item)
{
	if (*item == '"')
		item++;
	if (*item == '|')
		return "mail to command is restricted";
	if (*item == '/')
		return "mail to file is restricted";
	if (strncasecmp(item, ":include:", 9) == 0)
		return "mail to :include: file is restricted";
	return NULL;
}

struct refusal {
	char key[256], item[256];
	const char *why;
};

static int refuse_entry(void *arg, const char *key, const char *value)
{
	struct refusal *f = arg;
	char **v = conf_split_list(value);
	int i;

	if (v == NULL)
		return -1;
	for (i = 0; v[i]; i++)
		if ((f->why = restricted_form(v[i])) != NULL) {
			snprintf(f->key, sizeof f->key, "%s", key);
			snprintf(f->item, sizeof f->item, "%s", v[i]);
			break;
		}
	conf_list_free(v);
	return f->why ? 1 : 0;
}

/* A configuration error naming the parameter, the table and the key. */
static int refuse_forms(struct map_list *l, const char *param, char *err, size_t errlen)
{
	struct refusal f;
	const char *spec = "";
	int r;

	memset(&f, 0, sizeof f);
	if ((r = map_list_walk(l, refuse_entry, &f, &spec)) == 0)
		return 0;
	if (r < 0)
		snprintf(err, errlen, "%s: %s: cannot read the table", param, spec);
	else
		snprintf(err, errlen, "%s: %s: key \"%s\": \"%s\": %s (frugal forks no process and "
		    "writes no file per message: deliver to a mailbox)", param, spec, f.key, f.item, f.why);
	return -1;
}

struct resolver *resolver_new(const struct conf *c, char *err, size_t errlen)
{
	struct resolver *r;

	if ((r = mem_calloc(1, sizeof *r)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if ((r->myhostname = dup_param(c, "myhostname")) == NULL ||
	    (r->mydomain = dup_param(c, "mydomain")) == NULL ||
	    (r->myorigin = dup_param(c, "myorigin")) == NULL ||
	    (r->home_mailbox = dup_param(c, "home_mailbox")) == NULL ||
	    (r->local_mailbox_base = dup_param(c, "local_mailbox_base")) == NULL ||
	    (r->virtual_mailbox_base = dup_param(c, "virtual_mailbox_base")) == NULL ||
	    (r->delims = dup_param(c, "recipient_delimiter")) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (*r->myorigin == '\0') {
		mem_free(r->myorigin);
		if ((r->myorigin = mem_strdup(r->myhostname)) == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	if (domlist_open(r, c, "mydestination", &r->mydestination, err, errlen) < 0 ||
	    domlist_open(r, c, "virtual_mailbox_domains", &r->virtual_domains, err, errlen) < 0 ||
	    domlist_open(r, c, "relay_domains", &r->relay_domains, err, errlen) < 0)
		goto fail;
	/*
	 * Virtual mailboxes belong to virtual_mailbox_owner (Postfix's
	 * virtual_uid_maps = static:...), written by the virtual helper that runs
	 * as that user. Unprivileged, frugal writes them as its own user.
	 */
	if (*conf_str(c, "virtual_mailbox_domains", 0)) {
		const char *owner = conf_str(c, "virtual_mailbox_owner", 0);
		struct passwd *pw = *owner ? getpwnam(owner) : NULL;

		if (pw && pw->pw_uid != geteuid() && use_helpers) {
			r->vhelper = 1;
			r->vuid = pw->pw_uid;
		} else if (pw && pw->pw_uid != geteuid() && geteuid() != 0) {
			/* root without helpers is `frugal check` (the wizard's too): the
			 * daemon started as root does use them, so nothing to warn about */
			log_warning("virtual", "virtual_mailbox_owner %s: frugal is not running as root: virtual "
			    "mailboxes are written as uid %ld", owner, (long)geteuid());
		} else if (!pw && *owner) {
			log_warning("virtual", "virtual_mailbox_owner %s: unknown user: virtual mailboxes "
			    "are written as uid %ld", owner, (long)geteuid());
		}
	}
	if ((r->alias = open_maps(c, "alias_maps", err, errlen)) == NULL ||
	    (r->local_rcpt = open_maps(c, "local_recipient_maps", err, errlen)) == NULL ||
	    (r->valias = open_maps(c, "virtual_alias_maps", err, errlen)) == NULL ||
	    (r->vmailbox = open_maps(c, "virtual_mailbox_maps", err, errlen)) == NULL)
		goto fail;
	if (!lax_tables && (refuse_forms(r->alias, "alias_maps", err, errlen) < 0 ||
	    refuse_forms(r->valias, "virtual_alias_maps", err, errlen) < 0))
		goto fail;
	if ((r->cleanup = cleanup_new(c, err, errlen)) == NULL)
		goto fail;
	return r;
fail:
	resolver_free(r);
	return NULL;
}

void resolver_free(struct resolver *r)
{
	if (r == NULL)
		return;
	domlist_close(&r->mydestination);
	domlist_close(&r->virtual_domains);
	domlist_close(&r->relay_domains);
	map_list_close(r->alias);
	map_list_close(r->local_rcpt);
	map_list_close(r->valias);
	map_list_close(r->vmailbox);
	cleanup_free(r->cleanup);
	mem_free(r->delims);
	mem_free(r->myhostname);
	mem_free(r->mydomain);
	mem_free(r->myorigin);
	mem_free(r->home_mailbox);
	mem_free(r->local_mailbox_base);
	mem_free(r->virtual_mailbox_base);
	mem_free(r);
}

/* "localhost" is always ours: mail to it can never be meant for elsewhere */
static int is_local_domain(struct resolver *r, const char *domain)
{
	if (strcasecmp(domain, "localhost") == 0 || strcasecmp(domain, "localhost.localdomain") == 0)
		return 1;
	return domlist_match(&r->mydestination, domain);
}

/* for queue/cleanup.c: canonical(5)'s "user" form is for $myorigin and $mydestination */
int resolver_local_domain(struct resolver *r, const char *domain)
{
	if (strcasecmp(domain, r->myorigin) == 0)
		return 1;
	return is_local_domain(r, domain);
}

struct cleanup *resolver_cleanup(struct resolver *r)
{
	return r->cleanup;
}

const char *resolver_delims(const struct resolver *r)
{
	return r->delims;
}

const char *resolver_myorigin(const struct resolver *r)
{
	return r->myorigin;
}

/* Split "user@domain" (the last @); a bare "user" is local, in $myorigin. */
static void split_addr(struct resolver *r, const char *addr, char *local, size_t llen,
    const char **domain, int *bare)
{
	const char *at = strrchr(addr, '@');
	size_t n = at ? (size_t)(at - addr) : strlen(addr);

	if (n >= llen)
		n = llen - 1;
	memcpy(local, addr, n);
	local[n] = '\0';
	*bare = at == NULL || at[1] == '\0';
	*domain = *bare ? r->myorigin : at + 1;
}

/* Is a local part a known local recipient? 1 yes, 0 no, -1 table error. */
static int local_known(struct resolver *r, const char *local)
{
	char *v = NULL;
	int rc;

	if (strcasecmp(local, "postmaster") == 0)
		return 1;   /* RFC 5321 4.5.1: must always be accepted */
	if (map_list_empty(r->local_rcpt))
		return 1;
	if ((rc = map_list_lookup_ext(r->alias, local, 1, r->delims, &v, NULL)) != 0) {
		mem_free(v);
		return rc;
	}
	rc = map_list_lookup_ext(r->local_rcpt, local, 1, r->delims, &v, NULL);
	mem_free(v);
	return rc;
}

/*
 * Postfix smtpd_check.c (check_rcpt_maps): an address that
 * recipient_canonical_maps rewrites is not "unlisted"; cleanup turns it
 * into one that is.
 */
static int classify_canonical(struct resolver *r, const char *addr, struct resolve_result *res)
{
	int rc;

	if (res->known)
		return 0;
	if ((rc = cleanup_rcpt_listed(r, addr)) < 0)
		return -1;
	res->known = rc;
	return 0;
}

int resolver_classify(struct resolver *r, const char *addr, struct resolve_result *res)
{
	char local[1024], *v = NULL;
	const char *domain;
	int bare, loc, rc;

	res->cls = RESOLVE_REMOTE;
	res->known = 1;
	split_addr(r, addr, local, sizeof local, &domain, &bare);
	if (bare) {
		res->cls = RESOLVE_LOCAL;
		if ((rc = local_known(r, local)) < 0)
			return -1;
		res->known = rc;
		return classify_canonical(r, addr, res);
	}
	if ((loc = is_local_domain(r, domain)) < 0)
		return -1;
	/* virtual aliases apply to every domain, before anything else */
	if ((rc = map_list_lookup_ext(r->valias, addr, loc, r->delims, &v, NULL)) < 0)
		return -1;
	mem_free(v);
	if (rc == 1) {
		res->cls = RESOLVE_VIRTUAL_ALIAS;
		return 0;
	}
	if (loc) {
		res->cls = RESOLVE_LOCAL;
		if ((rc = local_known(r, local)) < 0)
			return -1;
		res->known = rc;
		return classify_canonical(r, addr, res);
	}
	if ((rc = domlist_match(&r->virtual_domains, domain)) < 0)
		return -1;
	if (rc) {
		res->cls = RESOLVE_VIRTUAL;
		v = NULL;
		if ((rc = map_list_lookup_ext(r->vmailbox, addr, 0, r->delims, &v, NULL)) < 0)
			return -1;
		mem_free(v);
		res->known = rc;
		return classify_canonical(r, addr, res);
	}
	if ((rc = domlist_match(&r->relay_domains, domain)) < 0)
		return -1;
	res->cls = rc ? RESOLVE_RELAY : RESOLVE_REMOTE;
	return 0;
}

/* ---- expansion ------------------------------------------------------------- */

struct expand {
	struct resolver *r;
	struct target_list *out;
	char **seen;            /* addresses already expanded (loop guard) */
	int nseen, capseen;
	int nomem;
};

void target_list_free(struct target_list *l)
{
	int i;

	for (i = 0; i < l->n; i++) {
		mem_free(l->v[i].addr);
		mem_free(l->v[i].path);
		mem_free(l->v[i].base);
		mem_free(l->v[i].rel);
	}
	mem_free(l->v);
	memset(l, 0, sizeof *l);
}

static struct target *add_target(struct expand *x, enum target_kind kind, const char *addr,
    const char *service, const char *dsn, const char *reason)
{
	struct target_list *l = x->out;
	struct target *t;

	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 4;
		if ((t = mem_realloc(l->v, (size_t)cap * sizeof *t)) == NULL) {
			x->nomem = 1;
			return NULL;
		}
		l->v = t;
		l->cap = cap;
	}
	t = &l->v[l->n];
	memset(t, 0, sizeof *t);
	if ((t->addr = mem_strdup(addr)) == NULL) {
		x->nomem = 1;
		return NULL;
	}
	t->kind = kind;
	t->service = service;
	snprintf(t->dsn, sizeof t->dsn, "%s", dsn);
	snprintf(t->reason, sizeof t->reason, "%s", reason ? reason : "");
	l->n++;
	return t;
}

/*
 * 1 when addr was seen at this stage (case-insensitively); else remembers
 * it. The stage is part of the key: "a@x: a@x, b@x" in virtual_alias_maps
 * visits a@x again past the virtual stage, which is no loop.
 */
static int seen(struct expand *x, const char *addr, int stage)
{
	int i;
	char **nv;

	for (i = 0; i < x->nseen; i++)
		if (x->seen[i][0] == '0' + stage && strcasecmp(x->seen[i] + 1, addr) == 0)
			return 1;
	if (x->nseen == x->capseen) {
		int cap = x->capseen ? x->capseen * 2 : 8;
		if ((nv = mem_realloc(x->seen, (size_t)cap * sizeof *nv)) == NULL) {
			x->nomem = 1;
			return 1;
		}
		x->seen = nv;
		x->capseen = cap;
	}
	if ((x->seen[x->nseen] = mem_printf("%c%s", '0' + stage, addr)) == NULL) {
		x->nomem = 1;
		return 1;
	}
	x->nseen++;
	return 0;
}

static int dup_target(struct expand *x, const char *path)
{
	int i;

	for (i = 0; i < x->out->n; i++)
		if (x->out->v[i].path && strcmp(x->out->v[i].path, path) == 0)
			return 1;
	return 0;
}

/* A mailbox: base/rel (via VIA_LOCAL, rel is the user and mailbox the path under the home). */
static void mailbox_target(struct expand *x, const char *addr, const char *service,
    enum target_via via, const char *base, const char *rel, const char *mailbox, uid_t uid)
{
	struct target *t;
	char *path;
	size_t n = strlen(mailbox);

	if ((path = mem_printf("%s/%s", base, mailbox)) == NULL) {
		x->nomem = 1;
		return;
	}
	if (dup_target(x, path)) {   /* two aliases naming one mailbox: one copy */
		mem_free(path);
		return;
	}
	if ((t = add_target(x, n && mailbox[n - 1] == '/' ? TGT_MAILDIR : TGT_MBOX, addr, service,
	    "2.0.0", NULL)) == NULL) {
		mem_free(path);
		return;
	}
	t->path = path;
	t->via = via;
	t->uid = uid;
	if ((t->base = mem_strdup(base)) == NULL || (t->rel = mem_strdup(rel)) == NULL)
		x->nomem = 1;
}

/* a user name that is safe as one path component */
static int safe_component(const char *s)
{
	return *s && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && strchr(s, '/') == NULL;
}

static void expand_user(struct expand *x, const char *local, const char *addr)
{
	struct resolver *r = x->r;
	char user[256], buf[4096], *rel;
	struct passwd pw, *res = NULL;
	size_t i;

	snprintf(user, sizeof user, "%s", local);
	if ((i = map_addr_ext(user, r->delims)) > 0)
		user[i] = '\0';   /* user+ext is user's mailbox; addr (Delivered-To:) keeps the extension */
	for (i = 0; user[i]; i++)
		user[i] = (char)tolower((unsigned char)user[i]);
	if (!safe_component(user)) {
		add_target(x, TGT_BOUNCE, addr, "local", "5.1.1", "invalid user name");
		return;
	}
	if (*r->local_mailbox_base) {
		if ((rel = mem_printf("%s/%s", user, r->home_mailbox)) == NULL) {
			x->nomem = 1;
			return;
		}
		mailbox_target(x, addr, "local", VIA_SELF, r->local_mailbox_base, rel, rel, geteuid());
		mem_free(rel);
		return;
	}
	if (getpwnam_r(user, &pw, buf, sizeof buf, &res) != 0 || res == NULL) {
		/* postmaster without an alias: root reads it, as on any Unix */
		if (strcmp(user, "postmaster") == 0 &&
		    getpwnam_r("root", &pw, buf, sizeof buf, &res) == 0 && res)
			goto found;
		snprintf(buf, sizeof buf, "unknown user: \"%s\"", user);
		add_target(x, TGT_BOUNCE, addr, "local", "5.1.1", buf);
		return;
	}
found:
	if (res->pw_uid == geteuid())
		mailbox_target(x, addr, "local", VIA_SELF, res->pw_dir, r->home_mailbox, r->home_mailbox,
		    res->pw_uid);
	else if (!use_helpers)
		add_target(x, TGT_DEFER, addr, "local", "4.3.0", "cannot deliver as another user: frugal is not "
		    "running as root (set local_mailbox_base to deliver without system accounts)");
	else if (res->pw_uid == 0)
		/* Postfix delivers root's mail with default_privs; frugal asks for an alias instead */
		add_target(x, TGT_DEFER, addr, "local", "4.3.0", "frugal does not deliver as root: "
		    "give root an alias (root: admin) in alias_maps");
	else
		mailbox_target(x, addr, "local", VIA_LOCAL, res->pw_dir, res->pw_name, r->home_mailbox,
		    res->pw_uid);
}

static void expand_addr(struct expand *x, const char *addr, int depth, int no_valias);

/*
 * Postfix's propagate_unmatched_extensions (default canonical, virtual):
 * a virtual alias found as user@domain for user+ext@domain gives each
 * result address the extension back (alice@x becomes alice+ext@x).
 * Returns a new list (mem_alloc'd), NULL on ENOMEM.
 */
static char *propagate_ext(const char *value, const char *addr, size_t ext)
{
	const char *at = strchr(addr + ext, '@');
	size_t elen = at ? (size_t)(at - addr) - ext : strlen(addr + ext);
	char **v = conf_split_list(value), *out = NULL, *n;
	int i;

	if (v == NULL)
		return NULL;
	if ((out = mem_strdup("")) == NULL)
		goto done;
	for (i = 0; v[i]; i++) {
		const char *a = strrchr(v[i], '@');
		int l = a ? (int)(a - v[i]) : (int)strlen(v[i]);

		if (restricted_form(v[i]))   /* not an address: as it is */
			n = mem_printf("%s%s%s", out, *out ? ", " : "", v[i]);
		else
			n = mem_printf("%s%s%.*s%.*s%s", out, *out ? ", " : "", l, v[i], (int)elen, addr + ext,
			    a ? a : "");
		mem_free(out);
		if ((out = n) == NULL)
			break;
	}
done:
	conf_list_free(v);
	return out;
}

/* Expand a comma list value; `self` delivers directly when it names itself. */
static void expand_list(struct expand *x, const char *value, const char *self, int depth,
    int self_is_local, const char *self_local)
{
	char **v = conf_split_list(value);
	int i;

	if (v == NULL) {
		x->nomem = 1;
		return;
	}
	for (i = 0; v[i] && !x->nomem; i++) {
		const char *item = v[i];

		if (restricted_form(item)) {
			/* a table changed without `frugal check`: bounce as Postfix does when it is not allowed */
			add_target(x, TGT_BOUNCE, self, "local", "5.7.1", restricted_form(item));
			continue;
		}
		if (strcasecmp(item, self) == 0 ||
		    (self_is_local && strchr(item, '@') == NULL && strcasecmp(item, self_local) == 0)) {
			/* "root: root, admin": the name itself means its mailbox */
			if (self_is_local)
				expand_user(x, self_local, self);
			else
				expand_addr(x, item, depth + 1, 1);
			continue;
		}
		expand_addr(x, item, depth + 1, 0);
	}
	conf_list_free(v);
}

static void expand_addr(struct expand *x, const char *addr_in, int depth, int no_valias)
{
	struct resolver *r = x->r;
	char local[1024], *v = NULL, *full = NULL, *prop = NULL, reason[512];
	const char *domain, *addr = addr_in;
	int bare, loc, rc;
	size_t unmatched = 0;

	if (x->nomem)
		return;
	if (depth > EXPAND_DEPTH_MAX || x->nseen >= EXPAND_SEEN_MAX) {
		add_target(x, TGT_BOUNCE, addr, "local", "5.4.6", "alias expansion too deep or too wide (loop?)");
		return;
	}
	split_addr(r, addr_in, local, sizeof local, &domain, &bare);
	if (bare) {
		if ((full = mem_printf("%s@%s", local, r->myorigin)) == NULL) {
			x->nomem = 1;
			return;
		}
		addr = full;
	}
	if (seen(x, addr, no_valias))   /* a loop in the tables: the first visit delivers */
		goto out;
	if ((loc = is_local_domain(r, domain)) < 0)
		goto tablerr;
	if (!no_valias) {
		if ((rc = map_list_lookup_ext(r->valias, addr, loc, r->delims, &v, &unmatched)) < 0)
			goto tablerr;
		if (rc == 1 && unmatched && (prop = propagate_ext(v, addr, unmatched)) == NULL) {
			x->nomem = 1;
			goto out;
		}
		if (rc == 1) {
			expand_list(x, prop ? prop : v, addr, depth, 0, NULL);
			goto out;
		}
	}
	if (loc) {
		if ((rc = map_list_lookup_ext(r->alias, local, 1, r->delims, &v, &unmatched)) < 0)
			goto tablerr;
		if (rc == 1) {
			/* aliases(5): found as user, "user" in the value is user+ext@domain's own mailbox */
			if (unmatched)
				local[unmatched] = '\0';
			expand_list(x, v, addr, depth, 1, local);
			goto out;
		}
		expand_user(x, local, addr);
		goto out;
	}
	if ((rc = domlist_match(&r->virtual_domains, domain)) < 0)
		goto tablerr;
	if (rc) {
		if ((rc = map_list_lookup_ext(r->vmailbox, addr, 0, r->delims, &v, NULL)) < 0)
			goto tablerr;
		if (rc == 0 || *v == '\0' || strstr(v, "..") || *v == '/') {
			snprintf(reason, sizeof reason, "unknown user: \"%s\"", addr);
			add_target(x, TGT_BOUNCE, addr, "virtual", "5.1.1", reason);
			goto out;
		}
		mailbox_target(x, addr, "virtual", r->vhelper ? VIA_VIRTUAL : VIA_SELF,
		    r->virtual_mailbox_base, v, v, r->vhelper ? r->vuid : geteuid());
		goto out;
	}
	{
		struct target *t = add_target(x, TGT_DEFER, addr, "smtp", "4.4.0",
		    "delivery via smtp is not available in this version");
		if (t)
			t->never_expire = 1;
	}
	goto out;
tablerr:
	add_target(x, TGT_DEFER, addr, "local", "4.3.0", "table lookup failed");
out:
	mem_free(v);
	mem_free(prop);
	mem_free(full);
}

int resolver_expand(struct resolver *r, const char *addr, struct target_list *out)
{
	struct expand x;
	int i;

	memset(&x, 0, sizeof x);
	x.r = r;
	x.out = out;
	expand_addr(&x, addr, 0, 0);
	for (i = 0; i < x.nseen; i++)
		mem_free(x.seen[i]);
	mem_free(x.seen);
	if (x.nomem) {
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

/*
 * `frugal check`: local(8) would read ~/.forward; frugal never does (it
 * forks no process per message, and a .forward may name commands and
 * files). A user who relies on one must hear it at check, not by lost
 * mail. Only where system users get mail in their homes (no
 * local_mailbox_base). passwd: a passwd-format file (tests), or NULL for
 * the system's users (getpwent). Each finding goes to report(); returns
 * how many.
 */
int resolver_check_forward(const struct conf *c, FILE *passwd, void (*report)(const char *text))
{
	const char *base = conf_str(c, "local_mailbox_base", 0);
	struct passwd *pw;
	struct stat st;
	char path[4096], text[4400];
	int n = 0;

	if (base && *base)
		return 0;
	if (passwd == NULL)
		setpwent();
	while ((pw = passwd ? fgetpwent(passwd) : getpwent()) != NULL) {
		if (pw->pw_dir == NULL || *pw->pw_dir != '/' || strcmp(pw->pw_dir, "/") == 0)
			continue;
		if (snprintf(path, sizeof path, "%s/.forward", pw->pw_dir) >= (int)sizeof path ||
		    lstat(path, &st) < 0)
			continue;
		snprintf(text, sizeof text, "%s: user %s: frugal does not read .forward files (it runs no "
		    "command and writes no file per message): give the user an alias in alias_maps instead",
		    path, pw->pw_name);
		report(text);
		n++;
	}
	if (passwd == NULL)
		endpwent();
	return n;
}
