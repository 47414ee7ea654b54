"""tests/integration/realpeers.py: real receiving servers for the client tests,
each isolated in a temporary directory and listening on loopback only.

PostfixPeer: a whole Postfix instance (its own config_directory,
queue_directory, data_directory, Maildirs) delivering virtual mailboxes, the
approach of tests/bench/bench.py's Postfix class cut down to what a peer
needs.  Postfix's master needs root: available() says why not otherwise.

DovecotLmtp: Dovecot's master running only the LMTP service, on a unix socket
and a loopback port, users from a passwd-file, Maildirs and the quota plugin
under the temporary directory.  Unprivileged it runs as the caller; as root
its internal users are Debian's dovecot/dovenull and the mail belongs to
nobody (Dovecot refuses to write mail as root).
"""
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import wait_for, free_port, SLOW


def _which(tool):
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _connects(addr):
    try:
        if isinstance(addr, str):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(1)
            try:
                s.connect(addr)
            except OSError:
                s.close()
                raise
        else:
            s = socket.create_connection(addr, timeout=1)
    except OSError:
        return False
    try:
        return s.recv(512)        # the greeting: a server that is really up
    except OSError:
        return False
    finally:
        s.close()


class PostfixPeer:
    """Postfix on 127.0.0.1:port accepting mail for `domains`, users u1..u3 in each
    (virtual Maildirs); anything else gets Postfix's 550 5.1.1 at RCPT.
    settings: more main.cf lines (name -> value)."""

    USERS = ("u1", "u2", "u3")

    def __init__(self, domains, settings=None, hostname="pf.example.test"):
        self.dir = tempfile.mkdtemp(prefix="frugal-peer-pf-")
        os.chmod(self.dir, 0o755)     # the virtual agent (nobody) walks down to the Maildirs
        self.confdir = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.mailbase = os.path.join(self.dir, "mail")
        self.logfile = os.path.join(self.dir, "maillog")
        self.port = free_port()
        self.domains = list(domains)
        self.hostname = hostname
        self.settings = dict(settings or {})
        self.proc = None
        self._logf = None

    @staticmethod
    def available():
        """None, or why this machine cannot run a Postfix instance."""
        if os.geteuid() != 0:
            return "not root: Postfix's master needs root to start"
        for tool in ("postfix", "postconf"):
            if not _which(tool):
                return "%s not installed (contrib/deps.sh test)" % tool
        try:
            pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError:
            return "user postfix or group postdrop missing"
        return None

    def maildir(self, user, domain):
        return os.path.join(self.mailbase, domain, user, "Maildir")

    def messages(self, user, domain):
        new = os.path.join(self.maildir(user, domain), "new")
        out = []
        for n in sorted(os.listdir(new)) if os.path.isdir(new) else []:
            with open(os.path.join(new, n), "rb") as f:
                out.append(f.read())
        return out

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def postconf(self, *args):
        return subprocess.run(["postconf", "-c", self.confdir] + list(args), capture_output=True,
                              text=True, timeout=30 * SLOW, check=True).stdout

    def _write_master(self):
        """master.cf from the package's, chroot off, smtpd on 127.0.0.1:port the only inet service."""
        src = next(c for c in ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist",
                               "/etc/postfix/master.cf.proto") if os.path.exists(c))
        out, skip = [], False
        with open(src) as f:
            for line in f:
                if line[:1] in (" ", "\t") and line.strip():
                    if not skip:
                        out.append(line)
                    continue
                skip = False
                fields = line.split()
                if line.startswith("#") or len(fields) < 8:
                    out.append(line)
                    continue
                if fields[1] == "inet":
                    if not (fields[0] == "smtp" and fields[7] == "smtpd"):
                        skip = True
                        continue
                    fields[0] = "127.0.0.1:%d" % self.port
                fields[4] = "n"
                out.append("%-14s %-9s %s\n" % (fields[0], fields[1], " ".join(fields[2:])))
        with open(os.path.join(self.confdir, "master.cf"), "w") as f:
            f.writelines(out)

    def start(self):
        os.makedirs(self.confdir)
        open(os.path.join(self.confdir, "main.cf"), "w").close()
        self._write_master()
        pf = pwd.getpwnam("postfix")
        os.makedirs(self.queue, mode=0o755)
        os.makedirs(self.data, mode=0o700)
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        vm = pwd.getpwnam("nobody")
        os.makedirs(self.mailbase)
        os.chown(self.mailbase, vm.pw_uid, vm.pw_gid)
        boxes = ", ".join("%s@%s=%s/%s/Maildir/" % (u, d, d, u) for d in self.domains for u in self.USERS)
        d = {}
        for line in self.postconf("-d", "command_directory", "daemon_directory", "meta_directory",
                                  "shlib_directory", "sendmail_path", "newaliases_path",
                                  "mailq_path", "manpage_directory", "sample_directory").splitlines():
            k, _, v = line.partition(" = ")
            d[k.strip()] = v.strip()
        settings = dict(d, **{
            "compatibility_level": "3.6", "readme_directory": "no", "html_directory": "no",
            "setgid_group": "postdrop", "mail_owner": "postfix",
            "queue_directory": self.queue, "data_directory": self.data,
            "myhostname": self.hostname, "mydomain": "example.test", "myorigin": "$myhostname",
            "mydestination": "", "mynetworks": "127.0.0.0/8", "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4", "relayhost": "", "alias_maps": "", "alias_database": "",
            "biff": "no", "smtpd_banner": "$myhostname ESMTP", "maillog_file": "/dev/stdout",
            # no DNS at all: the machine's resolver may never answer
            "smtpd_peername_lookup": "no", "smtp_dns_support_level": "disabled",
            "virtual_mailbox_domains": " ".join(self.domains),
            "virtual_mailbox_maps": "inline:{ %s }" % boxes,
            "virtual_mailbox_base": self.mailbase,
            "virtual_uid_maps": "static:%d" % vm.pw_uid, "virtual_gid_maps": "static:%d" % vm.pw_gid,
            # loopback clients are "local" to Postfix by default: it would rewrite their headers
            "local_header_rewrite_clients": "",
            "queue_run_delay": "1s", "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
        })
        settings.update(self.settings)
        self.postconf("-e", *["%s=%s" % kv for kv in settings.items()])
        self._logf = open(self.logfile, "ab")
        self.proc = subprocess.Popen(["postfix", "-c", self.confdir, "start-fg"], stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("postfix exited: " + self.log())
            return _connects(("127.0.0.1", self.port))
        wait_for(up, 30, "postfix to greet on port %d" % self.port, interval=0.05)
        return self

    def stop(self):
        if self.proc is None:
            return
        subprocess.run(["postfix", "-c", self.confdir, "stop"], capture_output=True, timeout=30 * SLOW)
        try:
            self.proc.wait(timeout=20 * SLOW)
        except subprocess.TimeoutExpired:
            # start-fg is the master itself: its group holds the daemons it forked
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        self._logf.close()

    def cleanup(self):
        self.stop()
        if not os.environ.get("FRUGAL_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)


class DovecotLmtp:
    """Dovecot's LMTP on unix:self.socket and 127.0.0.1:self.port. users: name ->
    extra userdb fields (e.g. "userdb_quota_rule=*:storage=1K"); the user is the
    local part of the recipient (auth_username_format = %Ln), any domain."""

    def __init__(self, users, passwords=None, auth=False):
        """passwords: name -> plain-text password (passdb); auth: also Dovecot's SASL
        server on unix:self.auth_socket (PLAIN and LOGIN), for a Postfix in front."""
        self.passwords = passwords or {}
        self.auth = auth
        self.dir = tempfile.mkdtemp(prefix="frugal-peer-dc-")
        self.auth_socket = os.path.join(self.dir, "auth")
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "lmtp")
        self.port = free_port()
        self.logfile = os.path.join(self.dir, "dovecot.log")
        self.mailbase = os.path.join(self.dir, "mail")
        self.users = users
        self.proc = None

    @staticmethod
    def available():
        if not _which("dovecot"):
            return "dovecot not installed (contrib/deps.sh test)"
        if not os.path.exists("/usr/lib/dovecot/lmtp"):
            return "dovecot-lmtpd not installed (contrib/deps.sh test)"
        return None

    def maildir(self, user):
        return os.path.join(self.mailbase, user, "Maildir")

    def messages(self, user):
        new = os.path.join(self.maildir(user), "new")
        out = []
        for n in sorted(os.listdir(new)) if os.path.isdir(new) else []:
            with open(os.path.join(new, n), "rb") as f:
                out.append(f.read())
        return out

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self):
        me = pwd.getpwuid(os.getuid())
        if os.getuid() == 0:
            internal, login, mail = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull"), pwd.getpwnam("nobody")
        else:
            internal = login = mail = me
        os.makedirs(self.mailbase)
        os.chown(self.mailbase, mail.pw_uid, mail.pw_gid)
        with open(os.path.join(self.dir, "users"), "w") as f:
            for u, extra in self.users.items():
                pw = "{PLAIN}" + self.passwords[u] if u in self.passwords else ""
                f.write("%s:%s:%d:%d::%s/%s::%s\n" % (u, pw, mail.pw_uid, mail.pw_gid, self.mailbase, u, extra))
        auth = ""
        if self.auth:
            auth = f"""auth_mechanisms = plain login
disable_plaintext_auth = no
service auth {{
  unix_listener {self.auth_socket} {{
    mode = 0666
  }}
}}
"""
        conf = os.path.join(self.dir, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(f"""# written by tests/integration/realpeers.py
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.logfile}
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_internal_user = {internal.pw_name}
default_internal_group = {grp.getgrgid(internal.pw_gid).gr_name}
default_login_user = {login.pw_name}
first_valid_uid = 1
auth_username_format = %Ln
passdb {{
  driver = passwd-file
  args = {self.dir}/users
}}
userdb {{
  driver = passwd-file
  args = {self.dir}/users
}}
mail_location = maildir:~/Maildir
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
service lmtp {{
  unix_listener {self.socket} {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
""" + auth)
        with open(os.path.join(self.dir, "stdout"), "wb") as out:
            self.proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                with open(os.path.join(self.dir, "stdout"), errors="replace") as f:
                    raise AssertionError("dovecot exited: " + f.read() + self.log())
            return (_connects(self.socket) and _connects(("127.0.0.1", self.port)) and
                    (not self.auth or _connects(self.auth_socket)))
        wait_for(up, 30, "dovecot's LMTP to greet", interval=0.05)
        return self

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20 * SLOW)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def cleanup(self):
        self.stop()
        if not os.environ.get("FRUGAL_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)
