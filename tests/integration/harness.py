"""tests/integration/harness.py: start the real frugal daemon on a loopback
port with a throw-away configuration, and talk to it with real clients.

Synchronisation is by condition (a port that accepts, a file that appears,
a log line), each with a deadline: no sleep stands in for an event.
"""
import atexit
import getpass
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import shutil

from dnsserver import DNSServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRUGAL = os.environ.get("FRUGAL_BIN", os.path.join(ROOT, "frugal"))
# Under ASan everything is slower: scale every deadline.
SLOW = float(os.environ.get("FRUGAL_TEST_SLOW", "1"))


def plain_build():
    """FRUGAL_BIN is the plain build: not build/asan, build/tsan of make tsan-check,
    build/valgrind of make valgrind-check or build/nosync. (Not SLOW: make check's plain
    pass runs with FRUGAL_TEST_SLOW=2 beside the ASan pass.)"""
    return os.path.basename(os.path.dirname(os.path.abspath(FRUGAL))) not in ("asan", "tsan", "nosync", "valgrind")
# make valgrind-check (tests/valgrind_check.py): every frugal process runs under memcheck;
# a test whose timing, memory or descriptor figures cannot hold there skips on this
VALGRIND = bool(os.environ.get("FRUGAL_TEST_VALGRIND"))
# Every frugal a test starts reads an empty hosts file (core/dns.c) unless the test gives its own:
# the machine's /etc/hosts would name 127.0.0.1 (localhost) where the tests expect unknown[127.0.0.1].
os.environ.setdefault("FRUGAL_HOSTS_FILE", os.devnull)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_cert(d, name, kind="rsa"):
    """A self-signed certificate and key in d (rsa: 2048 bits, else ECDSA P-256): (cert path, key path)."""
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    if kind == "rsa":
        newkey = ["-newkey", "rsa:2048"]
    else:
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert,
                    "-subj", "/CN=%s.example.test" % name, "-days", "2"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def client_ctx():
    """A TLS client that does not check the server's (self-signed) certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_for_others = None


def frugal_for_others():
    """The frugal binary as another account (nobody, daemon) can run it. A
    checkout under /root (mode 0700) cannot be entered by them: then a copy
    in a temporary directory everyone may enter, made once per test process
    (found by make fresh-check: make check as root from /root/frugal)."""
    global _for_others
    if _for_others:
        return _for_others
    path, ok = os.path.abspath(FRUGAL), True
    d = os.path.dirname(path)
    while ok:
        ok = bool(os.stat(d).st_mode & 0o001)
        if d == "/":
            break
        d = os.path.dirname(d)
    if ok and os.stat(path).st_mode & 0o001:
        _for_others = path
        return path
    tmp = tempfile.mkdtemp(prefix="frugal-bin-")
    os.chmod(tmp, 0o755)
    atexit.register(shutil.rmtree, tmp, True)
    _for_others = os.path.join(tmp, "frugal")
    shutil.copy2(path, _for_others)
    os.chmod(_for_others, 0o755)
    return _for_others


def wait_for(pred, timeout=10.0, what="condition", interval=0.01):
    """Poll pred() until true or the deadline; returns its value or raises."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


_shared_dns = None


def shared_dns():
    """One loopback DNS server for every daemon of this test process that
    does not bring its own: it knows no name (NXDOMAIN at once), so clients
    stay unknown[127.0.0.1] and no test waits on this machine's resolver
    (/etc/resolv.conf may point at a server that never answers)."""
    global _shared_dns
    if _shared_dns is None:
        _shared_dns = DNSServer().start()
    return _shared_dns


def run_frugal(*args, env=None, input=None, check=False):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([FRUGAL] + list(args), capture_output=True, text=True,
                          env=e, input=input, check=check, timeout=60 * SLOW)


def smtp_outcome(port, source, talk):
    """One client from `source` running talk(smtplib.SMTP) -> code; the code of a refusal, or 421
    for a dropped connection (what a sweep of injected failures may see)."""
    import smtplib
    try:
        c = smtplib.SMTP("127.0.0.1", port, timeout=15 * SLOW, source_address=(source, 0))
        try:
            return talk(c)
        finally:
            try:
                c.quit()
            except (smtplib.SMTPException, OSError):
                pass
            c.close()
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    except smtplib.SMTPRecipientsRefused as e:
        return list(e.recipients.values())[0][0]
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        return 421


def race_slow_lookup(d, sender, started, fast):
    """A session whose RCPT waits on a slow DNS answer (MAIL FROM:<sender>, then RCPT and RSET
    pipelined: it reads nothing meanwhile) and, once started() says the lookup began, a whole
    transaction by fast() in another session. Returns the events in the order they happened:
    (name, reply, seconds after the lookup started) for "fast transaction done", "slow RCPT"
    and "slow RSET"."""
    import threading
    events = []
    slow = Raw(d.port, timeout=30)
    try:
        assert slow.reply()[0] == 220
        assert slow.cmd("EHLO slow.example.test")[0] == 250
        assert slow.cmd("MAIL FROM:<%s>" % sender)[0] == 250
        slow.send("RCPT TO:<alice@example.test>\r\nRSET\r\n")
        wait_for(started, 10, "the slow lookup to start")
        t0 = time.monotonic()

        def read_slow():
            events.append(("slow RCPT", slow.reply(), time.monotonic() - t0))
            events.append(("slow RSET", slow.reply(), time.monotonic() - t0))
        th = threading.Thread(target=read_slow)
        th.start()
        fast()
        events.append(("fast transaction done", None, time.monotonic() - t0))
        th.join(30 * SLOW)
    finally:
        slow.close()
    return events


def alloc_sweep(tc, d, attempt, limit, after=None, allowed=(250, 421, 451)):
    """SQLite's habit against a daemon started with FRUGAL_ALLOC_SWEEP_CLIENT: connection N from
    that client fails its N-th allocation. attempt(n) runs connection N and returns its outcome,
    which must be one of `allowed`; after(n, code) checks the daemon still serves. Ends at the
    first N that met no failure. Returns (N, {outcome: count})."""
    outcomes, fired_before, n = {}, 0, 0
    while True:
        n += 1
        tc.assertLessEqual(n, limit, "sweep did not end")
        code = attempt(n)
        tc.assertIn(code, allowed, "N=%d: %s\n%s" % (n, code, d.output()[-3000:]))
        try:
            wait_for(lambda: "fault sweep: connection %d ended" % n in d.output(), 20, "session %d to end" % n)
        except AssertionError:
            raise AssertionError("N=%d: the session did not end\n%s" % (n, d.output()[-3000:]))
        fired = d.output().count("fault injection: failing")
        if after:
            after(n, code)
        outcomes[code] = outcomes.get(code, 0) + 1
        if fired == fired_before:
            return n, outcomes
        fired_before = fired


class Daemon:
    """One frugal instance in its own temp dir."""

    def __init__(self, extra="", aliases=None, env=None, base_conf=True, binary=None, dns=None):
        """dns: a DNSServer (dnsserver.py) for dns_servers; default the shared empty one."""
        self.binary = binary or FRUGAL
        self.dns = dns or shared_dns()
        self.dir = tempfile.mkdtemp(prefix="frugal-it-")
        self.port = free_port()
        self.log = os.path.join(self.dir, "log")
        self.maildir_base = os.path.join(self.dir, "mail")
        self.vbase = os.path.join(self.dir, "vmail")
        self.queue = os.path.join(self.dir, "queue")
        self.env = env or {}
        self.proc = None
        conf = ""
        if base_conf:
            conf = f"""# written by tests/integration/harness.py
smtpd_listen = 127.0.0.1:{self.port}
queue_directory = {self.queue}
myhostname = mx.example.test
mydomain = example.test
mydestination = $myhostname, localhost, example.test
alias_maps = cdb:{self.dir}/aliases
local_recipient_maps = inline:{{ alice=1, bob=1 }} $alias_maps
local_mailbox_base = {self.maildir_base}
home_mailbox = Maildir/
virtual_mailbox_domains = virt.test
virtual_mailbox_maps = inline:{{ carol@virt.test=virt.test/carol/, dave@virt.test=virt.test/dave/ }}
virtual_mailbox_base = {self.vbase}
virtual_alias_maps = inline:{{ info@virt.test=carol@virt.test, {{ team@virt.test = carol@virt.test, dave@virt.test }} }}
relay_domains = relay.test
mynetworks = 10.255.255.0/24
maillog_file = {self.log}
mail_owner = {getpass.getuser()}
virtual_mailbox_owner = {getpass.getuser()}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtpd_error_sleep_time = 0s
dns_servers = {self.dns.addr}
"""
        with open(os.path.join(self.dir, "frugal.conf"), "w") as f:
            f.write(conf + extra + "\n")
        with open(os.path.join(self.dir, "aliases"), "w") as f:
            f.write(aliases if aliases is not None else
                    "postmaster: alice\nsales: alice, bob\nall: sales, carol@virt.test\n"
                    "loop1: loop2\nloop2: loop1\nroot: alice\n")
        r = run_frugal("map", "-a", os.path.join(self.dir, "aliases"))
        if r.returncode != 0:
            raise AssertionError("frugal map failed: " + r.stderr)

    def start(self, wait=True, preexec_fn=None):
        """preexec_fn: run in the child before exec (e.g. a tiny RLIMIT_NOFILE)."""
        e = dict(os.environ)
        e.update(self.env)
        self.stderr = open(os.path.join(self.dir, "stderr"), "w")
        # its own process group: a crash test kills the master, the daemon and the helpers together
        self.proc = subprocess.Popen([self.binary, "serve", "-f", "-c", self.dir],
                                     stdout=self.stderr, stderr=subprocess.STDOUT, env=e,
                                     preexec_fn=preexec_fn, start_new_session=True)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("frugal exited with %s: %s" % (self.proc.returncode, self.output()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, 15, "frugal to listen")
        # listeners open before the privilege drop and the queue recovery:
        # "daemon started" is logged once all of that is done
        self.wait_log("daemon started", timeout=30 * SLOW)   # recovery after a kill: the disk may be busy

    def status(self):
        """The daemon's published ledger (queue_directory/status/limits.status) as a dict of ints."""
        try:
            with open(os.path.join(self.queue, "status", "limits.status")) as f:
                text = f.read()
        except OSError:
            return None
        out = {}
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if v.lstrip("-").isdigit():
                out[k] = int(v)
        return out if "pid" in out else None

    def smtpd_pid(self):
        """The process that talks SMTP (started as root, frugal serve is its supervisor)."""
        st = wait_for(self.status, 10, "the daemon's status file")
        return st["pid"]

    def next_status(self, timeout=15):
        """The first status sample published after now."""
        t0 = int(time.time())
        return wait_for(lambda: (lambda st: st if st and st["time"] > t0 else None)(self.status()),
                        timeout, "a fresh status sample", interval=0.1)

    def output(self):
        out = ""
        for name in ("stderr", "log"):
            p = os.path.join(self.dir, name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    out += f.read()
        return out

    def log_has(self, text):
        return text in self.output()

    def wait_log(self, text, timeout=10):
        return wait_for(lambda: self.log_has(text), timeout, "log line: " + text)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "stderr", None):
            self.stderr.close()
            self.stderr = None
        return self.proc.returncode if self.proc else None

    def group(self):
        """pids of every process of this instance (the master, the daemon, the helpers)"""
        out = []
        for n in os.listdir("/proc"):
            if not n.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % n) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) != self.proc.pid:   # pgrp
                continue
            # A zombie holds nothing, but a zombie leader whose other threads
            # are still exiting (slow under ASan) still holds the files they
            # share: alive until /proc/N/task lists the leader alone.
            if fields[0] == "Z":
                try:
                    if len(os.listdir("/proc/%s/task" % n)) <= 1:
                        continue
                except OSError:
                    continue
            out.append(int(n))
        return out

    def kill9(self):
        """A crash: every process of the instance dies at once."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        wait_for(lambda: not self.group(), 10, "every process of the instance to be gone")
        if self.stderr:
            self.stderr.close()
            self.stderr = None

    def cleanup(self):
        self.stop()
        if os.environ.get("FRUGAL_KEEP_TEST_DIRS"):
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- mailboxes ---
    def maildir(self, user):
        return os.path.join(self.maildir_base, user, "Maildir")

    def vmaildir(self, rel):
        return os.path.join(self.vbase, rel)

    @staticmethod
    def messages(maildir):
        new = os.path.join(maildir, "new")
        if not os.path.isdir(new):
            return []
        out = []
        for n in sorted(os.listdir(new)):
            with open(os.path.join(new, n), "rb") as f:
                out.append(f.read())
        return out

    def wait_messages(self, maildir, count, timeout=15):
        """Wait for `count` messages; more than that fails (a duplicate delivery)."""
        msgs = wait_for(lambda: len(self.messages(maildir)) >= count and self.messages(maildir),
                        timeout, "%d message(s) in %s" % (count, maildir))
        if len(msgs) > count:
            raise AssertionError("%d messages in %s, %d expected: a message was delivered twice"
                                 % (len(msgs), maildir, count))
        return msgs


class Raw:
    """A raw SMTP connection, for what smtplib will not send (bare LF, NUL, junk)."""

    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        self.f = self.s.makefile("rb")

    def line(self):
        return self.f.readline().decode("latin-1")

    def reply(self):
        """A whole (multi-line) reply: returns (code, text of last line)."""
        lines = []
        while True:
            l = self.line()
            if not l:
                return (None, "".join(lines))
            lines.append(l)
            if len(l) < 4 or l[3] != "-":
                return (int(l[:3]), "".join(lines))

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.s.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def starttls(self, ctx, server_hostname="mx.example.test"):
        """STARTTLS, then the handshake: the reply code (220 when TLS is up)."""
        code, text = self.cmd("STARTTLS")
        if code == 220:
            self.f.close()
            self.s = ctx.wrap_socket(self.s, server_hostname=server_hostname)
            self.f = self.s.makefile("rb")
        return code

    def closed(self):
        try:
            return self.s.recv(1) == b""
        except OSError:
            return True

    def close(self):
        for x in (self.f, self.s):
            try:
                x.close()
            except OSError:
                pass

    def __del__(self):
        self.close()
