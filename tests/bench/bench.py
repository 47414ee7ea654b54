#!/usr/bin/env python3
"""make bench: frugal side by side with an isolated Postfix, in one run.

A benchmark, not a test: it prints figures and whether the targets are met,
and exits 0 either way (non-zero only when the harness itself breaks).

Sections (all on 127.0.0.1, every loop bounded in count and time):
  throughput  smtp-source -> each MTA, accepted msg/s and delivered-to-Maildir
              msg/s, medians of N alternating runs, ratios frugal/postfix
  idle        1,000 idle sessions on frugal: KiB of RSS per session and
              non-TCP sockets at 0 and 1,000 sessions
  tls         (section 4) idle STARTTLS sessions: PSS per session, frugal
              and Postfix; implicit-TLS handshakes/s and CPU ms per handshake
  relay       smtp-source -> each MTA -> Postfix's smtp-sink (relay_domains,
              transport_maps to [127.0.0.1]:PORT): relayed msg/s, ratio
              frugal/postfix, peak descriptors, non-TCP sockets, processes
              and connections to the sink; with and without connection reuse
  attack      under the container emulator (build/tests/vzemul.so) with
              numothersock/numtcpsock caps: a dictionary attack by bots while
              a legitimate client sends one message per second

Python 3 standard library only.  Postfix needs root; without it the Postfix
side is skipped and said so.  See tests/bench/README.md.
"""

import argparse
import os
import pwd
import grp
import random
import re
import resource
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOMAIN = "example.test"
RCPT = "user@" + DOMAIN
SENDER = "sender@" + DOMAIN
INLINE_MAP = "inline:{ user@example.test=example.test/user/ }"
TARGET_THROUGHPUT_RATIO = 3.0
TARGET_KIB_PER_SESSION = 8.0
TARGET_OWNERS_RATIO = 0.9     # two owners (deployed) against one: within 10%
TARGET_IDLE_VMDATA_KIB = 16 * 1024
TARGET_TLS_MEM_RATIO = 0.25   # idle TLS session: at most a quarter of Postfix's
MAIL_OWNER, VMAIL_OWNER = "frugal", "vmail"   # the deployed configuration's two accounts
TARGET_RELAY_RATIO = 2.0      # issue 13: at least twice Postfix's relay rate
RELAY_DOMAIN = "relay.test"
SECTIONS = ("throughput", "idle", "relay", "attack", "tls", "screen")


def ensure_user(name):
    """A system account for the bench (root only): created when missing, kept afterwards."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
        return pwd.getpwnam(name)


def vmdata_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def log(msg=""):
    print(msg, flush=True)


def section(title):
    log("")
    log("== " + title + " " + "=" * max(0, 70 - len(title)))


# --------------------------------------------------------------------------
# small helpers

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_accepts(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port, deadline_s, proc=None):
    """Poll connect() until the port accepts, the process dies or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        if port_accepts(port):
            return True
        time.sleep(0.05)
    return False


def wait_banner(port, deadline_s, alive):
    """Poll until a connection gets a 220 greeting (the MTA really serves, not only has its
    listening socket bound), alive() turns false, or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(max(0.1, min(5, end - time.monotonic())))
                banner = s.recv(512)
                if banner.startswith(b"220"):
                    try:
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                    except OSError:
                        pass
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def wait_pid_gone(pid, deadline_s):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        # reap if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return not pid_alive(pid)


def count_dir(path):
    try:
        with os.scandir(path) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


def empty_maildir(maildir, aside):
    """Move the last run's mail out of new/, cur/ and tmp/ into ASIDE (removed with the
    bench's directory at the end). Not unlinked here: deleting thousands of files right
    before a timed run slows the next run's file creation (ext4 without a journal skips
    recently deleted inodes when it allocates one), which is noise, not the MTA."""
    os.makedirs(aside, exist_ok=True)
    for sub in ("new", "cur", "tmp"):
        d = os.path.join(maildir, sub)
        try:
            st = os.stat(d)
        except FileNotFoundError:
            continue
        if not os.listdir(d):
            continue
        n = 0
        while os.path.exists(os.path.join(aside, "%s.%d" % (sub, n))):
            n += 1
        os.rename(d, os.path.join(aside, "%s.%d" % (sub, n)))
        os.mkdir(d, st.st_mode & 0o7777)
        os.chown(d, st.st_uid, st.st_gid)
        os.chmod(d, st.st_mode & 0o7777)


def tail(path, n=15):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _inodes_from(path, col):
    out = set()
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) > col:
                    out.add(parts[col])
    except OSError:
        pass
    return out


def tcp_inodes():
    return _inodes_from("/proc/net/tcp", 9) | _inodes_from("/proc/net/tcp6", 9)


def unix_inodes():
    return _inodes_from("/proc/net/unix", 6)


def socket_inodes(pids):
    """Unique socket inodes held by the given pids."""
    out = set()
    for pid in pids:
        d = "/proc/%d/fd" % pid
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            try:
                t = os.readlink(os.path.join(d, n))
            except OSError:
                continue
            if t.startswith("socket:["):
                out.add(t[8:-1])
    return out


def socket_protos(pids):
    """{inode: protocol name or None} of the sockets the pids hold. The name is the kernel's
    own (the system.sockprotoname attribute of the /proc fd link, as lsof reads it: "TCP",
    "TCPv6", "UNIX-STREAM", "UDP", ...), asked right after the link is read: the tables of
    /proc/net list no TCP socket in state CLOSE (before connect(), after an RST or both FINs
    until the owner closes it) and, read a few ms apart under heavy connection churn (the
    relay section), miss sockets born and gone in between. None: the attribute is not
    available (the tables decide); a descriptor closed and reused meanwhile is left out."""
    out = {}
    for pid in pids:
        d = "/proc/%d/fd" % pid
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            path = os.path.join(d, n)
            try:
                t = os.readlink(path)
            except OSError:
                continue
            if not t.startswith("socket:["):
                continue
            ino = t[8:-1]
            try:
                out[ino] = os.getxattr(path, "system.sockprotoname").rstrip(b"\0").decode()
            except OSError:
                try:
                    if os.readlink(path) == t:
                        out.setdefault(ino, None)   # still that socket: no attribute here
                except OSError:
                    pass                            # closed meanwhile
    return out


def socket_census(pids):
    """(all sockets, tcp, non-tcp, non-tcp that are unix) for a set of pids."""
    # sockets the kernel does not name: the TCP table read before and after the
    # descriptors, so a connection closing while we look does not pass for a non-TCP socket
    tcp = tcp_inodes()
    protos = socket_protos(pids)
    tcp |= tcp_inodes()
    socks = set(protos)
    unknown = {i for i, p in protos.items() if p is None}
    tcp_s = {i for i, p in protos.items() if p and p.startswith("TCP")} | (unknown & tcp)
    non_tcp = socks - tcp_s
    unix = {i for i in non_tcp if protos[i] and protos[i].startswith("UNIX")}
    if unknown:
        unix |= non_tcp & unknown & unix_inodes()
    return len(socks), len(tcp_s), len(non_tcp), len(unix)


def children_of(pid):
    """pid plus its direct and indirect children (Postfix daemons are the master's children)."""
    parent = {}
    for n in os.listdir("/proc"):
        if not n.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % n) as f:
                s = f.read()
            ppid = int(s[s.rindex(")") + 2:].split()[1])
            parent[int(n)] = ppid
        except (OSError, ValueError):
            continue
    tree = {pid}
    changed = True
    while changed:
        changed = False
        for p, pp in parent.items():
            if pp in tree and p not in tree:
                tree.add(p)
                changed = True
    return tree


def raise_nofile(want=8192):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    newhard = hard if hard == resource.RLIM_INFINITY or hard >= want else want
    for lim in ((want, newhard), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, lim)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fmt(v, spec="%.0f"):
    if v is None:
        return "n/a"
    return spec % v


def median_or_none(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


# --------------------------------------------------------------------------
# the MTAs

class MTA:
    name = "?"
    port = None
    maildir = None
    logfile = None

    def start(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def pids(self):
        raise NotImplementedError

    def alive(self):
        raise NotImplementedError


class Postfix(MTA):
    """An isolated Postfix instance under TMP: own config, queue, data, Maildirs."""

    name = "postfix"

    def __init__(self, tmp, env_extra=None, mynetworks="127.0.0.0/8", tag="postfix", extra=None, name=None):
        self.tmp = tmp
        self.extra = dict(extra or {})   # main.cf settings over the bench's own
        if name:
            self.name = name
        self.tag = tag
        self.root = os.path.join(tmp, tag)
        self.confdir = os.path.join(self.root, "etc")
        self.queue = os.path.join(self.root, "queue")
        self.data = os.path.join(self.root, "data")
        self.mailbase = os.path.join(self.root, "pfmail")
        self.maildir = os.path.join(self.mailbase, DOMAIN, "user")
        self.logfile = os.path.join(self.root, "maillog")
        self.port = free_port()
        self.env_extra = dict(env_extra or {})
        self.mynetworks = mynetworks
        self.proc = None
        self.master_pid = None
        self._logf = None

    @staticmethod
    def available():
        if os.geteuid() != 0:
            return "not running as root (Postfix needs root to start its master)"
        for tool in ("postfix", "postconf"):
            if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
                return "%s not found (apt-get install postfix)" % tool
        try:
            pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError:
            return "user postfix or group postdrop missing"
        return None

    def _postconf(self, *args, check=True):
        return subprocess.run(["postconf", "-c", self.confdir] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=30, check=check)

    def setup(self):
        os.makedirs(self.confdir)
        for c in ("/etc/postfix/main.cf", "/usr/share/postfix/main.cf.debian",
                  "/usr/share/postfix/main.cf.dist", "/etc/postfix/main.cf.proto"):
            if os.path.exists(c):
                shutil.copy(c, os.path.join(self.confdir, "main.cf"))
                break
        else:
            open(os.path.join(self.confdir, "main.cf"), "w").close()
        for c in ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist",
                  "/etc/postfix/master.cf.proto"):
            if os.path.exists(c):
                src_master = c
                break
        else:
            raise RuntimeError("no master.cf template in /etc/postfix or /usr/share/postfix")
        self._write_master(src_master)

        pf = pwd.getpwnam("postfix")
        os.makedirs(self.queue, mode=0o755)
        os.makedirs(self.data, mode=0o700)
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        # Maildir owner: an unprivileged user that can write there (virtual_minimum_uid 100)
        vm = pwd.getpwnam("nobody")
        os.makedirs(self.maildir)
        for d in (self.mailbase, os.path.join(self.mailbase, DOMAIN), self.maildir):
            os.chown(d, vm.pw_uid, vm.pw_gid)

        defaults = {}
        out = self._postconf("-d", "command_directory", "daemon_directory", "meta_directory",
                             "shlib_directory", "sendmail_path", "newaliases_path",
                             "mailq_path", "manpage_directory", "sample_directory",
                             "import_environment").stdout
        for line in out.splitlines():
            k, _, v = line.partition(" = ")
            defaults[k.strip()] = v.strip()
        imp = defaults.get("import_environment", "")
        for k, v in sorted(self.env_extra.items()):
            imp += " %s=%s" % (k, v)
        settings = {
            "compatibility_level": "3.6",
            "command_directory": defaults.get("command_directory", "/usr/sbin"),
            "daemon_directory": defaults.get("daemon_directory", "/usr/lib/postfix/sbin"),
            "meta_directory": defaults.get("meta_directory", "/etc/postfix"),
            "shlib_directory": defaults.get("shlib_directory", "/usr/lib/postfix"),
            "sendmail_path": defaults.get("sendmail_path", "/usr/sbin/sendmail"),
            "newaliases_path": defaults.get("newaliases_path", "/usr/bin/newaliases"),
            "mailq_path": defaults.get("mailq_path", "/usr/bin/mailq"),
            "manpage_directory": defaults.get("manpage_directory", "/usr/share/man"),
            "sample_directory": defaults.get("sample_directory", "/etc/postfix"),
            "readme_directory": "no",
            "html_directory": "no",
            "setgid_group": "postdrop",
            "mail_owner": "postfix",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "myhostname": "bench.example.test",
            "mydomain": DOMAIN,
            "myorigin": "$myhostname",
            "mydestination": "localhost",
            "mynetworks": self.mynetworks,
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "relayhost": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "maillog_file": "/dev/stdout",
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_maps": INLINE_MAP,
            "virtual_mailbox_base": self.mailbase,
            "virtual_uid_maps": "static:%d" % vm.pw_uid,
            "virtual_gid_maps": "static:%d" % vm.pw_gid,
            "import_environment": imp,
        }
        settings.update(self.extra)
        self._postconf("-e", *["%s=%s" % kv for kv in settings.items()])
        # create the queue hierarchy and check ownerships now, not in the timed part
        r = subprocess.run(["postfix", "-c", self.confdir, "check"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("postfix check failed:\n" + r.stdout)

    def _write_master(self, src):
        """Chroot off everywhere; the only inet service is smtpd on 127.0.0.1:PORT."""
        out = []
        skip_cont = False
        with open(src) as f:
            for line in f:
                if line[:1] in (" ", "\t") and line.strip() and not line.lstrip().startswith("#"):
                    if not skip_cont:
                        out.append(line)
                    continue
                skip_cont = False
                if not line.strip() or line.startswith("#"):
                    out.append(line)
                    continue
                fields = line.split()
                if len(fields) < 8:
                    out.append(line)
                    continue
                if fields[1] == "inet":
                    if fields[0] == "smtp" and fields[7] == "smtpd":
                        fields[0] = "127.0.0.1:%d" % self.port
                    else:
                        skip_cont = True      # drop other listeners and their -o lines
                        continue
                fields[4] = "n"
                out.append("%-14s %-9s %s\n" % (fields[0], fields[1], " ".join(fields[2:])))
        with open(os.path.join(self.confdir, "master.cf"), "w") as f:
            f.writelines(out)

    def start(self, deadline_s=30):
        env = dict(os.environ)
        env.update(self.env_extra)
        self._logf = open(self.logfile, "ab")
        self.proc = subprocess.Popen(list(getattr(self, "cmd_prefix", [])) +
                                     ["postfix", "-c", self.confdir, "start-fg"],
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        ok = wait_port(self.port, deadline_s, self.proc)
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        end = time.monotonic() + 5
        while time.monotonic() < end and self.master_pid is None:
            try:
                with open(pidfile) as f:
                    self.master_pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.05)
        # the master binds the inet listener before it starts its other services and can
        # still die after that: only a greeting from an smtpd proves the instance is up
        return ok and wait_banner(self.port, deadline_s,
                                  lambda: self.proc.poll() is None and
                                  (self.master_pid is None or pid_alive(self.master_pid)))

    def alive(self):
        return self.master_pid is not None and pid_alive(self.master_pid)

    def pids(self):
        if self.master_pid is None:
            return set()
        return children_of(self.master_pid)

    def stop(self):
        daemons = set()
        if self.master_pid and pid_alive(self.master_pid):
            daemons = self.pids() - {self.master_pid}
            try:
                os.kill(self.master_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not wait_pid_gone(self.master_pid, 15):
                try:
                    os.kill(self.master_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        # daemons the master did not take down (it normally does); check that the pid is
        # still a Postfix program before killing it, pids get reused
        daemon_dir = "/usr/lib/postfix"
        for p in daemons:
            try:
                exe = os.readlink("/proc/%d/exe" % p)
            except OSError:
                continue
            if exe.startswith(daemon_dir):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.master_pid = None
        if self._logf:
            self._logf.close()
            self._logf = None
        self.proc = None


class Frugal(MTA):
    name = "frugal"

    def __init__(self, binary, tmp, extra_conf=None, env_extra=None, tag="frugal",
                 mynetworks="127.0.0.0/8", owners=2, name=None):
        """owners=2: the deployed configuration (started as root, mail_owner and
        virtual_mailbox_owner two unprivileged accounts); owners=1: both the same
        account (a shortcut, printed beside it). Unprivileged, both are the current user."""
        self.binary = binary
        self.owners = owners
        if name:
            self.name = name
        self.root = os.path.join(tmp, tag)
        self.confdir = os.path.join(self.root, "etc")
        self.queue = os.path.join(self.root, "fq")
        self.mailbase = os.path.join(self.root, "fmail")
        self.maildir = os.path.join(self.mailbase, DOMAIN, "user")
        self.logfile = os.path.join(self.root, "frugal.log")
        self.stderr = os.path.join(self.root, "frugal.stderr")
        self.port = free_port()
        self.extra_conf = dict(extra_conf or {})
        self.env_extra = dict(env_extra or {})
        self.mynetworks = mynetworks
        self.proc = None
        self._errf = None

    def setup(self):
        os.makedirs(self.confdir)
        os.makedirs(self.mailbase)
        user = vuser = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            user = ensure_user(MAIL_OWNER).pw_name
            vuser = ensure_user(VMAIL_OWNER if self.owners == 2 else MAIL_OWNER).pw_name
            vpw = pwd.getpwnam(vuser)
            os.chown(self.mailbase, vpw.pw_uid, vpw.pw_gid)
        conf = {
            "smtpd_listen": "127.0.0.1:%d" % self.port,
            "myhostname": "bench.example.test",
            "queue_directory": self.queue,
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_maps": INLINE_MAP,
            "virtual_mailbox_base": self.mailbase,
            "virtual_mailbox_owner": vuser,
            "mydestination": "localhost",
            "maillog_file": self.logfile,
            "mail_owner": user,
            "mynetworks": self.mynetworks,
            "alias_maps": "",           # as on the Postfix side: no alias table
        }
        conf.update(self.extra_conf)
        with open(os.path.join(self.confdir, "frugal.conf"), "w") as f:
            f.write("# written by tests/bench/bench.py\n")
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))

    def start(self, deadline_s=20):
        env = dict(os.environ)
        env.update(self.env_extra)
        self._errf = open(self.stderr, "ab")
        self.proc = subprocess.Popen([self.binary, "serve", "-f", "-c", self.confdir],
                                     stdin=subprocess.DEVNULL, stdout=self._errf,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        return (wait_port(self.port, deadline_s, self.proc) and
                wait_banner(self.port, deadline_s, self.alive))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pids(self):
        """every process of the instance: started as root, the master, the daemon, the helpers"""
        if not self.alive():
            return set()
        return {self.proc.pid} | set(children_of(self.proc.pid))

    def smtpd_pid(self, deadline_s=10):
        """the process that talks SMTP, from the status file it publishes"""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                with open(os.path.join(self.queue, "status", "limits.status")) as f:
                    for line in f:
                        if line.startswith("pid "):
                            return int(line.split()[1])
            except OSError:
                pass
            time.sleep(0.05)
        return self.proc.pid

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        if self._errf:
            self._errf.close()
            self._errf = None

    def explain_failure(self):
        rc = self.proc.poll() if self.proc else None
        msg = "frugal did not accept on 127.0.0.1:%d (exit status %s)" % (self.port, rc)
        t = tail(self.stderr) + tail(self.logfile)
        return msg + ("\n" + t if t else "")


# --------------------------------------------------------------------------
# 1. throughput

def smtp_source_cmd(port, args):
    cmd = ["smtp-source", "-s", str(args.sessions), "-m", str(args.messages),
           "-l", str(args.size), "-M", "bench.example.test",
           "-f", SENDER, "-t", RCPT]
    if args.reuse:
        cmd.insert(1, "-d")     # several messages per session
    return cmd + ["127.0.0.1:%d" % port]


def cpu_ticks(pids):
    """user+system CPU of these processes and of their reaped children, in clock ticks"""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])   # utime stime cutime cstime
    return total


def one_throughput_run(mta, args):
    empty_maildir(mta.maildir, os.path.join(os.path.dirname(mta.mailbase), "aside-" + mta.name))
    new = os.path.join(mta.maildir, "new")
    cmd = smtp_source_cmd(mta.port, args)
    pids0 = set(mta.pids()) | ({mta.master_pid} if getattr(mta, "master_pid", None) else set())
    cpu0 = cpu_ticks(pids0)
    t0 = time.monotonic()
    # own session: a terminal's ^C reaches only us, and we kill and reap the client
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=args.accept_timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        rc = "timeout"
    except BaseException:
        p.kill()
        p.wait()
        raise
    t_acc = time.monotonic() - t0
    end = t0 + args.deliver_timeout
    n = count_dir(new)
    last_n, last_change = n, time.monotonic()
    while n < args.messages and time.monotonic() < end:
        time.sleep(0.01)
        n = count_dir(new)
        now = time.monotonic()
        if n != last_n:
            last_n, last_change = n, now
        elif not mta.alive() or (rc != 0 and now - last_change > 15):
            break       # nothing more will come: MTA gone, or a failed run stalled
    t_del = time.monotonic() - t0
    # the MTA's CPU for the run: less noisy than wall time on a shared disk (processes
    # that came and went during the run are in their parents' cutime/cstime)
    cpu = cpu_ticks(pids0 | set(mta.pids())) - cpu0
    res = {"accept_s": t_acc, "deliver_s": t_del, "delivered": n, "rc": rc,
           "accept_rate": None, "deliver_rate": None,
           "cpu_ms_per_msg": cpu * 1000.0 / os.sysconf("SC_CLK_TCK") / args.messages}
    if rc == 0:
        res["accept_rate"] = args.messages / t_acc
    if n >= args.messages:
        res["deliver_rate"] = args.messages / t_del
    if rc != 0:
        res["note"] = "smtp-source exit %s: %s" % (rc, out.strip().splitlines()[-1] if out.strip() else "")
    elif n < args.messages:
        res["note"] = "only %d/%d in new/ after %.0f s" % (n, args.messages, args.deliver_timeout)
    return res


def bench_throughput(mtas, args, summary):
    section("throughput: %d messages x %d B, %d parallel sessions (%s), %d runs"
            % (args.messages, args.size, args.sessions,
               "several messages per session, smtp-source -d" if args.reuse
               else "one message per session", args.runs))
    if not shutil.which("smtp-source", path=os.environ.get("PATH", "") + ":/usr/sbin"):
        log("skipped: smtp-source not found (apt-get install postfix)")
        summary["throughput"] = "skipped: no smtp-source"
        return
    log("command: " + " ".join(smtp_source_cmd(0, args)).replace("127.0.0.1:0", "127.0.0.1:PORT"))
    results = {m.name: [] for m in mtas}
    for i in range(args.runs):
        order = mtas if i % 2 == 0 else list(reversed(mtas))
        for m in order:
            if not m.alive():
                log("run %d %-8s skipped: not running" % (i + 1, m.name))
                continue
            # what an earlier run (another MTA's) left dirty on the file system would
            # otherwise be written by this run's syncfs: every run starts clean
            os.sync()
            r = one_throughput_run(m, args)
            results[m.name].append(r)
            log("run %d %-8s accept %6.2f s %7s msg/s | in new/ %6.2f s %7s msg/s (%d files) | cpu %.2f ms/msg%s"
                % (i + 1, m.name, r["accept_s"], fmt(r["accept_rate"]), r["deliver_s"],
                   fmt(r["deliver_rate"]), r["delivered"], r["cpu_ms_per_msg"],
                   ("  [" + r["note"] + "]") if r.get("note") else ""))
    med = {}
    for name, rs in results.items():
        med[name] = {
            "accept_rate": median_or_none([r["accept_rate"] for r in rs]),
            "deliver_rate": median_or_none([r["deliver_rate"] for r in rs]),
            "accept_s": median_or_none([r["accept_s"] for r in rs if r["accept_rate"]]),
            "deliver_s": median_or_none([r["deliver_s"] for r in rs if r["deliver_rate"]]),
            "cpu_ms_per_msg": median_or_none([r["cpu_ms_per_msg"] for r in rs]),
            "ok_runs": sum(1 for r in rs if r["accept_rate"] and r["deliver_rate"]),
            "runs": len(rs),
        }
    log("")
    log("medians          accept s   accept msg/s   to new/ s   delivered msg/s   CPU ms/msg   good runs")
    for name, d in med.items():
        log("  %-12s %10s %14s %11s %17s %12s   %d/%d"
            % (name, fmt(d["accept_s"], "%.2f"), fmt(d["accept_rate"]), fmt(d["deliver_s"], "%.2f"),
               fmt(d["deliver_rate"]), fmt(d["cpu_ms_per_msg"], "%.3f"), d["ok_runs"], d["runs"]))
    ratios = {}
    if "frugal" in med and "postfix" in med:
        for key, label in (("accept_rate", "accept"), ("deliver_rate", "delivered-to-Maildir")):
            f, p = med["frugal"][key], med["postfix"][key]
            if f and p:
                ratio = f / p
                ratios[label] = ratio
                log("  ratio frugal/postfix %-22s %5.2fx  (target >= %.0fx: %s)"
                    % (label, ratio, TARGET_THROUGHPUT_RATIO,
                       "MET" if ratio >= TARGET_THROUGHPUT_RATIO else "NOT MET"))
            else:
                log("  ratio frugal/postfix %-22s n/a (a side has no good run)" % label)
    if "frugal" in med and "frugal-1owner" in med:
        # side by side: the two configurations run next to each other in every run, so
        # the ratio is taken per run (both saw the same disk and machine), then the median
        for key, label in (("accept_rate", "accept"), ("deliver_rate", "delivered-to-Maildir")):
            pairs = [a[key] / b[key] for a, b in zip(results["frugal"], results["frugal-1owner"])
                     if a[key] and b[key]]
            r = median_or_none(pairs)
            if r:
                ratios["two owners / one, " + label] = r
                log("  ratio two owners / one owner %-14s %5.2fx  (per-run %.2f-%.2f; target >= %.2fx: %s)"
                    % (label, r, min(pairs), max(pairs), TARGET_OWNERS_RATIO,
                       "MET" if r >= TARGET_OWNERS_RATIO else "NOT MET"))
    summary["throughput"] = {"medians": med, "ratios": ratios}


# --------------------------------------------------------------------------
# 1b. relay (issue 13): smtp-source -> MTA -> smtp-sink

SINK_BIN = "smtp-sink"


class Sink:
    """Postfix's smtp-sink on 127.0.0.1:PORT, one file per message under DIR/in. Between runs
    in/ is renamed aside (not emptied: see empty_maildir) and made again; smtp-sink opens its
    files by path, so the next message lands in the new directory."""

    def __init__(self, tmp, tag):
        self.name = tag
        self.root = os.path.join(tmp, tag)
        self.dir = os.path.join(self.root, "in")
        self.port = free_port()
        self.proc = None
        self.asides = 0

    def start(self):
        os.makedirs(self.dir)
        os.chmod(self.root, 0o755)
        os.chmod(self.dir, 0o777)       # smtp-sink runs as nobody under root
        binary = shutil.which(SINK_BIN, path=os.environ.get("PATH", "") + ":/usr/sbin") or SINK_BIN
        # backlog 256: with a short one, a burst of new connections overflows it and the
        # dropped SYNs are retried after the kernel's 1 s (tests/bench/smtp_reuse.py)
        cmd = [binary, "-d", os.path.join(self.dir, "m."), "127.0.0.1:%d" % self.port, "256"]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "nobody"]
        self._err = open(os.path.join(self.root, "sink.err"), "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err, start_new_session=True)
        return wait_port(self.port, 10, self.proc)

    def count(self):
        return count_dir(self.dir)

    def aside(self):
        if not self.count():
            return
        self.asides += 1
        os.rename(self.dir, os.path.join(self.root, "aside-%d" % self.asides))
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o777)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_err", None):
            self._err.close()
            self._err = None


def relay_source_cmd(port, args):
    return ["smtp-source", "-d", "-s", str(args.sessions), "-m", str(args.relay_messages),
            "-l", str(args.size), "-M", "bench.example.test", "-f", SENDER,
            "-t", "user@" + RELAY_DOMAIN, "127.0.0.1:%d" % port]


def established_to(port):
    """ESTABLISHED TCP connections whose remote end is 127.0.0.1:port (the MTA's side of its
    connections to the sink: the delivery concurrency, whatever process holds them)."""
    want = ":%04X" % port
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[2].endswith(want) and fields[3] == "01":
                        n += 1
        except OSError:
            continue
    return n


def fd_total(pids):
    n = 0
    for p in pids:
        try:
            n += len(os.listdir("/proc/%d/fd" % p))
        except OSError:
            continue
    return n


def sample_relay(mta, sink_port, stop_ev, peak, interval=0.1):
    """Peaks over the run: descriptors and non-TCP sockets of all the MTA's processes, the
    process count, connections to the sink."""
    while not stop_ev.is_set():
        try:
            pids = mta.pids()
            if pids:
                _a, _t, nontcp, _u = socket_census(pids)
                for k, v in (("fds", fd_total(pids)), ("nontcp", nontcp), ("procs", len(pids)),
                             ("conns", established_to(sink_port))):
                    peak[k] = max(peak.get(k, 0), v)
        except OSError:
            pass
        stop_ev.wait(interval)


def one_relay_run(mta, sink, args):
    n_want = args.relay_messages
    sink.aside()
    pids0 = set(mta.pids()) | ({mta.master_pid} if getattr(mta, "master_pid", None) else set())
    cpu0 = cpu_ticks(pids0)
    peak = {}
    stop_ev = threading.Event()
    th = threading.Thread(target=sample_relay, args=(mta, sink.port, stop_ev, peak), daemon=True)
    th.start()
    t0 = time.monotonic()
    p = subprocess.Popen(relay_source_cmd(mta.port, args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=args.accept_timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        rc = "timeout"
    except BaseException:
        p.kill()
        p.wait()
        stop_ev.set()
        raise
    t_acc = time.monotonic() - t0
    end = t0 + args.deliver_timeout
    n = sink.count()
    last_n, last_change = n, time.monotonic()
    try:
        while n < n_want and time.monotonic() < end:
            time.sleep(0.01)
            n = sink.count()
            now = time.monotonic()
            if n != last_n:
                last_n, last_change = n, now
            elif not mta.alive() or not sink.alive() or (rc != 0 and now - last_change > 15):
                break
        t_rel = time.monotonic() - t0
    finally:
        stop_ev.set()
        th.join(5)
    cpu = cpu_ticks(pids0 | set(mta.pids())) - cpu0
    res = {"accept_s": t_acc, "relay_s": t_rel, "relayed": n, "rc": rc, "rate": None,
           "cpu_ms_per_msg": cpu * 1000.0 / os.sysconf("SC_CLK_TCK") / n_want}
    res.update({"peak_" + k: v for k, v in peak.items()})
    if n >= n_want:
        res["rate"] = n_want / t_rel
    if rc != 0:
        res["note"] = "smtp-source exit %s: %s" % (rc, out.strip().splitlines()[-1] if out.strip() else "")
    elif n < n_want:
        res["note"] = "only %d/%d at the sink after %.0f s" % (n, n_want, args.deliver_timeout)
    return res


def frugal_deliveries_budget(f):
    """frugal's delivery concurrency budget from `frugal limits --json` (the running daemon's view)."""
    try:
        r = subprocess.run([f.binary, "limits", "-c", f.confdir, "--json"], capture_output=True,
                           text=True, timeout=30)
        import json
        d = json.loads(r.stdout).get("deliveries", {})
        return d.get("limit"), d.get("bound_by")
    except (OSError, ValueError, subprocess.SubprocessError):
        return None, None


def bench_relay(frugal_bin, args, tmp, summary, postfix_skip, started):
    section("relay: %d messages x %d B through each MTA to smtp-sink, %d sessions in, %d runs per mode"
            % (args.relay_messages, args.size, args.sessions, args.relay_runs))
    for tool in ("smtp-source", SINK_BIN):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin"):
            log("skipped: %s not found (apt-get install postfix)" % tool)
            summary["relay"] = "skipped: no " + tool
            return
    log("command: " + " ".join(relay_source_cmd(0, args)).replace("127.0.0.1:0", "127.0.0.1:PORT"))
    log("both: relay_domains = %s, transport_maps = inline:{ %s=smtp:[127.0.0.1]:SINKPORT }, "
        "mynetworks = 127.0.0.0/8, default concurrency (initial 5, limit 20)" % (RELAY_DOMAIN, RELAY_DOMAIN))
    if os.geteuid() != 0:
        log("not root: frugal runs as the current user, not the deployed configuration")
    with open("/proc/loadavg") as f:
        log("load average at the start: " + " ".join(f.read().split()[:3]))
    modes = [("reuse", "yes")] + ([] if args.relay_no_reuse_skip else [("no reuse", "no")])
    out = {}
    for mode, cache in modes:
        log("")
        log("mode %s: smtp_connection_cache_on_demand = %s on both" % (mode, cache))
        mtas = []   # (mta, sink)
        if frugal_bin:
            sink = Sink(tmp, "sink-frugal-" + cache)
            started.append(sink)
            f = Frugal(frugal_bin, tmp, tag="frugal-relay-" + cache, name="frugal",
                       extra_conf={"relay_domains": RELAY_DOMAIN,
                                   "transport_maps": "inline:{ %s=smtp:[127.0.0.1]:%d }" % (RELAY_DOMAIN, sink.port),
                                   "smtp_connection_cache_on_demand": cache,
                                   "smtpd_client_connection_count_limit": 2000,
                                   "smtpd_concurrency_limit": 2000})
            f.setup()
            started.append(f)
            if not sink.start():
                log("smtp-sink did not start:\n" + tail(os.path.join(sink.root, "sink.err")))
            elif f.start():
                mtas.append((f, sink))
                lim, why = frugal_deliveries_budget(f)
                out.setdefault("frugal_deliveries_limit", lim)
                log("frugal delivery concurrency budget (frugal limits): %s (%s)" % (fmt(lim, "%s"), why))
            else:
                log(f.explain_failure())
        if not postfix_skip:
            sink = Sink(tmp, "sink-postfix-" + cache)
            started.append(sink)
            p = Postfix(tmp, tag="postfix-relay-" + cache,
                        extra={"relay_domains": RELAY_DOMAIN,
                               "transport_maps": "inline:{ %s=smtp:[127.0.0.1]:%d }" % (RELAY_DOMAIN, sink.port),
                               "smtp_connection_cache_on_demand": cache})
            p.setup()
            started.append(p)
            if not sink.start():
                log("smtp-sink did not start:\n" + tail(os.path.join(sink.root, "sink.err")))
            elif p.start():
                mtas.append((p, sink))
            else:
                log("postfix did not start:\n" + tail(p.logfile))
        results = {m.name: [] for m, _s in mtas}
        for i in range(args.relay_runs):
            order = mtas if i % 2 == 0 else list(reversed(mtas))
            for m, sink in order:
                if not m.alive():
                    log("run %d %-8s skipped: not running" % (i + 1, m.name))
                    continue
                os.sync()
                r = one_relay_run(m, sink, args)
                results[m.name].append(r)
                log("run %d %-8s accept %6.2f s | at the sink %6.2f s %7s msg/s (%d) | cpu %.2f ms/msg | "
                    "peak fds %s, non-TCP %s, procs %s, conns to sink %s%s"
                    % (i + 1, m.name, r["accept_s"], r["relay_s"], fmt(r["rate"]), r["relayed"],
                       r["cpu_ms_per_msg"], fmt(r.get("peak_fds"), "%d"), fmt(r.get("peak_nontcp"), "%d"),
                       fmt(r.get("peak_procs"), "%d"), fmt(r.get("peak_conns"), "%d"),
                       ("  [" + r["note"] + "]") if r.get("note") else ""))
        for m, sink in mtas:
            m.stop()
            sink.stop()
        med = {}
        for name, rs in results.items():
            rates = [r["rate"] for r in rs if r["rate"]]
            med[name] = {
                "rate": median_or_none(rates),
                "range": (min(rates), max(rates)) if rates else None,
                "cpu_ms_per_msg": median_or_none([r["cpu_ms_per_msg"] for r in rs]),
                "ok_runs": len(rates), "runs": len(rs),
            }
            for k in ("fds", "nontcp", "procs", "conns"):
                vals = [r.get("peak_" + k) for r in rs if r.get("peak_" + k) is not None]
                med[name]["peak_" + k] = max(vals) if vals else None
        log("medians (%s)   relayed msg/s (range)   CPU ms/msg   peak fds   peak non-TCP   peak procs   "
            "peak conns   good runs" % mode)
        for name, d in med.items():
            log("  %-10s %12s (%s) %12s %10s %14s %12s %12s   %d/%d"
                % (name, fmt(d["rate"]), "%.0f-%.0f" % d["range"] if d["range"] else "n/a",
                   fmt(d["cpu_ms_per_msg"], "%.3f"), fmt(d["peak_fds"], "%d"), fmt(d["peak_nontcp"], "%d"),
                   fmt(d["peak_procs"], "%d"), fmt(d["peak_conns"], "%d"), d["ok_runs"], d["runs"]))
        entry = {"medians": med}
        if "frugal" in med and "postfix" in med and med["frugal"]["rate"] and med["postfix"]["rate"]:
            ratio = med["frugal"]["rate"] / med["postfix"]["rate"]
            # per run too: neighbours in time share the machine's noise
            rr = [a["rate"] / b["rate"] for a, b in zip(results["frugal"], results["postfix"])
                  if a["rate"] and b["rate"]]
            entry["ratio"] = ratio
            entry["ratio_range"] = (min(rr), max(rr)) if rr else None
            log("  ratio frugal/postfix relayed msg/s %.2fx (per run %s)  target >= %.0fx: %s"
                % (ratio, "%.2f-%.2f" % entry["ratio_range"] if rr else "n/a", TARGET_RELAY_RATIO,
                   "MET" if ratio >= TARGET_RELAY_RATIO else "NOT MET"))
        lim = out.get("frugal_deliveries_limit")
        if "frugal" in med and lim is not None and med["frugal"]["peak_conns"] is not None:
            entry["inside_budget"] = med["frugal"]["peak_conns"] <= lim
            log("  frugal's connections to the sink peaked at %d, budget %d: %s"
                % (med["frugal"]["peak_conns"], lim, "inside" if entry["inside_budget"] else "OVER"))
        out[mode] = entry
    with open("/proc/loadavg") as f:
        log("load average at the end: " + " ".join(f.read().split()[:3]))
    summary["relay"] = out


# --------------------------------------------------------------------------
# 2. idle sessions

def bench_idle(frugal, args, summary):
    n = args.idle_sessions
    section("idle sessions: %d idle SMTP sessions on frugal" % n)
    have = raise_nofile(n + 1024)
    if have < n + 64:
        log("warning: RLIMIT_NOFILE is %d, fewer than %d sessions possible" % (have, n))
    pid = frugal.smtpd_pid()
    vmdata = {"smtpd": vmdata_kib(pid)}
    for p in frugal.pids() - {pid}:
        vmdata["master" if p == frugal.proc.pid else "helper %d" % p] = vmdata_kib(p)
    # warm-up: a few complete sessions so one-time allocations are not charged per session
    for _ in range(10):
        try:
            with socket.create_connection(("127.0.0.1", frugal.port), timeout=5) as s:
                s.recv(512)
                s.sendall(b"QUIT\r\n")
                s.recv(512)
        except OSError:
            pass
    end = time.monotonic() + 5
    base_tcp = None
    while time.monotonic() < end:   # let the warm-up sessions finish closing
        _all, base_tcp, _nt, _u = socket_census({pid})
        if base_tcp <= 1:
            break
        time.sleep(0.05)
    rss0 = vm_rss_kib(pid)
    all0, tcp0, nontcp0, unix0 = socket_census({pid})
    fds0 = len(os.listdir("/proc/%d/fd" % pid))
    socks = []
    banners = {"220": 0, "421": 0, "other": 0, "error": 0}
    deadline = time.monotonic() + args.idle_timeout
    failures = 0        # consecutive sessions without a 220
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                log("stopped opening at the %.0f s deadline" % args.idle_timeout)
                break
            if failures >= 5 or not frugal.alive():
                log("stopped opening: %s" % ("frugal exited" if not frugal.alive()
                                              else "5 sessions in a row without a 220"))
                break
            try:
                s = socket.create_connection(("127.0.0.1", frugal.port), timeout=3)
            except OSError:
                banners["error"] += 1
                failures += 1
                continue
            try:
                b = s.recv(512)
            except OSError:
                b = b""
            code = b[:3].decode(errors="replace")
            if code in ("220", "421"):
                banners[code] += 1
            else:
                banners["other" if b else "error"] += 1
            failures = 0 if code == "220" else failures + 1
            socks.append(s)
        held = banners["220"]
        rss1 = vm_rss_kib(pid)
        all1, tcp1, nontcp1, unix1 = socket_census({pid})
        fds1 = len(os.listdir("/proc/%d/fd" % pid))
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
    per = (rss1 - rss0) / held if held else None
    log("banners: 220=%d 421=%d other=%d no-answer=%d" % (banners["220"], banners["421"],
                                                         banners["other"], banners["error"]))
    log("                    0 sessions   %d sessions" % held)
    log("  VmRSS KiB        %11d   %11d" % (rss0, rss1))
    log("  descriptors      %11d   %11d" % (fds0, fds1))
    log("  TCP sockets      %11d   %11d" % (tcp0, tcp1))
    log("  non-TCP sockets  %11d   %11d   (of which in /proc/net/unix: %d -> %d)"
        % (nontcp0, nontcp1, unix0, unix1))
    if per is not None:
        log("  RSS per idle session: %.2f KiB  (target < %.0f KiB: %s)"
            % (per, TARGET_KIB_PER_SESSION, "MET" if per < TARGET_KIB_PER_SESSION else "NOT MET"))
    log("  non-TCP sockets constant: %s" % ("yes" if nontcp1 <= nontcp0 else
                                             "NO (+%d)" % (nontcp1 - nontcp0)))
    log("  idle VmData KiB: %s  (smtpd target <= %d KiB: %s)"
        % (", ".join("%s %s" % (k, fmt(v, "%d")) for k, v in sorted(vmdata.items())), TARGET_IDLE_VMDATA_KIB,
           "MET" if vmdata["smtpd"] is not None and vmdata["smtpd"] <= TARGET_IDLE_VMDATA_KIB else "NOT MET"))
    summary["idle"] = {"vmdata": vmdata,"sessions": held, "rss0": rss0, "rss1": rss1, "kib_per_session": per,
                       "nontcp0": nontcp0, "nontcp1": nontcp1, "unix0": unix0, "unix1": unix1,
                       "alive": frugal.alive()}


# --------------------------------------------------------------------------
# 3. dictionary attack under the container emulator

def read_line_reply(f):
    """Read one SMTP reply (possibly multi-line) from a file object; return the code or ''."""
    code = ""
    for _ in range(100):
        line = f.readline(1024)
        if not line:
            return code
        code = line[:3].decode(errors="replace")
        if line[3:4] != b"-":
            return code
    return code


class AttackStats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def inc(self, k, n=1):
        with self.lock:
            self.c[k] = self.c.get(k, 0) + n


def bot_session(port, src, stats, timeout, think):
    """One bot: banner, EHLO, MAIL, 3 RCPTs to random unknown users, QUIT, pausing `think`
    seconds before each command (a session lasts about 6 x think), all within `timeout`."""
    end = time.monotonic() + timeout

    def pause():
        time.sleep(max(0, min(think, end - time.monotonic() - 0.5)))
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                     source_address=(src, 0))
    except OSError:
        stats.inc("connect_failed")
        return
    got_banner = False
    try:
        s.settimeout(max(0.1, end - time.monotonic()))
        f = s.makefile("rb")
        code = read_line_reply(f)
        got_banner = bool(code)
        if code in ("220", "421"):
            stats.inc("answered")
            stats.inc("banner_" + code)
        else:
            stats.inc("no_banner")
            return
        if code != "220":
            return
        for cmd in (b"EHLO bot.spam.test", b"MAIL FROM:<bot@spam.test>"):
            pause()
            s.settimeout(max(0.1, end - time.monotonic()))
            s.sendall(cmd + b"\r\n")
            if not read_line_reply(f):
                stats.inc("dropped_mid_session")
                return
        for _ in range(3):
            pause()
            s.settimeout(max(0.1, end - time.monotonic()))
            u = "%08x" % random.getrandbits(32)
            s.sendall(("RCPT TO:<%s@%s>\r\n" % (u, DOMAIN)).encode())
            c = read_line_reply(f)
            if not c:
                stats.inc("dropped_mid_session")
                return
            stats.inc("rcpt_" + c[:1] + "xx")
        pause()
        s.settimeout(max(0.1, end - time.monotonic()))
        s.sendall(b"QUIT\r\n")
        read_line_reply(f)
        stats.inc("completed")
    except OSError:
        # a timeout or reset: before the banner it is unanswered, after it the session was cut
        stats.inc("dropped_mid_session" if got_banner else "no_banner")
    finally:
        try:
            s.close()
        except OSError:
            pass


def legit_message(port, i, stats, deadline_s):
    """One message; retry on 4xx and on connection trouble until its deadline."""
    end = time.monotonic() + deadline_s
    msg = ("From: legit@%s\r\nTo: %s\r\nSubject: legit %d\r\n\r\nhello %d\r\n"
           % (DOMAIN, RCPT, i, i))
    tries = 0
    while time.monotonic() < end:
        tries += 1
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=max(1, end - time.monotonic()),
                              source_address=("127.0.0.1", 0)) as c:
                c.sendmail("legit@" + DOMAIN, [RCPT], msg)
            stats.inc("legit_accepted")
            stats.inc("legit_tries", tries)
            return
        except smtplib.SMTPRecipientsRefused as e:
            codes = [v[0] for v in e.recipients.values()]
            if not all(400 <= c < 500 for c in codes):
                stats.inc("legit_rejected_5xx")
                return
        except smtplib.SMTPResponseException as e:
            if not 400 <= e.smtp_code < 500:
                stats.inc("legit_rejected_5xx")
                return
        except (smtplib.SMTPException, OSError):
            pass
        time.sleep(min(0.5, max(0, end - time.monotonic())))
    stats.inc("legit_gave_up")
    stats.inc("legit_tries", tries)


def sample_nontcp(mta, stop_ev, peak):
    while not stop_ev.is_set():
        try:
            pids = mta.pids()
            if pids:
                _a, _t, nontcp, _u = socket_census(pids)
                peak["nontcp"] = max(peak.get("nontcp", 0), nontcp)
                peak["procs"] = max(peak.get("procs", 0), len(pids))
        except OSError:
            pass
        stop_ev.wait(0.25)


def read_beancounters(path):
    """{resource: (held, maxheld, barrier, limit, failcnt)} from a user_beancounters file."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if parts and parts[0].endswith(":"):
                    parts = parts[1:]
                if len(parts) == 6 and parts[0].isalpha():
                    try:
                        out[parts[0]] = tuple(int(x) for x in parts[1:])
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def scan_log(path, mta_name):
    fatal = panic = deaths = 0
    pat_death = re.compile(r"warning: process \S+ pid \d+ (exit status [1-9]\d*|killed by signal \d+)")
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if " fatal: " in line or line.startswith("fatal:"):
                    fatal += 1
                if " panic: " in line or line.startswith("panic:"):
                    panic += 1
                if mta_name == "postfix" and pat_death.search(line):
                    deaths += 1
    except OSError:
        pass
    return fatal, panic, deaths


def run_attack_on(mta, args):
    stats = AttackStats()
    stop_ev = threading.Event()
    peak = {}
    sampler = threading.Thread(target=sample_nontcp, args=(mta, stop_ev, peak), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    total, conc, dur = args.attack_bots, args.attack_concurrency, args.attack_duration
    next_job = [0]
    job_lock = threading.Lock()
    hard_stop = t0 + dur + 20
    # `conc` bots always connected; each session paced so the `total` connections take
    # about the duration: 6 pauses of `think` per session
    think = dur * conc / total / 6.0

    def bot_worker(w):
        src = "127.0.1.%d" % (w % 250 + 1)   # bots are not in mynetworks (127.0.0.1/32)
        while True:
            with job_lock:
                j = next_job[0]
                if j >= total:
                    return
                next_job[0] += 1
            if time.monotonic() >= hard_stop:
                stats.inc("bots_not_started")
                continue
            stats.inc("bots_started")
            bot_session(mta.port, src, stats, args.bot_timeout, think)

    bots = [threading.Thread(target=bot_worker, args=(w,), daemon=True) for w in range(conc)]
    for b in bots:
        b.start()
    legit = []
    for i in range(int(dur)):
        at = t0 + i
        while time.monotonic() < at:
            time.sleep(min(0.05, at - time.monotonic()))
        th = threading.Thread(target=legit_message, args=(mta.port, i, stats, 10), daemon=True)
        th.start()
        stats.inc("legit_sent")
        legit.append(th)
    for th in bots + legit:
        th.join(timeout=max(0.1, hard_stop + args.bot_timeout + 5 - time.monotonic()))
    stop_ev.set()
    sampler.join(timeout=2)
    stats.inc("elapsed_ms", int((time.monotonic() - t0) * 1000))
    return stats.c, peak


def bench_attack(frugal_bin, args, tmp, summary, postfix_skip):
    section("dictionary attack under the container emulator")
    so = args.vzemul or os.path.join(REPO, "build", "tests", "vzemul.so")
    if not os.path.exists(so):
        log("skipped: %s not found (the limits engineer's emulator, tests/emul/vzemul.c;"
            " `make build/tests/vzemul.so` once it exists)" % os.path.relpath(so, REPO))
        summary["attack"] = "skipped: no %s" % os.path.relpath(so, REPO)
        return
    so = os.path.abspath(so)
    log("emulator %s, numothersock=%d numtcpsock=%d; %d bot connections (%d at a time, %d s"
        " timeout each: EHLO, MAIL, 3 x RCPT unknown user, QUIT, paced to last about %d s in"
        " all) from 127.0.1.x, and a legitimate client (127.0.0.1) sending one message per"
        " second, retrying on 4xx"
        % (so, args.numothersock, args.numtcpsock, args.attack_bots, args.attack_concurrency,
           args.bot_timeout, args.attack_duration))
    out = {}
    sides = []
    if frugal_bin:
        sides.append("frugal")
    if postfix_skip is None:
        sides.append("postfix")
    else:
        log("postfix side skipped: " + postfix_skip)
    for side in sides:
        adir = os.path.join(tmp, "attack-" + side)
        os.makedirs(adir, exist_ok=True)
        bc = os.path.join(adir, "user_beancounters")
        env = {"LD_PRELOAD": so,
               "VZEMUL_NUMOTHERSOCK": str(args.numothersock),
               "VZEMUL_NUMTCPSOCK": str(args.numtcpsock),
               "VZEMUL_FILE": bc,
               "VZEMUL_STATE": os.path.join(adir, "vzemul.state")}
        if side == "frugal":
            mta = Frugal(frugal_bin, adir, env_extra=env, tag="mta", mynetworks="127.0.0.1/32",
                         extra_conf={"beancounters_file": bc})
        else:
            mta = Postfix(adir, env_extra=env, tag="mta", mynetworks="127.0.0.1/32")
        res = {"started": False}
        try:
            mta.setup()
            started = mta.start()
            res["started"] = started
            if not started:
                res["log_tail"] = tail(mta.logfile, 6) + (tail(mta.stderr, 6) if side == "frugal" else "")
            else:
                c, peak = run_attack_on(mta, args)
                res.update(c)
                res["peak_nontcp_sampled"] = peak.get("nontcp")
                res["peak_procs"] = peak.get("procs")
                res["alive_at_end"] = mta.alive()
        finally:
            proc = mta.proc
            mta.stop()
            res["exit_status"] = proc.returncode if proc is not None else None
            logs = [mta.logfile] + ([mta.stderr] if side == "frugal" else [])
            fatal = panic = deaths = 0
            for lp in logs:
                a, b, d = scan_log(lp, side)
                fatal, panic, deaths = fatal + a, panic + b, deaths + d
            res.update(fatal=fatal, panic=panic, child_deaths=deaths)
            # every preloaded process rewrites the file from the shared counters when it
            # starts; a program that closed the emulator's descriptor (Postfix's master
            # does) leaves it stale, so have one more process write it now
            try:
                subprocess.run(["/bin/true"], env=dict(os.environ, **env), timeout=10)
            except (OSError, subprocess.SubprocessError):
                pass
            beans = read_beancounters(bc)
            if "numothersock" in beans:
                res["bc_numothersock_maxheld"] = beans["numothersock"][1]
                res["bc_numothersock_failcnt"] = beans["numothersock"][4]
            if "numtcpsock" in beans:
                res["bc_numtcpsock_maxheld"] = beans["numtcpsock"][1]
                res["bc_numtcpsock_failcnt"] = beans["numtcpsock"][4]
        out[side] = res
    log("")
    rows = [
        ("started and greeting", lambda r: "yes" if r.get("started") else "NO"),
        ("legit accepted / sent", lambda r: "%d/%d" % (r.get("legit_accepted", 0), r.get("legit_sent", 0))),
        ("legit tries (incl. retries)", lambda r: str(r.get("legit_tries", 0))),
        ("bot connections started", lambda r: str(r.get("bots_started", 0))),
        ("answered 220 / 421", lambda r: "%d / %d" % (r.get("banner_220", 0), r.get("banner_421", 0))),
        ("no banner / connect failed", lambda r: "%d / %d" % (r.get("no_banner", 0), r.get("connect_failed", 0))),
        ("cut mid-session", lambda r: str(r.get("dropped_mid_session", 0))),
        ("bot RCPT 5xx / 4xx / 2xx", lambda r: "%d / %d / %d" % (r.get("rcpt_5xx", 0), r.get("rcpt_4xx", 0), r.get("rcpt_2xx", 0))),
        ("fatal / panic log lines", lambda r: "%d / %d" % (r.get("fatal", 0), r.get("panic", 0))),
        ("process deaths", lambda r: str(r.get("child_deaths", 0) + (0 if r.get("alive_at_end", True) else 1))),
        ("alive at end", lambda r: {True: "yes", False: "NO", None: "n/a"}[r.get("alive_at_end")]),
        ("peak non-TCP sockets (/proc)", lambda r: fmt(r.get("peak_nontcp_sampled"), "%d")),
        ("numothersock maxheld/failcnt", lambda r: "%s/%s" % (fmt(r.get("bc_numothersock_maxheld"), "%d"),
                                                               fmt(r.get("bc_numothersock_failcnt"), "%d"))),
        ("numtcpsock maxheld/failcnt", lambda r: "%s/%s" % (fmt(r.get("bc_numtcpsock_maxheld"), "%d"),
                                                             fmt(r.get("bc_numtcpsock_failcnt"), "%d"))),
    ]
    log("  %-30s" % "" + "".join("%18s" % s for s in out))
    for label, f in rows:
        log("  %-30s" % label + "".join("%18s" % f(r) for r in out.values()))
    for name, r in out.items():
        if not r.get("started"):
            log("  %s did not start under the emulator (exit status %s); its log ends:\n%s"
                % (name, r.get("exit_status"), r.get("log_tail", "").rstrip()))
    summary["attack"] = out


# --------------------------------------------------------------------------

# --------------------------------------------------------------------------
# 4. TLS: idle STARTTLS sessions and handshakes, same certificate

def pss_kib(pids):
    """summed proportional set size (shared pages split between their users)"""
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_ms(pids):
    """user+system CPU of the live processes and their reaped children, ms"""
    return cpu_ticks(pids) * 1000.0 / os.sysconf("SC_CLK_TCK")


def tls_client_context():
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def starttls_session(port, ctx, timeout=10):
    """connect, EHLO, STARTTLS, EHLO: the TLS socket (idle, ready for MAIL), or None"""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    f = s.makefile("rb")
    try:
        if not read_line_reply(f).startswith("220"):
            raise OSError("no 220 banner")
        s.sendall(b"EHLO bench.example.org\r\n")
        if not read_line_reply(f).startswith("250"):
            raise OSError("EHLO refused")
        s.sendall(b"STARTTLS\r\n")
        if not read_line_reply(f).startswith("220"):
            raise OSError("STARTTLS refused")
        f.close()
        t = ctx.wrap_socket(s, server_hostname="bench.example.test")
        t.sendall(b"EHLO bench.example.org\r\n")
        tf = t.makefile("rb")
        if not read_line_reply(tf).startswith("250"):
            raise OSError("EHLO after TLS refused")
        tf.close()
        return t
    except Exception:
        s.close()
        raise


def handshake_worker(port, count, deadline, q):
    """child process: `count` implicit-TLS handshakes in a row (new session each), then report"""
    import ssl
    ctx = tls_client_context()
    ctx.options |= ssl.OP_NO_TICKET      # a full handshake every time, as a new client makes
    ok = bad = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="bench.example.test") as t:
                    if t.recv(512)[:3] == b"220":
                        t.sendall(b"QUIT\r\n")
                        ok += 1
                    else:
                        bad += 1
        except OSError:
            bad += 1
    q.put((ok, bad))


def handshake_run(mta, port, args):
    """args.tls_clients processes, args.tls_handshakes in all: handshakes/s and the MTA's CPU ms each"""
    import multiprocessing
    ctxm = multiprocessing.get_context("fork")
    q = ctxm.Queue()
    per = max(1, args.tls_handshakes // args.tls_clients)
    deadline = time.monotonic() + 120
    pids = mta.pids()
    c0 = cpu_ms(pids)
    t0 = time.monotonic()
    procs = [ctxm.Process(target=handshake_worker, args=(port, per, deadline, q))
             for _ in range(args.tls_clients)]
    for p in procs:
        p.start()
    res = [q.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(10)
    dt = time.monotonic() - t0
    ok = sum(r[0] for r in res)
    bad = sum(r[1] for r in res)
    c1 = cpu_ms(pids | mta.pids())
    return {"ok": ok, "bad": bad, "rate": ok / dt if dt > 0 else None,
            "cpu_ms": (c1 - c0) / ok if ok else None}


def tls_idle(mta, args):
    """PSS of all the MTA's processes before and with N idle STARTTLS sessions: KiB per session"""
    ctx = tls_client_context()
    for _ in range(5):      # warm-up: one-time allocations are not charged per session
        try:
            starttls_session(mta.port, ctx).close()
        except OSError:
            pass
    time.sleep(1.0)         # Postfix: let the warm-up smtpd processes go idle
    pss0 = pss_kib(mta.pids())
    socks, failed = [], 0
    try:
        for _ in range(args.tls_idle_sessions):
            try:
                socks.append(starttls_session(mta.port, ctx))
            except OSError:
                failed += 1
                if failed >= 5:
                    break
        end = time.monotonic() + 3     # settle: every server-side process has finished its handshake
        pss1 = pss_kib(mta.pids())
        while time.monotonic() < end:
            time.sleep(0.5)
            pss1 = max(pss1, pss_kib(mta.pids()))
        nprocs = len(mta.pids())
    finally:
        for t in socks:
            try:
                t.close()
            except OSError:
                pass
    n = len(socks)
    return {"sessions": n, "failed": failed, "pss0": pss0, "pss1": pss1, "procs": nprocs,
            "kib_per_session": (pss1 - pss0) / n if n else None}


def make_cert(tmp):
    cert, key = os.path.join(tmp, "bench-cert.pem"), os.path.join(tmp, "bench-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-subj", "/CN=bench.example.test",
                    "-days", "2"], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    return cert, key


def bench_tls(frugal_bin, args, tmp, summary, postfix_skip, started):
    section("TLS: %d idle STARTTLS sessions (PSS per session) and implicit-TLS handshakes per second "
            "(%d clients, %d handshakes, %d runs), same ECDSA P-256 certificate"
            % (args.tls_idle_sessions, args.tls_clients, args.tls_handshakes, args.tls_runs))
    cert, key = make_cert(tmp)
    mtas = []
    if frugal_bin:
        users = os.path.join(tmp, "bench-users")   # smtps is a submission listener: it needs its table
        open(users, "w").close()
        subprocess.run([frugal_bin, "map", users], check=True, capture_output=True, timeout=60)
        f = Frugal(frugal_bin, tmp, tag="frugal-tls",
                   extra_conf={"smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key,
                               "smtpd_tls_security_level": "may", "smtpd_timeout": "600s",
                               "smtpd_sasl_users": "cdb:" + users})
        f.smtps_port = free_port()
        f.extra_conf["smtps_listen"] = "127.0.0.1:%d" % f.smtps_port
        f.setup()
        started.append(f)
        if f.start():
            mtas.append(f)
        else:
            log(f.explain_failure())
    if not postfix_skip:
        p = Postfix(tmp, tag="postfix-tls")
        p.setup()
        p.smtps_port = free_port()
        p._postconf("-e", "smtpd_tls_cert_file=" + cert, "smtpd_tls_key_file=" + key,
                    "smtpd_tls_security_level=may", "smtpd_timeout=600s")
        with open(os.path.join(p.confdir, "master.cf"), "a") as mf:
            mf.write("127.0.0.1:%d inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n" % p.smtps_port)
        started.append(p)
        if p.start():
            mtas.append(p)
        else:
            log("postfix did not start:\n" + tail(p.logfile))
    out = {}
    for m in mtas:
        r = out[m.name] = {"idle": tls_idle(m, args), "runs": []}
        i = r["idle"]
        log("%-8s idle: %d STARTTLS sessions (%d failed), PSS %d -> %d KiB over %d processes: %s KiB/session"
            % (m.name, i["sessions"], i["failed"], i["pss0"], i["pss1"], i["procs"],
               fmt(i["kib_per_session"], "%.1f")))
        time.sleep(2)   # the idle sessions' ends are processed before the timed part
    for run in range(args.tls_runs):   # alternating, as the throughput runs
        for m in mtas:
            h = handshake_run(m, m.smtps_port, args)
            out[m.name]["runs"].append(h)
            log("%-8s run %d: %d handshakes (%d failed), %s/s, MTA CPU %s ms per handshake"
                % (m.name, run + 1, h["ok"], h["bad"], fmt(h["rate"], "%.0f"), fmt(h["cpu_ms"], "%.2f")))
    for m in mtas:
        m.stop()
    for name, r in out.items():
        rates = [h["rate"] for h in r["runs"] if h["rate"]]
        cpus = [h["cpu_ms"] for h in r["runs"] if h["cpu_ms"]]
        r["rate"] = median_or_none(rates)
        r["rate_range"] = (min(rates), max(rates)) if rates else None
        r["cpu_ms"] = median_or_none(cpus)
    if "frugal" in out and "postfix" in out:
        fi, pi = out["frugal"]["idle"]["kib_per_session"], out["postfix"]["idle"]["kib_per_session"]
        out["mem_ratio"] = fi / pi if fi is not None and pi else None
        fr, pr = out["frugal"]["rate"], out["postfix"]["rate"]
        out["rate_ratio"] = fr / pr if fr and pr else None
        # the per-run ratio: neighbours in time share the machine's noise
        rr = [a["rate"] / b["rate"] for a, b in zip(out["frugal"]["runs"], out["postfix"]["runs"])
              if a["rate"] and b["rate"]]
        out["rate_ratio_range"] = (min(rr), max(rr)) if rr else None
    summary["tls"] = out


def find_frugal(args):
    if args.frugal_bin:
        p = args.frugal_bin
    else:
        p = os.path.join(REPO, "frugal")
    if os.path.isfile(p) and os.access(p, os.X_OK):
        return os.path.abspath(p), None
    return None, "%s not found or not executable (build it with `make frugal`)" % p


# --------------------------------------------------------------------------
# 5. the screen: issue 17's dictionary attack, frugal's screen against postscreen

SCREEN_DNS_HOST = "127.0.0.153"   # port 53: Postfix's dnsblog asks the system resolver


class PostscreenPostfix(Postfix):
    """Postfix with postscreen in front of smtpd (Postfix's stock master.cf lines, chroot off),
    started in a mount namespace whose /etc/resolv.conf names the bench's DNS server."""

    def _write_master(self, src):
        super()._write_master(src)
        path = os.path.join(self.confdir, "master.cf")
        with open(path) as f:
            lines = f.readlines()
        out = []
        for line in lines:
            if line.startswith("127.0.0.1:%d " % self.port):
                out.append("127.0.0.1:%d inet n - n - 1 postscreen\n" % self.port)
                out.append("smtpd pass - - n - - smtpd\n")
                continue
            out.append(line)
        out.append("dnsblog unix - - n - 0 dnsblog\ntlsproxy unix - - n - 0 tlsproxy\n")
        with open(path, "w") as f:
            f.writelines(out)

    def start(self, deadline_s=30):
        resolv = os.path.join(self.root, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:2 attempts:1\n" % SCREEN_DNS_HOST)
        os.chmod(resolv, 0o644)
        self.cmd_prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                           'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv]
        return super().start(deadline_s)


def screen_bot(addr, port, payload, timeout):
    """one bot: connect from addr, talk first if payload, read the first line: its code or a word"""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.bind((addr, 0))
        s.connect(("127.0.0.1", port))
        if payload:
            s.sendall(payload)
        f = s.makefile("rb")
        while True:
            line = f.readline()
            if not line:
                return "eof"
            if line[:4] == b"220-":     # postscreen's teaser banner: the verdict comes after it
                continue
            if line[:4] == b"220 ":     # a session: polite bots leave
                s.sendall(b"QUIT\r\n")
            return line[:3].decode("latin-1")
    except socket.timeout:
        return "timeout"
    except OSError:
        return "error"
    finally:
        s.close()


def screen_legit(addr, port, timeout=30):
    """one message from a client that waits for the banner: seconds from connect to the 221, or None"""
    t0 = time.monotonic()
    try:
        c = smtplib.SMTP(timeout=timeout, source_address=(addr, 0))
        c.connect("127.0.0.1", port)
        c.ehlo("legit.example.org")
        c.sendmail("legit@example.org", [RCPT], "Subject: legit\r\n\r\nhello\r\n")
        c.quit()
        return time.monotonic() - t0
    except (OSError, smtplib.SMTPException):
        return None


def screen_run(mta, args, listed, talking, legit, duration):
    """bots from 127.LISTED.x.y (listed, silent) and 127.TALKING.x.y (talk first), paced over
    duration seconds (0: as fast as they go), with the legitimate client or without"""
    bots = [("127.%d.%d.%d" % (listed, i // 250, i % 250 + 1), None) for i in range(args.screen_bots // 2)]
    bots += [("127.%d.%d.%d" % (talking, i // 250, i % 250 + 1), b"EHLO bot.example\r\nMAIL FROM:<a@b>\r\n")
             for i in range(args.screen_bots - len(bots))]
    random.Random(17).shuffle(bots)
    legit_addr = "127.0.0.9"
    codes, lat, lock = {}, [], threading.Lock()
    queue = list(bots)
    done = threading.Event()

    pace = duration / len(bots)

    def bot_worker():
        while True:
            with lock:
                if not queue:
                    return
                addr, payload = queue.pop()
                due = t0 + (len(bots) - len(queue) - 1) * pace
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            c = screen_bot(addr, mta.port, payload, 10)
            with lock:
                codes[c] = codes.get(c, 0) + 1

    def legit_worker():
        while not done.is_set():
            t = screen_legit(legit_addr, mta.port)
            lat.append(t)
            time.sleep(0.05)
    pids = mta.pids()
    c0 = cpu_ticks(pids)
    t0 = time.monotonic()
    lt = threading.Thread(target=legit_worker)
    if legit:
        lt.start()
    ts = [threading.Thread(target=bot_worker) for _ in range(args.screen_concurrency)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    wall = time.monotonic() - t0
    c1 = cpu_ticks(pids | mta.pids())   # Postfix's exited postscreen/smtpd children: the master's cutime
    done.set()
    if legit:
        lt.join(60)
    cpu_s = (c1 - c0) / os.sysconf("SC_CLK_TCK")
    good = sorted(x for x in lat if x is not None)
    refused = sum(v for k, v in codes.items() if k[:1] in ("4", "5"))
    return {"bots": len(bots), "codes": codes, "refused": refused, "wall": wall, "cpu_s": cpu_s,
            "per_cpu_s": len(bots) / cpu_s if cpu_s > 0 else None,
            "legit_sent": len(lat), "legit_ok": len(good),
            "p50_ms": good[len(good) // 2] * 1000 if good else None,
            "p99_ms": good[min(len(good) - 1, int(len(good) * 0.99))] * 1000 if good else None}


def bench_screen(frugal_bin, args, tmp, summary, postfix_skip):
    section("the screen: dictionary attack against frugal's screen and Postfix's postscreen")
    sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
    from dnsserver import DNSServer
    records = {"%d.%d.%d.127.bl.test" % (i % 250 + 1, i // 250, n): [("A", "127.0.0.2", 0)]
               for i in range(args.screen_bots // 2) for n in (1, 3)}
    try:
        # postscreen's dnsblog asks port 53 of the resolver in /etc/resolv.conf: the server must be there
        dns = _dns_on_53(DNSServer, records)
    except OSError as e:
        log("no DNS server on %s:53 (%s): the Postfix side is skipped" % (SCREEN_DNS_HOST, e))
        postfix_skip = postfix_skip or "no DNS server on port 53"
        dns = DNSServer(records).start()
    dns_addr = "%s:%d" % (dns.udp.getsockname()[0], dns.port)
    log("%d bot connections, at most %d at a time: half listed on bl.test (127.1.x.y, silent), half talking"
        " before the banner (127.2.x.y), as fast as they go, for the MTA's CPU per bot; then as many"
        " from 127.3/127.4, paced over %.0f s, while a legitimate client (127.0.0.9, not in"
        " mynetworks) sends a message, waits 50 ms, and again: its latency from connect to 221."
        " Pregreet wait 1 s, bl.test*3 with threshold 3, both drop"
        % (args.screen_bots, args.screen_concurrency, args.screen_duration))
    out = {}
    try:
        sides = [("frugal", None)] if frugal_bin else []
        if postfix_skip is None:
            sides.append(("postfix", None))
        else:
            log("postfix side skipped: " + postfix_skip)
        for side, _ in sides:
            if side == "frugal":
                mta = Frugal(frugal_bin, tmp, tag="screen-frugal", mynetworks="127.0.0.1/32",
                             extra_conf={"smtpd_pregreet_wait": "1s", "postscreen_dnsbl_sites": "bl.test*3",
                                         "postscreen_dnsbl_threshold": 3, "dns_servers": dns_addr,
                                         "smtpd_client_connection_count_limit": 2000,
                                         "smtpd_concurrency_limit": 2000})
            else:
                mta = PostscreenPostfix(tmp, tag="screen-postfix", mynetworks="127.0.0.1/32",
                                        extra={"postscreen_greet_wait": "1s",
                                               "postscreen_greet_action": "drop",
                                               "postscreen_dnsbl_sites": "bl.test*3",
                                               "postscreen_dnsbl_threshold": "3",
                                               "postscreen_dnsbl_action": "drop",
                                               "postscreen_access_list": "permit_mynetworks"})
            mta.setup()
            try:
                if not mta.start():
                    log("%s did not start:\n%s" % (side, tail(mta.logfile)))
                    continue
                screen_legit("127.0.0.9", mta.port)   # passes the pregreet wait once: remembered on both sides
                # CPU per bot: the attack alone, as fast as it goes; then, from other addresses,
                # paced, with the legitimate client sending meanwhile: its latency
                r = screen_run(mta, args, 1, 2, False, 0)
                r2 = screen_run(mta, args, 3, 4, True, args.screen_duration)
                r.update({k: r2[k] for k in ("legit_sent", "legit_ok", "p50_ms", "p99_ms")})
                r["refused_paced"] = r2["refused"]
                out[side] = r
            finally:
                mta.stop()
    finally:
        dns.stop()
    log("")
    rows = [
        ("bot connections", lambda r: "%d" % r["bots"]),
        ("refused (4xx/5xx)", lambda r: "%d" % r["refused"]),
        ("refused, paced run", lambda r: "%d" % r["refused_paced"]),
        ("first replies", lambda r: " ".join("%s:%d" % kv for kv in sorted(r["codes"].items()))),
        ("wall s (as fast as it goes)", lambda r: "%.1f" % r["wall"]),
        ("MTA CPU s", lambda r: "%.2f" % r["cpu_s"]),
        ("bot connections per CPU s", lambda r: fmt(r["per_cpu_s"])),
        ("legit messages ok/sent", lambda r: "%d/%d" % (r["legit_ok"], r["legit_sent"])),
        ("legit latency p50 ms", lambda r: fmt(r["p50_ms"])),
        ("legit latency p99 ms", lambda r: fmt(r["p99_ms"])),
    ]
    log("  %-30s" % "" + "".join("%22s" % k for k in out))
    for label, f in rows:
        log("  %-30s" % label + "".join("%22s" % f(r) for r in out.values()))
    if "frugal" in out and "postfix" in out:
        f, p = out["frugal"], out["postfix"]
        if f["per_cpu_s"] and p["per_cpu_s"]:
            r = f["per_cpu_s"] / p["per_cpu_s"]
            log("  ratio frugal/postfix bot connections per CPU s %.1fx (target >= 5x: %s)"
                % (r, "met" if r >= 5 else "NOT met"))
        if f["p99_ms"] is not None and p["p99_ms"] is not None:
            log("  legit p99 frugal %.0f ms, postfix %.0f ms (target lower: %s)"
                % (f["p99_ms"], p["p99_ms"], "met" if f["p99_ms"] < p["p99_ms"] else "NOT met"))
    summary["screen"] = out


def _dns_on_53(cls, records):
    """the bench's DNS server on SCREEN_DNS_HOST:53 (UDP and TCP), or OSError"""
    d = cls.__new__(cls)
    d.records = {k.lower().rstrip("."): list(v) for k, v in records.items()}
    d.servfail, d.delay, d.truncate, d.ttl = set(), {}, set(), 300
    d.counts, d.total, d.tcp_queries, d.log = {}, 0, 0, []
    d.lock = threading.Lock()
    d.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    d.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        d.udp.bind((SCREEN_DNS_HOST, 53))
        d.tcp.bind((SCREEN_DNS_HOST, 53))
    except OSError:
        d.udp.close()
        d.tcp.close()
        raise
    d.port = 53
    d.tcp.listen(16)
    d.stopping = False
    d.threads = []
    return d.start()


def print_summary(summary, args):
    section("summary")
    for k in ("frugal", "postfix"):
        if summary.get(k + "_skip"):
            log("%s: skipped: %s" % (k, summary[k + "_skip"]))
    t = summary.get("throughput")
    if isinstance(t, dict):
        for name, d in t["medians"].items():
            log("throughput %-8s median accept %s msg/s, delivered to Maildir %s msg/s (%d/%d good runs)"
                % (name, fmt(d["accept_rate"]), fmt(d["deliver_rate"]), d["ok_runs"], d["runs"]))
        for label, r in t["ratios"].items():
            target = TARGET_OWNERS_RATIO if label.startswith("two owners") else TARGET_THROUGHPUT_RATIO
            log("throughput ratio %-36s %.2fx  target >= %.2fx: %s"
                % (label if label.startswith("two owners") else "frugal/postfix " + label, r, target,
                   "MET" if r >= target else "NOT MET"))
    elif t:
        log("throughput: " + t)
    i = summary.get("idle")
    if isinstance(i, dict):
        log("idle: %d sessions, RSS %d -> %d KiB = %s KiB/session (target < %.0f: %s); "
            "non-TCP sockets %d -> %d (unix %d -> %d); idle VmData smtpd %s KiB (target <= %d)"
            % (i["sessions"], i["rss0"], i["rss1"], fmt(i["kib_per_session"], "%.2f"),
               TARGET_KIB_PER_SESSION,
               "MET" if i["kib_per_session"] is not None and i["kib_per_session"] < TARGET_KIB_PER_SESSION else "NOT MET",
               i["nontcp0"], i["nontcp1"], i["unix0"], i["unix1"], fmt(i["vmdata"].get("smtpd"), "%d"),
               TARGET_IDLE_VMDATA_KIB))
    elif i:
        log("idle: " + i)
    rl = summary.get("relay")
    if isinstance(rl, dict):
        for mode in ("reuse", "no reuse"):
            e = rl.get(mode)
            if not e:
                continue
            for name, d in e["medians"].items():
                log("relay %-8s (%s) median %s msg/s (range %s), peak fds %s, non-TCP %s, processes %s, "
                    "connections to the sink %s (%d/%d good runs)"
                    % (name, mode, fmt(d["rate"]), "%.0f-%.0f" % d["range"] if d["range"] else "n/a",
                       fmt(d["peak_fds"], "%d"), fmt(d["peak_nontcp"], "%d"), fmt(d["peak_procs"], "%d"),
                       fmt(d["peak_conns"], "%d"), d["ok_runs"], d["runs"]))
            if e.get("ratio") is not None:
                log("relay ratio frugal/postfix (%s) %.2fx (per run %s)  target >= %.0fx: %s"
                    % (mode, e["ratio"], "%.2f-%.2f" % e["ratio_range"] if e.get("ratio_range") else "n/a",
                       TARGET_RELAY_RATIO, "MET" if e["ratio"] >= TARGET_RELAY_RATIO else "NOT MET"))
            if "inside_budget" in e:
                log("relay frugal (%s) delivery concurrency inside the budget (%s): %s"
                    % (mode, fmt(rl.get("frugal_deliveries_limit"), "%s"), "yes" if e["inside_budget"] else "NO"))
    elif rl:
        log("relay: " + rl)
    a = summary.get("attack")
    if isinstance(a, dict):
        for name, r in a.items():
            if not r.get("started"):
                log("attack %-8s did not start under the emulator (numothersock failcnt %s,"
                    " numtcpsock failcnt %s)" % (name, fmt(r.get("bc_numothersock_failcnt"), "%d"),
                                                 fmt(r.get("bc_numtcpsock_failcnt"), "%d")))
                continue
            log("attack %-8s legit %d/%d accepted, answered %d of %d bot connections, "
                "fatal %d panic %d deaths %d, peak non-TCP %s (numothersock maxheld %s)"
                % (name, r.get("legit_accepted", 0), r.get("legit_sent", 0), r.get("answered", 0),
                   r.get("bots_started", 0), r.get("fatal", 0), r.get("panic", 0),
                   r.get("child_deaths", 0) + (0 if r.get("alive_at_end", True) else 1),
                   fmt(r.get("peak_nontcp_sampled"), "%d"), fmt(r.get("bc_numothersock_maxheld"), "%d")))
    elif a:
        log("attack: " + a)
    t = summary.get("tls")
    if isinstance(t, dict):
        for name in ("frugal", "postfix"):
            if name in t:
                r = t[name]
                log("tls %-8s idle %s KiB/session (PSS); handshakes median %s/s (range %s), CPU %s ms each"
                    % (name, fmt(r["idle"]["kib_per_session"], "%.1f"), fmt(r["rate"]),
                       "%.0f-%.0f" % r["rate_range"] if r["rate_range"] else "n/a", fmt(r["cpu_ms"], "%.2f")))
        if t.get("mem_ratio") is not None:
            log("tls ratio frugal/postfix idle memory per session %.3f  target <= %.2f: %s"
                % (t["mem_ratio"], TARGET_TLS_MEM_RATIO, "MET" if t["mem_ratio"] <= TARGET_TLS_MEM_RATIO else "NOT MET"))
        if t.get("rate_ratio") is not None:
            log("tls ratio frugal/postfix handshakes/s %.2fx (per run %.2f-%.2f)  target > 1: %s"
                % (t["rate_ratio"], t["rate_ratio_range"][0], t["rate_ratio_range"][1],
                   "MET" if t["rate_ratio"] > 1 else "NOT MET"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frugal-bin", help="frugal binary (default: ./frugal at the repository root)")
    ap.add_argument("--runs", type=int, default=5, help="throughput runs per MTA (median)")
    ap.add_argument("--messages", type=int, default=2000, help="messages per throughput run")
    ap.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    ap.add_argument("--size", type=int, default=5120, help="message payload bytes")
    ap.add_argument("--one-per-session", dest="reuse", action="store_false",
                    help="a new connection per message (default: several per session, -d)")
    ap.add_argument("--only", action="append", choices=SECTIONS,
                    help="run only this section (repeatable)")
    ap.add_argument("--no-postfix", action="store_true", help="skip the Postfix side")
    ap.add_argument("--idle-sessions", type=int, default=1000)
    ap.add_argument("--vzemul", help="emulator .so (default build/tests/vzemul.so)")
    ap.add_argument("--numothersock", type=int, default=40)
    ap.add_argument("--numtcpsock", type=int, default=80)
    ap.add_argument("--attack-bots", type=int, default=1000)
    ap.add_argument("--attack-concurrency", type=int, default=50)
    ap.add_argument("--attack-duration", type=int, default=30)
    ap.add_argument("--tls-idle-sessions", type=int, default=50,
                    help="idle STARTTLS sessions (Postfix's default process limit is 100)")
    ap.add_argument("--tls-handshakes", type=int, default=600, help="handshakes per TLS run")
    ap.add_argument("--tls-clients", type=int, default=4, help="client processes making handshakes")
    ap.add_argument("--tls-runs", type=int, default=3, help="TLS handshake runs per MTA (median)")
    ap.add_argument("--relay-messages", type=int, default=2000, help="messages per relay run")
    ap.add_argument("--relay-runs", type=int, default=3, help="relay runs per MTA and mode (median)")
    ap.add_argument("--relay-reuse-only", dest="relay_no_reuse_skip", action="store_true",
                    help="relay: only the default mode (connection reuse on), not also without it")
    ap.add_argument("--screen-bots", type=int, default=2000, help="screen: bot connections")
    ap.add_argument("--screen-concurrency", type=int, default=50, help="screen: bots at a time")
    ap.add_argument("--screen-duration", type=float, default=10, help="screen: seconds the attack is paced over")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (for logs)")
    args = ap.parse_args()
    args.accept_timeout = 180
    args.deliver_timeout = 120
    args.idle_timeout = 60
    args.bot_timeout = 10
    for k in ("runs", "messages", "sessions", "size", "idle_sessions", "attack_bots",
              "attack_concurrency", "attack_duration", "tls_idle_sessions", "tls_handshakes",
              "tls_clients", "tls_runs", "relay_messages", "relay_runs"):
        if getattr(args, k) < 1:
            ap.error("--%s must be >= 1" % k.replace("_", "-"))
    # BENCH_ONLY (make bench BENCH_ONLY=relay): sections separated by commas or spaces
    env_only = [w for w in re.split(r"[,\s]+", os.environ.get("BENCH_ONLY", "")) if w]
    for w in env_only:
        if w not in SECTIONS:
            ap.error("BENCH_ONLY: unknown section %r (one of %s)" % (w, ", ".join(SECTIONS)))
    only = set(args.only or env_only or SECTIONS)

    # SIGTERM (e.g. from make or a CI timeout) takes the same clean-up path as Ctrl-C
    def on_term(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    raise_nofile(max(8192, args.idle_sessions + 1024))   # inherited by the MTAs we start

    summary = {}
    frugal_bin, why = find_frugal(args)
    if why:
        log("frugal side skipped: " + why)
        summary["frugal_skip"] = why
    postfix_skip = "--no-postfix" if args.no_postfix else Postfix.available()
    if postfix_skip:
        log("postfix side skipped: " + postfix_skip)
        summary["postfix_skip"] = postfix_skip

    tmp = tempfile.mkdtemp(prefix="frugal-bench-")
    os.chmod(tmp, 0o755)     # Postfix's daemons and the Maildir user must traverse it
    log("work directory %s" % tmp)
    started = []
    rc = 0
    t_start = time.monotonic()
    try:
        if "throughput" in only:
            mtas = []
            if frugal_bin:
                # the headline: the deployed configuration (two owners); beside it the
                # one-owner shortcut, labelled, when started as root
                variants = [("frugal", 2)] + ([("frugal-1owner", 1)] if os.geteuid() == 0 else [])
                if os.geteuid() != 0:
                    log("not root: frugal runs as one process as the current user, "
                        "not the deployed configuration (root, mail_owner %s, virtual_mailbox_owner %s)"
                        % (MAIL_OWNER, VMAIL_OWNER))
                for name, owners in variants:
                    f = Frugal(frugal_bin, tmp, tag=name, name=name, owners=owners,
                               extra_conf={"smtpd_client_connection_count_limit": 2000,
                                           "smtpd_concurrency_limit": 2000})
                    f.setup()
                    started.append(f)
                    if f.start():
                        mtas.append(f)
                    else:
                        log(f.explain_failure())
                        summary["frugal_skip"] = "did not start"
            if not postfix_skip:
                p = Postfix(tmp)
                p.setup()
                started.append(p)
                if p.start():
                    mtas.append(p)
                else:
                    log("postfix did not start:\n" + tail(p.logfile))
                    summary["postfix_skip"] = "did not start"
            if mtas:
                bench_throughput(mtas, args, summary)
            for m in mtas:
                m.stop()
        if "idle" in only:
            if frugal_bin:
                f = Frugal(frugal_bin, tmp, tag="frugal-idle",
                           extra_conf={"smtpd_client_connection_count_limit": 2000,
                                       "smtpd_concurrency_limit": 2000,
                                       "smtpd_timeout": "3600s"})
                f.setup()
                started.append(f)
                if f.start():
                    bench_idle(f, args, summary)
                else:
                    section("idle sessions")
                    log(f.explain_failure())
                    summary["idle"] = "frugal did not start"
                f.stop()
            else:
                summary["idle"] = "skipped: no frugal binary"
        if "relay" in only:
            bench_relay(frugal_bin, args, tmp, summary, postfix_skip, started)
        if "attack" in only:
            bench_attack(frugal_bin, args, tmp, summary, postfix_skip)
        if "tls" in only:
            bench_tls(frugal_bin, args, tmp, summary, postfix_skip, started)
        if "screen" in only:
            bench_screen(frugal_bin, args, tmp, summary, postfix_skip)
        print_summary(summary, args)
        log("bench took %.0f s" % (time.monotonic() - t_start))
    except KeyboardInterrupt:
        log("\ninterrupted: cleaning up")
        rc = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # finish the clean-up even on a second ^C
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for m in started:
            try:
                m.stop()
            except Exception as e:  # clean-up must go on
                log("warning: stopping %s: %s" % (m.name, e))
        if args.keep:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
