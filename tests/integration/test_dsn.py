"""tests/integration/test_dsn.py: DSN (RFC 3461) and delivery status
notifications (RFC 3464) end to end: the real daemon on loopback, smtplib
and raw sessions. EHLO advertises DSN; RET/ENVID/NOTIFY/ORCPT get Postfix's
replies and are kept in the envelope (`frugal queue show`); a recipient
bounced after acceptance (an alias to an unknown virtual user) gets a
report in the sender's Maildir that Python's email parses as
multipart/report; NOTIFY=NEVER gives none; a bounce of a bounce goes to the
postmaster from double-bounce, and a failure of that is discarded; a queue
file of the previous format (FRUGAL-Q2) is delivered after the upgrade.
The builder's delay and success notices (which the scheduler triggers) are
parsed here from files the unit test test_bounce writes."""
import email
import email.policy
import os
import re
import smtplib
import subprocess
import tempfile
import unittest

from harness import Daemon, Raw, run_frugal, wait_for, SLOW

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_BOUNCE = os.path.join(HERE, "..", "..", "build", "tests", "test_bounce")

ALIASES = ("postmaster: alice\nghost: nobody@virt.test\nroot: alice\n")
MSG = ("From: sender <alice@example.test>\r\nTo: ghost@example.test\r\nSubject: dsn probe %s\r\n"
       "Message-Id: <%s@example.test>\r\n\r\nthe body of %s\r\n")


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def report_parts(m):
    """(text part, list of delivery-status field blocks, returned part) of a multipart/report."""
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    assert m.get_param("report-type") == "delivery-status"
    parts = m.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = parts[1].get_payload()   # email: one Message per field block
    returned = parts[2] if len(parts) > 2 else None
    return parts[0], blocks, returned


class DSNBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # relay.test's mail is held (defer_transports) so that it stays queued to be shown
        cls.d = Daemon("defer_transports = relay\n", aliases=ALIASES).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def raw(self):
        r = Raw(self.d.port)
        self.assertEqual(r.reply()[0], 220)
        self.assertEqual(r.cmd("EHLO client.example.org")[0], 250)
        return r

    def send(self, sender, rcpts, tag, mail_opts=(), rcpt_opts=()):
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.ehlo("client.example.org")
            s.sendmail(sender, rcpts, MSG % (tag, tag, tag), mail_options=list(mail_opts),
                       rcpt_options=list(rcpt_opts))

    def reports_for(self, user, tag, count=1):
        """The messages in user's Maildir that mention tag."""
        def found():
            ms = [parse(m) for m in self.d.messages(self.d.maildir(user))]
            ms = [m for m in ms if tag.encode() in m.as_bytes()]
            return ms if len(ms) >= count else None
        return wait_for(found, 15, "%d report(s) about %s for %s" % (count, tag, user))


class Protocol(DSNBase):
    def test_ehlo_advertises_dsn(self):
        r = Raw(self.d.port)
        r.reply()
        code, text = r.cmd("EHLO client.example.org")
        self.assertEqual(code, 250)
        self.assertRegex(text, r"(?m)^250[- ]DSN\r?$")
        r.cmd("QUIT")

    def test_good_parameters(self):
        r = self.raw()
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.test> RET=HDRS ENVID=QQ+2B1")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE,DELAY "
                               "ORCPT=rfc822;Bob+2BX@example.test")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test> NOTIFY=NEVER")[0], 250)
        self.assertEqual(r.cmd("RSET")[0], 250)
        self.assertEqual(r.cmd("MAIL FROM:<> ret=full")[0], 250)
        r.cmd("QUIT")

    def test_bad_parameters(self):
        r = self.raw()
        cases_mail = [
            ("MAIL FROM:<a@example.org> RET=SOME", "501 5.5.4 Bad RET parameter syntax"),
            ("MAIL FROM:<a@example.org> RET=FULL RET=HDRS", "501 5.5.4 Bad RET parameter syntax"),
            ("MAIL FROM:<a@example.org> ENVID=a+2", "501 5.5.4 Bad ENVID parameter syntax"),
            ("MAIL FROM:<a@example.org> ENVID=" + "x" * 101, "501 5.5.4 Bad ENVID parameter syntax"),
            ("MAIL FROM:<a@example.org> ENVID=a ENVID=b", "501 5.5.4 Bad ENVID parameter syntax"),
            ("MAIL FROM:<a@example.org> NOTIFY=NEVER", "555 5.5.4 Unsupported option"),
        ]
        for line, want in cases_mail:
            code, text = r.cmd(line)
            self.assertEqual(text.strip(), want, line)
        self.assertEqual(r.cmd("MAIL FROM:<a@example.org>")[0], 250)
        cases_rcpt = [
            ("RCPT TO:<alice@example.test> NOTIFY=NEVER,SUCCESS", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
            ("RCPT TO:<alice@example.test> NOTIFY=SOMETIMES", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
            ("RCPT TO:<alice@example.test> NOTIFY=DELAY NOTIFY=DELAY",
             "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
            ("RCPT TO:<alice@example.test> ORCPT=alice@example.test", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
            ("RCPT TO:<alice@example.test> ORCPT=rfc822;a+ZZ", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
            ("RCPT TO:<alice@example.test> ORCPT=rfc822;" + "x" * 500,
             "501 5.5.4 Error: Bad ORCPT parameter syntax"),
            ("RCPT TO:<alice@example.test> ORCPT=rfc822;a ORCPT=rfc822;b",
             "501 5.5.4 Error: Bad ORCPT parameter syntax"),
            ("RCPT TO:<alice@example.test> RET=FULL", "555 5.5.4 Unsupported option"),
        ]
        for line, want in cases_rcpt:
            code, text = r.cmd(line)
            self.assertEqual(text.strip(), want, line)
        r.cmd("QUIT")

    def test_envelope_keeps_dsn(self):
        # relay.test is held (defer_transports = relay): the message stays queued to be shown
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.ehlo("client.example.org")
            s.mail("alice@example.test", ["RET=HDRS", "ENVID=keep+2Bme"])
            self.assertEqual(s.rcpt("far@relay.test", ["NOTIFY=SUCCESS,DELAY",
                                                        "ORCPT=rfc822;Far+2BX@relay.test"])[0], 250)
            self.assertEqual(s.rcpt("other@relay.test", ["NOTIFY=NEVER"])[0], 250)
            self.assertEqual(s.rcpt("third@relay.test")[0], 250)
            code, text = s.data(MSG % ("keep", "keep", "keep"))
            self.assertEqual(code, 250)
        qid = re.search(rb"queued as ([0-9A-F]+)", text).group(1).decode()
        out = run_frugal("queue", "-c", self.d.dir, "show", qid)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("dsn_ret: HDRS\n", out.stdout)
        self.assertIn("dsn_envid: keep+me\n", out.stdout)
        self.assertIn("recipient: <far@relay.test> orig_to=<far@relay.test> notify=SUCCESS,DELAY "
                      "orcpt=rfc822;Far+X@relay.test", out.stdout)
        self.assertIn("recipient: <other@relay.test> orig_to=<other@relay.test> notify=NEVER (", out.stdout)
        self.assertIn("recipient: <third@relay.test> orig_to=<third@relay.test> (", out.stdout)
        run_frugal("queue", "-c", self.d.dir, "delete", qid)


class Reports(DSNBase):
    def test_failure_report_full_by_default(self):
        self.send("alice@example.test", ["ghost@example.test"], "tagfull1",
                  mail_opts=["ENVID=env-full"], rcpt_opts=["ORCPT=rfc822;Ghost@example.test"])
        m = self.reports_for("alice", "env-full")[0]
        self.assertEqual(m["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(m["To"], "alice@example.test")
        text, blocks, returned = report_parts(m)
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "env-full")
        self.assertEqual(blocks[0]["Reporting-MTA"], "dns; mx.example.test")
        r = blocks[1]
        self.assertEqual(r["Final-Recipient"], "rfc822; nobody@virt.test")
        self.assertEqual(r["Original-Recipient"], "rfc822;Ghost@example.test")
        self.assertEqual(r["Action"], "failed")
        self.assertEqual(r["Status"], "5.1.1")
        self.assertIn("unknown user", r["Diagnostic-Code"])
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        self.assertIn(b"the body of tagfull1", returned.as_bytes())
        self.d.wait_log("sender non-delivery notification: ")

    def test_failure_report_hdrs(self):
        self.send("alice@example.test", ["ghost@example.test"], "taghdrs1",
                  mail_opts=["RET=HDRS", "ENVID=env-hdrs"], rcpt_opts=["NOTIFY=FAILURE"])
        m = self.reports_for("alice", "env-hdrs")[0]
        _, blocks, returned = report_parts(m)
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        self.assertIn(b"Subject: dsn probe taghdrs1", returned.as_bytes())
        self.assertNotIn(b"the body of taghdrs1", m.as_bytes())
        self.assertEqual(blocks[1]["Original-Recipient"], "rfc822; ghost@example.test")

    def send_id(self, sender, rcpt, tag, mail_opts=(), rcpt_opts=()):
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.ehlo("client.example.org")
            s.mail(sender, list(mail_opts))
            self.assertEqual(s.rcpt(rcpt, list(rcpt_opts))[0], 250)
            code, text = s.data(MSG % (tag, tag, tag))
            self.assertEqual(code, 250)
        return re.search(rb"queued as ([0-9A-F]+)", text).group(1).decode()

    def test_notify_never_no_report(self):
        qid = self.send_id("alice@example.test", "ghost@example.test", "never1",
                           mail_opts=["ENVID=env-never"], rcpt_opts=["NOTIFY=NEVER"])
        # bounced and removed all the same: "nothing to send" is done, not a reason to retry
        self.d.wait_log("%s: removed" % qid)
        self.assertTrue(self.d.log_has("%s: to=<nobody@virt.test>, orig_to=<ghost@example.test>" % qid))
        # the report's log line comes when it is durable, before the marks and the removal
        self.assertFalse(self.d.log_has("%s: sender non-delivery notification" % qid))
        ms = [parse(m) for m in self.d.messages(self.d.maildir("alice"))]
        self.assertFalse([m for m in ms if b"env-never" in m.as_bytes()], "a report despite NOTIFY=NEVER")

    def test_double_bounce(self):
        # a bounce (from <>) that fails: once to the postmaster (alice) from double-bounce
        self.send("", ["ghost@example.test"], "dbl1")
        m = self.reports_for("alice", "dbl1")[0]
        self.assertEqual(m["Subject"], "Postmaster Copy: Undelivered Mail")
        self.assertEqual(m["Return-Path"], "<double-bounce@mx.example.test>")
        _, blocks, returned = report_parts(m)
        self.assertEqual(blocks[1]["Action"], "failed")
        self.d.wait_log("postmaster non-delivery notification: ")
        # a failure of mail from double-bounce is discarded, never notified again
        qid = self.send_id("double-bounce@mx.example.test", "ghost@example.test", "dbl2")
        self.d.wait_log("%s: removed" % qid)
        self.assertTrue(self.d.log_has("warning: %s: undeliverable postmaster notification discarded" % qid))
        self.assertFalse(self.d.log_has("%s: postmaster non-delivery notification" % qid))
        ms = [parse(m) for m in self.d.messages(self.d.maildir("alice"))]
        self.assertFalse([m for m in ms if b"dbl2" in m.as_bytes()], "a notice about a failed double bounce")


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


class Upgrade(unittest.TestCase):
    """A queue written by the previous version (FRUGAL-Q2) is delivered after the upgrade."""

    def test_q2_file_delivered(self):
        d = Daemon()
        try:
            qid = "6B11AA5F5BE2F"
            body = b"Subject: from the old queue\n\nold body\n"
            head = (b"FRUGAL-Q2\nI %s\nA 1700000000.000001\nS old@example.org\nC old[127.0.0.1]\n"
                    b"R - alice@example.test\nO alice@example.test\n" % qid.encode())
            tmpl = head + b"L 00000000000000000000\nK 0000000000000000\nE 1\n" + body
            s = b"%016x" % fnv1a(tmpl)
            data = head + b"L %020d\nK %s\nE 1\n" % (len(body), s) + body
            os.makedirs(os.path.join(d.queue, "committed"), exist_ok=True)
            with open(os.path.join(d.queue, "committed", qid), "wb") as f:
                f.write(data)
            d.start()
            m = d.wait_messages(d.maildir("alice"), 1)[0]
            self.assertIn(b"old body", m)
            d.wait_log("%s: removed" % qid)
            self.assertFalse(d.log_has("checksum mismatch"))
        finally:
            d.cleanup()


@unittest.skipUnless(os.path.exists(TEST_BOUNCE), "build/tests/test_bounce not built")
class BuilderReports(unittest.TestCase):
    """The builder's reports (all kinds) as Python's email reads them."""

    @classmethod
    def setUpClass(cls):
        cls.out = tempfile.mkdtemp(prefix="frugal-dsn-")
        r = subprocess.run([TEST_BOUNCE], env=dict(os.environ, FRUGAL_DSN_OUT=cls.out, CK_FORK="no"),
                           capture_output=True, text=True, timeout=60 * SLOW)
        assert r.returncode == 0, r.stdout + r.stderr

    def load(self, name):
        with open(os.path.join(self.out, name + ".eml"), "rb") as f:
            return parse(f.read())

    def test_every_report_is_a_delivery_status_report(self):
        names = [n[:-4] for n in os.listdir(self.out) if n.endswith(".eml")]
        self.assertGreaterEqual(len(names), 8)
        for n in names:
            m = self.load(n)
            _, blocks, _ = report_parts(m)
            self.assertEqual(blocks[0]["Reporting-MTA"], "dns; mx.example.net", n)
            self.assertTrue(blocks[0]["Arrival-Date"], n)
            for b in blocks[1:]:
                self.assertTrue(b["Final-Recipient"].startswith("rfc822; "), n)
                self.assertIn(b["Action"], ("failed", "delayed", "delivered", "relayed", "expanded"), n)
                self.assertRegex(b["Status"], r"^[245]\.\d{1,3}\.\d{1,3}$", n)

    def test_delay(self):
        m = self.load("delay")
        self.assertEqual(m["Subject"], "Delayed Mail (still being retried)")
        text, blocks, returned = report_parts(m)
        self.assertIn("THIS IS A WARNING ONLY", text.get_payload())
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "dly")
        self.assertEqual(len(blocks), 2)     # NOTIFY=FAILURE recipient left out
        self.assertEqual(blocks[1]["Action"], "delayed")
        self.assertEqual(blocks[1]["Status"], "4.4.1")
        self.assertEqual(blocks[1]["Original-Recipient"], "rfc822;orig-d@example.org")
        self.assertTrue(blocks[1]["Will-Retry-Until"])
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")

    def test_success(self):
        m = self.load("success")
        self.assertEqual(m["Subject"], "Successful Mail Delivery Report")
        _, blocks, returned = report_parts(m)
        self.assertEqual([b["Action"] for b in blocks[1:]], ["delivered", "relayed"])
        self.assertEqual([b["Status"] for b in blocks[1:]], ["2.0.0", "2.0.0"])
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "succ")

    def test_failure_kinds(self):
        _, blocks, returned = report_parts(self.load("failure_default"))
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        self.assertNotIn("Original-Envelope-Id", blocks[0])
        _, blocks, returned = report_parts(self.load("failure_hdrs"))
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "ENV-42 x")
        self.assertEqual(len(blocks), 2)     # NEVER and SUCCESS-only recipients left out
        self.assertEqual(blocks[1]["Original-Recipient"], "rfc822;A+B@Example.ORG")
        _, _, returned = report_parts(self.load("failure_full_bounded"))
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        m = self.load("double_bounce")
        self.assertEqual(m["To"], "postmaster@mx.example.net")


if __name__ == "__main__":
    unittest.main()
