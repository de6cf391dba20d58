"""openat2 with RESOLVE_IN_ROOT answers EAGAIN when a rename or mount anywhere on the host
races a ".." in the path (ci17: a sandbox file write through `up -> ..` failed with
"Resource temporarily unavailable" while other tests mounted disks). The kernel asks the
caller to retry, and `linux.openat2` does. That race cannot be produced on demand, so the
syscall is wrapped here to answer EAGAIN first; every open still happens for real."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from cloche.node import linux


class _Racing:
    """The real syscall, but the first `fails` calls answer EAGAIN, as a raced ".." does."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls = 0
        self.real = linux._libc.syscall

    def __call__(self, *args: Any) -> int:
        self.calls += 1
        if self.calls <= self.fails:
            ctypes.set_errno(errno.EAGAIN)
            return -1
        return self.real(*args)


def test_a_raced_open_is_retried_and_opens_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "up").symlink_to("..")
    (tmp_path / "f").write_bytes(b"inside")
    racing = _Racing(fails=3)
    monkeypatch.setattr(linux._libc, "syscall", racing)
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = linux.openat2(root, "up/f", os.O_RDONLY, resolve=linux.RESOLVE_IN_ROOT)
        with os.fdopen(fd, "rb") as f:
            assert f.read() == b"inside"  # `..` stayed inside the root
        assert racing.calls == 4
    finally:
        os.close(root)


def test_an_open_that_keeps_racing_gives_up_with_eagain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    racing = _Racing(fails=linux.OPENAT2_EAGAIN_TRIES)
    monkeypatch.setattr(linux._libc, "syscall", racing)
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as raised:
            linux.openat2(root, "f", os.O_RDONLY, resolve=linux.RESOLVE_IN_ROOT)
        assert raised.value.errno == errno.EAGAIN and racing.calls == linux.OPENAT2_EAGAIN_TRIES
    finally:
        os.close(root)


def test_other_errors_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    racing = _Racing(fails=0)
    monkeypatch.setattr(linux._libc, "syscall", racing)
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(FileNotFoundError):
            linux.openat2(root, "missing", os.O_RDONLY, resolve=linux.RESOLVE_IN_ROOT)
        assert racing.calls == 1
    finally:
        os.close(root)
