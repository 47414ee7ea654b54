"""tests/integration/test_spf.py: check_spf (smtpd/spf.c, smtpd/restrict.c)
against SPF records a loopback DNS server serves (dnsserver.py): pass by
ip4, a, mx and include; fail rejected 550 5.7.23; softfail, neutral and none
accepted with their Received-SPF: header in the delivered message; permerror
for a syntax error, two records, an include chain over the 10-lookup limit
and a third void lookup (each with a control just inside the limit);
temperror (SERVFAIL) deferred 451 4.4.3 and accepted on retry once DNS
answers; the HELO identity for a null sender; one evaluation per transaction
(queries counted at the server, answers with TTL 0 so the resolver's cache
does not hide a second one); a session that waits for a slow SPF answer
while another completes a whole transaction; mynetworks clients not checked.

libspf2 passes every loopback client (as pyspf does), and the tests connect
over loopback: FRUGAL_SPF_CLIENT_ADDR (tests only) makes the daemon evaluate
192.0.2.10 instead. One test shows the loopback pass without it.
"""
import email
import os
import shutil
import smtplib
import tempfile
import threading
import time
import unittest

from dnsserver import DNSServer
from harness import Daemon, Raw, wait_for, SLOW, alloc_sweep, smtp_outcome, race_slow_lookup

IP = "192.0.2.10"

RECORDS = {
    "pass-ip4.test": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")],
    "pass-a.test": [("TXT", "v=spf1 a -all"), ("A", IP)],
    "pass-mx.test": [("TXT", "v=spf1 mx -all"), ("MX", (10, "mx.pass-mx.test"))],
    "mx.pass-mx.test": [("A", IP)],
    "pass-include.test": [("TXT", "v=spf1 include:inc.pass-include.test -all")],
    "pass-ptr.test": [("TXT", "v=spf1 ptr -all")],
    "10.2.0.192.in-addr.arpa": [("PTR", "host.pass-ptr.test")],
    "host.pass-ptr.test": [("A", IP)],
    "inc.pass-include.test": [("TXT", "v=spf1 ip4:192.0.2.10 -all")],
    "fail.test": [("TXT", "v=spf1 ip4:198.51.100.1 -all"), ("TXT", "google-site-verification=abc")],
    "softfail.test": [("TXT", "v=spf1 ip4:198.51.100.1 ~all")],
    "neutral.test": [("TXT", "v=spf1 ?all")],
    "none.test": [("A", "198.51.100.7"), ("TXT", "not an spf record")],
    "syntax.test": [("TXT", "v=spf1 ip4:not-an-address -all")],
    "two.test": [("TXT", "v=spf1 ip4:192.0.2.10 -all"), ("TXT", "v=spf1 -all")],
    "void.test": [("TXT", "v=spf1 a:nx1.void.test a:nx2.void.test a:nx3.void.test ip4:192.0.2.10 -all")],
    "void2.test": [("TXT", "v=spf1 a:nx1.void.test a:nx2.void.test ip4:192.0.2.10 -all")],
    "helo-pass.test": [("TXT", "v=spf1 ip4:192.0.2.10 -all")],
    "v6.test": [("TXT", "v=spf1 ip6:2001:db8::/32 -all")],
    # macros: a short exists term (the client's address in the name), and one too long for libspf2
    "macro.test": [("TXT", "v=spf1 exists:%{i}.ok.macro.test -all")],
    "192.0.2.10.ok.macro.test": [("A", "127.0.0.2")],
    "longmacro.test": [("TXT", "v=spf1 exists:%{i}." + "a%{d}" * 30 + ".x.test ip4:192.0.2.10 -all")],
    "v6a.test": [("TXT", "v=spf1 a:host.v6a.test -all")],
    "host.v6a.test": [("A", IP), ("AAAA", "2001:db8::10")],
    "helo-fail.test": [("TXT", "v=spf1 -all")],
    "slow.test": [("TXT", "v=spf1 ip4:192.0.2.10 -all")],
    "gone.test": [("TXT", "v=spf1 include:inc.gone.test -all")],
    "sweep.test": [("TXT", "v=spf1 include:inc.sweep.test -all", 0)],
    "inc.sweep.test": [("TXT", "v=spf1 ip4:192.0.2.10 -all", 0)],
    "inc.gone.test": [("TXT", "v=spf1 ip4:192.0.2.10 -all")],
    # never cached by frugal's resolver: every evaluation is a query the server counts
    "once.test": [("TXT", "v=spf1 include:inc.once.test -all", 0)],
    "inc.once.test": [("TXT", "v=spf1 ip4:192.0.2.10 -all", 0)],
}
# include chains: ok0 -> ok1 -> ... -> ok10 is 10 DNS mechanisms (the limit), over0 -> ... -> over11 is 11
for i in range(10):
    RECORDS["ok%d.chain.test" % i] = [("TXT", "v=spf1 include:ok%d.chain.test -all" % (i + 1))]
RECORDS["ok10.chain.test"] = [("TXT", "v=spf1 ip4:192.0.2.10 -all")]
for i in range(11):
    RECORDS["over%d.chain.test" % i] = [("TXT", "v=spf1 include:over%d.chain.test -all" % (i + 1))]
RECORDS["over11.chain.test"] = [("TXT", "v=spf1 ip4:192.0.2.10 -all")]

RESTRICT = ("smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, "
            "reject_unauth_destination, check_spf\n")


def header(msg, name):
    return email.message_from_bytes(msg).get_all(name) or []


class SPF(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = DNSServer(RECORDS, servfail={"servfail.test"}, delay={"slow.test": 3, "gone.test": 2}).start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def daemon(self, extra=RESTRICT, spf_addr=IP):
        env = {"FRUGAL_SPF_CLIENT_ADDR": spf_addr} if spf_addr else {}
        d = Daemon(extra, dns=self.dns, env=env).start()
        self.addCleanup(d.cleanup)
        return d

    def smtp(self, d, helo="client.example.test"):
        c = smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW)
        self.addCleanup(c.close)
        c.ehlo(helo)
        return c

    def rcpt(self, c, sender, rcpt="alice@example.test"):
        self.assertEqual(c.mail(sender)[0], 250)
        code, text = c.rcpt(rcpt)
        return code, text.decode()

    def test_pass_fail_and_the_accepted_results(self):
        d = self.daemon()
        c = self.smtp(d)
        for dom in ("pass-ip4.test", "pass-a.test", "pass-mx.test", "pass-include.test", "pass-ptr.test"):
            self.assertEqual(self.rcpt(c, "a@" + dom), (250, "2.1.5 Ok"), dom)
            c.rset()
            d.wait_log("spf: Pass identity=mailfrom domain=%s client-ip=%s" % (dom, IP))
        code, text = self.rcpt(c, "a@fail.test")
        self.assertEqual(code, 550)
        self.assertEqual(text, "5.7.23 <alice@example.test>: Recipient address rejected: Message rejected due to: "
                               "SPF fail - not authorized. Please see http://www.open-spf.org/Why?s=mfrom;"
                               "id=a@fail.test;ip=192.0.2.10;r=mx.example.test")
        c.rset()
        d.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.7.23 <alice@example.test>: "
                   "Recipient address rejected: Message rejected due to: SPF fail")
        # accepted, each with its header in the delivered message (above our Received:)
        for n, (dom, result) in enumerate((("softfail.test", "Softfail"), ("neutral.test", "Neutral"),
                                           ("none.test", "None"), ("syntax.test", "Permerror"),
                                           ("pass-include.test", "Pass"))):
            c.sendmail("a@" + dom, ["bob@example.test"], b"Subject: %s\r\n\r\nbody\r\n" % dom.encode())
            msgs = d.wait_messages(d.maildir("bob"), n + 1)
            msg = [m for m in msgs if b"Subject: " + dom.encode() in m][0]
            spf = header(msg, "Received-SPF")
            self.assertEqual(len(spf), 1, msg)
            self.assertTrue(spf[0].startswith("%s (mailfrom) identity=mailfrom; client-ip=%s;" % (result, IP)), spf)
            self.assertIn('envelope-from="a@%s"' % dom, spf[0])
            self.assertIn("helo=client.example.test", spf[0])
            self.assertIn("receiver=mx.example.test", spf[0])
            self.assertLess(msg.index(b"Received-SPF:"), msg.index(b"Received: from"), msg)
            if result == "Permerror":
                self.assertIn("problem=", spf[0])
        c.quit()

    def test_permerrors_and_their_limits(self):
        d = self.daemon()
        c = self.smtp(d)
        cases = [("syntax.test", "Permerror"), ("two.test", "Permerror"),
                 ("over0.chain.test", "Permerror"), ("ok0.chain.test", "Pass"),
                 ("void.test", "Permerror"), ("void2.test", "Pass"),
                 ("longmacro.test", "Permerror"), ("macro.test", "Pass")]
        for dom, result in cases:
            self.assertEqual(self.rcpt(c, "a@" + dom)[0], 250, dom)   # PermError_reject = False
            c.rset()
            d.wait_log("spf: %s identity=mailfrom domain=%s " % (result, dom))
        self.assertTrue(d.log_has("domain=void.test client-ip=%s client=unknown[127.0.0.1] lookups=4 "
                                  "problem=more than 2 void lookups" % IP), d.output())
        d.wait_log("domain=longmacro.test client-ip=%s client=unknown[127.0.0.1] lookups=1 "
                   "problem=an SPF record with a macro term over 128 characters (refused)" % IP)
        self.assertEqual(self.dns.count("192.0.2.10.ok.macro.test", "A"), 1)
        # nothing past the 10th include was asked; the last one inside the limit was
        self.assertEqual(self.dns.count("over11.chain.test", "TXT"), 0)
        self.assertEqual(self.dns.count("ok10.chain.test", "TXT"), 1)
        self.assertEqual(self.dns.count("nx3.void.test", "A"), 1)
        c.quit()
        # spf_permerror_reject and spf_softfail_reject turn them into rejections
        d2 = self.daemon(RESTRICT + "spf_permerror_reject = yes\nspf_softfail_reject = yes\n")
        c = self.smtp(d2)
        code, text = self.rcpt(c, "a@two.test")
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith("5.5.2 <alice@example.test>: Recipient address rejected: Message rejected "
                                        "due to: SPF Permanent Error: "), text)
        c.rset()
        code, text = self.rcpt(c, "a@softfail.test")
        self.assertEqual(code, 550)
        self.assertIn("5.7.23 <alice@example.test>: Recipient address rejected: Message rejected due to: "
                      "SPF softfail - not authorized.", text)
        c.rset()
        self.assertEqual(self.rcpt(c, "a@neutral.test")[0], 250)
        c.quit()

    def test_temperror_defers_and_a_retry_passes(self):
        d = self.daemon()
        c = self.smtp(d)
        code, text = self.rcpt(c, "a@servfail.test")
        self.assertEqual(code, 451)
        self.assertTrue(text.startswith("4.4.3 <alice@example.test>: Recipient address rejected: "
                                        "Temporary SPF MAIL FROM check failure"), text)
        c.rset()
        # the DNS server recovers; the client's retry is checked again (no failure is cached)
        with self.dns.lock:
            self.dns.servfail.discard("servfail.test")
            self.dns.records["servfail.test"] = [("TXT", "v=spf1 ip4:192.0.2.10 -all")]
        try:
            c.sendmail("a@servfail.test", ["alice@example.test"], b"Subject: retry\r\n\r\nbody\r\n")
        finally:
            with self.dns.lock:
                self.dns.servfail.add("servfail.test")
                del self.dns.records["servfail.test"]
        c.quit()
        msg = d.wait_messages(d.maildir("alice"), 1)[0]
        self.assertTrue(header(msg, "Received-SPF")[0].startswith("Pass (mailfrom)"), msg)

    def test_helo_identity_for_a_null_sender(self):
        d = self.daemon()
        c = self.smtp(d, helo="helo-fail.test")
        code, text = self.rcpt(c, "")
        self.assertEqual(code, 550)
        self.assertIn("Please see http://www.open-spf.org/Why?s=helo;id=postmaster@helo-fail.test;ip=192.0.2.10;",
                      text)
        c.quit()
        c = self.smtp(d, helo="helo-pass.test")
        c.sendmail("", ["alice@example.test"], b"Subject: bounce\r\n\r\nbody\r\n")
        c.quit()
        msg = d.wait_messages(d.maildir("alice"), 1)[0]
        spf = header(msg, "Received-SPF")[0]
        self.assertTrue(spf.startswith("Pass (helo) identity=helo; client-ip=%s;" % IP), spf)
        self.assertIn('envelope-from="<>"', spf)
        # a sender given: the MAIL FROM identity is checked, not the HELO name
        c = self.smtp(d, helo="helo-fail.test")
        self.assertEqual(self.rcpt(c, "a@pass-ip4.test")[0], 250)
        c.quit()
        # spf_helo_check = no: a null sender is not checked (None)
        d2 = self.daemon(RESTRICT + "spf_helo_check = no\n")
        c = self.smtp(d2, helo="helo-fail.test")
        self.assertEqual(self.rcpt(c, "")[0], 250)
        c.quit()
        d2.wait_log("spf: None identity=helo domain=helo-fail.test")

    def test_one_evaluation_per_transaction(self):
        d = self.daemon()
        c = self.smtp(d)
        self.assertEqual(c.mail("a@once.test")[0], 250)
        for r in ("alice@example.test", "bob@example.test", "alice@example.test"):
            self.assertEqual(c.rcpt(r)[0], 250)
        self.assertEqual(c.data(b"Subject: once\r\n\r\nbody\r\n")[0], 250)
        self.assertEqual(self.dns.count("once.test", "TXT"), 1)
        self.assertEqual(self.dns.count("inc.once.test", "TXT"), 1)
        self.assertEqual(d.output().count("spf: Pass identity=mailfrom domain=once.test"), 1)
        # control: the next transaction evaluates again, and the server sees it (TTL 0: not cached)
        c.sendmail("a@once.test", ["alice@example.test"], b"Subject: twice\r\n\r\nbody\r\n")
        self.assertEqual(self.dns.count("once.test", "TXT"), 2)
        c.quit()

    def test_in_sender_restrictions(self):
        d = self.daemon("smtpd_sender_restrictions = check_spf\n")
        c = self.smtp(d)
        code, text = self.rcpt(c, "a@fail.test")
        self.assertEqual(code, 550)
        self.assertIn("5.7.23 <alice@example.test>: Recipient address rejected: Message rejected due to: SPF fail",
                      text)
        c.rset()
        self.assertEqual(self.rcpt(c, "a@pass-ip4.test")[0], 250)
        c.quit()

    def test_mynetworks_is_not_checked(self):
        d = self.daemon(RESTRICT + "mynetworks = 127.0.0.0/8\n")
        c = self.smtp(d)
        self.assertEqual(self.rcpt(c, "a@fail.test")[0], 250)
        c.quit()
        self.assertNotIn("spf:", d.output())

    def test_ipv6_client(self):
        d = self.daemon(spf_addr="2001:db8::10")
        c = self.smtp(d)
        for dom, code in (("v6.test", 250), ("v6a.test", 250), ("pass-ip4.test", 550)):
            self.assertEqual(self.rcpt(c, "a@" + dom)[0], code, dom)
            c.rset()
        c.quit()
        d.wait_log("spf: Pass identity=mailfrom domain=v6a.test client-ip=2001:db8::10 ")
        self.assertEqual(self.dns.count("host.v6a.test", "AAAA"), 1)   # the a mechanism asks AAAA for a v6 client
        self.assertEqual(self.dns.count("host.v6a.test", "A"), 0)

    def test_loopback_client_passes_without_the_test_address(self):
        # libspf2 (like pyspf) gives loopback clients a pass: real loopback mail is local
        d = self.daemon(spf_addr=None)
        c = self.smtp(d)
        self.assertEqual(self.rcpt(c, "a@fail.test")[0], 250)
        c.quit()
        d.wait_log("spf: Pass identity=mailfrom domain=fail.test client-ip=127.0.0.1 "
                   "client=unknown[127.0.0.1] lookups=0 problem=localhost always passes")

    def test_slow_spf_answer_does_not_delay_another_session(self):
        d = self.daemon()

        def fast():
            c = smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW)
            self.addCleanup(c.close)
            c.sendmail("b@pass-include.test", ["bob@example.test"], b"Subject: fast\r\n\r\nfast\r\n")
            c.quit()
        events = race_slow_lookup(d, "a@slow.test", lambda: self.dns.count("slow.test", "TXT") >= 1, fast)
        self.assertEqual([e[0] for e in events], ["fast transaction done", "slow RCPT", "slow RSET"], events)
        self.assertEqual(events[1][1][0], 250, events)
        self.assertEqual(events[2][1][0], 250, events)
        self.assertLess(events[0][2], 2.0, events)   # the fast one did not wait for the slow answer
        self.assertGreater(events[1][2], 1.5, events)
        d.wait_messages(d.maildir("bob"), 1)
        d.wait_log("spf: Pass identity=mailfrom domain=slow.test")

    def test_client_gone_while_spf_waits(self):
        # the client hangs up while its RCPT waits for SPF: S_DNS_WAIT reads nothing, so the
        # check ends first, then the session sees the EOF and is freed (ASan: nothing leaks or
        # is used after free); meanwhile a second client with the same sender is served
        d = self.daemon()
        before = d.output().count("disconnect from")   # the harness's readiness probe
        c = Raw(d.port, timeout=30)
        self.assertEqual(c.reply()[0], 220)
        c.cmd("EHLO gone.example.test")
        self.assertEqual(c.cmd("MAIL FROM:<a@gone.test>")[0], 250)
        c.send("RCPT TO:<alice@example.test>\r\n")
        wait_for(lambda: self.dns.count("gone.test", "TXT") >= 1, 10, "the slow lookup to start")
        c.close()
        c2 = self.smtp(d)
        self.assertEqual(self.rcpt(c2, "a@gone.test")[0], 250)
        c2.quit()
        wait_for(lambda: d.output().count("disconnect from") >= before + 2, 15 * SLOW, "both sessions to end")
        self.assertEqual(d.output().count("spf: Pass identity=mailfrom domain=gone.test"), 2)
        self.assertIsNone(d.proc.poll())
    def test_every_allocation_failure_in_an_spf_transaction(self):
        # SQLite's habit, as test_faults.py's TLS sweep: each connection from 127.0.0.2 fails its
        # N-th allocation after accept (FRUGAL_ALLOC_SWEEP_CLIENT), N = 1, 2, ... until one meets
        # no failure, through EHLO, MAIL, an RCPT whose SPF check fetches two records (TTL 0:
        # asked every time) and QUIT. The client's name comes from a hosts file, so the sweep
        # spends its failures on SPF rather than on the connect-time PTR lookup (test_faults'
        # ground). Documented outcomes only (250, 451, or a 421/drop); after each, a clean
        # client's RCPT is accepted; at the end a whole message is delivered and the daemon stops
        # cleanly (under ASan: no leak, no error report).
        tmp = tempfile.mkdtemp(prefix="frugal-it-spfhosts-")
        self.addCleanup(shutil.rmtree, tmp, True)
        hosts = os.path.join(tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.2 sweep-client.example.test\n127.0.0.1 clean-client.example.test\n")
        d = Daemon(RESTRICT, dns=self.dns, env={"FRUGAL_SPF_CLIENT_ADDR": IP, "FRUGAL_HOSTS_FILE": hosts,
                                                "FRUGAL_ALLOC_SWEEP_CLIENT": "127.0.0.2"}).start()
        self.addCleanup(d.cleanup)

        def talk(c):
            c.ehlo("sweep.example.test")
            code = c.mail("s@sweep.test")[0]
            return c.rcpt("alice@example.test")[0] if code == 250 else code

        def recovered(n, code):
            self.assertEqual(smtp_outcome(d.port, "127.0.0.1", talk), 250,
                             "N=%d: daemon did not recover\n%s" % (n, d.output()[-3000:]))

        n, outcomes = alloc_sweep(self, d, lambda n: smtp_outcome(d.port, "127.0.0.2", talk), 400, recovered)
        self.assertTrue(d.log_has("spf: Temperror identity=mailfrom domain=sweep.test"),
                        "no failure met the SPF check itself")
        c = self.smtp(d)
        c.sendmail("s@sweep.test", ["alice@example.test"], b"Subject: after\r\n\r\nbody\r\n")
        c.quit()
        self.assertTrue(header(d.wait_messages(d.maildir("alice"), 1)[0], "Received-SPF")[0].startswith("Pass"))
        self.assertEqual(d.stop(), 0, d.output()[-3000:])
        print("\nfault sweep (SPF): %d allocation sites exercised; outcomes %s" % (n - 1, outcomes))
        self.assertGreater(n, 20)

if __name__ == "__main__":
    unittest.main()
