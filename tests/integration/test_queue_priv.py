"""tests/integration/test_queue_priv.py: `frugal queue` on a running daemon's
queue, and the privilege drop to mail_owner (PRODUCT.md 3.5)."""
import os
import pwd
import re
import shutil
import smtplib
import subprocess
import tempfile
import unittest

from harness import Daemon, run_frugal, wait_for, SLOW, FRUGAL


class QueueCommand(unittest.TestCase):
    def setUp(self):
        self.d = Daemon().start()

    def tearDown(self):
        self.d.cleanup()

    def test_list_show_delete(self):
        # relay_domains mail stays queued (no SMTP client in this version): never lost
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10 * SLOW) as s:
            s.sendmail("q@example.org", ["someone@relay.test"], "Subject: queued\r\n\r\nhold me\r\n")
        self.d.wait_log("status=deferred")
        r = run_frugal("queue", "-c", self.d.dir, "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("someone@relay.test", r.stdout)
        self.assertIn("q@example.org", r.stdout)
        self.assertRegex(r.stdout, r"-- \d+ Kbytes in 1 Request")
        qid = re.search(r"^([0-9A-F]{10,})", r.stdout, re.M).group(1)
        r = run_frugal("queue", "-c", self.d.dir, "show", qid)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("hold me", r.stdout)
        r = run_frugal("queue", "-c", self.d.dir, "delete", qid)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run_frugal("queue", "-c", self.d.dir, "list")
        self.assertIn("Mail queue is empty", r.stdout)
        r = run_frugal("queue", "-c", self.d.dir, "show", "NOSUCHID")
        self.assertNotEqual(r.returncode, 0)


class Privileges(unittest.TestCase):
    def test_runs_as_mail_owner(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: the drop from root to mail_owner is what is tested")
        try:
            pw = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user 'nobody' on this machine")
        d = Daemon(extra="mail_owner = nobody\n")
        try:
            os.makedirs(d.maildir_base)
            os.chown(d.maildir_base, pw.pw_uid, pw.pw_gid)
            os.chmod(d.dir, 0o755)
            d.start()
            with open("/proc/%d/status" % d.proc.pid) as f:
                uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", f.read(), re.M).groups()
            # real and effective: nobody; saved: root, for delivery as a system user
            self.assertEqual(uids, (str(pw.pw_uid), str(pw.pw_uid), "0"))
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                s.sendmail("p@example.org", ["alice@example.test"], "Subject: priv\r\n\r\nhi\r\n")
            d.wait_messages(d.maildir("alice"), 1)
            st = os.stat(os.path.join(d.maildir("alice"), "new"))
            self.assertEqual(st.st_uid, pw.pw_uid)
            # an admin account that is neither root nor mail_owner reads the live report
            try:
                other = pwd.getpwnam("daemon")
            except KeyError:
                other = None
            if other is not None:
                def become():
                    os.setgid(other.pw_gid)
                    os.setuid(other.pw_uid)
                for args in (["limits", "--json", "-c", d.dir], ["status", "-c", d.dir]):
                    r = subprocess.run([FRUGAL] + args, capture_output=True, text=True,
                                       preexec_fn=become, timeout=30 * SLOW)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    if args[0] == "limits":
                        import json
                        j = json.loads(r.stdout)
                        self.assertEqual(j["daemon"]["pid"], d.proc.pid, r.stdout[:500])
        finally:
            d.cleanup()

    def test_virtual_mailbox_owner(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: writing as virtual_mailbox_owner is what is tested")
        try:
            pw = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user 'nobody' on this machine")
        d = Daemon(extra="virtual_mailbox_owner = nobody\n")
        try:
            os.makedirs(d.vbase)
            os.chown(d.vbase, pw.pw_uid, pw.pw_gid)
            os.chmod(d.dir, 0o755)
            d.start()
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                s.sendmail("v@example.org", ["carol@virt.test"], "Subject: vowner\r\n\r\nhi\r\n")
            d.wait_messages(d.vmaildir("virt.test/carol"), 1)
            new = os.path.join(d.vmaildir("virt.test/carol"), "new")
            for n in os.listdir(new):
                self.assertEqual(os.stat(os.path.join(new, n)).st_uid, pw.pw_uid)
        finally:
            d.cleanup()

    def test_system_user_home_mailbox(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: creates a system user and delivers as that user")
        if not shutil.which("useradd"):
            self.skipTest("no useradd on this machine")
        user = "frugalt%d" % os.getpid()
        home = tempfile.mkdtemp(prefix="frugal-home-")
        os.chmod(home, 0o755)
        home = os.path.join(home, user)
        subprocess.run(["useradd", "-M", "-d", home, "-s", "/usr/sbin/nologin", user], check=True)
        try:
            pw = pwd.getpwnam(user)
            os.makedirs(home)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            d = Daemon(extra="mail_owner = nobody\nlocal_mailbox_base =\n"
                             "local_recipient_maps = unix:passwd.byname $alias_maps\n")
            try:
                os.chmod(d.dir, 0o755)
                d.start()
                with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                    s.sendmail("h@example.org", ["%s@example.test" % user], "Subject: home\r\n\r\nhi\r\n")
                maildir = os.path.join(home, "Maildir")
                d.wait_messages(maildir, 1)
                new = os.path.join(maildir, "new")
                for n in os.listdir(new):
                    self.assertEqual(os.stat(os.path.join(new, n)).st_uid, pw.pw_uid)
            finally:
                d.cleanup()
        finally:
            subprocess.run(["userdel", user], capture_output=True)
            shutil.rmtree(os.path.dirname(home), ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
