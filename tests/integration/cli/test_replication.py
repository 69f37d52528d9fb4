"""`cbr replication` against a real source region (tests/integration/replication/conftest.py): replicate a backup
or a vault, follow a record with --wait while its task updates arrive, list, show, capabilities, refusals."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from cbr.replication.v1 import replication_pb2 as rp
from tests.integration.cli.conftest import Cbr, one_error_line
from tests.integration.replication.conftest import REGION_B, source, source_region  # noqa: F401 (fixtures)
from tests.support.services import eventually
from tests.support.workers import without_shared_workers

DIGEST = bytes(range(32))


@pytest.fixture
async def cbr(source_region, source, tmp_path):  # noqa: F811
    """The command as the source project's user, against region-a. No worker runs the replication tasks the
    backup service makes: the tests play their updates."""
    addresses = {f"CBR_{name.upper()}_ADDR": runtime.address
                 for name, runtime in source_region.services.runtimes.items()}
    async with without_shared_workers(source_region.services):
        yield Cbr({**addresses, "CBR_TOKEN": source_region.services.token(source.caller.project_id)}, tmp_path,
                  source.caller.project_id)


def destination(vault_id: str | None = None) -> list[str]:
    return ["--to-region", REGION_B, "--to-project", "project-b", "--to-vault", vault_id or str(uuid.uuid4())]


async def test_capabilities(cbr):
    table, as_json = await asyncio.gather(cbr.ok("replication", "capabilities"),
                                          cbr.json("replication", "capabilities"))
    header, _, row, *_ = table.stdout.splitlines()
    assert header.split() == ["REGION", "REPLICATES", "TO"]
    assert row.split() == ["region-a", "region-b,", "region-c,", "region-d"]
    assert as_json == {"items": [{"name": "region-a", "replication_destinations": ["region-b", "region-c",
                                                                                     "region-d"]}], "count": 1}


async def test_replicate_show_list(cbr, source):  # noqa: F811
    backup_id, vault_id = source.backup.backup_id, str(uuid.uuid4())
    record = await cbr.json("replication", "replicate", backup_id, *destination(vault_id), "--request-id", "cli-1",
                            "--description", "from the cli")
    assert (record["status"], record["source_backup_id"], record["destination_vault_id"], record["request_id"],
            record["description"]) == ("REPLICATION_STATUS_WAITING", backup_id, vault_id, "cli-1", "from the cli")
    record_id = record["replication_record_id"]
    shown, table, listed, none = await asyncio.gather(
        cbr.ok("replication", "show", record_id), cbr.ok("replication", "list", "--to-vault", vault_id),
        cbr.json("replication", "list", "--backup", backup_id, "--status", "waiting"),
        cbr.json("replication", "list", "--to-vault", vault_id, "--status", "success"))
    assert record_id in shown.stdout and "waiting" in shown.stdout
    header, _, row, *_ = table.stdout.splitlines()
    assert header.split()[:4] == ["ID", "STATUS", "PROGRESS", "BACKUP"]
    assert row.split()[:4] == [record_id[:8], "waiting", "0%", backup_id[:8]]
    assert record_id in [r["replication_record_id"] for r in listed["items"]]
    assert none == {"items": [], "count": 0}
    reused = await cbr("replication", "replicate", backup_id, *destination(), "--request-id", "cli-1")
    assert reused.code == 5 and one_error_line(reused).startswith(
        "error: ALREADY_EXISTS (ReplicationService.6912): --request-id cli-1")


async def test_refusals_name_the_flags(cbr, source):  # noqa: F811
    unknown = await cbr("replication", "replicate", source.backup.backup_id, "--to-region", "region-z",
                        "--to-project", "p", "--to-vault", str(uuid.uuid4()))
    assert unknown.code == 3
    assert one_error_line(unknown).startswith("error: INVALID_ARGUMENT (ReplicationService.6901): --to-region")
    missing = await cbr("replication", "replicate", str(uuid.uuid4()), *destination())
    assert missing.code == 4 and "(ReplicationService.6903)" in one_error_line(missing)
    down = await cbr("replication", "replicate", source.backup.backup_id, "--to-region", "region-c",
                     "--to-project", "p", "--to-vault", str(uuid.uuid4()))
    assert down.code == 9 and "(ReplicationService.6920)" in one_error_line(down)
    malformed, absent = await asyncio.gather(cbr("replication", "show", "not-a-uuid"),
                                             cbr("replication", "show", str(uuid.uuid4())))
    assert malformed.code == 2 and "expected a replication record id" in malformed.stderr
    assert absent.code == 4 and "(ReplicationService.6910)" in one_error_line(absent)


async def test_wait_follows_the_record_to_its_end(cbr, source_region, source):  # noqa: F811
    caller, backup_id = source.caller, source.backup.backup_id
    vault_id, failing_vault = str(uuid.uuid4()), str(uuid.uuid4())
    waiting = asyncio.ensure_future(cbr("replication", "replicate", backup_id, *destination(vault_id), "--wait",
                                        "--json", timeout=60))
    failing = asyncio.ensure_future(cbr("replication", "replicate", backup_id, *destination(failing_vault),
                                        "--wait", timeout=60))

    async def record_in(vault):
        listed = await caller.replication.ListReplicationRecords(
            rp.ListReplicationRecordsRequest(destination_vault_id=vault))
        return listed.replication_records[0] if listed.replication_records else None
    record, doomed = await eventually(lambda: record_in(vault_id)), await eventually(lambda: record_in(failing_vault))
    await source_region.task_update(record, "started", attempt=1)
    await source_region.task_update(record, "progress", attempt=1, progress=50, bytes_done=512, bytes_total=1024)
    await source_region.task_update(record, "completed", attempt=1, bytes_done=1024, bytes_total=1024,
                                    destination_backup_id=str(uuid.uuid4()), source_manifest_digest=DIGEST,
                                    replica_manifest_digest=DIGEST)
    await source_region.task_update(doomed, "failed", attempt=3, error_code="BackupService.2100",
                                    error_message="the destination went away")
    done, failed = await waiting, await failing
    assert done.code == 0, str(done)
    assert done.json()["status"] == "REPLICATION_STATUS_SUCCESS" and "100%" in done.stderr
    assert failed.code == 11, str(failed)
    assert f"error: replication {doomed.replication_record_id} of backup {backup_id} failed (BackupService.2100): " \
           "the destination went away" in failed.stderr


async def test_replicate_vault(cbr, source):  # noqa: F811
    vault_id = str(uuid.uuid4())
    started = await cbr.json("replication", "replicate-vault", source.vault_id, *destination(vault_id))
    assert [b["backup_id"] for b in started["items"]] == [source.backup.backup_id] and started["count"] == 1
    again = await cbr("replication", "replicate-vault", source.vault_id, *destination(vault_id), "--json")
    assert again.code == 0 and again.json() == {"items": [], "count": 0}
    assert "nothing to replicate" in again.stderr


async def test_rate_limit_flag(cbr, source):  # noqa: F811
    vault_id = str(uuid.uuid4())
    record = await cbr.json("replication", "replicate", source.backup.backup_id, *destination(vault_id),
                            "--rate-limit-mbps", "2.5")
    assert record["rate_limit_mbps"] == 2.5
    for command, target in (("replicate", source.backup.backup_id), ("replicate-vault", source.vault_id)):
        refused = await cbr("replication", command, target, *destination(), "--rate-limit-mbps", "-1")
        assert refused.code == 3, str(refused)
        assert one_error_line(refused).startswith(
            "error: INVALID_ARGUMENT (ReplicationService.6911): --rate-limit-mbps"), str(refused)


async def test_lag(cbr, source):  # noqa: F811
    as_json, table = await asyncio.gather(cbr.json("replication", "lag", source.vault_id, "--to-region", "region-c"),
                                          cbr.ok("replication", "lag", source.vault_id, "--to-region", "region-c"))
    [lag] = as_json["items"]
    assert (lag["destination_region"], lag["oldest_unreplicated_backup_id"], lag["unreplicated_backups"]) == \
        ("region-c", source.backup.backup_id, 1)
    header, _, row, *_ = table.stdout.splitlines()
    assert header.split()[:4] == ["RESOURCE", "TYPE", "REGION", "LAG"]
    assert row.split()[1:3] == ["disk", "region-c"] and source.backup.backup_id[:8] in row
    refused = await cbr("replication", "lag", source.vault_id, "--to-region", "region-a")
    assert refused.code == 3 and "(ReplicationService.6902): --to-region region-a is this region" in refused.stderr
