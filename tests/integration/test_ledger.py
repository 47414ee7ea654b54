"""tests/integration/test_ledger.py: the budget ledger matches the kernel
(guarantee 2). Every descriptor the daemon holds is in its ledger
(core/fd.h), which the daemon audits against /proc/self/fd at every sample
with no descriptor opened or closed in between; private memory counts
thread stacks and libraries, not only the heap.
"""
import os
import re
import smtplib
import threading
import time
import unittest

from harness import Daemon, wait_for, SLOW, VALGRIND


def socket_inodes(path):
    """inodes of the sockets listed in /proc/net/{tcp,tcp6,unix,...}"""
    out = set()
    try:
        with open(path) as f:
            next(f)
            for line in f:
                parts = line.split()
                if path.endswith("unix"):
                    out.add(parts[6])
                else:
                    out.add(parts[9])
    except OSError:
        pass
    return out


def fds_of(pid):
    """(total, tcp, other sockets) as the kernel sees the process's descriptors"""
    tcp = socket_inodes("/proc/net/tcp") | socket_inodes("/proc/net/tcp6")
    total = ntcp = nother = 0
    for n in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, n))
        except OSError:
            continue
        total += 1
        m = re.match(r"socket:\[(\d+)\]", link)
        if m:
            if m.group(1) in tcp:
                ntcp += 1
            else:
                nother += 1
    return total, ntcp, nother


class Ledger(unittest.TestCase):
    def test_descriptors_match_the_kernel_at_rest_and_under_load(self):
        d = Daemon(extra="smtpd_client_connection_count_limit = 0\n")
        d.start()
        try:
            pid = d.smtpd_pid()
            # two status samples (every 5 s) fall inside the load, whatever the build's speed
            stop = time.monotonic() + 11
            sent = [0]
            lock = threading.Lock()
            errors = []

            def client(i):
                rcpts = ["alice@example.test", "carol@virt.test", "bob@example.test"]
                while time.monotonic() < stop:
                    try:
                        with smtplib.SMTP("127.0.0.1", d.port, timeout=30 * SLOW) as s:
                            for k in range(3):
                                s.sendmail("l%d@example.org" % i, [rcpts[k]], "Subject: ledger\r\n\r\nx\r\n")
                                with lock:
                                    sent[0] += 1
                                time.sleep(0.1)   # pacing the load generator: some 800 messages in all
                    except (smtplib.SMTPException, OSError) as e:
                        errors.append(repr(e))
                        return
            threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            samples = []
            while any(t.is_alive() for t in threads):
                st = d.next_status(timeout=20)
                if any(t.is_alive() for t in threads):
                    samples.append(st)
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            self.assertGreaterEqual(len(samples), 1, "a sample under load")
            for st in samples:
                self.assertEqual(st["use_fd"], st["fd_kernel"], "under load: %s" % st)
            busy = max(st["use_fd"] for st in samples)
            # at rest: every message delivered, the ledger equals what /proc shows
            wait_for(lambda: d.output().count(": removed") >= sent[0], 120, "every delivery done")
            st = d.next_status()
            total, ntcp, nother = fds_of(pid)
            print("\n  ledger: %d messages; under load %d descriptors (%d samples), at rest ledger %d/%d/%d "
                  "(all/tcp/other), /proc %d/%d/%d" % (sent[0], busy, len(samples), st["use_fd"],
                                                       st["use_tcp"], st["use_other"], total, ntcp, nother))
            self.assertEqual(st["use_fd"], st["fd_kernel"])
            self.assertEqual((st["use_fd"], st["use_tcp"], st["use_other"]), (total, ntcp, nother))
            self.assertFalse(d.log_has("descriptor ledger"), "no drift was logged")
        finally:
            d.cleanup()

    def test_private_memory_counts_stacks(self):
        """VmData of the idle daemon is small (thread stacks sized), and the
        ledger's memory is at least it."""
        if "ASAN_OPTIONS" in os.environ or "TSAN_OPTIONS" in os.environ:
            self.skipTest("a sanitizer reserves terabytes of shadow memory: VmData is measured on the plain build")
        if VALGRIND:
            self.skipTest("valgrind's own heap and translations are in the process's VmData: measured on the plain build")
        d = Daemon()
        d.start()
        try:
            pid = d.smtpd_pid()
            st = d.next_status()
            with open("/proc/%d/status" % pid) as f:
                vmdata = int(re.search(r"^VmData:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024
            print("\n  idle VmData %d KiB, ledger memory %d KiB" % (vmdata >> 10, st["use_mem"] >> 10))
            self.assertLessEqual(vmdata, 16 << 20)
            self.assertGreaterEqual(st["use_mem"], vmdata * 9 // 10)
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
