"""tests/integration/test_smtp.py: the SMTP server against real clients
(Python smtplib, swaks, raw sockets): every reply code of issue 2."""
import os
import shutil
import smtplib
import subprocess
import unittest

from harness import Daemon, Raw, wait_for, SLOW

MSG = "From: a@example.org\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nbody line\r\n"


class SMTPBase(unittest.TestCase):
    extra = ""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(extra=cls.extra).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def raw(self):
        r = Raw(self.d.port)
        code, _ = r.reply()
        self.assertEqual(code, 220)
        return r


class Protocol(SMTPBase):
    extra = "message_size_limit = 20000\nsmtpd_recipient_limit = 3\n"

    def test_greeting_and_ehlo(self):
        r = Raw(self.d.port)
        code, text = r.reply()
        self.assertEqual(code, 220)
        self.assertIn("mx.example.test ESMTP frugal", text)
        code, text = r.cmd("EHLO client.example.org")
        self.assertEqual(code, 250)
        for ext in ("PIPELINING", "SIZE 20000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            self.assertIn(ext, text)
        self.assertEqual(r.cmd("QUIT")[0], 221)
        self.assertTrue(r.closed())

    def test_full_transaction_delivered(self):
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.ehlo("client.example.org")
            s.sendmail("sender@example.org", ["alice@example.test"], MSG)
        msgs = self.d.wait_messages(self.d.maildir("alice"), 1)
        m = msgs[-1]
        self.assertIn(b"Return-Path: <sender@example.org>", m)
        self.assertIn(b"Delivered-To: alice@example.test", m)
        self.assertIn(b"Received: from client.example.org", m)
        self.assertIn(b"by mx.example.test (frugal) with ESMTP id", m)
        self.assertTrue(m.endswith(b"body line\n"))
        self.assertNotIn(b"\r\n", m)
        self.d.wait_log("status=sent")
        self.d.wait_log("client=unknown[127.0.0.1]")

    def test_smtputf8_transaction_traced_as_utf8smtp(self):
        # RFC 6531 3.7.3: a transaction that used SMTPUTF8 is "with UTF8SMTP"
        r = self.raw()
        r.cmd("EHLO client.example.org")
        r.send("MAIL FROM:<s\u00e9@example.org> SMTPUTF8\r\n".encode())
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<dave@virt.test>")[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send("Subject: caf\u00e9\r\n\r\nbody utf8\r\n.\r\n".encode())
        self.assertEqual(r.reply()[0], 250)
        r.close()
        m = self.d.wait_messages(self.d.vmaildir("virt.test/dave"), 1)[-1]
        self.assertIn(b"by mx.example.test (frugal) with UTF8SMTP id", m)

    def test_unknown_local_user(self):
        r = self.raw()
        r.cmd("EHLO c.example.org")
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
        code, text = r.cmd("RCPT TO:<nosuchuser@example.test>")
        self.assertEqual(code, 550)
        self.assertIn("5.1.1", text)
        self.assertIn("User unknown in local recipient table", text)
        r.close()
        self.d.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nosuchuser@example.test>: "
                        "Recipient address rejected: User unknown in local recipient table; "
                        "from=<s@example.org> to=<nosuchuser@example.test> proto=ESMTP helo=<c.example.org>")

    def test_no_open_relay(self):
        # smtpd_relay_restrictions first (Postfix 2.10+): its default defers
        r = self.raw()
        r.cmd("EHLO c.example.org")
        r.cmd("MAIL FROM:<s@example.org>")
        code, text = r.cmd("RCPT TO:<victim@elsewhere.example>")
        self.assertEqual(code, 454)
        self.assertIn("4.7.1 <victim@elsewhere.example>: Relay access denied", text)
        self.assertEqual(r.cmd("RCPT TO:<someone@relay.test>")[0], 250)  # relay_domains
        r.close()
        self.d.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 454 4.7.1 <victim@elsewhere.example>: "
                        "Relay access denied; from=<s@example.org> to=<victim@elsewhere.example>")

    def test_postmaster_always_accepted(self):
        r = self.raw()
        r.cmd("HELO c")
        r.cmd("MAIL FROM:<>")
        self.assertEqual(r.cmd("RCPT TO:<postmaster>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<Postmaster@example.test>")[0], 250)
        r.close()

    def test_sequence_errors(self):
        r = self.raw()
        r.cmd("EHLO c.example.org")
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 503)
        self.assertEqual(r.cmd("DATA")[0], 503)
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 503)
        self.assertEqual(r.cmd("DATA")[0], 554)  # no valid recipients
        self.assertEqual(r.cmd("RSET")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 503)
        r.close()

    def test_syntax_errors(self):
        r = self.raw()
        self.assertEqual(r.cmd("HELO")[0], 501)
        r.cmd("EHLO c.example.org")
        self.assertEqual(r.cmd("MAIL FROM:")[0], 501)
        self.assertEqual(r.cmd("MAIL TO:<a@b.c>")[0], 501)
        self.assertEqual(r.cmd("MAIL FROM:<a@b.c> FOO=BAR")[0], 555)
        self.assertEqual(r.cmd("MAIL FROM:<a@b.c>")[0], 250)
        code, text = r.cmd("RCPT TO:<a b@c>")
        self.assertEqual(code, 501)
        self.assertEqual(r.cmd("DATA extra")[0], 501)
        self.assertEqual(r.cmd("FROB")[0], 500)
        self.assertEqual(r.cmd("VRFY")[0], 501)
        r.close()

    def test_misc_commands(self):
        r = self.raw()
        self.assertEqual(r.cmd("NOOP")[0], 250)
        self.assertEqual(r.cmd("HELP")[0], 214)
        self.assertEqual(r.cmd("VRFY alice")[0], 252)
        self.assertEqual(r.cmd("EXPN sales")[0], 502)
        self.assertEqual(r.cmd("STARTTLS")[0], 502)
        self.assertEqual(r.cmd("QUIT")[0], 221)
        r.close()

    def test_long_command_line(self):
        r = self.raw()
        code, text = r.cmd("NOOP " + "x" * 600)
        self.assertEqual(code, 500)
        self.assertIn("5.5.2", text)
        self.assertEqual(r.cmd("NOOP")[0], 250)  # session goes on
        r.close()

    def test_endless_line_disconnects(self):
        r = self.raw()
        r.send("X" * 5000)
        code, text = r.reply()
        self.assertEqual(code, 500)
        self.assertTrue(r.closed())

    def test_bare_lf_command(self):
        r = self.raw()
        r.send("EHLO c.example.org\n")
        code, text = r.reply()
        self.assertEqual(code, 521)
        self.assertIn("bare <LF>", text)
        self.assertTrue(r.closed())

    def test_bare_lf_in_data(self):
        r = self.raw()
        r.cmd("EHLO c.example.org")
        r.cmd("MAIL FROM:<s@example.org>")
        r.cmd("RCPT TO:<alice@example.test>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        # the SMTP smuggling shape: <LF>.<CR><LF>
        r.send("Subject: x\r\n\r\nhello\n.\r\nMAIL FROM:<evil@example.org>\r\n")
        code, text = r.reply()
        self.assertEqual(code, 521)
        self.assertTrue(r.closed())

    def test_nul_in_data(self):
        r = self.raw()
        r.cmd("EHLO c.example.org")
        r.cmd("MAIL FROM:<s@example.org>")
        r.cmd("RCPT TO:<alice@example.test>")
        r.cmd("DATA")
        r.send("Subject: x\r\n\r\nnul\x00byte\r\n.\r\n")
        code, text = r.reply()
        self.assertEqual(code, 554)
        self.assertIn("5.6.0", text)
        self.assertEqual(r.cmd("NOOP")[0], 250)
        r.close()

    def test_size_limits(self):
        r = self.raw()
        r.cmd("EHLO c.example.org")
        code, text = r.cmd("MAIL FROM:<s@example.org> SIZE=50000")
        self.assertEqual(code, 552)
        self.assertIn("5.3.4", text)
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org> SIZE=100")[0], 250)
        r.cmd("RCPT TO:<alice@example.test>")
        r.cmd("DATA")
        r.send(("x" * 70 + "\r\n") * 400 + ".\r\n")
        code, text = r.reply()
        self.assertEqual(code, 552)
        self.assertEqual(r.cmd("NOOP")[0], 250)
        r.close()

    def test_too_many_recipients(self):
        r = self.raw()
        r.cmd("EHLO c.example.org")
        r.cmd("MAIL FROM:<s@example.org>")
        for _ in range(3):
            self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 250)
        code, text = r.cmd("RCPT TO:<alice@example.test>")
        self.assertEqual(code, 452)
        self.assertIn("4.5.3", text)
        r.close()

    def test_pipelining_and_dot_stuffing(self):
        r = self.raw()
        r.send("EHLO c.example.org\r\nMAIL FROM:<p@example.org>\r\nRCPT TO:<bob@example.test>\r\n"
               "RCPT TO:<nobody@example.test>\r\nDATA\r\n")
        codes = [r.reply()[0] for _ in range(5)]
        self.assertEqual(codes, [250, 250, 250, 550, 354])
        r.send("Subject: pipe\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n")
        code, text = r.reply()
        self.assertEqual(code, 250)
        self.assertIn("queued as", text)
        self.assertEqual(r.reply()[0], 221)
        msgs = self.d.wait_messages(self.d.maildir("bob"), 1)
        self.assertTrue(any(b"\n.leading dot\n" in m for m in msgs))

    def test_swaks(self):
        if not shutil.which("swaks"):
            self.skipTest("swaks not installed")
        p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.d.port),
                            "--from", "s@example.org", "--to", "carol@virt.test",
                            "--helo", "swaks.example.org", "--timeout", str(int(10 * SLOW))],
                           capture_output=True, text=True, timeout=60 * SLOW)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("250 2.0.0 Ok: queued as", p.stdout)
        self.d.wait_messages(self.d.vmaildir("virt.test/carol"), 1)


class ErrorLimits(SMTPBase):
    extra = "smtpd_hard_error_limit = 3\nsmtpd_junk_command_limit = 2\nsmtpd_timeout = 1s\n"

    def test_hard_error_limit(self):
        r = self.raw()
        self.assertEqual(r.cmd("BAD1")[0], 500)
        self.assertEqual(r.cmd("BAD2")[0], 500)
        r.send("BAD3\r\n")
        self.assertEqual(r.reply()[0], 500)
        code, text = r.reply()
        self.assertEqual(code, 421)
        self.assertIn("too many errors", text)
        self.assertTrue(r.closed())

    def test_junk_commands(self):
        r = self.raw()
        # 2 junk commands are free, then each is an error; 3 errors end the session
        for _ in range(4):
            self.assertEqual(r.cmd("NOOP")[0], 250)
        r.send("NOOP\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(r.reply()[0], 421)
        self.assertTrue(r.closed())

    def test_idle_timeout(self):
        r = self.raw()
        code, text = r.reply()   # blocks until the server's 1 s timeout
        self.assertEqual(code, 421)
        self.assertIn("4.4.2", text)
        self.assertTrue(r.closed())


class Routing(SMTPBase):
    def send(self, rcpts, sender="s@example.org"):
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            return s.sendmail(sender, rcpts, "Subject: routing\r\n\r\nhi\r\n")

    def test_alias_list(self):
        self.send(["sales@example.test"])
        self.d.wait_messages(self.d.maildir("alice"), 1)
        self.d.wait_messages(self.d.maildir("bob"), 1)

    def test_nested_alias_to_virtual(self):
        self.send(["all@example.test"])
        self.d.wait_messages(self.d.vmaildir("virt.test/carol"), 1)

    def test_virtual_alias(self):
        self.send(["team@virt.test"])
        self.d.wait_messages(self.d.vmaildir("virt.test/dave"), 1)

    def test_unknown_virtual_user(self):
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.ehlo("c.example.org")
            s.mail("s@example.org")
            code, text = s.rcpt("nobody@virt.test")
            self.assertEqual(code, 550)
            self.assertIn(b"virtual mailbox table", text)


class Restrictions(SMTPBase):
    extra = ("smtpd_sender_restrictions = check_sender_access inline:{ { spammer@bad.example = REJECT go away }, "
             "{ bad.example = 550 no thanks }, { tmp.example = 450 try later } }\n"
             "smtpd_helo_restrictions = reject_invalid_helo_hostname\n"
             "smtpd_recipient_restrictions = check_recipient_access inline:{ blocked@example.test=REJECT }, "
             "permit_mynetworks, reject_unauth_destination\n")

    def rcpt_reply(self, helo, sender, rcpt="alice@example.test"):
        r = self.raw()
        r.cmd("EHLO " + helo)
        self.assertEqual(r.cmd("MAIL FROM:<%s>" % sender)[0], 250)
        reply = r.cmd("RCPT TO:<%s>" % rcpt)
        r.close()
        return reply

    def test_sender_access(self):
        code, text = self.rcpt_reply("c.example.org", "spammer@bad.example")
        self.assertEqual(code, 554)
        self.assertIn("Sender address rejected: go away", text)
        code, text = self.rcpt_reply("c.example.org", "other@bad.example")
        self.assertEqual(code, 550)
        self.assertIn("no thanks", text)
        code, text = self.rcpt_reply("c.example.org", "x@tmp.example")
        self.assertEqual(code, 450)
        self.assertEqual(self.rcpt_reply("c.example.org", "ok@good.example")[0], 250)

    def test_helo_and_recipient_access(self):
        code, text = self.rcpt_reply("bad_name!", "ok@good.example")
        self.assertEqual(code, 501)
        self.assertIn("Helo command rejected", text)
        code, text = self.rcpt_reply("c.example.org", "ok@good.example", "blocked@example.test")
        self.assertEqual(code, 554)
        self.assertIn("Recipient address rejected", text)

    def test_relay_list_before_recipient_list(self):
        """smtpd_relay_restrictions is evaluated before smtpd_recipient_restrictions,
        and a permit in one list does not skip the other."""
        d = Daemon(extra="smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
                         "smtpd_recipient_restrictions = check_recipient_access inline:{ alice@example.test=REJECT }, "
                         "defer_if_permit\n")
        d.start()
        try:
            r = Raw(d.port)
            r.reply()
            r.cmd("EHLO c.example.org")
            r.cmd("MAIL FROM:<s@example.org>")
            code, text = r.cmd("RCPT TO:<victim@elsewhere.example>")
            self.assertEqual((code, "5.7.1" in text, "Relay access denied" in text), (554, True, True))
            code, text = r.cmd("RCPT TO:<alice@example.test>")   # relay list permits, recipient list rejects
            self.assertEqual(code, 554, text)
            self.assertIn("Recipient address rejected", text)
            code, text = r.cmd("RCPT TO:<bob@example.test>")     # defer_if_permit: a permit becomes 450
            self.assertEqual(code, 450, text)
            self.assertIn("defer_if_permit requested", text)
            r.close()
        finally:
            d.cleanup()

    def test_unsupported_restriction_refused_at_start(self):
        d = Daemon(extra="smtpd_recipient_restrictions = reject_rhsbl_reverse_client zen.example, "
                         "reject_unauth_destination\n")
        try:
            with self.assertRaises(AssertionError) as cm:
                d.start()
            self.assertIn("unsupported restriction \"reject_rhsbl_reverse_client\"", str(cm.exception))
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
