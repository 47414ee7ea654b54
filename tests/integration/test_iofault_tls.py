"""tests/integration/test_iofault_tls.py: system calls that fail inside TLS,
AUTH and LMTP transactions (PRODUCT.md section 3, guarantees 1 and 3),
injected into the real daemon by the LD_PRELOAD shim build/tests/faultshim.so
as test_iofault.py does it (same plumbing: IOFaultBase).

Each case checks that the fault really fired (the shim's log), the reply or
outcome the contract documents, a warning naming the resource, and a second
transaction after disarming. Inbound: the spool's write under a STARTTLS
session on port 25 and an implicit-TLS, authenticated one on smtps_listen
(ENOSPC 452 4.3.1, EIO 451 4.3.0, short writes 250 with the message intact),
accept() failing on the TLS listener (paused, then the waiting client gets
its handshake and greeting), the client's connection reset in the middle of
the handshake and of DATA (nothing delivered, the daemon serves on), the
250 after a commit that cannot be written (delivered once: a duplicate at
worst, never a loss).
Outbound: STARTTLS to a sink whose socket()/connect() fail, whose
connection breaks mid-DATA or under the ClientHello (deferred or retried in
clear, delivered once, never bounced). AUTH: a Dovecot auth socket that
cannot be reached or breaks, and a reload that cannot open smtpd_sasl_users
(454 4.7.0 or the running table, never 535). LMTP: test_iofault_lmtp.py.
"""
import base64
import os
import shutil
import socket
import ssl
import tempfile
import threading
import threading
import time
import unittest

from harness import Raw, wait_for, free_port, make_cert, client_ctx, run_frugal, SLOW
from test_iofault import IOFaultBase, MSG, body
from test_smtp_client import PySink

PASSWORD = "correct horse battery staple"


def plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


class TLSBase(IOFaultBase):
    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="frugal-iofault-tls-")
        os.chmod(cls.certdir, 0o755)
        cls.cert, cls.key = make_cert(cls.certdir, "mx", kind="ec")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def tls_daemon(self, rules, extra=""):
        """A daemon with STARTTLS on port 25, implicit TLS on self.smtps and alice's password."""
        self.smtps = free_port()
        tls = ("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\nsmtps_listen = 127.0.0.1:%d\n"
               % (self.cert, self.key, self.smtps))

        def passwd(d):
            with open(os.path.join(d.dir, "frugal.conf"), "a") as f:
                f.write("smtpd_sasl_users = cdb:%s/users\n" % d.dir)
            r = run_frugal("passwd", "-c", d.dir, "alice@example.test", input=PASSWORD + "\n")
            self.assertEqual(r.returncode, 0, r.stderr)
        return self.daemon(rules, extra=tls + extra, before_start=passwd)

    def tls_session(self, d, mode):
        """A session up to MAIL: "starttls" on port 25, "smtps" with implicit TLS and AUTH."""
        if mode == "starttls":
            r = Raw(d.port, timeout=20 * SLOW)
            self.assertEqual(r.reply()[0], 220)
            self.assertEqual(r.cmd("EHLO c.example.org")[0], 250)
            self.assertEqual(r.starttls(client_ctx()), 220)
        else:
            r = Raw(self.smtps, timeout=20 * SLOW)
            r.f.close()
            r.s = client_ctx().wrap_socket(r.s, server_hostname="mx.example.test")
            r.f = r.s.makefile("rb")
            self.assertEqual(r.reply()[0], 220)
        self.addCleanup(r.close)
        self.assertEqual(r.cmd("EHLO c.example.org")[0], 250)
        if mode == "smtps":
            code, text = r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))
            self.assertEqual(code, 235, text)
        return r

    def tls_transaction(self, d, tag, mode, size=200, rcpt="alice@example.test"):
        r = self.tls_session(d, mode)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.test>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<%s>" % rcpt)[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send((MSG % (tag, body(tag, size)) + ".\r\n").encode())
        code, text = r.reply()
        r.cmd("QUIT")
        r.close()
        return code, text


class TLSSpool(TLSBase):
    """The spool's faults under a TLS session: the same replies as in plain SMTP."""

    def spool_refused(self, rule, want, warning):
        d = self.tls_daemon(rule)
        self.set_armed(True)
        for mode in ("starttls", "smtps"):
            code, text = self.tls_transaction(d, "faulted-" + mode, mode)
            self.assertEqual(text.strip(), want, mode)
        self.assertGreaterEqual(len(self.fired("write")), 2, "the fault did not fire in both sessions")
        d.wait_log(warning)
        self.set_armed(False)
        for mode in ("starttls", "smtps"):
            code, text = self.tls_transaction(d, "after-" + mode, mode)
            self.assertEqual(code, 250, text)
            self.wait_delivered(d, "after-" + mode)
        wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 15 * SLOW, "queue empty")
        for mode in ("starttls", "smtps"):
            self.assertEqual(self.delivered(d, "faulted-" + mode), [])

    def test_tls_spool_write_enospc_452(self):
        self.spool_refused("write:ENOSPC:path={q}/incoming/", "452 4.3.1 Insufficient system storage",
                           "queue file system: No space left on device")

    def test_tls_spool_write_eio_451(self):
        self.spool_refused("write:EIO:path={q}/incoming/", "451 4.3.0 Error: queue file write error",
                           "queue file: Input/output error")

    def test_tls_spool_short_writes_intact(self):
        d = self.tls_daemon("write:SHORT:path={q}/")
        self.set_armed(True)
        for mode in ("starttls", "smtps"):
            code, text = self.tls_transaction(d, "short-" + mode, mode, size=100000)
            self.assertEqual(code, 250, text)
        self.assertGreater(len(self.fired("write")) + len(self.fired("pwrite")), 6)
        self.set_armed(False)
        for mode in ("starttls", "smtps"):
            got = self.wait_delivered(d, "short-" + mode)
            self.assertIn(body("short-" + mode, 100000).encode(), got.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


class TLSListener(TLSBase):
    def accept_paused_tls(self, err, warning):
        d = self.tls_daemon("accept:%s" % err)
        self.set_armed(True)
        r = Raw(self.smtps, timeout=20 * SLOW)     # in the backlog of the TLS listener
        self.addCleanup(r.close)
        wait_for(lambda: self.fired("accept"), 10 * SLOW, "accept() to be faulted")
        n0 = len(self.fired("accept"))
        d.wait_log("exhausted")
        self.set_armed(False)
        # the handshake and the greeting come once the listener resumes
        r.f.close()
        r.s = client_ctx().wrap_socket(r.s, server_hostname="mx.example.test")
        r.f = r.s.makefile("rb")
        self.assertEqual(r.reply()[0], 220)
        self.assertEqual(r.cmd("EHLO c.example.org")[0], 250)
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))[0], 235)
        r.cmd("QUIT")
        self.assertLess(n0, 50, "accept() retried in a loop")
        self.assertIn(warning, d.output())
        code, text = self.tls_transaction(d, "after", "smtps")
        self.assertEqual(code, 250, text)
        self.wait_delivered(d, "after")

    def test_smtps_accept_emfile_pauses_then_handshakes(self):
        self.accept_paused_tls("EMFILE", "descriptors (RLIMIT_NOFILE)")

    def test_smtps_accept_enomem_pauses_then_handshakes(self):
        self.accept_paused_tls("ENOMEM", "kernel memory")


class TLSConnectionBreaks(TLSBase):
    """The client's connection fails under the daemon's read() (ECONNRESET): in the
    handshake, or in DATA. Nothing was acknowledged, so nothing may be delivered; the
    daemon logs the lost connection and serves the next client."""

    def test_reset_mid_handshake(self):
        # the first read() on a TCP socket once armed is the ClientHello after STARTTLS
        d = self.tls_daemon("read:ECONNRESET:stream:count=1")
        r = Raw(d.port, timeout=20 * SLOW)
        self.addCleanup(r.close)
        self.assertEqual(r.reply()[0], 220)
        self.assertEqual(r.cmd("EHLO c.example.org")[0], 250)
        self.assertEqual(r.cmd("STARTTLS")[0], 220)
        self.set_armed(True)
        with self.assertRaises((ssl.SSLError, OSError)):
            r.s = client_ctx().wrap_socket(r.s, server_hostname="mx.example.test")
            r.s.recv(1)
        self.assertTrue(self.fired("read"))
        d.wait_log("SSL_accept error from")
        self.assertRegex(d.output(), r"SSL_accept error from \S+\[127\.0\.0\.1\]: Connection reset by peer")
        self.set_armed(False)
        code, text = self.tls_transaction(d, "after", "starttls")
        self.assertEqual(code, 250, text)
        self.wait_delivered(d, "after")

    def test_reset_mid_data(self):
        d = self.tls_daemon("read:ECONNRESET:stream:count=1")
        r = self.tls_session(d, "starttls")
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send((MSG % ("cut", body("cut", 2000))).encode())
        self.set_armed(True)
        r.send(b"more of the body\r\n")     # wakes the daemon's read: it gets ECONNRESET
        wait_for(lambda: self.fired("read"), 10 * SLOW, "the read fault")
        d.wait_log("lost connection after DATA")
        self.set_armed(False)
        r.close()
        code, text = self.tls_transaction(d, "after", "starttls")
        self.assertEqual(code, 250, text)
        self.wait_delivered(d, "after")
        wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 15 * SLOW, "queue empty")
        self.assertEqual(self.delivered(d, "cut"), [])
        self.assertEqual(os.listdir(os.path.join(d.queue, "incoming")), [], "the cut message's file was left")

    def test_commit_reply_write_fails(self):
        """The 250 after a commit cannot be written (EPIPE under SSL_write). The message
        is on stable storage, so it is delivered, once; the client, which saw no 250,
        will send it again: a duplicate at worst, never a loss (PRODUCT.md section 3.1)."""
        d = self.tls_daemon("write:EPIPE:stream:count=1")
        r = self.tls_session(d, "starttls")
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send((MSG % ("unanswered", body("unanswered"))).encode())
        self.set_armed(True)    # the daemon's next TCP write is the end-of-data reply
        r.send(b".\r\n")
        try:
            code, text = r.reply()
        except OSError:
            code, text = None, ""
        self.assertIsNone(code, text)
        self.assertTrue(self.fired("write"))
        # Postfix's line: the admin's hint that the client did not hear its 250
        d.wait_log("lost connection after END-OF-MESSAGE from")
        self.set_armed(False)
        self.wait_delivered(d, "unanswered")
        code, text = self.tls_transaction(d, "after", "starttls")
        self.assertEqual(code, 250, text)
        self.wait_delivered(d, "after")
        self.assertEqual(len(self.delivered(d, "unanswered")), 1)


class OutboundTLS(TLSBase):
    """Relaying with STARTTLS to a sink (smtp_tls_security_level = may)."""

    def tls_sink(self):
        port = free_port()
        tmp = tempfile.mkdtemp(prefix="frugal-iofault-sink-")
        self.addCleanup(shutil.rmtree, tmp, True)
        sink = PySink(("127.0.0.1", port), tls=make_cert(tmp, "sink", kind="ec"))
        self.addCleanup(sink.stop)
        return sink, port

    def delivered_once_over_tls(self, d, sink, tag, tls=1):
        wait_for(lambda: sink.messages, 20 * SLOW, "the deferred message at the sink")
        wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 15 * SLOW, "queue empty")
        self.assertEqual(len(sink.messages), 1)
        self.assertEqual(sink.tls_messages, tls, "delivered, but not inside TLS" if tls else "TLS after all")
        data = sink.messages[0][2]
        self.assertIn(b"Subject: " + tag.encode(), data if isinstance(data, bytes) else data.encode())
        log = d.output()
        self.assertNotIn("status=bounced", log)
        return log

    def outbound(self, rule, err_text):
        sink, port = self.tls_sink()
        d = self.tls_daemon(rule,
                            extra="transport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n" % port)
        self.set_armed(True)
        code, text = self.transaction(d.port, "relayed", rcpt="u@relay.test")
        self.assertEqual(code, 250, text)
        wait_for(lambda: self.fired(), 15 * SLOW, "the fault to fire at delivery")
        d.wait_log("status=deferred", timeout=15 * SLOW)
        self.assertEqual(sink.messages, [])
        self.assertTrue(os.listdir(os.path.join(d.queue, "committed")), "the acknowledged message left the queue")
        self.set_armed(False)
        log = self.delivered_once_over_tls(d, sink, "relayed")
        self.assertIn(err_text, log)

    def test_starttls_relay_socket_enomem_defers_then_delivered(self):
        self.outbound("socket:ENOMEM:stream", "Cannot allocate memory")

    def test_starttls_relay_socket_enobufs_defers_then_delivered(self):
        self.outbound("socket:ENOBUFS:stream", "No buffer space available")

    def test_starttls_relay_connect_enomem_defers_then_delivered(self):
        self.outbound("connect:ENOMEM:stream", "Cannot allocate memory")

    def test_starttls_relay_epipe_mid_data_defers_then_delivered(self):
        """The connection to the sink breaks (EPIPE) while the body goes out in TLS
        records. The mail is held by defer_transports and sent by `frugal queue flush`,
        so the only TCP writes while armed are the client's to the sink."""
        sink, port = self.tls_sink()
        d = self.tls_daemon("write:EPIPE:stream:after=8:count=1",
                            extra="transport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n"
                                  "defer_transports = smtp\n" % port)
        code, text = self.transaction(d.port, "relayed", rcpt="u@relay.test", size=300000)
        self.assertEqual(code, 250, text)
        d.wait_log("status=deferred", timeout=15 * SLOW)
        self.set_armed(True)
        r = run_frugal("queue", "-c", d.dir, "flush", "relay.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: self.fired("write"), 15 * SLOW, "the write fault at the sink")
        # Postfix's words for a write that fails mid-body (EPIPE or ECONNRESET alike)
        d.wait_log("status=deferred (lost connection with 127.0.0.1[127.0.0.1] while sending message body)",
                   timeout=15 * SLOW)
        self.assertEqual(sink.messages, [], "the cut message was acknowledged by the sink")
        self.assertTrue(os.listdir(os.path.join(d.queue, "committed")), "the acknowledged message left the queue")
        self.set_armed(False)
        r = run_frugal("queue", "-c", d.dir, "flush", "relay.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.delivered_once_over_tls(d, sink, "relayed")

    def test_starttls_relay_reset_mid_handshake_delivered_once(self):
        """The connection to the sink is reset under the ClientHello (the third write:
        EHLO, STARTTLS, then the handshake). Nothing was sent, so the message must
        arrive exactly once, never bounced. At `may`, Postfix's plain-text retry to the
        same server is allowed for a message that already waited minimal_backoff_time
        (1 s here; DESIGN.md "SMTP client: TLS"): it goes in clear in the same attempt."""
        sink, port = self.tls_sink()
        d = self.tls_daemon("write:ECONNRESET:stream:after=2:count=1",
                            extra="transport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n"
                                  "defer_transports = smtp\n" % port)
        code, text = self.transaction(d.port, "relayed", rcpt="u@relay.test")
        t0 = time.monotonic()
        self.assertEqual(code, 250, text)
        d.wait_log("status=deferred", timeout=15 * SLOW)
        # the plain-text retry is for a message older than minimal_backoff_time (a time, not an event)
        wait_for(lambda: time.monotonic() - t0 > 1.2, 5, "the message to age past minimal_backoff_time",
                 interval=0.1)
        self.set_armed(True)
        r = run_frugal("queue", "-c", d.dir, "flush", "relay.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: self.fired("write"), 15 * SLOW, "the write fault in the handshake")
        self.set_armed(False)
        log = self.delivered_once_over_tls(d, sink, "relayed", tls=0)
        self.assertIn("Cannot start TLS: handshake failure", log)
        self.assertIn("Connection reset by peer", log)

class FakeDovecot:
    """Dovecot's auth-client side of its auth protocol 1.2 (what smtpd/dovecot.c speaks), on a
    UNIX socket: enough to say OK or FAIL to PLAIN, without Dovecot (which needs root)."""

    def __init__(self, path, users):
        self.path, self.users = path, dict(users)
        self.asked = 0
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(16)
        self.stopping = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopping:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def conn(self, c):
        try:
            c.sendall(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\t00\nDONE\n")
            f = c.makefile("rb")
            for line in f:
                fields = line.decode().rstrip("\n").split("\t")
                if fields[0] != "AUTH":
                    continue
                rid = fields[1]
                resp = [x[5:] for x in fields if x.startswith("resp=")]
                _, user, pw = base64.b64decode(resp[0]).decode().split("\0")
                with self.lock:
                    self.asked += 1
                if self.users.get(user) == pw:
                    c.sendall(("OK\t%s\tuser=%s\n" % (rid, user)).encode())
                else:
                    c.sendall(("FAIL\t%s\tuser=%s\n" % (rid, user)).encode())
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        self.srv.close()


class AuthFaults(TLSBase):
    """AUTH whose check cannot be made: a temporary failure (454 4.7.0), never 535.
    A false "bad password" would count toward fail2ban's ban of a legitimate user."""

    def setUp(self):
        super().setUp()
        self.codes = []     # every AUTH's reply code in this case

    def auth(self, d, password=PASSWORD):
        """One AUTH PLAIN (the right password by default) over implicit TLS: (code, text)."""
        r = Raw(self.smtps, timeout=20 * SLOW)
        self.addCleanup(r.close)
        r.f.close()
        r.s = client_ctx().wrap_socket(r.s, server_hostname="mx.example.test")
        r.f = r.s.makefile("rb")
        self.assertEqual(r.reply()[0], 220)
        self.assertEqual(r.cmd("EHLO c.example.org")[0], 250)
        code, text = r.cmd("AUTH PLAIN " + plain("alice@example.test", password))
        if password == PASSWORD:
            self.codes.append(code)
        r.cmd("QUIT")
        r.close()
        return code, text

    def no_false_failure(self, d):
        self.assertNotIn(535, self.codes, "a 535 for a right password")
        self.assertNotIn("authentication failed: authentication failure", d.output(),
                         "a fail2ban-counted failure for a right password")

    def auth_succeeds_after_disarm(self, d):
        """The next AUTH succeeds once disarmed. Dovecot's connection is retried at most
        once a second, so an AUTH within that second still gets 454: poll, never 535."""
        codes = []

        def ok():
            codes.append(self.auth(d)[0])
            return codes[-1] == 235
        wait_for(ok, 15 * SLOW, "AUTH to succeed after the disarm", interval=0.2)
        self.assertTrue(set(codes) <= {454, 235}, codes)

    def dovecot_daemon(self, rule):
        tmp = tempfile.mkdtemp(prefix="frugal-iofault-dv-")
        self.addCleanup(shutil.rmtree, tmp, True)
        sock = os.path.join(tmp, "auth-client")
        dv = FakeDovecot(sock, {"alice@example.test": PASSWORD})
        self.addCleanup(dv.stop)
        d = self.tls_daemon(rule, extra="smtpd_sasl_type = dovecot\nsmtpd_sasl_path = %s\n" % sock)
        return d, dv, sock

    def dovecot_unreachable(self, rule, why):
        d, dv, sock = self.dovecot_daemon(rule)
        self.set_armed(True)
        code, text = self.auth(d)
        self.assertTrue(self.fired(), "the fault never fired: the case proves nothing")
        self.assertEqual(text.strip(), "454 4.7.0 Temporary authentication failure")
        self.assertEqual(dv.asked, 0)
        d.wait_log("dovecot auth %s: %s" % (sock, why))
        self.set_armed(False)
        self.auth_succeeds_after_disarm(d)
        self.no_false_failure(d)
        return d

    def test_dovecot_connect_econnrefused_454(self):
        d = self.dovecot_unreachable("connect:ECONNREFUSED:unix", "Connection refused")
        # negative control: this set-up can say 535, and logs the line fail2ban counts
        self.assertEqual(self.auth(d, "wrong")[0], 535)
        d.wait_log("authentication failed: authentication failure")

    def test_dovecot_connect_enomem_454(self):
        self.dovecot_unreachable("connect:ENOMEM:unix", "Cannot allocate memory")

    def test_dovecot_socket_emfile_454(self):
        d = self.dovecot_unreachable("socket:EMFILE:unix", "Too many open files")

    def dovecot_breaks(self, rule, why):
        """The connection to Dovecot is up (one AUTH went through), then fails under the
        next request: that request gets 454, the next check reconnects."""
        d, dv, sock = self.dovecot_daemon(rule)
        self.assertEqual(self.auth(d)[0], 235)
        self.set_armed(True)
        code, text = self.auth(d)
        self.assertTrue(self.fired(), "the fault never fired: the case proves nothing")
        self.assertEqual(text.strip(), "454 4.7.0 Temporary authentication failure")
        d.wait_log("dovecot auth %s: %s" % (sock, why))
        d.wait_log("SASL PLAIN authentication failed: Connection lost to authentication server")
        self.set_armed(False)
        self.auth_succeeds_after_disarm(d)
        self.no_false_failure(d)

    def test_dovecot_write_epipe_454(self):
        self.dovecot_breaks("write:EPIPE:unix", "Broken pipe")

    def test_dovecot_read_econnreset_454(self):
        self.dovecot_breaks("read:ECONNRESET:unix", "Connection reset by peer")

    def test_sasl_users_reopen_emfile_at_reload_keeps_the_table(self):
        """The built-in table is opened at start and at reload, never per AUTH (lookups
        read the mapped file). A reload that cannot open it keeps the running table:
        AUTH goes on succeeding, and the log names the file and the errno."""
        d = self.tls_daemon("open:EMFILE:path={d}/users.cdb")
        self.assertEqual(self.auth(d)[0], 235)
        self.set_armed(True)
        r = run_frugal("reload", "-c", d.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        d.wait_log("reload failed")
        self.assertTrue(self.fired("open"), "the fault never fired: the case proves nothing")
        self.assertIn("users.cdb: Too many open files", d.output())
        self.assertEqual(self.auth(d)[0], 235, "the running table was dropped")
        self.set_armed(False)
        self.assertEqual(self.auth(d)[0], 235)
        self.no_false_failure(d)


if __name__ == "__main__":
    unittest.main()
