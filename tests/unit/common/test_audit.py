"""The pure parts of cbr_common.audit: which calls go on the trail, which ids a call names, its request id and the
CBR code of its refusal."""
from __future__ import annotations

import grpc
import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import protectable_pb2 as pp
from cbr.vault.v1 import vault_pb2 as vp
from cbr_common import audit
from cbr_common.errors import InvalidArgumentError
from cbr_common.grpc_errors import status_for
from cbr_common.request_validation import UndecodableRequest


@pytest.mark.parametrize("method, audited", [
    ("/cbr.backup.v1.BackupService/DeleteBackup", True),
    ("/cbr.backup.v1.BackupService/RestoreBackup", True),
    ("/cbr.backup.v1.BackupService/CreateCheckpoint", True),
    ("/cbr.backup.v1.TaskService/CancelTask", True),
    ("/cbr.vault.v1.VaultService/CreateVault", True),
    ("/cbr.policy.v1.PolicyService/DeletePolicy", True),
    ("/cbr.replication.v1.ReplicationService/ReplicateBackup", True),
    ("/cbr.backup.v1.BackupService/GetBackup", False),
    ("/cbr.backup.v1.BackupService/ListBackups", False),
    ("/cbr.backup.v1.TaskService/WatchTask", False),
    ("/cbr.policy.v1.PolicyService/PreviewRetention", False),
    ("/cbr.vault.v1.VaultService/ListAuditEvents", False),
    ("/cbr.replication.v1.RegionTransferService/PutChunks", False),  # service only: the replication's plumbing
    ("/grpc.health.v1.Health/Check", False),
])
def test_which_calls_are_audited(method, audited):
    assert audit.is_audited(method) is audited


def test_ids_of_a_request_and_its_response():
    request = bp.RestoreBackupRequest(backup_id="b1", volume_id="d1", mappings=[
        bp.RestoreMapping(backup_id="child-1", volume_id="d2")])
    response = bp.RestoreBackupResponse(task_id="t1")
    assert audit.ids_of(request, response) == [("backup_id", "b1"), ("volume_id", "d1"), ("backup_id", "child-1"),
                                               ("volume_id", "d2"), ("task_id", "t1")]


def test_lists_are_named_in_the_singular_and_project_and_request_ids_are_not_resource_ids():
    request = bp.CreateCheckpointRequest(vault_id="v1", resource_ids=["r1", "r2"], policy_id="p1", request_id="k")
    response = bp.CreateCheckpointResponse(checkpoint=bp.Checkpoint(
        checkpoint_id="c1", project_id="proj", vault_id="v1",
        resources=[bp.CheckpointResource(resource_id="r1", backup_id="b1", task_id="t1")]))
    assert audit.ids_of(request, response) == [
        ("vault_id", "v1"), ("resource_id", "r1"), ("resource_id", "r2"), ("policy_id", "p1"),
        ("checkpoint_id", "c1"), ("backup_id", "b1"), ("task_id", "t1")]  # each pair once


def test_ids_are_bounded_and_cleaned():
    many = vp.RemoveResourcesRequest(vault_id="v", resource_ids=[f"r{i}" for i in range(500)])
    found = audit.ids_of(many)
    assert len(found) == audit.MAX_IDS and found[0] == ("vault_id", "v")
    odd = audit.ids_of(bp.DeleteBackupRequest(backup_id="a\x00b" + "x" * 500))
    assert odd == [("backup_id", "a?b" + "x" * (audit.MAX_ID_CHARS - 4) + "…")]


def test_what_is_not_a_message_has_no_ids():
    assert audit.ids_of(UndecodableRequest(ValueError("garbage")), None) == []
    assert audit.ids_of(pp.DeleteDiskResponse()) == []


def test_request_id_from_the_request_else_the_metadata():
    request = bp.CreateCheckpointRequest(vault_id="v", request_id="from-body")
    assert audit.request_id_of(request, (("x-request-id", "from-header"),)) == "from-body"
    assert audit.request_id_of(bp.CreateCheckpointRequest(), (("X-Request-Id", "from-header"),)) == "from-header"
    assert audit.request_id_of(bp.DeleteBackupRequest(), ()) == ""


def test_the_cbr_code_of_a_refusal_is_read_from_its_status_details():
    status = status_for(InvalidArgumentError("no", cbr_code="BackupService.6101"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert audit.cbr_code_of(status.trailing_metadata) == "BackupService.6101"
    assert audit.cbr_code_of(status_for(InvalidArgumentError("no")).trailing_metadata) == ""
    assert audit.cbr_code_of([(audit.DETAILS_KEY, b"\xff not a status")]) == ""
    assert audit.cbr_code_of(None) == ""
