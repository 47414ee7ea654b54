"""`frugal status` and `frugal stop` (DESIGN.md "Status and stop").

status: the running daemon's counters, sessions and queue from the status
file it writes on every limits sample (at most 5 s old, so the tests poll
for the figures with a deadline); the gauges are the limits report's; the
queue is still shown, from disk, when the daemon is stopped (exit 1).
stop: idle sessions get 421 at once, a transaction in DATA may finish
within smtpd_shutdown_timeout (250, then 421), one that stalls past it
gets 421 and is not acknowledged; the daemon exits 0.
"""
import json
import os
import re
import smtplib
import socket
import subprocess
import time
import unittest

from harness import Daemon, Raw, run_frugal, wait_for, FRUGAL, SLOW, VALGRIND

MSG = "From: x@example.test\r\nSubject: status\r\n\r\nhello\r\n"


def status_json(d):
    r = run_frugal("status", "--json", "-c", d.dir)
    return r.returncode, json.loads(r.stdout)


METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? (\S+)$')


def parse_prometheus(text):
    """The text exposition format's rules a textfile collector enforces: every
    sample's family has HELP and TYPE before it, names are valid, each family
    appears in one block, values are numbers. Returns {(name, labels): value}."""
    helped, typed, done, out = set(), {}, set(), {}
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", name), "line %d: bad name %r" % (n, name)
            assert name not in helped, "line %d: second HELP for %s" % (n, name)
            helped.add(name)
            if current and current != name:
                done.add(current)
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name in helped and name == current, "line %d: TYPE without its HELP" % n
            assert typ in ("gauge", "counter"), "line %d: type %s" % (n, typ)
            typed[name] = typ
            continue
        assert not line.startswith("#"), "line %d: stray comment" % n
        m = METRIC.match(line)
        assert m, "line %d: not a sample: %r" % (n, line)
        name, labels, value = m.groups()
        assert name in typed, "line %d: %s without HELP/TYPE before it" % (n, name)
        assert name == current and name not in done, "line %d: %s outside its block" % (n, name)
        if typed[name] == "counter":
            assert name.endswith("_total"), "line %d: counter %s without _total" % (n, name)
        float(value)   # numeric, or raises
        assert (name, labels) not in out, "line %d: duplicate sample" % n
        out[(name, labels)] = float(value)
    return out


class StatusTest(unittest.TestCase):
    def setUp(self):
        # mail to relay.test waits (defer_transports: its transport is relay): a message that stays in the queue
        self.d = Daemon(extra="defer_transports = relay\n").start()

    def tearDown(self):
        self.d.cleanup()

    def test_status_after_mail(self):
        d = self.d
        s = smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW)
        s.sendmail("x@example.test", ["alice@localhost"], MSG)
        s.sendmail("x@example.test", ["alice@localhost", "bob@localhost"], MSG)
        s.sendmail("x@example.test", ["someone@relay.test"], MSG)   # stays queued
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            s.sendmail("x@example.test", ["nobody@localhost"], MSG)
        s.quit()
        d.wait_messages(d.maildir("alice"), 2)
        d.wait_messages(d.maildir("bob"), 1)

        def settled():
            rc, j = status_json(d)
            c = j["counters"]
            ok = (rc == 0 and c["received"] == 3 and c["delivered"] == 3 and c["rejected"] == 1
                  and j["queue"]["active"] + j["queue"]["deferred"] == 1)
            return j if ok else None
        j = wait_for(settled, 20, "status to show the mail sent")
        self.assertTrue(j["running"])
        self.assertGreaterEqual(j["uptime_seconds"], 0)
        self.assertEqual(j["counters"]["bounced"], 0)
        self.assertGreaterEqual(j["counters"]["deferred"], 1)   # each deferral of the relay.test mail
        self.assertGreaterEqual(j["sessions"]["peak"], 1)
        self.assertIsInstance(j["sessions"]["current"], int)
        self.assertIsInstance(j["deliveries"]["in_flight"], int)
        self.assertGreater(j["deliveries"]["limit"], 0)
        self.assertIs(j["stress"], False)
        for k in ("hold", "maildrop", "corrupt", "incoming"):
            self.assertEqual(j["queue"][k], 0, k)
        for k in ("running", "pid", "uptime_seconds", "started", "updated", "stress", "sessions",
                  "deliveries", "queue", "counters", "resources"):
            self.assertIn(k, j)

        # the gauges are `frugal limits`' figures, compared on one status sample
        if VALGRIND:
            self.skipTest("under valgrind `frugal status` and `frugal limits` take longer than the status "
                          "file's period: no sample is the same before and after (the rest above ran)")
        for _ in range(5):
            _, a = status_json(d)
            r = run_frugal("limits", "--json", "-c", d.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
            lim = json.loads(r.stdout)
            _, b = status_json(d)
            if a["updated"] == b["updated"]:
                break
        else:
            self.fail("the status file changed under every comparison")
        rows = {x["name"]: x for x in lim["resources"]}
        self.assertEqual(len(a["resources"]), len(rows))
        self.assertTrue(any(g["used"] is not None for g in a["resources"]))
        for g in a["resources"]:
            row = rows[g["name"]]
            self.assertEqual(g["used"], row["frugal"], g["name"])
            # the report says "unlimited" where status says null
            for k in ("budget", "limit"):
                want = None if row[k] in (None, -1, "unlimited") else row[k]
                self.assertEqual(g[k], want, "%s %s" % (g["name"], k))

        # the terminal view: the same figures, 80 columns
        r = run_frugal("status", "-c", d.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        for line in r.stdout.splitlines():
            self.assertLessEqual(len(line), 80, line)
        self.assertIn("frugal is running: PID: %d" % d.proc.pid, r.stdout)
        self.assertEqual(j["pid"], d.proc.pid)
        self.assertRegex(r.stdout, r"received 3, delivered 3, deferred [1-9]\d*, bounced 0, rejected 1")
        self.assertRegex(r.stdout, r"\n%s\s+\S+ / \S+\s+\[[#. ]{24}\]" % re.escape(a["resources"][0]["name"]))

        # Prometheus: the format's rules, and the same figures
        r = run_frugal("status", "--prometheus", "-c", d.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = parse_prometheus(r.stdout)
        self.assertEqual(m[("frugal_up", None)], 1)
        self.assertEqual(m[("frugal_messages_received_total", None)], 3)
        self.assertEqual(m[("frugal_recipients_total", '{status="sent"}')], 3)
        self.assertEqual(m[("frugal_rejects_total", None)], 1)
        self.assertEqual(m[("frugal_queue_messages", '{queue="active"}')]
                         + m[("frugal_queue_messages", '{queue="deferred"}')], 1)
        self.assertTrue(any(k[0].startswith("frugal_resource_") for k in m))

    def test_prometheus_parser_catches_errors(self):
        """Negative control: the parser refuses what a textfile collector would."""
        good = "# HELP frugal_x x\n# TYPE frugal_x gauge\nfrugal_x 1\n"
        parse_prometheus(good)
        for bad in ("frugal_x 1\n",                                              # no HELP/TYPE
                    "# HELP frugal_x x\n# TYPE frugal_x gauge\nfrugal_x one\n",   # not a number
                    "# HELP 1x x\n# TYPE 1x gauge\n1x 1\n",                      # bad name
                    "# HELP frugal_c c\n# TYPE frugal_c counter\nfrugal_c 1\n",  # counter without _total
                    good + "# HELP frugal_y y\n# TYPE frugal_y gauge\nfrugal_x 2\n"):  # outside its block
            with self.assertRaises((AssertionError, ValueError), msg=bad):
                parse_prometheus(bad)

    def test_status_daemon_stopped(self):
        d = self.d
        s = smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW)
        s.sendmail("x@example.test", ["someone@relay.test"], MSG)
        s.quit()
        self.assertEqual(d.stop(), 0)
        r = run_frugal("status", "-c", d.dir)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not running", r.stderr)
        self.assertIn("deferred 1", r.stdout)
        r = run_frugal("status", "--json", "-c", d.dir)
        self.assertEqual(r.returncode, 1)
        j = json.loads(r.stdout)
        self.assertIs(j["running"], False)
        self.assertEqual(j["queue"]["deferred"], 1)
        self.assertEqual(j["queue"]["active"], 0)
        r = run_frugal("status", "--prometheus", "-c", d.dir)
        self.assertEqual(r.returncode, 1)
        m = parse_prometheus(r.stdout)
        self.assertEqual(m[("frugal_up", None)], 0)


class StopTest(unittest.TestCase):
    def start(self, bound):
        self.d = Daemon(extra="smtpd_shutdown_timeout = %ds\n" % bound).start()
        return self.d

    def tearDown(self):
        self.d.cleanup()

    def in_data(self, d):
        c = Raw(d.port, timeout=30)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<x@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<alice@localhost>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send("From: x@example.test\r\nSubject: in flight\r\n\r\nfirst half\r\n")
        return c

    def stop(self, d):
        return subprocess.Popen([FRUGAL, "stop", "-c", d.dir], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def test_transaction_finishes_within_bound(self):
        d = self.start(20)
        busy = self.in_data(d)
        idle = Raw(d.port, timeout=30)
        self.assertEqual(idle.reply()[0], 220)
        self.assertEqual(idle.cmd("EHLO idle.test")[0], 250)
        t0 = time.monotonic()
        stopper = self.stop(d)
        code, text = idle.reply()                      # the idle session goes at once
        self.assertEqual(code, 421, text)
        self.assertIn("4.3.2", text)
        wait_for(lambda: d.log_has("terminating on signal"), 10, "the stop to begin")
        with self.assertRaises(OSError):               # no more listeners
            socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
        busy.send("second half\r\n.\r\n")
        code, text = busy.reply()
        self.assertEqual(code, 250, text)              # acknowledged...
        code, text = busy.reply()
        self.assertEqual(code, 421, text)              # ...then told the service closes
        out, err = stopper.communicate(timeout=30 * SLOW)   # returns once the daemon is gone
        self.assertEqual(stopper.returncode, 0, err)
        self.assertEqual(d.proc.wait(30 * SLOW), 0)
        self.assertLess(time.monotonic() - t0, 20 * SLOW)   # not held to the bound
        # the acknowledged message is on disk and delivered after a restart
        d.start()
        got = d.wait_messages(d.maildir("alice"), 1)
        self.assertIn(b"second half", got[0])

    def test_stalled_transaction_gets_421_at_bound(self):
        bound = 2
        d = self.start(bound)
        busy = self.in_data(d)
        t0 = time.monotonic()
        stopper = self.stop(d)
        code, text = busy.reply()                      # nothing sent: the bound closes it
        waited = time.monotonic() - t0
        self.assertEqual(code, 421, text)
        self.assertIn("4.3.2", text)
        self.assertGreaterEqual(waited, bound - 0.5)   # it was given the bound, not cut at once
        out, err = stopper.communicate(timeout=30 * SLOW)   # returns once the daemon is gone
        self.assertEqual(stopper.returncode, 0, err)
        self.assertEqual(d.proc.wait(30 * SLOW), 0)
        self.assertLess(time.monotonic() - t0, (bound + 10) * SLOW)
        # not acknowledged, not queued: nothing delivered after a restart
        d.start()
        rc, j = status_json(d)
        self.assertEqual(j["queue"]["active"] + j["queue"]["deferred"], 0)
        self.assertEqual(d.messages(d.maildir("alice")), [])


if __name__ == "__main__":
    unittest.main()
