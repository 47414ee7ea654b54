"""tests/integration/test_queue_priv.py: `frugal queue` on a running daemon's
queue, and the privilege drop to mail_owner (PRODUCT.md 3.5)."""
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import threading
import time
import unittest

from harness import Daemon, run_frugal, wait_for, SLOW, FRUGAL, frugal_for_others


class QueueCommand(unittest.TestCase):
    def setUp(self):
        # relay_domains mail is held (defer_transports) so that it stays queued to be listed
        self.d = Daemon(extra="defer_transports = relay\n").start()

    def tearDown(self):
        self.d.cleanup()

    def test_list_show_delete(self):
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


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        text = f.read()
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.split()
    return out


def children_of(pid):
    out = []
    for n in os.listdir("/proc"):
        if n.isdigit():
            try:
                with open("/proc/%s/stat" % n) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(n))
    return out


def needs_root(tc, why):
    if os.geteuid() != 0:
        tc.skipTest("needs root: " + why)


class Privileges(unittest.TestCase):
    def nobody(self):
        try:
            return pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user 'nobody' on this machine")

    def test_smtp_process_cannot_regain_root(self):
        """The process that talks SMTP: real, effective, saved (and file system)
        IDs are mail_owner's, no supplementary groups but its own, no new
        privileges, no capabilities (PRODUCT.md 3.5)."""
        needs_root(self, "the drop from root to mail_owner is what is tested")
        pw = self.nobody()
        d = Daemon(extra="mail_owner = nobody\n")
        try:
            os.makedirs(d.maildir_base)
            os.chown(d.maildir_base, pw.pw_uid, pw.pw_gid)
            os.chmod(d.dir, 0o755)
            d.start()
            pid = d.smtpd_pid()
            self.assertNotEqual(pid, d.proc.pid, "the master forks the SMTP process")
            st = proc_status(pid)
            self.assertEqual(st["Uid"], [str(pw.pw_uid)] * 4)
            self.assertEqual(st["Gid"], [str(pw.pw_gid)] * 4)
            self.assertEqual(st["Groups"], [str(pw.pw_gid)])
            self.assertEqual(st["NoNewPrivs"], ["1"])
            self.assertEqual(st["CapEff"], ["0000000000000000"])
            self.assertEqual(st["CapPrm"], ["0000000000000000"])
            # the listener the master bound as root is served by it
            self.assertTrue(any("socket:" in os.readlink("/proc/%d/fd/%s" % (pid, n))
                                for n in os.listdir("/proc/%d/fd" % pid)))
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
                    r = subprocess.run([frugal_for_others()] + args, capture_output=True, text=True,
                                       preexec_fn=become, timeout=30 * SLOW)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    if args[0] == "limits":
                        import json
                        j = json.loads(r.stdout)
                        self.assertEqual(j["daemon"]["pid"], pid, r.stdout[:500])
        finally:
            d.cleanup()

    def test_virtual_mailbox_owner(self):
        """Virtual mailboxes are written by the virtual helper, as
        virtual_mailbox_owner, with no process forked per message."""
        needs_root(self, "writing as virtual_mailbox_owner is what is tested")
        pw = self.nobody()
        d = Daemon(extra="virtual_mailbox_owner = nobody\n")
        try:
            os.makedirs(d.vbase)
            os.chown(d.vbase, pw.pw_uid, pw.pw_gid)
            os.chmod(d.dir, 0o755)
            d.start()
            helpers = [p for p in children_of(d.proc.pid) if p != d.smtpd_pid()]
            self.assertEqual(len(helpers), 1, "one helper: virtual")
            self.assertEqual(proc_status(helpers[0])["Uid"], [str(pw.pw_uid)] * 4)
            smtpd = d.smtpd_pid()
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                for i in range(20):
                    s.sendmail("v@example.org", ["carol@virt.test"], "Subject: vowner %d\r\n\r\nhi\r\n" % i)
            d.wait_messages(d.vmaildir("virt.test/carol"), 20)
            # mail over 64 KiB is asked from a delivery worker that waits (the loop reads the answer)
            big = "Subject: vowner big\r\n\r\n" + ("x" * 76 + "\r\n") * 1400
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                s.sendmail("v@example.org", ["carol@virt.test"], big)
            d.wait_messages(d.vmaildir("virt.test/carol"), 21)
            self.assertTrue(any(len(m) > 100000 for m in d.messages(d.vmaildir("virt.test/carol"))))
            new = os.path.join(d.vmaildir("virt.test/carol"), "new")
            for n in os.listdir(new):
                self.assertEqual(os.stat(os.path.join(new, n)).st_uid, pw.pw_uid)
            # no fork per message: the same processes, and the daemon has no children
            self.assertEqual(children_of(smtpd), [])
            self.assertEqual(sorted(p for p in children_of(d.proc.pid) if p != smtpd), helpers)
        finally:
            d.cleanup()

    def test_confined_paths(self):
        """The helper walks below virtual_mailbox_base without following links
        and refuses directories of another owner: a link planted in the
        mailbox tree sends nothing elsewhere, and the mail stays queued."""
        needs_root(self, "the virtual helper runs as another user")
        pw = self.nobody()
        d = Daemon(extra="virtual_mailbox_owner = nobody\n")
        try:
            elsewhere = os.path.join(d.dir, "elsewhere")
            os.makedirs(elsewhere)
            os.chown(elsewhere, pw.pw_uid, pw.pw_gid)
            os.makedirs(os.path.join(d.vbase, "virt.test"))
            for p in (d.vbase, os.path.join(d.vbase, "virt.test")):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.symlink(elsewhere, os.path.join(d.vbase, "virt.test", "carol"))
            os.makedirs(os.path.join(d.vbase, "virt.test", "dave"))   # root's: a foreign owner
            os.chmod(d.dir, 0o755)
            d.start()
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                s.sendmail("c@example.org", ["carol@virt.test"], "Subject: link\r\n\r\nx\r\n")
                s.sendmail("c@example.org", ["dave@virt.test"], "Subject: owner\r\n\r\nx\r\n")
            d.wait_log("symbolic link or not a directory: refused")
            d.wait_log("belongs to uid 0, not the mailbox owner %d: refused" % pw.pw_uid)
            self.assertEqual(os.listdir(elsewhere), [])
            r = run_frugal("queue", "-c", d.dir, "list")
            self.assertIn("carol@virt.test", r.stdout)
            self.assertIn("dave@virt.test", r.stdout)
        finally:
            d.cleanup()

    def test_system_user_home_mailbox(self):
        """System users' mail is written by the local helper as each user,
        many at once, every message exactly once (no child to lose)."""
        needs_root(self, "creates system users and delivers as them")
        if not shutil.which("useradd"):
            self.skipTest("no useradd on this machine")
        base = tempfile.mkdtemp(prefix="frugal-home-")
        os.chmod(base, 0o755)
        users = ["frugalt%d%s" % (os.getpid(), c) for c in "ab"]
        try:
            for u in users:
                subprocess.run(["useradd", "-M", "-d", os.path.join(base, u), "-s", "/usr/sbin/nologin", u],
                               check=True)
                pw = pwd.getpwnam(u)
                os.makedirs(os.path.join(base, u))
                os.chown(os.path.join(base, u), pw.pw_uid, pw.pw_gid)
            d = Daemon(extra="mail_owner = nobody\nlocal_mailbox_base =\n"
                             "local_recipient_maps = unix:passwd.byname $alias_maps\n")
            try:
                os.chmod(d.dir, 0o755)
                d.start()
                smtpd = d.smtpd_pid()
                n = 60
                errors = []

                def client(k):
                    try:
                        with smtplib.SMTP("127.0.0.1", d.port, timeout=30 * SLOW) as s:
                            for i in range(n // 6):
                                tok = "home-%d-%d" % (k, i)
                                s.sendmail("h@example.org", ["%s@example.test" % u for u in users],
                                           "Subject: %s\r\nX-Token: %s\r\n\r\nhi\r\n" % (tok, tok))
                    except Exception as e:
                        errors.append(repr(e))
                threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
                for t in threads:
                    t.start()
                forks = 0
                while any(t.is_alive() for t in threads):
                    forks += len(children_of(smtpd))
                    time.sleep(0.01)   # sampling the process table while the load runs
                for t in threads:
                    t.join()
                self.assertEqual(errors, [])
                for u in users:
                    pw = pwd.getpwnam(u)
                    maildir = os.path.join(base, u, "Maildir")
                    msgs = d.wait_messages(maildir, n, timeout=60)
                    tokens = [re.search(rb"X-Token: (\S+)", m).group(1) for m in msgs]
                    self.assertEqual(len(tokens), len(set(tokens)), "no message twice")
                    self.assertEqual(len(tokens), n)
                    new = os.path.join(maildir, "new")
                    for f in os.listdir(new):
                        self.assertEqual(os.stat(os.path.join(new, f)).st_uid, pw.pw_uid)
                self.assertEqual(forks, 0, "the SMTP process forked")
                self.assertFalse(d.log_has("No child processes"))
                self.assertFalse(d.log_has("status=deferred"))
            finally:
                d.cleanup()
        finally:
            for u in users:
                subprocess.run(["userdel", u], capture_output=True)
            shutil.rmtree(base, ignore_errors=True)

    def test_helper_restarted_mail_kept(self):
        """A helper that dies is restarted by the master; what it had in hand
        is retried, nothing is lost."""
        needs_root(self, "the virtual helper runs as another user")
        pw = self.nobody()
        inflight = 4   # delivery_concurrency_limit: what the helper can have in hand when it dies
        d = Daemon(extra="virtual_mailbox_owner = nobody\nsmtpd_client_connection_count_limit = 0\n"
                         "delivery_concurrency_limit = %d\n" % inflight)
        try:
            os.makedirs(d.vbase)
            os.chown(d.vbase, pw.pw_uid, pw.pw_gid)
            os.chmod(d.dir, 0o755)
            d.start()
            smtpd = d.smtpd_pid()
            first = [p for p in children_of(d.proc.pid) if p != smtpd]
            self.assertEqual(len(first), 1)
            n = 200
            errors = []

            def client():
                try:
                    with smtplib.SMTP("127.0.0.1", d.port, timeout=30 * SLOW) as s:
                        for i in range(n):
                            s.sendmail("k@example.org", ["carol@virt.test"],
                                       "Subject: k%d\r\nX-Token: k%d\r\n\r\nhi\r\n" % (i, i))
                except Exception as e:   # a commit that never answers (the helper died inside a shared sync)
                    errors.append(repr(e))
            t = threading.Thread(target=client)
            t.start()
            # killed four times while mail flows: in a sync, in a delivery, between two
            killed = []
            helper = first[0]
            for at in (10, 50, 90, 130):
                wait_for(lambda: len(d.messages(d.vmaildir("virt.test/carol"))) >= at, 60, "%d deliveries" % at)
                os.kill(helper, 9)
                killed.append(helper)
                d.wait_log("delivery helper virtual (pid %d)" % helper)
                helper = wait_for(lambda: [p for p in children_of(d.proc.pid) if p not in killed + [smtpd]],
                                  30, "a new helper")[0]
            t.join(120 * SLOW)
            self.assertFalse(t.is_alive(), "the client is stuck")
            self.assertEqual(errors, [])
            d.wait_log("restarting it")
            # every message, and twice only what the helper had in hand (delivered, not yet answered)
            def tokens():
                return [re.search(rb"X-Token: (\S+)", m).group(1) for m in d.messages(d.vmaildir("virt.test/carol"))]
            wait_for(lambda: len(set(tokens())) == n, 60, "every message delivered")
            wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 60, "the queue drained")
            msgs = tokens()
            tokens = set(msgs)
            self.assertLessEqual(len(msgs) - len(tokens), inflight * len(killed),
                                 "more duplicates than deliveries in flight")
            second = [p for p in children_of(d.proc.pid) if p != smtpd]
            self.assertEqual(len(second), 1)
            self.assertNotEqual(second, first)
            self.assertEqual(d.smtpd_pid(), smtpd, "the daemon kept running")
            print("\n  helper killed 4 times during %d messages: %d delivered, %d duplicates"
                  % (n, len(tokens), len(msgs) - len(tokens)))
        finally:
            d.cleanup()

    def test_helper_hung_loop_serves_requests_time_out(self):
        """A helper that stops answering (SIGSTOP): the loop, which owns the
        helper's socket, keeps serving SMTP while requests pile up beyond
        what the socket holds (they wait in the daemon, never blocking the
        loop); each unanswered request fails after the timeout with the mail
        kept queued; once the helper runs again every message is delivered."""
        needs_root(self, "the virtual helper runs as another user")
        pw = self.nobody()
        users = ["u%d" % i for i in range(50)]
        vmap = ", ".join("%s@virt.test=virt.test/%s/" % (u, u) for u in users)
        nmsg = 10   # x 50 recipients: 500 requests in flight, more than the socket's buffer holds
        d = Daemon(extra="virtual_mailbox_owner = nobody\nvirtual_mailbox_maps = inline:{ %s }\n"
                         "initial_destination_concurrency = 20\n" % vmap,
                   env={"FRUGAL_TEST_HELPER_TIMEOUT": "4"})
        helper = None
        try:
            os.makedirs(d.vbase)
            os.chown(d.vbase, pw.pw_uid, pw.pw_gid)
            os.chmod(d.dir, 0o755)
            d.start()
            smtpd = d.smtpd_pid()
            helper = [p for p in children_of(d.proc.pid) if p != smtpd][0]
            os.kill(helper, signal.SIGSTOP)
            t0 = time.monotonic()
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                for i in range(nmsg):
                    s.sendmail("h@example.org", ["%s@virt.test" % u for u in users],
                               "Subject: h%d\r\nX-Token: h%d\r\n\r\nhi\r\n" % (i, i))
            d.wait_log("delivery helper virtual (pid %d) is behind" % helper, 10 * SLOW)
            # the loop is not blocked on the full socket: a new session is served at once
            with smtplib.SMTP("127.0.0.1", d.port, timeout=5 * SLOW) as s:
                self.assertEqual(s.noop()[0], 250)
            d.wait_log("delivery helper virtual did not answer in 4 s", 30 * SLOW)
            self.assertGreaterEqual(time.monotonic() - t0, 4, "timed out before the timeout")
            self.assertTrue(os.listdir(os.path.join(d.queue, "committed")), "the mail stays queued")
            self.assertEqual(sum(len(d.messages(d.vmaildir("virt.test/" + u))) for u in users), 0)
            self.assertEqual(d.smtpd_pid(), smtpd, "the daemon kept running")
            os.kill(helper, signal.SIGCONT)

            def tokens(u):
                return set(re.search(rb"X-Token: (\S+)", m).group(1)
                           for m in d.messages(d.vmaildir("virt.test/" + u)))
            wait_for(lambda: all(len(tokens(u)) == nmsg for u in users), 90 * SLOW, "every message delivered")
            wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 60 * SLOW, "the queue drained")
            self.assertEqual([p for p in children_of(d.proc.pid) if p != smtpd], [helper],
                             "a hung helper is waited for, not replaced")
        finally:
            if helper:
                try:
                    os.kill(helper, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            d.cleanup()

    def test_no_chown_through_hard_links(self):
        """Start-up as root never chowns a file in the queue: a hard link to a
        root file planted there (protected_hardlinks off, old OpenVZ kernels)
        stays root's."""
        needs_root(self, "start-up as root is what is tested")
        pw = self.nobody()
        d = Daemon(extra="mail_owner = nobody\n")
        try:
            secret = os.path.join(d.dir, "secret")
            with open(secret, "w") as f:
                f.write("root only\n")
            os.chmod(secret, 0o600)
            for sub in ("incoming", "committed"):
                os.makedirs(os.path.join(d.queue, sub))
                os.chown(os.path.join(d.queue, sub), pw.pw_uid, pw.pw_gid)
            os.link(secret, os.path.join(d.queue, "incoming", "6B1190000000A"))
            os.link(secret, os.path.join(d.queue, "committed", "6B1190000000B"))
            os.makedirs(d.maildir_base)
            os.chown(d.maildir_base, pw.pw_uid, pw.pw_gid)
            os.chmod(d.dir, 0o755)
            d.start()
            st = os.stat(secret)
            self.assertEqual((st.st_uid, st.st_gid), (0, 0))
            self.assertEqual(st.st_mode & 0o777, 0o600)
            self.assertEqual(os.stat(d.queue).st_uid, 0)
            self.assertEqual(os.stat(os.path.join(d.queue, "committed")).st_uid, pw.pw_uid)
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
