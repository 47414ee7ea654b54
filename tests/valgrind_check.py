#!/usr/bin/env python3
"""tests/valgrind_check.py: the integration tests with every frugal process under
valgrind's memcheck, `make valgrind-check`. FRUGAL_BIN is build/valgrind/frugal, a
wrapper (tests/valgrind/wrapper.sh) that runs the -O1 -g build under memcheck with
one log per process (forked children too). Arguments: integration files to run
(test_smtp ...); none: all of them, one at a time.

A file fails when its tests fail or when any process logged a memcheck error or a
definite/indirect leak (its ERROR SUMMARY is not 0). A process SIGKILLed by a crash
test has no summary and so no leak check: it is counted as "no report", and only
the errors it logged before it died count. Tests that cannot work under valgrind
(timing, memory figures, descriptor counts) skip themselves on FRUGAL_TEST_VALGRIND."""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the first line of each kind of memcheck error (a leak record is counted by its summary)
ERROR_RE = re.compile(r"^==\d+== (Invalid (read|write|free)|Mismatched free|Conditional jump|"
                      r"Use of uninitialised|Syscall param|Source and destination overlap|"
                      r"Argument '.*' of function|.* are (definitely|indirectly) lost)", re.M)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def read_logs(logdir, deadline):
    """Every process's log once it is finished: a process still running (a helper
    whose leak check is under way after the test ended) is waited for until deadline."""
    logs = {}
    while True:
        pending = []
        for path in sorted(glob.glob(os.path.join(logdir, "vg.*"))):
            with open(path, errors="replace") as fh:
                text = fh.read()
            pid = os.path.basename(path).split(".")[1]
            logs[path] = text
            # vg.systemd-PID.N: copied by test_systemd from its container, whose processes are gone
            if "ERROR SUMMARY" not in text and pid.isdigit() and pid_alive(int(pid)):
                pending.append(path)
        if not pending or time.monotonic() > deadline:
            return logs, pending
        time.sleep(0.2)


def judge(logs):
    """(processes, with a summary, errors, bad logs) of one file's logs"""
    summaries = errors = 0
    bad = []
    for path, text in logs.items():
        m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        if m:
            summaries += 1
            n = int(m.group(1))
        else:
            n = len(ERROR_RE.findall(text))   # died without a summary: what it logged before
        if not text.strip():
            continue   # a child that exec'd an untraced program (frugal-postdrop) before logging
        if n:
            errors += n
            bad.append(path)
    return len(logs), summaries, errors, bad


def main(argv):
    wrapper = os.path.join(ROOT, "build", "valgrind", "frugal")
    if not os.access(wrapper, os.X_OK):
        print("valgrind-check: %s missing: make build/valgrind/frugal" % wrapper)
        return 2
    if not shutil.which("valgrind"):
        print("valgrind-check: valgrind missing: apt-get install valgrind (sh contrib/deps.sh valgrind)")
        return 2
    files = [f.replace(".py", "") for f in argv] or sorted(
        os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "tests/integration/test_*.py")))
    env = dict(os.environ)
    env["FRUGAL_BIN"] = wrapper
    env["FRUGAL_TEST_VALGRIND"] = "1"
    # memcheck runs the daemon 20-50x slower: every deadline of the harness scales (never a success path)
    env.setdefault("FRUGAL_TEST_SLOW", "20")
    failed, total_err = [], 0
    for f in files:
        logdir = tempfile.mkdtemp(prefix="frugal-vg-")
        os.chmod(logdir, 0o1777)   # a daemon that dropped to another account logs its children here too
        env["FRUGAL_VALGRIND_LOGDIR"] = logdir
        t0 = time.monotonic()
        try:
            p = subprocess.run([sys.executable, "-m", "unittest", "-v", f],
                               cwd=os.path.join(ROOT, "tests/integration"), env=env,
                               capture_output=True, text=True, timeout=7200)
            out, rc = p.stdout + p.stderr, p.returncode
        except subprocess.TimeoutExpired as ex:
            out, rc = "%s%s\n%s: timed out after %d s\n" % (ex.stdout or "", ex.stderr or "", f, ex.timeout), -1
        secs = time.monotonic() - t0
        logs, pending = read_logs(logdir, time.monotonic() + 300)
        nproc, nsum, nerr, bad = judge(logs)
        m = re.search(r"Ran (\d+) tests?.*?\n\n(OK.*|FAILED.*)", out, re.S)
        verdict = m.group(2).strip() if m else "rc=%d" % rc
        print("valgrind %-20s %-28s %4.0f s, %d processes (%d with a leak check), %d errors%s"
              % (f, verdict, secs, nproc, nsum, nerr,
                 ", %d still running" % len(pending) if pending else ""), flush=True)
        for line in out.splitlines():
            if " ... skipped" in line or line.startswith("soak: "):   # the soak's figures, as make check shows them
                print("  " + line)
        if rc != 0:
            sys.stdout.write(out[-6000:])
        for path in bad:
            print("memcheck log %s:\n%s" % (path, logs[path][:12000]))
        if rc != 0 or bad:
            failed.append(f)
        total_err += nerr
        if os.environ.get("FRUGAL_VALGRIND_KEEP"):
            print("valgrind-check: logs of %s kept in %s" % (f, logdir))
        else:
            shutil.rmtree(logdir, ignore_errors=True)
    print("valgrind-check: %d files, %d failed%s, %d memcheck errors"
          % (len(files), len(failed), " (%s)" % " ".join(failed) if failed else "", total_err))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
