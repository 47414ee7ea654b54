"""tests/integration/test_smtp_reuse.py: connection reuse in the SMTP and LMTP
client (queue/smtpc.c; Postfix's smtp_connection_cache_on_demand), against the
Python sink of test_smtp_client.py, which counts here every connection and
every command it gets. Many messages to one destination share a connection
(and with the cache off each has its own: the counting can fail); a cached
connection the peer dropped while idle, or that dies or says 421 at the MAIL
of its next job, costs that job a new connection, never a deferral; an idle
connection is closed after smtp_connection_cache_time_limit; different next
hops never share one; a stop with idle connections is quick and clean.
"""
import os
import re
import shutil
import smtplib
import tempfile
import time
import unittest

from harness import Daemon, wait_for, free_port, make_cert, SLOW
from test_smtp_client import PySink

MSG = "From: a@example.test\r\nSubject: reuse %d\r\n\r\nbody of message %d\r\n"


class Reader:
    """The sink's line reader: records each command with its connection and time, and can cut in."""

    def __init__(self, sink, conn, r, w):
        self.sink, self.conn, self.r, self.w = sink, conn, r, w
        self.in_data = False

    def readline(self):
        line = self.r.readline()
        if not line:
            return line
        s = self.sink
        if self.in_data:
            if line == b".\r\n":
                self.in_data = False
            return line
        verb = line[:4].upper().decode("ascii", "replace")
        with s.lock:
            s.log.append((self.conn, time.monotonic(), verb))
            done_here = sum(1 for m in s.msg_conn if m == self.conn)
        if verb == "DATA":
            self.in_data = True
        if verb == "MAIL" and done_here > 0 and s.on_reused_mail:
            how, s.on_reused_mail = s.on_reused_mail, None
            if how.startswith("421"):
                self.w.write(how.encode() + b"\r\n")
                self.w.flush()
            return b""          # the session ends: the connection closes under the client
        if verb == "RSET" and s.on_rset:
            how, s.on_rset = s.on_rset, None
            self.w.write(how.encode() + b"\r\n")
            self.w.flush()
            return b""          # answered (250: then closed while idle; 421: refused and closed)
        return line


class CountingSink(PySink):
    """PySink that counts connections and records commands; on_reused_mail: None, "drop" or a 421
    line for the first MAIL on a connection that already carried a message; on_rset: a reply to
    the first RSET after which the sink closes the connection."""

    def __init__(self, addr, **kw):
        self.connections = 0
        self.log = []             # (connection number, monotonic time, verb)
        self.msg_conn = []        # connection number of each message taken
        self.closed_at = {}       # connection number -> monotonic time the session ended
        self.on_reused_mail = None
        self.on_rset = None
        super().__init__(addr, **kw)

    def session(self, r, w, handler):
        with self.lock:
            self.connections += 1
            conn = self.connections
        reader = Reader(self, conn, r, w)
        try:
            PySink.session(self, _Track(reader, self, conn), w, handler)
        finally:
            with self.lock:
                self.closed_at[conn] = time.monotonic()

    def verbs(self, conn):
        with self.lock:
            return [v for c, _, v in self.log if c == conn]


class _Track:
    """Wraps the reader: a message counted by PySink (its '.' line answered) is tied to conn."""

    def __init__(self, reader, sink, conn):
        self.reader, self.sink, self.conn = reader, sink, conn

    def readline(self):
        # PySink appends a message after reading "." and before its next readline: count it here
        with self.sink.lock:
            while len(self.sink.msg_conn) < len(self.sink.messages):
                self.sink.msg_conn.append(self.conn)
        return self.reader.readline()


def tcp_client_sockets(port):
    """States (hex, /proc/net/tcp) of every local socket whose remote port is port."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port:
                out.append(fields[3])
    return out


class SmtpReuse(unittest.TestCase):
    def daemon(self, extra):
        d = Daemon("relay_domains = relay.test, other.test, lmtp.test\n"
                   "smtp_helo_timeout = 5s\nsmtp_connect_timeout = 5s\n" + extra).start()
        self.addCleanup(d.cleanup)
        return d

    def sink(self, addr, **kw):
        s = CountingSink(addr, **kw)
        self.addCleanup(s.stop)
        return s

    def send(self, d, rcpts, n=1, start=0):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW) as c:
            for i in range(start, start + n):
                c.sendmail("alice@example.test", rcpts, (MSG % (i, i)).encode())

    def sent(self, d, rcpt_re=r"[^>]+"):
        return len(re.findall(r"to=<%s>, relay=[^ ]+, (?:conn_use=\d+, )?delay=.*status=sent" % rcpt_re,
                              d.output()))

    def assert_no_deferral(self, d):
        log = d.output()
        self.assertNotIn("status=deferred", log)
        self.assertNotIn("delivery temporarily suspended", log)

    # (1) many messages, one connection
    def test_twenty_messages_one_connection(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_destination_concurrency_limit = 1\nsmtp_connection_cache_time_limit = 10s\n")
        self.send(d, ["u@relay.test"], n=20)
        wait_for(lambda: self.sent(d) == 20, 30, "20 deliveries logged")
        self.assertEqual(len(s.messages), 20)
        subjects = sorted(int(re.search(rb"Subject: reuse (\d+)", m[2]).group(1)) for m in s.messages)
        self.assertEqual(subjects, list(range(20)))           # each message once
        self.assertEqual(s.connections, 1)
        log = d.output()
        # every delivery names the relay as before; the reused ones say which use of the connection
        self.assertEqual(len(re.findall(rf"to=<u@relay\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{port}, "
                                        r"(conn_use=\d+, )?delay=[\d.]+, .*dsn=2\.0\.0, status=sent \(250 ", log)), 20)
        self.assertEqual(sorted(int(x) for x in re.findall(r"conn_use=(\d+)", log)), list(range(2, 21)))
        # one EHLO, 20 transactions, an RSET after each (the 20th waits idle)
        v = s.verbs(1)
        self.assertEqual(v.count("EHLO"), 1)
        self.assertEqual(v.count("MAIL"), 20)
        self.assertEqual(v.count("RSET"), 20)
        self.assert_no_deferral(d)

    def test_cache_off_one_connection_per_message(self):
        # the control: the same run without the cache; the connection count above can fail
        port = free_port()
        s = self.sink(("127.0.0.1", port))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_destination_concurrency_limit = 1\nsmtp_connection_cache_on_demand = no\n")
        self.send(d, ["u@relay.test"], n=5)
        wait_for(lambda: self.sent(d) == 5, 30, "5 deliveries logged")
        self.assertEqual(s.connections, 5)
        self.assertNotIn("conn_use=", d.output())
        self.assertNotIn("RSET", [v for _, _, v in s.log])

    def test_reuse_count_limit(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_destination_concurrency_limit = 1\nsmtp_connection_cache_time_limit = 10s\n"
                        "smtp_connection_reuse_count_limit = 2\n")
        self.send(d, ["u@relay.test"], n=6)
        wait_for(lambda: self.sent(d) == 6, 30, "6 deliveries logged")
        self.assertEqual(s.connections, 2)     # each connection: one use and two reuses
        self.assertEqual(len(s.messages), 6)

    def test_lmtp_reuse(self):
        tmp = tempfile.mkdtemp(prefix="frugal-lmtp-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "lmtp")
        s = self.sink(path, lmtp=True)
        d = self.daemon(f"transport_maps = inline:{{ lmtp.test=lmtp:unix:{path} }}\n"
                        "lmtp_destination_concurrency_limit = 1\nsmtp_connection_cache_time_limit = 10s\n")
        self.send(d, ["ok@lmtp.test"], n=4)
        wait_for(lambda: self.sent(d) == 4, 30, "4 LMTP deliveries logged")
        self.assertEqual(s.connections, 1)
        self.assertEqual(len(s.messages), 4)
        self.assertRegex(d.output(), rf"frugal/lmtp\[\d+\]: \w+: to=<ok@lmtp\.test>, relay=mx\.example\.test\[{path}\], "
                         r"conn_use=4, ")

    def test_tls_connection_reused(self):
        # STARTTLS once, then every message inside that TLS connection (the key holds the level)
        tmp = tempfile.mkdtemp(prefix="frugal-tls-")
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        s = self.sink(("127.0.0.1", port), tls=make_cert(tmp, "sink", "ec"))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_destination_concurrency_limit = 1\nsmtp_connection_cache_time_limit = 10s\n"
                        "smtp_tls_security_level = may\n")
        self.send(d, ["u@relay.test"], n=4)
        wait_for(lambda: self.sent(d) == 4, 30, "4 deliveries logged")
        self.assertEqual((s.connections, len(s.messages), s.tls_messages), (1, 4, 4))
        self.assertEqual(d.output().count("TLS connection established to"), 1)
        self.assert_no_deferral(d)

    # (2) a cached connection that died
    def two_messages_with(self, attr, value, want_retry_line):
        port = free_port()
        s = self.sink(("127.0.0.1", port))
        setattr(s, attr, value)
        # 60s: what closes or refreshes the connection below is the peer, never the idle timer
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_connection_cache_time_limit = 60s\n")
        self.send(d, ["u@relay.test"], n=1, start=0)
        wait_for(lambda: self.sent(d) == 1, 15, "first delivery")
        if attr == "on_rset":
            # the sink closed after its reply to RSET: wait until frugal has closed its side too
            # (no socket to the sink left established or half-closed), seen in the kernel's table
            wait_for(lambda: not [st for st in tcp_client_sockets(port) if st in ("01", "08")], 5,
                     "frugal to close the connection the sink ended")
        self.send(d, ["u@relay.test"], n=1, start=1)
        wait_for(lambda: self.sent(d) == 2, 15, "second delivery")
        self.assertEqual(len(s.messages), 2)
        self.assertEqual(s.connections, 2)
        self.assert_no_deferral(d)
        retry = re.findall(r"cached connection to 127\.0\.0\.1\[127\.0\.0\.1\]: (.*): trying a new connection",
                           d.output())
        self.assertEqual(len(retry), 1 if want_retry_line else 0, retry)
        # the second delivery went over a new connection: no conn_use on its line
        self.assertNotIn("conn_use=", d.output())
        return d, retry

    def test_peer_drops_cached_connection_at_mail(self):
        self.two_messages_with("on_reused_mail", "drop", True)

    def test_peer_answers_421_to_mail_after_idle(self):
        self.two_messages_with("on_reused_mail", "421 4.4.2 pysink: idle too long", True)

    def test_peer_closes_idle_connection(self):
        # the idle session sees the EOF and is dropped at once: the next job never tries it
        self.two_messages_with("on_rset", "250 2.0.0 Ok", False)

    def test_peer_answers_421_to_rset(self):
        self.two_messages_with("on_rset", "421 4.3.2 pysink: shutting down", False)

    # (3) the idle time limit
    def test_idle_connection_closed_after_time_limit(self):
        port = free_port()
        s = self.sink(("127.0.0.1", port))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
                        "smtp_connection_cache_time_limit = 2s\n")
        self.send(d, ["u@relay.test"])
        wait_for(lambda: "RSET" in s.verbs(1), 15, "the RSET that keeps the connection")
        t_rset = [t for c, t, v in s.log if c == 1 and v == "RSET"][0]
        wait_for(lambda: 1 in s.closed_at, 5, "the idle connection closed")
        idle = s.closed_at[1] - t_rset
        self.assertEqual(s.verbs(1)[-1], "QUIT")
        self.assertGreater(idle, 1.5)            # it was kept...
        self.assertLess(idle, 2 + 2 * SLOW)     # ...for the time limit, not longer
        self.assertEqual(len(s.messages), 1)

    # (4) keys
    def test_no_reuse_across_next_hops(self):
        p1, p2 = free_port(), free_port()
        s1 = self.sink(("127.0.0.1", p1))
        s2 = self.sink(("127.0.0.1", p2))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{p1}, "
                        f"other.test=smtp:[127.0.0.1]:{p2} }}\n"
                        "smtp_connection_cache_time_limit = 10s\n")
        for i in range(4):
            self.send(d, ["u@relay.test" if i % 2 == 0 else "u@other.test"], start=i)
            wait_for(lambda: self.sent(d) == i + 1, 15, "delivery %d" % i)
        self.assertEqual((s1.connections, s2.connections), (1, 1))
        self.assertEqual(sorted(int(re.search(rb"reuse (\d+)", m[2]).group(1)) for m in s1.messages), [0, 2])
        self.assertEqual(sorted(int(re.search(rb"reuse (\d+)", m[2]).group(1)) for m in s2.messages), [1, 3])
        self.assertTrue(all(m[1] == ["u@relay.test"] for m in s1.messages))
        self.assertTrue(all(m[1] == ["u@other.test"] for m in s2.messages))

    # (5) stop
    def test_stop_with_idle_connections(self):
        p1, p2 = free_port(), free_port()
        s1 = self.sink(("127.0.0.1", p1))
        s2 = self.sink(("127.0.0.1", p2))
        d = self.daemon(f"transport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{p1}, "
                        f"other.test=smtp:[127.0.0.1]:{p2} }}\n"
                        "smtp_connection_cache_time_limit = 60s\n")
        self.send(d, ["u@relay.test", "u@other.test"])
        wait_for(lambda: self.sent(d) == 2, 15, "both delivered")
        wait_for(lambda: "RSET" in s1.verbs(1) and "RSET" in s2.verbs(1), 10, "both connections kept")
        t0 = time.monotonic()
        rc = d.stop()
        took = time.monotonic() - t0
        self.assertEqual(rc, 0)
        self.assertLess(took, 5 * SLOW)
        # the idle connections were closed (QUIT written first) by the stop, not by a timer
        wait_for(lambda: 1 in s1.closed_at and 1 in s2.closed_at, 5, "the sinks see the connections end")
        self.assertEqual(s1.verbs(1)[-1], "QUIT")
        self.assertEqual(s2.verbs(1)[-1], "QUIT")
        log = d.output()
        self.assertNotIn("panic", log)
        self.assertNotIn("ERROR: AddressSanitizer", log)
        self.assertNotIn("LeakSanitizer", log)


if __name__ == "__main__":
    unittest.main()
