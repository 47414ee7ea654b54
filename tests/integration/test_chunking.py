"""tests/integration/test_chunking.py: CHUNKING (RFC 3030): BDAT with and
without LAST, pipelined with other commands in one write, chunk size
against message_size_limit, the refusals that still read the chunk's
octets, line ends split between chunks, and DATA/MAIL/RCPT after BDAT.
Raw sockets: smtplib has no BDAT.
"""
import re
import socket
import unittest

from harness import Daemon, SLOW


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
        self.f = self.s.makefile("rb")
        self.reply()

    def send(self, data):
        self.s.sendall(data)

    def reply(self):
        """(code, last line)"""
        while True:
            line = self.f.readline()
            if not line:
                return None, ""
            text = line.decode(errors="replace").rstrip("\r\n")
            if line[3:4] != b"-":
                return int(text[:3]), text

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def close(self):
        self.s.close()


class Chunking(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(extra="message_size_limit = 100000\n").start()
        self.addCleanup(self.d.cleanup)

    def conn(self):
        c = Conn(self.d.port)
        self.addCleanup(c.close)
        c.send(b"EHLO c.example.org\r\n")
        self.assertEqual(c.reply()[0], 250)
        return c

    def delivered(self, n=1):
        return [m.decode(errors="replace") for m in self.d.wait_messages(self.d.maildir("alice"), n)]

    def test_ehlo_offers_chunking(self):
        c = Conn(self.d.port)
        self.addCleanup(c.close)
        c.send(b"EHLO c.example.org\r\n")
        lines = []
        while True:
            line = c.f.readline().decode()
            lines.append(line.strip())
            if line[3] == " ":
                break
        self.assertIn("250-CHUNKING", lines)

    def test_one_chunk_with_last(self):
        c = self.conn()
        body = b"Subject: bdat one\r\n\r\nline one\r\n.line starting with a dot\r\n"
        c.send(b"MAIL FROM:<b@example.org>\r\nRCPT TO:<alice@example.test>\r\nBDAT %d LAST\r\n" % len(body) + body)
        r = c.replies(3)
        self.assertEqual([x[0] for x in r], [250, 250, 250])
        self.assertRegex(r[2][1], r"250 2\.0\.0 Ok: queued as [0-9A-F]+")
        msg = self.delivered()[0]
        self.assertIn("\n.line starting with a dot\n", msg)   # no unstuffing in BDAT
        self.assertIn("with ESMTP id", msg)

    def test_pipelined_chunks_in_one_write(self):
        c = self.conn()
        p1, p2, p3 = b"Subject: bdat three\r\n\r\nfirst ", b"second\r\nthird line\r", b"\nlast line\r\n"
        c.send(b"MAIL FROM:<b@example.org>\r\nRCPT TO:<alice@example.test>\r\n"
               b"BDAT %d\r\n%sBDAT %d\r\n%sBDAT %d LAST\r\n%sQUIT\r\n"
               % (len(p1), p1, len(p2), p2, len(p3), p3))
        r = c.replies(6)
        self.assertEqual([x[0] for x in r], [250, 250, 250, 250, 250, 221], r)
        self.assertEqual(r[2][1], "250 2.0.0 Ok: %d bytes" % len(p1))
        self.assertRegex(r[4][1], r"queued as")
        msg = self.delivered()[0]
        # the CR that ended one chunk and the LF that began the next are one line end
        self.assertIn("\nfirst second\nthird line\nlast line\n", msg)

    def test_bdat_zero_last_and_bare_lf(self):
        c = self.conn()
        body = b"Subject: zero\n\nbare lf line\nno end"
        c.send(b"MAIL FROM:<b@example.org>\r\nRCPT TO:<alice@example.test>\r\nBDAT %d\r\n%sBDAT 0 LAST\r\n"
               % (len(body), body))
        r = c.replies(4)
        self.assertEqual([x[0] for x in r], [250, 250, 250, 250], r)
        msg = self.delivered()[0]
        self.assertTrue(msg.endswith("\nbare lf line\nno end\n"), repr(msg[-60:]))

    def test_refusals_read_the_chunk(self):
        c = self.conn()
        # no transaction: 503, and the five octets are not taken for a command
        c.send(b"BDAT 5\r\nNOOP\nNOOP\r\n")
        self.assertEqual(c.reply(), (503, "503 5.5.1 Error: need RCPT command"))
        self.assertEqual(c.reply()[0], 250)
        # a chunk over message_size_limit: 552, read to its end, the session goes on
        big = b"x" * 150000
        c.send(b"MAIL FROM:<b@example.org>\r\nRCPT TO:<alice@example.test>\r\nBDAT %d LAST\r\n" % len(big) + big
               + b"NOOP\r\n")
        r = c.replies(4)
        self.assertEqual([x[0] for x in r], [250, 250, 552, 250], r)
        self.assertEqual(r[2][1], "552 5.3.4 Chunk exceeds message size limit")
        # the transaction is over
        c.send(b"RCPT TO:<alice@example.test>\r\n")
        self.assertEqual(c.reply()[0], 503)

    def test_data_mail_rcpt_after_bdat(self):
        c = self.conn()
        c.send(b"MAIL FROM:<b@example.org>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3\r\nabc"
               b"DATA\r\nRCPT TO:<bob@example.test>\r\nMAIL FROM:<x@example.org>\r\nRSET\r\n")
        r = c.replies(7)
        self.assertEqual([x[1] for x in r[3:6]], ["503 5.5.1 Error: DATA after BDAT",
                                                  "503 5.5.1 Error: RCPT after BDAT",
                                                  "503 5.5.1 Error: MAIL after BDAT"])
        self.assertEqual(r[6][0], 250)   # RSET ends it
        c.send(b"MAIL FROM:<b@example.org>\r\n")
        self.assertEqual(c.reply()[0], 250)

    def test_bad_count(self):
        c = self.conn()
        for arg in (b"BDAT", b"BDAT x", b"BDAT 5 NOTLAST", b"BDAT -1", b"BDAT 12345678901234567890"):
            c.send(arg + b"\r\n")
            self.assertEqual(c.reply(), (501, "501 5.5.4 Syntax: BDAT count [LAST]"), arg)

    def test_many_small_chunks(self):
        c = self.conn()
        lines = [b"Subject: chunks\r\n", b"\r\n"] + [b"line %d\r\n" % i for i in range(200)]
        out = b"MAIL FROM:<b@example.org>\r\nRCPT TO:<alice@example.test>\r\n"
        for i, l in enumerate(lines):
            out += b"BDAT %d%s\r\n%s" % (len(l), b" LAST" if i == len(lines) - 1 else b"", l)
        c.send(out)
        r = c.replies(2 + len(lines))
        self.assertTrue(all(x[0] == 250 for x in r), [x for x in r if x[0] != 250][:3])
        msg = self.delivered()[0]
        self.assertEqual(len(re.findall(r"^line \d+$", msg, re.M)), 200)


if __name__ == "__main__":
    unittest.main()
