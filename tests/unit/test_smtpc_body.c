/*
 * tests/unit/test_smtpc_body.c: the client's message stream
 * (queue/smtpc_body.h) over a real file: CRLF and dot-stuffing, the scan in
 * small budgets, the header rewriter given whole logical headers only (folded
 * lines, a header too long to hold and a line too long to hold pass as they
 * are), and the conversion after the rewriter.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue/queue_int.h"
#include "queue/smtpc_body.h"

static int calls;

/* "To:" headers become "To: R\n"; the rewriter must only ever see whole headers */
static int to_fn(void *arg, const char *hdr, size_t len, char *out, size_t cap, size_t *outlen)
{
	(void)arg;
	(void)cap;
	calls++;
	ck_assert_msg(len > 0 && (hdr[len - 1] == '\n' || len < 20), "a piece of a header");
	if (len < 3 || strncmp(hdr, "To:", 3) != 0)
		return 0;
	memcpy(out, "To: R\n", 6);
	*outlen = 6;
	return 1;
}

static struct msg_src file_of(const char *text, size_t n)
{
	char path[] = "/tmp/test_smtpc_body.XXXXXX";
	struct msg_src s = { 0 };

	s.fd = mkstemp(path);
	ck_assert_int_ge(s.fd, 0);
	unlink(path);
	ck_assert_int_eq(write(s.fd, text, n), (ssize_t)n);
	s.size = (off_t)n;
	return s;
}

/* The whole stream, drained through a 32 KiB buffer; malloc'd, NUL-terminated */
static char *stream(const char *text, int convert, smtpc_hdr_fn *fn)
{
	struct msg_src src = file_of(text, strlen(text));
	struct smtpc_body b;
	static char buf[32 * 1024];
	char *all = NULL;
	size_t size = 0, n;

	smtpc_body_scan_init(&b);
	while (smtpc_body_scan(&b, &src, 100) == 0)
		;
	smtpc_body_begin(&b, convert, fn, NULL);
	while (!b.dot_added) {
		n = 0;
		ck_assert_int_eq(smtpc_body_fill(&b, &src, buf, &n, sizeof buf), 0);
		all = realloc(all, size + n + 1);
		memcpy(all + size, buf, n);
		size += n;
	}
	all[size] = '\0';
	close(src.fd);
	return all;
}

START_TEST(crlf_and_dots)
{
	char *s = stream("Subject: x\n\n.one\nline\n..two\nlast without LF", 0, NULL);

	ck_assert_str_eq(s, "Subject: x\r\n\r\n..one\r\nline\r\n...two\r\nlast without LF\r\n.\r\n");
	free(s);
}
END_TEST

START_TEST(rewriter_sees_whole_headers)
{
	char *s;

	calls = 0;
	s = stream("From: a\nTo: b,\n c\nSubject: s\n\nTo: body, not a header\n", 0, to_fn);
	ck_assert_str_eq(s, "From: a\r\nTo: R\r\nSubject: s\r\n\r\nTo: body, not a header\r\n.\r\n");
	ck_assert_int_eq(calls, 3);
	free(s);
}
END_TEST

START_TEST(too_long_passes_as_is)
{
	size_t n = 20000, i;
	char *msg = malloc(2 * n + 100), *s, *exp = malloc(4 * n + 200);
	char *p = msg, *e;

	/* a folded To: of 20 KB, a single 20 KB line, then a To: the rewriter takes */
	p += sprintf(p, "To: a");
	for (i = 0; i < n / 10; i++)
		p += sprintf(p, "\n xxxxxxxx");
	p += sprintf(p, "\nX-Long: ");
	memset(p, 'y', n);
	p += n;
	p += sprintf(p, "\nTo: last\n\nbody\n");
	calls = 0;
	s = stream(msg, 0, to_fn);
	/* expected: everything as is (CRLF) but the last To: */
	e = exp;
	for (p = msg; *p; p++) {
		if (*p == '\n')
			*e++ = '\r';
		*e++ = *p;
	}
	*e = '\0';
	e = strstr(exp, "To: last\r\n");
	ck_assert_ptr_nonnull(e);
	memcpy(e, "To: R\r\n\r\nbody\r\n.\r\n", 19);
	ck_assert_uint_eq(strlen(s), strlen(exp));
	ck_assert(strcmp(s, exp) == 0);
	free(msg);
	free(exp);
	free(s);
}
END_TEST

START_TEST(rewrite_then_convert)
{
	char *s = stream("To: b\nContent-Type: text/plain\n\ncaf\xc3\xa9 = ok \n", 1, to_fn);

	ck_assert_str_eq(s, "To: R\r\nContent-Type: text/plain\r\nMIME-Version: 1.0\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =3D ok=20\r\n.\r\n");
	free(s);
}
END_TEST

START_TEST(scan_verdicts)
{
	struct msg_src src;
	struct smtpc_body b;
	size_t n = 300000;
	char *big = malloc(n + 1);
	int steps = 0, rc;

	memset(big, 'a', n);
	memcpy(big, "Subject: x\n\n", 12);
	big[n - 10] = (char)0xe9;   /* the only 8-bit byte, at the end */
	big[n] = '\0';
	src = file_of(big, n);
	smtpc_body_scan_init(&b);
	while ((rc = smtpc_body_scan(&b, &src, 64 * 1024)) == 0)
		steps++;
	ck_assert_int_eq(rc, 1);
	ck_assert_int_eq(steps, 4);          /* bounded slices: 300000 bytes in 64 KiB budgets */
	ck_assert_int_eq(b.any8, 1);
	ck_assert_int_eq(b.verdict, MIME_DG_CONVERT);
	close(src.fd);
	free(big);

	src = file_of("Subject: caf\xc3\xa9\n\nplain\n", 22);
	smtpc_body_scan_init(&b);
	ck_assert_int_eq(smtpc_body_scan(&b, &src, 1 << 20), 1);
	ck_assert_int_eq(b.any8, 1);          /* 8-bit in a header: BODY=8BITMIME where offered */
	ck_assert_int_eq(b.verdict, MIME_DG_AS_IS);   /* but nothing to convert */
	close(src.fd);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("smtpc_body");
	TCase *tc = tcase_create("smtpc_body");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, crlf_and_dots);
	tcase_add_test(tc, rewriter_sees_whole_headers);
	tcase_add_test(tc, too_long_passes_as_is);
	tcase_add_test(tc, rewrite_then_convert);
	tcase_add_test(tc, scan_verdicts);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
