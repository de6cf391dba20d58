"""A SOCKS5 proxy for the tests: Dante (``danted``) with RFC 1929 username/password auth, plus a TLS front.

Why a wrapper script: Dante is a real, maintained SOCKS5 server, but its ``socksmethod: username`` checks the
password against the system's password database, and a test must never create host users. So this script is
started in a private mount namespace (``unshare -m --propagation private``; for the fake internet also inside
its network namespace) and bind-mounts copies of /etc/passwd and /etc/shadow that add one test user over the
real ones: only this process tree sees the user. Dante has no TLS, so a small stdlib TLS-terminating relay
(``--tls-listen``) forwards each decrypted connection to Dante's plain port.

The script makes itself a child subreaper (Dante forks helper processes; they are reaped here, not left as
zombies), binds everything, prints ``ready`` on stdout, and stops Dante and exits when stdin reaches EOF or on
SIGTERM. Dante dies with this process (PR_SET_PDEATHSIG) even if it is killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _fake_user_db(workdir: Path, user: str, password_hash: str) -> None:
    """Bind-mount /etc/passwd and /etc/shadow copies holding one more user (this mount namespace only)."""
    passwd, shadow = workdir / "passwd", workdir / "shadow"
    passwd.write_text(Path("/etc/passwd").read_text() + f"{user}:x:64999:64999::/nonexistent:/usr/sbin/nologin\n")
    shadow.write_text(Path("/etc/shadow").read_text() + f"{user}:{password_hash}:19000:0:99999:7:::\n")
    shadow.chmod(0o640)
    for src, dst in ((passwd, "/etc/passwd"), (shadow, "/etc/shadow")):
        subprocess.run(["mount", "--bind", str(src), dst], check=True, capture_output=True)


def _dante_config(listen: tuple[str, int], external: str) -> str:
    return "\n".join([
        "logoutput: stderr",
        f"internal: {listen[0]} port = {listen[1]}",
        f"external: {external}",
        "clientmethod: none",
        "socksmethod: username",
        "user.privileged: root",
        "user.unprivileged: nobody",
        "timeout.negotiate: 10",
        "client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }",
        "socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect }",
        "",
    ])  # fmt: skip


def _start_dante(config: Path) -> subprocess.Popen[bytes]:
    def child() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return subprocess.Popen(["danted", "-f", str(config), "-N", "1"], stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=child)  # fmt: skip


def _wait_listening(addr: tuple[str, int], proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"danted exited with {proc.returncode}")
        try:
            socket.create_connection(addr, timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"danted is not listening on {addr[0]}:{addr[1]}") from None
            time.sleep(0.05)


def _stop_dante(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM Dante's process group, SIGKILL it after 3 s, then reap every child (we are their subreaper)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.02)


# ---- the TLS front ----


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class TlsRelay(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], context: ssl.SSLContext) -> None:
        self.upstream = upstream
        self.context = context
        super().__init__(listen, TlsRelayHandler)


class TlsRelayHandler(socketserver.BaseRequestHandler):
    server: TlsRelay

    def handle(self) -> None:
        raw: socket.socket = self.request
        raw.settimeout(10)
        try:
            tls = self.server.context.wrap_socket(raw, server_side=True)  # handshake here, in this thread
        except (OSError, ssl.SSLError):
            return
        try:
            up = socket.create_connection(self.server.upstream, timeout=10)
        except OSError:
            tls.close()
            return
        tls.settimeout(None)
        up.settimeout(None)
        back = threading.Thread(target=_pipe, args=(up, tls), daemon=True)
        back.start()
        _pipe(tls, up)
        back.join()
        for s in (tls, up):
            with contextlib.suppress(OSError):
                s.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="address:port of the plain SOCKS5 port (Dante)")
    p.add_argument("--external", required=True, help="the address Dante connects out from")
    p.add_argument("--tls-listen", help="address:port of the TLS-wrapped SOCKS5 port")
    p.add_argument("--tls-cert", help="PEM with the private key and the certificate chain of the TLS port")
    p.add_argument("--user", required=True)
    p.add_argument("--password-hash", required=True, help="crypt(3) hash, as in /etc/shadow")
    p.add_argument("--workdir", required=True)
    args = p.parse_args(argv)
    listen = _hostport(args.listen)
    workdir = Path(args.workdir)

    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _fake_user_db(workdir, args.user, args.password_hash)
    config = workdir / "danted.conf"
    config.write_text(_dante_config(listen, args.external))
    dante = _start_dante(config)

    def stop(*_: object) -> None:
        _stop_dante(dante)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_listening(listen, dante)
        if args.tls_listen:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(args.tls_cert)
            relay = TlsRelay(_hostport(args.tls_listen), listen, ctx)
            threading.Thread(target=relay.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        print("ready", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.buffer.read()  # EOF: whoever started us is gone
    except BaseException as e:
        print(f"socksd: {e}", file=sys.stderr, flush=True)
    stop()


if __name__ == "__main__":
    main()
