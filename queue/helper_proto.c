/*
 * queue/helper_proto.c: the messages between the daemon and its delivery
 * helpers, one datagram each on a SOCK_SEQPACKET socketpair (the message
 * descriptor rides along as SCM_RIGHTS). Pure encoders and decoders over
 * buffers, no allocation, fuzzed (tests/fuzz/fuzz_helper_proto.c): the
 * helpers run as root or as virtual_mailbox_owner and must treat every
 * request from the network-facing process as hostile.
 *
 * Wire format (host byte order: both ends are the same binary on one host):
 *   request:  magic "FRGQ" | id u64 | off i64 | size i64 |
 *             sender_len u16 | rcpt_len u16 | mailbox_len u16 | 0 u16 | strings
 *   reply:    magic "FRGR" | id u64 | status i32 | fds i32 | socks i32 |
 *             reason_len u16 | 0 u16 | reason
 *   log:      magic "FRGL" and nothing else, with the log file's descriptor
 *             (daemon to helper, after rotation; no reply)
 * Strings carry no NUL; the decoder refuses anything that does not add up
 * to exactly the datagram's length.
 */
#include "queue/queue_int.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#define REQ_MAGIC   0x51475246u   /* "FRGQ" */
#define REPLY_MAGIC 0x52475246u   /* "FRGR" */
#define LOG_MAGIC   0x4c475246u   /* "FRGL" */
#define REQ_HEAD    (4 + 8 + 8 + 8 + 8 + 8 + 2 + 2 + 2 + 2)   /* with the late headers' range */
#define REPLY_HEAD  (4 + 8 + 4 + 4 + 4 + 2 + 2)

static void put(char *buf, size_t *off, const void *p, size_t n)
{
	memcpy(buf + *off, p, n);
	*off += n;
}

static void get(const char *buf, size_t *off, void *p, size_t n)
{
	memcpy(p, buf + *off, n);
	*off += n;
}

/* a string field: no NUL, at most max bytes */
static int field_ok(const char *s, size_t max, uint16_t *len)
{
	size_t n = strlen(s);

	if (n > max)
		return 0;
	*len = (uint16_t)n;
	return 1;
}

int helper_req_encode(const struct helper_req *r, char *buf, size_t len)
{
	uint32_t magic = REQ_MAGIC;
	uint16_t ls, lr, lm, zero = 0;
	size_t off = 0;

	if (!field_ok(r->sender, HELPER_FIELD_MAX, &ls) || !field_ok(r->rcpt, HELPER_FIELD_MAX, &lr) ||
	    !field_ok(r->mailbox, HELPER_FIELD_MAX, &lm) || len < REQ_HEAD + (size_t)ls + lr + lm)
		return errno = EINVAL, -1;
	put(buf, &off, &magic, 4);
	put(buf, &off, &r->id, 8);
	put(buf, &off, &r->off, 8);
	put(buf, &off, &r->size, 8);
	put(buf, &off, &r->pre_off, 8);
	put(buf, &off, &r->pre_len, 8);
	put(buf, &off, &ls, 2);
	put(buf, &off, &lr, 2);
	put(buf, &off, &lm, 2);
	put(buf, &off, &zero, 2);
	put(buf, &off, r->sender, ls);
	put(buf, &off, r->rcpt, lr);
	put(buf, &off, r->mailbox, lm);
	return (int)off;
}

static int get_field(const char *buf, size_t *off, uint16_t n, char *out)
{
	if (memchr(buf + *off, '\0', n))
		return -1;
	memcpy(out, buf + *off, n);
	out[n] = '\0';
	*off += n;
	return 0;
}

int helper_req_decode(const char *buf, size_t len, struct helper_req *r)
{
	uint32_t magic;
	uint16_t ls, lr, lm, zero;
	size_t off = 0;

	memset(r, 0, sizeof *r);
	if (len < REQ_HEAD)
		return errno = EBADMSG, -1;
	get(buf, &off, &magic, 4);
	get(buf, &off, &r->id, 8);
	get(buf, &off, &r->off, 8);
	get(buf, &off, &r->size, 8);
	get(buf, &off, &r->pre_off, 8);
	get(buf, &off, &r->pre_len, 8);
	get(buf, &off, &ls, 2);
	get(buf, &off, &lr, 2);
	get(buf, &off, &lm, 2);
	get(buf, &off, &zero, 2);
	if (magic != REQ_MAGIC || zero != 0 || ls > HELPER_FIELD_MAX || lr > HELPER_FIELD_MAX ||
	    lm > HELPER_FIELD_MAX || len != REQ_HEAD + (size_t)ls + lr + lm || r->off < 0 || r->size < 0 ||
	    r->off > INT64_MAX - r->size || r->pre_off < 0 || r->pre_len < 0 || r->pre_off > INT64_MAX - r->pre_len)
		return errno = EBADMSG, -1;
	if (get_field(buf, &off, ls, r->sender) < 0 || get_field(buf, &off, lr, r->rcpt) < 0 ||
	    get_field(buf, &off, lm, r->mailbox) < 0 || lm == 0)
		return errno = EBADMSG, -1;
	return 0;
}

int helper_reply_encode(const struct helper_reply *r, char *buf, size_t len)
{
	uint32_t magic = REPLY_MAGIC;
	uint16_t lr, zero = 0;
	size_t off = 0;

	if (!field_ok(r->reason, sizeof r->reason - 1, &lr) || len < REPLY_HEAD + (size_t)lr)
		return errno = EINVAL, -1;
	put(buf, &off, &magic, 4);
	put(buf, &off, &r->id, 8);
	put(buf, &off, &r->status, 4);
	put(buf, &off, &r->fds, 4);
	put(buf, &off, &r->socks, 4);
	put(buf, &off, &lr, 2);
	put(buf, &off, &zero, 2);
	put(buf, &off, r->reason, lr);
	return (int)off;
}

int helper_reply_decode(const char *buf, size_t len, struct helper_reply *r)
{
	uint32_t magic;
	uint16_t lr, zero;
	size_t off = 0;

	memset(r, 0, sizeof *r);
	if (len < REPLY_HEAD)
		return errno = EBADMSG, -1;
	get(buf, &off, &magic, 4);
	get(buf, &off, &r->id, 8);
	get(buf, &off, &r->status, 4);
	get(buf, &off, &r->fds, 4);
	get(buf, &off, &r->socks, 4);
	get(buf, &off, &lr, 2);
	get(buf, &off, &zero, 2);
	if (magic != REPLY_MAGIC || zero != 0 || lr >= sizeof r->reason || len != REPLY_HEAD + (size_t)lr)
		return errno = EBADMSG, -1;
	if (get_field(buf, &off, lr, r->reason) < 0)
		return errno = EBADMSG, -1;
	return 0;
}

int helper_log_encode(char *buf, size_t len)
{
	uint32_t magic = LOG_MAGIC;

	if (len < 4)
		return errno = EINVAL, -1;
	memcpy(buf, &magic, 4);
	return 4;
}

int helper_msg_is_log(const char *buf, size_t len)
{
	uint32_t magic;

	if (len != 4)
		return 0;
	memcpy(&magic, buf, 4);
	return magic == LOG_MAGIC;
}
