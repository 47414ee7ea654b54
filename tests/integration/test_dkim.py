"""tests/integration/test_dkim.py: DKIM signing at queue time (issue 16).

Keys come from `frugal dkim keygen` (rsa-sha256 for example.test,
ed25519-sha256 for ed.test); the TXT records it prints are served by a
loopback DNS server (dnsserver.py), and every signature is checked by an
independent verifier, dkimpy (Debian's python3-dkim), run by the system's
Python and resolving through that server. Mail that frugal vouches for
(mynetworks, AUTH, sendmail) arrives signed in a local Maildir and at an
SMTP sink, with folded and odd headers, an empty body, an 8-bit body and
5 MB; one byte of a delivered body changed makes dkimpy fail (the
negative control). Mail from outside, and a From: domain without a key,
are not signed. keygen: mode, refusal to overwrite; `frugal check` names
a missing key.
"""
import json
import os
import re
import shutil
import smtplib
import stat
import subprocess
import sys
import tempfile
import time
import unittest

from dnsserver import DNSServer
from harness import Daemon, run_frugal, wait_for, free_port, make_cert, client_ctx, SLOW, FRUGAL

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_smtp_client import PySink   # noqa: E402

ROOT_RUN = os.getuid() == 0
POSTDROP = os.path.join(os.path.dirname(os.path.abspath(FRUGAL)), "frugal-postdrop")
SYS_PY = "/usr/bin/python3"   # Debian's interpreter: python3-dkim and python3-dnspython are its packages
PASSWORD = "correct horse battery staple"

VERIFY = r"""
import json, sys, dkim, dns.resolver, dns.rdatatype
port = int(sys.argv[1])
res = dns.resolver.Resolver(configure=False)
res.nameservers = ["127.0.0.1"]
res.port = port
def txt(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    try:
        a = res.resolve(name, dns.rdatatype.TXT, lifetime=timeout)
    except dns.resolver.NXDOMAIN:
        return None
    return b"".join(a.rrset[0].strings)
def one(msg, i):
    try:
        return "ok" if dkim.DKIM(msg).verify(idx=i, dnsfunc=txt) else "fail"
    except dkim.DKIMException:   # a mismatch raises in dkimpy 1.1 (dkim.verify() hides it)
        return "fail"
for msg in json.load(sys.stdin):
    msg = msg.encode("latin-1")
    n = msg.count(b"\nDKIM-Signature:") + msg.startswith(b"DKIM-Signature:")
    print(" ".join(one(msg, i) for i in range(n)))
"""


def verify_many(dns_port, msgs):
    """dkimpy's verdicts, one list per message: each DKIM-Signature in order, "ok" or "fail"."""
    r = subprocess.run([SYS_PY, "-c", VERIFY, str(dns_port)],
                       input=json.dumps([m.decode("latin-1") for m in msgs]).encode(),
                       capture_output=True, timeout=120 * SLOW)
    if r.returncode != 0:
        raise AssertionError("dkimpy: " + r.stderr.decode())
    out = [l.split() for l in r.stdout.decode().split("\n")[:len(msgs)]]
    assert len(out) == len(msgs), r.stdout
    return out


def verify(dns_port, msg):
    return verify_many(dns_port, [msg])[0]


def keygen(confdir, *args):
    r = run_frugal("dkim", "keygen", "-c", confdir, *args)
    return r


def txt_of(out):
    """The TXT record keygen printed: (name, [strings])."""
    m = re.search(r"^(\S+) IN TXT((?: \"[^\"]*\")+)$", out, re.M)
    assert m, out
    return m.group(1), re.findall(r"\"([^\"]*)\"", m.group(2))


def odd_messages(frm):
    """Messages with folded and odd headers; each a bytes with CRLF line ends, as SMTP carries it."""
    base = "From: Alice Example <%s>\r\nTo: bob@localhost\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n" % frm
    return {
        "plain": base + "Subject: plain\r\nMessage-ID: <1@example.test>\r\n\r\nhello\r\nworld\r\n",
        "folded": base + "Subject: a long subject that goes on and on and on\r\n\tand is folded\r\n"
                         "  twice with spaces   inside\r\n\r\nbody\r\n",
        "tabs": base + "Subject:\tt\tabs\t \r\nX-Tab:\t\tvalue\t\r\nTo: second@localhost\r\n\r\n"
                       "trailing   spaces   \r\n\r\n\r\n",
        "empty_body": base + "Subject: empty\r\n\r\n",
        "no_final_newline": base + "Subject: nonl\r\n\r\nno newline at the end",
        "eightbit": base + "Subject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                           "Content-Transfer-Encoding: 8bit\r\n\r\nGr\u00fc\u00dfe aus K\u00f6ln\r\n",
    }


def body_byte_tampered(msg):
    """The delivered copy with one body byte changed (the negative control)."""
    head, sep, body = msg.partition(b"\r\n\r\n") if b"\r\n\r\n" in msg else msg.partition(b"\n\n")
    if not body.strip():
        return head + sep + b"x" + body
    i = next(k for k, c in enumerate(body) if c > 32)
    return head + sep + body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]


class DKIMBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="frugal-dkim-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)   # also when the set-up fails half-way
        os.chmod(cls.tmp, 0o755)
        cls.keydir = os.path.join(cls.tmp, "keys")
        with open(os.path.join(cls.tmp, "frugal.conf"), "w") as f:
            f.write("dkim_key_directory = %s\nmail_owner = %s\n" % (cls.keydir, pwd_name()))
        cls.rsa_out = keygen(cls.tmp, "example.test", "rsa1")
        cls.ed_out = keygen(cls.tmp, "--type", "ed25519", "ed.test", "ed1")
        assert cls.rsa_out.returncode == 0, cls.rsa_out.stderr
        assert cls.ed_out.returncode == 0, cls.ed_out.stderr
        records = {}
        for out in (cls.rsa_out.stdout, cls.ed_out.stdout):
            name, strings = txt_of(out)
            records[name] = [("TXT", strings)]
        cls.dns = DNSServer(records).start()
        cls.addClassCleanup(cls.dns.stop)
        cls.maps = "inline:{ %s }" % ", ".join(
            "%s=%s" % tuple(l.split(" ", 1)) for out in (cls.rsa_out.stdout, cls.ed_out.stdout)
            for l in out.splitlines()[-1:])
        cls.cert, cls.key = make_cert(cls.tmp, "mx", kind="ec")

    def daemon(self, extra="", auth=False):
        self.sink_port = free_port()
        self.sink = PySink(("127.0.0.1", self.sink_port))
        self.addCleanup(self.sink.stop)
        ex = ("dkim_signing_maps = %s\ntransport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n"
              % (self.maps, self.sink_port))
        if auth:
            self.sub = free_port()
            tdir = tempfile.mkdtemp(prefix="frugal-dkim-users-")
            self.addCleanup(shutil.rmtree, tdir, True)
            ex += ("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\nsubmission_listen = 127.0.0.1:%d\n"
                   "smtpd_sasl_users = cdb:%s/users\n" % (self.cert, self.key, self.sub, tdir))
        d = Daemon(extra=ex + extra)
        self.addCleanup(d.cleanup)
        if auth:
            r = run_frugal("passwd", "-c", d.dir, "alice@example.test", input=PASSWORD + "\n")
            self.assertEqual(r.returncode, 0, r.stderr)
        d.start()
        return d

    def send(self, d, frm, rcpts, msg):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30 * SLOW) as s:
            s.sendmail(frm, rcpts, msg.encode() if isinstance(msg, str) else msg)

    def sink_wait(self, n):
        return wait_for(lambda: len(self.sink.messages) >= n and list(self.sink.messages), 30,
                        "%d message(s) at the sink" % n)

    def assert_signed_all(self, msgs, algo_of):
        """Each message signed once by algo_of(msg) = (a=, d=), verified, and failing once tampered."""
        for m in msgs:
            self.assert_signed(m, *algo_of(m), check=False)
        got = verify_many(self.dns.port, list(msgs) + [body_byte_tampered(m) for m in msgs])
        self.assertEqual([g[0] for g in got], ["ok"] * len(msgs) + ["fail"] * len(msgs))

    def assert_signed(self, msg, algo, domain, n=1, check=True):
        sigs = re.findall(rb"^DKIM-Signature:.*?(?=^\S)", msg, re.M | re.S)
        self.assertEqual(len(sigs), n, msg[:2000])
        sig = re.sub(rb"\s+", b"", sigs[0])
        self.assertIn(b"a=" + algo + b";", sig)
        self.assertIn(b"d=" + domain + b";", sig)
        self.assertIn(b"c=relaxed/relaxed;", sig)
        h = re.search(rb"(?:^|;)h=([^;]*)", sig).group(1).lower().split(b":")
        self.assertEqual(h.count(b"from"), 2, h)   # From over-signed: once more than it occurs
        if check:
            self.assertEqual(verify_many(self.dns.port, [msg, body_byte_tampered(msg)]), [["ok"], ["fail"]])


def pwd_name():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


class Signing(DKIMBase):
    def test_mynetworks_signed_at_maildir_and_sink(self):
        """rsa and ed25519, odd headers, at a Maildir and an SMTP sink; one signature per message."""
        d = self.daemon("mynetworks = 127.0.0.0/8\n")
        cases = []
        for frm, algo, dom in (("alice@example.test", b"rsa-sha256", b"example.test"),
                               ("a@ed.test", b"ed25519-sha256", b"ed.test")):
            for name, msg in odd_messages(frm).items():
                cases.append((name, algo, dom))
                self.send(d, frm, ["alice@localhost", "x@relay.test"], msg)
        local = d.wait_messages(d.maildir("alice"), len(cases), timeout=30)
        remote = [m[2] for m in self.sink_wait(len(cases))]
        def algo_of(m):
            return (b"ed25519-sha256", b"ed.test") if b"@ed.test>" in m else (b"rsa-sha256", b"example.test")
        self.assertEqual(len(remote), len(cases))
        self.assert_signed_all(local + remote, algo_of)
        subjects = {re.search(rb"^Subject:[ \t]*(.*?)\r?$", m, re.M).group(1) for m in local}
        self.assertEqual(len(subjects), 6)
        # one log line per signed message, OpenDKIM's words
        lines = [l for l in d.output().splitlines() if "DKIM-Signature field added" in l]
        self.assertEqual(len(lines), len(cases), lines)
        self.assertTrue(any("(s=rsa1, d=example.test)" in l for l in lines))
        self.assertTrue(any("(s=ed1, d=ed.test)" in l for l in lines))

    def test_outside_client_not_signed(self):
        """127.0.0.1 outside mynetworks, no AUTH: mail in to a local user is never signed."""
        d = self.daemon()
        self.send(d, "alice@example.test", ["alice@localhost"], odd_messages("alice@example.test")["plain"])
        m = d.wait_messages(d.maildir("alice"), 1)[0]
        self.assertNotIn(b"DKIM-Signature", m)
        self.assertFalse(d.log_has("DKIM-Signature field added"))

    def test_unsigned_when_no_key_or_several_from(self):
        d = self.daemon("mynetworks = 127.0.0.0/8\n")
        self.send(d, "x@nokey.test", ["alice@localhost"], odd_messages("x@nokey.test")["plain"])
        two = odd_messages("alice@example.test")["plain"].replace(
            "From: Alice Example <alice@example.test>", "From: alice@example.test, other@example.test")
        self.send(d, "alice@example.test", ["alice@localhost"], two)
        # the control: the same client and domain with one From is signed
        self.send(d, "alice@example.test", ["alice@localhost"], odd_messages("alice@example.test")["folded"])
        msgs = d.wait_messages(d.maildir("alice"), 3)
        signed = [m for m in msgs if b"DKIM-Signature:" in m]
        self.assertEqual(len(signed), 1)
        self.assertIn(b"and is folded", signed[0])

    def test_existing_signature_same_domain_gets_ours_too(self):
        d = self.daemon("mynetworks = 127.0.0.0/8\n")
        old = ("DKIM-Signature: v=1; a=rsa-sha256; d=example.test; s=old; h=from; bh=x; b=y\r\n"
               + odd_messages("alice@example.test")["plain"])
        self.send(d, "alice@example.test", ["alice@localhost"], old)
        m = d.wait_messages(d.maildir("alice"), 1)[0]
        self.assertEqual(m.count(b"DKIM-Signature:"), 2)
        # ours comes first (a late header: read before the message), and verifies
        self.assertIn(b"s=rsa1", m.split(b"DKIM-Signature:")[1])
        self.assertEqual(verify(self.dns.port, m), ["ok", "fail"])

    def test_queue_show_puts_the_signature_first(self):
        """`frugal queue show` reads the queue file as the agents do: the late header first."""
        d = self.daemon("mynetworks = 127.0.0.0/8\ndefer_transports = smtp\n")
        self.send(d, "alice@example.test", ["x@relay.test"], odd_messages("alice@example.test")["folded"])
        d.wait_log("status=deferred")
        r = run_frugal("queue", "-c", d.dir, "list")
        qid = re.search(r"^([0-9A-F]{10,})", r.stdout, re.M).group(1)
        r = run_frugal("queue", "-c", d.dir, "show", qid)
        self.assertEqual(r.returncode, 0, r.stderr)
        content = r.stdout.split("*** MESSAGE CONTENTS %s ***\n" % qid, 1)[1].encode()
        self.assertTrue(content.startswith(b"DKIM-Signature: v=1;"), content[:200])
        self.assertEqual(verify(self.dns.port, content), ["ok"])

    def test_auth_signed(self):
        """Submission with AUTH from outside mynetworks: signed."""
        d = self.daemon(auth=True)
        with smtplib.SMTP("127.0.0.1", self.sub, timeout=30 * SLOW) as s:
            s.starttls(context=client_ctx())
            s.login("alice@example.test", PASSWORD)
            s.sendmail("alice@example.test", ["alice@localhost", "y@relay.test"],
                       odd_messages("alice@example.test")["tabs"].encode())
        self.assert_signed(d.wait_messages(d.maildir("alice"), 1)[0], b"rsa-sha256", b"example.test")
        self.assert_signed(self.sink_wait(1)[0][2], b"rsa-sha256", b"example.test")

    def test_large_message_signed(self):
        """5 MB: the streaming path (the file is created on the loop and written as it comes)."""
        d = self.daemon("mynetworks = 127.0.0.0/8\nmessage_size_limit = 20000000\n")
        line = "".join(chr(33 + i % 90) for i in range(76)) + "\r\n"
        msg = odd_messages("a@ed.test")["plain"].replace("hello\r\n", line * (5 * 1024 * 1024 // len(line)))
        self.send(d, "a@ed.test", ["alice@localhost", "x@relay.test"], msg)
        m = d.wait_messages(d.maildir("alice"), 1, timeout=60)[0]
        self.assertGreater(len(m), 5000000)   # LF line ends in the Maildir
        self.assert_signed(m, b"ed25519-sha256", b"ed.test")
        self.assert_signed(self.sink_wait(1)[0][2], b"ed25519-sha256", b"ed.test")


class Sendmail(DKIMBase):
    def test_sendmail_signed(self):
        d = self.daemon("mynetworks = 10.255.255.0/24\n" + ("setgid_group = mail\n" if ROOT_RUN else ""))
        bindir = os.path.join(d.dir, "bin")
        os.mkdir(bindir)
        with open(os.path.join(d.dir, "frugal.conf"), "a") as f:
            f.write("command_directory = %s\n" % bindir)
        helper = os.path.join(bindir, "frugal-postdrop")
        shutil.copy(POSTDROP, helper)
        if ROOT_RUN:
            import grp
            os.chown(helper, 0, grp.getgrnam("mail").gr_gid)
            os.chmod(helper, 0o2755)
        os.symlink(os.path.abspath(FRUGAL), os.path.join(bindir, "sendmail"))
        # an 8-bit body, and one whose last line has no newline (sendmail's input may end so)
        for name in ("eightbit", "no_final_newline"):
            msg = odd_messages("alice@example.test")[name].replace("\r\n", "\n").encode()
            r = subprocess.run([os.path.join(bindir, "sendmail"), "-C", d.dir, "-i", "alice@localhost"],
                               input=msg, capture_output=True, timeout=30 * SLOW)
            self.assertEqual(r.returncode, 0, r.stderr)
        msgs = d.wait_messages(d.maildir("alice"), 2)
        self.assert_signed_all(msgs, lambda m: (b"rsa-sha256", b"example.test"))


class Keygen(DKIMBase):
    def test_mode_and_refuse_overwrite(self):
        path = os.path.join(self.keydir, "example.test.rsa1.key")
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640 if ROOT_RUN else 0o600)
        self.assertEqual(st.st_uid, os.getuid())
        if ROOT_RUN:
            import pwd
            self.assertEqual(st.st_gid, pwd.getpwnam(pwd_name()).pw_gid)
        with open(path, "rb") as f:
            before = f.read()
        self.assertTrue(before.startswith(b"-----BEGIN PRIVATE KEY-----"))
        r = keygen(self.tmp, "example.test", "rsa1")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not replaced", r.stderr)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(sorted(n for n in os.listdir(self.keydir) if n.startswith(".")), [])

    def test_printed_record(self):
        name, strings = txt_of(self.rsa_out.stdout)
        self.assertEqual(name, "rsa1._domainkey.example.test.")
        self.assertTrue(all(len(s) <= 255 for s in strings))
        self.assertGreater(len(strings), 1)   # an RSA-2048 record needs two strings
        self.assertTrue("".join(strings).startswith("v=DKIM1; k=rsa; p=MII"))
        name, strings = txt_of(self.ed_out.stdout)
        self.assertEqual(strings[0][:len("v=DKIM1; k=ed25519; p=")], "v=DKIM1; k=ed25519; p=")
        self.assertEqual(len(strings[0]) - len("v=DKIM1; k=ed25519; p="), 44)   # 32 bytes, base64
        self.assertIn("example.test rsa1:%s/example.test.rsa1.key" % self.keydir, self.rsa_out.stdout)

    def test_default_selector_and_bad_input(self):
        r = keygen(self.tmp, "--type", "ed25519", "default.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(time.strftime("%Y%m", time.gmtime()) + "._domainkey.default.test.", r.stdout)
        self.assertNotEqual(keygen(self.tmp, "bad domain").returncode, 0)
        self.assertNotEqual(keygen(self.tmp, "--type", "dsa", "x.test").returncode, 0)

    def test_check_names_missing_key(self):
        d = Daemon(extra="dkim_signing_maps = inline:{ example.test=s1:/nonexistent/k.pem }\n")
        self.addCleanup(d.cleanup)
        r = run_frugal("check", "-c", d.dir)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("/nonexistent/k.pem", r.stdout + r.stderr)
        self.assertIn("No such file or directory", r.stdout + r.stderr)
        d2 = Daemon(extra="dkim_signing_maps = %s\n" % self.maps)
        self.addCleanup(d2.cleanup)
        r = run_frugal("check", "-c", d2.dir)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
