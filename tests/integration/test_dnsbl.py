"""tests/integration/test_dnsbl.py: the DNS list restrictions and
reject_unknown_helo_hostname (smtpd/dnsbl.c, smtpd/restrict.c) against a
loopback DNS server (dnsserver.py), with clients from several 127.0.0.0/8
source addresses (the daemon sees each as the client address, and the
list is asked for its reversed octets): reject_rbl_client with Postfix's
reply and the TXT record as its reason, reply filters (zone=127.0.0.4 and
zone=127.0.0.[4;6..7]), rbl_reply_maps with a 521 reply that hangs up,
permit_dnswl_client before reject_rbl_client (and a DNS failure that is
no permit), SERVFAIL skipped with Postfix's warning, reject_rhsbl_sender,
_client and _helo, reject_unknown_helo_hostname and its codes, one query
per name per session however many RCPTs and transactions (answers with
TTL 0 so the resolver's own cache hides nothing; a second session asks
again: the control), a slow answer that delays no other session, and a
daemon stopped while a lookup is in flight (under ASan: the cancelled
query calls back into nothing).
"""
import os
import shutil
import smtplib
import tempfile
import threading
import time
import unittest

from dnsserver import DNSServer
from harness import Daemon, Raw, wait_for, SLOW, race_slow_lookup

RECORDS = {
    # bl.test: 127.0.0.2 listed with a reason, .3 without one (A only), .4 listed as .4, .6 as .7, .5 as .5
    "2.0.0.127.bl.test": [("A", "127.0.0.2", 0), ("TXT", "Listed: see https://bl.test/q?127.0.0.2", 0)],
    "3.0.0.127.bl.test": [("A", "127.0.0.4", 0)],
    "4.0.0.127.bl.test": [("A", "127.0.0.2", 0)],
    "6.0.0.127.bl.test": [("A", "127.0.0.7", 0)],
    "5.0.0.127.bl.test": [("A", "127.0.0.5", 0)],
    "7.0.0.127.bl.test": [("A", "127.0.0.2", 0), ("TXT", "first reason", 0), ("TXT", "second\r\n250 ok", 0)],
    # wl.test: 127.0.0.2 allowlisted (also on bl.test)
    "2.0.0.127.wl.test": [("A", "127.0.0.2", 0)],
    # the rhsbl zone: a sender domain, a HELO name, a client name
    "spam.example.rhs.test": [("A", "127.0.0.2", 0), ("TXT", "spam domain", 0)],
    "bad-helo.example.rhs.test": [("A", "127.0.0.2", 0)],
    "bad-client.example.rhs.test": [("A", "127.0.0.2", 0)],
    # HELO names
    "known.helo.test": [("A", "192.0.2.1", 0)],
    "mxonly.helo.test": [("MX", (10, "mx.helo.test"), 0)],
    "v6only.helo.test": [("AAAA", "2001:db8::1", 0)],
    "1.0.0.127.slow.test": [("A", "127.0.0.2", 0)],
    "1.0.0.127.gone.test": [("A", "127.0.0.2", 0)],
}

BASE = "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n"


class DNSBL(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = DNSServer(RECORDS, servfail={"2.0.0.127.sf.test", "4.0.0.127.wl.test", "sf.helo.test"},
                            delay={"1.0.0.127.slow.test": 3, "1.0.0.127.gone.test": 5}).start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def daemon(self, extra, env=None):
        d = Daemon(BASE + extra, dns=self.dns, env=env).start()
        self.addCleanup(d.cleanup)
        return d

    def smtp(self, d, source, helo="client.example.test"):
        c = smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW, source_address=(source, 0))
        self.addCleanup(c.close)
        c.ehlo(helo)
        return c

    def rcpt(self, c, sender="a@example.org", rcpt="alice@example.test"):
        self.assertEqual(c.mail(sender)[0], 250)
        code, text = c.rcpt(rcpt)
        return code, text.decode()

    def test_rbl_client_reply_txt_and_one_lookup_per_session(self):
        d = self.daemon("smtpd_client_restrictions = reject_rbl_client bl.test\n")
        c = self.smtp(d, "127.0.0.2")
        self.assertEqual(self.rcpt(c), (554, "5.7.1 Service unavailable; Client host [127.0.0.2] blocked using "
                                             "bl.test; Listed: see https://bl.test/q?127.0.0.2"))
        d.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 Service unavailable; Client host "
                   "[127.0.0.2] blocked using bl.test; Listed: see https://bl.test/q?127.0.0.2; "
                   "from=<a@example.org> to=<alice@example.test> proto=ESMTP helo=<client.example.test>")
        # a second RCPT and a second transaction: the session's answers, no new query
        self.assertEqual(c.rcpt("bob@example.test")[0], 554)
        c.rset()
        self.assertEqual(self.rcpt(c)[0], 554)
        c.quit()
        self.assertEqual(self.dns.count("2.0.0.127.bl.test", "A"), 1)
        self.assertEqual(self.dns.count("2.0.0.127.bl.test", "TXT"), 1)
        # the control: a new session asks again (TTL 0: nothing else caches the answer)
        c = self.smtp(d, "127.0.0.2")
        self.assertEqual(self.rcpt(c)[0], 554)
        c.quit()
        self.assertEqual(self.dns.count("2.0.0.127.bl.test", "A"), 2)
        # listed with no TXT record: the reply ends with the zone
        c = self.smtp(d, "127.0.0.3")
        self.assertEqual(self.rcpt(c), (554, "5.7.1 Service unavailable; Client host [127.0.0.3] blocked using "
                                             "bl.test"))
        c.quit()
        # two TXT records: joined by " / " as Postfix does; a CR LF in one cannot end the reply early
        c = self.smtp(d, "127.0.0.7")
        code, text = self.rcpt(c)
        self.assertEqual(code, 554)
        self.assertTrue(text.endswith("blocked using bl.test; first reason / second  250 ok") or
                        text.endswith("blocked using bl.test; second  250 ok / first reason"), text)
        c.quit()
        # not listed (NXDOMAIN): accepted, and a whole message goes through
        c = self.smtp(d, "127.0.0.9")
        c.sendmail("a@example.org", ["alice@example.test"], b"Subject: clean\r\n\r\nbody\r\n")
        c.quit()
        d.wait_messages(d.maildir("alice"), 1)
        self.assertEqual(self.dns.count("9.0.0.127.bl.test", "TXT"), 0)   # TXT only for a listing

    def test_reply_filters(self):
        d = self.daemon("smtpd_client_restrictions = reject_rbl_client bl.test=127.0.0.4\n")
        for src, want in (("127.0.0.2", 250), ("127.0.0.3", 554), ("127.0.0.9", 250)):
            c = self.smtp(d, src)
            self.assertEqual(self.rcpt(c)[0], want, src)
            c.quit()
        d2 = self.daemon("smtpd_client_restrictions = reject_rbl_client bl.test=127.0.0.[4;6..7]\n")
        for src, want in (("127.0.0.2", 250), ("127.0.0.3", 554), ("127.0.0.5", 250), ("127.0.0.6", 554)):
            c = self.smtp(d2, src)
            self.assertEqual(self.rcpt(c)[0], want, src)
            c.quit()

    def test_rbl_reply_maps_521_hangs_up(self):
        # inline: keys cannot hold '=': the template is found by the zone (the second key tried)
        d = self.daemon("smtpd_client_restrictions = reject_rbl_client bl.test=127.0.0.[2;4]\n"
                        # $$: frugal.conf expands $names at load, as main.cf does
                        "rbl_reply_maps = inline:{ {bl.test = 521 5.7.1 Go away: $$rbl_what is on "
                        "$$rbl_domain$${rbl_reason?{ ($$rbl_reason)}} ($$client_name, helo $$helo_name)} }\n")
        c = self.smtp(d, "127.0.0.2")
        self.assertEqual(c.mail("a@example.org")[0], 250)
        code, text = c.rcpt("alice@example.test")
        self.assertEqual((code, text.decode()), (521, "5.7.1 Go away: 127.0.0.2 is on bl.test (Listed: see "
                                                      "https://bl.test/q?127.0.0.2) (unknown, helo "
                                                      "client.example.test)"))
        with self.assertRaises(smtplib.SMTPServerDisconnected):   # the connection is closed after it
            c.noop()
        # no TXT record: the ${rbl_reason?...} part is left out
        c = self.smtp(d, "127.0.0.3")
        self.assertEqual(self.rcpt(c), (521, "5.7.1 Go away: 127.0.0.3 is on bl.test (unknown, helo "
                                             "client.example.test)"))
        # a zone with no template: the default reply, with maps_rbl_reject_code; no hang-up
        d2 = self.daemon("smtpd_client_restrictions = reject_rbl_client bl.test\nmaps_rbl_reject_code = 550\n"
                         "rbl_reply_maps = inline:{ {other.test = 521 Go away} }\n")
        c = self.smtp(d2, "127.0.0.3")
        self.assertEqual(self.rcpt(c), (550, "5.7.1 Service unavailable; Client host [127.0.0.3] blocked using "
                                             "bl.test"))
        self.assertEqual(c.noop()[0], 250)
        c.quit()

    def test_dnswl_before_rbl_and_lookup_errors(self):
        d = self.daemon("smtpd_client_restrictions = permit_dnswl_client wl.test, reject_rbl_client sf.test, "
                        "reject_rbl_client bl.test\n")
        # on both lists: the allowlist permits first (and bl.test is never asked)
        c = self.smtp(d, "127.0.0.2")
        self.assertEqual(self.rcpt(c)[0], 250)
        c.quit()
        self.assertEqual(self.dns.count("2.0.0.127.bl.test", "A"), 0)
        self.assertEqual(self.dns.count("2.0.0.127.sf.test", "A"), 0)
        # wl.test fails for 127.0.0.4 (SERVFAIL): no permit, and bl.test's reject becomes a 450
        # (Postfix's DEFER_IF_REJECT: an allowlisted client is not refused for good over a DNS hiccup)
        c = self.smtp(d, "127.0.0.4")
        self.assertEqual(self.rcpt(c), (450, "4.7.1 <127.0.0.4>: Client host rejected: Service unavailable"))
        c.quit()
        d.wait_log("warning: unknown[127.0.0.4]: 4.0.0.127.wl.test: RBL lookup error: type=A:")
        # an allowlist never permits relaying: the relay check still refuses a remote recipient
        d3 = self.daemon("smtpd_relay_restrictions = permit_dnswl_client wl.test, reject_unauth_destination\n"
                         "smtpd_recipient_restrictions = permit_dnswl_client wl.test, reject_unauth_destination\n")
        before = self.dns.count("2.0.0.127.wl.test", "A")
        c = self.smtp(d3, "127.0.0.2")
        self.assertEqual(self.rcpt(c, rcpt="x@remote.example")[0], 554)
        self.assertEqual(c.rcpt("alice@example.test")[0], 250)
        c.quit()
        self.assertEqual(self.dns.count("2.0.0.127.wl.test", "A"), before + 1)   # asked for the local one only
        # a lookup error skips the list (Postfix: a warning, no reject): sf.test fails, bl.test has no entry
        d2 = self.daemon("smtpd_client_restrictions = reject_rbl_client sf.test\n")
        c = self.smtp(d2, "127.0.0.2")
        self.assertEqual(self.rcpt(c)[0], 250)
        c.quit()
        d2.wait_log("warning: unknown[127.0.0.2]: 2.0.0.127.sf.test: RBL lookup error: type=A:")

    def test_rhsbl_sender_helo_and_client(self):
        tmp = tempfile.mkdtemp(prefix="frugal-it-dnsblhosts-")
        self.addCleanup(shutil.rmtree, tmp, True)
        hosts = os.path.join(tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.7 bad-client.example\n127.0.0.8 good-client.example\n")
        d = self.daemon("smtpd_client_restrictions = reject_rhsbl_client rhs.test\n"
                        "smtpd_helo_restrictions = reject_rhsbl_helo rhs.test\n"
                        "smtpd_sender_restrictions = reject_rhsbl_sender rhs.test\n",
                        env={"FRUGAL_HOSTS_FILE": hosts})
        c = self.smtp(d, "127.0.0.8")
        self.assertEqual(self.rcpt(c, "a@spam.example"), (554, "5.7.1 Service unavailable; Sender address "
                                                               "[spam.example] blocked using rhs.test; spam domain"))
        c.rset()
        self.assertEqual(self.rcpt(c, "a@ham.example")[0], 250)
        c.rset()
        self.assertEqual(self.rcpt(c, "<>")[0], 250)   # no domain: not asked
        c.quit()
        c = self.smtp(d, "127.0.0.8", helo="bad-helo.example")
        self.assertEqual(self.rcpt(c), (554, "5.7.1 Service unavailable; Helo command [bad-helo.example] blocked "
                                             "using rhs.test"))
        c.quit()
        c = self.smtp(d, "127.0.0.7")
        self.assertEqual(self.rcpt(c), (554, "5.7.1 Service unavailable; Client host [bad-client.example] blocked "
                                             "using rhs.test"))
        c.quit()
        d.wait_log("NOQUEUE: reject: RCPT from bad-client.example[127.0.0.7]: 554 5.7.1")

    def test_session_cache_is_bounded(self):
        # 32 answers per session: a client cycling through 40 sender domains keeps 32, the oldest
        # goes and is asked again; the newest is still an answer held (the control)
        # answers with TTL 0 (an NXDOMAIN would stay in the resolver's cache), outside the filter
        with self.dns.lock:
            for i in range(40):
                self.dns.records["d%d.example.rhs.test" % i] = [("A", "127.0.0.2", 0)]
        d = self.daemon("smtpd_sender_restrictions = reject_rhsbl_sender rhs.test=127.0.0.3\n")
        c = self.smtp(d, "127.0.0.2")
        for i in range(40):
            self.assertEqual(self.rcpt(c, "a@d%d.example" % i)[0], 250)
            c.rset()
        self.assertEqual(self.rcpt(c, "a@d39.example")[0], 250)
        c.rset()
        self.assertEqual(self.rcpt(c, "a@d0.example")[0], 250)
        c.quit()
        self.assertEqual(self.dns.count("d39.example.rhs.test", "A"), 1)
        self.assertEqual(self.dns.count("d0.example.rhs.test", "A"), 2)

    def test_unknown_helo_hostname(self):
        d = self.daemon("smtpd_helo_restrictions = reject_unknown_helo_hostname\n")
        for helo in ("known.helo.test", "mxonly.helo.test", "v6only.helo.test", "[127.0.0.1]"):
            c = self.smtp(d, "127.0.0.2", helo=helo)
            self.assertEqual(self.rcpt(c)[0], 250, helo)
            self.assertEqual(c.rcpt("bob@example.test")[0], 250, helo)
            c.quit()
        self.assertEqual(self.dns.count("known.helo.test", "A"), 1)   # once for the session's two RCPTs
        self.assertEqual(self.dns.count("mxonly.helo.test", "AAAA"), 0)   # A, MX: found, no more asked
        c = self.smtp(d, "127.0.0.2", helo="nx.helo.test")
        self.assertEqual(self.rcpt(c), (450, "4.7.1 <nx.helo.test>: Helo command rejected: Host not found"))
        c.quit()
        self.assertEqual(self.dns.count("nx.helo.test", "MX"), 0)   # NXDOMAIN ends it
        c = self.smtp(d, "127.0.0.2", helo="sf.helo.test")
        self.assertEqual(self.rcpt(c), (450, "4.7.1 <sf.helo.test>: Helo command rejected: Host not found"))
        c.quit()
        d2 = self.daemon("smtpd_helo_restrictions = reject_unknown_helo_hostname\n"
                         "unknown_hostname_reject_code = 550\n")
        c = self.smtp(d2, "127.0.0.2", helo="nx.helo.test")
        self.assertEqual(self.rcpt(c), (550, "5.7.1 <nx.helo.test>: Helo command rejected: Host not found"))
        c.quit()
        # a temporary failure is a defer_if_permit: a later reject still wins
        d3 = self.daemon("smtpd_helo_restrictions = reject_unknown_helo_hostname, reject_non_fqdn_helo_hostname,"
                         " reject_rhsbl_helo rhs.test\n")
        c = self.smtp(d3, "127.0.0.2", helo="sf.helo.test")
        self.assertEqual(self.rcpt(c)[0], 450)
        c.quit()

    def test_slow_answer_does_not_delay_another_session(self):
        d = self.daemon("smtpd_client_restrictions = reject_rbl_client slow.test\n")

        def fast():
            c = self.smtp(d, "127.0.0.9")
            c.sendmail("b@example.org", ["bob@example.test"], b"Subject: fast\r\n\r\nfast\r\n")
            c.quit()
        # the slow session comes from 127.0.0.1: 1.0.0.127.slow.test answers after 3 s
        events = race_slow_lookup(d, "a@example.org", lambda: self.dns.count("1.0.0.127.slow.test", "A") >= 1, fast)
        self.assertEqual([e[0] for e in events], ["fast transaction done", "slow RCPT", "slow RSET"], events)
        self.assertEqual(events[1][1][0], 554, events)
        self.assertIn("blocked using slow.test", events[1][1][1])
        self.assertEqual(events[2][1][0], 250, events)
        self.assertLess(events[0][2], 2.0, events)   # the fast one did not wait for the slow answer
        self.assertGreater(events[1][2], 1.5, events)
        d.wait_messages(d.maildir("bob"), 1)

    def test_stop_while_a_lookup_is_in_flight(self):
        # the daemon stops while a session waits in S_DNS_WAIT (a session reads nothing while it
        # waits, so a stop is what frees one then): after smtpd_shutdown_timeout the session is
        # freed with its query cancelled, before the 5 s answer; ASan sees any use after free
        d = self.daemon("smtpd_client_restrictions = reject_rbl_client gone.test\nsmtpd_shutdown_timeout = 1s\n")
        c = Raw(d.port, timeout=30)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        c.cmd("EHLO gone.example.test")
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        c.send("RCPT TO:<alice@example.test>\r\n")
        wait_for(lambda: self.dns.count("1.0.0.127.gone.test", "A") >= 1, 10, "the slow lookup to start")
        t0 = time.monotonic()
        d.stop()
        self.assertLess(time.monotonic() - t0, 4.5 * SLOW)   # it did not wait for the 5 s answer
        self.assertEqual(d.proc.returncode, 0, d.output())

    def test_config_errors(self):
        from harness import run_frugal
        for bad in ("reject_rbl_client", "reject_rbl_client bl.test=127.0.0.[4..2]",
                    "reject_rbl_client bl.test=127.0.0", "reject_rbl_client bl.test=127.0.0.256"):
            d = Daemon(BASE + "smtpd_client_restrictions = %s\n" % bad, dns=self.dns)
            self.addCleanup(d.cleanup)
            r = run_frugal("check", "-c", d.dir)
            self.assertNotEqual(r.returncode, 0, bad)
            self.assertIn("smtpd_client_restrictions", r.stdout + r.stderr, bad)


if __name__ == "__main__":
    unittest.main()
