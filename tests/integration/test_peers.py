"""tests/integration/test_peers.py: the SMTP and LMTP clients (queue/smtpc.c)
against the real servers users run behind or beside frugal: a whole Postfix
instance as the receiving MTA (root only: Postfix's master needs it) and
Dovecot's LMTP server (unprivileged too), both started by the test in
temporary directories on loopback (realpeers.py).

The frugal side relays peer.test and nodsn.test to two Postfix instances, one
offering DSN and one with DSN switched off (smtpd_discard_ehlo_keywords), and
lmtp.test/lmtp2.test to Dovecot over unix:PATH and inet:HOST:PORT.  Postfix's
own notices to alice@example.test come back to frugal, so a NOTIFY=SUCCESS
test sees every notice anyone sent.
"""
import email
import email.policy
import os
import re
import smtplib
import threading
import unittest

from harness import Daemon, wait_for, make_cert, run_frugal, SLOW
from realpeers import PostfixPeer, DovecotLmtp

BODY = (b"line one\r\n"
        b".a line that starts with a dot\r\n"
        b"..two dots\r\n"
        b"trailing blanks   \r\n"
        b"\r\n"
        b"after an empty line\r\n" + b"x" * 990 + b"\r\n"
        b"last\r\n")


SMALL_LIMIT = 100000      # the second Postfix's message_size_limit (SIZE in its EHLO reply)
MANY = 40                 # Dovecot users for the many-recipient LMTP transaction
HARD_ERRORS = 5           # and its smtpd_hard_error_limit: 421 and a close after that many


def big_body(n):
    """About n bytes of lines of every length up to 1000, a dot at the start of every 7th
    line, so that dot-stuffing meets every offset of frugal's 8 KiB reads."""
    out, i = [], 0
    while sum(map(len, out)) < n:
        line = (b"." if i % 7 == 0 else b"") + bytes([97 + i % 26]) * (i * 37 % 1000)
        out.append(line + b"\r\n")
        i += 1
    return b"".join(out)


def msg(tag, body=BODY, extra=b""):
    return (b"From: alice@example.test\r\nTo: someone@example.test\r\nSubject: " + tag.encode() +
            b"\r\nMessage-ID: <" + tag.encode() + b"@example.test>\r\n" + extra + b"\r\n" + body)


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def send(port, rcpts, data, sender="alice@example.test", mail_opts=(), rcpt_opts=()):
    """One transaction; returns frugal's queue ID (from its 250 reply to the dot)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20 * SLOW) as c:
        c.ehlo("client.example.org")
        if "SMTPUTF8" in mail_opts:
            c.command_encoding = "utf-8"     # what smtplib's sendmail does for SMTPUTF8
        code, text = c.mail(sender, list(mail_opts))
        assert code == 250, (code, text)
        for r in rcpts:
            code, text = c.rcpt(r, list(rcpt_opts))
            assert code == 250, (r, code, text)
        code, text = c.data(data)
        assert code == 250, (code, text)
    return re.search(rb"queued as (\S+)", text).group(1).decode()


def status_blocks(m):
    """The per-recipient field blocks of a multipart/report (after the per-message one)."""
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    parts = m.get_payload()
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = parts[1].get_payload()
    return blocks[0], blocks[1:]


def wait_removed(d, qid, timeout=30):
    """The message is done with: every notice about it is queued before this line."""
    d.wait_log("%s: removed" % qid, timeout=timeout)


def wait_queue_empty(d, timeout=30):
    wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), timeout, "frugal's queue to empty",
             interval=0.05)


@unittest.skipIf(PostfixPeer.available(), PostfixPeer.available() or "")
class PostfixAsPeer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon("relay_domains = relay.test, peer.test, nodsn.test\n")
        cls.tmp = cls.d.dir
        cls.cert, cls.key = make_cert(cls.tmp, "pf")
        checks = os.path.join(cls.tmp, "header_checks")
        with open(checks, "w") as f:      # Postfix's answers to the end of data, by Subject
            f.write("/^Subject: reject-at-data/ REJECT 5.7.1 content refused here\n")
        back = "inline:{ example.test=smtp:[127.0.0.1]:%d }" % cls.d.port
        tls = {"smtpd_tls_cert_file": cls.cert, "smtpd_tls_key_file": cls.key,
               "smtpd_tls_security_level": "may", "smtpd_tls_received_header": "yes",
               "smtpd_tls_loglevel": "1", "transport_maps": back, "smtp_tls_security_level": "none",
               "header_checks": "regexp:" + checks,
               "smtpd_end_of_data_restrictions":
                   "check_sender_access inline:{ {later@example.test=450 4.7.1 content deferred here} }"}
        cls.pf = PostfixPeer(["peer.test"], tls, hostname="pf.example.test")
        cls.nodsn = PostfixPeer(["nodsn.test"], dict(tls, smtpd_discard_ehlo_keywords="dsn, 8bitmime",
                                                     message_size_limit=str(SMALL_LIMIT),
                                                     smtpd_hard_error_limit=str(HARD_ERRORS),
                                                     smtpd_error_sleep_time="0"),
                                hostname="nodsn.example.test")
        errors = []

        def start(p):
            try:
                p.start()
            except Exception as e:      # noqa: BLE001 -- reported below, on the test's thread
                errors.append(e)
        # each start spends ~3 s in postfix-script's checks: both at once
        threads = [threading.Thread(target=start, args=(p,)) for p in (cls.pf, cls.nodsn)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            if errors:
                raise errors[0]
        except Exception:
            cls.tearDownClass()
            raise
        with open(os.path.join(cls.d.dir, "frugal.conf"), "a") as f:
            f.write("transport_maps = inline:{ peer.test=smtp:[127.0.0.1]:%d, nodsn.test=smtp:[127.0.0.1]:%d }\n"
                    % (cls.pf.port, cls.nodsn.port))
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        for x in ("pf", "nodsn"):
            if hasattr(cls, x):
                getattr(cls, x).cleanup()
        cls.d.cleanup()

    def notices(self, tag):
        """alice's messages at frugal that mention tag (reports quote the headers)."""
        return [m for m in self.d.messages(self.d.maildir("alice")) if tag.encode() in m]

    def test_relayed_message_arrives_intact(self):
        data = msg("intact", extra=b"X-Test: 8bit \xc3\xa9t\xc3\xa9\r\n")
        qid = send(self.d.port, ["u1@peer.test"], data)
        wait_for(lambda: self.pf.messages("u1", "peer.test"), 20, "the message in Postfix's Maildir")
        got = self.pf.messages("u1", "peer.test")
        self.assertEqual(len(got), 1)
        # Postfix prepends Return-Path, Delivered-To and Received; the rest is ours, byte for byte
        # (a Maildir stores LF line ends; dot-stuffing undone)
        self.assertTrue(got[0].endswith(data.replace(b"\r\n", b"\n")), got[0][-600:])
        self.assertIn(b"Return-Path: <alice@example.test>", got[0])
        wait_removed(self.d, qid)
        self.assertRegex(self.d.output(), r"%s: to=<u1@peer\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*"
                         r"dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued as [0-9A-F]+\)" % (qid, self.pf.port))

    def test_large_message_arrives_intact(self):
        data = msg("large", big_body(400000))
        qid = send(self.d.port, ["u2@peer.test"], data)
        wait_removed(self.d, qid)
        got = wait_for(lambda: [m for m in self.pf.messages("u2", "peer.test") if b"Subject: large" in m], 20,
                       "the large message at Postfix")
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0].endswith(data.replace(b"\r\n", b"\n")))

    def test_8bit_to_peer_without_8bitmime_is_quoted_printable(self):
        """The second Postfix does not offer 8BITMIME: the body goes as quoted-printable, and
        what Postfix delivers decodes back to the original text."""
        text = "Gr\u00fc\u00dfe aus K\u00f6ln, caf\u00e9 \u65e5\u672c\r\n= sign and trailing space \r\n" * 3
        data = msg("eight-bit", text.encode(), extra=b"MIME-Version: 1.0\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n")
        qid = send(self.d.port, ["u1@nodsn.test"], data, mail_opts=["BODY=8BITMIME"])
        wait_removed(self.d, qid)
        got = wait_for(lambda: [m for m in self.nodsn.messages("u1", "nodsn.test") if b"Subject: eight-bit" in m],
                       20, "the converted message at Postfix")
        self.assertEqual(len(got), 1)
        self.assertTrue(all(b < 0x80 for b in got[0]), "8-bit bytes reached a peer without 8BITMIME")
        m = parse(got[0])
        self.assertEqual(m["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(m.get_payload(decode=True).decode("utf-8").replace("\r\n", "\n"),
                         text.replace("\r\n", "\n"))

    def test_size_limit_of_peer_bounces_before_mail(self):
        data = msg("too-big", big_body(SMALL_LIMIT + 1000))
        qid = send(self.d.port, ["u2@nodsn.test"], data)
        wait_removed(self.d, qid)
        self.assertRegex(self.d.output(), r"%s: to=<u2@nodsn\.test>, .*dsn=5\.3\.4, status=bounced \(message size "
                         r"\d+ exceeds size limit %d of server 127\.0\.0\.1\[127\.0\.0\.1\]\)" % (qid, SMALL_LIMIT))
        self.assertEqual([m for m in self.nodsn.messages("u2", "nodsn.test") if b"too-big" in m], [])
        self.assertNotRegex(self.nodsn.log(), r"message size limit exceeded|too-big")

    def test_peer_hangs_up_after_too_many_errors(self):
        """Postfix's smtpd_hard_error_limit: 421 and a close in the middle of the RCPTs. The
        recipients not answered yet are deferred, and the retry finishes them: each refused
        recipient bounced once, the good one delivered once (as Postfix's own client does)."""
        bad = ["bad%d@nodsn.test" % i for i in range(HARD_ERRORS + 3)]
        qid = send(self.d.port, bad + ["u3@nodsn.test"], msg("too-many-errors"))
        wait_removed(self.d, qid, timeout=30)
        log = self.d.output()
        self.assertRegex(log, r"%s: to=<bad%d@nodsn\.test>, .*dsn=4\.7\.0, status=deferred \(host 127\.0\.0\.1"
                         r"\[127\.0\.0\.1\] said: 421 4\.7\.0 nodsn\.example\.test Error: too many errors "
                         r"\(in reply to RCPT TO command\)\)" % (qid, HARD_ERRORS))
        self.assertRegex(log, r"%s: to=<u3@nodsn\.test>, .*status=deferred \(lost connection with 127\.0\.0\.1"
                         r"\[127\.0\.0\.1\] while sending RCPT TO\)" % qid)
        for a in bad:
            self.assertEqual(len(re.findall(r"%s: to=<%s>, .*status=bounced \(host \S+ said: 550 5\.1\.1 "
                                            % (qid, re.escape(a)), log)), 1, a)
        self.assertEqual(len(re.findall(r"%s: to=<u3@nodsn\.test>, .*status=sent" % qid, log)), 1)
        got = wait_for(lambda: [m for m in self.nodsn.messages("u3", "nodsn.test") if b"too-many-errors" in m],
                       20, "u3's copy")
        self.assertEqual(len(got), 1)

    def test_one_recipient_refused_one_accepted(self):
        qid = send(self.d.port, ["u2@peer.test", "nobody@peer.test"], msg("refused-one"))
        wait_removed(self.d, qid)
        log = self.d.output()
        self.assertRegex(log, r"%s: to=<nobody@peer\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*dsn=5\.1\.1, "
                         r"status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.1\.1 <nobody@peer\.test>: "
                         r"Recipient address rejected: User unknown in virtual mailbox table "
                         r"\(in reply to RCPT TO command\)\)" % qid)
        self.assertRegex(log, r"%s: to=<u2@peer\.test>, .*status=sent" % qid)
        mine = lambda: [m for m in self.pf.messages("u2", "peer.test") if b"Subject: refused-one" in m]
        wait_for(mine, 20, "u2's copy at Postfix")
        wait_queue_empty(self.d)
        bounces = self.notices("refused-one")
        self.assertEqual(len(bounces), 1)
        m = parse(bounces[0])
        self.assertEqual(m["Subject"], "Undelivered Mail Returned to Sender")
        _, blocks = status_blocks(m)
        self.assertEqual(len(blocks), 1)            # only the refused recipient
        self.assertEqual(blocks[0]["Final-Recipient"], "rfc822; nobody@peer.test")
        self.assertEqual(blocks[0]["Action"], "failed")
        self.assertEqual(blocks[0]["Status"], "5.1.1")
        self.assertIn("User unknown in virtual mailbox table", blocks[0]["Diagnostic-Code"])
        self.assertEqual(len(mine()), 1)

    def test_refused_at_end_of_data(self):
        """Postfix refuses the content after the dot: every recipient of the transaction bounces."""
        qid = send(self.d.port, ["u1@peer.test", "u3@peer.test"], msg("reject-at-data"))
        wait_removed(self.d, qid)
        log = self.d.output()
        for u in ("u1", "u3"):
            self.assertRegex(log, r"%s: to=<%s@peer\.test>, .*dsn=5\.7\.1, status=bounced \(host 127\.0\.0\.1"
                             r"\[127\.0\.0\.1\] said: 550 5\.7\.1 content refused here "
                             r"\(in reply to end of DATA command\)\)" % (qid, u))
        wait_queue_empty(self.d)
        got = self.notices("Subject: reject-at-data")
        self.assertEqual(len(got), 1)
        _, blocks = status_blocks(parse(got[0]))
        self.assertEqual(sorted(b["Final-Recipient"] for b in blocks),
                         ["rfc822; u1@peer.test", "rfc822; u3@peer.test"])
        self.assertTrue(all(b["Status"] == "5.7.1" for b in blocks))

    def test_deferred_at_end_of_data(self):
        qid = send(self.d.port, ["u2@peer.test"], msg("defer-at-data"), sender="later@example.test")
        # taken off the queue at the end (it would be retried for ever): later tests wait for it empty
        self.addCleanup(lambda: run_frugal("queue", "-c", self.d.dir, "delete", qid))
        self.d.wait_log("%s: to=<u2@peer.test>" % qid, timeout=20)
        self.assertRegex(self.d.output(), r"%s: to=<u2@peer\.test>, .*dsn=4\.7\.1, status=deferred \(host "
                         r"127\.0\.0\.1\[127\.0\.0\.1\] said: 450 4\.7\.1 <later@example\.test>: Sender address rejected: "
                         r"content deferred here "
                         r"\(in reply to end of DATA command\)\)" % qid)
        self.assertIn(qid, run_frugal("queue", "-c", self.d.dir, "list").stdout)   # kept, not returned
        self.assertNotRegex(self.d.output(), r"%s: to=<u2@peer\.test>.*status=bounced" % qid)

    def test_connection_reuse_with_postfix(self):
        """Four messages over one connection: Postfix's own count of the session's commands."""
        d = Daemon("relay_domains = peer.test\ntransport_maps = inline:{ peer.test=smtp:[127.0.0.1]:%d }\n"
                   "defer_transports = smtp\nsmtp_destination_concurrency_limit = 1\n"
                   "smtp_connection_cache_time_limit = 10s\n" % self.pf.port).start()
        self.addCleanup(d.cleanup)
        for i in range(4):
            send(d.port, ["u3@peer.test"], msg("reuse-%d" % i))
        r = run_frugal("queue", "-c", d.dir, "flush")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: len(re.findall(r"to=<u3@peer\.test>.*status=sent", d.output())) == 4, 30,
                 "four deliveries")
        self.assertEqual(sorted(int(x) for x in re.findall(r"conn_use=(\d+)", d.output())), [2, 3, 4])
        d.stop()        # frugal's QUIT ends Postfix's session, which then logs its counts
        wait_for(lambda: re.search(r"disconnect from \S+ ehlo=2 starttls=1 mail=4 rcpt=4 data=4 rset=4 quit=1 ",
                                   self.pf.log()), 20, "Postfix's count of one session with four messages")

    def starttls(self, level, user):
        d = Daemon("relay_domains = peer.test\nsmtp_tls_security_level = %s\n"
                   "transport_maps = inline:{ peer.test=smtp:[127.0.0.1]:%d }\n" % (level, self.pf.port)).start()
        self.addCleanup(d.cleanup)
        qid = send(d.port, [user + "@peer.test"], msg("tls-" + level))
        wait_removed(d, qid)
        # Postfix's smtp(8) line, word for word but for the cipher
        self.assertRegex(d.output(), r"Untrusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: "
                         r"TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)" % self.pf.port)
        got = wait_for(lambda: self.pf.messages(user, "peer.test"), 20, "the message at Postfix")
        # the receiving side saw it inside TLS: its Received header and its log say so
        self.assertRegex(got[-1].decode("latin-1"), r"\(using TLSv1\.[23] with cipher \S+")
        self.assertRegex(self.pf.log(), r"Anonymous TLS connection established from \S*\[127\.0\.0\.1\]")

    def test_starttls_may(self):
        self.starttls("may", "u3")

    def test_starttls_encrypt(self):
        self.starttls("encrypt", "u1")

    def test_notify_success_to_dsn_peer_is_its_business(self):
        """RFC 3461 6.2: the next hop was given NOTIFY=SUCCESS; it reports, frugal does not."""
        qid = send(self.d.port, ["u3@peer.test"], msg("dsn-peer"), rcpt_opts=["NOTIFY=SUCCESS"])
        # Postfix delivers and sends its "delivered" notice back to alice at frugal
        wait_for(lambda: self.notices("dsn-peer"), 30, "Postfix's success notice at alice")
        wait_removed(self.d, qid)
        wait_queue_empty(self.d)
        got = self.notices("dsn-peer")
        self.assertEqual(len(got), 1, "frugal sent a success notice of its own")
        per_msg, blocks = status_blocks(parse(got[0]))
        self.assertEqual(per_msg["Reporting-MTA"], "dns; pf.example.test")
        self.assertEqual(blocks[0]["Action"], "delivered")
        self.assertNotIn("%s: sender delivery status notification" % qid, self.d.output())
        self.assertRegex(self.pf.log(), r"sender delivery status notification")

    def test_notify_success_to_peer_without_dsn_is_relayed(self):
        """A next hop without DSN was not told: frugal reports Action: relayed (Postfix's words)."""
        qid = send(self.d.port, ["u1@nodsn.test"], msg("nodsn-peer"), rcpt_opts=["NOTIFY=SUCCESS"])
        wait_removed(self.d, qid)
        self.assertIn("%s: sender delivery status notification" % qid, self.d.output())
        wait_queue_empty(self.d)
        wait_for(lambda: self.nodsn.messages("u1", "nodsn.test"), 20, "the message at the second Postfix")
        got = self.notices("nodsn-peer")
        self.assertEqual(len(got), 1)
        m = parse(got[0])
        self.assertEqual(m["Subject"], "Successful Mail Delivery Report")
        per_msg, blocks = status_blocks(m)
        self.assertEqual(per_msg["Reporting-MTA"], "dns; mx.example.test")
        self.assertEqual(blocks[0]["Final-Recipient"], "rfc822; u1@nodsn.test")
        self.assertEqual(blocks[0]["Action"], "relayed")
        self.assertEqual(blocks[0]["Status"], "2.0.0")
        # Postfix's words: the relay in the text, Remote-MTA and the reply in the report
        self.assertEqual(blocks[0]["Remote-MTA"], "dns; 127.0.0.1")
        self.assertRegex(blocks[0]["Diagnostic-Code"], r"^smtp; 250 2\.0\.0 Ok: queued as [0-9A-F]+$")
        self.assertRegex(m.get_payload()[0].get_payload(), r"<u1@nodsn\.test>: delivery via 127\.0\.0\.1"
                         r"\[127\.0\.0\.1\]:%d: 250 2\.0\.0 Ok: queued as [0-9A-F]+\n" % self.nodsn.port)
        self.assertNotIn("sender delivery status notification", self.nodsn.log())


@unittest.skipIf(PostfixPeer.available() or DovecotLmtp.available(),
                 PostfixPeer.available() or DovecotLmtp.available() or "")
class PostfixRelayhostWithAuth(unittest.TestCase):
    """relayhost with AUTH over STARTTLS: Postfix with a self-signed certificate, its SASL
    done by Dovecot (smtpd_sasl_type = dovecot), relaying only for authenticated clients."""

    @classmethod
    def setUpClass(cls):
        cls.dc = DovecotLmtp({"sender": ""}, passwords={"sender": "s3cret pass"}, auth=True).start()
        cert, key = make_cert(cls.dc.dir, "relay")
        cls.pf = PostfixPeer(["auth.test"], {
            "smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key, "smtpd_tls_security_level": "may",
            "smtpd_tls_auth_only": "yes", "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": cls.dc.auth_socket, "mynetworks": "127.0.0.2/32",
            "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject"}, hostname="relay.example.test")
        try:
            cls.pf.start()
        except Exception:
            cls.dc.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.pf.cleanup()
        cls.dc.cleanup()

    def daemon(self, extra):
        d = Daemon("relay_domains = auth.test\nrelayhost = [127.0.0.1]:%d\nsmtp_tls_security_level = encrypt\n"
                   % self.pf.port + extra).start()
        self.addCleanup(d.cleanup)
        return d

    def test_auth_plain_inside_tls(self):
        d = self.daemon("smtp_sasl_auth_enable = yes\n"
                        "smtp_sasl_password_maps = inline:{ {[127.0.0.1]:%d=sender:s3cret pass} }\n"
                        "smtp_sasl_tls_security_options = noanonymous\n" % self.pf.port)
        qid = send(d.port, ["u1@auth.test"], msg("authed"))
        wait_removed(d, qid)
        self.assertRegex(d.output(), r"%s: to=<u1@auth\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*"
                         r"status=sent \(250 2\.0\.0 Ok" % (qid, self.pf.port))
        self.assertNotIn("s3cret", d.output())
        got = wait_for(lambda: self.pf.messages("u1", "auth.test"), 20, "the message at the relayhost")
        # RFC 3848: ESMTPSA is ESMTP with STARTTLS and AUTH
        self.assertRegex(got[0].decode("latin-1"), r"by relay\.example\.test \(Postfix\) with ESMTPSA ")
        self.assertRegex(self.pf.log(), r"sasl_method=PLAIN, sasl_username=sender")

    def test_without_credentials_refused(self):
        """The negative control: the same mail without AUTH is refused by this relayhost."""
        d = self.daemon("")
        qid = send(d.port, ["u2@auth.test"], msg("not-authed"))
        wait_removed(d, qid)
        self.assertRegex(d.output(), r"%s: to=<u2@auth\.test>, .*dsn=5\.7\.1, status=bounced \(host "
                         r"127\.0\.0\.1\[127\.0\.0\.1\] said: 554 5\.7\.1 <u2@auth\.test>: Recipient address "
                         r"rejected: Access denied \(in reply to RCPT TO command\)\)" % qid)

    def test_wrong_password_deferred(self):
        d = self.daemon("smtp_sasl_auth_enable = yes\n"
                        "smtp_sasl_password_maps = inline:{ {[127.0.0.1]:%d=sender:wrong} }\n"
                        "smtp_sasl_tls_security_options = noanonymous\n" % self.pf.port)
        qid = send(d.port, ["u3@auth.test"], msg("bad-pass"))
        self.addCleanup(lambda: run_frugal("queue", "-c", d.dir, "delete", qid))
        d.wait_log("%s: to=<u3@auth.test>" % qid, timeout=20)
        self.assertRegex(d.output(), r"%s: to=<u3@auth\.test>, .*dsn=4\.7\.0, status=deferred \(SASL authentication "
                         r"failed; server 127\.0\.0\.1\[127\.0\.0\.1\] said: 535 5\.7\.8 Error: authentication "
                         r"failed" % qid)
        self.assertEqual(self.pf.messages("u3", "auth.test"), [])


@unittest.skipIf(DovecotLmtp.available(), DovecotLmtp.available() or "")
class DovecotLmtpAsPeer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        users = {"u1": "", "u2": "", "full": "userdb_quota_rule=*:storage=1K"}
        users.update(("r%02d" % i, "") for i in range(MANY))
        cls.dc = DovecotLmtp(users).start()
        try:
            cls.d = Daemon("relay_domains = lmtp.test, lmtp2.test\n"
                           "transport_maps = inline:{ lmtp.test=lmtp:unix:%s, lmtp2.test=lmtp:inet:127.0.0.1:%d }\n"
                           % (cls.dc.socket, cls.dc.port)).start()
        except Exception:
            cls.dc.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()
        cls.dc.cleanup()

    def notices(self, tag):
        return [m for m in self.d.messages(self.d.maildir("alice")) if tag.encode() in m]

    def test_unix_and_inet(self):
        qid = send(self.d.port, ["u1@lmtp.test", "u2@lmtp2.test"], msg("both-ways"))
        wait_removed(self.d, qid)
        log = self.d.output()
        # Postfix's relay= for LMTP over a unix socket, and host[addr]:port over TCP
        self.assertRegex(log, r"%s: to=<u1@lmtp\.test>, relay=mx\.example\.test\[%s\], .*status=sent \(250 2\.0\.0 "
                         % (qid, re.escape(self.dc.socket)))
        self.assertRegex(log, r"%s: to=<u2@lmtp2\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent "
                         r"\(250 2\.0\.0 " % (qid, self.dc.port))
        for u in ("u1", "u2"):
            got = [m for m in self.dc.messages(u) if b"both-ways" in m]
            self.assertEqual(len(got), 1, u)
            self.assertTrue(got[0].endswith(msg("both-ways").replace(b"\r\n", b"\n")))

    def test_per_recipient_results(self):
        """RFC 2033: one reply per recipient after the dot; one over quota, one unknown, one delivered."""
        big = BODY * 4      # over the 1K quota of "full"
        qid = send(self.d.port, ["u1@lmtp.test", "full@lmtp.test", "stranger@lmtp.test"], msg("quota", big))
        wait_removed(self.d, qid)
        log = self.d.output()
        self.assertRegex(log, r"%s: to=<u1@lmtp\.test>, .*status=sent" % qid)
        self.assertRegex(log, r"%s: to=<full@lmtp\.test>, .*dsn=5\.2\.2, status=bounced \(host \S+ said: 552 5\.2\.2 "
                         r"<full@lmtp\.test> Quota exceeded.* \(in reply to end of DATA command\)\)" % qid)
        self.assertRegex(log, r"%s: to=<stranger@lmtp\.test>, .*dsn=5\.1\.1, status=bounced \(host \S+ said: "
                         r"550 5\.1\.1 <stranger@lmtp\.test> User doesn't exist.* \(in reply to RCPT TO command\)\)"
                         % qid)
        self.assertEqual(len([m for m in self.dc.messages("u1") if b"quota" in m]), 1)
        self.assertEqual(self.dc.messages("full"), [])
        wait_queue_empty(self.d)
        got = self.notices("Subject: quota")
        self.assertEqual(len(got), 1)
        _, blocks = status_blocks(parse(got[0]))
        self.assertEqual(sorted((b["Final-Recipient"], b["Status"]) for b in blocks),
                         [("rfc822; full@lmtp.test", "5.2.2"), ("rfc822; stranger@lmtp.test", "5.1.1")])

    def test_many_recipients_replies_in_order(self):
        """RFC 2033 4.2 at scale: 40 accepted recipients among unknown ones, pipelined; one
        end-of-data reply each, matched in RCPT order: Dovecot names the recipient in each reply."""
        rcpts = []
        for i in range(MANY):
            rcpts.append("r%02d@lmtp.test" % i)
            if i % 8 == 3:
                rcpts.append("ghost%d@lmtp.test" % i)
        data = msg("many-rcpts")
        qid = send(self.d.port, rcpts, data)
        wait_removed(self.d, qid, timeout=30)
        log = self.d.output()
        self.assertEqual(len(re.findall(r"%s: to=<r\d\d@lmtp\.test>, .*status=sent \(250 2\.0\.0 <r\d\d@lmtp\.test> "
                                        % qid, log)), MANY)
        for i in range(MANY):
            self.assertRegex(log, r"%s: to=<r%02d@lmtp\.test>, .*status=sent \(250 2\.0\.0 <r%02d@lmtp\.test> "
                             % (qid, i, i))
            got = [m for m in self.dc.messages("r%02d" % i) if b"many-rcpts" in m]
            self.assertEqual(len(got), 1, i)
        self.assertEqual(len(re.findall(r"%s: to=<ghost\d+@lmtp\.test>, .*dsn=5\.1\.1, status=bounced" % qid, log)),
                         len(rcpts) - MANY)

    def test_connection_reuse_with_dovecot(self):
        """Four messages over one LMTP connection (RSET between them), as Dovecot logs it."""
        d = Daemon("relay_domains = lmtp.test\ntransport_maps = inline:{ lmtp.test=lmtp:unix:%s }\n"
                   "defer_transports = lmtp\nlmtp_destination_concurrency_limit = 1\n"
                   "smtp_connection_cache_time_limit = 10s\n" % self.dc.socket).start()
        self.addCleanup(d.cleanup)
        for i in range(4):
            send(d.port, ["u2@lmtp.test"], msg("lmtp-reuse-%d" % i))
        before = self.dc.log().count("Connect from local")
        r = run_frugal("queue", "-c", d.dir, "flush")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: len(re.findall(r"to=<u2@lmtp\.test>.*status=sent", d.output())) == 4, 30, "four deliveries")
        self.assertEqual(sorted(int(x) for x in re.findall(r"conn_use=(\d+)", d.output())), [2, 3, 4])
        self.assertEqual(len([m for m in self.dc.messages("u2") if b"lmtp-reuse-" in m]), 4)
        # Dovecot logs through its log process: wait for the last delivery's line, which comes
        # after its connection's "Connect" line (one lmtp process, one pipe, in order)
        wait_for(lambda: "msgid=<lmtp-reuse-3@example.test>: saved mail to INBOX" in self.dc.log(), 10,
                 "Dovecot's log of the fourth delivery")
        self.assertEqual(self.dc.log().count("Connect from local") - before, 1)

    def test_notify_success_is_delivered(self):
        """An LMTP server is the final delivery (Dovecot offers no DSN): Action: delivered."""
        qid = send(self.d.port, ["u1@lmtp.test"], msg("lmtp-notify"), rcpt_opts=["NOTIFY=SUCCESS"])
        wait_removed(self.d, qid)
        wait_queue_empty(self.d)
        got = self.notices("Subject: lmtp-notify")
        self.assertEqual(len(got), 1)
        _, blocks = status_blocks(parse(got[0]))
        self.assertEqual((blocks[0]["Final-Recipient"], blocks[0]["Action"], blocks[0]["Status"]),
                         ("rfc822; u1@lmtp.test", "delivered", "2.0.0"))

    def test_8bit_and_smtputf8(self):
        body = "caf\u00e9 \u00fcber \u65e5\u672c\r\n".encode()
        data = msg("utf8hdr", body, extra="X-Name: J\u00fcrgen\r\n".encode())
        qid = send(self.d.port, ["u2@lmtp.test"], data, mail_opts=["SMTPUTF8", "BODY=8BITMIME"])
        wait_removed(self.d, qid)
        got = [m for m in self.dc.messages("u2") if b"utf8hdr" in m]
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0].endswith(data.replace(b"\r\n", b"\n")))
        # Dovecot 2.3's LMTP does not offer SMTPUTF8: a non-ASCII address cannot go (5.6.7, as Postfix)
        qid = send(self.d.port, ["j\u00fcrgen@lmtp.test"], msg("utf8rcpt"), mail_opts=["SMTPUTF8"])
        wait_removed(self.d, qid)
        self.assertRegex(self.d.output(), r"%s: to=<j\u00fcrgen@lmtp\.test>, .*dsn=5\.6\.7, status=bounced "
                         r"\(SMTPUTF8 is required, but was not offered by host " % qid)


if __name__ == "__main__":
    unittest.main()
