/*
 * core/mem.c: the accounting allocator (see mem.h). Each block carries a
 * 16-byte header holding its size, so frees can be subtracted without a
 * side table. Knows nothing about SMTP or containers: limits/ sets the
 * ceiling with mem_set_limit().
 */
#include "mem.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <openssl/crypto.h>

#define HDR 16 /* keeps malloc's 16-byte alignment for the caller */

/* counters are atomic: worker threads allocate too */
static size_t in_use, peak, limit;
static unsigned long failures;
static unsigned long fail_countdown;   /* 0: off */
static unsigned long deferred_fail_at; /* armed by mem_arm_deferred_failure() */
static __thread int nofail;            /* mem_nofail(): this thread's allocations are not refused */

static void count(size_t add, size_t sub)
{
	size_t now = __atomic_add_fetch(&in_use, add - sub, __ATOMIC_RELAXED);
	size_t p = __atomic_load_n(&peak, __ATOMIC_RELAXED);

	while (now > p && !__atomic_compare_exchange_n(&peak, &p, now, 0,
	    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

static int should_fail(size_t n)
{
	unsigned long c = __atomic_load_n(&fail_countdown, __ATOMIC_RELAXED);

	if (nofail)
		return 0;   /* counted, never refused (a library step that cannot fail safely) */

	while (c) {
		if (__atomic_compare_exchange_n(&fail_countdown, &c, c - 1, 0,
		    __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
			if (c == 1) {
				__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
				/* the sweep in tests/integration/test_faults.py looks for this line */
				log_warning("mem", "fault injection: failing this allocation of %zu bytes", n);
				return 1;
			}
			break;
		}
	}
	size_t lim = __atomic_load_n(&limit, __ATOMIC_RELAXED);   /* re-set by the loop's resampling */

	if (lim && __atomic_load_n(&in_use, __ATOMIC_RELAXED) + n > lim) {
		__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
		return 1;
	}
	return 0;
}

void *mem_alloc(size_t n)
{
	unsigned char *p;

	if (n > SIZE_MAX - HDR || should_fail(n)) {
		errno = ENOMEM;
		return NULL;
	}
	if ((p = malloc(n + HDR)) == NULL) {
		__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
		return NULL;
	}
	memcpy(p, &n, sizeof n);
	count(n, 0);
	return p + HDR;
}

void *mem_calloc(size_t nmemb, size_t size)
{
	void *p;

	if (size && nmemb > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	if ((p = mem_alloc(nmemb * size)) != NULL)
		memset(p, 0, nmemb * size);
	return p;
}

void mem_free(void *p)
{
	size_t n;

	if (p == NULL)
		return;
	p = (unsigned char *)p - HDR;
	memcpy(&n, p, sizeof n);
	count(0, n);
	free(p);
}

/* may_fail = 0 for allocators that cannot survive NULL (libev): counted, never refused */
static void *realloc_counted(void *p, size_t n, int may_fail)
{
	unsigned char *q;
	size_t old;

	if (p == NULL && !may_fail) {
		if ((q = malloc(n + HDR)) == NULL)
			return NULL;
		memcpy(q, &n, sizeof n);
		count(n, 0);
		return q + HDR;
	}
	if (p == NULL)
		return mem_alloc(n);
	if (n == 0) {
		mem_free(p);
		return NULL;
	}
	memcpy(&old, (unsigned char *)p - HDR, sizeof old);
	if (n > SIZE_MAX - HDR || (may_fail && n > old && should_fail(n - old))) {
		errno = ENOMEM;
		return NULL;
	}
	if ((q = realloc((unsigned char *)p - HDR, n + HDR)) == NULL) {
		__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
		return NULL; /* the old block is untouched and still the caller's */
	}
	memcpy(q, &n, sizeof n);
	count(n, old);
	return q + HDR;
}

void *mem_realloc(void *p, size_t n)
{
	return realloc_counted(p, n, 1);
}

char *mem_strndup(const char *s, size_t n)
{
	char *p;
	size_t len = strnlen(s, n);

	if ((p = mem_alloc(len + 1)) == NULL)
		return NULL;
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *mem_strdup(const char *s)
{
	size_t len = strlen(s);
	char *p;

	if ((p = mem_alloc(len + 1)) != NULL)
		memcpy(p, s, len + 1);
	return p;
}

char *mem_printf(const char *fmt, ...)
{
	va_list ap;
	int n;
	char *p;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || (p = mem_alloc((size_t)n + 1)) == NULL)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

int mem_charge(size_t n)
{
	if (should_fail(n)) {
		errno = ENOMEM;
		return -1;
	}
	count(n, 0);
	return 0;
}

void mem_uncharge(size_t n) { count(0, n); }

size_t mem_in_use(void) { return __atomic_load_n(&in_use, __ATOMIC_RELAXED); }
size_t mem_peak(void) { return __atomic_load_n(&peak, __ATOMIC_RELAXED); }
void mem_reset_peak(void) { __atomic_store_n(&peak, mem_in_use(), __ATOMIC_RELAXED); }
void mem_set_limit(size_t bytes) { __atomic_store_n(&limit, bytes, __ATOMIC_RELAXED); }
size_t mem_limit(void) { return __atomic_load_n(&limit, __ATOMIC_RELAXED); }
unsigned long mem_failures(void) { return __atomic_load_n(&failures, __ATOMIC_RELAXED); }
void mem_fail_at(unsigned long n) { __atomic_store_n(&fail_countdown, n, __ATOMIC_RELAXED); }
void mem_nofail(int on) { nofail += on ? 1 : -1; }

void mem_init_from_env(void)
{
	const char *s;

	if ((s = getenv("FRUGAL_ALLOC_FAIL_AT")) != NULL)
		fail_countdown = strtoul(s, NULL, 10);
	if ((s = getenv("FRUGAL_ALLOC_FAIL_AFTER_LISTEN")) != NULL)
		deferred_fail_at = strtoul(s, NULL, 10);
}

void mem_arm_deferred_failure(void)
{
	if (deferred_fail_at)
		fail_countdown = deferred_fail_at;
	deferred_fail_at = 0;
}

/*
 * libev calls its allocator as realloc and aborts when it returns NULL for
 * a non-zero size, so its blocks are counted but never refused by the
 * budget or by fault injection: they are few and grow only with the
 * descriptor table, which limits/ bounds anyway.
 */
static void *ev_alloc(void *p, long n)
{
	if (n == 0) {
		mem_free(p);
		return NULL;
	}
	return realloc_counted(p, (size_t)n, 0);
}

static void *ossl_malloc(size_t n, const char *f, int l)
{
	(void)f; (void)l;
	return mem_alloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *f, int l)
{
	(void)f; (void)l;
	return mem_realloc(p, n);
}

static void ossl_free(void *p, const char *f, int l)
{
	(void)f; (void)l;
	mem_free(p);
}

void mem_install_hooks(void)
{
	ev_set_allocator(ev_alloc);
	CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
}

static void oom_exit(void)
{
	fputs("frugal: fatal: out of memory\n", stderr);
	exit(75);
}

void *xmalloc(size_t n)
{
	void *p = mem_alloc(n ? n : 1);
	if (p == NULL)
		oom_exit();
	return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
	void *p = mem_calloc(nmemb ? nmemb : 1, size ? size : 1);
	if (p == NULL)
		oom_exit();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = mem_realloc(p, n ? n : 1);
	if (q == NULL)
		oom_exit();
	return q;
}

char *xstrdup(const char *s)
{
	char *p = mem_strdup(s);
	if (p == NULL)
		oom_exit();
	return p;
}
