"""`cbr backup` builds the right BackupService requests, follows their tasks and reports honestly what happened,
checked against a recording fake of BackupService and TaskService that can answer what the real one rarely does
(a busy resource, a task whose progress field says 100 while it failed)."""
from __future__ import annotations

import asyncio
import re
import uuid
from typing import Callable

import grpc
import pytest

from cbr.backup.v1 import backup_pb2 as bp, backup_pb2_grpc, task_pb2 as tp, task_pb2_grpc
from cbr.common.v1 import common_pb2 as cp
from tests.integration.cli.conftest import one_error_line
from tests.integration.common.test_tls import pki  # noqa: F401  (a fixture: a CA, server and client certificates)

GIB = 1024**3
VAULT, CHECKPOINT, BACKUP, DISHONEST, STUCK_AT_ZERO = (str(uuid.uuid4()) for _ in range(5))
DISK, SERVER, FS, CHILD_1, CHILD_2, DISK_1, DISK_2 = (str(uuid.uuid4()) for _ in range(7))


def task(task_id: str, status: int, progress: int, done: int = 0, error: tp.TaskError | None = None) -> tp.Task:
    return tp.Task(task_id=task_id, operation_type=tp.OPERATION_TYPE_RESTORE, status=status, progress=progress,
                   bytes_done=done, bytes_total=GIB, resource_name="disk-1", error=error)


def succeeding(task_id: str) -> list[tp.Task]:
    return [task(task_id, tp.TASK_STATUS_WAITING, 0), task(task_id, tp.TASK_STATUS_RUNNING, 40, 400 * 2**20),
            task(task_id, tp.TASK_STATUS_SUCCESS, 100, GIB)]


def failing(task_id: str) -> list[tp.Task]:
    return [task(task_id, tp.TASK_STATUS_RUNNING, 10, 100 * 2**20),
            task(task_id, tp.TASK_STATUS_FAILED, 10, 100 * 2**20,
                 tp.TaskError(code="BackupService.6140", message="disk is attached to a server"))]


class Recorder:
    """Remembers each request with the metadata it came with."""

    def __init__(self):
        self.calls: list[tuple[str, object, dict[str, str]]] = []

    def record(self, method: str, request, context) -> None:
        self.calls.append((method, request, dict(context.invocation_metadata())))

    def last(self, method: str):
        return next(request for name, request, _ in reversed(self.calls) if name == method)


class FakeBackups(backup_pb2_grpc.BackupServiceServicer):
    def __init__(self, recorder: Recorder, scripts: dict[str, list[tp.Task]]):
        self.recorder, self.scripts = recorder, scripts
        self.backups: dict[str, bp.Backup] = {BACKUP: _backup(BACKUP, "nightly")}

    def _task(self, make: Callable[[str], list[tp.Task]]) -> str:
        task_id = str(uuid.uuid4())
        self.scripts[task_id] = make(task_id)
        return task_id

    async def CreateCheckpoint(self, request, context):
        """DISK is always busy; every other resource gets a backup that, once done, says it is a full one."""
        self.recorder.record("CreateCheckpoint", request, context)
        resources = []
        for rid in request.resource_ids:
            if rid == DISK:
                continue
            backup = bp.Backup(backup_id=str(uuid.uuid4()), resource_id=rid, resource_name=f"disk-{rid[:4]}",
                               resource_type=cp.OBJECT_TYPE_DISK, status=bp.BACKUP_STATUS_AVAILABLE,
                               incremental=False, logical_bytes=GIB, stored_bytes=GIB // 2, added_bytes=GIB // 4)
            self.backups[backup.backup_id] = backup
            resources.append(bp.CheckpointResource(resource_id=rid, type=cp.OBJECT_TYPE_DISK,
                                                   backup_id=backup.backup_id, task_id=self._task(succeeding)))
        skipped = [bp.SkippedResource(resource_id=DISK, type=cp.OBJECT_TYPE_DISK, name="disk-busy",
                                      code="BackupService.2002", reason="already being backed up")
                   for rid in request.resource_ids if rid == DISK]
        return bp.CreateCheckpointResponse(checkpoint=bp.Checkpoint(
            checkpoint_id=CHECKPOINT, vault_id=request.vault_id, name=request.name, resources=resources,
            status=bp.CHECKPOINT_STATUS_PROTECTING, incremental=True, skipped_resources=skipped))

    async def GetCheckpoint(self, request, context):
        self.recorder.record("GetCheckpoint", request, context)
        return bp.GetCheckpointResponse(checkpoint=bp.Checkpoint(checkpoint_id=request.checkpoint_id, vault_id=VAULT))

    async def ListBackups(self, request, context):
        self.recorder.record("ListBackups", request, context)
        return bp.ListBackupsResponse(backups=[_backup(BACKUP, "nightly")], count=7)

    async def GetBackup(self, request, context):
        self.recorder.record("GetBackup", request, context)
        if request.backup_id not in self.backups:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"backup {request.backup_id} not found")
        return bp.GetBackupResponse(backup=self.backups[request.backup_id])

    async def UpdateBackup(self, request, context):
        self.recorder.record("UpdateBackup", request, context)
        return bp.UpdateBackupResponse(backup=_backup(request.backup_id, request.name))

    async def DeleteBackup(self, request, context):
        self.recorder.record("DeleteBackup", request, context)
        return bp.DeleteBackupResponse(task_id=self._task(succeeding))

    async def RestoreBackup(self, request, context):
        self.recorder.record("RestoreBackup", request, context)
        if request.target_path == "refuse":  # a refusal that names request fields
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "a server backup restores to a server: set server_id and mappings; "
                                "target_path and mappings.backup_id")
        return bp.RestoreBackupResponse(task_id=self._task(failing))

    async def CreateDiskFromBackup(self, request, context):
        self.recorder.record("CreateDiskFromBackup", request, context)
        return bp.CreateDiskFromBackupResponse(disk_id=DISK_1, task_id=self._task(succeeding))

    async def VerifyBackups(self, request, context):
        self.recorder.record("VerifyBackups", request, context)
        return bp.VerifyBackupsResponse(task_id=self._task(succeeding))

    async def CollectGarbage(self, request, context):
        self.recorder.record("CollectGarbage", request, context)
        return bp.CollectGarbageResponse(task_id=self._task(succeeding))


class FakeTasks(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, scripts: dict[str, list[tp.Task]]):
        self.scripts = scripts
        # What issue 9 saw: a failed task whose progress field says 100, and one at 0 with all its bytes done.
        self.scripts[DISHONEST] = [task(DISHONEST, tp.TASK_STATUS_RUNNING, 100, GIB // 2),
                                   task(DISHONEST, tp.TASK_STATUS_FAILED, 100, GIB)]
        self.scripts[STUCK_AT_ZERO] = [task(STUCK_AT_ZERO, tp.TASK_STATUS_FAILED, 0, GIB)]

    async def WatchTask(self, request, context):
        for step in self.scripts[request.task_id]:
            yield tp.WatchTaskResponse(task=step)
            await asyncio.sleep(0.05)

    async def GetTask(self, request, context):
        return tp.GetTaskResponse(task=self.scripts[request.task_id][-1])


def _backup(backup_id: str, name: str) -> bp.Backup:
    return bp.Backup(backup_id=backup_id, name=name, vault_id=VAULT, resource_id=DISK, resource_name="disk-1",
                     resource_type=cp.OBJECT_TYPE_DISK, status=bp.BACKUP_STATUS_AVAILABLE, incremental=True,
                     logical_bytes=3 * GIB, stored_bytes=GIB, added_bytes=5 * 2**20)


async def serve_fake(credentials: grpc.ServerCredentials | None = None):
    recorder, scripts = Recorder(), {}
    server = grpc.aio.server()
    backup_pb2_grpc.add_BackupServiceServicer_to_server(FakeBackups(recorder, scripts), server)
    task_pb2_grpc.add_TaskServiceServicer_to_server(FakeTasks(scripts), server)
    port = (server.add_secure_port("127.0.0.1:0", credentials) if credentials
            else server.add_insecure_port("127.0.0.1:0"))
    await server.start()
    recorder.address = f"127.0.0.1:{port}"
    return server, recorder


@pytest.fixture
async def fake():
    server, recorder = await serve_fake()
    yield recorder
    await server.stop(grace=None)


@pytest.fixture
def cbr_fake(cbr, fake):
    return cbr.using(CBR_BACKUP_ADDR=fake.address)


async def test_create_requests_and_wait(cbr_fake, fake):
    shown, waited, default, old_spelling = await asyncio.gather(
        cbr_fake.ok("backup", "create", VAULT, DISK_1, SERVER, "--full", "--name", "before-upgrade",
                    "--description", "by hand", "--exclude", f"{SERVER}={DISK_1},{DISK_2}"),
        cbr_fake("backup", "create", VAULT, DISK_1, DISK_2, "--wait"),
        cbr_fake.json("backup", "create", VAULT),
        cbr_fake.json("backup", "create", VAULT, DISK_2))  # the old verb still works
    requests = {tuple(r.resource_ids): r for name, r, _ in fake.calls if name == "CreateCheckpoint"}
    full = requests[(DISK_1, SERVER)]
    assert (full.vault_id, full.name, full.description) == (VAULT, "before-upgrade", "by hand")
    assert full.HasField("incremental") and full.incremental is False
    assert list(full.resource_details) == [bp.ResourceDetail(resource_id=SERVER, type=cp.OBJECT_TYPE_SERVER,
                                                             exclude_volumes=[DISK_1, DISK_2])]
    assert not requests[()].HasField("incremental") and default["vault_id"] == VAULT
    assert old_spelling["checkpoint_id"] == CHECKPOINT
    assert all(metadata["authorization"] == f"Bearer {cbr_fake.settings['CBR_TOKEN']}"
               for _, _, metadata in fake.calls)
    assert CHECKPOINT in shown.stdout
    # The checkpoint's `incremental` is only what was asked for: the table leaves it to the backups.
    assert "incremental" not in shown.stdout

    assert waited.code == 0, str(waited)
    header, _, *rows = waited.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "VAULT", "RESOURCE", "TYPE", "STATUS", "SIZE", "STORED", "ADDED", "INCR",
                              "CREATED"]
    # What each backup says once done (a full one, what it added), not what the request asked for.
    assert [row.split()[5:13] for row in rows] == [
        ["available", "1.0", "GiB", "512.0", "MiB", "256.0", "MiB", "no"]] * 2, waited.stdout
    assert "100%" in waited.stderr and "1.0 GiB / 1.0 GiB" in waited.stderr
    assert re.search(r"\d+\.\d (KiB|MiB|GiB)/s", waited.stderr), waited.stderr  # the rate


async def test_create_that_skips_resources_is_not_success(cbr_fake, fake):
    """DISK is busy in the fake: backing up only it does nothing (exit 12); with another disk, one backup is made
    and the skip still makes the exit code 12, both reported; without --wait the same."""
    nothing, some, some_json, started = await asyncio.gather(
        cbr_fake("backup", "create", VAULT, DISK, "--wait"),
        cbr_fake("backup", "create", VAULT, DISK, DISK_1, "--wait"),
        cbr_fake("backup", "create", VAULT, DISK, DISK_2, "--wait", "--json"),
        cbr_fake("backup", "create", VAULT, DISK))
    skipped_line = f"skipped disk disk-busy ({DISK}): already being backed up [BackupService.2002]"
    assert nothing.code == 12, str(nothing)
    assert skipped_line in nothing.stderr
    assert nothing.stderr.strip().splitlines()[-1] == (
        "error: nothing backed up: every resource was skipped (1, see above)")

    assert some.code == 12, str(some)
    assert skipped_line in some.stderr and "100%" in some.stderr
    assert some.stderr.strip().splitlines()[-1] == (
        f"error: 1 of 2 resources skipped (see above); 1 backed up by checkpoint {CHECKPOINT}")
    assert f"disk-{DISK_1[:4]}" in some.stdout and "available" in some.stdout
    assert some_json.code == 12 and some_json.json()["count"] == 1
    assert some_json.json()["items"][0]["resource_id"] == DISK_2

    assert started.code == 12 and skipped_line in started.stderr and "already being backed up" in started.stdout


async def test_list_get_update(cbr_fake, fake):
    listed, shown, checkpoint, renamed, nothing, missing = await asyncio.gather(
        cbr_fake.ok("backup", "list", "--vault", VAULT, "--resource", DISK, "--type", "disk", "--status", "available",
                    "--status", "error", "--image-type", "replication", "--since", "2024-05-01T00:00:00Z",
                    "--until", "2024-06-01T12:30:00+02:00", "--name", "night", "--checkpoint", CHECKPOINT,
                    "--parent", BACKUP, "--sort", "name:asc", "--limit", "5", "--offset", "10"),
        cbr_fake.ok("backup", "show", BACKUP),
        cbr_fake.json("backup", "show-checkpoint", CHECKPOINT),
        cbr_fake.json("backup", "update", BACKUP, "--name", "renamed"),
        cbr_fake("backup", "update", BACKUP),
        cbr_fake("backup", "show", DISK))
    request = fake.last("ListBackups")
    assert (request.vault_id, request.resource_id, request.resource_type) == (VAULT, DISK, cp.OBJECT_TYPE_DISK)
    assert list(request.status) == [bp.BACKUP_STATUS_AVAILABLE, bp.BACKUP_STATUS_ERROR]
    assert request.image_type == bp.IMAGE_TYPE_REPLICATION
    assert request.start_time.ToJsonString() == "2024-05-01T00:00:00Z"
    assert request.end_time.ToJsonString() == "2024-06-01T10:30:00Z"
    assert (request.name, request.checkpoint_id, request.parent_id, request.sort) == (
        "night", CHECKPOINT, BACKUP, "name:asc")
    assert (request.page.limit, request.page.offset) == (5, 10)
    row = next(line for line in listed.stdout.splitlines() if BACKUP[:8] in line)
    # The fake's vault is not the vault service's: the table falls back to its short id.
    assert row.split()[1:6] == ["nightly", VAULT[:8], "disk-1", "disk", "available"]
    # SIZE, STORED (what it references), ADDED (what it added to the vault): an incremental looks small.
    assert row.split()[6:12] == ["3.0", "GiB", "1.0", "GiB", "5.0", "MiB"], listed.stdout
    assert "1 of 7" in listed.stdout

    assert "3.0 GiB (3221225472 bytes)" in shown.stdout
    assert any(line.split()[:3] == ["added_bytes", "5.0", "MiB"] for line in shown.stdout.splitlines()), shown.stdout
    assert checkpoint["checkpoint_id"] == CHECKPOINT
    update = fake.last("UpdateBackup")
    assert update.HasField("name") and not update.HasField("description") and renamed["name"] == "renamed"
    assert nothing.code == 2
    assert missing.code == 4 and one_error_line(missing) == f"error: NOT_FOUND: backup {DISK} not found"


async def test_restore_requests_and_a_failed_task(cbr_fake, fake):
    server, fs, disk = await asyncio.gather(
        cbr_fake("backup", "restore", BACKUP, "--server", SERVER, "--map", f"{CHILD_1}={DISK_1}",
                 "--map", f"{CHILD_2}={DISK_2}", "--no-power-on", "--wait"),
        cbr_fake.json("backup", "restore", BACKUP, "--file-system", FS, "--target-path", "restored/here",
                      "--new-directory"),
        cbr_fake.ok("backup", "restore", BACKUP, "--disk", DISK))
    requests = {r.server_id or r.file_system_id or r.volume_id: r for name, r, _ in fake.calls
                if name == "RestoreBackup"}
    mapped, tree = requests[SERVER], requests[FS]
    assert [(m.backup_id, m.volume_id) for m in mapped.mappings] == [(CHILD_1, DISK_1), (CHILD_2, DISK_2)]
    assert mapped.HasField("power_on") and mapped.power_on is False
    assert (tree.target_path, tree.new_directory, tree.HasField("power_on")) == ("restored/here", True, False)
    assert requests[DISK].volume_id == DISK and "restoring backup" in disk.stdout
    assert set(fs) == {"task_id"}

    assert server.code == 11, str(server)
    error = server.stderr.strip().splitlines()[-1]
    assert error.startswith("error: task ") and error.endswith(
        " failed (BackupService.6140): disk is attached to a server"), server.stderr
    assert "failed" in server.stdout and "100.0 MiB / 1.0 GiB" in server.stderr


async def test_progress_never_says_done_for_a_task_that_is_not(cbr_fake):
    """The percent comes from the bytes when known, and a task that did not succeed never shows 100%, whatever
    its progress field says."""
    watched, stuck, listed, shown, as_json = await asyncio.gather(
        cbr_fake("task", "watch", DISHONEST), cbr_fake("task", "watch", STUCK_AT_ZERO),
        cbr_fake.ok("task", "show", DISHONEST), cbr_fake.ok("task", "show", STUCK_AT_ZERO),
        cbr_fake.json("task", "show", DISHONEST))
    for result in (watched, stuck):
        assert result.code == 11, str(result)
        assert "100%" not in result.stderr and "99%" in result.stderr and "1.0 GiB / 1.0 GiB" in result.stderr
        assert "failed" in result.stderr
    for result in (listed, shown):
        assert any(line.split()[:2] == ["progress", "99%"] for line in result.stdout.splitlines()), result.stdout
    assert as_json["progress"] == 100  # --json is the service's answer as it is


async def test_old_spellings_and_refusals_in_flags(cbr_fake, fake):
    old, refused, malformed, size_unit = await asyncio.gather(
        cbr_fake.ok("backup", "restore", BACKUP, "--fs", FS, "--volume", DISK),
        cbr_fake("backup", "restore", BACKUP, "--target-path", "refuse"),
        cbr_fake("backup", "restore", BACKUP, "--disk", " "),
        cbr_fake("backup", "create-disk", BACKUP, "--size", "10X"))
    restores = [(r.file_system_id, r.volume_id) for name, r, _ in fake.calls if name == "RestoreBackup"]
    assert (FS, DISK) in restores and "restoring backup" in old.stdout
    assert refused.code == 3 and one_error_line(refused) == (
        "error: INVALID_ARGUMENT: a server backup restores to a server: set --server and --map; "
        "--target-path and --map CHILD_BACKUP_ID")
    assert malformed.code == 2
    assert "argument --disk: expected a disk's name or id, got an empty string" in malformed.stderr
    assert size_unit.code == 2 and "argument --size: not a size: '10X'" in size_unit.stderr


async def test_delete_and_create_disk(cbr_fake, fake):
    deleted, created, waited = await asyncio.gather(
        cbr_fake.json("backup", "delete", BACKUP, "--wait"),
        cbr_fake.ok("backup", "create-disk", BACKUP, "--name", "copy", "--size", "10G"),
        cbr_fake("backup", "create-disk", BACKUP, "--name", "waited", "--wait"))
    assert deleted["status"] == "TASK_STATUS_SUCCESS"
    assert fake.last("DeleteBackup").backup_id == BACKUP
    sizes = sorted((r.name, r.size_bytes) for name, r, _ in fake.calls if name == "CreateDiskFromBackup")
    assert sizes == [("copy", 10 * GIB), ("waited", 0)]
    assert f"disk {DISK_1} created" in created.stdout
    assert waited.code == 0 and f"disk {DISK_1}" in waited.stderr


async def test_verify_and_gc_requests(cbr_fake, fake):
    verified, everything, collected, at_once = await asyncio.gather(
        cbr_fake.ok("backup", "verify", VAULT, "--backup-id", BACKUP, "--backup-id", CHILD_1, "--wait"),
        cbr_fake.json("backup", "verify", VAULT),
        cbr_fake.ok("backup", "gc", VAULT),
        cbr_fake.json("backup", "gc", VAULT, "--grace-seconds", "0", "--wait"))
    verifies = sorted((list(r.backup_ids) for name, r, _ in fake.calls if name == "VerifyBackups"), key=len)
    assert verifies == [[], [BACKUP, CHILD_1]]
    assert {r.vault_id for name, r, _ in fake.calls if name in ("VerifyBackups", "CollectGarbage")} == {VAULT}
    graces = sorted((r.HasField("grace_seconds"), r.grace_seconds) for name, r, _ in fake.calls
                    if name == "CollectGarbage")
    assert graces == [(False, 0), (True, 0)]  # unset means the service's default, 0 means none
    assert "success" in verified.stdout and "100%" in verified.stderr
    assert set(everything) == {"task_id"} and at_once["status"] == "TASK_STATUS_SUCCESS"
    assert collected.stdout.startswith(f"collecting garbage in vault {VAULT}: task ")


async def test_every_backup_service_call_has_a_command(cbr):
    """The help of `cbr backup` lists a command for each BackupService call; a new RPC needs a new command."""
    commands = {"CreateCheckpoint": "create", "GetCheckpoint": "show-checkpoint", "ListBackups": "list",
                "GetBackup": "show", "UpdateBackup": "update", "DeleteBackup": "delete", "RestoreBackup": "restore",
                "CreateDiskFromBackup": "create-disk", "VerifyBackups": "verify", "CollectGarbage": "gc",
                "GetBackupImageRange": "dump", "ListBackupTree": "ls", "GetBackupFile": "dump"}
    assert set(commands) == set(bp.DESCRIPTOR.services_by_name["BackupService"].methods_by_name)
    helps = await asyncio.gather(*(cbr.ok("backup", command, "--help") for command in commands.values()))
    assert all(result.stdout.startswith(f"usage: cbr backup {command} ")
               for command, result in zip(commands.values(), helps))


async def test_mutual_tls(cbr, pki):  # noqa: F811
    def read(name: str) -> bytes:
        with open(pki[name], "rb") as file:
            return file.read()
    credentials = grpc.ssl_server_credentials([(read("server_key"), read("server_cert"))],
                                              root_certificates=read("ca"), require_client_auth=True)
    server, recorder = await serve_fake(credentials)
    try:
        tls = cbr.using(CBR_BACKUP_ADDR=recorder.address, CBR_TLS_CA=pki["ca"])
        trusted, anonymous, plain = await asyncio.gather(
            tls.using(CBR_TLS_CERT=pki["client_cert"], CBR_TLS_KEY=pki["client_key"]).json("backup", "show", BACKUP),
            tls("backup", "show", BACKUP, "--timeout", "5"),
            cbr.using(CBR_BACKUP_ADDR=recorder.address)("backup", "show", BACKUP, "--timeout", "5"))
        assert trusted["backup_id"] == BACKUP
        assert anonymous.code == 9 and one_error_line(anonymous).startswith("error: UNAVAILABLE")
        assert plain.code == 9
        half = await tls.using(CBR_TLS_CERT=pki["client_cert"])("backup", "show", BACKUP)
        assert half.code == 2 and "CBR_TLS_KEY" in one_error_line(half)
    finally:
        await server.stop(grace=None)
