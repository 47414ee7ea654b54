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
"""
import os
import smtplib
import unittest

from harness import Daemon, Raw, wait_for, SLOW

MAX_N = int(os.environ.get("FRUGAL_FAULT_MAX_N", "600"))
MSG = "Subject: fault %d\r\nX-Fault: %d\r\n\r\nbody\r\n"


def transaction(port, n, rcpt="alice@example.test"):
    """Returns the final reply code the client saw (250, or the 4xx it got)."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=15 * SLOW) as s:
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
        n = 0
        while True:
            n += 1
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
        print("\nfault sweep: %d allocation sites exercised; outcomes %s" % (n - 1, outcomes))
        self.assertGreater(n, 10)


if __name__ == "__main__":
    unittest.main()
