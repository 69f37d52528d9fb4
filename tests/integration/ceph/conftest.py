"""A service stack of its own whose disks are RBD images of the session's Ceph cluster (CBR_PROVIDER=ceph), and
the means to write and read those images as a VM would (another librados client)."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import uuid

import pytest

from tests.support.services import Services, settings_for
from tests.support.stack import Infra

MIB = 1 << 20


@dataclasses.dataclass
class RbdStack:
    services: Services
    ceph: object
    namespace_template: str

    def settings_changes(self) -> dict:
        return dict(provider="ceph", ceph_conf=self.ceph.conf_path, rbd_pool=self.ceph.pool,
                    rbd_namespace=self.namespace_template)

    def worker_env(self, **overrides) -> dict:
        """The environment of a worker process on this stack (CBR_PROVIDER=ceph and the cluster)."""
        return self.services.worker_env(CBR_PROVIDER="ceph", CBR_CEPH_CONF=self.ceph.conf_path,
                                        CBR_RBD_POOL=self.ceph.pool, CBR_RBD_NAMESPACE=self.namespace_template,
                                        **overrides)

    async def start_worker(self, **changes):
        return await self.services.start_worker(**self.settings_changes(), **changes)

    @contextlib.contextmanager
    def ioctx(self, project_id: str):
        handle = self.ceph.rados()
        ioctx = handle.open_ioctx(self.ceph.pool)
        ioctx.set_namespace(self.namespace_template.format(project=project_id))
        try:
            yield ioctx
        finally:
            ioctx.close()
            handle.shutdown()

    @contextlib.contextmanager
    def image(self, project_id: str, name: str, read_only: bool = False):
        """The image opened by a client of its own (as a VM holds it; a write takes the exclusive lock)."""
        import rbd

        with self.ioctx(project_id) as ioctx, rbd.Image(ioctx, name, read_only=read_only) as image:
            yield image

    def fill(self, project_id: str, name: str, offset: int, length: int, seed: int) -> None:
        rng = random.Random(seed)
        with self.image(project_id, name) as image:
            for start in range(offset, offset + length, MIB):
                image.write(rng.randbytes(min(MIB, offset + length - start)), start)
            image.flush()

    def sha256(self, project_id: str, name: str) -> str:
        digest = hashlib.sha256()
        with self.image(project_id, name, read_only=True) as image:
            size = image.size()
            for start in range(0, size, 4 * MIB):
                digest.update(image.read(start, min(4 * MIB, size - start)))
        return digest.hexdigest()

    def snapshots(self, project_id: str, name: str) -> list[str]:
        """CBR's snapshots of the image, and its group ("" when in none)."""
        with self.image(project_id, name, read_only=True) as image:
            return sorted(s["name"] for s in image.list_snaps() if s["name"].startswith("cbr-"))

    def groups(self, project_id: str) -> list[str]:
        import rbd

        with self.ioctx(project_id) as ioctx:
            return list(rbd.RBD().group_list(ioctx))


@pytest.fixture(scope="package")
async def rbd_stack(ceph):
    """Postgres, NATS, the services with CBR_PROVIDER=ceph and no worker (tests start theirs: in this loop with
    rbd_worker, or as processes to kill)."""
    infra = Infra.start()
    template = f"e{uuid.uuid4().hex[:8]}-{{project}}"
    try:
        from cbr_backup.bootstrap import start as start_backup
        from cbr_devstack.ports import free_port
        from cbr_policy.bootstrap import start as start_policy
        from cbr_vault.bootstrap import start as start_vault
        import grpc

        names = ("backup", "policy", "vault")
        peers = {name: f"127.0.0.1:{free_port()}" for name in names}
        changes = dict(provider="ceph", ceph_conf=ceph.conf_path, rbd_pool=ceph.pool, rbd_namespace=template)
        runtimes = {}
        for name, start in zip(names, (start_backup, start_policy, start_vault)):
            settings = settings_for(infra, name, peers, listen_addr=peers[name])
            runtimes[name] = await start(dataclasses.replace(settings, **changes) if name == "backup" else settings)
        channels = {name: grpc.aio.insecure_channel(rt.address) for name, rt in runtimes.items()}
        services = Services(runtimes, channels, infra.jwt_secret, infra, peers)
        yield RbdStack(services, ceph, template)
        await services.stop()
    finally:
        infra.stop()


@pytest.fixture
async def rbd_worker(rbd_stack):
    """One in-process worker on RBD for the test."""
    worker = await rbd_stack.start_worker()
    try:
        yield worker
    finally:
        await rbd_stack.services.stop_workers()


@pytest.fixture
def rbd_caller(rbd_stack):
    return rbd_stack.services.caller()
