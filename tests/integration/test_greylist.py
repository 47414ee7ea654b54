"""tests/integration/test_greylist.py: check_greylist (smtpd/greylisting.c,
smtpd/greylist.c): postgrey's triplets in the process. Clients come from
127.0.0.0/8 source addresses (the daemon sees each as its own client; the
harness's mynetworks holds none of them). The delay is set to a second or
two; waiting for it to pass is what greylisting is, so the tests poll for the
250 with a deadline and check it did not come before the delay."""
import base64
import os
import socket
import sys
import time
import unittest

from harness import Daemon, Raw, run_frugal, wait_for, SLOW

GREY = ("smtpd_recipient_restrictions = permit_sasl_authenticated, reject_unauth_destination, "
        "check_greylist, reject_unlisted_recipient\n")


class From(Raw):
    """A raw SMTP connection from a chosen loopback source address."""

    def __init__(self, port, src, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW,
                                          source_address=(src, 0))
        self.f = self.s.makefile("rb")


def attempt(d, src, sender, rcpt, data=False, auth=None):
    """One delivery attempt in its own session: the RCPT reply (code, text);
    with data, a 250 RCPT is followed by the message (its 250 asserted)."""
    r = From(d.port, src)
    try:
        assert r.reply()[0] == 220
        assert r.cmd("EHLO client.example.org")[0] == 250
        if auth:
            code, text = r.cmd("AUTH PLAIN " + base64.b64encode(
                ("\0%s\0%s" % auth).encode()).decode())
            assert code == 235, text
        assert r.cmd("MAIL FROM:<%s>" % sender)[0] == 250
        code, text = r.cmd("RCPT TO:<%s>" % rcpt)
        if data and code == 250:
            assert r.cmd("DATA")[0] == 354
            r.send(b"Subject: grey\r\n\r\nafter the delay\r\n.\r\n")
            c2, t2 = r.reply()
            assert c2 == 250, t2
        r.cmd("QUIT")
        return code, text
    finally:
        r.close()


class Triplets(unittest.TestCase):
    """First sight, an early retry, a retry after the delay; what makes a triplet."""
    DELAY = 2

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(extra=GREY + "greylist_delay = %ds\n" % cls.DELAY).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def test_first_sight_then_retry_after_delay(self):
        d = self.d
        t0 = time.monotonic()
        code, text = attempt(d, "127.0.1.1", "news@sender.example", "alice@example.test")
        self.assertEqual(code, 450, text)
        self.assertIn("450 4.2.0 <alice@example.test>: Recipient address rejected: Greylisted", text)
        d.wait_log("NOQUEUE: greylist: action=greylist, reason=new, client_name=unknown, "
                   "client_address=127.0.1.1, sender=news@sender.example, recipient=alice@example.test")
        d.wait_log("NOQUEUE: reject: RCPT from unknown[127.0.1.1]: 450 4.2.0 <alice@example.test>: "
                   "Recipient address rejected: Greylisted")
        # an early retry is deferred again (and logged as one)
        code, text = attempt(d, "127.0.1.1", "news@sender.example", "alice@example.test")
        if time.monotonic() - t0 < self.DELAY - 0.5:
            self.assertEqual(code, 450, text)
            d.wait_log("reason=early-retry")
        # another recipient is a triplet of its own
        code, text = attempt(d, "127.0.1.1", "news@sender.example", "bob@example.test")
        self.assertEqual(code, 450, text)
        # the retry after the delay passes, and the message arrives
        seen = []

        def passes():
            c, t = attempt(d, "127.0.1.1", "news@sender.example", "alice@example.test", data=True)
            seen.append((time.monotonic() - t0, c))
            return c == 250
        wait_for(passes, 10 + self.DELAY, "the retry after the delay to pass", interval=0.25)
        passed_at = seen[-1][0]
        self.assertGreaterEqual(passed_at, self.DELAY - 1, "passed before the delay: %r" % seen)
        d.wait_messages(d.maildir("alice"), 1)
        d.wait_log("greylist: action=pass, reason=triplet found, delay=")
        # the same /24 from another address is the same client: passes at once
        self.assertEqual(attempt(d, "127.0.1.77", "news@sender.example", "alice@example.test")[0], 250)
        # postgrey's normalisation: upper case, a +extension, VERP digits are the same sender
        self.assertEqual(attempt(d, "127.0.1.1", "News+list-12345@Sender.Example", "Alice@example.test")[0], 250)
        # negative controls: another /24, another sender
        self.assertEqual(attempt(d, "127.0.2.1", "news@sender.example", "alice@example.test")[0], 450)
        self.assertEqual(attempt(d, "127.0.1.1", "other@sender.example", "alice@example.test")[0], 450)

    def test_null_sender_is_a_sender(self):
        code, text = attempt(self.d, "127.0.3.1", "", "alice@example.test")
        self.assertEqual(code, 450, text)
        self.d.wait_log("client_address=127.0.3.1, sender=, recipient=alice@example.test")

    def test_unknown_user_still_550(self):
        """postgrey's DEFER_IF_PERMIT: a later reject is not turned into a 450."""
        code, text = attempt(self.d, "127.0.3.2", "x@sender.example", "nobody@example.test")
        self.assertEqual(code, 550, text)


class BeforeADnsWord(unittest.TestCase):
    def test_one_verdict_across_a_dns_wait(self):
        """check_greylist before a word that waits for DNS: the evaluation runs again when the answer
        comes (restrict.c); the triplet is judged once, one log line, not a "new" then an "early-retry"."""
        d = Daemon(extra="smtpd_recipient_restrictions = reject_unauth_destination, check_greylist, "
                         "reject_rbl_client bl.test, reject_unlisted_recipient\ngreylist_delay = 60s\n")
        self.addCleanup(d.cleanup)
        d.start()
        code, text = attempt(d, "127.0.9.5", "a@sender.example", "alice@example.test")
        self.assertEqual(code, 450, text)
        self.assertIn("try again in 60 seconds", text)
        out = d.output()
        self.assertEqual(out.count("client_address=127.0.9.5, sender=a@sender.example"), 1, out)
        self.assertNotIn("early-retry", out)


class Exempt(unittest.TestCase):
    """mynetworks, AUTH and greylist_allowlist_clients are never greylisted,
    even with check_greylist first in the list."""

    def test_exempt_clients(self):
        import tempfile
        import shutil
        tdir = tempfile.mkdtemp(prefix="frugal-grey-")
        self.addCleanup(shutil.rmtree, tdir, True)
        users = os.path.join(tdir, "users")
        d = Daemon(extra="smtpd_recipient_restrictions = check_greylist, reject_unlisted_recipient\n"
                         "mynetworks = 127.0.5.0/24\n"
                         "greylist_allowlist_clients = 127.0.6.0/24, inline:{ 127.0.7=OK }\n"
                         "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n"
                         "smtpd_sasl_users = cdb:%s\n" % users)
        self.addCleanup(d.cleanup)
        r = run_frugal("passwd", "-c", d.dir, "carol@example.test", input="s3cret-pass\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        d.start()
        self.assertEqual(attempt(d, "127.0.5.1", "a@sender.example", "alice@example.test")[0], 250, "mynetworks")
        self.assertEqual(attempt(d, "127.0.6.9", "a@sender.example", "alice@example.test")[0], 250, "CIDR")
        self.assertEqual(attempt(d, "127.0.7.9", "a@sender.example", "alice@example.test")[0], 250, "table")
        self.assertEqual(attempt(d, "127.0.8.9", "a@sender.example", "alice@example.test",
                                 auth=("carol@example.test", "s3cret-pass"))[0], 250, "AUTH")
        # the control: the same triplet from a client none of these covers
        self.assertEqual(attempt(d, "127.0.8.9", "a@sender.example", "alice@example.test")[0], 450)
        self.assertNotIn("client_address=127.0.5.1", d.output())


class Restart(unittest.TestCase):
    """The store: a passed triplet passes at once after a restart; a corrupt store is logged and ignored."""

    def test_survives_restart(self):
        d = Daemon(extra=GREY + "greylist_delay = 1s\n")
        self.addCleanup(d.cleanup)
        d.start()
        self.assertEqual(attempt(d, "127.0.9.1", "a@sender.example", "alice@example.test")[0], 450)
        wait_for(lambda: attempt(d, "127.0.9.1", "a@sender.example", "alice@example.test")[0] == 250,
                 10, "the retry after the delay", interval=0.25)
        # a pending one, to see the ages kept: it must not pass at once after the restart
        self.assertEqual(attempt(d, "127.0.9.1", "b@sender.example", "alice@example.test")[0], 450)
        self.assertEqual(d.stop(), 0)
        store = os.path.join(d.queue, "data", "greylist")
        with open(store) as f:
            lines = f.read().splitlines()
        self.assertTrue(lines[0].startswith("frugal-greylist 1 "), lines[:1])
        self.assertEqual(len(lines), 3, lines)
        d.start()
        d.wait_log("greylist: 2 triplets loaded from %s" % store)
        self.assertEqual(attempt(d, "127.0.9.1", "a@sender.example", "alice@example.test")[0], 250)
        # controls: a new triplet is greylisted; the pending one is remembered as pending
        self.assertEqual(attempt(d, "127.0.9.1", "c@sender.example", "alice@example.test")[0], 450)
        attempt(d, "127.0.9.1", "b@sender.example", "alice@example.test")
        tail = d.output().split("triplets loaded from")[-1]
        self.assertIn("client_address=127.0.9.1, sender=b@", tail)
        self.assertNotIn("reason=new, client_name=unknown, client_address=127.0.9.1, sender=b@", tail,
                         "the pending triplet was remembered")

    def test_periodic_snapshot_survives_a_crash(self):
        """The worker's snapshot (every FRUGAL_TEST_GREYLIST_SAVE seconds here, 60 in service):
        after kill -9 what it wrote is what the next start knows."""
        d = Daemon(extra=GREY + "greylist_delay = 1s\n", env={"FRUGAL_TEST_GREYLIST_SAVE": "0.5"})
        self.addCleanup(d.cleanup)
        d.start()
        store = os.path.join(d.queue, "data", "greylist")
        self.assertEqual(attempt(d, "127.0.9.3", "a@sender.example", "alice@example.test")[0], 450)
        wait_for(lambda: attempt(d, "127.0.9.3", "a@sender.example", "alice@example.test")[0] == 250,
                 10, "the retry after the delay", interval=0.25)

        def saved_passed():
            try:
                with open(store) as f:
                    return any(l.endswith(" 1") for l in f.read().splitlines()[1:])
            except OSError:
                return False
        wait_for(saved_passed, 10, "a snapshot with the passed triplet")
        d.kill9()
        d.start()
        d.wait_log("greylist: 1 triplets loaded from %s" % store)
        self.assertEqual(attempt(d, "127.0.9.3", "a@sender.example", "alice@example.test")[0], 250)
        # the control: a triplet it never saw is greylisted
        self.assertEqual(attempt(d, "127.0.9.3", "z@sender.example", "alice@example.test")[0], 450)

    def test_reload_turns_it_on(self):
        """Off, then check_greylist added and `frugal reload`: the table and its store come at the reload."""
        d = Daemon()
        self.addCleanup(d.cleanup)
        d.start()
        self.assertEqual(attempt(d, "127.0.9.4", "a@sender.example", "alice@example.test")[0], 250,
                         "the control: without the word nothing is greylisted")
        self.assertFalse(d.log_has("greylist: table of"))
        with open(os.path.join(d.dir, "frugal.conf"), "a") as f:
            f.write(GREY)
        r = run_frugal("reload", "-c", d.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        d.wait_log("greylist: table of 65536 triplets (2359376 bytes)")
        self.assertEqual(attempt(d, "127.0.9.4", "a@sender.example", "alice@example.test")[0], 450)

    def test_corrupt_store(self):
        d = Daemon(extra=GREY + "greylist_delay = 1s\n")
        self.addCleanup(d.cleanup)
        os.makedirs(os.path.join(d.queue, "data"), exist_ok=True)
        store = os.path.join(d.queue, "data", "greylist")
        with open(store, "wb") as f:
            f.write(os.urandom(4096))
        d.start()
        d.wait_log("warning: greylist: %s is not a greylist store (bad header); ignored" % store)
        self.assertEqual(attempt(d, "127.0.9.2", "a@sender.example", "alice@example.test")[0], 450)
        d.stop()
        # a good header, one good record and damage around it
        with open(store) as f:
            head, rec = f.read().splitlines()[:2]
        with open(store, "w") as f:
            f.write(head + "\n" + "zz\n" + rec + "\n" + "0123456789abcdef 9 1 1\n" + "\x00\xff garbage\n"
                    + rec[:10])
        d.start()
        d.wait_log("warning: greylist: %s: 4 corrupt records ignored, 1 triplets loaded" % store)
        attempt(d, "127.0.9.2", "a@sender.example", "alice@example.test")
        tail = d.output().split("corrupt records ignored")[-1]
        self.assertIn("client_address=127.0.9.2, sender=a@", tail)
        self.assertNotIn("reason=new, client_name=unknown, client_address=127.0.9.2, sender=a@", tail,
                         "the record that parsed was used")


class Bounded(unittest.TestCase):
    """More triplets than greylist_table_size: memory stays put, a passed
    triplet survives the churn (pending entries go first), an old pending one
    is forgotten."""
    N = 2000
    SIZE = 256

    def churn(self, d, n, tag):
        per = 100
        for c in range(n // per):
            src = "127.%d.%d.1" % (20 + c // 200, c % 200)
            r = From(d.port, src)
            try:
                self.assertEqual(r.reply()[0], 220)
                self.assertEqual(r.cmd("EHLO c.example.org")[0], 250)
                # pipelined: MAIL, RCPT, RSET per triplet
                r.send("".join("MAIL FROM:<%s%dq%dz@churn.example>\r\nRCPT TO:<alice@example.test>\r\nRSET\r\n"
                               % (tag, c, i) for i in range(per)).encode())
                for i in range(per):
                    self.assertEqual(r.reply()[0], 250)
                    self.assertEqual(r.reply()[0], 450)
                    self.assertEqual(r.reply()[0], 250)
            finally:
                r.close()

    def test_table_is_bounded(self):
        d = Daemon(extra=GREY + "greylist_delay = 1s\ngreylist_table_size = %d\n" % self.SIZE +
                   "smtpd_hard_error_limit = 100000\nsmtpd_soft_error_limit = 100000\n")
        self.addCleanup(d.cleanup)
        d.start()
        d.wait_log("greylist: table of %d triplets" % self.SIZE)
        self.assertEqual(attempt(d, "127.0.10.1", "old-pending@sender.example", "alice@example.test")[0], 450)
        self.assertEqual(attempt(d, "127.0.10.1", "known@sender.example", "alice@example.test")[0], 450)
        wait_for(lambda: attempt(d, "127.0.10.1", "known@sender.example", "alice@example.test")[0] == 250,
                 10, "the retry after the delay", interval=0.25)
        t0 = time.monotonic()
        self.churn(d, 600, "a")          # the table is full from here on
        before = d.next_status()["use_mem"]
        self.churn(d, self.N - 600, "b")
        took = time.monotonic() - t0
        after = d.next_status()["use_mem"]
        print("\n  %d triplets in %.1f s; use_mem %d -> %d bytes" % (self.N, took, before, after),
              file=sys.stderr)
        # 1400 more entries would have been 56 KiB
        self.assertLess(after - before, 16 * 1024, "memory did not grow with the triplets")
        self.assertEqual(attempt(d, "127.0.10.1", "known@sender.example", "alice@example.test")[0], 250,
                         "a passed triplet survives a flood of new ones")
        code, _ = attempt(d, "127.0.10.1", "old-pending@sender.example", "alice@example.test")
        self.assertEqual(code, 450)
        d.wait_log("reason=new, client_name=unknown, client_address=127.0.10.1, sender=old-pending@")
        self.assertEqual(d.output().count("reason=new, client_name=unknown, client_address=127.0.10.1, "
                                          "sender=old-pending@"), 2, "the old pending triplet was evicted")
        # the store holds at most the table
        self.assertEqual(d.stop(), 0)
        with open(os.path.join(d.queue, "data", "greylist")) as f:
            self.assertLessEqual(len(f.read().splitlines()) - 1, self.SIZE)


if __name__ == "__main__":
    unittest.main()
