"""tests/integration/test_dns.py: the resolver seen from SMTP, against a DNS
server the test runs on loopback (dnsserver.py): the client's name (PTR,
forward-confirmed) in the log and the Received: header, unknown[ADDR] when
it fails, reject_unknown_client_hostname and
reject_unknown_reverse_client_hostname, reject_unknown_sender_domain with
NXDOMAIN, SERVFAIL, no data and found, and a slow answer for one session
that does not hold up another; the hosts file answering the client's name
before DNS (FRUGAL_HOSTS_FILE: the harness gives every other daemon an empty
one). Clients connect from 127.0.0.N source addresses, each with its own
records.
"""
import os
import shutil
import smtplib
import tempfile
import threading
import time
import unittest

from dnsserver import DNSServer
from harness import run_frugal, Daemon, Raw, wait_for, SLOW, race_slow_lookup

RECORDS = {
    # 127.0.0.2: a name that points back
    "2.0.0.127.in-addr.arpa": [("PTR", "client.example.test")],
    "client.example.test": [("A", "127.0.0.2")],
    # 127.0.0.3: no PTR at all (NXDOMAIN)
    # 127.0.0.4: a PTR whose name points elsewhere
    "4.0.0.127.in-addr.arpa": [("PTR", "liar.example.test")],
    "liar.example.test": [("A", "127.0.0.99")],
    # 127.0.0.5: the PTR lookup fails (SERVFAIL)
    # 127.0.0.6: DNS names it, but the test's hosts file names it first
    "6.0.0.127.in-addr.arpa": [("PTR", "dnsname.example.test")],
    "dnsname.example.test": [("A", "127.0.0.6")],
    # sender domains
    "mxdomain.test": [("MX", (10, "mx.mxdomain.test"))],
    "aonly.test": [("A", "127.0.0.50")],
    "txtonly.test": [("TXT", "just text")],
    "slow.test": [("MX", (10, "mx.slow.test"))],
    "slower.test": [("TXT", "no mail here")],   # MX, A, AAAA asked in turn, 5 s each
}


class DNS(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = DNSServer(RECORDS, servfail={"5.0.0.127.in-addr.arpa", "broken.test"},
                            delay={"slow.test": 3, "slower.test": 5}).start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def daemon(self, extra=""):
        d = Daemon(extra, dns=self.dns).start()
        self.addCleanup(d.cleanup)
        return d

    def smtp(self, d, source):
        c = smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW, source_address=(source, 0))
        self.addCleanup(lambda: c.close())
        return c

    def test_reverse_name_logged_and_in_received(self):
        d = self.daemon()
        c = self.smtp(d, "127.0.0.2")
        c.sendmail("someone@mxdomain.test", ["alice@example.test"], b"Subject: hi\r\n\r\nbody\r\n")
        c.quit()
        d.wait_log("connect from client.example.test[127.0.0.2]")
        d.wait_log("client=client.example.test[127.0.0.2]")
        msg = d.wait_messages(d.maildir("alice"), 1)[0]
        self.assertIn(b"(client.example.test [127.0.0.2])", msg)
        d.wait_log("disconnect from client.example.test[127.0.0.2]")

    def test_unknown_when_ptr_fails_or_does_not_confirm(self):
        d = self.daemon()
        for src in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
            c = self.smtp(d, src)
            c.ehlo("x.example.test")
            c.quit()
            d.wait_log("connect from unknown[%s]" % src)
        d.wait_log("warning: hostname liar.example.test does not resolve to address 127.0.0.4")
        self.assertNotIn("liar.example.test[", d.output())

    def hosts_daemon(self, text):
        tmp = tempfile.mkdtemp(prefix="frugal-it-hosts-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "hosts")
        with open(path, "w") as f:
            f.write(text)
        return self.daemon_env({"FRUGAL_HOSTS_FILE": path})

    def daemon_env(self, env):
        d = Daemon("", dns=self.dns, env=env).start()
        self.addCleanup(d.cleanup)
        return d

    def test_hosts_file_answers_before_dns(self):
        # as glibc's "hosts: files dns", which Postfix's smtpd uses: no PTR (nor A) query goes
        # out for an address the hosts file lists, and the name is taken (forward-confirmed by the file)
        d = self.hosts_daemon("# test hosts\n127.0.0.6\tHostsName.example.test alias6\n")
        c = self.smtp(d, "127.0.0.6")
        c.sendmail("someone@mxdomain.test", ["alice@example.test"], b"Subject: hi\r\n\r\nbody\r\n")
        c.quit()
        d.wait_log("connect from hostsname.example.test[127.0.0.6]")
        d.wait_log("client=hostsname.example.test[127.0.0.6]")
        self.assertEqual(self.dns.count("6.0.0.127.in-addr.arpa", "PTR"), 0)
        self.assertEqual(self.dns.count("hostsname.example.test", "A"), 0)
        self.assertNotIn("dnsname.example.test", d.output())
        # control: an address the file does not list still goes to DNS (the counter sees it)
        before = self.dns.count("2.0.0.127.in-addr.arpa", "PTR")
        c = self.smtp(d, "127.0.0.2")
        c.ehlo("x.example.test")
        c.quit()
        d.wait_log("connect from client.example.test[127.0.0.2]")
        self.assertGreater(self.dns.count("2.0.0.127.in-addr.arpa", "PTR"), before)

    def test_localhost_from_the_system_hosts_file(self):
        # the bench's finding: 127.0.0.1 waited for a PTR query to time out where Postfix
        # read /etc/hosts. With the machine's own file the client is named at once.
        name = None
        try:
            with open("/etc/hosts") as f:
                for line in f:
                    fields = line.split("#")[0].split()
                    if len(fields) >= 2 and fields[0] == "127.0.0.1":
                        name = fields[1].lower().rstrip(".")
                        break
        except OSError:
            pass
        if name is None:
            self.skipTest("/etc/hosts does not list 127.0.0.1")
        d = self.daemon_env({"FRUGAL_HOSTS_FILE": "/etc/hosts"})
        before = self.dns.count("1.0.0.127.in-addr.arpa", "PTR")   # other tests' daemons ask (empty file)
        c = self.smtp(d, "127.0.0.1")
        c.ehlo("x.example.test")
        c.quit()
        d.wait_log("connect from %s[127.0.0.1]" % name)
        self.assertEqual(self.dns.count("1.0.0.127.in-addr.arpa", "PTR"), before)
        # control: the harness's empty file sends the same client's PTR to DNS
        d2 = self.daemon_env({})
        c = self.smtp(d2, "127.0.0.1")
        c.ehlo("x.example.test")
        c.quit()
        d2.wait_log("connect from unknown[127.0.0.1]")
        # at least once: the harness's readiness probe is a client too, and under ASan its
        # lookup can still be in flight when ours starts (identical lookups are not coalesced)
        self.assertGreater(self.dns.count("1.0.0.127.in-addr.arpa", "PTR"), before)

    def test_reject_unknown_client_hostname(self):
        # 550 for "no name" (unknown_client_reject_code), 450 for a lookup that failed for now
        d = self.daemon("smtpd_client_restrictions = reject_unknown_client_hostname\n"
                        "unknown_client_reject_code = 550\n")
        expect = {"127.0.0.2": (250, ""),
                  "127.0.0.3": (550, "5.7.1 Client host rejected: cannot find your hostname, [127.0.0.3]"),
                  "127.0.0.4": (550, "5.7.1 Client host rejected: cannot find your hostname, [127.0.0.4]"),
                  "127.0.0.5": (450, "4.7.1 Client host rejected: cannot find your hostname, [127.0.0.5]")}
        for src, (code, text) in expect.items():
            c = self.smtp(d, src)
            c.ehlo("x.example.test")
            c.mail("someone@mxdomain.test")
            r = c.rcpt("alice@example.test")
            self.assertEqual(r[0], code, (src, r))
            self.assertIn(text, r[1].decode())
            c.quit()
        d.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.0.3]: 550 5.7.1 Client host rejected: "
                   "cannot find your hostname, [127.0.0.3]; from=<someone@mxdomain.test> to=<alice@example.test>")

    def test_reject_unknown_reverse_client_hostname(self):
        # the PTR alone: 127.0.0.4's unconfirmed name passes
        d = self.daemon("smtpd_client_restrictions = reject_unknown_reverse_client_hostname\n")
        for src, code in (("127.0.0.4", 250), ("127.0.0.3", 450)):
            c = self.smtp(d, src)
            c.mail("someone@mxdomain.test")
            r = c.rcpt("alice@example.test")
            self.assertEqual(r[0], code, (src, r))
            if code == 450:
                self.assertIn("4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.3]",
                              r[1].decode())
            c.quit()

    def test_reject_unknown_sender_domain(self):
        d = self.daemon("smtpd_sender_restrictions = reject_unknown_sender_domain\n"
                        "unknown_address_reject_code = 550\n")
        cases = [("a@mxdomain.test", 250, ""), ("a@aonly.test", 250, ""),
                 ("a@nowhere.test", 550, "5.1.8 <a@nowhere.test>: Sender address rejected: Domain not found"),
                 ("a@txtonly.test", 550, "5.1.8 <a@txtonly.test>: Sender address rejected: Domain not found"),
                 ("a@broken.test", 450, "4.1.8 <a@broken.test>: Sender address rejected: Domain not found"),
                 ("", 250, "")]
        c = self.smtp(d, "127.0.0.3")
        c.ehlo("client.example.test")
        for sender, code, text in cases:
            c.mail(sender)
            r = c.rcpt("alice@example.test")
            self.assertEqual(r[0], code, (sender, r))
            self.assertIn(text, r[1].decode())
            r = c.rcpt("bob@example.test")   # the verdict is kept for the transaction
            self.assertEqual(r[0], code, (sender, r))
            c.rset()
        c.quit()
        d.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.0.3]: 450 4.1.8 <a@broken.test>: Sender address "
                   "rejected: Domain not found; from=<a@broken.test> to=<alice@example.test> proto=ESMTP")
        self.assertEqual(self.dns.count("mxdomain.test", "MX"), 1)   # once per transaction, not per RCPT

    def test_slow_answer_does_not_delay_another_session(self):
        d = self.daemon("smtpd_sender_restrictions = reject_unknown_sender_domain\n")

        def fast():
            c = self.smtp(d, "127.0.0.2")
            c.sendmail("b@mxdomain.test", ["bob@example.test"], b"Subject: fast\r\n\r\nfast\r\n")
            c.quit()
        events = race_slow_lookup(d, "a@slow.test", lambda: self.dns.count("slow.test", "MX") >= 1, fast)
        self.assertEqual([e[0] for e in events], ["fast transaction done", "slow RCPT", "slow RSET"], events)
        self.assertEqual(events[1][1][0], 250, events)
        self.assertEqual(events[2][1][0], 250, events)
        self.assertLess(events[0][2], 2.0, events)   # the fast one did not wait for the slow answer
        self.assertGreater(events[1][2], 1.5, events)
        d.wait_messages(d.maildir("bob"), 1)

    def test_suspended_rcpt_keeps_its_dsn_parameters(self):
        # the RCPT waits for the sender domain's answer; its NOTIFY and ORCPT must survive the wait
        d = self.daemon("smtpd_sender_restrictions = reject_unknown_sender_domain\n"
                        "defer_transports = smtp, relay\nrelay_domains = far.test\n")
        c = self.smtp(d, "127.0.0.2")
        c.ehlo("client.example.test")
        self.assertEqual(c.mail("a@slow.test", ["ENVID=env-1"])[0], 250)
        self.assertEqual(c.rcpt("x@far.test", ["NOTIFY=NEVER", "ORCPT=rfc822;orig@far.test"])[0], 250)
        code, msg = c.data(b"Subject: waits\r\n\r\nbody\r\n")
        self.assertEqual(code, 250)
        qid = msg.decode().split()[-1]
        show = run_frugal("queue", "-c", d.dir, "show", qid)
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertRegex(show.stdout, r"x@far.test.*notify=NEVER")
        self.assertIn("orig@far.test", show.stdout)

    def test_dns_socket_in_the_ledger(self):
        # the resolver's UDP socket is counted (numothersock) while a lookup runs, and
        # the daemon's audit finds the ledger equal to /proc/self/fd. Three lookups of
        # 5 s each keep a socket open across at least two status samples (every 5 s).
        d = self.daemon("smtpd_sender_restrictions = reject_unknown_sender_domain\n")
        c = Raw(d.port, timeout=30)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        c.cmd("EHLO x.example.test")
        before = d.next_status()
        self.assertEqual(c.cmd("MAIL FROM:<a@slower.test>")[0], 250)
        c.send("RCPT TO:<alice@example.test>\r\n")
        wait_for(lambda: self.dns.count("slower.test", "MX") >= 1, 10, "the lookup to start")
        during = d.next_status()
        self.assertEqual(during["use_fd"], during["fd_kernel"], during)
        self.assertEqual(during["use_other"], before["use_other"] + 1, (before, during))
        self.assertEqual(c.reply()[0], 450)   # no MX, A or AAAA: unknown_address_reject_code
        after = d.next_status()
        self.assertEqual(after["use_other"], before["use_other"], (before, after))   # closed again
        self.assertEqual(after["use_fd"], after["fd_kernel"], after)
        self.assertFalse(d.log_has("descriptor ledger"), "no drift was logged")


if __name__ == "__main__":
    unittest.main()
