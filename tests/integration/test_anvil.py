"""tests/integration/test_anvil.py: per-client limits (Postfix's anvil, in-process:
smtpd/anvil.c) and the error counters. Clients come from several 127.0.0.0/8
source addresses, which the daemon sees as different clients; the harness's
mynetworks (10.255.255.0/24) holds none of them, so none is exempt unless a
test says so."""
import socket
import sys
import time
import unittest

from harness import Daemon, Raw, wait_for, SLOW


class From(Raw):
    """A raw SMTP connection from a chosen loopback source address."""

    def __init__(self, port, src, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW,
                                          source_address=(src, 0))
        self.f = self.s.makefile("rb")


def banner(port, src):
    """The greeting's (code, text) for a connection from src, then QUIT."""
    r = From(port, src)
    try:
        code, text = r.reply()
        if code == 220:
            r.cmd("QUIT")
        return code, text
    finally:
        r.close()


class Limits(unittest.TestCase):
    """Each limit with Postfix's reply and warning; another address is unaffected."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(extra="smtpd_client_connection_count_limit = 2\n"
                             "smtpd_client_connection_rate_limit = 6\n"
                             "smtpd_client_message_rate_limit = 2\n"
                             "smtpd_client_recipient_rate_limit = 2\n"
                             "anvil_rate_time_unit = 3600s\n"
                             "mynetworks = 127.0.5.0/24\n").start()

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def session(self, src):
        r = From(self.d.port, src)
        self.assertEqual(r.reply()[0], 220)
        self.assertEqual(r.cmd("EHLO c.example.org")[0], 250)
        return r

    def test_connection_count(self):
        held = [self.session("127.0.1.1") for _ in range(2)]
        code, text = banner(self.d.port, "127.0.1.1")
        self.assertEqual(code, 421, text)
        self.assertIn("421 4.7.0 mx.example.test Error: too many connections from 127.0.1.1", text)
        self.d.wait_log("warning: Connection concurrency limit exceeded: 3 from unknown[127.0.1.1] "
                        "for service smtp")
        self.assertEqual(banner(self.d.port, "127.0.1.2")[0], 220, "another client is not affected")
        # a connection that ends gives its place back (the disconnect reaches the table)
        held.pop().close()
        wait_for(lambda: banner(self.d.port, "127.0.1.1")[0] == 220, 10, "a place after a disconnect")
        for r in held:
            r.close()

    def test_message_rate(self):
        r = self.session("127.0.3.1")
        for _ in range(2):
            self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
            self.assertEqual(r.cmd("RSET")[0], 250)
        code, text = r.cmd("MAIL FROM:<s@example.org>")
        self.assertEqual(code, 450, text)
        self.assertIn("450 4.7.1 Error: too much mail from 127.0.3.1", text)
        self.d.wait_log("warning: Message delivery request rate limit exceeded: 3 from unknown[127.0.3.1] "
                        "for service smtp")
        r.close()
        # per client, not per session: a new connection is still over
        r = self.session("127.0.3.1")
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 450)
        r.close()
        r = self.session("127.0.3.2")
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250, "another client is not affected")
        r.close()

    def test_recipient_rate(self):
        r = self.session("127.0.4.1")
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<bob@example.test>")[0], 250)
        code, text = r.cmd("RCPT TO:<alice@example.test>")
        self.assertEqual(code, 450, text)
        self.assertIn("450 4.7.1 Error: too many recipients from 127.0.4.1", text)
        self.d.wait_log("warning: Recipient address rate limit exceeded: 3 from unknown[127.0.4.1] "
                        "for service smtp")
        # the two accepted still make a message
        self.assertEqual(r.cmd("DATA")[0], 354)
        self.assertEqual(r.cmd("Subject: t\r\n\r\nx\r\n.")[0], 250)
        r.close()
        r = self.session("127.0.4.2")
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 250, "another client is not affected")
        r.close()

    def test_connection_rate(self):
        for i in range(6):
            self.assertEqual(banner(self.d.port, "127.0.2.1")[0], 220, "connection %d" % (i + 1))
        code, text = banner(self.d.port, "127.0.2.1")
        self.assertEqual(code, 421, text)
        self.assertIn("421 4.7.0 mx.example.test Error: too many connections from 127.0.2.1", text)
        self.d.wait_log("warning: Connection rate limit exceeded: 7 from unknown[127.0.2.1] for service smtp")
        self.assertEqual(banner(self.d.port, "127.0.2.2")[0], 220, "another client is not affected")

    def test_mynetworks_is_exempt_by_default(self):
        held = [self.session("127.0.5.1") for _ in range(4)]       # count limit 2
        for _ in range(3):                                           # message rate 2
            self.assertEqual(held[0].cmd("MAIL FROM:<s@example.org>")[0], 250)
            self.assertEqual(held[0].cmd("RSET")[0], 250)
        for r in held:
            r.close()
        for _ in range(8):                                           # connection rate 6
            self.assertEqual(banner(self.d.port, "127.0.5.1")[0], 220)
        # negative control: the same from outside mynetworks is limited
        held = [self.session("127.0.6.1") for _ in range(2)]
        self.assertEqual(banner(self.d.port, "127.0.6.1")[0], 421)
        for r in held:
            r.close()


class Exceptions(unittest.TestCase):
    def test_explicit_list_replaces_mynetworks(self):
        d = Daemon(extra="smtpd_client_connection_count_limit = 1\n"
                         "mynetworks = 127.0.5.0/24\n"
                         "smtpd_client_event_limit_exceptions = 127.0.7.0/24\n").start()
        try:
            held = [From(d.port, "127.0.7.9") for _ in range(3)]
            for r in held:
                self.assertEqual(r.reply()[0], 220)
            held2 = From(d.port, "127.0.5.9")
            self.assertEqual(held2.reply()[0], 220)
            self.assertEqual(banner(d.port, "127.0.5.9")[0], 421, "mynetworks is no exception now")
            for r in held + [held2]:
                r.close()
        finally:
            d.cleanup()


class Window(unittest.TestCase):
    UNIT = 2

    def test_rate_window_expires(self):
        d = Daemon(extra="smtpd_client_connection_rate_limit = 2\n"
                         "smtpd_client_message_rate_limit = 1\n"
                         "anvil_rate_time_unit = %ds\n" % self.UNIT).start()
        try:
            t0 = time.monotonic()
            r = From(d.port, "127.0.9.1")
            self.assertEqual(r.reply()[0], 220)
            self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
            self.assertEqual(r.cmd("RSET")[0], 250)
            self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 450)
            self.assertEqual(banner(d.port, "127.0.9.1")[0], 220)
            self.assertEqual(banner(d.port, "127.0.9.1")[0], 421)
            refused_at = time.monotonic() - t0
            if refused_at >= self.UNIT:
                self.skipTest("too slow to fill the window within %d s (%.1f s)" % (self.UNIT, refused_at))
            # waiting out the window is the behaviour under test; poll for its end
            wait_for(lambda: banner(d.port, "127.0.9.1")[0] == 220, 10, "the window to pass", interval=0.1)
            opened = time.monotonic() - t0
            self.assertGreaterEqual(opened, self.UNIT - 0.2, "refused until the window passed")
            # the message rate started again too, in the session that waited
            self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
            r.close()
            print("\n  refused at %.2f s, admitted again at %.2f s (window %d s)" % (refused_at, opened, self.UNIT),
                  file=sys.stderr)
        finally:
            d.cleanup()


class Churn(unittest.TestCase):
    """2000 addresses against a table of 256: a known client is not forgotten, memory stays put."""
    N = 2000

    def batch(self, d, addrs):
        conns = [From(d.port, a) for a in addrs]
        for r in conns:
            self.assertEqual(r.reply()[0], 220)
        for r in conns:
            r.close()

    def test_churn_does_not_flush(self):
        d = Daemon(extra="anvil_table_size = 256\n"
                         "smtpd_client_connection_rate_limit = 3\n"
                         "anvil_rate_time_unit = 3600s\n"
                         "mynetworks = 127.0.12.0/24\n").start()
        try:
            self.batch(d, ["127.0.12.1"] * 50)   # warm-up (exempt): 50 sessions at once, as in the churn
            live = From(d.port, "127.0.8.1")                 # a heavy client, still connected
            self.assertEqual(live.reply()[0], 220)
            idle = "127.0.8.2"                               # and one that has gone quiet
            for _ in range(3):
                self.assertEqual(banner(d.port, idle)[0], 220)
            self.assertEqual(banner(d.port, "127.0.8.1")[0], 220)
            self.assertEqual(banner(d.port, "127.0.8.1")[0], 220)
            d.wait_log("anvil: table of 256 clients")
            t0 = time.monotonic()
            addrs = ["127.%d.%d.%d" % (10 + i // 62500, (i // 250) % 250, 1 + i % 250) for i in range(self.N)]
            self.assertEqual(len(set(addrs)), self.N)
            for b in range(0, self.N, 50):
                if b == 1200:
                    # by now the resolver's cache of client names (bounded too: 1000 names,
                    # 256 KiB; core/dns.c) is full; from here on memory must stay put
                    before = d.next_status()["use_mem"]
                self.batch(d, addrs[b:b + 50])
            took = time.monotonic() - t0
            d.wait_log("anvil table full (256 clients")
            # both are still known: their next connection is over the rate
            self.assertEqual(banner(d.port, "127.0.8.1")[0], 421, "the live client was not forgotten")
            self.assertEqual(banner(d.port, idle)[0], 421, "the idle client (within its window) was not forgotten")
            # what the bound costs: a new client finds no room and is not rate limited
            for _ in range(5):
                self.assertEqual(banner(d.port, "127.0.8.3")[0], 220)
            self.assertEqual(live.cmd("NOOP")[0], 250)
            live.close()
            after = d.next_status()["use_mem"]
            print("\n  %d addresses in %.1f s; use_mem %d -> %d bytes" % (self.N, took, before, after),
                  file=sys.stderr)
            # the table was made whole at the first connection; 800 more entries would be 56 KiB
            self.assertLess(after - before, 16 * 1024, "memory did not grow with the addresses")

        finally:
            d.cleanup()


class ErrorSleep(unittest.TestCase):
    def test_error_sleep_does_not_delay_others(self):
        d = Daemon(extra="smtpd_soft_error_limit = 1\nsmtpd_error_sleep_time = 3s\n").start()
        try:
            a = From(d.port, "127.0.11.1")
            self.assertEqual(a.reply()[0], 220)
            self.assertEqual(a.cmd("FOO")[0], 500)
            self.assertEqual(a.cmd("FOO")[0], 500)           # past the soft limit: a's next command waits
            t0 = time.monotonic()
            a.send("NOOP\r\n")
            b = From(d.port, "127.0.11.2")
            self.assertEqual(b.reply()[0], 220)
            for line in ("EHLO c.example.org", "MAIL FROM:<s@example.org>", "RCPT TO:<alice@example.test>",
                         "RSET", "QUIT"):
                self.assertLess(b.cmd(line)[0], 300)
            b_took = time.monotonic() - t0
            self.assertEqual(a.reply()[0], 250)
            a_took = time.monotonic() - t0
            print("\n  the sleeping session's reply after %.2f s; the other session's 6 replies in %.3f s"
                  % (a_took, b_took), file=sys.stderr)
            self.assertGreaterEqual(a_took, 2.5, "the error sleep happened (negative control)")
            self.assertLess(b_took, 1.0 * SLOW, "another session was not delayed by it")
            a.close()
        finally:
            d.cleanup()


class StressErrorLimits(unittest.TestCase):
    """smtpd_hard_error_limit and smtpd_junk_command_limit take their ${stress?...} values
    (PRODUCT.md: 1 and 1) once stress mode is on, in live sessions too; normal values before."""

    def test_stress_values_are_honoured(self):
        d = Daemon(extra="limits_source = rlimit\nsmtpd_concurrency_limit = 10\nstress_threshold = 80%\n").start()
        try:
            early = From(d.port, "127.0.13.1")
            self.assertEqual(early.reply()[0], 220)
            # normal mode: 20 errors, 100 junk commands
            self.assertEqual(early.cmd("FOO")[0], 500)
            for _ in range(3):
                self.assertEqual(early.cmd("NOOP")[0], 250)
            idle = [From(d.port, "127.0.13.1") for _ in range(7)]
            for r in idle:
                self.assertEqual(r.reply()[0], 220)
            d.wait_log("stress mode on")

            def stressed():   # the sampler's verdict reaches the loop asynchronously: probe until it has
                p = From(d.port, "127.0.13.3")
                try:
                    p.reply()
                    p.cmd("FOO")   # 500, then (Postfix: before the next command) 421 if stressed
                    p.send("NOOP\r\n")
                    return p.reply()[0] == 421
                finally:
                    p.close()
            wait_for(stressed, 10, "stress values on the loop", interval=0.05)
            # a live session takes the stress values: one more error is its last
            self.assertEqual(early.cmd("FOO")[0], 500)
            code, text = early.reply()
            self.assertEqual(code, 421, text)
            self.assertIn("421 4.7.0 mx.example.test Error: too many errors", text)
            self.assertTrue(early.closed())
            # a new one: the second junk command is an error, and with a hard limit of 1, the end
            r = From(d.port, "127.0.13.2")
            self.assertEqual(r.reply()[0], 220)
            self.assertEqual(r.cmd("NOOP")[0], 250)
            r.send("NOOP\r\n")
            replies = [r.reply() for _ in range(2)]
            # as Postfix: the junk command is answered, the error counted, 421 before the next
            self.assertEqual([c for c, _ in replies], [250, 421], replies)
            self.assertTrue(r.closed())
            d.wait_log("too many errors after command from unknown[127.0.13.2]")
            for x in idle:
                x.close()
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
