/*
 * tests/fuzz/fake_spool.h: a spool that keeps nothing, for fuzzing the
 * session layer (tests/fuzz/fake_spool.c implements queue/queue.h's
 * spool_txn_* and qmgr_enqueue; the fuzz target links it instead of
 * queue/spool.c). A commit is answered on the next loop iteration, as the
 * real spool answers from a worker thread.
 */
#ifndef FRUGAL_FAKE_SPOOL_H
#define FRUGAL_FAKE_SPOOL_H

#include <ev.h>

extern struct ev_loop *fake_spool_loop;
extern int fake_spool_fail_commit;   /* the next commits fail with EIO */
extern int fake_spool_fail_txn;      /* spool_txn_new fails with ENOMEM */

#endif
