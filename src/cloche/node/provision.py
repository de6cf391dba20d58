"""Putting a sandbox on the host and taking it off again.

Why it exists: making a sandbox real is one long, ordered job (disk image, overlay over
the idmapped template, OCI bundle, network link, `runc run`) and so is undoing it; the
lifecycle in runtime.py only decides *when*. Both halves are blocking and run in a
thread. The disk image (DATA) outlives `teardown`; `destroy` removes it too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cloche.node import cgroups, disk, drivers, idmap, linux
from cloche.node.bundle import UID_RANGE, HostBind, build_config
from cloche.node.errors import InvalidSpec
from cloche.node.net import links
from cloche.node.net.node import NodeNetwork
from cloche.node.records import RecordStore, SandboxRecord
from cloche.node.run_dir import BUNDLE_NAME, SYSTEM_BUNDLE
from cloche.node.runc import OciDriver
from cloche.node.sandbox_table import SandboxTable
from cloche.node.spec import Limits
from cloche.node.templates import TemplateStore
from cloche.node.uids import UidAllocator
from cloche.snapshots import tree
from cloche.snapshots.store import SnapshotStore

OVERLAY_FLAGS = 0x2 | 0x4  # MS_NOSUID | MS_NODEV


class SandboxBuilder:
    """Builds, runs and removes sandboxes under the node's runtime directory `run`."""

    def __init__(self, *, run: Path, bin_dir: Path, init_path: Path, table: SandboxTable, records: RecordStore,
                 templates: TemplateStore, drivers: dict[str, OciDriver], network: NodeNetwork | None,
                 uids: UidAllocator, snapshots: SnapshotStore, disk_stock: disk.DiskStock,
                 cgroup_parent: str) -> None:  # fmt: skip
        self.run = run
        self.bin_dir = bin_dir
        self.init_path = init_path
        self.table = table
        self.records = records
        self.templates = templates
        self.drivers = drivers
        self.network = network
        self.uids = uids
        self.snapshots = snapshots
        self.disk_stock = disk_stock
        self.cgroup_parent = cgroup_parent
        self._swap = cgroups.swap_control()

    def driver(self, rec: SandboxRecord) -> OciDriver:
        driver = self.drivers.get(rec.spec.isolation)
        if driver is None:
            raise InvalidSpec(str(drivers.missing(rec.spec.isolation)))
        return driver

    def _drivers_of(self, sandbox_id: str) -> list[OciDriver]:
        """The driver of a known sandbox; every driver for a container without a record."""
        rec = self.table.records.get(sandbox_id)
        driver = self.drivers.get(rec.spec.isolation) if rec else None
        return [driver] if driver else list(self.drivers.values())

    def cgroup(self, sandbox_id: str) -> str:
        return f"{self.cgroup_parent}/{sandbox_id}"

    def set_limits(self, rec: SandboxRecord, limits: Limits) -> None:
        """Write a running sandbox's limits to its cgroup, as its driver has them on the host."""
        cgroups.manager(self.cgroup(rec.id)).set_limits(self.driver(rec).host_limits(limits))

    def provision_and_run(self, rec: SandboxRecord, fresh: bool) -> None:
        if fresh:
            self.records.save(rec)
        template = self.templates.get(rec.spec.template)
        limits = rec.spec.limits
        ddir = self.records.dir(rec.id)
        rdir = self.run / rec.id
        for sub in ("disk", "lower", "rootfs", "host"):
            (rdir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(rdir, 0o711)
        os.chmod(rdir / "host", 0o755)
        # The sandbox's root owns its host directory, so an agent can create its socket there.
        os.chown(rdir / "host", UidAllocator.base(rec.uid_index), UidAllocator.base(rec.uid_index))
        image = ddir / "disk.img"
        base = UidAllocator.base(rec.uid_index)
        upper, work = rdir / "disk" / "upper", rdir / "disk" / "work"
        if not image.exists():
            self._make_disk(rec, image, rdir / "disk")
        disk.mount_image(str(image), str(rdir / "disk"))
        if not upper.exists():
            _make_upper(upper, work, base)
        idmap.bind_shifted(str(self.init_path), template.rootfs, str(rdir / "lower"), base, UID_RANGE)
        linux.mount("overlay", str(rdir / "rootfs"), "overlay", OVERLAY_FLAGS,
                    f"lowerdir={rdir / 'lower'},upperdir={upper},workdir={work}")  # fmt: skip
        binds = list(template.binds)
        driver = self.driver(rec)
        driver.prepare(rdir, base)
        netns = rdir / "netns" if driver.network_before_start else None
        if netns is not None:
            links.make_netns(netns)
        if self.network:
            rec.net = self.network.prepare(rec.id, rdir).to_json()
            binds.append(HostBind(str(rdir / "resolv.conf"), "/etc/resolv.conf"))
            # for tools that read only the system store (curl's default, openssl, Go)
            if (Path(template.rootfs) / str(SYSTEM_BUNDLE).lstrip("/")).is_file():
                binds.append(HostBind(str(self.bin_dir / BUNDLE_NAME), str(SYSTEM_BUNDLE)))
        config = build_config(
            sandbox_id=rec.id,
            uid_base=base,
            limits=limits,
            bin_dir=str(self.bin_dir),
            host_dir=str(rdir / "host"),
            binds=binds,
            cgroup_path=self.cgroup(rec.id),
            swap_control=self._swap,
            isolation=rec.spec.isolation,
            bundle=rdir,
            netns=netns,
        )
        (rdir / "config.json").write_text(json.dumps(config))
        policy = None if rec.pooled else rec.spec.network
        if self.network and netns is not None:
            self.network.attach(rec.id, str(netns), policy)
        pid = driver.run(rec.id, rdir, rdir / "runc.log")
        if self.network and netns is None:
            self.network.attach(rec.id, f"/proc/{pid}/ns/net", policy)

    def _make_disk(self, rec: SandboxRecord, image: Path, mountpoint: Path) -> None:
        """A fresh disk image, filled from the record's snapshot when it has one. It only
        becomes disk.img once complete, so a crash leaves the previous state intact."""
        limits = rec.spec.limits
        tmp = image.with_name("disk.img.tmp")
        if not self.disk_stock.take(limits.disk_mb, limits.inode_count, tmp):
            disk.create_image(str(tmp), limits.disk_mb, limits.inode_count)
        if rec.snapshot:
            base = UidAllocator.base(rec.uid_index)
            disk.mount_image(str(tmp), str(mountpoint))
            try:
                _make_upper(mountpoint / "upper", mountpoint / "work", base)
                manifest = self.snapshots.get_manifest(rec.snapshot)
                tree.restore(manifest, mountpoint / "upper", base, self.snapshots)
            except BaseException:
                disk.unmount(str(mountpoint))
                tmp.unlink()
                raise
            disk.unmount(str(mountpoint))
        os.rename(tmp, image)

    def teardown(self, sandbox_id: str) -> None:
        """Remove the runtime half of a sandbox (container, network, mounts, bundle); keep its disk."""
        for driver in self._drivers_of(sandbox_id):
            driver.delete(sandbox_id)
        if self.network:
            self.network.detach(sandbox_id)
        rec = self.table.records.get(sandbox_id)
        if rec is not None:
            rec.net = None
        rdir = self.run / sandbox_id
        # Unmount by trying (not-mounted answers EINVAL): scanning the host's mount table
        # costs tens of ms once a node runs a thousand sandboxes.
        for sub in ("rootfs", "lower", "disk", "netns"):
            disk.unmount(str(rdir / sub))
        shutil.rmtree(rdir, ignore_errors=True)
        cgroups.remove_tree(self.cgroup(sandbox_id))

    def destroy(self, rec: SandboxRecord) -> None:
        """Everything of the sandbox goes: its runtime half, its disk and record, its uids."""
        self.teardown(rec.id)
        shutil.rmtree(self.records.dir(rec.id), ignore_errors=True)
        self.uids.release(rec.uid_index)


def _make_upper(upper: Path, work: Path, uid_base: int) -> None:
    upper.mkdir()
    os.chown(upper, uid_base, uid_base)
    os.chmod(upper, 0o755)
    work.mkdir()
