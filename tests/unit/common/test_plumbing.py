"""cbr_common without servers: settings, the error table, roles and token checks."""
from __future__ import annotations

import grpc
import pytest

from cbr_common import auth, errors
from cbr_common.grpc_errors import status_code_for, status_for
from cbr_common.settings import Settings, SettingsError

ENV = {"CBR_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:1/cbr", "CBR_NATS_URL": "nats://127.0.0.1:2",
       "CBR_JWT_SECRET": "s" * 32}


@pytest.mark.parametrize("missing", sorted(ENV))
def test_missing_setting_is_named(missing):
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        Settings.from_env("vault", env)


def test_settings_read_once_into_a_frozen_object():
    settings = Settings.from_env("vault", {**ENV, "CBR_BACKUP_ADDR": "127.0.0.1:9", "CBR_OUTBOX_POLL_SECONDS": "2"})
    assert settings.peer("backup") == "127.0.0.1:9" and settings.outbox_poll_seconds == 2.0
    with pytest.raises(SettingsError, match="CBR_POLICY_ADDR"):
        settings.peer("policy")
    with pytest.raises(AttributeError):
        settings.nats_url = "other"  # type: ignore[misc]
    with pytest.raises(SettingsError, match="CBR_OUTBOX_POLL_SECONDS"):
        Settings.from_env("vault", {**ENV, "CBR_OUTBOX_POLL_SECONDS": "soon"})


class VaultGoneError(errors.NotFoundError):
    cbr_code = "BackupService.9999"


@pytest.mark.parametrize("exc, code", [
    (errors.InvalidArgumentError("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (VaultGoneError("x"), grpc.StatusCode.NOT_FOUND),
    (errors.ConflictError("x"), grpc.StatusCode.ABORTED),
    (errors.ResourceExhaustedError("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DataLossError("x"), grpc.StatusCode.DATA_LOSS),
    (errors.UnavailableError("x"), grpc.StatusCode.UNAVAILABLE),
    (KeyError("secret detail"), grpc.StatusCode.INTERNAL),
])
def test_error_table(exc, code):
    assert status_code_for(exc) == code


def test_status_carries_cbr_code_and_hides_internal_details():
    status = status_for(VaultGoneError("vault v not found"))
    assert status.code == grpc.StatusCode.NOT_FOUND and status.details == "vault v not found"
    detail = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert b"BackupService.9999" in detail
    internal = status_for(RuntimeError("password=hunter2"))
    assert internal.code == grpc.StatusCode.INTERNAL and "hunter2" not in internal.details


@pytest.mark.parametrize("method, access", [
    ("/cbr.vault.v1.VaultService/ListVaults", auth.Access.READ),
    ("/cbr.backup.v1.TaskService/WatchTask", auth.Access.READ),
    ("/cbr.vault.v1.VaultService/AssociatePolicy", auth.Access.WRITE),
    ("/cbr.policy.v1.PolicyService/PreviewRetention", auth.Access.READ),
    ("/cbr.policy.v1.PolicyService/UpdatePolicy", auth.Access.POLICY_WRITE),
    ("/cbr.replication.v1.RegionTransferService/FindMissingChunks", auth.Access.SERVICE),
])
def test_required_access(method, access):
    assert auth.required_access(method) == access


def test_roles():
    authenticator = auth.Authenticator("k" * 32)
    principal = lambda *roles: auth.Principal("s", "p", frozenset(roles))  # noqa: E731
    authenticator.authorize(principal("cbr_backups_vaults_full_access"), "/cbr.vault.v1.VaultService/DeleteVault")
    with pytest.raises(errors.PermissionDeniedError):
        authenticator.authorize(principal("cbr_backups_vaults_full_access"), "/cbr.policy.v1.PolicyService/CreatePolicy")
    with pytest.raises(errors.PermissionDeniedError):
        authenticator.authorize(principal("cbr_full_access"),
                                "/cbr.replication.v1.RegionTransferService/CommitTransfer")
    authenticator.authorize(principal("service"), "/cbr.replication.v1.RegionTransferService/CommitTransfer")


def test_token_round_trip_and_rejections():
    authenticator = auth.Authenticator("k" * 32)
    token = auth.issue_token("k" * 32, "proj", "alice", ["cbr_readonly"])
    principal = authenticator.principal_from_metadata((("authorization", f"Bearer {token}"),))
    assert (principal.project_id, principal.subject, principal.roles) == ("proj", "alice", {"cbr_readonly"})
    for metadata in ((), (("authorization", token),), (("authorization", "Bearer "),)):
        with pytest.raises(errors.UnauthenticatedError):
            authenticator.principal_from_metadata(metadata)
