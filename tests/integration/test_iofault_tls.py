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
the handshake and of DATA (nothing delivered, the daemon serves on).
Outbound: STARTTLS to a sink whose socket()/connect() fail, and whose
connection breaks mid-DATA (deferred, delivered once, never bounced). AUTH:
a Dovecot auth socket that cannot be reached (454 4.7.0, never 535). LMTP:
the LMTP socket's socket()/connect() and its writes fail (deferred, still
queued, delivered exactly once after the disarm, never bounced).
"""
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
import unittest

from harness import Raw, wait_for, free_port, make_cert, client_ctx, run_frugal, SLOW
from test_iofault import IOFaultBase, MSG, body
from test_smtp_client import PySink

PASSWORD = "correct horse battery staple"


def plain(user, password):
    import base64
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


class OutboundTLS(TLSBase):
    """Relaying with STARTTLS to a sink (smtp_tls_security_level = may)."""

    def tls_sink(self):
        port = free_port()
        tmp = tempfile.mkdtemp(prefix="frugal-iofault-sink-")
        self.addCleanup(shutil.rmtree, tmp, True)
        sink = PySink(("127.0.0.1", port), tls=make_cert(tmp, "sink", kind="ec"))
        self.addCleanup(sink.stop)
        return sink, port

    def delivered_once_over_tls(self, d, sink, tag):
        wait_for(lambda: sink.messages, 20 * SLOW, "the deferred message at the sink")
        wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 15 * SLOW, "queue empty")
        self.assertEqual(len(sink.messages), 1)
        self.assertEqual(sink.tls_messages, 1, "delivered, but not inside TLS")
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


if __name__ == "__main__":
    unittest.main()
