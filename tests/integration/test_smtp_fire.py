"""tests/integration/test_smtp_fire.py: the SMTP client (queue/smtpc.c,
queue/qmgr.c) under fire: SIGKILL in the middle of multi-recipient
deliveries, descriptor and socket exhaustion while delivering (RLIMIT_NOFILE
lowered under the running daemon, the OpenVZ emulator's numtcpsock), QUIT
without waiting for the 221 (Postfix's smtp_skip_quit_response), and a
flush that survives a postponement for want of descriptors.

The peer is FireSink, a small threaded SMTP server written here: it records
every (message token, recipient) it accepted with the time it had the data
and the time it said 250, counts connections open at once, and can be slow
on purpose (an RCPT, the reply to the dot, the 221) to hold deliveries in
flight.
"""
import os
import re
import resource
import shutil
import tempfile
import smtplib
import socketserver
import threading
import time
import unittest

from harness import Daemon, wait_for, free_port, run_frugal, SLOW

TOKEN_RE = re.compile(rb"^X-Token: (\S+)", re.M)


class FireSink:
    """A threaded SMTP sink. slow_rcpt: seconds an RCPT containing "slowrcpt" waits for its reply;
    slow_dot: seconds the reply to the dot waits when a recipient contains "slowdot"; quit_hold:
    seconds the 221 waits (the connection is held open meanwhile, as a slow peer does)."""

    def __init__(self, port, slow_rcpt=0, slow_dot=0, quit_hold=0, lmtp=False):
        """port: a TCP port on 127.0.0.1, or a path (a unix socket); lmtp: one reply per
        recipient after the dot (RFC 2033)."""
        self.lmtp = lmtp
        self.slow_rcpt, self.slow_dot, self.quit_hold = slow_rcpt, slow_dot, quit_hold
        self.lock = threading.Lock()
        # (token, rcpt, t_data, t_ack): t_ack when the transaction's last reply went out (LMTP: the
        # last recipient's), None if it never did; before that the client's job is still in flight
        self.got = []
        self.open = 0
        self.peak = 0
        self.connections = 0
        self.quit_to_eof = []    # seconds from QUIT to the client's close, per connection
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                with sink.lock:
                    sink.open += 1
                    sink.connections += 1
                    sink.peak = max(sink.peak, sink.open)
                try:
                    sink.session(self.rfile, self.wfile, self.connection)
                except OSError:
                    pass
                finally:
                    with sink.lock:
                        sink.open -= 1

        if isinstance(port, str):
            class Srv(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
                daemon_threads = True
                request_queue_size = 64
            self.srv = Srv(port, Handler)
        else:
            class Srv(socketserver.ThreadingMixIn, socketserver.TCPServer):
                daemon_threads = True
                allow_reuse_address = True
                request_queue_size = 64
            self.srv = Srv(("127.0.0.1", port), Handler)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()

    def session(self, r, w, conn):
        def say(s):
            w.write(s.encode() + b"\r\n")
            w.flush()
        say("220 firesink ESMTP")
        rcpts = []
        while True:
            line = r.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO", "LHLO"):
                say("250 firesink" if verb == "HELO" else "250-firesink\r\n250-PIPELINING\r\n250 8BITMIME")
            elif verb == "MAIL":
                rcpts = []
                say("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr = cmd[cmd.index("<") + 1:cmd.index(">")]
                if "slowrcpt" in addr and self.slow_rcpt:
                    time.sleep(self.slow_rcpt)     # the peer being slow, not a wait for an event
                rcpts.append(addr)
                say("250 2.1.5 Ok")
            elif verb == "DATA":
                say("354 go ahead")
                data = b""
                while True:
                    l = r.readline()
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    data += l[1:] if l.startswith(b".") else l
                m = TOKEN_RE.search(data)
                token = m.group(1).decode() if m else "?"
                t_data = time.monotonic()
                with self.lock:
                    idx = len(self.got)
                    self.got.extend([token, a, t_data, None] for a in rcpts)
                if not self.lmtp and self.slow_dot and any("slowdot" in a for a in rcpts):
                    time.sleep(self.slow_dot)
                for a in (rcpts if self.lmtp else [None]):
                    if self.lmtp and self.slow_dot and "slowdot" in a:
                        time.sleep(self.slow_dot)   # the recipients before it have their 250 already
                    say("250 2.0.0 Ok: queued")
                t_ack = time.monotonic()
                with self.lock:
                    for k in range(idx, idx + len(rcpts)):
                        self.got[k][3] = t_ack
            elif verb == "RSET":
                say("250 2.0.0 Ok")
            elif verb == "QUIT":
                t_quit = time.monotonic()
                if self.quit_hold:
                    # hold the 221 and see when the client closes (None: still open after the hold)
                    conn.settimeout(self.quit_hold)
                    try:
                        closed = r.read(1) == b""
                    except TimeoutError:
                        closed = False
                    except OSError:
                        closed = True      # reset: closed too
                    with self.lock:
                        self.quit_to_eof.append(time.monotonic() - t_quit if closed else None)
                    if closed:
                        return
                say("221 2.0.0 Bye")
                return
            else:
                say("502 5.5.2 Error: command not recognized")

    def pairs(self):
        with self.lock:
            return [tuple(x) for x in self.got]


def sockets_to(pid, port):
    """TCP sockets process pid holds whose remote port is port (its outbound connections there)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fl = row.split()
            if int(fl[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(fl[9])
    n = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                n += 1
    except OSError:
        pass
    return n


class PeakSampler:
    """Samples sockets_to(pid, port) every few milliseconds in a thread: the peak it saw."""

    def __init__(self, pid, port):
        self.peak, self.samples, self.stop_ev = 0, 0, threading.Event()
        self.t = threading.Thread(target=self.run, args=(pid, port), daemon=True)
        self.t.start()

    def run(self, pid, port):
        while not self.stop_ev.is_set():
            self.peak = max(self.peak, sockets_to(pid, port))
            self.samples += 1
            self.stop_ev.wait(0.002)

    def stop(self):
        self.stop_ev.set()
        self.t.join()
        return self.peak


def msg(token, n=0):
    return ("From: a@example.test\r\nSubject: %s\r\nX-Token: %s\r\n\r\n%s\r\n" % (token, token, "x" * n)).encode()


class SmtpFire(unittest.TestCase):
    def daemon(self, extra, **kw):
        d = Daemon("relay_domains = relay.test\nsmtp_helo_timeout = 5s\nsmtp_connect_timeout = 5s\n" + extra, **kw)
        self.addCleanup(d.cleanup)
        return d

    def sink(self, port, **kw):
        s = FireSink(port, **kw)
        self.addCleanup(s.stop)
        return s

    def send(self, d, rcpts, tokens):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW) as c:
            for t in tokens:
                c.sendmail("alice@example.test", rcpts(t), msg(t))

    def tmpdir(self):
        t = tempfile.mkdtemp(prefix="frugal-fire-")
        self.addCleanup(shutil.rmtree, t, True)
        return t

    def queue_empty(self, d):
        return not os.listdir(os.path.join(d.queue, "committed"))

    # (1) SIGKILL in the middle of multi-recipient deliveries
    def test_sigkill_mid_multi_recipient(self):
        """24 messages of 5 or 6 recipients, cut into jobs of 2 (smtp_destination_recipient_limit),
        some jobs slow at an RCPT (held in flight) or at the reply to the dot (the peer has the
        message, frugal has no 250 yet: the unavoidable window). Two SIGKILLs while they go out.
        After the restarts every recipient got the message; a recipient is delivered twice only
        if its copy was in the window at a kill (no 250 yet, or one just before the kill): a
        recipient acknowledged well before a kill is never sent again, even when its message still
        had jobs in flight (the early marks of qmgr.c)."""
        self.sigkill_case(lmtp=False)

    def test_sigkill_mid_multi_recipient_lmtp(self):
        """The same over LMTP (a unix socket), where the replies after the dot come one per
        recipient: a kill between them (the first recipient's 250 received, the second's held
        1 s) re-sends the whole job, the unavoidable window; jobs done before are not re-sent."""
        self.sigkill_case(lmtp=True)

    def sigkill_case(self, lmtp):
        if lmtp:
            port = os.path.join(self.tmpdir(), "lmtp.sock")
            route = "lmtp:unix:%s" % port
        else:
            port = free_port()
            route = "smtp:[127.0.0.1]:%d" % port
        sink = self.sink(port, slow_rcpt=2.0, slow_dot=1.0, lmtp=lmtp)
        conc, rlimit, margin = 6, 2, 0.5 * SLOW
        d = self.daemon("transport_maps = inline:{ relay.test=%s }\n"
                        "%s_destination_recipient_limit = %d\ndelivery_concurrency_limit = %d\n"
                        % (route, "lmtp" if lmtp else "smtp", rlimit, conc)).start()

        def rcpts(t):
            i = int(t.split("-")[1])
            r = ["%s-a" % t, "%s-b" % t, "%s-c" % t, "%s-%sd" % (t, "slowdot-" if i % 2 == 0 else ""),
                 "%s-e" % t] + (["%s-slowrcpt-f" % t] if i % 4 == 1 else [])
            return [x + "@relay.test" for x in r]
        tokens = ["m-%d" % i for i in range(24)]
        expected = {(t, a) for t in tokens for a in rcpts(t)}
        self.send(d, rcpts, tokens)
        kills = []
        for threshold in (len(expected) // 4, len(expected) // 2):
            wait_for(lambda: len({(p[0], p[1]) for p in sink.pairs() if p[3] is not None}) >= threshold,
                     30, "%d recipients acknowledged by the sink" % threshold, interval=0.005)
            t0 = time.monotonic()
            d.kill9()
            kills.append((t0, time.monotonic()))   # the daemon is gone by the second time
            d.start()
        wait_for(lambda: expected <= {(p[0], p[1]) for p in sink.pairs()} and self.queue_empty(d),
                 60, "every recipient delivered and the queue empty", interval=0.05)
        got = sink.pairs()
        seen = {}
        for tok, a, t_data, t_ack in got:
            seen.setdefault((tok, a), []).append((t_data, t_ack))
        self.assertEqual(expected - set(seen), set(), "recipients lost")
        self.assertEqual(set(seen) - expected, set(), "recipients nobody sent to")
        dups = {k: v for k, v in seen.items() if len(v) > 1}
        for k, v in dups.items():
            first_ack = v[0][1]
            # the first copy was in the window of some kill: not acknowledged before it, or just before
            in_window = any(v[0][0] < k1 and (first_ack is None or first_ack > k0 - margin) for k0, k1 in kills)
            self.assertTrue(in_window, "%s delivered %d times outside a kill's window: %s (kills at %s)\n%s"
                            % (k, len(v), v, kills, "\n".join(l for l in d.output().splitlines()
                                                              if k[0] + "-" in l or "warning" in l)[-6000:]))
        # in flight at a kill: at most conc jobs of rlimit recipients; and as a slot is free at
        # done(), before the job's marks are synced, as many again that had just finished
        bound = 2 * len(kills) * conc * rlimit
        self.assertLessEqual(sum(len(v) - 1 for v in dups.values()), bound)
        print("\n  sigkill%s: %d recipients, %d kills, %d delivered twice (bound %d), 0 lost"
              % (" lmtp" if lmtp else "", len(expected), len(kills), sum(len(v) - 1 for v in dups.values()), bound))

    # (4) QUIT without waiting for the 221
    def test_quit_not_waited_for(self):
        """A peer that never answers QUIT (it holds the 221 for 5 s): each connection that is not
        kept is closed right after QUIT (Postfix's smtp_skip_quit_response = yes), so sockets
        of finished deliveries do not pile up: frugal holds at most delivery_concurrency_limit
        sockets to the sink at any time (sampled from /proc; the sink's own count lags: it sees a
        close only when its thread reads it). Waiting for the 221 held each socket 5 s more, past the
        budget, while new deliveries opened others."""
        port = free_port()
        hold = 5.0
        sink = self.sink(port, quit_hold=hold, slow_dot=0.2)   # 0.2 s a message: the sampler sees the slots
        conc, n = 3, 12
        d = self.daemon("transport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n"
                        "delivery_concurrency_limit = %d\nsmtp_connection_cache_on_demand = no\n"
                        % (port, conc)).start()
        tokens = ["q-%d" % i for i in range(n)]
        sampler = PeakSampler(d.smtpd_pid(), port)
        t0 = time.monotonic()
        self.send(d, lambda t: ["%s-slowdot@relay.test" % t], tokens)
        wait_for(lambda: len(sink.pairs()) >= n and self.queue_empty(d), 30, "every message delivered")
        took = time.monotonic() - t0
        peak = sampler.stop()
        self.assertLessEqual(peak, conc, "sockets held past delivery_concurrency_limit")
        self.assertGreaterEqual(peak, 2, "the sampler saw the deliveries run in parallel")
        wait_for(lambda: sink.open == 0 and len(sink.quit_to_eof) == sink.connections, 10,
                 "every connection closed")
        self.assertEqual(sorted(p[0] for p in sink.pairs()), sorted(tokens))
        self.assertEqual(sink.connections, n)
        self.assertNotIn(None, sink.quit_to_eof, "a connection stayed open after QUIT")
        self.assertLess(max(sink.quit_to_eof), 1.0 * SLOW)
        # 12 messages over 3 slots could not have been done in well under 5 s had each waited for its 221
        self.assertLess(took, hold)
        print("\n  quit: %d connections, peak %d held by frugal (limit %d; the sink counted %d), "
              "QUIT to close max %.3f s, all in %.2f s"
              % (sink.connections, peak, conc, sink.peak, max(sink.quit_to_eof), took))

    def flush(self, d):
        r = run_frugal("queue", "-c", d.dir, "flush")
        self.assertEqual(r.returncode, 0, r.stderr)

    def resampled_since_release(self, d):
        """Wait for the daemon's first limits sample after a hog left. Until then its caps are the
        ones a sample took while the hog held everything (limits/ re-samples every 5 s): a flush in
        between is refused by the descriptor funnel and the mail waits for its backoff (seen under
        TSan, where the flush command is slow enough to let a sample in while the hog is there)."""
        from test_container import limits_json
        t = time.time()
        wait_for(lambda: limits_json(d)["daemon"]["sample_time"] > t, 15, "a limits sample after the hog left",
                 interval=0.2)

    def warnings(self, d, *words):
        return [l for l in d.output().splitlines() if "warning:" in l and any(w in l for w in words)]

    # (3) descriptor exhaustion at socket(): RLIMIT_NOFILE lowered under the running daemon
    def test_emfile_while_delivering(self):
        """Mail held by defer_transports; the daemon's RLIMIT_NOFILE is lowered (prlimit) to what it
        holds plus one, then the mail is flushed: the queue file takes the last descriptor and
        socket() gets EMFILE. The batch is deferred with a warning naming the resource, nothing
        bounces or is lost, the daemon lives; with the limit back, a flush delivers every
        recipient once."""
        port = free_port()
        sink = self.sink(port)
        d = self.daemon("transport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n"
                        "defer_transports = smtp\n" % port).start()
        tokens = ["e-%d" % i for i in range(5)]
        self.send(d, lambda t: ["%s-1@relay.test" % t, "%s-2@relay.test" % t], tokens)
        wait_for(lambda: d.output().count("status=deferred (deferred transport)") >= 10, 10, "mail held")
        pid = d.smtpd_pid()
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # at rest: the sending session and its spool file may still be open just after the
        # mail is held, and a limit taken from that moment leaves room for a socket later
        # (seen under load); at rest is two published samples in a row that agree with /proc
        last = [None]

        def at_rest():
            st = d.next_status()
            n = len(os.listdir("/proc/%d/fd" % pid))
            ok = st["use_fd"] == n and last[0] == n
            last[0] = n if st["use_fd"] == n else None
            return n if ok else None
        held = wait_for(at_rest, 20, "the daemon at rest")
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (held + 1, hard))
        self.flush(d)
        wait_for(lambda: self.warnings(d, "RLIMIT_NOFILE", "descriptor"), 10, "a warning naming the resource")
        # a few rounds under pressure (backoff 1-2 s in the harness, the retry timer 1 s)
        wait_for(lambda: d.output().count("Too many open files") + d.output().count("postponed") >= 3, 15,
                 "attempts under pressure")
        self.assertEqual(sink.pairs(), [], "delivered while no socket could be made")
        self.assertIsNone(d.proc.poll(), "frugal died")
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        self.flush(d)
        wait_for(lambda: len(sink.pairs()) >= 10 and self.queue_empty(d), 20, "every recipient delivered")
        got = sorted((p[0], p[1]) for p in sink.pairs())
        self.assertEqual(got, sorted((t, "%s-%d@relay.test" % (t, k)) for t in tokens for k in (1, 2)))
        self.assertNotIn("status=bounced", d.output())
        self.assertEqual(d.smtpd_pid(), pid)
        w = self.warnings(d, "RLIMIT_NOFILE", "descriptor")
        print("\n  emfile: %d warnings, first: %s" % (len(w), w[0].split("warning: ", 1)[1][:160]))

    # (3) the container emulator: numtcpsock, numothersock and numfile capped
    def test_container_sockets_while_delivering(self):
        """frugal in an emulated OpenVZ container (tests/emul/vzemul.c) with numtcpsock 40,
        numothersock 60 and numfile 400. 30 messages to a sink that takes 0.3 s per message:
        the connections open at once at the sink never pass the deliveries the budget allows
        (`frugal limits`). Then another process of the container takes every TCP socket left
        and held mail is flushed: socket() fails (ENOMEM, as OpenVZ), or the budget a sample
        already shrank refuses it first, the batch is deferred with a warning naming numtcpsock, the budget shrinks, nothing is lost, the daemon lives;
        once the hog is gone a flush delivers every recipient once."""
        from test_container import Container, need_emulator, limits_json
        need_emulator(self)
        ct = Container(numtcpsock=40, numothersock=60, numfile=400)
        self.addCleanup(ct.cleanup)
        port = free_port()
        sink = self.sink(port, slow_dot=0.3)
        d = self.daemon(ct.conf() + "transport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n"
                        "smtp_connection_cache_on_demand = no\n" % port, env=ct.env).start()
        budget = limits_json(d)["deliveries"]["limit"]
        tokens = ["c-%d" % i for i in range(30)]
        sampler = PeakSampler(d.smtpd_pid(), port)
        self.send(d, lambda t: ["%s-slowdot@relay.test" % t], tokens)
        wait_for(lambda: len(sink.pairs()) >= 30 and self.queue_empty(d), 60, "30 messages delivered")
        peak = sampler.stop()
        self.assertLessEqual(peak, budget, "outbound sockets held at once past the delivery budget")
        self.assertGreaterEqual(peak, 2, "deliveries ran in parallel (the measure can see a breach)")
        # phase 2: no TCP socket left in the container
        with open(os.path.join(d.dir, "frugal.conf"), "a") as f:
            f.write("defer_transports = smtp\n")
        self.assertEqual(run_frugal("reload", "-c", d.dir).returncode, 0)
        # "reload requested" is logged when the request arrives, before the new configuration is
        # in force: mail sent after it could still go out (seen under TSan, where the reload is slow)
        d.wait_log("reload -- version", timeout=10)
        held_tokens = ["h-%d" % i for i in range(4)]
        self.send(d, lambda t: ["%s-1@relay.test" % t, "%s-2@relay.test" % t], held_tokens)
        wait_for(lambda: d.output().count("status=deferred (deferred transport)") >= 8, 10, "mail held")
        hog, n = ct.hog("try:\n    while True: held.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))\n"
                        "except OSError: pass\n")
        self.flush(d)
        wait_for(lambda: self.warnings(d, "numtcpsock exhausted"), 15, "a warning naming numtcpsock")
        squeezed = limits_json(d)["deliveries"]["limit"]
        self.assertEqual(len(sink.pairs()), 30, "nothing delivered without a socket")
        self.assertIsNone(d.proc.poll(), "frugal died")
        Container.release(hog)
        self.resampled_since_release(d)
        self.flush(d)
        wait_for(lambda: len(sink.pairs()) >= 38 and self.queue_empty(d), 30, "held mail delivered")
        got = sorted((p[0], p[1]) for p in sink.pairs() if p[0].startswith("h-"))
        self.assertEqual(got, sorted((t, "%s-%d@relay.test" % (t, k)) for t in held_tokens for k in (1, 2)))
        self.assertNotIn("status=bounced", d.output())
        w = self.warnings(d, "numtcpsock exhausted")
        print("\n  container: deliveries budget %d, peak %d outbound sockets (%d samples; the sink saw %d "
              "at once) for 30 messages; hog took %d TCP sockets: budget %d, %d warnings (%s)"
              % (budget, peak, sampler.samples, sink.peak, n, squeezed, len(w), w[0].split("warning: ", 1)[1][:120]))

    # qmgr.c defer_msg: a postponement (no backoff) must not end a flush
    def test_flush_survives_postponement(self):
        """40 messages held by defer_transports in a daemon whose RLIMIT_NOFILE (64) lets only a
        few be loaded at once, then flushed: the ones that find the descriptor budget exhausted
        are postponed ("delivery postponed", no backoff) and loaded again a second later, still
        as part of the flush. Dropping the flush flag at that postponement held them again as
        "deferred transport" until the next flush: they were never delivered."""
        port = free_port()
        sink = self.sink(port)
        d = self.daemon("transport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n"
                        "defer_transports = smtp\n" % port)

        def small():
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        d.start(preexec_fn=small)
        tokens = ["f-%d" % i for i in range(40)]
        self.send(d, lambda t: ["%s@relay.test" % t], tokens)
        wait_for(lambda: d.output().count("status=deferred (deferred transport)") >= 40, 20, "mail held")
        self.flush(d)
        wait_for(lambda: len(sink.pairs()) >= 40 and self.queue_empty(d), 20, "every flushed message delivered")
        self.assertEqual(sorted(p[0] for p in sink.pairs()), sorted(tokens))
        postponed = d.output().count("descriptor budget exhausted: delivery postponed")
        self.assertGreater(postponed, 0, "the flush never met a postponement: the test proves nothing")
        print("\n  flush: 40 delivered, %d postponements on the way" % postponed)

    def held_then_hog(self, ct, d, sink, transport, hog_code, words, n_before=0):
        """Mail held (defer_transports), a hog takes a resource of the container, a flush: a warning
        naming the resource, nothing delivered, frugal alive; the hog leaves, a flush: every
        recipient once. Returns (warnings, objects the hog held)."""
        from test_container import Container
        tokens = ["%s-%d" % (transport, i) for i in range(4)]
        self.send(d, lambda t: ["%s-1@relay.test" % t, "%s-2@relay.test" % t], tokens)
        wait_for(lambda: d.output().count("status=deferred (deferred transport)") >= 8, 10, "mail held")
        hog, n = ct.hog(hog_code)
        self.flush(d)
        wait_for(lambda: self.warnings(d, *words), 15, "a warning naming %s" % (words,))
        self.assertEqual(len(sink.pairs()), n_before, "delivered without the resource")
        self.assertIsNone(d.proc.poll(), "frugal died")
        Container.release(hog)
        self.resampled_since_release(d)
        self.flush(d)
        wait_for(lambda: len(sink.pairs()) >= n_before + 8 and self.queue_empty(d), 30, "held mail delivered")
        got = sorted((p[0], p[1]) for p in sink.pairs()[n_before:])
        self.assertEqual(got, sorted((t, "%s-%d@relay.test" % (t, k)) for t in tokens for k in (1, 2)))
        self.assertNotIn("status=bounced", d.output())
        return self.warnings(d, *words), n

    def test_container_numothersock_lmtp(self):
        """LMTP over a unix socket (numothersock: two objects a connection) while another process
        holds every non-TCP socket of the container: deferred with a warning naming numothersock,
        then delivered once."""
        from test_container import Container, need_emulator
        need_emulator(self)
        ct = Container(numtcpsock=40, numothersock=60, numfile=400)
        self.addCleanup(ct.cleanup)
        path = os.path.join(ct.dir, "lmtp.sock")
        sink = self.sink(path, lmtp=True)
        d = self.daemon(ct.conf() + "transport_maps = inline:{ relay.test=lmtp:unix:%s }\n"
                        "defer_transports = lmtp\n" % path, env=ct.env).start()
        w, n = self.held_then_hog(ct, d, sink, "lmtp",
                                  "try:\n    while True: held.extend(socket.socketpair())\nexcept OSError: pass\n"
                                  "try:\n    while True: held.append(socket.socket(socket.AF_UNIX))\n"
                                  "except OSError: pass\n", ("numothersock exhausted",))
        print("\n  numothersock: hog took %d, %d warnings (%s)" % (n, len(w), w[0].split("warning: ", 1)[1][:120]))

    def test_container_numothersock_at_connect(self):
        """The hog leaves one non-TCP socket free: frugal's unix socket is made, and its connect()
        (the server's end is a second object) fails with ENOMEM: deferred with a warning naming
        numothersock at connect, then delivered once."""
        from test_container import Container, need_emulator
        need_emulator(self)
        ct = Container(numtcpsock=40, numothersock=60, numfile=400)
        self.addCleanup(ct.cleanup)
        path = os.path.join(ct.dir, "lmtp.sock")
        sink = self.sink(path, lmtp=True)
        d = self.daemon(ct.conf() + "transport_maps = inline:{ relay.test=lmtp:unix:%s }\n"
                        "defer_transports = lmtp\n" % path, env=ct.env).start()
        w, n = self.held_then_hog(ct, d, sink, "lmtp",
                                  "try:\n    while True: held.append(socket.socket(socket.AF_UNIX))\n"
                                  "except OSError: pass\nheld.pop().close()\n",
                                  ("numothersock exhausted: connect to",))
        print("\n  numothersock at connect: hog holds %d, %d warnings (%s)"
              % (n, len(w), w[0].split("warning: ", 1)[1][:140]))

    def test_container_numfile(self):
        """Another process holds every file of the container (numfile, ENFILE): the flushed batch is
        postponed or deferred with a warning naming numfile, then delivered once."""
        from test_container import Container, need_emulator
        need_emulator(self)
        ct = Container(numtcpsock=40, numothersock=60, numfile=400)
        self.addCleanup(ct.cleanup)
        port = free_port()
        sink = self.sink(port)
        d = self.daemon(ct.conf() + "transport_maps = inline:{ relay.test=smtp:[127.0.0.1]:%d }\n"
                        "defer_transports = smtp\n" % port, env=ct.env).start()
        w, n = self.held_then_hog(ct, d, sink, "smtp",
                                  "try:\n    while True: held.append(open('/dev/null'))\nexcept OSError: pass\n",
                                  ("numfile",))
        print("\n  numfile: hog took %d, %d warnings (%s)" % (n, len(w), w[0].split("warning: ", 1)[1][:120]))
