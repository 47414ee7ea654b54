/* tests/fuzz/fake_spool.c: the spool that keeps nothing (see fake_spool.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "queue/queue.h"

#include "fake_spool.h"

struct ev_loop *fake_spool_loop;
int fake_spool_fail_commit;
int fake_spool_fail_txn;

struct spool_txn {
	ev_idle idle;          /* first member: the commit's answer */
	char id[24];
	int nrcpt, opened;
	off_t size;
	void (*done)(void *arg, int err, const char *queue_id);
	void *arg;
	const struct spool_filter *filt;   /* as the real spool: fed every write, freed with the txn */
	void *filt_arg;                    /* owned through filt->free */
};

static void txn_free(struct spool_txn *t)
{
	if (t->filt && t->filt->free)
		t->filt->free(t->filt_arg);
	mem_free(t);
}

static unsigned long next_id;

struct spool_txn *spool_txn_new(struct spool *s, const char *sender, const char *client)
{
	struct spool_txn *t;

	(void)s; (void)sender; (void)client;
	if (fake_spool_fail_txn) {
		errno = ENOMEM;
		return NULL;
	}
	if ((t = mem_calloc(1, sizeof *t)) == NULL)
		return NULL;
	snprintf(t->id, sizeof t->id, "%lX", ++next_id);
	return t;
}

const char *spool_txn_id(const struct spool_txn *t) { return t->id; }
off_t spool_txn_size(const struct spool_txn *t) { return t->size; }

int spool_txn_rcpt(struct spool_txn *t, const char *rcpt, const char *orig)
{
	(void)orig;
	if (t->opened || strchr(rcpt, '\n'))
		return errno = EINVAL, -1;
	t->nrcpt++;
	return 0;
}

int spool_txn_dsn(struct spool_txn *t, int ret, const char *envid)
{
	(void)ret;
	if (t->opened || (envid && strchr(envid, '\n')))
		return errno = EINVAL, -1;
	return 0;
}

int spool_txn_rcpt_dsn(struct spool_txn *t, int notify, const char *orcpt)
{
	(void)notify;
	if (t->opened || t->nrcpt == 0 || (orcpt && strchr(orcpt, '\n')))
		return errno = EINVAL, -1;
	return 0;
}

int spool_txn_open(struct spool_txn *t)
{
	if (t->opened || t->nrcpt == 0)
		return errno = EINVAL, -1;
	t->opened = 1;
	return 0;
}

int spool_txn_write(struct spool_txn *t, const void *p, size_t n)
{
	(void)p;
	if (!t->opened)
		return errno = EINVAL, -1;
	t->size += (off_t)n;
	if (t->filt && t->filt->data(t->filt_arg, p, n) < 0)
		return errno = errno ? errno : EIO, -1;
	return 0;
}

/* the session layer never signs here (no keys): late headers are accepted and dropped; a
 * filter (Authentication-Results, DKIM) is kept and fed as the real spool does */
int spool_txn_late_header(struct spool_txn *t, const char *hdr)
{
	(void)t;
	(void)hdr;
	return 0;
}

void spool_txn_filter(struct spool_txn *t, const struct spool_filter *f, void *arg)
{
	if (t->filt && t->filt->free)
		t->filt->free(t->filt_arg);
	t->filt = f;
	t->filt_arg = arg;
}

static void commit_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct spool_txn *t = (struct spool_txn *)w;
	int err;

	(void)revents;
	ev_idle_stop(loop, w);
	err = fake_spool_fail_commit ? EIO : (t->opened ? 0 : EINVAL);
	if (!err && t->filt && t->filt->finish && t->filt->finish(t->filt_arg, t) < 0)
		err = errno ? errno : EIO;
	t->done(t->arg, err, t->id);
	txn_free(t);
}

void spool_txn_commit(struct spool_txn *t, void (*done)(void *arg, int err, const char *queue_id), void *arg)
{
	t->done = done;
	t->arg = arg;
	ev_idle_init(&t->idle, commit_cb);
	ev_idle_start(fake_spool_loop, &t->idle);
}

void spool_txn_abort(struct spool_txn *t)
{
	txn_free(t);
}

void qmgr_enqueue(struct qmgr *q, const char *queue_id)
{
	(void)q; (void)queue_id;
}

/* ETRN: the session layer asks the scheduler; the fake has none to ask */
int qmgr_flush_domain(struct qmgr *q, const char *domain)
{
	(void)q; (void)domain;
	return 0;
}
