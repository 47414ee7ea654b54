"""tests/integration/test_crash.py: durability (PRODUCT.md 3.1) under SIGKILL.

10 concurrent clients inject 200 messages while the daemon is killed with
SIGKILL at random moments and restarted. A message counts as acknowledged
only when its client saw the 250 after end-of-DATA; a client whose
connection broke before that sends the message again (so duplicates are
possible and are counted). Afterwards every acknowledged message must be
in the Maildir: zero losses.

Duplicates have two causes, told apart by an X-Attempt header unique to
each sending: a client that resends a message whose 250 it never saw
(at most one per client per kill), and a redelivery, the same attempt
delivered twice, allowed only for a delivery in flight at the kill: at most
delivery_concurrency_limit per kill.
"""
import os
import random
import re
import smtplib
import socket
import threading
import time
import unittest

from harness import Daemon, wait_for, SLOW

CLIENTS = 10
MESSAGES = 200
KILLS = int(os.environ.get("FRUGAL_CRASH_KILLS", "6"))
CONCURRENCY = 4   # delivery_concurrency_limit


class CrashTest(unittest.TestCase):
    def test_sigkill_loses_nothing(self):
        seed = int(os.environ.get("FRUGAL_CRASH_SEED", str(int(time.time()))))
        rnd = random.Random(seed)
        d = Daemon(extra="smtpd_client_connection_count_limit = 100\n"
                         "delivery_concurrency_limit = %d\n" % CONCURRENCY)
        d.start()
        acked = set()
        lock = threading.Lock()
        up = threading.Event()
        up.set()
        stop_at = time.monotonic() + 240 * SLOW
        errors = []

        def client(cid):
            for i in range(MESSAGES // CLIENTS):
                token = "crash-%d-%d" % (cid, i)
                attempt = 0
                while time.monotonic() < stop_at:
                    attempt += 1
                    up.wait(30 * SLOW)
                    try:
                        with smtplib.SMTP("127.0.0.1", d.port, timeout=10 * SLOW) as s:
                            s.sendmail("c%d@example.org" % cid, ["alice@example.test"],
                                       "Subject: %s\r\nX-Token: %s\r\nX-Attempt: %s.%d\r\n\r\n%s\r\n"
                                       % (token, token, token, attempt, "x" * 2000))
                        with lock:
                            acked.add(token)
                        break
                    except (smtplib.SMTPException, OSError):
                        continue  # not acknowledged: send again
                else:
                    errors.append("client %d gave up on %s" % (cid, token))
                    return

        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        kills = 0
        # random moments: after a random number of acknowledged messages, so
        # that every kill lands while clients are mid-transaction
        thresholds = sorted(rnd.sample(range(5, MESSAGES - 5), KILLS))
        try:
            for th in thresholds:
                def reached():
                    with lock:
                        return len(acked) >= th or not any(t.is_alive() for t in threads)
                wait_for(reached, 120, "%d acknowledged messages" % th, interval=0.001)
                if not any(t.is_alive() for t in threads):
                    break
                up.clear()
                d.kill9()
                kills += 1
                d.start()
                up.set()
            for t in threads:
                t.join(timeout=300 * SLOW)
            self.assertFalse(errors, errors)
            self.assertEqual(len(acked), MESSAGES)
            maildir = d.maildir("alice")

            def delivered(pattern):
                seen = {}
                for m in d.messages(maildir):
                    mt = re.search(pattern, m)
                    if mt:
                        k = mt.group(1).decode()
                        seen[k] = seen.get(k, 0) + 1
                return seen
            wait_for(lambda: acked <= set(delivered(rb"X-Token: (crash-\d+-\d+)")), 120,
                     "every acknowledged message delivered", interval=0.2)
            # the last redeliveries: the queue empty and every delivery logged done
            wait_for(lambda: not os.listdir(os.path.join(d.queue, "committed")), 60, "the queue drained",
                     interval=0.05)
            seen = delivered(rb"X-Token: (crash-\d+-\d+)")
            attempts = delivered(rb"X-Attempt: (crash-\d+-\d+\.\d+)")
            lost = acked - set(seen)
            redelivered = sum(n - 1 for n in attempts.values())
            resent = sum(n - 1 for n in seen.values()) - redelivered
            print("\ncrash test: seed %d, %d kills, %d acknowledged, %d delivered, %d lost, "
                  "%d duplicates (%d resent by clients, %d redelivered)"
                  % (seed, kills, len(acked), len(seen), len(lost), resent + redelivered, resent, redelivered))
            self.assertEqual(lost, set())
            self.assertGreaterEqual(kills, 1)
            self.assertLessEqual(redelivered, CONCURRENCY * kills, "more redeliveries than deliveries in flight")
            self.assertLessEqual(resent, CLIENTS * kills, "more resent messages than transactions cut")
        finally:
            up.set()
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
