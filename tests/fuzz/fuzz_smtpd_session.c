/*
 * tests/fuzz/fuzz_smtpd_session.c: libFuzzer target for the whole session
 * layer (smtpd/session.c, restrict.c, server.c): a byte stream in, replies
 * out, through the real state machine on a real libev loop.
 *
 * The client's connection is one end of a socketpair: the fuzzer's bytes
 * are written into it (in chunks, as a network would deliver them), then it
 * is shut for writing (or closed outright: a reset), and the replies are
 * drained as they come. The spool is tests/fuzz/fake_spool.c: it keeps
 * nothing and answers a commit asynchronously, on the next loop iteration,
 * as the real one answers from a worker; so DATA, dot-stuffing, error
 * limits, RSET and resets in the middle of a commit are all reached.
 *
 * Input: byte 0 selects options (see OPT_*), byte 1 the chunk size; the
 * rest is what the client sends, after FUZZ_PREFIX (empty here; the BDAT
 * target, fuzz_smtpd_bdat.c, starts every input inside a transaction).
 * Oracles: every reply line is a well-formed SMTP reply, the session always
 * ends, and ASan/UBSan/LSan see nothing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/fd.h"
#include "core/log.h"
#include "limits/limits.h"
#include "smtpd/smtpd_int.h"

#include "fake_spool.h"

#ifndef FUZZ_PREFIX
#define FUZZ_PREFIX ""
#endif

#define OPT_MYNETWORKS  0x01   /* the client is in mynetworks */
#define OPT_FAIL_COMMIT 0x02   /* the spool fails the commit */
#define OPT_FAIL_TXN    0x04   /* the spool refuses a new transaction */
#define OPT_STRESS      0x08   /* stress-mode parameters */
#define OPT_RESET       0x10   /* the client closes outright instead of shutting down its side */
#define OPT_PREGREET    0x20   /* a pregreet wait before the banner */

static const char conf_text[] =
	"myhostname = mx.example.test\n"
	"mydestination = $myhostname, localhost, example.test\n"
	"alias_maps =\n"
	"local_recipient_maps = inline:{ alice=1, bob=1, postmaster=1 }\n"
	"virtual_mailbox_domains = virt.test\n"
	"virtual_mailbox_maps = inline:{ carol@virt.test=virt.test/carol/ }\n"
	"relay_domains = relay.test\n"
	"mynetworks = 192.0.2.0/24\n"
	"smtpd_error_sleep_time = 0s\n"
	"smtpd_timeout = ${stress?{1}:{2}}s\n"
	"smtpd_hard_error_limit = ${stress?{3}:{20}}\n"
	"message_size_limit = 2000\n"
	"smtpd_recipient_limit = 5\n"
	"smtpd_helo_restrictions = reject_invalid_helo_hostname\n"
	"smtpd_sender_restrictions = check_sender_access inline:{ spam@example.org=REJECT, "
	"{ tmp@example.org = 451 try later } }\n"
	"smtpd_recipient_restrictions = check_recipient_access inline:{ bob@example.test=OK }, "
	"permit_mynetworks, reject_unauth_destination, reject_unlisted_recipient\n";

static struct ev_loop *loop;
static struct smtpd_server srv;
static struct smtpd_gen *gen[2];   /* [1]: with a pregreet wait */

static void init(void)
{
	struct conf_diags d;
	struct conf *c;
	char err[256];
	int i;

	signal(SIGPIPE, SIG_IGN);     /* as the daemon: a reset client is an EPIPE, not a death */
	log_open("frugal", "/dev/null", NULL);
	loop = ev_loop_new(EVFLAG_AUTO);
	fake_spool_loop = loop;
	server_init(&srv, loop);
	for (i = 0; i < 2; i++) {
		char text[sizeof conf_text + 64];

		snprintf(text, sizeof text, "%s%s", conf_text, i ? "smtpd_pregreet_wait = 1s\n" : "");
		if ((c = conf_load_text(text, "fuzz.cf", &d)) == NULL) {
			fprintf(stderr, "fuzz.cf: %s\n", d.n ? d.v[0].text : "?");
			abort();
		}
		conf_diags_free(&d);
		if ((gen[i] = smtpd_gen_new(c, NULL, err, sizeof err)) == NULL) {
			fprintf(stderr, "fuzz.cf: %s\n", err);
			abort();
		}
		conf_unref(c);
	}
}

/*
 * Every line the server sent must look like "NNN text" or "NNN-text",
 * CRLF-terminated. A client that resets may have read half a line before it
 * vanished (cut: the last line may be partial).
 */
static void check_replies(const char *p, size_t n, int cut)
{
	size_t i = 0;

	while (i < n) {
		const char *lf = memchr(p + i, '\n', n - i);
		size_t len;

		if (lf == NULL) {
			if (cut)
				return;
			__builtin_trap();   /* a reply cut short: the session wrote half a line */
		}
		len = (size_t)(lf - (p + i)) + 1;
		if (len < 6 || p[i + len - 2] != '\r' || p[i] < '2' || p[i] > '5' ||
		    p[i + 1] < '0' || p[i + 1] > '9' || p[i + 2] < '0' || p[i + 2] > '9' ||
		    (p[i + 3] != ' ' && p[i + 3] != '-') || len > 1024)
			__builtin_trap();
		i += len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char replies[1 << 20];
	static const char prefix[] = FUZZ_PREFIX;
	size_t nreplies = 0, off = 0, chunk;
	uint8_t *input;
	struct sockaddr_storage peer;
	struct sockaddr_in *in = (struct sockaddr_in *)&peer;
	struct session *s;
	uint8_t opt;
	int sv[2], closed = 0, spins = 0, wrapped = 0;

	if (size < 2)
		return 0;
	if (loop == NULL)
		init();
	opt = data[0];
	chunk = (size_t)data[1] * 4 + 1;
	/* what the client sends: the prefix, then the fuzzer's bytes */
	if ((input = malloc(sizeof prefix - 1 + size - 2 + 1)) == NULL)
		abort();
	memcpy(input, prefix, sizeof prefix - 1);
	memcpy(input + sizeof prefix - 1, data + 2, size - 2);
	size = sizeof prefix - 1 + size - 2;
	fake_spool_fail_commit = (opt & OPT_FAIL_COMMIT) != 0;
	fake_spool_fail_txn = (opt & OPT_FAIL_TXN) != 0;
	srv.stress = (opt & OPT_STRESS) != 0;
	srv.gen = gen[(opt & OPT_PREGREET) ? 1 : 0];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	memset(&peer, 0, sizeof peer);
	in->sin_family = AF_INET;
	in->sin_port = htons(25000);
	in->sin_addr.s_addr = htonl((opt & OPT_MYNETWORKS) ? 0xc0000201 : 0xcb007101); /* 192.0.2.1 / 203.0.113.1 */
	fd_received(sv[0], FD_TCP);   /* counted as an accepted socket: session_free uncounts it */
	if ((s = session_new(&srv, sv[0], &peer, 0, 0)) == NULL)
		abort();
	server_session_add(&srv, s);
	session_start(s);
	/* until the reaper has freed the session: feed, drain, turn the loop */
	while (srv.nsessions > 0 || srv.reap != NULL) {
		ssize_t r;

		if (!closed && off < size) {
			size_t n = size - off < chunk ? size - off : chunk;

			r = write(sv[1], input + off, n);
			if (r > 0)
				off += (size_t)r;
		}
		if (!closed && off >= size) {
			if (opt & OPT_RESET) {
				/* drain what was already sent back, then vanish */
				while ((r = read(sv[1], replies + nreplies, sizeof replies - nreplies)) > 0)
					nreplies += (size_t)r;
				close(sv[1]);
				sv[1] = -1;
			} else {
				shutdown(sv[1], SHUT_WR);
			}
			closed = 1;
		}
		while (sv[1] >= 0 && nreplies < sizeof replies &&
		    (r = read(sv[1], replies + nreplies, sizeof replies - nreplies)) > 0)
			nreplies += (size_t)r;
		if (nreplies == sizeof replies) {
			nreplies = 0;   /* more than we keep: stop checking, keep draining */
			wrapped = 1;
		}
		/* NOWAIT while there is input to feed; else wait for the next event (timers, commits) */
		ev_run(loop, closed ? EVRUN_ONCE : EVRUN_NOWAIT);
		if (++spins > 1000000)
			__builtin_trap();   /* a session that never ends */
	}
	if (sv[1] >= 0) {
		ssize_t r;

		while ((r = read(sv[1], replies + nreplies, sizeof replies - nreplies)) > 0)
			nreplies += (size_t)r;
		close(sv[1]);
	}
	if (!wrapped)
		check_replies(replies, nreplies, (opt & OPT_RESET) != 0);
	free(input);
	return 0;
}
