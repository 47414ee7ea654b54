"""tests/integration/test_screen.py: the screen before the session
(smtpd/screen.c, smtpd/screen_cache.c; issue 17's postscreen part) against
a loopback DNS server (dnsserver.py), with clients from many 127.0.0.0/8
source addresses (the harness's mynetworks is 10.255.255.0/24, so every
one of them is screened): weighted DNS list scoring (two lists summing to
the threshold refused, one below passes), reply filters with ranges and
;-lists, a negative weight rescuing a listed client, a slow list bounded by
postscreen_dnsbl_timeout that delays no other client, a pregreet talker
refused; a refused client never becomes a session (no "connect from"
line: a client in mynetworks, not screened, is the negative control); the
pass cache (the second connection greeted at once, also across a restart;
a corrupt cache file is logged and ignored); and the dictionary attack:
2,000 bot connections from 127.1.x.y (listed) and 127.2.x.y (talking
first) while a legitimate client sends mail: at least 99% refused by the
screen (status counter screen_refused), all the mail delivered.
"""
import json
import os
import re
import socket
import threading
import time
import unittest

from dnsserver import DNSServer
from harness import Daemon, run_frugal, wait_for, SLOW

RECORDS = {
    # bl1.test=127.0.0.[2..11]*3, bl2.test*2, al.test=127.0.0.[2;9]*-5; threshold 4
    "2.0.0.127.bl1.test": [("A", "127.0.0.2", 0)],
    "2.0.0.127.bl2.test": [("A", "127.0.0.2", 0)],      # 3 + 2: refused
    "3.0.0.127.bl1.test": [("A", "127.0.0.3", 0)],      # 3: passes
    "4.0.0.127.bl1.test": [("A", "127.0.0.12", 0)],     # outside the range: 0
    "4.0.0.127.bl2.test": [("A", "127.0.0.2", 0)],      # 2: passes
    "5.0.0.127.bl1.test": [("A", "127.0.0.11", 0)],     # top of the range: 3
    "5.0.0.127.bl2.test": [("A", "127.0.0.4", 0)],      # + 2: refused
    "6.0.0.127.bl1.test": [("A", "127.0.0.2", 0)],
    "6.0.0.127.bl2.test": [("A", "127.0.0.2", 0)],
    "6.0.0.127.al.test": [("A", "127.0.0.9", 0)],       # 3 + 2 - 5 = 0: rescued
    "7.0.0.127.bl1.test": [("A", "127.0.0.2", 0)],
    "7.0.0.127.bl2.test": [("A", "127.0.0.2", 0)],
    "7.0.0.127.al.test": [("A", "127.0.0.3", 0)],       # not in the allowlist's filter: 5, refused
    "8.0.0.127.slow.test": [("A", "127.0.0.2", 0)],     # answers after 5 s (delay below)
    "9.0.0.127.al.test": [("A", "127.0.0.2", 0)],       # -5: at or below an allowlist threshold of -1
}
SITES = ("postscreen_dnsbl_sites = bl1.test=127.0.0.[2..11]*3, bl2.test*2, al.test=127.0.0.[2;9]*-5\n"
         "postscreen_dnsbl_threshold = 4\n")


def banner(addr, port, payload=None, timeout=20):
    """Connect from addr; optionally talk first; (first line, seconds until it came)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout * SLOW)
    try:
        s.bind((addr, 0))
        s.connect(("127.0.0.1", port))
        t0 = time.monotonic()
        if payload:
            s.sendall(payload)
        f = s.makefile("rb")
        line = f.readline().decode("latin-1")
        return line, time.monotonic() - t0, s
    except Exception:
        s.close()
        raise


def send_mail(addr, port, rcpt="alice@example.test", n=1):
    """One connection from addr, n messages: the replies' codes."""
    line, _, s = banner(addr, port)
    f = s.makefile("rb")
    codes = [int(line[:3])]

    def cmd(c):
        s.sendall(c.encode() + b"\r\n")
        while True:
            l = f.readline().decode()
            if len(l) < 4 or l[3] != "-":
                return int(l[:3])
    try:
        codes.append(cmd("EHLO legit.example.org"))
        for i in range(n):
            codes.append(cmd("MAIL FROM:<legit@example.org>"))
            codes.append(cmd("RCPT TO:<%s>" % rcpt))
            codes.append(cmd("DATA"))
            codes.append(cmd("Subject: legit %d\r\n\r\nhello\r\n." % i))
        codes.append(cmd("QUIT"))
    finally:
        s.close()
    return codes


def stat(d, name):
    """A counter from the daemon's status file (stat NAME VALUE), or None."""
    try:
        with open(os.path.join(d.queue, "status", "limits.status")) as f:
            m = re.search(r"^stat %s (-?\d+)$" % name, f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


class Screen(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        records = dict(RECORDS)
        # the attack's listed bots: 127.1.x.y on bl1.test
        for x in range(4):
            for y in range(1, 251):
                records["%d.%d.1.127.bl1.test" % (y, x)] = [("A", "127.0.0.2", 0)]
        cls.dns = DNSServer(records, delay={"8.0.0.127.slow.test": 5}).start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def daemon(self, extra):
        d = Daemon(extra, dns=self.dns).start()
        self.addCleanup(d.cleanup)
        return d

    def no_session(self, d, addr):
        self.assertNotRegex(d.output(), r"connect from \S+\[%s\]" % re.escape(addr))

    def test_weighted_scores_filters_and_allowlist(self):
        d = self.daemon(SITES)
        refused = {}
        for addr in ("127.0.0.2", "127.0.0.5", "127.0.0.7"):
            line, _, s = banner(addr, d.port)
            refused[addr] = (line, s.getsockname()[1])
            s.close()
        for addr, (line, port) in refused.items():
            self.assertEqual(line.strip(), "521 5.7.1 Service unavailable; client [%s] blocked using bl1.test" % addr)
            d.wait_log("DNSBL rank 5 for [%s]:%d" % (addr, port))
        # below the threshold (one list; a reply outside the filter), and rescued by the allowlist
        for addr in ("127.0.0.3", "127.0.0.4", "127.0.0.6"):
            codes = send_mail(addr, d.port)
            self.assertEqual(codes, [220, 250, 250, 250, 354, 250, 221], addr)
        d.wait_messages(d.maildir("alice"), 3)
        wait_for(lambda: all(re.search(r"connect from \S+\[%s\]" % re.escape(a), d.output())
                             for a in ("127.0.0.3", "127.0.0.4", "127.0.0.6")), 10, "the passed clients' sessions")
        for addr in refused:
            self.no_session(d, addr)
        self.assertIn("PASS NEW [127.0.0.3]:", d.output())

    def test_allowlist_threshold_skips_the_pregreet_wait(self):
        d = self.daemon(SITES + "smtpd_pregreet_wait = 2s\npostscreen_dnsbl_allowlist_threshold = -1\n")
        line, took, s = banner("127.0.0.9", d.port)
        s.close()
        self.assertTrue(line.startswith("220 "), line)
        self.assertLess(took, 1.0 * SLOW)
        d.wait_log("PASS NEW [127.0.0.9]:")
        self.assertIn("(DNS allowlist, rank -5)", d.output())
        # the control: score 3 (below the threshold, above the allowlist's) waits the whole pregreet wait
        line, took, s = banner("127.0.0.3", d.port)
        s.close()
        self.assertTrue(line.startswith("220 "), line)
        self.assertGreater(took, 1.8)

    def test_action_ignore_logs_and_lets_pass(self):
        d = self.daemon(SITES + "postscreen_dnsbl_action = ignore\n")
        line, _, s = banner("127.0.0.2", d.port)
        port = s.getsockname()[1]
        s.close()
        self.assertTrue(line.startswith("220 "), line)
        d.wait_log("DNSBL rank 5 for [127.0.0.2]:%d" % port)
        d.wait_log("connect from unknown[127.0.0.2]")

    def test_not_screened_in_mynetworks_negative_control(self):
        """A listed client in mynetworks is not screened: it becomes a session
        (so the no_session checks above can fail)."""
        d = self.daemon(SITES + "mynetworks = 127.0.0.2/32\n")
        line, _, s = banner("127.0.0.2", d.port)
        s.close()
        self.assertTrue(line.startswith("220 "), line)
        d.wait_log("connect from unknown[127.0.0.2]")
        self.assertNotIn("DNSBL rank", d.output())

    def test_slow_list_is_bounded_and_delays_no_one_else(self):
        d = self.daemon("postscreen_dnsbl_sites = slow.test*5, bl1.test*3\npostscreen_dnsbl_threshold = 4\n"
                        "postscreen_dnsbl_timeout = 2s\n")
        got = {}

        def slow():
            got["slow"] = banner("127.0.0.8", d.port)
        t = threading.Thread(target=slow)
        t.start()
        wait_for(lambda: self.dns.count("8.0.0.127.slow.test", "A") > 0, 10, "the slow query")
        line, took, s = banner("127.0.0.3", d.port)
        s.close()
        self.assertTrue(line.startswith("220 "), line)
        self.assertLess(took, 1.0 * SLOW)
        t.join(30)
        line, took, s = got["slow"]
        s.close()
        # the listing (5 >= 4) would refuse it, had it come within postscreen_dnsbl_timeout
        self.assertTrue(line.startswith("220 "), line)
        self.assertGreater(took, 1.5)
        self.assertLess(took, 4.5 * SLOW)

    def test_pregreet_talker_refused_before_a_session(self):
        d = self.daemon("smtpd_pregreet_wait = 1s\n")
        line, _, s = banner("127.0.0.20", d.port, payload=b"EHLO bot\r\n")
        port = s.getsockname()[1]
        s.close()
        self.assertTrue(line.startswith("521 5.5.1 "), line)
        d.wait_log("PREGREET 10 after ")
        self.assertRegex(d.output(), r"PREGREET 10 after [0-9.]+ from \[127\.0\.0\.20\]:%d: EHLO bot\\r\\n" % port)
        # a polite client from another address is served meanwhile and after
        self.assertEqual(send_mail("127.0.0.21", d.port), [220, 250, 250, 250, 354, 250, 221])
        d.wait_log("connect from unknown[127.0.0.21]")
        self.no_session(d, "127.0.0.20")
        wait_for(lambda: (stat(d, "screen_refused") or 0) >= 1, 15, "screen_refused in the status file")

    def test_pass_cache_and_restart(self):
        d = self.daemon("smtpd_pregreet_wait = 2s\n")
        line, took, s = banner("127.0.0.30", d.port)
        s.close()
        self.assertTrue(line.startswith("220 "), line)
        self.assertGreater(took, 1.8)
        # remembered: at once
        line, took, s = banner("127.0.0.30", d.port)
        s.close()
        self.assertTrue(line.startswith("220 "), line)
        self.assertLess(took, 1.0 * SLOW)
        d.wait_log("PASS OLD [127.0.0.30]:")
        # another client still waits (the control)
        line, took, s = banner("127.0.0.31", d.port, timeout=20)
        s.close()
        self.assertGreater(took, 1.8)
        # across a restart: saved at stop, loaded at start
        self.assertEqual(d.stop(), 0)
        self.assertTrue(os.path.exists(os.path.join(d.queue, "postscreen_cache")))
        d.start()   # stderr, the log, starts afresh
        self.assertRegex(d.output(), r"postscreen cache: \d+ clients \(\d+ bytes\), 2 loaded")
        line, took, s = banner("127.0.0.30", d.port)
        s.close()
        self.assertTrue(line.startswith("220 "), line)
        self.assertLess(took, 1.0 * SLOW)

    def test_corrupt_cache_file_is_ignored(self):
        d = Daemon("smtpd_pregreet_wait = 1s\n", dns=self.dns)
        self.addCleanup(d.cleanup)
        os.makedirs(d.queue, exist_ok=True)
        with open(os.path.join(d.queue, "postscreen_cache"), "w") as f:
            f.write("frugal-postscreen-cache 1\n127.0.0.40 %d 0\nnot an address 1 2\n" % (time.time() + 3600))
        d.start()
        d.wait_log("postscreen cache ignored: ")
        self.assertIn(":3: bad record", d.output())
        # nothing of it was loaded: the client listed in the good line still waits
        line, took, s = banner("127.0.0.40", d.port)
        s.close()
        self.assertTrue(line.startswith("220 "), line)
        self.assertGreater(took, 0.8)

    def test_dictionary_attack(self):
        """2,000 bots (1,000 listed and silent from 127.1.x.y, 1,000 talking
        first from 127.2.x.y) while a legitimate client sends 20 messages."""
        d = self.daemon("postscreen_dnsbl_sites = bl1.test*3\npostscreen_dnsbl_threshold = 3\n"
                        "smtpd_pregreet_wait = 1s\n")
        bots = [("127.1.%d.%d" % (x, y), None) for x in range(4) for y in range(1, 251)]
        bots += [("127.2.%d.%d" % (x, y), b"EHLO bot\r\nMAIL FROM:<x@y>\r\n") for x in range(4) for y in range(1, 251)]
        results = []
        lock = threading.Lock()

        def bot_worker(chunk):
            for addr, payload in chunk:
                try:
                    line, _, s = banner(addr, d.port, payload, timeout=30)
                    s.close()
                except OSError as e:
                    line = "error %s" % e
                with lock:
                    results.append(line[:3])
        legit = []

        def legit_worker():
            for i in range(5):
                legit.append(send_mail("127.0.0.9", d.port, n=4))
        t0 = time.monotonic()
        threads = [threading.Thread(target=bot_worker, args=(bots[i::40],)) for i in range(40)]
        threads.append(threading.Thread(target=legit_worker))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120 * SLOW)
        took = time.monotonic() - t0
        self.assertEqual(len(results), 2000)
        self.assertEqual(len(legit), 5)
        for codes in legit:
            self.assertEqual(codes, [220, 250] + [250, 250, 354, 250] * 4 + [221])
        d.wait_messages(d.maildir("alice"), 20, timeout=30)
        refused = wait_for(lambda: (lambda n: n if n is not None and n >= 1980 else None)(stat(d, "screen_refused")),
                           15, "screen_refused >= 1980")
        out = d.output()
        sessions = len(re.findall(r"connect from \S+\[127\.[12]\.", out))
        print("\ndictionary attack: 2000 bots in %.1f s: %d refused by the screen, %d bot sessions, "
              "replies %s" % (took, refused, sessions,
                              {c: results.count(c) for c in set(results)}))
        self.assertGreaterEqual(refused, 1980)
        self.assertLessEqual(sessions, 20)
        j = json.loads(run_frugal("status", "-c", d.dir, "--json").stdout)
        self.assertGreaterEqual(j["counters"]["screen_refused"], refused)
        self.assertGreaterEqual(j["counters"]["screen_passed"], 5)   # the legitimate client's connections
        self.assertGreaterEqual(results.count("521"), 1980)


if __name__ == "__main__":
    unittest.main()
