"""A stateful Python kernel for the code interpreter, run inside the sandbox as
`python3 -u -c <this file>` (so nothing has to be installed in the template).

Requests arrive as JSON lines on stdin: {"code": ..., "env": {...}}. Events leave as
JSON lines on the original stdout: stdout/stderr chunks (file descriptors 1 and 2 are
pipes read by threads, so output of subprocesses and C code is captured too), results
(the value of a cell's last expression, and display() calls), an error with name,
value and traceback, the execution count, then {"type": "done"}. Variables persist
in one namespace between requests. SIGINT interrupts the running cell.
"""

import ast
import base64
import builtins
import codecs
import io
import json
import linecache
import os
import sys
import threading
import time
import traceback

MARK = b"\x00\x1bcloche-kernel-sync\x00"
_lock = threading.Lock()
_proto = None


def emit(event: dict) -> None:
    line = json.dumps(event) + "\n"
    with _lock:
        _proto.write(line)
        _proto.flush()


class Capture:
    """Forwards what is written to a file descriptor; `sync()` returns once everything
    written before it has been forwarded."""

    def __init__(self, fd: int, kind: str) -> None:
        self.fd = fd
        self.kind = kind
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.read_end = read_end
        self.synced = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _send(self, decoder: codecs.IncrementalDecoder, data: bytes) -> None:
        text = decoder.decode(data)
        if text:
            emit({"type": self.kind, "text": text, "timestamp": time.time_ns()})

    def _pump(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = b""
        while True:
            try:
                data = os.read(self.read_end, 65536)
            except InterruptedError:
                continue
            if not data:
                return
            pending += data
            while True:
                at = pending.find(MARK)
                if at < 0:
                    break
                self._send(decoder, pending[:at])
                pending = pending[at + len(MARK) :]
                self.synced.set()
            keep = 0
            for n in range(min(len(MARK) - 1, len(pending)), 0, -1):
                if MARK.startswith(pending[-n:]):
                    keep = n
                    break
            if len(pending) > keep:
                self._send(decoder, pending[: len(pending) - keep])
                pending = pending[len(pending) - keep :]

    def sync(self) -> None:
        self.synced.clear()
        os.write(self.fd, MARK)
        self.synced.wait(2.0)


REPRS = (("html", "_repr_html_"), ("markdown", "_repr_markdown_"), ("svg", "_repr_svg_"),
         ("png", "_repr_png_"), ("jpeg", "_repr_jpeg_"), ("pdf", "_repr_pdf_"), ("latex", "_repr_latex_"),
         ("json", "_repr_json_"), ("javascript", "_repr_javascript_"))  # fmt: skip


def result_of(value: object, main: bool) -> dict:
    out = {"type": "result", "text": repr(value), "is_main_result": main}
    for key, method in REPRS:
        fn = getattr(value, method, None)
        if not callable(fn):
            continue
        try:
            data = fn()
        except Exception:
            continue
        if isinstance(data, tuple):
            data = data[0]
        if data is None:
            continue
        if isinstance(data, bytes):
            data = base64.b64encode(data).decode()
        out[key] = data
    return out


def display(*objs: object) -> None:
    for obj in objs:
        emit(result_of(obj, False))


def user_traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


def run(namespace: dict, count: int, code: str, env: dict) -> None:
    filename = f"<cell-{count}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, filename, "eval"), namespace)
            if value is not None:
                namespace["_"] = value
                sys.stdout.flush()
                emit(result_of(value, True))
    except BaseException as exc:  # noqa: BLE001 - the cell's error, reported to the caller
        sys.stdout.flush()
        sys.stderr.flush()
        emit({"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": user_traceback(exc)})
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main() -> None:
    global _proto
    _proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    out, err = Capture(1, "stdout"), Capture(2, "stderr")
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.argv = [""]
    namespace = {"__name__": "__main__", "__builtins__": builtins, "display": display}
    count = 0
    emit({"type": "ready"})
    while True:
        try:
            line = requests.readline()
        except KeyboardInterrupt:
            continue
        if not line:
            return
        try:
            request = json.loads(line)
        except ValueError:
            continue
        count += 1
        try:
            run(namespace, count, request.get("code", ""), request.get("env") or {})
        except KeyboardInterrupt:
            emit({"type": "error", "name": "KeyboardInterrupt", "value": "", "traceback": "KeyboardInterrupt\n"})
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            out.sync()
            err.sync()
        except KeyboardInterrupt:
            pass
        emit({"type": "number_of_executions", "execution_count": count})
        emit({"type": "done"})


if __name__ == "__main__":
    main()
