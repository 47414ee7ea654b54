#!/usr/bin/env python3
"""tests/integration/test_vzemul.py: the container emulator (tests/emul/vzemul.c).

Loads build/tests/vzemul.so (or $VZEMUL_SO) into python3 processes and
checks what frugal's tests rely on: socket() fails with ENOMEM past
numothersock and failcnt rises; socketpair() is two objects; close()
gives them back; a UNIX connection is two objects; past numtcpsock
socket() is ENOMEM and accept() holds the connection back (EAGAIN) until
room is made; past numfile open() is ENFILE; the counters are shared by
processes that name the same VZEMUL_STATE, and a killed process's sockets
come back. With $FRUGAL_BIN (default ./frugal when present), `frugal limits
--json` reads the emulator's file. Runs under `python3 -m unittest` (as
tests/run_all.py does) or alone (exit status 0 when all pass).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SO = os.environ.get("VZEMUL_SO", os.path.join(ROOT, "build", "tests", "vzemul.so"))

# runs inside the emulated process; prints one JSON object
INNER = r'''
import errno, json, os, socket, sys
UBC = os.environ["VZEMUL_FILE"]
def row(name):
    for line in open(UBC):
        f = line.split()
        if f and f[0].endswith(":"): f = f[1:]
        if f and f[0] == name:
            return dict(zip(["held", "maxheld", "barrier", "limit", "failcnt"], map(int, f[1:6])))
    raise KeyError(name)
out = {}
exec(sys.argv[1])
print(json.dumps(out))
'''

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1


def run(code, tmp, **limits):
    env = dict(os.environ)
    env.update({"LD_PRELOAD": SO, "VZEMUL_FILE": os.path.join(tmp, "ubc"),
                "VZEMUL_STATE": os.path.join(tmp, "state")})
    env.update({k: str(v) for k, v in limits.items()})
    p = subprocess.run([sys.executable, "-c", INNER, code], env=env, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        print(p.stderr)
        raise SystemExit("inner script failed")
    return json.loads(p.stdout.strip().splitlines()[-1])


made = []


def fresh():
    made.append(tempfile.mkdtemp(prefix="vzemul."))
    return made[-1]


def test_othersock():
    tmp = fresh()
    r = run(r'''
base = row("numothersock")["held"]
socks = []
try:
    while True: socks.append(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
except OSError as e:
    out["errno"] = e.errno; out["strerror"] = e.strerror
out["made"] = len(socks); out["base"] = base
out["full"] = row("numothersock")
socks.pop().close(); socks.pop().close()
out["after_close"] = row("numothersock")["held"]
a, b = socket.socketpair()
out["after_pair"] = row("numothersock")["held"]
try:
    socket.socketpair()
except OSError as e:
    out["pair_errno"] = e.errno
a.close()
out["after_pair_close"] = row("numothersock")["held"]
''', tmp, VZEMUL_NUMOTHERSOCK=10)
    check(r["errno"] == 12 and r["made"] == 10, "socket() past numothersock=10 fails with ENOMEM (%s) after 10" % r.get("strerror"))
    check(r["full"]["held"] == 10 and r["full"]["failcnt"] == 1 and r["full"]["barrier"] == 10,
          "file: numothersock held 10, failcnt 1, barrier 10")
    check(r["after_close"] == 8, "close() gives sockets back (held 8)")
    check(r["after_pair"] == 10, "socketpair() counts two (held 10)")
    check(r.get("pair_errno") == 12, "socketpair() past the barrier: ENOMEM")
    check(r["after_pair_close"] == 9, "closing one end of a pair gives one back")


def test_unix_connect():
    tmp = fresh()
    r = run(r'''
path = os.path.join(os.path.dirname(UBC), "sock")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); srv.bind(path); srv.listen(5)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
out["before"] = row("numothersock")["held"]
c.connect(path)
out["after"] = row("numothersock")["held"]
c2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    c2.connect(path); out["errno"] = 0
except OSError as e:
    out["errno"] = e.errno
c.close()
out["closed"] = row("numothersock")["held"]
''', tmp, VZEMUL_NUMOTHERSOCK=4)
    check(r["before"] == 2 and r["after"] == 3, "UNIX connect() charges the server's end too (2 -> 3)")
    check(r["errno"] == 12, "UNIX connect() past numothersock: ENOMEM")
    # left: the listener and c2 (whose connect was refused)
    check(r["closed"] == 2, "closing the connection gives both ends back")


def test_tcp():
    tmp = fresh()
    r = run(r'''
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8)
port = srv.getsockname()[1]
cl = socket.socket(); cl.connect(("127.0.0.1", port))
out["held"] = row("numtcpsock")["held"]
try:
    socket.socket(); out["errno"] = 0
except OSError as e:
    out["errno"] = e.errno
srv.setblocking(False)
try:
    srv.accept(); out["accept_errno"] = 0
except OSError as e:
    out["accept_errno"] = e.errno
out["failcnt"] = row("numtcpsock")["failcnt"]
cl2 = None
cl.close()       # room for the server's end: the connection was waiting in the backlog
conn, _ = srv.accept()
out["accepted"] = row("numtcpsock")["held"]
conn.close()
''', tmp, VZEMUL_NUMTCPSOCK=2)
    check(r["held"] == 2, "listener + client: numtcpsock held 2")
    check(r["errno"] == 12, "socket(AF_INET, SOCK_STREAM) past numtcpsock: ENOMEM")
    check(r["accept_errno"] == 11, "accept() past numtcpsock: EAGAIN, connection left in the backlog")
    check(r["failcnt"] == 2, "numtcpsock failcnt counts both refusals")
    check(r["accepted"] == 2, "after a close the waiting connection is accepted")


def test_numfile():
    tmp = fresh()
    r = run(r'''
fs = []
try:
    while True: fs.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    out["errno"] = e.errno
os.close(fs.pop())           # room to read the file itself
out["held"] = row("numfile")["held"]
for f in fs: os.close(f)
out["closed"] = row("numfile")["held"]
''', tmp, VZEMUL_NUMFILE=30)
    check(r["errno"] == 23, "open() past numfile: ENFILE")
    check(r["held"] == 30 and r["closed"] <= 30 - 25, "numfile held 30, given back on close")


def test_shared_and_swept():
    tmp = fresh()
    env = dict(os.environ, LD_PRELOAD=SO, VZEMUL_FILE=os.path.join(tmp, "ubc"),
               VZEMUL_STATE=os.path.join(tmp, "state"), VZEMUL_NUMOTHERSOCK="20")
    # the hog: another process of the container eating non-TCP sockets
    hog = subprocess.Popen([sys.executable, "-c",
                            "import socket,sys,time\n"
                            "s=[socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for i in range(15)]\n"
                            "print('ready', flush=True)\n"
                            "sys.stdin.read()\n"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    check(hog.stdout.readline().strip() == "ready", "hog holds 15 sockets")
    r = run(r'''
s = []
try:
    while True: s.append(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
except OSError as e:
    out["errno"] = e.errno
out["made"] = len(s)
''', tmp, VZEMUL_NUMOTHERSOCK=20)
    check(r["made"] == 5 and r["errno"] == 12, "a second process gets only the 5 left (shared counters)")
    hog.kill()
    hog.wait()
    r = run(r'''
s = [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for i in range(18)]
out["held"] = row("numothersock")["held"]
''', tmp, VZEMUL_NUMOTHERSOCK=20)
    check(r["held"] == 18, "a killed process's sockets are swept back")
    return tmp


def test_frugal_reads_it(tmp):
    frugal = os.environ.get("FRUGAL_BIN", os.path.join(ROOT, "frugal"))
    if not os.access(frugal, os.X_OK):
        print("skip frugal limits --json (no %s)" % frugal)
        return
    conf = os.path.join(tmp, "conf")
    os.makedirs(conf, exist_ok=True)
    with open(os.path.join(conf, "frugal.conf"), "w") as f:
        f.write("beancounters_file = %s\nqueue_directory = %s\n" % (os.path.join(tmp, "ubc"), tmp))
    p = subprocess.run([frugal, "limits", "-c", conf, "--json"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, "frugal limits --json runs")
    try:
        d = json.loads(p.stdout)
    except ValueError:
        check(False, "frugal limits --json prints JSON")
        return
    rows = {r["name"]: r for r in d["resources"]}
    check("numothersock" in rows and rows["numothersock"]["limit"] == 20, "frugal sees numothersock barrier 20")
    check(any("numothersock" in w for w in d["warnings"]), "frugal warns about numothersock")


class VzEmulTest(unittest.TestCase):
    def setUp(self):
        global failures
        if not os.path.exists(SO):
            self.skipTest("no %s: build it with make" % SO)
        failures = 0

    def tearDown(self):
        while made:
            shutil.rmtree(made.pop(), ignore_errors=True)
        self.assertEqual(failures, 0, "see the FAIL lines above")

    def test_othersock(self):
        test_othersock()

    def test_unix_connect(self):
        test_unix_connect()

    def test_tcp(self):
        test_tcp()

    def test_numfile(self):
        test_numfile()

    def test_shared_swept_and_read_by_frugal(self):
        test_frugal_reads_it(test_shared_and_swept())


if __name__ == "__main__":
    unittest.main()
