"""tests/integration/test_smtp_wire.py: what the SMTP and LMTP client puts on
the wire (queue/smtpc.c, queue/smtpc_body.c): 8BITMIME (BODY=8BITMIME only for
8-bit mail to a peer that offers it; quoted-printable for a peer that does not,
decoded back to the original text here; disable_mime_output_conversion),
inet_protocols and smtp_address_preference, smtp_bind_address (the peer's view
of the client's address; a bind failure defers and a fixed parameter delivers
after reload), smtp_generic_maps (envelope and headers). The peers are small
Python sinks on loopback that record every connection's client address, the
MAIL and RCPT lines and the message bytes as received.
"""
import email
import email.policy
import os
import shutil
import smtplib
import socket
import socketserver
import tempfile
import threading
import unittest

from dnsserver import DNSServer
from harness import Daemon, wait_for, free_port, run_frugal, SLOW


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


class WireSink:
    """SMTP (or LMTP) sink: offers 8BITMIME or not; records (client addr, MAIL line, rcpts, data)."""

    def __init__(self, addr, eightbit=True, lmtp=False, family=socket.AF_INET):
        self.eightbit, self.lmtp = eightbit, lmtp
        self.messages = []
        self.clients = []           # the client address of every connection
        self.lock = threading.Lock()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                sink.session(self.rfile, self.wfile, self.client_address)

        if isinstance(addr, str):
            class Srv(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
                daemon_threads = True
        else:
            class Srv(socketserver.ThreadingMixIn, socketserver.TCPServer):
                daemon_threads = True
                allow_reuse_address = True
                address_family = family
        self.srv = Srv(addr, Handler)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()

    def session(self, r, w, client):
        def say(s):
            try:
                w.write(s.encode() + b"\r\n")
                w.flush()
            except OSError:
                pass            # the client closed first (after QUIT)
        with self.lock:
            self.clients.append(client[0] if isinstance(client, tuple) else "unix")
        say("220 wiresink ESMTP")
        mail, rcpts = None, []
        while True:
            line = r.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "LHLO"):
                say("250-wiresink\r\n250-PIPELINING\r\n" + ("250-8BITMIME\r\n" if self.eightbit else "") +
                    "250 ENHANCEDSTATUSCODES")
            elif verb == "MAIL":
                mail, rcpts = cmd, []
                say("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(cmd[cmd.index("<") + 1:cmd.rindex(">")])
                say("250 2.1.5 Ok")
            elif verb == "DATA":
                say("354 go on")
                data = b""
                while True:
                    l = r.readline()
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    data += l[1:] if l.startswith(b".") else l
                with self.lock:
                    self.messages.append((mail, list(rcpts), data))
                for _ in (rcpts if self.lmtp else [0]):
                    say("250 2.0.0 Ok")
            elif verb == "RSET":
                mail, rcpts = None, []
                say("250 2.0.0 Ok")
            elif verb == "QUIT":
                say("221 2.0.0 Bye")
                return
            else:
                say("502 5.5.2 what")

    def wait(self, n=1, timeout=20):
        wait_for(lambda: len(self.messages) >= n, timeout * SLOW, f"{n} message(s) at the sink")
        return self.messages[n - 1]


BODY8 = "Grüße aus Köln, = Gleichheit,  \ndernière ligne avec espace \n.Punkt am Anfang\n" + "é" * 100 + "\n"
MSG8 = ("From: a@example.test\r\nTo: u@relay.test\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
        BODY8.replace("\n", "\r\n")).encode()
MSG7 = b"From: a@example.test\r\nTo: u@relay.test\r\nSubject: 7bit\r\n\r\nplain ascii\r\n"


class Wire(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # started before any sink: its TCP port is taken from the free UDP one, and could be a sink's
        cls.dns = DNSServer({"dual.wire.test": [("A", "127.0.0.1"), ("AAAA", "::1")]}).start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def daemon(self, extra, dns=None):
        d = Daemon("smtp_helo_timeout = 5s\nsmtp_connect_timeout = 5s\n" + extra, dns=dns).start()
        self.addCleanup(d.cleanup)
        return d

    def sink(self, addr, **kw):
        s = WireSink(addr, **kw)
        self.addCleanup(s.stop)
        return s

    def send(self, d, msg, sender="a@example.test", rcpts=("u@relay.test",)):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW) as c:
            c.sendmail(sender, list(rcpts), msg, mail_options=["BODY=8BITMIME"] if any(b > 127 for b in msg) else [])

    def relay(self, port, extra=""):
        return self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n" + extra)

    def decoded_body(self, data):
        m = email.message_from_bytes(data, policy=email.policy.compat32)
        return m, m.get_payload(decode=True).decode("utf-8").replace("\r\n", "\n")

    # ---- 8BITMIME ----

    def test_8bit_to_peer_with_8bitmime_declared_and_unchanged(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port), eightbit=True)
        d = self.relay(port)
        self.send(d, MSG8)
        mail, rcpts, data = s.wait()
        self.assertIn("BODY=8BITMIME", mail)
        self.assertEqual(data.split(b"\r\n\r\n", 1)[1], MSG8.split(b"\r\n\r\n", 1)[1])

    def test_7bit_mail_not_declared(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port), eightbit=True)
        d = self.relay(port)
        self.send(d, MSG7)
        mail, rcpts, data = s.wait()
        self.assertNotIn("BODY=", mail)
        self.assertTrue(data.endswith(b"plain ascii\r\n"))

    def test_8bit_to_peer_without_8bitmime_converted(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port), eightbit=False)
        d = self.relay(port)
        self.send(d, MSG8)
        mail, rcpts, data = s.wait()
        self.assertNotIn("BODY=", mail)
        self.assertTrue(all(b < 128 for b in data), "8-bit byte sent to a 7-bit peer")
        self.assertTrue(all(len(l) <= 76 for l in data.split(b"\r\n")))
        m, body = self.decoded_body(data)
        self.assertEqual(m["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(len(m.get_all("Content-Transfer-Encoding")), 1)
        self.assertEqual(body, BODY8)
        d.wait_log("status=sent")

    def test_disable_mime_output_conversion_sends_as_is(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port), eightbit=False)
        d = self.relay(port, "disable_mime_output_conversion = yes\n")
        self.send(d, MSG8)
        mail, rcpts, data = s.wait()
        self.assertNotIn("BODY=", mail)
        self.assertEqual(data.split(b"\r\n\r\n", 1)[1], MSG8.split(b"\r\n\r\n", 1)[1])
        r = run_frugal("check", "-c", d.dir)
        self.assertNotIn("disable_mime_output_conversion", r.stdout + r.stderr)

    def test_large_8bit_converted_in_slices(self):
        # several scan slices (64 KiB) and many refills of the output buffer
        port = free_port()
        s = self.sink(("127.0.0.1", port), eightbit=False)
        d = self.relay(port)
        body = "".join(f"Zeile {i}: {'ä' * (i % 90)} = x\t\n" for i in range(6000))
        msg = ("From: a@example.test\r\nSubject: big\r\n\r\n" + body.replace("\n", "\r\n")).encode()
        self.assertGreater(len(msg), 300000)
        self.send(d, msg)
        mail, rcpts, data = s.wait(timeout=40)
        self.assertTrue(all(b < 128 for b in data))
        m, got = self.decoded_body(data)
        self.assertEqual(m["MIME-Version"], "1.0")
        self.assertEqual(got, body)

    def test_large_8bit_on_a_reused_connection_waits_for_the_scan(self):
        # a cached connection is ready for MAIL at once: the session waits (C_SCAN) for the
        # slices of the scan, then sends MAIL on the same connection
        port = free_port()
        s = self.sink(("127.0.0.1", port), eightbit=False)
        d = self.relay(port, "smtp_connection_cache_time_limit = 30s\n")
        self.send(d, MSG7)
        s.wait()
        d.wait_log("status=sent")
        # 7-bit but for its last line: the scan reads it all, in several slices, before it knows
        body = "".join(f"{i} {'o' * (i % 70)}\n" for i in range(8000)) + "schön\n"
        msg = ("From: a@example.test\r\nSubject: big\r\n\r\n" + body.replace("\n", "\r\n")).encode()
        self.assertGreater(len(msg), 4 * 64 * 1024)
        self.send(d, msg)
        mail, rcpts, data = s.wait(2, timeout=40)
        self.assertEqual(s.clients, ["127.0.0.1"])      # one connection for both
        d.wait_log("conn_use=2")
        self.assertTrue(all(b < 128 for b in data), "8-bit byte sent to a 7-bit peer")
        self.assertEqual(self.decoded_body(data)[1], body)

    def test_multipart_8bit_sent_as_is(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port), eightbit=False)
        d = self.relay(port)
        msg = ("From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
               "--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               "Grüße\r\n--b--\r\n").encode()
        self.send(d, msg)
        mail, rcpts, data = s.wait()
        self.assertIn("Grüße".encode(), data)
        d.wait_log("cannot convert this MIME body")

    def test_lmtp_without_8bitmime_converted(self):
        tmp = tempfile.mkdtemp(prefix="frugal-wire-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "lmtp")
        s = self.sink(path, eightbit=False, lmtp=True)
        d = self.daemon(f"transport_maps = inline:{{ relay.test=lmtp:unix:{path} }}\n")
        self.send(d, MSG8)
        mail, rcpts, data = s.wait()
        self.assertNotIn("BODY=", mail)
        self.assertTrue(all(b < 128 for b in data))
        self.assertEqual(self.decoded_body(data)[1], BODY8)

    def test_lmtp_with_8bitmime_declared(self):
        tmp = tempfile.mkdtemp(prefix="frugal-wire-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "lmtp")
        s = self.sink(path, eightbit=True, lmtp=True)
        d = self.daemon(f"transport_maps = inline:{{ relay.test=lmtp:unix:{path} }}\n")
        self.send(d, MSG8)
        mail, rcpts, data = s.wait()
        self.assertIn("BODY=8BITMIME", mail)
        self.assertIn("Grüße".encode(), data)

    # ---- inet_protocols, smtp_address_preference, smtp_bind_address ----

    def dual(self, extra, v6_sink=False):
        """dual.wire.test has A 127.0.0.1 and AAAA ::1; a sink on 127.0.0.1 (and one on ::1 when asked)."""
        for _ in range(20):         # a port free on 127.0.0.1 may be taken on ::1
            port = free_port()
            s4 = WireSink(("127.0.0.1", port))
            try:
                s6 = WireSink(("::1", port), family=socket.AF_INET6) if v6_sink else None
                break
            except OSError:
                s4.stop()
        self.addCleanup(s4.stop)
        if s6:
            self.addCleanup(s6.stop)
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[dual.wire.test]:{port} }}\n" + extra,
                        dns=self.dns)
        return d, s4, s6

    def test_inet_protocols_ipv4_never_tries_ipv6(self):
        d, s4, _ = self.dual("inet_protocols = ipv4\nsmtp_address_preference = ipv6\n")
        self.send(d, MSG7)
        s4.wait()
        d.wait_log("status=sent")
        self.assertNotIn("[::1]", d.output())

    def test_address_preference_ipv6_tries_ipv6_first(self):
        # the control of the test above: with all, ::1 is tried first (delivered there, or refused
        # or unreachable when the machine has no IPv6 loopback, then 127.0.0.1)
        v6 = have_ipv6_loopback()
        d, s4, s6 = self.dual("inet_protocols = all\nsmtp_address_preference = ipv6\n", v6_sink=v6)
        self.send(d, MSG7)
        d.wait_log("status=sent")
        self.assertIn("[::1]", d.output())
        if v6:
            self.assertEqual(len(s6.messages), 1)
            self.assertEqual(s4.messages, [])

    def test_address_preference_ipv4_first(self):
        if not have_ipv6_loopback():
            self.skipTest("no IPv6 loopback on this machine")
        d, s4, s6 = self.dual("smtp_address_preference = ipv4\n", v6_sink=True)
        for _ in range(3):
            self.send(d, MSG7)
        wait_for(lambda: len(s4.messages) == 3, 20 * SLOW, "three messages over IPv4")
        self.assertEqual(s6.messages, [])

    def test_inet_protocols_ipv6_only(self):
        if not have_ipv6_loopback():
            self.skipTest("no IPv6 loopback on this machine")
        d, s4, s6 = self.dual("inet_protocols = ipv6\nsmtp_address_preference = ipv4\n", v6_sink=True)
        self.send(d, MSG7)
        s6.wait()
        self.assertEqual(s4.messages, [])
        self.assertEqual(s6.clients, ["::1"])

    def test_bind_address_is_the_peers_view(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port))
        d = self.relay(port, "smtp_bind_address = 127.0.0.2\n")
        self.send(d, MSG7)
        s.wait()
        self.assertEqual(s.clients, ["127.0.0.2"])

    def test_bind_failure_defers_then_reload_delivers(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port))
        d = self.relay(port, "smtp_bind_address = 192.0.2.1\n")   # TEST-NET-1: not an address of this host
        self.send(d, MSG7)
        d.wait_log("status=deferred", timeout=15 * SLOW)
        log = d.output()
        self.assertIn("cannot bind to smtp_bind_address 192.0.2.1: Cannot assign requested address: "
                      "delivery deferred", log)
        self.assertIn("dsn=4.3.0, status=deferred (local configuration error: cannot bind to 192.0.2.1", log)
        self.assertEqual(s.messages, [])
        conf = os.path.join(d.dir, "frugal.conf")
        with open(conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(text.replace("smtp_bind_address = 192.0.2.1", "smtp_bind_address = 127.0.0.3"))
        r = run_frugal("reload", "-c", d.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        s.wait(timeout=30)
        self.assertEqual(s.clients[-1], "127.0.0.3")
        d.wait_log("status=sent")
        self.assertEqual(len(s.messages), 1)

    def check(self, conf):
        d = Daemon(conf)
        self.addCleanup(d.cleanup)
        return run_frugal("check", "-c", d.dir)

    def test_check_refuses_bind_address_of_wrong_family(self):
        r = self.check("smtp_bind_address = ::1\n")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r'frugal\.conf:\d+: smtp_bind_address: "::1" is not a numeric IPv4 address')
        r = self.check("smtp_bind_address6 = 127.0.0.1\n")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r'frugal\.conf:\d+: smtp_bind_address6: "127\.0\.0\.1" is not a numeric IPv6 address')
        r = self.check("smtp_bind_address = mail.example.com\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("is not a numeric IPv4 address", r.stderr)
        r = self.check("inet_protocols = ipv5\n")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r'frugal\.conf:\d+: inet_protocols: "ipv5"')
        # the control: good values pass, and are no longer "not acted on"
        r = self.check("smtp_bind_address = 127.0.0.2\nsmtp_bind_address6 = ::1\ninet_protocols = ipv4, ipv6\n"
                       "smtp_address_preference = ipv4\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("does not act on", r.stderr)

    # ---- smtp_generic_maps ----

    GENERIC = ("smtp_generic_maps = inline:{ alice@mx.example.test=alice.smith@public.test, "
               "@internal.test=@public.test, bob=robert@public.test, joe@relay.test=joseph@relay.test }\n")
    GMSG = ("From: Alice <alice@mx.example.test>\r\nTo: joe@relay.test, \"U\" <u@relay.test>\r\n"
            "Cc: (team)\r\n bob@mx.example.test\r\nReply-To: dev@internal.test\r\n"
            "Subject: from alice@mx.example.test\r\n\r\nwritten by alice@mx.example.test\r\n")

    def test_generic_maps_envelope_and_headers(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port))
        d = self.relay(port, self.GENERIC)
        self.send(d, self.GMSG.encode(), sender="alice@mx.example.test", rcpts=("joe@relay.test", "u@relay.test"))
        mail, rcpts, data = s.wait()
        self.assertIn("MAIL FROM:<alice.smith@public.test>", mail)
        self.assertEqual(rcpts, ["joseph@relay.test", "u@relay.test"])
        m = email.message_from_bytes(data, policy=email.policy.compat32)
        self.assertEqual(m["From"], "Alice <alice.smith@public.test>")
        self.assertEqual(m["To"], 'joseph@relay.test, "U" <u@relay.test>')
        self.assertEqual(m["Cc"].replace("\r\n", "\n"), "(team)\n robert@public.test")
        self.assertEqual(m["Reply-To"], "dev@public.test")
        # not an address header, and not the body: as they were
        self.assertEqual(m["Subject"], "from alice@mx.example.test")
        self.assertTrue(data.endswith(b"\r\n\r\nwritten by alice@mx.example.test\r\n"))
        # the log keeps the addresses as queued (Postfix)
        d.wait_log("status=sent")
        self.assertIn("to=<joe@relay.test>", d.output())
        r = run_frugal("check", "-c", d.dir)
        self.assertNotIn("smtp_generic_maps", r.stdout + r.stderr)

    def test_generic_maps_with_quoted_printable(self):
        # the two stages together: rewritten headers, then the conversion for a 7-bit peer
        port = free_port()
        s = self.sink(("127.0.0.1", port), eightbit=False)
        d = self.relay(port, self.GENERIC)
        msg = self.GMSG.replace("Subject:", "Content-Type: text/plain; charset=utf-8\r\nSubject:") + \
            BODY8.replace("\n", "\r\n")
        self.send(d, msg.encode(), sender="alice@mx.example.test", rcpts=("joe@relay.test",))
        mail, rcpts, data = s.wait()
        self.assertIn("MAIL FROM:<alice.smith@public.test>", mail)
        self.assertTrue(all(b < 128 for b in data))
        m, body = self.decoded_body(data)
        self.assertEqual(m["From"], "Alice <alice.smith@public.test>")
        self.assertEqual(m["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(body, "written by alice@mx.example.test\n" + BODY8)

    def test_generic_maps_that_cannot_open_defer(self):
        # never out unrewritten: a table that cannot be opened keeps the mail
        port = free_port()
        s = self.sink(("127.0.0.1", port))
        d = self.relay(port, "smtp_generic_maps = cdb:/nonexistent/frugal-wire/generic\n")
        self.send(d, self.GMSG.encode(), sender="alice@mx.example.test", rcpts=("joe@relay.test",))
        d.wait_log("status=deferred", timeout=15 * SLOW)
        self.assertRegex(d.output(), r"dsn=4\.3\.0, status=deferred \(smtp_generic_maps: ")
        self.assertEqual(s.clients, [])

    def test_generic_maps_not_for_lmtp(self):
        tmp = tempfile.mkdtemp(prefix="frugal-wire-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "lmtp")
        s = self.sink(path, lmtp=True)
        d = self.daemon(f"transport_maps = inline:{{ relay.test=lmtp:unix:{path} }}\n" + self.GENERIC)
        self.send(d, self.GMSG.encode(), sender="alice@mx.example.test", rcpts=("joe@relay.test",))
        mail, rcpts, data = s.wait()
        self.assertIn("MAIL FROM:<alice@mx.example.test>", mail)
        self.assertEqual(rcpts, ["joe@relay.test"])
        self.assertIn(b"From: Alice <alice@mx.example.test>", data)


if __name__ == "__main__":
    unittest.main()
