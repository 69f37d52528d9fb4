"""Protobuf <-> domain conversion of protectables, tasks, backups and checkpoints."""
from __future__ import annotations

import datetime as dt
import uuid

from cbr.backup.v1 import protectable_pb2 as pp
from cbr.backup.v1 import task_pb2 as tp
from cbr.common.v1 import common_pb2 as cp
from cbr_backup.domain.model import Disk, Server, Task, disk_protectable, server_protectable
from cbr_backup.grpc_api import convert

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_list_request_statuses_and_types():
    cmd = convert.list_protectables_in("p", pp.ListProtectablesRequest(
        type=cp.OBJECT_TYPE_DISK, status=pp.PROTECTABLE_STATUS_IN_USE, name="x"))
    assert (cmd.type, cmd.status, cmd.name, cmd.limit) == ("disk", "in-use", "x", 0)
    assert convert.list_protectables_in("p", pp.ListProtectablesRequest()).type == ""
    assert convert.protectable_status(99) == "unknown"


def test_server_protectable_lists_its_disks_and_sums_their_sizes():
    server_id = str(uuid.uuid4())
    disks = [Disk(disk_id=str(uuid.uuid4()), project_id="p", name=f"d{i}", size_bytes=512 * (i + 1), path="/x",
                  status="in-use", server_id=server_id, device=f"vd{'ab'[i]}") for i in range(2)]
    msg = convert.protectable_out(server_protectable(Server(server_id, "p", "srv", disks, NOW)))
    assert msg.type == cp.OBJECT_TYPE_SERVER and msg.resource_type == "OS::Nova::Server"
    assert msg.size_bytes == 512 + 1024
    assert [(d.name, d.device) for d in msg.disks] == [("d0", "vda"), ("d1", "vdb")]
    disk = convert.protectable_out(disk_protectable(disks[0]))
    assert disk.status == pp.PROTECTABLE_STATUS_IN_USE and disk.server_id == server_id
    assert disk.resource_type == "OS::Cinder::Volume" and disk.created_time.seconds == 0


def test_task_out_and_list_request():
    task = Task(task_id=str(uuid.uuid4()), project_id="p", operation_type="vault_delete", status="failed",
                progress=40, error_code="BackupService.6540", error_message="boom", extra_info={"fail_count": "1"},
                created_time=NOW, updated_time=NOW)
    msg = convert.task_out(task)
    assert msg.operation_type == tp.OPERATION_TYPE_VAULT_DELETE and msg.status == tp.TASK_STATUS_FAILED
    assert msg.error.code == "BackupService.6540" and dict(msg.extra_info) == {"fail_count": "1"}
    assert msg.created_time.ToDatetime(dt.timezone.utc) == NOW and not msg.HasField("ended_time")
    req = tp.ListTasksRequest(status=tp.TASK_STATUS_RUNNING)
    req.start_time.FromDatetime(NOW)
    cmd = convert.list_tasks_in("p", req)
    assert (cmd.status, cmd.operation_type, cmd.start_time, cmd.end_time) == ("running", "", NOW, None)


def test_a_backup_says_what_it_references_and_what_it_added_and_its_checkpoint_follows_its_backups():
    from cbr_backup.domain.backups import Backup, Checkpoint
    child = Backup(backup_id="c", project_id="p", checkpoint_id="k", vault_id="v", resource_id="d",
                   resource_type="disk", name="n", status="available", stored_bytes=100, added_bytes=7)
    parent = Backup(backup_id="b", project_id="p", checkpoint_id="k", vault_id="v", resource_id="s",
                    resource_type="server", name="n", status="available", incremental=True, stored_bytes=100,
                    added_bytes=7, children=[child])
    msg = convert.backup_out(parent)
    assert (msg.stored_bytes, msg.added_bytes) == (100, 7)
    assert [(c.stored_bytes, c.added_bytes) for c in msg.children] == [(100, 7)]
    cp = Checkpoint(checkpoint_id="k", project_id="p", vault_id="v", name="n", incremental=False, backups=[parent])
    assert convert.checkpoint_out(cp).incremental  # what its backups do, whatever was stored at creation
    assert not convert.checkpoint_out(Checkpoint(checkpoint_id="k", project_id="p", vault_id="v", name="n",
                                                 incremental=False)).incremental
