"""tests/integration/test_faults_tlsctx.py: allocation failure at every site
of building the server TLS context (issue 18), at `frugal reload` and at
start-up.

Reload: one daemon started with FRUGAL_ALLOC_SWEEP_TLS_RELOAD=k (smtpd/serve.c);
reload n fails the (1 + (n-1)k)-th allocation of tls_server_new. Before each
reload the certificate and key files are replaced by the other of two pairs, so
the certificate a client sees says which context serves. After each reload
either the reload failed cleanly (a "reload failed" line that says "out of
memory" and names smtpd_tls_cert_file or smtpd_tls_key_file) and the old certificate still serves,
or it succeeded and the new one serves; either way a STARTTLS transaction over
TLS 1.3 and a STARTTLS handshake over TLS 1.2 (frugal's own cipher list and
groups) succeed, and the message is delivered. The sweep ends at the first
reload that met no failure; the daemon then stops cleanly (under ASan without
a leak report).

Start-up: a daemon per N with FRUGAL_ALLOC_SWEEP_TLS_START=N (core/tls.c): the
first context built (as root the master's check of the configuration, alone the
daemon's own) fails its N-th allocation. Either `frugal serve` exits non-zero
with a fatal line that says "out of memory", or it serves STARTTLS with its
certificate; never a daemon whose handshakes fail.

make check samples every 73rd reload site and every 1,009th start-up site
(FRUGAL_FAULT_STRIDE, FRUGAL_FAULT_START_STRIDE); FRUGAL_FAULT_FULL=1 fails
every one (figures in DESIGN.md, "Server TLS context and refused allocations").
"""
import hashlib
import os
import re
import shutil
import signal
import smtplib
import ssl
import tempfile
import time
import unittest

from harness import Daemon, wait_for, make_cert, SLOW, VALGRIND

FULL = bool(os.environ.get("FRUGAL_FAULT_FULL"))
# a reload's context takes about 6,000 allocations (OpenSSL 3 fetches every algorithm for each
# SSL_CTX_new), the first one of a process about 15,000 (OpenSSL's own initialisation): make check
# samples every 73rd and every 1,009th (primes: the sample moves across OpenSSL's loops). 73 meets
# site 2,045, one of the six (2,043-2,048) where the code before the check kept a context that
# answered every TLS 1.2 handshake "no shared cipher": make check's sample is its negative control
STRIDE = 1 if FULL else int(os.environ.get("FRUGAL_FAULT_STRIDE", "499" if VALGRIND else "73"))
START_STRIDE = 1 if FULL else int(os.environ.get("FRUGAL_FAULT_START_STRIDE", "5003" if VALGRIND else "1009"))
LIMIT = 40000
MSG = "Subject: tlsctx %d\r\nX-Fault: %d\r\n\r\nbody\r\n"


def digest(cert_path):
    with open(cert_path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def starttls(port, n, tls12=False):
    """A STARTTLS session: with a message over TLS 1.3 (returns (250, certificate digest)),
    or a handshake and EHLO only over TLS 1.2. Anything else: (what broke, None)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=15 * SLOW) as s:
            s.ehlo("tlsctx.example.org")
            if not s.has_extn("starttls"):
                return "no STARTTLS", None
            code, text = s.starttls(context=ctx)
            if code != 220:
                return code, None
            der = s.sock.getpeercert(binary_form=True)
            version = s.sock.version()
            code, _ = s.ehlo("tlsctx.example.org")
            if code != 250:
                return code, None
            if tls12:
                if version != "TLSv1.2":
                    return version, None
            else:
                s.sendmail("f@example.org", ["alice@example.test"], MSG % (n, n))
            return 250, hashlib.sha256(der).hexdigest()
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as e:
        return "%s: %s" % (type(e).__name__, e), None


def summary(problems):
    """The problems grouped by kind (paths and N taken out): its N, first few, and how many."""
    kinds = {}
    for p in problems:
        n, _, what = p.partition(": ")
        what = re.sub(r"/tmp/\S+", "PATH", what)
        kinds.setdefault(what, []).append(n)
    return "\n".join("%d x %s (%s%s)" % (len(ns), what, ", ".join(ns[:8]), ", ..." if len(ns) > 8 else "")
                     for what, ns in kinds.items())


class Tail:
    """What the daemon logged since the last call (the whole log grows by megabytes in a full
    sweep: reading it all at each step made the sweep quadratic)."""

    def __init__(self, d):
        self.paths = [os.path.join(d.dir, "stderr"), d.log]
        self.pos = {p: 0 for p in self.paths}
        self.buf = ""

    def more(self):
        """Everything new since the last call that returned something (kept until then)."""
        for p in self.paths:
            try:
                with open(p, errors="replace") as f:
                    f.seek(self.pos[p])
                    self.buf += f.read()
                    self.pos[p] = f.tell()
            except OSError:
                pass
        return self.buf

    def take(self):
        out, self.buf = self.buf, ""
        return out


def install(pair, live):
    """The pair's certificate and key in place of the live files (each by rename: a reload
    never reads half a file)."""
    for src, dst in zip(pair, live):
        tmp = dst + ".new"
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.rename(tmp, dst)


class ServerContextSweep(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="frugal-fault-tlsctx-")
        os.chmod(self.tmp, 0o755)   # the daemon (mail_owner) reads the files itself when alone
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.a = make_cert(self.tmp, "a", kind="ec")
        self.b = make_cert(self.tmp, "b", kind="ec")
        self.live = (os.path.join(self.tmp, "live.crt"), os.path.join(self.tmp, "live.key"))
        install(self.a, self.live)
        self.conf = "smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n" % self.live

    def serves(self, d, n, want):
        """STARTTLS works over 1.3 (a message) and 1.2, with the certificate `want`: (None or what
        is wrong, whether the message went)."""
        code, got = starttls(d.port, n)
        if code != 250:
            return "STARTTLS transaction: %s" % (code,), False
        if got != want:
            return "the wrong certificate serves", True
        code, got = starttls(d.port, n, tls12=True)
        if code != 250:
            return "STARTTLS over TLS 1.2: %s" % (code,), True
        if got != want:
            return "the wrong certificate serves (TLS 1.2)", True
        return None, True

    def check_serves(self, d, n, want):
        wrong, _ = self.serves(d, n, want)
        self.assertIsNone(wrong, "N=%d: %s\n%s" % (n, wrong, d.output()[-3000:]))

    def test_reload(self):
        d = Daemon(self.conf, env={"FRUGAL_ALLOC_SWEEP_TLS_RELOAD": str(STRIDE)})
        self.addCleanup(d.cleanup)
        d.start()
        pairs = (self.a, self.b)
        serving = digest(self.a[0])
        self.check_serves(d, 0, serving)
        sent, outcomes, problems, n, t0 = 1, {}, [], 0, time.monotonic()
        tail = Tail(d)
        while True:
            n += 1
            self.assertLessEqual(n, LIMIT, "sweep did not end")
            new = pairs[n % 2]
            install(new, self.live)
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: (lambda o: "reload -- version" in o or "reload failed" in o)(tail.more()), 15,
                     "reload %d" % n)
            log = tail.take()
            fired = "fault injection: failing" in log
            if "reload failed" in log:
                line = log[log.index("reload failed"):].split("\n", 1)[0]
                if not fired:
                    problems.append("N=%d: a reload failed with no failure injected: %s" % (n, line))
                elif "out of memory" not in line:
                    problems.append("N=%d: the line does not say out of memory: %s" % (n, line))
                elif not re.search("smtpd_tls_(cert|key)_file", line):
                    problems.append("N=%d: the line does not name the file: %s" % (n, line))
                outcome = "kept the old context"
            else:
                serving = digest(new[0])
                outcome = "new context"
            wrong, went = self.serves(d, n, serving)
            sent += went
            if wrong:
                # a broken context in service: the next reload replaces it, the sweep goes on
                problems.append("N=%d: %s after a reload that %s" % (n, wrong, outcome))
                outcome += " (broken)"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            self.assertLess(len(problems), 50 if not FULL else 5000, summary(problems))
            if not fired:
                break
        d.wait_messages(d.maildir("alice"), sent, timeout=30)
        self.assertEqual(d.stop(), 0, d.output()[-3000:])
        print("\nfault sweep: server TLS context at reload: %d allocation sites, every %d exercised, %.1f s; %s"
              % (1 + (n - 1) * STRIDE, STRIDE, time.monotonic() - t0, outcomes))
        self.assertEqual(problems, [], summary(problems))
        self.assertIn("kept the old context", outcomes)
        self.assertGreater(1 + (n - 1) * STRIDE, 1000)   # the sweep reached into OpenSSL

    def test_start(self):
        want = digest(self.a[0])
        outcomes, problems, n, t0 = {}, [], 1 - START_STRIDE, time.monotonic()
        while True:
            n += START_STRIDE
            self.assertLessEqual(n, LIMIT, "sweep did not end")
            d = Daemon(self.conf, env={"FRUGAL_ALLOC_SWEEP_TLS_START": str(n)})
            try:
                d.start(wait=False)

                def settled():
                    if d.proc.poll() is not None:
                        return "exit"
                    return "started" if d.log_has("daemon started") else None
                state = wait_for(settled, 30, "N=%d: start or exit" % n)
                fired = d.log_has("fault injection: failing")
                if state == "exit":
                    rc = d.proc.returncode
                    fatal = [line for line in d.output().splitlines() if "fatal" in line]
                    if rc == 0 or not fired or not fatal or "out of memory" not in fatal[-1]:
                        problems.append("N=%d: exit %s (%s): %s" % (n, rc, "a failure injected" if fired else
                                                                     "no failure injected", fatal))
                    outcome = "refused to start"
                else:
                    d.wait_listening()
                    wrong, _ = self.serves(d, n, want)
                    if wrong:
                        problems.append("N=%d: started, and %s" % (n, wrong))
                    rc = d.stop()
                    if rc != 0:
                        problems.append("N=%d: exit %s at the stop" % (n, rc))
                    outcome = "serves" + (" (broken)" if wrong else "")
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            finally:
                d.stop()
                d.cleanup()
            if not fired:
                break
        print("\nfault sweep: server TLS context at start: %d allocation sites, every %d exercised, %.1f s; %s"
              % (n, START_STRIDE, time.monotonic() - t0, outcomes))
        self.assertEqual(problems, [], summary(problems))
        self.assertIn("refused to start", outcomes)


if __name__ == "__main__":
    unittest.main()
