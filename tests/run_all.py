#!/usr/bin/env python3
"""tests/run_all.py: what `make check` runs once everything is built.

0. every libFuzzer target replays its checked-in corpus (and is fuzzed for
FRUGAL_CHECK_FUZZ_SECONDS, default 20, at nice 19 beside step 2), 1. unit tests
(Check binaries in build/tests), 2. integration tests against ./frugal,
3. both again with the ASan+UBSan build (build/asan), where any sanitizer
report written by the daemon fails the run. The integration files of both
passes share one pool of FRUGAL_CHECK_JOBS processes. Ends with one line
"check: N passed, N failed".
"""
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

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


# Integration files run one process each, JOBS at a time (FRUGAL_CHECK_JOBS, default
# the number of cores, at most 4), both passes in one pool: the tests mostly wait on
# sockets and timers, so two at a time on two cores nearly halves the wall time.
# Longest first, by these measured plain-pass seconds (a file not listed counts 30 s),
# so that the long files do not end the run alone.
DURATION_HINT = {
    "test_faults_auth": 30, "test_faults_out": 130,
    "test_faults": 200, "test_remote": 106, "test_powerloss": 54, "test_smtp_client": 49,
    "test_auth": 37, "test_dns": 35, "test_peers": 34, "test_smtp_fire": 30,
    "test_queue_priv": 29, "test_ledger": 28, "test_sendmail": 25, "test_logging": 25,
    "test_container": 23, "test_smtp_reuse": 20, "test_mta_sts": 19, "test_anvil": 18,
    "test_dkim": 18, "test_packaging": 16, "test_scheduler": 15, "test_dnsbl": 13,
    "test_disk": 10, "test_smtp": 9, "test_crash": 5, "test_chunking": 3, "test_docs": 3,
    "test_dsn": 2, "test_daemon": 2, "test_addresses": 1, "test_smtp_wire": 56,
    "test_spf": 32, "test_wizard": 24, "test_systemd": 21, "test_tls": 17, "test_status": 14,
    "test_screen": 22, "test_greylist": 17, "test_dmarc": 10, "test_smtp_budget": 10, "test_iofault": 35,
    "test_iofault_tls": 32, "test_iofault_lmtp": 25,
    "test_soak": 75,
}
# Files that must not overlap with another of the same group, whatever the pass:
# test_daemon's embedded default listens on the fixed port 2525; the others set up
# loop devices and mounts, cgroups, the beancounter emulator or a booted systemd.
EXCLUSIVE = {
    "test_daemon": "port2525",
    "test_powerloss": "system", "test_systemd": "system", "test_container": "system",
    "test_vzemul": "system",
    "test_soak": "soak",   # the plain and the ASan soak never at once: each was measured beside an ordinary file
}


def integration_jobs(binary, env, label):
    e = dict(os.environ)
    e.update(env)
    e["FRUGAL_BIN"] = binary
    weight = 1.6 if "ASAN_OPTIONS" in env else 1.0
    jobs = []
    for path in sorted(glob.glob("tests/integration/test_*.py")):
        mod = os.path.basename(path)[:-3]
        jobs.append({"mod": mod, "env": e, "label": label,
                     "cost": DURATION_HINT.get(mod, 30) * weight, "group": EXCLUSIVE.get(mod)})
    return jobs


def run_job(job):
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "unittest", "-v", job["mod"]], cwd="tests/integration",
                           capture_output=True, text=True, env=job["env"], timeout=1800)
        out = p.stdout + p.stderr
        rc = p.returncode
    except subprocess.TimeoutExpired as ex:
        out = "%s%s\n%s: timed out after %d s\n" % (ex.stdout or "", ex.stderr or "", job["mod"], ex.timeout)
        rc = -1
    job["out"], job["rc"], job["secs"] = out, rc, time.monotonic() - t0
    return job


def account(job):
    """Count one finished file's tests and print its lines (whole files, never interleaved)."""
    global passed, failed, skipped
    out, label = job["out"], job["label"]
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
    if job["rc"] != 0 and f == 0:
        f = 1
    passed += max(n - f - s, 0)
    failed += f
    skipped += s
    for line in out.splitlines():
        if re.search(r" \.\.\. |^(crash|reset|power-loss) test:|^soak:|^power-loss (cut|negative)|^fault sweep", line):
            print("%s integration %s" % (label, line))
    print("%s integration file %s: %d tests, %d failed, %d skipped, %.0f s"
          % (label, job["mod"], n, f, s, job["secs"]), flush=True)
    if f:
        failures.append("%s integration %s" % (label, job["mod"]))
        sys.stdout.write(out[-8000:])


def integration(jobs, workers):
    pending = sorted(jobs, key=lambda j: -j["cost"])
    busy = set()   # exclusive groups of the running jobs
    running = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        while pending or running:
            while len(running) < workers:
                pick = next((j for j in pending if j["group"] is None or j["group"] not in busy), None)
                if pick is None:
                    break
                pending.remove(pick)
                if pick["group"]:
                    busy.add(pick["group"])
                running[ex.submit(run_job, pick)] = pick
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                job = running.pop(fut)
                busy.discard(job["group"])
                account(fut.result())


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


FUZZ_SECONDS = int(os.environ.get("FRUGAL_CHECK_FUZZ_SECONDS", "20"))


def fuzz_run():
    """Fuzz every target FUZZ_SECONDS (wall clock) one after another, at the lowest CPU
    priority, beside the integration pool: the tests mostly wait, the fuzzers take what
    CPU they leave and yield it when a test wants it. New inputs go to a scratch
    directory (the checked-in corpora change only by hand); a finding fails the run,
    with libFuzzer's report and the input kept under build/fuzz/findings/. Returns the
    results as (name, ok, seconds, tail of output) for the main thread to count."""
    results = []
    scratch = tempfile.mkdtemp(prefix="frugal-fuzz-")
    findings = os.path.join(ROOT, "build", "fuzz", "findings")
    try:
        for t in sorted(glob.glob("build/fuzz/fuzz_*")):
            name = os.path.basename(t)
            if not os.access(t, os.X_OK):
                continue
            work = os.path.join(scratch, name)
            os.makedirs(work)
            os.makedirs(findings, exist_ok=True)
            cmd = ["nice", "-n", "19", t, "-max_total_time=%d" % FUZZ_SECONDS, "-timeout=60",
                   "-print_final_stats=1", "-artifact_prefix=%s/%s-" % (findings, name), work]
            corpus = os.path.join("tests/fuzz/corpus", name)
            if os.path.isdir(corpus):
                cmd.append(corpus)
            t0 = time.monotonic()
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=FUZZ_SECONDS + 300)
                ok, out = p.returncode == 0, p.stdout + p.stderr
            except subprocess.TimeoutExpired:
                ok, out = False, "%s: did not stop within %d s" % (name, FUZZ_SECONDS + 300)
            runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
            results.append((name, ok, time.monotonic() - t0, runs.group(1) if runs else "?", out[-4000:]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def main():
    global failed, passed
    env = dict(os.environ)
    workers = int(os.environ.get("FRUGAL_CHECK_JOBS") or min(os.cpu_count() or 1, 4))
    fuzz_corpora()
    unit("build/tests", env, "[plain]")
    # two files at a time make each slower: the plain pass gets twice the patience
    # (harness.SLOW scales timeouts, never a success path), the ASan pass keeps its 4
    jobs = integration_jobs(os.path.join(ROOT, "frugal"),
                            {"FRUGAL_TEST_SLOW": "2"} if workers > 1 else {}, "[plain]")
    logdir = None
    if os.environ.get("FRUGAL_CHECK_NO_ASAN"):
        print("check: sanitizer pass skipped (FRUGAL_CHECK_NO_ASAN)")
    else:
        logdir = tempfile.mkdtemp(prefix="frugal-asan-")
        senv = dict(env)
        senv["ASAN_OPTIONS"] = "log_path=%s/asan:detect_leaks=1" % logdir
        senv["UBSAN_OPTIONS"] = "log_path=%s/ubsan:print_stacktrace=1:halt_on_error=1" % logdir
        unit("build/asan/tests", senv, "[asan]")
        ienv = {"ASAN_OPTIONS": senv["ASAN_OPTIONS"], "UBSAN_OPTIONS": senv["UBSAN_OPTIONS"],
                "FRUGAL_TEST_SLOW": "4", "FRUGAL_CRASH_KILLS": "3"}
        jobs += integration_jobs(os.path.join(ROOT, "build/asan/frugal"), ienv, "[asan]")
    t0 = time.monotonic()
    fuzzing = None
    if FUZZ_SECONDS > 0:
        fuzzing = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        fuzz_future = fuzzing.submit(fuzz_run)
    integration(jobs, workers)
    print("integration: %d files in %.0f s, %d at a time" % (len(jobs), time.monotonic() - t0, workers))
    if fuzzing:
        for name, ok, secs, runs, tail in fuzz_future.result():
            print("[fuzz] fuzzed %-24s %3.0f s, %s runs %s" % (name, secs, runs, "ok" if ok else "FINDING"))
            if ok:
                passed += 1
            else:
                failed += 1
                failures.append("[fuzz] fuzzing " + name)
                sys.stdout.write(tail)
        fuzzing.shutdown()
        print("fuzzing: done %.0f s after the integration pool started" % (time.monotonic() - t0))
    if logdir:
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
