"""A one-to-one agent in plain Python (standard library only), for cloche.

It serves HTTP on the unix socket cloche gives it ($CLOCHE_AGENT_SOCKET), remembers
each user's conversation in its own sandbox (/workspace/memory.json, which survives
hibernation), runs tool commands in that sandbox, and answers deterministically, with
no model. To plug an LLM in, replace `think()`.

Requests (POST, JSON): {"message": "..."}
  "remember <fact>"      store a fact
  "recall"               list what it remembers
  "run: <shell command>" run a tool command in the sandbox and return its output
  "crash"                exit at once (used to test restarts)
  anything else          echoed back with the turn number
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
from http.server import BaseHTTPRequestHandler

MEMORY = os.environ.get("MEMO_FILE", "/workspace/memory.json")


def load() -> dict:
    try:
        with open(MEMORY) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"turns": 0, "facts": [], "seen": []}


def save(memory: dict) -> None:
    tmp = MEMORY + ".tmp"
    with open(tmp, "w") as f:
        json.dump(memory, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, MEMORY)


def think(message: str, memory: dict) -> str:
    if message.startswith("remember "):
        memory["facts"].append(message[len("remember "):])
        return f"I will remember that ({len(memory['facts'])} facts)."
    if message == "recall":
        return "; ".join(memory["facts"]) or "I remember nothing yet."
    if message.startswith("run: "):
        done = subprocess.run(["/bin/sh", "-c", message[len("run: "):]], capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr
    return f"turn {memory['turns']}: you said {message!r}"


class Handler(BaseHTTPRequestHandler):
    def address_string(self) -> str:
        return "unix"

    def do_GET(self) -> None:
        self._reply(200, {"ok": True, "pid": os.getpid(), "version": os.environ.get("AGENT_VERSION", "1")})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        message = str(body.get("message", ""))
        if message == "crash":
            os._exit(1)
        memory = load()
        memory["turns"] += 1
        if "seq" in body:
            memory["seen"].append(body["seq"])
        memory.setdefault("arrivals", []).append(int(self.headers.get("X-Cloche-Sequence", 0)))
        reply = think(message, memory)
        save(memory)
        self._reply(200, {"reply": reply, "turn": memory["turns"], "user": os.environ.get("CLOCHE_AGENT_KEY"),
                          "pid": os.getpid(), "seen": memory["seen"][-20:],
                          "arrivals": memory["arrivals"][-200:],
                          "version": os.environ.get("AGENT_VERSION", "1")})

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        print(fmt % args, flush=True)


def main() -> None:
    path = os.environ["CLOCHE_AGENT_SOCKET"]
    if os.path.exists(path):
        os.unlink(path)
    with socketserver.UnixStreamServer(path, Handler) as server:
        print(f"memo agent listening on {path}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
