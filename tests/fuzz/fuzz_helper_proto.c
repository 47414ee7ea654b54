/*
 * tests/fuzz/fuzz_helper_proto.c: libFuzzer target for the delivery-helper
 * protocol (queue/helper_proto.c). The helpers run as root or as
 * virtual_mailbox_owner and decode what the network-facing process sends:
 * any bytes must be refused or decoded into fields that re-encode to the
 * same bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "queue/queue_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct helper_req rq;
	static struct helper_reply rp;
	static char out[HELPER_MSG_MAX + 64];
	int n;

	if (helper_req_decode((const char *)data, size, &rq) == 0) {
		if (strlen(rq.sender) > HELPER_FIELD_MAX || strlen(rq.rcpt) > HELPER_FIELD_MAX ||
		    strlen(rq.mailbox) == 0 || rq.off < 0 || rq.size < 0)
			__builtin_trap();
		n = helper_req_encode(&rq, out, sizeof out);
		if (n != (int)size || memcmp(out, data, size) != 0)
			__builtin_trap();
	}
	/* the log message is exactly its encoding, and never also a request */
	if (helper_msg_is_log((const char *)data, size)) {
		n = helper_log_encode(out, sizeof out);
		if (n != (int)size || memcmp(out, data, size) != 0 || helper_req_decode((const char *)data, size, &rq) == 0)
			__builtin_trap();
	}
	if (helper_reply_decode((const char *)data, size, &rp) == 0) {
		n = helper_reply_encode(&rp, out, sizeof out);
		if (n != (int)size || memcmp(out, data, size) != 0)
			__builtin_trap();
	}
	return 0;
}
