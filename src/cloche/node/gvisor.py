"""The gVisor tier: sandboxes under Debian's runsc (2022-12), a user-space kernel (the
Sentry, on the ptrace platform) between the sandbox and the host's kernel.

What differs from runc, and why:

- **The supervisor's socket.** runsc has no --preserve-fds, so the host cannot hand a
  listening socket in. cloche-init binds and listens itself (`CLOCHE_LISTEN`, set in the
  spec by `bundle.py`) on /.cloche/sv/sock, a directory bound from the host, and
  --host-uds=all makes that socket reachable from the host (and the state and agent
  sockets in /.cloche/host work as under runc). The host connects to <bundle>/sv/sock.
- **Networking.** gVisor's netstack takes the interfaces present in the network
  namespace when the sandbox starts, so the node makes the namespace and its veth first
  (`network_before_start`). This runsc decides "am I in the root namespace?" by whether
  /proc/sys/net/core/rmem_default exists, which every namespace has on recent kernels
  (this host runs 6.18), and refuses to start. `runsc start` (the step that reads it) therefore
  runs in a private mount namespace with /proc/sys/net hidden under an empty tmpfs;
  `runsc create` (gofer and sandbox, which mount /proc themselves) runs as usual.
- **Files.** --file-access=shared and no gVisor overlay: the node reads and writes the
  sandbox's files on the host (openat2 on the merged overlay), and the sandbox must see
  those writes at once, and the host its.
- **`ls` and `stat`.** This runsc rejects AT_NO_AUTOMOUNT in statx and fstatat, which
  coreutils always passes; glibc preloads a flag-stripping shim in every gVisor sandbox
  (/etc/ld.so.preload, bound from the bundle; supervisor/cloche-gvisor-compat.c).
- **pids.** The host's pids cgroup counts the Sentry's, the gofer's and the ptrace
  stubs' threads, not the sandbox's processes (a few dozen processes make a thousand
  host threads), and the Sentry dies when it cannot make one. So the sandbox's pids limit
  is its RLIMIT_NPROC, enforced by the Sentry (per user, as Linux does: fork gets EAGAIN),
  fixed at boot, and the host cgroup's limit is a backstop well above it (`host_pids`).
- **Memory.** The sandbox's memory is the Sentry's: past memory_mb the host's OOM killer
  kills the Sentry, that is the whole sandbox, not one of its processes.
- **Platform.** ptrace: the kvm platform hangs at boot on a host without nested KVM
  (a Firecracker guest, say).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from pathlib import Path

from cloche.node.paths import BIN_DIR_PATH
from cloche.node.runc import OciDriver
from cloche.node.spec import Limits

FLAGS = ("--platform=ptrace", "--network=sandbox", "--file-access=shared", "--overlay2=none",
         "--host-uds=all", "--oci-seccomp")  # fmt: skip
# `runsc start` in a mount namespace of its own where /proc/sys/net is empty (see above).
HIDE_NET_SYSCTLS = "mount -t tmpfs -o size=4k,mode=555 cloche-hide /proc/sys/net && exec \"$@\""
SOCKET_DIR = "sv"  # <bundle>/sv is bound at /.cloche/sv
PRELOAD = "ld.so.preload"  # <bundle>/ld.so.preload is bound at /etc/ld.so.preload
COMPAT_LIBRARY = "libcloche-gvisor-compat.so"  # in the bin directory bound at /.cloche/bin
BOOT_TIMEOUT_S = 30.0
HOST_TASKS_PER_PID = 16  # measured: a fork bomb held at 64 processes made ~1900 host threads
HOST_TASKS_BASE = 512  # an idle sandbox: ~150 (Sentry, gofer, stubs)


def host_pids(pids: int) -> int:
    """The host cgroup's pids.max for a gVisor sandbox whose own limit is `pids`."""
    return pids * HOST_TASKS_PER_PID + HOST_TASKS_BASE


class GvisorDriver(OciDriver):
    binary_name = "runsc"
    network_before_start = True
    pids_fixed_at_boot = True

    def _base(self) -> list[str]:
        return [self.binary, "--root", str(self.state_root), *FLAGS]

    def socket_path(self, bundle: Path) -> Path:
        return bundle / SOCKET_DIR / "sock"

    def host_limits(self, limits: Limits) -> Limits:
        """The host cgroup's pids limit is the backstop (`host_pids`)."""
        return replace(limits, pids=host_pids(limits.pids))

    def prepare(self, bundle: Path, uid: int) -> None:
        """The directory bound at /.cloche/sv, owned by the sandbox's root (who binds in it)."""
        d = bundle / SOCKET_DIR
        d.mkdir(exist_ok=True)
        os.chown(d, uid, uid)
        os.chmod(d, 0o700)
        (bundle / PRELOAD).write_text(f"{BIN_DIR_PATH}/{COMPAT_LIBRARY}\n")

    def run(self, container_id: str, bundle: Path, log: Path) -> int:
        pid_file = bundle / "pid"
        logging = ["--log", str(log), "--log-format", "json"]
        self._spawn("create", self._base() + logging + ["create", "--pid-file", str(pid_file), "--bundle",
                                                        str(bundle), container_id], log)  # fmt: skip
        hide = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", HIDE_NET_SYSCTLS, "sh"]
        self._spawn("start", hide + self._base() + logging + ["start", container_id], log)
        self._wait_for_supervisor(self.socket_path(bundle), log)
        return int(pid_file.read_text())

    def _wait_for_supervisor(self, sock: Path, log: Path) -> None:
        """cloche-init binds and listens once the sandbox has booted."""
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(sock))
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.fail(f"sandbox did not listen within {BOOT_TIMEOUT_S:.0f} s", log)
            time.sleep(0.002)

    def _exists(self, container_id: str) -> bool:
        return any(self.state_root.glob(f"{container_id}_sandbox:*"))

