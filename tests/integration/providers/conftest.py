"""Providers on real file systems: one XFS (reflinks) and one ext4 (none) loop mount per session, and a
private service stack whose pool is on the XFS mount."""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from cbr_backup.providers.local import LocalProvider
from tests.support.loop_mounts import loop_file_system
from tests.support.services import Services
from tests.support.stack import Infra

GIB = 1024 ** 3


@pytest.fixture(scope="session")
def loop_base():
    base = Path(tempfile.mkdtemp(prefix="cbr-loop-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def xfs_mount(loop_base):
    with loop_file_system("xfs", loop_base / "xfs", 8 * GIB) as mount_point:
        yield mount_point


@pytest.fixture(scope="session")
def ext4_mount(loop_base):
    with loop_file_system("ext4", loop_base / "ext4", 2 * GIB) as mount_point:
        yield mount_point


@pytest.fixture(scope="session")
def rbd_images(ceph):
    from cbr_backup.providers.rbd_images import RbdImages

    # a namespace template of the session's own: the tests' fixed project ids never meet another run's images
    with RbdImages(ceph.conf_path, pool=ceph.pool, namespace=f"s{uuid.uuid4().hex[:8]}-{{project}}") as images:
        yield images


@pytest.fixture(params=["ext4", "xfs", "rbd"])
def provider(request):
    """A provider on the parametrised kind of storage: a local provider whose pool is a fresh folder on an ext4
    or XFS loop mount, or the RBD provider on the session's Ceph cluster; `kind` names it."""
    if request.param == "rbd":
        from cbr_backup.providers.rbd import RbdProvider

        provider = RbdProvider(request.getfixturevalue("rbd_images"))
        provider.kind = "rbd"
        yield provider
        return
    root = request.getfixturevalue(f"{request.param}_mount") / f"t-{uuid.uuid4().hex[:12]}"
    provider = LocalProvider(root / "pool", root / "fs")
    provider.prepare()
    provider.kind = request.param
    yield provider
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def xfs_services(xfs_mount):
    """Services and a worker of their own (own Postgres and NATS: the session's worker must not take these
    jobs) with the pool, file systems and store on the XFS mount."""
    infra = Infra.start()
    base = xfs_mount / "stack"
    base.mkdir()
    services = await Services.start(dataclasses.replace(infra, base=base))
    yield services
    await services.stop()
    infra.stop()

