"""tests/integration/test_tls.py: STARTTLS on smtpd_listen, implicit TLS on
smtps_listen (PRODUCT.md 2, 3.4), with real clients: Python's smtplib and
ssl, `openssl s_client`, swaks.

The injection of CVE-2011-0411 (commands pipelined after STARTTLS in clear
must not run under TLS), EHLO after TLS, STARTTLS twice and with an
argument, a client that sends garbage instead of a ClientHello, a
handshake that never finishes, smtpd_tls_security_level = encrypt, the
certificate re-read on reload while a live TLS session keeps its own, and
`frugal check` naming a missing, broken or mismatched key or certificate.
"""
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

from harness import Daemon, Raw, run_frugal, wait_for, make_cert, client_ctx, SLOW, FRUGAL


def der(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def reply(f):
    """One SMTP reply (all its lines) from a file object: (code, text)."""
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        lines.append(line.decode(errors="replace").rstrip("\r\n"))
        if len(line) >= 4 and line[3:4] == b" ":
            return int(line[:3]), "\n".join(lines)


class TLSBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix="frugal-tls-")
        os.chmod(cls.certdir, 0o755)
        cls.cert, cls.key = make_cert(cls.certdir, "mx")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def daemon(self, extra="", **kw):
        d = Daemon(extra="smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n%s" % (self.cert, self.key, extra), **kw)
        self.addCleanup(d.cleanup)
        return d.start()


class StartTLS(TLSBase):
    def test_smtplib_starttls_delivers_with_esmtps(self):
        d = self.daemon()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
            s.ehlo("client.example.org")
            self.assertTrue(s.has_extn("starttls"))
            self.assertTrue(s.has_extn("chunking"))
            s.starttls(context=client_ctx())
            self.assertEqual(s.sock.version(), "TLSv1.3")
            code, _ = s.ehlo("client.example.org")
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"), "STARTTLS offered again under TLS")
            s.sendmail("t@example.org", ["alice@example.test"], "Subject: over tls\r\n\r\nsecret\r\n")
            code, text = s.docmd("STARTTLS")
            self.assertEqual((code, text), (554, b"5.5.1 Error: TLS already active"))
        msg = d.wait_messages(d.maildir("alice"), 1)[0].decode()
        self.assertRegex(msg, r"\(using TLSv1\.3 with cipher TLS_\w+ \(\d+/\d+ bits\)\)")
        self.assertIn("with ESMTPS id", msg)
        d.wait_log("Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher")

    def test_openssl_s_client_starttls_and_versions(self):
        d = self.daemon()
        script = b"EHLO c.example.org\r\nMAIL FROM:<o@example.org>\r\nRCPT TO:<alice@example.test>\r\n" \
                 b"DATA\r\nSubject: s_client\r\n\r\nvia openssl\r\n.\r\nQUIT\r\n"
        r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % d.port,
                            "-quiet", "-tls1_2"], input=script, capture_output=True, timeout=30 * SLOW)
        out = r.stdout.decode(errors="replace")
        self.assertIn("250 2.0.0 Ok: queued as", out)
        self.assertIn("221 2.0.0 Bye", out)
        d.wait_log("TLSv1.2 with cipher ECDHE-")
        d.wait_messages(d.maildir("alice"), 1)
        # no TLS 1.1, and no TLS 1.2 suite without forward secrecy
        for args in (["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], ["-tls1_2", "-cipher", "AES128-SHA"]):
            r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % d.port]
                               + args, input=b"QUIT\r\n", capture_output=True, timeout=30 * SLOW)
            self.assertNotEqual(r.returncode, 0, "handshake with %s succeeded" % args)
        d.wait_log("SSL_accept error from unknown[127.0.0.1]")

    def test_swaks_tls(self):
        if not shutil.which("swaks"):
            self.fail("swaks not installed (contrib/deps.sh installs it)")
        d = self.daemon()
        r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port, "--to", "alice@example.test",
                            "--from", "sw@example.org", "--tls", "--header", "Subject: swaks tls"],
                           capture_output=True, text=True, timeout=60 * SLOW)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("TLS started", r.stdout)
        self.assertIn("Subject: swaks tls", d.wait_messages(d.maildir("alice"), 1)[0].decode())

    def test_pipelined_after_starttls_is_discarded(self):
        """CVE-2011-0411: a MAIL sent in clear right behind STARTTLS must not
        take effect inside the TLS session."""
        d = self.daemon()
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=10 * SLOW)
        f = sock.makefile("rb")
        self.assertEqual(reply(f)[0], 220)
        sock.sendall(b"EHLO c.example.org\r\n")
        self.assertEqual(reply(f)[0], 250)
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        self.assertEqual(reply(f), (220, "220 2.0.0 Ready to start TLS"))
        tls = client_ctx().wrap_socket(sock, server_hostname="mx.example.test")
        g = tls.makefile("rb")
        tls.sendall(b"EHLO c.example.org\r\n")
        self.assertEqual(reply(g)[0], 250)
        tls.sendall(b"RCPT TO:<alice@example.test>\r\n")
        self.assertEqual(reply(g), (503, "503 5.5.1 Error: need MAIL command"))
        tls.sendall(b"QUIT\r\n")
        self.assertEqual(reply(g)[0], 221)
        tls.close()

    def test_starttls_with_argument_and_before_ehlo(self):
        d = self.daemon()
        r = Raw(d.port)
        r.reply()
        self.assertEqual(r.cmd("STARTTLS now")[0], 501)
        self.assertEqual(r.cmd("STARTTLS")[0], 220)   # allowed before EHLO, as in Postfix
        r.close()

    def test_garbage_instead_of_client_hello(self):
        d = self.daemon()
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=10 * SLOW)
        f = sock.makefile("rb")
        reply(f)
        sock.sendall(b"EHLO c.example.org\r\nSTARTTLS\r\n")
        reply(f)
        self.assertEqual(reply(f)[0], 220)
        sock.sendall(b"this is not a ClientHello\r\n" * 20)
        try:
            self.assertEqual(sock.recv(100), b"", "the connection stays open")
        except ConnectionResetError:
            pass
        sock.close()
        d.wait_log("SSL_accept error from unknown[127.0.0.1]")
        # the daemon goes on
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
            s.starttls(context=client_ctx())
            s.sendmail("g@example.org", ["alice@example.test"], "Subject: after garbage\r\n\r\nok\r\n")
        d.wait_messages(d.maildir("alice"), 1)

    def test_handshake_that_never_finishes_times_out(self):
        d = self.daemon(extra="smtpd_starttls_timeout = 2s\n")
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=30 * SLOW)
        f = sock.makefile("rb")
        reply(f)
        sock.sendall(b"STARTTLS\r\n")
        self.assertEqual(reply(f)[0], 220)
        t0 = time.monotonic()
        try:
            self.assertEqual(sock.recv(100), b"")
        except ConnectionResetError:
            pass
        waited = time.monotonic() - t0
        sock.close()
        self.assertGreater(waited, 1.5)
        self.assertLess(waited, 15 * SLOW)
        d.wait_log("timeout after STARTTLS from unknown[127.0.0.1]")

    def test_encrypt_requires_tls_first(self):
        d = self.daemon(extra="smtpd_tls_security_level = encrypt\n")
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO c.example.org")
        code, text = r.cmd("MAIL FROM:<e@example.org>")
        self.assertEqual(code, 530)
        self.assertIn("5.7.0 Must issue a STARTTLS command first", text)
        r.send(b"BDAT 3 LAST\r\nxyz")
        self.assertEqual(r.reply()[0], 530)   # the chunk was read and refused
        self.assertEqual(r.cmd("NOOP")[0], 250)
        r.close()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
            s.starttls(context=client_ctx())
            s.sendmail("e@example.org", ["alice@example.test"], "Subject: enc\r\n\r\nok\r\n")
        d.wait_messages(d.maildir("alice"), 1)

    def test_none_offers_no_starttls(self):
        d = self.daemon(extra="smtpd_tls_security_level = none\n")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
            s.ehlo("c.example.org")
            self.assertFalse(s.has_extn("starttls"))
            self.assertEqual(s.docmd("STARTTLS")[0], 502)


class ImplicitTLS(TLSBase):
    def test_smtps_listener(self):
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        p = port.getsockname()[1]
        port.close()
        users = os.path.join(self.certdir, "users-%d" % p)   # a submission listener needs its users table
        open(users, "w").close()
        self.assertEqual(run_frugal("map", users).returncode, 0)
        d = self.daemon(extra="smtps_listen = 127.0.0.1:%d\nsmtpd_sasl_users = cdb:%s\n" % (p, users))
        with smtplib.SMTP_SSL("127.0.0.1", p, timeout=10 * SLOW, context=client_ctx()) as s:
            code, _ = s.ehlo("c.example.org")
            self.assertEqual(code, 250)
            self.assertFalse(s.has_extn("starttls"))
            self.assertTrue(s.has_extn("auth"))
            # submission: AUTH before MAIL (test_auth.py does the rest)
            self.assertEqual(s.docmd("MAIL FROM:<x@example.org>"), (530, b"5.7.0 Authentication required"))
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % p, "-quiet"],
                           input=b"QUIT\r\n", capture_output=True, timeout=30 * SLOW)
        self.assertIn("220 mx.example.test ESMTP", r.stdout.decode(errors="replace"))
        self.assertIn("221 2.0.0 Bye", r.stdout.decode(errors="replace"))
        # clear text on the TLS port is a failed handshake, not a session
        sock = socket.create_connection(("127.0.0.1", p), timeout=10 * SLOW)
        sock.sendall(b"EHLO c.example.org\r\n")
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        self.assertFalse(data.startswith(b"220"), data)
        sock.close()

    def test_session_resumption_by_ticket(self):
        """A client that kept the ticket of its first session resumes (TLS 1.3
        and 1.2): no server-side cache, the ticket carries the state."""
        d = self.daemon()
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            ctx = client_ctx()
            ctx.minimum_version = ctx.maximum_version = version
            sessions = []
            for i in range(2):
                with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                    s.ehlo("c.example.org")
                    s.docmd("STARTTLS")
                    s.sock = ctx.wrap_socket(s.sock, server_hostname="mx.example.test",
                                             session=sessions[-1] if sessions else None)
                    s.file = None
                    code, _ = s.ehlo("c.example.org")   # the TLS 1.3 ticket arrives with it
                    self.assertEqual(code, 250)
                    self.assertEqual(s.sock.session_reused, i == 1, (version, i))
                    sessions.append(s.sock.session)
        self.assertEqual(len(re.findall(r"Anonymous TLS connection established from .*\(resumed\)",
                                        d.output())), 2, d.output()[-2000:])


class Reload(TLSBase):
    def test_new_certificate_for_new_sessions_live_session_keeps_its_own(self):
        d = self.daemon()
        live = smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW)
        live.ehlo("c.example.org")
        live.starttls(context=client_ctx())
        live.ehlo("c.example.org")
        self.assertEqual(live.sock.getpeercert(binary_form=True), der(self.cert))
        # a new certificate and key (ECDSA this time) at the same paths, then reload
        new_cert, new_key = make_cert(self.certdir, "mx2", kind="ec")
        os.replace(new_cert, self.cert + ".new")
        os.replace(new_key, self.key + ".new")
        old_der = der(self.cert)
        os.replace(self.cert + ".new", self.cert)
        os.replace(self.key + ".new", self.key)
        self.addCleanup(self.restore_rsa)
        r = run_frugal("reload", "-c", d.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        d.wait_log("ECDSA 256 bits")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
            s.starttls(context=client_ctx())
            self.assertEqual(s.sock.getpeercert(binary_form=True), der(self.cert))
            self.assertNotEqual(der(self.cert), old_der)
        # the live session still works, on its old certificate
        live.sendmail("l@example.org", ["alice@example.test"], "Subject: live\r\n\r\nstill here\r\n")
        self.assertEqual(live.sock.getpeercert(binary_form=True), old_der)
        live.quit()
        d.wait_messages(d.maildir("alice"), 1)

    def restore_rsa(self):
        type(self).cert, type(self).key = make_cert(self.certdir, "mx")

    def test_root_only_key_read_by_the_master(self):
        """Started as root with an unprivileged mail_owner, the SMTP process
        cannot read a 0600 root key itself: the master hands it over, at start
        and at reload."""
        if os.geteuid() != 0:
            self.skipTest("needs root: the key is readable by root only and the daemon runs as nobody")
        keydir = tempfile.mkdtemp(prefix="frugal-tls-private-")
        self.addCleanup(shutil.rmtree, keydir, True)
        os.chmod(keydir, 0o700)
        cert, key = make_cert(keydir, "private")
        os.chmod(key, 0o600)
        d = Daemon(extra="smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\nmail_owner = nobody\n" % (cert, key))
        self.addCleanup(d.cleanup)
        os.chmod(d.dir, 0o755)
        import pwd
        pw = pwd.getpwnam("nobody")
        os.makedirs(d.maildir_base)
        os.chown(d.maildir_base, pw.pw_uid, pw.pw_gid)
        d.start()
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                s.starttls(context=client_ctx())
                self.assertEqual(s.sock.getpeercert(binary_form=True), der(cert))
            r = run_frugal("reload", "-c", d.dir)
            self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: d.output().count("reload -- version") >= 2, 10, "two reloads")
        self.assertFalse(d.log_has("reload failed"), d.output()[-2000:])


class Check(TLSBase):
    def conf(self, extra):
        d = Daemon(extra=extra)
        self.addCleanup(d.cleanup)
        return run_frugal("check", "-c", d.dir)

    def test_check_names_the_tls_problem(self):
        other_cert, other_key = make_cert(self.certdir, "other")
        garbage = os.path.join(self.certdir, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("not a key\n")
        cases = [
            ("smtpd_tls_cert_file = %s/missing.pem\nsmtpd_tls_key_file = %s\n" % (self.certdir, self.key),
             r"frugal\.conf:\d+: smtpd_tls_cert_file .*missing\.pem: cannot open: No such file"),
            ("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n" % (self.cert, other_key),
             r"frugal\.conf:\d+: smtpd_tls_key_file .* does not match the certificate"),
            ("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n" % (self.cert, garbage),
             r"frugal\.conf:\d+: smtpd_tls_key_file .*garbage\.pem: no usable PEM private key"),
            ("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n" % (garbage, self.key),
             r"frugal\.conf:\d+: smtpd_tls_cert_file .*garbage\.pem: no PEM certificate"),
            ("smtpd_tls_security_level = encrypt\n",
             r"frugal\.conf:\d+: smtpd_tls_security_level = encrypt needs a certificate"),
        ]
        for extra, pattern in cases:
            r = self.conf(extra)
            self.assertEqual(r.returncode, 1, extra)
            self.assertRegex(r.stderr, pattern)
        r = self.conf("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n" % (self.cert, self.key))
        self.assertEqual(r.returncode, 0, r.stderr)
        # and serve refuses what check refuses
        d = Daemon(extra="smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n" % (self.cert, other_key))
        self.addCleanup(d.cleanup)
        d.start(wait=False)
        d.proc.wait(timeout=30 * SLOW)
        self.assertNotEqual(d.proc.returncode, 0)
        self.assertIn("does not match the certificate", d.output())


if __name__ == "__main__":
    unittest.main()
