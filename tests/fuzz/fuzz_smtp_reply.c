/*
 * tests/fuzz/fuzz_smtp_reply.c: libFuzzer target for the SMTP client's
 * reply parser (queue/smtp_reply.c): the input is what a peer sends, split
 * into lines as the client splits them (LF, an optional CR before it), fed
 * to smtp_reply_line as an EHLO reply (first byte odd) or a plain one. The
 * invariants: the text stays NUL-terminated inside its buffer, the code of a
 * complete reply is 200..599, the status is X.Y.Z with X the code's class.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_reply r;
	char dsn[8];
	size_t start = 0, i;

	if (size == 0)
		return 0;
	smtp_reply_init(&r, data[0] & 1);
	for (i = 1; i <= size; i++) {
		size_t n;
		int rc;

		if (i < size && data[i] != '\n')
			continue;
		n = i - start - (start == 0 ? 1 : 0);
		{
			const char *line = (const char *)data + (start == 0 ? 1 : start);
			if (n > 0 && line[n - 1] == '\r')
				n--;
			rc = smtp_reply_line(&r, line, n);
		}
		if (r.len >= sizeof r.text || strlen(r.text) != r.len)
			abort();
		if (rc == 1) {
			if (r.code < 200 || r.code > 599)
				abort();
			smtp_reply_dsn(&r, dsn, sizeof dsn);
			if (strlen(dsn) < 5 || dsn[0] != '0' + r.code / 100 || dsn[1] != '.')
				abort();
			smtp_reply_init(&r, data[0] & 1);
		} else if (rc < 0)
			smtp_reply_init(&r, data[0] & 1);
		start = i + 1;
	}
	return 0;
}
