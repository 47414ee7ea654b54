"""tests/integration/test_iofault.py: system calls that fail (PRODUCT.md
section 3, guarantees 1 and 3), injected into the real daemon by the
LD_PRELOAD shim build/tests/faultshim.so (tests/emul/faultshim.c). The
shim is armed by a file this test creates once the daemon listens, and
disarmed by removing it, so start-up is never faulted. Each case checks:
the client gets the documented reply, a warning names the resource, the
shim's own log shows the fault really fired, the daemon goes on serving
(a transaction after disarming is delivered), and nothing that got 250 is
lost (a message acknowledged before a delivery-side fault stays queued and
arrives once after the disarm, not bounced).
"""
import os
import sys
import time
import unittest

from harness import Daemon, Raw, ROOT, wait_for, free_port, SLOW
from test_smtp_client import PySink
from test_container import cpu_seconds

SO = os.path.join(ROOT, "build", "tests", "faultshim.so")
MSG = "From: s@example.org\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\n%s\r\n"


def body(tag, size=200):
    line = ("%s " % tag) * 10
    return "\r\n".join(line for _ in range(max(1, size // len(line))))


class IOFaultBase(unittest.TestCase):
    """The shim's plumbing and the transaction helpers (no tests: test_iofault_tls.py reuses it)."""

    def setUp(self):
        if not os.path.exists(SO):
            self.skipTest("build/tests/faultshim.so not built (make build/tests/faultshim.so)")

    def daemon(self, rules, extra="", before_start=None):
        """before_start(d): run once the config is written (e.g. `frugal passwd`), unarmed."""
        d = Daemon(extra=extra)
        self.addCleanup(d.cleanup)
        if before_start:
            before_start(d)
        self.arm = os.path.join(d.dir, "arm")
        self.faults = os.path.join(d.dir, "faults")
        rules = rules.format(q=d.queue, m=d.maildir_base, d=d.dir)
        d.env = {"LD_PRELOAD": SO, "FAULTSHIM": rules, "FAULTSHIM_ARM": self.arm,
                 "FAULTSHIM_LOG": self.faults,
                 # ASan wants to be first in the library list; harmless without ASan
                 "ASAN_OPTIONS": ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""),
                                                      "verify_asan_link_order=0") if x)}
        d.start()
        self.assertFalse(os.path.exists(self.faults), "a fault fired before arming")
        return d

    def set_armed(self, on):
        if on:
            open(self.arm, "w").close()
        elif os.path.exists(self.arm):
            os.unlink(self.arm)

    def fired(self, func=None):
        if not os.path.exists(self.faults):
            return []
        with open(self.faults) as f:
            lines = f.read().splitlines()
        return [l for l in lines if func is None or l.split()[1].startswith(func)]

    def transaction(self, port, tag, rcpt="alice@example.test", size=200):
        """One transaction: the end-of-DATA reply as (code, text)."""
        r = Raw(port, timeout=20 * SLOW)
        self.assertEqual(r.reply()[0], 220)
        self.assertEqual(r.cmd("EHLO c.example.org")[0], 250)
        self.assertEqual(r.cmd("MAIL FROM:<s@example.org>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<%s>" % rcpt)[0], 250)
        self.assertEqual(r.cmd("DATA")[0], 354)
        r.send((MSG % (tag, body(tag, size)) + ".\r\n").encode())
        code, text = r.reply()
        r.cmd("QUIT")
        r.close()
        return code, text

    def delivered(self, d, tag):
        return [m for m in d.messages(d.maildir("alice")) if ("Subject: %s\r\n" % tag).encode() in m
                or ("Subject: %s\n" % tag).encode() in m]

    def wait_delivered(self, d, tag, timeout=15):
        wait_for(lambda: self.delivered(d, tag), timeout * SLOW, "message %s delivered" % tag)
        got = self.delivered(d, tag)
        self.assertEqual(len(got), 1, "message %s delivered %d times" % (tag, len(got)))
        return got[0]



class IOFault(IOFaultBase):
    # ---- the spool, before 250 ---------------------------------------------

    def spool_refused(self, rule, want, warning):
        d = self.daemon(rule)
        self.set_armed(True)
        code, text = self.transaction(d.port, "faulted")
        self.assertTrue(self.fired(), "the fault never fired: the case proves nothing")
        self.assertEqual(text.strip(), want)
        d.wait_log(warning)
        self.set_armed(False)
        code, _ = self.transaction(d.port, "after")
        self.assertEqual(code, 250)
        self.wait_delivered(d, "after")
        # nothing that was refused arrives (the client will send it again)
        wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 15 * SLOW, "queue empty")
        self.assertEqual(self.delivered(d, "faulted"), [])
        return d

    def test_spool_write_enospc_452(self):
        self.spool_refused("write:ENOSPC:path={q}/incoming/", "452 4.3.1 Insufficient system storage",
                           "queue file system: No space left on device")

    def test_spool_write_eio_451(self):
        self.spool_refused("write:EIO:path={q}/incoming/", "451 4.3.0 Error: queue file write error",
                           "queue file: Input/output error")

    def test_spool_sync_eio_451(self):
        # the sync after the rename into committed/: the file is there, but not durable
        self.spool_refused("syncfs:EIO:path={q}/committed/", "451 4.3.0 Error: queue file write error",
                           "queue file: Input/output error")

    def test_spool_rename_eio_451(self):
        # the rename into committed/ of a fully written file
        self.spool_refused("rename:EIO:path={q}/committed/", "451 4.3.0 Error: queue file write error",
                           "queue file: Input/output error")

    def test_spool_open_emfile_451(self):
        # Postfix's answer when cleanup cannot create the queue file; the warning names
        # the queue file and the errno (descriptors)
        d = self.spool_refused("open:EMFILE:path={q}/incoming/", "451 4.3.0 Error: queue file write error",
                               "queue file: Too many open files")
        self.assertTrue(self.fired("open"))

    def test_spool_short_writes_intact(self):
        d = self.daemon("write:SHORT:path={q}/")
        self.set_armed(True)
        # big enough to bypass the 32 KB write buffer, small lines for the stamps
        code, text = self.transaction(d.port, "short", size=100000)
        self.assertEqual(code, 250, text)
        self.assertGreater(len(self.fired("write")) + len(self.fired("pwrite")), 3)
        self.set_armed(False)
        got = self.wait_delivered(d, "short")
        self.assertIn(body("short", 100000).encode(), got.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

    # ---- the Maildir, after 250: nothing acknowledged is lost ----------------

    def maildir_deferred(self, rule, deferred="status=deferred"):
        d = self.daemon(rule)
        self.set_armed(True)
        code, text = self.transaction(d.port, "acked")
        self.assertEqual(code, 250, text)
        wait_for(lambda: self.fired(), 15 * SLOW, "the fault to fire at delivery")
        d.wait_log(deferred, timeout=15 * SLOW)
        self.assertEqual(self.delivered(d, "acked"), [])
        self.assertTrue(os.listdir(os.path.join(d.queue, "committed")), "the acknowledged message left the queue")
        # a retry while still faulted is deferred again, not bounced
        n = len(self.fired())
        wait_for(lambda: len(self.fired()) > n, 15 * SLOW, "a retry while faulted")
        self.set_armed(False)
        self.wait_delivered(d, "acked")
        code, _ = self.transaction(d.port, "after")
        self.assertEqual(code, 250)
        self.wait_delivered(d, "after")
        log = d.output()
        self.assertNotIn("status=bounced", log)
        self.assertEqual(len(self.delivered(d, "acked")), 1)
        return log

    def test_maildir_write_enospc_deferred_then_delivered(self):
        log = self.maildir_deferred("write:ENOSPC:path={m}/")
        self.assertIn("No space left on device", log)

    def test_maildir_write_eio_deferred_then_delivered(self):
        log = self.maildir_deferred("write:EIO:path={m}/")
        self.assertIn("Input/output error", log)

    def test_maildir_sync_eio_deferred_then_delivered(self):
        log = self.maildir_deferred("syncfs:EIO:path={m}/;fsync:EIO:path={m}/")
        self.assertIn("Input/output error", log)

    def test_maildir_rename_eio_deferred_then_delivered(self):
        # tmp/ -> new/: the last step of a Maildir delivery
        log = self.maildir_deferred("rename:EIO:path={m}/")
        self.assertIn("Input/output error", log)

    def test_queue_file_open_emfile_at_delivery_deferred(self):
        # the acknowledged queue file cannot be opened for delivery (no descriptor left):
        # qmgr postpones it (it cannot read the envelope to log a status) and retries
        self.maildir_deferred("open:EMFILE:path={q}/committed/",
                              deferred="cannot read queue file: Too many open files: delivery postponed")

    # ---- accept ---------------------------------------------------------------

    def accept_paused(self, err):
        d = self.daemon("accept:%s" % err)
        self.set_armed(True)
        r = Raw(d.port, timeout=20 * SLOW)     # in the backlog: accept() fails for it
        wait_for(lambda: self.fired("accept"), 10 * SLOW, "accept() to be faulted")
        pid = d.smtpd_pid()
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        wait_for(lambda: time.monotonic() - t0 > 2.0, 5, "two seconds at the fault", interval=0.2)
        cpu = cpu_seconds(pid) - cpu0
        n = len(self.fired("accept"))
        print("\n  accept %s: frugal CPU %.2f s over 2 s, %d faulted accept() calls" % (err, cpu, n), file=sys.stderr)
        self.assertLess(cpu, 0.5, "no busy loop while accept() fails")
        self.assertLess(n, 50, "accept() retried in a loop")
        self.assertTrue(d.log_has("exhausted"), d.output()[-2000:])
        self.set_armed(False)
        # the waiting client is served once the listener resumes
        self.assertEqual(r.reply()[0], 220)
        r.cmd("QUIT")
        r.close()
        code, _ = self.transaction(d.port, "after")
        self.assertEqual(code, 250)
        self.wait_delivered(d, "after")
        return d

    def test_accept_emfile_pauses_then_resumes(self):
        d = self.accept_paused("EMFILE")
        self.assertIn("descriptors (RLIMIT_NOFILE)", d.output())

    def test_accept_enfile_pauses_then_resumes(self):
        d = self.accept_paused("ENFILE")
        self.assertIn("descriptors (numfile/file-max)", d.output())

    def test_accept_enomem_pauses_then_resumes(self):
        d = self.accept_paused("ENOMEM")
        self.assertIn("kernel memory", d.output())

    def test_accept_enobufs_pauses_then_resumes(self):
        d = self.accept_paused("ENOBUFS")
        self.assertIn("socket buffers", d.output())

    # ---- outbound delivery: socket() and connect() ----------------------------

    def outbound(self, rule, err_text):
        port = free_port()
        sink = PySink(("127.0.0.1", port))
        self.addCleanup(sink.stop)
        d = self.daemon(rule, extra="transport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n" % port)
        self.set_armed(True)
        code, text = self.transaction(d.port, "relayed", rcpt="u@relay.test")
        self.assertEqual(code, 250, text)
        wait_for(lambda: self.fired(), 15 * SLOW, "the fault to fire at delivery")
        d.wait_log("status=deferred", timeout=15 * SLOW)
        self.assertEqual(sink.messages, [])
        self.set_armed(False)
        wait_for(lambda: sink.messages, 20 * SLOW, "the deferred message at the sink")
        wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 15 * SLOW, "queue empty")
        self.assertEqual(len(sink.messages), 1)
        self.assertIn(b"Subject: relayed", sink.messages[0][2] if isinstance(sink.messages[0][2], bytes)
                      else sink.messages[0][2].encode())
        log = d.output()
        self.assertIn(err_text, log)
        self.assertNotIn("status=bounced", log)

    def test_socket_enomem_defers_then_delivered(self):
        self.outbound("socket:ENOMEM:stream", "Cannot allocate memory")

    def test_socket_enobufs_defers_then_delivered(self):
        self.outbound("socket:ENOBUFS:stream", "No buffer space available")

    def test_connect_enomem_defers_then_delivered(self):
        self.outbound("connect:ENOMEM:stream", "Cannot allocate memory")


if __name__ == "__main__":
    unittest.main()
