"""tests/integration/test_addresses.py: address handling against the real
daemon (smtplib over loopback): recipient_delimiter (user+tag delivered to
user's Maildir, Delivered-To: keeps the tag; unknown+tag refused 550), a
catch-all virtual alias, canonical maps on the envelope and the headers
(the delivered message and the log), masquerade_domains, and `frugal check` / `serve`
refusing a |command alias with the table and the key named."""
import os
import smtplib
import unittest

from harness import Daemon, run_frugal, wait_for, SLOW


def send(d, sender, rcpts, subject, headers="From: x@example.org\r\nTo: someone@example.test\r\n"):
    """One message whose Subject: tells it apart (the test class shares its mailboxes)."""
    msg = "%sSubject: %s\r\n\r\nbody\r\nFrom: alice@example.test in the body\r\n" % (headers, subject)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
        s.ehlo("client.example.org")
        return s.sendmail(sender, rcpts, msg)


def arrived(d, maildir, subject, count=1):
    """The messages in maildir with this Subject:, once there are `count`; more fail."""
    tag = ("Subject: %s\n" % subject).encode()
    msgs = wait_for(lambda: (lambda v: v if len(v) >= count else None)(
        [m for m in d.messages(maildir) if tag in m]), 15 * SLOW, "%s in %s" % (subject, maildir))
    if len(msgs) > count:
        raise AssertionError("%s delivered %d times to %s" % (subject, len(msgs), maildir))
    return msgs


class Addresses(unittest.TestCase):
    extra = (
        "recipient_delimiter = +\n"
        "virtual_alias_maps = inline:{ info@virt.test=carol@virt.test, sales@catch.test=bob@example.test,"
        " @catch.test=alice@example.test }\n"
        "sender_canonical_maps = inline:{ alice@example.test=alice.smith@example.test }\n"
        "recipient_canonical_maps = inline:{ boss@example.test=bob@example.test }\n"
        "masquerade_domains = !lab.example.test, example.test\n")

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(extra=cls.extra).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def test_delimiter_delivered_to_user(self):
        send(self.d, "x@example.org", ["alice+news@example.test"], "tagged")
        m = arrived(self.d, self.d.maildir("alice"), "tagged")[0]
        self.assertIn(b"Delivered-To: alice+news@example.test\n", m)
        self.assertFalse(os.path.exists(self.d.maildir("alice+news")))
        self.d.wait_log("to=<alice+news@example.test>")
        self.d.wait_log("status=sent")

    def test_delimiter_virtual_mailbox(self):
        send(self.d, "x@example.org", ["dave+list@virt.test"], "vtagged")
        m = arrived(self.d, self.d.vmaildir("virt.test/dave/"), "vtagged")[0]
        self.assertIn(b"Delivered-To: dave+list@virt.test\n", m)

    def test_unknown_with_tag_rejected(self):
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.ehlo("client.example.org")
            s.mail("x@example.org")
            code, text = s.rcpt("nobody+tag@example.test")
            self.assertEqual(code, 550)
            self.assertIn(b"5.1.1", text)
            self.assertEqual(s.rcpt("bob+tag@example.test")[0], 250)
        self.d.wait_log("reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nobody+tag@example.test>")

    def test_catch_all(self):
        # the exact address first, the domain's catch-all for everyone else
        send(self.d, "x@example.org", ["sales@catch.test", "anyone@catch.test"], "catchall")
        self.assertIn(b"Delivered-To: bob@example.test\n", arrived(self.d, self.d.maildir("bob"), "catchall")[0])
        self.assertIn(b"Delivered-To: alice@example.test\n",
                      arrived(self.d, self.d.maildir("alice"), "catchall")[0])
        self.d.wait_log("to=<alice@example.test>, orig_to=<anyone@catch.test>")

    def test_canonical_and_masquerade(self):
        # sender canonical: visible as Return-Path and in qmgr's from=
        long_to = "To: " + ",\r\n\t".join("user%d@host.example.test" % i for i in range(300)) + "\r\n"
        send(self.d, "alice@example.test", ["boss@example.test"], "canonical",
             headers="From: Alice <alice@example.test>\r\nReply-To: (desk) alice@example.test\r\n"
                     "To: \"Boss, The\" <boss@example.test>,\r\n\tjoe@host.example.test\r\n"
                     "Cc: undisclosed:;\r\nX-Other: alice@example.test\r\n" + long_to)
        m = arrived(self.d, self.d.maildir("bob"), "canonical")[0]
        self.assertIn(b"Return-Path: <alice.smith@example.test>\n", m)
        # headers (the client is local: Postfix's local_header_rewrite_clients): sender headers get
        # sender_canonical_maps, recipient headers recipient_canonical_maps, both masquerading
        self.assertIn(b"From: Alice <alice.smith@example.test>\n", m)
        self.assertIn(b"Reply-To: (desk) alice.smith@example.test\n", m)
        self.assertIn(b"To: \"Boss, The\" <bob@example.test>,\n\tjoe@example.test\n", m)
        self.assertIn(b"Cc: undisclosed:;\n", m)
        self.assertIn(b"X-Other: alice@example.test\n", m)                 # not an address header
        self.assertIn(b"From: alice@example.test in the body\n", m)       # never the body
        # over the hold (4 KiB): passed as it came, not cut
        self.assertIn(long_to.replace("\r\n", "\n").encode(), m)
        self.assertIn(b"Delivered-To: bob@example.test\n", m)
        # the recipient as given stays in the queue file: orig_to= in the delivery log
        self.d.wait_log("to=<bob@example.test>, orig_to=<boss@example.test>")
        self.d.wait_log("from=<alice.smith@example.test>")

    def test_masquerade_sender(self):
        send(self.d, "joe@host.example.test", ["carol@virt.test"], "masq1")
        send(self.d, "ann@box.lab.example.test", ["carol@virt.test"], "masq2")
        carol = self.d.vmaildir("virt.test/carol/")
        self.assertIn(b"Return-Path: <joe@example.test>\n", arrived(self.d, carol, "masq1")[0])
        # the exception (!lab.example.test) and its subdomains stay as they are
        self.assertIn(b"Return-Path: <ann@box.lab.example.test>\n", arrived(self.d, carol, "masq2")[0])
        self.d.wait_log("from=<joe@example.test>")


class RefusedAliases(unittest.TestCase):
    def test_check_and_serve_refuse_command_alias(self):
        d = Daemon(aliases="postmaster: alice\nprog: alice, \"|/usr/bin/procmail -d x\"\n")
        try:
            r = run_frugal("check", "-c", d.dir)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            out = r.stdout + r.stderr
            self.assertIn("alias_maps: cdb:%s/aliases" % d.dir, out)
            self.assertIn('key "prog"', out)
            self.assertIn("mail to command is restricted", out)
            # serve refuses to start with the same error (a configuration error, not a bounce later)
            d.start(wait=False)
            d.proc.wait(timeout=30 * SLOW)
            self.assertNotEqual(d.proc.returncode, 0)
            self.assertIn('key "prog"', d.output())
        finally:
            d.cleanup()

    def test_check_refuses_file_alias(self):
        d = Daemon(aliases="postmaster: alice\narchive: /var/mail/archive\n")
        try:
            r = run_frugal("check", "-c", d.dir)
            self.assertEqual(r.returncode, 1)
            self.assertIn('key "archive"', r.stdout + r.stderr)
            self.assertIn("mail to file is restricted", r.stdout + r.stderr)
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
