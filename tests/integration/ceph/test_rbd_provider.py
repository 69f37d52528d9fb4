"""The RBD provider as deploy/ceph.md sets it up: a cephx user of its own with `profile rbd` on the pool, named by
CBR_CEPH_CLIENT and CBR_CEPH_KEYRING, can do everything the provider does (namespaces, images, user and group
snapshots, diffs, restore points)."""
from __future__ import annotations

import dataclasses
import uuid

from cbr_backup.bootstrap import provider_for
from cbr_common.settings import Settings

MIB = 1 << 20


async def test_a_user_with_profile_rbd_runs_the_provider(ceph, tmp_path):
    client = f"client.cbr-{uuid.uuid4().hex[:8]}"
    keyring = tmp_path / "keyring"
    keyring.write_text(ceph.cluster.admin("auth", "get-or-create", client, "mon", "profile rbd",
                                          "osd", f"profile rbd pool={ceph.pool}", "mgr", f"profile rbd pool={ceph.pool}"))
    settings = Settings(service="worker", database_url="postgresql+psycopg://x/y", nats_url="nats://x",
                        jwt_secret="s", pool_dir=str(tmp_path / "pool"), fs_root=str(tmp_path / "fs"))
    settings = dataclasses.replace(settings, provider="ceph", ceph_conf=ceph.conf_path, ceph_client=client,
                                   ceph_keyring=str(keyring), rbd_pool=ceph.pool,
                                   rbd_namespace=f"k{uuid.uuid4().hex[:8]}-{{project}}")
    provider = provider_for(settings)
    project, disks = "project-keyring", [str(uuid.uuid4()), str(uuid.uuid4())]
    try:
        for disk_id in disks:
            await provider.create_disk(project, disk_id, 8 * MIB)
        names = {str(uuid.uuid4()): d for d in disks}
        snapshots = await provider.snapshot_disks(project, names)  # two images: anchors and a group snapshot
        for snapshot in snapshots.values():
            reader = await provider.open_snapshot(snapshot)
            reader.close()
        first = min(names)
        again = (await provider.snapshot_disks(project, {str(uuid.uuid4()): names[first]}))
        assert await provider.changed_extents(project, next(iter(again.values())), first) == []  # nothing written
        point = await provider.restore_point(project, disks[0], str(uuid.uuid4()))
        await point.release()
        for disk_id in disks:
            await provider.delete_disk(project, disk_id)
            assert await provider.snapshot_names(project, disk_id) == []
        # the file systems stay with the local provider beside it
        fs_path = await provider.create_file_system(project, str(uuid.uuid4()))
        assert fs_path.startswith(str(tmp_path / "fs"))
    finally:
        provider.close()
