"""tests/integration/test_iofault_lmtp.py: system calls that fail while a
message is delivered over LMTP (mailbox_transport = lmtp:unix:PATH, the
Dovecot set-up), injected by the LD_PRELOAD shim as test_iofault.py does it
(same plumbing: IOFaultBase).

The message was acknowledged (250) before delivery starts, so whatever the
fault (socket() EMFILE/ENOMEM, connect() ECONNREFUSED, a write to the LMTP
socket failing with EPIPE at LHLO or EIO in the middle of the body), it
must be deferred, stay in the queue, be tried again while the fault lasts
(deferred again, never bounced), and arrive exactly once after the disarm.
Each case checks the shim's log (the fault fired), the deferral's text,
and a second message after the disarm.
"""
import os
import shutil
import tempfile
import unittest

from harness import wait_for, SLOW
from test_iofault import IOFaultBase
from test_smtp_client import PySink


class LMTPFault(IOFaultBase):
    def lmtp_daemon(self, rule):
        tmp = tempfile.mkdtemp(prefix="frugal-iofault-lmtp-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.chmod(tmp, 0o755)
        self.path = os.path.join(tmp, "lmtp")
        self.sink = PySink(self.path, lmtp=True)
        self.addCleanup(self.sink.stop)
        os.chmod(self.path, 0o666)
        return self.daemon(rule, extra="mailbox_transport = lmtp:unix:%s\n" % self.path)

    def at_sink(self, tag):
        return [m for m in self.sink.messages if ("Subject: %s\r\n" % tag).encode() in m[2]]

    def deferred_then_once(self, rule, err_text, size=200):
        d = self.lmtp_daemon(rule)
        self.set_armed(True)
        code, text = self.transaction(d.port, "acked", size=size)
        self.assertEqual(code, 250, text)
        wait_for(lambda: self.fired(), 15 * SLOW, "the fault to fire at delivery")
        d.wait_log("status=deferred", timeout=15 * SLOW)
        self.assertEqual(self.at_sink("acked"), [])
        self.assertTrue(os.listdir(os.path.join(d.queue, "committed")), "the acknowledged message left the queue")
        # a retry while still faulted is deferred again, not bounced
        n = len(self.fired())
        wait_for(lambda: len(self.fired()) > n, 15 * SLOW, "a retry while faulted")
        self.set_armed(False)
        wait_for(lambda: self.at_sink("acked"), 20 * SLOW, "the deferred message at the LMTP server")
        code, _ = self.transaction(d.port, "after")
        self.assertEqual(code, 250)
        wait_for(lambda: self.at_sink("after"), 20 * SLOW, "the second message at the LMTP server")
        wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 15 * SLOW, "queue empty")
        self.assertEqual(len(self.at_sink("acked")), 1, "delivered more than once")
        self.assertEqual(len(self.at_sink("after")), 1)
        log = d.output()
        self.assertIn(err_text, log)
        self.assertNotIn("status=bounced", log)
        self.assertRegex(log, r"frugal/lmtp\[\d+\]: \w+: to=<alice@example\.test>, relay=.*status=sent")
        # no bounce was queued either: nothing but the two messages reached anyone
        self.assertEqual(d.messages(d.maildir("alice")), [])
        return log

    def test_lmtp_socket_emfile_deferred_then_once(self):
        log = self.deferred_then_once("socket:EMFILE:unix", "Too many open files")
        self.assertIn("warning: ", log)
        self.assertRegex(log, r"warning: \w+: RLIMIT_NOFILE exhausted: cannot make a unix socket for "
                              r"mx\.example\.test\[%s\]: Too many open files: delivery deferred" % self.path)

    def test_lmtp_socket_enomem_deferred_then_once(self):
        log = self.deferred_then_once("socket:ENOMEM:unix", "Cannot allocate memory")
        self.assertRegex(log, r"warning: \w+: .* exhausted: cannot make a unix socket for .*: Cannot allocate memory")

    def test_lmtp_connect_enomem_deferred_then_once(self):
        log = self.deferred_then_once("connect:ENOMEM:unix", "Cannot allocate memory")
        self.assertRegex(log, r"warning: \w+: .* exhausted: connect to .*: Cannot allocate memory: delivery deferred")

    def test_lmtp_connect_econnrefused_deferred_then_once(self):
        self.deferred_then_once("connect:ECONNREFUSED:unix", "Connection refused")

    def test_lmtp_write_epipe_at_lhlo_deferred_then_once(self):
        # the first write on the LMTP socket is LHLO
        log = self.deferred_then_once("write:EPIPE:unix", "status=deferred (lost connection with")
        self.assertIn("while performing the LHLO handshake", log)

    def test_lmtp_write_eio_mid_body_deferred_then_once(self):
        # LHLO, the envelope and DATA go first; a 300 KB body takes many more writes
        log = self.deferred_then_once("write:EIO:unix:after=4", "status=deferred (lost connection with",
                                      size=300000)
        self.assertIn("while sending message body", log)


if __name__ == "__main__":
    unittest.main()
