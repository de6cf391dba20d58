"""Both faces of the SDK behind one blocking interface, so an SDK test is written once.

``face_client("sync", ...)`` is a plain :class:`~cloche.Client`; ``face_client("async",
...)`` is an :class:`~cloche.AsyncClient` whose coroutines run on an event loop in a
helper thread, seen through :class:`Blocking`: a call returns its awaited result, an
async iterator becomes an iterator and ``with`` enters ``async with``.  A test that
is marked :data:`both_faces` therefore exercises each face's own code paths (its
sender, its streams, its flow driver) with the same assertions.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cloche import AsyncClient, Client
from tests.conftest import LoopThread

FACES = ("sync", "async")
"""The two faces, as test parameters."""


def _is_sdk(value: Any) -> bool:
    return type(value).__module__.startswith("cloche.client.async_")


class Blocking:
    """A blocking view of an object of the async face (client, resource or handle)."""

    def __init__(self, target: Any, loop: LoopThread) -> None:
        self._target = target
        self._loop = loop

    def _wrap(self, value: Any) -> Any:
        if value is self._target:  # a handle returning itself (``refresh()``)
            return self
        if inspect.iscoroutine(value):
            return self._wrap(self._loop.run(value))
        if inspect.isasyncgen(value):
            return self._loop.iterate(value)
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        if _is_sdk(value):
            return Blocking(value, self._loop)
        return value

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.ismethod(value):
            return lambda *args, **kwargs: self._wrap(value(*args, **kwargs))
        return self._wrap(value)

    def __getitem__(self, key: Any) -> Any:
        return self._wrap(self._target[key])

    def __iter__(self) -> Iterator[Any]:
        return self._loop.iterate(aiter(self._target))

    def __enter__(self) -> Any:
        return self._wrap(self._loop.run(self._target.__aenter__()))

    def __exit__(self, *exc: Any) -> None:
        self._loop.run(self._target.__aexit__(*exc))

    def close(self) -> None:
        close = getattr(self._target, "aclose", None) or self._target.close
        self._loop.run(close())

    def __eq__(self, other: object) -> bool:
        return self._target == (other._target if isinstance(other, Blocking) else other)

    def __hash__(self) -> int:
        return hash(self._target)

    def __repr__(self) -> str:
        return f"Blocking({self._target!r})"


@contextmanager
def face_client(face: str, url: str, api_key: str | None, **options: Any) -> Iterator[Client]:
    """A client of ``face`` ("sync" or "async") that every test drives the same way."""
    if face == "sync":
        with Client(url, api_key, **options) as client:
            yield client
        return
    loop = LoopThread()
    try:
        with Blocking(AsyncClient(url, api_key, **options), loop) as client:
            yield client
    finally:
        loop.stop()


both_faces = pytest.mark.parametrize("client", FACES, indirect=True)
"""Run a test once per face: its ``client`` fixture gets the face as ``request.param``
(the fixture's default, for the tests that run on one face, is ``"sync"``)."""
