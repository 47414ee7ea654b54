/*
 * queue/drop.h: the maildrop file format, shared by the three parties of a
 * local submission: `frugal sendmail` writes it, the set-group-ID helper
 * frugal-postdrop validates and stores it, the daemon's pickup reads it
 * back. A pure, bounded, incremental parser (no allocation, no I/O): the
 * helper checks a stream as it copies it, the daemon as it spools it, and a
 * libFuzzer target drives it directly (tests/fuzz/fuzz_drop.c).
 *
 * Format (text records, LF-terminated, then length-prefixed chunks):
 *   FRUGAL-DROP1\n          magic and version
 *   S <sender>\n            exactly one; empty: the null sender
 *   R <recipient>\n         one or more, at most DROP_RCPT_MAX
 *   D <n>\n<n bytes>        message chunks, 1 <= n <= DROP_CHUNK_MAX, LF line ends
 *   Z\n                     end; nothing may follow
 * Without the Z record a file is incomplete (a writer killed midway): it is
 * never mail. Values are at most DROP_VALUE_MAX bytes, no control characters.
 */
#ifndef FRUGAL_QUEUE_DROP_H
#define FRUGAL_QUEUE_DROP_H

#include <stddef.h>

#define DROP_MAGIC      "FRUGAL-DROP1"
#define DROP_VALUE_MAX  1000          /* an address (RFC 5321 4.5.3.1 path: 256) with room */
#define DROP_RCPT_MAX   10000
#define DROP_CHUNK_MAX  65536

enum drop_state { DROP_ST_MAGIC, DROP_ST_SENDER, DROP_ST_RCPT, DROP_ST_BODY, DROP_ST_CHUNK,
	DROP_ST_END, DROP_ST_ERROR };

struct drop_parser {
	enum drop_state state;
	char   line[DROP_VALUE_MAX + 3];   /* the record being read: letter, space, value */
	size_t linelen;
	size_t chunk_left;                 /* bytes of the current D chunk still to come */
	int    nrcpt;
	unsigned long long size;           /* message bytes so far */
	const char *err;                   /* why DROP_ST_ERROR (static text) */
	/* callbacks; a nonzero return stops the parse with err "rejected by the reader" */
	int  (*on_sender)(void *arg, const char *addr);
	int  (*on_rcpt)(void *arg, const char *addr);
	int  (*on_data)(void *arg, const char *p, size_t n);
	void  *arg;
};

void drop_parser_init(struct drop_parser *p, void *arg);
/* Feed n bytes. 0, or -1 with p->err (the state stays DROP_ST_ERROR). */
int  drop_parse(struct drop_parser *p, const char *buf, size_t n);
/* At end of input: 0 when the Z record was seen, else -1 with p->err. */
int  drop_finish(struct drop_parser *p);
/* A maildrop file name as frugal-postdrop makes them: [0-9a-f.], not starting with '.' */
int  drop_name_valid(const char *name);

/*
 * A mailq request (`frugal-postdrop -q`, for users who cannot read the
 * queue): a file named DROP_REQ_PREFIX + a valid drop name holding exactly
 * DROP_REQ_BODY; no message. The daemon answers by rewriting
 * $queue_directory/status/mailq.
 */
#define DROP_REQ_PREFIX "mailq."
#define DROP_REQ_BODY   "FRUGAL-MAILQ1\n"
/* 1 when name is DROP_REQ_PREFIX followed by a valid drop name */
int  drop_req_name_valid(const char *name);

#endif
