"""tests/integration/test_disk.py: the disk is a container resource too
(OpenVZ diskspace/diskinodes, a small VPS disk). On a 24 MB loop-mounted
ext4 file system holding the queue: MAIL is refused early with 452 4.3.1
(and against SIZE=) below queue_minfree / 1.5 x message_size_limit, stress
mode starts at twice that, inodes count the same way, the log names the
file system and the numbers, and frugal resumes by itself when room comes
back. Root only: it mounts a file system.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import Daemon, Raw, run_frugal, wait_for, SLOW

MB = 1 << 20
LIMIT = 4000000          # message_size_limit: MAIL needs 6,000,000 bytes free


def free_bytes(path):
    v = os.statvfs(path)
    return v.f_bavail * v.f_frsize


class Disk(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: mounts a 24 MB loop file system for the queue")
        for tool in ("mkfs.ext4", "mount", "umount"):
            if not shutil.which(tool):
                self.skipTest("%s not installed" % tool)
        self.tmp = tempfile.mkdtemp(prefix="frugal-disk-")
        self.img = os.path.join(self.tmp, "fs.img")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.makedirs(self.mnt)
        with open(self.img, "wb") as f:
            f.truncate(24 * MB)
        # no blocks reserved for root: what is free is what frugal sees free
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-N", "4096", self.img], check=True)
        subprocess.run(["mount", "-o", "loop", self.img, self.mnt], check=True)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.addCleanup(subprocess.run, ["umount", "-l", self.mnt])

    def fill_to(self, left):
        """Leave `left` bytes free on the file system (one filler file)."""
        filler = os.path.join(self.mnt, "filler")
        if os.path.exists(filler):
            os.unlink(filler)
        os.sync()
        want = free_bytes(self.mnt) - left
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, max(want, 0))
        os.sync()

    def mail(self, port, size=None):
        r = Raw(port)
        r.reply()
        r.cmd("EHLO c.example.org")
        code, text = r.cmd("MAIL FROM:<d@example.org>%s" % (" SIZE=%d" % size if size else ""))
        r.cmd("QUIT")
        r.close()
        return code, text

    def test_space_and_inodes(self):
        d = Daemon(extra="queue_directory = %s/queue\nmessage_size_limit = %d\n" % (self.mnt, LIMIT))
        d.queue = os.path.join(self.mnt, "queue")
        d.start()
        try:
            port = d.port
            self.assertEqual(self.mail(port)[0], 250)
            # the report shows the queue's file system
            r = run_frugal("limits", "--json", "-c", d.dir)
            rows = {row["name"]: row for row in json.loads(r.stdout)["resources"]}
            self.assertEqual(rows["queue disk space"]["limit"], os.statvfs(self.mnt).f_blocks * os.statvfs(self.mnt).f_frsize)
            self.assertIn("queue disk inodes", rows)
            # below twice the need: stress mode, mail still taken
            self.fill_to(9 * MB)
            self.assertEqual(self.mail(port)[0], 250)
            d.wait_log("stress mode on: queue disk space", timeout=15)
            # against SIZE=: 9 MB free, 6 MB kept, 4 MB announced
            code, text = self.mail(port, size=LIMIT)
            self.assertEqual(code, 452, text)
            self.assertIn("4.3.1 Insufficient system storage", text)
            # below the need: every MAIL refused, early, with the numbers in the log
            self.fill_to(5 * MB)
            code, text = wait_for(lambda: (lambda r: r if r[0] == 452 else None)(self.mail(port)), 5,
                                  "MAIL refused on a full queue file system")
            self.assertIn("4.3.1 Insufficient system storage", text)
            d.wait_log("not enough free space: queue file system %s/queue:" % self.mnt)
            d.wait_log("6000000 needed (queue_minfree, 1.5 x message_size_limit)")
            # room again: served again, by itself
            os.unlink(os.path.join(self.mnt, "filler"))
            os.sync()
            wait_for(lambda: self.mail(port)[0] == 250, 5, "MAIL taken again once there is room")
            d.wait_log("stress mode off", timeout=15)
            # inodes: the same rule (LIMITS_INODES_MIN, or 1% of a small file system's)
            many = os.path.join(self.mnt, "many")
            os.makedirs(many)
            v = os.statvfs(self.mnt)
            for i in range(v.f_favail - v.f_files // 100 + 5):
                try:
                    open(os.path.join(many, "f%d" % i), "w").close()
                except OSError:
                    break
            code, text = wait_for(lambda: (lambda r: r if r[0] == 452 else None)(self.mail(port)), 5,
                                  "MAIL refused without free inodes")
            d.wait_log("inodes free")
            shutil.rmtree(many)
            wait_for(lambda: self.mail(port)[0] == 250, 5, "MAIL taken again once inodes are free")
            self.assertIsNone(d.proc.poll())
        finally:
            d.cleanup()

    def test_full_disk_during_data_is_named(self):
        """With no size limit there is nothing to keep free: a message that
        does not fit gets 452 4.3.1 at the end of DATA and the log says the
        disk is full, not that there was an I/O error."""
        d = Daemon(extra="queue_directory = %s/queue\nmessage_size_limit = 0\n" % self.mnt)
        d.queue = os.path.join(self.mnt, "queue")
        d.start()
        try:
            self.fill_to(1 * MB)
            r = Raw(d.port)
            r.reply()
            r.cmd("EHLO c.example.org")
            self.assertEqual(r.cmd("MAIL FROM:<d@example.org>")[0], 250)
            self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 250)
            self.assertEqual(r.cmd("DATA")[0], 354)
            line = "x" * 998 + "\r\n"
            r.send("Subject: big\r\n\r\n" + line * 2200)
            code, text = r.cmd(".")
            self.assertEqual(code, 452, text)
            self.assertIn("4.3.1 Insufficient system storage", text)
            r.close()
            d.wait_log("No space left on device")
            self.assertFalse(d.log_has("Input/output error"))
            os.unlink(os.path.join(self.mnt, "filler"))
            self.assertIsNone(d.proc.poll())
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
