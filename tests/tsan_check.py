#!/usr/bin/env python3
"""tests/tsan_check.py: the integration tests against the ThreadSanitizer build
(build/tsan/frugal), `make tsan-check`. The daemon's event loop, its delivery
workers and the sync thread share state; any data race TSan reports in the
daemon fails the run. Arguments: integration files to run (test_smtp ...);
none: all of them. Reports go to a scratch directory and are printed.

Files that start the daemon with an LD_PRELOAD emulator or that need the
plain build's memory figures are run too; their skips say why."""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    binary = os.path.join(ROOT, "build", "tsan", "frugal")
    if not os.access(binary, os.X_OK):
        print("tsan-check: %s missing: make build/tsan/frugal" % binary)
        return 2
    files = argv or sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "tests/integration/test_*.py")))
    logdir = tempfile.mkdtemp(prefix="frugal-tsan-")
    env = dict(os.environ)
    env["FRUGAL_BIN"] = binary
    # halt_on_error=0: one race must not hide the next; second_deadlock_stack for lock-order reports
    env["TSAN_OPTIONS"] = "log_path=%s/tsan:halt_on_error=0:second_deadlock_stack=1" % logdir
    env["FRUGAL_TEST_SLOW"] = "4"
    # the soak skips against a sanitizer build unless told its length: it is the run with the
    # most threads at work at once (60 s of it passed under TSan with no report)
    env.setdefault("SOAK_DURATION", "60")
    failed = []
    try:
        for f in files:
            p = subprocess.run([sys.executable, "-m", "unittest", f.replace(".py", "")],
                               cwd=os.path.join(ROOT, "tests/integration"), env=env,
                               capture_output=True, text=True, timeout=3600)
            out = p.stdout + p.stderr
            m = re.search(r"Ran (\d+) tests?.*?\n\n(OK.*|FAILED.*)", out, re.S)
            print("tsan %-22s %s" % (f, m.group(2).strip() if m else "rc=%d" % p.returncode), flush=True)
            if p.returncode != 0:
                failed.append(f)
                sys.stdout.write(out[-3000:])
        reports = sorted(glob.glob(os.path.join(logdir, "*")))
        for r in reports:
            with open(r, errors="replace") as fh:
                print("TSan report %s:\n%s" % (r, fh.read()[:8000]))
        print("tsan-check: %d files, %d failed, %d TSan reports" % (len(files), len(failed), len(reports)))
        return 1 if failed or reports else 0
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
