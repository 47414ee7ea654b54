"""tests/integration/test_smtp_client.py: the SMTP and LMTP client agents
(queue/smtpc.c) against real peers on loopback: Postfix's smtp-sink, and a
small Python SMTP/LMTP sink written here where a test needs per-recipient
answers or a connection cut mid-DATA (smtp-sink answers every RCPT alike).
Names come from the test's own DNS server (dnsserver.py): MX order and
fallback (refused, silent), null MX, [host]:port through transport_maps,
relayhost, 4xx then success on retry, 5xx for one recipient, a drop
mid-DATA, LMTP over a unix socket with per-recipient replies. Every message
is counted at its sink: it arrives exactly once.
"""
import base64
import email
import glob
import os
import re
import shutil
import smtplib
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from dnsserver import DNSServer
from harness import Daemon, wait_for, free_port, make_cert, SLOW

SINK = "/usr/sbin/smtp-sink"

RECORDS = {
    # mx.test: two MX hosts; the preferred one refuses (nothing listens on 127.0.0.2)
    "mx.test": [("MX", (10, "mx1.mx.test")), ("MX", (20, "mx2.mx.test"))],
    "mx1.mx.test": [("A", "127.0.0.2")],
    "mx2.mx.test": [("A", "127.0.0.3")],
    # silent.test: the preferred host accepts the connection and never speaks
    "silent.test": [("MX", (10, "mx1.silent.test")), ("MX", (20, "mx2.silent.test"))],
    "mx1.silent.test": [("A", "127.0.0.4")],
    "mx2.silent.test": [("A", "127.0.0.5")],
    # RFC 7505
    "nullmx.test": [("MX", (0, ""))],
    # many.test: 16 MX hosts at preference 20 that refuse, listed before the one at 10 that takes mail
    "many.test": [("MX", (20, "far%d.many.test" % i)) for i in range(16)] + [("MX", (10, "near.many.test"))],
    "near.many.test": [("A", "127.0.0.1")],
    **{"far%d.many.test" % i: [("A", "127.0.0.2")] for i in range(16)},
}
SERVFAIL = ("tempfail.test",)


class PySink:
    """A small threaded SMTP/LMTP server: per-recipient replies, optional cut in DATA."""

    def __init__(self, addr, lmtp=False, rcpt_reply=None, drop_in_data=False, data_reply=None, tls=None,
                 starttls_reply=None, auth=None, ehlo_reply=None, auth_required=False):
        self.lmtp = lmtp
        self.auth_required = auth_required    # MAIL before a successful AUTH is answered 530 (a relayhost)
        self.ehlo_reply = ehlo_reply    # what EHLO is answered instead of the extensions (e.g. 502)
        self.greetings = []         # every EHLO/LHLO/HELO line as received
        self.auth = auth            # (user, password): AUTH PLAIN LOGIN offered, only inside TLS when tls is set
        self.auth_ok = 0            # successful AUTH commands
        # tls: (cert, key) offers STARTTLS; starttls_reply answers it without TLS ("220 ..." then
        # garbage for a broken handshake, or a 454)
        self.tls = tls
        self.starttls_reply = starttls_reply
        self.tls_messages = 0       # messages that came inside TLS
        self.data_reply = data_reply    # what DATA is answered instead of 354 (then no message follows)
        self.rcpt_reply = rcpt_reply or {}
        self.drop_in_data = drop_in_data
        self.messages = []          # (mail_from, [rcpts], data) of every message answered 250
        self.lock = threading.Lock()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                try:
                    sink.session(self.rfile, self.wfile, self)
                finally:
                    if getattr(self, "tls_conn", None):
                        self.tls_conn.close()

        if isinstance(addr, str):
            class Srv(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
                daemon_threads = True
        else:
            class Srv(socketserver.ThreadingMixIn, socketserver.TCPServer):
                daemon_threads = True
                allow_reuse_address = True
        self.srv = Srv(addr, Handler)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()

    def session(self, r, w, handler):
        def say(s):
            w.write(s.encode() + b"\r\n")
            w.flush()
        say("220 pysink ESMTP")
        mail, rcpts = None, []
        in_tls = authed = False
        while True:
            line = r.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "LHLO", "HELO"):
                with self.lock:
                    self.greetings.append(cmd)
            if verb in ("EHLO", "LHLO") and self.ehlo_reply:
                say(self.ehlo_reply)
            elif verb in ("EHLO", "LHLO"):
                say("250-pysink\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250-8BITMIME\r\n250-DSN\r\n" +
                    ("250-STARTTLS\r\n" if (self.tls or self.starttls_reply) and not in_tls else "") +
                    ("250-AUTH PLAIN LOGIN\r\n" if self.auth and (in_tls or not self.tls) else "") +
                    "250 ENHANCEDSTATUSCODES")
            elif verb == "STAR" and cmd.upper() == "STARTTLS" and not in_tls:
                if self.starttls_reply:
                    say(self.starttls_reply)
                    if self.starttls_reply.startswith("220"):
                        w.write(b"this is not a TLS server hello\r\n" * 4)
                        w.flush()
                        return
                    continue
                say("220 2.0.0 Ready to start TLS")
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(*self.tls)
                conn = handler.tls_conn = ctx.wrap_socket(handler.connection, server_side=True)
                r, w = conn.makefile("rb"), conn.makefile("wb")
                in_tls, mail, rcpts, authed = True, None, [], False
            elif verb == "HELO":
                say("250 pysink")
            elif verb == "MAIL" and self.auth_required and not authed:
                say("530 5.7.0 Authentication required")
            elif verb == "MAIL":
                mail, rcpts = cmd, []
                say("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr = cmd[cmd.index("<") + 1:cmd.index(">")]
                rep = self.rcpt_reply.get(addr, "250 2.1.5 Ok")
                if rep.startswith("250"):
                    rcpts.append(addr)
                say(rep)
            elif verb == "DATA":
                if not rcpts:
                    say("554 5.5.1 Error: no valid recipients")
                    continue
                if self.data_reply:
                    say(self.data_reply)
                    continue
                say("354 End data with <CR><LF>.<CR><LF>")
                data = b""
                while True:
                    l = r.readline()
                    if not l:
                        return
                    if self.drop_in_data:
                        return          # the connection drops with the message half sent
                    if l == b".\r\n":
                        break
                    data += l[1:] if l.startswith(b".") else l
                with self.lock:
                    self.messages.append((mail, list(rcpts), data))
                    self.tls_messages += in_tls
                if self.lmtp:
                    for a in rcpts:
                        say(f"250 2.0.0 <{a}> Saved" if "full" not in a else
                            f"452 4.2.2 <{a}> Mailbox is full")
                else:
                    say("250 2.0.0 Ok: queued as PYSINK1")
            elif verb == "AUTH" and self.auth:
                parts = cmd.split()
                user = pw = None
                if parts[1].upper() == "PLAIN" and len(parts) == 3:
                    _, user, pw = base64.b64decode(parts[2]).decode().split("\0")
                elif parts[1].upper() == "LOGIN":
                    say("334 VXNlcm5hbWU6")
                    user = base64.b64decode(r.readline().strip()).decode()
                    say("334 UGFzc3dvcmQ6")
                    pw = base64.b64decode(r.readline().strip()).decode()
                if (user, pw) == tuple(self.auth):
                    with self.lock:
                        self.auth_ok += 1
                    authed = True
                    say("235 2.7.0 Authentication successful")
                else:
                    say("535 5.7.8 Error: authentication failed: bad credentials")
            elif verb == "RSET":
                say("250 2.0.0 Ok")
            elif verb == "QUIT":
                try:
                    say("221 2.0.0 Bye")
                except OSError:
                    pass        # frugal closes after QUIT without waiting for the 221
                return
            else:
                say("502 5.5.2 Error: command not recognized")


class SmtpSink:
    """Postfix's smtp-sink on addr:port, each message dumped to its own file."""

    def __init__(self, host, port, *opts):
        self.dir = tempfile.mkdtemp(prefix="frugal-sink-")
        os.chmod(self.dir, 0o777)
        args = [SINK, "-u", "nobody", "-d", os.path.join(self.dir, "msg."), *opts, f"{host}:{port}", "10"]
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self._listening(host, port), what="smtp-sink listening")

    @staticmethod
    def _listening(host, port):
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    def count(self):
        return len(glob.glob(os.path.join(self.dir, "msg.*")))

    def files(self):
        out = []
        for f in sorted(glob.glob(os.path.join(self.dir, "msg.*"))):
            with open(f, "rb") as fh:
                out.append(fh.read())
        return out

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=10)
        self.p.stderr.close()

    def cleanup(self):
        if self.p.poll() is None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


MSG = b"From: a@example.test\r\nSubject: client test\r\n\r\nline one\r\n.leading dot\r\nlast\r\n"


@unittest.skipUnless(os.path.exists(SINK), "smtp-sink not installed")
class SmtpClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = DNSServer(RECORDS, servfail=SERVFAIL).start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def daemon(self, extra):
        d = Daemon("relay_domains = relay.test, mx.test, silent.test, nullmx.test, lmtp.test, many.test, "
                   "tempfail.test\n"
                   "smtp_helo_timeout = 3s\nsmtp_connect_timeout = 3s\n" + extra, dns=self.dns).start()
        self.addCleanup(d.cleanup)
        return d

    def sink(self, host, port, *opts):
        s = SmtpSink(host, port, *opts)
        self.addCleanup(s.cleanup)
        return s

    def pysink(self, addr, **kw):
        s = PySink(addr, **kw)
        self.addCleanup(s.stop)
        return s

    def send(self, d, sender, rcpts, msg=MSG):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW) as c:
            c.sendmail(sender, rcpts, msg)

    def test_delivered_to_bracketed_host_port(self):
        port = free_port()
        s = self.sink("127.0.0.1", port)
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n")
        self.send(d, "alice@example.test", ["u1@relay.test", "u2@relay.test"])
        d.wait_log("status=sent", timeout=15)
        wait_for(lambda: d.log_has("u2@relay.test") and s.count() == 1, what="one message at the sink")
        log = d.output()
        self.assertRegex(log, r"frugal/smtp\[\d+\]: [0-9A-F]+: to=<u1@relay\.test>, "
                         rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{port}, delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, "
                         r"dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok\)")
        self.assertEqual(log.count("status=sent"), 2)
        body = s.files()[0]
        # one transaction for both recipients, the dot-stuffing undone by the sink, CRLF on the wire
        self.assertIn(b"u1@relay.test", body)
        self.assertIn(b"u2@relay.test", body)
        self.assertIn(b"leading dot", body)
        wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), what="queue empty")
        self.assertEqual(s.count(), 1)

    def test_mx_order_fallback_when_first_refuses(self):
        port = free_port()
        s = self.sink("127.0.0.3", port)
        d = self.daemon(f"transport_maps = inline:{{ mx.test=smtp:mx.test:{port} }}\n")
        self.send(d, "alice@example.test", ["u@mx.test"])
        d.wait_log("status=sent", timeout=15)
        log = d.output()
        self.assertIn(f"connect to mx1.mx.test[127.0.0.2]:{port}: Connection refused", log)
        self.assertIn(f"relay=mx2.mx.test[127.0.0.3]:{port}", log)
        self.assertLess(log.index("Connection refused"), log.index("status=sent"))
        self.assertEqual(s.count(), 1)

    def test_mx_fallback_when_first_never_answers(self):
        port = free_port()
        silent = socket.socket()
        silent.bind(("127.0.0.4", port))
        silent.listen(5)            # the kernel completes the handshake; nobody ever speaks
        self.addCleanup(silent.close)
        s = self.sink("127.0.0.5", port)
        d = self.daemon(f"transport_maps = inline:{{ silent.test=smtp:silent.test:{port} }}\n")
        t0 = time.monotonic()
        self.send(d, "alice@example.test", ["u@silent.test"])
        d.wait_log("status=sent", timeout=20)
        self.assertGreater(time.monotonic() - t0, 2.5)     # smtp_helo_timeout = 3s was waited
        log = d.output()
        self.assertIn("conversation with mx1.silent.test[127.0.0.4] timed out while receiving the initial "
                      "server greeting", log)
        self.assertIn(f"relay=mx2.silent.test[127.0.0.5]:{port}", log)
        self.assertEqual(s.count(), 1)

    def test_null_mx_bounces_to_sender(self):
        d = self.daemon("")
        self.send(d, "alice@example.test", ["u@nullmx.test"])
        d.wait_log("status=bounced", timeout=15)
        self.assertRegex(d.output(), r"to=<u@nullmx\.test>, relay=none, .*dsn=5\.1\.10, status=bounced "
                         r"\(Domain nullmx\.test does not accept mail \(nullMX\)\)")
        msgs = d.wait_messages(d.maildir("alice"), 1)
        m = email.message_from_bytes(msgs[0] if isinstance(msgs[0], bytes) else msgs[0].encode())
        self.assertEqual(m.get_content_type(), "multipart/report")
        self.assertIn("5.1.10", m.as_string())

    def test_4xx_at_rcpt_defers_then_retry_succeeds(self):
        port = free_port()
        s = self.sink("127.0.0.1", port, "-r", "RCPT")
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        d.wait_log("status=deferred", timeout=15)
        self.assertRegex(d.output(), r"to=<u@relay\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*dsn=4\.3\.0, "
                         r"status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 450 4\.3\.0 Error: command failed "
                         r"\(in reply to RCPT TO command\)\)")
        self.assertEqual(s.count(), 0)
        s.stop()
        s2 = self.sink("127.0.0.1", port)
        d.wait_log("status=sent", timeout=20)
        wait_for(lambda: s2.count() == 1, what="delivered on retry")
        wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), what="queue empty")
        self.assertEqual(s2.count(), 1)

    def test_5xx_at_rcpt_bounces_that_recipient_only(self):
        port = free_port()
        ps = self.pysink(("127.0.0.1", port),
                         rcpt_reply={"bad@relay.test": "550 5.1.1 <bad@relay.test>: Recipient address rejected: "
                                     "User unknown"})
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n")
        self.send(d, "alice@example.test", ["good@relay.test", "bad@relay.test", "good2@relay.test"])
        d.wait_log("status=bounced", timeout=15)
        wait_for(lambda: len(re.findall(r"good2?@relay\.test>.*status=sent", d.output())) == 2, what="two sent")
        self.assertIn("to=<bad@relay.test>, relay=127.0.0.1[127.0.0.1]:%d" % port, d.output())
        self.assertIn("dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <bad@relay.test>: "
                      "Recipient address rejected: User unknown (in reply to RCPT TO command))", d.output())
        self.assertEqual(len(ps.messages), 1)
        self.assertEqual(ps.messages[0][1], ["good@relay.test", "good2@relay.test"])
        msgs = d.wait_messages(d.maildir("alice"), 1)
        report = msgs[0] if isinstance(msgs[0], str) else msgs[0].decode("utf-8", "replace")
        self.assertIn("bad@relay.test", report)
        self.assertNotIn("Final-Recipient: rfc822; good@relay.test", report)
        # the delivery-status part as Postfix writes it: who refused, and the reply alone
        self.assertIn("Remote-MTA: dns; 127.0.0.1\nDiagnostic-Code: smtp; 550 5.1.1 <bad@relay.test>: "
                      "Recipient address rejected: User unknown\n", report.replace("\r\n", "\n"))

    def test_drop_mid_data_defers_then_delivered_once(self):
        port = free_port()
        ps = self.pysink(("127.0.0.1", port), drop_in_data=True)
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n")
        self.send(d, "alice@example.test", ["a@relay.test", "b@relay.test"], MSG + (b"x" * 998 + b"\r\n") * 200)
        d.wait_log("status=deferred", timeout=15)
        wait_for(lambda: d.output().count("status=deferred") >= 2, what="both deferred")
        self.assertRegex(d.output(), r"dsn=4\.4\.2, status=deferred \(lost connection with "
                         r"127\.0\.0\.1\[127\.0\.0\.1\] while sending (message body|end of data)")
        self.assertEqual(ps.messages, [])
        ps.drop_in_data = False
        wait_for(lambda: len(re.findall(r"@relay\.test>.*status=sent", d.output())) == 2, timeout=20,
                 what="sent on retry")
        self.assertEqual(len(ps.messages), 1)
        data = ps.messages[0][2]
        self.assertTrue(data.endswith(b"\r\n\r\nline one\r\n.leading dot\r\nlast\r\n" + (b"x" * 998 + b"\r\n") * 200))

    def test_relayhost(self):
        port = free_port()
        s = self.sink("127.0.0.1", port)
        d = self.daemon(f"relayhost = [127.0.0.1]:{port}\nmynetworks = 127.0.0.0/8\n")
        self.send(d, "alice@example.test", ["someone@elsewhere.test"])
        d.wait_log("status=sent", timeout=15)
        self.assertRegex(d.output(), rf"frugal/smtp\[\d+\]: \w+: to=<someone@elsewhere\.test>, "
                         rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{port}, .*status=sent \(250 ")
        self.assertEqual(s.count(), 1)

    def test_lmtp_unix_per_recipient(self):
        tmp = tempfile.mkdtemp(prefix="frugal-lmtp-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "lmtp")
        ps = self.pysink(path, lmtp=True)
        d = self.daemon(f"transport_maps = inline:{{ lmtp.test=lmtp:unix:{path} }}\n")
        self.send(d, "alice@example.test", ["ok@lmtp.test", "full@lmtp.test"])
        d.wait_log("status=deferred", timeout=15)
        wait_for(lambda: d.log_has("status=sent"), what="one sent")
        log = d.output()
        self.assertRegex(log, rf"frugal/lmtp\[\d+\]: \w+: to=<ok@lmtp\.test>, relay=mx\.example\.test\[{path}\], "
                         r".*status=sent \(250 2\.0\.0 <ok@lmtp\.test> Saved\)")
        self.assertIn("to=<full@lmtp.test>", log)
        self.assertIn("dsn=4.2.2, status=deferred (host mx.example.test[%s] said: 452 4.2.2 <full@lmtp.test> "
                      "Mailbox is full (in reply to end of DATA command))" % path, log)
        self.assertEqual(len(ps.messages), 1)

    def test_mailbox_and_virtual_transport_to_lmtp(self):
        # Dovecot's set-up: aliases resolved here, the mailboxes written by the LMTP server
        tmp = tempfile.mkdtemp(prefix="frugal-lmtp-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "lmtp")
        ps = self.pysink(path, lmtp=True)
        d = self.daemon(f"mailbox_transport = lmtp:unix:{path}\nvirtual_transport = lmtp:unix:{path}\n")
        self.send(d, "bob@example.test", ["sales@example.test", "carol@virt.test"])
        wait_for(lambda: sum(len(m[1]) for m in ps.messages) >= 3, 15, "three recipients at the LMTP server")
        got = sorted(r for m in ps.messages for r in m[1])
        # alias results are qualified with $myorigin, as Postfix's local(8) does
        self.assertEqual(got, ["alice@mx.example.test", "bob@mx.example.test", "carol@virt.test"])
        wait_for(lambda: len(re.findall(r"frugal/lmtp\[\d+\]: \w+: to=<[^>]+>.*status=sent", d.output())) >= 3,
                 15, "three lmtp log lines")
        self.assertRegex(d.output(), r"to=<alice@mx.example.test>, orig_to=<sales@example.test>, relay=mx\.example\.test\[")
        # nothing was written to the Maildirs: the LMTP server owns the mailboxes
        self.assertEqual(d.messages(d.maildir("alice")), [])
        self.assertEqual(d.messages(d.vmaildir("virt.test/carol")), [])

    # ---- review findings (each failed before its fix) ----

    def test_2xx_reply_to_data_defers(self):
        # a 250 where 354 belongs is a protocol error, never a delivery (Postfix's smtp_check_code)
        port = free_port()
        ps = self.pysink(("127.0.0.1", port), data_reply="250 2.0.0 Ok: queued as NOTHING")
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        d.wait_log("to=<u@relay.test>", timeout=15)
        log = d.output()
        self.assertNotIn("status=sent", log)
        self.assertIn("dsn=4.0.0, status=deferred (host 127.0.0.1[127.0.0.1] said: 250 2.0.0 Ok: queued as "
                      "NOTHING (in reply to DATA command))", log)
        self.assertEqual(ps.messages, [])

    def test_pipelined_recipients_beyond_the_command_buffer(self):
        # 450 RCPT commands of ~85 bytes: more than the 32 KiB buffer holds at once
        port = free_port()
        ps = self.pysink(("127.0.0.1", port))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_destination_recipient_limit = 1000\n")
        rcpts = ["u%03d%s@relay.test" % (i, "x" * 56) for i in range(450)]
        self.send(d, "alice@example.test", rcpts)
        wait_for(lambda: d.output().count("status=sent") == 450 or "status=deferred" in d.output(), timeout=30,
                 what="all recipients settled")
        self.assertEqual(d.output().count("command buffer"), 0)
        self.assertEqual(d.output().count("status=sent"), 450)
        self.assertEqual(len(ps.messages), 1)
        self.assertEqual(sorted(ps.messages[0][1]), sorted(rcpts))

    def test_shutdown_defers_jobs_still_waiting(self):
        # one conversation in flight with a peer that never speaks, two more jobs waiting for
        # the destination's only slot: a stop defers all three at once, starting nothing new
        port = free_port()
        silent = socket.socket()
        silent.bind(("127.0.0.1", port))
        silent.listen(16)
        self.addCleanup(silent.close)
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_helo_timeout = 300s\ninitial_destination_concurrency = 1\n"
                        "smtp_destination_concurrency_limit = 1\n")
        for i in range(3):
            self.send(d, "alice@example.test", ["u%d@relay.test" % i])
        silent.settimeout(10)
        conn, _ = silent.accept()
        self.addCleanup(conn.close)
        t0 = time.monotonic()
        d.stop()
        self.assertLess(time.monotonic() - t0, 10)
        log = d.output()
        self.assertEqual(log.count("status=deferred (delivery interrupted by shutdown"), 3, log)
        silent.setblocking(False)
        with self.assertRaises(BlockingIOError):
            silent.accept()         # nobody else connected

    def test_dns_tempfail_does_not_suspend_the_destination(self):
        # a resolver failure is not the destination's: no slow-start penalty, no dead destination
        d = self.daemon("initial_destination_concurrency = 1\n")
        self.send(d, "alice@example.test", ["u1@tempfail.test"])
        d.wait_log("status=deferred", timeout=30)
        self.send(d, "alice@example.test", ["u2@tempfail.test"])
        wait_for(lambda: "to=<u2@tempfail.test>" in d.output(), timeout=30, what="second deferred")
        log = d.output()
        self.assertNotIn("delivery temporarily suspended", log)
        self.assertIn("to=<u2@tempfail.test>, relay=none, ", log)
        self.assertRegex(log, r"to=<u2@tempfail\.test>.*dsn=4\.4\.3, status=deferred \(Host or domain name not "
                         r"found. Name service error for name=tempfail\.test type=MX")

    def test_mx_sorted_before_the_host_limit(self):
        # the preferred MX is the 17th record of the answer
        port = free_port()
        s = self.sink("127.0.0.1", port)
        d = self.daemon(f"transport_maps = inline:{{ many.test=smtp:many.test:{port} }}\n")
        self.send(d, "alice@example.test", ["u@many.test"])
        d.wait_log("to=<u@many.test>", timeout=15)
        self.assertIn(f"relay=near.many.test[127.0.0.1]:{port}", d.output())
        self.assertNotIn("far", d.output())
        self.assertEqual(s.count(), 1)

    def test_lmtp_backlog_full_is_a_connection_failure(self):
        # a unix listener whose backlog is full answers EAGAIN: the server's trouble, not ours
        tmp = tempfile.mkdtemp(prefix="frugal-lmtp-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "lmtp")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(0)
        self.addCleanup(srv.close)
        fillers = []
        while True:
            f = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            f.setblocking(False)
            fillers.append(f)
            self.addCleanup(f.close)
            try:
                f.connect(path)
            except BlockingIOError:
                break
        d = self.daemon(f"transport_maps = inline:{{ lmtp.test=lmtp:unix:{path} }}\n")
        self.send(d, "alice@example.test", ["u@lmtp.test"])
        d.wait_log("to=<u@lmtp.test>", timeout=15)
        log = d.output()
        self.assertNotIn("local resource shortage", log)
        self.assertIn(f"dsn=4.4.1, status=deferred (connect to {path}: Resource temporarily unavailable)", log)

    def test_helo_fallback_and_helo_name(self):
        # a peer that refuses EHLO gets HELO, both with smtp_helo_name; no extension is used then
        port = free_port()
        ps = self.pysink(("127.0.0.1", port), ehlo_reply="502 5.5.2 Error: command not recognized")
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_helo_name = out.example.test\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        d.wait_log("status=sent", timeout=15)
        self.assertEqual(ps.greetings, ["EHLO out.example.test", "HELO out.example.test"])
        self.assertEqual(len(ps.messages), 1)
        self.assertNotIn("BODY=", ps.messages[0][0])
        self.assertNotIn("SIZE=", ps.messages[0][0])

    # ---- STARTTLS (smtp_tls_security_level) ----

    def tls_sink(self, **kw):
        tmp = tempfile.mkdtemp(prefix="frugal-tls-")
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        return self.pysink(("127.0.0.1", port), tls=make_cert(tmp, "sink"), **kw), port

    def test_starttls_may(self):
        # may is frugal's default (doc/PRODUCT.md)
        ps, port = self.tls_sink()
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n")
        self.send(d, "alice@example.test", ["u@relay.test", "v@relay.test"])
        wait_for(lambda: d.output().count("status=sent") == 2, timeout=15, what="both sent")
        self.assertRegex(d.output(), r"frugal/smtp\[\d+\]: Untrusted TLS connection established to "
                         rf"127\.0\.0\.1\[127\.0\.0\.1\]:{port}: TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)")
        self.assertEqual(len(ps.messages), 1)
        self.assertEqual(ps.tls_messages, 1)
        self.assertEqual(ps.messages[0][1], ["u@relay.test", "v@relay.test"])

    def test_starttls_none_stays_plain(self):
        # Postfix's default: no STARTTLS although offered
        ps, port = self.tls_sink()
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_tls_security_level = none\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        d.wait_log("status=sent", timeout=15)
        self.assertNotIn("TLS connection established", d.output())
        self.assertEqual((len(ps.messages), ps.tls_messages), (1, 0))

    def test_encrypt_without_starttls_defers(self):
        port = free_port()
        ps = self.pysink(("127.0.0.1", port))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_tls_security_level = encrypt\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        d.wait_log("status=deferred", timeout=15)
        self.assertIn("dsn=4.7.4, status=deferred (TLS is required, but was not offered by host "
                      "127.0.0.1[127.0.0.1])", d.output())
        self.assertEqual(ps.messages, [])

    def test_starttls_handshake_failure_tries_next_mx(self):
        # the preferred MX answers 220 to STARTTLS and then no TLS: 4.7.5 for it, the next MX takes the mail
        bad_port = free_port()
        bad = PySink(("127.0.0.2", bad_port), starttls_reply="220 2.0.0 Ready to start TLS")
        self.addCleanup(bad.stop)
        tmp = tempfile.mkdtemp(prefix="frugal-tls-")
        self.addCleanup(shutil.rmtree, tmp, True)
        good = PySink(("127.0.0.3", bad_port), tls=make_cert(tmp, "sink"))
        self.addCleanup(good.stop)
        # the harness's 1 s minimal_backoff_time would let a first attempt that starts late on a
        # loaded machine take the plain-text fallback to the bad MX: this test is about the next MX
        d = self.daemon(f"transport_maps = inline:{{ mx.test=smtp:mx.test:{bad_port} }}\n"
                        "smtp_tls_security_level = may\nminimal_backoff_time = 300s\nmaximal_backoff_time = 300s\n")
        self.send(d, "alice@example.test", ["u@mx.test"])
        d.wait_log("status=sent", timeout=15)
        log = d.output()
        self.assertIn("Cannot start TLS: handshake failure", log)
        self.assertIn(f"relay=mx2.mx.test[127.0.0.3]:{bad_port}", log)
        self.assertIn(f"Untrusted TLS connection established to mx2.mx.test[127.0.0.3]:{bad_port}", log)
        self.assertEqual((len(bad.messages), len(good.messages), good.tls_messages), (0, 1, 1))

    def test_starttls_failure_plain_fallback_after_backoff(self):
        # Postfix's rule: a first attempt defers 4.7.5; once the message has waited
        # minimal_backoff_time, the same server again in plain text (at may only)
        port = free_port()
        ps = self.pysink(("127.0.0.1", port), starttls_reply="220 2.0.0 Ready to start TLS")
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        # 4 s: the first attempt must start before the message is that old (fallback
                        # is by age), also on a loaded machine under ASan
                        "minimal_backoff_time = 4s\nmaximal_backoff_time = 4s\nqueue_run_delay = 1s\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        d.wait_log("status=deferred", timeout=15)
        self.assertIn("dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)", d.output())
        d.wait_log("status=sent", timeout=20)
        self.assertIn("Cannot start TLS: handshake failure: trying 127.0.0.1[127.0.0.1] again without STARTTLS",
                      d.output())
        self.assertEqual((len(ps.messages), ps.tls_messages), (1, 0))

    def test_encrypt_starttls_failure_never_plain(self):
        port = free_port()
        ps = self.pysink(("127.0.0.1", port), starttls_reply="454 4.7.0 TLS not available due to local problem")
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_tls_security_level = encrypt\nminimal_backoff_time = 1s\n"
                        "maximal_backoff_time = 2s\nqueue_run_delay = 1s\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        wait_for(lambda: d.output().count("status=deferred") >= 2, timeout=20, what="deferred twice")
        self.assertIn("dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure (host 127.0.0.1[127.0.0.1] "
                      "said: 454 4.7.0 TLS not available due to local problem))", d.output())
        self.assertNotIn("without STARTTLS", d.output())
        self.assertEqual(ps.messages, [])

    # ---- AUTH (smtp_sasl_*) ----

    def test_auth_plain_inside_tls(self):
        ps, port = self.tls_sink(auth=("relayuser", "s3cret"))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = inline:{ 127.0.0.1=relayuser:s3cret }\n"
                        "smtp_sasl_tls_security_options = noanonymous\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        d.wait_log("status=sent", timeout=15)
        self.assertEqual((ps.auth_ok, len(ps.messages), ps.tls_messages), (1, 1, 1))
        self.assertNotIn("s3cret", d.output())

    def test_auth_refused_defers(self):
        ps, port = self.tls_sink(auth=("relayuser", "right"))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = inline:{ 127.0.0.1=relayuser:wrong }\n"
                        "smtp_sasl_tls_security_options = noanonymous\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        d.wait_log("status=deferred", timeout=15)
        self.assertIn("dsn=4.7.0, status=deferred (SASL authentication failed; server 127.0.0.1[127.0.0.1] said: "
                      "535 5.7.8 Error: authentication failed: bad credentials)", d.output())
        self.assertEqual((ps.auth_ok, ps.messages), (0, []))

    def test_auth_default_options_refuse_plaintext_mechanisms(self):
        # Postfix's defaults (noplaintext): PLAIN and LOGIN are not allowed, even inside TLS
        ps, port = self.tls_sink(auth=("relayuser", "s3cret"))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = inline:{ 127.0.0.1=relayuser:s3cret }\n")
        self.send(d, "alice@example.test", ["u@relay.test"])
        d.wait_log("status=deferred", timeout=15)
        self.assertIn("dsn=4.7.0, status=deferred (SASL authentication failed; cannot authenticate to server "
                      "127.0.0.1[127.0.0.1]: no mechanism available)", d.output())
        self.assertEqual(ps.messages, [])


if __name__ == "__main__":
    unittest.main()
