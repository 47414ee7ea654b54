"""tests/integration/test_scheduler.py: the queue's second half end to end,
the real daemon on loopback with smtplib and raw sessions: transport_maps
with error: (a report Python's email parses) and discard:, defer_transports
holding mail until `frugal queue flush DOMAIN` or ETRN asks for it (and only
that domain's mail), ETRN's replies, a success notice for NOTIFY=SUCCESS,
one delay warning per message even across a restart, and a multi-recipient
message whose delivered recipient is not delivered again after a SIGKILL."""
import email
import email.policy
import os
import re
import shutil
import smtplib
import subprocess
import unittest

from harness import Daemon, Raw, run_frugal, wait_for, SLOW

EXTRA = """relay_domains = relay.test, err.test, void.test, held.test, later.test
transport_maps = inline:{ { err.test = error:5.1.2 this domain takes no mail }, void.test=discard:dropped, held.test=smtp:[127.0.0.1]:9 }
defer_transports = smtp, relay
"""


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def dsn_fields(m):
    """The per-recipient field blocks of a multipart/report, as dicts."""
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    parts = m.get_payload()
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = parts[1].get_payload()
    return [dict(b.items()) for b in blocks[1:]]


class Base(unittest.TestCase):
    extra = EXTRA

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(extra=cls.extra).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def send(self, sender, rcpts, tag, rcpt_opts=()):
        body = "From: <%s>\r\nSubject: sched %s\r\nMessage-Id: <%s@example.test>\r\n\r\nbody %s\r\n" % (
            sender, tag, tag, tag)
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.ehlo("client.example.org")
            code, msg = s.mail(sender)
            self.assertEqual(code, 250)
            for r in rcpts:
                code, msg = s.rcpt(r, list(rcpt_opts))
                self.assertEqual(code, 250, msg)
            code, msg = s.data(body)
            self.assertEqual(code, 250, msg)
            return msg.decode().split()[-1]

    def mail_for(self, user, tag, count=1):
        def found():
            ms = [parse(m) for m in self.d.messages(self.d.maildir(user))]
            ms = [m for m in ms if tag.encode() in m.as_bytes()]
            return ms if len(ms) >= count else None
        return wait_for(found, 15 * SLOW, "%d message(s) about %s for %s" % (count, tag, user))

    def log_count(self, pattern):
        return len(re.findall(pattern, self.d.output()))


class Transports(Base):
    def test_error_transport_bounces_with_its_text(self):
        qid = self.send("alice@example.test", ["nobody@err.test"], "err1")
        self.d.wait_log("%s: to=<nobody@err.test>, relay=none" % qid)
        self.assertRegex(self.d.output(), r"frugal/error\[\d+\]: %s: to=<nobody@err.test>, relay=none, .*"
                         r"dsn=5\.1\.2, status=bounced \(this domain takes no mail\)" % qid)
        report = [m for m in self.mail_for("alice", "err1") if m.get_content_type() == "multipart/report"][0]
        f = dsn_fields(report)[0]
        self.assertEqual(f["Final-Recipient"], "rfc822; nobody@err.test")
        self.assertEqual(f["Action"], "failed")
        self.assertEqual(f["Status"], "5.1.2")
        self.assertIn("this domain takes no mail", f["Diagnostic-Code"])

    def test_discard_delivers_nowhere_and_removes(self):
        qid = self.send("alice@example.test", ["x@void.test"], "void1")
        self.d.wait_log("%s: removed" % qid)
        self.assertRegex(self.d.output(), r"frugal/discard\[\d+\]: %s: to=<x@void.test>, relay=none, .*"
                         r"dsn=2\.0\.0, status=sent \(dropped\)" % qid)
        self.assertEqual(self.d.messages(self.d.maildir("alice")) and
                         [m for m in self.d.messages(self.d.maildir("alice")) if b"void1" in m], [])

    def test_defer_transports_hold_until_domain_flush(self):
        held = self.send("alice@example.test", ["a@held.test"], "held1")
        later = self.send("alice@example.test", ["b@later.test"], "later1")
        self.d.wait_log("%s: to=<a@held.test>, relay=none" % held)
        self.d.wait_log("%s: to=<b@later.test>, relay=none" % later)
        out = self.d.output()
        self.assertRegex(out, r"%s: to=<a@held.test>, .*dsn=4\.3\.2, status=deferred \(deferred transport\)" % held)
        self.assertRegex(out, r"%s: to=<b@later.test>, .*status=deferred \(deferred transport\)" % later)
        self.assertNotIn("%s: to=<a@held.test>, relay=none, delay" % held + "x", out)
        r = run_frugal("queue", "-c", self.d.dir, "flush", "held.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.d.wait_log("flush: retrying deferred mail for held.test now")
        # the held domain is attempted (its next hop, port 9, refuses); the other is not
        wait_for(lambda: re.search(r"frugal/smtp\[\d+\]: %s: to=<a@held.test>, .*status=deferred "
                                   r"\(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:9: Connection refused\)" % held,
                                   self.d.output()),
                 15 * SLOW, "the flushed message attempted")
        self.assertNotRegex(self.d.output(), r"%s: to=<b@later.test>, .*Connection refused" % later)
        r = run_frugal("queue", "-c", self.d.dir, "flush", "not a domain")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("is not a domain name", r.stderr)

    def test_etrn(self):
        r = Raw(self.d.port)
        self.assertEqual(r.reply()[0], 220)
        code, lines = r.cmd("EHLO client.example.org")
        self.assertIn("ETRN", lines)
        qid = self.send("alice@example.test", ["e@held.test"], "etrn1")
        self.d.wait_log("%s: to=<e@held.test>" % qid)
        code, text = r.cmd("ETRN held.test")
        self.assertEqual(code, 250)
        self.assertIn("Queuing started", text)
        self.d.wait_log("flush: retrying deferred mail for held.test now")
        wait_for(lambda: re.search(r"%s: to=<e@held.test>, .*Connection refused" % qid, self.d.output()),
                 15 * SLOW, "the ETRN'd message attempted")
        self.assertEqual(r.cmd("ETRN example.org")[0], 459)      # not a domain we relay for
        self.assertEqual(r.cmd("ETRN")[0], 500)
        self.assertEqual(r.cmd("ETRN #queue")[0], 501)
        self.assertEqual(r.cmd("ETRN @held.test")[0], 250)       # and its subdomains
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.test>")[0], 250)
        self.assertEqual(r.cmd("ETRN held.test")[0], 503)        # not inside a transaction
        r.close()


class Pflogsumm(Base):
    """The log's lines as pflogsumm (Debian's) counts them: received, delivered, deferred,
    bounced and rejected, from the daemon's own log (syslog's layout, host included)."""

    def test_pflogsumm_counts(self):
        if shutil.which("pflogsumm") is None:
            self.skipTest("pflogsumm is not installed (contrib/deps.sh test installs it)")
        ok = self.send("alice@example.test", ["bob@example.test"], "pf1")
        bounced = self.send("alice@example.test", ["nobody@err.test"], "pf2")
        held = self.send("alice@example.test", ["h@held.test"], "pf3")
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.ehlo("client.example.org")
            s.mail("alice@example.test")
            self.assertEqual(s.rcpt("ghost@example.test")[0], 550)
        self.d.wait_log("%s: removed" % ok)
        self.d.wait_log("%s: sender non-delivery notification" % bounced)
        self.d.wait_log("%s: to=<h@held.test>" % held)
        self.mail_for("alice", "pf2")        # the report delivered too
        log = os.path.join(self.d.dir, "stderr")
        r = subprocess.run(["pflogsumm", "--syslog-name=frugal", log], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        totals = dict((m.group(2).strip(), int(m.group(1)))
                      for m in re.finditer(r"(?m)^\s+(\d+)\s+(received|delivered|deferred|bounced|rejected)", r.stdout))
        self.assertEqual(totals["received"], 3, r.stdout[:800])
        self.assertEqual(totals["delivered"], 2, r.stdout[:800])   # bob, and the report to alice
        self.assertEqual(totals["deferred"], 1, r.stdout[:800])
        self.assertEqual(totals["bounced"], 1, r.stdout[:800])
        self.assertEqual(totals["rejected"], 1, r.stdout[:800])


class Notices(Base):
    extra = EXTRA + "delay_warning_time = 1s\n"

    def test_success_notice_when_asked(self):
        qid = self.send("alice@example.test", ["bob@example.test"], "ok1", rcpt_opts=["NOTIFY=SUCCESS,FAILURE"])
        self.mail_for("bob", "ok1")
        self.d.wait_log("%s: sender delivery status notification" % qid)
        report = [m for m in self.mail_for("alice", "ok1") if m.get_content_type() == "multipart/report"][0]
        f = dsn_fields(report)[0]
        self.assertEqual(f["Action"], "delivered")
        self.assertEqual(f["Status"], "2.0.0")
        self.assertEqual(f["Final-Recipient"], "rfc822; bob@example.test")

    def test_no_success_notice_unless_asked(self):
        qid = self.send("alice@example.test", ["bob@example.test"], "ok2")
        self.mail_for("bob", "ok2")
        self.d.wait_log("%s: removed" % qid)
        self.assertNotIn("%s: sender delivery status notification" % qid, self.d.output())

    def test_one_delay_warning_even_across_restart(self):
        qid = self.send("alice@example.test", ["w@held.test"], "delay1")
        report = [m for m in self.mail_for("alice", "delay1") if m.get_content_type() == "multipart/report"][0]
        f = dsn_fields(report)[0]
        self.assertEqual(f["Action"], "delayed")
        self.assertEqual(f["Final-Recipient"], "rfc822; w@held.test")
        attempts = r"%s: to=<w@held.test>, .*status=deferred" % qid
        n = self.log_count(attempts)
        wait_for(lambda: self.log_count(attempts) >= n + 2, 20 * SLOW, "two more attempts")
        self.assertEqual(self.log_count(r"frugal/bounce\[\d+\]: %s: sender delay notification" % qid), 1)
        self.d.stop()
        self.d.start()
        n = self.log_count(attempts)
        wait_for(lambda: self.log_count(attempts) >= n + 2, 20 * SLOW, "two more attempts after the restart")
        # the log may start afresh with the daemon: the mailbox is the witness
        self.assertEqual(len(self.mail_for("alice", "delay1")), 1)


class MultiRecipientCrash(Base):
    def test_delivered_recipient_not_repeated_after_kill(self):
        qid = self.send("carol@virt.test", ["alice@example.test", "m@held.test"], "multi1")
        self.mail_for("alice", "multi1")
        attempts = r"%s: to=<m@held.test>, .*status=deferred" % qid
        wait_for(lambda: self.log_count(attempts) >= 1, 15 * SLOW, "the held recipient deferred")
        show = run_frugal("queue", "-c", self.d.dir, "show", qid)
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertRegex(show.stdout, r"(?m)^.*alice@example.test.*(delivered|D\b)")
        self.assertEqual(len(re.findall(r"frugal/local\[\d+\]: %s: to=<alice@example.test>, .*status=sent" % qid,
                                        self.d.output())), 1)
        self.d.kill9()
        self.d.start()
        run_frugal("queue", "-c", self.d.dir, "flush")
        n = self.log_count(attempts)
        wait_for(lambda: self.log_count(attempts) >= n + 2, 20 * SLOW, "attempts after the restart")
        self.assertEqual(len([m for m in self.d.messages(self.d.maildir("alice")) if b"multi1" in m]), 1)


if __name__ == "__main__":
    unittest.main()
