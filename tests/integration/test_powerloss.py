"""tests/integration/test_powerloss.py: durability against a power cut
(PRODUCT.md 3.1), and the duplicates a cut may cause.

A SIGKILL leaves the page cache intact, so it proves nothing about syncs.
Here the queue and both mailbox trees live on an ext4 image on a loop
device, mounted with commit=60 so that only what frugal synced reaches the
device. Clients load the daemon in the deployed configuration (started as
root, mail_owner and virtual_mailbox_owner two unprivileged users); at a
random moment every process of the instance is frozen (SIGSTOP, every
thread seen stopped, no write in flight on the device), the image is copied
(what a power cut would leave), and the daemon is killed. The copy is
checked with e2fsck, mounted in the same place and recovered by a fresh
daemon. Every message a client saw 250 for must be in a mailbox; a message
may be there twice only if its delivery was in flight at the cut (from its
start until its removal is synced), so the duplicates of a cut under load
are at most delivery_concurrency_limit, and a cut at rest (clients done, the
queue drained) has none. Cuts alternate: under load, at rest.

The copy is consistent: the loop device's write counters are read before
and after the copy and must not move (this kernel has no device-mapper to
suspend the device; the counters prove the same thing: nothing wrote).

Negative control: the same cut with build/nosync/frugal (core/sync.c built
with FRUGAL_TEST_NO_SYNC: every sync skipped) must lose acknowledged mail,
or this test could not see a missing sync.

Root only: it creates a user, a loop device and mounts. `make check` runs
FRUGAL_POWERLOSS_CUTS (3; 1 under ASan) cuts, `make powerloss` many more.
"""
import collections
import os
import pwd
import random
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import threading
import time
import unittest

from harness import Daemon, wait_for, free_port, SLOW, ROOT, FRUGAL, plain_build
from test_smtp_fire import FireSink

CUTS = int(os.environ.get("FRUGAL_POWERLOSS_CUTS", "3" if plain_build() else "1"))
CONCURRENCY = 4           # delivery_concurrency_limit: the duplicates bound of one cut
CLIENTS = 8
IMG_MB = 64
NOSYNC = os.environ.get("FRUGAL_NOSYNC_BIN", os.path.join(ROOT, "build", "nosync", "frugal"))
VUSER = "frugalpl"       # virtual_mailbox_owner, created for the test
MUSER = "nobody"         # mail_owner


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=120)


def threads_stopped(pids):
    """Every thread of every process is in the stopped state (none mid-syscall)."""
    for pid in pids:
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("T", "t", "Z", "X"):
                return False
    return True


def dev_writes(loopdev):
    """(write requests, sectors written, requests in flight) of a block device."""
    name = os.path.basename(loopdev)
    with open("/sys/block/%s/stat" % name) as f:
        s = [int(x) for x in f.read().split()]
    return s[4], s[6], s[8]


class PowerLoss(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.created_user = False
        if os.geteuid() != 0:
            return
        try:
            pwd.getpwnam(VUSER)
        except KeyError:
            sh("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", VUSER)
            cls.created_user = True

    @classmethod
    def tearDownClass(cls):
        if cls.created_user:
            sh("userdel", VUSER, check=False)

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: mounts an ext4 image on a loop device (the power cut is a copy of it)")
        for tool in ("mkfs.ext4", "e2fsck", "losetup", "mount", "umount"):
            if not shutil.which(tool):
                self.fail("%s not installed (contrib/deps.sh installs it)" % tool)
        r = sh("losetup", "-f", check=False)
        if r.returncode != 0:
            self.skipTest("no free loop device: %s" % r.stderr.strip())
        self.tmp = tempfile.mkdtemp(prefix="frugal-powerloss-")
        os.chmod(self.tmp, 0o755)
        self.mnt = os.path.join(self.tmp, "mnt")
        os.makedirs(self.mnt)
        self.loops = []
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.addCleanup(self.teardown_devices)
        self.seed = int(os.environ.get("FRUGAL_POWERLOSS_SEED", str(int(time.time()))))
        self.rnd = random.Random(self.seed)

    # --- the device ---
    def teardown_devices(self):
        sh("umount", self.mnt, check=False)
        for dev in self.loops:
            sh("losetup", "-d", dev, check=False)
        self.loops = []

    def attach(self, img, *mount_opts):
        dev = sh("losetup", "-f", "--show", img).stdout.strip()
        self.loops.append(dev)
        sh("mount", *(("-o", ",".join(mount_opts)) if mount_opts else ()), dev, self.mnt)
        return dev

    def detach(self, dev):
        # "target is busy" while a killed process is still being torn down
        # (its descriptors are released last): wait for the kernel to let go,
        # and name the holders if it never does.
        def unmounted():
            r = sh("umount", self.mnt, check=False)
            return r.returncode == 0
        try:
            wait_for(unmounted, 30, "umount " + self.mnt, interval=0.05)
        except AssertionError:
            holders = (sh("fuser", "-vm", self.mnt, check=False) if shutil.which("fuser") else None)
            raise AssertionError("%s stays busy: %s" % (
                self.mnt, holders.stdout + holders.stderr if holders else "(fuser not installed)"))
        sh("losetup", "-d", dev)
        self.loops.remove(dev)

    def fresh_fs(self):
        img = os.path.join(self.tmp, "disk.img")
        with open(img, "wb") as f:
            f.truncate(IMG_MB << 20)
        # no lazy initialisation: nothing but frugal writes once it runs
        sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img)
        # commit=60: the journal commits when frugal syncs, not every 5 s
        dev = self.attach(img, "commit=60")
        mu, vu = pwd.getpwnam(MUSER), pwd.getpwnam(VUSER)
        for sub, pw in (("mail", mu), ("vmail", vu)):
            os.makedirs(os.path.join(self.mnt, sub))
            os.chown(os.path.join(self.mnt, sub), pw.pw_uid, pw.pw_gid)
        os.sync()   # the empty file system is on the device before the test starts
        return img, dev

    # --- one cut ---
    def daemon(self, binary, relay=""):
        d = Daemon(binary=binary, extra=relay + f"""queue_directory = {self.mnt}/queue
local_mailbox_base = {self.mnt}/mail
virtual_mailbox_base = {self.mnt}/vmail
mail_owner = {MUSER}
virtual_mailbox_owner = {VUSER}
delivery_concurrency_limit = {CONCURRENCY}
smtpd_client_connection_count_limit = 0
""")
        d.queue = os.path.join(self.mnt, "queue")
        d.maildir_base = os.path.join(self.mnt, "mail")
        d.vbase = os.path.join(self.mnt, "vmail")
        os.chmod(d.dir, 0o755)
        return d

    def delivered(self, d):
        """(token, mailbox) -> copies found."""
        seen = collections.Counter()
        for name, md in (("alice", d.maildir("alice")), ("carol", d.vmaildir("virt.test/carol"))):
            for m in d.messages(md):
                mt = re.search(rb"X-Token: (pl-\S+)", m)
                if mt:
                    seen[(mt.group(1).decode(), name)] += 1
        return seen

    def at_rest(self, d):
        """Every message taken has been delivered and its removal synced ("removed" is logged then)."""
        committed = os.path.join(d.queue, "committed")
        if os.listdir(committed):
            return False
        out = d.output()
        active = set(re.findall(r"([0-9A-F]{10,}): from=<[^>]*>, size=\d+, nrcpt=\d+ \(queue active\)", out))
        removed = set(re.findall(r"([0-9A-F]{10,}): removed", out))
        return active <= removed

    def cut(self, n, binary, rest=False, remote=False):
        """Load, freeze, copy, kill; recover the copy. Returns the counts.
        rest: the clients stop and the queue drains first, so that no
        delivery is in flight at the cut (no duplicate is allowed then).
        remote: every other message also goes to two recipients relayed over
        SMTP to a sink in this process (one job each: marks per recipient);
        the sink is not frozen, so it tells which of them it had acknowledged
        before the cut."""
        img, dev = self.fresh_fs()
        sink = None
        relay = ""
        if remote:
            port = free_port()
            sink = FireSink(port)
            self.addCleanup(sink.stop)
            relay = ("relay_domains = relay.test\ntransport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n"
                     "smtp_destination_recipient_limit = 1\n" % port)
        d = self.daemon(binary, relay)
        acked, lock, stop = {}, threading.Lock(), threading.Event()
        errors = []
        try:
            d.start()

            def client(cid):
                i = 0
                try:
                    with smtplib.SMTP("127.0.0.1", d.port, timeout=30 * SLOW) as s:
                        while not stop.is_set():
                            tok = "pl-%d-%d-%d" % (n, cid, i)
                            # one in three to both mailboxes: two agents, two jobs, marks per recipient
                            rcpts = (["alice@example.test", "carol@virt.test"] if i % 3 == 2 else
                                     ["alice@example.test"] if i % 3 else ["carol@virt.test"])
                            if remote and i % 2:
                                rcpts += ["r1@relay.test", "r2@relay.test"]
                            body = ("y" * 76 + "\r\n") * self.rnd.randint(2, 80)
                            s.sendmail("c%d@example.org" % cid, rcpts,
                                       "Subject: %s\r\nX-Token: %s\r\n\r\n%s\r\n" % (tok, tok, body))
                            with lock:
                                acked[tok] = [r.split("@")[0] for r in rcpts]
                            i += 1
                except (smtplib.SMTPException, OSError) as e:
                    # the cut: whatever was not acknowledged is not ours to keep
                    if not stop.is_set():
                        errors.append(repr(e))

            threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
            for t in threads:
                t.start()
            threshold = self.rnd.randint(20, 400)

            def reached():
                with lock:
                    return len(acked) >= threshold or not any(t.is_alive() for t in threads)
            wait_for(reached, 120, "%d acknowledged messages" % threshold, interval=0.001)
            self.assertTrue(any(t.is_alive() for t in threads),
                            "every client stopped before the cut: %s\n%s" % (errors[:3], d.output()[-3000:]))
            if rest:
                stop.set()   # each client finishes its transaction and quits
                for t in threads:
                    t.join(60 * SLOW)
                self.assertEqual(errors, [])
                wait_for(lambda: self.at_rest(d), 120, "the queue drained", interval=0.05)
            # the cut: every process frozen, no write in flight, then the image as the device holds it
            t_cut = time.monotonic()
            os.killpg(d.proc.pid, signal.SIGSTOP)
            wait_for(lambda: threads_stopped(d.group()), 30, "every thread of the instance stopped")
            wait_for(lambda: dev_writes(dev)[2] == 0, 30, "no request in flight on " + dev)
            before = dev_writes(dev)
            copy = os.path.join(self.tmp, "copy.img")
            sh("cp", "--sparse=always", img, copy)
            after = dev_writes(dev)
            self.assertEqual(before[:2], after[:2], "the device was written while it was copied")
            d.kill9()
            stop.set()
            for t in threads:
                t.join(60 * SLOW)
            # every 250 a client saw was sent before the freeze: the set is final
            with lock:
                acked_now = {(tok, who) for tok, names in acked.items() for who in names}
            self.detach(dev)
            os.unlink(img)
            fsck = sh("e2fsck", "-fy", copy, check=False)
            self.assertLess(fsck.returncode, 4, "e2fsck: %s%s" % (fsck.stdout, fsck.stderr))
            # recovery: the good binary on the copy, at the same place
            dev2 = self.attach(copy)
            if os.path.exists(d.log):
                os.rename(d.log, d.log + ".cut")   # "daemon started" must be the recovery's
            d.binary = FRUGAL
            d.start()
            committed = os.path.join(d.queue, "committed")
            wait_for(lambda: os.path.isdir(committed) and not os.listdir(committed), 120,
                     "the recovered queue delivered")
            d.stop()
            seen = self.delivered(d)
            remote_dups = remote_done_repeated = 0
            if sink:
                first = {}
                for tok, addr, _, t_ack in sink.pairs():
                    key = (tok, addr.split("@")[0])
                    seen[key] += 1
                    first.setdefault(key, t_ack)
                margin = 0.5 * SLOW    # a 250 the sink sent just before the cut may not be marked yet
                for key, c in seen.items():
                    if key[1] in ("r1", "r2") and c > 1:
                        remote_dups += c - 1
                        if first[key] is not None and first[key] < t_cut - margin:
                            remote_done_repeated += 1
            corrupt = os.path.join(d.queue, "corrupt")
            ncorrupt = len(os.listdir(corrupt)) if os.path.isdir(corrupt) else 0
            self.detach(dev2)
            os.unlink(copy)
            lost = acked_now - set(seen)
            dups = sum(c - 1 for c in seen.values())
            extra = len(set(seen) - acked_now)   # (token, mailbox) pairs: counted per recipient
            return {"acked": len(acked_now), "lost": len(lost), "dups": dups, "unacked_delivered": extra,
                    "corrupt": ncorrupt, "fsck": fsck.returncode, "remote_dups": remote_dups,
                    "remote_done_repeated": remote_done_repeated,
                    "remote_lost": len([k for k in lost if k[1] in ("r1", "r2")]),
                    "remote_acked": len([k for k in acked_now if k[1] in ("r1", "r2")])}
        finally:
            stop.set()
            d.cleanup()
            self.teardown_devices()

    def test_power_cut_loses_nothing(self):
        totals = collections.Counter()
        worst = 0
        for n in range(CUTS):
            rest = n % 2 == 1
            r = self.cut(n, FRUGAL, rest)
            print("\npower-loss cut %d (%s): %d acknowledged, %d lost, %d duplicated, %d unacknowledged "
                  "delivered, %d set aside, e2fsck %d"
                  % (n + 1, "at rest" if rest else "under load", r["acked"], r["lost"], r["dups"], r["unacked_delivered"], r["corrupt"],
                     r["fsck"]))
            self.assertGreater(r["acked"], 0)
            self.assertEqual(r["lost"], 0, "acknowledged messages lost in cut %d (seed %d)" % (n + 1, self.seed))
            self.assertLessEqual(r["dups"], 0 if rest else CONCURRENCY,
                                 "more duplicates than deliveries in flight in cut %d (seed %d)"
                                 % (n + 1, self.seed))
            worst = max(worst, r["dups"])
            totals.update({k: r[k] for k in ("acked", "lost", "dups", "unacked_delivered")})
        print("power-loss test: seed %d, %d cuts, %d acknowledged, %d lost, %d duplicated (at most %d a cut)"
              % (self.seed, CUTS, totals["acked"], totals["lost"], totals["dups"], worst))

    # --- the sendmail drop directory (issue 15) ---
    def drop_cut(self, helper_dir, running):
        """sendmail (exit 0) while the daemon is stopped, and, when running,
        more while it picks them up; cut; recover. Returns (acked, lost)."""
        img, dev = self.fresh_fs()
        d = self.daemon(FRUGAL)
        with open(os.path.join(d.dir, "frugal.conf"), "a") as f:
            f.write("command_directory = %s\n" % helper_dir)
        acked = set()
        try:
            d.start()   # lays out the queue and its maildrop
            d.stop()
            link = os.path.join(d.dir, "sendmail")
            os.symlink(FRUGAL, link)

            def send(tok):
                r = subprocess.run([link, "-C", d.dir, "-i", "alice@example.test"], capture_output=True,
                                   input=b"Subject: %s\nX-Token: %s\n\n%s\n" % (tok.encode(), tok.encode(), b"z" * 3000),
                                   timeout=30 * SLOW)
                self.assertEqual(r.returncode, 0, r.stderr)
                acked.add(tok)
            n = self.rnd.randint(20, 60)
            for i in range(n):
                send("pl-drop-%d" % i)
            if running:
                d.start()
                for i in range(n, 2 * n):
                    send("pl-drop-%d" % i)
                os.killpg(d.proc.pid, signal.SIGSTOP)
                wait_for(lambda: threads_stopped(d.group()), 30, "every thread of the instance stopped")
            wait_for(lambda: dev_writes(dev)[2] == 0, 30, "no request in flight on " + dev)
            before = dev_writes(dev)
            copy = os.path.join(self.tmp, "copy.img")
            sh("cp", "--sparse=always", img, copy)
            self.assertEqual(before[:2], dev_writes(dev)[:2], "the device was written while it was copied")
            if running:
                d.kill9()
            self.detach(dev)
            os.unlink(img)
            fsck = sh("e2fsck", "-fy", copy, check=False)
            self.assertLess(fsck.returncode, 4, "e2fsck: %s%s" % (fsck.stdout, fsck.stderr))
            dev2 = self.attach(copy)
            if os.path.exists(d.log):
                os.rename(d.log, d.log + ".cut")
            d.start()
            drop = os.path.join(d.queue, "maildrop")
            committed = os.path.join(d.queue, "committed")
            wait_for(lambda: not [x for x in os.listdir(drop) if not x.startswith(".")]
                     and not os.listdir(committed), 120, "the maildrop picked up and delivered")
            d.stop()
            seen = {tok for tok, _ in self.delivered(d)}
            self.detach(dev2)
            os.unlink(copy)
            return len(acked), len(acked - seen)
        finally:
            d.cleanup()
            self.teardown_devices()

    def test_drop_directory_survives_the_cut(self):
        """What sendmail acknowledged (exit 0) survives; the nosync helper loses it."""
        helper = os.path.dirname(os.path.abspath(FRUGAL))
        for running in (False, True):
            acked, lost = self.drop_cut(helper, running)
            print("\npower-loss cut of the maildrop (daemon %s): %d accepted by sendmail, %d lost"
                  % ("running" if running else "stopped", acked, lost))
            self.assertGreater(acked, 0)
            self.assertEqual(lost, 0, "messages sendmail accepted were lost (seed %d)" % self.seed)
        if not plain_build():
            return   # the negative control runs in the plain pass
        nosync = os.path.dirname(NOSYNC)
        if not os.access(os.path.join(nosync, "frugal-postdrop"), os.X_OK):
            self.fail("%s/frugal-postdrop missing: `make check` builds it" % nosync)
        acked, lost = self.drop_cut(nosync, False)
        print("\npower-loss negative control of the maildrop (helper without syncs): %d accepted, %d lost"
              % (acked, lost))
        self.assertGreater(lost, 0, "the test cannot see a missing sync in frugal-postdrop")

    def test_negative_control_without_syncs(self):
        """The same cut against a daemon whose syncs are no-ops must lose mail."""
        if not plain_build():
            self.skipTest("the negative control runs in the plain pass")
        if not os.access(NOSYNC, os.X_OK):
            self.fail("%s missing: `make check` builds it" % NOSYNC)
        r = self.cut(0, NOSYNC)
        print("\npower-loss negative control (syncs skipped): %d acknowledged, %d lost"
              % (r["acked"], r["lost"]))
        self.assertGreater(r["lost"], 0, "the test cannot see a missing sync")

    def test_power_cut_while_relaying(self):
        """Cuts while messages go to mailboxes and, every other one, to two remote recipients over
        SMTP: no acknowledged recipient is lost, a remote recipient the sink had acknowledged well
        before the cut is never sent again, and the remote duplicates (copies the sink had
        acknowledged, or was sent, just before the cut) stay within two per delivery slot
        (in flight, and done but its mark not yet synced)."""
        for n in range(max(CUTS, 2)):
            rest = n % 2 == 1
            r = self.cut(n, FRUGAL, rest, remote=True)
            print("\npower-loss relaying cut %d (%s): %d acknowledged (%d remote), %d lost, %d duplicated "
                  "(%d remote), e2fsck %d"
                  % (n + 1, "at rest" if rest else "under load", r["acked"], r["remote_acked"], r["lost"],
                     r["dups"], r["remote_dups"], r["fsck"]))
            self.assertGreater(r["remote_acked"], 0)
            self.assertEqual(r["lost"], 0, "acknowledged recipients lost in cut %d (seed %d)" % (n + 1, self.seed))
            self.assertEqual(r["remote_done_repeated"], 0,
                             "remote recipients done before the cut sent again (seed %d)" % self.seed)
            self.assertLessEqual(r["remote_dups"], 0 if rest else 2 * CONCURRENCY,
                                 "cut %d (seed %d)" % (n + 1, self.seed))
            self.assertLessEqual(r["dups"] - r["remote_dups"], 0 if rest else CONCURRENCY)

    def test_negative_control_relaying_without_syncs(self):
        """With remote recipients too, the build without syncs loses acknowledged mail."""
        if not plain_build():
            self.skipTest("the negative control runs in the plain pass")
        if not os.access(NOSYNC, os.X_OK):
            self.fail("%s missing: `make check` builds it" % NOSYNC)
        r = self.cut(0, NOSYNC, remote=True)
        print("\npower-loss negative control relaying (syncs skipped): %d acknowledged (%d remote), "
              "%d lost (%d remote)" % (r["acked"], r["remote_acked"], r["lost"], r["remote_lost"]))
        self.assertGreater(r["lost"], 0, "the test cannot see a missing sync")


if __name__ == "__main__":
    unittest.main()
