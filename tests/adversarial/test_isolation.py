"""Escape attempts from inside a real sandbox: capabilities, user namespace, seccomp,
/proc and /dev masking, pid namespace, setuid binaries and the cgroup release_agent trick.

Every check runs a small program in the sandbox and looks at what the kernel answered.
Most probes use arguments a permissive kernel would accept (or reject with EFAULT or
EINVAL), so a hole in the policy shows up as a success or a different errno.

Every test runs on both tiers (`node` is `tier_node`, see conftest.py). Under gVisor the
kernel is the Sentry, so some attacks fail with another symptom, checked instead (each
says so): its /proc/self/status lacks CapAmb and NoNewPrivs (asked with prctl), its
uid_map is its own (the host side is checked on the host), the i386 ABI does not exist,
/proc/1/exe is unreadable, and its mountinfo shows only ro and noexec.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import time

import pytest

from tests.adversarial.test_resources import host_pids_of

# capability numbers (linux/capability.h)
CAP = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip
# What a sandbox's root may hold at most: Docker's default set minus NET_RAW and MKNOD.
ALLOWED_CAPS = {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}  # fmt: skip
MUST_NOT_HAVE = ["SYS_ADMIN", "NET_RAW", "MKNOD", "SYS_PTRACE", "SYS_MODULE", "SYS_RAWIO",
                 "SYS_BOOT", "SYS_TIME", "NET_ADMIN", "DAC_READ_SEARCH", "BPF", "PERFMON",
                 "SYS_RESOURCE", "SYSLOG", "LINUX_IMMUTABLE", "CHECKPOINT_RESTORE"]  # fmt: skip


def py(node, sandbox_id: str, code: str, **kw):
    """Run a Python program inside the sandbox (base template: the host's /usr/bin/python3)."""
    kw.setdefault("timeout_s", 30)
    return node.exec(sandbox_id, ["python3", "-c", code], **kw)


# gVisor's /proc/self/status has no CapAmb and no NoNewPrivs: the same process asks the Sentry.
PRCTL_STATUS = r"""
import ctypes
libc = ctypes.CDLL(None)
print("NoNewPrivs:", libc.prctl(39, 0, 0, 0, 0))  # PR_GET_NO_NEW_PRIVS
print("CapAmb:", format(sum(1 << c for c in range(41) if libc.prctl(47, 1, c, 0, 0) == 1), "016x"))
print(open("/proc/self/status").read())
"""


def status_fields(node, sandbox_id: str, **kw) -> dict[str, str]:
    cmd = ["python3", "-c", PRCTL_STATUS] if node.isolation == "gvisor" else ["cat", "/proc/self/status"]
    r = node.exec(sandbox_id, cmd, **kw)
    assert r.exit_code == 0, r.stderr
    fields = {}
    for line in r.stdout.decode().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def cap_names(mask: int) -> set[str]:
    return {name for name, bit in CAP.items() if mask >> bit & 1} | (
        {f"bit{b}" for b in range(41, 64) if mask >> b & 1}
    )


@pytest.fixture(scope="module")
def other(node):
    """A second sandbox, to check that two sandboxes cannot see or reach each other."""
    rec = node.create()
    yield rec
    node.kill(rec.id)


# ---- capabilities and user namespace ----------------------------------------------------


def test_root_capabilities_are_reduced(node, sandbox):
    f = status_fields(node, sandbox.id)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        caps = cap_names(int(f[key], 16))
        assert caps <= ALLOWED_CAPS, f"{key} has extra capabilities {caps - ALLOWED_CAPS}"
        for name in MUST_NOT_HAVE:
            assert name not in caps, f"{key} contains CAP_{name}"
    assert int(f["CapAmb"], 16) == 0
    assert int(f["CapInh"], 16) == 0
    # the sandbox root really is root inside (the profile is not vacuously empty)
    assert "CHOWN" in cap_names(int(f["CapEff"], 16))


def test_no_new_privs_and_seccomp_filter_are_set(node, sandbox):
    f = status_fields(node, sandbox.id)
    assert f["NoNewPrivs"] == "1"
    assert f["Seccomp"] == "2"  # SECCOMP_MODE_FILTER


def test_unprivileged_user_has_no_capabilities(node, sandbox):
    f = status_fields(node, sandbox.id, uid=1000, gid=1000)
    assert f["Uid"].split()[:2] == ["1000", "1000"]
    assert int(f["CapEff"], 16) == 0 and int(f["CapPrm"], 16) == 0
    assert int(f["CapAmb"], 16) == 0
    assert f["NoNewPrivs"] == "1"


def _id_map(node, sandbox_id: str, which: str) -> list[tuple[int, int, int]]:
    r = node.exec(sandbox_id, ["cat", f"/proc/self/{which}"])
    assert r.exit_code == 0
    return [tuple(int(x) for x in line.split()) for line in r.stdout.decode().splitlines()]


def host_uids(rec) -> dict[str, int]:
    """The host uid of each host process of a sandbox (by its cgroup), by command name."""
    uids = {}
    for pid in host_pids_of(rec):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                name = f.read().split(b"\0")[0].decode()
            uids[name or f"pid{pid}"] = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
    return uids


def test_root_maps_to_unprivileged_host_range_distinct_per_sandbox(node, sandbox, other):
    if node.isolation == "gvisor":
        # The Sentry's uid_map is its own (0 0 4294967295). On the host: the gofer, which
        # does the sandbox's file I/O, is the sandbox's mapped root (distinct per sandbox);
        # the Sentry and its stubs are nobody in a user namespace of their own.
        gofers = []
        for rec in (sandbox, other):
            uids = host_uids(rec)
            assert uids.pop("runsc-gofer") >= 1 << 24
            assert set(uids.values()) == {65534}, uids
            gofers.append(host_uids(rec)["runsc-gofer"])
        assert gofers[0] != gofers[1]
        return
    ranges = []
    for rec in (sandbox, other):
        for which in ("uid_map", "gid_map"):
            m = _id_map(node, rec.id, which)
            assert len(m) == 1, m
            inside, host, size = m[0]
            assert inside == 0
            assert host >= 1 << 24 and host != 0
            assert size <= 65536
            if which == "uid_map":
                ranges.append((host, host + size))
    (a0, a1), (b0, b1) = ranges
    assert a1 <= b0 or b1 <= a0, f"sandboxes share host uids: {ranges}"


def test_host_sees_sandbox_processes_under_shifted_uid(node, sandbox):
    """The sandbox's root is an ordinary high uid on the host, never host root."""
    if node.isolation == "gvisor":  # its processes are not host processes: see the test above
        pytest.skip("gVisor: sandbox processes live in the Sentry; its host processes' uids are checked above")
    marker = f"cloche-uid-{secrets.token_hex(4)}"
    node.sh(sandbox.id, f"ln -sf /usr/bin/sleep /tmp/{marker} && "
                        f"setsid /tmp/{marker} 30 >/dev/null 2>&1 </dev/null &")  # fmt: skip
    try:
        found = []
        deadline = time.time() + 5
        while not found and time.time() < deadline:
            found = [pid for pid in _host_pids_with(marker)]
            if not found:
                time.sleep(0.05)
        assert found, "the marker process never showed up on the host"
        seen = 0
        for pid in found:
            try:
                st = os.stat(f"/proc/{pid}")
            except FileNotFoundError:
                continue  # a short-lived shell whose command line named the marker
            seen += 1
            assert st.st_uid >= 1 << 24, f"sandbox process runs as host uid {st.st_uid}"
        assert seen, "every marker process vanished before it could be checked"
    finally:
        node.sh(sandbox.id, f"pkill -f '[c]{marker[1:]}'; rm -f /tmp/{marker}")


def _host_pids_with(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


# ---- seccomp ----------------------------------------------------------------------------

# x86_64 syscall numbers, arguments chosen so that the call would succeed, or fail with
# something other than EPERM, if it reached a permissive kernel.
SECCOMP_PROBE = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L, P = ctypes.c_long, ctypes.c_char_p
buf = ctypes.create_string_buffer(256)
handle = ctypes.create_string_buffer(b"\x80\0\0\0" + b"\0" * 132)
mount_id = ctypes.c_int(0)
src, dst = ctypes.create_string_buffer(16), ctypes.create_string_buffer(16)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
liov = iovec(ctypes.cast(dst, ctypes.c_void_p), 16)
riov = iovec(ctypes.cast(src, ctypes.c_void_p), 16)
nsfd = os.open("/proc/self/ns/user", os.O_RDONLY)
SIGCHLD = 17
calls = {
 "getpid": (39,),
 "mount": (165, P(b"none"), P(b"/tmp"), P(b"tmpfs"), L(0), None),
 "umount2": (166, P(b"/proc"), L(2)),
 "unshare": (272, L(0x10000000)),
 "setns": (308, L(nsfd), L(0)),
 "keyctl": (250, L(0), L(-3), L(0)),
 "add_key": (248, P(b"user"), P(b"cloche"), P(b"x"), L(1), L(-2)),
 "request_key": (249, P(b"user"), P(b"cloche"), None, L(0)),
 "bpf": (321, L(0), buf, L(0)),
 "perf_event_open": (298, None, L(0), L(-1), L(-1), L(0)),
 "userfaultfd": (323, L(0)),
 "kexec_load": (246, L(0), L(0), None, L(0)),
 "kexec_file_load": (320, L(-1), L(-1), L(0), None, L(0)),
 "init_module": (175, None, L(0), P(b"")),
 "finit_module": (313, L(-1), P(b""), L(0)),
 "delete_module": (176, P(b"cloche_nonexistent"), L(0)),
 "open_by_handle_at": (304, L(-1), handle, L(0)),
 "name_to_handle_at": (303, L(-100), P(b"/"), handle, ctypes.byref(mount_id), L(0)),
 "pivot_root": (155, P(b"/"), P(b"/")),
 "reboot": (169, L(0), L(0), L(0), None),
 "swapon": (167, P(b"/nonexistent"), L(0)),
 "clock_settime": (227, L(0), None),
 "settimeofday": (164, None, None),
 "ptrace": (101, L(0), L(0), L(0), L(0)),
 "process_vm_readv": (310, L(os.getpid()), ctypes.byref(liov), L(1), ctypes.byref(riov), L(1), L(0)),
 "process_vm_writev": (311, L(os.getpid()), ctypes.byref(liov), L(1), ctypes.byref(riov), L(1), L(0)),
 "io_uring_setup": (425, L(1), buf),
 "acct": (163, None),
 "quotactl": (179, L(0), None, L(0), None),
 "iopl": (172, L(0)),
 "ioperm": (173, L(0), L(1), L(0)),
 "open_tree": (428, L(-100), P(b"/"), L(0)),
 "move_mount": (429, L(-1), P(b""), L(-1), P(b""), L(0)),
 "fsopen": (430, P(b"tmpfs"), L(0)),
 "fsmount": (432, L(-1), L(0), L(0)),
 "mount_setattr": (442, L(-1), P(b""), L(0), None, L(0)),
 "kcmp": (312, L(os.getpid()), L(os.getpid()), L(0), L(0), L(1)),
 "pidfd_getfd": (438, L(-1), L(0), L(0)),
 "clone_newuser": (56, L(0x10000000 | SIGCHLD), L(0), None, None, L(0)),
 "clone_newns": (56, L(0x00020000 | SIGCHLD), L(0), None, None, L(0)),
 "clone_newnet": (56, L(0x40000000 | SIGCHLD), L(0), None, None, L(0)),
 "clone3": (435, None, L(0)),
 "personality_read_implies_exec": (135, L(0x0400000)),
 "x32_mount": (0x40000000 | 165, P(b"none"), P(b"/tmp"), P(b"tmpfs"), L(0), None),
 "x32_unshare": (0x40000000 | 272, L(0x10000000)),
}
out = {}
for name, (nr, *args) in calls.items():
    ctypes.set_errno(0)
    rc = libc.syscall(L(nr), *args)
    if rc == 0 and name.startswith("clone"):
        os._exit(0)  # a child that should never have been created
    out[name] = [rc, ctypes.get_errno()]
print(json.dumps(out))
"""

DENIED = [
    "mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "open_by_handle_at", "name_to_handle_at", "pivot_root",
    "reboot", "swapon", "clock_settime", "settimeofday", "ptrace", "process_vm_readv",
    "process_vm_writev", "io_uring_setup", "acct", "quotactl", "iopl", "ioperm", "open_tree",
    "move_mount", "fsopen", "fsmount", "mount_setattr", "kcmp", "pidfd_getfd",
    "clone_newuser", "clone_newns", "clone_newnet", "clone3", "personality_read_implies_exec",
    "x32_mount", "x32_unshare",
]  # fmt: skip


@pytest.fixture(scope="module")
def syscall_results(node, sandbox) -> dict[str, list[int]]:
    r = py(node, sandbox.id, SECCOMP_PROBE)
    assert r.exit_code == 0, r.stderr.decode()
    results = json.loads(r.stdout)
    # the harness itself works: an allowed call succeeds with the sandbox's own pid
    assert results["getpid"][0] > 0
    return results


@pytest.mark.parametrize("name", DENIED)
def test_syscall_is_denied(syscall_results, name):
    rc, err = syscall_results[name]
    assert rc == -1, f"{name} succeeded inside the sandbox (returned {rc})"
    assert err in (errno.EPERM, errno.ENOSYS), f"{name} reached the kernel: {errno.errorcode[err]}"


# i386 ABI through `int 0x80` from a 64-bit process: a filter that only checks the x86_64
# numbers would let these through (i386 mount is 21, unshare 310, ...).
INT80_PROBE = r"""
import ctypes, json, mmap
code = bytes([0x53,              # push rbx
              0x89, 0xF8,        # mov eax, edi   (nr)
              0x89, 0xF3,        # mov ebx, esi   (arg1)
              0x87, 0xD1,        # xchg ecx, edx  (arg2 -> ecx, arg3 -> edx)
              0xCD, 0x80,        # int 0x80
              0x5B, 0xC3])       # pop rbx; ret
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
int80 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                         ctypes.c_uint)(addr)
calls = {"getpid": (20, 0, 0, 0), "mount": (21, 0, 0, 0), "umount2": (52, 0, 0, 0),
         "unshare": (310, 0x10000000, 0, 0), "setns": (346, 0, 0x10000000, 0),
         "keyctl": (288, 0, 0xFFFFFFFD, 0), "ptrace": (26, 0, 0, 0),
         "userfaultfd": (374, 0, 0, 0), "bpf": (357, 0, 0, 0),
         "io_uring_setup": (425, 1, 0, 0), "open_tree": (428, 0xFFFFFF9C, 0, 0),
         "fsopen": (430, 0, 0, 0), "clone_newuser": (120, 0x10000000 | 17, 0, 0),
         "init_module": (128, 0, 0, 0), "kexec_load": (283, 0, 0, 0), "reboot": (88, 0, 0, 0)}
out = {}
for name, args in calls.items():
    rc = int80(*args)
    if rc == 0 and name.startswith("clone"):
        import os; os._exit(0)
    out[name] = rc
print(json.dumps(out))
"""


def test_i386_abi_is_not_an_escape_hatch(node, sandbox):
    r = py(node, sandbox.id, INT80_PROBE)
    if node.isolation == "gvisor":
        # gVisor has no i386 ABI: the Sentry takes `int 0x80` as a 64-bit call (eax is the
        # x86_64 number, the arguments in rdi, rsi...), so i386 getpid (20) is not getpid
        # and every call goes through the x86_64 filter: x86_64 unshare (272) is denied.
        assert r.exit_code == 0, r.stderr.decode()
        results = json.loads(r.stdout)
        assert results["getpid"] < 0, results
        assert results["unshare"] in (-errno.EPERM, -errno.ENOSYS), results  # 310: process_vm_readv
        probe = INT80_PROBE.replace('"getpid": (20, 0, 0, 0)', '"getpid": (272, 0x10000000, 0, 0)')
        assert json.loads(py(node, sandbox.id, probe).stdout)["getpid"] == -errno.EPERM
        return
    if r.signal in (11, 7) or r.exit_code in (139, 135):
        pytest.skip("this kernel has no ia32 emulation (int 0x80 faults)")
    assert r.exit_code == 0, r.stderr.decode()
    results = json.loads(r.stdout)
    assert results.pop("getpid") > 0  # the 32-bit path itself works
    for name, rc in results.items():
        assert rc in (-errno.EPERM, -errno.ENOSYS), f"i386 {name} returned {rc}"


# ---- /proc, /sys and /dev ---------------------------------------------------------------

MASKED_READ = r"""
import json, os
out = {}
for p in ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
          "/proc/interrupts", "/proc/latency_stats", "/proc/timer_stats", "/proc/acpi",
          "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"]:
    try:
        if os.path.isdir(p):
            out[p] = ["dir", len(os.listdir(p))]
        else:
            with open(p, "rb") as f:
                out[p] = ["file", len(f.read(65536))]
    except OSError as e:
        out[p] = ["error", e.errno]
print(json.dumps(out))
"""


def test_masked_proc_and_sys_paths_are_empty(node, sandbox):
    r = py(node, sandbox.id, MASKED_READ)
    assert r.exit_code == 0, r.stderr
    for path, (kind, value) in json.loads(r.stdout).items():
        if kind == "error":
            assert value in (errno.ENOENT, errno.EACCES, errno.EPERM), (path, value)
        else:
            assert value == 0, f"{path} exposes {value} {'entries' if kind == 'dir' else 'bytes'}"


def test_masked_paths_really_have_host_content(sandbox):
    """Guard for the test above: the host's versions are not empty, so masking matters."""
    with open("/proc/timer_list", "rb") as f:
        assert f.read(100)
    with open("/proc/interrupts", "rb") as f:
        assert f.read(100)


def test_proc_sys_and_sysrq_are_not_writable(node, sandbox):
    with open("/proc/sys/kernel/core_pattern") as f:
        before = f.read()
    r = node.sh(sandbox.id, "echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern; echo rc=$?; "
                            "echo c > /proc/sysrq-trigger; echo rc=$?; "
                            "echo 1 > /proc/sys/vm/drop_caches; echo rc=$?; "
                            "echo evil > /proc/sys/kernel/hostname; echo rc=$?")  # fmt: skip
    assert r.stdout.count(b"rc=0") == 0, r.stdout
    assert r.stdout.count(b"rc=") == 4
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == before


def test_masks_cannot_be_unmounted(node, sandbox):
    # reads nothing: /proc/timer_list is masked (runc) or absent (gVisor's /proc has none)
    r = node.sh(sandbox.id, "for p in /proc/kcore /proc/keys /proc/timer_list /proc/sys "
                            "/sys/firmware /proc; do umount $p 2>/dev/null && echo LEAK $p; "
                            "umount -l $p 2>/dev/null && echo LEAK $p; done; "
                            "cat /proc/timer_list 2>/dev/null | wc -c")  # fmt: skip
    assert b"LEAK" not in r.stdout, r.stdout
    assert r.stdout.strip() == b"0"


def test_mknod_of_devices_fails(node, sandbox):
    r = py(node, sandbox.id, r"""
import os, stat, json
out = {}
for name, mode, dev in [("mem", stat.S_IFCHR, os.makedev(1, 1)),
                        ("kmsg", stat.S_IFCHR, os.makedev(1, 11)),
                        ("vda", stat.S_IFBLK, os.makedev(253, 0)),
                        ("loop0", stat.S_IFBLK, os.makedev(7, 0))]:
    try:
        os.mknod(f"/workspace/{name}", mode | 0o600, dev)
        out[name] = 0
    except OSError as e:
        out[name] = e.errno
print(json.dumps(out))
""")
    assert r.exit_code == 0, r.stderr
    for name, err in json.loads(r.stdout).items():
        assert err == errno.EPERM, f"mknod {name}: {err}"
    r = node.sh(sandbox.id, "mknod /workspace/null2 c 1 3")
    assert r.exit_code != 0


DEV_ALLOWED = {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
               "ptmx", "fd", "stdin", "stdout", "stderr", "core", "console"}  # fmt: skip


def test_dev_holds_only_harmless_nodes(node, sandbox):
    r = py(node, sandbox.id, r"""
import os, stat, json
out = []
for dirpath, dirnames, filenames in os.walk("/dev"):
    for name in dirnames + filenames:
        p = os.path.join(dirpath, name)
        st = os.lstat(p)
        kind = ("blk" if stat.S_ISBLK(st.st_mode) else "chr" if stat.S_ISCHR(st.st_mode)
                else "lnk" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode)
                else "other")
        rdev = [os.major(st.st_rdev), os.minor(st.st_rdev)] if kind in ("blk", "chr") else None
        out.append([p, kind, rdev])
print(json.dumps(out))
""")
    assert r.exit_code == 0, r.stderr
    entries = json.loads(r.stdout)
    if node.isolation == "gvisor":
        # the Sentry's own /dev has fuse (10:229) and net/tun (10:200): devices of the
        # Sentry, not the host's, and of no use without CAP_SYS_ADMIN or CAP_NET_ADMIN
        entries = [e for e in entries if e[0] not in ("/dev/fuse", "/dev/net", "/dev/net/tun")]
        assert _tun_and_fuse_refused(node, sandbox) == ["EPERM", "EPERM"]
    top = {p.split("/")[2] for p, _, _ in entries}
    assert top <= DEV_ALLOWED, f"unexpected /dev entries: {top - DEV_ALLOWED}"
    assert {"null", "zero", "urandom"} <= top
    assert not [e for e in entries if e[1] == "blk"], "block devices in /dev"
    # character devices: only mem-class 1:{3,5,7,8,9}, tty 5:0, ptmx 5:2 and pts (136+)
    for path, kind, rdev in entries:
        if kind == "chr":
            assert tuple(rdev) in {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1),
                                   (5, 2)} or rdev[0] >= 136, (path, rdev)  # fmt: skip
    names = {p for p, _, _ in entries}
    for forbidden in ("/dev/kmsg", "/dev/fuse", "/dev/mem", "/dev/kmem", "/dev/port",
                      "/dev/loop-control", "/dev/net/tun", "/dev/vda", "/dev/sda"):  # fmt: skip
        assert forbidden not in names


def _tun_and_fuse_refused(node, sandbox) -> list[str]:
    r = py(node, sandbox.id, r"""
import errno, fcntl, os, struct
out = []
fd = os.open("/dev/net/tun", os.O_RDWR)
try:
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"evil0", 0x0002))  # TUNSETIFF, IFF_TAP
    out.append("created")
except OSError as e:
    out.append(errno.errorcode[e.errno])
try:
    os.mkdir("/tmp/fuse-mnt")
except FileExistsError:
    pass
fd = os.open("/dev/fuse", os.O_RDWR)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.mount(b"fuse", b"/tmp/fuse-mnt", b"fuse", 0, f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode())
out.append("mounted" if rc == 0 else errno.errorcode[ctypes.get_errno()])
print(" ".join(out))
""")
    assert r.exit_code == 0, r.stderr
    return r.stdout.decode().split()


def test_harmless_devices_work(node, sandbox):
    r = node.sh(sandbox.id, "head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo ok; "
                            "head -c 3 /dev/zero | wc -c")  # fmt: skip
    assert r.stdout == b"4\nok\n3\n"


# ---- pid namespace ----------------------------------------------------------------------


def _sandbox_cmdlines(node, sandbox_id: str) -> dict[int, str]:
    r = py(node, sandbox_id, r"""
import os, json
out = {}
for e in os.listdir("/proc"):
    if e.isdigit():
        try:
            out[e] = open(f"/proc/{e}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            pass
print(json.dumps(out))
""")
    assert r.exit_code == 0, r.stderr
    return {int(k): v for k, v in json.loads(r.stdout).items()}


def test_host_processes_are_invisible(node, sandbox):
    procs = _sandbox_cmdlines(node, sandbox.id)
    assert procs[1].startswith("/.cloche/"), procs  # cloche-init is pid 1
    # pid 1 (init), a per-connection handler, python itself: a handful, not the host's
    assert len(procs) <= 8, procs
    host_count = sum(1 for e in os.listdir("/proc") if e.isdigit())
    assert host_count > len(procs)
    assert not [c for c in procs.values() if "pytest" in c or "runc" in c], procs
    ps = node.sh(sandbox.id, "ps -e -o pid= | wc -l")
    assert int(ps.stdout) <= 8


def test_other_sandboxes_processes_are_invisible(node, sandbox, other):
    marker = f"cloche-mark-{secrets.token_hex(6)}"
    start = (f"ln -sf /usr/bin/sleep /tmp/{marker} && "
             f"setsid /tmp/{marker} 1000 >/dev/null 2>&1 </dev/null &")  # fmt: skip
    node.sh(sandbox.id, start)
    try:
        mine: list[int] = []
        deadline = time.time() + 5
        while not mine and time.time() < deadline:
            mine = [p for p, c in _sandbox_cmdlines(node, sandbox.id).items() if marker in c]
        assert mine, "the marker process never started (the test would be vacuous)"
        theirs = [p for p, c in _sandbox_cmdlines(node, other.id).items() if marker in c]
        assert not theirs
        ps = node.sh(other.id, "ps -eo args")
        assert marker.encode() not in ps.stdout
        # B signalling A's pid number reaches nothing of A's
        node.sh(other.id, f"kill -9 {mine[0]} 2>/dev/null; true")
        still = [p for p, c in _sandbox_cmdlines(node, sandbox.id).items() if marker in c]
        assert still == mine
    finally:
        node.sh(sandbox.id, f"pkill -f '[c]{marker[1:]}'; rm -f /tmp/{marker}")


def test_cannot_signal_host_processes(node, sandbox):
    """Host pids do not exist in the sandbox's pid namespace."""
    r = py(node, sandbox.id, f"""
import os, errno
try:
    os.kill({os.getpid()}, 0)
    print("reached")
except ProcessLookupError:
    print("ESRCH")
""")
    # pytest's own pid might coincide with a sandbox pid only if the sandbox had that many
    assert r.stdout.strip() == b"ESRCH" or os.getpid() < 10


# ---- setuid binaries --------------------------------------------------------------------


def test_setuid_root_binary_does_not_raise_euid(node, sandbox):
    setup = node.sh(sandbox.id, "for d in /workspace /tmp; do cp /usr/bin/id $d/suid-id && "
                                "chown 0:0 $d/suid-id && chmod 4755 $d/suid-id && "
                                "stat -c '%a %u' $d/suid-id; done")  # fmt: skip
    assert setup.stdout == b"4755 0\n4755 0\n", setup.stderr
    for d in ("/workspace", "/tmp"):
        r = node.exec(sandbox.id, [f"{d}/suid-id", "-u"], uid=1000, gid=1000)
        assert r.exit_code == 0, r.stderr
        assert r.stdout == b"1000\n", f"setuid binary in {d} ran with euid {r.stdout!r}"
    # the same through a real setuid python: effective uid stays the caller's
    node.sh(sandbox.id, "cp /usr/bin/python3 /workspace/suid-py && chmod 4755 /workspace/suid-py")
    r = node.exec(sandbox.id, ["/workspace/suid-py", "-c",
                               "import os; print(os.getresuid())"], uid=1000, gid=1000)  # fmt: skip
    assert r.stdout == b"(1000, 1000, 1000)\n", (r.stdout, r.stderr)
    node.sh(sandbox.id, "rm -f /workspace/suid-id /tmp/suid-id /workspace/suid-py")


def test_root_filesystems_are_nosuid(node, sandbox):
    if node.isolation == "gvisor":
        pytest.skip("gVisor's mountinfo shows only ro and noexec; test_setuid_root_binary_does_not_raise_euid "
                    "checks on both tiers that setuid binaries do not raise the euid")  # fmt: skip
    r = node.exec(sandbox.id, ["cat", "/proc/self/mountinfo"])
    for line in r.stdout.decode().splitlines():
        fields = line.split()
        mountpoint, opts = fields[4], fields[5].split(",")
        if mountpoint in ("/", "/usr", "/tmp", "/workspace", "/dev/shm"):
            assert "nosuid" in opts, line


def test_setpriv_cannot_regain_capabilities(node, sandbox):
    r = node.exec(sandbox.id, ["setpriv", "--inh-caps=+sys_admin", "--ambient-caps=+sys_admin",
                               "true"])  # fmt: skip
    assert r.exit_code != 0


# ---- cgroup escapes (CVE-2022-0492 release_agent) ---------------------------------------


def test_unshare_user_and_cgroup_namespace_fails(node, sandbox):
    for cmd in ("unshare -UrC true", "unshare -Ur true", "unshare -m true", "unshare -n true",
                "unshare -p -f true"):  # fmt: skip
        r = node.sh(sandbox.id, cmd)
        assert r.exit_code != 0, f"{cmd} succeeded"


def test_mounting_cgroupfs_fails(node, sandbox):
    r = node.sh(sandbox.id, "mkdir -p /tmp/cg; "
                            "mount -t cgroup -o memory cgroup /tmp/cg 2>&1; echo rc=$?; "
                            "mount -t cgroup -o rdma cgroup /tmp/cg 2>&1; echo rc=$?; "
                            "mount -t cgroup2 none /tmp/cg 2>&1; echo rc=$?; "
                            "ls -A /tmp/cg")  # fmt: skip
    assert r.stdout.count(b"rc=0") == 0 and r.stdout.count(b"rc=") == 3, r.stdout
    assert b"release_agent" not in r.stdout


def test_no_writable_release_agent_is_reachable(node, sandbox):
    r = node.sh(sandbox.id, "find /sys/fs/cgroup /proc/sys -name release_agent 2>/dev/null; "
                            "echo /tmp/pwn > /sys/fs/cgroup/memory/release_agent 2>/dev/null "
                            "&& echo WROTE")  # fmt: skip
    assert b"WROTE" not in r.stdout
    assert b"release_agent" not in r.stdout


# ---- cloche's own mounts ----------------------------------------------------------------


def test_supervisor_binaries_cannot_be_replaced(node, sandbox, other):
    """/.cloche/bin is one host directory shared by every sandbox on the node: a sandbox
    that could write it would run code in all its neighbours' supervisors."""
    # gVisor refuses to read /proc/1/exe: the binary on the shared mount, as the other sandbox sees it
    supervisor = "/.cloche/bin/cloche-init" if node.isolation == "gvisor" else "/proc/1/exe"
    before = node.exec(other.id, ["md5sum", supervisor]).stdout.split()[0]
    r = node.sh(sandbox.id, "for f in /.cloche/bin/*; do "
                            "  cp /usr/bin/true \"$f\" 2>/dev/null && echo WROTE $f; "
                            "  rm -f \"$f\" 2>/dev/null && echo REMOVED $f; "
                            "done; touch /.cloche/bin/new 2>/dev/null && echo CREATED; "
                            "mount -o remount,rw /.cloche/bin 2>/dev/null && echo REMOUNTED; "
                            "ls /.cloche/bin")  # fmt: skip
    assert b"WROTE" not in r.stdout and b"REMOVED" not in r.stdout, r.stdout
    assert b"CREATED" not in r.stdout and b"REMOUNTED" not in r.stdout
    assert b"cloche-init" in r.stdout
    after = node.exec(other.id, ["md5sum", supervisor]).stdout.split()[0]
    assert before == after
    new = node.create()
    try:
        assert node.sh(new.id, "echo fresh").stdout == b"fresh\n"
    finally:
        node.kill(new.id)


def test_cloche_mounts_are_nosuid_nodev(node, sandbox):
    r = node.exec(sandbox.id, ["cat", "/proc/self/mountinfo"])
    seen = {}
    for line in r.stdout.decode().splitlines():
        fields = line.split()
        if fields[4].startswith("/.cloche"):
            seen[fields[4]] = fields[5].split(",")
    assert "/.cloche/bin" in seen, seen
    assert "ro" in seen["/.cloche/bin"]
    if node.isolation == "gvisor":  # its mountinfo shows only ro and noexec
        assert {p for p, opts in seen.items() if "noexec" in opts} == {"/.cloche/host", "/.cloche/sv"}, seen
        return
    for point, opts in seen.items():
        assert "nosuid" in opts and "nodev" in opts, (point, opts)
