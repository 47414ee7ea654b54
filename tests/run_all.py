#!/usr/bin/env python3
"""tests/run_all.py: what `make check` runs once everything is built.

0. every libFuzzer target replays its checked-in corpus, 1. unit tests
(Check binaries in build/tests), 2. integration tests against ./frugal,
3. both again with the ASan+UBSan build (build/asan), where any sanitizer
report written by the daemon fails the run. Ends with one line
"check: N passed, N failed".
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
passed = failed = skipped = 0
failures = []


def unit(bindir, env, label):
    global passed, failed
    # Check's default 4 s per test is a guess about an idle machine; a hang is
    # still caught, a busy 2-core machine under ASan is not a failure
    env = dict(env)
    env.setdefault("CK_DEFAULT_TIMEOUT", "120")
    for t in sorted(glob.glob(os.path.join(bindir, "test_*"))):
        if not os.access(t, os.X_OK) or t.endswith(".so"):
            continue
        p = subprocess.run([t], capture_output=True, text=True, env=env, timeout=900)
        out = p.stdout + p.stderr
        m = re.search(r"Checks: (\d+), Failures: (\d+), Errors: (\d+)", out)
        n, f = (int(m.group(1)), int(m.group(2)) + int(m.group(3))) if m else (1, 1)
        if p.returncode != 0 and f == 0:
            f = 1
        passed += n - f if n >= f else 0
        failed += f
        print("%s unit %-28s %s" % (label, os.path.basename(t), (m.group(0) if m else "no Check summary")))
        if f:
            failures.append("%s %s" % (label, t))
            sys.stdout.write(out[-4000:])


def integration(binary, env, label):
    global passed, failed, skipped
    e = dict(os.environ)
    e.update(env)
    e["FRUGAL_BIN"] = binary
    p = subprocess.run([sys.executable, "-m", "unittest", "discover", "-s", "tests/integration",
                        "-p", "test_*.py", "-v"], capture_output=True, text=True, env=e, timeout=2400)
    out = p.stdout + p.stderr
    m = re.search(r"Ran (\d+) tests?", out)
    n = int(m.group(1)) if m else 0
    f = 0
    mf = re.search(r"FAILED \(([^)]*)\)", out)
    if mf:
        for part in mf.group(1).split(","):
            k, _, v = part.strip().partition("=")
            if k in ("failures", "errors"):
                f += int(v)
    ms = re.search(r"skipped=(\d+)", out)
    s = int(ms.group(1)) if ms else 0
    if p.returncode != 0 and f == 0:
        f = 1
    passed += n - f - s
    failed += f
    skipped += s
    for line in out.splitlines():
        if re.search(r" \.\.\. |^(crash|reset|power-loss) test:|^power-loss (cut|negative)|^fault sweep", line):
            print("%s integration %s" % (label, line))
    if f:
        failures.append("%s integration" % label)
        sys.stdout.write(out[-8000:])


def fuzz_corpora():
    """Replay every fuzz target's checked-in corpus once (no fuzzing: `make fuzz` does that)."""
    global passed, failed
    for t in sorted(glob.glob("build/fuzz/fuzz_*")):
        name = os.path.basename(t)
        inputs = sorted(glob.glob(os.path.join("tests/fuzz/corpus", name, "*")))
        if not os.access(t, os.X_OK) or not inputs:
            continue
        p = subprocess.run([t] + inputs, capture_output=True, text=True, timeout=600)
        ok = p.returncode == 0
        print("[fuzz] corpus %-24s %d inputs %s" % (name, len(inputs), "ok" if ok else "FAILED"))
        if ok:
            passed += 1
        else:
            failed += 1
            failures.append("[fuzz] " + name)
            sys.stdout.write((p.stdout + p.stderr)[-4000:])


def main():
    env = dict(os.environ)
    fuzz_corpora()
    unit("build/tests", env, "[plain]")
    integration(os.path.join(ROOT, "frugal"), {}, "[plain]")
    if os.environ.get("FRUGAL_CHECK_NO_ASAN"):
        print("check: sanitizer pass skipped (FRUGAL_CHECK_NO_ASAN)")
    else:
        global failed
        logdir = tempfile.mkdtemp(prefix="frugal-asan-")
        senv = dict(env)
        senv["ASAN_OPTIONS"] = "log_path=%s/asan:detect_leaks=1" % logdir
        senv["UBSAN_OPTIONS"] = "log_path=%s/ubsan:print_stacktrace=1:halt_on_error=1" % logdir
        unit("build/asan/tests", senv, "[asan]")
        ienv = {"ASAN_OPTIONS": senv["ASAN_OPTIONS"], "UBSAN_OPTIONS": senv["UBSAN_OPTIONS"],
                "FRUGAL_TEST_SLOW": "4", "FRUGAL_CRASH_KILLS": "3"}
        integration(os.path.join(ROOT, "build/asan/frugal"), ienv, "[asan]")
        reports = sorted(glob.glob(os.path.join(logdir, "*")))
        for r in reports:
            with open(r, errors="replace") as fh:
                text = fh.read()
            print("sanitizer report %s:\n%s" % (r, text[:6000]))
            failed += 1
            failures.append("sanitizer report " + os.path.basename(r))
        shutil.rmtree(logdir, ignore_errors=True)
    for f in failures:
        print("FAILED:", f)
    print("check: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
