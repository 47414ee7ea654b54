"""tests/integration/test_faults_out.py: allocation failure at every site of
a delivery attempt (issue 18, SQLite's habit): relaying one message over
SMTP to a sink found through MX (the MTA-STS and MX lookups, connect, EHLO,
STARTTLS when the sink offers it, the envelope, the body, the success notice
frugal writes when the next hop does not offer DSN), and over LMTP to a
Dovecot-like server on a unix socket (virtual_transport).

The delivery side runs in no session, so the sweep has its own hook
(FRUGAL_ALLOC_SWEEP_DELIVERY=DOMAIN, queue/qmgr.c): the first attempt of
message N with a recipient in DOMAIN fails its N-th allocation, from the
dispatch of its job to the end of the attempt; retries are not armed. For
every N: the message is delivered to the sink exactly once, at once or
after a deferral and its retry; nothing is bounced, nothing is lost, the
daemon goes on and stops cleanly (under ASan without a leak report). The
sweep ends at the first N where no allocation failed.

Also swept: a delivery over a connection kept open by the one before it
(smtp_connection_cache_on_demand; plain with frugal's success notice, and
inside STARTTLS), which must close or return that connection in step with the
peer; and outbound AUTH to a relayhost that refuses MAIL without it, in clear
and inside STARTTLS (encrypt), where a failure must never send the mail
unauthenticated (a 530, a bounce) nor report the password wrong. Two
duplicates are allowed and reported: a success notice that could not be
queued, and a reply to the end of data lost to the small allocation OpenSSL
3.0 makes for every TLS 1.3 record it decrypts.

make check samples every 3rd site (FRUGAL_FAULT_STRIDE), every 40th of the
sweeps with STARTTLS (FRUGAL_FAULT_TLS_STRIDE, except over a kept connection,
whose handshake is behind it); FRUGAL_FAULT_FULL=1 fails every one.
Under valgrind (make valgrind-check) every site of the plain and LMTP sweeps
and every 10th of the STARTTLS sweep: the file took 65 s there with make
check's sample, and stays under 10 minutes with this one (the sweeps added
since are not measured there; STARTTLS and AUTH keeps one in 40).
"""
import os
import re
import shutil
import signal
import smtplib
import tempfile
import time
import unittest

from dnsserver import DNSServer
from harness import Daemon, wait_for, free_port, make_cert, SLOW, VALGRIND
import test_smtp_client
from test_smtp_reuse import CountingSink, tcp_client_sockets

FULL = bool(os.environ.get("FRUGAL_FAULT_FULL"))
STRIDE = 1 if FULL else int(os.environ.get("FRUGAL_FAULT_STRIDE", "1" if VALGRIND else "3"))
# a client STARTTLS allocates ~2,000 times, most in OpenSSL's handshake (swept densely by
# test_faults.py's server side): make check samples every 40th
TLS_STRIDE = 1 if FULL else int(os.environ.get("FRUGAL_FAULT_TLS_STRIDE", "10" if VALGRIND else "40"))
LIMIT = 3000
RECORDS = {
    "sweep.test": [("MX", (10, "mx.sweep.test"))],
    "mx.sweep.test": [("A", "127.0.0.1")],
}
MSG = "From: alice@example.test\r\nSubject: out fault %d\r\nX-Fault: %d\r\n\r\nline one\r\n.leading dot\r\n"
# the sink's EHLO without DSN: frugal then writes the success notice itself ("relayed")
# the message before each swept one, to the same next hop: it leaves its connection idle in the cache
WARM = "From: alice@example.test\r\nSubject: warm %d\r\nX-Warm: %d\r\n\r\nwarms the connection\r\n"
NO_DSN_EHLO = "250-pysink\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES"


def faults_of(sink, header=b"X-Fault"):
    """{X-Fault number: times the sink received it}"""
    out = {}
    with sink.lock:
        msgs = list(sink.messages)
    for _, _, data in msgs:
        m = re.search(rb"^" + header + rb": (\d+)", data, re.M)
        if m:
            k = int(m.group(1))
            out[k] = out.get(k, 0) + 1
    return out


class DeliverySweep(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = DNSServer(RECORDS).start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def sweep(self, label, sink, extra, rcpt, domain, notify=None, stride=STRIDE, cache=False, before_each=None,
              after_each=None):
        """Returns (sites, outcomes, the N delivered twice for a notice owed, the daemon).
        before_each(d, n) runs before message n is submitted (the cached sweep warms the connection
        there); after_each(d, n, new log) checks each step and may name its outcome (else None)."""
        # by default no connection kept for reuse: every attempt connects, greets (and starts TLS) anew
        d = Daemon("relay_domains = sweep.test, warm.test\nsmtp_connection_cache_on_demand = %s\n"
                   % ("yes" if cache else "no") + extra, dns=self.dns,
                   env={"FRUGAL_ALLOC_SWEEP_DELIVERY": domain, "FRUGAL_ALLOC_SWEEP_STRIDE": str(stride)})
        self.addCleanup(d.cleanup)
        d.start()
        committed = os.path.join(d.queue, "committed")
        outcomes, owed, lost, n = {}, [], [], 0
        while True:
            n += 1
            self.assertLessEqual(n, LIMIT, "sweep did not end")
            if before_each:
                before_each(d, n)
            before = d.output()
            t0 = time.monotonic()
            # the submitting session stays open, idle, until the attempt ends: its QUIT and its
            # end would otherwise allocate inside the armed window (one countdown for the process)
            c = smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW)
            c.sendmail("alice@example.test", [rcpt], MSG % (n, n),
                       rcpt_options=["NOTIFY=%s" % notify] if notify else [])
            try:
                wait_for(lambda: "fault sweep: delivery %d ended" % n in d.output(), 30, "attempt %d to end" % n)
                c.quit()
                t1 = time.monotonic()
                # delivered once, at once or after a deferral and its retry (minimal_backoff_time 1s)
                wait_for(lambda: n in faults_of(sink), 30, "message %d at the sink" % n)
                t2 = time.monotonic()
                # nothing left to retry: the count is final
                wait_for(lambda: not os.listdir(committed), 30, "an empty queue after message %d" % n)
            except AssertionError as e:
                raise AssertionError("N=%d: %s\n%s" % (n, e, d.output()[-4000:]))
            out = d.output()
            new = out[len(before):]
            fired = new.count("fault injection: failing")
            got = faults_of(sink).get(n)
            if got != 1 and "cannot queue delivery status notification" in new:
                # qmgr.c success_owed(): the notice could not be queued, so the recipient stays
                # to do and the message goes again (Postfix's smtp does the same): reported
                owed.append(n)
            elif got == 2 and "while sending end of data -- message may be sent more than once" in new and \
                    all(int(x) < 1024 for x in re.findall(r"fault injection: failing this allocation of (\d+) bytes", new)):
                # the peer had the dot when the reply was lost to a small allocation inside
                # OpenSSL's SSL_read: 3.0 allocates per TLS 1.3 record (40 bytes, the additional
                # data's WPACKET), which no reservation can take ahead. Deferred "may be sent more
                # than once" (Postfix's words, RFC 1047), as after a lost connection: reported.
                # The record buffers (16.7 KiB) are reserved before the dot (smtpc.c do_write):
                # a failure of those must never come here.
                lost.append(n)
            else:
                self.assertEqual(got, 1, "N=%d: delivered %s times\n%s" % (n, got, out[-4000:]))
            self.assertNotIn("status=bounced", out, "N=%d: bounced\n%s" % (n, out[-4000:]))
            if os.environ.get("FRUGAL_FAULT_DEBUG"):
                print("N=%d %.2f %.2f %.2fs fired=%d deferred=%d" % (n, t1 - t0, t2 - t0, time.monotonic() - t0, fired, "status=deferred" in new))
            kind = ("deferred, then sent" if "status=deferred" in new else "sent") if fired else "no failure"
            if after_each:
                kind = after_each(d, n, new) or kind
            outcomes[kind] = outcomes.get(kind, 0) + 1
            if not fired:
                break
        self.assertEqual(d.stop(), 0, d.output()[-3000:])
        log = d.output()
        self.assertNotIn("status=bounced", log)
        self.assertNotIn("panic", log)
        print("\nfault sweep (%s): %d allocation sites exercised (one in %s, of ~%d); outcomes %s%s"
              % (label, n - 1, stride, (n - 1) * stride, outcomes,
                 "; delivered twice because the success notice could not be queued: N=%s" % owed if notify else "")
              + ("; delivered twice because the reply to the end of data was lost: N=%s" % lost if lost else ""))
        return n - 1, outcomes, owed, d

    def pysink(self, addr, **kw):
        s = test_smtp_client.PySink(addr, **kw)
        s.srv.handle_error = lambda *a: None   # a handshake frugal gave up on is expected here
        self.addCleanup(s.stop)
        return s

    def test_smtp_relay_with_success_notice(self):
        """MX lookup, plain SMTP, NOTIFY=SUCCESS to a next hop without DSN: frugal writes the notice."""
        port = free_port()
        sink = self.pysink(("127.0.0.1", port), ehlo_reply=NO_DSN_EHLO)
        sites, outcomes, owed, d = self.sweep("SMTP relay, success notice", sink,
                                              "transport_maps = inline:{ sweep.test=smtp:sweep.test:%d }\n" % port,
                                              "u@sweep.test", "sweep.test", notify="SUCCESS,FAILURE")
        self.assertGreater(sites * STRIDE, 30)
        self.assertIn("deferred, then sent", outcomes, "no failure reached the SMTP client")
        # every notice reached alice (a notice owed is sent with the second delivery)
        self.assertGreaterEqual(len(d.messages(d.maildir("alice"))), sites + 1)
        self.__class__.plain_sites = sites

    def test_smtp_relay_starttls(self):
        """The same to a sink that offers STARTTLS (smtp_tls_security_level = may)."""
        tmp = tempfile.mkdtemp(prefix="frugal-fault-out-")
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        sink = self.pysink(("127.0.0.1", port), tls=make_cert(tmp, "sink", kind="ec"))
        sites, outcomes, owed, d = self.sweep("SMTP relay, STARTTLS", sink,
                                              "transport_maps = inline:{ sweep.test=smtp:sweep.test:%d }\n" % port,
                                              "u@sweep.test", "sweep.test", stride=TLS_STRIDE)
        # inside TLS, but for Postfix's fallback at may: a failed handshake (here a failed
        # allocation in it) for a message older than minimal_backoff_time retries in clear,
        # which a loaded machine reaches (seen once in a make check trial); each one is logged
        clear = len(sink.messages) - sink.tls_messages
        self.assertLessEqual(clear, d.output().count("again without STARTTLS"),
                             "a message went in clear without the logged fallback")
        # negative control: the handshake's allocations are swept too (OpenSSL's go through
        # core/mem): far more sites than the plain relay's ~50
        self.assertGreater(sites * TLS_STRIDE, 500)

    def test_smtp_relay_cached_connection(self):
        """Each armed attempt takes a connection kept open by the delivery before it: a message to
        warm.test, the same next hop, sent and retired first (its connection answered RSET and waits
        idle in the cache). A failure must close or return that connection in step with the peer.
        The next hop offers no DSN and the message asks NOTIFY=SUCCESS: frugal's notice is written
        inside the attempt, after the transaction on the kept connection."""
        self.cached_sweep("SMTP relay over a cached connection, success notice")

    def test_smtp_relay_cached_tls_connection(self):
        """The same over a kept STARTTLS connection (its TLS records, RSET and MAIL inside TLS)."""
        tmp = tempfile.mkdtemp(prefix="frugal-fault-cache-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.cached_sweep("SMTP relay over a cached STARTTLS connection", tls=make_cert(tmp, "sink", kind="ec"))

    def cached_sweep(self, label, tls=None):
        port = free_port()
        sink = CountingSink(("127.0.0.1", port), ehlo_reply=None if tls else NO_DSN_EHLO, tls=tls)
        sink.srv.handle_error = lambda *a: None
        self.addCleanup(sink.stop)
        hop = "smtp:[127.0.0.1]:%d" % port
        seen = {"cached": 0}

        def open_to_sink():
            return [st for st in tcp_client_sockets(port) if st == "01"]    # ESTABLISHED, frugal's side

        def warm(d, n):
            with smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW) as c:
                c.sendmail("alice@example.test", ["w@warm.test"], WARM % (n, n))
            committed = os.path.join(d.queue, "committed")
            wait_for(lambda: faults_of(sink, b"X-Warm").get(n) == 1 and not os.listdir(committed), 30,
                     "warm message %d sent and retired" % n)
            # exactly one connection open, idle in the cache: a failure before left none half-open
            self.assertEqual(len(open_to_sink()), 1, "N=%d: connections open to the sink: %s\n%s"
                             % (n, tcp_client_sockets(port), d.output()[-3000:]))

        def check(d, n, new):
            lines = re.findall(r"to=<u@sweep\.test>.*", new)
            self.assertTrue(lines, "N=%d: no delivery line\n%s" % (n, new))
            # the armed attempt's own line, or its start over on a new connection after a failure
            # on the kept one
            cached = "conn_use=" in lines[0] or "trying a new connection" in new
            seen["cached"] += cached
            kind = ("deferred, then sent" if "status=deferred" in new else "sent") \
                if "fault injection: failing" in new else "no failure"
            return kind + (" (cached connection)" if cached else " (a new connection)")

        sites, outcomes, owed, d = self.sweep(
            label, sink,
            "transport_maps = inline:{ sweep.test=%s, warm.test=%s }\n" % (hop, hop) +
            "smtp_destination_concurrency_limit = 1\nsmtp_connection_cache_time_limit = 60s\n"
            "smtp_connection_reuse_time_limit = 3600s\n",
            "u@sweep.test", "sweep.test", cache=True, before_each=warm, after_each=check,
            notify=None if tls else "SUCCESS,FAILURE", stride=1 if tls else STRIDE)
        log = d.output()
        # the warm messages were never armed: each went at once and once, on whatever connection a
        # failure before left; a connection left out of step would defer one or be found dead at MAIL
        self.assertEqual(sorted(faults_of(sink, b"X-Warm").items()), [(k, 1) for k in range(1, sites + 2)])
        if tls:
            self.assertEqual(sink.tls_messages, len(sink.messages))
        self.assertNotRegex(log, r"to=<w@warm\.test>.*status=(deferred|bounced)")
        # a failure writing RSET or MAIL on the kept connection (a TLS record) starts the armed job
        # over on a new connection (smtpc.c retry_fresh); never a warm message's
        warm_ids = set(re.findall(r"(\w+): to=<w@warm\.test>", log))
        fresh = set(re.findall(r"(\w+): cached connection to .*: trying a new connection", log))
        self.assertFalse(warm_ids & fresh, "a warm message found its kept connection dead")
        for mail, rcpts, data in sink.messages:
            self.assertEqual(rcpts, ["w@warm.test"] if b"X-Warm" in data else ["u@sweep.test"])
        # each connection's dialogue in step: a transaction starts after EHLO or RSET
        for conn in range(1, sink.connections + 1):
            v = [x for x in sink.verbs(conn) if x not in ("RCPT", "DATA")]
            for a, b in zip(v, v[1:]):
                if b == "MAIL":
                    self.assertIn(a, ("EHLO", "RSET"), "connection %d: %s" % (conn, v))
        # negative control: the sweep went through the cached path, the unarmed end too (else
        # it swept only the fresh-connection path test_smtp_relay_with_success_notice covers)
        self.assertIn("no failure (cached connection)", outcomes)
        self.assertGreaterEqual(seen["cached"], (sites + 1) // 2, outcomes)
        self.assertLess(sink.connections, len(sink.messages) // 2 + 1, outcomes)

    def test_smtp_relay_auth(self):
        """AUTH PLAIN to a relayhost that requires it (530 to MAIL without it), in clear
        (smtp_sasl_security_options = noanonymous): dense over the client's SASL code."""
        port = free_port()
        sink = self.pysink(("127.0.0.1", port), auth=("relayuser", "s3cret"), auth_required=True)
        self.auth_sweep("SMTP relay, AUTH", sink, port,
                        "smtp_tls_security_level = none\nsmtp_sasl_security_options = noanonymous\n", STRIDE)

    def test_smtp_relay_auth_starttls(self):
        """The same inside STARTTLS (smtp_tls_security_level = encrypt, as for a relayhost with a
        password: no fallback in clear), AUTH offered only inside TLS."""
        tmp = tempfile.mkdtemp(prefix="frugal-fault-auth-")
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        sink = self.pysink(("127.0.0.1", port), tls=make_cert(tmp, "sink", kind="ec"), auth=("relayuser", "s3cret"),
                           auth_required=True)
        sites = self.auth_sweep("SMTP relay, STARTTLS and AUTH", sink, port,
                                "smtp_tls_security_level = encrypt\nsmtp_sasl_tls_security_options = noanonymous\n",
                                40 if VALGRIND and not FULL and not os.environ.get("FRUGAL_FAULT_TLS_STRIDE")
                                else TLS_STRIDE)
        self.assertEqual(sink.tls_messages, len(sink.messages))
        self.assertGreater(sites * (40 if VALGRIND and not FULL and not os.environ.get("FRUGAL_FAULT_TLS_STRIDE")
                                    else TLS_STRIDE), 500)

    def auth_sweep(self, label, sink, port, extra, stride):
        def reload(d, n):
            # a new configuration generation before each message: its attempt opens the password
            # map (and makes the client TLS context) again, inside the armed window, where the
            # first attempt alone would otherwise
            k = d.output().count("reload -- version")
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: d.output().count("reload -- version") > k, 15, "reload before message %d" % n)

        sites, outcomes, owed, d = self.sweep(
            label, sink, "transport_maps = inline:{ sweep.test=smtp:[127.0.0.1]:%d }\n" % port +
            "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = inline:{ 127.0.0.1=relayuser:s3cret }\n" + extra,
            "u@sweep.test", "sweep.test", stride=stride, before_each=reload)
        log = d.output()
        self.assertNotIn("reload failed", log)
        self.assertIn("deferred, then sent", outcomes, "no failure reached the SMTP client")
        # the right password is never reported wrong (the sink says 535 only to wrong credentials),
        # never logged, and every message went authenticated (else the sink's 530)
        for bad in ("said: 535", "bad credentials", "s3cret", "530 5.7.0"):
            at = log.find(bad)
            self.assertEqual(at, -1, "%r in the log: ...%s" % (bad, log[max(0, at - 1500):at + 300]))
        self.assertGreaterEqual(sink.auth_ok, len(sink.messages))
        return sites

    def test_lmtp_virtual_transport(self):
        """virtual_transport = lmtp:unix:PATH (Dovecot's set-up) for carol@virt.test."""
        tmp = tempfile.mkdtemp(prefix="frugal-fault-lmtp-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "lmtp")
        sink = self.pysink(path, lmtp=True)
        sites, outcomes, owed, d = self.sweep("LMTP", sink, "virtual_transport = lmtp:unix:%s\n" % path,
                                              "carol@virt.test", "virt.test")
        # few: the client's state, its output buffer and two per-recipient arrays; the rest is
        # fixed-size (replies, log lines) or on the stack
        self.assertGreaterEqual(sites * STRIDE, 4)
        self.assertIn("deferred, then sent", outcomes, "no failure reached the LMTP client")


if __name__ == "__main__":
    unittest.main()
