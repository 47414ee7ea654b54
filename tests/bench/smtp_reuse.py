"""tests/bench/smtp_reuse.py: the SMTP client's connection reuse, measured.

200 messages of 5 KB are accepted while `defer_transports = smtp` holds them, then released at
once with `frugal queue flush`; the time from the flush to the 200th file written by Postfix's
smtp-sink (one file per message) is the delivery time. The same with
`smtp_connection_cache_on_demand = no`; --runs runs of each, alternating. Loopback only; the
scheduler's defaults (initial_destination_concurrency 5, smtp_destination_concurrency_limit 20).
Prints each run, then the median and range of each mode, and the connections the sink saw
(counted from the daemon's log: deliveries without conn_use=). smtp-sink listens with
--backlog (256): with the integration tests' 10, a burst of new connections overflows it and the
dropped SYNs are retried after the kernel's 1 s, which dominates the figures without reuse.

    python3 tests/bench/smtp_reuse.py [--runs 3] [--messages 200] [--backlog 256]
"""
import argparse
import os
import re
import smtplib
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Daemon, free_port, run_frugal, wait_for   # noqa: E402
from test_smtp_client import SINK, SmtpSink                     # noqa: E402

BODY = ("x" * 78 + "\r\n") * 64          # 5,120 bytes


class Sink(SmtpSink):
    """SmtpSink with a chosen listen backlog (the test class's 10 overflows when 20 connect at once:
    the kernel drops the SYN and the client's retry comes a second later)."""

    def __init__(self, host, port, backlog):
        import subprocess
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="frugal-sink-")
        os.chmod(self.dir, 0o777)
        self.p = subprocess.Popen([SINK, "-u", "nobody", "-d", os.path.join(self.dir, "msg."), f"{host}:{port}",
                                   str(backlog)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self._listening(host, port), what="smtp-sink listening")


def cpu_ms(pid):
    """user + system CPU of the daemon process, in ms (less sensitive to a loaded machine than wall time)"""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def one_run(reuse, n, backlog):
    port = free_port()
    sink = Sink("127.0.0.1", port, backlog)
    d = Daemon(f"relay_domains = relay.test\ntransport_maps = inline:{{ relay.test=smtp:[127.0.0.1]:{port} }}\n"
               "defer_transports = smtp\n"
               f"smtp_connection_cache_on_demand = {'yes' if reuse else 'no'}\n").start()
    try:
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as c:
            for i in range(n):
                c.sendmail("alice@example.test", ["u@relay.test"],
                           f"From: alice@example.test\r\nSubject: bench {i}\r\n\r\n{BODY}".encode())
        wait_for(lambda: d.output().count("deferred transport") >= n, 60, "all held")
        pid = d.smtpd_pid()
        cpu0 = cpu_ms(pid)
        t0 = time.monotonic()
        r = run_frugal("queue", "-c", d.dir, "flush")
        if r.returncode != 0:
            raise SystemExit("flush failed: " + r.stderr)
        wait_for(lambda: sink.count() >= n, 120, "all delivered", interval=0.005)
        took = time.monotonic() - t0
        cpu = cpu_ms(pid) - cpu0
        wait_for(lambda: len(re.findall(r"status=sent", d.output())) >= n, 30, "all logged")
        log = d.output()
        sent = re.findall(r"relay=\S+, (conn_use=\d+, )?delay=.*status=sent", log)
        conns = sum(1 for cu in sent if not cu)
        return took, cpu, conns, sink.count()
    finally:
        d.cleanup()
        sink.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--backlog", type=int, default=256, help="smtp-sink's listen backlog")
    a = ap.parse_args()
    res = {True: [], False: []}
    cpus = {True: [], False: []}
    for i in range(a.runs):
        for reuse in ((True, False) if i % 2 == 0 else (False, True)):
            took, cpu, conns, got = one_run(reuse, a.messages, a.backlog)
            res[reuse].append(took)
            cpus[reuse].append(cpu)
            print(f"run {i + 1} reuse={'yes' if reuse else 'no '}: {a.messages} messages in {took:.3f} s "
                  f"({a.messages / took:.0f} msg/s), daemon CPU {cpu:.0f} ms, {conns} connections, "
                  f"{got} at the sink", flush=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    for reuse in (True, False):
        t, c = res[reuse], cpus[reuse]
        print(f"reuse={'yes' if reuse else 'no '}: median {statistics.median(t):.3f} s, "
              f"range {min(t):.3f}-{max(t):.3f} s; daemon CPU median {statistics.median(c):.0f} ms, "
              f"range {min(c):.0f}-{max(c):.0f} ms (load average now {load})")


if __name__ == "__main__":
    main()
