"""nftables through libnftables (the library behind `nft`), without a process per call.

Every call is one buffer, and the kernel applies a buffer as one transaction: a batch
that fails anywhere changes nothing. Listings come back as JSON (`nft -j`). Using the
library instead of spawning `nft -f` keeps a policy change well under a millisecond.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from typing import Any

from cloche.node.errors import RuntimeFailure

NFT_CTX_OUTPUT_JSON = 1 << 4


class NftError(RuntimeFailure):
    """nftables refused a batch (nothing of it was applied)."""


class Nft:
    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise RuntimeFailure("libnftables is missing (apt-get install nftables)") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_char_p
        self._lib = lib
        self._lock = threading.Lock()
        self._ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, commands: str, *, json_output: bool = False) -> str:
        """Apply `commands` (nft syntax, one transaction); returns nft's output."""
        with self._lock:
            self._lib.nft_ctx_output_set_flags(self._ctx, NFT_CTX_OUTPUT_JSON if json_output else 0)
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise NftError(f"nftables refused the change: {err.strip()[:800]}")
        return out

    def list_json(self, what: str) -> list[dict[str, Any]]:
        """`nft -j list <what>` as the list of objects under "nftables"."""
        out = self.run(f"list {what}", json_output=True)
        return json.loads(out).get("nftables", []) if out.strip() else []

    def tables(self) -> list[tuple[str, str]]:
        return [(o["table"]["family"], o["table"]["name"]) for o in self.list_json("tables") if "table" in o]
