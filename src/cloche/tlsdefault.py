"""One default TLS context per process, for the httpx clients cloche makes again and again.

httpx builds a new `ssl.SSLContext` for every client or transport it is not handed one
for, and loads the whole CA bundle into it: about 22 ms of CPU on these machines, paid by
every SDK client (so every CLI command), by the first invoke of each agent (whose
transport is plain HTTP over a unix socket and never uses TLS at all) and by every MCP
tool call. An SSLContext may be shared by any number of clients and threads, so they
share this one.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def default_tls() -> ssl.SSLContext:
    """httpx's own default context (certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR as
    they were set the first time it is asked for)."""
    return httpx.create_ssl_context()
