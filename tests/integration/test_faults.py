"""tests/integration/test_faults.py: allocation failure at every site of a
full SMTP transaction and its delivery (issue 3, SQLite's habit).

For N = 1, 2, ...: a fresh daemon whose N-th allocation after it starts
listening fails (FRUGAL_ALLOC_FAIL_AFTER_LISTEN=N). One client runs a
complete transaction. The documented outcomes are: 250 (then the message
must be delivered), or 421/451 for that client (then nothing was
acknowledged). Either way the daemon must go on serving: a second
transaction must succeed and be delivered, and the daemon must stop
cleanly (exit 0; under ASan any leak or error report fails the run).
The sweep ends at the first N where no allocation failed.

Under valgrind (make valgrind-check, FRUGAL_TEST_VALGRIND) the plain sweep still fails every
site (a daemon start, two transactions and a stop with its leak check: about 3.4 s a site there,
76 sites), and the TLS sweep samples every second site (FRUGAL_FAULT_TLS_STRIDE, default 2 there,
1 elsewhere; a handshake per site), so the file ends in under 10 minutes. The point there is that
the error paths a failed allocation takes are memcheck-clean and leak-free. FRUGAL_FAULT_STRIDE
samples the plain sweep too. FRUGAL_FAULT_FULL=1 fails every site.
"""
import os
import re
import smtplib
import unittest

from harness import Daemon, Raw, wait_for, make_cert, client_ctx, SLOW, VALGRIND

MAX_N = int(os.environ.get("FRUGAL_FAULT_MAX_N", "600"))
FULL = bool(os.environ.get("FRUGAL_FAULT_FULL"))
STRIDE = 1 if FULL else int(os.environ.get("FRUGAL_FAULT_STRIDE", "1"))
TLS_STRIDE = 1 if FULL else int(os.environ.get("FRUGAL_FAULT_TLS_STRIDE", "2" if VALGRIND else "1"))
MSG = "Subject: fault %d\r\nX-Fault: %d\r\n\r\nbody\r\n"


class Session(smtplib.SMTP):
    """smtplib.SMTP whose `with` ignores what QUIT gets: the transaction's code is the
    end-of-data reply (a 421 to the QUIT, when the 221 met the injected failure, would
    otherwise replace a 250 already received)."""

    def __exit__(self, *exc):
        try:
            self.quit()
        except (smtplib.SMTPException, OSError):
            pass
        self.close()


def transaction(port, n, rcpt="alice@example.test"):
    """Returns the final reply code the client saw (250, or the 4xx it got)."""
    try:
        with Session("127.0.0.1", port, timeout=15 * SLOW) as s:
            s.ehlo("fault.example.org")
            s.sendmail("f@example.org", [rcpt], MSG % (n, n))
            return 250
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    except smtplib.SMTPRecipientsRefused as e:
        return list(e.recipients.values())[0][0]
    except smtplib.SMTPSenderRefused as e:
        return e.smtp_code
    except smtplib.SMTPServerDisconnected:
        return 421


class FaultSweep(unittest.TestCase):
    def test_every_allocation_failure(self):
        outcomes = {}
        n = 1 - STRIDE
        while True:
            n += STRIDE
            self.assertLessEqual(n, MAX_N, "sweep did not end: more than %d allocations?" % MAX_N)
            d = Daemon(env={"FRUGAL_ALLOC_FAIL_AFTER_LISTEN": str(n)})
            try:
                d.start()
                code = transaction(d.port, n)
                self.assertIn(code, (250, 421, 451, 452), "N=%d: unexpected reply %s\n%s" % (n, code, d.output()))
                fired = d.log_has("fault injection: failing")
                # the daemon survives: a second transaction succeeds (retrying once
                # if it was the one that met the failure)
                code2 = transaction(d.port, 10000 + n)
                if code2 != 250:
                    code2 = transaction(d.port, 20000 + n)
                self.assertEqual(code2, 250, "N=%d: daemon did not recover\n%s" % (n, d.output()))
                want = 2 if code == 250 else 1
                d.wait_messages(d.maildir("alice"), want, timeout=20)
                rc = d.stop()
                self.assertEqual(rc, 0, "N=%d: exit %s\n%s" % (n, rc, d.output()))
                outcomes[code] = outcomes.get(code, 0) + 1
                if not fired:
                    break
            finally:
                d.cleanup()
        print("\nfault sweep: %d allocation sites, every %d exercised; outcomes %s" % (n - 1, STRIDE, outcomes))
        self.assertGreater(n, 10)


def tls_transaction(port, n, source):
    """A STARTTLS transaction from `source`: its final reply code, or what broke it."""
    import ssl
    ctx = client_ctx()
    try:
        with Session("127.0.0.1", port, timeout=15 * SLOW, source_address=(source, 0)) as s:
            code, _ = s.ehlo("fault.example.org")
            if code != 250:
                return code
            code, _ = s.starttls(context=ctx)   # returns a refusal, does not raise it
            if code != 220:
                return code
            code, _ = s.ehlo("fault.example.org")
            if code != 250:
                return code
            s.sendmail("f@example.org", ["alice@example.test"], MSG % (n, n))
            return 250
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    except smtplib.SMTPRecipientsRefused as e:
        return list(e.recipients.values())[0][0]
    except smtplib.SMTPNotSupportedError:
        return "no STARTTLS"        # the EHLO reply was cut short
    except (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLError):
        return "dropped"            # no memory for the TLS state mid-handshake: the connection ends


class Delivered:
    """The X-Fault numbers in a Maildir, read incrementally (each file once)."""

    def __init__(self, maildir):
        self.new = os.path.join(maildir, "new")
        self.seen, self.count = set(), {}

    def scan(self):
        if not os.path.isdir(self.new):
            return self.count
        for name in os.listdir(self.new):
            if name in self.seen:
                continue
            self.seen.add(name)
            with open(os.path.join(self.new, name), "rb") as f:
                m = re.search(rb"^X-Fault: (\d+)", f.read(), re.M)
            if m:
                k = int(m.group(1))
                self.count[k] = self.count.get(k, 0) + 1
        return self.count


class TLSFaultSweep(unittest.TestCase):
    """Every allocation of a STARTTLS transaction fails once, in one daemon:
    each connection from 127.0.0.2 fails its N-th allocation after accept
    (FRUGAL_ALLOC_SWEEP_CLIENT), N = 1, 2, ... until a transaction meets no
    failure. Documented outcomes only; after each, a clean transaction from
    127.0.0.1 must succeed; every 250 is delivered exactly once; the daemon
    stops cleanly (and under ASan without a leak).

    One allowance, reported: OpenSSL may allocate inside SSL_write, so the
    250 after a commit can be lost to a failed allocation as it can be lost
    to the network; that message is delivered once although its client saw
    no 250 (the client sends it again: a duplicate RFC 5321 section 6.1
    accepts). Plain sessions have no such window (the plain sweep above
    checks that strictly): the reply's room is reserved before the commit."""

    def test_every_allocation_failure_in_a_tls_transaction(self):
        import shutil
        import tempfile
        certdir = tempfile.mkdtemp(prefix="frugal-fault-tls-")
        self.addCleanup(shutil.rmtree, certdir, True)
        cert, key = make_cert(certdir, "mx", kind="ec")
        d = Daemon(extra="smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n" % (cert, key),
                   env={"FRUGAL_ALLOC_SWEEP_CLIENT": "127.0.0.2", "FRUGAL_ALLOC_SWEEP_STRIDE": str(TLS_STRIDE)})
        self.addCleanup(d.cleanup)
        d.start()
        got = Delivered(d.maildir("alice"))
        outcomes, acked, unacked = {}, set(), set()
        fired_before, n = 0, 0
        while True:
            n += 1
            self.assertLessEqual(n, 4 * MAX_N, "sweep did not end")
            code = tls_transaction(d.port, n, "127.0.0.2")
            self.assertIn(code, (250, 421, 451, 452, 454, "dropped", "no STARTTLS"),
                          "N=%d: unexpected outcome %s\n%s" % (n, code, d.output()[-3000:]))
            (acked if code == 250 else unacked).add(n)
            # the session is gone (and its failure disarmed) before the next client
            wait_for(lambda: "fault sweep: connection %d ended" % n in d.output(), 20,
                     "session %d to end" % n)
            fired = d.output().count("fault injection: failing")
            code2 = transaction(d.port, 100000 + n)
            self.assertEqual(code2, 250, "N=%d: daemon did not recover\n%s" % (n, d.output()[-3000:]))
            acked.add(100000 + n)
            outcomes[code] = outcomes.get(code, 0) + 1
            # deliveries allocate on the daemon's threads: let them finish so
            # the next connection's countdown counts its own allocations
            wait_for(lambda: (100000 + n) in got.scan() and (code != 250 or n in got.scan()), 30,
                     "delivery of transaction %d" % n)
            if fired == fired_before:
                break
            fired_before = fired
        self.assertEqual(d.stop(), 0, d.output()[-3000:])
        count = got.scan()
        for k in sorted(acked):
            self.assertEqual(count.get(k), 1, "acknowledged message %d delivered %s times" % (k, count.get(k, 0)))
        lost_250 = sorted(k for k in count if k not in acked)
        self.assertTrue(set(lost_250) <= unacked, lost_250)
        self.assertTrue(all(count[k] == 1 for k in lost_250), lost_250)
        print("\nfault sweep (TLS): %d allocation sites, every %d exercised; outcomes %s; "
              "queued but the 250 lost to a failed allocation in SSL_write: %d (N=%s)"
              % ((n - 1) * TLS_STRIDE, TLS_STRIDE, outcomes, len(lost_250), lost_250))
        self.assertGreater(n * TLS_STRIDE, 50)
        # seen: 4-5 of ~790 sites (OpenSSL's write buffer and a 40-byte record
        # allocation in SSL_write); a commit that lost its 250 elsewhere would
        # show up as many more
        self.assertLessEqual(len(lost_250), max(8, n // 100))


if __name__ == "__main__":
    unittest.main()
