"""tests/integration/test_auth.py: submission on 587 (STARTTLS) and 465
(implicit TLS), AUTH PLAIN and LOGIN against smtpd_sasl_users (hashes
written by `frugal passwd`), with real clients: Python's smtplib, swaks,
and the raw sequence a mail client sends.

Wrong password, unknown user, AUTH without TLS, MAIL before AUTH on
submission, relay refused before AUTH and allowed after it, sender-login
mismatch with and without smtpd_sender_login_maps, the brute-force limits
(smtpd_hard_error_limit, smtpd_client_auth_rate_limit) and the failure log
line checked with fail2ban-regex and its postfix filter, a password check
the memory budget has no room for, many concurrent logins while another
client's commit is answered first, and `frugal passwd` itself.
"""
import base64
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from harness import Daemon, Raw, run_frugal, wait_for, free_port, make_cert, client_ctx, SLOW, FRUGAL, VALGRIND

PASSWORD = "correct horse battery staple"


def plain(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


class AuthBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="frugal-auth-")
        os.chmod(cls.certdir, 0o755)
        cls.cert, cls.key = make_cert(cls.certdir, "mx", kind="ec")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def daemon(self, extra="", users=(("alice@example.test", PASSWORD),), start=True, **kw):
        """A daemon with submission on its own port and smtpd_sasl_users written by `frugal passwd`."""
        self.sub = free_port()
        self.smtps = free_port()
        tdir = tempfile.mkdtemp(prefix="frugal-users-")
        self.addCleanup(shutil.rmtree, tdir, True)
        self.users = os.path.join(tdir, "users")
        d = Daemon(extra="smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n"
                         "submission_listen = 127.0.0.1:%d\nsmtps_listen = 127.0.0.1:%d\n"
                         "smtpd_sasl_users = cdb:%s\n%s"
                   % (self.cert, self.key, self.sub, self.smtps, self.users, extra), **kw)
        self.addCleanup(d.cleanup)
        for user, pw in users:
            r = run_frugal("passwd", "-c", d.dir, user, input=pw + "\n")
            self.assertEqual(r.returncode, 0, r.stderr)
        if start:
            d.start()
        return d

    def raw(self, port, tls=False):
        r = Raw(port)
        self.addCleanup(r.close)
        if tls:
            r.f.close()
            r.s = client_ctx().wrap_socket(r.s, server_hostname="mx.example.test")
            r.f = r.s.makefile("rb")
        return r

    def auth_failures(self, d):
        return [l for l in d.output().splitlines() if "authentication failed" in l]


class Submission(AuthBase):
    def test_mail_client_sequence_on_587(self):
        """EHLO, STARTTLS, EHLO, AUTH PLAIN, MAIL ...: what Thunderbird sends."""
        d = self.daemon()
        r = self.raw(self.sub)
        self.assertEqual(r.reply()[0], 220)
        code, text = r.cmd("EHLO client.example.org")
        self.assertNotIn("AUTH", text, "no AUTH before TLS (smtpd_tls_auth_only)")
        self.assertIn("STARTTLS", text)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.test>")[0], 530)   # TLS first
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))[0], 530)
        self.assertEqual(r.starttls(client_ctx()), 220)
        code, text = r.cmd("EHLO client.example.org")
        self.assertIn("250-AUTH PLAIN LOGIN", text)
        self.assertNotIn("STARTTLS", text)
        code, text = r.cmd("MAIL FROM:<alice@example.test>")
        self.assertEqual((code, text.strip()), (530, "530 5.7.0 Authentication required"))
        code, text = r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))
        self.assertEqual((code, text.strip()), (235, "235 2.7.0 Authentication successful"))
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))[0], 503)   # once
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.test>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<bob@example.test>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<someone@far.example>")[0], 250, "authenticated: may relay")
        self.assertEqual(r.cmd("DATA")[0], 354)
        self.assertEqual(r.cmd("Subject: from a mail client\r\n\r\nhello\r\n.")[0], 250)
        r.cmd("QUIT")
        msg = d.wait_messages(d.maildir("bob"), 1)[0].decode()
        self.assertIn("with ESMTPSA id", msg)
        self.assertIn("(using TLSv1.3", msg)
        d.wait_log("sasl_method=PLAIN, sasl_username=alice@example.test")

    def test_smtps_465_smtplib_login_and_swaks(self):
        d = self.daemon()
        with smtplib.SMTP_SSL("127.0.0.1", self.smtps, timeout=10 * SLOW, context=client_ctx()) as s:
            s.ehlo("c.example.org")
            self.assertIn("PLAIN", s.esmtp_features.get("auth", ""))
            s.login("alice@example.test", PASSWORD)
            s.sendmail("alice@example.test", ["bob@example.test"], "Subject: via 465\r\n\r\nsmtplib\r\n")
        with smtplib.SMTP("127.0.0.1", self.sub, timeout=10 * SLOW) as s:
            s.starttls(context=client_ctx())
            s.ehlo("c.example.org")
            s.user, s.password = "alice@example.test", PASSWORD
            self.assertEqual(s.auth("LOGIN", s.auth_login, initial_response_ok=False)[0], 235)
            s.sendmail("alice@example.test", ["bob@example.test"], "Subject: via 587 LOGIN\r\n\r\nx\r\n")
        if not shutil.which("swaks"):
            self.fail("swaks not installed (contrib/deps.sh installs it)")
        for mech in ("PLAIN", "LOGIN"):
            r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % self.sub, "--tls", "--auth", mech,
                                "--auth-user", "alice@example.test", "--auth-password", PASSWORD,
                                "--from", "alice@example.test", "--to", "bob@example.test",
                                "--header", "Subject: swaks %s" % mech],
                               capture_output=True, text=True, timeout=60 * SLOW)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        msgs = b"".join(d.wait_messages(d.maildir("bob"), 4)).decode()
        for subject in ("via 465", "via 587 LOGIN", "swaks PLAIN", "swaks LOGIN"):
            self.assertIn("Subject: " + subject, msgs)

    def test_wrong_password_unknown_user_abort_and_garbage(self):
        d = self.daemon()
        r = self.raw(self.smtps, tls=True)
        r.reply()
        r.cmd("EHLO c.example.org")
        code, text = r.cmd("AUTH PLAIN " + plain("alice@example.test", "wrong"))
        self.assertEqual((code, text.strip()), (535, "535 5.7.8 Error: authentication failed: authentication failure"))
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("nobody@example.test", PASSWORD))[0], 535)
        self.assertEqual(r.cmd("AUTH LOGIN")[0], 334)
        self.assertEqual(r.cmd(base64.b64encode(b"alice@example.test").decode())[0], 334)
        self.assertEqual(r.cmd("*"), (501, "501 5.7.0 Authentication aborted\r\n"))
        self.assertEqual(r.cmd("AUTH PLAIN")[0], 334)
        self.assertEqual(r.cmd("not base64!")[0], 501)
        self.assertEqual(r.cmd("AUTH CRAM-MD5")[0], 535)
        self.assertEqual(r.cmd("AUTH LOGIN " + base64.b64encode(b"alice@example.test").decode())[0], 334)
        self.assertEqual(r.cmd(base64.b64encode(PASSWORD.encode()).decode())[0], 235)
        fails = self.auth_failures(d)
        self.assertEqual(len(fails), 2, fails)   # the two wrong answers; aborts and garbage are 501s
        self.assertIn("warning: unknown[127.0.0.1]: SASL PLAIN authentication failed: ", fails[0])

    def test_sender_login_mismatch(self):
        d = self.daemon(users=(("alice@example.test", PASSWORD), ("bob@example.test", "bobs secret")),
                        extra="smtpd_sender_login_maps = inline:{ sales@example.test=alice@example.test, "
                              "@virt.test=bob@example.test }\n")
        r = self.raw(self.smtps, tls=True)
        r.reply()
        r.cmd("EHLO c.example.org")
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))[0], 235)
        code, text = r.cmd("MAIL FROM:<bob@example.test>")
        self.assertEqual((code, text.strip()), (553, "553 5.7.1 <bob@example.test>: Sender address rejected: "
                                                     "not owned by user alice@example.test"))
        self.assertEqual(r.cmd("MAIL FROM:<ALICE@example.test>")[0], 250)   # its own, any case
        r.cmd("RSET")
        self.assertEqual(r.cmd("MAIL FROM:<sales@example.test>")[0], 250)   # the map lists alice
        r.cmd("RSET")
        self.assertEqual(r.cmd("MAIL FROM:<carol@virt.test>")[0], 553)     # @virt.test is bob's
        self.assertEqual(r.cmd("MAIL FROM:<>")[0], 250)                    # bounces from the client
        r2 = self.raw(self.smtps, tls=True)
        r2.reply()
        r2.cmd("EHLO c.example.org")
        self.assertEqual(r2.cmd("AUTH PLAIN " + plain("bob@example.test", "bobs secret"))[0], 235)
        self.assertEqual(r2.cmd("MAIL FROM:<carol@virt.test>")[0], 250)

    def test_hide_client_session(self):
        d = self.daemon(extra="smtpd_hide_client_session = yes\n")
        with smtplib.SMTP_SSL("127.0.0.1", self.smtps, timeout=10 * SLOW, context=client_ctx()) as s:
            s.login("alice@example.test", PASSWORD)
            s.sendmail("alice@example.test", ["bob@example.test"], "Subject: hidden\r\n\r\nx\r\n")
        msg = d.wait_messages(d.maildir("bob"), 1)[0].decode()
        received = msg[msg.index("Received:"):msg.index("Subject:")]
        self.assertNotIn("127.0.0.1", received)
        self.assertRegex(received, r"^Received: by mx\.example\.test \(frugal\) with ESMTPSA id ")


class Port25(AuthBase):
    def test_auth_on_port_25_only_with_tls_and_relay_after_it(self):
        d = self.daemon(extra="smtpd_sasl_auth_enable = yes\n")
        r = self.raw(d.port)
        r.reply()
        code, text = r.cmd("EHLO c.example.org")
        self.assertNotIn("AUTH", text)
        code, text = r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))
        self.assertEqual((code, text.strip()),
                         (538, "538 5.7.11 Encryption required for requested authentication mechanism"))
        self.assertEqual(r.starttls(client_ctx()), 220)
        self.assertIn("AUTH PLAIN LOGIN", r.cmd("EHLO c.example.org")[1])
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.test>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<someone@far.example>")[0], 454, "relay refused before AUTH")
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))[0], 503,
                         "no AUTH inside a transaction")
        r.cmd("RSET")
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))[0], 235)
        self.assertEqual(r.cmd("MAIL FROM:<alice@example.test>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<someone@far.example>")[0], 250, "relay allowed after AUTH")

    def test_auth_not_offered_by_default_on_port_25(self):
        d = self.daemon()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
            s.starttls(context=client_ctx())
            s.ehlo("c.example.org")
            self.assertFalse(s.has_extn("auth"))
            self.assertEqual(s.docmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))[0], 503)

    def test_sender_login_mismatch_as_a_restriction(self):
        d = self.daemon(extra="smtpd_sasl_auth_enable = yes\n"
                              "smtpd_sender_restrictions = reject_sender_login_mismatch\n"
                              "mynetworks = 127.0.0.0/8\n")
        r = self.raw(d.port)
        r.reply()
        r.cmd("EHLO c.example.org")
        self.assertEqual(r.starttls(client_ctx()), 220)
        r.cmd("EHLO c.example.org")
        r.cmd("MAIL FROM:<bob@example.test>")
        code, text = r.cmd("RCPT TO:<alice@example.test>")
        self.assertEqual(code, 553, "not logged in: not bob's owner")
        r.cmd("RSET")
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))[0], 235)
        r.cmd("MAIL FROM:<alice@example.test>")
        self.assertEqual(r.cmd("RCPT TO:<bob@example.test>")[0], 250)


class BruteForce(AuthBase):
    def test_hard_error_limit_counts_failed_auth(self):
        d = self.daemon(extra="smtpd_hard_error_limit = 3\n")
        r = self.raw(self.smtps, tls=True)
        r.reply()
        r.cmd("EHLO c.example.org")
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice@example.test", "a"))[0], 535)
        self.assertEqual(r.cmd("AUTH PLAIN " + plain("alice@example.test", "b"))[0], 535)
        code, text = r.cmd("AUTH PLAIN " + plain("alice@example.test", "c"))
        self.assertEqual(code, 535)
        self.assertIn("421 4.7.0 mx.example.test Error: too many errors", r.reply()[1])
        self.assertTrue(r.closed())

    def test_auth_rate_limit_and_fail2ban(self):
        if not shutil.which("fail2ban-regex"):
            self.fail("fail2ban-regex not installed (contrib/deps.sh installs fail2ban)")
        # mynetworks (the loopback) is exempt by default, as in Postfix: not here
        d = self.daemon(extra="smtpd_client_auth_rate_limit = 5\nanvil_rate_time_unit = 3600s\n"
                              "smtpd_client_event_limit_exceptions =\n")
        attempts, refused = 0, None
        for i in range(4):   # a brute forcer reconnects: the limit is per client, not per session
            r = self.raw(self.smtps, tls=True)
            r.reply()
            r.cmd("EHLO c.example.org")
            for j in range(2):
                code, text = r.cmd("AUTH PLAIN " + plain("alice@example.test", "guess%d%d" % (i, j)))
                if code == 450:
                    refused = attempts
                    break
                self.assertEqual(code, 535)
                attempts += 1
            if refused is not None:
                break
            r.cmd("QUIT")
        self.assertEqual(refused, 5, "the 6th AUTH within the time unit is refused")
        self.assertIn("450 4.7.1 Error: too many AUTH commands from 127.0.0.1", text)
        d.wait_log("warning: AUTH command rate limit exceeded: 6 from unknown[127.0.0.1] for service submission")
        # another client is not affected
        self.assertEqual(len(self.auth_failures(d)), 5)
        # fail2ban's stock postfix filter (mode auth) finds every failure and the client's address;
        # frugal logs as "frugal/smtpd", so the filter's _daemon takes frugal's name
        logf = os.path.join(d.dir, "stderr")   # serve -f logs to stderr
        out = subprocess.run(["fail2ban-regex", "-v", logf,
                              "postfix[mode=auth, _daemon=frugal/\\w+]"],
                             capture_output=True, text=True, timeout=120 * SLOW)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        m = re.search(r"Lines: \d+ lines, \d+ ignored, (\d+) matched", out.stdout)
        self.assertIsNotNone(m, out.stdout)
        self.assertEqual(int(m.group(1)), 5, out.stdout[-3000:])
        self.assertIn("127.0.0.1", out.stdout)


class Budget(AuthBase):
    def test_no_memory_for_the_check_is_454(self):
        """A 16 MiB yescrypt check against a 12 MiB memory budget: 454, the log names memory."""
        if "TSAN_OPTIONS" in os.environ:
            self.skipTest("ThreadSanitizer's shadow memory is private memory the ledger counts: no 24 MiB budget fits it")
        if VALGRIND:
            self.skipTest("valgrind's own memory is in the process the ledger measures: no 24 MiB budget fits it")
        d = self.daemon(start=False)   # the hash is made under no limit: Debian's cost, 16 MiB
        with open(os.path.join(d.dir, "frugal.conf"), "a") as f:
            f.write("limits_source = manual\nlimit_memory = %d\n" % (24 << 20))
        d.start()
        r = self.raw(self.smtps, tls=True)
        r.reply()
        r.cmd("EHLO c.example.org")
        code, text = r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))
        self.assertEqual((code, text.strip()), (454, "454 4.7.0 Temporary authentication failure"))
        d.wait_log("memory budget exhausted: no password check for unknown[127.0.0.1]")
        self.assertEqual(r.cmd("NOOP")[0], 250, "the session goes on")

    def test_concurrent_logins_do_not_delay_a_commit(self):
        """30 logins at once (each a 16 MiB, CPU-bound yescrypt check, AUTH_THREADS at a
        time, at a lower priority); once the first is answered (all are queued), a
        message from another client ends: its 250 comes before half the logins'
        235s. Negative control, run by hand: with the checks on the commit workers'
        queue the 250 waited for most of them and this failed."""
        if VALGRIND:
            self.skipTest("valgrind runs one thread at a time: the logins' hashing cannot overlap the commit")
        d = self.daemon(extra="smtpd_client_connection_count_limit = 100\n")
        N = 30
        done = {}
        lock = threading.Lock()
        go = threading.Event()

        def login(i):
            try:
                r = Raw(self.smtps)
                r.f.close()
                r.s = client_ctx().wrap_socket(r.s, server_hostname="mx.example.test")
                r.f = r.s.makefile("rb")
                r.reply()
                r.cmd("EHLO c%d.example.org" % i)
                go.wait(30)
                code, _ = r.cmd("AUTH PLAIN " + plain("alice@example.test", PASSWORD))
                with lock:
                    done[i] = (code, time.monotonic())
                r.close()
            except OSError as e:
                with lock:
                    done[i] = (repr(e), time.monotonic())

        threads = [threading.Thread(target=login, args=(i,)) for i in range(N)]
        for t in threads:
            t.start()
        # the message's client, ready before the storm
        c = Raw(d.port)
        self.addCleanup(c.close)
        c.reply()
        c.cmd("EHLO sender.example.org")
        c.cmd("MAIL FROM:<x@example.org>")
        c.cmd("RCPT TO:<alice@example.test>")
        c.cmd("DATA")
        go.set()
        # once the first login is answered, every AUTH was read and its check queued
        wait_for(lambda: len(done) > 0, 60 * SLOW, "the first login")
        t0 = time.monotonic()
        code, _ = c.cmd("Subject: during the storm\r\n\r\nx\r\n.")
        t_commit = time.monotonic()
        self.assertEqual(code, 250)
        for t in threads:
            t.join(120 * SLOW)
        codes = [v[0] for v in done.values()]
        self.assertEqual(codes.count(235), N, codes)
        ends = sorted(v[1] for v in done.values())
        print("\n  %d concurrent logins: 235s from %.2f s to %.2f s (median %.2f s); the commit's 250 after %.3f s"
              % (N, ends[0] - t0, ends[-1] - t0, ends[N // 2] - t0, t_commit - t0))
        # behind a shared queue the commit would wait for most of the checks ahead of it
        self.assertLess(t_commit, ends[N // 2], "the commit was answered before half the logins")


class DovecotAuth(AuthBase):
    """smtpd_sasl_type = dovecot against a real Dovecot from Debian's packages,
    started here on a private socket (its own base_dir, a passwd-file)."""

    def start_dovecot(self):
        if os.geteuid() != 0:
            self.skipTest("Dovecot's master must start as root to run its auth service as its own users")
        if not shutil.which("dovecot"):
            self.fail("dovecot not installed (contrib/deps.sh installs dovecot-core)")
        self.dv = tempfile.mkdtemp(prefix="frugal-dovecot-")
        os.chmod(self.dv, 0o755)
        self.dv_sock = os.path.join(self.dv, "auth-client")
        with open(os.path.join(self.dv, "passwd"), "w") as f:
            f.write("alice@example.test:{PLAIN}%s\n" % PASSWORD)
        with open(os.path.join(self.dv, "dovecot.conf"), "w") as f:
            f.write("""base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/log
protocols =
ssl = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={d}/home
}}
service auth {{
  unix_listener auth-client {{
    path = {sock}
    mode = 0666
  }}
}}
""".format(d=self.dv, sock=self.dv_sock))
        self.addCleanup(shutil.rmtree, self.dv, True)
        self.addCleanup(self.stop_dovecot)   # cleanups run last-in first: this one before the rmtree
        subprocess.run(["dovecot", "-c", os.path.join(self.dv, "dovecot.conf")], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.dv_sock), 15, "Dovecot's auth socket")

    def stop_dovecot(self):
        """SIGTERM to Dovecot's master, which takes its auth processes down: wait until they are gone."""
        try:
            with open(os.path.join(self.dv, "run", "master.pid")) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return
        kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and self._ppid(int(p)) == pid]
        for p in [pid] + kids:
            try:
                os.kill(p, 15)
            except ProcessLookupError:
                pass

        def gone():
            for p in [pid] + kids:
                try:
                    os.kill(p, 0)
                    return False
                except ProcessLookupError:
                    pass
            return True
        wait_for(gone, 15, "Dovecot to stop")

    @staticmethod
    def _ppid(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return -1

    def login(self, pw):
        """One AUTH PLAIN (smtplib's login() would try LOGIN too after a failure)."""
        with smtplib.SMTP_SSL("127.0.0.1", self.smtps, timeout=10 * SLOW, context=client_ctx()) as s:
            s.ehlo("c.example.org")
            s.user, s.password = "alice@example.test", pw
            try:
                return s.auth("PLAIN", s.auth_plain)[0]
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    def test_dovecot_sasl(self):
        self.start_dovecot()
        d = self.daemon(users=(), extra="smtpd_sasl_type = dovecot\nsmtpd_sasl_path = %s\n"
                                        "smtpd_client_connection_count_limit = 100\n" % self.dv_sock)
        other0 = d.next_status()["use_other"]
        self.assertEqual(self.login(PASSWORD), 235)
        self.assertEqual(self.login("wrong"), 535)
        fails = self.auth_failures(d)
        self.assertEqual(len(fails), 1, fails)
        self.assertIn("SASL PLAIN authentication failed: authentication failure", fails[0])
        # LOGIN's two steps reach Dovecot as one PLAIN request
        with smtplib.SMTP("127.0.0.1", self.sub, timeout=10 * SLOW) as s:
            s.starttls(context=client_ctx())
            s.ehlo("c.example.org")
            s.user, s.password = "alice@example.test", PASSWORD
            self.assertEqual(s.auth("LOGIN", s.auth_login, initial_response_ok=False)[0], 235)
            s.sendmail("alice@example.test", ["bob@example.test"], "Subject: dovecot\r\n\r\nx\r\n")
        d.wait_messages(d.maildir("bob"), 1)
        d.wait_log("sasl_method=LOGIN, sasl_username=alice@example.test")
        # 20 logins at once share the one connection: one non-TCP socket in all, charged
        results = []
        threads = [threading.Thread(target=lambda: results.append(self.login(PASSWORD))) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60 * SLOW)
        self.assertEqual(results, [235] * 20)
        self.assertEqual(d.next_status()["use_other"], other0 + 1,
                         "Dovecot's connection is one non-TCP socket, in the ledger")
        # Dovecot goes away: 454 (not 535, no error counted), then back: the next check reconnects
        self.stop_dovecot()
        self.assertEqual(self.login(PASSWORD), 454)
        d.wait_log("SASL PLAIN authentication failed: Connection lost to authentication server")
        subprocess.run(["dovecot", "-c", os.path.join(self.dv, "dovecot.conf")], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.dv_sock), 15, "Dovecot's auth socket")
        wait_for(lambda: self.login(PASSWORD) == 235, 15, "a login once Dovecot is back")
        fails = self.auth_failures(d)
        wrong = [l for l in fails if l.endswith("authentication failed: authentication failure")]
        self.assertEqual(len(wrong), 1, "only the wrong password counts for fail2ban")
        self.assertTrue(all(l.endswith("Connection lost to authentication server") for l in fails if l not in wrong),
                        fails)

    def test_answer_after_the_session_timed_out(self):
        """Dovecot's auth process frozen: the session times out (421, then the end), and
        Dovecot's late answer, once it is thawed, changes nothing (before: it sent a 235
        after the 421 and took the closing session up again)."""
        self.start_dovecot()
        d = self.daemon(users=(), extra="smtpd_sasl_type = dovecot\nsmtpd_sasl_path = %s\nsmtpd_timeout = 2s\n"
                        % self.dv_sock)
        self.assertEqual(self.login(PASSWORD), 235)   # connected
        with open(os.path.join(self.dv, "run", "master.pid")) as f:
            master = int(f.read().split()[0])
        auth = [int(p) for p in os.listdir("/proc") if p.isdigit() and self._ppid(int(p)) == master
                and open("/proc/%s/comm" % p).read().strip() == "auth"]
        self.assertEqual(len(auth), 1, "one Dovecot auth process")
        os.kill(auth[0], signal.SIGSTOP)
        try:
            r = self.raw(self.smtps, tls=True)
            r.reply()
            r.cmd("EHLO c.example.org")
            # a whole transaction pipelined behind the AUTH (in the session's buffer while it waits)
            r.send("AUTH PLAIN %s\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
                   "DATA\r\nSubject: after the 421\r\n\r\nx\r\n.\r\nQUIT\r\n" % plain("alice@example.test", PASSWORD))
            code, text = r.reply()
            self.assertEqual(code, 421, text)
        finally:
            os.kill(auth[0], signal.SIGCONT)
        self.assertTrue(r.closed(), "nothing after the 421")
        wait_for(lambda: self.login(PASSWORD) == 235, 15, "the next login")
        # a message sent now is the only one bob gets: nothing ran after the 421
        with smtplib.SMTP_SSL("127.0.0.1", self.smtps, timeout=10 * SLOW, context=client_ctx()) as s:
            s.ehlo("c.example.org")
            s.user, s.password = "alice@example.test", PASSWORD
            s.auth("PLAIN", s.auth_plain)
            s.sendmail("alice@example.test", ["bob@example.test"], "Subject: the barrier\r\n\r\nx\r\n")
        msgs = d.wait_messages(d.maildir("bob"), 1)
        self.assertIn(b"Subject: the barrier", msgs[0])

    def test_dovecot_needs_its_socket_path(self):
        d = self.daemon(users=(), start=False, extra="smtpd_sasl_type = dovecot\n")
        r = run_frugal("check", "-c", d.dir)
        self.assertEqual(r.returncode, 1)
        self.assertIn("smtpd_sasl_type = dovecot needs smtpd_sasl_path", r.stdout + r.stderr)


class Passwd(AuthBase):
    def test_passwd_changes_a_password_of_a_running_daemon(self):
        d = self.daemon()
        r = run_frugal("passwd", "-c", d.dir, "not-an-address", input="x\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a mailbox address", r.stderr)
        r = run_frugal("passwd", "-c", d.dir, "alice@example.test", input="")
        self.assertEqual(r.returncode, 1)
        r = run_frugal("passwd", "-c", d.dir, "alice@example.test", input="new password\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("yescrypt cost", r.stdout)
        self.assertIn("reloads its tables", r.stdout)
        with open(self.users) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1, "the line was replaced, not added")
        self.assertTrue(lines[0].startswith("alice@example.test $y$"))
        self.assertEqual(os.stat(self.users).st_mode & 0o7, 0, "not world-readable")

        def login(pw):
            with smtplib.SMTP_SSL("127.0.0.1", self.smtps, timeout=10 * SLOW, context=client_ctx()) as s:
                try:
                    s.login("alice@example.test", pw)
                    return True
                except smtplib.SMTPAuthenticationError:
                    return False
        wait_for(lambda: login("new password"), 15, "the reloaded table to take the new password")
        self.assertFalse(login(PASSWORD))


if __name__ == "__main__":
    unittest.main()
