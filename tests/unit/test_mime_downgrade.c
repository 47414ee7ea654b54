/*
 * tests/unit/test_mime_downgrade.c: 8-bit bodies to quoted-printable
 * (queue/mime_downgrade.h): verdicts, exact output, line lengths, white
 * space, CR, chunk-size independence, and the output decoded back by a QP
 * decoder here and by Python's email package.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue/mime_downgrade.h"

struct res {
	int verdict;
	char *out;     /* malloc'd, NUL-terminated; NULL unless converted */
	size_t len;
};

/* Both passes over msg, fed in chunks of `chunk` bytes, output drained through a buffer of `cap` bytes. */
static struct res run(const char *msg, size_t n, size_t chunk, size_t cap)
{
	struct mime_downgrade d;
	struct res r = { 0, NULL, 0 };
	char *buf = malloc(cap);
	size_t i, k, taken, w, size = 0;

	ck_assert_ptr_nonnull(buf);
	mime_downgrade_init(&d);
	for (i = 0; i < n; i += k) {
		k = n - i < chunk ? n - i : chunk;
		mime_downgrade_scan(&d, msg + i, k);
	}
	r.verdict = mime_downgrade_verdict(&d);
	if (r.verdict != MIME_DG_CONVERT) {
		ck_assert_int_eq(mime_downgrade_start(&d), -1);
		free(buf);
		return r;
	}
	ck_assert_int_eq(mime_downgrade_start(&d), 0);
	for (i = 0; i < n; i += k) {
		k = n - i < chunk ? n - i : chunk;
		for (taken = 0; taken < k; ) {
			taken += mime_downgrade_convert(&d, msg + i + taken, k - taken, buf, cap, &w);
			r.out = realloc(r.out, size + w + 1);
			memcpy(r.out + size, buf, w);
			size += w;
		}
	}
	w = mime_downgrade_finish(&d, buf, cap);
	r.out = realloc(r.out, size + w + 1);
	memcpy(r.out + size, buf, w);
	size += w;
	r.out[size] = '\0';
	r.len = size;
	free(buf);
	return r;
}

static struct res conv(const char *msg)
{
	return run(msg, strlen(msg), 4096, 4096);
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* RFC 2045 6.7 decoding of a body; also checks the encoder's rules on the way */
static size_t qp_decode(const char *in, char *out)
{
	size_t o = 0, col = 0;
	const char *p;

	for (p = in; *p; p++) {
		unsigned char c = (unsigned char)*p;

		ck_assert_msg(c < 0x80, "8-bit byte in the encoded body");
		if (c == '\n') {
			ck_assert_msg(p == in || (p[-1] != ' ' && p[-1] != '\t'), "white space before a line end");
			out[o++] = '\n';
			col = 0;
			continue;
		}
		ck_assert_msg(++col <= 76, "encoded line longer than 76");
		if (c == '=') {
			if (p[1] == '\n') {   /* soft break */
				p++;
				col = 0;
				continue;
			}
			ck_assert(hexval(p[1]) >= 0 && hexval(p[2]) >= 0);
			out[o++] = (char)(hexval(p[1]) * 16 + hexval(p[2]));
			p += 2;
			col += 2;
			ck_assert(col <= 76);
			continue;
		}
		out[o++] = (char)c;
	}
	return o;
}

static const char *body_of(const char *msg)
{
	const char *b = strstr(msg, "\n\n");

	ck_assert_ptr_nonnull(b);
	return b + 2;
}

/* The converted message's body decodes to the original's */
static void round_trip(const char *msg, const char *converted)
{
	const char *orig = body_of(msg);
	char *dec = malloc(strlen(converted) + 1);
	size_t n = qp_decode(body_of(converted), dec);

	ck_assert_uint_eq(n, strlen(orig));
	ck_assert(memcmp(dec, orig, n) == 0);
	free(dec);
}

START_TEST(seven_bit_unchanged)
{
	struct res r = conv("From: a@example.com\nSubject: hello = world\n\nplain text = fine  \n.\n");

	ck_assert_int_eq(r.verdict, MIME_DG_AS_IS);
	ck_assert_ptr_null(r.out);
	/* 8-bit in a header only: the body needs nothing, headers go as they are (Postfix) */
	r = conv("Subject: caf\xc3\xa9\n\nascii\n");
	ck_assert_int_eq(r.verdict, MIME_DG_AS_IS);
	/* no body at all */
	r = conv("Subject: x\n");
	ck_assert_int_eq(r.verdict, MIME_DG_AS_IS);
}
END_TEST

START_TEST(eight_bit_single_part)
{
	const char *msg = "From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
	    "Content-Transfer-Encoding: 8bit\nMIME-Version: 1.0\nX-Tail: t\n\ncaf\xc3\xa9 = ok\n\nbye\n";
	struct res r = conv(msg);

	ck_assert_int_eq(r.verdict, MIME_DG_CONVERT);
	ck_assert_str_eq(r.out, "From: a@example.com\nContent-Type: text/plain; charset=utf-8\n"
	    "Content-Transfer-Encoding: quoted-printable\nMIME-Version: 1.0\nX-Tail: t\n\ncaf=C3=A9 =3D ok\n\nbye\n");
	round_trip(msg, r.out);
	free(r.out);
}
END_TEST

START_TEST(headers_added_and_folded)
{
	/* no Content-Transfer-Encoding, no MIME-Version: both added at the end of the header block */
	struct res r = conv("Subject: x\n\n\xe9t\xe9\n");

	ck_assert_int_eq(r.verdict, MIME_DG_CONVERT);
	ck_assert_str_eq(r.out, "Subject: x\nMIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n=E9t=E9\n");
	free(r.out);
	/* a folded header is dropped whole; case does not matter; other folded headers pass */
	r = conv("Subject: a\n b\ncontent-transfer-encoding:\n  8BIT\nMime-Version: 1.0\n\n\xff\n");
	ck_assert_int_eq(r.verdict, MIME_DG_CONVERT);
	ck_assert_str_eq(r.out, "Subject: a\n b\nContent-Transfer-Encoding: quoted-printable\nMime-Version: 1.0\n\n=FF\n");
	free(r.out);
	/* declared 7bit but 8-bit inside: converted too */
	r = conv("Content-Transfer-Encoding: 7bit\n\n\x80\n");
	ck_assert_int_eq(r.verdict, MIME_DG_CONVERT);
	ck_assert_str_eq(r.out, "Content-Transfer-Encoding: quoted-printable\n\n=80\n");
	free(r.out);
	/* a line that is no header starts the body: an empty line is put before it */
	r = conv("Subject: x\nnot a header \xe9\n");
	ck_assert_int_eq(r.verdict, MIME_DG_CONVERT);
	ck_assert_str_eq(r.out, "Subject: x\nMIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n"
	    "not a header =E9\n");
	free(r.out);
}
END_TEST

START_TEST(cannot)
{
	struct res r;

	ck_assert_int_eq(conv("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n\xe9\n--b--\n").verdict, MIME_DG_CANNOT);
	ck_assert_int_eq(conv("Content-Type:\n Message/RFC822\n\n\xe9\n").verdict, MIME_DG_CANNOT);
	ck_assert_int_eq(conv("Content-Transfer-Encoding: base64\n\n\xe9\n").verdict, MIME_DG_CANNOT);
	ck_assert_int_eq(conv("Content-Transfer-Encoding: binary\n\n\xe9\n").verdict, MIME_DG_CANNOT);
	ck_assert_int_eq(conv("Content-Transfer-Encoding: 8bitx\n\n\xe9\n").verdict, MIME_DG_CANNOT);
	/* a 7-bit multipart passes as it is */
	ck_assert_int_eq(conv("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\n").verdict, MIME_DG_AS_IS);
	/* text/plain is not composite, "multipartx" neither */
	r = conv("Content-Type: text/plain\n\n\xe9\n");
	ck_assert_int_eq(r.verdict, MIME_DG_CONVERT);
	free(r.out);
}
END_TEST

START_TEST(long_lines_and_soft_breaks)
{
	char msg[4096], *p = msg, *line;
	struct res r;
	int i;

	p += sprintf(p, "Content-Transfer-Encoding: 8bit\n\n");
	for (i = 0; i < 300; i++)
		*p++ = (char)(i % 7 == 0 ? 0xe9 : 'a' + i % 26);
	*p++ = '\n';
	for (i = 0; i < 75; i++)   /* exactly 75 printable: fits one encoded line */
		*p++ = 'b';
	*p++ = '\n';
	for (i = 0; i < 76; i++)   /* 76: one too many with the soft break's '=' */
		*p++ = 'c';
	*p++ = '\n';
	*p = '\0';
	r = conv(msg);
	ck_assert_int_eq(r.verdict, MIME_DG_CONVERT);
	round_trip(msg, r.out);   /* also checks every line <= 76 and no trailing white space */
	ck_assert_ptr_nonnull(line = strstr(r.out, "\nbbb"));
	ck_assert(line[76] == '\n');   /* 75 b's, then the hard line end: no soft break */
	ck_assert_ptr_nonnull(line = strstr(r.out, "\nccc"));
	ck_assert(line[76] == '=' && line[77] == '\n' && line[78] == 'c' && line[79] == '\n');
	free(r.out);
}
END_TEST

START_TEST(white_space_and_cr)
{
	struct res r = conv("Content-Transfer-Encoding: 8bit\n\n\xe9  \nx\t\n \n  a b\nend \r\nlast ");

	ck_assert_int_eq(r.verdict, MIME_DG_CONVERT);
	/* only the last blank before a line end is encoded; CR is content (=0D); the end counts as a line end */
	ck_assert_str_eq(r.out, "Content-Transfer-Encoding: quoted-printable\n\n=E9 =20\nx=09\n=20\n  a b\nend =0D\nlast=20");
	free(r.out);
}
END_TEST

START_TEST(chunks_and_small_buffer)
{
	char msg[8192], *p = msg;
	struct res whole, r;
	size_t chunk;
	int i;

	p += sprintf(p, "Subject: chunks\nContent-Type: text/plain; charset=iso-8859-1\n\n");
	for (i = 0; i < 3000; i++)
		*p++ = (char)(i % 50 == 49 ? '\n' : i % 11 == 0 ? ' ' : i % 13 == 0 ? 0xfc : i % 17 == 0 ? '=' : 'x');
	*p = '\0';
	whole = conv(msg);
	ck_assert_int_eq(whole.verdict, MIME_DG_CONVERT);
	round_trip(msg, whole.out);
	for (chunk = 1; chunk < 200; chunk += 13) {
		r = run(msg, strlen(msg), chunk, MIME_DG_OUT_MIN);   /* the smallest buffer allowed: resumption */
		ck_assert_str_eq(r.out, whole.out);
		free(r.out);
	}
	free(whole.out);
}
END_TEST

/* Python's email package reads the converted message and decodes the body back to the original bytes */
START_TEST(python_decodes)
{
	const char *msg = "From: a@example.com\nSubject: py\nContent-Type: text/plain; charset=utf-8\n"
	    "Content-Transfer-Encoding: 8bit\n\nGr\xc3\xbc\xc3\x9f  Gott = 1 \t\n\xe2\x82\xac x\n"
	    "a very long line that goes on and on and on and on and on and on and on and on and on and \xc3\xa9 on\n";
	struct res r = conv(msg);
	char path[] = "/tmp/test_mime_downgrade.XXXXXX", cmd[512], got[1024];
	FILE *py;
	size_t n;
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(r.verdict, MIME_DG_CONVERT);
	ck_assert_int_eq(write(fd, r.out, r.len), (ssize_t)r.len);
	close(fd);
	snprintf(cmd, sizeof cmd, "python3 -c 'import email,sys; m=email.message_from_binary_file(open(\"%s\",\"rb\")); "
	    "sys.stdout.buffer.write(m[\"Content-Transfer-Encoding\"].encode()+b\"|\"+m.get_payload(decode=True))'", path);
	ck_assert_ptr_nonnull(py = popen(cmd, "r"));
	n = fread(got, 1, sizeof got - 1, py);
	got[n] = '\0';
	ck_assert_int_eq(pclose(py), 0);
	unlink(path);
	ck_assert_str_eq(got, "quoted-printable|" "Gr\xc3\xbc\xc3\x9f  Gott = 1 \t\n\xe2\x82\xac x\n"
	    "a very long line that goes on and on and on and on and on and on and on and on and on and \xc3\xa9 on\n");
	free(r.out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mime_downgrade");
	TCase *tc = tcase_create("mime_downgrade");
	SRunner *r;
	int failed;

	tcase_add_test(tc, seven_bit_unchanged);
	tcase_add_test(tc, eight_bit_single_part);
	tcase_add_test(tc, headers_added_and_folded);
	tcase_add_test(tc, cannot);
	tcase_add_test(tc, long_lines_and_soft_breaks);
	tcase_add_test(tc, white_space_and_cr);
	tcase_add_test(tc, chunks_and_small_buffer);
	tcase_add_test(tc, python_decodes);
	suite_add_tcase(s, tc);
	r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}
