"""The web dashboard in a real browser (Debian's chromium, driven by Playwright) against a
real `cloche up`: sign-in, the live list, a sandbox's terminal, files, lifecycle actions,
every page (a screenshot each, in tests/ui/artifacts/), tenant isolation and CSRF."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.integration.conftest import Server

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("ui") / "data", pool_size=0)
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()
    srv.wipe()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Tenant:
    def __init__(self, server: Server, key: str) -> None:
        self.key = key
        self.api = server.client(key)

    def sandbox(self, name: str) -> str:
        r = self.api.post("/v1/sandboxes", json={"name": name, "timeout_s": 600})
        r.raise_for_status()
        return r.json()["id"]


@pytest.fixture(scope="module")
def alice(server: Server) -> Tenant:
    return Tenant(server, server.tenant()[1])


@pytest.fixture(scope="module")
def bob(server: Server) -> Tenant:
    return Tenant(server, server.tenant()[1])


@pytest.fixture(scope="module")
def alice_box(alice: Tenant) -> str:
    return alice.sandbox("alice-box")


def sign_in(browser: Browser, server: Server, key: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(base_url=server.url, accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/ui/login")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/sandboxes$"))
    return context, page


@pytest.fixture(scope="module")
def alice_page(browser: Browser, server: Server, alice: Tenant, alice_box: str) -> Iterator[Page]:
    context, page = sign_in(browser, server, alice.key)
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def csrf(page: Page) -> str:
    return json.loads(page.get_attribute("body", "hx-headers") or "{}")["X-CSRF-Token"]


def test_sign_in_refuses_a_wrong_key(browser: Browser, server: Server) -> None:
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    page.goto("/ui/sandboxes")
    expect(page).to_have_url(re.compile(r"/ui/login$"))  # no session: to the sign-in form
    page.fill("input[name=key]", "ck_not-a-real-key")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_be_visible()
    shot(page, "login")
    assert not any(c["name"] == "cloche_ui" for c in context.cookies())
    context.close()


def test_session_cookie_is_opaque_and_strict(alice_page: Page, alice: Tenant) -> None:
    (cookie,) = [c for c in alice_page.context.cookies() if c["name"] == "cloche_ui"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and alice.key not in cookie["value"]


def test_sandbox_list_is_live_and_scoped(browser: Browser, server: Server, alice_page: Page, alice: Tenant,
                                         bob: Tenant, alice_box: str) -> None:
    page = alice_page
    page.goto("/ui/sandboxes")
    expect(page.locator(f"tr[data-id='{alice_box}']")).to_contain_text("running")
    bob_box = bob.sandbox("bob-box")
    second = alice.sandbox("alice-second")
    expect(page.locator(f"tr[data-id='{second}']")).to_be_visible(timeout=10_000)  # no reload: htmx polls
    expect(page.locator(f"tr[data-id='{alice_box}'] td").nth(4)).to_contain_text("%")  # a CPU figure
    assert page.locator(f"tr[data-id='{bob_box}']").count() == 0
    shot(page, "sandboxes")
    alice.api.delete(f"/v1/sandboxes/{second}").raise_for_status()
    expect(page.locator(f"tr[data-id='{second}']")).to_have_count(0, timeout=10_000)
    context, admin = sign_in(browser, server, server.admin_key)  # the admin sees every tenant
    expect(admin.locator(f"tr[data-id='{bob_box}']")).to_be_visible()
    expect(admin.locator(f"tr[data-id='{alice_box}']")).to_be_visible()
    context.close()


def test_terminal_runs_a_command(alice_page: Page, alice_box: str) -> None:
    page = alice_page
    page.goto(f"/ui/sandboxes/{alice_box}")
    page.click("#open-terminal")
    rows = page.locator("#terminal .xterm-rows")
    expect(rows).to_be_visible()
    page.locator("#terminal").click()
    page.keyboard.type("echo ui-$((6*7))\n")
    expect(rows).to_contain_text("ui-42", timeout=15_000)
    shot(page, "sandbox")


def test_upload_and_download(alice_page: Page, alice: Tenant, alice_box: str, tmp_path: Path) -> None:
    page = alice_page
    page.goto(f"/ui/sandboxes/{alice_box}")
    expect(page.locator("#file-list")).to_be_visible()
    local = tmp_path / "notes.txt"
    local.write_bytes(b"hello from the browser\n" * 100)
    page.set_input_files("#upload-form input[type=file]", str(local))
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#upload-note")).to_contain_text("/workspace/notes.txt")
    r = alice.api.get(f"/v1/sandboxes/{alice_box}/files", params={"path": "/workspace/notes.txt"})
    assert r.content == local.read_bytes()
    with page.expect_download() as info:
        page.locator("#file-list tr", has_text="notes.txt").locator("a.download").click()
    assert Path(info.value.path()).read_bytes() == local.read_bytes()
    page.fill("input[name=cmd]", "wc -c /workspace/notes.txt")
    page.click("form.inline button:has-text('Run')")
    expect(page.locator("#exec-stdout")).to_contain_text("2300 /workspace/notes.txt")
    expect(page.locator("#processes")).to_contain_text("cloche-init")


def test_hibernate_and_wake(alice_page: Page, alice: Tenant, alice_box: str) -> None:
    page = alice_page
    page.goto(f"/ui/sandboxes/{alice_box}")
    page.click("button:has-text('Hibernate')")
    expect(page.locator("#state")).to_have_text("hibernated", timeout=60_000)
    page.click("button:has-text('Wake')")
    expect(page.locator("#state")).to_have_text("running", timeout=60_000)
    r = alice.api.get(f"/v1/sandboxes/{alice_box}/files", params={"path": "/workspace/notes.txt"})
    assert r.status_code == 200 and r.content.startswith(b"hello from the browser")


def test_every_page(browser: Browser, server: Server, alice_page: Page, alice: Tenant) -> None:
    alice.api.put("/v1/apps/memo", json={"command": ["sleep", "600"]}).raise_for_status()
    alice.api.put("/v1/state/notes/kv/greeting", content=b"hello, state").raise_for_status()
    alice.api.post("/v1/state/notes/log", content=b"first entry").raise_for_status()
    page = alice_page
    page.goto("/ui/apps")
    expect(page.locator("table")).to_contain_text("memo")
    shot(page, "apps")
    page.click("a:has-text('memo')")
    expect(page.locator("h1")).to_contain_text("memo")
    shot(page, "app")
    page.goto("/ui/state/notes")
    page.click("a:has-text('greeting')")
    expect(page.locator("#value")).to_contain_text("hello, state")
    expect(page.locator("#state-log")).to_contain_text("first entry")
    shot(page, "state")
    page.goto("/ui/secrets")
    page.fill("#add-secret input[name=name]", "GH_TOKEN")
    page.fill("#add-secret input[name=value]", "s3cr3t-value-never-shown")
    page.fill("#add-secret input[name=hosts]", "api.github.com")
    page.click("#add-secret button[type=submit]")
    expect(page.locator("tr[data-name='GH_TOKEN']")).to_contain_text("api.github.com")
    assert "s3cr3t-value-never-shown" not in page.content()
    shot(page, "secrets")
    page.locator("tr[data-name='GH_TOKEN'] button").click()
    expect(page.locator("tr[data-name='GH_TOKEN']")).to_have_count(0)
    assert page.request.get(f"{server.url}/ui/nodes").status == 403  # admin pages
    context, admin = sign_in(browser, server, server.admin_key)
    admin.goto("/ui/nodes")
    expect(admin.locator(".node")).to_contain_text("Warm pools")
    shot(admin, "nodes")
    admin.goto("/ui/usage")
    expect(admin.locator("svg.chart").first).to_be_visible()
    shot(admin, "usage")
    context.close()


def test_other_tenants_sandbox_is_out_of_reach(browser: Browser, server: Server, bob: Tenant, alice: Tenant,
                                               alice_box: str) -> None:
    context, page = sign_in(browser, server, bob.key)
    response = page.goto(f"/ui/sandboxes/{alice_box}")
    assert response is not None and response.status == 404
    headers = {"X-CSRF-Token": csrf(page), "Origin": server.url}
    for path in (f"/ui/sandboxes/{alice_box}/actions/kill", f"/ui/sandboxes/{alice_box}/exec"):
        r = page.request.post(f"{server.url}{path}", headers=headers, form={"cmd": "true"})
        assert r.status == 404, (path, r.status)
    assert page.request.get(f"{server.url}/ui/sandboxes/{alice_box}/download?path=/etc/hostname").status == 404
    opened = page.evaluate("""url => new Promise(done => {
        const ws = new WebSocket(url); ws.onopen = () => done("open"); ws.onclose = e => done(e.code); })""",
                           f"ws://127.0.0.1:{server.port}/ui/sandboxes/{alice_box}/pty")  # fmt: skip
    assert opened != "open"  # refused before the handshake completes
    assert alice.api.get(f"/v1/sandboxes/{alice_box}").json()["state"] == "running"
    context.close()


def test_state_changes_need_the_token_and_our_origin(alice_page: Page, server: Server, alice: Tenant,
                                                    alice_box: str) -> None:
    page = alice_page
    page.goto("/ui/sandboxes")
    token, url = csrf(page), f"{server.url}/ui/sandboxes/{alice_box}/actions/pause"
    assert page.request.post(url, headers={"Origin": server.url}).status == 403  # no token
    assert page.request.post(url, headers={"Origin": server.url, "X-CSRF-Token": "x" * 43}).status == 403
    assert page.request.post(url, headers={"Origin": "http://evil.example", "X-CSRF-Token": token}).status == 403
    assert page.request.post(url, headers={"X-CSRF-Token": token}).status == 403  # no Origin at all
    assert page.request.post(f"{server.url}/ui/login", headers={"Origin": "http://evil.example"},
                             form={"key": alice.key, "csrf": "x"}).status == 403  # fmt: skip
    assert alice.api.get(f"/v1/sandboxes/{alice_box}").json()["state"] == "running"
    r = httpx.post(url, headers={"Origin": server.url, "X-CSRF-Token": token})  # no cookie: sign in first
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert page.request.post(url, headers={"Origin": server.url, "X-CSRF-Token": token}).status == 200
    assert alice.api.get(f"/v1/sandboxes/{alice_box}").json()["state"] == "paused"
