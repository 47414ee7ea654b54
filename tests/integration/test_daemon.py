"""tests/integration/test_daemon.py: the daemon's life cycle and commands:
embedded default, reload, stop, status, check, config, map, queue."""
import os
import signal
import smtplib
import socket
import subprocess
import tempfile
import shutil
import unittest

from harness import Daemon, Raw, run_frugal, wait_for, free_port, FRUGAL, SLOW


class Embedded(unittest.TestCase):
    def test_embedded_default(self):
        if os.path.exists("/etc/frugal/frugal.conf"):
            self.skipTest("/etc/frugal/frugal.conf exists: the embedded default does not apply")
        try:
            socket.create_connection(("127.0.0.1", 2525), timeout=1).close()
            self.skipTest("something already listens on 127.0.0.1:2525")
        except OSError:
            pass
        cwd = tempfile.mkdtemp(prefix="frugal-emb-")
        env = dict(os.environ)
        env.pop("FRUGAL_CONFIG_DIR", None)
        errf = open(os.path.join(cwd, "stderr"), "w+")
        p = subprocess.Popen([FRUGAL, "serve", "-f"], cwd=cwd, env=env, stdout=errf, stderr=subprocess.STDOUT)
        try:
            def up():
                if p.poll() is not None:
                    errf.seek(0)
                    raise AssertionError("frugal exited: " + errf.read())
                try:
                    socket.create_connection(("127.0.0.1", 2525), timeout=1).close()
                    return True
                except OSError:
                    return False
            wait_for(up, 15, "embedded frugal on 2525")
            # a descriptor of its own: seeking errf would move the daemon's write offset too
            # (one open file description), and its next line would overwrite the first
            with open(os.path.join(cwd, "stderr")) as f:
                first = f.readline()
            self.assertIn("embedded development default", first)
            with smtplib.SMTP("127.0.0.1", 2525, timeout=10 * SLOW) as s:
                s.sendmail("me@example.org", ["someone@localhost"], "Subject: dev\r\n\r\nhi\r\n")
                s.ehlo()
                s.mail("me@example.org")
                code, _ = s.rcpt("someone@example.com")
                self.assertEqual(code, 454)  # relays for nobody (smtpd_relay_restrictions defers)
            new = os.path.join(cwd, "frugal-data", "mail", "someone", "Maildir", "new")
            wait_for(lambda: os.path.isdir(new) and os.listdir(new), 15, "embedded delivery")
            self.assertTrue(os.path.isdir(os.path.join(cwd, "frugal-data", "queue")))
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(timeout=30 * SLOW), 0)
            errf.close()
            shutil.rmtree(cwd, ignore_errors=True)


class Lifecycle(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(extra="message_size_limit = 100000\n").start()

    def tearDown(self):
        self.d.cleanup()

    def test_status_reload_stop(self):
        r = run_frugal("status", "-c", self.d.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("PID: %d" % self.d.proc.pid, r.stdout)
        old = Raw(self.d.port)
        old.reply()
        old.cmd("EHLO before.example.org")
        with open(os.path.join(self.d.dir, "frugal.conf"), "a") as f:
            f.write("message_size_limit = 1000\n")
        r = run_frugal("reload", "-c", self.d.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.d.wait_log("reload -- version")
        new = Raw(self.d.port)
        new.reply()
        code, text = new.cmd("EHLO after.example.org")
        self.assertIn("SIZE 1000\r\n", text)
        # the session that started before keeps its configuration
        self.assertEqual(old.cmd("MAIL FROM:<a@b.example> SIZE=5000")[0], 250)
        self.assertEqual(new.cmd("MAIL FROM:<a@b.example> SIZE=5000")[0], 552)
        old.close()
        new.close()
        r = run_frugal("stop", "-c", self.d.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.d.proc.wait(timeout=30 * SLOW), 0)
        r = run_frugal("status", "-c", self.d.dir)
        self.assertEqual(r.returncode, 1)

    def test_bad_reload_keeps_running(self):
        with open(os.path.join(self.d.dir, "frugal.conf"), "a") as f:
            f.write("smtpd_timeout = banana\n")
        self.d.proc.send_signal(signal.SIGHUP)
        self.d.wait_log("reload failed")
        r = Raw(self.d.port)
        self.assertEqual(r.reply()[0], 220)
        r.close()

    def test_second_instance_refused(self):
        r = subprocess.run([FRUGAL, "serve", "-f", "-c", self.d.dir], capture_output=True, text=True,
                           timeout=30 * SLOW)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("already running", r.stdout + r.stderr)


class Commands(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="frugal-cmd-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, text):
        with open(os.path.join(self.dir, "frugal.conf"), "w") as f:
            f.write(text)

    def test_check_names_file_and_line(self):
        self.write("myhostname = mx.example.test\nsmtpd_timeout = 10 fortnights\nqueue_directory = %s/q\n" % self.dir)
        r = run_frugal("check", "-c", self.dir)
        self.assertEqual(r.returncode, 1)
        self.assertIn("frugal.conf:2:", r.stderr)

    def test_check_ok_and_unknown_warning(self):
        self.write("myhostname = mx.example.test\nno_such_parameter = 1\nqueue_directory = %s/q\n"
                   "alias_maps =\n" % self.dir)
        r = run_frugal("check", "-c", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("no_such_parameter", r.stderr)

    def check_and_serve(self, conf):
        """frugal check and frugal serve on the same file: (check result, serve result)."""
        self.write(conf)
        chk = run_frugal("check", "-c", self.dir)
        srv = subprocess.run([FRUGAL, "serve", "-f", "-c", self.dir], capture_output=True, text=True,
                             timeout=30 * SLOW)
        return chk, srv

    def test_check_refuses_what_serve_refuses(self):
        """One code path: restriction words, mynetworks and the relay rule fail
        check exactly where they stop serve, with file and line."""
        base = "myhostname = mx.example.test\nqueue_directory = %s/q\nalias_maps =\nsmtpd_listen = 127.0.0.1:%d\n" % (
            self.dir, free_port())
        cases = [
            ("smtpd_recipient_restrictions = permit_mynetworks, reject_bogus_word\n",
             "frugal.conf:5: smtpd_recipient_restrictions: unsupported restriction \"reject_bogus_word\""),
            ("mynetworks = 10.0.0.0/8 not-a-network\n", "frugal.conf:5: mynetworks: bad network \"not-a-network\""),
            ("smtpd_helo_restrictions = check_helo_access cdb:%s/missing\n" % self.dir,
             "frugal.conf:5: smtpd_helo_restrictions: check_helo_access"),
            # an open relay, by Postfix's rule: nothing stops relaying before a permit
            ("smtpd_relay_restrictions = permit_mynetworks, permit, reject_unauth_destination\n"
             "smtpd_recipient_restrictions = permit_mynetworks, reject_unlisted_recipient\n",
             "specify at least one working instance of: reject_unauth_destination"),
            ("smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit\n",
             "frugal would be an open relay"),
        ]
        for extra, want in cases:
            chk, srv = self.check_and_serve(base + extra)
            self.assertEqual(chk.returncode, 1, extra)
            self.assertIn(want, chk.stderr, extra)
            self.assertEqual(srv.returncode, 1, extra)
            self.assertIn(want, srv.stderr, extra)
        # submission's stock list passes (Postfix master.cf: permit_sasl_authenticated, reject)
        chk = self.check_and_serve(base + "smtpd_relay_restrictions =\n"
                                   "smtpd_recipient_restrictions = permit_sasl_authenticated, reject\n")[0]
        self.assertEqual(chk.returncode, 0, chk.stderr)

    def test_parameters_not_acted_on_are_named(self):
        self.write("myhostname = mx.example.test\nqueue_directory = %s/q\nalias_maps =\n"
                   "smtp_quit_timeout = 10s\npostscreen_dnsbl_sites = zen.example.test\n"
                   "recipient_delimiter = +\ndefault_destination_recipient_limit = 10\n"
                   "smtpd_client_message_rate_limit = 10\n" % self.dir)
        r = run_frugal("check", "-c", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        for line, name in ((4, "smtp_quit_timeout"),):
            self.assertIn("warning: %s/frugal.conf:%d: %s is set, but this version of frugal does not act on it"
                          % (self.dir, line, name), r.stderr)
        # and the ones it acts on now are not named
        for name in ("recipient_delimiter", "default_destination_recipient_limit", "smtpd_client_message_rate_limit",
                     "postscreen_dnsbl_sites"):
            self.assertNotIn("%s is set, but" % name, r.stderr)

    def test_config_n_and_d(self):
        self.write("myhostname = mx.example.test\nsmtpd_timeout = 60s\n")
        r = run_frugal("config", "-c", self.dir, "-n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("smtpd_timeout = 60s", r.stdout)
        self.assertNotIn("smtpd_recipient_limit", r.stdout)
        r = run_frugal("config", "-c", self.dir, "-d", "smtpd_timeout")
        self.assertIn("smtpd_timeout = ${stress?{10}:{300}}s", r.stdout)

    def test_map_compile_and_query(self):
        t = os.path.join(self.dir, "access")
        with open(t, "w") as f:
            f.write("# comment\nspammer@example.com REJECT\nexample.net OK\n")
        r = run_frugal("map", t)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(t + ".cdb"))
        r = run_frugal("map", "-q", "spammer@example.com", t)
        self.assertEqual(r.stdout.strip(), "REJECT")
        r = run_frugal("map", "-q", "nobody", t)
        self.assertEqual(r.returncode, 1)

    def test_queue_list_empty(self):
        self.write("queue_directory = %s/q\n" % self.dir)
        os.makedirs(os.path.join(self.dir, "q"))
        r = run_frugal("queue", "-c", self.dir, "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Mail queue is empty", r.stdout)


if __name__ == "__main__":
    unittest.main()
