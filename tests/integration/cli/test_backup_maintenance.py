"""`cbr backup verify|gc|show|restore` against the real backup service and worker, on backups the CLI made:
verification that finds a damaged chunk, garbage collection that keeps what backups use, the fields `show`
shows, and --map mistakes with the exit codes the CLI promises (2 for what does not parse, 3 for what the
service refuses)."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from tests.integration.cli.conftest import one_error_line
from tests.support.backups import sha256_file, write_disk

BACKUP_WAIT = 60  # seconds a `--wait` of a small backup or restore may take on a busy machine


async def backed_up_disk(cbr, name: str, seed: int) -> tuple[dict, str, str]:
    """A disk with data in a vault of its own, backed up once through the CLI: (disk, vault_id, backup_id)."""
    disk = await cbr.json("disk", "create", name, "--size", "4M")
    write_disk(disk["path"], seed, chunks=4, chunk=128 * 1024)
    vault = await cbr.json("vault", "create", f"{name}-vault", "--type", "disk", "--size", "1G",
                           "--resource", disk["resource_id"])
    made = await cbr.json("backup", "create", vault["vault_id"], "--wait", timeout=BACKUP_WAIT)
    assert made["count"] == 1 and made["items"][0]["status"] == "BACKUP_STATUS_AVAILABLE", made
    return disk, vault["vault_id"], made["items"][0]["backup_id"]


def chunk_files(services, vault_id: str) -> list:
    """The vault's pack files in the file-system chunk store the test services share."""
    return sorted(path for path in (services.infra.base / "store" / vault_id / "packs").rglob("*")
                  if path.is_file())


async def test_verify_finds_a_damaged_chunk(cbr, services):
    disk, vault_id, backup_id = await backed_up_disk(cbr, "verified", seed=11)
    _, other_vault, other_backup = await backed_up_disk(cbr, "other", seed=12)

    clean = await cbr.json("backup", "verify", vault_id, "--wait", timeout=BACKUP_WAIT)
    assert (clean["status"], clean["operation_type"]) == ("TASK_STATUS_SUCCESS", "OPERATION_TYPE_VERIFY")
    assert int(clean["extra_info"]["checked_chunks"]) > 0 and clean["extra_info"]["bad_chunks"] == "0"
    shown, as_json = await asyncio.gather(cbr.ok("backup", "show", backup_id), cbr.json("backup", "show", backup_id))
    assert as_json["verified_time"] and as_json["corrupt"] is False
    assert any(line.split()[:2] == ["corrupt", "no"] for line in shown.stdout.splitlines()), shown.stdout
    assert "verified_time" in shown.stdout

    damaged = chunk_files(services, vault_id)[0]
    damaged.write_bytes(b"not the chunk that was written" + damaged.read_bytes()[30:])  # a pack's first chunk
    found = await cbr.json("backup", "verify", vault_id, "--backup-id", backup_id, "--wait", timeout=BACKUP_WAIT)
    assert found["status"] == "TASK_STATUS_SUCCESS"  # the task did its job: it found the damage
    assert (found["extra_info"]["bad_chunks"], found["extra_info"]["corrupt_backups"]) == ("1", backup_id)

    shown, listed, restore, untouched = await asyncio.gather(
        cbr.ok("backup", "show", backup_id), cbr.ok("backup", "list", "--vault", vault_id),
        cbr("backup", "create-disk", backup_id, "--name", "from-corrupt", "--wait"),
        cbr.json("backup", "show", other_backup))
    assert any(line.split()[:2] == ["corrupt", "yes"] for line in shown.stdout.splitlines()), shown.stdout
    assert "available (corrupt)" in listed.stdout
    assert restore.code == 10 and one_error_line(restore).startswith("error: DATA_LOSS (BackupService.6750)")
    assert untouched["corrupt"] is False and "verified_time" not in untouched  # another vault's backup

    started = await cbr.ok("backup", "verify", other_vault)  # without --wait: the task to watch
    assert started.stdout.startswith(f"verifying vault {other_vault}: task ")
    task_id = started.stdout.split()[-1]
    watched = await cbr.json("task", "watch", task_id, timeout=BACKUP_WAIT)
    assert watched["status"] == "TASK_STATUS_SUCCESS" and watched["vault_id"] == other_vault


async def test_verify_refuses_backups_it_cannot_check(cbr):
    _, vault_id, _ = await backed_up_disk(cbr, "mine", seed=13)
    _, _, elsewhere = await backed_up_disk(cbr, "elsewhere", seed=14)
    malformed, foreign, no_vault, no_argument = await asyncio.gather(
        cbr("backup", "verify", vault_id, "--backup-id", "not-a-uuid"),
        cbr("backup", "verify", vault_id, "--backup-id", elsewhere),
        cbr("backup", "verify", str(uuid.uuid4())),
        cbr("backup", "verify"))
    assert malformed.code == 4 and "no backup named 'not-a-uuid'" in malformed.stderr
    assert foreign.code == 4 and f"not in vault {vault_id}" in one_error_line(foreign)
    assert no_vault.code == 4 and one_error_line(no_vault).startswith("error: NOT_FOUND")
    assert no_argument.code == 2 and "required: VAULT_ID" in no_argument.stderr


async def test_gc_keeps_what_backups_use(cbr):
    disk, vault_id, backup_id = await backed_up_disk(cbr, "collected", seed=15)
    image = sha256_file(disk["path"])

    now = dt.datetime.now(dt.timezone.utc)
    at_once, default = await asyncio.gather(
        cbr.json("backup", "gc", vault_id, "--grace-seconds", "0", "--wait", timeout=BACKUP_WAIT),
        cbr.json("backup", "gc", vault_id, "--wait", timeout=BACKUP_WAIT))
    for task in (at_once, default):
        assert (task["status"], task["operation_type"]) == ("TASK_STATUS_SUCCESS", "OPERATION_TYPE_GC"), task
        assert task["extra_info"]["deleted_chunks"] == "0" and task["vault_id"] == vault_id
    # The cutoff shows the grace the service used: none when asked for 0, its default (a day) when not given.
    assert abs(dt.datetime.fromisoformat(at_once["extra_info"]["cutoff"]) - now) < dt.timedelta(minutes=5)
    assert dt.datetime.fromisoformat(default["extra_info"]["cutoff"]) < now - dt.timedelta(hours=23)

    created = await cbr("backup", "create-disk", backup_id, "--name", "after-gc", "--wait", "--json",
                        timeout=BACKUP_WAIT)
    assert created.code == 0, str(created)
    new_disk_id = created.stderr.split("disk ", 1)[1].split()[0]  # --wait names the new disk first
    restored = await cbr.json("disk", "show", new_disk_id)
    assert sha256_file(restored["path"]) == image

    started, negative, words, unknown = await asyncio.gather(
        cbr.ok("backup", "gc", vault_id, "--grace-seconds", "3600"),
        cbr("backup", "gc", vault_id, "--grace-seconds", "-1"),
        cbr("backup", "gc", vault_id, "--grace-seconds", "an hour"),
        cbr("backup", "gc", str(uuid.uuid4())))
    assert started.stdout.startswith(f"collecting garbage in vault {vault_id}: task ")
    assert negative.code == 2 and "must not be negative" in negative.stderr
    assert words.code == 2 and "not a whole number" in words.stderr
    assert unknown.code == 4 and one_error_line(unknown).startswith("error: NOT_FOUND")


async def test_server_restore_with_maps_and_map_mistakes(cbr):
    disks = await asyncio.gather(*(cbr.json("disk", "create", f"srv-disk-{i}", "--size", "2M") for i in range(2)))
    for seed, disk in enumerate(disks, start=21):
        write_disk(disk["path"], seed, chunks=2, chunk=64 * 1024)
    images = [sha256_file(disk["path"]) for disk in disks]
    server = await cbr.json("server", "create", "srv", *(d["resource_id"] for d in disks))
    vault = await cbr.json("vault", "create", "srv-vault", "--type", "server", "--size", "1G",
                           "--resource", server["resource_id"])
    made = await cbr.json("backup", "create", vault["vault_id"], "--wait", timeout=BACKUP_WAIT)
    parent = await cbr.json("backup", "show", made["items"][0]["backup_id"])
    children = {child["resource_id"]: child["backup_id"] for child in parent["children"]}
    assert set(children) == {d["resource_id"] for d in disks}

    shown, child = await asyncio.gather(cbr.ok("backup", "show", parent["backup_id"]),
                                        cbr.json("backup", "show", children[disks[1]["resource_id"]]))
    assert "children" in shown.stdout and all(child_id in shown.stdout for child_id in children.values())
    assert (child["device"], child["parent_id"]) == ("vdb", parent["backup_id"])

    for seed, disk in enumerate(disks, start=31):
        write_disk(disk["path"], seed, chunks=2, chunk=64 * 1024)
    maps = [arg for disk_id, child_id in children.items() for arg in ("--map", f"{child_id}={disk_id}")]
    restored = await cbr("backup", "restore", parent["backup_id"], *maps, "--no-power-on", "--wait",
                         timeout=BACKUP_WAIT)
    assert restored.code == 0, str(restored)
    assert [sha256_file(disk["path"]) for disk in disks] == images

    disk_id, child_id = next(iter(children.items()))
    no_equals, no_child, no_disk, disk_backup, bad_id = await asyncio.gather(
        cbr("backup", "restore", parent["backup_id"], "--map", child_id),
        cbr("backup", "restore", parent["backup_id"], "--map", f"={disk_id}"),
        cbr("backup", "restore", parent["backup_id"], "--map", f"{child_id}="),
        cbr("backup", "restore", child_id, "--map", f"{child_id}={disk_id}"),
        cbr("backup", "restore", parent["backup_id"], "--map", f"not-a-uuid={disk_id}"))
    for parse_error in (no_equals, no_child, no_disk):  # refused by the CLI, before any call
        assert parse_error.code == 2 and "argument --map: expected CHILD_BACKUP_ID=DISK_ID" in parse_error.stderr, \
            str(parse_error)
    assert bad_id.code == 4 and "no backup named 'not-a-uuid'" in bad_id.stderr, str(bad_id)
    # Parsed, and refused by the service: the message names the flag, not the request field.
    assert disk_backup.code == 3 and one_error_line(disk_backup).startswith("error: INVALID_ARGUMENT"), str(disk_backup)
    assert "BackupService.6704" in disk_backup.stderr
