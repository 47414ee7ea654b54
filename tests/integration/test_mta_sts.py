"""tests/integration/test_mta_sts.py: MTA-STS (RFC 8461) in the SMTP client
(queue/mta_sts.c, queue/smtpc.c) against real peers on loopback: the test's
DNS server (dnsserver.py) serves _mta-sts TXT records, the MX and the
mta-sts.DOMAIN address (127.0.0.1); an HTTPS server here (http.server +
ssl, certificate from a CA the test makes with openssl, which the daemon
trusts through smtp_mta_sts_CAfile) serves the policies and counts the
requests; SMTP sinks (test_smtp_client.PySink) with and without STARTTLS and
with certificates from the same CA take the mail.

The policy URL's port is 443 in production; an unprivileged test cannot bind
it, so the daemon reads FRUGAL_TEST_MTA_STS_PORT (tests only). Everything
else is as deployed: the Host header, the certificate checked for
mta-sts.DOMAIN, the MX certificate checked for the MX host name.
"""
import http.server
import os
import pwd
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from dnsserver import DNSServer
from harness import Daemon, wait_for, free_port, SLOW, VALGRIND
from test_smtp_client import PySink

MSG = "Subject: sts\r\n\r\nhello\r\n"

# domain -> (TXT id, policy text); the MX of each is mx.DOMAIN at 127.0.0.1
ENF = "version: STSv1\nmode: enforce\nmx: mx.%s\nmax_age: 86400\n"
DOMAINS = ["enf.test", "notls.test", "other.test", "badcert.test", "tst.test", "cache.test", "chg.test",
           "e404.test", "eredir.test", "ectype.test", "ebig.test", "hang.test", "free.test", "wild.test",
           "off.test", "tstcert.test", "priv.test", "many.test", "noca.test",
           "hang2.test", "neg500.test", "neghang.test", "negoff.test",
           "reuse.test", "reuse2.test"]
SAN = ",".join(["DNS:mta-sts.%s" % d for d in DOMAINS] + ["DNS:mx.%s" % d for d in DOMAINS if d != "badcert.test"]
               + ["DNS:*.wild.test"])


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, cwd=cwd)


def make_ca(d):
    """A CA and one leaf (P-256) for every mta-sts.* and mx.* name but mx.badcert.test; another leaf for
    mx.wrong.test only. Returns (ca.crt, (leaf.crt, leaf.key), (wrong.crt, wrong.key))."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=frugal test CA", "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, san, serial in (("leaf", SAN, "2"), ("wrong", "DNS:mx.wrong.test", "3")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" % san)
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", serial,
                "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext", cwd=d)
    j = lambda n: os.path.join(d, n)
    return j("ca.crt"), (j("leaf.crt"), j("leaf.key")), (j("wrong.crt"), j("wrong.key"))


class PolicyServer:
    """HTTPS on 127.0.0.1: per Host, a response (status, content type, body), a redirect, or a hang."""

    def __init__(self, cert, key):
        self.responses = {}     # host -> dict(status=200, ctype="text/plain", body="...", hang=False, location=None)
        self.requests = []      # (host, path)
        self.held = []          # for each response held by "until": did its condition come true
        self.release = threading.Event()
        self.lock = threading.Lock()
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                host = (self.headers.get("Host") or "").lower()
                with srv.lock:
                    srv.requests.append((host, self.path))
                    r = dict(srv.responses.get(host, {"status": 404, "body": "no policy"}))
                if r.get("hang"):
                    srv.release.wait(60)
                    return
                if r.get("until"):
                    # answer only once the condition holds (deadline 5 s): deliveries pile up on one fetch
                    deadline = time.monotonic() + 5 * SLOW
                    while not r["until"]() and time.monotonic() < deadline:
                        time.sleep(0.01)
                    with srv.lock:
                        srv.held.append(r["until"]())
                body = r.get("body", "").encode()
                self.send_response(r.get("status", 200))
                self.send_header("Content-Type", r.get("ctype", "text/plain"))
                if r.get("location"):
                    self.send_header("Location", r["location"])
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

        class Srv(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                # the handshake in the handler's thread: a stuck client must not hold the accept loop
                conn, addr = self.socket.accept()
                return ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd = Srv(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self, domain):
        with self.lock:
            return sum(1 for h, p in self.requests if h == "mta-sts." + domain and p == "/.well-known/mta-sts.txt")

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def records(port_unused=None):
    r = {}
    for d in DOMAINS:
        r["mta-sts." + d] = [("A", "127.0.0.1")]
        r["_mta-sts." + d] = [("TXT", "v=STSv1; id=1;", 0)]
        r[d] = [("MX", (10, "mx." + d))]
        r["mx." + d] = [("A", "127.0.0.1")]
    del r["_mta-sts.free.test"]          # free.test has no policy at all
    r["wild.test"] = [("MX", (10, "a.wild.test"))]
    r["a.wild.test"] = [("A", "127.0.0.1")]
    return r


class MtaSts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="frugal-sts-")
        cls.ca, cls.leaf, cls.wrong = make_ca(cls.tmp)
        cls.https = PolicyServer(*cls.leaf)
        cls.dns = DNSServer(records()).start()

    @classmethod
    def tearDownClass(cls):
        cls.https.stop()
        cls.dns.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def policy(self, domain, body=None, **kw):
        kw.setdefault("body", body if body is not None else ENF % domain)
        self.https.responses["mta-sts." + domain] = kw

    def sink(self, tls=True, cert=None):
        port = free_port()
        s = PySink(("127.0.0.1", port), tls=(cert or self.leaf) if tls else None)
        self.addCleanup(s.stop)
        return s, port

    def daemon(self, domains, port, extra="", start=True, ca=None):
        maps = ", ".join("%s=smtp:%s:%d" % (d, d, port) for d in domains)
        d = Daemon("relay_domains = %s\ntransport_maps = inline:{ %s }\n"
                   "smtp_mta_sts_CAfile = %s\nsmtp_mta_sts_timeout = %ds\n"
                   "smtp_connection_cache_on_demand = no\nsmtp_helo_timeout = 5s\n%s"
                   # under valgrind a policy fetch (its TLS handshake) takes longer than 2 s
                   % (", ".join(domains), maps, ca or self.ca, 20 if VALGRIND else 2, extra),
                   dns=self.dns, env={"FRUGAL_TEST_MTA_STS_PORT": str(self.https.port)})
        self.addCleanup(d.cleanup)
        return d.start() if start else d

    def send(self, d, rcpt):
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW) as c:
            c.sendmail("alice@example.test", [rcpt], MSG)

    def status(self, d, rcpt, what="sent", timeout=15):
        pat = re.compile(r"to=<%s>, relay=.*status=%s" % (re.escape(rcpt), what))
        wait_for(lambda: pat.search(d.output()), timeout=timeout, what="%s %s" % (rcpt, what))
        return [l for l in d.output().splitlines() if "to=<%s>" % rcpt in l and "status=" in l]

    # ---- enforce ----

    def test_enforce_valid_certificate_delivered(self):
        self.policy("enf.test")
        s, port = self.sink()
        d = self.daemon(["enf.test"], port)
        self.send(d, "u@enf.test")
        self.status(d, "u@enf.test")
        log = d.output()
        self.assertIn("MTA-STS policy for enf.test fetched: id=1 mode=enforce max_age=86400 mx=1", log)
        self.assertRegex(log, r"Verified TLS connection established to mx\.enf\.test\[127\.0\.0\.1\]:%d" % port)
        self.assertEqual((len(s.messages), s.tls_messages), (1, 1))
        self.assertEqual(self.https.count("enf.test"), 1)
        self.assertTrue(os.path.exists(os.path.join(d.queue, "sts", "enf.test")))

    def test_enforce_without_starttls_deferred(self):
        self.policy("notls.test")
        s, port = self.sink(tls=False)
        d = self.daemon(["notls.test"], port)
        self.send(d, "u@notls.test")
        lines = self.status(d, "u@notls.test", "deferred")
        self.assertIn("dsn=4.7.4, status=deferred (MTA-STS policy enforce for notls.test: TLS is required, but was "
                      "not offered by host mx.notls.test[127.0.0.1])", lines[0])
        self.assertEqual(s.messages, [])

    def test_control_sts_off_delivers_in_plain_text(self):
        # the negative control of the case above: the same peer and policy, smtp_mta_sts = no
        self.policy("off.test")
        s, port = self.sink(tls=False)
        d = self.daemon(["off.test"], port, "smtp_mta_sts = no\n")
        self.send(d, "u@off.test")
        self.status(d, "u@off.test")
        self.assertEqual((len(s.messages), s.tls_messages), (1, 0))
        self.assertEqual(self.https.count("off.test"), 0)
        self.assertEqual(self.dns.count("_mta-sts.off.test", "TXT"), 0)

    def test_enforce_mx_not_covered_deferred(self):
        self.policy("other.test", ENF % "elsewhere.test")
        s, port = self.sink()
        d = self.daemon(["other.test"], port)
        self.send(d, "u@other.test")
        lines = self.status(d, "u@other.test", "deferred")
        self.assertIn("MTA-STS policy enforce for other.test: mx.other.test not covered", d.output())
        self.assertIn("dsn=4.7.0, status=deferred (MTA-STS policy enforce for other.test: MX host mx.other.test "
                      "not covered by the policy)", lines[0])
        self.assertEqual(s.messages, [])

    def test_enforce_certificate_not_for_the_mx_deferred(self):
        # signed by the trusted CA, but for mx.wrong.test: the name check fails
        self.policy("badcert.test")
        s, port = self.sink(cert=self.wrong)
        s.srv.handle_error = lambda *a: None     # the sink's side of the refused handshake is expected
        d = self.daemon(["badcert.test"], port)
        self.send(d, "u@badcert.test")
        lines = self.status(d, "u@badcert.test", "deferred")
        self.assertRegex(lines[0], r"dsn=4\.7\.5, status=deferred \(MTA-STS policy enforce for badcert\.test: "
                         r"Cannot start TLS: certificate verification failed for mx\.badcert\.test")
        self.assertEqual(s.messages, [])

    def test_wildcard_pattern_covers_one_label(self):
        self.policy("wild.test", "version: STSv1\r\nmode: enforce\r\nmx: *.wild.test\r\nmax_age: 600\r\n")
        s, port = self.sink()
        d = self.daemon(["wild.test"], port)
        self.send(d, "u@wild.test")
        self.status(d, "u@wild.test")
        self.assertRegex(d.output(), r"Verified TLS connection established to a\.wild\.test")
        self.assertEqual(s.tls_messages, 1)

    # ---- testing ----

    def test_testing_mode_delivers_and_logs(self):
        self.policy("tst.test", "version: STSv1\nmode: testing\nmx: mx.elsewhere.test\nmax_age: 600\n")
        s, port = self.sink(tls=False)
        d = self.daemon(["tst.test"], port)
        self.send(d, "u@tst.test")
        self.status(d, "u@tst.test")
        log = d.output()
        self.assertIn("MTA-STS policy testing for tst.test: mx.tst.test not covered (delivering anyway: testing mode)",
                      log)
        self.assertIn("MTA-STS policy testing for tst.test: TLS is required, but was not offered by host "
                      "mx.tst.test[127.0.0.1] (delivering anyway: testing mode)", log)
        self.assertEqual(len(s.messages), 1)

    def test_testing_mode_logs_a_certificate_that_enforce_would_refuse(self):
        self.policy("tstcert.test", "version: STSv1\nmode: testing\nmx: mx.tstcert.test\nmax_age: 600\n")
        s, port = self.sink(cert=self.wrong)
        d = self.daemon(["tstcert.test"], port)
        self.send(d, "u@tstcert.test")
        self.status(d, "u@tstcert.test")
        self.assertIn("MTA-STS policy testing for tstcert.test: certificate verification failed for mx.tstcert.test "
                      "(delivering anyway: testing mode)", d.output())
        self.assertEqual((len(s.messages), s.tls_messages), (1, 1))

    # ---- the cache ----

    def test_policy_cached_and_read_at_start(self):
        self.policy("cache.test")
        s, port = self.sink()
        d = self.daemon(["cache.test"], port)
        self.send(d, "u1@cache.test")
        self.status(d, "u1@cache.test")
        self.send(d, "u2@cache.test")
        self.status(d, "u2@cache.test")
        self.assertEqual(self.https.count("cache.test"), 1)
        # a new daemon on the same queue reads the file: still no fetch, and the policy is enforced
        d.stop()
        self.policy("cache.test", status=500)      # a fetch now would fail: no policy, plain would be allowed
        d.start()
        self.send(d, "u3@cache.test")
        self.status(d, "u3@cache.test")
        self.assertIn("MTA-STS cache: 1 policies loaded", d.output())
        self.assertEqual(self.https.count("cache.test"), 1)
        self.assertEqual((len(s.messages), s.tls_messages), (3, 3))

    def test_cache_belongs_to_an_unprivileged_mail_owner(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: the daemon drops to mail_owner = nobody, who must be able to write the cache")
        try:
            pw = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user nobody")
        os.chmod(self.tmp, 0o755)           # the CA file is read by the daemon as nobody
        self.policy("priv.test")
        s, port = self.sink()
        d = self.daemon(["priv.test"], port, "mail_owner = nobody\n", start=False)
        os.chmod(d.dir, 0o755)
        d.start()
        self.send(d, "u@priv.test")
        self.status(d, "u@priv.test")
        top, f = os.stat(os.path.join(d.queue, "sts")), os.stat(os.path.join(d.queue, "sts", "priv.test"))
        self.assertEqual((top.st_uid, top.st_mode & 0o7777), (pw.pw_uid, 0o700))
        self.assertEqual((f.st_uid, f.st_mode & 0o7777), (pw.pw_uid, 0o600))
        self.assertEqual(s.tls_messages, 1)

    def test_changed_id_refetched_and_failed_refetch_keeps_policy(self):
        self.policy("chg.test")
        s, port = self.sink()
        d = self.daemon(["chg.test"], port)
        self.send(d, "u1@chg.test")
        self.status(d, "u1@chg.test")
        self.assertEqual(self.https.count("chg.test"), 1)
        # a new id and a policy that covers no MX of the domain: fetched, and in force
        self.dns.records["_mta-sts.chg.test"] = [("TXT", "v=STSv1; id=2;", 0)]
        self.policy("chg.test", ENF % "nowhere.test")
        self.send(d, "u2@chg.test")
        self.status(d, "u2@chg.test", "deferred")
        self.assertEqual(self.https.count("chg.test"), 2)
        self.assertIn("MTA-STS policy for chg.test fetched: id=2", d.output())
        # id 3, but the server fails: the cached policy (id 2) stays in force (RFC 8461 5.1)
        self.dns.records["_mta-sts.chg.test"] = [("TXT", "v=STSv1; id=3;", 0)]
        self.policy("chg.test", status=404)
        self.send(d, "u3@chg.test")
        self.status(d, "u3@chg.test", "deferred")
        self.assertIn("MTA-STS policy fetch for chg.test failed: HTTP status 404", d.output())
        # the failure of id 3 is remembered: no fetch, and the cached policy still in force
        self.send(d, "u4@chg.test")
        self.status(d, "u4@chg.test", "deferred")
        self.assertEqual(self.https.count("chg.test"), 3)
        self.assertEqual(len(s.messages), 1)

    def test_deliveries_to_one_domain_share_one_fetch(self):
        # the policy server answers once four TXT lookups (one per delivery, TTL 0) have been made:
        # the four deliveries wait on the one fetch
        self.policy("many.test", until=lambda: self.dns.count("_mta-sts.many.test", "TXT") >= 4)
        s, port = self.sink()
        d = self.daemon(["many.test"], port, "default_destination_recipient_limit = 1\n")
        with smtplib.SMTP("127.0.0.1", d.port, timeout=20 * SLOW) as c:
            c.sendmail("alice@example.test", ["u%d@many.test" % i for i in range(4)], MSG)
        for i in range(4):
            self.status(d, "u%d@many.test" % i)
        self.assertEqual(self.https.count("many.test"), 1)
        self.assertEqual(self.https.held, [True])
        self.assertEqual((len(s.messages), s.tls_messages), (4, 4))
        self.assertEqual(d.output().count("MTA-STS policy for many.test fetched"), 1)

    def test_stop_with_a_fetch_in_flight(self):
        # the daemon stops at once with a delivery waiting on a hung fetch (a leak or a freed
        # query touched would show under ASan); the mail stays queued
        self.policy("hang2.test", hang=True)
        s, port = self.sink(tls=False)
        d = self.daemon(["hang2.test"], port, "smtp_mta_sts_timeout = 60s\n")
        self.send(d, "u@hang2.test")
        wait_for(lambda: self.https.count("hang2.test") == 1, what="the fetch for hang2.test to hang")
        t0 = time.monotonic()
        self.assertEqual(d.stop(), 0)
        self.assertLess(time.monotonic() - t0, 10 * SLOW)
        self.assertIn("to=<u@hang2.test>, relay=none", d.output())
        self.assertIn("dsn=4.3.0, status=deferred (delivery interrupted by shutdown)", d.output())
        self.assertEqual(len(os.listdir(os.path.join(d.queue, "committed"))), 1)
        self.assertEqual(s.messages, [])

    def test_no_trust_anchors_the_mail_waits(self):
        # our own shortage (here: the CA file cannot be read) is no reason to send without the policy
        self.policy("noca.test")
        s, port = self.sink(tls=False)
        d = self.daemon(["noca.test", "free.test"], port, ca=os.path.join(self.tmp, "missing.pem"))
        self.send(d, "u@noca.test")
        self.send(d, "u@free.test")
        lines = self.status(d, "u@noca.test", "deferred")
        self.assertIn("dsn=4.3.0, status=deferred (local resource shortage: cannot learn the MTA-STS policy of "
                      "noca.test)", lines[0])
        self.assertIn("cannot make the MTA-STS TLS context", d.output())
        self.status(d, "u@free.test")           # a domain without a policy record is not held up
        self.assertEqual(self.https.count("noca.test"), 0)
        self.assertEqual([m[1] for m in s.messages], [["u@free.test"]])

    # ---- fetches that fail: no policy ----

    def test_bad_responses_mean_no_policy(self):
        # each would be an enforce policy that covers no MX (so deferred) if it were taken
        bad = ENF % "nowhere.test"
        self.policy("e404.test", bad, status=404)
        self.policy("eredir.test", bad, status=301, location="https://mta-sts.enf.test/.well-known/mta-sts.txt")
        self.policy("ectype.test", bad, ctype="text/html")
        self.policy("ebig.test", bad + "# " + "x" * (70 * 1024) + "\n")
        s, port = self.sink(tls=False)
        doms = ["e404.test", "eredir.test", "ectype.test", "ebig.test"]
        d = self.daemon(doms, port)
        for dom in doms:
            self.send(d, "u@" + dom)
        for dom in doms:
            self.status(d, "u@" + dom)
        log = d.output()
        self.assertIn("MTA-STS policy fetch for e404.test failed: HTTP status 404", log)
        self.assertIn("MTA-STS policy fetch for eredir.test failed: HTTP status 301 (redirects are not followed)", log)
        self.assertIn("MTA-STS policy fetch for ectype.test failed: Content-Type text/html is not text/plain", log)
        self.assertIn("MTA-STS policy fetch for ebig.test failed: policy body too large", log)
        self.assertEqual(len(s.messages), 4)
        # the redirect was not followed
        self.assertFalse(any(h == "mta-sts.enf.test" and "eredir" in p for h, p in self.https.requests))

    def test_hanging_fetch_times_out_without_blocking_other_domains(self):
        self.policy("hang.test", hang=True)
        s, port = self.sink(tls=False)
        d = self.daemon(["hang.test", "free.test"], port)
        t0 = time.monotonic()
        self.send(d, "u@hang.test")
        wait_for(lambda: self.https.count("hang.test") == 1, what="the fetch for hang.test to hang")
        self.send(d, "u@free.test")
        self.status(d, "u@free.test")
        t_free = time.monotonic() - t0
        log = d.output()
        # free.test went while hang.test's fetch was still out (it times out after 2 s)
        self.assertNotIn("MTA-STS policy fetch for hang.test failed", log)
        self.assertNotIn("to=<u@hang.test>", log)
        self.status(d, "u@hang.test")
        t_hang = time.monotonic() - t0
        log = d.output()
        self.assertIn("MTA-STS policy fetch for hang.test failed: timed out", log)
        self.assertLess(log.index("MTA-STS policy fetch for hang.test failed"), log.index("to=<u@hang.test>"))
        self.assertGreater(t_hang, 1.5)
        self.assertLess(t_free, t_hang)
        self.assertEqual(len(s.messages), 2)

    # ---- a failed fetch is remembered (smtp_mta_sts_failure_cache_time) ----

    def test_failed_fetch_remembered_until_the_id_changes(self):
        self.policy("neg500.test", status=500)
        s, port = self.sink()
        d = self.daemon(["neg500.test"], port)
        self.send(d, "u1@neg500.test")
        self.status(d, "u1@neg500.test")                 # as without a policy
        self.assertEqual(self.https.count("neg500.test"), 1)
        self.send(d, "u2@neg500.test")
        self.status(d, "u2@neg500.test")
        self.assertEqual(self.https.count("neg500.test"), 1)      # remembered: not fetched again
        log = d.output()
        self.assertEqual(log.count("MTA-STS policy fetch for neg500.test failed"), 1)   # logged once
        self.assertIn("MTA-STS policy fetch for neg500.test failed: HTTP status 500 (not retried for 300s", log)
        # a new id announces a new policy: fetched at once, and in force (it covers no MX: deferred)
        self.dns.records["_mta-sts.neg500.test"] = [("TXT", "v=STSv1; id=2;", 0)]
        self.policy("neg500.test", ENF % "nowhere.test")
        self.send(d, "u3@neg500.test")
        self.status(d, "u3@neg500.test", "deferred")
        self.assertEqual(self.https.count("neg500.test"), 2)
        self.assertEqual(len(s.messages), 2)

    def test_hanging_fetch_remembered_next_delivery_not_delayed(self):
        self.policy("neghang.test", hang=True)
        s, port = self.sink(tls=False)
        tmo = int(3 * SLOW)                             # the bound below must mean something under ASan too
        d = self.daemon(["neghang.test"], port, "smtp_mta_sts_timeout = %ds\n" % tmo)
        t0 = time.monotonic()
        self.send(d, "u1@neghang.test")
        self.status(d, "u1@neghang.test")
        t1 = time.monotonic() - t0
        self.assertIn("MTA-STS policy fetch for neghang.test failed: timed out", d.output())
        self.assertGreater(t1, tmo - 0.5)               # the first one waited for the timeout
        t0 = time.monotonic()
        self.send(d, "u2@neghang.test")
        self.status(d, "u2@neghang.test")
        t2 = time.monotonic() - t0
        self.assertLess(t2, tmo / 2)                    # well within the timeout
        self.assertEqual(self.https.count("neghang.test"), 1)
        self.assertEqual(len(s.messages), 2)

    def test_control_failure_memory_off_fetches_again(self):
        # the negative control: smtp_mta_sts_failure_cache_time = 0, every delivery fetches
        self.policy("negoff.test", status=500)
        s, port = self.sink()
        d = self.daemon(["negoff.test"], port, "smtp_mta_sts_failure_cache_time = 0\n")
        for i in (1, 2):
            self.send(d, "u%d@negoff.test" % i)
            self.status(d, "u%d@negoff.test" % i)
        self.assertEqual(self.https.count("negoff.test"), 2)
        self.assertNotIn("not retried", d.output())
        self.assertEqual(len(s.messages), 2)

    # ---- connection reuse ----

    def test_reuse_refused_once_an_enforce_policy_is_learnt(self):
        # a connection made while reuse.test had no policy (its fetch failed) is cached; a new policy
        # is then announced and learnt by a new connection of another next hop (alias.test ->
        # reuse.test on another port); the next job for reuse.test must not take the old connection
        # (DESIGN.md "Reuse")
        self.policy("reuse.test", status=404)
        s1, p1 = self.sink()
        s2, p2 = self.sink()
        d = self.daemon(["reuse.test", "alias.test"], p1,
                        "smtp_connection_cache_on_demand = yes\nsmtp_connection_cache_time_limit = 60s\n"
                        "transport_maps = inline:{ reuse.test=smtp:reuse.test:%d, alias.test=smtp:reuse.test:%d }\n"
                        % (p1, p2))
        self.send(d, "u1@reuse.test")
        self.status(d, "u1@reuse.test")
        self.send(d, "u2@reuse.test")
        self.status(d, "u2@reuse.test")
        conns = len(s1.greetings)
        self.assertEqual(conns, 2)                      # EHLO before and after STARTTLS: one connection, reused
        self.dns.records["_mta-sts.reuse.test"] = [("TXT", "v=STSv1; id=2;", 0)]
        self.policy("reuse.test")
        self.send(d, "u3@alias.test")
        self.status(d, "u3@alias.test")
        self.assertRegex(d.output(), r"Verified TLS connection established to mx\.reuse\.test\[127\.0\.0\.1\]:%d" % p2)
        self.send(d, "u4@reuse.test")
        self.status(d, "u4@reuse.test")
        self.assertRegex(d.output(), r"Verified TLS connection established to mx\.reuse\.test\[127\.0\.0\.1\]:%d" % p1)
        self.assertEqual(len(s1.greetings), conns + 2)  # a new connection
        self.assertEqual(self.https.count("reuse.test"), 2)
        self.assertEqual((len(s1.messages), len(s2.messages)), (3, 1))

    def test_reuse_learns_a_new_policy_in_the_background(self):
        # one destination, one cached connection: reusing it runs discovery beside the job, so a
        # policy announced since it was made is learnt and the next job takes a new connection
        self.policy("reuse2.test", status=404)
        s, port = self.sink()
        d = self.daemon(["reuse2.test"], port,
                        "smtp_connection_cache_on_demand = yes\nsmtp_connection_cache_time_limit = 60s\n")
        self.send(d, "u1@reuse2.test")
        self.status(d, "u1@reuse2.test")
        self.dns.records["_mta-sts.reuse2.test"] = [("TXT", "v=STSv1; id=2;", 0)]
        self.policy("reuse2.test")
        self.send(d, "u2@reuse2.test")
        self.assertIn("conn_use=2", self.status(d, "u2@reuse2.test")[0])     # this one still reuses
        wait_for(lambda: "MTA-STS policy for reuse2.test fetched: id=2" in d.output(), what="the background fetch")
        self.send(d, "u3@reuse2.test")
        line = self.status(d, "u3@reuse2.test")[0]
        self.assertNotIn("conn_use=", line)
        self.assertRegex(d.output(), r"Verified TLS connection established to mx\.reuse2\.test")
        self.assertEqual(self.https.count("reuse2.test"), 2)
        self.assertEqual((len(s.messages), len(s.greetings)), (3, 4))


if __name__ == "__main__":
    unittest.main()
