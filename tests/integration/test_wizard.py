"""tests/integration/test_wizard.py: `frugal wizard` driven like an admin drives
it, on a pseudo-terminal (Python pty): a complete run whose configuration
passes `frugal check`, receives and delivers mail, takes AUTH with the
mailbox password and refuses to relay; wrong answers asked again with the
reason; Ctrl-C halfway (nothing written); a re-run that offers the current
values and keeps the old configuration as a backup; and --answers, whose
files are byte-identical to the terminal run's apart from the salted hashes
and the generated key and certificate.

As root the wizard creates the accounts it is told to run as (uniquely named
here, removed afterwards); unprivileged the accounts are the current user and
the account-creation test skips with the reason.
"""
import crypt
import getpass
import glob
import os
import pty
import random
import re
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import unittest

from dnsserver import DNSServer
from harness import FRUGAL, SLOW, client_ctx, free_port, run_frugal, shared_dns, wait_for

PW1 = "correct horse 1"
PW2 = "battery staple 2"
ROOT = os.geteuid() == 0


class Pty:
    """The real binary on a pseudo-terminal: expect a prompt, type an answer."""

    def __init__(self, args):
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.execv(FRUGAL, [FRUGAL] + args)
            finally:
                os._exit(127)
        self.pid, self.fd, self.buf, self.pos, self.eof, self.rc = pid, fd, b"", 0, False, None

    def _read(self, deadline):
        r, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if r:
            try:
                data = os.read(self.fd, 65536)
            except OSError:   # EIO: the child closed the terminal
                data = b""
            if not data:
                self.eof = True
            self.buf += data

    def expect(self, text, timeout=20):
        deadline = time.monotonic() + timeout * SLOW
        while True:
            i = self.buf.find(text.encode(), self.pos)
            if i >= 0:
                self.pos = i + len(text)
                return
            if self.eof or time.monotonic() > deadline:
                raise AssertionError("wizard did not say %r; it said:\n%s" % (text, self.text()))
            self._read(deadline)

    def send(self, line):
        os.write(self.fd, line.encode() + b"\r")   # Enter, as a terminal sends it

    def wait(self, timeout=60):
        deadline = time.monotonic() + timeout * SLOW
        while self.rc is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.rc = os.waitstatus_to_exitcode(st)
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise AssertionError("wizard did not finish:\n" + self.text())
            if not self.eof:
                self._read(min(deadline, time.monotonic() + 0.1))
            else:
                time.sleep(0.01)
        while not self.eof:   # the rest of its output
            self._read(time.monotonic() + 1)
        os.close(self.fd)
        return self.rc

    def text(self):
        return self.buf.decode(errors="replace")


def slurp(path):
    with open(path) as f:
        return f.read()


def files(d):
    out = {}
    for n in sorted(os.listdir(d)):
        if os.path.isfile(os.path.join(d, n)):
            with open(os.path.join(d, n), "rb") as f:
                out[n] = f.read()
    return out


class WizardTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="frugal-wizard-")
        os.chmod(self.dir, 0o755)   # the daemon runs as the account the wizard made
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.etc = os.path.join(self.dir, "etc")
        self.ports = [free_port(), free_port(), free_port()]
        self.proc = None
        if ROOT:
            tag = "%06d" % random.randrange(10 ** 6)
            self.owner, self.vowner = "fwiz" + tag, "fwizv" + tag
            self.addCleanup(self.drop_accounts)
        else:
            self.owner = self.vowner = getpass.getuser()

    def drop_accounts(self):
        for name in (self.owner, self.vowner):
            if subprocess.run(["getent", "passwd", name], capture_output=True).returncode == 0:
                subprocess.run(["userdel", name], capture_output=True, timeout=30)

    def tearDown(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # the answers of one complete run, as (prompt, typed answer) and as --answers lines
    def dialogue(self, host="mx.example.test"):
        d, (p25, p587, p465) = self.dir, self.ports
        return [
            ("Host name of this mail server", host),
            ("Mail domains", "example.test, other.test"),
            ("Mailbox address", "alice@example.test"), ("Password", PW1), ("Again", PW1),
            ("Mailbox address", "bob@other.test"), ("Password", PW2), ("Again", PW2),
            ("Mailbox address", ""),
            ("postmaster, abuse and root [alice@example.test]", ""),
            ("Delivery", ""),
            ("Directory for the Maildirs", d + "/mail"),
            ("Account that owns the Maildirs", self.vowner),
            ("Queue directory", d + "/queue"),
            ("Account frugal runs as", self.owner),
            ("Relay host", ""),
            ("TLS certificate file", ""),
            ("Address and port for SMTP", "127.0.0.1:%d" % p25),
            ("Submission for mail clients", "yes"),
            ("submission with STARTTLS", "127.0.0.1:%d" % p587),
            ("submission with implicit TLS", "127.0.0.1:%d" % p465),
            ("Hardening: seconds port 25 waits before its greeting", ""),
            ("Hardening: DNS blocklists", ""),
            ("Hardening: greylisting", ""),
            ("DKIM: sign outgoing mail", ""),
            ("Write this configuration", "yes"),
        ]

    def answers_file(self, host="mx.example.test"):
        d, (p25, p587, p465) = self.dir, self.ports
        path = os.path.join(self.dir, "answers")
        with open(path, "w") as f:
            f.write(f"""# the same answers as dialogue()
hostname = {host}
domains = example.test, other.test
mailbox = alice@example.test {PW1}
mailbox = bob@other.test {PW2}
delivery = virtual
mailbox_base = {d}/mail
vmail_owner = {self.vowner}
queue_directory = {d}/queue
mail_owner = {self.owner}
tls_cert = self-signed
smtpd_listen = 127.0.0.1:{p25}
submission = yes
submission_listen = 127.0.0.1:{p587}
smtps_listen = 127.0.0.1:{p465}
confirm = yes
""")
        return path

    def run_pty(self, dialogue, expect_rc=0):
        w = Pty(["wizard", "-c", self.etc])
        for prompt, answer in dialogue:
            w.expect(prompt)
            w.expect(": ")
            w.send(answer)
        rc = w.wait()
        self.assertEqual(rc, expect_rc, w.text())
        return w.text()

    def start(self, dns=None):
        with open(os.path.join(self.etc, "frugal.conf"), "a") as f:
            f.write("dns_servers = %s\n" % (dns or shared_dns()).addr)   # no test waits on this machine's resolver
        self.log = open(os.path.join(self.dir, "daemon.log"), "w+")
        self.addCleanup(self.log.close)
        self.proc = subprocess.Popen([FRUGAL, "serve", "-f", "-c", self.etc], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("frugal exited: " + slurp(self.log.name))
            return "daemon started" in slurp(self.log.name)
        wait_for(up, 30, "the daemon on the wizard's configuration")

    # ---- the tests ----

    def test_complete_run_receives_delivers_auth_and_refuses_relay(self):
        out = self.run_pty(self.dialogue())
        self.assertIn("frugal check: no problems.", out)
        self.assertIn("mx.example.test.", out)                 # the MX record to publish
        self.assertIn("v=spf1 mx -all", out)
        self.assertIn("_dmarc.example.test.", out)
        self.assertIn("swaks --server mx.example.test --port %d" % self.ports[0], out)
        # the submission test line works as printed: swaks' default sender (root@host) is not the login's
        self.assertIn("--auth-user alice@example.test --from alice@example.test", out)
        self.assertIn("Start frugal: frugal serve -c %s" % self.etc, out)   # not the unit's /etc/frugal
        # as root the check's resolver (no helpers) used to warn that frugal was not root
        self.assertNotIn("is not running as root", out)
        self.assertIn("SMTP sessions at once", out)             # the limits, in plain words
        r = run_frugal("check", "-c", self.etc)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        conf = slurp(os.path.join(self.etc, "frugal.conf"))
        self.assertIn("mynetworks = 127.0.0.0/8 [::1]/128\n", conf)
        st = os.stat(os.path.join(self.etc, "users"))
        self.assertEqual(st.st_mode & 0o007, 0, "the password hashes are not world-readable")
        if ROOT:
            import pwd
            self.assertEqual(pwd.getpwuid(os.stat(os.path.join(self.dir, "queue")).st_uid).pw_name, self.owner)
            self.assertEqual(pwd.getpwuid(os.stat(os.path.join(self.dir, "mail")).st_uid).pw_name, self.vowner)
            self.assertIn("created the system account " + self.owner, out)
        self.start()
        p25, p587, p465 = self.ports
        with smtplib.SMTP("127.0.0.1", p25, timeout=30 * SLOW) as s:
            s.sendmail("someone@remote.test", ["alice@example.test", "postmaster@other.test"],
                       b"Subject: hello\r\n\r\nfrom the wizard test\r\n")
        new = os.path.join(self.dir, "mail", "example.test", "alice", "new")
        wait_for(lambda: os.path.isdir(new) and len(os.listdir(new)) >= 1, 30, "delivery to alice's Maildir")
        # AUTH with the mailbox password the wizard hashed, on both submission ports
        with smtplib.SMTP_SSL("127.0.0.1", p465, context=client_ctx(), timeout=30 * SLOW) as s:
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                s.login("bob@other.test", PW1)
        with smtplib.SMTP_SSL("127.0.0.1", p465, context=client_ctx(), timeout=30 * SLOW) as s:
            s.login("bob@other.test", PW2)
            s.mail("bob@other.test")
            self.assertEqual(s.rcpt("friend@remote.test")[0], 250)   # relaying for a logged-in user
        with smtplib.SMTP("127.0.0.1", p587, timeout=30 * SLOW) as s:
            s.starttls(context=client_ctx())
            s.login("alice@example.test", PW1)
        self.relay_refused(p25)

    def relay_refused(self, port):
        """Not an open relay: a client outside loopback may not relay. The
        machine's own non-loopback address reaches the daemon over lo, yet is
        not in mynetworks; from 127.0.0.1 the same relay is allowed (control)."""
        try:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.connect(("192.0.2.1", 9))   # no packet is sent: it picks the source address
            addr = u.getsockname()[0]
            u.close()
        except OSError as e:
            self.skipTest("no non-loopback IPv4 address for the relay check: %s" % e)
        if addr.startswith("127."):
            self.skipTest("no non-loopback IPv4 address for the relay check")
        with smtplib.SMTP("127.0.0.1", port, timeout=30 * SLOW, source_address=(addr, 0)) as s:
            s.mail("spammer@remote.test")
            code, msg = s.rcpt("victim@elsewhere.test")
            self.assertIn(code, (454, 554), msg)
            self.assertIn(b"Relay access denied", msg)
            self.assertEqual(s.rcpt("alice@example.test")[0], 250)   # our domain: yes
        with smtplib.SMTP("127.0.0.1", port, timeout=30 * SLOW) as s:
            s.mail("root@mx.example.test")
            self.assertEqual(s.rcpt("victim@elsewhere.test")[0], 250)   # control: loopback relays

    def test_wrong_answers_asked_again_with_the_reason(self):
        w = Pty(["wizard", "-c", self.etc])
        bad = [
            ("Host name of this mail server", "mail_host", "only letters, digits, '-' and '.' are allowed"),
            ("Host name of this mail server", "mailhost", "not a fully qualified name"),
            ("Host name of this mail server", "mx.example.test", None),
            ("Mail domains", "example..test", "an empty label"),
            ("Mail domains", "example.test", None),
            ("Mailbox address", "alice", "not an address"),
            ("Mailbox address", "alice@elsewhere.test", "not one of the mail domains"),
            ("Mailbox address", "", "At least one mailbox is needed"),
            ("Mailbox address", "alice@example.test", None),
            ("Password", "", "a mailbox needs a password"),
            ("Password", PW1, None), ("Again", "other", "The passwords differ"),
            ("Password", PW1, None), ("Again", PW1, None),
            ("Mailbox address", "", None),
            ("postmaster, abuse and root", "", None),
            ("Delivery", "maildir", "answer virtual, local or lmtp"),
            ("Delivery", "", None),
            ("Directory for the Maildirs", "relative/mail", "not an absolute path"),
            ("Directory for the Maildirs", os.path.join(self.dir, "afile"), "is not a directory"),
            ("Directory for the Maildirs", self.dir + "/mail", None),
            ("Account that owns the Maildirs", "bad name", "only letters, digits"),
            ("Account that owns the Maildirs", self.vowner, None),
            ("Queue directory", self.dir + "/queue", None),
            ("Account frugal runs as", self.owner, None),
            ("Relay host", "[smtp.provider", "without its ']'"),
            ("Relay host", "", None),
            ("TLS certificate file", "/nonexistent/cert.pem", "No such file or directory"),
            ("TLS certificate file", "none", None),
            ("Address and port for SMTP", "127.0.0.1:99999", "the port must be a number"),
            ("Address and port for SMTP", "localhost:25", "not an IPv4 address"),
            ("Address and port for SMTP", "127.0.0.1:%d" % self.ports[0], None),
            ("Hardening", "soon", "a number of seconds from 0 (off) to 60"),
            ("Hardening", "2", None),
            ("Hardening: DNS blocklists", "bl..test", "an empty label"),
            ("Hardening: DNS blocklists", "bl.test=10.0.0.2", "after = comes the answer that means listed"),
            ("Hardening: DNS blocklists", "bl.test other.test=127.0.0.4", None),
            ("Hardening: greylisting", "later", "answer yes or no"),
            ("Hardening: greylisting", "yes", None),
            ("DKIM: sign outgoing mail", "perhaps", "answer yes or no"),
            ("DKIM: sign outgoing mail", "no", None),
            ("pregreet     port 25 waits 2s before greeting", None, None),
            ("DNSBL        clients listed in bl.test, other.test=127.0.0.4 are refused", None, None),
            ("greylisting  new senders on port 25 are deferred", None, None),
            ("Write this configuration", "maybe", "answer yes or no"),
            ("Write this configuration", "no", None),
        ]
        open(os.path.join(self.dir, "afile"), "w").close()
        for prompt, answer, reason in bad:
            w.expect(prompt)
            if answer is None:   # a line of the summary
                continue
            w.expect(": ")
            w.send(answer)
            if reason:
                w.expect(reason)
                w.expect("Try again.")
        self.assertEqual(w.wait(), 1)
        self.assertIn("Nothing written.", w.text())
        self.assertFalse(os.path.exists(self.etc), "answering no writes nothing")
        self.assertNotIn(PW1, w.text(), "a password is never echoed")

    def test_ctrl_c_halfway_writes_nothing_and_keeps_existing(self):
        self.run_pty(self.dialogue())
        before = files(self.etc)
        w = Pty(["wizard", "-c", self.etc])
        w.expect("Found %s/frugal.conf" % self.etc)
        w.expect("Host name of this mail server (its MX name) [mx.example.test]: ")
        w.send("other.example.test")
        w.expect("Mail domains (comma-separated) [example.test, other.test]: ")
        w.send("")
        w.expect("Mailbox address")
        w.send("carol@example.test")
        w.expect("Password: ")   # echo off: Ctrl-C must put it back too
        os.write(w.fd, b"\x03")
        w.expect("interrupted: nothing written")
        self.assertEqual(w.wait(), 128 + signal.SIGINT)
        self.assertEqual(files(self.etc), before, "Ctrl-C changed the configuration")

    def test_rerun_offers_current_values_and_keeps_a_backup(self):
        self.run_pty(self.dialogue())
        old_conf = slurp(os.path.join(self.etc, "frugal.conf"))
        old_users = slurp(os.path.join(self.etc, "users"))
        d = [(p, "" if not p.startswith("Host name") else "mx2.example.test") for p, _ in self.dialogue()
             if p not in ("Password", "Again") and not p.startswith("Mailbox address")]
        d.insert(2, ("Mailbox address", ""))   # the two mailboxes are kept
        i = [p for p, _ in d].index("TLS certificate file")
        d.insert(i + 1, ("Its private key file (PEM) [%s/frugal.key]" % self.etc, ""))   # the current certificate
        d[-1] = ("Write this configuration", "yes")
        out = self.run_pty(d)
        self.assertIn("Found %s/frugal.conf" % self.etc, out)
        self.assertIn("2 mailbox(es) kept", out)
        self.assertIn("Queue directory [%s/queue]" % self.dir, out)
        self.assertIn("Address and port for SMTP (port 25) [127.0.0.1:%d]" % self.ports[0], out)
        new_conf = slurp(os.path.join(self.etc, "frugal.conf"))
        self.assertIn("myhostname = mx2.example.test\n", new_conf)
        self.assertEqual(new_conf, old_conf.replace("mx.example.test", "mx2.example.test"))
        baks = glob.glob(os.path.join(self.etc, "frugal.conf.bak-*"))
        self.assertEqual(len(baks), 1, out)
        self.assertEqual(slurp(baks[0]), old_conf)
        self.assertEqual(slurp(os.path.join(self.etc, "users")), old_users, "kept mailboxes keep their hashes")
        self.assertEqual(glob.glob(os.path.join(self.etc, "*.XXXXXX")) + glob.glob(os.path.join(self.etc, "*.??????")),
                         [], "no temporary file left")
        r = run_frugal("check", "-c", self.etc)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_answers_file_is_byte_identical_to_the_terminal_run(self):
        self.run_pty(self.dialogue())
        pty_dir = os.path.join(self.dir, "etc.pty")
        os.rename(self.etc, pty_dir)
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", self.answers_file()],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn(PW1, r.stdout + r.stderr)
        a, b = files(pty_dir), files(self.etc)
        self.assertEqual(sorted(a), sorted(b))
        for name in a:
            if name in ("users", "users.cdb", "frugal.key", "frugal.crt"):
                continue
            self.assertEqual(a[name], b[name], name + " differs")
        self.assertNotEqual(a["frugal.key"], b["frugal.key"], "each run makes its own key")
        # DKIM: a key per domain, each run its own; the table (compared above) and the records to publish
        self.assertIn(b"example.test ", a["dkim_keys"])
        for dom in ("example.test", "other.test"):
            self.assertRegex(r.stdout, r"\d{6}\._domainkey\.%s\.  TXT \"v=DKIM1; k=rsa; p=" % re.escape(dom))
            ka, kb = (glob.glob(os.path.join(x, "dkim", dom + ".*.key")) for x in (pty_dir, self.etc))
            self.assertEqual((len(ka), len(kb)), (1, 1))
            self.assertNotEqual(slurp(ka[0]), slurp(kb[0]), "each run makes its own DKIM key")
        ua = dict(l.split(" ", 1) for l in a["users"].decode().splitlines())
        ub = dict(l.split(" ", 1) for l in b["users"].decode().splitlines())
        self.assertEqual(sorted(ua), ["alice@example.test", "bob@other.test"])
        self.assertEqual(sorted(ua), sorted(ub))
        for user, pw in (("alice@example.test", PW1), ("bob@other.test", PW2)):
            self.assertNotEqual(ua[user], ub[user], "salted")
            for h in (ua[user], ub[user]):
                self.assertEqual(crypt.crypt(pw, h), h, "the hash checks the password")
            self.assertNotEqual(crypt.crypt("wrong", ua[user]), ua[user])   # control

    def test_answers_file_bad_answer_names_the_key_and_writes_nothing(self):
        path = self.answers_file()
        with open(path, "a") as f:
            f.write("mailbox = carol@nowhere.test pw\n")
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", path],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--answers mailbox = carol@nowhere.test: nowhere.test is not one of the mail domains", r.stderr)
        self.assertFalse(os.path.exists(self.etc))

    def test_lmtp_and_relayhost_with_login(self):
        path = os.path.join(self.dir, "answers-lmtp")
        with open(path, "w") as f:
            f.write(f"""hostname = mx.example.test
domains = example.test
mailbox = alice@example.test {PW1}
delivery = lmtp
lmtp = unix:/run/dovecot/lmtp
queue_directory = {self.dir}/queue
mail_owner = {self.owner}
relayhost = [smtp.provider.test]:587
relay_user = me@provider.test
relay_password = relay secret
tls_cert = none
smtpd_listen = 127.0.0.1:{self.ports[0]}
pregreet_wait = 3
""")
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", path],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("relay secret", r.stdout + r.stderr)
        self.assertIn("Submission (587, 465) needs TLS", r.stdout)
        conf = slurp(os.path.join(self.etc, "frugal.conf"))
        for line in ("virtual_transport = lmtp:unix:/run/dovecot/lmtp\n", "relayhost = [smtp.provider.test]:587\n",
                     "smtp_sasl_auth_enable = yes\n", "smtp_sasl_tls_security_options = noanonymous\n",
                     "smtp_tls_security_level = encrypt\n", "submission_listen = \n", "smtps_listen = \n",
                     "smtpd_pregreet_wait = 3s\n"):
            self.assertIn(line, conf)
        self.assertNotIn("smtpd_tls_cert_file", conf)
        self.assertEqual(os.stat(os.path.join(self.etc, "relay_passwd")).st_mode & 0o077 & ~0o040, 0)
        q = run_frugal("map", "-q", "[smtp.provider.test]:587", os.path.join(self.etc, "relay_passwd"))
        self.assertEqual(q.stdout.strip(), "me@provider.test:relay secret", q.stderr)
        chk = run_frugal("check", "-c", self.etc)
        self.assertEqual(chk.returncode, 0, chk.stderr)
        self.assertNotIn("does not act on it", chk.stderr, "everything the wizard writes is acted on")
        # a re-run that answers nothing keeps every value, the relay login too: no byte changes, no backup
        before = files(self.etc)
        again = os.path.join(self.dir, "answers-confirm")
        with open(again, "w") as f:
            f.write("confirm = yes\n")
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", again],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Login at the relay host (empty: none) [me@provider.test]", r.stdout)
        self.assertEqual(files(self.etc), before)

    def test_local_delivery_to_a_system_user(self):
        """delivery = local: mail for the domains goes to system users' ~/Maildir, through the
        root master's local helper, which takes the user's identity; unknown users are refused."""
        if not ROOT:
            self.skipTest("delivery to a system user's home needs the root master's local helper "
                          "(and a system user created for the test)")
        import pwd
        user = "fwl%06d" % random.randrange(10 ** 6)
        home = os.path.join(self.dir, "home", user)
        os.makedirs(os.path.dirname(home))
        r = subprocess.run(["useradd", "-m", "-d", home, "-s", "/bin/sh", user], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(subprocess.run, ["userdel", user], capture_output=True, timeout=30)
        path = os.path.join(self.dir, "answers-local")
        with open(path, "w") as f:
            f.write(f"""hostname = mx.example.test
domains = example.test
mailbox = {user}@example.test {PW1}
delivery = local
queue_directory = {self.dir}/queue
mail_owner = {self.owner}
tls_cert = none
smtpd_listen = 127.0.0.1:{self.ports[0]}
""")
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", path],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        conf = slurp(os.path.join(self.etc, "frugal.conf"))
        self.assertIn("home_mailbox = Maildir/\n", conf)
        self.assertNotIn("virtual_mailbox_domains", conf)
        self.start()
        with smtplib.SMTP("127.0.0.1", self.ports[0], timeout=30 * SLOW) as s:
            s.sendmail("someone@remote.test", [user + "@example.test"],
                       b"Subject: local\r\n\r\nto a system user's home\r\n")
            s.mail("someone@remote.test")
            code, msg = s.rcpt("nosuchuser%06d@example.test" % random.randrange(10 ** 6))
            self.assertEqual(code, 550, msg)
        new = os.path.join(home, "Maildir", "new")
        wait_for(lambda: os.path.isdir(new) and len(os.listdir(new)) == 1, 30, "delivery to ~%s/Maildir/new" % user)
        st = os.stat(os.path.join(new, os.listdir(new)[0]))
        self.assertEqual(st.st_uid, pwd.getpwnam(user).pw_uid, "the message belongs to the user")
        with open(os.path.join(new, os.listdir(new)[0]), "rb") as f:
            self.assertIn(b"Subject: local", f.read())

    def test_dnsbl_answer_refuses_a_listed_client(self):
        """dnsbl = ZONE: reject_rbl_client after the relay check; a listed client outside mynetworks is
        refused with Postfix's reply, an unlisted one and this host are not; a re-run offers the zones."""
        try:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.connect(("192.0.2.1", 9))   # no packet is sent: it picks the source address
            addr = u.getsockname()[0]
            u.close()
        except OSError as e:
            self.skipTest("no non-loopback IPv4 address to be listed: %s" % e)
        if addr.startswith("127."):
            self.skipTest("no non-loopback IPv4 address to be listed")
        rev = ".".join(reversed(addr.split(".")))
        dns = DNSServer({rev + ".bl.test": [("A", "127.0.0.2"), ("TXT", "listed for the wizard test")],
                         rev + ".other.test": [("A", "127.0.0.2")]}).start()
        self.addCleanup(dns.stop)
        path = self.answers_file()
        with open(path, "a") as f:
            f.write("pregreet_wait = 0\ndnsbl = bl.test, other.test=127.0.0.4\ndkim = no\n")
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", path],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("clients listed in bl.test, other.test=127.0.0.4 are refused", r.stdout)
        cfg = run_frugal("config", "-c", self.etc, "smtpd_recipient_restrictions").stdout
        self.assertRegex(cfg, r"reject_unauth_destination, reject_rbl_client bl\.test, "
                              r"reject_rbl_client other\.test=127\.0\.0\.4, reject_unlisted_recipient")
        self.start(dns)
        with smtplib.SMTP("127.0.0.1", self.ports[0], timeout=30 * SLOW, source_address=(addr, 0)) as s:
            s.mail("someone@remote.test")
            code, msg = s.rcpt("alice@example.test")
            self.assertEqual(code, 554, msg)
            self.assertIn(b"blocked using bl.test; listed for the wizard test", msg)
        with smtplib.SMTP("127.0.0.1", self.ports[0], timeout=30 * SLOW) as s:   # this host: permitted first
            s.mail("someone@remote.test")
            self.assertEqual(s.rcpt("alice@example.test")[0], 250)
        # other.test lists the address with 127.0.0.2, but only 127.0.0.4 counts there: bl.test alone refused it
        self.assertEqual(dns.count(rev + ".bl.test", "A"), 1)
        self.assertEqual(dns.count(rev + ".other.test", "A"), 0, "the first list's verdict ends the evaluation")
        again = os.path.join(self.dir, "answers-confirm")
        with open(again, "w") as f:
            f.write("confirm = no\n")
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", again],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertIn("DNS blocklists", r.stdout)
        self.assertIn("[bl.test, other.test=127.0.0.4]", r.stdout)

    def test_greylist_answer(self):
        """greylist = yes: check_greylist last in smtpd_recipient_restrictions (after the blocklists and
        reject_unlisted_recipient), `frugal check` passes; a re-run offers [yes]; no answer: no greylisting."""
        path = self.answers_file()
        with open(path, "a") as f:
            f.write("dnsbl = bl.test\ngreylist = yes\ndkim = no\n")
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", path],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("greylisting  new senders on port 25 are deferred", r.stdout)
        cfg = run_frugal("config", "-c", self.etc, "smtpd_recipient_restrictions").stdout
        self.assertRegex(cfg, r"= permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, "
                              r"reject_rbl_client bl\.test, reject_unlisted_recipient, check_greylist\n")
        chk = run_frugal("check", "-c", self.etc)
        self.assertEqual(chk.returncode, 0, chk.stdout + chk.stderr)
        again = os.path.join(self.dir, "answers-confirm")
        with open(again, "w") as f:
            f.write("confirm = no\n")
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", again],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertRegex(r.stdout, r"Hardening: greylisting[^\n]*\[yes\]: yes")
        # the control: the default answer writes no check_greylist
        shutil.rmtree(self.etc)
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", self.answers_file()],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("check_greylist", slurp(os.path.join(self.etc, "frugal.conf")))

    def test_accounts_created_as_root(self):
        if not ROOT:
            self.skipTest("creating system accounts (useradd --system) needs root; unprivileged the wizard "
                          "runs as the current user and refuses an account that does not exist")
        import pwd
        r = subprocess.run([FRUGAL, "wizard", "-c", self.etc, "--answers", self.answers_file()],
                           capture_output=True, text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for name in (self.owner, self.vowner):
            pw = pwd.getpwnam(name)
            self.assertLess(pw.pw_uid, 1000, "a system account")
            self.assertEqual(pw.pw_shell, "/usr/sbin/nologin")
        st = os.stat(os.path.join(self.etc, "users"))
        self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o777), (0, pwd.getpwnam(self.owner).pw_gid, 0o640))


if __name__ == "__main__":
    unittest.main()
