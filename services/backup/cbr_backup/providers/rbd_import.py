"""Registers a project's existing RBD images (an operator's volumes, made before CBR came) as its disks, so
they are listed as protectables and can be backed up and restored like disks CBR made.

    python -m cbr_backup.providers.rbd_import PROJECT_ID...   (with the backup service's CBR_* settings)

Each image keeps its name and data; it gets the metadata `cbr.disk_id` (DESIGN.md 15.1) and a disk row of that
id. Running it again imports only images that have no disk row yet (a crash between the two is finished then).
"""
from __future__ import annotations

import asyncio
import sys

from cbr_backup.domain import rules
from cbr_backup.domain.model import Disk
from cbr_common.db import utcnow


async def import_images(provider, make_uow, project_id: str) -> list[Disk]:
    """The disks added for the project's images that had none; their names are the images' where valid."""
    rules.check_project_folder(project_id)
    added = []
    for name in await asyncio.to_thread(provider.foreign_images, project_id):
        disk_id, size = await asyncio.to_thread(provider.register_image, project_id, name)
        async with make_uow() as uow:
            if await uow.inventory.get_disk(project_id, disk_id) is not None:
                continue
            disk = Disk(disk_id=disk_id, project_id=project_id, name=_disk_name(name, disk_id), size_bytes=size,
                        path=await asyncio.to_thread(provider.locator, project_id, disk_id),
                        created_time=utcnow())
            await uow.inventory.add_disk(disk)
            await uow.commit()
        added.append(disk)
    return added


def _disk_name(image: str, disk_id: str) -> str:
    try:
        return rules.check_name(image)
    except Exception:  # noqa: BLE001 - a name CBR cannot show: one made from the id
        return f"rbd-{disk_id[:8]}"


async def _main(project_ids: list[str]) -> None:
    from cbr_backup.adapters.tables import metadata
    from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
    from cbr_backup.bootstrap import provider_for
    from cbr_common.settings import Settings, SettingsError

    settings = Settings.from_env("backup")
    if settings.provider != "ceph":
        raise SettingsError("CBR_PROVIDER=ceph is needed to import RBD images")
    provider = provider_for(settings)
    db = settings.database(metadata.schema, pool_size=2)
    try:
        for project_id in project_ids:
            for disk in await import_images(provider, lambda: BackupUnitOfWork(db), project_id):
                print(f"{project_id}\t{disk.disk_id}\t{disk.name}\t{disk.size_bytes}")
    finally:
        await db.close()
        provider.close()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    asyncio.run(_main(sys.argv[1:]))
