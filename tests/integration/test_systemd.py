"""tests/integration/test_systemd.py: the installed unit under a real systemd.

test_packaging checks the unit with `systemd-analyze verify`; this boots it.
A container (systemd-nspawn) runs this machine's own systemd on an overlay of
the root file system: everything the test writes (`make install`, the
accounts, the configuration, a system user, the mail) lands in the overlay's
upper directory and is thrown away; this machine's files are never changed.
The container shares the network namespace, so the test talks SMTP to the
unit's daemon on 127.0.0.1 like any client.

What it shows: `systemctl enable --now frugal` runs `frugal check` and the
master (Type=forking with the PIDFile the master writes), the daemon drops to
mail_owner under the unit's hardening, mail to a system user reaches its
home Maildir (ProtectHome=no, as the unit says), the log goes to journald
through syslog, `systemctl reload` reloads without a restart, a killed
master is restarted by Restart=on-failure, `systemctl stop` leaves no
process behind.

Needs root and systemd-nspawn (Debian's systemd-container); skips otherwise
with the reason. Boot takes a few seconds.

Under a checker (FRUGAL_BIN is build/asan/frugal, make check's ASan pass, or
build/valgrind/frugal, make valgrind-check's wrapper) the installed
/usr/sbin/frugal is that binary, the unit is the installed one unchanged but
for a drop-in that gives it the checker's environment (a report directory in
the container's /var/lib, which the unit's PrivateTmp and ProtectSystem
leave writable) and, under valgrind, longer start and stop timeouts. After
`systemctl stop` the test fails on any sanitizer report or memcheck error and
copies the reports where the runner looks (ASAN_OPTIONS' log_path,
FRUGAL_VALGRIND_LOGDIR).
"""
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import unittest
import uuid
import glob

from harness import ROOT, FRUGAL, free_port, wait_for, SLOW

# the build FRUGAL_BIN names: "asan", "valgrind" (run the unit's daemon under it) or the plain one
CHECKER = {"asan": "asan", "valgrind": "valgrind"}.get(os.path.basename(os.path.dirname(os.path.abspath(FRUGAL))))
# where the checker writes inside the container (frugal drops to mail_owner: world-writable, sticky)
REPORTS = "/var/lib/frugal-checker"

NSPAWN = shutil.which("systemd-nspawn")
# Services of this machine's image that would start in the container and
# take shared ports or time; masked in the overlay only.
MASK = ("postfix.service", "postfix@-.service", "dovecot.service", "fail2ban.service", "exim4.service",
        "nginx.service", "postgresql.service", "redis-server.service", "memcached.service",
        "ssh.service", "cron.service", "apt-daily.timer", "apt-daily-upgrade.timer",
        "e2scrub_all.timer", "man-db.timer", "logrotate.timer", "fstrim.timer", "systemd-tmpfiles-clean.timer")


def sh(*args, check=True, timeout=120):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
    return r


class SystemdUnit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.nspawn = None
        cls.cleanups = []
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root: mounts an overlay of / and boots a container")
        if NSPAWN is None:
            raise unittest.SkipTest("systemd-nspawn not installed (Debian's systemd-container; contrib/deps.sh)")
        try:
            cls.boot()
        except Exception:
            cls.teardown()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.teardown()

    @classmethod
    def teardown(cls):
        if cls.nspawn is not None and cls.nspawn.poll() is None:
            cls.nspawn.send_signal(signal.SIGTERM)      # nspawn halts the container
            try:
                cls.nspawn.wait(60)
            except subprocess.TimeoutExpired:
                cls.nspawn.kill()
                cls.nspawn.wait(30)
        for f in reversed(cls.cleanups):
            f()
        cls.cleanups = []
        if getattr(cls, "log", None):
            cls.log.close()
            cls.log = None

    @classmethod
    def boot(cls):
        cls.tmp = tempfile.mkdtemp(prefix="frugal-systemd-")
        cls.cleanups.append(lambda: shutil.rmtree(cls.tmp, True))
        upper, work, cls.root = (os.path.join(cls.tmp, n) for n in ("upper", "work", "root"))
        for p in (upper, work, cls.root):
            os.makedirs(p)
        sh("mount", "-t", "overlay", "overlay", "-o",
           "lowerdir=/,upperdir=%s,workdir=%s" % (upper, work), cls.root)
        cls.cleanups.append(lambda: sh("umount", "-l", cls.root, check=False))
        # nspawn removes its propagation directory when done and refuses to
        # unless it is on a tmpfs; on a machine whose /run is not one, give it one.
        prop = "/run/systemd/nspawn"
        os.makedirs(prop, exist_ok=True)
        fs = sh("stat", "-f", "-c", "%T", prop).stdout.strip()
        if fs != "tmpfs":
            sh("mount", "-t", "tmpfs", "tmpfs", prop)
            cls.cleanups.append(lambda: sh("umount", "-l", prop, check=False))
        # a machine id of its own (journald refuses to share the host's)
        with open(os.path.join(cls.root, "etc/machine-id"), "w") as f:
            f.write(uuid.uuid4().hex + "\n")
        r = subprocess.run(["make", "-s", "--no-print-directory", "install", "DESTDIR=" + cls.root, "PREFIX=/usr"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise AssertionError("make install: " + r.stdout + r.stderr)
        for unit in MASK:
            p = os.path.join(cls.root, "etc/systemd/system", unit)
            if os.path.lexists(p):
                os.unlink(p)
            os.symlink("/dev/null", p)
        if CHECKER:
            cls.install_checker()
        # a system user with a home, for local delivery
        sh("useradd", "--root", cls.root, "-m", "-s", "/bin/sh", "frugalsd")
        cls.port = free_port()
        with open(os.path.join(cls.root, "etc/frugal/frugal.conf"), "w") as f:
            f.write("""myhostname = mail.sd.test
mydomain = sd.test
mydestination = $myhostname, sd.test
smtpd_listen = 127.0.0.1:%d
mynetworks = 127.0.0.0/8
home_mailbox = Maildir/
dns_servers = 127.0.0.1:9
""" % cls.port)
        cls.log = open(os.path.join(cls.tmp, "console"), "w+")
        cls.nspawn = subprocess.Popen(
            [NSPAWN, "-q", "-D", cls.root, "--machine=frugal-t%d" % os.getpid(), "--link-journal=no",
             "--register=no", "--keep-unit", "-b", "--console=pipe"],
            stdin=subprocess.DEVNULL, stdout=cls.log, stderr=subprocess.STDOUT)
        cls.leader = wait_for(cls.find_leader, 60 * SLOW, "the container's systemd")

        def up():
            if cls.nspawn.poll() is not None:
                cls.log.seek(0)
                raise unittest.SkipTest("the container did not boot on this machine (nspawn exit %d): %s"
                                        % (cls.nspawn.returncode, cls.log.read()[-1500:]))
            s = cls.run_in("systemctl", "is-system-running", check=False).stdout.strip()
            return s in ("running", "degraded")
        wait_for(up, 120 * SLOW, "the container's systemd to finish booting", interval=0.2)

    @classmethod
    def install_checker(cls):
        """/usr/sbin/frugal becomes FRUGAL_BIN (the ASan binary, or the valgrind wrapper whose
        absolute paths into this tree resolve in the overlay of /), plus the checker's drop-in."""
        dst = os.path.join(cls.root, "usr/sbin/frugal")
        os.unlink(dst)
        shutil.copy2(FRUGAL, dst)
        os.makedirs(cls.root + REPORTS)
        os.chmod(cls.root + REPORTS, 0o1777)
        if CHECKER == "asan":
            env = ['"ASAN_OPTIONS=log_path=%s/asan:detect_leaks=1"' % REPORTS,
                   '"UBSAN_OPTIONS=log_path=%s/ubsan:print_stacktrace=1:halt_on_error=1"' % REPORTS]
            extra = ""
        else:
            env = ["FRUGAL_VALGRIND_LOGDIR=%s" % REPORTS]
            # memcheck: `frugal check` and the start take seconds, the stop's leak checks too
            extra = "TimeoutStartSec=%d\nTimeoutStopSec=%d\n" % (90 * SLOW, 60 * SLOW)
        d = os.path.join(cls.root, "etc/systemd/system/frugal.service.d")
        os.makedirs(d)
        with open(os.path.join(d, "checker.conf"), "w") as f:
            f.write("[Service]\nEnvironment=%s\n%s" % (" ".join(env), extra))

    def checker_verdict(self):
        """After the stop: every report the checker wrote in the container, copied where the
        runner looks; a sanitizer report or a memcheck error (a log whose ERROR SUMMARY is not 0)
        fails the test. A log without a summary is the SIGKILLed master's: no leak check."""
        logs = sorted(glob.glob(self.root + REPORTS + "/*"))
        bad = []
        if CHECKER == "asan":
            m = re.search(r"log_path=([^:]+)", os.environ.get("ASAN_OPTIONS", ""))
            for p in logs:
                if m:
                    shutil.copy(p, "%s.systemd-%s" % (m.group(1), os.path.basename(p)))
                bad.append(p)
        else:
            out = os.environ.get("FRUGAL_VALGRIND_LOGDIR")
            checked = 0
            for p in logs:
                with open(p, errors="replace") as f:
                    text = f.read()
                n = re.search(r"ERROR SUMMARY: (\d+) errors", text)
                checked += n is not None
                if n and int(n.group(1)):
                    bad.append(p)
                if out:   # vg.PID.N: PID is the container's, the runner must not look for it here
                    shutil.copy(p, os.path.join(out, "vg.systemd-" + os.path.basename(p)[3:]))
            print("test_systemd: %d memcheck logs, %d with a leak check" % (len(logs), checked))
        reports = ""
        for p in bad:
            with open(p, errors="replace") as f:
                reports += "--- %s\n%s\n" % (p, f.read()[:8000])
        self.assertEqual(bad, [], "%s reports from the unit's daemon:\n%s" % (CHECKER, reports))

    @classmethod
    def find_leader(cls):
        """the container's PID 1 as this machine sees it: nspawn's child running systemd"""
        if cls.nspawn.poll() is not None:
            cls.log.seek(0)
            raise unittest.SkipTest("systemd-nspawn cannot run here (exit %d): %s"
                                    % (cls.nspawn.returncode, cls.log.read()[-1500:]))
        for n in os.listdir("/proc"):
            if not n.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % n) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open("/proc/%s/cmdline" % n, "rb") as f:
                    argv0 = f.read().split(b"\0")[0]
            except (OSError, ValueError, IndexError):
                continue
            if ppid == cls.nspawn.pid and argv0.endswith(b"systemd"):
                return int(n)
        return None

    @classmethod
    def run_in(cls, *args, check=True):
        return sh("nsenter", "-t", str(cls.leader), "-a", *args, check=check, timeout=60 * SLOW)

    def prop(self, name):
        return self.run_in("systemctl", "show", "-p", name, "--value", "frugal").stdout.strip()

    def main_pid(self):
        return int(self.prop("MainPID"))

    def journal(self):
        """what frugal logged through syslog (identifiers frugal/master, frugal/smtpd, ...)"""
        return self.run_in("journalctl", "-q", "-o", "cat", "--no-pager", "-u", "frugal",
                           check=False).stdout

    def unit_log(self):
        return self.run_in("journalctl", "-q", "-o", "short", "--no-pager", "-n", "60", "-u", "frugal",
                           check=False).stdout

    def status_uids(self, pid_in_container):
        st = self.run_in("cat", "/proc/%d/status" % pid_in_container).stdout
        return re.search(r"^Uid:\s+(.*)$", st, re.M).group(1).split()

    def maildir_new(self):
        d = os.path.join(self.root, "home/frugalsd/Maildir/new")
        return os.listdir(d) if os.path.isdir(d) else []

    def send(self, token):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30 * SLOW) as s:
            s.sendmail("someone@sd.test", ["frugalsd@sd.test"], "Subject: %s\r\n\r\nvia systemd\r\n" % token)

    def test_unit_lifecycle(self):
        try:
            self.lifecycle()
        except AssertionError as e:
            raise AssertionError("%s\n--- the unit's journal:\n%s" % (e, self.unit_log())) from None

    def lifecycle(self):
        # enable --now: ExecStartPre=frugal check, then the forking master with its PIDFile
        r = self.run_in("systemctl", "enable", "--now", "frugal", check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + self.unit_log())
        wait_for(lambda: self.prop("ActiveState") == "active", 60 * SLOW, "frugal.service active")
        master = self.main_pid()
        self.assertGreater(master, 0)
        if CHECKER:   # the unit's master is the checked build, not the plain one `make install` put there
            maps = self.run_in("cat", "/proc/%d/maps" % master).stdout
            self.assertIn("libasan" if CHECKER == "asan" else "vgpreload_memcheck", maps,
                          "the master runs under %s" % CHECKER)
        with open(os.path.join(self.root, "var/spool/frugal/pid/frugal.pid")) as f:
            self.assertEqual(int(f.read().split()[0]), master, "PIDFile names the master")
        wait_for(lambda: "daemon started" in self.journal(), 30 * SLOW, "'daemon started' in the journal")
        # `frugal serve` returned only once the daemon served: the pid file was there for systemd
        self.assertNotIn("Can't open PID file", self.unit_log())

        # the daemon, a child of the master, runs as mail_owner with no way back to root
        uid_frugal = int(self.run_in("id", "-u", "frugal").stdout)
        pids = self.run_in("systemctl", "show", "-p", "ControlGroup", "--value", "frugal").stdout.strip()
        procs = self.run_in("cat", "/sys/fs/cgroup/systemd" + pids + "/cgroup.procs", check=False).stdout.split() \
            or self.run_in("cat", "/sys/fs/cgroup/unified" + pids + "/cgroup.procs", check=False).stdout.split()
        self.assertTrue(procs, "the unit's processes")
        uids = {int(p): self.status_uids(int(p)) for p in procs}
        self.assertIn([str(uid_frugal)] * 4, list(uids.values()),
                      "a process of the unit runs as frugal with real, effective, saved and fs IDs: %s" % uids)
        self.assertEqual(uids[master][0], "0", "the master stays root (it forks the local helper)")

        # local delivery to a system user's home Maildir, under ProtectHome=no
        self.send("sd-1")
        wait_for(lambda: len(self.maildir_new()) == 1, 30 * SLOW, "the message in ~frugalsd/Maildir/new")
        with open(os.path.join(self.root, "home/frugalsd/Maildir/new", self.maildir_new()[0]), "rb") as f:
            msg = f.read()
        self.assertIn(b"Subject: sd-1", msg)
        st = os.stat(os.path.join(self.root, "home/frugalsd/Maildir/new", self.maildir_new()[0]))
        self.assertEqual(st.st_uid, int(self.run_in("id", "-u", "frugalsd").stdout), "owned by the user")
        wait_for(lambda: "status=sent" in self.journal(), 30 * SLOW, "the delivery logged to journald")

        # reload: the same master, the new configuration read
        self.run_in("systemctl", "reload", "frugal")
        wait_for(lambda: "reload -- version" in self.journal(), 30 * SLOW, "the reload in the journal")
        self.assertEqual(self.main_pid(), master)
        self.assertEqual(self.prop("ActiveState"), "active")

        # a crash of the master: Restart=on-failure brings it back, mail still flows
        self.run_in("kill", "-9", str(master))
        wait_for(lambda: self.prop("ActiveState") == "active" and self.main_pid() not in (0, master),
                 60 * SLOW, "frugal.service restarted after SIGKILL", interval=0.1)
        self.assertGreaterEqual(int(self.prop("NRestarts")), 1)

        def delivered_again():
            try:
                self.send("sd-2")
                return True
            except (OSError, smtplib.SMTPException):
                return False    # the new master binds the port a moment after it is active
        wait_for(delivered_again, 30 * SLOW, "a message accepted by the restarted frugal", interval=0.1)
        wait_for(lambda: len(self.maildir_new()) == 2, 30 * SLOW, "the second message delivered")

        # stop: nothing of the unit left, the port closed
        self.run_in("systemctl", "stop", "frugal")
        self.assertEqual(self.prop("ActiveState"), "inactive")
        left = self.run_in("pgrep", "-x", "frugal", check=False).stdout.split()
        if CHECKER == "valgrind":   # the process is memcheck, its command line still names frugal.bin
            left += self.run_in("pgrep", "-f", "frugal.bin", check=False).stdout.split()
        self.assertEqual(left, [], "no frugal process after stop")
        self.assertIn("master stopped", self.journal())
        if CHECKER:
            self.checker_verdict()


if __name__ == "__main__":
    unittest.main()
