"""tests/integration/test_logging.py: where the log goes (PRODUCT.md section 5):
maillog_file reopened after rotation (frugal reload) by a daemon that runs as
mail_owner, a path it cannot reopen named with the reason, and syslog over a
unix datagram socket that never blocks the loop (FRUGAL_SYSLOG_SOCKET points
the daemon at a socket the test binds instead of /dev/log)."""
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import unittest

from harness import ROOT, Daemon, run_frugal, wait_for, FRUGAL, SLOW

LINE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ frugal/[a-z]+\[\d+\]: ")


class Detached:
    """frugal serve without -f (with -f the log goes to stderr, whatever maillog_file says):
    the master detaches; its pid file says which process to stop."""

    def __init__(self, extra="", env=None):
        self.d = Daemon(extra=extra, env=env)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.pid = None

    def start(self):
        r = subprocess.run([FRUGAL, "serve", "-c", self.d.dir], env=self.env, capture_output=True,
                           text=True, timeout=30 * SLOW)
        if r.returncode != 0:
            raise AssertionError("frugal serve: %s %s" % (r.returncode, r.stderr))
        pidf = os.path.join(self.d.queue, "pid", "frugal.pid")

        def pid():
            try:
                with open(pidf) as f:
                    return int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                return None
        self.pid = wait_for(pid, 15 * SLOW, "the pid file")

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.d.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, 15 * SLOW, "frugal to listen")
        return self

    def reload(self):
        r = run_frugal("reload", "-c", self.d.dir)
        if r.returncode != 0:
            raise AssertionError("frugal reload: " + r.stderr)

    def stop(self, cleanup=True):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            wait_for(lambda: not os.path.exists("/proc/%d" % self.pid), 30 * SLOW, "the master to exit")
            self.pid = None
        if cleanup:
            self.d.cleanup()

    def send(self, tag):
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.sendmail("p@example.org", ["alice@example.test"], "Subject: %s\r\n\r\n%s\r\n" % (tag, tag))


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class DetachedStart(unittest.TestCase):
    """`frugal serve` (detaching) returns when the daemon serves, or fails with it."""

    def test_returns_serving_with_the_pid_file(self):
        d = Detached()
        self.addCleanup(d.stop)
        r = subprocess.run([FRUGAL, "serve", "-c", d.d.dir], env=d.env, capture_output=True,
                           text=True, timeout=30 * SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        # no waiting: both are there when the command has returned (systemd's Type=forking reads the pid file then)
        with open(os.path.join(d.d.queue, "pid", "frugal.pid")) as f:
            d.pid = int(f.read().split()[0])
        socket.create_connection(("127.0.0.1", d.d.port), timeout=5).close()

    def test_port_in_use_fails_the_command(self):
        taken = socket.socket()
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        d = Detached()
        self.addCleanup(d.stop)
        taken.bind(("127.0.0.1", d.d.port))
        taken.listen(1)
        self.addCleanup(taken.close)
        r = subprocess.run([FRUGAL, "serve", "-c", d.d.dir], env=d.env, capture_output=True,
                           text=True, timeout=30 * SLOW)
        self.assertNotEqual(r.returncode, 0, "frugal serve said it started while its port was taken")
        self.assertIn("start-up", r.stderr)


class Rotation(unittest.TestCase):
    def test_rotate_and_reload_as_mail_owner(self):
        """logrotate's way: rename, then frugal reload; the daemon (as mail_owner) writes the new file,
        which the master created as root and gave to mail_owner."""
        def rotate(x, log):
            os.rename(log, log + ".1")
            x.reload()
        self.rotation(rotate)

    def test_logrotate_with_the_shipped_file(self):
        """The real logrotate with contrib/frugal.logrotate (the path and the command pointed at
        this test's daemon): the rotated file keeps what was written, the new one gets the rest."""
        lr = shutil.which("logrotate") or ("/usr/sbin/logrotate" if os.path.exists("/usr/sbin/logrotate") else None)
        if lr is None:
            self.skipTest("logrotate is not installed (contrib/deps.sh test installs it)")

        def rotate(x, log):
            with open(os.path.join(ROOT, "contrib", "frugal.logrotate")) as f:
                conf = f.read()
            self.assertIn("/var/log/frugal.log {", conf)
            self.assertIn("frugal reload", conf)
            conf = conf.replace("/var/log/frugal.log", log).replace(
                "frugal reload", "%s reload -c %s" % (FRUGAL, x.d.dir))
            cf = os.path.join(x.d.dir, "logrotate.conf")
            with open(cf, "w") as f:
                f.write(conf)
            os.chmod(cf, 0o644)
            r = subprocess.run([lr, "-f", "-s", os.path.join(x.d.dir, "logrotate.state"), cf],
                               capture_output=True, text=True, timeout=60 * SLOW)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.rotation(rotate)

    def rotation(self, rotate):
        root = os.geteuid() == 0
        if root:
            try:
                pw = pwd.getpwnam("nobody")
            except KeyError:
                self.skipTest("no user 'nobody' on this machine")
        # as root, the virtual delivery helper runs as a third user (Debian's "daemon"), who can
        # open neither the log nor its directory: the daemon passes it the reopened file
        vowner = None
        if root:
            try:
                vowner = pwd.getpwnam("daemon")
            except KeyError:
                pass
        x = Detached(extra=("mail_owner = nobody\n" if root else "") +
                     ("virtual_mailbox_owner = daemon\n" if vowner else ""))
        try:
            d = x.d
            logdir = os.path.join(d.dir, "logs")
            os.mkdir(logdir, 0o755)          # root's: mail_owner cannot create a file here
            log = os.path.join(logdir, "maillog")
            with open(os.path.join(d.dir, "frugal.conf"), "a") as f:
                f.write("maillog_file = %s\n" % log)
            if root:
                os.makedirs(d.maildir_base)
                os.chown(d.maildir_base, pw.pw_uid, pw.pw_gid)
                os.chmod(d.dir, 0o755)
            x.start()
            wait_for(lambda: "daemon started" in read(log), 15 * SLOW, "daemon started in " + log)
            if root:
                self.assertEqual(os.stat(log).st_uid, pw.pw_uid, "the log file is mail_owner's")
            x.send("before")
            wait_for(lambda: "status=sent" in read(log), 15 * SLOW, "the first delivery logged")
            rotate(x, log)
            wait_for(lambda: "reload --" in read(log), 15 * SLOW, "the daemon's reload line in the new file")
            x.send("after")
            wait_for(lambda: "status=sent" in read(log), 15 * SLOW, "the delivery logged in the new file")
            new, old = read(log), read(log + ".1")
            self.assertNotIn("cannot reopen", new + old)
            if root:
                self.assertEqual(os.stat(log).st_uid, pw.pw_uid)
            for line in new.splitlines():
                self.assertRegex(line, LINE)
            self.assertEqual(old.count("status=sent"), 1, old)   # nothing more went to the rotated file
            if vowner:
                self.assertIn("frugal/virtual[", old)     # it started there
                x.stop(cleanup=False)
                new, old = read(log), read(log + ".1")
                self.assertNotIn("cannot reopen", new + old)
                self.assertRegex(new, r"frugal/virtual\[\d+\]: delivery helper stopped",
                                 "the virtual helper (uid %d) writes the new file" % vowner.pw_uid)
                self.assertNotIn("delivery helper stopped", old)
            self.assertIn("frugal/smtpd[", new)
        finally:
            x.stop()

    def test_unwritable_new_path_is_named(self):
        x = Detached()
        try:
            d = x.d
            x.start()
            wait_for(lambda: "daemon started" in read(d.log), 15 * SLOW, "daemon started")
            # a reload reopens the path the daemon started with: make that fail
            os.rename(d.log, d.log + ".1")
            os.mkdir(d.log)                   # a directory where the file was: open() says EISDIR
            x.reload()
            want = "cannot reopen maillog_file %s: Is a directory; still logging to the previous descriptor" % d.log
            wait_for(lambda: want in read(d.log + ".1"), 15 * SLOW, "the named error in the old file")
            x.send("kept")
            wait_for(lambda: "status=sent" in read(d.log + ".1"), 15 * SLOW, "logging goes on in the old file")
        finally:
            x.stop()


class WriteFailure(unittest.TestCase):
    def test_enospc_counted_then_reported(self):
        """A full disk (the log file is /dev/full behind a symlink): lines are counted as lost; once the
        file is writable again (a real file, frugal reload) the first line says how many and why."""
        x = Detached()
        d = x.d
        os.symlink("/dev/full", d.log)
        try:
            x.start()
            x.send("lost")
            d.wait_messages(d.maildir("alice"), 1, timeout=15 * SLOW)
            # the session's and the delivery's lines at least (the status file is sampled every second)
            wait_for(lambda: (d.status() or {}).get("log_lost", 0) >= 3, 15 * SLOW, "log_lost >= 3 in the status file")
            # and where the admin looks: frugal status, in each of its forms
            r = run_frugal("status", "-c", d.dir)
            self.assertRegex(r.stdout, r"(?m)^log +\d+ lines lost since start", r.stdout)
            js = json.loads(run_frugal("status", "-c", d.dir, "--json").stdout)
            self.assertGreaterEqual(js["counters"]["log_lines_lost"], 3)
            prom = run_frugal("status", "-c", d.dir, "--prometheus").stdout
            self.assertRegex(prom, r"(?m)^frugal_log_lines_lost_total [1-9]\d*$")
            os.unlink(d.log)
            x.reload()
            want = re.compile(r"warning: \d+ log lines lost \(No space left on device\); \d+ since start")
            wait_for(lambda: want.search(read(d.log)), 15 * SLOW, "the loss reported in the new file")
            # the reload's own line is written after the loss report (it may not be there yet)
            wait_for(lambda: "reload --" in read(d.log), 15 * SLOW, "the daemon's reload line in the new file")
        finally:
            x.stop()


class Check(unittest.TestCase):
    def check(self, d, extra):
        with open(os.path.join(d.dir, "frugal.conf"), "a") as f:
            f.write(extra)
        return run_frugal("check", "-c", d.dir)

    def test_missing_directory(self):
        d = Daemon()
        self.addCleanup(d.cleanup)
        r = self.check(d, "maillog_file = %s/none/maillog\n" % d.dir)
        self.assertIn("warning: maillog_file %s/none/maillog: its directory %s/none: No such file or directory"
                      % (d.dir, d.dir), r.stderr)

    def test_fine_path_is_quiet(self):
        d = Daemon()
        self.addCleanup(d.cleanup)
        r = self.check(d, "")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("maillog_file", r.stderr)

    def test_directory_mail_owner_cannot_pass(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: a directory that root can use and mail_owner cannot")
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user 'nobody' on this machine")
        d = Daemon()
        self.addCleanup(d.cleanup)
        os.mkdir(os.path.join(d.dir, "private"), 0o700)
        r = self.check(d, "mail_owner = nobody\nmaillog_file = %s/private/maillog\n" % d.dir)
        self.assertIn("warning: maillog_file %s/private/maillog: mail_owner nobody cannot reach it" % d.dir,
                      r.stderr)
        os.chmod(os.path.join(d.dir, "private"), 0o711)     # control: passable, no warning
        r = run_frugal("check", "-c", d.dir)
        self.assertNotIn("cannot reach", r.stderr)


class Syslog(unittest.TestCase):
    def bind(self, d):
        path = os.path.join(d.dir, "log.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        os.chmod(path, 0o666)
        self.addCleanup(s.close)
        return s, path

    def test_syslog_datagrams(self):
        x = Detached(extra="maillog_file =\nsyslog_facility = local3\nsyslog_name = frugal\n")
        s, path = self.bind(x.d)
        x.env["FRUGAL_SYSLOG_SOCKET"] = path
        s.settimeout(10 * SLOW)
        try:
            x.start()
            x.send("viasyslog")
            got = []
            while not any("status=sent" in g for g in got):
                got.append(s.recv(4096).decode(errors="replace"))
            pri = (19 << 3) | 6      # local3.info
            first = got[0]
            self.assertRegex(first, r"^<\d+>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d frugal/[a-z]+\[\d+\]: ")
            self.assertTrue(any(g.startswith("<%d>" % pri) for g in got), got[:3])
            self.assertTrue(any(re.search(r"frugal/smtpd\[\d+\]: connect from", g) for g in got), got)
            self.assertFalse(os.path.exists(x.d.log))
        finally:
            x.stop()

    def test_stuck_socket_drops_and_counts(self):
        """A syslog that never reads: the daemon goes on (mail delivered), the lost lines are counted
        in the status file and reported in the first line that gets through afterwards."""
        x = Detached(extra="maillog_file =\n")
        s, path = self.bind(x.d)
        # full after a few datagrams whatever net.unix.max_dgram_qlen says
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        x.env["FRUGAL_SYSLOG_SOCKET"] = path
        try:
            x.start()
            for i in range(30):
                x.send("stuck%d" % i)
            x.d.wait_messages(x.d.maildir("alice"), 30, timeout=30 * SLOW)
            st = wait_for(lambda: (lambda st: st if st and st.get("log_lost", 0) > 0 else None)(x.d.status()),
                          15 * SLOW, "log_lost in the status file")
            self.assertGreater(st["log_lost"], 0)
            # drain; the next line that gets through starts with the count
            s.setblocking(False)
            try:
                while True:
                    s.recv(65536)
            except BlockingIOError:
                pass
            s.settimeout(10 * SLOW)
            x.send("after")
            seen = []
            while not any("log lines lost" in g for g in seen):
                seen.append(s.recv(65536).decode(errors="replace"))
            self.assertRegex(seen[-1], r"warning: \d+ log lines lost \(Resource temporarily unavailable\)")
        finally:
            x.stop()

    def test_absent_socket(self):
        """No syslog at all: the daemon works, lines are counted as lost."""
        x = Detached(extra="maillog_file =\n")
        x.env["FRUGAL_SYSLOG_SOCKET"] = os.path.join(x.d.dir, "nobody-listens.sock")
        try:
            x.start()
            x.send("nosyslog")
            x.d.wait_messages(x.d.maildir("alice"), 1, timeout=15 * SLOW)
            wait_for(lambda: (x.d.status() or {}).get("log_lost", 0) > 0, 15 * SLOW, "log_lost counted")
        finally:
            x.stop()


if __name__ == "__main__":
    unittest.main()
