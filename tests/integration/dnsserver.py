"""tests/integration/dnsserver.py: a small authoritative DNS server for the
tests, Python standard library only. UDP and TCP on one loopback port;
answers from a table the test gives; NXDOMAIN for names it does not know;
SERVFAIL, answers delayed by N seconds, and truncated (TC) UDP answers that
make the client retry over TCP, per name; a query counter.

    srv = DNSServer({"example.test": [("MX", (10, "mx.example.test"))],
                     "mx.example.test": [("A", "127.0.0.9")]},
                    servfail={"broken.test"}, delay={"slow.test": 3}, truncate={"big.test"})
    srv.start(); ... srv.port ... srv.count("example.test", "MX") ... srv.stop()

Run as a program (the C unit tests do): `python3 dnsserver.py SPEC.json`
prints the port on stdout and serves until stdin closes. SPEC has the keys
records, servfail, delay, truncate. Queries for any name under `control.`
are not counted and get a TXT record "TOTAL TCP": the queries so far, and
how many of them came over TCP.
"""
import json
import socket
import struct
import sys
import threading

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
NAMES = {v: k for k, v in TYPES.items()}


def enc_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dec_name(msg, off):
    labels = []
    while True:
        n = msg[off]
        if n == 0:
            return ".".join(labels), off + 1
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(msg[off + 1:off + 1 + n].decode("latin-1"))
        off += 1 + n


def rdata(rtype, value):
    if rtype == "A":
        return socket.inet_pton(socket.AF_INET, value)
    if rtype == "AAAA":
        return socket.inet_pton(socket.AF_INET6, value)
    if rtype in ("PTR", "CNAME", "NS"):
        return enc_name(value)
    if rtype == "MX":
        return struct.pack("!H", value[0]) + enc_name(value[1])
    if rtype == "TXT":
        parts = value if isinstance(value, (list, tuple)) else [value]
        out = b""
        for p in parts:
            b = p.encode() if isinstance(p, str) else p
            out += bytes([len(b)]) + b
        return out
    raise ValueError(rtype)


def rr(name, rtype, value, ttl):
    d = rdata(rtype, value)
    return enc_name(name) + struct.pack("!HHIH", TYPES[rtype], 1, ttl, len(d)) + d


class DNSServer:
    def __init__(self, records=None, servfail=(), delay=None, truncate=(), ttl=300, host="127.0.0.1"):
        # records: name -> [(TYPE, value[, ttl]), ...]
        self.records = {k.lower().rstrip("."): list(v) for k, v in (records or {}).items()}
        self.servfail = {n.lower() for n in servfail}
        self.delay = {k.lower(): v for k, v in (delay or {}).items()}
        self.truncate = {n.lower() for n in truncate}
        self.ttl = ttl
        self.counts = {}
        self.total = 0
        self.tcp_queries = 0
        self.log = []                 # (name, type, transport) in order of arrival
        self.lock = threading.Lock()
        # one port for UDP and TCP: the kernel picks a free UDP port, which some other
        # listener may hold for TCP (seen in CI: EADDRINUSE); then another pick
        for attempt in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((host, 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((host, self.port))
                break
            except OSError:
                self.tcp.close()
                self.udp.close()
                if attempt == 49:
                    raise
        self.tcp.listen(16)
        self.stopping = False
        self.threads = []

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def count(self, name=None, rtype=None):
        with self.lock:
            if name is None:
                return self.total
            return self.counts.get((name.lower().rstrip("."), rtype), 0)

    def answer(self, query, tcp):
        """The reply to one query message, and how long to wait before sending it."""
        qid, flags, qd = struct.unpack("!HHH", query[:6])
        name, off = dec_name(query, 12)
        qtype, qclass = struct.unpack("!HH", query[off:off + 4])
        question = query[12:off + 4]
        lname = name.lower()
        tname = NAMES.get(qtype, str(qtype))
        rd = flags & 0x0100
        hdr = lambda rcode, an, ns, tc=0: struct.pack("!HHHHHH", qid, 0x8400 | rd | (0x0200 if tc else 0) | rcode,
                                                        1, an, ns, 0)
        if lname == "control" or lname.endswith(".control"):
            with self.lock:
                n = "%d %d" % (self.total, self.tcp_queries)
            return hdr(0, 1, 0) + question + rr(name, "TXT", n, 0), 0
        with self.lock:
            self.counts[(lname, tname)] = self.counts.get((lname, tname), 0) + 1
            self.total += 1
            if tcp:
                self.tcp_queries += 1
            self.log.append((lname, tname, "tcp" if tcp else "udp"))
        wait = self.delay.get(lname, 0)
        if lname in self.servfail:
            return hdr(2, 0, 0) + question, wait
        if lname in self.truncate and not tcp:
            return hdr(0, 0, 0, tc=1) + question, wait
        if lname not in self.records:
            return hdr(3, 0, 1) + question + self.soa(lname), wait
        ans = [rr(name, t, v[0], v[1] if len(v) > 1 else self.ttl)
               for t, *v in self.records[lname] if t == tname]
        if not ans:
            return hdr(0, 0, 1) + question + self.soa(lname), wait
        return hdr(0, len(ans), 0) + question + b"".join(ans), wait

    def soa(self, name):
        zone = name.split(".", 1)[1] if "." in name else name
        d = enc_name("ns." + zone) + enc_name("hostmaster." + zone) + struct.pack("!IIIII", 1, 60, 60, 60, 30)
        return enc_name(zone) + struct.pack("!HHIH", TYPES["SOA"], 1, 30, len(d)) + d

    def _later(self, wait, fn):
        if wait:
            t = threading.Timer(wait, fn)
            t.daemon = True
            t.start()
        else:
            fn()

    def _udp_loop(self):
        while not self.stopping:
            try:
                msg, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            try:
                reply, wait = self.answer(msg, False)
            except (ValueError, IndexError, struct.error):
                continue
            self._later(wait, lambda r=reply, p=peer: self._udp_send(r, p))

    def _udp_send(self, reply, peer):
        try:
            self.udp.sendto(reply, peer)
        except OSError:
            pass

    def _tcp_conn(self, c):
        with c:
            while True:
                try:
                    hdr = self._recv_exact(c, 2)
                    if hdr is None:
                        return
                    msg = self._recv_exact(c, struct.unpack("!H", hdr)[0])
                    if msg is None:
                        return
                    reply, wait = self.answer(msg, True)
                except (OSError, ValueError, IndexError, struct.error):
                    return
                done = threading.Event()
                self._later(wait, lambda r=reply: (self._tcp_send(c, r), done.set()))
                done.wait()

    @staticmethod
    def _tcp_send(c, reply):
        try:
            c.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass

    @staticmethod
    def _recv_exact(c, n):
        b = b""
        while len(b) < n:
            x = c.recv(n - len(b))
            if not x:
                return None
            b += x
        return b

    def _tcp_loop(self):
        while not self.stopping:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                return
            t = threading.Thread(target=self._tcp_conn, args=(c,), daemon=True)
            t.start()

    def start(self):
        for fn in (self._udp_loop, self._tcp_loop):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stopping = True
        for s in (self.udp, self.tcp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def main():
    spec = {}
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            spec = json.load(f)
    records = {k: [tuple(r) for r in v] for k, v in spec.get("records", {}).items()}
    srv = DNSServer(records, servfail=spec.get("servfail", ()), delay=spec.get("delay", {}),
                    truncate=spec.get("truncate", ())).start()
    print(srv.port, flush=True)
    sys.stdin.read()     # serve until the parent closes our stdin (or dies)
    srv.stop()


if __name__ == "__main__":
    main()
