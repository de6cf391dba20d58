"""scripts/kvm-probe: --help, the /dev/kvm ioctl check and the initramfs writer (no QEMU, no boots)."""

from __future__ import annotations

import gzip
import importlib.machinery
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kvm-probe"


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("kvm_probe", str(SCRIPT))
    spec = importlib.util.spec_from_loader("kvm_probe", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kvm_probe"] = module
    loader.exec_module(module)
    return module


kvm_probe = _load()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def test_executable_with_help() -> None:
    assert os.access(SCRIPT, os.X_OK)
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--json", "--kvm-only", "--timeout", "--config", "--kernel", "--no-install"):
        assert flag in proc.stdout


def test_list_names_every_configuration() -> None:
    proc = _run("--list")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert names == [c.name for c in kvm_probe.CONFIGS]
    assert {"kvm-q35", "kvm-microvm", "kvm-q35-host", "kvm-q35-max", "tcg-q35"} <= set(names)


def test_kvm_only_json_shape() -> None:
    proc = _run("--kvm-only", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == {"kvm"}
    kvm = report["kvm"]
    for key in ("exists", "open", "create_vm", "create_vcpu", "guest_runs"):
        assert isinstance(kvm[key], bool), key
    assert set(kvm["cpu_flags"]) == {"vmx", "svm", "hypervisor"}
    assert {"module", "params", "host_is_pvm_guest"} <= set(kvm["backend"])
    if not kvm["exists"] or not kvm["open"]:
        assert kvm["error"]
        return
    assert kvm["api_version"] == 12  # KVM_API_VERSION has been 12 since 2.6.22
    assert kvm["caps"]["KVM_CAP_USER_MEMORY"] >= 1
    assert kvm["create_vm"] and kvm["create_vcpu"]
    if kvm["guest_runs"]:
        assert kvm["guest_exits"] == kvm_probe.IO_ROUND_TRIPS
        assert kvm["guest_last_exit"] == "IO"
        assert kvm["guest_io_exit_us"] > 0
    else:
        assert kvm["error"]


def test_kvm_only_table() -> None:
    proc = _run("--kvm-only")
    assert proc.returncode == 0
    assert proc.stdout.startswith("/dev/kvm\n")
    assert "KVM_GET_API_VERSION" in proc.stdout


def test_missing_device_is_reported_not_raised(tmp_path: Path) -> None:
    report = kvm_probe.kvm_check(str(tmp_path / "kvm"))
    assert report["exists"] is False and report["open"] is False
    assert "does not exist" in report["error"]


def _read_newc(blob: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    entries = {}
    pos = 0
    while True:
        assert blob[pos : pos + 6] == b"070701"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        pos += 110
        name = blob[pos : pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        data = blob[pos : pos + size]
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data, (rmaj, rmin))


def test_initramfs_layout(tmp_path: Path) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF-not-really")
    out = kvm_probe.build_initramfs(fake, tmp_path / "initrd.gz")
    entries = _read_newc(gzip.decompress(out.read_bytes()))
    mode, data, _ = entries["init"]
    assert stat.S_ISREG(mode) and mode & 0o111
    assert f"{kvm_probe.MARK} init started" in data.decode()
    assert "poweroff -f" in data.decode()
    mode, _, rdev = entries["dev/console"]
    assert stat.S_ISCHR(mode) and rdev == (5, 1)
    assert entries["bin/busybox"][1] == fake.read_bytes()


@pytest.mark.parametrize(
    ("seconds", "timed_out", "exit_code", "console", "expected"),
    [
        ({"kernel": 1.0, "init": 2.0, "poweroff": 2.1}, False, 0, 10, "powered-off"),
        ({"kernel": 1.0, "init": 2.0}, True, -9, 10, "init-ran"),
        ({"firmware": 0.1, "kernel": 1.0}, True, -9, 10, "kernel-hung"),
        ({"firmware": 0.1}, True, -9, 10, "hung-before-kernel"),
        ({}, True, -9, 0, "hung-no-output"),
        ({}, False, 1, 0, "qemu-error"),
        ({"kernel": 112.0, "kvm_error": 300.0}, False, -9, 10, "kvm-internal-error"),
    ],
)
def test_outcome(seconds: dict[str, float], timed_out: bool, exit_code: int, console: int, expected: str) -> None:
    res = kvm_probe.BootResult("x", [], seconds=seconds, timed_out=timed_out, exit_code=exit_code)
    res.console_bytes = console
    assert kvm_probe._outcome(res) == expected
