"""tests/integration/test_sendmail.py: local submission (issue 15): the binary
invoked as sendmail/mailq/newaliases, the set-group-ID helper frugal-postdrop,
the maildrop and the daemon's pickup, with the daemon running and stopped.

Who submits: as root, the test runs sendmail as nobody (setuid in the child)
and installs its own copy of frugal-postdrop set-group-ID `mail` (a group
nobody is not in), with `setgid_group = mail`: the maildrop is then root:mail
1730 and nobody can write it only through the helper. Unprivileged, the test
user is the daemon's mail_owner and the submitter at once: the maildrop is
its own (mode 1730, its primary group) and the helper is a plain copy.
"""
import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest

from harness import Daemon, wait_for, SLOW, FRUGAL, frugal_for_others

ROOT_RUN = os.getuid() == 0
POSTDROP = os.path.join(os.path.dirname(os.path.abspath(FRUGAL)), "frugal-postdrop")


def submitter():
    """preexec_fn that becomes nobody when we are root; None otherwise."""
    if not ROOT_RUN:
        return None
    pw = pwd.getpwnam("nobody")

    def become():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return become


def submitter_uid():
    return pwd.getpwnam("nobody").pw_uid if ROOT_RUN else os.getuid()


class Base(unittest.TestCase):
    extra = ""

    def setUp(self):
        self.d = Daemon(extra=self.extra + ("setgid_group = mail\n" if ROOT_RUN else ""))
        os.chmod(self.d.dir, 0o755)   # nobody reads frugal.conf and runs the helper from here
        self.bin = os.path.join(self.d.dir, "bin")
        with open(os.path.join(self.d.dir, "frugal.conf"), "a") as f:
            f.write("command_directory = %s\n" % self.bin)
        os.mkdir(self.bin)
        helper = os.path.join(self.bin, "frugal-postdrop")
        shutil.copy(POSTDROP, helper)
        if ROOT_RUN:
            os.chown(helper, 0, grp.getgrnam("mail").gr_gid)
            os.chmod(helper, 0o2755)
        for name in ("sendmail", "mailq", "newaliases", "sendmail.frugal"):
            os.symlink(frugal_for_others(), os.path.join(self.bin, name))
        self.maildrop = os.path.join(self.d.queue, "maildrop")

    def tearDown(self):
        self.d.cleanup()

    def sendmail(self, *args, input=b"", name="sendmail", timeout=20, as_caller=False):
        """as_caller: as the test's own user (the queue's owner), not nobody"""
        return subprocess.run([os.path.join(self.bin, name), "-C", self.d.dir] + list(args),
                              input=input, capture_output=True, timeout=timeout * SLOW,
                              preexec_fn=None if as_caller else submitter())

    def lay_out(self):
        """The queue exists once the daemon ran: start it and stop it."""
        self.d.start()
        self.d.stop()

    def body(self, msg):
        return msg.split(b"\n\n", 1)[1]


class Running(Base):
    extra = "defer_transports = relay\n"

    def setUp(self):
        super().setUp()
        self.d.start()

    def test_t_to_cc_bcc(self):
        msg = (b"To: Alice <alice@localhost>\nCc: bob\nBcc: carol@virt.test,\n dave@virt.test\n"
               b"Subject: t\n\nhello\n")
        r = self.sendmail("-t", "-i", input=msg)
        self.assertEqual(r.returncode, 0, r.stderr)
        a = self.d.wait_messages(self.d.maildir("alice"), 1)[0]
        b = self.d.wait_messages(self.d.maildir("bob"), 1)[0]
        c = self.d.wait_messages(self.d.vmaildir("virt.test/carol/"), 1)[0]
        e = self.d.wait_messages(self.d.vmaildir("virt.test/dave/"), 1)[0]   # on the folded line
        for m in (a, b, c, e):
            self.assertNotIn(b"Bcc:", m)           # removed, though carol and dave got it
            self.assertNotIn(b"\n dave@virt.test", m)   # nor its folded line
            self.assertIn(b"\nCc: bob\n", m)
            self.assertRegex(m, rb"\nMessage-ID: <\d{14}\.[0-9A-F]+@mx\.example\.test>\n")
            self.assertRegex(m, rb"\nDate: \w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
            self.assertIn(b"from userid %d)" % submitter_uid(), m)
        login = pwd.getpwuid(submitter_uid()).pw_name.encode()
        self.assertIn(b"\nFrom: ", a)
        self.assertIn(b"<" + login + b"@mx.example.test>", a.split(b"\nFrom: ", 1)[1].split(b"\n")[0])
        self.assertIn(b"Return-Path: <" + login + b"@mx.example.test>", a)
        self.d.wait_log("uid=%d from=<" % submitter_uid())

    def test_f_and_F(self):
        r = self.sendmail("-f", "jane@example.org", "-F", "Jane Doe", "alice@localhost",
                          input=b"Subject: f\n\nx\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.d.wait_messages(self.d.maildir("alice"), 1)[0]
        self.assertIn(b"Return-Path: <jane@example.org>", m)
        self.assertIn(b"\nFrom: Jane Doe <jane@example.org>\n", m)
        # -r is -f; a From: given is kept as it is
        r = self.sendmail("-r", "joe@example.org", "bob", input=b"From: Other <o@example.org>\n\nx\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.d.wait_messages(self.d.maildir("bob"), 1)[0]
        self.assertIn(b"Return-Path: <joe@example.org>", m)
        self.assertIn(b"\nFrom: Other <o@example.org>\n", m)
        self.assertEqual(m.count(b"\nFrom:"), 1)

    def test_dot_handling(self):
        text = b"Subject: dots\n\nbefore\n.\nafter\n..two\n"
        r = self.sendmail("alice@localhost", input=text)          # a lone "." ends the message
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.d.wait_messages(self.d.maildir("alice"), 1)[0]
        self.assertEqual(self.body(m), b"before\n")
        for opt in ("-i", "-oi"):
            r = self.sendmail(opt, "bob@localhost", input=text)   # the dot is data
            self.assertEqual(r.returncode, 0, r.stderr)
        for m in self.d.wait_messages(self.d.maildir("bob"), 2):
            self.assertEqual(self.body(m), b"before\n.\nafter\n..two\n")
        # CRLF input is stored with LF line ends
        r = self.sendmail("-i", "carol@virt.test", input=b"Subject: crlf\r\n\r\nline\r\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.d.wait_messages(self.d.vmaildir("virt.test/carol/"), 1)[0]
        self.assertEqual(self.body(m), b"line\n")

    def test_bs_smtp_over_a_pipe(self):
        p = subprocess.Popen([os.path.join(self.bin, "sendmail"), "-C", self.d.dir, "-bs"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=submitter())
        watchdog = threading.Timer(8 * SLOW, p.kill)   # a hung dialogue fails, never blocks
        watchdog.start()

        def reply():
            lines = []
            while True:
                line = p.stdout.readline()
                if not line:
                    self.fail("sendmail -bs closed: %r" % p.stderr.read())
                lines.append(line)
                if line[3:4] != b"-":
                    return b"".join(lines)

        def cmd(line):
            p.stdin.write(line + b"\r\n")
            p.stdin.flush()
            return reply()
        try:
            self.assertTrue(reply().startswith(b"220 "))
            self.assertIn(b"250 ", cmd(b"EHLO client.example"))
            self.assertTrue(cmd(b"RCPT TO:<alice@localhost>").startswith(b"503"))
            self.assertTrue(cmd(b"MAIL FROM:<s@example.org>").startswith(b"250"))
            self.assertTrue(cmd(b"RCPT TO:<alice@localhost>").startswith(b"250"))
            self.assertTrue(cmd(b"RCPT TO:<bob@localhost>").startswith(b"250"))
            self.assertTrue(cmd(b"DATA").startswith(b"354"))
            self.assertTrue(cmd(b"Subject: bs\r\n\r\n..stuffed\r\nplain\r\n.").startswith(b"250"))
            # a second transaction on the same session
            self.assertTrue(cmd(b"MAIL FROM:<>").startswith(b"250"))
            self.assertTrue(cmd(b"RCPT TO:<carol@virt.test>").startswith(b"250"))
            self.assertTrue(cmd(b"DATA").startswith(b"354"))
            self.assertTrue(cmd(b"Subject: two\r\n\r\nsecond\r\n.").startswith(b"250"))
            self.assertTrue(cmd(b"QUIT").startswith(b"221"))
            self.assertEqual(p.wait(timeout=10 * SLOW), 0)
        finally:
            watchdog.cancel()
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdin.close()
            p.stdout.close()
            p.stderr.close()
        for box in ("alice", "bob"):
            m = self.d.wait_messages(self.d.maildir(box), 1)[0]
            self.assertIn(b"Return-Path: <s@example.org>", m)
            self.assertEqual(self.body(m), b".stuffed\nplain\n")
        m = self.d.wait_messages(self.d.vmaildir("virt.test/carol/"), 1)[0]
        self.assertEqual(self.body(m), b"second\n")

    def test_bp_mailq_and_links(self):
        # the queue is mail_owner's (0700): mailq as the queue's owner or root, as `frugal queue`
        r = self.sendmail("-bp", as_caller=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"Mail queue is empty", r.stdout)
        # relay.test mail is held (defer_transports): it stays queued to be listed
        r = self.sendmail("-f", "q@example.org", "someone@relay.test", input=b"Subject: q\n\nq\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.d.wait_log("status=deferred")
        for args, name in ((["-bp"], "sendmail"), ([], "mailq")):
            r = self.sendmail(*args, name=name, as_caller=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, rb"(?m)^[0-9A-F]{10,}\s+\d+\s+\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d  q@example\.org$")
            self.assertRegex(r.stdout, rb"(?m)^\s{10,}someone@relay\.test$")
            self.assertRegex(r.stdout, rb"-- \d+ Kbytes in 1 Request\.")
        # newaliases rebuilds alias_maps' cdb from its text
        cdb = os.path.join(self.d.dir, "aliases.cdb")
        with open(os.path.join(self.d.dir, "aliases"), "a") as f:
            f.write("newalias: bob\n")
        r = subprocess.run([os.path.join(self.bin, "newaliases"), "-C", self.d.dir],
                           capture_output=True, timeout=20 * SLOW)   # the admin's command: as the caller
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(cdb, "rb") as f:
            self.assertIn(b"newalias", f.read())
        r = self.sendmail("-bi", as_caller=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_other_names(self):
        # Debian's alternatives name a second MTA's binary sendmail.NAME: still sendmail
        r = self.sendmail("-t", "-i", name="sendmail.frugal", input=b"To: alice@localhost\nSubject: alt\n\nx\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"Subject: alt", self.d.wait_messages(self.d.maildir("alice"), 1)[0])
        # an invocation frugal does not know says "not taken, try again" (75), never 1
        r = subprocess.run([FRUGAL, "alice@localhost"], input=b"x\n", capture_output=True, timeout=20 * SLOW)
        self.assertEqual(r.returncode, 75)
        self.assertIn(b"nothing was queued", r.stderr)

    def test_options_of_cron_php_git(self):
        # what callers pass: accepted and ignored as Postfix does
        r = self.sendmail("-odi", "-oem", "-oQ/tmp", "-oi", "-i", "-v", "-em", "-B", "8BITMIME",
                          "-N", "never", "-h", "10", "-U", "--", "alice@localhost",
                          input=b"Subject: opts\n\nx\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"queued", r.stderr)   # -v says what it did
        self.d.wait_messages(self.d.maildir("alice"), 1)
        r = self.sendmail("-Z", "alice@localhost", input=b"x\n")
        self.assertEqual(r.returncode, 64)
        self.assertIn(b"unknown option -Z", r.stderr)
        r = self.sendmail("-bv", "alice@localhost")
        self.assertEqual(r.returncode, 64)
        r = self.sendmail("-t", input=b"Subject: nobody\n\nx\n")
        self.assertEqual(r.returncode, 64)
        self.assertIn(b"no recipient", r.stderr)
        r = self.sendmail("-q", as_caller=True)   # signals the daemon: its owner or root
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"flush requested", r.stdout)

    def test_corrupt_drop_file_set_aside(self):
        # the owner of the maildrop (root, or the test user) plants files the helper would never write
        bad = {"1.2.bad": b"FRUGAL-DROP1\nS a@b\nR c@d\nD 99\nshort",
               "1.3.bad": b"garbage\n",
               "1.4.bad": b"FRUGAL-DROP1\nS a@b\nR c\x01@d\nZ\n"}
        for name, data in bad.items():
            with open(os.path.join(self.maildrop, name), "wb") as f:
                f.write(data)
        for name in bad:
            self.d.wait_log("maildrop/%s: " % name)
        wait_for(lambda: not [n for n in os.listdir(self.maildrop) if n in bad], 5, "the maildrop emptied")
        aside = os.listdir(os.path.join(self.d.queue, "corrupt"))
        for name in bad:
            self.assertIn("maildrop." + name, aside)
        # the daemon goes on: a good message after them is delivered
        r = self.sendmail("alice@localhost", input=b"Subject: good\n\nok\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.d.wait_messages(self.d.maildir("alice"), 1)
        self.assertIsNone(self.d.proc.poll())

    def test_maildrop_only_through_the_helper(self):
        if not ROOT_RUN:
            self.skipTest("needs root: unprivileged, the submitter owns the maildrop (see the module doc)")
        st = os.stat(self.maildrop)
        self.assertEqual(st.st_mode & 0o7777, 0o1730)
        self.assertEqual(st.st_gid, grp.getgrnam("mail").gr_gid)
        # nobody itself can neither write nor list it ...
        r = subprocess.run(["python3", "-c", "open(%r, 'w')" % os.path.join(self.maildrop, "x")],
                           capture_output=True, preexec_fn=submitter(), timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"PermissionError", r.stderr)
        # ... and the helper refuses a directory that is no maildrop
        r = subprocess.run([os.path.join(self.bin, "frugal-postdrop"), "/tmp"], input=b"",
                           capture_output=True, preexec_fn=submitter(), timeout=20)
        self.assertEqual(r.returncode, 75)
        self.assertIn(b"not a maildrop directory", r.stderr)


class MailqAnyUser(Base):
    """mailq for a user who may not read the queue: a request through
    frugal-postdrop -q, answered by the daemon in status/mailq."""
    extra = "defer_transports = relay\n"

    def setUp(self):
        super().setUp()
        self.d.start()
        self.snapshot = os.path.join(self.d.queue, "status", "mailq")

    def requests_left(self):
        return [n for n in os.listdir(self.maildrop) if n.startswith("mailq.") or n.startswith(".tmp.mailq.")]

    def queue_two_one_held(self):
        for who in ("a", "b"):
            r = self.sendmail("-f", "q@example.org", "%s@relay.test" % who, input=b"Subject: q\n\nq\n")
            self.assertEqual(r.returncode, 0, r.stderr)
        out = wait_for(lambda: (lambda o: len(re.findall(r"(?m)^[0-9A-F]{10,} ", o)) == 2 and o)(
            subprocess.run([FRUGAL, "queue", "-c", self.d.dir, "list"], capture_output=True, text=True,
                           timeout=20 * SLOW).stdout), 10, "two queued")
        qid = re.findall(r"(?m)^([0-9A-F]{10,}) ", out)[0]
        r = subprocess.run([FRUGAL, "queue", "-c", self.d.dir, "hold", qid], capture_output=True, timeout=20 * SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        return qid

    def test_nobody_lists_like_the_owner(self):
        if not ROOT_RUN:
            self.skipTest("needs root: unprivileged, the test user owns the queue and lists it directly")
        held = self.queue_two_one_held()
        # control: nobody cannot read the queue itself (else this would test the direct path)
        r = subprocess.run(["python3", "-c", "import os; os.listdir(%r)" % os.path.join(self.d.queue, "committed")],
                           capture_output=True, preexec_fn=submitter(), timeout=20)
        self.assertIn(b"PermissionError", r.stderr)
        owner = self.sendmail("-bp", as_caller=True)
        self.assertEqual(owner.returncode, 0, owner.stderr)
        self.assertRegex(owner.stdout, rb"(?m)^%s!\s" % held.encode())
        self.assertRegex(owner.stdout, rb"-- \d+ Kbytes in 2 Requests\.")
        for args, name in (([], "mailq"), (["-bp"], "sendmail")):
            t0 = time.monotonic()
            r = self.sendmail(*args, name=name)
            took = time.monotonic() - t0
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, owner.stdout)   # the same listing, byte for byte
            self.assertLess(took, 5 * SLOW)
            print("\nmailq as nobody through the daemon (%s): %.3f s" % (name, took))
        st = os.stat(self.snapshot)
        self.assertEqual(st.st_mode & 0o777, 0o644)
        wait_for(lambda: not self.requests_left(), 5, "no request left in the maildrop")
        self.assertIsNone(self.d.proc.poll())

    def test_burst_of_requests_coalesced(self):
        # the helper's request mode directly (as nobody when root): 20 requests, few listings
        helper = os.path.join(self.bin, "frugal-postdrop")
        for _ in range(20):
            r = subprocess.run([helper, "-q", self.maildrop], capture_output=True,
                               preexec_fn=submitter(), timeout=20 * SLOW)
            self.assertEqual(r.returncode, 0, r.stderr)
        t_last = time.time()
        wait_for(lambda: not self.requests_left(), 5 * SLOW, "the requests taken")
        wait_for(lambda: os.path.exists(self.snapshot) and os.stat(self.snapshot).st_mtime >= t_last - 0.02,
                 5 * SLOW, "a listing after the last request")
        n = self.d.output().count("mailq listing written")
        print("\nmailq: 20 requests, %d listings written" % n)
        self.assertGreaterEqual(n, 1)
        self.assertLessEqual(n, 4, "20 requests, %d listings" % n)
        with open(self.snapshot) as f:
            self.assertIn("Mail queue is empty", f.read())
        # a request file the helper would not write goes aside like any foreign file
        with open(os.path.join(self.maildrop, "mailq.1.2"), "wb") as f:
            f.write(b"FRUGAL-MAILQ1\nmore\n")
        self.d.wait_log("maildrop/mailq.1.2: not a mailq request")
        self.assertIn("maildrop.mailq.1.2", os.listdir(os.path.join(self.d.queue, "corrupt")))
        self.assertIsNone(self.d.proc.poll())

    def test_daemon_down_exits_69(self):
        if not ROOT_RUN:
            self.skipTest("needs root: unprivileged, the test user owns the queue and lists it directly")
        self.queue_two_one_held()
        self.d.stop()
        r = self.sendmail(name="mailq")
        self.assertEqual(r.returncode, 69, r.stderr)
        self.assertIn(b"mailq: fatal: Queue report unavailable - mail system is down", r.stderr)
        self.assertEqual(self.requests_left(), [])
        # the queue's owner still reads the queue itself
        r = self.sendmail("-bp", as_caller=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, rb"-- \d+ Kbytes in 2 Requests\.")


class HoldRelease(Base):
    # local mail waits for a flush: what is held must then stay, what is not must go
    extra = "defer_transports = local\n"

    def setUp(self):
        super().setUp()
        self.d.start()

    def queue(self, *args):
        return subprocess.run([FRUGAL, "queue", "-c", self.d.dir] + list(args), capture_output=True,
                              text=True, timeout=20 * SLOW)

    def flush_and_deliver(self, box, n):
        r = self.queue("flush")
        self.assertEqual(r.returncode, 0, r.stderr)
        return self.d.wait_messages(self.d.maildir(box), n)

    def test_hold_survives_restart_until_release(self):
        for who in ("alice", "bob"):
            r = self.sendmail("%s@localhost" % who, input=b"Subject: %s\n\nx\n" % who.encode())
            self.assertEqual(r.returncode, 0, r.stderr)
        self.d.wait_log("status=deferred")
        ids = wait_for(lambda: (lambda out: len(out) == 2 and out)(
            re.findall(r"(?m)^([0-9A-F]{10,})\s.*\n\s+(\S+)$", self.queue("list").stdout)), 10, "two queued")
        held = [qid for qid, rcpt in ids if rcpt.startswith("alice@")][0]
        r = self.queue("hold", held)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("placed on hold", r.stdout)
        out = self.queue("list").stdout
        self.assertRegex(out, r"(?m)^%s!\s" % held)        # Postfix's mark for held mail
        self.assertRegex(out, r"-- \d+ Kbytes in 2 Requests\.")
        # control: bob's message, not held, goes at the flush; alice's stays
        self.flush_and_deliver("bob", 1)
        self.assertEqual(self.d.messages(self.d.maildir("alice")), [])
        # a restart does not release it
        self.d.stop()
        self.d.start()
        r = self.sendmail("bob@localhost", input=b"Subject: bob2\n\nx\n")   # the control again
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: len(re.findall(r"(?m)^[0-9A-F]{10,} ", self.queue("list").stdout)) == 1,
                 10, "bob's second message queued")
        self.flush_and_deliver("bob", 2)
        self.assertEqual(self.d.messages(self.d.maildir("alice")), [])
        self.assertRegex(self.queue("list").stdout, r"(?m)^%s!\s" % held)
        r = self.queue("release", held)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("released", r.stdout)
        self.assertNotIn("!", self.queue("list").stdout)
        self.flush_and_deliver("alice", 1)
        self.assertEqual(self.queue("hold", "NOSUCHID").returncode, 1)
        self.assertEqual(self.queue("release", held).returncode, 1)


class Stopped(Base):
    def setUp(self):
        super().setUp()
        self.lay_out()

    def test_dropped_while_down_delivered_within_a_second(self):
        for i in range(3):
            r = self.sendmail("alice@localhost", input=b"Subject: down %d\n\nwhile stopped\n" % i)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len([n for n in os.listdir(self.maildrop) if not n.startswith(".")]), 3)
        self.assertEqual(self.d.messages(self.d.maildir("alice")), [])
        t0 = time.monotonic()
        self.d.start(wait=False)
        self.d.wait_listening()
        t_up = time.monotonic()
        self.d.wait_messages(self.d.maildir("alice"), 3, timeout=1)
        t_done = time.monotonic()
        print("\n  start to listening %.3f s, listening to 3 delivered %.3f s" % (t_up - t0, t_done - t_up))
        self.assertLess(t_done - t_up, 1.0 * SLOW)
        wait_for(lambda: not os.listdir(self.maildrop), 5, "the maildrop emptied")

    def test_kill_helper_mid_write(self):
        p = subprocess.Popen([os.path.join(self.bin, "sendmail"), "-C", self.d.dir, "-i", "alice@localhost"],
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=submitter())
        try:
            p.stdin.write(b"Subject: half\n\n" + b"x" * 70000 + b"\n")   # past one chunk: the helper writes
            p.stdin.flush()
            tmp = wait_for(lambda: [n for n in os.listdir(self.maildrop) if n.startswith(".tmp.")],
                           10, "the helper's temporary file")
            def children():
                with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                    return [int(c) for c in f.read().split()]
            helper = wait_for(children, 10, "the helper process")[0]
            wait_for(lambda: os.stat(os.path.join(self.maildrop, tmp[0])).st_size > 65536, 10,
                     "the helper to write the first chunk")
            os.kill(helper, signal.SIGKILL)
            p.stdin.write(b"more\n" * 20000)   # sendmail goes on reading, its writes fail
        except BrokenPipeError:
            pass
        finally:
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
        rc = p.wait(timeout=20 * SLOW)
        err = p.stderr.read()
        p.stderr.close()
        self.assertEqual(rc, 75, err)
        self.assertIn(b"not queued", err)
        # nothing but the dot-file: the daemon never reads it
        self.assertEqual([n for n in os.listdir(self.maildrop) if not n.startswith(".tmp.")], [])
        self.d.start()
        r = self.sendmail("bob@localhost", input=b"Subject: after\n\nok\n")   # control: pickup works
        self.assertEqual(r.returncode, 0, r.stderr)
        self.d.wait_messages(self.d.maildir("bob"), 1)
        self.assertEqual(self.d.messages(self.d.maildir("alice")), [])
        # bob's file leaves committed/ just after his delivery; nothing else may be there
        committed = os.path.join(self.d.queue, "committed")
        wait_for(lambda: not os.listdir(committed), 10, "committed/ empty (no half message queued)")
        self.assertFalse(self.d.log_has("maildrop/.tmp"))

    def test_full_disk_exits_75(self):
        if not ROOT_RUN:
            self.skipTest("needs root: mounts a small tmpfs for the maildrop")
        mnt = os.path.join(self.d.dir, "small")
        os.mkdir(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt], check=True)
        try:
            q = os.path.join(mnt, "queue")
            os.makedirs(os.path.join(q, "maildrop"))
            os.chown(os.path.join(q, "maildrop"), 0, grp.getgrnam("mail").gr_gid)
            os.chmod(os.path.join(q, "maildrop"), 0o1730)
            os.chmod(q, 0o755)
            conf = os.path.join(self.d.dir, "small.conf.d")
            os.mkdir(conf)
            with open(os.path.join(self.d.dir, "frugal.conf")) as f:
                text = f.read()
            with open(os.path.join(conf, "frugal.conf"), "w") as f:
                f.write(text + "\nqueue_directory = %s\n" % q)
            os.chmod(conf, 0o755)
            with open(os.path.join(mnt, "filler"), "wb") as f:
                try:
                    f.write(b"\0" * (300 * 1024))
                except OSError:
                    pass
            r = subprocess.run([os.path.join(self.bin, "sendmail"), "-C", conf, "-i", "alice@localhost"],
                               input=b"Subject: full\n\n" + b"y" * 100000, capture_output=True,
                               preexec_fn=submitter(), timeout=20 * SLOW)
            self.assertEqual(r.returncode, 75, r.stderr)
            self.assertIn(b"No space left on device", r.stderr)
            self.assertIn(b"not queued", r.stderr)
            self.assertEqual(os.listdir(os.path.join(q, "maildrop")), [])   # no half file left
            # control: with room again the same submission succeeds
            os.unlink(os.path.join(mnt, "filler"))
            r = subprocess.run([os.path.join(self.bin, "sendmail"), "-C", conf, "-i", "alice@localhost"],
                               input=b"Subject: full\n\n" + b"y" * 100000, capture_output=True,
                               preexec_fn=submitter(), timeout=20 * SLOW)
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            subprocess.run(["umount", mnt])

    def test_php_mail(self):
        php = shutil.which("php")
        if not php:
            self.skipTest("php-cli is not installed (contrib/deps.sh test)")
        self.d.start()
        code = ('$ok = mail("alice@localhost", "from php", "php body\\n.\\nend", '
                '"From: web@example.org"); exit($ok ? 0 : 3);')
        r = subprocess.run([php, "-n", "-d", "sendmail_path=%s -t -i -C %s" % (os.path.join(self.bin, "sendmail"), self.d.dir),
                            "-r", code], capture_output=True, preexec_fn=submitter(), timeout=30 * SLOW)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = self.d.wait_messages(self.d.maildir("alice"), 1)[0]
        self.assertIn(b"Subject: from php", m)
        self.assertIn(b"From: web@example.org", m)
        self.assertEqual(self.body(m), b"php body\n.\nend\n")


if __name__ == "__main__":
    unittest.main()
