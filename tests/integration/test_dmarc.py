"""tests/integration/test_dmarc.py: DKIM verification, DMARC and
Authentication-Results for mail from outside (issue 16; smtpd/authres.c,
smtpd/dmarc.c).

Messages are signed by an independent signer, dkimpy (Debian's
python3-dkim, run by the system's Python), with keys `frugal dkim keygen`
made (rsa-sha256 and ed25519-sha256); the key TXT records, the SPF and the
_dmarc records are served by a loopback DNS server (dnsserver.py). The
client is 127.0.0.1 outside mynetworks (the harness's default), so every
message is checked; FRUGAL_SPF_CLIENT_ADDR makes SPF evaluate 192.0.2.10.
Results are read from the Authentication-Results: header of the copy
delivered to a Maildir, and from the log line.
"""
import base64
import json
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import threading
import time
import unittest

from dnsserver import DNSServer
from harness import Daemon, Raw, run_frugal, wait_for, SLOW, alloc_sweep, smtp_outcome

SYS_PY = "/usr/bin/python3"   # python3-dkim is a package of Debian's interpreter
IP = "192.0.2.10"

SIGN = r"""
import json, sys, dkim
out = {}
for name, msg, signers in json.load(sys.stdin):
    msg = msg.encode("latin-1")
    for dom, sel, keyfile, algo, ed_raw in signers:   # each signs the message as the one before left it
        key = open(keyfile, "rb").read() if not ed_raw else ed_raw.encode()
        msg = dkim.sign(msg, sel.encode(), dom.encode(), key, signature_algorithm=algo.encode(),
                        include_headers=[b"from", b"to", b"subject"]) + msg
    out[name] = msg.decode("latin-1")
print(json.dumps(out))
"""


def sign_all(jobs):
    """jobs: (name, message, [(domain, selector, keyfile, algo, ed25519 raw seed or "")]): {name: signed}.
    One process for all (the system Python takes seconds to import dkimpy on a loaded machine)."""
    r = subprocess.run([SYS_PY, "-c", SIGN], input=json.dumps(jobs).encode(), capture_output=True,
                       timeout=120 * SLOW)
    if r.returncode != 0:
        raise AssertionError("dkimpy: " + r.stderr.decode())
    return json.loads(r.stdout)


def message(frm, subject, body="hello\r\nworld\r\n", extra=""):
    return ("From: Sender <%s>\r\nTo: alice@example.test\r\nSubject: %s\r\n%s"
            "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\n%s" % (frm, subject, extra, body))


def ar_of(msg):
    """The Authentication-Results: headers of a delivered message, unfolded."""
    head = msg.split(b"\n\n", 1)[0].decode("latin-1")
    return [re.sub(r"\s+", " ", v).rstrip() for v in
            re.findall(r"^Authentication-Results:(.*?)(?=^\S)", head + "\nX:", re.M | re.S)]


def txt_of(out):
    m = re.search(r"^(\S+) IN TXT((?: \"[^\"]*\")+)$", out, re.M)
    assert m, out
    return m.group(1).rstrip("."), re.findall(r"\"([^\"]*)\"", m.group(2))


ALIGN = [
    # (From, signers, MAIL FROM, dmarc result)
    ("a@spf.test", (), "a@spf.test", "dmarc=pass (p=reject dis=none) header.from=spf.test"),  # SPF only
    ("a@victim.test", ("third.test",), "a@victim.test", "dmarc=fail (p=reject dis=none)"),  # third party
    ("a@sub.rsa.test", ("rsa.test",), "x@elsewhere.test", "dmarc=pass"),   # relaxed: subdomain aligned
    ("a@sub.strict.test", ("strict.test",), "x@elsewhere.test", "dmarc=fail (p=reject dis=none)"),
    ("a@strict.test", ("strict.test",), "x@elsewhere.test", "dmarc=pass"),  # strict: the same name
    ("a@nodmarc.test", ("third.test",), "x@elsewhere.test", "dmarc=none header.from=nodmarc.test"),
    ("a@tempfail.test", (), "x@elsewhere.test", "dmarc=temperror"),
    ("a@sub.sp.test", (), "x@elsewhere.test", "dmarc=fail (p=none dis=none) header.from=sub.sp.test"),  # sp=
    ("a@sp.test", (), "x@elsewhere.test", "dmarc=fail (p=reject dis=none) header.from=sp.test"),
    ("a@pct0.test", (), "x@elsewhere.test", "dmarc=fail (p=quarantine dis=none)"),  # pct=0: one step down
]


class DMARC(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="frugal-dmarc-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        os.chmod(cls.tmp, 0o755)
        import pwd
        with open(os.path.join(cls.tmp, "frugal.conf"), "w") as f:
            f.write("dkim_key_directory = %s/keys\nmail_owner = %s\n" % (cls.tmp, pwd.getpwuid(os.getuid()).pw_name))
        records = {}
        cls.keys = {}
        for dom, sel, kind in (("rsa.test", "rsa1", "rsa"), ("ed.test", "ed1", "ed25519"),
                               ("third.test", "t1", "rsa"), ("strict.test", "s1", "rsa"),
                               ("many.test", "m1", "rsa"), ("nokey.test", "n1", "rsa")):
            r = run_frugal("dkim", "keygen", "-c", cls.tmp, "--type", kind, dom, sel)
            assert r.returncode == 0, r.stderr
            path = os.path.join(cls.tmp, "keys", "%s.%s.key" % (dom, sel))
            ed_raw = ""
            if kind == "ed25519":
                with open(path) as f:
                    der = base64.b64decode("".join(l for l in f.read().splitlines() if "-----" not in l))
                ed_raw = base64.b64encode(der[-32:]).decode()   # dkimpy takes the raw seed
            cls.keys[dom] = (sel, path, "ed25519-sha256" if kind == "ed25519" else "rsa-sha256", ed_raw)
            name, strings = txt_of(r.stdout)
            if dom != "nokey.test":   # its key is never published
                records[name] = [("TXT", strings)]
        # a key record too large for any RSA key frugal verifies (over 4096 bits)
        huge = "v=DKIM1; k=rsa; p=" + base64.b64encode(os.urandom(1500)).decode()
        records["big._domainkey.rsa.test"] = [("TXT", [huge[i:i + 255] for i in range(0, len(huge), 255)])]
        spf = "v=spf1 ip4:%s -all" % IP
        for dom, dmarc in (("rsa.test", "v=DMARC1; p=reject"), ("ed.test", "v=DMARC1; p=reject; rua=mailto:d@ed.test"),
                           ("victim.test", "v=DMARC1; p=reject"), ("spf.test", "v=DMARC1; p=reject"),
                           ("strict.test", "v=DMARC1; p=reject; adkim=s"), ("nokey.test", "v=DMARC1; p=none"),
                           ("quar.test", "v=DMARC1; p=quarantine"), ("many.test", "v=DMARC1; p=reject"),
                           ("sp.test", "v=DMARC1; p=reject; sp=none"), ("pct0.test", "v=DMARC1; p=reject; pct=0"),
                           ("nodmarc.test", None)):
            if dmarc:
                records["_dmarc." + dom] = [("TXT", dmarc), ("TXT", "not a dmarc record")]
        for dom in ("spf.test", "strict.test", "rsa.test"):
            records[dom] = [("TXT", spf)]
        records["victim.test"] = [("TXT", "v=spf1 -all")]
        cls.dns = DNSServer(records, servfail={"_dmarc.tempfail.test"}, delay={"m1._domainkey.many.test": 1.5}).start()
        cls.addClassCleanup(cls.dns.stop)
        cls.msgs = sign_all([(name, msg, [cls.signer(d) for d in doms]) for name, msg, doms in cls.plan()])
        env = {"FRUGAL_SPF_CLIENT_ADDR": IP}
        cls.d = Daemon("", dns=cls.dns, env=env)
        cls.addClassCleanup(cls.d.cleanup)
        cls.d.start()
        cls.e = Daemon("smtpd_dmarc_enforce = yes\n", dns=cls.dns, env=env)
        cls.addClassCleanup(cls.e.cleanup)
        cls.e.start()

    @classmethod
    def signer(cls, dom):
        if dom == "big":   # rsa.test's key, under the selector whose record is too large
            sel, path, algo, ed = cls.keys["rsa.test"]
            return ("rsa.test", "big", path, algo, ed)
        sel, path, algo, ed = cls.keys[dom]
        return (dom, sel, path, algo, ed)

    @classmethod
    def plan(cls):
        """Every message the tests send signed: (name, message, signing domains in order)."""
        p = []
        for dom in ("rsa.test", "ed.test"):
            p.append(("pass " + dom, message("a@" + dom, "pass " + dom), [dom]))
            p.append(("tampered " + dom, message("a@" + dom, "tampered " + dom), [dom]))
        p.append(("nokey", message("a@nokey.test", "nokey"), ["nokey.test"]))
        p.append(("bigkey", message("a@rsa.test", "bigkey"), ["big"]))
        for n, (frm, signers, mfrom, want) in enumerate(ALIGN):
            p.append(("align %d" % n, message(frm, "align %d" % n), list(signers)))
        p.append(("spoofed", message("a@victim.test", "spoofed"), ["third.test"]))
        p.append(("after reject", message("a@rsa.test", "after reject"), ["rsa.test"]))
        p.append(("fifty", message("a@many.test", "fifty"), ["many.test"] * 50))
        p.append(("sweep", message("a@rsa.test", "sweep"), ["ed.test", "rsa.test"]))
        return p

    def deliver(self, d, frm, msg, user="alice", sender=None):
        before = len(d.messages(d.maildir(user)))
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30 * SLOW) as s:
            s.ehlo("client.example.test")
            s.sendmail(sender if sender is not None else frm, [user + "@example.test"], msg.encode("latin-1"))
        msgs = d.wait_messages(d.maildir(user), before + 1)
        subj = re.search(r"^Subject: ([^\r\n]*)", msg, re.M).group(1).encode()
        return [m for m in msgs if b"Subject: " + subj + b"\n" in m][0]

    def test_dkim_pass_rsa_and_ed25519_fail_when_tampered(self):
        for dom in ("rsa.test", "ed.test"):
            m = self.msgs["pass " + dom]
            got = self.deliver(self.d, "a@" + dom, m)
            ar = ar_of(got)
            self.assertEqual(len(ar), 1, got[:1500])
            self.assertTrue(ar[0].startswith(" mx.example.test; dkim=pass header.d=%s header.s=%s header.b=" %
                                             (dom, self.keys[dom][0])), ar)
            self.assertIn("dmarc=pass (p=reject dis=none) header.from=%s" % dom, ar[0])
            # a late header: above our Received: (only the delivery's Return-Path and Delivered-To come first)
            self.assertLess(got.index(b"Authentication-Results: mx.example.test;"), got.index(b"Received: from"))
            # the negative control: one body byte changed after signing
            bad = self.msgs["tampered " + dom].replace("hello", "hellp")
            ar = ar_of(self.deliver(self.d, "a@" + dom, bad, sender="x@elsewhere.test"))[0]
            self.assertRegex(ar, "dkim=fail reason=\"[^\"]+\" header.d=%s" % dom)
            self.assertIn("dmarc=fail (p=reject dis=none)", ar)
        # one log line per message, in the queue ID's style
        self.d.wait_log("Authentication-Results: mx.example.test; dkim=pass header.d=ed.test header.s=ed1")
        self.assertRegex(self.d.output(), r"frugal/smtpd\[\d+\]: [0-9A-F]+: Authentication-Results: mx.example.test; "
                                          r"dkim=pass header.d=ed.test header.s=ed1 header.b=\"[^\"]{8}\"; "
                                          r"spf=none smtp.mailfrom=ed.test; dmarc=pass \(p=reject dis=none\) "
                                          r"header.from=ed.test\n")

    def test_no_key_and_huge_key(self):
        m = self.msgs["nokey"]
        ar = ar_of(self.deliver(self.d, "a@nokey.test", m))[0]
        self.assertIn("dkim=permerror reason=\"key not found in DNS\" header.d=nokey.test header.s=n1", ar)
        self.assertIn("dmarc=fail (p=none dis=none) header.from=nokey.test", ar)
        # a key record over AUTHRES_KEY_MAX: refused unread (RSA over 4096 bits is not verified)
        m = self.msgs["bigkey"]
        ar = ar_of(self.deliver(self.d, "a@rsa.test", m))[0]
        self.assertIn("dkim=permerror reason=\"key record too large\" header.d=rsa.test header.s=big", ar)
        # SPF passes for rsa.test from 192.0.2.10: DMARC passes through SPF
        self.assertIn("spf=pass smtp.mailfrom=rsa.test", ar)
        self.assertIn("dmarc=pass", ar)

    def test_alignment(self):
        for n, (frm, signers, mfrom, want) in enumerate(ALIGN):
            m = self.msgs["align %d" % n]
            ar = ar_of(self.deliver(self.d, frm, m, sender=mfrom))[0]
            self.assertIn(want, ar, (frm, signers, mfrom))
            for s in signers:
                self.assertIn("dkim=pass header.d=%s" % s, ar)
        # sub.strict.test has no record: the organizational domain's was asked after it
        self.assertEqual(self.dns.count("_dmarc.sub.strict.test", "TXT"), 1)
        self.assertGreaterEqual(self.dns.count("_dmarc.strict.test", "TXT"), 1)   # (then from the cache)

    def test_enforce_rejects_p_reject_only(self):
        # p=reject and no aligned pass: 550, nothing delivered
        m = self.msgs["spoofed"]
        with smtplib.SMTP("127.0.0.1", self.e.port, timeout=30 * SLOW) as s:
            s.ehlo("client.example.test")
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("a@victim.test", ["alice@example.test"], m.encode())
            self.assertEqual(cm.exception.smtp_code, 550)
            self.assertEqual(cm.exception.smtp_error, b"5.7.1 rejected by DMARC policy for victim.test")
            # the session goes on: an aligned message is accepted next
            ok = self.msgs["after reject"]
            s.sendmail("a@rsa.test", ["alice@example.test"], ok.encode())
            # p=quarantine is accepted, marked in the header
            s.sendmail("a@elsewhere.test", ["alice@example.test"], message("a@quar.test", "quarantined").encode())
            # temperror never rejects
            s.sendmail("a@elsewhere.test", ["alice@example.test"], message("a@tempfail.test", "temp").encode())
        msgs = self.e.wait_messages(self.e.maildir("alice"), 3)
        self.assertFalse(any(b"Subject: spoofed" in x for x in msgs))
        q = [x for x in msgs if b"Subject: quarantined" in x][0]
        self.assertIn("dmarc=fail (p=quarantine dis=quarantine) header.from=quar.test", ar_of(q)[0])
        self.e.wait_log("reject: END-OF-MESSAGE from unknown[127.0.0.1]: 550 5.7.1 rejected by DMARC policy "
                        "for victim.test; from=<a@victim.test>")
        # without enforce (self.d) the same message is accepted with dmarc=fail: test_alignment's third party

    def test_own_authserv_id_removed_others_kept(self):
        before = len([l for l in self.d.output().splitlines() if "removed an Authentication-Results" in l])
        spoof = ("Authentication-Results: mx.example.test; dkim=pass header.d=bank.test\r\n"
                 "Authentication-Results:\r\n (folded, with a comment) MX.example.test.;\r\n dmarc=pass\r\n"
                 "Authentication-Results: other.example.net; spf=pass smtp.mailfrom=x.test\r\n")
        got = self.deliver(self.d, "a@nodmarc.test", message("a@nodmarc.test", "spoofed ar", extra=spoof))
        ar = ar_of(got)
        self.assertEqual(len(ar), 2, got[:1500])
        self.assertTrue(ar[0].startswith(" mx.example.test; dkim=none"), ar)   # ours
        self.assertEqual(ar[1], " other.example.net; spf=pass smtp.mailfrom=x.test")
        self.assertNotIn(b"bank.test", got)
        self.assertNotIn(b"folded, with a comment", got)
        self.assertEqual(len([l for l in self.d.output().splitlines()
                              if "removed an Authentication-Results: header claiming authserv-id" in l]), before + 2)

    def test_own_authserv_id_removed_across_bdat_chunks(self):
        """BDAT chunks may split a header's name: "Authentic" | "ation-Results: mx.example.test; ..."."""
        before = len([l for l in self.d.output().splitlines() if "removed an Authentication-Results" in l])
        head = ("Authentication-Results: mx.example.test; dkim=pass header.d=chunked.test\r\n"
                "Authorization-X: kept\r\n")
        msg = message("a@nodmarc.test", "bdat split", extra=head).encode()
        cut = msg.index(b"Authentication-Results") + len("Authentic")
        cut2 = msg.index(b"Authorization-X") + 3
        r = Raw(self.d.port)
        self.addCleanup(r.close)
        self.assertEqual(r.reply()[0], 220)
        self.assertEqual(r.cmd("EHLO client.example.test")[0], 250)
        self.assertEqual(r.cmd("MAIL FROM:<a@nodmarc.test>")[0], 250)
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[0], 250)
        for part, last in ((msg[:cut], False), (msg[cut:cut2], False), (msg[cut2:], True)):
            r.send(b"BDAT %d%s\r\n" % (len(part), b" LAST" if last else b"") + part)
            self.assertEqual(r.reply()[0], 250)
        r.cmd("QUIT")
        got = wait_for(lambda: [m for m in self.d.messages(self.d.maildir("alice")) if b"Subject: bdat split" in m],
                       15, "the BDAT message")
        self.assertEqual(len(got), 1)
        self.assertNotIn(b"chunked.test", got[0])
        self.assertIn(b"\nAuthorization-X: kept\n", got[0])
        self.d.wait_log("removed an Authentication-Results")
        after = [l for l in self.d.output().splitlines() if "removed an Authentication-Results" in l]
        self.assertEqual(len(after), before + 1)

    def test_trusted_clients_and_the_switches(self):
        """mynetworks: nothing checked, nothing removed (inside the ADMD); smtpd_dkim_verify = no and
        smtpd_dmarc = no from outside: no header added, ours still removed."""
        spoof = "Authentication-Results: mx.example.test; dkim=pass header.d=inside.test\r\n"
        m = self.msgs["pass rsa.test"].replace("Subject: pass rsa.test", "Subject: switches")
        for extra, added, kept in (("mynetworks = 127.0.0.0/8\n", False, True),
                                   ("smtpd_dkim_verify = no\nsmtpd_dmarc = no\n", False, False),
                                   ("smtpd_dkim_verify = no\n", True, False)):
            d = Daemon(extra, dns=self.dns, env={"FRUGAL_SPF_CLIENT_ADDR": IP})
            self.addCleanup(d.cleanup)
            d.start()
            got = self.deliver(d, "a@rsa.test", spoof + m)
            ar = ar_of(got)
            self.assertEqual(b"inside.test" in got, kept, extra)
            self.assertEqual(len(ar), int(added) + int(kept), (extra, ar))
            if added:   # DMARC alone: no dkim= (DKIM pass not used), SPF's pass aligns
                self.assertEqual(ar[0], " mx.example.test; spf=pass smtp.mailfrom=rsa.test; "
                                        "dmarc=pass (p=reject dis=none) header.from=rsa.test")

    def test_every_allocation_failure_in_a_verified_transaction(self):
        """SQLite's habit, as test_spf's sweep: each connection from 127.0.0.2 fails its N-th
        allocation after accept (FRUGAL_ALLOC_SWEEP_CLIENT), N = 1, 2, ... until one meets no
        failure, through a whole transaction of a message with two signatures (libopendkim's
        header and body work, the key lookups, SPF, DMARC, the late header). Documented outcomes
        only: 250 (then delivered with its one Authentication-Results:), 451, or a 421/drop; after
        each a clean client is served; the daemon stops cleanly (under ASan: no report)."""
        tmp = tempfile.mkdtemp(prefix="frugal-it-dmarchosts-")
        self.addCleanup(shutil.rmtree, tmp, True)
        hosts = os.path.join(tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.2 sweep-client.example.test\n127.0.0.1 clean-client.example.test\n")
        d = Daemon("", dns=self.dns, env={"FRUGAL_SPF_CLIENT_ADDR": IP, "FRUGAL_HOSTS_FILE": hosts,
                                          "FRUGAL_ALLOC_SWEEP_CLIENT": "127.0.0.2"}).start()
        self.addCleanup(d.cleanup)
        msg = self.msgs["sweep"].encode()

        def send(source, rcpt):
            return smtp_outcome(d.port, source, lambda c: (c.sendmail("a@rsa.test", [rcpt], msg), 250)[1])

        n, outcomes = alloc_sweep(self, d, lambda n: send("127.0.0.2", "alice@example.test"), 1500)
        self.assertEqual(send("127.0.0.1", "bob@example.test"), 250)
        got = d.wait_messages(d.maildir("bob"), 1)[0]
        self.assertIn("dkim=pass header.d=rsa.test", ar_of(got)[0])
        self.assertIn("dkim=pass header.d=ed.test", ar_of(got)[0])
        # every 250 of the sweep was delivered once, with its header
        mails = d.wait_messages(d.maildir("alice"), outcomes.get(250, 0))
        self.assertTrue(all(len(ar_of(m)) == 1 for m in mails))
        self.assertEqual(d.stop(), 0, d.output()[-3000:])
        print("\nfault sweep (DKIM/DMARC): %d allocation sites exercised; outcomes %s" % (n - 1, outcomes))
        self.assertGreater(n, 30)

    def test_fifty_signatures_bounded_and_nobody_waits(self):
        """50 signatures: 5 verified (one key lookup: they share the key), and while this message
        waits 1.5 s for its key another session completes a whole transaction."""
        m = self.msgs["fifty"]
        self.assertEqual(m.count("DKIM-Signature:"), 50)
        done = {}

        def slow():
            with smtplib.SMTP("127.0.0.1", self.d.port, timeout=30 * SLOW) as s:
                s.sendmail("a@many.test", ["bob@example.test"], m.encode())
            done["slow"] = time.monotonic()

        t0 = time.monotonic()
        th = threading.Thread(target=slow)
        th.start()
        wait_for(lambda: self.dns.count("m1._domainkey.many.test", "TXT") >= 1, 10, "the key lookup")
        fast = self.deliver(self.d, "a@nodmarc.test", message("a@nodmarc.test", "meanwhile"))
        t_fast = time.monotonic()
        th.join(30 * SLOW)
        self.assertIn("slow", done)
        self.assertIn(b"dkim=none", fast)
        # order of events: the other message was delivered while this one waited for its key
        self.assertLess(t_fast, done["slow"], "the other session waited for the slow key")
        self.assertGreater(done["slow"] - t0, 1.2)
        got = self.d.wait_messages(self.d.maildir("bob"), 1)[0]
        ar = ar_of(got)[0]
        self.assertEqual(ar.count("dkim=pass header.d=many.test header.s=m1"), 5, ar)
        self.assertIn("(45 more signatures not verified)", ar)
        self.assertIn("dmarc=pass", ar)
        self.assertEqual(self.dns.count("m1._domainkey.many.test", "TXT"), 1)


if __name__ == "__main__":
    unittest.main()
