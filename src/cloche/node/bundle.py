"""Builds the OCI runtime spec (config.json) for one sandbox: the single place where
cloche's isolation policy becomes runtime configuration, like runc's own specconv.
Both tiers get the same spec; `_for_gvisor` adds what runsc needs besides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloche.node import seccomp
from cloche.node.gvisor import PRELOAD, SOCKET_DIR, host_pids
from cloche.node.paths import BIN_DIR_PATH, HOST_DIR_PATH, INIT_PATH, SOCKET_DIR_PATH
from cloche.node.spec import Limits

UID_RANGE = 65536
CPU_PERIOD_US = 100_000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capability set minus NET_RAW and MKNOD.
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]  # fmt: skip

# As moby's oci/defaults.go and runc's spec template.
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/proc/interrupts", "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]  # fmt: skip


@dataclass(frozen=True)
class HostBind:
    """A read-only bind of a host directory into the sandbox (used by the `base` template)."""

    source: str
    destination: str


def _mounts(bin_dir: str, host_dir: str, binds: list[HostBind]) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": BIN_DIR_PATH, "type": "bind", "source": bin_dir,
         "options": ["bind", "ro", "nosuid", "nodev"]},
        {"destination": HOST_DIR_PATH, "type": "bind", "source": host_dir,
         "options": ["bind", "nosuid", "nodev", "noexec"]},
    ]  # fmt: skip
    for bind in binds:
        mounts.append(
            {
                "destination": bind.destination,
                "type": "bind",
                "source": bind.source,
                "options": ["rbind", "ro", "nosuid", "nodev"],
            }
        )
    return mounts


def _resources(limits: Limits, swap_control: bool) -> dict[str, Any]:
    memory = limits.memory_mb * 1024 * 1024
    mem: dict[str, Any] = {"limit": memory}
    if swap_control:
        mem["swap"] = memory  # memory+swap == memory: no swap at all
    return {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": mem,
        "cpu": {"quota": int(limits.cpu * CPU_PERIOD_US), "period": CPU_PERIOD_US},
        "pids": {"limit": limits.pids},
    }


def build_config(
    *,
    sandbox_id: str,
    uid_base: int,
    limits: Limits,
    bin_dir: str,
    host_dir: str,
    binds: list[HostBind],
    cgroup_path: str,
    swap_control: bool,
    isolation: str = "runc",
    bundle: Path | None = None,
    netns: Path | None = None,
) -> dict[str, Any]:
    """The full config.json for a sandbox whose merged root is at <bundle>/rootfs;
    `netns`: a network namespace made beforehand (else the runtime makes a new one)."""
    caps = list(CAPABILITIES)
    config: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [INIT_PATH],
            "env": [f"PATH={DEFAULT_PATH}", "HOME=/root"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": sandbox_id.replace("_", "-"),
        "mounts": _mounts(bin_dir, host_dir, binds),
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": uid_base, "size": UID_RANGE}],
            "gidMappings": [{"containerID": 0, "hostID": uid_base, "size": UID_RANGE}],
            "namespaces": [
                {"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup", "user")
            ],
            "cgroupsPath": cgroup_path,
            "resources": _resources(limits, swap_control),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp.profile(),
        },
    }
    if netns is not None:
        for ns in config["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = str(netns)
    if isolation == "gvisor":
        assert bundle is not None
        _for_gvisor(config, bundle)
    return config


def _for_gvisor(config: dict[str, Any], bundle: Path) -> None:
    """runsc's differences: cloche-init listens on a socket in a directory bound from
    the host (runsc cannot pass fds in; see gvisor.py), and /tmp is bound explicitly,
    since runsc would otherwise put a tmpfs of its own over an empty /tmp, where the
    file API (which writes the rootfs on the host) could not see it. The sandbox's pids
limit is its processes' RLIMIT_NPROC, which the Sentry enforces (fork gets EAGAIN);
the host cgroup's is a backstop above it (`host_pids`). gVisor's seccomp
    answers EPERM to every denied call (it ignores errnoRet), so clone3 is let through
    to the Sentry, which answers ENOSYS itself (glibc then falls back to clone; with
    EPERM no thread could start)."""
    pids = config["linux"]["resources"]["pids"]
    config["process"]["rlimits"] = [{"type": "RLIMIT_NPROC", "hard": pids["limit"], "soft": pids["limit"]}]
    pids["limit"] = host_pids(pids["limit"])
    rules = config["linux"]["seccomp"]["syscalls"]
    rules[:] = [rule for rule in rules if rule["names"] != ["clone3"]]
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ALLOW"})
    config["process"]["env"].append(f"CLOCHE_LISTEN={SOCKET_DIR_PATH}/sock")
    config["mounts"] += [
        {"destination": SOCKET_DIR_PATH, "type": "bind", "source": str(bundle / SOCKET_DIR),
         "options": ["bind", "nosuid", "nodev", "noexec"]},
        {"destination": "/tmp", "type": "bind", "source": str(bundle / "rootfs" / "tmp"),
         "options": ["bind", "nosuid", "nodev"]},
        {"destination": "/etc/ld.so.preload", "type": "bind", "source": str(bundle / PRELOAD),
         "options": ["bind", "ro", "nosuid", "nodev"]},
    ]  # fmt: skip
