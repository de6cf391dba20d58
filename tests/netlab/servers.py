"""The fake internet's servers, run as one process inside the fake-internet network namespace.

Why a separate script: the servers must live in the namespace (so that the only way to reach them is through
the uplink the harness builds), and `ip netns exec <ns> python servers.py` is the simplest way to get a process
whose sockets belong to that namespace. It uses the standard library and dnspython only, binds everything before
printing ``ready`` on stdout, and exits when stdin reaches EOF (the harness died) or on SIGTERM
(only on SIGTERM with ``--until-sigterm``: a fake internet that outlives the session that started it).

Servers (all TCP servers bind 0.0.0.0, so every "internet host" address answers):

* HTTP/1.1 on ``--http-port`` (80): ``GET /<anything>`` -> JSON ``{"host", "client", "path", "method", "headers"}``;
  ``GET /bytes?n=N`` streams N bytes; ``GET /sse?count=C&interval=S`` streams C server-sent events S seconds apart;
  ``POST /echo`` echoes the body; ``POST /upload`` discards the body and answers ``{"bytes": n}``;
  ``GET /dns-count`` answers ``{"count": n, "queries": [{"name", "type", "proto", "client"}, ...]}``.
* TCP echo on ``--echo-port`` (7), and UDP echo on the same port.
* TCP discard ("sink") on ``--discard-port`` (9): reads and discards; when the peer half-closes, it writes the
  number of bytes it received as ASCII decimal plus a newline, then closes.
* TCP chargen ("source") on ``--chargen-port`` (19): writes bytes until the peer goes away.
* Authoritative DNS for ``test.`` over UDP and TCP on ``--dns`` (198.51.100.53:53), zone below.
* Recording servers, for tests of credential injection: every request to ``secure.test`` (198.51.100.30) or
  ``badcert.test`` (198.51.100.31), over HTTP on ``--http-port`` or HTTPS on ``--https-port`` (443), any method,
  is recorded in full (headers included), and answered with JSON that holds each header's name and the SHA-256
  of its value, never the value: a sandbox can learn that a header arrived, not what a secret was.
  ``secure.test`` presents a certificate for its name from the harness's test CA (``--tls-dir``/secure.test.pem),
  ``badcert.test`` one from a CA nobody trusts (bad-badcert.test.pem).
* Control server on ``--control`` (the uplink peer, 203.0.113.2:8080, not an "internet host" address):
  ``GET /requests`` -> ``{"requests": [...]}``, the recorded requests in full; ``POST /requests/clear`` empties
  the log. Only the harness should talk to it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

# ---- the zone (the harness imports these constants; keep them plain) ----

DNS_ADDRESS = "198.51.100.53"
SECURE_ADDRESS = "198.51.100.30"  # HTTPS with a certificate from the test CA; records requests
BADCERT_ADDRESS = "198.51.100.31"  # HTTPS with a certificate nothing trusts; records requests
SOCKS_ADDRESS = "198.51.100.80"  # the SOCKS5 proxy (socksd.py, started by the harness on demand)
RECORDING_ADDRESSES = frozenset({SECURE_ADDRESS, BADCERT_ADDRESS})
DEFAULT_TTL = 30
A_RECORDS: dict[str, str] = {
    "allowed.test": "198.51.100.10",
    "denied.test": "198.51.100.11",
    "other.test": "198.51.100.12",
    "short.test": "198.51.100.20",
    "ns.test": DNS_ADDRESS,
    "secure.test": SECURE_ADDRESS,
    "badcert.test": BADCERT_ADDRESS,
    "socks.test": SOCKS_ADDRESS,
}
TTLS: dict[str, int] = {"short.test": 2}
CNAME_RECORDS: dict[str, str] = {"alias.test": "allowed.test"}
WILDCARD_RECORDS: dict[str, str] = {"wild.test": "198.51.100.13"}  # any name strictly under wild.test
TXT_ECHO_PARENT = "tunnel.test"  # TXT for any name strictly under it echoes the first label
ZONE = "test"

CHUNK = 256 * 1024
_ZEROS = memoryview(bytes(CHUNK))
_PATTERN = memoryview((bytes(range(32, 127)) * (CHUNK // 95 + 1))[:CHUNK])


# ---- DNS ----


class DnsLog:
    """Every query the DNS server received, so tests can tell whether the upstream was contacted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.queries: list[dict[str, str]] = []

    def add(self, name: str, qtype: str, proto: str, client: str) -> None:
        with self.lock:
            self.count += 1
            if len(self.queries) < 10000:
                self.queries.append({"name": name, "type": qtype, "proto": proto, "client": client})

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"count": self.count, "queries": list(self.queries)}


DNS_LOG = DnsLog()
_ORIGIN = dns.name.from_text(ZONE)


def _n(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


_A = {_n(k): v for k, v in A_RECORDS.items()}
_TTL = {_n(k): v for k, v in TTLS.items()}
_CNAME = {_n(k): _n(v) for k, v in CNAME_RECORDS.items()}
_WILD = {_n(k): v for k, v in WILDCARD_RECORDS.items()}
_TXT_PARENT = _n(TXT_ECHO_PARENT)
_EXISTING = {_ORIGIN, _TXT_PARENT, *_WILD}  # names that exist but hold nothing we answer (NOERROR, no data)


def _soa() -> dns.rrset.RRset:
    return dns.rrset.from_text(_ORIGIN, DEFAULT_TTL, "IN", "SOA", f"ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 30")


def answer(query: dns.message.Message) -> dns.message.Message:
    """The authoritative answer to one query."""
    resp = dns.message.make_response(query)
    resp.flags |= dns.flags.AA
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        resp.set_rcode(dns.rcode.NOTIMP)
        return resp
    q = query.question[0]
    name, qtype = q.name, q.rdtype
    for _ in range(8):  # follow CNAMEs inside the zone
        target = _CNAME.get(name)
        if target is None or qtype == dns.rdatatype.CNAME:
            break
        resp.answer.append(dns.rrset.from_text(name, DEFAULT_TTL, "IN", "CNAME", target.to_text()))
        name = target
    if name in _CNAME:  # qtype CNAME
        resp.answer.append(dns.rrset.from_text(name, DEFAULT_TTL, "IN", "CNAME", _CNAME[name].to_text()))
        return resp
    address = _A.get(name)
    if address is None:
        address = next((a for parent, a in _WILD.items() if name.is_subdomain(parent) and name != parent), None)
    if address is not None:
        if qtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            resp.answer.append(dns.rrset.from_text(name, _TTL.get(name, DEFAULT_TTL), "IN", "A", address))
        else:
            resp.authority.append(_soa())
        return resp
    if name.is_subdomain(_TXT_PARENT) and name != _TXT_PARENT:
        if qtype in (dns.rdatatype.TXT, dns.rdatatype.ANY):
            rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [name.labels[0]])
            resp.answer.append(dns.rrset.from_rdata(name, DEFAULT_TTL, rdata))
        else:
            resp.authority.append(_soa())
        return resp
    if name == _ORIGIN and qtype == dns.rdatatype.SOA:
        resp.answer.append(_soa())
        return resp
    if name == _ORIGIN and qtype == dns.rdatatype.NS:
        resp.answer.append(dns.rrset.from_text(name, DEFAULT_TTL, "IN", "NS", f"ns.{ZONE}."))
        return resp
    if name not in _EXISTING:
        resp.set_rcode(dns.rcode.NXDOMAIN)
    resp.authority.append(_soa())
    return resp


def _handle_wire(wire: bytes, proto: str, client: str, max_size: int | None) -> bytes | None:
    try:
        query = dns.message.from_wire(wire)
    except Exception:
        DNS_LOG.add("", "", proto, client)
        return None
    if query.question:  # (a question RRset is empty, hence falsy: test the section, not the RRset)
        q = query.question[0]
        DNS_LOG.add(q.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(q.rdtype), proto, client)
    else:
        DNS_LOG.add("", "", proto, client)
    resp = answer(query)
    if max_size is None:
        return resp.to_wire()
    limit = max(512, query.payload) if query.edns >= 0 else 512
    try:
        return resp.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.AA | dns.flags.TC
        return truncated.to_wire()


class DnsUdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        out = _handle_wire(data, "udp", self.client_address[0], max_size=512)
        if out is not None:
            sock.sendto(out, self.client_address)


class DnsTcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30)
        try:
            while True:
                head = _recv_exact(sock, 2)
                if head is None:
                    return
                wire = _recv_exact(sock, int.from_bytes(head, "big"))
                if wire is None:
                    return
                out = _handle_wire(wire, "tcp", self.client_address[0], max_size=None)
                if out is None:
                    return
                sock.sendall(len(out).to_bytes(2, "big") + out)
        except OSError:
            return


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# ---- plain TCP/UDP services ----


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
        except OSError:
            pass


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; the constant is missing before Python 3.12


def udp_echo(port: int) -> socket.socket:
    """UDP echo on 0.0.0.0 that answers from the address it was reached on (IP_PKTINFO): with several host
    addresses, a plain sendto would pick the route's source (203.0.113.2) and NAT on the host would not match."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind(("0.0.0.0", port))

    def loop() -> None:
        while True:
            data, ancdata, _, peer = sock.recvmsg(65535, socket.CMSG_SPACE(12))
            cmsg = [(lvl, typ, d) for lvl, typ, d in ancdata if (lvl, typ) == (socket.IPPROTO_IP, IP_PKTINFO)]
            try:
                if cmsg:  # struct in_pktinfo {int ifindex; in_addr spec_dst; in_addr addr}: answer from addr
                    info = struct.pack("=i4s4s", 0, cmsg[0][2][8:12], b"\0\0\0\0")
                    sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, peer)
                else:
                    sock.sendto(data, peer)
            except OSError:
                pass

    threading.Thread(target=loop, daemon=True).start()
    return sock


class DiscardHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        total = 0
        buf = bytearray(CHUNK)
        try:
            while n := sock.recv_into(buf):
                total += n
            sock.sendall(f"{total}\n".encode())
        except OSError:
            pass


class ChargenHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while True:
                sock.sendall(_PATTERN)
        except OSError:
            pass


class TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


class UdpServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


# ---- HTTP ----


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1, silent, and JSON answers: what every HTTP server here shares."""

    protocol_version = "HTTP/1.1"
    server_version = "clt-fake-internet/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, obj: Any, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HttpHandler(JsonHandler):

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/bytes":
            n = int(params.get("n", "0"))
            chunk = max(1, min(int(params.get("chunk", str(CHUNK))), CHUNK))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0:
                step = min(n, chunk)
                self.wfile.write(_ZEROS[:step])
                n -= step
            return
        if url.path == "/sse":
            count, interval = int(params.get("count", "5")), float(params.get("interval", "0.2"))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(count):
                if i:
                    time.sleep(interval)
                self._chunk(f"id: {i}\ndata: {json.dumps({'seq': i, 't': time.time()})}\n\n".encode())
            self._chunk(b"")
            return
        if url.path == "/dns-count":
            self._json(DNS_LOG.snapshot())
            return
        self._json({"host": self.connection.getsockname()[0], "client": self.client_address[0], "path": self.path,
                    "method": "GET", "headers": dict(self.headers.items())})  # fmt: skip

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/upload":
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                total = len(self._read_body())
            else:
                total, left = 0, int(self.headers.get("Content-Length") or 0)
                while left > 0 and (data := self.rfile.read(min(left, CHUNK))):
                    total += len(data)
                    left -= len(data)
            self._json({"bytes": total})
            return
        body = self._read_body()
        if url.path != "/echo":
            self._json({"error": "not found", "path": self.path}, status=404)
            return
        self.send_response(200)
        self.send_header("Content-Type", self.headers.get("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class RequestLog:
    """Every request the recording servers received, in full: the harness's view (GET /requests on the
    control server), never served to the "internet" side."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seq = 0
        self.requests: list[dict[str, Any]] = []

    def add(self, entry: dict[str, Any]) -> int:
        with self.lock:
            self.seq += 1
            entry["seq"] = self.seq
            if len(self.requests) < 10000:
                self.requests.append(entry)
            return self.seq

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


REQUEST_LOG = RequestLog()


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


class RecordingHandler(HttpHandler):
    """Any method, any path: record the request in full, answer with header names and value digests only."""

    def _record(self) -> None:
        body = self._read_body()
        sock = self.connection
        local = sock.getsockname()
        headers = [[k, v] for k, v in self.headers.items()]
        seq = REQUEST_LOG.add({
            "scheme": "https" if isinstance(sock, ssl.SSLSocket) else "http",
            "host": local[0], "port": local[1], "sni": getattr(sock, "clt_sni", None),
            "client": self.client_address[0], "method": self.command, "path": self.path,
            "version": self.request_version, "headers": headers,
            "body_bytes": len(body), "body_sha256": _sha256(body),
        })  # fmt: skip
        out = json.dumps({
            "seq": seq, "scheme": "https" if isinstance(sock, ssl.SSLSocket) else "http", "host": local[0],
            "client": self.client_address[0], "method": self.command, "path": self.path,
            "headers": [[k, _sha256(v)] for k, v in headers],
            "body_bytes": len(body), "body_sha256": _sha256(body),
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _record


class HttpServer(ThreadingHTTPServer):
    """Port 80 on every host address; connections to a recording address get the recording handler."""

    daemon_threads = True
    request_queue_size = 128

    def finish_request(self, request: Any, client_address: Any) -> None:
        local = request.getsockname()[0]
        handler = RecordingHandler if local in RECORDING_ADDRESSES else self.RequestHandlerClass
        handler(request, client_address, self)


class HttpsServer(ThreadingHTTPServer):
    """HTTPS on one address with one certificate; the TLS handshake runs in the connection's thread."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], cert: str) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert)
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = self._sni
        self.context = ctx
        super().__init__(address, RecordingHandler)

    @staticmethod
    def _sni(sock: Any, name: str | None, ctx: ssl.SSLContext) -> None:
        with contextlib.suppress(Exception):
            sock.clt_sni = name

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # e.g. a client that rejected our certificate
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.close()


class ControlHandler(JsonHandler):

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/requests":
            self._json({"requests": REQUEST_LOG.snapshot()})
        elif urlsplit(self.path).path == "/dns-count":
            self._json(DNS_LOG.snapshot())
        else:
            self._json({"error": "not found"}, status=404)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/requests/clear":
            REQUEST_LOG.clear()
            self._json({"cleared": True})
        else:
            self._json({"error": "not found"}, status=404)


# ---- main ----


def _serve(server: socketserver.BaseServer) -> None:
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--echo-port", type=int, default=7)
    p.add_argument("--discard-port", type=int, default=9)
    p.add_argument("--chargen-port", type=int, default=19)
    p.add_argument("--dns", default=f"{DNS_ADDRESS}:53", help="address:port of the DNS server")
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--tls-dir", help="directory with secure.test.pem and bad-badcert.test.pem (no HTTPS without)")
    p.add_argument("--control", help="address:port of the control server (GET /requests)")
    p.add_argument("--until-sigterm", action="store_true",  # a fake internet shared by test sessions
                   help="run until SIGTERM, not until stdin reaches EOF")  # fmt: skip
    args = p.parse_args(argv)
    dns_host, _, dns_port = args.dns.rpartition(":")

    _serve(HttpServer(("0.0.0.0", args.http_port), HttpHandler))
    _serve(TcpServer(("0.0.0.0", args.echo_port), EchoHandler))
    udp_echo(args.echo_port)
    _serve(TcpServer(("0.0.0.0", args.discard_port), DiscardHandler))
    _serve(TcpServer(("0.0.0.0", args.chargen_port), ChargenHandler))
    _serve(UdpServer((dns_host, int(dns_port)), DnsUdpHandler))
    _serve(TcpServer((dns_host, int(dns_port)), DnsTcpHandler))
    if args.tls_dir:
        _serve(HttpsServer((SECURE_ADDRESS, args.https_port), os.path.join(args.tls_dir, "secure.test.pem")))
        _serve(HttpsServer((BADCERT_ADDRESS, args.https_port), os.path.join(args.tls_dir, "bad-badcert.test.pem")))
    if args.control:
        control_host, _, control_port = args.control.rpartition(":")
        _serve(HttpServer((control_host, int(control_port)), ControlHandler))

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ready", flush=True)
    try:
        if args.until_sigterm:
            signal.pause()
        else:
            sys.stdin.buffer.read()  # EOF: whoever started us is gone
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
