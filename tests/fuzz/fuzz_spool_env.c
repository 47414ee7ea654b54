/*
 * tests/fuzz/fuzz_spool_env.c: libFuzzer target for the queue room's one
 * parser, the queue-file envelope (spool_env_parse in queue/spool.c; the
 * format is documented at the top of that file). The input is the head
 * of a queue file; it is parsed as if the file were exactly that long and
 * as if it were longer (a torn or a complete message). Invariants: a
 * success points the message inside the file, names a sender and every
 * recipient, and counts the recipients to do (the FRUGAL-Q3 DSN and W
 * records included: a W byte lies inside the envelope), puts Q4's late
 * headers (T record) right after the message and inside the file, and the checksum check
 * (spool_verify, on a memfd holding the input) reads only the file; a
 * failure leaves nothing allocated (LeakSanitizer would say).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "queue/queue_int.h"

static void one(const uint8_t *data, size_t size, off_t fsize)
{
	struct spool_env e;
	char *buf = malloc(size ? size : 1);
	int i, todo = 0;

	if (buf == NULL)
		return;
	memcpy(buf, data, size);
	if (spool_env_parse(&e, buf, size, fsize) == 0) {
		if (e.msg_off < 0 || e.msg_off > fsize || e.size + e.pre_len != fsize - e.msg_off || e.size <= 0)
			__builtin_trap();
		/* Q4's late headers: right after the message, inside the file; T is an envelope record */
		if (e.pre_len < 0 || e.pre_len > SPOOL_LATE_MAX || e.pre_off != e.msg_off + e.size ||
		    (e.late_off && e.late_off >= e.msg_off) || (e.version >= 4 && !e.late_off))
			__builtin_trap();
		if (e.sender == NULL || e.client == NULL || e.nrcpt < 0)
			__builtin_trap();
		for (i = 0; i < e.nrcpt; i++) {
			if (e.rcpt[i].addr == NULL || e.rcpt[i].orig == NULL)
				__builtin_trap();
			todo += e.rcpt[i].status == RCPT_TODO;
		}
		if (todo != e.ntodo)
			__builtin_trap();
		if (e.warned_off && e.warned_off >= e.msg_off)
			__builtin_trap();   /* the W byte is an envelope byte, never the message's */
		if (e.dsn_ret < 0 || e.dsn_ret > DSN_RET_HDRS)
			__builtin_trap();
		for (i = 0; i < e.nrcpt; i++)
			if (e.rcpt[i].notify < 0 || e.rcpt[i].notify > 15)
				__builtin_trap();
		if (fsize == (off_t)size) {
			int fd = memfd_create("env", 0);

			if (fd >= 0) {
				if (write(fd, data, size) == (ssize_t)size &&
				    spool_verify(fd, &e, fsize) < 0 && errno != EBADMSG && errno != ENOMEM)
					__builtin_trap();
				close(fd);
			}
		}
		spool_env_free(&e);
	} else if (errno != EAGAIN && errno != EBADMSG && errno != EINVAL && errno != ENOMEM) {
		__builtin_trap();   /* the documented failures only */
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(data, size, (off_t)size);
	one(data, size, (off_t)size + 1000);
	return 0;
}
