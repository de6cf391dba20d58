"""One table from errors to HTTP statuses (control/errors.py), whatever API answers:
the native API's `{"error": {"code", "message"}}` and E2B's `{"code", "message"}` give
the same status for the same error, a plain RuntimeFailure included (500, not 502),
and only E2B's envd proxy turns a sandbox that is gone into its 502."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from cloche.control.errors import ApiError
from cloche.control.locks import KeyedLocks
from cloche.e2b.api import E2bRoute
from cloche.e2b.errors import envd_answer
from cloche.node.errors import FileError, InvalidState, RuntimeFailure, SandboxNotFound, TemplateNotFound
from cloche.server import errors

CASES: list[tuple[Exception, int]] = [
    (RuntimeFailure("runc run failed: no such device"), 500),
    (SandboxNotFound("sandbox sb_1 not found"), 404),
    (InvalidState("sandbox sb_1 is stopped"), 409),
    (TemplateNotFound("template nope not found"), 400),
    (FileError("/x: no such file or directory", "not_found"), 404),
    (FileError("/x: the sandbox's disk quota is exhausted", "disk_full"), 507),
    (FileError("/x: file is larger than 5 bytes", "too_large"), 413),
    (FileError("path may not contain '..'", "invalid_path"), 400),
    (ApiError(429, "rate_limited", "slow down", {"Retry-After": "3"}), 429),
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    """The native API's handlers and E2B's route class, each over a route that raises."""
    app = FastAPI()
    errors.install(app)
    e2b = APIRouter(route_class=E2bRoute)

    async def native(i: int) -> None:
        raise CASES[i][0]

    async def e2b_side(i: int) -> None:
        raise CASES[i][0]

    app.add_api_route("/native/{i}", native)
    e2b.add_api_route("/e2b/{i}", e2b_side)
    app.include_router(e2b)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[type(e).__name__ + str(s) for e, s in CASES])
def test_both_apis_answer_an_error_with_the_same_status(client: TestClient, i: int) -> None:
    exc, status = CASES[i]
    native, e2b = client.get(f"/native/{i}"), client.get(f"/e2b/{i}")
    assert native.status_code == e2b.status_code == status
    assert native.json()["error"]["message"] == e2b.json()["message"] == str(exc)
    assert e2b.json()["code"] == status
    assert native.headers.get("retry-after") == e2b.headers.get("retry-after")


def test_a_runtime_failure_is_a_500_with_its_code(client: TestClient) -> None:
    r = client.get("/native/0")
    assert (r.status_code, r.json()["error"]["code"], r.headers["x-cloche-error"]) == (500, "runtime_error",
                                                                                        "runtime_error")  # fmt: skip


def test_envd_answers_a_vanished_sandbox_as_e2b_proxy_does_and_the_rest_by_the_table() -> None:
    gone = envd_answer(SandboxNotFound("sandbox sb_1 not found"), "sb_1")
    assert gone is not None and gone.status_code == 502 and b"The sandbox sb_1 was not found" in gone.body
    failed = envd_answer(RuntimeFailure("sandbox supervisor is not reachable"), "sb_1")
    assert failed is not None and failed.status_code == 500
    assert envd_answer(KeyError("a bug"), "sb_1") is None


def test_keyed_locks_serialise_one_key_and_are_dropped_when_free() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def create(key: str, tag: str) -> None:
        async with locks.hold(key):
            order.append(f"{tag}+")
            await asyncio.sleep(0.01)
            order.append(f"{tag}-")

    async def main() -> int:
        await asyncio.gather(create("t/a", "1"), create("t/a", "2"), create("t/b", "3"))
        return len(locks)

    assert asyncio.run(main()) == 0
    first = order.index("1+")
    assert order[first + 1] in ("1-", "3+", "3-") and order.index("1-") < order.index("2+")
