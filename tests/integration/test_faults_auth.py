"""tests/integration/test_faults_auth.py: allocation failure at every site of
a submission transaction with AUTH (issue 18, SQLite's habit), as a mail
client runs it: EHLO, STARTTLS, EHLO, AUTH PLAIN (or LOGIN's two steps)
against smtpd_sasl_users (a hash `frugal passwd` wrote), MAIL, RCPT, DATA.

Each connection from 127.0.0.2 fails its N-th allocation after accept
(FRUGAL_ALLOC_SWEEP_CLIENT), N = 1, 2, ... until a transaction meets no
failure. Allowed: 250 (then delivered exactly once), a temporary refusal
(421, 451, 452, 454; nothing acknowledged) or a connection cut in the TLS
handshake. Never 535 for the right password: a false "authentication
failed" is logged as fail2ban's postfix-sasl filter matches it, and would
ban a legitimate user. After each, a clean AUTH transaction from 127.0.0.1
must succeed; the daemon stops cleanly (and under ASan without a leak).

The same with smtpd_sasl_type = dovecot against a real Dovecot (as root,
as test_auth.py starts it).
"""
import base64
import os
import smtplib
import ssl
import unittest

from harness import wait_for, client_ctx, SLOW, VALGRIND, alloc_sweep
import test_auth
from test_auth import PASSWORD
from test_faults import Session, Delivered, MAX_N, tls_transaction

# make check samples every STRIDE-th allocation (most of a TLS transaction's ~800 are in
# the handshake, which test_faults.py sweeps densely); FRUGAL_FAULT_FULL=1 fails every one.
# Under valgrind (make valgrind-check) every 4th: about 200 connections a sweep, each a TLS
# handshake memcheck makes slow (every 40th took 31 s for the file there, so the full sweeps
# would be about 20 minutes); the file stays under 10 minutes
STRIDE = 1 if os.environ.get("FRUGAL_FAULT_FULL") else int(os.environ.get("FRUGAL_FAULT_STRIDE",
                                                                            "4" if VALGRIND else "13"))

MSG = "From: alice@example.test\r\nSubject: auth fault %d\r\nX-Fault: %d\r\n\r\nbody\r\n"
USER = "alice@example.test"


def b64(s):
    return base64.b64encode(s.encode()).decode()


def auth_transaction(port, n, source, mech, password=PASSWORD):
    """EHLO, STARTTLS, EHLO, AUTH `mech`, one message: 250, or the code or event that ended it."""
    try:
        with Session("127.0.0.1", port, timeout=15 * SLOW, source_address=(source, 0)) as s:
            code, _ = s.ehlo("fault.example.org")
            if code != 250:
                return code
            code, _ = s.starttls(context=client_ctx())
            if code != 220:
                return code
            code, _ = s.ehlo("fault.example.org")
            if code != 250:
                return code
            if "auth" not in s.esmtp_features:
                return "no AUTH"        # the EHLO reply was cut short
            if mech == "PLAIN":
                code, _ = s.docmd("AUTH", "PLAIN " + b64("\0%s\0%s" % (USER, password)))
            else:
                code, _ = s.docmd("AUTH", "LOGIN")
                if code == 334:
                    code, _ = s.docmd(b64(USER))
                if code == 334:
                    code, _ = s.docmd(b64(password))
            if code != 235:
                return code
            s.sendmail(USER, ["bob@example.test"], MSG % (n, n))
            return 250
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    except smtplib.SMTPRecipientsRefused as e:
        return list(e.recipients.values())[0][0]
    except smtplib.SMTPNotSupportedError:
        return "no STARTTLS"
    except (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLError):
        return "dropped"


SWEEP_ENV = {"FRUGAL_ALLOC_SWEEP_CLIENT": "127.0.0.2", "FRUGAL_ALLOC_SWEEP_STRIDE": str(STRIDE)}
ALLOWED = (250, 421, 451, 452, 454, "dropped", "no STARTTLS", "no AUTH")


class AuthSweep:
    """The sweep, for a daemon made by self.sweep_daemon(); the port is submission's (587)."""

    def sweep(self, d, mech, limit):
        got = Delivered(d.maildir("bob"))           # the AUTH transactions' messages
        plain_got = Delivered(d.maildir("alice"))   # the port 25 checks'
        acked, unacked = set(), set()
        clean = [0]

        def attempt(n):
            return auth_transaction(self.sub, n, "127.0.0.2", mech)

        def after(n, code):
            (acked if code == 250 else unacked).add(n)
            clean[0] += 1
            k = 100000 + clean[0]
            if code in ("dropped", "no STARTTLS") and n % 10:
                # the failure was in the handshake, before AUTH: a cheaper check that the daemon
                # still serves (a password check costs 16 MiB and a tenth of a second)
                code2 = tls_transaction(d.port, k, "127.0.0.1")
                box = plain_got
            else:
                code2 = auth_transaction(self.sub, k, "127.0.0.1", mech)
                acked.add(k)
                box = got
            self.assertEqual(code2, 250, "N=%d (%s): the daemon did not recover\n%s" % (n, code, d.output()[-3000:]))
            # deliveries allocate on the daemon's threads: let them finish so the
            # next connection's countdown counts its own allocations
            wait_for(lambda: k in box.scan() and (code != 250 or n in got.scan()), 30,
                     "delivery of transaction %d" % n)

        n, outcomes = alloc_sweep(self, d, attempt, limit, after, ALLOWED)
        self.assertEqual(d.stop(), 0, d.output()[-3000:])
        count = got.scan()
        self.assertTrue(all(v == 1 for v in plain_got.scan().values()), plain_got.scan())
        for k in sorted(acked):
            self.assertEqual(count.get(k), 1, "acknowledged message %d delivered %s times" % (k, count.get(k, 0)))
        # OpenSSL may allocate inside SSL_write: a 250 lost after the commit (test_faults.py's allowance)
        lost_250 = sorted(k for k in count if k not in acked)
        self.assertTrue(set(lost_250) <= unacked, lost_250)
        self.assertTrue(all(count[k] == 1 for k in lost_250), lost_250)
        self.assertLessEqual(len(lost_250), max(8, n // 100))
        # a false "bad password" is logged as fail2ban reads it: never, for the right one
        lines = d.output().splitlines()
        bad = [i for i, l in enumerate(lines) if "authentication failed: authentication failure" in l]
        self.assertEqual(bad, [], "a failed login logged for the right password:\n" +
                         "\n---\n".join("\n".join(lines[max(0, i - 25):i + 3]) for i in bad[:3]))
        self.assertNotIn("535", str(outcomes))
        return n, outcomes, lost_250


class AuthFaultSweep(test_auth.AuthBase, AuthSweep):
    def daemon_for_sweep(self):
        return self.daemon(env=SWEEP_ENV)

    def run_sweep(self, mech):
        d = self.daemon_for_sweep()
        n, outcomes, lost = self.sweep(d, mech, 4 * MAX_N)
        print("\nfault sweep (AUTH %s, smtpd_sasl_users): %d allocation sites exercised (one in %s, of ~%d); "
              "outcomes %s; queued but the 250 lost to a failed allocation in SSL_write: %d"
              % (mech, n - 1, STRIDE, (n - 1) * STRIDE, outcomes, len(lost)))
        self.assertGreater(n * STRIDE, 500)
        return n

    def test_auth_plain_every_allocation_failure(self):
        self.run_sweep("PLAIN")

    def test_auth_login_every_allocation_failure(self):
        self.run_sweep("LOGIN")


class DovecotFaultSweep(test_auth.AuthBase, AuthSweep):
    # test_auth's Dovecot set-up, not its tests (a subclass would run them again)
    start_dovecot = test_auth.DovecotAuth.start_dovecot
    stop_dovecot = test_auth.DovecotAuth.stop_dovecot
    _ppid = test_auth.DovecotAuth.__dict__["_ppid"]

    def test_auth_plain_dovecot_every_allocation_failure(self):
        self.start_dovecot()
        d = self.daemon(users=(), extra="smtpd_sasl_type = dovecot\nsmtpd_sasl_path = %s\n" % self.dv_sock,
                        env=SWEEP_ENV)
        n, outcomes, lost = self.sweep(d, "PLAIN", 4 * MAX_N)
        print("\nfault sweep (AUTH PLAIN, Dovecot): %d allocation sites exercised (one in %s, of ~%d); "
              "outcomes %s; queued but the 250 lost to a failed allocation in SSL_write: %d"
              % (n - 1, STRIDE, (n - 1) * STRIDE, outcomes, len(lost)))
        self.assertGreater(n * STRIDE, 500)


if __name__ == "__main__":
    unittest.main()
