# ruff: noqa: ANN001, ANN002, ANN201, ANN202, ANN204, UP031
# (runs on whatever Python a sandbox template has, so it is kept plain and untyped)
"""Durable state from inside a cloche sandbox: stdlib only, Python 3.8+.

Available in every sandbox as /.cloche/bin/cloche_state.py:

    import sys; sys.path.insert(0, "/.cloche/bin")
    import cloche_state
    st = cloche_state.StateClient()                # namespace="shared" for a granted one
    v = st.put("notes/today", b"hello")            # -> version
    value, version = st.get("notes/today")         # -> (None, None) when absent
    st.put("counter", b"2", if_match=version)      # raises cloche_state.Conflict
    seq = st.append(b"event", idempotency_key="e-1")
    for seq, data in st.read(after=0, wait_s=5): ...

or as a command, like the static `cloche-state` binary:
`python3 /.cloche/bin/cloche_state.py get KEY` (exit 0 done, 1 not found or condition
failed, 2 error). Everything is scoped to this sandbox's own namespace; the wire format
is described in cloche/state/sandbox.py.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

DEFAULT_SOCKET = "/.cloche/host/state.sock"
_U32 = struct.Struct(">I")


class StateError(Exception):
    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


class Conflict(StateError):
    def __init__(self, message, current_version):
        super().__init__("precondition_failed", message)
        self.current_version = current_version


class StateClient:
    """One connection to the sandbox's state socket (not thread-safe; make one per thread)."""

    def __init__(self, path=None, timeout=None, namespace=None):
        self.path = path or os.environ.get("CLOCHE_STATE_SOCKET") or DEFAULT_SOCKET
        self.namespace = namespace or ""  # "": this sandbox's own; else a granted named one
        self.timeout = timeout
        self._sock = None

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv(self, n):
        out = bytearray()
        while len(out) < n:
            chunk = self._sock.recv(min(n - len(out), 1 << 20))
            if not chunk:
                raise ConnectionError("the state service closed the connection")
            out += chunk
        return bytes(out)

    def call(self, op, *args):
        """Send [op, "", args...]; return the reply fields after "ok" (None for not found)."""
        fields = [op.encode(), self.namespace.encode()] + [a if isinstance(a, bytes) else str(a).encode() for a in args]
        payload = b"".join(_U32.pack(len(f)) + f for f in fields)
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(self.path)
            self._sock = s
        try:
            self._sock.sendall(_U32.pack(len(payload)) + payload)
            (n,) = _U32.unpack(self._recv(4))
            body = self._recv(n)
        except BaseException:
            self.close()
            raise
        reply, i = [], 0
        while i < len(body):
            (m,) = _U32.unpack_from(body, i)
            reply.append(body[i + 4:i + 4 + m])
            i += 4 + m
        status = reply[0].decode()
        if status == "ok":
            return reply[1:]
        if status == "notfound":
            return None
        if status == "conflict":
            cur = reply[2].decode() if len(reply) > 2 else ""
            raise Conflict(reply[1].decode(), int(cur) if cur else None)
        raise StateError(reply[1].decode() if len(reply) > 1 else "error",
                         reply[2].decode() if len(reply) > 2 else "")

    def get(self, key):
        """(value, version), or (None, None) when the key is absent."""
        r = self.call("get", key)
        return (None, None) if r is None else (r[1], int(r[0]))

    def put(self, key, value, if_match=None, if_none_match=False, ttl_s=None):
        if isinstance(value, str):
            value = value.encode()
        r = self.call("put", key, value, "" if if_match is None else if_match, "1" if if_none_match else "0",
                      "" if ttl_s is None else ttl_s)
        return int(r[0])

    def delete(self, key, if_match=None):
        r = self.call("del", key, "" if if_match is None else if_match)
        return r[0] == b"1"

    def list(self, prefix=""):
        """Every live key under prefix: [(key, version, size)], in byte order."""
        out, cursor = [], ""
        while True:
            r = self.call("ls", prefix, cursor, 1000)
            f = r[1:]
            out += [(f[i].decode(), int(f[i + 1]), int(f[i + 2])) for i in range(0, len(f) - 2, 3)]
            cursor = r[0].decode()
            if not cursor:
                return out

    def append(self, data, idempotency_key=None):
        if isinstance(data, str):
            data = data.encode()
        r = self.call("append", data, idempotency_key or "")
        return int(r[0])

    def read(self, after=0, limit=100, wait_s=0):
        """[(seq, data)] after `after`; with wait_s, waits that long for the first new entry."""
        r = self.call("read", after, limit, wait_s or "")
        f = r[1:]
        return [(int(f[i]), f[i + 1]) for i in range(0, len(f) - 1, 2)]

    def trim(self, upto):
        return int(self.call("trim", upto)[0])


USAGE = """usage: cloche_state.py COMMAND [ARGS]
  get KEY | put KEY [VALUE] [--if-match V | --if-none-match] [--ttl S] | del KEY [--if-match V]
  ls [PREFIX] | append [DATA] [--key IDEM] | read [AFTER] [--wait S] | trim UPTO
  --ns NAME: a named namespace granted to this sandbox (default: its own)
(VALUE/DATA default to stdin; exit 0 done, 1 not found or condition failed, 2 error)"""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    opts, args = {}, []
    while argv:
        a = argv.pop(0)
        if a in ("--if-match", "--ttl", "--key", "--wait", "--socket", "--ns"):
            if not argv:
                print(USAGE, file=sys.stderr)
                return 2
            opts[a] = argv.pop(0)
        elif a == "--if-none-match":
            opts[a] = True
        else:
            args.append(a)
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    cmd, rest = args[0], args[1:]
    out = sys.stdout.buffer
    try:
        with StateClient(opts.get("--socket"), namespace=opts.get("--ns")) as st:
            if cmd == "get" and len(rest) == 1:
                value, _ = st.get(rest[0])
                if value is None:
                    print("cloche_state: key %r not found" % rest[0], file=sys.stderr)
                    return 1
                out.write(value)
            elif cmd == "put" and len(rest) in (1, 2):
                value = rest[1].encode() if len(rest) == 2 else sys.stdin.buffer.read()
                im = opts.get("--if-match")
                ttl = opts.get("--ttl")
                v = st.put(rest[0], value, if_match=int(im) if im else None,
                           if_none_match=bool(opts.get("--if-none-match")), ttl_s=float(ttl) if ttl else None)
                out.write(b"%d\n" % v)
            elif cmd == "del" and len(rest) == 1:
                im = opts.get("--if-match")
                if not st.delete(rest[0], if_match=int(im) if im else None):
                    print("cloche_state: key %r not found" % rest[0], file=sys.stderr)
                    return 1
            elif cmd == "ls" and len(rest) <= 1:
                for key, version, size in st.list(rest[0] if rest else ""):
                    out.write(("%s\t%d\t%d\n" % (key, version, size)).encode())
            elif cmd == "append" and len(rest) <= 1:
                data = rest[0].encode() if rest else sys.stdin.buffer.read()
                out.write(b"%d\n" % st.append(data, opts.get("--key")))
            elif cmd == "read" and len(rest) <= 1:
                for seq, data in st.read(int(rest[0]) if rest else 0, 1000, float(opts.get("--wait", 0))):
                    out.write(b"%d\t%s\n" % (seq, data))
            elif cmd == "trim" and len(rest) == 1:
                out.write(b"%d\n" % st.trim(int(rest[0])))
            else:
                print(USAGE, file=sys.stderr)
                return 2
    except Conflict as e:
        print("cloche_state: condition failed: %s" % e.message, file=sys.stderr)
        return 1
    except (StateError, OSError, ValueError) as e:
        print("cloche_state: %s" % e, file=sys.stderr)
        return 2
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
