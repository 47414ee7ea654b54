/* tests/unit/test_sasl.c: AUTH's pure parts (smtpd/sasl.c): base64 lines, PLAIN, a hash's cost. */
#include <check.h>
#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/sasl.h"

static int dec(const char *in, char *out, size_t *n)
{
	return sasl_b64_decode(in, strlen(in), (unsigned char *)out, n);
}

START_TEST(base64_lines)
{
	char out[64];
	size_t n;

	ck_assert_int_eq(dec("VXNlcm5hbWU6", out, &n), 0);
	ck_assert_uint_eq(n, 9);
	ck_assert(memcmp(out, "Username:", 9) == 0);
	ck_assert_int_eq(dec("YQ==", out, &n), 0);   /* padding is not content */
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(out[0], 'a');
	ck_assert_int_eq(dec("YWI=", out, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(dec("", out, &n), 0);
	ck_assert_uint_eq(n, 0);
	/* not base64: wrong length, a foreign character, padding inside, white space */
	ck_assert_int_eq(dec("YWJ", out, &n), -1);
	ck_assert_int_eq(dec("YW*j", out, &n), -1);
	ck_assert_int_eq(dec("Y=Fi", out, &n), -1);
	ck_assert_int_eq(dec("YQ==YQ==", out, &n), -1);
	ck_assert_int_eq(dec("YW j", out, &n), -1);
	ck_assert_int_eq(dec("====", out, &n), -1);
}
END_TEST

START_TEST(plain_message)
{
	char user[SASL_FIELD_MAX + 1], pass[SASL_FIELD_MAX + 1];
	static const unsigned char ok[] = "\0alice@example.test\0secret";
	static const unsigned char authz[] = "alice@example.test\0alice@example.test\0secret";
	static const unsigned char other[] = "bob@example.test\0alice@example.test\0secret";
	static const unsigned char nopass[] = "\0alice@example.test\0";
	static const unsigned char one_nul[] = "alice@example.test\0secret";
	unsigned char big[600];

	ck_assert_int_eq(sasl_plain_parse(ok, sizeof ok - 1, user, pass), 0);
	ck_assert_str_eq(user, "alice@example.test");
	ck_assert_str_eq(pass, "secret");
	ck_assert_int_eq(sasl_plain_parse(authz, sizeof authz - 1, user, pass), 0);   /* authzid = authcid */
	ck_assert_int_eq(sasl_plain_parse(other, sizeof other - 1, user, pass), -1);  /* acting for another */
	ck_assert_int_eq(sasl_plain_parse(nopass, sizeof nopass - 1, user, pass), -1);
	ck_assert_int_eq(sasl_plain_parse(one_nul, sizeof one_nul - 1, user, pass), -1);
	/* a password with a NUL in it, and fields over SASL_FIELD_MAX */
	ck_assert_int_eq(sasl_plain_parse((const unsigned char *)"\0a\0b\0c", 6, user, pass), -1);
	memset(big, 'x', sizeof big);
	big[0] = '\0';
	big[2] = '\0';
	ck_assert_int_eq(sasl_plain_parse(big, sizeof big, user, pass), -1);
	ck_assert_int_eq(sasl_plain_parse(big, 3 + SASL_FIELD_MAX, user, pass), 0);
	ck_assert_uint_eq(strlen(pass), SASL_FIELD_MAX);
}
END_TEST

START_TEST(hash_memory)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	unsigned long cost;
	long long prev = 0;

	/* Debian's default yescrypt: 16 MiB (measured with getrusage around one crypt(3): 16,384 KiB) */
	ck_assert_int_eq((int)(sasl_hash_memory("$y$j9T$abcdefghijklmnop$x") >> 10), 16384);
	ck_assert_int_eq((int)(sasl_hash_memory("$y$j7T$abcdefghijklmnop$x") >> 10), 4096);
	/* libcrypt's own settings: cost k needs twice the memory of k - 1 */
	for (cost = 1; cost <= 5; cost++) {
		long long m;

		ck_assert_ptr_nonnull(crypt_gensalt_rn("$y$", cost, NULL, 0, setting, sizeof setting));
		m = sasl_hash_memory(setting);
		ck_assert(m > 0);
		if (prev)
			ck_assert(m == 2 * prev);
		prev = m;
	}
	ck_assert_int_eq((int)(prev >> 20), 16);   /* cost 5 is Debian's default */
	ck_assert(sasl_hash_memory("$6$salt$hash") > 0);
	ck_assert(sasl_hash_memory("$6$salt$hash") < (64 << 10));
	ck_assert(sasl_hash_memory("$1$md5$hash") < 0);
	ck_assert(sasl_hash_memory("abDEScrypt") < 0);
	ck_assert(sasl_hash_memory("$y$") < 0);
	/* another flavor or a longer parameter encoding: refused, not misread */
	ck_assert(sasl_hash_memory("$y$k9T$abcdefghijklmnop$x") < 0);
	ck_assert(sasl_hash_memory("$y$j9TT$abcdefghijklmnop$x") < 0);
	ck_assert(sasl_hash_memory("") < 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sasl");
	TCase *t = tcase_create("core");
	SRunner *r;
	int failed;

	tcase_add_test(t, base64_lines);
	tcase_add_test(t, plain_message);
	tcase_add_test(t, hash_memory);
	suite_add_tcase(s, t);
	r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
