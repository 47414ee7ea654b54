"""tests/integration/test_packaging.py: what `make install` puts where, and
the contrib files checked by their own tools: the systemd unit
(systemd-analyze verify), the SysV init script (sh -n, LSB header), the
logrotate file (logrotate --debug; test_logging runs the real rotation) and the fail2ban filter, run by
fail2ban-regex over the log of a real daemon that was sent unknown users,
relay attempts, failed AUTHs, a pregreet and mail it delivered.
Everything goes into a temporary DESTDIR: no service of this machine is
touched, nothing is enabled or started.
"""
import base64
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import unittest

from harness import ROOT, Daemon, Raw, run_frugal, wait_for, SLOW, FRUGAL

CONTRIB = os.path.join(ROOT, "contrib")
PASSWORD = "correct horse battery staple"


def make_install(destdir, prefix="/usr"):
    return subprocess.run(["make", "-s", "--no-print-directory", "install",
                           "DESTDIR=" + destdir, "PREFIX=" + prefix],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dest = tempfile.mkdtemp(prefix="frugal-pkg-")
        cls.r = make_install(cls.dest)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dest, ignore_errors=True)

    def path(self, p):
        return os.path.join(self.dest, p.lstrip("/"))

    def mode(self, p):
        return stat.S_IMODE(os.lstat(self.path(p)).st_mode)

    def test_tree_modes_and_links(self):
        self.assertEqual(self.r.returncode, 0, self.r.stdout + self.r.stderr)
        self.assertEqual(self.mode("/usr/sbin/frugal"), 0o755)
        self.assertIn(self.mode("/usr/sbin/frugal-postdrop"), (0o755, 0o2755))
        for link in ("sendmail", "mailq", "newaliases", "sendmail.frugal"):
            p = self.path("/usr/sbin/" + link)
            self.assertTrue(os.path.islink(p), link)
            self.assertEqual(os.readlink(p), "frugal")
        # PREFIX=/usr: the old path programs still call
        self.assertEqual(os.path.realpath(self.path("/usr/lib/sendmail")),
                         os.path.realpath(self.path("/usr/sbin/frugal")))
        for p, m in (("/usr/share/man/man8/frugal.8", 0o644), ("/usr/share/man/man5/frugal.conf.5", 0o644),
                     ("/lib/systemd/system/frugal.service", 0o644), ("/etc/init.d/frugal", 0o755),
                     ("/etc/logrotate.d/frugal", 0o644), ("/etc/fail2ban/filter.d/frugal.conf", 0o644),
                     ("/etc/fail2ban/jail.d/frugal.conf", 0o644), ("/etc/frugal/frugal.conf.sample", 0o644)):
            self.assertEqual(self.mode(p), m, p)
        # the installed link runs as sendmail's mailq would (argv[0] picks the command)
        r = subprocess.run([self.path("/usr/sbin/frugal"), "config", "-d", "mail_name"],
                           capture_output=True, text=True)
        self.assertEqual(r.stdout.strip(), "mail_name = frugal")

    def test_unit_and_init_name_the_installed_binary(self):
        with open(self.path("/lib/systemd/system/frugal.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/sbin/frugal serve\n", unit)
        self.assertIn("ExecReload=/usr/sbin/frugal reload\n", unit)
        with open(self.path("/etc/init.d/frugal")) as f:
            self.assertIn("FRUGAL=/usr/sbin/frugal\n", f.read())

    def test_prefix_usr_local(self):
        d = tempfile.mkdtemp(prefix="frugal-pkg-")
        self.addCleanup(shutil.rmtree, d, True)
        r = make_install(d, "/usr/local")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(d, "usr/local/sbin/frugal")))
        self.assertFalse(os.path.lexists(os.path.join(d, "usr/lib/sendmail")), "only with PREFIX=/usr")
        with open(os.path.join(d, "lib/systemd/system/frugal.service")) as f:
            self.assertIn("ExecStart=/usr/local/sbin/frugal serve\n", f.read())

    def test_systemd_unit_verifies(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        with open(self.path("/lib/systemd/system/frugal.service")) as f:
            unit = f.read().replace("/usr/sbin/frugal", self.path("/usr/sbin/frugal"))
        d = tempfile.mkdtemp(prefix="frugal-pkg-")
        self.addCleanup(shutil.rmtree, d, True)

        def verify(text):
            p = os.path.join(d, "frugal.service")
            with open(p, "w") as f:
                f.write(text)
            return subprocess.run(["systemd-analyze", "verify", "--man=no", p],
                                  capture_output=True, text=True, timeout=60)
        r = verify(unit)
        self.assertEqual((r.returncode, r.stderr.strip()), (0, ""))
        self.assertIn("Type=forking", unit)
        self.assertIn("PIDFile=/var/spool/frugal/pid/frugal.pid", unit)
        self.assertIn("ProtectHome=no", unit)
        # negative control: a misspelt key is reported
        r = verify(unit.replace("ProtectSystem=", "ProtectSystm="))
        self.assertIn("ProtectSystm", r.stderr)

    def test_init_script(self):
        p = self.path("/etc/init.d/frugal")
        r = subprocess.run(["sh", "-n", p], capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        with open(p) as f:
            text = f.read()
        header = re.search(r"^### BEGIN INIT INFO\n(.*?)^### END INIT INFO$", text, re.M | re.S)
        self.assertIsNotNone(header)
        for key in ("Provides", "Required-Start", "Required-Stop", "Default-Start", "Default-Stop",
                    "Short-Description"):
            self.assertRegex(header.group(1), r"(?m)^# %s:\s+\S" % key)
        for verb in ("start)", "stop)", "reload)", "status)", "restart|force-reload)"):
            self.assertIn(verb, text)
        # status of a daemon that is not running: LSB's 3, through frugal's own status command
        conf = tempfile.mkdtemp(prefix="frugal-pkg-")
        self.addCleanup(shutil.rmtree, conf, True)
        with open(os.path.join(conf, "frugal.conf"), "w") as f:
            f.write("queue_directory = %s/queue\n" % conf)
        with open(os.path.join(conf, "default"), "w") as f:
            f.write("FRUGAL_OPTS='-c %s'\n" % conf)
        script = text.replace("/etc/default/frugal", os.path.join(conf, "default")).replace(
            "FRUGAL=/usr/sbin/frugal", "FRUGAL=" + self.path("/usr/sbin/frugal"))
        r = subprocess.run(["sh", "-c", script, "frugal.init", "status"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("not running", r.stdout)

    def test_init_script_runs_the_daemon(self):
        """start, status, reload, stop through the installed script and frugal's own commands."""
        d = Daemon()
        self.addCleanup(d.cleanup)
        with open(self.path("/etc/init.d/frugal")) as f:
            text = f.read()
        default = os.path.join(d.dir, "default")
        with open(default, "w") as f:
            f.write("FRUGAL_OPTS='-c %s'\n" % d.dir)
        script = text.replace("/etc/default/frugal", default).replace(
            "FRUGAL=/usr/sbin/frugal", "FRUGAL=" + FRUGAL)

        def init(verb):
            return subprocess.run(["sh", "-c", script, "frugal.init", verb],
                                  capture_output=True, text=True, timeout=60 * SLOW)
        r = init("start")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        stopped = [False]

        def kill_left():   # only if the test failed before stop: the pid file names our master
            if not stopped[0]:
                init("stop")
        self.addCleanup(kill_left)
        wait_for(lambda: init("status").returncode == 0, 15 * SLOW, "status 0 after start")
        d.wait_log("daemon started", timeout=30 * SLOW)
        socket.create_connection(("127.0.0.1", d.port), timeout=5).close()
        self.assertEqual(init("start").returncode, 0)   # already running: said, not started twice
        r = init("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        d.wait_log("reload -- version", timeout=15 * SLOW)
        r = init("stop")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_for(lambda: init("status").returncode == 3, 30 * SLOW, "status 3 after stop")
        stopped[0] = True

    def test_logrotate(self):
        if not shutil.which("logrotate") and not os.path.exists("/usr/sbin/logrotate"):
            self.skipTest("logrotate is not installed")
        lr = shutil.which("logrotate") or "/usr/sbin/logrotate"
        d = tempfile.mkdtemp(prefix="frugal-pkg-")
        self.addCleanup(shutil.rmtree, d, True)
        r = subprocess.run([lr, "--debug", "--state", os.path.join(d, "state"), self.path("/etc/logrotate.d/frugal")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("error", r.stderr.lower())


class Accounts(unittest.TestCase):
    """make install as root creates the recommended accounts and sendmail's group when missing:
    in a staging root that has its own etc/passwd (useradd --prefix: this machine's files are
    never touched), once, and makes frugal-postdrop set-group-ID that group."""

    def test_accounts_in_a_staging_root(self):
        if os.geteuid() != 0:
            self.skipTest("creating accounts needs root (useradd/groupadd)")
        dest = tempfile.mkdtemp(prefix="frugal-pkg-")
        self.addCleanup(shutil.rmtree, dest, True)
        os.makedirs(os.path.join(dest, "etc"))
        for name, line in (("passwd", "root:x:0:0:root:/root:/bin/bash\n"), ("group", "root:x:0:\n"),
                           ("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\n")):
            with open(os.path.join(dest, "etc", name), "w") as f:
                f.write(line)
        with open("/etc/passwd") as f:
            system_before = f.read()
        for _ in range(2):   # the second run finds them all and adds nothing
            r = make_install(dest)
            self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(dest, "etc", "passwd")) as f:
            users = [l.split(":") for l in f.read().splitlines()]
        with open(os.path.join(dest, "etc", "group")) as f:
            groups = [l.split(":") for l in f.read().splitlines()]
        self.assertEqual(sorted(u[0] for u in users), ["frugal", "root", "vmail"])
        for u in users:
            if u[0] != "root":
                self.assertLess(int(u[2]), 1000, "a system account: %s" % u)
                self.assertEqual(u[6], "/usr/sbin/nologin")
        drop = [g for g in groups if g[0] == "frugal-drop"]
        self.assertEqual(len(drop), 1, groups)
        st = os.stat(os.path.join(dest, "usr/sbin/frugal-postdrop"))
        self.assertEqual(st.st_gid, int(drop[0][2]), "frugal-postdrop's group is the staged frugal-drop")
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o2755)
        with open("/etc/passwd") as f:
            self.assertEqual(f.read(), system_before, "this machine's accounts untouched")


def plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


class Fail2ban(unittest.TestCase):
    """The filter over frugal's real log: each kind matched as often as it was
    provoked, with the client's address, and delivered mail never matched."""

    def test_filter_matches_real_log_lines(self):
        if not shutil.which("fail2ban-regex"):
            self.skipTest("fail2ban-regex is not installed (contrib/deps.sh test installs fail2ban)")
        users = tempfile.mkdtemp(prefix="frugal-pkg-")
        self.addCleanup(shutil.rmtree, users, True)
        d = Daemon(extra="smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n"
                         "smtpd_sasl_users = cdb:%s/users\nsmtpd_pregreet_wait = 1s\n" % users)
        self.addCleanup(d.cleanup)
        r = run_frugal("passwd", "-c", d.dir, "alice@example.test", input=PASSWORD + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        d.start()

        def session():
            s = Raw(d.port, timeout=10 * SLOW)
            self.addCleanup(s.close)
            self.assertEqual(s.reply()[0], 220)
            s.cmd("EHLO client.example.org")
            return s

        # two unknown users, three relay attempts, two failed AUTHs, one good mail
        s = session()
        self.assertEqual(s.cmd("MAIL FROM:<x@example.org>")[0], 250)
        self.assertEqual(s.cmd("RCPT TO:<nosuch1@example.test>")[0], 550)
        self.assertEqual(s.cmd("RCPT TO:<nosuch2@example.test>")[0], 550)
        for i in range(3):
            # defer_unauth_destination of the default smtpd_relay_restrictions
            self.assertEqual(s.cmd("RCPT TO:<victim%d@elsewhere.example>" % i)[0], 454)
        self.assertEqual(s.cmd("RCPT TO:<alice@example.test>")[0], 250)
        self.assertEqual(s.cmd("DATA")[0], 354)
        s.send(b"Subject: fine\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(s.reply()[0], 250)
        s.cmd("QUIT")
        s = session()
        for i in range(2):
            self.assertEqual(s.cmd("AUTH PLAIN " + plain("alice@example.test", "guess%d" % i))[0], 535)
        s.cmd("QUIT")
        # a good login does not match either
        s = session()
        self.assertEqual(s.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))[0], 235)
        s.cmd("QUIT")
        # a talker: speaks before the banner (from another address: 127.0.0.1 passed the
        # pregreet wait above and is remembered, as postscreen remembers it, so it is not asked again)
        t = socket.create_connection(("127.0.0.1", d.port), timeout=10 * SLOW, source_address=("127.0.0.2", 0))
        self.addCleanup(t.close)
        t.sendall(b"EHLO spammer\r\n")
        self.assertTrue(t.makefile("rb").readline().startswith(b"521"))
        d.wait_log("PREGREET")
        d.wait_messages(d.maildir("alice"), 1)
        d.wait_log("status=sent")

        logf = os.path.join(d.dir, "stderr")   # serve -f logs to stderr, in syslog's shape
        with open(logf) as f:
            log = f.read()
        # the filter includes common.conf, as installed next to it in /etc/fail2ban/filter.d
        conf = tempfile.mkdtemp(prefix="frugal-pkg-")
        self.addCleanup(shutil.rmtree, conf, True)
        os.makedirs(os.path.join(conf, "filter.d"))
        shutil.copy("/etc/fail2ban/filter.d/common.conf", os.path.join(conf, "filter.d"))
        shutil.copy(os.path.join(CONTRIB, "fail2ban", "filter.d", "frugal.conf"), os.path.join(conf, "filter.d"))
        out = subprocess.run(["fail2ban-regex", "-c", conf, "-v", "--print-all-matched", logf, "frugal"],
                             capture_output=True, text=True, timeout=120 * SLOW)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        hits = [int(n) for n in re.findall(r"^\|\s+\d+\) \[(\d+)\] ", out.stdout, re.M)]
        # the filter's failregex order: unknown user, relay, AUTH, pregreet
        self.assertEqual(hits[:4], [2, 3, 2, 1], out.stdout[-4000:])
        m = re.search(r"Lines: \d+ lines, \d+ ignored, (\d+) matched", out.stdout)
        self.assertEqual(int(m.group(1)), 8, out.stdout[-3000:])
        matched = out.stdout.split("Matched line(s):")[1].split("Missed line(s):")[0]
        self.assertEqual(len([l for l in matched.splitlines() if "frugal/" in l]), 8)
        self.assertNotIn("status=sent", matched)
        self.assertNotIn("client=", matched)
        self.assertIn("status=sent", log)   # the delivered mail is in the log, just not matched
        # the address fail2ban would ban is the client's
        ips = set(re.findall(r"^\|\s+(\d+\.\d+\.\d+\.\d+)\s", out.stdout, re.M))
        self.assertEqual(ips, {"127.0.0.1", "127.0.0.2"}, out.stdout[-3000:])

    def test_jail_uses_the_filter(self):
        with open(os.path.join(CONTRIB, "fail2ban", "jail.d", "frugal.conf")) as f:
            jail = f.read()
        self.assertIn("[frugal]", jail)
        self.assertRegex(jail, r"(?m)^filter\s*=\s*frugal$")
        self.assertRegex(jail, r"(?m)^enabled\s*=\s*false$")


if __name__ == "__main__":
    unittest.main()
