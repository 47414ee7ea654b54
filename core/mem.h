/*
 * core/mem.h: frugal's allocator. Every allocation the daemon makes goes
 * through here so that "how much memory do we use" is one counter, a budget
 * can refuse an allocation before the kernel does, and tests can make
 * allocation number N fail. Failure returns NULL; the caller turns it into a
 * 451/421 reply. Nothing here aborts, except the x* wrappers, which are for
 * short-lived command-line tools only (frugal map, frugal queue ...).
 */
#ifndef FRUGAL_CORE_MEM_H
#define FRUGAL_CORE_MEM_H

#include <stddef.h>

void  *mem_alloc(size_t n);
void  *mem_calloc(size_t nmemb, size_t size);
void  *mem_realloc(void *p, size_t n);
void   mem_free(void *p);
char  *mem_strdup(const char *s);
char  *mem_strndup(const char *s, size_t n);
char  *mem_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Memory a library takes on its own (libcrypt's yescrypt: N x r x 128 bytes
 * per check), charged against the same limit while it is held: 0, or -1
 * (ENOMEM) when the budget has no room. Uncharge exactly what was charged.
 */
int    mem_charge(size_t n);
void   mem_uncharge(size_t n);

size_t mem_in_use(void);          /* bytes currently allocated through here */
size_t mem_peak(void);            /* high-water mark of mem_in_use() */
void   mem_reset_peak(void);      /* the mark starts again from now (tests measuring one phase) */
void   mem_set_limit(size_t bytes); /* 0 = no limit; past it allocations fail */
size_t mem_limit(void);
unsigned long mem_failures(void); /* allocations refused so far (budget or malloc) */

/*
 * Fault injection: after mem_fail_at(n), the n-th allocation from now on
 * fails (1 = the next one). 0 disables. FRUGAL_ALLOC_FAIL_AT=n in the
 * environment does the same at start-up (read by mem_init_from_env()).
 * FRUGAL_ALLOC_FAIL_AFTER_LISTEN=n arms it only once the daemon listens.
 */
void   mem_fail_at(unsigned long n);
void   mem_init_from_env(void);
void   mem_arm_deferred_failure(void);

/*
 * mem_nofail(1) ... mem_nofail(0): this thread's allocations in between are
 * counted but neither the budget nor fault injection refuses them (malloc
 * still may), for a short library step whose failure paths are unsafe
 * (libopendkim's dkim_eom frees an RSA key twice). The caller checks for
 * room first (mem_charge) so the budget is honoured on the way in.
 */
void   mem_nofail(int on);

/* Route libev's and OpenSSL's allocations through this allocator. */
void   mem_install_hooks(void);

/* Abort-on-failure wrappers for command-line tools (exit 75, EX_TEMPFAIL). */
void  *xmalloc(size_t n);
void  *xcalloc(size_t nmemb, size_t size);
void  *xrealloc(void *p, size_t n);
char  *xstrdup(const char *s);

#endif
