"""Secrets injected by the node's egress proxy, and egress through a user's SOCKS5 proxy,
end to end: a real server, real sandboxes, the node's nftables steering, and upstream
servers in the suite's fake internet (secure.test with the harness's own CA, badcert.test
with a certificate nothing trusts, Dante as the SOCKS5 proxy). The upstreams record what
they received; their answers carry only digests of header values, so what the sandbox
reads back can never be where a secret comes from.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.netlab import SOCKS_PASSWORD, SOCKS_USER
from tests.network.conftest import create, exec_sh, probe

AUTH = "Bearer ${secret:gh_token}"
# Requests over one kept-alive connection, with the default trust store (SSL_CERT_FILE).
FETCH = r"""
import http.client, json, ssl, sys
scheme, host, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
conn = (http.client.HTTPSConnection(host, timeout=10, context=ssl.create_default_context()) if scheme == "https"
        else http.client.HTTPConnection(host, timeout=10))
out = []
for path in paths:
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer from-the-sandbox"})
        r = conn.getresponse()
        out.append([r.status, r.read().decode(errors="replace")])
    except (OSError, http.client.HTTPException) as e:
        out.append([0, repr(e)])
        break
print(json.dumps(out))
"""


def fetch(client: httpx.Client, sid: str, url_base: str, *paths: str) -> list[tuple[int, str]]:
    scheme, host = url_base.split("://")
    out = exec_sh(client, sid, ["python3", "-c", FETCH, scheme, host, *paths])
    assert out["exit_code"] == 0, out
    return [tuple(x) for x in json.loads(out["stdout"])]


def rules(host: str, value: str = AUTH) -> dict[str, Any]:
    return {"rules": {host: [{"transform": {"headers": {"Authorization": value}}}]}}


@pytest.fixture
def token(client: httpx.Client) -> Iterator[str]:
    """A fresh secret `gh_token`, allowed for secure.test only."""
    value = "ghp_" + secrets.token_hex(20)
    r = client.post("/v1/secrets", json={"name": "gh_token", "value": value, "hosts": ["secure.test"]})
    assert r.status_code == 201, r.text
    yield value
    client.delete("/v1/secrets/gh_token")


@pytest.fixture
def recorded(internet) -> Any:
    internet.clear_recorded_requests()

    def seen(host: str = "secure") -> list[dict[str, Any]]:
        return internet.recorded_requests(host)

    return seen


def sandbox_pids(sandbox_id: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cgroup") as f:
                    if sandbox_id in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any resident page of the process contains `needle` (read from the host).
    Only resident pages are read: reading the rest would fault them in, and gVisor's
    Sentry maps its whole sparse memory file, which would fill its memory cgroup. A
    process that is gone holds nothing (gVisor's ptrace stubs come and go)."""
    try:
        return _memory_holds(pid, needle)
    except (FileNotFoundError, ProcessLookupError):
        return False


def _memory_holds(pid: int, needle: bytes) -> bool:
    page = os.sysconf("SC_PAGE_SIZE")
    with (open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem,
          open(f"/proc/{pid}/pagemap", "rb", 0) as pagemap):  # fmt: skip
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            pagemap.seek(start // page * 8)
            entries = pagemap.read((end - start) // page * 8)
            present = [int.from_bytes(entries[i : i + 8], "little") >> 63 for i in range(0, len(entries), 8)]
            i = 0
            while i < len(present):  # each run of resident pages, read in one go
                if not present[i]:
                    i += 1
                    continue
                j = i
                while j < len(present) and present[j]:
                    j += 1
                try:
                    mem.seek(start + i * page)
                    if needle in mem.read((j - i) * page):
                        return True
                except (OSError, OverflowError, ValueError):
                    pass
                i = j
    return False


def test_https_requests_get_the_secret_and_the_sandbox_never_holds_it(client, token, recorded):
    sid = create(client, rules("secure.test"))
    # a long-lived process in the sandbox makes the requests, then stays for the memory check
    script = FETCH.replace("print(json.dumps(out))", "print(json.dumps(out), flush=True)\nimport time; time.sleep(60)")
    exec_sh(client, sid, ["sh", "-c", f"python3 -c '{script}' https secure.test /a /b /c > /tmp/out.json 2>&1 &"])
    for _ in range(100):
        out = exec_sh(client, sid, ["cat", "/tmp/out.json"])["stdout"]
        if out.strip():
            break
        __import__("time").sleep(0.1)
    answers = json.loads(out)
    assert [status for status, _ in answers] == [200, 200, 200], answers
    seen = recorded()
    assert [q["path"] for q in seen] == ["/a", "/b", "/c"]
    for q in seen:
        assert q["scheme"] == "https" and q["sni"] == "secure.test"
        assert dict(q["headers"])["Authorization"] == f"Bearer {token}"  # the sandbox's own value replaced
    assert token not in out
    # not in any process's memory (first: the file search below puts the token in grep's
    # argv, which gVisor's Sentry, the sandbox's kernel, then holds), not in any process's
    # environment, not in any file it could write
    pids = sandbox_pids(sid)
    assert len(pids) >= 2  # cloche-init and the sleeping python (runc); the Sentry, gofer and stubs (gVisor)
    assert not [pid for pid in pids if memory_holds(pid, token.encode())]
    assert [pid for pid in pids if memory_holds(pid, b"Bearer from-the-sandbox")]  # the scan sees the sandbox's
    env = exec_sh(client, sid, ["sh", "-c", "cat /proc/[0-9]*/environ | tr '\\0' '\\n'"])["stdout"]
    assert "SSL_CERT_FILE" in env and token not in env
    files = exec_sh(client, sid, ["grep", "-rlF", token, "/", "--exclude-dir=proc", "--exclude-dir=sys",
                                  "--exclude-dir=usr", "--exclude-dir=dev"])  # fmt: skip
    assert files["stdout"] == "" and files["exit_code"] == 1, files


def test_plain_http_requests_get_the_secret(client, token, recorded):
    sid = create(client, rules("secure.test"))
    answers = fetch(client, sid, "http://secure.test", "/one", "/two")
    assert [status for status, _ in answers] == [200, 200]
    assert [(q["scheme"], dict(q["headers"])["Authorization"]) for q in recorded()] == [("http", f"Bearer {token}")] * 2
    metrics = client.get("/metrics").text
    transformed = re.search(r'cloche_egress_proxy_events_total\{event="requests_transformed"\} (\d+)', metrics)
    assert transformed and int(transformed[1]) >= 2, metrics


def issuer(client: httpx.Client, sid: str, host: str) -> str:
    cmd = (f"openssl s_client -connect {host}:443 -servername {host} </dev/null 2>/dev/null "
           "| openssl x509 -noout -issuer")  # fmt: skip
    return exec_sh(client, sid, ["sh", "-c", cmd])["stdout"]


def test_only_hosts_with_rules_are_intercepted(client, token, recorded):
    sid = create(client, rules("secure.test"))
    assert "cloche node" in issuer(client, sid, "secure.test")  # the node CA's certificate: intercepted
    assert "cloche node" not in issuer(client, sid, "badcert.test")  # the upstream's own: passed through
    ((status, body),) = fetch(client, sid, "http://allowed.test", "/untouched")  # echoes the headers it got
    assert status == 200 and json.loads(body)["headers"]["Authorization"] == "Bearer from-the-sandbox", body
    plain = create(client, "internet")
    assert "cloche node" not in issuer(client, plain, "secure.test")
    assert fetch(client, plain, "http://secure.test", "/untouched")[0][0] == 200
    assert dict(recorded()[-1]["headers"])["Authorization"] == "Bearer from-the-sandbox"


def test_an_upstream_with_a_bad_certificate_is_refused(client, recorded):
    value = secrets.token_hex(16)
    r = client.post("/v1/secrets", json={"name": "bad_host", "value": value, "hosts": ["badcert.test"]})
    assert r.status_code == 201, r.text
    try:
        sid = create(client, rules("badcert.test", "Bearer ${secret:bad_host}"))
        ((status, body),) = fetch(client, sid, "https://badcert.test", "/x")
        assert status == 502 and "certificate" in body, body
        assert recorded("badcert") == []  # the TLS handshake failed: no request, no secret was sent
        # without rules, the sandbox checks the certificate itself, and refuses it too
        plain = create(client, "internet")
        ((status, body),) = fetch(client, plain, "https://badcert.test", "/x")
        assert status == 0 and "CERTIFICATE_VERIFY_FAILED" in body, body
    finally:
        client.delete("/v1/secrets/bad_host")


def test_a_secret_goes_only_to_the_hosts_it_allows(client, token, recorded):
    r = client.post("/v1/sandboxes", json={"network": rules("allowed.test")})
    assert r.status_code == 400 and "may not be sent to allowed.test" in r.json()["error"]["message"], r.text
    r = client.post("/v1/sandboxes", json={"network": rules("secure.test", "${secret:nope}")})
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"], r.text
    sid = create(client, rules("secure.test"))
    r = client.put(f"/v1/sandboxes/{sid}/network", json=rules("*.test"))
    assert r.status_code == 400 and "gh_token" in r.json()["error"]["message"], r.text
    # the secret's definition changes after the sandbox was made: checked again per request
    assert client.put("/v1/secrets/gh_token", json={"hosts": ["other.test"]}).status_code == 200
    ((status, body),) = fetch(client, sid, "https://secure.test", "/after")
    assert status == 403 and json.loads(body)["error"]["code"] == "secret_denied", body
    assert "secure.test" in body and token not in body
    assert recorded() == []  # never forwarded, with or without the placeholder


def test_a_denied_host_never_reaches_the_proxy(client, token, recorded, internet):
    sid = create(client, {"allow_out": ["allowed.test"], **rules("secure.test")})
    name, by_ip = probe(client, sid, ["resolve", "secure.test"], ["connect", internet.hosts["secure"], 443])
    assert isinstance(name[0], str), name  # refused by the resolver
    assert by_ip[0] in ("ECONNREFUSED", "EHOSTUNREACH"), by_ip
    assert recorded() == []


def test_socks5_egress_proxy_carries_tcp_and_fails_closed(client, internet):
    socks = internet.socks
    socks.start()
    address = f"{internet.hosts['socks']}:1080"
    sid = create(client, {"egress_proxy": {"address": address, "username": SOCKS_USER, "password": SOCKS_PASSWORD}})
    (via,) = probe(client, sid, ["http", "allowed.test"])
    assert via[0]["client"] == internet.hosts["socks"]  # the upstream saw the SOCKS server, not the node's uplink
    policy = client.get(f"/v1/sandboxes/{sid}/network").json()["policy"]
    assert policy["egress_proxy"] == {"address": address, "username": SOCKS_USER}  # the password is never shown
    socks.stop()
    try:
        (down,) = probe(client, sid, ["http", "allowed.test"])
        assert not isinstance(down[0], dict), down  # no fallback to a direct connection
    finally:
        socks.start()
    (back,) = probe(client, sid, ["http", "allowed.test"])
    assert back[0]["client"] == internet.hosts["socks"]
    # TLS to the proxy, by name, with the harness's CA; and a wrong password fails closed too
    over_tls = {"address": "socks.test:1443", "username": SOCKS_USER, "password": SOCKS_PASSWORD,
                "tls": {"ca_cert": internet.ca_pem}}  # fmt: skip
    tls = create(client, {"egress_proxy": over_tls})
    (via_tls,) = probe(client, tls, ["http", "allowed.test"])
    assert via_tls[0]["client"] == internet.hosts["socks"]
    wrong = create(client, {"egress_proxy": {"address": address, "username": SOCKS_USER, "password": "wrong"}})
    (refused,) = probe(client, wrong, ["http", "allowed.test"])
    assert not isinstance(refused[0], dict), refused


@pytest.mark.parametrize("address", ["10.1.2.3:1080", "127.0.0.1:1080", "169.254.169.254:80", "100.64.0.0:1080",
                                     "no-such-name.test:1080"])  # fmt: skip
def test_an_egress_proxy_must_be_a_public_address(client, address):
    r = client.post("/v1/sandboxes", json={"network": {"egress_proxy": {"address": address}}})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert message.startswith("network.egress_proxy.address") and re.search("internal|resolve", message), message
